//! Engine tests: drive the pure engine directly through request sequences and check the events
//! it writes against Temporal's histories.

use super::activity_control::{ActivitySelector, ControlAction};
use super::proto::{command, common, enums, taskqueue, Attributes};
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
            target_version_changed: false,
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
            task_queue: "q".into(),
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
    // Written when the attempt ended, dated when it started, as Temporal dates it.
    let times: Vec<_> = outcome.events.iter().map(|e| e.event_time).collect();
    let at = |ns: i64| Some(proto::timestamp(ns));
    assert_eq!(times, [at(4 * SEC), at(5 * SEC), at(5 * SEC)]);
    let (state, started) = take_workflow_task(&outcome.state, 6 * SEC);
    let outcome = complete(&state, &started, vec![complete_workflow()], 7 * SEC);
    assert_eq!(
        types(&outcome.events),
        ["WorkflowTaskCompleted", "WorkflowExecutionCompleted"]
    );
    assert_eq!(outcome.state.status, RunStatus::Completed);
    assert_eq!(outcome.state.close_event_id, 11);
}

fn eager(mut command: command::Command, activity_id: &str) -> command::Command {
    if let Some(command::command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
        &mut command.attributes
    {
        a.activity_id = activity_id.into();
        a.request_eager_execution = true;
    }
    command
}

fn request_cancel_activity(scheduled_event_id: i64) -> command::Command {
    command::Command {
        command_type: enums::CommandType::RequestCancelActivityTask as i32,
        attributes: Some(
            command::command::Attributes::RequestCancelActivityTaskCommandAttributes(
                command::RequestCancelActivityTaskCommandAttributes { scheduled_event_id },
            ),
        ),
        ..Default::default()
    }
}

/// A run with activity "1" (scheduled event 5, start-to-close 5 s) started at 4 s.
fn running_activity() -> MutableState {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let state = complete(&state, &started, vec![schedule_activity()], 3 * SEC).state;
    let start_activity = Request::RecordActivityTaskStarted {
        scheduled_event_id: 5,
        attempt: 1,
        task_queue: "q".into(),
        request_id: "a".into(),
        identity: "worker".into(),
    };
    step(&state, start_activity, 4 * SEC).state
}

fn control(action: ControlAction) -> Request {
    Request::ActivityControl(Box::new(ActivityControlRequest {
        selector: ActivitySelector::Id("1".into()),
        action,
    }))
}

fn pause_request(request_id: &str) -> Request {
    control(ControlAction::Pause {
        identity: "op".into(),
        reason: "look".into(),
        request_id: request_id.into(),
    })
}

fn heartbeat(state: &MutableState, at: i64) -> Reply {
    let request = Request::Activity {
        target: ActivityTarget::Token {
            scheduled_event_id: 5,
            attempt: 1,
        },
        report: ActivityReport::Heartbeat(None),
        identity: "worker".into(),
    };
    step(state, request, at).reply
}

#[test]
fn a_paused_activity_is_told_by_heartbeat_retried_without_dispatch_and_has_no_deadlines() {
    let state = running_activity();
    let outcome = step(&state, pause_request("p1"), 5 * SEC);
    assert!(outcome.events.is_empty(), "a pause writes no events");
    let state = outcome.state;
    assert_eq!(
        heartbeat(&state, 5 * SEC),
        Reply::Heartbeat {
            cancel_requested: false,
            paused: true,
            reset: false
        }
    );
    // The same pause again is fine; another one is refused.
    step(&state, pause_request("p1"), 5 * SEC);
    assert!(matches!(
        handle(&state, pause_request("p2"), 5 * SEC, &Limits::default()),
        Err(EngineError::FailedPrecondition(_))
    ));
    assert!(
        deadlines(&state).is_empty(),
        "a paused activity's timeouts do not run"
    );
    // The attempt fails: the retry is scheduled but neither dispatched nor armed.
    let failed = Request::Activity {
        target: ActivityTarget::Token {
            scheduled_event_id: 5,
            attempt: 1,
        },
        report: ActivityReport::Failed {
            failure: None,
            last_heartbeat_details: None,
        },
        identity: "worker".into(),
    };
    let outcome = step(&state, failed, 6 * SEC);
    assert!(outcome.events.is_empty(), "the retry writes no events");
    let state = outcome.state;
    assert_eq!(state.activities[&5].attempt, 2);
    assert!(dispatchable(&state, 100 * SEC).is_empty());
    assert!(deadlines(&state).is_empty());
    let taken = Request::RecordActivityTaskStarted {
        scheduled_event_id: 5,
        attempt: 2,
        task_queue: "q".into(),
        request_id: "b".into(),
        identity: "worker".into(),
    };
    assert!(matches!(
        handle(&state, taken, 100 * SEC, &Limits::default()),
        Err(EngineError::NotFound(_))
    ));
    // Unpausing with jitter: dispatchable once the delay has passed, with a deadline for it.
    let unpause = control(ControlAction::Unpause {
        reset_attempts: true,
        reset_heartbeat: false,
        delay_ms: 2000,
    });
    let state = step(&state, unpause, 10 * SEC).state;
    assert!(state.activity_controls.is_empty());
    assert_eq!(state.activities[&5].attempt, 1);
    assert!(dispatchable(&state, 11 * SEC).is_empty());
    assert_eq!(dispatchable(&state, 12 * SEC).len(), 1);
    assert!(deadlines(&state)
        .iter()
        .any(|(at, d)| *at == 12 * SEC && matches!(d, Deadline::ActivityRetry { .. })));
}

#[test]
fn resetting_a_running_activity_tells_its_heartbeat_and_clears_details_for_the_next_attempt() {
    let state = running_activity();
    let beat = Request::Activity {
        target: ActivityTarget::Token {
            scheduled_event_id: 5,
            attempt: 1,
        },
        report: ActivityReport::Heartbeat(Some(common::Payloads::default())),
        identity: "worker".into(),
    };
    let state = step(&state, beat, 5 * SEC).state;
    assert!(state.activities[&5].heartbeat_details.is_some());
    let reset = control(ControlAction::Reset {
        reset_heartbeat: true,
        keep_paused: false,
        restore_original: false,
        delay_ms: 0,
    });
    let state = step(&state, reset, 6 * SEC).state;
    assert_eq!(
        heartbeat(&state, 6 * SEC),
        Reply::Heartbeat {
            cancel_requested: false,
            paused: false,
            reset: true
        }
    );
    // The attempt times out (start-to-close 5 s from 4 s): the next one starts clean.
    let timeout = Request::Deadline(Deadline::ActivityTimeout {
        scheduled_event_id: 5,
        attempt: 1,
        timeout_type: enums::TimeoutType::StartToClose as i32,
    });
    let state = step(&state, timeout, 9 * SEC).state;
    assert_eq!(state.activities[&5].attempt, 2);
    assert!(state.activities[&5].heartbeat_details.is_none());
    assert!(state.activity_controls.is_empty());
}

#[test]
fn updated_options_apply_validated_and_restore_to_the_scheduled_ones() {
    let state = running_activity();
    let update = control(ControlAction::UpdateOptions {
        options: Box::new(proto::activity::ActivityOptions {
            heartbeat_timeout: proto::duration(60_000),
            task_queue: Some(taskqueue::TaskQueue {
                name: "other".into(),
                ..Default::default()
            }),
            retry_policy: Some(common::RetryPolicy {
                maximum_attempts: 3,
                ..Default::default()
            }),
            ..Default::default()
        }),
        paths: vec![
            "heartbeat_timeout".into(),
            "task_queue_name".into(),
            "retryPolicy.maximumAttempts".into(),
        ],
    });
    let outcome = step(&state, update, 5 * SEC);
    let Reply::ActivityOptions(options) = outcome.reply else {
        panic!("no options in {:?}", outcome.reply);
    };
    // The heartbeat timeout is capped by start-to-close, as at scheduling.
    assert_eq!(options.heartbeat_ms, 5000);
    assert_eq!(options.task_queue, "other");
    assert_eq!(options.retry.maximum_attempts, 3);
    assert_eq!(options.retry.initial_interval_ms, 1000);
    let state = outcome.state;
    assert_eq!(state.activities[&5].task_queue, "other");
    let bad = control(ControlAction::UpdateOptions {
        options: Box::default(),
        paths: vec!["input".into()],
    });
    assert!(matches!(
        handle(&state, bad, 5 * SEC, &Limits::default()),
        Err(EngineError::InvalidArgument(_))
    ));
    let outcome = step(&state, control(ControlAction::RestoreOptions), 6 * SEC);
    let Reply::ActivityOptions(options) = outcome.reply else {
        panic!("no options in {:?}", outcome.reply);
    };
    assert_eq!(options.task_queue, "q");
    assert_eq!(options.retry.maximum_attempts, 0);
    assert!(outcome.state.activity_controls.is_empty());
}

#[test]
fn activities_asked_for_eagerly_start_for_the_completing_worker() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = complete(
        &state,
        &started,
        vec![eager(schedule_activity(), "a"), schedule_activity()],
        3 * SEC,
    );
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskCompleted",
            "ActivityTaskScheduled",
            "ActivityTaskScheduled"
        ]
    );
    assert_eq!(
        outcome.reply,
        Reply::EagerActivitiesStarted {
            next_task: None,
            activities: vec![5],
        }
    );
    let eager_started = outcome.state.activities[&5]
        .started
        .clone()
        .expect("the eager activity is started");
    assert_eq!(eager_started.identity, "worker");
    assert_eq!(eager_started.time_ns, 3 * SEC);
    // Only the activity not asked for eagerly waits for a poller.
    let tasks = dispatchable(&outcome.state, 3 * SEC);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].scheduled_event_id, 6);

    let outcome = step(
        &outcome.state,
        Request::Activity {
            target: ActivityTarget::Token {
                scheduled_event_id: 5,
                attempt: 1,
            },
            report: ActivityReport::Completed(None),
            identity: "worker".into(),
        },
        4 * SEC,
    );
    assert_eq!(
        types(&outcome.events),
        [
            "ActivityTaskStarted",
            "ActivityTaskCompleted",
            "WorkflowTaskScheduled"
        ]
    );
    assert_eq!(
        outcome.events[0].event_time,
        Some(proto::timestamp(3 * SEC))
    );
}

#[test]
fn eager_execution_is_refused_to_canceled_activities_other_task_queues_and_closed_runs() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    // The activity would be event 5: canceled by the next command, it never starts.
    let outcome = complete(
        &state,
        &started,
        vec![eager(schedule_activity(), "a"), request_cancel_activity(5)],
        3 * SEC,
    );
    assert!(
        !matches!(outcome.reply, Reply::EagerActivitiesStarted { .. }),
        "{:?}",
        outcome.reply
    );
    assert!(outcome
        .state
        .activities
        .values()
        .all(|a| a.started.is_none()));

    // The completing worker polls the workflow's queue: an activity sent elsewhere waits there.
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let mut elsewhere = eager(schedule_activity(), "a");
    if let Some(command::command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
        &mut elsewhere.attributes
    {
        a.task_queue = Some(taskqueue::TaskQueue {
            name: "other-queue".into(),
            ..Default::default()
        });
    }
    let outcome = complete(&state, &started, vec![elsewhere], 3 * SEC);
    assert_eq!(outcome.reply, Reply::Done);
    assert!(outcome
        .state
        .activities
        .values()
        .all(|a| a.task_queue == "other-queue" && a.started.is_none()));

    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = complete(
        &state,
        &started,
        vec![eager(schedule_activity(), "a"), complete_workflow()],
        3 * SEC,
    );
    assert_eq!(outcome.reply, Reply::Done);
    assert_eq!(outcome.state.status, RunStatus::Completed);
}

#[test]
fn an_attempt_timing_out_with_no_schedule_to_close_time_left_reports_schedule_to_close() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let mut command = schedule_activity();
    if let Some(command::command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
        command.attributes.as_mut()
    {
        // Start-to-close defaults to schedule-to-close: an attempt started as soon as it was
        // scheduled has both deadlines at the same instant.
        a.start_to_close_timeout = None;
        a.schedule_to_close_timeout = proto::duration(1500);
    }
    let state = complete(&state, &started, vec![command], 3 * SEC).state;
    let start_activity = Request::RecordActivityTaskStarted {
        scheduled_event_id: 5,
        attempt: 1,
        task_queue: "q".into(),
        request_id: "a".into(),
        identity: "worker".into(),
    };
    let state = step(&state, start_activity, 3 * SEC).state;
    let start_to_close = Request::Deadline(Deadline::ActivityTimeout {
        scheduled_event_id: 5,
        attempt: 1,
        timeout_type: enums::TimeoutType::StartToClose as i32,
    });
    let outcome = step(&state, start_to_close, 3 * SEC + 1500 * 1_000_000);
    assert_eq!(
        types(&outcome.events),
        [
            "ActivityTaskStarted",
            "ActivityTaskTimedOut",
            "WorkflowTaskScheduled"
        ]
    );
    let Some(Attributes::ActivityTaskTimedOutEventAttributes(timed_out)) =
        outcome.events[1].attributes.clone()
    else {
        panic!("expected ActivityTaskTimedOut, got {:?}", outcome.events[1]);
    };
    assert_eq!(timed_out.retry_state, enums::RetryState::Timeout as i32);
    let failure = timed_out.failure.unwrap_or_default();
    assert_eq!(failure.message, "activity ScheduleToClose timeout");
    match failure.failure_info {
        Some(proto::failure::failure::FailureInfo::TimeoutFailureInfo(info)) => assert_eq!(
            info.timeout_type,
            enums::TimeoutType::ScheduleToClose as i32
        ),
        other => panic!("expected a timeout failure, got {other:?}"),
    }
}

#[test]
fn a_signal_during_a_workflow_task_is_buffered_and_blocks_completion() {
    let mut state = start();
    // As if an earlier completion had made the run sticky.
    state.sticky_queue = "worker-sticky".into();
    state.sticky_timeout_ms = 5_000;
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
    // The worker's cached state is behind: the retry goes to the normal queue, with the whole
    // history, as in Temporal.
    assert!(outcome.state.sticky_queue.is_empty());
    let tasks = dispatchable(&outcome.state, 4 * SEC);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_queue, "q");
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
        target_version_changed: false,
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

/// A small deterministic generator (xorshift), so a failing seed reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn random_command(rng: &mut Rng, state: &MutableState) -> command::Command {
    use command::command::Attributes as C;
    let activity = |id: u64| {
        C::ScheduleActivityTaskCommandAttributes(command::ScheduleActivityTaskCommandAttributes {
            activity_id: format!("a{id}"),
            activity_type: Some(common::ActivityType { name: "t".into() }),
            start_to_close_timeout: proto::duration(1000 * (1 + id as i64)),
            heartbeat_timeout: proto::duration(if id.is_multiple_of(2) { 500 } else { 0 }),
            retry_policy: Some(common::RetryPolicy {
                maximum_attempts: (id % 3) as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let any_activity = state.activities.keys().next().copied().unwrap_or(99);
    let attributes = match rng.below(10) {
        0..=2 => activity(rng.below(4)),
        3 => C::StartTimerCommandAttributes(command::StartTimerCommandAttributes {
            timer_id: format!("t{}", rng.below(3)),
            start_to_fire_timeout: proto::duration(100 * rng.below(30) as i64),
        }),
        4 => C::CancelTimerCommandAttributes(command::CancelTimerCommandAttributes {
            timer_id: format!("t{}", rng.below(3)),
        }),
        5 => C::RequestCancelActivityTaskCommandAttributes(
            command::RequestCancelActivityTaskCommandAttributes {
                scheduled_event_id: any_activity,
            },
        ),
        6 => C::RecordMarkerCommandAttributes(command::RecordMarkerCommandAttributes {
            marker_name: "m".into(),
            ..Default::default()
        }),
        7 => C::CompleteWorkflowExecutionCommandAttributes(Default::default()),
        8 => C::FailWorkflowExecutionCommandAttributes(Default::default()),
        _ => C::CancelWorkflowExecutionCommandAttributes(Default::default()),
    };
    command::Command {
        attributes: Some(attributes),
        ..Default::default()
    }
}

fn random_request(rng: &mut Rng, state: &MutableState, now: i64) -> Request {
    let task = state.workflow_task.clone();
    let activity = state
        .activities
        .values()
        .nth(rng.below(state.activities.len() as u64 + 1) as usize)
        .cloned();
    match rng.below(10) {
        0 | 1 => match task {
            Some(t) => Request::RecordWorkflowTaskStarted {
                scheduled_event_id: t.scheduled_event_id,
                attempt: t.attempt,
                request_id: format!("p{}", rng.below(3)),
                identity: "w".into(),
                target_version_changed: false,
            },
            None => Request::Signal(Signal {
                name: "s".into(),
                ..Default::default()
            }),
        },
        2 | 3 => {
            let (scheduled_event_id, attempt) = task.map_or((rng.below(20) as i64, 1), |t| {
                (t.scheduled_event_id, t.attempt)
            });
            let commands = (0..rng.below(4))
                .map(|_| random_command(rng, state))
                .collect();
            Request::CompleteWorkflowTask(Box::new(CompleteWorkflowTask {
                scheduled_event_id,
                attempt,
                commands,
                return_new_workflow_task: rng.below(2) == 0,
                new_task_request_id: "n".into(),
                ..Default::default()
            }))
        }
        4 => match activity {
            Some(a) if a.started.is_none() => Request::RecordActivityTaskStarted {
                scheduled_event_id: a.scheduled_event_id,
                attempt: a.attempt,
                task_queue: a.task_queue.clone(),
                request_id: "r".into(),
                identity: "w".into(),
            },
            Some(a) => Request::Activity {
                target: ActivityTarget::Token {
                    scheduled_event_id: a.scheduled_event_id,
                    attempt: a.attempt,
                },
                report: match rng.below(4) {
                    0 => ActivityReport::Completed(None),
                    1 => ActivityReport::Failed {
                        failure: None,
                        last_heartbeat_details: None,
                    },
                    2 => ActivityReport::Heartbeat(None),
                    _ => ActivityReport::Canceled(None),
                },
                identity: "w".into(),
            },
            None => Request::Cancel {
                reason: "r".into(),
                identity: "c".into(),
                external: None,
            },
        },
        5 => Request::FailWorkflowTask {
            scheduled_event_id: task.as_ref().map_or(0, |t| t.scheduled_event_id),
            attempt: task.as_ref().map_or(1, |t| t.attempt),
            cause: 1,
            failure: None,
            identity: "w".into(),
        },
        6 | 7 => {
            let due = deadlines(state);
            match due.get(rng.below(due.len() as u64 + 1) as usize) {
                Some((_, deadline)) => Request::Deadline(deadline.clone()),
                None => Request::Signal(Signal {
                    name: "s".into(),
                    request_id: format!("{}", now % 3),
                    ..Default::default()
                }),
            }
        }
        8 => {
            let selector = match &activity {
                Some(a) if rng.below(3) > 0 => ActivitySelector::Id(a.activity_id.clone()),
                Some(a) if rng.below(2) == 0 => ActivitySelector::Type(a.activity_type.clone()),
                _ => ActivitySelector::All,
            };
            let action = match rng.below(5) {
                0 | 1 => ControlAction::Pause {
                    identity: "op".into(),
                    reason: "r".into(),
                    request_id: format!("{}", rng.below(2)),
                },
                2 => ControlAction::Unpause {
                    reset_attempts: rng.below(2) == 0,
                    reset_heartbeat: rng.below(2) == 0,
                    delay_ms: rng.below(3) as i64 * 500,
                },
                3 => ControlAction::Reset {
                    reset_heartbeat: rng.below(2) == 0,
                    keep_paused: rng.below(2) == 0,
                    restore_original: rng.below(2) == 0,
                    delay_ms: rng.below(3) as i64 * 500,
                },
                _ => ControlAction::UpdateOptions {
                    options: Box::new(proto::activity::ActivityOptions {
                        start_to_close_timeout: proto::duration(rng.below(4) as i64 * 1000),
                        ..Default::default()
                    }),
                    paths: vec!["start_to_close_timeout".into()],
                },
            };
            Request::ActivityControl(Box::new(ActivityControlRequest { selector, action }))
        }
        _ if rng.below(20) == 0 => Request::Terminate {
            reason: "r".into(),
            details: None,
            identity: "t".into(),
        },
        _ => Request::Signal(Signal {
            name: "s".into(),
            ..Default::default()
        }),
    }
}

/// Random request and command sequences: the engine never panics, event ids stay contiguous
/// from 1, nothing follows a close event, and a refused request changes nothing.
/// Reproduce one seed with `KEEL_ENGINE_SEED=N cargo test --workspace -- random_sequences`.
#[test]
fn random_sequences_keep_the_history_invariants() {
    let seeds: Vec<u64> = match std::env::var("KEEL_ENGINE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (1..=300).collect(),
    };
    let (mut total_events, mut total_closes) = (0usize, 0usize);
    let single = seeds.len() == 1;
    for seed in seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut state = start();
        let mut history: Vec<i64> = vec![1, 2];
        let mut closes = 0;
        let mut now = 2 * SEC;
        for step in 0..120 {
            now += (rng.below(2000) as i64) * 1_000_000;
            let request = random_request(&mut rng, &state, now);
            let context = format!("seed {seed}, step {step}, request {request:?} (reproduce: KEEL_ENGINE_SEED={seed} cargo test --workspace -- random_sequences)");
            if let Ok(outcome) = handle(&state, request, now, &Limits::default()) {
                for event in &outcome.events {
                    assert_eq!(
                        event.event_id,
                        history.len() as i64 + 1,
                        "non-contiguous event id; {context}"
                    );
                    assert_eq!(closes, 0, "an event after the close event; {context}");
                    history.push(event.event_id);
                    if matches!(
                        event.attributes,
                        Some(Attributes::WorkflowExecutionCompletedEventAttributes(_))
                            | Some(Attributes::WorkflowExecutionFailedEventAttributes(_))
                            | Some(Attributes::WorkflowExecutionCanceledEventAttributes(_))
                            | Some(Attributes::WorkflowExecutionTerminatedEventAttributes(_))
                            | Some(Attributes::WorkflowExecutionTimedOutEventAttributes(_))
                    ) {
                        closes += 1;
                    }
                }
                assert_eq!(
                    outcome.state.next_event_id,
                    history.len() as i64 + 1,
                    "next_event_id drifted; {context}"
                );
                assert_eq!(
                    outcome.state.is_running(),
                    closes == 0,
                    "status disagrees with the close event; {context}"
                );
                assert!(
                    outcome.state.activity_controls.iter().all(|(id, control)| {
                        outcome.state.activities.contains_key(id) && !control.is_empty()
                    }),
                    "an activity control outlived its activity or records nothing; {context}"
                );
                assert!(
                    outcome
                        .state
                        .activity_attempt_ends
                        .keys()
                        .all(|id| outcome.state.activities.contains_key(id)),
                    "an attempt end outlived its activity; {context}"
                );
                state = outcome.state;
            }
        }
        total_events += history.len();
        total_closes += closes;
    }
    // Guard against a generator that never reaches the interesting paths.
    assert!(
        single || (total_events > 3000 && total_closes > 50),
        "the random sequences barely progressed: {total_events} events, {total_closes} closes"
    );
}

#[test]
fn limits_take_temporals_dynamic_config_names() {
    let mut limits = Limits::default();
    limits
        .set("limit.historyCount.suggestContinueAsNew=50")
        .expect("known key");
    assert_eq!(limits.suggest_continue_as_new_events, 50);
    assert!(limits
        .set("limit.historyCount.suggestContinueAsNew=0")
        .is_err());
    assert!(limits.set("no.such.key=1").is_err());
    assert!(limits.set("missing-equals").is_err());
}

#[test]
fn the_namespace_retention_minimum_takes_a_duration() {
    let mut limits = Limits::default();
    assert_eq!(limits.min_namespace_retention_ms, 3_600_000);
    limits
        .set("system.namespaceMinRetentionLocal=\"1s\"")
        .expect("a JSON string, as Temporal's CLI passes it");
    assert_eq!(limits.min_namespace_retention_ms, 1000);
    limits
        .set("system.namespaceMinRetentionLocal=90m")
        .expect("bare");
    assert_eq!(limits.min_namespace_retention_ms, 90 * 60_000);
    assert!(limits
        .set("system.namespaceMinRetentionLocal=soon")
        .is_err());
}

#[test]
fn deleting_a_running_run_terminates_it_and_a_closed_one_waits_for_its_deliveries() {
    // Running: terminated as Temporal does, then deletable.
    let outcome = step(&start(), Request::Delete, 2 * SEC);
    assert_eq!(types(&outcome.events), ["WorkflowExecutionTerminated"]);
    let Some(Attributes::WorkflowExecutionTerminatedEventAttributes(terminated)) =
        outcome.events[0].attributes.as_ref()
    else {
        panic!("a terminated event");
    };
    assert_eq!(terminated.reason, "Delete workflow execution");
    assert_eq!(terminated.identity, "history-service");
    assert_eq!(outcome.state.status, RunStatus::Terminated);
    assert!(deletable(&outcome.state));
    assert_eq!(transfers(&outcome.state), [Transfer::DeleteRun]);

    // Closed with a child whose close policy is still to apply: marked, not yet deletable.
    let mut parent = start();
    parent.children.insert(
        5,
        state::ChildInfo {
            initiated_event_id: 5,
            workflow_task_completed_event_id: 4,
            namespace: String::new(),
            workflow_id: "child".into(),
            workflow_type: "Child".into(),
            command: Vec::new(),
            parent_close_policy: enums::ParentClosePolicy::Terminate as i32,
            started_run_id: Some("child-run".into()),
            started_event_id: 6,
            policy_applied: false,
        },
    );
    let closed = step(&parent, Request::Delete, 2 * SEC).state;
    assert!(closed.delete_requested);
    assert!(!deletable(&closed));
    assert_eq!(
        transfers(&closed),
        [Transfer::ApplyParentClosePolicy {
            initiated_event_id: 5
        }]
    );
    let mut applied = closed.clone();
    if let Some(child) = applied.children.get_mut(&5) {
        child.policy_applied = true;
    }
    assert!(deletable(&applied));

    // A closed run nobody asked to delete is not deletable; asking again changes nothing more.
    let mut done = outcome.state.clone();
    done.delete_requested = false;
    assert!(!deletable(&done));
    let again = step(&outcome.state, Request::Delete, 3 * SEC);
    assert!(again.events.is_empty());
    assert_eq!(again.state, outcome.state);
}

#[test]
// The version stamp is deprecated, but Temporal still records it and SDK tests read it.
#[allow(deprecated)]
fn a_versioned_completion_records_the_version_and_behavior_an_unversioned_one_its_build_id() {
    use temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentOptions;
    // Completes the first workflow task as a worker of build 1.0 of deployment "dep".
    let complete = |mode: enums::WorkerVersioningMode, behavior: enums::VersioningBehavior| {
        let (state, started) = take_workflow_task(&start(), 2 * SEC);
        let outcome = step(
            &state,
            Request::CompleteWorkflowTask(Box::new(CompleteWorkflowTask {
                scheduled_event_id: started.scheduled_event_id,
                attempt: started.attempt,
                identity: "worker".into(),
                deployment_options: Some(WorkerDeploymentOptions {
                    deployment_name: "dep".into(),
                    build_id: "1.0".into(),
                    worker_versioning_mode: mode as i32,
                }),
                versioning_behavior: behavior as i32,
                ..Default::default()
            })),
            3 * SEC,
        );
        let Some(Attributes::WorkflowTaskCompletedEventAttributes(completed)) =
            outcome.events[0].attributes.clone()
        else {
            panic!("a completed event, got {:?}", types(&outcome.events));
        };
        (outcome.state, completed)
    };
    let (state, completed) = complete(
        enums::WorkerVersioningMode::Versioned,
        enums::VersioningBehavior::Pinned,
    );
    assert_eq!(
        completed.versioning_behavior,
        enums::VersioningBehavior::Pinned as i32
    );
    assert_eq!(completed.worker_deployment_name, "dep");
    assert_eq!(
        completed
            .deployment_version
            .as_ref()
            .map(|v| v.build_id.as_str()),
        Some("1.0")
    );
    assert_eq!(
        completed
            .worker_version
            .as_ref()
            .map(|v| v.build_id.as_str()),
        Some("1.0")
    );
    let versioning = state.versioning.clone().expect("versioning recorded");
    assert_eq!(versioning.pinned(), Some(("dep", "1.0")));

    // An unversioned worker with a build id: the stamp and the deployment name, no version.
    let (state, completed) = complete(
        enums::WorkerVersioningMode::Unversioned,
        enums::VersioningBehavior::Unspecified,
    );
    assert_eq!(completed.versioning_behavior, 0);
    assert!(completed.deployment_version.is_none());
    assert_eq!(
        completed
            .worker_version
            .as_ref()
            .map(|v| v.build_id.as_str()),
        Some("1.0")
    );
    assert!(state.versioning.is_none());
}

fn update_request(update_id: &str) -> Request {
    Request::Update {
        request: Box::new(proto::update::Request {
            meta: Some(proto::update::Meta {
                update_id: update_id.into(),
                identity: "client".into(),
            }),
            input: Some(proto::update::Input {
                name: "add".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        first_execution_run_id: String::new(),
    }
}

fn worker_message(
    update_id: &str,
    body: impl prost::Message,
    type_name: &str,
) -> proto::protocol::Message {
    proto::protocol::Message {
        id: format!("{update_id}/{type_name}"),
        protocol_instance_id: update_id.into(),
        sequencing_id: None,
        body: Some(prost_wkt_types::Any {
            type_url: format!("type.googleapis.com/temporal.api.update.v1.{type_name}"),
            value: body.encode_to_vec(),
        }),
    }
}

/// The worker's acceptance of `update_id`, delivered by the task `started`.
fn acceptance(update_id: &str, started: &StartedWorkflowTask) -> proto::update::Acceptance {
    proto::update::Acceptance {
        accepted_request_message_id: format!("{update_id}/request"),
        accepted_request_sequencing_event_id: started.started_event_id - 1,
        accepted_request: None,
    }
}

/// The worker's successful answer to an update.
fn success_response() -> proto::update::Response {
    proto::update::Response {
        meta: None,
        outcome: Some(proto::update::Outcome {
            value: Some(proto::update::outcome::Value::Success(Default::default())),
        }),
    }
}

fn protocol_command(message_id: &str) -> command::Command {
    command::Command {
        command_type: enums::CommandType::ProtocolMessage as i32,
        attributes: Some(
            command::command::Attributes::ProtocolMessageCommandAttributes(
                command::ProtocolMessageCommandAttributes {
                    message_id: message_id.into(),
                },
            ),
        ),
        ..Default::default()
    }
}

fn complete_with_messages(
    state: &MutableState,
    started: &StartedWorkflowTask,
    commands: Vec<command::Command>,
    messages: Vec<proto::protocol::Message>,
    at: i64,
) -> Outcome {
    step(
        state,
        Request::CompleteWorkflowTask(Box::new(CompleteWorkflowTask {
            scheduled_event_id: started.scheduled_event_id,
            attempt: started.attempt,
            commands,
            messages,
            identity: "worker".into(),
            ..Default::default()
        })),
        at,
    )
}

/// A started run with its first workflow task completed and nothing pending.
fn idle_run() -> MutableState {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    complete(&state, &started, vec![], 3 * SEC).state
}

#[test]
fn a_rejected_update_rides_a_speculative_task_and_writes_nothing() {
    let state = idle_run();
    let admitted = step(&state, update_request("u1"), 4 * SEC);
    assert!(admitted.events.is_empty(), "admission writes no event");
    assert!(matches!(
        admitted.reply,
        Reply::Update(ref status) if status.stage == enums::UpdateWorkflowExecutionLifecycleStage::Admitted
    ));
    let (state, started) = take_workflow_task(&admitted.state, 5 * SEC);
    assert_eq!(
        types(&started.transient_events),
        ["WorkflowTaskScheduled", "WorkflowTaskStarted"]
    );
    assert_eq!(started.messages.len(), 1);
    assert_eq!(
        started.messages[0].sequencing_id,
        Some(proto::protocol::message::SequencingId::EventId(
            started.started_event_id - 1
        ))
    );
    let rejection = proto::update::Rejection {
        failure: Some(proto::failure::Failure {
            message: "no".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let outcome = complete_with_messages(
        &state,
        &started,
        vec![],
        vec![worker_message("u1", rejection, "Rejection")],
        6 * SEC,
    );
    assert!(outcome.events.is_empty(), "a rejection writes nothing");
    assert_eq!(
        outcome.reply,
        Reply::WorkflowTaskDiscarded {
            reset_history_event_id: state.last_completed_started_event_id
        }
    );
    assert_eq!(outcome.state.next_event_id, state.next_event_id);
    assert!(outcome.state.workflow_task.is_none());
    let status = update_status(&outcome.state, "u1").expect("the rejection is remembered");
    assert!(matches!(
        status.outcome.and_then(|o| o.value),
        Some(proto::update::outcome::Value::Failure(f)) if f.message == "no"
    ));
}

#[test]
fn an_accepted_update_writes_accepted_and_completed_events_and_is_deduplicated() {
    let state = idle_run();
    let state = step(&state, update_request("u1"), 4 * SEC).state;
    let (state, started) = take_workflow_task(&state, 5 * SEC);
    let acceptance = acceptance("u1", &started);
    let response = success_response();
    let outcome = complete_with_messages(
        &state,
        &started,
        vec![
            protocol_command("u1/Acceptance"),
            protocol_command("u1/Response"),
        ],
        vec![
            worker_message("u1", acceptance, "Acceptance"),
            worker_message("u1", response, "Response"),
        ],
        6 * SEC,
    );
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskScheduled",
            "WorkflowTaskStarted",
            "WorkflowTaskCompleted",
            "WorkflowExecutionUpdateAccepted",
            "WorkflowExecutionUpdateCompleted"
        ]
    );
    let accepted_id = outcome.events[3].event_id;
    match &outcome.events[4].attributes {
        Some(Attributes::WorkflowExecutionUpdateCompletedEventAttributes(a)) => {
            assert_eq!(a.accepted_event_id, accepted_id)
        }
        other => panic!("expected the completed update, got {other:?}"),
    }
    assert!(outcome.state.updates.is_empty());
    assert!(outcome.state.workflow_task.is_none(), "nothing left to do");
    let again = step(&outcome.state, update_request("u1"), 7 * SEC);
    assert!(again.events.is_empty());
    assert_eq!(
        again.state, outcome.state,
        "a known update id changes nothing"
    );
    assert!(matches!(
        again.reply,
        Reply::Update(ref status) if status.stage == enums::UpdateWorkflowExecutionLifecycleStage::Completed
    ));
}

#[test]
fn in_flight_updates_are_bounded_and_closed_runs_refuse_updates() {
    let mut state = idle_run();
    let limit = Limits::default().max_in_flight_updates;
    for i in 0..limit {
        state = step(&state, update_request(&format!("u{i}")), 4 * SEC).state;
    }
    assert!(matches!(
        handle(
            &state,
            update_request("one-more"),
            4 * SEC,
            &Limits::default()
        ),
        Err(EngineError::ResourceExhausted(_))
    ));
    let closed = step(
        &state,
        Request::Terminate {
            reason: "r".into(),
            details: None,
            identity: "i".into(),
        },
        5 * SEC,
    )
    .state;
    assert!(matches!(
        handle(&closed, update_request("late"), 6 * SEC, &Limits::default()),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn a_run_cannot_close_over_an_update_the_worker_has_not_seen() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let state = step(&state, update_request("u1"), 3 * SEC).state;
    let outcome = complete(&state, &started, vec![complete_workflow()], 4 * SEC);
    assert!(outcome.state.is_running());
    assert_eq!(
        types(&outcome.events),
        ["WorkflowTaskFailed", "WorkflowTaskScheduled"]
    );
    let (_, next) = take_workflow_task(&outcome.state, 5 * SEC);
    assert_eq!(next.messages.len(), 1, "the next task carries the update");
}

#[test]
fn answers_to_updates_after_a_close_command_write_nothing_and_leave_the_updates_unaccepted() {
    let state = idle_run();
    let state = step(&state, update_request("u1"), 4 * SEC).state;
    let state = step(&state, update_request("u2"), 4 * SEC).state;
    let (state, started) = take_workflow_task(&state, 5 * SEC);
    assert_eq!(started.messages.len(), 2);
    // u1 is answered before the continue-as-new, u2 after it (its messages named by no
    // command, or by commands after the close): the worker ran u2's handler after deciding
    // what the new run starts from.
    let outcome = complete_with_messages(
        &state,
        &started,
        vec![
            protocol_command("u1/Acceptance"),
            protocol_command("u1/Response"),
            continue_as_new(),
            protocol_command("u2/Acceptance"),
        ],
        vec![
            worker_message("u1", acceptance("u1", &started), "Acceptance"),
            worker_message("u1", success_response(), "Response"),
            worker_message("u2", acceptance("u2", &started), "Acceptance"),
            worker_message("u2", success_response(), "Response"),
        ],
        6 * SEC,
    );
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskScheduled",
            "WorkflowTaskStarted",
            "WorkflowTaskCompleted",
            "WorkflowExecutionUpdateAccepted",
            "WorkflowExecutionUpdateCompleted",
            "WorkflowExecutionContinuedAsNew"
        ],
        "nothing follows the close event"
    );
    assert_eq!(outcome.state.status, RunStatus::ContinuedAsNew);
    let stage = |id: &str| update_status(&outcome.state, id).map(|s| s.stage);
    assert_eq!(
        stage("u1"),
        Some(enums::UpdateWorkflowExecutionLifecycleStage::Completed)
    );
    assert_eq!(
        stage("u2"),
        Some(enums::UpdateWorkflowExecutionLifecycleStage::Admitted),
        "u2 was aborted by the close, for its caller to send to the new run"
    );
}

fn continue_as_new() -> command::Command {
    command::Command {
        command_type: enums::CommandType::ContinueAsNewWorkflowExecution as i32,
        attributes: Some(
            command::command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(
                command::ContinueAsNewWorkflowExecutionCommandAttributes {
                    input: Some(common::Payloads::default()),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

#[test]
fn continue_as_new_closes_the_run_into_a_successor_that_inherits_what_is_unset() {
    let args = StartArgs {
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        run_id: "run-1".into(),
        request_id: "req-1".into(),
        workflow_type: "Hello".into(),
        task_queue: "q".into(),
        memo: Some(common::Memo {
            fields: [("k".to_string(), common::Payload::default())].into(),
        }),
        execution_timeout: proto::duration(3_600_000),
        priority: Some(common::Priority {
            priority_key: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let state = new_run(args, SEC, &Limits::default()).expect("start").state;
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = complete(&state, &started, vec![continue_as_new()], 3 * SEC);
    assert_eq!(outcome.state.status, RunStatus::ContinuedAsNew);
    assert_eq!(
        outcome.successor.as_ref().map(|s| &s.state.priority),
        Some(&state.priority),
        "the priority carries over"
    );
    assert!(!state.priority.is_empty());
    assert_eq!(
        types(&outcome.events),
        ["WorkflowTaskCompleted", "WorkflowExecutionContinuedAsNew"]
    );
    let next = outcome.successor.expect("a successor run").state;
    match &outcome.events[1].attributes {
        Some(Attributes::WorkflowExecutionContinuedAsNewEventAttributes(a)) => {
            assert_eq!(a.new_execution_run_id, next.run_id);
            assert_eq!(a.task_queue.as_ref().map(|q| q.name.as_str()), Some("q"));
        }
        other => panic!("expected continued-as-new, got {other:?}"),
    }
    assert_ne!(next.run_id, "run-1");
    assert_eq!(next.first_execution_run_id, "run-1");
    assert_eq!(next.workflow_type, "Hello");
    assert_eq!(next.memo, state.memo, "memo carried");
    assert_eq!(
        next.execution_expiration_ns, state.execution_expiration_ns,
        "the execution timeout spans the chain"
    );
    assert!(
        next.workflow_task.is_some(),
        "the new run has its first task"
    );
}

fn start_child_command() -> command::Command {
    command::Command {
        command_type: enums::CommandType::StartChildWorkflowExecution as i32,
        attributes: Some(
            command::command::Attributes::StartChildWorkflowExecutionCommandAttributes(
                command::StartChildWorkflowExecutionCommandAttributes {
                    workflow_id: "child".into(),
                    workflow_type: Some(common::WorkflowType {
                        name: "Child".into(),
                    }),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn report(state: &MutableState, report: Report, at: i64) -> Result<Outcome, EngineError> {
    handle(state, Request::Report(report), at, &Limits::default())
}

#[test]
fn a_child_is_started_and_closed_through_reports_taken_once() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = complete(&state, &started, vec![start_child_command()], 3 * SEC);
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowTaskCompleted",
            "StartChildWorkflowExecutionInitiated"
        ]
    );
    let initiated = outcome.events[1].event_id;
    let state = outcome.state;
    assert_eq!(
        transfers(&state),
        [Transfer::StartChild {
            initiated_event_id: initiated
        }]
    );
    let started_report = Report::ChildStarted {
        initiated_event_id: initiated,
        run_id: "child-run".into(),
        namespace: ("default".into(), "ns".into()),
    };
    let outcome = report(&state, started_report.clone(), 4 * SEC).expect("taken");
    assert_eq!(
        types(&outcome.events),
        ["ChildWorkflowExecutionStarted", "WorkflowTaskScheduled"]
    );
    let state = outcome.state;
    assert!(transfers(&state).is_empty(), "nothing more to deliver");
    assert!(
        matches!(
            report(&state, started_report, 5 * SEC),
            Err(EngineError::NoChange)
        ),
        "a repeated report changes nothing"
    );
    let close = Report::ChildClosed {
        initiated_event_id: initiated,
        run_id: "child-run".into(),
        namespace: ("default".into(), "ns".into()),
        close: Box::new(Attributes::WorkflowExecutionCompletedEventAttributes(
            Default::default(),
        )),
    };
    let outcome = report(&state, close.clone(), 6 * SEC).expect("taken");
    assert_eq!(types(&outcome.events), ["ChildWorkflowExecutionCompleted"]);
    match &outcome.events[0].attributes {
        Some(Attributes::ChildWorkflowExecutionCompletedEventAttributes(a)) => {
            assert_eq!(a.initiated_event_id, initiated);
            assert_eq!(a.started_event_id, initiated + 1);
        }
        other => panic!("expected the child's completion, got {other:?}"),
    }
    assert!(matches!(
        report(&outcome.state, close, 7 * SEC),
        Err(EngineError::NoChange)
    ));
}

#[test]
fn a_closed_parent_owes_its_started_children_the_close_policy() {
    let state = start();
    let (state, started) = take_workflow_task(&state, 2 * SEC);
    let outcome = complete(&state, &started, vec![start_child_command()], 3 * SEC);
    let initiated = outcome.events[1].event_id;
    let state = report(
        &outcome.state,
        Report::ChildStarted {
            initiated_event_id: initiated,
            run_id: "child-run".into(),
            namespace: ("default".into(), "ns".into()),
        },
        4 * SEC,
    )
    .expect("taken")
    .state;
    let (state, started) = take_workflow_task(&state, 5 * SEC);
    let closed = complete(&state, &started, vec![complete_workflow()], 6 * SEC).state;
    assert_eq!(
        transfers(&closed),
        [Transfer::ApplyParentClosePolicy {
            initiated_event_id: initiated
        }],
        "TERMINATE is the default policy"
    );
    let applied = report(
        &closed,
        Report::ParentClosePolicyApplied {
            initiated_event_id: initiated,
        },
        7 * SEC,
    )
    .expect("taken");
    assert!(applied.events.is_empty());
    assert!(transfers(&applied.state).is_empty());
}

#[test]
fn dynamic_config_files_take_temporals_format() {
    let text = "limit.historyCount.suggestContinueAsNew:\n  - value: 50\nhistory.maxInFlightUpdates:\n  - value: 3\n    constraints:\n      namespace: other\n  - value: 20\n    constraints: {}\n";
    let assignments = dynamic_config_file(text).expect("a valid file");
    let mut limits = Limits::default();
    for assignment in &assignments {
        limits.set(assignment).expect("known keys");
    }
    assert_eq!(limits.suggest_continue_as_new_events, 50);
    assert_eq!(
        limits.max_in_flight_updates, 20,
        "the unconstrained value applies"
    );
    assert!(dynamic_config_file(
        "history.maxInFlightUpdates:\n  - value: 3\n    constraints:\n      namespace: x\n"
    )
    .is_err());
    assert!(dynamic_config_file("not: [a, list, of, values]").is_err());
}

fn start_timer(timer_id: &str, ms: i64) -> command::Command {
    command::Command {
        command_type: enums::CommandType::StartTimer as i32,
        attributes: Some(command::command::Attributes::StartTimerCommandAttributes(
            command::StartTimerCommandAttributes {
                timer_id: timer_id.into(),
                start_to_fire_timeout: proto::duration(ms),
            },
        )),
        ..Default::default()
    }
}

fn signal(name: &str, request_id: &str) -> Request {
    Request::Signal(Signal {
        name: name.into(),
        request_id: request_id.into(),
        ..Default::default()
    })
}

/// A run's whole history as the shard would read it, built by driving the engine.
struct Recorded {
    state: MutableState,
    events: Vec<proto::HistoryEvent>,
}

impl Recorded {
    fn new() -> Recorded {
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
        Recorded {
            state: outcome.state,
            events: outcome.events,
        }
    }

    fn apply(&mut self, outcome: Outcome) -> Reply {
        self.state = outcome.state;
        self.events.extend(outcome.events);
        outcome.reply
    }

    fn workflow_task(&mut self, commands: Vec<command::Command>, at: i64) {
        let (state, started) = take_workflow_task(&self.state, at);
        let started_outcome = step(
            &self.state,
            Request::RecordWorkflowTaskStarted {
                scheduled_event_id: started.scheduled_event_id,
                attempt: started.attempt,
                request_id: format!("poll-{at}"),
                identity: "worker".into(),
                target_version_changed: false,
            },
            at,
        );
        self.events.extend(started_outcome.events);
        let outcome = complete(&state, &started, commands, at);
        self.apply(outcome);
    }
}

fn reset_args(finish: i64) -> ResetArgs {
    ResetArgs {
        new_run_id: "run-2".into(),
        request_id: "reset-1".into(),
        reason: "bad deploy".into(),
        workflow_task_finish_event_id: finish,
        reapply_signals: true,
    }
}

#[test]
fn reset_keeps_pending_work_of_the_reset_point_and_reapplies_later_signals() {
    let mut run = Recorded::new();
    // Events 3-6: started, completed, activity scheduled, timer started (fires at 62 s).
    run.workflow_task(vec![schedule_activity(), start_timer("t", 60_000)], 2 * SEC);
    // 7-8: a signal and its workflow task; 9-10: that task.
    run.apply(step(&run.state, signal("early", "s-1"), 3 * SEC));
    run.workflow_task(vec![], 4 * SEC);
    // 11-12: a signal after the reset point.
    run.apply(step(&run.state, signal("late", "s-2"), 5 * SEC));
    assert_eq!(run.events.len(), 12, "{:?}", types(&run.events));

    let outcome = reset(
        &run.state,
        &run.events,
        reset_args(10),
        100 * SEC,
        &Limits::default(),
    )
    .expect("reset accepted");
    let new_types = types(&outcome.events);
    assert_eq!(new_types[..9], types(&run.events[..9])[..]);
    assert_eq!(
        new_types[9..],
        [
            "WorkflowTaskFailed",
            "WorkflowExecutionSignaled",
            "WorkflowTaskScheduled"
        ]
    );
    let ids: Vec<i64> = outcome.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    match &outcome.events[9].attributes {
        Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => {
            assert_eq!(
                a.cause,
                enums::WorkflowTaskFailedCause::ResetWorkflow as i32
            );
            assert_eq!(
                (a.base_run_id.as_str(), a.new_run_id.as_str()),
                ("run-1", "run-2")
            );
            assert_eq!((a.scheduled_event_id, a.started_event_id), (8, 9));
        }
        other => panic!("expected WorkflowTaskFailed, got {other:?}"),
    }
    let state = &outcome.state;
    assert_eq!(state.run_id, "run-2");
    assert_eq!(state.first_execution_run_id, "run-1");
    assert_eq!(state.reset_request_id, "reset-1");
    assert_eq!(state.signal_count, 2);
    assert_eq!(state.timers["t"].fire_at_ns, 62 * SEC);
    assert_eq!(state.activities.len(), 1, "the activity is pending again");
    let tasks = dispatchable(state, 100 * SEC);
    assert_eq!(
        tasks.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [TaskKind::Workflow, TaskKind::Activity]
    );
    assert_eq!(state.next_event_id, 13);

    // Without reapplication the late signal stays behind.
    let mut args = reset_args(10);
    args.reapply_signals = false;
    let outcome = reset(&run.state, &run.events, args, 100 * SEC, &Limits::default())
        .expect("reset accepted");
    assert_eq!(
        types(&outcome.events)[9..],
        ["WorkflowTaskFailed", "WorkflowTaskScheduled"]
    );
}

#[test]
fn reset_to_a_scheduled_task_starts_it_and_refuses_points_outside_a_task() {
    let mut run = Recorded::new();
    // A signal while the first task is only scheduled (event 3): reset to it. As in
    // Temporal, the task gets a started event of the history service's, and the signal,
    // being after the reset point, is reapplied.
    run.apply(step(&run.state, signal("early", "s-1"), SEC));
    run.workflow_task(vec![complete_workflow()], 2 * SEC);
    let outcome = reset(
        &run.state,
        &run.events,
        reset_args(3),
        9 * SEC,
        &Limits::default(),
    )
    .expect("reset accepted");
    assert_eq!(
        types(&outcome.events),
        [
            "WorkflowExecutionStarted",
            "WorkflowTaskScheduled",
            "WorkflowTaskStarted",
            "WorkflowTaskFailed",
            "WorkflowExecutionSignaled",
            "WorkflowTaskScheduled"
        ]
    );
    assert!(outcome.state.is_running());
    assert_eq!(outcome.state.signal_count, 1);

    let mut run = Recorded::new();
    run.workflow_task(vec![start_timer("t", 60_000)], 2 * SEC);
    run.apply(step(&run.state, signal("s", "s-1"), 3 * SEC));
    for finish in [1, 6, 99] {
        let refused = reset(
            &run.state,
            &run.events,
            reset_args(finish),
            9 * SEC,
            &Limits::default(),
        );
        assert!(
            matches!(refused, Err(EngineError::InvalidArgument(_))),
            "reset to {finish}: {refused:?}"
        );
    }
    let partial = reset(
        &run.state,
        &run.events[..3],
        reset_args(4),
        9 * SEC,
        &Limits::default(),
    );
    assert!(matches!(partial, Err(EngineError::FailedPrecondition(_))));
}

#[test]
fn cron_runs_wait_for_the_schedule_and_each_close_starts_the_next() {
    // 00:00:30 on 1970-01-01; every minute: the first run is due at 00:01:00.
    let args = StartArgs {
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        run_id: "run-1".into(),
        workflow_type: "Hello".into(),
        task_queue: "q".into(),
        cron_schedule: "* * * * *".into(),
        ..Default::default()
    };
    let outcome = new_run(args.clone(), 30 * SEC, &Limits::default()).expect("start");
    assert_eq!(types(&outcome.events), ["WorkflowExecutionStarted"]);
    assert_eq!(outcome.state.first_task_backoff_until_ns, Some(60 * SEC));
    let state = step(
        &outcome.state,
        Request::Deadline(Deadline::StartBackoff),
        60 * SEC,
    )
    .state;
    let (state, started) = take_workflow_task(&state, 61 * SEC);
    let closed = complete(&state, &started, vec![complete_workflow()], 62 * SEC);
    let next = closed.successor.expect("a cron run follows");
    assert_eq!(closed.state.successor_run_id, next.state.run_id);
    match &next.events[0].attributes {
        Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
            assert_eq!(
                a.initiator,
                enums::ContinueAsNewInitiator::CronSchedule as i32
            );
            assert_eq!(a.cron_schedule, "* * * * *");
            assert_eq!(a.first_workflow_task_backoff, proto::duration(58_000));
            assert_eq!(a.continued_execution_run_id, "run-1");
        }
        other => panic!("expected WorkflowExecutionStarted, got {other:?}"),
    }
    assert_eq!(next.state.first_task_backoff_until_ns, Some(120 * SEC));

    let mut bad = args;
    bad.cron_schedule = "every minute".into();
    assert!(matches!(
        new_run(bad, SEC, &Limits::default()),
        Err(EngineError::InvalidArgument(_))
    ));
}

mod workflow_options_update {
    use super::*;
    use crate::engine::workflow_options::{OptionsMask, OptionsUpdate, WorkflowOptions};
    use proto::workflow::versioning_override::{Override, PinnedOverride, PinnedOverrideBehavior};
    use proto::workflow::VersioningOverride;
    use temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentVersion;

    fn paths(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn pinned(build_id: Option<&str>) -> VersioningOverride {
        VersioningOverride {
            r#override: Some(Override::Pinned(PinnedOverride {
                behavior: PinnedOverrideBehavior::Pinned as i32,
                version: build_id.map(|b| WorkerDeploymentVersion {
                    deployment_name: "dep".into(),
                    build_id: b.into(),
                }),
            })),
            ..Default::default()
        }
    }

    fn update(
        state: &MutableState,
        versioning_override: Option<VersioningOverride>,
        priority: Option<common::Priority>,
        mask: &[&str],
    ) -> Result<Outcome, EngineError> {
        let request = Request::UpdateOptions(Box::new(OptionsUpdate {
            versioning_override,
            priority,
            mask: OptionsMask::parse(&paths(mask))?,
            identity: "operator".into(),
            pinned_version_queues: vec!["q".into()],
        }));
        handle(state, request, 5 * SEC, &Limits::default())
    }

    fn options(outcome: &Outcome) -> WorkflowOptions {
        match &outcome.reply {
            Reply::WorkflowOptions(options) => (**options).clone(),
            other => panic!("expected options, got {other:?}"),
        }
    }

    #[test]
    fn masks_name_whole_fields_as_temporal_requires() {
        let parse = |p: &[&str]| OptionsMask::parse(&paths(p));
        let whole = parse(&["versioning_override"]).expect("valid");
        assert!(whole.versioning_override && !whole.priority);
        assert_eq!(parse(&["versioningOverride"]), Ok(whole.clone()));
        assert_eq!(
            parse(&[
                "versioning_override.deployment",
                "versioning_override.behavior"
            ]),
            Ok(whole)
        );
        let fields = parse(&["priority.priority_key", "priority.fairnessWeight"]).expect("valid");
        assert!(fields.priority_key && fields.fairness_weight && !fields.fairness_key);
        let message = |p: &[&str]| parse(p).map_err(|e| e.to_string()).err();
        assert_eq!(
            message(&["versioning_override.deployment"]).as_deref(),
            Some("versioning_override fields must be updated together")
        );
        assert_eq!(
            message(&["versioning_override.pinned"]).as_deref(),
            Some("versioning_override doesn't support partial updates")
        );
        assert!(message(&["memo"]).is_some_and(|m| m.contains("invalid path \"memo\"")));
        assert!(matches!(
            parse(&["time_skipping_config"]),
            Err(EngineError::Unsupported(_))
        ));
    }

    #[test]
    fn an_override_is_set_and_unset_with_an_event_each_and_no_workflow_task() {
        let (state, started) = take_workflow_task(&start(), 2 * SEC);
        let state = complete(&state, &started, vec![], 3 * SEC).state;
        assert!(state.workflow_task.is_none());
        let set = update(
            &state,
            Some(pinned(Some("2.0"))),
            None,
            &["versioning_override"],
        )
        .expect("accepted");
        assert_eq!(types(&set.events), ["WorkflowExecutionOptionsUpdated"]);
        assert!(set.state.workflow_task.is_none(), "no workflow task for it");
        assert_eq!(
            set.state.versioning.as_ref().and_then(|v| v.pinned()),
            Some(("dep", "2.0"))
        );
        assert_eq!(options(&set).versioning_override, Some(pinned(Some("2.0"))));
        let Some(Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(attributes)) =
            set.events[0].attributes.clone()
        else {
            panic!("an options-updated event");
        };
        assert_eq!(attributes.identity, "operator");
        assert!(!attributes.unset_versioning_override);

        // The same again changes nothing and writes nothing.
        let same = update(
            &set.state,
            Some(pinned(Some("2.0"))),
            None,
            &["versioning_override"],
        )
        .expect("accepted");
        assert!(same.events.is_empty());
        assert_eq!(same.state, set.state);

        let unset = update(&set.state, None, None, &["versioning_override"]).expect("accepted");
        let Some(Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(attributes)) =
            unset.events[0].attributes.clone()
        else {
            panic!("an options-updated event");
        };
        assert!(attributes.unset_versioning_override);
        assert!(unset.state.versioning.is_none());
        assert_eq!(options(&unset), WorkflowOptions::default());
    }

    #[test]
    fn a_priority_field_changes_alone_and_the_event_waits_for_a_running_task() {
        let (state, _) = take_workflow_task(&start(), 2 * SEC);
        let priority = common::Priority {
            priority_key: 2,
            fairness_key: "tenant".into(),
            ..Default::default()
        };
        let outcome =
            update(&state, None, Some(priority), &["priority.fairness_key"]).expect("accepted");
        assert!(outcome.events.is_empty(), "buffered while the task runs");
        assert_eq!(outcome.state.buffered_events.len(), 1);
        let merged = options(&outcome).priority.expect("a priority");
        assert_eq!(
            (merged.priority_key, merged.fairness_key.as_str()),
            (0, "tenant")
        );
        assert_eq!(
            proto::decode_opt::<common::Priority>(&outcome.state.priority),
            Some(merged)
        );
    }

    #[test]
    fn a_pinned_override_without_a_version_pins_where_the_run_is_or_fails() {
        let state = start();
        let error = update(&state, Some(pinned(None)), None, &["versioning_override"])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "must specify a specific pinned override version because workflow with id wf \
                 has behavior VERSIONING_BEHAVIOR_UNSPECIFIED and is not yet pinned to any version"
            )
        );
        let mut pinned_by_worker = state.clone();
        pinned_by_worker.versioning = Some(Box::new(state::RunVersioning {
            behavior: enums::VersioningBehavior::Pinned as i32,
            deployment_name: "dep".into(),
            build_id: "1.0".into(),
            ..Default::default()
        }));
        let outcome = update(
            &pinned_by_worker,
            Some(pinned(None)),
            None,
            &["versioning_override"],
        )
        .expect("accepted");
        assert_eq!(
            options(&outcome).versioning_override,
            Some(pinned(Some("1.0")))
        );
    }

    #[test]
    fn closed_runs_unknown_versions_and_malformed_overrides_are_refused() -> Result<(), EngineError>
    {
        let (state, started) = take_workflow_task(&start(), 2 * SEC);
        let closed = complete(&state, &started, vec![complete_workflow()], 3 * SEC).state;
        assert!(matches!(
            update(&closed, None, None, &["versioning_override"]),
            Err(EngineError::NotFound(_))
        ));
        let elsewhere = Request::UpdateOptions(Box::new(OptionsUpdate {
            versioning_override: Some(pinned(Some("2.0"))),
            priority: None,
            mask: OptionsMask::parse(&paths(&["versioning_override"]))?,
            identity: "operator".into(),
            pinned_version_queues: vec!["other".into()],
        }));
        assert_eq!(
            handle(&start(), elsewhere, 5 * SEC, &Limits::default())
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("Pinned version 'dep:2.0' is not present in task queue 'q' of type 'Workflow'")
        );
        let auto_upgrade_false = VersioningOverride {
            r#override: Some(Override::AutoUpgrade(false)),
            ..Default::default()
        };
        assert!(matches!(
            update(
                &start(),
                Some(auto_upgrade_false),
                None,
                &["versioning_override"]
            ),
            Err(EngineError::InvalidArgument(_))
        ));
        Ok(())
    }
}

#[test]
fn a_child_inherits_a_pinned_parents_version_only_where_that_version_runs() {
    let mut parent = start();
    let polls = |_: &str, _: &str, queue: &str| queue == "q2";
    assert_eq!(
        inherited_versioning(&parent, "ns", "q", polls),
        (None, None)
    );
    parent.versioning = Some(Box::new(state::RunVersioning {
        behavior: enums::VersioningBehavior::Pinned as i32,
        deployment_name: "dep".into(),
        build_id: "1.0".into(),
        ..Default::default()
    }));
    let (inherited, _) = inherited_versioning(&parent, "ns", "q", polls);
    assert_eq!(
        inherited.as_ref().and_then(|v| v.pinned()),
        Some(("dep", "1.0")),
        "same queue"
    );
    assert!(
        inherited_versioning(&parent, "ns", "q2", polls).0.is_some(),
        "a queue the version polls"
    );
    assert_eq!(
        inherited_versioning(&parent, "ns", "q3", polls),
        (None, None)
    );
    assert_eq!(
        inherited_versioning(&parent, "other-ns", "q", polls),
        (None, None)
    );
    // An auto-upgrade parent passes nothing on.
    parent.versioning = Some(Box::new(state::RunVersioning {
        behavior: enums::VersioningBehavior::AutoUpgrade as i32,
        deployment_name: "dep".into(),
        build_id: "1.0".into(),
        ..Default::default()
    }));
    assert_eq!(
        inherited_versioning(&parent, "ns", "q", polls),
        (None, None)
    );
}
