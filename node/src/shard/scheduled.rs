//! Deliveries of a schedule's run: starting an action's workflow, watching it until its chain
//! closes, and cancelling or terminating it when the overlap policy asks. Like every delivery
//! they are at least once: starts are deduplicated by their request id, reports by the engine.

use std::sync::Arc;
use std::time::Duration;

use super::{Op, OpResult, Shard, ShardError};
use crate::engine::proto::{self, enums, Attributes};
use crate::engine::schedule::{self, sched, ScheduleReport};
use crate::engine::{MutableState, Report, Request, RunStatus, StartArgs};

/// Longest one watch waits for a change before checking it still leads the shard.
const WATCH_WAIT: Duration = Duration::from_secs(10);

/// Sends a schedule report to the schedule's own run.
async fn report(
    shard: &Arc<Shard>,
    state: &MutableState,
    report: ScheduleReport,
) -> Result<(), String> {
    super::transfer::report_home(shard, state, Report::Schedule(report)).await
}

/// Starts the workflow of action `seq`.
pub(super) async fn start(
    shard: &Arc<Shard>,
    state: &MutableState,
    seq: u64,
) -> Result<(), String> {
    let Some(schedule_state) = state.schedule.as_deref() else {
        return Ok(());
    };
    let Some(action) = schedule_state.starting.iter().find(|a| a.seq == seq) else {
        return Ok(());
    };
    let schedule = schedule::schedule_of(schedule_state);
    let Some(sched::schedule_action::Action::StartWorkflow(start)) =
        schedule.action.as_ref().and_then(|a| a.action.clone())
    else {
        return report(shard, state, ScheduleReport::StartFailed { seq }).await;
    };
    let workflow_id =
        schedule::action_workflow_id(&schedule, &start.workflow_id, action.nominal_ns);
    let mut search_attributes = start.search_attributes.unwrap_or_default();
    schedule::add_scheduled_attributes(
        &mut search_attributes,
        &schedule_state.schedule_id,
        action.nominal_ns,
    );
    let args = StartArgs {
        namespace_id: state.namespace_id.clone(),
        workflow_id: workflow_id.clone(),
        run_id: uuid::Uuid::now_v7().to_string(),
        request_id: schedule::action_request_id(state, seq),
        workflow_type: start.workflow_type.map(|t| t.name).unwrap_or_default(),
        task_queue: start.task_queue.map(|q| q.name).unwrap_or_default(),
        input: start.input,
        execution_timeout: start.workflow_execution_timeout,
        run_timeout: start.workflow_run_timeout,
        task_timeout: start.workflow_task_timeout,
        identity: "temporal-scheduler".to_string(),
        retry_policy: start.retry_policy,
        memo: start.memo,
        search_attributes: Some(search_attributes),
        header: start.header,
        priority: start.priority,
        user_metadata: start.user_metadata,
        last_completion_result: proto::decode_opt(&schedule_state.last_completion_result),
        continued_failure: proto::decode_opt(&schedule_state.last_failure),
        ..Default::default()
    };
    let target = shard.peer(&state.namespace_id, &workflow_id)?;
    let op = Op::Start {
        args: Box::new(args),
        reuse_policy: enums::WorkflowIdReusePolicy::AllowDuplicate as i32,
        conflict_policy: enums::WorkflowIdConflictPolicy::Fail as i32,
        signal_if_running: None,
        update: None,
    };
    let outcome = match target.submit(&state.namespace_id, &workflow_id, op).await {
        Ok(OpResult::Started { run_id, .. }) => ScheduleReport::Started {
            seq,
            workflow_id,
            run_id,
        },
        Ok(OpResult::Reply { .. }) => return Err("unexpected reply to a scheduled start".into()),
        Err(error @ (ShardError::Unavailable { .. } | ShardError::Corrupt { .. })) => {
            return Err(error.to_string())
        }
        Err(error) => {
            tracing::warn!(
                schedule_id = %schedule_state.schedule_id,
                %workflow_id,
                %error,
                "a schedule's workflow could not start"
            );
            ScheduleReport::StartFailed { seq }
        }
    };
    report(shard, state, outcome).await
}

/// Waits until the workflow of action `seq` (its whole chain: retries and continue-as-new
/// follow it) is closed, then reports how it closed. Gives up, to be retried, when this node
/// no longer leads the schedule's shard.
pub(super) async fn watch(
    shard: &Arc<Shard>,
    state: &MutableState,
    seq: u64,
) -> Result<(), String> {
    let Some(run) = state.schedule.as_deref().and_then(|s| s.running(seq)) else {
        return Ok(());
    };
    let target = shard.peer(&state.namespace_id, &run.workflow_id)?;
    let mut run_id = run.run_id.clone();
    loop {
        if !shard.leads() {
            return Err("this node no longer leads the schedule's shard".into());
        }
        target.barrier().await.map_err(|e| e.to_string())?;
        let mut changes = target.watch_run(&state.namespace_id, &run.workflow_id, &run_id);
        changes.mark_seen();
        let Some(current) = target
            .load_state(&state.namespace_id, &run.workflow_id, &run_id)
            .map_err(|e| e.to_string())?
        else {
            // Gone (deleted): nothing left to wait for.
            let closed = ScheduleReport::Closed {
                seq,
                status: enums::WorkflowExecutionStatus::Terminated as i32,
                result: Vec::new(),
                failure: Vec::new(),
            };
            return report(shard, state, closed).await;
        };
        if current.status != RunStatus::Running {
            if !current.successor_run_id.is_empty() {
                run_id = current.successor_run_id.clone();
                continue;
            }
            let close = target
                .read_events(
                    &current,
                    current.close_event_id,
                    current.close_event_id + 1,
                    1,
                )
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .and_then(|event| event.attributes);
            let (result, failure) = match close {
                Some(Attributes::WorkflowExecutionCompletedEventAttributes(a)) => {
                    (proto::encode_opt(a.result.as_ref()), Vec::new())
                }
                Some(Attributes::WorkflowExecutionFailedEventAttributes(a)) => {
                    (Vec::new(), proto::encode_opt(a.failure.as_ref()))
                }
                _ => (Vec::new(), Vec::new()),
            };
            let closed = ScheduleReport::Closed {
                seq,
                status: current.status.execution_status() as i32,
                result,
                failure,
            };
            return report(shard, state, closed).await;
        }
        let _ = tokio::time::timeout(WATCH_WAIT, changes.changed()).await;
    }
}

/// Cancels or terminates the workflow of action `seq`, as its overlap policy asked.
pub(super) async fn stop(shard: &Arc<Shard>, state: &MutableState, seq: u64) -> Result<(), String> {
    let Some(run) = state.schedule.as_deref().and_then(|s| s.running(seq)) else {
        return Ok(());
    };
    let Some(stop) = run.stop else {
        return Ok(());
    };
    let request = if stop.terminate {
        Request::Terminate {
            reason: "terminated by schedule overlap policy".to_string(),
            details: None,
            identity: "temporal-scheduler".to_string(),
        }
    } else {
        Request::Cancel {
            reason: "cancelled by schedule overlap policy".to_string(),
            identity: "temporal-scheduler".to_string(),
            external: None,
        }
    };
    // The current run of the chain (empty run id), as Temporal's scheduler does.
    let target = shard.peer(&state.namespace_id, &run.workflow_id)?;
    let op = Op::Run {
        run_id: String::new(),
        request,
    };
    super::transfer::classify(
        target
            .submit(&state.namespace_id, &run.workflow_id, op)
            .await,
    )?;
    report(shard, state, ScheduleReport::StopSent { seq }).await
}
