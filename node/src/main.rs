//! keel-node: the `keel` server binary. It owns configuration, node start-up (store, Raft
//! groups, bootstrap) and the gRPC servers; later the Temporal frontend, history engine,
//! matching, timers and visibility.
//!
//! It must not reach into RocksDB or openraft directly: storage goes through keel-storage and
//! replication through keel-raft.

mod admin;
mod byte_runs;
mod config_file;
mod debug_kv;
mod deployments;
mod dev_cluster;
mod engine;
mod frontend;
mod health;
mod list_query;
mod matching;
mod metrics;
mod namespaces;
mod queue_configs;
mod server;
mod shard;
mod shard_count;
mod wire;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config_file::NodeFile;
use crate::dev_cluster::DevCluster;
use crate::server::{NodeConfig, PeerSpec, ShardCount};
use keel_proto::admin::MembershipChange;

/// glibc's malloc took ~16% of the server's CPU under load (README, "Where the time goes");
/// mimalloc's per-thread free lists take a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Shard groups of a new `keel dev` data dir.
const DEV_SHARDS: u64 = 2;
/// Shard groups of a new `keel node` data dir.
const NODE_SHARDS: u64 = 16;

/// Keel: a Temporal-compatible durable-execution server with replicated embedded storage.
#[derive(Parser, Debug)]
#[command(name = "keel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a server for development: one process (every Raft group has one member), or with
    /// --nodes N a local cluster of N `keel node` processes.
    Dev {
        /// Port to listen on (127.0.0.1); with --nodes N, node I listens on PORT+I-1.
        #[arg(long, default_value_t = 7233)]
        port: u16,
        /// Start a local cluster of this many node processes (data under DATA_DIR/node-I).
        #[arg(long, default_value_t = 1)]
        nodes: u16,
        /// Serve Prometheus metrics at http://127.0.0.1:PORT/metrics (default: off, as in
        /// `temporal server start-dev`); with --nodes N, node I serves them on PORT+I-1.
        #[arg(long, value_name = "PORT")]
        metrics_port: Option<u16>,
        /// Directory for the node's RocksDB and snapshot files.
        #[arg(long, default_value = "./keel-data")]
        data_dir: PathBuf,
        /// Number of shard groups, fixed when the data dir is created (default for a new one:
        /// 2, which batches more work per Raft entry on a laptop than more shards would; an
        /// existing one keeps its count).
        #[arg(long)]
        shards: Option<u64>,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Run one node of a cluster (settings from --config FILE, overridden by flags).
    Node {
        /// A YAML file with the node's settings (see deploy/keel-node.example.yaml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// This node's id (unique in the cluster, > 0).
        #[arg(long)]
        node_id: Option<u64>,
        /// The cluster's id; every node and data dir of a cluster carries the same one.
        #[arg(long)]
        cluster_id: Option<String>,
        /// Address (host:port) to listen on for peers and clients.
        #[arg(long)]
        listen: Option<String>,
        /// Address (host:port) to serve Prometheus metrics on, at /metrics (default: off).
        #[arg(long, value_name = "HOST:PORT")]
        metrics_listen: Option<String>,
        /// Every member of the initial cluster, this node included, as ID=HOST:PORT (repeat or
        /// separate with commas).
        #[arg(long, value_delimiter = ',')]
        peer: Vec<PeerSpec>,
        /// Directory for the node's RocksDB and snapshot files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Number of shard groups, fixed when the cluster is created (default for a new data
        /// dir: 16; an existing one keeps its count).
        #[arg(long)]
        shards: Option<u64>,
        /// Serve the test-only replicated key/value RPC (keel.debug.v1.DebugKv).
        #[arg(long)]
        debug_kv: bool,
        /// A fresh node joining a running cluster: initialize nothing and wait to be added with
        /// `keel cluster add-node`.
        #[arg(long)]
        join: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Inspect a running cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Nodes and whether they are up; per Raft group its leader, term, log and applied index,
    /// and each replica's lag behind the leader.
    Status {
        /// Any node of the cluster (host:port of its client port).
        #[arg(long, default_value = "127.0.0.1:7233")]
        address: String,
    },
    /// Add a node (started with `keel node --join`) as a voter of every group.
    AddNode {
        /// Any node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7233")]
        address: String,
        /// The new node's id.
        #[arg(long)]
        node_id: u64,
        /// The new node's address (host:port), as the others will reach it.
        #[arg(long)]
        node_address: String,
    },
    /// Remove a node (live or dead) from every group.
    RemoveNode {
        /// Any node of the cluster other than the one removed.
        #[arg(long, default_value = "127.0.0.1:7233")]
        address: String,
        /// The node to remove.
        #[arg(long)]
        node_id: u64,
    },
}

/// Limits and timing shared by `dev` and `node`.
#[derive(clap::Args, Debug)]
struct Tuning {
    /// Override a limit by its Temporal dynamic-config name, e.g.
    /// `limit.historyCount.suggestContinueAsNew=50` (repeatable; see the README for the keys).
    #[arg(long = "dynamic-config-value", value_name = "KEY=VALUE")]
    dynamic_config: Vec<String>,
    /// A Temporal dynamic-config YAML file (`KEY: [{value: V}]`, as Temporal's server reads
    /// them); `--dynamic-config-value` overrides it.
    #[arg(long = "dynamic-config-file", value_name = "FILE")]
    dynamic_config_file: Option<PathBuf>,
    /// Longest a PollWorkflowTaskQueue/PollActivityTaskQueue call waits before an empty answer
    /// (default 60).
    #[arg(long, value_name = "SECONDS")]
    long_poll_seconds: Option<u64>,
}

impl Tuning {
    /// The flags that give a `keel node` these settings.
    fn node_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = self
            .dynamic_config
            .iter()
            .map(|v| format!("--dynamic-config-value={v}"))
            .collect();
        if let Some(path) = &self.dynamic_config_file {
            flags.push(format!("--dynamic-config-file={}", path.display()));
        }
        if let Some(seconds) = self.long_poll_seconds {
            flags.push(format!("--long-poll-seconds={seconds}"));
        }
        flags
    }

    /// The limits from the config file's values (`file`), the dynamic-config file, then flags.
    fn limits(&self, file: &[String]) -> Result<engine::Limits, String> {
        let mut limits = engine::Limits::default();
        for assignment in file {
            limits.set(assignment)?;
        }
        if let Some(path) = &self.dynamic_config_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for assignment in engine::dynamic_config_file(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                limits.set(&assignment)?;
            }
        }
        for assignment in &self.dynamic_config {
            limits.set(assignment)?;
        }
        Ok(limits)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keel: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = match cli.command {
        Command::Cluster { command } => {
            let report = match command {
                ClusterCommand::Status { address } => {
                    runtime.block_on(admin::cluster_status(&address))
                }
                ClusterCommand::AddNode {
                    address,
                    node_id,
                    node_address,
                } => runtime.block_on(admin::change_membership(
                    &address,
                    MembershipChange {
                        add: true,
                        node_id,
                        address: node_address,
                    },
                )),
                ClusterCommand::RemoveNode { address, node_id } => {
                    runtime.block_on(admin::change_membership(
                        &address,
                        MembershipChange {
                            add: false,
                            node_id,
                            address: String::new(),
                        },
                    ))
                }
            };
            return match report {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("keel: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Dev {
            port,
            nodes,
            metrics_port,
            data_dir,
            shards,
            tuning,
        } if nodes > 1 => {
            let cluster = DevCluster {
                port,
                metrics_port,
                data_dir,
                shards: ShardCount::or_default(shards, DEV_SHARDS),
                nodes,
                node_flags: tuning.node_flags(),
            };
            return match runtime.block_on(cluster.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("keel: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Dev {
            port,
            metrics_port,
            data_dir,
            shards,
            tuning,
            ..
        } => {
            let listen = format!("127.0.0.1:{port}");
            NodeConfig {
                node_id: 1,
                cluster_id: "keel-dev".to_string(),
                peers: vec![PeerSpec {
                    id: 1,
                    addr: listen.clone(),
                }],
                listen,
                metrics_listen: metrics_port.map(|port| format!("127.0.0.1:{port}")),
                data_dir,
                shards: ShardCount::or_default(shards, DEV_SHARDS),
                debug_kv: true,
                default_namespace: true,
                join: false,
                limits: match tuning.limits(&[]) {
                    Ok(limits) => limits,
                    Err(error) => return usage_error(&error),
                },
                long_poll: long_poll(tuning.long_poll_seconds),
            }
        }
        Command::Node {
            config,
            node_id,
            cluster_id,
            listen,
            metrics_listen,
            peer,
            data_dir,
            shards,
            debug_kv,
            join,
            tuning,
        } => {
            let file = match config.as_deref().map(NodeFile::read).transpose() {
                Ok(file) => file.unwrap_or_default(),
                Err(error) => return usage_error(&error),
            };
            let assignments = match file.dynamic_config_assignments() {
                Ok(assignments) => assignments,
                Err(error) => return usage_error(&error),
            };
            let missing = |what: &str| format!("--{what} is required (as a flag or in --config)");
            let Some(node_id) = node_id.or(file.node_id) else {
                return usage_error(&missing("node-id"));
            };
            let Some(cluster_id) = cluster_id.or(file.cluster_id.clone()) else {
                return usage_error(&missing("cluster-id"));
            };
            let Some(listen) = listen.or(file.listen.clone()) else {
                return usage_error(&missing("listen"));
            };
            let Some(data_dir) = data_dir.or(file.data_dir.clone()) else {
                return usage_error(&missing("data-dir"));
            };
            let peers = if peer.is_empty() {
                file.peer_specs()
            } else {
                peer
            };
            if peers.is_empty() {
                return usage_error(&missing("peer"));
            }
            NodeConfig {
                node_id,
                cluster_id,
                listen,
                metrics_listen: metrics_listen.or(file.metrics_listen.clone()),
                peers,
                data_dir,
                shards: ShardCount::or_default(shards.or(file.shards), NODE_SHARDS),
                debug_kv,
                default_namespace: true,
                join: join || file.join.unwrap_or(false),
                limits: match tuning.limits(&assignments) {
                    Ok(limits) => limits,
                    Err(error) => return usage_error(&error),
                },
                long_poll: long_poll(tuning.long_poll_seconds.or(file.long_poll_seconds)),
            }
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn long_poll(seconds: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(seconds.unwrap_or(60).max(1))
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("keel: {message}");
    ExitCode::from(2)
}
