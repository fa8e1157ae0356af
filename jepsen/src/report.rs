//! The report directory: `history.jsonl` (written as the run goes), `verdicts.json` (the
//! checkers' report), `summary.md` (seed, the command that reproduces the run, operation and
//! fault counts, each checker's verdict) and `latency.svg` (client throughput and latency over time with the fault
//! windows shaded). Also the progress line printed while the run goes.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use keel_bench::{
    plot::{self, Labels, Shade},
    stats::{self, Sample},
};

use crate::{
    checker::CheckReport,
    history::{op_name, Fault, HistoryWriter, Record, RecordType},
};

/// What the run knows besides its history and verdicts.
pub struct Summary<'a> {
    pub seed: u64,
    pub reproduce: &'a str,
    pub time_limit_s: u64,
    /// Workflows the final phase could not finish or read.
    pub final_problems: &'a [String],
}

/// Prints a progress line every 5 s until aborted.
pub async fn progress(history: Arc<HistoryWriter>, started: Instant) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let [invoke, ok, fail, info] = history.tally();
        eprintln!(
            "keel-jepsen: {:>5.0} s: {invoke} invoked, {ok} ok, {fail} fail, {info} info",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Writes verdicts.json, summary.md and latency.svg into `dir`.
pub fn write(
    dir: &Path,
    summary: &Summary<'_>,
    records: &[Record],
    checked: &CheckReport,
) -> Result<()> {
    std::fs::write(
        dir.join("verdicts.json"),
        serde_json::to_string_pretty(checked)?,
    )?;
    let shades = fault_windows(records);
    let samples = client_samples(records);
    let buckets = stats::time_series(&samples, 1.0);
    let title = format!("keel-jepsen seed {}: client operations", summary.seed);
    std::fs::write(
        dir.join("latency.svg"),
        plot::svg(
            &Labels {
                title: &title,
                rate: "ok ops/s",
                time: "seconds since the run started (shaded: faults)",
            },
            &buckets,
            &shades,
        ),
    )?;
    std::fs::write(dir.join("summary.md"), summary_text(summary, checked))?;
    Ok(())
}

fn summary_text(summary: &Summary<'_>, checked: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# keel-jepsen run, seed {}\n", summary.seed);
    let _ = writeln!(out, "Reproduce: `{}`\n", summary.reproduce);
    let _ = writeln!(
        out,
        "Load and faults for {} s, then every workflow finished and read back. Plot: latency.svg.\n",
        summary.time_limit_s
    );
    if !summary.final_problems.is_empty() {
        let _ = writeln!(out, "## Final phase problems\n");
        for problem in summary.final_problems {
            let _ = writeln!(out, "- {problem}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "```\n{checked}```");
    out
}

/// Each fault's window, from the nemesis's invoke to its ok.
fn fault_windows(records: &[Record]) -> Vec<Shade> {
    let mut open: Option<(f64, String)> = None;
    let mut shades = Vec::new();
    for record in records.iter().filter(|r| r.f == op_name::NEMESIS) {
        let fault: Option<Fault> = serde_json::from_value(record.value.clone()).ok();
        let label = fault
            .map(|f| {
                let nodes: Vec<String> = f.nodes.iter().map(|n| format!("n{n}")).collect();
                format!("{} {}", f.fault, nodes.join(","))
            })
            .unwrap_or_default();
        match record.kind {
            RecordType::Invoke => open = Some((record.time_ms / 1e3, label)),
            _ => {
                if let Some((start_s, label)) = open.take() {
                    shades.push(Shade {
                        start_s,
                        end_s: record.time_ms / 1e3,
                        label,
                    });
                }
            }
        }
    }
    shades
}

/// Client operations that completed ok: when, and how long they took.
fn client_samples(records: &[Record]) -> Vec<Sample> {
    let mut invoked: HashMap<&str, f64> = HashMap::new();
    let mut samples = Vec::new();
    for record in records.iter().filter(|r| r.process.starts_with('c')) {
        match record.kind {
            RecordType::Invoke => {
                invoked.insert(&record.process, record.time_ms);
            }
            RecordType::Ok => {
                if let Some(at) = invoked.remove(record.process.as_str()) {
                    samples.push(Sample {
                        finished_at_s: record.time_ms / 1e3,
                        latency_ms: record.time_ms - at,
                    });
                }
            }
            RecordType::Fail | RecordType::Info => {
                invoked.remove(record.process.as_str());
            }
        }
    }
    samples
}
