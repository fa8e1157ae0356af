//! An in-process cluster of Keel Raft nodes on 127.0.0.x, with kill, restart, partition and
//! replace operations, and a client that routes proposals and reads to group leaders.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use keel_proto::raft::raft_transport_server::RaftTransportServer;
use keel_raft::kv::{KvApplier, KvCommand};
use keel_raft::{
    GroupConfig, GroupId, GroupRegistry, LinkFaults, NodeId, RaftTransportService, ShardGroup,
    TransportStreams,
};
use keel_storage::{NodeIdentity, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Cluster id of every in-process test cluster.
pub const CLUSTER_ID: &str = "keel-test";

struct RunningNode {
    registry: Arc<GroupRegistry>,
    stop: oneshot::Sender<()>,
    peer_streams: TransportStreams,
    server: JoinHandle<()>,
}

/// One node slot: its address, data dir and, while it runs, its registry and server.
pub struct TestNode {
    /// Node id.
    pub id: NodeId,
    /// Peer address.
    pub addr: SocketAddr,
    /// Data directory (RocksDB under db/, snapshots under snapshots/).
    pub dir: PathBuf,
    faults: LinkFaults,
    running: Option<RunningNode>,
}

/// Several nodes in this process.
pub struct TestCluster {
    /// Node slots by id.
    pub nodes: BTreeMap<NodeId, TestNode>,
    /// Groups every node hosts (0 = metadata group, 1..=shards).
    pub groups: Vec<GroupId>,
    config: GroupConfig,
    _root: tempfile::TempDir,
}

/// Group timing for tests: the defaults, but quicker elections so scenarios finish fast.
pub fn test_group_config() -> GroupConfig {
    GroupConfig {
        heartbeat: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        ..GroupConfig::default()
    }
}

fn free_addr(host: &str) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(format!("{host}:0"))
        .with_context(|| format!("bind {host}:0 (is {host} routable on this machine?)"))?;
    Ok(listener.local_addr()?)
}

async fn open_store(dir: &std::path::Path, id: NodeId) -> anyhow::Result<Store> {
    let identity = NodeIdentity {
        cluster_id: CLUSTER_ID.to_string(),
        node_id: id,
    };
    // A node killed a moment ago may still be releasing its RocksDB lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(&dir.join("db"), &identity) {
            Ok(store) => return Ok(store),
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl TestCluster {
    /// Starts `nodes` nodes hosting the metadata group and `shards` shard groups; group `g` is
    /// initialized by node `g mod nodes + 1`, spreading first leaderships.
    pub async fn start(
        nodes: u64,
        shards: u64,
        config: GroupConfig,
    ) -> anyhow::Result<TestCluster> {
        let root = tempfile::tempdir()?;
        let mut cluster = TestCluster {
            nodes: BTreeMap::new(),
            groups: (0..=shards).collect(),
            config,
            _root: root,
        };
        for id in 1..=nodes {
            cluster.add_slot(id)?;
        }
        let members = cluster.members();
        for id in 1..=nodes {
            cluster.start_node(id).await?;
            let node = cluster.node(id)?;
            for &group in &cluster.groups {
                let handle = node.registry()?.create(group).await?;
                if group % nodes + 1 == id {
                    handle.initialize(&members).await?;
                }
            }
        }
        cluster.wait_for_leaders(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    /// Adds an empty slot for node `id` on 127.0.0.`id` (not started).
    pub fn add_slot(&mut self, id: NodeId) -> anyhow::Result<()> {
        let host = format!("127.0.0.{id}");
        let addr = free_addr(&host)?;
        let dir = self._root.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)?;
        self.nodes.insert(
            id,
            TestNode {
                id,
                addr,
                dir,
                faults: LinkFaults::default(),
                running: None,
            },
        );
        Ok(())
    }

    /// Voters of every group as (id, address), for the slots that exist.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        self.nodes
            .values()
            .map(|n| (n.id, n.addr.to_string()))
            .collect()
    }

    /// The slot of node `id`.
    pub fn node(&self, id: NodeId) -> anyhow::Result<&TestNode> {
        self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Starts node `id` from its data dir (opening the groups it hosts) and its peer server.
    pub async fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let config = self.config.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        if node.running.is_some() {
            bail!("node {id} is already running");
        }
        let store = open_store(&node.dir, id).await?;
        let registry = GroupRegistry::new(
            id,
            CLUSTER_ID,
            store,
            Arc::new(KvApplier),
            &config,
            node.dir.join("snapshots"),
            node.faults.clone(),
        )?;
        registry.open_hosted().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let peer_streams = TransportStreams::default();
        let service = RaftTransportServer::new(RaftTransportService::new(&registry, &peer_streams))
            .max_decoding_message_size(64 << 20);
        let listener = bind_retrying(node.addr).await?;
        let server = tokio::spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "test node server failed");
            }
        });
        node.running = Some(RunningNode {
            registry,
            stop,
            peer_streams,
            server,
        });
        Ok(())
    }

    /// Stops node `id` abruptly: its server and every Raft group stop, the store closes. What
    /// was fsynced stays on disk.
    pub async fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let running = node
            .running
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        let _ = running.stop.send(());
        running.peer_streams.close();
        running.server.abort();
        let _ = running.server.await;
        running.registry.shutdown().await;
        Ok(())
    }

    /// Cuts node `id` off from every other node (both directions).
    pub fn isolate(&self, id: NodeId) {
        for node in self.nodes.values() {
            if node.id == id {
                for other in self.nodes.keys().filter(|o| **o != id) {
                    node.faults.block(*other);
                }
            } else {
                node.faults.block(id);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for node in self.nodes.values() {
            node.faults.heal();
        }
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.running.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The leader of `group` as seen by a running node that is itself that leader.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.running.as_ref().map(|r| (n.id, r)))
            .find(|(id, r)| {
                r.registry
                    .get(group)
                    .is_some_and(|g| g.leader() == Some(*id))
            })
            .map(|(id, _)| id)
    }

    /// Waits until every group has a leader among the running nodes.
    pub async fn wait_for_leaders(
        &self,
        within: Duration,
    ) -> anyhow::Result<BTreeMap<GroupId, NodeId>> {
        let deadline = Instant::now() + within;
        loop {
            let leaders: BTreeMap<GroupId, NodeId> = self
                .groups
                .iter()
                .filter_map(|g| self.leader_of(*g).map(|l| (*g, l)))
                .collect();
            if leaders.len() == self.groups.len() {
                return Ok(leaders);
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} groups have a leader after {within:?}: {leaders:?}",
                    leaders.len(),
                    self.groups.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `id`'s handle of `group`, if it runs and hosts it.
    pub fn group_on(&self, id: NodeId, group: GroupId) -> Option<ShardGroup> {
        self.nodes.get(&id)?.running.as_ref()?.registry.get(group)
    }

    /// Puts `key = value` in `group` through its current leader, retrying while leadership moves.
    pub async fn put(
        &self,
        group: GroupId,
        key: &str,
        value: &str,
        within: Duration,
    ) -> anyhow::Result<u64> {
        let command = KvCommand::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
        .encode();
        let deadline = Instant::now() + within;
        loop {
            let attempt = match self.leader_of(group).and_then(|l| self.group_on(l, group)) {
                Some(leader) => leader
                    .propose(command.clone())
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(format!("group {group} has no leader")),
            };
            match attempt {
                Ok(committed) => return Ok(committed.index),
                Err(e) if Instant::now() > deadline => bail!("put {key} in group {group}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Linearizable read of `key` in `group` through its current leader.
    pub async fn get(
        &self,
        group: GroupId,
        key: &str,
        within: Duration,
    ) -> anyhow::Result<Option<String>> {
        let deadline = Instant::now() + within;
        loop {
            let attempt = match self.leader_of(group).and_then(|l| self.group_on(l, group)) {
                Some(leader) => leader.read(key.as_bytes()).await.map_err(|e| e.to_string()),
                None => Err(format!("group {group} has no leader")),
            };
            match attempt {
                Ok(value) => return Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned())),
                Err(e) if Instant::now() > deadline => bail!("get {key} in group {group}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until node `id` has applied, in every group, at least what the group's leader had
    /// applied when this was called (waiting for a leader first where a group has none).
    pub async fn wait_caught_up(&self, id: NodeId, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        for &group in &self.groups {
            let target = loop {
                if let Some(leader) = self.leader_of(group).and_then(|l| self.group_on(l, group)) {
                    break leader.metrics().borrow().last_applied.map(|l| l.index);
                }
                if Instant::now() > deadline {
                    bail!("group {group} has no leader after {within:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let node = self
                .group_on(id, group)
                .ok_or_else(|| anyhow!("node {id} does not host group {group}"))?;
            loop {
                let applied = node.metrics().borrow().last_applied.map(|l| l.index);
                if applied >= target {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {id} applied {applied:?} of group {group}, leader is at {target:?}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The registry of running node `id`.
    pub fn registry(&self, id: NodeId) -> anyhow::Result<Arc<GroupRegistry>> {
        self.node(id)?.registry()
    }
}

impl TestNode {
    /// The registry of this node, if running.
    pub fn registry(&self) -> anyhow::Result<Arc<GroupRegistry>> {
        self.running
            .as_ref()
            .map(|r| r.registry.clone())
            .ok_or_else(|| anyhow!("node {} is not running", self.id))
    }
}

async fn bind_retrying(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%addr, %e, "address busy, retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(anyhow!("bind {addr}: {e}")),
        }
    }
}
