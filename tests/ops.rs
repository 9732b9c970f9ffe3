//! What DBAs and SREs use: the admin port through the real mariadb client,
//! metrics that exist and move, drain under load, reload, graceful
//! shutdown, and the deployment files kept in step with the real config,
//! flags and metric names.

use harness::cli::{mariadb, mariadb_ok};
use harness::{Concord, ConcordConfig, MariaDb, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every document of a YAML file, as JSON values (through python3-yaml,
/// which the test dependencies install).
fn yaml_docs(path: &std::path::Path) -> Vec<serde_json::Value> {
    let mut py = Command::new("/usr/bin/python3");
    py.arg("-c").arg(
        "import sys, yaml, json; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
    );
    serde_json::from_slice(&ok_on(py, path)).unwrap()
}

/// Runs `cmd` on the file `path`; its standard output, after checking it
/// succeeded (else the file and the command's complaint).
fn ok_on(mut cmd: Command, path: &std::path::Path) -> Vec<u8> {
    let out = cmd.arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn concord_bin() -> std::path::PathBuf {
    harness::bin::workspace_bin("concord")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_with_the_mariadb_client() {
    let db = MariaDb::start("primary", 1).await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    let port = node.cfg.admin_port;
    let out = mariadb_ok(port, "admin", PASSWORD, &[], "SHOW BACKENDS");
    assert!(out.contains("db1") && out.contains("primary"), "{out}");
    let out = mariadb_ok(port, "admin", PASSWORD, &[], "SHOW CLUSTER");
    assert!(out.contains("leader"), "{out}");
    let bad = mariadb(port, "admin", "wrong", &[], "SHOW BACKENDS");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ERROR 1045 (28000)"));
    let bad = mariadb(port, "admin", PASSWORD, &[], "DROP TABLE everything");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("ERROR 1064") && err.contains("SHOW BACKENDS"),
        "{err}"
    );
    let bad = mariadb(port, "admin", PASSWORD, &[], "SET BACKEND 'nope' WEIGHT 5");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown backend 'nope'"));
    // KILL SESSION closes a client session.
    let mut c = node.conn().await;
    c.query_drop("SELECT 1").await.unwrap();
    let sessions = node.admin_query("SHOW SESSIONS").await.unwrap();
    let id = sessions[0]["id"].clone().unwrap();
    node.admin_query(&format!("KILL SESSION {id}"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c.query_drop("SELECT 1").await.is_err());
}

fn scrape_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Metric names in a Prometheus text scrape.
fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("concord_"))
        .map(|l| {
            let n = l.split(['{', ' ']).next().unwrap_or("");
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_string()
        })
        .collect()
}

fn documented() -> (BTreeSet<String>, BTreeSet<String>) {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let mut all = BTreeSet::new();
    let mut event_driven = BTreeSet::new();
    for l in doc.lines().filter(|l| l.starts_with("| `concord_")) {
        let name = l.split('`').nth(1).unwrap().to_string();
        if l.contains("appears after the first") {
            event_driven.insert(name.clone());
        }
        all.insert(name);
    }
    (all, event_driven)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exist_are_documented_and_move_under_load() {
    let topo = Topology::start(1).await;
    let backends = vec![
        ("db1".into(), topo.primary.addr(), Some("primary".into())),
        (
            "db2".into(),
            topo.replicas[0].addr(),
            Some("replica".into()),
        ),
    ];
    let node = Concord::start(ConcordConfig::new(backends)).await;
    harness::wait_for(
        "the replica to be readable",
        Duration::from_secs(20),
        || async {
            let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
            rows.iter()
                .any(|r| {
                    r["name"].as_deref() == Some("db2") && r["readable"].as_deref() == Some("yes")
                })
                .then_some(())
        },
    )
    .await;
    let (_, before) = node.http_get("/metrics").await.unwrap();
    let mut c = node.conn().await;
    for i in 0..200 {
        let _: Option<i64> = c.query_first(format!("SELECT {i}")).await.unwrap();
    }
    c.query_drop("CREATE TABLE test.m (a INT)").await.unwrap();
    let _ = c.query_drop("SELECT * FROM no_such_table").await;
    // One statement per routing reason the scrape checks below.
    c.query_drop("SELECT * FROM test.m FOR UPDATE")
        .await
        .unwrap();
    c.query_drop("SELECT LAST_INSERT_ID()").await.unwrap();
    c.query_drop("/* concord:primary */ SELECT 1")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // Byte counts reach the metrics every 64 KiB and when a session ends.
    c.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, after) = node.http_get("/metrics").await.unwrap();
    for s in [
        "concord_commands_total{command=\"query\"}",
        "concord_routed_total{target=\"replica\",reason=\"read\"}",
        "concord_backend_queries_total{backend=\"db2\"}",
        "concord_routed_total{target=\"primary\",reason=\"write\"}",
        "concord_routed_total{target=\"primary\",reason=\"locking_read\"}",
        "concord_routed_total{target=\"primary\",reason=\"connection_bound\"}",
        "concord_routed_total{target=\"primary\",reason=\"hint_primary\"}",
        "concord_routed_total{target=\"primary\",reason=\"transaction\"}",
        "concord_client_bytes_total{direction=\"in\"}",
        "concord_client_bytes_total{direction=\"out\"}",
    ] {
        assert!(
            scrape_value(&after, s) > scrape_value(&before, s),
            "{s} did not move"
        );
    }
    assert!(after.contains("concord_backend_query_duration_seconds_bucket{backend=\"db2\""));
    assert!(scrape_value(&after, "concord_lease_valid") == 1.0);
    let (docs, event_driven) = documented();
    let scraped = names(&after);
    for n in &docs {
        assert!(
            scraped.contains(n) || event_driven.contains(n),
            "documented metric {n} is not exported"
        );
    }
    for n in &scraped {
        assert!(
            docs.contains(n),
            "exported metric {n} is not in docs/metrics.md"
        );
    }
    // The dashboard only uses metrics that exist.
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/concord-dashboard.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dash).unwrap();
    let mut used = BTreeSet::new();
    for p in v["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            for w in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if w.starts_with("concord_") {
                    used.insert(w.trim_end_matches("_bucket").to_string());
                }
            }
        }
    }
    for u in used {
        assert!(docs.contains(&u), "dashboard uses unknown metric {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_sysbench_load_moves_reads_with_zero_errors() {
    let topo = Topology::start(2).await;
    let backends = topo.backends();
    let node = Concord::start(ConcordConfig::new(backends)).await;
    harness::wait_for("replicas readable", Duration::from_secs(20), || async {
        let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
        (rows
            .iter()
            .filter(|r| r["readable"].as_deref() == Some("yes"))
            .count()
            == 3)
            .then_some(())
    })
    .await;
    let port = node.cfg.port.to_string();
    let sb = move |args: Vec<String>| {
        let port = port.clone();
        std::thread::spawn(move || {
            Command::new("sysbench")
                .arg("oltp_read_only")
                .args([
                    "--mysql-host=127.0.0.1".to_string(),
                    format!("--mysql-port={port}"),
                    "--mysql-user=app".into(),
                    format!("--mysql-password={PASSWORD}"),
                    "--mysql-db=test".into(),
                    "--tables=2".into(),
                    "--table-size=2000".into(),
                ])
                .args(args)
                .output()
                .unwrap()
        })
    };
    assert!(sb(vec!["prepare".into()]).join().unwrap().status.success());
    topo.wait_replicated().await;
    let run = sb([
        "--threads=8",
        "--time=8",
        "--skip_trx=on",
        "--mysql-ignore-errors=none",
        "run",
    ]
    .map(String::from)
    .to_vec());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    let rows = node
        .admin_query("DRAIN BACKEND 'db2' TIMEOUT '10s'")
        .await
        .unwrap();
    drop(rows);
    println!("drain of db2 under load finished in {:?}", t.elapsed());
    let q0 = backend_queries(&node, "db2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let q1 = backend_queries(&node, "db2").await;
    assert_eq!(q0, q1, "queries still reach the drained backend");
    let out = run.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ignored errors:                      0"),
        "{text}"
    );
    let b = node.admin_query("SHOW BACKENDS").await.unwrap();
    let db2 = b
        .iter()
        .find(|r| r["name"].as_deref() == Some("db2"))
        .unwrap();
    assert_eq!(db2["state"].as_deref(), Some("draining"));
    assert_eq!(db2["active_conns"].as_deref(), Some("0"));
    node.admin_query("UNDRAIN BACKEND 'db2'").await.unwrap();
}

async fn backend_queries(node: &Concord, name: &str) -> String {
    let b = node.admin_query("SHOW BACKENDS").await.unwrap();
    b.iter()
        .find(|r| r["name"].as_deref() == Some(name))
        .and_then(|r| r["queries"].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_users_and_graceful_shutdown() {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE USER 'late'@'%' IDENTIFIED BY 'late-pw'")
        .await;
    db.exec("GRANT ALL ON *.* TO 'late'@'%'").await;
    let mut node = Concord::start(ConcordConfig::single(&db.addr())).await;
    assert!(mysql_async::Conn::new(node.opts_for("late", "late-pw"))
        .await
        .is_err());
    let mut keep = node.conn().await;
    // SIGHUP reloads users without dropping sessions; a broken file is
    // refused and changes nothing.
    let path = node.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{good}\n[[users]]\nname = \"late\"\npassword = \"late-pw\"\n"),
    )
    .unwrap();
    node.signal("HUP");
    harness::wait_for("the new user", Duration::from_secs(5), || async {
        mysql_async::Conn::new(node.opts_for("late", "late-pw"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    std::fs::write(&path, "[listener]\naddr = 'broken").unwrap();
    let e = node.admin_query("RELOAD CONFIG").await.unwrap_err();
    assert!(e.to_string().contains("running config stays"), "{e}");
    keep.query_drop("SELECT 1").await.unwrap();
    std::fs::write(&path, &good).unwrap();

    // SIGTERM: an open transaction may finish, then the node exits.
    keep.query_drop("CREATE TABLE test.g (a INT)")
        .await
        .unwrap();
    keep.query_drop("BEGIN").await.unwrap();
    keep.query_drop("INSERT INTO test.g VALUES (1)")
        .await
        .unwrap();
    node.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        node.http_get("/readyz").await,
        Some((503, _)) | None
    ));
    keep.query_drop("INSERT INTO test.g VALUES (2)")
        .await
        .unwrap();
    keep.query_drop("COMMIT").await.unwrap();
    let n: Option<i64> = db
        .conn()
        .await
        .query_first("SELECT COUNT(*) FROM test.g")
        .await
        .unwrap();
    assert_eq!(n, Some(2), "the transaction finished during shutdown");
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.is_running() {
        assert!(
            Instant::now() < deadline,
            "concord did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn deployment_files_match_the_real_config_and_flags() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |path: &std::path::Path| {
        let mut c = Command::new(concord_bin());
        c.arg("check-config");
        ok_on(c, path);
    };
    for i in 1..=3 {
        check(&root.join(format!("deploy/compose/concord-{i}.toml")));
    }
    // The Kubernetes template, rendered the way its init container does.
    let k8s = std::fs::read_to_string(root.join("deploy/kubernetes/concord.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let docs = yaml_docs(&root.join("deploy/kubernetes/concord.yaml"));
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let tmpl = cm["data"]["concord.toml.tmpl"].as_str().unwrap();
    let rendered = tmpl
        .replace("__NODE_ID__", "1")
        .replace("__POD__", "concord-0")
        .replace("__SECRET__", "s")
        .replace("__ADMIN_PASSWORD__", "a")
        .replace("__APP_PASSWORD__", "p")
        .replace("__MONITOR_PASSWORD__", "m")
        .replace("__REPL_PASSWORD__", "r");
    assert!(
        !rendered.contains("__"),
        "a placeholder is left: {rendered}"
    );
    let f = dir.path().join("k8s.toml");
    std::fs::write(&f, rendered).unwrap();
    check(&f);
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let args = &sts["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "--config");
    assert!(k8s.contains("/readyz") && k8s.contains("/healthz"));
    // The load Jobs: as many agents as the coordinator names, reachable
    // under the names it uses, aiming at the StatefulSet's pods.
    let bench = yaml_docs(&root.join("deploy/kubernetes/bench.yaml"));
    let job = |name: &str| {
        bench
            .iter()
            .find(|d| d["kind"] == "Job" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Job {name}"))
            .clone()
    };
    let agents = job("concord-bench-agent");
    let n = agents["spec"]["completions"].as_u64().unwrap();
    assert_eq!(agents["spec"]["parallelism"].as_u64(), Some(n));
    let pod = &agents["spec"]["template"]["spec"];
    assert_eq!(pod["subdomain"], "concord-bench-agents");
    let a_args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(a_args.contains(&"agent") && a_args.contains(&"--once"));
    let coord = job("concord-bench-coordinator");
    let c_args: Vec<&str> = coord["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let after = |flag: &str| -> Vec<&str> {
        c_args
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1])
            .collect()
    };
    let listed: Vec<String> = after("--agents")[0]
        .split(',')
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..n)
        .map(|i| format!("concord-bench-agent-{i}.concord-bench-agents:7070"))
        .collect();
    assert_eq!(listed, want);
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    let targets: Vec<String> = (0..replicas)
        .map(|i| format!("concord-{i}.concord-raft:3306"))
        .collect();
    assert_eq!(after("--target"), targets);
    // Compose parses and runs concord with the flags concord has.
    let c = yaml_docs(&root.join("deploy/compose/docker-compose.yml"))[0].clone();
    for n in 1..=3 {
        assert_eq!(
            c["services"][format!("concord{n}")]["command"][0],
            "--config"
        );
    }
    let help = Command::new(concord_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--config") && help.contains("check-config"),
        "{help}"
    );
    let unit = std::fs::read_to_string(root.join("deploy/systemd/concord.service")).unwrap();
    assert!(unit.contains("concord check-config /etc/concord/concord.toml"));
    assert!(unit.contains("concord --config /etc/concord/concord.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_in_place_are_picked_up_by_reload() {
    let db = MariaDb::start("primary", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (old_dir, new_dir) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let (cert, key) = harness::certs::self_signed(&old_dir);
    let (new_cert, new_key) = harness::certs::self_signed(&new_dir);
    // The node reads its certificate from a path that is rewritten in
    // place, as certbot or a secrets agent does.
    let live_dir = dir.path().join("live");
    std::fs::create_dir_all(&live_dir).unwrap();
    let (live_cert, live_key) = (live_dir.join("cert.pem"), live_dir.join("key.pem"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.listener_extra = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        live_cert.display(),
        live_key.display()
    );
    let node = Concord::start(cfg).await;
    let port = node.cfg.port;
    let verified = |ca: &std::path::Path| {
        let ca = format!("--ssl-ca={}", ca.display());
        mariadb(
            port,
            "app",
            PASSWORD,
            &["--ssl", &ca, "--ssl-verify-server-cert"],
            "SELECT 1",
        )
        .status
        .success()
    };
    assert!(verified(&cert), "the first certificate verifies");
    assert!(!verified(&new_cert), "a different CA does not");
    let mut keep = node.conn().await;
    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    let rows = node.admin_query("RELOAD CONFIG").await.unwrap();
    println!("{rows:?}");
    assert!(
        verified(&new_cert),
        "new connections get the rotated certificate"
    );
    assert!(!verified(&cert));
    keep.query_drop("SELECT 1").await.unwrap();
}

/// db2's row on every node: (state, active + idle connections).
async fn backend_everywhere(fleet: &harness::Fleet, name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for n in &fleet.nodes {
        let rows = n.admin_query("SHOW BACKENDS").await.unwrap();
        let r = rows.iter().find(|r| r["name"].as_deref() == Some(name));
        out.push(match r {
            Some(r) => {
                let num = |k: &str| {
                    r[k].as_deref()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                (
                    r["state"].clone().unwrap_or_default(),
                    num("active_conns") + num("idle_conns"),
                )
            }
            None => ("absent".to_string(), 0),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mutations_take_effect_on_every_node_and_drain_is_fleet_wide() {
    let topo = Topology::start(3).await;
    let backends = topo.backends()[..3].to_vec(); // db4 is added at run time
    let fleet = harness::Fleet::start(3, backends, |_, _| {}).await;
    // Every node holds a replica connection to db2 from a read (weights
    // make db2 the only choice).
    fleet.nodes[0]
        .admin_query("SET BACKEND 'db3' WEIGHT 0")
        .await
        .unwrap();
    harness::wait_for(
        "db2 readable everywhere",
        Duration::from_secs(20),
        || async {
            for n in &fleet.nodes {
                let rows = n.admin_query("SHOW BACKENDS").await.ok()?;
                let db2 = rows.iter().find(|r| r["name"].as_deref() == Some("db2"))?;
                (db2["readable"].as_deref() == Some("yes")).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    let mut readers = Vec::new();
    for n in &fleet.nodes {
        let mut c = n.conn().await;
        // A replica can fall out of the lag bound for a moment on a loaded
        // machine (the read then goes to the primary): ask again.
        let mut id = None;
        for _ in 0..50 {
            id = c.query_first("SELECT @@server_id").await.unwrap();
            if id == Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(id, Some(2));
        readers.push(c);
    }
    // Node 3's session sits inside a read-only transaction on db2: the
    // drain cannot finish and says who holds it.
    readers[2]
        .query_drop("START TRANSACTION READ ONLY")
        .await
        .unwrap();
    let _: Option<u32> = readers[2].query_first("SELECT @@server_id").await.unwrap();
    let e = fleet.nodes[1]
        .admin_query("DRAIN BACKEND 'db2' TIMEOUT '2s'")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("timed out") && e.contains("node 3"), "{e}");
    readers[2].query_drop("COMMIT").await.unwrap();
    fleet.nodes[1]
        .admin_query("DRAIN BACKEND 'db2' TIMEOUT '10s'")
        .await
        .unwrap();
    assert_eq!(
        backend_everywhere(&fleet, "db2").await,
        vec![("draining".to_string(), 0); 3],
        "no node holds a connection to the drained backend"
    );
    for c in readers.iter_mut() {
        let id: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
        assert_ne!(id, Some(2), "no read reaches the drained backend");
    }
    fleet.nodes[2]
        .admin_query("UNDRAIN BACKEND 'db2'")
        .await
        .unwrap();
    fleet.nodes[0]
        .admin_query("SET BACKEND 'db2' MAINTENANCE ON")
        .await
        .unwrap();
    let states: Vec<String> = backend_everywhere(&fleet, "db2")
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(states, vec!["maintenance"; 3]);
    fleet.nodes[1]
        .admin_query("SET BACKEND 'db2' MAINTENANCE OFF")
        .await
        .unwrap();
    // ADD BACKEND / REMOVE BACKEND, seen by all three.
    fleet.nodes[2]
        .admin_query(&format!(
            "ADD BACKEND 'db4' ADDRESS '{}'",
            topo.replicas[2].addr()
        ))
        .await
        .unwrap();
    let added = backend_everywhere(&fleet, "db4").await;
    assert!(added.iter().all(|(s, _)| s == "active"), "{added:?}");
    fleet.nodes[0]
        .admin_query("REMOVE BACKEND 'db4'")
        .await
        .unwrap();
    let removed = backend_everywhere(&fleet, "db4").await;
    assert!(removed.iter().all(|(s, _)| s == "absent"), "{removed:?}");
    let e = fleet.nodes[0]
        .admin_query("DRAIN BACKEND 'nope'")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown backend 'nope'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_preflight_says_what_the_settings_put_at_risk() {
    // The harness runs MariaDB with sync_binlog = 0 and
    // innodb_flush_log_at_trx_commit = 2 (fast tests; unsafe for real).
    let db = MariaDb::start("primary", 1).await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    let preflight = || async {
        let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
        rows.first()?.get("preflight").cloned().flatten()
    };
    let found = harness::wait_for("preflight findings", Duration::from_secs(15), || async {
        preflight().await.filter(|p| p != "ok")
    })
    .await;
    println!("SHOW BACKENDS preflight: {found}");
    assert!(found.contains("sync_binlog is 0"), "{found}");
    assert!(
        found.contains("innodb_flush_log_at_trx_commit is 2"),
        "{found}"
    );
    let (code, body) = node.http_get("/readyz").await.unwrap();
    assert_eq!(code, 200, "findings do not stop routing: {body}");
    assert!(body.contains("preflight db1: sync_binlog is 0"), "{body}");
    assert!(node
        .logs()
        .contains("replication preflight: sync_binlog is 0"));
    // Fixed on the server: the finding goes (settings are read again
    // every 10 s).
    db.exec("SET GLOBAL sync_binlog = 1").await;
    db.exec("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
        .await;
    harness::wait_for("preflight ok", Duration::from_secs(25), || async {
        preflight().await.filter(|p| p == "ok")
    })
    .await;
}

/// A replica that takes writes is named in the preflight: reads go to
/// it, and a read that writes (a stored function) would commit there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_replica_is_named_in_the_preflight() {
    let topo = harness::Topology::start(1).await;
    let node = Concord::start(ConcordConfig::new(topo.backends())).await;
    topo.replicas[0].exec("SET GLOBAL read_only = 0").await;
    let found = harness::wait_for(
        "the writable replica named",
        Duration::from_secs(15),
        || async {
            let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
            let db2 = rows.iter().find(|r| r["name"].as_deref() == Some("db2"))?;
            db2["preflight"]
                .clone()
                .filter(|p| p.contains("read_only is OFF"))
        },
    )
    .await;
    println!("SHOW BACKENDS preflight of db2: {found}");
}

/// A replica that heartbeats do not reach (a replication filter on
/// concord's schema) is stale by an unknown amount: Seconds_Behind_Master
/// reads 0 there whatever it misses. It serves no reads, and the preflight
/// says why. Test-only `lag-from-seconds-behind`: it is readable, with
/// 999 ms of lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_heartbeats_serves_no_reads() {
    for (hooks, readable) in [("", "no"), ("lag-from-seconds-behind", "yes")] {
        let topo = harness::Topology::start(1).await;
        let r = &topo.replicas[0];
        r.exec("STOP SLAVE").await;
        r.exec("SET GLOBAL replicate_wild_ignore_table = 'concord.%'")
            .await;
        r.exec("START SLAVE").await;
        let mut cfg = ConcordConfig::new(topo.backends());
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        let row = harness::wait_for("db2 probed", Duration::from_secs(15), || async {
            let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
            let db2 = rows
                .into_iter()
                .find(|r| r["name"].as_deref() == Some("db2"))?;
            // After a few heartbeats and probes.
            (db2["lag_ms"].is_some() || db2["preflight"].is_some()).then_some(db2)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let db2 = db2_row(&node).await;
        println!("hooks {hooks:?}: db2 {row:?}, then {db2:?}");
        readable_as(&db2, readable, "heartbeat", hooks);
    }
}

/// SWITCHOVER TO a replica that cannot catch up is refused before any
/// write is held: the epoch does not move. Test-only
/// `switchover-any-target`: the switchover freezes writes, waits out
/// `failover.catchup_timeout` (2 s here, 5 s with `backup`) and aborts,
/// under a new epoch. `backup`: db2's applier waits behind a backup's FLUSH TABLES WITH READ
/// LOCK (it still replicates, lag small at first); else its SQL thread
/// is stopped.
async fn switchover_to_a_replica_that_cannot_catch_up(backup: bool) {
    for (hooks, frozen) in [("", false), ("switchover-any-target", true)] {
        let topo = harness::Topology::start(1).await;
        let mut cfg = ConcordConfig::new(topo.backends());
        cfg.test_hooks = hooks.into();
        // (Backup: long enough that db2's growing lag is not refused first.)
        let catchup = if backup { "5s" } else { "2s" };
        cfg.extra = format!("[failover]\ncatchup_timeout = \"{catchup}\"\n");
        let node = Concord::start(cfg).await;
        let epoch = || async {
            let rows = node.admin_query("SHOW BACKENDS").await.unwrap();
            rows[0]["epoch"].clone().unwrap_or_default()
        };
        db2_readable(&node, "yes").await;
        let before = epoch().await;
        let mut lock = topo.replicas[0].conn().await;
        if backup {
            lock.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .unwrap();
        } else {
            lock.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
        }
        topo.primary
            .exec("CREATE TABLE test.behind (id INT PRIMARY KEY)")
            .await;
        if backup {
            harness::rig::wait_applier_held_by_backup(&topo.replicas[0]).await;
        } else {
            db2_readable(&node, "no").await;
        }
        let t = std::time::Instant::now();
        let out = node.admin_query("SWITCHOVER TO 'db2'").await;
        println!(
            "hooks {hooks:?}, backup {backup}: {out:?} after {:?}",
            t.elapsed()
        );
        let err = format!("{:?}", out.expect_err("refused"));
        let after = epoch().await;
        assert_eq!(
            after != before,
            frozen,
            "hooks {hooks:?}: epoch {before} -> {after}"
        );
        if !frozen {
            let why = if backup {
                "state 'Waiting for backup lock'"
            } else {
                "not replicating"
            };
            assert!(err.contains(why), "{err}");
        }
        let _ = lock.query_drop("UNLOCK TABLES").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_a_replica_that_cannot_catch_up_is_refused_at_once() {
    switchover_to_a_replica_that_cannot_catch_up(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_a_replica_a_backup_holds_is_refused_at_once() {
    switchover_to_a_replica_that_cannot_catch_up(true).await;
}

/// Waits until SHOW BACKENDS says db2's `readable` is `want`.
async fn db2_readable(node: &Concord, want: &str) {
    harness::wait_for("db2's readable column", Duration::from_secs(15), || async {
        let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
        rows.iter()
            .any(|r| r["name"].as_deref() == Some("db2") && r["readable"].as_deref() == Some(want))
            .then_some(())
    })
    .await;
}

/// A replica whose heartbeat table is locked (its SQL thread blocks on
/// it, so it falls behind by an unknown amount): the lag read hangs, and
/// is cut off at `monitor.timeout`, so the replica's lag becomes unknown
/// and it stops serving reads. Test-only `lag-read-unbounded`: the read
/// hangs the probe loop, the last good health stays, and the replica
/// stays readable while it is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_lag_read_hangs_serves_no_reads() {
    for (hooks, readable) in [("", "no"), ("lag-read-unbounded", "yes")] {
        let topo = harness::Topology::start(1).await;
        let mut cfg = ConcordConfig::new(topo.backends());
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        db2_readable(&node, "yes").await;
        let mut lock = topo.replicas[0].conn().await;
        lock.query_drop("LOCK TABLES concord.heartbeat WRITE")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let db2 = db2_row(&node).await;
        println!("hooks {hooks:?}: db2 after 3 s of a locked heartbeat table: {db2:?}");
        lock.query_drop("UNLOCK TABLES").await.unwrap();
        readable_as(&db2, readable, "monitor.timeout", hooks);
    }
}

/// A node cut off from the fleet loses its lease and stops writing its
/// heartbeat row, but keeps serving reads from replicas: it reads their
/// lag from the freshest row of any node, not from its own, which stopped
/// moving. Test-only `lag-own-row-only`: its own stale row makes the
/// replica lag more and more on that node, and it stops reading from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_lease_reads_lag_from_the_freshest_heartbeat() {
    for (hooks, readable) in [("", "yes"), ("lag-own-row-only", "no")] {
        let topo = harness::Topology::start(1).await;
        let fleet = harness::Fleet::start(3, topo.backends(), |_, c| {
            c.test_hooks = hooks.into();
        })
        .await;
        for n in &fleet.nodes {
            n.wait_readable(&["db2"]).await;
        }
        // Long enough for its own row to fall past the 1 s bound.
        fleet.isolate(0);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let rows = fleet.nodes[0].admin_query("SHOW BACKENDS").await.unwrap();
        fleet.heal(0);
        let db2 = rows
            .into_iter()
            .find(|r| r["name"].as_deref() == Some("db2"))
            .unwrap();
        println!(
            "hooks {hooks:?}: node 1 cut off for 4 s; its db2: readable {:?}, lag_ms {:?}",
            db2["readable"], db2["lag_ms"]
        );
        assert_eq!(
            db2["readable"].as_deref(),
            Some(readable),
            "hooks {hooks:?}"
        );
    }
}

/// db2's row of SHOW BACKENDS.
async fn db2_row(node: &Concord) -> std::collections::BTreeMap<String, Option<String>> {
    node.admin_query("SHOW BACKENDS")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r["name"].as_deref() == Some("db2"))
        .unwrap()
}

/// db2 is `readable` ("yes"/"no"); when not, its preflight says `why`.
fn readable_as(
    db2: &std::collections::BTreeMap<String, Option<String>>,
    readable: &str,
    why: &str,
    hooks: &str,
) {
    assert_eq!(
        db2["readable"].as_deref(),
        Some(readable),
        "hooks {hooks:?}"
    );
    if readable == "no" {
        assert!(
            db2["preflight"].as_deref().is_some_and(|p| p.contains(why)),
            "{db2:?}"
        );
    }
}
