//! Task-queue RPCs (polls, queries and their answers, task queue descriptions, worker shutdown)
//! are served where matching runs (see [`crate::matching::MatchingOwner`]); other nodes forward
//! them there over Temporal's own API, marked so that they are never forwarded twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::Frontend;

/// Metadata key on a request one node forwarded to another.
const FORWARDED: &str = "keel-forwarded";

/// Clients of the other nodes' Temporal API, by address.
#[derive(Default)]
pub struct MatchingClients {
    clients: Mutex<HashMap<String, WorkflowServiceClient<Channel>>>,
}

impl MatchingClients {
    fn client(&self, address: &str) -> Result<WorkflowServiceClient<Channel>, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let channel = Channel::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("bad node address {address:?}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let client = WorkflowServiceClient::new(channel)
            .max_decoding_message_size(128 << 20)
            .max_encoding_message_size(128 << 20);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }
}

impl Frontend {
    /// None when this node serves `request` (it runs matching, or the request was forwarded
    /// here); else a client of the node that runs matching.
    pub(super) fn matching_node<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<WorkflowServiceClient<Channel>>, Status> {
        if request.metadata().contains_key(FORWARDED) {
            return Ok(None);
        }
        match self.owner.remote() {
            Ok(None) => Ok(None),
            Ok(Some(address)) => self.matching_clients.client(&address).map(Some),
            Err(reason) => Err(Status::unavailable(reason)),
        }
    }
}

/// `message` as a request forwarded by this node.
pub(super) fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, MetadataValue::from_static("1"));
    request
}
