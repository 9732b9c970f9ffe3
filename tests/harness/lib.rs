//! The end-to-end harness every test under `tests/` uses: real `mariadbd`
//! processes (primary and GTID replicas) in temp dirs on free loopback
//! ports, real `concord` processes, a controllable TCP relay for faults,
//! and helpers for the real `mariadb` client. Everything started here is
//! killed when its handle drops.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod bin;
pub mod certs;
pub mod cli;
pub mod concord;
pub mod fleet;
pub mod mariadb;
pub mod netns;
/// Free loopback ports, shared with `concord-bench`.
pub mod ports {
    pub use concord_bench::ports::free_port;
}
pub mod raw;
pub mod relay;
pub mod rig;

pub use concord::{Concord, ConcordConfig};
pub use fleet::Fleet;
pub use mariadb::{MariaDb, Topology};
pub use relay::Relay;

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until something listens on 127.0.0.1:`port` (10 s at most).
pub async fn wait_port(what: &str, port: u16) {
    wait_for(what, Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await
}

/// The password every test user gets (app, monitor, repl, root over TCP).
pub const PASSWORD: &str = "concord-test-pw";
