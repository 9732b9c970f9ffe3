//! Replication preflight: the server settings a failover's promises rest
//! on, checked on every backend (every `REFRESH` probes) and before each
//! promotion, with what each missing one costs. Findings appear in `SHOW
//! BACKENDS` (`preflight`), `/readyz` detail and the log; they never block
//! routing (a DBA may have reasons), they say what is at risk.

use crate::probe::Flavor;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use std::time::Duration;

/// A replica that takes writes: reads are routed to it, and a read that
/// writes (a stored function, ...) would commit there.
pub const WRITABLE_REPLICA: &str = "read_only is OFF on a replica: a read that writes (a stored function that inserts, ...) routed here commits on the replica, an errant transaction that a failover or REJOIN then trips on (SET GLOBAL read_only = 1)";

/// How often the settings are read again (they rarely change).
pub const REFRESH: Duration = Duration::from_secs(10);

/// The settings read from one server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub log_bin: bool,
    pub log_replica_updates: bool,
    /// MariaDB only (`None` on MySQL).
    pub gtid_strict_mode: Option<bool>,
    pub binlog_format: String,
    pub sync_binlog: u64,
    pub flush_at_commit: u64,
    /// Semi-sync on the source side: enabled, wait point, active now.
    pub semi_sync: Option<(bool, String, bool)>,
}

/// Reads the settings (one round trip for the variables, one for the
/// semi-sync plugin's, if loaded).
pub async fn read(c: &mut Conn, flavor: Flavor) -> Result<Settings, mysql_async::Error> {
    let (replica_updates, strict) = match flavor {
        Flavor::MariaDb => ("@@log_slave_updates", "@@gtid_strict_mode"),
        Flavor::MySql => ("@@log_replica_updates", "NULL"),
    };
    let row: Option<Row> = c
        .query_first(format!(
            "SELECT @@log_bin, {replica_updates}, {strict}, @@binlog_format, @@sync_binlog, @@innodb_flush_log_at_trx_commit"
        ))
        .await?;
    let Some(row) = row else {
        return Ok(Settings::default());
    };
    let num = |i: usize| -> u64 {
        row.get_opt::<Option<u64>, _>(i)
            .and_then(|r| r.ok())
            .flatten()
            .unwrap_or(0)
    };
    let mut s = Settings {
        log_bin: num(0) != 0,
        log_replica_updates: num(1) != 0,
        gtid_strict_mode: (flavor == Flavor::MariaDb).then(|| num(2) != 0),
        binlog_format: row
            .get_opt::<Option<String>, _>(3)
            .and_then(|r| r.ok())
            .flatten()
            .unwrap_or_default(),
        sync_binlog: num(4),
        flush_at_commit: num(5),
        semi_sync: None,
    };
    let vars: Vec<(String, String)> = c
        .query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('rpl_semi_sync_master_enabled', 'rpl_semi_sync_source_enabled', 'rpl_semi_sync_master_wait_point', 'rpl_semi_sync_source_wait_point')")
        .await
        .unwrap_or_default();
    let get = |name: &str| {
        vars.iter()
            .find(|(n, _)| n.ends_with(name))
            .map(|(_, v)| v.clone())
    };
    if let Some(enabled) = get("_enabled") {
        let status: Vec<(String, String)> = c
            .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_source_status')")
            .await
            .unwrap_or_default();
        s.semi_sync = Some((
            enabled.eq_ignore_ascii_case("ON"),
            get("_wait_point").unwrap_or_default(),
            status
                .first()
                .is_some_and(|(_, v)| v.eq_ignore_ascii_case("ON")),
        ));
    }
    Ok(s)
}

/// What is at risk on a server with these settings. `replica`: it
/// replicates (so it may be promoted); `heartbeat`: its replication
/// heartbeat period.
pub fn findings(s: &Settings, replica: bool, heartbeat: Option<f64>) -> Vec<String> {
    let mut out = Vec::new();
    if !s.log_bin {
        out.push("log_bin is OFF: promoted, no replica could follow it".to_string());
    }
    if replica && s.log_bin && !s.log_replica_updates {
        out.push("log_slave_updates is OFF: promoted, its binlog lacks what it replicated (REJOIN and chained replicas need it)".to_string());
    }
    if s.gtid_strict_mode == Some(false) {
        out.push(
            "gtid_strict_mode is OFF: an errant or out-of-order transaction goes unnoticed"
                .to_string(),
        );
    }
    if !s.binlog_format.is_empty() && !s.binlog_format.eq_ignore_ascii_case("ROW") {
        out.push(format!(
            "binlog_format is {}: only ROW replays exactly on a promoted replica",
            s.binlog_format
        ));
    }
    if s.log_bin && s.sync_binlog != 1 {
        out.push(format!(
            "sync_binlog is {}: a crash can lose committed transactions from the binlog (replicas and a failover never see them)",
            s.sync_binlog
        ));
    }
    if s.flush_at_commit != 1 {
        out.push(format!(
            "innodb_flush_log_at_trx_commit is {}: a crash can lose acknowledged commits",
            s.flush_at_commit
        ));
    }
    if let Some((enabled, wait_point, active)) = &s.semi_sync {
        if *enabled && !wait_point.eq_ignore_ascii_case("AFTER_SYNC") {
            out.push(format!(
                "semi-sync wait point is {wait_point}: clients can read a commit no replica has (AFTER_SYNC closes that)"
            ));
        }
        if *enabled && !*active {
            out.push("semi-sync is enabled but not active: it fell back to asynchronous replication (rpl_semi_sync_master_timeout); a failover now can lose acknowledged writes".to_string());
        }
    }
    if let Some(p) = heartbeat.filter(|p| *p > 5.0) {
        out.push(format!(
            "replication heartbeat period is {p:.0}s: a silent primary is noticed only after about {:.0}s (lower MASTER_HEARTBEAT_PERIOD; concord sets it on the replicas it repoints)",
            p * 2.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_setting_says_what_it_costs() {
        let good = Settings {
            log_bin: true,
            log_replica_updates: true,
            gtid_strict_mode: Some(true),
            binlog_format: "ROW".into(),
            sync_binlog: 1,
            flush_at_commit: 1,
            semi_sync: Some((true, "AFTER_SYNC".into(), true)),
        };
        assert!(findings(&good, true, Some(1.0)).is_empty());
        let bad = Settings {
            log_bin: true,
            log_replica_updates: false,
            gtid_strict_mode: Some(false),
            binlog_format: "MIXED".into(),
            sync_binlog: 0,
            flush_at_commit: 2,
            semi_sync: Some((true, "AFTER_COMMIT".into(), false)),
        };
        let f = findings(&bad, true, Some(30.0));
        for want in [
            "log_slave_updates",
            "gtid_strict_mode",
            "binlog_format is MIXED",
            "sync_binlog is 0",
            "innodb_flush_log_at_trx_commit is 2",
            "AFTER_COMMIT",
            "not active",
            "heartbeat period is 30s",
        ] {
            assert!(f.iter().any(|x| x.contains(want)), "{want}: {f:#?}");
        }
    }
}
