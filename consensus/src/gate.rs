//! The write gate: the proxy-side half of a fence.
//!
//! Raft applying a fence (`epoch + 1`, no primary) is not enough on its
//! own: a session that checked the routing snapshot a moment before the
//! apply may still be sending a statement to the old primary, and the
//! heartbeat writer may be halfway through its INSERT. If the leader then
//! sets `read_only` and reads the old primary's GTID position, such a late
//! statement either fails (a client-visible error in a switchover that
//! promised none) or, from an account that bypasses `read_only`, commits
//! after the position was read: a transaction the new primary never gets,
//! and the old primary cannot replicate from it afterwards.
//!
//! So every statement sent to a primary holds a [`WriteGuard`] taken under
//! the epoch it was routed with. The state machine raises the gate's epoch
//! when it applies an entry, before anyone can observe that entry as
//! applied; from then on a guard for an older epoch is refused. A node
//! confirms it applied a fenced state ([`crate::Consensus::wait_all_applied`])
//! only once the guards taken before the raise are dropped, i.e. once every
//! statement it routed under the old epoch has been answered.
//!
//! Cost on the hot path: two atomic read-modify-writes and one or two
//! loads per statement sent to the primary; no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Default)]
pub struct WriteGate {
    /// The newest epoch applied on this node.
    epoch: AtomicU64,
    /// Guards held (statements in flight to a primary).
    inflight: AtomicU64,
    /// Tasks inside [`WriteGate::drained`]: a guard dropping the count to
    /// zero touches the Notify (a mutex shared by every session) only when
    /// someone waits, which is only during a fence.
    waiters: AtomicU64,
    drained: Notify,
    /// Statements routed under an epoch below this must stop on their
    /// server (see [`WriteGate::stop_older`]).
    stop_below: AtomicU64,
    /// Woken by [`WriteGate::stop_older`]: the proxy nudges its sessions.
    pub stopping: Notify,
}

/// Held while one statement is in flight to the primary of `epoch`.
pub struct WriteGuard {
    gate: Arc<WriteGate>,
}

impl WriteGate {
    pub fn new(epoch: u64) -> Self {
        WriteGate {
            epoch: AtomicU64::new(epoch),
            ..Default::default()
        }
    }

    /// The newest epoch applied on this node.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Called by the state machine as it applies an entry of `epoch`.
    pub(crate) fn raise(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
    }

    /// A guard for a statement routed to the primary of `epoch`, or `None`
    /// if a newer epoch has been applied since (the route is stale).
    ///
    /// The count goes up before the epoch is read, and the state machine
    /// raises the epoch before a drain reads the count (both `SeqCst`):
    /// either this call sees the new epoch and refuses, or the drain sees
    /// this guard and waits for it.
    pub fn enter(self: &Arc<Self>, epoch: u64) -> Option<WriteGuard> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = WriteGuard { gate: self.clone() };
        (self.epoch.load(Ordering::SeqCst) <= epoch).then_some(guard)
    }

    /// A fence confirmation waited half its time for statements routed
    /// under older epochs: their sessions now KILL them on the server
    /// (they would otherwise run on, possibly past the promotion, and
    /// hold this node's confirmation). Their clients get an error, as for
    /// any statement the fence interrupts.
    pub fn stop_older(&self) {
        self.stop_below.fetch_max(self.epoch(), Ordering::SeqCst);
        self.stopping.notify_waiters();
    }

    /// Changes each time [`WriteGate::stop_older`] raises the bar.
    pub fn stop_mark(&self) -> u64 {
        self.stop_below.load(Ordering::SeqCst)
    }

    /// Whether a statement routed under `epoch` must stop.
    pub fn must_stop(&self, epoch: u64) -> bool {
        epoch < self.stop_below.load(Ordering::SeqCst)
    }

    /// Statements in flight to a primary right now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Waits until no guard is held, up to `timeout`. Meant for a fenced
    /// state (no primary), where every guard still held predates the fence.
    pub async fn drained(&self, timeout: Duration) -> bool {
        /// Counts this waiter however the wait ends (it may be dropped).
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Counted before the count of guards is read (both SeqCst): a guard
        // dropped after that read sees this waiter and notifies it.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.inflight() == 0;
            }
        }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if self.gate.inflight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.gate.waiters.load(Ordering::SeqCst) > 0
        {
            self.gate.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raised_epoch_refuses_old_routes_and_waits_for_held_guards() {
        let gate = Arc::new(WriteGate::new(3));
        let held = gate.enter(3).expect("current epoch");
        assert!(gate.enter(2).is_none(), "an older route is refused");
        assert_eq!(gate.inflight(), 1, "a refused guard is not counted");
        gate.raise(4);
        assert!(gate.enter(3).is_none(), "fenced");
        assert!(!gate.drained(Duration::from_millis(20)).await);
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.drained(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        assert!(waiter.await.unwrap_or(false));
        assert!(gate.enter(4).is_some());
        assert_eq!(gate.inflight(), 0);
    }

    #[test]
    fn stopping_names_only_older_epochs() {
        let gate = WriteGate::new(3);
        assert!(!gate.must_stop(2));
        gate.raise(4);
        let mark = gate.stop_mark();
        gate.stop_older();
        assert_ne!(gate.stop_mark(), mark);
        assert!(gate.must_stop(3), "routed before the fence");
        assert!(!gate.must_stop(4), "the current epoch runs on");
    }
}
