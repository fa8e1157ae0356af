//! Everything time-driven about a run, derived from its state: the deadlines a shard leader
//! arms (user timers, activity and workflow task timeouts, retries, run timeout, start delay)
//! and the tasks it hands to matching. Nothing here is stored separately, so a new leader
//! rebuilds its timer and task queues from the runs' states alone.

use super::proto::{enums, history, Attributes};
use super::state::{MutableState, RunStatus};
use super::txn::Txn;
use super::{activity, EngineError, Reply};

/// A point in time at which a run may need a decision.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Deadline {
    /// A user timer fires.
    UserTimer {
        /// Timer id.
        timer_id: String,
        /// Its TimerStarted event id.
        started_event_id: i64,
    },
    /// An activity attempt times out.
    ActivityTimeout {
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
        /// `TimeoutType` value.
        timeout_type: i32,
    },
    /// A retried activity attempt becomes dispatchable (no decision needed).
    ActivityRetry {
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// A started workflow task times out.
    WorkflowTaskTimeout {
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// A workflow task waited its sticky schedule-to-start timeout: it goes to the normal queue.
    StickyTimeout {
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// The run (or the whole execution) times out.
    RunTimeout,
    /// A delayed start schedules its first workflow task.
    StartBackoff,
    /// A schedule's next action is due.
    ScheduleAction,
}

/// Kind of a dispatchable task.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum TaskKind {
    /// A workflow task.
    Workflow,
    /// An activity task.
    Activity,
}

/// A task that matching should hand to a poller.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TaskRef {
    /// Workflow or activity task.
    pub kind: TaskKind,
    /// Task queue name.
    pub task_queue: String,
    /// Scheduled event id.
    pub scheduled_event_id: i64,
    /// Attempt.
    pub attempt: i32,
}

const NS_PER_MS: i64 = 1_000_000;

/// The run's pending deadlines, as (when, what).
pub fn deadlines(state: &MutableState) -> Vec<(i64, Deadline)> {
    let mut out = Vec::new();
    if state.status != RunStatus::Running {
        return out;
    }
    if let Some(at) = state.run_expiration_ns {
        out.push((at, Deadline::RunTimeout));
    }
    if let Some(at) = state.first_task_backoff_until_ns {
        out.push((at, Deadline::StartBackoff));
    }
    if let Some((_, at)) = state
        .schedule
        .as_deref()
        .and_then(super::schedule::next_action)
    {
        out.push((at, Deadline::ScheduleAction));
    }
    for (timer_id, timer) in &state.timers {
        out.push((
            timer.fire_at_ns,
            Deadline::UserTimer {
                timer_id: timer_id.clone(),
                started_event_id: timer.started_event_id,
            },
        ));
    }
    if let Some(task) = &state.workflow_task {
        if task.started.is_none() && !state.sticky_queue.is_empty() {
            out.push((
                task.scheduled_time_ns + state.sticky_timeout_ms.max(1) * NS_PER_MS,
                Deadline::StickyTimeout {
                    scheduled_event_id: task.scheduled_event_id,
                    attempt: task.attempt,
                },
            ));
        }
        if let Some(started) = &task.started {
            out.push((
                started.time_ns + task.timeout_ms * NS_PER_MS,
                Deadline::WorkflowTaskTimeout {
                    scheduled_event_id: task.scheduled_event_id,
                    attempt: task.attempt,
                },
            ));
        }
    }
    // A paused activity has no deadlines (as in Temporal): unpausing rearms them.
    for activity in state
        .activities
        .values()
        .filter(|a| !super::activity_control::paused(state, a.scheduled_event_id))
    {
        // A retry, an attempt an unpause or reset delayed (jitter), or a standalone
        // activity's delayed start becomes dispatchable.
        if activity.started.is_none()
            && (activity.attempt > 1
                || activity.attempt_scheduled_time_ns > activity.scheduled_time_ns
                || (state.activity_execution.is_some()
                    && activity.attempt_scheduled_time_ns > state.start_time_ns))
        {
            out.push((
                activity.attempt_scheduled_time_ns,
                Deadline::ActivityRetry {
                    scheduled_event_id: activity.scheduled_event_id,
                    attempt: activity.attempt,
                },
            ));
        }
        for timeout_type in [
            enums::TimeoutType::ScheduleToClose,
            enums::TimeoutType::ScheduleToStart,
            enums::TimeoutType::StartToClose,
            enums::TimeoutType::Heartbeat,
        ] {
            if let Some(at) = activity::timeout_deadline(activity, timeout_type) {
                out.push((
                    at,
                    Deadline::ActivityTimeout {
                        scheduled_event_id: activity.scheduled_event_id,
                        attempt: activity.attempt,
                        timeout_type: timeout_type as i32,
                    },
                ));
            }
        }
    }
    out
}

/// The run's deadlines a shard leader arms at `now_ns`, after offering the run's dispatchable
/// tasks: all of [`deadlines`] but a retry's dispatch time that has passed (its task is among
/// those offered; arming it would fire it at once, to no effect, again and again).
pub fn deadlines_to_arm(state: &MutableState, now_ns: i64) -> Vec<(i64, Deadline)> {
    let mut out = deadlines(state);
    out.retain(|(at, deadline)| {
        *at > now_ns || !matches!(deadline, Deadline::ActivityRetry { .. })
    });
    out
}

/// Tasks of the run that a poller may take at `now_ns`.
pub fn dispatchable(state: &MutableState, now_ns: i64) -> Vec<TaskRef> {
    let mut out = Vec::new();
    if state.status != RunStatus::Running {
        return out;
    }
    if let Some(task) = &state.workflow_task {
        if task.started.is_none() {
            let queue = if state.sticky_queue.is_empty() {
                &state.task_queue
            } else {
                &state.sticky_queue
            };
            out.push(TaskRef {
                kind: TaskKind::Workflow,
                task_queue: queue.clone(),
                scheduled_event_id: task.scheduled_event_id,
                attempt: task.attempt,
            });
        }
    }
    for activity in state.activities.values() {
        if activity.started.is_none()
            && activity.cancel_requested_event_id.is_none()
            && activity.attempt_scheduled_time_ns <= now_ns
            && !super::activity_control::paused(state, activity.scheduled_event_id)
        {
            out.push(TaskRef {
                kind: TaskKind::Activity,
                task_queue: activity.task_queue.clone(),
                scheduled_event_id: activity.scheduled_event_id,
                attempt: activity.attempt,
            });
        }
    }
    out
}

/// Decides what a passed deadline changes (often nothing: the deadline went stale).
pub(crate) fn fire(txn: &mut Txn, deadline: Deadline) -> Result<Reply, EngineError> {
    if !txn.state.is_running() {
        return Err(EngineError::NoChange);
    }
    let now = txn.now;
    match deadline {
        Deadline::UserTimer {
            timer_id,
            started_event_id,
        } => {
            match txn.state.timers.get(&timer_id) {
                Some(t) if t.started_event_id == started_event_id && t.fire_at_ns <= now => {}
                _ => return Err(EngineError::NoChange),
            }
            txn.state.timers.remove(&timer_id);
            txn.add_worker_event(Attributes::TimerFiredEventAttributes(
                history::TimerFiredEventAttributes {
                    timer_id,
                    started_event_id,
                },
            ));
            Ok(Reply::Done)
        }
        Deadline::ActivityTimeout {
            scheduled_event_id,
            attempt,
            timeout_type,
        } => {
            let timeout_type =
                enums::TimeoutType::try_from(timeout_type).map_err(|_| EngineError::NoChange)?;
            activity::time_out(txn, scheduled_event_id, attempt, timeout_type)
        }
        Deadline::ActivityRetry { .. } => Err(EngineError::NoChange),
        Deadline::WorkflowTaskTimeout {
            scheduled_event_id,
            attempt,
        } => {
            let mut task = match &txn.state.workflow_task {
                Some(t) if t.scheduled_event_id == scheduled_event_id && t.attempt == attempt => {
                    t.clone()
                }
                _ => return Err(EngineError::NoChange),
            };
            match task.started.as_ref() {
                Some(started) if started.time_ns + task.timeout_ms * NS_PER_MS <= now => {}
                _ => return Err(EngineError::NoChange),
            }
            txn.clear_sticky();
            if task.speculative {
                super::workflow_task::materialize(txn, &mut task);
            }
            let Some(started) = task.started.as_ref() else {
                return Err(EngineError::NoChange);
            };
            txn.state.workflow_task = None;
            if !task.is_transient() {
                txn.append(Attributes::WorkflowTaskTimedOutEventAttributes(
                    history::WorkflowTaskTimedOutEventAttributes {
                        scheduled_event_id,
                        started_event_id: started.event_id,
                        timeout_type: enums::TimeoutType::StartToClose as i32,
                    },
                ));
            }
            txn.reschedule_workflow_task(attempt + 1);
            Ok(Reply::Done)
        }
        Deadline::StickyTimeout {
            scheduled_event_id,
            attempt,
        } => {
            match &txn.state.workflow_task {
                Some(t)
                    if t.scheduled_event_id == scheduled_event_id
                        && t.attempt == attempt
                        && t.started.is_none()
                        && !txn.state.sticky_queue.is_empty()
                        && t.scheduled_time_ns + txn.state.sticky_timeout_ms * NS_PER_MS <= now => {
                }
                _ => return Err(EngineError::NoChange),
            }
            txn.clear_sticky();
            Ok(Reply::Done)
        }
        Deadline::RunTimeout => {
            match txn.state.run_expiration_ns {
                Some(at) if at <= now => {}
                _ => return Err(EngineError::NoChange),
            }
            let retry_state = if txn.state.retry.is_some() {
                enums::RetryState::Timeout
            } else {
                enums::RetryState::RetryPolicyNotSet
            };
            let new_execution_run_id = super::successor::start_cron_successor(txn, None, None);
            txn.close(
                RunStatus::TimedOut,
                Attributes::WorkflowExecutionTimedOutEventAttributes(
                    history::WorkflowExecutionTimedOutEventAttributes {
                        retry_state: retry_state as i32,
                        new_execution_run_id,
                    },
                ),
            );
            Ok(Reply::Done)
        }
        Deadline::StartBackoff => {
            match txn.state.first_task_backoff_until_ns {
                Some(at) if at <= now => {}
                _ => return Err(EngineError::NoChange),
            }
            txn.state.first_task_backoff_until_ns = None;
            txn.schedule_workflow_task();
            Ok(Reply::Done)
        }
        Deadline::ScheduleAction => super::schedule::fire(txn),
    }
}
