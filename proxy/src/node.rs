//! Wires a node together from its config: listeners first (so a taken
//! port fails fast with the key named), then the Raft fleet, the routing
//! snapshot that follows the applied topology, leader duties, and upkeep.

use crate::routing;
use crate::shared::Shared;
use crate::users::UserDb;
use concord_config::Config;
use concord_consensus::Consensus;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Consensus(#[from] concord_consensus::ConsensusError),
}

async fn bind(key: &'static str, addr: &str) -> Result<Option<TcpListener>, NodeError> {
    if addr.is_empty() {
        return Ok(None);
    }
    crate::server::bind_listener(addr, false)
        .and_then(TcpListener::from_std)
        .map(Some)
        .map_err(|e| NodeError::Bind {
            key,
            addr: addr.to_string(),
            source: e,
        })
}

/// Raises the open-file limit to the hard limit (as HAProxy and nginx do):
/// each client costs one descriptor and its backend connections more, and a
/// distribution's default soft limit of 1024 would cap a node far below
/// `listener.max_connections`.
fn raise_fd_limit(config: &Config) {
    let want = u64::from(config.listener.max_connections) * 2 + 1024;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < want => tracing::warn!(
            "open-file limit is {got}; listener.max_connections = {} needs about {want} (a client and a backend connection each): raise LimitNOFILE / ulimit -n",
            config.listener.max_connections
        ),
        Ok(got) => tracing::debug!("open-file limit {got}"),
        Err(e) => tracing::warn!("cannot read or raise the open-file limit: {e}"),
    }
}

pub async fn run(config: Config, path: PathBuf) -> Result<(), NodeError> {
    let tls = match &config.listener.tls {
        Some(t) => Some(crate::tls::acceptor(t, "listener.tls").map_err(NodeError::Setup)?),
        None => None,
    };
    let users = UserDb::from_config(&config.users);
    let client_listener = bind("listener.addr", &config.listener.addr).await?;
    let admin_listener = bind("admin.addr", &config.admin.addr).await?;
    let http_listener = bind("http.addr", &config.http.addr).await?;

    raise_fd_limit(&config);
    crate::metrics::install().map_err(NodeError::Setup)?;
    let consensus = Consensus::start(&config).await?;
    let shared = Arc::new(Shared::new(config, users, tls, consensus));
    follow_topology(shared.clone());
    crate::duties::register_workflows(&shared);
    register_app_requests(&shared);
    tokio::spawn(learn_server_version(shared.clone()));
    tokio::spawn(crate::duties::leader_duties(shared.clone()));
    tokio::spawn(crate::duties::report_loop(shared.clone()));

    let cfg = shared.config.load_full();
    if let Some(l) = client_listener {
        tracing::info!(node = shared.node_id, addr = %cfg.listener.addr, runtime = %cfg.node.runtime, "listening for MySQL clients");
        if cfg.node.runtime == "per-core" {
            drop(l);
            start_per_core(&shared, &cfg)?;
        } else {
            tokio::spawn(crate::server::serve_clients(shared.clone(), l));
        }
    }
    if let Some(l) = admin_listener {
        tracing::info!(addr = %cfg.admin.addr, "admin port listening");
        tokio::spawn(crate::admin::serve(shared.clone(), l, path.clone()));
    }
    if let Some(l) = http_listener {
        tracing::info!(addr = %cfg.http.addr, "HTTP listening (/healthz, /readyz, /metrics, /api/v1)");
        tokio::spawn(crate::http::serve(shared.clone(), l));
    }
    tokio::spawn(upkeep(shared.clone()));
    tokio::spawn(stop_watch(shared.clone()));
    tokio::spawn(reload_on_sighup(shared.clone(), path));

    wait_for_shutdown().await;
    let grace = shared.config.load().listener.shutdown_timeout.get();
    tracing::info!(
        "shutting down: no new clients, /readyz says no; transactions get {grace:?} to finish"
    );
    shared.shutting_down.store(true, Ordering::Release);
    // Idle sessions and sessions between transactions close now; the
    // others at the end of their transaction.
    shared.sessions.nudge_all();
    let deadline = tokio::time::Instant::now() + grace;
    while shared.sessions.count.load(Ordering::Acquire) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in shared.sessions.list() {
        s.kill("the concord node shut down (listener.shutdown_timeout passed)");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    shared.consensus.shutdown().await;
    Ok(())
}

/// Rebuilds the routing snapshot whenever Raft applies entries or a
/// probe changes what this node knows about a backend, and runs the
/// probes themselves.
fn follow_topology(shared: Arc<Shared>) {
    tokio::spawn(concord_health::monitor::run(
        shared.node_id,
        shared.config.clone(),
        shared.consensus.applied(),
        shared.health.clone(),
        shared.lease.clone(),
        shared.consensus.gate(),
    ));
    let mut rx = shared.consensus.applied();
    let first = rx.borrow_and_update().clone();
    let r = routing::rebuild(
        &shared.routing.load(),
        &first,
        &shared.health.view.load_full(),
        &shared.config.load(),
    );
    shared.routing.store(Arc::new(r));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = shared.health.changed.notified() => {}
            }
            let applied = rx.borrow_and_update().clone();
            let old = shared.routing.load_full();
            let new = routing::rebuild(
                &old,
                &applied,
                &shared.health.view.load_full(),
                &shared.config.load(),
            );
            let name = |r: &routing::Routing| r.primary.as_ref().map(|p| p.name.clone());
            if new.epoch != old.epoch || name(&new) != name(&old) {
                tracing::info!(
                    epoch = new.epoch,
                    primary = name(&new).map(|n| n.to_string()).unwrap_or_default(),
                    index = applied.index,
                    "routing follows the applied topology"
                );
            }
            let offered = |r: &routing::Routing| -> Vec<Arc<str>> {
                r.replicas.iter().map(|x| x.pool.name.clone()).collect()
            };
            let nudge = offered(&old) != offered(&new);
            shared.routing.store(Arc::new(new));
            shared.notify_route_changed();
            // A replica left the rotation (drain, maintenance, weight 0,
            // fence): idle sessions holding a connection to it let go now,
            // not at their next statement, so a drain can finish.
            if nudge {
                shared.sessions.nudge_all();
            }
        }
    });
}

/// Answers other nodes' requests: a KILL of a session held here, this
/// node's digests for the fleet view, or renewing a pool after SET GLOBAL.
fn register_app_requests(shared: &Arc<Shared>) {
    let rt = tokio::runtime::Handle::current();
    let s = shared.clone();
    shared
        .consensus
        .set_app_handler(Arc::new(move |v: serde_json::Value| {
            let s = s.clone();
            let rt = rt.clone();
            Box::pin(async move {
                match rt
                    .spawn(async move {
                        if v.get("digests").is_some() {
                            crate::admin::fleet_digests::answer(&s, &v)
                        } else if v.get("retire").is_some() {
                            crate::retire::answer(&s, &v)
                        } else {
                            crate::session::kill::answer_remote(&s, v).await
                        }
                    })
                    .await
                {
                    Ok(r) => Ok(r),
                    Err(e) => Err(format!("request task failed: {e}")),
                }
            })
        }));
}

/// With `listener.server_version = "auto"`: logs in to a backend (the
/// primary first) with the monitor account once at start, so the first
/// greetings already carry the backends' own version string (drivers
/// choose MySQL or MariaDB code paths from it). Sessions keep it current
/// as they log in to backends.
async fn learn_server_version(shared: Arc<Shared>) {
    use crate::backend::login::Credentials;
    loop {
        if shared.knows_server_version() {
            return;
        }
        let cfg = shared.config.load_full();
        if cfg.listener.server_version != "auto" {
            return;
        }
        let pools: Vec<_> = {
            let r = shared.routing.load();
            r.primary
                .iter()
                .cloned()
                .chain(r.pools.values().cloned())
                .collect()
        };
        for pool in pools {
            let creds = Credentials {
                user: &cfg.monitor.user,
                password: &cfg.monitor.password,
                database: None,
                collation: concord_protocol::consts::DEFAULT_COLLATION,
                flavor: 0,
            };
            match crate::backend::BackendConn::connect(
                &pool.addr,
                &creds,
                cfg.monitor.timeout.get(),
            )
            .await
            {
                Ok(c) => {
                    shared.learn_server_version(&c.server_version);
                    c.quit().await;
                    return;
                }
                Err(e) => tracing::debug!(backend = %pool.name, "version probe: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Client sessions on one single-threaded runtime per thread, each with
/// its own SO_REUSEPORT listener, so a session's wake-ups stay on its
/// thread.
fn start_per_core(shared: &Arc<Shared>, cfg: &Config) -> Result<(), NodeError> {
    let threads = if cfg.node.worker_threads > 0 {
        cfg.node.worker_threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    for i in 0..threads {
        let std_listener = crate::server::bind_listener(&cfg.listener.addr, true).map_err(|e| {
            NodeError::Bind {
                key: "listener.addr",
                addr: cfg.listener.addr.clone(),
                source: e,
            }
        })?;
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("concord-sessions-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("session thread {i}: cannot start a runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(l) => crate::server::serve_clients(shared, l).await,
                        Err(e) => tracing::error!("session thread {i}: {e}"),
                    }
                });
            })
            .map_err(|e| NodeError::Setup(format!("cannot start session thread {i}: {e}")))?;
    }
    Ok(())
}

/// Once a second: pool upkeep, idle-session timeouts, metrics upkeep.
async fn upkeep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pools: Vec<_> = shared.routing.load().pools.values().cloned().collect();
        let threshold = shared.config.load().monitor.failure_threshold;
        let mut any_down = false;
        for p in pools {
            p.stats.tick();
            let failing = shared
                .health
                .get(&p.name)
                .is_some_and(|h| h.failures >= threshold);
            any_down |= p.set_down(failing);
            p.maintain_in_background();
        }
        // The Prometheus recorder keeps each histogram sample until it is
        // folded into buckets; with nobody scraping `/metrics` that would
        // grow with every query (16 bytes each, measured).
        if !concord_config::testhooks::on("no-metrics-upkeep") {
            crate::metrics::upkeep();
        }
        // Sessions stuck on a backend that went down check their stall
        // (`relay::Stall`) when nudged; the nudge is their own Notify, so
        // the hot path never registers on anything shared.
        if any_down {
            shared.sessions.nudge_all();
        }
        let idle = shared.config.load().listener.idle_timeout.get();
        if !idle.is_zero() {
            for s in shared.sessions.list() {
                if s.idle_for() > idle {
                    s.kill(&format!(
                        "idle for more than {idle:?} (listener.idle_timeout)"
                    ));
                }
            }
        }
    }
}

async fn reload_on_sighup(shared: Arc<Shared>, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        if let Err(e) = crate::reload::reload(&shared, &path).await {
            tracing::error!("SIGHUP reload refused, the running config stays: {e}");
        }
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Wakes the sessions when statements sent to a primary must stop on
/// their server: a fence confirmation asked for it
/// (`WriteGate::stop_older`), or this node's lease lapsed with statements
/// in flight (a failover elsewhere promotes once every lease that could
/// name the old epoch has run out, plus `failover.lease_drift`: the kill
/// has that long to land). Each session checks its own route
/// (`relay::Stall`); the others go back to sleep.
async fn stop_watch(shared: Arc<Shared>) {
    // Both the newest epoch's lease and the one before it: a fence moves
    // the lease to the new epoch at once, and the old one's deadline
    // then runs out with statements of that epoch perhaps still running.
    let valid = |l: &concord_consensus::Lease| (l.valid(), l.prev_valid());
    let mut was = valid(&shared.lease);
    let mut mark = shared.gate.stop_mark();
    loop {
        let stopping = shared.gate.stopping.notified();
        tokio::select! {
            _ = stopping => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let now = valid(&shared.lease);
        let lapsed = (was.0 && !now.0) || (was.1 && !now.1);
        was = now;
        let m = shared.gate.stop_mark();
        let asked = m != mark;
        mark = m;
        if (lapsed || asked) && shared.gate.inflight() > 0 {
            shared.sessions.nudge_all();
        }
    }
}
