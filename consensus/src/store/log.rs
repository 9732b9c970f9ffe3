//! The durable Raft log, vote and commit index in one redb file. Every
//! write is a redb transaction committed with immediate durability (fsync)
//! before openraft is told it is on disk.

// openraft's storage traits return `StorageError` by value; helpers share it.
#![allow(clippy::result_large_err)]

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogId, RaftLogReader, StorageIOError};
use redb::{Database, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

/// Cheap to clone: every clone shares the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The commit index openraft last saved (for status and metrics).
    committed: Arc<std::sync::atomic::AtomicU64>,
}

fn r<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

fn w<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

impl LogStore {
    /// Opens (or creates) `dir/raft.redb`.
    pub fn open(dir: &Path) -> Result<LogStore, redb::Error> {
        let db = Database::create(dir.join("raft.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(LogStore {
            db: Arc::new(db),
            committed: Default::default(),
        })
    }

    /// The commit index as openraft last saved it (0 before the first).
    pub fn committed(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.committed.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(r)?;
        let t = txn.open_table(META).map_err(r)?;
        match t.get(key).map_err(r)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(r)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(v).map_err(w)?;
        let txn = self.db.begin_write().map_err(w)?;
        {
            let mut t = txn.open_table(META).map_err(w)?;
            t.insert(key, bytes.as_slice()).map_err(w)?;
        }
        txn.commit().map_err(w)
    }

    /// Log entries in `[from, to)`.
    fn read_range(&self, from: u64, to: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(r)?;
        let t = txn.open_table(LOGS).map_err(r)?;
        let mut out = Vec::new();
        let iter = match to {
            Some(to) => t.range(from..to).map_err(r)?,
            None => t.range(from..).map_err(r)?,
        };
        for item in iter {
            let (_, v) = item.map_err(r)?;
            out.push(serde_json::from_slice(v.value()).map_err(r)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&e) => Some(e + 1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        self.read_range(from, to)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(PURGED)?;
        let txn = self.db.begin_read().map_err(r)?;
        let t = txn.open_table(LOGS).map_err(r)?;
        let last = match t.last().map_err(r)? {
            Some((_, v)) => {
                let e: Entry = serde_json::from_slice(v.value()).map_err(r)?;
                Some(*e.get_log_id())
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed)?;
        self.committed.store(
            committed.map_or(0, |c| c.index),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c = self.get_meta::<Option<LogId>>(COMMITTED)?.flatten();
        self.committed.store(
            c.map_or(0, |c| c.index),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(c)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let res = (|| {
            let txn = self.db.begin_write().map_err(w)?;
            {
                let mut t = txn.open_table(LOGS).map_err(w)?;
                for e in entries {
                    let bytes = serde_json::to_vec(&e).map_err(w)?;
                    t.insert(e.get_log_id().index, bytes.as_slice())
                        .map_err(w)?;
                }
            }
            txn.commit().map_err(w)
        })();
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(w)?;
        {
            let mut t = txn.open_table(LOGS).map_err(w)?;
            t.retain_in(log_id.index.., |_, _| false).map_err(w)?;
        }
        txn.commit().map_err(w)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(w)?;
        let txn = self.db.begin_write().map_err(w)?;
        {
            let mut m = txn.open_table(META).map_err(w)?;
            m.insert(PURGED, bytes.as_slice()).map_err(w)?;
            let mut t = txn.open_table(LOGS).map_err(w)?;
            t.retain_in(..=log_id.index, |_, _| false).map_err(w)?;
        }
        txn.commit().map_err(w)
    }
}
