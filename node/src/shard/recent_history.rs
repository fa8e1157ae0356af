//! The latest history events of runs this node's writer wrote, kept decoded after their commit
//! so that poll responses and history reads need not read them back from RocksDB and decode
//! them again. Events are immutable once committed, so a cached event is always the stored one;
//! a read the cache does not cover whole goes to RocksDB. Bounded by the memory the events take
//! (a decoded event is ~2 KiB before its strings and payloads), oldest runs evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::engine::proto::HistoryEvent;

/// A run by its ids.
#[derive(Clone, Copy)]
pub struct RunRef<'a> {
    pub namespace_id: &'a str,
    pub workflow_id: &'a str,
    pub run_id: &'a str,
}

/// Most memory, in bytes, that cached events take, over all runs: room for the recent events
/// of a few thousand runs, what polls that follow commits need (a long-idle run's events are
/// read back from RocksDB).
const MAX_BYTES: usize = 8 << 20;
/// Most memory that one run's cached events take; a longer history is read from RocksDB.
const MAX_RUN_BYTES: usize = 1 << 20;

/// The memory a decoded event of `encoded` bytes takes, about: the struct and its heap parts
/// (each string and payload its own allocation).
pub(super) fn event_weight(encoded: usize) -> usize {
    std::mem::size_of::<HistoryEvent>() + 3 * encoded
}

/// Committed events of one run, ready to be cached: its identity and events in order, each with
/// its weight ([`event_weight`]).
pub(super) struct FreshEvents {
    pub namespace_id: String,
    pub workflow_id: String,
    pub run_id: String,
    pub events: Vec<(HistoryEvent, usize)>,
}

/// Recent events of the runs a shard's writer wrote on this node.
#[derive(Default)]
pub struct RecentHistory {
    inner: Mutex<Runs>,
}

#[derive(Default)]
struct Runs {
    /// By run id (namespace and workflow id checked on every read).
    runs: HashMap<String, CachedRun>,
    /// Run ids in the order their entries were made, for eviction (may name runs since gone).
    order: VecDeque<String>,
    bytes: usize,
}

struct CachedRun {
    namespace_id: String,
    workflow_id: String,
    /// Id of `events[0]`; the events are contiguous from there.
    first: i64,
    events: Vec<HistoryEvent>,
    bytes: usize,
}

impl CachedRun {
    fn next(&self) -> i64 {
        self.first + self.events.len() as i64
    }
}

impl RecentHistory {
    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds events committed and applied on this replica. Events that do not follow a run's
    /// cached ones (another node wrote those in between) start its entry over.
    pub(super) fn append(&self, fresh: Vec<FreshEvents>) {
        let mut runs = self.runs();
        for run in fresh {
            let Some(first) = run.events.first().map(|(e, _)| e.event_id) else {
                continue;
            };
            let added: usize = run.events.iter().map(|(_, size)| size).sum();
            let follows = runs.runs.get(&run.run_id).is_some_and(|cached| {
                cached.next() == first
                    && cached.namespace_id == run.namespace_id
                    && cached.workflow_id == run.workflow_id
            });
            if !follows {
                runs.remove(&run.run_id);
            }
            let entry = runs.runs.entry(run.run_id.clone());
            let cached = entry.or_insert_with(|| CachedRun {
                namespace_id: run.namespace_id,
                workflow_id: run.workflow_id,
                first,
                events: Vec::new(),
                bytes: 0,
            });
            cached.events.extend(run.events.into_iter().map(|(e, _)| e));
            cached.bytes += added;
            let too_long = cached.bytes > MAX_RUN_BYTES;
            runs.bytes += added;
            if !follows {
                runs.order.push_back(run.run_id.clone());
            }
            if too_long {
                runs.remove(&run.run_id);
            }
        }
        runs.evict();
    }

    /// Drops a run's events (the run was deleted).
    pub(super) fn forget(&self, run_id: &str) {
        self.runs().remove(run_id);
    }

    /// Drops everything (this node stopped writing the shard).
    pub(super) fn clear(&self) {
        *self.runs() = Runs::default();
    }

    /// Events `[from, to)` of the run, at most `limit`, if all of them are cached.
    pub fn read(
        &self,
        run: RunRef<'_>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Option<Vec<HistoryEvent>> {
        let runs = self.runs();
        let cached = runs.runs.get(run.run_id)?;
        if cached.namespace_id != run.namespace_id || cached.workflow_id != run.workflow_id {
            return None;
        }
        let wanted = usize::try_from(to.saturating_sub(from))
            .unwrap_or(0)
            .min(limit);
        let end = from.saturating_add(wanted as i64);
        if wanted > 0 && (from < cached.first || end > cached.next()) {
            return None;
        }
        let start = usize::try_from(from - cached.first).unwrap_or(0);
        Some(
            cached
                .events
                .get(start..start + wanted)
                .unwrap_or_default()
                .to_vec(),
        )
    }
}

impl Runs {
    fn remove(&mut self, run_id: &str) {
        if let Some(gone) = self.runs.remove(run_id) {
            self.bytes -= gone.bytes;
        }
    }

    /// Drops the oldest entries until the cache is within its bound (and forgets order slots
    /// of runs removed meanwhile once they outnumber the live ones).
    fn evict(&mut self) {
        while self.bytes > MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
        if self.order.len() > 2 * self.runs.len() + 1024 {
            let runs = &self.runs;
            self.order.retain(|id| runs.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEIGHT: usize = 4096;

    fn event(id: i64) -> (HistoryEvent, usize) {
        (
            HistoryEvent {
                event_id: id,
                ..Default::default()
            },
            WEIGHT,
        )
    }

    fn fresh(run: &str, ids: std::ops::Range<i64>) -> FreshEvents {
        FreshEvents {
            namespace_id: "ns".into(),
            workflow_id: "wf".into(),
            run_id: run.into(),
            events: ids.map(event).collect(),
        }
    }

    fn state(run_id: &str) -> RunRef<'_> {
        RunRef {
            namespace_id: "ns",
            workflow_id: "wf",
            run_id,
        }
    }

    fn ids(events: Option<Vec<HistoryEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.event_id).collect())
    }

    #[test]
    fn reads_only_what_it_holds_whole() {
        let cache = RecentHistory::default();
        cache.append(vec![fresh("a", 1..4)]);
        cache.append(vec![fresh("a", 4..6)]);
        let a = state("a");
        assert_eq!(
            ids(cache.read(a, 1, 6, usize::MAX)),
            Some(vec![1, 2, 3, 4, 5])
        );
        assert_eq!(ids(cache.read(a, 3, 6, 2)), Some(vec![3, 4]));
        assert_eq!(ids(cache.read(a, 5, 5, usize::MAX)), Some(vec![]));
        assert_eq!(
            ids(cache.read(a, 1, 7, usize::MAX)),
            None,
            "event 6 is not cached"
        );
        assert_eq!(ids(cache.read(state("b"), 1, 2, 1)), None);
        let other = RunRef {
            workflow_id: "other",
            ..a
        };
        assert_eq!(
            ids(cache.read(other, 1, 2, 1)),
            None,
            "same run id, other workflow"
        );
    }

    #[test]
    fn a_gap_starts_the_run_over_and_forget_drops_it() {
        let cache = RecentHistory::default();
        cache.append(vec![fresh("a", 1..4)]);
        // Events 4..8 were written by another node's writer meanwhile.
        cache.append(vec![fresh("a", 8..10)]);
        let a = state("a");
        assert_eq!(ids(cache.read(a, 1, 10, usize::MAX)), None);
        assert_eq!(ids(cache.read(a, 8, 10, usize::MAX)), Some(vec![8, 9]));
        cache.forget("a");
        assert_eq!(ids(cache.read(a, 8, 10, usize::MAX)), None);
        assert_eq!(cache.runs().bytes, 0);
    }

    #[test]
    fn stays_within_its_bounds() {
        let cache = RecentHistory::default();
        let per_run = 100;
        let runs = MAX_BYTES / (per_run * WEIGHT) + 10;
        for run in 0..runs {
            cache.append(vec![fresh(&run.to_string(), 1..per_run as i64 + 1)]);
        }
        let held = cache.runs();
        assert!(held.bytes <= MAX_BYTES, "{} bytes held", held.bytes);
        assert!(
            !held.runs.contains_key("0"),
            "the oldest run is evicted first"
        );
        assert!(held.runs.contains_key(&(runs - 1).to_string()));
        drop(held);
        let long = MAX_RUN_BYTES / WEIGHT + 1;
        cache.append(vec![fresh("long", 1..long as i64 + 1)]);
        assert_eq!(ids(cache.read(state("long"), 1, 2, 1)), None);
    }
}
