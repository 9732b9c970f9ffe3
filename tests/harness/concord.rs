//! Real `concord` processes for tests, configured through a small builder
//! that writes the TOML file a user would write.

use crate::bin;
use crate::ports::free_port;
use crate::PASSWORD;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ConcordConfig {
    pub node_id: u64,
    pub port: u16,
    pub admin_port: u16,
    pub http_port: u16,
    pub raft_port: u16,
    /// IP the client, admin and HTTP listeners bind.
    pub ip: String,
    /// The network-namespace host the process runs in, if any.
    pub host: Option<crate::netns::Host>,
    /// IP the Raft listener binds (and outgoing peer connections use).
    pub raft_ip: String,
    /// Address peers use for this node (default: raft_ip:raft_port).
    pub advertise: Option<String>,
    /// (node id, advertised raft address) of every member, this node
    /// included; empty for a one-node cluster.
    pub peers: Vec<(u64, String)>,
    /// Join an existing fleet instead of bootstrapping (`cluster.join`).
    pub join_fleet: bool,
    /// (name, addr, role) of each backend.
    pub backends: Vec<(String, String, Option<String>)>,
    /// (backend name, address this node connects to it at).
    pub connect_addrs: Vec<(String, String)>,
    /// Extra keys for `[listener]`.
    pub listener_extra: String,
    /// Extra TOML appended at the end (whole sections).
    pub extra: String,
    /// Extra keys for `[cluster]`.
    pub cluster_extra: String,
    /// `[[users]]` entries; default: app with the test password.
    pub users: String,
    /// `[node] data_dir`; default: `data` in the node's temp dir.
    pub data_dir: Option<std::path::PathBuf>,
    /// `CONCORD_TEST_HOOKS` for the process: test-only switches that
    /// remove a protection (see `config/src/testhooks.rs`).
    pub test_hooks: String,
}

impl ConcordConfig {
    /// One backend, the primary.
    pub fn single(addr: &str) -> Self {
        Self::new(vec![("db1".into(), addr.into(), Some("primary".into()))])
    }

    pub fn new(backends: Vec<(String, String, Option<String>)>) -> Self {
        ConcordConfig {
            node_id: 1,
            port: free_port(),
            admin_port: free_port(),
            http_port: free_port(),
            raft_port: free_port(),
            ip: "127.0.0.1".into(),
            host: None,
            raft_ip: "127.0.0.1".into(),
            advertise: None,
            peers: Vec::new(),
            join_fleet: false,
            backends,
            connect_addrs: Vec::new(),
            listener_extra: String::new(),
            cluster_extra: String::new(),
            extra: String::new(),
            users: format!("[[users]]\nname = \"app\"\npassword = \"{PASSWORD}\"\n"),
            data_dir: None,
            test_hooks: String::new(),
        }
    }

    /// Runs this node inside a network-namespace host: every listener
    /// and outgoing connection uses the host's address.
    pub fn on_host(&mut self, host: &crate::netns::Host) {
        self.ip = host.ip.clone();
        self.raft_ip = host.ip.clone();
        self.host = Some(host.clone());
    }

    pub fn to_toml(&self, data_dir: &std::path::Path) -> String {
        let ip = &self.ip;
        let mut t = format!(
            "[node]\nid = {}\ndata_dir = \"{}\"\n\n[listener]\naddr = \"{ip}:{}\"\n{}\n\n[admin]\naddr = \"{ip}:{}\"\nuser = \"admin\"\npassword = \"{PASSWORD}\"\n\n[http]\naddr = \"{ip}:{}\"\n\n[monitor]\nuser = \"monitor\"\npassword = \"{PASSWORD}\"\n\n",
            self.node_id,
            data_dir.display(),
            self.port,
            self.listener_extra,
            self.admin_port,
            self.http_port,
        );
        t.push_str(&format!(
            "[cluster]\nraft_addr = \"{}:{}\"\nsecret = \"test-secret\"\n",
            self.raft_ip, self.raft_port
        ));
        if let Some(a) = &self.advertise {
            t.push_str(&format!("advertise_addr = \"{a}\"\n"));
        }
        if self.join_fleet {
            t.push_str("join = true\n");
        }
        t.push_str(&self.cluster_extra);
        if !self.peers.is_empty() {
            let peers: Vec<String> = self
                .peers
                .iter()
                .map(|(id, a)| format!("{id} = \"{a}\""))
                .collect();
            t.push_str(&format!("peers = {{ {} }}\n", peers.join(", ")));
        }
        t.push('\n');
        t.push_str(&self.users);
        t.push('\n');
        for (name, addr, role) in &self.backends {
            t.push_str(&format!(
                "[[backends]]\nname = \"{name}\"\naddr = \"{addr}\"\n"
            ));
            if let Some(r) = role {
                t.push_str(&format!("role = \"{r}\"\n"));
            }
            if let Some((_, c)) = self.connect_addrs.iter().find(|(n, _)| n == name) {
                t.push_str(&format!("connect_addr = \"{c}\"\n"));
            }
            t.push('\n');
        }
        merge_sections(&t, &self.extra)
    }
}

/// Merges `extra` into `base` section by section (keys in `extra` win),
/// so a test can add `[monitor] interval` without a duplicate table.
fn merge_sections(base: &str, extra: &str) -> String {
    let mut b: toml::Table = base.parse().expect("harness config");
    let e: toml::Table = extra
        .parse()
        .unwrap_or_else(|err| panic!("test config snippet: {err}\n{extra}"));
    for (k, v) in e {
        match (b.get_mut(&k), v) {
            (Some(toml::Value::Table(bt)), toml::Value::Table(et)) => {
                for (kk, vv) in et {
                    bt.insert(kk, vv);
                }
            }
            (_, v) => {
                b.insert(k, v);
            }
        }
    }
    toml::to_string(&b).expect("serialize config")
}

/// One running `concord` node.
pub struct Concord {
    pub cfg: ConcordConfig,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Concord {
    /// Writes the config, starts the process and waits until `/readyz`
    /// says it can route writes.
    pub async fn start(cfg: ConcordConfig) -> Concord {
        let mut c = Self::start_unready(cfg).await;
        c.wait_ready().await;
        c
    }

    /// Starts the process and waits only for its listener (for fleets
    /// whose nodes become ready together).
    pub async fn start_unready(cfg: ConcordConfig) -> Concord {
        let dir = tempfile::Builder::new()
            .prefix("concord-node-")
            .tempdir()
            .unwrap();
        let mut c = Concord {
            cfg,
            dir,
            child: None,
        };
        c.spawn();
        c.wait_listening().await;
        c
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = self.http_get("/readyz").await {
                return;
            }
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    panic!("concord exited ({st}) while starting:\n{}", self.logs());
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "concord never became ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// GET on the node's HTTP port: (status, body).
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((self.cfg.ip.as_str(), self.cfg.http_port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// The samples of counter or gauge `name` on `/metrics`: (labels, value).
    pub async fn metric_sum(&self, name: &str) -> Vec<(String, f64)> {
        let body = self
            .http_get("/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                let labels = k.strip_prefix(name)?;
                if !(labels.is_empty() || labels.starts_with('{')) {
                    return None;
                }
                Some((labels.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// A logged-in admin-port connection.
    pub async fn admin(&self) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.cfg.ip.clone())
            .tcp_port(self.cfg.admin_port)
            .user(Some("admin"))
            .pass(Some(PASSWORD))
            .prefer_socket(false);
        mysql_async::Conn::new(opts)
            .await
            .unwrap_or_else(|e| panic!("admin login: {e}\n{}", self.logs()))
    }

    /// Runs an admin statement; rows as maps of column name to text.
    /// The pin reasons `SHOW SESSIONS` gives session `id` ("" if none).
    pub async fn pinned(&self, id: u32) -> String {
        self.admin_query("SHOW SESSIONS")
            .await
            .unwrap()
            .into_iter()
            .find(|r| r["id"].as_deref() == Some(id.to_string().as_str()))
            .and_then(|r| r["pinned"].clone())
            .unwrap_or_default()
    }

    pub async fn admin_query(
        &self,
        sql: &str,
    ) -> Result<Vec<std::collections::BTreeMap<String, Option<String>>>, mysql_async::Error> {
        use mysql_async::prelude::Queryable;
        let mut c = self.admin().await;
        let rows: Vec<mysql_async::Row> = c.query(sql).await?;
        let _ = c.disconnect().await;
        Ok(rows
            .into_iter()
            .map(|r| {
                let cols: Vec<String> = r
                    .columns_ref()
                    .iter()
                    .map(|c| c.name_str().to_string())
                    .collect();
                cols.into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let v = r
                            .get_opt::<Option<String>, _>(i)
                            .and_then(|v| v.ok())
                            .flatten();
                        (n, v)
                    })
                    .collect()
            })
            .collect())
    }

    /// Waits until `SHOW BACKENDS` says each named backend serves reads.
    pub async fn wait_readable(&self, names: &[&str]) {
        crate::wait_for(
            "replicas to become readable",
            Duration::from_secs(20),
            || async {
                let rows = self.admin_query("SHOW BACKENDS").await.ok()?;
                names
                    .iter()
                    .all(|n| {
                        rows.iter().any(|r| {
                            r["name"].as_deref() == Some(*n)
                                && r["readable"].as_deref() == Some("yes")
                        })
                    })
                    .then_some(())
            },
        )
        .await;
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("concord.toml")
    }

    /// The node's `[node] data_dir`.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.cfg
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    pub fn write_config(&self) {
        std::fs::write(self.config_path(), self.cfg.to_toml(&self.data_dir())).unwrap();
    }

    fn spawn(&mut self) {
        self.write_config();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("concord.log"))
            .unwrap();
        let mut cmd = match &self.cfg.host {
            Some(h) => h.command(bin::workspace_bin("concord")),
            None => Command::new(bin::workspace_bin("concord")),
        };
        bin::die_with_parent(&mut cmd);
        // `[log] level` from the config, unless CONCORD_TEST_LOG overrides.
        match std::env::var("CONCORD_TEST_LOG") {
            Ok(v) => cmd.env("RUST_LOG", v),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        cmd.env("CONCORD_TEST_HOOKS", &self.cfg.test_hooks);
        let child = cmd
            .arg("--config")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start concord");
        self.child = Some(child);
    }

    pub async fn wait_listening(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect((self.cfg.ip.as_str(), self.cfg.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    panic!("concord exited ({st}) while starting:\n{}", self.logs());
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "concord did not listen:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.cfg.ip, self.cfg.port)
    }

    pub fn opts_for(&self, user: &str, pass: &str) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.cfg.ip.clone())
            .tcp_port(self.cfg.port)
            .user(Some(user))
            .pass(Some(pass))
            .prefer_socket(false)
    }

    /// Options for the default `app` user.
    pub fn opts(&self) -> mysql_async::OptsBuilder {
        self.opts_for("app", PASSWORD)
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts())
            .await
            .unwrap_or_else(|e| panic!("connect through concord: {e}\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("concord.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_listening().await;
    }

    /// Resident set size of the process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        self.pid().map_or(0, rss_kib_of)
    }
}

/// Resident set size of process `pid` in KiB (0 if unknown).
pub fn rss_kib_of(pid: u32) -> u64 {
    concord_bench::procstat::rss_kib(pid).unwrap_or(0)
}

impl Drop for Concord {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "--- concord node {} log (last 60 lines) ---\n{}",
                self.cfg.node_id,
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        self.kill();
    }
}
