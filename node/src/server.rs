//! Node start-up and serving: opens the store, opens or creates and bootstraps the Raft groups,
//! serves the peer transport (and the debug KV RPC) until SIGINT or SIGTERM, and the Prometheus
//! metrics if asked to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context};
use keel_proto::debug::debug_kv_server::DebugKvServer;
use keel_proto::raft::raft_transport_server::RaftTransportServer;
use keel_raft::{
    GroupConfig, GroupRegistry, LinkFaults, NodeId, RaftTransportService, TransportStreams,
};
use keel_storage::{keys, Cf, NodeIdentity, Store};
use tonic::codec::CompressionEncoding;

use crate::admin::ClusterAdminService;
use crate::debug_kv::DebugKvService;
use crate::engine::Limits;
use crate::frontend::{Frontend, Queries};
use crate::health::HealthService;
use crate::matching::{Matching, MatchingOwner};
use crate::metrics::NodeMetrics;
use crate::namespaces::{NamespaceError, NamespaceRecord, Namespaces};
use crate::shard::applier::WriteSetApplier;
use crate::shard::forwarding::ShardForwardingService;
use crate::shard::{Shard, ShardContext, SystemClock};
use crate::shard_count::agree_on_shard_count;
use keel_proto::admin::cluster_admin_server::ClusterAdminServer;
use keel_proto::shard::shard_forwarding_server::ShardForwardingServer;
use keel_proto::temporal_services::health::health_server::HealthServer;
use keel_proto::temporal_services::operatorservice::operator_service_server::OperatorServiceServer;
use keel_proto::temporal_services::workflowservice::workflow_service_server::WorkflowServiceServer;

/// One member of the initial cluster: `ID=HOST:PORT`.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    pub id: NodeId,
    pub addr: String,
}

impl FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("peer {s:?} is not ID=HOST:PORT"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|e| format!("peer id {id:?} in {s:?} is not a number: {e}"))?;
        Ok(PeerSpec {
            id,
            addr: addr.trim().to_string(),
        })
    }
}

/// How many shard groups a node has: a count the user gave, which an existing data dir must have
/// been created with, or a default, which only a new data dir takes (an existing one keeps the
/// count it was created with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardCount {
    /// `--shards N` (or `shards:` in the config file).
    Given(u64),
    /// Nothing given.
    Default(u64),
}

impl ShardCount {
    /// `given`, else `default`.
    pub fn or_default(given: Option<u64>, default: u64) -> ShardCount {
        given.map_or(ShardCount::Default(default), ShardCount::Given)
    }

    fn count(self) -> u64 {
        match self {
            ShardCount::Given(count) | ShardCount::Default(count) => count,
        }
    }
}

/// Where a node keeps its RocksDB inside its data dir (present once the node has started).
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub listen: String,
    /// Where to serve Prometheus metrics (`/metrics`); None: not served.
    pub metrics_listen: Option<String>,
    pub peers: Vec<PeerSpec>,
    pub data_dir: PathBuf,
    pub shards: ShardCount,
    pub debug_kv: bool,
    /// Create namespace `default` if missing (keel dev).
    pub default_namespace: bool,
    /// A fresh node joining a running cluster: host every group but initialize none, and wait
    /// for `keel cluster add-node`.
    pub join: bool,
    /// Engine limits and defaults.
    pub limits: Limits,
    /// Longest a poll waits before an empty answer.
    pub long_poll: std::time::Duration,
}

impl NodeConfig {
    fn validate(&self) -> anyhow::Result<BTreeMap<NodeId, String>> {
        if self.node_id == 0 {
            bail!("--node-id must be greater than 0");
        }
        if self.cluster_id.is_empty() {
            bail!("--cluster-id must not be empty");
        }
        if !(1..=1024).contains(&self.shards.count()) {
            bail!(
                "--shards must be between 1 and 1024, got {}",
                self.shards.count()
            );
        }
        let mut members = BTreeMap::new();
        for peer in &self.peers {
            if members.insert(peer.id, peer.addr.clone()).is_some() {
                bail!("peer id {} is listed twice", peer.id);
            }
        }
        if !members.contains_key(&self.node_id) {
            bail!(
                "this node's id {} is not among the peers {:?}",
                self.node_id,
                members.keys().collect::<Vec<_>>()
            );
        }
        Ok(members)
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let members = config.validate()?;
    let listen: SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("--listen {:?} is not HOST:PORT", config.listen))?;
    let metrics = NodeMetrics::new()?;
    // Bound before anything else starts, so a port in use stops the node at once.
    let metrics_server = match &config.metrics_listen {
        Some(addr) => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("--metrics-listen {addr:?} is not HOST:PORT"))?;
            let endpoint = metrics.endpoint(addr).await?;
            tracing::info!(addr = %endpoint.local_addr()?, "serving Prometheus metrics at /metrics");
            Some(tokio::spawn(endpoint.serve()))
        }
        None => None,
    };
    let identity = NodeIdentity {
        cluster_id: config.cluster_id.clone(),
        node_id: config.node_id,
    };
    let store = Store::open(&db_dir(&config.data_dir), &identity)?;
    let applier = WriteSetApplier::default();
    let runs = applier.runs.clone();
    let registry = GroupRegistry::new(
        config.node_id,
        &config.cluster_id,
        store.clone(),
        Arc::new(applier),
        &GroupConfig::default(),
        config.data_dir.join("snapshots"),
        LinkFaults::default(),
    )?;
    registry.open_hosted().await?;
    let shard_count = match (recorded_shard_count(&store)?, config.shards) {
        (None, wanted) if config.join => {
            let shards = wanted.count();
            for group in 0..=shards {
                registry.create(group).await?;
            }
            record_shard_count(&store, shards)?;
            tracing::info!(
                node = config.node_id,
                shards,
                "joined as an empty member: add it with `keel cluster add-node`"
            );
            shards
        }
        (None, wanted) => {
            let shards = wanted.count();
            bootstrap(&registry, &members, config.node_id, shards).await?;
            record_shard_count(&store, shards)?;
            shards
        }
        (Some(recorded), ShardCount::Default(_)) => recorded,
        (Some(recorded), ShardCount::Given(given)) if recorded == given => recorded,
        (Some(recorded), ShardCount::Given(given)) => {
            registry.shutdown().await;
            bail!(
                "the data directory {} was created with {recorded} shard groups but --shards is {given}: the shard count is fixed when the cluster is created; start with --shards {recorded} (or without --shards)",
                config.data_dir.display(),
            );
        }
    };
    let metadata = registry
        .get(0)
        .context("the metadata group (0) is not hosted on this node")?;
    let clock = Arc::new(SystemClock);
    let matching = Arc::new(Matching::default());
    metrics.watch_node(&registry, store.clone(), matching.clone())?;
    let peers = Arc::new(crate::shard::forwarding::PeerClients::default());
    let namespaces = Arc::new(Namespaces::load(metadata.clone(), peers.clone())?);
    let deployments = Arc::new(crate::deployments::Deployments::load(namespaces.clone())?);
    let routing = deployments.clone();
    matching.set_routing_source(Box::new(move || routing.routing()));
    let context = Arc::new(ShardContext {
        matching: matching.clone(),
        clock: clock.clone(),
        limits: config.limits.clone(),
        namespaces: namespaces.clone(),
        deployments: deployments.clone(),
        shards: std::sync::OnceLock::new(),
        peers,
        owner: MatchingOwner::new(metadata.clone()),
        runs,
    });
    let mut shards = Vec::new();
    for group in 1..=shard_count {
        let handle = registry
            .get(group)
            .with_context(|| format!("shard group {group} is not hosted on this node"))?;
        shards.push(Shard::start(group, handle, context.clone()));
    }
    let _ = context
        .shards
        .set(shards.iter().map(Arc::downgrade).collect());
    let mismatch = Arc::new(std::sync::Mutex::new(None));
    let misconfigured = Arc::new(tokio::sync::Notify::new());
    {
        let (metadata, mismatch, misconfigured) =
            (metadata.clone(), mismatch.clone(), misconfigured.clone());
        tokio::spawn(async move {
            if let Err(error) = agree_on_shard_count(metadata, shard_count).await {
                tracing::error!(%error, "stopping");
                *mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                misconfigured.notify_one();
            }
        });
    }
    tokio::spawn(crate::shard::balance::balance_leadership(
        Arc::downgrade(&registry),
        shards.iter().map(Arc::downgrade).collect(),
    ));
    if config.default_namespace {
        // In the background: the metadata group may need peers that only answer once this node
        // serves its Raft transport below.
        let namespaces = namespaces.clone();
        tokio::spawn(async move {
            if let Err(error) = ensure_namespace(&namespaces, "default").await {
                tracing::error!(%error, "namespace default could not be created");
            }
        });
    }
    let peer_streams = TransportStreams::default();
    let forwarding = ShardForwardingServer::new(ShardForwardingService {
        shards: shards.iter().map(Arc::downgrade).collect(),
        metadata: metadata.clone(),
        matching: matching.clone(),
        streams: peer_streams.clone(),
    })
    .max_decoding_message_size(MAX_CLIENT_MESSAGE)
    .max_encoding_message_size(MAX_CLIENT_MESSAGE);
    let queue_configs = Arc::new(crate::queue_configs::QueueConfigs::load(
        namespaces.clone(),
    )?);
    let frontend = Frontend {
        queue_configs,
        namespaces,
        deployments,
        shards,
        matching,
        queries: Arc::new(Queries::default()),
        clock,
        limits: config.limits.clone(),
        long_poll: config.long_poll,
        cluster_id: config.cluster_id.clone(),
        owner: MatchingOwner::new(metadata.clone()),
        matching_clients: Default::default(),
        history_long_polls: metrics.history_long_polls(),
    };
    tracing::info!(
        node = config.node_id,
        cluster = %config.cluster_id,
        %listen,
        groups = registry.groups().len(),
        "keel node serving the Temporal API and the Raft transport{}",
        if config.debug_kv { " and debug KV" } else { "" }
    );
    let transport = RaftTransportServer::new(RaftTransportService::new(&registry, &peer_streams))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let debug_kv = config.debug_kv.then(|| {
        DebugKvServer::new(DebugKvService::new(registry.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
    });
    let frontend = Arc::new(frontend);
    let workflow = WorkflowServiceServer::from_arc(frontend.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE);
    let operator = OperatorServiceServer::from_arc(frontend)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(metrics.grpc_layer())
        .add_service(transport)
        .add_service(workflow)
        .add_service(operator)
        .add_service(forwarding)
        .add_service(HealthServer::new(HealthService))
        .add_service(ClusterAdminServer::new(ClusterAdminService {
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
            registry: registry.clone(),
        }))
        .add_optional_service(debug_kv)
        .serve_with_shutdown(listen, async {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = misconfigured.notified() => {}
            }
            peer_streams.close();
        })
        .await
        .with_context(|| format!("cannot serve on {listen}"));
    if let Some(server) = metrics_server {
        server.abort();
    }
    registry.shutdown().await;
    if let Some(error) = mismatch.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(error.into());
    }
    served
}

/// Largest client request or response (Temporal's gRPC limit).
const MAX_CLIENT_MESSAGE: usize = 128 << 20;

/// Creates namespace `name` unless it exists, waiting (bounded) for the metadata group to elect
/// its leader; only the metadata group's leader creates it.
async fn ensure_namespace(namespaces: &Namespaces, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        if namespaces.by_name(name).is_some() {
            return Ok(());
        }
        let record = NamespaceRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            description: "Default namespace for Keel".to_string(),
            owner_email: String::new(),
            retention_ms: 24 * 3600 * 1000,
            data: Default::default(),
            state: temporalio_protos::temporal::api::enums::v1::NamespaceState::Registered as i32,
        };
        match namespaces.write(record, true).await {
            Ok(()) | Err(NamespaceError::AlreadyExists(_)) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "waiting for the metadata group to create namespace {name}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => bail!("cannot create namespace {name}: {error}"),
        }
    }
}

/// Raft-meta record (under the metadata group's prefix) of the shard count this node was
/// bootstrapped with; written only once bootstrap has finished.
const SHARD_COUNT: &[u8] = b"bootstrapped-shards";

fn recorded_shard_count(store: &Store) -> anyhow::Result<Option<u64>> {
    let Some(bytes) = store.get(Cf::RaftMeta, &keys::meta_key(0, SHARD_COUNT))? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "corrupt shard-count record ({} bytes) in {}",
            bytes.len(),
            store.path().display()
        )
    })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

fn record_shard_count(store: &Store, shards: u64) -> anyhow::Result<()> {
    let mut batch = store.batch();
    batch.put(
        Cf::RaftMeta,
        &keys::meta_key(0, SHARD_COUNT),
        &shards.to_be_bytes(),
    );
    Ok(store.write_synced_blocking(batch)?)
}

/// Hosts the metadata group and every shard group on a node that has not finished bootstrap
/// (both steps are idempotent, so a bootstrap a crash interrupted is simply run again). Group
/// `g` is initialized by the member at position `g mod n` of the sorted peer list, which spreads
/// first leaderships across nodes; the others wait to be contacted.
async fn bootstrap(
    registry: &GroupRegistry,
    members: &BTreeMap<NodeId, String>,
    node_id: NodeId,
    shards: u64,
) -> anyhow::Result<()> {
    let ids: Vec<NodeId> = members.keys().copied().collect();
    for group in 0..=shards {
        let handle = registry.create(group).await?;
        let slot = usize::try_from(group).unwrap_or(0) % ids.len();
        if ids[slot] == node_id {
            handle.initialize(members).await?;
        }
    }
    tracing::info!(node = node_id, shards, "bootstrapped a new node");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
