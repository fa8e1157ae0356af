//! The peer transport refuses what it must not act on, with a status a person can act on:
//! another cluster's message, a message meant for another node, an unknown group, an
//! undecodable body, a missing header; and a closed group stops being served.
//! Reproduce with `cargo test --workspace --test transport_refusals`.

use keel_proto::raft::raft_transport_client::RaftTransportClient;
use keel_proto::raft::{RaftHeader, RaftRequest};
use keel_tests::cluster::{test_group_config, TestCluster, CLUSTER_ID};
use tonic::Code;

fn request(cluster: &str, group: u64, to: u64, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        header: Some(RaftHeader {
            cluster_id: cluster.to_string(),
            group_id: group,
            from_node: 9,
            to_node: to,
        }),
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_raft_messages_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1, 2, test_group_config()).await?;
    let addr = cluster.node(1)?.addr;
    let mut client = RaftTransportClient::connect(format!("http://{addr}")).await?;
    let before = cluster
        .group_on(1, 1)
        .expect("group 1")
        .metrics()
        .borrow()
        .clone();

    let cases = [
        (
            request("another-cluster", 1, 1, vec![1]),
            Code::FailedPrecondition,
            "another-cluster",
        ),
        (
            request(CLUSTER_ID, 1, 2, vec![1]),
            Code::FailedPrecondition,
            "reached node 1",
        ),
        (
            request(CLUSTER_ID, 77, 1, vec![1]),
            Code::NotFound,
            "raft group 77 is not hosted on node 1",
        ),
        (
            request(CLUSTER_ID, 1, 1, vec![1, 0xff, 0xff]),
            Code::InvalidArgument,
            "undecodable",
        ),
        (
            request(CLUSTER_ID, 1, 1, vec![]),
            Code::InvalidArgument,
            "empty record",
        ),
        (
            RaftRequest {
                header: None,
                payload: vec![],
            },
            Code::InvalidArgument,
            "without a header",
        ),
    ];
    for (message, code, text) in cases {
        let status = client
            .vote(message)
            .await
            .expect_err("a bad message was accepted");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(text),
            "{:?} should mention {text:?}",
            status.message()
        );
    }
    let after = cluster
        .group_on(1, 1)
        .expect("group 1")
        .metrics()
        .borrow()
        .clone();
    assert_eq!(
        before.vote, after.vote,
        "a refused message changed the vote"
    );
    assert_eq!(
        before.last_log_index, after.last_log_index,
        "a refused message changed the log"
    );

    assert!(cluster.registry(1)?.close(2).await);
    let status = client
        .vote(request(CLUSTER_ID, 2, 1, vec![1]))
        .await
        .expect_err("a closed group still answered");
    assert_eq!(status.code(), Code::NotFound);
    Ok(())
}
