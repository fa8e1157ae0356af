//! The Worker Deployment RPCs (worker versioning): describe and list deployments and their
//! versions, and set the current and ramping versions. The records and the routing they drive
//! are [`crate::deployments`]; these RPCs run on the node that runs matching (tasks queued under
//! an older routing are dropped there when reached, and offered again by their shard leaders).

use prost_wkt_types::Timestamp;
use temporalio_protos::temporal::api::deployment::v1 as dep;
use temporalio_protos::temporal::api::enums::v1::{
    RoutingConfigUpdateState, WorkerDeploymentVersionStatus,
};
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use super::errors::invalid;
use super::{check_id, offset_page, Frontend};
use crate::deployments::{
    parse_version, DeploymentError, DeploymentRecord, Ramp, VersionRecord, UNVERSIONED,
};
use crate::engine::proto;

/// Largest page of ListWorkerDeployments.
const MAX_PAGE: usize = 1000;

fn time(ns: i64) -> Option<Timestamp> {
    (ns > 0).then(|| proto::timestamp(ns))
}

fn version_string(deployment: &str, build_id: Option<&str>) -> String {
    build_id.map_or_else(
        || UNVERSIONED.to_string(),
        |b| crate::deployments::lane_of(deployment, b),
    )
}

fn deployment_version(
    deployment: &str,
    build_id: Option<&str>,
) -> Option<dep::WorkerDeploymentVersion> {
    build_id.map(|b| dep::WorkerDeploymentVersion {
        build_id: b.to_string(),
        deployment_name: deployment.to_string(),
    })
}

fn status(
    record: &DeploymentRecord,
    build_id: &str,
    version: &VersionRecord,
) -> WorkerDeploymentVersionStatus {
    if record.current.as_deref() == Some(build_id) {
        WorkerDeploymentVersionStatus::Current
    } else if record
        .ramp
        .as_ref()
        .is_some_and(|r| r.build_id.as_deref() == Some(build_id))
    {
        WorkerDeploymentVersionStatus::Ramping
    } else if version.last_deactivation_ns.is_some() {
        WorkerDeploymentVersionStatus::Draining
    } else {
        WorkerDeploymentVersionStatus::Inactive
    }
}

#[allow(deprecated)]
fn routing_config(record: &DeploymentRecord) -> dep::RoutingConfig {
    let ramp = record.ramp.as_ref();
    dep::RoutingConfig {
        current_deployment_version: deployment_version(&record.name, record.current.as_deref()),
        current_version: version_string(&record.name, record.current.as_deref()),
        ramping_deployment_version: ramp
            .and_then(|r| deployment_version(&record.name, r.build_id.as_deref())),
        ramping_version: ramp
            .map(|r| version_string(&record.name, r.build_id.as_deref()))
            .unwrap_or_default(),
        ramping_version_percentage: ramp.map_or(0.0, |r| r.percentage),
        current_version_changed_time: time(record.current_changed_ns),
        ramping_version_changed_time: ramp.and_then(|r| time(r.since_ns)),
        ramping_version_percentage_changed_time: ramp.and_then(|r| time(r.percentage_changed_ns)),
        revision_number: record.revision,
    }
}

#[allow(deprecated)]
fn version_summary(
    record: &DeploymentRecord,
    build_id: &str,
    version: &VersionRecord,
) -> dep::worker_deployment_info::WorkerDeploymentVersionSummary {
    dep::worker_deployment_info::WorkerDeploymentVersionSummary {
        version: version_string(&record.name, Some(build_id)),
        status: status(record, build_id, version) as i32,
        deployment_version: deployment_version(&record.name, Some(build_id)),
        create_time: time(version.create_time_ns),
        current_since_time: version.current_since_ns.and_then(time),
        ramping_since_time: version.ramping_since_ns.and_then(time),
        routing_update_time: time(version.routing_update_ns),
        first_activation_time: version.first_activation_ns.and_then(time),
        last_current_time: version.last_current_ns.and_then(time),
        last_deactivation_time: version.last_deactivation_ns.and_then(time),
        ..Default::default()
    }
}

fn deployment_info(record: &DeploymentRecord) -> dep::WorkerDeploymentInfo {
    dep::WorkerDeploymentInfo {
        name: record.name.clone(),
        version_summaries: record
            .versions
            .iter()
            .map(|(build_id, version)| version_summary(record, build_id, version))
            .collect(),
        create_time: time(record.create_time_ns),
        routing_config: Some(routing_config(record)),
        last_modifier_identity: record.last_modifier_identity.clone(),
        routing_config_update_state: RoutingConfigUpdateState::Completed as i32,
        ..Default::default()
    }
}

/// The build id a Set request names: its `build_id`, else its (deprecated) version string,
/// which must belong to `deployment`; None for unversioned workers.
fn requested_build(
    deployment: &str,
    build_id: &str,
    version: &str,
) -> Result<Option<String>, Status> {
    if !build_id.is_empty() {
        return Ok(Some(build_id.to_string()));
    }
    if version.is_empty() {
        return Ok(None);
    }
    match parse_version(version).map_err(invalid)? {
        None => Ok(None),
        Some((name, build_id)) if name == deployment => Ok(Some(build_id)),
        Some((name, _)) => Err(invalid(format!(
            "version {version:?} belongs to deployment {name:?}, not {deployment:?}"
        ))),
    }
}

fn check_token(record: &DeploymentRecord, token: &[u8]) -> Result<(), DeploymentError> {
    if !token.is_empty() && token != record.conflict_token().as_slice() {
        return Err(DeploymentError::FailedPrecondition(
            "conflict token mismatch: the deployment changed since it was read; describe it \
             again and retry"
                .into(),
        ));
    }
    Ok(())
}

fn require_version(
    record: &DeploymentRecord,
    build_id: Option<&str>,
) -> Result<(), DeploymentError> {
    match build_id {
        Some(b) if !record.versions.contains_key(b) => Err(DeploymentError::NotFound(format!(
            "version {b:?} not found in Worker Deployment {:?}: it appears once a worker of \
             that build id polls",
            record.name
        ))),
        _ => Ok(()),
    }
}

/// Marks `build_id` (None: unversioned) as routed to from `now_ns` on, as current or ramping.
fn activate(record: &mut DeploymentRecord, build_id: Option<&str>, current: bool, now_ns: i64) {
    if let Some(version) = build_id.and_then(|b| record.versions.get_mut(b)) {
        version.first_activation_ns.get_or_insert(now_ns);
        version.routing_update_ns = now_ns;
        if current {
            version.current_since_ns = Some(now_ns);
            version.last_current_ns = Some(now_ns);
            version.ramping_since_ns = None;
        } else {
            version.ramping_since_ns = Some(now_ns);
        }
    }
}

/// Marks `build_id` as no longer current (or ramping) from `now_ns` on.
fn deactivate(record: &mut DeploymentRecord, build_id: Option<&str>, current: bool, now_ns: i64) {
    if let Some(version) = build_id.and_then(|b| record.versions.get_mut(b)) {
        version.routing_update_ns = now_ns;
        if current {
            version.current_since_ns = None;
        } else {
            version.ramping_since_ns = None;
        }
        if version.current_since_ns.is_none() && version.ramping_since_ns.is_none() {
            version.last_deactivation_ns = Some(now_ns);
        }
    }
}

impl Frontend {
    pub(super) async fn describe_worker_deployment_rpc(
        &self,
        r: ws::DescribeWorkerDeploymentRequest,
    ) -> Result<ws::DescribeWorkerDeploymentResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        let record = self
            .deployments
            .get(&namespace.id, &r.deployment_name)
            .ok_or_else(|| Status::not_found(crate::deployments::not_found(&r.deployment_name)))?;
        Ok(ws::DescribeWorkerDeploymentResponse {
            conflict_token: record.conflict_token(),
            worker_deployment_info: Some(deployment_info(&record)),
        })
    }

    pub(super) async fn list_worker_deployments_rpc(
        &self,
        r: ws::ListWorkerDeploymentsRequest,
    ) -> Result<ws::ListWorkerDeploymentsResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let records = self.deployments.list(&namespace.id);
        let (page, next_page_token) =
            offset_page(&records, r.page_size, &r.next_page_token, MAX_PAGE)?;
        let summary = |record: &DeploymentRecord, build_id: Option<&str>| {
            build_id.and_then(|b| {
                record
                    .versions
                    .get(b)
                    .map(|version| version_summary(record, b, version))
            })
        };
        Ok(ws::ListWorkerDeploymentsResponse {
            next_page_token,
            worker_deployments: page
                .iter()
                .map(
                    |record| ws::list_worker_deployments_response::WorkerDeploymentSummary {
                        name: record.name.clone(),
                        create_time: time(record.create_time_ns),
                        routing_config: Some(routing_config(record)),
                        latest_version_summary: record
                            .versions
                            .iter()
                            .max_by_key(|(_, v)| v.create_time_ns)
                            .map(|(b, v)| version_summary(record, b, v)),
                        current_version_summary: summary(record, record.current.as_deref()),
                        ramping_version_summary: record
                            .ramp
                            .as_ref()
                            .and_then(|ramp| summary(record, ramp.build_id.as_deref())),
                    },
                )
                .collect(),
        })
    }

    #[allow(deprecated)]
    pub(super) async fn describe_worker_deployment_version_rpc(
        &self,
        r: ws::DescribeWorkerDeploymentVersionRequest,
    ) -> Result<ws::DescribeWorkerDeploymentVersionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (name, build_id) = match &r.deployment_version {
            Some(v) if !v.deployment_name.is_empty() => {
                (v.deployment_name.clone(), v.build_id.clone())
            }
            _ => parse_version(&r.version)
                .map_err(invalid)?
                .ok_or_else(|| invalid("the unversioned workers are not a version to describe"))?,
        };
        let missing = || {
            Status::not_found(format!(
                "Worker Deployment Version {name}.{build_id} not found"
            ))
        };
        let record = self
            .deployments
            .get(&namespace.id, &name)
            .ok_or_else(missing)?;
        let version = record.versions.get(&build_id).ok_or_else(missing)?;
        let queues: Vec<_> = version.task_queues.iter().collect();
        let ramp = record
            .ramp
            .as_ref()
            .filter(|r| r.build_id.as_deref() == Some(&build_id));
        Ok(ws::DescribeWorkerDeploymentVersionResponse {
            worker_deployment_version_info: Some(dep::WorkerDeploymentVersionInfo {
                version: version_string(&name, Some(&build_id)),
                status: status(&record, &build_id, version) as i32,
                deployment_version: deployment_version(&name, Some(&build_id)),
                deployment_name: name.clone(),
                create_time: time(version.create_time_ns),
                routing_changed_time: time(version.routing_update_ns),
                current_since_time: version.current_since_ns.and_then(time),
                ramping_since_time: version.ramping_since_ns.and_then(time),
                first_activation_time: version.first_activation_ns.and_then(time),
                last_current_time: version.last_current_ns.and_then(time),
                last_deactivation_time: version.last_deactivation_ns.and_then(time),
                ramp_percentage: ramp.map_or(0.0, |r| r.percentage),
                task_queue_infos: queues
                    .iter()
                    .map(
                        |(name, kind)| dep::worker_deployment_version_info::VersionTaskQueueInfo {
                            name: name.clone(),
                            r#type: *kind,
                        },
                    )
                    .collect(),
                ..Default::default()
            }),
            version_task_queues: queues
                .iter()
                .map(|(name, kind)| {
                    ws::describe_worker_deployment_version_response::VersionTaskQueue {
                        name: name.clone(),
                        r#type: *kind,
                        ..Default::default()
                    }
                })
                .collect(),
        })
    }

    #[allow(deprecated)]
    pub(super) async fn set_current_version_rpc(
        &self,
        r: ws::SetWorkerDeploymentCurrentVersionRequest,
    ) -> Result<ws::SetWorkerDeploymentCurrentVersionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        let target = requested_build(&r.deployment_name, &r.build_id, &r.version)?;
        let now = self.now();
        let mut previous = None;
        let record = self
            .deployments
            .change(&namespace.id, &r.deployment_name, false, |record| {
                check_token(record, &r.conflict_token)?;
                require_version(record, target.as_deref())?;
                previous = Some(record.current.clone());
                if record.current == target {
                    return Ok(());
                }
                let old = record.current.take();
                deactivate(record, old.as_deref(), true, now);
                activate(record, target.as_deref(), true, now);
                if record
                    .ramp
                    .as_ref()
                    .is_some_and(|ramp| ramp.build_id == target)
                {
                    record.ramp = None;
                }
                record.current = target.clone();
                record.current_changed_ns = now;
                record.revision += 1;
                record.last_modifier_identity = r.identity.clone();
                Ok(())
            })
            .await?;
        let previous = previous.flatten();
        Ok(ws::SetWorkerDeploymentCurrentVersionResponse {
            conflict_token: record.conflict_token(),
            previous_version: version_string(&record.name, previous.as_deref()),
            previous_deployment_version: deployment_version(&record.name, previous.as_deref()),
        })
    }

    #[allow(deprecated)]
    pub(super) async fn set_ramping_version_rpc(
        &self,
        r: ws::SetWorkerDeploymentRampingVersionRequest,
    ) -> Result<ws::SetWorkerDeploymentRampingVersionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        if !(0.0..=100.0).contains(&r.percentage) {
            return Err(invalid(format!(
                "ramping percentage {} is not between 0 and 100",
                r.percentage
            )));
        }
        // Empty: no ramping version; the unversioned workers are named by the version string.
        let unset = r.build_id.is_empty() && r.version.is_empty();
        let target = requested_build(&r.deployment_name, &r.build_id, &r.version)?;
        let now = self.now();
        let mut previous: Option<Ramp> = None;
        let record = self
            .deployments
            .change(&namespace.id, &r.deployment_name, false, |record| {
                check_token(record, &r.conflict_token)?;
                require_version(record, target.as_deref())?;
                previous = record.ramp.clone();
                if !unset && record.current == target {
                    return Err(DeploymentError::FailedPrecondition(format!(
                        "{} is the current version; a version cannot ramp and be current",
                        version_string(&record.name, target.as_deref())
                    )));
                }
                match record.ramp.as_mut() {
                    Some(ramp) if !unset && ramp.build_id == target => {
                        if ramp.percentage == r.percentage {
                            return Ok(());
                        }
                        ramp.percentage = r.percentage;
                        ramp.percentage_changed_ns = now;
                    }
                    _ => {
                        let old = record.ramp.take();
                        deactivate(
                            record,
                            old.as_ref().and_then(|o| o.build_id.as_deref()),
                            false,
                            now,
                        );
                        if !unset {
                            activate(record, target.as_deref(), false, now);
                            record.ramp = Some(Ramp {
                                build_id: target.clone(),
                                percentage: r.percentage,
                                since_ns: now,
                                percentage_changed_ns: now,
                            });
                        } else if old.is_none() {
                            return Ok(());
                        }
                    }
                }
                record.revision += 1;
                record.last_modifier_identity = r.identity.clone();
                Ok(())
            })
            .await?;
        Ok(ws::SetWorkerDeploymentRampingVersionResponse {
            conflict_token: record.conflict_token(),
            previous_version: previous
                .as_ref()
                .map(|p| version_string(&record.name, p.build_id.as_deref()))
                .unwrap_or_default(),
            previous_deployment_version: previous
                .as_ref()
                .and_then(|p| deployment_version(&record.name, p.build_id.as_deref())),
            previous_percentage: previous.map_or(0.0, |p| p.percentage),
        })
    }
}
