//! Group commit for durable writes: one thread takes every synced write queued by any Raft group
//! of the node, writes them to RocksDB (each batch atomically) and then fsyncs the WAL once for
//! all of them before completing any. Under load many groups' appends and votes share an fsync.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rocksdb::DB;

use crate::sync_stats::SyncCounters;
use crate::StorageError;

/// Called once a synced write is durable or has failed. Runs on the writer thread.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// Most batches written under one fsync.
const MAX_BATCHES_PER_SYNC: usize = 4096;

struct Job {
    batch: rocksdb::WriteBatch,
    done: Completion,
}

/// The writer thread and the queue feeding it. Dropping it drains the queue and joins the thread.
pub(crate) struct SyncedWriter {
    queue: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl SyncedWriter {
    pub(crate) fn start(db: Arc<DB>, path: PathBuf, counters: Arc<SyncCounters>) -> SyncedWriter {
        let (queue, jobs) = channel();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("keel-synced-writer".to_string())
            .spawn(move || run(db, thread_path, jobs, &counters));
        match thread {
            Ok(thread) => SyncedWriter {
                queue: Some(queue),
                thread: Some(thread),
                path,
            },
            Err(error) => {
                tracing::error!(%error, "cannot start the synced writer thread; synced writes will fail");
                SyncedWriter {
                    queue: None,
                    thread: None,
                    path,
                }
            }
        }
    }

    pub(crate) fn submit(&self, batch: rocksdb::WriteBatch, done: Completion) {
        let job = Job { batch, done };
        let rejected = match &self.queue {
            Some(queue) => queue.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = rejected {
            (job.done)(Err(StorageError::Closed {
                path: self.path.clone(),
            }));
        }
    }
}

impl Drop for SyncedWriter {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: Arc<DB>, path: PathBuf, jobs: Receiver<Job>, counters: &SyncCounters) {
    let mut no_sync = rocksdb::WriteOptions::default();
    no_sync.set_sync(false);
    let mut written: Vec<(Result<(), rocksdb::Error>, Completion)> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        while let Some(job) = next {
            let result = db.write_opt(job.batch, &no_sync);
            written.push((result, job.done));
            next = if written.len() < MAX_BATCHES_PER_SYNC {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        let started = Instant::now();
        let synced = db.flush_wal(true);
        counters.record_fsync(written.len(), started.elapsed(), synced.is_err());
        for (result, done) in written.drain(..) {
            let outcome = result.and_then(|()| synced.clone());
            done(outcome.map_err(|source| StorageError::Rocks {
                operation: "synced write",
                path: path.clone(),
                source,
            }));
        }
    }
}
