//! The client side of one workflow: start it, send the entity scenario's signals and updates,
//! and wait for its close event.

use std::sync::Arc;

use anyhow::{bail, Result};
use keel_proto::temporal::api::{
    common::v1::{WorkflowExecution, WorkflowType},
    enums::v1::{
        EventType, HistoryEventFilterType, TaskQueueKind, UpdateWorkflowExecutionLifecycleStage,
    },
    history::v1::HistoryEvent,
    taskqueue::v1::TaskQueue,
    update::v1::{self as update, outcome},
    workflowservice::v1::{
        GetWorkflowExecutionHistoryRequest, SignalWorkflowExecutionRequest,
        StartWorkflowExecutionRequest, UpdateWorkflowExecutionRequest,
    },
};
use tonic::Code;

use crate::{
    connection::{long_poll, Connections},
    decide::{WorkflowPlan, SIGNAL_NAME, UPDATE_NAME, WORKFLOW_TYPE},
};

/// Times an update is re-sent while the server answers without an outcome.
const MAX_UPDATE_ROUNDS: u32 = 100;

/// Starts and follows workflows on one task queue.
pub struct Driver {
    pub namespace: String,
    pub task_queue: String,
    pub identity: String,
    pub plan: WorkflowPlan,
    pub connections: Arc<Connections>,
}

impl Driver {
    /// Runs workflow `workflow_id` from start to its close event; errors unless it completed.
    pub async fn run_workflow(&self, workflow_id: &str) -> Result<()> {
        let run_id = self.start(workflow_id).await?;
        let execution = WorkflowExecution {
            workflow_id: workflow_id.to_string(),
            run_id,
        };
        if let WorkflowPlan::Entity { signals, updates } = self.plan {
            self.drive_entity(&execution, signals, updates).await?;
        }
        let close = self.wait_for_close(&execution).await?;
        let close_type = EventType::try_from(close.event_type).unwrap_or(EventType::Unspecified);
        if close_type != EventType::WorkflowExecutionCompleted {
            bail!("workflow closed with {}", close_type.as_str_name());
        }
        Ok(())
    }

    async fn start(&self, workflow_id: &str) -> Result<String> {
        let request = StartWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_id: workflow_id.to_string(),
            workflow_type: Some(WorkflowType {
                name: WORKFLOW_TYPE.to_string(),
            }),
            task_queue: Some(TaskQueue {
                name: self.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                ..Default::default()
            }),
            identity: self.identity.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let started = self
            .connections
            .call("start workflow", &[], |mut client| {
                let request = request.clone();
                async move { client.start_workflow_execution(request).await }
            })
            .await?;
        Ok(started.run_id)
    }

    /// Sends `signals` signals one after another, with the `updates` updates spread among them.
    async fn drive_entity(
        &self,
        execution: &WorkflowExecution,
        signals: u32,
        updates: u32,
    ) -> Result<()> {
        let signals_per_update = signals.checked_div(updates).unwrap_or(u32::MAX).max(1);
        let mut updates_sent = 0;
        for index in 0..signals {
            self.signal(execution).await?;
            if (index + 1) % signals_per_update == 0 && updates_sent < updates {
                self.update(execution, updates_sent).await?;
                updates_sent += 1;
            }
        }
        while updates_sent < updates {
            self.update(execution, updates_sent).await?;
            updates_sent += 1;
        }
        Ok(())
    }

    async fn signal(&self, execution: &WorkflowExecution) -> Result<()> {
        let request = SignalWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_execution: Some(execution.clone()),
            signal_name: SIGNAL_NAME.to_string(),
            identity: self.identity.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        self.connections
            .call("signal", &[], |mut client| {
                let request = request.clone();
                async move { client.signal_workflow_execution(request).await }
            })
            .await?;
        Ok(())
    }

    /// Sends update number `index` and waits for its outcome. Re-sending with the same update id
    /// is safe; Temporal aborts updates whose workflow task failed (FAILED_PRECONDITION) and
    /// expects the caller to retry.
    async fn update(&self, execution: &WorkflowExecution, index: u32) -> Result<()> {
        let request = UpdateWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_execution: Some(execution.clone()),
            wait_policy: Some(update::WaitPolicy {
                lifecycle_stage: UpdateWorkflowExecutionLifecycleStage::Completed as i32,
            }),
            request: Some(update::Request {
                meta: Some(update::Meta {
                    update_id: format!("update-{index}"),
                    identity: self.identity.clone(),
                }),
                input: Some(update::Input {
                    name: UPDATE_NAME.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        for _ in 0..MAX_UPDATE_ROUNDS {
            let response = self
                .connections
                .call("update", &[Code::FailedPrecondition], |mut client| {
                    let request = request.clone();
                    async move { client.update_workflow_execution(request).await }
                })
                .await?;
            match response.outcome.and_then(|o| o.value) {
                Some(outcome::Value::Success(_)) => return Ok(()),
                Some(outcome::Value::Failure(failure)) => {
                    bail!("update {index} failed: {}", failure.message)
                }
                None => continue, // Not completed within the server's wait; ask again.
            }
        }
        bail!("update {index} had no outcome after {MAX_UPDATE_ROUNDS} rounds")
    }

    /// Long-polls the run's history for its close event, as SDKs do to get a result.
    async fn wait_for_close(&self, execution: &WorkflowExecution) -> Result<HistoryEvent> {
        let mut page_token = Vec::new();
        loop {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: self.namespace.clone(),
                execution: Some(execution.clone()),
                next_page_token: page_token,
                wait_new_event: true,
                history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                ..Default::default()
            };
            let page = self
                .connections
                .call("wait for result", &[], |mut client| {
                    let request = request.clone();
                    async move {
                        client
                            .get_workflow_execution_history(long_poll(request))
                            .await
                    }
                })
                .await?;
            if let Some(close) = page.history.and_then(|h| h.events.into_iter().last()) {
                return Ok(close);
            }
            page_token = page.next_page_token;
        }
    }
}
