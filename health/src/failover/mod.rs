//! The failover, switchover and rejoin workflows, run by the Raft leader.
//! Every step is recorded in the replicated event log; every topology
//! change is a CAS on the epoch, so a second decider cannot act twice; and
//! every statement that changes a server checks first that this node
//! still owns the workflow (`owner.rs`), so a deposed leader stops.
//!
//! `verdict.rs` decides that a primary is dead, `candidates.rs` which
//! replica to promote, `dialect.rs` holds the SQL in both dialects.

mod candidates;
mod dialect;
mod owner;
mod repoint;
mod verdict;

pub use verdict::{report, Detector, Verdict};

use crate::gtid;
use crate::monitor::Health;
use crate::probe::monitor_opts;
use concord_config::Config;
use concord_consensus::{BackendState, Command, Consensus, Op, Owner, Role, Topology};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("{0}")]
    Refused(String),
    #[error("consensus: {0}")]
    Consensus(#[from] concord_consensus::ConsensusError),
    #[error("{backend}: read_only waited {waited:?} for a lock another session holds (LOCK TABLES ... WRITE, or a write still running: see SHOW PROCESSLIST there)")]
    LockWait { backend: String, waited: Duration },
    #[error("{backend}: {step} failed: {error}")]
    Step {
        backend: String,
        step: &'static str,
        error: String,
    },
}

pub(crate) type R<T> = Result<T, FailoverError>;

/// What a workflow needs.
pub struct Fleet<'a> {
    pub consensus: &'a Consensus,
    pub cfg: Arc<Config>,
    pub health: &'a Arc<Health>,
    /// The claim this workflow committed (see `owner.rs`).
    claim: OnceLock<Owner>,
    /// Set for a step that outlives its workflow (`repoint.rs`): the
    /// epoch and the primary it was for, which must still hold.
    outlives: OnceLock<(u64, String)>,
}

impl<'a> Fleet<'a> {
    pub fn new(consensus: &'a Consensus, cfg: Arc<Config>, health: &'a Arc<Health>) -> Self {
        Fleet {
            consensus,
            cfg,
            health,
            claim: OnceLock::new(),
            outlives: OnceLock::new(),
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
    let mut c = match tokio::time::timeout(f.cfg.monitor.timeout.get(), Conn::new(opts)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(step(name, "connect", e)),
        Err(_) => return Err(step(name, "connect", "timed out")),
    };
    // No step waits a day for a lock (`lock_wait_timeout`'s default): a
    // backup's FLUSH TABLES WITH READ LOCK on a candidate, say, fails the
    // step after `failover.catchup_timeout` instead (read_only is bounded
    // tighter, see `dialect::set_read_only`).
    // (Test-only `fence-waits-for-locks`: not bounded, as before.)
    if !concord_config::testhooks::on("fence-waits-for-locks") {
        let secs = f.cfg.failover.catchup_timeout.get().as_secs().max(1);
        let sql = format!("SET SESSION lock_wait_timeout = {secs}");
        c.query_drop(sql)
            .await
            .map_err(|e| step(name, "bound the lock wait", e))?;
    }
    Ok(c)
}

fn step(backend: &str, step: &'static str, e: impl std::fmt::Display) -> FailoverError {
    FailoverError::Step {
        backend: backend.to_string(),
        step,
        error: e.to_string(),
    }
}

/// How long the leader waits after a fence for leases that may still
/// name the old epoch: the longest lease any node can hold (the fleet's
/// length, and older ones that may still run) plus `failover.lease_drift`.
fn lease_wait(f: &Fleet<'_>) -> Duration {
    let fleet = f.consensus.applied().borrow().topology.longest_lease_ms();
    let own = f.cfg.cluster.lease_timeout.get();
    Duration::from_millis(fleet).max(own) + f.cfg.failover.lease_drift.get()
}

/// The old primary could not be fenced by us: give its dead-man switch
/// the time it needs to fence it (`failover.self_fence`), counted from
/// the moment no node could write a heartbeat there any more.
async fn wait_for_self_fence(f: &Fleet<'_>, name: &str, fleet_done: Instant) {
    if concord_config::testhooks::on("no-self-fence-wait") {
        note(
            f,
            "test switch no-self-fence-wait: promoting without waiting for the self-fence".into(),
        )
        .await;
        return;
    }
    let wait = crate::selffence::wait_after_fleet(
        f.cfg.failover.self_fence_after.get(),
        f.cfg.failover.lease_drift.get(),
        f.cfg.monitor.timeout.get(),
    );
    tokio::time::sleep(wait.saturating_sub(fleet_done.elapsed())).await;
    note(
        f,
        format!("'{name}' is unreachable: waited {wait:?} after the last possible heartbeat for it to fence itself (failover.self_fence)"),
    )
    .await;
}

/// Automatic or forced failover: claim the workflow, fence the primary
/// (in the topology, then on the server where it is reachable), wait until
/// no node can still send it anything, promote the most advanced replica,
/// repoint the others, commit.
pub async fn failover(f: &Fleet<'_>, why: String) -> R<String> {
    let started = Instant::now();
    let applied = f.consensus.applied().borrow().clone();
    let topo = &applied.topology;
    let old = match topo.primary_backend() {
        Some(p) => p.clone(),
        None => return resume(f).await,
    };
    owner::claim(f, "failover").await?;
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
    // At once where it is reachable: what is running there fails rather
    // than commits later, and non-privileged writes stop.
    let fenced = dialect::fence_server(f, &old.name, &old.addr).await;
    note(f, fenced.msg).await;
    promote_phase(
        f,
        Some((old.name.clone(), old.addr.clone())),
        Some(r.index),
        fenced_at,
        started,
    )
    .await
}

/// A failover whose leader died after the fence (or whose promotion
/// failed): claim it and finish it.
pub async fn resume(f: &Fleet<'_>) -> R<String> {
    let applied = f.consensus.applied().borrow().clone();
    if applied.topology.epoch == 0 {
        return Err(FailoverError::Refused("no primary was ever chosen".into()));
    }
    owner::claim(f, "resume").await?;
    let old = deposed(&applied.topology);
    // When the fence committed, and what a previous owner may still have
    // in flight, are unknown: a full wait from the claim.
    promote_phase(f, old, None, Instant::now(), Instant::now()).await
}

/// Why a switchover target cannot take over now, from its last probe.
fn not_ready(h: &crate::monitor::BackendHealth, catchup: Duration) -> Option<String> {
    if !h.reachable {
        return Some("does not answer its health checks".into());
    }
    if !h.replicating {
        return Some(format!(
            "is not replicating (IO thread {}, SQL thread {})",
            if h.io_running { "running" } else { "stopped" },
            if h.sql_running { "running" } else { "stopped" }
        ));
    }
    match h.lag_ms {
        None => Some("has an unknown replication lag".into()),
        Some(l) if u128::from(l) > catchup.as_millis() => Some(format!(
            "lags {l} ms, more than failover.catchup_timeout ({catchup:?})"
        )),
        Some(_) => None,
    }
}

/// The primary the interrupted workflow took away (fenced, or only frozen
/// by a switchover), by name and address: the one to fence again and
/// catch up to. A log written before `deposed` was recorded: the first
/// fenced backend.
fn deposed(topo: &Topology) -> Option<(String, String)> {
    pick_deposed(
        topo,
        !concord_config::testhooks::on("resume-guesses-deposed"),
    )
}

/// [`deposed`], `recorded` false: as before the record existed.
fn pick_deposed(topo: &Topology, recorded: bool) -> Option<(String, String)> {
    match topo.deposed.as_ref().filter(|_| recorded) {
        // (Removed since: nothing of it to fence or catch up to.)
        Some(d) => topo.backends.get(d),
        None => topo
            .backends
            .values()
            .find(|b| b.state == BackendState::Fenced),
    }
    .map(|b| (b.name.clone(), b.addr.clone()))
}

/// After the fence: wait for every node's write gate, or for every lease
/// that could name the old epoch to run out; fence the old primary again;
/// freeze the replicas' positions; promote the most advanced; report what
/// it could not carry over.
async fn promote_phase(
    f: &Fleet<'_>,
    old: Option<(String, String)>,
    fence_index: Option<u64>,
    fenced_at: Instant,
    started: Instant,
) -> R<String> {
    let wait = lease_wait(f);
    if concord_config::testhooks::on("no-fence-wait") {
        note(
            f,
            "test switch no-fence-wait: promoting without waiting for the fleet".into(),
        )
        .await;
    } else {
        // Every member that applied the fence and answered everything it
        // had sent to the old primary can send it nothing more; for the
        // others, their leases must run out (see docs/DESIGN.md, "Why a
        // fenced primary never acknowledges a write").
        // Counted from the fence's commit, like the leases: a slow first
        // fence of an unreachable server is not added on top.
        let missing = match fence_index {
            Some(index) => {
                f.consensus
                    .wait_all_applied(index, wait.saturating_sub(fenced_at.elapsed()))
                    .await
            }
            None => vec![0],
        };
        if missing.is_empty() {
            note(
                f,
                "every node applied the fence and finished what it had sent to the old primary"
                    .into(),
            )
            .await;
        } else {
            tokio::time::sleep(wait.saturating_sub(fenced_at.elapsed())).await;
            note(
                f,
                format!(
                    "every lease that could name the old epoch has expired (waited {wait:?}{})",
                    if fence_index.is_some() {
                        format!("; nodes {missing:?} did not confirm the fence")
                    } else {
                        String::new()
                    }
                ),
            )
            .await;
        }
    }
    // From here no node can write anything to the old primary, heartbeats
    // included.
    let fleet_done = Instant::now();
    // A leader deposed meanwhile stops here, before any side effect.
    owner::owned(f).await?;
    // The old primary: fenced again (anything that got in meanwhile), and
    // its final position, which the promoted server must have.
    let mut old_final: Option<String> = None;
    if let Some((name, addr)) = &old {
        let fenced = dialect::fence_server(f, name, addr).await;
        note(f, fenced.msg).await;
        old_final = fenced.pos;
        if old_final.is_none() && f.cfg.failover.self_fence {
            wait_for_self_fence(f, name, fleet_done).await;
            owner::owned(f).await?;
        }
    }
    let applied = f.consensus.applied().borrow().clone();
    let topo = &applied.topology;
    if let (Some(p), false) = (
        &topo.primary,
        concord_config::testhooks::on("no-workflow-owner"),
    ) {
        // Promoted meanwhile (an earlier owner finished or gave the old
        // primary back): stopping and repointing replicas now would
        // leave that primary without them.
        return Err(FailoverError::Refused(format!(
            "'{p}' is already the primary of epoch {}; nothing to promote",
            topo.epoch
        )));
    }
    let exclude = old.as_ref().map(|o| o.0.clone()).unwrap_or_default();
    let secs = f.cfg.failover.catchup_timeout.get().as_secs_f64();
    if let Some(pos) = &old_final {
        // Reachable: let the replicas receive everything it has. Once one
        // has, the others get up to `monitor.timeout` more: a choice among
        // equals (weight, no delay, no backup's lock) is not lost to one
        // that got the last heartbeat a millisecond earlier.
        let deadline = Instant::now() + f.cfg.failover.catchup_timeout.get();
        let mut first: Option<Instant> = None;
        loop {
            let cands = candidates::candidates(f, topo, &exclude).await;
            let has = |c: &candidates::Candidate| gtid::covers(&c.io_pos, pos);
            if cands.iter().any(has) {
                first.get_or_insert_with(Instant::now);
            }
            // (One not receiving, or adopted, gets nothing more: not waited for.)
            let may_get = |c: &&candidates::Candidate| c.receiving && !c.promoted;
            if cands.iter().filter(may_get).all(has)
                || first.is_some_and(|t| t.elapsed() >= f.cfg.monitor.timeout.get())
                || Instant::now() >= deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Freeze what each replica received: nothing more can arrive from a
    // fenced source, and what is in a relay log stays there to be applied.
    for b in topo.backends.values().filter(|b| {
        b.name != exclude && matches!(b.state, BackendState::Active | BackendState::Draining)
    }) {
        if let Ok(mut c) = connect(f, &b.name, &b.addr).await {
            let _ = dialect::stop_receiving(f, &mut c, &b.name).await;
            let _ = c.disconnect().await;
        }
    }
    let mut found = candidates::candidates(f, topo, &exclude).await;
    candidates::mark_held(f, &mut found).await;
    if found.is_empty() {
        return Err(FailoverError::Refused(
            "no reachable replica to promote".into(),
        ));
    }
    // What the old primary had that the new one does not: its final
    // position when reachable, else the last one a probe saw.
    let (last_known, source) = match &old_final {
        Some(p) => (p.clone(), "its final position"),
        None => (
            old.as_ref()
                .and_then(|(n, _)| f.health.get(n))
                .map(|h| h.gtid.clone())
                .unwrap_or_default(),
            "the last position a probe saw",
        ),
    };
    let (chosen, cands) = candidates::choose(found)?;
    let cand = &chosen;
    note(
        f,
        format!(
            "candidate '{}' ({} {}); others: {}",
            cand.name,
            if cand.promoted {
                "replicating from nobody, promoted by an interrupted earlier attempt: adopted; executed"
            } else {
                "received"
            },
            cand.io_pos,
            cands
                .iter()
                .map(|c| format!("{}={}", c.name, c.io_pos))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await;
    // Preflight of the server about to become the primary.
    if let Some(h) = f.health.get(&cand.name).filter(|h| !h.preflight.is_empty()) {
        note(
            f,
            format!("preflight of '{}': {}", cand.name, h.preflight.join("; ")),
        )
        .await;
    }
    let mut c = connect(f, &cand.name, &cand.addr).await?;
    // A delayed replica chosen (it alone received the most, or only
    // delayed ones are left), or one whose applier an earlier attempt left
    // stopped, applies its relay log now. (Test-only `keep-candidate-delay`:
    // kept.)
    if (cand.delay > 0 || !cand.applying)
        && !cand.promoted
        && !concord_config::testhooks::on("keep-candidate-delay")
    {
        let why = if cand.delay > 0 {
            format!("had MASTER_DELAY = {}", cand.delay)
        } else {
            "had its applier stopped".to_string()
        };
        match dialect::apply_relay_log_now(f, &mut c, &cand.name, &cand.io_pos).await {
            Some(r) => {
                r?;
                note(
                    f,
                    format!(
                        "'{}' {why}: restarted from its relay log position with no delay, so it applies its relay log before its promotion",
                        cand.name
                    ),
                )
                .await;
            }
            None => {
                note(
                    f,
                    format!(
                        "'{}' {why}: left so (MySQL, or several GTID domains); the catch-up waits for it",
                        cand.name
                    ),
                )
                .await;
            }
        }
    }
    // An adopted one has no relay log: what it has is executed.
    let waited: Option<i64> = if cand.promoted {
        Some(0)
    } else {
        c.query_first(dialect::gtid_wait_sql(&c, &cand.io_pos, secs))
            .await
            .map_err(|e| step(&cand.name, "apply relay log", e))?
    };
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
    let lost = if last_known.is_empty() {
        None
    } else {
        gtid::missing(&cand.io_pos, &last_known)
    };
    if let Some((set, n)) = &lost {
        metrics::counter!("concord_failover_lost_transactions_total").increment(*n);
        tracing::error!(old = %exclude, new = %cand.name, "promotion loses {n} transactions the old primary had ({source}): {set}");
        note(
            f,
            format!(
                "'{}' lacks {}{n} transactions '{exclude}' had ({source}): {set}; they are not on the new primary",
                cand.name,
                if old_final.is_none() { "at least " } else { "" }
            ),
        )
        .await;
    }
    record_promoting(f, &cand.name).await?;
    dialect::promote_server(f, &mut c, &cand.name).await?;
    let _ = c.disconnect().await;
    interrupt_here(&cand.name)?;
    note(
        f,
        format!(
            "'{}' promoted: replication stopped and reset, read_only=0",
            cand.name
        ),
    )
    .await;
    let others: Vec<_> = cands
        .iter()
        .map(|c| (c.name.clone(), c.addr.clone()))
        .collect();
    let mut repointed = repoint::replicas(f, &others, &cand.name, &cand.addr).await;
    if let Some((set, n)) = &lost {
        repointed.push(format!("{n} transactions not carried over: {set}"));
    }
    let also_fenced = fence_strays(f, topo, &exclude, &cand.name, &cands).await;
    owner::owned(f).await?;
    let epoch = f.consensus.applied().borrow().topology.epoch;
    commit(
        f,
        Op::Promote {
            epoch,
            primary: cand.name.clone(),
            from_pos: cand.io_pos.clone(),
            // Resumed from a switchover's Freeze: the old primary was
            // never fenced, and may hold writes the candidate lacks.
            fence_deposed: true,
            also_fenced,
        },
        repointed.join("; "),
    )
    .await?;
    let took = started.elapsed();
    Ok(format!(
        "promoted '{}' under epoch {epoch} in {:.2}s{}",
        cand.name,
        took.as_secs_f64(),
        lost.map(|(set, n)| format!("; {n} transactions not carried over: {set}"))
            .unwrap_or_default()
    ))
}

/// Records in the topology which server this owner is about to promote:
/// an owner that resumes after an interruption between this and the
/// Promote adopts it rather than fencing it as a stray. The record is
/// also the last check before the server changes: refused unless this
/// node still owns the workflows and no primary was named since the
/// fence, so a stale workflow makes nothing writable. Test-only
/// `promote-unrecorded`: no record.
async fn record_promoting(f: &Fleet<'_>, name: &str) -> R<()> {
    if concord_config::testhooks::on("promote-unrecorded") {
        return Ok(());
    }
    // A member that has not reported since this leader took over gets
    // two report intervals to do so (a node that is down, all of them).
    let mut unsure = members_unsure(f);
    let until = Instant::now() + f.cfg.monitor.interval.get() * 2;
    while !unsure.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        unsure = members_unsure(f);
    }
    if !unsure.is_empty() {
        // A member that cannot decode the record would stop applying the
        // log at it, and refuse writes until upgraded: promoted without
        // it. The checks it would have made are made here instead (the
        // Promote makes them again). A resume of this workflow then does
        // not adopt this server: it is fenced if writable, else left out.
        owner::owned(f).await?;
        let epoch = f.consensus.applied().borrow().topology.epoch;
        f.consensus
            .applied()
            .borrow()
            .topology
            .promotable(epoch, name)
            .map_err(FailoverError::Refused)?;
        note(
            f,
            format!(
                "; nodes {unsure:?} have not reported that they can read the promotion record (an older build, or no report to this leader yet): '{name}' is promoted without it"
            ),
        )
        .await;
        return Ok(());
    }
    let epoch = f.consensus.applied().borrow().topology.epoch;
    commit(
        f,
        Op::Promoting {
            epoch,
            backend: name.to_string(),
        },
        String::new(),
    )
    .await
    .map(|_| ())
}

/// Members that have not reported to this leader that their state
/// machine decodes every entry this one writes: an older build (its
/// reports carry no version), or no report yet (a node down, a leader
/// new since). A report of any age counts: a build does not change while
/// a node runs. Test-only `promoting-ignores-versions`: none.
fn members_unsure(f: &Fleet<'_>) -> Vec<u64> {
    if concord_config::testhooks::on("promoting-ignores-versions") {
        return Vec::new();
    }
    let reports = f.consensus.reports(Duration::MAX);
    let status = f.consensus.status();
    status
        .members
        .keys()
        .copied()
        .filter(|id| {
            *id != status.id
                && reports.get(id).is_none_or(|v| {
                    v["log_version"].as_u64().unwrap_or(1) < concord_consensus::LOG_VERSION
                })
        })
        .collect()
}

/// Test-only `interrupt-after-promote`, once per process: as if this
/// owner died right after promoting, before committing.
fn interrupt_here(name: &str) -> R<()> {
    if concord_config::testhooks::on("interrupt-after-promote")
        && !INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return Err(step(name, "test switch interrupt-after-promote", "stopped"));
    }
    Ok(())
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Members other than the new primary and the deposed one that are
/// writable and replicate from nobody (made so by hand), and the one an
/// interrupted earlier attempt started to promote when it was not adopted
/// (see [`candidates::choose`]). Nothing else here touches them; left
/// writable, a client that reaches them directly writes to a second
/// primary. Made read-only and returned, to be fenced with the promotion.
async fn fence_strays(
    f: &Fleet<'_>,
    topo: &Topology,
    exclude: &str,
    new_primary: &str,
    cands: &[candidates::Candidate],
) -> Vec<String> {
    let mut out = Vec::new();
    if concord_config::testhooks::on("leave-strays-writable") {
        return out;
    }
    // The one an interrupted attempt promoted and this one did not adopt:
    // fenced in the topology even where it cannot be reached or is in
    // maintenance (the Promote clears the record of it).
    if let Some(p) = topo
        .promoting
        .as_ref()
        .filter(|p| *p != exclude && *p != new_primary && !cands.iter().any(|c| &c.name == *p))
    {
        if !f.health.get(p).is_some_and(|h| h.reachable) {
            note(
                f,
                format!("'{p}' was being promoted by an interrupted attempt and is not reachable now: fenced with this promotion, REJOIN checks it"),
            )
            .await;
            out.push(p.clone());
        }
    }
    for b in topo.backends.values().filter(|b| {
        b.name != exclude
            && b.name != new_primary
            && matches!(b.state, BackendState::Active | BackendState::Draining)
            && !cands.iter().any(|c| c.name == b.name)
            // One the health checks last saw unreachable is not waited on
            // here (a connect timeout each); it serves nothing meanwhile.
            && f.health.get(&b.name).is_none_or(|h| h.reachable)
    }) {
        // The one an earlier attempt started to promote and that was not
        // adopted: fenced even if read-only (it may hold writes).
        if topo.promoting.as_deref() != Some(b.name.as_str())
            && !candidates::probe(f, &b.name, &b.addr).await.looks_primary()
        {
            continue;
        }
        let msg = dialect::fence_server(f, &b.name, &b.addr).await.msg;
        note(
            f,
            format!(
                "'{}' replicates from nobody and {}: fenced with this promotion, REJOIN checks it; {msg}",
                b.name,
                if topo.promoting.as_deref() == Some(b.name.as_str()) {
                    "an interrupted attempt promoted it, but it lacks what the new primary has"
                } else {
                    "is writable (made so by hand?)"
                }
            ),
        )
        .await;
        out.push(b.name.clone());
    }
    out
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
    // Before holding any write: a target that cannot catch up would hold
    // them for the whole catch-up timeout, then abort.
    if let Some(why) = f
        .health
        .get(&tgt.name)
        .and_then(|h| not_ready(&h, f.cfg.failover.catchup_timeout.get()))
        .filter(|_| !concord_config::testhooks::on("switchover-any-target"))
    {
        return Err(FailoverError::Refused(format!(
            "'{target}' {why}; writes were not held"
        )));
    }
    let mut tc = connect(f, &tgt.name, &tgt.addr).await?;
    // A backup's lock there holds its applier: the catch-up below would
    // hold every write for failover.catchup_timeout, then undo.
    // (Test-only `switchover-any-target`: not looked at.)
    if let Some(state) = dialect::applier_held_by_backup(&mut tc)
        .await
        .filter(|_| !concord_config::testhooks::on("switchover-any-target"))
    {
        return Err(FailoverError::Refused(format!(
            "'{target}' cannot catch up: its replication applier is in state '{state}' (a backup's FLUSH TABLES WITH READ LOCK or BACKUP STAGE there?); writes were not held: try again when it is done"
        )));
    }
    let mut pc = connect(f, &old.name, &old.addr).await?;
    owner::claim(f, "switchover").await?;
    let r = commit(
        f,
        Op::Freeze {
            expected_epoch: topo.epoch,
        },
        format!("switchover to '{target}'"),
    )
    .await?;
    let frozen_at = Instant::now();
    let lease = lease_wait(f);
    let missing = f.consensus.wait_all_applied(r.index, lease).await;
    if !missing.is_empty() {
        // Nodes that did not confirm cannot route writes once their
        // lease has run out.
        tokio::time::sleep(lease.saturating_sub(frozen_at.elapsed())).await;
    }
    // Writes are frozen meanwhile: a session holding a write lock there
    // gets `monitor.timeout`, not a day, then the switchover is undone.
    // The self-fence clock restarts first, and the wait ends before it
    // could fire (heartbeats stopped with the freeze, and the pending
    // read_only holds up the event's own bookkeeping).
    let mut wait = f.cfg.monitor.timeout.get();
    if f.cfg.failover.self_fence {
        if let Err(e) = dialect::rearm_self_fence(f, &mut pc).await {
            return Err(restore(f, &old.name, e).await);
        }
        // (Whole seconds, rounded down: the wait is set in seconds.)
        let budget = f
            .cfg
            .failover
            .self_fence_after
            .get()
            .saturating_sub(Duration::from_secs(2))
            .as_secs();
        wait = wait.min(Duration::from_secs(budget.max(1)));
    }
    if let Err(e) = dialect::set_read_only(f, &mut pc, &old.name, wait).await {
        let e = match e {
            FailoverError::LockWait { .. } => FailoverError::Refused(format!(
                "{e}; the switchover is undone: try it again when that session is done"
            )),
            e => e,
        };
        return Err(restore(f, &old.name, e).await);
    }
    let pos = match dialect::binlog_pos(&mut pc, &old.name).await {
        Ok(p) => p,
        Err(e) => {
            return Err(undo_and_restore(f, &mut pc, &old.name, e).await);
        }
    };
    let secs = f.cfg.failover.catchup_timeout.get().as_secs_f64();
    match tc
        .query_first::<i64, _>(dialect::gtid_wait_sql(&tc, &pos, secs))
        .await
    {
        Ok(Some(0)) => {}
        other => {
            let why = step(
                &tgt.name,
                "catch up",
                format!("did not reach {pos} within {secs}s ({other:?})"),
            );
            return Err(undo_and_restore(f, &mut pc, &old.name, why).await);
        }
    }
    if let Err(e) = record_promoting(f, &tgt.name).await {
        return Err(undo_and_restore(f, &mut pc, &old.name, e).await);
    }
    if let Err(e) = dialect::promote_server(f, &mut tc, &tgt.name).await {
        // read_only=0 may have taken effect with its answer lost: never
        // two writable servers once the old one has its writes back.
        let ro = dialect::read_only_sql(&tc);
        let _ = dialect::exec(f, &mut tc, &tgt.name, "set read_only=1", ro).await;
        return Err(undo_and_restore(f, &mut pc, &old.name, e).await);
    }
    interrupt_here(&tgt.name)?;
    let others: Vec<_> = topo
        .backends
        .values()
        .filter(|b| b.name != tgt.name && b.name != old.name && b.state == BackendState::Active)
        .map(|b| (b.name.clone(), b.addr.clone()))
        .collect();
    let mut notes = repoint::replicas(f, &others, &tgt.name, &tgt.addr).await;
    let fc = &f.cfg.failover;
    let old_note = if fc.replication_user.is_empty() {
        format!(
            "'{}' is read-only; set failover.replication_user to let concord make it a replica",
            old.name
        )
    } else {
        match dialect::repoint(
            f,
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
            fence_deposed: false,
            also_fenced: Vec::new(),
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

/// An aborted switchover makes the old primary writable again, only
/// while this node still owns the workflow (a new owner resumes it).
async fn undo_read_only(f: &Fleet<'_>, pc: &mut Conn, name: &str) -> R<()> {
    dialect::make_writable(f, pc, name).await
}

/// [`restore`] after undoing `read_only`; if that fails (no longer the
/// owner, or the server is gone), the topology stays without a primary
/// and the owner's resume promotes one: never a read-only primary.
async fn undo_and_restore(
    f: &Fleet<'_>,
    pc: &mut Conn,
    name: &str,
    why: FailoverError,
) -> FailoverError {
    match undo_read_only(f, pc, name).await {
        Ok(()) => restore(f, name, why).await,
        Err(e) => FailoverError::Refused(format!(
            "{why}; '{name}' was left read-only ({e}): the workflow's owner resumes the failover"
        )),
    }
}

/// An aborted switchover gives the old primary its writes back under the
/// new epoch (refused by the state machine once another node owns the
/// workflows: it resumes the failover instead).
async fn restore(f: &Fleet<'_>, name: &str, why: FailoverError) -> FailoverError {
    if let Err(e) = owner::owned(f).await {
        return FailoverError::Refused(format!("{why}; not restoring '{name}': {e}"));
    }
    let epoch = f.consensus.applied().borrow().topology.epoch;
    let restored = commit(
        f,
        Op::Promote {
            epoch,
            primary: name.to_string(),
            from_pos: String::new(),
            fence_deposed: false,
            also_fenced: Vec::new(),
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
/// unless it holds transactions the primary does not: every (domain,
/// server, sequence) in its binlog must be in the primary's GTID state
/// exactly (server ids included), whatever promotions happened since.
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
    owner::claim(f, "rejoin").await?;
    let mut pc = connect(f, &p.name, &p.addr).await?;
    let mut bc = connect(f, &b.name, &b.addr).await?;
    let own = if dialect::is_mariadb(&bc) {
        let s: Option<String> = bc
            .query_first("SELECT @@gtid_binlog_state")
            .await
            .map_err(|e| step(name, "read GTID state", e))?;
        crate::probe::normalize_gtids(&s.unwrap_or_default())
    } else {
        dialect::binlog_pos(&mut bc, name).await?
    };
    let theirs = dialect::gtid_state(&mut pc, &p.name).await?;
    if !gtid::covers_exact(&theirs, &own) {
        return Err(FailoverError::Refused(format!(
            "'{name}' has transactions the primary '{}' does not (its binlog: {own}; primary: {theirs}); it diverged: rebuild it from a backup or clone of the primary",
            p.name
        )));
    }
    dialect::repoint(
        f,
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

/// What the leader remembers about fenced servers between upkeep rounds.
#[derive(Default)]
pub struct FencedWatch {
    /// Seen writable again, until seen read-only.
    writable: BTreeMap<String, Refence>,
    /// Per server: when its divergence was last checked, and the count
    /// last reported.
    diverged: BTreeMap<String, (Instant, u64)>,
}

/// A fenced server seen writable again.
#[derive(Default)]
struct Refence {
    /// When it was last tried, and whether that worked (said once per
    /// change).
    last: Option<(Instant, bool)>,
    /// Failed tries in a row.
    failures: u32,
}

impl Refence {
    /// Tried again 3 s after a success if probes still show it writable
    /// (they may lag a few rounds; or someone set read_only=0 again), and
    /// after 1, 2, 4 ... 30 s while tries fail: a try costs the leader's
    /// upkeep a connect and two lock waits, and failure detection runs
    /// after it. Test-only `refence-once`: one try per return, as concord
    /// did before.
    fn due(&self) -> bool {
        let Some((at, ok)) = self.last else {
            return true;
        };
        if concord_config::testhooks::on("refence-once") {
            return false;
        }
        let after = if ok {
            REFENCE_AFTER
        } else {
            Duration::from_secs(1 << self.failures.saturating_sub(1).min(5)).min(REFENCE_MAX)
        };
        at.elapsed() >= after
    }
}

/// See [`Refence::due`].
const REFENCE_AFTER: Duration = Duration::from_secs(3);
const REFENCE_MAX: Duration = Duration::from_secs(30);

/// Leader upkeep: a fenced server that comes back writable is made
/// read-only again (it is never routed to either way), and tried again
/// until that works: a try can fail with the leadership lost for a
/// moment, the monitor account unable to log in, a lock; one that is
/// reachable again is compared with the primary every few seconds, and
/// what it holds that the primary lacks is reported whenever that grows
/// (the exact loss of its promotion, and any statement that was in flight
/// to it and committed late).
pub async fn keep_fenced_read_only(f: &Fleet<'_>, watch: &mut FencedWatch) {
    let applied = f.consensus.applied().borrow().clone();
    let fenced = |n: &String| {
        applied
            .topology
            .backends
            .get(n)
            .is_some_and(|b| b.state == BackendState::Fenced)
    };
    watch.writable.retain(|n, _| fenced(n));
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
            let w = watch.writable.entry(b.name.clone()).or_default();
            if w.due() {
                let fenced = dialect::fence_server(f, &b.name, &b.addr).await;
                let said = w.last.map(|(_, ok)| ok);
                w.last = Some((Instant::now(), fenced.done));
                w.failures = if fenced.done { 0 } else { w.failures + 1 };
                if said != Some(fenced.done) {
                    let again = if fenced.done {
                        ""
                    } else {
                        "; tried again, less often while it fails"
                    };
                    let msg = format!(
                        "fenced '{}' came back writable: {}{again}",
                        b.name, fenced.msg
                    );
                    note(f, msg).await;
                }
            }
        } else if h.reachable {
            // Read-only again. (Unreachable, it is remembered: the fence
            // kills the probes' connections too.)
            watch.writable.remove(&b.name);
        }
        let due = watch
            .diverged
            .get(&b.name)
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(3));
        if !h.reachable || !due {
            continue;
        }
        let Some(p) = applied.topology.primary_backend() else {
            continue;
        };
        let reported = watch.diverged.get(&b.name).map_or(0, |(_, n)| *n);
        let now = match divergence(f, &b.name, &b.addr, &p.name, &p.addr).await {
            Some(Some((n, report))) if n > reported => {
                tracing::error!("{report}");
                note(f, report).await;
                n
            }
            Some(Some((n, _))) => n.max(reported),
            Some(None) | None => reported,
        };
        watch.diverged.insert(b.name.clone(), (Instant::now(), now));
    }
}

/// `Some(None)`: the fenced server holds nothing the primary lacks;
/// `Some(Some((n, report)))`: what it holds; `None`: could not tell.
async fn divergence(
    f: &Fleet<'_>,
    name: &str,
    addr: &str,
    primary: &str,
    paddr: &str,
) -> Option<Option<(u64, String)>> {
    let mut bc = connect(f, name, addr).await.ok()?;
    let mut pc = connect(f, primary, paddr).await.ok()?;
    let own: Option<String> = if dialect::is_mariadb(&bc) {
        bc.query_first("SELECT @@gtid_binlog_state").await.ok()?
    } else {
        bc.query_first("SELECT @@gtid_executed").await.ok()?
    };
    let theirs = dialect::gtid_state(&mut pc, primary).await.ok()?;
    let own = crate::probe::normalize_gtids(&own.unwrap_or_default());
    let _ = bc.disconnect().await;
    let _ = pc.disconnect().await;
    Some(gtid::missing_exact(&theirs, &own).map(|(set, n)| {
        metrics::gauge!("concord_fenced_divergent_transactions", "backend" => name.to_string())
            .set(n as f64);
        (
            n,
            format!(
                "fenced '{name}' is reachable again and holds {n} transactions the primary '{primary}' does not: {set} (acknowledged writes among them were lost at its promotion; REJOIN refuses it until it is rebuilt)"
            ),
        )
    }))
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

    /// A failed re-fence is tried again after 1, 2, 4 ... 30 s; a
    /// successful one 3 s later if probes still show the server writable.
    #[test]
    fn a_failing_refence_backs_off() {
        let ago = |ms| Instant::now().checked_sub(Duration::from_millis(ms));
        let r = |ms, ok, failures| Refence {
            last: ago(ms).map(|at| (at, ok)),
            failures,
        };
        assert!(Refence::default().due());
        assert!(r(1_100, false, 1).due());
        assert!(!r(1_100, false, 2).due());
        assert!(r(2_100, false, 2).due());
        assert!(!r(20_000, false, 9).due());
        assert!(r(30_100, false, 9).due());
        assert!(!r(2_900, true, 0).due());
        assert!(r(3_100, true, 0).due());
    }
    use concord_consensus::SeedBackend;

    /// A resumed workflow fences and catches up to the primary the
    /// interrupted one took away: after a switchover's Freeze (never
    /// fenced), and with an older fenced backend ("a", from an earlier
    /// failover, never rejoined) sorting first. Its Promote fences a
    /// frozen one. Test-only `resume-guesses-deposed`: the first fenced
    /// backend is taken.
    #[test]
    fn a_resumed_workflow_knows_which_primary_it_deposed() {
        let cmd = |op| Command::new(op, 1, "");
        let mut t = Topology::default();
        let seed = |n: &str| SeedBackend {
            name: n.into(),
            addr: format!("{n}:3306"),
            weight: 100,
        };
        let backends = vec![seed("a"), seed("b"), seed("c"), seed("d")];
        assert!(t.apply(1, &cmd(Op::Seed { backends })).ok);
        let discover = Op::Discover {
            primary: "a".into(),
        };
        assert!(t.apply(2, &cmd(discover)).ok);
        // An earlier failover: "a" fenced, "b" promoted.
        assert!(t.apply(3, &cmd(Op::Fence { expected_epoch: 1 })).ok);
        let promote = |name: &str, epoch| Op::Promote {
            epoch,
            primary: name.into(),
            from_pos: String::new(),
            fence_deposed: true,
            also_fenced: Vec::new(),
        };
        assert!(t.apply(4, &cmd(promote("b", 2))).ok);
        assert_eq!(t.deposed, None);
        // A switchover away from "b" is interrupted after its Freeze.
        assert!(t.apply(5, &cmd(Op::Freeze { expected_epoch: 2 })).ok);
        assert_eq!(t.backends["b"].state, BackendState::Active);
        let old = pick_deposed(&t, true).map(|o| o.0);
        let guessed = pick_deposed(&t, false).map(|o| o.0);
        assert_eq!(old.as_deref(), Some("b"), "resumed after the Freeze");
        assert_eq!(guessed.as_deref(), Some("a"), "the first fenced backend");
        // The resumed workflow promotes "c": "b" is fenced with it.
        assert!(t.apply(6, &cmd(promote("c", 3))).ok);
        assert_eq!(t.backends["b"].state, BackendState::Fenced);
        assert_eq!(t.deposed, None);
    }
}
