//! State shared by every session of a node: config, users, TLS, the routing
//! snapshot, the session registry. Everything a session reads per query is
//! behind an `ArcSwap` (one atomic load, no lock).

use crate::routing::Routing;
use crate::users::UserDb;
use arc_swap::ArcSwap;
use concord_config::Config;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

pub struct Shared {
    pub node_id: u64,
    pub config: ArcSwap<Config>,
    pub users: ArcSwap<UserDb>,
    pub tls: ArcSwap<Option<TlsAcceptor>>,
    pub routing: ArcSwap<Routing>,
    server_version: ArcSwap<Vec<u8>>,
    pub sessions: Sessions,
    /// Set when the node is shutting down: stop accepting.
    pub shutting_down: AtomicBool,
    pub started: Instant,
}

impl Shared {
    pub fn new(config: Config, users: UserDb, tls: Option<TlsAcceptor>, routing: Routing) -> Self {
        let version = match config.listener.server_version.as_str() {
            "auto" => b"8.0.36-concord".to_vec(),
            v => v.as_bytes().to_vec(),
        };
        Shared {
            node_id: config.node.id,
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            tls: ArcSwap::from_pointee(tls),
            routing: ArcSwap::from_pointee(routing),
            server_version: ArcSwap::from_pointee(version),
            sessions: Sessions::default(),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    pub fn server_version(&self) -> Arc<Vec<u8>> {
        self.server_version.load_full()
    }

    /// With `server_version = "auto"`, clients see the primary's version
    /// string, so drivers enable the same features they would directly.
    pub fn learn_server_version(&self, v: &[u8]) {
        if self.config.load().listener.server_version == "auto"
            && !v.is_empty()
            && self.server_version.load().as_slice() != v
        {
            self.server_version.store(Arc::new(v.to_vec()));
        }
    }
}

/// What `SHOW SESSIONS` shows about one client session; counters are
/// updated by the session itself with relaxed atomics.
pub struct SessionInfo {
    pub id: u64,
    pub user: Mutex<String>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// `program_name` (or `_client_name`) from the connect attributes.
    pub program: String,
    pub connected: Instant,
    pub queries: AtomicU64,
    pub in_txn: AtomicBool,
    /// Milliseconds since `connected` of the last command.
    pub last_active_ms: AtomicU64,
    pub db: Mutex<Option<String>>,
    pub backend: Mutex<Option<Arc<str>>>,
    /// Why the session must close (KILL SESSION, idle timeout, shutdown).
    pub kill_reason: Mutex<Option<String>>,
    pub kill: Notify,
}

impl SessionInfo {
    pub fn touch(&self) {
        let ms = u64::try_from(self.connected.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        self.connected.elapsed().saturating_sub(last)
    }

    pub fn kill(&self, reason: &str) {
        *self.kill_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        self.kill.notify_one();
    }
}

/// The registry of live sessions; touched on connect and disconnect only.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<u64, Arc<SessionInfo>>>,
    next_id: AtomicU64,
    pub count: AtomicU32,
    per_user: Mutex<HashMap<String, u32>>,
}

impl Sessions {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(&self, info: Arc<SessionInfo>) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.id, info);
    }

    pub fn remove(&self, id: u64) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionInfo>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Counts a login for `user`; false if the per-user cap is reached.
    pub fn add_user(&self, user: &str, cap: u32) -> bool {
        let mut m = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(user.to_string()).or_insert(0);
        if cap > 0 && *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    pub fn remove_user(&self, user: &str) {
        let mut m = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(user);
            }
        }
    }
}
