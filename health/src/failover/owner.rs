//! Who runs the promotion workflows, fenced through Raft.
//!
//! A workflow starts by committing a claim (its node and Raft term) and
//! checks, before every statement that changes a server, that it is still
//! the leader (a read index confirmed by a quorum) and that the applied
//! topology still names its claim. A new leader takes over by committing
//! its own claim first: from then on the old leader's workflow stops at
//! its next step, instead of running STOP SLAVE, `read_only=0` and
//! repoints against the new one's.
//!
//! A step already sent when the claim changes hands is not recalled; the
//! new owner waits a full lease (plus drift) after its claim before its
//! first side effect (see `resume`), longer than a check stays good.

use super::{commit, FailoverError, Fleet, R};
use concord_consensus::{Op, Owner};
use std::time::Duration;

/// Commits this node's claim on the workflows.
pub(super) async fn claim(f: &Fleet<'_>, kind: &str) -> R<()> {
    let me = Owner {
        node: f.consensus.id(),
        term: f.consensus.term(),
        kind: kind.to_string(),
    };
    commit(
        f,
        Op::Claim {
            node: me.node,
            term: me.term,
            kind: me.kind.clone(),
        },
        String::new(),
    )
    .await?;
    let _ = f.claim.set(me);
    Ok(())
}

/// Still the leader, and still the owner of the workflow this fleet
/// handle claimed (just the leader, for duties outside a workflow).
pub(super) async fn owned(f: &Fleet<'_>) -> R<()> {
    if concord_config::testhooks::on("no-workflow-owner") {
        return Ok(());
    }
    let budget = (f.cfg.cluster.lease_timeout.get() / 2).max(Duration::from_millis(100));
    f.consensus.confirm_leader(budget).await.map_err(|e| {
        FailoverError::Refused(format!(
            "this node is no longer the leader ({e}); the workflow stops here: run it again once the fleet has a leader"
        ))
    })?;
    let (now, epoch, primary, promoting) = {
        let rx = f.consensus.applied();
        let applied = rx.borrow();
        let t = &applied.topology;
        (
            t.owner.clone(),
            t.epoch,
            t.primary.clone(),
            t.promoting.clone(),
        )
    };
    if let Some((e, p)) = f.outlives.get() {
        if moved_on((*e, p), epoch, primary.as_deref(), promoting.as_deref()) {
            return Err(FailoverError::Refused(format!(
                "the topology moved on (epoch {epoch}, primary {}) since the promotion of '{p}' under epoch {e}; this step stops here",
                primary.as_deref().unwrap_or("none")
            )));
        }
    }
    let Some(mine) = f.claim.get() else {
        return Ok(());
    };
    if now.as_ref() != Some(mine) {
        return Err(FailoverError::Refused(format!(
            "the workflow was taken over ({}); this one stops here",
            now.map(|o| format!("node {} runs {} in term {}", o.node, o.kind, o.term))
                .unwrap_or_else(|| "no owner".into())
        )));
    }
    Ok(())
}

/// Whether a step that outlived its workflow (the promotion of `target`
/// under `epoch`) must stop: another epoch began (a fence, a freeze), the
/// promotion was undone or another server promoted, or, before any
/// Promote, a resume by this same claim recorded another server as the
/// one being promoted.
fn moved_on(
    (epoch, target): (u64, &str),
    now_epoch: u64,
    primary: Option<&str>,
    promoting: Option<&str>,
) -> bool {
    now_epoch != epoch
        || match primary {
            Some(p) => p != target,
            None => promoting.is_some_and(|q| q != target),
        }
}

#[cfg(test)]
mod tests {
    use super::moved_on;

    #[test]
    fn a_step_that_outlived_its_promotion_stops_once_the_fleet_moved_on() {
        let was = (5, "db2");
        // Still the promotion it was part of: before the Promote (recorded
        // or not, for a node of an older build), and after it.
        assert!(!moved_on(was, 5, None, None));
        assert!(!moved_on(was, 5, None, Some("db2")));
        assert!(!moved_on(was, 5, Some("db2"), None));
        // A later fence or switchover's freeze, whatever it promotes.
        assert!(moved_on(was, 6, None, None));
        assert!(moved_on(was, 6, Some("db2"), None));
        // Undone (the old primary back), or a resume promoting another.
        assert!(moved_on(was, 5, Some("db1"), None));
        assert!(moved_on(was, 5, None, Some("db3")));
    }
}
