//! Worker Deployments (Temporal's worker versioning): which build ids of a deployment poll which
//! task queues, and where workflow and activity tasks go. Records live in the metadata group
//! (key `d|ns|name`), written through its leader like namespaces, cached on every node.
//!
//! Routing ([`Deployments::lane`]): matching keeps one lane per version of a task queue, and
//! a poller of a versioned worker polls only its version's lane. A run pinned to a version
//! (its workflow said PINNED, or a pinned override) goes to that version while it has the
//! queue; any other run goes to the current version of the deployment that owns the queue, or
//! to the ramping version for the given share of workflow ids; unversioned (`""`) when neither
//! applies.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::engine::state::RunVersioning;
use crate::engine::TaskKind;
use crate::namespaces::{decode, encode, NamespaceError, Namespaces};
use crate::shard::keys;

/// Temporal's name of "no version" in routing configs.
pub const UNVERSIONED: &str = "__unversioned__";

/// Why a Worker Deployment request failed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// No such deployment or version.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the deployment as it is (a stale conflict token).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The metadata group could not take the write.
    #[error(transparent)]
    Metadata(#[from] NamespaceError),
}

/// One build id of a deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// First seen polling, ns since the epoch.
    pub create_time_ns: i64,
    /// Task queues its pollers polled: (name, `TaskQueueType`).
    pub task_queues: BTreeSet<(String, i32)>,
    /// Since when it is current.
    pub current_since_ns: Option<i64>,
    /// Since when it is ramping.
    pub ramping_since_ns: Option<i64>,
    /// Last change of its routing.
    pub routing_update_ns: i64,
    /// First time it became current or ramping.
    pub first_activation_ns: Option<i64>,
    /// Last time it became current.
    pub last_current_ns: Option<i64>,
    /// Last time it stopped being current or ramping.
    pub last_deactivation_ns: Option<i64>,
}

/// The ramping version of a deployment (`build_id` None: unversioned).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ramp {
    /// Build id, or None for unversioned workers.
    pub build_id: Option<String>,
    /// Share of workflows, 0 to 100.
    pub percentage: f32,
    /// Since when this version ramps.
    pub since_ns: i64,
    /// Last change of the percentage.
    pub percentage_changed_ns: i64,
}

/// One Worker Deployment of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Deployment name.
    pub name: String,
    /// First seen, ns since the epoch.
    pub create_time_ns: i64,
    /// Versions by build id.
    pub versions: BTreeMap<String, VersionRecord>,
    /// Current version's build id (None: unversioned workers).
    pub current: Option<String>,
    /// Last change of the current version.
    pub current_changed_ns: i64,
    /// Ramping version, if any.
    pub ramp: Option<Ramp>,
    /// Changes of the routing so far (the conflict token).
    pub revision: i64,
    /// Identity of the last caller that changed the routing.
    pub last_modifier_identity: String,
}

impl DeploymentRecord {
    /// The conflict token of this routing revision.
    pub fn conflict_token(&self) -> Vec<u8> {
        self.revision.to_be_bytes().to_vec()
    }

    /// Whether version `build_id` (None: unversioned) polls `queue` for `kind` tasks.
    fn serves(&self, build_id: Option<&str>, queue: &str, kind: TaskKind) -> bool {
        build_id.is_some_and(|build_id| {
            self.versions.get(build_id).is_some_and(|v| {
                v.task_queues
                    .contains(&(queue.to_string(), queue_type(kind)))
            })
        })
    }
}

/// `TaskQueueType` of a task kind.
pub fn queue_type(kind: TaskKind) -> i32 {
    use temporalio_protos::temporal::api::enums::v1::TaskQueueType;
    match kind {
        TaskKind::Workflow => TaskQueueType::Workflow as i32,
        TaskKind::Activity => TaskQueueType::Activity as i32,
    }
}

/// The matching lane of a version: `deployment.build_id`.
pub fn lane_of(deployment: &str, build_id: &str) -> String {
    format!("{deployment}.{build_id}")
}

/// Splits Temporal's version string (`deployment.build_id`, or [`UNVERSIONED`]): None for
/// unversioned.
pub fn parse_version(version: &str) -> Result<Option<(String, String)>, String> {
    if version == UNVERSIONED {
        return Ok(None);
    }
    match version.split_once('.') {
        Some((deployment, build_id)) if !deployment.is_empty() && !build_id.is_empty() => {
            Ok(Some((deployment.to_string(), build_id.to_string())))
        }
        _ => Err(format!(
            "invalid version {version:?}: expected deployment_name.build_id or {UNVERSIONED}"
        )),
    }
}

/// Where a share of `percentage` percent of workflow ids falls: a stable hash of the id.
fn in_ramp(workflow_id: &str, percentage: f32) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in workflow_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash % 10_000) as f32) < percentage * 100.0
}

#[derive(Default)]
struct Cache {
    /// (namespace id, deployment name) -> record.
    records: BTreeMap<(String, String), DeploymentRecord>,
    /// Metadata group applied index the cache reflects.
    applied: u64,
    /// Hash of everything routing depends on.
    routing: u64,
}

/// The Worker Deployments of every namespace, as this node knows them.
pub struct Deployments {
    namespaces: Arc<Namespaces>,
    cache: RwLock<Cache>,
}

impl Deployments {
    /// Loads the records applied on this node.
    pub fn load(namespaces: Arc<Namespaces>) -> Result<Deployments, NamespaceError> {
        let deployments = Deployments {
            namespaces,
            cache: RwLock::new(Cache::default()),
        };
        deployments.reload()?;
        Ok(deployments)
    }

    fn reload(&self) -> Result<(), NamespaceError> {
        let applied = self.namespaces.applied_index();
        let (start, end) = keys::deployment_range();
        let mut records = BTreeMap::new();
        self.namespaces.scan_metadata(&start, &end, |key, value| {
            if let (Some((namespace_id, _)), Some(record)) = (
                keys::parse_deployment(key),
                decode::<DeploymentRecord>(value),
            ) {
                records.insert((namespace_id, record.name.clone()), record);
            }
        })?;
        let routing = routing_hash(&records);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Cache {
            records,
            applied,
            routing,
        };
        Ok(())
    }

    /// Re-reads the records if the metadata group applied anything since they were read;
    /// answers the hash of the routing (it changes when any routing does).
    pub fn refresh(&self) -> u64 {
        let stale = self.cache.read().unwrap_or_else(|e| e.into_inner()).applied
            != self.namespaces.applied_index();
        if stale {
            if let Err(error) = self.reload() {
                tracing::warn!(%error, "worker deployments could not be re-read");
            }
        }
        self.cache.read().unwrap_or_else(|e| e.into_inner()).routing
    }

    /// The hash of the routing as last read (no re-read: the shard writers refresh on every
    /// change the metadata group applies, so this stays current without a check per task).
    pub fn routing(&self) -> u64 {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).routing
    }

    /// The deployment `name` of namespace `namespace_id`.
    pub fn get(&self, namespace_id: &str, name: &str) -> Option<DeploymentRecord> {
        self.refresh();
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .get(&(namespace_id.to_string(), name.to_string()))
            .cloned()
    }

    /// The task queues the version `build_id` of deployment `name` has polled for workflow
    /// tasks (none if it is unknown).
    pub fn workflow_queues(&self, namespace_id: &str, name: &str, build_id: &str) -> Vec<String> {
        let workflow = queue_type(TaskKind::Workflow);
        self.get(namespace_id, name)
            .and_then(|d| d.versions.get(build_id).cloned())
            .map(|v| {
                v.task_queues
                    .into_iter()
                    .filter(|(_, kind)| *kind == workflow)
                    .map(|(queue, _)| queue)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every deployment of namespace `namespace_id`, by name.
    pub fn list(&self, namespace_id: &str) -> Vec<DeploymentRecord> {
        self.refresh();
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .iter()
            .filter(|((ns, _), _)| ns == namespace_id)
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// The matching lane a task of run `workflow_id` (its versioning `versioning`) goes to on
    /// `queue` (see the module doc), and the routing hash it was chosen under.
    pub fn lane(
        &self,
        namespace_id: &str,
        queue: &str,
        kind: TaskKind,
        versioning: Option<&RunVersioning>,
        workflow_id: &str,
    ) -> (String, u64) {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        (
            Self::lane_in(&cache, namespace_id, queue, kind, versioning, workflow_id),
            cache.routing,
        )
    }

    /// True when a run pinned to a version (`versioning`) would, unpinned, go to another
    /// version of a deployment: Temporal tells the workflow, which may continue as new onto it.
    pub fn target_changed(
        &self,
        namespace_id: &str,
        queue: &str,
        versioning: Option<&RunVersioning>,
        workflow_id: &str,
    ) -> bool {
        let Some((deployment, build_id)) = versioning.and_then(RunVersioning::pinned) else {
            return false;
        };
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let target = Self::lane_in(
            &cache,
            namespace_id,
            queue,
            TaskKind::Workflow,
            None,
            workflow_id,
        );
        !target.is_empty() && target != lane_of(deployment, build_id)
    }

    fn lane_in(
        cache: &Cache,
        namespace_id: &str,
        queue: &str,
        kind: TaskKind,
        versioning: Option<&RunVersioning>,
        workflow_id: &str,
    ) -> String {
        if let Some((deployment, build_id)) = versioning.and_then(RunVersioning::pinned) {
            let key = (namespace_id.to_string(), deployment.to_string());
            if cache
                .records
                .get(&key)
                .is_some_and(|d| d.serves(Some(build_id), queue, kind))
            {
                return lane_of(deployment, build_id);
            }
        }
        // The deployment whose versions poll this queue (the most recently created, if several).
        let owner = cache
            .records
            .iter()
            .filter(|((ns, _), d)| {
                ns == namespace_id
                    && d.versions.values().any(|v| {
                        v.task_queues
                            .contains(&(queue.to_string(), queue_type(kind)))
                    })
            })
            .max_by_key(|(_, d)| d.create_time_ns)
            .map(|(_, d)| d);
        let Some(deployment) = owner else {
            return String::new();
        };
        let ramping_first = versioning.is_some_and(|v| v.use_ramping_first);
        let target = match &deployment.ramp {
            Some(ramp) if ramping_first || in_ramp(workflow_id, ramp.percentage) => {
                ramp.build_id.as_deref()
            }
            _ => deployment.current.as_deref(),
        };
        match target {
            Some(build_id) if deployment.serves(Some(build_id), queue, kind) => {
                lane_of(&deployment.name, build_id)
            }
            _ => String::new(),
        }
    }

    /// Records that version `build_id` of deployment `name` polls `queue` for `kind` tasks
    /// (a write the first time only).
    pub async fn register(
        &self,
        namespace_id: &str,
        name: &str,
        build_id: &str,
        queue: &str,
        kind: TaskKind,
        now_ns: i64,
    ) -> Result<(), DeploymentError> {
        let entry = (queue.to_string(), queue_type(kind));
        let known = self.get(namespace_id, name).is_some_and(|d| {
            d.versions
                .get(build_id)
                .is_some_and(|v| v.task_queues.contains(&entry))
        });
        if known {
            return Ok(());
        }
        self.change(namespace_id, name, true, |record| {
            if record.create_time_ns == 0 {
                record.create_time_ns = now_ns;
            }
            let version = record
                .versions
                .entry(build_id.to_string())
                .or_insert_with(|| VersionRecord {
                    create_time_ns: now_ns,
                    routing_update_ns: now_ns,
                    ..VersionRecord::default()
                });
            version.task_queues.insert(entry.clone());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Applies `change` to deployment `name` (a new one if `create` and it does not exist) and
    /// writes it through the metadata group; answers the record as written.
    pub async fn change<F>(
        &self,
        namespace_id: &str,
        name: &str,
        create: bool,
        change: F,
    ) -> Result<DeploymentRecord, DeploymentError>
    where
        F: FnOnce(&mut DeploymentRecord) -> Result<(), DeploymentError>,
    {
        let key = keys::deployment(namespace_id, name);
        let written = self
            .namespaces
            .write_metadata(|read| {
                let mut record = match read(&key)?.as_deref().and_then(decode::<DeploymentRecord>) {
                    Some(record) => record,
                    None if create => DeploymentRecord {
                        name: name.to_string(),
                        ..DeploymentRecord::default()
                    },
                    None => return Err(DeploymentError::NotFound(not_found(name))),
                };
                change(&mut record)?;
                Ok((vec![(key.clone(), encode(&record))], record))
            })
            .await?;
        self.reload()?;
        Ok(written)
    }
}

/// Temporal's message for an unknown deployment.
pub fn not_found(name: &str) -> String {
    format!(
        "no Worker Deployment found with name '{name}'; does your Worker Deployment have pollers?"
    )
}

fn routing_hash(records: &BTreeMap<(String, String), DeploymentRecord>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for ((namespace_id, name), record) in records {
        namespace_id.hash(&mut hasher);
        name.hash(&mut hasher);
        record.revision.hash(&mut hasher);
        for (build_id, version) in &record.versions {
            build_id.hash(&mut hasher);
            version.task_queues.hash(&mut hasher);
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_temporal_writes_them() {
        assert_eq!(parse_version(UNVERSIONED), Ok(None));
        assert_eq!(
            parse_version("dep.1.0"),
            Ok(Some(("dep".to_string(), "1.0".to_string())))
        );
        assert!(parse_version("dep").is_err());
        assert!(parse_version(".b").is_err());
        assert!(parse_version("dep.").is_err());
    }

    #[test]
    fn a_ramp_takes_its_share_of_workflow_ids() {
        let ids: Vec<String> = (0..2000).map(|i| format!("wf-{i}")).collect();
        let share = |p: f32| ids.iter().filter(|id| in_ramp(id, p)).count();
        assert_eq!(share(0.0), 0);
        assert_eq!(share(100.0), ids.len());
        let half = share(50.0);
        assert!((800..1200).contains(&half), "50% took {half} of 2000");
        assert!(ids.iter().all(|id| in_ramp(id, 30.0) == in_ramp(id, 30.0)));
    }
}
