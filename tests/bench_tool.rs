//! concord-bench itself: the mock server passes real clients, runs against
//! a real MariaDB are clean, open-loop mode exposes a stall that closed
//! loop hides, compare produces every target's row, timeline writes its
//! files, and agents on several hosts merge their histograms exactly.

use harness::bin::KillOnDrop;
use harness::cli::mariadb_ok;
use harness::{Concord, ConcordConfig, Fleet, MariaDb, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bench() -> Command {
    Command::new(harness::bin::workspace_bin("concord-bench"))
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "concord-bench failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_server_passes_real_clients() {
    let port = harness::ports::free_port();
    let mut child = bench()
        .args(["mock-server", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    harness::wait_port("the mock server", port).await;
    let out = mariadb_ok(
        port,
        "anyone",
        "anything",
        &[],
        "SELECT c FROM t WHERE id = 1; SELECT 1",
    );
    assert!(out.contains('1'), "{out}");
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("u"))
        .pass(Some("p"))
        .prefer_socket(false);
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let v: Option<String> = c
        .query_first("SELECT c FROM sbtest1 WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    let v: Option<String> = c
        .exec_first("SELECT c FROM sbtest1 WHERE id = ?", (5,))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    c.exec_drop("INSERT INTO t VALUES (?)", (1,)).await.unwrap();
    c.ping().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_mariadb_with_setup_is_clean() {
    let db = MariaDb::start("primary", 1).await;
    let target = db.addr();
    for workload in ["point-select", "point-select-ps", "read-write", "insert"] {
        let out = bench()
            .args([
                "run",
                "--target",
                &target,
                "--user",
                "root",
                "--password",
                PASSWORD,
            ])
            .args([
                "--tables",
                "2",
                "--table-size",
                "500",
                "--connections",
                "8",
                "--duration",
                "1s",
                "--warmup",
                "0s",
            ])
            .args(["--workload", workload, "--json"])
            .args(if workload == "point-select" {
                vec!["--setup"]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        let v = json_of(&out);
        let total = &v["total"];
        assert!(
            total["queries"].as_u64().unwrap() > 100,
            "{workload}: {total}"
        );
        assert_eq!(total["errors"].as_u64(), Some(0), "{workload}: {total}");
        let p50 = total["latency"]["p50_us"].as_u64().unwrap();
        let p99 = total["latency"]["p99_us"].as_u64().unwrap();
        assert!(p50 > 0 && p50 <= p99, "{workload}: {total}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_shows_the_stall_a_paused_proxy_causes() {
    let db = MariaDb::start("primary", 1).await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    let pid = node.pid().unwrap();
    let run = |rate: Option<&str>| {
        let mut cmd = bench();
        cmd.args([
            "run",
            "--target",
            &node.addr(),
            "--user",
            "app",
            "--password",
            PASSWORD,
        ])
        .args([
            "--connections",
            "8",
            "--duration",
            "4s",
            "--warmup",
            "0s",
            "--json",
        ]);
        if let Some(r) = rate {
            cmd.args(["--rate", r]);
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pause = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1200));
            let _ = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(1000));
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        });
        let out = child.wait_with_output().unwrap();
        pause.join().unwrap();
        json_of(&out)
    };
    // Empty tables for the default point-select workload.
    db.exec("CREATE DATABASE concord_bench").await;
    for t in 1..=4 {
        db.exec(&format!("CREATE TABLE concord_bench.sbtest{t} (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60))")).await;
    }
    let open = run(Some("1000"));
    let closed = run(None);
    let o = &open["total"]["latency"];
    let c = &closed["total"]["latency"];
    println!(
        "paused proxy 1 s: open loop p99 {} us max {} us; closed loop p99 {} us max {} us",
        o["p99_us"], o["max_us"], c["p99_us"], c["max_us"]
    );
    assert!(
        o["max_us"].as_u64().unwrap() >= 900_000,
        "open loop must report the 1 s stall: {o}"
    );
    assert!(
        o["p99_us"].as_u64().unwrap() >= 300_000,
        "queries due during the stall count from when they were due: {o}"
    );
    assert!(
        c["p99_us"].as_u64().unwrap() < o["p99_us"].as_u64().unwrap(),
        "closed loop hides the stall (coordinated omission)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_produces_every_target_and_timeline_writes_files() {
    let out = bench()
        .args([
            "compare",
            "--mock-backend",
            "--start-concord",
            "--haproxy",
            "--rounds",
            "1",
            "--duration",
            "1s",
        ])
        .args(["--warmup", "0s", "--connections", "4", "--json"])
        .output()
        .unwrap();
    let v = json_of(&out);
    let names: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["direct", "concord", "haproxy"]);
    for t in v["targets"].as_array().unwrap() {
        assert!(t["median"]["queries"].as_u64().unwrap() > 0, "{t}");
        if t["target"] != "direct" {
            assert!(t["queries_per_proxy_cpu_second"].as_f64().is_some(), "{t}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let port = harness::ports::free_port();
    let mut mock = bench()
        .args(["mock-server", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let csv = dir.path().join("t.csv");
    let svg = dir.path().join("t.svg");
    let out = bench()
        .args([
            "timeline",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--duration",
            "2s",
            "--connections",
            "4",
        ])
        .args(["--at", "1s", "--exec", "true", "--csv"])
        .arg(&csv)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("ms,qps,errors_per_s,p99_ms"));
    assert!(text.lines().count() >= 20, "{text}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let _ = mock.kill();
    let _ = mock.wait();
}

/// Three agents on loopback drive a 3-node fleet together. The merged
/// histogram must equal the one recorded in a single process from the same
/// samples (every agent returns its raw latencies for this check), counts
/// add up, and connections spread over all three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_merge_their_histograms_exactly_over_a_fleet() {
    let topo = Topology::start(1).await;
    topo.primary.exec("CREATE DATABASE concord_bench").await;
    for t in 1..=2 {
        topo.primary
            .exec(&format!("CREATE TABLE concord_bench.sbtest{t} (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60))"))
            .await;
    }
    topo.wait_replicated().await;
    let fleet = Fleet::start(3, topo.backends(), |_, c| {
        c.extra.push_str("[routing]\nmax_replica_lag = \"1h\"\n");
    })
    .await;
    let mut agents = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let port = harness::ports::free_port();
        let addr = format!("127.0.0.1:{port}");
        agents.push(KillOnDrop(
            bench()
                .args(["agent", "--listen", &addr, "--token", "s3cret"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        harness::wait_port("a bench agent", port).await;
        addrs.push(addr);
    }
    let mut cmd = bench();
    cmd.args([
        "run",
        "--agents",
        &addrs.join(","),
        "--agent-token",
        "s3cret",
    ]);
    for n in &fleet.nodes {
        cmd.args(["--target", &n.addr()]);
    }
    let out = cmd
        .args(["--user", "app", "--password", PASSWORD])
        .args(["--tables", "2", "--table-size", "100", "--connections", "4"])
        .args(["--duration", "2s", "--warmup", "0s"])
        .args(["--json", "--return-samples"])
        .output()
        .unwrap();
    let v = json_of(&out);
    let total = &v["total"];
    assert_eq!(total["errors"].as_u64(), Some(0), "{total}");
    let queries = total["queries"].as_u64().unwrap();
    let per_agent: Vec<u64> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["total"]["queries"].as_u64().unwrap())
        .collect();
    assert_eq!(per_agent.len(), 3);
    assert!(per_agent.iter().all(|q| *q > 0), "{per_agent:?}");
    assert_eq!(per_agent.iter().sum::<u64>(), queries);
    // 3 agents x 4 connections, round robin over 3 nodes: 4 each.
    let per_node: Vec<u64> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["queries"].as_u64().unwrap())
        .collect();
    assert!(
        per_node.len() == 3 && per_node.iter().all(|q| *q > 0),
        "{per_node:?}"
    );
    assert_eq!(per_node.iter().sum::<u64>(), queries);
    // One process's histogram of every sample the agents recorded.
    let mut single = concord_bench::stats::histogram();
    let samples = v["samples"].as_array().unwrap();
    for s in samples {
        single.record(s.as_u64().unwrap()).unwrap();
    }
    assert_eq!(samples.len() as u64, queries);
    let merged = concord_bench::agent::decode(v["histogram_v2_hex"].as_str().unwrap()).unwrap();
    assert_eq!(merged, single, "the merged histogram differs");
    let want = concord_bench::stats::Latency::of(&single);
    let got: concord_bench::stats::Latency =
        serde_json::from_value(total["latency"].clone()).unwrap();
    // The mean is a float that went through JSON: equal to rounding.
    assert!(
        (got.mean_us - want.mean_us).abs() < 1e-6,
        "{got:?} {want:?}"
    );
    assert_eq!(
        concord_bench::stats::Latency {
            mean_us: want.mean_us,
            ..got
        },
        want
    );
    println!(
        "3 agents: {queries} queries {per_agent:?} over nodes {per_node:?}, p50 {} us p99 {} us",
        want.p50_us, want.p99_us
    );
    // A wrong token is refused, by name.
    let out = bench()
        .args(["run", "--agents", &addrs[0], "--agent-token", "nope"])
        .args(["--target", &fleet.nodes[0].addr(), "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addrs[0]) && err.contains("token"), "{err}");
    drop(agents);
}
