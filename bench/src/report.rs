//! Everything the tool prints: the live progress line (stderr), the final
//! tables and JSON (stdout).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use crate::stats::{histogram, Latency, Summary, TaskStats};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One line per second: rate, errors and p99 of the last interval.
pub fn progress(elapsed: Duration, tasks: &[Arc<Mutex<TaskStats>>]) {
    let mut h = histogram();
    let (mut ok, mut err) = (0u64, 0u64);
    for t in tasks {
        let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.add(&t.interval);
        t.interval.reset();
        ok += t.interval_ok;
        err += t.interval_errors;
        t.interval_ok = 0;
        t.interval_errors = 0;
    }
    let l = Latency::of(&h);
    eprintln!(
        "[{:>4}s] {:>9} qps  errors {:>5}  p50 {:>8.3} ms  p99 {:>8.3} ms",
        elapsed.as_secs(),
        ok,
        err,
        l.p50_us as f64 / 1000.0,
        l.p99_us as f64 / 1000.0
    );
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The final table of a run or comparison.
pub fn table(rows: &[Summary]) {
    println!(
        "{:<28} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>14}",
        "target",
        "qps",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "cpu s/100k",
        "q per cpu-s"
    );
    for r in rows {
        println!(
            "{:<28} {:>10.0} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>14}",
            r.target,
            r.qps,
            r.errors,
            ms(r.latency.p50_us),
            ms(r.latency.p90_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            ms(r.latency.max_us),
            r.cpu_per_100k().map_or("-".into(), |v| format!("{v:.3}")),
            r.queries_per_cpu_second()
                .map_or("-".into(), |v| format!("{v:.0}")),
        );
        if let Some(e) = &r.last_error {
            println!("    last error: {e}");
        }
    }
}

pub fn json(v: &serde_json::Value) {
    println!("{v}");
}

pub fn line(s: &str) {
    println!("{s}");
}

pub fn note(s: &str) {
    eprintln!("{s}");
}
