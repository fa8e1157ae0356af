//! The activity control RPCs: PauseActivity, UnpauseActivity, ResetActivity and
//! UpdateActivityOptions. They validate the request as Temporal's frontend does, draw the
//! jitter, and hand the run's shard one engine request (`engine::activity_control`).

use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::invalid;
use super::{check_execution, check_id, views, Frontend};
use crate::engine::activity_control::{jitter_delay_ms, ActivitySelector, ControlAction};
use crate::engine::proto::{self, common};
use crate::engine::{ActivityControlRequest, Reply, Request as Engine};

/// A delay drawn uniformly from `[0, jitter)` (0 without jitter).
fn jitter_ms(jitter: Option<&prost_wkt_types::Duration>) -> Result<i64, Status> {
    if jitter.is_some_and(|d| d.seconds < 0 || d.nanos < 0) {
        return Err(invalid("Jitter must not be negative."));
    }
    Ok(jitter_delay_ms(
        proto::duration_ms(jitter),
        uuid::Uuid::new_v4().as_u128(),
    ))
}

/// The selector of a request's `activity` oneof; InvalidArgument when it is unset.
fn selector(selector: Option<ActivitySelector>) -> Result<ActivitySelector, Status> {
    match selector {
        Some(ActivitySelector::Id(id)) => {
            check_id("ActivityId", &id, true)?;
            Ok(ActivitySelector::Id(id))
        }
        Some(ActivitySelector::Type(name)) if name.is_empty() => {
            Err(invalid("ActivityType is not set on request."))
        }
        Some(selector) => Ok(selector),
        None => Err(invalid(
            "Either Activity.Id or Activity.Type should be set on request.",
        )),
    }
}

/// The run of an `*ActivityExecution` request: the workflow's, or with no workflow id the
/// standalone activity's (`run_id` is then the activity's).
fn workflow_run(
    workflow_id: String,
    run_id: String,
    activity_id: &str,
) -> common::WorkflowExecution {
    common::WorkflowExecution {
        workflow_id: if workflow_id.is_empty() {
            crate::engine::activity_execution::workflow_id(activity_id)
        } else {
            workflow_id
        },
        run_id,
    }
}

/// `status` of an `*ActivityExecution` request: on a standalone activity (no workflow id), a
/// NotFound worded as Temporal words it.
fn execution_status(workflow_id: &str, activity_id: &str, status: Status) -> Status {
    if workflow_id.is_empty() {
        super::errors::on_activity(activity_id, status)
    } else {
        status
    }
}

impl Frontend {
    /// Runs one control request against the run `execution` names.
    async fn control_activities(
        &self,
        namespace: &str,
        execution: Option<common::WorkflowExecution>,
        selector: ActivitySelector,
        action: ControlAction,
    ) -> Result<Reply, Status> {
        let namespace = self.namespace(namespace).await?;
        let execution = execution.unwrap_or_default();
        check_execution(&execution)?;
        let request =
            Engine::ActivityControl(Box::new(ActivityControlRequest { selector, action }));
        Ok(self
            .run_request(
                &namespace,
                &execution.workflow_id,
                &execution.run_id,
                request,
            )
            .await?
            .1)
    }

    pub(super) async fn pause_activity_rpc(
        &self,
        r: ws::PauseActivityRequest,
    ) -> Result<ws::PauseActivityResponse, Status> {
        use ws::pause_activity_request::Activity;
        let selector = selector(r.activity.map(|a| match a {
            Activity::Id(id) => ActivitySelector::Id(id),
            Activity::Type(name) => ActivitySelector::Type(name),
        }))?;
        check_id("RequestId", &r.request_id, false)?;
        let action = ControlAction::Pause {
            identity: r.identity,
            reason: r.reason,
            request_id: r.request_id,
        };
        self.control_activities(&r.namespace, r.execution, selector, action)
            .await?;
        Ok(ws::PauseActivityResponse {})
    }

    pub(super) async fn unpause_activity_rpc(
        &self,
        r: ws::UnpauseActivityRequest,
    ) -> Result<ws::UnpauseActivityResponse, Status> {
        use ws::unpause_activity_request::Activity;
        let selector = selector(r.activity.map(|a| match a {
            Activity::Id(id) => ActivitySelector::Id(id),
            Activity::Type(name) => ActivitySelector::Type(name),
            Activity::UnpauseAll(_) => ActivitySelector::All,
        }))?;
        let action = ControlAction::Unpause {
            reset_attempts: r.reset_attempts,
            reset_heartbeat: r.reset_heartbeat,
            delay_ms: jitter_ms(r.jitter.as_ref())?,
        };
        self.control_activities(&r.namespace, r.execution, selector, action)
            .await?;
        Ok(ws::UnpauseActivityResponse {})
    }

    pub(super) async fn reset_activity_rpc(
        &self,
        r: ws::ResetActivityRequest,
    ) -> Result<ws::ResetActivityResponse, Status> {
        use ws::reset_activity_request::Activity;
        let selector = selector(r.activity.map(|a| match a {
            Activity::Id(id) => ActivitySelector::Id(id),
            Activity::Type(name) => ActivitySelector::Type(name),
            Activity::MatchAll(_) => ActivitySelector::All,
        }))?;
        let action = ControlAction::Reset {
            reset_heartbeat: r.reset_heartbeat,
            keep_paused: r.keep_paused,
            restore_original: r.restore_original_options,
            delay_ms: jitter_ms(r.jitter.as_ref())?,
        };
        self.control_activities(&r.namespace, r.execution, selector, action)
            .await?;
        Ok(ws::ResetActivityResponse {})
    }

    pub(super) async fn update_activity_options_rpc(
        &self,
        r: ws::UpdateActivityOptionsRequest,
    ) -> Result<ws::UpdateActivityOptionsResponse, Status> {
        use ws::update_activity_options_request::Activity;
        let selector = selector(r.activity.map(|a| match a {
            Activity::Id(id) => ActivitySelector::Id(id),
            Activity::Type(name) => ActivitySelector::Type(name),
            Activity::MatchAll(_) => ActivitySelector::All,
        }))?;
        let paths = r.update_mask.map(|m| m.paths);
        let action = if r.restore_original {
            if paths.as_ref().is_some_and(|p| !p.is_empty()) {
                return Err(invalid("Both UpdateMask and RestoreOriginal are provided"));
            }
            ControlAction::RestoreOptions
        } else {
            let options = r
                .activity_options
                .ok_or_else(|| invalid("ActivityOptions are not provided"))?;
            let paths = paths.ok_or_else(|| invalid("UpdateMask is not provided"))?;
            if let Some(priority) = &options.priority {
                crate::engine::check_priority(priority)?;
            }
            ControlAction::UpdateOptions {
                options: Box::new(options),
                paths,
            }
        };
        match self
            .control_activities(&r.namespace, r.execution, selector, action)
            .await?
        {
            Reply::ActivityOptions(options) => Ok(ws::UpdateActivityOptionsResponse {
                activity_options: Some(views::activity_options(&options)),
            }),
            _ => Err(Status::internal(
                "unexpected reply to UpdateActivityOptions",
            )),
        }
    }

    pub(super) async fn pause_activity_execution_rpc(
        &self,
        r: ws::PauseActivityExecutionRequest,
    ) -> Result<ws::PauseActivityExecutionResponse, Status> {
        let (workflow_id, activity_id) = (r.workflow_id.clone(), r.activity_id.clone());
        let execution = workflow_run(r.workflow_id, r.run_id, &r.activity_id);
        self.pause_activity_rpc(ws::PauseActivityRequest {
            namespace: r.namespace,
            execution: Some(execution),
            identity: r.identity,
            activity: Some(ws::pause_activity_request::Activity::Id(r.activity_id)),
            reason: r.reason,
            request_id: r.request_id,
        })
        .await
        .map_err(|status| execution_status(&workflow_id, &activity_id, status))?;
        Ok(ws::PauseActivityExecutionResponse {})
    }

    pub(super) async fn unpause_activity_execution_rpc(
        &self,
        r: ws::UnpauseActivityExecutionRequest,
    ) -> Result<ws::UnpauseActivityExecutionResponse, Status> {
        let (workflow_id, activity_id) = (r.workflow_id.clone(), r.activity_id.clone());
        let execution = workflow_run(r.workflow_id, r.run_id, &r.activity_id);
        self.unpause_activity_rpc(ws::UnpauseActivityRequest {
            namespace: r.namespace,
            execution: Some(execution),
            identity: r.identity,
            activity: Some(ws::unpause_activity_request::Activity::Id(r.activity_id)),
            jitter: r.jitter,
            ..Default::default()
        })
        .await
        .map_err(|status| execution_status(&workflow_id, &activity_id, status))?;
        Ok(ws::UnpauseActivityExecutionResponse {})
    }

    pub(super) async fn reset_activity_execution_rpc(
        &self,
        r: ws::ResetActivityExecutionRequest,
    ) -> Result<ws::ResetActivityExecutionResponse, Status> {
        let (workflow_id, activity_id) = (r.workflow_id.clone(), r.activity_id.clone());
        let execution = workflow_run(r.workflow_id, r.run_id, &r.activity_id);
        self.reset_activity_rpc(ws::ResetActivityRequest {
            namespace: r.namespace,
            execution: Some(execution),
            identity: r.identity,
            activity: Some(ws::reset_activity_request::Activity::Id(r.activity_id)),
            reset_heartbeat: r.reset_heartbeat,
            keep_paused: r.keep_paused,
            jitter: r.jitter,
            restore_original_options: r.restore_original_options,
        })
        .await
        .map_err(|status| execution_status(&workflow_id, &activity_id, status))?;
        Ok(ws::ResetActivityExecutionResponse {})
    }

    pub(super) async fn update_activity_execution_options_rpc(
        &self,
        r: ws::UpdateActivityExecutionOptionsRequest,
    ) -> Result<ws::UpdateActivityExecutionOptionsResponse, Status> {
        let (workflow_id, activity_id) = (r.workflow_id.clone(), r.activity_id.clone());
        let execution = workflow_run(r.workflow_id, r.run_id, &r.activity_id);
        let response = self
            .update_activity_options_rpc(ws::UpdateActivityOptionsRequest {
                namespace: r.namespace,
                execution: Some(execution),
                identity: r.identity,
                activity_options: r.activity_options,
                update_mask: r.update_mask,
                activity: Some(ws::update_activity_options_request::Activity::Id(
                    r.activity_id,
                )),
                restore_original: r.restore_original,
            })
            .await
            .map_err(|status| execution_status(&workflow_id, &activity_id, status))?;
        Ok(ws::UpdateActivityExecutionOptionsResponse {
            activity_options: response.activity_options,
        })
    }
}
