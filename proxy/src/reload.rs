//! Config reload (`RELOAD CONFIG`, SIGHUP): validate the new file, build
//! everything it needs, then swap. An invalid file changes nothing.

use crate::shared::Shared;
use crate::users::UserDb;
use concord_config::{diff, Change, Config};
use std::path::Path;
use std::sync::Arc;

pub fn reload(shared: &Arc<Shared>, path: &Path) -> Result<String, String> {
    let mut new = Config::load(path).map_err(|e| e.to_string())?;
    let old = shared.config.load_full();
    let changes = diff(&old, &new);
    // Build fallible pieces before swapping anything.
    // Certificates are re-read on every reload, changed paths or not:
    // rotation usually replaces the files in place.
    let tls = match &new.listener.tls {
        Some(t) => Some(Some(crate::tls::acceptor(t, "listener.tls")?)),
        None if changes.contains(&Change::ListenerTls) => Some(None),
        None => None,
    };
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    for c in &changes {
        match c {
            Change::Users => applied.push("users"),
            Change::ListenerTls => applied.push("listener TLS"),
            Change::Routing => applied.push("routing"),
            Change::Monitor => applied.push("monitor"),
            Change::Pool => applied.push("pool"),
            Change::Failover => applied.push("failover"),
            Change::LogLevel => restart.push("log.level".to_string()),
            Change::Backends => restart.push(
                "backends (the running topology belongs to the fleet: use ADD/REMOVE BACKEND, SET BACKEND ... WEIGHT)"
                    .to_string(),
            ),
            Change::NeedsRestart(k) => restart.push((*k).to_string()),
        }
    }
    if new.listener.tls.is_some() && !changes.contains(&Change::ListenerTls) {
        applied.push("listener TLS certificate (re-read)");
    }
    // Keys that only take effect at start keep their running values, so
    // the running config always describes what the node is doing.
    new.node = old.node.clone();
    new.cluster = old.cluster.clone();
    new.listener.addr = old.listener.addr.clone();
    new.admin.addr = old.admin.addr.clone();
    new.http = old.http.clone();
    new.log = old.log.clone();
    new.backends = old.backends.clone();
    if changes.contains(&Change::Users) {
        shared
            .users
            .store(Arc::new(UserDb::from_config(&new.users)));
    }
    if let Some(t) = tls {
        shared.tls.store(Arc::new(t));
    }
    shared.config.store(Arc::new(new));
    let msg = format!(
        "reloaded {}{}",
        if applied.is_empty() {
            "nothing (no changes)".to_string()
        } else {
            applied.join(", ")
        },
        if restart.is_empty() {
            String::new()
        } else {
            format!("; unchanged until restart: {}", restart.join(", "))
        }
    );
    tracing::info!("config {}: {msg}", path.display());
    Ok(msg)
}
