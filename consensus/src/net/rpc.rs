//! Messages between concord nodes: Raft's own RPCs plus the few the fleet
//! needs (forwarded writes, read-index for follower leases, membership
//! changes, health reports).

use crate::topology::{Command, Response};
use crate::types::{NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command proposed on a follower, committed by the leader.
    Write(Command),
    /// "Confirm you are leader and tell me your commit index."
    ReadIndex,
    /// Membership change proposed on a follower.
    Membership(MembershipOp),
    /// A node's view of the backends (for the failure verdict).
    Report(serde_json::Value),
    /// This node's Raft and lease status (for SHOW CLUSTER).
    Status,
    /// "Answer once you have applied this log index" (bounded wait).
    WaitApplied {
        index: u64,
        timeout_ms: u64,
    },
    /// A failover workflow to run on the leader.
    Workflow(crate::node::Workflow),
    /// A request for the proxy on this node (KILL of a session held
    /// here), answered by its registered handler.
    App(serde_json::Value),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipOp {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Write(Result<Response, String>),
    ReadIndex(Result<u64, String>),
    Membership(Result<String, String>),
    Report(Result<(), String>),
    Status(Box<crate::node::Status>),
    WaitApplied(Result<u64, String>),
    Workflow(Result<String, String>),
    App(Result<serde_json::Value, String>),
}
