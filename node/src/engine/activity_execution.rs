//! Standalone activities (StartActivityExecution): activities a client starts, not a workflow.
//! One lives in a run of its own (workflow id `temporal-sys-activity:ID`) that has no workflow
//! tasks: the activity is that run's one pending activity, so dispatch, timeouts, retries,
//! heartbeats and the operator controls are the workflow activities' own. This module adds
//! what differs: the start, a client's cancel and terminate, and the run closing with the
//! activity's outcome ([`observe`], after every decision on such a run).

use serde::{Deserialize, Serialize};

use super::proto::{self, activity, command, common, enums, failure, history, Attributes};
use super::state::{ActivityInfo, MutableState, RunStatus};
use super::txn::Txn;
use super::{EngineError, Reply};

/// Workflow ids of standalone activities' runs start with this, then the activity id.
pub const WORKFLOW_ID_PREFIX: &str = "temporal-sys-activity:";

/// Workflow type of a standalone activity's run.
pub const WORKFLOW_TYPE: &str = "temporal-sys-activity";

/// The workflow id of the run of standalone activity `activity_id`.
pub fn workflow_id(activity_id: &str) -> String {
    format!("{WORKFLOW_ID_PREFIX}{activity_id}")
}

/// What StartActivityExecution schedules (checked by the frontend).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewActivityExecution {
    /// The activity as a workflow would schedule it: id, type, queue, timeouts, retry
    /// policy, input, header and priority.
    #[serde(with = "crate::wire::message")]
    pub schedule: command::ScheduleActivityTaskCommandAttributes,
    /// The first attempt waits this long.
    pub start_delay_ms: i64,
}

/// Who asked to cancel a standalone activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Request id (a retried cancel succeeds again).
    pub request_id: String,
    /// Reason.
    pub reason: String,
    /// Caller identity.
    pub identity: String,
}

/// What a standalone activity's run keeps besides the activity itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityExecution {
    /// The activity id.
    pub activity_id: String,
    /// The first attempt's delay.
    pub start_delay_ms: i64,
    /// RequestCancelActivityExecution, once asked.
    pub cancel: Option<CancelRequest>,
    /// Request id of the TerminateActivityExecution that closed it (empty: none).
    pub terminate_request_id: String,
    /// The activity as it was when its run closed (it is no longer pending then).
    pub closed: Option<ActivityInfo>,
    /// Encoded `ActivityExecutionOutcome`, once closed.
    #[serde(with = "serde_bytes")]
    pub outcome: Vec<u8>,
    /// When the last attempt started.
    pub last_started_ns: Option<i64>,
    /// Identity of the worker that started the last attempt.
    pub last_worker_identity: String,
    /// When an attempt last ended by failing or completing.
    pub last_attempt_complete_ns: Option<i64>,
    /// Heartbeats recorded, over all attempts.
    pub heartbeat_count: i64,
    /// When the last of them was.
    pub last_heartbeat_ns: Option<i64>,
    /// Changes of the activity's state (long polls of DescribeActivityExecution wait for the
    /// next one).
    pub transitions: i64,
}

/// A client's request on a standalone activity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ActivityExecutionRequest {
    /// RequestCancelActivityExecution.
    Cancel(CancelRequest),
    /// TerminateActivityExecution.
    Terminate {
        /// Request id (a retried terminate succeeds again).
        request_id: String,
        /// Reason.
        reason: String,
        /// Caller identity.
        identity: String,
    },
}

/// Makes the new run in `txn` a standalone activity's: the activity is scheduled (its first
/// attempt after the start delay) and no workflow task ever is.
pub(crate) fn create(txn: &mut Txn, new: NewActivityExecution) -> Result<(), EngineError> {
    let options = super::activity::requested_options(&new.schedule, "", 0)
        .map_err(EngineError::InvalidArgument)?;
    if options.task_queue.is_empty() {
        return Err(EngineError::InvalidArgument(
            "missing task queue name".into(),
        ));
    }
    let activity_id = new.schedule.activity_id.clone();
    let scheduled = super::activity::schedule(txn, new.schedule, options, 0);
    // A delayed activity counts its schedule-to-close time from the end of the delay, as in
    // Temporal (the run's start time is when it was scheduled).
    if let Some(activity) = txn.state.activities.get_mut(&scheduled) {
        activity.scheduled_time_ns = txn.now + new.start_delay_ms * 1_000_000;
        activity.attempt_scheduled_time_ns = activity.scheduled_time_ns;
    }
    txn.state.execution_time_ns = txn.now + new.start_delay_ms * 1_000_000;
    txn.state.activity_execution = Some(Box::new(ActivityExecution {
        activity_id,
        start_delay_ms: new.start_delay_ms,
        ..Default::default()
    }));
    Ok(())
}

/// The standalone activity's state: pending while its run is open, as it closed after.
pub fn activity(state: &MutableState) -> Option<&ActivityInfo> {
    let execution = state.activity_execution.as_deref()?;
    state
        .activities
        .values()
        .next()
        .or(execution.closed.as_ref())
}

/// Decides on a client's cancel or terminate of the standalone activity in `txn`.
pub(crate) fn handle(
    txn: &mut Txn,
    request: ActivityExecutionRequest,
) -> Result<Reply, EngineError> {
    let Some(execution) = txn.state.activity_execution.as_deref() else {
        return Err(EngineError::FailedPrecondition(
            "not a standalone activity".into(),
        ));
    };
    let status = txn.state.status;
    match request {
        ActivityExecutionRequest::Cancel(cancel) => {
            if let Some(asked) = &execution.cancel {
                if asked.request_id == cancel.request_id {
                    return Ok(Reply::Done);
                }
            }
            if status != RunStatus::Running {
                return Err(EngineError::FailedPrecondition(format!(
                    "activity is in terminal state {}",
                    status_query_name(&txn.state)
                )));
            }
            if let Some(asked) = &execution.cancel {
                return Err(EngineError::FailedPrecondition(format!(
                    "cancellation already requested with request ID {}",
                    asked.request_id
                )));
            }
            let scheduled_event_id = txn
                .state
                .activities
                .keys()
                .next()
                .copied()
                .ok_or(EngineError::NoChange)?;
            if let Some(execution) = txn.state.activity_execution.as_deref_mut() {
                execution.cancel = Some(cancel);
            }
            // Not started: canceled at once ([`observe`] closes the run); started: the
            // worker learns it from its next heartbeat.
            super::activity::request_cancel(txn, scheduled_event_id, 0)?;
            Ok(Reply::Done)
        }
        ActivityExecutionRequest::Terminate {
            request_id,
            reason,
            identity,
        } => {
            match status {
                RunStatus::Running => {}
                RunStatus::Terminated if execution.terminate_request_id == request_id => {
                    return Ok(Reply::Done)
                }
                RunStatus::Terminated => {
                    return Err(EngineError::FailedPrecondition(format!(
                        "already terminated with request ID {}",
                        execution.terminate_request_id
                    )))
                }
                _ => {
                    return Err(EngineError::FailedPrecondition(format!(
                        "invalid transition from {}",
                        status_query_name(&txn.state)
                    )))
                }
            }
            super::terminate(txn, reason, None, identity)?;
            if let Some(execution) = txn.state.activity_execution.as_deref_mut() {
                execution.terminate_request_id = request_id;
            }
            Ok(Reply::Done)
        }
    }
}

/// A report by activity id on a closed standalone activity is refused as Temporal refuses it
/// (a report with a task token finds no attempt: NotFound).
pub(crate) fn check_report(
    state: &MutableState,
    request: &super::Request,
) -> Result<(), EngineError> {
    let by_id = matches!(
        request,
        super::Request::Activity {
            target: super::ActivityTarget::Id(_),
            ..
        }
    );
    if by_id && !state.is_running() {
        return Err(EngineError::FailedPrecondition(format!(
            "invalid transition from {}",
            status_query_name(state)
        )));
    }
    Ok(())
}

/// After any decision on a standalone activity's run (`before` is its state before): keeps
/// the activity's record (attempt starts, ends, heartbeats, changes) and, once the activity is
/// no longer pending, closes the run with its outcome.
pub(crate) fn observe(before: &MutableState, txn: &mut Txn) {
    let Some(mut execution) = txn.state.activity_execution.take() else {
        return;
    };
    let old = before.activities.values().next();
    if let Some(now) = txn.state.activities.values().next() {
        if let Some(started) = &now.started {
            let newly = old.is_none_or(|o| o.started.is_none() || o.attempt != now.attempt);
            if newly {
                execution.last_started_ns = Some(started.time_ns);
                execution.last_worker_identity = started.identity.clone();
            }
        }
        if let Some(end) = txn.state.activity_attempt_ends.get(&now.scheduled_event_id) {
            execution.last_attempt_complete_ns = Some(*end);
        }
        if let Some(old) = old {
            if now.last_heartbeat_ns.is_some() && now.last_heartbeat_ns != old.last_heartbeat_ns {
                execution.heartbeat_count += 1;
                execution.last_heartbeat_ns = now.last_heartbeat_ns;
            }
        }
    }
    if txn.state.activities != before.activities || !txn.events.is_empty() {
        execution.transitions += 1;
    }
    let ended = before.is_running() && old.is_some() && execution.outcome.is_empty();
    if ended && txn.state.is_running() && txn.state.activities.is_empty() {
        if let Some(old) = old {
            close(txn, &mut execution, old.clone());
        }
    } else if ended && !txn.state.is_running() {
        // Terminated (or deleted): the outcome says by whom and why.
        let terminated = txn.events.iter().rev().find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowExecutionTerminatedEventAttributes(t)) => Some(t),
            _ => None,
        });
        if let Some(t) = terminated {
            let outcome = failure_outcome(
                failure::Failure {
                    message: t.reason.clone(),
                    failure_info: Some(failure::failure::FailureInfo::TerminatedFailureInfo(
                        failure::TerminatedFailureInfo {
                            identity: t.identity.clone(),
                        },
                    )),
                    ..Default::default()
                },
                enums::RetryState::Unspecified,
            );
            execution.outcome = proto::encode_opt(Some(&outcome));
            execution.closed = old.cloned();
        }
    }
    txn.state.activity_execution = Some(execution);
}

fn failure_outcome(
    failure: failure::Failure,
    retry_state: enums::RetryState,
) -> activity::ActivityExecutionOutcome {
    activity::ActivityExecutionOutcome {
        value: Some(activity::activity_execution_outcome::Value::Failure(
            failure,
        )),
        retry_state: retry_state as i32,
    }
}

/// The activity ended with the event `txn` just wrote: the run closes with its outcome.
fn close(txn: &mut Txn, execution: &mut ActivityExecution, mut ended: ActivityInfo) {
    let last_failure = || ended_failure(&ended);
    // The event that ended the activity (the last it wrote; a started event may precede it).
    let Some(event) = txn.events.iter().rev().find_map(|e| match &e.attributes {
        Some(
            a @ (Attributes::ActivityTaskCompletedEventAttributes(_)
            | Attributes::ActivityTaskFailedEventAttributes(_)
            | Attributes::ActivityTaskTimedOutEventAttributes(_)
            | Attributes::ActivityTaskCanceledEventAttributes(_)),
        ) => Some(a.clone()),
        _ => None,
    }) else {
        return;
    };
    if let Some(started) = &ended.started {
        execution.last_started_ns = Some(started.time_ns);
    }
    let (status, outcome, close) = match event {
        Attributes::ActivityTaskCompletedEventAttributes(a) => {
            execution.last_attempt_complete_ns = Some(txn.now);
            execution.last_worker_identity = a.identity.clone();
            let result = a.result.unwrap_or_default();
            (
                RunStatus::Completed,
                activity::ActivityExecutionOutcome {
                    value: Some(activity::activity_execution_outcome::Value::Result(
                        result.clone(),
                    )),
                    retry_state: 0,
                },
                Attributes::WorkflowExecutionCompletedEventAttributes(
                    history::WorkflowExecutionCompletedEventAttributes {
                        result: Some(result),
                        ..Default::default()
                    },
                ),
            )
        }
        Attributes::ActivityTaskFailedEventAttributes(a) => {
            execution.last_attempt_complete_ns = Some(txn.now);
            execution.last_worker_identity = a.identity.clone();
            let failure = a.failure.unwrap_or_else(|| failure::Failure {
                message: "activity task failed without failure details".into(),
                ..Default::default()
            });
            ended.last_failure = Some(proto::encode_opt(Some(&failure)));
            let retry_state = enums::RetryState::try_from(a.retry_state)
                .unwrap_or(enums::RetryState::Unspecified);
            (
                RunStatus::Failed,
                failure_outcome(failure.clone(), retry_state),
                Attributes::WorkflowExecutionFailedEventAttributes(
                    history::WorkflowExecutionFailedEventAttributes {
                        failure: Some(failure),
                        retry_state: a.retry_state,
                        ..Default::default()
                    },
                ),
            )
        }
        Attributes::ActivityTaskTimedOutEventAttributes(a) => {
            let mut failure = a.failure.unwrap_or_default();
            if failure.cause.is_none() {
                failure.cause = last_failure().map(Box::new);
            }
            // Reported as a schedule-to-close timeout before that deadline: the attempt timed
            // out and its retry would have begun after it. Temporal says so.
            let s2c_deadline = ended.scheduled_time_ns + ended.schedule_to_close_ms * 1_000_000;
            if ended.schedule_to_close_ms > 0
                && s2c_deadline > txn.now
                && super::activity::timeout_type_of(&failure)
                    == Some(enums::TimeoutType::ScheduleToClose)
            {
                failure.message = "Not enough time to schedule next retry before activity \
                                   ScheduleToClose timeout, giving up retrying"
                    .into();
            }
            let retry_state = enums::RetryState::try_from(a.retry_state)
                .unwrap_or(enums::RetryState::Unspecified);
            (
                RunStatus::TimedOut,
                failure_outcome(failure, retry_state),
                Attributes::WorkflowExecutionTimedOutEventAttributes(
                    history::WorkflowExecutionTimedOutEventAttributes {
                        retry_state: a.retry_state,
                        ..Default::default()
                    },
                ),
            )
        }
        Attributes::ActivityTaskCanceledEventAttributes(a) => {
            let cancel = execution.cancel.clone();
            // Canceled before an attempt ran: the details are the reason, as Temporal gives.
            let details = a.details.clone().or_else(|| {
                cancel.as_ref().map(|c| common::Payloads {
                    payloads: vec![proto::json_payload(&c.reason)],
                })
            });
            (
                RunStatus::Canceled,
                failure_outcome(
                    failure::Failure {
                        message: "Activity canceled".into(),
                        failure_info: Some(failure::failure::FailureInfo::CanceledFailureInfo(
                            failure::CanceledFailureInfo {
                                details: details.clone(),
                                identity: cancel.map(|c| c.identity).unwrap_or_default(),
                            },
                        )),
                        ..Default::default()
                    },
                    enums::RetryState::Unspecified,
                ),
                Attributes::WorkflowExecutionCanceledEventAttributes(
                    history::WorkflowExecutionCanceledEventAttributes {
                        details,
                        ..Default::default()
                    },
                ),
            )
        }
        _ => return,
    };
    execution.outcome = proto::encode_opt(Some(&outcome));
    execution.closed = Some(ended);
    txn.close(status, close);
}

fn ended_failure(activity: &ActivityInfo) -> Option<failure::Failure> {
    activity.last_failure.as_deref().and_then(proto::decode_opt)
}

/// The activity's `ActivityExecutionStatus`: a paused one is PAUSED while its run is open.
pub fn status(state: &MutableState) -> enums::ActivityExecutionStatus {
    use enums::ActivityExecutionStatus as S;
    match state.status {
        RunStatus::Running => {
            let paused = state
                .activities
                .keys()
                .any(|id| super::activity_control::paused(state, *id));
            if paused {
                S::Paused
            } else {
                S::Running
            }
        }
        RunStatus::Completed => S::Completed,
        RunStatus::Failed => S::Failed,
        RunStatus::Canceled => S::Canceled,
        RunStatus::Terminated | RunStatus::ContinuedAsNew => S::Terminated,
        RunStatus::TimedOut => S::TimedOut,
    }
}

/// The status as list queries and GROUP BY spell it (`Running`, `Paused`, ...).
pub fn status_query_name(state: &MutableState) -> &'static str {
    use enums::ActivityExecutionStatus as S;
    match status(state) {
        S::Unspecified => "Unspecified",
        S::Running => "Running",
        S::Completed => "Completed",
        S::Failed => "Failed",
        S::Canceled => "Canceled",
        S::Terminated => "Terminated",
        S::TimedOut => "TimedOut",
        S::Paused => "Paused",
    }
}

/// The outcome of a closed standalone activity.
pub fn outcome(state: &MutableState) -> Option<activity::ActivityExecutionOutcome> {
    let execution = state.activity_execution.as_deref()?;
    if state.is_running() {
        return None;
    }
    proto::decode_opt(&execution.outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        dispatchable, handle as decide, new_run, ActivityReport, ActivityTarget, Deadline, Limits,
        Request, Signal, StartArgs, TaskKind,
    };

    const SEC: i64 = 1_000_000_000;
    /// Its ActivityTaskScheduled event follows the run's started event.
    const SCHEDULED: i64 = 2;

    fn start(retry: Option<common::RetryPolicy>, delay_ms: i64) -> MutableState {
        let schedule = command::ScheduleActivityTaskCommandAttributes {
            activity_id: "a1".into(),
            activity_type: Some(common::ActivityType {
                name: "Greet".into(),
            }),
            task_queue: Some(proto::task_queue("q")),
            start_to_close_timeout: proto::duration(5_000),
            retry_policy: retry,
            ..Default::default()
        };
        let args = StartArgs {
            namespace_id: "ns".into(),
            workflow_id: workflow_id("a1"),
            run_id: "run".into(),
            request_id: "req".into(),
            workflow_type: WORKFLOW_TYPE.into(),
            task_queue: "q".into(),
            activity_execution: Some(Box::new(NewActivityExecution {
                schedule,
                start_delay_ms: delay_ms,
            })),
            ..Default::default()
        };
        let outcome = new_run(args, SEC, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(outcome.state.workflow_task.is_none(), "no workflow task");
        outcome.state
    }

    /// The run's standalone activity record.
    fn record(state: &MutableState) -> ActivityExecution {
        state
            .activity_execution
            .as_deref()
            .cloned()
            .unwrap_or_else(|| panic!("not a standalone activity's run: {state:?}"))
    }

    fn step(state: &MutableState, request: Request, at: i64) -> MutableState {
        decide(state, request, at, &Limits::default())
            .unwrap_or_else(|e| panic!("refused: {e}"))
            .state
    }

    fn refusal(state: &MutableState, request: Request) -> EngineError {
        match decide(state, request, 9 * SEC, &Limits::default()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    fn take(state: &MutableState, attempt: i32, at: i64) -> MutableState {
        let request = Request::RecordActivityTaskStarted {
            scheduled_event_id: SCHEDULED,
            attempt,
            task_queue: "q".into(),
            request_id: format!("poll-{attempt}"),
            identity: "worker".into(),
        };
        step(state, request, at)
    }

    fn report(attempt: i32, report: ActivityReport) -> Request {
        Request::Activity {
            target: ActivityTarget::Token {
                scheduled_event_id: SCHEDULED,
                attempt,
            },
            report,
            identity: "worker".into(),
        }
    }

    fn fail(attempt: i32) -> Request {
        report(
            attempt,
            ActivityReport::Failed {
                failure: Some(failure::Failure {
                    message: format!("attempt {attempt}"),
                    ..Default::default()
                }),
                last_heartbeat_details: None,
            },
        )
    }

    fn cancel(request_id: &str) -> Request {
        Request::ActivityExecution(ActivityExecutionRequest::Cancel(CancelRequest {
            request_id: request_id.into(),
            reason: "no longer needed".into(),
            identity: "client".into(),
        }))
    }

    fn terminate(request_id: &str) -> Request {
        Request::ActivityExecution(ActivityExecutionRequest::Terminate {
            request_id: request_id.into(),
            reason: "stop".into(),
            identity: "client".into(),
        })
    }

    fn failure_of(state: &MutableState) -> (failure::Failure, enums::RetryState) {
        let outcome = outcome(state).unwrap_or_else(|| panic!("no outcome: {state:?}"));
        match outcome.value {
            Some(activity::activity_execution_outcome::Value::Failure(f)) => (
                f,
                enums::RetryState::try_from(outcome.retry_state)
                    .unwrap_or(enums::RetryState::Unspecified),
            ),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn a_completed_activity_closes_its_run_with_the_result_and_keeps_its_record() {
        let state = start(None, 0);
        assert_eq!(status(&state), enums::ActivityExecutionStatus::Running);
        assert_eq!(dispatchable(&state, SEC)[0].kind, TaskKind::Activity);
        let state = take(&state, 1, 2 * SEC);
        let kept = record(&state);
        assert_eq!(kept.last_started_ns, Some(2 * SEC));
        assert_eq!(kept.last_worker_identity, "worker");
        let result = common::Payloads {
            payloads: vec![proto::json_payload("done")],
        };
        let state = step(
            &state,
            report(1, ActivityReport::Completed(Some(result.clone()))),
            3 * SEC,
        );
        assert_eq!(state.status, RunStatus::Completed);
        assert_eq!(status(&state), enums::ActivityExecutionStatus::Completed);
        assert_eq!(
            outcome(&state).and_then(|o| o.value),
            Some(activity::activity_execution_outcome::Value::Result(result))
        );
        let kept = record(&state);
        assert_eq!(kept.last_attempt_complete_ns, Some(3 * SEC));
        assert_eq!(
            activity(&state).map(|a| a.activity_type.as_str()),
            Some("Greet")
        );
        assert!(crate::engine::deadlines(&state).is_empty());
    }

    #[test]
    fn retries_until_the_attempts_run_out_then_the_activity_fails() {
        let retry = common::RetryPolicy {
            maximum_attempts: 2,
            ..Default::default()
        };
        let state = take(&start(Some(retry), 0), 1, 2 * SEC);
        let state = step(&state, fail(1), 3 * SEC);
        assert!(state.is_running(), "retried");
        let a = activity(&state)
            .cloned()
            .unwrap_or_else(|| panic!("pending"));
        assert_eq!((a.attempt, a.attempt_scheduled_time_ns), (2, 4 * SEC));
        let kept = record(&state);
        assert_eq!(kept.last_attempt_complete_ns, Some(3 * SEC));
        let state = take(&state, 2, 4 * SEC);
        let state = step(&state, fail(2), 5 * SEC);
        assert_eq!(status(&state), enums::ActivityExecutionStatus::Failed);
        let (failure, retry_state) = failure_of(&state);
        assert_eq!(failure.message, "attempt 2");
        assert_eq!(retry_state, enums::RetryState::MaximumAttemptsReached);
    }

    #[test]
    fn a_retry_whose_dispatch_time_passed_arms_no_deadline() {
        let state = step(&take(&start(None, 0), 1, 2 * SEC), fail(1), 3 * SEC);
        let retry = Deadline::ActivityRetry {
            scheduled_event_id: SCHEDULED,
            attempt: 2,
        };
        let armed = |now| crate::engine::deadlines_to_arm(&state, now);
        assert!(armed(3 * SEC).contains(&(4 * SEC, retry.clone())));
        // Once due, the task is dispatchable instead; with no poller it stays so, and a
        // re-armed deadline would fire again at once, forever.
        assert!(!armed(4 * SEC).iter().any(|(_, d)| *d == retry));
        assert_eq!(dispatchable(&state, 4 * SEC).len(), 1);
    }

    #[test]
    fn a_start_delay_holds_dispatch_and_arms_a_deadline_for_its_end() {
        let state = start(None, 3_000);
        assert!(dispatchable(&state, 2 * SEC).is_empty());
        assert_eq!(dispatchable(&state, 4 * SEC).len(), 1);
        assert_eq!(state.execution_time_ns, 4 * SEC);
        assert!(crate::engine::deadlines(&state).contains(&(
            4 * SEC,
            Deadline::ActivityRetry {
                scheduled_event_id: SCHEDULED,
                attempt: 1
            }
        )));
    }

    #[test]
    fn a_cancel_before_any_attempt_cancels_at_once_with_the_reason_as_details() {
        let state = step(&start(None, 0), cancel("c1"), 2 * SEC);
        assert_eq!(status(&state), enums::ActivityExecutionStatus::Canceled);
        let (failure, _) = failure_of(&state);
        assert_eq!(failure.message, "Activity canceled");
        let Some(failure::failure::FailureInfo::CanceledFailureInfo(info)) = failure.failure_info
        else {
            panic!("not a cancel: {failure:?}");
        };
        assert_eq!(info.identity, "client");
        assert_eq!(
            info.details.map(|d| d.payloads),
            Some(vec![proto::json_payload("no longer needed")])
        );
        // The same request again succeeds; another is refused.
        assert!(decide(&state, cancel("c1"), 3 * SEC, &Limits::default()).is_ok());
        assert_eq!(
            refusal(&state, cancel("c2")),
            EngineError::FailedPrecondition("activity is in terminal state Canceled".into())
        );
    }

    #[test]
    fn a_cancel_of_a_running_attempt_waits_for_the_worker_and_stops_retries() {
        let state = step(&take(&start(None, 0), 1, 2 * SEC), cancel("c1"), 3 * SEC);
        assert!(state.is_running());
        assert_eq!(
            refusal(&state, cancel("c2")),
            EngineError::FailedPrecondition(
                "cancellation already requested with request ID c1".into()
            )
        );
        // A failed attempt is not retried once a cancel was asked for.
        let state = step(&state, fail(1), 4 * SEC);
        let (_, retry_state) = failure_of(&state);
        assert_eq!(retry_state, enums::RetryState::CancelRequested);
    }

    #[test]
    fn terminate_closes_at_once_and_later_requests_are_refused_as_temporal_refuses_them() {
        let state = step(&take(&start(None, 0), 1, 2 * SEC), terminate("t1"), 3 * SEC);
        assert_eq!(status(&state), enums::ActivityExecutionStatus::Terminated);
        let (failure, _) = failure_of(&state);
        assert_eq!(failure.message, "stop");
        assert!(decide(&state, terminate("t1"), 4 * SEC, &Limits::default()).is_ok());
        assert_eq!(
            refusal(&state, terminate("t2")),
            EngineError::FailedPrecondition("already terminated with request ID t1".into())
        );
        // The worker's attempt is gone: by token NotFound, by id a refused transition.
        assert!(matches!(
            refusal(&state, report(1, ActivityReport::Heartbeat(None))),
            EngineError::NotFound(_)
        ));
        let by_id = Request::Activity {
            target: ActivityTarget::Id("a1".into()),
            report: ActivityReport::Completed(None),
            identity: "worker".into(),
        };
        assert_eq!(
            refusal(&state, by_id),
            EngineError::FailedPrecondition("invalid transition from Terminated".into())
        );
        let completed = step(
            &take(&start(None, 0), 1, 2 * SEC),
            report(1, ActivityReport::Completed(None)),
            3 * SEC,
        );
        assert_eq!(
            refusal(&completed, terminate("t3")),
            EngineError::FailedPrecondition("invalid transition from Completed".into())
        );
    }

    #[test]
    fn completing_by_id_needs_no_started_attempt_but_the_other_reports_do() {
        let by_id = |report: ActivityReport| Request::Activity {
            target: ActivityTarget::Id("a1".into()),
            report,
            identity: "operator".into(),
        };
        let state = start(None, 0);
        assert!(matches!(
            refusal(&state, by_id(ActivityReport::Heartbeat(None))),
            EngineError::NotFound(_)
        ));
        let state = step(&state, by_id(ActivityReport::Completed(None)), 2 * SEC);
        assert_eq!(status(&state), enums::ActivityExecutionStatus::Completed);
        let kept = record(&state);
        assert_eq!(kept.last_worker_identity, "operator");
    }

    #[test]
    fn a_standalone_activity_run_refuses_workflow_requests() {
        assert!(matches!(
            refusal(&start(None, 0), Request::Signal(Signal::default())),
            EngineError::FailedPrecondition(_)
        ));
    }
}
