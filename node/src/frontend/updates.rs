//! UpdateWorkflowExecution and PollWorkflowExecutionUpdate: admission goes through the shard
//! writer like any write; waiting for a stage watches the run's committed state, which holds
//! every update's stage and outcome.

use temporalio_protos::temporal::api::update::v1 as update;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::{invalid, multi_operation_failure};
use super::{check_execution, Frontend};
use crate::engine::proto::{common, enums};
use crate::engine::{update_status, Reply, Request as Engine, RunStatus, UpdateStatus};
use crate::namespaces::NamespaceRecord;
use crate::shard::OpResult;

use enums::UpdateWorkflowExecutionLifecycleStage as Stage;

fn stage_of(policy: Option<&update::WaitPolicy>) -> Stage {
    policy
        .and_then(|p| Stage::try_from(p.lifecycle_stage).ok())
        .unwrap_or(Stage::Unspecified)
}

/// The stage UpdateWorkflowExecution waits for; ADMITTED is refused as Temporal refuses it.
fn update_wait_stage(policy: Option<&update::WaitPolicy>) -> Result<Stage, Status> {
    match stage_of(policy) {
        Stage::Unspecified | Stage::Accepted => Ok(Stage::Accepted),
        Stage::Completed => Ok(Stage::Completed),
        Stage::Admitted => Err(Status::permission_denied(
            "UpdateWorkflowExecution issued asynchronously and waiting on update admitted is not supported.",
        )),
    }
}

/// The stage PollWorkflowExecutionUpdate waits for (unspecified: whatever it is now).
fn poll_wait_stage(policy: Option<&update::WaitPolicy>) -> Stage {
    match stage_of(policy) {
        Stage::Unspecified => Stage::Admitted,
        stage => stage,
    }
}

/// What waiting for an update's stage ended with.
enum Waited {
    /// The update reached the stage wanted, or the wait's deadline passed: where it stands.
    Stage(Box<UpdateStatus>),
    /// The run continued as new before it accepted the update (the close aborted it).
    Continued,
}

/// Temporal's answer to an update whose run closed before the update finished.
fn workflow_completed() -> Status {
    Status::not_found("workflow execution already completed")
}

/// An update request that passed validation.
struct CheckedUpdate {
    workflow_id: String,
    run_id: String,
    first_execution_run_id: String,
    update_id: String,
    wanted: Stage,
    request: Box<update::Request>,
}

fn update_ref(workflow_id: &str, run_id: &str, update_id: &str) -> update::UpdateRef {
    update::UpdateRef {
        workflow_execution: Some(common::WorkflowExecution {
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
        }),
        update_id: update_id.to_string(),
    }
}

impl Frontend {
    /// UpdateWorkflowExecution.
    pub(super) async fn update_workflow(
        &self,
        r: ws::UpdateWorkflowExecutionRequest,
    ) -> Result<ws::UpdateWorkflowExecutionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let checked = self.check_update(r)?;
        let deadline = self.poll_deadline();
        loop {
            let (run_id, reply) = self
                .run_request(
                    &namespace,
                    &checked.workflow_id,
                    &checked.run_id,
                    Engine::Update {
                        request: checked.request.clone(),
                        first_execution_run_id: checked.first_execution_run_id.clone(),
                    },
                )
                .await?;
            let Reply::Update(admitted) = reply else {
                return Err(Status::internal("unexpected reply to an update"));
            };
            match self
                .update_response(&namespace, &checked, &run_id, *admitted, deadline)
                .await?
            {
                Some(response) => return Ok(response),
                // The run continued as new before accepting the update, which it aborted: as
                // Temporal does, send the update to the workflow's current run, unless the
                // caller named the run.
                None if checked.run_id.is_empty() && tokio::time::Instant::now() < deadline => {
                    continue
                }
                None => return Err(workflow_completed()),
            }
        }
    }

    /// ExecuteMultiOperation: update-with-start ([Start, Update] on one workflow id).
    pub(super) async fn update_with_start(
        &self,
        r: ws::ExecuteMultiOperationRequest,
    ) -> Result<ws::ExecuteMultiOperationResponse, Status> {
        use ws::execute_multi_operation_request::operation::Operation as Op;
        use ws::execute_multi_operation_response::{response::Response as Answer, Response};
        let namespace = self.namespace(&r.namespace).await?;
        let count = r.operations.len();
        let mut operations = r.operations.into_iter().map(|o| o.operation);
        let (Some(Some(Op::StartWorkflow(start))), Some(Some(Op::UpdateWorkflow(update))), None) =
            (operations.next(), operations.next(), operations.next())
        else {
            return Err(invalid("Operations have to be exactly [Start, Update]."));
        };
        let fail = |index: usize| move |error: Status| multi_operation_failure(index, count, error);
        for (index, other) in [(0, &start.namespace), (1, &update.namespace)] {
            if !other.is_empty() && *other != r.namespace {
                return Err(fail(index)(invalid(
                    "Operation namespace did not match request's namespace.",
                )));
            }
        }
        if start.workflow_start_delay.is_some() {
            return Err(fail(0)(invalid("WorkflowStartDelay is not supported.")));
        }
        if !start.cron_schedule.is_empty() {
            return Err(fail(0)(invalid("CronSchedule is not allowed.")));
        }
        if start.request_eager_execution {
            return Err(fail(0)(invalid("RequestEagerExecution is not supported.")));
        }
        let execution = update.workflow_execution.clone().unwrap_or_default();
        if execution.workflow_id != start.workflow_id {
            return Err(fail(1)(invalid(
                "WorkflowId is not consistent with previous operation(s).",
            )));
        }
        if !execution.run_id.is_empty() {
            return Err(fail(1)(invalid("RunId is not allowed.")));
        }
        if !update.first_execution_run_id.is_empty() {
            return Err(fail(1)(invalid("FirstExecutionRunId is not allowed.")));
        }
        let checked = self.check_update(update).map_err(fail(1))?;
        let workflow_id = start.workflow_id.clone();
        let op = self
            .start_op(&namespace, start, Some(checked.request.clone()))
            .map_err(fail(0))?;
        let deadline = self.poll_deadline();
        let (run_id, started, admitted) = match self.run_op(&namespace, &workflow_id, op).await {
            Ok(OpResult::Started {
                run_id,
                started,
                update: Some(admitted),
                ..
            }) => (run_id, started, admitted),
            Ok(_) => return Err(Status::internal("unexpected reply to update-with-start")),
            Err(error) if error.code() == tonic::Code::AlreadyExists => return Err(fail(0)(error)),
            Err(error) => return Err(fail(1)(error)),
        };
        let updated = self
            .update_response(&namespace, &checked, &run_id, *admitted, deadline)
            .await
            .and_then(|response| response.ok_or_else(workflow_completed))
            .map_err(fail(1))?;
        Ok(ws::ExecuteMultiOperationResponse {
            responses: vec![
                Response {
                    response: Some(Answer::StartWorkflow(ws::StartWorkflowExecutionResponse {
                        run_id,
                        started,
                        status: enums::WorkflowExecutionStatus::Running as i32,
                        ..Default::default()
                    })),
                },
                Response {
                    response: Some(Answer::UpdateWorkflow(updated)),
                },
            ],
        })
    }

    /// Validates an update request the way Temporal's frontend does (an empty update id gets
    /// a fresh one).
    fn check_update(&self, r: ws::UpdateWorkflowExecutionRequest) -> Result<CheckedUpdate, Status> {
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        let wanted = update_wait_stage(r.wait_policy.as_ref())?;
        let mut request = r.request.unwrap_or_default();
        let meta = request
            .meta
            .as_mut()
            .ok_or_else(|| invalid("Update meta is not set on request."))?;
        if meta.update_id.is_empty() {
            meta.update_id = uuid::Uuid::new_v4().to_string();
        }
        if meta.update_id.chars().count() > super::MAX_ID_LEN {
            return Err(invalid("UpdateId length exceeds limit."));
        }
        let update_id = meta.update_id.clone();
        let input = request
            .input
            .as_ref()
            .ok_or_else(|| invalid("Update input is not set on request."))?;
        if input.name.is_empty() {
            return Err(invalid("Update name is not set on request."));
        }
        self.check_payloads(input.args.as_ref())?;
        Ok(CheckedUpdate {
            workflow_id: execution.workflow_id,
            run_id: execution.run_id,
            first_execution_run_id: r.first_execution_run_id,
            update_id,
            wanted,
            request: Box::new(request),
        })
    }

    /// Waits (until `deadline`) for the admitted update to reach the stage its caller wants;
    /// None if the run continued as new before accepting it.
    async fn update_response(
        &self,
        namespace: &NamespaceRecord,
        checked: &CheckedUpdate,
        run_id: &str,
        admitted: UpdateStatus,
        deadline: tokio::time::Instant,
    ) -> Result<Option<ws::UpdateWorkflowExecutionResponse>, Status> {
        let status = if admitted.stage >= checked.wanted {
            admitted
        } else {
            let waited = self
                .await_update(
                    namespace,
                    &checked.workflow_id,
                    run_id,
                    &checked.update_id,
                    checked.wanted,
                    deadline,
                )
                .await?;
            match waited {
                Waited::Stage(status) => *status,
                Waited::Continued => return Ok(None),
            }
        };
        Ok(Some(ws::UpdateWorkflowExecutionResponse {
            update_ref: Some(update_ref(&checked.workflow_id, run_id, &checked.update_id)),
            outcome: status.outcome,
            stage: status.stage as i32,
            ..Default::default()
        }))
    }

    /// PollWorkflowExecutionUpdate.
    pub(super) async fn poll_update(
        &self,
        r: ws::PollWorkflowExecutionUpdateRequest,
    ) -> Result<ws::PollWorkflowExecutionUpdateResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let reference = r
            .update_ref
            .ok_or_else(|| invalid("UpdateRef is not set on request."))?;
        let execution = reference.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        let wanted = poll_wait_stage(r.wait_policy.as_ref());
        let state = self
            .read_state(&namespace, &execution.workflow_id, &execution.run_id)
            .await?;
        let waited = self
            .await_update(
                &namespace,
                &execution.workflow_id,
                &state.run_id,
                &reference.update_id,
                wanted,
                self.poll_deadline(),
            )
            .await?;
        let Waited::Stage(status) = waited else {
            return Err(workflow_completed());
        };
        Ok(ws::PollWorkflowExecutionUpdateResponse {
            outcome: status.outcome,
            stage: status.stage as i32,
            update_ref: Some(update_ref(
                &execution.workflow_id,
                &state.run_id,
                &reference.update_id,
            )),
        })
    }

    /// Waits until the update reaches `wanted` or `deadline` passes, then reports its stage.
    /// A run closed before accepting the update answers "workflow execution already
    /// completed", unless it continued as new.
    async fn await_update(
        &self,
        namespace: &NamespaceRecord,
        workflow_id: &str,
        run_id: &str,
        update_id: &str,
        wanted: Stage,
        deadline: tokio::time::Instant,
    ) -> Result<Waited, Status> {
        let shard = self.shard(&namespace.id, workflow_id);
        let mut changes = shard.watch_run(&namespace.id, workflow_id, run_id);
        // The update was admitted through the shard's leader: on a follower, read only once
        // this replica has applied that far.
        shard.catch_up().await?;
        loop {
            changes.mark_seen();
            let state = shard
                .load_state(&namespace.id, workflow_id, run_id)?
                .ok_or_else(|| crate::shard::run_not_found(workflow_id, run_id))?;
            let Some(status) = update_status(&state, update_id) else {
                return Err(Status::not_found(format!(
                    "update \"{update_id}\" not found"
                )));
            };
            if status.stage >= wanted {
                return Ok(Waited::Stage(Box::new(status)));
            }
            if !state.is_running() {
                if status.stage < Stage::Accepted && state.status == RunStatus::ContinuedAsNew {
                    return Ok(Waited::Continued);
                }
                return Err(workflow_completed());
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Waited::Stage(Box::new(status))),
            }
        }
    }
}
