//! Which replica to promote: the one whose received position includes
//! every other one's (never one that is behind), then the highest weight.
//! The member an interrupted earlier attempt already started to promote
//! (recorded by `Op::Promoting`, replicating from nobody now) is adopted
//! when it has everything the replicas have: promoting another would drop
//! what only it received.

use super::{FailoverError, Fleet, R};
use crate::gtid;
use crate::probe::Prober;
use concord_consensus::{BackendState, Topology};

/// Where a server's received and applied positions stand.
pub(super) struct Candidate {
    pub name: String,
    pub addr: String,
    pub weight: u32,
    pub io_pos: String,
    pub active: bool,
    /// Its replication applier runs, neither waits for a backup's lock
    /// (see [`mark_held`]) nor holds events back (`delay`): its relay log
    /// is applied now.
    pub free: bool,
    /// `MASTER_DELAY` in seconds: a delayed replica kept for recovery.
    pub delay: u64,
    /// Its applier (SQL thread) runs.
    pub applying: bool,
    /// Its receiver (IO thread) runs.
    pub receiving: bool,
    /// Replicating from nobody, and the server the topology records an
    /// interrupted earlier attempt promoting. `io_pos` is what it executed.
    pub promoted: bool,
}

/// One probe of a member, at its connect address, as the monitor account.
pub(super) async fn probe(f: &Fleet<'_>, name: &str, addr: &str) -> crate::probe::Probe {
    let addr = f.cfg.connect_addr(name, addr).to_string();
    Prober::new(
        &addr,
        &f.cfg.monitor.user,
        &f.cfg.monitor.password,
        f.cfg.monitor.timeout.get(),
    )
    .probe()
    .await
}

pub(super) async fn candidates(f: &Fleet<'_>, topo: &Topology, exclude: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for b in topo.backends.values() {
        // A draining replica counts: it may be the one that acknowledged
        // the last semi-sync commit.
        if b.name == exclude || !matches!(b.state, BackendState::Active | BackendState::Draining) {
            continue;
        }
        let probe = probe(f, &b.name, &b.addr).await;
        if !probe.reachable {
            continue;
        }
        let delay = probe.replica.as_ref().map_or(0, |r| r.sql_delay);
        let applying = probe.replica.as_ref().is_some_and(|r| r.sql_running);
        let receiving = probe.replica.as_ref().is_some_and(|r| r.io_running);
        let (io_pos, promoted) = match probe.replica.as_ref() {
            Some(r) if r.gtid_io_pos.is_empty() => (probe.gtid_executed.clone(), false),
            Some(r) => (r.gtid_io_pos.clone(), false),
            // Writable or not (the earlier owner may have stopped before
            // read_only=0, or a self-fence event made it read-only since).
            // Test-only `resume-ignores-promoted`: as before adoption
            // existed, no candidate (and fenced).
            None if topo.promoting.as_deref() == Some(b.name.as_str())
                && !concord_config::testhooks::on("resume-ignores-promoted") =>
            {
                (probe.gtid_executed.clone(), true)
            }
            None => continue,
        };
        out.push(Candidate {
            name: b.name.clone(),
            addr: b.addr.clone(),
            weight: b.weight,
            free: delay == 0 && applying,
            delay,
            applying,
            receiving,
            io_pos,
            active: b.state == BackendState::Active,
            promoted,
        });
    }
    out
}

/// Marks the candidates whose replication applier waits for a backup's
/// lock (`dialect::applier_held_by_backup`; seen with `PROCESS`): among
/// equals another is promoted, instead of waiting
/// `failover.catchup_timeout` for that relay log and failing. Asked only
/// when there is a choice.
pub(super) async fn mark_held(f: &Fleet<'_>, cands: &mut [Candidate]) {
    if cands.len() < 2 {
        return;
    }
    for c in cands.iter_mut() {
        if let Ok(mut conn) = super::connect(f, &c.name, &c.addr).await {
            c.free &= super::dialect::applier_held_by_backup(&mut conn)
                .await
                .is_none();
            let _ = conn.disconnect().await;
        }
    }
}

/// The candidate to promote and the candidates the promotion keeps: every
/// replica, and the chosen one. The promoted member is adopted only when
/// it has everything every other candidate has (preferred among equals:
/// no promotion is undone); otherwise the choice is among the replicas,
/// and it is fenced with the promotion (behind or diverged, it is nobody's
/// replica to repoint).
pub(super) fn choose(mut cands: Vec<Candidate>) -> R<(Candidate, Vec<Candidate>)> {
    let best = match most_advanced(&cands) {
        Ok(i) => i,
        Err(e) if cands.iter().any(|c| c.promoted) => {
            cands.retain(|c| !c.promoted);
            if cands.is_empty() {
                return Err(e);
            }
            most_advanced(&cands)?
        }
        Err(e) => return Err(e),
    };
    let chosen = cands.swap_remove(best);
    cands.retain(|c| !c.promoted);
    Ok((chosen, cands))
}

/// The candidate whose received position includes every other one's.
pub(super) fn most_advanced(cands: &[Candidate]) -> R<usize> {
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
    // Among equals, one already promoted, an active one, one whose
    // applier can apply now (no backup's lock, no MASTER_DELAY; test-only
    // `candidate-ignores-applier`: not looked at), then the highest weight.
    let free =
        |i: usize| cands[i].free || concord_config::testhooks::on("candidate-ignores-applier");
    covering
        .into_iter()
        .max_by_key(|&i| (cands[i].promoted, cands[i].active, free(i), cands[i].weight))
        .ok_or_else(|| FailoverError::Refused("no candidate".into()))
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
            active: true,
            free: true,
            delay: 0,
            applying: true,
            receiving: true,
            promoted: false,
        }
    }

    fn promoted(name: &str, io_pos: &str) -> Candidate {
        Candidate {
            promoted: true,
            ..cand(name, 1, io_pos)
        }
    }

    fn names(r: R<(Candidate, Vec<Candidate>)>) -> (String, Vec<String>) {
        match r {
            Ok((c, kept)) => (c.name, kept.into_iter().map(|k| k.name).collect()),
            Err(e) => (e.to_string(), Vec::new()),
        }
    }

    #[test]
    fn adopts_the_member_being_promoted_only_when_it_has_everything_the_replicas_have() {
        // Ahead (its own writes after the interrupted promotion): adopted
        // whatever the weights say; the replica is kept to be repointed.
        let c = vec![cand("db2", 500, "0-1-10"), promoted("db3", "0-3-14")];
        assert_eq!(names(choose(c)), ("db3".into(), vec!["db2".into()]));
        // Equal: the promoted one, no promotion undone.
        let c = vec![cand("db2", 500, "0-1-12"), promoted("db3", "0-1-12")];
        assert_eq!(names(choose(c)), ("db3".into(), vec!["db2".into()]));
        // The only member left: adopted (a single-replica fleet resumed).
        let c = vec![promoted("db2", "0-1-12")];
        assert_eq!(names(choose(c)), ("db2".into(), vec![]));
        // Behind a replica: the replica, and the promoted one is left out
        // (fenced, not repointed).
        let c = vec![cand("db2", 1, "0-1-12"), promoted("db3", "0-1-9")];
        assert_eq!(names(choose(c)), ("db2".into(), vec![]));
        // Diverged (a domain the replica lacks, behind in another): not
        // adopted, and its divergence does not block the promotion.
        let c = vec![
            cand("db2", 1, "0-1-12"),
            cand("db4", 1, "0-1-11"),
            promoted("db3", "0-1-9,7-3-2"),
        ];
        assert_eq!(names(choose(c)), ("db2".into(), vec!["db4".into()]));
        // Replicas diverged among themselves: still refused.
        let c = vec![cand("db2", 1, "0-1-12,1-2-3"), cand("db3", 1, "0-1-13")];
        assert!(names(choose(c)).0.contains("refusing"));
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
        // Equal positions, the heavier one's applier waiting for a backup's
        // lock: the other.
        let c = [
            cand("db2", 1, "0-1-12"),
            Candidate {
                free: false,
                ..cand("db3", 9, "0-1-12")
            },
        ];
        assert_eq!(
            most_advanced(&c).ok().map(|i| c[i].name.as_str()),
            Some("db2")
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
