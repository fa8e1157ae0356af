//! openraft's own storage conformance suite, run against the RocksDB-backed log store and state
//! machine of one group. Reproduce with `cargo test --workspace --test storage_suite`.

use std::sync::Arc;

use keel_raft::kv::KvApplier;
use keel_raft::{GroupLogStore, GroupStateMachine, KeelRaft, NodeId};
use keel_storage::{NodeIdentity, Store};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct RocksBuilder;

impl StoreBuilder<KeelRaft, GroupLogStore, GroupStateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, GroupLogStore, GroupStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("create a temp dir for the store");
        let identity = NodeIdentity {
            cluster_id: "suite".to_string(),
            node_id: 1,
        };
        let store = Store::open(&dir.path().join("db"), &identity).expect("open a fresh store");
        // A group id other than 0 so that key prefixes are exercised.
        let group = 7;
        let log = GroupLogStore::new(store.clone(), group);
        let state = GroupStateMachine::open(
            store,
            group,
            Arc::new(KvApplier),
            dir.path().join("snapshots"),
        )
        .await?;
        Ok((dir, log, state))
    }
}

#[test]
fn openraft_storage_suite_passes_on_rocksdb() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("openraft storage suite failed: {e}; reproduce with `cargo test --workspace --test storage_suite`");
    }
}
