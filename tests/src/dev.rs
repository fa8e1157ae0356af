//! A `keel dev` process on free ports (Prometheus metrics on), and a workflow service client
//! once its namespace `default` exists.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use keel_proto::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

use crate::process::{free_port, keel_binary};

/// A running `keel dev`, killed when dropped.
pub struct DevServer {
    /// Its gRPC port on 127.0.0.1.
    pub port: u16,
    /// Its Prometheus port on 127.0.0.1.
    pub metrics_port: u16,
    log: PathBuf,
    _process: tokio::process::Child,
    _root: tempfile::TempDir,
}

impl DevServer {
    /// Starts `keel dev` with `args` added, and waits up to 60 s for namespace `default`.
    pub async fn start(
        args: &[&str],
    ) -> anyhow::Result<(DevServer, WorkflowServiceClient<Channel>)> {
        let root = tempfile::tempdir()?;
        let (port, metrics_port) = (free_port()?, free_port()?);
        let log = root.path().join("keel-dev.log");
        let process = tokio::process::Command::new(keel_binary()?)
            .args(["dev", "--port", &port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(args)
            .arg("--data-dir")
            .arg(root.path().join("keel-data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let server = DevServer {
            port,
            metrics_port,
            log,
            _process: process,
            _root: root,
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) = endpoint.connect().await {
                let mut client = WorkflowServiceClient::new(channel);
                let request = DescribeNamespaceRequest {
                    namespace: "default".into(),
                    ..Default::default()
                };
                if client.describe_namespace(request).await.is_ok() {
                    return Ok((server, client));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "keel dev did not serve namespace default within 60 s\n{}",
                    server.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
