//! Statement timeouts stop the server's work: a statement past its
//! timeout is killed on its backend (`KILL QUERY` through a side
//! connection) and the client gets error 1969 naming the timeout, from a
//! global `listener.statement_timeout`, a user's `statement_timeout` or a
//! `/* concord:timeout=... */` hint. With the KILL switched off (test-only
//! `timeout-without-kill`) the statement keeps running on the server.

use harness::{Fleet, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};

/// Whether a statement containing `marker` runs on `db` now.
async fn running(db: &harness::MariaDb, marker: &str) -> bool {
    let n: Vec<i64> = db
        .query(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' AND INFO NOT LIKE '%PROCESSLIST%'"
        ))
        .await;
    n.first().copied().unwrap_or(0) > 0
}

/// Sends `sql` (which sleeps and carries `marker`) and, 1.5 s in, looks
/// whether it still runs on any server. Returns the client's error, how
/// long the answer took, and whether it still ran at 1.5 s.
async fn timed(
    topo: &Topology,
    c: &mut mysql_async::Conn,
    sql: &str,
    marker: &str,
) -> (String, Duration, bool) {
    let t = Instant::now();
    let q = c.query_drop(sql.to_string());
    let look = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        running(&topo.primary, marker).await || running(&topo.replicas[0], marker).await
    };
    let (r, still) = tokio::join!(q, look);
    let e = r.expect_err("the statement is cut off").to_string();
    (e, t.elapsed(), still)
}

async fn setup(hooks: &str) -> (Topology, Fleet) {
    let topo = Topology::start(1).await;
    let fleet = Fleet::start(1, topo.backends(), |_, c| {
        c.test_hooks = hooks.into();
        c.listener_extra.push_str("statement_timeout = \"1s\"\n");
        c.users.push_str(&format!(
            "[[users]]\nname = \"patient\"\npassword = \"{PASSWORD}\"\nbackend_user = \"app\"\nstatement_timeout = \"0s\"\n"
        ));
    })
    .await;
    fleet.nodes[0].wait_readable(&["db2"]).await;
    (topo, fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_timeout_is_killed_on_the_server() {
    let (topo, fleet) = setup("").await;
    let node = &fleet.nodes[0];
    let mut c = node.conn().await;
    // Global 1 s, a read (on the replica).
    let (e, took, still) = timed(&topo, &mut c, "SELECT SLEEP(30) AS m_global", "m_global").await;
    println!("global: {e} after {took:?}; still running at 1.5 s: {still}");
    assert!(
        e.contains("1969") && e.contains("statement timeout of 1s"),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!still, "the statement kept running on the server");
    // The session goes on.
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // A hint, shorter, on the primary (inside a transaction).
    c.query_drop("BEGIN").await.unwrap();
    let (e, took, still) = timed(
        &topo,
        &mut c,
        "/* concord:timeout=300ms */ SELECT SLEEP(30) AS m_hint",
        "m_hint",
    )
    .await;
    println!("hint: {e} after {took:?}");
    assert!(e.contains("1969") && e.contains("300ms"), "{e}");
    assert!(!still);
    c.query_drop("ROLLBACK").await.unwrap();
    // A user without a timeout is not cut off; a hint still applies.
    let mut p = mysql_async::Conn::new(node.opts_for("patient", PASSWORD))
        .await
        .unwrap();
    let v: Option<i64> = p.query_first("SELECT SLEEP(1.5)").await.unwrap();
    assert_eq!(v, Some(0), "no timeout for this user");
    let m = node.http_get("/metrics").await.unwrap().1;
    assert!(m.contains("concord_statement_timeouts_total 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_kill_the_statement_runs_on() {
    let (topo, fleet) = setup("timeout-without-kill").await;
    let mut c = fleet.nodes[0].conn().await;
    let (e, took, still) = timed(&topo, &mut c, "SELECT SLEEP(3) AS m_nokill", "m_nokill").await;
    println!("without the kill: {e} after {took:?}; still running at 1.5 s: {still}");
    assert!(e.contains("1969"), "{e}");
    assert!(still, "not killed, the statement runs on past its timeout");
    assert!(took >= Duration::from_secs(3), "{took:?}");
}

/// Statements that end right around their timeout, each followed at once
/// by the next on the same connection, by many sessions sharing a pool of
/// two connections: a write reported as failed never happened, one that
/// happened was reported done, and no answer is lost or reused (every
/// `SELECT n` gets `n`). The checker counts rows against the OKs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_racing_the_answer_report_what_happened() {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.r (id INT PRIMARY KEY)")
        .await;
    let fleet = Fleet::start(1, topo.backends(), |_, c| {
        c.extra
            .push_str("[pool]\nmax_per_backend = 2\n[routing]\nmax_replica_lag = \"1h\"\n");
    })
    .await;
    let node = &fleet.nodes[0];
    let mut tasks = Vec::new();
    for s in 0..4u32 {
        let opts = node.opts();
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            let (mut ok, mut cut) = (Vec::new(), 0);
            for i in 0..25u32 {
                let id = s * 1000 + i;
                // 40-80 ms of work against a 60 ms timeout.
                let work = 0.04 + f64::from(i % 5) * 0.01;
                let r = c
                    .query_drop(format!(
                        "/* concord:timeout=60ms */ INSERT INTO test.r SELECT {id} FROM (SELECT SLEEP({work})) AS x"
                    ))
                    .await;
                match r {
                    Ok(()) => ok.push(id),
                    Err(e) => {
                        let e = e.to_string();
                        assert!(e.contains("1969") || e.contains("1317"), "{e}");
                        cut += 1;
                    }
                }
                let n: Option<u32> = c.query_first(format!("SELECT {id}")).await.unwrap();
                assert_eq!(n, Some(id), "the next statement's own answer");
            }
            (ok, cut)
        }));
    }
    let (mut acked, mut cut) = (Vec::new(), 0);
    for t in tasks {
        let (ok, c) = t.await.unwrap();
        acked.extend(ok);
        cut += c;
    }
    acked.sort_unstable();
    let rows: Vec<u32> = topo
        .primary
        .query("SELECT id FROM test.r ORDER BY id")
        .await;
    println!(
        "{} inserts acknowledged, {cut} cut off by their timeout",
        acked.len()
    );
    assert_eq!(rows, acked, "the rows are exactly the acknowledged inserts");
}

/// A raw client (user `patient`, no statement timeout) that sent `sql`,
/// once `sql` (carrying `marker`) runs on `db`.
async fn sent_and_running(
    node: &harness::Concord,
    db: &harness::MariaDb,
    sql: &str,
    marker: &str,
) -> harness::raw::RawClient {
    let mut raw = harness::raw::RawClient::connect(node.cfg.port, "patient", PASSWORD, 0).await;
    let mut q = vec![concord_protocol::consts::com::QUERY];
    q.extend_from_slice(sql.as_bytes());
    raw.send(&q).await;
    let t = Instant::now();
    while !running(db, marker).await {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{marker} never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    raw
}

/// A client that goes away while its statement runs: the statement is
/// killed on its server, not left to run to its end holding a backend
/// connection (and whatever locks it took). With the watch switched off
/// (test-only `disconnect-without-kill`) it runs on.
async fn abandoned(hooks: &str) -> bool {
    let (topo, fleet) = setup(hooks).await;
    let node = &fleet.nodes[0];
    // Running on the replica; then the client vanishes.
    let raw = sent_and_running(
        node,
        &topo.replicas[0],
        "SELECT SLEEP(20) AS m_gone",
        "m_gone",
    )
    .await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = running(&topo.replicas[0], "m_gone").await;
    if !hooks.contains("disconnect-without-kill") {
        let m = node.http_get("/metrics").await.unwrap().1;
        assert!(
            m.contains("concord_client_gone_mid_statement_total 1"),
            "{m}"
        );
    }
    still
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_has_its_statement_killed() {
    assert!(
        !abandoned("").await,
        "the abandoned statement still runs 1.5 s after its client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watch_an_abandoned_statement_runs_on() {
    assert!(abandoned("disconnect-without-kill").await);
}

/// `transaction_timeout`: a transaction open too long, idle or busy, is
/// rolled back on its server (its row lock freed, its write gone), and
/// the client's next statements hear why until it sends ROLLBACK. With
/// the rollback switched off (test-only `txn-timeout-keeps-txn`) the
/// transaction stays open and commits.
async fn txn_timeout_case(hooks: &str) -> (Vec<String>, i64, i64) {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.tt (id INT PRIMARY KEY, v INT); INSERT INTO test.tt VALUES (1, 0), (2, 0)")
        .await;
    let fleet = Fleet::start(1, topo.backends(), |_, c| {
        c.test_hooks = hooks.into();
        c.listener_extra.push_str("transaction_timeout = \"1s\"\n");
    })
    .await;
    let node = &fleet.nodes[0];
    let mut said = Vec::new();
    let mut c = node.conn().await;
    // Idle in a transaction holding a row lock.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE test.tt SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let open: Vec<i64> = topo
        .primary
        .query("SELECT COUNT(*) FROM information_schema.INNODB_TRX")
        .await;
    let idle_open = open.first().copied().unwrap_or(-1);
    for sql in ["UPDATE test.tt SET v = 2 WHERE id = 2", "COMMIT"] {
        said.push(match c.query_drop(sql).await {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        });
    }
    // Busy: a statement still running at the deadline is killed.
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    let t = Instant::now();
    said.push(
        match c
            .query_drop("SELECT SLEEP(3) AS m_txn FROM test.tt LIMIT 1")
            .await
        {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        },
    );
    let busy_took = t.elapsed();
    assert!(busy_took < Duration::from_millis(2500), "{busy_took:?}");
    said.push(match c.query_drop("COMMIT").await {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    });
    c.query_drop("ROLLBACK").await.unwrap();
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");
    let v: Vec<i64> = topo.primary.query("SELECT SUM(v) FROM test.tt").await;
    println!("{hooks:?}: idle open trx {idle_open}; said {said:?}; busy statement took {busy_took:?}; sum {v:?}");
    (said, idle_open, v.first().copied().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_rolled_back_and_the_client_told() {
    let (said, idle_open, sum) = txn_timeout_case("").await;
    assert_eq!(
        idle_open, 0,
        "the idle transaction was rolled back on the server"
    );
    assert!(
        said[0].contains("1969") && said[0].contains("transaction_timeout of 1s"),
        "{said:?}"
    );
    assert!(said[1].contains("COMMIT failed"), "{said:?}");
    assert!(
        said[2].contains("1969") && said[2].contains("transaction_timeout"),
        "{said:?}"
    );
    assert!(said[3].contains("1969"), "{said:?}");
    assert_eq!(sum, 0, "nothing of either transaction was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_rollback_the_timed_out_transaction_commits() {
    let (said, idle_open, sum) = txn_timeout_case("txn-timeout-keeps-txn").await;
    assert_eq!(idle_open, 1, "{said:?}");
    assert_eq!(said[1], "ok", "{said:?}");
    assert_eq!(sum, 3, "the timed-out transaction committed v = 1 + 2");
}

/// A transaction begun inside another (BEGIN commits the first) gets its
/// own `transaction_timeout` clock, and a COMMIT is never cut off by the
/// deadline of the transaction it ends.
async fn second_transaction(hooks: &str) -> Result<(), String> {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.tc (id INT PRIMARY KEY, v INT); INSERT INTO test.tc VALUES (1, 0)")
        .await;
    let fleet = Fleet::start(1, topo.backends(), |_, c| {
        c.test_hooks = hooks.into();
        c.listener_extra.push_str("transaction_timeout = \"1s\"\n");
    })
    .await;
    let mut c = fleet.nodes[0].conn().await;
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE test.tc SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Implicitly commits the first; the second starts now.
    c.query_drop("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // 1.4 s after the first BEGIN, 0.7 s into the second transaction.
    c.query_drop("UPDATE test.tc SET v = v + 1 WHERE id = 1")
        .await
        .map_err(|e| e.to_string())?;
    c.query_drop("COMMIT").await.map_err(|e| e.to_string())?;
    let v: Vec<i64> = topo.primary.query("SELECT v FROM test.tc").await;
    assert_eq!(v, [2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transaction_gets_its_own_clock() {
    second_transaction("").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_restart_the_second_transaction_is_cut_off() {
    let e = second_transaction("txn-clock-no-restart")
        .await
        .unwrap_err();
    assert!(e.contains("transaction_timeout"), "{e}");
}

/// A client that sends COM_QUIT and closes while its statement runs has
/// not abandoned it: on a server the statement runs to its end, and so it
/// does through concord (its write lands). With the COM_QUIT read as a
/// disconnect (test-only `quit-is-disconnect`) the statement is killed.
async fn quit_mid_statement(hooks: &str) -> Vec<i64> {
    let (topo, fleet) = setup(hooks).await;
    topo.primary
        .exec("CREATE TABLE test.quit_t (id INT PRIMARY KEY)")
        .await;
    let node = &fleet.nodes[0];
    let mut raw = sent_and_running(
        node,
        &topo.primary,
        "INSERT INTO test.quit_t SELECT 7 FROM (SELECT SLEEP(2) AS m_quit) s",
        "m_quit",
    )
    .await;
    raw.send(&[concord_protocol::consts::com::QUIT]).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    topo.primary.query("SELECT id FROM test.quit_t").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_followed_by_com_quit_runs_to_its_end() {
    assert_eq!(quit_mid_statement("").await, [7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quit_read_as_a_disconnect_the_statement_is_killed() {
    assert_eq!(
        quit_mid_statement("quit-is-disconnect").await,
        Vec::<i64>::new()
    );
}
