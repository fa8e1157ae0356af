//! `keel-bench`: a lean load generator for Temporal-compatible servers. It is both the client and
//! the worker, speaking the worker protocol directly and answering workflow tasks with
//! precomputed commands (no SDK, no replay), so the server, not the generator, is what it
//! measures. This crate owns the scenarios, the load shapes, the measurements and their report
//! (text, JSON, SVG); it knows nothing of Keel's internals and works against any endpoint.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use keel_proto::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
use serde::Serialize;

use keel_bench::{
    connection,
    connection::Connections,
    decide::WorkflowPlan,
    driver::Driver,
    load,
    load::{Arrivals, Load, Stop},
    plot,
    recorder::Recorder,
    stats,
    stats::{Bucket, Percentiles},
    worker::Worker,
};

/// The generator shares the machine with the server it measures: mimalloc spends less of it
/// on allocation than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for Temporal-compatible servers: starts workflows and works them itself.
#[derive(Parser, Debug)]
#[command(name = "keel-bench", version)]
struct Args {
    /// The server's frontend, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7233")]
    target: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Stop after starting this many workflows after warm-up (default: run by duration).
    #[arg(long, conflicts_with = "duration")]
    workflows: Option<u64>,
    /// Start measured workflows for this many seconds (default 10 unless --workflows).
    #[arg(long)]
    duration: Option<f64>,
    /// Closed loop: this many workflows in flight at all times (default 50 unless --rate).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: start this many workflows per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load before measuring; workflows started then are not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Write an SVG of throughput and latency over time to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Workflow-task pollers.
    #[arg(long, default_value_t = 8)]
    workflow_pollers: usize,
    /// Activity-task pollers.
    #[arg(long, default_value_t = 8)]
    activity_pollers: usize,
    /// HTTP/2 connections to the target, shared round-robin by every call.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// `chain`: activities per workflow.
    #[arg(long, default_value_t = 10)]
    chain_length: u32,
    /// `fanout`: children per workflow.
    #[arg(long, default_value_t = 10)]
    children: u32,
    /// `entity`: signals per workflow.
    #[arg(long, default_value_t = 100)]
    signals: u32,
    /// `entity`: updates per workflow.
    #[arg(long, default_value_t = 10)]
    updates: u32,
    /// `timers`: how long each workflow sleeps.
    #[arg(long, default_value_t = 5.0)]
    timer_seconds: f64,
    /// Open loop: arrivals beyond this many running workflows are skipped (and counted as errors).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: u64,
    /// Seconds to wait, after the last start, for running workflows to close.
    #[arg(long, default_value_t = 120.0)]
    drain_timeout: f64,
    /// Seconds to keep trying to connect and find the namespace before giving up.
    #[arg(long, default_value_t = 30.0)]
    ready_timeout: f64,
    /// Task queue to use (default: a new one per run).
    #[arg(long)]
    task_queue: Option<String>,
    /// Ask for activities to start eagerly, in the workflow task completion's answer, as the
    /// official SDKs do by default (`--eager-activities false` to poll for every activity).
    /// Servers that do not support it (Temporal's unless `system.enableActivityEagerExecution`)
    /// answer without activities, which are then polled.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    eager_activities: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    /// One activity per workflow.
    Hello,
    /// `--chain-length` sequential activities per workflow.
    Chain,
    /// `--signals` signals and `--updates` updates per workflow.
    Entity,
    /// Each workflow sleeps `--timer-seconds`; reports how late timers fire.
    Timers,
    /// Each workflow starts `--children` children and waits for them.
    Fanout,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Hello => "hello",
            Scenario::Chain => "chain",
            Scenario::Entity => "entity",
            Scenario::Timers => "timers",
            Scenario::Fanout => "fanout",
        }
    }
}

/// The result of a run, as printed with `--json`.
#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    target: String,
    namespace: String,
    task_queue: String,
    mode: &'static str,
    concurrency: Option<usize>,
    rate_per_s: Option<f64>,
    warmup_s: f64,
    /// Workflows that completed after warm-up (measured; a run by count also measures warm-up
    /// workflows still running when warm-up ended).
    completed: u64,
    /// Measured workflows that failed, timed out or were skipped.
    errors: u64,
    /// From the end of warm-up to the last measured completion.
    elapsed_s: f64,
    throughput_per_s: f64,
    /// Start call to close event seen, of the measured workflows.
    latency_ms: Percentiles,
    /// Every workflow that completed, warm-up included (for per-workflow server costs).
    workflows_total: u64,
    warmup_completed: u64,
    warmup_errors: u64,
    workflow_tasks: u64,
    activity_tasks: u64,
    rpc_retries: u64,
    worker_errors: u64,
    /// `timers` only: timer fired event time minus started event time minus the duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    timer_late_ms: Option<Percentiles>,
    error_kinds: BTreeMap<String, u64>,
    /// CPU seconds keel-bench itself used (it shares the machine with the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cpu_s: Option<f64>,
}

fn plan(args: &Args) -> WorkflowPlan {
    match args.scenario {
        Scenario::Hello => WorkflowPlan::Chain { activities: 1 },
        Scenario::Chain => WorkflowPlan::Chain {
            activities: args.chain_length,
        },
        Scenario::Entity => WorkflowPlan::Entity {
            signals: args.signals,
            updates: args.updates,
        },
        Scenario::Timers => WorkflowPlan::Timer {
            seconds: args.timer_seconds,
        },
        Scenario::Fanout => WorkflowPlan::Fanout {
            children: args.children,
        },
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let connections = Arc::new(
        connect_when_ready(
            &args.target,
            &args.namespace,
            args.connections,
            Duration::from_secs_f64(args.ready_timeout),
        )
        .await?,
    );
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let short_id = &run_id[..12];
    let task_queue = args
        .task_queue
        .clone()
        .unwrap_or_else(|| format!("keel-bench-{short_id}"));
    let identity = format!("keel-bench@{}", std::process::id());
    let plan = plan(&args);
    let arrivals = match args.rate {
        Some(rate_per_s) => Arrivals::Open {
            rate_per_s,
            max_in_flight: args.max_in_flight,
        },
        None => Arrivals::Closed {
            concurrency: args.concurrency.unwrap_or(50),
        },
    };
    let stop = match (args.workflows, args.duration) {
        (Some(count), _) => Stop::Count(count),
        (None, Some(seconds)) => Stop::After(Duration::from_secs_f64(seconds)),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    let load = Load {
        arrivals,
        stop,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
    };

    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(
        started + Duration::from_secs_f64(args.warmup.max(0.0)),
    ));
    let worker = Arc::new(Worker {
        namespace: args.namespace.clone(),
        task_queue: task_queue.clone(),
        identity: identity.clone(),
        plan: plan.clone(),
        connections: connections.clone(),
        recorder: recorder.clone(),
        eager_activities: args.eager_activities,
    });
    let mut background = Vec::new();
    for _ in 0..args.workflow_pollers.max(1) {
        background.push(tokio::spawn(worker.clone().poll_workflow_tasks()));
    }
    if matches!(plan, WorkflowPlan::Chain { .. }) {
        for _ in 0..args.activity_pollers.max(1) {
            background.push(tokio::spawn(worker.clone().poll_activity_tasks()));
        }
    }
    background.push(tokio::spawn(progress(
        recorder.clone(),
        connections.clone(),
        started,
    )));
    let driver = Arc::new(Driver {
        namespace: args.namespace.clone(),
        task_queue: task_queue.clone(),
        identity,
        plan,
        connections: connections.clone(),
    });
    let id_prefix = format!("keel-bench-{}-{short_id}", args.scenario.name());
    load::run(driver, recorder.clone(), id_prefix, load).await;
    for task in background {
        task.abort();
    }

    let samples = recorder.samples();
    let latencies: Vec<f64> = samples.iter().map(|s| s.latency_ms).collect();
    let elapsed_s = samples.iter().map(|s| s.finished_at_s).fold(0.0, f64::max);
    let completed = samples.len() as u64;
    let timer_late = recorder.timer_late_ms();
    let report = Report {
        scenario: args.scenario.name(),
        target: args.target.clone(),
        namespace: args.namespace.clone(),
        task_queue,
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        concurrency: match arrivals {
            Arrivals::Closed { concurrency } => Some(concurrency),
            Arrivals::Open { .. } => None,
        },
        rate_per_s: args.rate,
        warmup_s: args.warmup,
        completed,
        errors: recorder.errors.load(Ordering::Relaxed),
        elapsed_s,
        throughput_per_s: if elapsed_s > 0.0 {
            completed as f64 / elapsed_s
        } else {
            0.0
        },
        latency_ms: Percentiles::of(&latencies),
        workflows_total: recorder.completed_total.load(Ordering::Relaxed),
        warmup_completed: recorder.warmup_completed.load(Ordering::Relaxed),
        warmup_errors: recorder.warmup_errors.load(Ordering::Relaxed),
        workflow_tasks: recorder.workflow_tasks.load(Ordering::Relaxed),
        activity_tasks: recorder.activity_tasks.load(Ordering::Relaxed),
        rpc_retries: connections.retries.load(Ordering::Relaxed),
        worker_errors: recorder.worker_errors.load(Ordering::Relaxed),
        timer_late_ms: (!timer_late.is_empty()).then(|| Percentiles::of(&timer_late)),
        error_kinds: recorder.error_kinds(),
        client_cpu_s: own_cpu_seconds(),
    };
    if let Some(path) = &args.plot {
        let title = format!(
            "keel-bench {} against {} ({})",
            report.scenario,
            report.target,
            shape_text(&report)
        );
        let buckets: Vec<Bucket> = stats::time_series(&samples, 1.0);
        std::fs::write(
            path,
            plot::svg(
                &plot::Labels {
                    title: &title,
                    rate: "workflows/s",
                    time: "seconds since warm-up ended",
                },
                &buckets,
                &[],
            ),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// utime+stime of this process from /proc/self/stat (Linux; clock ticks assumed 100 Hz).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is stat field 3; utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Connects once the server accepts connections and knows the namespace (it may be starting).
async fn connect_when_ready(
    target: &str,
    namespace: &str,
    connection_count: usize,
    timeout: Duration,
) -> Result<Connections> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let connections = Connections::open(target, connection_count).await?;
            let request = DescribeNamespaceRequest {
                namespace: namespace.to_string(),
                ..Default::default()
            };
            connections
                .client()
                .describe_namespace(request)
                .await
                .map_err(|status| {
                    anyhow::anyhow!(
                        "describe namespace {namespace}: {}",
                        connection::describe(&status)
                    )
                })?;
            anyhow::Ok(connections)
        };
        match attempt.await {
            Ok(connections) => return Ok(connections),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("{target} not ready after {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn shape_text(report: &Report) -> String {
    match (report.concurrency, report.rate_per_s) {
        (Some(concurrency), _) => format!("closed loop, concurrency {concurrency}"),
        (None, Some(rate)) => format!("open loop, {rate}/s"),
        (None, None) => String::new(),
    }
}

fn print_text(report: &Report) {
    let l = &report.latency_ms;
    println!(
        "{} against {} ({}, warm-up {} s)",
        report.scenario,
        report.target,
        shape_text(report),
        report.warmup_s
    );
    println!(
        "completed {} workflows in {:.2} s: {:.1}/s; errors {}",
        report.completed, report.elapsed_s, report.throughput_per_s, report.errors
    );
    println!(
        "latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
        l.p50, l.p90, l.p99, l.max, l.mean
    );
    if let Some(t) = &report.timer_late_ms {
        println!(
            "timers fired late by ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            t.p50, t.p90, t.p99, t.max
        );
    }
    println!(
        "workflow tasks {}, activity tasks {}, rpc retries {}, worker errors {}, warm-up completed {} (errors {})",
        report.workflow_tasks,
        report.activity_tasks,
        report.rpc_retries,
        report.worker_errors,
        report.warmup_completed,
        report.warmup_errors
    );
    if let Some(cpu) = report.client_cpu_s {
        println!("keel-bench used {cpu:.1} CPU-s");
    }
    for (kind, count) in &report.error_kinds {
        println!("  {count} x {kind}");
    }
}

/// Prints one line a second to stderr: completions, rate, in flight, errors.
async fn progress(recorder: Arc<Recorder>, connections: Arc<Connections>, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_completed = 0;
    loop {
        ticker.tick().await;
        let completed = recorder.completed_total.load(Ordering::Relaxed);
        let phase = if recorder.is_measured(Instant::now()) {
            "measuring"
        } else {
            "warm-up"
        };
        eprintln!(
            "[{:6.1}s] {phase:9} completed {completed:8} ({:6}/s)  in flight {:6}  errors {}  retries {}  worker errors {}",
            started.elapsed().as_secs_f64(),
            completed - last_completed,
            recorder.in_flight.load(Ordering::Relaxed),
            recorder.errors.load(Ordering::Relaxed) + recorder.warmup_errors.load(Ordering::Relaxed),
            connections.retries.load(Ordering::Relaxed),
            recorder.worker_errors.load(Ordering::Relaxed),
        );
        last_completed = completed;
    }
}
