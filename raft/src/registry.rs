//! The groups a node hosts: creates, opens (at start-up, from what is recorded on disk) and
//! closes them, and finds them for the transport and for callers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use keel_storage::{keys, Cf, GroupId, Store};
use openraft::Raft;

use crate::applier::Applier;
use crate::config::GroupConfig;
use crate::error::GroupError;
use crate::group::ShardGroup;
use crate::log_store::GroupLogStore;
use crate::network::{GroupNetwork, LinkFaults, Peers};
use crate::peer_stats::{CountedNetwork, PeerMessageCounters, PeerMessageStats};
use crate::records::write_synced;
use crate::state_machine::GroupStateMachine;
use crate::types::NodeId;

/// Raft-meta record marking that this node hosts a group.
const HOSTED: &[u8] = b"hosted";

/// Every Raft group hosted by one node, sharing its store and peer connections.
pub struct GroupRegistry {
    node_id: NodeId,
    cluster_id: String,
    store: Store,
    applier: Arc<dyn Applier>,
    peers: Arc<Peers>,
    peer_messages: Arc<PeerMessageCounters>,
    raft_config: Arc<openraft::Config>,
    quorum_wait: std::time::Duration,
    snapshot_root: PathBuf,
    groups: RwLock<BTreeMap<GroupId, ShardGroup>>,
}

impl GroupRegistry {
    /// A registry for node `node_id` of `cluster_id`, storing in `store`, applying committed
    /// commands with `applier`, keeping snapshot files under `snapshot_root`.
    pub fn new(
        node_id: NodeId,
        cluster_id: &str,
        store: Store,
        applier: Arc<dyn Applier>,
        config: &GroupConfig,
        snapshot_root: PathBuf,
        faults: LinkFaults,
    ) -> Result<Arc<GroupRegistry>, GroupError> {
        let raft_config = config
            .to_openraft(cluster_id)
            .map_err(|e| GroupError::Raft {
                group: 0,
                operation: "validate raft configuration",
                reason: e.to_string(),
            })?;
        Ok(Arc::new(GroupRegistry {
            node_id,
            cluster_id: cluster_id.to_string(),
            store,
            applier,
            peers: Peers::new(node_id, cluster_id.to_string(), faults),
            peer_messages: Arc::default(),
            raft_config: Arc::new(raft_config),
            quorum_wait: config.quorum_wait,
            snapshot_root,
            groups: RwLock::new(BTreeMap::new()),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The link-fault seam of this node.
    pub fn faults(&self) -> &LinkFaults {
        self.peers.faults()
    }

    /// The Raft messages this node sent to each peer (all groups together), by kind.
    pub fn peer_message_stats(&self) -> Vec<PeerMessageStats> {
        self.peer_messages.read()
    }

    /// Opens every group recorded as hosted on this node; returns their ids.
    pub async fn open_hosted(&self) -> Result<Vec<GroupId>, GroupError> {
        let mut hosted = Vec::new();
        self.store
            .scan(Cf::RaftMeta, &[], &[0xff; 9], |key, _| {
                if key.len() == keys::GROUP_PREFIX_LEN + HOSTED.len() && key.ends_with(HOSTED) {
                    hosted.extend(keys::group_of(key));
                }
                true
            })
            .map_err(|e| GroupError::Storage {
                group: 0,
                source: Box::new(e),
            })?;
        for group in &hosted {
            self.open(*group).await?;
        }
        Ok(hosted)
    }

    /// Hosts `group` on this node (recording it durably) and starts its Raft instance. Returns
    /// the running group if it is already open.
    pub async fn create(&self, group: GroupId) -> Result<ShardGroup, GroupError> {
        if let Some(existing) = self.get(group) {
            return Ok(existing);
        }
        let mut batch = self.store.batch();
        batch.put(Cf::RaftMeta, &keys::meta_key(group, HOSTED), &[]);
        write_synced(&self.store, batch)
            .await
            .map_err(|e| GroupError::Storage {
                group,
                source: Box::new(e),
            })?;
        self.open(group).await
    }

    async fn open(&self, group: GroupId) -> Result<ShardGroup, GroupError> {
        let storage = |e: openraft::StorageError<NodeId>| GroupError::Storage {
            group,
            source: Box::new(e),
        };
        let log = GroupLogStore::new(self.store.clone(), group);
        let snapshot_dir = self.snapshot_root.join(format!("group-{group}"));
        let state = GroupStateMachine::open(
            self.store.clone(),
            group,
            self.applier.clone(),
            snapshot_dir,
        )
        .await
        .map_err(storage)?;
        let network = CountedNetwork::new(
            GroupNetwork::new(group, self.peers.clone()),
            self.peer_messages.clone(),
        );
        let raft = Raft::new(self.node_id, self.raft_config.clone(), network, log, state)
            .await
            .map_err(|e| GroupError::Raft {
                group,
                operation: "start",
                reason: e.to_string(),
            })?;
        let handle = ShardGroup::start(
            group,
            self.node_id,
            raft,
            self.store.clone(),
            self.quorum_wait,
        );
        let mut groups = self.groups.write().map_err(|_| GroupError::Raft {
            group,
            operation: "register",
            reason: "group registry lock poisoned".to_string(),
        })?;
        Ok(groups.entry(group).or_insert(handle).clone())
    }

    /// The running group `group`, if hosted here.
    pub fn get(&self, group: GroupId) -> Option<ShardGroup> {
        self.groups.read().ok()?.get(&group).cloned()
    }

    /// Every running group, in id order.
    pub fn groups(&self) -> Vec<ShardGroup> {
        self.groups
            .read()
            .map(|groups| groups.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes node `to` the leader of `group`, which this node leads, if `to` is a caught-up
    /// voter (see [`crate::handover`]). The group makes no progress for about an election
    /// timeout meanwhile; proposals and reads wait rather than fail.
    pub async fn hand_over(&self, group: GroupId, to: NodeId) -> Result<(), GroupError> {
        let lease = std::time::Duration::from_millis(self.raft_config.election_timeout_max);
        crate::handover::hand_over(&self.hosted(group)?, &self.peers, to, lease).await
    }

    /// Checks that node `to` is another voter of `group` and answers, as a handover to it
    /// would first check.
    pub async fn probe_voter(&self, group: GroupId, to: NodeId) -> Result<(), GroupError> {
        crate::handover::probe(&self.hosted(group)?, &self.peers, to)
            .await
            .map(|_| ())
    }

    fn hosted(&self, group: GroupId) -> Result<ShardGroup, GroupError> {
        self.get(group).ok_or_else(|| GroupError::Raft {
            group,
            operation: "find group",
            reason: format!("the group is not hosted on node {}", self.node_id),
        })
    }

    /// Stops group `group` on this node (its data stays on disk and it reopens at the next
    /// start). Returns false if it was not running.
    pub async fn close(&self, group: GroupId) -> bool {
        let closed = match self.groups.write() {
            Ok(mut groups) => groups.remove(&group),
            Err(_) => None,
        };
        match closed {
            Some(handle) => {
                handle.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Stops every group (their data stays on disk).
    pub async fn shutdown(&self) {
        let groups = match self.groups.write() {
            Ok(mut groups) => std::mem::take(&mut *groups),
            Err(_) => return,
        };
        for group in groups.values() {
            group.shutdown().await;
        }
    }
}
