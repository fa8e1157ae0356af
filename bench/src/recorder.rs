//! Shared counters and samples of one run, written by clients and workers, read by the report.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use crate::stats::Sample;

/// Everything a run measures. The measurement window opens at `window_start` (after warm-up);
/// only workflows finished inside it count toward `completed`, `errors` and the samples.
pub struct Recorder {
    pub window_start: Instant,
    pub in_flight: AtomicU64,
    /// Workflows finished successfully, warm-up included.
    pub completed_total: AtomicU64,
    pub warmup_completed: AtomicU64,
    pub errors: AtomicU64,
    pub warmup_errors: AtomicU64,
    pub workflow_tasks: AtomicU64,
    pub activity_tasks: AtomicU64,
    /// Worker calls (polls, task responses) that failed; the server retries such tasks.
    pub worker_errors: AtomicU64,
    samples: Mutex<Vec<Sample>>,
    timer_late_ms: Mutex<Vec<f64>>,
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    pub fn new(window_start: Instant) -> Self {
        Recorder {
            window_start,
            in_flight: AtomicU64::new(0),
            completed_total: AtomicU64::new(0),
            warmup_completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            warmup_errors: AtomicU64::new(0),
            workflow_tasks: AtomicU64::new(0),
            activity_tasks: AtomicU64::new(0),
            worker_errors: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            timer_late_ms: Mutex::new(Vec::new()),
            error_kinds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `at` is inside the measurement window (warm-up is over).
    pub fn is_measured(&self, at: Instant) -> bool {
        at >= self.window_start
    }

    /// Records a workflow that started at `started_at` and has just finished with `outcome`.
    /// It is measured if it finished inside the window, wherever it started: a run by duration
    /// whose workflows outlast it still measures something.
    pub fn finished(&self, started_at: Instant, outcome: &anyhow::Result<()>) {
        let now = Instant::now();
        let measured = self.is_measured(now);
        match outcome {
            Ok(()) => {
                self.completed_total.fetch_add(1, Ordering::Relaxed);
                if measured {
                    let sample = Sample {
                        finished_at_s: now.duration_since(self.window_start).as_secs_f64(),
                        latency_ms: now.duration_since(started_at).as_secs_f64() * 1e3,
                    };
                    lock(&self.samples).push(sample);
                } else {
                    self.warmup_completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                if measured {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.warmup_errors.fetch_add(1, Ordering::Relaxed);
                }
                self.error_kind(&format!("{error:#}"));
            }
        }
    }

    /// Counts an error by its message (the first 200 characters).
    pub fn error_kind(&self, message: &str) {
        let kind: String = message.chars().take(200).collect();
        *lock(&self.error_kinds).entry(kind).or_default() += 1;
    }

    pub fn worker_error(&self, message: &str) {
        self.worker_errors.fetch_add(1, Ordering::Relaxed);
        self.error_kind(&format!("worker: {message}"));
    }

    pub fn timer_late(&self, late_ms: f64) {
        lock(&self.timer_late_ms).push(late_ms);
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    pub fn timer_late_ms(&self) -> Vec<f64> {
        lock(&self.timer_late_ms).clone()
    }

    pub fn error_kinds(&self) -> BTreeMap<String, u64> {
        lock(&self.error_kinds).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
