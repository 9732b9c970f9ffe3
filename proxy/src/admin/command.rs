//! One admin command: parsed from the words after its name, then run.
//! Each command lives in its own file under `cmd/` and registers an
//! [`Entry`] in [`cmd::ALL`]; the parser picks the entry whose words the
//! statement starts with, so adding a command touches one file and one
//! line of the list.

use super::parse::P;
use super::Output;
use crate::shared::Shared;
use concord_consensus::{Command as RaftCommand, Op, Workflow};
use concord_protocol::codes;
use concord_protocol::err::ErrPacket;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;

/// What a command runs with.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    pub config_path: &'a Path,
}

/// A parsed admin command.
pub trait Command: std::fmt::Debug + Send {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output>;
}

/// How a command is recognised: the words it starts with (longest match
/// wins), its syntax for the help text, and its parser for the rest.
pub struct Entry {
    pub words: &'static [&'static str],
    pub syntax: &'static str,
    pub parse: fn(&mut P) -> Result<Box<dyn Command>, String>,
}

pub fn err(msg: impl Into<String>) -> Output {
    Output::Err(ErrPacket::new(codes::UNKNOWN_ERROR, msg))
}

/// Commits a topology command and reports its outcome once every node
/// has applied it (bounded by `cluster.lease_timeout`; a node that has
/// not confirmed by then is named in the answer).
pub async fn propose(shared: &Shared, op: Op) -> Output {
    let cmd = RaftCommand::new(op, shared.node_id, "admin command");
    match shared.consensus.propose(cmd).await {
        Ok(r) if r.ok => {
            let wait = shared.config.load().cluster.lease_timeout.get();
            let missing = shared.consensus.wait_all_applied(r.index, wait).await;
            let pending = if missing.is_empty() {
                String::new()
            } else {
                format!("; not yet applied on node(s) {missing:?}")
            };
            Output::Ok(format!("{} (epoch {}){pending}", r.message, r.epoch))
        }
        Ok(r) => err(r.message),
        Err(e) => err(format!("not committed: {e}")),
    }
}

/// Runs a failover workflow on the leader (wherever the command came in).
pub async fn workflow(shared: &Shared, w: Workflow) -> Output {
    match shared.consensus.run_workflow(w).await {
        Ok(m) => Output::Ok(m),
        Err(e) => err(e),
    }
}
