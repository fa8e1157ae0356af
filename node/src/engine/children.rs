//! What one run asks of other runs: child workflows (start, and the parent told of the
//! child's close), external signals and cancels, and parent close policies. The commands write
//! the initiated events and record the request in the state; [`transfers`] lists what the shard
//! leader must still deliver, and [`Report`]s of the deliveries come back through the engine,
//! which ignores a report it has already taken (deliveries are at least once).

use prost::Message as _;

use super::proto::{self, command, common, enums, history, Attributes};
use super::state::{ChildInfo, ExternalAction, ExternalRequest, MutableState};
use super::txn::Txn;
use super::{EngineError, Reply};

/// A delivery the shard leader owes for a run, derived from its committed state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transfer {
    /// Start the child initiated at this event.
    StartChild {
        /// Initiated event id.
        initiated_event_id: i64,
    },
    /// Apply the parent close policy to this started child.
    ApplyParentClosePolicy {
        /// Initiated event id.
        initiated_event_id: i64,
    },
    /// Deliver the external signal or cancel initiated at this event.
    External {
        /// Initiated event id.
        initiated_event_id: i64,
    },
    /// Tell the parent how this child run closed.
    NotifyParent,
    /// Start the workflow of a schedule's action.
    ScheduleStart {
        /// Action.
        seq: u64,
    },
    /// Watch a workflow a schedule started until it closes.
    ScheduleWatch {
        /// Action.
        seq: u64,
    },
    /// Cancel or terminate a workflow a schedule started (its overlap policy asks so).
    ScheduleStop {
        /// Action.
        seq: u64,
    },
    /// Run a batch job's operation over its remaining targets.
    BatchStep,
    /// Delete the run (deletion was asked for, and nothing else is left to deliver).
    DeleteRun,
}

/// The result of a delivery, reported to the run that owed it (or, for a child's close, to
/// its parent).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Report {
    /// The child started (or was found started by this very request).
    ChildStarted {
        /// Initiated event id.
        initiated_event_id: i64,
        /// The child's run.
        run_id: String,
        /// The child's namespace name and id.
        namespace: (String, String),
    },
    /// The child could not be started.
    ChildStartFailed {
        /// Initiated event id.
        initiated_event_id: i64,
        /// `StartChildWorkflowExecutionFailedCause`.
        cause: i32,
    },
    /// The child closed (reported to the parent).
    ChildClosed {
        /// Initiated event id in the parent.
        initiated_event_id: i64,
        /// The child run that closed.
        run_id: String,
        /// The child's namespace name and id.
        namespace: (String, String),
        /// The child's close event.
        #[serde(with = "crate::wire::attributes")]
        close: Box<Attributes>,
    },
    /// The parent took this child run's close.
    ParentNotified,
    /// The parent close policy was applied to the child.
    ParentClosePolicyApplied {
        /// Initiated event id.
        initiated_event_id: i64,
    },
    /// The external signal or cancel was delivered, or failed with a
    /// `SignalExternalWorkflowExecutionFailedCause` / `CancelExternalWorkflowExecutionFailedCause`.
    ExternalDone {
        /// Initiated event id.
        initiated_event_id: i64,
        /// The target's namespace name and id.
        namespace: (String, String),
        /// Failure cause, if it failed.
        failure_cause: Option<i32>,
    },
    /// A delivery of a schedule's run.
    Schedule(super::schedule::ScheduleReport),
    /// The progress of a batch job.
    Batch(super::batch::BatchReport),
}

/// What the shard leader must still deliver for this run.
pub fn transfers(state: &MutableState) -> Vec<Transfer> {
    let mut out = Vec::new();
    for child in state.children.values() {
        match &child.started_run_id {
            None => out.push(Transfer::StartChild {
                initiated_event_id: child.initiated_event_id,
            }),
            Some(_)
                if !state.is_running()
                    && !child.policy_applied
                    && child.parent_close_policy != enums::ParentClosePolicy::Abandon as i32 =>
            {
                out.push(Transfer::ApplyParentClosePolicy {
                    initiated_event_id: child.initiated_event_id,
                })
            }
            Some(_) => {}
        }
    }
    for initiated_event_id in state.external_requests.keys() {
        out.push(Transfer::External {
            initiated_event_id: *initiated_event_id,
        });
    }
    if !state.is_running()
        && state.parent.is_some()
        && !state.parent_notified
        && state.successor_run_id.is_empty()
    {
        out.push(Transfer::NotifyParent);
    }
    if let Some(schedule) = state.schedule.as_deref().filter(|_| state.is_running()) {
        super::schedule::transfers(schedule, &mut out);
    }
    if state.batch.is_some() && state.is_running() {
        super::batch::transfers(&mut out);
    }
    if state.delete_requested && !state.is_running() && out.is_empty() {
        out.push(Transfer::DeleteRun);
    }
    out
}

/// The request id a child start or external signal is deduplicated by at its target.
pub fn delivery_request_id(state: &MutableState, initiated_event_id: i64) -> String {
    format!("{}-{initiated_event_id}", state.run_id)
}

fn execution(workflow_id: &str, run_id: &str) -> Option<common::WorkflowExecution> {
    Some(common::WorkflowExecution {
        workflow_id: workflow_id.to_string(),
        run_id: run_id.to_string(),
    })
}

/// What a child of `parent` inherits of its worker versioning, as Temporal decides it, unless
/// the child's command gives it an override: a pinned parent's version (with its pinned override,
/// if that is what pins it), when the child runs in the same namespace on the parent's task
/// queue or on another queue that version polls (`version_polls(deployment, build_id, queue)`).
pub fn inherited_versioning(
    parent: &MutableState,
    child_namespace_id: &str,
    child_queue: &str,
    version_polls: impl FnOnce(&str, &str, &str) -> bool,
) -> (
    Option<super::state::RunVersioning>,
    Option<proto::workflow::VersioningOverride>,
) {
    let Some(versioning) = parent.versioning.as_deref() else {
        return (None, None);
    };
    let Some((deployment_name, build_id)) = versioning.pinned() else {
        return (None, None);
    };
    let inherits = child_namespace_id == parent.namespace_id
        && (child_queue == parent.task_queue
            || version_polls(deployment_name, build_id, child_queue));
    if !inherits {
        return (None, None);
    }
    let pinned = super::state::RunVersioning {
        behavior: enums::VersioningBehavior::Pinned as i32,
        deployment_name: deployment_name.to_string(),
        build_id: build_id.to_string(),
        ..Default::default()
    };
    (Some(pinned), versioning.versioning_override.clone())
}

/// StartChildWorkflowExecution.
#[allow(deprecated)]
pub(crate) fn start_child(
    txn: &mut Txn,
    mut a: command::StartChildWorkflowExecutionCommandAttributes,
    completed_id: i64,
) -> Result<(), EngineError> {
    if a.workflow_id.is_empty() {
        return Err(EngineError::InvalidArgument(
            "Required field WorkflowId is not set on command.".into(),
        ));
    }
    let workflow_type = a
        .workflow_type
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    if workflow_type.is_empty() {
        return Err(EngineError::InvalidArgument(
            "Required field WorkflowType is not set on command.".into(),
        ));
    }
    if !a.cron_schedule.is_empty() {
        super::cron::CronSchedule::parse(&a.cron_schedule)
            .map_err(|e| EngineError::InvalidArgument(format!("Invalid CronSchedule: {e}.")))?;
    }
    if a.task_queue.as_ref().is_none_or(|q| q.name.is_empty()) {
        a.task_queue = Some(proto::task_queue(&txn.state.task_queue));
    }
    let initiated_event_id = txn.append(
        Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(
            history::StartChildWorkflowExecutionInitiatedEventAttributes {
                namespace: a.namespace.clone(),
                workflow_id: a.workflow_id.clone(),
                workflow_type: a.workflow_type.clone(),
                task_queue: a.task_queue.clone(),
                input: a.input.clone(),
                workflow_execution_timeout: a.workflow_execution_timeout,
                workflow_run_timeout: a.workflow_run_timeout,
                workflow_task_timeout: a.workflow_task_timeout,
                parent_close_policy: a.parent_close_policy,
                control: a.control.clone(),
                workflow_task_completed_event_id: completed_id,
                workflow_id_reuse_policy: a.workflow_id_reuse_policy,
                retry_policy: a.retry_policy.clone(),
                cron_schedule: a.cron_schedule.clone(),
                header: a.header.clone(),
                memo: a.memo.clone(),
                search_attributes: a.search_attributes.clone(),
                priority: a.priority.clone(),
                ..Default::default()
            },
        ),
    );
    let parent_close_policy = match a.parent_close_policy {
        0 => enums::ParentClosePolicy::Terminate as i32,
        policy => policy,
    };
    txn.state.children.insert(
        initiated_event_id,
        ChildInfo {
            initiated_event_id,
            workflow_task_completed_event_id: completed_id,
            namespace: a.namespace.clone(),
            workflow_id: a.workflow_id.clone(),
            workflow_type,
            command: a.encode_to_vec(),
            parent_close_policy,
            started_run_id: None,
            started_event_id: 0,
            policy_applied: false,
        },
    );
    Ok(())
}

/// SignalExternalWorkflowExecution.
#[allow(deprecated)]
pub(crate) fn signal_external(
    txn: &mut Txn,
    a: command::SignalExternalWorkflowExecutionCommandAttributes,
    completed_id: i64,
) -> Result<(), EngineError> {
    let target = a.execution.clone().unwrap_or_default();
    if target.workflow_id.is_empty() {
        return Err(EngineError::InvalidArgument(
            "WorkflowId is not set on command.".into(),
        ));
    }
    if a.signal_name.is_empty() {
        return Err(EngineError::InvalidArgument(
            "SignalName is not set on command.".into(),
        ));
    }
    let control = a.control.clone();
    let initiated_event_id = txn.append(
        Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(
            history::SignalExternalWorkflowExecutionInitiatedEventAttributes {
                workflow_task_completed_event_id: completed_id,
                namespace: a.namespace.clone(),
                workflow_execution: Some(target.clone()),
                signal_name: a.signal_name.clone(),
                input: a.input.clone(),
                control: control.clone(),
                child_workflow_only: a.child_workflow_only,
                header: a.header.clone(),
                ..Default::default()
            },
        ),
    );
    txn.state.external_requests.insert(
        initiated_event_id,
        ExternalRequest {
            namespace: a.namespace,
            workflow_id: target.workflow_id,
            run_id: target.run_id,
            control,
            workflow_task_completed_event_id: completed_id,
            child_workflow_only: a.child_workflow_only,
            action: ExternalAction::Signal {
                signal_name: a.signal_name,
                input: proto::encode_opt(a.input.as_ref()),
                header: proto::encode_opt(a.header.as_ref()),
            },
        },
    );
    Ok(())
}

/// RequestCancelExternalWorkflowExecution.
#[allow(deprecated)]
pub(crate) fn cancel_external(
    txn: &mut Txn,
    a: command::RequestCancelExternalWorkflowExecutionCommandAttributes,
    completed_id: i64,
) -> Result<(), EngineError> {
    if a.workflow_id.is_empty() {
        return Err(EngineError::InvalidArgument(
            "WorkflowId is not set on command.".into(),
        ));
    }
    let initiated_event_id = txn.append(
        Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
            history::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes {
                workflow_task_completed_event_id: completed_id,
                namespace: a.namespace.clone(),
                workflow_execution: execution(&a.workflow_id, &a.run_id),
                control: a.control.clone(),
                child_workflow_only: a.child_workflow_only,
                reason: a.reason.clone(),
                ..Default::default()
            },
        ),
    );
    txn.state.external_requests.insert(
        initiated_event_id,
        ExternalRequest {
            namespace: a.namespace,
            workflow_id: a.workflow_id,
            run_id: a.run_id,
            control: a.control,
            workflow_task_completed_event_id: completed_id,
            child_workflow_only: a.child_workflow_only,
            action: ExternalAction::Cancel { reason: a.reason },
        },
    );
    Ok(())
}

/// Takes a delivery report. Reports for closed runs only settle the bookkeeping; reports
/// already taken change nothing.
pub(crate) fn report(txn: &mut Txn, report: Report) -> Result<Reply, EngineError> {
    let running = txn.state.is_running();
    match report {
        Report::Schedule(report) if running => return super::schedule::report(txn, report),
        Report::Batch(report) if running => return super::batch::report(txn, report),
        Report::Schedule(_) | Report::Batch(_) => return Err(EngineError::NoChange),
        Report::ChildStarted {
            initiated_event_id,
            run_id,
            namespace: (namespace, namespace_id),
        } => {
            let Some(child) = txn.state.children.get(&initiated_event_id).cloned() else {
                return Err(EngineError::NoChange);
            };
            if child.started_run_id.is_some() {
                return Err(EngineError::NoChange);
            }
            mark_child_started(txn, child, run_id, namespace, namespace_id, running);
        }
        Report::ChildStartFailed {
            initiated_event_id,
            cause,
        } => {
            let Some(child) = txn.state.children.remove(&initiated_event_id) else {
                return Err(EngineError::NoChange);
            };
            if running {
                txn.add_worker_event(
                    Attributes::StartChildWorkflowExecutionFailedEventAttributes(
                        history::StartChildWorkflowExecutionFailedEventAttributes {
                            namespace: child.namespace.clone(),
                            workflow_id: child.workflow_id.clone(),
                            workflow_type: Some(common::WorkflowType {
                                name: child.workflow_type.clone(),
                            }),
                            cause,
                            initiated_event_id,
                            workflow_task_completed_event_id: child
                                .workflow_task_completed_event_id,
                            ..Default::default()
                        },
                    ),
                );
            }
        }
        Report::ChildClosed {
            initiated_event_id,
            run_id,
            namespace: (namespace, namespace_id),
            close,
        } => {
            let Some(mut child) = txn.state.children.get(&initiated_event_id).cloned() else {
                return Err(EngineError::NoChange);
            };
            if child.started_run_id.is_none() {
                // The close overtook the start report: the start is written first.
                mark_child_started(
                    txn,
                    child.clone(),
                    run_id.clone(),
                    namespace.clone(),
                    namespace_id.clone(),
                    running,
                );
                child = txn.state.children[&initiated_event_id].clone();
            }
            txn.state.children.remove(&initiated_event_id);
            if running {
                if let Some(event) =
                    child_closed_event(&child, &run_id, namespace, namespace_id, *close)
                {
                    txn.add_worker_event(event);
                }
            }
        }
        Report::ParentNotified => {
            if txn.state.parent_notified {
                return Err(EngineError::NoChange);
            }
            txn.state.parent_notified = true;
        }
        Report::ParentClosePolicyApplied { initiated_event_id } => {
            match txn.state.children.get_mut(&initiated_event_id) {
                Some(child) if !child.policy_applied => child.policy_applied = true,
                _ => return Err(EngineError::NoChange),
            }
        }
        Report::ExternalDone {
            initiated_event_id,
            namespace: (namespace, namespace_id),
            failure_cause,
        } => {
            let Some(request) = txn.state.external_requests.remove(&initiated_event_id) else {
                return Err(EngineError::NoChange);
            };
            if running {
                txn.add_worker_event(external_result_event(
                    &request,
                    initiated_event_id,
                    namespace,
                    namespace_id,
                    failure_cause,
                ));
            }
        }
    }
    Ok(Reply::Done)
}

fn mark_child_started(
    txn: &mut Txn,
    mut child: ChildInfo,
    run_id: String,
    namespace: String,
    namespace_id: String,
    running: bool,
) {
    let initiated_event_id = child.initiated_event_id;
    child.started_run_id = Some(run_id.clone());
    if running {
        let header =
            command::StartChildWorkflowExecutionCommandAttributes::decode(child.command.as_slice())
                .ok()
                .and_then(|c| c.header);
        child.started_event_id =
            txn.add_worker_event(Attributes::ChildWorkflowExecutionStartedEventAttributes(
                history::ChildWorkflowExecutionStartedEventAttributes {
                    namespace,
                    namespace_id,
                    initiated_event_id,
                    workflow_execution: execution(&child.workflow_id, &run_id),
                    workflow_type: Some(common::WorkflowType {
                        name: child.workflow_type.clone(),
                    }),
                    header,
                },
            ));
    }
    txn.state.children.insert(initiated_event_id, child);
}

/// The parent's event for a child's close event.
fn child_closed_event(
    child: &ChildInfo,
    run_id: &str,
    namespace: String,
    namespace_id: String,
    close: Attributes,
) -> Option<Attributes> {
    let workflow_execution = execution(&child.workflow_id, run_id);
    let workflow_type = Some(common::WorkflowType {
        name: child.workflow_type.clone(),
    });
    let initiated_event_id = child.initiated_event_id;
    let started_event_id = child.started_event_id;
    Some(match close {
        Attributes::WorkflowExecutionCompletedEventAttributes(a) => {
            Attributes::ChildWorkflowExecutionCompletedEventAttributes(
                history::ChildWorkflowExecutionCompletedEventAttributes {
                    result: a.result,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            )
        }
        Attributes::WorkflowExecutionFailedEventAttributes(a) => {
            Attributes::ChildWorkflowExecutionFailedEventAttributes(
                history::ChildWorkflowExecutionFailedEventAttributes {
                    failure: a.failure,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                    retry_state: a.retry_state,
                },
            )
        }
        Attributes::WorkflowExecutionCanceledEventAttributes(a) => {
            Attributes::ChildWorkflowExecutionCanceledEventAttributes(
                history::ChildWorkflowExecutionCanceledEventAttributes {
                    details: a.details,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            )
        }
        Attributes::WorkflowExecutionTerminatedEventAttributes(_) => {
            Attributes::ChildWorkflowExecutionTerminatedEventAttributes(
                history::ChildWorkflowExecutionTerminatedEventAttributes {
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            )
        }
        Attributes::WorkflowExecutionTimedOutEventAttributes(a) => {
            Attributes::ChildWorkflowExecutionTimedOutEventAttributes(
                history::ChildWorkflowExecutionTimedOutEventAttributes {
                    namespace,
                    namespace_id,
                    workflow_execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                    retry_state: a.retry_state,
                },
            )
        }
        _ => return None,
    })
}

#[allow(deprecated)]
fn external_result_event(
    request: &ExternalRequest,
    initiated_event_id: i64,
    namespace: String,
    namespace_id: String,
    failure_cause: Option<i32>,
) -> Attributes {
    let workflow_execution = execution(&request.workflow_id, &request.run_id);
    let completed_id = request.workflow_task_completed_event_id;
    let control = request.control.clone();
    match (&request.action, failure_cause) {
        (ExternalAction::Signal { .. }, None) => {
            Attributes::ExternalWorkflowExecutionSignaledEventAttributes(
                history::ExternalWorkflowExecutionSignaledEventAttributes {
                    initiated_event_id,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    control,
                },
            )
        }
        (ExternalAction::Signal { .. }, Some(cause)) => {
            Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(
                history::SignalExternalWorkflowExecutionFailedEventAttributes {
                    cause,
                    workflow_task_completed_event_id: completed_id,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    initiated_event_id,
                    control,
                },
            )
        }
        (ExternalAction::Cancel { .. }, None) => {
            Attributes::ExternalWorkflowExecutionCancelRequestedEventAttributes(
                history::ExternalWorkflowExecutionCancelRequestedEventAttributes {
                    initiated_event_id,
                    namespace,
                    namespace_id,
                    workflow_execution,
                },
            )
        }
        (ExternalAction::Cancel { .. }, Some(cause)) => {
            Attributes::RequestCancelExternalWorkflowExecutionFailedEventAttributes(
                history::RequestCancelExternalWorkflowExecutionFailedEventAttributes {
                    cause,
                    workflow_task_completed_event_id: completed_id,
                    namespace,
                    namespace_id,
                    workflow_execution,
                    initiated_event_id,
                    control,
                },
            )
        }
    }
}
