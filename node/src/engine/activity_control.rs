//! Operator controls of a run's pending activities: PauseActivity, UnpauseActivity,
//! ResetActivity and UpdateActivityOptions. As in Temporal they write no history events. What
//! they leave is kept in `MutableState::activity_controls` and read where attempts are
//! dispatched and their timeouts armed (`deadlines`), started, timed out and retried
//! (`activity`). Randomness (jitter) is drawn by the caller: the engine gets a fixed delay.

use super::proto::{self, common};
use super::state::{ActivityControl, ActivityInfo, ActivityOptions, ActivityPause, MutableState};
use super::txn::Txn;
use super::{activity, EngineError, Reply};

/// Which pending activities a control applies to.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ActivitySelector {
    /// The activity with this id.
    Id(String),
    /// Every pending activity of this type.
    Type(String),
    /// Every pending activity.
    All,
}

/// What to do to the selected activities.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ControlAction {
    /// PauseActivity.
    Pause {
        /// Who pauses.
        identity: String,
        /// Why.
        reason: String,
        /// Request id (a retried pause succeeds again).
        request_id: String,
    },
    /// UnpauseActivity.
    Unpause {
        /// Start again from attempt 1.
        reset_attempts: bool,
        /// Drop the heartbeat details.
        reset_heartbeat: bool,
        /// An activity waiting for its next attempt gets it this long from now.
        delay_ms: i64,
    },
    /// ResetActivity.
    Reset {
        /// The next attempt starts without heartbeat details.
        reset_heartbeat: bool,
        /// A paused activity stays paused.
        keep_paused: bool,
        /// The options go back to those it was scheduled with.
        restore_original: bool,
        /// An activity waiting for its next attempt gets it this long from now.
        delay_ms: i64,
    },
    /// UpdateActivityOptions: the fields `paths` (a field mask, snake or camel case) name are
    /// taken from `options`.
    UpdateOptions {
        /// New values.
        #[serde(with = "crate::wire::message")]
        options: Box<proto::activity::ActivityOptions>,
        /// Field mask paths.
        paths: Vec<String>,
    },
    /// UpdateActivityOptions with `restore_original`.
    RestoreOptions,
}

/// A control request for one run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ActivityControlRequest {
    /// Which activities.
    pub selector: ActivitySelector,
    /// What to do.
    pub action: ControlAction,
}

fn activity_not_found() -> EngineError {
    EngineError::NotFound(
        "Can't find pending activity with such ID. Invalid activityID or activity already \
         completed"
            .into(),
    )
}

/// A delay drawn uniformly from `[0, jitter_ms)` by `random` (0 without jitter): callers bring
/// the randomness, the engine gets the delay.
pub fn jitter_delay_ms(jitter_ms: i64, random: u128) -> i64 {
    if jitter_ms <= 0 {
        return 0;
    }
    (random % jitter_ms as u128) as i64
}

/// The selector of a batch activity operation's `activity` oneof (a type, or all).
pub fn batch_selector(activity_type: Option<&str>, match_all: bool) -> Option<ActivitySelector> {
    match (activity_type, match_all) {
        (Some(name), _) if !name.is_empty() => Some(ActivitySelector::Type(name.to_string())),
        (_, true) => Some(ActivitySelector::All),
        _ => None,
    }
}

/// True while the activity is paused.
pub(crate) fn paused(state: &MutableState, scheduled_event_id: i64) -> bool {
    state
        .activity_controls
        .get(&scheduled_event_id)
        .is_some_and(|c| c.pause.is_some())
}

/// The attempt that ran when the activity was reset has ended: clears the reset and says
/// whether the next attempt must start without heartbeat details.
pub(crate) fn end_reset(state: &mut MutableState, scheduled_event_id: i64) -> bool {
    let Some(control) = state.activity_controls.get_mut(&scheduled_event_id) else {
        return false;
    };
    let reset_heartbeat = control.reset_heartbeat;
    control.reset = false;
    control.reset_heartbeat = false;
    if control.is_empty() {
        state.activity_controls.remove(&scheduled_event_id);
    }
    reset_heartbeat
}

/// Applies a control request to the run in `txn`.
pub(crate) fn handle(txn: &mut Txn, request: ActivityControlRequest) -> Result<Reply, EngineError> {
    if !txn.state.is_running() {
        return Err(EngineError::Closed);
    }
    let targets = select(&txn.state, &request.selector)?;
    match request.action {
        ControlAction::Pause {
            identity,
            reason,
            request_id,
        } => {
            for id in targets {
                pause(txn, id, &identity, &reason, &request_id)?;
            }
            Ok(Reply::Done)
        }
        ControlAction::Unpause {
            reset_attempts,
            reset_heartbeat,
            delay_ms,
        } => {
            for id in targets {
                if paused(&txn.state, id) {
                    unpause(txn, id, reset_attempts, reset_heartbeat, delay_ms);
                }
            }
            Ok(Reply::Done)
        }
        ControlAction::Reset {
            reset_heartbeat,
            keep_paused,
            restore_original,
            delay_ms,
        } => {
            for id in targets {
                if restore_original {
                    restore_options(txn, id);
                }
                reset(txn, id, reset_heartbeat, keep_paused, delay_ms);
            }
            Ok(Reply::Done)
        }
        ControlAction::UpdateOptions { options, paths } => {
            let mut last = None;
            for id in targets {
                let current_options = txn
                    .state
                    .activities
                    .get(&id)
                    .map(activity::options)
                    .ok_or_else(activity_not_found)?;
                let updated = merge_options(
                    &current_options,
                    &options,
                    &paths,
                    &txn.state.task_queue,
                    txn.state.run_timeout_ms,
                )?;
                control_mut(txn, id).original.get_or_insert(current_options);
                apply_options(txn, id, &updated);
                last = Some(updated);
            }
            last.map(|o| Reply::ActivityOptions(Box::new(o)))
                .ok_or_else(activity_not_found)
        }
        ControlAction::RestoreOptions => {
            let mut last = None;
            for id in targets {
                last = restore_options(txn, id).or(last);
            }
            last.map(|o| Reply::ActivityOptions(Box::new(o)))
                .ok_or_else(activity_not_found)
        }
    }
}

/// Scheduled event ids of the selected activities; NotFound when there are none.
fn select(state: &MutableState, selector: &ActivitySelector) -> Result<Vec<i64>, EngineError> {
    let ids: Vec<i64> = match selector {
        ActivitySelector::Id(id) => state.activity_ids.get(id).copied().into_iter().collect(),
        ActivitySelector::Type(name) => state
            .activities
            .values()
            .filter(|a| &a.activity_type == name)
            .map(|a| a.scheduled_event_id)
            .collect(),
        ActivitySelector::All => state.activities.keys().copied().collect(),
    };
    if ids.is_empty() {
        return Err(activity_not_found());
    }
    Ok(ids)
}

fn control_mut<'t>(txn: &'t mut Txn<'_>, id: i64) -> &'t mut ActivityControl {
    txn.state.activity_controls.entry(id).or_default()
}

fn drop_if_empty(txn: &mut Txn, id: i64) {
    if txn
        .state
        .activity_controls
        .get(&id)
        .is_some_and(ActivityControl::is_empty)
    {
        txn.state.activity_controls.remove(&id);
    }
}

fn pause(
    txn: &mut Txn,
    id: i64,
    identity: &str,
    reason: &str,
    request_id: &str,
) -> Result<(), EngineError> {
    if let Some(pause) = txn
        .state
        .activity_controls
        .get(&id)
        .and_then(|c| c.pause.as_ref())
    {
        if pause.request_id == request_id {
            return Ok(());
        }
        return Err(EngineError::FailedPrecondition(
            "activity is already paused".into(),
        ));
    }
    let time_ns = txn.now;
    control_mut(txn, id).pause = Some(ActivityPause {
        time_ns,
        identity: identity.to_string(),
        reason: reason.to_string(),
        request_id: request_id.to_string(),
    });
    Ok(())
}

/// Makes a paused activity dispatchable again: an activity waiting for its next attempt gets
/// it after `delay_ms` (its timeouts rearm with it); a running attempt goes on.
fn unpause(txn: &mut Txn, id: i64, reset_attempts: bool, reset_heartbeat: bool, delay_ms: i64) {
    if let Some(control) = txn.state.activity_controls.get_mut(&id) {
        control.pause = None;
    }
    drop_if_empty(txn, id);
    let now = txn.now;
    if let Some(activity) = txn.state.activities.get_mut(&id) {
        if reset_attempts {
            activity.attempt = 1;
        }
        if reset_heartbeat {
            clear_heartbeat(activity);
        }
        if activity.started.is_none() {
            schedule_after(activity, now, delay_ms);
        }
    }
}

fn clear_heartbeat(activity: &mut ActivityInfo) {
    activity.heartbeat_details = None;
    activity.last_heartbeat_ns = None;
}

/// The waiting attempt becomes dispatchable `delay_ms` from `now`.
fn schedule_after(activity: &mut ActivityInfo, now: i64, delay_ms: i64) {
    activity.attempt_scheduled_time_ns = now + delay_ms.max(0) * 1_000_000;
}

/// ResetActivity: attempts start again from 1. A running attempt goes on (its heartbeats tell
/// the worker it was reset); an activity waiting for its next attempt gets it after `delay_ms`,
/// unless it stays paused.
fn reset(txn: &mut Txn, id: i64, reset_heartbeat: bool, keep_paused: bool, delay_ms: i64) {
    let was_paused = paused(&txn.state, id);
    if was_paused && !keep_paused {
        if let Some(control) = txn.state.activity_controls.get_mut(&id) {
            control.pause = None;
        }
    }
    let running = txn
        .state
        .activities
        .get(&id)
        .is_some_and(|a| a.started.is_some());
    if running {
        let control = control_mut(txn, id);
        control.reset = true;
        control.reset_heartbeat |= reset_heartbeat;
    }
    drop_if_empty(txn, id);
    let still_paused = paused(&txn.state, id);
    let now = txn.now;
    if let Some(activity) = txn.state.activities.get_mut(&id) {
        activity.attempt = 1;
        if !running {
            if reset_heartbeat {
                clear_heartbeat(activity);
            }
            if !still_paused {
                schedule_after(activity, now, delay_ms);
            }
        }
    }
}

/// Gives the activity new options. An activity waiting for a retry is rescheduled by the new
/// retry policy: from when its last attempt ended, as the old policy placed the retry.
fn apply_options(txn: &mut Txn, id: i64, updated: &ActivityOptions) {
    let Some(activity) = txn.state.activities.get_mut(&id) else {
        return;
    };
    if activity.started.is_none() && activity.attempt > 1 {
        let previous = activity.attempt - 1;
        let old_delay_ms = activity::backoff_ms(&activity.retry, previous);
        let new_delay_ms = activity::backoff_ms(&updated.retry, previous);
        activity.attempt_scheduled_time_ns += (new_delay_ms - old_delay_ms) * 1_000_000;
    }
    activity::set_options(activity, updated.clone());
}

/// Restores the options the activity was scheduled with (no change if they never changed);
/// returns them (None: no such activity).
fn restore_options(txn: &mut Txn, id: i64) -> Option<ActivityOptions> {
    let original = txn
        .state
        .activity_controls
        .get_mut(&id)
        .and_then(|c| c.original.take());
    let Some(original) = original else {
        return txn.state.activities.get(&id).map(activity::options);
    };
    drop_if_empty(txn, id);
    apply_options(txn, id, &original);
    Some(original)
}

/// Field mask paths as Temporal reads them: each dot-separated part in lower camel case.
fn camel_path(path: &str) -> String {
    path.split('.')
        .map(|part| {
            let mut out = String::with_capacity(part.len());
            for (i, word) in part.split('_').enumerate() {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    if i == 0 {
                        out.extend(first.to_lowercase());
                        out.push_str(chars.as_str());
                    } else {
                        out.extend(first.to_uppercase());
                        out.push_str(&chars.as_str().to_lowercase());
                    }
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// `current` with the fields `paths` names taken from `from`, validated and normalized as a
/// ScheduleActivityTask command's are.
fn merge_options(
    current: &ActivityOptions,
    from: &proto::activity::ActivityOptions,
    paths: &[String],
    workflow_task_queue: &str,
    run_timeout_ms: i64,
) -> Result<ActivityOptions, EngineError> {
    let invalid = |m: &str| EngineError::InvalidArgument(m.to_string());
    let mut merged = current.clone();
    let mut retry = activity::retry_policy_proto(&current.retry);
    let mut priority: common::Priority = proto::decode_opt(&current.priority).unwrap_or_default();
    let mut retry_changed = false;
    let mut priority_changed = false;
    let ms = |d: &Option<prost_wkt_types::Duration>| proto::duration_ms(d.as_ref());
    let from_retry = || {
        from.retry_policy
            .as_ref()
            .ok_or_else(|| invalid("RetryPolicy is not provided"))
    };
    let from_priority = || {
        from.priority
            .as_ref()
            .ok_or_else(|| invalid("Priority is not provided"))
    };
    for path in paths {
        match camel_path(path).as_str() {
            // The temporal CLI sends `task_queue_name`.
            "taskQueue" | "taskQueue.name" | "taskQueueName" => {
                let queue = from
                    .task_queue
                    .as_ref()
                    .ok_or_else(|| invalid("TaskQueue is not provided"))?;
                merged.task_queue = if queue.name.is_empty() {
                    workflow_task_queue.to_string()
                } else {
                    queue.name.clone()
                };
            }
            "scheduleToCloseTimeout" => {
                merged.schedule_to_close_ms = ms(&from.schedule_to_close_timeout)
            }
            "scheduleToStartTimeout" => {
                merged.schedule_to_start_ms = ms(&from.schedule_to_start_timeout)
            }
            "startToCloseTimeout" => merged.start_to_close_ms = ms(&from.start_to_close_timeout),
            "heartbeatTimeout" => merged.heartbeat_ms = ms(&from.heartbeat_timeout),
            "priority" => {
                priority = from.priority.clone().unwrap_or_default();
                priority_changed = true;
            }
            "priority.priorityKey" => {
                priority.priority_key = from_priority()?.priority_key;
                priority_changed = true;
            }
            "priority.fairnessKey" => {
                priority.fairness_key = from_priority()?.fairness_key.clone();
                priority_changed = true;
            }
            "priority.fairnessWeight" => {
                priority.fairness_weight = from_priority()?.fairness_weight;
                priority_changed = true;
            }
            "retryPolicy" => {
                let new = from_retry()?;
                retry = common::RetryPolicy {
                    non_retryable_error_types: retry.non_retryable_error_types.clone(),
                    ..new.clone()
                };
                retry_changed = true;
            }
            "retryPolicy.initialInterval" => {
                retry.initial_interval = from_retry()?.initial_interval;
                retry_changed = true;
            }
            "retryPolicy.backoffCoefficient" => {
                retry.backoff_coefficient = from_retry()?.backoff_coefficient;
                retry_changed = true;
            }
            "retryPolicy.maximumInterval" => {
                retry.maximum_interval = from_retry()?.maximum_interval;
                retry_changed = true;
            }
            "retryPolicy.maximumAttempts" => {
                retry.maximum_attempts = from_retry()?.maximum_attempts;
                retry_changed = true;
            }
            // A start delay only concerns standalone activities.
            "startDelay" => {}
            other => {
                return Err(EngineError::InvalidArgument(format!(
                    "UpdateMask path \"{path}\" ({other}) is not an activity option: use \
                     task_queue.name, schedule_to_close_timeout, schedule_to_start_timeout, \
                     start_to_close_timeout, heartbeat_timeout, priority or retry_policy \
                     (or one of their fields)."
                )))
            }
        }
    }
    if retry_changed {
        merged.retry =
            activity::retry_policy(Some(&retry)).map_err(EngineError::InvalidArgument)?;
    }
    if priority_changed {
        merged.priority = proto::encode_opt(Some(&priority));
    }
    activity::normalize_timeouts(&mut merged, run_timeout_ms).map_err(invalid)?;
    Ok(merged)
}
