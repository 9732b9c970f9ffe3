//! The failover rig: a MariaDB primary and two GTID replicas, three
//! concord nodes, and relays on every link that matters:
//! - each node reaches the primary through its own relay (`connect_addr`),
//! - the replicas replicate through one relay (the primary's agreed address),
//! - the nodes' Raft links go through the fleet's relays.
//!
//! Plus a write load that records every acknowledged insert.

use crate::{Concord, Fleet, MariaDb, Relay, PASSWORD};
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Rig {
    pub primary: MariaDb,
    pub replicas: Vec<MariaDb>,
    /// Replication link to the primary (its agreed address goes here).
    pub repl_relay: Relay,
    /// Node i's link to the primary.
    pub node_relays: Vec<Relay>,
    pub fleet: Fleet,
}

/// Semi-sync replication: the primary waits for a replica's ack (after
/// sync) before a commit returns; replicas ack.
pub const SEMI_SYNC_PRIMARY: &[&str] = &[
    "--rpl-semi-sync-master-enabled=ON",
    "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
    "--rpl-semi-sync-master-timeout=30000",
];
pub const SEMI_SYNC_REPLICA: &[&str] = &["--rpl-semi-sync-slave-enabled=ON"];

impl Rig {
    /// `extra`: TOML appended to every node's config.
    pub async fn start(extra: &str) -> Rig {
        Self::start_with(extra, "", &[], &[]).await
    }

    /// Like [`Rig::start`], with extra `[cluster]` keys (lease_timeout).
    pub async fn start_with(
        extra: &str,
        cluster: &str,
        primary_args: &[&str],
        replica_args: &[&str],
    ) -> Rig {
        Self::start_full(extra, cluster, primary_args, replica_args, "").await
    }

    /// Like [`Rig::start_with`], every node with the test-only switches
    /// `hooks` (see `config/src/testhooks.rs`).
    pub async fn start_full(
        extra: &str,
        cluster: &str,
        primary_args: &[&str],
        replica_args: &[&str],
        hooks: &str,
    ) -> Rig {
        let mut args = vec!["--slave-net-timeout=2"];
        args.extend_from_slice(primary_args);
        let primary = MariaDb::start_with("primary", 1, &args).await;
        let mut args = vec!["--slave-net-timeout=2"];
        args.extend_from_slice(replica_args);
        let repl_relay = Relay::start(&primary.addr()).await;
        let mut replicas = Vec::new();
        for i in 0..2 {
            let r = MariaDb::start_with(&format!("replica{}", i + 1), 2 + i, &args).await;
            r.replicate_from(&repl_relay.addr()).await;
            replicas.push(r);
        }
        primary
                        .exec("CREATE TABLE test.w (writer INT, seq INT, origin INT NOT NULL DEFAULT 0, ts DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (writer, seq))")
            .await;
        let mut node_relays = Vec::new();
        for _ in 0..3 {
            node_relays.push(Relay::start(&primary.addr()).await);
        }
        let backends = vec![
            (
                "db1".to_string(),
                repl_relay.addr(),
                Some("primary".to_string()),
            ),
            (
                "db2".to_string(),
                replicas[0].addr(),
                Some("replica".to_string()),
            ),
            (
                "db3".to_string(),
                replicas[1].addr(),
                Some("replica".to_string()),
            ),
        ];
        let relay_addrs: Vec<String> = node_relays.iter().map(Relay::addr).collect();
        // Tests may set their own [failover] keys; the replication account
        // is added to that section.
        let extra = if extra.contains("[failover]") {
            extra.replace(
                "[failover]\n",
                &format!("[failover]\nreplication_user = \"repl\"\nreplication_password = \"{PASSWORD}\"\n"),
            )
        } else {
            format!("{extra}\n[failover]\nreplication_user = \"repl\"\nreplication_password = \"{PASSWORD}\"\n")
        };
        let fleet = Fleet::start(3, backends, |i, c| {
            c.connect_addrs.push(("db1".into(), relay_addrs[i].clone()));
            c.test_hooks = hooks.to_string();
            c.extra.push_str(&extra);
            c.cluster_extra.push_str(cluster);
        })
        .await;
        let rig = Rig {
            primary,
            replicas,
            repl_relay,
            node_relays,
            fleet,
        };
        rig.wait_replicas_readable().await;
        rig
    }

    pub async fn wait_replicas_readable(&self) {
        self.wait_diagnosed("replicas readable", Duration::from_secs(20), || {
            self.replicas_readable()
        })
        .await;
    }

    /// Every node ready (lease and primary) and every replica readable.
    pub async fn wait_settled(&self, within: Duration) {
        self.wait_diagnosed("the fleet to settle", within, || async {
            for n in &self.fleet.nodes {
                if !matches!(n.http_get("/readyz").await, Some((200, _))) {
                    return false;
                }
            }
            self.replicas_readable().await
        })
        .await;
    }

    async fn replicas_readable(&self) -> bool {
        let Ok(rows) = self.fleet.nodes[0].admin_query("SHOW BACKENDS").await else {
            return false;
        };
        rows.iter()
            .filter(|r| r["role"].as_deref() == Some("replica"))
            .all(|r| r["readable"].as_deref() == Some("yes"))
    }

    /// Polls `ok` until it holds; on timeout panics with [`Rig::diagnose`].
    async fn wait_diagnosed<F, Fut>(&self, what: &str, within: Duration, mut ok: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !ok().await {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {within:?} waiting for {what}\n{}",
                    self.diagnose().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a failed wait prints: the fleet's view and each server's
    /// replication state.
    pub async fn diagnose(&self) -> String {
        let mut out = String::new();
        for q in ["SHOW BACKENDS", "SHOW CLUSTER", "SHOW EVENTS LIMIT 12"] {
            out.push_str(&format!(
                "{q}: {:?}\n",
                self.fleet.nodes[0].admin_query(q).await
            ));
        }
        for db in std::iter::once(&self.primary).chain(&self.replicas) {
            let status = match db.try_conn().await {
                Some(mut c) => {
                    let rows: Result<Vec<mysql_async::Row>, _> = c.query("SHOW SLAVE STATUS").await;
                    match rows {
                        Ok(rows) => rows
                            .iter()
                            .map(|r| {
                                let col = |n: &str| {
                                    r.get_opt::<Option<String>, _>(n)
                                        .and_then(Result::ok)
                                        .flatten()
                                        .unwrap_or_default()
                                };
                                format!(
                                    "master {}:{} io={} sql={} lag={} io_err={:?} sql_err={:?}",
                                    col("Master_Host"),
                                    col("Master_Port"),
                                    col("Slave_IO_Running"),
                                    col("Slave_SQL_Running"),
                                    col("Seconds_Behind_Master"),
                                    col("Last_IO_Error"),
                                    col("Last_SQL_Error")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; "),
                        Err(e) => format!("SHOW SLAVE STATUS failed: {e}"),
                    }
                }
                None => "unreachable".to_string(),
            };
            out.push_str(&format!("{} ({}): {status}\n", db.name, db.addr()));
        }
        out
    }

    /// The primary every live node agrees on (name, epoch).
    pub async fn primary_of(&self, node: &Concord) -> Option<(String, u64)> {
        let rows = node.admin_query("SHOW CLUSTER").await.ok()?;
        let me = rows
            .iter()
            .find(|r| r["node_id"].as_deref() == Some(&node.cfg.node_id.to_string()))?;
        Some((me["primary"].clone()?, me["epoch"].clone()?.parse().ok()?))
    }

    /// Waits until the fleet agrees on a primary other than `old`.
    pub async fn wait_new_primary(&self, old: &str, within: Duration) -> (String, u64, Duration) {
        let t = Instant::now();
        crate::wait_for("a new primary", within, || async {
            for n in self.fleet.nodes.iter().filter(|n| n.pid().is_some()) {
                if let Some((p, e)) = self.primary_of(n).await {
                    if p != old {
                        return Some((p, e, t.elapsed()));
                    }
                }
            }
            None
        })
        .await
    }

    /// Counts failover-like events (fences) in the replicated log.
    pub async fn fences(&self) -> usize {
        for n in self.fleet.nodes.iter().filter(|n| n.pid().is_some()) {
            if let Ok(ev) = n.admin_query("SHOW EVENTS LIMIT 1000").await {
                return ev
                    .iter()
                    .filter(|e| e["event"].as_deref() == Some("fence"))
                    .count();
            }
        }
        0
    }

    /// The MariaDB server behind a backend name, to kill or restart.
    pub fn server_mut(&mut self, name: &str) -> &mut MariaDb {
        match name {
            "db1" => &mut self.primary,
            "db2" => &mut self.replicas[0],
            _ => &mut self.replicas[1],
        }
    }

    /// The MariaDB server behind a backend name.
    pub fn server(&self, name: &str) -> &MariaDb {
        match name {
            "db1" => &self.primary,
            "db2" => &self.replicas[0],
            _ => &self.replicas[1],
        }
    }
}

/// One write attempt: when, and whether it was acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub ok: bool,
}

/// Unique, acknowledged inserts through every node until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub acked: Arc<Mutex<Vec<(u32, u32)>>>,
    pub samples: Arc<Mutex<Vec<Sample>>>,
    pub errors: Arc<Mutex<Vec<String>>>,
}

impl Load {
    pub fn start(fleet: &Fleet, writers_per_node: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Writer ids are unique across loads in a process, so rows never clash.
        static NEXT_WRITER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        for n in fleet.nodes.iter() {
            for _ in 0..writers_per_node {
                let writer = NEXT_WRITER.fetch_add(1, Ordering::Relaxed);
                let opts = n.opts();
                let (stop, acked, samples, errors) =
                    (stop.clone(), acked.clone(), samples.clone(), errors.clone());
                tasks.push(tokio::spawn(async move {
                    let mut seq = 0u32;
                    let mut conn: Option<mysql_async::Conn> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            match mysql_async::Conn::new(opts.clone()).await {
                                Ok(c) => conn = Some(c),
                                Err(e) => {
                                    errors.lock().unwrap().push(format!("connect: {e}"));
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    continue;
                                }
                            }
                        }
                        let Some(c) = conn.as_mut() else { continue };
                        seq += 1;
                                                // origin: the server that executed it (replicated as a value).
                        let r = c
                            .exec_drop("INSERT INTO test.w (writer, seq, origin) VALUES (?, ?, @@server_id)", (writer, seq))
                            .await;
                        let ok = r.is_ok();
                        samples.lock().unwrap().push(Sample {
                            at: Instant::now(),
                            ok,
                        });
                        match r {
                            Ok(()) => acked.lock().unwrap().push((writer, seq)),
                            Err(e) => {
                                errors.lock().unwrap().push(e.to_string());
                                if !matches!(e, mysql_async::Error::Server(_)) {
                                    conn = None;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            tasks,
            acked,
            samples,
            errors,
        }
    }

    pub async fn stop(self) -> (Vec<(u32, u32)>, Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        // A writer may be inside a held statement (up to the write buffer
        // timeout); acknowledged writes are already recorded, so stop it.
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_millis(300), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let a = self.acked.lock().unwrap().clone();
        let s = self.samples.lock().unwrap().clone();
        let e = self.errors.lock().unwrap().clone();
        (a, s, e)
    }
}

/// The longest stretch without an acknowledged write after `from`.
pub fn write_gap(samples: &[Sample], from: Instant) -> Duration {
    let mut oks: Vec<Instant> = samples.iter().filter(|s| s.ok).map(|s| s.at).collect();
    oks.sort();
    let mut last = from;
    let mut gap = Duration::ZERO;
    for t in oks.into_iter().filter(|t| *t >= from) {
        gap = gap.max(t - last);
        last = t;
    }
    gap
}

/// Acknowledged writes that are not on `db`.
pub async fn missing_on(db: &MariaDb, acked: &[(u32, u32)]) -> usize {
    let rows: Vec<(u32, u32)> = db.query("SELECT writer, seq FROM test.w").await;
    let have: std::collections::HashSet<(u32, u32)> = rows.into_iter().collect();
    acked.iter().filter(|k| !have.contains(k)).count()
}

/// Per-100 ms buckets of (ok, errors) from `from`.
pub fn timeline(samples: &[Sample], from: Instant, len: Duration) -> Vec<(u32, u32)> {
    let n = (len.as_millis() / 100) as usize + 1;
    let mut b = vec![(0u32, 0u32); n];
    for s in samples {
        if s.at < from {
            continue;
        }
        let i = ((s.at - from).as_millis() / 100) as usize;
        if let Some(x) = b.get_mut(i) {
            if s.ok {
                x.0 += 1;
            } else {
                x.1 += 1;
            }
        }
    }
    b
}

pub async fn query_one<T: FromValue + Send + 'static>(db: &MariaDb, sql: &str) -> T {
    let mut c = db.conn().await;
    c.query_first(sql).await.unwrap().unwrap()
}

/// Milliseconds since the epoch of the newest fence in the event log.
pub async fn fence_ms(rig: &Rig) -> u64 {
    for n in rig.fleet.nodes.iter().filter(|n| n.pid().is_some()) {
        if let Ok(ev) = n.admin_query("SHOW EVENTS LIMIT 1000").await {
            if let Some(e) = ev
                .iter()
                .rev()
                .find(|e| matches!(e["event"].as_deref(), Some("fence") | Some("freeze")))
            {
                return e["at_ms"].as_deref().unwrap_or("0").parse().unwrap();
            }
        }
    }
    panic!("no fence in the event log");
}

/// Rows committed on `db` after the fence (split-brain writes).
pub async fn writes_after(db: &MariaDb, fence_ms: u64) -> i64 {
    query_one(
        db,
        &format!("SELECT COUNT(*) FROM test.w WHERE origin = @@server_id AND ts > FROM_UNIXTIME({fence_ms} / 1000)"),
    )
    .await
}

/// Transactions in `db`'s own binlog (its server id) stamped in a second
/// after the one the fence committed in: split-brain commits of any table,
/// concord's heartbeat and DDL included, read from the binlog itself with
/// `mariadb-binlog`. The binlog stamps whole seconds, so a commit in the
/// fence's own second is left to [`writes_after`] (milliseconds, one table).
/// Panics if the binlog shows no transaction of `db` at all (a parse that
/// finds nothing must not pass as "no split brain").
pub async fn binlog_after(db: &MariaDb, fence_ms: u64) -> Vec<String> {
    let mut c = db.conn().await;
    let logs: Vec<(String, u64)> = c
        .query("SHOW BINARY LOGS")
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|row: mysql_async::Row| {
            let (name, size): (String, u64) =
                mysql_async::from_row_opt(row).unwrap_or_else(|_| (String::new(), 0));
            (name, size)
        })
        .collect();
    let fence_s = fence_ms / 1000;
    let mut after = Vec::new();
    let mut seen = 0;
    for (log, _) in logs.into_iter().filter(|(n, _)| !n.is_empty()) {
        let out = std::process::Command::new("mariadb-binlog")
            .env("TZ", "UTC")
            .args([
                "--read-from-remote-server",
                "--host=127.0.0.1",
                &format!("--port={}", db.port),
                "--user=root",
                &format!("--password={}", crate::PASSWORD),
                &log,
            ])
            .output()
            .expect("run mariadb-binlog");
        assert!(
            out.status.success(),
            "mariadb-binlog {log}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // #261202  1:02:03 server id 1  end_log_pos 1234 CRC32 0x.. GTID 0-1-55 trans
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            if !line.contains("\tGTID ") && !line.contains(" GTID ") {
                continue;
            }
            let mut w = rest.split_whitespace();
            let (Some(date), Some(time)) = (w.next(), w.next()) else {
                continue;
            };
            let sid = line
                .split("server id ")
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .and_then(|x| x.parse::<u32>().ok());
            if sid != Some(db.server_id) {
                continue;
            }
            let Some(at) = binlog_unix_seconds(date, time) else {
                continue;
            };
            seen += 1;
            if at > fence_s {
                after.push(line.to_string());
            }
        }
    }
    assert!(
        seen > 0,
        "no transaction of server {} found in its binlog",
        db.server_id
    );
    after
}

/// `YYMMDD` and `H:MM:SS` (UTC) as Unix seconds.
fn binlog_unix_seconds(date: &str, time: &str) -> Option<u64> {
    if date.len() != 6 {
        return None;
    }
    let y: i64 = 2000 + date[0..2].parse::<i64>().ok()?;
    let m: i64 = date[2..4].parse().ok()?;
    let d: i64 = date[4..6].parse().ok()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// Replaces a diverged server's data position with the new primary's (test
/// shortcut for "rebuild it from a backup"). Retried: concord kills client
/// connections on a fenced server that comes back writable, and this one
/// may be among them.
pub async fn reset_to(db: &MariaDb, pos: &str) {
    let mut last = None;
    for _ in 0..10 {
        let mut c = db.conn().await;
        c.query_drop("STOP SLAVE").await.ok();
        c.query_drop("RESET SLAVE ALL").await.ok();
        // Forget its own binlog and start from the new primary's position;
        // rows only it had stay in its tables (checks read the new primary).
        let steps = [
            "SET sql_log_bin = 0".to_string(),
            "RESET MASTER".to_string(),
            format!("SET GLOBAL gtid_slave_pos = '{pos}'"),
            "SET GLOBAL read_only = 1".to_string(),
        ];
        let mut failed = None;
        for sql in &steps {
            if let Err(e) = c.query_drop(sql).await {
                failed = Some(format!("{sql}: {e}"));
                break;
            }
        }
        match failed {
            None => return,
            Some(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("could not reset {}: {last:?}", db.name);
}
