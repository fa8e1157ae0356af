//! `temporal.api.workflowservice.v1.WorkflowService` on top of the shards. RPCs not listed here
//! answer Unimplemented (tonic's default) and are listed as missing in README.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::temporal_services::workflowservice::workflow_service_server::WorkflowService;
use temporalio_protos::temporal::api::filter::v1 as filter;
use temporalio_protos::temporal::api::history::v1::History;
use temporalio_protos::temporal::api::taskqueue::v1 as tq;
use temporalio_protos::temporal::api::workflow::v1::WorkflowExecutionInfo;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::{Request, Response, Status};

use super::errors::{invalid, query_failed, workflow_not_ready};
use super::routing::forwarded;
use super::tokens::TaskToken;
use super::views;
use super::{check_execution, check_id, Frontend};
use crate::engine::proto::{self, common, enums};
use crate::engine::{
    is_versioned, ActivityReport, ActivityTarget, CompleteWorkflowTask, MutableState, Reply,
    Request as Engine, Signal, StartArgs, StartedWorkflowTask, TaskKind,
};
use crate::list_query::{self, ListQuery};
use crate::matching::{Dispatch, MatchTask, QueueKey, RunTask};
use crate::namespaces::NamespaceRecord;
use crate::shard::{Op, OpResult};

type Rpc<T> = Result<Response<T>, Status>;

/// Keel's version as GetSystemInfo and GetClusterInfo report it.
const SERVER_VERSION: &str = concat!("1.32.0+keel.", env!("CARGO_PKG_VERSION"));

/// Default page size of histories and lists; also the largest page of a list, as Temporal's
/// `frontend.visibilityMaxPageSize` defaults to.
const DEFAULT_PAGE: usize = 1000;

/// How long QueryWorkflow waits for a worker's answer.
const QUERY_WAIT: Duration = Duration::from_secs(30);

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new run id: a time-ordered UUID v7, as Temporal's run ids are.
fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PageToken {
    run_id: String,
    next_event_id: i64,
}

impl PageToken {
    fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Option<PageToken>, Status> {
        if bytes.is_empty() {
            return Ok(None);
        }
        bincode::deserialize(bytes)
            .map(Some)
            .map_err(|_| invalid("Invalid NextPageToken."))
    }
}

impl Frontend {
    pub(super) async fn run_op(
        &self,
        namespace: &NamespaceRecord,
        workflow_id: &str,
        op: Op,
    ) -> Result<OpResult, Status> {
        Ok(self
            .shard(&namespace.id, workflow_id)
            .submit(&namespace.id, workflow_id, op)
            .await?)
    }

    pub(super) async fn run_request(
        &self,
        namespace: &NamespaceRecord,
        workflow_id: &str,
        run_id: &str,
        request: Engine,
    ) -> Result<(String, Reply), Status> {
        let (run_id, reply, _) = self
            .run_request_state(namespace, workflow_id, run_id, request)
            .await?;
        Ok((run_id, reply))
    }

    /// [`Self::run_request`], with the run's state as the request left it when this node's
    /// writer answered (see [`OpResult::Reply`]).
    pub(super) async fn run_request_state(
        &self,
        namespace: &NamespaceRecord,
        workflow_id: &str,
        run_id: &str,
        request: Engine,
    ) -> Result<(String, Reply, Option<Arc<MutableState>>), Status> {
        let op = Op::Run {
            run_id: run_id.to_string(),
            request,
        };
        match self.run_op(namespace, workflow_id, op).await? {
            OpResult::Reply {
                run_id,
                reply,
                state,
            } => match reply {
                Reply::Refused(error) => Err(error.into()),
                reply => Ok((run_id, reply, state)),
            },
            OpResult::Started { .. } => Err(Status::internal("unexpected start result")),
        }
    }

    /// The matching lane a poller of `queue` polls: its version's for a versioned worker (which
    /// registers the version with the queue), else the unversioned one.
    async fn poller_lane(
        &self,
        namespace: &NamespaceRecord,
        queue: &str,
        kind: TaskKind,
        options: Option<&temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentOptions>,
    ) -> Result<String, Status> {
        let Some(options) = options.filter(|o| is_versioned(o)) else {
            return Ok(String::new());
        };
        if options.build_id.is_empty() {
            return Err(invalid(
                "a versioned worker's deployment options need a build id",
            ));
        }
        // A full deployment makes room by deleting a version that is safe to delete.
        let evict = match self
            .deployments
            .get(&namespace.id, &options.deployment_name)
        {
            Some(record)
                if !record.versions.contains_key(&options.build_id)
                    && record.versions.len() >= crate::deployments::MAX_VERSIONS =>
            {
                self.evictable_version(namespace, &record).await?
            }
            _ => None,
        };
        self.deployments
            .register(
                &namespace.id,
                &options.deployment_name,
                &options.build_id,
                queue,
                kind,
                evict.as_deref(),
                self.now(),
            )
            .await?;
        Ok(crate::deployments::lane_of(
            &options.deployment_name,
            &options.build_id,
        ))
    }

    /// A namespace retention must be at least Temporal's minimum for local namespaces (1 hour,
    /// `system.namespaceMinRetentionLocal`).
    fn check_retention(&self, retention_ms: i64) -> Result<(), Status> {
        if retention_ms <= 0 || retention_ms < self.limits.min_namespace_retention_ms {
            return Err(invalid("A valid retention period is not set on request."));
        }
        Ok(())
    }

    fn start_args(
        &self,
        namespace: &NamespaceRecord,
        fields: StartFields,
    ) -> Result<StartArgs, Status> {
        if !fields.cron_schedule.is_empty() {
            if fields.start_delay.is_some() {
                return Err(invalid(
                    "CronSchedule and WorkflowStartDelay may not be used together.",
                ));
            }
            crate::engine::cron::CronSchedule::parse(&fields.cron_schedule)
                .map_err(|e| invalid(format!("Invalid CronSchedule: {e}.")))?;
        }
        check_id("WorkflowId", &fields.workflow_id, true)?;
        check_id("RequestId", &fields.request_id, false)?;
        if fields.workflow_type.is_empty() {
            return Err(invalid("WorkflowType is not set on request."));
        }
        check_id("WorkflowType", &fields.workflow_type, true)?;
        if fields.task_queue.is_empty() {
            return Err(invalid("TaskQueue is not set on request."));
        }
        check_id("TaskQueue", &fields.task_queue, true)?;
        self.check_payloads(fields.input.as_ref())?;
        for (name, d) in [
            ("WorkflowExecutionTimeout", &fields.execution_timeout),
            ("WorkflowRunTimeout", &fields.run_timeout),
            ("WorkflowTaskTimeout", &fields.task_timeout),
        ] {
            if d.as_ref().is_some_and(|d| d.seconds < 0 || d.nanos < 0) {
                return Err(invalid(format!("Invalid {name}.")));
            }
        }
        let memo_size: usize = fields
            .memo
            .as_ref()
            .map(|m| m.fields.values().map(|p| p.data.len()).sum())
            .unwrap_or(0);
        if memo_size > self.limits.max_blob_bytes {
            return Err(invalid("Memo size exceeds limit."));
        }
        Ok(StartArgs {
            namespace_id: namespace.id.clone(),
            workflow_id: fields.workflow_id,
            run_id: new_run_id(),
            request_id: fields.request_id,
            workflow_type: fields.workflow_type,
            task_queue: fields.task_queue,
            input: fields.input,
            execution_timeout: fields.execution_timeout,
            run_timeout: fields.run_timeout,
            task_timeout: fields.task_timeout,
            identity: fields.identity,
            retry_policy: fields.retry_policy,
            memo: fields.memo,
            search_attributes: fields.search_attributes,
            header: fields.header,
            start_delay: fields.start_delay,
            priority: fields.priority,
            user_metadata: fields.user_metadata,
            versioning_override: fields.versioning_override,
            inherited_versioning: None,
            eager_workflow_task: false,
            signal: None,
            continuation: None,
            parent: None,
            cron_schedule: fields.cron_schedule,
            last_completion_result: fields.last_completion_result,
            continued_failure: fields.continued_failure,
            schedule: None,
            batch: None,
            activity_execution: None,
        })
    }

    /// The shard op of a StartWorkflowExecution request (with an update: update-with-start).
    pub(super) fn start_op(
        &self,
        namespace: &NamespaceRecord,
        r: ws::StartWorkflowExecutionRequest,
        update: Option<Box<temporalio_protos::temporal::api::update::v1::Request>>,
    ) -> Result<Op, Status> {
        let eager = r.request_eager_execution;
        let mut args = self.start_args(
            namespace,
            StartFields {
                workflow_id: r.workflow_id,
                request_id: r.request_id,
                workflow_type: r.workflow_type.map(|t| t.name).unwrap_or_default(),
                task_queue: r.task_queue.map(|q| q.name).unwrap_or_default(),
                input: r.input,
                execution_timeout: r.workflow_execution_timeout,
                run_timeout: r.workflow_run_timeout,
                task_timeout: r.workflow_task_timeout,
                identity: r.identity,
                retry_policy: r.retry_policy,
                memo: r.memo,
                search_attributes: r.search_attributes,
                header: r.header,
                start_delay: r.workflow_start_delay,
                priority: r.priority,
                user_metadata: r.user_metadata,
                cron_schedule: r.cron_schedule,
                last_completion_result: r.last_completion_result,
                continued_failure: r.continued_failure,
                versioning_override: r.versioning_override,
            },
        )?;
        args.eager_workflow_task = eager;
        Ok(Op::Start {
            args: Box::new(args),
            reuse_policy: r.workflow_id_reuse_policy,
            conflict_policy: r.workflow_id_conflict_policy,
            signal_if_running: None,
            update,
        })
    }

    /// A started workflow task as a poll response: the history (plus the task's transient
    /// events), whole or, for a worker that has the run cached (`sticky`), from the event after
    /// the last task it completed.
    fn workflow_task_response(
        &self,
        namespace: &NamespaceRecord,
        state: &MutableState,
        started: &StartedWorkflowTask,
        sticky: bool,
    ) -> Result<ws::PollWorkflowTaskQueueResponse, Status> {
        let shard = self.shard(&namespace.id, &state.workflow_id);
        let from = if sticky {
            started.previous_started_event_id + 1
        } else {
            1
        };
        let mut events = shard.read_events(state, from, state.next_event_id, usize::MAX)?;
        events.extend(started.transient_events.iter().cloned());
        let token = TaskToken::Workflow {
            namespace_id: namespace.id.clone(),
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
        };
        Ok(ws::PollWorkflowTaskQueueResponse {
            task_token: token.encode(),
            workflow_execution: Some(common::WorkflowExecution {
                workflow_id: state.workflow_id.clone(),
                run_id: state.run_id.clone(),
            }),
            workflow_type: Some(common::WorkflowType {
                name: state.workflow_type.clone(),
            }),
            previous_started_event_id: started.previous_started_event_id,
            started_event_id: started.started_event_id,
            attempt: started.attempt,
            history: Some(History { events }),
            workflow_execution_task_queue: Some(proto::task_queue(&state.task_queue)),
            scheduled_time: Some(proto::timestamp(started.scheduled_time_ns)),
            started_time: Some(proto::timestamp(started.started_time_ns)),
            messages: started.messages.clone(),
            ..Default::default()
        })
    }

    async fn query_task_response(
        &self,
        namespace: &NamespaceRecord,
        query_id: u64,
    ) -> Result<Option<ws::PollWorkflowTaskQueueResponse>, Status> {
        let Some(task) = self.queries.task(query_id) else {
            return Ok(None);
        };
        let shard = self.shard(&namespace.id, &task.workflow_id);
        shard.barrier().await?;
        let Some(state) = shard.load_state(&namespace.id, &task.workflow_id, &task.run_id)? else {
            return Ok(None);
        };
        let events = shard.read_events(&state, 1, state.next_event_id, usize::MAX)?;
        let last_started = state.last_completed_started_event_id;
        Ok(Some(ws::PollWorkflowTaskQueueResponse {
            task_token: TaskToken::Query { query_id }.encode(),
            workflow_execution: Some(common::WorkflowExecution {
                workflow_id: state.workflow_id.clone(),
                run_id: state.run_id.clone(),
            }),
            workflow_type: Some(common::WorkflowType {
                name: state.workflow_type.clone(),
            }),
            previous_started_event_id: last_started,
            started_event_id: last_started,
            history: Some(History { events }),
            query: Some(task.query),
            workflow_execution_task_queue: Some(proto::task_queue(&state.task_queue)),
            ..Default::default()
        }))
    }

    fn activity_task_response(
        &self,
        namespace: &NamespaceRecord,
        state: &MutableState,
        scheduled_event_id: i64,
        attempt: i32,
    ) -> Option<ws::PollActivityTaskQueueResponse> {
        let activity = state.activities.get(&scheduled_event_id)?;
        let started = activity.started.as_ref()?;
        // A standalone activity has no workflow: SDKs tell it apart by the empty execution.
        let standalone = state.activity_execution.is_some();
        let token = TaskToken::Activity {
            namespace_id: namespace.id.clone(),
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
            scheduled_event_id,
            attempt,
        };
        Some(ws::PollActivityTaskQueueResponse {
            task_token: token.encode(),
            workflow_namespace: namespace.name.clone(),
            workflow_type: (!standalone).then(|| common::WorkflowType {
                name: state.workflow_type.clone(),
            }),
            workflow_execution: Some(if standalone {
                common::WorkflowExecution::default()
            } else {
                common::WorkflowExecution {
                    workflow_id: state.workflow_id.clone(),
                    run_id: state.run_id.clone(),
                }
            }),
            activity_run_id: if standalone {
                state.run_id.clone()
            } else {
                String::new()
            },
            activity_type: Some(common::ActivityType {
                name: activity.activity_type.clone(),
            }),
            activity_id: activity.activity_id.clone(),
            header: proto::decode_opt(&activity.header),
            input: proto::decode_opt(&activity.input),
            heartbeat_details: activity
                .heartbeat_details
                .as_deref()
                .and_then(proto::decode_opt),
            scheduled_time: Some(proto::timestamp(activity.scheduled_time_ns)),
            current_attempt_scheduled_time: Some(proto::timestamp(
                activity.attempt_scheduled_time_ns,
            )),
            started_time: Some(proto::timestamp(started.time_ns)),
            attempt,
            schedule_to_close_timeout: proto::timeout(activity.schedule_to_close_ms),
            start_to_close_timeout: proto::timeout(activity.start_to_close_ms),
            heartbeat_timeout: proto::timeout(activity.heartbeat_ms),
            retry_policy: Some(crate::engine::retry_policy_proto(&activity.retry)),
            priority: proto::decode_opt(&activity.priority),
            ..Default::default()
        })
    }

    pub(super) fn poll_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.long_poll
    }

    async fn activity_report(
        &self,
        token: &[u8],
        namespace_name: &str,
        report: ActivityReport,
        identity: String,
    ) -> Result<Reply, Status> {
        let TaskToken::Activity {
            namespace_id,
            workflow_id,
            run_id,
            scheduled_event_id,
            attempt,
        } = TaskToken::decode(token)?
        else {
            return Err(invalid("The task token is not an activity task token."));
        };
        let namespace = match self.namespaces.by_id(&namespace_id) {
            Some(ns) => ns,
            None => return Err(super::namespace_not_found(namespace_name)),
        };
        let request = Engine::Activity {
            target: ActivityTarget::Token {
                scheduled_event_id,
                attempt,
            },
            report,
            identity,
        };
        let answer = self
            .run_request(&namespace, &workflow_id, &run_id, request)
            .await;
        match workflow_id.strip_prefix(crate::engine::activity_execution::WORKFLOW_ID_PREFIX) {
            Some(activity_id) => {
                answer.map_err(|status| super::errors::on_activity(activity_id, status))
            }
            None => answer,
        }
        .map(|(_, reply)| reply)
    }

    async fn activity_report_by_id(
        &self,
        namespace: &str,
        workflow_id: &str,
        run_id: &str,
        activity_id: &str,
        report: ActivityReport,
        identity: String,
    ) -> Result<Reply, Status> {
        let namespace = self.namespace(namespace).await?;
        check_id("ActivityId", activity_id, true)?;
        let request = Engine::Activity {
            target: ActivityTarget::Id(activity_id.to_string()),
            report,
            identity,
        };
        // No workflow id: a standalone activity, and `run_id` is the activity's.
        if workflow_id.is_empty() {
            let workflow_id = crate::engine::activity_execution::workflow_id(activity_id);
            return self
                .run_request(&namespace, &workflow_id, run_id, request)
                .await
                .map(|(_, reply)| reply)
                .map_err(|status| super::errors::on_activity(activity_id, status));
        }
        check_id("WorkflowId", workflow_id, true)?;
        Ok(self
            .run_request(&namespace, workflow_id, run_id, request)
            .await?
            .1)
    }

    async fn history_page(
        &self,
        namespace: &NamespaceRecord,
        execution: Option<common::WorkflowExecution>,
        page_size: i32,
        token: &[u8],
        wait_new_event: bool,
        close_only: bool,
    ) -> Result<ws::GetWorkflowExecutionHistoryResponse, Status> {
        let execution = execution.unwrap_or_default();
        check_execution(&execution)?;
        let token = PageToken::decode(token)?;
        let run_id = token
            .as_ref()
            .map(|t| t.run_id.clone())
            .unwrap_or(execution.run_id);
        let shard = self.shard(&namespace.id, &execution.workflow_id).clone();
        let deadline = self.poll_deadline();
        // One barrier makes the first read linearizable; a long poll's later reads follow this
        // replica's applied state, which only moves forward from there.
        shard.barrier().await?;
        // No run id: the run current now, followed to its end (as Temporal does).
        let run_id = match run_id.is_empty() {
            true => shard
                .current_run(&namespace.id, &execution.workflow_id)?
                .ok_or_else(|| crate::shard::run_not_found(&execution.workflow_id, ""))?,
            false => run_id,
        };
        let not_found = || crate::shard::run_not_found(&execution.workflow_id, &run_id);
        let from = token.as_ref().map_or(1, |t| t.next_event_id);
        // Each change of the run wakes this poll: check its progress (cheap), and read the
        // whole state only to answer.
        let ready = self
            .wait_on_run(
                &shard,
                &namespace.id,
                &execution.workflow_id,
                &run_id,
                deadline,
                || {
                    let progress = shard
                        .run_progress(&namespace.id, &execution.workflow_id, &run_id)?
                        .ok_or_else(not_found)?;
                    let ready = if close_only {
                        !progress.running
                    } else {
                        progress.next_event_id > from || !progress.running
                    };
                    if !ready && wait_new_event {
                        return Ok(None);
                    }
                    let state = shard
                        .load_state(&namespace.id, &execution.workflow_id, &run_id)?
                        .ok_or_else(not_found)?;
                    Ok(Some(state))
                },
            )
            .await?;
        match ready {
            Some(state) => {
                self.history_from(&shard, &state, from, page_size, wait_new_event, close_only)
            }
            None => {
                let again = PageToken {
                    run_id: run_id.clone(),
                    next_event_id: from,
                };
                Ok(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History::default()),
                    next_page_token: again.encode(),
                    ..Default::default()
                })
            }
        }
    }

    /// Waits on a run's changes until `check` answers something (checked at once, then after
    /// each change), or None when `deadline` passes first: the long polls of history,
    /// PollActivityExecution and DescribeActivityExecution.
    pub(super) async fn wait_on_run<T>(
        &self,
        shard: &crate::shard::Shard,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        deadline: tokio::time::Instant,
        mut check: impl FnMut() -> Result<Option<T>, Status>,
    ) -> Result<Option<T>, Status> {
        let mut changes = shard.watch_run(namespace_id, workflow_id, run_id);
        loop {
            changes.mark_seen();
            if let Some(answer) = check()? {
                return Ok(Some(answer));
            }
            let waited = {
                let _waiting = self.history_long_polls.waiting();
                tokio::time::timeout_at(deadline, changes.changed()).await
            };
            if waited.is_err() {
                return Ok(None);
            }
        }
    }

    fn history_from(
        &self,
        shard: &crate::shard::Shard,
        state: &MutableState,
        from: i64,
        page_size: i32,
        wait_new_event: bool,
        close_only: bool,
    ) -> Result<ws::GetWorkflowExecutionHistoryResponse, Status> {
        if close_only {
            let events = if state.close_event_id > 0 {
                shard.read_events(state, state.close_event_id, state.close_event_id + 1, 1)?
            } else {
                Vec::new()
            };
            return Ok(ws::GetWorkflowExecutionHistoryResponse {
                history: Some(History { events }),
                ..Default::default()
            });
        }
        let page = usize::try_from(page_size)
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_PAGE);
        let events = shard.read_events(state, from, state.next_event_id, page)?;
        let next = events.last().map_or(from, |e| e.event_id + 1);
        let more = next < state.next_event_id || (wait_new_event && state.is_running());
        Ok(ws::GetWorkflowExecutionHistoryResponse {
            history: Some(History { events }),
            next_page_token: if more {
                PageToken {
                    run_id: state.run_id.clone(),
                    next_event_id: next,
                }
                .encode()
            } else {
                Vec::new()
            },
            ..Default::default()
        })
    }

    /// The namespace's runs that `query` selects, in its order.
    async fn visible_runs(
        &self,
        namespace: &NamespaceRecord,
        query: &ListQuery,
    ) -> Result<Vec<MutableState>, Status> {
        let runs = self
            .scan_runs(namespace, |state| {
                // Runs of schedules and batch jobs are listed only by queries on
                // TemporalNamespaceDivision; standalone activities' never (they have their
                // own list).
                let hidden = state.activity_execution.is_some()
                    || (state.namespace_division().is_some() && !query.names_namespace_division());
                !hidden && query.matches(state)
            })
            .await?;
        Ok(query.sort(runs))
    }

    /// One page of the runs a list query selects and the token of the next page: what
    /// ListWorkflowExecutions, ScanWorkflowExecutions and ListOpen/ClosedWorkflowExecutions
    /// answer. Pages hold at most [`DEFAULT_PAGE`] runs, as in Temporal.
    async fn list_page(
        &self,
        namespace: &str,
        query: &str,
        page_size: i32,
        next_page_token: &[u8],
    ) -> Result<(Vec<WorkflowExecutionInfo>, Vec<u8>), Status> {
        let namespace = self.namespace(namespace).await?;
        let query = ListQuery::parse(query, &self.namespaces.search_attributes(&namespace.id)?)?;
        let runs = self.visible_runs(&namespace, &query).await?;
        let (page, next_page_token) =
            super::offset_page(&runs, page_size, next_page_token, DEFAULT_PAGE)?;
        let executions = page.iter().map(views::execution_info).collect();
        Ok((executions, next_page_token))
    }
}

/// The list query ListOpenWorkflowExecutions (`open`) or ListClosedWorkflowExecutions asks for,
/// built as Temporal's frontend builds it: open runs within the time range by StartTime, closed
/// ones by CloseTime, and at most one more condition.
fn legacy_list_query(
    open: bool,
    range: Option<filter::StartTimeFilter>,
    condition: Option<String>,
) -> Result<String, Status> {
    let nanos = |t: prost_wkt_types::Timestamp| proto::timestamp_ns(&t);
    let range = range.unwrap_or_default();
    let (earliest, latest) = (range.earliest_time.map(nanos), range.latest_time.map(nanos));
    let (status, time) = if open {
        ("ExecutionStatus = 'Running'", "StartTime")
    } else {
        ("ExecutionStatus != 'Running'", "CloseTime")
    };
    let mut terms = vec![status.to_string()];
    match (earliest, latest) {
        (Some(earliest), Some(latest)) if earliest > latest => {
            return Err(invalid(
                "EarliestTime in StartTimeFilter should not be larger than LatestTime.",
            ))
        }
        (Some(earliest), Some(latest)) => {
            terms.push(format!("{time} BETWEEN {earliest} AND {latest}"))
        }
        (Some(earliest), None) => terms.push(format!("{time} >= {earliest}")),
        (None, Some(latest)) => terms.push(format!("{time} <= {latest}")),
        (None, None) => {}
    }
    terms.extend(condition);
    Ok(terms.join(" AND "))
}

/// The legacy lists' execution filter (by workflow id; Temporal ignores its run id).
fn legacy_execution_filter(f: &filter::WorkflowExecutionFilter) -> String {
    format!("WorkflowId = {}", list_query::quote(&f.workflow_id))
}

/// The legacy lists' workflow type filter.
fn legacy_type_filter(f: &filter::WorkflowTypeFilter) -> String {
    format!("WorkflowType = {}", list_query::quote(&f.name))
}

/// The start fields StartWorkflowExecution and SignalWithStart share.
struct StartFields {
    workflow_id: String,
    request_id: String,
    workflow_type: String,
    task_queue: String,
    input: Option<common::Payloads>,
    execution_timeout: Option<prost_wkt_types::Duration>,
    run_timeout: Option<prost_wkt_types::Duration>,
    task_timeout: Option<prost_wkt_types::Duration>,
    identity: String,
    retry_policy: Option<common::RetryPolicy>,
    memo: Option<common::Memo>,
    search_attributes: Option<common::SearchAttributes>,
    header: Option<common::Header>,
    start_delay: Option<prost_wkt_types::Duration>,
    priority: Option<common::Priority>,
    user_metadata: Option<temporalio_protos::temporal::api::sdk::v1::UserMetadata>,
    cron_schedule: String,
    last_completion_result: Option<common::Payloads>,
    continued_failure: Option<proto::failure::Failure>,
    versioning_override: Option<proto::workflow::VersioningOverride>,
}

/// Serves a request on the node that runs matching (and the worker deployment records it
/// routes by): forwards it there, or answers it here with the frontend's `$rpc`.
macro_rules! on_matching_node {
    ($self:ident, $request:ident, $method:ident, $rpc:ident) => {{
        if let Some(mut node) = $self.matching_node(&$request)? {
            return node.$method(forwarded($request.into_inner())).await;
        }
        Ok(Response::new($self.$rpc($request.into_inner()).await?))
    }};
}

#[tonic::async_trait]
impl WorkflowService for Frontend {
    async fn get_system_info(
        &self,
        _request: Request<ws::GetSystemInfoRequest>,
    ) -> Rpc<ws::GetSystemInfoResponse> {
        Ok(Response::new(ws::GetSystemInfoResponse {
            server_version: SERVER_VERSION.into(),
            capabilities: Some(ws::get_system_info_response::Capabilities {
                signal_and_query_header: true,
                internal_error_differentiation: true,
                activity_failure_include_heartbeat: true,
                supports_schedules: true,
                encoded_failure_attributes: true,
                build_id_based_versioning: true,
                upsert_memo: true,
                eager_workflow_start: true,
                sdk_metadata: true,
                count_group_by_execution_status: true,
                nexus: false,
                ..Default::default()
            }),
        }))
    }

    async fn get_cluster_info(
        &self,
        _request: Request<ws::GetClusterInfoRequest>,
    ) -> Rpc<ws::GetClusterInfoResponse> {
        Ok(Response::new(ws::GetClusterInfoResponse {
            server_version: SERVER_VERSION.into(),
            cluster_id: self.cluster_id.clone(),
            cluster_name: "active".into(),
            history_shard_count: i32::try_from(self.shards.len()).unwrap_or(i32::MAX),
            persistence_store: "keel-rocksdb".into(),
            visibility_store: "keel-rocksdb".into(),
            ..Default::default()
        }))
    }

    async fn register_namespace(
        &self,
        request: Request<ws::RegisterNamespaceRequest>,
    ) -> Rpc<ws::RegisterNamespaceResponse> {
        let r = request.into_inner();
        if r.namespace.is_empty() {
            return Err(invalid("Namespace not set on request."));
        }
        check_id("Namespace", &r.namespace, true)?;
        let retention = proto::duration_ms(r.workflow_execution_retention_period.as_ref());
        self.check_retention(retention)?;
        self.namespaces
            .write(
                NamespaceRecord {
                    id: new_id(),
                    name: r.namespace,
                    description: r.description,
                    owner_email: r.owner_email,
                    retention_ms: retention,
                    data: r.data.into_iter().collect(),
                    state: enums::NamespaceState::Registered as i32,
                },
                true,
            )
            .await?;
        Ok(Response::new(ws::RegisterNamespaceResponse {}))
    }

    async fn describe_namespace(
        &self,
        request: Request<ws::DescribeNamespaceRequest>,
    ) -> Rpc<ws::DescribeNamespaceResponse> {
        let r = request.into_inner();
        let record = if !r.id.is_empty() {
            self.namespaces
                .by_id(&r.id)
                .ok_or_else(|| super::namespace_not_found(&r.id))?
        } else {
            self.namespace(&r.namespace).await?
        };
        Ok(Response::new(views::describe_namespace(&record)))
    }

    async fn list_namespaces(
        &self,
        request: Request<ws::ListNamespacesRequest>,
    ) -> Rpc<ws::ListNamespacesResponse> {
        let r = request.into_inner();
        let after =
            String::from_utf8(r.next_page_token).map_err(|_| invalid("Invalid NextPageToken."))?;
        let page = usize::try_from(r.page_size)
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_PAGE);
        let all = self.namespaces.list();
        let rest: Vec<_> = all.iter().filter(|ns| ns.name > after).collect();
        let next_page_token = if rest.len() > page {
            rest[page - 1].name.clone().into_bytes()
        } else {
            Vec::new()
        };
        Ok(Response::new(ws::ListNamespacesResponse {
            namespaces: rest
                .into_iter()
                .take(page)
                .map(views::describe_namespace)
                .collect(),
            next_page_token,
        }))
    }

    async fn update_namespace(
        &self,
        request: Request<ws::UpdateNamespaceRequest>,
    ) -> Rpc<ws::UpdateNamespaceResponse> {
        let r = request.into_inner();
        let mut record = self.namespace(&r.namespace).await?;
        if let Some(info) = r.update_info {
            if !info.description.is_empty() {
                record.description = info.description;
            }
            if !info.owner_email.is_empty() {
                record.owner_email = info.owner_email;
            }
            record.data.extend(info.data);
            if info.state != 0 {
                record.state = info.state;
            }
        }
        if let Some(config) = r.config {
            if config.workflow_execution_retention_ttl.is_some() {
                let retention =
                    proto::duration_ms(config.workflow_execution_retention_ttl.as_ref());
                self.check_retention(retention)?;
                record.retention_ms = retention;
            }
        }
        self.namespaces.write(record.clone(), false).await?;
        let described = views::describe_namespace(&record);
        Ok(Response::new(ws::UpdateNamespaceResponse {
            namespace_info: described.namespace_info,
            config: described.config,
            replication_config: described.replication_config,
            ..Default::default()
        }))
    }

    async fn start_workflow_execution(
        &self,
        request: Request<ws::StartWorkflowExecutionRequest>,
    ) -> Rpc<ws::StartWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let workflow_id = r.workflow_id.clone();
        let op = self.start_op(&namespace, r, None)?;
        match self.run_op(&namespace, &workflow_id, op).await? {
            OpResult::Started {
                run_id,
                started,
                eager_task,
                ..
            } => {
                let eager_workflow_task = match eager_task {
                    Some(task) => {
                        let state =
                            self.state_after_write(&namespace.id, &workflow_id, &run_id, None);
                        match state.await? {
                            Some(state) => {
                                Some(self.workflow_task_response(&namespace, &state, &task, false)?)
                            }
                            None => None,
                        }
                    }
                    None => None,
                };
                Ok(Response::new(ws::StartWorkflowExecutionResponse {
                    run_id,
                    started,
                    status: enums::WorkflowExecutionStatus::Running as i32,
                    eager_workflow_task,
                    ..Default::default()
                }))
            }
            OpResult::Reply { .. } => Err(Status::internal("unexpected reply to a start")),
        }
    }

    async fn signal_with_start_workflow_execution(
        &self,
        request: Request<ws::SignalWithStartWorkflowExecutionRequest>,
    ) -> Rpc<ws::SignalWithStartWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        if r.signal_name.is_empty() {
            return Err(invalid("SignalName is not set on request."));
        }
        self.check_payloads(r.signal_input.as_ref())?;
        let signal = Signal {
            name: r.signal_name,
            input: r.signal_input,
            identity: r.identity.clone(),
            header: r.header.clone(),
            request_id: r.request_id.clone(),
            external: None,
        };
        let mut args = self.start_args(
            &namespace,
            StartFields {
                workflow_id: r.workflow_id.clone(),
                request_id: r.request_id,
                workflow_type: r.workflow_type.map(|t| t.name).unwrap_or_default(),
                task_queue: r.task_queue.map(|q| q.name).unwrap_or_default(),
                input: r.input,
                execution_timeout: r.workflow_execution_timeout,
                run_timeout: r.workflow_run_timeout,
                task_timeout: r.workflow_task_timeout,
                identity: r.identity,
                retry_policy: r.retry_policy,
                memo: r.memo,
                search_attributes: r.search_attributes,
                header: r.header,
                start_delay: r.workflow_start_delay,
                priority: r.priority,
                user_metadata: r.user_metadata,
                cron_schedule: r.cron_schedule,
                last_completion_result: None,
                continued_failure: None,
                versioning_override: r.versioning_override,
            },
        )?;
        args.signal = Some(signal.clone());
        let conflict = if r.workflow_id_conflict_policy == 0 {
            enums::WorkflowIdConflictPolicy::UseExisting as i32
        } else {
            r.workflow_id_conflict_policy
        };
        let op = Op::Start {
            args: Box::new(args),
            reuse_policy: r.workflow_id_reuse_policy,
            conflict_policy: conflict,
            signal_if_running: Some(signal),
            update: None,
        };
        match self.run_op(&namespace, &r.workflow_id, op).await? {
            OpResult::Started {
                run_id, started, ..
            } => Ok(Response::new(
                ws::SignalWithStartWorkflowExecutionResponse {
                    run_id,
                    started,
                    ..Default::default()
                },
            )),
            OpResult::Reply { .. } => Err(Status::internal("unexpected reply to a start")),
        }
    }

    async fn poll_workflow_task_queue(
        &self,
        request: Request<ws::PollWorkflowTaskQueueRequest>,
    ) -> Rpc<ws::PollWorkflowTaskQueueResponse> {
        if let Some(mut node) = self.matching_node(&request)? {
            return node
                .poll_workflow_task_queue(forwarded(request.into_inner()))
                .await;
        }
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let task_queue = r.task_queue.unwrap_or_default();
        let sticky = task_queue.kind == enums::TaskQueueKind::Sticky as i32;
        check_id("TaskQueue", &task_queue.name, true)?;
        let lane = if sticky {
            String::new()
        } else {
            self.poller_lane(
                &namespace,
                &task_queue.name,
                TaskKind::Workflow,
                r.deployment_options.as_ref(),
            )
            .await?
        };
        let key = QueueKey {
            namespace_id: namespace.id.clone(),
            name: task_queue.name,
            kind: TaskKind::Workflow,
            lane,
        };
        self.apply_dispatch_rates(&key, None);
        let deadline = self.poll_deadline();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(dispatch) = self
                .matching
                .poll(&key, &r.identity, new_id(), self.now(), left)
                .await
            else {
                return Ok(Response::new(ws::PollWorkflowTaskQueueResponse::default()));
            };
            let (state, started) = match dispatch {
                Dispatch::Task(MatchTask::Query(query_id)) => {
                    if let Some(response) = self.query_task_response(&namespace, query_id).await? {
                        return Ok(Response::new(response));
                    }
                    continue;
                }
                Dispatch::Started(started) => (started.state, started.reply),
                Dispatch::Task(MatchTask::Run(RunTask {
                    workflow_id,
                    run_id,
                    task,
                    ..
                })) => {
                    let request = Engine::RecordWorkflowTaskStarted {
                        scheduled_event_id: task.scheduled_event_id,
                        attempt: task.attempt,
                        request_id: new_id(),
                        identity: r.identity.clone(),
                        // The shard's writer decides it.
                        target_version_changed: false,
                    };
                    let started = self
                        .run_request_state(&namespace, &workflow_id, &run_id, request)
                        .await;
                    let Ok((_, started, written)) = started else {
                        continue;
                    };
                    let state =
                        self.state_after_write(&namespace.id, &workflow_id, &run_id, written);
                    match state.await? {
                        Some(state) => (state, started),
                        None => continue,
                    }
                }
            };
            if let Reply::WorkflowTaskStarted(started) = started {
                return Ok(Response::new(
                    self.workflow_task_response(&namespace, &state, &started, sticky)?,
                ));
            }
        }
    }

    // binary_checksum and worker_version_stamp are deprecated but still sent by SDKs, and
    // Temporal still records them.
    #[allow(deprecated)]
    async fn respond_workflow_task_completed(
        &self,
        request: Request<ws::RespondWorkflowTaskCompletedRequest>,
    ) -> Rpc<ws::RespondWorkflowTaskCompletedResponse> {
        let r = request.into_inner();
        let TaskToken::Workflow {
            namespace_id,
            workflow_id,
            run_id,
            scheduled_event_id,
            attempt,
        } = TaskToken::decode(&r.task_token)?
        else {
            return Err(invalid("The task token is not a workflow task token."));
        };
        let namespace = self
            .namespaces
            .by_id(&namespace_id)
            .ok_or_else(|| super::namespace_not_found(&r.namespace))?;
        if r.versioning_behavior != 0 && !r.deployment_options.as_ref().is_some_and(is_versioned) {
            return Err(invalid(
                "versioning behavior cannot be specified without deployment options being set \
                 with versioned mode",
            ));
        }
        for command in &r.commands {
            use crate::engine::proto::command::command::Attributes as C;
            let payloads = match &command.attributes {
                Some(C::CompleteWorkflowExecutionCommandAttributes(a)) => a.result.as_ref(),
                Some(C::ScheduleActivityTaskCommandAttributes(a)) => a.input.as_ref(),
                _ => None,
            };
            self.check_payloads(payloads)?;
        }
        let request = Engine::CompleteWorkflowTask(Box::new(CompleteWorkflowTask {
            scheduled_event_id,
            attempt,
            commands: r.commands,
            messages: r.messages,
            identity: r.identity,
            binary_checksum: r.binary_checksum,
            sdk_metadata: r.sdk_metadata,
            metering_metadata: r.metering_metadata,
            worker_version: r.worker_version_stamp,
            deployment_options: r.deployment_options,
            versioning_behavior: r.versioning_behavior,
            return_new_workflow_task: r.return_new_workflow_task,
            force_create_new_workflow_task: r.force_create_new_workflow_task,
            new_task_request_id: new_id(),
            sticky: r.sticky_attributes.map(|s| {
                (
                    s.worker_task_queue.map(|q| q.name).unwrap_or_default(),
                    proto::duration_ms(s.schedule_to_start_timeout.as_ref()),
                )
            }),
        }));
        let (_, reply, written) = self
            .run_request_state(&namespace, &workflow_id, &run_id, request)
            .await?;
        let reset_history_event_id = match reply {
            Reply::WorkflowTaskDiscarded {
                reset_history_event_id,
            } => reset_history_event_id,
            _ => 0,
        };
        let (next_task, eager_activities) = match reply {
            Reply::WorkflowTaskStarted(started) => (Some(started), Vec::new()),
            Reply::EagerActivitiesStarted {
                next_task,
                activities,
            } => (next_task, activities),
            _ => (None, Vec::new()),
        };
        let mut workflow_task = None;
        let mut activity_tasks = Vec::new();
        if next_task.is_some() || !eager_activities.is_empty() {
            let state = self.state_after_write(&namespace.id, &workflow_id, &run_id, written);
            if let Some(state) = state.await? {
                if let Some(started) = next_task {
                    let sticky = !state.sticky_queue.is_empty();
                    workflow_task =
                        Some(self.workflow_task_response(&namespace, &state, &started, sticky)?);
                }
                activity_tasks = eager_activities
                    .into_iter()
                    .filter_map(|id| self.activity_task_response(&namespace, &state, id, 1))
                    .collect();
            }
        }
        Ok(Response::new(ws::RespondWorkflowTaskCompletedResponse {
            workflow_task,
            activity_tasks,
            reset_history_event_id,
        }))
    }

    async fn respond_workflow_task_failed(
        &self,
        request: Request<ws::RespondWorkflowTaskFailedRequest>,
    ) -> Rpc<ws::RespondWorkflowTaskFailedResponse> {
        let r = request.into_inner();
        let TaskToken::Workflow {
            namespace_id,
            workflow_id,
            run_id,
            scheduled_event_id,
            attempt,
        } = TaskToken::decode(&r.task_token)?
        else {
            return Err(invalid("The task token is not a workflow task token."));
        };
        let namespace = self
            .namespaces
            .by_id(&namespace_id)
            .ok_or_else(|| super::namespace_not_found(&r.namespace))?;
        let request = Engine::FailWorkflowTask {
            scheduled_event_id,
            attempt,
            cause: r.cause,
            failure: r.failure,
            identity: r.identity,
        };
        self.run_request(&namespace, &workflow_id, &run_id, request)
            .await?;
        Ok(Response::new(ws::RespondWorkflowTaskFailedResponse {}))
    }

    async fn poll_activity_task_queue(
        &self,
        request: Request<ws::PollActivityTaskQueueRequest>,
    ) -> Rpc<ws::PollActivityTaskQueueResponse> {
        if let Some(mut node) = self.matching_node(&request)? {
            return node
                .poll_activity_task_queue(forwarded(request.into_inner()))
                .await;
        }
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let queue = r.task_queue.map(|q| q.name).unwrap_or_default();
        check_id("TaskQueue", &queue, true)?;
        let lane = self
            .poller_lane(
                &namespace,
                &queue,
                TaskKind::Activity,
                r.deployment_options.as_ref(),
            )
            .await?;
        let key = QueueKey {
            namespace_id: namespace.id.clone(),
            name: queue,
            kind: TaskKind::Activity,
            lane,
        };
        self.apply_dispatch_rates(&key, r.task_queue_metadata.as_ref());
        let deadline = self.poll_deadline();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let dispatch = self
                .matching
                .poll(&key, &r.identity, new_id(), self.now(), left)
                .await;
            let (state, task) = match dispatch {
                None => return Ok(Response::new(ws::PollActivityTaskQueueResponse::default())),
                Some(Dispatch::Task(MatchTask::Query(_))) => continue,
                Some(Dispatch::Started(started)) => (started.state, started.task),
                Some(Dispatch::Task(MatchTask::Run(RunTask {
                    workflow_id,
                    run_id,
                    task,
                    ..
                }))) => {
                    let request = Engine::RecordActivityTaskStarted {
                        scheduled_event_id: task.scheduled_event_id,
                        attempt: task.attempt,
                        task_queue: task.task_queue.clone(),
                        request_id: new_id(),
                        identity: r.identity.clone(),
                    };
                    let Ok((_, Reply::ActivityTaskStarted { .. }, written)) = self
                        .run_request_state(&namespace, &workflow_id, &run_id, request)
                        .await
                    else {
                        continue;
                    };
                    let state =
                        self.state_after_write(&namespace.id, &workflow_id, &run_id, written);
                    match state.await? {
                        Some(state) => (state, task),
                        None => continue,
                    }
                }
            };
            if let Some(response) = self.activity_task_response(
                &namespace,
                &state,
                task.scheduled_event_id,
                task.attempt,
            ) {
                return Ok(Response::new(response));
            }
        }
    }

    async fn record_activity_task_heartbeat(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatRequest>,
    ) -> Rpc<ws::RecordActivityTaskHeartbeatResponse> {
        let r = request.into_inner();
        self.check_payloads(r.details.as_ref())?;
        let reply = self
            .activity_report(
                &r.task_token,
                &r.namespace,
                ActivityReport::Heartbeat(r.details),
                r.identity,
            )
            .await?;
        let Reply::Heartbeat {
            cancel_requested,
            paused,
            reset,
        } = reply
        else {
            return Err(Status::internal("unexpected reply to a heartbeat"));
        };
        Ok(Response::new(ws::RecordActivityTaskHeartbeatResponse {
            cancel_requested,
            activity_paused: paused,
            activity_reset: reset,
        }))
    }

    async fn record_activity_task_heartbeat_by_id(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Rpc<ws::RecordActivityTaskHeartbeatByIdResponse> {
        let r = request.into_inner();
        self.check_payloads(r.details.as_ref())?;
        let reply = self
            .activity_report_by_id(
                &r.namespace,
                &r.workflow_id,
                &r.run_id,
                &r.activity_id,
                ActivityReport::Heartbeat(r.details),
                r.identity,
            )
            .await?;
        let Reply::Heartbeat {
            cancel_requested,
            paused,
            reset,
        } = reply
        else {
            return Err(Status::internal("unexpected reply to a heartbeat"));
        };
        Ok(Response::new(ws::RecordActivityTaskHeartbeatByIdResponse {
            cancel_requested,
            activity_paused: paused,
            activity_reset: reset,
        }))
    }

    async fn respond_activity_task_completed(
        &self,
        request: Request<ws::RespondActivityTaskCompletedRequest>,
    ) -> Rpc<ws::RespondActivityTaskCompletedResponse> {
        let r = request.into_inner();
        self.check_payloads(r.result.as_ref())?;
        self.activity_report(
            &r.task_token,
            &r.namespace,
            ActivityReport::Completed(r.result),
            r.identity,
        )
        .await?;
        Ok(Response::new(
            ws::RespondActivityTaskCompletedResponse::default(),
        ))
    }

    async fn respond_activity_task_completed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCompletedByIdRequest>,
    ) -> Rpc<ws::RespondActivityTaskCompletedByIdResponse> {
        let r = request.into_inner();
        self.check_payloads(r.result.as_ref())?;
        self.activity_report_by_id(
            &r.namespace,
            &r.workflow_id,
            &r.run_id,
            &r.activity_id,
            ActivityReport::Completed(r.result),
            r.identity,
        )
        .await?;
        Ok(Response::new(
            ws::RespondActivityTaskCompletedByIdResponse::default(),
        ))
    }

    async fn respond_activity_task_failed(
        &self,
        request: Request<ws::RespondActivityTaskFailedRequest>,
    ) -> Rpc<ws::RespondActivityTaskFailedResponse> {
        let r = request.into_inner();
        let report = ActivityReport::Failed {
            failure: r.failure,
            last_heartbeat_details: r.last_heartbeat_details,
        };
        self.activity_report(&r.task_token, &r.namespace, report, r.identity)
            .await?;
        Ok(Response::new(
            ws::RespondActivityTaskFailedResponse::default(),
        ))
    }

    async fn respond_activity_task_failed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskFailedByIdRequest>,
    ) -> Rpc<ws::RespondActivityTaskFailedByIdResponse> {
        let r = request.into_inner();
        let report = ActivityReport::Failed {
            failure: r.failure,
            last_heartbeat_details: r.last_heartbeat_details,
        };
        self.activity_report_by_id(
            &r.namespace,
            &r.workflow_id,
            &r.run_id,
            &r.activity_id,
            report,
            r.identity,
        )
        .await?;
        Ok(Response::new(
            ws::RespondActivityTaskFailedByIdResponse::default(),
        ))
    }

    async fn respond_activity_task_canceled(
        &self,
        request: Request<ws::RespondActivityTaskCanceledRequest>,
    ) -> Rpc<ws::RespondActivityTaskCanceledResponse> {
        let r = request.into_inner();
        self.activity_report(
            &r.task_token,
            &r.namespace,
            ActivityReport::Canceled(r.details),
            r.identity,
        )
        .await?;
        Ok(Response::new(
            ws::RespondActivityTaskCanceledResponse::default(),
        ))
    }

    async fn respond_activity_task_canceled_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCanceledByIdRequest>,
    ) -> Rpc<ws::RespondActivityTaskCanceledByIdResponse> {
        let r = request.into_inner();
        self.activity_report_by_id(
            &r.namespace,
            &r.workflow_id,
            &r.run_id,
            &r.activity_id,
            ActivityReport::Canceled(r.details),
            r.identity,
        )
        .await?;
        Ok(Response::new(
            ws::RespondActivityTaskCanceledByIdResponse::default(),
        ))
    }

    async fn signal_workflow_execution(
        &self,
        request: Request<ws::SignalWorkflowExecutionRequest>,
    ) -> Rpc<ws::SignalWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        if r.signal_name.is_empty() {
            return Err(invalid("SignalName is not set on request."));
        }
        self.check_payloads(r.input.as_ref())?;
        let signal = Signal {
            name: r.signal_name,
            input: r.input,
            identity: r.identity,
            header: r.header,
            request_id: r.request_id,
            external: None,
        };
        self.run_request(
            &namespace,
            &execution.workflow_id,
            &execution.run_id,
            Engine::Signal(signal),
        )
        .await?;
        Ok(Response::new(ws::SignalWorkflowExecutionResponse::default()))
    }

    async fn request_cancel_workflow_execution(
        &self,
        request: Request<ws::RequestCancelWorkflowExecutionRequest>,
    ) -> Rpc<ws::RequestCancelWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        self.run_request(
            &namespace,
            &execution.workflow_id,
            &execution.run_id,
            Engine::Cancel {
                reason: r.reason,
                identity: r.identity,
                external: None,
            },
        )
        .await?;
        Ok(Response::new(
            ws::RequestCancelWorkflowExecutionResponse::default(),
        ))
    }

    async fn terminate_workflow_execution(
        &self,
        request: Request<ws::TerminateWorkflowExecutionRequest>,
    ) -> Rpc<ws::TerminateWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        self.check_payloads(r.details.as_ref())?;
        self.run_request(
            &namespace,
            &execution.workflow_id,
            &execution.run_id,
            Engine::Terminate {
                reason: r.reason,
                details: r.details,
                identity: r.identity,
            },
        )
        .await?;
        Ok(Response::new(
            ws::TerminateWorkflowExecutionResponse::default(),
        ))
    }

    async fn delete_workflow_execution(
        &self,
        request: Request<ws::DeleteWorkflowExecutionRequest>,
    ) -> Rpc<ws::DeleteWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        let op = Op::Delete {
            run_id: execution.run_id,
            expired_at_ns: None,
        };
        self.run_op(&namespace, &execution.workflow_id, op).await?;
        Ok(Response::new(ws::DeleteWorkflowExecutionResponse {}))
    }

    async fn query_workflow(
        &self,
        request: Request<ws::QueryWorkflowRequest>,
    ) -> Rpc<ws::QueryWorkflowResponse> {
        if let Some(mut node) = self.matching_node(&request)? {
            return node.query_workflow(forwarded(request.into_inner())).await;
        }
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.execution.unwrap_or_default();
        check_execution(&execution)?;
        let query = r
            .query
            .ok_or_else(|| invalid("Query is not set on request."))?;
        if query.query_type.is_empty() {
            return Err(invalid("QueryType is not set on request."));
        }
        let state = self
            .read_state(&namespace, &execution.workflow_id, &execution.run_id)
            .await?;
        let reject = enums::QueryRejectCondition::try_from(r.query_reject_condition)
            .unwrap_or(enums::QueryRejectCondition::None);
        let status = state.status.execution_status();
        let rejected = match reject {
            enums::QueryRejectCondition::NotOpen => !state.is_running(),
            enums::QueryRejectCondition::NotCompletedCleanly => {
                !state.is_running() && status != enums::WorkflowExecutionStatus::Completed
            }
            _ => false,
        };
        if rejected {
            return Ok(Response::new(ws::QueryWorkflowResponse {
                query_rejected: Some(temporalio_protos::temporal::api::query::v1::QueryRejected {
                    status: status as i32,
                }),
                ..Default::default()
            }));
        }
        if let Some(reason) = state.query_not_ready() {
            return Err(workflow_not_ready(reason));
        }
        let (id, answer) =
            self.queries
                .register(state.workflow_id.clone(), state.run_id.clone(), query);
        self.deployments.refresh();
        let (lane, _) = self.deployments.lane(
            &namespace.id,
            &state.task_queue,
            TaskKind::Workflow,
            state.versioning.as_deref(),
            &state.workflow_id,
        );
        self.matching.offer(
            QueueKey {
                namespace_id: namespace.id.clone(),
                name: state.task_queue.clone(),
                kind: TaskKind::Workflow,
                lane,
            },
            MatchTask::Query(id),
        );
        let answered = tokio::time::timeout(QUERY_WAIT, answer).await;
        self.queries.forget(id);
        let answer = match answered {
            Ok(Ok(answer)) => answer,
            _ => {
                return Err(Status::deadline_exceeded(
                    "query timed out: no worker answered (is a worker polling the workflow's task queue?)",
                ))
            }
        };
        if answer.completed_type == enums::QueryResultType::Answered as i32 {
            Ok(Response::new(ws::QueryWorkflowResponse {
                query_result: answer.query_result,
                ..Default::default()
            }))
        } else {
            Err(query_failed(answer.error_message, answer.failure))
        }
    }

    async fn respond_query_task_completed(
        &self,
        request: Request<ws::RespondQueryTaskCompletedRequest>,
    ) -> Rpc<ws::RespondQueryTaskCompletedResponse> {
        if let Some(mut node) = self.matching_node(&request)? {
            return node
                .respond_query_task_completed(forwarded(request.into_inner()))
                .await;
        }
        let r = request.into_inner();
        let TaskToken::Query { query_id } = TaskToken::decode(&r.task_token)? else {
            return Err(invalid("The task token is not a query task token."));
        };
        if !self.queries.answer(query_id, r) {
            return Err(Status::not_found("Query does not exist or has timed out."));
        }
        Ok(Response::new(ws::RespondQueryTaskCompletedResponse {}))
    }

    async fn execute_multi_operation(
        &self,
        request: Request<ws::ExecuteMultiOperationRequest>,
    ) -> Rpc<ws::ExecuteMultiOperationResponse> {
        Ok(Response::new(
            self.update_with_start(request.into_inner()).await?,
        ))
    }

    async fn update_workflow_execution(
        &self,
        request: Request<ws::UpdateWorkflowExecutionRequest>,
    ) -> Rpc<ws::UpdateWorkflowExecutionResponse> {
        Ok(Response::new(
            self.update_workflow(request.into_inner()).await?,
        ))
    }

    async fn poll_workflow_execution_update(
        &self,
        request: Request<ws::PollWorkflowExecutionUpdateRequest>,
    ) -> Rpc<ws::PollWorkflowExecutionUpdateResponse> {
        Ok(Response::new(self.poll_update(request.into_inner()).await?))
    }

    async fn update_workflow_execution_options(
        &self,
        request: Request<ws::UpdateWorkflowExecutionOptionsRequest>,
    ) -> Rpc<ws::UpdateWorkflowExecutionOptionsResponse> {
        Ok(Response::new(
            self.update_workflow_execution_options_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn pause_activity(
        &self,
        request: Request<ws::PauseActivityRequest>,
    ) -> Rpc<ws::PauseActivityResponse> {
        Ok(Response::new(
            self.pause_activity_rpc(request.into_inner()).await?,
        ))
    }

    async fn unpause_activity(
        &self,
        request: Request<ws::UnpauseActivityRequest>,
    ) -> Rpc<ws::UnpauseActivityResponse> {
        Ok(Response::new(
            self.unpause_activity_rpc(request.into_inner()).await?,
        ))
    }

    async fn reset_activity(
        &self,
        request: Request<ws::ResetActivityRequest>,
    ) -> Rpc<ws::ResetActivityResponse> {
        Ok(Response::new(
            self.reset_activity_rpc(request.into_inner()).await?,
        ))
    }

    async fn update_activity_options(
        &self,
        request: Request<ws::UpdateActivityOptionsRequest>,
    ) -> Rpc<ws::UpdateActivityOptionsResponse> {
        Ok(Response::new(
            self.update_activity_options_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn start_activity_execution(
        &self,
        request: Request<ws::StartActivityExecutionRequest>,
    ) -> Rpc<ws::StartActivityExecutionResponse> {
        Ok(Response::new(
            self.start_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn describe_activity_execution(
        &self,
        request: Request<ws::DescribeActivityExecutionRequest>,
    ) -> Rpc<ws::DescribeActivityExecutionResponse> {
        Ok(Response::new(
            self.describe_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn poll_activity_execution(
        &self,
        request: Request<ws::PollActivityExecutionRequest>,
    ) -> Rpc<ws::PollActivityExecutionResponse> {
        Ok(Response::new(
            self.poll_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn list_activity_executions(
        &self,
        request: Request<ws::ListActivityExecutionsRequest>,
    ) -> Rpc<ws::ListActivityExecutionsResponse> {
        Ok(Response::new(
            self.list_activity_executions_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn count_activity_executions(
        &self,
        request: Request<ws::CountActivityExecutionsRequest>,
    ) -> Rpc<ws::CountActivityExecutionsResponse> {
        Ok(Response::new(
            self.count_activity_executions_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn request_cancel_activity_execution(
        &self,
        request: Request<ws::RequestCancelActivityExecutionRequest>,
    ) -> Rpc<ws::RequestCancelActivityExecutionResponse> {
        Ok(Response::new(
            self.request_cancel_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn terminate_activity_execution(
        &self,
        request: Request<ws::TerminateActivityExecutionRequest>,
    ) -> Rpc<ws::TerminateActivityExecutionResponse> {
        Ok(Response::new(
            self.terminate_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn delete_activity_execution(
        &self,
        request: Request<ws::DeleteActivityExecutionRequest>,
    ) -> Rpc<ws::DeleteActivityExecutionResponse> {
        Ok(Response::new(
            self.delete_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn pause_activity_execution(
        &self,
        request: Request<ws::PauseActivityExecutionRequest>,
    ) -> Rpc<ws::PauseActivityExecutionResponse> {
        Ok(Response::new(
            self.pause_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn unpause_activity_execution(
        &self,
        request: Request<ws::UnpauseActivityExecutionRequest>,
    ) -> Rpc<ws::UnpauseActivityExecutionResponse> {
        Ok(Response::new(
            self.unpause_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn reset_activity_execution(
        &self,
        request: Request<ws::ResetActivityExecutionRequest>,
    ) -> Rpc<ws::ResetActivityExecutionResponse> {
        Ok(Response::new(
            self.reset_activity_execution_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn update_activity_execution_options(
        &self,
        request: Request<ws::UpdateActivityExecutionOptionsRequest>,
    ) -> Rpc<ws::UpdateActivityExecutionOptionsResponse> {
        Ok(Response::new(
            self.update_activity_execution_options_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn start_batch_operation(
        &self,
        request: Request<ws::StartBatchOperationRequest>,
    ) -> Rpc<ws::StartBatchOperationResponse> {
        Ok(Response::new(
            self.start_batch_operation_rpc(request.into_inner()).await?,
        ))
    }

    async fn describe_worker_deployment(
        &self,
        request: Request<ws::DescribeWorkerDeploymentRequest>,
    ) -> Rpc<ws::DescribeWorkerDeploymentResponse> {
        on_matching_node!(
            self,
            request,
            describe_worker_deployment,
            describe_worker_deployment_rpc
        )
    }

    async fn list_worker_deployments(
        &self,
        request: Request<ws::ListWorkerDeploymentsRequest>,
    ) -> Rpc<ws::ListWorkerDeploymentsResponse> {
        on_matching_node!(
            self,
            request,
            list_worker_deployments,
            list_worker_deployments_rpc
        )
    }

    async fn describe_worker_deployment_version(
        &self,
        request: Request<ws::DescribeWorkerDeploymentVersionRequest>,
    ) -> Rpc<ws::DescribeWorkerDeploymentVersionResponse> {
        on_matching_node!(
            self,
            request,
            describe_worker_deployment_version,
            describe_worker_deployment_version_rpc
        )
    }

    async fn set_worker_deployment_current_version(
        &self,
        request: Request<ws::SetWorkerDeploymentCurrentVersionRequest>,
    ) -> Rpc<ws::SetWorkerDeploymentCurrentVersionResponse> {
        on_matching_node!(
            self,
            request,
            set_worker_deployment_current_version,
            set_current_version_rpc
        )
    }

    async fn set_worker_deployment_ramping_version(
        &self,
        request: Request<ws::SetWorkerDeploymentRampingVersionRequest>,
    ) -> Rpc<ws::SetWorkerDeploymentRampingVersionResponse> {
        on_matching_node!(
            self,
            request,
            set_worker_deployment_ramping_version,
            set_ramping_version_rpc
        )
    }

    async fn create_worker_deployment(
        &self,
        request: Request<ws::CreateWorkerDeploymentRequest>,
    ) -> Rpc<ws::CreateWorkerDeploymentResponse> {
        on_matching_node!(
            self,
            request,
            create_worker_deployment,
            create_worker_deployment_rpc
        )
    }

    async fn create_worker_deployment_version(
        &self,
        request: Request<ws::CreateWorkerDeploymentVersionRequest>,
    ) -> Rpc<ws::CreateWorkerDeploymentVersionResponse> {
        on_matching_node!(
            self,
            request,
            create_worker_deployment_version,
            create_worker_deployment_version_rpc
        )
    }

    async fn delete_worker_deployment(
        &self,
        request: Request<ws::DeleteWorkerDeploymentRequest>,
    ) -> Rpc<ws::DeleteWorkerDeploymentResponse> {
        on_matching_node!(
            self,
            request,
            delete_worker_deployment,
            delete_worker_deployment_rpc
        )
    }

    async fn delete_worker_deployment_version(
        &self,
        request: Request<ws::DeleteWorkerDeploymentVersionRequest>,
    ) -> Rpc<ws::DeleteWorkerDeploymentVersionResponse> {
        on_matching_node!(
            self,
            request,
            delete_worker_deployment_version,
            delete_worker_deployment_version_rpc
        )
    }

    async fn update_worker_deployment_version_metadata(
        &self,
        request: Request<ws::UpdateWorkerDeploymentVersionMetadataRequest>,
    ) -> Rpc<ws::UpdateWorkerDeploymentVersionMetadataResponse> {
        on_matching_node!(
            self,
            request,
            update_worker_deployment_version_metadata,
            update_version_metadata_rpc
        )
    }

    async fn set_worker_deployment_manager(
        &self,
        request: Request<ws::SetWorkerDeploymentManagerRequest>,
    ) -> Rpc<ws::SetWorkerDeploymentManagerResponse> {
        on_matching_node!(
            self,
            request,
            set_worker_deployment_manager,
            set_manager_rpc
        )
    }

    async fn update_task_queue_config(
        &self,
        request: Request<ws::UpdateTaskQueueConfigRequest>,
    ) -> Rpc<ws::UpdateTaskQueueConfigResponse> {
        on_matching_node!(
            self,
            request,
            update_task_queue_config,
            update_task_queue_config_rpc
        )
    }

    async fn describe_batch_operation(
        &self,
        request: Request<ws::DescribeBatchOperationRequest>,
    ) -> Rpc<ws::DescribeBatchOperationResponse> {
        Ok(Response::new(
            self.describe_batch_operation_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn list_batch_operations(
        &self,
        request: Request<ws::ListBatchOperationsRequest>,
    ) -> Rpc<ws::ListBatchOperationsResponse> {
        Ok(Response::new(
            self.list_batch_operations_rpc(request.into_inner()).await?,
        ))
    }

    async fn stop_batch_operation(
        &self,
        request: Request<ws::StopBatchOperationRequest>,
    ) -> Rpc<ws::StopBatchOperationResponse> {
        Ok(Response::new(
            self.stop_batch_operation_rpc(request.into_inner()).await?,
        ))
    }

    async fn create_schedule(
        &self,
        request: Request<ws::CreateScheduleRequest>,
    ) -> Rpc<ws::CreateScheduleResponse> {
        Ok(Response::new(
            self.create_schedule_rpc(request.into_inner()).await?,
        ))
    }

    async fn describe_schedule(
        &self,
        request: Request<ws::DescribeScheduleRequest>,
    ) -> Rpc<ws::DescribeScheduleResponse> {
        Ok(Response::new(
            self.describe_schedule_rpc(request.into_inner()).await?,
        ))
    }

    async fn update_schedule(
        &self,
        request: Request<ws::UpdateScheduleRequest>,
    ) -> Rpc<ws::UpdateScheduleResponse> {
        Ok(Response::new(
            self.update_schedule_rpc(request.into_inner()).await?,
        ))
    }

    async fn patch_schedule(
        &self,
        request: Request<ws::PatchScheduleRequest>,
    ) -> Rpc<ws::PatchScheduleResponse> {
        Ok(Response::new(
            self.patch_schedule_rpc(request.into_inner()).await?,
        ))
    }

    async fn delete_schedule(
        &self,
        request: Request<ws::DeleteScheduleRequest>,
    ) -> Rpc<ws::DeleteScheduleResponse> {
        Ok(Response::new(
            self.delete_schedule_rpc(request.into_inner()).await?,
        ))
    }

    async fn list_schedules(
        &self,
        request: Request<ws::ListSchedulesRequest>,
    ) -> Rpc<ws::ListSchedulesResponse> {
        Ok(Response::new(
            self.list_schedules_rpc(request.into_inner()).await?,
        ))
    }

    async fn count_schedules(
        &self,
        request: Request<ws::CountSchedulesRequest>,
    ) -> Rpc<ws::CountSchedulesResponse> {
        Ok(Response::new(
            self.count_schedules_rpc(request.into_inner()).await?,
        ))
    }

    async fn list_schedule_matching_times(
        &self,
        request: Request<ws::ListScheduleMatchingTimesRequest>,
    ) -> Rpc<ws::ListScheduleMatchingTimesResponse> {
        Ok(Response::new(
            self.list_schedule_matching_times_rpc(request.into_inner())
                .await?,
        ))
    }

    async fn describe_workflow_execution(
        &self,
        request: Request<ws::DescribeWorkflowExecutionRequest>,
    ) -> Rpc<ws::DescribeWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.execution.unwrap_or_default();
        check_execution(&execution)?;
        let state = self
            .read_state(&namespace, &execution.workflow_id, &execution.run_id)
            .await?;
        Ok(Response::new(views::describe(&state, self.now())))
    }

    async fn get_workflow_execution_history(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryRequest>,
    ) -> Rpc<ws::GetWorkflowExecutionHistoryResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let close_only =
            r.history_event_filter_type == enums::HistoryEventFilterType::CloseEvent as i32;
        Ok(Response::new(
            self.history_page(
                &namespace,
                r.execution,
                r.maximum_page_size,
                &r.next_page_token,
                r.wait_new_event,
                close_only,
            )
            .await?,
        ))
    }

    async fn get_workflow_execution_history_reverse(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryReverseRequest>,
    ) -> Rpc<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.execution.unwrap_or_default();
        check_execution(&execution)?;
        let token = PageToken::decode(&r.next_page_token)?;
        let run_id = token
            .as_ref()
            .map(|t| t.run_id.clone())
            .unwrap_or(execution.run_id);
        let state = self
            .read_state(&namespace, &execution.workflow_id, &run_id)
            .await?;
        let end = token.map_or(state.next_event_id, |t| t.next_event_id);
        let page = usize::try_from(r.maximum_page_size)
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_PAGE) as i64;
        let start = (end - page).max(1);
        let shard = self.shard(&namespace.id, &execution.workflow_id);
        let mut events = shard.read_events(&state, start, end, usize::MAX)?;
        events.reverse();
        Ok(Response::new(
            ws::GetWorkflowExecutionHistoryReverseResponse {
                history: Some(History { events }),
                next_page_token: if start > 1 {
                    PageToken {
                        run_id: state.run_id.clone(),
                        next_event_id: start,
                    }
                    .encode()
                } else {
                    Vec::new()
                },
            },
        ))
    }

    async fn list_workflow_executions(
        &self,
        request: Request<ws::ListWorkflowExecutionsRequest>,
    ) -> Rpc<ws::ListWorkflowExecutionsResponse> {
        let r = request.into_inner();
        let (executions, next_page_token) = self
            .list_page(&r.namespace, &r.query, r.page_size, &r.next_page_token)
            .await?;
        Ok(Response::new(ws::ListWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn scan_workflow_executions(
        &self,
        request: Request<ws::ScanWorkflowExecutionsRequest>,
    ) -> Rpc<ws::ScanWorkflowExecutionsResponse> {
        let r = request.into_inner();
        let (executions, next_page_token) = self
            .list_page(&r.namespace, &r.query, r.page_size, &r.next_page_token)
            .await?;
        Ok(Response::new(ws::ScanWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn list_open_workflow_executions(
        &self,
        request: Request<ws::ListOpenWorkflowExecutionsRequest>,
    ) -> Rpc<ws::ListOpenWorkflowExecutionsResponse> {
        use ws::list_open_workflow_executions_request::Filters;
        let r = request.into_inner();
        let filter = match r.filters {
            Some(Filters::ExecutionFilter(f)) => Some(legacy_execution_filter(&f)),
            Some(Filters::TypeFilter(f)) => Some(legacy_type_filter(&f)),
            None => None,
        };
        let query = legacy_list_query(true, r.start_time_filter, filter)?;
        let (executions, next_page_token) = self
            .list_page(
                &r.namespace,
                &query,
                r.maximum_page_size,
                &r.next_page_token,
            )
            .await?;
        Ok(Response::new(ws::ListOpenWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn list_closed_workflow_executions(
        &self,
        request: Request<ws::ListClosedWorkflowExecutionsRequest>,
    ) -> Rpc<ws::ListClosedWorkflowExecutionsResponse> {
        use ws::list_closed_workflow_executions_request::Filters;
        let r = request.into_inner();
        let filter = match r.filters {
            Some(Filters::ExecutionFilter(f)) => Some(legacy_execution_filter(&f)),
            Some(Filters::TypeFilter(f)) => Some(legacy_type_filter(&f)),
            Some(Filters::StatusFilter(f)) => {
                let running = enums::WorkflowExecutionStatus::Running as i32;
                let unspecified = enums::WorkflowExecutionStatus::Unspecified as i32;
                if f.status == running || f.status == unspecified {
                    return Err(invalid(
                        "StatusFilter must be specified and must be not Running.",
                    ));
                }
                Some(format!("ExecutionStatus = {}", f.status))
            }
            None => None,
        };
        let query = legacy_list_query(false, r.start_time_filter, filter)?;
        let (executions, next_page_token) = self
            .list_page(
                &r.namespace,
                &query,
                r.maximum_page_size,
                &r.next_page_token,
            )
            .await?;
        Ok(Response::new(ws::ListClosedWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn count_workflow_executions(
        &self,
        request: Request<ws::CountWorkflowExecutionsRequest>,
    ) -> Rpc<ws::CountWorkflowExecutionsResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let query = ListQuery::parse(&r.query, &self.namespaces.search_attributes(&namespace.id)?)?;
        let runs = self.visible_runs(&namespace, &query).await?;
        Ok(Response::new(ws::CountWorkflowExecutionsResponse {
            count: runs.len() as i64,
            groups: if query.groups_by_status() {
                list_query::status_groups(&runs)
            } else {
                Vec::new()
            },
        }))
    }

    async fn describe_task_queue(
        &self,
        request: Request<ws::DescribeTaskQueueRequest>,
    ) -> Rpc<ws::DescribeTaskQueueResponse> {
        if let Some(mut node) = self.matching_node(&request)? {
            return node
                .describe_task_queue(forwarded(request.into_inner()))
                .await;
        }
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let name = r.task_queue.map(|q| q.name).unwrap_or_default();
        check_id("TaskQueue", &name, true)?;
        let kind = if r.task_queue_type == enums::TaskQueueType::Activity as i32 {
            TaskKind::Activity
        } else {
            TaskKind::Workflow
        };
        let key = QueueKey {
            namespace_id: namespace.id,
            name,
            kind,
            lane: String::new(),
        };
        let pollers = self
            .matching
            .pollers(&key, self.pollers_since())
            .into_iter()
            .map(|p| tq::PollerInfo {
                last_access_time: Some(proto::timestamp(p.last_access_ns)),
                identity: p.identity,
                rate_per_second: 100_000.0,
                ..Default::default()
            })
            .collect();
        let stats = r.report_stats.then(|| tq::TaskQueueStats {
            approximate_backlog_count: self.matching.backlog(&key) as i64,
            ..Default::default()
        });
        let effective_rate_limit = self.effective_rate_limit(&key);
        let config = r.report_config.then(|| {
            self.queue_configs
                .get(&key.namespace_id, r.task_queue_type.max(1), &key.name)
        });
        Ok(Response::new(ws::DescribeTaskQueueResponse {
            pollers,
            stats,
            effective_rate_limit,
            config,
            ..Default::default()
        }))
    }

    async fn list_task_queue_partitions(
        &self,
        request: Request<ws::ListTaskQueuePartitionsRequest>,
    ) -> Rpc<ws::ListTaskQueuePartitionsResponse> {
        let r = request.into_inner();
        self.namespace(&r.namespace).await?;
        let name = r.task_queue.map(|q| q.name).unwrap_or_default();
        check_id("TaskQueue", &name, true)?;
        // Each task queue is one partition, on the node that runs matching.
        let owner_host_name = self.owner.address().map_err(Status::unavailable)?;
        let partitions = vec![tq::TaskQueuePartitionMetadata {
            key: name,
            owner_host_name,
        }];
        Ok(Response::new(ws::ListTaskQueuePartitionsResponse {
            activity_task_queue_partitions: partitions.clone(),
            workflow_task_queue_partitions: partitions,
        }))
    }

    async fn reset_sticky_task_queue(
        &self,
        request: Request<ws::ResetStickyTaskQueueRequest>,
    ) -> Rpc<ws::ResetStickyTaskQueueResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.execution.unwrap_or_default();
        check_execution(&execution)?;
        self.run_request(
            &namespace,
            &execution.workflow_id,
            &execution.run_id,
            Engine::ResetSticky,
        )
        .await?;
        Ok(Response::new(ws::ResetStickyTaskQueueResponse {}))
    }

    async fn reset_workflow_execution(
        &self,
        request: Request<ws::ResetWorkflowExecutionRequest>,
    ) -> Rpc<ws::ResetWorkflowExecutionResponse> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        check_id("RequestId", &r.request_id, false)?;
        if !r.post_reset_operations.is_empty() {
            return Err(Status::unimplemented(
                "Keel does not support post-reset operations yet; reset without them.",
            ));
        }
        let exclude_signals = r
            .reset_reapply_exclude_types
            .contains(&(enums::ResetReapplyExcludeType::Signal as i32));
        #[allow(deprecated)]
        let reapply_none = r.reset_reapply_type == enums::ResetReapplyType::None as i32;
        let args = crate::engine::ResetArgs {
            new_run_id: new_run_id(),
            request_id: if r.request_id.is_empty() {
                new_id()
            } else {
                r.request_id
            },
            reason: r.reason,
            workflow_task_finish_event_id: r.workflow_task_finish_event_id,
            reapply_signals: !exclude_signals && !reapply_none,
        };
        let op = Op::Reset {
            run_id: execution.run_id,
            args,
        };
        match self.run_op(&namespace, &execution.workflow_id, op).await? {
            OpResult::Started { run_id, .. } => {
                Ok(Response::new(ws::ResetWorkflowExecutionResponse { run_id }))
            }
            OpResult::Reply { .. } => Err(Status::internal("unexpected reply to a reset")),
        }
    }

    async fn shutdown_worker(
        &self,
        request: Request<ws::ShutdownWorkerRequest>,
    ) -> Rpc<ws::ShutdownWorkerResponse> {
        if let Some(mut node) = self.matching_node(&request)? {
            return node.shutdown_worker(forwarded(request.into_inner())).await;
        }
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        self.matching.forget_poller(&namespace.id, &r.identity);
        Ok(Response::new(ws::ShutdownWorkerResponse::default()))
    }

    async fn get_search_attributes(
        &self,
        _request: Request<ws::GetSearchAttributesRequest>,
    ) -> Rpc<ws::GetSearchAttributesResponse> {
        Ok(Response::new(ws::GetSearchAttributesResponse {
            keys: views::system_search_attributes(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Option<prost_wkt_types::Timestamp> {
        Some(prost_wkt_types::Timestamp { seconds, nanos: 5 })
    }

    #[test]
    fn legacy_lists_build_the_queries_temporal_builds() {
        let range = |earliest, latest| {
            Some(filter::StartTimeFilter {
                earliest_time: earliest,
                latest_time: latest,
            })
        };
        let open = legacy_list_query(true, range(time(1), time(2)), None);
        assert_eq!(
            open.as_deref().ok(),
            Some("ExecutionStatus = 'Running' AND StartTime BETWEEN 1000000005 AND 2000000005")
        );
        let by_id = legacy_execution_filter(&filter::WorkflowExecutionFilter {
            workflow_id: "it's".into(),
            run_id: "ignored".into(),
        });
        let closed = legacy_list_query(false, range(None, time(2)), Some(by_id));
        assert_eq!(
            closed.as_deref().ok(),
            Some("ExecutionStatus != 'Running' AND CloseTime <= 2000000005 AND WorkflowId = 'it\\'s'")
        );
        let by_type = legacy_type_filter(&filter::WorkflowTypeFilter { name: "T".into() });
        let closed = legacy_list_query(false, range(time(1), None), Some(by_type));
        assert_eq!(
            closed.as_deref().ok(),
            Some("ExecutionStatus != 'Running' AND CloseTime >= 1000000005 AND WorkflowType = 'T'")
        );
        for query in [open, closed] {
            let query = query.unwrap_or_else(|e| panic!("{e}"));
            if let Err(e) = ListQuery::parse(&query, &Default::default()) {
                panic!("{query:?}: {e}");
            }
        }
        let inverted = legacy_list_query(true, range(time(2), time(1)), None);
        assert!(inverted.is_err_and(|e| e.message().contains("should not be larger")));
        assert_eq!(
            legacy_list_query(true, None, None).as_deref().ok(),
            Some("ExecutionStatus = 'Running'")
        );
    }
}
