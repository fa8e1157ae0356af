//! UpdateWorkflowExecutionOptions: a running workflow's versioning override and priority,
//! changed by field mask as Temporal does. A change writes a WorkflowExecutionOptionsUpdated
//! event (buffered while a workflow task runs) and schedules no workflow task; asking for what
//! the run already has writes nothing.

use serde::{Deserialize, Serialize};

use super::proto::{self, common, enums, history, workflow, Attributes};
use super::txn::Txn;
use super::{EngineError, Reply};

/// What an UpdateWorkflowExecutionOptions field mask names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionsMask {
    /// The whole versioning override (`versioning_override`, or the deprecated pair
    /// `versioning_override.deployment` and `versioning_override.behavior`).
    pub versioning_override: bool,
    /// The whole priority.
    pub priority: bool,
    /// `priority.priority_key`.
    pub priority_key: bool,
    /// `priority.fairness_key`.
    pub fairness_key: bool,
    /// `priority.fairness_weight`.
    pub fairness_weight: bool,
}

impl OptionsMask {
    /// Parses field mask paths (snake or camel case). Errors are InvalidArgument messages,
    /// except a path Keel knows but does not support (`Err(Unsupported)`).
    pub fn parse(paths: &[String]) -> Result<OptionsMask, EngineError> {
        let invalid = |m: String| EngineError::InvalidArgument(m);
        let mut mask = OptionsMask::default();
        let (mut deployment, mut behavior) = (false, false);
        for path in paths {
            let snake = camel_to_snake(path);
            match snake.as_str() {
                "versioning_override" => mask.versioning_override = true,
                "versioning_override.deployment" => deployment = true,
                "versioning_override.behavior" => behavior = true,
                "versioning_override.pinned"
                | "versioning_override.auto_upgrade"
                | "versioning_override.pinned_version"
                | "versioning_override.pinned.version"
                | "versioning_override.pinned.behavior" => {
                    return Err(invalid(
                        "versioning_override doesn't support partial updates".into(),
                    ))
                }
                "priority" => mask.priority = true,
                "priority.priority_key" => mask.priority_key = true,
                "priority.fairness_key" => mask.fairness_key = true,
                "priority.fairness_weight" => mask.fairness_weight = true,
                time if time == "time_skipping_config"
                    || time.starts_with("time_skipping_config.") =>
                {
                    return Err(EngineError::Unsupported(
                        "Keel does not support time skipping (time_skipping_config).".into(),
                    ))
                }
                _ => {
                    return Err(invalid(format!(
                        "error parsing UpdateMask: proto: invalid path \"{path}\" for message \
                         \"temporal.api.workflow.v1.WorkflowExecutionOptions\""
                    )))
                }
            }
        }
        if deployment != behavior {
            return Err(invalid(
                "versioning_override fields must be updated together".into(),
            ));
        }
        mask.versioning_override |= deployment;
        Ok(mask)
    }
}

/// `fairnessKey` to `fairness_key`, per dotted segment.
fn camel_to_snake(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// An UpdateWorkflowExecutionOptions request, its mask parsed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OptionsUpdate {
    /// The requested versioning override (taken whole when the mask names it).
    #[serde(with = "crate::wire::opt")]
    pub versioning_override: Option<workflow::VersioningOverride>,
    /// The requested priority.
    #[serde(with = "crate::wire::opt")]
    pub priority: Option<common::Priority>,
    /// What to change.
    pub mask: OptionsMask,
    /// Caller identity.
    pub identity: String,
    /// The task queues the version a pinned override names has polled for workflow tasks (the
    /// caller's Worker Deployments know them): the run's must be one.
    pub pinned_version_queues: Vec<String>,
}

impl OptionsUpdate {
    /// The update an UpdateWorkflowExecutionOptions request (or a batch of them) asks for,
    /// checked as Temporal's frontend checks it (a mask and options are required, paths must
    /// name fields, priorities must not be negative); `queues_of(deployment, build_id)` tells
    /// where a version polls for workflow tasks.
    pub fn from_request(
        options: Option<workflow::WorkflowExecutionOptions>,
        paths: Option<Vec<String>>,
        identity: String,
        queues_of: impl FnOnce(&str, &str) -> Vec<String>,
    ) -> Result<OptionsUpdate, EngineError> {
        let invalid = |m: &str| EngineError::InvalidArgument(m.into());
        let paths = paths.ok_or_else(|| invalid("UpdateMask is required"))?;
        let options = options.ok_or_else(|| invalid("WorkflowExecutionOptions is required"))?;
        let mask = OptionsMask::parse(&paths)?;
        if let Some(priority) = &options.priority {
            super::check_priority(priority)?;
        }
        let pinned_version_queues = options
            .versioning_override
            .as_ref()
            .and_then(super::state::override_version)
            .map(|(name, build_id)| queues_of(name, build_id))
            .unwrap_or_default();
        Ok(OptionsUpdate {
            versioning_override: options.versioning_override,
            priority: options.priority,
            mask,
            identity,
            pinned_version_queues,
        })
    }
}

/// A run's options as UpdateWorkflowExecutionOptions answers them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowOptions {
    /// The versioning override, if any.
    #[serde(with = "crate::wire::opt")]
    pub versioning_override: Option<workflow::VersioningOverride>,
    /// The priority, if any.
    #[serde(with = "crate::wire::opt")]
    pub priority: Option<common::Priority>,
}

impl WorkflowOptions {
    /// The run's options now.
    pub fn of(state: &super::MutableState) -> WorkflowOptions {
        WorkflowOptions {
            versioning_override: state
                .versioning
                .as_ref()
                .and_then(|v| v.versioning_override.clone()),
            priority: proto::decode_opt(&state.priority),
        }
    }
}

/// Checks an override's shape as Temporal does (not whether its version exists).
fn check_override(o: &workflow::VersioningOverride) -> Result<(), EngineError> {
    use workflow::versioning_override::{Override, PinnedOverrideBehavior};
    let invalid = |m: &str| Err(EngineError::InvalidArgument(m.into()));
    #[allow(deprecated)]
    match &o.r#override {
        Some(Override::AutoUpgrade(false)) => invalid("auto-upgrade override must be true"),
        Some(Override::AutoUpgrade(true)) => Ok(()),
        Some(Override::Pinned(p)) if p.version.is_none() => {
            invalid("must provide version if override is pinned.")
        }
        Some(Override::Pinned(p)) if p.behavior == PinnedOverrideBehavior::Unspecified as i32 => {
            invalid("must specify pinned override behavior if override is pinned.")
        }
        Some(Override::Pinned(_)) => Ok(()),
        Some(Override::OneTime(_)) => Err(EngineError::Unsupported(
            "Keel does not support one-time versioning overrides.".into(),
        )),
        None if o.behavior == enums::VersioningBehavior::Pinned as i32 => {
            if o.deployment.is_none() && o.pinned_version.is_empty() {
                invalid("must provide deployment (deprecated) or pinned version if behavior is 'PINNED'")
            } else {
                Ok(())
            }
        }
        None if o.behavior == enums::VersioningBehavior::AutoUpgrade as i32 => {
            if o.deployment.is_some() {
                invalid("only provide deployment if behavior is 'PINNED'")
            } else if !o.pinned_version.is_empty() {
                invalid("only provide pinned version if behavior is 'PINNED'")
            } else {
                Ok(())
            }
        }
        None => invalid("override behavior is required"),
    }
}

/// Applies the update to the run: merges what the mask names, and writes the event when
/// anything changed. Answers the resulting options.
pub(crate) fn update(txn: &mut Txn, update: OptionsUpdate) -> Result<Reply, EngineError> {
    if !txn.state.is_running() {
        return Err(EngineError::NotFound(
            "workflow execution already completed".into(),
        ));
    }
    let mut requested = update.versioning_override;
    if let Some(o) = requested.as_mut() {
        if let Some((deployment_name, build_id)) = super::state::override_version(o) {
            let queue = &txn.state.task_queue;
            if !update.pinned_version_queues.contains(queue) {
                return Err(EngineError::FailedPrecondition(format!(
                    "Pinned version '{deployment_name}:{build_id}' is not present in task queue \
                     '{queue}' of type 'Workflow'"
                )));
            }
        }
        fill_pinned_version(txn, o)?;
        check_override(o)?;
    }
    let current = WorkflowOptions::of(&txn.state);
    let mut merged = current.clone();
    let mask = &update.mask;
    if mask.versioning_override {
        merged.versioning_override = requested;
    }
    if mask.priority {
        merged.priority = update.priority.clone();
    }
    let from = update.priority.unwrap_or_default();
    if mask.priority_key || mask.fairness_key || mask.fairness_weight {
        let priority = merged.priority.get_or_insert_with(Default::default);
        if mask.priority_key {
            priority.priority_key = from.priority_key;
        }
        if mask.fairness_key {
            priority.fairness_key = from.fairness_key.clone();
        }
        if mask.fairness_weight {
            priority.fairness_weight = from.fairness_weight;
        }
    }
    if merged == current {
        return Ok(Reply::WorkflowOptions(Box::new(merged)));
    }
    txn.add_buffered_event(Attributes::WorkflowExecutionOptionsUpdatedEventAttributes(
        history::WorkflowExecutionOptionsUpdatedEventAttributes {
            versioning_override: merged.versioning_override.clone(),
            unset_versioning_override: merged.versioning_override.is_none(),
            identity: update.identity,
            priority: merged.priority.clone(),
            ..Default::default()
        },
    ));
    match (
        &mut txn.state.versioning,
        merged.versioning_override.clone(),
    ) {
        (Some(versioning), o) => versioning.versioning_override = o,
        (None, None) => {}
        (versioning @ None, Some(o)) => {
            *versioning = Some(Box::new(super::state::RunVersioning {
                versioning_override: Some(o),
                ..Default::default()
            }))
        }
    }
    if txn
        .state
        .versioning
        .as_ref()
        .is_some_and(|v| **v == super::state::RunVersioning::default())
    {
        txn.state.versioning = None;
    }
    txn.state.priority = proto::encode_opt(merged.priority.as_ref());
    Ok(Reply::WorkflowOptions(Box::new(merged)))
}

/// A pinned override that names no version pins the run where it is: to the version it is
/// pinned to now; FailedPrecondition if it is not pinned.
fn fill_pinned_version(txn: &Txn, o: &mut workflow::VersioningOverride) -> Result<(), EngineError> {
    use workflow::versioning_override::{Override, PinnedOverrideBehavior};
    let Some(Override::Pinned(pinned)) = o.r#override.as_mut() else {
        return Ok(());
    };
    if pinned.behavior == PinnedOverrideBehavior::Unspecified as i32 || pinned.version.is_some() {
        return Ok(());
    }
    let versioning = txn.state.versioning.as_deref();
    match versioning.and_then(|v| v.pinned()) {
        Some((deployment_name, build_id)) => {
            pinned.version = Some(
                temporalio_protos::temporal::api::deployment::v1::WorkerDeploymentVersion {
                    deployment_name: deployment_name.to_string(),
                    build_id: build_id.to_string(),
                },
            );
            Ok(())
        }
        None => {
            let behavior = versioning.map_or(0, |v| v.behavior);
            let behavior = enums::VersioningBehavior::try_from(behavior)
                .unwrap_or(enums::VersioningBehavior::Unspecified);
            Err(EngineError::FailedPrecondition(format!(
                "must specify a specific pinned override version because workflow with id {} \
                 has behavior {} and is not yet pinned to any version",
                txn.state.workflow_id,
                behavior.as_str_name()
            )))
        }
    }
}
