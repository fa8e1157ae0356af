//! The test-only replicated key/value RPC (keel.debug.v1.DebugKv): puts and linearizable gets
//! on one Raft group, answered by its leader. Errors name the leader so clients can retry there
//! (also as the `keel-leader-addr` response metadata).

use std::sync::Arc;

use keel_proto::debug::debug_kv_server::DebugKv;
use keel_proto::debug::{GetReply, GetRequest, PutReply, PutRequest};
use keel_raft::{GroupRegistry, ProposeError, ReadError, ShardGroup};
use tonic::{Request, Response, Status};

use crate::shard::applier::WriteSet;

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

/// Debug keys live under their own tag, apart from workflow data.
fn debug_key(key: &[u8]) -> Vec<u8> {
    let mut out = b"k".to_vec();
    out.extend_from_slice(key);
    out
}

#[tonic::async_trait]
impl DebugKv for DebugKvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutReply>, Status> {
        let request = request.into_inner();
        let group = self.group(request.group_id)?;
        let writes = WriteSet {
            fence_term: None,
            puts: vec![(debug_key(&request.key), request.value)],
            deletes: Vec::new(),
        };
        let committed = group
            .propose(writes.encode())
            .await
            .map_err(propose_status)?;
        Ok(Response::new(PutReply {
            log_index: committed.index,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let request = request.into_inner();
        let group = self.group(request.group_id)?;
        let value = group
            .read(&debug_key(&request.key))
            .await
            .map_err(read_status)?;
        Ok(Response::new(GetReply {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }
}
