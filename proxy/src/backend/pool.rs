//! Warm connections to one backend, per (backend user, protocol flavor).
//!
//! Sessions check a connection out when they first need that backend and
//! give it back when they end (reset first if they changed its state). The
//! lock is held only to push or pop a connection, never across I/O.

use super::conn::BackendConn;
use super::login::Credentials;
use crate::error::BackendError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Which idle connections a session may take: same backend account and
/// same format-changing capability flags as its client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: Arc<str>,
    pub flavor: u32,
}

/// How to log in for a key (kept so the maintainer can open warm ones).
#[derive(Clone, Debug)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub collation: u8,
}

#[derive(Default)]
struct Idle {
    by_key: HashMap<PoolKey, Vec<BackendConn>>,
    /// Keys used recently, with how to log in, so warm connections can be
    /// kept for them.
    recent: HashMap<PoolKey, (Login, Instant)>,
}

pub struct PoolSettings {
    pub min_idle: u32,
    pub max: u32,
    pub connect_timeout: Duration,
    pub max_idle_time: Duration,
    pub acquire_timeout: Duration,
}

/// Connections open to one backend, and the wake-up for sessions waiting
/// for one to be freed. Shared by the pool and every connection's
/// [`OpenSlot`] (not the pool itself: idle connections live in the pool,
/// and a connection holding its pool would keep it alive forever).
#[derive(Default)]
struct Counter {
    open: AtomicU32,
    released: Notify,
}

/// One connection counted in its pool's `open`, for as long as it lives:
/// dropping the connection (closed, discarded, or dropped by a panicking
/// session) gives the count back and wakes a waiter.
pub struct OpenSlot(Arc<Counter>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        if std::thread::panicking() && concord_config::testhooks::on("leak-on-panic") {
            // Test-only: what happened before this guard existed.
            return;
        }
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.released.notify_one();
    }
}

pub struct BackendPool {
    pub name: Arc<str>,
    pub addr: String,
    idle: Mutex<Idle>,
    /// Connections from this node to this backend, idle or in use.
    counter: Arc<Counter>,
    /// Bumped when this backend is fenced: older connections are closed
    /// instead of reused.
    generation: AtomicU64,
    /// Set while the health checks consider this backend down; sessions
    /// stuck waiting on it check it when nudged (see `relay::Stall`).
    down: std::sync::atomic::AtomicBool,
    pub settings: PoolSettings,
    /// Queries in flight on this backend from this node (router load).
    pub outstanding: AtomicU32,
    /// False while the fleet takes this backend out of rotation (draining,
    /// maintenance, fenced): released connections close instead of going
    /// idle and none are kept warm, so a drain empties it on every node.
    serving: std::sync::atomic::AtomicBool,
    /// Set while a [`BackendPool::maintain`] runs: connects to a
    /// black-holed backend take up to `connect_timeout` each, so upkeep
    /// runs it in the background and never starts a second one.
    maintaining: std::sync::atomic::AtomicBool,
    pub stats: Stats,
}

/// Per-backend counters for SHOW BACKENDS and /metrics.
pub struct Stats {
    pub queries: AtomicU64,
    pub errors: AtomicU64,
    /// Queries per second over the last second (set by the upkeep task).
    pub qps: AtomicU64,
    last_queries: AtomicU64,
    pub latency: metrics::Histogram,
}

impl Stats {
    fn new(name: &str) -> Self {
        Stats {
            queries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            qps: AtomicU64::new(0),
            last_queries: AtomicU64::new(0),
            latency: metrics::histogram!("concord_backend_query_duration_seconds", "backend" => name.to_string()),
        }
    }

    /// Called once a second.
    pub fn tick(&self) {
        let now = self.queries.load(Ordering::Relaxed);
        let before = self.last_queries.swap(now, Ordering::Relaxed);
        self.qps
            .store(now.saturating_sub(before), Ordering::Relaxed);
    }
}

impl BackendPool {
    pub fn new(name: &str, addr: &str, settings: PoolSettings) -> Arc<Self> {
        Arc::new(BackendPool {
            name: name.into(),
            addr: addr.to_string(),
            idle: Mutex::new(Idle::default()),
            counter: Arc::default(),
            generation: AtomicU64::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
            settings,
            outstanding: AtomicU32::new(0),
            serving: std::sync::atomic::AtomicBool::new(true),
            maintaining: std::sync::atomic::AtomicBool::new(false),
            stats: Stats::new(name),
        })
    }

    /// Takes the pool out of rotation (closing its idle connections) or
    /// puts it back.
    pub fn set_serving(&self, on: bool) {
        if self.serving.swap(on, Ordering::AcqRel) && !on {
            self.close_idle();
        }
    }

    /// Records the health checks' verdict; true if the backend is down.
    pub fn set_down(&self, down: bool) -> bool {
        self.down.store(down, Ordering::Release);
        down
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    pub fn open_count(&self) -> u32 {
        self.counter.open.load(Ordering::Relaxed)
    }

    pub fn idle_count(&self) -> usize {
        self.lock().by_key.values().map(Vec::len).sum()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic while holding this lock cannot leave it inconsistent
        // (push/pop only), so a poisoned lock is still usable.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an idle connection for `key`, or opens one.
    pub async fn acquire(
        &self,
        key: &PoolKey,
        login: &Login,
        db: Option<&str>,
    ) -> Result<(BackendConn, u64), BackendError> {
        let deadline = Instant::now() + self.settings.acquire_timeout;
        loop {
            let gen = self.generation();
            while let Some(conn) = self.pop_idle(key, login) {
                if conn.looks_alive() {
                    return Ok((conn, gen));
                }
            }
            if let Some(slot) = self.try_reserve() {
                let creds = Credentials {
                    user: &login.user,
                    password: &login.password,
                    database: db,
                    collation: login.collation,
                    flavor: key.flavor,
                };
                // A failed connect drops the slot, which frees it.
                let mut c =
                    BackendConn::connect(&self.addr, &creds, self.settings.connect_timeout).await?;
                c.slot = Some(slot);
                return Ok((c, gen));
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero()
                || tokio::time::timeout(wait, self.counter.released.notified())
                    .await
                    .is_err()
            {
                return Err(BackendError::PoolExhausted(self.open_count()));
            }
        }
    }

    fn pop_idle(&self, key: &PoolKey, login: &Login) -> Option<BackendConn> {
        let mut idle = self.lock();
        let now = Instant::now();
        match idle.recent.get_mut(key) {
            Some(r) => r.1 = now,
            None => {
                idle.recent.insert(key.clone(), (login.clone(), now));
            }
        }
        idle.by_key.get_mut(key).and_then(Vec::pop)
    }

    fn try_reserve(&self) -> Option<OpenSlot> {
        self.counter
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.settings.max).then_some(n + 1)
            })
            .ok()
            .map(|_| OpenSlot(self.counter.clone()))
    }

    /// Gives a connection back. Connections in a transaction, broken, from
    /// an older generation, or dirty (reset first, off the session's path)
    /// are handled here so sessions need not care.
    pub fn release(
        self: &Arc<Self>,
        mut conn: BackendConn,
        key: PoolKey,
        gen: u64,
        reusable: bool,
    ) {
        use concord_protocol::consts::status;
        if !reusable
            || !self.serving()
            || gen != self.generation()
            || conn.status & status::IN_TRANS != 0
        {
            self.discard(conn);
            return;
        }
        if conn.dirty || conn.state.synced.is_some() {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                match conn.reset().await {
                    Ok(Ok(())) => pool.put_idle(conn, key, gen),
                    _ => pool.discard(conn),
                }
            });
            return;
        }
        self.put_idle(conn, key, gen);
    }

    fn put_idle(&self, mut conn: BackendConn, key: PoolKey, gen: u64) {
        if gen != self.generation() || !self.serving() {
            self.discard(conn);
            return;
        }
        conn.idle_since = Instant::now();
        conn.io.shrink();
        self.lock().by_key.entry(key).or_default().push(conn);
        self.counter.released.notify_one();
    }

    /// Closes a connection that will not be reused (its [`OpenSlot`]
    /// gives the count back).
    pub fn discard(&self, conn: BackendConn) {
        drop(conn);
    }

    /// Closes every idle connection and makes in-use ones non-reusable.
    pub fn close_all(&self) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let drained: Vec<BackendConn> = {
            let mut idle = self.lock();
            idle.by_key.drain().flat_map(|(_, v)| v).collect()
        };
        let n = drained.len();
        for c in drained {
            self.discard(c);
        }
        n
    }

    /// Closes idle connections (a draining backend keeps in-use ones until
    /// their sessions move).
    pub fn close_idle(&self) -> usize {
        let drained: Vec<BackendConn> = {
            let mut idle = self.lock();
            idle.recent.clear();
            idle.by_key.drain().flat_map(|(_, v)| v).collect()
        };
        let n = drained.len();
        for c in drained {
            self.discard(c);
        }
        n
    }

    /// Starts [`BackendPool::maintain`] on its own task unless one is
    /// still running, so one slow backend never delays upkeep of the
    /// others (or marking a backend down).
    pub fn maintain_in_background(self: &Arc<Self>) {
        if self.maintaining.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends.
        struct Running(Arc<BackendPool>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.maintaining.store(false, Ordering::Release);
            }
        }
        let running = Running(self.clone());
        tokio::spawn(async move {
            running.0.maintain().await;
            drop(running);
        });
    }

    /// Periodic upkeep: close connections idle too long, keep `min_idle`
    /// warm ones for keys used in the last few minutes.
    pub async fn maintain(self: &Arc<Self>) {
        if !self.serving() {
            self.close_idle();
            return;
        }
        let now = Instant::now();
        let (expired, wanted) = {
            let mut idle = self.lock();
            let max_idle = self.settings.max_idle_time;
            let mut expired = Vec::new();
            for conns in idle.by_key.values_mut() {
                let mut i = 0;
                while i < conns.len() {
                    if now.duration_since(conns[i].idle_since) > max_idle
                        && conns.len() > self.settings.min_idle as usize
                    {
                        expired.push(conns.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            idle.recent
                .retain(|_, (_, used)| now.duration_since(*used) < Duration::from_secs(600));
            let wanted: Vec<(PoolKey, Login, usize)> = idle
                .recent
                .iter()
                .map(|(k, (login, _))| {
                    let have = idle.by_key.get(k).map_or(0, Vec::len);
                    (
                        k.clone(),
                        login.clone(),
                        (self.settings.min_idle as usize).saturating_sub(have),
                    )
                })
                .filter(|(_, _, n)| *n > 0)
                .collect();
            (expired, wanted)
        };
        for c in expired {
            self.discard(c);
        }
        for (key, login, n) in wanted {
            for _ in 0..n {
                let Some(slot) = self.try_reserve() else {
                    return;
                };
                let gen = self.generation();
                let creds = Credentials {
                    user: &login.user,
                    password: &login.password,
                    database: None,
                    collation: login.collation,
                    flavor: key.flavor,
                };
                match BackendConn::connect(&self.addr, &creds, self.settings.connect_timeout).await
                {
                    Ok(mut c) => {
                        c.slot = Some(slot);
                        self.put_idle(c, key.clone(), gen)
                    }
                    Err(e) => {
                        tracing::debug!(backend = %self.name, "warming a connection failed: {e}");
                        return;
                    }
                }
            }
        }
    }
}
