//! The relay paths a session runs: a backend response (any shape, client
//! with or without SESSION_TRACK / LOCAL INFILE) relayed to a client, and
//! client commands read and forwarded, with inputs up to and past the
//! whole-packet limit (`-max_len` in run.sh).
#![no_main]
use std::sync::OnceLock;

static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    });
    rt.block_on(concord_proxy::session::relay::harness::fuzz(data));
});
