//! The newest entries of one group's log, kept in memory as they are appended, so that applying
//! them and replicating them does not read back from RocksDB what was just written. Holds a
//! contiguous run of indexes ending at the log's last entry; truncation and purges remove from
//! it exactly what they remove from the log. Bounded in entries and in command bytes.

use std::collections::VecDeque;

use openraft::EntryPayload;

use crate::types::KeelRaft;

type Entry = openraft::Entry<KeelRaft>;

/// Most entries kept.
const MAX_ENTRIES: usize = 1024;
/// Most command bytes kept.
const MAX_BYTES: usize = 32 << 20;

/// A contiguous tail of the log.
#[derive(Default)]
pub(crate) struct RecentEntries {
    entries: VecDeque<Entry>,
    bytes: usize,
}

fn size(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(proposal) => proposal.commands.iter().map(|c| c.len()).sum(),
        _ => 0,
    }
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index)
    }

    /// Entries were appended to the log (after any truncation openraft asked for).
    pub(crate) fn appended(&mut self, entry: &Entry) {
        let index = entry.log_id.index;
        // An append over kept entries replaces them and everything after (openraft truncates
        // first, but the tail must match the log even if it did not say so).
        self.truncated(index);
        if self.last_index().is_some_and(|last| last + 1 != index) {
            self.clear();
        }
        self.bytes += size(entry);
        self.entries.push_back(entry.clone());
        while self.entries.len() > MAX_ENTRIES || (self.bytes > MAX_BYTES && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    /// The log lost every entry from `index` on.
    pub(crate) fn truncated(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some(entry) = self.entries.pop_back() {
                self.bytes -= size(&entry);
            }
        }
    }

    /// The log lost every entry up to and including `index`.
    pub(crate) fn purged(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= size(&entry);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries with indexes in `[start, end)` (`end` None: through the last), if all of
    /// them are kept here; else None (read the log).
    pub(crate) fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.last_index()?;
        // The tail ends at the log's last entry, so a range past it holds nothing more.
        if start < first || start > last + 1 {
            return None;
        }
        let end = end.unwrap_or(last + 1);
        if end <= start {
            return Some(Vec::new());
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end.min(last + 1) - first).ok()?;
        Some(self.entries.range(from..to).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Proposal;
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Proposal {
                commands: vec![Bytes::from(vec![0u8; 10])],
            }),
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|es| {
            es.iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect()
        })
    }

    #[test]
    fn ranges_inside_the_tail_are_served_and_others_are_not() {
        let mut recent = RecentEntries::default();
        for index in 5..=9 {
            recent.appended(&entry(1, index));
        }
        assert_eq!(indexes(recent.get(6, Some(8))), Some(vec![(1, 6), (1, 7)]));
        assert_eq!(indexes(recent.get(8, None)), Some(vec![(1, 8), (1, 9)]));
        assert_eq!(indexes(recent.get(8, Some(20))), Some(vec![(1, 8), (1, 9)]));
        assert_eq!(indexes(recent.get(10, None)), Some(vec![]));
        assert_eq!(
            indexes(recent.get(4, Some(7))),
            None,
            "starts before the tail"
        );
        assert_eq!(indexes(recent.get(11, None)), None, "starts past the log");
        assert_eq!(indexes(RecentEntries::default().get(1, None)), None);
    }

    #[test]
    fn truncation_purges_and_overwriting_appends_keep_the_tail_equal_to_the_log() {
        let mut recent = RecentEntries::default();
        for index in 1..=6 {
            recent.appended(&entry(1, index));
        }
        recent.truncated(5);
        assert_eq!(indexes(recent.get(4, None)), Some(vec![(1, 4)]));
        recent.appended(&entry(2, 5));
        // An append over kept entries without a truncation first.
        recent.appended(&entry(3, 3));
        assert_eq!(
            indexes(recent.get(1, None)),
            Some(vec![(1, 1), (1, 2), (3, 3)])
        );
        recent.purged(2);
        assert_eq!(indexes(recent.get(2, None)), None);
        assert_eq!(indexes(recent.get(3, None)), Some(vec![(3, 3)]));
        // A gap (the log was replaced underneath, e.g. by a snapshot) starts a new tail.
        recent.appended(&entry(3, 10));
        assert_eq!(indexes(recent.get(3, None)), None);
        assert_eq!(indexes(recent.get(10, None)), Some(vec![(3, 10)]));
    }

    #[test]
    fn the_tail_is_bounded() {
        let mut recent = RecentEntries::default();
        for index in 1..=(MAX_ENTRIES as u64 + 10) {
            recent.appended(&entry(1, index));
        }
        assert_eq!(recent.entries.len(), MAX_ENTRIES);
        assert_eq!(recent.first_index(), Some(11));
        assert_eq!(recent.bytes, MAX_ENTRIES * 10);
    }
}
