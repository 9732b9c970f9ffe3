//! `concord-bench run | mock-server | compare | timeline` — see `--help`.

use clap::{Args, Parser, Subcommand};
use concord_bench::compare::{self, Target};
use concord_bench::report;
use concord_bench::runner::{self, Opts};
use concord_bench::workload::{self, Shape, Workload};
use concord_bench::{agent, mock, procstat, timeline, BenchError};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "concord-bench",
    version,
    about = "MySQL-protocol load generator and proxy benchmark harness"
)]
struct Cli {
    /// Tokio worker threads for the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a workload against one target or a fleet, from this process or
    /// from agents on several hosts (`--agents`).
    Run(RunArgs),
    /// Wait for a coordinator (`run --agents`) and run its workload from
    /// this host.
    Agent {
        #[arg(long, default_value = "0.0.0.0:7070")]
        listen: String,
        /// Refuse coordinators that do not send this token.
        #[arg(long, env = "CONCORD_BENCH_AGENT_TOKEN")]
        token: Option<String>,
        /// Exit after one run (a Kubernetes Job's pod then completes).
        #[arg(long)]
        once: bool,
    },
    /// A minimal, fast MySQL server for measuring a proxy's own cost.
    MockServer {
        #[arg(long, default_value = "127.0.0.1:3399")]
        listen: String,
        /// Accept only this user (with --password); any login otherwise.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password: Option<String>,
    },
    /// The same workload against several targets, interleaved rounds.
    Compare(CompareArgs),
    /// QPS / errors / p99 per 100 ms while something happens.
    Timeline(TimelineArgs),
    /// Open N logged-in connections and hold them idle; report the
    /// proxy's resident memory per connection.
    Connections {
        #[arg(long, default_value = "127.0.0.1:3306")]
        target: String,
        #[arg(long, default_value = "root")]
        user: String,
        #[arg(long, default_value = "")]
        password: String,
        #[arg(long, default_value_t = 10000)]
        count: u32,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// The proxy whose RSS to measure.
        #[arg(long)]
        proxy_pid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct Load {
    /// host:port; repeat for fleet mode (connections spread over targets).
    #[arg(long = "target", default_value = "127.0.0.1:3306")]
    targets: Vec<String>,
    #[arg(long, default_value = "root")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Database to log in to (none by default).
    #[arg(long)]
    db: Option<String>,
    #[arg(long, default_value_t = 16)]
    connections: u32,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Total target rate (open loop, queries/s); closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "point-select")]
    workload: Workload,
    #[arg(long, default_value_t = 4)]
    tables: u32,
    #[arg(long, default_value_t = 10000)]
    table_size: u32,
    /// Create and fill the tables first (through the first target).
    #[arg(long)]
    setup: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

impl Load {
    fn shape(&self) -> Shape {
        Shape {
            workload: self.workload,
            tables: self.tables,
            table_size: self.table_size,
        }
    }

    fn opts(&self) -> Opts {
        Opts {
            targets: self.targets.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            db: self.db.clone(),
            connections: self.connections,
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            shape: self.shape(),
            progress: !self.json,
            keep_samples: false,
            target_offset: 0,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    load: Load,
    /// Proxy process ids (comma-separated): report queries per proxy
    /// CPU-second and the cores 1M QPS would take.
    #[arg(long, value_delimiter = ',')]
    proxy_pid: Vec<u32>,
    #[arg(long)]
    extrapolate: bool,
    /// Agents (host:port, comma-separated) that each run this whole
    /// workload (connections and rate are per agent), started together;
    /// their histograms are merged exactly.
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// The token the agents were started with.
    #[arg(long, env = "CONCORD_BENCH_AGENT_TOKEN")]
    agent_token: Option<String>,
    /// With --agents --json: every successful query's latency (µs), to
    /// check the merge. Large.
    #[arg(long)]
    return_samples: bool,
}

#[derive(Args)]
struct CompareArgs {
    #[command(flatten)]
    load: Load,
    /// The backend, measured directly as the baseline.
    #[arg(long)]
    direct: Option<String>,
    /// Start the built-in mock server as the backend.
    #[arg(long)]
    mock_backend: bool,
    /// Start a one-node concord in front of the backend.
    #[arg(long)]
    start_concord: bool,
    /// The concord binary (default: next to this one).
    #[arg(long)]
    concord_bin: Option<PathBuf>,
    /// Start HAProxy (mode tcp) in front of the backend.
    #[arg(long)]
    haproxy: bool,
    /// Another proxy: name=host:port[,pid=N]; repeatable.
    #[arg(long = "proxy")]
    proxies: Vec<String>,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long)]
    extrapolate: bool,
}

#[derive(Args)]
struct TimelineArgs {
    #[command(flatten)]
    load: Load,
    /// When to run --exec, from the start of the measured phase.
    #[arg(long, value_parser = humantime::parse_duration)]
    at: Option<Duration>,
    /// Shell command run at --at (e.g. "kill -9 1234").
    #[arg(long)]
    exec: Option<String>,
    #[arg(long, default_value = "timeline.csv")]
    csv: PathBuf,
    #[arg(long, default_value = "timeline.svg")]
    svg: PathBuf,
    #[arg(long, default_value = "concord-bench timeline")]
    title: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report::note(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report::note(&format!("concord-bench: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<(), BenchError> {
    match cmd {
        Cmd::Run(a) if !a.agents.is_empty() => run_agents(a).await,
        Cmd::Run(a) => run(a).await,
        Cmd::Agent {
            listen,
            token,
            once,
        } => {
            let l = tokio::net::TcpListener::bind(&listen).await?;
            agent::serve(l, token, once).await
        }
        Cmd::MockServer {
            listen,
            user,
            password,
        } => {
            let l = tokio::net::TcpListener::bind(&listen).await?;
            report::note(&format!("mock MySQL server on {listen}"));
            mock::serve(l, Arc::new(mock::MockOpts { user, password })).await;
            Ok(())
        }
        Cmd::Compare(a) => compare(a).await,
        Cmd::Connections {
            target,
            user,
            password,
            count,
            hold,
            proxy_pid,
            json,
        } => connections(&target, &user, &password, count, hold, proxy_pid, json).await,
        Cmd::Timeline(a) => timeline(a).await,
    }
}

async fn setup(load: &Load, target: &str) -> Result<(), BenchError> {
    report::note(&format!(
        "setting up {} tables x {} rows on {target} ...",
        load.tables, load.table_size
    ));
    let mut c = concord_bench::client::Client::connect(
        target,
        &load.user,
        &load.password,
        load.db.as_deref(),
    )
    .await?;
    workload::setup(&mut c, &load.shape()).await
}

/// Queries per proxy CPU-second and what 1M QPS would take.
fn extrapolation(queries: u64, cpu: f64) -> serde_json::Value {
    let per_cpu = if cpu > 0.0 { queries as f64 / cpu } else { 0.0 };
    let cores = if per_cpu > 0.0 {
        1_000_000.0 / per_cpu
    } else {
        f64::INFINITY
    };
    json!({
        "queries_per_proxy_cpu_second": per_cpu,
        "cores_for_1m_qps": cores,
        "note": "extrapolation: measured proxy CPU per query, scaled linearly to 1,000,000 QPS",
    })
}

async fn run(a: RunArgs) -> Result<(), BenchError> {
    if a.load.setup {
        setup(&a.load, &a.load.targets[0]).await?;
    }
    let cpu0: Vec<Option<f64>> = a
        .proxy_pid
        .iter()
        .map(|p| procstat::cpu_seconds(*p))
        .collect();
    let out = runner::run(a.load.opts()).await?;
    let cpu1: Vec<Option<f64>> = a
        .proxy_pid
        .iter()
        .map(|p| procstat::cpu_seconds(*p))
        .collect();
    let cpu: f64 = cpu0
        .iter()
        .zip(&cpu1)
        .filter_map(|(x, y)| Some((*y)? - (*x)?))
        .sum();
    let mut total = out.total.clone();
    if !a.proxy_pid.is_empty() {
        total.proxy_cpu_seconds = Some(cpu);
    }
    let extra =
        (a.extrapolate && !a.proxy_pid.is_empty()).then(|| extrapolation(total.queries, cpu));
    if a.load.json {
        report::json(&json!({ "targets": out.per_target, "total": total, "extrapolation": extra }));
    } else {
        let mut rows = out.per_target.clone();
        if rows.len() > 1 {
            total.target = "TOTAL".into();
            rows.push(total.clone());
        } else if let Some(r) = rows.first_mut() {
            r.proxy_cpu_seconds = total.proxy_cpu_seconds;
        }
        report::table(&rows);
        if let Some(e) = extra {
            report::line(&format!(
                "extrapolation (not a measurement): {:.0} queries per proxy CPU-second -> {:.1} cores for 1,000,000 QPS",
                e["queries_per_proxy_cpu_second"].as_f64().unwrap_or(0.0),
                e["cores_for_1m_qps"].as_f64().unwrap_or(f64::INFINITY)
            ));
        }
    }
    Ok(())
}

async fn run_agents(a: RunArgs) -> Result<(), BenchError> {
    if !a.proxy_pid.is_empty() || a.extrapolate {
        return Err(BenchError::Usage(
            "--proxy-pid and --extrapolate measure local processes; they do not combine with --agents"
                .into(),
        ));
    }
    if a.load.setup {
        setup(&a.load, &a.load.targets[0]).await?;
    }
    let mut opts = a.load.opts();
    opts.progress = false;
    report::note(&format!(
        "{} agents x {} connections over {} targets ...",
        a.agents.len(),
        opts.connections,
        opts.targets.len()
    ));
    let m = agent::coordinate(&a.agents, &opts, a.agent_token, a.return_samples).await?;
    if a.load.json {
        let agents: Vec<serde_json::Value> = m
            .agents
            .iter()
            .map(|(addr, r)| json!({ "agent": addr, "total": r.total, "targets": r.per_target }))
            .collect();
        report::json(&json!({
            "agents": agents,
            "targets": m.per_target,
            "total": m.total,
            "histogram_v2_hex": agent::encode(&m.histogram)?,
            "samples": m.samples,
        }));
    } else {
        let mut rows: Vec<_> = m
            .agents
            .iter()
            .map(|(addr, r)| {
                let mut s = r.total.clone();
                s.target = format!("agent {addr}");
                s
            })
            .collect();
        rows.extend(m.per_target.iter().cloned());
        rows.push(m.total.clone());
        report::table(&rows);
        report::line(
            "TOTAL: queries and QPS add up over agents; percentiles come from the merged histogram",
        );
    }
    Ok(())
}

async fn compare(a: CompareArgs) -> Result<(), BenchError> {
    let mut _mock = None;
    let backend = match (&a.direct, a.mock_backend) {
        (Some(d), false) => d.clone(),
        (None, true) => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?.to_string();
            _mock = Some(tokio::spawn(mock::serve(
                l,
                Arc::new(mock::MockOpts::default()),
            )));
            addr
        }
        _ => {
            return Err(BenchError::Usage(
                "give exactly one of --direct host:port or --mock-backend".into(),
            ))
        }
    };
    let mut targets = vec![Target::plain("direct", &backend)];
    if a.start_concord {
        let bin = match &a.concord_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(|d| d.join("concord"))
                .ok_or_else(|| {
                    BenchError::Usage("cannot locate the concord binary; pass --concord-bin".into())
                })?,
        };
        targets.push(Target::start_concord(&bin, &backend, &a.load.user, &a.load.password).await?);
    }
    if a.haproxy {
        targets.push(Target::start_haproxy(&backend).await?);
    }
    for p in &a.proxies {
        targets.push(Target::parse(p)?);
    }
    if a.load.setup && !a.mock_backend {
        setup(&a.load, &backend).await?;
    }
    let mut opts = a.load.opts();
    opts.progress = false;
    let results = compare::compare(&targets, &opts, a.rounds).await?;
    if a.load.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                json!({
                    "target": r.target,
                    "median": r.median,
                    "cpu_seconds_per_100k": r.median.cpu_per_100k(),
                    "queries_per_proxy_cpu_second": r.median.queries_per_cpu_second(),
                    "rounds": r.rounds,
                })
            })
            .collect();
        report::json(&json!({ "backend": backend, "rounds": a.rounds, "targets": v }));
    } else {
        report::line(&format!(
            "median of {} interleaved rounds per target:",
            a.rounds
        ));
        report::table(&results.iter().map(|r| r.median.clone()).collect::<Vec<_>>());
        if a.extrapolate {
            for r in &results {
                if let (Some(cpu), true) = (r.median.proxy_cpu_seconds, r.median.queries > 0) {
                    let e = extrapolation(r.median.queries, cpu);
                    report::line(&format!(
                        "{}: extrapolation (not a measurement): {:.1} cores for 1,000,000 QPS",
                        r.target,
                        e["cores_for_1m_qps"].as_f64().unwrap_or(f64::INFINITY)
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn connections(
    target: &str,
    user: &str,
    password: &str,
    count: u32,
    hold: Duration,
    pid: Option<u32>,
    json: bool,
) -> Result<(), BenchError> {
    let rss0 = pid.and_then(procstat::rss_kib);
    let started = std::time::Instant::now();
    let mut conns = Vec::with_capacity(count as usize);
    let mut failed = 0u32;
    let mut last_error = None;
    // Log in 200 at a time.
    let mut i = 0;
    while i < count {
        let n = (count - i).min(200);
        let batch: Vec<_> = (0..n)
            .map(|_| {
                let (t, u, p) = (target.to_string(), user.to_string(), password.to_string());
                async move { concord_bench::client::Client::connect(&t, &u, &p, None).await }
            })
            .collect();
        for r in futures_join(batch).await {
            match r {
                Ok(c) => conns.push(c),
                Err(e) => {
                    failed += 1;
                    last_error = Some(e.to_string());
                }
            }
        }
        i += n;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let rss1 = pid.and_then(procstat::rss_kib);
    // Every connection still works after idling.
    let mut alive = 0u32;
    for c in conns.iter_mut() {
        if c.ping().await.is_ok() {
            alive += 1;
        }
    }
    let per = match (rss0, rss1) {
        (Some(a), Some(b)) if !conns.is_empty() => {
            Some((b.saturating_sub(a)) as f64 / conns.len() as f64)
        }
        _ => None,
    };
    let v = json!({
        "requested": count,
        "connected": conns.len(),
        "failed": failed,
        "alive_after_hold": alive,
        "connect_seconds": connect_secs,
        "proxy_rss_kib_before": rss0,
        "proxy_rss_kib_after": rss1,
        "proxy_rss_kib_per_connection": per,
        "last_error": last_error,
    });
    if json {
        report::json(&v);
    } else {
        report::line(&format!("{v:#}"));
    }
    Ok(())
}

/// Awaits a batch of futures concurrently.
async fn futures_join<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

async fn timeline(a: TimelineArgs) -> Result<(), BenchError> {
    if a.load.setup {
        setup(&a.load, &a.load.targets[0]).await?;
    }
    let mut opts = a.load.opts();
    opts.keep_samples = true;
    opts.warmup = Duration::ZERO;
    let runner = tokio::spawn(runner::run(opts));
    if let (Some(at), Some(cmd)) = (a.at, a.exec.clone()) {
        tokio::time::sleep(at).await;
        report::note(&format!("at {at:?}: {cmd}"));
        let st = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .await?;
        if !st.success() {
            report::note(&format!("the command exited with {st}"));
        }
    }
    let out = runner
        .await
        .map_err(|e| BenchError::Setup(format!("load task failed: {e}")))??;
    let total_ms = a.load.duration.as_millis() as u64;
    let b = timeline::buckets(&out.samples, total_ms);
    timeline::write_csv(&a.csv, &b)?;
    timeline::write_svg(&a.svg, &b, &a.title, a.at.map(|d| d.as_millis() as u64))?;
    if a.load.json {
        report::json(&json!({ "total": out.total, "buckets": b }));
    } else {
        report::table(&[out.total]);
        report::line(&format!(
            "wrote {} and {}",
            a.csv.display(),
            a.svg.display()
        ));
    }
    Ok(())
}
