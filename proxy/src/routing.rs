//! The routing snapshot: which backend takes writes, under which epoch,
//! the pools of every backend, and the topology and health it was built
//! from. Rebuilt when Raft applies an entry or a probe changes what this
//! node knows, and swapped whole (`ArcSwap`); sessions load it once per
//! statement, and SHOW BACKENDS, the API and the metrics show the same
//! snapshot, so what they say is what the router decides on.

use crate::backend::{BackendPool, PoolSettings};
use concord_config::Config;
use concord_consensus::{Applied, BackendState};
use concord_health::{BackendHealth, HealthView};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A replica reads may go to, with its last probed health.
pub struct Replica {
    pub pool: Arc<BackendPool>,
    pub weight: u32,
    pub health: BackendHealth,
}

pub struct Routing {
    /// Fencing epoch the primary was chosen under.
    pub epoch: u64,
    pub primary: Option<Arc<BackendPool>>,
    /// Every known backend's pool, by name.
    pub pools: BTreeMap<Arc<str>, Arc<BackendPool>>,
    /// Why there is no primary, for the error clients get.
    pub no_primary_reason: String,
    /// Raft log index this snapshot reflects.
    pub applied_index: u64,
    /// Active replicas (not draining, in maintenance or fenced).
    pub replicas: Vec<Replica>,
    /// The applied topology and the health view this was built from.
    pub applied: Arc<Applied>,
    pub health: Arc<HealthView>,
    /// The query rules of the same applied topology, compiled.
    pub rules: Arc<crate::rules::Rules>,
}

impl Routing {
    pub fn empty() -> Self {
        Routing {
            epoch: 0,
            primary: None,
            pools: BTreeMap::new(),
            no_primary_reason: "the fleet has not agreed on a topology yet".into(),
            applied_index: 0,
            replicas: Vec::new(),
            applied: Arc::new(Applied::default()),
            health: Arc::new(HealthView::default()),
            rules: Arc::default(),
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<BackendPool>> {
        self.pools.get(name)
    }
}

pub fn pool_settings(c: &Config) -> PoolSettings {
    PoolSettings {
        min_idle: c.pool.min_idle,
        max: c.pool.max_per_backend,
        connect_timeout: c.pool.connect_timeout.get(),
        max_idle_time: c.pool.max_idle_time.get(),
        max_lifetime: c.pool.max_lifetime.get(),
        acquire_timeout: c.pool.acquire_timeout.get(),
    }
}

/// Builds the snapshot for a newly applied topology, keeping the pools of
/// backends that did not move. Pools of backends that stopped being the
/// primary are closed (their connections could carry writes).
pub fn rebuild(
    old: &Routing,
    applied: &Arc<Applied>,
    health: &Arc<HealthView>,
    cfg: &Config,
) -> Routing {
    let topo = &applied.topology;
    let mut pools = BTreeMap::new();
    for b in topo.backends.values() {
        let addr = cfg.connect_addr(&b.name, &b.addr);
        let pool = match old.pools.get(b.name.as_str()) {
            Some(p) if p.addr == addr => p.clone(),
            _ => BackendPool::new(&b.name, addr, pool_settings(cfg)),
        };
        pools.insert(Arc::<str>::from(b.name.as_str()), pool);
    }
    let primary = topo.primary.as_deref().and_then(|p| pools.get(p).cloned());
    for b in topo.backends.values() {
        if let Some(p) = pools.get(b.name.as_str()) {
            let is_primary = topo.primary.as_deref() == Some(b.name.as_str());
            p.set_serving(is_primary || b.state == BackendState::Active);
        }
    }
    if let Some(old_primary) = &old.primary {
        let still = primary
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, old_primary))
            && topo.epoch == old.epoch;
        if !still {
            let closed = old_primary.close_all();
            tracing::warn!(
                backend = %old_primary.name,
                epoch = topo.epoch,
                "fenced: closed {closed} idle connections to the former primary; in-use ones close at their next statement"
            );
        }
    }
    for (name, p) in &old.pools {
        if !pools.contains_key(name) {
            p.close_all();
        }
    }
    let no_primary_reason = if !topo.seeded {
        "the fleet has not seeded its topology yet".to_string()
    } else if topo.epoch == 0 {
        "no primary discovered yet (SHOW EVENTS on the admin port says why)".to_string()
    } else if topo.primary.is_none() {
        format!(
            "the primary was fenced at epoch {}; a failover is in progress",
            topo.epoch
        )
    } else {
        String::new()
    };
    let fenced: Vec<&str> = topo
        .backends
        .values()
        .filter(|b| b.state == BackendState::Fenced)
        .map(|b| b.name.as_str())
        .collect();
    if !fenced.is_empty() {
        tracing::debug!(?fenced, "fenced backends are never routed to");
    }
    let replicas = topo
        .backends
        .values()
        .filter(|b| {
            topo.primary.as_deref() != Some(b.name.as_str())
                && b.state == BackendState::Active
                && b.weight > 0
        })
        .filter_map(|b| {
            Some(Replica {
                pool: pools.get(b.name.as_str())?.clone(),
                weight: b.weight,
                health: health.backends.get(&b.name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    Routing {
        epoch: topo.epoch,
        primary,
        pools,
        no_primary_reason,
        applied_index: applied.index,
        replicas,
        applied: applied.clone(),
        health: health.clone(),
        rules: crate::rules::Rules::rebuild(&old.rules, &topo.rules),
    }
}
