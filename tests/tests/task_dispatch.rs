//! A task scheduled while a poll waits for it is recorded as started in the commit that
//! scheduled it, and the poll gets it: a one-activity workflow driven over raw gRPC, each task
//! polled before it exists, shows each Started event with its Scheduled event's time (one
//! commit) and the poller's identity, and the history Temporal writes for it. An activity
//! asked for eagerly goes to the worker completing the workflow task instead, in its answer.
//! Reproduce with `cargo build --workspace && cargo test -p keel-tests --test task_dispatch`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use keel_bench::decide::{complete_workflow, schedule_activity, task_queue};
use keel_proto::temporal::api::command::v1::command::Attributes;
use keel_proto::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use keel_proto::temporal::api::enums::v1::EventType;
use keel_proto::temporal::api::history::v1::HistoryEvent;
use keel_proto::temporal::api::workflowservice::v1::{
    GetWorkflowExecutionHistoryRequest, PollActivityTaskQueueRequest,
    PollActivityTaskQueueResponse, PollWorkflowTaskQueueRequest, PollWorkflowTaskQueueResponse,
    RespondActivityTaskCompletedRequest, RespondWorkflowTaskCompletedRequest,
    StartWorkflowExecutionRequest,
};
use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
use keel_tests::dev::DevServer;
use keel_tests::metrics::{scrape, value};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

type Client = WorkflowServiceClient<Channel>;

const QUEUE: &str = "dispatch-queue";

/// Waits until `count` polls of `task_type` wait in matching.
async fn polls_waiting(dev: &DevServer, task_type: &str, count: f64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, samples) = scrape(dev.metrics_port).await?;
        let labels = [("task_type", task_type)];
        if value(&samples, "keel_matching_polls_waiting", &labels) == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{count} {task_type} polls never waited\n{}", dev.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn poll_workflow_task(
    client: &Client,
) -> JoinHandle<anyhow::Result<PollWorkflowTaskQueueResponse>> {
    let mut client = client.clone();
    tokio::spawn(async move {
        let request = PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(task_queue(QUEUE)),
            identity: "workflow-poller".into(),
            ..Default::default()
        };
        Ok(client.poll_workflow_task_queue(request).await?.into_inner())
    })
}

fn poll_activity_task(
    client: &Client,
) -> JoinHandle<anyhow::Result<PollActivityTaskQueueResponse>> {
    let mut client = client.clone();
    tokio::spawn(async move {
        let request = PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(task_queue(QUEUE)),
            identity: "activity-poller".into(),
            ..Default::default()
        };
        Ok(client.poll_activity_task_queue(request).await?.into_inner())
    })
}

fn event_type(event: &HistoryEvent) -> EventType {
    EventType::try_from(event.event_type).unwrap_or(EventType::Unspecified)
}

/// Asserts that event `started` has event `scheduled`'s time and carries `identity`.
fn started_with(events: &[HistoryEvent], scheduled: i64, started: i64, identity: &str) {
    let event = |id: i64| {
        events
            .iter()
            .find(|e| e.event_id == id)
            .unwrap_or_else(|| panic!("no event {id} in {events:#?}"))
    };
    assert_eq!(
        event(scheduled).event_time,
        event(started).event_time,
        "event {started} ({:?}) was not recorded in the commit of event {scheduled} ({:?})",
        event_type(event(started)),
        event_type(event(scheduled)),
    );
    let text = format!("{:?}", event(started).attributes);
    assert!(
        text.contains(identity),
        "event {started} lacks identity {identity}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_scheduled_while_a_poll_waits_start_in_the_same_commit() -> anyhow::Result<()> {
    let (dev, mut client) = DevServer::start(&[]).await?;

    // First workflow task: the poll waits before the workflow starts.
    let workflow_poll = poll_workflow_task(&client);
    polls_waiting(&dev, "workflow", 1.0).await?;
    let run_id = start_workflow(&mut client, "dispatch-1").await?;
    let task = workflow_poll.await??;
    let events = task.history.clone().unwrap_or_default().events;
    assert_eq!(
        events.iter().map(event_type).collect::<Vec<_>>(),
        [
            EventType::WorkflowExecutionStarted,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted
        ]
    );
    assert_eq!(task.started_event_id, 3);
    started_with(&events, 2, 3, "workflow-poller");

    // The activity: its poll waits before the workflow task that schedules it completes.
    let activity_poll = poll_activity_task(&client);
    polls_waiting(&dev, "activity", 1.0).await?;
    client
        .respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token,
            commands: vec![schedule_activity("1", "greet", QUEUE)],
            identity: "workflow-poller".into(),
            ..Default::default()
        })
        .await?;
    let activity = activity_poll.await??;
    assert_eq!(activity.activity_id, "1");
    assert_eq!(activity.attempt, 1);

    // The second workflow task: its poll waits before the activity completes.
    let workflow_poll = poll_workflow_task(&client);
    polls_waiting(&dev, "workflow", 1.0).await?;
    client
        .respond_activity_task_completed(RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: activity.task_token,
            identity: "activity-poller".into(),
            ..Default::default()
        })
        .await?;
    let task = workflow_poll.await??;
    assert_eq!(task.previous_started_event_id, 3);
    assert_eq!(task.started_event_id, 9);
    let events = close_and_read_history(&mut client, task.task_token, "dispatch-1", run_id).await?;
    use EventType::*;
    assert_eq!(
        events.iter().map(event_type).collect::<Vec<_>>(),
        [
            WorkflowExecutionStarted,
            WorkflowTaskScheduled,
            WorkflowTaskStarted,
            WorkflowTaskCompleted,
            ActivityTaskScheduled,
            ActivityTaskStarted,
            ActivityTaskCompleted,
            WorkflowTaskScheduled,
            WorkflowTaskStarted,
            WorkflowTaskCompleted,
            WorkflowExecutionCompleted,
        ]
    );
    started_with(&events, 2, 3, "workflow-poller");
    started_with(&events, 5, 6, "activity-poller");
    started_with(&events, 8, 9, "workflow-poller");
    Ok(())
}

/// Completes the workflow with `task_token` and returns its whole history.
async fn close_and_read_history(
    client: &mut Client,
    task_token: Vec<u8>,
    workflow_id: &str,
    run_id: String,
) -> anyhow::Result<Vec<HistoryEvent>> {
    client
        .respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token,
            commands: vec![complete_workflow(None)],
            identity: "workflow-poller".into(),
            ..Default::default()
        })
        .await?;
    let history = client
        .get_workflow_execution_history(GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: workflow_id.into(),
                run_id,
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(history.history.ok_or_else(|| anyhow!("no history"))?.events)
}

/// Starts workflow `workflow_id` on the queue and returns its run id.
async fn start_workflow(client: &mut Client, workflow_id: &str) -> anyhow::Result<String> {
    let start = StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: workflow_id.into(),
        workflow_type: Some(WorkflowType {
            name: "hello".into(),
        }),
        task_queue: Some(task_queue(QUEUE)),
        request_id: format!("start-{workflow_id}"),
        ..Default::default()
    };
    Ok(client
        .start_workflow_execution(start)
        .await?
        .into_inner()
        .run_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_asked_for_eagerly_comes_back_with_the_completion() -> anyhow::Result<()> {
    let (dev, mut client) = DevServer::start(&[]).await?;
    let run_id = start_workflow(&mut client, "eager-1").await?;
    let task = poll_workflow_task(&client).await??;

    // A poll waits for activities too: the eager activity must not go to it.
    let activity_poll = poll_activity_task(&client);
    polls_waiting(&dev, "activity", 1.0).await?;
    let mut command = schedule_activity("1", "greet", QUEUE);
    if let Some(Attributes::ScheduleActivityTaskCommandAttributes(a)) = &mut command.attributes {
        a.request_eager_execution = true;
    }
    let answer = client
        .respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token,
            commands: vec![command],
            identity: "workflow-poller".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(answer.activity_tasks.len(), 1, "{answer:?}");
    let activity = &answer.activity_tasks[0];
    assert_eq!(activity.activity_id, "1");
    assert_eq!(activity.attempt, 1);
    assert_eq!(
        activity.workflow_execution,
        Some(WorkflowExecution {
            workflow_id: "eager-1".into(),
            run_id: run_id.clone(),
        })
    );
    assert!(activity.start_to_close_timeout.is_some());
    polls_waiting(&dev, "activity", 1.0).await?;
    activity_poll.abort();

    let workflow_poll = poll_workflow_task(&client);
    client
        .respond_activity_task_completed(RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: activity.task_token.clone(),
            identity: "workflow-poller".into(),
            ..Default::default()
        })
        .await?;
    let task = workflow_poll.await??;
    let events = close_and_read_history(&mut client, task.task_token, "eager-1", run_id).await?;
    assert_eq!(event_type(&events[4]), EventType::ActivityTaskScheduled);
    assert_eq!(event_type(&events[5]), EventType::ActivityTaskStarted);
    assert_eq!(event_type(&events[6]), EventType::ActivityTaskCompleted);
    started_with(&events, 5, 6, "workflow-poller");
    assert_eq!(
        event_type(events.last().ok_or_else(|| anyhow!("empty history"))?),
        EventType::WorkflowExecutionCompleted
    );
    Ok(())
}
