//! Counters of the node's durable writes: fsyncs of the WAL, the synced batches they covered,
//! the time they took and how many failed. The synced writer (and `Store::sync_wal`) update them
//! with relaxed atomic adds; whoever exports metrics reads them with [`crate::Store::sync_stats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The live counters, shared by the store and its writer thread.
#[derive(Debug, Default)]
pub(crate) struct SyncCounters {
    fsyncs: AtomicU64,
    failed_fsyncs: AtomicU64,
    synced_batches: AtomicU64,
    fsync_nanos: AtomicU64,
}

impl SyncCounters {
    /// One fsync of the WAL that took `took`, made `batches` synced batches durable (0 for an
    /// explicit sync) and failed or not.
    pub(crate) fn record_fsync(&self, batches: usize, took: Duration, failed: bool) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed_fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.synced_batches
            .fetch_add(batches as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsync_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn read(&self) -> SyncStats {
        SyncStats {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            failed_fsyncs: self.failed_fsyncs.load(Ordering::Relaxed),
            synced_batches: self.synced_batches.load(Ordering::Relaxed),
            fsync_time: Duration::from_nanos(self.fsync_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A reading of a store's durable-write counters since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// fsyncs of the WAL (group commits and explicit syncs).
    pub fsyncs: u64,
    /// fsyncs that failed.
    pub failed_fsyncs: u64,
    /// Synced write batches made durable (several share one fsync under load).
    pub synced_batches: u64,
    /// Time spent in those fsyncs.
    pub fsync_time: Duration,
}
