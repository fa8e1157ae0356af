//! Server side of the Raft transport: checks each message's cluster and node ids, finds the
//! group in the registry and hands the request to its Raft instance. AppendEntries arrive on
//! each peer's message stream ([`answer_each`]), the rest as calls of their own.

use std::sync::{Arc, Weak};

use keel_proto::raft::raft_transport_server::RaftTransport;
use keel_proto::raft::{RaftReply, RaftRequest, RaftStreamReply, RaftStreamRequest};
use openraft::raft::AppendEntriesRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::group::ShardGroup;
use crate::handover;
use crate::log_limit::{LogLimiter, PEER_LOG_INTERVAL};
use crate::peer_stream::{answer_each, refusal, Answers, TransportStreams};
use crate::registry::GroupRegistry;
use crate::types::KeelRaft;

/// The tonic service every node runs for its peers.
pub struct RaftTransportService {
    router: Arc<Router>,
    streams: TransportStreams,
}

/// Finds the group a message is for. It holds the registry weakly: open peer connections must
/// not keep a stopped node's groups and store alive.
struct Router {
    registry: Weak<GroupRegistry>,
    foreign_logged: LogLimiter,
}

impl RaftTransportService {
    /// Serves the groups of `registry`; `streams` ends its message streams.
    pub fn new(registry: &Arc<GroupRegistry>, streams: &TransportStreams) -> Self {
        RaftTransportService {
            router: Arc::new(Router {
                registry: Arc::downgrade(registry),
                foreign_logged: LogLimiter::new(PEER_LOG_INTERVAL),
            }),
            streams: streams.clone(),
        }
    }
}

impl Router {
    fn route<T: DeserializeOwned>(&self, request: RaftRequest) -> Result<(ShardGroup, T), Status> {
        let registry = self
            .registry
            .upgrade()
            .ok_or_else(|| Status::unavailable("this node is shutting down"))?;
        let header = request
            .header
            .ok_or_else(|| Status::invalid_argument("raft message without a header"))?;
        let local = registry.node_id();
        let cluster = registry.cluster_id();
        if header.cluster_id != cluster {
            if self.foreign_logged.allow(header.from_node) {
                tracing::error!(peer = header.from_node, peer_cluster = %header.cluster_id, "refused a raft message from another cluster");
            }
            return Err(Status::failed_precondition(format!(
                "node {local} belongs to cluster {cluster:?} and refuses messages from node {} of cluster {:?}; check the peers' cluster ids and addresses",
                header.from_node, header.cluster_id
            )));
        }
        if header.to_node != local {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {local}; check the peer address configured for node {}",
                header.to_node, header.to_node
            )));
        }
        if registry.faults().is_blocked(header.from_node) {
            return Err(Status::unavailable(format!(
                "link from node {} is cut",
                header.from_node
            )));
        }
        let group = registry.get(header.group_id).ok_or_else(|| {
            Status::not_found(format!(
                "raft group {} is not hosted on node {local}",
                header.group_id
            ))
        })?;
        let body = codec::decode(&request.payload).map_err(|e| {
            Status::invalid_argument(format!(
                "undecodable raft message for group {} from node {}: {e}",
                header.group_id, header.from_node
            ))
        })?;
        Ok((group, body))
    }

    /// Answers one message of a peer's stream.
    async fn append_entries(&self, message: RaftStreamRequest) -> RaftStreamReply {
        let id = message.id;
        let routed = message
            .request
            .ok_or_else(|| Status::invalid_argument("stream message without a request"))
            .and_then(|request| self.route::<AppendEntriesRequest<KeelRaft>>(request));
        match routed {
            Ok((group, rpc)) => RaftStreamReply {
                id,
                payload: codec::encode(&group.raft().append_entries(rpc).await),
                ..RaftStreamReply::default()
            },
            Err(status) => {
                let (refused_code, refused_message) = refusal(&status);
                RaftStreamReply {
                    id,
                    refused_code,
                    refused_message,
                    ..RaftStreamReply::default()
                }
            }
        }
    }
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(RaftReply {
        payload: codec::encode(result),
    }))
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    type AppendEntriesStreamStream = Answers<RaftStreamReply>;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftStreamRequest>>,
    ) -> Result<Response<Answers<RaftStreamReply>>, Status> {
        let router = self.router.clone();
        let registry = self.router.registry.clone();
        Ok(Response::new(answer_each(
            request.into_inner(),
            self.streams.closing(),
            move || registry.strong_count() == 0,
            move |message| {
                let router = router.clone();
                async move { router.append_entries(message).await }
            },
        )))
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (group, rpc) = self.router.route(request.into_inner())?;
        reply(&group.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (group, rpc) = self.router.route(request.into_inner())?;
        reply(&group.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (group, rpc) = self.router.route(request.into_inner())?;
        reply(&group.raft().install_snapshot(rpc).await)
    }

    async fn handover(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (group, step) = self.router.route(request.into_inner())?;
        reply(&handover::answer(&group, &step))
    }
}
