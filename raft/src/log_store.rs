//! One group's Raft log and vote in the node's RocksDB (column families raft_log and raft_meta).
//! Appends, votes, truncation and purges are fsynced before openraft is told they are done; the
//! node's synced writer shares one fsync among all groups writing at the same time.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_storage::{keys, Cf, GroupId, Store};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};

use crate::codec;
use crate::recent_entries::RecentEntries;
use crate::records::{decode_record, read_record, storage_error, write_synced, StorageResult};
use crate::types::{KeelRaft, NodeId};

type Entry = openraft::Entry<KeelRaft>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// Raft log storage of one group. Cheap to clone (the reader is a clone, sharing the tail of
/// recent entries).
#[derive(Clone)]
pub struct GroupLogStore {
    store: Store,
    group: GroupId,
    recent: Arc<Mutex<RecentEntries>>,
}

impl GroupLogStore {
    /// The log of `group` in `store`.
    pub fn new(store: Store, group: GroupId) -> Self {
        GroupLogStore {
            store,
            group,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        tag: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<Option<T>> {
        let key = keys::meta_key(self.group, tag);
        read_record(&self.store, Cf::RaftMeta, &key, subject, || {
            format!(
                "raft metadata {:?} of group {}",
                String::from_utf8_lossy(tag),
                self.group
            )
        })
    }

    fn decode_entry(&self, key: &[u8], value: &[u8]) -> StorageResult<Entry> {
        decode_record(value, ErrorSubject::Logs, || {
            let index = keys::log_index_of(key).unwrap_or_default();
            format!("raft log entry {index} of group {}", self.group)
        })
    }
}

fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&n) => n.checked_add(1),
        Bound::Excluded(&n) => Some(n),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<KeelRaft> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let (start, end) = index_bounds(&range);
        if let Some(entries) = self.recent().get(start, end) {
            return Ok(entries);
        }
        let start_key = keys::log_key(self.group, start);
        let end_key = match end {
            Some(end) => keys::log_key(self.group, end).to_vec(),
            None => keys::group_range(self.group).1,
        };
        let mut entries = Vec::new();
        let mut failure = None;
        self.store
            .scan(Cf::RaftLog, &start_key, &end_key, |key, value| {
                match self.decode_entry(key, value) {
                    Ok(entry) => {
                        entries.push(entry);
                        true
                    }
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            })
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match failure {
            Some(e) => Err(e),
            None => Ok(entries),
        }
    }
}

impl RaftLogStorage<KeelRaft> for GroupLogStore {
    type LogReader = GroupLogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<KeelRaft>> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(PURGED, ErrorSubject::Logs)?;
        let (start, end) = keys::group_range(self.group);
        let last = self
            .store
            .last_in_range(Cf::RaftLog, &start, &end)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last {
            Some((key, value)) => Some(self.decode_entry(&key, &value)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut batch = self.store.batch();
        batch.put(
            Cf::RaftMeta,
            &keys::meta_key(self.group, VOTE),
            &codec::encode(vote),
        );
        write_synced(&self.store, batch)
            .await
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // The committed index is a hint that speeds up restart; losing it is safe, so it is not
        // fsynced on its own (it rides on the next synced write).
        let mut batch = self.store.batch();
        batch.put(
            Cf::RaftMeta,
            &keys::meta_key(self.group, COMMITTED),
            &codec::encode(&committed),
        );
        self.store
            .write_buffered(batch)
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<KeelRaft>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.store.batch();
        let mut recent = self.recent();
        for entry in entries {
            recent.appended(&entry);
            batch.put(
                Cf::RaftLog,
                &keys::log_key(self.group, entry.log_id.index),
                &codec::encode(&entry),
            );
        }
        drop(recent);
        self.store.write_synced(batch, move |result| {
            callback.log_io_completed(result.map_err(io::Error::other));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.recent().truncated(log_id.index);
        let start = keys::log_key(self.group, log_id.index);
        let (_, end) = keys::group_range(self.group);
        let mut batch = self.store.batch();
        batch.delete_range(Cf::RaftLog, &start, &end);
        write_synced(&self.store, batch)
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The purged record and the deletion are one synced write; its fsync also makes durable
        // every state-machine write before it, so no applied entry is lost with its log.
        self.recent().purged(log_id.index);
        let start = keys::log_key(self.group, 0);
        let end = keys::log_key(self.group, log_id.index.saturating_add(1));
        let mut batch = self.store.batch();
        batch.put(
            Cf::RaftMeta,
            &keys::meta_key(self.group, PURGED),
            &codec::encode(&log_id),
        );
        batch.delete_range(Cf::RaftLog, &start, &end);
        write_synced(&self.store, batch)
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
