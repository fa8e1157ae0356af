//! keel-node: the `keel` server binary. It owns configuration, node start-up (store, Raft
//! groups, bootstrap) and the gRPC servers; later the Temporal frontend, history engine,
//! matching, timers and visibility.
//!
//! It must not reach into RocksDB or openraft directly: storage goes through keel-storage and
//! replication through keel-raft.

mod byte_runs;
mod debug_kv;
mod engine;
mod frontend;
mod health;
mod matching;
mod namespaces;
mod server;
mod shard;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::server::{NodeConfig, PeerSpec};

/// Keel: a Temporal-compatible durable-execution server with replicated embedded storage.
#[derive(Parser, Debug)]
#[command(name = "keel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a single-node server for development (one process, every Raft group has one member).
    Dev {
        /// Port to listen on (127.0.0.1).
        #[arg(long, default_value_t = 7233)]
        port: u16,
        /// Directory for the node's RocksDB and snapshot files.
        #[arg(long, default_value = "./keel-data")]
        data_dir: PathBuf,
        /// Number of shard groups (fixed when the data dir is created).
        #[arg(long, default_value_t = 16)]
        shards: u64,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Run one node of a cluster.
    Node {
        /// This node's id (unique in the cluster, > 0).
        #[arg(long)]
        node_id: u64,
        /// The cluster's id; every node and data dir of a cluster carries the same one.
        #[arg(long)]
        cluster_id: String,
        /// Address (host:port) to listen on for peers and clients.
        #[arg(long)]
        listen: String,
        /// Every member of the initial cluster, this node included, as ID=HOST:PORT (repeat or
        /// separate with commas).
        #[arg(long, value_delimiter = ',', required = true)]
        peer: Vec<PeerSpec>,
        /// Directory for the node's RocksDB and snapshot files.
        #[arg(long)]
        data_dir: PathBuf,
        /// Number of shard groups (fixed when the cluster is created).
        #[arg(long, default_value_t = 16)]
        shards: u64,
        /// Serve the test-only replicated key/value RPC (keel.debug.v1.DebugKv).
        #[arg(long)]
        debug_kv: bool,
        #[command(flatten)]
        tuning: Tuning,
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
    /// Longest a PollWorkflowTaskQueue/PollActivityTaskQueue call waits before an empty answer.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    long_poll_seconds: u64,
}

impl Tuning {
    fn limits(&self) -> Result<engine::Limits, String> {
        let mut limits = engine::Limits::default();
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
    let config = match cli.command {
        Command::Dev {
            port,
            data_dir,
            shards,
            tuning,
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
                data_dir,
                shards,
                debug_kv: true,
                default_namespace: true,
                limits: match tuning.limits() {
                    Ok(limits) => limits,
                    Err(error) => return usage_error(&error),
                },
                long_poll: std::time::Duration::from_secs(tuning.long_poll_seconds.max(1)),
            }
        }
        Command::Node {
            node_id,
            cluster_id,
            listen,
            peer,
            data_dir,
            shards,
            debug_kv,
            tuning,
        } => NodeConfig {
            node_id,
            cluster_id,
            listen,
            peers: peer,
            data_dir,
            shards,
            debug_kv,
            default_namespace: true,
            limits: match tuning.limits() {
                Ok(limits) => limits,
                Err(error) => return usage_error(&error),
            },
            long_poll: std::time::Duration::from_secs(tuning.long_poll_seconds.max(1)),
        },
    };
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
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keel: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("keel: {message}");
    ExitCode::from(2)
}
