//! What changed between two configs, so a reload applies only what can move
//! while sessions run and refuses the rest with a reason.

use crate::Config;

/// One reloadable difference, or one that needs a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Users,
    ListenerTls,
    Routing,
    Monitor,
    Pool,
    Failover,
    LogLevel,
    /// Backends in the file changed; the running topology is owned by Raft,
    /// so these go through `ADD BACKEND` / `SET BACKEND ... WEIGHT`.
    Backends,
    /// A key that only takes effect after a restart.
    NeedsRestart(&'static str),
}

/// Lists the changes from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    if old.users != new.users {
        out.push(Change::Users);
    }
    if old.listener.tls != new.listener.tls || old.listener.require_tls != new.listener.require_tls
    {
        out.push(Change::ListenerTls);
    }
    if old.routing != new.routing {
        out.push(Change::Routing);
    }
    if old.monitor != new.monitor {
        out.push(Change::Monitor);
    }
    if old.pool != new.pool {
        out.push(Change::Pool);
    }
    if old.failover != new.failover {
        out.push(Change::Failover);
    }
    if old.log.level != new.log.level {
        out.push(Change::LogLevel);
    }
    if old.backends != new.backends {
        out.push(Change::Backends);
    }
    let restart = [
        ("node", old.node != new.node),
        ("cluster", old.cluster != new.cluster),
        ("listener.addr", old.listener.addr != new.listener.addr),
        ("admin", old.admin.addr != new.admin.addr),
        ("http", old.http != new.http),
        ("log.format", old.log.format != new.log.format),
    ];
    for (key, changed) in restart {
        if changed {
            out.push(Change::NeedsRestart(key));
        }
    }
    out
}
