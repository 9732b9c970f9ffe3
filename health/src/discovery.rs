//! First bootstrap: seed the replicated topology from the config and find
//! the primary: the single backend that is writable and not replicating.
//! Two writable candidates is a split brain concord refuses to route into.

use crate::probe::{Probe, Prober};
use concord_config::{Config, Role};
use concord_consensus::{Command, Consensus, Op, SeedBackend};
use std::time::Duration;

/// What probing all backends found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Primary(String),
    None(String),
    Conflict(Vec<String>),
}

/// Decides from probes. A `role = "primary"` hint in the config never
/// overrides what the servers say: two writable servers is a conflict.
pub fn decide(probes: &[(String, Option<Role>, Probe)]) -> Verdict {
    let writable: Vec<&String> = probes
        .iter()
        .filter(|(_, _, p)| p.looks_primary())
        .map(|(n, _, _)| n)
        .collect();
    match writable.as_slice() {
        [one] => Verdict::Primary((*one).clone()),
        [] => {
            let unreachable: Vec<_> = probes
                .iter()
                .filter(|(_, _, p)| !p.reachable)
                .map(|(n, _, p)| format!("{n}: {}", p.error.clone().unwrap_or_default()))
                .collect();
            Verdict::None(if unreachable.is_empty() {
                "no backend is writable and free of replication".into()
            } else {
                format!(
                    "no writable backend found; unreachable: {}",
                    unreachable.join(", ")
                )
            })
        }
        many => Verdict::Conflict(many.iter().map(|s| (*s).clone()).collect()),
    }
}

/// Leader duty at first bootstrap: seed once, then discover the primary.
/// Returns true once the topology has a primary epoch.
pub async fn bootstrap(consensus: &Consensus, cfg: &Config) -> bool {
    let applied = consensus.applied().borrow().clone();
    let topo = &applied.topology;
    if !topo.seeded {
        let backends = cfg
            .backends
            .iter()
            .map(|b| SeedBackend {
                name: b.name.clone(),
                addr: b.addr.clone(),
                weight: b.weight,
            })
            .collect();
        let cmd = Command::new(
            Op::Seed { backends },
            consensus.id(),
            "from this node's config",
        );
        if let Err(e) = consensus.propose(cmd).await {
            tracing::warn!("seeding the topology failed: {e}");
        }
        return false;
    }
    if topo.epoch > 0 {
        return true;
    }
    let mut probes = Vec::new();
    for b in topo.backends.values() {
        let hint = cfg
            .backends
            .iter()
            .find(|c| c.name == b.name)
            .and_then(|c| c.role);
        let mut p = Prober::new(
            &b.addr,
            &cfg.monitor.user,
            &cfg.monitor.password,
            cfg.monitor.timeout.get(),
        );
        probes.push((b.name.clone(), hint, p.probe().await));
    }
    let evidence: Vec<String> = probes
        .iter()
        .map(|(n, _, p)| {
            if p.reachable {
                format!(
                    "{n}: read_only={} replicating={}",
                    p.read_only as u8,
                    p.replica.is_some()
                )
            } else {
                format!("{n}: unreachable ({})", p.error.clone().unwrap_or_default())
            }
        })
        .collect();
    match decide(&probes) {
        Verdict::Primary(name) => {
            let cmd = Command::new(
                Op::Discover {
                    primary: name.clone(),
                },
                consensus.id(),
                evidence.join(", "),
            );
            match consensus.propose(cmd).await {
                Ok(r) if r.ok => {
                    tracing::info!(primary = %name, "discovered the primary: {}", evidence.join(", "));
                    true
                }
                Ok(r) => {
                    tracing::warn!("primary discovery refused: {}", r.message);
                    false
                }
                Err(e) => {
                    tracing::warn!("primary discovery not committed: {e}");
                    false
                }
            }
        }
        Verdict::Conflict(names) => {
            tracing::error!(
                "refusing to route writes: {} backends are writable and not replicating ({}); make all but one read-only",
                names.len(),
                names.join(", ")
            );
            let cmd = Command::new(
                Op::Note,
                consensus.id(),
                format!(
                    "primary discovery refused: several writable backends ({}); {}",
                    names.join(", "),
                    evidence.join(", ")
                ),
            );
            let _ = consensus.propose(cmd).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            false
        }
        Verdict::None(why) => {
            tracing::warn!("no primary yet: {why}");
            false
        }
    }
}
