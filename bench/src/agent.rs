//! Load from many hosts. `concord-bench agent` runs on each load host and
//! waits for a coordinator (`concord-bench run --agents a1,a2,...`). The
//! coordinator sends every agent the same workload; when all of them have
//! said they are ready it tells them to go, so the runs start within one
//! round trip of each other. Each agent returns its HDR histograms
//! serialized (V2 format) and the coordinator adds them up: merged
//! percentiles are exact, never averages of percentiles.
//!
//! Wire: one JSON object per line over TCP.
//!
//! ```text
//! coordinator -> agent   {"run": Spec}
//! agent -> coordinator   "ready" | {"error": "..."}
//! coordinator -> agent   "go"
//! agent -> coordinator   {"result": AgentReport} | {"error": "..."}
//! ```
//!
//! The spec carries the database password in clear: run agents on a
//! network you trust, and give them `--token` so that only your
//! coordinator can start load through them.

use crate::report;
use crate::runner::{self, Opts, Outcome};
use crate::stats::{histogram, Latency, Summary};
use crate::BenchError;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A line longer than this is refused (a result with every sample of a
/// long run can be large; nothing else comes near).
const MAX_LINE: u64 = 256 << 20;
/// How long an agent waits for "go" after saying it is ready.
const GO_WITHIN: Duration = Duration::from_secs(60);
/// Upper bounds a spec must respect, so a typo cannot wedge an agent.
const MAX_CONNECTIONS: u32 = 1_000_000;
const MAX_RUN: Duration = Duration::from_secs(24 * 3600);

/// The workload one agent runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub token: Option<String>,
    /// The run, as the coordinator was given it: connections and rate
    /// per agent, this agent's `target_offset`, `keep_samples` to return
    /// every latency too (to check merges).
    pub opts: Opts,
}

impl Spec {
    /// The runner's options, or why the spec cannot run.
    fn opts(&self) -> Result<Opts, String> {
        let o = &self.opts;
        if o.targets.is_empty() {
            return Err("no target".into());
        }
        if o.connections == 0 || o.connections > MAX_CONNECTIONS {
            return Err(format!(
                "connections must be 1..={MAX_CONNECTIONS}, not {}",
                o.connections
            ));
        }
        if o.duration.is_zero() || o.duration.saturating_add(o.warmup) > MAX_RUN {
            return Err("duration must be above 0 and the run at most 24 h".into());
        }
        if o.rate.is_some_and(|r| !r.is_finite() || r < 0.0) {
            return Err("rate must be a positive number".into());
        }
        Ok(Opts {
            progress: false,
            ..o.clone()
        })
    }
}

/// What one agent measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentReport {
    pub total: Summary,
    pub per_target: Vec<Summary>,
    /// Hex of the V2-serialized histogram behind `total`.
    pub histogram: String,
    /// The same for each of `per_target`.
    pub target_histograms: Vec<String>,
    /// Latencies (µs) of the successful queries, when the spec asked.
    pub samples: Option<Vec<u32>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Msg {
    Run(Box<Spec>),
    Ready,
    Go,
    Result(Box<AgentReport>),
    Error(String),
}

/// A histogram as hex of its V2 serialization.
pub fn encode(h: &Histogram<u64>) -> Result<String, BenchError> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| BenchError::Setup(format!("cannot serialize a histogram: {e:?}")))?;
    Ok(hex::encode(buf))
}

/// Decodes a histogram an agent sent.
pub fn decode(s: &str) -> Result<Histogram<u64>, BenchError> {
    let bytes = hex::decode(s).map_err(|e| BenchError::Setup(format!("bad histogram: {e}")))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| BenchError::Setup(format!("bad histogram: {e:?}")))
}

fn report_of(out: Outcome, with_samples: bool) -> Result<AgentReport, BenchError> {
    Ok(AgentReport {
        histogram: encode(&out.total_histogram)?,
        target_histograms: out
            .per_target_histograms
            .iter()
            .map(encode)
            .collect::<Result<_, _>>()?,
        samples: with_samples.then(|| {
            out.samples
                .iter()
                .filter(|(_, _, ok)| *ok)
                .map(|(_, us, _)| *us)
                .collect()
        }),
        total: out.total,
        per_target: out.per_target,
    })
}

async fn read_msg<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Msg, BenchError> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(BenchError::Setup("the peer closed the connection".into()));
    }
    if line.last() != Some(&b'\n') {
        return Err(BenchError::Setup(format!(
            "a message over {MAX_LINE} bytes or cut short"
        )));
    }
    serde_json::from_slice(&line).map_err(|e| BenchError::Setup(format!("bad message: {e}")))
}

async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, m: &Msg) -> Result<(), BenchError> {
    let mut line =
        serde_json::to_vec(m).map_err(|e| BenchError::Setup(format!("cannot encode: {e}")))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

/// Serves coordinators one at a time; with `once`, returns after the
/// first run (so that a Kubernetes Job's pod completes).
pub async fn serve(l: TcpListener, token: Option<String>, once: bool) -> Result<(), BenchError> {
    report::note(&format!("agent listening on {}", l.local_addr()?));
    loop {
        let (sock, peer) = l.accept().await?;
        match session(sock, token.as_deref()).await {
            Ok(ran) => {
                report::note(&format!("agent: run for {peer} done"));
                if ran && once {
                    return Ok(());
                }
            }
            Err(e) => report::note(&format!("agent: {peer}: {e}")),
        }
    }
}

/// One coordinator's session; whether a run took place.
async fn session(sock: TcpStream, token: Option<&str>) -> Result<bool, BenchError> {
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let spec = match read_msg(&mut r).await {
        Ok(Msg::Run(s)) => s,
        // A bad spec (an unknown workload) fails here too: say why.
        Err(e) => {
            let _ = write_msg(&mut w, &Msg::Error(e.to_string())).await;
            return Err(e);
        }
        Ok(_) => {
            write_msg(&mut w, &Msg::Error("expected a run".into())).await?;
            return Ok(false);
        }
    };
    if token.is_some() && spec.token.as_deref() != token {
        write_msg(&mut w, &Msg::Error("wrong or missing --agent-token".into())).await?;
        return Ok(false);
    }
    let opts = match spec.opts() {
        Ok(o) => o,
        Err(e) => {
            write_msg(&mut w, &Msg::Error(e)).await?;
            return Ok(false);
        }
    };
    write_msg(&mut w, &Msg::Ready).await?;
    match tokio::time::timeout(GO_WITHIN, read_msg(&mut r)).await {
        Ok(Ok(Msg::Go)) => {}
        Ok(Ok(_)) => return Err(BenchError::Setup("expected go".into())),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(BenchError::Setup("no go within 60 s".into())),
    }
    let reply = match runner::run(opts)
        .await
        .and_then(|o| report_of(o, spec.opts.keep_samples))
    {
        Ok(rep) => Msg::Result(Box::new(rep)),
        Err(e) => Msg::Error(e.to_string()),
    };
    write_msg(&mut w, &reply).await?;
    Ok(true)
}

/// The merged outcome of a coordinated run.
pub struct Merged {
    /// (agent address, what it reported)
    pub agents: Vec<(String, AgentReport)>,
    pub per_target: Vec<Summary>,
    pub total: Summary,
    pub histogram: Histogram<u64>,
    pub samples: Option<Vec<u32>>,
}

struct Link {
    addr: String,
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Link {
    fn fail(&self, e: impl std::fmt::Display) -> BenchError {
        BenchError::Setup(format!("agent {}: {e}", self.addr))
    }
}

/// Runs `opts` on every agent (each agent runs all of it: connections and
/// rate are per agent), started together, and merges what they measured.
/// Agent `i`'s connections continue the round robin over the targets where
/// agent `i - 1`'s stopped, so connections spread evenly over a fleet.
pub async fn coordinate(
    agents: &[String],
    opts: &Opts,
    token: Option<String>,
    return_samples: bool,
) -> Result<Merged, BenchError> {
    let mut links = Vec::new();
    // Agents started beside the coordinator (a Kubernetes Job) may not be
    // listening yet: keep trying for a minute.
    let connect_by = tokio::time::Instant::now() + GO_WITHIN;
    for (i, addr) in agents.iter().enumerate() {
        let sock = loop {
            let tried =
                tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await;
            match tried {
                Ok(Ok(s)) => break s,
                _ if tokio::time::Instant::now() < connect_by => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Err(e)) => return Err(BenchError::Setup(format!("agent {addr}: {e}"))),
                Err(_) => {
                    return Err(BenchError::Setup(format!(
                        "agent {addr}: no connection within 10 s"
                    )))
                }
            }
        };
        let _ = sock.set_nodelay(true);
        let (r, w) = sock.into_split();
        let mut link = Link {
            addr: addr.clone(),
            r: BufReader::new(r),
            w,
        };
        let spec = Spec {
            token: token.clone(),
            opts: Opts {
                target_offset: (i as u32).wrapping_mul(opts.connections),
                keep_samples: return_samples,
                progress: false,
                ..opts.clone()
            },
        };
        write_msg(&mut link.w, &Msg::Run(Box::new(spec)))
            .await
            .map_err(|e| link.fail(e))?;
        links.push(link);
    }
    for l in &mut links {
        match read_msg(&mut l.r).await {
            Ok(Msg::Ready) => {}
            Ok(Msg::Error(e)) => return Err(l.fail(e)),
            Ok(_) => return Err(l.fail("unexpected reply")),
            Err(e) => return Err(l.fail(e)),
        }
    }
    for l in &mut links {
        write_msg(&mut l.w, &Msg::Go).await.map_err(|e| l.fail(e))?;
    }
    let deadline = tokio::time::Instant::now() + opts.warmup + opts.duration + GO_WITHIN;
    let mut reports = Vec::new();
    for l in &mut links {
        let m = tokio::time::timeout_at(deadline, read_msg(&mut l.r))
            .await
            .map_err(|_| l.fail("no result in time"))?;
        match m {
            Ok(Msg::Result(rep)) => reports.push((l.addr.clone(), *rep)),
            Ok(Msg::Error(e)) => return Err(l.fail(e)),
            Ok(_) => return Err(l.fail("unexpected reply")),
            Err(e) => return Err(l.fail(e)),
        }
    }
    merge(opts, reports)
}

/// Adds the agents' histograms and counters up.
fn merge(opts: &Opts, agents: Vec<(String, AgentReport)>) -> Result<Merged, BenchError> {
    let mut total_h = histogram();
    let mut target_h: Vec<Histogram<u64>> = opts.targets.iter().map(|_| histogram()).collect();
    let mut per_target: Vec<Summary> = opts
        .targets
        .iter()
        .map(|t| Summary {
            target: t.clone(),
            ..Summary::default()
        })
        .collect();
    let mut total = Summary {
        target: "TOTAL".into(),
        ..Summary::default()
    };
    // Samples only when every agent sent them: a partial set would not
    // add up to the histogram.
    let mut samples: Option<Vec<u32>> = agents
        .iter()
        .all(|(_, r)| r.samples.is_some())
        .then(Vec::new);
    for (addr, rep) in &agents {
        let bad = |e: BenchError| BenchError::Setup(format!("agent {addr}: {e}"));
        add(&mut total_h, &decode(&rep.histogram).map_err(bad)?)?;
        fold(&mut total, &rep.total);
        if rep.per_target.len() != per_target.len()
            || rep.target_histograms.len() != per_target.len()
        {
            return Err(BenchError::Setup(format!(
                "agent {addr}: per-target figures do not match the targets"
            )));
        }
        for (i, s) in rep.per_target.iter().enumerate() {
            fold(&mut per_target[i], s);
            add(
                &mut target_h[i],
                &decode(&rep.target_histograms[i]).map_err(bad)?,
            )?;
        }
        if let (Some(all), Some(mine)) = (samples.as_mut(), rep.samples.as_ref()) {
            all.extend_from_slice(mine);
        }
    }
    total.latency = Latency::of(&total_h);
    for (s, h) in per_target.iter_mut().zip(&target_h) {
        s.latency = Latency::of(h);
    }
    Ok(Merged {
        agents,
        per_target,
        total,
        histogram: total_h,
        samples,
    })
}

fn add(into: &mut Histogram<u64>, h: &Histogram<u64>) -> Result<(), BenchError> {
    into.add(h)
        .map_err(|e| BenchError::Setup(format!("cannot merge histograms: {e:?}")))
}

/// Counters add up; rates add up (agents run side by side); the run took
/// as long as its slowest agent.
fn fold(into: &mut Summary, s: &Summary) {
    into.queries += s.queries;
    into.errors += s.errors;
    into.qps += s.qps;
    into.seconds = into.seconds.max(s.seconds);
    if s.last_error.is_some() {
        into.last_error = s.last_error.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_survives_the_wire_exactly() {
        let mut h = histogram();
        for v in [1u64, 7, 350, 351, 9_999, 1_234_567, 59_000_000] {
            h.record_n(v, v % 5 + 1).unwrap();
        }
        let back = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
    }

    #[test]
    fn a_spec_is_checked_before_it_runs() {
        let line = |workload: &str, connections: u32, rate: &str| {
            format!(
                "{{\"token\":null,\"opts\":{{\"targets\":[\"127.0.0.1:1\"],\"user\":\"u\",\"password\":\"\",\"db\":null,\"connections\":{connections},\"duration\":{{\"secs\":1,\"nanos\":0}},\"warmup\":{{\"secs\":0,\"nanos\":0}},\"rate\":{rate},\"shape\":{{\"workload\":\"{workload}\",\"tables\":1,\"table_size\":10}},\"keep_samples\":false,\"target_offset\":0}}}}"
            )
        };
        let spec = |l: String| serde_json::from_str::<Spec>(&l).map_err(|e| e.to_string());
        assert!(spec(line("point-select", 4, "null"))
            .unwrap()
            .opts()
            .is_ok());
        assert!(spec(line("nope", 4, "null"))
            .unwrap_err()
            .contains("unknown workload"));
        let s = spec(line("point-select", 0, "null")).unwrap();
        assert!(s.opts().unwrap_err().contains("connections"));
        let s = spec(line("point-select", 4, "-1.0")).unwrap();
        assert!(s.opts().unwrap_err().contains("rate"));
        // What the coordinator sends is what an agent reads.
        let o = s.opts;
        let back = spec(
            serde_json::to_string(&Spec {
                token: None,
                opts: o.clone(),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(format!("{:?}", back.opts), format!("{o:?}"));
    }

    #[tokio::test]
    async fn garbage_gets_an_error_and_the_agent_serves_on() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let agent = tokio::spawn(serve(l, Some("t".into()), false));
        for (send, want) in [
            (&b"not json\n"[..], Some("bad message")),
            (b"\"go\"\n", Some("expected a run")),
            (
                b"{\"run\":{\"token\":\"x\",\"opts\":{\"targets\":[],\"user\":\"u\",\"password\":\"\",\"db\":null,\"connections\":1,\"duration\":{\"secs\":1,\"nanos\":0},\"warmup\":{\"secs\":0,\"nanos\":0},\"rate\":null,\"shape\":{\"workload\":\"point-select\",\"tables\":1,\"table_size\":1},\"keep_samples\":false,\"target_offset\":0}}}\n",
                Some("agent-token"),
            ),
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(send).await.unwrap();
            let mut got = String::new();
            let _ = s.read_to_string(&mut got).await;
            match want {
                Some(w) => assert!(got.contains(w), "{got}"),
                None => assert!(got.is_empty(), "{got}"),
            }
        }
        assert!(!agent.is_finished());
        agent.abort();
    }
}
