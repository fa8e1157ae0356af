//! Read-side shapes: workflow descriptions, visibility rows, namespace descriptions.

use temporalio_protos::temporal::api::activity::v1 as activity;
use temporalio_protos::temporal::api::namespace::v1 as namespace;
use temporalio_protos::temporal::api::taskqueue::v1 as taskqueue;
use temporalio_protos::temporal::api::workflow::v1 as workflow;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;

use crate::engine::proto::{self, common, enums};
use crate::engine::state::{ActivityInfo, ActivityOptions};
use crate::engine::MutableState;
use crate::namespaces::NamespaceRecord;

/// The run's visibility row.
pub fn execution_info(state: &MutableState) -> workflow::WorkflowExecutionInfo {
    workflow::WorkflowExecutionInfo {
        execution: Some(common::WorkflowExecution {
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
        }),
        r#type: Some(common::WorkflowType {
            name: state.workflow_type.clone(),
        }),
        start_time: Some(proto::timestamp(state.start_time_ns)),
        close_time: state.close_time_ns.map(proto::timestamp),
        status: state.status.execution_status() as i32,
        history_length: state.next_event_id - 1,
        execution_time: Some(proto::timestamp(state.execution_time_ns)),
        memo: proto::decode_opt(&state.memo),
        search_attributes: proto::decode_opt(&state.search_attributes),
        task_queue: state.task_queue.clone(),
        state_transition_count: state.next_event_id - 1,
        history_size_bytes: state.history_size_bytes,
        execution_duration: state
            .close_time_ns
            .and_then(|close| proto::duration((close - state.start_time_ns) / 1_000_000)),
        first_run_id: state.first_execution_run_id.clone(),
        parent_namespace_id: state
            .parent
            .as_ref()
            .map(|p| p.namespace_id.clone())
            .unwrap_or_default(),
        parent_execution: state.parent.as_ref().map(|p| common::WorkflowExecution {
            workflow_id: p.workflow_id.clone(),
            run_id: p.run_id.clone(),
        }),
        root_execution: Some(match &state.parent {
            Some(parent) => common::WorkflowExecution {
                workflow_id: parent.root.0.clone(),
                run_id: parent.root.1.clone(),
            },
            None => common::WorkflowExecution {
                workflow_id: state.workflow_id.clone(),
                run_id: state.run_id.clone(),
            },
        }),
        versioning_info: state.versioning.as_deref().map(versioning_info),
        worker_deployment_name: state
            .versioning
            .as_ref()
            .map(|v| v.deployment_name.clone())
            .unwrap_or_default(),
        priority: proto::decode_opt(&state.priority),
        ..Default::default()
    }
}

/// The run's worker versioning, as Temporal describes it.
#[allow(deprecated)]
fn versioning_info(
    versioning: &crate::engine::state::RunVersioning,
) -> workflow::WorkflowExecutionVersioningInfo {
    let version = (!versioning.build_id.is_empty()).then(|| {
        temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentVersion {
            build_id: versioning.build_id.clone(),
            deployment_name: versioning.deployment_name.clone(),
        }
    });
    workflow::WorkflowExecutionVersioningInfo {
        behavior: versioning.behavior,
        version: version
            .as_ref()
            .map(|v| crate::deployments::lane_of(&v.deployment_name, &v.build_id))
            .unwrap_or_default(),
        deployment_version: version,
        versioning_override: versioning.versioning_override.clone(),
        ..Default::default()
    }
}

/// The options an activity runs with, as Temporal shows them.
pub fn activity_options(options: &ActivityOptions) -> activity::ActivityOptions {
    activity::ActivityOptions {
        task_queue: Some(taskqueue::TaskQueue {
            normal_name: options.task_queue.clone(),
            ..proto::task_queue(&options.task_queue)
        }),
        schedule_to_close_timeout: proto::duration(options.schedule_to_close_ms),
        schedule_to_start_timeout: proto::duration(options.schedule_to_start_ms),
        start_to_close_timeout: proto::duration(options.start_to_close_ms),
        heartbeat_timeout: proto::duration(options.heartbeat_ms),
        retry_policy: Some(crate::engine::retry_policy_proto(&options.retry)),
        priority: proto::decode_opt(&options.priority),
        start_delay: None,
    }
}

/// Where a pending activity of `run` stands: a paused one is PAUSED while no attempt runs and
/// PAUSE_REQUESTED while one does.
pub fn pending_state(run: &MutableState, a: &ActivityInfo) -> enums::PendingActivityState {
    use enums::PendingActivityState as S;
    let paused = crate::engine::activity_control::paused(run, a.scheduled_event_id);
    match (
        a.cancel_requested_event_id.is_some(),
        a.started.is_some(),
        paused,
    ) {
        (true, _, _) => S::CancelRequested,
        (false, true, true) => S::PauseRequested,
        (false, true, false) => S::Started,
        (false, false, true) => S::Paused,
        (false, false, false) => S::Scheduled,
    }
}

/// A pending activity in DescribeWorkflowExecution at `now_ns`. A paused activity shows PAUSED
/// while no attempt runs and PAUSE_REQUESTED while one does; a retry waiting out its backoff
/// shows when it will be dispatched.
fn pending_activity(
    run: &MutableState,
    a: &ActivityInfo,
    now_ns: i64,
) -> workflow::PendingActivityInfo {
    use enums::PendingActivityState as S;
    let pause = run
        .activity_controls
        .get(&a.scheduled_event_id)
        .and_then(|c| c.pause.as_ref());
    let state = pending_state(run, a);
    // A retry waiting out its backoff.
    let waiting = state == S::Scheduled && a.attempt > 1 && a.attempt_scheduled_time_ns > now_ns;
    let attempt_end = run
        .activity_attempt_ends
        .get(&a.scheduled_event_id)
        .copied();
    let options = crate::engine::activity_options(a);
    workflow::PendingActivityInfo {
        activity_id: a.activity_id.clone(),
        activity_type: Some(common::ActivityType {
            name: a.activity_type.clone(),
        }),
        state: state as i32,
        heartbeat_details: a.heartbeat_details.as_deref().and_then(proto::decode_opt),
        last_heartbeat_time: a.last_heartbeat_ns.map(proto::timestamp),
        last_started_time: a.started.as_ref().map(|s| proto::timestamp(s.time_ns)),
        attempt: a.attempt,
        maximum_attempts: a.retry.maximum_attempts,
        scheduled_time: Some(proto::timestamp(a.attempt_scheduled_time_ns)),
        expiration_time: (a.schedule_to_close_ms > 0)
            .then(|| proto::timestamp(a.scheduled_time_ns + a.schedule_to_close_ms * 1_000_000)),
        last_failure: a.last_failure.as_deref().and_then(proto::decode_opt),
        last_worker_identity: a
            .started
            .as_ref()
            .map(|s| s.identity.clone())
            .unwrap_or_default(),
        paused: pause.is_some(),
        pause_info: pause.map(|p| workflow::pending_activity_info::PauseInfo {
            pause_time: Some(proto::timestamp(p.time_ns)),
            paused_by: Some(
                workflow::pending_activity_info::pause_info::PausedBy::Manual(
                    workflow::pending_activity_info::pause_info::Manual {
                        identity: p.identity.clone(),
                        reason: p.reason.clone(),
                    },
                ),
            ),
        }),
        priority: proto::decode_opt(&a.priority),
        activity_options: Some(activity_options(&options)),
        next_attempt_schedule_time: waiting.then(|| proto::timestamp(a.attempt_scheduled_time_ns)),
        last_attempt_complete_time: attempt_end.map(proto::timestamp),
        // As Temporal reports it: from the failed attempt's end to the next attempt.
        current_retry_interval: attempt_end
            .filter(|_| waiting)
            .and_then(|end| proto::duration((a.attempt_scheduled_time_ns - end) / 1_000_000)),
        ..Default::default()
    }
}

/// DescribeWorkflowExecution's answer at `now_ns`.
pub fn describe(state: &MutableState, now_ns: i64) -> ws::DescribeWorkflowExecutionResponse {
    let pending_activities = state
        .activities
        .values()
        .map(|a| pending_activity(state, a, now_ns))
        .collect();
    let pending_workflow_task = state.workflow_task.as_ref().map(|t| {
        let task_state = if t.started.is_some() {
            enums::PendingWorkflowTaskState::Started
        } else {
            enums::PendingWorkflowTaskState::Scheduled
        };
        workflow::PendingWorkflowTaskInfo {
            state: task_state as i32,
            scheduled_time: Some(proto::timestamp(t.scheduled_time_ns)),
            original_scheduled_time: Some(proto::timestamp(t.scheduled_time_ns)),
            started_time: t.started.as_ref().map(|s| proto::timestamp(s.time_ns)),
            attempt: t.attempt,
        }
    });
    ws::DescribeWorkflowExecutionResponse {
        execution_config: Some(workflow::WorkflowExecutionConfig {
            task_queue: Some(proto::task_queue(&state.task_queue)),
            workflow_execution_timeout: proto::duration(state.execution_timeout_ms),
            workflow_run_timeout: proto::duration(state.run_timeout_ms),
            default_workflow_task_timeout: proto::duration(state.workflow_task_timeout_ms),
            user_metadata: proto::decode_opt(&state.user_metadata),
        }),
        workflow_execution_info: Some(execution_info(state)),
        pending_activities,
        pending_workflow_task,
        pending_children: state
            .children
            .values()
            .filter(|_| state.is_running())
            .map(|c| workflow::PendingChildExecutionInfo {
                workflow_id: c.workflow_id.clone(),
                run_id: c.started_run_id.clone().unwrap_or_default(),
                workflow_type_name: c.workflow_type.clone(),
                initiated_id: c.initiated_event_id,
                parent_close_policy: c.parent_close_policy,
            })
            .collect(),
        ..Default::default()
    }
}

/// DescribeNamespace's answer.
pub fn describe_namespace(record: &NamespaceRecord) -> ws::DescribeNamespaceResponse {
    ws::DescribeNamespaceResponse {
        namespace_info: Some(namespace::NamespaceInfo {
            name: record.name.clone(),
            state: record.state,
            description: record.description.clone(),
            owner_email: record.owner_email.clone(),
            data: record
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            id: record.id.clone(),
            supports_schedules: false,
            capabilities: Some(namespace::namespace_info::Capabilities {
                eager_workflow_start: true,
                sync_update: true,
                async_update: true,
                standalone_activities: true,
                standalone_activity_start_delay: true,
                standalone_activity_operator_commands: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        config: Some(namespace::NamespaceConfig {
            workflow_execution_retention_ttl: proto::duration(record.retention_ms),
            ..Default::default()
        }),
        replication_config: Some(
            temporalio_protos::temporal::api::replication::v1::NamespaceReplicationConfig {
                active_cluster_name: "active".into(),
                clusters: vec![
                    temporalio_protos::temporal::api::replication::v1::ClusterReplicationConfig {
                        cluster_name: "active".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

/// Temporal's system search attributes that Keel's visibility knows, with their types.
pub fn system_search_attributes() -> std::collections::HashMap<String, i32> {
    crate::list_query::system_attributes()
        .map(|(name, kind)| (name.to_string(), kind as i32))
        .collect()
}
