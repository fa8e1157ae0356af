//! Commit throughput and latency of one Raft group, 1 node and 3 nodes (in one process, real
//! gRPC over loopback, real fsyncs), 64-byte and 4 KiB entries, 1 and 64 concurrent proposers,
//! next to plain synced RocksDB writes on the same disk.
//!
//! Full run: `cargo bench --workspace --bench raft_commit` (prints a markdown table); add
//! `-- --only TEXT` to run only the cases whose name contains TEXT.
//! Under `cargo test` it runs a short smoke pass so the code stays working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_raft::kv::KvCommand;
use keel_raft::GroupConfig;
use keel_storage::{Cf, NodeIdentity, Store};
use keel_tests::cluster::TestCluster;

struct Measured {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn row(&self, what: &str) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let pct = |p: f64| {
            sorted
                .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0)
        };
        format!(
            "| {what} | {:.0} | {:.2} | {:.2} |",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99)
        )
    }
}

fn rocksdb_synced(writers: usize, value: usize, duration: Duration) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let identity = NodeIdentity {
        cluster_id: "bench".to_string(),
        node_id: 1,
    };
    let store = Store::open(dir.path(), &identity)?;
    let payload = vec![7u8; value];
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let payload = payload.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while start.elapsed() < duration {
                    let mut batch = store.batch();
                    let key = [(w as u64).to_be_bytes(), i.to_be_bytes()].concat();
                    batch.put(Cf::RaftLog, &key, &payload);
                    let t = Instant::now();
                    store.write_synced_blocking(batch)?;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??,
        );
    }
    Ok(Measured {
        ops: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn raft_commits(
    nodes: u64,
    proposers: usize,
    value: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let cluster = TestCluster::start(nodes, 1, GroupConfig::default()).await?;
    let group = 1;
    let leader = cluster
        .leader_of(group)
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let handle = cluster
        .group_on(leader, group)
        .ok_or_else(|| anyhow::anyhow!("no group"))?;
    let payload = Bytes::from(vec![7u8; value]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let handle = handle.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < duration {
                let command = KvCommand::Put {
                    key: Bytes::from(format!("p{p}-{i}")),
                    value: payload.clone(),
                }
                .encode();
                let t = Instant::now();
                handle.propose(command).await?;
                latencies.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    for id in cluster.running() {
        cluster.registry(id)?.shutdown().await;
    }
    Ok(Measured {
        ops: latencies.len() as u64,
        elapsed,
        latencies,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_default();
    let duration = if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(300)
    };
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    );
    println!("| case | entries/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for value in [64usize, 4096] {
        for writers in [1usize, 64] {
            let case = format!("RocksDB synced put, {value} B, {writers} writers");
            if case.contains(&only) {
                println!("{}", rocksdb_synced(writers, value, duration)?.row(&case));
            }
        }
    }
    for nodes in [1u64, 3] {
        for value in [64usize, 4096] {
            for proposers in [1usize, 64] {
                let case =
                    format!("Raft commit, {nodes} node(s), {value} B, {proposers} proposers");
                if case.contains(&only) {
                    let m = runtime.block_on(raft_commits(nodes, proposers, value, duration))?;
                    println!("{}", m.row(&case));
                }
            }
        }
    }
    Ok(())
}
