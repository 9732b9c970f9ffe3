//! Config reload (`RELOAD CONFIG`, SIGHUP): validate the new file, build
//! everything it needs, then swap. An invalid file changes nothing.
//! Backend weights edited in the file are committed through Raft (the
//! topology belongs to the fleet), so every node applies them.

use crate::shared::Shared;
use crate::users::UserDb;
use concord_config::{diff, Change, Config};
use std::path::Path;
use std::sync::Arc;

/// Reloads the file, then commits the weights it changed.
pub async fn reload(shared: &Arc<Shared>, path: &Path) -> Result<String, String> {
    let (mut msg, weights) = swap(shared, path)?;
    for (name, weight) in weights {
        let out = crate::admin::command::propose(
            shared,
            concord_consensus::Op::SetWeight {
                name: name.clone(),
                weight,
            },
        )
        .await;
        msg.push_str(&match out {
            crate::admin::Output::Ok(m) => format!("; {m}"),
            _ => format!(
                "; weight of '{name}' not committed (is it in the fleet's topology? SHOW BACKENDS)"
            ),
        });
    }
    tracing::info!("config {}: {msg}", path.display());
    Ok(msg)
}

/// Backends whose `weight` the file changed since the running config:
/// only those, so reloading an old file on one node does not undo a
/// `SET BACKEND ... WEIGHT` made since.
fn changed_weights(old: &Config, new: &Config) -> Vec<(String, u32)> {
    new.backends
        .iter()
        .filter(|b| {
            old.backends
                .iter()
                .any(|o| o.name == b.name && o.weight != b.weight)
        })
        .map(|b| (b.name.clone(), b.weight))
        .collect()
}

fn swap(shared: &Arc<Shared>, path: &Path) -> Result<(String, Vec<(String, u32)>), String> {
    let mut new = Config::load(path).map_err(|e| e.to_string())?;
    let old = shared.config.load_full();
    let changes = diff(&old, &new);
    let weights = changed_weights(&old, &new);
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
            Change::Backends => {
                if !weights.is_empty() {
                    applied.push("backend weights");
                }
                // Anything else about the backends (added, removed,
                // addresses) is the fleet's topology, not this file's.
                let mut same_weights = new.backends.clone();
                for b in &mut same_weights {
                    if let Some(o) = old.backends.iter().find(|o| o.name == b.name) {
                        b.weight = o.weight;
                    }
                }
                if same_weights != old.backends {
                    restart.push(
                        "backends (the running topology belongs to the fleet: use ADD/REMOVE BACKEND)"
                            .to_string(),
                    );
                }
            }
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
    // The file's weights become the running config's, so the next reload
    // compares against what was committed.
    let mut backends = old.backends.clone();
    for b in &mut backends {
        if let Some((_, w)) = weights.iter().find(|(n, _)| *n == b.name) {
            b.weight = *w;
        }
    }
    new.backends = backends;
    if changes.contains(&Change::Users) {
        shared
            .users
            .store(Arc::new(UserDb::from_config(&new.users)));
    }
    if let Some(t) = tls {
        shared.tls.store(Arc::new(t));
    }
    shared.digests.configure(&new);
    shared.config.store(Arc::new(new));
    shared
        .config_gen
        .fetch_add(1, std::sync::atomic::Ordering::Release);
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
    Ok((msg, weights))
}
