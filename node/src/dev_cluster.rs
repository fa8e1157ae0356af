//! `keel dev --nodes N`: a real local cluster for trying failover on one machine. It starts N
//! `keel node` processes (client ports PORT..PORT+N-1, metrics ports, if asked for,
//! METRICS_PORT..METRICS_PORT+N-1, data under DATA_DIR/node-I) and
//! supervises them: a node that dies (say, one the user killed) stays down until restarted by
//! hand with the command printed at start-up; SIGINT or SIGTERM stops them all.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::server::{db_dir, ShardCount};

/// The cluster to start.
pub struct DevCluster {
    /// Client port of node 1.
    pub port: u16,
    /// Metrics port of node 1, if metrics are served.
    pub metrics_port: Option<u16>,
    /// Data of node I goes to `data_dir/node-I`.
    pub data_dir: PathBuf,
    /// Shard groups.
    pub shards: ShardCount,
    /// Nodes (at least 2).
    pub nodes: u16,
    /// Flags passed on to every node (limits, long polls).
    pub node_flags: Vec<String>,
}

impl DevCluster {
    /// The `keel node` arguments of node `id` (from 1).
    fn node_args(&self, id: u16) -> Vec<String> {
        let address = |i: u16| format!("127.0.0.1:{}", self.port + i - 1);
        let peers: Vec<String> = (1..=self.nodes)
            .map(|i| format!("{i}={}", address(i)))
            .collect();
        let data_dir = self.data_dir.join(format!("node-{id}"));
        let mut args = vec![
            "node".to_string(),
            format!("--node-id={id}"),
            "--cluster-id=keel-dev".to_string(),
            format!("--listen={}", address(id)),
            format!("--peer={}", peers.join(",")),
            format!("--data-dir={}", data_dir.display()),
        ];
        if let Some(port) = self.metrics_port {
            args.push(format!("--metrics-listen=127.0.0.1:{}", port + id - 1));
        }
        // A default goes only to a new data dir: an existing one keeps the count it has.
        match self.shards {
            ShardCount::Given(count) => args.push(format!("--shards={count}")),
            ShardCount::Default(count) if !db_dir(&data_dir).exists() => {
                args.push(format!("--shards={count}"))
            }
            ShardCount::Default(_) => {}
        }
        args.extend(self.node_flags.iter().cloned());
        args
    }

    fn spawn(&self, exe: &Path, id: u16) -> anyhow::Result<Child> {
        Command::new(exe)
            .args(self.node_args(id))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {id} ({})", exe.display()))
    }

    /// Starts the nodes and waits for a signal (or for every node to exit).
    pub async fn run(self) -> anyhow::Result<()> {
        let fits = |port: u16| u32::from(port) + u32::from(self.nodes) <= 65_536;
        if self.nodes < 2 || !fits(self.port) || !self.metrics_port.is_none_or(fits) {
            anyhow::bail!(
                "--nodes must be at least 2 and the ports PORT..PORT+N-1 (and METRICS_PORT..METRICS_PORT+N-1) must exist"
            );
        }
        let exe = std::env::current_exe().context("cannot find the keel binary")?;
        let mut children = Vec::new();
        for id in 1..=self.nodes {
            let child = self.spawn(&exe, id)?;
            let metrics = match self.metrics_port {
                Some(port) => format!(", metrics at http://127.0.0.1:{}/metrics", port + id - 1),
                None => String::new(),
            };
            eprintln!(
                "keel dev: node {id} on 127.0.0.1:{}{metrics} (pid {}); restart it with: {} {}",
                self.port + id - 1,
                child.id().unwrap_or(0),
                exe.display(),
                self.node_args(id).join(" ")
            );
            children.push(child);
        }
        eprintln!(
            "keel dev: {} nodes; any of them serves clients; `keel cluster status --address 127.0.0.1:{}` shows leaders",
            self.nodes, self.port
        );
        {
            let all_exited = async {
                for child in children.iter_mut() {
                    let _ = child.wait().await;
                }
            };
            tokio::select! {
                _ = crate::server::shutdown_signal() => {}
                _ = all_exited => anyhow::bail!("every node exited"),
            }
        }
        for child in &children {
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: kill(2) with a pid this process spawned and has not reaped.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        for mut child in children {
            let _ = child.wait().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(metrics_port: Option<u16>) -> DevCluster {
        DevCluster {
            port: 7000,
            metrics_port,
            data_dir: PathBuf::from("/nonexistent/keel-data"),
            shards: ShardCount::Given(2),
            nodes: 3,
            node_flags: Vec::new(),
        }
    }

    #[test]
    fn each_node_serves_metrics_on_its_own_port_when_asked() {
        let with = cluster(Some(9100));
        for id in 1..=3 {
            let expected = format!("--metrics-listen=127.0.0.1:{}", 9100 + id - 1);
            assert!(
                with.node_args(id).contains(&expected),
                "{:?}",
                with.node_args(id)
            );
        }
        let without = cluster(None);
        assert!(!without
            .node_args(1)
            .iter()
            .any(|arg| arg.starts_with("--metrics-listen")));
    }
}
