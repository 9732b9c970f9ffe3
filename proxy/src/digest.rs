//! Query digests: per statement shape (fingerprint, see
//! [`crate::classify::fingerprint`]) × user × schema × where it ran, the
//! node keeps counts, errors, rows and time, in a table of fixed size.
//!
//! **Bounded by design.** The table is a space-saving sketch (Metwally,
//! Agrawal, El Abbadi 2005) over `digests.max_memory`: at most `capacity`
//! rows, allocated once. When a new key arrives at a full table it takes
//! the place of the row with the smallest count, inheriting that count
//! (+1) and remembering it as `count_error`. So a row's `count` is never
//! below the key's true count and at most `count_error` above it, and any
//! key seen more than N / capacity times out of N is in the table. The
//! other figures of a row (errors, rows, time, histogram) count only what
//! was seen since the row took its place.
//!
//! One mutex per node, taken once per statement after its answer; the
//! rows live in an indexed min-heap by count, so a hit is a hash lookup
//! plus (rarely) a sift, and an eviction is O(log capacity).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Latency buckets per row: two per power of two of microseconds, from
/// 1 µs to about 16 s (the last bucket holds everything slower).
const BUCKETS: usize = 48;
/// Bytes of a fingerprint sent to another node for the fleet view.
const WIRE_TEXT: usize = 1024;

/// Where a statement ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
    /// Answered by concord itself (or refused before reaching a backend).
    #[default]
    Local,
}

/// What a session notes of a statement while it runs, for its digest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Note {
    pub role: Role,
    pub rows_sent: u64,
    pub rows_affected: u64,
    pub failed: bool,
}

/// Slow-log lines per second per node at most (the rest are counted in
/// the digests only).
const SLOW_LINES_PER_SECOND: u32 = 10;

impl Role {
    fn from_name(s: &str) -> Option<Role> {
        match s {
            "primary" => Some(Role::Primary),
            "replica" => Some(Role::Replica),
            "local" => Some(Role::Local),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Local => "local",
        }
    }
}

/// One statement, as recorded.
pub struct Sample<'a> {
    /// [`crate::classify::fingerprint`]'s hash and text.
    pub digest: u64,
    pub text: &'a [u8],
    pub user: &'a str,
    pub schema: &'a str,
    pub role: Role,
    pub micros: u64,
    pub rows_sent: u64,
    pub rows_affected: u64,
    pub error: bool,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    key: u64,
    pub digest: u64,
    pub text: Box<str>,
    pub user: Box<str>,
    pub schema: Box<str>,
    pub role: Role,
    pub count: u64,
    /// How much of `count` may belong to keys this row replaced.
    pub count_error: u64,
    pub errors: u64,
    pub rows_sent: u64,
    pub rows_affected: u64,
    pub total_us: u64,
    pub max_us: u64,
    hist: [u32; BUCKETS],
}

impl Row {
    /// Statements this row's figures (time, rows, errors) cover: its count
    /// less what it inherited from the rows it replaced.
    pub fn own_count(&self) -> u64 {
        self.count - self.count_error
    }

    /// Upper bound of the bucket holding quantile `q` of the latencies
    /// recorded in this row (within a factor of √2), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let n: u64 = self.hist.iter().map(|&c| u64::from(c)).sum();
        if n == 0 {
            return 0;
        }
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            seen += u64::from(c);
            if seen >= want {
                return bucket_top(i).min(self.max_us.max(1));
            }
        }
        self.max_us
    }

    /// The row as it travels to another node (the fleet view): every
    /// figure, the histogram included, so merged quantiles stay exact to
    /// the bucket.
    pub fn to_wire(&self) -> serde_json::Value {
        // The text is cut for the wire (the digest identifies the row), so
        // a node's answer stays far under the peer frame limit.
        let mut cut = self.text.len().min(WIRE_TEXT);
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        serde_json::json!({
            "digest": self.digest, "text": &self.text[..cut], "user": &*self.user,
            "schema": &*self.schema, "role": self.role.name(), "count": self.count,
            "count_error": self.count_error, "errors": self.errors,
            "rows_sent": self.rows_sent, "rows_affected": self.rows_affected,
            "total_us": self.total_us, "max_us": self.max_us, "hist": &self.hist[..],
        })
    }

    /// A row from another node; `None` if malformed.
    pub fn from_wire(v: &serde_json::Value) -> Option<Row> {
        let n = |k: &str| v[k].as_u64();
        let s = |k: &str| v[k].as_str().map(Box::<str>::from);
        let mut hist = [0u32; BUCKETS];
        let h = v["hist"].as_array()?;
        if h.len() != BUCKETS {
            return None;
        }
        for (slot, x) in hist.iter_mut().zip(h) {
            *slot = u32::try_from(x.as_u64()?).ok()?;
        }
        let count = n("count")?;
        Some(Row {
            key: 0,
            digest: n("digest")?,
            text: s("text")?,
            user: s("user")?,
            schema: s("schema")?,
            role: Role::from_name(v["role"].as_str()?)?,
            count,
            count_error: n("count_error")?.min(count),
            errors: n("errors")?,
            rows_sent: n("rows_sent")?,
            rows_affected: n("rows_affected")?,
            total_us: n("total_us")?,
            max_us: n("max_us")?,
            hist,
        })
    }

    /// The same key's row from another node, added in (counts, errors and
    /// times sum; the error bounds too).
    pub fn absorb(&mut self, o: &Row) {
        // Saturating: the figures come from another node.
        self.count = self.count.saturating_add(o.count);
        self.count_error = self.count_error.saturating_add(o.count_error);
        self.errors = self.errors.saturating_add(o.errors);
        self.rows_sent = self.rows_sent.saturating_add(o.rows_sent);
        self.rows_affected = self.rows_affected.saturating_add(o.rows_affected);
        self.total_us = self.total_us.saturating_add(o.total_us);
        self.max_us = self.max_us.max(o.max_us);
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a = a.saturating_add(*b);
        }
    }

    /// What identifies a row across nodes.
    pub fn same_key(&self, o: &Row) -> bool {
        self.digest == o.digest
            && self.user == o.user
            && self.schema == o.schema
            && self.role == o.role
    }
}

/// Bucket of a latency: 2·⌊log2 µs⌋, +1 in the upper half of that power.
fn bucket(us: u64) -> usize {
    let us = us.max(1);
    let l = 63 - us.leading_zeros() as usize;
    let upper = if l == 0 {
        0
    } else {
        ((us >> (l - 1)) & 1) as usize
    };
    (2 * l + upper).min(BUCKETS - 1)
}

/// The largest latency bucket `i` holds, in microseconds.
fn bucket_top(i: usize) -> u64 {
    let l = (i / 2) as u32;
    if i.is_multiple_of(2) {
        (1u64 << l) + (1u64 << l) / 2
    } else {
        1u64 << (l + 1)
    }
}

/// FNV-1a, 64 bits: stable across nodes and restarts (digests are
/// compared across a fleet), and cheap on short strings.
pub fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Keys are hashes already: no second hashing.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv(self.0 ^ FNV_SEED, bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap = HashMap<u64, u32, std::hash::BuildHasherDefault<KeyHasher>>;

struct Table {
    capacity: usize,
    max_text: usize,
    /// Min-heap by count; `index` maps a key to its place.
    heap: Vec<Row>,
    index: KeyMap,
}

/// Bytes one row may take at most, beyond its text: the row itself, its
/// user and schema names (capped), the allocator's overhead for its three
/// boxes (header and size-class rounding, with room for fragmentation
/// under churn) and its slot in the index at the lowest load factor.
/// Measured: 10 million distinct rows through a 4 MiB table grow RSS by
/// less than the cap (`proxy/tests/digest_memory.rs`).
const ROW_OVERHEAD: usize = std::mem::size_of::<Row>() + 2 * NAME_MAX + 3 * 48 + 64;
/// User and schema names are kept to this many bytes.
const NAME_MAX: usize = 128;

impl Table {
    fn new(max_memory: u64, max_text: usize) -> Table {
        let per_row = ROW_OVERHEAD + max_text;
        let capacity = ((max_memory as usize) / per_row).max(16);
        Table {
            capacity,
            max_text,
            heap: Vec::with_capacity(capacity),
            index: KeyMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    fn record(&mut self, s: &Sample<'_>) {
        let key = fnv(
            fnv(fnv(s.digest, s.user.as_bytes()), s.schema.as_bytes()),
            &[s.role as u8],
        );
        let at = match self.index.get(&key) {
            Some(&i) => i as usize,
            None if self.heap.len() < self.capacity => {
                self.heap.push(self.fresh(key, s, 0));
                let i = self.heap.len() - 1;
                self.index.insert(key, i as u32);
                self.sift_up(i)
            }
            None => {
                // Space-saving: the least counted row gives its place.
                let min = self.heap[0].count;
                let row = self.fresh(key, s, min);
                let old = std::mem::replace(&mut self.heap[0], row);
                self.index.remove(&old.key);
                self.index.insert(key, 0);
                0
            }
        };
        let r = &mut self.heap[at];
        r.count += 1;
        r.errors += u64::from(s.error);
        r.rows_sent += s.rows_sent;
        r.rows_affected += s.rows_affected;
        r.total_us += s.micros;
        r.max_us = r.max_us.max(s.micros);
        let b = &mut r.hist[bucket(s.micros)];
        *b = b.saturating_add(1);
        self.sift_down(at);
    }

    fn fresh(&self, key: u64, s: &Sample<'_>, count: u64) -> Row {
        Row {
            key,
            digest: s.digest,
            text: cut(s.text, self.max_text),
            user: cut(s.user.as_bytes(), NAME_MAX),
            schema: cut(s.schema.as_bytes(), NAME_MAX),
            role: s.role,
            count,
            count_error: count,
            errors: 0,
            rows_sent: 0,
            rows_affected: 0,
            total_us: 0,
            max_us: 0,
            hist: [0; BUCKETS],
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for i in [a, b] {
            if let Some(slot) = self.index.get_mut(&self.heap[i].key) {
                *slot = i as u32;
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].count <= self.heap[i].count {
                break;
            }
            self.swap(parent, i);
            i = parent;
        }
        i
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut min = i;
            if l < self.heap.len() && self.heap[l].count < self.heap[min].count {
                min = l;
            }
            if r < self.heap.len() && self.heap[r].count < self.heap[min].count {
                min = r;
            }
            if min == i {
                return;
            }
            self.swap(min, i);
            i = min;
        }
    }
}

/// At most `max` bytes of `b`, cut at a character boundary.
fn cut(b: &[u8], max: usize) -> Box<str> {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]);
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// The node's digest table.
pub struct Digests {
    table: Mutex<Table>,
    /// `digests.enabled` (follows a config reload).
    pub enabled: AtomicBool,
    /// `log.slow_threshold` in microseconds (0: no slow log) and
    /// `log.slow_with_values` (both follow a config reload).
    pub slow_us: AtomicU64,
    pub slow_with_values: AtomicBool,
    /// The slow log's rate limit: the current second (high 32 bits) and
    /// the lines logged in it (low 32), updated together.
    slow_budget: AtomicU64,
    started: std::time::Instant,
}

impl Digests {
    /// A table within `max_memory` bytes, fingerprints kept to `max_text`.
    pub fn new(max_memory: u64, max_text: usize) -> Digests {
        Digests {
            table: Mutex::new(Table::new(max_memory, max_text)),
            enabled: AtomicBool::new(true),
            slow_us: AtomicU64::new(0),
            slow_with_values: AtomicBool::new(false),
            slow_budget: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether statements are recorded.
    #[inline]
    pub fn on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether statements are timed at all (digests or the slow log).
    #[inline]
    pub fn timing(&self) -> bool {
        self.on() || self.slow_us.load(Ordering::Relaxed) > 0
    }

    /// Bytes of a fingerprint kept for display.
    pub fn max_text(&self) -> usize {
        self.lock().max_text
    }

    /// Whether the slow log wants the statements' literal text.
    #[inline]
    pub fn slow_values(&self) -> bool {
        self.slow_with_values.load(Ordering::Relaxed) && self.slow_us.load(Ordering::Relaxed) > 0
    }

    /// Whether a statement that took `micros` goes to the slow log: over
    /// the threshold, and within this second's budget of lines.
    pub fn slow_logged(&self, micros: u64) -> bool {
        let threshold = self.slow_us.load(Ordering::Relaxed);
        if threshold == 0 || micros < threshold {
            return false;
        }
        let now = self.started.elapsed().as_secs() & 0xffff_ffff;
        let mut cur = self.slow_budget.load(Ordering::Relaxed);
        loop {
            let (second, lines) = (cur >> 32, cur & 0xffff_ffff);
            let next = match second.cmp(&now) {
                // A thread with an older clock reading: never rewinds.
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Less => (now << 32) | 1,
                std::cmp::Ordering::Equal if lines >= u64::from(SLOW_LINES_PER_SECOND) => {
                    return false
                }
                std::cmp::Ordering::Equal => cur + 1,
            };
            match self.slow_budget.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Takes `digests.enabled` and the slow log's settings from `cfg`.
    pub fn configure(&self, cfg: &concord_config::Config) {
        self.enabled.store(cfg.digests.enabled, Ordering::Relaxed);
        let us = if cfg.log.slow_threshold.get().is_zero() {
            0
        } else {
            cfg.log.slow_threshold.get().as_micros().max(1) as u64
        };
        self.slow_us.store(us, Ordering::Relaxed);
        self.slow_with_values
            .store(cfg.log.slow_with_values, Ordering::Relaxed);
    }

    pub fn record(&self, s: &Sample<'_>) {
        self.lock().record(s);
    }

    /// Rows in the table at most.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// A copy of the rows (unordered).
    pub fn rows(&self) -> Vec<Row> {
        self.lock().heap.clone()
    }

    /// Copies of the `limit` rows with the highest `key` (lowest when not
    /// `desc`): only those are copied while the table is locked.
    pub fn top(&self, limit: usize, desc: bool, key: impl Fn(&Row) -> u64) -> Vec<Row> {
        let t = self.lock();
        let mut order: Vec<(u64, u32)> = t
            .heap
            .iter()
            .enumerate()
            .map(|(i, r)| (key(r), i as u32))
            .collect();
        if desc {
            order.sort_unstable_by(|a, b| b.cmp(a));
        } else {
            order.sort_unstable();
        }
        order
            .iter()
            .take(limit)
            .map(|&(_, i)| t.heap[i as usize].clone())
            .collect()
    }

    /// Empties the table, sized anew from `max_memory` and `max_text`.
    pub fn reset(&self, max_memory: u64, max_text: usize) {
        *self.lock() = Table::new(max_memory, max_text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(digest: u64, text: &'a [u8], user: &'a str) -> Sample<'a> {
        Sample {
            digest,
            text,
            user,
            schema: "app",
            role: Role::Primary,
            micros: 250,
            rows_sent: 1,
            rows_affected: 0,
            error: false,
        }
    }

    #[test]
    fn buckets_cover_microseconds_to_seconds() {
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 2);
        assert_eq!(bucket(3), 3);
        assert_eq!(bucket(4), 4);
        assert_eq!(bucket(6), 5);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for us in [1u64, 2, 3, 5, 100, 1000, 12_345, 1_000_000] {
            let top = bucket_top(bucket(us));
            assert!(top >= us && top <= us * 2, "{us} -> {top}");
        }
    }

    #[test]
    fn counts_are_exact_until_full_then_overestimate_within_the_error() {
        let t = Digests::new(0, 64); // the minimum: 16 rows
        let u = "app";
        assert_eq!(t.capacity(), 16);
        // A heavy hitter among many singletons is always kept, its count
        // at least its true count and at most count_error above it.
        for i in 0..10_000u64 {
            t.record(&sample(1, b"select ?", u));
            t.record(&sample(1000 + i, b"select other", u));
        }
        let rows = t.rows();
        assert_eq!(rows.len(), 16);
        let heavy = rows.iter().find(|r| r.digest == 1).expect("kept");
        assert!(heavy.count >= 10_000 && heavy.count - heavy.count_error <= 10_000);
        let total: u64 = rows.iter().map(|r| r.count).sum();
        assert_eq!(total, 20_000, "space-saving keeps the stream's length");
        for r in &rows {
            assert!(r.count >= r.count_error);
        }
    }
}
