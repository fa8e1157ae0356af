//! The standalone activity RPCs: Start, Describe, Poll, List, Count, RequestCancel, Terminate
//! and Delete *ActivityExecution. A standalone activity is the run
//! `temporal-sys-activity:ID` (engine::activity_execution); these RPCs validate what they
//! receive as Temporal does, then start, change, read or wait on that run.

use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::{activity_already_started, activity_not_found, invalid, on_activity};
use super::schedules::type_search_attributes;
use super::{views, Frontend, MAX_ID_LEN};
use crate::engine::activity_execution::{
    self as execution, ActivityExecutionRequest, CancelRequest, NewActivityExecution,
};
use crate::engine::proto::{self, activity, command, common, enums};
use crate::engine::{MutableState, Request as Engine, StartArgs};
use crate::list_query::ListQuery;
use crate::namespaces::NamespaceRecord;
use crate::shard::{Op, OpResult, ShardError};

/// Largest page of ListActivityExecutions (Temporal's `frontend.visibilityMaxPageSize`).
const MAX_PAGE: usize = 1000;

/// An id or name no longer than Temporal's limit, worded as Temporal's activity API words it.
fn check_len(what: &str, value: &str) -> Result<(), Status> {
    let len = value.len();
    if len > MAX_ID_LEN {
        return Err(invalid(format!(
            "{what} exceeds length limit. Length={len} Limit={MAX_ID_LEN}"
        )));
    }
    Ok(())
}

/// The activity id and run id naming an existing activity.
fn check_target(activity_id: &str, run_id: &str) -> Result<(), Status> {
    if activity_id.is_empty() {
        return Err(invalid("activity ID is required"));
    }
    check_len("activity ID", activity_id)?;
    if !run_id.is_empty() && uuid::Uuid::parse_str(run_id).is_err() {
        return Err(invalid("invalid run id: must be a valid UUID"));
    }
    Ok(())
}

fn negative(d: Option<&prost_wkt_types::Duration>) -> bool {
    d.is_some_and(|d| d.seconds < 0 || d.nanos < 0)
}

/// What DescribeActivityExecution's long poll token names: the run and the change it saw.
#[derive(serde::Serialize, serde::Deserialize)]
struct LongPollToken {
    namespace_id: String,
    workflow_id: String,
    run_id: String,
    transitions: i64,
}

fn transitions(state: &MutableState) -> i64 {
    state
        .activity_execution
        .as_deref()
        .map_or(0, |e| e.transitions)
}

/// A standalone activity as DescribeActivityExecution shows it at `now_ns`.
fn execution_info(
    state: &MutableState,
    now_ns: i64,
    heartbeat_details: bool,
    last_failure: bool,
) -> activity::ActivityExecutionInfo {
    let (Some(record), Some(a)) = (
        state.activity_execution.as_deref(),
        execution::activity(state),
    ) else {
        return activity::ActivityExecutionInfo::default();
    };
    let running = state.is_running();
    let run_state = if running {
        views::pending_state(state, a)
    } else {
        enums::PendingActivityState::Unspecified
    };
    // Waiting out a retry's backoff or the start delay.
    let waiting =
        run_state == enums::PendingActivityState::Scheduled && a.attempt_scheduled_time_ns > now_ns;
    let backoff_from = record.last_attempt_complete_ns.filter(|_| a.attempt > 1);
    activity::ActivityExecutionInfo {
        activity_id: record.activity_id.clone(),
        run_id: state.run_id.clone(),
        activity_type: Some(common::ActivityType {
            name: a.activity_type.clone(),
        }),
        status: execution::status(state) as i32,
        run_state: run_state as i32,
        task_queue: a.task_queue.clone(),
        schedule_to_close_timeout: proto::timeout(a.schedule_to_close_ms),
        schedule_to_start_timeout: proto::timeout(a.schedule_to_start_ms),
        start_to_close_timeout: proto::timeout(a.start_to_close_ms),
        heartbeat_timeout: proto::timeout(a.heartbeat_ms),
        retry_policy: Some(crate::engine::retry_policy_proto(&a.retry)),
        heartbeat_details: a
            .heartbeat_details
            .as_deref()
            .filter(|_| heartbeat_details)
            .and_then(proto::decode_opt),
        last_heartbeat_time: record.last_heartbeat_ns.map(proto::timestamp),
        last_started_time: record.last_started_ns.map(proto::timestamp),
        attempt: a.attempt,
        execution_duration: state
            .close_time_ns
            .and_then(|close| proto::duration((close - state.start_time_ns) / 1_000_000)),
        schedule_time: Some(proto::timestamp(state.start_time_ns)),
        expiration_time: (a.schedule_to_close_ms > 0)
            .then(|| proto::timestamp(a.scheduled_time_ns + a.schedule_to_close_ms * 1_000_000)),
        close_time: state.close_time_ns.map(proto::timestamp),
        last_failure: a
            .last_failure
            .as_deref()
            .filter(|_| last_failure)
            .and_then(proto::decode_opt),
        last_worker_identity: record.last_worker_identity.clone(),
        current_retry_interval: backoff_from
            .filter(|_| waiting)
            .and_then(|from| proto::duration((a.attempt_scheduled_time_ns - from) / 1_000_000)),
        last_attempt_complete_time: record.last_attempt_complete_ns.map(proto::timestamp),
        next_attempt_schedule_time: waiting.then(|| proto::timestamp(a.attempt_scheduled_time_ns)),
        priority: proto::decode_opt(&a.priority),
        state_transition_count: record.transitions,
        state_size_bytes: state.history_size_bytes,
        search_attributes: Some(proto::decode_opt(&state.search_attributes).unwrap_or_default()),
        header: proto::decode_opt(&a.header),
        user_metadata: proto::decode_opt(&state.user_metadata),
        canceled_reason: record
            .cancel
            .as_ref()
            .map(|c| c.reason.clone())
            .unwrap_or_default(),
        total_heartbeat_count: record.heartbeat_count,
        start_delay: proto::duration(record.start_delay_ms),
        execution_time: Some(proto::timestamp(state.execution_time_ns)),
        ..Default::default()
    }
}

/// A standalone activity as ListActivityExecutions shows it.
fn list_info(state: &MutableState) -> activity::ActivityExecutionListInfo {
    let a = execution::activity(state);
    activity::ActivityExecutionListInfo {
        activity_id: state
            .activity_execution
            .as_deref()
            .map(|e| e.activity_id.clone())
            .unwrap_or_default(),
        run_id: state.run_id.clone(),
        activity_type: a.map(|a| common::ActivityType {
            name: a.activity_type.clone(),
        }),
        schedule_time: Some(proto::timestamp(state.start_time_ns)),
        close_time: state.close_time_ns.map(proto::timestamp),
        status: execution::status(state) as i32,
        search_attributes: proto::decode_opt(&state.search_attributes),
        task_queue: a.map(|a| a.task_queue.clone()).unwrap_or_default(),
        state_transition_count: transitions(state),
        state_size_bytes: state.history_size_bytes,
        execution_duration: state
            .close_time_ns
            .and_then(|close| proto::duration((close - state.start_time_ns) / 1_000_000)),
        execution_time: Some(proto::timestamp(state.execution_time_ns)),
    }
}

impl Frontend {
    /// The run of standalone activity `activity_id` (its latest when `run_id` is empty), read
    /// linearizably.
    async fn activity_run(
        &self,
        namespace: &NamespaceRecord,
        activity_id: &str,
        run_id: &str,
    ) -> Result<MutableState, Status> {
        check_target(activity_id, run_id)?;
        let state = self
            .read_state(namespace, &execution::workflow_id(activity_id), run_id)
            .await
            .map_err(|status| on_activity(activity_id, status))?;
        match state.activity_execution {
            Some(_) => Ok(state),
            None => Err(activity_not_found(activity_id)),
        }
    }

    /// The activity's run once `ready` holds for it (checked on its stored progress first,
    /// which is cheap, then on its state), or None when the long poll ran out first.
    async fn wait_for_activity(
        &self,
        namespace: &NamespaceRecord,
        state: MutableState,
        may_be_ready: impl Fn(&crate::shard::RunProgress) -> bool,
        ready: impl Fn(&MutableState) -> bool,
    ) -> Result<Option<MutableState>, Status> {
        if ready(&state) {
            return Ok(Some(state));
        }
        let activity_id = state
            .activity_execution
            .as_deref()
            .map(|e| e.activity_id.clone())
            .unwrap_or_default();
        let not_found = || activity_not_found(&activity_id);
        let (workflow_id, run_id) = (&state.workflow_id, &state.run_id);
        let shard = self.shard(&namespace.id, workflow_id).clone();
        let deadline = self.poll_deadline();
        self.wait_on_run(&shard, &namespace.id, workflow_id, run_id, deadline, || {
            let progress = shard
                .run_progress(&namespace.id, workflow_id, run_id)?
                .ok_or_else(not_found)?;
            if !may_be_ready(&progress) {
                return Ok(None);
            }
            let now = shard
                .load_state(&namespace.id, workflow_id, run_id)?
                .ok_or_else(not_found)?;
            Ok(ready(&now).then_some(now))
        })
        .await
    }

    /// Runs a client's request on a standalone activity's run.
    async fn activity_request(
        &self,
        namespace: &NamespaceRecord,
        activity_id: &str,
        run_id: &str,
        request: Engine,
    ) -> Result<(), Status> {
        let state = self.activity_run(namespace, activity_id, run_id).await?;
        self.run_request(namespace, &state.workflow_id, &state.run_id, request)
            .await
            .map_err(|status| on_activity(activity_id, status))?;
        Ok(())
    }

    pub(super) async fn start_activity_execution_rpc(
        &self,
        r: ws::StartActivityExecutionRequest,
    ) -> Result<ws::StartActivityExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let queue = r
            .task_queue
            .clone()
            .ok_or_else(|| invalid("taskQueue is not set"))?;
        if queue.name.is_empty() {
            return Err(invalid("missing task queue name"));
        }
        if queue.name.len() > MAX_ID_LEN {
            return Err(invalid("taskQueue length exceeds limit"));
        }
        if queue.name.starts_with("/_sys/") {
            return Err(invalid(
                "task queue name cannot start with reserved prefix /_sys/",
            ));
        }
        if r.activity_id.is_empty() {
            return Err(invalid("activityId is not set"));
        }
        let activity_type = r
            .activity_type
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or_default();
        if activity_type.is_empty() {
            return Err(invalid("activityType is not set"));
        }
        check_len("activityId", &r.activity_id)?;
        check_len("activityType", activity_type)?;
        if let Some(priority) = &r.priority {
            crate::engine::check_priority(priority)?;
        }
        for (name, timeout) in [
            ("ScheduleToClose", &r.schedule_to_close_timeout),
            ("ScheduleToStart", &r.schedule_to_start_timeout),
            ("StartToClose", &r.start_to_close_timeout),
            ("Heartbeat", &r.heartbeat_timeout),
        ] {
            if negative(timeout.as_ref()) {
                return Err(invalid(format!("invalid {name}Timeout: negative duration")));
            }
        }
        if proto::duration_ms(r.schedule_to_close_timeout.as_ref()) <= 0
            && proto::duration_ms(r.start_to_close_timeout.as_ref()) <= 0
        {
            return Err(invalid(format!(
                "a valid StartToCloseTimeout or ScheduleToCloseTimeout must be set on the \
                 activity. ActivityId={} ActivityType={activity_type}",
                r.activity_id
            )));
        }
        if negative(r.start_delay.as_ref()) {
            return Err(invalid("invalid StartDelay: negative duration"));
        }
        check_len("request ID", &r.request_id)?;
        check_len("identity", &r.identity)?;
        if super::payload_bytes(r.input.as_ref()) > self.limits.max_blob_bytes {
            return Err(invalid("input exceeds length limit"));
        }
        let mut search_attributes = r.search_attributes;
        type_search_attributes(&self.attribute_types(&namespace)?, &mut search_attributes)?;
        let workflow_id = execution::workflow_id(&r.activity_id);
        let new = NewActivityExecution {
            schedule: command::ScheduleActivityTaskCommandAttributes {
                activity_id: r.activity_id.clone(),
                activity_type: r.activity_type,
                task_queue: Some(queue.clone()),
                header: r.header,
                input: r.input,
                schedule_to_close_timeout: r.schedule_to_close_timeout,
                schedule_to_start_timeout: r.schedule_to_start_timeout,
                start_to_close_timeout: r.start_to_close_timeout,
                heartbeat_timeout: r.heartbeat_timeout,
                retry_policy: r.retry_policy,
                priority: r.priority.clone(),
                ..Default::default()
            },
            start_delay_ms: proto::duration_ms(r.start_delay.as_ref()),
        };
        let new_run_id = uuid::Uuid::new_v4().to_string();
        let args = StartArgs {
            namespace_id: namespace.id.clone(),
            workflow_id: workflow_id.clone(),
            run_id: new_run_id.clone(),
            request_id: if r.request_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                r.request_id
            },
            workflow_type: execution::WORKFLOW_TYPE.to_string(),
            task_queue: queue.name,
            identity: r.identity,
            search_attributes,
            user_metadata: r.user_metadata,
            priority: r.priority,
            activity_execution: Some(Box::new(new)),
            ..Default::default()
        };
        // The activity policies' values are the workflow ones' (their defaults too).
        let or_default = |policy: i32| if policy == 0 { 1 } else { policy };
        let op = Op::Start {
            args: Box::new(args),
            reuse_policy: or_default(r.id_reuse_policy),
            conflict_policy: or_default(r.id_conflict_policy),
            signal_if_running: None,
            update: None,
        };
        match self
            .shard(&namespace.id, &workflow_id)
            .submit(&namespace.id, &workflow_id, op)
            .await
        {
            // A retried request (same request id) answers its run as not started by this
            // call, as Temporal does.
            Ok(OpResult::Started {
                run_id, started, ..
            }) => Ok(ws::StartActivityExecutionResponse {
                started: started && run_id == new_run_id,
                run_id,
                ..Default::default()
            }),
            Ok(OpResult::Reply { .. }) => Err(Status::internal("unexpected reply to a start")),
            Err(ShardError::AlreadyStarted {
                run_id,
                start_request_id,
                ..
            }) => Err(activity_already_started(run_id, start_request_id)),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn describe_activity_execution_rpc(
        &self,
        r: ws::DescribeActivityExecutionRequest,
    ) -> Result<ws::DescribeActivityExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        if !r.long_poll_token.is_empty() && r.run_id.is_empty() {
            return Err(invalid(
                "run id is required when long poll token is provided",
            ));
        }
        let mut state = self
            .activity_run(&namespace, &r.activity_id, &r.run_id)
            .await?;
        if !r.long_poll_token.is_empty() {
            let seen: LongPollToken = bincode::deserialize(&r.long_poll_token)
                .map_err(|_| invalid("invalid long poll token"))?;
            if seen.namespace_id != namespace.id
                || seen.workflow_id != state.workflow_id
                || seen.run_id != state.run_id
            {
                return Err(invalid("long poll token does not match execution"));
            }
            let changed = |s: &MutableState| transitions(s) != seen.transitions;
            match self
                .wait_for_activity(&namespace, state, |_| true, changed)
                .await?
            {
                Some(changed) => state = changed,
                None => return Ok(ws::DescribeActivityExecutionResponse::default()),
            }
        }
        let token = LongPollToken {
            namespace_id: namespace.id.clone(),
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
            transitions: transitions(&state),
        };
        Ok(ws::DescribeActivityExecutionResponse {
            run_id: state.run_id.clone(),
            info: Some(execution_info(
                &state,
                self.now(),
                r.include_heartbeat_details,
                r.include_last_failure,
            )),
            input: execution::activity(&state)
                .filter(|_| r.include_input)
                .and_then(|a| proto::decode_opt(&a.input)),
            outcome: execution::outcome(&state).filter(|_| r.include_outcome),
            long_poll_token: bincode::serialize(&token).unwrap_or_default(),
            ..Default::default()
        })
    }

    pub(super) async fn poll_activity_execution_rpc(
        &self,
        r: ws::PollActivityExecutionRequest,
    ) -> Result<ws::PollActivityExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let state = self
            .activity_run(&namespace, &r.activity_id, &r.run_id)
            .await?;
        // An empty answer when the long poll runs out: the caller polls again.
        Ok(
            match self
                .wait_for_activity(&namespace, state, |p| !p.running, |s| !s.is_running())
                .await?
            {
                Some(closed) => ws::PollActivityExecutionResponse {
                    run_id: closed.run_id.clone(),
                    outcome: execution::outcome(&closed),
                },
                None => ws::PollActivityExecutionResponse::default(),
            },
        )
    }

    /// The namespace's standalone activities that `query` selects, in its order.
    async fn listed_activities(
        &self,
        namespace: &NamespaceRecord,
        query: &str,
    ) -> Result<(ListQuery, Vec<MutableState>), Status> {
        let query = ListQuery::parse(query, &self.namespaces.search_attributes(&namespace.id)?)?;
        let runs = self
            .scan_runs(namespace, |state| {
                state.activity_execution.is_some() && query.matches(state)
            })
            .await?;
        let runs = query.sort(runs);
        Ok((query, runs))
    }

    pub(super) async fn list_activity_executions_rpc(
        &self,
        r: ws::ListActivityExecutionsRequest,
    ) -> Result<ws::ListActivityExecutionsResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (_, runs) = self.listed_activities(&namespace, &r.query).await?;
        let (page, next_page_token) =
            super::offset_page(&runs, r.page_size, &r.next_page_token, MAX_PAGE)?;
        Ok(ws::ListActivityExecutionsResponse {
            executions: page.iter().map(list_info).collect(),
            next_page_token,
        })
    }

    pub(super) async fn count_activity_executions_rpc(
        &self,
        r: ws::CountActivityExecutionsRequest,
    ) -> Result<ws::CountActivityExecutionsResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (query, runs) = self.listed_activities(&namespace, &r.query).await?;
        let groups = if query.groups_by_status() {
            crate::list_query::status_groups(&runs)
                .into_iter()
                .map(
                    |g| ws::count_activity_executions_response::AggregationGroup {
                        group_values: g.group_values,
                        count: g.count,
                    },
                )
                .collect()
        } else {
            Vec::new()
        };
        Ok(ws::CountActivityExecutionsResponse {
            count: runs.len() as i64,
            groups,
        })
    }

    pub(super) async fn request_cancel_activity_execution_rpc(
        &self,
        r: ws::RequestCancelActivityExecutionRequest,
    ) -> Result<ws::RequestCancelActivityExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let request_id = self.client_request(&r.request_id, &r.identity, &r.reason)?;
        let request = Engine::ActivityExecution(ActivityExecutionRequest::Cancel(CancelRequest {
            request_id,
            reason: r.reason,
            identity: r.identity,
        }));
        self.activity_request(&namespace, &r.activity_id, &r.run_id, request)
            .await?;
        Ok(ws::RequestCancelActivityExecutionResponse {})
    }

    pub(super) async fn terminate_activity_execution_rpc(
        &self,
        r: ws::TerminateActivityExecutionRequest,
    ) -> Result<ws::TerminateActivityExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let request_id = self.client_request(&r.request_id, &r.identity, &r.reason)?;
        let request = Engine::ActivityExecution(ActivityExecutionRequest::Terminate {
            request_id,
            reason: r.reason,
            identity: r.identity,
        });
        self.activity_request(&namespace, &r.activity_id, &r.run_id, request)
            .await?;
        Ok(ws::TerminateActivityExecutionResponse {})
    }

    pub(super) async fn delete_activity_execution_rpc(
        &self,
        r: ws::DeleteActivityExecutionRequest,
    ) -> Result<ws::DeleteActivityExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        self.activity_request(&namespace, &r.activity_id, &r.run_id, Engine::Delete)
            .await?;
        Ok(ws::DeleteActivityExecutionResponse {})
    }

    /// Checks a cancel's or terminate's request id, identity and reason; returns the request
    /// id (a fresh one when the caller sent none).
    fn client_request(
        &self,
        request_id: &str,
        identity: &str,
        reason: &str,
    ) -> Result<String, Status> {
        check_len("request ID", request_id)?;
        check_len("identity", identity)?;
        if reason.len() > self.limits.max_blob_bytes {
            return Err(invalid("reason exceeds length limit"));
        }
        Ok(if request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            request_id.to_string()
        })
    }
}
