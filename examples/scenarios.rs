//! Reproducible measurement scenarios for bench/RESULTS.md, built on the
//! test harness (real MariaDB, real concord processes, sysbench):
//!
//!   cargo run --release --example scenarios -- routing   read-only QPS: 2 replicas via concord vs direct
//!   cargo run --release --example scenarios -- raft      1 vs 3 nodes on the hot path; leader failover; minority stop
//!   cargo run --release --example scenarios -- failover  kill -9 and switchover under write load, per-100 ms timeline
//!   cargo run --release --example scenarios -- compare   concord-bench compare: MariaDB direct vs concord vs HAProxy
//!   cargo run --release --example scenarios -- fleet     concord-bench fleet mode over 3 nodes vs 1 node (mock backend)
//!   cargo run --release --example scenarios -- ryw       read-your-writes session, off and fleet: read-mostly and read/write loads, 2 replicas
//!   cargo run --release --example scenarios -- pool      pool mode transaction vs session: point selects (text, prepared) and read/write
//!   cargo run --release --example scenarios -- faults    write gap, errors and losses per fault class, defaults
//!
//! Rounds are interleaved so every target sees the same machine noise;
//! figures are medians.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use harness::rig::{missing_on, timeline, write_gap, Load, Rig};
use harness::{Concord, ConcordConfig, Fleet, MariaDb, Topology, PASSWORD};
use std::process::Command;
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs sysbench; returns (qps, p95 ms).
fn sysbench(test: &str, port: u16, extra: &[&str]) -> (f64, f64) {
    let out = Command::new("sysbench")
        .arg(test)
        .args([
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            &format!("--mysql-password={PASSWORD}"),
            "--mysql-db=test",
            "--tables=4",
            "--table-size=20000",
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let num = |label: &str, idx: usize| -> f64 {
        text.lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split_whitespace().nth(idx))
            .map(|v| v.trim_start_matches('(').parse().unwrap_or(0.0))
            .unwrap_or(0.0)
    };
    (num("queries:", 2), num("95th percentile:", 2))
}

fn prepare(port: u16) {
    let out = Command::new("sysbench")
        .arg("oltp_read_only")
        .args([
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            &format!("--mysql-password={PASSWORD}"),
            "--mysql-db=test",
            "--tables=4",
            "--table-size=20000",
            "prepare",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
}

async fn routing() {
    let topo = Topology::start(2).await;
    let backends = topo.backends();
    let mut cfg = ConcordConfig::new(backends);
    cfg.extra = "[log]\nlevel = \"warn\"\n".into();
    let node = Concord::start(cfg).await;
    prepare(topo.primary.port);
    topo.wait_replicated().await;
    let args = [
        "--threads=16",
        "--time=10",
        "--skip_trx=on",
        "--db-ps-mode=disable",
        "run",
    ];
    let (mut d, mut c) = (Vec::new(), Vec::new());
    let (mut dl, mut cl) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        let (q, l) = sysbench("oltp_read_only", topo.primary.port, &args);
        println!("round {round} direct-to-primary: qps={q:.0} p95={l}ms");
        d.push(q);
        dl.push(l);
        let (q, l) = sysbench("oltp_read_only", node.cfg.port, &args);
        println!("round {round} concord (2 replicas): qps={q:.0} p95={l}ms");
        c.push(q);
        cl.push(l);
    }
    let (_, m) = node.http_get("/metrics").await.unwrap();
    let routed: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("concord_routed_total") && !l.ends_with(" 0"))
        .collect();
    println!(
        "\nmedian direct-to-primary: {:.0} qps, p95 {} ms",
        median(&mut d),
        median(&mut dl)
    );
    println!(
        "median concord, reads on 2 replicas: {:.0} qps, p95 {} ms",
        median(&mut c),
        median(&mut cl)
    );
    println!("routing decisions:\n{}", routed.join("\n"));
}

async fn raft() {
    let db = MariaDb::start("primary", 1).await;
    prepare(db.port);
    let single = {
        let mut c = ConcordConfig::single(&db.addr());
        c.extra = "[log]\nlevel = \"warn\"\n".into();
        Concord::start(c).await
    };
    let mut fleet = Fleet::start(3, vec![("db1".into(), db.addr(), None)], |_, c| {
        c.extra = "[log]\nlevel = \"warn\"\n".into();
    })
    .await;
    let args = ["--threads=16", "--time=10", "--db-ps-mode=disable", "run"];
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        let (q, l) = sysbench("oltp_point_select", single.cfg.port, &args);
        println!("round {round} 1-node concord: qps={q:.0} p95={l}ms");
        one.push(q);
        let (q, l) = sysbench("oltp_point_select", fleet.nodes[0].cfg.port, &args);
        println!("round {round} node 1 of a 3-node fleet: qps={q:.0} p95={l}ms");
        three.push(q);
    }
    println!(
        "\nmedian point-select qps: 1 node {:.0}, 3 nodes {:.0}",
        median(&mut one),
        median(&mut three)
    );
    let mut elections = Vec::new();
    for _ in 0..3 {
        let l = fleet.leader(Duration::from_secs(10)).await;
        fleet.nodes[l].kill();
        let t = Instant::now();
        fleet.leader(Duration::from_secs(20)).await;
        elections.push(t.elapsed().as_secs_f64());
        fleet.nodes[l].restart().await;
        fleet.nodes[l].wait_ready().await;
    }
    println!(
        "leader kill -9 -> new leader agreed (s): {elections:.2?}, median {:.2}",
        median(&mut elections)
    );
    let mut stops = Vec::new();
    for i in [1usize, 2, 0] {
        let t = Instant::now();
        fleet.isolate(i);
        loop {
            if let Some((503, _)) = fleet.nodes[i].http_get("/readyz").await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stops.push(t.elapsed().as_secs_f64());
        fleet.heal(i);
        fleet.nodes[i].wait_ready().await;
    }
    println!("cut-off node stops routing writes after (s): {stops:.2?}, median {:.2} (cluster.lease_timeout 1s)", median(&mut stops));
}

async fn failover() {
    // Defaults except failover.cooldown (60 s), which would (rightly)
    // refuse the third failover of this scenario inside a minute.
    let mut rig = Rig::start("[log]\nlevel = \"warn\"\n[failover]\ncooldown = \"5s\"\n").await;
    let load = Load::start(&rig.fleet, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = Instant::now();
    rig.primary.kill();
    let (new, epoch, agreed) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acked, samples, errors) = load.stop().await;
    let gap = write_gap(&samples, t0 - Duration::from_millis(200));
    let lost = missing_on(rig.server(&new), &acked).await;
    println!("kill -9 of the primary (defaults): {new} primary at epoch {epoch}, agreed {:.2}s after the kill", agreed.as_secs_f64());
    println!("  write-unavailability window {:.2}s; client errors {}; acknowledged {}; lost with async replication {lost}", gap.as_secs_f64(), errors.len(), acked.len());
    println!("timeline_ms,ok,errors");
    for (i, (ok, err)) in timeline(
        &samples,
        t0 - Duration::from_secs(1),
        Duration::from_secs(7),
    )
    .iter()
    .enumerate()
    {
        println!("{},{ok},{err}", i as i64 * 100 - 1000);
    }
    // Switchover back and forth under load.
    rig.primary.restart().await;
    let load = Load::start(&rig.fleet, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let target = if new == "db2" { "db3" } else { "db2" };
    let t1 = Instant::now();
    let out = rig.fleet.nodes[0]
        .admin_query(&format!("SWITCHOVER TO '{target}'"))
        .await;
    let took = t1.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked, samples, errors) = load.stop().await;
    if let Some(e) = errors.first() {
        println!("first error: {e}");
    }
    println!(
        "switchover to {target}: {out:?}; command {:.0} ms; longest write pause {:.0} ms; client errors {}; acknowledged {}",
        took.as_secs_f64() * 1000.0,
        write_gap(&samples, t1 - Duration::from_millis(100)).as_secs_f64() * 1000.0,
        errors.len(),
        acked.len()
    );
    // The picture of a failover: concord-bench timeline across the three
    // nodes while the current primary is killed.
    tokio::time::sleep(Duration::from_secs(5)).await; // failover.cooldown
    let pid = rig.server(target).pid().expect("primary running");
    let addrs: Vec<String> = rig.fleet.nodes.iter().map(|n| n.addr()).collect();
    let mut args = vec!["timeline"];
    for a in &addrs {
        args.extend(["--target", a.as_str()]);
    }
    let kill = format!("kill -9 {pid}");
    args.extend([
        "--user",
        "app",
        "--password",
        harness::PASSWORD,
        "--workload",
        "insert",
        "--setup",
        "--table-size",
        "100",
        "--connections",
        "12",
        "--duration",
        "10s",
        "--at",
        "3s",
        "--exec",
        &kill,
        "--csv",
        "bench/failover-timeline.csv",
        "--svg",
        "bench/failover-timeline.svg",
        "--title",
        "kill -9 of the primary at 3 s: 3 concord nodes, 12 writers",
    ]);
    bench(&args);
    if std::env::var_os("SCENARIO_DEBUG").is_some() {
        for q in ["SHOW CLUSTER", "SHOW BACKENDS"] {
            println!("{q}: {:?}", rig.fleet.nodes[0].admin_query(q).await);
        }
        for n in &rig.fleet.nodes {
            let logs = n.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            println!(
                "--- node {} log tail:\n{}",
                n.cfg.node_id,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Runs concord-bench with `args`, echoing its output; returns stdout.
fn bench(args: &[&str]) -> String {
    let out = Command::new(harness::bin::workspace_bin("concord-bench"))
        .args(args)
        .output()
        .unwrap();
    println!("$ concord-bench {}", args.join(" "));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    for l in err.lines().filter(|l| l.starts_with("round")) {
        println!("{l}");
    }
    assert!(out.status.success(), "{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The median QPS a compare table gives `target`.
fn table_qps(table: &str, target: &str) -> Option<f64> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(target))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn compare() {
    let db = MariaDb::start_with("primary", 1, &["--innodb-buffer-pool-size=256M"]).await;
    let addr = db.addr();
    let common = [
        "compare",
        "--direct",
        &addr,
        "--user",
        "root",
        "--password",
        PASSWORD,
        "--start-concord",
        "--haproxy",
        "--rounds",
        "5",
        "--duration",
        "8s",
        "--connections",
        "32",
        "--threads",
        "1",
        "--tables",
        "4",
        "--table-size",
        "20000",
        "--extrapolate",
    ];
    let mut first = common.to_vec();
    first.push("--setup");
    let closed = bench(&first);
    let mut ps = common.to_vec();
    ps.extend(["--workload", "point-select-ps"]);
    bench(&ps);
    // Open loop at half of concord's closed-loop peak in this run (the
    // latency goal is stated at half load).
    let half = table_qps(&closed, "concord").map_or(6000.0, |q| q / 2.0);
    let rate = format!("{}", (half / 500.0).round() as u64 * 500);
    let mut open = common.to_vec();
    open.extend(["--rate", rate.as_str()]);
    bench(&open);
}

async fn fleet() {
    let mock_port = harness::ports::free_port();
    let mock_addr = format!("127.0.0.1:{mock_port}");
    let mut mock = Command::new(harness::bin::workspace_bin("concord-bench"))
        .args(["mock-server", "--listen", &mock_addr])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fleet = Fleet::start(
        3,
        vec![("db1".into(), mock_addr.clone(), Some("primary".into()))],
        |_, c| {
            c.extra = "[log]\nlevel = \"warn\"\n".into();
            c.users = "[[users]]\nname = \"root\"\npassword = \"\"\n".into();
            c.extra
                .push_str("[monitor]\nuser = \"root\"\npassword = \"\"\n");
        },
    )
    .await;
    let addrs: Vec<String> = fleet.nodes.iter().map(|n| n.addr()).collect();
    let pids: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| n.pid().unwrap().to_string())
        .collect();
    bench(&[
        "run",
        "--target",
        &addrs[0],
        "--user",
        "root",
        "--connections",
        "48",
        "--duration",
        "8s",
        "--threads",
        "1",
        "--proxy-pid",
        &pids[0],
        "--extrapolate",
    ]);
    bench(&[
        "run",
        "--target",
        &addrs[0],
        "--target",
        &addrs[1],
        "--target",
        &addrs[2],
        "--user",
        "root",
        "--connections",
        "48",
        "--duration",
        "8s",
        "--threads",
        "1",
        "--proxy-pid",
        &pids.join(","),
        "--extrapolate",
    ]);
    let _ = mock.kill();
    let _ = mock.wait();
}

/// Pool modes side by side: two concord nodes that differ only in
/// `pool.mode` (transaction, the default, and session), in front of the
/// same primary and two replicas, measured in interleaved rounds on point
/// selects (text and prepared) and the read/write mix.
async fn pool() {
    let nodes = side_by_side(
        &[
            ("pool-transaction", "[pool]\nmode = \"transaction\"\n"),
            ("pool-session", "[pool]\nmode = \"session\"\n"),
        ],
        "POOL_WORKLOADS",
    )
    .await;
    for (n, node) in nodes.iter().enumerate() {
        let handed = node.metric_sum("concord_pool_state_total").await;
        println!("node {} pool hand-overs: {handed:?}", n + 1);
    }
}

/// Query digests on (the default) and off, side by side, as [`pool`].
async fn digests() {
    side_by_side(
        &[
            ("digests-on", "[digests]\nenabled = true\n"),
            ("digests-off", "[digests]\nenabled = false\n"),
        ],
        "DIGEST_WORKLOADS",
    )
    .await;
}

/// Concord nodes that differ only in `variants` (label, extra config), in
/// front of the same primary and two replicas, measured in interleaved
/// rounds with direct: point selects (text and prepared) and the
/// read/write mix, or the workloads named in the env var `workloads_env`.
async fn side_by_side(variants: &[(&str, &str)], workloads_env: &str) -> Vec<Concord> {
    let topo = Topology::start(2).await;
    let mut nodes = Vec::new();
    for (i, (_, extra)) in variants.iter().enumerate() {
        let mut cfg = ConcordConfig::new(topo.backends());
        cfg.node_id = i as u64 + 1;
        cfg.extra = format!("[log]\nlevel = \"warn\"\n{extra}");
        let node = Concord::start(cfg).await;
        node.wait_readable(&["db2", "db3"]).await;
        nodes.push(node);
    }
    let proxies: Vec<String> = variants
        .iter()
        .zip(&nodes)
        .map(|((label, _), n)| format!("{label}={},pid={}", n.addr(), n.pid().unwrap()))
        .collect();
    let primary = topo.primary.addr();
    let chosen = std::env::var(workloads_env)
        .unwrap_or_else(|_| "point-select,point-select-ps,read-write".into());
    for (i, workload) in chosen.split(',').enumerate() {
        let mut args = vec!["compare", "--direct", primary.as_str()];
        for p in &proxies {
            args.extend(["--proxy", p.as_str()]);
        }
        args.extend([
            "--user",
            "app",
            "--password",
            PASSWORD,
            "--workload",
            workload,
            "--rounds",
            "5",
            "--duration",
            "8s",
            "--connections",
            "16",
            "--threads",
            "1",
            "--tables",
            "4",
            "--table-size",
            "20000",
        ]);
        if i == 0 {
            args.push("--setup");
        }
        bench(&args);
    }
    nodes
}

/// Read-your-writes per session (the default), off, and fleet-wide, side
/// by side: three concord nodes (separate one-node fleets, node ids 1..3)
/// in front of the same primary and two replicas, measured in
/// interleaved rounds.
async fn ryw() {
    let topo = Topology::start(2).await;
    let mut nodes = Vec::new();
    for (id, mode) in [(1u64, "session"), (2, "off"), (3, "fleet")] {
        let mut cfg = ConcordConfig::new(topo.backends());
        cfg.node_id = id;
        cfg.extra = format!("[log]\nlevel = \"warn\"\n[routing]\nread_your_writes = \"{mode}\"\n");
        let node = Concord::start(cfg).await;
        node.wait_readable(&["db2", "db3"]).await;
        nodes.push(node);
    }
    let on = format!(
        "ryw-session={},pid={}",
        nodes[0].addr(),
        nodes[0].pid().unwrap()
    );
    let off = format!(
        "ryw-off={},pid={}",
        nodes[1].addr(),
        nodes[1].pid().unwrap()
    );
    let fleet = format!(
        "ryw-fleet={},pid={}",
        nodes[2].addr(),
        nodes[2].pid().unwrap()
    );
    // RYW_WORKLOADS=a,b: only those. The `-token` workloads carry each
    // connection's last write token (from its OK packet) on its reads.
    let chosen = std::env::var("RYW_WORKLOADS")
        .unwrap_or_else(|_| "read-mostly,read-write,read-mostly-token,read-write-token".into());
    for (i, workload) in chosen.split(',').enumerate() {
        let mut args = vec![
            "compare",
            "--direct",
            "",
            "--proxy",
            on.as_str(),
            "--proxy",
            off.as_str(),
            "--proxy",
            fleet.as_str(),
            "--user",
            "app",
            "--password",
            PASSWORD,
            "--workload",
            workload,
            "--rounds",
            "5",
            "--duration",
            "8s",
            "--connections",
            "16",
            "--threads",
            "1",
            "--tables",
            "4",
            "--table-size",
            "20000",
        ];
        let primary = topo.primary.addr();
        args[2] = primary.as_str();
        if i == 0 {
            args.push("--setup");
        }
        bench(&args);
    }
    for n in &nodes {
        let (_, m) = n.http_get("/metrics").await.unwrap();
        let routed: Vec<&str> = m
            .lines()
            .filter(|l| {
                (l.starts_with("concord_routed_total")
                    || l.starts_with("concord_causal_reads_total")
                    || l.starts_with("concord_read_wait_seconds_sum")
                    || l.starts_with("concord_read_wait_seconds_count"))
                    && !l.ends_with(" 0")
            })
            .collect();
        println!("node {}:\n{}", n.cfg.node_id, routed.join("\n"));
    }
}

/// One fault class under write load (2 writers per node, unique
/// autocommit inserts), defaults but `failover.cooldown`; a fresh rig each.
/// Prints: the longest gap between acknowledged writes from the fault on,
/// client errors by kind, acknowledged writes, and those missing on the
/// primary at the end.
async fn fault_class(name: &str, fault: &str) {
    let mut rig = Rig::start("[log]\nlevel = \"warn\"\n[failover]\ncooldown = \"5s\"\n").await;
    let load = Load::start(&rig.fleet, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let wall0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let leader = rig.fleet.leader(Duration::from_secs(10)).await;
    match fault {
        "kill" => rig.primary.kill(),
        "blackhole" => {
            rig.repl_relay().black_hole();
            for r in rig.node_relays() {
                r.black_hole();
            }
        }
        "cut" => {
            rig.repl_relay().cut();
            for r in rig.node_relays() {
                r.cut();
            }
        }
        "freeze-leader" => rig.fleet.nodes[leader].signal("STOP"),
        "isolate-follower" => rig.fleet.isolate((leader + 1) % 3),
        "switchover" => {
            let _ = rig.fleet.nodes[0].admin_query("SWITCHOVER TO 'db2'").await;
        }
        _ => {}
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    if fault == "freeze-leader" {
        rig.fleet.nodes[leader].signal("CONT");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (acked, samples, errors) = load.stop().await;
    let gap = write_gap(&samples, t0 - Duration::from_millis(200));
    let primary = rig
        .primary_of(&rig.fleet.nodes[(leader + 2) % 3])
        .await
        .map(|(p, _)| p)
        .unwrap_or_else(|| "db1".into());
    let lost = missing_on(rig.server(&primary), &acked).await;
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for e in &errors {
        // The MySQL error code, else the start of the message.
        let k = e
            .split_once("ERROR ")
            .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
            .filter(|code: &String| !code.is_empty())
            .unwrap_or_else(|| e.chars().take(40).collect::<String>());
        *kinds.entry(k).or_default() += 1;
    }
    let observer = &rig.fleet.nodes[(leader + 2) % 3];
    // The leader that promoted counts the loss it computed.
    let mut reported = 0.0;
    for n in &rig.fleet.nodes {
        if let Some((_, body)) = n.http_get("/metrics").await {
            reported += body
                .lines()
                .find(|l| l.starts_with("concord_failover_lost_transactions_total"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    println!(
        "{name}: primary {primary}; longest write gap {:.2}s; client errors {} {kinds:?}; acknowledged {}; missing on the primary {lost}; reported lost {reported}",
        gap.as_secs_f64(),
        errors.len(),
        acked.len()
    );
    // What the fleet did, in ms from the fault.
    if let Ok(events) = observer.admin_query("SHOW EVENTS LIMIT 40").await {
        for e in events.iter().rev() {
            let at: u64 = e["at_ms"].as_deref().unwrap_or("0").parse().unwrap_or(0);
            if at >= wall0 {
                let detail: String = e["detail"]
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(110)
                    .collect();
                println!(
                    "    +{:>5} ms {:<10} {detail}",
                    at - wall0,
                    e["event"].as_deref().unwrap_or("")
                );
            }
        }
    }
}

async fn fault_classes() {
    for (name, fault) in [
        ("kill -9 of the primary", "kill"),
        ("primary black-holed (every link)", "blackhole"),
        ("primary cut (every link, connections refused)", "cut"),
        ("Raft leader frozen 8 s (SIGSTOP)", "freeze-leader"),
        ("a follower node cut off from the fleet", "isolate-follower"),
        ("SWITCHOVER TO 'db2'", "switchover"),
    ] {
        fault_class(name, fault).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("routing") => routing().await,
        Some("raft") => raft().await,
        Some("failover") => failover().await,
        Some("compare") => compare().await,
        Some("fleet") => fleet().await,
        Some("ryw") => ryw().await,
        Some("pool") => pool().await,
        Some("digests") => digests().await,
        Some("faults") => fault_classes().await,
        _ => {
            println!("usage: scenarios routing | raft | failover | compare | fleet | ryw | pool | digests | faults")
        }
    }
}
