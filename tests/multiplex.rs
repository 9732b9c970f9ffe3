//! Transaction mode (`pool.mode = "transaction"`) at scale: thousands of
//! client sessions through a backend that allows a few dozen connections,
//! each session checking its own state and ids. (Statement-level
//! transparency in transaction mode is the differential tester's
//! `fixed_seeds_answer_the_same_in_transaction_mode`.)

use harness::{Concord, ConcordConfig, Topology};
use mysql_async::prelude::*;
use std::time::Instant;

/// Client sessions, and what the servers allow.
const CLIENTS: u64 = 5000;
const SERVER_MAX_CONNECTIONS: u32 = 64;

/// One application session: its own user variable, time zone and
/// inserts, checked on every round; `rounds` transactions and statements.
async fn app(
    opts: mysql_async::OptsBuilder,
    k: u64,
    rounds: u64,
    all_in: std::sync::Arc<tokio::sync::Barrier>,
) -> Result<(), String> {
    let e = |what: &str, e: mysql_async::Error| format!("client {k}, {what}: {e}");
    let tz = format!("+{:02}:00", k % 13);
    let setup = async {
        let mut c = mysql_async::Conn::new(opts)
            .await
            .map_err(|x| e("connect", x))?;
        c.query_drop(format!("SET time_zone = '{tz}', @me = {k}"))
            .await
            .map_err(|x| e("set", x))?;
        Ok::<_, String>(c)
    }
    .await;
    // Every client is connected, with its state set, before any goes on:
    // one backend connection per client could not be.
    all_in.wait().await;
    let mut c = setup?;
    for r in 0..rounds {
        let got: Option<(String, Option<u64>)> = c
            .query_first("SELECT @@session.time_zone, @me")
            .await
            .map_err(|x| e("read", x))?;
        if got != Some((tz.clone(), Some(k))) {
            return Err(format!(
                "client {k}: state ({tz}, {k}) came back as {got:?}"
            ));
        }
        c.query_drop(format!("INSERT INTO mx.t (k, r) VALUES ({k}, {r})"))
            .await
            .map_err(|x| e("insert", x))?;
        let id = c.last_insert_id().unwrap_or(0);
        let lid: Option<u64> = c
            .query_first("SELECT LAST_INSERT_ID()")
            .await
            .map_err(|x| e("last_insert_id", x))?;
        if lid != Some(id) {
            return Err(format!(
                "client {k}: LAST_INSERT_ID() {lid:?} after inserting id {id}"
            ));
        }
        let mut tx = c
            .start_transaction(Default::default())
            .await
            .map_err(|x| e("begin", x))?;
        let row: Option<(u64, u64)> = tx
            .query_first(format!("SELECT k, r FROM mx.t WHERE id = {id} FOR UPDATE"))
            .await
            .map_err(|x| e("select in transaction", x))?;
        if row != Some((k, r)) {
            return Err(format!("client {k}: its row {id} read back as {row:?}"));
        }
        tx.commit().await.map_err(|x| e("commit", x))?;
    }
    let _ = c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_share_a_backend_that_allows_sixty_four() {
    let _ = rlimit::increase_nofile_limit(40_000);
    let max = format!("--max-connections={SERVER_MAX_CONNECTIONS}");
    let topo = Topology::start_with(1, &[max.as_str()]).await;
    {
        let mut c = topo.primary.conn().await;
        c.query_drop("CREATE DATABASE mx").await.unwrap();
        c.query_drop("CREATE TABLE mx.t (id INT AUTO_INCREMENT PRIMARY KEY, k INT, r INT)")
            .await
            .unwrap();
    }
    topo.wait_replicated().await;
    let mut cfg = ConcordConfig::new(topo.backends());
    cfg.listener_extra = format!("max_connections = {}\n", CLIENTS + 100);
    // Room left on each server for the health probes, the heartbeat and
    // the test's own checks.
    // MX_MODE=session: without multiplexing (the test must fail).
    let mode = std::env::var("MX_MODE").unwrap_or_else(|_| "transaction".into());
    cfg.extra = format!("[pool]\nmode = \"{mode}\"\nmax_per_backend = 40\nmin_idle = 0\nacquire_timeout = \"30s\"\n");
    let node = Concord::start(cfg).await;
    node.wait_readable(&["db2"]).await;
    let t0 = Instant::now();
    let all_in = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|k| tokio::spawn(app(node.opts(), k, 3, all_in.clone())))
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let took = t0.elapsed();
    let mut c = topo.primary.conn().await;
    let rows: Option<u64> = c.query_first("SELECT COUNT(*) FROM mx.t").await.unwrap();
    let peak: Option<(String, u64)> = c
        .query_first("SHOW GLOBAL STATUS LIKE 'Max_used_connections'")
        .await
        .unwrap();
    let handed = node.metric_sum("concord_pool_state_total").await;
    println!(
        "{CLIENTS} clients, 3 rounds each, in {:.1}s: {} errors; primary peak connections {peak:?}; hand-overs {handed:?}",
        took.as_secs_f64(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} clients failed, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(rows, Some(CLIENTS * 3), "every insert is there once");
    let peak = peak.map_or(u64::MAX, |p| p.1);
    assert!(
        peak <= u64::from(SERVER_MAX_CONNECTIONS),
        "the primary saw {peak} connections"
    );
}

/// One backend and a pool of two connections: sessions keep landing on
/// connections other sessions used.
async fn two_connections() -> (harness::MariaDb, Concord) {
    two_connections_with("").await
}

/// [`two_connections`] with more `[pool]` keys.
async fn two_connections_with(pool: &str) -> (harness::MariaDb, Concord) {
    let db = harness::MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.extra = format!("[pool]\nmode = \"transaction\"\nmax_per_backend = 2\nmin_idle = 0\nacquire_timeout = \"10s\"\n{pool}");
    let node = Concord::start(cfg).await;
    (db, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_one_session_reaches_the_next_on_the_same_connection() {
    let (_db, node) = two_connections().await;
    // One connection taken by a transaction: the next sessions share the
    // other.
    let mut blocker = node.conn().await;
    blocker.query_drop("BEGIN").await.unwrap();
    blocker.query_drop("SELECT 1").await.unwrap();
    // A session that pins (temporary table), holds a lock and a variable,
    // then ends: its connection goes back reset.
    let mut a = node.conn().await;
    a.query_drop("SELECT 1").await.unwrap();
    a.query_drop("CREATE TEMPORARY TABLE test.tmp (x INT)")
        .await
        .unwrap();
    a.query_drop("SET @k = 'secret'").await.unwrap();
    let got: Option<i64> = a.query_first("SELECT GET_LOCK('held', 0)").await.unwrap();
    assert_eq!(got, Some(1));
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut b = node.conn().await;
    let row: Option<(Option<String>, i64)> = b
        .query_first("SELECT @k, IS_FREE_LOCK('held')")
        .await
        .unwrap();
    assert_eq!(row, Some((None, 1)), "another session's variable or lock");
    assert!(
        b.query_drop("SELECT * FROM test.tmp").await.is_err(),
        "another session's temporary table"
    );
    blocker.query_drop("COMMIT").await.unwrap();
    // One-statement settings stay with the session that set them.
    let mut a = node.conn().await;
    a.query_drop("SET TRANSACTION READ ONLY").await.unwrap();
    b.query_drop("INSERT INTO test.t (v) VALUES (1)")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    let e = a.query_drop("INSERT INTO test.t (v) VALUES (2)").await;
    assert!(
        e.is_err(),
        "SET TRANSACTION READ ONLY applies to the session's next transaction"
    );
    a.query_drop("ROLLBACK").await.unwrap();
    a.query_drop("SET insert_id = 1000").await.unwrap();
    b.query_drop("INSERT INTO test.t (v) VALUES (3)")
        .await
        .unwrap();
    assert_ne!(
        b.last_insert_id(),
        Some(1000),
        "another session's insert_id"
    );
    a.query_drop("INSERT INTO test.t (v) VALUES (4)")
        .await
        .unwrap();
    assert_eq!(a.last_insert_id(), Some(1000));
    // A session without a database does not get another's.
    let mut with_db = node.conn().await;
    with_db.query_drop("USE test").await.unwrap();
    with_db.query_drop("SELECT COUNT(*) FROM t").await.unwrap();
    drop(with_db);
    let e = b.query_drop("SELECT COUNT(*) FROM t").await.unwrap_err();
    assert!(e.to_string().contains("1046"), "no database selected: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_stay_bounded_and_are_closed_when_idle() {
    let (db, node) = two_connections_with("max_prepared_per_connection = 8\n").await;
    let count = || open_statements(&db);
    // concord's own heartbeat keeps one, from its first beat on.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let base = count().await;
    let mut a = node.conn().await;
    let mut b = node.conn().await;
    for i in 0..300 {
        // mysql_async prepares, executes and (statement cache off) closes.
        let s = a.prep(format!("SELECT {i} + ?")).await.unwrap();
        let _: Option<i64> = a.exec_first(&s, (1,)).await.unwrap();
        a.close(s).await.unwrap();
        b.query_drop("SELECT 1").await.unwrap();
    }
    // Statements stay on the connections for any session that prepares
    // the same text, at most 8 per connection ...
    let n = count().await - base;
    assert!(n <= 2 * 8, "{n} statements open on the server");
    // ... and are closed once the connections idle.
    drop(a);
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    assert_eq!(
        count().await,
        base,
        "statements left open on idle connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_in_a_stored_program_is_its_own() {
    let (db, node) = two_connections().await;
    db.exec("CREATE PROCEDURE test.rc() BEGIN INSERT INTO test.t (v) VALUES (7), (8); SELECT ROW_COUNT(); END")
        .await;
    // The same statements through concord and directly on the server.
    let mut answers = Vec::new();
    for direct in [false, true] {
        let mut c = if direct {
            db.conn().await
        } else {
            node.conn().await
        };
        let mut other = node.conn().await;
        c.query_drop("UPDATE test.t SET v = v + 1").await.unwrap();
        other.query_drop("SELECT 1").await.unwrap();
        let in_proc: Option<i64> = c.query_first("CALL test.rc()").await.unwrap();
        other.query_drop("SELECT 1").await.unwrap();
        let after: Option<i64> = c.query_first("SELECT ROW_COUNT()").await.unwrap();
        c.query_drop("INSERT INTO test.t (v) VALUES (1), (2), (3)")
            .await
            .unwrap();
        other.query_drop("DO 1").await.unwrap();
        let multi: Option<i64> = c.query_first("SELECT ROW_COUNT()").await.unwrap();
        answers.push((in_proc, after, multi));
    }
    assert_eq!(answers[0], answers[1], "through concord, then direct");
    assert_eq!(answers[0].0, Some(2), "ROW_COUNT() inside the procedure");
    assert_eq!(answers[0].2, Some(3));
}

/// `pool.max_lifetime` holds for a connection given back long after its
/// last statement (session mode keeps it for the whole session): it is
/// closed, not handed to the session queued for it. One connection per
/// backend, a 2 s lifetime: A's connection is over 3 s old when A leaves
/// and B, queued behind it, gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_lifetime_is_not_handed_on() {
    let db = harness::MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.extra = "[pool]\nmode = \"session\"\nmax_per_backend = 1\nmin_idle = 0\nacquire_timeout = \"20s\"\nmax_lifetime = \"2s\"\n".into();
    let node = std::sync::Arc::new(Concord::start(cfg).await);
    let threads = || async {
        db.query::<i64>(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app' ORDER BY ID",
        )
        .await
    };
    let mut a = node.conn().await;
    a.query_drop("SELECT 1").await.unwrap();
    let old = threads().await;
    assert_eq!(old.len(), 1, "{old:?}");
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let n = node.clone();
    let b = tokio::spawn(async move {
        let mut b = n.conn().await;
        b.query_drop("SELECT 1").await.unwrap();
        b
    });
    // B queues for the only connection, then A leaves.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    a.disconnect().await.unwrap();
    let _b = b.await.unwrap();
    let now = threads().await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, old, "B was handed A's connection past its lifetime");
}

/// A statement a session prepared stays usable when the pool's upkeep
/// closed it on the connection meanwhile (transaction mode closes the
/// statements of a connection idle 2 s): the session prepares it again
/// instead of sending the old id. One connection, so A gets back the
/// connection its statement was closed on; B makes A give it back first.
/// (Two checks stand in the way of the old id: a session forgets what it
/// knew of a connection it takes back from someone else, the upkeep
/// included, and uses a remembered id only if the connection lists it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_closed_by_the_upkeep_is_prepared_again() {
    let (db, node) = one_connection_with("").await;
    with_upkeep_between_executes(&db, &node).await.unwrap();
}

/// With both checks switched off (test-only `trust-remembered-statement`:
/// the session keeps what it knew of a connection that was no longer its
/// own, and uses a remembered id without looking in the connection's
/// list), the old id reaches the server and the second EXECUTE fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_a_remembered_statement_id_fails_after_the_upkeep() {
    let (db, node) = one_connection_with("trust-remembered-statement").await;
    let e = with_upkeep_between_executes(&db, &node).await.unwrap_err();
    assert!(e.contains("1243"), "{e}");
}

/// One backend with one pooled connection, in transaction mode.
async fn one_connection_with(hooks: &str) -> (harness::MariaDb, Concord) {
    one_connection_waiting(hooks, "10s").await
}

/// [`one_connection_with`], a session waiting at most `acquire` for it.
async fn one_connection_waiting(hooks: &str, acquire: &str) -> (harness::MariaDb, Concord) {
    let db = harness::MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.extra = format!("[pool]\nmode = \"transaction\"\nmax_per_backend = 1\nmin_idle = 0\nacquire_timeout = \"{acquire}\"\n");
    cfg.test_hooks = hooks.into();
    let node = Concord::start(cfg).await;
    (db, node)
}

/// A executes a statement, B takes the connection, the upkeep closes the
/// statement on it (checked on the server), then A executes again.
async fn with_upkeep_between_executes(db: &harness::MariaDb, node: &Concord) -> Result<(), String> {
    let open = || open_statements(db);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let base = open().await;
    let mut a = node.conn().await;
    let mut b = node.conn().await;
    let s = a.prep("SELECT ? + 1").await.unwrap();
    let got: Option<i64> = a.exec_first(&s, (1,)).await.unwrap();
    assert_eq!(got, Some(2));
    assert_eq!(open().await, base + 1);
    b.query_drop("SELECT 1").await.unwrap();
    // Idle past the 2 s after which the upkeep (once a second) closes it.
    let t0 = Instant::now();
    while open().await != base {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the upkeep never closed the idle connection's statement"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let got: Option<i64> = a
        .exec_first(&s, (41,))
        .await
        .map_err(|e| format!("EXECUTE after the upkeep: {e}"))?;
    assert_eq!(got, Some(42));
    Ok(())
}

/// Sessions share statements prepared on a pooled connection only under
/// the same parse context: the server binds unqualified tables to the
/// database current at PREPARE, and reads `"y"` as a name or a string by
/// `sql_mode`. A and B prepare the same texts in different databases and
/// modes, through one connection; each must read what it would directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_shared_only_under_the_same_database_and_sql_mode() {
    let (db, node) = one_connection_with("").await;
    assert_eq!(sessions_in_two_contexts(&db, &node).await, DIRECT);
}

/// With contexts ignored (test-only `share-statements-by-text`), a session
/// runs the other's statement: its table, its reading of the quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_statements_by_text_alone_reads_another_database() {
    let (db, node) = one_connection_with("share-statements-by-text").await;
    let got = sessions_in_two_contexts(&db, &node).await;
    println!("with statements shared by text: {got:?}");
    assert_ne!(got, DIRECT);
}

/// What [`sessions_in_two_contexts`] answers directly on a server: A reads
/// db_a's `x` and the string "y"; B (ANSI_QUOTES) db_b's `x` and column
/// `y`.
const DIRECT: [&str; 4] = ["A", "a", "y", "b"];

/// A (database db_a) and B (db_b, ANSI_QUOTES) each prepare the same two
/// texts and execute them turn about, so each execute finds the other's
/// statement of the same text on the one connection: A's and B's answers.
async fn sessions_in_two_contexts(db: &harness::MariaDb, node: &Concord) -> Vec<String> {
    db.exec(
        "CREATE DATABASE db_a; CREATE DATABASE db_b; \
         CREATE TABLE db_a.t (x VARCHAR(8), y VARCHAR(8)); INSERT INTO db_a.t VALUES ('A', 'Ay'); \
         CREATE TABLE db_b.t (x VARCHAR(8), y VARCHAR(8)); INSERT INTO db_b.t VALUES ('a', 'b')",
    )
    .await;
    let mut a = node.conn().await;
    let mut b = node.conn().await;
    a.query_drop("USE db_a").await.unwrap();
    b.query_drop("USE db_b").await.unwrap();
    b.query_drop("SET sql_mode = 'ANSI_QUOTES'").await.unwrap();
    let mut got = Vec::new();
    let run = async {
        for sql in ["SELECT x FROM t", "SELECT \"y\" FROM t"] {
            let sa = a.prep(sql).await?;
            let sb = b.prep(sql).await?;
            for _ in 0..2 {
                for (c, s) in [(&mut a, &sa), (&mut b, &sb)] {
                    let v: Option<String> = c.exec_first(s, ()).await?;
                    got.push(v.unwrap_or_default());
                }
            }
        }
        Ok::<_, mysql_async::Error>(())
    };
    if let Err(e) = run.await {
        got.push(e.to_string());
        return got;
    }
    // Each session's answers were the same both times.
    assert_eq!(
        (got[0..2].to_vec(), got[4..6].to_vec()),
        (got[2..4].to_vec(), got[6..8].to_vec()),
        "{got:?}"
    );
    vec![
        got[0].clone(),
        got[1].clone(),
        got[4].clone(),
        got[5].clone(),
    ]
}

/// A client's COM_RESET_CONNECTION frees every statement on its
/// connection, including those other sessions cached there: B's next
/// EXECUTE on that connection prepares again. Test-only
/// `client-reset-keeps-statements` (the connection's list kept): 1243.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_frees_the_statements_others_cached_on_its_connection() {
    for (hooks, want) in [
        ("", Ok(Some(42))),
        ("client-reset-keeps-statements", Err(1243)),
    ] {
        let (_db, node) = one_connection_with(hooks).await;
        let mut a = node.conn().await;
        let mut b = node.conn().await;
        let s = b.prep("SELECT ? + 1").await.unwrap();
        let v: Option<i64> = b.exec_first(&s, (1,)).await.unwrap();
        assert_eq!(v, Some(2));
        a.query_drop("BEGIN").await.unwrap();
        a.reset().await.unwrap();
        a.query_drop("SELECT 1").await.unwrap();
        let got = b
            .exec_first::<i64, _, _>(&s, (41,))
            .await
            .map_err(|e| match e {
                mysql_async::Error::Server(e) => e.code,
                e => panic!("{e}"),
            });
        assert_eq!(got, want, "hooks {hooks:?}");
    }
}

/// What a session holds on its connection that no tracker reports stays
/// its own: a temporary table created by a form concord does not parse
/// (CREATE OR REPLACE: its name unread) survives a DROP of another table,
/// and a sequence's LASTVAL after NEXTVAL. One connection: while A keeps it, B waits (4 s) and is
/// refused; it never reads A's table or value. Test-only
/// `unnamed-pins-end-on-drop` and `sequences-unpinned` remove the two
/// protections: B reads A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_or_sequence_value_never_reaches_another_session() {
    for (hooks, leaks) in [
        ("", false),
        ("unnamed-pins-end-on-drop,sequences-unpinned", true),
    ] {
        let (db, node) = one_connection_waiting(hooks, "4s").await;
        db.exec("CREATE TABLE test.scratch (x INT); CREATE SEQUENCE test.s")
            .await;
        // A temporary table whose name concord does not read.
        let mut a = node.conn().await;
        let mut b = node.conn().await;
        a.query_drop("CREATE OR REPLACE TEMPORARY TABLE test.tmp (x INT)")
            .await
            .unwrap();
        a.query_drop("INSERT INTO test.tmp VALUES (42)")
            .await
            .unwrap();
        a.query_drop("DROP TABLE test.scratch").await.unwrap();
        let got = b.query_first::<i64, _>("SELECT x FROM test.tmp").await;
        assert_eq!(got.is_ok(), leaks, "B read A's temporary table: {got:?}");
        if !leaks {
            let own: Option<i64> = a.query_first("SELECT x FROM test.tmp").await.unwrap();
            assert_eq!(own, Some(42));
        }
        a.disconnect().await.unwrap();
        // A sequence's LASTVAL.
        let mut a = node.conn().await;
        let v: Option<i64> = a.query_first("SELECT NEXTVAL(test.s)").await.unwrap();
        assert_eq!(v, Some(1));
        let got = b
            .query_first::<Option<i64>, _>("SELECT LASTVAL(test.s)")
            .await;
        assert_eq!(
            matches!(got, Ok(Some(Some(1)))),
            leaks,
            "B read A's LASTVAL: {got:?}"
        );
        if !leaks {
            let own: Option<Option<i64>> = a.query_first("SELECT LASTVAL(test.s)").await.unwrap();
            assert_eq!(own, Some(Some(1)));
        }
    }
}

/// A client's two statements of one text each keep their own server
/// statement wherever concord prepares them lazily: the server keeps the
/// parameter types of a statement's last typed execute, and a client may
/// send an execute without types (C API after its first bind). Raw
/// client, one pooled connection that B takes between A's prepares and
/// executes; A's answers must be the server's own. Test-only
/// `twin-statements-share`: the untyped execute is read with the other
/// statement's types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_statements_of_one_text_keep_their_own_parameter_types() {
    use concord_protocol::consts::com;
    use concord_protocol::scan::Expect;
    use harness::raw::RawClient;
    /// COM_STMT_EXECUTE of one parameter: (type, value) bound, or only
    /// the value (types from the last bind).
    fn execute(id: u32, ty: Option<u8>, value: &[u8]) -> Vec<u8> {
        let mut p = vec![com::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // null bitmap
        match ty {
            Some(t) => p.extend_from_slice(&[1, t, 0]),
            None => p.push(0),
        }
        p.extend_from_slice(value);
        p
    }
    let seven = 7i64.to_le_bytes();
    let abc = [3, b'a', b'b', b'c'];
    let steps: [(usize, Option<u8>, &[u8]); 3] = [
        (0, Some(0x08), &seven), // LONGLONG 7
        (1, Some(0x0f), &abc),   // VARCHAR 'abc'
        (0, None, &seven),       // 7 again, types from statement 0's bind
    ];
    let mut answers = Vec::new();
    for (hooks, direct) in [("", true), ("", false), ("twin-statements-share", false)] {
        let (db, node) = one_connection_with(hooks).await;
        let port = if direct { db.port } else { node.cfg.port };
        let mut a = RawClient::connect(port, "app", harness::PASSWORD, 0).await;
        let mut other = node.conn().await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut prep = vec![com::STMT_PREPARE];
            prep.extend_from_slice(b"SELECT CONCAT(?, '')");
            let r = a.command(&prep, Expect::Prepare).await;
            assert_eq!(r[0].first(), Some(0));
            ids.push(u32::from_le_bytes(r[0].payload[1..5].try_into().unwrap()));
        }
        // B takes the connection: A's statements are found there by text.
        other.query_drop("SELECT 1").await.unwrap();
        let mut got = Vec::new();
        for (i, ty, v) in steps {
            let r = a.command(&execute(ids[i], ty, v), Expect::ResultSets).await;
            got.push(r.iter().map(|p| p.payload.to_vec()).collect::<Vec<_>>());
        }
        answers.push((hooks, direct, got));
    }
    assert_eq!(answers[1].2, answers[0].2, "through concord, then direct");
    assert_ne!(
        answers[2].2, answers[0].2,
        "with statements of one text sharing, the answers were the server's"
    );
}

/// A session that sets a replication variable for what it writes next
/// (`pseudo_thread_id`, as mysqlbinlog's output does) keeps its
/// connection: another session neither reads it nor writes under it.
/// One connection: B waits (4 s) and is refused. Test-only
/// `replication-vars-unpinned`: B reads A's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_variable_stays_with_the_session_that_set_it() {
    for (hooks, leaks) in [("", false), ("replication-vars-unpinned", true)] {
        let (_db, node) = one_connection_waiting(hooks, "4s").await;
        let mut a = node.conn().await;
        let mut b = node.conn().await;
        a.query_drop("SET pseudo_thread_id = 12345").await.unwrap();
        let got = b.query_first::<u64, _>("SELECT @@pseudo_thread_id").await;
        assert_eq!(
            matches!(got, Ok(Some(12345))),
            leaks,
            "hooks {hooks:?}: B read {got:?}"
        );
        let own: Option<u64> = a.query_first("SELECT @@pseudo_thread_id").await.unwrap();
        if !leaks {
            assert_eq!(own, Some(12345));
        }
    }
}

/// Prepared statements open on the server (`Prepared_stmt_count`).
async fn open_statements(db: &harness::MariaDb) -> u64 {
    let c: Option<(String, u64)> = db
        .conn()
        .await
        .query_first("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
        .await
        .unwrap();
    c.map_or(u64::MAX, |c| c.1)
}

/// `SET TRANSACTION` (no SESSION) sets the next transaction's
/// characteristics; the server keeps them until a transaction ends, not
/// only for the next statement. The connection stays with the session
/// until then: another session's transaction is not made read-only, and
/// the session's own next transaction still is (1792 on its INSERT, as
/// directly). One connection: B waits (2 s) and is refused. Test-only
/// `one-shot-characteristics-end-early`: B's INSERT is refused with 1792
/// and A's goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_transaction_characteristics_stay_with_the_session_that_set_them() {
    for (hooks, leaks) in [("", false), ("one-shot-characteristics-end-early", true)] {
        let (db, node) = one_connection_waiting(hooks, "2s").await;
        db.exec("CREATE TABLE IF NOT EXISTS test.ro (id INT PRIMARY KEY) ENGINE=InnoDB")
            .await;
        let mut a = node.conn().await;
        let mut b = node.conn().await;
        a.query_drop("SET TRANSACTION READ ONLY").await.unwrap();
        a.query_drop("SELECT 1").await.unwrap();
        let got_b = async {
            b.query_drop("START TRANSACTION").await?;
            b.query_drop("INSERT INTO test.ro VALUES (1)").await
        }
        .await;
        // (Gone: it would keep the connection for SHOW WARNINGS.)
        let _ = b.query_drop("ROLLBACK").await;
        b.disconnect().await.unwrap();
        let code = |r: &Result<(), mysql_async::Error>| match r {
            Err(mysql_async::Error::Server(e)) => Some(e.code),
            _ => None,
        };
        assert_eq!(
            code(&got_b) == Some(1792),
            leaks,
            "hooks {hooks:?}: B got {got_b:?}"
        );
        if !leaks {
            assert!(got_b.is_err(), "B waited for the only connection");
        }
        let got_a = async {
            a.query_drop("START TRANSACTION").await?;
            a.query_drop("INSERT INTO test.ro VALUES (2)").await
        }
        .await;
        assert_eq!(
            code(&got_a) == Some(1792),
            !leaks,
            "hooks {hooks:?}: A got {got_a:?}"
        );
        a.query_drop("ROLLBACK").await.unwrap();
    }
}

/// `SET insert_id` forces the id of the session's next auto-increment
/// insert, however many other statements run first (an insert of an
/// explicit id included, whose OK reports that id): the connection stays
/// with the session until then. One connection: B waits (2 s) and is
/// refused; A's insert gets 1000, as directly. Test-only
/// `one-shot-vars-end-early` (given back after the next write): B's
/// insert gets 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_insert_id_stays_with_the_session_that_set_it() {
    for (hooks, leaks) in [("", false), ("one-shot-vars-end-early", true)] {
        let (db, node) = one_connection_waiting(hooks, "2s").await;
        db.exec("CREATE TABLE IF NOT EXISTS test.ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB")
            .await;
        db.exec("INSERT INTO test.ai (v) VALUES (0)").await;
        let mut a = node.conn().await;
        let mut b = node.conn().await;
        a.query_drop("SET insert_id = 1000").await.unwrap();
        a.query_drop("UPDATE test.ai SET v = v + 1 WHERE id = 1")
            .await
            .unwrap();
        // An explicit id: reported in the OK, the forced one still waits.
        a.query_drop("INSERT INTO test.ai (id, v) VALUES (500, 1)")
            .await
            .unwrap();
        let got_b = b.exec_drop("INSERT INTO test.ai (v) VALUES (9)", ()).await;
        let b_id = got_b.as_ref().ok().map(|_| b.last_insert_id());
        assert_eq!(
            b_id == Some(Some(1000)),
            leaks,
            "hooks {hooks:?}: B got {got_b:?}, id {b_id:?}"
        );
        if !leaks {
            assert!(got_b.is_err(), "B waited for the only connection");
        }
        b.disconnect().await.unwrap();
        a.exec_drop("INSERT INTO test.ai (v) VALUES (7)", ())
            .await
            .unwrap();
        assert_eq!(
            a.last_insert_id() == Some(1000),
            !leaks,
            "hooks {hooks:?}: A's id {:?}",
            a.last_insert_id()
        );
    }
}

/// In a transaction, LAST_INSERT_ID() and ROW_COUNT() read together (by a
/// SET: a lone SELECT gets ROW_COUNT() as a value) after an insert and an
/// update answer as directly: the connection held the
/// session's LAST_INSERT_ID() (the same value, 0, both fresh), so the
/// insert's is the session's and nothing is read back, which would reset
/// ROW_COUNT(). Test-only `insert-id-values-unknown`: ROW_COUNT() reads -1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_insert_id_and_row_count_read_together_in_a_transaction() {
    let db = harness::MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.o (id INT AUTO_INCREMENT PRIMARY KEY, c INT)")
        .await;
    db.exec("CREATE TABLE test.s (k INT PRIMARY KEY, n INT)")
        .await;
    db.exec("INSERT INTO test.s VALUES (1, 10), (2, 10), (3, 10)")
        .await;
    let mut answers = Vec::new();
    for (hooks, direct) in [("", true), ("", false), ("insert-id-values-unknown", false)] {
        let (_node, mut c) = direct_or_through(&db, hooks, direct).await;
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop("INSERT INTO test.o (c) VALUES (7)")
            .await
            .unwrap();
        c.query_drop("UPDATE test.s SET n = n - 1 WHERE k IN (1, 2)")
            .await
            .unwrap();
        c.query_drop("SET @id = LAST_INSERT_ID(), @n = ROW_COUNT()")
            .await
            .unwrap();
        let got: Option<(i64, i64)> = c.query_first("SELECT @id > 0, @n").await.unwrap();
        c.query_drop("ROLLBACK").await.unwrap();
        answers.push(got);
    }
    assert_eq!(answers[0], Some((1, 2)), "the server's own");
    assert_eq!(answers[1], answers[0], "through concord");
    assert_ne!(answers[2], answers[0], "reading the id back first");
}

/// LAST_INSERT_ID() that a multi-statement changed without reporting it
/// (its last OK is an UPDATE's) is not taken for a value the connection
/// still holds: the next session on that connection reads its own, as
/// directly. One connection. Test-only `multi-statement-insert-id-unseen`:
/// B reads A's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_statement_insert_id_stays_with_its_session() {
    for (hooks, leaks) in [("", false), ("multi-statement-insert-id-unseen", true)] {
        let (db, node) = one_connection_waiting(hooks, "4s").await;
        db.exec("CREATE TABLE test.mi (id INT AUTO_INCREMENT PRIMARY KEY, c INT)")
            .await;
        let mut a = node.conn().await;
        a.query_drop("INSERT INTO test.mi (c) VALUES (1); UPDATE test.mi SET c = 2 WHERE id = 1")
            .await
            .unwrap();
        a.disconnect().await.unwrap();
        let mut b = node.conn().await;
        let theirs: Option<u64> = b.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        assert_eq!(
            theirs == Some(1),
            leaks,
            "hooks {hooks:?}: B read {theirs:?}"
        );
    }
}

/// ROW_COUNT() right after a failed statement is -1, as directly. After an
/// error concord asks the connection for the session's status with a
/// COM_PING, which sets ROW_COUNT() to 0 there, so it writes the value
/// in. Test-only `ping-keeps-row-count`: 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_after_a_failed_statement_is_minus_one() {
    let db = harness::MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.r (v INT)").await;
    db.exec("INSERT INTO test.r VALUES (1), (3), (4)").await;
    let mut answers = Vec::new();
    for (hooks, direct) in [("", true), ("", false), ("ping-keeps-row-count", false)] {
        let (_node, mut c) = direct_or_through(&db, hooks, direct).await;
        let mut got = Vec::new();
        for failing in [
            "SELECT * FROM test.nosuch",
            "SELECT v FROM test.r WHERE v > 2 INTO @y",
            "INSERT INTO test.r VALUES ('x')",
            "UPDATE test.nosuch SET v = 1",
        ] {
            assert!(c.query_drop(failing).await.is_err(), "{failing}");
            let n: Option<i64> = c.query_first("SELECT ROW_COUNT()").await.unwrap();
            got.push(n);
        }
        answers.push(got);
    }
    println!("direct, concord, ping-keeps-row-count: {answers:?}");
    assert_eq!(answers[0], vec![Some(-1); 4], "the server's own");
    assert_eq!(answers[1], answers[0], "through concord");
    assert_ne!(answers[2], answers[0], "the ping's 0");
}

/// FOUND_ROWS() after statements that set it without a result of their
/// own (INSERT ... SELECT, CREATE TABLE ... SELECT, SET @v = (SELECT ...)),
/// after a LIMIT with an offset (the skipped rows count), and after ones
/// that leave it (a subquery in VALUES, UPDATE, DO, a view, SHOW CREATE,
/// SHOW WARNINGS), as directly; reads go wherever, connections move between
/// statements. Found by MariaDB's `main.ctype_latin1` and
/// `main.select_found` through concord.
/// Test-only `found-rows-untracked`: the previous SELECT's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_rows_after_statements_that_select_into_something_else() {
    let db = harness::MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.f (a INT)").await;
    let steps = [
        "INSERT INTO test.f SELECT a FROM test.f",
        "INSERT INTO test.f SELECT SQL_CALC_FOUND_ROWS a FROM test.f LIMIT 1",
        "INSERT INTO test.f SELECT 5",
        "REPLACE INTO test.f SELECT a FROM test.f WHERE a > 100",
        "SET @v = (SELECT a FROM test.f LIMIT 1)",
        "CREATE TABLE test.f2 SELECT a FROM test.f",
        "INSERT INTO test.f VALUES ((SELECT 7))",
        "UPDATE test.f SET a = a WHERE a IN (SELECT 1)",
        "DO (SELECT 1)",
        "CREATE VIEW test.fv AS SELECT 1",
        "SHOW CREATE TABLE test.f",
        "SHOW WARNINGS",
        "SELECT a FROM test.f ORDER BY a LIMIT 2, 1",
        "SELECT a FROM test.f ORDER BY a LIMIT 1 OFFSET 1",
        "SHOW TABLES FROM test",
    ];
    let mut answers = Vec::new();
    for (hooks, direct) in [("", true), ("", false), ("found-rows-untracked", false)] {
        db.exec("DROP TABLE IF EXISTS test.f2").await;
        db.exec("DROP VIEW IF EXISTS test.fv").await;
        db.exec("DELETE FROM test.f").await;
        db.exec("INSERT INTO test.f VALUES (1), (2), (3)").await;
        let (_node, mut c) = direct_or_through(&db, hooks, direct).await;
        let mut got = Vec::new();
        for step in steps {
            let _: Vec<(i64,)> = c.query("SELECT 1 UNION SELECT 2").await.unwrap();
            c.query_drop(step).await.unwrap();
            let n: Option<i64> = c.query_first("SELECT FOUND_ROWS()").await.unwrap();
            got.push(n);
        }
        answers.push(got);
    }
    println!("direct, concord, found-rows-untracked: {answers:?}");
    assert_eq!(answers[1], answers[0], "through concord");
    assert_ne!(answers[2], answers[0], "the previous SELECT's count");
}

/// A session that starts after `SET GLOBAL` starts from the new value, as
/// a new connection does directly: the SET renews the pool's connections.
/// (From MariaDB's `main.alter_table`: SET GLOBAL max_allowed_packet, then
/// a new connection inserts a value only the new limit allows.)
/// Test-only `pool-ignores-set-global`: the pooled connection keeps the
/// value it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_after_set_global_starts_from_the_new_value() {
    for (hooks, renewed) in [("pool-ignores-set-global", false), ("", true)] {
        // Alone, as the second statement of a multi-statement text, and
        // prepared (COM_STMT_EXECUTE with the value as a parameter).
        for set in [
            "SET GLOBAL sql_mode = 'ANSI_QUOTES'",
            "DO 1; SET GLOBAL sql_mode = 'ANSI_QUOTES'",
            "SET GLOBAL sql_mode = ?",
        ] {
            let (db, node) = one_connection_with(hooks).await;
            let mut a = node.conn().await;
            let before: Option<String> = a.query_first("SELECT @@session.sql_mode").await.unwrap();
            if set.ends_with('?') {
                a.exec_drop(set, ("ANSI_QUOTES",)).await.unwrap();
            } else {
                a.query_drop(set).await.unwrap();
            }
            drop(a);
            let mut b = node.conn().await;
            let got: Option<String> = b.query_first("SELECT @@session.sql_mode").await.unwrap();
            db.exec("SET GLOBAL sql_mode = DEFAULT").await;
            println!(
                "hooks {hooks:?}, {set:?}: before {before:?}, a new session after it: {got:?}"
            );
            assert_eq!(
                got.as_deref() == Some("ANSI_QUOTES"),
                renewed,
                "hooks {hooks:?}, {set:?}"
            );
        }
    }
}

/// The same through another node of the fleet: a SET GLOBAL through node
/// 1, then a new session through node 2, whose pool to the primary was
/// warm. Test-only `retire-this-node-only`: node 2's pooled connection
/// keeps the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_through_another_node_after_set_global_starts_from_the_new_value() {
    // In a transaction: on the primary, where SET GLOBAL ran.
    async fn mode(c: &mut mysql_async::Conn) -> Option<String> {
        c.query_drop("BEGIN").await.unwrap();
        let m: Option<String> = c.query_first("SELECT @@session.sql_mode").await.unwrap();
        c.query_drop("COMMIT").await.unwrap();
        m
    }
    for (hooks, renewed) in [("retire-this-node-only", false), ("", true)] {
        let rig = harness::rig::Rig::start_full("", "", &[], &[], hooks).await;
        let mut warm = rig.fleet.nodes[1].conn().await;
        let before = mode(&mut warm).await;
        drop(warm);
        let mut a = rig.fleet.nodes[0].conn().await;
        a.query_drop("SET GLOBAL sql_mode = 'ANSI_QUOTES'")
            .await
            .unwrap();
        // The other nodes renew after the OK, before the session's next
        // statement is read: once that is answered, they have.
        a.query_drop("DO 1").await.unwrap();
        let mut b = rig.fleet.nodes[1].conn().await;
        let got = mode(&mut b).await;
        println!("hooks {hooks:?}: before {before:?}, a new session on node 2 after SET GLOBAL on node 1: {got:?}");
        assert_ne!(before.as_deref(), Some("ANSI_QUOTES"));
        assert_eq!(
            got.as_deref() == Some("ANSI_QUOTES"),
            renewed,
            "hooks {hooks:?}"
        );
    }
}

/// A concord in front of `db` with test-only `hooks`, and a session
/// directly on `db` (`direct`) or through that concord (kept alive with it).
async fn direct_or_through(
    db: &harness::MariaDb,
    hooks: &str,
    direct: bool,
) -> (Concord, mysql_async::Conn) {
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.test_hooks = hooks.into();
    let node = Concord::start(cfg).await;
    let c = if direct {
        db.conn().await
    } else {
        node.conn().await
    };
    (node, c)
}
