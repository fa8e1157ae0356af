//! Workflow updates, with Temporal's protocol: an admitted update rides to the worker as a
//! request message in the next workflow task (a speculative one, written to history only if
//! the worker accepts something, when no task is pending); the worker answers with acceptance,
//! rejection and response messages; accepted and completed updates become history events at
//! the positions of the worker's protocol-message commands; a rejection writes nothing.

use std::collections::HashMap;

use prost::Message as _;

use super::proto::{self, enums, history, protocol, update, Attributes};
use super::state::{FinishedUpdate, UpdateInfo};
use super::txn::Txn;
use super::{EngineError, Reply};

use enums::UpdateWorkflowExecutionLifecycleStage as Stage;

/// Where an update stands, as UpdateWorkflowExecution and PollWorkflowExecutionUpdate report it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateStatus {
    /// Lifecycle stage reached.
    #[serde(with = "crate::wire::proto_enum")]
    pub stage: Stage,
    /// The outcome once completed (or rejected).
    #[serde(with = "crate::wire::opt")]
    pub outcome: Option<update::Outcome>,
}

const REQUEST_TYPE_URL: &str = "type.googleapis.com/temporal.api.update.v1.Request";
const ACCEPTANCE_TYPE: &str = "temporal.api.update.v1.Acceptance";
const REJECTION_TYPE: &str = "temporal.api.update.v1.Rejection";
const RESPONSE_TYPE: &str = "temporal.api.update.v1.Response";

/// The status of `update_id` in this run, if the run knows it.
pub fn status(state: &super::MutableState, update_id: &str) -> Option<UpdateStatus> {
    if let Some(finished) = state.finished_updates.get(update_id) {
        return Some(UpdateStatus {
            stage: Stage::Completed,
            outcome: proto::decode_opt(&finished.outcome),
        });
    }
    state
        .updates
        .iter()
        .find(|u| u.update_id == update_id)
        .map(|u| UpdateStatus {
            stage: if u.accepted_event_id.is_some() {
                Stage::Accepted
            } else {
                Stage::Admitted
            },
            outcome: None,
        })
}

/// UpdateWorkflowExecution: admits the update (or finds it, when its id is known) and makes
/// sure a workflow task will carry it to the worker.
pub(crate) fn admit(
    txn: &mut Txn,
    request: update::Request,
    first_execution_run_id: &str,
) -> Result<Reply, EngineError> {
    if !first_execution_run_id.is_empty()
        && first_execution_run_id != txn.state.first_execution_run_id
    {
        return Err(EngineError::NotFound(format!(
            "workflow execution not found for workflow ID \"{}\" and first execution run ID \"{first_execution_run_id}\"",
            txn.state.workflow_id
        )));
    }
    let update_id = request
        .meta
        .as_ref()
        .map(|m| m.update_id.clone())
        .unwrap_or_default();
    // A known update id answers with its stage, also once the run closed (as Temporal).
    if let Some(known) = status(&txn.state, &update_id) {
        return Ok(Reply::Update(Box::new(known)));
    }
    if !txn.state.is_running() {
        return Err(EngineError::NotFound(
            "workflow execution already completed".into(),
        ));
    }
    if txn.state.updates.len() >= txn.limits.max_in_flight_updates {
        return Err(EngineError::ResourceExhausted(format!(
            "limit on number of concurrent in-flight updates has been reached ({})",
            txn.limits.max_in_flight_updates
        )));
    }
    if txn.state.update_count >= txn.limits.max_total_updates {
        return Err(EngineError::FailedPrecondition(format!(
            "limit on number of total updates has been reached ({})",
            txn.limits.max_total_updates
        )));
    }
    txn.state.update_count += 1;
    txn.state.updates.push(UpdateInfo {
        update_id,
        request: request.encode_to_vec(),
        accepted_event_id: None,
    });
    txn.schedule_speculative_workflow_task();
    Ok(Reply::Update(Box::new(UpdateStatus {
        stage: Stage::Admitted,
        outcome: None,
    })))
}

/// The request messages a workflow task started now carries: every update not yet accepted,
/// sequenced after the event before the task's started event.
pub(crate) fn request_messages(txn: &Txn, started_event_id: i64) -> Vec<protocol::Message> {
    txn.state
        .updates
        .iter()
        .filter(|u| u.accepted_event_id.is_none())
        .map(|u| protocol::Message {
            id: format!("{}/request", u.update_id),
            protocol_instance_id: u.update_id.clone(),
            sequencing_id: Some(protocol::message::SequencingId::EventId(
                started_event_id - 1,
            )),
            body: Some(prost_wkt_types::Any {
                type_url: REQUEST_TYPE_URL.to_string(),
                value: u.request.clone(),
            }),
        })
        .collect()
}

/// True while updates wait that the worker has not accepted.
pub(crate) fn has_unaccepted(txn: &Txn) -> bool {
    txn.state
        .updates
        .iter()
        .any(|u| u.accepted_event_id.is_none())
}

/// True when updates would still wait unaccepted after the worker's `messages` (a run cannot
/// close over them: the worker must see them first).
pub(crate) fn has_unaccepted_after(txn: &Txn, messages: &Messages) -> bool {
    txn.state.updates.iter().any(|u| {
        u.accepted_event_id.is_none()
            && !messages
                .by_id
                .values()
                .any(|m| m.protocol_instance_id == u.update_id)
    })
}

/// A worker's protocol message, decoded.
enum Body {
    Acceptance(update::Acceptance),
    Rejection(update::Rejection),
    Response(update::Response),
}

fn decode(message: &protocol::Message) -> Result<Body, EngineError> {
    let bad = |what: &str| {
        EngineError::InvalidArgument(format!("protocol message {} has {what}", message.id))
    };
    let body = message.body.as_ref().ok_or_else(|| bad("no body"))?;
    let kind = body.type_url.rsplit('/').next().unwrap_or_default();
    let value = body.value.as_slice();
    match kind {
        ACCEPTANCE_TYPE => update::Acceptance::decode(value)
            .map(Body::Acceptance)
            .map_err(|_| bad("an undecodable acceptance")),
        REJECTION_TYPE => update::Rejection::decode(value)
            .map(Body::Rejection)
            .map_err(|_| bad("an undecodable rejection")),
        RESPONSE_TYPE => update::Response::decode(value)
            .map(Body::Response)
            .map_err(|_| bad("an undecodable response")),
        other => Err(bad(&format!("an unknown body type {other:?}"))),
    }
}

/// The worker's messages of one workflow task completion, consumed as commands name them.
pub(crate) struct Messages {
    by_id: HashMap<String, protocol::Message>,
    order: Vec<String>,
}

impl Messages {
    pub(crate) fn new(messages: Vec<protocol::Message>) -> Messages {
        let order = messages.iter().map(|m| m.id.clone()).collect();
        Messages {
            by_id: messages.into_iter().map(|m| (m.id.clone(), m)).collect(),
            order,
        }
    }

    /// True when the messages only reject updates (a speculative task may then be dropped).
    pub(crate) fn only_rejections(&self) -> bool {
        self.by_id
            .values()
            .all(|m| matches!(decode(m), Ok(Body::Rejection(_))))
    }

    /// Applies the message a ProtocolMessage command names.
    pub(crate) fn apply_named(
        &mut self,
        txn: &mut Txn,
        message_id: &str,
    ) -> Result<(), EngineError> {
        let message = self.by_id.remove(message_id).ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "ProtocolMessageCommand names message {message_id}, which the completion does not carry"
            ))
        })?;
        apply(txn, &message)
    }

    /// Applies the messages no command named, in the order the worker sent them.
    pub(crate) fn apply_rest(mut self, txn: &mut Txn) -> Result<(), EngineError> {
        for id in std::mem::take(&mut self.order) {
            if let Some(message) = self.by_id.remove(&id) {
                apply(txn, &message)?;
            }
        }
        Ok(())
    }
}

fn apply(txn: &mut Txn, message: &protocol::Message) -> Result<(), EngineError> {
    let update_id = message.protocol_instance_id.as_str();
    let position = txn
        .state
        .updates
        .iter()
        .position(|u| u.update_id == update_id);
    let Some(position) = position else {
        // An answer for an update already finished (a retried task) changes nothing.
        if txn.state.finished_updates.contains_key(update_id) {
            return Ok(());
        }
        return Err(EngineError::InvalidArgument(format!(
            "protocol message {} is for update {update_id}, which is not in flight",
            message.id
        )));
    };
    let body = decode(message)?;
    // A closed run takes no more events. As in Temporal, only a rejection still applies; an
    // acceptance or response that follows the close command leaves its update unaccepted: the
    // close aborted it (after a continue-as-new its caller sends it to the new run).
    if !txn.state.is_running() && !matches!(body, Body::Rejection(_)) {
        return Ok(());
    }
    match body {
        Body::Acceptance(acceptance) => {
            if txn.state.updates[position].accepted_event_id.is_some() {
                return Ok(());
            }
            let request = match acceptance.accepted_request {
                Some(request) => Some(request),
                None => {
                    update::Request::decode(txn.state.updates[position].request.as_slice()).ok()
                }
            };
            let event_id = txn.append(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(
                history::WorkflowExecutionUpdateAcceptedEventAttributes {
                    protocol_instance_id: update_id.to_string(),
                    accepted_request_message_id: acceptance.accepted_request_message_id,
                    accepted_request_sequencing_event_id: acceptance
                        .accepted_request_sequencing_event_id,
                    accepted_request: request,
                },
            ));
            txn.state.updates[position].accepted_event_id = Some(event_id);
        }
        Body::Rejection(rejection) => {
            if txn.state.updates[position].accepted_event_id.is_some() {
                return Err(EngineError::InvalidArgument(format!(
                    "update {update_id} was accepted and cannot be rejected"
                )));
            }
            txn.state.updates.remove(position);
            finish(
                txn,
                update_id,
                update::Outcome {
                    value: Some(update::outcome::Value::Failure(
                        rejection.failure.unwrap_or_default(),
                    )),
                },
                false,
            );
        }
        Body::Response(response) => {
            let Some(accepted_event_id) = txn.state.updates[position].accepted_event_id else {
                return Err(EngineError::InvalidArgument(format!(
                    "update {update_id} was not accepted and cannot complete"
                )));
            };
            let outcome = response.outcome.unwrap_or_default();
            txn.append(Attributes::WorkflowExecutionUpdateCompletedEventAttributes(
                history::WorkflowExecutionUpdateCompletedEventAttributes {
                    meta: Some(response.meta.unwrap_or_else(|| update::Meta {
                        update_id: update_id.to_string(),
                        ..Default::default()
                    })),
                    accepted_event_id,
                    outcome: Some(outcome.clone()),
                },
            ));
            txn.state.updates.remove(position);
            finish(txn, update_id, outcome, true);
        }
    }
    Ok(())
}

/// When the run closes, updates it accepted and did not complete fail, as in Temporal (their
/// callers learn the workflow finished first); updates not yet accepted stay in flight, and
/// their callers get "workflow execution already completed".
pub(crate) fn fail_accepted_on_close(txn: &mut Txn) {
    let accepted: Vec<String> = txn
        .state
        .updates
        .iter()
        .filter(|u| u.accepted_event_id.is_some())
        .map(|u| u.update_id.clone())
        .collect();
    txn.state.updates.retain(|u| u.accepted_event_id.is_none());
    for update_id in accepted {
        let failure = proto::failure::Failure {
            message:
                "Workflow Update failed because the Workflow completed before the Update completed."
                    .to_string(),
            source: "Server".to_string(),
            failure_info: Some(
                proto::failure::failure::FailureInfo::ApplicationFailureInfo(
                    proto::failure::ApplicationFailureInfo {
                        r#type: "AcceptedUpdateCompletedWorkflow".to_string(),
                        non_retryable: true,
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        };
        finish(
            txn,
            &update_id,
            update::Outcome {
                value: Some(update::outcome::Value::Failure(failure)),
            },
            false,
        );
    }
}

/// True when the workflow completed `update_id` (not rejected, not failed by the close).
pub fn completed_by_workflow(state: &super::MutableState, update_id: &str) -> bool {
    state
        .finished_updates
        .get(update_id)
        .is_some_and(|f| f.completed)
}

/// Records a finished update's outcome, keeping at most the limit's number of outcomes.
pub(crate) fn finish(txn: &mut Txn, update_id: &str, outcome: update::Outcome, completed: bool) {
    let finished = &mut txn.state.finished_updates;
    let seq = finished.values().map(|f| f.seq).max().unwrap_or(0) + 1;
    finished.insert(
        update_id.to_string(),
        FinishedUpdate {
            outcome: outcome.encode_to_vec(),
            seq,
            completed,
        },
    );
    trim_finished(
        &mut txn.state.finished_updates,
        txn.limits.max_total_updates as usize,
    );
}

/// Drops the oldest finished outcomes beyond `keep`.
pub(crate) fn trim_finished(
    finished: &mut std::collections::BTreeMap<String, FinishedUpdate>,
    keep: usize,
) {
    while finished.len() > keep {
        let Some(oldest) = finished
            .iter()
            .min_by_key(|(_, f)| f.seq)
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        finished.remove(&oldest);
    }
}
