//! Fencing at the proxy layer, statement by statement: nothing goes to a
//! primary once this node's lease for the route has lapsed, and an answer
//! that comes back after that is never relayed as a success.
//!
//! Each scenario runs twice: as shipped, and with the one protection it
//! is about switched off (a test-only switch, see
//! `config/src/testhooks.rs`), where the violation must show. So a
//! scenario that stopped exercising its protection fails too.

use concord_protocol::consts::com;
use concord_protocol::scan::Expect;
use harness::raw::RawClient;
use harness::{Fleet, MariaDb, PASSWORD};
use mysql_async::prelude::*;
use std::time::Duration;

fn backends(db: &MariaDb) -> Vec<(String, String, Option<String>)> {
    vec![("db1".into(), db.addr(), None)]
}

/// Waits until node `i` says it holds no lease (`/readyz` 503).
async fn lease_lapsed(fleet: &Fleet, i: usize) {
    let node = &fleet.nodes[i];
    harness::wait_for(
        "the cut-off node to lose its lease",
        Duration::from_secs(10),
        || async { matches!(node.http_get("/readyz").await, Some((503, _))).then_some(()) },
    )
    .await;
}

/// A follower runs an UPDATE that waits on a row lock held directly on the
/// primary; the follower is cut off from the fleet and its lease lapses;
/// then the lock is released and the UPDATE commits. Returns what the
/// client was told, and the row's value on the primary afterwards.
async fn late_answer(hooks: &str) -> (Result<(), mysql_async::Error>, i64) {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.acc (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    db.exec("INSERT INTO test.acc VALUES (1, 0)").await;
    let fleet = Fleet::start(3, backends(&db), |_, c| {
        c.test_hooks = hooks.into();
    })
    .await;
    let leader = fleet.leader(Duration::from_secs(10)).await;
    let x = (leader + 1) % 3;
    let mut client = fleet.nodes[x].conn().await;
    client.query_drop("SELECT 1").await.unwrap();
    // The lock, held directly on the primary.
    let mut holder = db.conn().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT v FROM test.acc WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let update = tokio::spawn(async move {
        let r = client
            .query_drop("UPDATE test.acc SET v = v + 1 WHERE id = 1")
            .await;
        (r, client)
    });
    // The UPDATE is waiting on the lock (sent under a valid lease).
    harness::wait_for(
        "the UPDATE to wait on the row lock",
        Duration::from_secs(10),
        || async {
            let n: Vec<i64> = db
                .query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'UPDATE test.acc%'")
                .await;
            (n.first() == Some(&1)).then_some(())
        },
    )
    .await;
    fleet.isolate(x);
    lease_lapsed(&fleet, x).await;
    holder.query_drop("COMMIT").await.unwrap();
    let (r, _client) = update.await.unwrap();
    let v: Vec<i64> = db.query("SELECT v FROM test.acc WHERE id = 1").await;
    (r, v.first().copied().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_lease_lapsed_is_outcome_unknown_never_success() {
    let (r, v) = late_answer("").await;
    println!("late answer as shipped: {r:?}; row value {v}");
    // The statement did commit (the server ran it): the client must not
    // be told it failed either, only that the outcome is unknown.
    assert_eq!(v, 1, "the UPDATE ran on the server");
    match r {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1105, "{e:?}");
            assert_eq!(e.state, "08007", "{e:?}");
            assert!(e.message.contains("outcome is unknown"), "{}", e.message);
        }
        Err(mysql_async::Error::Io(_)) | Err(mysql_async::Error::Driver(_)) => {
            panic!("the client should get the outcome-unknown error before the close: {r:?}")
        }
        other => panic!("a late answer was relayed: {other:?}"),
    }
    // Without the check the same late answer reaches the client as a
    // success: this is what the check prevents.
    let (r, v) = late_answer("no-late-answer-check").await;
    println!("late answer without the check: {r:?}; row value {v}");
    assert!(r.is_ok() && v == 1, "{r:?}");
}

/// A follower with one primary connection in its pool: one session holds
/// it in a transaction, a second session's INSERT waits for it. The
/// follower is cut off and its lease lapses; then the first session is
/// killed and the waiting INSERT gets the connection. Returns the error
/// the second client was told (if any) and whether its row reached the
/// primary.
async fn sent_after_lapse(hooks: &str) -> (Option<concord_protocol::err::ErrPacket>, bool) {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.w (id INT PRIMARY KEY)").await;
    let fleet = Fleet::start(3, backends(&db), |_, c| {
        c.test_hooks = hooks.into();
        c.extra.push_str(
            "[pool]\nmax_per_backend = 1\nmin_idle = 0\nacquire_timeout = \"20s\"\n[failover]\nwrite_buffer_timeout = \"20s\"\n",
        );
    })
    .await;
    let leader = fleet.leader(Duration::from_secs(10)).await;
    let x = (leader + 1) % 3;
    let mut a = fleet.nodes[x].conn().await;
    let a_id: Option<u64> = a.query_first("SELECT CONNECTION_ID()").await.unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO test.w VALUES (1)").await.unwrap();
    // B logs in without a database (no backend needed yet), then its
    // INSERT waits for the pool's only connection.
    let port = fleet.nodes[x].cfg.port;
    let mut b = RawClient::connect_db(port, "app", PASSWORD, 0, None).await;
    let insert = tokio::spawn(async move {
        let mut q = vec![com::QUERY];
        q.extend_from_slice(b"INSERT INTO test.w VALUES (2)");
        b.command(&q, Expect::Single).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!insert.is_finished(), "B waits for a connection");
    fleet.isolate(x);
    lease_lapsed(&fleet, x).await;
    // A is killed (admin port): its connection, in a transaction, is
    // closed, and the pool's slot is free for B.
    fleet.nodes[x]
        .admin_query(&format!("KILL SESSION {}", a_id.unwrap()))
        .await
        .unwrap();
    drop(a);
    let answer = tokio::time::timeout(Duration::from_secs(30), insert)
        .await
        .expect("B is answered")
        .unwrap();
    let err = answer
        .first()
        .filter(|p| p.payload.first() == Some(&0xff))
        .and_then(|p| concord_protocol::err::ErrPacket::decode(&p.payload).ok());
    let rows: Vec<i64> = db.query("SELECT id FROM test.w").await;
    (err, rows.contains(&2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_to_the_primary_after_the_lease_lapsed() {
    let (err, reached) = sent_after_lapse("").await;
    println!("as shipped: {err:?}; the row reached the primary: {reached}");
    assert!(
        !reached,
        "a statement went to the primary after the node's lease lapsed"
    );
    let e = err.expect("an error packet");
    assert_eq!(e.code, 1290, "{e:?}");
    assert!(e.message.contains("not executed"), "{}", e.message);
    assert!(e.message.contains("safe to retry"), "{}", e.message);
    let (err, reached) = sent_after_lapse("no-presend-check").await;
    println!("without the pre-send check: {err:?}; the row reached the primary: {reached}");
    assert!(
        reached,
        "without the check the INSERT is sent with no lease"
    );
}
