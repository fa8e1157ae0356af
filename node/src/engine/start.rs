//! Starting runs: the id reuse and conflict policies, and the first events of a new run.

use std::collections::{BTreeMap, BTreeSet};

use super::cron::CronSchedule;
use super::proto::{self, common, enums, history, Attributes};
use super::state::{MutableState, RunStatus};
use super::txn::Txn;
use super::{activity, EngineError, Limits, Outcome, Reply, Signal};

/// Everything a new run starts from (StartWorkflowExecution or SignalWithStart).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StartArgs {
    /// Namespace id.
    pub namespace_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// The new run's id (chosen by the caller).
    pub run_id: String,
    /// Start request id.
    pub request_id: String,
    /// Workflow type name.
    pub workflow_type: String,
    /// Task queue name.
    pub task_queue: String,
    /// Input.
    #[serde(with = "crate::wire::opt")]
    pub input: Option<common::Payloads>,
    /// Execution timeout.
    #[serde(with = "crate::wire::opt")]
    pub execution_timeout: Option<prost_wkt_types::Duration>,
    /// Run timeout.
    #[serde(with = "crate::wire::opt")]
    pub run_timeout: Option<prost_wkt_types::Duration>,
    /// Workflow task timeout.
    #[serde(with = "crate::wire::opt")]
    pub task_timeout: Option<prost_wkt_types::Duration>,
    /// Caller identity.
    pub identity: String,
    /// Retry policy.
    #[serde(with = "crate::wire::opt")]
    pub retry_policy: Option<common::RetryPolicy>,
    /// Memo.
    #[serde(with = "crate::wire::opt")]
    pub memo: Option<common::Memo>,
    /// Search attributes.
    #[serde(with = "crate::wire::opt")]
    pub search_attributes: Option<common::SearchAttributes>,
    /// Header.
    #[serde(with = "crate::wire::opt")]
    pub header: Option<common::Header>,
    /// Start delay.
    #[serde(with = "crate::wire::opt")]
    pub start_delay: Option<prost_wkt_types::Duration>,
    /// Priority.
    #[serde(with = "crate::wire::opt")]
    pub priority: Option<common::Priority>,
    /// User metadata (summary, details).
    #[serde(with = "crate::wire::opt")]
    pub user_metadata: Option<temporalio_protos::temporal::api::sdk::v1::UserMetadata>,
    /// Signal delivered with the start (SignalWithStart).
    pub signal: Option<Signal>,
    /// Set when the run continues an earlier one (a workflow retry).
    pub continuation: Option<Continuation>,
    /// The parent, when this starts a child workflow.
    pub parent: Option<super::state::ParentInfo>,
    /// Cron schedule (empty: none).
    pub cron_schedule: String,
    /// A result handed to the run from outside its chain (a schedule's last one), unless a
    /// continuation hands one on.
    #[serde(with = "crate::wire::opt")]
    pub last_completion_result: Option<common::Payloads>,
    /// A failure handed to the run from outside its chain (a schedule's last one).
    #[serde(with = "crate::wire::opt")]
    pub continued_failure: Option<proto::failure::Failure>,
    /// Set when this starts the run of a schedule (CreateSchedule).
    pub schedule: Option<Box<super::schedule::NewSchedule>>,
    /// Set when this starts the run of a batch job (StartBatchOperation).
    pub batch: Option<Box<super::batch::NewBatch>>,
    /// Set when this starts the run of a standalone activity (StartActivityExecution).
    pub activity_execution: Option<Box<super::activity_execution::NewActivityExecution>>,
    /// Worker versioning override of the start.
    #[serde(with = "crate::wire::opt")]
    pub versioning_override: Option<proto::workflow::VersioningOverride>,
    /// Worker versioning the run starts with, from the run it continues as new.
    pub inherited_versioning: Option<super::state::RunVersioning>,
    /// Eager start: the first workflow task is started for the caller in the same commit.
    pub eager_workflow_task: bool,
}

/// How a run continues the run before it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Continuation {
    /// The run it continues.
    pub previous_run_id: String,
    /// First run of the chain.
    pub first_execution_run_id: String,
    /// This run's attempt.
    pub attempt: i32,
    /// Why the previous run failed.
    #[serde(with = "crate::wire::opt")]
    pub failure: Option<proto::failure::Failure>,
    /// The previous run's result handed on (continue-as-new, cron).
    #[serde(with = "crate::wire::opt")]
    pub last_completion_result: Option<common::Payloads>,
    /// When the whole execution times out (kept across runs).
    pub execution_expiration_ns: Option<i64>,
    /// `ContinueAsNewInitiator`.
    pub initiator: i32,
    /// Finished updates of earlier runs (update ids stay deduplicated across continue-as-new).
    pub finished_updates: BTreeMap<String, super::state::FinishedUpdate>,
}

/// What a start request does given the workflow id's current run.
#[derive(Clone, Debug, PartialEq)]
pub enum StartDecision {
    /// Start a new run; when `terminate_current`, the running current run is terminated first.
    New {
        /// Terminate the running current run first.
        terminate_current: bool,
    },
    /// Answer with the current run (`started` tells whether this request started it).
    Existing {
        /// Run id of the current run.
        run_id: String,
        /// True when the current run was started by this very request (a retry).
        started: bool,
    },
    /// Refuse: a run is running, or the reuse policy forbids a new one.
    AlreadyStarted {
        /// Run id of the current run.
        run_id: String,
        /// The current run's start request id.
        start_request_id: String,
        /// Why, for the error message.
        message: String,
    },
}

/// Applies Temporal's id reuse policy (for a closed current run) and id conflict policy (for a
/// running one).
pub fn decide_start(
    current: Option<&MutableState>,
    request_id: &str,
    reuse_policy: i32,
    conflict_policy: i32,
) -> StartDecision {
    use enums::WorkflowIdConflictPolicy as Conflict;
    use enums::WorkflowIdReusePolicy as Reuse;
    let Some(current) = current else {
        return StartDecision::New {
            terminate_current: false,
        };
    };
    if !request_id.is_empty() && current.start_request_id == request_id {
        return StartDecision::Existing {
            run_id: current.run_id.clone(),
            started: true,
        };
    }
    let reuse = Reuse::try_from(reuse_policy).unwrap_or(Reuse::Unspecified);
    let conflict = Conflict::try_from(conflict_policy).unwrap_or(Conflict::Unspecified);
    let refuse = |message: String| StartDecision::AlreadyStarted {
        run_id: current.run_id.clone(),
        start_request_id: current.start_request_id.clone(),
        message,
    };
    if current.is_running() {
        #[allow(deprecated)]
        let terminate_if_running = reuse == Reuse::TerminateIfRunning;
        if terminate_if_running || conflict == Conflict::TerminateExisting {
            return StartDecision::New {
                terminate_current: true,
            };
        }
        if conflict == Conflict::UseExisting {
            return StartDecision::Existing {
                run_id: current.run_id.clone(),
                started: false,
            };
        }
        return refuse(format!(
            "Workflow execution is already running. WorkflowId: {}, RunId: {}.",
            current.workflow_id, current.run_id
        ));
    }
    match reuse {
        Reuse::RejectDuplicate => refuse(format!(
            "Workflow execution already finished and WorkflowIdReusePolicy is \
             WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE. WorkflowId: {}, RunId: {}.",
            current.workflow_id, current.run_id
        )),
        Reuse::AllowDuplicateFailedOnly
            if matches!(
                current.status,
                RunStatus::Completed | RunStatus::ContinuedAsNew
            ) =>
        {
            refuse(format!(
                "Workflow execution already finished successfully and WorkflowIdReusePolicy is \
                 WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY. WorkflowId: {}, RunId: {}.",
                current.workflow_id, current.run_id
            ))
        }
        _ => StartDecision::New {
            terminate_current: false,
        },
    }
}

/// The first events and state of a new run.
pub fn new_run(args: StartArgs, now_ns: i64, limits: &Limits) -> Result<Outcome, EngineError> {
    let execution_ms = proto::duration_ms(args.execution_timeout.as_ref());
    let mut run_ms = proto::duration_ms(args.run_timeout.as_ref());
    if run_ms == 0 || (execution_ms > 0 && run_ms > execution_ms) {
        run_ms = execution_ms;
    }
    let mut task_ms = proto::duration_ms(args.task_timeout.as_ref());
    if task_ms == 0 {
        task_ms = limits.default_workflow_task_timeout_ms;
    }
    task_ms = task_ms.min(limits.max_workflow_task_timeout_ms);
    if run_ms > 0 {
        task_ms = task_ms.min(run_ms);
    }
    let retry = match &args.retry_policy {
        Some(policy) => {
            Some(activity::retry_policy(Some(policy)).map_err(EngineError::InvalidArgument)?)
        }
        None => None,
    };
    let mut delay_ms = proto::duration_ms(args.start_delay.as_ref());
    if !args.cron_schedule.is_empty() && args.continuation.is_none() {
        // The first run of a cron workflow waits for the schedule's first time.
        let schedule = CronSchedule::parse(&args.cron_schedule)
            .map_err(|e| EngineError::InvalidArgument(format!("Invalid CronSchedule: {e}.")))?;
        delay_ms = schedule.backoff_ms(now_ns, now_ns).unwrap_or(0);
    }
    let ns = |ms: i64| ms * 1_000_000;
    let continuation = args.continuation.clone().unwrap_or_default();
    let execution_expiration = match args.continuation {
        Some(_) => continuation.execution_expiration_ns,
        None => (execution_ms > 0).then(|| now_ns + ns(execution_ms)),
    };
    let run_expiration = match (
        (run_ms > 0).then(|| now_ns + ns(delay_ms + run_ms)),
        execution_expiration,
    ) {
        (Some(run), Some(execution)) => Some(run.min(execution)),
        (run, execution) => run.or(execution),
    };
    let first_execution_run_id = if continuation.first_execution_run_id.is_empty() {
        args.run_id.clone()
    } else {
        continuation.first_execution_run_id.clone()
    };
    let attempt = continuation.attempt.max(1);
    let state = MutableState {
        namespace_id: args.namespace_id.clone(),
        workflow_id: args.workflow_id.clone(),
        run_id: args.run_id.clone(),
        first_execution_run_id: first_execution_run_id.clone(),
        workflow_type: args.workflow_type.clone(),
        task_queue: args.task_queue.clone(),
        status: RunStatus::Running,
        start_request_id: args.request_id.clone(),
        start_time_ns: now_ns,
        execution_time_ns: now_ns + ns(delay_ms),
        close_time_ns: None,
        next_event_id: 1,
        history_size_bytes: 0,
        workflow_task_timeout_ms: task_ms,
        run_timeout_ms: run_ms,
        execution_timeout_ms: execution_ms,
        run_expiration_ns: run_expiration,
        execution_expiration_ns: execution_expiration,
        retry: retry.clone(),
        attempt,
        memo: proto::encode_opt(args.memo.as_ref()),
        search_attributes: proto::encode_opt(args.search_attributes.as_ref()),
        input: proto::encode_opt(args.input.as_ref()),
        header: proto::encode_opt(args.header.as_ref()),
        first_task_backoff_until_ns: (delay_ms > 0).then(|| now_ns + ns(delay_ms)),
        workflow_task: None,
        next_workflow_task_attempt: 1,
        last_completed_started_event_id: 0,
        activities: BTreeMap::new(),
        activity_ids: BTreeMap::new(),
        timers: BTreeMap::new(),
        buffered_events: Vec::new(),
        signal_request_ids: BTreeSet::new(),
        signal_count: 0,
        cancel_requested: false,
        close_event_id: 0,
        updates: Vec::new(),
        finished_updates: continuation.finished_updates.clone(),
        update_count: 0,
        successor_run_id: String::new(),
        parent: args.parent.clone(),
        parent_notified: false,
        children: BTreeMap::new(),
        external_requests: BTreeMap::new(),
        user_metadata: proto::encode_opt(args.user_metadata.as_ref()),
        sticky_queue: String::new(),
        sticky_timeout_ms: 0,
        cron_schedule: args.cron_schedule.clone(),
        reset_request_id: String::new(),
        schedule: None,
        batch: None,
        delete_requested: false,
        versioning: match (
            args.inherited_versioning.clone(),
            args.versioning_override.clone(),
        ) {
            (None, None) => None,
            (inherited, versioning_override) => Some(Box::new(super::state::RunVersioning {
                versioning_override,
                ..inherited.unwrap_or_default()
            })),
        },
        activity_controls: BTreeMap::new(),
        priority: proto::encode_opt(args.priority.as_ref()),
        activity_execution: None,
        activity_attempt_ends: BTreeMap::new(),
    };
    let parent = args.parent.clone();
    let mut txn = Txn::new(state, now_ns, limits);
    let first = txn.append(Attributes::WorkflowExecutionStartedEventAttributes(
        history::WorkflowExecutionStartedEventAttributes {
            workflow_type: Some(common::WorkflowType {
                name: args.workflow_type,
            }),
            task_queue: Some(proto::task_queue(&args.task_queue)),
            input: args.input,
            workflow_execution_timeout: proto::duration(execution_ms),
            workflow_run_timeout: proto::duration(run_ms),
            workflow_task_timeout: proto::duration(task_ms),
            original_execution_run_id: args.run_id.clone(),
            identity: args.identity,
            first_execution_run_id,
            continued_execution_run_id: continuation.previous_run_id,
            continued_failure: continuation.failure.or(args.continued_failure),
            last_completion_result: continuation
                .last_completion_result
                .or(args.last_completion_result),
            initiator: continuation.initiator,
            retry_policy: retry.as_ref().map(activity::retry_policy_proto),
            attempt,
            workflow_execution_expiration_time: execution_expiration.map(proto::timestamp),
            first_workflow_task_backoff: proto::duration(delay_ms),
            cron_schedule: args.cron_schedule.clone(),
            memo: args.memo,
            search_attributes: args.search_attributes,
            header: args.header,
            workflow_id: args.workflow_id,
            priority: args.priority,
            versioning_override: args.versioning_override,
            inherited_pinned_version: args
                .inherited_versioning
                .as_ref()
                .filter(|v| !v.use_ramping_first && !v.build_id.is_empty())
                .map(|v| {
                    temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentVersion {
                        build_id: v.build_id.clone(),
                        deployment_name: v.deployment_name.clone(),
                    }
                }),
            parent_workflow_namespace: parent
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
            parent_workflow_namespace_id: parent
                .as_ref()
                .map(|p| p.namespace_id.clone())
                .unwrap_or_default(),
            parent_workflow_execution: parent.as_ref().map(|p| common::WorkflowExecution {
                workflow_id: p.workflow_id.clone(),
                run_id: p.run_id.clone(),
            }),
            parent_initiated_event_id: parent.as_ref().map_or(0, |p| p.initiated_event_id),
            root_workflow_execution: parent.as_ref().map(|p| common::WorkflowExecution {
                workflow_id: p.root.0.clone(),
                run_id: p.root.1.clone(),
            }),
            ..Default::default()
        },
    ));
    if let (Some(event), Some(metadata)) = (txn.events.last_mut(), args.user_metadata) {
        if event.event_id == first {
            event.user_metadata = Some(metadata);
        }
    }
    if let Some(signal) = args.signal {
        // The same path as a signal to a running run: counted, deduplicated, then the first
        // workflow task is scheduled after it (unless the start is delayed).
        super::signal_run(&mut txn, signal)?;
    }
    match (args.schedule, args.batch, args.activity_execution) {
        (Some(schedule), _, _) => super::schedule::create(&mut txn, *schedule)?,
        (None, Some(batch), _) => super::batch::create(&mut txn, *batch),
        (None, None, Some(activity)) => super::activity_execution::create(&mut txn, *activity)?,
        (None, None, None) => txn.schedule_workflow_task(),
    }
    Ok(txn.finish(Reply::Done))
}
