//! timers: no timer fires before its duration has passed.
//!
//! The worker records a `timer` invoke when it first commands StartTimer (the server started
//! the timer no earlier) and an ok when it first sees TimerFired (the timer fired no later),
//! both on the harness's monotonic clock. So `ok.time_ms - invoke.time_ms` bounds the time
//! the timer actually ran from above; if even that is shorter than `duration_ms` (less
//! [`TIMER_TOLERANCE_MS`] for clock granularity), the timer fired early. Timers are keyed by
//! workflow id, run id and timer id; the earliest invoke and the earliest ok count. How late
//! timers fired is reported as a note, not judged.
//!
//! Keel, like Temporal, fires a timer at a wall-clock deadline set by the node that started it,
//! on the clock of the node that leads the shard later; so a node whose clock is off by D can
//! fire timers up to D early. Keel's stated assumption is clocks within
//! [`MAX_CLOCK_OFFSET_MS`] of each other: when the history has clock faults, timers may fire
//! early by as much as the largest offset injected, capped at that bound, and no more.

use std::collections::BTreeMap;

use super::{index::HistoryIndex, Findings, Verdict};
use crate::history::{op_name, Record, RecordType};

pub const NAME: &str = "timers";

/// How much earlier than its duration a timer may be seen firing before it counts as early:
/// the harness stamps records in fractional milliseconds, but a timer's deadline may be rounded
/// to a whole millisecond on the way.
pub const TIMER_TOLERANCE_MS: f64 = 1.0;

/// The clock offset between nodes Keel is built to tolerate (docs/ARCHITECTURE.md, "Clocks").
pub const MAX_CLOCK_OFFSET_MS: f64 = 500.0;

/// The first time a timer was commanded and the first time it was seen fired.
#[derive(Default)]
struct TimerObservations<'a> {
    commanded: Option<(&'a Record, f64)>,
    fired: Option<(&'a Record, f64)>,
}

pub fn check(index: &HistoryIndex) -> Verdict {
    let mut findings = Findings::new(NAME, "timers commanded and seen fired");
    let skew_ms = index
        .records
        .iter()
        .filter(|r| r.f == op_name::NEMESIS && r.kind == RecordType::Invoke)
        .filter_map(|r| r.fault().ok()?.clock_offset_ms)
        .map(|offset| offset.unsigned_abs() as f64)
        .fold(0.0, f64::max);
    let allowance_ms = TIMER_TOLERANCE_MS + skew_ms.min(MAX_CLOCK_OFFSET_MS);
    if skew_ms > 0.0 {
        findings.note(format!(
            "clocks were set off by up to {skew_ms:.0} ms: timers may fire up to {:.0} ms early",
            allowance_ms - TIMER_TOLERANCE_MS
        ));
    }
    let mut timers: BTreeMap<(&str, String, String), TimerObservations> = BTreeMap::new();
    for record in index.records {
        if record.f != op_name::TIMER || !matches!(record.kind, RecordType::Invoke | RecordType::Ok)
        {
            continue;
        }
        let timer = match record
            .workflow()
            .and_then(|workflow_id| Ok((workflow_id, record.timer()?)))
        {
            Ok(timer) => timer,
            Err(error) => {
                findings.malformed(record, &error);
                continue;
            }
        };
        let (workflow_id, value) = timer;
        let observations = timers
            .entry((workflow_id, value.run_id, value.timer_id))
            .or_default();
        let slot = if record.kind == RecordType::Invoke {
            &mut observations.commanded
        } else {
            &mut observations.fired
        };
        if slot.is_none_or(|(earliest, _)| record.time_ms < earliest.time_ms) {
            *slot = Some((record, value.duration_ms));
        }
    }

    let mut never_fired = 0u64;
    let mut fired_unseen_command = 0u64;
    let mut latest: Option<(f64, String)> = None;
    for ((workflow_id, run_id, timer_id), observations) in &timers {
        let (Some((commanded, duration_ms)), Some((fired, _))) =
            (observations.commanded, observations.fired)
        else {
            if observations.commanded.is_some() {
                never_fired += 1;
            } else {
                fired_unseen_command += 1;
            }
            continue;
        };
        findings.checked();
        let elapsed_ms = fired.time_ms - commanded.time_ms;
        if elapsed_ms < duration_ms - allowance_ms {
            findings.violation(
                Some(workflow_id),
                Some(fired.index),
                format!(
                    "run {run_id} timer {timer_id} of {duration_ms} ms fired {:.1} ms early: \
                     commanded at #{} ({:.1} ms), seen fired at #{} ({:.1} ms), after {:.1} ms",
                    duration_ms - elapsed_ms,
                    commanded.index,
                    commanded.time_ms,
                    fired.index,
                    fired.time_ms,
                    elapsed_ms
                ),
            );
        }
        let lateness_ms = elapsed_ms - duration_ms;
        if latest
            .as_ref()
            .is_none_or(|(latest_ms, _)| lateness_ms > *latest_ms)
        {
            latest = Some((
                lateness_ms,
                format!("{workflow_id} run {run_id} timer {timer_id}"),
            ));
        }
    }
    if let Some((lateness_ms, timer)) = latest {
        findings.note(format!(
            "the latest timer was seen firing {lateness_ms:.1} ms after its deadline ({timer}; \
             an upper bound on how late it fired)"
        ));
    }
    if never_fired > 0 {
        findings.note(format!("{never_fired} timers were never seen firing"));
    }
    if fired_unseen_command > 0 {
        findings.note(format!(
            "{fired_unseen_command} timers were seen firing without a recorded command (unchecked)"
        ));
    }
    findings.verdict()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{test_history::HistoryBuilder, Outcome};

    fn verdict(history: &HistoryBuilder) -> Verdict {
        let records = history.build();
        check(&HistoryIndex::new(&records))
    }

    #[test]
    fn timers_that_fire_on_time_or_late_are_valid() {
        let mut history = HistoryBuilder::new();
        history
            .at(100.0)
            .timer(RecordType::Invoke, "w1", "r1", "1", 1000.0)
            .timer(RecordType::Invoke, "w2", "r2", "1", 50.0)
            .at(152.0)
            .timer(RecordType::Ok, "w2", "r2", "1", 50.0)
            .at(1099.5)
            .timer(RecordType::Ok, "w1", "r1", "1", 1000.0)
            // A replayed worker commands the timer again later: the first command counts.
            .timer(RecordType::Invoke, "w1", "r1", "1", 1000.0)
            .timer(RecordType::Invoke, "w3", "r3", "1", 10.0);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Valid, "{verdict:#?}");
        assert_eq!(verdict.checked, 2);
        assert!(verdict.notes[0].contains("1.0 ms after its deadline (w2 run r2 timer 1;"));
        assert!(verdict.notes[1].contains("1 timers were never seen firing"));
    }

    #[test]
    fn a_timer_fired_early_is_caught() {
        let mut history = HistoryBuilder::new();
        history
            .at(100.0)
            .timer(RecordType::Invoke, "w1", "r1", "7", 1000.0)
            .at(850.0)
            .timer(RecordType::Ok, "w1", "r1", "7", 1000.0);
        let verdict = verdict(&history);
        assert_eq!(verdict.outcome, Outcome::Invalid);
        assert!(
            verdict.violations[0]
                .description
                .contains("timer 7 of 1000 ms fired 250.0 ms early"),
            "{verdict:#?}"
        );
        assert_eq!(verdict.violations[0].index, Some(1));
    }

    #[test]
    fn clock_skew_within_the_assumed_bound_excuses_that_much_and_no_more() {
        let early_by = |ms: f64, offset_ms: i64| {
            let mut history = HistoryBuilder::new();
            history
                .at(10.0)
                .clock_fault(RecordType::Invoke, "clock", &[2], Some(offset_ms))
                .at(100.0)
                .timer(RecordType::Invoke, "w1", "r1", "1", 1000.0)
                .at(1100.0 - ms)
                .timer(RecordType::Ok, "w1", "r1", "1", 1000.0);
            verdict(&history)
        };
        let skewed = early_by(300.0, -400);
        assert_eq!(skewed.outcome, Outcome::Valid, "{skewed:#?}");
        assert!(skewed.notes[0].contains("up to 400 ms"), "{skewed:#?}");
        assert_eq!(early_by(450.0, 400).outcome, Outcome::Invalid);
        // Beyond the assumption, the bound holds: a 60 s skew excuses only 500 ms.
        assert_eq!(early_by(450.0, 60_000).outcome, Outcome::Valid);
        assert_eq!(early_by(900.0, 60_000).outcome, Outcome::Invalid);
    }
}
