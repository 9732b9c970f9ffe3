//! Which replica to promote: the one whose received position includes
//! every other one's (never one that is behind), then the highest weight.

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
            active: b.state == BackendState::Active,
        });
    }
    out
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
    // Among equals, an active one, then the highest weight.
    covering
        .into_iter()
        .max_by_key(|&i| (cands[i].active, cands[i].weight))
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
