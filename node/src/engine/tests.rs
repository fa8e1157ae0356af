//! Engine tests: drive the pure engine directly through request sequences and check the events
//! it writes against Temporal's histories.

use super::proto::{command, common, enums, Attributes};
use super::*;

const SEC: i64 = 1_000_000_000;

fn start() -> MutableState {
    let args = StartArgs {
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        run_id: "run-1".into(),
        request_id: "req-1".into(),
        workflow_type: "Hello".into(),
        task_queue: "q".into(),
        ..Default::default()
    };
    let outcome = new_run(args, SEC, &Limits::default()).expect("start");
    assert_eq!(
        types(&outcome.events),
        ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    );
    outcome.state
}

fn types(events: &[proto::HistoryEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| {
            enums::EventType::try_from(e.event_type)
                .map(|t| t.as_str_name())
                .unwrap_or("?")
        })
        .map(|name| {
            // EVENT_TYPE_WORKFLOW_TASK_SCHEDULED -> WorkflowTaskScheduled
            let words: String = name
                .trim_start_matches("EVENT_TYPE_")
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_string() + &c.as_str().to_lowercase())
                        .unwrap_or_default()
                })
                .collect();
            Box::leak(words.into_boxed_str()) as &'static str
        })
        .collect()
}

fn step(state: &MutableState, request: Request, at: i64) -> Outcome {
    handle(state, request, at, &Limits::default()).expect("request accepted")
}

fn take_workflow_task(state: &MutableState, at: i64) -> (MutableState, StartedWorkflowTask) {
    let task = state
        .workflow_task
        .clone()
        .expect("a workflow task is scheduled");
    let outcome = step(
        state,
        Request::RecordWorkflowTaskStarted {
            scheduled_event_id: task.scheduled_event_id,
            attempt: task.attempt,
            request_id: format!("poll-{at}"),
            identity: "worker".into(),
        },
        at,
    );
    match outcome.reply {
        Reply::WorkflowTaskStarted(started) => (outcome.state, *started),
        other => panic!("expected a started workflow task, got {other:?}"),
    }
}

fn complete(
    state: &MutableState,
    started: &StartedWorkflowTask,
    commands: Vec<command::Command>,
    at: i64,
) -> Outcome {
    step(
        state,
        Request::CompleteWorkflowTask(Box::new(CompleteWorkflowTask {
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
            commands,
            identity: "worker".into(),
            ..Default::default()
        })),
        at,
    )
}

fn schedule_activity() -> command::Command {
    command::Command {
        command_type: enums::CommandType::ScheduleActivityTask as i32,
        attributes: Some(
            command::command::Attributes::ScheduleActivityTaskCommandAttributes(
                command::ScheduleActivityTaskCommandAttributes {
                    activity_id: "1".into(),
                    activity_type: Some(common::ActivityType {
                        name: "greet".into(),
                    }),
                    start_to_close_timeout: proto::duration(5000),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn complete_workflow() -> command::Command {
    command::Command {
        command_type: enums::CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::command::Attributes::CompleteWorkflowExecutionCommandAttributes(
                Default::default(),
            ),
        ),
        ..Default::default()
    }
}

#[test]
fn activity_round_trip_writes_temporals_event_sequence() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = complete(&state, &started, vec![schedule_activity()], 3 * SEC);
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskStarted",
            "WorkflowTaskCompleted",
            "ActivityTaskScheduled"
        ][1..]
    );
    let state = outcome.state;
    let tasks = dispatchable(&state, 3 * SEC);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, TaskKind::Activity);
    let state = step(
        &state,
        Request::RecordActivityTaskStarted {
            scheduled_event_id: 5,
            attempt: 1,
            request_id: "a".into(),
            identity: "worker".into(),
        },
        4 * SEC,
    )
    .state;
    let outcome = step(
        &state,
        Request::Activity {
            target: ActivityTarget::Token {
                scheduled_event_id: 5,
                attempt: 1,
            },
            report: ActivityReport::Completed(None),
            identity: "worker".into(),
        },
        5 * SEC,
    );
    assert_eq!(
        types(&outcome.events),
        [
            "ActivityTaskStarted",
            "ActivityTaskCompleted",
            "WorkflowTaskScheduled"
        ]
    );
    let ids: Vec<i64> = outcome.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [6, 7, 8]);
    let (state, started) = take_workflow_task(&outcome.state, 6 * SEC);
    let outcome = complete(&state, &started, vec![complete_workflow()], 7 * SEC);
    assert_eq!(
        types(&outcome.events),
        ["WorkflowTaskCompleted", "WorkflowExecutionCompleted"]
    );
    assert_eq!(outcome.state.status, RunStatus::Completed);
    assert_eq!(outcome.state.close_event_id, 11);
}

#[test]
fn a_signal_during_a_workflow_task_is_buffered_and_blocks_completion() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = step(
        &state,
        Request::Signal(Signal {
            name: "go".into(),
            ..Default::default()
        }),
        3 * SEC,
    );
    assert!(outcome.events.is_empty(), "buffered while the task runs");
    let outcome = complete(&outcome.state, &started, vec![complete_workflow()], 4 * SEC);
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskFailed",
            "WorkflowExecutionSignaled",
            "WorkflowTaskScheduled"
        ]
    );
    assert!(outcome.state.is_running());
    let Some(Attributes::WorkflowTaskFailedEventAttributes(failed)) = &outcome.events[0].attributes
    else {
        panic!("expected WorkflowTaskFailed");
    };
    assert_eq!(
        failed.cause,
        enums::WorkflowTaskFailedCause::UnhandledCommand as i32
    );
}

#[test]
fn a_timed_out_workflow_task_retries_as_a_transient_task() {
    let state = start();
    let (state, _) = take_workflow_task(&state, 2 * SEC);
    let deadline = deadlines(&state)
        .into_iter()
        .find(|(_, d)| matches!(d, Deadline::WorkflowTaskTimeout { .. }))
        .expect("task timeout armed");
    assert_eq!(deadline.0, 12 * SEC);
    assert_eq!(
        handle(
            &state,
            Request::Deadline(deadline.1.clone()),
            11 * SEC,
            &Limits::default()
        )
        .err(),
        Some(EngineError::NoChange)
    );
    let outcome = step(&state, Request::Deadline(deadline.1), 12 * SEC);
    assert_eq!(types(&outcome.events), ["WorkflowTaskTimedOut"]);
    let (state, started) = take_workflow_task(&outcome.state, 13 * SEC);
    assert_eq!(started.attempt, 2);
    assert_eq!(
        types(&started.transient_events),
        ["WorkflowTaskScheduled", "WorkflowTaskStarted"]
    );
    let outcome = complete(&state, &started, vec![complete_workflow()], 14 * SEC);
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskScheduled",
            "WorkflowTaskStarted",
            "WorkflowTaskCompleted",
            "WorkflowExecutionCompleted"
        ]
    );
    let ids: Vec<i64> = outcome.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [5, 6, 7, 8]);
}

#[test]
fn stale_tokens_and_closed_runs_are_refused_without_changes() {
    let state = start();
    let stale = Request::RecordWorkflowTaskStarted {
        scheduled_event_id: 99,
        attempt: 1,
        request_id: "x".into(),
        identity: "w".into(),
    };
    assert!(matches!(
        handle(&state, stale, SEC, &Limits::default()),
        Err(EngineError::NotFound(_))
    ));
    let terminated = step(
        &state,
        Request::Terminate {
            reason: "r".into(),
            details: None,
            identity: "me".into(),
        },
        2 * SEC,
    );
    assert_eq!(types(&terminated.events), ["WorkflowExecutionTerminated"]);
    let signal = Request::Signal(Signal {
        name: "late".into(),
        ..Default::default()
    });
    assert_eq!(
        handle(&terminated.state, signal, 3 * SEC, &Limits::default()).err(),
        Some(EngineError::Closed)
    );
}
