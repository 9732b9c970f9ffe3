//! Drives many connections on few threads: closed loop (each connection
//! back to back) or open loop (a fixed total rate; latency counts from the
//! moment a query was due, so a stall shows up in the figures instead of
//! silently lowering the load). Several targets = fleet mode.

use crate::client::Client;
use crate::stats::{merge, Latency, Summary, TaskStats};
use crate::workload::{Shape, Worker};
use crate::BenchError;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run; also what a coordinator sends its agents.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Opts {
    pub targets: Vec<String>,
    pub user: String,
    pub password: String,
    pub db: Option<String>,
    pub connections: u32,
    pub duration: Duration,
    pub warmup: Duration,
    /// Total queries per second (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    pub shape: Shape,
    /// Print a progress line every second on stderr (never on an agent).
    #[serde(skip)]
    pub progress: bool,
    /// Keep every sample (timelines).
    pub keep_samples: bool,
    /// Connection `i` goes to target `(i + target_offset) % targets`: an
    /// agent's connections continue the fleet-wide round robin where the
    /// previous agent's stopped.
    pub target_offset: u32,
}

pub struct Outcome {
    pub per_target: Vec<Summary>,
    pub total: Summary,
    /// The histograms behind the summaries, for exact merging elsewhere.
    pub per_target_histograms: Vec<Histogram<u64>>,
    pub total_histogram: Histogram<u64>,
    /// (ms since the measured phase began, latency µs, ok)
    pub samples: Vec<(u32, u32, bool)>,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Shared {
    phase: AtomicU8,
    measure_start: Mutex<Instant>,
}

/// Open-loop send times, shared by every connection: whichever connection
/// is free takes the next one. A connection that is still busy when its
/// time comes makes the query wait, and that wait counts (coordinated
/// omission is not hidden).
type Tickets = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>;

/// Hands out one send time every `1 / rate` seconds from a plain thread.
/// tokio's timer rounds every sleep up to the next millisecond, which at
/// the rates measured here would both add up to a millisecond to every
/// latency and bunch the sends onto millisecond ticks; `thread::sleep`
/// wakes within tens of microseconds.
fn pacer(rate: f64, start: Instant, shared: Arc<Shared>) -> Tickets {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gap = Duration::from_secs_f64(1.0 / rate);
    std::thread::spawn(move || {
        let mut next = start;
        while shared.phase.load(Ordering::Relaxed) != STOP {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            // Every send time that is due, late ones included.
            let now = Instant::now();
            while next <= now {
                if tx.send(next).is_err() {
                    return;
                }
                next += gap;
            }
        }
    });
    Arc::new(tokio::sync::Mutex::new(rx))
}

async fn connection(
    target: String,
    opts: Arc<Opts>,
    idx: u32,
    stats: Arc<Mutex<TaskStats>>,
    shared: Arc<Shared>,
    tickets: Option<Tickets>,
) {
    let mut worker: Option<Worker> = None;
    loop {
        let phase = shared.phase.load(Ordering::Relaxed);
        if phase == STOP {
            return;
        }
        if worker.is_none() {
            let t = Instant::now();
            let made = async {
                // Token workloads read the token from OK packets.
                let extra = if opts.shape.workload.carries_token() {
                    concord_protocol::consts::cap::SESSION_TRACK
                } else {
                    0
                };
                let c = Client::connect_caps(
                    &target,
                    &opts.user,
                    &opts.password,
                    opts.db.as_deref(),
                    extra,
                )
                .await?;
                Worker::new(c, opts.shape, u64::from(idx) * 7919 + 1).await
            }
            .await;
            match made {
                Ok(w) => worker = Some(w),
                Err(e) => {
                    if phase == MEASURE {
                        let at = ms_since(&shared);
                        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                        s.record(t.elapsed().as_micros() as u64, false, at);
                        s.last_error = Some(format!("connect: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(w) = worker.as_mut() else { continue };
        let intended = match &tickets {
            Some(t) => match t.lock().await.recv().await {
                Some(at) => at,
                None => return,
            },
            None => Instant::now(),
        };
        let r = w.step().await;
        let latency = intended.elapsed();
        if shared.phase.load(Ordering::Relaxed) == MEASURE {
            let at = ms_since(&shared);
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.record(latency.as_micros() as u64, r.is_ok(), at);
            if let Err(e) = &r {
                s.last_error = Some(e.to_string());
            }
        }
        if let Err(e) = r {
            if !matches!(e, BenchError::Server { .. }) {
                worker = None;
            }
        }
    }
}

fn ms_since(shared: &Shared) -> u32 {
    let start = *shared
        .measure_start
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX)
}

pub async fn run(opts: Opts) -> Result<Outcome, BenchError> {
    if opts.targets.is_empty() {
        return Err(BenchError::Usage("no target".into()));
    }
    let opts = Arc::new(opts);
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(if opts.warmup.is_zero() {
            MEASURE
        } else {
            WARMUP
        }),
        measure_start: Mutex::new(Instant::now()),
    });
    let tickets = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| pacer(r, Instant::now(), shared.clone()));
    let mut stats: Vec<(usize, Arc<Mutex<TaskStats>>)> = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..opts.connections {
        let ti = (i.wrapping_add(opts.target_offset) as usize) % opts.targets.len();
        let s = TaskStats::new(opts.keep_samples);
        stats.push((ti, s.clone()));
        tasks.push(tokio::spawn(connection(
            opts.targets[ti].clone(),
            opts.clone(),
            i,
            s,
            shared.clone(),
            tickets.clone(),
        )));
    }
    if !opts.warmup.is_zero() {
        tokio::time::sleep(opts.warmup).await;
        for (_, s) in &stats {
            s.lock().unwrap_or_else(|p| p.into_inner()).reset();
        }
        *shared
            .measure_start
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        shared.phase.store(MEASURE, Ordering::Relaxed);
    } else {
        *shared
            .measure_start
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    let measured = Instant::now();
    let deadline = measured + opts.duration;
    let mut tick = 1u64;
    while Instant::now() < deadline {
        let until = (measured + Duration::from_secs(tick)).min(deadline);
        tokio::time::sleep_until(until.into()).await;
        if opts.progress {
            crate::report::progress(
                measured.elapsed(),
                &stats.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
            );
        }
        tick += 1;
    }
    shared.phase.store(STOP, Ordering::Relaxed);
    let seconds = measured.elapsed().as_secs_f64();
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let summarize = |name: String, group: Vec<Arc<Mutex<TaskStats>>>| {
        let (h, ok, errors, last_error) = merge(&group);
        let summary = Summary {
            target: name,
            queries: ok,
            errors,
            seconds,
            qps: ok as f64 / seconds.max(1e-9),
            latency: Latency::of(&h),
            proxy_cpu_seconds: None,
            last_error,
        };
        (summary, h)
    };
    let (per_target, per_target_histograms) = opts
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            summarize(
                t.clone(),
                stats
                    .iter()
                    .filter(|(ti, _)| *ti == i)
                    .map(|(_, s)| s.clone())
                    .collect(),
            )
        })
        .unzip();
    let (total, total_histogram) = summarize(
        opts.targets.join(","),
        stats.iter().map(|(_, s)| s.clone()).collect(),
    );
    let mut samples = Vec::new();
    if opts.keep_samples {
        for (_, s) in &stats {
            if let Some(v) = s.lock().unwrap_or_else(|p| p.into_inner()).samples.take() {
                samples.extend(v);
            }
        }
    }
    Ok(Outcome {
        per_target,
        total,
        per_target_histograms,
        total_histogram,
        samples,
    })
}
