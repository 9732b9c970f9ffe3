//! The quick-start demo: a local MariaDB primary with two GTID replicas, a
//! 3-node concord fleet in front of them, and a live workload through all
//! three nodes. Once a second it prints one status line: queries per
//! second through each node, the primary and its epoch, each replica's
//! lag, and errors. Keys (then Enter):
//!
//! - `k`: kill -9 the primary's mariadbd, and watch the failover in the
//!   status line;
//! - `s`: switch over to a replica (planned, no error);
//! - `d`: the fleet's top digests;
//! - `q` (or Ctrl-C): stop everything.
//!
//! Run it with `scripts/demo.sh` (installs MariaDB if needed).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use harness::{Concord, Fleet, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

type Row = BTreeMap<String, Option<String>>;

/// Statements through one node: answered, failed.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    err: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("starting MariaDB: a primary and two replicas (GTID replication) ...");
    let mut topo = Topology::start(2).await;
    let mut backends = vec![(
        "db1".to_string(),
        topo.primary.addr(),
        Some("primary".to_string()),
    )];
    for (i, r) in topo.replicas.iter().enumerate() {
        backends.push((
            format!("db{}", i + 2),
            r.addr(),
            Some("replica".to_string()),
        ));
    }
    println!("starting a 3-node concord fleet ...");
    let fleet = Fleet::start(3, backends, |_, c| {
        // A former primary is made a replica of the new one (the account
        // the harness's replicas use), and a second automatic failover
        // may follow a switchover after 10 s (60 s by default).
        c.extra.push_str(&format!(
            "[log]\nlevel = \"warn\"\n[failover]\nreplication_user = \"repl\"\nreplication_password = \"{PASSWORD}\"\ncooldown = \"10s\"\n"
        ));
    })
    .await;
    println!();
    println!("concord is up. Connect like any MySQL client, to any node:");
    for n in &fleet.nodes {
        println!(
            "  node {}: mariadb -h127.0.0.1 -P{} -uapp -p{PASSWORD} test    admin: mariadb -h127.0.0.1 -P{} -uadmin -p{PASSWORD}    http://127.0.0.1:{}/metrics",
            n.cfg.node_id, n.cfg.port, n.cfg.admin_port, n.cfg.http_port
        );
    }
    println!("try SHOW CONCORD STATUS on a data port; SHOW BACKENDS, SHOW CONCORD FLEET DIGESTS, SWITCHOVER TO 'db2' on an admin port");
    topo.primary
        .exec("CREATE TABLE test.demo (id INT AUTO_INCREMENT PRIMARY KEY, node INT, v VARCHAR(40))")
        .await;
    topo.primary
        .exec("INSERT INTO test.demo (node, v) WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) SELECT 0, MD5(n) FROM s")
        .await;
    topo.wait_replicated().await;

    let counts: Vec<Arc<Counts>> = fleet.nodes.iter().map(|_| Arc::default()).collect();
    let mut load = Vec::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        for writer in [false, false, true] {
            let opts = node.opts();
            let c = counts[i].clone();
            load.push(tokio::spawn(work(opts, i, writer, c)));
        }
    }
    println!();
    println!("live workload: 2 readers and 1 writer through each node (reads go to the replicas, writes to the primary)");
    println!(
        "keys, then Enter: k = kill -9 the primary   s = switch over   d = top digests   q = quit"
    );
    println!();

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let start = Instant::now();
    let mut last: Vec<(u64, u64)> = vec![(0, 0); counts.len()];
    let mut errors_total = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now: Vec<(u64, u64)> = counts
                    .iter()
                    .map(|c| (c.ok.load(Ordering::Relaxed), c.err.load(Ordering::Relaxed)))
                    .collect();
                let qps: Vec<String> = now
                    .iter()
                    .zip(&last)
                    .enumerate()
                    .map(|(i, (n, l))| format!("n{} {:>4}", i + 1, n.0 - l.0))
                    .collect();
                let errs: u64 = now.iter().zip(&last).map(|(n, l)| n.1 - l.1).sum();
                errors_total += errs;
                last = now;
                let backends = any_admin(&fleet, "SHOW BACKENDS").await;
                println!(
                    "[{:>4}s] qps {} | {} | errors/s {errs} (total {errors_total})",
                    start.elapsed().as_secs(),
                    qps.join(" "),
                    describe(&backends),
                );
            }
            line = stdin.next_line(), if stdin_open => {
                let key = match line {
                    Ok(Some(l)) => l.trim().to_ascii_lowercase(),
                    // No terminal: run until Ctrl-C.
                    _ => {
                        stdin_open = false;
                        continue;
                    }
                };
                match key.as_str() {
                    "k" => kill_primary(&fleet, &mut topo).await,
                    "s" => switchover(&fleet).await,
                    "d" => digests(&fleet).await,
                    "q" => break,
                    "" => {}
                    other => println!(">>> unknown key {other:?}: k, s, d or q"),
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("\nstopping ...");
    for l in load {
        l.abort();
    }
    drop(fleet);
    drop(topo);
}

/// One client of the workload: reconnects after any error (a failover
/// ends its connection, or a statement gets a clear error).
async fn work(opts: mysql_async::OptsBuilder, node: usize, writer: bool, counts: Arc<Counts>) {
    let opts = opts.db_name(Some("test"));
    let mut n: u64 = node as u64 * 7919;
    let pace = if writer { 10 } else { 5 };
    loop {
        let Ok(mut c) = mysql_async::Conn::new(opts.clone()).await else {
            counts.err.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = if writer {
                c.exec_drop(
                    "INSERT INTO demo (node, v) VALUES (?, ?)",
                    (node as u32 + 1, format!("{n:x}")),
                )
                .await
            } else {
                c.exec_drop("SELECT v FROM demo WHERE id = ?", ((n >> 33) % 1000 + 1,))
                    .await
            };
            if r.is_err() {
                counts.err.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
            counts.ok.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(pace)).await;
        }
    }
}

/// An admin statement on the first node that answers.
async fn any_admin(fleet: &Fleet, sql: &str) -> Vec<Row> {
    for n in &fleet.nodes {
        let q = tokio::time::timeout(Duration::from_secs(2), n.admin_query(sql));
        if let Ok(Ok(rows)) = q.await {
            return rows;
        }
    }
    Vec::new()
}

/// "primary db1 (epoch 1) | lag db2 3ms, db3 5ms": what SHOW BACKENDS says.
fn describe(backends: &[Row]) -> String {
    let col = |r: &Row, k: &str| r.get(k).cloned().flatten().unwrap_or_default();
    let primary = backends
        .iter()
        .find(|r| col(r, "role") == "primary")
        .map_or("primary none (failing over)".to_string(), |r| {
            let down = if col(r, "readable") == "down" {
                " DOWN"
            } else {
                ""
            };
            format!(
                "primary {}{down} (epoch {})",
                col(r, "name"),
                col(r, "epoch")
            )
        });
    let lags: Vec<String> = backends
        .iter()
        .filter(|r| col(r, "role") != "primary")
        .map(|r| {
            let state = match (col(r, "readable").as_str(), col(r, "lag_ms")) {
                ("yes", lag) => format!("{lag}ms"),
                _ if col(r, "state") != "active" => col(r, "state"),
                ("down", _) => "down".to_string(),
                _ => "not readable".to_string(),
            };
            format!("{} {state}", col(r, "name"))
        })
        .collect();
    format!("{primary} | lag {}", lags.join(", "))
}

async fn primary_name(fleet: &Fleet) -> Option<String> {
    any_admin(fleet, "SHOW BACKENDS")
        .await
        .into_iter()
        .find(|r| r.get("role").cloned().flatten().as_deref() == Some("primary"))
        .and_then(|r| r.get("name").cloned().flatten())
}

async fn kill_primary(fleet: &Fleet, topo: &mut Topology) {
    let Some(name) = primary_name(fleet).await else {
        println!(">>> no primary to kill right now");
        return;
    };
    let server = match name.as_str() {
        "db1" => &mut topo.primary,
        "db2" => &mut topo.replicas[0],
        _ => &mut topo.replicas[1],
    };
    println!(">>> kill -9 of {name}'s mariadbd: concord fences it and promotes a replica (not within failover.cooldown, 10 s here, of the last change); watch the primary column");
    server.kill();
}

async fn switchover(fleet: &Fleet) {
    let rows = any_admin(fleet, "SHOW BACKENDS").await;
    let target = rows
        .iter()
        .find(|r| {
            r.get("role").cloned().flatten().as_deref() != Some("primary")
                && r.get("readable").cloned().flatten().as_deref() == Some("yes")
        })
        .and_then(|r| r.get("name").cloned().flatten());
    let Some(target) = target else {
        println!(">>> no readable replica to switch over to yet");
        return;
    };
    println!(">>> SWITCHOVER TO '{target}' (runs in the background; writes wait, none fail)");
    let node: &Concord = &fleet.nodes[0];
    let opts = node.cfg.admin_port;
    tokio::spawn(async move {
        let o = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(opts)
            .user(Some("admin"))
            .pass(Some(PASSWORD))
            .prefer_socket(false);
        let r = match mysql_async::Conn::new(o).await {
            Ok(mut c) => c
                .query_drop(format!("SWITCHOVER TO '{target}'"))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => println!(">>> switchover to {target} done"),
            Err(e) => println!(">>> switchover refused: {e}"),
        }
    });
}

async fn digests(fleet: &Fleet) {
    let rows = any_admin(
        fleet,
        "SHOW CONCORD FLEET DIGESTS ORDER BY count DESC LIMIT 5",
    )
    .await;
    println!(">>> top digests of the fleet (SHOW CONCORD FLEET DIGESTS on any admin port):");
    println!(
        "    {:>9} {:>9} {:>8}  fingerprint",
        "count", "p99_us", "role"
    );
    for r in rows {
        let col = |k: &str| r.get(k).cloned().flatten().unwrap_or_default();
        let f: String = col("fingerprint").chars().take(70).collect();
        println!(
            "    {:>9} {:>9} {:>8}  {f}",
            col("count"),
            col("p99_us"),
            col("role")
        );
    }
}
