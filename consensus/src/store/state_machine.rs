//! The state machine: the topology plus what Raft needs (last applied log
//! id, membership). It lives in memory; its snapshot is a JSON file written
//! atomically (temp file, fsync, rename), and everything after the
//! snapshot is replayed from the durable log at start.

// openraft's storage traits return `StorageError` by value; helpers share it.
#![allow(clippy::result_large_err)]

use crate::gate::WriteGate;
use crate::topology::{Response, Topology};
use crate::types::{
    Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub topology: Topology,
    /// Responses to the last proposals with an id, so a retried proposal
    /// applies once (see `Command::id`).
    #[serde(default)]
    pub recent: std::collections::VecDeque<(u64, Response)>,
}

/// Proposals remembered for deduplication.
const RECENT: usize = 512;

/// What the rest of concord sees after each apply.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub index: u64,
    pub topology: Topology,
    /// Voters and learners: node id -> Raft address.
    pub members: BTreeMap<NodeId, String>,
    pub voters: Vec<NodeId>,
    /// Nodes this node saw leave the membership, and when (the last
    /// hour): a removed node may hold a lease for a while after.
    pub removed: Vec<(NodeId, std::time::Instant)>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub struct StateMachine {
    data: SmData,
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    publish: watch::Sender<Arc<Applied>>,
    gate: Arc<WriteGate>,
    /// See [`Applied::removed`] (not part of the replicated state).
    removed: Vec<(NodeId, std::time::Instant)>,
}

fn sm_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::<NodeId>::write_state_machine(&e).into()
}

fn snap_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::<NodeId>::write_snapshot(None, &e).into()
}

impl StateMachine {
    /// Loads the last snapshot from `dir` (if any).
    pub fn open(
        dir: &Path,
    ) -> Result<(StateMachine, watch::Receiver<Arc<Applied>>), std::io::Error> {
        let path = dir.join("snapshot.json");
        let (data, current) = match std::fs::read(&path) {
            Ok(bytes) => {
                let snap: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                let data: SmData = serde_json::from_slice(&snap.data)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                (data, Some(snap))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (SmData::default(), None),
            Err(e) => return Err(e),
        };
        let (tx, rx) = watch::channel(Arc::new(applied_view(&data, &[])));
        let gate = Arc::new(WriteGate::new(data.topology.epoch));
        Ok((
            StateMachine {
                data,
                dir: dir.to_path_buf(),
                current: Arc::new(Mutex::new(current)),
                publish: tx,
                gate,
                removed: Vec::new(),
            },
            rx,
        ))
    }

    /// The write gate this state machine raises as it applies epochs.
    pub fn gate(&self) -> Arc<WriteGate> {
        self.gate.clone()
    }

    /// Makes the applied state visible: first to the write gate (so no
    /// statement can still be routed under an older epoch), then to the
    /// watchers.
    fn publish(&self) {
        self.gate.raise(self.data.topology.epoch);
        self.publish
            .send_replace(Arc::new(applied_view(&self.data, &self.removed)));
    }
}

fn applied_view(d: &SmData, removed: &[(NodeId, std::time::Instant)]) -> Applied {
    let m = d.membership.membership();
    Applied {
        index: d.last_applied.map_or(0, |l| l.index),
        topology: d.topology.clone(),
        members: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        voters: m.voter_ids().collect(),
        removed: removed.to_vec(),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the
/// new file, never a torn one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn save(dir: &Path, snap: &StoredSnapshot) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(snap).map_err(snap_err)?;
    write_atomic(&dir.join("snapshot.json"), &bytes).map_err(snap_err)
}

pub struct Builder {
    data: SmData,
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = serde_json::to_vec(&self.data).map_err(snap_err)?;
        let id = match self.data.last_applied {
            Some(l) => format!(
                "{}-{}-{}",
                l.leader_id.term,
                l.index,
                crate::topology::now_ms()
            ),
            None => format!("0-0-{}", crate::topology::now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id: id,
        };
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        // Held across the write: a snapshot installed from the leader while
        // this one was being built may be newer, and must not be replaced
        // by it (the log before the newer one is gone: the node could not
        // restart).
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(newer) = cur
            .as_ref()
            .filter(|c| c.meta.last_log_id > meta.last_log_id)
        {
            return Ok(Snapshot {
                meta: newer.meta.clone(),
                snapshot: Box::new(Cursor::new(newer.data.clone())),
            });
        }
        save(&self.dir, &snap)?;
        *cur = Some(snap);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response {
                    ok: true,
                    epoch: self.data.topology.epoch,
                    index: e.log_id.index,
                    ..Default::default()
                }),
                EntryPayload::Normal(cmd) => {
                    let seen = (cmd.id != 0)
                        .then(|| self.data.recent.iter().find(|(id, _)| *id == cmd.id))
                        .flatten()
                        .map(|(_, r)| r.clone());
                    match seen {
                        // A retry of a proposal that committed: same answer,
                        // applied once.
                        Some(r) => out.push(r),
                        None => {
                            let r = self.data.topology.apply(e.log_id.index, &cmd);
                            if cmd.id != 0 {
                                self.data.recent.push_back((cmd.id, r.clone()));
                                while self.data.recent.len() > RECENT {
                                    self.data.recent.pop_front();
                                }
                            }
                            out.push(r)
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    let before: Vec<NodeId> = self
                        .data
                        .membership
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .collect();
                    self.data.membership = StoredMembership::new(Some(e.log_id), m);
                    let now = std::time::Instant::now();
                    let after = self.data.membership.membership();
                    for id in before {
                        if !after.nodes().any(|(n, _)| *n == id) {
                            self.removed.push((id, now));
                        }
                    }
                    self.removed
                        .retain(|(_, t)| t.elapsed() < std::time::Duration::from_secs(3600));
                    out.push(Response {
                        ok: true,
                        message: "membership changed".into(),
                        epoch: self.data.topology.epoch,
                        index: e.log_id.index,
                    });
                }
            }
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            data: self.data.clone(),
            dir: self.dir.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SmData = serde_json::from_slice(&bytes).map_err(sm_err)?;
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        save(&self.dir, &snap)?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_log = ?meta.last_log_id,
            "installed a snapshot from the leader (the log it replaces was purged there)"
        );
        self.data = data;
        *cur = Some(snap);
        drop(cur);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(cur.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Command, Op};
    use openraft::CommittedLeaderId;

    fn entry(index: u64, cmd: Command) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    #[tokio::test]
    async fn a_retried_proposal_applies_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut sm, _rx) = StateMachine::open(dir.path()).expect("open");
        let seed = Command::new(
            Op::Seed {
                backends: vec![crate::topology::SeedBackend {
                    name: "db1".into(),
                    addr: "a:1".into(),
                    weight: 1,
                }],
            },
            1,
            "",
        );
        let disc = Command::new(
            Op::Discover {
                primary: "db1".into(),
            },
            1,
            "",
        );
        let fence = Command::new(Op::Fence { expected_epoch: 1 }, 1, "");
        let first = sm
            .apply([entry(1, seed), entry(2, disc), entry(3, fence.clone())])
            .await
            .expect("apply");
        assert!(first[2].ok, "{:?}", first[2]);
        // The same proposal again (its first attempt timed out on the way
        // back): the same answer, not "stale fence", and no second event.
        let again = sm.apply([entry(4, fence)]).await.expect("apply");
        assert_eq!(again[0], first[2]);
        assert_eq!(sm.data.topology.epoch, 2);
        let fences = sm
            .data
            .topology
            .events
            .iter()
            .filter(|e| e.kind == "fence")
            .count();
        assert_eq!(fences, 1);
    }

    #[tokio::test]
    async fn a_snapshot_built_from_older_state_never_replaces_a_newer_installed_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut sm, _rx) = StateMachine::open(dir.path()).expect("open");
        sm.apply([entry(1, Command::new(Op::Note, 1, "one"))])
            .await
            .expect("apply");
        // A build starts from the state at index 1 ...
        let mut builder = sm.get_snapshot_builder().await;
        // ... while a snapshot at index 9 arrives from the leader.
        let mut newer = sm.data.clone();
        newer.last_applied = Some(LogId::new(CommittedLeaderId::new(1, 1), 9));
        let meta = SnapshotMeta {
            last_log_id: newer.last_applied,
            last_membership: newer.membership.clone(),
            snapshot_id: "leader-9".into(),
        };
        let bytes = serde_json::to_vec(&newer).expect("json");
        sm.install_snapshot(&meta, Box::new(Cursor::new(bytes)))
            .await
            .expect("install");
        let built = builder.build_snapshot().await.expect("build");
        assert_eq!(built.meta.snapshot_id, "leader-9");
        drop(sm);
        let (sm, _rx) = StateMachine::open(dir.path()).expect("reopen");
        assert_eq!(sm.data.last_applied.map(|l| l.index), Some(9));
    }
}
