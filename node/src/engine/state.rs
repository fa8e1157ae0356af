//! Mutable state of one workflow run: everything the engine needs to decide the next events,
//! stored as one bincode record per run (history events are stored separately, as protobuf).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Retry policy with Temporal's defaults filled in. Intervals in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_interval_ms: i64,
    /// Growth factor of the delay per attempt.
    pub backoff_coefficient: f64,
    /// Upper bound of the delay.
    pub maximum_interval_ms: i64,
    /// Most attempts (0 = unlimited).
    pub maximum_attempts: i32,
    /// Failure types never retried.
    pub non_retryable_error_types: Vec<String>,
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Open.
    Running,
    /// Closed by CompleteWorkflowExecution.
    Completed,
    /// Closed by FailWorkflowExecution.
    Failed,
    /// Closed by CancelWorkflowExecution.
    Canceled,
    /// Closed by TerminateWorkflowExecution.
    Terminated,
    /// Closed by continue-as-new.
    ContinuedAsNew,
    /// Closed by a run or execution timeout.
    TimedOut,
}

impl RunStatus {
    /// Temporal's execution status of a run in this status.
    pub fn execution_status(self) -> super::proto::enums::WorkflowExecutionStatus {
        use super::proto::enums::WorkflowExecutionStatus as S;
        match self {
            RunStatus::Running => S::Running,
            RunStatus::Completed => S::Completed,
            RunStatus::Failed => S::Failed,
            RunStatus::Canceled => S::Canceled,
            RunStatus::Terminated => S::Terminated,
            RunStatus::ContinuedAsNew => S::ContinuedAsNew,
            RunStatus::TimedOut => S::TimedOut,
        }
    }
}

/// The started part of a workflow task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowTaskStarted {
    /// Id of the WorkflowTaskStarted event (reserved, not yet written, when transient).
    pub event_id: i64,
    /// When it was started.
    pub time_ns: i64,
    /// Poll request id (start is idempotent per request id).
    pub request_id: String,
    /// Poller identity.
    pub identity: String,
}

/// The workflow task that is scheduled or started, if any.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowTaskInfo {
    /// Id of the WorkflowTaskScheduled event (reserved, not yet written, when transient).
    pub scheduled_event_id: i64,
    /// When it was scheduled.
    pub scheduled_time_ns: i64,
    /// Attempt, from 1. Attempts after the first are transient: their scheduled and started
    /// events are written only when the task completes.
    pub attempt: i32,
    /// Start-to-close timeout.
    pub timeout_ms: i64,
    /// Set once a poller took it.
    pub started: Option<WorkflowTaskStarted>,
    /// Scheduled only to carry updates: its events are written only if the worker accepts an
    /// update or sends commands, and it is dropped without a trace otherwise.
    pub speculative: bool,
}

impl WorkflowTaskInfo {
    /// True when the scheduled/started events are not in history yet (a retry attempt or a
    /// speculative task).
    pub fn is_transient(&self) -> bool {
        self.attempt > 1 || self.speculative
    }
}

/// A child workflow this run started (or is starting).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Id of its StartChildWorkflowExecutionInitiated event.
    pub initiated_event_id: i64,
    /// The WorkflowTaskCompleted event of the command.
    pub workflow_task_completed_event_id: i64,
    /// Namespace name as the command gave it (empty: the parent's).
    pub namespace: String,
    /// Child workflow id.
    pub workflow_id: String,
    /// Child workflow type.
    pub workflow_type: String,
    /// Encoded `StartChildWorkflowExecutionCommandAttributes` (what to start).
    #[serde(with = "serde_bytes")]
    pub command: Vec<u8>,
    /// `ParentClosePolicy`.
    pub parent_close_policy: i32,
    /// The child's first run, once started.
    pub started_run_id: Option<String>,
    /// Id of the ChildWorkflowExecutionStarted event (0 until written).
    pub started_event_id: i64,
    /// The parent close policy was applied to it.
    pub policy_applied: bool,
}

/// What an external request asks of another workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExternalAction {
    /// SignalExternalWorkflowExecution: encoded `Payloads` input and `Header`.
    Signal {
        /// Signal name.
        signal_name: String,
        /// Encoded `Payloads`.
        #[serde(with = "serde_bytes")]
        input: Vec<u8>,
        /// Encoded `Header`.
        #[serde(with = "serde_bytes")]
        header: Vec<u8>,
    },
    /// RequestCancelExternalWorkflowExecution.
    Cancel {
        /// Reason.
        reason: String,
    },
}

/// A signal or cancel request to another workflow, not yet delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExternalRequest {
    /// Namespace name as the command gave it (empty: this run's).
    pub namespace: String,
    /// Target workflow id.
    pub workflow_id: String,
    /// Target run id (empty: the current run).
    pub run_id: String,
    /// Control string, echoed into the result event.
    pub control: String,
    /// The WorkflowTaskCompleted event of the command.
    pub workflow_task_completed_event_id: i64,
    /// Only a child of this run may be the target.
    pub child_workflow_only: bool,
    /// What to do.
    pub action: ExternalAction,
}

/// The parent of a child workflow run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentInfo {
    /// Parent namespace id.
    pub namespace_id: String,
    /// Parent namespace name.
    pub namespace: String,
    /// Parent workflow id.
    pub workflow_id: String,
    /// Parent run id.
    pub run_id: String,
    /// Id of the parent's StartChildWorkflowExecutionInitiated event.
    pub initiated_event_id: i64,
    /// The run at the top of the parent chain (workflow id, run id).
    pub root: (String, String),
}

/// An update admitted and not yet completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateInfo {
    /// Update id.
    pub update_id: String,
    /// Encoded `update::v1::Request`.
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    /// Id of its WorkflowExecutionUpdateAccepted event, once accepted.
    pub accepted_event_id: Option<i64>,
}

/// The outcome of a finished update (completed, or rejected: then no event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishedUpdate {
    /// Encoded `update::v1::Outcome`.
    #[serde(with = "serde_bytes")]
    pub outcome: Vec<u8>,
    /// Order of finishing (the oldest are forgotten first).
    pub seq: u64,
    /// True when the workflow completed it (a WorkflowExecutionUpdateCompleted event), false
    /// when it was rejected or failed by the run's close.
    pub completed: bool,
}

/// The started part of an activity attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityStarted {
    /// When the attempt started.
    pub time_ns: i64,
    /// Worker identity.
    pub identity: String,
    /// Poll request id.
    pub request_id: String,
}

/// A pending activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityInfo {
    /// Id of its ActivityTaskScheduled event.
    pub scheduled_event_id: i64,
    /// Workflow-chosen activity id.
    pub activity_id: String,
    /// Activity type name.
    pub activity_type: String,
    /// Task queue it is dispatched to.
    pub task_queue: String,
    /// When the activity (first attempt) was scheduled.
    pub scheduled_time_ns: i64,
    /// When the current attempt becomes (or became) dispatchable.
    pub attempt_scheduled_time_ns: i64,
    /// Current attempt, from 1.
    pub attempt: i32,
    /// Timeouts in ms (0 = none).
    pub schedule_to_close_ms: i64,
    /// Schedule-to-start timeout of each attempt.
    pub schedule_to_start_ms: i64,
    /// Start-to-close timeout of each attempt.
    pub start_to_close_ms: i64,
    /// Heartbeat timeout.
    pub heartbeat_ms: i64,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Encoded `Payloads` input.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// Encoded `Header`.
    #[serde(with = "serde_bytes")]
    pub header: Vec<u8>,
    /// Encoded `Priority`.
    #[serde(with = "serde_bytes")]
    pub priority: Vec<u8>,
    /// The running attempt.
    pub started: Option<ActivityStarted>,
    /// Last heartbeat of the running attempt.
    pub last_heartbeat_ns: Option<i64>,
    /// Encoded `Payloads` of the last heartbeat (kept across attempts).
    #[serde(with = "serde_bytes")]
    pub heartbeat_details: Option<Vec<u8>>,
    /// Encoded `Failure` of the previous attempt.
    #[serde(with = "serde_bytes")]
    pub last_failure: Option<Vec<u8>>,
    /// Id of the ActivityTaskCancelRequested event, once cancellation was requested.
    pub cancel_requested_event_id: Option<i64>,
}

/// A pending user timer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerInfo {
    /// Id of its TimerStarted event.
    pub started_event_id: i64,
    /// When it fires.
    pub fire_at_ns: i64,
}

/// Mutable state of one workflow run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MutableState {
    /// Namespace id.
    pub namespace_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Run id.
    pub run_id: String,
    /// Run id of the first run in the chain.
    pub first_execution_run_id: String,
    /// Workflow type name.
    pub workflow_type: String,
    /// The workflow's task queue.
    pub task_queue: String,
    /// Life-cycle status.
    pub status: RunStatus,
    /// StartWorkflowExecution request id (start idempotency).
    pub start_request_id: String,
    /// When the run started.
    pub start_time_ns: i64,
    /// When the first workflow task is due (start time plus any start delay).
    pub execution_time_ns: i64,
    /// When the run closed.
    pub close_time_ns: Option<i64>,
    /// Id the next history event gets.
    pub next_event_id: i64,
    /// Bytes of history written so far.
    pub history_size_bytes: i64,
    /// Workflow task start-to-close timeout.
    pub workflow_task_timeout_ms: i64,
    /// Run timeout (0 = none).
    pub run_timeout_ms: i64,
    /// Execution timeout (0 = none).
    pub execution_timeout_ms: i64,
    /// When the run times out.
    pub run_expiration_ns: Option<i64>,
    /// When the execution (all runs) times out.
    pub execution_expiration_ns: Option<i64>,
    /// Workflow retry policy, if any.
    pub retry: Option<RetryPolicy>,
    /// Attempt of this run (workflow retries), from 1.
    pub attempt: i32,
    /// Encoded `Memo`.
    #[serde(with = "serde_bytes")]
    pub memo: Vec<u8>,
    /// Encoded `SearchAttributes`.
    #[serde(with = "serde_bytes")]
    pub search_attributes: Vec<u8>,
    /// Encoded `Payloads` input of the run (a retry starts the next run with it).
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// Encoded `Header` of the start.
    #[serde(with = "serde_bytes")]
    pub header: Vec<u8>,
    /// Start delay: the first workflow task is scheduled when this passes.
    pub first_task_backoff_until_ns: Option<i64>,
    /// The scheduled or started workflow task.
    pub workflow_task: Option<WorkflowTaskInfo>,
    /// Attempt the next scheduled workflow task gets.
    pub next_workflow_task_attempt: i32,
    /// Started event id of the last completed workflow task.
    pub last_completed_started_event_id: i64,
    /// Pending activities by scheduled event id.
    pub activities: BTreeMap<i64, ActivityInfo>,
    /// Pending activity ids to scheduled event ids.
    pub activity_ids: BTreeMap<String, i64>,
    /// Pending timers by timer id.
    pub timers: BTreeMap<String, TimerInfo>,
    /// Encoded `HistoryEvent`s that arrived while a workflow task ran (ids assigned on flush).
    #[serde(with = "crate::byte_runs::strings")]
    pub buffered_events: Vec<Vec<u8>>,
    /// Signal request ids seen (deduplication).
    pub signal_request_ids: BTreeSet<String>,
    /// Signals received.
    pub signal_count: u32,
    /// Cancel request ids seen (deduplication); non-empty once cancellation was requested.
    pub cancel_requested: bool,
    /// Id of the close event, once closed.
    pub close_event_id: i64,
    /// Updates admitted or accepted and not yet completed, in admission order.
    pub updates: Vec<UpdateInfo>,
    /// Outcomes of finished updates by update id (deduplication, polls); carried to a run
    /// that continues this one.
    pub finished_updates: BTreeMap<String, FinishedUpdate>,
    /// Updates this run admitted.
    pub update_count: u32,
    /// The run that follows this closed one (continue-as-new, retry), if any.
    pub successor_run_id: String,
    /// Parent, when this run belongs to a child workflow.
    pub parent: Option<ParentInfo>,
    /// The parent has been told how this run closed.
    pub parent_notified: bool,
    /// Child workflows by initiated event id.
    pub children: BTreeMap<i64, ChildInfo>,
    /// External signals and cancels not yet delivered, by initiated event id.
    pub external_requests: BTreeMap<i64, ExternalRequest>,
    /// Encoded `UserMetadata` (summary, details) of the start.
    #[serde(with = "serde_bytes")]
    pub user_metadata: Vec<u8>,
    /// The sticky queue of the worker that completed the last workflow task (empty: none);
    /// workflow tasks go there first.
    pub sticky_queue: String,
    /// How long a task waits on the sticky queue before it goes to the normal one.
    pub sticky_timeout_ms: i64,
    /// Cron schedule (empty: none): when the run closes, the next run starts at the next
    /// scheduled time.
    pub cron_schedule: String,
    /// Request id of the ResetWorkflowExecution that created this run (empty: none); a
    /// retried reset answers this run.
    pub reset_request_id: String,
    /// Set on the run of a schedule (which has no workflow tasks).
    pub schedule: Option<Box<super::schedule::ScheduleState>>,
    /// Set on the run of a batch job (which has no workflow tasks).
    pub batch: Option<Box<super::batch::BatchState>>,
    /// The run is to be deleted (DeleteWorkflowExecution, retention) once closed and its
    /// deliveries are done.
    pub delete_requested: bool,
    /// Worker versioning: how the run's tasks are routed between deployment versions.
    pub versioning: Option<Box<RunVersioning>>,
    /// Operator controls of pending activities (pause, reset, changed options) by scheduled
    /// event id; an activity nobody touched has no entry.
    pub activity_controls: BTreeMap<i64, ActivityControl>,
    /// Encoded `Priority` of the workflow: as started, or as UpdateWorkflowExecutionOptions
    /// set it.
    #[serde(with = "serde_bytes")]
    pub priority: Vec<u8>,
    /// Set on the run of a standalone activity (which has no workflow tasks).
    pub activity_execution: Option<Box<super::activity_execution::ActivityExecution>>,
    /// When the last failed attempt of each pending activity ended, by scheduled event id (an
    /// activity with no failed attempt has no entry).
    pub activity_attempt_ends: BTreeMap<i64, i64>,
}

/// What PauseActivity, ResetActivity and UpdateActivityOptions left on a pending activity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityControl {
    /// Set while the activity is paused: no attempt is dispatched and no timeout runs.
    pub pause: Option<ActivityPause>,
    /// ResetActivity reset the activity while an attempt ran: that attempt's heartbeats are
    /// answered `activity_reset` until the next attempt.
    pub reset: bool,
    /// ... and the next attempt starts without heartbeat details.
    pub reset_heartbeat: bool,
    /// The options the activity was scheduled with, kept when they are first changed
    /// (restoring them needs no history read).
    pub original: Option<ActivityOptions>,
}

impl ActivityControl {
    /// True when the entry records nothing (and can be dropped).
    pub fn is_empty(&self) -> bool {
        self == &ActivityControl::default()
    }
}

/// Who paused an activity, when and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityPause {
    /// When it was paused.
    pub time_ns: i64,
    /// Who paused it.
    pub identity: String,
    /// Why.
    pub reason: String,
    /// Request id of the pause (a retried pause is not refused as a second one).
    pub request_id: String,
}

/// The options of an activity that UpdateActivityOptions can change, as the engine keeps them
/// (timeouts in ms, normalized as at scheduling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityOptions {
    /// Task queue.
    pub task_queue: String,
    /// Schedule-to-close timeout.
    pub schedule_to_close_ms: i64,
    /// Schedule-to-start timeout.
    pub schedule_to_start_ms: i64,
    /// Start-to-close timeout.
    pub start_to_close_ms: i64,
    /// Heartbeat timeout.
    pub heartbeat_ms: i64,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Encoded `Priority`.
    #[serde(with = "serde_bytes")]
    pub priority: Vec<u8>,
}

/// The version (deployment name, build id) a pinned override names, if it names one: its
/// pinned version, or in the deprecated form a PINNED behavior and a `deployment.build_id`
/// string.
pub fn override_version(o: &super::proto::workflow::VersioningOverride) -> Option<(&str, &str)> {
    use super::proto::workflow::versioning_override::Override;
    #[allow(deprecated)]
    match &o.r#override {
        Some(Override::Pinned(p)) => p
            .version
            .as_ref()
            .map(|v| (v.deployment_name.as_str(), v.build_id.as_str())),
        None if o.behavior == super::proto::enums::VersioningBehavior::Pinned as i32 => {
            o.pinned_version.split_once('.')
        }
        _ => None,
    }
}

/// A run's worker versioning (Temporal's `WorkflowExecutionVersioningInfo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunVersioning {
    /// `VersioningBehavior` the last workflow task completion declared.
    pub behavior: i32,
    /// Deployment of the worker that completed it (empty: unversioned).
    pub deployment_name: String,
    /// Its build id.
    pub build_id: String,
    /// Override given at start (or by UpdateWorkflowExecutionOptions).
    #[serde(with = "crate::wire::opt")]
    pub versioning_override: Option<super::proto::workflow::VersioningOverride>,
    /// Until its first workflow task completes, the run goes to the ramping version (a
    /// continue-as-new with USE_RAMPING_VERSION).
    pub use_ramping_first: bool,
}

impl RunVersioning {
    /// The version `TemporalWorkerDeployment` and `TemporalWorkerDeploymentVersion` show: a
    /// pinned override's, else the one that completed the last workflow task.
    pub fn search_version(&self) -> Option<(&str, &str)> {
        self.versioning_override
            .as_ref()
            .and_then(override_version)
            .or_else(|| self.worker_version())
    }

    /// The behavior `TemporalWorkflowVersioningBehavior` shows, named as Temporal names it
    /// there (`Pinned`, `AutoUpgrade`): an override's, else the one the last workflow task
    /// completion declared (None when unspecified).
    pub fn search_behavior(&self) -> Option<&'static str> {
        use super::proto::enums::VersioningBehavior as B;
        use super::proto::workflow::versioning_override::Override;
        #[allow(deprecated)]
        let behavior = match self.versioning_override.as_ref() {
            Some(o) => match &o.r#override {
                Some(Override::AutoUpgrade(true)) => B::AutoUpgrade as i32,
                Some(Override::Pinned(_)) => B::Pinned as i32,
                _ => o.behavior,
            },
            None => self.behavior,
        };
        match B::try_from(behavior).ok()? {
            B::Pinned => Some("Pinned"),
            B::AutoUpgrade => Some("AutoUpgrade"),
            B::Unspecified => None,
        }
    }

    /// The version the run is pinned to, if it is: by a pinned override, else by a PINNED
    /// behavior of a versioned worker (an auto-upgrade override unpins).
    pub fn pinned(&self) -> Option<(&str, &str)> {
        let pinned = super::proto::enums::VersioningBehavior::Pinned as i32;
        match self.versioning_override.as_ref() {
            Some(o) => override_version(o),
            None => self.worker_version().filter(|_| self.behavior == pinned),
        }
    }

    /// The version of the worker that completed the last workflow task, if versioned.
    fn worker_version(&self) -> Option<(&str, &str)> {
        (!self.build_id.is_empty())
            .then_some((self.deployment_name.as_str(), self.build_id.as_str()))
    }
}

impl MutableState {
    /// True while the run is open.
    pub fn is_running(&self) -> bool {
        self.status == RunStatus::Running
    }

    /// The `TemporalNamespaceDivision` of Temporal's system runs (schedules, batch jobs): lists
    /// of workflows leave those out. None for workflows.
    pub fn namespace_division(&self) -> Option<&'static str> {
        if self.schedule.is_some() {
            Some(super::schedule::NAMESPACE_DIVISION)
        } else if self.batch.is_some() {
            Some(super::batch::NAMESPACE_DIVISION)
        } else {
            None
        }
    }

    /// Why a query cannot reach a worker now, as Temporal refuses it (WorkflowNotReady): no
    /// workflow task was ever scheduled (a start delay or cron/retry backoff is pending), or the
    /// workflow task keeps failing (attempt 3 or later; the query would fail the same way).
    pub fn query_not_ready(&self) -> Option<&'static str> {
        if self.first_task_backoff_until_ns.is_some() {
            Some("Workflow task is not scheduled yet.")
        } else if self
            .workflow_task
            .as_ref()
            .is_some_and(|task| task.attempt >= 3)
        {
            Some("Unable to query workflow due to Workflow Task in failed state.")
        } else {
            None
        }
    }

    /// True while a workflow task is started (new events are buffered).
    pub fn workflow_task_started(&self) -> bool {
        self.workflow_task
            .as_ref()
            .is_some_and(|task| task.started.is_some())
    }
}
