//! Real MariaDB servers for tests. A template data directory (system
//! tables plus the test accounts) is built once per machine under
//! `target/` and copied for each server, so a server starts in ~1 s.

use crate::bin;
use crate::ports::free_port;
use crate::PASSWORD;
use mysql_async::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const TEMPLATE_VERSION: &str = "v4";

fn bootstrap_sql() -> String {
    format!(
        "FLUSH PRIVILEGES;
CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('{PASSWORD}');
CREATE OR REPLACE USER 'root'@'10.%' IDENTIFIED BY '{PASSWORD}';
GRANT ALL ON *.* TO 'root'@'10.%' WITH GRANT OPTION;
CREATE OR REPLACE USER 'app'@'%' IDENTIFIED BY '{PASSWORD}';
GRANT ALL ON *.* TO 'app'@'%';
CREATE OR REPLACE USER 'monitor'@'%' IDENTIFIED BY '{PASSWORD}';
GRANT ALL ON *.* TO 'monitor'@'%';
CREATE OR REPLACE USER 'repl'@'%' IDENTIFIED BY '{PASSWORD}';
GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO 'repl'@'%';
CREATE DATABASE test;
"
    )
}

/// The template data dir, built on first use (file-locked across
/// concurrent test processes).
fn template() -> &'static PathBuf {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let target = bin::target_profile_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap();
        let dir = target.join(format!("mariadb-template-{TEMPLATE_VERSION}"));
        let lock = File::create(target.join("mariadb-template.lock")).unwrap();
        lock.lock().unwrap();
        if dir.join("READY").exists() {
            return dir;
        }
        let tmp = target.join(format!("mariadb-template-{TEMPLATE_VERSION}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let mut cmd = Command::new(bin::install_db());
        cmd.args([
            "--no-defaults",
            &format!("--datadir={}", tmp.display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
        if bin::is_root() {
            cmd.arg("--user=root");
        }
        let out = cmd.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(bin::mariadbd());
        cmd.args([
            "--no-defaults",
            &format!("--datadir={}", tmp.display()),
            "--bootstrap",
            "--skip-networking",
            "--log-error=bootstrap.err",
        ]);
        if bin::is_root() {
            cmd.arg("--user=root");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .expect("run mariadbd --bootstrap");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(bootstrap_sql().as_bytes()).unwrap();
        }
        let st = child.wait().unwrap();
        assert!(st.success(), "mariadbd --bootstrap failed");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
        File::create(dir.join("READY")).unwrap();
        dir
    })
}

/// One running `mariadbd`.
pub struct MariaDb {
    pub port: u16,
    /// The address it listens on: loopback, or its host's in a namespace.
    pub ip: String,
    host: Option<crate::netns::Host>,
    pub server_id: u32,
    pub name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl MariaDb {
    /// Starts a fresh server and waits until it accepts logins.
    pub async fn start(name: &str, server_id: u32) -> MariaDb {
        Self::start_with(name, server_id, &[]).await
    }

    pub async fn start_with(name: &str, server_id: u32, extra: &[&str]) -> MariaDb {
        Self::start_on(name, server_id, extra, None).await
    }

    /// Like [`MariaDb::start_with`], inside a network-namespace host.
    pub async fn start_on(
        name: &str,
        server_id: u32,
        extra: &[&str],
        host: Option<&crate::netns::Host>,
    ) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix(&format!("concord-{name}-"))
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let st = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(&data)
            .status()
            .unwrap();
        assert!(st.success(), "copying the MariaDB template failed");
        let mut db = MariaDb {
            port: free_port(),
            ip: host.map_or_else(|| "127.0.0.1".to_string(), |h| h.ip.clone()),
            host: host.cloned(),
            server_id,
            name: name.to_string(),
            dir,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        db.spawn();
        db.wait_ready().await;
        db
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let data = self.data_dir();
        let tmp = self.dir.path().join("tmp");
        let _ = std::fs::create_dir_all(&tmp);
        let mut cmd = match &self.host {
            Some(h) => h.command(bin::mariadbd()),
            None => Command::new(bin::mariadbd()),
        };
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={}", self.ip))
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("pid").display()
            ))
            // Its own: a server's temporary-table files in a shared /tmp
            // can go with another server's cleanup.
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!(
                "--log-error={}",
                self.dir.path().join("error.log").display()
            ))
            .arg(format!("--server-id={}", self.server_id))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .arg("--log-slave-updates=1")
            .arg("--binlog-format=ROW")
            .arg("--gtid-strict-mode=1")
            .arg("--skip-name-resolve")
            .arg("--character-set-server=utf8mb4")
            .arg("--collation-server=utf8mb4_general_ci")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--sync-binlog=0")
            .arg("--performance-schema=OFF")
            .arg("--max-connections=1000")
            .arg("--max-allowed-packet=256M")
            .arg("--local-infile=1")
            .arg("--secure-file-priv=")
            .arg("--skip-slave-start")
            .arg("--relay-log=relay")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if bin::is_root() {
            cmd.arg("--user=root");
        }
        bin::die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("start mariadbd"));
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Options for a root login over TCP.
    pub fn opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.ip.clone())
            .tcp_port(self.port)
            .user(Some("root"))
            .pass(Some(PASSWORD))
            .prefer_socket(false)
            .into()
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {} ({}): {e}\n{}",
                    self.name,
                    self.addr(),
                    self.error_log_tail()
                )
            })
    }

    /// A connection, or None when the server does not answer in 2 s.
    pub async fn try_conn(&self) -> Option<mysql_async::Conn> {
        tokio::time::timeout(Duration::from_secs(2), mysql_async::Conn::new(self.opts()))
            .await
            .ok()?
            .ok()
    }

    async fn wait_ready(&mut self) {
        let opts = self.opts();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = mysql_async::Conn::new(opts.clone()).await {
                if c.query_drop("SELECT 1").await.is_ok() {
                    let _ = c.disconnect().await;
                    return;
                }
            }
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    panic!(
                        "mariadbd {} exited ({st}) while starting:\n{}",
                        self.name,
                        self.error_log_tail()
                    );
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mariadbd {} did not become ready:\n{}",
                self.name,
                self.error_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last 30 lines of the server's error log, or, after a crash,
    /// the crash report from its first line ("got signal N").
    pub fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines
            .iter()
            .position(|l| l.contains("got signal"))
            .map_or(lines.len().saturating_sub(30), |i| i.saturating_sub(5));
        lines[from..lines.len().min(from + 80)].join("\n")
    }

    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {}: {e}", self.name));
        let _ = c.disconnect().await;
    }

    pub async fn query<T: FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        let mut c = self.conn().await;
        let r = c
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {}: {e}", self.name));
        let _ = c.disconnect().await;
        r
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9: the process dies without any shutdown work.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Clean shutdown (SIGTERM), waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// Makes this server a GTID replica of `source_addr` (host:port).
    pub async fn replicate_from(&self, source_addr: &str) {
        let (host, port) = source_addr.rsplit_once(':').unwrap();
        self.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={port}, MASTER_USER='repl', \
             MASTER_PASSWORD='{PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, \
             MASTER_HEARTBEAT_PERIOD=0.5"
        ))
        .await;
        self.exec("SET GLOBAL read_only = 1").await;
        self.exec("START SLAVE").await;
    }

    /// This server's `@@gtid_current_pos`.
    pub async fn gtid_pos(&self) -> String {
        let v: Vec<String> = self.query("SELECT @@gtid_current_pos").await;
        v.into_iter().next().unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} error log ---\n{}", self.name, self.error_log_tail());
        }
        self.kill();
    }
}

/// A primary and its GTID replicas.
pub struct Topology {
    pub primary: MariaDb,
    pub replicas: Vec<MariaDb>,
}

impl Topology {
    /// `[[backends]]` for concord: db1 the primary, db2, db3, ... the
    /// replicas in order.
    pub fn backends(&self) -> Vec<(String, String, Option<String>)> {
        std::iter::once((
            "db1".to_string(),
            self.primary.addr(),
            Some("primary".to_string()),
        ))
        .chain(self.replicas.iter().enumerate().map(|(i, r)| {
            (
                format!("db{}", i + 2),
                r.addr(),
                Some("replica".to_string()),
            )
        }))
        .collect()
    }

    /// Starts `1 + replicas` servers and wires replication.
    pub async fn start(replicas: usize) -> Topology {
        Topology::start_with(replicas, &[]).await
    }

    /// [`Topology::start`] with extra `mariadbd` options on every server.
    pub async fn start_with(replicas: usize, extra: &[&str]) -> Topology {
        let primary = MariaDb::start_with("primary", 1, extra).await;
        let mut rs = Vec::new();
        for i in 0..replicas {
            let r = MariaDb::start_with(&format!("replica{}", i + 1), 2 + i as u32, extra).await;
            r.replicate_from(&primary.addr()).await;
            rs.push(r);
        }
        let t = Topology {
            primary,
            replicas: rs,
        };
        t.wait_replicated().await;
        t
    }

    /// Waits until every replica has applied the primary's current GTIDs.
    pub async fn wait_replicated(&self) {
        let pos = self.primary.gtid_pos().await;
        for r in &self.replicas {
            if pos.is_empty() {
                continue;
            }
            let mut c = r.conn().await;
            let res: Option<i64> = c
                .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
                .await
                .unwrap();
            assert_eq!(res, Some(0), "replica {} did not reach {pos}", r.name);
            let _ = c.disconnect().await;
        }
    }
}
