//! The failure verdict and the failover, switchover and rejoin workflows.
//! Run by the Raft leader; every step is recorded in the replicated event
//! log, and every topology change is a CAS on the epoch, so a second
//! decider (a new leader, a concurrent admin command) cannot act twice.
//!
//! Verdict (Altair's rule with more vantage points): the primary is alive
//! while a quorum of concord nodes reach it, or any replica's IO thread is
//! still receiving from it; it is dead only when a quorum of nodes each
//! failed `failure_threshold` consecutive probes and no replica receives,
//! for two evaluations in a row.

use crate::gtid;
use crate::monitor::Health;
use crate::probe::{monitor_opts, Prober};
use concord_config::Config;
use concord_consensus::{Applied, BackendState, Command, Consensus, Op, Role, Topology};
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("{0}")]
    Refused(String),
    #[error("consensus: {0}")]
    Consensus(#[from] concord_consensus::ConsensusError),
    #[error("{backend}: {step} failed: {error}")]
    Step {
        backend: String,
        step: &'static str,
        error: String,
    },
}

type R<T> = Result<T, FailoverError>;

/// What a workflow needs.
pub struct Fleet<'a> {
    pub consensus: &'a Consensus,
    pub cfg: Arc<Config>,
    pub health: &'a Health,
}

/// This node's view, sent to the leader every probe interval.
pub fn report(node_id: u64, applied: &Applied, health: &Health) -> Value {
    let view = health.view.load();
    let backends: serde_json::Map<String, Value> = view
        .backends
        .iter()
        .map(|(n, h)| {
            (
                n.clone(),
                json!({
                    "reachable": h.reachable,
                    "failures": h.failures,
                    "io": h.io_running,
                    "receiving": h.receiving,
                    "gtid_io_pos": h.gtid_io_pos,
                }),
            )
        })
        .collect();
    json!({
        "node": node_id,
        "epoch": applied.topology.epoch,
        "primary": applied.topology.primary,
        "backends": backends,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Some signal says dead, not enough to act on.
    Suspect(String),
    /// Dead by both views; the evidence.
    Dead(String),
}

#[derive(Default)]
pub struct Detector {
    dead_evaluations: u32,
}

impl Detector {
    pub fn evaluate(&mut self, f: &Fleet<'_>) -> Verdict {
        let applied = f.consensus.applied().borrow().clone();
        let topo = &applied.topology;
        let Some(primary) = topo.primary.clone() else {
            self.dead_evaluations = 0;
            return Verdict::Healthy;
        };
        let threshold = f.cfg.monitor.failure_threshold;
        let max_age = f.cfg.monitor.interval.get() * 4;
        let mut views = f.consensus.reports(max_age);
        views.insert(
            f.consensus.id(),
            report(f.consensus.id(), &applied, f.health),
        );
        let quorum = applied.voters.len() / 2 + 1;
        let (mut alive, mut dead) = (0usize, 0usize);
        let mut lines = Vec::new();
        for v in &applied.voters {
            let b = views
                .get(v)
                .filter(|r| {
                    r["epoch"].as_u64() == Some(topo.epoch)
                        && r["primary"].as_str() == Some(primary.as_str())
                })
                .map(|r| r["backends"][primary.as_str()].clone());
            match b {
                Some(b) if b["reachable"].as_bool() == Some(true) => {
                    alive += 1;
                    lines.push(format!("node {v} reaches it"));
                }
                Some(b) => {
                    let fails = b["failures"].as_u64().unwrap_or(0);
                    if fails >= u64::from(threshold) {
                        dead += 1;
                    }
                    lines.push(format!("node {v}: {fails} failed probes"));
                }
                None => lines.push(format!("node {v}: no recent report")),
            }
        }
        let receiving: Vec<String> = views
            .values()
            .flat_map(|r| {
                r["backends"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(n, b)| {
                                n.as_str() != primary && b["receiving"].as_bool() == Some(true)
                            })
                            .map(|(n, _)| n.clone())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let evidence = format!(
            "primary '{primary}': {}; replicas receiving from it: {}",
            lines.join(", "),
            if receiving.is_empty() {
                "none".to_string()
            } else {
                receiving.join(", ")
            }
        );
        if alive >= quorum {
            self.dead_evaluations = 0;
            return Verdict::Healthy;
        }
        if dead >= quorum && receiving.is_empty() {
            self.dead_evaluations += 1;
            if self.dead_evaluations >= 2 {
                return Verdict::Dead(evidence);
            }
            return Verdict::Suspect(evidence);
        }
        self.dead_evaluations = 0;
        if dead > 0 || alive < quorum {
            Verdict::Suspect(evidence)
        } else {
            Verdict::Healthy
        }
    }
}

async fn note(f: &Fleet<'_>, what: String) {
    tracing::info!("{what}");
    let _ = f
        .consensus
        .propose(Command::new(Op::Note, f.consensus.id(), what))
        .await;
}

async fn commit(f: &Fleet<'_>, op: Op, why: String) -> R<concord_consensus::Response> {
    let r = f
        .consensus
        .propose(Command::new(op, f.consensus.id(), why))
        .await?;
    if !r.ok {
        return Err(FailoverError::Refused(r.message));
    }
    Ok(r)
}

/// A monitor connection to a backend (how this node reaches it).
async fn connect(f: &Fleet<'_>, name: &str, addr: &str) -> R<Conn> {
    let target = f.cfg.connect_addr(name, addr).to_string();
    let opts = monitor_opts(&target, &f.cfg.monitor.user, &f.cfg.monitor.password);
    match tokio::time::timeout(f.cfg.monitor.timeout.get(), Conn::new(opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(step(name, "connect", e)),
        Err(_) => Err(step(name, "connect", "timed out")),
    }
}

fn step(backend: &str, step: &'static str, e: impl std::fmt::Display) -> FailoverError {
    FailoverError::Step {
        backend: backend.to_string(),
        step,
        error: e.to_string(),
    }
}

async fn exec(c: &mut Conn, name: &str, what: &'static str, sql: &str) -> R<()> {
    c.query_drop(sql).await.map_err(|e| step(name, what, e))
}

fn is_mariadb(c: &Conn) -> bool {
    c.server_version() >= (10, 0, 0)
        && c.server_version() < (20, 0, 0)
        && !matches!(c.server_version(), (8, _, _))
}

/// Makes a server writable and not a replica any more.
/// [`gtid::wait_sql`] in the dialect of the server behind `c`.
fn gtid_wait_sql(c: &Conn, pos: &str, secs: f64) -> String {
    gtid::wait_sql(is_mariadb(c), pos, secs)
}

async fn promote_server(c: &mut Conn, name: &str) -> R<()> {
    if is_mariadb(c) {
        exec(c, name, "stop replication", "STOP SLAVE").await?;
        exec(c, name, "reset replication", "RESET SLAVE ALL").await?;
        exec(c, name, "set read_only=0", "SET GLOBAL read_only = 0").await
    } else {
        exec(c, name, "stop replication", "STOP REPLICA").await?;
        exec(c, name, "reset replication", "RESET REPLICA ALL").await?;
        exec(
            c,
            name,
            "set super_read_only=0",
            "SET GLOBAL super_read_only = 0",
        )
        .await?;
        exec(c, name, "set read_only=0", "SET GLOBAL read_only = 0").await
    }
}

/// Points a replica at a new source with GTID auto-positioning.
/// `credentials` is needed for a server that never replicated.
async fn repoint(
    c: &mut Conn,
    name: &str,
    source: &str,
    credentials: Option<(&str, &str)>,
    pos: &str,
) -> R<()> {
    let (host, port) = source.rsplit_once(':').unwrap_or((source, "3306"));
    let creds = credentials
        .map(|(u, p)| {
            format!(
                ", MASTER_USER='{}', MASTER_PASSWORD='{}'",
                u.replace('\'', "''"),
                p.replace('\'', "''")
            )
        })
        .unwrap_or_default();
    if is_mariadb(c) {
        let _ = c.query_drop("STOP SLAVE").await;
        exec(
            c,
            name,
            "repoint replication",
            &format!("CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={port}{creds}, MASTER_USE_GTID={pos}"),
        )
        .await?;
        exec(c, name, "set read_only=1", "SET GLOBAL read_only = 1").await?;
        exec(c, name, "start replication", "START SLAVE").await
    } else {
        let _ = c.query_drop("STOP REPLICA").await;
        let creds = creds
            .replace("MASTER_USER", "SOURCE_USER")
            .replace("MASTER_PASSWORD", "SOURCE_PASSWORD");
        exec(
            c,
            name,
            "repoint replication",
            &format!("CHANGE REPLICATION SOURCE TO SOURCE_HOST='{host}', SOURCE_PORT={port}{creds}, SOURCE_AUTO_POSITION=1"),
        )
        .await?;
        exec(c, name, "set read_only=1", "SET GLOBAL super_read_only = 1").await?;
        exec(c, name, "start replication", "START REPLICA").await
    }
}

/// Best effort on a demoted primary: read-only, and its client
/// connections killed (a statement already running there fails rather
/// than commits later).
async fn fence_server(f: &Fleet<'_>, name: &str, addr: &str) -> String {
    let mut c = match connect(f, name, addr).await {
        Ok(c) => c,
        Err(e) => {
            return format!(
                "'{name}' unreachable for read_only ({e}); it stays fenced in the topology"
            )
        }
    };
    let ro = if is_mariadb(&c) {
        "SET GLOBAL read_only = 1"
    } else {
        "SET GLOBAL super_read_only = 1"
    };
    if let Err(e) = c.query_drop(ro).await {
        return format!("'{name}': setting read_only failed: {e}");
    }
    let ids: Vec<u64> = c
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler', ?) AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon')",
            (f.cfg.monitor.user.clone(),),
        )
        .await
        .unwrap_or_default();
    let mut killed = 0;
    for id in &ids {
        if c.query_drop(format!("KILL {id}")).await.is_ok() {
            killed += 1;
        }
    }
    let _ = c.disconnect().await;
    format!("'{name}' set read_only and {killed} client connections killed")
}

/// Where a server's received and applied positions stand.
struct Candidate {
    name: String,
    addr: String,
    weight: u32,
    io_pos: String,
    executed: String,
}

async fn candidates(f: &Fleet<'_>, topo: &Topology, exclude: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for b in topo.backends.values() {
        if b.name == exclude || b.state != BackendState::Active {
            continue;
        }
        let addr = f.cfg.connect_addr(&b.name, &b.addr).to_string();
        let mut p = Prober::new(
            &addr,
            &f.cfg.monitor.user,
            &f.cfg.monitor.password,
            f.cfg.monitor.timeout.get(),
        );
        let probe = p.probe().await;
        let Some(r) = probe.replica.as_ref().filter(|_| probe.reachable) else {
            continue;
        };
        let io_pos = if r.gtid_io_pos.is_empty() {
            probe.gtid_executed.clone()
        } else {
            r.gtid_io_pos.clone()
        };
        out.push(Candidate {
            name: b.name.clone(),
            addr: b.addr.clone(),
            weight: b.weight,
            io_pos,
            executed: probe.gtid_executed.clone(),
        });
    }
    out
}

/// The candidate whose received position includes every other one's.
fn most_advanced(cands: &[Candidate]) -> R<usize> {
    let covering: Vec<usize> = (0..cands.len())
        .filter(|&i| {
            cands
                .iter()
                .all(|o| gtid::covers(&cands[i].io_pos, &o.io_pos))
        })
        .collect();
    if covering.is_empty() {
        let all: Vec<String> = cands
            .iter()
            .map(|c| format!("{}={}", c.name, c.io_pos))
            .collect();
        return Err(FailoverError::Refused(format!(
            "no replica has received everything the others have (diverged GTID positions: {}); refusing to promote one that is behind",
            all.join(", ")
        )));
    }
    // Among equals, the highest weight.
    covering
        .into_iter()
        .max_by_key(|&i| cands[i].weight)
        .ok_or_else(|| FailoverError::Refused("no candidate".into()))
}

/// Automatic or forced failover: fence the primary, wait out every lease,
/// promote the most advanced replica, repoint the others, commit.
pub async fn failover(f: &Fleet<'_>, why: String) -> R<String> {
    let started = Instant::now();
    let applied = f.consensus.applied().borrow().clone();
    let topo = &applied.topology;
    let old = match topo.primary_backend() {
        Some(p) => p.clone(),
        None => return resume(f).await,
    };
    let r = commit(
        f,
        Op::Fence {
            expected_epoch: topo.epoch,
        },
        why,
    )
    .await?;
    let fenced_at = Instant::now();
    tracing::warn!(epoch = r.epoch, "fenced primary '{}'", old.name);
    promote_phase(
        f,
        Some((old.name.clone(), old.addr.clone())),
        fenced_at,
        started,
    )
    .await
}

/// A failover whose leader died after the fence: finish it.
pub async fn resume(f: &Fleet<'_>) -> R<String> {
    let applied = f.consensus.applied().borrow().clone();
    if applied.topology.epoch == 0 {
        return Err(FailoverError::Refused("no primary was ever chosen".into()));
    }
    let old = applied
        .topology
        .backends
        .values()
        .find(|b| b.state == BackendState::Fenced)
        .map(|b| (b.name.clone(), b.addr.clone()));
    // We do not know when the fence committed: wait a full lease from now.
    promote_phase(f, old, Instant::now(), Instant::now()).await
}

async fn promote_phase(
    f: &Fleet<'_>,
    old: Option<(String, String)>,
    fenced_at: Instant,
    started: Instant,
) -> R<String> {
    let wait = f.cfg.cluster.lease_timeout.get() + f.cfg.failover.lease_drift.get();
    let left = wait.saturating_sub(fenced_at.elapsed());
    tokio::time::sleep(left).await;
    note(
        f,
        format!(
            "every lease that could name the old epoch has expired (waited {:?})",
            wait
        ),
    )
    .await;
    if let Some((name, addr)) = &old {
        let msg = fence_server(f, name, addr).await;
        note(f, msg).await;
    }
    let applied = f.consensus.applied().borrow().clone();
    let topo = &applied.topology;
    let exclude = old.as_ref().map(|o| o.0.clone()).unwrap_or_default();
    let cands = candidates(f, topo, &exclude).await;
    if cands.is_empty() {
        return Err(FailoverError::Refused(
            "no reachable replica to promote".into(),
        ));
    }
    let best = most_advanced(&cands)?;
    let cand = &cands[best];
    note(
        f,
        format!(
            "candidate '{}' (received {}); others: {}",
            cand.name,
            cand.io_pos,
            cands
                .iter()
                .filter(|c| c.name != cand.name)
                .map(|c| format!("{}={}", c.name, c.io_pos))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await;
    let mut c = connect(f, &cand.name, &cand.addr).await?;
    let secs = f.cfg.failover.catchup_timeout.get().as_secs_f64();
    let waited: Option<i64> = c
        .query_first(gtid_wait_sql(&c, &cand.io_pos, secs))
        .await
        .map_err(|e| step(&cand.name, "apply relay log", e))?;
    if waited != Some(0) {
        return Err(step(
            &cand.name,
            "apply relay log",
            format!(
                "did not apply {} within failover.catchup_timeout ({secs}s)",
                cand.io_pos
            ),
        ));
    }
    note(
        f,
        format!(
            "'{}' applied its relay log up to {}",
            cand.name, cand.io_pos
        ),
    )
    .await;
    promote_server(&mut c, &cand.name).await?;
    let _ = c.disconnect().await;
    note(
        f,
        format!(
            "'{}' promoted: replication stopped and reset, read_only=0",
            cand.name
        ),
    )
    .await;
    let mut repointed = Vec::new();
    for other in cands.iter().filter(|o| o.name != cand.name) {
        let res = async {
            let mut oc = connect(f, &other.name, &other.addr).await?;
            repoint(&mut oc, &other.name, &cand.addr, None, "slave_pos").await
        }
        .await;
        repointed.push(match res {
            Ok(()) => format!("'{}' now replicates from '{}'", other.name, cand.name),
            Err(e) => format!("'{}' could not be repointed: {e}", other.name),
        });
        let _ = &other.executed;
    }
    let epoch = f.consensus.applied().borrow().topology.epoch;
    commit(
        f,
        Op::Promote {
            epoch,
            primary: cand.name.clone(),
            from_pos: cand.io_pos.clone(),
        },
        repointed.join("; "),
    )
    .await?;
    let took = started.elapsed();
    Ok(format!(
        "promoted '{}' under epoch {epoch} in {:.2}s",
        cand.name,
        took.as_secs_f64()
    ))
}

/// Planned switchover: hold writes, make the old primary read-only, let
/// the target catch up to its exact position, promote, repoint, release.
pub async fn switchover(f: &Fleet<'_>, target: &str) -> R<String> {
    let started = Instant::now();
    let applied = f.consensus.applied().borrow().clone();
    let topo = &applied.topology;
    let old = topo
        .primary_backend()
        .cloned()
        .ok_or_else(|| FailoverError::Refused("there is no primary to switch over from".into()))?;
    let tgt = topo
        .backends
        .get(target)
        .cloned()
        .ok_or_else(|| FailoverError::Refused(format!("unknown backend '{target}'")))?;
    if tgt.name == old.name {
        return Err(FailoverError::Refused(format!(
            "'{target}' is already the primary"
        )));
    }
    if tgt.state != BackendState::Active || tgt.role != Role::Replica {
        return Err(FailoverError::Refused(format!(
            "'{target}' is {} and cannot be promoted",
            tgt.state.as_str()
        )));
    }
    // Check the target before holding any write.
    let mut tc = connect(f, &tgt.name, &tgt.addr).await?;
    let mut pc = connect(f, &old.name, &old.addr).await?;
    let r = commit(
        f,
        Op::Freeze {
            expected_epoch: topo.epoch,
        },
        format!("switchover to '{target}'"),
    )
    .await?;
    let frozen_at = Instant::now();
    let lease = f.cfg.cluster.lease_timeout.get() + f.cfg.failover.lease_drift.get();
    let missing = f.consensus.wait_all_applied(r.index, lease).await;
    if !missing.is_empty() {
        // Nodes that did not confirm cannot route writes once their
        // lease has run out.
        tokio::time::sleep(lease.saturating_sub(frozen_at.elapsed())).await;
    }
    let ro = if is_mariadb(&pc) {
        "SET GLOBAL read_only = 1"
    } else {
        "SET GLOBAL super_read_only = 1"
    };
    if let Err(e) = exec(&mut pc, &old.name, "set read_only=1", ro).await {
        return Err(restore(f, &old.name, e).await);
    }
    let pos_sql = if is_mariadb(&pc) {
        "SELECT @@gtid_binlog_pos"
    } else {
        "SELECT @@gtid_executed"
    };
    let pos: String = match pc.query_first::<String, _>(pos_sql).await {
        Ok(p) => crate::probe::normalize_gtids(&p.unwrap_or_default()),
        Err(e) => {
            let _ = pc.query_drop("SET GLOBAL read_only = 0").await;
            return Err(restore(f, &old.name, step(&old.name, "read position", e)).await);
        }
    };
    let secs = f.cfg.failover.catchup_timeout.get().as_secs_f64();
    match tc
        .query_first::<i64, _>(gtid_wait_sql(&tc, &pos, secs))
        .await
    {
        Ok(Some(0)) => {}
        other => {
            let _ = pc.query_drop("SET GLOBAL read_only = 0").await;
            let why = step(
                &tgt.name,
                "catch up",
                format!("did not reach {pos} within {secs}s ({other:?})"),
            );
            return Err(restore(f, &old.name, why).await);
        }
    }
    if let Err(e) = promote_server(&mut tc, &tgt.name).await {
        let _ = pc.query_drop("SET GLOBAL read_only = 0").await;
        return Err(restore(f, &old.name, e).await);
    }
    let mut notes = Vec::new();
    for b in topo.backends.values() {
        if b.name == tgt.name || b.name == old.name || b.state != BackendState::Active {
            continue;
        }
        let res = async {
            let mut c = connect(f, &b.name, &b.addr).await?;
            repoint(&mut c, &b.name, &tgt.addr, None, "slave_pos").await
        }
        .await;
        notes.push(match res {
            Ok(()) => format!("'{}' now replicates from '{}'", b.name, tgt.name),
            Err(e) => format!("'{}' could not be repointed: {e}", b.name),
        });
    }
    let fc = &f.cfg.failover;
    let old_note = if fc.replication_user.is_empty() {
        format!(
            "'{}' is read-only; set failover.replication_user to let concord make it a replica",
            old.name
        )
    } else {
        match repoint(
            &mut pc,
            &old.name,
            &tgt.addr,
            Some((&fc.replication_user, &fc.replication_password)),
            "current_pos",
        )
        .await
        {
            Ok(()) => format!("'{}' now replicates from '{}'", old.name, tgt.name),
            Err(e) => format!("'{}' could not become a replica: {e}", old.name),
        }
    };
    notes.push(old_note);
    let epoch = f.consensus.applied().borrow().topology.epoch;
    commit(
        f,
        Op::Promote {
            epoch,
            primary: tgt.name.clone(),
            from_pos: pos.clone(),
        },
        notes.join("; "),
    )
    .await?;
    let paused = frozen_at.elapsed();
    Ok(format!(
        "switched over to '{}' (epoch {epoch}); writes were held {:.0} ms; total {:.0} ms",
        tgt.name,
        paused.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    ))
}

/// An aborted switchover gives the old primary its writes back under the
/// new epoch.
async fn restore(f: &Fleet<'_>, name: &str, why: FailoverError) -> FailoverError {
    let epoch = f.consensus.applied().borrow().topology.epoch;
    let restored = commit(
        f,
        Op::Promote {
            epoch,
            primary: name.to_string(),
            from_pos: String::new(),
        },
        format!("switchover aborted: {why}"),
    )
    .await;
    match restored {
        Ok(_) => why,
        Err(e) => FailoverError::Refused(format!("{why}; restoring '{name}' also failed: {e}")),
    }
}

/// A fenced former primary becomes a replica of the current primary,
/// unless it holds transactions the primary never received.
pub async fn rejoin(f: &Fleet<'_>, name: &str) -> R<String> {
    let applied = f.consensus.applied().borrow().clone();
    let topo = &applied.topology;
    let b = topo
        .backends
        .get(name)
        .cloned()
        .ok_or_else(|| FailoverError::Refused(format!("unknown backend '{name}'")))?;
    if b.state != BackendState::Fenced {
        return Err(FailoverError::Refused(format!("'{name}' is not fenced")));
    }
    let p = topo
        .primary_backend()
        .cloned()
        .ok_or_else(|| FailoverError::Refused("there is no primary to rejoin".into()))?;
    let fc = &f.cfg.failover;
    if fc.replication_user.is_empty() {
        return Err(FailoverError::Refused(
            "set failover.replication_user and replication_password: a former primary has no replication account of its own".into(),
        ));
    }
    let mut pc = connect(f, &p.name, &p.addr).await?;
    let mut bc = connect(f, &b.name, &b.addr).await?;
    let (own_sql, primary_sql) = if is_mariadb(&bc) {
        ("SELECT @@gtid_binlog_pos", "SELECT @@gtid_current_pos")
    } else {
        ("SELECT @@gtid_executed", "SELECT @@gtid_executed")
    };
    let own: String = bc
        .query_first(own_sql)
        .await
        .map_err(|e| step(name, "read position", e))?
        .unwrap_or_default();
    // What the current primary started from when it was promoted: the old
    // primary may hold nothing beyond it. (Sequence numbers go on growing
    // on the new primary, so its current position proves nothing.)
    let theirs: String = match &topo.promoted_from {
        Some(p) => Some(p.clone()),
        None => pc
            .query_first(primary_sql)
            .await
            .map_err(|e| step(&p.name, "read position", e))?,
    }
    .unwrap_or_default();
    let (own, theirs) = (
        crate::probe::normalize_gtids(&own),
        crate::probe::normalize_gtids(&theirs),
    );
    if !gtid::covers(&theirs, &own) {
        return Err(FailoverError::Refused(format!(
            "'{name}' has transactions the primary '{}' never received (its binlog: {own}; primary: {theirs}); it diverged: rebuild it from a backup or clone of the primary",
            p.name
        )));
    }
    repoint(
        &mut bc,
        name,
        &p.addr,
        Some((&fc.replication_user, &fc.replication_password)),
        "current_pos",
    )
    .await?;
    commit(
        f,
        Op::Rejoin {
            name: name.to_string(),
        },
        format!("replicates from '{}' at {own}", p.name),
    )
    .await?;
    Ok(format!("'{name}' rejoined as a replica of '{}'", p.name))
}

/// Leader upkeep: a fenced server that comes back writable is made
/// read-only again (it is never routed to either way).
pub async fn keep_fenced_read_only(f: &Fleet<'_>, seen: &mut BTreeMap<String, bool>) {
    let applied = f.consensus.applied().borrow().clone();
    for b in applied
        .topology
        .backends
        .values()
        .filter(|b| b.state == BackendState::Fenced)
    {
        let Some(h) = f.health.get(&b.name) else {
            continue;
        };
        if h.reachable && !h.read_only {
            if seen.get(&b.name) != Some(&true) {
                let msg = fence_server(f, &b.name, &b.addr).await;
                note(f, format!("fenced '{}' came back writable: {msg}", b.name)).await;
                seen.insert(b.name.clone(), true);
            }
        } else {
            seen.remove(&b.name);
        }
    }
}

/// How long since the last fence (failover cooldown).
pub fn since_last_fence(topo: &Topology) -> Option<Duration> {
    let last = topo.last_fence_ms?;
    Some(Duration::from_millis(
        concord_consensus::topology::now_ms().saturating_sub(last),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, weight: u32, io_pos: &str) -> Candidate {
        Candidate {
            name: name.into(),
            addr: String::new(),
            weight,
            io_pos: io_pos.into(),
            executed: io_pos.into(),
        }
    }

    #[test]
    fn promotes_only_a_replica_that_has_everything_the_others_have() {
        // db3 received more: it wins whatever the weights say.
        let c = [cand("db2", 500, "0-1-10"), cand("db3", 1, "0-1-12")];
        assert_eq!(
            most_advanced(&c).ok().map(|i| c[i].name.as_str()),
            Some("db3")
        );
        // Equal positions: the higher weight.
        let c = [cand("db2", 1, "0-1-12"), cand("db3", 9, "0-1-12")];
        assert_eq!(
            most_advanced(&c).ok().map(|i| c[i].name.as_str()),
            Some("db3")
        );
        // Diverged (each has a domain the other lacks): refuse, naming both.
        let c = [cand("db2", 1, "0-1-12,1-2-3"), cand("db3", 1, "0-1-13")];
        let e = most_advanced(&c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("db2=0-1-12,1-2-3") && e.contains("refusing"),
            "{e}"
        );
    }
}
