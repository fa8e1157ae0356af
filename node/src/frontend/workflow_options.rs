//! UpdateWorkflowExecutionOptions: validates the request as Temporal's frontend does (a mask
//! and options are required, paths must name fields, a pinned version must be one the run's
//! task queue has seen), then hands the run's shard one engine request
//! (`engine::workflow_options`).

use temporalio_protos::temporal::api::workflow::v1 as workflow;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::invalid;
use super::{check_id, Frontend};
use crate::deployments::{parse_version, queue_type};
use crate::engine::workflow_options::{OptionsMask, OptionsUpdate};
use crate::engine::{Reply, Request as Engine, TaskKind};
use crate::namespaces::NamespaceRecord;

/// The version a pinned override names, if it names one.
fn pinned_version(o: &workflow::VersioningOverride) -> Option<(String, String)> {
    use workflow::versioning_override::Override;
    match &o.r#override {
        Some(Override::Pinned(p)) => p
            .version
            .as_ref()
            .map(|v| (v.deployment_name.clone(), v.build_id.clone())),
        #[allow(deprecated)]
        None if !o.pinned_version.is_empty() => parse_version(&o.pinned_version).ok().flatten(),
        _ => None,
    }
}

impl Frontend {
    pub(super) async fn update_workflow_execution_options_rpc(
        &self,
        r: ws::UpdateWorkflowExecutionOptionsRequest,
    ) -> Result<ws::UpdateWorkflowExecutionOptionsResponse, Status> {
        let execution = r.workflow_execution.unwrap_or_default();
        check_id("WorkflowId", &execution.workflow_id, true)?;
        let paths = r
            .update_mask
            .ok_or_else(|| invalid("UpdateMask is required"))?
            .paths;
        let options = r
            .workflow_execution_options
            .ok_or_else(|| invalid("WorkflowExecutionOptions is required"))?;
        let mask = OptionsMask::parse(&paths)?;
        if let Some(priority) = &options.priority {
            if priority.priority_key < 0 {
                return Err(invalid("PriorityKey can't be negative"));
            }
            if priority.fairness_weight < 0.0 {
                return Err(invalid("FairnessWeight can't be negative"));
            }
        }
        let namespace = self.namespace(&r.namespace).await?;
        if let Some(version) = options
            .versioning_override
            .as_ref()
            .and_then(pinned_version)
        {
            self.check_pinned_version(&namespace, &execution, &version)
                .await?;
        }
        let request = Engine::UpdateOptions(Box::new(OptionsUpdate {
            versioning_override: options.versioning_override,
            priority: options.priority,
            mask,
            identity: r.identity,
        }));
        let (_, reply) = self
            .run_request(
                &namespace,
                &execution.workflow_id,
                &execution.run_id,
                request,
            )
            .await?;
        let Reply::WorkflowOptions(options) = reply else {
            return Err(Status::internal(
                "unexpected reply to UpdateWorkflowExecutionOptions",
            ));
        };
        Ok(ws::UpdateWorkflowExecutionOptionsResponse {
            workflow_execution_options: Some(workflow::WorkflowExecutionOptions {
                versioning_override: options.versioning_override,
                priority: options.priority,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// FailedPrecondition unless the version has polled the run's task queue for workflow
    /// tasks, as Temporal requires of a pinned override.
    async fn check_pinned_version(
        &self,
        namespace: &NamespaceRecord,
        execution: &temporalio_protos::temporal::api::common::v1::WorkflowExecution,
        (deployment_name, build_id): &(String, String),
    ) -> Result<(), Status> {
        let shard = self.shard(&namespace.id, &execution.workflow_id);
        shard.barrier().await?;
        let state = shard
            .load_state(&namespace.id, &execution.workflow_id, &execution.run_id)?
            .ok_or_else(|| {
                crate::shard::run_not_found(&execution.workflow_id, &execution.run_id)
            })?;
        let queue = (state.task_queue.clone(), queue_type(TaskKind::Workflow));
        let member = self
            .deployments
            .get(&namespace.id, deployment_name)
            .and_then(|d| d.versions.get(build_id).cloned())
            .is_some_and(|v| v.task_queues.contains(&queue));
        if member {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "Pinned version '{deployment_name}:{build_id}' is not present in task queue '{}' \
                 of type 'Workflow'",
                state.task_queue
            )))
        }
    }
}
