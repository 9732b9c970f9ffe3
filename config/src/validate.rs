//! Cross-field rules serde cannot express. Each failure names its key.

use crate::{Config, ConfigError};
use std::collections::HashSet;

type R = Result<(), ConfigError>;

/// `host:port` with a non-empty host and a numeric port (hostnames allowed,
/// they are resolved at connect time).
pub(crate) fn check_addr(key: &str, addr: &str) -> R {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(ConfigError::invalid(
            key,
            format!("{addr:?} is not host:port"),
        ));
    };
    if host.is_empty() {
        return Err(ConfigError::invalid(key, format!("{addr:?} has no host")));
    }
    if port.parse::<u16>().is_err() {
        return Err(ConfigError::invalid(
            key,
            format!("{addr:?} has an invalid port {port:?}"),
        ));
    }
    Ok(())
}

/// Whether `addr` (host:port) listens on loopback only.
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_hex(key: &str, value: &str, len: usize) -> R {
    if value.len() != len || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError::invalid(
            key,
            format!("must be {len} hex digits"),
        ));
    }
    Ok(())
}

fn positive(key: &str, d: crate::Duration) -> R {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Config {
    /// Checks every rule; the first violation is returned.
    pub fn validate(&self) -> R {
        self.validate_node()?;
        self.validate_listener()?;
        self.validate_users()?;
        self.validate_backends()?;
        self.validate_monitor()?;
        self.validate_lease()?;
        self.validate_self_fence()?;
        self.validate_rest()
    }

    fn validate_node(&self) -> R {
        if self.node.id == 0 || self.node.id > 255 {
            return Err(ConfigError::invalid(
                "node.id",
                "must be 1 to 255 (session ids carry the node id in their top byte)",
            ));
        }
        if !matches!(self.node.runtime.as_str(), "work-stealing" | "per-core") {
            return Err(ConfigError::invalid(
                "node.runtime",
                "must be \"work-stealing\" or \"per-core\"",
            ));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("node.data_dir", "must not be empty"));
        }
        let c = &self.cluster;
        check_addr("cluster.raft_addr", &c.raft_addr)?;
        if let Some(a) = &c.advertise_addr {
            check_addr("cluster.advertise_addr", a)?;
        }
        for (id, addr) in &c.peers {
            if *id == 0 {
                return Err(ConfigError::invalid("cluster.peers", "node ids start at 1"));
            }
            check_addr(&format!("cluster.peers.{id}"), addr)?;
        }
        if !c.peers.is_empty() {
            match c.peers.get(&self.node.id) {
                None => {
                    return Err(ConfigError::invalid(
                        "cluster.peers",
                        format!("must include this node (node.id = {})", self.node.id),
                    ))
                }
                Some(own) if own != c.advertise() => {
                    return Err(ConfigError::invalid(
                        format!("cluster.peers.{}", self.node.id),
                        format!(
                            "{own:?} differs from this node's address {:?} (cluster.advertise_addr, else cluster.raft_addr)",
                            c.advertise()
                        ),
                    ))
                }
                Some(_) => {}
            }
            if c.join {
                return Err(ConfigError::invalid(
                    "cluster.join",
                    "a joining node takes its peers from the fleet; leave cluster.peers empty",
                ));
            }
            if c.peers.len() > 1 && c.secret.is_empty() {
                return Err(ConfigError::invalid(
                    "cluster.secret",
                    "required when cluster.peers names other nodes",
                ));
            }
        }
        if c.join && c.secret.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.secret",
                "required with cluster.join",
            ));
        }
        positive("cluster.lease_timeout", c.lease_timeout)?;
        positive("cluster.heartbeat_interval", c.heartbeat_interval)?;
        if c.election_timeout.get() < c.heartbeat_interval.get() * 3 {
            return Err(ConfigError::invalid(
                "cluster.election_timeout",
                "must be at least 3x cluster.heartbeat_interval",
            ));
        }
        if c.snapshot_every < 10 {
            return Err(ConfigError::invalid(
                "cluster.snapshot_every",
                "must be at least 10",
            ));
        }
        Ok(())
    }

    fn validate_listener(&self) -> R {
        let l = &self.listener;
        check_addr("listener.addr", &l.addr)?;
        if let Some(tls) = &l.tls {
            for (k, p) in [
                ("listener.tls.cert", &tls.cert),
                ("listener.tls.key", &tls.key),
            ] {
                if !p.is_file() {
                    return Err(ConfigError::invalid(
                        k,
                        format!("file {} does not exist", p.display()),
                    ));
                }
            }
        }
        if l.require_tls && l.tls.is_none() {
            return Err(ConfigError::invalid(
                "listener.require_tls",
                "needs listener.tls (cert and key)",
            ));
        }
        positive("listener.handshake_timeout", l.handshake_timeout)?;
        let map = l.max_allowed_packet.get();
        if !(1024..=(1u64 << 30)).contains(&map) {
            return Err(ConfigError::invalid(
                "listener.max_allowed_packet",
                "must be between 1KiB and 1GiB",
            ));
        }
        if l.max_connections == 0 {
            return Err(ConfigError::invalid(
                "listener.max_connections",
                "must be 1 or more",
            ));
        }
        if l.server_version.is_empty() || l.server_version.contains('\0') {
            return Err(ConfigError::invalid(
                "listener.server_version",
                "must be \"auto\" or a version string",
            ));
        }
        Ok(())
    }

    fn validate_users(&self) -> R {
        if self.users.is_empty() {
            return Err(ConfigError::invalid(
                "users",
                "at least one [[users]] entry is required",
            ));
        }
        let mut seen = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let k = |f: &str| format!("users[{i}].{f}");
            if u.name.is_empty() || u.name.len() > 80 {
                return Err(ConfigError::invalid(
                    k("name"),
                    "must be 1 to 80 characters",
                ));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(ConfigError::invalid(
                    k("name"),
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            if u.password.is_none() && u.password_sha1.is_none() && u.password_sha256.is_none() {
                return Err(ConfigError::invalid(
                    k("password"),
                    "set password, password_sha1 or password_sha256",
                ));
            }
            if let Some(h) = &u.password_sha1 {
                let Some(hex) = h.strip_prefix('*') else {
                    return Err(ConfigError::invalid(
                        k("password_sha1"),
                        "must start with '*' as in mysql.user",
                    ));
                };
                check_hex(&k("password_sha1"), hex, 40)?;
            }
            if let Some(h) = &u.password_sha256 {
                check_hex(&k("password_sha256"), h, 64)?;
            }
            if u.password.is_none() && u.backend_password.is_none() {
                return Err(ConfigError::invalid(
                    k("backend_password"),
                    "needed to log in to backends when only password digests are given",
                ));
            }
            if u.require_tls && self.listener.tls.is_none() {
                return Err(ConfigError::invalid(k("require_tls"), "needs listener.tls"));
            }
        }
        Ok(())
    }

    fn validate_backends(&self) -> R {
        if self.backends.is_empty() {
            return Err(ConfigError::invalid(
                "backends",
                "at least one [[backends]] entry is required",
            ));
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let k = |f: &str| format!("backends[{i}].{f}");
            if b.name.is_empty() || b.name.len() > 64 || b.name.contains('\'') {
                return Err(ConfigError::invalid(
                    k("name"),
                    "must be 1 to 64 characters without quotes",
                ));
            }
            if !names.insert(b.name.as_str()) {
                return Err(ConfigError::invalid(
                    k("name"),
                    format!("backend {:?} is defined twice", b.name),
                ));
            }
            check_addr(&k("addr"), &b.addr)?;
            if let Some(c) = &b.connect_addr {
                check_addr(&k("connect_addr"), c)?;
            }
            if !addrs.insert(b.addr.as_str()) {
                return Err(ConfigError::invalid(
                    k("addr"),
                    format!("address {:?} is used by two backends", b.addr),
                ));
            }
            if b.weight > 1_000_000 {
                return Err(ConfigError::invalid(k("weight"), "must be at most 1000000"));
            }
        }
        let primaries = self
            .backends
            .iter()
            .filter(|b| b.role == Some(crate::Role::Primary))
            .count();
        if primaries > 1 {
            return Err(ConfigError::invalid(
                "backends",
                "more than one backend has role = \"primary\"",
            ));
        }
        Ok(())
    }

    fn validate_monitor(&self) -> R {
        let m = &self.monitor;
        positive("monitor.interval", m.interval)?;
        positive("monitor.timeout", m.timeout)?;
        positive("monitor.heartbeat_interval", m.heartbeat_interval)?;
        if m.failure_threshold == 0 {
            return Err(ConfigError::invalid(
                "monitor.failure_threshold",
                "must be 1 or more",
            ));
        }
        match m.heartbeat_table.split_once('.') {
            Some((s, t)) if is_ident(s) && is_ident(t) => {}
            _ => {
                return Err(ConfigError::invalid(
                    "monitor.heartbeat_table",
                    "must be schema.table (letters, digits, _)",
                ))
            }
        }
        Ok(())
    }

    /// A node cut off from the quorum must stop routing writes before the
    /// rest of the fleet can even declare the primary dead; otherwise a
    /// minority could still write to an old primary after the fence.
    fn validate_lease(&self) -> R {
        let m = &self.monitor;
        let detect = m.interval.get() * m.failure_threshold.saturating_sub(1);
        let lease = self.cluster.lease_timeout.get() + self.failover.lease_drift.get();
        if lease >= detect {
            return Err(ConfigError::invalid(
                "cluster.lease_timeout",
                format!(
                    "lease_timeout + failover.lease_drift ({lease:?}) must be shorter than the fastest failure verdict, \
                     (monitor.failure_threshold - 1) x monitor.interval ({detect:?})"
                ),
            ));
        }
        Ok(())
    }

    /// The primary's event runs once a second and heartbeats come every
    /// `monitor.heartbeat_interval`: a shorter silence would fence a
    /// healthy primary between two heartbeats.
    fn validate_self_fence(&self) -> R {
        let f = &self.failover;
        // Heartbeats stop whenever leases lapse (a Raft election: about a
        // lease and a heartbeat round), which must not fence a healthy
        // primary.
        let m = &self.monitor;
        let floor = (m.heartbeat_interval.get() * 4)
            .max(self.cluster.lease_timeout.get() * 2 + m.timeout.get())
            .max(std::time::Duration::from_secs(1));
        if f.self_fence && f.self_fence_after.get() < floor {
            return Err(ConfigError::invalid(
                "failover.self_fence_after",
                format!(
                    "must be at least 1s, 4 x monitor.heartbeat_interval and 2 x cluster.lease_timeout + monitor.timeout ({floor:?}): heartbeats pause during a Raft election, and the primary's event checks once a second"
                ),
            ));
        }
        Ok(())
    }

    fn validate_rest(&self) -> R {
        if !self.admin.addr.is_empty() {
            check_addr("admin.addr", &self.admin.addr)?;
            if self.admin.user.is_empty() {
                return Err(ConfigError::invalid("admin.user", "must not be empty"));
            }
            // Every mutation of the fleet goes through this port: the
            // built-in password is tolerated on loopback only (ProxySQL's
            // admin/admin on a reachable port is a classic incident).
            if (self.admin.password == super::schema::DEFAULT_ADMIN_PASSWORD
                || self.admin.password.is_empty())
                && !is_loopback(&self.admin.addr)
            {
                return Err(ConfigError::invalid(
                    "admin.password",
                    format!(
                        "the default (or an empty) admin password is only accepted on a loopback admin.addr, not {:?}; set a password",
                        self.admin.addr
                    ),
                ));
            }
        }
        if !self.http.addr.is_empty() {
            check_addr("http.addr", &self.http.addr)?;
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::invalid(
                "log.format",
                "must be \"text\" or \"json\"",
            ));
        }
        positive("pool.connect_timeout", self.pool.connect_timeout)?;
        if self.pool.max_per_backend == 0 {
            return Err(ConfigError::invalid(
                "pool.max_per_backend",
                "must be 1 or more",
            ));
        }
        if self.pool.min_idle > self.pool.max_per_backend {
            return Err(ConfigError::invalid(
                "pool.min_idle",
                "must not exceed pool.max_per_backend",
            ));
        }
        if self.pool.max_prepared_per_connection == 0 {
            return Err(ConfigError::invalid(
                "pool.max_prepared_per_connection",
                "must be 1 or more",
            ));
        }
        positive(
            "failover.write_buffer_timeout",
            self.failover.write_buffer_timeout,
        )?;
        if !(64..=65_536).contains(&self.digests.max_text) {
            return Err(ConfigError::invalid(
                "digests.max_text",
                "must be between 64 and 65536 bytes",
            ));
        }
        if self.digests.prometheus_top > 500 {
            return Err(ConfigError::invalid(
                "digests.prometheus_top",
                "must be 500 or less (each digest is a few series per scrape)",
            ));
        }
        if !(64 * 1024..=1 << 30).contains(&self.digests.max_memory.get()) {
            return Err(ConfigError::invalid(
                "digests.max_memory",
                "must be between 64KiB and 1GiB",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    const MIN: &str = r#"
[listener]
addr = "127.0.0.1:3307"
[[users]]
name = "app"
password = "pw"
[[backends]]
name = "db1"
addr = "127.0.0.1:3306"
"#;

    fn key_of(text: &str) -> String {
        match Config::from_toml(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_file_has_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.node.id, 1);
        assert_eq!(c.monitor.interval.as_millis(), 500);
        assert_eq!(c.routing.max_replica_lag.as_millis(), 1000);
        assert_eq!(c.users[0].backend_credentials(), ("app", "pw"));
    }

    #[test]
    fn errors_name_the_key() {
        let bad_addr = MIN.replace("127.0.0.1:3306", "nowhere");
        assert_eq!(key_of(&bad_addr), "backends[0].addr");
        let dup = format!("{MIN}\n[[backends]]\nname = \"db1\"\naddr = \"127.0.0.1:3308\"\n");
        assert_eq!(key_of(&dup), "backends[1].name");
        let no_pw = MIN.replace("password = \"pw\"", "");
        assert_eq!(key_of(&no_pw), "users[0].password");
        let peers = format!("{MIN}\n[cluster]\npeers = {{ 2 = \"127.0.0.1:7002\" }}\n");
        assert_eq!(key_of(&peers), "cluster.peers");
    }

    #[test]
    fn a_self_fence_shorter_than_the_event_can_see_is_refused() {
        let ok = format!("{MIN}\n[failover]\nself_fence = true\n");
        assert!(Config::from_toml(&ok).is_ok());
        let short = format!("{MIN}\n[failover]\nself_fence = true\nself_fence_after = \"500ms\"\n");
        assert_eq!(key_of(&short), "failover.self_fence_after");
        // Off, the value is not checked.
        let off = format!("{MIN}\n[failover]\nself_fence_after = \"500ms\"\n");
        assert!(Config::from_toml(&off).is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        let unknown = format!("{MIN}\n[monitor]\nintervl = \"1s\"\n");
        let e = Config::from_toml(&unknown).unwrap_err().to_string();
        assert!(e.contains("intervl"), "{e}");
        let bad = format!("{MIN}\n[monitor]\ninterval = \"soon\"\n");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("interval") && e.contains("soon"), "{e}");
    }

    #[test]
    fn the_default_admin_password_stays_on_loopback() {
        for ok in ["127.0.0.1:6033", "localhost:6033", "[::1]:6033"] {
            let t = format!("{MIN}\n[admin]\naddr = \"{ok}\"\n");
            assert!(Config::from_toml(&t).is_ok(), "{ok}");
        }
        let open = format!("{MIN}\n[admin]\naddr = \"0.0.0.0:6033\"\n");
        let e = Config::from_toml(&open).unwrap_err().to_string();
        assert!(e.contains("admin.password"), "{e}");
        let empty = format!("{MIN}\n[admin]\naddr = \"0.0.0.0:6033\"\npassword = \"\"\n");
        let e = Config::from_toml(&empty).unwrap_err().to_string();
        assert!(e.contains("admin.password"), "{e}");
        let set = format!("{MIN}\n[admin]\naddr = \"0.0.0.0:6033\"\npassword = \"long-secret\"\n");
        assert!(Config::from_toml(&set).is_ok());
    }
}
