//! The quick-start demo: a local MariaDB primary with two GTID replicas,
//! a concord node in front of them, and a live sysbench workload through
//! concord printing one line per second. Ctrl-C stops everything.
//!
//! Run it with `scripts/demo.sh` (installs MariaDB and sysbench if needed).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use harness::{Concord, ConcordConfig, Topology, PASSWORD};
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
    let node = Concord::start(ConcordConfig::new(backends)).await;
    let port = node.cfg.port;
    println!();
    println!("concord is up. Connect like any MySQL client:");
    println!("  mariadb -h127.0.0.1 -P{port} -uapp -p{PASSWORD} test");
    println!("  mariadb -h127.0.0.1 -P{port} -uapp -p{PASSWORD} -e 'SHOW CONCORD STATUS'");
    println!(
        "backends: primary {}  replicas {}",
        topo.primary.addr(),
        topo.replicas
            .iter()
            .map(|r| r.addr())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "concord log: {}",
        node.config_path().with_file_name("concord.log").display()
    );
    println!();

    let sb = |cmd: &str| {
        let mut c = tokio::process::Command::new("sysbench");
        c.args([
            "oltp_read_write",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            &format!("--mysql-password={PASSWORD}"),
            "--mysql-db=test",
            "--tables=2",
            "--table-size=10000",
        ]);
        c.arg(cmd);
        c
    };
    let st = sb("prepare").stdout(Stdio::null()).status().await.unwrap();
    assert!(st.success(), "sysbench prepare failed");
    println!(
        "live workload: sysbench oltp_read_write, 4 threads, one line per second (Ctrl-C stops)"
    );
    let mut run = sb("run");
    run.args([
        "--threads=4",
        "--time=0",
        "--report-interval=1",
        "--rate=200",
    ]);
    let mut child = run
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printer = async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains("tps:") {
                println!("{l}");
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("\nstopping ..."),
        _ = child.wait() => println!("workload ended"),
        _ = printer => {}
    }
    drop(child);
    drop(node);
    drop(topo);
}
