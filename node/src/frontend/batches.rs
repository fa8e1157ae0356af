//! The batch operation RPCs (Start, Describe, List, Stop). A batch job is the run named by its
//! job id (engine::batch); these RPCs validate the request as Temporal does, then start, read
//! or terminate that run.

use temporalio_protos::temporal::api::batch::v1::BatchOperationInfo;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;
use ws::start_batch_operation_request::Operation;

use super::errors::invalid;
use super::{check_id, Frontend};
use crate::engine::batch::{self, BatchState, NewBatch};
use crate::engine::proto::{self, enums};
use crate::engine::{MutableState, Request as Engine, RunStatus, StartArgs};
use crate::list_query::ListQuery;
use crate::namespaces::NamespaceRecord;
use crate::shard::Op;

/// Batch jobs one namespace may run at once (Temporal's
/// `frontend.MaxConcurrentBatchOperationPerNamespace` default).
const MAX_RUNNING_PER_NAMESPACE: usize = 1;
/// Largest page of ListBatchOperations.
const MAX_PAGE: usize = 1000;

/// The operation's type and the identity it acts with; None for operations Keel lacks.
fn operation_type(operation: &Operation) -> Option<(enums::BatchOperationType, String)> {
    use enums::BatchOperationType as T;
    Some(match operation {
        Operation::TerminationOperation(t) => (T::TerminateWorkflow, t.identity.clone()),
        Operation::CancellationOperation(c) => (T::CancelWorkflow, c.identity.clone()),
        Operation::SignalOperation(s) => (T::SignalWorkflow, s.identity.clone()),
        Operation::ResetOperation(r) => (T::ResetWorkflow, r.identity.clone()),
        Operation::DeletionOperation(d) => (T::DeleteWorkflow, d.identity.clone()),
        Operation::UnpauseActivitiesOperation(u) => (T::UnpauseActivity, u.identity.clone()),
        Operation::ResetActivitiesOperation(r) => (T::ResetActivity, r.identity.clone()),
        Operation::UpdateActivityOptionsOperation(u) => {
            (T::UpdateActivityOptions, u.identity.clone())
        }
        Operation::UpdateWorkflowOptionsOperation(u) => {
            (T::UpdateWorkflowExecutionOptions, u.identity.clone())
        }
        _ => return None,
    })
}

/// Refuses the batch resets Keel cannot run: by build id, with post-reset operations, or with
/// no reset point.
fn check_batch_reset(
    reset: &temporalio_protos::temporal::api::batch::v1::BatchOperationReset,
) -> Result<(), Status> {
    use temporalio_protos::temporal::api::common::v1::reset_options::Target;
    if !reset.post_reset_operations.is_empty() {
        return Err(Status::unimplemented(
            "Keel does not support post-reset operations yet; reset without them.",
        ));
    }
    match reset.options.as_ref().and_then(|o| o.target.as_ref()) {
        Some(Target::FirstWorkflowTask(_) | Target::LastWorkflowTask(_)) => Ok(()),
        Some(Target::WorkflowTaskId(id)) if *id > 1 => Ok(()),
        Some(Target::WorkflowTaskId(_)) => Err(invalid("the workflow task id must be above 1")),
        Some(Target::BuildId(_)) => Err(Status::unimplemented(
            "Keel has no worker versioning: reset by build id is not supported",
        )),
        None => Err(invalid(
            "a batch reset needs options.target: first_workflow_task, last_workflow_task or \
             workflow_task_id",
        )),
    }
}

fn job_not_found(job_id: &str) -> Status {
    Status::not_found(format!("batch job {job_id:?} not found"))
}

fn batch_state(run: &MutableState) -> enums::BatchOperationState {
    match run.status {
        RunStatus::Running => enums::BatchOperationState::Running,
        RunStatus::Completed => enums::BatchOperationState::Completed,
        _ => enums::BatchOperationState::Failed,
    }
}

impl Frontend {
    /// Every batch run of the namespace, newest first.
    async fn batch_runs(&self, namespace: &NamespaceRecord) -> Result<Vec<MutableState>, Status> {
        let mut runs = self
            .scan_runs(namespace, |state| state.batch.is_some())
            .await?;
        runs.sort_by(|a, b| {
            (b.start_time_ns, &b.workflow_id).cmp(&(a.start_time_ns, &a.workflow_id))
        });
        Ok(runs)
    }

    /// The run of batch job `job_id`.
    async fn batch_run(
        &self,
        namespace: &NamespaceRecord,
        job_id: &str,
    ) -> Result<MutableState, Status> {
        check_id("JobId", job_id, true)?;
        match self.read_state(namespace, job_id, "").await {
            Ok(state) if state.batch.is_some() => Ok(state),
            Ok(_) => Err(job_not_found(job_id)),
            Err(status) if status.code() == tonic::Code::NotFound => Err(job_not_found(job_id)),
            Err(status) => Err(status),
        }
    }

    pub(super) async fn start_batch_operation_rpc(
        &self,
        r: ws::StartBatchOperationRequest,
    ) -> Result<ws::StartBatchOperationResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("JobId", &r.job_id, true)?;
        if r.reason.is_empty() {
            return Err(invalid("Reason is not set on request."));
        }
        #[allow(deprecated)]
        let explicit = !r.executions.is_empty();
        if !r.target_executions.is_empty() {
            return Err(Status::unimplemented(
                "target_executions is not supported yet; use visibility_query or executions",
            ));
        }
        match (r.visibility_query.is_empty(), explicit) {
            (true, false) => {
                return Err(invalid(
                    "VisibilityQuery or Executions must be set on request.",
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "VisibilityQuery and Executions cannot both be set on request.",
                ))
            }
            _ => {}
        }
        let operation = r
            .operation
            .as_ref()
            .ok_or_else(|| invalid("Batch operation is not set on request."))?;
        let (kind, _) = operation_type(operation).ok_or_else(|| {
            Status::unimplemented(
                "Keel runs batch terminate, cancel, signal, reset, delete, update-options, \
                 unpause-activities, reset-activities and update-activity-options operations \
                 only; this one is not supported yet",
            )
        })?;
        if let Operation::ResetOperation(reset) = operation {
            check_batch_reset(reset)?;
        }
        if let Some(Err(message)) = crate::shard::batch_activity_control(operation, 0) {
            return Err(invalid(message));
        }
        if let Some(Err(error)) = crate::shard::batch_options_update(operation, |_, _| Vec::new()) {
            return Err(error.into());
        }
        // Terminate, cancel and signal act on running workflows only, as in Temporal; a reset
        // may start from a closed run, and a deletion deletes closed runs too.
        let query = if r.visibility_query.is_empty() {
            String::new()
        } else {
            ListQuery::parse(
                &r.visibility_query,
                &self.namespaces.search_attributes(&namespace.id)?,
            )?;
            if matches!(
                kind,
                enums::BatchOperationType::ResetWorkflow
                    | enums::BatchOperationType::DeleteWorkflow
            ) {
                r.visibility_query.clone()
            } else {
                format!("({}) AND ExecutionStatus = 'Running'", r.visibility_query)
            }
        };
        let running = self
            .batch_runs(&namespace)
            .await?
            .iter()
            .filter(|run| run.is_running())
            .count();
        if running >= MAX_RUNNING_PER_NAMESPACE {
            return Err(Status::resource_exhausted(
                "Max concurrent batch operations is reached: wait for the running batch job \
                 to finish, or stop it",
            ));
        }
        let args = StartArgs {
            namespace_id: namespace.id.clone(),
            workflow_id: r.job_id.clone(),
            run_id: uuid::Uuid::now_v7().to_string(),
            request_id: uuid::Uuid::new_v4().to_string(),
            workflow_type: batch::WORKFLOW_TYPE.to_string(),
            task_queue: batch::TASK_QUEUE.to_string(),
            batch: Some(Box::new(NewBatch {
                operation_type: kind as i32,
                query,
                request: r.clone(),
            })),
            ..Default::default()
        };
        let op = Op::Start {
            args: Box::new(args),
            reuse_policy: enums::WorkflowIdReusePolicy::RejectDuplicate as i32,
            conflict_policy: enums::WorkflowIdConflictPolicy::Fail as i32,
            signal_if_running: None,
            update: None,
        };
        self.run_op(&namespace, &r.job_id, op).await?;
        Ok(ws::StartBatchOperationResponse {})
    }

    pub(super) async fn describe_batch_operation_rpc(
        &self,
        r: ws::DescribeBatchOperationRequest,
    ) -> Result<ws::DescribeBatchOperationResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let run = self.batch_run(&namespace, &r.job_id).await?;
        let batch = run.batch.as_deref().cloned().unwrap_or_default();
        let request = batch::request_of(&batch);
        let identity = request
            .operation
            .as_ref()
            .and_then(operation_type)
            .map(|(_, identity)| identity)
            .unwrap_or_default();
        Ok(ws::DescribeBatchOperationResponse {
            operation_type: batch.operation_type,
            job_id: run.workflow_id.clone(),
            state: batch_state(&run) as i32,
            start_time: Some(proto::timestamp(run.start_time_ns)),
            close_time: run.close_time_ns.map(proto::timestamp),
            total_operation_count: batch.total.unwrap_or(0),
            complete_operation_count: batch.completed,
            failure_operation_count: batch.failed,
            identity,
            reason: request.reason,
            query: request.visibility_query,
            ..Default::default()
        })
    }

    pub(super) async fn list_batch_operations_rpc(
        &self,
        r: ws::ListBatchOperationsRequest,
    ) -> Result<ws::ListBatchOperationsResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let runs = self.batch_runs(&namespace).await?;
        let (page, next_page_token) =
            super::offset_page(&runs, r.page_size, &r.next_page_token, MAX_PAGE)?;
        let operation_info = page
            .iter()
            .map(|run| BatchOperationInfo {
                job_id: run.workflow_id.clone(),
                state: batch_state(run) as i32,
                start_time: Some(proto::timestamp(run.start_time_ns)),
                close_time: run.close_time_ns.map(proto::timestamp),
                operation_type: run
                    .batch
                    .as_deref()
                    .map_or(0, |b: &BatchState| b.operation_type),
            })
            .collect();
        Ok(ws::ListBatchOperationsResponse {
            operation_info,
            next_page_token,
        })
    }

    pub(super) async fn stop_batch_operation_rpc(
        &self,
        r: ws::StopBatchOperationRequest,
    ) -> Result<ws::StopBatchOperationResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let run = self.batch_run(&namespace, &r.job_id).await?;
        if r.reason.is_empty() {
            return Err(invalid("Reason is not set on request."));
        }
        let request = Engine::Terminate {
            reason: r.reason,
            details: None,
            identity: r.identity,
        };
        self.run_request(&namespace, &run.workflow_id, &run.run_id, request)
            .await?;
        Ok(ws::StopBatchOperationResponse {})
    }
}
