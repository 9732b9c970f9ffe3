//! Failed-login throttling per source IP (`listener.max_auth_failures_per_minute`).
//!
//! Password guessing costs the attacker one round trip per try; without a
//! limit a proxy in front of every database is an oracle for every
//! account. Fixed one-minute windows per IP keep the state tiny; the table
//! is bounded so a spray from many addresses cannot grow it without limit
//! (past the bound new addresses are not tracked until old windows expire:
//! the throttle degrades to "off" for them, never to unbounded memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (about 40 bytes each).
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct AuthThrottle {
    windows: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    map: HashMap<IpAddr, Window>,
    /// When expired windows were last swept out of a full table: at most
    /// one sweep a second, so a spray from new addresses does not cost a
    /// pass over the whole table per connection under the lock.
    swept: Option<Instant>,
    /// Sweeps run so far.
    sweeps: u64,
}

struct Window {
    start: Instant,
    failures: u32,
}

impl AuthThrottle {
    /// If `ip` has used up its failures this minute: how long until it may
    /// try again. `limit` 0 turns throttling off.
    pub fn blocked(&self, ip: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        let t = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        t.wait(ip, limit, now)
    }

    /// One password check from `ip` is about to run: counted as a failure
    /// up front and [`AuthThrottle::refund`]ed if it succeeds. The check
    /// and the charge happen under one lock acquisition, so checks running
    /// at the same moment on other threads each see the others.
    /// `Some(wait)`: the address is blocked and the check must not run.
    pub fn charge(&self, ip: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        let mut t = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wait) = t.wait(ip, limit, now) {
            return Some(wait);
        }
        t.count(ip, now);
        None
    }

    /// A charged check succeeded.
    pub fn refund(&self, ip: IpAddr) {
        let mut t = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = t.map.get_mut(&ip) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    /// Records one failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(ip, now);
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

impl Table {
    fn wait(&self, ip: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        let w = self.map.get(&ip)?;
        let age = now.saturating_duration_since(w.start);
        (age < WINDOW && w.failures >= limit).then(|| WINDOW - age)
    }

    fn count(&mut self, ip: IpAddr, now: Instant) {
        if self.map.len() >= MAX_TRACKED && !self.map.contains_key(&ip) {
            let due = self
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if !due {
                return;
            }
            self.swept = Some(now);
            self.sweeps += 1;
            self.map
                .retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
            if self.map.len() >= MAX_TRACKED {
                return;
            }
        }
        let w = self.map.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.start) >= WINDOW {
            w.start = now;
            w.failures = 0;
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_forgets_after_a_minute() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.blocked(ip, 3, t0).is_none());
            t.failed(ip, t0);
        }
        let wait = t.blocked(ip, 3, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.blocked(other, 3, t0).is_none());
        assert!(t.blocked(ip, 0, t0).is_none(), "0 turns it off");
        assert!(t.blocked(ip, 3, t0 + WINDOW).is_none());
        t.failed(ip, t0 + WINDOW);
        assert!(t.blocked(ip, 3, t0 + WINDOW).is_none(), "new window");
    }

    #[test]
    fn a_charge_counts_until_refunded() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.charge(ip, 3, t0).is_none());
        }
        assert!(t.charge(ip, 3, t0).is_some(), "a fourth check in flight");
        t.refund(ip);
        assert!(
            t.charge(ip, 3, t0).is_none(),
            "a succeeded check gave its slot back"
        );
        assert!(t.charge(ip, 0, t0).is_none(), "limit 0 is off");
    }

    #[test]
    fn the_table_stays_bounded_and_a_full_one_is_swept_once_a_second() {
        let t = AuthThrottle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            t.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        // A spray of new addresses against a full table: one sweep, not
        // one per address (each would walk 100 000 entries under the lock).
        for i in 0..20_000u32 {
            t.charge(IpAddr::from((0xC000_0000 | i).to_be_bytes()), 3, t0);
        }
        assert_eq!(t.windows.lock().unwrap().sweeps, 1);
        // Once the old windows expire, new addresses are tracked again.
        t.failed("192.0.2.1".parse().unwrap(), t0 + WINDOW);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn parallel_checks_never_get_more_than_the_limit() {
        let t = std::sync::Arc::new(AuthThrottle::default());
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let t0 = Instant::now();
        let through = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (t, through) = (t.clone(), through.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if t.charge(ip, 5, t0).is_none() {
                            through.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(through.load(std::sync::atomic::Ordering::Relaxed), 5);
    }
}
