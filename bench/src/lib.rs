//! concord-bench: a MySQL-protocol load generator built to measure proxies.
//!
//! - [`client`]: a lean client on concord's codec (no driver), many
//!   connections on few threads, no allocation per query.
//! - [`workload`]: point selects (text and prepared), read-only and
//!   read/write mixes, unique inserts, and table setup.
//! - [`runner`]: closed loop (back to back) and open loop (fixed rate,
//!   latency from the intended send time: no coordinated omission), over
//!   one target or a fleet.
//! - [`stats`]: hdrhistogram percentiles, per-interval snapshots.
//! - [`mock`]: a minimal, fast MySQL server to measure a proxy's own cost.
//! - [`compare`]: interleaved rounds against several targets with the
//!   proxies' CPU per query from `/proc`.
//! - [`agent`]: load from several hosts, started together, histograms
//!   merged exactly.
//! - [`timeline`]: per-100 ms QPS/errors/p99 while something happens, as
//!   CSV and an SVG chart.

pub mod agent;
pub mod client;
pub mod compare;
pub mod mock;
pub mod ports;
pub mod procstat;
pub mod report;
pub mod runner;
pub mod stats;
pub mod timeline;
pub mod workload;

/// Errors of the tool; the binary prints them and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Protocol(#[from] concord_protocol::ProtoError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("server error {code} ({state}): {message}")]
    Server {
        code: u16,
        state: String,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
}
