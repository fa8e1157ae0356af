//! ResetWorkflowExecution: a new run whose history is the base run's up to a workflow task,
//! followed by that task's failure (cause RESET_WORKFLOW), the signals the base run received
//! after the reset point, and a new workflow task. Its mutable state is rebuilt by folding the
//! copied events ([`rebuild`]), so pending activities, timers, children and external requests
//! carry over as they stood at the reset point.

use std::collections::BTreeSet;

use super::proto::{self, common, enums, history, Attributes, HistoryEvent};
use super::start::{new_run, Continuation, StartArgs};
use super::state::{
    ActivityInfo, ChildInfo, ExternalAction, ExternalRequest, MutableState, TimerInfo, UpdateInfo,
    WorkflowTaskInfo, WorkflowTaskStarted,
};
use super::txn::Txn;
use super::{activity, update, EngineError, Limits, Outcome, Reply};

/// What a reset asks for.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ResetArgs {
    /// The new run's id (chosen by the caller).
    pub new_run_id: String,
    /// The reset request id (a retried reset answers the run it created).
    pub request_id: String,
    /// Why; becomes the failure message of the reset workflow task.
    pub reason: String,
    /// The WorkflowTaskCompleted (or Failed, TimedOut) event to reset to: the new run keeps
    /// the events before it.
    pub workflow_task_finish_event_id: i64,
    /// Copy the base run's signals after the reset point into the new run.
    pub reapply_signals: bool,
}

/// Identity Temporal's history service writes on the events it makes itself.
const HISTORY_SERVICE: &str = "history-service";

/// The new run of a reset of `base`, whose whole history is `events`.
pub fn reset(
    base: &MutableState,
    events: &[HistoryEvent],
    args: ResetArgs,
    now_ns: i64,
    limits: &Limits,
) -> Result<Outcome, EngineError> {
    if base.namespace_division().is_some() || base.activity_execution.is_some() {
        return Err(EngineError::FailedPrecondition(format!(
            "{} is the run of a schedule, batch job or standalone activity, which cannot be \
             reset",
            base.workflow_id
        )));
    }
    let finish = args.workflow_task_finish_event_id;
    let last = base.next_event_id - 1;
    if finish <= 1 || finish > last {
        return Err(EngineError::InvalidArgument(format!(
            "Workflow task finish ID must be > 1 && <= workflow last event ID ({last})."
        )));
    }
    if events.len() as i64 != last || events.first().is_none_or(|e| e.event_id != 1) {
        return Err(EngineError::FailedPrecondition(format!(
            "the history of run {} is incomplete ({} of {last} events); retry the reset",
            base.run_id,
            events.len()
        )));
    }
    let (copied, after) = events.split_at((finish - 1) as usize);
    let mut state = rebuild(base, copied, &args.new_run_id, now_ns, limits)?;
    let Some(task) = state.workflow_task.take() else {
        return Err(EngineError::InvalidArgument(
            "Can only reset workflow to an event ID in the range [WorkflowTaskScheduled + 1, \
             WorkflowTaskStarted + 1]."
                .to_string(),
        ));
    };
    state.history_size_bytes = 0;
    state.next_event_id = 1;
    state.reset_request_id = args.request_id.clone();
    let mut txn = Txn::new(state, now_ns, limits);
    for event in copied {
        txn.push(event.clone());
    }
    let started_event_id = match &task.started {
        Some(started) => started.event_id,
        None => txn.append(Attributes::WorkflowTaskStartedEventAttributes(
            history::WorkflowTaskStartedEventAttributes {
                scheduled_event_id: task.scheduled_event_id,
                identity: HISTORY_SERVICE.to_string(),
                request_id: "emptyUuid".to_string(),
                history_size_bytes: txn.state.history_size_bytes,
                ..Default::default()
            },
        )),
    };
    txn.append(Attributes::WorkflowTaskFailedEventAttributes(
        history::WorkflowTaskFailedEventAttributes {
            scheduled_event_id: task.scheduled_event_id,
            started_event_id,
            cause: enums::WorkflowTaskFailedCause::ResetWorkflow as i32,
            failure: Some(proto::failure::Failure {
                message: args.reason.clone(),
                failure_info: Some(
                    proto::failure::failure::FailureInfo::ResetWorkflowFailureInfo(
                        proto::failure::ResetWorkflowFailureInfo::default(),
                    ),
                ),
                ..Default::default()
            }),
            identity: HISTORY_SERVICE.to_string(),
            base_run_id: base.run_id.clone(),
            new_run_id: args.new_run_id.clone(),
            ..Default::default()
        },
    ));
    if args.reapply_signals {
        for event in after {
            if let Some(Attributes::WorkflowExecutionSignaledEventAttributes(signal)) =
                &event.attributes
            {
                reapply_signal(&mut txn, signal.clone());
            }
        }
    }
    txn.state.next_workflow_task_attempt = 1;
    txn.schedule_workflow_task();
    Ok(txn.finish(Reply::Done))
}

/// Writes a signal the base run received after the reset point (no limit, as in Temporal: the
/// base run accepted it already).
fn reapply_signal(txn: &mut Txn, signal: history::WorkflowExecutionSignaledEventAttributes) {
    if !signal.request_id.is_empty()
        && !txn
            .state
            .signal_request_ids
            .insert(signal.request_id.clone())
    {
        return;
    }
    txn.state.signal_count += 1;
    txn.append(Attributes::WorkflowExecutionSignaledEventAttributes(signal));
}

fn event_ns(event: &HistoryEvent) -> i64 {
    event.event_time.as_ref().map_or(0, proto::timestamp_ns)
}

/// The mutable state of a run whose history is `events` (the base run's first events), for
/// run `run_id`, taken over at `now_ns`: what was pending at the last event is pending again.
/// Activities not started are dispatched afresh; timers keep their fire times.
pub(crate) fn rebuild(
    base: &MutableState,
    events: &[HistoryEvent],
    run_id: &str,
    now_ns: i64,
    limits: &Limits,
) -> Result<MutableState, EngineError> {
    let Some((first, rest)) = events.split_first() else {
        return Err(EngineError::InvalidArgument("the history is empty".into()));
    };
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) = &first.attributes
    else {
        return Err(EngineError::FailedPrecondition(format!(
            "the first event of run {} is not WorkflowExecutionStarted",
            base.run_id
        )));
    };
    let own_update_ids: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionUpdateCompletedEventAttributes(a)) => {
                a.meta.as_ref().map(|m| m.update_id.as_str())
            }
            _ => None,
        })
        .collect();
    let start_ns = event_ns(first);
    let args = StartArgs {
        namespace_id: base.namespace_id.clone(),
        workflow_id: base.workflow_id.clone(),
        run_id: run_id.to_string(),
        request_id: base.start_request_id.clone(),
        workflow_type: base.workflow_type.clone(),
        task_queue: base.task_queue.clone(),
        input: started.input.clone(),
        execution_timeout: started.workflow_execution_timeout,
        run_timeout: started.workflow_run_timeout,
        task_timeout: started.workflow_task_timeout,
        identity: started.identity.clone(),
        retry_policy: started.retry_policy.clone(),
        memo: started.memo.clone(),
        search_attributes: started.search_attributes.clone(),
        header: started.header.clone(),
        start_delay: started.first_workflow_task_backoff,
        priority: started.priority.clone(),
        user_metadata: first.user_metadata.clone(),
        versioning_override: started.versioning_override.clone(),
        inherited_versioning: None,
        eager_workflow_task: false,
        signal: None,
        continuation: Some(Continuation {
            previous_run_id: started.continued_execution_run_id.clone(),
            first_execution_run_id: started.first_execution_run_id.clone(),
            attempt: started.attempt,
            failure: started.continued_failure.clone(),
            last_completion_result: started.last_completion_result.clone(),
            execution_expiration_ns: started
                .workflow_execution_expiration_time
                .as_ref()
                .map(proto::timestamp_ns),
            initiator: started.initiator,
            // Outcomes carried from earlier runs of the chain stay known.
            finished_updates: base
                .finished_updates
                .iter()
                .filter(|(id, _)| !own_update_ids.contains(id.as_str()))
                .map(|(id, f)| (id.clone(), f.clone()))
                .collect(),
        }),
        parent: base.parent.clone(),
        cron_schedule: base.cron_schedule.clone(),
        schedule: None,
        batch: None,
        activity_execution: None,
        last_completion_result: None,
        continued_failure: None,
    };
    let mut state = new_run(args, start_ns, limits)?.state;
    state.start_time_ns = now_ns;
    state.execution_time_ns = now_ns;
    state.workflow_task = None;
    state.first_task_backoff_until_ns = None;
    let mut txn = Txn::new(state, now_ns, limits);
    for event in rest {
        apply_event(&mut txn, event)?;
    }
    for activity in txn.state.activities.values_mut() {
        activity.attempt_scheduled_time_ns = now_ns;
        activity.started = None;
    }
    Ok(txn.state)
}

/// Folds one copied event into the state being rebuilt.
#[allow(deprecated)]
fn apply_event(txn: &mut Txn, event: &HistoryEvent) -> Result<(), EngineError> {
    let at = event_ns(event);
    let id = event.event_id;
    let state = &mut txn.state;
    let Some(attributes) = &event.attributes else {
        return Ok(());
    };
    match attributes {
        Attributes::WorkflowTaskScheduledEventAttributes(a) => {
            state.workflow_task = Some(WorkflowTaskInfo {
                scheduled_event_id: id,
                scheduled_time_ns: at,
                attempt: a.attempt.max(1),
                timeout_ms: proto::duration_ms(a.start_to_close_timeout.as_ref()),
                started: None,
                speculative: false,
            });
        }
        Attributes::WorkflowTaskStartedEventAttributes(a) => {
            if let Some(task) = state.workflow_task.as_mut() {
                task.started = Some(WorkflowTaskStarted {
                    event_id: id,
                    time_ns: at,
                    request_id: a.request_id.clone(),
                    identity: a.identity.clone(),
                });
            }
        }
        Attributes::WorkflowTaskCompletedEventAttributes(a) => {
            state.workflow_task = None;
            state.last_completed_started_event_id = a.started_event_id;
        }
        Attributes::WorkflowTaskFailedEventAttributes(_)
        | Attributes::WorkflowTaskTimedOutEventAttributes(_) => state.workflow_task = None,
        Attributes::ActivityTaskScheduledEventAttributes(a) => {
            let retry = activity::retry_policy(a.retry_policy.as_ref())
                .map_err(EngineError::FailedPrecondition)?;
            state.activity_ids.insert(a.activity_id.clone(), id);
            state.activities.insert(
                id,
                ActivityInfo {
                    scheduled_event_id: id,
                    activity_id: a.activity_id.clone(),
                    activity_type: a
                        .activity_type
                        .as_ref()
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    task_queue: a
                        .task_queue
                        .as_ref()
                        .map(|q| q.name.clone())
                        .unwrap_or_default(),
                    scheduled_time_ns: at,
                    attempt_scheduled_time_ns: at,
                    attempt: 1,
                    schedule_to_close_ms: proto::duration_ms(a.schedule_to_close_timeout.as_ref()),
                    schedule_to_start_ms: proto::duration_ms(a.schedule_to_start_timeout.as_ref()),
                    start_to_close_ms: proto::duration_ms(a.start_to_close_timeout.as_ref()),
                    heartbeat_ms: proto::duration_ms(a.heartbeat_timeout.as_ref()),
                    retry,
                    input: proto::encode_opt(a.input.as_ref()),
                    header: proto::encode_opt(a.header.as_ref()),
                    priority: proto::encode_opt(a.priority.as_ref()),
                    started: None,
                    last_heartbeat_ns: None,
                    heartbeat_details: None,
                    last_failure: None,
                    cancel_requested_event_id: None,
                },
            );
        }
        Attributes::ActivityTaskCancelRequestedEventAttributes(a) => {
            if let Some(activity) = state.activities.get_mut(&a.scheduled_event_id) {
                activity.cancel_requested_event_id = Some(id);
            }
        }
        Attributes::ActivityTaskCompletedEventAttributes(a) => {
            remove_activity(state, a.scheduled_event_id)
        }
        Attributes::ActivityTaskFailedEventAttributes(a) => {
            remove_activity(state, a.scheduled_event_id)
        }
        Attributes::ActivityTaskTimedOutEventAttributes(a) => {
            remove_activity(state, a.scheduled_event_id)
        }
        Attributes::ActivityTaskCanceledEventAttributes(a) => {
            remove_activity(state, a.scheduled_event_id)
        }
        Attributes::TimerStartedEventAttributes(a) => {
            let fire_ms = proto::duration_ms(a.start_to_fire_timeout.as_ref());
            state.timers.insert(
                a.timer_id.clone(),
                TimerInfo {
                    started_event_id: id,
                    fire_at_ns: at + fire_ms * 1_000_000,
                },
            );
        }
        Attributes::TimerFiredEventAttributes(a) => {
            state.timers.remove(&a.timer_id);
        }
        Attributes::TimerCanceledEventAttributes(a) => {
            state.timers.remove(&a.timer_id);
        }
        Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(a) => {
            let command = proto::command::StartChildWorkflowExecutionCommandAttributes {
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
                workflow_id_reuse_policy: a.workflow_id_reuse_policy,
                retry_policy: a.retry_policy.clone(),
                cron_schedule: a.cron_schedule.clone(),
                header: a.header.clone(),
                memo: a.memo.clone(),
                search_attributes: a.search_attributes.clone(),
                priority: a.priority.clone(),
                ..Default::default()
            };
            state.children.insert(
                id,
                ChildInfo {
                    initiated_event_id: id,
                    workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                    namespace: a.namespace.clone(),
                    workflow_id: a.workflow_id.clone(),
                    workflow_type: a
                        .workflow_type
                        .as_ref()
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    command: prost::Message::encode_to_vec(&command),
                    parent_close_policy: match a.parent_close_policy {
                        0 => enums::ParentClosePolicy::Terminate as i32,
                        policy => policy,
                    },
                    started_run_id: None,
                    started_event_id: 0,
                    policy_applied: false,
                },
            );
        }
        Attributes::ChildWorkflowExecutionStartedEventAttributes(a) => {
            if let Some(child) = state.children.get_mut(&a.initiated_event_id) {
                child.started_run_id = a.workflow_execution.as_ref().map(|e| e.run_id.clone());
                child.started_event_id = id;
            }
        }
        Attributes::StartChildWorkflowExecutionFailedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionCompletedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionFailedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionCanceledEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionTerminatedEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::ChildWorkflowExecutionTimedOutEventAttributes(a) => {
            state.children.remove(&a.initiated_event_id);
        }
        Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(a) => {
            let target = a.workflow_execution.clone().unwrap_or_default();
            state.external_requests.insert(
                id,
                ExternalRequest {
                    namespace: a.namespace.clone(),
                    workflow_id: target.workflow_id,
                    run_id: target.run_id,
                    control: a.control.clone(),
                    workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                    child_workflow_only: a.child_workflow_only,
                    action: ExternalAction::Signal {
                        signal_name: a.signal_name.clone(),
                        input: proto::encode_opt(a.input.as_ref()),
                        header: proto::encode_opt(a.header.as_ref()),
                    },
                },
            );
        }
        Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(a) => {
            let target = a.workflow_execution.clone().unwrap_or_default();
            state.external_requests.insert(
                id,
                ExternalRequest {
                    namespace: a.namespace.clone(),
                    workflow_id: target.workflow_id,
                    run_id: target.run_id,
                    control: a.control.clone(),
                    workflow_task_completed_event_id: a.workflow_task_completed_event_id,
                    child_workflow_only: a.child_workflow_only,
                    action: ExternalAction::Cancel {
                        reason: a.reason.clone(),
                    },
                },
            );
        }
        Attributes::ExternalWorkflowExecutionSignaledEventAttributes(a) => {
            state.external_requests.remove(&a.initiated_event_id);
        }
        Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(a) => {
            state.external_requests.remove(&a.initiated_event_id);
        }
        Attributes::ExternalWorkflowExecutionCancelRequestedEventAttributes(a) => {
            state.external_requests.remove(&a.initiated_event_id);
        }
        Attributes::RequestCancelExternalWorkflowExecutionFailedEventAttributes(a) => {
            state.external_requests.remove(&a.initiated_event_id);
        }
        Attributes::WorkflowExecutionSignaledEventAttributes(a) => {
            state.signal_count += 1;
            if !a.request_id.is_empty() {
                state.signal_request_ids.insert(a.request_id.clone());
            }
        }
        Attributes::WorkflowExecutionCancelRequestedEventAttributes(_) => {
            state.cancel_requested = true;
        }
        Attributes::UpsertWorkflowSearchAttributesEventAttributes(a) => {
            let mut current: common::SearchAttributes =
                proto::decode_opt(&state.search_attributes).unwrap_or_default();
            super::workflow_task::merge_payload_map(
                &mut current.indexed_fields,
                a.search_attributes
                    .clone()
                    .unwrap_or_default()
                    .indexed_fields,
            );
            state.search_attributes = proto::encode_opt(Some(&current));
        }
        Attributes::WorkflowPropertiesModifiedEventAttributes(a) => {
            let mut current: common::Memo = proto::decode_opt(&state.memo).unwrap_or_default();
            super::workflow_task::merge_payload_map(
                &mut current.fields,
                a.upserted_memo.clone().unwrap_or_default().fields,
            );
            state.memo = proto::encode_opt(Some(&current));
        }
        Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(a) => {
            let request = a.accepted_request.clone().unwrap_or_default();
            state.update_count += 1;
            state.updates.push(UpdateInfo {
                update_id: request
                    .meta
                    .as_ref()
                    .map(|m| m.update_id.clone())
                    .unwrap_or_default(),
                request: prost::Message::encode_to_vec(&request),
                accepted_event_id: Some(id),
            });
        }
        Attributes::WorkflowExecutionUpdateCompletedEventAttributes(a) => {
            let update_id = a
                .meta
                .as_ref()
                .map(|m| m.update_id.clone())
                .unwrap_or_default();
            txn.state.updates.retain(|u| u.update_id != update_id);
            update::finish(txn, &update_id, a.outcome.clone().unwrap_or_default(), true);
        }
        Attributes::WorkflowExecutionCompletedEventAttributes(_)
        | Attributes::WorkflowExecutionFailedEventAttributes(_)
        | Attributes::WorkflowExecutionTimedOutEventAttributes(_)
        | Attributes::WorkflowExecutionCanceledEventAttributes(_)
        | Attributes::WorkflowExecutionTerminatedEventAttributes(_)
        | Attributes::WorkflowExecutionContinuedAsNewEventAttributes(_) => {
            return Err(EngineError::InvalidArgument(
                "Can only reset a workflow to a point before it closed.".to_string(),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn remove_activity(state: &mut MutableState, scheduled_event_id: i64) {
    if let Some(activity) = state.activities.remove(&scheduled_event_id) {
        state.activity_ids.remove(&activity.activity_id);
    }
    state.activity_attempt_ends.remove(&scheduled_event_id);
}
