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
use std::time::{Duration, Instant};

fn err(msg: impl Into<String>) -> Output {
    Output::Err(ErrPacket::new(codes::UNKNOWN_ERROR, msg))
}

pub async fn run(shared: &Arc<Shared>, cmd: AdminCmd, config_path: &Path) -> Output {
    match cmd {
        AdminCmd::ShowBackends => Output::Table(views::backends_table(shared)),
        AdminCmd::ShowCluster => Output::Table(views::cluster_table(shared).await),
        AdminCmd::ShowEvents { limit } => Output::Table(views::events_table(shared, limit)),
        AdminCmd::ShowSessions => Output::Table(views::sessions_table(shared)),
        AdminCmd::KillSession { id } => match shared.sessions.get(id) {
            Some(s) => {
                s.kill("killed from the admin port");
                Output::Ok(format!("session {id} killed"))
            }
            None => err(format!(
                "no session {id} on this node (SHOW SESSIONS lists them)"
            )),
        },
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
        AdminCmd::ReloadConfig => match crate::reload::reload(shared, config_path) {
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

/// Commits a topology command and reports its outcome.
pub async fn propose(shared: &Shared, op: Op) -> Output {
    let cmd = Command::new(op, shared.node_id, "admin command");
    match shared.consensus.propose(cmd).await {
        Ok(r) if r.ok => Output::Ok(format!("{} (epoch {})", r.message, r.epoch)),
        Ok(r) => err(r.message),
        Err(e) => err(format!("not committed: {e}")),
    }
}

/// Marks the backend draining, then waits until no session holds a
/// connection to it (sessions move at their next transaction boundary).
async fn drain(shared: &Arc<Shared>, name: String, timeout: Duration) -> Output {
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
    let deadline = Instant::now() + timeout;
    loop {
        let routing = shared.routing.load();
        let Some(pool) = routing.pool(&name).cloned() else {
            return err(format!("unknown backend '{name}'"));
        };
        drop(routing);
        pool.close_idle();
        let busy = pool.open_count() as usize;
        if busy == 0 {
            return Output::Ok(format!("backend '{name}' drained"));
        }
        if Instant::now() >= deadline {
            return err(format!(
                "drain of '{name}' timed out after {timeout:?}: {busy} connections are still in use (sessions inside transactions); it stays draining"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
