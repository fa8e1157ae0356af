//! Three nodes in one process on 127.0.0.1-3, the metadata group plus 16 shard groups, under
//! node kills, restarts, a partition, log compaction and node replacement.
//! Reproduce any failure with `cargo test --workspace --test raft_cluster -- --test-threads=1`.

use std::collections::BTreeSet;
use std::time::Duration;

use keel_raft::{GroupConfig, ProposeError};
use keel_tests::cluster::{test_group_config, TestCluster};

const SHARDS: u64 = 16;
const WAIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn write_keys(
    cluster: &TestCluster,
    prefix: &str,
    per_group: usize,
) -> anyhow::Result<Vec<(u64, String)>> {
    let mut written = Vec::new();
    for &group in &cluster.groups {
        for i in 0..per_group {
            let key = format!("{prefix}-{group}-{i}");
            cluster.put(group, &key, &key, WAIT).await?;
            written.push((group, key));
        }
    }
    Ok(written)
}

async fn assert_all_present(
    cluster: &TestCluster,
    written: &[(u64, String)],
) -> anyhow::Result<()> {
    for (group, key) in written {
        let value = cluster.get(*group, key, WAIT).await?;
        assert_eq!(
            value.as_deref(),
            Some(key.as_str()),
            "acknowledged write {key} of group {group} lost"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_and_committed_entries_survive_any_single_node_kill() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = TestCluster::start(3, SHARDS, test_group_config()).await?;
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let leading: BTreeSet<u64> = leaders.values().copied().collect();
    assert_eq!(
        leading.len(),
        3,
        "leaders should be spread over all three nodes: {leaders:?}"
    );

    let mut written = write_keys(&cluster, "before", 5).await?;
    for victim in 1..=3 {
        cluster.kill(victim).await?;
        cluster.wait_for_leaders(WAIT).await?;
        assert_all_present(&cluster, &written).await?;
        written.extend(write_keys(&cluster, &format!("without-{victim}"), 2).await?);
        cluster.start_node(victim).await?;
        cluster.wait_caught_up(victim, WAIT).await?;
    }
    assert_all_present(&cluster, &written).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_side_cannot_commit_and_its_entries_are_discarded() -> anyhow::Result<()> {
    init_tracing();
    let config = GroupConfig {
        quorum_wait: Duration::from_secs(2),
        ..test_group_config()
    };
    let cluster = TestCluster::start(3, SHARDS, config).await?;
    let group = 5;
    let old_leader = cluster.leader_of(group).expect("group 5 has a leader");
    let isolated = cluster
        .group_on(old_leader, group)
        .expect("leader hosts the group");
    cluster.isolate(old_leader);

    let command = keel_raft::kv::KvCommand::Put {
        key: "minority".into(),
        value: "must-not-commit".into(),
    }
    .encode();
    // The isolated leader neither acknowledges nor hangs: after the quorum wait it reports an
    // unknown outcome.
    let attempt = tokio::time::timeout(Duration::from_secs(10), isolated.propose(command)).await;
    assert!(
        matches!(
            attempt,
            Ok(Err(
                ProposeError::Unavailable { .. } | ProposeError::NotLeader { .. }
            ))
        ),
        "an isolated leader must fail the write within the quorum wait: {attempt:?}"
    );

    // The majority elects a new leader and keeps committing.
    let deadline = std::time::Instant::now() + WAIT;
    let new_leader = loop {
        let leader = [1u64, 2, 3]
            .into_iter()
            .filter(|id| *id != old_leader)
            .find(|id| cluster.group_on(*id, group).is_some_and(|g| g.is_leader()));
        if let Some(leader) = leader {
            break leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the majority elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let majority = cluster
        .group_on(new_leader, group)
        .expect("new leader hosts the group");
    let committed = majority
        .propose(
            keel_raft::kv::KvCommand::Put {
                key: "majority".into(),
                value: "committed".into(),
            }
            .encode(),
        )
        .await?;
    assert!(committed.index > 0);

    cluster.heal();
    cluster.wait_caught_up(old_leader, WAIT).await?;
    let on_old = cluster
        .group_on(old_leader, group)
        .expect("old leader hosts the group");
    assert_eq!(
        on_old.read_local(b"minority")?,
        None,
        "an uncommitted minority write survived"
    );
    assert_eq!(on_old.read_local(b"majority")?, Some(b"committed".to_vec()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_from_its_data_dir() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = TestCluster::start(3, SHARDS, test_group_config()).await?;
    let before = write_keys(&cluster, "before", 2).await?;
    cluster.kill(3).await?;
    let during = write_keys(&cluster, "during", 10).await?;
    cluster.start_node(3).await?;
    cluster.wait_caught_up(3, WAIT).await?;
    for (group, key) in before.iter().chain(&during) {
        let node3 = cluster
            .group_on(3, *group)
            .expect("node 3 hosts every group");
        assert_eq!(
            node3.read_local(key.as_bytes())?,
            Some(key.clone().into_bytes()),
            "node 3 misses {key}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_behind_a_compacted_log_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    init_tracing();
    let config = GroupConfig {
        snapshot_every_entries: 50,
        entries_kept_after_snapshot: 5,
        ..test_group_config()
    };
    let mut cluster = TestCluster::start(3, 2, config).await?;
    let group = 1;
    cluster.kill(3).await?;
    let mut keys = Vec::new();
    for i in 0..300 {
        let key = format!("k{i}");
        cluster.put(group, &key, &key, WAIT).await?;
        keys.push(key);
    }
    let leader = cluster.leader_of(group).expect("group 1 has a leader");
    let leader_group = cluster
        .group_on(leader, group)
        .expect("leader hosts the group");
    let deadline = std::time::Instant::now() + WAIT;
    while leader_group.metrics().borrow().purged.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never purged its log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.start_node(3).await?;
    cluster.wait_caught_up(3, WAIT).await?;
    let node3 = cluster.group_on(3, group).expect("node 3 hosts group 1");
    let snapshot = node3.metrics().borrow().snapshot;
    assert!(
        snapshot.is_some(),
        "node 3 caught up without installing a snapshot"
    );
    for key in &keys {
        assert_eq!(
            node3.read_local(key.as_bytes())?,
            Some(key.clone().into_bytes()),
            "node 3 misses {key}"
        );
    }
    // After a restart the installed snapshot and the log after it are still consistent.
    drop(node3);
    cluster.kill(3).await?;
    cluster.start_node(3).await?;
    cluster.wait_caught_up(3, WAIT).await?;
    let node3 = cluster.group_on(3, group).expect("node 3 hosts group 1");
    assert_eq!(node3.read_local(b"k299")?, Some(b"k299".to_vec()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_node_receives_every_entry() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = TestCluster::start(3, 4, test_group_config()).await?;
    let before = write_keys(&cluster, "before", 10).await?;

    for &group in &cluster.groups.clone() {
        let leader = cluster.leader_of(group).expect("leader");
        let handle = cluster.group_on(leader, group).expect("leader hosts group");
        // When node 3 leads, it commits its own removal and steps down.
        handle.remove_voter(3).await?;
    }
    cluster.kill(3).await?;
    cluster.wait_for_leaders(WAIT).await?;
    let between = write_keys(&cluster, "between", 5).await?;

    cluster.add_slot(4)?;
    cluster.start_node(4).await?;
    let addr4 = cluster.node(4)?.addr.to_string();
    let registry4 = cluster.registry(4)?;
    for &group in &cluster.groups.clone() {
        registry4.create(group).await?;
        let leader = cluster.leader_of(group).expect("leader");
        let handle = cluster.group_on(leader, group).expect("leader hosts group");
        handle.add_voter(4, &addr4).await?;
    }
    let after = write_keys(&cluster, "after", 5).await?;
    cluster.wait_caught_up(4, WAIT).await?;
    for (group, key) in before.iter().chain(&between).chain(&after) {
        let node4 = cluster
            .group_on(4, *group)
            .expect("node 4 hosts every group");
        assert_eq!(
            node4.read_local(key.as_bytes())?,
            Some(key.clone().into_bytes()),
            "node 4 misses {key}"
        );
    }
    for &group in &cluster.groups {
        let leader = cluster.leader_of(group).expect("leader");
        let metrics = cluster
            .group_on(leader, group)
            .expect("group")
            .metrics()
            .borrow()
            .clone();
        let voters: BTreeSet<u64> = metrics.membership_config.membership().voter_ids().collect();
        assert_eq!(voters, BTreeSet::from([1, 2, 4]), "group {group} voters");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hands_its_group_to_a_chosen_voter_and_no_acknowledged_write_is_lost(
) -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = TestCluster::start(3, SHARDS, test_group_config()).await?;
    cluster.wait_for_leaders(WAIT).await?;
    let group = 3;
    let from = cluster.leader_of(group).expect("group 3 has a leader");
    let to = (1..=3).find(|id| *id != from).expect("three nodes");
    let leader = cluster
        .group_on(from, group)
        .expect("the leader hosts the group");

    // Proposals keep arriving at the old leader while it hands over: each is acknowledged or
    // fails, none is lost.
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..400 {
            let key = format!("during-{i}");
            let command = keel_raft::kv::KvCommand::Put {
                key: key.clone().into(),
                value: key.clone().into(),
            }
            .encode();
            if leader.propose(command).await.is_ok() {
                acknowledged.push((group, key));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    cluster.registry(from)?.hand_over(group, to).await?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "handover of group {group} from node {from} to node {to} took {took:?}"
    );
    assert_eq!(
        cluster.leader_of(group),
        Some(to),
        "node {to} should lead group {group}"
    );
    let acknowledged = writer.await?;
    assert!(
        !acknowledged.is_empty(),
        "some writes before the handover should have been acknowledged"
    );
    assert_all_present(&cluster, &acknowledged).await?;

    // A handover to a node that is down fails fast and leaves the leader in place.
    let down = (1..=3).find(|id| *id != to).expect("three nodes");
    cluster.kill(down).await?;
    let started = std::time::Instant::now();
    let refused = cluster.registry(to)?.hand_over(group, down).await;
    assert!(
        refused.is_err(),
        "handing group {group} to the dead node {down} should fail"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a handover to a dead node should fail fast, took {:?}",
        started.elapsed()
    );
    assert_eq!(cluster.leader_of(group), Some(to));
    cluster.put(group, "after", "after", WAIT).await?;
    Ok(())
}
