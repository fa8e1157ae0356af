//! One engine decision in progress: the run's state being changed and the events being written.

use prost::Message;

use super::proto::{self, enums, history, Attributes, HistoryEvent};
use super::state::{MutableState, RunStatus, WorkflowTaskInfo};
use super::{Limits, Outcome, Reply};

/// A decision in progress over one run.
pub(crate) struct Txn<'a> {
    pub(crate) state: MutableState,
    pub(crate) now: i64,
    pub(crate) limits: &'a Limits,
    pub(crate) events: Vec<HistoryEvent>,
    /// A run that follows the closing one (workflow retry).
    pub(crate) successor: Option<Outcome>,
}

impl<'a> Txn<'a> {
    pub(crate) fn new(state: MutableState, now: i64, limits: &'a Limits) -> Txn<'a> {
        Txn {
            state,
            now,
            limits,
            events: Vec::new(),
            successor: None,
        }
    }

    pub(crate) fn finish(self, reply: Reply) -> Outcome {
        Outcome {
            state: self.state,
            events: self.events,
            reply,
            successor: self.successor.map(Box::new),
        }
    }

    fn event(&self, event_id: i64, attributes: Attributes) -> HistoryEvent {
        self.event_at(event_id, self.now, attributes)
    }

    fn event_at(&self, event_id: i64, time_ns: i64, attributes: Attributes) -> HistoryEvent {
        HistoryEvent {
            event_id,
            event_time: Some(proto::timestamp(time_ns)),
            event_type: proto::event_type(&attributes) as i32,
            task_id: event_id,
            // Events workflows need not replay, which SDKs that predate them skip (as Temporal
            // marks them).
            worker_may_ignore: matches!(
                attributes,
                Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(_)
            ),
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    /// Writes an event to history now and returns its id.
    pub(crate) fn append(&mut self, attributes: Attributes) -> i64 {
        self.append_at(attributes, self.now)
    }

    /// Writes to history now an event of something that happened at `time_ns` (a worker's
    /// start of an activity attempt, recorded when the attempt ends); returns its id.
    pub(crate) fn append_at(&mut self, attributes: Attributes, time_ns: i64) -> i64 {
        let id = self.state.next_event_id;
        let event = self.event_at(id, time_ns, attributes);
        self.push(event);
        id
    }

    pub(crate) fn push(&mut self, event: HistoryEvent) {
        self.state.next_event_id = event.event_id + 1;
        self.state.history_size_bytes += event.encoded_len() as i64;
        self.events.push(event);
        // A transient workflow task not yet started takes its ids when it starts.
        if let Some(task) = self.state.workflow_task.as_mut() {
            if task.is_transient() && task.started.is_none() {
                task.scheduled_event_id = self.state.next_event_id;
            }
        }
    }

    /// Adds an event the workflow must see: buffered while a workflow task runs, written
    /// otherwise; then makes sure a workflow task will deliver it. Returns the event id, or 0
    /// when buffered.
    pub(crate) fn add_worker_event(&mut self, attributes: Attributes) -> i64 {
        self.add_worker_event_at(attributes, self.now)
    }

    /// [`Txn::add_worker_event`] for something that happened at `time_ns`.
    pub(crate) fn add_worker_event_at(&mut self, attributes: Attributes, time_ns: i64) -> i64 {
        if self.state.workflow_task_started() {
            let event = self.event_at(0, time_ns, attributes);
            self.state.buffered_events.push(event.encode_to_vec());
            0
        } else {
            let id = self.append_at(attributes, time_ns);
            self.make_speculative_task_normal();
            self.schedule_workflow_task();
            id
        }
    }

    /// Adds an event the workflow need not act on: buffered while a workflow task runs (it
    /// goes to history when that task ends), written otherwise; no workflow task is scheduled
    /// for it.
    pub(crate) fn add_buffered_event(&mut self, attributes: Attributes) {
        if self.state.workflow_task_started() {
            let event = self.event_at(0, self.now, attributes);
            self.state.buffered_events.push(event.encode_to_vec());
        } else {
            self.append(attributes);
        }
    }

    /// A speculative task not yet started becomes a normal one once other events arrive (its
    /// scheduled event is written after them): the worker must see them in history.
    fn make_speculative_task_normal(&mut self) {
        let Some(task) = self.state.workflow_task.as_mut() else {
            return;
        };
        if !task.speculative || task.started.is_some() {
            return;
        }
        task.speculative = false;
        let task = task.clone();
        let scheduled = self.scheduled_event(&task);
        if let Some(attributes) = scheduled.attributes {
            self.append(attributes);
        }
    }

    /// Writes the buffered events, assigning ids and linking activity close events to the
    /// started events written with them.
    pub(crate) fn flush_buffered(&mut self) {
        let buffered = std::mem::take(&mut self.state.buffered_events);
        let mut started_ids = std::collections::BTreeMap::new();
        let mut child_started = std::collections::BTreeMap::new();
        for bytes in buffered {
            let Ok(mut event) = HistoryEvent::decode(bytes.as_slice()) else {
                continue;
            };
            event.event_id = self.state.next_event_id;
            event.task_id = event.event_id;
            match event.attributes.as_mut() {
                Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                    started_ids.insert(a.scheduled_event_id, event.event_id);
                }
                Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                    a.started_event_id =
                        started_ids.get(&a.scheduled_event_id).copied().unwrap_or(0)
                }
                Some(Attributes::ActivityTaskFailedEventAttributes(a)) => {
                    a.started_event_id =
                        started_ids.get(&a.scheduled_event_id).copied().unwrap_or(0)
                }
                Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => {
                    a.started_event_id =
                        started_ids.get(&a.scheduled_event_id).copied().unwrap_or(0)
                }
                Some(Attributes::ActivityTaskCanceledEventAttributes(a)) => {
                    a.started_event_id =
                        started_ids.get(&a.scheduled_event_id).copied().unwrap_or(0)
                }
                Some(Attributes::ChildWorkflowExecutionStartedEventAttributes(a)) => {
                    child_started.insert(a.initiated_event_id, event.event_id);
                    if let Some(child) = self.state.children.get_mut(&a.initiated_event_id) {
                        child.started_event_id = event.event_id;
                    }
                }
                Some(attributes) => {
                    if let Some((initiated, started)) = child_close_ids(attributes) {
                        if *started == 0 {
                            *started = child_started.get(&initiated).copied().unwrap_or(0);
                        }
                    }
                }
                None => {}
            }
            self.push(event);
        }
    }

    /// Schedules a workflow task unless one is pending, the run is closed or its start is
    /// delayed. Attempts after the first are transient (no event until they complete).
    pub(crate) fn schedule_workflow_task(&mut self) {
        self.schedule_task(false);
    }

    /// Schedules a speculative workflow task (to carry updates) unless a task is pending.
    pub(crate) fn schedule_speculative_workflow_task(&mut self) {
        self.schedule_task(true);
    }

    fn schedule_task(&mut self, speculative: bool) {
        if self.state.workflow_task.is_some()
            || !self.state.is_running()
            || self.state.first_task_backoff_until_ns.is_some()
            || self.state.activity_execution.is_some()
        {
            return;
        }
        let attempt = self.state.next_workflow_task_attempt.max(1);
        let timeout_ms = self.state.workflow_task_timeout_ms;
        let scheduled_event_id = if attempt == 1 && !speculative {
            self.append(Attributes::WorkflowTaskScheduledEventAttributes(
                history::WorkflowTaskScheduledEventAttributes {
                    task_queue: Some(proto::task_queue(&self.state.task_queue)),
                    start_to_close_timeout: proto::duration(timeout_ms),
                    attempt,
                },
            ))
        } else {
            self.state.next_event_id
        };
        self.state.workflow_task = Some(WorkflowTaskInfo {
            scheduled_event_id,
            scheduled_time_ns: self.now,
            attempt,
            timeout_ms,
            started: None,
            speculative,
        });
    }

    /// The scheduled event of a transient workflow task, as the worker must see it.
    pub(crate) fn scheduled_event(&self, task: &WorkflowTaskInfo) -> HistoryEvent {
        let mut event = self.event(
            task.scheduled_event_id,
            Attributes::WorkflowTaskScheduledEventAttributes(
                history::WorkflowTaskScheduledEventAttributes {
                    task_queue: Some(proto::task_queue(&self.state.task_queue)),
                    start_to_close_timeout: proto::duration(task.timeout_ms),
                    attempt: task.attempt,
                },
            ),
        );
        event.event_time = Some(proto::timestamp(task.scheduled_time_ns));
        event
    }

    /// The started event of a started workflow task.
    pub(crate) fn started_event(&self, task: &WorkflowTaskInfo) -> Option<HistoryEvent> {
        let started = task.started.as_ref()?;
        let (suggest, reasons) = self.suggest_continue_as_new();
        let mut event = self.event(
            started.event_id,
            Attributes::WorkflowTaskStartedEventAttributes(
                history::WorkflowTaskStartedEventAttributes {
                    scheduled_event_id: task.scheduled_event_id,
                    identity: started.identity.clone(),
                    request_id: started.request_id.clone(),
                    suggest_continue_as_new: suggest,
                    suggest_continue_as_new_reasons: reasons,
                    history_size_bytes: self.state.history_size_bytes,
                    ..Default::default()
                },
            ),
        );
        event.event_time = Some(proto::timestamp(started.time_ns));
        Some(event)
    }

    fn suggest_continue_as_new(&self) -> (bool, Vec<i32>) {
        let mut reasons = Vec::new();
        if self.state.next_event_id >= self.limits.suggest_continue_as_new_events {
            reasons.push(enums::SuggestContinueAsNewReason::TooManyHistoryEvents as i32);
        }
        if self.state.history_size_bytes >= self.limits.suggest_continue_as_new_bytes {
            reasons.push(enums::SuggestContinueAsNewReason::HistorySizeTooLarge as i32);
        }
        (!reasons.is_empty(), reasons)
    }

    /// Ends the current workflow task attempt: a WorkflowTaskFailed event is written for a
    /// started first attempt (transient attempts leave no trace, as in Temporal), and the run
    /// leaves its sticky queue, as in Temporal: the worker's cached state is behind what
    /// happened, so the next task carries the whole history to a worker that replays it.
    pub(crate) fn end_workflow_task_attempt(
        &mut self,
        cause: enums::WorkflowTaskFailedCause,
        failure: Option<proto::failure::Failure>,
        identity: String,
    ) {
        let Some(task) = self.state.workflow_task.take() else {
            return;
        };
        self.clear_sticky();
        if let (false, Some(started)) = (task.is_transient(), task.started.as_ref()) {
            self.append(Attributes::WorkflowTaskFailedEventAttributes(
                history::WorkflowTaskFailedEventAttributes {
                    scheduled_event_id: task.scheduled_event_id,
                    started_event_id: started.event_id,
                    cause: cause as i32,
                    failure,
                    identity,
                    ..Default::default()
                },
            ));
        }
    }

    /// Workflow tasks go to the normal queue from now on.
    pub(crate) fn clear_sticky(&mut self) {
        self.state.sticky_queue.clear();
        self.state.sticky_timeout_ms = 0;
    }

    /// Writes buffered events and schedules workflow task attempt `attempt`.
    pub(crate) fn reschedule_workflow_task(&mut self, attempt: i32) {
        self.flush_buffered();
        self.state.next_workflow_task_attempt = attempt;
        self.schedule_workflow_task();
    }

    /// Before a forced close: a started, non-transient workflow task gets a WorkflowTaskFailed
    /// event with cause FORCE_CLOSE_COMMAND.
    pub(crate) fn fail_started_workflow_task_for_close(&mut self, identity: &str) {
        if self.state.workflow_task_started() {
            self.end_workflow_task_attempt(
                enums::WorkflowTaskFailedCause::ForceCloseCommand,
                None,
                identity.to_string(),
            );
        }
    }

    /// Closes the run with `attributes` as its last event (buffered events are written first).
    pub(crate) fn close(&mut self, status: RunStatus, attributes: Attributes) {
        self.flush_buffered();
        self.state.workflow_task = None;
        self.state.close_event_id = self.append(attributes);
        self.state.status = status;
        self.state.close_time_ns = Some(self.now);
        super::update::fail_accepted_on_close(self);
    }
}

/// The initiated id and (mutable) started id of a child's close event in the parent.
fn child_close_ids(attributes: &mut Attributes) -> Option<(i64, &mut i64)> {
    match attributes {
        Attributes::ChildWorkflowExecutionCompletedEventAttributes(a) => {
            Some((a.initiated_event_id, &mut a.started_event_id))
        }
        Attributes::ChildWorkflowExecutionFailedEventAttributes(a) => {
            Some((a.initiated_event_id, &mut a.started_event_id))
        }
        Attributes::ChildWorkflowExecutionCanceledEventAttributes(a) => {
            Some((a.initiated_event_id, &mut a.started_event_id))
        }
        Attributes::ChildWorkflowExecutionTerminatedEventAttributes(a) => {
            Some((a.initiated_event_id, &mut a.started_event_id))
        }
        Attributes::ChildWorkflowExecutionTimedOutEventAttributes(a) => {
            Some((a.initiated_event_id, &mut a.started_event_id))
        }
        _ => None,
    }
}
