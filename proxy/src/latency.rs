//! A latency histogram with fixed buckets and atomic counters: recording
//! is one bucket search and three relaxed adds, with no allocation and no
//! sample kept. The Prometheus exporter's own histograms store every
//! sample until the next scrape or upkeep (a block allocated per 64), so
//! the per-statement histogram is this one, rendered at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds in seconds (Prometheus `le`), as for the other `_seconds`
/// histograms.
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The Prometheus series of this histogram under `name{labels}`
    /// (`labels` already formatted, e.g. `backend="db1"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cum += c.load(Ordering::Relaxed);
            let le = BOUNDS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(700));
        h.record(Duration::from_secs(30));
        let mut s = String::new();
        h.render(&mut s, "x", "b=\"1\"");
        assert!(s.contains("x_bucket{b=\"1\",le=\"0.0001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{b=\"1\",le=\"0.001\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{b=\"1\",le=\"10\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{b=\"1\",le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count{b=\"1\"} 3\n"), "{s}");
    }
}
