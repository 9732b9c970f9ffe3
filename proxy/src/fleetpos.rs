//! `read_your_writes = "fleet"`: every read sees every write any client
//! was told succeeded, through any node, before the read arrived.
//!
//! The read-index technique, applied to the primary's GTID position: a
//! read that arrives at `t` waits for a read of the primary's position
//! that *started* after `t` (every write acknowledged before `t` is in it,
//! since the primary acknowledged it before `t`), then for a replica that
//! has applied that position (or falls back as read-your-writes does).
//! One fetch serves every read that arrived before it started, so a busy
//! node sends the primary one small query per round trip, not one per
//! read; no message between concord nodes is needed and there is no
//! staleness window to bound. The cost is on the reads: one primary round
//! trip of waiting, plus the replica catching up to everything written
//! until then.

use concord_health::Prober;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// The latest fetch: when it started and what it found.
#[derive(Clone, Debug)]
enum Fetched {
    None,
    Pos(Instant, String),
    Failed(Instant, String),
}

pub struct PrimaryPosition {
    wanted: Notify,
    latest: watch::Sender<Fetched>,
    started: std::sync::OnceLock<()>,
}

impl Default for PrimaryPosition {
    fn default() -> Self {
        PrimaryPosition {
            wanted: Notify::new(),
            latest: watch::channel(Fetched::None).0,
            started: std::sync::OnceLock::new(),
        }
    }
}

impl PrimaryPosition {
    /// The primary's position as read by a fetch that started after this
    /// call, or why it could not be read (within `timeout`).
    pub async fn after_now(
        self: &Arc<Self>,
        shared: &Arc<crate::shared::Shared>,
        timeout: Duration,
    ) -> Result<String, String> {
        let t = Instant::now();
        self.started.get_or_init(|| {
            tokio::spawn(fetcher(self.clone(), Arc::downgrade(shared)));
        });
        let mut rx = self.latest.subscribe();
        self.wanted.notify_one();
        let wait = async {
            loop {
                match &*rx.borrow_and_update() {
                    Fetched::Pos(at, pos) if *at >= t => return Ok(pos.clone()),
                    Fetched::Failed(at, why) if *at >= t => return Err(why.clone()),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err("the position fetcher stopped".to_string());
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(format!("no answer from the primary within {timeout:?}")))
    }
}

/// Reads the routed primary's position whenever a read waits for one;
/// one query serves every read that arrived before it started.
async fn fetcher(pos: Arc<PrimaryPosition>, shared: std::sync::Weak<crate::shared::Shared>) {
    let mut prober: Option<(String, Prober)> = None;
    loop {
        pos.wanted.notified().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let started = Instant::now();
        let cfg = shared.config.load_full();
        let routing = shared.routing.load_full();
        let epoch = routing.epoch;
        let res = match &routing.primary {
            None => Err(routing.no_primary_reason.clone()),
            Some(p) => {
                let addr = cfg.connect_addr(&p.name, &p.addr).to_string();
                if prober.as_ref().is_none_or(|(a, _)| *a != addr) {
                    prober = Some((
                        addr.clone(),
                        Prober::new(
                            &addr,
                            &cfg.monitor.user,
                            &cfg.monitor.password,
                            cfg.monitor.timeout.get(),
                        ),
                    ));
                }
                match prober.as_mut() {
                    Some((_, pr)) => {
                        let r = match tokio::time::timeout(
                            cfg.monitor.timeout.get(),
                            pr.gtid_position(),
                        )
                        .await
                        {
                            Ok(Ok(pos)) => Ok(pos),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("timed out".to_string()),
                        };
                        if r.is_err() {
                            pr.reset();
                        }
                        r.map_err(|e| format!("reading the primary '{}' position: {e}", p.name))
                    }
                    None => Err("no prober".into()),
                }
            }
        };
        // Only a position read under this node's lease for the primary's
        // epoch counts: a node cut off from the fleet could otherwise read
        // a demoted primary's frozen position, which replicas of the new
        // one already cover.
        let res = res.and_then(|p| {
            if shared.lease.valid_for(epoch) {
                Ok(p)
            } else {
                Err(format!("this node holds no lease for epoch {epoch}"))
            }
        });
        drop(shared);
        let _ = pos.latest.send(match res {
            Ok(p) => Fetched::Pos(started, p),
            Err(e) => Fetched::Failed(started, e),
        });
    }
}
