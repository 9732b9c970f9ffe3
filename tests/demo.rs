//! The README's quick-start demo, driven as a user would: its status
//! line moves, `k` (kill -9 the primary) shows a failover in it, `s` a
//! switchover, `d` the fleet's top digests, and `q` stops everything.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Stops the demo on any exit path: SIGINT is its Ctrl-C (it cleans up
/// its servers); the test waits for that.
struct Running(tokio::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
            for _ in 0..200 {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads lines until one satisfies `f` (printing them), within `limit`.
async fn until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    limit: Duration,
    what: &str,
    mut f: impl FnMut(&str) -> bool,
) -> String {
    let r = tokio::time::timeout(limit, async {
        while let Ok(Some(l)) = lines.next_line().await {
            println!("{l}");
            if f(&l) {
                return Some(l);
            }
        }
        None
    })
    .await;
    match r {
        Ok(Some(l)) => l,
        _ => panic!("the demo never showed {what}"),
    }
}

/// `primary dbN (epoch E)` in a status line.
fn primary_of(l: &str) -> Option<(String, String)> {
    let rest = l.split("| primary ").nth(1)?;
    let name = rest.split_whitespace().next()?.to_string();
    let epoch = rest.split("(epoch ").nth(1)?.split(')').next()?.to_string();
    Some((name, epoch))
}

fn errors_total(l: &str) -> u64 {
    l.split("(total ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_demo_shows_a_failover_a_switchover_and_digests() {
    // Built by the harness with everything else.
    let _ = harness::bin::workspace_bin("concord");
    let demo = harness::bin::target_profile_dir().join("examples/demo");
    let mut child = tokio::process::Command::new(&demo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", demo.display()));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut demo = Running(child);
    let up = Duration::from_secs(120);
    let busy = until(&mut lines, up, "a status line with traffic", |l| {
        l.starts_with('[') && l.contains("qps n1") && !l.contains("qps n1    0")
    })
    .await;
    assert_eq!(
        primary_of(&busy),
        Some(("db1".into(), "1".into())),
        "{busy}"
    );

    stdin.write_all(b"k\n").await.unwrap();
    // A new primary, and a replica of it readable again (a switchover
    // needs one).
    let failed_over = until(&mut lines, Duration::from_secs(60), "a new primary", |l| {
        primary_of(l).is_some_and(|(name, _)| name != "db1")
            && !l.contains("DOWN")
            && !l.contains("qps n1    0")
            && (l.contains("ms, ") || l.contains("ms |"))
    })
    .await;
    let (p2, e2) = primary_of(&failed_over).unwrap();
    assert_ne!(e2, "1", "{failed_over}");

    stdin.write_all(b"s\n").await.unwrap();
    let switched = until(&mut lines, Duration::from_secs(60), "the switchover", |l| {
        primary_of(l).is_some_and(|(name, _)| name != p2 && name != "db1")
    })
    .await;
    println!("after the switchover: {switched}");

    stdin.write_all(b"d\n").await.unwrap();
    until(
        &mut lines,
        Duration::from_secs(20),
        "the top digests",
        |l| l.contains("select v from demo where id = ?"),
    )
    .await;
    let last = until(&mut lines, Duration::from_secs(10), "a status line", |l| {
        l.starts_with('[')
    })
    .await;
    // The kill -9 costs a few statements; the switchover none.
    assert!(errors_total(&last) < 100, "{last}");

    stdin.write_all(b"q\n").await.unwrap();
    let st = tokio::time::timeout(Duration::from_secs(60), demo.0.wait())
        .await
        .expect("the demo stops on q")
        .unwrap();
    assert!(st.success(), "{st:?}");
}
