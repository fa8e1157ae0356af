//! One pass over the history that every checker shares: client operations paired with their
//! completions, and the `read-history` and `final-read` values parsed once.
//!
//! An invoke is paired with the next completion of the same process, operation and workflow id
//! (clients are single-threaded; keying on the operation too lets the final reader overlap reads
//! of different workflows). The worker's timers and activities interleave and are
//! left to the checkers that pair them by their own ids.

use std::collections::{BTreeMap, HashMap};

use crate::history::{
    op_name, FinalRead, HistoryRead, Record, RecordType, ValueError, WORKER_PROCESS,
};

/// An invoke and the record that ended it, if any.
#[derive(Clone, Copy, Debug)]
pub struct Operation<'a> {
    pub invoke: &'a Record,
    /// `None` if the history ends (or the process invokes again) before an ok/fail/info: as
    /// unknown as an `info`.
    pub completion: Option<&'a Record>,
}

impl<'a> Operation<'a> {
    /// How the operation ended; a missing completion counts as `info`.
    pub fn outcome(&self) -> RecordType {
        self.completion
            .map_or(RecordType::Info, |completion| completion.kind)
    }

    /// The completion if it is an `ok`.
    pub fn ok(&self) -> Option<&'a Record> {
        self.completion
            .filter(|completion| completion.kind == RecordType::Ok)
    }
}

/// A read of one run's history: a `read-history` ok, or one run of a `final-read` ok.
#[derive(Clone, Copy, Debug)]
pub struct RunRead<'a> {
    pub workflow_id: &'a str,
    pub run_id: &'a str,
    /// The record that answered the read.
    pub ok: &'a Record,
    /// The record that asked for it.
    pub invoke: &'a Record,
    pub events: &'a [crate::history::EventDigest],
    /// True for a final read's run.
    pub is_final: bool,
}

/// The history, indexed for the checkers.
pub struct HistoryIndex<'a> {
    pub records: &'a [Record],
    /// Client operations (every process but the worker's), in invoke order.
    pub operations: Vec<Operation<'a>>,
    /// Completions with no invoke before them, and invokes cut short by another invoke.
    pub pairing_anomalies: Vec<String>,
    /// Every `read-history` ok that parsed, with its invoke.
    pub history_reads: Vec<(Operation<'a>, HistoryRead)>,
    /// Every `final-read` ok that parsed, with its invoke, in history order.
    pub final_reads: Vec<(Operation<'a>, FinalRead)>,
    /// The last final read of each workflow id (an index into `final_reads`).
    latest_final_read: BTreeMap<&'a str, usize>,
    /// `read-history` and `final-read` oks whose value did not parse.
    pub unreadable_reads: Vec<(&'a Record, ValueError)>,
}

impl<'a> HistoryIndex<'a> {
    pub fn new(records: &'a [Record]) -> Self {
        let mut operations: Vec<Operation<'a>> = Vec::new();
        let mut pairing_anomalies = Vec::new();
        let mut pending: HashMap<(&str, &str, Option<&str>), usize> = HashMap::new();
        for record in records {
            if record.process == WORKER_PROCESS {
                continue;
            }
            let key = (
                record.process.as_str(),
                record.f.as_str(),
                record.workflow_id.as_deref(),
            );
            if record.kind == RecordType::Invoke {
                if let Some(cut_short) = pending.insert(key, operations.len()) {
                    pairing_anomalies.push(format!(
                        "process {} invoked {} again at #{} before #{} completed",
                        record.process, record.f, record.index, operations[cut_short].invoke.index
                    ));
                }
                operations.push(Operation {
                    invoke: record,
                    completion: None,
                });
            } else if let Some(position) = pending.remove(&key) {
                operations[position].completion = Some(record);
            } else {
                pairing_anomalies.push(format!(
                    "#{} ({:?} {} by {}) completes nothing invoked",
                    record.index, record.kind, record.f, record.process
                ));
            }
        }

        let mut history_reads = Vec::new();
        let mut final_reads = Vec::new();
        let mut unreadable_reads = Vec::new();
        for operation in &operations {
            let Some(ok) = operation.ok() else { continue };
            if ok.f == op_name::READ_HISTORY {
                match ok.history_read() {
                    Ok(read) => history_reads.push((*operation, read)),
                    Err(error) => unreadable_reads.push((ok, error)),
                }
            } else if ok.f == op_name::FINAL_READ {
                match ok.workflow().and_then(|_| ok.final_read()) {
                    Ok(read) => final_reads.push((*operation, read)),
                    Err(error) => unreadable_reads.push((ok, error)),
                }
            }
        }
        let mut latest_final_read = BTreeMap::new();
        for (position, (operation, _)) in final_reads.iter().enumerate() {
            if let Some(workflow_id) = operation.invoke.workflow_id.as_deref() {
                latest_final_read.insert(workflow_id, position);
            }
        }

        HistoryIndex {
            records,
            operations,
            pairing_anomalies,
            history_reads,
            final_reads,
            latest_final_read,
            unreadable_reads,
        }
    }

    /// Client operations named `f`.
    pub fn operations_named(&self, f: &'a str) -> impl Iterator<Item = &Operation<'a>> + '_ {
        self.operations
            .iter()
            .filter(move |operation| operation.invoke.f == f)
    }

    /// True if the history has at least one final read.
    pub fn has_final_reads(&self) -> bool {
        !self.final_reads.is_empty()
    }

    /// The last final read of `workflow_id`, with the record that answered it.
    pub fn final_read(&self, workflow_id: &str) -> Option<(&'a Record, &FinalRead)> {
        let position = *self.latest_final_read.get(workflow_id)?;
        let (operation, read) = &self.final_reads[position];
        Some((operation.ok()?, read))
    }

    /// Workflow ids with a final read, in order.
    pub fn final_read_workflows(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.latest_final_read.keys().copied()
    }

    /// Every read of a run's history: the `read-history` oks, then each run of each final read.
    pub fn run_reads(&self) -> Vec<RunRead<'_>> {
        let mut reads = Vec::new();
        for (operation, read) in &self.history_reads {
            if let (Some(ok), Some(workflow_id)) =
                (operation.ok(), operation.invoke.workflow_id.as_deref())
            {
                reads.push(RunRead {
                    workflow_id,
                    run_id: &read.run_id,
                    ok,
                    invoke: operation.invoke,
                    events: &read.events,
                    is_final: false,
                });
            }
        }
        for (operation, read) in &self.final_reads {
            if let (Some(ok), Some(workflow_id)) =
                (operation.ok(), operation.invoke.workflow_id.as_deref())
            {
                for run in &read.runs {
                    reads.push(RunRead {
                        workflow_id,
                        run_id: &run.run_id,
                        ok,
                        invoke: operation.invoke,
                        events: &run.events,
                        is_final: true,
                    });
                }
            }
        }
        reads
    }
}
