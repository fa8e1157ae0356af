//! A task scheduled while a poll waits for it is recorded as started in the commit that
//! scheduled it, and the poll gets it: a one-activity workflow driven over raw gRPC, each task
//! polled before it exists, shows each Started event with its Scheduled event's time (one
//! commit) and the poller's identity, and the history Temporal writes for it. Reproduce with
//! `cargo build --workspace && cargo test -p keel-tests --test task_dispatch`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use keel_bench::decide::{complete_workflow, schedule_activity, task_queue};
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
    let start = StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: "dispatch-1".into(),
        workflow_type: Some(WorkflowType {
            name: "hello".into(),
        }),
        task_queue: Some(task_queue(QUEUE)),
        request_id: "start-dispatch-1".into(),
        ..Default::default()
    };
    let run_id = client
        .start_workflow_execution(start)
        .await?
        .into_inner()
        .run_id;
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
    client
        .respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: task.task_token,
            commands: vec![complete_workflow(None)],
            identity: "workflow-poller".into(),
            ..Default::default()
        })
        .await?;

    let history = client
        .get_workflow_execution_history(GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: "dispatch-1".into(),
                run_id,
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let events = history.history.ok_or_else(|| anyhow!("no history"))?.events;
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
