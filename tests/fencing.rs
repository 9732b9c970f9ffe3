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
use harness::rig::{missing_on, Load, Rig};
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
    // (As shipped, the node kills the statement when its lease lapses:
    // `failover::a_write_blocked_on_the_old_primary_is_killed_when_the_lease_lapses`.
    // Here the kill is off, so that the statement commits late.)
    let (r, v) = late_answer("fence-without-kill").await;
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
    let (r, v) = late_answer("fence-without-kill,no-late-answer-check").await;
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

const FAST: &str = "[monitor]\ninterval = \"250ms\"\nheartbeat_interval = \"100ms\"\ntimeout = \"500ms\"\nfailure_threshold = 4\n";
const FAST_CLUSTER: &str = "lease_timeout = \"500ms\"\n";

/// Writes through every node; node 3 is cut off from the fleet but keeps
/// the primary (and the replicas keep replicating from it), nodes 1 and 2
/// lose the primary, and a failover is forced on them at once, while node
/// 3 still holds its lease. Returns the acknowledged writes missing on
/// the new primary, out of how many.
async fn forced_failover_beside_a_leased_node(hooks: &str) -> (usize, usize) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    let load = Load::start(&rig.fleet, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.force_failover_beside_node_3().await;
    let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(20)).await;
    // Node 3's lease is long gone by now; nothing it still sends is
    // acknowledged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (acked, _, _) = load.stop().await;
    let missing = missing_on(rig.server(&new), &acked).await;
    (missing, acked.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_waits_out_every_lease_before_it_freezes_the_replicas() {
    let (missing, acked) = forced_failover_beside_a_leased_node("").await;
    println!("as shipped: {missing} of {acked} acknowledged writes missing on the new primary");
    assert_eq!(missing, 0, "acknowledged writes lost");
    // Promoting at once, the replicas stop receiving while node 3 still
    // writes to the old primary under its lease: acknowledged, and lost.
    let (missing, acked) = forced_failover_beside_a_leased_node("no-fence-wait").await;
    println!(
        "without the wait: {missing} of {acked} acknowledged writes missing on the new primary"
    );
    assert!(missing > 0, "the scenario no longer needs the wait");
}

/// How many of the rig's servers accept writes (`read_only = 0`).
async fn writable(rig: &Rig) -> Vec<String> {
    let mut out = Vec::new();
    for (name, db) in [
        ("db1", &rig.primary),
        ("db2", &rig.replicas[0]),
        ("db3", &rig.replicas[1]),
    ] {
        let ro: Vec<i64> = db.query("SELECT @@global.read_only").await;
        if ro.first() == Some(&0) {
            out.push(name.to_string());
        }
    }
    out
}

/// A forced failover whose leader is frozen (SIGSTOP) while it waits after
/// the fence; the other two nodes elect a leader, which takes over and
/// promotes a replica;
/// then the old leader wakes up and carries on with its workflow. Returns
/// the servers that accept writes in the end, and the one the fleet routes
/// writes to.
async fn old_leader_wakes_up(hooks: &str) -> (Vec<String>, String) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    let leader = rig.fleet.leader(Duration::from_secs(10)).await;
    let admin_opts = {
        let n = &rig.fleet.nodes[leader];
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(n.cfg.admin_port)
            .user(Some("admin"))
            .pass(Some(PASSWORD))
            .prefer_socket(false)
    };
    // The third node cannot hear from the leader (nor answer it): the
    // leader waits out the leases after its fence, time enough to freeze
    // it in the middle of its workflow.
    let quiet = (leader + 2) % 3;
    rig.fleet.relays[quiet].block_from(&harness::fleet::raft_ip(leader));
    rig.fleet.relays[leader].block_from(&harness::fleet::raft_ip(quiet));
    let forced = tokio::spawn(async move {
        if let Ok(mut c) = mysql_async::Conn::new(admin_opts).await {
            let _ = c.query_drop("FAILOVER").await;
        }
    });
    let watcher = &rig.fleet.nodes[(leader + 1) % 3];
    harness::wait_for("the fence", Duration::from_secs(10), || async {
        let ev = watcher.admin_query("SHOW EVENTS LIMIT 50").await.ok()?;
        ev.iter()
            .any(|e| e["event"].as_deref() == Some("fence"))
            .then_some(())
    })
    .await;
    rig.fleet.nodes[leader].signal("STOP");
    // The others elect a leader, which resumes the failover and promotes.
    let new = harness::wait_for("a new primary", Duration::from_secs(30), || async {
        for (i, n) in rig.fleet.nodes.iter().enumerate() {
            if i == leader {
                continue;
            }
            if let Some((p, _)) = rig.primary_of(n).await {
                if p != "db1" {
                    return Some(p);
                }
            }
        }
        None
    })
    .await;
    println!("promoted '{new}' while the old leader was frozen");
    rig.fleet.nodes[leader].signal("CONT");
    // The old leader's workflow runs on (or stops) now.
    let _ = tokio::time::timeout(Duration::from_secs(15), forced).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if std::env::var_os("FENCING_DEBUG").is_some() {
        for l in rig.fleet.nodes[leader].logs().lines() {
            if l.contains("concord_health") || l.contains("failover") || l.contains("promot") {
                println!("old leader: {l}");
            }
        }
    }
    (writable(&rig).await, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_stops_its_failover_at_the_next_step() {
    let (w, routed) = old_leader_wakes_up("").await;
    println!("as shipped, writable servers: {w:?}, routed primary '{routed}'");
    assert_eq!(
        w,
        vec![routed],
        "the routed primary is the one writable server"
    );
    // Without the ownership checks (each step's, the state machine's
    // owner rule, and a resumed failover's stop when a primary is named)
    // the record of the server being promoted still stops it: that commit
    // is refused under a newer epoch with a primary named.
    let (w, routed) = old_leader_wakes_up("no-workflow-owner").await;
    println!("without the ownership check, writable servers: {w:?}, routed primary '{routed}'");
    assert_eq!(w, vec![routed], "the promotion record alone stops it");
    // Without both, the old leader, awake again, finds the promoted server
    // no longer a replica: it promotes another one and makes the routed
    // primary a read-only replica of it.
    let (w, routed) = old_leader_wakes_up("no-workflow-owner,promote-unrecorded").await;
    println!("without the ownership check or the record, writable servers: {w:?}, routed primary '{routed}'");
    assert_ne!(w, vec![routed], "the scenario no longer needs the checks");
}

/// Three nodes in front of a primary and a replica, every node reaching
/// both through its own relays; then every relay is cut: concord sees no
/// database at all, while the databases are fine. Returns the fences the
/// fleet committed in the next seconds.
async fn blind_fleet(hooks: &str) -> usize {
    let primary = MariaDb::start_with("primary", 1, &["--slave-net-timeout=2"]).await;
    let replica = MariaDb::start_with("replica1", 2, &["--slave-net-timeout=2"]).await;
    replica.replicate_from(&primary.addr()).await;
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push((
            harness::Relay::start(&primary.addr()).await,
            harness::Relay::start(&replica.addr()).await,
        ));
    }
    let addrs: Vec<(String, String)> = relays.iter().map(|(p, r)| (p.addr(), r.addr())).collect();
    let backends = vec![
        (
            "db1".to_string(),
            primary.addr(),
            Some("primary".to_string()),
        ),
        (
            "db2".to_string(),
            replica.addr(),
            Some("replica".to_string()),
        ),
    ];
    let fleet = Fleet::start(3, backends, |i, c| {
        c.connect_addrs.push(("db1".into(), addrs[i].0.clone()));
        c.connect_addrs.push(("db2".into(), addrs[i].1.clone()));
        c.test_hooks = hooks.into();
        c.extra.push_str(FAST);
        c.cluster_extra.push_str(FAST_CLUSTER);
    })
    .await;
    fleet.nodes[0].wait_readable(&["db2"]).await;
    for (p, r) in &relays {
        p.cut();
        r.cut();
    }
    // Far longer than a verdict takes (4 failed probes of 250 ms, two
    // evaluations).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ev = fleet.nodes[0]
        .admin_query("SHOW EVENTS LIMIT 200")
        .await
        .unwrap();
    ev.iter()
        .filter(|e| e["event"].as_deref() == Some("fence"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_sees_no_database_fences_nothing() {
    let fences = blind_fleet("").await;
    println!("as shipped: {fences} fences while concord saw no database");
    assert_eq!(
        fences, 0,
        "a healthy primary was fenced on missing evidence"
    );
    // Counting a replica nobody can see as "not receiving", the fleet
    // fences the healthy primary.
    let fences = blind_fleet("verdict-without-evidence").await;
    println!("without positive evidence: {fences} fences");
    assert!(fences > 0, "the scenario no longer needs positive evidence");
}

/// Waits until the leased nodes installed the self-fence event on `db`.
async fn self_fence_armed(db: &MariaDb) {
    harness::wait_for("the self-fence event", Duration::from_secs(10), || async {
        let n: Vec<i64> = db
            .query("SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_NAME = 'self_fence' AND STATUS = 'ENABLED'")
            .await;
        (n.first() == Some(&1)).then_some(())
    })
    .await;
}

/// A client that bypasses concord and writes straight to the primary (a
/// stale connection string, a cron job) while the primary is cut off from
/// every concord node, under `failover.self_fence` (5 s: longer than this
/// rig takes to promote, so only the failover's wait orders the two). Returns the direct
/// writes the old primary committed at or after the promotion, and
/// whether it ended read-only. With `lock`, the client holds
/// `LOCK TABLES ... WRITE` while it writes (a batch job), which
/// `SET GLOBAL read_only = 1` waits for.
async fn bypassing_writer(hooks: &str, lock: bool) -> (i64, bool) {
    let extra = format!(
        "{FAST}[failover]\ncooldown = \"0s\"\nself_fence = true\nself_fence_after = \"5s\"\n"
    );
    let rig = Rig::start_hosts(&extra, FAST_CLUSTER, &[], &[], hooks).await;
    // Armed: the leased nodes installed the event with their first heartbeat.
    self_fence_armed(&rig.primary).await;
    rig.primary
        .exec(&format!(
            "CREATE USER 'direct'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT SELECT, INSERT, LOCK TABLES ON test.* TO 'direct'@'%'"
        ))
        .await;
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(rig.primary.ip.clone())
        .tcp_port(rig.primary.port)
        .user(Some("direct"))
        .pass(Some(PASSWORD))
        .prefer_socket(false)
        .into();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let writer = tokio::spawn(async move {
        let mut c = mysql_async::Conn::new(opts).await.unwrap();
        if lock {
            c.query_drop("LOCK TABLES test.w WRITE").await.unwrap();
        }
        let mut seq = 0u32;
        let mut refused = 0u32;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            seq += 1;
            if c.exec_drop("INSERT INTO test.w (writer, seq) VALUES (99999, ?)", (seq,))
                .await
                .is_err()
            {
                // read_only refuses it (1290); keep the connection.
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // (The lock, if the connection still holds it, ends here.)
        let _ = c.disconnect().await;
        refused
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every concord node (and replica) loses the primary; the test
    // process, like the bypassing client, still reaches it.
    rig.black_hole_primary();
    let (new, _, took) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = writer.await.unwrap();
    let events = rig.fleet.nodes[0]
        .admin_query("SHOW EVENTS LIMIT 1000")
        .await
        .unwrap();
    let promoted_ms: u64 = events
        .iter()
        .rev()
        .find(|e| e["event"].as_deref() == Some("promote"))
        .and_then(|e| e["at_ms"].as_deref()?.parse().ok())
        .expect("a promote event");
    let late: Vec<i64> = rig
        .primary
        .query(&format!(
            "SELECT COUNT(*) FROM test.w WHERE writer = 99999 AND ts >= FROM_UNIXTIME({promoted_ms} / 1000)"
        ))
        .await;
    let ro: Vec<i64> = rig.primary.query("SELECT @@global.read_only").await;
    println!(
        "hooks '{hooks}', lock {lock}: '{new}' promoted {took:?} after the cut; direct writes committed on db1 at or after the promotion: {:?}; refused: {refused}; db1 read_only: {:?}",
        late.first(),
        ro.first()
    );
    (late.first().copied().unwrap_or(-1), ro.first() == Some(&1))
}

/// With `failover.self_fence`, a primary cut off from every concord node
/// makes itself read-only before a replica is promoted, so even a client
/// that bypasses concord cannot write to two primaries. Without the
/// failover's wait for it (test-only switch), the promotion comes first
/// and the bypassing client's writes land on the old primary after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_fencing_primary_is_read_only_before_the_promotion() {
    let (late, read_only) = bypassing_writer("", false).await;
    assert_eq!(
        late, 0,
        "direct writes committed on the old primary after the promotion"
    );
    assert!(read_only, "the old primary did not fence itself");
    let (late, _) = bypassing_writer("no-self-fence-wait", false).await;
    assert!(
        late > 0,
        "without the wait the promotion should precede the self-fence"
    );
}

/// The same with the bypassing client holding a write lock: the event
/// kills it once read_only has waited a second for it. Without that
/// (test-only `fence-waits-for-locks`), read_only waits for the lock and
/// the client writes on after the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_fencing_primary_kills_a_direct_client_holding_a_write_lock() {
    // (Its read_only takes effect when the client lets go at the end.)
    let (late, _) = bypassing_writer("fence-waits-for-locks", true).await;
    assert!(
        late > 0,
        "with the lock wait unbounded the lock holder writes on after the promotion"
    );
    let (late, read_only) = bypassing_writer("", true).await;
    assert_eq!(
        late, 0,
        "direct writes committed on the old primary after the promotion"
    );
    assert!(read_only, "the old primary did not fence itself");
}

/// Every concord node frozen longer than `self_fence_after`: the primary
/// fences itself (no heartbeats) and stays fenced when the nodes come
/// back (the switch fails closed: a lift that arrived late could reopen a
/// replaced primary), each node says so (`concord_self_fenced`), no
/// failover starts, and a DBA's `SET GLOBAL read_only = 0` brings writes
/// back. Nothing the switch did is in the binlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_fenced_primary_stays_fenced_until_a_dba_lifts_it() {
    let extra = format!(
        "{FAST}[failover]\nautomatic = false\nself_fence = true\nself_fence_after = \"2s\"\n"
    );
    let rig = Rig::start_full(&extra, FAST_CLUSTER, &[], &[], "").await;
    let read_only = || async {
        rig.primary
            .query::<i64>("SELECT @@global.read_only")
            .await
            .first()
            .copied()
    };
    self_fence_armed(&rig.primary).await;
    assert_eq!(read_only().await, Some(0));
    for n in &rig.fleet.nodes {
        n.signal("STOP");
    }
    let t = std::time::Instant::now();
    harness::wait_for(
        "the primary to fence itself",
        Duration::from_secs(10),
        || async { (read_only().await == Some(1)).then_some(()) },
    )
    .await;
    println!("self-fenced {:?} after the fleet froze", t.elapsed());
    for n in &rig.fleet.nodes {
        n.signal("CONT");
    }
    harness::wait_for(
        "a node to report the self-fence",
        Duration::from_secs(10),
        || async {
            let m = rig.fleet.nodes[0].http_get("/metrics").await?.1;
            m.lines()
                .any(|l| l.starts_with("concord_self_fenced{") && l.ends_with(" 1"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        read_only().await,
        Some(1),
        "stays fenced with the fleet back"
    );
    assert_eq!(rig.fences().await, 0, "no failover");
    // The switch wrote nothing to the binlog: no GTID of the primary's own
    // beyond the heartbeats concord's nodes wrote (checked: the event's
    // table is not on the replicas).
    let on_replica: Vec<i64> = rig.replicas[0]
        .query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'concord' AND TABLE_NAME = 'self_fence'")
        .await;
    assert_eq!(
        on_replica.first(),
        Some(&0),
        "the switch's table reached a replica"
    );
    // A DBA lifts it; writes through concord flow again.
    rig.primary.exec("SET GLOBAL read_only = 0").await;
    let mut c = rig.fleet.nodes[0].conn().await;
    c.query_drop("INSERT INTO test.w (writer, seq) VALUES (88888, 1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(read_only().await, Some(0), "heartbeats keep it open");
}

/// A node removed from the fleet just before a failover may still hold a
/// lease from a confirmation that started before its removal, and is no
/// longer asked to confirm the fence: the leader counts it as a node that
/// did not confirm and waits out the lease. Test-only
/// `forget-removed-nodes`: the leader promotes as soon as the remaining
/// members confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_just_before_a_failover_is_waited_out() {
    for (hooks, waited) in [("", true), ("forget-removed-nodes", false)] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        rig.fleet.nodes[0]
            .admin_query("REMOVE NODE 3")
            .await
            .unwrap();
        rig.fleet.nodes[0].admin_query("FAILOVER").await.unwrap();
        let events = rig.fleet.nodes[0]
            .admin_query("SHOW EVENTS LIMIT 100")
            .await
            .unwrap();
        let text: Vec<String> = events
            .iter()
            .filter_map(|e| e.values().flatten().cloned().reduce(|a, b| a + " " + &b))
            .collect();
        let missed = text.iter().any(|t| t.contains("did not confirm the fence"));
        println!("hooks {hooks:?}: {text:#?}");
        assert_eq!(missed, waited, "hooks {hooks:?}");
    }
}

/// What README.md says the monitor account needs (without
/// `failover.self_fence`), in place of the harness's `ALL`. Without
/// `PROCESS` the fence sees no other account's session: the lock holder
/// was not killed and db1 stayed writable beside the promoted db3.
const DOCUMENTED_MONITOR_GRANTS: &str = "REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'monitor'@'%'; \
    GRANT REPLICATION CLIENT, SLAVE MONITOR, REPLICATION SLAVE ADMIN, RELOAD, READ_ONLY ADMIN, CONNECTION ADMIN, PROCESS ON *.* TO 'monitor'@'%'; \
    GRANT CREATE, INSERT, UPDATE, SELECT ON concord.* TO 'monitor'@'%'";

/// A client connected to the primary directly (a batch job, a DBA's
/// session) holds `LOCK TABLES ... WRITE` when a failover fences it.
/// `SET GLOBAL read_only = 1` waits for that lock up to
/// `lock_wait_timeout`, a day by default: the failover, and every write
/// it holds, would wait as long. Returns whether a new primary was
/// promoted within 30 s, and whether the old one is read-only then with
/// the lock holder's connection gone.
async fn failover_past_a_lock(hooks: &str) -> (bool, bool) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    // The monitor account with exactly the privileges the README lists
    // (new connections get them: the fence's, the promotion's).
    rig.server("db1").exec(DOCUMENTED_MONITOR_GRANTS).await;
    for db in ["db2", "db3"] {
        harness::wait_for("the grants replicated", Duration::from_secs(20), || async {
            let g: Vec<String> = rig.server(db).query("SHOW GRANTS FOR 'monitor'@'%'").await;
            let g = g.join("; ");
            (g.contains("PROCESS") && !g.contains("ALL PRIVILEGES")).then_some(())
        })
        .await;
    }
    let mut holder = harness::rig::hold_write_lock(rig.server("db1")).await;
    let admin = &rig.fleet.nodes[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = tokio::time::timeout(Duration::from_secs(30), admin.admin_query("FAILOVER")).await;
    println!("hooks {hooks:?}: FAILOVER answered {answer:?}");
    let mut promoted = false;
    while std::time::Instant::now() < deadline && !promoted {
        promoted = rig.primary_of(admin).await.is_some_and(|(p, _)| p != "db1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ro: Vec<i64> = rig.server("db1").query("SELECT @@global.read_only").await;
    let holder_gone = holder.query_drop("SELECT 1").await.is_err();
    println!(
        "hooks {hooks:?}: promoted within 30 s: {promoted}; db1 read_only {ro:?}; lock holder disconnected: {holder_gone}"
    );
    (promoted, ro == [1] && holder_gone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_on_the_old_primary_does_not_hold_the_failover() {
    assert_eq!(
        failover_past_a_lock("fence-waits-for-locks").await,
        (false, false),
        "with the lock wait unbounded the fence waits on the lock"
    );
    assert_eq!(failover_past_a_lock("").await, (true, true));
}

/// A fenced former primary is made writable again by hand while the
/// monitor account cannot log in there (locked by a DBA, a password being
/// rotated; the probes' open connections go on): the leader's first
/// attempt to fence it again fails. Returns whether it is read-only again
/// within 15 s of the account being unlocked.
async fn refenced_after_a_failed_try(hooks: &str) -> bool {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    let admin = &rig.fleet.nodes[0];
    let r = admin.admin_query("FAILOVER").await;
    assert!(r.is_ok(), "{hooks}: {r:?}");
    rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    let db1 = rig.server("db1");
    harness::wait_for("db1 read-only", Duration::from_secs(20), || async {
        let ro: Vec<i64> = db1.query("SELECT @@global.read_only").await;
        (ro == [1]).then_some(())
    })
    .await;
    // The fence killed every connection, the probes' too: each node's
    // probe must be connected again before the slots are taken, or the
    // leader sees db1 unreachable and does not try at all.
    harness::wait_for(
        "the probes connected to db1 again",
        Duration::from_secs(20),
        || async {
            let n: Vec<i64> = db1
                .query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'monitor'")
                .await;
            (n.first().copied().unwrap_or(0) >= 3).then_some(())
        },
    )
    .await;
    let mut dba = db1.conn().await;
    // (Out of the binlog: db1 keeps nothing the new primary lacks.)
    dba.query_drop("SET SESSION sql_log_bin = 0").await.unwrap();
    dba.query_drop("ALTER USER 'monitor'@'%' ACCOUNT LOCK")
        .await
        .unwrap();
    // A failed try says so ("tried again"); count them from here (the
    // failover itself may have written a note like it).
    let failed_tries = || async {
        let ev = admin.admin_query("SHOW EVENTS LIMIT 100").await.ok()?;
        Some(
            ev.iter()
                .filter(|e| {
                    e["detail"].as_deref().is_some_and(|d| {
                        d.contains("fenced 'db1' came back writable") && d.contains("tried again")
                    })
                })
                .count(),
        )
    };
    let before = failed_tries().await.unwrap_or(0);
    dba.query_drop("SET GLOBAL read_only = 0").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while failed_tries().await.unwrap_or(0) <= before {
        if std::time::Instant::now() > deadline {
            let ev = admin.admin_query("SHOW EVENTS LIMIT 30").await;
            panic!("{hooks}: no failed try to fence db1 again in 20 s; events: {ev:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dba.query_drop("ALTER USER 'monitor'@'%' ACCOUNT UNLOCK")
        .await
        .unwrap();
    let _ = dba.disconnect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ro: Vec<i64> = db1.query("SELECT @@global.read_only").await;
        if ro == [1] {
            println!("hooks {hooks:?}: db1 read-only again");
            return true;
        }
        if std::time::Instant::now() > deadline {
            println!("hooks {hooks:?}: db1 still writable 15 s after the account was unlocked");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_server_made_writable_is_fenced_again_after_a_failed_try() {
    assert!(!refenced_after_a_failed_try("refence-once").await);
    assert!(refenced_after_a_failed_try("").await);
}

/// A backup holds FLUSH TABLES WITH READ LOCK on the primary for three
/// times `self_fence_after` while every concord node reaches it: the
/// heartbeats arrive but wait for the lock, and so does the event
/// scheduler (MariaDB's waits for the backup lock too), so the event
/// does not run; at the unlock the heartbeats commit first. The primary
/// must not fence itself, the backup's session must survive, and no
/// failover may start: a backup is no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_lock_on_the_primary_does_not_make_it_fence_itself() {
    let extra = format!("{FAST}[failover]\nself_fence = true\nself_fence_after = \"2s\"\n");
    let rig = Rig::start_full(&extra, FAST_CLUSTER, &[], &[], "").await;
    self_fence_armed(&rig.primary).await;
    let mut backup = rig.primary.conn().await;
    backup
        .query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let survived = backup.query_drop("UNLOCK TABLES").await;
    // Past the unlock, where the event's next run and the heartbeats race.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ro: Vec<i64> = rig.primary.query("SELECT @@global.read_only").await;
    let (primary, _) = rig.primary_of(&rig.fleet.nodes[0]).await.unwrap();
    println!("read_only {ro:?}, unlock {survived:?}, primary {primary}");
    assert!(survived.is_ok(), "the backup's session was killed");
    assert_eq!(ro, vec![0], "the primary fenced itself");
    assert_eq!(primary, "db1", "a backup is no failure");
}
