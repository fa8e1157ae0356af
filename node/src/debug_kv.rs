//! The test-only replicated key/value RPC (keel.debug.v1.DebugKv): puts and linearizable gets
//! on one Raft group, answered by its leader. Errors name the leader so clients can retry there
//! (also as the `keel-leader-addr` response metadata).

use std::sync::Arc;

use bytes::Bytes;
use keel_proto::debug::debug_kv_server::DebugKv;
use keel_proto::debug::{GetReply, GetRequest, PutReply, PutRequest};
use keel_raft::kv::KvCommand;
use keel_raft::{GroupRegistry, ProposeError, ReadError, ShardGroup};
use tonic::{Request, Response, Status};

/// Serves DebugKv over the groups of a registry.
pub struct DebugKvService {
    registry: Arc<GroupRegistry>,
}

impl DebugKvService {
    pub fn new(registry: Arc<GroupRegistry>) -> Self {
        DebugKvService { registry }
    }

    fn group(&self, id: u64) -> Result<ShardGroup, Status> {
        self.registry.get(id).ok_or_else(|| {
            Status::not_found(format!(
                "raft group {id} is not hosted on node {}",
                self.registry.node_id()
            ))
        })
    }
}

fn not_leader(message: String, leader_addr: Option<String>) -> Status {
    let mut status = Status::unavailable(message);
    if let Some(addr) = leader_addr.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert("keel-leader-addr", addr);
    }
    status
}

fn propose_status(error: ProposeError) -> Status {
    match error {
        ProposeError::NotLeader {
            ref leader_addr, ..
        } => {
            let addr = leader_addr.clone();
            not_leader(error.to_string(), addr)
        }
        ProposeError::Rejected { .. } => Status::invalid_argument(error.to_string()),
        ProposeError::Unavailable { .. } => Status::unavailable(error.to_string()),
    }
}

fn read_status(error: ReadError) -> Status {
    match error {
        ReadError::NotLeader {
            ref leader_addr, ..
        } => {
            let addr = leader_addr.clone();
            not_leader(error.to_string(), addr)
        }
        ReadError::Unavailable { .. } => Status::unavailable(error.to_string()),
    }
}

#[tonic::async_trait]
impl DebugKv for DebugKvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutReply>, Status> {
        let request = request.into_inner();
        let group = self.group(request.group_id)?;
        let command = KvCommand::Put {
            key: Bytes::from(request.key),
            value: Bytes::from(request.value),
        };
        let committed = group
            .propose(command.encode())
            .await
            .map_err(propose_status)?;
        Ok(Response::new(PutReply {
            log_index: committed.index,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let request = request.into_inner();
        let group = self.group(request.group_id)?;
        let value = group.read(&request.key).await.map_err(read_status)?;
        Ok(Response::new(GetReply {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }
}
