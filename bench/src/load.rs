//! The load loop: closed loop at a fixed concurrency or open loop at a fixed rate, with a
//! warm-up, stopping by count or by duration, then draining what is still running.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

use crate::{driver::Driver, pacing, recorder::Recorder};

/// How workflows arrive.
#[derive(Clone, Copy, Debug)]
pub enum Arrivals {
    /// `concurrency` clients, each starting the next workflow when its last one closed.
    Closed { concurrency: usize },
    /// Workflows start at `rate_per_s`, whatever is still running (up to `max_in_flight`).
    Open { rate_per_s: f64, max_in_flight: u64 },
}

/// When to stop starting measured workflows.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    Count(u64),
    After(Duration),
}

/// The whole shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub arrivals: Arrivals,
    pub stop: Stop,
    /// How long to wait, after the last start, for running workflows to close.
    pub drain_timeout: Duration,
}

/// Decides, for each would-be start, whether it may go ahead.
struct Admission {
    stop: Stop,
    measured_started: AtomicU64,
}

impl Admission {
    /// Whether a workflow starting now (inside the window or not) may start.
    fn admit(&self, recorder: &Recorder, now: Instant) -> bool {
        if !recorder.is_measured(now) {
            return true;
        }
        match self.stop {
            Stop::Count(count) => self.measured_started.fetch_add(1, Ordering::Relaxed) < count,
            Stop::After(duration) => now < recorder.window_start + duration,
        }
    }
}

/// Shared by every started workflow.
struct Runner {
    driver: Arc<Driver>,
    recorder: Arc<Recorder>,
    id_prefix: String,
    next_id: AtomicU64,
}

impl Runner {
    async fn run_one(&self, started_at: Instant) {
        let index = self.next_id.fetch_add(1, Ordering::Relaxed);
        let workflow_id = format!("{}-{index}", self.id_prefix);
        self.recorder.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = self.driver.run_workflow(&workflow_id).await;
        self.recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.recorder.finished(started_at, &outcome);
    }
}

/// Runs the load; returns when every started workflow closed or the drain timed out (then the
/// unfinished ones are counted as errors).
pub async fn run(driver: Arc<Driver>, recorder: Arc<Recorder>, id_prefix: String, load: Load) {
    let runner = Arc::new(Runner {
        driver,
        recorder: recorder.clone(),
        id_prefix,
        next_id: AtomicU64::new(0),
    });
    let admission = Arc::new(Admission {
        stop: load.stop,
        measured_started: AtomicU64::new(0),
    });
    let mut tasks = JoinSet::new();
    match load.arrivals {
        Arrivals::Closed { concurrency } => {
            for _ in 0..concurrency.max(1) {
                let runner = runner.clone();
                let admission = admission.clone();
                tasks.spawn(async move {
                    loop {
                        let now = Instant::now();
                        if !admission.admit(&runner.recorder, now) {
                            return;
                        }
                        runner.run_one(now).await;
                    }
                });
            }
        }
        Arrivals::Open {
            rate_per_s,
            max_in_flight,
        } => {
            let start = Instant::now();
            let mut launched = 0;
            'pacing: loop {
                let due = pacing::arrivals_due(start.elapsed(), rate_per_s);
                while launched < due {
                    let now = Instant::now();
                    if !admission.admit(&recorder, now) {
                        break 'pacing;
                    }
                    launched += 1;
                    if recorder.in_flight.load(Ordering::Relaxed) >= max_in_flight {
                        recorder.finished(
                            now,
                            &Err(anyhow::anyhow!(
                                "skipped: {max_in_flight} workflows already in flight"
                            )),
                        );
                        continue;
                    }
                    let runner = runner.clone();
                    tasks.spawn(async move { runner.run_one(now).await });
                }
                // Reap finished tasks so the set stays small.
                while tasks.try_join_next().is_some() {}
                tokio::time::sleep_until(
                    (start + pacing::arrival_offset(launched, rate_per_s)).into(),
                )
                .await;
            }
        }
    }
    let drained = tokio::time::timeout(load.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let unfinished = recorder.in_flight.load(Ordering::Relaxed);
        recorder.errors.fetch_add(unfinished, Ordering::Relaxed);
        recorder.error_kind(&format!(
            "{unfinished} workflows still running {} s after the last start",
            load.drain_timeout.as_secs()
        ));
        tasks.abort_all();
    }
}
