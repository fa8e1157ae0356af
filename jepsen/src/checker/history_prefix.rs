//! history-prefix: a run's history only ever grows, one event at a time, and never changes.
//!
//! Every read of a run's history (each `read-history` ok and each run of a final read) must
//! have event ids 1, 2, 3, … with no gap, and any two reads of one run must be prefix-related
//! (the shorter equals the start of the longer, comparing id, type and hash). Since every
//! read is compared with the run's longest read, and all prefixes of one sequence are prefixes
//! of each other, this covers every pair in linear time. Reads are also ordered in real time:
//! a read invoked after another read of the run completed must be at least as long (a shorter
//! one means acknowledged events were lost, e.g. unsynced writes dropped at a crash).

use std::collections::BTreeMap;

use super::{index::HistoryIndex, index::RunRead, Findings, Verdict};
use crate::history::EventDigest;

pub const NAME: &str = "history-prefix";

pub fn check(index: &HistoryIndex) -> Verdict {
    let mut findings = Findings::new(NAME, "reads of a run's history");
    for (record, error) in &index.unreadable_reads {
        findings.malformed(record, error);
    }
    let mut runs: BTreeMap<(&str, &str), Vec<RunRead>> = BTreeMap::new();
    for read in index.run_reads() {
        runs.entry((read.workflow_id, read.run_id))
            .or_default()
            .push(read);
    }
    for reads in runs.values() {
        let contiguous: Vec<&RunRead> = reads
            .iter()
            .filter(|read| {
                findings.checked();
                check_contiguous(read, &mut findings)
            })
            .collect();
        check_prefixes(&contiguous, &mut findings);
        check_no_shrinking(&contiguous, &mut findings);
    }
    findings.verdict()
}

fn describe(read: &RunRead) -> String {
    let source = if read.is_final {
        "final read"
    } else {
        "history read"
    };
    format!("{source} #{} ({} events)", read.ok.index, read.events.len())
}

/// True if the read's event ids are 1, 2, 3, …; reports the first gap otherwise.
fn check_contiguous(read: &RunRead, findings: &mut Findings) -> bool {
    let gap = read
        .events
        .iter()
        .enumerate()
        .find(|(position, (id, _, _))| *id != *position as i64 + 1);
    let Some((position, (id, _, _))) = gap else {
        return true;
    };
    findings.violation(
        Some(read.workflow_id),
        Some(read.ok.index),
        format!(
            "run {}: {} expected event id {} at position {position}, found {id}",
            read.run_id,
            describe(read),
            position + 1
        ),
    );
    false
}

/// Every read equals the start of the run's longest read.
fn check_prefixes(reads: &[&RunRead], findings: &mut Findings) {
    let Some(longest) = reads.iter().max_by_key(|read| read.events.len()) else {
        return;
    };
    for read in reads {
        let divergence = read
            .events
            .iter()
            .zip(longest.events)
            .find(|(shorter, longer)| shorter != longer);
        if let Some((found, expected)) = divergence {
            findings.violation(
                Some(read.workflow_id),
                Some(read.ok.index),
                format!(
                    "run {}: {} is no prefix of {}: event {} is {} there but {} here",
                    read.run_id,
                    describe(read),
                    describe(longest),
                    expected.0,
                    show(expected),
                    show(found)
                ),
            );
        }
    }
}

fn show((_, event_type, hash): &EventDigest) -> String {
    format!("type {event_type} hash {hash}")
}

/// A read invoked after another read completed is at least as long.
fn check_no_shrinking(reads: &[&RunRead], findings: &mut Findings) {
    let mut by_completion: Vec<&RunRead> = reads.to_vec();
    by_completion.sort_by_key(|read| read.ok.index);
    let mut by_invoke: Vec<&RunRead> = reads.to_vec();
    by_invoke.sort_by_key(|read| read.invoke.index);
    let mut completed = by_completion.iter().peekable();
    let mut longest_completed: Option<&RunRead> = None;
    for read in by_invoke {
        while let Some(earlier) = completed.next_if(|earlier| earlier.ok.index < read.invoke.index)
        {
            if longest_completed.is_none_or(|longest| earlier.events.len() > longest.events.len()) {
                longest_completed = Some(earlier);
            }
        }
        if let Some(earlier) = longest_completed {
            if read.events.len() < earlier.events.len() {
                findings.violation(
                    Some(read.workflow_id),
                    Some(read.ok.index),
                    format!(
                        "run {}: {} began (#{}) after {} completed, yet lost events {}..={}",
                        read.run_id,
                        describe(read),
                        read.invoke.index,
                        describe(earlier),
                        read.events.len() + 1,
                        earlier.events.len()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{
        test_history::{event, events, run, HistoryBuilder, COMPLETED, SIGNALED, STARTED},
        Outcome,
    };
    use crate::history::{op_name, HistoryRead, RecordType};

    fn verdict(history: &HistoryBuilder) -> Verdict {
        let records = history.build();
        check(&HistoryIndex::new(&records))
    }

    #[test]
    fn growing_reads_are_valid() {
        let mut history = HistoryBuilder::new();
        history
            .read_history("c2", "w1", "r1", vec![])
            .read_history("c1", "w1", "r1", events(&[STARTED]))
            .read_history("c1", "w1", "r1", events(&[STARTED, SIGNALED]))
            .final_read(
                "w1",
                vec![run("r1", "Completed", &[STARTED, SIGNALED, COMPLETED])],
            );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
        assert_eq!(verdict.checked, 4);
    }

    #[test]
    fn a_divergent_read_is_caught_at_its_first_divergent_event() {
        let mut changed = events(&[STARTED, SIGNALED]);
        changed[1].2 = "0000000000000000".into();
        let mut history = HistoryBuilder::new();
        history.read_history("c1", "w1", "r1", changed).final_read(
            "w1",
            vec![run("r1", "Completed", &[STARTED, SIGNALED, COMPLETED])],
        );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert_eq!(verdict.violation_count, 1);
        assert!(
            verdict.violations[0]
                .description
                .contains("event 2 is type 26 hash"),
            "{verdict:#?}"
        );
        assert!(verdict.violations[0]
            .description
            .contains("but type 26 hash 0000000000000000 here"));
    }

    #[test]
    fn a_gap_in_event_ids_is_caught() {
        let mut history = HistoryBuilder::new();
        history.read_history(
            "c1",
            "w1",
            "r1",
            vec![event(1, STARTED), event(2, SIGNALED), event(4, SIGNALED)],
        );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(verdict.violations[0]
            .description
            .contains("expected event id 3 at position 2, found 4"));
    }

    #[test]
    fn a_read_shorter_than_an_earlier_one_is_caught() {
        let mut history = HistoryBuilder::new();
        history
            .read_history("c1", "w1", "r1", events(&[STARTED, SIGNALED, SIGNALED]))
            .final_read("w1", vec![run("r1", "Running", &[STARTED, SIGNALED])]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(verdict.violations[0]
            .description
            .contains("yet lost events 3..=3"));
    }

    #[test]
    fn overlapping_reads_may_complete_in_any_order() {
        let long = HistoryRead {
            run_id: "r1".into(),
            events: events(&[STARTED, SIGNALED]),
        };
        let short = HistoryRead {
            run_id: "r1".into(),
            events: events(&[STARTED]),
        };
        let mut history = HistoryBuilder::new();
        history
            .invoke("c1", op_name::READ_HISTORY, "w1", serde_json::json!({}))
            .invoke("c2", op_name::READ_HISTORY, "w1", serde_json::json!({}))
            .complete(
                "c2",
                RecordType::Ok,
                op_name::READ_HISTORY,
                "w1",
                serde_json::to_value(long).unwrap(),
            )
            .complete(
                "c1",
                RecordType::Ok,
                op_name::READ_HISTORY,
                "w1",
                serde_json::to_value(short).unwrap(),
            );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
    }
}
