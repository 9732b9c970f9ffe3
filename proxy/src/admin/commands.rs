//! Carrying out admin commands. Mutations become topology commands
//! committed through Raft; the reply waits for the commit.

use super::parse::AdminCmd;
use super::views::{self, Table};
use super::Output;
use crate::shared::Shared;
use concord_consensus::{BackendState, Command, Op, Workflow};
use concord_protocol::codes;
use concord_protocol::column::Column;
use concord_protocol::err::ErrPacket;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn err(msg: impl Into<String>) -> Output {
    Output::Err(ErrPacket::new(codes::UNKNOWN_ERROR, msg))
}

pub async fn run(shared: &Arc<Shared>, cmd: AdminCmd, config_path: &Path) -> Output {
    match cmd {
        AdminCmd::ShowBackends => Output::Table(views::backends_table(shared)),
        AdminCmd::ShowCluster => Output::Table(views::cluster_table(shared).await),
        AdminCmd::ShowEvents { limit } => Output::Table(views::events_table(shared, limit)),
        AdminCmd::ShowSessions => Output::Table(views::sessions_table(shared)),
        AdminCmd::ShowDigests {
            order,
            desc,
            limit,
            fleet: false,
        } => Output::Table(views::digests_table(shared, &order, desc, limit)),
        AdminCmd::ShowDigests {
            order,
            desc,
            limit,
            fleet: true,
        } => match super::fleet_digests::merged(shared, &order, desc, limit).await {
            Ok(rows) => Output::Table(views::digest_rows(
                rows.iter().map(|m| (&m.row, Some(m.nodes))),
            )),
            Err(e) => err(e),
        },
        AdminCmd::ResetDigests => {
            let cfg = shared.config.load();
            shared
                .digests
                .reset(cfg.digests.max_memory.get(), cfg.digests.max_text as usize);
            Output::Ok(format!(
                "digests reset ({} rows at most)",
                shared.digests.capacity()
            ))
        }
        AdminCmd::ShowRules => Output::Table(views::rules_table(shared)),
        AdminCmd::AddRule(rule) => propose(shared, Op::AddRule { rule }).await,
        AdminCmd::DropRule { id } => propose(shared, Op::DropRule { id }).await,
        AdminCmd::KillSession { id } => {
            let admin = crate::session::kill::Killer {
                user: "the admin port".into(),
                admin: true,
            };
            match crate::session::kill::kill(shared, id, false, &admin).await {
                Ok(()) => Output::Ok(format!("session {id} killed")),
                Err(_) => err(format!(
                    "no session {id} in the fleet (SHOW SESSIONS lists a node's sessions)"
                )),
            }
        }
        AdminCmd::SetWeight { name, weight } => {
            propose(shared, Op::SetWeight { name, weight }).await
        }
        AdminCmd::Maintenance { name, on } => {
            let state = if on {
                BackendState::Maintenance
            } else {
                BackendState::Active
            };
            propose(shared, Op::SetState { name, state }).await
        }
        AdminCmd::Undrain { name } => {
            propose(
                shared,
                Op::SetState {
                    name,
                    state: BackendState::Active,
                },
            )
            .await
        }
        AdminCmd::Drain { name, timeout } => drain(shared, name, timeout).await,
        AdminCmd::AddBackend { name, addr, weight } => {
            if let Err(e) = concord_config::check_backend_addr(&addr) {
                return err(e);
            }
            propose(shared, Op::AddBackend { name, addr, weight }).await
        }
        AdminCmd::RemoveBackend { name } => propose(shared, Op::RemoveBackend { name }).await,
        AdminCmd::AddNode { id, addr } => match shared.consensus.add_node(id, addr).await {
            Ok(m) => Output::Ok(m),
            Err(e) => err(format!("ADD NODE failed: {e}")),
        },
        AdminCmd::RemoveNode { id } => match shared.consensus.remove_node(id).await {
            Ok(m) => Output::Ok(m),
            Err(e) => err(format!("REMOVE NODE failed: {e}")),
        },
        AdminCmd::Switchover { to } => workflow(shared, Workflow::Switchover { to }).await,
        AdminCmd::Failover => workflow(shared, Workflow::Failover).await,
        AdminCmd::Rejoin { name } => workflow(shared, Workflow::Rejoin { name }).await,
        AdminCmd::ReloadConfig => match crate::reload::reload(shared, config_path).await {
            Ok(msg) => Output::Ok(msg),
            Err(e) => err(format!(
                "RELOAD CONFIG refused, the running config stays: {e}"
            )),
        },
        AdminCmd::ClientNoise(None) => Output::Ok(String::new()),
        AdminCmd::Variables(vars) => Output::Table(Table {
            columns: vars.iter().map(|(n, _)| Column::str(n)).collect(),
            rows: vec![vars.into_iter().map(|(_, v)| v).collect()],
        }),
        AdminCmd::ClientNoise(Some((col, val))) => Output::Table(Table {
            columns: vec![Column::str(&col)],
            rows: vec![vec![Some(val)]],
        }),
    }
}

/// Runs a failover workflow on the leader (wherever the command came in).
async fn workflow(shared: &Shared, w: Workflow) -> Output {
    match shared.consensus.run_workflow(w).await {
        Ok(m) => Output::Ok(m),
        Err(e) => err(e),
    }
}

/// Commits a topology command and reports its outcome once every node
/// has applied it (bounded by `cluster.lease_timeout`; a node that has
/// not confirmed by then is named in the answer).
pub async fn propose(shared: &Shared, op: Op) -> Output {
    let cmd = Command::new(op, shared.node_id, "admin command");
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

/// Marks the backend draining, then waits (on the leader, which hears
/// every node's connection counts) until no node holds a connection to it:
/// sessions move at their next transaction boundary.
async fn drain(shared: &Arc<Shared>, name: String, timeout: Duration) -> Output {
    if shared.routing.load().pool(&name).is_none() {
        return err(format!(
            "unknown backend '{name}' (SHOW BACKENDS lists them)"
        ));
    }
    if let Output::Err(e) = propose(
        shared,
        Op::SetState {
            name: name.clone(),
            state: BackendState::Draining,
        },
    )
    .await
    {
        return Output::Err(e);
    }
    let w = Workflow::Drain {
        name,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    match shared.consensus.run_workflow(w).await {
        Ok(m) => Output::Ok(m),
        Err(e) => err(e),
    }
}
