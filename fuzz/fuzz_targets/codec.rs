//! Packet framing, split packets, length limits and every response
//! decoder the relay runs over backend bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| concord_protocol::fuzzing::codec(data));
