//! The same workload against several targets, in interleaved rounds
//! (A B C A B C ...) so every target sees the same machine noise, with the
//! proxies' CPU time per query read from `/proc`. Targets: the backend
//! directly, concord (started by the tool or given), HAProxy in `mode tcp`
//! (started by the tool), and any other address.

use crate::procstat::cpu_seconds;
use crate::runner::{self, Opts};
use crate::stats::Summary;
use crate::BenchError;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One thing to benchmark.
pub struct Target {
    pub name: String,
    pub addr: String,
    pub pid: Option<u32>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Target {
    /// `name=host:port[,pid=N]` or `host:port`.
    pub fn parse(spec: &str) -> Result<Target, BenchError> {
        let (name, rest) = match spec.split_once('=') {
            Some((n, r)) if !n.contains(':') => (n.to_string(), r),
            _ => (spec.to_string(), spec),
        };
        let mut parts = rest.split(',');
        let addr = parts.next().unwrap_or_default().to_string();
        let mut pid = None;
        for p in parts {
            match p.split_once('=') {
                Some(("pid", v)) => {
                    pid = Some(
                        v.parse()
                            .map_err(|_| BenchError::Usage(format!("bad pid in {spec:?}")))?,
                    );
                }
                _ => {
                    return Err(BenchError::Usage(format!(
                        "unknown option {p:?} in target {spec:?}"
                    )))
                }
            }
        }
        if !addr.contains(':') {
            return Err(BenchError::Usage(format!(
                "target {spec:?}: expected host:port"
            )));
        }
        Ok(Target {
            name,
            addr,
            pid,
            child: None,
            _dir: None,
        })
    }

    pub fn plain(name: &str, addr: &str) -> Target {
        Target {
            name: name.into(),
            addr: addr.into(),
            pid: None,
            child: None,
            _dir: None,
        }
    }

    /// Starts HAProxy in `mode tcp` in front of `backend`.
    pub async fn start_haproxy(backend: &str) -> Result<Target, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("concord-bench-haproxy")
            .tempdir()?;
        let port = crate::ports::free_port();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\nlisten mysql\n  bind 127.0.0.1:{port}\n  server db {backend}\n"
            ),
        )?;
        let bin = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
            .unwrap_or("haproxy");
        let log = std::fs::File::create(dir.path().join("haproxy.log"))?;
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                BenchError::Setup(format!(
                    "cannot start haproxy ({bin}): {e}; install the haproxy package"
                ))
            })?;
        let addr = format!("127.0.0.1:{port}");
        if let Err(e) = wait_port(&addr, Duration::from_secs(10)).await {
            let log = std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default();
            return Err(BenchError::Setup(format!("{e}; haproxy said: {log}")));
        }
        Ok(Target {
            name: "haproxy".into(),
            addr,
            pid: Some(child.id()),
            child: Some(child),
            _dir: Some(dir),
        })
    }

    /// Starts a one-node concord in front of `backend`.
    pub async fn start_concord(
        bin: &PathBuf,
        backend: &str,
        user: &str,
        password: &str,
    ) -> Result<Target, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("concord-bench-node")
            .tempdir()?;
        let free_port = crate::ports::free_port;
        let (port, http, raft) = (free_port(), free_port(), free_port());
        let cfg = dir.path().join("concord.toml");
        std::fs::write(
            &cfg,
            format!(
                "[node]\ndata_dir = \"{}\"\n[cluster]\nraft_addr = \"127.0.0.1:{raft}\"\n[listener]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"\"\n[http]\naddr = \"127.0.0.1:{http}\"\n[log]\nlevel = \"warn\"\n[[users]]\nname = \"{user}\"\npassword = \"{password}\"\n[[backends]]\nname = \"db1\"\naddr = \"{backend}\"\nrole = \"primary\"\n[monitor]\nuser = \"{user}\"\npassword = \"{password}\"\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("concord.log"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                BenchError::Setup(format!(
                    "cannot start {}: {e} (build it: cargo build --release)",
                    bin.display()
                ))
            })?;
        let t = Target {
            name: "concord".into(),
            addr: format!("127.0.0.1:{port}"),
            pid: Some(child.id()),
            child: Some(child),
            _dir: Some(dir),
        };
        wait_ready(http, Duration::from_secs(30)).await?;
        Ok(t)
    }
}

async fn wait_port(addr: &str, within: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{addr} did not accept connections"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits for concord's /readyz to say 200.
async fn wait_ready(http_port: u16, within: Duration) -> Result<(), BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await {
            let _ = s
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup("concord did not become ready".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per target, the median round and all rounds. The median is by QPS in a
/// closed loop; in an open loop every round runs at the same rate, so it
/// is by p99, the figure an open loop is run for.
pub struct Compared {
    pub target: String,
    pub median: Summary,
    pub rounds: Vec<Summary>,
}

pub async fn compare(
    targets: &[Target],
    base: &Opts,
    rounds: u32,
) -> Result<Vec<Compared>, BenchError> {
    let mut all: Vec<Vec<Summary>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, t) in targets.iter().enumerate() {
            let mut opts = base.clone();
            opts.targets = vec![t.addr.clone()];
            let cpu0 = t.pid.and_then(cpu_seconds);
            let out = runner::run(opts).await?;
            let cpu1 = t.pid.and_then(cpu_seconds);
            let mut s = out.total;
            s.target = t.name.clone();
            s.proxy_cpu_seconds = match (cpu0, cpu1) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            crate::report::note(&format!(
                "round {round} {:<10} {:>9.0} qps  p99 {:.3} ms  proxy cpu {}",
                t.name,
                s.qps,
                s.latency.p99_us as f64 / 1000.0,
                s.proxy_cpu_seconds
                    .map_or("-".into(), |c| format!("{c:.2}s"))
            ));
            all[i].push(s);
        }
    }
    Ok(targets
        .iter()
        .zip(all)
        .map(|(t, mut rs)| {
            let mut sorted = rs.clone();
            if base.rate.is_some() {
                sorted.sort_by_key(|s| s.latency.p99_us);
            } else {
                sorted.sort_by(|a, b| a.qps.total_cmp(&b.qps));
            }
            let median = sorted.get(sorted.len() / 2).cloned().unwrap_or_default();
            rs.shrink_to_fit();
            Compared {
                target: t.name.clone(),
                median,
                rounds: rs,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn parses_targets() {
        let t = Target::parse("proxysql=127.0.0.1:6033,pid=42").unwrap();
        assert_eq!(
            (t.name.as_str(), t.addr.as_str(), t.pid),
            ("proxysql", "127.0.0.1:6033", Some(42))
        );
        let t = Target::parse("127.0.0.1:3306").unwrap();
        assert_eq!(t.addr, "127.0.0.1:3306");
        assert!(Target::parse("x=nohostport").is_err());
        assert!(Target::parse("x=1.2.3.4:5,cpu=3").is_err());
    }
}
