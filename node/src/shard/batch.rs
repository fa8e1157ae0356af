//! The delivery of a batch job: finds its targets with one scan, counts them, then applies its
//! operation to them in (workflow id, run id) order, a page at a time, at the job's rate,
//! reporting progress after each page. A new leader resumes after the last page reported; a
//! target handled twice (terminate, cancel) is harmless, and signals and resets carry a request
//! id per job and target.

use std::sync::Arc;
use std::time::Duration;

use super::{Op, Shard};
use crate::engine::activity_control::{batch_selector, jitter_delay_ms, ControlAction};
use crate::engine::batch::{self, BatchReport, BatchState, StartBatchOperationRequest};
use crate::engine::proto::enums::{EventType, ResetReapplyExcludeType};
use crate::engine::workflow_options::OptionsUpdate;
use crate::engine::{
    ActivityControlRequest, EngineError, MutableState, Report, Request, ResetArgs, Signal,
};
use crate::list_query::ListQuery;
use temporalio_protos::temporal::api::batch::v1::BatchOperationReset;
use temporalio_protos::temporal::api::common::v1::reset_options::Target as ResetPoint;
use temporalio_protos::temporal::api::workflowservice::v1::start_batch_operation_request::Operation;

/// Targets handled between two progress reports.
const PAGE: usize = 100;
/// Operations per second when the request names no rate (Temporal's default).
const DEFAULT_RATE: f32 = 50.0;

type Target = (String, String);

/// Runs the job of the batch run in `state` to its end (or until this node stops leading).
pub(super) async fn step(shard: &Arc<Shard>, state: &MutableState) -> Result<(), String> {
    let Some(batch) = state.batch.as_deref() else {
        return Ok(());
    };
    let request = batch::request_of(batch);
    // One scan per attempt: the targets left after the cursor (all of them, before counting).
    let remaining = targets(shard, state, batch, &request, batch.cursor.as_ref()).await?;
    if batch.total.is_none() {
        let total = remaining.len() as i64;
        report(shard, state, BatchReport::Counted { total }).await?;
    }
    let rate = if request.max_operations_per_second > 0.0 {
        request.max_operations_per_second
    } else {
        DEFAULT_RATE
    };
    let pause = Duration::from_secs_f32(1.0 / rate.clamp(0.1, 10_000.0));
    for page in remaining.chunks(PAGE) {
        if !shard.leads() {
            return Err("this node no longer leads the batch job's shard".into());
        }
        let (mut completed, mut failed) = (0, 0);
        for target in page {
            if !still_running(shard, state)? {
                // Stopped (StopBatchOperation terminated the job): leave the rest alone.
                return Ok(());
            }
            match apply(shard, state, &request, target).await {
                Ok(()) => completed += 1,
                Err(error) => {
                    tracing::debug!(job_id = %state.workflow_id, workflow_id = %target.0, %error, "a batch operation failed");
                    failed += 1;
                }
            }
            tokio::time::sleep(pause).await;
        }
        let Some(last) = page.last() else {
            continue;
        };
        let progress = BatchReport::Progress {
            cursor: last.clone(),
            completed,
            failed,
        };
        report(shard, state, progress).await?;
    }
    report(shard, state, BatchReport::Done).await
}

/// Resets one target to the workflow task the job's options name (the first or last completed
/// one, or an event id), as ResetWorkflowExecution would; a retry answers the run it created.
async fn reset_target(
    shard: &Arc<Shard>,
    state: &MutableState,
    request: &StartBatchOperationRequest,
    reset: &BatchOperationReset,
    (workflow_id, run_id): (&String, &String),
) -> Result<(), String> {
    let options = reset.options.clone().unwrap_or_default();
    let target = shard.peer(&state.namespace_id, workflow_id)?;
    target.barrier().await.map_err(|e| e.to_string())?;
    let run = target
        .load_state(&state.namespace_id, workflow_id, run_id)
        .map_err(|e| e.to_string())?
        .ok_or("the workflow is gone")?;
    if options.current_run_only {
        let current = target
            .current_run(&state.namespace_id, workflow_id)
            .map_err(|e| e.to_string())?;
        if current.as_deref() != Some(run.run_id.as_str()) {
            return Err("not the current run, and the job resets current runs only".into());
        }
    }
    let completed = || -> Result<Vec<i64>, String> {
        let events = target
            .read_events(&run, 1, run.next_event_id, usize::MAX)
            .map_err(|e| e.to_string())?;
        Ok(events
            .iter()
            .filter(|e| e.event_type == EventType::WorkflowTaskCompleted as i32)
            .map(|e| e.event_id)
            .collect())
    };
    let finish = match options.target {
        Some(ResetPoint::FirstWorkflowTask(_)) => completed()?.first().copied(),
        Some(ResetPoint::LastWorkflowTask(_)) => completed()?.last().copied(),
        Some(ResetPoint::WorkflowTaskId(id)) => Some(id),
        Some(ResetPoint::BuildId(_)) | None => None,
    }
    .ok_or("no workflow task to reset to")?;
    let args = ResetArgs {
        new_run_id: uuid::Uuid::now_v7().to_string(),
        request_id: format!("{}-{workflow_id}-{}", state.workflow_id, run.run_id),
        reason: request.reason.clone(),
        workflow_task_finish_event_id: finish,
        reapply_signals: !options
            .reset_reapply_exclude_types
            .contains(&(ResetReapplyExcludeType::Signal as i32)),
    };
    let op = Op::Reset {
        run_id: run.run_id.clone(),
        args,
    };
    target
        .submit(&state.namespace_id, workflow_id, op)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The activity control a batch activity operation applies to each target (`random` draws its
/// jitter); None for other operations, an error when it names no activities.
pub fn batch_activity_control(
    operation: &Operation,
    random: u128,
) -> Option<Result<ActivityControlRequest, &'static str>> {
    use temporalio_protos::temporal::api::batch::v1::{
        batch_operation_reset_activities as reset, batch_operation_unpause_activities as unpause,
        batch_operation_update_activity_options as update,
    };
    let jitter = |d: Option<&prost_wkt_types::Duration>| {
        jitter_delay_ms(crate::engine::proto::duration_ms(d), random)
    };
    let (activity, action) = match operation {
        Operation::UnpauseActivitiesOperation(u) => (
            match &u.activity {
                Some(unpause::Activity::Type(t)) => batch_selector(Some(t), false),
                Some(unpause::Activity::MatchAll(all)) => batch_selector(None, *all),
                None => None,
            },
            ControlAction::Unpause {
                reset_attempts: u.reset_attempts,
                reset_heartbeat: u.reset_heartbeat,
                delay_ms: jitter(u.jitter.as_ref()),
            },
        ),
        Operation::ResetActivitiesOperation(r) => (
            match &r.activity {
                Some(reset::Activity::Type(t)) => batch_selector(Some(t), false),
                Some(reset::Activity::MatchAll(all)) => batch_selector(None, *all),
                None => None,
            },
            ControlAction::Reset {
                reset_heartbeat: r.reset_heartbeat,
                keep_paused: r.keep_paused,
                restore_original: r.restore_original_options,
                delay_ms: jitter(r.jitter.as_ref()),
            },
        ),
        Operation::UpdateActivityOptionsOperation(u) => (
            match &u.activity {
                Some(update::Activity::Type(t)) => batch_selector(Some(t), false),
                Some(update::Activity::MatchAll(all)) => batch_selector(None, *all),
                None => None,
            },
            if u.restore_original {
                ControlAction::RestoreOptions
            } else {
                ControlAction::UpdateOptions {
                    options: Box::new(u.activity_options.clone().unwrap_or_default()),
                    paths: u
                        .update_mask
                        .as_ref()
                        .map(|m| m.paths.clone())
                        .unwrap_or_default(),
                }
            },
        ),
        _ => return None,
    };
    Some(
        activity
            .map(|selector| ActivityControlRequest { selector, action })
            .ok_or("Either the activity type or match_all must be set on the batch operation."),
    )
}

/// The options update of a batch update-options operation (None for other operations).
pub fn batch_options_update(
    operation: &Operation,
    queues_of: impl FnOnce(&str, &str) -> Vec<String>,
) -> Option<Result<OptionsUpdate, EngineError>> {
    let Operation::UpdateWorkflowOptionsOperation(u) = operation else {
        return None;
    };
    Some(OptionsUpdate::from_request(
        u.workflow_execution_options.clone(),
        u.update_mask.as_ref().map(|m| m.paths.clone()),
        u.identity.clone(),
        queues_of,
    ))
}

/// Whether the job's operation concerns `run` beyond its query: unpausing activities of a type
/// targets only runs with such a paused activity (Temporal narrows the query by
/// `TemporalPauseInfo`).
fn concerns(request: &StartBatchOperationRequest, run: &MutableState) -> bool {
    use temporalio_protos::temporal::api::batch::v1::batch_operation_unpause_activities::Activity;
    match &request.operation {
        Some(Operation::UnpauseActivitiesOperation(u)) => match &u.activity {
            Some(Activity::Type(name)) => run.activities.values().any(|a| {
                &a.activity_type == name
                    && crate::engine::activity_control::paused(run, a.scheduled_event_id)
            }),
            _ => true,
        },
        _ => true,
    }
}

/// True while the job's run is open in this replica's applied state.
fn still_running(shard: &Shard, state: &MutableState) -> Result<bool, String> {
    shard
        .run_progress(&state.namespace_id, &state.workflow_id, &state.run_id)
        .map(|progress| progress.is_some_and(|p| p.running))
        .map_err(|e| e.to_string())
}

async fn report(
    shard: &Arc<Shard>,
    state: &MutableState,
    report: BatchReport,
) -> Result<(), String> {
    super::transfer::report_home(shard, state, Report::Batch(report)).await
}

/// The targets after `after`, in order: the request's explicit executions, or the runs the
/// job's query selects among those started before the job (never runs of schedules or batch
/// jobs).
async fn targets(
    shard: &Arc<Shard>,
    state: &MutableState,
    batch: &BatchState,
    request: &StartBatchOperationRequest,
    after: Option<&Target>,
) -> Result<Vec<Target>, String> {
    let beyond = |target: &Target| after.is_none_or(|after| target > after);
    #[allow(deprecated)]
    let explicit: Vec<Target> = request
        .executions
        .iter()
        .map(|e| (e.workflow_id.clone(), e.run_id.clone()))
        .collect();
    let mut found: Vec<Target> = if explicit.is_empty() {
        let custom = shard
            .context
            .namespaces
            .search_attributes(&state.namespace_id)
            .map_err(|e| e.to_string())?;
        let query = ListQuery::parse(&batch.query, &custom).map_err(|e| e.to_string())?;
        let shards = shard
            .context
            .shards
            .get()
            .ok_or("the node's shards are not registered yet")?;
        let mut found = Vec::new();
        for peer in shards.iter().filter_map(std::sync::Weak::upgrade) {
            peer.barrier().await.map_err(|e| e.to_string())?;
            peer.scan_states(&state.namespace_id, |run| {
                let target = (run.workflow_id.clone(), run.run_id.clone());
                // Runs started after the job are not its targets: a reset's new runs would
                // otherwise match again, beyond the cursor.
                if run.namespace_division().is_none()
                    && run.activity_execution.is_none()
                    && run.start_time_ns <= state.start_time_ns
                    && beyond(&target)
                    && query.matches(&run)
                    && concerns(request, &run)
                {
                    found.push(target);
                }
                true
            })
            .map_err(|e| e.to_string())?;
        }
        found
    } else {
        explicit.into_iter().filter(beyond).collect()
    };
    found.sort();
    found.dedup();
    Ok(found)
}

/// Applies the job's operation to one target.
async fn apply(
    shard: &Arc<Shard>,
    state: &MutableState,
    request: &StartBatchOperationRequest,
    (workflow_id, run_id): &Target,
) -> Result<(), String> {
    let run_id = run_id.clone();
    let run = |request| Op::Run {
        run_id: run_id.clone(),
        request,
    };
    let op = match &request.operation {
        Some(Operation::TerminationOperation(t)) => run(Request::Terminate {
            reason: request.reason.clone(),
            details: t.details.clone(),
            identity: t.identity.clone(),
        }),
        Some(Operation::CancellationOperation(c)) => run(Request::Cancel {
            reason: request.reason.clone(),
            identity: c.identity.clone(),
            external: None,
        }),
        Some(Operation::SignalOperation(s)) => run(Request::Signal(Signal {
            name: s.signal.clone(),
            input: s.input.clone(),
            identity: s.identity.clone(),
            header: s.header.clone(),
            request_id: format!("{}-{workflow_id}-{run_id}", state.workflow_id),
            external: None,
        })),
        Some(Operation::ResetOperation(reset)) => {
            return reset_target(shard, state, request, reset, (workflow_id, &run_id)).await
        }
        Some(Operation::DeletionOperation(_)) => Op::Delete {
            run_id: run_id.clone(),
            expired_at_ns: None,
        },
        Some(operation @ Operation::UpdateWorkflowOptionsOperation(_)) => {
            let deployments = &shard.context.deployments;
            let queues_of = |name: &str, build_id: &str| {
                deployments.workflow_queues(&state.namespace_id, name, build_id)
            };
            match batch_options_update(operation, queues_of) {
                Some(update) => run(Request::UpdateOptions(Box::new(
                    update.map_err(|e| e.to_string())?,
                ))),
                None => return Err("the batch operation is not supported".into()),
            }
        }
        Some(operation) => {
            match batch_activity_control(operation, uuid::Uuid::new_v4().as_u128()) {
                Some(control) => run(Request::ActivityControl(Box::new(control?))),
                None => return Err("the batch operation is not supported".into()),
            }
        }
        None => return Err("the batch operation is not set".into()),
    };
    let target = shard.peer(&state.namespace_id, workflow_id)?;
    target
        .submit(&state.namespace_id, workflow_id, op)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
