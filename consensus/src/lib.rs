//! concord's Raft fleet.
//!
//! Why openraft 0.9: it is the maintained Raft library in Rust with joint
//! consensus, snapshots and a storage test suite; 0.9 is its stable line
//! (0.10 is still alpha), pinned to an exact version so a minor release
//! cannot change consensus behaviour underneath us. 0.9 has no lease-read
//! API, so [`lease`] holds the routing lease itself on top of
//! `ensure_linearizable` (leader) and a read-index round trip (followers).

pub mod gate;
pub mod lease;
pub mod net;
pub mod node;
pub mod rule;
pub mod store;
pub mod topology;
pub mod types;

pub use gate::{WriteGate, WriteGuard};
pub use lease::Lease;
pub use node::{AppHandler, Consensus, ConsensusError, Status, Workflow, WorkflowHandler};
pub use rule::Rule;
pub use store::Applied;
pub use topology::{
    Backend, BackendState, Command, Event, Op, Owner, Response, Role, SeedBackend, Topology,
};
pub use types::NodeId;

/// The newest log entry format this build's state machine decodes, sent
/// with every node's report: 2 added [`Op::Promoting`]. A node of an older
/// build (its reports carry no version: 1) stops applying the log at an
/// entry it cannot decode, so the leader writes such entries only when
/// no member is known to be older.
pub const LOG_VERSION: u64 = 2;
