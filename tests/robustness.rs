//! Hostile or broken peers: malformed client bytes, slowloris handshakes,
//! oversized packets, backends that die mid-query, and a 1 GiB result
//! through a slow reader with bounded proxy memory.

use concord_protocol::consts::com;
use concord_protocol::err::ErrPacket;
use concord_protocol::scan::Expect;
use harness::raw::{find_err, read_until_closed, RawClient};
use harness::{Concord, ConcordConfig, MariaDb, PASSWORD};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(listener_extra: &str) -> (MariaDb, Concord) {
    let db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.listener_extra = listener_extra.to_string();
    let node = Concord::start(cfg).await;
    (db, node)
}

async fn still_serves(node: &Concord) {
    let mut c = node.conn().await;
    let v: Option<i64> = c.query_first("SELECT 41 + 1").await.unwrap();
    assert_eq!(v, Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_close_only_that_session() {
    let (_db, node) = setup("handshake_timeout = \"1s\"\nmax_allowed_packet = \"1MiB\"").await;
    let mut keeper = node.conn().await;

    // Garbage instead of a handshake response.
    let mut s = TcpStream::connect(node.addr()).await.unwrap();
    let mut greeting = [0u8; 512];
    let _ = s.read(&mut greeting).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("session must close");
    let e = find_err(&got).expect("an error packet before closing");
    assert!(e.message.contains("concord closed the connection"), "{e}");
    still_serves(&node).await;

    // A truncated packet, then the client goes away.
    let mut s = TcpStream::connect(node.addr()).await.unwrap();
    let _ = s.read(&mut greeting).await.unwrap();
    s.write_all(&[100, 0, 0, 1, 1, 2, 3]).await.unwrap();
    drop(s);
    still_serves(&node).await;

    // Slowloris: connects, never answers the greeting.
    let mut s = TcpStream::connect(node.addr()).await.unwrap();
    let t = Instant::now();
    let _ = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed by handshake_timeout");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "handshake timeout not enforced"
    );

    // Random bytes from many connections at once.
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let addr = node.addr();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let junk: Vec<u8> = (0..200u32)
                .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i) >> 7) as u8)
                .collect();
            let _ = s.write_all(&junk).await;
            let _ = read_until_closed(&mut s, Duration::from_secs(5)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v: Option<i64> = keeper.query_first("SELECT 7").await.unwrap();
    assert_eq!(v, Some(7), "an established session must be unaffected");
    assert!(
        node.logs().contains("client protocol error"),
        "a log line names the cause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sequence_and_oversized_packets_after_login() {
    let (_db, node) = setup("max_allowed_packet = \"1MiB\"").await;

    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    let mut seq = 5; // commands must start at 0
    c.s.send(&mut seq, &[com::QUERY, b'1']).await.unwrap();
    let p = c.s.read_packet().await.unwrap();
    assert_eq!(ErrPacket::decode(&p.payload).unwrap().code, 1156);
    assert!(c.s.read_packet().await.is_err(), "closed after the error");

    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    // A header announcing 2 MiB when 1 MiB is the limit: refused before
    // anything is buffered.
    c.s.io
        .write_all(&[0, 0, 0x20, 0, com::QUERY])
        .await
        .unwrap();
    let p = c.s.read_packet().await.unwrap();
    let e = ErrPacket::decode(&p.payload).unwrap();
    assert_eq!(e.code, 1153, "{e}");
    still_serves(&node).await;

    // Just under the limit works.
    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    let mut q = b"SELECT LENGTH('".to_vec();
    q.extend(std::iter::repeat_n(b'a', 1000 * 1000));
    q.extend_from_slice(b"')");
    let mut p = vec![com::QUERY];
    p.extend_from_slice(&q);
    let r = c.command(&p, Expect::ResultSets).await;
    assert!(r.iter().any(|p| p.payload.ends_with(b"1000000")));
}

/// The backend connection concord holds for user `app`.
async fn kill_app_connections(db: &MariaDb, filter: &str) -> usize {
    let mut root = db.conn().await;
    let ids: Vec<u64> = root
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app' {filter}"
        ))
        .await
        .unwrap();
    for id in &ids {
        let _ = root.query_drop(format!("KILL {id}")).await;
    }
    // KILL returns before the target thread is gone: wait until it is, so
    // the next statement cannot still reach it.
    harness::wait_for(
        "the killed connections to be gone",
        std::time::Duration::from_secs(5),
        || async {
            let mut c = db.conn().await;
            let left: Vec<u64> = c
                .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
                .await
                .unwrap();
            (!left.iter().any(|id| ids.contains(id))).then_some(())
        },
    )
    .await;
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dies_mid_query() {
    let (mut db, node) = setup("").await;
    let mut other = node.conn().await;
    let mut victim = node.conn().await;
    let q = tokio::spawn(async move {
        let r = victim.query_drop("SELECT SLEEP(20)").await;
        (r, victim)
    });
    harness::wait_for("the query to start", Duration::from_secs(10), || async {
        (kill_app_connections(&db, "AND INFO LIKE 'SELECT SLEEP%'").await > 0).then_some(())
    })
    .await;
    let (r, mut victim) = q.await.unwrap();
    match r {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (1158, "08S01"), "{e:?}");
            assert!(e.message.contains("Lost connection to backend"), "{e:?}");
        }
        other => panic!("expected a 1158 error packet, got {other:?}"),
    }
    // Same session, next statement: a fresh backend connection.
    let v: Option<i64> = victim.query_first("SELECT 5").await.unwrap();
    assert_eq!(v, Some(5));
    let v: Option<i64> = other.query_first("SELECT 6").await.unwrap();
    assert_eq!(v, Some(6));

    // Inside a transaction the session refuses work until ROLLBACK.
    victim
        .query_drop("CREATE TABLE test.tx (id INT PRIMARY KEY)")
        .await
        .unwrap();
    victim.query_drop("BEGIN").await.unwrap();
    victim
        .query_drop("INSERT INTO test.tx VALUES (1)")
        .await
        .unwrap();
    kill_app_connections(&db, "AND COMMAND = 'Sleep'").await;
    let e = victim
        .query_drop("INSERT INTO test.tx VALUES (2)")
        .await
        .unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1158),
        "{e:?}"
    );
    let e = victim.query_drop("SELECT 1").await.unwrap_err();
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!(s.state, "08007");
            assert!(s.message.contains("ROLLBACK"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    victim.query_drop("ROLLBACK").await.unwrap();
    let n: Option<i64> = victim
        .query_first("SELECT COUNT(*) FROM test.tx")
        .await
        .unwrap();
    assert_eq!(n, Some(0), "nothing of the lost transaction was committed");

    // The whole backend process dies and comes back. A session holding a
    // connection to it (pool mode "session") loses it; one holding none
    // between transactions (the default) waits for a primary and is told
    // its statement was not run.
    db.kill();
    let e = victim.query_drop("SELECT 1").await.unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1158 || s.code == 1429 || s.code == 1290),
        "{e:?}"
    );
    db.restart().await;
    let v: Option<i64> = victim.query_first("SELECT 8").await.unwrap();
    assert_eq!(v, Some(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_result_through_a_slow_client_keeps_memory_bounded() {
    let (_db, node) = setup("").await;
    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    // Warm up: a connection and a small result.
    c.command(b"\x03SELECT 1", Expect::ResultSets).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = node.rss_kib();
    let pid = node.pid().unwrap();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let peak2 = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0);
            peak2.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut seq = 0;
    c.s.send(
        &mut seq,
        b"\x03SELECT REPEAT('x', 1048576) FROM seq_1_to_1024",
    )
    .await
    .unwrap();
    // Read slowly: small reads with pauses, so concord must hold back.
    let mut total = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let mut tail = Vec::new();
    let started = Instant::now();
    loop {
        let n = c.s.io.read(&mut buf).await.unwrap();
        assert!(n > 0, "concord closed the connection");
        total += n as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
        if total > (1 << 30) && tail.ends_with(&[0x22, 0x00]) || total > (1 << 30) + (1 << 20) {
            break;
        }
        if total % (8 << 20) < n as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let elapsed = started.elapsed();
    sampler.abort();
    let peak = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(node.rss_kib());
    assert!(total >= 1 << 30, "got {total} bytes");
    let grew = peak.saturating_sub(base);
    println!("1 GiB relayed in {elapsed:?}; RSS {base} KiB -> {peak} KiB (+{grew} KiB)");
    assert!(
        grew < 8 * 1024,
        "concord RSS grew by {grew} KiB relaying 1 GiB"
    );
}

/// A session pinned to its primary connection (here by a temporary table
/// that shadows a real one) whose connection dies does not run its next
/// statement on a fresh connection without the pin: it gets 1158 and
/// the real table keeps its rows, as a direct client whose connection
/// died would. Test-only `run-on-without-lost-state`: the DELETE runs on
/// the real table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_session_that_lost_its_connection_runs_nothing_without_it() {
    for (hooks, want_error) in [("", true), ("run-on-without-lost-state", false)] {
        let db = MariaDb::start("primary", 1).await;
        db.exec("CREATE TABLE test.t (id INT); INSERT INTO test.t VALUES (1), (2)")
            .await;
        let mut cfg = ConcordConfig::single(&db.addr());
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        let mut c = node.conn().await;
        c.query_drop("CREATE TEMPORARY TABLE test.t (id INT)")
            .await
            .unwrap();
        kill_app_connections(&db, "AND COMMAND = 'Sleep'").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = c.query_drop("DELETE FROM test.t").await;
        let rows: Vec<i64> = db.query("SELECT id FROM test.t").await;
        if want_error {
            assert!(
                matches!(r, Err(mysql_async::Error::Server(ref s)) if s.code == 1158),
                "{r:?}"
            );
            assert_eq!(rows, [1, 2], "the real table lost rows");
        } else {
            assert!(r.is_ok(), "{r:?}");
            assert!(rows.is_empty(), "{rows:?}");
        }
    }
}

/// The errors concord makes up itself carry server-range codes: a client
/// on Connector/C (the `mariadb` CLI here; also PHP's mysqli on libmariadb,
/// Python's mysqlclient, Perl, Ruby) rejects a 2xxx code from a server as
/// a malformed packet and loses the message. Here the server ends an idle
/// transaction (`idle_transaction_timeout`, from MariaDB's
/// `main.transaction_timeout`); the CLI must see why. Test-only
/// `client-range-error-codes`: the 2013 sent before, "Received malformed
/// packet".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libmariadb_client_reads_the_errors_concord_makes_up() {
    for (hooks, intact) in [("client-range-error-codes", false), ("", true)] {
        let db = MariaDb::start("primary", 1).await;
        let mut cfg = ConcordConfig::single(&db.addr());
        cfg.test_hooks = hooks.into();
        let node = Concord::start(cfg).await;
        let port = node.cfg.port;
        let out = tokio::task::spawn_blocking(move || {
            harness::cli::mariadb(
                port,
                "app",
                PASSWORD,
                &[],
                "SET autocommit = 0; SET idle_transaction_timeout = 1; BEGIN; SELECT 1; system sleep 2; SELECT 2",
            )
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        println!("hooks {hooks:?}: {err}");
        assert!(!out.status.success(), "{hooks}: the statement fails");
        assert_eq!(
            err.contains("ERROR 1158 (08007)") && err.contains("Issue ROLLBACK"),
            intact,
            "{hooks}: {err}"
        );
        assert_eq!(err.contains("malformed packet"), !intact, "{hooks}: {err}");
    }
}
