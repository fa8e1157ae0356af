//! One group's state machine over the node's RocksDB: applies committed entries through the
//! group's [`Applier`] in one write batch per apply call (together with the applied index and
//! membership, so replay is idempotent), and moves snapshots as SST files of the group's state
//! range.
//!
//! The state in RocksDB is itself the snapshot: building one pins a RocksDB view of it (no copy)
//! and makes the applied state durable, so that openraft may purge the log it covers. The range
//! is written to a file only when a follower needs it, so a snapshot costs the same whatever the
//! size of the state.

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
use crate::snapshot_file::{PinRequest, SnapshotError, SnapshotFile};
use crate::types::{Applied, BasicNode, KeelRaft, NodeId};

type Entry = openraft::Entry<KeelRaft>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// State-machine record (inside the group's state range, so snapshots carry it).
const APPLIED: &[u8] = b"applied";
/// Raft-meta record of the group's last built snapshot, written by Keel before snapshots were
/// pinned views; removed on open.
const LEGACY_SNAPSHOT: &[u8] = b"snapshot";
/// Raft-meta record of a snapshot whose install has begun but not finished.
const INSTALLING: &[u8] = b"installing";

/// A snapshot being installed, and the file it is installed from.
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

fn snapshot_error(e: SnapshotError) -> openraft::StorageError<NodeId> {
    let verb = match e {
        SnapshotError::File { .. } => ErrorVerb::Write,
        _ => ErrorVerb::Read,
    };
    storage_error(ErrorSubject::Snapshot(None), verb, e)
}

/// Pins the group's state as it is now, as a snapshot whose meta is the applied index and
/// membership read from the same view.
async fn pin_state(
    store: &Store,
    group: GroupId,
    snapshots: &SnapshotDir,
) -> StorageResult<Snapshot<KeelRaft>> {
    let (start, end) = keys::group_range(group);
    let path = snapshots.new_path("send");
    let (applied, file) = SnapshotFile::pin(PinRequest {
        store: store.clone(),
        start,
        end,
        read_key: keys::state_system_key(group, APPLIED),
        path: path.clone(),
    })
    .await
    .map_err(snapshot_error)?;
    let (last_log_id, last_membership): (Option<LogId<NodeId>>, Membership) = match applied {
        Some(bytes) => decode_record(&bytes, ErrorSubject::StateMachine, || applied_name(group))?,
        None => (None, Membership::default()),
    };
    // Same applied log id, same state (apply is deterministic): the id names the content, on
    // any node. A receiver may see one id streamed twice (a send restarted, or a new leader);
    // it keeps only the last stream's bytes (`SnapshotFile::finish_receiving`).
    let snapshot_id = match last_log_id {
        Some(id) => format!("{}-{}", id.leader_id, id.index),
        None => "empty".to_string(),
    };
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        },
        snapshot: Box::new(file),
    })
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
    /// removing every other snapshot file (those being sent or received when the node stopped).
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
        let mut entries = tokio::fs::read_dir(&snapshots.dir).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            tokio::fs::remove_file(entry.path()).await.map_err(io)?;
        }
        let legacy = keys::meta_key(group, LEGACY_SNAPSHOT);
        let found = store
            .get(Cf::RaftMeta, &legacy)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        if found.is_some() {
            let mut batch = store.batch();
            batch.delete(Cf::RaftMeta, &legacy);
            write_synced(&store, batch)
                .await
                .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
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

/// Replaces the group's state with the snapshot file of `record`, then removes the file. Safe to
/// repeat after a crash: the INSTALLING record stays until the state is replaced.
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
    let mut batch = store.batch();
    batch.delete(Cf::RaftMeta, &keys::meta_key(group, INSTALLING));
    write_synced(store, batch)
        .await
        .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
    // Removed again on the next open if this fails.
    let _ = tokio::fs::remove_file(&file).await;
    Ok(())
}

/// Builds snapshots of one group: pinned views of its state range.
pub struct GroupSnapshotBuilder {
    store: Store,
    group: GroupId,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<KeelRaft> for GroupSnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<KeelRaft>> {
        let snapshot = pin_state(&self.store, self.group, &self.snapshots).await?;
        // openraft purges the log up to the snapshot next: the state it covers must not depend
        // on that log any more. Applies are buffered; syncing the WAL makes them durable.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync_wal())
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        tracing::debug!(group = self.group, snapshot = %snapshot.meta.snapshot_id, "built snapshot");
        Ok(snapshot)
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
        let file = SnapshotFile::create(&path).await.map_err(snapshot_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        mut snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let write_error = |e| storage_error(subject.clone(), ErrorVerb::Write, e);
        // The handle is usually the file begin_receiving_snapshot made here, but any snapshot
        // is accepted: one from elsewhere is written into this group's directory first.
        let path = if snapshot.is_file_in(&self.snapshots.dir) {
            snapshot.finish_receiving().await.map_err(write_error)?;
            snapshot.keep().map_err(write_error)?
        } else {
            let copy = self.snapshots.new_path("recv");
            let written = snapshot.write_to(&copy).await.map_err(write_error)?;
            drop(snapshot);
            written.keep().map_err(write_error)?
        };
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
        if self.last_applied.is_none() {
            return Ok(None);
        }
        pin_state(&self.store, self.group, &self.snapshots)
            .await
            .map(Some)
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

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list snapshot dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn membership_entry(index: u64) -> Entry<KeelRaft> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], None)),
        }
    }

    /// A leader of group 3 that applied keys `a` and `b` (entries 2 and 3), and the snapshot it
    /// built then.
    async fn leader_with_snapshot(dir: &Path) -> (GroupStateMachine, Snapshot<KeelRaft>) {
        let (_store, mut leader) = open(dir, 1).await;
        leader
            .apply(vec![membership_entry(1), put(2, "a"), put(3, "b")])
            .await
            .expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        (leader, snapshot)
    }

    #[tokio::test]
    async fn a_snapshot_is_the_state_at_its_index_even_when_written_out_later() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let (mut leader, mut snapshot) = leader_with_snapshot(leader_dir.path()).await;
        assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(3));
        let leader_snapshots = leader_dir.path().join("snapshots");
        assert!(
            files_in(&leader_snapshots).is_empty(),
            "building a snapshot must not copy the state"
        );

        leader.apply(vec![put(4, "c")]).await.expect("apply");
        snapshot.snapshot.export().await.expect("export");
        assert_eq!(files_in(&leader_snapshots).len(), 1);

        let (store, mut follower) = open(follower_dir.path(), 2).await;
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert!(
            files_in(&leader_snapshots).is_empty(),
            "the written-out snapshot outlived its handle"
        );
        assert!(files_in(&follower_dir.path().join("snapshots")).is_empty());
        let get = |key: &str| {
            store
                .get(Cf::State, &keys::state_user_key(3, key.as_bytes()))
                .expect("read")
        };
        assert_eq!(get("a"), Some(b"v".to_vec()));
        assert_eq!(get("b"), Some(b"v".to_vec()));
        assert_eq!(
            get("c"),
            None,
            "a write applied after the snapshot leaked in"
        );
        let (applied, _) = follower.applied_state().await.expect("applied state");
        assert_eq!(applied, snapshot.meta.last_log_id);

        let current = leader
            .get_current_snapshot()
            .await
            .expect("pin")
            .expect("a current snapshot");
        assert_eq!(current.meta.last_log_id.map(|id| id.index), Some(4));
    }

    #[tokio::test]
    async fn a_group_with_nothing_applied_has_no_current_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, mut sm) = open(dir.path(), 1).await;
        assert!(sm.get_current_snapshot().await.expect("read").is_none());
    }

    #[tokio::test]
    async fn open_removes_leftover_files_and_the_old_snapshot_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = dir.path().join("snapshots");
        {
            let (store, mut sm) = open(dir.path(), 1).await;
            sm.apply(vec![membership_entry(1)]).await.expect("apply");
            std::fs::write(snapshots.join("send-0.sst"), b"half written").expect("write");
            std::fs::write(snapshots.join("snap-7.sst"), b"old format").expect("write");
            let mut batch = store.batch();
            batch.put(
                Cf::RaftMeta,
                &keys::meta_key(3, LEGACY_SNAPSHOT),
                b"anything",
            );
            store.write_synced_blocking(batch).expect("write record");
        }
        let (store, mut sm) = open(dir.path(), 1).await;
        assert!(files_in(&snapshots).is_empty());
        assert_eq!(
            store
                .get(Cf::RaftMeta, &keys::meta_key(3, LEGACY_SNAPSHOT))
                .expect("read"),
            None
        );
        let current = sm.get_current_snapshot().await.expect("pin").expect("some");
        assert_eq!(current.meta.last_log_id.map(|id| id.index), Some(1));
    }

    #[tokio::test]
    async fn an_install_interrupted_by_a_crash_is_finished_on_open() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let (_leader, mut snapshot) = leader_with_snapshot(leader_dir.path()).await;
        snapshot.snapshot.export().await.expect("export");

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
        assert_eq!(current.meta.last_log_id, snapshot.meta.last_log_id);
        assert_eq!(current.meta.last_membership, snapshot.meta.last_membership);
        assert!(files_in(&follower_dir.path().join("snapshots")).is_empty());
        assert!(read_snapshot_record(&store, 3, INSTALLING)
            .expect("read")
            .is_none());
    }
}
