//! The Worker Deployment RPCs (worker versioning): describe and list deployments and their
//! versions, and set the current and ramping versions. The records and the routing they drive
//! are [`crate::deployments`]; these RPCs run on the node that runs matching (tasks queued under
//! an older routing are dropped there when reached, and offered again by their shard leaders).

use prost_wkt_types::Timestamp;
use temporalio_protos::temporal::api::deployment::v1 as dep;
use temporalio_protos::temporal::api::enums::v1::{
    RoutingConfigUpdateState, VersionDrainageStatus, WorkerDeploymentVersionStatus,
};
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;
use temporalio_protos::temporal::api::common::v1 as common;

use super::errors::invalid;
use super::{check_id, offset_page, Frontend};
use crate::deployments::{
    add_version, lane_of, parse_version, DeploymentError, DeploymentRecord, Ramp, VersionRecord,
    UNVERSIONED,
};
use crate::engine::proto;
use crate::namespaces::NamespaceRecord;

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
    drainage: Option<&Drainage>,
) -> WorkerDeploymentVersionStatus {
    if record.current.as_deref() == Some(build_id) {
        WorkerDeploymentVersionStatus::Current
    } else if record
        .ramp
        .as_ref()
        .is_some_and(|r| r.build_id.as_deref() == Some(build_id))
    {
        WorkerDeploymentVersionStatus::Ramping
    } else if let Some(drainage) = drainage {
        if drainage.drained {
            WorkerDeploymentVersionStatus::Drained
        } else {
            WorkerDeploymentVersionStatus::Draining
        }
    } else if version.task_queues.is_empty() {
        WorkerDeploymentVersionStatus::Created
    } else {
        WorkerDeploymentVersionStatus::Inactive
    }
}

/// Where a version that stopped being current or ramping stands.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Drainage {
    /// No open workflow is pinned to it and the grace period is over.
    drained: bool,
    /// When the status last changed.
    changed_ns: i64,
    /// When it was worked out.
    checked_ns: i64,
}

impl Drainage {
    fn info(&self) -> dep::VersionDrainageInfo {
        dep::VersionDrainageInfo {
            status: self.status() as i32,
            last_changed_time: time(self.changed_ns),
            last_checked_time: time(self.checked_ns),
        }
    }

    fn status(&self) -> VersionDrainageStatus {
        if self.drained {
            VersionDrainageStatus::Drained
        } else {
            VersionDrainageStatus::Draining
        }
    }
}

/// What the runs pinned to one version are doing.
#[derive(Clone, Copy, Debug, Default)]
struct PinnedRuns {
    /// Some run pinned to it is open.
    open: bool,
    /// The latest close of a run pinned to it.
    last_close_ns: i64,
}

/// Drainage of each version of a deployment that is neither current nor ramping and has been
/// either, by build id, given what is pinned to each (`pinned`); DRAINING for `grace_ns` after
/// it stopped being routed to, and while a pinned run is open.
fn drainage_of(
    record: &DeploymentRecord,
    pinned: &HashMap<(String, String), PinnedRuns>,
    grace_ns: i64,
    now_ns: i64,
) -> BTreeMap<String, Drainage> {
    let ramping = record.ramp.as_ref().and_then(|r| r.build_id.as_deref());
    record
        .versions
        .iter()
        .filter(|(b, _)| record.current.as_deref() != Some(b.as_str()) && ramping != Some(b))
        .filter_map(|(build_id, version)| {
            let since = version.last_deactivation_ns?;
            let runs = pinned
                .get(&(record.name.clone(), build_id.clone()))
                .copied()
                .unwrap_or_default();
            let grace_over = since.saturating_add(grace_ns);
            let drained = !runs.open && now_ns >= grace_over;
            let drainage = Drainage {
                drained,
                changed_ns: if drained {
                    grace_over.max(runs.last_close_ns)
                } else {
                    since
                },
                checked_ns: now_ns,
            };
            Some((build_id.clone(), drainage))
        })
        .collect()
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
    drainage: Option<&Drainage>,
) -> dep::worker_deployment_info::WorkerDeploymentVersionSummary {
    dep::worker_deployment_info::WorkerDeploymentVersionSummary {
        version: version_string(&record.name, Some(build_id)),
        status: status(record, build_id, version, drainage) as i32,
        drainage_status: drainage.map_or(0, |d| d.status() as i32),
        drainage_info: drainage.map(Drainage::info),
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

fn deployment_info(
    record: &DeploymentRecord,
    drainage: &BTreeMap<String, Drainage>,
) -> dep::WorkerDeploymentInfo {
    dep::WorkerDeploymentInfo {
        name: record.name.clone(),
        version_summaries: record
            .versions
            .iter()
            .map(|(build_id, version)| {
                version_summary(record, build_id, version, drainage.get(build_id))
            })
            .collect(),
        manager_identity: record.manager_identity.clone(),
        create_time: time(record.create_time_ns),
        routing_config: Some(routing_config(record)),
        last_modifier_identity: record.last_modifier_identity.clone(),
        routing_config_update_state: RoutingConfigUpdateState::Completed as i32,
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

/// Checks that version `build_id` (None: unversioned) is in `record`; with `allow_no_pollers`
/// an unknown one is added (Temporal's `allow_no_pollers`: routing to a version before its
/// workers poll).
fn require_version(
    record: &mut DeploymentRecord,
    build_id: Option<&str>,
    allow_no_pollers: bool,
    now_ns: i64,
) -> Result<(), DeploymentError> {
    match build_id {
        Some(b) if !record.versions.contains_key(b) => {
            if allow_no_pollers {
                return add_version(record, b, None, now_ns);
            }
            Err(DeploymentError::NotFound(format!(
                "build ID '{b}' not found in Worker Deployment '{}'",
                record.name
            )))
        }
        _ => Ok(()),
    }
}

/// Refuses a change by `identity` when the deployment has another manager.
fn check_manager(record: &DeploymentRecord, identity: &str) -> Result<(), DeploymentError> {
    if !record.manager_identity.is_empty() && record.manager_identity != identity {
        return Err(DeploymentError::FailedPrecondition(format!(
            "ManagerIdentity '{}' is set and does not match user identity '{identity}'; to \
             proceed, set your own identity as the ManagerIdentity, remove the ManagerIdentity, \
             or wait for the other client to do so",
            record.manager_identity
        )));
    }
    Ok(())
}

/// Temporal's name of a version in refusals: `deployment:build_id`.
fn quoted_version(deployment: &str, build_id: &str) -> String {
    format!("'{deployment}:{build_id}'")
}

/// Refuses deleting a version that is current or ramping.
fn check_not_routed(record: &DeploymentRecord, build_id: &str) -> Result<(), DeploymentError> {
    let ramping = record.ramp.as_ref().and_then(|r| r.build_id.as_deref());
    if record.current.as_deref() == Some(build_id) || ramping == Some(build_id) {
        return Err(DeploymentError::FailedPrecondition(format!(
            "version {} cannot be deleted since it is current or ramping",
            quoted_version(&record.name, build_id)
        )));
    }
    Ok(())
}

/// The version a request names: its `deployment_version`, else its (deprecated) version string.
fn named_version(
    deployment_version: Option<&dep::WorkerDeploymentVersion>,
    version: &str,
) -> Result<(String, String), Status> {
    match deployment_version {
        Some(v) if !v.deployment_name.is_empty() => {
            check_id("DeploymentName", &v.deployment_name, true)?;
            check_id("BuildId", &v.build_id, true)?;
            Ok((v.deployment_name.clone(), v.build_id.clone()))
        }
        _ => parse_version(version)
            .map_err(invalid)?
            .ok_or_else(|| invalid("the unversioned workers are not a version")),
    }
}

fn version_not_found(name: &str, build_id: &str) -> Status {
    Status::not_found(format!(
        "Worker Deployment Version {name}.{build_id} not found"
    ))
}

/// Largest encoded metadata of one version (Keel's bound; it lives in the deployment's record).
const MAX_METADATA_BYTES: usize = 64 << 10;

fn metadata_proto(version: &VersionRecord) -> dep::VersionMetadata {
    dep::VersionMetadata {
        entries: version
            .metadata
            .iter()
            .filter_map(|(key, bytes)| {
                common::Payload::decode(bytes.as_slice())
                    .ok()
                    .map(|payload| (key.clone(), payload))
            })
            .collect(),
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
    /// What the runs pinned to each version of `records` are doing: one scan of the namespace,
    /// skipped when no version of theirs needs it (`needed`).
    async fn pinned_runs(
        &self,
        namespace: &NamespaceRecord,
        records: &[&DeploymentRecord],
        needed: bool,
    ) -> Result<HashMap<(String, String), PinnedRuns>, Status> {
        let mut pinned: HashMap<(String, String), PinnedRuns> = HashMap::new();
        if !needed {
            return Ok(pinned);
        }
        let names: HashSet<&str> = records.iter().map(|r| r.name.as_str()).collect();
        self.scan_runs(namespace, |state| {
            let version = state.versioning.as_ref().and_then(|v| v.pinned());
            if let Some((deployment, build_id)) = version.filter(|(d, _)| names.contains(d)) {
                let runs = pinned
                    .entry((deployment.to_string(), build_id.to_string()))
                    .or_default();
                if state.is_running() {
                    runs.open = true;
                } else if let Some(closed) = state.close_time_ns {
                    runs.last_close_ns = runs.last_close_ns.max(closed);
                }
            }
            false
        })
        .await?;
        Ok(pinned)
    }

    /// The drainage of every version of `records` that has one (see [`drainage_of`]).
    async fn drainage(
        &self,
        namespace: &NamespaceRecord,
        records: &[&DeploymentRecord],
    ) -> Result<HashMap<String, BTreeMap<String, Drainage>>, Status> {
        let draining = |r: &&DeploymentRecord| {
            r.versions
                .iter()
                .any(|(b, v)| v.last_deactivation_ns.is_some() && check_not_routed(r, b).is_ok())
        };
        let pinned = self
            .pinned_runs(namespace, records, records.iter().any(draining))
            .await?;
        Ok(records
            .iter()
            .map(|r| (r.name.clone(), self.drainage_from(r, &pinned)))
            .collect())
    }

    /// The version of `record` that may go to make room for a new one: the oldest that is
    /// neither current nor ramping, is not draining and has had no pollers lately (Temporal
    /// deletes such a version when a deployment is full).
    pub(super) async fn evictable_version(
        &self,
        namespace: &NamespaceRecord,
        record: &DeploymentRecord,
    ) -> Result<Option<String>, Status> {
        let pinned = self.pinned_runs(namespace, &[record], true).await?;
        let drainage = self.drainage_from(record, &pinned);
        let since = self.pollers_since();
        Ok(record
            .versions
            .iter()
            .filter(|(b, _)| check_not_routed(record, b).is_ok())
            .filter(|(b, _)| match drainage.get(*b) {
                Some(d) => d.drained,
                None => !pinned
                    .get(&(record.name.clone(), (*b).clone()))
                    .is_some_and(|runs| runs.open),
            })
            .filter(|(b, _)| {
                !self
                    .matching
                    .lane_polled(&namespace.id, &lane_of(&record.name, b), since)
            })
            .min_by_key(|(_, v)| v.create_time_ns)
            .map(|(b, _)| b.clone()))
    }

    fn drainage_from(
        &self,
        record: &DeploymentRecord,
        pinned: &HashMap<(String, String), PinnedRuns>,
    ) -> BTreeMap<String, Drainage> {
        let grace_ns = self.limits.drainage_grace_ms.saturating_mul(1_000_000);
        drainage_of(record, pinned, grace_ns, self.now())
    }

    fn deployment(
        &self,
        namespace: &NamespaceRecord,
        name: &str,
    ) -> Result<DeploymentRecord, Status> {
        self.deployments
            .get(&namespace.id, name)
            .ok_or_else(|| Status::not_found(crate::deployments::not_found(name)))
    }

    pub(super) async fn describe_worker_deployment_rpc(
        &self,
        r: ws::DescribeWorkerDeploymentRequest,
    ) -> Result<ws::DescribeWorkerDeploymentResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        let record = self.deployment(&namespace, &r.deployment_name)?;
        let drainage = self.drainage(&namespace, &[&record]).await?;
        Ok(ws::DescribeWorkerDeploymentResponse {
            conflict_token: record.conflict_token(),
            worker_deployment_info: Some(deployment_info(
                &record,
                drainage.get(&record.name).unwrap_or(&BTreeMap::new()),
            )),
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
        let drainage = self
            .drainage(&namespace, &page.iter().collect::<Vec<_>>())
            .await?;
        let none = BTreeMap::new();
        Ok(ws::ListWorkerDeploymentsResponse {
            next_page_token,
            worker_deployments: page
                .iter()
                .map(|record| {
                    let drainage = drainage.get(&record.name).unwrap_or(&none);
                    let summary = |build_id: Option<&str>| {
                        build_id.and_then(|b| {
                            record
                                .versions
                                .get(b)
                                .map(|v| version_summary(record, b, v, drainage.get(b)))
                        })
                    };
                    ws::list_worker_deployments_response::WorkerDeploymentSummary {
                        name: record.name.clone(),
                        create_time: time(record.create_time_ns),
                        routing_config: Some(routing_config(record)),
                        latest_version_summary: summary(
                            record
                                .versions
                                .iter()
                                .max_by_key(|(_, v)| v.create_time_ns)
                                .map(|(b, _)| b.as_str()),
                        ),
                        current_version_summary: summary(record.current.as_deref()),
                        ramping_version_summary: summary(
                            record
                                .ramp
                                .as_ref()
                                .and_then(|ramp| ramp.build_id.as_deref()),
                        ),
                    }
                })
                .collect(),
        })
    }

    #[allow(deprecated)]
    pub(super) async fn describe_worker_deployment_version_rpc(
        &self,
        r: ws::DescribeWorkerDeploymentVersionRequest,
    ) -> Result<ws::DescribeWorkerDeploymentVersionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (name, build_id) = named_version(r.deployment_version.as_ref(), &r.version)?;
        let record = self
            .deployments
            .get(&namespace.id, &name)
            .ok_or_else(|| version_not_found(&name, &build_id))?;
        let version = record
            .versions
            .get(&build_id)
            .ok_or_else(|| version_not_found(&name, &build_id))?;
        let drainage = self.drainage(&namespace, &[&record]).await?;
        let drainage = drainage.get(&name).and_then(|d| d.get(&build_id));
        let queues: Vec<_> = version.task_queues.iter().collect();
        let ramp = record
            .ramp
            .as_ref()
            .filter(|r| r.build_id.as_deref() == Some(&build_id));
        Ok(ws::DescribeWorkerDeploymentVersionResponse {
            worker_deployment_version_info: Some(dep::WorkerDeploymentVersionInfo {
                version: version_string(&name, Some(&build_id)),
                status: status(&record, &build_id, version, drainage) as i32,
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
                drainage_info: drainage.map(Drainage::info),
                metadata: (!version.metadata.is_empty()).then(|| metadata_proto(version)),
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
                require_version(record, target.as_deref(), r.allow_no_pollers, now)?;
                check_manager(record, &r.identity)?;
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
                require_version(record, target.as_deref(), r.allow_no_pollers, now)?;
                check_manager(record, &r.identity)?;
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

    pub(super) async fn create_worker_deployment_rpc(
        &self,
        r: ws::CreateWorkerDeploymentRequest,
    ) -> Result<ws::CreateWorkerDeploymentResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        check_id("RequestId", &r.request_id, false)?;
        let now = self.now();
        let record = self
            .deployments
            .change(&namespace.id, &r.deployment_name, true, |record| {
                if record.create_time_ns != 0 {
                    // A retry of the same create succeeds, as in Temporal.
                    if !r.request_id.is_empty() && record.create_request_id == r.request_id {
                        return Ok(());
                    }
                    return Err(DeploymentError::AlreadyExists(format!(
                        "Worker Deployment with name {:?} already exists",
                        r.deployment_name
                    )));
                }
                record.create_time_ns = now;
                record.create_request_id = r.request_id.clone();
                record.last_modifier_identity = r.identity.clone();
                Ok(())
            })
            .await?;
        Ok(ws::CreateWorkerDeploymentResponse {
            conflict_token: record.conflict_token(),
        })
    }

    pub(super) async fn create_worker_deployment_version_rpc(
        &self,
        r: ws::CreateWorkerDeploymentVersionRequest,
    ) -> Result<ws::CreateWorkerDeploymentVersionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (name, build_id) = named_version(r.deployment_version.as_ref(), "")?;
        if r.compute_config.is_some() {
            return Err(Status::unimplemented(
                "Keel does not start workers through compute providers; create the version \
                 without a compute config and run its workers yourself",
            ));
        }
        let now = self.now();
        self.deployments
            .change(&namespace.id, &name, false, |record| {
                if record.versions.contains_key(&build_id) {
                    return Err(DeploymentError::AlreadyExists(format!(
                        "version {} already exists",
                        quoted_version(&name, &build_id)
                    )));
                }
                add_version(record, &build_id, None, now)?;
                record.last_modifier_identity = r.identity.clone();
                Ok(())
            })
            .await?;
        Ok(ws::CreateWorkerDeploymentVersionResponse {})
    }

    pub(super) async fn delete_worker_deployment_rpc(
        &self,
        r: ws::DeleteWorkerDeploymentRequest,
    ) -> Result<ws::DeleteWorkerDeploymentResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        // Deleting a deployment that is not there succeeds, as in Temporal.
        self.deployments
            .remove(&namespace.id, &r.deployment_name, |record| {
                if record.versions.is_empty() {
                    Ok(())
                } else {
                    Err(DeploymentError::FailedPrecondition(
                        "deployment has versions, can't be deleted".into(),
                    ))
                }
            })
            .await?;
        Ok(ws::DeleteWorkerDeploymentResponse {})
    }

    #[allow(deprecated)]
    pub(super) async fn delete_worker_deployment_version_rpc(
        &self,
        r: ws::DeleteWorkerDeploymentVersionRequest,
    ) -> Result<ws::DeleteWorkerDeploymentVersionResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (name, build_id) = named_version(r.deployment_version.as_ref(), &r.version)?;
        let record = self
            .deployments
            .get(&namespace.id, &name)
            .filter(|d| d.versions.contains_key(&build_id))
            .ok_or_else(|| version_not_found(&name, &build_id))?;
        check_not_routed(&record, &build_id)?;
        check_manager(&record, &r.identity)?;
        let refuse = |why: &str| {
            Status::failed_precondition(format!(
                "version {} cannot be deleted since it {why}",
                quoted_version(&name, &build_id)
            ))
        };
        if !r.skip_drainage {
            let drainage = self.drainage(&namespace, &[&record]).await?;
            if drainage
                .get(&name)
                .and_then(|d| d.get(&build_id))
                .is_some_and(|d| !d.drained)
            {
                return Err(refuse("is draining"));
            }
        }
        if self.matching.lane_polled(
            &namespace.id,
            &lane_of(&name, &build_id),
            self.pollers_since(),
        ) {
            return Err(refuse("has active pollers"));
        }
        self.deployments
            .change(&namespace.id, &name, false, |record| {
                check_not_routed(record, &build_id)?;
                check_manager(record, &r.identity)?;
                if record.versions.remove(&build_id).is_some() {
                    record.last_modifier_identity = r.identity.clone();
                }
                Ok(())
            })
            .await?;
        Ok(ws::DeleteWorkerDeploymentVersionResponse {})
    }

    #[allow(deprecated)]
    pub(super) async fn update_version_metadata_rpc(
        &self,
        r: ws::UpdateWorkerDeploymentVersionMetadataRequest,
    ) -> Result<ws::UpdateWorkerDeploymentVersionMetadataResponse, Status> {
        let namespace = self.namespace(&r.namespace).await?;
        let (name, build_id) = named_version(r.deployment_version.as_ref(), &r.version)?;
        let mut metadata = None;
        self.deployments
            .change(&namespace.id, &name, false, |record| {
                let version = record.versions.get_mut(&build_id).ok_or_else(|| {
                    DeploymentError::NotFound(format!(
                        "Worker Deployment Version {name}.{build_id} not found"
                    ))
                })?;
                for (key, payload) in &r.upsert_entries {
                    version
                        .metadata
                        .insert(key.clone(), payload.encode_to_vec());
                }
                for key in &r.remove_entries {
                    version.metadata.remove(key);
                }
                let size: usize = version
                    .metadata
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
                if size > MAX_METADATA_BYTES {
                    return Err(DeploymentError::InvalidArgument(format!(
                        "the version's metadata would be {size} bytes; at most \
                         {MAX_METADATA_BYTES} are allowed"
                    )));
                }
                metadata = Some(metadata_proto(version));
                Ok(())
            })
            .await?;
        Ok(ws::UpdateWorkerDeploymentVersionMetadataResponse { metadata })
    }

    pub(super) async fn set_manager_rpc(
        &self,
        r: ws::SetWorkerDeploymentManagerRequest,
    ) -> Result<ws::SetWorkerDeploymentManagerResponse, Status> {
        use ws::set_worker_deployment_manager_request::NewManagerIdentity;
        let namespace = self.namespace(&r.namespace).await?;
        check_id("DeploymentName", &r.deployment_name, true)?;
        if r.identity.is_empty() {
            return Err(invalid("Identity is required"));
        }
        let manager = match &r.new_manager_identity {
            Some(NewManagerIdentity::ManagerIdentity(manager)) => manager.clone(),
            Some(NewManagerIdentity::Self_(true)) => r.identity.clone(),
            _ => {
                return Err(invalid(
                    "either manager_identity or self must be set to choose the new manager",
                ))
            }
        };
        let mut previous = String::new();
        let record = self
            .deployments
            .change(&namespace.id, &r.deployment_name, false, |record| {
                previous = record.manager_identity.clone();
                if record.manager_identity == manager && record.last_modifier_identity == r.identity
                {
                    return Ok(());
                }
                check_token(record, &r.conflict_token)?;
                record.manager_identity = manager.clone();
                record.last_modifier_identity = r.identity.clone();
                record.revision += 1;
                Ok(())
            })
            .await?;
        #[allow(deprecated)]
        Ok(ws::SetWorkerDeploymentManagerResponse {
            conflict_token: record.conflict_token(),
            previous_manager_identity: previous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn record() -> DeploymentRecord {
        let mut record = DeploymentRecord {
            name: "dep".into(),
            current: Some("b3".into()),
            ..DeploymentRecord::default()
        };
        for (build_id, deactivated) in [
            ("b1", Some(10 * SEC)),
            ("b2", Some(10 * SEC)),
            ("b3", Some(SEC)),
            ("b4", None),
        ] {
            add_version(&mut record, build_id, None, 0).expect("room");
            record
                .versions
                .get_mut(build_id)
                .expect("added")
                .last_deactivation_ns = deactivated;
        }
        record
    }

    #[test]
    fn a_version_drains_after_the_grace_period_once_no_pinned_run_is_open() {
        let record = record();
        let mut pinned = HashMap::new();
        pinned.insert(
            ("dep".to_string(), "b1".to_string()),
            PinnedRuns {
                open: true,
                last_close_ns: 0,
            },
        );
        pinned.insert(
            ("dep".to_string(), "b2".to_string()),
            PinnedRuns {
                open: false,
                last_close_ns: 40 * SEC,
            },
        );
        let grace = 5 * SEC;

        // Within the grace period both are draining, since they stopped being routed to.
        let early = drainage_of(&record, &pinned, grace, 12 * SEC);
        assert_eq!(
            early["b2"],
            Drainage {
                drained: false,
                changed_ns: 10 * SEC,
                checked_ns: 12 * SEC
            }
        );
        // Current (b3) and never routed to (b4) have no drainage.
        assert_eq!(early.keys().collect::<Vec<_>>(), ["b1", "b2"]);

        let later = drainage_of(&record, &pinned, grace, 60 * SEC);
        assert!(!later["b1"].drained, "b1 still has an open pinned run");
        // Drained since its last pinned run closed (after the grace period ended).
        assert_eq!(
            later["b2"],
            Drainage {
                drained: true,
                changed_ns: 40 * SEC,
                checked_ns: 60 * SEC
            }
        );
        assert_eq!(
            status(&record, "b2", &record.versions["b2"], later.get("b2")),
            WorkerDeploymentVersionStatus::Drained
        );
        assert_eq!(
            status(&record, "b4", &record.versions["b4"], None),
            WorkerDeploymentVersionStatus::Created
        );
    }

    #[test]
    fn deleting_is_refused_for_routed_versions_and_changes_by_others_than_the_manager() {
        let mut record = record();
        assert!(check_not_routed(&record, "b3").is_err());
        assert!(check_not_routed(&record, "b1").is_ok());
        assert!(check_manager(&record, "anyone").is_ok());
        record.manager_identity = "deployer".into();
        assert!(check_manager(&record, "deployer").is_ok());
        let refused = check_manager(&record, "anyone");
        assert!(
            matches!(&refused, Err(DeploymentError::FailedPrecondition(m)) if m.starts_with("ManagerIdentity 'deployer' is set")),
            "{refused:?}"
        );
        assert!(require_version(&mut record, Some("b9"), false, 0).is_err());
        require_version(&mut record, Some("b9"), true, 0).expect("allow_no_pollers adds it");
        assert!(record.versions.contains_key("b9"));
    }
}
