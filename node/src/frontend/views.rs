//! Read-side shapes: workflow descriptions, visibility rows and their list-query filter,
//! namespace descriptions.

use temporalio_protos::temporal::api::namespace::v1 as namespace;
use temporalio_protos::temporal::api::workflow::v1 as workflow;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use crate::engine::proto::{self, common, enums};
use crate::engine::{MutableState, RunStatus};
use crate::namespaces::{NamespaceRecord, SearchAttributeTypes};

/// Temporal's execution status of a run.
pub fn execution_status(status: RunStatus) -> enums::WorkflowExecutionStatus {
    use enums::WorkflowExecutionStatus as S;
    match status {
        RunStatus::Running => S::Running,
        RunStatus::Completed => S::Completed,
        RunStatus::Failed => S::Failed,
        RunStatus::Canceled => S::Canceled,
        RunStatus::Terminated => S::Terminated,
        RunStatus::ContinuedAsNew => S::ContinuedAsNew,
        RunStatus::TimedOut => S::TimedOut,
    }
}

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
        status: execution_status(state.status) as i32,
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
        ..Default::default()
    }
}

/// DescribeWorkflowExecution's answer.
pub fn describe(state: &MutableState) -> ws::DescribeWorkflowExecutionResponse {
    let pending_activities = state
        .activities
        .values()
        .map(|a| {
            let state = if a.cancel_requested_event_id.is_some() {
                enums::PendingActivityState::CancelRequested
            } else if a.started.is_some() {
                enums::PendingActivityState::Started
            } else {
                enums::PendingActivityState::Scheduled
            };
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
                expiration_time: (a.schedule_to_close_ms > 0).then(|| {
                    proto::timestamp(a.scheduled_time_ns + a.schedule_to_close_ms * 1_000_000)
                }),
                last_failure: a.last_failure.as_deref().and_then(proto::decode_opt),
                last_worker_identity: a
                    .started
                    .as_ref()
                    .map(|s| s.identity.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }
        })
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

/// One condition of a list query.
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    field: String,
    negate: bool,
    value: String,
}

/// A parsed visibility query: conditions joined by AND (the subset Keel supports).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    conditions: Vec<Condition>,
}

const FIELDS: [&str; 5] = [
    "WorkflowId",
    "WorkflowType",
    "ExecutionStatus",
    "TaskQueue",
    "RunId",
];

impl ListFilter {
    /// Parses `Field = 'value' [AND ...]` over the system fields and the namespace's custom
    /// search attributes (numbers may go unquoted); ORDER BY and other operators are refused.
    pub fn parse(query: &str, custom: &SearchAttributeTypes) -> Result<ListFilter, Status> {
        let query = query.trim();
        if query.is_empty() {
            return Ok(ListFilter::default());
        }
        let unsupported = || {
            Status::invalid_argument(format!(
                "invalid query {query:?}: Keel supports conditions `Field = 'value'` or \
                 `Field != 'value'` joined by AND, on {}",
                FIELDS.join(", ")
            ))
        };
        let mut conditions = Vec::new();
        for clause in split_and(query) {
            let (field, negate, value) = if let Some((f, v)) = clause.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = clause.split_once('=') {
                (f, false, v)
            } else {
                return Err(unsupported());
            };
            let field = field.trim().trim_matches('`');
            let value = value.trim();
            let quoted = value.len() >= 2
                && ((value.starts_with('\'') && value.ends_with('\''))
                    || (value.starts_with('"') && value.ends_with('"')));
            let number = value.parse::<f64>().is_ok();
            if !(quoted || number) || !(FIELDS.contains(&field) || custom.contains_key(field)) {
                return Err(unsupported());
            }
            conditions.push(Condition {
                field: field.to_string(),
                negate,
                value: if quoted {
                    value[1..value.len() - 1].to_string()
                } else {
                    value.to_string()
                },
            });
        }
        Ok(ListFilter { conditions })
    }

    /// True if the run matches every condition.
    pub fn matches(&self, state: &MutableState) -> bool {
        let mut custom: Option<common::SearchAttributes> = None;
        self.conditions.iter().all(|c| {
            let equal = match c.field.as_str() {
                "WorkflowId" => state.workflow_id == c.value,
                "WorkflowType" => state.workflow_type == c.value,
                "TaskQueue" => state.task_queue == c.value,
                "RunId" => state.run_id == c.value,
                "ExecutionStatus" => status_name(state.status) == c.value,
                field => {
                    let attributes = custom.get_or_insert_with(|| {
                        proto::decode_opt(&state.search_attributes).unwrap_or_default()
                    });
                    attributes
                        .indexed_fields
                        .get(field)
                        .is_some_and(|payload| payload_equals(&payload.data, &c.value))
                }
            };
            equal != c.negate
        })
    }
}

/// True if a search attribute payload (JSON) holds `value`: a string, number or bool equal to
/// it, or a keyword list containing it.
fn payload_equals(data: &[u8], value: &str) -> bool {
    let same = |json: &serde_json::Value| match json {
        serde_json::Value::String(s) => s == value,
        serde_json::Value::Number(n) => match (n.as_f64(), value.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        serde_json::Value::Bool(b) => b.to_string() == value,
        _ => false,
    };
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(serde_json::Value::Array(items)) => items.iter().any(same),
        Ok(json) => same(&json),
        Err(_) => false,
    }
}

fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "Running",
        RunStatus::Completed => "Completed",
        RunStatus::Failed => "Failed",
        RunStatus::Canceled => "Canceled",
        RunStatus::Terminated => "Terminated",
        RunStatus::ContinuedAsNew => "ContinuedAsNew",
        RunStatus::TimedOut => "TimedOut",
    }
}

fn split_and(query: &str) -> Vec<&str> {
    let mut clauses = Vec::new();
    let mut rest = query;
    loop {
        let lower = rest.to_ascii_lowercase();
        match find_outside_quotes(&lower, " and ") {
            Some(at) => {
                clauses.push(rest[..at].trim());
                rest = &rest[at + 5..];
            }
            None => {
                clauses.push(rest.trim());
                return clauses;
            }
        }
    }
}

fn find_outside_quotes(text: &str, needle: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, _) if text[i..].starts_with(needle) => return Some(i),
            _ => {}
        }
    }
    None
}

/// Temporal's system search attributes that Keel's visibility knows, with their types.
pub fn system_search_attributes() -> std::collections::HashMap<String, i32> {
    use enums::IndexedValueType as T;
    [
        ("WorkflowId", T::Keyword),
        ("RunId", T::Keyword),
        ("WorkflowType", T::Keyword),
        ("ExecutionStatus", T::Keyword),
        ("TaskQueue", T::Keyword),
        ("StartTime", T::Datetime),
        ("CloseTime", T::Datetime),
    ]
    .into_iter()
    .map(|(name, kind)| (name.to_string(), kind as i32))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_list_queries() {
        let custom = SearchAttributeTypes::from([("KeelInt".to_string(), 2)]);
        let filter = ListFilter::parse(
            "WorkflowId = 'a and b' AND ExecutionStatus != \"Running\"",
            &custom,
        )
        .expect("valid query");
        assert!(ListFilter::parse("KeelInt = 99", &custom).is_ok());
        assert!(ListFilter::parse("Other = 99", &custom).is_err());
        assert!(payload_equals(b"99", "99") && payload_equals(b"[\"a\",\"b\"]", "b"));
        assert!(!payload_equals(b"\"x\"", "y"));
        assert_eq!(filter.conditions.len(), 2);
        assert_eq!(filter.conditions[0].value, "a and b");
        assert!(filter.conditions[1].negate);
        assert!(ListFilter::parse("WorkflowId > 'a'", &custom).is_err());
        assert!(ListFilter::parse("Unknown = 'a'", &custom).is_err());
        assert!(ListFilter::parse("WorkflowId = a", &custom).is_err());
        assert_eq!(
            ListFilter::parse("  ", &custom).expect("empty"),
            ListFilter::default()
        );
    }
}
