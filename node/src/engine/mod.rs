//! The history engine: a pure function from (mutable state, request, now) to new history events,
//! the new mutable state and a reply. No I/O, no clock, no randomness: the caller passes the time
//! and any fresh ids. Validation failures return an [`EngineError`] and change nothing.

mod activity;
pub mod activity_control;
pub mod activity_execution;
pub mod batch;
mod children;
pub mod cron;
mod deadlines;
pub mod go_duration;
pub mod proto;
mod reset;
pub mod schedule;
pub mod schedule_spec;
mod start;
pub mod state;
mod successor;
mod txn;
mod update;
pub mod workflow_options;
mod workflow_task;

pub use activity::options as activity_options;
pub(crate) use activity::{retry_policy, retry_policy_proto};
pub use activity_control::ActivityControlRequest;
pub use children::{delivery_request_id, inherited_versioning, transfers, Report, Transfer};
#[cfg(test)]
pub(crate) use deadlines::deadlines;
pub use deadlines::{deadlines_to_arm, dispatchable, Deadline, TaskKind, TaskRef};
pub use reset::{reset, ResetArgs};
pub use start::{decide_start, new_run, StartArgs, StartDecision};
pub use state::{MutableState, RunStatus};
pub use update::{completed_by_workflow, status as update_status, UpdateStatus};
pub use workflow_task::{is_versioned, CompleteWorkflowTask, StartedWorkflowTask};

use proto::{common, failure, HistoryEvent};
use txn::Txn;

/// Limits and defaults the engine enforces (Temporal's dynamic config).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Workflow task timeout when the start request names none.
    pub default_workflow_task_timeout_ms: i64,
    /// Largest workflow task timeout.
    pub max_workflow_task_timeout_ms: i64,
    /// Continue-as-new is suggested from this many history events.
    pub suggest_continue_as_new_events: i64,
    /// Continue-as-new is suggested from this many bytes of history.
    pub suggest_continue_as_new_bytes: i64,
    /// Signals accepted per run.
    pub max_signals_per_execution: u32,
    /// Pending activities per run.
    pub max_pending_activities: usize,
    /// Largest payload blob.
    pub max_blob_bytes: usize,
    /// Updates admitted and not yet completed, per run.
    pub max_in_flight_updates: usize,
    /// Updates one run accepts in all.
    pub max_total_updates: u32,
    /// Shortest namespace retention RegisterNamespace and UpdateNamespace accept.
    pub min_namespace_retention_ms: i64,
    /// A worker deployment version that stopped being current or ramping is DRAINING at least
    /// this long, and DRAINED after it once no open workflow is pinned to it.
    pub drainage_grace_ms: i64,
    /// A poller counts as present this long after its last poll (task queue descriptions and
    /// deleting a worker deployment version).
    pub poller_history_ttl_ms: i64,
}

impl Limits {
    /// Dynamic-config keys [`Limits::set`] understands.
    pub const KEYS: [&'static str; 11] = [
        "limit.historyCount.suggestContinueAsNew",
        "limit.historySize.suggestContinueAsNew",
        "limit.blobSize.error",
        "history.maximumSignalsPerExecution",
        "limit.numPendingActivities.error",
        "history.defaultWorkflowTaskTimeout (seconds)",
        "history.maxInFlightUpdates",
        "history.maxTotalUpdates",
        "system.namespaceMinRetentionLocal (a duration: 1h, 90s)",
        "matching.wv.VersionDrainageStatusVisibilityGracePeriod (a duration)",
        "matching.PollerHistoryTTL (a duration)",
    ];

    /// Sets one value by its Temporal dynamic-config name (`KEY=VALUE`), as `temporal server
    /// start-dev --dynamic-config-value` takes them. Unknown keys and bad values are errors.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?} is not KEY=VALUE"))?;
        let number = |value: &str| -> Result<i64, String> {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key} needs a positive whole number, not {value:?}"))
        };
        // As Temporal's CLI takes durations: a JSON string ("1h"), or bare.
        let ms = |value: &str| -> Result<i64, String> {
            go_duration::parse_ns(value.trim().trim_matches('"'))
                .map(|ns| ns / 1_000_000)
                .map_err(|e| format!("{key} needs a duration such as 1h or 90s: {e}"))
        };
        match key.trim() {
            "limit.historyCount.suggestContinueAsNew" => {
                self.suggest_continue_as_new_events = number(value)?
            }
            "limit.historySize.suggestContinueAsNew" => {
                self.suggest_continue_as_new_bytes = number(value)?
            }
            "limit.blobSize.error" => self.max_blob_bytes = number(value)? as usize,
            "history.maximumSignalsPerExecution" => {
                self.max_signals_per_execution = u32::try_from(number(value)?).unwrap_or(u32::MAX)
            }
            "limit.numPendingActivities.error" => {
                self.max_pending_activities = number(value)? as usize
            }
            "history.defaultWorkflowTaskTimeout" => {
                self.default_workflow_task_timeout_ms = number(value)?.saturating_mul(1000)
            }
            "history.maxInFlightUpdates" => self.max_in_flight_updates = number(value)? as usize,
            "history.maxTotalUpdates" => {
                self.max_total_updates = u32::try_from(number(value)?).unwrap_or(u32::MAX)
            }
            "system.namespaceMinRetentionLocal" => self.min_namespace_retention_ms = ms(value)?,
            "matching.wv.VersionDrainageStatusVisibilityGracePeriod" => {
                self.drainage_grace_ms = ms(value)?
            }
            "matching.PollerHistoryTTL" => self.poller_history_ttl_ms = ms(value)?,
            other => {
                return Err(format!(
                    "unknown dynamic config key {other:?}; Keel knows {}",
                    Self::KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

/// One value of a Temporal dynamic-config file entry.
#[derive(serde::Deserialize)]
struct ConfigValue {
    value: serde_yaml::Value,
    #[serde(default)]
    constraints: serde_yaml::Mapping,
}

/// Reads a Temporal dynamic-config YAML file (`KEY:` followed by a list of `value:` /
/// `constraints:` entries) into `KEY=VALUE` assignments for [`Limits::set`]. Keel's limits are
/// cluster-wide, so each key takes its unconstrained value; a key with only constrained values
/// is an error rather than silently ignored.
pub fn dynamic_config_file(text: &str) -> Result<Vec<String>, String> {
    let entries: std::collections::BTreeMap<String, Vec<ConfigValue>> =
        serde_yaml::from_str(text).map_err(|e| format!("not a dynamic-config file: {e}"))?;
    entries
        .into_iter()
        .map(|(key, values)| {
            let value = values
                .iter()
                .find(|v| v.constraints.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{key} has no value without constraints; Keel's limits are cluster-wide"
                    )
                })?;
            let text = match &value.value {
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::String(s) => s.clone(),
                other => return Err(format!("{key} needs a number, not {other:?}")),
            };
            Ok(format!("{key}={text}"))
        })
        .collect()
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_workflow_task_timeout_ms: 10_000,
            max_workflow_task_timeout_ms: 120_000,
            suggest_continue_as_new_events: 4096,
            suggest_continue_as_new_bytes: 4 << 20,
            max_signals_per_execution: 10_000,
            max_pending_activities: 2000,
            max_blob_bytes: 2 << 20,
            max_in_flight_updates: 10,
            max_total_updates: 2000,
            // Temporal's system.namespaceMinRetentionLocal.
            min_namespace_retention_ms: 3_600_000,
            // Temporal's matching.wv.VersionDrainageStatusVisibilityGracePeriod.
            drainage_grace_ms: 180_000,
            // Temporal's matching.PollerHistoryTTL.
            poller_history_ttl_ms: 300_000,
        }
    }
}

/// Why the engine refused a request. Nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EngineError {
    /// The task, activity or run the request names does not exist (or no longer).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but not in this state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A per-run limit is reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The run is closed.
    #[error("workflow execution already completed")]
    Closed,
    /// The request needs a feature Keel does not have yet.
    #[error("{0}")]
    Unsupported(String),
    /// Nothing to do (a stale timer); not an error for clients.
    #[error("nothing to change")]
    NoChange,
}

/// Checks a priority as Temporal's frontend does: no negative key or fairness weight.
pub fn check_priority(priority: &common::Priority) -> Result<(), EngineError> {
    if priority.priority_key < 0 {
        return Err(EngineError::InvalidArgument(
            "PriorityKey can't be negative".into(),
        ));
    }
    if priority.fairness_weight < 0.0 {
        return Err(EngineError::InvalidArgument(
            "FairnessWeight can't be negative".into(),
        ));
    }
    Ok(())
}

/// A request the engine decides on, for one existing run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Request {
    /// A poller took the workflow task scheduled at `scheduled_event_id`.
    RecordWorkflowTaskStarted {
        /// Scheduled event id from the dispatched task.
        scheduled_event_id: i64,
        /// Attempt from the dispatched task.
        attempt: i32,
        /// Poll request id.
        request_id: String,
        /// Poller identity.
        identity: String,
        /// The run is pinned to a worker deployment version and its deployment now routes
        /// elsewhere (the shard sets this; Temporal tells the workflow in the started event).
        target_version_changed: bool,
    },
    /// RespondWorkflowTaskCompleted.
    CompleteWorkflowTask(Box<CompleteWorkflowTask>),
    /// RespondWorkflowTaskFailed.
    FailWorkflowTask {
        /// From the task token.
        scheduled_event_id: i64,
        /// From the task token.
        attempt: i32,
        /// Failure cause.
        cause: i32,
        /// Failure details.
        #[serde(with = "crate::wire::opt")]
        failure: Option<failure::Failure>,
        /// Worker identity.
        identity: String,
    },
    /// A poller took the activity task.
    RecordActivityTaskStarted {
        /// Scheduled event id of the activity.
        scheduled_event_id: i64,
        /// Attempt from the dispatched task.
        attempt: i32,
        /// The queue the task was taken from (UpdateActivityOptions may have moved it).
        task_queue: String,
        /// Poll request id.
        request_id: String,
        /// Poller identity.
        identity: String,
    },
    /// An activity worker reports on its task.
    Activity {
        /// Which activity.
        target: ActivityTarget,
        /// What happened.
        report: ActivityReport,
        /// Worker identity.
        identity: String,
    },
    /// SignalWorkflowExecution.
    Signal(Signal),
    /// RequestCancelWorkflowExecution.
    Cancel {
        /// Reason.
        reason: String,
        /// Caller identity.
        identity: String,
        /// The workflow that asked, when another workflow asked.
        external: Option<ExternalSource>,
    },
    /// TerminateWorkflowExecution.
    Terminate {
        /// Reason.
        reason: String,
        /// Details.
        #[serde(with = "crate::wire::opt")]
        details: Option<common::Payloads>,
        /// Caller identity.
        identity: String,
    },
    /// A deadline from [`deadlines`] passed.
    Deadline(Deadline),
    /// UpdateWorkflowExecution: admit the update (or report the known one with its id).
    Update {
        /// The update.
        #[serde(with = "crate::wire::message")]
        request: Box<proto::update::Request>,
        /// When set, the run must belong to the chain that started with this run.
        first_execution_run_id: String,
    },
    /// The result of a delivery to or from another run (children, external requests).
    Report(Report),
    /// ResetStickyTaskQueue: workflow tasks go to the normal queue again.
    ResetSticky,
    /// UpdateSchedule or PatchSchedule, for a schedule's run.
    Schedule(schedule::ScheduleRequest),
    /// DeleteWorkflowExecution or retention: a running run is terminated first, as Temporal
    /// does; the shard deletes the run once it is closed and its deliveries are done
    /// ([`deletable`]).
    Delete,
    /// PauseActivity, UnpauseActivity, ResetActivity or UpdateActivityOptions.
    ActivityControl(Box<ActivityControlRequest>),
    /// UpdateWorkflowExecutionOptions.
    UpdateOptions(Box<workflow_options::OptionsUpdate>),
    /// RequestCancelActivityExecution or TerminateActivityExecution, for a standalone
    /// activity's run.
    ActivityExecution(activity_execution::ActivityExecutionRequest),
}

/// A signal to deliver.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Signal {
    /// Signal name.
    pub name: String,
    /// Input.
    #[serde(with = "crate::wire::opt")]
    pub input: Option<common::Payloads>,
    /// Caller identity.
    pub identity: String,
    /// Header.
    #[serde(with = "crate::wire::opt")]
    pub header: Option<common::Header>,
    /// Request id (deduplication); may be empty.
    pub request_id: String,
    /// The workflow that sent it, when another workflow did.
    pub external: Option<ExternalSource>,
}

/// The workflow behind a signal or cancel request from another workflow.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ExternalSource {
    /// Its initiated event id.
    pub initiated_event_id: i64,
    /// The requesting run.
    #[serde(with = "crate::wire::message")]
    pub execution: common::WorkflowExecution,
}

/// How an activity report names its activity.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ActivityTarget {
    /// From a task token: the attempt must still be the current, started one.
    Token {
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// By activity id: the current attempt.
    Id(String),
}

/// What an activity worker reports. (A transient value, moved once: its size does not matter.)
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum ActivityReport {
    /// RecordActivityTaskHeartbeat.
    Heartbeat(#[serde(with = "crate::wire::opt")] Option<common::Payloads>),
    /// RespondActivityTaskCompleted.
    Completed(#[serde(with = "crate::wire::opt")] Option<common::Payloads>),
    /// RespondActivityTaskFailed.
    Failed {
        /// The failure.
        #[serde(with = "crate::wire::opt")]
        failure: Option<failure::Failure>,
        /// Heartbeat details to keep for the next attempt.
        #[serde(with = "crate::wire::opt")]
        last_heartbeat_details: Option<common::Payloads>,
    },
    /// RespondActivityTaskCanceled.
    Canceled(#[serde(with = "crate::wire::opt")] Option<common::Payloads>),
}

/// What the engine answers besides the events.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// Done; nothing to return.
    Done,
    /// A workflow task was started (by a poll, or by return_new_workflow_task).
    WorkflowTaskStarted(Box<StartedWorkflowTask>),
    /// A workflow task completed and activities it scheduled with `request_eager_execution`
    /// were started for the completing worker (eager activity execution); `next_task` is the
    /// workflow task started through return_new_workflow_task, if any.
    EagerActivitiesStarted {
        /// The next workflow task, started for the same worker.
        next_task: Option<Box<StartedWorkflowTask>>,
        /// Scheduled event ids of the started activities (all at attempt 1), in command order.
        activities: Vec<i64>,
    },
    /// An activity attempt was started.
    ActivityTaskStarted {
        /// Scheduled event id.
        scheduled_event_id: i64,
        /// Attempt.
        attempt: i32,
    },
    /// Heartbeat recorded.
    Heartbeat {
        /// Whether the workflow asked to cancel the activity.
        cancel_requested: bool,
        /// The activity is paused (the worker should stop the attempt).
        paused: bool,
        /// The activity was reset while this attempt ran.
        reset: bool,
    },
    /// UpdateActivityOptions: the options of the (last) activity it changed.
    ActivityOptions(Box<state::ActivityOptions>),
    /// UpdateWorkflowExecutionOptions: the run's options after the update.
    WorkflowOptions(Box<workflow_options::WorkflowOptions>),
    /// A speculative workflow task was discarded: the worker must roll its history back to
    /// this event (the started event of the last completed task).
    WorkflowTaskDiscarded {
        /// Where the worker's history ends now.
        reset_history_event_id: i64,
    },
    /// Where an update stands.
    Update(Box<UpdateStatus>),
    /// The workflow task completion was refused; the refusal (a WorkflowTaskFailed event) is
    /// written and the error goes back to the worker.
    Refused(EngineError),
}

/// The engine's decision: events to append (ids assigned), the run's new state and the reply.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// New mutable state.
    pub state: MutableState,
    /// New history events, in order, contiguous from the old `next_event_id`.
    pub events: Vec<HistoryEvent>,
    /// The reply to the caller.
    pub reply: Reply,
    /// The run that follows when this one closed into a retry: it becomes the current run.
    pub successor: Option<Box<Outcome>>,
}

/// Decides on `request` for the run in `state` at time `now_ns`.
pub fn handle(
    state: &MutableState,
    request: Request,
    now_ns: i64,
    limits: &Limits,
) -> Result<Outcome, EngineError> {
    if state.namespace_division().is_some() && !system_run_takes(&request) {
        return Err(EngineError::FailedPrecondition(format!(
            "{} is the run of a schedule or batch job, not a workflow: use the schedule or \
             batch operation API",
            state.workflow_id
        )));
    }
    if state.activity_execution.is_some() {
        if !activity_run_takes(&request) {
            return Err(EngineError::FailedPrecondition(format!(
                "{} is the run of a standalone activity, not a workflow: use the activity \
                 execution API",
                state.workflow_id
            )));
        }
        activity_execution::check_report(state, &request)?;
    }
    let mut txn = Txn::new(state.clone(), now_ns, limits);
    let reply = match request {
        Request::RecordWorkflowTaskStarted {
            scheduled_event_id,
            attempt,
            request_id,
            identity,
            target_version_changed,
        } => workflow_task::record_started(
            &mut txn,
            scheduled_event_id,
            attempt,
            (request_id, identity),
            target_version_changed,
        )?,
        Request::CompleteWorkflowTask(complete) => workflow_task::complete(&mut txn, *complete)?,
        Request::FailWorkflowTask {
            scheduled_event_id,
            attempt,
            cause,
            failure,
            identity,
        } => workflow_task::fail(
            &mut txn,
            scheduled_event_id,
            attempt,
            cause,
            failure,
            identity,
        )?,
        Request::RecordActivityTaskStarted {
            scheduled_event_id,
            attempt,
            task_queue,
            request_id,
            identity,
        } => activity::record_started(
            &mut txn,
            scheduled_event_id,
            attempt,
            &task_queue,
            (request_id, identity),
        )?,
        Request::Activity {
            target,
            report,
            identity,
        } => activity::report(&mut txn, target, report, identity)?,
        Request::Signal(signal) => signal_run(&mut txn, signal)?,
        Request::Cancel {
            reason,
            identity,
            external,
        } => request_cancel(&mut txn, reason, identity, external)?,
        Request::Terminate {
            reason,
            details,
            identity,
        } => {
            terminate(&mut txn, reason, details, identity)?;
            Reply::Done
        }
        Request::Deadline(deadline) => deadlines::fire(&mut txn, deadline)?,
        Request::Update {
            request,
            first_execution_run_id,
        } => update::admit(&mut txn, *request, &first_execution_run_id)?,
        Request::Report(report) => children::report(&mut txn, report)?,
        Request::ResetSticky => {
            if txn.state.sticky_queue.is_empty() {
                return Err(EngineError::NoChange);
            }
            txn.clear_sticky();
            Reply::Done
        }
        Request::Schedule(request) => schedule::handle(&mut txn, request)?,
        Request::Delete => {
            if txn.state.is_running() {
                let reason = match txn.state.activity_execution {
                    Some(_) => "Delete activity execution",
                    None => "Delete workflow execution",
                };
                terminate(
                    &mut txn,
                    reason.to_string(),
                    None,
                    "history-service".to_string(),
                )?;
            }
            txn.state.delete_requested = true;
            Reply::Done
        }
        Request::ActivityControl(request) => activity_control::handle(&mut txn, *request)?,
        Request::UpdateOptions(update) => workflow_options::update(&mut txn, *update)?,
        Request::ActivityExecution(request) => activity_execution::handle(&mut txn, request)?,
    };
    activity_execution::observe(state, &mut txn);
    Ok(txn.finish(reply))
}

/// True for the requests the run of a schedule or batch job takes (it has no workflow tasks,
/// activities or signals).
fn system_run_takes(request: &Request) -> bool {
    matches!(
        request,
        Request::Terminate { .. }
            | Request::Deadline(_)
            | Request::Report(_)
            | Request::Schedule(_)
            | Request::Delete
    )
}

/// True for the requests the run of a standalone activity takes (it has no workflow tasks,
/// timers or signals).
fn activity_run_takes(request: &Request) -> bool {
    matches!(
        request,
        Request::RecordActivityTaskStarted { .. }
            | Request::Activity { .. }
            | Request::Terminate { .. }
            | Request::Deadline(_)
            | Request::Delete
            | Request::ActivityControl(_)
            | Request::ActivityExecution(_)
    )
}

/// True when the run in `state` can be deleted now: deletion was asked for, it is closed and
/// nothing is left to deliver for it.
pub fn deletable(state: &MutableState) -> bool {
    state.delete_requested
        && !state.is_running()
        && transfers(state)
            .iter()
            .all(|t| matches!(t, Transfer::DeleteRun))
}

fn require_running(txn: &Txn) -> Result<(), EngineError> {
    if txn.state.is_running() {
        Ok(())
    } else {
        Err(EngineError::Closed)
    }
}

fn signal_run(txn: &mut Txn, signal: Signal) -> Result<Reply, EngineError> {
    require_running(txn)?;
    if !signal.request_id.is_empty() && txn.state.signal_request_ids.contains(&signal.request_id) {
        return Ok(Reply::Done);
    }
    if txn.state.signal_count >= txn.limits.max_signals_per_execution {
        return Err(EngineError::ResourceExhausted(format!(
            "the workflow has received {} signals, the most one execution accepts",
            txn.state.signal_count
        )));
    }
    txn.state.signal_count += 1;
    if !signal.request_id.is_empty() {
        txn.state
            .signal_request_ids
            .insert(signal.request_id.clone());
    }
    txn.add_worker_event(proto::Attributes::WorkflowExecutionSignaledEventAttributes(
        proto::history::WorkflowExecutionSignaledEventAttributes {
            signal_name: signal.name,
            input: signal.input,
            identity: signal.identity,
            header: signal.header,
            request_id: signal.request_id,
            external_workflow_execution: signal.external.map(|e| e.execution),
            ..Default::default()
        },
    ));
    Ok(Reply::Done)
}

fn request_cancel(
    txn: &mut Txn,
    reason: String,
    identity: String,
    external: Option<ExternalSource>,
) -> Result<Reply, EngineError> {
    // Like Temporal: cancelling a closed run, or asking twice, succeeds and changes nothing.
    if !txn.state.is_running() || txn.state.cancel_requested {
        return Ok(Reply::Done);
    }
    txn.state.cancel_requested = true;
    txn.add_worker_event(
        proto::Attributes::WorkflowExecutionCancelRequestedEventAttributes(
            proto::history::WorkflowExecutionCancelRequestedEventAttributes {
                cause: reason,
                identity,
                external_initiated_event_id: external.as_ref().map_or(0, |e| e.initiated_event_id),
                external_workflow_execution: external.map(|e| e.execution),
            },
        ),
    );
    Ok(Reply::Done)
}

/// Terminates the run in `txn` (also used by start with a terminate policy).
fn terminate(
    txn: &mut Txn,
    reason: String,
    details: Option<common::Payloads>,
    identity: String,
) -> Result<(), EngineError> {
    require_running(txn)?;
    txn.fail_started_workflow_task_for_close(&identity);
    txn.close(
        RunStatus::Terminated,
        proto::Attributes::WorkflowExecutionTerminatedEventAttributes(
            proto::history::WorkflowExecutionTerminatedEventAttributes {
                reason,
                details,
                identity,
            },
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests;
