//! openraft type configuration shared by every group, and the log payload Keel proposes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use openraft::BasicNode;

use crate::snapshot_file::SnapshotFile;

/// A node's id within its cluster.
pub type NodeId = u64;

/// One Raft log payload: a batch of opaque commands proposed together (group commit). Each
/// command is applied in order by the group's [`Applier`](crate::Applier).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The commands, in proposal order.
    pub commands: Vec<Bytes>,
}

/// What applying one log entry produced: one response per command of its [`Proposal`]
/// (empty for blank and membership entries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The responses, in command order.
    pub responses: Vec<Bytes>,
}

openraft::declare_raft_types!(
    /// Keel's openraft type configuration.
    pub KeelRaft:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<KeelRaft>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<KeelRaft>,
);
