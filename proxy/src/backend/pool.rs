//! Warm connections to one backend, per (backend user, protocol flavor).
//!
//! Sessions check a connection out when they first need that backend and
//! give it back when they end (reset first if they changed its state), or
//! in transaction mode at each transaction boundary (keeping the session
//! state it holds, for the next session to adjust). The lock is held only
//! to push or pop a connection, never across I/O.

use super::conn::BackendConn;
use super::login::Credentials;
use crate::error::BackendError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Empties a connection's diagnostics area without touching anything else.
pub const CLEAR_DIAGNOSTICS: &str = "DO (SELECT 1 FROM (SELECT 1) AS x)";

/// Which idle connections a session may take: same backend account and
/// same format-changing capability flags as its client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: Arc<str>,
    pub flavor: u32,
}

/// Which idle connection a session would rather have (transaction mode):
/// the one it used last, or one holding the same variables.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prefer {
    /// The session's id (0: no preference).
    pub session: u64,
    /// Fingerprint of the session's variables.
    pub fp: Option<u64>,
    /// The session has no database selected.
    pub no_db: bool,
}

/// Prepared statements on an idle connection are closed after this.
const STATEMENTS_IDLE: Duration = Duration::from_secs(2);

/// Idle connections looked at for a preferred one (newest first).
const PREFER_WINDOW: usize = 16;

/// Takes the idle connection `prefer` likes best: among the most recently
/// idle few, the one the session used last (its state and statements are
/// there), else one holding the same variables, else any; among equals
/// the one idle longest (its own session is the least likely to want it
/// back next, so sessions do not keep taking each other's). A
/// session without a database takes only a connection without one (no
/// statement can unselect a database, and unqualified names must fail
/// for it as on a direct connection).
// Boxed on purpose: connections move in and out on every statement.
#[allow(clippy::vec_box)]
fn pick(conns: &mut Vec<Box<BackendConn>>, prefer: Prefer) -> Option<Box<BackendConn>> {
    let score = |c: &BackendConn| {
        if prefer.session != 0 && c.state.synced.is_some_and(|(s, _)| s == prefer.session) {
            2
        } else if prefer.fp.is_some() && c.state.held.as_ref().map(|h| h.fp) == prefer.fp {
            1
        } else {
            0
        }
    };
    let mut best: Option<(usize, u8)> = None;
    let mut seen = 0;
    for i in (0..conns.len()).rev() {
        if prefer.no_db && conns[i].state.db.is_some() {
            continue;
        }
        let s = score(&conns[i]);
        // (Newest first: a later one of equal score has been idle longer.)
        if best.is_none_or(|(_, b)| s > b || (s == b && s < 2)) {
            best = Some((i, s));
        }
        seen += 1;
        if s == 2 || seen >= PREFER_WINDOW {
            break;
        }
    }
    best.map(|(i, _)| conns.swap_remove(i))
}

/// How to log in for a key (kept so the maintainer can open warm ones).
#[derive(Clone, Debug)]
pub struct Login {
    pub user: Arc<str>,
    pub password: Arc<str>,
    pub collation: u8,
}

/// A session waiting for a connection: a released one for its key is
/// handed straight to the longest waiting (first come, first served: a
/// busy session cannot take every freed connection before a waiter).
struct Waiter {
    id: u64,
    key: PoolKey,
    /// Takes only a connection without a database.
    no_db: bool,
    /// The connection and the generation it was given back under.
    tx: tokio::sync::oneshot::Sender<(Box<BackendConn>, u64)>,
}

#[derive(Default)]
// Boxed on purpose: connections move in and out on every statement.
#[allow(clippy::vec_box)]
struct Idle {
    by_key: HashMap<PoolKey, Vec<Box<BackendConn>>, foldhash::fast::RandomState>,
    waiters: std::collections::VecDeque<Waiter>,
    next_waiter: u64,
    /// Keys used recently, with how to log in, so warm connections can be
    /// kept for them.
    recent: HashMap<PoolKey, (Login, Instant), foldhash::fast::RandomState>,
}

pub struct PoolSettings {
    pub min_idle: u32,
    pub max: u32,
    pub connect_timeout: Duration,
    pub max_idle_time: Duration,
    /// Connections older than this are closed when given back (zero:
    /// never).
    pub max_lifetime: Duration,
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
    /// Connections opened before `born` + this many ns (0: none) are not
    /// reused: a SET GLOBAL changed what new ones start from. Not the
    /// fencing `generation`, which also ends sessions' use of their own.
    retired_ns: AtomicU64,
    born: Instant,
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
    /// Time from sending a statement to the end of its answer.
    pub latency: crate::latency::Histogram,
}

impl Stats {
    fn new(_name: &str) -> Self {
        Stats {
            queries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            qps: AtomicU64::new(0),
            last_queries: AtomicU64::new(0),
            latency: Default::default(),
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
            retired_ns: AtomicU64::new(0),
            born: Instant::now(),
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
        prefer: Prefer,
    ) -> Result<(Box<BackendConn>, u64), BackendError> {
        let deadline = Instant::now() + self.settings.acquire_timeout;
        let mut queued = false;
        loop {
            let gen = self.generation();
            // Behind sessions already waiting unless woken in turn.
            while let Some((conn, now)) = self.pop_idle(key, login, prefer, queued) {
                if !self.aged(&conn, now) && conn.looks_alive() {
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
                return Ok((Box::new(c), gen));
            }
            // At the cap with idle connections for other keys (another
            // backend user or client protocol flavor): close one to make
            // room, rather than wait for what may never be freed.
            if self.evict_other(key, prefer.no_db) {
                continue;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(BackendError::PoolExhausted(self.open_count()));
            }
            // Queue, then wait for a connection handed over, or for a
            // slot freed (a connection closed) to open one.
            let freed = self.counter.released.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            let me = {
                let mut idle = self.lock();
                // Released since we looked (before we could be handed it).
                if let Some(conn) = idle.by_key.get_mut(key).and_then(|v| pick(v, prefer)) {
                    drop(idle);
                    if !self.aged(&conn, Instant::now()) && conn.looks_alive() {
                        return Ok((conn, gen));
                    }
                    continue;
                }
                idle.next_waiter += 1;
                let id = idle.next_waiter;
                idle.waiters.push_back(Waiter {
                    id,
                    key: key.clone(),
                    no_db: prefer.no_db,
                    tx,
                });
                id
            };
            queued = true;
            let (handed, woken) = tokio::select! {
                c = &mut rx => (c.ok(), false),
                _ = &mut freed => (None, true),
                _ = tokio::time::sleep(wait) => (None, false),
            };
            self.lock().waiters.retain(|w| w.id != me);
            // Handed over between the wake-up and leaving the queue.
            let handed = handed.or_else(|| rx.try_recv().ok());
            if woken && handed.is_some() {
                // The freed slot is someone else's to use.
                self.counter.released.notify_one();
            }
            if let Some((conn, gen)) = handed {
                if !self.aged(&conn, Instant::now()) && conn.looks_alive() {
                    return Ok((conn, gen));
                }
            }
        }
    }

    /// Past `max_lifetime` at `now`, or opened before [`Self::retire`]:
    /// closed rather than handed out.
    fn aged(&self, conn: &BackendConn, now: Instant) -> bool {
        let retired = self.retired_ns.load(Ordering::Relaxed);
        (!self.settings.max_lifetime.is_zero()
            && now.saturating_duration_since(conn.created) > self.settings.max_lifetime)
            || (retired != 0
                && conn.created.saturating_duration_since(self.born).as_nanos()
                    <= u128::from(retired))
    }

    /// Connections open now are closed instead of reused (idle ones at
    /// once, in-use ones when given back); sessions keep the ones they
    /// hold meanwhile. Returns how many idle ones were closed.
    pub fn retire(&self) -> usize {
        let now = self.born.elapsed().as_nanos();
        // (The later of two SET GLOBALs wins, whichever stores last.)
        self.retired_ns.fetch_max(
            u64::try_from(now).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        self.close_idle()
    }

    /// An idle connection for `key`, and the time it was taken (the
    /// clock read that also marks the key as recently used).
    fn pop_idle(
        &self,
        key: &PoolKey,
        login: &Login,
        prefer: Prefer,
        in_turn: bool,
    ) -> Option<(Box<BackendConn>, Instant)> {
        let mut idle = self.lock();
        // Waiters that gave up (their session went away) hold no place.
        idle.waiters.retain(|w| !w.tx.is_closed());
        if !in_turn && idle.waiters.iter().any(|w| &w.key == key) {
            return None;
        }
        let now = Instant::now();
        match idle.recent.get_mut(key) {
            Some(r) => r.1 = now,
            None => {
                idle.recent.insert(key.clone(), (login.clone(), now));
            }
        }
        let conns = idle.by_key.get_mut(key)?;
        pick(conns, prefer).map(|c| (c, now))
    }

    /// Closes the longest idle connection kept for a key other than
    /// `key` (or for `key` with a database, when the session needs one
    /// without); false if there is none.
    fn evict_other(&self, key: &PoolKey, no_db: bool) -> bool {
        let victim = {
            let mut idle = self.lock();
            let other = idle
                .by_key
                .iter_mut()
                .filter(|(k, v)| *k != key && !v.is_empty())
                .min_by_key(|(_, v)| v[0].idle_since)
                .map(|(_, v)| v.remove(0));
            other.or_else(|| {
                let v = idle.by_key.get_mut(key).filter(|_| no_db)?;
                let i = v.iter().position(|c| c.state.db.is_some())?;
                Some(v.remove(i))
            })
        };
        match victim {
            Some(c) => {
                self.discard(c);
                true
            }
            None => false,
        }
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
        mut conn: Box<BackendConn>,
        key: PoolKey,
        gen: u64,
        reusable: bool,
    ) {
        use concord_protocol::consts::status;
        // Aged as of its last use (stamped when its last answer ended):
        // no clock read per statement. One given back long after that
        // (session mode) is caught when next taken.
        let aged = self.aged(&conn, conn.idle_since);
        if !reusable
            || aged
            || !self.serving()
            || gen != self.generation()
            || conn.status & status::IN_TRANS != 0
        {
            self.discard(conn);
            return;
        }
        if conn.dirty || (conn.state.synced.is_some() && conn.state.held.is_none()) {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                match conn.reset().await {
                    Ok(Ok(())) => {
                        conn.idle_since = Instant::now();
                        pool.put_idle(conn, key, gen)
                    }
                    _ => pool.discard(conn),
                }
            });
            return;
        }
        if conn.diag {
            // Kept state (transaction mode), but no session may read
            // another's warnings: a statement naming a table empties the
            // diagnostics area on MariaDB as on MySQL.
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                match conn.exec(CLEAR_DIAGNOSTICS).await {
                    Ok(Ok(_)) => {
                        conn.diag = false;
                        conn.idle_since = Instant::now();
                        pool.put_idle(conn, key, gen)
                    }
                    _ => pool.discard(conn),
                }
            });
            return;
        }
        self.put_idle(conn, key, gen);
    }

    /// Keeps `conn` for reuse, idle from now: the upkeep closes the
    /// statements of a connection idle for a while, so the stamp must not
    /// be older than its last use by anyone.
    fn put_idle(&self, mut conn: Box<BackendConn>, key: PoolKey, gen: u64) {
        conn.idle_since = Instant::now();
        conn.io.shrink();
        let mut idle = self.lock();
        // Checked under the lock `close_all` drains under, after bumping
        // the generation: a fenced connection never goes idle.
        if gen != self.generation() || !self.serving() {
            drop(idle);
            self.discard(conn);
            return;
        }
        let has_db = conn.state.db.is_some();
        while let Some(i) = idle
            .waiters
            .iter()
            .position(|w| w.key == key && !(w.no_db && has_db))
        {
            let Some(w) = idle.waiters.remove(i) else {
                break;
            };
            match w.tx.send((conn, gen)) {
                Ok(()) => return,
                // That waiter gave up meanwhile: the next one.
                Err((c, _)) => conn = c,
            }
        }
        idle.by_key.entry(key).or_default().push(conn);
        drop(idle);
        self.counter.released.notify_one();
    }

    /// Closes a connection that will not be reused (its [`OpenSlot`]
    /// gives the count back).
    pub fn discard(&self, conn: Box<BackendConn>) {
        drop(conn);
    }

    /// Closes every idle connection and makes in-use ones non-reusable.
    pub fn close_all(&self) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let drained: Vec<Box<BackendConn>> = {
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
        let drained: Vec<Box<BackendConn>> = {
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
                    if self.aged(&conns[i], now)
                        || (now.duration_since(conns[i].idle_since) > max_idle
                            && conns.len() > self.settings.min_idle as usize)
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
        // Statements left on idle connections by sessions that gave them
        // back (transaction mode) are closed after a while, so sessions
        // that ended leave none open on the server. (The generation is
        // read first: a fence meanwhile closes them instead.)
        let gen = self.generation();
        let stale: Vec<(PoolKey, Box<BackendConn>)> = {
            let mut idle = self.lock();
            let mut out = Vec::new();
            for (k, conns) in idle.by_key.iter_mut() {
                let mut i = 0;
                while i < conns.len() {
                    if !conns[i].prepared.is_empty()
                        && now.duration_since(conns[i].idle_since) > STATEMENTS_IDLE
                    {
                        out.push((k.clone(), conns.swap_remove(i)));
                    } else {
                        i += 1;
                    }
                }
            }
            out
        };
        for (key, mut c) in stale {
            if c.close_statements().await.is_ok() {
                self.put_idle(c, key, gen);
            }
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
                        self.put_idle(Box::new(c), key.clone(), gen)
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
