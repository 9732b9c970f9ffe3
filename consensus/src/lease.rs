//! The routing lease: until when this node may send statements to the
//! primary of an epoch, because a quorum confirmed (at or after the moment
//! the lease counts from) that the state it had applied, with that epoch,
//! is current. Checked on every statement to the primary (before its first
//! byte, and again before its answer is relayed) with a few atomic loads
//! and one clock read; never a network round trip.
//!
//! The lease is per epoch. Confirmations that complete once this node has
//! applied a newer epoch extend only the newer one, so the deadline of an
//! older epoch is frozen at its last confirmation: a statement routed under
//! epoch E is answered as a success only before E's deadline, which the
//! leader can bound from the moment it committed the fence (see
//! docs/DESIGN.md, "Why a fenced primary never acknowledges a write").
//!
//! The clock is CLOCK_BOOTTIME: it keeps counting while a VM is suspended,
//! so a node that wakes up after its lease ran out knows it ran out
//! (CLOCK_MONOTONIC, what `Instant` uses, stops during suspend).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds on CLOCK_BOOTTIME (suspend included).
pub fn boot_nanos() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

pub struct Lease {
    /// The newest epoch a confirmation covered, and its deadline
    /// (boot nanos; 0 = none).
    epoch: AtomicU64,
    deadline: AtomicU64,
    /// The epoch before it and the deadline it had reached when the newer
    /// one was first confirmed (frozen from then on).
    prev_epoch: AtomicU64,
    prev_deadline: AtomicU64,
    /// When the newest epoch's latest confirmation started (boot nanos).
    confirmed: AtomicU64,
    /// How long a confirmation holds (nanoseconds); the fleet's value
    /// (`cluster.lease_timeout` in the replicated topology).
    timeout_ns: AtomicU64,
    /// Woken when the newest epoch's lease turns valid after having
    /// lapsed (or was never held): statements held for it go at once.
    /// Only ever `notify_waiters`: it reaches every `Notified` created
    /// before, enabled or not, which sessions rely on.
    pub regained: tokio::sync::Notify,
    /// When `regained` last fired (boot nanos).
    pub regained_at: AtomicU64,
}

impl Lease {
    pub fn new(timeout: Duration) -> Self {
        Lease {
            epoch: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            prev_epoch: AtomicU64::new(0),
            prev_deadline: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            timeout_ns: AtomicU64::new(nanos(timeout)),
            regained: tokio::sync::Notify::new(),
            regained_at: AtomicU64::new(0),
        }
    }

    /// The current length of a lease.
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns.load(Ordering::Relaxed))
    }

    /// The fleet's lease length changed (applies from the next confirmation).
    pub fn set_timeout(&self, d: Duration) {
        self.timeout_ns.store(nanos(d), Ordering::Relaxed);
    }

    /// True while this node holds a lease for the newest epoch it has
    /// had confirmed.
    #[inline]
    pub fn valid(&self) -> bool {
        boot_nanos() < self.deadline.load(Ordering::Acquire)
    }

    /// True while a statement routed under `epoch` may be sent to, or
    /// answered from, that epoch's primary.
    #[inline]
    pub fn valid_for(&self, epoch: u64) -> bool {
        self.deadline_for(epoch).is_some_and(|d| boot_nanos() < d)
    }

    fn deadline_for(&self, epoch: u64) -> Option<u64> {
        loop {
            let current = self.epoch.load(Ordering::Acquire);
            let d = if epoch == current {
                Some(self.deadline.load(Ordering::Acquire))
            } else {
                (epoch == self.prev_epoch.load(Ordering::Acquire))
                    .then(|| self.prev_deadline.load(Ordering::Acquire))
            };
            // The epoch moved while reading: the deadline read may belong
            // to the newer one; read again.
            if self.epoch.load(Ordering::Acquire) == current {
                return d;
            }
        }
    }

    /// True while the lease of the epoch before the newest still runs
    /// (statements routed under it may still be in flight).
    pub fn prev_valid(&self) -> bool {
        boot_nanos() < self.prev_deadline.load(Ordering::Acquire)
    }

    /// Time left on the newest epoch's lease, if any.
    pub fn remaining(&self) -> Option<Duration> {
        let now = boot_nanos();
        let d = self.deadline.load(Ordering::Acquire);
        (now < d).then(|| Duration::from_nanos(d - now))
    }

    /// A quorum confirmed, at or after `confirmed_at` (boot nanos), that
    /// this node's applied state with `epoch` is current: that epoch's
    /// lease runs until `confirmed_at + timeout` (never shortened by a
    /// late, older confirmation). Called by one task only.
    pub fn extend_from(&self, confirmed_at: u64, epoch: u64) {
        let d = confirmed_at.saturating_add(self.timeout_ns.load(Ordering::Relaxed));
        let current = self.epoch.load(Ordering::Acquire);
        if epoch > current {
            // The older epoch's deadline freezes where it is. Written
            // before the epoch moves, so a reader that sees the new epoch
            // finds the old one's deadline in `prev`.
            self.prev_deadline
                .store(self.deadline.load(Ordering::Acquire), Ordering::Release);
            self.prev_epoch.store(current, Ordering::Release);
            self.deadline.store(0, Ordering::Release);
            self.confirmed.store(0, Ordering::Release);
            self.epoch.store(epoch, Ordering::Release);
        } else if epoch < current {
            // A confirmation for a state older than one already confirmed.
            return;
        }
        let now = boot_nanos();
        let was = self.deadline.fetch_max(d, Ordering::AcqRel);
        self.confirmed.fetch_max(confirmed_at, Ordering::AcqRel);
        if was <= now && d > now {
            self.regained_at.store(now, Ordering::Release);
            self.regained.notify_waiters();
        }
    }

    /// Whether a quorum confirmed, at or after `t` (boot nanos), that this
    /// node's applied state still has `epoch`: then no fence of that epoch
    /// had been committed at `t`, so anything the epoch's primary did
    /// before `t` happened before any promotion that replaces it. `None`
    /// once a newer epoch was confirmed (it never will be).
    pub fn confirmed_since(&self, epoch: u64, t: u64) -> Option<bool> {
        loop {
            let current = self.epoch.load(Ordering::Acquire);
            let since = self.confirmed.load(Ordering::Acquire) >= t;
            if self.epoch.load(Ordering::Acquire) == current {
                return match current.cmp(&epoch) {
                    std::cmp::Ordering::Greater => None,
                    std::cmp::Ordering::Equal => Some(since),
                    std::cmp::Ordering::Less => Some(false),
                };
            }
        }
    }

    /// Drops the lease at once (e.g. on losing leadership), for every epoch.
    pub fn revoke(&self) {
        self.deadline.store(0, Ordering::Release);
        self.prev_deadline.store(0, Ordering::Release);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_from_confirmation_and_expires() {
        let l = Lease::new(Duration::from_millis(50));
        assert!(!l.valid());
        l.extend_from(boot_nanos(), 1);
        assert!(l.valid() && l.valid_for(1));
        // An older confirmation never shortens it.
        l.extend_from(boot_nanos() - 40_000_000, 1);
        assert!(l.remaining().unwrap() > Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!l.valid());
        l.extend_from(boot_nanos(), 1);
        l.revoke();
        assert!(!l.valid() && !l.valid_for(1));
    }

    #[test]
    fn an_older_epoch_keeps_only_the_deadline_it_had() {
        let l = Lease::new(Duration::from_millis(80));
        l.extend_from(boot_nanos(), 4);
        std::thread::sleep(Duration::from_millis(40));
        // The fence (epoch 5) is applied and confirmed: epoch 4's deadline
        // stays where its last confirmation put it.
        l.extend_from(boot_nanos(), 5);
        assert!(l.valid_for(4) && l.valid_for(5));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !l.valid_for(4),
            "epoch 4 ran out 80 ms after its last confirmation"
        );
        assert!(l.valid_for(5));
        l.extend_from(boot_nanos(), 5);
        assert!(!l.valid_for(4), "confirmations of 5 never extend 4");
        assert!(!l.valid_for(3), "an epoch two back has no lease");
        // A late confirmation of an older state is ignored.
        l.extend_from(boot_nanos(), 4);
        assert!(!l.valid_for(4));
    }

    #[test]
    fn only_a_confirmation_started_later_vouches_for_the_past() {
        let l = Lease::new(Duration::from_millis(50));
        let before = boot_nanos();
        l.extend_from(before, 7);
        let t = boot_nanos() + 1;
        assert_eq!(l.confirmed_since(7, t), Some(false), "started before t");
        l.extend_from(t, 7);
        assert_eq!(l.confirmed_since(7, t), Some(true));
        assert_eq!(l.confirmed_since(8, t), Some(false), "not applied yet");
        l.extend_from(t + 5, 8);
        assert_eq!(l.confirmed_since(7, t), None, "a newer epoch took over");
        assert_eq!(l.confirmed_since(8, t), Some(true));
    }
}
