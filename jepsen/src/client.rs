//! The workload's view of the server: single calls of Temporal's public API to one node at a
//! time, each with a deadline and never retried, and the rule that turns a gRPC status into a
//! definite failure or an unknown outcome.

use std::time::Duration;

use keel_bench::connection::{describe, long_poll};
use keel_proto::{
    temporal::api::{
        common::v1::{Payload, Payloads, WorkflowExecution, WorkflowType},
        enums::v1::{
            EventType, HistoryEventFilterType, UpdateWorkflowExecutionLifecycleStage,
            WorkflowIdReusePolicy,
        },
        history::v1::HistoryEvent,
        update::v1::{self as update, outcome},
        workflowservice::v1::{
            GetWorkflowExecutionHistoryRequest, ListWorkflowExecutionsRequest,
            SignalWorkflowExecutionRequest, StartWorkflowExecutionRequest,
            UpdateWorkflowExecutionRequest,
        },
    },
    temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient,
};
use prost::Message as _;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{transport::Channel, Code, Status};

use crate::history::{digest, EventDigest, RecordType, RegisterOp, RegisterResult};

/// The namespace the workload uses.
pub const NAMESPACE: &str = "default";
/// Workflow type of the register workflows.
pub const WORKFLOW_TYPE: &str = "keel-jepsen-register";
/// Task queue of the register workflows and their activities.
pub const TASK_QUEUE: &str = "keel-jepsen";
/// Signal carrying a sequence number.
pub const SEQ_SIGNAL: &str = "seq";
/// Signal asking the workflow to complete.
pub const FINISH_SIGNAL: &str = "finish";
/// Update carrying a register operation.
pub const REGISTER_UPDATE: &str = "register";
/// Deadline of each call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const IDENTITY: &str = "keel-jepsen";
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What became of a call: the record type it ends with, and why.
#[derive(Debug)]
pub struct CallError {
    pub kind: RecordType,
    pub message: String,
}

impl CallError {
    fn unknown(message: String) -> Self {
        CallError {
            kind: RecordType::Info,
            message,
        }
    }
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        // A call that never got a connection was never sent.
        let kind =
            if status.code() == Code::Unavailable && status.message().starts_with(NOT_CONNECTED) {
                RecordType::Fail
            } else {
                status_outcome(status.code())
            };
        CallError {
            kind,
            message: describe(&status),
        }
    }
}

/// How tonic's status message starts when it could not open a connection at all.
const NOT_CONNECTED: &str = "tcp connect error";

/// Statuses after which the operation certainly did not happen (Temporal checks these before
/// it writes anything). Anything else (timeouts, lost connections, unavailable leaders,
/// internal errors) is an unknown outcome.
pub fn status_outcome(code: Code) -> RecordType {
    match code {
        Code::NotFound
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::PermissionDenied => RecordType::Fail,
        _ => RecordType::Info,
    }
}

/// A client of one node.
#[derive(Clone)]
pub struct NodeClient {
    pub address: String,
    client: WorkflowServiceClient<Channel>,
}

impl NodeClient {
    /// A client of `address` that connects when first used (a down node does not block).
    pub fn new(address: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        Ok(NodeClient {
            address: address.to_string(),
            client: WorkflowServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    pub fn raw(&self) -> WorkflowServiceClient<Channel> {
        self.client.clone()
    }

    /// Starts the register workflow `workflow_id` (reuse policy REJECT_DUPLICATE: one run per
    /// id, ever); answers the run id.
    pub async fn start(&self, workflow_id: &str) -> Result<String, CallError> {
        let request = StartWorkflowExecutionRequest {
            namespace: NAMESPACE.to_string(),
            workflow_id: workflow_id.to_string(),
            workflow_type: Some(WorkflowType {
                name: WORKFLOW_TYPE.to_string(),
            }),
            task_queue: Some(keel_bench::decide::task_queue(TASK_QUEUE)),
            workflow_task_timeout: Some(keel_bench::decide::duration(5.0)),
            identity: IDENTITY.to_string(),
            request_id: uuid::Uuid::new_v4().to_string(),
            workflow_id_reuse_policy: WorkflowIdReusePolicy::RejectDuplicate as i32,
            ..Default::default()
        };
        let response = self
            .raw()
            .start_workflow_execution(with_deadline(request))
            .await?;
        Ok(response.into_inner().run_id)
    }

    /// Sends signal `name` carrying `value` (JSON) to the current run of `workflow_id`.
    pub async fn signal(
        &self,
        workflow_id: &str,
        name: &str,
        value: &impl Serialize,
    ) -> Result<(), CallError> {
        let request = SignalWorkflowExecutionRequest {
            namespace: NAMESPACE.to_string(),
            workflow_execution: Some(execution(workflow_id, "")),
            signal_name: name.to_string(),
            input: Some(json_payloads(value)),
            identity: IDENTITY.to_string(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        self.raw()
            .signal_workflow_execution(with_deadline(request))
            .await?;
        Ok(())
    }

    /// Sends a register update and waits for its outcome.
    pub async fn update(
        &self,
        workflow_id: &str,
        update_id: &str,
        op: RegisterOp,
    ) -> Result<RegisterResult, CallError> {
        let request = UpdateWorkflowExecutionRequest {
            namespace: NAMESPACE.to_string(),
            workflow_execution: Some(execution(workflow_id, "")),
            wait_policy: Some(update::WaitPolicy {
                lifecycle_stage: UpdateWorkflowExecutionLifecycleStage::Completed as i32,
            }),
            request: Some(update::Request {
                meta: Some(update::Meta {
                    update_id: update_id.to_string(),
                    identity: IDENTITY.to_string(),
                }),
                input: Some(update::Input {
                    name: REGISTER_UPDATE.to_string(),
                    args: Some(json_payloads(&op)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = self
            .raw()
            .update_workflow_execution(with_deadline(request))
            .await?
            .into_inner();
        match response.outcome.and_then(|o| o.value) {
            Some(outcome::Value::Success(payloads)) => from_json_payloads(Some(&payloads))
                .ok_or_else(|| CallError::unknown("update answered an unreadable result".into())),
            // The worker never rejects an update, so a failure is the server's (an update accepted
            // by a run that then closed): the operation may have taken effect.
            Some(outcome::Value::Failure(failure)) => Err(CallError::unknown(format!(
                "update failed: {}",
                failure.message
            ))),
            None => Err(CallError::unknown(format!(
                "no outcome within the server's wait (stage {})",
                response.stage
            ))),
        }
    }

    /// The full history of a run (`run_id` empty: the current run).
    pub async fn history(
        &self,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Vec<HistoryEvent>, CallError> {
        let mut events = Vec::new();
        let mut page_token = Vec::new();
        loop {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: NAMESPACE.to_string(),
                execution: Some(execution(workflow_id, run_id)),
                next_page_token: page_token,
                history_event_filter_type: HistoryEventFilterType::AllEvent as i32,
                ..Default::default()
            };
            let page = self
                .raw()
                .get_workflow_execution_history(with_deadline(request))
                .await?
                .into_inner();
            events.extend(page.history.map(|h| h.events).unwrap_or_default());
            if page.next_page_token.is_empty() {
                return Ok(events);
            }
            page_token = page.next_page_token;
        }
    }

    /// Waits (long poll) until the current run of `workflow_id` has a close event.
    pub async fn wait_for_close(&self, workflow_id: &str) -> Result<(), CallError> {
        let request = GetWorkflowExecutionHistoryRequest {
            namespace: NAMESPACE.to_string(),
            execution: Some(execution(workflow_id, "")),
            wait_new_event: true,
            history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
            ..Default::default()
        };
        let mut request = long_poll(request);
        request.set_timeout(CALL_TIMEOUT * 3);
        let page = self
            .raw()
            .get_workflow_execution_history(request)
            .await?
            .into_inner();
        let closed = page
            .history
            .is_some_and(|h| h.events.iter().any(|e| is_close(e.event_type)));
        if closed {
            Ok(())
        } else {
            Err(CallError::unknown("not closed yet".into()))
        }
    }

    /// Every run of `workflow_id` visibility lists: (run id, status name).
    pub async fn runs(&self, workflow_id: &str) -> Result<Vec<(String, String)>, CallError> {
        let request = ListWorkflowExecutionsRequest {
            namespace: NAMESPACE.to_string(),
            page_size: 1000,
            query: format!("WorkflowId = '{workflow_id}'"),
            ..Default::default()
        };
        let response = self
            .raw()
            .list_workflow_executions(with_deadline(request))
            .await?
            .into_inner();
        Ok(response
            .executions
            .into_iter()
            .map(|info| {
                let run_id = info.execution.map(|e| e.run_id).unwrap_or_default();
                let status =
                    keel_proto::temporal::api::enums::v1::WorkflowExecutionStatus::try_from(
                        info.status,
                    )
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_else(|_| info.status.to_string());
                (run_id, status)
            })
            .collect())
    }
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn execution(workflow_id: &str, run_id: &str) -> WorkflowExecution {
    WorkflowExecution {
        workflow_id: workflow_id.to_string(),
        run_id: run_id.to_string(),
    }
}

/// `value` as one `json/plain` payload, as the SDKs encode it.
pub fn json_payloads(value: &impl Serialize) -> Payloads {
    Payloads {
        payloads: vec![Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())].into(),
            data: serde_json::to_vec(value).unwrap_or_default(),
            ..Default::default()
        }],
    }
}

/// The first payload of `payloads` decoded from JSON.
pub fn from_json_payloads<T: DeserializeOwned>(payloads: Option<&Payloads>) -> Option<T> {
    let payload = payloads?.payloads.first()?;
    serde_json::from_slice(&payload.data).ok()
}

/// Whether an event type closes a run.
pub fn is_close(event_type: i32) -> bool {
    matches!(
        EventType::try_from(event_type),
        Ok(EventType::WorkflowExecutionCompleted
            | EventType::WorkflowExecutionFailed
            | EventType::WorkflowExecutionTimedOut
            | EventType::WorkflowExecutionTerminated
            | EventType::WorkflowExecutionCanceled
            | EventType::WorkflowExecutionContinuedAsNew)
    )
}

/// Events as the checkers compare them: id, type and a digest of the encoded event.
pub fn digests(events: &[HistoryEvent]) -> Vec<EventDigest> {
    events
        .iter()
        .map(|e| (e.event_id, e.event_type, digest(&e.encode_to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_and_unsent_calls_are_definite_failures() {
        let kind = |status: Status| CallError::from(status).kind;
        assert_eq!(
            kind(Status::not_found("workflow not found")),
            RecordType::Fail
        );
        assert_eq!(
            kind(Status::unavailable("tcp connect error")),
            RecordType::Fail
        );
        assert_eq!(
            kind(Status::unavailable(
                "shard 2 is unavailable: it has no leader"
            )),
            RecordType::Info
        );
        assert_eq!(kind(Status::deadline_exceeded("timeout")), RecordType::Info);
        assert_eq!(kind(Status::internal("boom")), RecordType::Info);
        assert_eq!(kind(Status::cancelled("Timeout expired")), RecordType::Info);
    }

    #[test]
    fn json_payloads_round_trip() {
        let op = RegisterOp::Cas(1, 2);
        let payloads = json_payloads(&op);
        assert_eq!(payloads.payloads[0].metadata["encoding"], b"json/plain");
        assert_eq!(from_json_payloads::<RegisterOp>(Some(&payloads)), Some(op));
        assert_eq!(from_json_payloads::<RegisterOp>(None), None);
    }
}
