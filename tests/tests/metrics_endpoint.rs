//! `keel dev --metrics-port`: after a few Temporal RPCs and a replicated write, `/metrics`
//! answers Prometheus's text format with the request counters of those RPCs (by method and
//! status code) and the Raft, storage and process figures. Reproduce with
//! `cargo build --workspace && cargo test -p keel-tests --test metrics_endpoint`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use keel_proto::temporal::api::workflowservice::v1::{
    DescribeNamespaceRequest, GetSystemInfoRequest,
};
use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
use keel_tests::process::{free_port, keel_binary, KvClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses one `name{label="value",...} value` line (labels optional).
fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let (series, value) = line
        .rsplit_once(' ')
        .ok_or_else(|| anyhow!("no value in {line:?}"))?;
    let value: f64 = value
        .parse()
        .with_context(|| format!("value of {line:?} is not a number"))?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .ok_or_else(|| anyhow!("unclosed labels in {line:?}"))?;
            let mut labels = BTreeMap::new();
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                let (key, quoted) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow!("label without = in {line:?}"))?;
                let value = quoted
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| anyhow!("unquoted label value in {line:?}"))?;
                labels.insert(key.to_string(), value.to_string());
            }
            (name, labels)
        }
        None => (series, BTreeMap::new()),
    };
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid_name {
        bail!("invalid metric name in {line:?}");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// GET /metrics: the content type and every sample (every non-comment line must parse).
async fn scrape(port: u16) -> anyhow::Result<(String, Vec<Sample>)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("scrape answered {head}");
    }
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    let samples = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_sample)
        .collect::<anyhow::Result<_>>()?;
    Ok((content_type, samples))
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

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
    let root = tempfile::tempdir()?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let log = root.path().join("keel-dev.log");
    let _dev = tokio::process::Command::new(keel_binary()?)
        .args(["dev", "--port", &port.to_string()])
        .args(["--metrics-port", &metrics_port.to_string(), "--data-dir"])
        .arg(root.path().join("keel-data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Until namespace default exists (keel dev creates it once its metadata group leads).
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = loop {
        if let Ok(channel) = endpoint.connect().await {
            let mut client = WorkflowServiceClient::new(channel);
            if describe(&mut client, "default").await == tonic::Code::Ok {
                break client;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "keel dev did not serve namespace default within 60 s\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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

#[test]
fn the_sample_parser_takes_labels_and_refuses_what_is_not_a_sample() -> anyhow::Result<()> {
    let sample = parse_sample(r#"service_requests{operation="Start",status_code="OK"} 3"#)?;
    assert_eq!(sample.name, "service_requests");
    assert_eq!(
        sample.labels.get("status_code").map(String::as_str),
        Some("OK")
    );
    assert_eq!(sample.value, 3.0);
    assert_eq!(parse_sample("keel_storage_fsyncs_total 1.5")?.value, 1.5);
    assert!(parse_sample("no_value").is_err());
    assert!(parse_sample(r#"x{a=b} 1"#).is_err());
    assert!(parse_sample("9bad 1").is_err());
    Ok(())
}
