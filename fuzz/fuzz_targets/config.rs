//! TOML parsing and validation of the config file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_config::Config::fuzz_entry(data));
