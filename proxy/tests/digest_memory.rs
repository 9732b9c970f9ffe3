//! The digest table's memory cap under a stream of 10 million distinct
//! fingerprints, read from /proc. Alone in its test binary, so no other
//! test's allocations move the figure.

use concord_proxy::digest::{fnv, Digests, Role, Sample, FNV_SEED};
use std::io::Write;

/// Resident memory of this process, from /proc (the test fails if it
/// cannot be read: a cap nobody measured proves nothing).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[test]
fn ten_million_distinct_fingerprints_stay_under_the_memory_cap() {
    const CAP: u64 = 4 << 20;
    const MAX_TEXT: usize = 256;
    // Every row as large as allowed: texts past max_text (with bytes that
    // are not UTF-8), user and schema names past their 128-byte cap.
    let user = "u".repeat(200);
    let schema = "s".repeat(200);
    let tail: Vec<u8> = (0..MAX_TEXT as u32)
        .map(|i| 0x80 | (i % 64) as u8)
        .collect();
    let before = rss_bytes();
    let t = Digests::new(CAP, MAX_TEXT);
    let mut text = Vec::with_capacity(2 * MAX_TEXT);
    for i in 0..10_000_000u64 {
        text.clear();
        let _ = write!(text, "select {i} from t where c = ");
        text.extend_from_slice(&tail);
        t.record(&Sample {
            digest: fnv(FNV_SEED, &text),
            text: &text,
            user: &user,
            schema: &schema,
            role: Role::Replica,
            micros: i % 5000,
            rows_sent: 1,
            rows_affected: 0,
            error: false,
        });
    }
    let grown = rss_bytes().saturating_sub(before);
    let rows = t.rows();
    println!(
        "10M distinct: {} rows kept (capacity {}), RSS grew {} KiB for a {} KiB cap",
        rows.len(),
        t.capacity(),
        grown / 1024,
        CAP / 1024
    );
    assert_eq!(rows.len(), t.capacity());
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 10_000_000);
    assert!(
        grown <= CAP,
        "the table grew RSS by {grown} bytes, over its {CAP}-byte cap"
    );
}
