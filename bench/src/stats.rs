//! Latency and error accounting: each connection task records into its own
//! stats (an uncontended lock), the reporter merges them per interval and
//! at the end. Latencies are microseconds in an HDR histogram
//! (1 µs .. 60 s, 3 significant digits).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

pub const MAX_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// One connection's counters.
pub struct TaskStats {
    pub total: Histogram<u64>,
    pub interval: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub interval_ok: u64,
    pub interval_errors: u64,
    /// Raw (ms offset, latency µs, ok) samples, kept only for timelines.
    pub samples: Option<Vec<(u32, u32, bool)>>,
    pub last_error: Option<String>,
}

impl TaskStats {
    pub fn new(keep_samples: bool) -> Arc<Mutex<TaskStats>> {
        Arc::new(Mutex::new(TaskStats {
            total: histogram(),
            interval: histogram(),
            ok: 0,
            errors: 0,
            interval_ok: 0,
            interval_errors: 0,
            samples: keep_samples.then(Vec::new),
            last_error: None,
        }))
    }

    pub fn record(&mut self, latency_us: u64, ok: bool, at_ms: u32) {
        let l = latency_us.clamp(1, MAX_US);
        if ok {
            let _ = self.total.record(l);
            let _ = self.interval.record(l);
            self.ok += 1;
            self.interval_ok += 1;
        } else {
            self.errors += 1;
            self.interval_errors += 1;
        }
        if let Some(s) = self.samples.as_mut() {
            s.push((at_ms, u32::try_from(l).unwrap_or(u32::MAX), ok));
        }
    }

    pub fn reset(&mut self) {
        self.total.reset();
        self.interval.reset();
        self.ok = 0;
        self.errors = 0;
        self.interval_ok = 0;
        self.interval_errors = 0;
        if let Some(s) = self.samples.as_mut() {
            s.clear();
        }
    }
}

/// Percentiles of a histogram in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The figures of one run against one target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub target: String,
    pub queries: u64,
    pub errors: u64,
    pub seconds: f64,
    pub qps: f64,
    pub latency: Latency,
    /// Proxy CPU seconds used during the run (when a PID was given).
    pub proxy_cpu_seconds: Option<f64>,
    pub last_error: Option<String>,
}

impl Summary {
    pub fn cpu_per_100k(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_seconds?;
        (self.queries > 0).then(|| cpu * 100_000.0 / self.queries as f64)
    }

    pub fn queries_per_cpu_second(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_seconds?;
        (cpu > 0.0).then(|| self.queries as f64 / cpu)
    }
}

/// Merges task stats into one histogram and counters.
pub fn merge(tasks: &[Arc<Mutex<TaskStats>>]) -> (Histogram<u64>, u64, u64, Option<String>) {
    let mut h = histogram();
    let (mut ok, mut err) = (0, 0);
    let mut last = None;
    for t in tasks {
        let t = t.lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.add(&t.total);
        ok += t.ok;
        err += t.errors;
        if t.last_error.is_some() {
            last = t.last_error.clone();
        }
    }
    (h, ok, err, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_a_known_distribution() {
        let s = TaskStats::new(false);
        let mut t = s.lock().unwrap();
        // 1..=10000 µs uniformly: p50 ≈ 5000, p99 ≈ 9900, max 10000.
        for us in 1..=10_000u64 {
            t.record(us, true, 0);
        }
        let l = Latency::of(&t.total);
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.002;
        assert!(near(l.p50_us, 5000), "{l:?}");
        assert!(near(l.p90_us, 9000), "{l:?}");
        assert!(near(l.p99_us, 9900), "{l:?}");
        assert!(near(l.p999_us, 9990), "{l:?}");
        assert!(near(l.max_us, 10_000), "{l:?}");
        assert!((l.mean_us - 5000.5).abs() < 10.0, "{l:?}");
    }

    #[test]
    fn errors_do_not_enter_the_latency_histogram() {
        let s = TaskStats::new(true);
        let mut t = s.lock().unwrap();
        t.record(100, true, 0);
        t.record(5_000_000, false, 1);
        assert_eq!((t.ok, t.errors), (1, 1));
        assert_eq!(Latency::of(&t.total).max_us, 100);
        assert_eq!(t.samples.as_ref().map(Vec::len), Some(2));
    }
}
