//! The quick-start demo: a local MariaDB primary with two GTID replicas, a
//! 3-node concord fleet in front of them, and a live sysbench workload
//! through all three nodes printing one line per second. Ctrl-C stops
//! everything.
//!
//! Run it with `scripts/demo.sh` (installs MariaDB and sysbench if needed).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use harness::{Fleet, Topology, PASSWORD};
use std::process::Stdio;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("starting MariaDB: a primary and two replicas (GTID replication) ...");
    let topo = Topology::start(2).await;
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
        c.extra.push_str("[log]\nlevel = \"warn\"\n");
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
    println!("try SHOW CONCORD STATUS on a data port; SHOW BACKENDS, SHOW CLUSTER, SWITCHOVER TO 'db2' on an admin port");
    println!(
        "backends: primary {}, replicas {}",
        topo.primary.addr(),
        topo.replicas
            .iter()
            .map(|r| r.addr())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    let ports = fleet
        .nodes
        .iter()
        .map(|n| n.cfg.port.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let sb = |test: &str, cmd: &str| {
        let mut c = tokio::process::Command::new("sysbench");
        c.args([
            test,
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={ports}"),
            "--mysql-user=app",
            &format!("--mysql-password={PASSWORD}"),
            "--mysql-db=test",
            "--tables=2",
            "--table-size=10000",
        ]);
        c.arg(cmd);
        c
    };
    let st = sb("oltp_read_only", "prepare")
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(st.success(), "sysbench prepare failed");
    println!("live workload over the 3 nodes, one line per second each; Ctrl-C stops");
    println!("  [reads ] sysbench oltp_read_only (autocommit: concord sends them to the replicas)");
    println!("  [writes] sysbench oltp_insert (to the primary)");
    let mut reads = sb("oltp_read_only", "run");
    reads.args([
        "--threads=4",
        "--time=0",
        "--report-interval=1",
        "--rate=200",
        "--skip_trx=on",
    ]);
    let mut writes = sb("oltp_insert", "run");
    writes.args([
        "--threads=2",
        "--time=0",
        "--report-interval=1",
        "--rate=200",
    ]);
    let mut children = Vec::new();
    let mut printers = Vec::new();
    for (tag, mut cmd) in [("reads ", reads), ("writes", writes)] {
        let mut child = cmd
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        printers.push(tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("tps:") {
                    println!("[{tag}] {l}");
                }
            }
        }));
        children.push(child);
    }
    let _ = tokio::signal::ctrl_c().await;
    println!("\nstopping ...");
    for p in printers {
        p.abort();
    }
    drop(children);
    drop(fleet);
    drop(topo);
}
