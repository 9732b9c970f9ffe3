//! Every packet of the connection phase (greeting, response, auth switch,
//! connect attributes).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_protocol::fuzzing::handshake(data));
