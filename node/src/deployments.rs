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
use crate::namespaces::{decode, MetadataWrite, NamespaceError, Namespaces};
use crate::shard::keys;

/// Most Worker Deployments in a namespace (Temporal's `matching.maxDeployments`).
pub const MAX_DEPLOYMENTS: usize = 100;
/// Most versions in a deployment (Temporal's `matching.maxVersionsInDeployment`).
pub const MAX_VERSIONS: usize = 100;
/// Most task queues (of either type) one version polls (Temporal's
/// `matching.maxTaskQueuesInDeploymentVersion`).
pub const MAX_TASK_QUEUES_PER_VERSION: usize = 100;

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
    /// The deployment to create exists.
    #[error("{0}")]
    AlreadyExists(String),
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
    /// User metadata (UpdateWorkerDeploymentVersionMetadata): key -> encoded `Payload`.
    /// Stored after the record (see [`encode_record`]), so older records still decode.
    #[serde(skip)]
    pub metadata: BTreeMap<String, Vec<u8>>,
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
    /// Only this identity may change the routing or delete versions (empty: anyone). Stored
    /// after the record (see [`encode_record`]).
    #[serde(skip)]
    pub manager_identity: String,
    /// Request id of the CreateWorkerDeployment that created it (a retry of it succeeds).
    /// Stored after the record.
    #[serde(skip)]
    pub create_request_id: String,
}

/// What a deployment record holds beyond its first stored form: written after it.
#[derive(Default, Serialize, Deserialize)]
struct RecordExtras {
    manager_identity: String,
    create_request_id: String,
    /// Build id -> that version's metadata.
    metadata: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Format byte of deployment records: the record, then [`RecordExtras`]. Records written with
/// the metadata group's first format (1) are the record alone.
const RECORD_FORMAT: u8 = 2;

/// A deployment record as stored (see [`RECORD_FORMAT`]).
fn encode_record(record: &DeploymentRecord) -> Vec<u8> {
    let extras = RecordExtras {
        manager_identity: record.manager_identity.clone(),
        create_request_id: record.create_request_id.clone(),
        metadata: record
            .versions
            .iter()
            .filter(|(_, v)| !v.metadata.is_empty())
            .map(|(build_id, v)| (build_id.clone(), v.metadata.clone()))
            .collect(),
    };
    let mut out = vec![RECORD_FORMAT];
    for part in [bincode::serialize(record), bincode::serialize(&extras)] {
        out.extend(part.unwrap_or_default());
    }
    out
}

/// A stored deployment record of either format; None if it is neither.
fn decode_record(bytes: &[u8]) -> Option<DeploymentRecord> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, mut rest)) => {
            let mut record: DeploymentRecord = bincode::deserialize_from(&mut rest).ok()?;
            let extras: RecordExtras = bincode::deserialize_from(&mut rest).ok()?;
            record.manager_identity = extras.manager_identity;
            record.create_request_id = extras.create_request_id;
            for (build_id, metadata) in extras.metadata {
                if let Some(version) = record.versions.get_mut(&build_id) {
                    version.metadata = metadata;
                }
            }
            Some(record)
        }
        _ => decode::<DeploymentRecord>(bytes),
    }
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
            if let (Some((namespace_id, _)), Some(record)) =
                (keys::parse_deployment(key), decode_record(value))
            {
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

    /// How many deployments namespace `namespace_id` has.
    fn count(&self, namespace_id: &str) -> usize {
        self.refresh();
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .records
            .keys()
            .filter(|(ns, _)| ns == namespace_id)
            .count()
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
    /// (a write the first time only). A deployment holds at most [`MAX_VERSIONS`] versions:
    /// when it is full, version `evict` (one the caller found safe to delete) goes to make
    /// room, else the poll is refused, as Temporal does.
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        namespace_id: &str,
        name: &str,
        build_id: &str,
        queue: &str,
        kind: TaskKind,
        evict: Option<&str>,
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
            add_version(record, build_id, evict, now_ns)?;
            let version = record
                .versions
                .get_mut(build_id)
                .ok_or_else(|| DeploymentError::NotFound(not_found(name)))?;
            if version.task_queues.len() >= MAX_TASK_QUEUES_PER_VERSION {
                return Err(DeploymentError::FailedPrecondition(format!(
                    "cannot add task queue {queue} since maximum number of task queues \
                     ({MAX_TASK_QUEUES_PER_VERSION}) have been registered in deployment"
                )));
            }
            version.task_queues.insert(entry.clone());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Applies `change` to deployment `name` (a new one if `create` and it does not exist; a
    /// namespace holds at most [`MAX_DEPLOYMENTS`]) and writes it through the metadata group;
    /// answers the record as written. A change that leaves the record as it was writes nothing.
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
                let stored = read(&key)?.as_deref().and_then(decode_record);
                let mut record = match stored.clone() {
                    Some(record) => record,
                    None if create && self.count(namespace_id) >= MAX_DEPLOYMENTS => {
                        return Err(DeploymentError::FailedPrecondition(format!(
                            "cannot create Worker Deployment {name:?}: the namespace already \
                             has the maximum of {MAX_DEPLOYMENTS}; delete one first"
                        )))
                    }
                    None if create => DeploymentRecord {
                        name: name.to_string(),
                        ..DeploymentRecord::default()
                    },
                    None => return Err(DeploymentError::NotFound(not_found(name))),
                };
                change(&mut record)?;
                let mut write = MetadataWrite::default();
                if stored.as_ref() != Some(&record) {
                    write.puts.push((key.clone(), encode_record(&record)));
                }
                Ok((write, record))
            })
            .await?;
        self.reload()?;
        Ok(written)
    }

    /// Deletes deployment `name` if `check` allows it; true if there was one to delete.
    pub async fn remove<F>(
        &self,
        namespace_id: &str,
        name: &str,
        check: F,
    ) -> Result<bool, DeploymentError>
    where
        F: FnOnce(&DeploymentRecord) -> Result<(), DeploymentError>,
    {
        let key = keys::deployment(namespace_id, name);
        let removed = self
            .namespaces
            .write_metadata(|read| -> Result<_, DeploymentError> {
                let Some(record) = read(&key)?.as_deref().and_then(decode_record) else {
                    return Ok((MetadataWrite::default(), false));
                };
                check(&record)?;
                let write = MetadataWrite {
                    deletes: vec![key.clone()],
                    ..MetadataWrite::default()
                };
                Ok((write, true))
            })
            .await?;
        self.reload()?;
        Ok(removed)
    }
}

/// Adds version `build_id` to `record` if it is new, first deleting `evict` when the record
/// already holds [`MAX_VERSIONS`].
pub fn add_version(
    record: &mut DeploymentRecord,
    build_id: &str,
    evict: Option<&str>,
    now_ns: i64,
) -> Result<(), DeploymentError> {
    if record.versions.contains_key(build_id) {
        return Ok(());
    }
    if record.versions.len() >= MAX_VERSIONS {
        let evicted = evict.is_some_and(|old| {
            record.current.as_deref() != Some(old)
                && record.ramp.as_ref().and_then(|r| r.build_id.as_deref()) != Some(old)
                && record.versions.remove(old).is_some()
        });
        if !evicted {
            return Err(DeploymentError::FailedPrecondition(format!(
                "cannot add version {} since maximum number of versions ({MAX_VERSIONS}) have \
                 been registered in the deployment; delete a drained version without pollers",
                lane_of(&record.name, build_id)
            )));
        }
    }
    record.versions.insert(
        build_id.to_string(),
        VersionRecord {
            create_time_ns: now_ns,
            routing_update_ns: now_ns,
            ..VersionRecord::default()
        },
    );
    Ok(())
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
    fn records_of_both_formats_decode_and_keep_what_the_first_could_not_hold() {
        let mut record = DeploymentRecord {
            name: "dep".into(),
            create_time_ns: 5,
            current: Some("b1".into()),
            manager_identity: "deployer".into(),
            create_request_id: "r1".into(),
            ..DeploymentRecord::default()
        };
        add_version(&mut record, "b1", None, 7).expect("room");
        record
            .versions
            .get_mut("b1")
            .expect("added")
            .metadata
            .insert("owner".into(), vec![1, 2, 3]);
        assert_eq!(decode_record(&encode_record(&record)), Some(record.clone()));

        // A record the metadata group's first format wrote decodes, without the newer fields.
        let legacy = crate::namespaces::encode(&record);
        let decoded = decode_record(&legacy).expect("format 1");
        assert_eq!(decoded.current.as_deref(), Some("b1"));
        assert!(decoded.manager_identity.is_empty());
        assert!(decoded.versions["b1"].metadata.is_empty());
        assert_eq!(decode_record(&[9, 9, 9]), None);
    }

    #[test]
    fn a_full_deployment_takes_a_new_version_only_in_place_of_an_evictable_one() {
        let mut record = DeploymentRecord {
            name: "dep".into(),
            ..DeploymentRecord::default()
        };
        for i in 0..MAX_VERSIONS {
            add_version(&mut record, &format!("b{i}"), None, i as i64).expect("room");
        }
        record.current = Some("b0".into());
        let full = add_version(&mut record, "new", None, 1000);
        assert!(
            matches!(&full, Err(DeploymentError::FailedPrecondition(m)) if m.contains("maximum number of versions (100)")),
            "{full:?}"
        );
        // The current version is never evicted, whatever the caller says.
        assert!(add_version(&mut record, "new", Some("b0"), 1000).is_err());
        add_version(&mut record, "new", Some("b1"), 1000).expect("b1 made room");
        assert!(!record.versions.contains_key("b1"));
        assert_eq!(record.versions.len(), MAX_VERSIONS);
        // A version already there is no change.
        add_version(&mut record, "new", None, 2000).expect("known");
        assert_eq!(record.versions["new"].create_time_ns, 1000);
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
