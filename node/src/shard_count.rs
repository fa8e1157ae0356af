//! The cluster's shard count, recorded in the metadata group: the metadata group's leader
//! records its own count when none is recorded yet, and a node whose count differs from the
//! recorded one stops with an error (each node also refuses a restart with another count, from
//! its own data dir, and `keel cluster add-node` refuses such a node before it joins).

use std::time::Duration;

use keel_raft::ShardGroup;

use crate::shard::applier::{WriteSet, APPLIED};
use crate::shard::keys;

/// How often a node looks again while no count is recorded.
const RECHECK: Duration = Duration::from_millis(500);

/// Why this node must not serve.
#[derive(Debug, thiserror::Error)]
pub enum ShardCountError {
    /// The cluster was created with another shard count.
    #[error("this node was started with --shards {local} but the cluster has {recorded} shard groups (recorded in its metadata group): stop it, wipe its data dir and start it again with --shards {recorded} --join")]
    Mismatch {
        /// This node's count.
        local: u64,
        /// The cluster's.
        recorded: u64,
    },
    /// The recorded value is not a count.
    #[error("the shard count recorded in the metadata group is corrupt ({0} bytes)")]
    Corrupt(usize),
}

/// Returns once the metadata group records `shards` (recording it first, when this node leads
/// the group and nothing is recorded); an error if it records another count.
pub async fn agree_on_shard_count(
    metadata: ShardGroup,
    shards: u64,
) -> Result<(), ShardCountError> {
    let key = keys::shard_count();
    loop {
        match metadata.read_local(&key) {
            Ok(Some(bytes)) => {
                let recorded = <[u8; 8]>::try_from(bytes.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| ShardCountError::Corrupt(bytes.len()))?;
                if recorded == shards {
                    return Ok(());
                }
                return Err(ShardCountError::Mismatch {
                    local: shards,
                    recorded,
                });
            }
            Ok(None) if metadata.is_leader() => record(&metadata, &key, shards).await,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot read the recorded shard count"),
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// Proposes `shards` as the recorded count, fenced by this leader's term (a write that loses
/// leadership meanwhile is not applied; the next leader looks again).
async fn record(metadata: &ShardGroup, key: &[u8], shards: u64) {
    let writes = WriteSet {
        fence_term: Some(metadata.metrics().borrow().current_term),
        puts: vec![(key.to_vec(), shards.to_be_bytes().to_vec())],
        deletes: Vec::new(),
    };
    match metadata.propose(writes.encode()).await {
        Ok(committed) if committed.response.as_ref() == APPLIED => {
            tracing::info!(
                shards,
                "recorded the cluster's shard count in the metadata group"
            );
        }
        Ok(_) => tracing::debug!("shard count not recorded: leadership changed"),
        Err(error) => tracing::debug!(%error, "shard count not recorded yet"),
    }
}
