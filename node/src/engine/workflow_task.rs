//! Workflow tasks: start, completion with the worker's commands, failure.

use super::proto::{self, command, common, enums, history, protocol, Attributes, HistoryEvent};
use super::state::{RunStatus, TimerInfo, WorkflowTaskInfo, WorkflowTaskStarted};
use super::txn::Txn;
use super::{activity, update, EngineError, Reply};

use command::command::Attributes as Cmd;
use enums::WorkflowTaskFailedCause as Cause;

/// A started workflow task, as a poll response needs it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StartedWorkflowTask {
    /// Scheduled event id (task token).
    pub scheduled_event_id: i64,
    /// Started event id.
    pub started_event_id: i64,
    /// Attempt (task token).
    pub attempt: i32,
    /// Started event id of the previous completed workflow task.
    pub previous_started_event_id: i64,
    /// When it was scheduled.
    pub scheduled_time_ns: i64,
    /// When it was started.
    pub started_time_ns: i64,
    /// Events of a transient task, appended to the stored history in the poll response.
    #[serde(with = "crate::wire::vec")]
    pub transient_events: Vec<HistoryEvent>,
    /// Update requests the task carries.
    #[serde(with = "crate::wire::vec")]
    pub messages: Vec<protocol::Message>,
}

/// RespondWorkflowTaskCompleted, with the task token already decoded.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CompleteWorkflowTask {
    /// From the task token.
    pub scheduled_event_id: i64,
    /// From the task token.
    pub attempt: i32,
    /// The worker's commands, in order.
    #[serde(with = "crate::wire::vec")]
    pub commands: Vec<command::Command>,
    /// The worker's protocol messages (update acceptances, rejections, responses).
    #[serde(with = "crate::wire::vec")]
    pub messages: Vec<protocol::Message>,
    /// Worker identity.
    pub identity: String,
    /// Binary checksum.
    pub binary_checksum: String,
    /// SDK metadata, copied into WorkflowTaskCompleted.
    #[serde(with = "crate::wire::opt")]
    pub sdk_metadata:
        Option<temporalio_protos::temporal::api::sdk::v1::WorkflowTaskCompletedMetadata>,
    /// Metering metadata, copied into WorkflowTaskCompleted.
    #[serde(with = "crate::wire::opt")]
    pub metering_metadata: Option<common::MeteringMetadata>,
    /// Worker version stamp.
    #[serde(with = "crate::wire::opt")]
    pub worker_version: Option<common::WorkerVersionStamp>,
    /// The worker's deployment options (worker versioning).
    #[serde(with = "crate::wire::opt")]
    pub deployment_options:
        Option<temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentOptions>,
    /// `VersioningBehavior` the workflow declared (versioned workers only).
    pub versioning_behavior: i32,
    /// Start the next workflow task right away and return it.
    pub return_new_workflow_task: bool,
    /// Schedule a new workflow task even without new events.
    pub force_create_new_workflow_task: bool,
    /// Request id for the workflow task started through `return_new_workflow_task`.
    pub new_task_request_id: String,
    /// The worker's sticky queue and its schedule-to-start timeout, if it keeps the run cached.
    pub sticky: Option<(String, i64)>,
}

/// The WorkflowTaskCompleted event of `req`, with the worker's version as Temporal records it:
/// the build id as a version stamp (also for a worker that gave only deployment options), the
/// deployment name, and for a versioned worker its version and the workflow's behavior.
// binary_checksum and worker_version are deprecated but still sent, and Temporal records them.
#[allow(deprecated)]
fn completed_attributes(
    task: &WorkflowTaskInfo,
    req: &CompleteWorkflowTask,
) -> history::WorkflowTaskCompletedEventAttributes {
    let deployment = req.deployment_options.as_ref();
    let versioned = deployment.is_some_and(is_versioned);
    let worker_version = req.worker_version.clone().or_else(|| {
        deployment
            .filter(|d| !d.build_id.is_empty())
            .map(|d| common::WorkerVersionStamp {
                build_id: d.build_id.clone(),
                ..Default::default()
            })
    });
    history::WorkflowTaskCompletedEventAttributes {
        scheduled_event_id: task.scheduled_event_id,
        started_event_id: started_id(task),
        identity: req.identity.clone(),
        binary_checksum: req.binary_checksum.clone(),
        worker_version,
        sdk_metadata: req.sdk_metadata.clone(),
        metering_metadata: req.metering_metadata,
        versioning_behavior: if versioned {
            req.versioning_behavior
        } else {
            0
        },
        worker_deployment_name: deployment
            .map(|d| d.deployment_name.clone())
            .unwrap_or_default(),
        deployment_version: deployment.filter(|_| versioned).map(|d| {
            temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentVersion {
                build_id: d.build_id.clone(),
                deployment_name: d.deployment_name.clone(),
            }
        }),
        ..Default::default()
    }
}

/// True for the deployment options of a worker that uses worker versioning.
pub fn is_versioned(
    options: &temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentOptions,
) -> bool {
    options.worker_versioning_mode
        == temporalio_protos::temporal::api::enums::v1::WorkerVersioningMode::Versioned as i32
        && !options.deployment_name.is_empty()
}

/// The run's versioning after a completion: the version and behavior of a versioned worker;
/// an unversioned worker's completion leaves only the override, if any.
fn record_versioning(txn: &mut Txn, req: &CompleteWorkflowTask) {
    let versioned = req.deployment_options.as_ref().filter(|d| is_versioned(d));
    let versioning_override = txn
        .state
        .versioning
        .as_ref()
        .and_then(|v| v.versioning_override.clone());
    txn.state.versioning = match versioned {
        Some(d) => Some(Box::new(super::state::RunVersioning {
            behavior: req.versioning_behavior,
            deployment_name: d.deployment_name.clone(),
            build_id: d.build_id.clone(),
            versioning_override,
            use_ramping_first: false,
        })),
        None => versioning_override.map(|o| {
            Box::new(super::state::RunVersioning {
                versioning_override: Some(o),
                ..Default::default()
            })
        }),
    };
}

fn find_task(
    txn: &Txn,
    scheduled_event_id: i64,
    attempt: i32,
) -> Result<WorkflowTaskInfo, EngineError> {
    if !txn.state.is_running() {
        return Err(EngineError::NotFound(
            "Workflow task not found: the workflow execution already completed.".into(),
        ));
    }
    match &txn.state.workflow_task {
        Some(task) if task.scheduled_event_id == scheduled_event_id && task.attempt == attempt => {
            Ok(task.clone())
        }
        _ => Err(EngineError::NotFound("Workflow task not found.".into())),
    }
}

pub(crate) fn record_started(
    txn: &mut Txn,
    scheduled_event_id: i64,
    attempt: i32,
    (request_id, identity): (String, String),
    target_version_changed: bool,
) -> Result<Reply, EngineError> {
    let mut task = find_task(txn, scheduled_event_id, attempt)?;
    if let Some(started) = &task.started {
        if started.request_id == request_id {
            return Ok(started_reply(txn, &task));
        }
        return Err(EngineError::FailedPrecondition(
            "Workflow task already started.".into(),
        ));
    }
    let event_id = if task.is_transient() {
        task.scheduled_event_id + 1
    } else {
        txn.state.next_event_id
    };
    task.started = Some(WorkflowTaskStarted {
        event_id,
        time_ns: txn.now,
        request_id,
        identity,
    });
    if !task.is_transient() {
        if let Some(event) = txn.started_event(&task) {
            let mut attributes =
                event
                    .attributes
                    .clone()
                    .unwrap_or(Attributes::WorkflowTaskStartedEventAttributes(
                        Default::default(),
                    ));
            if let Attributes::WorkflowTaskStartedEventAttributes(started) = &mut attributes {
                started.target_worker_deployment_version_changed = target_version_changed;
            }
            txn.append(attributes);
        }
    }
    txn.state.workflow_task = Some(task.clone());
    Ok(started_reply(txn, &task))
}

fn started_reply(txn: &Txn, task: &WorkflowTaskInfo) -> Reply {
    let started = task.started.as_ref();
    let transient_events = if task.is_transient() {
        std::iter::once(txn.scheduled_event(task))
            .chain(txn.started_event(task))
            .collect()
    } else {
        Vec::new()
    };
    let started_event_id = started.map_or(0, |s| s.event_id);
    Reply::WorkflowTaskStarted(Box::new(StartedWorkflowTask {
        scheduled_event_id: task.scheduled_event_id,
        started_event_id,
        attempt: task.attempt,
        previous_started_event_id: txn.state.last_completed_started_event_id,
        scheduled_time_ns: task.scheduled_time_ns,
        started_time_ns: started.map_or(0, |s| s.time_ns),
        transient_events,
        messages: update::request_messages(txn, started_event_id),
    }))
}

/// Writes the scheduled and started events of a transient or speculative task, making it an
/// ordinary one.
pub(crate) fn materialize(txn: &mut Txn, task: &mut WorkflowTaskInfo) {
    if !task.is_transient() {
        return;
    }
    let scheduled = txn.scheduled_event(task);
    let started = txn.started_event(task);
    for event in std::iter::once(scheduled).chain(started) {
        if let Some(attributes) = event.attributes {
            txn.append(attributes);
        }
    }
    task.attempt = 1;
    task.speculative = false;
    txn.state.workflow_task = Some(task.clone());
}

fn started_id(task: &WorkflowTaskInfo) -> i64 {
    task.started.as_ref().map_or(0, |s| s.event_id)
}

pub(crate) fn fail(
    txn: &mut Txn,
    scheduled_event_id: i64,
    attempt: i32,
    cause: i32,
    failure: Option<proto::failure::Failure>,
    identity: String,
) -> Result<Reply, EngineError> {
    let mut task = find_task(txn, scheduled_event_id, attempt)?;
    if task.started.is_none() {
        return Err(EngineError::NotFound("Workflow task not started.".into()));
    }
    if task.speculative {
        materialize(txn, &mut task);
    }
    let cause = Cause::try_from(cause).unwrap_or(Cause::Unspecified);
    txn.end_workflow_task_attempt(cause, failure, identity);
    txn.reschedule_workflow_task(task.attempt + 1);
    Ok(Reply::Done)
}

fn is_close(command: &command::Command) -> bool {
    matches!(
        command.attributes,
        Some(Cmd::CompleteWorkflowExecutionCommandAttributes(_))
            | Some(Cmd::FailWorkflowExecutionCommandAttributes(_))
            | Some(Cmd::CancelWorkflowExecutionCommandAttributes(_))
            | Some(Cmd::ContinueAsNewWorkflowExecutionCommandAttributes(_))
    )
}

// Deprecated fields are still sent by SDKs and still recorded by Temporal.
#[allow(deprecated)]
pub(crate) fn complete(txn: &mut Txn, mut req: CompleteWorkflowTask) -> Result<Reply, EngineError> {
    let mut task = find_task(txn, req.scheduled_event_id, req.attempt)?;
    if task.started.is_none() {
        return Err(EngineError::NotFound("Workflow task not started.".into()));
    }
    // A refused completion rolls back to here: a transient attempt then still leaves no events.
    let before = (txn.state.clone(), txn.events.len());
    let attempt = task.attempt;
    let mut messages = update::Messages::new(std::mem::take(&mut req.messages));
    if task.speculative
        && req.commands.is_empty()
        && messages.only_rejections()
        && txn.state.buffered_events.is_empty()
        && !req.force_create_new_workflow_task
    {
        // Nothing to write: the task vanishes (rejections are remembered, not written).
        txn.state.workflow_task = None;
        if let Err(error) = messages.apply_rest(txn) {
            return Ok(refuse(
                txn,
                before,
                attempt,
                req.identity,
                Cause::BadUpdateWorkflowExecutionMessage,
                error,
            ));
        }
        if update::has_unaccepted(txn) {
            txn.schedule_speculative_workflow_task();
        }
        return Ok(Reply::WorkflowTaskDiscarded {
            reset_history_event_id: txn.state.last_completed_started_event_id,
        });
    }
    materialize(txn, &mut task);
    let closes = req.commands.iter().any(is_close);
    if closes
        && (!txn.state.buffered_events.is_empty() || update::has_unaccepted_after(txn, &messages))
    {
        txn.end_workflow_task_attempt(Cause::UnhandledCommand, None, req.identity);
        txn.reschedule_workflow_task(1);
        return Ok(Reply::Done);
    }
    let completed_id = txn.append(Attributes::WorkflowTaskCompletedEventAttributes(
        completed_attributes(&task, &req),
    ));
    record_versioning(txn, &req);
    txn.state.workflow_task = None;
    txn.state.next_workflow_task_attempt = 1;
    txn.state.last_completed_started_event_id = started_id(&task);
    match &req.sticky {
        Some((queue, timeout_ms)) if !queue.is_empty() => {
            txn.state.sticky_queue = queue.clone();
            txn.state.sticky_timeout_ms = *timeout_ms;
        }
        _ => txn.clear_sticky(),
    }
    let mut needs_task = req.force_create_new_workflow_task;
    let mut eager = Vec::new();
    for command in req.commands {
        if !txn.state.is_running() {
            break;
        }
        let first_event = txn.events.len();
        let user_metadata = command.user_metadata.clone();
        let eager_activity = match &command.attributes {
            Some(Cmd::ScheduleActivityTaskCommandAttributes(a)) if a.request_eager_execution => {
                Some(a.activity_id.clone())
            }
            _ => None,
        };
        let applied = match &command.attributes {
            Some(Cmd::ProtocolMessageCommandAttributes(a)) => messages
                .apply_named(txn, &a.message_id)
                .map(|()| false)
                .map_err(|e| (Cause::BadUpdateWorkflowExecutionMessage, e)),
            _ => apply_command(txn, command, completed_id),
        };
        match applied {
            Ok(wakes) => {
                needs_task |= wakes;
                eager.extend(eager_activity);
                // The command's summary/details go on the event it produced, as in Temporal.
                if let (Some(metadata), Some(event)) =
                    (user_metadata, txn.events.get_mut(first_event))
                {
                    event.user_metadata = Some(metadata);
                }
            }
            Err((cause, error)) => {
                return Ok(refuse(txn, before, attempt, req.identity, cause, error));
            }
        }
    }
    if let Err(error) = messages.apply_rest(txn) {
        return Ok(refuse(
            txn,
            before,
            attempt,
            req.identity,
            Cause::BadUpdateWorkflowExecutionMessage,
            error,
        ));
    }
    if !txn.state.is_running() {
        return Ok(Reply::Done);
    }
    needs_task |= !txn.state.buffered_events.is_empty() || update::has_unaccepted(txn);
    txn.flush_buffered();
    let activities = start_eager_activities(txn, &eager, &req.new_task_request_id, &req.identity);
    let mut next_task = None;
    if needs_task {
        txn.schedule_workflow_task();
        if req.return_new_workflow_task {
            if let Some(next) = txn.state.workflow_task.clone() {
                next_task = Some(record_started(
                    txn,
                    next.scheduled_event_id,
                    next.attempt,
                    (req.new_task_request_id, req.identity),
                    false,
                )?);
            }
        }
    }
    if activities.is_empty() {
        return Ok(next_task.unwrap_or(Reply::Done));
    }
    let next_task = match next_task {
        Some(Reply::WorkflowTaskStarted(started)) => Some(started),
        _ => None,
    };
    Ok(Reply::EagerActivitiesStarted {
        next_task,
        activities,
    })
}

/// Starts, for the worker completing the task, the activities it scheduled asking for eager
/// execution, as Temporal does once all commands are applied: an activity the same completion
/// already canceled is left out, and so is one on another task queue than the workflow's (the
/// completing worker polls the workflow's queue, not necessarily that one).
fn start_eager_activities(
    txn: &mut Txn,
    activity_ids: &[String],
    request_id: &str,
    identity: &str,
) -> Vec<i64> {
    let mut started = Vec::new();
    for activity_id in activity_ids {
        let Some(&scheduled_event_id) = txn.state.activity_ids.get(activity_id) else {
            continue;
        };
        // Only activities on the workflow's own queue start eagerly (record_started checks).
        let request_id = format!("{request_id}-eager-{scheduled_event_id}");
        let queue = txn.state.task_queue.clone();
        let poll = (request_id, identity.to_string());
        if activity::record_started(txn, scheduled_event_id, 1, &queue, poll).is_ok() {
            started.push(scheduled_event_id);
        }
    }
    started
}

/// Refuses a completion: everything it did is rolled back to `before`, the attempt fails
/// with `cause` and the task is retried.
fn refuse(
    txn: &mut Txn,
    before: (super::MutableState, usize),
    attempt: i32,
    identity: String,
    cause: Cause,
    error: EngineError,
) -> Reply {
    txn.state = before.0;
    txn.events.truncate(before.1);
    if let Some(mut task) = txn.state.workflow_task.clone() {
        if task.speculative {
            materialize(txn, &mut task);
        }
    }
    let failure = proto::failure::Failure {
        message: error.to_string(),
        ..Default::default()
    };
    txn.end_workflow_task_attempt(cause, Some(failure), identity);
    txn.reschedule_workflow_task(attempt + 1);
    Reply::Refused(error)
}

type CommandError = (Cause, EngineError);

fn bad(cause: Cause, message: impl Into<String>) -> CommandError {
    (cause, EngineError::InvalidArgument(message.into()))
}

/// Applies one command; returns whether it needs a new workflow task.
fn apply_command(
    txn: &mut Txn,
    command: command::Command,
    completed_id: i64,
) -> Result<bool, CommandError> {
    let Some(attributes) = command.attributes else {
        return Err(bad(Cause::Unspecified, "A command has no attributes."));
    };
    match attributes {
        Cmd::ScheduleActivityTaskCommandAttributes(a) => {
            schedule_activity(txn, a, completed_id)?;
            Ok(false)
        }
        Cmd::RequestCancelActivityTaskCommandAttributes(a) => {
            activity::request_cancel(txn, a.scheduled_event_id, completed_id)
                .map_err(|e| (Cause::BadRequestCancelActivityAttributes, e))
        }
        Cmd::StartTimerCommandAttributes(a) => {
            // A zero timeout is valid (Temporal accepts it); the timer fires at once.
            let timeout_ms = proto::duration_ms(a.start_to_fire_timeout.as_ref());
            if a.timer_id.is_empty() {
                return Err(bad(Cause::BadStartTimerAttributes, "TimerId is not set."));
            }
            if txn.state.timers.contains_key(&a.timer_id) {
                return Err(bad(
                    Cause::StartTimerDuplicateId,
                    format!("Timer {} is already started.", a.timer_id),
                ));
            }
            let started_event_id = txn.append(Attributes::TimerStartedEventAttributes(
                history::TimerStartedEventAttributes {
                    timer_id: a.timer_id.clone(),
                    start_to_fire_timeout: a.start_to_fire_timeout,
                    workflow_task_completed_event_id: completed_id,
                },
            ));
            txn.state.timers.insert(
                a.timer_id,
                TimerInfo {
                    started_event_id,
                    fire_at_ns: txn.now + timeout_ms * 1_000_000,
                },
            );
            Ok(false)
        }
        Cmd::CancelTimerCommandAttributes(a) => {
            let Some(timer) = txn.state.timers.remove(&a.timer_id) else {
                return Err(bad(
                    Cause::BadCancelTimerAttributes,
                    format!("Timer {} is not pending.", a.timer_id),
                ));
            };
            txn.append(Attributes::TimerCanceledEventAttributes(
                history::TimerCanceledEventAttributes {
                    timer_id: a.timer_id,
                    started_event_id: timer.started_event_id,
                    workflow_task_completed_event_id: completed_id,
                    identity: String::new(),
                },
            ));
            Ok(false)
        }
        Cmd::CompleteWorkflowExecutionCommandAttributes(a) => {
            let new_execution_run_id =
                super::successor::start_cron_successor(txn, a.result.clone(), None);
            txn.close(
                RunStatus::Completed,
                Attributes::WorkflowExecutionCompletedEventAttributes(
                    history::WorkflowExecutionCompletedEventAttributes {
                        result: a.result,
                        workflow_task_completed_event_id: completed_id,
                        new_execution_run_id,
                    },
                ),
            );
            Ok(false)
        }
        Cmd::FailWorkflowExecutionCommandAttributes(a) => {
            super::successor::fail_run(txn, a.failure, completed_id);
            Ok(false)
        }
        Cmd::ContinueAsNewWorkflowExecutionCommandAttributes(a) => {
            super::successor::continue_as_new(txn, a, completed_id)
                .map_err(|e| (Cause::BadContinueAsNewAttributes, e))?;
            Ok(false)
        }
        Cmd::StartChildWorkflowExecutionCommandAttributes(a) => {
            super::children::start_child(txn, a, completed_id)
                .map_err(|e| (Cause::BadStartChildExecutionAttributes, e))?;
            Ok(false)
        }
        Cmd::SignalExternalWorkflowExecutionCommandAttributes(a) => {
            super::children::signal_external(txn, a, completed_id)
                .map_err(|e| (Cause::BadSignalWorkflowExecutionAttributes, e))?;
            Ok(false)
        }
        Cmd::RequestCancelExternalWorkflowExecutionCommandAttributes(a) => {
            super::children::cancel_external(txn, a, completed_id).map_err(|e| {
                (
                    Cause::BadRequestCancelExternalWorkflowExecutionAttributes,
                    e,
                )
            })?;
            Ok(false)
        }
        Cmd::CancelWorkflowExecutionCommandAttributes(a) => {
            txn.close(
                RunStatus::Canceled,
                Attributes::WorkflowExecutionCanceledEventAttributes(
                    history::WorkflowExecutionCanceledEventAttributes {
                        workflow_task_completed_event_id: completed_id,
                        details: a.details,
                    },
                ),
            );
            Ok(false)
        }
        Cmd::RecordMarkerCommandAttributes(a) => {
            if a.marker_name.is_empty() {
                return Err(bad(
                    Cause::BadRecordMarkerAttributes,
                    "MarkerName is not set on command.",
                ));
            }
            txn.append(Attributes::MarkerRecordedEventAttributes(
                history::MarkerRecordedEventAttributes {
                    marker_name: a.marker_name,
                    details: a.details,
                    workflow_task_completed_event_id: completed_id,
                    header: a.header,
                    failure: a.failure,
                },
            ));
            Ok(false)
        }
        Cmd::UpsertWorkflowSearchAttributesCommandAttributes(a) => {
            let upsert = a.search_attributes.unwrap_or_default();
            let mut current: common::SearchAttributes =
                proto::decode_opt(&txn.state.search_attributes).unwrap_or_default();
            merge_payload_map(&mut current.indexed_fields, upsert.indexed_fields.clone());
            txn.state.search_attributes = proto::encode_opt(Some(&current));
            txn.append(Attributes::UpsertWorkflowSearchAttributesEventAttributes(
                history::UpsertWorkflowSearchAttributesEventAttributes {
                    workflow_task_completed_event_id: completed_id,
                    search_attributes: Some(upsert),
                },
            ));
            Ok(false)
        }
        Cmd::ModifyWorkflowPropertiesCommandAttributes(a) => {
            let upsert = a.upserted_memo.unwrap_or_default();
            let mut current: common::Memo = proto::decode_opt(&txn.state.memo).unwrap_or_default();
            merge_payload_map(&mut current.fields, upsert.fields.clone());
            txn.state.memo = proto::encode_opt(Some(&current));
            txn.append(Attributes::WorkflowPropertiesModifiedEventAttributes(
                history::WorkflowPropertiesModifiedEventAttributes {
                    workflow_task_completed_event_id: completed_id,
                    upserted_memo: Some(upsert),
                },
            ));
            Ok(false)
        }
        other => Err((
            Cause::Unspecified,
            EngineError::Unsupported(format!(
                "Keel does not support the {} command yet.",
                command_name(&other)
            )),
        )),
    }
}

fn command_name(command: &Cmd) -> &'static str {
    match command {
        Cmd::ScheduleNexusOperationCommandAttributes(_) => "ScheduleNexusOperation",
        Cmd::RequestCancelNexusOperationCommandAttributes(_) => "RequestCancelNexusOperation",
        _ => "given",
    }
}

/// Upserts `upsert` into `current`; an empty or null payload (no data and no metadata, or
/// encoding `binary/null`) removes the key, as in Temporal.
pub(crate) fn merge_payload_map(
    current: &mut std::collections::HashMap<String, common::Payload>,
    upsert: std::collections::HashMap<String, common::Payload>,
) {
    for (key, value) in upsert {
        let null = value.metadata.get("encoding").map(Vec::as_slice) == Some(b"binary/null");
        if null || (value.data.is_empty() && value.metadata.is_empty()) {
            current.remove(&key);
        } else {
            current.insert(key, value);
        }
    }
}

#[allow(deprecated)]
fn schedule_activity(
    txn: &mut Txn,
    a: command::ScheduleActivityTaskCommandAttributes,
    completed_id: i64,
) -> Result<(), CommandError> {
    let cause = Cause::BadScheduleActivityAttributes;
    if a.activity_id.is_empty() {
        return Err(bad(cause, "ActivityId is not set on command."));
    }
    if a.activity_id.chars().count() > 1000 {
        return Err(bad(cause, "ActivityId exceeds length limit."));
    }
    let activity_type = a
        .activity_type
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    if activity_type.is_empty() {
        return Err(bad(cause, "ActivityType is not set on command."));
    }
    if txn.state.activity_ids.contains_key(&a.activity_id) {
        return Err(bad(
            Cause::ScheduleActivityDuplicateId,
            format!("Activity {} is already pending.", a.activity_id),
        ));
    }
    if txn.state.activities.len() >= txn.limits.max_pending_activities {
        return Err(bad(
            Cause::PendingActivitiesLimitExceeded,
            "The workflow has reached its limit of pending activities.",
        ));
    }
    let options = activity::requested_options(&a, &txn.state.task_queue, txn.state.run_timeout_ms)
        .map_err(|m| bad(cause, m))?;
    activity::schedule(txn, a, options, completed_id);
    Ok(())
}
