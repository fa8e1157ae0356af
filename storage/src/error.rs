//! Storage errors: each names the file, directory or record involved and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused to open the data directory (corrupt or truncated files, bad permissions).
    #[error(
        "cannot open the data directory {path}: {source}. If another keel process uses this \
         directory, stop it first; if a file named above is damaged, restore this node's data dir \
         from a backup, or empty it and re-add the node to the cluster"
    )]
    Open {
        /// The data directory.
        path: PathBuf,
        /// RocksDB's own explanation, usually naming the damaged file.
        source: rocksdb::Error,
    },
    /// The data directory belongs to another cluster or another node id.
    #[error(
        "the data directory {path} belongs to cluster {found_cluster:?} node {found_node}, but this \
         node is configured as cluster {expected_cluster:?} node {expected_node}; point --data-dir at \
         this node's own directory or at an empty one"
    )]
    ForeignDataDir {
        /// The data directory.
        path: PathBuf,
        /// Cluster id recorded in the directory.
        found_cluster: String,
        /// Node id recorded in the directory.
        found_node: u64,
        /// Cluster id this process was configured with.
        expected_cluster: String,
        /// Node id this process was configured with.
        expected_node: u64,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record {what} in {path}: {detail}")]
    Corrupt {
        /// Which record (for example "node identity" or "raft log entry 42 of group 3").
        what: String,
        /// The data directory.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// A RocksDB read or write failed.
    #[error("storage {operation} failed in {path}: {source}")]
    Rocks {
        /// What was being done.
        operation: &'static str,
        /// The data directory.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A snapshot file could not be read or written.
    #[error("snapshot file {path}: {source}")]
    SnapshotFile {
        /// The SST file.
        path: PathBuf,
        /// The I/O or RocksDB error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The synced-write thread has stopped (the store is shutting down).
    #[error("the store at {path} is closed")]
    Closed {
        /// The data directory.
        path: PathBuf,
    },
}
