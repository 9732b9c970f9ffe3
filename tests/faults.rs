//! Randomized fault schedules, reproducible by seed, with a history
//! checker.
//!
//! A rig (primary + 2 replicas, 3 concord nodes, a relay on every link a
//! fault can cut) runs writers through every node while a seeded schedule
//! of faults plays: a node cut off from the fleet, nodes cut from the
//! primary, replication cut, the primary black-holed, a node frozen
//! (SIGSTOP) past its lease, a forced failover in the middle of all that.
//! Then everything heals and the checker decides from the servers
//! themselves (rows, GTID states, binlogs), not from what the clients were
//! told:
//!
//! 1. one writable server, and it is the one the fleet routes to;
//! 2. no transaction committed on a fenced server after the promotion
//!    that replaced it (binlog and row timestamps);
//! 3. every acknowledged write is on the final primary, or is among the
//!    transactions concord reported lost (at the promotion, or when the
//!    fenced server came back);
//! 4. every answer was ok, a definite error, or "outcome unknown" (1105
//!    08007 / a lost connection): counted and printed.
//!
//! `cargo test --test faults` runs 10 schedules (seeds 1..=10); the long
//! mode runs `FAULT_SCHEDULES` (default 200) from `FAULT_FIRST_SEED`:
//! `cargo test --test faults long -- --ignored --nocapture`. One seed:
//! `FAULT_SEED=7 cargo test --test faults one -- --ignored --nocapture`.
//! `FAULT_HOOKS=no-fence-wait,...` runs the schedules with protections
//! removed (test-only switches), to see the checker catch it.

use harness::rig::{binlog_after, missing_on, query_one, Load, Rig};
use harness::MariaDb;
use std::time::{Duration, Instant};

const FAST: &str = "[monitor]\ninterval = \"250ms\"\nheartbeat_interval = \"100ms\"\ntimeout = \"500ms\"\nfailure_threshold = 4\n[failover]\ncooldown = \"0s\"\n";
const FAST_CLUSTER: &str = "lease_timeout = \"500ms\"\n";

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
enum Fault {
    /// Node i cut off from the other nodes (both directions).
    IsolateNode(usize),
    /// Node i loses its link to the primary.
    CutNodeFromPrimary(usize),
    /// The replicas lose the primary.
    CutReplication,
    /// The primary stops answering anyone (packets vanish).
    BlackHolePrimary,
    /// Node i frozen for this long (past its lease), then resumed.
    Freeze(usize, u64),
    /// FAILOVER on the admin port of node i.
    ForceFailover(usize),
}

/// 2 to 4 faults, each held 0.2 to 2.5 s; at most one forced failover
/// (with three servers, an automatic failover and two forced ones would
/// leave nothing to promote).
fn schedule(seed: u64) -> Vec<(Fault, u64)> {
    let mut r = Rng::new(seed);
    let n = 2 + r.below(3) as usize;
    let mut forced = false;
    (0..n)
        .map(|_| {
            let node = r.below(3) as usize;
            let f = match r.below(6) {
                0 => Fault::IsolateNode(node),
                1 => Fault::CutNodeFromPrimary(node),
                2 => Fault::CutReplication,
                3 => Fault::BlackHolePrimary,
                4 => Fault::Freeze(node, 600 + r.below(1200)),
                _ if forced => Fault::CutNodeFromPrimary(node),
                _ => {
                    forced = true;
                    Fault::ForceFailover(node)
                }
            };
            (f, 200 + r.below(2300))
        })
        .collect()
}

/// What one schedule left behind, and what the checker found.
struct Outcome {
    acked: usize,
    unknown: usize,
    refused: usize,
    missing: usize,
    reported_lost: u64,
    violations: Vec<String>,
}

/// Transactions concord reported lost: at promotions ("lacks N
/// transactions") and when a fenced server came back ("holds N
/// transactions").
fn reported_lost(events: &[std::collections::BTreeMap<String, Option<String>>]) -> u64 {
    let mut promoted = 0;
    let mut returned = 0;
    for e in events {
        let d = e["detail"].clone().unwrap_or_default();
        let count = |marker: &str| {
            d.split(marker)
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .and_then(|x| x.parse::<u64>().ok())
        };
        if let Some(n) = count(" lacks ") {
            promoted += n;
        }
        if let Some(n) = count(" and holds ") {
            returned += n;
        }
    }
    // The report at the server's return is exact; the one at promotion
    // is what the last probe saw.
    promoted.max(returned)
}

async fn run_schedule(seed: u64) -> Outcome {
    let steps = schedule(seed);
    println!("seed {seed}: {steps:?}");
    // FAULT_HOOKS: test-only switches for every node, to see the checker
    // catch a protection removed.
    let hooks = std::env::var("FAULT_HOOKS").unwrap_or_default();
    let rig = Rig::start_full(FAST, FAST_CLUSTER, &[], &[], &hooks).await;
    let load = Load::start(&rig.fleet, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut frozen: Vec<(usize, Instant)> = Vec::new();
    let mut isolated = Vec::new();
    let mut forced = Vec::new();
    for (fault, hold) in &steps {
        match fault {
            Fault::IsolateNode(i) => {
                rig.fleet.isolate(*i);
                isolated.push(*i);
            }
            Fault::CutNodeFromPrimary(i) => rig.node_relays[*i].cut(),
            Fault::CutReplication => rig.repl_relay.cut(),
            Fault::BlackHolePrimary => {
                rig.repl_relay.black_hole();
                for r in &rig.node_relays {
                    r.black_hole();
                }
            }
            Fault::Freeze(i, ms) => {
                rig.fleet.nodes[*i].signal("STOP");
                frozen.push((*i, Instant::now() + Duration::from_millis(*ms)));
            }
            Fault::ForceFailover(i) => {
                let opts = admin_opts(&rig, *i);
                forced.push(tokio::spawn(async move {
                    use mysql_async::prelude::Queryable;
                    if let Ok(mut c) = mysql_async::Conn::new(opts).await {
                        let _ = c.query_drop("FAILOVER").await;
                    }
                }));
            }
        }
        let until = Instant::now() + Duration::from_millis(*hold);
        while Instant::now() < until {
            frozen.retain(|(i, at)| {
                if Instant::now() >= *at {
                    rig.fleet.nodes[*i].signal("CONT");
                    false
                } else {
                    true
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Heal everything.
    for (i, _) in frozen.drain(..) {
        rig.fleet.nodes[i].signal("CONT");
    }
    for i in isolated {
        rig.fleet.heal(i);
    }
    rig.repl_relay.heal();
    for r in &rig.node_relays {
        r.heal();
    }
    for f in forced {
        let _ = tokio::time::timeout(Duration::from_secs(20), f).await;
    }
    // A settled fleet: every node ready, writes flowing again.
    let mut violations = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    // Settled means every node ready and agreeing on (primary, epoch), and
    // still the same 3 s later: a failover decided just before the heal
    // may still be promoting when every node first looks ready.
    let mut seen: Option<((String, u64), Instant)> = None;
    let routed = loop {
        let agreed = agreed_primary(&rig).await;
        match (&agreed, &seen) {
            (Some(a), Some((b, since))) if a == b => {
                if since.elapsed() >= Duration::from_secs(3) {
                    break a.0.clone();
                }
            }
            (Some(a), _) => seen = Some((a.clone(), Instant::now())),
            (None, _) => seen = None,
        }
        if Instant::now() > deadline {
            violations
                .push("the fleet did not settle on a primary within 40 s of the heal".to_string());
            println!("seed {seed}: not settled:\n{}", rig.diagnose().await);
            break rig
                .primary_of(&rig.fleet.nodes[0])
                .await
                .map(|(p, _)| p)
                .unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, _samples, errors) = load.stop().await;

    // 1. One writable server, the routed one (a fenced server that came
    //    back is made read-only by the leader within moments).
    let servers: Vec<(&str, &MariaDb)> = vec![
        ("db1", &rig.primary),
        ("db2", &rig.replicas[0]),
        ("db3", &rig.replicas[1]),
    ];
    let mut writable = Vec::new();
    for _ in 0..40 {
        writable.clear();
        for (name, db) in &servers {
            if query_one::<i64>(db, "SELECT @@global.read_only").await == 0 {
                writable.push(name.to_string());
            }
        }
        if writable == vec![routed.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if writable != vec![routed.clone()] {
        violations.push(format!(
            "writable servers {writable:?}, routed primary '{routed}'"
        ));
    }

    // 2. Nothing committed on a fenced server after the promotion that
    //    replaced it.
    let events = rig.fleet.nodes[0]
        .admin_query("SHOW EVENTS LIMIT 1000")
        .await
        .unwrap_or_default();
    let mut fenced_at: Vec<(String, u64)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e["event"].as_deref() != Some("fence") {
            continue;
        }
        let detail = e["detail"].clone().unwrap_or_default();
        let Some(name) = detail.split('\'').nth(1) else {
            continue;
        };
        // The promotion that followed this fence.
        if let Some(p) = events[i..]
            .iter()
            .find(|x| x["event"].as_deref() == Some("promote"))
        {
            let at: u64 = p["at_ms"].as_deref().unwrap_or("0").parse().unwrap_or(0);
            fenced_at.push((name.to_string(), at));
        }
    }
    let acked_set: std::collections::HashSet<(u32, u32)> = acked.iter().copied().collect();
    let mut late_binlog = 0usize;
    for (name, promoted_ms) in &fenced_at {
        let Some((_, db)) = servers.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if name == &routed {
            continue;
        }
        // 2a. No acknowledged write among them (row timestamps, ms).
        let rows: Vec<(u32, u32)> = db
            .query(&format!("SELECT writer, seq FROM test.w WHERE origin = @@server_id AND ts > FROM_UNIXTIME({promoted_ms} / 1000)"))
            .await;
        let acked_late = rows.iter().filter(|k| acked_set.contains(k)).count();
        if acked_late > 0 {
            violations.push(format!(
                "{acked_late} acknowledged writes committed on fenced '{name}' after the promotion that replaced it"
            ));
        }
        // 2b. Whatever else committed there late (a statement in flight
        // when the network failed, answered "outcome unknown", or never
        // answered) is among what concord reported the server holds.
        late_binlog += binlog_after(db, promoted_ms + 1000).await.len();
        if !rows.is_empty() {
            println!(
                "seed {seed}: {} unacknowledged statements committed late on fenced '{name}'",
                rows.len()
            );
        }
    }

    // 3. Acknowledged writes: on the final primary, or reported lost.
    let primary = servers
        .iter()
        .find(|(n, _)| *n == routed)
        .map(|(_, d)| *d)
        .unwrap_or(&rig.primary);
    let missing = missing_on(primary, &acked).await;
    // Give the leader a moment to report what a returned fenced server
    // holds.
    let mut lost = reported_lost(&events);
    if missing as u64 > lost || late_binlog > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let events = rig.fleet.nodes[0]
            .admin_query("SHOW EVENTS LIMIT 1000")
            .await
            .unwrap_or_default();
        lost = reported_lost(&events);
    }
    if missing as u64 > lost {
        violations.push(format!(
            "{missing} acknowledged writes are not on the primary '{routed}', concord reported {lost} lost"
        ));
    }
    let held = held_by_fenced(&rig, &events).await;
    if late_binlog as u64 > held {
        violations.push(format!(
            "{late_binlog} transactions committed on a fenced server after its replacement was promoted, concord reported {held} held there"
        ));
    }

    // 4. What the clients were told.
    let unknown = errors
        .iter()
        .filter(|e| {
            e.contains("outcome is unknown") || e.contains("Connection") || e.contains("connection")
        })
        .count();
    let refused = errors.len() - unknown;
    if !violations.is_empty() {
        println!("seed {seed}: diagnose:\n{}", rig.diagnose().await);
    }
    Outcome {
        acked: acked.len(),
        unknown,
        refused,
        missing,
        reported_lost: lost,
        violations,
    }
}

/// The largest count concord reported a fenced server holds that the
/// primary lacks (events refreshed first: the leader compares every few
/// seconds).
async fn held_by_fenced(
    rig: &Rig,
    events: &[std::collections::BTreeMap<String, Option<String>>],
) -> u64 {
    let count = |evs: &[std::collections::BTreeMap<String, Option<String>>]| {
        evs.iter()
            .filter_map(|e| {
                e["detail"]
                    .clone()
                    .unwrap_or_default()
                    .split(" and holds ")
                    .nth(1)
                    .and_then(|x| x.split_whitespace().next())
                    .and_then(|x| x.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0)
    };
    let mut n = count(events);
    for _ in 0..10 {
        if let Ok(evs) = rig.fleet.nodes[0]
            .admin_query("SHOW EVENTS LIMIT 1000")
            .await
        {
            n = n.max(count(&evs));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    n
}

/// The (primary, epoch) every node applied, when all are ready and agree.
async fn agreed_primary(rig: &Rig) -> Option<(String, u64)> {
    let mut agreed: Option<(String, u64)> = None;
    for n in &rig.fleet.nodes {
        if !matches!(n.http_get("/readyz").await, Some((200, _))) {
            return None;
        }
        let p = rig.primary_of(n).await?;
        if agreed.as_ref().is_some_and(|a| *a != p) {
            return None;
        }
        agreed = Some(p);
    }
    agreed
}

fn admin_opts(rig: &Rig, i: usize) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(rig.fleet.nodes[i].cfg.admin_port)
        .user(Some("admin"))
        .pass(Some(harness::PASSWORD))
        .prefer_socket(false)
}

async fn run_seeds(seeds: impl Iterator<Item = u64>) {
    let mut failed = Vec::new();
    let mut n = 0;
    for seed in seeds {
        n += 1;
        let o = run_schedule(seed).await;
        println!(
            "seed {seed}: {} acknowledged, {} refused (not executed), {} outcome unknown or connection lost; missing on the primary {}, reported lost {}; checker: {}",
            o.acked,
            o.refused,
            o.unknown,
            o.missing,
            o.reported_lost,
            if o.violations.is_empty() {
                "ok".to_string()
            } else {
                o.violations.join("; ")
            }
        );
        if !o.violations.is_empty() {
            failed.push(seed);
        }
    }
    println!(
        "{n} schedules, {} with violations: {failed:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "schedules with violations: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seeded_fault_schedules_keep_every_promise() {
    run_seeds(1..=10).await;
}

/// A number from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long mode: FAULT_SCHEDULES (200) from FAULT_FIRST_SEED (1000)"]
async fn long() {
    let first: u64 = env_u64("FAULT_FIRST_SEED", 1000);
    let n: u64 = env_u64("FAULT_SCHEDULES", 200);
    run_seeds(first..first + n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "one seed: FAULT_SEED"]
async fn one() {
    let seed: u64 = env_u64("FAULT_SEED", 1);
    run_seeds(std::iter::once(seed)).await;
}
