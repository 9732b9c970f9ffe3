//! concord's view of its backends: probes of reachability, `read_only`,
//! replication and GTID positions; heartbeat lag in milliseconds; the
//! failure verdict; primary discovery and the failover workflows.

pub mod discovery;
pub mod failover;
pub mod gtid;
pub mod monitor;
pub mod preflight;
pub mod probe;
pub mod selffence;

pub use monitor::{BackendHealth, Health, HealthView};
pub use probe::{Flavor, Probe, Prober, ReplicaStatus};
