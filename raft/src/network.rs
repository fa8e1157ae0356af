//! Client side of the Raft transport: one lazily connected HTTP/2 channel per peer address,
//! shared by every group on the node; each message is tagged with cluster, group and node ids.
//! AppendEntries, the bulk of the traffic, go over the peer's message stream
//! ([`PeerStream`]); votes, snapshots and handover steps are calls of their own.
//! [`LinkFaults`] is the seam tests use to cut links without touching sockets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keel_proto::raft::raft_transport_client::RaftTransportClient;
use keel_proto::raft::{RaftHeader, RaftReply, RaftRequest, RaftStreamReply, RaftStreamRequest};
use keel_storage::GroupId;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::snapshot_transport::{Chunked, SnapshotTransport};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::codec;
use crate::handover::{HandoverReply, HandoverStep};
use crate::log_limit::{LogLimiter, PEER_LOG_INTERVAL};
use crate::peer_stream::{refused, PeerStream};
use crate::types::{BasicNode, KeelRaft, NodeId};

/// Longest a handover step waits for the peer's answer.
const HANDOVER_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// Links this node currently cannot use (test seam for partitions). Empty in production.
#[derive(Clone, Debug, Default)]
pub struct LinkFaults {
    blocked: Arc<RwLock<HashSet<NodeId>>>,
}

impl LinkFaults {
    /// Drops every message to and from `peer` until [`LinkFaults::heal`].
    pub fn block(&self, peer: NodeId) {
        if let Ok(mut blocked) = self.blocked.write() {
            blocked.insert(peer);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Ok(mut blocked) = self.blocked.write() {
            blocked.clear();
        }
    }

    /// True if messages to or from `peer` are dropped.
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .map(|b| b.contains(&peer))
            .unwrap_or(false)
    }
}

/// The node's connections to its peers.
pub struct Peers {
    local: NodeId,
    cluster_id: String,
    channels: Mutex<HashMap<String, Channel>>,
    streams: Mutex<HashMap<String, Arc<AppendStream>>>,
    faults: LinkFaults,
    refusals_logged: LogLimiter,
}

impl Peers {
    /// Connections of node `local` of cluster `cluster_id`.
    pub fn new(local: NodeId, cluster_id: String, faults: LinkFaults) -> Arc<Peers> {
        Arc::new(Peers {
            local,
            cluster_id,
            channels: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            faults,
            refusals_logged: LogLimiter::new(PEER_LOG_INTERVAL),
        })
    }

    /// The fault seam of this node.
    pub fn faults(&self) -> &LinkFaults {
        &self.faults
    }

    /// A message for `group` on node `target`, tagged with this node's ids.
    fn request<Req: Serialize>(&self, group: GroupId, target: NodeId, body: &Req) -> RaftRequest {
        RaftRequest {
            header: Some(RaftHeader {
                cluster_id: self.cluster_id.clone(),
                group_id: group,
                from_node: self.local,
                to_node: target,
            }),
            payload: codec::encode(body),
        }
    }

    /// Sends one handover step for `group` to node `target` at `addr` and returns its answer,
    /// or why there was none.
    pub(crate) async fn handover_step(
        &self,
        group: GroupId,
        target: NodeId,
        addr: &str,
        step: &HandoverStep,
    ) -> Result<HandoverReply, String> {
        if self.faults.is_blocked(target) {
            return Err(format!("link to node {target} is cut"));
        }
        let mut client = RaftTransportClient::new(self.channel(addr)?);
        let message = self.request(group, target, step);
        let reply = tokio::time::timeout(HANDOVER_STEP_TIMEOUT, client.handover(message))
            .await
            .map_err(|_| {
                format!("node {target} at {addr} did not answer within {HANDOVER_STEP_TIMEOUT:?}")
            })?
            .map_err(|status| format!("node {target} at {addr}: {}", status.message()))?;
        codec::decode(&reply.into_inner().payload)
            .map_err(|e| format!("undecodable handover reply from node {target} at {addr}: {e}"))
    }

    /// The message stream to the peer at `addr`, opened anew if the last one ended.
    fn stream(&self, addr: &str) -> Result<Arc<AppendStream>, String> {
        let mut streams = self
            .streams
            .lock()
            .map_err(|_| "peer stream map poisoned".to_string())?;
        if let Some(stream) = streams.get(addr).filter(|s| !s.has_ended()) {
            return Ok(stream.clone());
        }
        let mut client = RaftTransportClient::new(self.channel(addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let stream = Arc::new(PeerStream::open(
            |outgoing| async move { client.append_entries_stream(outgoing).await },
            |reply: &RaftStreamReply| reply.id,
        ));
        streams.insert(addr.to_string(), stream.clone());
        Ok(stream)
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| "peer channel map poisoned".to_string())?;
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The stream that carries a node's AppendEntries to one peer.
type AppendStream = PeerStream<RaftStreamRequest, RaftStreamReply>;

/// Network factory of one group: hands openraft a client per target node.
pub struct GroupNetwork {
    group: GroupId,
    peers: Arc<Peers>,
}

impl GroupNetwork {
    /// The network of `group` over `peers`.
    pub fn new(group: GroupId, peers: Arc<Peers>) -> Self {
        GroupNetwork { group, peers }
    }
}

impl RaftNetworkFactory<KeelRaft> for GroupNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        // Resolved once per link: the per-peer channel is shared, cloning the client is cheap.
        let client = self.peers.channel(&node.addr).map(|channel| {
            RaftTransportClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX)
        });
        PeerLink {
            group: self.group,
            target,
            addr: node.addr.clone(),
            client,
            peers: self.peers.clone(),
        }
    }
}

/// One group's link to one peer.
pub struct PeerLink {
    group: GroupId,
    target: NodeId,
    addr: String,
    /// The client, or why the peer's address is unusable.
    client: Result<RaftTransportClient<Channel>, String>,
    peers: Arc<Peers>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerLink {
    /// A client for a call of its own (votes and snapshots; AppendEntries use the stream).
    fn client(&self) -> Result<RaftTransportClient<Channel>, Status> {
        self.client.clone().map_err(Status::unavailable)
    }

    async fn call<Req, Resp, E>(
        &self,
        kind: RPCTypes,
        request: &Req,
        option: RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable =
            |detail: String| RPCError::Unreachable(Unreachable::new(&LinkError(detail)));
        if self.peers.faults.is_blocked(self.target) {
            return Err(unreachable(format!("link to node {} is cut", self.target)));
        }
        let message = self.peers.request(self.group, self.target, request);
        let ttl = option.hard_ttl();
        let call = async {
            match kind {
                RPCTypes::AppendEntries => {
                    let stream = self.peers.stream(&self.addr).map_err(Status::unavailable)?;
                    let reply = stream
                        .call(|id| RaftStreamRequest {
                            id,
                            request: Some(message),
                        })
                        .await
                        .map_err(Status::from)?;
                    refused(reply.refused_code, reply.refused_message)?;
                    Ok(reply.payload)
                }
                RPCTypes::Vote => self.client()?.vote(message).await.map(payload),
                RPCTypes::InstallSnapshot => {
                    self.client()?.install_snapshot(message).await.map(payload)
                }
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) => {
                let detail = format!(
                    "{kind} for group {} to node {} at {}: {}",
                    self.group,
                    self.target,
                    self.addr,
                    status.message()
                );
                return Err(match status.code() {
                    Code::FailedPrecondition | Code::InvalidArgument => {
                        if self.peers.refusals_logged.allow(self.target) {
                            tracing::error!(group = self.group, peer = self.target, addr = %self.addr, "peer refused a raft message: {detail}");
                        }
                        RPCError::Network(NetworkError::new(&LinkError(detail)))
                    }
                    _ => unreachable(detail),
                });
            }
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.peers.local,
                    target: self.target,
                    timeout: ttl,
                }))
            }
        };
        if self.peers.faults.is_blocked(self.target) {
            return Err(unreachable(format!("link to node {} is cut", self.target)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = codec::decode(&reply).map_err(|e| {
            RPCError::Network(NetworkError::new(&LinkError(format!(
                "undecodable {kind} reply from node {} at {}: {e}",
                self.target, self.addr
            ))))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn payload(reply: tonic::Response<RaftReply>) -> Vec<u8> {
    reply.into_inner().payload
}

impl RaftNetwork<KeelRaft> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KeelRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(RPCTypes::AppendEntries, &rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KeelRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RPCTypes::InstallSnapshot, &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(RPCTypes::Vote, &rpc, option).await
    }

    /// Writes the pinned snapshot to its file, then sends the file in chunks.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        mut snapshot: Snapshot<KeelRaft>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<KeelRaft, Fatal<NodeId>>> {
        if let Err(e) = snapshot.snapshot.export().await {
            tracing::warn!(group = self.group, peer = self.target, snapshot = %snapshot.meta.snapshot_id, "could not write a snapshot to send: {e}");
            // openraft backs off and asks for a new snapshot, as after an unreachable peer.
            return Err(StreamingError::Unreachable(Unreachable::new(&e)));
        }
        Chunked::send_snapshot(self, vote, snapshot, cancel, option).await
    }
}
