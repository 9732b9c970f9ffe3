//! Zero heap allocations per statement in steady state, counted, not
//! inspected: a counting global allocator counts what client sessions
//! allocate (`concord_proxy::alloc_track` marks their polls) while a
//! concord node, in this process, relays point selects, text and
//! prepared, between a client and the benchmark's mock server. Digests
//! are on (the default), so their recording is covered too.

#![allow(unsafe_code, clippy::unwrap_used, clippy::print_stdout)]

use concord_bench::client::Client;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Counting;

static SESSION_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// `ALLOC_TRACE=n`: print where the first n counted allocations come from
/// (to find them; the test itself only counts).
static TRACE_LEFT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() {
    let n = SESSION_ALLOCS.fetch_add(1, Ordering::Relaxed);
    // Spaced out, so the sites are sampled in proportion.
    if n.is_multiple_of(997)
        && TRACE_LEFT.load(Ordering::Relaxed) > 0
        && !TRACING.with(|t| t.replace(true))
    {
        if TRACE_LEFT.fetch_sub(1, Ordering::Relaxed) > 0 {
            println!(
                "--- allocation in a session:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        TRACING.with(|t| t.set(false));
    }
}

// Safety: forwards to the system allocator; counting touches only an
// atomic and a const-initialised thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if concord_proxy::alloc_track::in_session() {
            counted();
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if concord_proxy::alloc_track::in_session() {
            counted();
        }
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if concord_proxy::alloc_track::in_session() {
            counted();
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_allocates_nothing_per_statement() {
    let mock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock.local_addr().unwrap();
    tokio::spawn(concord_bench::mock::serve(mock, Arc::default()));
    let dir = tempfile::tempdir().unwrap();
    let port = concord_bench::ports::free_port();
    let cfg = format!(
        "[node]\nid = 1\ndata_dir = \"{}\"\n[listener]\naddr = \"127.0.0.1:{port}\"\n[admin]\naddr = \"127.0.0.1:{}\"\nuser = \"admin\"\npassword = \"pw\"\n[http]\naddr = \"127.0.0.1:{}\"\n[monitor]\nuser = \"monitor\"\npassword = \"pw\"\n[cluster]\nraft_addr = \"127.0.0.1:{}\"\nsecret = \"s\"\n[[users]]\nname = \"app\"\npassword = \"pw\"\n[[backends]]\nname = \"db1\"\naddr = \"{mock_addr}\"\nrole = \"primary\"\n",
        dir.path().display(),
        concord_bench::ports::free_port(),
        concord_bench::ports::free_port(),
        concord_bench::ports::free_port(),
    );
    let path = dir.path().join("concord.toml");
    std::fs::write(&path, &cfg).unwrap();
    let config = concord_config::Config::parse(&cfg).unwrap();
    tokio::spawn(concord_proxy::node::run(config, path));
    let addr = format!("127.0.0.1:{port}");
    let mut c = None;
    for _ in 0..300 {
        if let Ok(mut cl) = Client::connect(&addr, "app", "pw", None).await {
            if cl.query("SELECT c FROM sbtest1 WHERE id = 1").await.is_ok() {
                c = Some(cl);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = c.expect("concord serves the mock backend");
    let text = "SELECT c FROM sbtest1 WHERE id = 1";
    let (stmt, _) = c
        .prepare("SELECT c FROM sbtest1 WHERE id = ?")
        .await
        .unwrap();
    // Warm: buffers, pools, digest rows, prepared-statement caches.
    for i in 0..5_000 {
        c.query(text).await.unwrap();
        c.execute(stmt, &[i]).await.unwrap();
    }
    let trace: u64 = std::env::var("ALLOC_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    TRACE_LEFT.store(trace, Ordering::Relaxed);
    let mut per = Vec::new();
    for (what, prepared) in [("text", false), ("prepared", true)] {
        let before = SESSION_ALLOCS.load(Ordering::Relaxed);
        for i in 0..N {
            if prepared {
                c.execute(stmt, &[i as i64]).await.unwrap();
            } else {
                c.query(text).await.unwrap();
            }
        }
        let n = SESSION_ALLOCS.load(Ordering::Relaxed) - before;
        println!("{what}: {n} allocations in sessions over {N} statements");
        per.push((what, n));
    }
    // Memory: what a long run adds with no /metrics scrape (samples are
    // not stored anywhere; buffers and tables are warm).
    let rss = || -> u64 {
        let s =
            std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm must be readable");
        let pages: u64 = s
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("statm resident");
        pages * 4
    };
    let before = rss();
    for i in 0..50_000i64 {
        c.query(text).await.unwrap();
        c.execute(stmt, &[i]).await.unwrap();
    }
    let grew = rss().saturating_sub(before);
    println!("RSS grew {grew} KiB over 100000 more statements");
    assert!(grew < 1024, "RSS grew {grew} KiB over 100 000 statements");
    for (what, n) in per {
        // Zero per statement; a handful in all (a timer wheel slot, a
        // buffer grown once) is not per statement.
        assert!(n * 1000 < N, "{what}: {n} allocations over {N} statements");
    }
}
