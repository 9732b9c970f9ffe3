//! Soak: mixed load through all three nodes while random faults hit the
//! fleet, for a set time. Off by default (it runs for minutes):
//!
//! ```sh
//! SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture
//! SOAK_SEED=42 ...   # replay one sequence of faults
//! ```
//!
//! Faults: switchover to a random replica, kill -9 of the primary's
//! mariadbd (then rebuilt and rejoined), kill -9 of a concord node (then
//! restarted from its data dir), a node cut off from the Raft quorum.
//! Checks at the end: no panic in any node's log, every acknowledged write
//! on the final primary (semi-sync replication), each node's memory back
//! near its baseline.

use harness::rig::{missing_on, reset_to, write_gap, Load, Rig};
use mysql_async::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every server can be a semi-sync primary and acks as a replica. A
/// server without semi-sync replicas of its own (a replica, a freshly
/// promoted primary) must not wait for acks: wait-no-slave off.
const SEMI_SYNC: &[&str] = &[
    "--rpl-semi-sync-master-enabled=ON",
    "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
    "--rpl-semi-sync-master-timeout=30000",
    "--rpl-semi-sync-master-wait-no-slave=OFF",
    "--rpl-semi-sync-slave-enabled=ON",
];

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Readers through every node: point selects, text and prepared.
struct Readers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(rig: &Rig) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let tasks = rig
            .fleet
            .nodes
            .iter()
            .map(|n| {
                let opts = n.opts();
                let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut conn: Option<mysql_async::Conn> = None;
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            conn = mysql_async::Conn::new(opts.clone()).await.ok();
                            if conn.is_none() {
                                errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                        let Some(c) = conn.as_mut() else { continue };
                        i += 1;
                        let r: Result<Option<i64>, _> = if i.is_multiple_of(2) {
                            c.exec_first("SELECT COUNT(*) FROM test.w WHERE writer = ?", (i % 7,))
                                .await
                        } else {
                            c.query_first("SELECT COUNT(*) FROM test.w WHERE writer = 1")
                                .await
                        };
                        match r {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => {
                                conn = None;
                                errors.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Readers {
            stop,
            ok,
            errors,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

async fn primary(rig: &Rig) -> String {
    for n in &rig.fleet.nodes {
        if let Some((p, _)) = rig.primary_of(n).await {
            if !p.is_empty() {
                return p;
            }
        }
    }
    panic!("no node names a primary\n{}", rig.diagnose().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for minutes: SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture"]
async fn soak_mixed_load_with_random_faults() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("soak: {secs} s, SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    let mut rig =
        Rig::start_with("[failover]\ncooldown = \"2s\"\n", "", SEMI_SYNC, SEMI_SYNC).await;
    let load = Load::start(&rig.fleet, 1);
    let readers = Readers::start(&rig);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let baseline: Vec<u64> = rig.fleet.nodes.iter().map(|n| n.rss_kib()).collect();
    println!("rss under load after 10 s (KiB): {baseline:?}");

    let started = Instant::now();
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(secs) {
        let kind = rng.below(4);
        let t = Instant::now();
        let name = match kind {
            0 => {
                let p = primary(&rig).await;
                let targets: Vec<&str> = ["db1", "db2", "db3"]
                    .into_iter()
                    .filter(|n| *n != p)
                    .collect();
                let to = targets[rng.below(2) as usize];
                let r = rig.fleet.nodes[rng.below(3) as usize]
                    .admin_query(&format!("SWITCHOVER TO '{to}'"))
                    .await;
                println!("  switchover {p} -> {to}: {:?}", r.map(|_| "ok"));
                "switchover"
            }
            1 => {
                let old = primary(&rig).await;
                rig.server_mut(&old).kill();
                let (new, _, took) = rig.wait_new_primary(&old, Duration::from_secs(30)).await;
                let pos = rig.server(&new).gtid_pos().await;
                rig.server_mut(&old).restart().await;
                // With semi-sync the old primary may still hold the one
                // transaction it wrote but never had acknowledged: rebuild
                // it from the new primary's position, then rejoin.
                if rig.fleet.nodes[0]
                    .admin_query(&format!("REJOIN BACKEND '{old}'"))
                    .await
                    .is_err()
                {
                    reset_to(rig.server(&old), &pos).await;
                    rig.fleet.nodes[0]
                        .admin_query(&format!("REJOIN BACKEND '{old}'"))
                        .await
                        .unwrap_or_else(|e| panic!("rejoin {old}: {e}"));
                }
                println!("  kill -9 primary {old}: {new} promoted after {took:?}");
                "kill primary"
            }
            2 => {
                let i = rng.below(3) as usize;
                rig.fleet.nodes[i].kill();
                tokio::time::sleep(Duration::from_millis(500 + rng.below(2500))).await;
                rig.fleet.nodes[i].restart().await;
                rig.fleet.nodes[i].wait_ready().await;
                println!("  kill -9 concord node {} and restart", i + 1);
                "kill node"
            }
            _ => {
                let i = rng.below(3) as usize;
                rig.fleet.isolate(i);
                tokio::time::sleep(Duration::from_millis(2000 + rng.below(2000))).await;
                rig.fleet.heal(i);
                println!("  node {} cut off from the quorum, healed", i + 1);
                "isolate node"
            }
        };
        *faults.entry(name).or_default() += 1;
        rig.wait_settled(Duration::from_secs(60)).await;
        println!("  settled {:?} after the fault began", t.elapsed());
        tokio::time::sleep(Duration::from_millis(3000 + rng.below(5000))).await;
    }

    let (reads_ok, read_errors) = readers.stop().await;
    let (acked, samples, write_errors) = load.stop().await;
    let gap = write_gap(&samples, started);
    let last = primary(&rig).await;
    let lost = missing_on(rig.server(&last), &acked).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end: Vec<u64> = rig.fleet.nodes.iter().map(|n| n.rss_kib()).collect();
    println!(
        "soak over {:?}: faults {faults:?}; {} acknowledged writes, {} write errors, longest write gap {gap:?}; \
         {reads_ok} reads, {read_errors} read errors; final primary {last}; lost acknowledged writes: {lost}; \
         rss (KiB) baseline {baseline:?} -> end {end:?}",
        started.elapsed(),
        acked.len(),
        write_errors.len()
    );
    for n in &rig.fleet.nodes {
        assert!(
            !n.logs().contains("panicked"),
            "a node panicked:\n{}",
            n.logs()
        );
    }
    assert_eq!(lost, 0, "acknowledged writes missing on {last}");
    let ceiling = baseline.iter().copied().max().unwrap_or(0) * 3 / 2 + 16 * 1024;
    for (i, kib) in end.iter().enumerate() {
        assert!(
            *kib <= ceiling,
            "node {} holds {kib} KiB after the run (baseline {baseline:?})",
            i + 1
        );
    }
}
