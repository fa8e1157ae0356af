//! `keel node` processes started from the built binary, and a DebugKv client that follows
//! leader hints between them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use keel_proto::debug::debug_kv_client::DebugKvClient;
use keel_proto::debug::{GetRequest, PutRequest};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The `keel` binary: `$KEEL_BIN`, or `keel` next to the test executable's deps/ directory.
pub fn keel_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("KEEL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot locate the target dir from {}", exe.display()))?;
    let path = dir.join("keel");
    if !path.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --workspace --all-targets` (scripts/test does) or set KEEL_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// A free 127.0.0.1 port (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One `keel node` process of a test cluster.
pub struct KeelProcess {
    /// Node id.
    pub id: u64,
    /// Listen address.
    pub addr: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl KeelProcess {
    /// A node of `cluster_id` with `peers` (ID=HOST:PORT, comma separated), not started.
    pub fn new(
        id: u64,
        addr: &str,
        cluster_id: &str,
        peers: &str,
        root: &Path,
        shards: u64,
    ) -> KeelProcess {
        let data_dir = root.join(format!("node-{id}"));
        let args = vec![
            "node".to_string(),
            format!("--node-id={id}"),
            format!("--cluster-id={cluster_id}"),
            format!("--listen={addr}"),
            format!("--peer={peers}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--shards={shards}"),
            "--debug-kv".to_string(),
        ];
        KeelProcess {
            id,
            addr: addr.to_string(),
            log: root.join(format!("node-{id}.log")),
            data_dir,
            args,
            child: None,
        }
    }

    /// A node started from the YAML file `config` (`keel node --config`), which must name the
    /// node's `id`, `addr` and data dir `root/node-ID`; not started.
    pub fn from_config(id: u64, addr: &str, config: &Path, root: &Path) -> KeelProcess {
        KeelProcess {
            id,
            addr: addr.to_string(),
            log: root.join(format!("node-{id}.log")),
            data_dir: root.join(format!("node-{id}")),
            args: vec!["node".to_string(), format!("--config={}", config.display())],
            child: None,
        }
    }

    /// The same node started without `--shards` (an existing data dir keeps its count).
    pub fn without_shards(mut self) -> KeelProcess {
        self.args.retain(|arg| !arg.starts_with("--shards="));
        self
    }

    /// The same node started with `--join` (a fresh member of a running cluster).
    pub fn joining(mut self) -> KeelProcess {
        self.args.push("--join".to_string());
        self
    }

    /// Starts the process (stderr appended to [`KeelProcess::log`]).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(keel_binary()?)
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn keel")?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("node {} not started", self.id))?;
        let status = tokio::time::timeout(within, child.wait())
            .await
            .map_err(|_| anyhow!("node {} still running after {within:?}", self.id))??;
        self.child = None;
        Ok(status.code())
    }

    /// The process's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A DebugKv client over several nodes: sends each request to the node it believes leads the
/// group, follows `keel-leader-addr` hints, and tries the other nodes when one is down.
pub struct KvClient {
    addrs: Vec<String>,
    leaders: std::collections::HashMap<u64, String>,
}

impl KvClient {
    /// A client over the nodes at `addrs`.
    pub fn new(addrs: Vec<String>) -> KvClient {
        KvClient {
            addrs,
            leaders: Default::default(),
        }
    }

    async fn connect(addr: &str) -> anyhow::Result<DebugKvClient<Channel>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(3))
            .connect()
            .await?;
        Ok(DebugKvClient::new(channel))
    }

    fn candidates(&self, group: u64) -> Vec<String> {
        let mut order: Vec<String> = self.leaders.get(&group).cloned().into_iter().collect();
        order.extend(
            self.addrs
                .iter()
                .filter(|a| Some(*a) != self.leaders.get(&group))
                .cloned(),
        );
        order
    }

    /// Sends one request to each candidate node in turn (the known leader first), following
    /// leader hints, until one answers. An error is an unknown outcome for writes.
    async fn call_once<T, F, Fut>(&mut self, group: u64, mut send: F) -> anyhow::Result<T>
    where
        F: FnMut(DebugKvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = anyhow!("no node tried");
        for addr in self.candidates(group) {
            let client = match Self::connect(&addr).await {
                Ok(client) => client,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match send(client).await {
                Ok(answer) => {
                    self.leaders.insert(group, addr);
                    return Ok(answer);
                }
                Err(status) => {
                    if let Some(hint) = status
                        .metadata()
                        .get("keel-leader-addr")
                        .and_then(|v| v.to_str().ok())
                    {
                        self.leaders.insert(group, hint.to_string());
                    }
                    last = anyhow!("{addr}: {}", status.message());
                }
            }
        }
        Err(last)
    }

    /// One attempt on each candidate node; Ok(log index) when acknowledged. Errors are unknown
    /// outcomes (the write may have been committed).
    pub async fn put_once(&mut self, group: u64, key: &[u8], value: &[u8]) -> anyhow::Result<u64> {
        self.call_once(group, |mut client| {
            let request = PutRequest {
                group_id: group,
                key: key.to_vec(),
                value: value.to_vec(),
            };
            async move { Ok(client.put(request).await?.into_inner().log_index) }
        })
        .await
    }

    /// Linearizable get, retried across nodes for up to `within`.
    pub async fn get(
        &mut self,
        group: u64,
        key: &[u8],
        within: Duration,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + within;
        loop {
            let attempt = self
                .call_once(group, |mut client| {
                    let request = GetRequest {
                        group_id: group,
                        key: key.to_vec(),
                    };
                    async move {
                        let reply = client.get(request).await?.into_inner();
                        Ok(reply.found.then_some(reply.value))
                    }
                })
                .await;
            match attempt {
                Ok(value) => return Ok(value),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("get from group {group}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
