//! The worker side: pollers that answer workflow tasks with precomputed commands and complete
//! activities at once.

use std::sync::{atomic::Ordering, Arc};
use std::time::Duration;

use anyhow::Result;
use keel_proto::temporal::api::{
    command::v1::command::Attributes,
    common::v1::WorkflowExecution,
    enums::v1::TaskQueueKind,
    history::v1::HistoryEvent,
    taskqueue::v1::TaskQueue,
    workflowservice::v1::{
        GetWorkflowExecutionHistoryRequest, PollActivityTaskQueueRequest,
        PollActivityTaskQueueResponse, PollWorkflowTaskQueueRequest, PollWorkflowTaskQueueResponse,
        RespondActivityTaskCompletedRequest, RespondWorkflowTaskCompletedRequest,
    },
};

use crate::{
    connection::{describe, long_poll, Connections},
    decide::{decide, HistorySummary, TaskContext, WorkflowPlan},
    recorder::Recorder,
};

/// Pause after a failed poll, so a down server is not hammered.
const POLL_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What every poller shares.
pub struct Worker {
    pub namespace: String,
    pub task_queue: String,
    pub identity: String,
    pub plan: WorkflowPlan,
    pub connections: Arc<Connections>,
    pub recorder: Arc<Recorder>,
    /// Ask for activities on this worker's queue to start eagerly.
    pub eager_activities: bool,
}

impl Worker {
    fn task_queue(&self) -> TaskQueue {
        TaskQueue {
            name: self.task_queue.clone(),
            kind: TaskQueueKind::Normal as i32,
            ..Default::default()
        }
    }

    /// Polls workflow tasks and answers them, until the task is aborted.
    pub async fn poll_workflow_tasks(self: Arc<Self>) {
        loop {
            let request = PollWorkflowTaskQueueRequest {
                namespace: self.namespace.clone(),
                task_queue: Some(self.task_queue()),
                identity: self.identity.clone(),
                ..Default::default()
            };
            let task = match self
                .connections
                .client()
                .poll_workflow_task_queue(long_poll(request))
                .await
            {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    self.recorder
                        .worker_error(&format!("poll workflow task: {}", describe(&status)));
                    tokio::time::sleep(POLL_ERROR_PAUSE).await;
                    continue;
                }
            };
            if task.task_token.is_empty() {
                continue; // The long poll expired.
            }
            self.recorder.workflow_tasks.fetch_add(1, Ordering::Relaxed);
            // Answer on another task and poll again at once, as SDK workers do: a poll should be
            // waiting whenever the server has a task, or Temporal writes the task to its backlog
            // (persistence) instead of handing it over, and its latency grows with the answer's.
            let worker = self.clone();
            tokio::spawn(async move {
                if let Err(error) = worker.answer_workflow_task(task).await {
                    worker.recorder.worker_error(&format!("{error:#}"));
                }
            });
        }
    }

    async fn answer_workflow_task(&self, task: PollWorkflowTaskQueueResponse) -> Result<()> {
        let execution = task.workflow_execution.clone().unwrap_or_default();
        let events = self.full_history(&task, &execution).await?;
        let summary = HistorySummary::from_events(&events);
        let context = TaskContext {
            namespace: &self.namespace,
            task_queue: &self.task_queue,
            workflow_id: &execution.workflow_id,
            workflow_type: task
                .workflow_type
                .as_ref()
                .map(|t| t.name.as_str())
                .unwrap_or_default(),
        };
        let decision = decide(&self.plan, &context, &summary, &task.messages);
        if decision.completes {
            if let Some(late_ms) = summary.timer_late_ms {
                self.recorder.timer_late(late_ms);
            }
        }
        let mut commands = decision.commands;
        if self.eager_activities {
            for command in &mut commands {
                if let Some(Attributes::ScheduleActivityTaskCommandAttributes(a)) =
                    &mut command.attributes
                {
                    let queue = a.task_queue.as_ref().map(|q| q.name.as_str());
                    a.request_eager_execution = queue == Some(self.task_queue.as_str());
                }
            }
        }
        let response = RespondWorkflowTaskCompletedRequest {
            task_token: task.task_token,
            commands,
            messages: decision.messages,
            identity: self.identity.clone(),
            namespace: self.namespace.clone(),
            ..Default::default()
        };
        let answer = self
            .connections
            .client()
            .respond_workflow_task_completed(response)
            .await
            .map_err(|status| {
                anyhow::anyhow!("respond workflow task completed: {}", describe(&status))
            })?
            .into_inner();
        for activity in answer.activity_tasks {
            self.complete_activity(activity).await;
        }
        Ok(())
    }

    /// Completes an activity task at once with no result.
    async fn complete_activity(&self, task: PollActivityTaskQueueResponse) {
        self.recorder.activity_tasks.fetch_add(1, Ordering::Relaxed);
        let response = RespondActivityTaskCompletedRequest {
            task_token: task.task_token,
            identity: self.identity.clone(),
            namespace: self.namespace.clone(),
            ..Default::default()
        };
        if let Err(status) = self
            .connections
            .client()
            .respond_activity_task_completed(response)
            .await
        {
            self.recorder.worker_error(&format!(
                "respond activity task completed: {}",
                describe(&status)
            ));
        }
    }

    /// The task's history plus any further pages the server left out of the poll response.
    async fn full_history(
        &self,
        task: &PollWorkflowTaskQueueResponse,
        execution: &WorkflowExecution,
    ) -> Result<Vec<HistoryEvent>> {
        let mut events = task
            .history
            .as_ref()
            .map(|h| h.events.clone())
            .unwrap_or_default();
        let mut page_token = task.next_page_token.clone();
        while !page_token.is_empty() {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: self.namespace.clone(),
                execution: Some(execution.clone()),
                next_page_token: page_token,
                ..Default::default()
            };
            let page = self
                .connections
                .call("get history page", &[], |mut client| {
                    let request = request.clone();
                    async move { client.get_workflow_execution_history(request).await }
                })
                .await?;
            events.extend(page.history.map(|h| h.events).unwrap_or_default());
            page_token = page.next_page_token;
        }
        Ok(events)
    }

    /// Polls activity tasks and completes each at once with no result, until aborted.
    pub async fn poll_activity_tasks(self: Arc<Self>) {
        loop {
            let request = PollActivityTaskQueueRequest {
                namespace: self.namespace.clone(),
                task_queue: Some(self.task_queue()),
                identity: self.identity.clone(),
                ..Default::default()
            };
            let task = match self
                .connections
                .client()
                .poll_activity_task_queue(long_poll(request))
                .await
            {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    self.recorder
                        .worker_error(&format!("poll activity task: {}", describe(&status)));
                    tokio::time::sleep(POLL_ERROR_PAUSE).await;
                    continue;
                }
            };
            if task.task_token.is_empty() {
                continue;
            }
            // Complete on another task and poll again at once (see poll_workflow_tasks).
            let worker = self.clone();
            tokio::spawn(async move { worker.complete_activity(task).await });
        }
    }
}
