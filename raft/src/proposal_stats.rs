//! Counters of one group's proposals on this node: commands and log entries committed through
//! its proposer, and commands whose proposal failed. The proposer adds to them with relaxed
//! atomics once per log entry; whoever exports metrics reads them with
//! [`crate::ShardGroup::proposal_stats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of one group.
#[derive(Debug, Default)]
pub(crate) struct ProposalCounters {
    commands_committed: AtomicU64,
    entries_committed: AtomicU64,
    commands_failed: AtomicU64,
}

impl ProposalCounters {
    /// One log entry carrying `commands` commands was committed.
    pub(crate) fn committed(&self, commands: usize) {
        self.entries_committed.fetch_add(1, Ordering::Relaxed);
        self.commands_committed
            .fetch_add(commands as u64, Ordering::Relaxed);
    }

    /// A log entry carrying `commands` commands failed (not leader, shut down, rejected).
    pub(crate) fn failed(&self, commands: usize) {
        self.commands_failed
            .fetch_add(commands as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn read(&self) -> ProposalStats {
        ProposalStats {
            commands_committed: self.commands_committed.load(Ordering::Relaxed),
            entries_committed: self.entries_committed.load(Ordering::Relaxed),
            commands_failed: self.commands_failed.load(Ordering::Relaxed),
        }
    }
}

/// A reading of one group's proposal counters since the group was opened on this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProposalStats {
    /// Commands proposed here and committed.
    pub commands_committed: u64,
    /// Log entries proposed here and committed (each carries a batch of commands).
    pub entries_committed: u64,
    /// Commands whose proposal failed (an unknown outcome for the caller).
    pub commands_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_commands_are_counted_apart() {
        let counters = ProposalCounters::default();
        counters.committed(3);
        counters.committed(1);
        counters.failed(2);
        assert_eq!(
            counters.read(),
            ProposalStats {
                commands_committed: 4,
                entries_committed: 2,
                commands_failed: 2,
            }
        );
    }
}
