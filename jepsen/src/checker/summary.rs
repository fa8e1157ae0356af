//! The summary: what the history holds, not a judgement. How many operations of each kind
//! ended ok, fail or info (or never ended), and how many faults of each kind the nemesis
//! injected and healed.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use super::index::HistoryIndex;
use crate::history::{op_name, Record, RecordType};

/// How a set of operations ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    /// Invoked, but the history ends before an ok/fail/info.
    pub unfinished: u64,
}

/// How often one kind of fault was injected and healed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub injected: u64,
    pub healed: u64,
}

/// What the history holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub records: u64,
    /// The time of the last record, in ms since the run started.
    pub duration_ms: f64,
    /// Client operations by `f`.
    pub operations: BTreeMap<String, OutcomeCounts>,
    /// Worker records (`timer`, `activity`) by `f`: invokes and oks, unpaired.
    pub worker_records: BTreeMap<String, OutcomeCounts>,
    /// Nemesis faults by kind.
    pub faults: BTreeMap<String, FaultCounts>,
    /// Records that could not be paired (a harness bug if any), first few.
    pub pairing_anomalies: Vec<String>,
    pub pairing_anomaly_count: u64,
}

/// How many pairing anomalies the summary lists.
const LISTED_ANOMALIES: usize = 10;

/// Counts what `records` hold.
pub fn summarize(records: &[Record]) -> Summary {
    summarize_index(&HistoryIndex::new(records))
}

/// Counts what the indexed history holds.
pub fn summarize_index(index: &HistoryIndex) -> Summary {
    let mut summary = Summary {
        records: index.records.len() as u64,
        duration_ms: index
            .records
            .iter()
            .map(|record| record.time_ms)
            .fold(0.0, f64::max),
        pairing_anomaly_count: index.pairing_anomalies.len() as u64,
        pairing_anomalies: index
            .pairing_anomalies
            .iter()
            .take(LISTED_ANOMALIES)
            .cloned()
            .collect(),
        ..Summary::default()
    };
    for operation in &index.operations {
        if operation.invoke.f == op_name::NEMESIS {
            continue;
        }
        let counts = summary
            .operations
            .entry(operation.invoke.f.clone())
            .or_default();
        counts.invoked += 1;
        match operation.completion.map(|completion| completion.kind) {
            Some(RecordType::Ok) => counts.ok += 1,
            Some(RecordType::Fail) => counts.fail += 1,
            Some(RecordType::Info) => counts.info += 1,
            Some(RecordType::Invoke) | None => counts.unfinished += 1,
        }
    }
    for record in index.records {
        if record.f == op_name::NEMESIS {
            let kind = record
                .fault()
                .map_or_else(|_| "unreadable".to_string(), |fault| fault.fault);
            let counts = summary.faults.entry(kind).or_default();
            match record.kind {
                RecordType::Invoke => counts.injected += 1,
                RecordType::Ok => counts.healed += 1,
                RecordType::Fail | RecordType::Info => {}
            }
        } else if record.process == crate::history::WORKER_PROCESS {
            let counts = summary.worker_records.entry(record.f.clone()).or_default();
            match record.kind {
                RecordType::Invoke => counts.invoked += 1,
                RecordType::Ok => counts.ok += 1,
                RecordType::Fail => counts.fail += 1,
                RecordType::Info => counts.info += 1,
            }
        }
    }
    summary
}

impl fmt::Display for Summary {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            out,
            "{} records over {:.1} s",
            self.records,
            self.duration_ms / 1e3
        )?;
        writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "operation", "invoked", "ok", "fail", "info", "unfinished"
        )?;
        for (f, counts) in self.operations.iter().chain(&self.worker_records) {
            writeln!(
                out,
                "{:<16} {:>8} {:>8} {:>8} {:>8} {:>10}",
                f, counts.invoked, counts.ok, counts.fail, counts.info, counts.unfinished
            )?;
        }
        for (fault, counts) in &self.faults {
            writeln!(
                out,
                "fault {fault}: injected {}, healed {}",
                counts.injected, counts.healed
            )?;
        }
        if self.pairing_anomaly_count > 0 {
            writeln!(
                out,
                "{} records could not be paired, e.g.:",
                self.pairing_anomaly_count
            )?;
            for anomaly in &self.pairing_anomalies {
                writeln!(out, "    {anomaly}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::test_history::HistoryBuilder;

    #[test]
    fn counts_outcomes_per_operation_and_faults_per_kind() {
        let mut history = HistoryBuilder::new();
        history
            .nemesis(RecordType::Invoke, "kill", &[1])
            .signal("c1", "w1", 1, RecordType::Ok)
            .signal("c1", "w1", 2, RecordType::Fail)
            .signal("c1", "w1", 3, RecordType::Info)
            .nemesis(RecordType::Ok, "kill", &[1])
            .nemesis(RecordType::Invoke, "partition", &[1, 2])
            .timer(RecordType::Invoke, "w1", "r1", "1", 5.0)
            .invoke("c2", op_name::START, "w2", serde_json::json!({}));
        let summary = summarize(&history.build());
        assert_eq!(
            summary.operations["signal"],
            OutcomeCounts {
                invoked: 3,
                ok: 1,
                fail: 1,
                info: 1,
                unfinished: 0
            }
        );
        assert_eq!(summary.operations["start"].unfinished, 1);
        assert_eq!(summary.worker_records["timer"].invoked, 1);
        assert_eq!(
            summary.faults["kill"],
            FaultCounts {
                injected: 1,
                healed: 1
            }
        );
        assert_eq!(summary.faults["partition"].injected, 1);
        assert_eq!(summary.pairing_anomaly_count, 0);
        let text = summary.to_string();
        assert!(
            text.contains("fault partition: injected 1, healed 0"),
            "{text}"
        );
    }
}
