//! Schedules. A schedule lives in a run of its own (workflow id `temporal-sys-scheduler:ID`, as
//! in Temporal) whose state carries a [`ScheduleState`] and which never gets workflow tasks. Its
//! next action time is a deadline; actions due are buffered by their overlap policy and started
//! through deliveries ([`super::Transfer::ScheduleStart`]); each started workflow is watched until
//! it closes ([`super::Transfer::ScheduleWatch`]), which may start what was buffered.

use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::proto::{self, enums};
use super::schedule_spec::CompiledSpec;
use super::state::MutableState;
use super::txn::Txn;
use super::{EngineError, Reply};

pub use temporalio_protos::temporal::api::schedule::v1 as sched;

/// Workflow id prefix of schedule runs.
pub const WORKFLOW_ID_PREFIX: &str = "temporal-sys-scheduler:";
/// Workflow type of schedule runs.
pub const WORKFLOW_TYPE: &str = "temporal-sys-scheduler-workflow";
/// Task queue of schedule runs (no worker polls it: they have no workflow tasks).
pub const TASK_QUEUE: &str = "temporal-sys-per-ns-tq";
/// `TemporalNamespaceDivision` of schedule runs: lists of workflows leave them out.
pub const NAMESPACE_DIVISION: &str = "TemporalScheduler";
/// Recent actions a schedule remembers.
pub const RECENT_ACTIONS: usize = 10;
/// Most actions one backfill request or one deadline may add (the rest are dropped and counted).
pub const MAX_BUFFER: usize = 1000;
/// Catch-up window when the policy sets none (Temporal's default: one year).
pub const DEFAULT_CATCHUP_MS: i64 = 365 * 24 * 3600 * 1000;
/// Shortest catch-up window the scheduler applies (10 s, as Temporal's scheduler does).
const MIN_CATCHUP_MS: i64 = 10_000;
const NS_PER_MS: i64 = 1_000_000;

/// A schedule's own state, in the state of its run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Schedule id.
    pub schedule_id: String,
    /// Encoded `schedule.v1.Schedule` (spec as given, action, policies, state).
    #[serde(with = "serde_bytes")]
    pub schedule: Vec<u8>,
    /// Changes with every update; an update naming another token is refused. Starts at 0;
    /// clients see it plus one (Temporal's first token is 1).
    pub conflict_token: i64,
    /// When the schedule was last updated (0: never).
    pub update_time_ns: i64,
    /// Nominal times up to here were taken, skipped or missed.
    pub processed_through_ns: i64,
    /// Actions taken.
    pub action_count: i64,
    /// Actions missed because they were older than the catch-up window.
    pub missed_catchup_window: i64,
    /// Actions skipped because a workflow was running (SKIP).
    pub overlap_skipped: i64,
    /// Actions dropped because one was already buffered (BUFFER_ONE) or the buffer was full.
    pub buffer_dropped: i64,
    /// Actions due and waiting for their overlap policy.
    pub buffered: Vec<PendingAction>,
    /// Actions whose workflow is being started.
    pub starting: Vec<PendingAction>,
    /// Workflows started and not yet seen closed.
    pub running: Vec<ScheduledRun>,
    /// The latest actions, oldest first.
    pub recent: Vec<ScheduledRun>,
    /// Sequence number of the next action.
    pub next_seq: u64,
    /// Encoded `Payloads` result of the last scheduled workflow that completed, handed to the
    /// next one.
    #[serde(with = "serde_bytes")]
    pub last_completion_result: Vec<u8>,
    /// Encoded `Failure` of the last scheduled workflow that failed after the last completed
    /// one, handed to the next one.
    #[serde(with = "serde_bytes")]
    pub last_failure: Vec<u8>,
}

impl ScheduleState {
    /// The running workflow of action `seq`.
    pub fn running(&self, seq: u64) -> Option<&ScheduledRun> {
        self.running.iter().find(|r| r.seq == seq)
    }
}

/// An action due.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    /// Sequence number (names its deliveries).
    pub seq: u64,
    /// Nominal time.
    pub nominal_ns: i64,
    /// Time with jitter (or when it was triggered).
    pub actual_ns: i64,
    /// `ScheduleOverlapPolicy`, resolved (never unspecified).
    pub overlap: i32,
    /// Triggered or backfilled rather than taken from the spec.
    pub manual: bool,
}

/// A workflow a schedule started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledRun {
    /// Sequence number of its action.
    pub seq: u64,
    /// Nominal time.
    pub nominal_ns: i64,
    /// When it was due.
    pub actual_ns: i64,
    /// Workflow id.
    pub workflow_id: String,
    /// First run id.
    pub run_id: String,
    /// `WorkflowExecutionStatus` as last seen.
    pub status: i32,
    /// Cancel or terminate was asked of it (CANCEL_OTHER, TERMINATE_OTHER), and sent.
    pub stop: Option<Stop>,
}

/// A stop asked of a running scheduled workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Terminate (else cancel).
    pub terminate: bool,
    /// Delivered.
    pub sent: bool,
}

/// What CreateSchedule starts a schedule run with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewSchedule {
    /// Schedule id.
    pub schedule_id: String,
    /// The schedule (validated).
    #[serde(with = "crate::wire::message")]
    pub schedule: sched::Schedule,
    /// Actions to take at once (trigger, backfills).
    #[serde(with = "crate::wire::opt")]
    pub initial_patch: Option<sched::SchedulePatch>,
}

/// A request for a schedule's run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ScheduleRequest {
    /// UpdateSchedule.
    Update {
        /// The new schedule (validated).
        #[serde(with = "crate::wire::message")]
        schedule: Box<sched::Schedule>,
        /// The token the caller read (empty: any).
        #[serde(with = "serde_bytes")]
        conflict_token: Vec<u8>,
        /// New search attributes of the schedule (None: unchanged).
        #[serde(with = "crate::wire::opt")]
        search_attributes: Option<proto::common::SearchAttributes>,
        /// New memo of the schedule (None: unchanged).
        #[serde(with = "crate::wire::opt")]
        memo: Option<proto::common::Memo>,
    },
    /// PatchSchedule.
    Patch(#[serde(with = "crate::wire::message")] Box<sched::SchedulePatch>),
}

/// The encoded conflict token of a schedule, as DescribeSchedule answers it.
pub fn conflict_token(state: &ScheduleState) -> Vec<u8> {
    (state.conflict_token + 1).to_be_bytes().to_vec()
}

/// The stored schedule of a schedule run.
pub fn schedule_of(state: &ScheduleState) -> sched::Schedule {
    sched::Schedule::decode(state.schedule.as_slice()).unwrap_or_default()
}

/// Checks a schedule as CreateSchedule and UpdateSchedule receive it. Returns the message for
/// an InvalidArgument error.
pub fn validate(schedule: &sched::Schedule) -> Result<(), String> {
    let spec = schedule.spec.clone().unwrap_or_default();
    CompiledSpec::compile(&spec)?;
    let action = schedule
        .action
        .as_ref()
        .and_then(|a| a.action.as_ref())
        .ok_or("the schedule has no action: set action.start_workflow")?;
    let sched::schedule_action::Action::StartWorkflow(start) = action;
    if start.workflow_id.is_empty() {
        return Err("the schedule's action has no workflow id".into());
    }
    if start
        .workflow_type
        .as_ref()
        .is_none_or(|t| t.name.is_empty())
    {
        return Err("the schedule's action has no workflow type".into());
    }
    if start.task_queue.as_ref().is_none_or(|q| q.name.is_empty()) {
        return Err("the schedule's action has no task queue".into());
    }
    if let Some(state) = &schedule.state {
        if state.limited_actions && state.remaining_actions <= 0 {
            return Err("limited_actions is set but remaining_actions is not positive".into());
        }
        if !state.limited_actions && state.remaining_actions != 0 {
            return Err("remaining_actions is set but limited_actions is not".into());
        }
    }
    if let Some(policies) = &schedule.policies {
        enums::ScheduleOverlapPolicy::try_from(policies.overlap_policy)
            .map_err(|_| format!("unknown overlap policy {}", policies.overlap_policy))?;
        if policies
            .catchup_window
            .as_ref()
            .is_some_and(|w| w.seconds < 0 || w.nanos < 0)
        {
            return Err("the catch-up window is negative".into());
        }
    }
    Ok(())
}

/// Sets up the schedule of a new schedule run (its first transaction).
pub(crate) fn create(txn: &mut Txn, new: NewSchedule) -> Result<(), EngineError> {
    let mut state = ScheduleState {
        schedule_id: new.schedule_id,
        schedule: new.schedule.encode_to_vec(),
        processed_through_ns: txn.now,
        ..Default::default()
    };
    if let Some(patch) = new.initial_patch {
        apply_patch(&mut state, &new.schedule, &patch, txn.now);
    }
    txn.state.schedule = Some(Box::new(state));
    drain(txn);
    Ok(())
}

/// Runs a schedule request on a schedule run.
pub(crate) fn handle(txn: &mut Txn, request: ScheduleRequest) -> Result<Reply, EngineError> {
    super::require_running(txn)?;
    let now = txn.now;
    let Some(state) = txn.state.schedule.as_deref_mut() else {
        return Err(not_a_schedule(&txn.state.workflow_id));
    };
    match request {
        ScheduleRequest::Update {
            schedule,
            conflict_token: token,
            search_attributes,
            memo,
        } => {
            if !token.is_empty() && token != conflict_token(state) {
                return Err(EngineError::FailedPrecondition(
                    "mismatched conflict token: the schedule changed since it was read; \
                     describe it again and retry"
                        .into(),
                ));
            }
            // Times due before the update are the old spec's.
            take_due(state, now);
            state.schedule = schedule.encode_to_vec();
            state.conflict_token += 1;
            state.update_time_ns = now;
            state.processed_through_ns = state.processed_through_ns.max(now);
            if let Some(attributes) = search_attributes {
                txn.state.search_attributes = attributes.encode_to_vec();
            }
            if let Some(memo) = memo {
                txn.state.memo = memo.encode_to_vec();
            }
        }
        ScheduleRequest::Patch(patch) => {
            let schedule = schedule_of(state);
            apply_patch(state, &schedule, &patch, now);
            let mut schedule = schedule;
            let sched_state = schedule.state.get_or_insert_with(Default::default);
            if !patch.pause.is_empty() {
                sched_state.paused = true;
                sched_state.notes = patch.pause.clone();
            }
            if !patch.unpause.is_empty() {
                sched_state.paused = false;
                sched_state.notes = patch.unpause.clone();
                // Times that passed while paused are not caught up.
                state.processed_through_ns = state.processed_through_ns.max(now);
            }
            state.schedule = schedule.encode_to_vec();
            state.update_time_ns = now;
        }
    }
    drain(txn);
    Ok(Reply::Done)
}

fn not_a_schedule(workflow_id: &str) -> EngineError {
    EngineError::NotFound(format!("{workflow_id} is a workflow, not a schedule's run"))
}

/// Buffers what a patch triggers or backfills.
fn apply_patch(
    state: &mut ScheduleState,
    schedule: &sched::Schedule,
    patch: &sched::SchedulePatch,
    now: i64,
) {
    if let Some(trigger) = &patch.trigger_immediately {
        let at = trigger
            .scheduled_time
            .as_ref()
            .map(proto::timestamp_ns)
            .unwrap_or(now);
        let overlap = resolve_overlap(schedule, trigger.overlap_policy);
        buffer(state, at, now, overlap, true);
    }
    for backfill in &patch.backfill_request {
        let (Some(start), Some(end)) = (&backfill.start_time, &backfill.end_time) else {
            continue;
        };
        let overlap = resolve_overlap(schedule, backfill.overlap_policy);
        let Ok(spec) = CompiledSpec::compile(&schedule.spec.clone().unwrap_or_default()) else {
            continue;
        };
        // Backfills cover [start, end], both ends included (Temporal 1.24 and later).
        let (start, end) = (proto::timestamp_ns(start), proto::timestamp_ns(end));
        let mut after = start.saturating_sub(1);
        let mut added = 0;
        while let Some((nominal, _)) = spec.next(&state.schedule_id, after) {
            if nominal > end {
                break;
            }
            if added == MAX_BUFFER {
                state.buffer_dropped += 1;
                break;
            }
            buffer(state, nominal, nominal, overlap, true);
            added += 1;
            after = nominal;
        }
    }
}

/// The overlap policy an action uses: its own, else the schedule's, else SKIP.
fn resolve_overlap(schedule: &sched::Schedule, requested: i32) -> i32 {
    let unspecified = enums::ScheduleOverlapPolicy::Unspecified as i32;
    if requested != unspecified {
        return requested;
    }
    match schedule.policies.as_ref().map(|p| p.overlap_policy) {
        Some(policy) if policy != unspecified => policy,
        _ => enums::ScheduleOverlapPolicy::Skip as i32,
    }
}

fn buffer(state: &mut ScheduleState, nominal_ns: i64, actual_ns: i64, overlap: i32, manual: bool) {
    if state.buffered.len() >= MAX_BUFFER {
        state.buffer_dropped += 1;
        return;
    }
    state.buffered.push(PendingAction {
        seq: state.next_seq,
        nominal_ns,
        actual_ns,
        overlap,
        manual,
    });
    state.next_seq += 1;
}

/// When the schedule next acts on its own: (nominal, actual). None when paused, out of actions
/// or out of times.
pub fn next_action(state: &ScheduleState) -> Option<(i64, i64)> {
    let (_, spec) = acting(state)?;
    spec.next(&state.schedule_id, state.processed_through_ns)
}

/// The schedule and its compiled spec while it acts on its own (not paused, actions left).
fn acting(state: &ScheduleState) -> Option<(sched::Schedule, CompiledSpec)> {
    let schedule = schedule_of(state);
    let sched_state = schedule.state.clone().unwrap_or_default();
    if sched_state.paused || (sched_state.limited_actions && sched_state.remaining_actions <= 0) {
        return None;
    }
    let spec = CompiledSpec::compile(&schedule.spec.clone().unwrap_or_default()).ok()?;
    Some((schedule, spec))
}

/// The next `count` action times after `after_ns`, with jitter, as DescribeSchedule and
/// ListSchedules show them (limited actions cap them).
pub fn future_action_times(state: &ScheduleState, after_ns: i64, count: usize) -> Vec<i64> {
    let schedule = schedule_of(state);
    let sched_state = schedule.state.clone().unwrap_or_default();
    let count = if sched_state.limited_actions {
        count.min(usize::try_from(sched_state.remaining_actions.max(0)).unwrap_or(0))
    } else {
        count
    };
    let Ok(spec) = CompiledSpec::compile(&schedule.spec.unwrap_or_default()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(count);
    let mut after = after_ns.max(state.processed_through_ns);
    while out.len() < count {
        let Some((nominal, actual)) = spec.next(&state.schedule_id, after) else {
            break;
        };
        out.push(actual);
        after = nominal;
    }
    out
}

/// The schedule's action deadline passed: buffers the actions due (missing those older than the
/// catch-up window) and starts what the overlap policies allow.
pub(crate) fn fire(txn: &mut Txn) -> Result<Reply, EngineError> {
    let now = txn.now;
    let Some(state) = txn.state.schedule.as_deref_mut() else {
        return Err(EngineError::NoChange);
    };
    if !take_due(state, now) {
        return Err(EngineError::NoChange);
    }
    drain(txn);
    Ok(Reply::Done)
}

/// Buffers the actions the spec makes due by `now` (those older than the catch-up window are
/// counted as missed), at most [`MAX_BUFFER`] at a time. False when none was due.
fn take_due(state: &mut ScheduleState, now: i64) -> bool {
    let Some((schedule, spec)) = acting(state) else {
        return false;
    };
    match spec.next(&state.schedule_id, state.processed_through_ns) {
        Some((_, actual)) if actual <= now => {}
        _ => return false,
    }
    let catchup_ms = match proto::duration_ms(
        schedule
            .policies
            .as_ref()
            .and_then(|p| p.catchup_window.as_ref()),
    ) {
        0 => DEFAULT_CATCHUP_MS,
        ms => ms.max(MIN_CATCHUP_MS),
    };
    let overlap = resolve_overlap(&schedule, enums::ScheduleOverlapPolicy::Unspecified as i32);
    let mut taken = 0;
    while let Some((nominal, actual)) = spec.next(&state.schedule_id, state.processed_through_ns) {
        if actual > now || taken == MAX_BUFFER {
            break;
        }
        taken += 1;
        state.processed_through_ns = nominal;
        if now - actual > catchup_ms * NS_PER_MS {
            state.missed_catchup_window += 1;
            continue;
        }
        buffer(state, nominal, actual, overlap, false);
    }
    true
}

/// Starts buffered actions as their overlap policies allow, in order.
fn drain(txn: &mut Txn) {
    use enums::ScheduleOverlapPolicy as Overlap;
    let Some(state) = txn.state.schedule.as_deref_mut() else {
        return;
    };
    let mut schedule = schedule_of(state);
    let mut kept = Vec::new();
    let mut kept_buffer_one = false;
    let mut changed_schedule = false;
    for action in std::mem::take(&mut state.buffered) {
        let busy = !state.running.is_empty() || !state.starting.is_empty();
        let overlap = Overlap::try_from(action.overlap).unwrap_or(Overlap::Skip);
        let sched_state = schedule.state.get_or_insert_with(Default::default);
        if !action.manual && sched_state.limited_actions && sched_state.remaining_actions <= 0 {
            continue;
        }
        if !busy || overlap == Overlap::AllowAll {
            if !action.manual && sched_state.limited_actions {
                sched_state.remaining_actions -= 1;
                changed_schedule = true;
            }
            state.starting.push(action);
            continue;
        }
        match overlap {
            Overlap::Skip | Overlap::Unspecified => state.overlap_skipped += 1,
            Overlap::BufferOne if kept_buffer_one => state.buffer_dropped += 1,
            Overlap::BufferOne => {
                kept_buffer_one = true;
                kept.push(action);
            }
            Overlap::BufferAll => kept.push(action),
            Overlap::CancelOther | Overlap::TerminateOther => {
                let terminate = overlap == Overlap::TerminateOther;
                for run in &mut state.running {
                    if run.stop.is_none() {
                        run.stop = Some(Stop {
                            terminate,
                            sent: false,
                        });
                    }
                }
                kept.push(action);
            }
            Overlap::AllowAll => {}
        }
    }
    state.buffered = kept;
    if changed_schedule {
        state.schedule = schedule.encode_to_vec();
    }
}

/// The workflow id an action starts: the action's id and the nominal time (Temporal's form),
/// or the action's id alone when the schedule keeps it.
pub fn action_workflow_id(schedule: &sched::Schedule, base: &str, nominal_ns: i64) -> String {
    if schedule
        .policies
        .as_ref()
        .is_some_and(|p| p.keep_original_workflow_id)
    {
        return base.to_string();
    }
    match rfc3339_seconds(nominal_ns) {
        Some(time) => format!("{base}-{time}"),
        None => base.to_string(),
    }
}

/// `ns` as an RFC 3339 UTC time in whole seconds (`2026-11-23T22:00:00Z`).
fn rfc3339_seconds(ns: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The search attributes Temporal gives every workflow a schedule starts, with their types.
pub const SCHEDULED_ATTRIBUTES: [(&str, enums::IndexedValueType); 2] = [
    ("TemporalScheduledById", enums::IndexedValueType::Keyword),
    (
        "TemporalScheduledStartTime",
        enums::IndexedValueType::Datetime,
    ),
];

/// Adds [`SCHEDULED_ATTRIBUTES`] (the schedule's id, the action's nominal time) to the search
/// attributes of an action's workflow.
pub fn add_scheduled_attributes(
    attributes: &mut proto::common::SearchAttributes,
    schedule_id: &str,
    nominal_ns: i64,
) {
    let json = proto::typed_json_payload;
    let [(by_id, _), (start_time, _)] = SCHEDULED_ATTRIBUTES;
    attributes
        .indexed_fields
        .insert(by_id.to_string(), json(schedule_id, "Keyword"));
    if let Some(time) = rfc3339_seconds(nominal_ns) {
        attributes
            .indexed_fields
            .insert(start_time.to_string(), json(&time, "Datetime"));
    }
}

/// The request id an action's start is deduplicated by.
pub fn action_request_id(state: &MutableState, seq: u64) -> String {
    format!("{}-schedule-{seq}", state.run_id)
}

/// What a schedule's deliveries report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ScheduleReport {
    /// The action's workflow started (or this very request had started it).
    Started {
        /// Action.
        seq: u64,
        /// Workflow id.
        workflow_id: String,
        /// Its run.
        run_id: String,
    },
    /// The action's workflow could not start (its id is in use, the namespace is gone...).
    StartFailed {
        /// Action.
        seq: u64,
    },
    /// A scheduled workflow closed (its whole chain, after retries and continue-as-new).
    Closed {
        /// Action.
        seq: u64,
        /// `WorkflowExecutionStatus` of the last run.
        status: i32,
        /// Encoded `Payloads` result, when it completed.
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
        /// Encoded `Failure`, when it failed.
        #[serde(with = "serde_bytes")]
        failure: Vec<u8>,
    },
    /// The cancel or terminate asked of a scheduled workflow was delivered.
    StopSent {
        /// Action.
        seq: u64,
    },
}

/// Takes a delivery's report.
pub(crate) fn report(txn: &mut Txn, report: ScheduleReport) -> Result<Reply, EngineError> {
    use enums::WorkflowExecutionStatus as Status;
    let Some(state) = txn.state.schedule.as_deref_mut() else {
        return Err(EngineError::NoChange);
    };
    match report {
        ScheduleReport::Started {
            seq,
            workflow_id,
            run_id,
        } => {
            let Some(i) = state.starting.iter().position(|a| a.seq == seq) else {
                return Err(EngineError::NoChange);
            };
            let action = state.starting.remove(i);
            let run = ScheduledRun {
                seq,
                nominal_ns: action.nominal_ns,
                actual_ns: action.actual_ns,
                workflow_id,
                run_id,
                status: Status::Running as i32,
                stop: None,
            };
            state.action_count += 1;
            // In the order the actions were taken (starts may report in any order), as
            // Temporal lists them.
            let at = state.recent.partition_point(|r| r.seq < seq);
            state.recent.insert(at, run.clone());
            if state.recent.len() > RECENT_ACTIONS {
                state.recent.remove(0);
            }
            state.running.push(run);
        }
        ScheduleReport::StartFailed { seq } => {
            let Some(i) = state.starting.iter().position(|a| a.seq == seq) else {
                return Err(EngineError::NoChange);
            };
            state.starting.remove(i);
        }
        ScheduleReport::Closed {
            seq,
            status,
            result,
            failure,
        } => {
            let Some(i) = state.running.iter().position(|r| r.seq == seq) else {
                return Err(EngineError::NoChange);
            };
            let run = state.running.remove(i);
            if status == Status::Completed as i32 {
                state.last_completion_result = result;
                state.last_failure.clear();
            } else if !failure.is_empty() {
                state.last_failure = failure;
            }
            if let Some(recent) = state.recent.iter_mut().find(|r| r.seq == seq) {
                recent.status = status;
            }
            let failed = status == Status::Failed as i32 || status == Status::TimedOut as i32;
            let mut schedule = schedule_of(state);
            let pause = schedule
                .policies
                .as_ref()
                .is_some_and(|p| p.pause_on_failure);
            if failed && pause {
                let sched_state = schedule.state.get_or_insert_with(Default::default);
                sched_state.paused = true;
                sched_state.notes = format!(
                    "paused because workflow {} {}",
                    run.workflow_id,
                    if status == Status::Failed as i32 {
                        "failed"
                    } else {
                        "timed out"
                    }
                );
                state.schedule = schedule.encode_to_vec();
            }
        }
        ScheduleReport::StopSent { seq } => {
            match state
                .running
                .iter_mut()
                .find(|r| r.seq == seq)
                .and_then(|r| r.stop.as_mut())
            {
                Some(stop) if !stop.sent => stop.sent = true,
                _ => return Err(EngineError::NoChange),
            }
        }
    }
    drain(txn);
    Ok(Reply::Done)
}

/// The deliveries a schedule owes: starts, watches of running workflows, and stops.
pub fn transfers(state: &ScheduleState, out: &mut Vec<super::Transfer>) {
    for action in &state.starting {
        out.push(super::Transfer::ScheduleStart { seq: action.seq });
    }
    for run in &state.running {
        out.push(super::Transfer::ScheduleWatch { seq: run.seq });
        if run.stop.is_some_and(|s| !s.sent) {
            out.push(super::Transfer::ScheduleStop { seq: run.seq });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        deadlines, handle, new_run, Deadline, Limits, Report, Request, StartArgs, Transfer,
    };

    const SEC: i64 = 1_000_000_000;
    /// A whole minute, so that interval times fall on it.
    const T0: i64 = 1_800_000_000 * SEC;

    fn every(seconds: i64, overlap: enums::ScheduleOverlapPolicy) -> sched::Schedule {
        sched::Schedule {
            spec: Some(sched::ScheduleSpec {
                interval: vec![sched::IntervalSpec {
                    interval: Some(prost_wkt_types::Duration { seconds, nanos: 0 }),
                    phase: None,
                }],
                ..Default::default()
            }),
            action: Some(sched::ScheduleAction {
                action: Some(sched::schedule_action::Action::StartWorkflow(
                    temporalio_protos::temporal::api::workflow::v1::NewWorkflowExecutionInfo {
                        workflow_id: "wf".into(),
                        ..Default::default()
                    },
                )),
            }),
            policies: Some(sched::SchedulePolicies {
                overlap_policy: overlap as i32,
                ..Default::default()
            }),
            state: None,
        }
    }

    fn created(schedule: sched::Schedule, patch: Option<sched::SchedulePatch>) -> MutableState {
        let args = StartArgs {
            namespace_id: "ns".into(),
            workflow_id: format!("{WORKFLOW_ID_PREFIX}s"),
            run_id: "run".into(),
            workflow_type: WORKFLOW_TYPE.into(),
            task_queue: TASK_QUEUE.into(),
            schedule: Some(Box::new(NewSchedule {
                schedule_id: "s".into(),
                schedule,
                initial_patch: patch,
            })),
            ..Default::default()
        };
        new_run(args, T0, &Limits::default())
            .unwrap_or_else(|e| panic!("create: {e}"))
            .state
    }

    fn run(state: &MutableState, request: Request, now: i64) -> MutableState {
        handle(state, request, now, &Limits::default())
            .unwrap_or_else(|e| panic!("{e} at {now}"))
            .state
    }

    fn fire_at(state: &MutableState, now: i64) -> MutableState {
        run(state, Request::Deadline(Deadline::ScheduleAction), now)
    }

    fn schedule(state: &MutableState) -> &ScheduleState {
        state
            .schedule
            .as_deref()
            .unwrap_or_else(|| panic!("no schedule"))
    }

    fn report(state: &MutableState, report: ScheduleReport, now: i64) -> MutableState {
        run(state, Request::Report(Report::Schedule(report)), now)
    }

    fn started(state: &MutableState, seq: u64, now: i64) -> MutableState {
        let workflow_id = format!("wf-{seq}");
        let run_id = format!("r{seq}");
        report(
            state,
            ScheduleReport::Started {
                seq,
                workflow_id,
                run_id,
            },
            now,
        )
    }

    #[test]
    fn a_schedule_run_has_no_workflow_task_and_its_deadline_is_the_next_time() {
        let state = created(every(60, enums::ScheduleOverlapPolicy::Skip), None);
        assert!(state.workflow_task.is_none());
        assert_eq!(
            deadlines(&state),
            vec![(T0 + 60 * SEC, Deadline::ScheduleAction)]
        );
        let signal = Request::Signal(Default::default());
        assert!(matches!(
            handle(&state, signal, T0, &Limits::default()),
            Err(EngineError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn skip_starts_one_and_skips_the_times_that_come_while_it_runs() {
        let state = created(every(60, enums::ScheduleOverlapPolicy::Skip), None);
        let state = fire_at(&state, T0 + 60 * SEC);
        assert_eq!(schedule(&state).starting.len(), 1);
        assert_eq!(
            crate::engine::transfers(&state),
            vec![Transfer::ScheduleStart { seq: 0 }]
        );
        let state = started(&state, 0, T0 + 61 * SEC);
        assert_eq!(schedule(&state).action_count, 1);
        assert_eq!(
            crate::engine::transfers(&state),
            vec![Transfer::ScheduleWatch { seq: 0 }]
        );
        // Two more times pass while it runs: both skipped.
        let state = fire_at(&state, T0 + 180 * SEC);
        assert_eq!(schedule(&state).overlap_skipped, 2);
        assert!(schedule(&state).starting.is_empty());
        let closed = ScheduleReport::Closed {
            seq: 0,
            status: enums::WorkflowExecutionStatus::Completed as i32,
            result: Vec::new(),
            failure: Vec::new(),
        };
        let state = report(&state, closed, T0 + 190 * SEC);
        assert!(schedule(&state).running.is_empty());
        assert_eq!(
            schedule(&state).recent[0].status,
            enums::WorkflowExecutionStatus::Completed as i32
        );
        // A stale deadline changes nothing.
        assert_eq!(
            handle(
                &state,
                Request::Deadline(Deadline::ScheduleAction),
                T0 + 190 * SEC,
                &Limits::default()
            )
            .err(),
            Some(EngineError::NoChange)
        );
    }

    #[test]
    fn buffer_one_keeps_one_and_starts_it_when_the_running_one_closes() {
        let state = created(every(60, enums::ScheduleOverlapPolicy::BufferOne), None);
        let state = fire_at(&state, T0 + 60 * SEC);
        let state = started(&state, 0, T0 + 60 * SEC);
        let state = fire_at(&state, T0 + 240 * SEC);
        assert_eq!(schedule(&state).buffered.len(), 1);
        assert_eq!(schedule(&state).buffer_dropped, 2);
        let closed = ScheduleReport::Closed {
            seq: 0,
            status: enums::WorkflowExecutionStatus::Completed as i32,
            result: Vec::new(),
            failure: Vec::new(),
        };
        let state = report(&state, closed, T0 + 241 * SEC);
        assert!(schedule(&state).buffered.is_empty());
        assert_eq!(schedule(&state).starting[0].nominal_ns, T0 + 120 * SEC);
    }

    #[test]
    fn times_older_than_the_catchup_window_are_missed() {
        let mut spec = every(60, enums::ScheduleOverlapPolicy::AllowAll);
        if let Some(p) = spec.policies.as_mut() {
            p.catchup_window = Some(prost_wkt_types::Duration {
                seconds: 90,
                nanos: 0,
            });
        }
        let state = created(spec, None);
        let state = fire_at(&state, T0 + 300 * SEC);
        // 60, 120 and 180 s are more than 90 s late at 300 s; 240 and 300 are not.
        assert_eq!(schedule(&state).missed_catchup_window, 3);
        assert_eq!(schedule(&state).starting.len(), 2);
        assert_eq!(schedule(&state).processed_through_ns, T0 + 300 * SEC);
        // Their starts report in either order; recent actions stay in the order taken.
        let state = started(&started(&state, 1, T0 + 301 * SEC), 0, T0 + 301 * SEC);
        let recent: Vec<u64> = schedule(&state).recent.iter().map(|r| r.seq).collect();
        assert_eq!(recent, [0, 1]);
    }

    #[test]
    fn limited_actions_count_down_and_then_stop_but_triggers_still_run() {
        let mut spec = every(60, enums::ScheduleOverlapPolicy::AllowAll);
        spec.state = Some(sched::ScheduleState {
            limited_actions: true,
            remaining_actions: 2,
            ..Default::default()
        });
        let state = created(spec, None);
        let state = fire_at(&state, T0 + 180 * SEC);
        assert_eq!(schedule(&state).starting.len(), 2);
        let remaining = schedule_of(schedule(&state))
            .state
            .map(|s| s.remaining_actions);
        assert_eq!(remaining, Some(0));
        assert!(deadlines(&state).is_empty());
        assert!(future_action_times(schedule(&state), T0, 10).is_empty());
        let trigger = sched::SchedulePatch {
            trigger_immediately: Some(Default::default()),
            ..Default::default()
        };
        let state = run(
            &state,
            Request::Schedule(ScheduleRequest::Patch(Box::new(trigger))),
            T0 + 200 * SEC,
        );
        assert_eq!(schedule(&state).starting.len(), 3);
    }

    #[test]
    fn a_failed_workflow_pauses_a_schedule_that_asks_for_it() {
        let mut spec = every(60, enums::ScheduleOverlapPolicy::Skip);
        if let Some(p) = spec.policies.as_mut() {
            p.pause_on_failure = true;
        }
        let trigger = sched::SchedulePatch {
            trigger_immediately: Some(Default::default()),
            ..Default::default()
        };
        let state = created(spec, Some(trigger));
        assert_eq!(schedule(&state).starting.len(), 1);
        let state = started(&state, 0, T0);
        let failed = ScheduleReport::Closed {
            seq: 0,
            status: enums::WorkflowExecutionStatus::Failed as i32,
            result: Vec::new(),
            failure: Vec::new(),
        };
        let state = report(&state, failed, T0 + SEC);
        let sched_state = schedule_of(schedule(&state)).state.unwrap_or_default();
        assert!(sched_state.paused, "{sched_state:?}");
        assert!(deadlines(&state).is_empty());
    }

    #[test]
    fn cancel_other_asks_the_running_workflow_to_stop_and_waits_for_it() {
        let state = created(every(60, enums::ScheduleOverlapPolicy::CancelOther), None);
        let state = fire_at(&state, T0 + 60 * SEC);
        let state = started(&state, 0, T0 + 60 * SEC);
        let state = fire_at(&state, T0 + 120 * SEC);
        assert_eq!(schedule(&state).buffered.len(), 1);
        assert!(crate::engine::transfers(&state).contains(&Transfer::ScheduleStop { seq: 0 }));
        let state = report(&state, ScheduleReport::StopSent { seq: 0 }, T0 + 121 * SEC);
        assert!(!crate::engine::transfers(&state).contains(&Transfer::ScheduleStop { seq: 0 }));
        let closed = ScheduleReport::Closed {
            seq: 0,
            status: enums::WorkflowExecutionStatus::Canceled as i32,
            result: Vec::new(),
            failure: Vec::new(),
        };
        let state = report(&state, closed, T0 + 122 * SEC);
        assert_eq!(schedule(&state).starting.len(), 1);
    }

    #[test]
    fn updates_check_the_conflict_token_and_pauses_carry_their_note() {
        let state = created(every(60, enums::ScheduleOverlapPolicy::Skip), None);
        let update = |token: Vec<u8>| {
            Request::Schedule(ScheduleRequest::Update {
                schedule: Box::new(every(30, enums::ScheduleOverlapPolicy::Skip)),
                conflict_token: token,
                search_attributes: None,
                memo: None,
            })
        };
        let stale = handle(
            &state,
            update(5i64.to_be_bytes().to_vec()),
            T0,
            &Limits::default(),
        );
        assert!(matches!(stale, Err(EngineError::FailedPrecondition(_))));
        let token = conflict_token(schedule(&state));
        let state = run(&state, update(token.clone()), T0 + SEC);
        assert_ne!(conflict_token(schedule(&state)), token);
        assert_eq!(
            deadlines(&state),
            vec![(T0 + 30 * SEC, Deadline::ScheduleAction)]
        );
        let pause = sched::SchedulePatch {
            pause: "maintenance".into(),
            ..Default::default()
        };
        let state = run(
            &state,
            Request::Schedule(ScheduleRequest::Patch(Box::new(pause))),
            T0 + 2 * SEC,
        );
        let sched_state = schedule_of(schedule(&state)).state.unwrap_or_default();
        assert!(sched_state.paused && sched_state.notes == "maintenance");
        assert!(deadlines(&state).is_empty());
    }

    #[test]
    fn workflow_ids_carry_the_nominal_time_unless_kept() {
        let mut schedule = every(60, enums::ScheduleOverlapPolicy::Skip);
        assert_eq!(
            action_workflow_id(&schedule, "wf", T0),
            "wf-2027-01-15T08:00:00Z"
        );
        if let Some(p) = schedule.policies.as_mut() {
            p.keep_original_workflow_id = true;
        }
        assert_eq!(action_workflow_id(&schedule, "wf", T0), "wf");
    }
}
