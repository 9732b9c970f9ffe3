//! One probe of one backend over a persistent monitor connection:
//! reachability, `read_only`, replication threads and lag, GTID positions,
//! in both dialects (MariaDB `SHOW SLAVE STATUS`, MySQL 8.4
//! `SHOW REPLICA STATUS`).

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// The flavor a server's version string (greeting or `@@version`) names.
    pub fn of_version(version: &[u8]) -> Flavor {
        if version.windows(7).any(|w| w == b"MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

/// Replication as the replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub io_running: bool,
    /// IO thread state "Connecting" (it lost its source).
    pub io_connecting: bool,
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; `None` when replication is broken.
    pub seconds_behind: Option<u64>,
    pub source_host: String,
    pub source_port: u16,
    pub last_error: String,
    /// GTIDs received (MariaDB `Gtid_IO_Pos`, MySQL `Retrieved_Gtid_Set`).
    pub gtid_io_pos: String,
    /// Heartbeats received from the source so far (MariaDB
    /// `Slave_received_heartbeats`): it grows while the link is alive even
    /// when the primary writes nothing.
    pub received_heartbeats: Option<u64>,
    /// `Slave_heartbeat_period` in seconds (MariaDB).
    pub heartbeat_period: Option<f64>,
    /// `SQL_Delay`: seconds the applier holds each event back
    /// (`MASTER_DELAY`, a delayed replica kept for recovery).
    #[serde(default)]
    pub sql_delay: u64,
}

/// The result of one probe.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Probe {
    pub reachable: bool,
    pub error: Option<String>,
    pub read_only: bool,
    pub server_id: u64,
    pub version: String,
    pub flavor: Option<Flavor>,
    /// Set when the server is configured as a replica.
    pub replica: Option<ReplicaStatus>,
    /// Everything applied (MariaDB `gtid_current_pos`, MySQL `gtid_executed`).
    pub gtid_executed: String,
    /// MariaDB `gtid_binlog_pos` (what this server wrote to its binlog).
    pub gtid_binlog: String,
    /// What its replication settings put at risk (see `preflight`).
    #[serde(default)]
    pub preflight: Vec<String>,
    pub took_ms: u64,
}

impl Probe {
    /// Writable and not replicating from anyone: a primary candidate.
    pub fn looks_primary(&self) -> bool {
        self.reachable && !self.read_only && self.replica.is_none()
    }

    /// Replication threads both running.
    pub fn replicating(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| r.io_running && r.sql_running)
    }
}

/// A persistent monitor connection to one backend.
pub struct Prober {
    addr: String,
    opts: Opts,
    conn: Option<Conn>,
    flavor: Option<Flavor>,
    timeout: Duration,
    /// Replication settings and when they were read (see `preflight`).
    settings: Option<(Instant, crate::preflight::Settings)>,
}

pub fn monitor_opts(addr: &str, user: &str, password: &str) -> Opts {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "3306"));
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse().unwrap_or(3306))
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        // The heartbeat and failover statements are few and fixed: cache
        // them. With a cache of 0, mysql_async 0.37 leaves every executed
        // statement open on the server; at 4 heartbeats a second that
        // reaches max_prepared_stmt_count (16 382) in about an hour and
        // every client's PREPARE on the primary fails.
        .stmt_cache_size(16)
        .into()
}

impl Prober {
    pub fn new(addr: &str, user: &str, password: &str, timeout: Duration) -> Self {
        Prober {
            addr: addr.to_string(),
            opts: monitor_opts(addr, user, password),
            conn: None,
            flavor: None,
            timeout,
            settings: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A connection for failover steps (kept open between probes).
    pub async fn conn(&mut self) -> Result<&mut Conn, mysql_async::Error> {
        if self.conn.is_none() {
            let c = tokio::time::timeout(self.timeout, Conn::new(self.opts.clone()))
                .await
                .map_err(|_| {
                    mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect to {} timed out", self.addr),
                    )))
                })??;
            self.conn = Some(c);
        }
        self.conn.as_mut().ok_or(mysql_async::Error::Driver(
            mysql_async::DriverError::ConnectionClosed,
        ))
    }

    /// What this server wrote to its binlog (MariaDB `gtid_binlog_pos`,
    /// MySQL `gtid_executed`), normalized: on a primary, a position
    /// covering every write it acknowledged before the query ran.
    pub async fn gtid_position(&mut self) -> Result<String, mysql_async::Error> {
        let known = self.flavor;
        let conn = self.conn().await?;
        let flavor = match known {
            Some(f) => f,
            None => {
                let v: Option<String> = conn.query_first("SELECT @@version").await?;
                Flavor::of_version(v.unwrap_or_default().as_bytes())
            }
        };
        let sql = match flavor {
            Flavor::MariaDb => "SELECT @@global.gtid_binlog_pos",
            Flavor::MySql => "SELECT @@global.gtid_executed",
        };
        let pos: Option<String> = conn.query_first(sql).await?;
        self.flavor = Some(flavor);
        Ok(normalize_gtids(&pos.unwrap_or_default()))
    }

    /// Drops the connection (after an error, or when told the backend died).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    pub async fn probe(&mut self) -> Probe {
        let t0 = Instant::now();
        let r = tokio::time::timeout(self.timeout, self.probe_inner()).await;
        let mut p = match r {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                self.reset();
                Probe {
                    error: Some(e.to_string()),
                    ..Default::default()
                }
            }
            Err(_) => {
                self.reset();
                Probe {
                    error: Some(format!("probe timed out after {:?}", self.timeout)),
                    ..Default::default()
                }
            }
        };
        p.took_ms = t0.elapsed().as_millis() as u64;
        p
    }

    async fn probe_inner(&mut self) -> Result<Probe, mysql_async::Error> {
        let flavor_known = self.flavor;
        let stale = self
            .settings
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= crate::preflight::REFRESH);
        let mut fresh = None;
        let conn = self.conn().await?;
        let row: Option<(String, u64, u64)> = conn
            .query_first("SELECT @@version, @@read_only, @@server_id")
            .await?;
        let (version, read_only, server_id) = row.unwrap_or_default();
        let flavor = flavor_known.unwrap_or(Flavor::of_version(version.as_bytes()));
        let (status_sql, gtid_sql) = match flavor {
            Flavor::MariaDb => (
                "SHOW SLAVE STATUS",
                "SELECT @@gtid_current_pos, @@gtid_binlog_pos",
            ),
            Flavor::MySql => (
                "SHOW REPLICA STATUS",
                "SELECT @@gtid_executed, @@gtid_executed",
            ),
        };
        let rows: Vec<Row> = conn.query(status_sql).await?;
        let replica = rows.first().map(|r| replica_status(r, flavor));
        let gtids: Option<(String, String)> = conn.query_first(gtid_sql).await?;
        let (gtid_executed, gtid_binlog) = gtids.unwrap_or_default();
        if stale {
            if let Ok(s) = crate::preflight::read(conn, flavor).await {
                fresh = Some(s);
            }
        }
        if let Some(s) = fresh {
            self.settings = Some((Instant::now(), s));
        }
        let mut preflight = self
            .settings
            .as_ref()
            .map(|(_, s)| {
                crate::preflight::findings(
                    s,
                    replica.is_some(),
                    replica.as_ref().and_then(|r| r.heartbeat_period),
                )
            })
            .unwrap_or_default();
        if replica.is_some() && read_only == 0 {
            preflight.push(crate::preflight::WRITABLE_REPLICA.to_string());
        }
        self.flavor = Some(flavor);
        Ok(Probe {
            reachable: true,
            error: None,
            read_only: read_only != 0,
            server_id,
            version,
            flavor: Some(flavor),
            replica,
            gtid_executed: normalize_gtids(&gtid_executed),
            gtid_binlog: normalize_gtids(&gtid_binlog),
            preflight,
            took_ms: 0,
        })
    }
}

fn col(r: &Row, names: &[&str]) -> Option<String> {
    for n in names {
        if let Some(Ok(v)) = r.get_opt::<Option<String>, _>(*n) {
            return v;
        }
    }
    None
}

fn replica_status(r: &Row, flavor: Flavor) -> ReplicaStatus {
    let (io, sql, behind, host, port, err_io, err_sql, gtid) = match flavor {
        Flavor::MariaDb => (
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Seconds_Behind_Master",
            "Master_Host",
            "Master_Port",
            "Last_IO_Error",
            "Last_SQL_Error",
            "Gtid_IO_Pos",
        ),
        Flavor::MySql => (
            "Replica_IO_Running",
            "Replica_SQL_Running",
            "Seconds_Behind_Source",
            "Source_Host",
            "Source_Port",
            "Last_IO_Error",
            "Last_SQL_Error",
            "Retrieved_Gtid_Set",
        ),
    };
    let io_state = col(r, &[io]).unwrap_or_default();
    let e1 = col(r, &[err_io]).unwrap_or_default();
    let e2 = col(r, &[err_sql]).unwrap_or_default();
    ReplicaStatus {
        io_running: io_state == "Yes",
        io_connecting: io_state == "Connecting",
        sql_running: col(r, &[sql]).as_deref() == Some("Yes"),
        seconds_behind: col(r, &[behind]).and_then(|v| v.parse().ok()),
        source_host: col(r, &[host]).unwrap_or_default(),
        source_port: col(r, &[port]).and_then(|v| v.parse().ok()).unwrap_or(0),
        last_error: [e1, e2]
            .into_iter()
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        gtid_io_pos: normalize_gtids(&col(r, &[gtid]).unwrap_or_default()),
        received_heartbeats: col(r, &["Slave_received_heartbeats"]).and_then(|v| v.parse().ok()),
        heartbeat_period: col(r, &["Slave_heartbeat_period"]).and_then(|v| v.parse().ok()),
        sql_delay: col(r, &["SQL_Delay"])
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// GTID sets without whitespace/newlines (MySQL wraps long sets).
pub fn normalize_gtids(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}
