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
