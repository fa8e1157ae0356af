//! keel-node: the `keel` server binary. It owns configuration, node start-up (store, Raft
//! groups, bootstrap) and the gRPC servers; later the Temporal frontend, history engine,
//! matching, timers and visibility.
//!
//! It must not reach into RocksDB or openraft directly: storage goes through keel-storage and
//! replication through keel-raft.

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
    },
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
                limits: engine::Limits::default(),
                long_poll: std::time::Duration::from_secs(60),
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
        } => NodeConfig {
            node_id,
            cluster_id,
            listen,
            peers: peer,
            data_dir,
            shards,
            debug_kv,
            default_namespace: true,
            limits: engine::Limits::default(),
            long_poll: std::time::Duration::from_secs(60),
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
