//! The routing snapshot: which backend takes writes, under which epoch.
//! Rebuilt and swapped whole whenever the topology changes; sessions load
//! it once per statement.

use crate::backend::BackendPool;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Routing {
    /// Fencing epoch the primary was chosen under.
    pub epoch: u64,
    pub primary: Option<Arc<BackendPool>>,
    /// Every known backend's pool, by name.
    pub pools: BTreeMap<Arc<str>, Arc<BackendPool>>,
    /// Why there is no primary, for the error clients get.
    pub no_primary_reason: String,
}

impl Routing {
    pub fn pool(&self, name: &str) -> Option<&Arc<BackendPool>> {
        self.pools.get(name)
    }
}
