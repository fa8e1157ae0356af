//! Runs that follow a closing run of the same workflow id, as Temporal starts them: workflow
//! retries (a failed run with a retry policy; WorkflowExecutionFailed names the new run, whose
//! WorkflowExecutionStarted carries the attempt, the failure and the backoff) and
//! continue-as-new (the new run inherits what the command leaves unset).

use super::activity;
use super::cron::CronSchedule;
use super::proto::{self, command, enums, failure, history, Attributes};
use super::start::{new_run, Continuation, StartArgs};
use super::state::{RunStatus, RunVersioning};
use super::txn::Txn;
use super::EngineError;

/// Closes the run as failed; when its retry policy allows, starts the next attempt.
pub(crate) fn fail_run(txn: &mut Txn, failure: Option<failure::Failure>, completed_id: i64) {
    let retry = match &txn.state.retry {
        Some(policy) => activity::next_retry_delay(
            policy,
            txn.state.attempt,
            failure.as_ref(),
            txn.now,
            txn.state.execution_expiration_ns.unwrap_or(0),
        ),
        None => Err(enums::RetryState::RetryPolicyNotSet),
    };
    let (retry_state, new_run_id) = match retry {
        Ok(delay_ms) => {
            let run_id = successor_run_id(&txn.state.run_id, txn.state.attempt, txn.now);
            start_successor(txn, &run_id, delay_ms, failure.clone());
            (enums::RetryState::InProgress, run_id)
        }
        Err(state) => (state, start_cron_successor(txn, None, failure.clone())),
    };
    txn.close(
        RunStatus::Failed,
        Attributes::WorkflowExecutionFailedEventAttributes(
            history::WorkflowExecutionFailedEventAttributes {
                failure,
                retry_state: retry_state as i32,
                workflow_task_completed_event_id: completed_id,
                new_execution_run_id: new_run_id,
            },
        ),
    );
}

fn start_successor(txn: &mut Txn, run_id: &str, delay_ms: i64, failure: Option<failure::Failure>) {
    let mut args = inherited_args(txn, run_id);
    args.start_delay = proto::duration(delay_ms);
    if let Some(continuation) = args.continuation.as_mut() {
        continuation.attempt = txn.state.attempt + 1;
        continuation.failure = failure;
        continuation.initiator = enums::ContinueAsNewInitiator::Retry as i32;
    }
    // The retry policy was validated when the first run started, so this cannot fail.
    txn.successor = new_run(args, txn.now, txn.limits).ok();
    txn.state.successor_run_id = run_id.to_string();
}

/// The versioning a run continued as new starts with, as Temporal decides it: a run pinned by
/// its behavior passes its version on, unless the command asks for AUTO_UPGRADE (none) or
/// USE_RAMPING_VERSION (the first task goes to the ramping version). A pinned override is
/// passed on by [`inherited_args`] whatever the command says.
fn continued_versioning(txn: &Txn, initial_behavior: i32) -> Option<RunVersioning> {
    use proto::enums::ContinueAsNewVersioningBehavior as Initial;
    let versioning = txn
        .state
        .versioning
        .as_deref()
        .filter(|v| v.versioning_override.is_none())?;
    match Initial::try_from(initial_behavior).unwrap_or(Initial::Unspecified) {
        Initial::AutoUpgrade => None,
        Initial::UseRampingVersion => Some(RunVersioning {
            use_ramping_first: true,
            ..RunVersioning::default()
        }),
        Initial::Unspecified => {
            let (deployment_name, build_id) = versioning.pinned()?;
            Some(RunVersioning {
                behavior: proto::enums::VersioningBehavior::Pinned as i32,
                deployment_name: deployment_name.to_string(),
                build_id: build_id.to_string(),
                ..RunVersioning::default()
            })
        }
    }
}

/// The start of a run that continues the run in `txn` with everything inherited.
fn inherited_args(txn: &Txn, run_id: &str) -> StartArgs {
    let state = &txn.state;
    StartArgs {
        namespace_id: state.namespace_id.clone(),
        workflow_id: state.workflow_id.clone(),
        run_id: run_id.to_string(),
        request_id: state.start_request_id.clone(),
        workflow_type: state.workflow_type.clone(),
        task_queue: state.task_queue.clone(),
        input: proto::decode_opt(&state.input),
        execution_timeout: proto::duration(state.execution_timeout_ms),
        run_timeout: proto::duration(state.run_timeout_ms),
        task_timeout: proto::duration(state.workflow_task_timeout_ms),
        retry_policy: state.retry.as_ref().map(activity::retry_policy_proto),
        memo: proto::decode_opt(&state.memo),
        search_attributes: proto::decode_opt(&state.search_attributes),
        header: proto::decode_opt(&state.header),
        continuation: Some(Continuation {
            previous_run_id: state.run_id.clone(),
            first_execution_run_id: state.first_execution_run_id.clone(),
            attempt: 1,
            failure: None,
            last_completion_result: None,
            execution_expiration_ns: state.execution_expiration_ns,
            initiator: enums::ContinueAsNewInitiator::Workflow as i32,
            finished_updates: state.finished_updates.clone(),
        }),
        parent: state.parent.clone(),
        cron_schedule: state.cron_schedule.clone(),
        priority: proto::decode_opt(&state.priority),
        // A versioning override stays with the workflow across its runs.
        versioning_override: state
            .versioning
            .as_ref()
            .and_then(|v| v.versioning_override.clone()),
        ..Default::default()
    }
}

/// For a cron workflow's closing run: starts the next run at the schedule's next time after
/// this run was due (none if that is past the execution timeout) and returns its id, or an
/// empty string when no run follows.
pub(crate) fn start_cron_successor(
    txn: &mut Txn,
    result: Option<proto::common::Payloads>,
    failure: Option<failure::Failure>,
) -> String {
    if txn.state.cron_schedule.is_empty() {
        return String::new();
    }
    let Ok(schedule) = CronSchedule::parse(&txn.state.cron_schedule) else {
        return String::new();
    };
    let Some(delay_ms) = schedule.backoff_ms(txn.state.execution_time_ns, txn.now) else {
        return String::new();
    };
    if let Some(expiration) = txn.state.execution_expiration_ns {
        if txn.now + delay_ms * 1_000_000 >= expiration {
            return String::new();
        }
    }
    let run_id = successor_run_id(&txn.state.run_id, txn.state.attempt, txn.now);
    let mut args = inherited_args(txn, &run_id);
    args.start_delay = proto::duration(delay_ms);
    if let Some(continuation) = args.continuation.as_mut() {
        continuation.failure = failure;
        continuation.last_completion_result = result;
        continuation.initiator = enums::ContinueAsNewInitiator::CronSchedule as i32;
    }
    // The schedule and retry policy were validated when the first run started.
    txn.successor = new_run(args, txn.now, txn.limits).ok();
    txn.state.successor_run_id = run_id.clone();
    run_id
}

/// ContinueAsNewWorkflowExecution: closes the run as continued-as-new and starts its
/// successor, which takes what the command sets and inherits the rest (type, task queue,
/// timeouts, retry policy, memo, search attributes); the execution timeout carries over.
// `failure` is deprecated on the command and the event, but SDKs set it and Temporal records it.
#[allow(deprecated)]
pub(crate) fn continue_as_new(
    txn: &mut Txn,
    a: command::ContinueAsNewWorkflowExecutionCommandAttributes,
    completed_id: i64,
) -> Result<(), EngineError> {
    let run_id = successor_run_id(&txn.state.run_id, txn.state.attempt, txn.now);
    let mut args = inherited_args(txn, &run_id);
    if let Some(name) = a
        .workflow_type
        .as_ref()
        .map(|t| &t.name)
        .filter(|n| !n.is_empty())
    {
        args.workflow_type = name.clone();
    }
    if let Some(name) = a
        .task_queue
        .as_ref()
        .map(|q| &q.name)
        .filter(|n| !n.is_empty())
    {
        args.task_queue = name.clone();
    }
    args.input = a.input.clone();
    args.header = a.header.clone();
    if a.workflow_run_timeout.is_some() {
        args.run_timeout = a.workflow_run_timeout;
    }
    if a.workflow_task_timeout.is_some() {
        args.task_timeout = a.workflow_task_timeout;
    }
    if a.retry_policy.is_some() {
        args.retry_policy = a.retry_policy.clone();
    }
    if !a.cron_schedule.is_empty() {
        args.cron_schedule = a.cron_schedule.clone();
    }
    if a.memo.is_some() {
        args.memo = a.memo.clone();
    }
    if a.search_attributes.is_some() {
        args.search_attributes = a.search_attributes.clone();
    }
    args.start_delay = a.backoff_start_interval;
    args.inherited_versioning = continued_versioning(txn, a.initial_versioning_behavior);
    if let Some(continuation) = args.continuation.as_mut() {
        continuation.failure = a.failure.clone();
        continuation.last_completion_result = a.last_completion_result.clone();
    }
    let successor = new_run(args.clone(), txn.now, txn.limits)?;
    txn.close(
        RunStatus::ContinuedAsNew,
        Attributes::WorkflowExecutionContinuedAsNewEventAttributes(
            history::WorkflowExecutionContinuedAsNewEventAttributes {
                new_execution_run_id: run_id.clone(),
                workflow_type: Some(proto::common::WorkflowType {
                    name: args.workflow_type,
                }),
                task_queue: Some(proto::task_queue(&args.task_queue)),
                input: args.input,
                workflow_run_timeout: proto::duration(successor.state.run_timeout_ms),
                workflow_task_timeout: proto::duration(successor.state.workflow_task_timeout_ms),
                workflow_task_completed_event_id: completed_id,
                backoff_start_interval: a.backoff_start_interval,
                initiator: enums::ContinueAsNewInitiator::Workflow as i32,
                failure: a.failure,
                last_completion_result: a.last_completion_result,
                header: args.header,
                memo: args.memo,
                search_attributes: args.search_attributes,
                ..Default::default()
            },
        ),
    );
    txn.successor = Some(successor);
    txn.state.successor_run_id = run_id;
    Ok(())
}

/// A run id for the successor of `run_id`'s `attempt`, shaped like Temporal's UUID v7 run ids
/// (time-ordered by `now_ns`): derived, not random, so the decision stays a pure function;
/// unique because run ids are.
fn successor_run_id(run_id: &str, attempt: i32, now_ns: i64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in run_id.bytes().chain(attempt.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let ms = (now_ns / 1_000_000) as u64 & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (hash >> 52) & 0xfff,
        0x8000 | ((hash >> 36) & 0x3fff),
        hash & 0xffff_ffff_ffff
    )
}
