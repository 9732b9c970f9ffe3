//! Repointing the other replicas at a new primary.
//!
//! Writes wait for this step: a switchover holds them, and a failover's
//! Promote comes after it. Yet a repoint can wait as long as a lock on
//! the replica is held: its STOP SLAVE waits for the replication SQL
//! thread, and that thread waits like any writer for a backup's FLUSH
//! TABLES WITH READ LOCK (or BACKUP STAGE), for hours on a large backup.
//! So every repoint runs at once in its own task; the workflow waits for
//! them at most twice `monitor.timeout`, and one not done by then
//! finishes on its own, says so in the event log, and stops if the fleet
//! has moved on (see `owner::owned`). Not covered: a leader change or
//! restart before it ends leaves that replica stopped, pointing at the old
//! primary (it serves no reads: its lag is unknown) until a DBA repoints
//! it.

use super::{connect, dialect, note, Fleet, R};
use std::time::Instant;
use tokio::sync::oneshot;

/// Repoints each of `others` (name, address) at `to`; one line each for
/// the Promote's event.
pub(super) async fn replicas(
    f: &Fleet<'_>,
    others: &[(String, String)],
    to: &str,
    to_addr: &str,
) -> Vec<String> {
    // A connect alone may take `monitor.timeout`; the repoint's four
    // statements come after.
    let wait = f.cfg.monitor.timeout.get() * 2;
    let epoch = f.consensus.applied().borrow().topology.epoch;
    let pending: Vec<_> = others
        .iter()
        .map(|(name, addr)| {
            let (tx, rx) = oneshot::channel();
            let job = Job {
                consensus: f.consensus.clone(),
                cfg: f.cfg.clone(),
                health: f.health.clone(),
                claim: f.claim.get().cloned(),
                outlives: (epoch, to.to_string()),
                name: name.clone(),
                addr: addr.clone(),
                to_addr: to_addr.to_string(),
            };
            tokio::spawn(job.run(tx));
            (name, rx)
        })
        .collect();
    // (Test-only `repoint-waits-for-locks`: waits for each, as before.)
    let unbounded = concord_config::testhooks::on("repoint-waits-for-locks");
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    for (name, mut rx) in pending {
        let done = if unbounded {
            (&mut rx).await.ok()
        } else {
            match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(r) => r.ok(),
                // Closed first: an answer that arrives now is not lost,
                // and a later one is noted by the task itself.
                Err(_) => {
                    rx.close();
                    rx.try_recv().ok()
                }
            }
        };
        out.push(match done {
            Some(r) => outcome(name, to, r),
            None => format!(
                "'{name}' is still being repointed after {wait:?} (twice monitor.timeout; its STOP SLAVE may wait for the replication applier, which waits for any lock held there: a backup's FLUSH TABLES WITH READ LOCK or BACKUP STAGE?); it finishes on its own while this node leads, and notes it in the event log"
            ),
        });
    }
    out
}

fn outcome(name: &str, to: &str, r: R<()>) -> String {
    match r {
        Ok(()) => format!("'{name}' now replicates from '{to}'"),
        Err(e) => format!("'{name}' could not be repointed: {e}"),
    }
}

/// One repoint, owning what it needs to outlive the workflow.
struct Job {
    consensus: concord_consensus::Consensus,
    cfg: std::sync::Arc<concord_config::Config>,
    health: std::sync::Arc<crate::monitor::Health>,
    claim: Option<concord_consensus::Owner>,
    outlives: (u64, String),
    name: String,
    addr: String,
    to_addr: String,
}

impl Job {
    async fn run(self, tx: oneshot::Sender<R<()>>) {
        let f = Fleet::new(&self.consensus, self.cfg.clone(), &self.health);
        if let Some(c) = self.claim.clone() {
            let _ = f.claim.set(c);
        }
        let to = self.outlives.1.clone();
        let _ = f.outlives.set(self.outlives.clone());
        let started = Instant::now();
        let r = async {
            let mut c = connect(&f, &self.name, &self.addr).await?;
            let r =
                dialect::repoint(&f, &mut c, &self.name, &self.to_addr, None, "slave_pos").await;
            let _ = c.disconnect().await;
            r
        }
        .await;
        if let Err(r) = tx.send(r) {
            // The workflow stopped waiting: the event log hears it here.
            let took = started.elapsed();
            let line = format!(
                "{} ({took:.1?} after it started)",
                outcome(&self.name, &to, r)
            );
            note(&f, line).await;
        }
    }
}
