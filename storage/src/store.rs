//! The node's RocksDB: opening (with identity check), column families, reads and writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB};

use crate::sync_stats::{SyncCounters, SyncStats};
use crate::synced_writer::{Completion, SyncedWriter};
use crate::StorageError;

/// Column families of the node's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cf {
    /// Raft log entries of every group, keyed by (group, index).
    RaftLog,
    /// Raft metadata of every group: vote, committed, purged, snapshot records.
    RaftMeta,
    /// Replicated state of every group, the part exported into snapshots.
    State,
}

impl Cf {
    const ALL: [Cf; 3] = [Cf::RaftLog, Cf::RaftMeta, Cf::State];

    fn name(self) -> &'static str {
        match self {
            Cf::RaftLog => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::State => "state",
        }
    }
}

/// An owned key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Who this data directory belongs to; written on first open, checked on every later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The cluster's id, fixed when the cluster is created.
    pub cluster_id: String,
    /// This node's id within the cluster.
    pub node_id: u64,
}

const IDENTITY_KEY: &[u8] = b"node-identity";
const IDENTITY_FORMAT: u8 = 1;

impl NodeIdentity {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.cluster_id.len());
        out.push(IDENTITY_FORMAT);
        out.extend_from_slice(&self.node_id.to_be_bytes());
        out.extend_from_slice(self.cluster_id.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&IDENTITY_FORMAT, rest)) if rest.len() >= 8 => {
                let (id, cluster) = rest.split_at(8);
                let node_id = u64::from_be_bytes(id.try_into().map_err(|_| "short node id")?);
                let cluster_id = String::from_utf8(cluster.to_vec())
                    .map_err(|e| format!("cluster id is not UTF-8: {e}"))?;
                Ok(NodeIdentity {
                    cluster_id,
                    node_id,
                })
            }
            Some((version, _)) => Err(format!(
                "unknown identity format {version} or truncated record ({} bytes)",
                bytes.len()
            )),
            None => Err("empty identity record".to_string()),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) db: Arc<DB>,
    pub(crate) path: PathBuf,
    writer: SyncedWriter,
    sync_counters: Arc<SyncCounters>,
}

/// A node's open database. Cheap to clone; all clones share one RocksDB and one synced writer.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// The store as it was at one moment (a RocksDB snapshot): writes made after the view was taken
/// are not seen through it. While a view is held RocksDB keeps every version it sees, so the
/// space it pins grows with the writes made since: hold views briefly.
pub struct StoreView<'a> {
    inner: &'a Inner,
    snapshot: rocksdb::Snapshot<'a>,
}

impl StoreView<'_> {
    /// Reads one key as of the view.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.snapshot
            .get_cf(self.inner.cf(cf), key)
            .map_err(|e| self.inner.rocks_error("read", e))
    }

    /// [`Store::scan`] as of the view.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let mut read = ReadOptions::default();
        read.set_snapshot(&self.snapshot);
        self.inner.scan(read, cf, start, end, visit)
    }
}

/// An atomic group of writes across column families.
pub struct WriteBatch {
    inner: Arc<Inner>,
    batch: rocksdb::WriteBatch,
}

impl WriteBatch {
    /// Puts `value` under `key` in `cf`.
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.inner.cf(cf), key, value);
    }

    /// Deletes `key` from `cf`.
    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.batch.delete_cf(self.inner.cf(cf), key);
    }

    /// Deletes every key in `[start, end)` from `cf`.
    pub fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) {
        self.batch.delete_range_cf(self.inner.cf(cf), start, end);
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// True if the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl Inner {
    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every column family in Cf::ALL is created by Store::open, so the handle always exists.
        match self.db.cf_handle(cf.name()) {
            Some(handle) => handle,
            None => unreachable!("column family {} is created at open", cf.name()),
        }
    }

    fn scan(
        &self,
        mut read: ReadOptions,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        read.set_iterate_upper_bound(end.to_vec());
        let iter = self.db.iterator_cf_opt(
            self.cf(cf),
            read,
            IteratorMode::From(start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| self.rocks_error("scan", e))?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn rocks_error(
        &self,
        operation: &'static str,
        source: rocksdb::Error,
    ) -> StorageError {
        StorageError::Rocks {
            operation,
            path: self.path.clone(),
            source,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database in `path` for the node `identity`.
    ///
    /// A new directory records `identity`; an existing one must carry the same identity, so a
    /// node never runs on another node's or another cluster's data.
    pub fn open(path: &Path, identity: &NodeIdentity) -> Result<Store, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_paranoid_checks(true);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        let families = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|source| {
            StorageError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let db = Arc::new(db);
        let sync_counters = Arc::new(SyncCounters::default());
        let writer = SyncedWriter::start(db.clone(), path.to_path_buf(), sync_counters.clone());
        let store = Store {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                writer,
                sync_counters,
            }),
        };
        store.check_identity(identity)?;
        Ok(store)
    }

    fn check_identity(&self, expected: &NodeIdentity) -> Result<(), StorageError> {
        let db = &self.inner.db;
        let stored = db
            .get(IDENTITY_KEY)
            .map_err(|e| self.inner.rocks_error("read node identity", e))?;
        match stored {
            Some(bytes) => {
                let found =
                    NodeIdentity::decode(&bytes).map_err(|detail| StorageError::Corrupt {
                        what: "node identity".to_string(),
                        path: self.inner.path.clone(),
                        detail,
                    })?;
                if &found != expected {
                    return Err(StorageError::ForeignDataDir {
                        path: self.inner.path.clone(),
                        found_cluster: found.cluster_id,
                        found_node: found.node_id,
                        expected_cluster: expected.cluster_id.clone(),
                        expected_node: expected.node_id,
                    });
                }
                Ok(())
            }
            None => {
                let mut opts = rocksdb::WriteOptions::default();
                opts.set_sync(true);
                db.put_opt(IDENTITY_KEY, expected.encode(), &opts)
                    .map_err(|e| self.inner.rocks_error("write node identity", e))
            }
        }
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads one key.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner
            .db
            .get_cf(self.inner.cf(cf), key)
            .map_err(|e| self.inner.rocks_error("read", e))
    }

    /// Calls `visit` for each key/value in `[start, end)` of `cf`, in key order, until it returns
    /// false.
    pub fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        self.inner
            .scan(ReadOptions::default(), cf, start, end, visit)
    }

    /// A consistent read view of the whole store as it is now. See [`StoreView`].
    pub fn view(&self) -> StoreView<'_> {
        StoreView {
            inner: &self.inner,
            snapshot: self.inner.db.snapshot(),
        }
    }

    /// The last key/value in `[start, end)` of `cf`, if any.
    pub fn last_in_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(start.to_vec());
        read.set_iterate_upper_bound(end.to_vec());
        let mut iter = self
            .inner
            .db
            .iterator_cf_opt(self.inner.cf(cf), read, IteratorMode::End);
        match iter.next() {
            Some(Ok((key, value))) => Ok(Some((key.to_vec(), value.to_vec()))),
            Some(Err(e)) => Err(self.inner.rocks_error("scan", e)),
            None => Ok(None),
        }
    }

    /// A new, empty write batch for this store.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch {
            inner: self.inner.clone(),
            batch: rocksdb::WriteBatch::default(),
        }
    }

    /// Writes `batch` atomically without waiting for fsync. Use only for data that can be
    /// rebuilt from synced data (the state machine, replayed from the synced log).
    pub fn write_buffered(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(false);
        self.inner
            .db
            .write_opt(batch.batch, &opts)
            .map_err(|e| self.inner.rocks_error("write", e))
    }

    /// Writes `batch` atomically and calls `done` once it is fsynced (or failed). Writes queued
    /// at the same time share one fsync. `done` runs on the writer thread: it must not block.
    pub fn write_synced(
        &self,
        batch: WriteBatch,
        done: impl FnOnce(Result<(), StorageError>) + Send + 'static,
    ) {
        let completion: Completion = Box::new(done);
        self.inner.writer.submit(batch.batch, completion);
    }

    /// Writes `batch` atomically and blocks the calling thread until it is fsynced.
    pub fn write_synced_blocking(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write_synced(batch, move |result| {
            let _ = tx.send(result);
        });
        rx.recv().map_err(|_| StorageError::Closed {
            path: self.inner.path.clone(),
        })?
    }

    /// Makes every write so far durable (fsyncs the WAL).
    pub fn sync_wal(&self) -> Result<(), StorageError> {
        let started = Instant::now();
        let synced = self.inner.db.flush_wal(true);
        self.inner
            .sync_counters
            .record_fsync(0, started.elapsed(), synced.is_err());
        synced.map_err(|e| self.inner.rocks_error("sync WAL", e))
    }

    /// The store's durable-write counters since it was opened (for metrics).
    pub fn sync_stats(&self) -> SyncStats {
        self.inner.sync_counters.read()
    }

    pub(crate) fn cf_handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.inner.cf(cf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cluster: &str, node: u64) -> NodeIdentity {
        NodeIdentity {
            cluster_id: cluster.to_string(),
            node_id: node,
        }
    }

    #[test]
    fn synced_write_is_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &identity("c1", 1)).unwrap();
            let mut batch = store.batch();
            batch.put(Cf::State, b"k1", b"v1");
            batch.put(Cf::RaftLog, b"k2", b"v2");
            store.write_synced_blocking(batch).unwrap();
        }
        let store = Store::open(dir.path(), &identity("c1", 1)).unwrap();
        assert_eq!(store.get(Cf::State, b"k1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(store.get(Cf::RaftLog, b"k2").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(store.get(Cf::RaftMeta, b"k1").unwrap(), None);
    }

    #[test]
    fn foreign_data_dir_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &identity("cluster-a", 1)).unwrap());
        let err = Store::open(dir.path(), &identity("cluster-b", 1))
            .err()
            .expect("a data dir of cluster-a must not open as cluster-b");
        let message = err.to_string();
        assert!(
            message.contains("cluster-a") && message.contains("cluster-b"),
            "{message}"
        );
        let err = Store::open(dir.path(), &identity("cluster-a", 2))
            .err()
            .expect("node 1's data dir must not open as node 2");
        assert!(matches!(
            err,
            StorageError::ForeignDataDir { found_node: 1, .. }
        ));
        Store::open(dir.path(), &identity("cluster-a", 1)).unwrap();
    }

    #[test]
    fn a_view_sees_the_store_as_it_was_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &identity("c", 1)).unwrap();
        let mut batch = store.batch();
        batch.put(Cf::State, b"a", b"old");
        batch.put(Cf::State, b"b", b"old");
        store.write_buffered(batch).unwrap();
        let view = store.view();
        let mut batch = store.batch();
        batch.put(Cf::State, b"a", b"new");
        batch.delete(Cf::State, b"b");
        batch.put(Cf::State, b"c", b"new");
        store.write_buffered(batch).unwrap();

        assert_eq!(view.get(Cf::State, b"a").unwrap(), Some(b"old".to_vec()));
        assert_eq!(view.get(Cf::State, b"b").unwrap(), Some(b"old".to_vec()));
        assert_eq!(view.get(Cf::State, b"c").unwrap(), None);
        let mut seen = Vec::new();
        view.scan(Cf::State, b"a", b"z", |key, value| {
            seen.push((key.to_vec(), value.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"old".to_vec()),
                (b"b".to_vec(), b"old".to_vec())
            ]
        );
        assert_eq!(store.get(Cf::State, b"a").unwrap(), Some(b"new".to_vec()));
    }

    #[test]
    fn scan_and_last_respect_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &identity("c", 1)).unwrap();
        let mut batch = store.batch();
        for key in [b"a1", b"b1", b"b2", b"b3", b"c1"] {
            batch.put(Cf::State, key, key);
        }
        store.write_buffered(batch).unwrap();
        let mut seen = Vec::new();
        store
            .scan(Cf::State, b"b", b"c", |k, _| {
                seen.push(k.to_vec());
                seen.len() < 2
            })
            .unwrap();
        assert_eq!(seen, vec![b"b1".to_vec(), b"b2".to_vec()]);
        let last = store.last_in_range(Cf::State, b"b", b"c").unwrap();
        assert_eq!(last.map(|(k, _)| k), Some(b"b3".to_vec()));
        assert_eq!(store.last_in_range(Cf::State, b"d", b"e").unwrap(), None);
    }

    /// Queues `count` synced one-key batches at once; how many succeeded.
    fn write_synced_batches(store: &Store, count: u32) -> usize {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..count {
            let mut batch = store.batch();
            batch.put(Cf::RaftLog, &i.to_be_bytes(), b"x");
            let tx = tx.clone();
            store.write_synced(batch, move |r| tx.send(r.is_ok()).unwrap());
        }
        drop(tx);
        rx.iter().filter(|ok| *ok).count()
    }

    #[test]
    fn concurrent_synced_writes_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &identity("c", 1)).unwrap();
        assert_eq!(write_synced_batches(&store, 500), 500);
        assert!(store
            .get(Cf::RaftLog, &499u32.to_be_bytes())
            .unwrap()
            .is_some());
    }

    #[test]
    fn sync_stats_count_every_synced_batch_and_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &identity("c", 1)).unwrap();
        assert_eq!(store.sync_stats(), SyncStats::default());
        assert_eq!(write_synced_batches(&store, 100), 100);
        let stats = store.sync_stats();
        assert_eq!(stats.synced_batches, 100);
        assert!((1..=100).contains(&stats.fsyncs), "{stats:?}");
        assert_eq!(stats.failed_fsyncs, 0);
        store.sync_wal().unwrap();
        let after = store.sync_stats();
        assert_eq!(after.fsyncs, stats.fsyncs + 1);
        assert_eq!(after.synced_batches, 100);
    }
}
