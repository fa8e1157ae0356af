//! Task tokens: opaque to clients, bincode with a version byte inside. A token names the task's
//! run and attempt, so a stale token is recognised and refused by the owning shard.

use serde::{Deserialize, Serialize};
use tonic::Status;

const VERSION: u8 = 1;

/// What a task token names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskToken {
    /// A workflow task.
    Workflow {
        /// Namespace id.
        namespace_id: String,
        /// Workflow id.
        workflow_id: String,
        /// Run id.
        run_id: String,
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// An activity task.
    Activity {
        /// Namespace id.
        namespace_id: String,
        /// Workflow id.
        workflow_id: String,
        /// Run id.
        run_id: String,
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// A query task.
    Query {
        /// Query id on this node.
        query_id: u64,
    },
}

impl TaskToken {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(bincode::serialize(self).unwrap_or_default());
        out
    }

    /// Decodes a token from a client; garbage is InvalidArgument.
    pub fn decode(bytes: &[u8]) -> Result<TaskToken, Status> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => bincode::deserialize(rest)
                .map_err(|_| Status::invalid_argument("Error deserializing task token.")),
            _ => Err(Status::invalid_argument("Error deserializing task token.")),
        }
    }
}
