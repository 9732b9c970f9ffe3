//! Read/write routing against a real MariaDB primary with two GTID
//! replicas: reads spread over replicas by weight, writes and anything
//! connection-bound stay on the primary, lag bounds with stopped
//! replication, fallback, read-your-writes, session state on replicas,
//! prepared statements across backends.

use harness::{Concord, ConcordConfig, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn setup(weights: (u32, u32), extra: &str) -> (Topology, Concord) {
    setup_hooked(weights, extra, "").await
}

/// [`setup`] with test-only switches (`config/src/testhooks.rs`).
async fn setup_hooked(weights: (u32, u32), extra: &str, hooks: &str) -> (Topology, Concord) {
    let topo = Topology::start(2).await;
    topo.primary
        .exec("CREATE TABLE test.t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    topo.primary
        .exec("INSERT INTO test.t VALUES (1, 'one')")
        .await;
    topo.wait_replicated().await;
    let backends = topo.backends();
    let mut cfg = ConcordConfig::new(backends);
    cfg.extra = extra.to_string();
    cfg.test_hooks = hooks.to_string();
    // Weights are part of the seeded topology.
    let mut cfg_text_weights = String::new();
    for (name, w) in [("db2", weights.0), ("db3", weights.1)] {
        cfg_text_weights.push_str(&format!("SET BACKEND '{name}' WEIGHT {w};"));
    }
    let node = Concord::start(cfg).await;
    for stmt in cfg_text_weights.split(';').filter(|s| !s.is_empty()) {
        node.admin_query(stmt).await.unwrap();
    }
    wait_readable(&node, &["db2", "db3"]).await;
    (topo, node)
}

async fn backends(node: &Concord) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    node.admin_query("SHOW BACKENDS")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r["name"].clone().unwrap_or_default(), r))
        .collect()
}

async fn wait_readable(node: &Concord, names: &[&str]) {
    harness::wait_for(
        "replicas to become readable",
        Duration::from_secs(20),
        || async {
            let b = backends(node).await;
            names
                .iter()
                .all(|n| b.get(*n).and_then(|r| r["readable"].clone()).as_deref() == Some("yes"))
                .then_some(())
        },
    )
    .await;
}

/// server_id of the backend that answered.
async fn server_id(c: &mut mysql_async::Conn, sql: &str) -> u32 {
    c.query_first::<u32, _>(sql).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_by_weight_writes_and_bound_reads_stay_on_the_primary() {
    // About weights, not lag: a generous bound keeps a replica that lags
    // on a loaded CI machine in the spread.
    let (_topo, node) = setup((100, 300), "[routing]\nmax_replica_lag = \"30s\"\n").await;
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for _ in 0..8 {
        let mut c = node.conn().await;
        for _ in 0..50 {
            *counts
                .entry(server_id(&mut c, "SELECT @@server_id").await)
                .or_default() += 1;
        }
    }
    println!("SELECT @@server_id landed on: {counts:?}");
    assert_eq!(
        counts.get(&1),
        None,
        "a plain read went to the primary: {counts:?}"
    );
    let (a, b) = (
        counts.get(&2).copied().unwrap_or(0),
        counts.get(&3).copied().unwrap_or(0),
    );
    assert!(a > 0 && b > 0, "both replicas must be used: {counts:?}");
    let ratio = f64::from(b) / f64::from(a);
    assert!((1.5..6.0).contains(&ratio), "weights 100:300 gave {a}:{b}");

    let mut c = node.conn().await;
    assert_eq!(
        server_id(&mut c, "/* concord:primary */ SELECT @@server_id").await,
        1
    );
    assert_eq!(
        server_id(
            &mut c,
            "SELECT @@server_id FROM test.t WHERE id = 1 FOR UPDATE"
        )
        .await,
        1
    );
    assert_eq!(
        server_id(
            &mut c,
            "SELECT @@server_id FROM test.t WHERE id = 1 LOCK IN SHARE MODE"
        )
        .await,
        1
    );
    let id: Option<(u64, u32)> = c
        .query_first("SELECT LAST_INSERT_ID(), @@server_id")
        .await
        .unwrap();
    assert_eq!(id.map(|x| x.1), Some(1));
    c.query_drop("BEGIN").await.unwrap();
    assert_eq!(
        server_id(&mut c, "SELECT @@server_id").await,
        1,
        "transactional read"
    );
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("START TRANSACTION READ ONLY").await.unwrap();
    let first = server_id(&mut c, "SELECT @@server_id").await;
    assert_ne!(first, 1, "a read-only transaction may run on a replica");
    for _ in 0..5 {
        assert_eq!(
            server_id(&mut c, "SELECT @@server_id").await,
            first,
            "as one unit"
        );
    }
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("SET autocommit = 0").await.unwrap();
    assert_eq!(
        server_id(&mut c, "SELECT @@server_id").await,
        1,
        "autocommit=0"
    );
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("SET autocommit = 1").await.unwrap();
    assert_ne!(server_id(&mut c, "SELECT @@server_id").await, 1);

    // Routing decisions are counted by target and reason.
    let (_, metrics) = node.http_get("/metrics").await.unwrap();
    assert!(
        metrics.contains("concord_routed_total{target=\"replica\",reason=\"read\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("concord_routed_total{target=\"primary\",reason=\"locking_read\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_and_temp_tables() {
    let (_topo, node) = setup((100, 100), "").await;
    let mut c = node.conn().await;
    c.query_drop("USE test").await.unwrap();
    c.query_drop("SET @marker = 'kept'").await.unwrap();
    c.query_drop("SET time_zone = '+03:00'").await.unwrap();
    c.query_drop("SET NAMES latin1").await.unwrap();
    for _ in 0..10 {
        let r: (u32, Option<String>, String, Option<String>, String) = c
            .query_first(
                "SELECT @@server_id, @marker, @@time_zone, DATABASE(), @@character_set_client",
            )
            .await
            .unwrap()
            .unwrap();
        assert_ne!(r.0, 1, "expected a replica");
        assert_eq!(
            (r.1.as_deref(), r.2.as_str(), r.3.as_deref(), r.4.as_str()),
            (Some("kept"), "+03:00", Some("test"), "latin1")
        );
    }
    // A temporary table pins the session to the primary: no "locked to
    // hostgroup" error, the table is simply where the session runs.
    c.query_drop("CREATE TEMPORARY TABLE tmp (a INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO tmp VALUES (1), (2)")
        .await
        .unwrap();
    let r: Option<(u32, i64)> = c
        .query_first("SELECT @@server_id, COUNT(*) FROM tmp")
        .await
        .unwrap();
    assert_eq!(r, Some((1, 2)));
    assert_eq!(
        server_id(&mut c, "SELECT @@server_id").await,
        1,
        "pinned for the session"
    );
    // A reset unpins.
    c.reset().await.unwrap();
    c.query_drop("USE test").await.unwrap();
    assert_ne!(server_id(&mut c, "SELECT @@server_id").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_bounds_stopped_replication_and_fallback() {
    let (topo, node) = setup((100, 100), "").await;
    let r1 = &topo.replicas[0];
    r1.exec("STOP SLAVE SQL_THREAD").await;
    let t = Instant::now();
    harness::wait_for(
        "db2 to leave the readable set",
        Duration::from_secs(5),
        || async {
            let b = backends(&node).await;
            (b["db2"]["readable"].as_deref() == Some("no") && b["db2"]["lag_ms"].is_none())
                .then_some(())
        },
    )
    .await;
    let took = t.elapsed();
    println!("stopped SQL thread removed from reads after {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "more than 2 x interval (+ margin): {took:?}"
    );
    let mut c = node.conn().await;
    for _ in 0..30 {
        assert_eq!(server_id(&mut c, "SELECT @@server_id").await, 3);
    }
    r1.exec("START SLAVE SQL_THREAD").await;
    wait_readable(&node, &["db2"]).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(server_id(&mut c, "SELECT @@server_id").await);
    }
    assert!(seen.contains(&2), "db2 back in rotation: {seen:?}");

    // No replica qualifies: fallback to the primary (the default) ...
    for r in &topo.replicas {
        r.exec("STOP SLAVE SQL_THREAD").await;
    }
    harness::wait_for("no readable replica", Duration::from_secs(5), || async {
        let b = backends(&node).await;
        (b["db2"]["readable"].as_deref() == Some("no")
            && b["db3"]["readable"].as_deref() == Some("no"))
        .then_some(())
    })
    .await;
    assert_eq!(server_id(&mut c, "SELECT @@server_id").await, 1);
    // ... or a clear error with fallback = "error" (reloaded live).
    let path = node.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[routing]\nfallback = \"error\"\n")).unwrap();
    node.admin_query("RELOAD CONFIG").await.unwrap();
    let e = c.query_drop("SELECT @@server_id").await.unwrap_err();
    assert!(
        matches!(&e, mysql_async::Error::Server(s) if s.message.contains("lag bound") && s.message.contains("fallback")),
        "{e:?}"
    );
    // Writes are unaffected.
    c.query_drop("INSERT INTO test.t VALUES (2, 'two')")
        .await
        .unwrap();
    for r in &topo.replicas {
        r.exec("START SLAVE SQL_THREAD").await;
    }
}

/// Writes then immediately reads each row back; returns how many reads
/// missed the row just written.
async fn write_read_misses(c: &mut mysql_async::Conn, start: i32, n: i32) -> u32 {
    let mut misses = 0;
    for i in start..start + n {
        c.exec_drop("INSERT INTO test.ryw VALUES (?, ?)", (i, "x"))
            .await
            .unwrap();
        let got: Option<i32> = c
            .exec_first("SELECT id FROM test.ryw WHERE id = ?", (i,))
            .await
            .unwrap();
        if got.is_none() {
            misses += 1;
        }
    }
    misses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_sees_every_write_on_a_delayed_replica() {
    // A 5 s lag bound keeps a 1 s-delayed replica in the read set.
    // Off first (the default is "session"), to show the setup bites.
    let (topo, node) = setup(
        (100, 100),
        "[routing]\nmax_replica_lag = \"5s\"\nread_your_writes_wait = \"200ms\"\nread_your_writes = \"off\"\n",
    )
    .await;
    ryw_table_and_delayed_db2(&topo, 1).await;

    // Without read-your-writes some reads miss (proves the setup bites).
    let mut c = node.conn().await;
    let misses = write_read_misses(&mut c, 0, 40).await;
    println!("without read_your_writes: {misses}/40 reads missed the session's own write");
    assert!(
        misses > 0,
        "the delayed replica should make some reads stale"
    );

    // With it, every read sees the write, and reads still use replicas.
    let path = node.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "read_your_writes = \"off\"",
        "read_your_writes = \"session\"",
    );
    std::fs::write(&path, text).unwrap();
    node.admin_query("RELOAD CONFIG").await.unwrap();
    let mut c = node.conn().await;
    let before = replica_reads(&node).await;
    let misses = write_read_misses(&mut c, 1000, 100).await;
    assert_eq!(misses, 0, "read-your-writes must never miss");
    let after = replica_reads(&node).await;
    println!(
        "with read_your_writes: 0/100 missed; {} of the reads went to replicas",
        after - before
    );
    assert!(
        after > before,
        "reads should still use the up-to-date replica"
    );
}

/// Read-your-writes waits on the least lagged replica: with one replica
/// 2 s behind (inside the 5 s bound) and a 1 s wait, a read after a write
/// waits on the up-to-date one and never falls back to the primary. A
/// random pick (`ryw-wait-any-replica`) waits out the delayed one about
/// half the time and then reads from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_on_the_least_lagged_replica() {
    for hooks in ["ryw-wait-any-replica", ""] {
        let (topo, node) = setup_hooked(
            (100, 100),
            "[routing]\nmax_replica_lag = \"5s\"\nread_your_writes_wait = \"1s\"\n",
            hooks,
        )
        .await;
        ryw_table_and_delayed_db2(&topo, 2).await;
        // Both stay readable: the delayed one's lag is under the bound.
        tokio::time::sleep(Duration::from_secs(3)).await;
        wait_readable(&node, &["db2", "db3"]).await;
        let primary_id: Option<u32> = topo
            .primary
            .conn()
            .await
            .query_first("SELECT @@server_id")
            .await
            .unwrap();
        let mut c = node.conn().await;
        let (mut on_primary, n) = (0, 16);
        for i in 0..n {
            c.exec_drop("INSERT INTO test.ryw VALUES (?, ?)", (i, "x"))
                .await
                .unwrap();
            let got: Option<(u32, i32)> = c
                .exec_first("SELECT @@server_id, id FROM test.ryw WHERE id = ?", (i,))
                .await
                .unwrap();
            let (sid, _) = got.expect("read-your-writes must see the row");
            if Some(sid) == primary_id {
                on_primary += 1;
            }
        }
        println!("hooks {hooks:?}: {on_primary}/{n} reads after a write fell back to the primary");
        if hooks.is_empty() {
            assert_eq!(on_primary, 0, "the up-to-date replica should serve them");
        } else {
            assert!(
                on_primary > 0,
                "a random pick should sometimes wait out the delayed replica"
            );
        }
    }
}

async fn replica_reads(node: &Concord) -> u64 {
    let (_, m) = node.http_get("/metrics").await.unwrap();
    m.lines()
        .filter(|l| l.starts_with("concord_routed_total{target=\"replica\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_routing_and_stay_bounded() {
    let (topo, node) = setup((100, 100), "[pool]\nmax_prepared_per_connection = 4\n").await;
    let mut c = node.conn().await;
    // A read statement executes on replicas, a write on the primary.
    let read = c
        .prep("SELECT @@server_id, v FROM test.t WHERE id = ?")
        .await
        .unwrap();
    let mut servers = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r: Option<(u32, String)> = c.exec_first(&read, (1,)).await.unwrap();
        let (sid, v) = r.unwrap();
        assert_eq!(v, "one");
        servers.insert(sid);
    }
    assert!(
        !servers.contains(&1),
        "prepared reads should go to replicas: {servers:?}"
    );
    let write = c.prep("INSERT INTO test.t VALUES (?, ?)").await.unwrap();
    c.exec_drop(&write, (10, "ten")).await.unwrap();
    let n: Option<i64> = topo
        .primary
        .conn()
        .await
        .query_first("SELECT COUNT(*) FROM test.t WHERE id = 10")
        .await
        .unwrap();
    assert_eq!(n, Some(1));

    // Many distinct statements: each backend connection keeps at most 4.
    for i in 0..30 {
        let s = c
            .prep(format!("SELECT {i} + ?, @@server_id"))
            .await
            .unwrap();
        let r: Option<(i64, u32)> = c.exec_first(&s, (1,)).await.unwrap();
        assert_eq!(r.map(|x| x.0), Some(i + 1));
        // Re-executing an early, evicted statement re-prepares it.
        let again: Option<(u32, String)> = c.exec_first(&read, (1,)).await.unwrap();
        assert!(again.is_some());
    }
    for db in std::iter::once(&topo.primary).chain(topo.replicas.iter()) {
        let rows: Vec<(String, u64)> = db
            .query("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
            .await;
        let count = rows.first().map(|r| r.1).unwrap_or(0);
        assert!(
            count <= 4 * 2,
            "{}: {count} prepared statements open",
            db.name
        );
    }
}

/// Two client statements of the same text prepared lazily on one
/// connection (here the primary, in a transaction): closing one must not
/// leave the other executing under a closed id. Each gets its own server
/// statement there (test-only `twin-statements-share` turns that off),
/// and a remembered id is used only while the connection lists it
/// (`trust-remembered-statement`); with both off: 1243.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_of_two_statements_of_the_same_text_keeps_the_other() {
    let (_topo, node) = setup((100, 100), "").await;
    assert_eq!(closed_twin(&node).await, Ok(Some(42)));
    let hooks = "trust-remembered-statement,twin-statements-share";
    let (_topo, node) = setup_hooked((100, 100), "", hooks).await;
    let e = closed_twin(&node).await.unwrap_err();
    assert!(e.contains("1243"), "{e}");
}

/// Prepares one text twice (no client statement cache), runs both in a
/// transaction on the primary, closes the first and runs the second
/// there again.
async fn closed_twin(node: &Concord) -> Result<Option<i64>, String> {
    let mut c = mysql_async::Conn::new(node.opts().stmt_cache_size(0))
        .await
        .unwrap();
    let sql = "SELECT ? + 1 FROM test.t WHERE id = 1";
    let s1 = c.prep(sql).await.unwrap();
    let s2 = c.prep(sql).await.unwrap();
    assert_ne!(s1.id(), s2.id());
    c.query_drop("BEGIN").await.unwrap();
    for s in [&s1, &s2] {
        let v: Option<i64> = c.exec_first(s, (1,)).await.unwrap();
        assert_eq!(v, Some(2));
    }
    c.close(s1).await.unwrap();
    let v = c.exec_first(&s2, (41,)).await.map_err(|e| e.to_string());
    c.query_drop("COMMIT").await.unwrap();
    v
}

/// What a read after these answers on a lagging replica is the primary's
/// answer: user variables a CALL's OUT parameter (the session is pinned)
/// or GET DIAGNOSTICS (followed by name, no pin) assigned, the rows of a
/// write that failed after committing part of its work (an error carries
/// no GTID), the server's own state (`@@global.read_only`, GTID
/// positions), a collation set by `SET NAMES cs COLLATE x` (reported as
/// character sets only), a locking read under NO_BACKSLASH_ESCAPES
/// (concord's lexer assumes escapes: such a session keeps to its primary
/// connection), and a read-only transaction hinted to the primary.
/// Test-only `failed-writes-unseen`, `no-backslash-escapes-unpinned`
/// and `diagnostics-vars-untracked` each make their answer the lagging
/// replica's or NULL. (The collation holds on MariaDB
/// 10.11 without concord's own record too: its tracker reports it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_state_the_server_does_not_report_answer_as_the_primary() {
    // (switch, which of the four answers it changes)
    for (hooks, breaks) in [
        ("", [false; 6]),
        (
            "diagnostics-vars-untracked",
            [false, true, false, false, false, false],
        ),
        (
            "failed-writes-unseen",
            [false, false, true, false, false, false],
        ),
        (
            "no-backslash-escapes-unpinned",
            [false, false, false, false, true, false],
        ),
    ] {
        let faithful = hooks.is_empty();
        let (topo, node) =
            setup_hooked((100, 100), "[routing]\nmax_replica_lag = \"1h\"\n", hooks).await;
        topo.primary
            .exec("CREATE PROCEDURE test.p_out(OUT o INT) BEGIN SET o = 42; END")
            .await;
        topo.primary
            .exec("CREATE PROCEDURE test.p_fail() BEGIN INSERT INTO test.t VALUES (77, 'x'); SIGNAL SQLSTATE '45000'; END")
            .await;
        topo.wait_replicated().await;
        for r in &topo.replicas {
            r.exec("STOP SLAVE SQL_THREAD").await;
        }
        // A CALL's OUT parameter (the server flags a state change it does
        // not describe: the session keeps to its primary connection).
        let mut c0 = node.conn().await;
        c0.query_drop("CALL test.p_out(@o)").await.unwrap();
        let o: Option<Option<i64>> = c0.query_first("SELECT @o").await.unwrap();
        // Sessions that wrote nothing: their reads go to the replicas.
        let mut c1 = node.conn().await;
        // A read's error on a replica, its diagnostics there, the variable
        // read on the primary.
        assert!(c1.query_drop("SELECT * FROM test.nope").await.is_err());
        c1.query_drop("GET DIAGNOSTICS CONDITION 1 @e = MYSQL_ERRNO")
            .await
            .unwrap();
        let e: Option<Option<i64>> = c1
            .query_first("/* concord:primary */ SELECT @e")
            .await
            .unwrap();
        // (Followed by name: no pin.)
        let pinned = node.pinned(c1.id()).await;
        let mut c = node.conn().await;
        assert!(c.query_drop("CALL test.p_fail()").await.is_err());
        let n: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM test.t WHERE id = 77")
            .await
            .unwrap();
        // A session with no writes to wait for (read-your-writes would
        // send its reads to the primary).
        let mut c2 = node.conn().await;
        c2.query_drop("SET NAMES utf8mb4 COLLATE utf8mb4_bin")
            .await
            .unwrap();
        let coll: Option<(String, i64)> = c2
            .query_first("SELECT @@collation_connection, 'a' = 'A'")
            .await
            .unwrap();
        // A locking read whose string ends in a backslash, which
        // NO_BACKSLASH_ESCAPES makes a plain character.
        let mut c3 = node.conn().await;
        c3.query_drop("SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            .await
            .unwrap();
        let locked = server_id(
            &mut c3,
            "SELECT @@server_id FROM test.t WHERE v <> 'C:\\' FOR UPDATE",
        )
        .await;
        let got = (o.flatten(), e.flatten(), n, coll, locked, pinned);
        println!("hooks {hooks:?}: @o, @e, rows of the failed CALL, collation, server of the locking read, pin after GET DIAGNOSTICS: {got:?}");
        let right = [
            got.0 == Some(42),
            got.1 == Some(1146),
            got.2 == Some(1),
            got.3 == Some(("utf8mb4_bin".to_string(), 0)),
            got.4 == 1,
            got.5.is_empty(),
        ];
        assert_eq!(right.map(|r| !r), breaks, "hooks {hooks:?}: {got:?}");
        if faithful {
            let direct: Option<(i64, String)> = topo
                .primary
                .conn()
                .await
                .query_first("SELECT @@global.read_only, @@gtid_binlog_pos")
                .await
                .unwrap();
            let via: Option<(i64, String)> = c
                .query_first("SELECT @@global.read_only, @@gtid_binlog_pos")
                .await
                .unwrap();
            assert_eq!(via, direct, "the server's own state is the primary's");
            c.query_drop("/* concord:primary */ START TRANSACTION READ ONLY")
                .await
                .unwrap();
            let id = server_id(&mut c, "SELECT @@server_id").await;
            c.query_drop("COMMIT").await.unwrap();
            assert_eq!(id, 1, "a read-only transaction hinted to the primary");
            // The mode off, the session's reads spread again.
            c3.query_drop("SET sql_mode = DEFAULT").await.unwrap();
            let id = server_id(&mut c3, "SELECT @@server_id").await;
            assert_ne!(id, 1, "NO_BACKSLASH_ESCAPES off: reads to the replicas");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_read_write_prepared_spreads_reads_with_zero_errors() {
    // 4 statements per backend connection, far below the ~18 sysbench
    // prepares per thread: the LRU closes and re-prepares all the time.
    let (topo, node) = setup((100, 100), "[pool]\nmax_prepared_per_connection = 4\n").await;
    let port = node.cfg.port.to_string();
    let sb = |args: &[&str]| {
        let out = std::process::Command::new("sysbench")
            .arg("oltp_read_write")
            .args([
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={port}"),
                "--mysql-user=app",
                &format!("--mysql-password={PASSWORD}"),
                "--mysql-db=test",
                "--tables=2",
                "--table-size=5000",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sysbench {args:?}:\n{text}");
        text
    };
    sb(&["prepare"]);
    topo.wait_replicated().await;
    let before = replica_reads(&node).await;
    // --skip_trx: autocommit statements, so reads can leave the primary.
    // In that mode sysbench's own DELETE-then-INSERT of a random id races
    // between threads (1062), directly against MariaDB too; only those and
    // InnoDB lock errors may be retried, anything else fails the run.
    let out = sb(&[
        "--threads=8",
        "--time=8",
        "--db-ps-mode=auto",
        "--skip_trx=on",
        "--mysql-ignore-errors=1213,1205,1062",
        "run",
    ]);
    assert!(
        out.contains("reconnects:                          0"),
        "{out}"
    );
    let after = replica_reads(&node).await;
    let line = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    println!(
        "sysbench: {} reads went to replicas; {}; {}",
        after - before,
        line("queries:").trim(),
        line("ignored errors:").trim()
    );
    assert!(after - before > 1000, "reads should spread to replicas");
    for db in std::iter::once(&topo.primary).chain(topo.replicas.iter()) {
        // At most 4 per concord connection, plus the heartbeat statements of
        // concord's two probe connections.
        let (count, conns) = prepared_and_conns(db).await;
        println!(
            "{}: Prepared_stmt_count = {count} over {conns} concord connections",
            db.name
        );
        assert!(count <= conns * 4 + 4, "{}: {count}", db.name);
        // Connections back in the pool are reset: their statements closed.
        harness::wait_for(
            &format!("{}: pooled connections' statements closed", db.name),
            Duration::from_secs(5),
            || async { (prepared_and_conns(db).await.0 <= 4).then_some(()) },
        )
        .await;
    }
}

/// A server's `Prepared_stmt_count` and how many connections concord's
/// `app` backend account holds there.
async fn prepared_and_conns(db: &harness::MariaDb) -> (u64, u64) {
    let rows: Vec<(String, u64)> = db
        .query("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
        .await;
    let app: Vec<(String,)> = db
        .query("SELECT USER FROM information_schema.PROCESSLIST WHERE USER = 'app'")
        .await;
    (rows.first().map(|r| r.1).unwrap_or(0), app.len() as u64)
}

/// `test.ryw`, replicated, then db2 applying events `secs` behind.
async fn ryw_table_and_delayed_db2(topo: &Topology, secs: u32) {
    topo.primary
        .exec("CREATE TABLE test.ryw (id INT PRIMARY KEY, v VARCHAR(5))")
        .await;
    topo.wait_replicated().await;
    let delayed = &topo.replicas[0];
    delayed.exec("STOP SLAVE").await;
    delayed
        .exec(&format!("CHANGE MASTER TO MASTER_DELAY = {secs}"))
        .await;
    delayed.exec("START SLAVE").await;
}
