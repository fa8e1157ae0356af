//! Server side of the Raft transport: checks each message's cluster and node ids, finds the
//! group in the registry and hands the request to its Raft instance.

use std::sync::{Arc, Weak};

use keel_proto::raft::raft_transport_server::RaftTransport;
use keel_proto::raft::{RaftReply, RaftRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::codec;
use crate::group::ShardGroup;
use crate::handover;
use crate::log_limit::{LogLimiter, PEER_LOG_INTERVAL};
use crate::registry::GroupRegistry;

/// The tonic service every node runs for its peers. It holds the registry weakly: open peer
/// connections must not keep a stopped node's groups and store alive.
pub struct RaftTransportService {
    registry: Weak<GroupRegistry>,
    foreign_logged: LogLimiter,
}

impl RaftTransportService {
    /// Serves the groups of `registry`.
    pub fn new(registry: &Arc<GroupRegistry>) -> Self {
        RaftTransportService {
            registry: Arc::downgrade(registry),
            foreign_logged: LogLimiter::new(PEER_LOG_INTERVAL),
        }
    }

    fn route<T: DeserializeOwned>(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<(ShardGroup, T), Status> {
        let registry = self
            .registry
            .upgrade()
            .ok_or_else(|| Status::unavailable("this node is shutting down"))?;
        let request = request.into_inner();
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
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(RaftReply {
        payload: codec::encode(result),
    }))
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (group, rpc) = self.route(request)?;
        reply(&group.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (group, rpc) = self.route(request)?;
        reply(&group.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let (group, rpc) = self.route(request)?;
        reply(&group.raft().install_snapshot(rpc).await)
    }

    async fn handover(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (group, step) = self.route(request)?;
        reply(&handover::answer(&group, &step))
    }
}
