//! The worker of the register workflows, speaking the worker protocol directly. A register
//! workflow holds an integer changed only by `register` updates (accepted and answered in the
//! task that delivers them); it runs a chain of short timers with an activity after each, and
//! completes when signalled `finish`. Its state is read off the full history each task (no
//! sticky cache), so any poller on any node can answer any task. The worker records, in the
//! history, when it first commanded each timer and when it saw it fire, and every activity
//! execution.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use keel_bench::{
    connection::{describe, long_poll},
    decide::{
        answer_update, complete_workflow, protocol_message_command, schedule_activity, start_timer,
        task_queue, update_request,
    },
};
use keel_proto::temporal::api::{
    command::v1::Command,
    history::v1::{history_event::Attributes, HistoryEvent},
    protocol::v1::Message,
    workflowservice::v1::{
        PollActivityTaskQueueRequest, PollWorkflowTaskQueueRequest,
        RespondActivityTaskCompletedRequest, RespondWorkflowTaskCompletedRequest,
    },
};
use serde_json::json;

use crate::{
    client::{from_json_payloads, json_payloads, NodeClient, FINISH_SIGNAL, NAMESPACE, TASK_QUEUE},
    history::{op_name, HistoryWriter, RecordType, RegisterOp, REGISTER_INITIAL, WORKER_PROCESS},
};

/// Timers each workflow runs, one after another.
pub const TIMERS_PER_WORKFLOW: u32 = 5;
/// Activity type of the activity scheduled after each timer.
pub const ACTIVITY_TYPE: &str = "keel-jepsen-activity";
const IDENTITY: &str = "keel-jepsen-worker";
const POLL_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// How long timer number `index` of `workflow_id` sleeps: 1 to 4 s, fixed by the pair.
pub fn timer_duration_ms(workflow_id: &str, index: u32) -> u64 {
    let hash = crate::history::digest(format!("{workflow_id}/{index}").as_bytes());
    let spread = u64::from_str_radix(&hash[..8], 16).unwrap_or(0) % 3000;
    1000 + spread
}

/// What one workflow task answers, and the timers it commands and has seen fire.
#[derive(Debug, Default)]
pub struct Decision {
    pub commands: Vec<Command>,
    pub messages: Vec<Message>,
    /// (timer id, duration ms) of each StartTimer command.
    pub timers_commanded: Vec<(String, u64)>,
    /// Timer ids the history shows fired.
    pub timers_fired: Vec<String>,
}

/// The register workflow's next step, from its full history and the task's messages.
pub fn decide(workflow_id: &str, events: &[HistoryEvent], messages: &[Message]) -> Decision {
    let mut decision = Decision::default();
    let mut register = REGISTER_INITIAL;
    let mut timers_started = 0u32;
    let mut activities_scheduled = 0u32;
    let mut finishing = false;
    let mut seq_signals = 0u64;
    for event in events {
        match &event.attributes {
            Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(accepted)) => {
                let op = accepted
                    .accepted_request
                    .as_ref()
                    .and_then(|r| r.input.as_ref())
                    .and_then(|i| from_json_payloads::<RegisterOp>(i.args.as_ref()));
                if let Some(op) = op {
                    op.apply(&mut register);
                }
            }
            Some(Attributes::TimerStartedEventAttributes(_)) => timers_started += 1,
            Some(Attributes::TimerFiredEventAttributes(fired)) => {
                decision.timers_fired.push(fired.timer_id.clone());
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(_)) => activities_scheduled += 1,
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(signal)) => {
                if signal.signal_name == FINISH_SIGNAL {
                    finishing = true;
                } else {
                    seq_signals += 1;
                }
            }
            _ => {}
        }
    }
    for message in messages {
        let op = update_request(message)
            .and_then(|r| r.input)
            .and_then(|i| from_json_payloads::<RegisterOp>(i.args.as_ref()));
        // An update that is not a register op is still accepted and answered (with nothing), so
        // it cannot wedge the run; the harness never sends one.
        let result = op.map(|op| op.apply(&mut register));
        let result_payloads = result.map(|r| json_payloads(&r)).unwrap_or_default();
        if let Some((acceptance, response)) = answer_update(message, result_payloads) {
            for answer in [acceptance, response] {
                decision.commands.push(protocol_message_command(&answer.id));
                decision.messages.push(answer);
            }
        }
    }
    if finishing {
        decision.commands.push(complete_workflow(Some(json_payloads(
            &json!({"register": register, "seq_signals": seq_signals}),
        ))));
        return decision;
    }
    let timers_fired = decision.timers_fired.len() as u32;
    if timers_started == timers_fired && timers_started < TIMERS_PER_WORKFLOW {
        let index = timers_started + 1;
        let timer_id = format!("t{index}");
        let duration_ms = timer_duration_ms(workflow_id, index);
        decision
            .commands
            .push(start_timer(&timer_id, duration_ms as f64 / 1e3));
        decision.timers_commanded.push((timer_id, duration_ms));
    }
    if activities_scheduled < timers_fired {
        let activity_id = format!("a{}", activities_scheduled + 1);
        decision
            .commands
            .push(schedule_activity(&activity_id, ACTIVITY_TYPE, TASK_QUEUE));
    }
    decision
}

/// The worker: pollers on every node, and what it has recorded so far.
pub struct Worker {
    nodes: Vec<NodeClient>,
    history: Arc<HistoryWriter>,
    /// (run id, timer id) → duration, for timers whose command is recorded.
    timers_commanded: Mutex<HashMap<(String, String), u64>>,
    timers_seen_fired: Mutex<HashSet<(String, String)>>,
}

impl Worker {
    pub fn new(nodes: Vec<NodeClient>, history: Arc<HistoryWriter>) -> Arc<Worker> {
        Arc::new(Worker {
            nodes,
            history,
            timers_commanded: Mutex::new(HashMap::new()),
            timers_seen_fired: Mutex::new(HashSet::new()),
        })
    }

    /// Starts `per_node` workflow pollers and one activity poller on every node.
    pub fn spawn(self: &Arc<Self>, per_node: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for node in 0..self.nodes.len() {
            for _ in 0..per_node {
                tasks.push(tokio::spawn(self.clone().poll_workflow_tasks(node)));
            }
            tasks.push(tokio::spawn(self.clone().poll_activity_tasks(node)));
        }
        tasks
    }

    async fn poll_workflow_tasks(self: Arc<Self>, node: usize) {
        let client = self.nodes[node].clone();
        loop {
            let task = next_task(|| {
                let request = PollWorkflowTaskQueueRequest {
                    namespace: NAMESPACE.to_string(),
                    task_queue: Some(task_queue(TASK_QUEUE)),
                    identity: IDENTITY.to_string(),
                    ..Default::default()
                };
                let mut client = client.raw();
                async move { client.poll_workflow_task_queue(long_poll(request)).await }
            })
            .await;
            if task.task_token.is_empty() {
                continue;
            }
            let execution = task.workflow_execution.clone().unwrap_or_default();
            let mut events = task.history.map(|h| h.events).unwrap_or_default();
            if !task.next_page_token.is_empty() || events.first().map(|e| e.event_id) != Some(1) {
                match client
                    .history(&execution.workflow_id, &execution.run_id)
                    .await
                {
                    Ok(full) => events = full,
                    Err(_) => continue, // The task times out and comes back.
                }
            }
            let decision = decide(&execution.workflow_id, &events, &task.messages);
            self.note_timers(&execution.workflow_id, &execution.run_id, &decision);
            let response = RespondWorkflowTaskCompletedRequest {
                task_token: task.task_token,
                commands: decision.commands,
                messages: decision.messages,
                identity: IDENTITY.to_string(),
                namespace: NAMESPACE.to_string(),
                ..Default::default()
            };
            // A failed answer is retried by the server: the task times out and comes back.
            let _ = client.raw().respond_workflow_task_completed(response).await;
        }
    }

    /// Records timers commanded for the first time (before the command is sent, so the server
    /// cannot have started them earlier) and timers seen fired for the first time.
    fn note_timers(&self, workflow_id: &str, run_id: &str, decision: &Decision) {
        let mut commanded = lock(&self.timers_commanded);
        for (timer_id, duration_ms) in &decision.timers_commanded {
            let key = (run_id.to_string(), timer_id.clone());
            if commanded.contains_key(&key) {
                continue;
            }
            commanded.insert(key, *duration_ms);
            self.history.record(
                WORKER_PROCESS,
                RecordType::Invoke,
                op_name::TIMER,
                Some(workflow_id),
                json!({"run_id": run_id, "timer_id": timer_id, "duration_ms": duration_ms}),
                None,
            );
        }
        let mut seen = lock(&self.timers_seen_fired);
        for timer_id in &decision.timers_fired {
            let key = (run_id.to_string(), timer_id.clone());
            let Some(duration_ms) = commanded.get(&key).copied() else {
                continue; // Commanded before this worker started: nothing to compare with.
            };
            if seen.insert(key) {
                self.history.record(
                    WORKER_PROCESS,
                    RecordType::Ok,
                    op_name::TIMER,
                    Some(workflow_id),
                    json!({"run_id": run_id, "timer_id": timer_id, "duration_ms": duration_ms}),
                    None,
                );
            }
        }
    }

    async fn poll_activity_tasks(self: Arc<Self>, node: usize) {
        let client = self.nodes[node].clone();
        loop {
            let task = next_task(|| {
                let request = PollActivityTaskQueueRequest {
                    namespace: NAMESPACE.to_string(),
                    task_queue: Some(task_queue(TASK_QUEUE)),
                    identity: IDENTITY.to_string(),
                    ..Default::default()
                };
                let mut client = client.raw();
                async move { client.poll_activity_task_queue(long_poll(request)).await }
            })
            .await;
            if task.task_token.is_empty() {
                continue;
            }
            let execution = task.workflow_execution.clone().unwrap_or_default();
            let value = json!({
                "run_id": execution.run_id,
                "activity_id": task.activity_id,
                "attempt": task.attempt,
            });
            let workflow_id = Some(execution.workflow_id.as_str());
            self.history.record(
                WORKER_PROCESS,
                RecordType::Invoke,
                op_name::ACTIVITY,
                workflow_id,
                value.clone(),
                None,
            );
            let response = RespondActivityTaskCompletedRequest {
                task_token: task.task_token,
                result: Some(json_payloads(&task.activity_id)),
                identity: IDENTITY.to_string(),
                namespace: NAMESPACE.to_string(),
                ..Default::default()
            };
            let (kind, error) = match client.raw().respond_activity_task_completed(response).await {
                Ok(_) => (RecordType::Ok, None),
                Err(status) => (
                    crate::client::status_outcome(status.code()),
                    Some(describe(&status)),
                ),
            };
            self.history.record(
                WORKER_PROCESS,
                kind,
                op_name::ACTIVITY,
                workflow_id,
                value,
                error,
            );
        }
    }
}

/// Long-polls with `poll` until it answers (an empty answer, whose task token is empty, means
/// the poll expired), pausing after each error so a down node is not hammered.
async fn next_task<T, Fut>(mut poll: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match poll().await {
            Ok(response) => return response.into_inner(),
            Err(_) => tokio::time::sleep(POLL_ERROR_PAUSE).await,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use keel_proto::temporal::api::{
        enums::v1::CommandType,
        history::v1::{
            TimerFiredEventAttributes, TimerStartedEventAttributes,
            WorkflowExecutionSignaledEventAttributes,
        },
    };

    use super::*;
    use crate::history::RegisterResult;

    fn event(event_id: i64, attributes: Attributes) -> HistoryEvent {
        HistoryEvent {
            event_id,
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    fn types(decision: &Decision) -> Vec<CommandType> {
        decision
            .commands
            .iter()
            .map(|c| CommandType::try_from(c.command_type).unwrap())
            .collect()
    }

    #[test]
    fn timers_run_one_after_another_with_an_activity_after_each_then_finish_completes() {
        let first = decide("w", &[], &[]);
        assert_eq!(types(&first), vec![CommandType::StartTimer]);
        assert_eq!(first.timers_commanded[0].0, "t1");
        let (_, duration) = first.timers_commanded[0];
        assert!((1000..4000).contains(&duration));
        assert_eq!(duration, timer_duration_ms("w", 1));

        let mut events = vec![
            event(
                5,
                Attributes::TimerStartedEventAttributes(TimerStartedEventAttributes {
                    timer_id: "t1".into(),
                    ..Default::default()
                }),
            ),
            event(
                7,
                Attributes::TimerFiredEventAttributes(TimerFiredEventAttributes {
                    timer_id: "t1".into(),
                    started_event_id: 5,
                }),
            ),
        ];
        let second = decide("w", &events, &[]);
        assert_eq!(
            types(&second),
            vec![CommandType::StartTimer, CommandType::ScheduleActivityTask]
        );
        assert_eq!(second.timers_fired, vec!["t1".to_string()]);

        events.push(event(
            9,
            Attributes::WorkflowExecutionSignaledEventAttributes(
                WorkflowExecutionSignaledEventAttributes {
                    signal_name: FINISH_SIGNAL.into(),
                    ..Default::default()
                },
            ),
        ));
        let last = decide("w", &events, &[]);
        assert_eq!(types(&last), vec![CommandType::CompleteWorkflowExecution]);
    }

    fn update_message(update_id: &str, op: RegisterOp) -> Message {
        use keel_proto::temporal::api::update::v1 as update;
        use prost::Message as _;
        let request = update::Request {
            meta: Some(update::Meta {
                update_id: update_id.into(),
                identity: "test".into(),
            }),
            input: Some(update::Input {
                name: crate::client::REGISTER_UPDATE.into(),
                args: Some(json_payloads(&op)),
                ..Default::default()
            }),
            ..Default::default()
        };
        Message {
            id: format!("{update_id}/request"),
            protocol_instance_id: update_id.into(),
            sequencing_id: None,
            body: Some(prost_wkt_types::Any {
                type_url: "type.googleapis.com/temporal.api.update.v1.Request".into(),
                value: request.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn updates_apply_in_order_on_top_of_the_accepted_ones() {
        use keel_proto::temporal::api::{
            history::v1::WorkflowExecutionUpdateAcceptedEventAttributes, update::v1 as update,
        };
        let accepted = |op: RegisterOp| {
            Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(
                WorkflowExecutionUpdateAcceptedEventAttributes {
                    accepted_request: Some(update::Request {
                        input: Some(update::Input {
                            args: Some(json_payloads(&op)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
        };
        // History: write 3, then a cas(3, 4) that swapped: the register holds 4.
        let events = vec![
            event(5, accepted(RegisterOp::Write(3))),
            event(9, accepted(RegisterOp::Cas(3, 4))),
        ];
        let messages = vec![
            update_message("u1", RegisterOp::Read),
            update_message("u2", RegisterOp::Cas(4, 1)),
            update_message("u3", RegisterOp::Read),
        ];
        let decision = decide("w", &events, &messages);
        let results: Vec<RegisterResult> = decision
            .messages
            .iter()
            .filter(|m| m.id.ends_with("/complete"))
            .map(|m| {
                use prost::Message as _;
                let body = m.body.as_ref().unwrap();
                let response = update::Response::decode(body.value.as_slice()).unwrap();
                match response.outcome.unwrap().value.unwrap() {
                    update::outcome::Value::Success(payloads) => {
                        from_json_payloads(Some(&payloads)).unwrap()
                    }
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            results,
            vec![
                RegisterResult::Value(4),
                RegisterResult::Swapped(true),
                RegisterResult::Value(1)
            ]
        );
        // Each answer is an acceptance and a response, each placed by a protocol command.
        assert_eq!(decision.messages.len(), 6);
    }
}
