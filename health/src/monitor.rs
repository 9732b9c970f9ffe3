//! The per-backend probe loops of one node, the heartbeat it writes on the
//! primary, and the published health view the router reads.
//!
//! Lag is measured in milliseconds by heartbeat, skew-free: each node
//! writes its own row with its own wall clock on the primary and reads
//! that row back on every replica, so `lag = now - ts` uses one clock. The
//! figure is an upper bound (it includes up to one `heartbeat_interval`).
//! Broken replication (`NULL` lag, IO or SQL thread stopped) is infinite
//! lag, never 0. Hysteresis: after any bad probe a replica needs
//! `monitor.recover_after` good ones before it is readable again, and the
//! lag the router compares with a bound is the highest of the last
//! `recover_after` probes, so a replica that went over a bound (the
//! default, a user's or a query hint's) comes back only after staying
//! under it.

use crate::probe::{Probe, Prober};
use arc_swap::ArcSwap;
use concord_config::Config;
use concord_consensus::{Applied, Lease, WriteGate};
use mysql_async::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// What the router and SHOW BACKENDS know about one backend.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendHealth {
    pub reachable: bool,
    pub read_only: bool,
    /// Replication lag in ms; `None` = unknown or broken (infinite).
    pub lag_ms: Option<u64>,
    /// What routing compares with a lag bound: the highest lag of the
    /// last `monitor.recover_after` probes (`None` = infinite).
    pub route_lag_ms: Option<u64>,
    /// Lags of the last probes, newest last (bounded).
    #[serde(skip)]
    pub recent_lags: Vec<Option<u64>>,
    /// Consecutive good probes (reachable, replicating, lag known).
    pub good_streak: u32,
    /// Replicating and reachable, with hysteresis applied; the lag bound
    /// is applied on top by [`BackendHealth::within`].
    pub readable: bool,
    /// Executed position at the last probe that reached it.
    pub gtid: String,
    pub replicating: bool,
    pub io_running: bool,
    pub sql_running: bool,
    /// The replica's source host:port, if it is one.
    pub source: Option<String>,
    /// The replica's IO thread is connected and still receiving from its
    /// source (heartbeats or events arrived since the previous probe).
    pub receiving: bool,
    /// Received-GTID position (what a promotion would start from).
    pub gtid_io_pos: String,
    #[serde(skip)]
    pub heartbeats: Option<u64>,
    /// When heartbeats or events last arrived from the source.
    #[serde(skip)]
    pub last_receive: Option<Instant>,
    pub last_error: Option<String>,
    /// What its replication settings put at risk (`preflight.rs`).
    pub preflight: Vec<String>,
    pub probed_ms_ago: u64,
    /// Consecutive failed probes.
    pub failures: u32,
    #[serde(skip)]
    pub probed_at: Option<Instant>,
}

impl BackendHealth {
    /// May serve reads under `bound`: a replica within it, or the primary
    /// (reachable, replicating from no one). A server that is not the
    /// primary and replicates from no one serves nothing: it is stale by
    /// an unknown amount (a former primary nobody repointed).
    pub fn serves_reads(&self, bound: Duration, is_primary: bool) -> bool {
        self.within(bound) || (is_primary && self.source.is_none() && self.readable)
    }

    /// The lag to show: the primary's 0, a replica's measured lag, and
    /// none (infinite) for a server that is not the primary and does not
    /// replicate.
    pub fn shown_lag_ms(&self, is_primary: bool) -> Option<u64> {
        if is_primary || self.replicating {
            self.lag_ms
        } else {
            None
        }
    }

    /// A replica that may serve a read tolerating `bound` of lag.
    pub fn within(&self, bound: Duration) -> bool {
        self.reachable
            && self.replicating
            && self.readable
            && self
                .route_lag_ms
                .is_some_and(|l| u128::from(l) <= bound.as_millis())
    }
}

/// All backends, as last probed by this node.
#[derive(Clone, Debug, Default)]
pub struct HealthView {
    pub backends: BTreeMap<String, BackendHealth>,
}

/// Shared handle: the latest view and a change notification.
pub struct Health {
    pub view: ArcSwap<HealthView>,
    pub changed: Notify,
    /// When this node's heartbeat writer last wrote its row on the
    /// primary (wall-clock µs; 0: never).
    pub last_beat_us: std::sync::atomic::AtomicU64,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health {
            view: ArcSwap::from_pointee(HealthView::default()),
            changed: Notify::new(),
            last_beat_us: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn get(&self, name: &str) -> Option<BackendHealth> {
        self.view.load().backends.get(name).cloned()
    }

    fn update(&self, name: &str, h: BackendHealth) {
        // Probe loops update concurrently: read-copy-update, so one never
        // overwrites another's entry.
        self.view.rcu(|v| {
            let mut v = (**v).clone();
            v.backends.insert(name.to_string(), h.clone());
            v
        });
        // One waiter (the routing rebuild); a permit, so a change that
        // lands while it is rebuilding is not lost.
        self.changed.notify_one();
    }

    fn retain(&self, names: &[String]) {
        self.view.rcu(|v| {
            let mut v = (**v).clone();
            v.backends.retain(|k, _| names.contains(k));
            v
        });
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs probe loops for every backend in the applied topology (starting
/// and stopping them as backends come and go) and the heartbeat writer.
pub async fn run(
    node_id: u64,
    cfg: Arc<ArcSwap<Config>>,
    mut applied: watch::Receiver<Arc<Applied>>,
    health: Arc<Health>,
    lease: Arc<Lease>,
    gate: Arc<WriteGate>,
) {
    let mut loops: HashMap<String, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    let hb_table = cfg.load().monitor.heartbeat_table.clone();
    tokio::spawn(heartbeat_writer(
        node_id,
        health.clone(),
        cfg.clone(),
        applied.clone(),
        lease.clone(),
        gate,
    ));
    loop {
        let a = applied.borrow_and_update().clone();
        let names: Vec<String> = a.topology.backends.keys().cloned().collect();
        let c = cfg.load_full();
        loops.retain(|name, (addr, task)| {
            let keep = a
                .topology
                .backends
                .get(name)
                .is_some_and(|b| c.connect_addr(&b.name, &b.addr) == addr.as_str());
            if !keep {
                task.abort();
            }
            keep
        });
        for b in a.topology.backends.values() {
            if !loops.contains_key(&b.name) {
                let addr = cfg.load().connect_addr(&b.name, &b.addr).to_string();
                let task = tokio::spawn(probe_loop(
                    node_id,
                    b.name.clone(),
                    addr.clone(),
                    hb_table.clone(),
                    cfg.clone(),
                    health.clone(),
                ));
                // Kept as compared above: the address connected to, so
                // an unrelated apply never restarts the loop.
                loops.insert(b.name.clone(), (addr, task));
            }
        }
        health.retain(&names);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

async fn probe_loop(
    node_id: u64,
    name: String,
    addr: String,
    table: String,
    cfg: Arc<ArcSwap<Config>>,
    health: Arc<Health>,
) {
    let c = cfg.load_full();
    let mut prober = Prober::new(
        &addr,
        &c.monitor.user,
        &c.monitor.password,
        c.monitor.timeout.get(),
    );
    let mut state = BackendHealth::default();
    let mut tick = tokio::time::interval(c.monitor.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged_error = false;
    loop {
        tick.tick().await;
        let c = cfg.load_full();
        let mut p = prober.probe().await;
        let lag = if p.reachable && p.replica.is_some() {
            let beat = health
                .last_beat_us
                .load(std::sync::atomic::Ordering::Relaxed);
            // Bounded like the probe: a hung read must not freeze this
            // backend's last (good) health.
            let read = replica_lag_ms(&mut prober, &p, &table, node_id, beat, &c);
            let bound = if concord_config::testhooks::on("lag-read-unbounded") {
                Duration::from_secs(86_400)
            } else {
                c.monitor.timeout.get()
            };
            match tokio::time::timeout(bound, read).await {
                Ok((lag, finding)) => {
                    p.preflight.extend(finding);
                    lag
                }
                Err(_) => {
                    prober.reset();
                    p.preflight.push(format!(
                        "reading its heartbeat table {table} took longer than monitor.timeout ({bound:?}; the table locked?): its lag is unknown and it serves no reads"
                    ));
                    None
                }
            }
        } else {
            None
        };
        if !p.reachable && !logged_error {
            tracing::warn!(backend = %name, "probe failed: {}", p.error.clone().unwrap_or_default());
        }
        logged_error = !p.reachable;
        let before = state.preflight.clone();
        state = next_state(state, &p, lag, &c);
        if state.preflight != before {
            for f in state.preflight.iter().filter(|f| !before.contains(f)) {
                tracing::warn!(backend = %name, "replication preflight: {f}");
            }
        }
        health.update(&name, state.clone());
    }
}

/// Folds one probe into the previous state (lag bound, hysteresis).
pub fn next_state(
    prev: BackendHealth,
    p: &Probe,
    lag_ms: Option<u64>,
    c: &Config,
) -> BackendHealth {
    let replicating = p.replicating();
    let lag = if replicating { lag_ms } else { None };
    let good = p.reachable && (p.replica.is_none() || (replicating && lag.is_some()));
    let window = (c.monitor.recover_after.max(1) as usize).min(16);
    let mut recent_lags = prev.recent_lags;
    recent_lags.push(lag);
    let drop = recent_lags.len().saturating_sub(window);
    recent_lags.drain(..drop);
    // Any unknown (broken) lag in the window counts as infinite.
    let route_lag_ms = recent_lags
        .iter()
        .try_fold(0u64, |m, l| l.map(|l| m.max(l)));
    let good_streak = if good {
        prev.good_streak.saturating_add(1)
    } else {
        0
    };
    let readable = good && (prev.readable || good_streak >= c.monitor.recover_after.max(1));
    let r = p.replica.as_ref();
    let heartbeats = r.and_then(|r| r.received_heartbeats);
    let io_pos = r.map(|r| r.gtid_io_pos.clone()).unwrap_or_default();
    // Alive link: IO thread up and heartbeats or events arrived recently
    // (within two heartbeat periods). With no heartbeat counter (MySQL) a
    // running IO thread has to do.
    let arrived = match (heartbeats, prev.heartbeats) {
        (Some(now), Some(before)) => now > before || io_pos != prev.gtid_io_pos,
        _ => true,
    };
    let last_receive = if arrived {
        Some(Instant::now())
    } else {
        prev.last_receive
    };
    let period = r
        .and_then(|r| r.heartbeat_period)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::ZERO)
        .max(c.monitor.interval.get());
    let window = period * 2 + c.monitor.interval.get();
    let receiving = r.is_some_and(|r| r.io_running)
        && (heartbeats.is_none() || last_receive.is_some_and(|t| t.elapsed() <= window));
    BackendHealth {
        reachable: p.reachable,
        read_only: p.read_only,
        lag_ms: if p.replica.is_none() && p.reachable {
            Some(0)
        } else {
            lag
        },
        route_lag_ms: if p.replica.is_none() && p.reachable {
            Some(0)
        } else {
            route_lag_ms
        },
        recent_lags,
        good_streak,
        readable,
        // The last one seen stays while it is unreachable: what a failover
        // reports as not carried over from a primary that went away.
        gtid: if p.reachable {
            p.gtid_executed.clone()
        } else {
            prev.gtid
        },
        replicating,
        io_running: r.is_some_and(|r| r.io_running),
        sql_running: r.is_some_and(|r| r.sql_running),
        source: r.map(|r| format!("{}:{}", r.source_host, r.source_port)),
        receiving,
        gtid_io_pos: io_pos,
        heartbeats,
        last_receive,
        last_error: p
            .error
            .clone()
            .or_else(|| r.map(|r| r.last_error.clone()).filter(|e| !e.is_empty())),
        preflight: if p.reachable {
            p.preflight.clone()
        } else {
            prev.preflight
        },
        probed_ms_ago: 0,
        failures: if p.reachable {
            0
        } else {
            prev.failures.saturating_add(1)
        },
        probed_at: Some(Instant::now()),
    }
}

/// The replica's lag in ms from the heartbeat rows it has: `now - ts`
/// of this node's own row while this node writes heartbeats (`beat_us`,
/// its last write, is recent), else of the freshest row of any node (a
/// node without the lease writes none; then the concord hosts' clock
/// skew adds to the error). Seconds_Behind_Master (whole seconds, never
/// NULL as 0) only before any heartbeat was written; afterwards a replica
/// without rows is stale by an unknown amount: `None`, and a preflight
/// finding (replication filters, or a replica of a replica that does not
/// log its updates).
async fn replica_lag_ms(
    prober: &mut Prober,
    p: &Probe,
    table: &str,
    node_id: u64,
    beat_us: u64,
    c: &Config,
) -> (Option<u64>, Option<String>) {
    if !p.replicating() {
        return (None, None);
    }
    let Ok(conn) = prober.conn().await else {
        return (None, None);
    };
    let rows: Result<Vec<(u64, u64)>, _> =
        conn.query(format!("SELECT node, ts FROM {table}")).await;
    let (rows, unreadable) = match rows {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let now = now_us();
    let own_fresh = beat_us != 0
        && now.saturating_sub(beat_us)
            <= 2 * (c.monitor.heartbeat_interval.get() + c.monitor.timeout.get()).as_micros()
                as u64;
    let own = rows.iter().find(|r| r.0 == node_id).map(|r| r.1);
    let freshest = rows.iter().map(|r| r.1).max();
    // (Its own row may not have arrived yet right after it started.)
    let ts = if own_fresh || concord_config::testhooks::on("lag-own-row-only") {
        own.or(freshest)
    } else {
        freshest
    };
    match ts {
        Some(ts) => (Some(now.saturating_sub(ts) / 1000), None),
        None if beat_us == 0 || concord_config::testhooks::on("lag-from-seconds-behind") => (
            p.replica
                .as_ref()
                .and_then(|r| r.seconds_behind)
                .map(|s| s * 1000 + 999),
            None,
        ),
        None => (
            None,
            Some(match unreadable {
                Some(e) => format!("its heartbeat table {table} cannot be read ({e}): its lag is unknown and it serves no reads"),
                None => format!(
                    "no heartbeat row reaches it ({table}): its lag is unknown and it serves no reads (replication filters? a replica of a replica needs log_slave_updates)"
                ),
            }),
        ),
    }
}

/// Writes this node's heartbeat row on the primary every
/// `heartbeat_interval`, only while it holds the lease (heartbeats are
/// writes too, and are fenced like any other).
async fn heartbeat_writer(
    node_id: u64,
    health: Arc<Health>,
    cfg: Arc<ArcSwap<Config>>,
    applied: watch::Receiver<Arc<Applied>>,
    lease: Arc<Lease>,
    gate: Arc<WriteGate>,
) {
    let mut current: Option<(String, u64, Prober)> = None;
    let mut created = false;
    // When the self-fence event was last installed, under which epoch.
    let mut armed_at: Option<(Instant, u64)> = None;
    loop {
        let c = cfg.load_full();
        tokio::time::sleep(c.monitor.heartbeat_interval.get()).await;
        let a = applied.borrow().clone();
        let Some(mut p) = a.topology.primary_backend().cloned() else {
            current = None;
            continue;
        };
        p.addr = c.connect_addr(&p.name, &p.addr).to_string();
        if !lease.valid() {
            continue;
        }
        if current
            .as_ref()
            .is_none_or(|(addr, epoch, _)| addr != &p.addr || *epoch != a.topology.epoch)
        {
            current = Some((
                p.addr.clone(),
                a.topology.epoch,
                Prober::new(
                    &p.addr,
                    &c.monitor.user,
                    &c.monitor.password,
                    c.monitor.timeout.get(),
                ),
            ));
            created = false;
        }
        let Some((_, epoch, prober)) = current.as_mut() else {
            continue;
        };
        let epoch = *epoch;
        let table = c.monitor.heartbeat_table.clone();
        let self_fence = c
            .failover
            .self_fence
            .then(|| c.failover.self_fence_after.get());
        let name = p.name.clone();
        // (Re)installed every 30 s: a restarted server comes back with its
        // event scheduler off, another node may have replaced the event.
        let install_due = self_fence.is_some()
            && armed_at.is_none_or(|(at, e): (Instant, u64)| {
                e != epoch || at.elapsed() >= Duration::from_secs(30)
            });
        let opts = crate::probe::monitor_opts(&p.addr, &c.monitor.user, &c.monitor.password);
        let res = async {
            let conn = prober.conn().await?;
            // Checked again right before anything is written, the CREATEs
            // included (binlogged even when the table exists): the lease
            // may have lapsed while connecting. The guard makes a fence
            // wait for these writes instead of racing them (see
            // `concord_consensus::gate`).
            let Some(_guard) = gate.enter(epoch).filter(|_| lease.valid_for(epoch)) else {
                return Ok::<(bool, Option<bool>), mysql_async::Error>((false, None));
            };
            if !created {
                let schema = table.split('.').next().unwrap_or("concord");
                conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {schema}"))
                    .await?;
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {table} (node INT UNSIGNED NOT NULL PRIMARY KEY, ts BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB"
                ))
                .await?;
            }
            // The switch's install restarts its clock, like a heartbeat:
            // it is fenced like one.
            let mut armed = None;
            if let (Some(after), true) = (self_fence, install_due) {
                armed = Some(match crate::selffence::install(opts, &table, after).await {
                    Ok(()) => true,
                    Err(e) => {
                        // Heartbeats go on; retried at the next round.
                        tracing::warn!(backend = %name, "failover.self_fence: could not install the primary's event: {e}");
                        false
                    }
                });
            }
            conn.exec_drop(
                format!("INSERT INTO {table} (node, ts) VALUES (?, ?) ON DUPLICATE KEY UPDATE ts = VALUES(ts)"),
                (node_id, now_us()),
            )
            .await?;
            if self_fence.is_some() {
                // Fails closed: a DBA lifts it (see `crate::selffence`).
                let fenced = crate::selffence::fired(conn, &table).await.ok().flatten();
                metrics::gauge!("concord_self_fenced", "backend" => name.clone())
                    .set(if fenced.is_some() { 1.0 } else { 0.0 });
                if let Some(at) = fenced {
                    tracing::error!(backend = %name, epoch, "the routed primary fenced itself at {at} UTC (no heartbeat for failover.self_fence_after) and stays read-only until a DBA runs SET GLOBAL read_only = 0 on it");
                }
            }
            Ok((true, armed))
        };
        match tokio::time::timeout(c.monitor.timeout.get(), res).await {
            Ok(Ok((written, armed))) => {
                created = true;
                if written {
                    health
                        .last_beat_us
                        .store(now_us(), std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(ok) = armed {
                    metrics::gauge!("concord_self_fence_armed", "backend" => p.name.clone())
                        .set(if ok { 1.0 } else { 0.0 });
                    armed_at = ok.then_some((Instant::now(), epoch));
                }
            }
            Ok(Err(e)) => {
                tracing::debug!("heartbeat write failed: {e}");
                prober.reset();
            }
            Err(_) => prober.reset(),
        }
    }
}

/// How long ago the probe behind `h` ran.
pub fn age(h: &BackendHealth) -> Duration {
    h.probed_at.map(|t| t.elapsed()).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ReplicaStatus;

    fn replica_probe() -> Probe {
        Probe {
            reachable: true,
            replica: Some(ReplicaStatus {
                io_running: true,
                sql_running: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lag_over_a_bound_needs_recover_after_probes_under_it() {
        let cfg: Config = Config::from_toml(
            "[listener]\naddr = \"127.0.0.1:3306\"\n[[users]]\nname = \"a\"\npassword = \"b\"\n[[backends]]\nname = \"db1\"\naddr = \"127.0.0.1:3307\"\n[monitor]\nrecover_after = 3\n",
        )
        .expect("config");
        let second = Duration::from_secs(1);
        let mut h = BackendHealth::default();
        for lag in [100, 100, 100] {
            h = next_state(h, &replica_probe(), Some(lag), &cfg);
        }
        assert!(h.within(second));
        h = next_state(h, &replica_probe(), Some(1500), &cfg);
        assert!(!h.within(second), "over the bound at once");
        assert!(
            h.within(Duration::from_secs(2)),
            "a looser bound still admits it"
        );
        for _ in 0..2 {
            h = next_state(h, &replica_probe(), Some(100), &cfg);
            assert!(!h.within(second), "not back before 3 probes under it");
        }
        h = next_state(h, &replica_probe(), Some(100), &cfg);
        assert!(h.within(second));
        // Stopped replication is infinite lag, for every bound.
        let mut stopped = replica_probe();
        if let Some(r) = stopped.replica.as_mut() {
            r.sql_running = false;
        }
        h = next_state(h, &stopped, Some(5), &cfg);
        assert!(!h.within(Duration::from_secs(3600)));
        assert_eq!(h.lag_ms, None);
    }

    #[test]
    fn an_unreachable_server_keeps_the_last_position_seen() {
        let cfg: Config = Config::from_toml(
            "[listener]\naddr = \"127.0.0.1:3306\"\n[[users]]\nname = \"a\"\npassword = \"b\"\n[[backends]]\nname = \"db1\"\naddr = \"127.0.0.1:3307\"\n",
        )
        .expect("config");
        let seen = Probe {
            reachable: true,
            gtid_executed: "0-1-42".into(),
            ..Default::default()
        };
        let h = next_state(BackendHealth::default(), &seen, None, &cfg);
        let h = next_state(h, &Probe::default(), None, &cfg);
        assert!(!h.reachable);
        assert_eq!(
            h.gtid, "0-1-42",
            "what a failover reports as not carried over"
        );
    }
}
