//! The clients: single-threaded processes that start register workflows with fixed ids, signal
//! them with sequence numbers, send them register updates and read their histories, each
//! operation recorded as invoke then ok, fail or info. A process whose operation ended in info
//! is retired (its operation may still be in flight) and replaced by a fresh one. After the run,
//! `final_reads` asks every workflow to finish and records what the server holds.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use crate::{
    client::{digests, CallError, NodeClient, FINISH_SIGNAL, SEQ_SIGNAL},
    history::{op_name, FinalRead, FinalRun, HistoryRead, HistoryWriter, RecordType, RegisterOp},
};

/// Workflows the final phase finishes and reads at once.
const FINAL_READS_AT_ONCE: usize = 8;

/// Shape of the client load.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Client processes running at once.
    pub clients: usize,
    /// Workflows receiving operations at once.
    pub active_workflows: usize,
    /// Operations after which a workflow is retired (left for the final phase).
    pub ops_per_workflow: u64,
    /// Pause between one process's operations.
    pub think_time: Duration,
}

/// A workflow the clients work on.
struct Workflow {
    id: String,
    /// Known once a start was acknowledged.
    run_id: Option<String>,
    ops: u64,
    next_seq: u64,
}

/// The workflows: the active ones and every id ever used.
struct Registry {
    prefix: String,
    next_workflow: u64,
    active: Vec<Workflow>,
    /// Starts in flight (their workflows join `active` when the start ends ok or unknown).
    starting: usize,
    all: Vec<String>,
    next_update: u64,
}

/// What a client process needs.
pub struct Workload {
    config: WorkloadConfig,
    /// A client per slot; only members' are used.
    nodes: Vec<NodeClient>,
    member_slots: Arc<RwLock<Vec<usize>>>,
    history: Arc<HistoryWriter>,
    registry: Mutex<Registry>,
    next_process: AtomicU64,
}

/// One operation chosen by a client.
enum Op {
    Start(String),
    Signal(String, u64),
    Update(String, String, RegisterOp),
    ReadHistory(String, String),
}

impl Workload {
    pub fn new(
        config: WorkloadConfig,
        nodes: Vec<NodeClient>,
        member_slots: Arc<RwLock<Vec<usize>>>,
        history: Arc<HistoryWriter>,
        seed: u64,
    ) -> Arc<Workload> {
        Arc::new(Workload {
            config,
            nodes,
            member_slots,
            history,
            registry: Mutex::new(Registry {
                prefix: format!("jepsen-{seed}"),
                next_workflow: 0,
                active: Vec::new(),
                starting: 0,
                all: Vec::new(),
                next_update: 0,
            }),
            next_process: AtomicU64::new(0),
        })
    }

    /// Runs the client processes until `until`.
    pub async fn run(self: &Arc<Self>, until: Instant, seed: u64) {
        let mut slots = Vec::new();
        for slot in 0..self.config.clients {
            let workload = self.clone();
            let rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(slot as u64));
            slots.push(tokio::spawn(workload.client_slot(until, rng)));
        }
        for slot in slots {
            let _ = slot.await;
        }
    }

    /// One client slot: a process at a time, replaced when its operation ends unknown.
    async fn client_slot(self: Arc<Self>, until: Instant, mut rng: StdRng) {
        let mut process = self.new_process();
        while Instant::now() < until {
            let op = self.choose(&mut rng);
            let node = self.member(rng.random_range(0..usize::MAX));
            let outcome = self.perform(&process, node, op).await;
            if outcome == RecordType::Info {
                process = self.new_process();
            }
            let think = self.config.think_time.as_millis() as u64;
            if think > 0 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..=think))).await;
            }
        }
    }

    /// The client of member number `index` (modulo the member count).
    fn member(&self, index: usize) -> &NodeClient {
        let slots = self
            .member_slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = slots.get(index % slots.len().max(1)).copied().unwrap_or(1);
        &self.nodes[(slot - 1).min(self.nodes.len() - 1)]
    }

    fn new_process(&self) -> String {
        format!("c{}", self.next_process.fetch_add(1, Ordering::Relaxed))
    }

    fn choose(&self, rng: &mut StdRng) -> Op {
        let mut registry = lock(&self.registry);
        registry
            .active
            .retain(|w| w.ops < self.config.ops_per_workflow);
        if registry.active.len() + registry.starting < self.config.active_workflows
            || registry.active.is_empty()
        {
            let id = format!("{}-w{}", registry.prefix, registry.next_workflow);
            registry.next_workflow += 1;
            registry.starting += 1;
            registry.all.push(id.clone());
            return Op::Start(id);
        }
        let index = rng.random_range(0..registry.active.len());
        let update_number = registry.next_update;
        let workflow = &mut registry.active[index];
        workflow.ops += 1;
        let id = workflow.id.clone();
        let roll = rng.random_range(0..100);
        if roll < 30 {
            workflow.next_seq += 1;
            return Op::Signal(id, workflow.next_seq);
        }
        if roll < 40 {
            if let Some(run_id) = workflow.run_id.clone() {
                return Op::ReadHistory(id, run_id);
            }
        }
        let op = match rng.random_range(0..3) {
            0 => RegisterOp::Write(rng.random_range(0..5)),
            1 => RegisterOp::Read,
            _ => RegisterOp::Cas(rng.random_range(0..5), rng.random_range(0..5)),
        };
        registry.next_update += 1;
        Op::Update(id, format!("u{update_number}"), op)
    }

    async fn perform(&self, process: &str, node: &NodeClient, op: Op) -> RecordType {
        match op {
            Op::Start(id) => {
                let invoke = json!({});
                self.invoke(process, op_name::START, &id, invoke.clone());
                let result = node.start(&id).await;
                let run_id = result.as_ref().ok().cloned();
                let kind = self.complete(
                    process,
                    op_name::START,
                    &id,
                    invoke,
                    result,
                    |run_id| json!({ "run_id": run_id }),
                );
                let mut registry = lock(&self.registry);
                registry.starting -= 1;
                // A workflow whose start certainly failed gets no operations (the final read
                // still checks that it does not exist).
                if kind != RecordType::Fail {
                    registry.active.push(Workflow {
                        id,
                        run_id,
                        ops: 0,
                        next_seq: 0,
                    });
                }
                kind
            }
            Op::Signal(id, seq) => {
                let invoke = json!({ "seq": seq });
                self.invoke(process, op_name::SIGNAL, &id, invoke.clone());
                let result = node.signal(&id, SEQ_SIGNAL, &seq).await;
                self.complete(
                    process,
                    op_name::SIGNAL,
                    &id,
                    invoke.clone(),
                    result,
                    |_| invoke,
                )
            }
            Op::Update(id, update_id, op) => {
                let invoke = json!({ "update_id": update_id, "op": op });
                self.invoke(process, op_name::UPDATE, &id, invoke.clone());
                let result = node.update(&id, &update_id, op).await;
                self.complete(
                    process,
                    op_name::UPDATE,
                    &id,
                    invoke,
                    result,
                    |result| json!({ "update_id": update_id, "op": op, "result": result }),
                )
            }
            Op::ReadHistory(id, run_id) => {
                self.invoke(process, op_name::READ_HISTORY, &id, json!({}));
                let result = node.history(&id, &run_id).await;
                self.complete(
                    process,
                    op_name::READ_HISTORY,
                    &id,
                    json!({}),
                    result,
                    |events| {
                        serde_json::to_value(HistoryRead {
                            run_id: run_id.clone(),
                            events: digests(events),
                        })
                        .unwrap_or(Value::Null)
                    },
                )
            }
        }
    }

    fn invoke(&self, process: &str, f: &str, workflow_id: &str, value: Value) {
        self.history.record(
            process,
            RecordType::Invoke,
            f,
            Some(workflow_id),
            value,
            None,
        );
    }

    /// Records how an operation ended: ok with `ok_value`, or fail/info with the invoke's value
    /// and the error. Answers the record type.
    fn complete<T>(
        &self,
        process: &str,
        f: &str,
        workflow_id: &str,
        invoke: Value,
        result: Result<T, CallError>,
        ok_value: impl FnOnce(&T) -> Value,
    ) -> RecordType {
        let (kind, value, error) = match result {
            Ok(value) => (RecordType::Ok, ok_value(&value), None),
            Err(error) => (error.kind, invoke, Some(error.message)),
        };
        self.history
            .record(process, kind, f, Some(workflow_id), value, error);
        kind
    }

    /// Asks every workflow ever used to finish, waits for it to close, and records every run
    /// the server holds for its id (a `final-read` each). Gives up on a workflow after
    /// `timeout` and records what it could read.
    pub async fn final_reads(&self, timeout: Duration) -> Vec<String> {
        let ids = lock(&self.registry).all.clone();
        futures::stream::iter(ids)
            .map(|id| self.final_read(id, timeout))
            .buffer_unordered(FINAL_READS_AT_ONCE)
            .concat()
            .await
    }

    /// The final phase for one workflow id; answers its problems.
    async fn final_read(&self, id: String, timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        let deadline = Instant::now() + timeout;
        let mut attempt = 0usize;
        let finished = loop {
            let node = self.member(attempt);
            attempt += 1;
            match node.signal(&id, FINISH_SIGNAL, &()).await {
                Ok(()) => break true,
                // Never started, or already closed: nothing to finish.
                Err(e) if e.kind == RecordType::Fail => break false,
                Err(_) if Instant::now() > deadline => break false,
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        if finished {
            loop {
                let node = self.member(attempt);
                attempt += 1;
                match node.wait_for_close(&id).await {
                    Ok(()) => break,
                    Err(_) if Instant::now() > deadline => {
                        problems.push(format!("{id} did not close within {timeout:?}"));
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
        self.history.record(
            "final",
            RecordType::Invoke,
            op_name::FINAL_READ,
            Some(&id),
            json!({}),
            None,
        );
        match self.read_runs(&id, deadline, &mut attempt).await {
            Ok(read) => {
                let value = serde_json::to_value(read).unwrap_or(Value::Null);
                self.history.record(
                    "final",
                    RecordType::Ok,
                    op_name::FINAL_READ,
                    Some(&id),
                    value,
                    None,
                );
            }
            Err(message) => {
                problems.push(format!("{id}: final read failed: {message}"));
                self.history.record(
                    "final",
                    RecordType::Info,
                    op_name::FINAL_READ,
                    Some(&id),
                    json!({}),
                    Some(message),
                );
            }
        }
        problems
    }

    async fn read_runs(
        &self,
        id: &str,
        deadline: Instant,
        attempt: &mut usize,
    ) -> Result<FinalRead, String> {
        loop {
            let node = self.member(*attempt);
            *attempt += 1;
            match read_runs_from(node, id).await {
                Ok(read) => return Ok(read),
                Err(e) if Instant::now() > deadline => return Err(e.message),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
}

/// Every run visibility lists for `id`, each with its full history summarised.
async fn read_runs_from(node: &NodeClient, id: &str) -> Result<FinalRead, CallError> {
    let mut read = FinalRead::default();
    for (run_id, status) in node.runs(id).await? {
        let events = node.history(id, &run_id).await?;
        read.runs.push(summarise_run(run_id, status, &events));
    }
    Ok(read)
}

/// What the checkers need of a run's history.
fn summarise_run(
    run_id: String,
    status: String,
    events: &[keel_proto::temporal::api::history::v1::HistoryEvent],
) -> FinalRun {
    use keel_proto::temporal::api::history::v1::history_event::Attributes;
    let mut run = FinalRun {
        run_id,
        status,
        events: digests(events),
        ..Default::default()
    };
    for event in events {
        if crate::client::is_close(event.event_type) {
            run.closes += 1;
        }
        match &event.attributes {
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(signal))
                if signal.signal_name == SEQ_SIGNAL =>
            {
                if let Some(seq) = crate::client::from_json_payloads::<u64>(signal.input.as_ref()) {
                    run.signals.push(seq);
                }
            }
            Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(accepted)) => {
                if let Some(meta) = accepted
                    .accepted_request
                    .as_ref()
                    .and_then(|r| r.meta.as_ref())
                {
                    run.updates_accepted.push(meta.update_id.clone());
                }
            }
            _ => {}
        }
    }
    run
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
