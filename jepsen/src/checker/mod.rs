//! The checkers: each reads the history records (nothing else) and answers a [`Verdict`] on
//! one property the issue promises users: no acknowledged write is lost, one run per workflow
//! id, one close per run, histories that only ever grow, no early timer, linearizable updates.
//!
//! [`check_all`] indexes the history once ([`HistoryIndex`]) and runs every checker on it;
//! [`summarize`] counts what happened. A verdict is `valid`, `invalid` (with concrete
//! violations) or `unknown` (the history holds too little to say, or the search gave up).

pub mod closes_once;
pub mod history_prefix;
pub mod index;
pub mod linearizable_register;
pub mod lost_writes;
pub mod single_run;
pub mod summary;
pub mod timers;

#[cfg(test)]
pub(crate) mod test_history;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::history::{Record, ValueError};
pub use index::HistoryIndex;
pub use summary::{summarize, Summary};

/// How many violations a verdict lists; the rest are only counted.
pub const MAX_LISTED_VIOLATIONS: usize = 20;

/// What a checker concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Everything checked holds.
    Valid,
    /// At least one violation.
    Invalid,
    /// No violation found, but the history could not settle the question.
    Unknown,
}

/// One concrete violation: where, and what was expected and found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The history record that shows it (the acknowledgement, the read, the timer's ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    pub description: String,
}

/// A checker's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The checker's name, e.g. `lost-writes`.
    pub name: String,
    pub outcome: Outcome,
    /// How many things were checked, and what they are.
    pub checked: u64,
    pub checked_what: String,
    /// Every violation found; only the first [`MAX_LISTED_VIOLATIONS`] are listed.
    pub violation_count: u64,
    pub violations: Vec<Violation>,
    /// What is worth knowing but is no violation (why the outcome is unknown, max lateness).
    pub notes: Vec<String>,
}

impl Verdict {
    /// True unless the checker found a violation.
    pub fn is_valid_or_unknown(&self) -> bool {
        self.outcome != Outcome::Invalid
    }
}

/// What a checker accumulates before it answers its verdict.
pub(crate) struct Findings {
    name: &'static str,
    checked_what: &'static str,
    checked: u64,
    violation_count: u64,
    violations: Vec<Violation>,
    notes: Vec<String>,
    unknown: bool,
}

impl Findings {
    pub(crate) fn new(name: &'static str, checked_what: &'static str) -> Self {
        Findings {
            name,
            checked_what,
            checked: 0,
            violation_count: 0,
            violations: Vec::new(),
            notes: Vec::new(),
            unknown: false,
        }
    }

    /// Counts one more thing checked.
    pub(crate) fn checked(&mut self) {
        self.checked += 1;
    }

    pub(crate) fn violation(
        &mut self,
        workflow_id: Option<&str>,
        index: Option<u64>,
        description: String,
    ) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED_VIOLATIONS {
            self.violations.push(Violation {
                workflow_id: workflow_id.map(str::to_string),
                index,
                description,
            });
        }
    }

    /// A record the checker needed but could not read is a violation: the property is
    /// unverified, and the harness that wrote it is broken.
    pub(crate) fn malformed(&mut self, record: &Record, error: &ValueError) {
        self.violation(
            record.workflow_id.as_deref(),
            Some(record.index),
            format!("malformed record: {error}"),
        );
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Marks the verdict unknown (unless a violation makes it invalid), saying why.
    pub(crate) fn unknown(&mut self, why: String) {
        self.unknown = true;
        self.notes.push(why);
    }

    pub(crate) fn verdict(self) -> Verdict {
        let outcome = if self.violation_count > 0 {
            Outcome::Invalid
        } else if self.unknown || self.checked == 0 {
            Outcome::Unknown
        } else {
            Outcome::Valid
        };
        let mut notes = self.notes;
        if self.checked == 0 && self.violation_count == 0 {
            notes.push(format!("nothing to check: no {}", self.checked_what));
        }
        Verdict {
            name: self.name.to_string(),
            outcome,
            checked: self.checked,
            checked_what: self.checked_what.to_string(),
            violation_count: self.violation_count,
            violations: self.violations,
            notes,
        }
    }
}

/// Runs every checker on `records`, in the order the issue lists them.
pub fn check_all(records: &[Record]) -> Vec<Verdict> {
    check_index(&HistoryIndex::new(records))
}

fn check_index(index: &HistoryIndex) -> Vec<Verdict> {
    vec![
        lost_writes::check(index),
        single_run::check(index),
        closes_once::check(index),
        history_prefix::check(index),
        timers::check(index),
        linearizable_register::check(index),
    ]
}

/// Everything the checkers say about a history: what it holds, and each verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub summary: Summary,
    pub verdicts: Vec<Verdict>,
}

impl CheckReport {
    /// Summarizes `records` and runs every checker on them, indexing the history once.
    pub fn new(records: &[Record]) -> Self {
        let index = HistoryIndex::new(records);
        CheckReport {
            summary: summary::summarize_index(&index),
            verdicts: check_index(&index),
        }
    }

    /// True if any verdict is invalid (the run must exit 1).
    pub fn any_invalid(&self) -> bool {
        any_invalid(&self.verdicts)
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "{}\n{}", self.summary, render(&self.verdicts))
    }
}

/// True if any verdict is invalid (the run must exit 1).
pub fn any_invalid(verdicts: &[Verdict]) -> bool {
    verdicts
        .iter()
        .any(|verdict| verdict.outcome == Outcome::Invalid)
}

/// The verdicts as text for a terminal: one line each, then their violations and notes.
pub fn render(verdicts: &[Verdict]) -> String {
    let mut text = String::new();
    for verdict in verdicts {
        let outcome = match verdict.outcome {
            Outcome::Valid => "valid",
            Outcome::Invalid => "INVALID",
            Outcome::Unknown => "unknown",
        };
        let _ = writeln!(
            text,
            "{:<22} {:<8} checked {} {}",
            verdict.name, outcome, verdict.checked, verdict.checked_what
        );
        for violation in &verdict.violations {
            let workflow = violation.workflow_id.as_deref().unwrap_or("-");
            let index = violation
                .index
                .map_or_else(|| "-".to_string(), |index| format!("#{index}"));
            let _ = writeln!(
                text,
                "    violation [{workflow} {index}] {}",
                violation.description
            );
        }
        let unlisted = verdict
            .violation_count
            .saturating_sub(verdict.violations.len() as u64);
        if unlisted > 0 {
            let _ = writeln!(text, "    ... and {unlisted} more violations");
        }
        for note in &verdict.notes {
            let _ = writeln!(text, "    note: {note}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::history::{self, HistoryWriter, RecordType};
    use test_history::HistoryBuilder;

    fn outcomes(verdicts: &[Verdict]) -> Vec<(&str, Outcome)> {
        verdicts
            .iter()
            .map(|verdict| (verdict.name.as_str(), verdict.outcome))
            .collect()
    }

    #[test]
    fn a_healthy_history_passes_every_checker() {
        let mut history = HistoryBuilder::new();
        history.healthy_workflows(3, 5, 40, 100.0);
        let verdicts = check_all(&history.build());
        assert!(
            verdicts
                .iter()
                .all(|verdict| verdict.outcome == Outcome::Valid),
            "{}",
            render(&verdicts)
        );
        assert!(!any_invalid(&verdicts));
    }

    #[test]
    fn a_doctored_history_fails_exactly_the_checkers_it_breaks() {
        let mut history = HistoryBuilder::new();
        history.healthy_workflows(3, 5, 40, 100.0);
        let mut records = history.build();
        // Drop signal 3 of w1 from its final read, and make w2's last read see an impossible
        // value.
        let final_read = records
            .iter_mut()
            .find(|record| {
                record.f == history::op_name::FINAL_READ
                    && record.kind == RecordType::Ok
                    && record.workflow_id.as_deref() == Some("w1")
            })
            .unwrap();
        final_read.value["runs"][0]["signals"] = serde_json::json!([1, 2, 4, 5]);
        let last_read = records
            .iter_mut()
            .rev()
            .find(|record| {
                record.kind == RecordType::Ok
                    && record.workflow_id.as_deref() == Some("w2")
                    && record.value["op"] == serde_json::json!("read")
            })
            .unwrap();
        last_read.value["result"] = serde_json::json!({ "value": 99 });

        let report = CheckReport::new(&records);
        assert!(report.any_invalid());
        eprintln!("{report}");
        let verdicts = report.verdicts;
        assert_eq!(
            outcomes(&verdicts),
            vec![
                ("lost-writes", Outcome::Invalid),
                ("single-run", Outcome::Valid),
                ("closes-once", Outcome::Valid),
                ("history-prefix", Outcome::Valid),
                ("timers", Outcome::Valid),
                ("linearizable-register", Outcome::Invalid),
            ],
            "{}",
            render(&verdicts)
        );
        assert!(any_invalid(&verdicts));
        let text = render(&verdicts);
        assert!(text.contains("lost-writes            INVALID"), "{text}");
        assert!(text.contains("signal seq 3 acknowledged"), "{text}");
        assert!(text.contains("[w2 #"), "{text}");
    }

    #[test]
    fn a_history_written_and_read_back_checks_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let writer = HistoryWriter::create(&path, Instant::now()).unwrap();
        let mut history = HistoryBuilder::new();
        // The writer stamps its own times, so the timer's duration is 0 ms.
        history.healthy_workflows(2, 3, 30, 0.0);
        for record in history.build() {
            writer.record(
                &record.process,
                record.kind,
                &record.f,
                record.workflow_id.as_deref(),
                record.value,
                record.error,
            );
        }
        let written = writer.finish().unwrap();
        let read_back = history::read(&path).unwrap();
        assert_eq!(read_back, written);
        let verdicts = check_all(&read_back);
        assert_eq!(verdicts, check_all(&written));
        assert!(
            verdicts
                .iter()
                .all(|verdict| verdict.outcome == Outcome::Valid),
            "{}",
            render(&verdicts)
        );
        let json = serde_json::to_string(&verdicts).unwrap();
        assert!(json.contains(r#""outcome":"valid""#), "{json}");
        let parsed: Vec<Verdict> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, verdicts);
    }

    #[test]
    fn a_hundred_thousand_records_are_checked_in_seconds() {
        let mut history = HistoryBuilder::new();
        history.healthy_workflows(330, 10, 140, 50.0);
        let records = history.build();
        assert!(records.len() >= 100_000, "{} records", records.len());
        let started = Instant::now();
        let verdicts = check_all(&records);
        let summary = summarize(&records);
        let elapsed = started.elapsed();
        eprintln!("checked {} records in {elapsed:?}", records.len());
        assert!(
            verdicts
                .iter()
                .all(|verdict| verdict.outcome == Outcome::Valid),
            "{}",
            render(&verdicts)
        );
        assert_eq!(summary.records, records.len() as u64);
        assert!(
            elapsed.as_secs() < 30,
            "checking {} records took {elapsed:?}",
            records.len()
        );
    }
}
