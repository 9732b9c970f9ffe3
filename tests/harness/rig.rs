//! The failover rig: a MariaDB primary and two GTID replicas, three
//! concord nodes, and relays on every link that matters:
//! - each node reaches the primary through its own relay (`connect_addr`),
//! - the replicas replicate through one relay (the primary's agreed address),
//! - the nodes' Raft links go through the fleet's relays.
//!
//! Plus a write load that records every acknowledged insert.

use crate::netns::{Host, Net};
use crate::{Concord, Fleet, MariaDb, Relay, PASSWORD};
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Rig {
    pub primary: MariaDb,
    pub replicas: Vec<MariaDb>,
    pub links: Links,
    pub fleet: Fleet,
    /// Dropped last: the namespaces outlive the processes in them.
    _net: Option<Net>,
}

/// How the rig's links are made, and so how a fault breaks them.
pub enum Links {
    /// Everything on loopback; the links that faults cut are relays.
    Relays {
        /// Replication link to the primary (its agreed address goes here).
        repl: Relay,
        /// Node i's link to the primary.
        nodes: Vec<Relay>,
    },
    /// Every server and node its own namespace host; faults drop packets.
    Hosts {
        /// db1 (the first primary), db2, db3.
        dbs: Vec<Host>,
    },
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
        let (p_args, r_args) = server_args(primary_args, replica_args);
        let primary = MariaDb::start_with("primary", 1, &p_args).await;
        let repl_relay = Relay::start(&primary.addr()).await;
        let mut replicas = Vec::new();
        for i in 0..2 {
            let r = MariaDb::start_with(&format!("replica{}", i + 1), 2 + i, &r_args).await;
            r.replicate_from(&repl_relay.addr()).await;
            replicas.push(r);
        }
        create_table(&primary).await;
        let mut node_relays = Vec::new();
        for _ in 0..3 {
            node_relays.push(Relay::start(&primary.addr()).await);
        }
        let backends = backends(&repl_relay.addr(), &replicas);
        let relay_addrs: Vec<String> = node_relays.iter().map(Relay::addr).collect();
        let extra = with_replication_account(extra);
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
            links: Links::Relays {
                repl: repl_relay,
                nodes: node_relays,
            },
            fleet,
            _net: None,
        };
        rig.wait_replicas_readable().await;
        rig
    }

    /// The same rig with every server and node in its own network
    /// namespace on one bridge, and no relays: faults drop packets.
    pub async fn start_hosts(
        extra: &str,
        cluster: &str,
        primary_args: &[&str],
        replica_args: &[&str],
        hooks: &str,
    ) -> Rig {
        let mut net = Net::new();
        let dbs: Vec<Host> = (0..3).map(|i| net.host(i)).collect();
        let nodes: Vec<Host> = (0..3).map(|i| net.host(3 + i)).collect();
        let (p_args, r_args) = server_args(primary_args, replica_args);
        let primary = MariaDb::start_on("primary", 1, &p_args, Some(&dbs[0])).await;
        let mut replicas = Vec::new();
        for i in 0..2 {
            let name = format!("replica{}", i + 1);
            let r = MariaDb::start_on(&name, 2 + i as u32, &r_args, Some(&dbs[1 + i])).await;
            r.replicate_from(&primary.addr()).await;
            replicas.push(r);
        }
        create_table(&primary).await;
        let backends = backends(&primary.addr(), &replicas);
        let extra = with_replication_account(extra);
        let fleet = Fleet::start_on(nodes, backends, |_, c| {
            c.test_hooks = hooks.to_string();
            c.extra.push_str(&extra);
            c.cluster_extra.push_str(cluster);
        })
        .await;
        let rig = Rig {
            primary,
            replicas,
            links: Links::Hosts { dbs },
            fleet,
            _net: Some(net),
        };
        rig.wait_replicas_readable().await;
        rig
    }

    /// The replication relay (loopback rigs only).
    pub fn repl_relay(&self) -> &Relay {
        match &self.links {
            Links::Relays { repl, .. } => repl,
            Links::Hosts { .. } => panic!("a namespace rig has no relays"),
        }
    }

    /// Each node's relay to the primary (loopback rigs only).
    pub fn node_relays(&self) -> &[Relay] {
        match &self.links {
            Links::Relays { nodes, .. } => nodes,
            Links::Hosts { .. } => panic!("a namespace rig has no relays"),
        }
    }

    /// Node i loses its link to db1, both ways.
    pub fn cut_node_from_primary(&self, i: usize) {
        match &self.links {
            Links::Relays { nodes, .. } => nodes[i].cut(),
            Links::Hosts { dbs } => self.fleet.hosts[i].cut(&dbs[0].ip),
        }
    }

    /// The replicas lose db1, both ways.
    pub fn cut_replication(&self) {
        match &self.links {
            Links::Relays { repl, .. } => repl.cut(),
            Links::Hosts { dbs } => {
                for r in &dbs[1..] {
                    dbs[0].cut(&r.ip);
                }
            }
        }
    }

    /// db1 stops answering anyone: packets vanish.
    pub fn black_hole_primary(&self) {
        match &self.links {
            Links::Relays { repl, nodes } => {
                repl.black_hole();
                for r in nodes {
                    r.black_hole();
                }
            }
            Links::Hosts { dbs } => dbs[0].black_hole(),
        }
    }

    /// Every link fault gone (frozen processes are the caller's).
    pub fn heal_all(&self) {
        for i in 0..self.fleet.nodes.len() {
            self.fleet.heal(i);
        }
        match &self.links {
            Links::Relays { repl, nodes } => {
                repl.heal();
                for r in nodes {
                    r.heal();
                }
            }
            Links::Hosts { dbs } => {
                for h in dbs {
                    h.heal();
                }
            }
        }
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
        // Replicas in rotation (a fenced former primary replicates from
        // no one and is not readable until it rejoins).
        rows.iter()
            .filter(|r| {
                r["role"].as_deref() == Some("replica") && r["state"].as_deref() == Some("active")
            })
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
    /// Node 3 cut off from the fleet (it keeps the primary), nodes 1 and 2
    /// cut off from the primary, and a failover forced on node 1 as soon
    /// as it is accepted.
    pub async fn force_failover_beside_node_3(&self) {
        self.fleet.isolate(2);
        self.node_relays()[0].cut();
        self.node_relays()[1].cut();
        crate::wait_for(
            "a forced failover to run",
            Duration::from_secs(20),
            || async {
                self.fleet.nodes[0]
                    .admin_query("FAILOVER")
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

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

/// `--slave-net-timeout=2` plus the caller's arguments.
fn server_args<'a>(primary: &[&'a str], replica: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut p = vec!["--slave-net-timeout=2"];
    p.extend_from_slice(primary);
    let mut r = vec!["--slave-net-timeout=2"];
    r.extend_from_slice(replica);
    (p, r)
}

async fn create_table(primary: &MariaDb) {
    primary
        .exec("CREATE TABLE test.w (writer INT, seq INT, origin INT NOT NULL DEFAULT 0, ts DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (writer, seq))")
        .await;
}

/// db1 at its agreed address, db2 and db3 the replicas.
fn backends(primary_addr: &str, replicas: &[MariaDb]) -> Vec<(String, String, Option<String>)> {
    vec![
        (
            "db1".to_string(),
            primary_addr.to_string(),
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
    ]
}

/// Tests may set their own [failover] keys; the replication account is
/// added to that section.
fn with_replication_account(extra: &str) -> String {
    let account = format!("replication_user = \"repl\"\nreplication_password = \"{PASSWORD}\"\n");
    if extra.contains("[failover]") {
        extra.replace("[failover]\n", &format!("[failover]\n{account}"))
    } else {
        format!("{extra}\n[failover]\n{account}")
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

/// A client connected to `db` directly (a batch job, a DBA's session)
/// that creates `test.locked` and holds `LOCK TABLES test.locked WRITE`
/// until its connection ends.
pub async fn hold_write_lock(db: &MariaDb) -> mysql_async::Conn {
    db.exec("CREATE TABLE IF NOT EXISTS test.locked (id INT PRIMARY KEY)")
        .await;
    let mut holder = db.conn().await;
    holder
        .query_drop("LOCK TABLES test.locked WRITE")
        .await
        .unwrap();
    holder
}

/// Waits until `db`'s replication applier waits for a backup's lock
/// (a FLUSH TABLES WITH READ LOCK held there, and an event to apply).
pub async fn wait_applier_held_by_backup(db: &MariaDb) {
    crate::wait_for(
        "the applier to wait for the backup's lock",
        Duration::from_secs(10),
        || async {
            let n: Option<i64> = db
                .conn()
                .await
                .query_first("SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Slave_SQL' AND state = 'Waiting for backup lock'")
                .await
                .ok()?;
            (n == Some(1)).then_some(())
        },
    )
    .await;
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
    let fence_s = fence_ms / 1000;
    let mut after = Vec::new();
    let mut seen = 0;
    for line in binlog_lines(db, false).await {
        let Some((sid, at, _)) = gtid_header(&line) else {
            continue;
        };
        if sid != db.server_id {
            continue;
        }
        seen += 1;
        if at > fence_s {
            after.push(line);
        }
    }
    assert!(
        seen > 0,
        "no transaction of server {} found in its binlog",
        db.server_id
    );
    after
}

/// Every `test.w` row inserted in `db`'s binlog, with the GTID of the
/// transaction that inserted it (decoded row events): which transaction
/// an acknowledged write was, to check it against the GTID sets concord
/// reported lost.
pub async fn binlog_rows(db: &MariaDb) -> std::collections::HashMap<(u32, u32), String> {
    let mut rows = std::collections::HashMap::new();
    let mut gtid = String::new();
    // Inside an insert into test.w, the column values arrive as
    // `###   @1=..` (writer), `###   @2=..` (seq).
    let mut in_insert = false;
    let mut writer: Option<u32> = None;
    for line in binlog_lines(db, true).await {
        if let Some((_, _, g)) = gtid_header(&line) {
            gtid = g;
            in_insert = false;
            continue;
        }
        let Some(rest) = line.strip_prefix("### ") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with("INSERT INTO") {
            in_insert = rest.contains("`test`.`w`");
            writer = None;
        } else if in_insert {
            if let Some(v) = rest.strip_prefix("@1=") {
                writer = v.parse().ok();
            } else if let Some(v) = rest.strip_prefix("@2=") {
                if let (Some(w), Ok(q)) = (writer, v.parse::<u32>()) {
                    rows.insert((w, q), gtid.clone());
                }
            }
        }
    }
    rows
}

/// A binlog GTID header line: (server id, Unix seconds, "d-s-q").
fn gtid_header(line: &str) -> Option<(u32, u64, String)> {
    // #261202  1:02:03 server id 1  end_log_pos 1234 CRC32 0x.. GTID 0-1-55 trans
    let rest = line.strip_prefix('#')?;
    if !line.contains("\tGTID ") && !line.contains(" GTID ") {
        return None;
    }
    let mut w = rest.split_whitespace();
    let (date, time) = (w.next()?, w.next()?);
    let sid = line
        .split("server id ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse::<u32>()
        .ok()?;
    let gtid = line
        .split("GTID ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    Some((sid, binlog_unix_seconds(date, time)?, gtid))
}

/// The text of every binlog `db` holds, read from the server with
/// `mariadb-binlog` (`decode_rows`: row events as `### @n=` lines).
async fn binlog_lines(db: &MariaDb, decode_rows: bool) -> Vec<String> {
    let mut c = db.conn().await;
    let logs: Vec<String> = c
        .query("SHOW BINARY LOGS")
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row: mysql_async::Row| {
            mysql_async::from_row_opt::<(String, u64)>(row)
                .ok()
                .map(|(n, _)| n)
        })
        .collect();
    let _ = c.disconnect().await;
    let mut lines = Vec::new();
    for log in logs.into_iter().filter(|n| !n.is_empty()) {
        let mut cmd = std::process::Command::new("mariadb-binlog");
        cmd.env("TZ", "UTC").args([
            "--read-from-remote-server",
            &format!("--host={}", db.ip),
            &format!("--port={}", db.port),
            "--user=root",
            &format!("--password={}", crate::PASSWORD),
        ]);
        if decode_rows {
            cmd.args(["--base64-output=decode-rows", "--verbose"]);
        }
        let out = cmd.arg(&log).output().expect("run mariadb-binlog");
        assert!(
            out.status.success(),
            "mariadb-binlog {log}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    lines
}

/// Whether MariaDB GTID `d-s-q` is in a set as concord reports it
/// (`d-s-a..d-s-b` ranges and `d-s-q` items, comma-separated).
pub fn gtid_in_report(gtid: &str, set: &str) -> bool {
    let parse = |g: &str| -> Option<(u64, u64, u64)> {
        let mut p = g.trim().split('-').map(|x| x.parse::<u64>().ok());
        Some((p.next()??, p.next()??, p.next()??))
    };
    let Some((d, s, q)) = parse(gtid) else {
        return false;
    };
    set.split(',').any(|item| {
        let (lo, hi) = item.split_once("..").unwrap_or((item, item));
        match (parse(lo), parse(hi)) {
            (Some((d1, s1, a)), Some((d2, s2, b))) => {
                d1 == d && d2 == d && s1 == s && s2 == s && a <= q && q <= b
            }
            _ => false,
        }
    })
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
