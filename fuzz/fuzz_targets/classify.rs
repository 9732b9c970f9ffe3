//! The statement classifier and the USE / SET target parsers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_proxy::classify::fuzz_entry(data));
