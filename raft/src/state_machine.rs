//! One group's state machine over the node's RocksDB: applies committed entries through the
//! group's [`Applier`] in one write batch per apply call (together with the applied index and
//! membership, so replay is idempotent), and moves snapshots as SST files of the group's state
//! range.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_storage::{keys, Cf, GroupId, Store};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::applier::{Applier, GroupWrites};
use crate::codec;
use crate::records::{decode_record, read_record, storage_error, write_synced, StorageResult};
use crate::snapshot_file::SnapshotFile;
use crate::types::{Applied, BasicNode, KeelRaft, NodeId};

type Entry = openraft::Entry<KeelRaft>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// State-machine record (inside the group's state range, so snapshots carry it).
const APPLIED: &[u8] = b"applied";
/// Raft-meta record of the group's current snapshot.
const SNAPSHOT: &[u8] = b"snapshot";
/// Raft-meta record of a snapshot whose install has begun but not finished.
const INSTALLING: &[u8] = b"installing";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<NodeId, BasicNode>,
    file_name: String,
}

/// The state machine of one group.
pub struct GroupStateMachine {
    store: Store,
    group: GroupId,
    applier: Arc<dyn Applier>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    snapshots: SnapshotDir,
}

/// Where a group keeps its snapshot files, and the counter naming new ones.
#[derive(Clone)]
struct SnapshotDir {
    dir: PathBuf,
    next: Arc<AtomicU64>,
}

impl SnapshotDir {
    fn new_path(&self, kind: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{n}.sst"))
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_snapshot_record(
    store: &Store,
    group: GroupId,
    tag: &[u8],
) -> StorageResult<Option<SnapshotRecord>> {
    let key = keys::meta_key(group, tag);
    read_record(
        store,
        Cf::RaftMeta,
        &key,
        ErrorSubject::Snapshot(None),
        || format!("snapshot record of group {group}"),
    )
}

fn applied_name(group: GroupId) -> String {
    format!("applied index of group {group}")
}

fn read_applied(
    store: &Store,
    group: GroupId,
) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
    let key = keys::state_system_key(group, APPLIED);
    let applied = read_record(store, Cf::State, &key, ErrorSubject::StateMachine, || {
        applied_name(group)
    })?;
    Ok(applied.unwrap_or_default())
}

impl GroupStateMachine {
    /// Opens the state machine of `group`, finishing a snapshot install a crash interrupted and
    /// removing snapshot files no record points at.
    pub async fn open(
        store: Store,
        group: GroupId,
        applier: Arc<dyn Applier>,
        snapshot_dir: PathBuf,
    ) -> StorageResult<GroupStateMachine> {
        let io =
            |e: std::io::Error| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        tokio::fs::create_dir_all(&snapshot_dir).await.map_err(io)?;
        let snapshots = SnapshotDir {
            dir: snapshot_dir,
            next: Arc::new(AtomicU64::new(0)),
        };
        if let Some(record) = read_snapshot_record(&store, group, INSTALLING)? {
            tracing::warn!(group, snapshot = %record.meta.snapshot_id, "finishing a snapshot install interrupted by a crash");
            finish_install(&store, group, &snapshots.dir, record).await?;
        }
        let current = read_snapshot_record(&store, group, SNAPSHOT)?.map(|r| r.file_name);
        let mut entries = tokio::fs::read_dir(&snapshots.dir).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            if Some(entry.file_name().to_string_lossy().into_owned()) != current {
                tokio::fs::remove_file(entry.path()).await.map_err(io)?;
            }
        }
        if let Some(name) = &current {
            // New files must not reuse the current snapshot's name.
            let taken = name
                .trim_end_matches(".sst")
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            snapshots.next.store(taken + 1, Ordering::Relaxed);
        }
        let (last_applied, membership) = read_applied(&store, group)?;
        Ok(GroupStateMachine {
            store,
            group,
            applier,
            last_applied,
            membership,
            snapshots,
        })
    }
}

/// Replaces the group's state with the snapshot file of `record` and makes it current. Safe to
/// repeat after a crash: the INSTALLING record stays until the end.
async fn finish_install(
    store: &Store,
    group: GroupId,
    dir: &Path,
    record: SnapshotRecord,
) -> StorageResult<()> {
    let subject = ErrorSubject::Snapshot(Some(record.meta.signature()));
    let file = dir.join(&record.file_name);
    let ingest_store = store.clone();
    let ingest_file = file.clone();
    let (start, end) = keys::group_range(group);
    tokio::task::spawn_blocking(move || {
        ingest_store.replace_range(Cf::State, &start, &end, &ingest_file)
    })
    .await
    .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?
    .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
    let previous = read_snapshot_record(store, group, SNAPSHOT)?;
    let mut batch = store.batch();
    batch.put(
        Cf::RaftMeta,
        &keys::meta_key(group, SNAPSHOT),
        &codec::encode(&record),
    );
    batch.delete(Cf::RaftMeta, &keys::meta_key(group, INSTALLING));
    write_synced(store, batch)
        .await
        .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
    if let Some(previous) = previous.filter(|p| p.file_name != record.file_name) {
        let _ = tokio::fs::remove_file(dir.join(previous.file_name)).await;
    }
    Ok(())
}

/// Why background work gave no answer.
#[derive(Debug, thiserror::Error)]
enum BackgroundError {
    /// The thread could not be started.
    #[error("could not start the snapshot thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// The thread ended (it panicked) before answering.
    #[error("the snapshot thread ended without an answer")]
    Lost,
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19). A snapshot reads
/// the group's whole state: on a busy node it must take only CPU that serving leaves idle,
/// or every request waits behind it (50-90 ms stalls in p99 latency on two cores).
async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackgroundError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keel-snapshot".into())
        .spawn(move || {
            // On Linux the nice value is per thread: this lowers only this one.
            // SAFETY: setpriority has no memory effects; a failure leaves the priority as is.
            let lowered = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
            if !lowered {
                tracing::debug!("could not lower the snapshot thread's priority");
            }
            let _ = answer.send(work());
        })?;
    answered.await.map_err(|_| BackgroundError::Lost)
}

/// Builds snapshots of one group from a consistent view of its state range.
pub struct GroupSnapshotBuilder {
    store: Store,
    group: GroupId,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<KeelRaft> for GroupSnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<KeelRaft>> {
        let group = self.group;
        let path = self.snapshots.new_path("snap");
        let store = self.store.clone();
        let export_path = path.clone();
        let started = std::time::Instant::now();
        let exported = in_background(move || {
            let (start, end) = keys::group_range(group);
            let applied_key = keys::state_system_key(group, APPLIED);
            let mut applied = None;
            store
                .export_range(Cf::State, &start, &end, &export_path, |key, value| {
                    if key == applied_key.as_slice() {
                        applied = Some(value.to_vec());
                    }
                })
                .map(|_| applied)
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?
        .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let (last_log_id, last_membership): (Option<LogId<NodeId>>, Membership) = match exported {
            Some(bytes) => {
                decode_record(&bytes, ErrorSubject::StateMachine, || applied_name(group))?
            }
            None => (None, Membership::default()),
        };
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, file_name_of(&path)),
            None => format!("empty-{}", file_name_of(&path)),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let record = SnapshotRecord {
            meta: meta.clone(),
            file_name: file_name_of(&path),
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let previous = read_snapshot_record(&self.store, group, SNAPSHOT)?;
        let mut batch = self.store.batch();
        batch.put(
            Cf::RaftMeta,
            &keys::meta_key(group, SNAPSHOT),
            &codec::encode(&record),
        );
        write_synced(&self.store, batch)
            .await
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
        if let Some(previous) = previous {
            let _ = tokio::fs::remove_file(self.snapshots.dir.join(previous.file_name)).await;
        }
        let file = SnapshotFile::open(&path)
            .await
            .map_err(|e| storage_error(subject, ErrorVerb::Read, e))?;
        let elapsed_ms = started.elapsed().as_millis();
        tracing::info!(group, snapshot = %meta.snapshot_id, elapsed_ms, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<KeelRaft> for GroupStateMachine {
    type SnapshotBuilder = GroupSnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.store.batch();
        let mut results = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(proposal) => {
                    let mut writes = GroupWrites {
                        batch: &mut batch,
                        group: self.group,
                    };
                    let responses = proposal
                        .commands
                        .iter()
                        .map(|command| {
                            self.applier.apply(
                                self.group,
                                entry.log_id.leader_id.term,
                                entry.log_id.index,
                                command,
                                &mut writes,
                            )
                        })
                        .collect();
                    Applied { responses }
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied::default()
                }
            };
            results.push(applied);
        }
        batch.put(
            Cf::State,
            &keys::state_system_key(self.group, APPLIED),
            &codec::encode(&(self.last_applied, &self.membership)),
        );
        self.store
            .write_buffered(batch)
            .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        GroupSnapshotBuilder {
            store: self.store.clone(),
            group: self.group,
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        let path = self.snapshots.new_path("recv");
        let file = SnapshotFile::create(&path)
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        mut snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        snapshot
            .sync()
            .await
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
        // The handle is usually the file begin_receiving_snapshot made here, but any snapshot
        // file is accepted: one from elsewhere is copied into this group's directory first.
        let path = if snapshot.path().parent() == Some(self.snapshots.dir.as_path()) {
            snapshot.path().to_path_buf()
        } else {
            let copy = self.snapshots.new_path("recv");
            tokio::fs::copy(snapshot.path(), &copy)
                .await
                .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
            SnapshotFile::open(&copy)
                .await
                .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?
                .sync()
                .await
                .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
            copy
        };
        drop(snapshot);
        let record = SnapshotRecord {
            meta: meta.clone(),
            file_name: file_name_of(&path),
        };
        let mut batch = self.store.batch();
        batch.put(
            Cf::RaftMeta,
            &keys::meta_key(self.group, INSTALLING),
            &codec::encode(&record),
        );
        write_synced(&self.store, batch)
            .await
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
        finish_install(&self.store, self.group, &self.snapshots.dir, record).await?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(group = self.group, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<KeelRaft>>> {
        let Some(record) = read_snapshot_record(&self.store, self.group, SNAPSHOT)? else {
            return Ok(None);
        };
        let subject = ErrorSubject::Snapshot(Some(record.meta.signature()));
        let file = SnapshotFile::open(&self.snapshots.dir.join(&record.file_name))
            .await
            .map_err(|e| storage_error(subject, ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: Box::new(file),
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keel_storage::NodeIdentity;
    use openraft::{CommittedLeaderId, Entry, Membership};

    use super::*;
    use crate::kv::{KvApplier, KvCommand};
    use crate::types::Proposal;

    async fn open(dir: &Path, node: u64) -> (Store, GroupStateMachine) {
        let identity = NodeIdentity {
            cluster_id: "c".to_string(),
            node_id: node,
        };
        let store = Store::open(&dir.join("db"), &identity).expect("open store");
        let sm =
            GroupStateMachine::open(store.clone(), 3, Arc::new(KvApplier), dir.join("snapshots"))
                .await
                .expect("open state machine");
        (store, sm)
    }

    fn put(index: u64, key: &str) -> Entry<KeelRaft> {
        let command = KvCommand::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal {
                commands: vec![command.encode()],
            }),
        }
    }

    #[tokio::test]
    async fn background_work_runs_at_the_lowest_priority_and_answers() {
        // SAFETY: getpriority only reads the calling thread's nice value.
        let nice_here = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice_here();
        assert_eq!(in_background(nice_here).await.ok(), Some(19));
        assert_eq!(
            nice_here(),
            before,
            "the caller's thread keeps its priority"
        );
    }

    #[tokio::test]
    async fn an_install_interrupted_by_a_crash_is_finished_on_open() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let (_leader_store, mut leader) = open(leader_dir.path(), 1).await;
        let membership = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], None)),
        };
        leader
            .apply(vec![membership, put(2, "a"), put(3, "b")])
            .await
            .expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        // The follower crashed after recording INSTALLING and before replacing its state.
        {
            let (store, mut follower) = open(follower_dir.path(), 2).await;
            follower.apply(vec![put(1, "stale")]).await.expect("apply");
            let file_name = "recv-0.sst".to_string();
            let dir = follower_dir.path().join("snapshots");
            std::fs::copy(snapshot.snapshot.path(), dir.join(&file_name)).expect("copy snapshot");
            let record = SnapshotRecord {
                meta: snapshot.meta.clone(),
                file_name,
            };
            let mut batch = store.batch();
            batch.put(
                Cf::RaftMeta,
                &keys::meta_key(3, INSTALLING),
                &codec::encode(&record),
            );
            store.write_synced_blocking(batch).expect("write marker");
        }

        let (store, mut follower) = open(follower_dir.path(), 2).await;
        let (applied, _) = follower.applied_state().await.expect("applied state");
        assert_eq!(applied, snapshot.meta.last_log_id);
        let get = |key: &str| {
            store
                .get(Cf::State, &keys::state_user_key(3, key.as_bytes()))
                .expect("read")
        };
        assert_eq!(get("a"), Some(b"v".to_vec()));
        assert_eq!(get("b"), Some(b"v".to_vec()));
        assert_eq!(
            get("stale"),
            None,
            "state from before the snapshot survived its install"
        );
        let current = follower
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a current snapshot");
        assert_eq!(current.meta, snapshot.meta);
        assert!(read_snapshot_record(&store, 3, INSTALLING)
            .expect("read")
            .is_none());
    }
}
