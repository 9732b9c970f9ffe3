//! State shared by every session of a node: config, users, TLS, the routing
//! snapshot, the session registry. Everything a session reads per query is
//! behind an `ArcSwap` (one atomic load, no lock).

use crate::routing::Routing;
use crate::users::UserDb;
use arc_swap::ArcSwap;
use concord_config::Config;
use concord_consensus::{Consensus, Lease};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

/// Greeting version when no backend has answered yet.
const FALLBACK_VERSION: &[u8] = b"8.0.36-concord";

pub struct Shared {
    pub node_id: u64,
    pub config: Arc<ArcSwap<Config>>,
    /// Bumped after each store into `config`: a session re-loads its
    /// copy when this moved, one atomic load per command instead of an
    /// `ArcSwap` load per use.
    pub config_gen: AtomicU64,
    pub users: ArcSwap<UserDb>,
    pub tls: ArcSwap<Option<TlsAcceptor>>,
    pub routing: ArcSwap<Routing>,
    server_version: ArcSwap<Vec<u8>>,
    pub sessions: Sessions,
    pub consensus: Consensus,
    /// This node's probes of every backend.
    pub health: Arc<concord_health::Health>,
    /// May this node route writes (a quorum confirmed its state recently)?
    pub lease: Arc<Lease>,
    /// Every statement sent to a primary holds a guard from it.
    pub gate: Arc<concord_consensus::WriteGate>,
    /// Statements waiting for a routable primary, and their bytes.
    pub buffered: AtomicU32,
    pub buffered_bytes: AtomicU64,
    /// Failover workflows run one at a time on a node.
    pub workflow_lock: tokio::sync::Mutex<()>,
    /// Set when the node is shutting down: stop accepting.
    pub shutting_down: AtomicBool,
    pub started: Instant,
    /// Failed logins per source address.
    pub auth_throttle: crate::throttle::AuthThrottle,
    /// The primary's position for `read_your_writes = "fleet"`.
    pub primary_pos: Arc<crate::fleetpos::PrimaryPosition>,
    /// Woken whenever the routing snapshot is rebuilt (a new primary or
    /// epoch, a backend's health changed): held statements look again.
    /// Only ever `notify_waiters` (see [`Shared::notify_route_changed`]):
    /// sessions rely on it reaching futures they never enabled.
    pub route_changed: tokio::sync::Notify,
    /// When `route_changed` last fired (boot nanos, the lease's clock): a
    /// held statement measures its release delay from here.
    pub route_changed_at: AtomicU64,
    /// Query digests (`SHOW CONCORD DIGESTS`).
    pub digests: crate::digest::Digests,
}

impl Shared {
    /// Sends `req` to the proxy of every other fleet member at once;
    /// each member's answer (or why there is none), within `timeout`.
    pub async fn ask_peers(
        &self,
        req: &serde_json::Value,
        timeout: std::time::Duration,
    ) -> Vec<(u64, Result<serde_json::Value, String>)> {
        let me = self.node_id;
        let peers: Vec<u64> = self
            .consensus
            .status()
            .members
            .keys()
            .copied()
            .filter(|id| *id != me)
            .collect();
        let calls = peers.iter().map(|&id| async move {
            (id, self.consensus.call_app(id, req.clone(), timeout).await)
        });
        futures::future::join_all(calls).await
    }

    pub fn new(
        config: Config,
        users: UserDb,
        tls: Option<TlsAcceptor>,
        consensus: Consensus,
    ) -> Self {
        // "auto": learned from a backend before the first greeting.
        let version = match config.listener.server_version.as_str() {
            "auto" => Vec::new(),
            v => v.as_bytes().to_vec(),
        };
        let digests = crate::digest::Digests::new(
            config.digests.max_memory.0,
            config.digests.max_text as usize,
        );
        digests.configure(&config);
        Shared {
            digests,
            node_id: config.node.id,
            config: Arc::new(ArcSwap::from_pointee(config)),
            config_gen: AtomicU64::new(0),
            users: ArcSwap::from_pointee(users),
            tls: ArcSwap::from_pointee(tls),
            routing: ArcSwap::from_pointee(Routing::empty()),
            server_version: ArcSwap::from_pointee(version),
            sessions: Sessions::default(),
            lease: consensus.lease(),
            gate: consensus.gate(),
            health: concord_health::Health::new(),
            consensus,
            buffered: AtomicU32::new(0),
            buffered_bytes: AtomicU64::new(0),
            workflow_lock: tokio::sync::Mutex::new(()),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            auth_throttle: Default::default(),
            primary_pos: Default::default(),
            route_changed: tokio::sync::Notify::new(),
            route_changed_at: AtomicU64::new(0),
        }
    }

    /// Publishes a rebuilt routing snapshot's arrival to held statements.
    pub fn notify_route_changed(&self) {
        self.route_changed_at
            .store(concord_consensus::lease::boot_nanos(), Ordering::Release);
        self.route_changed.notify_waiters();
    }

    /// The latest event that can release held statements (a rebuilt
    /// routing snapshot, the lease regained), boot nanos.
    pub fn last_release_event(&self) -> u64 {
        self.route_changed_at
            .load(Ordering::Acquire)
            .max(self.lease.regained_at.load(Ordering::Acquire))
    }

    /// Whether a statement routed to the primary of `epoch` may be sent
    /// now: no newer epoch applied here, and this node's lease for that
    /// epoch holds. The last check before a statement's first byte.
    #[inline]
    pub fn primary_usable(&self, epoch: u64) -> bool {
        self.gate.epoch() == epoch && self.lease.valid_for(epoch)
    }

    /// Whether writes can be routed right now, and if not, why.
    pub fn write_block_reason(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Some("this concord node is shutting down".into());
        }
        if let Some(why) = self.consensus.stopped() {
            return Some(why);
        }
        let routing = self.routing.load();
        if routing.primary.is_none() {
            return Some(routing.no_primary_reason.clone());
        }
        if !self.lease.valid() {
            return Some(format!(
                "no quorum: this node could not confirm the fleet's state within cluster.lease_timeout ({:?})",
                self.lease.timeout()
            ));
        }
        None
    }

    /// Reserves room for one statement waiting for a primary; `Err` says
    /// which cap (`failover.write_buffer_max` / `_bytes`) is full.
    pub fn buffer_slot(
        self: &Arc<Self>,
        bytes: usize,
        f: &concord_config::FailoverConfig,
    ) -> Result<BufferSlot, String> {
        let n = self.buffered.fetch_add(1, Ordering::AcqRel) + 1;
        let b = self
            .buffered_bytes
            .fetch_add(bytes as u64, Ordering::AcqRel)
            + bytes as u64;
        let slot = BufferSlot {
            shared: self.clone(),
            bytes: bytes as u64,
        };
        if n > f.write_buffer_max {
            return Err(format!(
                "the write buffer is full ({} statements, failover.write_buffer_max)",
                f.write_buffer_max
            ));
        }
        if b > f.write_buffer_bytes.get() {
            return Err(format!(
                "the write buffer is full ({} bytes, failover.write_buffer_bytes)",
                f.write_buffer_bytes.get()
            ));
        }
        Ok(slot)
    }

    /// The version string greetings carry.
    pub fn server_version(&self) -> Arc<Vec<u8>> {
        let v = self.server_version.load_full();
        if v.is_empty() {
            // No backend has answered yet (nothing would work anyway).
            return Arc::new(FALLBACK_VERSION.to_vec());
        }
        v
    }

    /// Waits (at most `limit`) until a backend's version is known, so the
    /// first greetings after a start name it, not a guess.
    pub async fn wait_server_version(&self, limit: std::time::Duration) {
        let deadline = Instant::now() + limit;
        while self.server_version.load().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn knows_server_version(&self) -> bool {
        !self.server_version.load().is_empty()
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
    /// A command is running: the session is not idle however long it takes
    /// (like MySQL's `wait_timeout`, which only counts between commands).
    pub busy: AtomicBool,
    pub db: Mutex<Option<String>>,
    pub backend: Mutex<Option<Arc<str>>>,
    /// Why the session must close (KILL SESSION, idle timeout, shutdown).
    pub kill_reason: Mutex<Option<String>>,
    /// Wakes the session between commands (kill, or a nudge to re-check
    /// what it holds).
    pub kill: Notify,
    /// Wakes the watcher that ends a session in the middle of a command
    /// (see `session::run`); only [`SessionInfo::kill`] notifies it.
    pub abort: Notify,
    /// The backend connections the session holds (updated when it takes
    /// or gives one up, not per statement), for KILL.
    pub held: Mutex<Vec<HeldConn>>,
    /// Process-wide id of the held connection a command is running on
    /// (0: none); two relaxed stores per command.
    pub running: AtomicU64,
    /// Held by a KILL QUERY from its last check that the statement still
    /// runs until the server answered; the session takes it before giving
    /// a connection back, so the KILL never lands on another session's
    /// statement on that connection.
    pub kill_gate: tokio::sync::Mutex<()>,
    /// Why the session is pinned (`classify::Pin` bits), for SHOW SESSIONS.
    pub pins: std::sync::atomic::AtomicU16,
}

/// A backend connection a session holds: enough to kill what runs on it
/// from a side connection with the same account.
#[derive(Clone)]
pub struct HeldConn {
    pub conn_id: u64,
    pub thread_id: u32,
    /// The backend (name, address) and the session's user (its backend
    /// account): shared, so publishing costs no allocation per statement.
    pub pool: Arc<crate::backend::BackendPool>,
    pub user: Arc<crate::users::User>,
}

impl SessionInfo {
    /// Records activity now; returns the instant used (one clock read per
    /// command serves the session's other checks too).
    pub fn touch(&self) -> Instant {
        let now = Instant::now();
        let ms = u64::try_from(now.saturating_duration_since(self.connected).as_millis())
            .unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
        now
    }

    /// Time since the last command; zero while one runs. The sweeper's
    /// once-a-second look moves `last_active_ms` along for a busy session,
    /// so idleness after a long command counts from (about) its end
    /// without a second clock read per command on the hot path.
    pub fn idle_for(&self) -> std::time::Duration {
        if self.busy.load(Ordering::Relaxed) {
            self.touch();
            return std::time::Duration::ZERO;
        }
        let last = std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        self.connected.elapsed().saturating_sub(last)
    }

    /// Ends the session: between commands it is told why; in the middle of
    /// one (a statement running, a half-sent packet, a LOCAL INFILE that
    /// went quiet) it is cut off at once.
    pub fn kill(&self, reason: &str) {
        *self.kill_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        self.kill.notify_one();
        self.abort.notify_one();
    }

    pub fn killed(&self) -> Option<String> {
        self.kill_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The held connection the current command runs on, if any.
    pub fn running_conn(&self) -> Option<HeldConn> {
        let id = self.running.load(Ordering::Relaxed);
        if id == 0 {
            return None;
        }
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|h| h.conn_id == id)
            .cloned()
    }
}

/// Session ids carry the node id in their top byte, so an id is unique
/// across the fleet and says which node holds the session (a KILL sent to
/// another node is forwarded there).
pub const ID_NODE_SHIFT: u32 = 24;
const ID_COUNTER_MASK: u64 = (1 << ID_NODE_SHIFT) - 1;

/// The node a session id belongs to.
pub fn node_of(id: u64) -> u64 {
    id >> ID_NODE_SHIFT
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
    /// A fresh id for a connection on node `node`: the node in the top
    /// byte, a counter below that skips 0 and ids still in use when it
    /// wraps (MySQL ids are 32 bits on the wire).
    pub fn next_id(&self, node: u64) -> u64 {
        loop {
            let n = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & ID_COUNTER_MASK;
            if n == 0 {
                continue;
            }
            let id = (node << ID_NODE_SHIFT) | n;
            if !self
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
            {
                return id;
            }
        }
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

    /// Wakes every session without a kill reason: each re-checks what it
    /// holds (shutdown, a backend out of rotation, a stalled backend).
    pub fn nudge_all(&self) {
        for s in self.map.lock().unwrap_or_else(|p| p.into_inner()).values() {
            s.kill.notify_one();
        }
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

/// A session in the registry and counted for its user, until dropped:
/// however the session ends (a panic included), it leaves both.
pub struct Registered {
    shared: Arc<Shared>,
    id: u64,
    user: Mutex<String>,
}

impl Registered {
    /// Registers `info` and counts it for its user; `None` when the user's
    /// `max_connections` is reached (nothing registered then).
    pub fn new(shared: &Arc<Shared>, info: Arc<SessionInfo>, cap: u32) -> Option<Registered> {
        let user = info.user.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !shared.sessions.add_user(&user, cap) {
            return None;
        }
        let id = info.id;
        shared.sessions.insert(info);
        Some(Registered {
            shared: shared.clone(),
            id,
            user: Mutex::new(user),
        })
    }

    /// COM_CHANGE_USER: counts the session for `user` instead; false when
    /// that user's cap is reached (the old user stays counted).
    pub fn change_user(&self, user: &str, cap: u32) -> bool {
        if !self.shared.sessions.add_user(user, cap) {
            return false;
        }
        let mut u = self.user.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.sessions.remove_user(&u);
        *u = user.to_string();
        true
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if std::thread::panicking() && concord_config::testhooks::on("leak-on-panic") {
            // Test-only: what happened before this guard existed.
            return;
        }
        self.shared.sessions.remove(self.id);
        let u = self.user.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.sessions.remove_user(&u);
    }
}

/// One statement held while no primary is routable; releases its share
/// of the buffer caps when dropped.
pub struct BufferSlot {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Drop for BufferSlot {
    fn drop(&mut self) {
        self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .buffered_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}
