//! The YAML file `keel node --config FILE` reads: what a node needs to join its cluster. Flags
//! given on the command line override the file's values. See `deploy/keel-node.example.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::server::PeerSpec;

/// A node's configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's id (unique in the cluster, > 0).
    pub node_id: Option<u64>,
    /// The cluster's id.
    pub cluster_id: Option<String>,
    /// Address (host:port) to listen on for clients and peers.
    pub listen: Option<String>,
    /// Address (host:port) to serve Prometheus metrics on (absent: not served).
    pub metrics_listen: Option<String>,
    /// Directory for the node's RocksDB and snapshots.
    pub data_dir: Option<PathBuf>,
    /// Number of shard groups (fixed when the cluster is created).
    pub shards: Option<u64>,
    /// Every member of the initial cluster, this node included.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// A fresh node joining a running cluster (see `keel node --join`).
    pub join: Option<bool>,
    /// Longest a poll waits before an empty answer, in seconds.
    pub long_poll_seconds: Option<u64>,
    /// Temporal dynamic-config values by key (`limit.blobSize.error: 2097152`).
    #[serde(default)]
    pub dynamic_config: BTreeMap<String, serde_yaml::Value>,
}

/// One member of the initial cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// Its node id.
    pub id: u64,
    /// Its address (host:port) as the other nodes reach it.
    pub address: String,
}

impl NodeFile {
    /// Reads and parses `path`; the error names the file and what is wrong.
    pub fn read(path: &Path) -> Result<NodeFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The peers as `--peer` would give them.
    pub fn peer_specs(&self) -> Vec<PeerSpec> {
        self.peers
            .iter()
            .map(|p| PeerSpec {
                id: p.id,
                addr: p.address.clone(),
            })
            .collect()
    }

    /// The dynamic-config values as `KEY=VALUE` assignments (applied before any flag's).
    pub fn dynamic_config_assignments(&self) -> Result<Vec<String>, String> {
        self.dynamic_config
            .iter()
            .map(|(key, value)| match value {
                serde_yaml::Value::Number(n) => Ok(format!("{key}={n}")),
                serde_yaml::Value::String(s) => Ok(format!("{key}={s}")),
                other => Err(format!(
                    "dynamic_config {key} needs a number, not {other:?}"
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/keel-node.example.yaml");
        let file = NodeFile::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.node_id, Some(1));
        assert_eq!(file.peer_specs().len(), 3);
        assert_eq!(file.shards, Some(16));
        assert_eq!(file.metrics_listen.as_deref(), Some("0.0.0.0:9090"));
        assert!(file.dynamic_config_assignments().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<NodeFile, _> = serde_yaml::from_str("node_id: 1\nlisten_address: x\n");
        let error = parsed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("listen_address"), "{error}");
    }
}
