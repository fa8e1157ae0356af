//! Errors of the Raft layer that callers act on. A proposal that fails may still have been
//! committed (for example when leadership changed after it was appended): callers treat every
//! failure other than [`ProposeError::Rejected`] as an unknown outcome and retry idempotently.

use keel_storage::GroupId;

use crate::types::NodeId;

/// Why a proposal was not acknowledged.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead the group; retry on the leader, if known.
    #[error("node {node} is not the leader of raft group {group}{}; retry there", leader_hint(*leader, leader_addr.as_deref()))]
    NotLeader {
        /// The group.
        group: GroupId,
        /// This node.
        node: NodeId,
        /// The leader, if this node knows it.
        leader: Option<NodeId>,
        /// The leader's peer address, if known.
        leader_addr: Option<String>,
    },
    /// The command was refused before it was proposed (nothing was written).
    #[error("proposal to raft group {group} refused: {reason}")]
    Rejected {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The group is shutting down or failed; the outcome is unknown.
    #[error("raft group {group} on node {node} is unavailable ({reason}); the write may or may not have been committed")]
    Unavailable {
        /// The group.
        group: GroupId,
        /// This node.
        node: NodeId,
        /// What happened.
        reason: String,
    },
}

/// Why a linearizable read could not be served here.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReadError {
    /// This node does not lead the group (or could not confirm it still does).
    #[error("node {node} cannot serve a linearizable read of raft group {group}{}; retry there", leader_hint(*leader, leader_addr.as_deref()))]
    NotLeader {
        /// The group.
        group: GroupId,
        /// This node.
        node: NodeId,
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The leader's peer address, if known.
        leader_addr: Option<String>,
    },
    /// Storage failed or the group is shutting down.
    #[error("read of raft group {group} failed: {reason}")]
    Unavailable {
        /// The group.
        group: GroupId,
        /// What happened.
        reason: String,
    },
}

/// Why a group could not be created, opened, initialized or reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Storage failed.
    #[error("raft group {group}: {source}")]
    Storage {
        /// The group.
        group: GroupId,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// openraft refused the operation.
    #[error("raft group {group}: {operation} failed: {reason}")]
    Raft {
        /// The group.
        group: GroupId,
        /// What was attempted.
        operation: &'static str,
        /// openraft's explanation.
        reason: String,
    },
}

fn leader_hint(leader: Option<NodeId>, addr: Option<&str>) -> String {
    match (leader, addr) {
        (Some(id), Some(addr)) => format!(" (leader: node {id} at {addr})"),
        (Some(id), None) => format!(" (leader: node {id})"),
        _ => " (leader unknown)".to_string(),
    }
}
