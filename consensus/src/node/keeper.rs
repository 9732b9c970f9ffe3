//! The lease keeper: confirms, a quarter lease at a time, that this
//! node's applied state is current (leader: with a quorum; follower:
//! through a read index from the leader), and stops everything for good if
//! the Raft core stops on a storage error.

use super::*;

/// Refreshes the routing lease every quarter lease: the leader by
/// confirming leadership with a quorum, followers by a read-index round
/// trip to the leader and waiting until they applied that far.
pub(super) async fn keep_lease(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    loop {
        let period = inner.lease.timeout() / 4;
        let t0 = Instant::now();
        let confirmed_at = crate::lease::boot_nanos();
        let ok = match confirm(&inner).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(node = inner.id, "lease not confirmed: {e}");
                false
            }
        };
        if ok && inner.stopped.get().is_none() {
            // The fleet's lease length, as applied up to the confirmed
            // index (the leader waits for the longest one after a fence).
            let fleet_ms = inner.applied.borrow().topology.lease_ms;
            if fleet_ms > 0 {
                inner.lease.set_timeout(Duration::from_millis(fleet_ms));
            }
            // The epoch this node has applied now: anything newer was
            // committed after the confirmation started (see lease.rs).
            inner.lease.extend_from(confirmed_at, inner.gate.epoch());
        }
        // Refresh sooner when leadership changes.
        let _ = tokio::time::timeout(period, metrics.changed()).await;
        let spent = t0.elapsed();
        if spent < period / 2 && ok {
            tokio::time::sleep(period / 2 - spent).await;
        }
    }
}

/// openraft stops its core for good on a storage error (disk full, data
/// dir unwritable): nothing more can be made durable, so this node drops
/// its lease at once (no write waits out `lease_timeout` on a node that
/// can never confirm again) and says why on `/readyz` and to clients.
/// What is on disk stays as last fsynced; a restart after fixing the disk
/// rejoins from it.
pub(super) async fn watch_core(inner: Arc<Inner>) {
    let mut m = inner.raft.metrics();
    let why = loop {
        let fatal = m
            .borrow()
            .running_state
            .as_ref()
            .err()
            .map(|f| f.to_string());
        if let Some(f) = fatal {
            break f;
        }
        if m.changed().await.is_err() {
            break "the Raft core exited".to_string();
        }
    };
    let msg = format!(
        "Raft stopped on this node ({why}); it routes no writes until restarted: check that node.data_dir is writable and has free space"
    );
    tracing::error!(node = inner.id, "{msg}");
    inner.lease.revoke();
    let _ = inner.stopped.set(msg);
}

async fn confirm(inner: &Arc<Inner>) -> Result<(), ConsensusError> {
    let budget = inner.lease.timeout() / 2;
    let (leader, leader_addr) = {
        let m = inner.raft.metrics();
        let m = m.borrow();
        let addr = m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        });
        (m.current_leader, addr)
    };
    let Some(leader) = leader else {
        return Err(ConsensusError::NoLeader);
    };
    if leader == inner.id {
        return match tokio::time::timeout(budget, inner.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ConsensusError::Raft(e.to_string())),
            Err(_) => Err(ConsensusError::Timeout),
        };
    }
    let addr = leader_addr.ok_or(ConsensusError::NoLeader)?;
    let idx = match inner
        .call(leader, &addr, &Request::ReadIndex, budget)
        .await?
    {
        Reply::ReadIndex(Ok(i)) => i,
        Reply::ReadIndex(Err(e)) => return Err(ConsensusError::Forward(e)),
        _ => return Err(ConsensusError::Forward("unexpected reply".into())),
    };
    inner
        .raft
        .wait(Some(budget))
        .applied_index_at_least(Some(idx), "lease read index")
        .await
        .map_err(|e| ConsensusError::Raft(e.to_string()))?;
    Ok(())
}
