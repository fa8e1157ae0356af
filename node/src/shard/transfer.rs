//! Deliveries between runs (child starts and closes, external signals and cancels, parent close
//! policies), run by a shard leader after commit. Each is derived from a run's committed state
//! ([`engine::transfers`]), so a new leader finds them again; each is delivered at least once,
//! retried with backoff while this node leads the shard, and deduplicated by its receiver (start
//! and signal request ids; the engine ignores reports it has taken).

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use super::{Op, OpResult, Shard, ShardError};
use crate::engine::proto::{command, common, enums};
use crate::engine::state::{ExternalAction, ParentInfo};
use crate::engine::{
    self, delivery_request_id, EngineError, ExternalSource, MutableState, Report, Request, Signal,
    StartArgs, Transfer,
};

/// Longest pause between attempts of one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a delivery attempt came to.
enum Attempt {
    /// Delivered and reported; nothing more to do.
    Done,
    /// Failed for now (no leader, a node down): try again later.
    Retry(String),
}

/// Starts delivering `transfer` of the run in `state`, unless that delivery is already running
/// (checked before anything is copied: this runs after every commit that touches the run).
pub(crate) fn start_delivery(shard: &Arc<Shard>, state: &MutableState, transfer: Transfer) {
    let key = (
        state.namespace_id.clone(),
        state.run_id.clone(),
        transfer.clone(),
    );
    if !shard.deliveries_lock().insert(key.clone()) {
        return;
    }
    tokio::spawn(deliver(shard.clone(), state.clone(), transfer, key));
}

/// Delivers `transfer`, retrying until it is done or this node no longer leads the shard.
async fn deliver(shard: Arc<Shard>, state: MutableState, transfer: Transfer, key: super::Delivery) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt(&shard, &state, &transfer).await {
            Attempt::Done => break,
            Attempt::Retry(reason) => {
                tracing::debug!(
                    shard = shard.id,
                    workflow_id = %state.workflow_id,
                    run_id = %state.run_id,
                    ?transfer,
                    %reason,
                    "delivery will be retried"
                );
                if !shard.leads() {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    shard.deliveries_lock().remove(&key);
}

/// Outcome of a submit to another run: `Ok(Some)` delivered, `Ok(None)` the target refused
/// for good (not found, closed), `Err` retry.
pub(super) fn classify<T>(result: Result<T, ShardError>) -> Result<Option<T>, String> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ShardError::Engine(
            EngineError::NotFound(_) | EngineError::Closed | EngineError::NoChange,
        )) => Ok(None),
        Err(ShardError::Engine(error)) => {
            tracing::warn!(%error, "a delivery was refused");
            Ok(None)
        }
        Err(error) => Err(error.to_string()),
    }
}

async fn attempt(shard: &Arc<Shard>, state: &MutableState, transfer: &Transfer) -> Attempt {
    let result = match transfer {
        Transfer::StartChild { initiated_event_id } => {
            start_child(shard, state, *initiated_event_id).await
        }
        Transfer::ApplyParentClosePolicy { initiated_event_id } => {
            apply_close_policy(shard, state, *initiated_event_id).await
        }
        Transfer::External { initiated_event_id } => {
            external(shard, state, *initiated_event_id).await
        }
        Transfer::NotifyParent => notify_parent(shard, state).await,
        Transfer::ScheduleStart { seq } => super::scheduled::start(shard, state, *seq).await,
        Transfer::ScheduleWatch { seq } => super::scheduled::watch(shard, state, *seq).await,
        Transfer::ScheduleStop { seq } => super::scheduled::stop(shard, state, *seq).await,
        Transfer::BatchStep => super::batch::step(shard, state).await,
        Transfer::DeleteRun => delete_run(shard, state).await,
    };
    match result {
        Ok(()) => Attempt::Done,
        Err(reason) => Attempt::Retry(reason),
    }
}

/// How long after its close a run marked for deletion is kept: callers waiting on it (a
/// result long poll woken by the close) read the close before the run is gone.
const DELETE_GRACE_NS: i64 = 2_000_000_000;

/// Deletes the run, now that it is closed and nothing else is owed for it.
async fn delete_run(shard: &Arc<Shard>, state: &MutableState) -> Result<(), String> {
    let closed_ns = state.close_time_ns.unwrap_or(0);
    let wait = closed_ns.saturating_add(DELETE_GRACE_NS) - shard.context.clock.now_ns();
    if let Ok(wait) = u64::try_from(wait) {
        tokio::time::sleep(Duration::from_nanos(wait)).await;
    }
    let op = Op::Delete {
        run_id: state.run_id.clone(),
        expired_at_ns: None,
    };
    classify(
        shard
            .submit(&state.namespace_id, &state.workflow_id, op)
            .await,
    )
    .map(|_| ())
}

/// Reports `report` to the run `(namespace_id, workflow_id, run_id)`.
async fn report_to(
    shard: &Arc<Shard>,
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
    report: Report,
) -> Result<(), String> {
    let target = shard.peer(namespace_id, workflow_id)?;
    let op = Op::Run {
        run_id: run_id.to_string(),
        request: Request::Report(report),
    };
    classify(target.submit(namespace_id, workflow_id, op).await).map(|_| ())
}

pub(super) async fn report_home(
    shard: &Arc<Shard>,
    state: &MutableState,
    report: Report,
) -> Result<(), String> {
    report_to(
        shard,
        &state.namespace_id,
        &state.workflow_id,
        &state.run_id,
        report,
    )
    .await
}

/// The namespace (name, id) a command names (empty: the run's own).
fn resolve_namespace(
    shard: &Shard,
    state: &MutableState,
    name: &str,
) -> Result<Option<(String, String)>, String> {
    let namespaces = &shard.context.namespaces;
    if name.is_empty() {
        return Ok(namespaces
            .by_id(&state.namespace_id)
            .map(|n| (n.name, n.id))
            .or_else(|| Some((String::new(), state.namespace_id.clone()))));
    }
    Ok(namespaces.by_name(name).map(|n| (n.name, n.id)))
}

#[allow(deprecated)]
async fn start_child(
    shard: &Arc<Shard>,
    state: &MutableState,
    initiated: i64,
) -> Result<(), String> {
    let Some(child) = state.children.get(&initiated) else {
        return Ok(());
    };
    let Some(namespace) = resolve_namespace(shard, state, &child.namespace)? else {
        let report = Report::ChildStartFailed {
            initiated_event_id: initiated,
            cause: enums::StartChildWorkflowExecutionFailedCause::NamespaceNotFound as i32,
        };
        return report_home(shard, state, report).await;
    };
    let a = command::StartChildWorkflowExecutionCommandAttributes::decode(child.command.as_slice())
        .map_err(|e| format!("undecodable child command: {e}"))?;
    let parent_namespace = resolve_namespace(shard, state, "")?.unwrap_or_default();
    let task_queue = a.task_queue.map(|q| q.name).unwrap_or_default();
    let (inherited_versioning, versioning_override) = match a.versioning_override {
        Some(versioning_override) => (None, Some(versioning_override)),
        None => crate::engine::inherited_versioning(
            state,
            &namespace.1,
            &task_queue,
            |deployment, build_id, queue| {
                shard
                    .context
                    .deployments
                    .workflow_queues(&namespace.1, deployment, build_id)
                    .iter()
                    .any(|q| q == queue)
            },
        ),
    };
    let args = StartArgs {
        namespace_id: namespace.1.clone(),
        workflow_id: child.workflow_id.clone(),
        run_id: uuid::Uuid::now_v7().to_string(),
        request_id: delivery_request_id(state, initiated),
        workflow_type: child.workflow_type.clone(),
        task_queue,
        input: a.input,
        execution_timeout: a.workflow_execution_timeout,
        run_timeout: a.workflow_run_timeout,
        task_timeout: a.workflow_task_timeout,
        identity: String::new(),
        retry_policy: a.retry_policy,
        memo: a.memo,
        search_attributes: a.search_attributes,
        header: a.header,
        priority: a.priority,
        cron_schedule: a.cron_schedule,
        parent: Some(ParentInfo {
            namespace_id: state.namespace_id.clone(),
            namespace: parent_namespace.0,
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
            initiated_event_id: initiated,
            root: state
                .parent
                .as_ref()
                .map(|p| p.root.clone())
                .unwrap_or_else(|| (state.workflow_id.clone(), state.run_id.clone())),
        }),
        inherited_versioning,
        versioning_override,
        ..Default::default()
    };
    let target = shard.peer(&namespace.1, &child.workflow_id)?;
    let op = Op::Start {
        args: Box::new(args),
        reuse_policy: a.workflow_id_reuse_policy,
        conflict_policy: enums::WorkflowIdConflictPolicy::Fail as i32,
        signal_if_running: None,
        update: None,
    };
    let report = match target.submit(&namespace.1, &child.workflow_id, op).await {
        Ok(OpResult::Started { run_id, .. }) => Report::ChildStarted {
            initiated_event_id: initiated,
            run_id,
            namespace,
        },
        Ok(OpResult::Reply { .. }) => return Err("unexpected reply to a child start".into()),
        Err(ShardError::AlreadyStarted { .. }) => Report::ChildStartFailed {
            initiated_event_id: initiated,
            cause: enums::StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists as i32,
        },
        Err(error @ (ShardError::Unavailable { .. } | ShardError::Corrupt { .. })) => {
            return Err(error.to_string())
        }
        Err(ShardError::Engine(error)) => {
            tracing::warn!(%error, workflow_id = %child.workflow_id, "a child workflow could not start");
            Report::ChildStartFailed {
                initiated_event_id: initiated,
                cause: enums::StartChildWorkflowExecutionFailedCause::Unspecified as i32,
            }
        }
    };
    report_home(shard, state, report).await
}

async fn apply_close_policy(
    shard: &Arc<Shard>,
    state: &MutableState,
    initiated: i64,
) -> Result<(), String> {
    let Some(child) = state.children.get(&initiated) else {
        return Ok(());
    };
    let (Some(run_id), Some(namespace)) = (
        child.started_run_id.clone(),
        resolve_namespace(shard, state, &child.namespace)?,
    ) else {
        return Ok(());
    };
    let request = if child.parent_close_policy == enums::ParentClosePolicy::RequestCancel as i32 {
        Request::Cancel {
            reason: "by parent close policy".to_string(),
            identity: "history-service".to_string(),
            external: None,
        }
    } else {
        Request::Terminate {
            reason: "by parent close policy".to_string(),
            details: None,
            identity: "history-service".to_string(),
        }
    };
    // The policy reaches whichever run of the child's chain is current.
    let target = shard.peer(&namespace.1, &child.workflow_id)?;
    let current = match target.current_run(&namespace.1, &child.workflow_id) {
        Ok(Some(current)) => current,
        Ok(None) => run_id,
        Err(error) => return Err(error.to_string()),
    };
    let op = Op::Run {
        run_id: current,
        request,
    };
    classify(target.submit(&namespace.1, &child.workflow_id, op).await)?;
    report_home(
        shard,
        state,
        Report::ParentClosePolicyApplied {
            initiated_event_id: initiated,
        },
    )
    .await
}

async fn external(shard: &Arc<Shard>, state: &MutableState, initiated: i64) -> Result<(), String> {
    let Some(request) = state.external_requests.get(&initiated) else {
        return Ok(());
    };
    let not_found = match &request.action {
        ExternalAction::Signal { .. } => {
            enums::SignalExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound
                as i32
        }
        ExternalAction::Cancel { .. } => {
            enums::CancelExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound
                as i32
        }
    };
    let Some(namespace) = resolve_namespace(shard, state, &request.namespace)? else {
        let report = Report::ExternalDone {
            initiated_event_id: initiated,
            namespace: (request.namespace.clone(), String::new()),
            failure_cause: Some(not_found),
        };
        return report_home(shard, state, report).await;
    };
    let source = ExternalSource {
        initiated_event_id: initiated,
        execution: common::WorkflowExecution {
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
        },
    };
    let engine_request = match &request.action {
        ExternalAction::Signal {
            signal_name,
            input,
            header,
        } => Request::Signal(Signal {
            name: signal_name.clone(),
            input: engine::proto::decode_opt::<common::Payloads>(input),
            identity: String::new(),
            header: engine::proto::decode_opt(header),
            request_id: delivery_request_id(state, initiated),
            external: Some(source.clone()),
        }),
        ExternalAction::Cancel { reason } => Request::Cancel {
            reason: reason.clone(),
            identity: "history-service".to_string(),
            external: Some(source),
        },
    };
    let target = shard.peer(&namespace.1, &request.workflow_id)?;
    let op = Op::Run {
        run_id: request.run_id.clone(),
        request: engine_request,
    };
    let delivered = classify(target.submit(&namespace.1, &request.workflow_id, op).await)?;
    let report = Report::ExternalDone {
        initiated_event_id: initiated,
        namespace,
        failure_cause: delivered.is_none().then_some(not_found),
    };
    report_home(shard, state, report).await
}

async fn notify_parent(shard: &Arc<Shard>, state: &MutableState) -> Result<(), String> {
    let Some(parent) = &state.parent else {
        return Ok(());
    };
    let close = shard
        .read_events(state, state.close_event_id, state.close_event_id + 1, 1)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .and_then(|event| event.attributes);
    let Some(close) = close else {
        return Err(format!(
            "the close event {} is not readable yet",
            state.close_event_id
        ));
    };
    let namespace = resolve_namespace(shard, state, "")?.unwrap_or_default();
    let report = Report::ChildClosed {
        initiated_event_id: parent.initiated_event_id,
        run_id: state.run_id.clone(),
        namespace,
        close: Box::new(close),
    };
    report_to(
        shard,
        &parent.namespace_id,
        &parent.workflow_id,
        &parent.run_id,
        report,
    )
    .await?;
    report_home(shard, state, Report::ParentNotified).await
}
