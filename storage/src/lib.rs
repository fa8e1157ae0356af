//! keel-storage: the one RocksDB a Keel node keeps all of its state in.
//!
//! It owns the column families (Raft logs, Raft metadata, replicated state), the key encoding
//! (group id first, big-endian, so one group's keys form one ordered range), the node's identity
//! record (cluster id and node id, checked on every open), durable writes (a write is acknowledged
//! only after the WAL is fsynced; concurrent writers share one fsync), consistent read views
//! (RocksDB snapshots) and per-group snapshot files (a group's state range exported from a view
//! to an SST file and ingested on the receiver).
//!
//! It must not know about Raft, Temporal or any business logic: it stores bytes under keys.

mod error;
pub mod keys;
mod sst;
mod store;
mod sync_stats;
mod synced_writer;

pub use error::StorageError;
pub use keys::GroupId;
pub use sst::ExportedRange;
pub use store::{Cf, KeyValue, NodeIdentity, Store, StoreView, WriteBatch};
pub use sync_stats::SyncStats;
