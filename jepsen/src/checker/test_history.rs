//! A small builder for synthetic histories in tests: each call appends records stamped one
//! millisecond apart (or at a time set with [`HistoryBuilder::at`]).

use serde_json::{json, Value};

use crate::history::{
    digest, op_name, EventDigest, Fault, FinalRead, FinalRun, HistoryRead, Record, RecordType,
    RegisterOp, RegisterResult, REGISTER_INITIAL, WORKER_PROCESS,
};
use RegisterOp::{Cas, Read, Write};

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

    /// The time the next record gets.
    pub fn now_ms(&self) -> f64 {
        self.now_ms
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
        self.clock_fault(kind, fault, nodes, None)
    }

    /// A fault, with the clock offset a clock fault sets.
    pub fn clock_fault(
        &mut self,
        kind: RecordType,
        fault: &str,
        nodes: &[u64],
        clock_offset_ms: Option<i64>,
    ) -> &mut Self {
        let fault = Fault {
            fault: fault.to_string(),
            nodes: nodes.to_vec(),
            detail: String::new(),
            clock_offset_ms,
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

    /// Appends a healthy run of each of `workflows` workflow ids (`w0`, `w1`, …) under a kill
    /// fault: a start, `signals` signals, a history read, ~`updates` register updates (5%
    /// info), a timer of `timer_ms`, then final reads that hold all of it.
    pub fn healthy_workflows(
        &mut self,
        workflows: usize,
        signals: u64,
        updates: usize,
        timer_ms: f64,
    ) -> &mut Self {
        self.nemesis(RecordType::Invoke, "kill", &[2]);
        let mut final_runs = Vec::new();
        for workflow in 0..workflows {
            let workflow_id = format!("w{workflow}");
            let run_id = format!("r{workflow}");
            self.start("starter", &workflow_id, &run_id).timer(
                RecordType::Invoke,
                &workflow_id,
                &run_id,
                "1",
                timer_ms,
            );
            for seq in 1..=signals {
                self.signal("signaller", &workflow_id, seq, RecordType::Ok);
            }
            let mut event_types = vec![STARTED, TASK_SCHEDULED];
            event_types.extend((0..signals).map(|_| SIGNALED));
            self.read_history("reader", &workflow_id, &run_id, events(&event_types));
            let applied = self.register_updates(&workflow_id, workflow as u64 + 1, 5, updates, 5);
            let fired_at = self.now_ms() + timer_ms;
            self.at(fired_at)
                .timer(RecordType::Ok, &workflow_id, &run_id, "1", timer_ms);
            event_types.push(COMPLETED);
            let mut final_run = run(&run_id, "Completed", &event_types);
            final_run.signals = (1..=signals).collect();
            final_run.updates_accepted = applied;
            final_runs.push((workflow_id, final_run));
        }
        self.nemesis(RecordType::Ok, "kill", &[2]);
        for (workflow_id, final_run) in final_runs {
            self.final_read(&workflow_id, vec![final_run]);
        }
        self
    }
}

/// xorshift64*: a deterministic generator for the generated histories.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

enum Client {
    Idle,
    Invoked(String, RegisterOp),
    Applied(String, RegisterOp, RegisterResult),
}

impl HistoryBuilder {
    /// Appends a linearizable history by construction: `clients` clients invoke random ops on
    /// `workflow_id`'s register of values 0..5; each op takes effect at a random moment between
    /// its invoke and its ok. About `info_percent`% end in info before taking effect and as many
    /// after; 5% fail without taking effect. Answers the ids of the updates that took effect.
    pub fn register_updates(
        &mut self,
        workflow_id: &str,
        seed: u64,
        clients: usize,
        updates: usize,
        info_percent: u64,
    ) -> Vec<String> {
        let mut rng = Rng(seed | 1);
        let history = self;
        let mut applied = Vec::new();
        let mut register = REGISTER_INITIAL;
        let mut processes: Vec<(String, Client)> = (0..clients)
            .map(|client| (format!("{workflow_id}-c{client}"), Client::Idle))
            .collect();
        let mut next_process = clients;
        let mut invoked = 0;
        while invoked < updates || processes.iter().any(|(_, c)| !matches!(c, Client::Idle)) {
            let slot = rng.below(clients as u64) as usize;
            let (process, client) = &mut processes[slot];
            let mut retire = false;
            *client = match std::mem::replace(client, Client::Idle) {
                Client::Idle if invoked < updates => {
                    let op = match rng.below(3) {
                        0 => Write(rng.below(5) as i64),
                        1 => Read,
                        _ => Cas(rng.below(5) as i64, rng.below(5) as i64),
                    };
                    let update_id = format!("{workflow_id}-u{invoked}");
                    invoked += 1;
                    history.update_invoke(process, workflow_id, &update_id, op);
                    Client::Invoked(update_id, op)
                }
                Client::Idle => Client::Idle,
                Client::Invoked(update_id, op) => match rng.below(100) {
                    roll if roll < 5 => {
                        history.update_end(process, workflow_id, &update_id, RecordType::Fail);
                        Client::Idle
                    }
                    roll if roll < 5 + info_percent => {
                        history.update_end(process, workflow_id, &update_id, RecordType::Info);
                        retire = true;
                        Client::Idle
                    }
                    _ => {
                        let result = op.apply(&mut register);
                        applied.push(update_id.clone());
                        Client::Applied(update_id, op, result)
                    }
                },
                Client::Applied(update_id, op, result) => {
                    if rng.below(100) < info_percent {
                        history.update_end(process, workflow_id, &update_id, RecordType::Info);
                        retire = true;
                    } else {
                        history.update_ok(process, workflow_id, &update_id, op, result);
                    }
                    Client::Idle
                }
            };
            if retire {
                *process = format!("{workflow_id}-c{next_process}");
                next_process += 1;
            }
        }
        applied
    }
}
