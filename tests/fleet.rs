//! The Raft fleet: three real concord processes on loopback agreeing on
//! the topology, electing new leaders, catching up after restarts, and a
//! node cut off from the quorum stopping writes within its lease.

use harness::{Fleet, MariaDb};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};

fn backends(db: &MariaDb) -> Vec<(String, String, Option<String>)> {
    vec![("db1".into(), db.addr(), None)]
}

async fn weight_on(node: &harness::Concord, name: &str) -> Option<String> {
    let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
    rows.into_iter()
        .find(|r| r.get("name").cloned().flatten().as_deref() == Some(name))
        .and_then(|r| r.get("weight").cloned().flatten())
}

async fn wait_weight(node: &harness::Concord, want: &str) {
    harness::wait_for(
        &format!("weight {want} on node {}", node.cfg.node_id),
        Duration::from_secs(10),
        || async { (weight_on(node, "db1").await.as_deref() == Some(want)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_node_is_applied_on_all_three() {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.w (id INT AUTO_INCREMENT PRIMARY KEY, node INT)")
        .await;
    let fleet = Fleet::start(3, backends(&db), |_, _| {}).await;

    let cluster = fleet.nodes[1].admin_query("SHOW CLUSTER").await.unwrap();
    assert_eq!(cluster.len(), 3, "{cluster:?}");
    let leaders = cluster
        .iter()
        .filter(|r| r["role"].as_deref() == Some("leader"))
        .count();
    assert_eq!(leaders, 1, "{cluster:?}");
    assert!(
        cluster.iter().all(|r| r["epoch"].as_deref() == Some("1")),
        "{cluster:?}"
    );

    fleet.nodes[2]
        .admin_query("SET BACKEND 'db1' WEIGHT 42")
        .await
        .unwrap();
    for n in &fleet.nodes {
        wait_weight(n, "42").await;
    }
    let events = fleet.nodes[0].admin_query("SHOW EVENTS").await.unwrap();
    assert!(events
        .iter()
        .any(|e| e["event"].as_deref() == Some("set_weight") && e["node"].as_deref() == Some("3")));
    assert!(events
        .iter()
        .any(|e| e["event"].as_deref() == Some("discover")));

    // Every node routes writes to the same primary under the same epoch.
    for n in &fleet.nodes {
        let mut c = n.conn().await;
        c.exec_drop("INSERT INTO test.w (node) VALUES (?)", (n.cfg.node_id,))
            .await
            .unwrap();
        let st: (u64, u64, String) = c
            .query_first("SHOW CONCORD STATUS")
            .await
            .unwrap()
            .map(|r: mysql_async::Row| {
                (
                    r.get::<u64, _>("node_id").unwrap(),
                    r.get::<u64, _>("write_epoch").unwrap(),
                    r.get::<String, _>("primary").unwrap(),
                )
            })
            .unwrap();
        assert_eq!(st, (n.cfg.node_id, 1, "db1".into()));
    }
    let n: Option<i64> = db
        .conn()
        .await
        .query_first("SELECT COUNT(*) FROM test.w")
        .await
        .unwrap();
    assert_eq!(n, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_dies_a_new_one_takes_over_and_the_old_one_catches_up() {
    let db = MariaDb::start("primary", 1).await;
    let mut fleet = Fleet::start(3, backends(&db), |_, _| {}).await;
    let old = fleet.leader(Duration::from_secs(10)).await;
    fleet.nodes[old].kill();
    let t = Instant::now();
    let new = fleet.leader(Duration::from_secs(15)).await;
    let elected = t.elapsed();
    assert_ne!(new, old);
    println!("leader failover: new leader agreed {elected:?} after kill -9 of the old one");

    // Changes keep committing, through a follower too.
    let follower = (0..3).find(|i| *i != old && *i != new).unwrap();
    fleet.nodes[follower]
        .admin_query("SET BACKEND 'db1' WEIGHT 7")
        .await
        .unwrap();
    wait_weight(&fleet.nodes[new], "7").await;
    let mut c = fleet.nodes[follower].conn().await;
    c.query_drop("CREATE TABLE test.after_failover (id INT)")
        .await
        .unwrap();

    // The killed node restarts from its data dir and catches up.
    fleet.nodes[old].restart().await;
    fleet.nodes[old].wait_ready().await;
    wait_weight(&fleet.nodes[old], "7").await;
    let cluster = fleet.nodes[old].admin_query("SHOW CLUSTER").await.unwrap();
    let me = cluster
        .iter()
        .find(|r| r["node_id"].as_deref() == Some(&fleet.nodes[old].cfg.node_id.to_string()))
        .unwrap();
    assert_eq!(me["role"].as_deref(), Some("follower"), "{cluster:?}");
    assert_eq!(me["epoch"].as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_stops_writes_within_its_lease_and_recovers() {
    let db = MariaDb::start("primary", 1).await;
    let fleet = Fleet::start(3, backends(&db), |_, c| {
        c.extra
            .push_str("[failover]\nwrite_buffer_timeout = \"1500ms\"\n");
    })
    .await;
    let lease = Duration::from_millis(1000);
    // Cut a follower, then the leader itself.
    for round in 0..2 {
        let leader = fleet.leader(Duration::from_secs(10)).await;
        let victim = if round == 0 { (leader + 1) % 3 } else { leader };
        let node = &fleet.nodes[victim];
        let t = Instant::now();
        fleet.isolate(victim);
        let stopped = harness::wait_for(
            "the cut-off node to report not ready",
            Duration::from_secs(10),
            || async {
                match node.http_get("/readyz").await {
                    Some((503, _)) => Some(t.elapsed()),
                    _ => None,
                }
            },
        )
        .await;
        println!(
            "round {round} ({}): cut-off node stopped routing writes after {stopped:?} (lease {lease:?})",
            if round == 0 { "follower" } else { "leader" }
        );
        assert!(
            stopped < lease + Duration::from_millis(1500),
            "took {stopped:?}"
        );

        // Everything its clients send to the primary (a write, and the
        // driver's own reads at connect: the only backend is the primary)
        // is held, then refused with a clear error.
        let e = match mysql_async::Conn::new(node.opts()).await {
            Ok(mut c) => c
                .query_drop("CREATE TABLE test.minority_write (id INT)")
                .await
                .unwrap_err(),
            Err(e) => e,
        };
        match e {
            mysql_async::Error::Server(s) => {
                assert_eq!(s.code, 1290, "{s:?}");
                assert!(
                    s.message.contains("no quorum") || s.message.contains("failover"),
                    "{}",
                    s.message
                );
                assert!(s.message.contains("not executed"), "{}", s.message);
            }
            other => panic!("{other:?}"),
        }
        // The majority keeps serving writes.
        let majority = (0..3).find(|i| *i != victim).unwrap();
        let mut m = fleet.nodes[majority].conn().await;
        m.query_drop(format!("CREATE TABLE test.majority_{round} (id INT)"))
            .await
            .unwrap();

        fleet.heal(victim);
        harness::wait_for(
            "the healed node to be ready",
            Duration::from_secs(15),
            || async { matches!(node.http_get("/readyz").await, Some((200, _))).then_some(()) },
        )
        .await;
        let mut c = node.conn().await;
        c.query_drop(format!("CREATE TABLE test.healed_{round} (id INT)"))
            .await
            .unwrap();
    }
    let tables: Vec<String> = db.query("SHOW TABLES FROM test").await;
    assert!(
        !tables.iter().any(|t| t == "minority_write"),
        "a fenced write reached the database: {tables:?}"
    );
}

/// The primary and epoch node `n` has applied.
async fn agreed(n: &harness::Concord) -> Option<(String, u64)> {
    let rows = n.admin_query("SHOW CLUSTER").await.ok()?;
    let me = rows
        .iter()
        .find(|r| r["node_id"].as_deref() == Some(&n.cfg.node_id.to_string()))?;
    Some((me["primary"].clone()?, me["epoch"].clone()?.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_see_the_epoch_go_backwards_while_leaders_die() {
    // Leaders are killed (Raft elections, same epoch) and the primary is
    // switched over between kills (new epochs), while a client on every
    // node writes and records the epoch each write was routed under. Each
    // write must have run on the primary of exactly that epoch, and no
    // client may see the epoch go backwards.
    let topo = harness::Topology::start(2).await;
    topo.primary
        .exec("CREATE TABLE test.lin (id INT AUTO_INCREMENT PRIMARY KEY, node INT, origin INT)")
        .await;
    let backends = topo.backends();
    let mut fleet = Fleet::start(3, backends, |_, c| {
        c.extra.push_str(&format!(
            "[failover]\nreplication_user = \"repl\"\nreplication_password = \"{}\"\n",
            harness::PASSWORD
        ));
    })
    .await;
    let mut epochs = std::collections::BTreeMap::new();
    let (p, e) = agreed(&fleet.nodes[0]).await.unwrap();
    epochs.insert(e, p);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in &fleet.nodes {
        let opts = n.opts();
        let node_id = n.cfg.node_id;
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            // (epoch routed under, row id)
            let mut log: Vec<(u64, u64)> = Vec::new();
            let mut errors = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut c) = mysql_async::Conn::new(opts.clone()).await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if c.exec_drop(
                        "INSERT INTO test.lin (node, origin) VALUES (?, @@server_id)",
                        (node_id,),
                    )
                    .await
                    .is_err()
                    {
                        errors += 1;
                        break;
                    }
                    let id = c.last_insert_id().unwrap_or(0);
                    let row: Option<mysql_async::Row> =
                        match c.query_first("SHOW CONCORD STATUS").await {
                            Ok(r) => r,
                            Err(_) => break,
                        };
                    let epoch: u64 = row.and_then(|r| r.get("write_epoch")).unwrap_or(0);
                    log.push((epoch, id));
                }
            }
            (node_id, log, errors)
        }));
    }
    for target in ["db2", "db3", "db1"] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let l = fleet.leader(Duration::from_secs(15)).await;
        fleet.nodes[l].kill();
        fleet.leader(Duration::from_secs(15)).await;
        fleet.nodes[l].restart().await;
        fleet.nodes[l].wait_ready().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let via = (l + 1) % 3;
        fleet.nodes[via]
            .admin_query(&format!("SWITCHOVER TO '{target}'"))
            .await
            .unwrap_or_else(|e| panic!("switchover to {target}: {e}"));
        // SHOW CLUSTER asks every node over Raft RPC; right after an
        // election one of them may not answer yet: ask again.
        let (p, e) = harness::wait_for("SHOW CLUSTER to answer", Duration::from_secs(10), || {
            agreed(&fleet.nodes[via])
        })
        .await;
        assert_eq!(p, target);
        assert!(
            epochs.keys().all(|old| *old < e),
            "the epoch grew: {epochs:?} then {e}"
        );
        epochs.insert(e, p);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Every client's last write acknowledged before the rows are read (a
    // write in flight when `stop` was set may be acknowledged after it).
    let mut done = Vec::new();
    for c in clients {
        done.push(c.await.unwrap());
    }
    // The last switchover went back to db1 after it caught up with every
    // earlier primary: it holds every row.
    let rows: Vec<(u64, u32)> = topo.primary.query("SELECT id, origin FROM test.lin").await;
    let origin: std::collections::HashMap<u64, u32> = rows.into_iter().collect();
    let server_id = |name: &str| match name {
        "db1" => 1u32,
        "db2" => 2,
        _ => 3,
    };
    let mut total = 0;
    let mut seen_epochs = std::collections::BTreeSet::new();
    for (node, log, errors) in done {
        assert!(!log.is_empty(), "node {node} routed no writes");
        assert!(
            log.windows(2).all(|w| w[0].0 <= w[1].0),
            "node {node}: epoch went backwards: {log:?}"
        );
        for (epoch, id) in &log {
            let primary = epochs
                .get(epoch)
                .unwrap_or_else(|| panic!("node {node}: write {id} routed under epoch {epoch}, which never had a primary ({epochs:?})"));
            assert_eq!(
                origin.get(id).copied(),
                Some(server_id(primary)),
                "node {node}: write {id} routed under epoch {epoch} did not run on {primary}"
            );
            seen_epochs.insert(*epoch);
        }
        println!(
            "node {node}: {} acknowledged writes, {errors} errors (its own process was killed)",
            log.len()
        );
        total += log.len();
    }
    println!(
        "{total} writes under epochs {seen_epochs:?} ({epochs:?}), each on its epoch's primary"
    );
    assert!(
        seen_epochs.len() >= 3,
        "writes spanned the switchovers: {seen_epochs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_at_run_time() {
    let db = MariaDb::start("primary", 1).await;
    let fleet = Fleet::start(3, backends(&db), |_, _| {}).await;
    // A fourth node that joins instead of bootstrapping.
    let mut cfg = harness::ConcordConfig::new(backends(&db));
    cfg.node_id = 4;
    cfg.raft_ip = harness::fleet::raft_ip(3);
    cfg.extra.push_str("");
    let addr = format!("{}:{}", cfg.raft_ip, cfg.raft_port);
    cfg.advertise = None;
    cfg.peers.clear();
    cfg.join_fleet = true;
    let mut fourth = harness::Concord::start_unready(cfg).await;
    assert!(
        matches!(fourth.http_get("/readyz").await, Some((503, _))),
        "a joining node is not ready alone"
    );

    fleet.nodes[1]
        .admin_query(&format!("ADD NODE 4 ADDRESS '{addr}'"))
        .await
        .unwrap();
    fourth.wait_ready().await;
    let cluster = fourth.admin_query("SHOW CLUSTER").await.unwrap();
    assert_eq!(cluster.len(), 4, "{cluster:?}");
    let mut c = fourth.conn().await;
    c.query_drop("CREATE TABLE test.via_fourth (id INT)")
        .await
        .unwrap();

    fleet.nodes[0].admin_query("REMOVE NODE 3").await.unwrap();
    harness::wait_for(
        "node 3 to leave the membership",
        Duration::from_secs(10),
        || async {
            let rows = fleet.nodes[0].admin_query("SHOW CLUSTER").await.ok()?;
            (rows.len() == 3 && !rows.iter().any(|r| r["node_id"].as_deref() == Some("3")))
                .then_some(())
        },
    )
    .await;
    fleet.nodes[1]
        .admin_query("SET BACKEND 'db1' WEIGHT 9")
        .await
        .unwrap();
    wait_weight(&fourth, "9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writable_backends_are_refused_at_discovery() {
    let a = MariaDb::start("a", 1).await;
    let b = MariaDb::start("b", 2).await;
    let mut cfg = harness::ConcordConfig::new(vec![
        ("a".into(), a.addr(), None),
        ("b".into(), b.addr(), None),
    ]);
    cfg.extra
        .push_str("[failover]\nwrite_buffer_timeout = \"500ms\"\n");
    let node = harness::Concord::start_unready(cfg).await;
    harness::wait_for(
        "a refusal in the event log",
        Duration::from_secs(15),
        || async {
            let ev = node.admin_query("SHOW EVENTS").await.ok()?;
            ev.iter()
                .any(|e| {
                    e["detail"]
                        .as_deref()
                        .is_some_and(|d| d.contains("several writable backends"))
                })
                .then_some(())
        },
    )
    .await;
    assert!(matches!(node.http_get("/readyz").await, Some((503, _))));
    let mut c =
        harness::raw::RawClient::connect_db(node.cfg.port, "app", harness::PASSWORD, 0, None).await;
    let r = c
        .command(
            b"\x03CREATE TABLE test.x (id INT)",
            concord_protocol::scan::Expect::ResultSets,
        )
        .await;
    let e = concord_protocol::err::ErrPacket::decode(&r[0].payload).unwrap();
    assert!(e.code == 1290 && e.message.contains("no primary"), "{e}");
    // Make one read-only: discovery succeeds.
    b.exec("SET GLOBAL read_only = 1").await;
    b.exec("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1, MASTER_USER='x'")
        .await;
    let mut node = node;
    node.wait_ready().await;
    let rows = node.admin_query("SHOW BACKENDS").await.unwrap();
    let primary: Vec<_> = rows
        .iter()
        .filter(|r| r["role"].as_deref() == Some("primary"))
        .collect();
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0]["name"].as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_bring_a_lagging_node_up_to_date() {
    let db = MariaDb::start("primary", 1).await;
    let mut fleet = Fleet::start(3, backends(&db), |_, c| {
        c.cluster_extra.push_str("snapshot_every = 10\n");
    })
    .await;
    let leader = fleet.leader(Duration::from_secs(10)).await;
    let lagging = (leader + 1) % 3;
    fleet.nodes[lagging].kill();
    // 40 entries: the leader snapshots every 10 and keeps 5 after each, so
    // what the stopped node lacks is no longer in any log.
    for w in 1..=40 {
        fleet.nodes[leader]
            .admin_query(&format!("SET BACKEND 'db1' WEIGHT {w}"))
            .await
            .unwrap();
    }
    let snap = |n: &harness::Concord| n.data_dir().join("snapshot.json");
    assert!(
        snap(&fleet.nodes[leader]).exists(),
        "the leader never snapshotted"
    );
    fleet.nodes[lagging].restart().await;
    fleet.nodes[lagging].wait_ready().await;
    wait_weight(&fleet.nodes[lagging], "40").await;
    let logs = fleet.nodes[lagging].logs();
    assert!(
        logs.contains("installed a snapshot from the leader"),
        "the lagging node caught up without a snapshot install:\n{logs}"
    );
    // And it restarts from that snapshot (plus its log) with the same state.
    fleet.nodes[lagging].kill();
    fleet.nodes[lagging].restart().await;
    fleet.nodes[lagging].wait_ready().await;
    assert_eq!(
        weight_on(&fleet.nodes[lagging], "db1").await.as_deref(),
        Some("40")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_edited_in_the_file_reloads_on_every_node() {
    let db = MariaDb::start("primary", 1).await;
    let fleet = Fleet::start(3, backends(&db), |_, _| {}).await;
    // The operator edits one node's file and reloads it: the weight is
    // committed through Raft, so all three apply it.
    let node = &fleet.nodes[1];
    let path = node.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("name = \"db1\"\n", "name = \"db1\"\nweight = 42\n", 1);
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    let out = node.admin_query("RELOAD CONFIG").await.unwrap();
    println!("{out:?}");
    for n in &fleet.nodes {
        wait_weight(n, "42").await;
    }
    // Reloading the same file again changes nothing (and does not undo a
    // SET BACKEND ... WEIGHT made since).
    fleet.nodes[0]
        .admin_query("SET BACKEND 'db1' WEIGHT 5")
        .await
        .unwrap();
    node.admin_query("RELOAD CONFIG").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in &fleet.nodes {
        wait_weight(n, "5").await;
    }
}
