//! Raft timing and log-retention settings shared by every group of a node.

use std::time::Duration;

/// Settings for every group of a node.
///
/// The defaults are chosen for many groups on few cores: a 150 ms heartbeat costs each leader
/// about 7 small RPCs per follower per second per group (17 groups on 3 nodes: about 230 RPCs/s
/// per node, a few percent of one core), and a 500-1000 ms randomized election timeout tolerates
/// scheduling stalls on a loaded 2-core machine. openraft 0.9 makes followers refuse votes for a
/// leader lease equal to the timeout's upper bound after they last heard from the leader, so a
/// dead leader is replaced 1-2 s after its last heartbeat (with 800-1600 ms it took about 3 s).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Interval between leader heartbeats.
    pub heartbeat: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// A snapshot is built after this many entries since the last one. Building one costs a
    /// pinned view and a WAL sync whatever the state's size, and lets the log behind it go:
    /// the fewer entries live in the log when its memtable is flushed, the fewer are written
    /// to (and later compacted in) SST files.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, so a slightly lagging follower catches up
    /// from the log instead of needing the snapshot.
    pub entries_kept_after_snapshot: u64,
    /// Most entries sent in one AppendEntries message.
    pub max_entries_per_append: u64,
    /// Longest a proposal or a linearizable read waits for a quorum; a leader cut off from its
    /// followers would otherwise wait until it learns of a new term.
    pub quorum_wait: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            heartbeat: Duration::from_millis(150),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            snapshot_every_entries: 1_000,
            entries_kept_after_snapshot: 1_000,
            max_entries_per_append: 512,
            quorum_wait: Duration::from_secs(30),
        }
    }
}

impl GroupConfig {
    pub(crate) fn to_openraft(
        &self,
        cluster_name: &str,
    ) -> Result<openraft::Config, openraft::ConfigError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: 10_000,
            max_payload_entries: self.max_entries_per_append,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
    }
}
