//! closes-once: a run closes at most once, and nothing follows its close.
//!
//! In every read of a run's history (each `read-history` ok and each run of a final read) at
//! most one event is a close event (completed, failed, timed out, canceled, terminated,
//! continued as new), and if there is one it is the last event. A final run's own `closes`
//! count must also be at most one.

use super::{index::HistoryIndex, Findings, Verdict};
use crate::history::EventDigest;

pub const NAME: &str = "closes-once";

/// Temporal's `EventType` numbers of the events that close a run: WorkflowExecution
/// Completed (2), Failed (3), TimedOut (4), Canceled (21), Terminated (27), ContinuedAsNew (28).
pub const CLOSE_EVENT_TYPES: [i32; 6] = [2, 3, 4, 21, 27, 28];

/// True if `event_type` closes a run.
pub fn is_close_event(event_type: i32) -> bool {
    CLOSE_EVENT_TYPES.contains(&event_type)
}

pub fn check(index: &HistoryIndex) -> Verdict {
    let mut findings = Findings::new(NAME, "reads of a run's history");
    for (record, error) in &index.unreadable_reads {
        findings.malformed(record, error);
    }
    for read in index.run_reads() {
        findings.checked();
        let wf = Some(read.workflow_id);
        let at = Some(read.ok.index);
        let source = if read.is_final {
            "final read"
        } else {
            "history read"
        };
        let closes: Vec<&EventDigest> = read
            .events
            .iter()
            .filter(|(_, event_type, _)| is_close_event(*event_type))
            .collect();
        if closes.len() > 1 {
            let ids: Vec<String> = closes
                .iter()
                .map(|(id, event_type, _)| format!("#{id} (type {event_type})"))
                .collect();
            findings.violation(
                wf,
                at,
                format!(
                    "run {}: {source} has {} close events: {}",
                    read.run_id,
                    closes.len(),
                    ids.join(", ")
                ),
            );
        }
        if let (Some((close_id, close_type, _)), Some((last_id, last_type, _))) =
            (closes.first(), read.events.last())
        {
            if close_id != last_id {
                findings.violation(
                    wf,
                    at,
                    format!(
                        "run {}: {source} has close event {close_id} (type {close_type}) \
                         followed by more events, up to {last_id} (type {last_type})",
                        read.run_id
                    ),
                );
            }
        }
    }
    for (operation, final_read) in &index.final_reads {
        let Some(ok) = operation.ok() else { continue };
        for run in &final_read.runs {
            if run.closes > 1 {
                findings.violation(
                    ok.workflow_id.as_deref(),
                    Some(ok.index),
                    format!(
                        "run {}: the final read counts {} close events",
                        run.run_id, run.closes
                    ),
                );
            }
        }
    }
    findings.verdict()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{
        test_history::{events, run, HistoryBuilder, COMPLETED, SIGNALED, STARTED},
        Outcome,
    };

    fn verdict(history: &HistoryBuilder) -> Verdict {
        let records = history.build();
        check(&HistoryIndex::new(&records))
    }

    #[test]
    fn one_close_at_the_end_is_valid() {
        let mut history = HistoryBuilder::new();
        history
            .read_history("c1", "w1", "r1", events(&[STARTED, SIGNALED]))
            .final_read(
                "w1",
                vec![run("r1", "Completed", &[STARTED, SIGNALED, COMPLETED])],
            )
            .final_read("w2", vec![run("r2", "Running", &[STARTED])]);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
        assert_eq!(verdict.checked, 3);
    }

    #[test]
    fn a_duplicate_close_is_caught() {
        let mut history = HistoryBuilder::new();
        history.final_read(
            "w1",
            vec![run("r1", "Completed", &[STARTED, COMPLETED, COMPLETED])],
        );
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert_eq!(verdict.violation_count, 3, "{verdict:#?}");
        assert!(verdict.violations[0].description.contains("2 close events"));
        assert!(verdict.violations[1]
            .description
            .contains("followed by more events"));
        assert!(verdict.violations[2]
            .description
            .contains("counts 2 close events"));
    }

    #[test]
    fn an_event_after_the_close_is_caught() {
        let mut history = HistoryBuilder::new();
        history.read_history("c1", "w1", "r1", events(&[STARTED, COMPLETED, SIGNALED]));
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert_eq!(verdict.violation_count, 1);
        assert!(verdict.violations[0]
            .description
            .contains("close event 2 (type 2) followed by more events, up to 3"));
    }
}
