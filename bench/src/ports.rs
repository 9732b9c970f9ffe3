//! Free loopback ports (the benchmark's own servers and the test
//! harness's). Ports are handed out from a per-process counter
//! starting at a random offset and checked by binding, so parallel tests
//! and parallel test binaries do not collide. They stay below the kernel's
//! ephemeral range (32768+), which outgoing connections draw from, so a
//! port handed out here is not taken later by some client socket.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

const LOW: u16 = 10000;
const HIGH: u16 = 32000;

fn counter() -> &'static AtomicU16 {
    static C: OnceLock<AtomicU16> = OnceLock::new();
    C.get_or_init(|| {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        AtomicU16::new(LOW + (seed % u64::from(HIGH - LOW)) as u16)
    })
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    loop {
        let p = counter().fetch_add(1, Ordering::Relaxed);
        if !(LOW..HIGH).contains(&p) {
            counter().store(LOW, Ordering::Relaxed);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}
