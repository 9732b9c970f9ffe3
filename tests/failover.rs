//! Failover, switchover and proxy-layer fencing on a real MariaDB primary
//! with two GTID replicas and three concord nodes, relays on every link.
//! Each Altair scenario is a named test; the figures they print go into
//! bench/RESULTS.md.

use harness::rig::{
    binlog_after, fence_ms, missing_on, query_one, reset_to, timeline, write_gap, writes_after,
    Load, Rig, SEMI_SYNC_PRIMARY, SEMI_SYNC_REPLICA,
};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};

/// Faster detection for tests that are not about the defaults:
/// verdict in ~1 s, leases of 500 ms (below (4-1) x 250 ms).
const FAST: &str = "[monitor]\ninterval = \"250ms\"\nheartbeat_interval = \"100ms\"\ntimeout = \"500ms\"\nfailure_threshold = 4\n";
const FAST_CLUSTER: &str = "lease_timeout = \"500ms\"\n";

async fn fast_rig() -> Rig {
    Rig::start_with(FAST, FAST_CLUSTER, &[], &[]).await
}

/// A `SHOW GLOBAL STATUS` value ("" when the server has no such variable).
async fn status(db: &harness::MariaDb, var: &str) -> String {
    let mut c = db.conn().await;
    let row: Option<(String, String)> = c
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{var}'"))
        .await
        .unwrap();
    row.map(|r| r.1).unwrap_or_default()
}

async fn no_failover_for(rig: &Rig, d: Duration, what: &str) {
    let before = rig.fences().await;
    tokio::time::sleep(d).await;
    assert_eq!(rig.fences().await, before, "{what}: a failover happened");
    let (p, _) = rig.primary_of(&rig.fleet.nodes[0]).await.unwrap();
    assert_eq!(p, "db1", "{what}");
    println!("{what}: no failover in {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_process_killed_under_load_fails_over_with_defaults() {
    let mut rig = Rig::start("").await;
    let load = Load::start(&rig.fleet, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    rig.primary.kill();
    let (new, epoch, detected) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked, samples, errors) = load.stop().await;
    let gap = write_gap(&samples, killed_at - Duration::from_millis(200));
    let lost = missing_on(rig.server(&new), &acked).await;
    println!(
        "kill -9 primary (defaults): new primary {new} at epoch {epoch} agreed after {detected:?}; longest write gap {gap:?}; \
         {} client errors; {} acknowledged writes, {lost} lost (async replication)",
        errors.len(),
        acked.len()
    );
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for e in &errors {
        *kinds.entry(e.chars().take(90).collect()).or_default() += 1;
    }
    println!("client errors by kind: {kinds:#?}");
    let tl = timeline(
        &samples,
        killed_at - Duration::from_millis(500),
        Duration::from_secs(8),
    );
    println!("timeline (per 100 ms from kill-0.5s: ok/err): {tl:?}");
    assert!(epoch >= 2);
    assert!(
        gap < Duration::from_secs(10),
        "writes were unavailable for {gap:?}"
    );
    // Writes landed on the new primary after the failover.
    let after: i64 = query_one(rig.server(&new), "SELECT COUNT(*) FROM test.w").await;
    assert!(after > 0);
    // The old primary comes back: it stays fenced and is made read-only.
    rig.primary.restart().await;
    let fence = fence_ms(&rig).await;
    assert_eq!(
        writes_after(&rig.primary, fence).await,
        0,
        "split brain: writes on the old primary after the fence"
    );
    let late = binlog_after(&rig.primary, fence).await;
    assert!(
        late.is_empty(),
        "split brain in the old primary's binlog: {late:#?}"
    );
    harness::wait_for(
        "the returning old primary to be made read-only",
        Duration::from_secs(15),
        || async {
            let ro: i64 = query_one(&rig.primary, "SELECT @@read_only").await;
            (ro == 1).then_some(())
        },
    )
    .await;
    let rows = rig.fleet.nodes[1]
        .admin_query("SHOW BACKENDS")
        .await
        .unwrap();
    let db1 = rows
        .iter()
        .find(|r| r["name"].as_deref() == Some("db1"))
        .unwrap();
    assert_eq!(db1["state"].as_deref(), Some("fenced"));
    // REJOIN makes it a replica of the new primary, unless the kill cut
    // off a transaction it had already written (async replication):
    // then it diverged and REJOIN must say so.
    match rig.fleet.nodes[2].admin_query("REJOIN BACKEND 'db1'").await {
        Ok(_) => {
            harness::wait_for("db1 replicating", Duration::from_secs(15), || async {
                let rows = rig.fleet.nodes[0].admin_query("SHOW BACKENDS").await.ok()?;
                let db1 = rows.iter().find(|r| r["name"].as_deref() == Some("db1"))?;
                (db1["state"].as_deref() == Some("active")
                    && db1["readable"].as_deref() == Some("yes"))
                .then_some(())
            })
            .await;
        }
        Err(e) => {
            assert!(e.to_string().contains("diverged"), "{e}");
            println!("REJOIN refused, as it must: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_sync_loses_no_acknowledged_write() {
    let mut rig = Rig::start_with(FAST, FAST_CLUSTER, SEMI_SYNC_PRIMARY, SEMI_SYNC_REPLICA).await;
    let yes0: u64 = status(&rig.primary, "Rpl_semi_sync_master_yes_tx")
        .await
        .parse()
        .unwrap_or(0);
    let load = Load::start(&rig.fleet, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The writes really are semi-synchronous: otherwise this test would
    // prove nothing plain async does not already do on a quiet machine.
    assert_eq!(
        status(&rig.primary, "Rpl_semi_sync_master_status").await,
        "ON"
    );
    let clients: u64 = status(&rig.primary, "Rpl_semi_sync_master_clients")
        .await
        .parse()
        .unwrap_or(0);
    assert!(clients >= 1, "no semi-sync replica connected");
    let yes: u64 = status(&rig.primary, "Rpl_semi_sync_master_yes_tx")
        .await
        .parse()
        .unwrap_or(0);
    assert!(
        yes > yes0 + 100,
        "only {} semi-sync acknowledged commits",
        yes - yes0
    );
    rig.primary.kill();
    let (new, _, took) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, _, errors) = load.stop().await;
    let lost = missing_on(rig.server(&new), &acked).await;
    println!(
        "semi-sync kill -9: new primary {new} after {took:?}; {} acknowledged writes, {lost} lost, {} client errors",
        acked.len(),
        errors.len()
    );
    assert_eq!(lost, 0, "semi-sync must not lose an acknowledged write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dead_black_hole_fails_over() {
    let rig = fast_rig().await;
    let t = Instant::now();
    rig.black_hole_primary();
    let (new, epoch, took) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    println!("host dead (black hole): {new} promoted at epoch {epoch} after {took:?} (replica IO threads notice after slave_net_timeout=2s)");
    assert!(t.elapsed() < Duration::from_secs(30));
    let mut c = rig.fleet.nodes[0].conn().await;
    c.query_drop("INSERT INTO test.w (writer, seq) VALUES (999, 1)")
        .await
        .unwrap();
}

/// How long each false-positive scenario must stay without a failover:
/// twice the time a real failure takes to be declared with `FAST`.
const SETTLE: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_cut_from_the_primary_only_no_failover() {
    let rig = fast_rig().await;
    rig.repl_relay().cut();
    no_failover_for(&rig, SETTLE, "replicas cut from the primary only").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concord_nodes_cut_from_the_primary_replicas_replicating_no_failover() {
    let rig = fast_rig().await;
    for r in rig.node_relays() {
        r.cut();
    }
    no_failover_for(
        &rig,
        SETTLE,
        "all concord nodes cut from the primary, replicas replicating",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_concord_node_cut_from_the_primary_no_failover() {
    let rig = fast_rig().await;
    rig.node_relays()[0].cut();
    no_failover_for(&rig, SETTLE, "one concord node cut from the primary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concord_and_replicas_cut_from_the_primary_fails_over() {
    let rig = fast_rig().await;
    let t = Instant::now();
    rig.repl_relay().cut();
    for r in rig.node_relays() {
        r.cut();
    }
    let (new, _, took) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    println!("concord and replicas both cut from the primary: {new} promoted after {took:?} ({:?} since the cut)", t.elapsed());
    let ev = rig.fleet.nodes[0]
        .admin_query("SHOW EVENTS LIMIT 100")
        .await
        .unwrap();
    let fence = ev
        .iter()
        .find(|e| e["event"].as_deref() == Some("fence"))
        .unwrap();
    assert!(
        fence["detail"]
            .as_deref()
            .unwrap()
            .contains("replicas receiving from it: none"),
        "{fence:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_load_fails_no_autocommit_write() {
    let rig = fast_rig().await;
    let load = Load::start(&rig.fleet, 2);
    // A transaction left open on the old primary across the switchover.
    let mut open = rig.fleet.nodes[2].conn().await;
    open.query_drop("BEGIN").await.unwrap();
    open.query_drop("INSERT INTO test.w (writer, seq) VALUES (0, 1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    let out = rig.fleet.nodes[1].admin_query("SWITCHOVER TO 'db2'").await;
    let took = t.elapsed();
    assert!(out.is_ok(), "{out:?}");
    // It cannot be carried over: a clear error, then ROLLBACK, then the
    // session works on the new primary.
    let e = open
        .query_drop("INSERT INTO test.w (writer, seq) VALUES (0, 2)")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1158") && e.contains("transaction"), "{e}");
    let e = open.query_drop("COMMIT").await.unwrap_err().to_string();
    assert!(e.contains("nothing was committed"), "{e}");
    open.query_drop("INSERT INTO test.w (writer, seq) VALUES (0, 3)")
        .await
        .unwrap();
    let origin: Option<u32> = open
        .query_first("SELECT /* concord:primary */ origin FROM test.w WHERE writer = 0 AND seq = 3")
        .await
        .unwrap();
    assert_eq!(origin, Some(0), "origin defaults to 0: the row exists");
    let lost: Option<i64> = open
        .query_first(
            "SELECT /* concord:primary */ COUNT(*) FROM test.w WHERE writer = 0 AND seq = 1",
        )
        .await
        .unwrap();
    assert_eq!(
        lost,
        Some(0),
        "the open transaction's insert was rolled back"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked, samples, errors) = load.stop().await;
    let gap = write_gap(&samples, t - Duration::from_millis(100));
    println!(
        "switchover under load: admin command took {took:?}; longest write pause {gap:?}; {} acknowledged writes, {} client errors",
        acked.len(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "autocommit writes failed during a switchover: {errors:?}"
    );
    assert_eq!(rig.primary_of(&rig.fleet.nodes[0]).await.unwrap().0, "db2");
    assert_eq!(missing_on(&rig.replicas[0], &acked).await, 0);
    // The old primary became a replica of the new one.
    harness::wait_for(
        "db1 replicating from db2",
        Duration::from_secs(10),
        || async {
            let rows: Vec<mysql_async::Row> = rig.primary.query("SHOW SLAVE STATUS").await;
            let io: Option<String> = rows.first().and_then(|r| r.get("Slave_IO_Running"));
            (io.as_deref() == Some("Yes")).then_some(())
        },
    )
    .await;
    // A planned switchover lets statements already running on the old
    // primary finish (read_only waits for them) and hands their effects
    // over: everything the old primary committed must be on the new one.
    let on_old: Vec<(u32, u32)> = rig
        .primary
        .query("SELECT writer, seq FROM test.w WHERE origin = 1")
        .await;
    assert_eq!(
        missing_on(&rig.replicas[0], &on_old).await,
        0,
        "the old primary has writes the new one lacks"
    );
}

/// One node with one connection per backend: session A holds the
/// primary's connection in a transaction, so session B's INSERT queues for
/// it, placed under epoch 1. A switchover fences epoch 1 meanwhile; then,
/// if `a_moves`, A's next statement frees the connection. Returns what B
/// was told and the server B's row landed on (`origin`).
async fn placed_before_a_switchover(
    hooks: &str,
    a_moves: bool,
) -> (Result<(), String>, Option<u32>) {
    let extra = format!(
        "{FAST}[pool]\nmax_per_backend = 1\nmin_idle = 0\nacquire_timeout = \"8s\"\n[failover]\nwrite_buffer_timeout = \"20s\"\n"
    );
    let rig = Rig::start_full(&extra, FAST_CLUSTER, &[], &[], hooks).await;
    let node = &rig.fleet.nodes[0];
    let mut b = node.conn().await;
    let mut a = node.conn().await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO test.w (writer, seq) VALUES (1, 1)")
        .await
        .unwrap();
    let insert = tokio::spawn(async move {
        let r = b
            .query_drop("INSERT INTO test.w (writer, seq, origin) VALUES (2, 1, @@server_id)")
            .await
            .map_err(|e| e.to_string());
        (r, b)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!insert.is_finished(), "B waits for the pool's connection");
    let (_, epoch) = rig.primary_of(node).await.unwrap();
    let switch = rig.fleet.nodes[1].admin_query("SWITCHOVER TO 'db2'");
    let rest = async {
        harness::wait_for(
            "node 1 to apply the fence",
            Duration::from_secs(20),
            || async {
                let (_, e) = rig.primary_of(node).await?;
                (e > epoch).then_some(())
            },
        )
        .await;
        if a_moves {
            // A's next statement finds its transaction lost with the
            // fenced primary and frees the connection B waits for.
            let e = a.query_drop("SELECT 1").await;
            assert!(e.is_err(), "A's transaction cannot survive the switchover");
        }
        tokio::time::timeout(Duration::from_secs(40), insert)
            .await
            .expect("B is answered")
            .unwrap()
    };
    let (out, (r, _b)) = tokio::join!(switch, rest);
    assert!(out.is_ok(), "{out:?}");
    let origin: Vec<u32> = rig.replicas[0]
        .query("SELECT origin FROM test.w WHERE writer = 2")
        .await;
    // Nothing of B's was written on the old primary (db1, server id 1).
    let on_old: Vec<u32> = rig
        .primary
        .query("SELECT origin FROM test.w WHERE writer = 2 AND origin = 1")
        .await;
    assert!(
        on_old.is_empty(),
        "B's row was written on the fenced primary"
    );
    (r, origin.first().copied())
}

/// An autocommit write not sent yet is not failed by a switchover: it
/// leaves the old primary's pool queue when the fence applies, and, if it
/// got a connection to the old primary before it could be sent, leaves
/// that too; then it waits for the new primary like any held statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_placed_before_a_switchover_moves_to_the_new_primary() {
    for a_moves in [true, false] {
        let (r, origin) = placed_before_a_switchover("", a_moves).await;
        println!("as shipped (A moves: {a_moves}): {r:?}; B's row on server {origin:?}");
        assert_eq!(
            r,
            Ok(()),
            "an autocommit write not sent yet failed in a switchover"
        );
        assert_eq!(
            origin,
            Some(2),
            "B's row was written on the new primary (db2)"
        );
    }
    // B keeps queueing for the old primary and is handed a connection to
    // it: not sent yet, the statement leaves it for the new primary.
    let (r, origin) = placed_before_a_switchover("queue-through-fence", true).await;
    println!("queueing through the fence: {r:?}; B's row on server {origin:?}");
    assert_eq!(r, Ok(()), "handed the fenced primary's connection, B moves");
    assert_eq!(origin, Some(2));
    // ... and without moving, it may not send on it.
    let hooks = "queue-through-fence,stay-on-fenced-primary";
    let (r, origin) = placed_before_a_switchover(hooks, true).await;
    println!("queueing through the fence, staying on the fenced primary: {r:?}; B's row on server {origin:?}");
    let e = r.expect_err("refused");
    assert!(e.contains("1290") && e.contains("not executed"), "{e}");
    assert_eq!(origin, None);
    // ... and, when nobody frees it, waits until the pool gives up.
    let (r, origin) = placed_before_a_switchover("queue-through-fence", false).await;
    println!("queueing through the fence: {r:?}; B's row on server {origin:?}");
    let e = r.expect_err("the pool gives up");
    assert!(e.contains("1040"), "{e}");
    assert_eq!(origin, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_with_the_old_primary_never_writes_after_the_fence_20_times() {
    // 0 s cooldown: the loop fails over again and again on purpose.
    let rig = Rig::start_with(
        &format!("{FAST}[failover]\ncooldown = \"0s\"\n"),
        FAST_CLUSTER,
        &[],
        &[],
    )
    .await;
    let mut total_acked = 0;
    for round in 0..20 {
        // Back to db1 as primary for the next round.
        let (p, _) = rig.primary_of(&rig.fleet.nodes[0]).await.unwrap();
        assert_eq!(p, "db1", "round {round}");
        let load = Load::start(&rig.fleet, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Node 3 keeps the old primary, loses the quorum; nodes 1 and 2
        // and the replicas lose the old primary.
        rig.fleet.isolate(2);
        rig.node_relays()[0].cut();
        rig.node_relays()[1].cut();
        rig.repl_relay().cut();
        let t0 = Instant::now();
        let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(20)).await;
        let t_failover = t0.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (acked, _, _) = load.stop().await;
        total_acked += acked.len();
        let fence = fence_ms(&rig).await;
        let split = writes_after(&rig.primary, fence).await;
        assert_eq!(
            split, 0,
            "round {round}: {split} writes committed on the old primary after the fence"
        );
        let late = binlog_after(&rig.primary, fence).await;
        assert!(
            late.is_empty(),
            "round {round}: split brain in the old primary's binlog: {late:#?}"
        );
        // Heal, make db1 a replica again, switch back.
        rig.fleet.heal(2);
        rig.heal_all();
        // Writes the old primary took before the fence never reached the
        // replicas (async replication cut): discard them so db1 can rejoin.
        rig.primary.exec("SET GLOBAL read_only = 0").await;
        let newest = query_one::<String>(rig.server(&new), "SELECT @@gtid_current_pos").await;
        reset_to(&rig.primary, &newest).await;
        let t1 = Instant::now();
        // The heal may start an election: a workflow the old leader began
        // stops at its first step ("no longer the leader") and is retried.
        harness::wait_for(
            "REJOIN to run on a settled leader",
            Duration::from_secs(15),
            || async {
                match rig.fleet.nodes[0].admin_query("REJOIN BACKEND 'db1'").await {
                    Ok(_) => Some(()),
                    Err(e) if e.to_string().contains("no longer the leader") => None,
                    Err(e) => panic!("round {round}: REJOIN: {e}"),
                }
            },
        )
        .await;
        harness::wait_for("db1 caught up", Duration::from_secs(15), || async {
            let rows = rig.fleet.nodes[0].admin_query("SHOW BACKENDS").await.ok()?;
            let db1 = rows.iter().find(|r| r["name"].as_deref() == Some("db1"))?;
            (db1["readable"].as_deref() == Some("yes")).then_some(())
        })
        .await;
        let t2 = Instant::now();
        rig.fleet.nodes[0]
            .admin_query("SWITCHOVER TO 'db1'")
            .await
            .unwrap();
        let t3 = Instant::now();
        rig.wait_replicas_readable().await;
        println!("round {round}: failover {t_failover:?}, rejoin+catch-up {:?}, switchover {:?}, replicas readable {:?}", t2 - t1, t3 - t2, t3.elapsed());
    }
    println!("20 partition rounds: 0 writes on the old primary after any fence ({total_acked} acknowledged writes in all)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_quorum_keeps_serving_reads_from_replicas() {
    let rig = fast_rig().await;
    let node = &rig.fleet.nodes[2];
    let mut c = node.conn().await;
    rig.fleet.isolate(2);
    harness::wait_for("node 3 not ready", Duration::from_secs(10), || async {
        matches!(node.http_get("/readyz").await, Some((503, _))).then_some(())
    })
    .await;
    // Reads keep going to lag-bounded replicas, with no error.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let id: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
        seen.insert(id.unwrap_or(0));
    }
    assert!(
        !seen.is_empty() && seen.iter().all(|id| *id == 2 || *id == 3),
        "reads went to replicas only: {seen:?}"
    );
    // Writes are held (no lease), then refused with the reason.
    let t = Instant::now();
    let e = c
        .query_drop("INSERT INTO test.w (writer, seq) VALUES (0, 1)")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1290") && e.contains("quorum"), "{e}");
    println!(
        "cut-off node: reads from replicas {seen:?}; a write was held {:?} then refused",
        t.elapsed()
    );
    rig.fleet.heal(2);
    harness::wait_for("node 3 ready again", Duration::from_secs(15), || async {
        matches!(node.http_get("/readyz").await, Some((200, _))).then_some(())
    })
    .await;
    c.query_drop("INSERT INTO test.w (writer, seq) VALUES (0, 2)")
        .await
        .unwrap();
}

/// What `concord_held_write_release_seconds` shows over the fleet: (held
/// writes released, within 1 ms, within 10 ms, mean ms).
async fn held_releases(rig: &Rig) -> (f64, f64, f64, f64) {
    let (mut n, mut ms1, mut ms10, mut sum) = (0.0, 0.0, 0.0, 0.0);
    let name = "concord_held_write_release_seconds";
    for node in &rig.fleet.nodes {
        for (l, v) in node.metric_sum(&format!("{name}_bucket")).await {
            if l.contains("le=\"0.001\"") {
                ms1 += v;
            }
            if l.contains("le=\"0.01\"") {
                ms10 += v;
            }
        }
        n += node
            .metric_sum(&format!("{name}_count"))
            .await
            .iter()
            .map(|x| x.1)
            .sum::<f64>();
        sum += node
            .metric_sum(&format!("{name}_sum"))
            .await
            .iter()
            .map(|x| x.1)
            .sum::<f64>();
    }
    (n, ms1, ms10, if n > 0.0 { sum / n * 1000.0 } else { 0.0 })
}

/// Writes arriving while a switchover moves the primary are held, then
/// released by the routing change itself, not found by a poll: the delay
/// from the published change to each release. With the test-only switch
/// `held-writes-poll` they wait for the 250 ms recheck instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_are_released_by_the_routing_change_not_a_poll() {
    let mut seen = Vec::new();
    for hooks in ["", "held-writes-poll"] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        let load = Load::start(&rig.fleet, 4);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let out = rig.fleet.nodes[0].admin_query("SWITCHOVER TO 'db2'").await;
        assert!(out.is_ok(), "{out:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, _, errors) = load.stop().await;
        assert!(errors.is_empty(), "{hooks}: {errors:?}");
        let (n, ms1, ms10, mean) = held_releases(&rig).await;
        println!(
            "switchover{}: {n} held writes released, {ms1} within 1 ms, {ms10} within 10 ms, mean {mean:.3} ms",
            if hooks.is_empty() { "" } else { " (polling)" }
        );
        seen.push((n, ms10));
    }
    let (n, ms10) = seen[0];
    assert!(n >= 3.0, "too few writes were held to judge: {n}");
    assert_eq!(ms10, n, "a held write waited over 10 ms after the change");
    let (n, ms10) = seen[1];
    assert!(
        n >= 3.0 && ms10 < n,
        "with polling, releases must show the wait ({ms10} of {n} within 10 ms)"
    );
}

/// A statement the client is still sending when the fence lands never
/// runs on the old primary: concord passes a large statement (over
/// 64 KiB) on as it arrives, and the server runs it at its last byte, so
/// every chunk is checked against the route's lease. Node 3 keeps the old
/// primary and loses the quorum halfway through a 256 KiB INSERT; the
/// rest arrives after the new primary is promoted. Test-only
/// `stream-without-lease-check` (with `fence-without-kill`): the rest is
/// passed on and the row lands on the fenced primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_streamed_across_the_fence_never_runs_on_the_old_primary() {
    use tokio::io::AsyncWriteExt;
    // (Without the chunk check, the KILL of statements in flight when the
    // lease lapses stops it too: both are off for the negative case.)
    for (hooks, lands) in [
        ("", false),
        ("stream-without-lease-check,fence-without-kill", true),
    ] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        let node = &rig.fleet.nodes[2];
        let mut raw =
            harness::raw::RawClient::connect(node.cfg.port, "app", harness::PASSWORD, 0).await;
        let pad = "x".repeat(256 << 10);
        let mut payload = vec![concord_protocol::consts::com::QUERY];
        payload.extend_from_slice(
            format!(
                "INSERT INTO test.w (writer, seq, origin) VALUES (9, 1, @@server_id) /* {pad} */"
            )
            .as_bytes(),
        );
        let mut packet = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        packet.push(0);
        packet.extend_from_slice(&payload);
        let half = packet.len() / 2;
        raw.s.io.write_all(&packet[..half]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        rig.fleet.isolate(2);
        rig.node_relays()[0].cut();
        rig.node_relays()[1].cut();
        rig.repl_relay().cut();
        rig.wait_new_primary("db1", Duration::from_secs(20)).await;
        // (Closed already, with the protection: the write may fail.)
        let _ = raw.s.io.write_all(&packet[half..]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let on_old: Vec<u32> = rig
            .primary
            .query("SELECT origin FROM test.w WHERE writer = 9")
            .await;
        println!("hooks {hooks:?}: rows of the streamed INSERT on the old primary: {on_old:?}");
        assert_eq!(!on_old.is_empty(), lands, "hooks {hooks:?}");
    }
}

/// A write sent to the primary and blocked there (a row lock held by a
/// direct client) when its node is cut off from the fleet: the node's
/// lease lapses, a failover elsewhere promotes a replica (the old primary
/// unreachable from the leader, so not fenced by it), and then the lock
/// is released. The node KILLs the statement on the server when its lease
/// lapses, so it cannot commit on the old primary after the promotion
/// (the app account bypasses `read_only`, as privileged accounts do).
/// Test-only `fence-without-kill`: it commits there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_on_the_old_primary_is_killed_when_the_lease_lapses() {
    for (hooks, lands) in [("", false), ("fence-without-kill", true)] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        rig.primary
            .exec("CREATE TABLE test.k (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
            .await;
        rig.primary.exec("INSERT INTO test.k VALUES (1, 0)").await;
        let mut lock = rig.primary.conn().await;
        lock.query_drop("BEGIN").await.unwrap();
        lock.query_drop("SELECT v FROM test.k WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
        let mut c = rig.fleet.nodes[2].conn().await;
        let update = tokio::spawn(async move {
            c.query_drop("UPDATE test.k SET v = 1 WHERE id = 1")
                .await
                .map_err(|e| e.to_string())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!update.is_finished(), "the UPDATE waits for the row lock");
        rig.force_failover_beside_node_3().await;
        rig.wait_new_primary("db1", Duration::from_secs(20)).await;
        lock.query_drop("ROLLBACK").await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), update)
            .await
            .expect("the UPDATE is answered")
            .unwrap();
        let v: Vec<i64> = rig.primary.query("SELECT v FROM test.k WHERE id = 1").await;
        println!("hooks {hooks:?}: UPDATE got {r:?}; v on the old primary {v:?}");
        assert_eq!(
            v == [1],
            lands,
            "hooks {hooks:?}: the UPDATE committed on the old primary after the promotion"
        );
        assert!(r.is_err(), "hooks {hooks:?}: never acknowledged");
    }
}

/// An owner interrupted after promoting a replica and before committing
/// the promotion (test-only `interrupt-after-promote`, once): the leader
/// resumes the workflow and adopts that replica, which has a write the
/// other lacks; with `resume-ignores-promoted` it promotes the other one
/// and the write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_failover_adopts_the_replica_an_interrupted_attempt_promoted() {
    // db2 stops receiving before the last write, so only db3 has it: the
    // first attempt promotes db3 and stops there. Promoting db2 on resume
    // (as before adoption) would drop that write and fence db3.
    for (hooks, adopted) in [
        ("interrupt-after-promote,resume-ignores-promoted", false),
        ("interrupt-after-promote", true),
    ] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        let db1 = rig.server("db1");
        db1.exec("CREATE TABLE test.adopt (id INT PRIMARY KEY)")
            .await;
        db1.exec("INSERT INTO test.adopt VALUES (1)").await;
        has_row(rig.server("db2"), 1).await;
        rig.server("db2").exec("STOP SLAVE IO_THREAD").await;
        db1.exec("INSERT INTO test.adopt VALUES (2)").await;
        has_row(rig.server("db3"), 2).await;
        let first = rig.fleet.nodes[0].admin_query("FAILOVER").await;
        assert!(
            format!("{first:?}").contains("interrupt-after-promote"),
            "{hooks}: the first attempt stops after promoting: {first:?}"
        );
        let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(40)).await;
        let events = rig.fleet.nodes[0]
            .admin_query("SHOW EVENTS LIMIT 1000")
            .await
            .unwrap_or_default();
        let adoption = events
            .iter()
            .filter_map(|e| e["detail"].clone())
            .any(|d| d.contains("'db3' (replicating from nobody") && d.contains("adopted"));
        assert_eq!(adoption, adopted, "{hooks}: the resume says it adopted db3");
        let n: i64 =
            harness::rig::query_one(rig.server(&new), "SELECT COUNT(*) FROM test.adopt").await;
        let db3_ro: i64 = harness::rig::query_one(rig.server("db3"), "SELECT @@read_only").await;
        println!("hooks {hooks:?}: new primary {new}, {n} rows; db3 read_only={db3_ro}");
        if adopted {
            assert_eq!(new, "db3", "{hooks}: the promoted replica is kept");
            assert_eq!((n, db3_ro), (2, 0), "{hooks}: rows, read_only");
            // db2 is repointed at it and receives the write it lacked.
            has_row(rig.server("db2"), 2).await;
        } else {
            assert_eq!(new, "db2", "{hooks}");
            assert_eq!(
                (n, db3_ro),
                (1, 1),
                "{hooks}: the write only db3 had is gone"
            );
        }
    }
}

/// A switchover interrupted right after promoting its target (test-only
/// `interrupt-after-promote`): the leader's resume keeps the target, as
/// planned, and writes go on through it. With `resume-ignores-promoted`
/// it promotes the other replica and fences the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_switchover_is_resumed_onto_its_target() {
    for (hooks, adopted) in [
        ("interrupt-after-promote,resume-ignores-promoted", false),
        ("interrupt-after-promote", true),
    ] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        rig.wait_replicas_readable().await;
        let first = rig.fleet.nodes[0].admin_query("SWITCHOVER TO 'db2'").await;
        assert!(
            format!("{first:?}").contains("interrupt-after-promote"),
            "{hooks}: the switchover stops after promoting: {first:?}"
        );
        let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(40)).await;
        let db2_ro: i64 = harness::rig::query_one(rig.server("db2"), "SELECT @@read_only").await;
        println!("hooks {hooks:?}: new primary {new}; db2 read_only={db2_ro}");
        assert_eq!(new == "db2", adopted, "{hooks}: new primary {new}");
        assert_eq!(db2_ro == 0, adopted, "{hooks}: read_only of db2");
        // Writes go on through the fleet, on the new primary.
        harness::wait_for(
            "a write through node 2",
            Duration::from_secs(20),
            || async {
                let mut c = rig.fleet.nodes[1].conn().await;
                c.query_drop("CREATE TABLE IF NOT EXISTS test.after (id INT)")
                    .await
                    .ok()
            },
        )
        .await;
        let n: Vec<String> = rig
            .server(&new)
            .query("SHOW TABLES FROM test LIKE 'after'")
            .await;
        assert_eq!(n.len(), 1, "{hooks}: the write reached '{new}'");
    }
}

/// Waits until `db` has row `id` of `test.adopt`.
async fn has_row(db: &harness::MariaDb, id: i64) {
    harness::wait_for("a replicated row", Duration::from_secs(20), || async {
        // (The table itself may not have arrived yet.)
        let mut c = db.try_conn().await?;
        let n: Vec<i64> = c
            .query(format!("SELECT id FROM test.adopt WHERE id = {id}"))
            .await
            .ok()?;
        let _ = c.disconnect().await;
        (!n.is_empty()).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writable_member_that_replicates_from_nobody_is_fenced_when_another_takes_over() {
    // Made writable by hand, and behind: not adopted, and never left as a
    // second writable server beside the new primary.
    for (hooks, fenced) in [("leave-strays-writable", false), ("", true)] {
        let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
        let stray = "db3";
        for sql in ["STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"] {
            rig.server(stray).exec(sql).await;
        }
        rig.server("db1")
            .exec("CREATE TABLE test.adopt (id INT PRIMARY KEY)")
            .await;
        rig.server("db1")
            .exec("INSERT INTO test.adopt VALUES (1)")
            .await;
        has_row(rig.server("db2"), 1).await;
        let r = rig.fleet.nodes[0].admin_query("FAILOVER").await;
        assert!(r.is_ok(), "{hooks}: {r:?}");
        let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
        assert_eq!(new, "db2", "{hooks}: the replica that has everything");
        let ro: i64 = harness::rig::query_one(rig.server(stray), "SELECT @@read_only").await;
        let state = rig.fleet.nodes[0]
            .admin_query("SHOW BACKENDS")
            .await
            .unwrap()
            .into_iter()
            .find(|r| r["name"].as_deref() == Some(stray))
            .and_then(|r| r["state"].clone());
        println!("hooks {hooks:?}: new primary {new}; {stray}: read_only={ro}, state {state:?}");
        assert_eq!(ro == 1, fenced, "{hooks}: read_only of '{stray}'");
        assert_eq!(
            state.as_deref() == Some("fenced"),
            fenced,
            "{hooks}: state {state:?}"
        );
    }
}

/// A client connected to the primary directly holds `LOCK TABLES ...
/// WRITE` during a switchover. The old primary's read_only waits for that
/// lock (up to `lock_wait_timeout`, a day by default) while every write
/// through concord is frozen. Returns how long SWITCHOVER took to answer
/// (`None`: not within 30 s), and its answer.
async fn switchover_past_a_lock(hooks: &str) -> (Option<Duration>, String) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    rig.wait_replicas_readable().await;
    let mut holder = harness::rig::hold_write_lock(rig.server("db1")).await;
    let t = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        rig.fleet.nodes[0].admin_query("SWITCHOVER TO 'db2'"),
    )
    .await;
    let took = answer.is_ok().then(|| t.elapsed());
    let answer = format!("{answer:?}");
    println!("hooks {hooks:?}: SWITCHOVER answered after {took:?}: {answer}");
    if took.is_some() {
        // Undone: db1 is the primary again, writable, and takes writes
        // through concord; the lock holder keeps its session.
        let (p, _) = rig.primary_of(&rig.fleet.nodes[0]).await.unwrap();
        assert_eq!(p, "db1", "{hooks}");
        let ro: i64 = query_one(rig.server("db1"), "SELECT @@read_only").await;
        assert_eq!(ro, 0, "{hooks}: db1 read-only after the undo");
        let mut c = rig.fleet.nodes[1].conn().await;
        c.query_drop("CREATE TABLE test.after_undo (id INT)")
            .await
            .unwrap();
        holder.query_drop("UNLOCK TABLES").await.unwrap();
    }
    (took, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_a_lock_would_block_is_undone_after_a_bounded_wait() {
    let (took, _) = switchover_past_a_lock("fence-waits-for-locks").await;
    assert_eq!(
        took, None,
        "with the lock wait unbounded the switchover waits"
    );
    let (took, answer) = switchover_past_a_lock("").await;
    let took = took.expect("an answer");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        answer.contains("read_only waited 1s for a lock") && answer.contains("undone"),
        "{answer}"
    );
}

/// A node of an older build cannot decode the promotion record
/// (`Op::Promoting`) and would stop applying the log at it, refusing
/// writes until upgraded. Simulated by node 3 reporting no log version
/// (test-only `older-log-on-node-3`): the failover promotes without the
/// record and says why. With `promoting-ignores-versions` the record is
/// written anyway. Returns whether the log holds a Promoting entry, and
/// the new primary.
async fn failover_beside_an_older_node(hooks: &str) -> (bool, String) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    rig.wait_replicas_readable().await;
    // Every node has reported to the leader.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = rig.fleet.nodes[0].admin_query("FAILOVER").await;
    assert!(r.is_ok(), "{hooks}: {r:?}");
    let (new, _, _) = rig.wait_new_primary("db1", Duration::from_secs(30)).await;
    let events = rig.fleet.nodes[0]
        .admin_query("SHOW EVENTS LIMIT 100")
        .await
        .unwrap();
    let recorded = events
        .iter()
        .any(|e| e["event"].as_deref() == Some("promoting"));
    let said = events.iter().any(|e| {
        e["detail"]
            .as_deref()
            .is_some_and(|d| d.contains("nodes [3] have not reported"))
    });
    println!(
        "hooks {hooks:?}: new primary {new}; Promoting recorded: {recorded}; reason noted: {said}"
    );
    assert_eq!(said, !recorded, "{hooks}");
    (recorded, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_beside_a_node_of_an_older_build_writes_nothing_it_cannot_read() {
    let (recorded, _) =
        failover_beside_an_older_node("older-log-on-node-3,promoting-ignores-versions").await;
    assert!(recorded, "the switch writes the record anyway");
    let (recorded, _) = failover_beside_an_older_node("older-log-on-node-3").await;
    assert!(
        !recorded,
        "a Promoting entry beside a node that cannot read it"
    );
    // And with every node current, the record is written.
    let (recorded, _) = failover_beside_an_older_node("").await;
    assert!(recorded);
}

/// A backup on a replica holds FLUSH TABLES WITH READ LOCK there, and
/// the replica's SQL thread waits behind it. A promotion's STOP SLAVE on
/// that replica waits as long, with writes held meanwhile, and a failover
/// that picks it (received as much as db2) waits for its relay log: `cmd`
/// must not wait for either. Returns how long `cmd` took to answer and
/// the answer (`None`: not within 30 s); when it promoted db2, checks
/// that writes go on and that db3 follows db2 once the backup ends.
async fn promotion_beside_a_backup_lock(hooks: &str, cmd: &str) -> (Option<Duration>, String) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    rig.wait_replicas_readable().await;
    let mut backup = rig.server("db3").conn().await;
    backup
        .query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .unwrap();
    let mut c = rig.fleet.nodes[1].conn().await;
    c.query_drop("CREATE TABLE test.during_backup (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // db3's SQL thread now waits for the backup's lock.
    harness::rig::wait_applier_held_by_backup(rig.server("db3")).await;
    let t = Instant::now();
    let answer =
        tokio::time::timeout(Duration::from_secs(30), rig.fleet.nodes[0].admin_query(cmd)).await;
    let took = answer.is_ok().then(|| t.elapsed());
    println!("hooks {hooks:?}: {cmd} answered after {took:?}: {answer:?}");
    if !matches!(answer, Ok(Ok(_))) {
        backup.query_drop("UNLOCK TABLES").await.unwrap();
        return (took, format!("{answer:?}"));
    }
    // Writes go on, to db2, while the backup still holds its lock.
    c.query_drop("INSERT INTO test.during_backup VALUES (1)")
        .await
        .unwrap();
    let on_db2: i64 = query_one(rig.server("db2"), "SELECT COUNT(*) FROM test.during_backup").await;
    assert_eq!(on_db2, 1);
    // The backup ends: db3's repoint finishes on its own, and db3
    // replicates from db2.
    backup.query_drop("UNLOCK TABLES").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let db2_port = rig.server("db2").port;
    loop {
        let mut c3 = rig.server("db3").conn().await;
        let st: Option<mysql_async::Row> = c3.query_first("SHOW SLAVE STATUS").await.unwrap();
        let port: Option<u16> = st.as_ref().and_then(|r| r.get("Master_Port"));
        let rows: Option<i64> = c3
            .query_first("SELECT COUNT(*) FROM test.during_backup")
            .await
            .unwrap_or(None);
        if port == Some(db2_port) && rows == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "db3 replicates from port {port:?}, has {rows:?} rows"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = rig.fleet.nodes[0]
        .admin_query("SHOW EVENTS LIMIT 100")
        .await
        .unwrap();
    let said = |what: &str| {
        events
            .iter()
            .any(|e| e["detail"].as_deref().is_some_and(|d| d.contains(what)))
    };
    assert!(said("'db3' is still being repointed"), "{events:?}");
    assert!(said("'db3' now replicates from 'db2' ("), "{events:?}");
    (took, "promoted".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_lock_on_a_replica_does_not_hold_a_switchover() {
    let sw = "SWITCHOVER TO 'db2'";
    let (took, _) = promotion_beside_a_backup_lock("repoint-waits-for-locks", sw).await;
    assert_eq!(took, None, "with the wait unbounded the switchover waits");
    let (took, answer) = promotion_beside_a_backup_lock("", sw).await;
    assert_eq!(answer, "promoted");
    let took = took.expect("an answer");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_lock_on_a_replica_does_not_hold_a_failover() {
    // Chosen among equals by weight alone, db3 (last) is picked and its
    // relay log waits for the backup.
    let (_, answer) = promotion_beside_a_backup_lock("candidate-ignores-applier", "FAILOVER").await;
    assert!(answer.contains("did not apply"), "{answer}");
    let (took, answer) = promotion_beside_a_backup_lock("", "FAILOVER").await;
    assert_eq!(answer, "promoted");
    let took = took.expect("an answer");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// db3 is a delayed replica (`MASTER_DELAY = 60`, kept for recovery): it
/// receives every write at once and applies it a minute later. With
/// `db2_behind`, db2's IO thread is stopped before the last write, so
/// only db3 has it. Then FAILOVER. Returns the answer (`Ok` or the error
/// text) and the primary after it.
async fn failover_beside_a_delayed_replica(
    hooks: &str,
    db2_behind: bool,
) -> (Result<(), String>, String) {
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], hooks).await;
    rig.wait_replicas_readable().await;
    for sql in [
        "STOP SLAVE",
        "CHANGE MASTER TO MASTER_DELAY = 60",
        "START SLAVE",
    ] {
        rig.server("db3").exec(sql).await;
    }
    if db2_behind {
        rig.server("db2").exec("STOP SLAVE IO_THREAD").await;
    }
    let mut c = rig.fleet.nodes[1].conn().await;
    c.query_drop("CREATE TABLE test.delayed (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO test.delayed VALUES (1)")
        .await
        .unwrap();
    // db3 (and db2 unless behind) received it; db3 has not applied it.
    let pos: String = query_one(rig.server("db1"), "SELECT @@gtid_binlog_pos").await;
    let received = |db: &'static str| {
        let rig = &rig;
        let pos = pos.clone();
        async move {
            harness::wait_for(
                "the last write received",
                Duration::from_secs(10),
                || async {
                    let mut c = rig.server(db).conn().await;
                    let st: Option<mysql_async::Row> =
                        c.query_first("SHOW SLAVE STATUS").await.ok()?;
                    let io: String = st?.get("Gtid_IO_Pos")?;
                    concord_health::gtid::covers(&io, &pos).then_some(())
                },
            )
            .await
        }
    };
    received("db3").await;
    if !db2_behind {
        received("db2").await;
    }
    let answer = rig.fleet.nodes[0].admin_query("FAILOVER").await;
    let answer = answer.map(|_| ()).map_err(|e| format!("{e:?}"));
    let primary = rig
        .primary_of(&rig.fleet.nodes[0])
        .await
        .map(|(p, _)| p)
        .unwrap_or_default();
    println!("hooks {hooks:?}, db2 behind {db2_behind}: {answer:?}; primary {primary:?}");
    if hooks.contains("delay-removal-purges-relay-log") {
        // What only db3 received is gone with its relay log: the resumed
        // failover promotes db2, without the last write.
        let (p, _, _) = rig.wait_new_primary("db1", Duration::from_secs(60)).await;
        // (db2 stopped receiving before the table was created.)
        let mut c = rig.server(&p).conn().await;
        let n: i64 = c
            .query_first("SELECT COUNT(*) FROM test.delayed")
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        println!("hooks {hooks:?}: resumed, primary {p} with {n} rows");
        return (
            Err(format!("first: {answer:?}; resumed: {p} with {n} rows")),
            p,
        );
    }
    if answer.is_ok() {
        // The new primary has the last write: nothing was lost.
        let n: i64 = query_one(rig.server(&primary), "SELECT COUNT(*) FROM test.delayed").await;
        assert_eq!(n, 1, "{hooks}: on {primary}");
    }
    (answer, primary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_promotes_no_delayed_replica_among_equals() {
    // Chosen by weight and name alone, db3 (last) is the one.
    let (answer, primary) =
        failover_beside_a_delayed_replica("candidate-ignores-applier", false).await;
    assert_eq!((answer, primary.as_str()), (Ok(()), "db3"));
    let (answer, primary) = failover_beside_a_delayed_replica("", false).await;
    assert_eq!((answer, primary.as_str()), (Ok(()), "db2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_replica_that_alone_has_the_last_writes_is_promoted_without_its_delay() {
    let (answer, _) = failover_beside_a_delayed_replica("keep-candidate-delay", true).await;
    let err = answer.expect_err("the catch-up waits out the delay");
    assert!(err.contains("did not apply"), "{err}");
    // MariaDB's CHANGE MASTER without a relay log position deletes the
    // relay log: the write only db3 received is lost, whichever server
    // the resumed failover then promotes (neither has it).
    let (answer, _) =
        failover_beside_a_delayed_replica("delay-removal-purges-relay-log", true).await;
    let err = answer.expect_err("the relay log was deleted");
    assert!(err.ends_with(" with 0 rows"), "{err}");
    let (answer, primary) = failover_beside_a_delayed_replica("", true).await;
    assert_eq!((answer, primary.as_str()), (Ok(()), "db3"));
}
