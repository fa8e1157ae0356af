//! keel-raft: many Raft groups in one process over one RocksDB (openraft 0.9).
//!
//! It owns openraft's type configuration, the log store and state machine of each group over
//! keel-storage, the peer transport over tonic (one channel per peer, every message tagged with
//! cluster, group and node ids), the registry that creates, opens and closes groups, proposal
//! batching, linearizable reads, leadership metrics and handover, counters of proposals and
//! peer messages (read by the node's metrics exporter), bootstrap and membership
//! change.
//!
//! It must not know what the groups replicate: commands are opaque bytes handed to an
//! [`Applier`]. No Temporal types, no business logic, no clocks in the apply path.

// openraft's storage traits return its own (large) StorageError and ConfigError; the helpers
// that build them return the same types, so boxing would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

mod applier;
mod codec;
mod config;
mod error;
mod group;
mod handover;
pub mod kv;
mod log_limit;
mod log_store;
mod network;
mod peer_stats;
pub mod peer_stream;
mod proposal_stats;
mod recent_entries;
mod records;
mod registry;
mod service;
mod snapshot_file;
mod state_machine;
mod types;

pub use applier::{Applier, GroupWrites};
pub use config::GroupConfig;
pub use error::{GroupError, ProposeError, ReadError};
pub use group::{Committed, ShardGroup, MAX_COMMAND_BYTES};
pub use keel_storage::GroupId;
pub use log_store::GroupLogStore;
pub use network::LinkFaults;
pub use peer_stats::{MessageKind, PeerMessageStats};
pub use peer_stream::TransportStreams;
pub use proposal_stats::ProposalStats;
pub use registry::GroupRegistry;
pub use service::RaftTransportService;
pub use snapshot_file::SnapshotFile;
pub use state_machine::GroupStateMachine;
pub use types::{Applied, BasicNode, KeelRaft, NodeId, Proposal};
