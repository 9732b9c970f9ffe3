//! The failure verdict: is the primary dead, from every node's view?
//!
//! Altair's rule with more vantage points, and positive evidence only: the
//! primary is alive while a quorum of concord nodes reach it, or any
//! replica replicating from it is still receiving; it is dead only when a
//! quorum of nodes each failed `failure_threshold` consecutive probes, no
//! replica receives from it, and at least one replica some node reaches
//! positively says it is not receiving from it (a replica nobody can see
//! is no evidence: cutting concord off from the whole database tier must
//! not fence a healthy primary), for two evaluations in a row.
//!
//! A replica counts for the primary only if it replicates from it: one
//! whose source is another backend (a chained replica) says nothing
//! either way.

use super::Fleet;
use crate::monitor::Health;
use concord_consensus::{Applied, Topology};
use serde_json::{json, Value};

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
                    "replica": h.source.is_some(),
                    "source": h.source,
                    "gtid_io_pos": h.gtid_io_pos,
                }),
            )
        })
        .collect();
    json!({
        "node": node_id,
        "epoch": applied.topology.epoch,
        "primary": applied.topology.primary,
        "lease_ms": applied.topology.lease_ms,
        "backends": backends,
        "log_version": log_version(node_id),
    })
}

/// [`concord_consensus::LOG_VERSION`]; test-only `older-log-on-node-3`:
/// node 3 reports none, as a node of an older build does.
fn log_version(node_id: u64) -> Option<u64> {
    if node_id == 3 && concord_config::testhooks::on("older-log-on-node-3") {
        return None;
    }
    Some(concord_consensus::LOG_VERSION)
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

/// Whether a replica whose source is `source` replicates from `primary`:
/// its source is the primary's address, or no other backend's (a name the
/// replica resolves differently from concord still counts).
fn from_primary(topo: &Topology, primary: &str, source: Option<&str>) -> bool {
    let Some(source) = source else {
        return false;
    };
    if topo
        .backends
        .get(primary)
        .is_some_and(|p| same_addr(&p.addr, source))
    {
        return true;
    }
    !topo
        .backends
        .values()
        .any(|b| b.name != primary && same_addr(&b.addr, source))
}

fn same_addr(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim()
            .to_ascii_lowercase()
            .replace("localhost", "127.0.0.1")
    };
    norm(a) == norm(b)
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
        // Replicas of the primary as some node sees them: receiving, or
        // positively not (reachable, and its IO thread lost the primary).
        let (mut receiving, mut not_receiving) = (Vec::new(), Vec::new());
        for r in views.values() {
            let Some(m) = r["backends"].as_object() else {
                continue;
            };
            for (n, b) in m {
                if n.as_str() == primary
                    || b["reachable"].as_bool() != Some(true)
                    || !from_primary(topo, &primary, b["source"].as_str())
                {
                    continue;
                }
                if b["receiving"].as_bool() == Some(true) {
                    receiving.push(n.clone());
                } else if !not_receiving.contains(n) {
                    not_receiving.push(n.clone());
                }
            }
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let evidence = format!(
            "primary '{primary}': {}; replicas receiving from it: {}; replicas seen not receiving from it: {}",
            lines.join(", "),
            list(&receiving),
            list(&not_receiving)
        );
        if alive >= quorum {
            self.dead_evaluations = 0;
            return Verdict::Healthy;
        }
        let positive =
            !not_receiving.is_empty() || concord_config::testhooks::on("verdict-without-evidence");
        if dead >= quorum && receiving.is_empty() && positive {
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

#[cfg(test)]
mod tests {
    use super::*;
    use concord_consensus::{Backend, BackendState, Role};

    fn topo() -> Topology {
        let mut t = Topology::default();
        for (n, a) in [
            ("db1", "10.0.0.1:3306"),
            ("db2", "10.0.0.2:3306"),
            ("db3", "10.0.0.3:3306"),
        ] {
            t.backends.insert(
                n.into(),
                Backend {
                    name: n.into(),
                    addr: a.into(),
                    role: Role::Replica,
                    state: BackendState::Active,
                    weight: 1,
                },
            );
        }
        t.primary = Some("db1".into());
        t
    }

    #[test]
    fn only_replicas_of_the_primary_count() {
        let t = topo();
        assert!(from_primary(&t, "db1", Some("10.0.0.1:3306")));
        // A name concord does not know (the replica's own DNS name for
        // the primary) counts.
        assert!(from_primary(&t, "db1", Some("db1.internal:3306")));
        // Chained from another replica: says nothing about db1.
        assert!(!from_primary(&t, "db1", Some("10.0.0.2:3306")));
        assert!(!from_primary(&t, "db1", None));
    }
}
