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
    windows: Mutex<HashMap<IpAddr, Window>>,
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
        let map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.get(&ip)?;
        let age = now.saturating_duration_since(w.start);
        (age < WINDOW && w.failures >= limit).then(|| WINDOW - age)
    }

    /// One password check from `ip` is about to run: counted as a failure
    /// up front (under the lock, so checks running at the same moment on
    /// other threads see it) and [`AuthThrottle::refund`]ed if it succeeds.
    /// `Some(wait)`: the address is blocked and the check must not run.
    pub fn charge(&self, ip: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        if let Some(wait) = self.blocked(ip, limit, now) {
            return Some(wait);
        }
        self.failed(ip, now);
        None
    }

    /// A charged check succeeded.
    pub fn refund(&self, ip: IpAddr) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get_mut(&ip) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    /// Records one failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let w = map.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.start) >= WINDOW {
            w.start = now;
            w.failures = 0;
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).len()
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
    fn the_table_stays_bounded() {
        let t = AuthThrottle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            t.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(t.tracked(), MAX_TRACKED);
        // Once the old windows expire, new addresses are tracked again.
        t.failed("192.0.2.1".parse().unwrap(), t0 + WINDOW);
        assert_eq!(t.tracked(), 1);
    }
}
