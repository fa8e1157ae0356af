//! single-run: a workflow id has one run, ever (the harness starts with REJECT_DUPLICATE and
//! never continues as new).
//!
//! The final read of each workflow id may list at most one run, and at most one `Running`.
//! Every run id the history saw elsewhere (a start's ok, a `read-history` ok, the worker's
//! timers and activities) must be that run; without a final read, they must at least all agree.

use std::collections::BTreeMap;

use super::{index::HistoryIndex, Findings, Verdict};
use crate::history::{op_name, FinalRead, Record, RecordType, WORKER_PROCESS};

pub const NAME: &str = "single-run";

/// A place the history names a run of a workflow id.
struct RunWitness<'a> {
    run_id: &'a str,
    record: &'a Record,
}

pub fn check(index: &HistoryIndex) -> Verdict {
    let mut findings = Findings::new(NAME, "workflow ids");
    for (record, error) in &index.unreadable_reads {
        findings.malformed(record, error);
    }
    let witnesses = run_witnesses(index, &mut findings);

    let mut workflow_ids: Vec<&str> = witnesses.keys().copied().collect();
    workflow_ids.extend(index.final_read_workflows());
    workflow_ids.sort_unstable();
    workflow_ids.dedup();
    let no_witnesses = Vec::new();
    for workflow_id in workflow_ids {
        findings.checked();
        let seen = witnesses.get(workflow_id).unwrap_or(&no_witnesses);
        match index.final_read(workflow_id) {
            Some((record, final_read)) => {
                check_final_read(workflow_id, record, final_read, seen, &mut findings)
            }
            None => check_witnesses_agree(workflow_id, seen, &mut findings),
        }
    }
    if !index.has_final_reads() {
        findings.unknown(
            "the history has no final read: only the runs seen during the run were compared"
                .to_string(),
        );
    }
    findings.verdict()
}

/// The run ids each workflow id's records name, in history order.
fn run_witnesses<'a>(
    index: &'a HistoryIndex<'a>,
    findings: &mut Findings,
) -> BTreeMap<&'a str, Vec<RunWitness<'a>>> {
    let mut witnesses: BTreeMap<&str, Vec<RunWitness>> = BTreeMap::new();
    for record in index.records {
        let names_a_run = (record.f == op_name::START && record.kind == RecordType::Ok)
            || (record.process == WORKER_PROCESS
                && (record.f == op_name::TIMER || record.f == op_name::ACTIVITY));
        if !names_a_run {
            continue;
        }
        match record.workflow().and_then(|workflow_id| {
            record
                .run_id()
                .map(|run_id| (workflow_id, RunWitness { run_id, record }))
        }) {
            Ok((workflow_id, witness)) => witnesses.entry(workflow_id).or_default().push(witness),
            Err(error) => findings.malformed(record, &error),
        }
    }
    for (operation, read) in &index.history_reads {
        if let (Some(workflow_id), Some(record)) =
            (operation.invoke.workflow_id.as_deref(), operation.ok())
        {
            witnesses.entry(workflow_id).or_default().push(RunWitness {
                run_id: &read.run_id,
                record,
            });
        }
    }
    for seen in witnesses.values_mut() {
        seen.sort_by_key(|witness| witness.record.index);
    }
    witnesses
}

fn check_final_read(
    workflow_id: &str,
    record: &Record,
    final_read: &FinalRead,
    seen: &[RunWitness],
    findings: &mut Findings,
) {
    let wf = Some(workflow_id);
    if final_read.runs.len() > 1 {
        let runs: Vec<String> = final_read
            .runs
            .iter()
            .map(|run| format!("{} ({})", run.run_id, run.status))
            .collect();
        findings.violation(
            wf,
            Some(record.index),
            format!(
                "expected one run, the final read lists {}: {}",
                runs.len(),
                runs.join(", ")
            ),
        );
    }
    let running = final_read
        .runs
        .iter()
        .filter(|run| is_running(&run.status))
        .count();
    if running > 1 {
        findings.violation(
            wf,
            Some(record.index),
            format!("{running} runs are Running at once"),
        );
    }
    let mut reported: Vec<&str> = Vec::new();
    for witness in seen {
        let listed = final_read
            .runs
            .iter()
            .any(|run| run.run_id == witness.run_id);
        if !listed && !reported.contains(&witness.run_id) {
            reported.push(witness.run_id);
            findings.violation(
                wf,
                Some(witness.record.index),
                format!(
                    "{} {:?} names run {}, which the final read (#{}) does not list",
                    witness.record.f, witness.record.kind, witness.run_id, record.index
                ),
            );
        }
    }
}

fn check_witnesses_agree(workflow_id: &str, seen: &[RunWitness], findings: &mut Findings) {
    let Some(first) = seen.first() else { return };
    let mut reported: Vec<&str> = Vec::new();
    for witness in seen {
        if witness.run_id != first.run_id && !reported.contains(&witness.run_id) {
            reported.push(witness.run_id);
            findings.violation(
                Some(workflow_id),
                Some(witness.record.index),
                format!(
                    "two runs: {} {:?} names run {}, but {} {:?} at #{} named run {}",
                    witness.record.f,
                    witness.record.kind,
                    witness.run_id,
                    first.record.f,
                    first.record.kind,
                    first.record.index,
                    first.run_id
                ),
            );
        }
    }
}

/// True for Temporal's running status, however the harness spelled it (`Running`,
/// `WORKFLOW_EXECUTION_STATUS_RUNNING`).
pub fn is_running(status: &str) -> bool {
    let status = status.to_ascii_lowercase();
    status == "running" || status == "workflow_execution_status_running"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{
        test_history::{run, HistoryBuilder, COMPLETED, STARTED, TASK_SCHEDULED},
        Outcome,
    };

    fn verdict(history: &HistoryBuilder) -> Verdict {
        let records = history.build();
        check(&HistoryIndex::new(&records))
    }

    fn one_run(history: &mut HistoryBuilder) -> &mut HistoryBuilder {
        history
            .start("c1", "w1", "r1")
            .timer(RecordType::Invoke, "w1", "r1", "t1", 10.0)
            .read_history("c2", "w1", "r1", vec![])
    }

    #[test]
    fn one_run_seen_everywhere_is_valid() {
        let mut history = HistoryBuilder::new();
        one_run(&mut history).final_read(
            "w1",
            vec![run(
                "r1",
                "Completed",
                &[STARTED, TASK_SCHEDULED, COMPLETED],
            )],
        );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
        assert_eq!(verdict.checked, 1);
    }

    #[test]
    fn two_runs_for_one_id_are_caught() {
        let mut history = HistoryBuilder::new();
        one_run(&mut history).final_read(
            "w1",
            vec![
                run("r1", "Running", &[STARTED]),
                run("r2", "Running", &[STARTED]),
            ],
        );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert_eq!(verdict.violation_count, 2, "{verdict:#?}");
        assert!(verdict.violations[0].description.contains("lists 2"));
        assert!(verdict.violations[1]
            .description
            .contains("2 runs are Running"));
    }

    #[test]
    fn a_start_acknowledging_another_run_is_caught() {
        let mut history = HistoryBuilder::new();
        one_run(&mut history)
            .start("c3", "w1", "r9")
            .final_read("w1", vec![run("r1", "Completed", &[STARTED, COMPLETED])]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(verdict.violations[0].description.contains("run r9"));
    }

    #[test]
    fn without_final_reads_disagreeing_runs_are_still_caught() {
        let mut history = HistoryBuilder::new();
        one_run(&mut history).read_history("c4", "w1", "r2", vec![]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(verdict.violations[0].description.contains("two runs"));

        let mut history = HistoryBuilder::new();
        one_run(&mut history);
        assert_eq!(super::tests::verdict(&history).outcome, Outcome::Unknown);
    }
}
