//! Background work of a node: reporting its view of the backends to the
//! leader, and, on the leader only, seeding the topology, discovering the
//! first primary, detecting a dead primary and running failovers,
//! switchovers and rejoins (one at a time).

use crate::shared::Shared;
use concord_consensus::Workflow;
use concord_health::failover::{self, Detector, Fleet, Verdict};
use std::sync::Arc;
use std::time::Duration;

/// Lets the admin port of any node run a workflow on the leader.
pub fn register_workflows(shared: &Arc<Shared>) {
    let rt = tokio::runtime::Handle::current();
    let s = shared.clone();
    shared
        .consensus
        .set_workflow_handler(Arc::new(move |w: Workflow| {
            let s = s.clone();
            let rt = rt.clone();
            Box::pin(async move {
                match rt.spawn(async move { run(&s, w).await }).await {
                    Ok(r) => r,
                    Err(e) => Err(format!("workflow task failed: {e}")),
                }
            })
        }));
}

/// Runs one workflow here (this node is the leader).
async fn run(shared: &Arc<Shared>, w: Workflow) -> Result<String, String> {
    // Promotions run one at a time; a drain only watches and must not
    // hold up a failover.
    let _one_at_a_time = match w {
        Workflow::Drain { .. } => None,
        _ => Some(shared.workflow_lock.lock().await),
    };
    let fleet = Fleet::new(&shared.consensus, shared.config.load_full(), &shared.health);
    let started = std::time::Instant::now();
    let (kind, r) = match w {
        Workflow::Switchover { to } => ("switchover", failover::switchover(&fleet, &to).await),
        Workflow::Failover => {
            let why = format!(
                "FAILOVER requested on the admin port of node {}",
                shared.node_id
            );
            ("forced", failover::failover(&fleet, why).await)
        }
        Workflow::Rejoin { name } => ("rejoin", failover::rejoin(&fleet, &name).await),
        Workflow::Drain { name, timeout_ms } => {
            return drain_fleet(shared, &name, Duration::from_millis(timeout_ms)).await
        }
    };
    crate::metrics::workflow(kind, r.is_ok(), started.elapsed().as_secs_f64());
    r.map_err(|e| e.to_string())
}

/// The leader's side of `DRAIN BACKEND`: every node stops using a
/// draining backend on its own (its pool closes idle connections and lets
/// each session's go at its next transaction boundary); done when every
/// member has reported, after the drain began, that it holds none.
async fn drain_fleet(
    shared: &Arc<Shared>,
    name: &str,
    timeout: Duration,
) -> Result<String, String> {
    let started = std::time::Instant::now();
    loop {
        let Some(pool) = shared.routing.load().pool(name).cloned() else {
            return Err(format!("unknown backend '{name}'"));
        };
        let interval = shared.config.load().monitor.interval.get();
        // Reports sent at least one interval after the start saw the
        // draining state.
        let fresh = shared
            .consensus
            .reports(started.elapsed().saturating_sub(interval));
        let members = shared.consensus.applied().borrow().members.clone();
        let mut holding = Vec::new();
        for id in members.keys() {
            let n = if *id == shared.node_id {
                Some(u64::from(pool.open_count()))
            } else {
                fresh
                    .get(id)
                    .map(|r| r["conns"][name].as_u64().unwrap_or(0))
            };
            match n {
                Some(0) => {}
                Some(n) => holding.push(format!("node {id}: {n} connections in use")),
                None => holding.push(format!("node {id}: no report yet")),
            }
        }
        if holding.is_empty() {
            return Ok(format!(
                "backend '{name}' drained on all {} nodes",
                members.len()
            ));
        }
        if started.elapsed() >= timeout {
            return Err(format!(
                "drain of '{name}' timed out after {timeout:?} (sessions inside transactions hold it): {}; it stays draining",
                holding.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every probe interval: send this node's view to the leader, with its
/// connection count per backend (for fleet-wide drains).
pub async fn report_loop(shared: Arc<Shared>) {
    loop {
        let interval = shared.config.load().monitor.interval.get();
        tokio::time::sleep(interval).await;
        let applied = shared.consensus.applied().borrow().clone();
        let mut v = failover::report(shared.node_id, &applied, &shared.health);
        let conns: serde_json::Map<String, serde_json::Value> = shared
            .routing
            .load()
            .pools
            .iter()
            .map(|(n, p)| (n.to_string(), p.open_count().into()))
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("conns".into(), conns.into());
        }
        if let Err(e) = shared.consensus.report(v).await {
            tracing::debug!("report to the leader failed: {e}");
        }
    }
}

/// Leader-only duties, every probe interval.
pub async fn leader_duties(shared: Arc<Shared>) {
    let mut bootstrapped = false;
    let mut detector = Detector::default();
    let mut fenced = failover::FencedWatch::default();
    let mut last_verdict = Verdict::Healthy;
    let mut cooldown_noted = false;
    let mut primary_wrong: Option<(String, std::time::Instant, bool)> = None;
    loop {
        let interval = shared.config.load().monitor.interval.get();
        tokio::time::sleep(interval.min(Duration::from_millis(300))).await;
        if !shared.consensus.is_leader() {
            bootstrapped = false;
            detector = Detector::default();
            continue;
        }
        let cfg = shared.config.load_full();
        if !bootstrapped {
            bootstrapped = concord_health::discovery::bootstrap(&shared.consensus, &cfg).await;
            continue;
        }
        let fleet = Fleet::new(&shared.consensus, cfg.clone(), &shared.health);
        let topo = shared.consensus.applied().borrow().topology.clone();
        // The fleet's lease length follows the leader's config: every node
        // uses it, so the wait after a fence covers every node's lease.
        let lease_ms =
            u64::try_from(cfg.cluster.lease_timeout.get().as_millis()).unwrap_or(u64::MAX);
        if topo.lease_ms != lease_ms {
            let cmd = concord_consensus::Command::new(
                concord_consensus::Op::SetLease { ms: lease_ms },
                shared.node_id,
                format!(
                    "cluster.lease_timeout of the leader (node {})",
                    shared.node_id
                ),
            );
            if let Err(e) = shared.consensus.propose(cmd).await {
                tracing::warn!("could not set the fleet's lease length: {e}");
            }
            continue;
        }
        // A routed primary that is read-only or replicating: said once in
        // the event log (and by `concord_primary_misconfigured`).
        let wrong = topo.primary.as_ref().and_then(|p| {
            let h = shared.health.get(p)?;
            let why = match (h.reachable, h.read_only, h.source.as_deref()) {
                (true, _, Some(src)) => format!("replicates from {src}"),
                (true, true, None) => "is read-only".to_string(),
                _ => return None,
            };
            Some(format!("the primary '{p}' {why}: writes routed to it fail or reach two servers; check who changed it"))
        });
        // Held for three probe intervals: a promotion's first probes may
        // still show the server as it was.
        match (&wrong, &mut primary_wrong) {
            (None, p) => *p = None,
            (Some(w), p @ None) => *p = Some((w.clone(), std::time::Instant::now(), false)),
            (Some(_), Some((w, since, said))) => {
                if !*said && since.elapsed() >= interval * 3 {
                    *said = true;
                    tracing::error!("{w}");
                    note(&shared, w.clone()).await;
                }
            }
        }
        failover::keep_fenced_read_only(&fleet, &mut fenced).await;
        if topo.primary.is_none() && topo.epoch > 0 {
            // A failover whose leader died (or whose promotion failed).
            if let Ok(_guard) = shared.workflow_lock.try_lock() {
                match failover::resume(&fleet).await {
                    Ok(m) => tracing::warn!("failover finished: {m}"),
                    Err(e) => {
                        tracing::error!("failover could not promote a replica: {e}");
                        note(&shared, format!("failover attempt failed: {e}")).await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            continue;
        }
        let verdict = detector.evaluate(&fleet);
        if verdict != last_verdict {
            match &verdict {
                Verdict::Healthy => tracing::info!("primary healthy again"),
                Verdict::Suspect(e) => tracing::warn!("primary suspect: {e}"),
                Verdict::Dead(e) => tracing::error!("primary dead: {e}"),
            }
            last_verdict = verdict.clone();
            cooldown_noted = false;
        }
        let Verdict::Dead(evidence) = verdict else {
            continue;
        };
        if !cfg.failover.automatic {
            continue;
        }
        if let Some(since) = failover::since_last_fence(&topo) {
            if since < cfg.failover.cooldown.get() {
                // Once per verdict in the replicated event log, so "why did
                // it not fail over" has an answer in SHOW EVENTS.
                if !cooldown_noted {
                    cooldown_noted = true;
                    note(
                        &shared,
                        format!(
                            "primary dead ({evidence}) but the last failover was {:.1}s ago: not failing over within failover.cooldown ({:?})",
                            since.as_secs_f64(),
                            cfg.failover.cooldown.get()
                        ),
                    )
                    .await;
                }
                continue;
            }
        }
        let Ok(_guard) = shared.workflow_lock.try_lock() else {
            continue;
        };
        let started = std::time::Instant::now();
        let r = failover::failover(&fleet, format!("automatic failover: {evidence}")).await;
        crate::metrics::workflow("automatic", r.is_ok(), started.elapsed().as_secs_f64());
        match r {
            Ok(m) => tracing::warn!("{m}"),
            Err(e) => tracing::error!("failover failed: {e}"),
        }
        detector = Detector::default();
    }
}

async fn note(shared: &Shared, what: String) {
    let cmd = concord_consensus::Command::new(concord_consensus::Op::Note, shared.node_id, what);
    let _ = shared.consensus.propose(cmd).await;
}
