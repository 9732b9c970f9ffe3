//! Wires a node together from its config: users, TLS, pools, routing,
//! listeners and background upkeep; then waits for a signal.

use crate::backend::{BackendPool, PoolSettings};
use crate::routing::Routing;
use crate::shared::Shared;
use crate::users::UserDb;
use concord_config::{Config, Role};
use std::collections::BTreeMap;
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
}

fn pool_settings(c: &Config) -> PoolSettings {
    PoolSettings {
        min_idle: c.pool.min_idle,
        max: c.pool.max_per_backend,
        connect_timeout: c.pool.connect_timeout.get(),
        max_idle_time: c.pool.max_idle_time.get(),
        acquire_timeout: c.pool.acquire_timeout.get(),
    }
}

/// The routing a node starts with before the fleet says otherwise: the
/// backend marked `role = "primary"`, or the only backend.
fn initial_routing(c: &Config) -> Routing {
    let pools: BTreeMap<Arc<str>, Arc<BackendPool>> = c
        .backends
        .iter()
        .map(|b| {
            (
                Arc::from(b.name.as_str()),
                BackendPool::new(&b.name, &b.addr, pool_settings(c)),
            )
        })
        .collect();
    let primary_name = c
        .backends
        .iter()
        .find(|b| b.role == Some(Role::Primary))
        .or(if c.backends.len() == 1 {
            c.backends.first()
        } else {
            None
        })
        .map(|b| b.name.clone());
    let primary = primary_name.as_deref().and_then(|n| pools.get(n).cloned());
    Routing {
        epoch: 1,
        primary,
        pools,
        no_primary_reason: "no backend has role = \"primary\"".into(),
    }
}

async fn bind(key: &'static str, addr: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|e| NodeError::Bind {
        key,
        addr: addr.to_string(),
        source: e,
    })
}

pub async fn run(config: Config, _path: PathBuf) -> Result<(), NodeError> {
    let tls = match &config.listener.tls {
        Some(t) => Some(crate::tls::acceptor(t, "listener.tls").map_err(NodeError::Setup)?),
        None => None,
    };
    let users = UserDb::from_config(&config.users);
    let routing = initial_routing(&config);
    let listen_addr = config.listener.addr.clone();
    let shared = Arc::new(Shared::new(config, users, tls, routing));

    let listener = bind("listener.addr", &listen_addr).await?;
    tracing::info!(node = shared.node_id, addr = %listen_addr, "concord listening for MySQL clients");
    tokio::spawn(crate::server::serve_clients(shared.clone(), listener));
    tokio::spawn(upkeep(shared.clone()));

    wait_for_shutdown().await;
    tracing::info!("shutting down");
    shared.shutting_down.store(true, Ordering::Release);
    for s in shared.sessions.list() {
        s.kill("the concord node is shutting down");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.sessions.count.load(Ordering::Acquire) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Once a second: pool upkeep and idle-session timeouts.
async fn upkeep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pools: Vec<_> = shared.routing.load().pools.values().cloned().collect();
        for p in pools {
            p.maintain().await;
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

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
