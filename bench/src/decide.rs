//! Workflow-task decisions: what a scenario's workflow does next, read off its history (no replay).

use keel_proto::temporal::api::{
    command::v1::{self as command, command::Attributes as CommandAttributes, Command},
    common::v1::{ActivityType, Payloads, WorkflowType},
    enums::v1::{CommandType, EventType, TaskQueueKind},
    failure::v1::Failure,
    history::v1::{history_event::Attributes as EventAttributes, HistoryEvent},
    protocol::v1::{message::SequencingId, Message},
    taskqueue::v1::TaskQueue,
    update::v1::{self as update, outcome},
};
use prost::Message as _;

/// Workflow type of every scenario's top-level workflow.
pub const WORKFLOW_TYPE: &str = "keel-bench";
/// Workflow type of the `fanout` scenario's children.
pub const CHILD_WORKFLOW_TYPE: &str = "keel-bench-child";
/// Activity type every scheduled activity uses.
pub const ACTIVITY_TYPE: &str = "keel-bench-activity";
/// Signal name the `entity` scenario sends.
pub const SIGNAL_NAME: &str = "keel-bench-signal";
/// Update name the `entity` scenario sends.
pub const UPDATE_NAME: &str = "keel-bench-update";

const UPDATE_REQUEST_TYPE: &str = "temporal.api.update.v1.Request";
const ACTIVITY_TIMEOUT_S: i64 = 60;

/// What a scenario's workflow does, as the worker needs to know it.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkflowPlan {
    /// Run `activities` activities one after another, then complete.
    Chain { activities: u32 },
    /// Sleep on one timer, then complete.
    Timer { seconds: f64 },
    /// Start `children` child workflows at once, complete when all completed.
    Fanout { children: u32 },
    /// Accept every update; complete once `signals` signals and `updates` updates were handled.
    Entity { signals: u32, updates: u32 },
}

/// Where a workflow task came from: enough to name children and activities.
#[derive(Clone, Debug)]
pub struct TaskContext<'a> {
    pub namespace: &'a str,
    pub task_queue: &'a str,
    pub workflow_id: &'a str,
    pub workflow_type: &'a str,
}

/// The counts a decision needs, read off a run's full history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistorySummary {
    pub activities_scheduled: u32,
    pub activities_completed: u32,
    pub timers_started: u32,
    pub timers_fired: u32,
    /// How much later than asked the last timer fired (server event times), in ms.
    pub timer_late_ms: Option<f64>,
    pub children_initiated: u32,
    pub children_completed: u32,
    pub signals: u32,
    pub updates_completed: u32,
    /// The first event saying something the scenario never expects went wrong.
    pub failure: Option<String>,
}

impl HistorySummary {
    pub fn from_events(events: &[HistoryEvent]) -> Self {
        let mut summary = HistorySummary::default();
        let mut timer_started_at_ms: Option<f64> = None;
        let mut timer_duration_ms = 0.0;
        for event in events {
            let event_type =
                EventType::try_from(event.event_type).unwrap_or(EventType::Unspecified);
            let at_ms = event
                .event_time
                .as_ref()
                .map(|t| t.seconds as f64 * 1e3 + t.nanos as f64 / 1e6);
            match event_type {
                EventType::ActivityTaskScheduled => summary.activities_scheduled += 1,
                EventType::ActivityTaskCompleted => summary.activities_completed += 1,
                EventType::TimerStarted => {
                    summary.timers_started += 1;
                    timer_started_at_ms = at_ms;
                    if let Some(EventAttributes::TimerStartedEventAttributes(a)) = &event.attributes
                    {
                        timer_duration_ms = a
                            .start_to_fire_timeout
                            .as_ref()
                            .map(|d| d.seconds as f64 * 1e3 + d.nanos as f64 / 1e6)
                            .unwrap_or(0.0);
                    }
                }
                EventType::TimerFired => {
                    summary.timers_fired += 1;
                    if let (Some(started), Some(fired)) = (timer_started_at_ms, at_ms) {
                        summary.timer_late_ms = Some(fired - started - timer_duration_ms);
                    }
                }
                EventType::StartChildWorkflowExecutionInitiated => summary.children_initiated += 1,
                EventType::ChildWorkflowExecutionCompleted => summary.children_completed += 1,
                EventType::WorkflowExecutionSignaled => summary.signals += 1,
                EventType::WorkflowExecutionUpdateCompleted => summary.updates_completed += 1,
                EventType::ActivityTaskFailed
                | EventType::ActivityTaskTimedOut
                | EventType::ActivityTaskCanceled
                | EventType::TimerCanceled
                | EventType::StartChildWorkflowExecutionFailed
                | EventType::ChildWorkflowExecutionFailed
                | EventType::ChildWorkflowExecutionCanceled
                | EventType::ChildWorkflowExecutionTimedOut
                | EventType::ChildWorkflowExecutionTerminated
                    if summary.failure.is_none() =>
                {
                    summary.failure = Some(format!(
                        "event {} is {}",
                        event.event_id,
                        event_type.as_str_name()
                    ));
                }
                _ => {}
            }
        }
        summary
    }
}

/// A workflow task's answer: commands and protocol messages, and whether it closes the run.
#[derive(Debug, Default)]
pub struct Decision {
    pub commands: Vec<Command>,
    pub messages: Vec<Message>,
    pub completes: bool,
}

/// What the workflow does next, given its history so far and the task's protocol messages.
pub fn decide(
    plan: &WorkflowPlan,
    task: &TaskContext<'_>,
    summary: &HistorySummary,
    messages: &[Message],
) -> Decision {
    let mut decision = Decision::default();
    if task.workflow_type == CHILD_WORKFLOW_TYPE {
        decision.complete();
        return decision;
    }
    if let Some(failure) = &summary.failure {
        decision.fail(failure);
        return decision;
    }
    match *plan {
        WorkflowPlan::Chain { activities } => {
            if summary.activities_scheduled > summary.activities_completed {
                // An activity is still running; this task was for something else.
            } else if summary.activities_completed < activities {
                let activity_id = (summary.activities_completed + 1).to_string();
                decision.commands.push(schedule_activity(
                    &activity_id,
                    ACTIVITY_TYPE,
                    task.task_queue,
                ));
            } else {
                decision.complete();
            }
        }
        WorkflowPlan::Timer { seconds } => {
            if summary.timers_fired > 0 {
                decision.complete();
            } else if summary.timers_started == 0 {
                decision.commands.push(start_timer("1", seconds));
            }
        }
        WorkflowPlan::Fanout { children } => {
            if summary.children_initiated == 0 {
                for index in 0..children {
                    decision.commands.push(start_child(task, index));
                }
            } else if summary.children_completed >= children {
                decision.complete();
            }
        }
        WorkflowPlan::Entity { signals, updates } => {
            let mut updates_completed = summary.updates_completed;
            for message in messages {
                if let Some((acceptance, response)) = answer_update(message, Payloads::default()) {
                    for answer in [acceptance, response] {
                        decision.commands.push(protocol_message_command(&answer.id));
                        decision.messages.push(answer);
                    }
                    updates_completed += 1;
                }
            }
            if summary.signals >= signals && updates_completed >= updates {
                decision.complete();
            }
        }
    }
    decision
}

impl Decision {
    fn complete(&mut self) {
        self.completes = true;
        self.commands.push(complete_workflow(None));
    }

    fn fail(&mut self, why: &str) {
        self.completes = true;
        self.commands.push(Command {
            command_type: CommandType::FailWorkflowExecution as i32,
            attributes: Some(CommandAttributes::FailWorkflowExecutionCommandAttributes(
                command::FailWorkflowExecutionCommandAttributes {
                    failure: Some(Failure {
                        message: format!("keel-bench: {why}"),
                        ..Default::default()
                    }),
                },
            )),
            ..Default::default()
        });
    }
}

/// The command that completes the workflow with `result`.
pub fn complete_workflow(result: Option<Payloads>) -> Command {
    Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            CommandAttributes::CompleteWorkflowExecutionCommandAttributes(
                command::CompleteWorkflowExecutionCommandAttributes { result },
            ),
        ),
        ..Default::default()
    }
}

/// `seconds` as a protobuf duration.
pub fn duration(seconds: f64) -> prost_wkt_types::Duration {
    prost_wkt_types::Duration {
        seconds: seconds.trunc() as i64,
        nanos: (seconds.fract() * 1e9) as i32,
    }
}

/// The normal task queue `name`.
pub fn task_queue(name: &str) -> TaskQueue {
    TaskQueue {
        name: name.to_string(),
        kind: TaskQueueKind::Normal as i32,
        ..Default::default()
    }
}

/// The command that schedules activity `activity_id` of `activity_type` on `queue`.
pub fn schedule_activity(activity_id: &str, activity_type: &str, queue: &str) -> Command {
    Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(CommandAttributes::ScheduleActivityTaskCommandAttributes(
            command::ScheduleActivityTaskCommandAttributes {
                activity_id: activity_id.to_string(),
                activity_type: Some(ActivityType {
                    name: activity_type.to_string(),
                }),
                task_queue: Some(task_queue(queue)),
                start_to_close_timeout: Some(duration(ACTIVITY_TIMEOUT_S as f64)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The command that starts timer `timer_id` for `seconds`.
pub fn start_timer(timer_id: &str, seconds: f64) -> Command {
    Command {
        command_type: CommandType::StartTimer as i32,
        attributes: Some(CommandAttributes::StartTimerCommandAttributes(
            command::StartTimerCommandAttributes {
                timer_id: timer_id.to_string(),
                start_to_fire_timeout: Some(duration(seconds)),
            },
        )),
        ..Default::default()
    }
}

/// Workflow id of a `fanout` parent's `index`th child.
pub fn child_workflow_id(parent_workflow_id: &str, index: u32) -> String {
    format!("{parent_workflow_id}/child-{index}")
}

fn start_child(task: &TaskContext<'_>, index: u32) -> Command {
    #[allow(deprecated)]
    let attributes = command::StartChildWorkflowExecutionCommandAttributes {
        namespace: task.namespace.to_string(),
        workflow_id: child_workflow_id(task.workflow_id, index),
        workflow_type: Some(WorkflowType {
            name: CHILD_WORKFLOW_TYPE.to_string(),
        }),
        task_queue: Some(task_queue(task.task_queue)),
        ..Default::default()
    };
    Command {
        command_type: CommandType::StartChildWorkflowExecution as i32,
        attributes: Some(
            CommandAttributes::StartChildWorkflowExecutionCommandAttributes(attributes),
        ),
        ..Default::default()
    }
}

/// The command that places protocol message `message_id` among the task's commands.
pub fn protocol_message_command(message_id: &str) -> Command {
    Command {
        command_type: CommandType::ProtocolMessage as i32,
        attributes: Some(CommandAttributes::ProtocolMessageCommandAttributes(
            command::ProtocolMessageCommandAttributes {
                message_id: message_id.to_string(),
            },
        )),
        ..Default::default()
    }
}

/// The update request a protocol message carries; `None` for other messages.
pub fn update_request(message: &Message) -> Option<update::Request> {
    let body = message.body.as_ref()?;
    if body.type_url.rsplit('/').next() != Some(UPDATE_REQUEST_TYPE) {
        return None;
    }
    update::Request::decode(body.value.as_slice()).ok()
}

/// Acceptance and successful response (answering `result`) for an update request message;
/// `None` for other messages.
pub fn answer_update(message: &Message, result: Payloads) -> Option<(Message, Message)> {
    let request = Some(update_request(message)?);
    let sequencing_event_id = match message.sequencing_id {
        Some(SequencingId::EventId(event_id)) => event_id,
        _ => 0,
    };
    let instance = &message.protocol_instance_id;
    let meta = request.as_ref().and_then(|r| r.meta.clone());
    let acceptance = update::Acceptance {
        accepted_request_message_id: message.id.clone(),
        accepted_request_sequencing_event_id: sequencing_event_id,
        accepted_request: request,
    };
    let response = update::Response {
        meta,
        outcome: Some(update::Outcome {
            value: Some(outcome::Value::Success(result)),
        }),
    };
    Some((
        protocol_message(instance, "accept", "Acceptance", &acceptance),
        protocol_message(instance, "complete", "Response", &response),
    ))
}

fn protocol_message(
    instance: &str,
    suffix: &str,
    type_name: &str,
    body: &impl prost::Message,
) -> Message {
    Message {
        id: format!("{instance}/{suffix}"),
        protocol_instance_id: instance.to_string(),
        sequencing_id: None,
        body: Some(prost_wkt_types::Any {
            type_url: format!("type.googleapis.com/temporal.api.update.v1.{type_name}"),
            value: body.encode_to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_id: i64, event_type: EventType) -> HistoryEvent {
        HistoryEvent {
            event_id,
            event_type: event_type as i32,
            ..Default::default()
        }
    }

    fn history(types: &[EventType]) -> HistorySummary {
        let events: Vec<_> = types
            .iter()
            .enumerate()
            .map(|(i, t)| event(i as i64 + 1, *t))
            .collect();
        HistorySummary::from_events(&events)
    }

    const TASK: TaskContext<'static> = TaskContext {
        namespace: "default",
        task_queue: "q",
        workflow_id: "wf",
        workflow_type: WORKFLOW_TYPE,
    };

    fn command_types(decision: &Decision) -> Vec<CommandType> {
        decision
            .commands
            .iter()
            .map(|c| CommandType::try_from(c.command_type).unwrap())
            .collect()
    }

    use EventType::*;

    #[test]
    fn chain_schedules_the_next_activity_after_each_completion_then_completes() {
        let plan = WorkflowPlan::Chain { activities: 2 };
        let first = decide(&plan, &TASK, &history(&[WorkflowExecutionStarted]), &[]);
        assert_eq!(command_types(&first), [CommandType::ScheduleActivityTask]);
        let running = history(&[WorkflowExecutionStarted, ActivityTaskScheduled]);
        assert!(decide(&plan, &TASK, &running, &[]).commands.is_empty());
        let one_done = history(&[
            WorkflowExecutionStarted,
            ActivityTaskScheduled,
            ActivityTaskCompleted,
        ]);
        let second = decide(&plan, &TASK, &one_done, &[]);
        match &second.commands[0].attributes {
            Some(CommandAttributes::ScheduleActivityTaskCommandAttributes(a)) => {
                assert_eq!(a.activity_id, "2")
            }
            other => panic!("expected an activity, got {other:?}"),
        }
        let both_done = history(&[
            WorkflowExecutionStarted,
            ActivityTaskScheduled,
            ActivityTaskCompleted,
            ActivityTaskScheduled,
            ActivityTaskCompleted,
        ]);
        let last = decide(&plan, &TASK, &both_done, &[]);
        assert_eq!(
            command_types(&last),
            [CommandType::CompleteWorkflowExecution]
        );
        assert!(last.completes);
    }

    #[test]
    fn an_unexpected_failure_fails_the_workflow() {
        let plan = WorkflowPlan::Chain { activities: 2 };
        let failed = history(&[
            WorkflowExecutionStarted,
            ActivityTaskScheduled,
            ActivityTaskTimedOut,
        ]);
        assert!(failed
            .failure
            .as_deref()
            .unwrap()
            .contains("ACTIVITY_TASK_TIMED_OUT"));
        let decision = decide(&plan, &TASK, &failed, &[]);
        assert_eq!(
            command_types(&decision),
            [CommandType::FailWorkflowExecution]
        );
    }

    #[test]
    fn timer_starts_once_and_lateness_is_measured_from_event_times() {
        let plan = WorkflowPlan::Timer { seconds: 1.5 };
        let first = decide(&plan, &TASK, &history(&[WorkflowExecutionStarted]), &[]);
        assert_eq!(command_types(&first), [CommandType::StartTimer]);
        let waiting = history(&[WorkflowExecutionStarted, TimerStarted]);
        assert!(decide(&plan, &TASK, &waiting, &[]).commands.is_empty());

        let at = |ms: i64| prost_wkt_types::Timestamp {
            seconds: ms / 1000,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        };
        let mut started = event(5, TimerStarted);
        started.event_time = Some(at(10_000));
        started.attributes = Some(EventAttributes::TimerStartedEventAttributes(
            keel_proto::temporal::api::history::v1::TimerStartedEventAttributes {
                timer_id: "1".into(),
                start_to_fire_timeout: Some(duration(1.5)),
                workflow_task_completed_event_id: 4,
            },
        ));
        let mut fired = event(6, TimerFired);
        fired.event_time = Some(at(11_520));
        let summary = HistorySummary::from_events(&[started, fired]);
        assert_eq!(summary.timer_late_ms, Some(20.0));
        assert!(decide(&plan, &TASK, &summary, &[]).completes);
    }

    #[test]
    fn fanout_starts_all_children_once_and_completes_when_all_completed() {
        let plan = WorkflowPlan::Fanout { children: 2 };
        let first = decide(&plan, &TASK, &history(&[WorkflowExecutionStarted]), &[]);
        assert_eq!(
            command_types(&first),
            [
                CommandType::StartChildWorkflowExecution,
                CommandType::StartChildWorkflowExecution
            ]
        );
        match &first.commands[1].attributes {
            Some(CommandAttributes::StartChildWorkflowExecutionCommandAttributes(a)) => {
                assert_eq!(a.workflow_id, "wf/child-1");
                assert_eq!(a.workflow_type.as_ref().unwrap().name, CHILD_WORKFLOW_TYPE);
            }
            other => panic!("expected a child, got {other:?}"),
        }
        let one = history(&[
            StartChildWorkflowExecutionInitiated,
            StartChildWorkflowExecutionInitiated,
            ChildWorkflowExecutionStarted,
            ChildWorkflowExecutionCompleted,
        ]);
        assert!(decide(&plan, &TASK, &one, &[]).commands.is_empty());
        let both = history(&[
            StartChildWorkflowExecutionInitiated,
            StartChildWorkflowExecutionInitiated,
            ChildWorkflowExecutionCompleted,
            ChildWorkflowExecutionCompleted,
        ]);
        assert!(decide(&plan, &TASK, &both, &[]).completes);
        let child = TaskContext {
            workflow_type: CHILD_WORKFLOW_TYPE,
            ..TASK
        };
        assert!(decide(&plan, &child, &history(&[WorkflowExecutionStarted]), &[]).completes);
    }

    fn update_request_message(update_id: &str, sequencing_event_id: i64) -> Message {
        let request = update::Request {
            meta: Some(update::Meta {
                update_id: update_id.into(),
                identity: "client".into(),
            }),
            input: Some(update::Input {
                name: UPDATE_NAME.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Message {
            id: format!("{update_id}/request"),
            protocol_instance_id: update_id.into(),
            sequencing_id: Some(SequencingId::EventId(sequencing_event_id)),
            body: Some(prost_wkt_types::Any {
                type_url: format!("type.googleapis.com/{UPDATE_REQUEST_TYPE}"),
                value: request.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn entity_accepts_and_answers_updates_and_completes_after_all_signals_and_updates() {
        let plan = WorkflowPlan::Entity {
            signals: 2,
            updates: 2,
        };
        let one_signal = history(&[WorkflowExecutionStarted, WorkflowExecutionSignaled]);
        let decision = decide(
            &plan,
            &TASK,
            &one_signal,
            &[update_request_message("u1", 7)],
        );
        assert_eq!(
            command_types(&decision),
            [CommandType::ProtocolMessage, CommandType::ProtocolMessage]
        );
        assert!(!decision.completes);
        assert_eq!(decision.messages[0].id, "u1/accept");
        let acceptance = update::Acceptance::decode(
            decision.messages[0].body.as_ref().unwrap().value.as_slice(),
        )
        .unwrap();
        assert_eq!(acceptance.accepted_request_message_id, "u1/request");
        assert_eq!(acceptance.accepted_request_sequencing_event_id, 7);
        let response =
            update::Response::decode(decision.messages[1].body.as_ref().unwrap().value.as_slice())
                .unwrap();
        assert_eq!(response.meta.unwrap().update_id, "u1");

        let all_signals_one_update = history(&[
            WorkflowExecutionStarted,
            WorkflowExecutionSignaled,
            WorkflowExecutionSignaled,
            WorkflowExecutionUpdateAccepted,
            WorkflowExecutionUpdateCompleted,
        ]);
        assert!(!decide(&plan, &TASK, &all_signals_one_update, &[]).completes);
        let last = decide(
            &plan,
            &TASK,
            &all_signals_one_update,
            &[update_request_message("u2", 9)],
        );
        assert_eq!(
            command_types(&last),
            [
                CommandType::ProtocolMessage,
                CommandType::ProtocolMessage,
                CommandType::CompleteWorkflowExecution
            ]
        );
    }
}
