//! lost-writes: nothing the server acknowledged is missing once the faults are healed.
//!
//! For each `ok` start, signal and update, the workflow id's final read must hold it: the
//! start's run id among the runs, the signal's `seq` among some run's signals, the update's id
//! among some run's accepted updates. A workflow id with acknowledged operations but no final
//! read is a violation (it was never verified); a history with no final read at all is
//! `unknown`. The final read must also not invent or repeat: a `seq` or update id that occurs
//! twice in one run was delivered twice, one that no client invoked came from nowhere, and one
//! whose operation ended in `fail` took effect although the client was told it did not.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{index::HistoryIndex, Findings, Verdict};
use crate::history::{op_name, FinalRead, RecordType};

pub const NAME: &str = "lost-writes";

pub fn check(index: &HistoryIndex) -> Verdict {
    let mut findings = Findings::new(NAME, "acknowledged starts, signals and updates");
    for (record, error) in &index.unreadable_reads {
        if record.f == op_name::FINAL_READ {
            findings.malformed(record, error);
        }
    }
    check_acknowledged(index, &mut findings);
    check_final_reads_against_invokes(index, &mut findings);
    findings.verdict()
}

/// Every ok start, signal and update is in its workflow's final read; no failed one is.
fn check_acknowledged(index: &HistoryIndex, findings: &mut Findings) {
    // Acknowledged operations of workflow ids with no final read: (count, first ok index).
    let mut unverified: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for operation in &index.operations {
        let f = operation.invoke.f.as_str();
        if f != op_name::START && f != op_name::SIGNAL && f != op_name::UPDATE {
            continue;
        }
        let Some(completion) = operation.completion else {
            continue;
        };
        if completion.kind != RecordType::Ok && completion.kind != RecordType::Fail {
            continue;
        }
        let acknowledged = completion.kind == RecordType::Ok;
        let workflow_id = match operation.invoke.workflow() {
            Ok(workflow_id) => workflow_id,
            Err(error) => {
                findings.malformed(operation.invoke, &error);
                continue;
            }
        };
        let Some((_, final_read)) = index.final_read(workflow_id) else {
            if acknowledged {
                let entry = unverified
                    .entry(workflow_id)
                    .or_insert((0, completion.index));
                entry.0 += 1;
            }
            continue;
        };
        if acknowledged {
            findings.checked();
        }
        let at = Some(completion.index);
        let wf = Some(workflow_id);
        match f {
            op_name::START if acknowledged => match completion.run_id() {
                Ok(run_id) => {
                    if !final_read.runs.iter().any(|run| run.run_id == run_id) {
                        findings.violation(
                            wf,
                            at,
                            format!(
                                "start acknowledged with run {run_id}, but the final read has \
                                 runs [{}]",
                                run_ids(final_read)
                            ),
                        );
                    }
                }
                Err(error) => findings.malformed(completion, &error),
            },
            op_name::SIGNAL => {
                let seq = match operation.invoke.seq() {
                    Ok(seq) => seq,
                    Err(error) => {
                        findings.malformed(operation.invoke, &error);
                        continue;
                    }
                };
                let delivered = final_read.runs.iter().any(|run| run.signals.contains(&seq));
                if acknowledged && !delivered {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "signal seq {seq} acknowledged, but no run's history holds it \
                             (final read at {})",
                            final_index(index, workflow_id)
                        ),
                    );
                } else if !acknowledged && delivered {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "signal seq {seq} failed (certainly not delivered), but the final \
                             history holds it"
                        ),
                    );
                }
            }
            op_name::UPDATE => {
                let update_id = match operation.invoke.update_id() {
                    Ok(update_id) => update_id,
                    Err(error) => {
                        findings.malformed(operation.invoke, &error);
                        continue;
                    }
                };
                let accepted = final_read
                    .runs
                    .iter()
                    .any(|run| run.updates_accepted.iter().any(|id| id == update_id));
                if acknowledged && !accepted {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "update {update_id} acknowledged, but no run accepted it (final \
                             read at {})",
                            final_index(index, workflow_id)
                        ),
                    );
                } else if !acknowledged && accepted {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "update {update_id} failed (certainly not applied), but a run \
                             accepted it"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let unverified_total: u64 = unverified.values().map(|(count, _)| count).sum();
    if index.has_final_reads() {
        for (workflow_id, (count, first)) in unverified {
            findings.violation(
                Some(workflow_id),
                Some(first),
                format!("{count} acknowledged operations, but the workflow has no final read"),
            );
        }
    } else if unverified_total > 0 {
        findings.unknown(format!(
            "the history has no final read: {unverified_total} acknowledged operations could \
             not be verified"
        ));
    }
}

/// Within each final run, every `seq` and update id occurs once and was invoked by a client.
fn check_final_reads_against_invokes(index: &HistoryIndex, findings: &mut Findings) {
    let mut invoked_seqs: HashMap<&str, HashSet<u64>> = HashMap::new();
    let mut invoked_updates: HashMap<&str, HashSet<&str>> = HashMap::new();
    for operation in &index.operations {
        let invoke = operation.invoke;
        let Some(workflow_id) = invoke.workflow_id.as_deref() else {
            continue;
        };
        if invoke.f == op_name::SIGNAL {
            if let Ok(seq) = invoke.seq() {
                invoked_seqs.entry(workflow_id).or_default().insert(seq);
            }
        } else if invoke.f == op_name::UPDATE {
            if let Ok(update_id) = invoke.update_id() {
                invoked_updates
                    .entry(workflow_id)
                    .or_default()
                    .insert(update_id);
            }
        }
    }
    let no_seqs = HashSet::new();
    let no_updates = HashSet::new();
    for workflow_id in index.final_read_workflows() {
        let Some((record, final_read)) = index.final_read(workflow_id) else {
            continue;
        };
        let seqs = invoked_seqs.get(workflow_id).unwrap_or(&no_seqs);
        let updates = invoked_updates.get(workflow_id).unwrap_or(&no_updates);
        let wf = Some(workflow_id);
        let at = Some(record.index);
        for run in &final_read.runs {
            let mut seen_seqs: HashMap<u64, u32> = HashMap::new();
            for seq in &run.signals {
                *seen_seqs.entry(*seq).or_default() += 1;
            }
            let mut seen_seqs: Vec<_> = seen_seqs.into_iter().collect();
            seen_seqs.sort_unstable();
            for (seq, times) in seen_seqs {
                if times > 1 {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "run {}: signal seq {seq} delivered {times} times",
                            run.run_id
                        ),
                    );
                }
                if !seqs.contains(&seq) {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "run {}: signal seq {seq} is in the history but no client sent it",
                            run.run_id
                        ),
                    );
                }
            }
            let mut seen_updates: BTreeMap<&str, u32> = BTreeMap::new();
            for update_id in &run.updates_accepted {
                *seen_updates.entry(update_id).or_default() += 1;
            }
            for (update_id, times) in seen_updates {
                if times > 1 {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "run {}: update {update_id} accepted {times} times",
                            run.run_id
                        ),
                    );
                }
                if !updates.contains(update_id) {
                    findings.violation(
                        wf,
                        at,
                        format!(
                            "run {}: update {update_id} accepted but no client sent it",
                            run.run_id
                        ),
                    );
                }
            }
        }
    }
}

fn run_ids(final_read: &FinalRead) -> String {
    final_read
        .runs
        .iter()
        .map(|run| run.run_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn final_index(index: &HistoryIndex, workflow_id: &str) -> String {
    index.final_read(workflow_id).map_or_else(
        || "-".to_string(),
        |(record, _)| format!("#{}", record.index),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{
        test_history::{run, HistoryBuilder, COMPLETED, SIGNALED, STARTED, TASK_SCHEDULED},
        Outcome,
    };
    use crate::history::{RegisterOp, RegisterResult};

    fn verdict(history: &HistoryBuilder) -> Verdict {
        let records = history.build();
        check(&HistoryIndex::new(&records))
    }

    /// w1: started as r1, signals 1 and 2 acknowledged, 3 unknown and delivered, 4 failed and
    /// not delivered, one update acknowledged.
    fn healthy() -> (HistoryBuilder, crate::history::FinalRun) {
        let mut history = HistoryBuilder::new();
        history
            .start("c1", "w1", "r1")
            .signal("c1", "w1", 1, RecordType::Ok)
            .signal("c2", "w1", 2, RecordType::Ok)
            .signal("c3", "w1", 3, RecordType::Info)
            .signal("c4", "w1", 4, RecordType::Fail)
            .update(
                "c4",
                "w1",
                "u1",
                RegisterOp::Write(5),
                RegisterResult::Written,
            );
        let mut final_run = run(
            "r1",
            "Completed",
            &[
                STARTED,
                TASK_SCHEDULED,
                SIGNALED,
                SIGNALED,
                SIGNALED,
                COMPLETED,
            ],
        );
        final_run.signals = vec![1, 3, 2];
        final_run.updates_accepted = vec!["u1".into()];
        (history, final_run)
    }

    #[test]
    fn everything_acknowledged_is_in_the_final_read() {
        let (mut history, final_run) = healthy();
        history.final_read("w1", vec![final_run]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
        assert_eq!(verdict.checked, 4);
    }

    #[test]
    fn a_dropped_acknowledged_signal_is_caught() {
        let (mut history, mut final_run) = healthy();
        final_run.signals = vec![1, 3];
        history.final_read("w1", vec![final_run]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert_eq!(verdict.violation_count, 1);
        assert!(verdict.violations[0].description.contains("seq 2"));
        assert_eq!(verdict.violations[0].workflow_id.as_deref(), Some("w1"));
    }

    #[test]
    fn a_lost_start_is_caught() {
        let (mut history, _) = healthy();
        history.final_read("w1", vec![]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(verdict.violations[0].description.contains("run r1"));
    }

    #[test]
    fn a_lost_update_is_caught() {
        let (mut history, mut final_run) = healthy();
        final_run.updates_accepted.clear();
        history.final_read("w1", vec![final_run]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(verdict.violations[0].description.contains("update u1"));
    }

    #[test]
    fn duplicate_and_invented_deliveries_are_caught() {
        let (mut history, mut final_run) = healthy();
        final_run.signals = vec![1, 2, 2, 3, 99];
        final_run.updates_accepted = vec!["u1".into(), "u1".into()];
        history.final_read("w1", vec![final_run]);
        let verdict = verdict(&history);
        let descriptions: Vec<_> = verdict
            .violations
            .iter()
            .map(|violation| violation.description.as_str())
            .collect();
        assert_eq!(verdict.violation_count, 3, "{descriptions:?}");
        assert!(descriptions[0].contains("seq 2 delivered 2 times"));
        assert!(descriptions[1].contains("seq 99 is in the history but no client sent it"));
        assert!(descriptions[2].contains("update u1 accepted 2 times"));
    }

    #[test]
    fn a_failed_signal_that_was_delivered_is_caught() {
        let (mut history, mut final_run) = healthy();
        final_run.signals = vec![1, 2, 3, 4];
        history.final_read("w1", vec![final_run]);
        let verdict = verdict(&history);
        assert_eq!(verdict.violation_count, 1);
        assert!(verdict.violations[0].description.contains("seq 4 failed"));
    }

    #[test]
    fn a_workflow_without_a_final_read_is_a_violation_when_others_have_one() {
        let (mut history, final_run) = healthy();
        history
            .final_read("w1", vec![final_run])
            .start("c9", "w2", "r2");
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert_eq!(verdict.violations[0].workflow_id.as_deref(), Some("w2"));
    }

    #[test]
    fn no_final_read_at_all_is_unknown() {
        let (history, _) = healthy();
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Unknown);
        assert!(verdict.notes[0].contains("no final read"));
    }
}
