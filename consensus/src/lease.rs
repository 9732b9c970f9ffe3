//! The routing lease: until when this node may route writes, because a
//! quorum confirmed (at or after the moment the lease counts from) that the
//! state it has applied is current. Checked on every routed write with one
//! atomic load and a monotonic clock read; never a network round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Lease {
    base: Instant,
    /// Nanoseconds after `base`; 0 = no lease.
    deadline: AtomicU64,
    pub timeout: Duration,
}

impl Lease {
    pub fn new(timeout: Duration) -> Self {
        Lease {
            base: Instant::now(),
            deadline: AtomicU64::new(0),
            timeout,
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// True while the lease holds.
    #[inline]
    pub fn valid(&self) -> bool {
        self.nanos(Instant::now()) < self.deadline.load(Ordering::Acquire)
    }

    /// Time left, if any.
    pub fn remaining(&self) -> Option<Duration> {
        let now = self.nanos(Instant::now());
        let d = self.deadline.load(Ordering::Acquire);
        (now < d).then(|| Duration::from_nanos(d - now))
    }

    /// A quorum confirmed our state at or after `confirmed_at`: the lease
    /// runs until `confirmed_at + timeout` (never shortened by a late,
    /// older confirmation).
    pub fn extend_from(&self, confirmed_at: Instant) {
        let d = self.nanos(confirmed_at + self.timeout);
        self.deadline.fetch_max(d, Ordering::AcqRel);
    }

    /// Drops the lease at once (e.g. on losing leadership).
    pub fn revoke(&self) {
        self.deadline.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_from_confirmation_and_expires() {
        let l = Lease::new(Duration::from_millis(50));
        assert!(!l.valid());
        l.extend_from(Instant::now());
        assert!(l.valid());
        // An older confirmation never shortens it.
        l.extend_from(Instant::now() - Duration::from_millis(40));
        assert!(l.remaining().unwrap() > Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!l.valid());
        l.extend_from(Instant::now());
        l.revoke();
        assert!(!l.valid());
    }
}
