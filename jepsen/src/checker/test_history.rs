//! A small builder for synthetic histories in tests: each call appends records stamped one
//! millisecond apart (or at a time set with [`HistoryBuilder::at`]).

use serde_json::{json, Value};

use crate::history::{
    digest, op_name, EventDigest, Fault, FinalRead, FinalRun, HistoryRead, Record, RecordType,
    RegisterOp, RegisterResult, WORKER_PROCESS,
};

/// `WorkflowExecutionStarted`, `WorkflowTaskScheduled`, `WorkflowExecutionSignaled`,
/// `WorkflowExecutionCompleted` in Temporal's numbering.
pub const STARTED: i32 = 1;
pub const TASK_SCHEDULED: i32 = 5;
pub const SIGNALED: i32 = 26;
pub const COMPLETED: i32 = 2;

/// One event whose hash is derived from its id and type.
pub fn event(id: i64, event_type: i32) -> EventDigest {
    (
        id,
        event_type,
        digest(format!("{id}/{event_type}").as_bytes()),
    )
}

/// Events with ids 1.. and the given types.
pub fn events(types: &[i32]) -> Vec<EventDigest> {
    types
        .iter()
        .enumerate()
        .map(|(position, event_type)| event(position as i64 + 1, *event_type))
        .collect()
}

/// A final run with no signals or updates.
pub fn run(run_id: &str, status: &str, event_types: &[i32]) -> FinalRun {
    let closes = event_types
        .iter()
        .filter(|event_type| **event_type == COMPLETED)
        .count() as u32;
    FinalRun {
        run_id: run_id.to_string(),
        status: status.to_string(),
        events: events(event_types),
        signals: Vec::new(),
        updates_accepted: Vec::new(),
        closes,
    }
}

#[derive(Default)]
pub struct HistoryBuilder {
    records: Vec<Record>,
    now_ms: f64,
}

impl HistoryBuilder {
    pub fn new() -> Self {
        HistoryBuilder::default()
    }

    /// Stamps the next records from `time_ms` on.
    pub fn at(&mut self, time_ms: f64) -> &mut Self {
        self.now_ms = time_ms;
        self
    }

    pub fn push(
        &mut self,
        process: &str,
        kind: RecordType,
        f: &str,
        workflow_id: Option<&str>,
        value: Value,
    ) -> &mut Self {
        self.records.push(Record {
            index: self.records.len() as u64,
            time_ms: self.now_ms,
            process: process.to_string(),
            kind,
            f: f.to_string(),
            workflow_id: workflow_id.map(str::to_string),
            value,
            error: matches!(kind, RecordType::Fail | RecordType::Info)
                .then(|| "DeadlineExceeded: synthetic".to_string()),
        });
        self.now_ms += 1.0;
        self
    }

    pub fn invoke(&mut self, process: &str, f: &str, workflow_id: &str, value: Value) -> &mut Self {
        self.push(process, RecordType::Invoke, f, Some(workflow_id), value)
    }

    pub fn complete(
        &mut self,
        process: &str,
        kind: RecordType,
        f: &str,
        workflow_id: &str,
        value: Value,
    ) -> &mut Self {
        self.push(process, kind, f, Some(workflow_id), value)
    }

    /// A start, acknowledged with `run_id`.
    pub fn start(&mut self, process: &str, workflow_id: &str, run_id: &str) -> &mut Self {
        self.invoke(process, op_name::START, workflow_id, json!({}))
            .complete(
                process,
                RecordType::Ok,
                op_name::START,
                workflow_id,
                json!({ "run_id": run_id }),
            )
    }

    /// A signal with `seq`, ending as `kind`.
    pub fn signal(
        &mut self,
        process: &str,
        workflow_id: &str,
        seq: u64,
        kind: RecordType,
    ) -> &mut Self {
        self.invoke(process, op_name::SIGNAL, workflow_id, json!({ "seq": seq }))
            .complete(
                process,
                kind,
                op_name::SIGNAL,
                workflow_id,
                json!({ "seq": seq }),
            )
    }

    pub fn update_invoke(
        &mut self,
        process: &str,
        workflow_id: &str,
        update_id: &str,
        op: RegisterOp,
    ) -> &mut Self {
        self.invoke(
            process,
            op_name::UPDATE,
            workflow_id,
            json!({ "update_id": update_id, "op": op }),
        )
    }

    pub fn update_ok(
        &mut self,
        process: &str,
        workflow_id: &str,
        update_id: &str,
        op: RegisterOp,
        result: RegisterResult,
    ) -> &mut Self {
        self.complete(
            process,
            RecordType::Ok,
            op_name::UPDATE,
            workflow_id,
            json!({ "update_id": update_id, "op": op, "result": result }),
        )
    }

    /// Ends an update as `fail` or `info`.
    pub fn update_end(
        &mut self,
        process: &str,
        workflow_id: &str,
        update_id: &str,
        kind: RecordType,
    ) -> &mut Self {
        self.complete(
            process,
            kind,
            op_name::UPDATE,
            workflow_id,
            json!({ "update_id": update_id }),
        )
    }

    /// An update invoked and acknowledged with no other record between.
    pub fn update(
        &mut self,
        process: &str,
        workflow_id: &str,
        update_id: &str,
        op: RegisterOp,
        result: RegisterResult,
    ) -> &mut Self {
        self.update_invoke(process, workflow_id, update_id, op)
            .update_ok(process, workflow_id, update_id, op, result)
    }

    pub fn read_history(
        &mut self,
        process: &str,
        workflow_id: &str,
        run_id: &str,
        events: Vec<EventDigest>,
    ) -> &mut Self {
        let read = HistoryRead {
            run_id: run_id.to_string(),
            events,
        };
        self.invoke(process, op_name::READ_HISTORY, workflow_id, json!({}))
            .complete(
                process,
                RecordType::Ok,
                op_name::READ_HISTORY,
                workflow_id,
                serde_json::to_value(read).unwrap(),
            )
    }

    pub fn final_read(&mut self, workflow_id: &str, runs: Vec<FinalRun>) -> &mut Self {
        let read = FinalRead { runs };
        self.invoke("final", op_name::FINAL_READ, workflow_id, json!({}))
            .complete(
                "final",
                RecordType::Ok,
                op_name::FINAL_READ,
                workflow_id,
                serde_json::to_value(read).unwrap(),
            )
    }

    /// A worker's timer record (`invoke` when commanded, `ok` when seen fired).
    pub fn timer(
        &mut self,
        kind: RecordType,
        workflow_id: &str,
        run_id: &str,
        timer_id: &str,
        duration_ms: f64,
    ) -> &mut Self {
        self.push(
            WORKER_PROCESS,
            kind,
            op_name::TIMER,
            Some(workflow_id),
            json!({ "run_id": run_id, "timer_id": timer_id, "duration_ms": duration_ms }),
        )
    }

    /// A fault injected (`invoke`) or healed (`ok`).
    pub fn nemesis(&mut self, kind: RecordType, fault: &str, nodes: &[u64]) -> &mut Self {
        let fault = Fault {
            fault: fault.to_string(),
            nodes: nodes.to_vec(),
            detail: String::new(),
        };
        self.push(
            "nemesis",
            kind,
            op_name::NEMESIS,
            None,
            serde_json::to_value(fault).unwrap(),
        )
    }

    pub fn build(&self) -> Vec<Record> {
        self.records.clone()
    }
}
