//! Activities: start, heartbeat, completion, failure with retries, cancellation, timeouts.

use super::proto::{self, command, common, enums, failure, history, Attributes};
use super::state::{ActivityInfo, ActivityOptions, ActivityStarted, RetryPolicy};
use super::txn::Txn;
use super::{ActivityReport, ActivityTarget, EngineError, Reply};

/// Temporal's defaults filled into a retry policy, validated.
pub(crate) fn retry_policy(policy: Option<&common::RetryPolicy>) -> Result<RetryPolicy, String> {
    let policy = policy.cloned().unwrap_or_default();
    let initial = proto::duration_ms(policy.initial_interval.as_ref());
    let initial = if initial == 0 { 1000 } else { initial };
    if policy.backoff_coefficient != 0.0 && policy.backoff_coefficient < 1.0 {
        return Err("BackoffCoefficient cannot be less than 1.".into());
    }
    if policy.maximum_attempts < 0 {
        return Err("MaximumAttempts cannot be negative.".into());
    }
    let maximum = proto::duration_ms(policy.maximum_interval.as_ref());
    if maximum > 0 && maximum < initial {
        return Err("MaximumInterval cannot be less than InitialInterval.".into());
    }
    Ok(RetryPolicy {
        initial_interval_ms: initial,
        backoff_coefficient: if policy.backoff_coefficient == 0.0 {
            2.0
        } else {
            policy.backoff_coefficient
        },
        maximum_interval_ms: if maximum == 0 { initial * 100 } else { maximum },
        maximum_attempts: policy.maximum_attempts,
        non_retryable_error_types: policy.non_retryable_error_types,
    })
}

/// The protobuf form of a filled-in retry policy.
pub(crate) fn retry_policy_proto(policy: &RetryPolicy) -> common::RetryPolicy {
    common::RetryPolicy {
        initial_interval: proto::duration(policy.initial_interval_ms),
        backoff_coefficient: policy.backoff_coefficient,
        maximum_interval: proto::duration(policy.maximum_interval_ms),
        maximum_attempts: policy.maximum_attempts,
        non_retryable_error_types: policy.non_retryable_error_types.clone(),
    }
}

/// Fills in and bounds an activity's timeouts as Temporal does when it is scheduled (and when
/// UpdateActivityOptions changes them): schedule-to-start and start-to-close default to (and
/// are capped by) schedule-to-close, which defaults to the run timeout; everything is capped
/// by the run timeout (0 = none); the heartbeat timeout by start-to-close.
pub(crate) fn normalize_timeouts(
    options: &mut ActivityOptions,
    run_timeout_ms: i64,
) -> Result<(), &'static str> {
    let (mut s2c, mut s2s, mut st2c) = (
        options.schedule_to_close_ms,
        options.schedule_to_start_ms,
        options.start_to_close_ms,
    );
    if s2c > 0 {
        if s2s == 0 || s2s > s2c {
            s2s = s2c;
        }
        if st2c == 0 || st2c > s2c {
            st2c = s2c;
        }
    } else if st2c > 0 {
        s2c = run_timeout_ms;
        if s2s == 0 {
            s2s = s2c;
        }
    } else {
        return Err("A valid StartToClose or ScheduleToCloseTimeout is not set on command.");
    }
    if run_timeout_ms > 0 {
        let cap = |ms: i64| {
            if ms == 0 {
                run_timeout_ms
            } else {
                ms.min(run_timeout_ms)
            }
        };
        s2c = cap(s2c);
        s2s = cap(s2s);
        st2c = st2c.min(run_timeout_ms);
    }
    options.schedule_to_close_ms = s2c;
    options.schedule_to_start_ms = s2s;
    options.start_to_close_ms = st2c;
    options.heartbeat_ms = options.heartbeat_ms.min(st2c);
    Ok(())
}

/// The options a schedule request asks for, with Temporal's defaults filled in and the
/// timeouts normalized (`default_queue` when it names no task queue; `run_timeout_ms` caps the
/// timeouts, 0 = no cap), or why they are invalid.
pub(crate) fn requested_options(
    a: &command::ScheduleActivityTaskCommandAttributes,
    default_queue: &str,
    run_timeout_ms: i64,
) -> Result<ActivityOptions, String> {
    let task_queue = match a.task_queue.as_ref().map(|q| q.name.as_str()) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => default_queue.to_string(),
    };
    let mut options = ActivityOptions {
        task_queue,
        schedule_to_close_ms: proto::duration_ms(a.schedule_to_close_timeout.as_ref()),
        schedule_to_start_ms: proto::duration_ms(a.schedule_to_start_timeout.as_ref()),
        start_to_close_ms: proto::duration_ms(a.start_to_close_timeout.as_ref()),
        heartbeat_ms: proto::duration_ms(a.heartbeat_timeout.as_ref()),
        retry: retry_policy(a.retry_policy.as_ref())?,
        priority: proto::encode_opt(a.priority.as_ref()),
    };
    normalize_timeouts(&mut options, run_timeout_ms)?;
    Ok(options)
}

/// Schedules an activity with options already checked and normalized: writes its
/// ActivityTaskScheduled event (showing the normalized options) and makes it pending. Returns
/// its scheduled event id.
#[allow(deprecated)] // use_workflow_build_id is copied to the event as given.
pub(crate) fn schedule(
    txn: &mut Txn,
    mut a: command::ScheduleActivityTaskCommandAttributes,
    options: ActivityOptions,
    workflow_task_completed_event_id: i64,
) -> i64 {
    a.task_queue = Some(proto::task_queue(&options.task_queue));
    a.schedule_to_close_timeout = proto::timeout(options.schedule_to_close_ms);
    a.schedule_to_start_timeout = proto::timeout(options.schedule_to_start_ms);
    a.start_to_close_timeout = proto::timeout(options.start_to_close_ms);
    a.heartbeat_timeout = proto::timeout(options.heartbeat_ms);
    a.retry_policy = Some(retry_policy_proto(&options.retry));
    let scheduled_event_id = txn.append(Attributes::ActivityTaskScheduledEventAttributes(
        history::ActivityTaskScheduledEventAttributes {
            activity_id: a.activity_id.clone(),
            activity_type: a.activity_type.clone(),
            task_queue: a.task_queue.clone(),
            header: a.header.clone(),
            input: a.input.clone(),
            schedule_to_close_timeout: a.schedule_to_close_timeout,
            schedule_to_start_timeout: a.schedule_to_start_timeout,
            start_to_close_timeout: a.start_to_close_timeout,
            heartbeat_timeout: a.heartbeat_timeout,
            workflow_task_completed_event_id,
            retry_policy: a.retry_policy.clone(),
            use_workflow_build_id: a.use_workflow_build_id,
            priority: a.priority.clone(),
        },
    ));
    txn.state
        .activity_ids
        .insert(a.activity_id.clone(), scheduled_event_id);
    txn.state.activities.insert(
        scheduled_event_id,
        ActivityInfo {
            scheduled_event_id,
            activity_id: a.activity_id,
            activity_type: a.activity_type.map(|t| t.name).unwrap_or_default(),
            task_queue: options.task_queue,
            scheduled_time_ns: txn.now,
            attempt_scheduled_time_ns: txn.now,
            attempt: 1,
            schedule_to_close_ms: options.schedule_to_close_ms,
            schedule_to_start_ms: options.schedule_to_start_ms,
            start_to_close_ms: options.start_to_close_ms,
            heartbeat_ms: options.heartbeat_ms,
            retry: options.retry,
            input: proto::encode_opt(a.input.as_ref()),
            header: proto::encode_opt(a.header.as_ref()),
            priority: options.priority,
            started: None,
            last_heartbeat_ns: None,
            heartbeat_details: None,
            last_failure: None,
            cancel_requested_event_id: None,
        },
    );
    scheduled_event_id
}

/// The activity's current options.
pub fn options(activity: &ActivityInfo) -> ActivityOptions {
    ActivityOptions {
        task_queue: activity.task_queue.clone(),
        schedule_to_close_ms: activity.schedule_to_close_ms,
        schedule_to_start_ms: activity.schedule_to_start_ms,
        start_to_close_ms: activity.start_to_close_ms,
        heartbeat_ms: activity.heartbeat_ms,
        retry: activity.retry.clone(),
        priority: activity.priority.clone(),
    }
}

/// Gives the activity new options (they apply from its next attempt; timeouts of the running
/// one are rederived from them at once).
pub(crate) fn set_options(activity: &mut ActivityInfo, options: ActivityOptions) {
    activity.task_queue = options.task_queue;
    activity.schedule_to_close_ms = options.schedule_to_close_ms;
    activity.schedule_to_start_ms = options.schedule_to_start_ms;
    activity.start_to_close_ms = options.start_to_close_ms;
    activity.heartbeat_ms = options.heartbeat_ms;
    activity.retry = options.retry;
    activity.priority = options.priority;
}

/// The policy's own delay after failed attempt `attempt`: the initial interval grown by the
/// coefficient per attempt, capped by the maximum interval.
pub(crate) fn backoff_ms(policy: &RetryPolicy, attempt: i32) -> i64 {
    let grown = policy.initial_interval_ms as f64
        * policy.backoff_coefficient.powi(attempt.saturating_sub(1));
    grown.min(policy.maximum_interval_ms as f64) as i64
}

/// Delay before attempt `attempt + 1`, or why there is none. `deadline_ns` is the
/// schedule-to-close deadline (0 = none).
pub(crate) fn next_retry_delay(
    policy: &RetryPolicy,
    attempt: i32,
    failure: Option<&failure::Failure>,
    now: i64,
    deadline_ns: i64,
) -> Result<i64, enums::RetryState> {
    let app = failure.and_then(|f| match &f.failure_info {
        Some(failure::failure::FailureInfo::ApplicationFailureInfo(info)) => Some(info),
        _ => None,
    });
    if let Some(info) = app {
        if info.non_retryable || policy.non_retryable_error_types.contains(&info.r#type) {
            return Err(enums::RetryState::NonRetryableFailure);
        }
    }
    if policy.maximum_attempts > 0 && attempt >= policy.maximum_attempts {
        return Err(enums::RetryState::MaximumAttemptsReached);
    }
    let explicit = app.map_or(0, |info| proto::duration_ms(info.next_retry_delay.as_ref()));
    let delay = if explicit > 0 {
        explicit
    } else {
        backoff_ms(policy, attempt)
    };
    if deadline_ns > 0 && now + delay * 1_000_000 >= deadline_ns {
        return Err(enums::RetryState::Timeout);
    }
    Ok(delay)
}

/// Delay before the activity's next attempt after its current one failed with `failure` (or
/// timed out), or why there is none: as in Temporal, an activity asked to cancel is not
/// retried.
fn attempt_retry_delay(
    activity: &ActivityInfo,
    failure: Option<&failure::Failure>,
    now: i64,
) -> Result<i64, enums::RetryState> {
    if activity.cancel_requested_event_id.is_some() {
        return Err(enums::RetryState::CancelRequested);
    }
    next_retry_delay(
        &activity.retry,
        activity.attempt,
        failure,
        now,
        schedule_to_close_deadline(activity),
    )
}

fn schedule_to_close_deadline(activity: &ActivityInfo) -> i64 {
    if activity.schedule_to_close_ms > 0 {
        activity.scheduled_time_ns + activity.schedule_to_close_ms * 1_000_000
    } else {
        0
    }
}

/// A poller took the activity's task from `task_queue`: the task must still be the activity's
/// current attempt on that queue, and the activity not paused.
pub(crate) fn record_started(
    txn: &mut Txn,
    scheduled_event_id: i64,
    attempt: i32,
    task_queue: &str,
    (request_id, identity): (String, String),
) -> Result<Reply, EngineError> {
    if !txn.state.is_running() {
        return Err(EngineError::NotFound(
            "Activity task not found: the workflow execution already completed.".into(),
        ));
    }
    if super::activity_control::paused(&txn.state, scheduled_event_id) {
        return Err(EngineError::NotFound(
            "Activity task not found: the activity is paused.".into(),
        ));
    }
    let activity = txn
        .state
        .activities
        .get_mut(&scheduled_event_id)
        .filter(|a| a.attempt == attempt && a.task_queue == task_queue)
        .ok_or_else(|| EngineError::NotFound("Activity task not found.".into()))?;
    if let Some(started) = &activity.started {
        if started.request_id == request_id {
            return Ok(Reply::ActivityTaskStarted {
                scheduled_event_id,
                attempt,
            });
        }
        return Err(EngineError::FailedPrecondition(
            "Activity task already started.".into(),
        ));
    }
    if activity.cancel_requested_event_id.is_some() && activity.started.is_none() {
        return Err(EngineError::NotFound(
            "Activity task was canceled before it started.".into(),
        ));
    }
    activity.started = Some(ActivityStarted {
        time_ns: txn.now,
        identity,
        request_id,
    });
    activity.last_heartbeat_ns = None;
    Ok(Reply::ActivityTaskStarted {
        scheduled_event_id,
        attempt,
    })
}

/// The activity a report names, which must have a started attempt unless `force` (a
/// completion by id, which Temporal accepts for an activity no worker has taken).
fn find_started(txn: &Txn, target: &ActivityTarget, force: bool) -> Result<i64, EngineError> {
    if !txn.state.is_running() {
        return Err(EngineError::NotFound(
            "Activity task not found: the workflow execution already completed.".into(),
        ));
    }
    let not_found = || EngineError::NotFound("Activity task not found.".into());
    let activity = match target {
        ActivityTarget::Token {
            scheduled_event_id,
            attempt,
        } => txn
            .state
            .activities
            .get(scheduled_event_id)
            .filter(|a| a.attempt == *attempt)
            .ok_or_else(not_found)?,
        ActivityTarget::Id(id) => txn
            .state
            .activity_ids
            .get(id)
            .and_then(|scheduled| txn.state.activities.get(scheduled))
            .ok_or_else(not_found)?,
    };
    if activity.started.is_none() && !force {
        return Err(EngineError::NotFound(
            "Activity task not found: the attempt has not started.".into(),
        ));
    }
    Ok(activity.scheduled_event_id)
}

pub(crate) fn report(
    txn: &mut Txn,
    target: ActivityTarget,
    report: ActivityReport,
    identity: String,
) -> Result<Reply, EngineError> {
    let force = matches!(
        (&target, &report),
        (ActivityTarget::Id(_), ActivityReport::Completed(_))
    );
    let scheduled_event_id = find_started(txn, &target, force)?;
    let now = txn.now;
    // Completed by id before any worker took it: as Temporal does, an attempt is recorded as
    // started by the caller, then completed.
    if let Some(activity) = txn.state.activities.get_mut(&scheduled_event_id) {
        if activity.started.is_none() {
            activity.started = Some(ActivityStarted {
                time_ns: now,
                identity: identity.clone(),
                request_id: String::new(),
            });
        }
    }
    match report {
        ActivityReport::Heartbeat(details) => {
            let activity = txn
                .state
                .activities
                .get_mut(&scheduled_event_id)
                .ok_or(EngineError::NoChange)?;
            activity.last_heartbeat_ns = Some(now);
            if details.is_some() {
                activity.heartbeat_details = Some(proto::encode_opt(details.as_ref()));
            }
            let cancel_requested = activity.cancel_requested_event_id.is_some();
            let control = txn.state.activity_controls.get(&scheduled_event_id);
            Ok(Reply::Heartbeat {
                cancel_requested,
                paused: control.is_some_and(|c| c.pause.is_some()),
                reset: control.is_some_and(|c| c.reset),
            })
        }
        ActivityReport::Completed(result) => {
            let activity = remove(txn, scheduled_event_id)?;
            let started_event_id = write_started(txn, &activity, &identity);
            txn.add_worker_event(Attributes::ActivityTaskCompletedEventAttributes(
                history::ActivityTaskCompletedEventAttributes {
                    result,
                    scheduled_event_id,
                    started_event_id,
                    identity,
                    ..Default::default()
                },
            ));
            Ok(Reply::Done)
        }
        ActivityReport::Failed {
            failure,
            last_heartbeat_details,
        } => {
            let activity = txn
                .state
                .activities
                .get(&scheduled_event_id)
                .cloned()
                .ok_or(EngineError::NoChange)?;
            let retry = attempt_retry_delay(&activity, failure.as_ref(), now);
            match retry {
                Ok(delay) => {
                    let details = last_heartbeat_details.map(|d| proto::encode_opt(Some(&d)));
                    retry_attempt(txn, scheduled_event_id, delay, failure, details);
                }
                Err(retry_state) => {
                    let activity = remove(txn, scheduled_event_id)?;
                    let started_event_id = write_started(txn, &activity, &identity);
                    txn.add_worker_event(Attributes::ActivityTaskFailedEventAttributes(
                        history::ActivityTaskFailedEventAttributes {
                            failure,
                            scheduled_event_id,
                            started_event_id,
                            identity,
                            retry_state: retry_state as i32,
                            ..Default::default()
                        },
                    ));
                }
            }
            Ok(Reply::Done)
        }
        ActivityReport::Canceled(details) => {
            let requested = txn
                .state
                .activities
                .get(&scheduled_event_id)
                .is_some_and(|a| a.cancel_requested_event_id.is_some());
            if !requested {
                return Err(EngineError::InvalidArgument(
                    "unable to mark activity as canceled without activity being request \
                     canceled first"
                        .into(),
                ));
            }
            let activity = remove(txn, scheduled_event_id)?;
            let started_event_id = write_started(txn, &activity, &identity);
            txn.add_worker_event(Attributes::ActivityTaskCanceledEventAttributes(
                history::ActivityTaskCanceledEventAttributes {
                    details,
                    latest_cancel_requested_event_id: activity
                        .cancel_requested_event_id
                        .unwrap_or(0),
                    scheduled_event_id,
                    started_event_id,
                    identity,
                    ..Default::default()
                },
            ));
            Ok(Reply::Done)
        }
    }
}

fn remove(txn: &mut Txn, scheduled_event_id: i64) -> Result<ActivityInfo, EngineError> {
    let activity = txn
        .state
        .activities
        .remove(&scheduled_event_id)
        .ok_or(EngineError::NoChange)?;
    txn.state.activity_ids.remove(&activity.activity_id);
    txn.state.activity_controls.remove(&scheduled_event_id);
    txn.state.activity_attempt_ends.remove(&scheduled_event_id);
    Ok(activity)
}

/// Writes (or buffers) the ActivityTaskStarted event of the attempt that just ended; returns
/// its id (0 when buffered, which flushing fixes up, or when the attempt never started).
fn write_started(txn: &mut Txn, activity: &ActivityInfo, identity: &str) -> i64 {
    let Some(started) = &activity.started else {
        return 0;
    };
    let event = Attributes::ActivityTaskStartedEventAttributes(
        history::ActivityTaskStartedEventAttributes {
            scheduled_event_id: activity.scheduled_event_id,
            identity: if started.identity.is_empty() {
                identity.to_string()
            } else {
                started.identity.clone()
            },
            request_id: started.request_id.clone(),
            attempt: activity.attempt,
            last_failure: activity.last_failure.as_deref().and_then(proto::decode_opt),
            ..Default::default()
        },
    );
    // Written when the attempt ends, dated when it started (as Temporal dates it).
    if txn.state.workflow_task_started() {
        txn.add_worker_event_at(event, started.time_ns)
    } else {
        txn.append_at(event, started.time_ns)
    }
}

fn retry_attempt(
    txn: &mut Txn,
    scheduled_event_id: i64,
    delay_ms: i64,
    failure: Option<failure::Failure>,
    heartbeat_details: Option<Vec<u8>>,
) {
    let now = txn.now;
    // A reset of the attempt that just ended is done with; a reset that asked for it leaves
    // the next attempt without heartbeat details.
    let reset_heartbeat = super::activity_control::end_reset(&mut txn.state, scheduled_event_id);
    txn.state
        .activity_attempt_ends
        .insert(scheduled_event_id, now);
    if let Some(activity) = txn.state.activities.get_mut(&scheduled_event_id) {
        activity.attempt += 1;
        activity.attempt_scheduled_time_ns = now + delay_ms * 1_000_000;
        activity.started = None;
        activity.last_heartbeat_ns = None;
        activity.last_failure = Some(proto::encode_opt(failure.as_ref()));
        if reset_heartbeat {
            activity.heartbeat_details = None;
        } else if heartbeat_details.is_some() {
            activity.heartbeat_details = heartbeat_details;
        }
    }
}

/// RequestCancelActivityTask: an attempt not started is canceled at once (and the workflow
/// needs a new task to learn it); a started one is told through its heartbeat.
pub(crate) fn request_cancel(
    txn: &mut Txn,
    scheduled_event_id: i64,
    completed_id: i64,
) -> Result<bool, EngineError> {
    if !txn.state.activities.contains_key(&scheduled_event_id) {
        return Err(EngineError::InvalidArgument(format!(
            "Activity with scheduled event id {scheduled_event_id} is not pending."
        )));
    }
    let requested_id = txn.append(Attributes::ActivityTaskCancelRequestedEventAttributes(
        history::ActivityTaskCancelRequestedEventAttributes {
            scheduled_event_id,
            workflow_task_completed_event_id: completed_id,
        },
    ));
    let started = txn
        .state
        .activities
        .get(&scheduled_event_id)
        .is_some_and(|a| a.started.is_some());
    if started {
        if let Some(activity) = txn.state.activities.get_mut(&scheduled_event_id) {
            activity.cancel_requested_event_id = Some(requested_id);
        }
        return Ok(false);
    }
    remove(txn, scheduled_event_id)?;
    txn.append(Attributes::ActivityTaskCanceledEventAttributes(
        history::ActivityTaskCanceledEventAttributes {
            latest_cancel_requested_event_id: requested_id,
            scheduled_event_id,
            ..Default::default()
        },
    ));
    Ok(true)
}

/// The timeout a failure reports, if it is a timeout.
pub(crate) fn timeout_type_of(failure: &failure::Failure) -> Option<enums::TimeoutType> {
    match &failure.failure_info {
        Some(failure::failure::FailureInfo::TimeoutFailureInfo(info)) => {
            enums::TimeoutType::try_from(info.timeout_type).ok()
        }
        _ => None,
    }
}

fn timeout_name(timeout_type: enums::TimeoutType) -> &'static str {
    match timeout_type {
        enums::TimeoutType::StartToClose => "StartToClose",
        enums::TimeoutType::ScheduleToStart => "ScheduleToStart",
        enums::TimeoutType::ScheduleToClose => "ScheduleToClose",
        enums::TimeoutType::Heartbeat => "Heartbeat",
        enums::TimeoutType::Unspecified => "Unspecified",
    }
}

/// When the given timeout of the activity's current attempt expires, if it applies.
pub(crate) fn timeout_deadline(
    activity: &ActivityInfo,
    timeout_type: enums::TimeoutType,
) -> Option<i64> {
    let ms = |ms: i64| ms * 1_000_000;
    match (timeout_type, &activity.started) {
        (enums::TimeoutType::ScheduleToClose, _) if activity.schedule_to_close_ms > 0 => {
            Some(activity.scheduled_time_ns + ms(activity.schedule_to_close_ms))
        }
        (enums::TimeoutType::ScheduleToStart, None) if activity.schedule_to_start_ms > 0 => {
            Some(activity.attempt_scheduled_time_ns + ms(activity.schedule_to_start_ms))
        }
        (enums::TimeoutType::StartToClose, Some(started)) if activity.start_to_close_ms > 0 => {
            Some(started.time_ns + ms(activity.start_to_close_ms))
        }
        (enums::TimeoutType::Heartbeat, Some(started)) if activity.heartbeat_ms > 0 => {
            Some(activity.last_heartbeat_ns.unwrap_or(started.time_ns) + ms(activity.heartbeat_ms))
        }
        _ => None,
    }
}

/// A timeout of the activity's current attempt expired: retry it, or time the activity out.
pub(crate) fn time_out(
    txn: &mut Txn,
    scheduled_event_id: i64,
    attempt: i32,
    timeout_type: enums::TimeoutType,
) -> Result<Reply, EngineError> {
    let activity = txn
        .state
        .activities
        .get(&scheduled_event_id)
        .filter(|a| a.attempt == attempt && txn.state.is_running())
        .cloned()
        .ok_or(EngineError::NoChange)?;
    // A paused activity's timeouts do not run (as in Temporal); unpausing rearms them.
    if super::activity_control::paused(&txn.state, scheduled_event_id) {
        return Err(EngineError::NoChange);
    }
    match timeout_deadline(&activity, timeout_type) {
        Some(deadline) if deadline <= txn.now => {}
        _ => return Err(EngineError::NoChange),
    }
    let heartbeat_details = activity
        .heartbeat_details
        .as_deref()
        .and_then(proto::decode_opt::<common::Payloads>);
    let timeout_failure = |timeout_type: enums::TimeoutType| failure::Failure {
        message: format!("activity {} timeout", timeout_name(timeout_type)),
        failure_info: Some(failure::failure::FailureInfo::TimeoutFailureInfo(
            failure::TimeoutFailureInfo {
                timeout_type: timeout_type as i32,
                last_heartbeat_details: heartbeat_details.clone(),
            },
        )),
        ..Default::default()
    };
    let retryable = matches!(
        timeout_type,
        enums::TimeoutType::StartToClose | enums::TimeoutType::Heartbeat
    );
    let retry = if retryable {
        attempt_retry_delay(&activity, None, txn.now)
    } else {
        Err(enums::RetryState::Timeout)
    };
    match retry {
        Ok(delay) => {
            let failure = timeout_failure(timeout_type);
            retry_attempt(txn, scheduled_event_id, delay, Some(failure), None)
        }
        Err(retry_state) => {
            let activity = remove(txn, scheduled_event_id)?;
            let started_event_id = write_started(txn, &activity, "");
            let kept = matches!(
                retry_state,
                enums::RetryState::MaximumAttemptsReached | enums::RetryState::CancelRequested
            );
            let retry_state = if kept || !retryable {
                retry_state
            } else {
                enums::RetryState::Timeout
            };
            // An attempt that timed out with no time left for another: as Temporal reports
            // it, the activity ran out of its schedule-to-close time.
            let reported = if retryable && retry_state == enums::RetryState::Timeout {
                enums::TimeoutType::ScheduleToClose
            } else {
                timeout_type
            };
            txn.add_worker_event(Attributes::ActivityTaskTimedOutEventAttributes(
                history::ActivityTaskTimedOutEventAttributes {
                    failure: Some(timeout_failure(reported)),
                    scheduled_event_id,
                    started_event_id,
                    retry_state: retry_state as i32,
                },
            ));
        }
    }
    Ok(Reply::Done)
}
