//! The run's history: one JSON object per line, in the order things happened, as Jepsen records
//! it. Clients write an `invoke` before each operation and then exactly one of `ok` (it happened),
//! `fail` (it certainly did not happen) or `info` (unknown: a timeout or a lost connection; it may
//! have happened, now or later). The worker and the nemesis record what they observed and did the
//! same way, and the final reads record what the server holds once the faults are healed.
//!
//! Operations and their values (`value` is a JSON object; the fields named here):
//!
//! | f | invoke value | ok value |
//! |---|---|---|
//! | `start` | `{}` | `{run_id}` |
//! | `signal` | `{seq}` | `{seq}` |
//! | `update` | `{update_id, op}` (a [`RegisterOp`]) | `{update_id, op, result}` ([`RegisterResult`]) |
//! | `read-history` | `{}` | [`HistoryRead`] |
//! | `timer` (worker) | `{run_id, timer_id, duration_ms}` when first commanded | same, when seen fired |
//! | `activity` (worker) | `{run_id, activity_id, attempt}` when run | same, when answered |
//! | `finish` | `{}` | `{}` (the finishing signal was accepted) |
//! | `final-read` | `{}` | [`FinalRead`] |
//! | `nemesis` | [`Fault`] when injected | [`Fault`] when healed |

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::Path,
    sync::Mutex,
    time::Instant,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// What a record says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the history, from 0.
    pub index: u64,
    /// Milliseconds since the run started (monotonic clock of the harness).
    pub time_ms: f64,
    /// Who did it: `c<N>` for clients (a client whose operation ended in `info` is retired and
    /// the next one gets a new number), `worker`, `reader`, `nemesis`, `final`.
    pub process: String,
    #[serde(rename = "type")]
    pub kind: RecordType,
    /// The operation's name (see the module doc).
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub value: Value,
    /// Why it failed or is unknown: the gRPC status code and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An operation on a workflow's register, sent as an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterOp {
    /// Set the register; answers nothing.
    Write(i64),
    /// Answer the register's value.
    Read,
    /// If the register holds the first value, set it to the second; answers whether it did.
    Cas(i64, i64),
}

/// What a register update answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterResult {
    Written,
    Value(i64),
    Swapped(bool),
}

/// The register every workflow starts with.
pub const REGISTER_INITIAL: i64 = 0;

impl RegisterOp {
    /// Applies the operation to `register`, answering what the update returns.
    pub fn apply(self, register: &mut i64) -> RegisterResult {
        match self {
            RegisterOp::Write(value) => {
                *register = value;
                RegisterResult::Written
            }
            RegisterOp::Read => RegisterResult::Value(*register),
            RegisterOp::Cas(from, to) => {
                let swapped = *register == from;
                if swapped {
                    *register = to;
                }
                RegisterResult::Swapped(swapped)
            }
        }
    }
}

/// One event of a history as the checkers see it: id, type (Temporal's `EventType` number) and
/// a hash of its encoded bytes (FNV-1a 64, hex), so two reads of one event can be compared.
pub type EventDigest = (i64, i32, String);

/// A workflow's history as read at one moment (`read-history` ok values, and each run of a
/// final read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryRead {
    pub run_id: String,
    pub events: Vec<EventDigest>,
}

/// One run of a workflow id as the final read found it, with what its history says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalRun {
    pub run_id: String,
    /// Temporal's execution status name, e.g. `Running`, `Completed`.
    pub status: String,
    pub events: Vec<EventDigest>,
    /// Sequence numbers of the `seq` signals, in history order.
    pub signals: Vec<u64>,
    /// Ids of the updates the run accepted, in history order.
    pub updates_accepted: Vec<String>,
    /// Close events (completed, failed, timed out, terminated, canceled, continued-as-new).
    pub closes: u32,
}

/// Everything the server holds for a workflow id once faults are healed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalRead {
    pub runs: Vec<FinalRun>,
}

/// A fault the nemesis injected (invoke) or healed (ok).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// The nemesis's name: `kill`, `pause`, `partition`, `clock`, `crash-unsynced`, `membership`.
    pub fault: String,
    /// Node ids it acts on.
    pub nodes: Vec<u64>,
    /// Anything else worth knowing (the partition's shape, the clock offset).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// For clock faults: how far the node's wall clock was set off, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
}

/// The operation names (`f`) the harness records.
pub mod op_name {
    /// Start a workflow with its fixed id.
    pub const START: &str = "start";
    /// Send a `seq` signal.
    pub const SIGNAL: &str = "signal";
    /// Send a register update.
    pub const UPDATE: &str = "update";
    /// Read a workflow's history during the run.
    pub const READ_HISTORY: &str = "read-history";
    /// A timer the worker commanded and saw fire.
    pub const TIMER: &str = "timer";
    /// One execution attempt of an activity.
    pub const ACTIVITY: &str = "activity";
    /// Ask a workflow to finish.
    pub const FINISH: &str = "finish";
    /// Read everything the server holds for a workflow id after the faults are healed.
    pub const FINAL_READ: &str = "final-read";
    /// A fault injected (invoke) or healed (ok).
    pub const NEMESIS: &str = "nemesis";
}

/// The process that records the worker's timers and activities; its operations interleave,
/// so they are paired by timer or activity id, not by process.
pub const WORKER_PROCESS: &str = "worker";

/// What a `timer` record carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerValue {
    pub run_id: String,
    /// The timer's id within its run (a string or a number in the file).
    #[serde(deserialize_with = "string_or_number")]
    pub timer_id: String,
    pub duration_ms: f64,
}

/// Accepts `"7"` or `7` as the string `"7"`.
fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, found {other}"
        ))),
    }
}

/// A record whose `value` lacks what its `f` promises (a harness bug, or a damaged file).
#[derive(Debug, Error)]
#[error("record #{index} ({kind:?} {f}): {field}: {reason}")]
pub struct ValueError {
    pub index: u64,
    pub kind: RecordType,
    pub f: String,
    pub field: &'static str,
    pub reason: String,
}

impl Record {
    fn value_error(&self, field: &'static str, reason: impl ToString) -> ValueError {
        ValueError {
            index: self.index,
            kind: self.kind,
            f: self.f.clone(),
            field,
            reason: reason.to_string(),
        }
    }

    /// Deserializes the field `name` of `value`.
    fn field<'a, T: Deserialize<'a>>(&'a self, name: &'static str) -> Result<T, ValueError> {
        let field = self
            .value
            .get(name)
            .ok_or_else(|| self.value_error(name, "missing"))?;
        T::deserialize(field).map_err(|source| self.value_error(name, source))
    }

    /// Deserializes the whole `value` as a `T`.
    fn whole<'a, T: Deserialize<'a>>(&'a self, what: &'static str) -> Result<T, ValueError> {
        T::deserialize(&self.value).map_err(|source| self.value_error(what, source))
    }

    /// The workflow id, which every operation on a workflow carries.
    pub fn workflow(&self) -> Result<&str, ValueError> {
        self.workflow_id
            .as_deref()
            .ok_or_else(|| self.value_error("workflow_id", "missing"))
    }

    /// A signal's sequence number.
    pub fn seq(&self) -> Result<u64, ValueError> {
        self.field("seq")
    }

    /// An update's id.
    pub fn update_id(&self) -> Result<&str, ValueError> {
        self.field("update_id")
    }

    /// An update's register operation.
    pub fn register_op(&self) -> Result<RegisterOp, ValueError> {
        self.field("op")
    }

    /// What an acknowledged update answered.
    pub fn register_result(&self) -> Result<RegisterResult, ValueError> {
        self.field("result")
    }

    /// The run id a `start` ok, `timer` or `activity` record names.
    pub fn run_id(&self) -> Result<&str, ValueError> {
        self.field("run_id")
    }

    /// A `read-history` ok's history.
    pub fn history_read(&self) -> Result<HistoryRead, ValueError> {
        self.whole("history read")
    }

    /// A `final-read` ok's runs.
    pub fn final_read(&self) -> Result<FinalRead, ValueError> {
        self.whole("final read")
    }

    /// A `nemesis` record's fault.
    pub fn fault(&self) -> Result<Fault, ValueError> {
        self.whole("fault")
    }

    /// A `timer` record's timer.
    pub fn timer(&self) -> Result<TimerValue, ValueError> {
        self.whole("timer")
    }
}

/// FNV-1a 64 of `bytes`, as 16 hex digits: stable across builds, unlike std's hasher.
pub fn digest(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Why a history could not be read or written.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {source}")]
    Parse {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads a history file written by [`HistoryWriter`].
pub fn read(path: &Path) -> Result<Vec<Record>, HistoryError> {
    let display = path.display().to_string();
    let io = |source| HistoryError::Io {
        path: display.clone(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut records = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: display.clone(),
            line: number + 1,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Appends records to the history file as they happen; cheap to share between tasks.
pub struct HistoryWriter {
    started: Instant,
    inner: Mutex<WriterState>,
}

struct WriterState {
    next_index: u64,
    out: BufWriter<File>,
    /// The first line that could not be written, reported by `finish`.
    write_error: Option<std::io::Error>,
    records: Vec<Record>,
}

impl HistoryWriter {
    pub fn create(path: &Path, started: Instant) -> Result<Self, HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(HistoryWriter {
            started,
            inner: Mutex::new(WriterState {
                next_index: 0,
                out: BufWriter::new(file),
                write_error: None,
                records: Vec::new(),
            }),
        })
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    /// Records one line, stamped now, and answers its index.
    pub fn record(
        &self,
        process: &str,
        kind: RecordType,
        f: &str,
        workflow_id: Option<&str>,
        value: Value,
        error: Option<String>,
    ) -> u64 {
        let mut state = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = Record {
            index: state.next_index,
            time_ms: self.now_ms(),
            process: process.to_string(),
            kind,
            f: f.to_string(),
            workflow_id: workflow_id.map(str::to_string),
            value,
            error,
        };
        state.next_index += 1;
        // A line that cannot be written is still kept in memory, and `finish` reports the error.
        let written = serde_json::to_string(&record)
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(state.out, "{line}"));
        if let Err(error) = written {
            state.write_error.get_or_insert(error);
        }
        state.records.push(record);
        state.next_index - 1
    }

    /// How many records of each type so far: invoke, ok, fail, info.
    pub fn tally(&self) -> [u64; 4] {
        let state = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts = [0; 4];
        for record in &state.records {
            counts[record.kind as usize] += 1;
        }
        counts
    }

    /// Flushes the file and answers every record written.
    pub fn finish(&self) -> Result<Vec<Record>, std::io::Error> {
        let mut state = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(error) = state.write_error.take() {
            return Err(error);
        }
        state.out.flush()?;
        Ok(std::mem::take(&mut state.records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let writer = HistoryWriter::create(&path, Instant::now()).unwrap();
        writer.record(
            "c1",
            RecordType::Invoke,
            "update",
            Some("w1"),
            serde_json::json!({"update_id": "u1", "op": RegisterOp::Cas(0, 3)}),
            None,
        );
        writer.record(
            "c1",
            RecordType::Info,
            "update",
            Some("w1"),
            serde_json::json!({"update_id": "u1"}),
            Some("DeadlineExceeded: timed out".into()),
        );
        let written = writer.finish().unwrap();
        let read_back = read(&path).unwrap();
        assert_eq!(read_back, written);
        assert_eq!(read_back[1].index, 1);
        assert_eq!(read_back[1].kind, RecordType::Info);
        let op: RegisterOp = serde_json::from_value(read_back[0].value["op"].clone()).unwrap();
        assert_eq!(op, RegisterOp::Cas(0, 3));
    }

    #[test]
    fn register_ops_apply_as_a_register() {
        let mut register = REGISTER_INITIAL;
        assert_eq!(
            RegisterOp::Read.apply(&mut register),
            RegisterResult::Value(0)
        );
        assert_eq!(
            RegisterOp::Cas(1, 2).apply(&mut register),
            RegisterResult::Swapped(false)
        );
        assert_eq!(
            RegisterOp::Write(1).apply(&mut register),
            RegisterResult::Written
        );
        assert_eq!(
            RegisterOp::Cas(1, 2).apply(&mut register),
            RegisterResult::Swapped(true)
        );
        assert_eq!(
            RegisterOp::Read.apply(&mut register),
            RegisterResult::Value(2)
        );
    }

    #[test]
    fn digest_is_fnv1a() {
        assert_eq!(digest(b""), "cbf29ce484222325");
        assert_eq!(digest(b"a"), "af63dc4c8601ec8c");
    }
}
