//! `keel dev --metrics-port`: after a few Temporal RPCs and a replicated write, `/metrics`
//! answers Prometheus's text format with the request counters of those RPCs (by method and
//! status code) and the Raft, storage and process figures. Reproduce with
//! `cargo build --workspace && cargo test -p keel-tests --test metrics_endpoint`.

use std::time::{Duration, Instant};

use anyhow::bail;
use keel_proto::temporal::api::workflowservice::v1::{
    DescribeNamespaceRequest, GetSystemInfoRequest,
};
use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
use keel_tests::dev::DevServer;
use keel_tests::metrics::{scrape, value, Sample};
use keel_tests::process::KvClient;
use tonic::transport::Channel;

fn requests(samples: &[Sample], operation: &str, code: &str) -> f64 {
    value(
        samples,
        "service_requests",
        &[
            ("service", "WorkflowService"),
            ("operation", operation),
            ("status_code", code),
        ],
    )
}

async fn describe(client: &mut WorkflowServiceClient<Channel>, name: &str) -> tonic::Code {
    let request = DescribeNamespaceRequest {
        namespace: name.into(),
        ..Default::default()
    };
    match client.describe_namespace(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_requests_served_and_parse_as_prometheus_text() -> anyhow::Result<()> {
    let (dev, mut client) = DevServer::start(&[]).await?;
    let (port, metrics_port) = (dev.port, dev.metrics_port);
    let logs = || dev.logs();
    let deadline = Instant::now() + Duration::from_secs(60);
    // A replicated write, so that the Raft and storage figures move.
    let mut kv = KvClient::new(vec![format!("127.0.0.1:{port}")]);
    while let Err(error) = kv.put_once(1, b"metrics", b"v").await {
        if Instant::now() > deadline {
            bail!(
                "keel dev did not take a write within 60 s: {error:#}\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (content_type, before) = scrape(metrics_port).await?;
    assert_eq!(content_type, "text/plain; version=0.0.4");
    for _ in 0..3 {
        assert_eq!(describe(&mut client, "default").await, tonic::Code::Ok);
    }
    assert_eq!(
        describe(&mut client, "no-such-namespace").await,
        tonic::Code::NotFound
    );
    for _ in 0..2 {
        client
            .get_system_info(GetSystemInfoRequest::default())
            .await?;
    }
    let (_, after) = scrape(metrics_port).await?;

    let grew = |operation: &str, code: &str| {
        requests(&after, operation, code) - requests(&before, operation, code)
    };
    assert_eq!(grew("DescribeNamespace", "OK"), 3.0, "{}", logs());
    assert_eq!(grew("DescribeNamespace", "NOT_FOUND"), 1.0);
    assert_eq!(grew("GetSystemInfo", "OK"), 2.0);
    let latency_count = |samples: &[Sample]| {
        value(
            samples,
            "service_latency_count",
            &[("operation", "DescribeNamespace")],
        )
    };
    assert_eq!(latency_count(&after) - latency_count(&before), 4.0);
    assert_eq!(value(&after, "keel_raft_leader", &[("group", "0")]), 1.0);
    assert!(value(&after, "keel_raft_term", &[("group", "1")]) >= 1.0);
    assert!(
        value(
            &after,
            "keel_raft_commands_committed_total",
            &[("group", "1")]
        ) >= 1.0
    );
    assert!(value(&after, "keel_raft_applied_index", &[("group", "1")]) >= 1.0);
    assert!(value(&after, "keel_storage_fsyncs_total", &[]) >= 1.0);
    assert!(value(&after, "keel_storage_synced_batches_total", &[]) >= 1.0);
    assert_eq!(
        value(
            &after,
            "keel_matching_polls_waiting",
            &[("task_type", "workflow")]
        ),
        0.0
    );
    assert_eq!(value(&after, "keel_history_long_polls_waiting", &[]), 0.0);
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(after.iter().any(|s| s.name == "process_cpu_seconds_total"));
    Ok(())
}
