//! Hardening: failed-login throttling, 10 000 connections at once, clients
//! that stop reading, backends that return garbage, stall, slow down or
//! reset, kill -9 of a node under load, an unusable data dir, and secrets
//! kept out of logs and admin output.

use concord_protocol::err::ErrPacket;
use harness::raw::{find_err, read_until_closed, RawClient};
use harness::{Concord, ConcordConfig, Fleet, MariaDb, Relay, Topology, PASSWORD};
use mysql_async::prelude::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

async fn single(listener_extra: &str) -> (MariaDb, Concord) {
    let db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.listener_extra = listener_extra.to_string();
    let node = Concord::start(cfg).await;
    (db, node)
}

/// The first packet a fresh connection receives (greeting or ERR).
async fn first_packet(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut head = [0u8; 4];
    tokio::time::timeout(within, s.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut body = vec![0u8; len];
    tokio::time::timeout(within, s.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(body)
}

async fn still_serves(node: &Concord) {
    let mut c = node.conn().await;
    let v: Option<i64> = c.query_first("SELECT 41 + 1").await.unwrap();
    assert_eq!(v, Some(42));
}

/// Open client connections as the node counts them.
async fn client_connections(node: &Concord) -> f64 {
    let (_, text) = node.http_get("/metrics").await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("concord_client_connections "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(-1.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_source_address() {
    let (_db, node) = single("max_auth_failures_per_minute = 3").await;
    for _ in 0..3 {
        let e = mysql_async::Conn::new(node.opts_for("app", "wrong-password"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("1045"), "{e}");
    }
    // Now even the right password is refused from this address, before
    // any handshake, with 1129 naming the key.
    let mut s = TcpStream::connect(node.addr()).await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .unwrap();
    let e = find_err(&got).expect("an error packet");
    assert_eq!(e.code, 1129, "{}", e.message);
    assert!(
        e.message.contains("listener.max_auth_failures_per_minute"),
        "{}",
        e.message
    );
    assert!(mysql_async::Conn::new(node.opts()).await.is_err());
    // Another source address is not affected.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = node.addr().parse().unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let greeting = first_packet(&mut s, Duration::from_secs(5)).await.unwrap();
    assert_eq!(greeting[0], 10, "a v10 greeting, not an error");
    // 60 guesses at once from a third address, every one greeted before
    // any of them fails: the limit is checked again right before each
    // password check, so no more than 3 get to guess.
    let addr: SocketAddr = node.addr().parse().unwrap();
    let mut greeted = Vec::new();
    for _ in 0..60 {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let mut s = concord_protocol::PacketStream::new(sock.connect(addr).await.unwrap());
        let g = s.read_packet().await.unwrap();
        let hs = concord_protocol::handshake::HandshakeV10::decode(&g.payload).unwrap();
        greeted.push((s, hs.scramble));
    }
    let guesses = greeted.into_iter().map(|(mut s, scramble)| {
        tokio::spawn(async move {
            let resp = concord_protocol::handshake::HandshakeResponse {
                capabilities: concord_protocol::consts::cap::PROTOCOL_41
                    | concord_protocol::consts::cap::SECURE_CONNECTION
                    | concord_protocol::consts::cap::PLUGIN_AUTH,
                max_packet: 1 << 24,
                collation: 45,
                user: b"app".to_vec(),
                auth_response: concord_protocol::auth::native_scramble(b"wrong", &scramble),
                database: None,
                auth_plugin: Some(b"mysql_native_password".to_vec()),
                attrs: vec![],
            };
            let mut b = bytes::BytesMut::new();
            resp.encode(&mut b);
            let mut seq = 1;
            s.send(&mut seq, &b).await.unwrap();
            let p = s.read_packet().await.unwrap();
            ErrPacket::decode(&p.payload).unwrap().code
        })
    });
    let mut guessed = 0;
    for t in guesses.collect::<Vec<_>>() {
        match t.await.unwrap() {
            1045 => guessed += 1,
            code => assert_eq!(code, 1129),
        }
    }
    assert!(
        guessed <= 3,
        "{guessed} parallel password guesses got through"
    );
    let (_, metrics) = node.http_get("/metrics").await.unwrap();
    assert!(
        metrics.contains(&format!("concord_auth_failures_total {}", 3 + guessed)),
        "{metrics}"
    );
    assert!(
        metrics.contains("concord_auth_throttled_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_at_once_stay_within_the_caps() {
    let _ = rlimit::increase_nofile_limit(40_000);
    let (_db, node) = single("max_connections = 2000\nhandshake_timeout = \"3s\"").await;
    let pid = node.pid().unwrap();
    let (rss0, fds0) = (node.rss_kib(), open_fds(pid));
    // Sample the node's descriptors and memory while the burst lands.
    let stop = Arc::new(AtomicBool::new(false));
    let max_fds = Arc::new(AtomicU64::new(0));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_fds, max_rss) = (stop.clone(), max_fds.clone(), max_rss.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                max_fds.fetch_max(open_fds(pid) as u64, Ordering::Relaxed);
                let rss = harness::concord::rss_kib_of(pid);
                max_rss.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let addr: SocketAddr = node.addr().parse().unwrap();
    let t = Instant::now();
    type Outcome = Result<(Vec<u8>, TcpStream), String>;
    let tasks: Vec<tokio::task::JoinHandle<Outcome>> = (0..10_000)
        .map(|_| {
            tokio::spawn(async move {
                let mut s =
                    match tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Err(format!("connect: {e}")),
                        Err(_) => return Err("connect timed out".to_string()),
                    };
                match first_packet(&mut s, Duration::from_secs(20)).await {
                    Some(p) => Ok((p, s)),
                    None => Err("no first packet".to_string()),
                }
            })
        })
        .collect();
    let (mut greeted, mut refused) = (Vec::new(), 0usize);
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((p, s)) if p.starts_with(&[10]) => greeted.push(s),
            Ok((p, _)) if ErrPacket::decode(&p).map(|e| e.code).ok() == Some(1040) => refused += 1,
            Ok((p, _)) => {
                *other
                    .entry(format!("{:?}", ErrPacket::decode(&p)))
                    .or_default() += 1
            }
            Err(e) => *other.entry(e).or_default() += 1,
        }
    }
    let burst = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (max_fds, max_rss) = (
        max_fds.load(Ordering::Relaxed),
        max_rss.load(Ordering::Relaxed),
    );
    println!(
        "10000 connects in {burst:?}: greeted {}, refused with 1040 {refused}, other {other:?}; node fds {fds0} -> max {max_fds}; rss {rss0} -> max {max_rss} KiB",
        greeted.len()
    );
    // The cap filled and turned the rest away with 1040. (What the kernel
    // does with a 10 000-SYN burst beyond the accept queue, e.g. a few
    // connects timing out, is reported above, not asserted.)
    assert!(greeted.len() >= 1900, "only {} greeted", greeted.len());
    assert!(refused >= 5000, "the cap refused only {refused}");
    // Never more than the cap, plus a few: a refusal is written from the
    // accept loop and closed there (a burst of refusals queued as tasks
    // once peaked 1 200 descriptors over the cap in CI).
    assert!(
        max_fds <= fds0 as u64 + 2000 + 200,
        "fds peaked at {max_fds}"
    );
    assert!(max_rss < rss0 + 128 * 1024, "rss peaked at {max_rss} KiB");
    // The silent ones are closed by the handshake timeout; then it serves.
    let mut last = greeted.pop().unwrap();
    assert!(
        read_until_closed(&mut last, Duration::from_secs(10))
            .await
            .is_some(),
        "a connection that never logs in is closed (listener.handshake_timeout)"
    );
    drop(greeted);
    harness::wait_for("sessions closed", Duration::from_secs(15), || async {
        (client_connections(&node).await == 0.0).then_some(())
    })
    .await;
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_bounded_memory() {
    let (_db, node) = single("").await;
    let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, 0).await;
    let rss0 = node.rss_kib();
    // 300 pipelined queries of 1 MiB results each; never read one byte.
    let writer = tokio::spawn(async move {
        let q = b"\x03SELECT REPEAT('x', 1048576)";
        for _ in 0..300 {
            let mut seq = 0;
            c.s.write_packet(&mut seq, q);
        }
        let _ = tokio::time::timeout(Duration::from_secs(8), c.s.flush()).await;
        c
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss1 = node.rss_kib();
    println!("stalled reader: rss {rss0} -> {rss1} KiB");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "rss grew {} KiB",
        rss1.saturating_sub(rss0)
    );
    still_serves(&node).await;
    let c = writer.await.unwrap();
    drop(c);
    harness::wait_for(
        "the stalled session closes",
        Duration::from_secs(10),
        || async { (client_connections(&node).await == 0.0).then_some(()) },
    )
    .await;
}

/// A "server" that answers every connection with bytes that are not MySQL.
async fn garbage_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut n = 0u8;
        while let Ok((mut s, _)) = l.accept().await {
            n = n.wrapping_add(1);
            tokio::spawn(async move {
                // Alternately a lying length header and plain junk.
                let junk: Vec<u8> = if n.is_multiple_of(2) {
                    vec![0xff, 0xff, 0xff, 0x00, 0xde, 0xad, 0xbe, 0xef]
                } else {
                    b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()
                };
                let _ = s.write_all(&junk).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_that_return_garbage_stall_slow_down_or_reset() {
    let topo = Topology::start(1).await;
    let replica_link = Relay::start(&topo.replicas[0].addr()).await;
    let junk = garbage_server().await;
    let mut cfg = ConcordConfig::new(vec![
        ("db1".into(), topo.primary.addr(), Some("primary".into())),
        ("db2".into(), replica_link.addr(), Some("replica".into())),
        ("db3".into(), junk, Some("replica".into())),
    ]);
    cfg.extra =
        "[monitor]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nfailure_threshold = 8\n".into();
    let node = Concord::start(cfg).await;
    let backend_state = |name: &'static str| {
        let node = &node;
        async move {
            let rows = node.admin_query("SHOW BACKENDS").await.ok()?;
            let r = rows
                .into_iter()
                .find(|r| r["name"].as_deref() == Some(name))?;
            r["readable"].clone()
        }
    };
    // Garbage: marked unreadable, never served a read.
    harness::wait_for(
        "db2 readable, db3 down",
        Duration::from_secs(20),
        || async {
            let ok = backend_state("db2").await.as_deref() == Some("yes")
                && backend_state("db3").await.as_deref() == Some("down");
            ok.then_some(())
        },
    )
    .await;
    let mut c = node.conn().await;
    for _ in 0..50 {
        let id: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
        assert!(matches!(id, Some(1) | Some(2)), "{id:?}");
    }

    // Slow: 200 ms each way on the replica link; reads still succeed.
    replica_link.delay(Duration::from_millis(200));
    let t = Instant::now();
    let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
    println!("read with a slow replica link: {:?}", t.elapsed());
    replica_link.delay(Duration::ZERO);
    harness::wait_for(
        "db2 readable after the slow spell",
        Duration::from_secs(20),
        || async { (backend_state("db2").await.as_deref() == Some("yes")).then_some(()) },
    )
    .await;

    // Black hole in the middle of a replica read: a clean error within
    // seconds (not a TCP keepalive's hours), then reads go elsewhere.
    let mut stuck = node.conn().await;
    let q = tokio::spawn(async move {
        let t = Instant::now();
        let r: Result<Option<(u32, i64)>, _> = stuck
            .query_first(
                "SELECT @@server_id, IF(@@server_id = 2, BENCHMARK(30000000, MD5('x')), 0)",
            )
            .await;
        (r.map_err(|e| e.to_string()), t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica_link.black_hole();
    let (r, took) = q.await.unwrap();
    println!("read stuck on a black-holed replica: {r:?} after {took:?}");
    // db2 is the only readable replica, so the read started there (slow on
    // db2 only). Once the health checks call db2 down the wait is cut
    // short, long before TCP would notice; nothing had reached the client,
    // so the read is run again on the primary and succeeds.
    assert_eq!(r, Ok(Some((1, 0))), "re-run on the primary");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        node.logs()
            .lines()
            .any(|l| l.contains("read re-run on the primary") && l.contains("declare it down")),
        "the stall was detected: {}",
        node.logs()
            .lines()
            .filter(|l| l.contains("db2"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    harness::wait_for("db2 down", Duration::from_secs(10), || async {
        (backend_state("db2").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    let mut c = node.conn().await;
    for _ in 0..20 {
        let id: Option<u32> =
            tokio::time::timeout(Duration::from_secs(5), c.query_first("SELECT @@server_id"))
                .await
                .expect("reads do not hang on the black-holed replica")
                .unwrap();
        assert_eq!(id, Some(1), "fallback to the primary");
    }

    // Reset: connections refused and closed; healing brings it back.
    replica_link.cut();
    for _ in 0..20 {
        let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
    }
    replica_link.heal();
    harness::wait_for("db2 readable again", Duration::from_secs(20), || async {
        (backend_state("db2").await.as_deref() == Some("yes")).then_some(())
    })
    .await;
    let logs = node.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_under_load_other_nodes_clients_see_no_error() {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE IF NOT EXISTS test.k (node INT, seq INT, PRIMARY KEY (node, seq))")
        .await;
    let backends = vec![("db1".to_string(), db.addr(), Some("primary".to_string()))];
    let mut fleet = Fleet::start(3, backends, |_, _| {}).await;
    // Kill the leader: the hardest case (an election under load).
    let victim = fleet.leader(Duration::from_secs(20)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, n) in fleet.nodes.iter().enumerate().filter(|(i, _)| *i != victim) {
        let opts = n.opts();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            let (mut ok, mut errors) = (0u32, Vec::new());
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                match c
                    .exec_drop("INSERT INTO test.k VALUES (?, ?)", (i, seq))
                    .await
                {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        // A broken connection fails at once, without
                        // yielding: stop instead of spinning.
                        errors.push(e.to_string());
                        break;
                    }
                }
            }
            (ok, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.nodes[victim].kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let (ok, errors) = w.await.unwrap();
        println!("writer: {ok} ok, {} errors", errors.len());
        assert!(ok > 100, "{ok}");
        assert!(errors.is_empty(), "{errors:?}");
    }
    // The killed node restarts from its data dir and serves again.
    fleet.nodes[victim].restart().await;
    fleet.nodes[victim].wait_ready().await;
    let mut c = fleet.nodes[victim].conn().await;
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM test.k").await.unwrap();
    assert!(n.unwrap_or(0) > 200);
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    // /proc refuses mkdir even for root, unlike a chmod-ed directory.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let cfg = ConcordConfig::single("127.0.0.1:1");
    let text = cfg.to_toml(dir.path()).replace(
        &format!("\"{}\"", dir.path().display()),
        "\"/proc/concord-no-such\"",
    );
    assert!(text.contains("/proc/concord-no-such"), "{text}");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(harness::bin::workspace_bin("concord"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("node.data_dir"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_logs_or_admin_output() {
    let db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.extra = "[log]\nlevel = \"debug\"\n".into();
    let node = Concord::start(cfg).await;
    // A wrong password, then the right one (the test password is also the
    // backend, monitor and admin password here).
    let _ = mysql_async::Conn::new(node.opts_for("app", "wrong")).await;
    let mut c = node.conn().await;
    c.query_drop("SELECT 1").await.unwrap();
    drop(c);
    let mut shown = String::new();
    for q in [
        "SHOW BACKENDS",
        "SHOW CLUSTER",
        "SHOW EVENTS",
        "SHOW SESSIONS",
    ] {
        let rows = node.admin_query(q).await.unwrap();
        shown.push_str(&format!("{rows:?}"));
    }
    for path in [
        "/api/v1/cluster",
        "/api/v1/backends",
        "/api/v1/events",
        "/api/v1/sessions",
        "/metrics",
    ] {
        let (_, body) = node.http_get(path).await.unwrap();
        shown.push_str(&body);
    }
    let logs = node.logs();
    assert!(logs.contains("DEBUG"), "debug logging was on");
    assert!(!logs.contains(PASSWORD), "a password in the log");
    assert!(
        !shown.contains(PASSWORD),
        "a password in admin output: {shown}"
    );
}

/// A tmpfs of `bytes` mounted on a temp dir (unmounted on drop): a disk
/// that really fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `mount`/`umount` as root, else through `sudo -n` (scripts/deps.sh
    /// needs root or sudo too).
    fn privileged(args: &[&str], path: &std::path::Path) -> std::process::ExitStatus {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut cmd = std::process::Command::new(if root { args[0] } else { "sudo" });
        if !root {
            cmd.arg("-n").arg(args[0]);
        }
        cmd.args(&args[1..]).arg(path).status().unwrap()
    }

    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={bytes},mode=1777");
        let st = Self::privileged(&["mount", "-t", "tmpfs", "-o", &size, "tmpfs"], dir.path());
        assert!(
            st.success(),
            "mounting a small tmpfs needs root or passwordless sudo: {st}"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        let mut n = 0u64;
        while f.write_all(&chunk).is_ok() {
            n += 4096;
        }
        let _ = f.sync_all();
        n
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.path().join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Self::privileged(&["umount", "-l"], self.dir.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_writes_and_never_corrupts_the_raft_log() {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE IF NOT EXISTS test.d (id INT PRIMARY KEY)")
        .await;
    let disk = SmallDisk::mount(8 << 20);
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.data_dir = Some(disk.path().join("data"));
    cfg.extra = "[failover]\nwrite_buffer_timeout = \"1s\"\n".into();
    let mut node = Concord::start(cfg).await;
    let mut c = node.conn().await;
    c.query_drop("INSERT INTO test.d VALUES (1)").await.unwrap();
    let filled = disk.fill();
    // Every admin mutation is a Raft entry: they succeed while redb has
    // room in its file, then one fails with the reason.
    let mut last_ok = 0;
    let mut failure = None;
    for i in 1..=5000u32 {
        match node
            .admin_query(&format!("SET BACKEND 'db1' WEIGHT {i}"))
            .await
        {
            Ok(_) => last_ok = i,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let failure = failure.expect("a mutation fails once the disk is full");
    println!("disk filled ({filled} bytes): weight {last_ok} acknowledged, then: {failure}");
    assert!(failure.contains("No space left on device"), "{failure}");
    // The node stays up, refuses writes with the reason, keeps reads.
    assert!(node.is_running());
    // The failed write stops Raft; /readyz follows within moments.
    let body = harness::wait_for(
        "/readyz to say not ready",
        Duration::from_secs(10),
        || async {
            match node.http_get("/readyz").await {
                Some((503, body)) => Some(body),
                _ => None,
            }
        },
    )
    .await;
    assert!(
        body.contains("Raft stopped") && body.contains("node.data_dir"),
        "{body}"
    );
    let e = c
        .query_drop("INSERT INTO test.d VALUES (2)")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1290") && e.contains("Raft stopped"), "{e}");
    // Reads from the primary need this node's lease too (a node that
    // cannot reach Raft cannot know the primary was not fenced), so with
    // no replica to read from they are refused with the same reason.
    let e = c
        .query_drop("SELECT COUNT(*) FROM test.d")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1290") && e.contains("Raft stopped"), "{e}");
    assert!(!node.logs().contains("panicked"));
    // Free the disk and restart from the same data dir: the log is intact
    // and holds every acknowledged entry.
    drop(c);
    disk.free();
    node.restart().await;
    node.wait_ready().await;
    let rows = node.admin_query("SHOW BACKENDS").await.unwrap();
    let weight: u32 = rows[0]["weight"].as_deref().unwrap().parse().unwrap();
    assert!(
        weight == last_ok || weight == last_ok + 1,
        "acknowledged weight {last_ok}, after restart {weight}"
    );
    let mut c = node.conn().await;
    let v: Option<i64> = c.query_first("SELECT COUNT(*) FROM test.d").await.unwrap();
    assert_eq!(v, Some(1), "the refused write did not run");
    c.query_drop("INSERT INTO test.d VALUES (3)").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_caps_tls_per_user_and_idle_timeout() {
    let db = MariaDb::start("primary", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = harness::certs::self_signed(dir.path());
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.listener_extra = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\nidle_timeout = \"2s\"",
        cert.display(),
        key.display()
    );
    cfg.users.push_str(&format!(
        "\n[[users]]\nname = \"capped\"\npassword = \"{PASSWORD}\"\nbackend_user = \"app\"\nmax_connections = 2\n\n[[users]]\nname = \"secure\"\npassword = \"{PASSWORD}\"\nbackend_user = \"app\"\nrequire_tls = true\n"
    ));
    let node = Concord::start(cfg).await;

    // Per-user cap: the third connection of `capped` gets 1226; others
    // are unaffected.
    let a = mysql_async::Conn::new(node.opts_for("capped", PASSWORD))
        .await
        .unwrap();
    let b = mysql_async::Conn::new(node.opts_for("capped", PASSWORD))
        .await
        .unwrap();
    let e = mysql_async::Conn::new(node.opts_for("capped", PASSWORD))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1226") && e.contains("max_connections"), "{e}");
    still_serves(&node).await;
    drop((a, b));
    harness::wait_for(
        "capped slots free again",
        Duration::from_secs(5),
        || async {
            mysql_async::Conn::new(node.opts_for("capped", PASSWORD))
                .await
                .ok()
        },
    )
    .await;

    // TLS per user: refused in clear text, served over TLS.
    let e = mysql_async::Conn::new(node.opts_for("secure", PASSWORD))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1045") && e.contains("TLS"), "{e}");
    let ssl = mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true);
    let mut s = mysql_async::Conn::new(node.opts_for("secure", PASSWORD).ssl_opts(ssl))
        .await
        .unwrap();
    let v: Option<i64> = s.query_first("SELECT 7").await.unwrap();
    assert_eq!(v, Some(7));

    // Idle timeout: a session silent for longer than 2 s is closed.
    let mut idle = node.conn().await;
    idle.query_drop("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        idle.query_drop("SELECT 1").await.is_err(),
        "the idle session was closed"
    );
    assert!(node.logs().contains("listener.idle_timeout"));
    still_serves(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_port_rejects_peers_without_the_secret() {
    let (_db, node) = single("").await;
    let raft = format!("127.0.0.1:{}", node.cfg.raft_port);
    // A well-formed handshake with a wrong MAC, then garbage, then a
    // length header of 60 MiB before authenticating.
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let attempts: Vec<Vec<u8>> = vec![
        frame(br#"{"node_id":9,"nonce":"00","mac":"00"}"#),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        (60u32 << 20).to_be_bytes().to_vec(),
    ];
    for bytes in attempts {
        let mut s = TcpStream::connect(&raft).await.unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut hello).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let rest = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert_eq!(rest.as_deref(), Some(&[][..]), "closed without a reply");
    }
    assert!(
        node.logs().contains("rejected a Raft peer"),
        "{}",
        node.logs()
    );
    // The node still leads its cluster and routes writes.
    let (code, _) = node.http_get("/readyz").await.unwrap();
    assert_eq!(code, 200);
    let mut c = node.conn().await;
    c.query_drop("CREATE TABLE IF NOT EXISTS test.r (id INT)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_buffer_is_bounded_by_count_and_bytes() {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE IF NOT EXISTS test.b (id INT PRIMARY KEY, v TEXT)")
        .await;
    let link = Relay::start(&db.addr()).await;
    let mut cfg = ConcordConfig::single(&link.addr());
    cfg.extra = "[failover]\nautomatic = false\nwrite_buffer_max = 2\nwrite_buffer_bytes = 4096\nwrite_buffer_timeout = \"20s\"\n[pool]\nmin_idle = 0\n".into();
    let node = Concord::start(cfg).await;
    still_serves(&node).await;
    // The primary becomes unreachable: new sessions' writes are held.
    link.cut();
    // Options that make mysql_async skip its own queries at connect (they
    // would be held too and take slots).
    let quiet = || {
        node.opts()
            .max_allowed_packet(Some(16 << 20))
            .wait_timeout(Some(28800))
    };
    // Bytes: with the count far from full, one statement larger than the
    // whole byte budget is refused at once, naming that key.
    let mut c = mysql_async::Conn::new(quiet()).await.unwrap();
    let big = format!("INSERT INTO test.b VALUES (4, '{}')", "x".repeat(8192));
    let e = c.query_drop(big).await.unwrap_err().to_string();
    assert!(
        e.contains("1290") && e.contains("failover.write_buffer_bytes"),
        "{e}"
    );
    let held: Vec<_> = (1..=2)
        .map(|i| {
            let opts = quiet();
            tokio::spawn(async move {
                let mut c = mysql_async::Conn::new(opts).await.unwrap();
                c.exec_drop("INSERT INTO test.b VALUES (?, 'held')", (i,))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    harness::wait_for("two held writes", Duration::from_secs(10), || async {
        let (_, m) = node.http_get("/metrics").await?;
        m.lines()
            .any(|l| l == "concord_buffered_writes 2")
            .then_some(())
    })
    .await;
    // A third is refused at once, naming the count cap.
    let t = Instant::now();
    let e = c
        .query_drop("INSERT INTO test.b VALUES (3, 'over')")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1290") && e.contains("failover.write_buffer_max"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "refused, not held");
    // The primary returns: the held writes run, once each.
    link.heal();
    for h in held {
        h.await.unwrap().unwrap();
    }
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM test.b").await.unwrap();
    assert_eq!(n, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_hold_unbounded_state() {
    let _db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&_db.addr());
    // Every `SET @vN` below is a new statement shape: the node's digest
    // table (bounded by its own cap, see proxy/tests/digest_memory.rs)
    // would fill up to it. Kept small here so what is measured is the
    // session's state.
    cfg.extra.push_str("[digests]\nmax_memory = \"64KiB\"\n");
    let node = Concord::start(cfg).await;
    // concord keeps each open statement's text (to prepare it lazily on
    // other backends): past 4096 open statements PREPARE gets 1461, as a
    // server past max_prepared_stmt_count, and the session goes on.
    let mut c = mysql_async::Conn::new(node.opts().stmt_cache_size(Some(10_000)))
        .await
        .unwrap();
    let mut refused = None;
    for i in 0..4200 {
        if let Err(e) = c.prep(format!("SELECT {i} + ?")).await {
            refused = Some((i, e.to_string()));
            break;
        }
    }
    let (at, e) = refused.expect("no cap on prepared statements per session");
    assert_eq!(at, 4096, "{e}");
    assert!(e.contains("1461") && e.contains("close some"), "{e}");
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // Thousands of distinct session variables: the session is pinned to its
    // connection once past what concord keeps (1 024 variables), and
    // concord's memory stays flat instead of growing with every SET.
    let rss0 = node.rss_kib();
    for i in 0..20_000 {
        c.query_drop(format!("SET @v{i} = {i}")).await.unwrap();
    }
    let v: Option<i64> = c.query_first("SELECT @v19999").await.unwrap();
    assert_eq!(v, Some(19_999));
    let grown = node.rss_kib().saturating_sub(rss0);
    assert!(grown < 1024, "RSS grew {grown} KiB over 20 000 SETs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concords_own_probes_keep_no_growing_server_state() {
    // The heartbeat is written 4 times a second through a prepared
    // statement: it must be reused, not left open each time (which would
    // exhaust the server's max_prepared_stmt_count within the hour).
    let (db, _node) = single("").await;
    let count = || async {
        let rows: Vec<(String, u64)> = db
            .query("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
            .await;
        rows.first().map(|r| r.1).unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = count().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = count().await;
    assert!(
        after <= before.max(4),
        "prepared statements on the primary grew from {before} to {after} in 3 s of heartbeats"
    );
}

/// What 20 sessions that panic while holding a backend connection leave
/// behind: (sessions still listed, new logins refused by the per-user cap,
/// backend connections counted as in use).
async fn panics_leave(hooks: &str) -> (usize, bool, u64) {
    let db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.users =
        format!("[[users]]\nname = \"app\"\npassword = \"{PASSWORD}\"\nmax_connections = 6\n");
    cfg.extra = "[pool]\nmax_per_backend = 8\nacquire_timeout = \"1s\"\n".into();
    cfg.test_hooks = hooks.into();
    let node = Concord::start(cfg).await;
    // A bystander session, busy the whole time.
    let mut bystander = node.conn().await;
    for _ in 0..20 {
        let Ok(mut c) = mysql_async::Conn::new(node.opts()).await else {
            break;
        };
        // In a transaction: the session holds its connection when it
        // panics (in either pool mode).
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop("SELECT 1").await.unwrap();
        let e = c.query_drop("/* concord:test-panic */ SELECT 1").await;
        assert!(e.is_err(), "the session ends");
        bystander.query_drop("SELECT 1").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sessions = node.admin_query("SHOW SESSIONS").await.unwrap().len();
    let refused = match mysql_async::Conn::new(node.opts()).await {
        Ok(mut c) => c.query_drop("SELECT 1").await.is_err(),
        Err(_) => true,
    };
    let rows = node.admin_query("SHOW BACKENDS").await.unwrap();
    let active: u64 = rows[0]["active_conns"]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(node.logs().contains("test hook: session"), "the hook ran");
    (sessions, refused, active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_costs_no_other_session_anything() {
    // Only the bystander is left: no listed session, no per-user count, no
    // pool slot stays behind a panicked session.
    let (sessions, refused, active) = panics_leave("session-panic").await;
    println!("after 20 panics: {sessions} sessions listed, new login refused: {refused}, {active} backend connections in use");
    assert_eq!(sessions, 1, "only the bystander");
    assert!(!refused, "a new login works");
    assert!(
        active <= 1,
        "only the bystander's connection is in use: {active}"
    );
    // The same with the guards switched off (test-only): the leaks are
    // there, so the assertions above are what the guards make true.
    let (sessions, refused, active) = panics_leave("session-panic,leak-on-panic").await;
    println!("without the guards: {sessions} sessions listed, new login refused: {refused}, {active} backend connections in use");
    assert!(sessions > 1 && refused && active > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_session_stops_a_session_in_the_middle_of_a_command() {
    let db = MariaDb::start("primary", 1).await;
    db.exec("CREATE TABLE test.f (a INT, b INT)").await;
    let node = Concord::start(ConcordConfig::single(&db.addr())).await;
    let local = concord_protocol::consts::cap::LOCAL_FILES;
    for case in ["half a packet", "a quiet LOCAL INFILE"] {
        let mut c = RawClient::connect(node.cfg.port, "app", PASSWORD, local).await;
        let id = c.connection_id;
        match case {
            "half a packet" => {
                // A 100-byte COM_QUERY header, then 10 bytes, then nothing.
                c.s.io.write_all(&[100, 0, 0, 0, 3]).await.unwrap();
                c.s.io.write_all(b"SELECT 1  ").await.unwrap();
            }
            _ => {
                let mut seq = 0;
                c.s.send(
                    &mut seq,
                    b"\x03LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE test.f",
                )
                .await
                .unwrap();
                // The server asks for the file; the client sends part of
                // it and goes quiet.
                let req = c.s.read_packet().await.unwrap();
                assert_eq!(req.first(), Some(0xfb));
                let mut seq = req.next_seq();
                c.s.send(&mut seq, b"1,2\n3,4\n").await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        node.admin_query(&format!("KILL SESSION {id}"))
            .await
            .unwrap();
        let closed = read_until_closed(&mut c.s.io, Duration::from_secs(5)).await;
        println!("{case}: closed {:?} after KILL SESSION", t.elapsed());
        assert!(closed.is_some(), "{case}: the session is still open");
        let listed = node.admin_query("SHOW SESSIONS").await.unwrap();
        assert!(
            !listed
                .iter()
                .any(|r| r["id"].as_deref() == Some(id.to_string().as_str())),
            "{case}: still listed"
        );
    }
    // Nothing of the half-loaded file was committed.
    let n: Vec<u64> = db.query("SELECT COUNT(*) FROM test.f").await;
    assert_eq!(n, vec![0]);
}

/// Runs `secs` of point reads over 8 connections with nobody scraping
/// `/metrics`; returns (queries after the warm-up, RSS growth in KiB over
/// them).
async fn unscraped_growth(hooks: &str, secs: u64) -> (u64, u64) {
    let db = MariaDb::start("primary", 1).await;
    let mut cfg = ConcordConfig::single(&db.addr());
    cfg.test_hooks = hooks.into();
    let node = Concord::start(cfg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let opts = node.opts();
        let (stop, count) = (stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _: Option<i64> = c.query_first("SELECT 1").await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Warm-up: pools, buffers and allocator arenas reach their size.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (rss0, n0) = (node.rss_kib(), count.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rss1, n1) = (node.rss_kib(), count.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (n1 - n0, rss1.saturating_sub(rss0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_under_load_with_nobody_scraping_metrics() {
    // The exporter's histograms keep samples until folded into buckets;
    // the per-statement one (backend latency) is now fixed buckets of
    // atomic counters that keep none, so even without the node's
    // once-a-second upkeep (test-only `no-metrics-upkeep`) nothing piles
    // up. Before that change this switch grew RSS by 16 bytes per query;
    // `proxy/tests/allocations.rs` counts per-statement allocations
    // directly.
    let (n, grown) = unscraped_growth("no-metrics-upkeep", 16).await;
    let per_query = grown as f64 * 1024.0 / n as f64;
    println!("without upkeep: {n} queries, RSS +{grown} KiB, {per_query:.2} bytes/query");
    assert!(n > 20_000, "too little load to judge: {n} queries");
    assert!(
        per_query < 2.0,
        "RSS grew {per_query:.2} bytes per query with nobody scraping"
    );
}
