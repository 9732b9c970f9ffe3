//! The differential tester: seeded, application-like sessions (see
//! `gen.rs`) run once through concord (a primary and two replicas behind
//! it, default settings, reads split) and once directly on the primary,
//! over the raw protocol. Every response packet must be the same: result
//! sets byte for byte, warnings, errors, affected rows, insert ids,
//! status flags. `known.rs` lists the only differences allowed, with
//! their reasons. A session with nothing in it that pins must end
//! unpinned (SHOW SESSIONS), so needless pins show up too.
//!
//! Reproduce a failure with its seed:
//! `DIFF_SEED=1234 cargo test --test differential one_seed -- --ignored --nocapture`.
//! Long mode (at least 100 000 statements, recorded in docs/robustness.md):
//! `DIFF_STATEMENTS=100000 cargo test --test differential long -- --ignored --nocapture`.

mod gen;
mod known;
mod run;

use harness::{Concord, ConcordConfig, MariaDb, Topology};
use mysql_async::prelude::*;
use run::{Flavor, Outcome, Runner};
use std::time::Instant;

const SCHEMA: &[&str] = &[
    "DROP DATABASE IF EXISTS diff",
    "CREATE DATABASE diff",
    "CREATE TABLE diff.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT, s VARCHAR(32))",
    "INSERT INTO diff.t (v, s) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f')",
    "CREATE PROCEDURE diff.p_sets(OUT o INT) BEGIN SET o = 41; SET @pv = 'pv'; END",
    "CREATE PROCEDURE diff.p_mode() BEGIN SET SESSION time_zone = '+05:00'; END",
];

async fn reset_schema(primary: &MariaDb) {
    let mut c = primary.conn().await;
    for s in SCHEMA {
        c.query_drop(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let _ = c.disconnect().await;
}

struct Rig {
    topo: Topology,
    node: Concord,
}

async fn rig() -> Rig {
    let topo = Topology::start(2).await;
    reset_schema(&topo.primary).await;
    topo.wait_replicated().await;
    let node = Concord::start(ConcordConfig::new(topo.backends())).await;
    node.wait_readable(&["db2", "db3"]).await;
    Rig { topo, node }
}

/// Runs `steps` on `port`; the runner stays open for checks.
async fn run_on(port: u16, flavor: Flavor, steps: &[gen::Step]) -> (Vec<Outcome>, Runner) {
    let mut r = Runner::connect(port, flavor).await;
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        out.push(r.step(s).await);
    }
    (out, r)
}

fn show(p: &[u8]) -> String {
    p.iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// One seed: runs it both ways and returns the statements it ran, or a
/// report of the first difference.
async fn check_seed(rig: &Rig, seed: u64, statements: usize) -> Result<usize, String> {
    let flavor = match seed % 4 {
        0 => Flavor::Plain,
        1 => Flavor::Tracking,
        2 => Flavor::TrackOnly,
        _ => Flavor::EofOnly,
    };
    let s = gen::session(seed, statements);
    if std::env::var_os("DIFF_STEPS_ONLY").is_some() {
        for (i, st) in s.steps.iter().enumerate() {
            println!("{i:4} {}", st.describe());
        }
    }
    reset_schema(&rig.topo.primary).await;
    rig.topo.wait_replicated().await;
    let (via, runner) = run_on(rig.node.cfg.port, flavor, &s.steps).await;
    // Nothing that pins, no pin.
    if !s.expect.pins && !runner.closed {
        let rows = rig
            .node
            .admin_query("SHOW SESSIONS")
            .await
            .map_err(|e| e.to_string())?;
        let me = rows
            .iter()
            .find(|r| r["id"].as_deref() == Some(runner.id.to_string().as_str()));
        let Some(me) = me else {
            return Err(format!(
                "seed {seed}: session {} is not in SHOW SESSIONS",
                runner.id
            ));
        };
        if let Some(pinned) = me["pinned"].clone().filter(|p| !p.is_empty()) {
            return Err(format!(
                "seed {seed}: the session was pinned ({pinned}) though nothing in it needs a pin"
            ));
        }
    }
    drop(runner);
    reset_schema(&rig.topo.primary).await;
    let (direct, _r) = run_on(rig.topo.primary.port, flavor, &s.steps).await;
    if std::env::var_os("DIFF_DUMP").is_some() {
        for (i, (a, b)) in via.iter().zip(direct.iter()).enumerate() {
            let mark = if a == b { " " } else { "!" };
            println!("{mark}{i:4} {}", s.steps[i].describe());
            if a != b || std::env::var_os("DIFF_DUMP_ALL").is_some() {
                println!(
                    "      concord: {:?}",
                    a.iter().map(|p| show(p)).collect::<Vec<_>>()
                );
                println!(
                    "      primary: {:?}",
                    b.iter().map(|p| show(p)).collect::<Vec<_>>()
                );
            }
        }
    }
    for (i, (a, b)) in via.iter().zip(direct.iter()).enumerate() {
        if a != b {
            let ctx: Vec<String> = s.steps[i.saturating_sub(4)..=i]
                .iter()
                .map(|x| x.describe())
                .collect();
            return Err(format!(
                "seed {seed} ({flavor:?}), step {i}: {}\n  steps before: {ctx:#?}\n  through concord: {:#?}\n  on the primary:  {:#?}",
                s.steps[i].describe(),
                a.iter().map(|p| show(p)).collect::<Vec<_>>(),
                b.iter().map(|p| show(p)).collect::<Vec<_>>(),
            ));
        }
    }
    Ok(s.steps.len())
}

/// Sessions CI runs (seeds 1..=SEEDS, 100 steps each).
const SEEDS: u64 = 60;

/// The fixed seeds CI runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_seeds_answer_the_same_through_concord() {
    let rig = rig().await;
    let t0 = Instant::now();
    let mut total = 0;
    for seed in 1..=SEEDS {
        match check_seed(&rig, seed, 100).await {
            Ok(n) => total += n,
            Err(report) => panic!("{report}\n(known differences: {:?})", known::DIFFERENCES),
        }
    }
    println!(
        "differential: {SEEDS} sessions, {total} steps, identical ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
}

/// `DIFF_SEED=n`: one seed, for reproducing a report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn one_seed() {
    let seed: u64 = std::env::var("DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let n: usize = std::env::var("DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let rig = rig().await;
    if let Err(report) = check_seed(&rig, seed, n).await {
        panic!("{report}");
    }
}

/// Long mode: `DIFF_STATEMENTS` steps in all (default 100 000), sessions
/// of 200, seeds from `DIFF_FIRST_SEED` (default 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn long() {
    let want: usize = std::env::var("DIFF_STATEMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let first: u64 = std::env::var("DIFF_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let rig = rig().await;
    let t0 = Instant::now();
    let (mut total, mut sessions, mut failures) = (0, 0, Vec::new());
    let mut seed = first;
    while total < want {
        match check_seed(&rig, seed, 200).await {
            Ok(n) => total += n,
            Err(report) => {
                eprintln!("{report}\n");
                failures.push(seed);
                total += 200;
            }
        }
        sessions += 1;
        seed += 1;
    }
    println!(
        "differential long run: {sessions} sessions (seeds {first}..{}), {total} steps, {} differing sessions {failures:?}, {:.0}s",
        seed - 1,
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "differing seeds: {failures:?}");
}
