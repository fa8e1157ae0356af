//! UpdateWorkflowExecutionOptions: checks the request, looks up where a pinned version polls,
//! and hands the run's shard one engine request (`engine::workflow_options`).

use temporalio_protos::temporal::api::workflow::v1 as workflow;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::{check_execution, Frontend};
use crate::engine::workflow_options::OptionsUpdate;
use crate::engine::{Reply, Request as Engine};

impl Frontend {
    pub(super) async fn update_workflow_execution_options_rpc(
        &self,
        r: ws::UpdateWorkflowExecutionOptionsRequest,
    ) -> Result<ws::UpdateWorkflowExecutionOptionsResponse, Status> {
        let execution = r.workflow_execution.unwrap_or_default();
        check_execution(&execution)?;
        let namespace = self.namespace(&r.namespace).await?;
        let update = OptionsUpdate::from_request(
            r.workflow_execution_options,
            r.update_mask.map(|m| m.paths),
            r.identity,
            |name, build_id| {
                self.deployments
                    .workflow_queues(&namespace.id, name, build_id)
            },
        )?;
        let request = Engine::UpdateOptions(Box::new(update));
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
}
