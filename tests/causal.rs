//! Causal reads across connections and nodes: a token taken after a write
//! through one node makes a read through another node see that write, on
//! a replica whose SQL thread is stopped (so without the token the same
//! read misses it); the token survives a switchover, and a token naming a
//! transaction the primary does not have is refused. In fleet mode no
//! token is needed.

use concord_protocol::consts::{cap, com};
use concord_protocol::ok::{OkPacket, StateChange};
use concord_protocol::scan::Expect;
use harness::{Fleet, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::time::Duration;

/// A primary and one replica, two concord nodes; the lag bound is wide so
/// a replica whose SQL thread stopped stays readable (stale, not lagging
/// past the bound).
async fn setup() -> (Topology, Fleet) {
    setup_with("").await
}

/// [`setup`] with extra `[routing]` keys.
async fn setup_with(routing: &str) -> (Topology, Fleet) {
    setup_hooked(routing, "").await
}

/// [`setup_with`] and test-only switches (`config/src/testhooks.rs`).
async fn setup_hooked(routing: &str, hooks: &str) -> (Topology, Fleet) {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.c (id INT PRIMARY KEY)")
        .await;
    topo.wait_replicated().await;
    let fleet = Fleet::start(2, topo.backends(), |_, c| {
        c.test_hooks = hooks.to_string();
        c.extra.push_str(&format!(
            "[routing]\nmax_replica_lag = \"1h\"\n{routing}[failover]\nreplication_user = \"repl\"\nreplication_password = \"{PASSWORD}\"\n"
        ));
    })
    .await;
    for n in &fleet.nodes {
        n.wait_readable(&["db2"]).await;
    }
    (topo, fleet)
}

/// `SELECT @@concord_token` after a write.
async fn token_of(c: &mut mysql_async::Conn) -> String {
    c.query_first::<Option<String>, _>("SELECT @@concord_token")
        .await
        .unwrap()
        .flatten()
        .expect("a token after a write")
}

async fn count(c: &mut mysql_async::Conn, prefix: &str) -> i64 {
    c.query_first::<i64, _>(format!("{prefix}SELECT COUNT(*) FROM test.c"))
        .await
        .unwrap()
        .unwrap()
}

/// With `routing.fallback = "error"` no read falls to the primary: one
/// that must see a causal token or the session's own write, and that no
/// replica in bound has applied within the wait, is refused with an error
/// that says so (`causal-reads-ignore-fallback`: read on the primary).
/// Plain reads still go to the (stale) replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fallback_error_a_read_no_replica_has_caught_up_for_is_refused() {
    for hooks in ["causal-reads-ignore-fallback", ""] {
        let (topo, fleet) = setup_hooked("fallback = \"error\"\n", hooks).await;
        topo.replicas[0].exec("STOP SLAVE SQL_THREAD").await;
        let mut w = fleet.nodes[0].conn().await;
        w.query_drop("INSERT INTO test.c VALUES (1)").await.unwrap();
        let token = token_of(&mut w).await;
        let own = w.query_first::<i64, _>("SELECT COUNT(*) FROM test.c").await;
        let mut r = fleet.nodes[1].conn().await;
        assert_eq!(
            count(&mut r, "").await,
            0,
            "a plain read: the stale replica"
        );
        let causal = r
            .query_first::<i64, _>(format!(
                "/* concord:after={token} */ SELECT COUNT(*) FROM test.c"
            ))
            .await;
        println!("hooks {hooks:?}: own read {own:?}, causal read {causal:?}");
        if hooks.is_empty() {
            for (what, res) in [("own write", own), ("causal token", causal)] {
                let e = res.expect_err(what);
                assert!(
                    matches!(&e, mysql_async::Error::Server(s)
                        if s.message.contains("routing.fallback") && s.message.contains("not run")),
                    "{what}: {e:?}"
                );
            }
        } else {
            assert_eq!(own.unwrap(), Some(1), "read on the primary");
            assert_eq!(causal.unwrap(), Some(1), "read on the primary");
        }
        topo.replicas[0].exec("START SLAVE SQL_THREAD").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_node_makes_a_read_through_another_see_the_write() {
    // A stopped SQL thread is unbounded lag from the next probe on: probes
    // 5 s apart leave the reads below on the stale replica (at the default
    // 500 ms the test raced the monitor and failed 2 runs in 3).
    let (topo, fleet) = setup_with("[monitor]\ninterval = \"5s\"\nrecover_after = 1\n").await;
    topo.replicas[0].exec("STOP SLAVE SQL_THREAD").await;
    let mut w = fleet.nodes[0].conn().await;
    let none: Option<Option<String>> = w.query_first("SELECT @@concord_token").await.unwrap();
    assert_eq!(none, Some(None), "no write yet: NULL");
    w.query_drop("INSERT INTO test.c VALUES (1)").await.unwrap();
    let token = token_of(&mut w).await;
    println!("token {token}");
    // Another connection, another node.
    let mut r = fleet.nodes[1].conn().await;
    assert_eq!(
        count(&mut r, "").await,
        0,
        "without the token the read goes to the stale replica and misses the write"
    );
    assert_eq!(
        count(&mut r, &format!("/* concord:after={token} */ ")).await,
        1,
        "with the token in a hint the read sees the write"
    );
    r.query_drop(format!("SET @@concord_after = '{token}'"))
        .await
        .unwrap();
    let after: Option<String> = r.query_first("SELECT @@concord_after").await.unwrap();
    assert_eq!(after.as_deref(), Some(token.as_str()));
    assert_eq!(count(&mut r, "").await, 1, "with the session's token");
    r.query_drop("SET @@concord_after = NULL").await.unwrap();
    assert_eq!(count(&mut r, "").await, 0, "token cleared: stale again");
    // The README's PyMySQL example, as written there, against these nodes.
    let script = format!(
        r#"
import pymysql
w = pymysql.connect(host="127.0.0.1", port={p1}, user="app", password="{PASSWORD}", autocommit=True)
with w.cursor() as c:
    c.execute("INSERT INTO test.c (id) VALUES (42)")
    c.execute("SELECT @@concord_token")
    token = c.fetchone()[0]
r = pymysql.connect(host="127.0.0.1", port={p2}, user="app", password="{PASSWORD}", autocommit=True)
with r.cursor() as c:
    c.execute(f"/* concord:after={{token}} */ SELECT COUNT(*) FROM test.c WHERE id = 42")
    hinted = c.fetchone()[0]
    c.execute("SELECT COUNT(*) FROM test.c WHERE id = 42")
    plain = c.fetchone()[0]
    c.execute("SET @@concord_after = %s", (token,))
    c.execute("SELECT COUNT(*) FROM test.c WHERE id = 42")
    session = c.fetchone()[0]
print(hinted, plain, session)
"#,
        p1 = fleet.nodes[0].cfg.port,
        p2 = fleet.nodes[1].cfg.port,
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        text,
        "1 0 1",
        "hinted, plain and session reads through PyMySQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A client that negotiated CLIENT_SESSION_TRACK finds the token in the
    // write's OK packet, where MySQL's OWN_GTID tracking puts it: no
    // second round trip.
    let mut raw = harness::raw::RawClient::connect(
        fleet.nodes[0].cfg.port,
        "app",
        PASSWORD,
        cap::SESSION_TRACK,
    )
    .await;
    let mut q = vec![com::QUERY];
    q.extend_from_slice(b"INSERT INTO test.c VALUES (3)");
    let ok = raw.command(&q, Expect::Single).await;
    let ok = OkPacket::decode(&ok[0].payload, cap::SESSION_TRACK).expect("an OK packet");
    let tracked: Vec<Vec<u8>> = ok
        .state_changes()
        .unwrap()
        .into_iter()
        .filter_map(|c| match c {
            StateChange::Gtids(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(tracked.len(), 1, "one GTID entry in the OK: {ok:?}");
    let from_ok = String::from_utf8(tracked[0].clone()).unwrap();
    println!("token from the OK packet: {from_ok}");
    let hint = format!("/* concord:after={from_ok} */ ");
    assert_eq!(
        count(&mut r, "").await,
        0,
        "without a token the stale replica misses it"
    );
    assert_eq!(
        count(&mut r, &hint).await,
        3,
        "the OK packet's token covers its write"
    );
    // Once the replica applies the write, token reads are served there.
    topo.replicas[0].exec("START SLAVE SQL_THREAD").await;
    topo.wait_replicated().await;
    // Stopped replication counted as unbounded lag: readable again after
    // `monitor.recover_after` probes.
    fleet.nodes[1].wait_readable(&["db2"]).await;
    let hint = format!("/* concord:after={token} */ ");
    assert_eq!(
        count(&mut r, &hint).await,
        3,
        "the three writes (one by PyMySQL, one raw)"
    );
    let served: Option<u32> = r
        .query_first(format!("{hint}SELECT @@server_id"))
        .await
        .unwrap();
    assert_eq!(
        served,
        Some(topo.replicas[0].server_id),
        "a replica that has the token serves it"
    );
    let m = fleet.nodes[1].http_get("/metrics").await.unwrap().1;
    assert!(m.contains("concord_causal_reads_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_switchover_and_unknown_ones_are_refused() {
    let (topo, fleet) = setup().await;
    let mut w = fleet.nodes[0].conn().await;
    w.query_drop("INSERT INTO test.c VALUES (1)").await.unwrap();
    let token = token_of(&mut w).await;
    drop(w);
    fleet.nodes[1]
        .admin_query("SWITCHOVER TO 'db2'")
        .await
        .unwrap();
    // db1 is a replica of db2 now; stop it applying, so only the new
    // primary can answer a token read it has.
    harness::wait_for(
        "db1 to replicate from db2",
        Duration::from_secs(20),
        || async {
            let rows: Vec<mysql_async::Row> = topo.primary.query("SHOW SLAVE STATUS").await;
            (!rows.is_empty()).then_some(())
        },
    )
    .await;
    let mut r = fleet.nodes[1].conn().await;
    let hint = format!("/* concord:after={token} */ ");
    assert_eq!(
        count(&mut r, &hint).await,
        1,
        "the new primary has the old primary's write"
    );
    // A transaction no server ever had (or one a failover lost): refused.
    let e = r
        .query_drop("/* concord:after=0-1-999999 */ SELECT COUNT(*) FROM test.c")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("1231") && msg.contains("does not have"),
        "{msg}"
    );
    // Malformed tokens are refused before anything runs.
    let e = r
        .query_drop("/* concord:after=0-1-5';DROP */ SELECT 1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a causal token"), "{e}");
    let e = r
        .query_drop("SET @@concord_after = 'not a token'")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a causal token"), "{e}");
    let e = r
        .query_drop("SET @@concord_token = '0-1-1'")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1193"), "{e}");
    // The session still works.
    assert_eq!(count(&mut r, "").await, 1);
}

/// `read_your_writes = "fleet"`: no token, and a read through another
/// node still sees a write acknowledged before it (the same read misses
/// it in session mode: the first test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_reads_see_writes_acknowledged_through_other_nodes() {
    let (topo, fleet) = setup_with("read_your_writes = \"fleet\"\n").await;
    topo.replicas[0].exec("STOP SLAVE SQL_THREAD").await;
    let mut w = fleet.nodes[0].conn().await;
    let mut r = fleet.nodes[1].conn().await;
    for i in 1..=20 {
        w.query_drop(format!("INSERT INTO test.c VALUES ({i})"))
            .await
            .unwrap();
        assert_eq!(
            count(&mut r, "").await,
            i,
            "read {i} through the other node"
        );
    }
    // Replication resumes: the same reads are served by the replica again.
    topo.replicas[0].exec("START SLAVE SQL_THREAD").await;
    topo.wait_replicated().await;
    // Stopped replication counted as unbounded lag: readable again after
    // `monitor.recover_after` probes.
    fleet.nodes[1].wait_readable(&["db2"]).await;
    let served: Option<u32> = r.query_first("SELECT @@server_id").await.unwrap();
    assert_eq!(served, Some(topo.replicas[0].server_id));
    let m = fleet.nodes[1].http_get("/metrics").await.unwrap().1;
    assert!(m.contains("concord_read_wait_seconds"), "{m}");
}

/// A real loss: replication is cut, a write is acknowledged and its token
/// taken, then FAILOVER promotes a replica that never got it. A read with
/// that token is refused through any node, even though the new primary's
/// own writes (heartbeats) soon carry the GTID domain's sequence past the
/// token, which is all a replica's position (or MASTER_GTID_WAIT) compares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_a_failover_lost_is_refused_everywhere() {
    let extra = "[monitor]\ninterval = \"250ms\"\nheartbeat_interval = \"100ms\"\ntimeout = \"500ms\"\nfailure_threshold = 4\n[failover]\ncooldown = \"0s\"\n[routing]\nmax_replica_lag = \"1h\"\n";
    let rig = harness::rig::Rig::start_with(extra, "lease_timeout = \"500ms\"\n", &[], &[]).await;
    rig.repl_relay().cut();
    let mut w = rig.fleet.nodes[0].conn().await;
    w.query_drop("INSERT INTO test.w (writer, seq) VALUES (4242, 1)")
        .await
        .unwrap();
    let token = token_of(&mut w).await;
    drop(w);
    rig.fleet.nodes[0].admin_query("FAILOVER").await.unwrap();
    let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    rig.wait_replicas_readable().await;
    // Let the new primary's heartbeats pass the token's sequence number.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in &rig.fleet.nodes {
        let mut r = n.conn().await;
        let e = r
            .query_drop(format!(
                "/* concord:after={token} */ SELECT COUNT(*) FROM test.w WHERE writer = 4242"
            ))
            .await
            .expect_err("a lost token must be refused");
        assert!(e.to_string().contains("does not have"), "{e}");
        // Without the token the read runs (and does not find the write).
        let n: Option<i64> = r
            .query_first("SELECT COUNT(*) FROM test.w WHERE writer = 4242")
            .await
            .unwrap();
        assert_eq!(n, Some(0));
    }
    println!("token {token} refused on every node after '{new}' was promoted without it");
}
