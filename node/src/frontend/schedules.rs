//! The schedule RPCs (Create, Describe, Update, Patch, Delete, List, Count,
//! ListScheduleMatchingTimes).
//! A schedule is the run `temporal-sys-scheduler:ID` (engine::schedule); these RPCs validate
//! what they receive as Temporal does, then start, change or read that run.

use std::time::Duration;

use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::invalid;
use super::{check_id, Frontend};
use crate::engine::proto::{self, common, enums};
use crate::engine::schedule::{self, sched, NewSchedule, ScheduleRequest, ScheduleState};
use crate::engine::schedule_spec::{canonical, clean_ranges, CompiledSpec};
use crate::engine::{MutableState, Request as Engine, StartArgs};
use crate::list_query::ListQuery;
use crate::namespaces::{NamespaceRecord, SearchAttributeTypes};
use crate::shard::{Op, ShardError};

/// Future action times DescribeSchedule shows.
const DESCRIBE_FUTURE_TIMES: usize = 10;
/// Future action times a ListSchedules entry shows.
const LIST_FUTURE_TIMES: usize = 5;
/// Recent actions a ListSchedules entry shows.
const LIST_RECENT_ACTIONS: usize = 5;
/// Longest DescribeSchedule waits for actions being started to show up.
const DESCRIBE_SETTLE: Duration = Duration::from_secs(5);
/// Most times ListScheduleMatchingTimes answers.
const MAX_MATCHING_TIMES: usize = 1000;
/// Largest page of ListSchedules.
const MAX_PAGE: usize = 1000;

fn workflow_id(schedule_id: &str) -> String {
    format!("{}{schedule_id}", schedule::WORKFLOW_ID_PREFIX)
}

fn schedule_not_found(schedule_id: &str) -> Status {
    Status::not_found(format!("schedule {schedule_id:?} not found"))
}

/// Gives every search attribute its registered type (payload metadata `type`), as Temporal
/// does for what a schedule stores; an unregistered name is refused.
pub(super) fn type_search_attributes(
    types: &SearchAttributeTypes,
    attributes: &mut Option<common::SearchAttributes>,
) -> Result<(), Status> {
    let Some(attributes) = attributes.as_mut() else {
        return Ok(());
    };
    for (name, payload) in &mut attributes.indexed_fields {
        let kind = types.get(name).copied().ok_or_else(|| {
            invalid(format!(
                "search attribute {name} is not defined; add it with \
                 `temporal operator search-attribute create`"
            ))
        })?;
        if let Some(type_name) = crate::list_query::type_name(kind) {
            payload
                .metadata
                .entry("type".to_string())
                .or_insert_with(|| type_name.as_bytes().to_vec());
        }
    }
    Ok(())
}

impl Frontend {
    /// The namespace's custom search attributes and the system ones, with their types.
    pub(super) fn attribute_types(
        &self,
        namespace: &NamespaceRecord,
    ) -> Result<SearchAttributeTypes, Status> {
        let mut types: SearchAttributeTypes = super::views::system_search_attributes()
            .into_iter()
            .collect();
        types.extend(self.namespaces.search_attributes(&namespace.id)?);
        Ok(types)
    }

    /// Validates a schedule and fills in what Temporal fills in (retry policy defaults, search
    /// attribute types).
    fn checked_schedule(
        &self,
        types: &SearchAttributeTypes,
        schedule: Option<sched::Schedule>,
    ) -> Result<sched::Schedule, Status> {
        let mut schedule = schedule.ok_or_else(|| invalid("Schedule is not set on request."))?;
        schedule::validate(&schedule).map_err(|e| invalid(format!("invalid schedule: {e}")))?;
        if let Some(sched::schedule_action::Action::StartWorkflow(start)) =
            schedule.action.as_mut().and_then(|a| a.action.as_mut())
        {
            check_id("WorkflowId", &start.workflow_id, true)?;
            self.check_payloads(start.input.as_ref())?;
            if let Some(policy) = start.retry_policy.as_mut() {
                let full = crate::engine::retry_policy(Some(policy)).map_err(invalid)?;
                *policy = crate::engine::retry_policy_proto(&full);
            }
            type_search_attributes(types, &mut start.search_attributes)?;
        }
        // Temporal stores the policies' defaults, and describes them.
        let policies = schedule.policies.get_or_insert_with(Default::default);
        if policies.overlap_policy == enums::ScheduleOverlapPolicy::Unspecified as i32 {
            policies.overlap_policy = enums::ScheduleOverlapPolicy::Skip as i32;
        }
        if proto::duration_ms(policies.catchup_window.as_ref()) == 0 {
            policies.catchup_window = proto::duration(schedule::DEFAULT_CATCHUP_MS);
        }
        Ok(schedule)
    }

    /// The running schedule run of `schedule_id`, read linearizably.
    async fn schedule_run(
        &self,
        namespace: &NamespaceRecord,
        schedule_id: &str,
    ) -> Result<MutableState, Status> {
        check_id("ScheduleId", schedule_id, true)?;
        match self
            .read_state(namespace, &workflow_id(schedule_id), "")
            .await
        {
            Ok(state) if state.is_running() && state.schedule.is_some() => Ok(state),
            Ok(_) => Err(schedule_not_found(schedule_id)),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(schedule_not_found(schedule_id))
            }
            Err(status) => Err(status),
        }
    }

    /// Runs a schedule request on the schedule's current run.
    async fn schedule_request(
        &self,
        namespace: &NamespaceRecord,
        schedule_id: &str,
        request: Engine,
    ) -> Result<(), Status> {
        let state = self.schedule_run(namespace, schedule_id).await?;
        match self
            .run_request(namespace, &state.workflow_id, &state.run_id, request)
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(schedule_not_found(schedule_id))
            }
            Err(status) => Err(status),
        }
    }

    pub(super) async fn create_schedule_rpc(
        &self,
        r: ws::CreateScheduleRequest,
    ) -> Result<ws::CreateScheduleResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("ScheduleId", &r.schedule_id, true)?;
        check_id("RequestId", &r.request_id, false)?;
        let types = self.attribute_types(&namespace)?;
        let schedule = self.checked_schedule(&types, r.schedule)?;
        let mut search_attributes = r.search_attributes;
        type_search_attributes(&types, &mut search_attributes)?;
        let workflow_id = workflow_id(&r.schedule_id);
        let args = StartArgs {
            namespace_id: namespace.id.clone(),
            workflow_id: workflow_id.clone(),
            run_id: uuid::Uuid::now_v7().to_string(),
            request_id: if r.request_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                r.request_id
            },
            workflow_type: schedule::WORKFLOW_TYPE.to_string(),
            task_queue: schedule::TASK_QUEUE.to_string(),
            identity: r.identity,
            memo: r.memo,
            search_attributes,
            schedule: Some(Box::new(NewSchedule {
                schedule_id: r.schedule_id,
                schedule,
                initial_patch: r.initial_patch,
            })),
            ..Default::default()
        };
        let op = Op::Start {
            args: Box::new(args),
            reuse_policy: enums::WorkflowIdReusePolicy::AllowDuplicate as i32,
            conflict_policy: enums::WorkflowIdConflictPolicy::Fail as i32,
            signal_if_running: None,
            update: None,
        };
        match self
            .shard(&namespace.id, &workflow_id)
            .submit(&namespace.id, &workflow_id, op)
            .await
        {
            Ok(_) => Ok(ws::CreateScheduleResponse {
                conflict_token: schedule::conflict_token(&ScheduleState::default()),
            }),
            Err(ShardError::AlreadyStarted {
                run_id,
                start_request_id,
                ..
            }) => Err(ShardError::AlreadyStarted {
                run_id,
                start_request_id,
                message: "schedule with this ID is already registered".to_string(),
            }
            .into()),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn describe_schedule_rpc(
        &self,
        r: ws::DescribeScheduleRequest,
    ) -> Result<ws::DescribeScheduleResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let mut state = self.schedule_run(&namespace, &r.schedule_id).await?;
        // Actions being started show up in a moment: wait for them (bounded), so that a
        // trigger is visible to the describe that follows it, as in Temporal.
        let until = tokio::time::Instant::now() + DESCRIBE_SETTLE;
        while state
            .schedule
            .as_deref()
            .is_some_and(|s| !s.starting.is_empty())
            && tokio::time::Instant::now() < until
        {
            let shard = self.shard(&namespace.id, &state.workflow_id);
            let mut changes = shard.watch_run(&namespace.id, &state.workflow_id, &state.run_id);
            changes.mark_seen();
            state = self.schedule_run(&namespace, &r.schedule_id).await?;
            if state
                .schedule
                .as_deref()
                .is_some_and(|s| s.starting.is_empty())
            {
                break;
            }
            let _ = tokio::time::timeout_at(until, changes.changed()).await;
        }
        let Some(schedule_state) = state.schedule.as_deref() else {
            return Err(schedule_not_found(&r.schedule_id));
        };
        let mut schedule = schedule::schedule_of(schedule_state);
        if let Some(spec) = schedule.spec.as_mut() {
            *spec = described_spec(spec).map_err(invalid)?;
        }
        let now = self.now();
        Ok(ws::DescribeScheduleResponse {
            schedule: Some(schedule),
            info: Some(schedule_info(&state, schedule_state, now)),
            memo: proto::decode_opt(&state.memo),
            search_attributes: proto::decode_opt(&state.search_attributes),
            conflict_token: schedule::conflict_token(schedule_state),
        })
    }

    pub(super) async fn update_schedule_rpc(
        &self,
        r: ws::UpdateScheduleRequest,
    ) -> Result<ws::UpdateScheduleResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let types = self.attribute_types(&namespace)?;
        let schedule = self.checked_schedule(&types, r.schedule)?;
        let mut search_attributes = r.search_attributes;
        type_search_attributes(&types, &mut search_attributes)?;
        let request = Engine::Schedule(ScheduleRequest::Update {
            schedule: Box::new(schedule),
            conflict_token: r.conflict_token,
            search_attributes,
            memo: r.memo,
        });
        self.schedule_request(&namespace, &r.schedule_id, request)
            .await?;
        Ok(ws::UpdateScheduleResponse {})
    }

    pub(super) async fn patch_schedule_rpc(
        &self,
        r: ws::PatchScheduleRequest,
    ) -> Result<ws::PatchScheduleResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let patch = r.patch.unwrap_or_default();
        for backfill in &patch.backfill_request {
            match (&backfill.start_time, &backfill.end_time) {
                (Some(start), Some(end))
                    if (start.seconds, start.nanos) <= (end.seconds, end.nanos) => {}
                _ => {
                    return Err(invalid(
                        "a backfill needs a start time and an end time not before it",
                    ))
                }
            }
        }
        let request = Engine::Schedule(ScheduleRequest::Patch(Box::new(patch)));
        self.schedule_request(&namespace, &r.schedule_id, request)
            .await?;
        Ok(ws::PatchScheduleResponse {})
    }

    pub(super) async fn delete_schedule_rpc(
        &self,
        r: ws::DeleteScheduleRequest,
    ) -> Result<ws::DeleteScheduleResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let request = Engine::Terminate {
            reason: "schedule deleted".to_string(),
            details: None,
            identity: r.identity,
        };
        self.schedule_request(&namespace, &r.schedule_id, request)
            .await?;
        Ok(ws::DeleteScheduleResponse {})
    }

    pub(super) async fn list_schedule_matching_times_rpc(
        &self,
        r: ws::ListScheduleMatchingTimesRequest,
    ) -> Result<ws::ListScheduleMatchingTimesResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let state = self.schedule_run(&namespace, &r.schedule_id).await?;
        let (Some(start), Some(end)) = (r.start_time, r.end_time) else {
            return Err(invalid("StartTime and EndTime are both required."));
        };
        let schedule_state = state.schedule.as_deref().map(schedule::schedule_of);
        let spec = schedule_state.and_then(|s| s.spec).unwrap_or_default();
        let spec = CompiledSpec::compile(&spec).map_err(invalid)?;
        let seed = state
            .schedule
            .as_deref()
            .map_or("", |s| s.schedule_id.as_str());
        let end = proto::timestamp_ns(&end);
        let mut after = proto::timestamp_ns(&start).saturating_sub(1);
        let mut start_time = Vec::new();
        while let Some((nominal, actual)) = spec.next(seed, after) {
            if nominal > end || start_time.len() == MAX_MATCHING_TIMES {
                break;
            }
            start_time.push(proto::timestamp(actual));
            after = nominal;
        }
        Ok(ws::ListScheduleMatchingTimesResponse { start_time })
    }

    /// The runs of the namespace's schedules that `query` selects, by schedule id.
    async fn matching_schedules(
        &self,
        namespace: &str,
        query: &str,
    ) -> Result<Vec<MutableState>, Status> {
        let namespace = self.namespace(namespace).await?;
        let query = ListQuery::parse(query, &self.namespaces.search_attributes(&namespace.id)?)?;
        let mut schedules = self
            .scan_runs(&namespace, |state| {
                state.is_running() && state.schedule.is_some() && query.matches(state)
            })
            .await?;
        schedules.sort_by(|a, b| a.workflow_id.cmp(&b.workflow_id));
        Ok(schedules)
    }

    pub(super) async fn count_schedules_rpc(
        &self,
        r: ws::CountSchedulesRequest,
    ) -> Result<ws::CountSchedulesResponse, Status> {
        let schedules = self.matching_schedules(&r.namespace, &r.query).await?;
        Ok(ws::CountSchedulesResponse {
            count: schedules.len() as i64,
            groups: Vec::new(),
        })
    }

    pub(super) async fn list_schedules_rpc(
        &self,
        r: ws::ListSchedulesRequest,
    ) -> Result<ws::ListSchedulesResponse, Status> {
        let schedules = self.matching_schedules(&r.namespace, &r.query).await?;
        let (page, next_page_token) = super::offset_page(
            &schedules,
            r.maximum_page_size,
            &r.next_page_token,
            MAX_PAGE,
        )?;
        let now = self.now();
        Ok(ws::ListSchedulesResponse {
            schedules: page
                .iter()
                .filter_map(|state| list_entry(state, now))
                .collect(),
            next_page_token,
        })
    }
}

/// A spec as DescribeSchedule and ListSchedules show it: canonical, with ranges cleaned (an
/// end before the start is the start, a step of 0 is 1), as Temporal's frontend shows them.
fn described_spec(spec: &sched::ScheduleSpec) -> Result<sched::ScheduleSpec, String> {
    let mut spec = canonical(spec)?;
    clean_ranges(&mut spec);
    Ok(spec)
}

fn action_result(run: &schedule::ScheduledRun) -> sched::ScheduleActionResult {
    sched::ScheduleActionResult {
        schedule_time: Some(proto::timestamp(run.nominal_ns)),
        actual_time: Some(proto::timestamp(run.actual_ns)),
        start_workflow_result: Some(common::WorkflowExecution {
            workflow_id: run.workflow_id.clone(),
            run_id: run.run_id.clone(),
        }),
        start_workflow_status: run.status,
    }
}

fn schedule_info(state: &MutableState, s: &ScheduleState, now: i64) -> sched::ScheduleInfo {
    sched::ScheduleInfo {
        action_count: s.action_count,
        missed_catchup_window: s.missed_catchup_window,
        overlap_skipped: s.overlap_skipped,
        buffer_dropped: s.buffer_dropped,
        buffer_size: s.buffered.len() as i64,
        running_workflows: s
            .running
            .iter()
            .map(|run| common::WorkflowExecution {
                workflow_id: run.workflow_id.clone(),
                run_id: run.run_id.clone(),
            })
            .collect(),
        recent_actions: s.recent.iter().map(action_result).collect(),
        future_action_times: schedule::future_action_times(s, now, DESCRIBE_FUTURE_TIMES)
            .into_iter()
            .map(proto::timestamp)
            .collect(),
        create_time: Some(proto::timestamp(state.start_time_ns)),
        update_time: (s.update_time_ns > 0).then(|| proto::timestamp(s.update_time_ns)),
        ..Default::default()
    }
}

fn list_entry(state: &MutableState, now: i64) -> Option<sched::ScheduleListEntry> {
    let s = state.schedule.as_deref()?;
    let schedule = schedule::schedule_of(s);
    let sched_state = schedule.state.clone().unwrap_or_default();
    let workflow_type = match schedule.action.as_ref().and_then(|a| a.action.as_ref()) {
        Some(sched::schedule_action::Action::StartWorkflow(start)) => start.workflow_type.clone(),
        None => None,
    };
    let spec = schedule.spec.as_ref().and_then(|spec| canonical(spec).ok());
    let skip = s.recent.len().saturating_sub(LIST_RECENT_ACTIONS);
    Some(sched::ScheduleListEntry {
        schedule_id: s.schedule_id.clone(),
        memo: proto::decode_opt(&state.memo),
        search_attributes: proto::decode_opt(&state.search_attributes),
        info: Some(sched::ScheduleListInfo {
            spec,
            workflow_type,
            notes: sched_state.notes,
            paused: sched_state.paused,
            recent_actions: s.recent.iter().skip(skip).map(action_result).collect(),
            future_action_times: schedule::future_action_times(s, now, LIST_FUTURE_TIMES)
                .into_iter()
                .map(proto::timestamp)
                .collect(),
            state_size_bytes: 0,
        }),
    })
}
