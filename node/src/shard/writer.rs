//! The shard writer: leadership following, batching, deciding, proposing, and the effects that
//! run only after commit (replies, task offers, deadlines).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Weak};

use keel_raft::ShardGroup;
use openraft::ServerState;
use prost::Message;
use tokio::sync::mpsc;

use super::applier::{WriteSet, APPLIED};
use super::recent_history::{self, FreshEvents};
use super::{
    encode_state, keys, Job, Op, OpResult, Shard, ShardError, MAX_BATCH, SETTLE_WAIT, WRITER_QUEUE,
};
use crate::engine::{
    self, decide_start, dispatchable, Deadline, EngineError, MutableState, Outcome, Reply, Request,
    StartDecision,
};
use crate::matching::{ClaimedPoll, QueueKey, RunTask, StartedTask};

/// A run, as the writer keys its caches and deadlines.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RunKey {
    namespace_id: String,
    workflow_id: String,
    run_id: String,
}

impl RunKey {
    fn of(state: &MutableState) -> RunKey {
        RunKey {
            namespace_id: state.namespace_id.clone(),
            workflow_id: state.workflow_id.clone(),
            run_id: state.run_id.clone(),
        }
    }

    /// The run's retention index key, for a close at `close_time_ns`.
    fn retention_key(&self, close_time_ns: i64) -> Vec<u8> {
        keys::retention(
            &self.namespace_id,
            close_time_ns,
            &self.workflow_id,
            &self.run_id,
        )
    }
}

/// Starts a writer whenever this node becomes leader of the shard's group, and retires it when
/// leadership goes. Ends when the shard is dropped.
pub(crate) async fn follow_leadership(shard: Weak<Shard>) {
    let Some(mut metrics) = shard.upgrade().map(|s| s.group.metrics()) else {
        return;
    };
    loop {
        let (leading, term) = {
            let m = metrics.borrow_and_update();
            (
                m.state == ServerState::Leader && m.current_leader == Some(m.id),
                m.current_term,
            )
        };
        let Some(current) = shard.upgrade() else {
            return;
        };
        {
            let mut writer = current.writer.lock().unwrap_or_else(|e| e.into_inner());
            match (&*writer, leading) {
                (Some((writer_term, _)), true) if *writer_term == term => {}
                (_, true) => {
                    let (sender, jobs) = mpsc::channel(WRITER_QUEUE);
                    *writer = Some((term, sender));
                    tokio::spawn(run_writer(Arc::downgrade(&current), term, jobs));
                    tracing::info!(shard = current.id, term, "shard writer started");
                }
                (Some(_), false) => {
                    *writer = None;
                    tracing::info!(shard = current.id, "shard writer retired: not leader");
                }
                (None, false) => {}
            }
        }
        drop(current);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

struct Writer {
    shard: Arc<Shard>,
    term: u64,
    states: HashMap<RunKey, Arc<MutableState>>,
    currents: HashMap<(String, String), String>,
    deadlines: BTreeSet<(i64, RunKey, Deadline)>,
    /// Runs deleted by the batch being decided (their stored keys are still readable).
    deleted: HashSet<RunKey>,
    /// Events the batch being decided writes, for the shard's recent history once committed.
    fresh: Vec<FreshEvents>,
    /// When the retention index is next looked at.
    next_sweep_ns: i64,
}

/// How often each shard leader looks for runs past their namespace's retention.
const SWEEP_INTERVAL_NS: i64 = 10_000_000_000;

/// Most cached mutable states before the cache is cleared.
const CACHE_LIMIT: usize = 50_000;

async fn run_writer(shard: Weak<Shard>, term: u64, mut jobs: mpsc::Receiver<Job>) {
    let Some(strong) = shard.upgrade() else {
        return;
    };
    let mut writer = Writer {
        shard: strong,
        term,
        states: HashMap::new(),
        currents: HashMap::new(),
        deadlines: BTreeSet::new(),
        deleted: HashSet::new(),
        fresh: Vec::new(),
        next_sweep_ns: 0,
    };
    let mut owner = writer.shard.context.owner.changes();
    let mut matching_node = owner.borrow_and_update().current_leader;
    let mut routing = writer.shard.context.deployments.refresh();
    'recover: loop {
        if let Err(error) = writer.recover().await {
            tracing::warn!(shard = writer.shard.id, term, %error, "shard writer stopped");
            writer.retire();
            return;
        }
        loop {
            let next_deadline = writer
                .deadlines
                .first()
                .map_or(writer.next_sweep_ns, |(at, _, _)| {
                    (*at).min(writer.next_sweep_ns)
                });
            let mut batch = Vec::new();
            let sleep = {
                let now = writer.shard.context.clock.now_ns();
                std::time::Duration::from_nanos(u64::try_from(next_deadline - now).unwrap_or(0))
            };
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => batch.push(job),
                    None => return,
                },
                changed = owner.changed() => {
                    let now_matching = owner.borrow_and_update().current_leader;
                    if changed.is_ok() && now_matching.is_some() && now_matching != matching_node {
                        // A new matching node knows no tasks: offer every open run's again.
                        matching_node = now_matching;
                        continue 'recover;
                    }
                    let now_routing = writer.shard.context.deployments.refresh();
                    if now_routing != routing {
                        // Worker versioning moved tasks to other lanes: offer them again.
                        routing = now_routing;
                        continue 'recover;
                    }
                    continue;
                }
                _ = tokio::time::sleep(sleep) => {}
            }
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch.extend(writer.due_deadlines());
            batch.extend(writer.expired_runs(MAX_BATCH.saturating_sub(batch.len())));
            if !writer.run_batch(batch).await {
                writer.states.clear();
                writer.currents.clear();
                writer.deadlines.clear();
                writer.deleted.clear();
                if !writer.settle().await {
                    writer.retire();
                    return;
                }
                continue 'recover;
            }
        }
    }
}

impl Writer {
    fn retire(&self) {
        self.shard.recent.clear();
        let mut slot = self.shard.writer.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(term, _)| *term == self.term) {
            *slot = None;
        }
    }

    fn group(&self) -> &ShardGroup {
        &self.shard.group
    }

    /// Waits until everything committed is applied, then re-offers every open run's tasks and
    /// re-arms its deadlines.
    async fn recover(&mut self) -> Result<(), ShardError> {
        self.shard.barrier().await?;
        // The read index covers what is known committed, not necessarily all of this leader's
        // log: a leader restarted in its own term (openraft restores a persisted leader vote)
        // finds entries of that same term that an earlier writer decided before the restart.
        // They pass the term fence, so they must be applied before anything is decided anew.
        if !self.settle().await {
            return Err(self.shard.unavailable(
                "its leader could not apply its own log; leadership moved or stalled",
            ));
        }
        let (start, end) = keys::state_range();
        let mut states = Vec::new();
        let indexed = self
            .group()
            .read_local(&keys::retention_indexed())
            .map_err(|e| self.shard.read_error(e))?
            .is_some();
        let mut unindexed = Vec::new();
        self.group()
            .scan_local(&start, &end, |_, value| {
                if let Some(state) = super::decode_state(value) {
                    if let (false, Some(close_time_ns)) = (indexed, state.close_time_ns) {
                        unindexed.push(RunKey::of(&state).retention_key(close_time_ns));
                    }
                    if state.is_running() || !engine::transfers(&state).is_empty() {
                        states.push(state);
                    }
                }
                true
            })
            .map_err(|e| self.shard.read_error(e))?;
        if !indexed {
            self.index_closed_runs(unindexed).await;
        }
        // Everything in this leader's log is applied by now, every write of earlier terms and
        // of earlier writers of this term: the states just read are committed through the
        // applied index.
        let applied = self.group().metrics().borrow().last_applied;
        self.shard
            .answered_through(applied.map_or(0, |log_id| log_id.index));
        let count = states.len();
        let mut offers = Vec::new();
        for state in states {
            self.after_commit(&state, &mut offers);
        }
        super::forwarding::offer_tasks(&self.shard, offers);
        tracing::info!(
            shard = self.shard.id,
            term = self.term,
            open_runs = count,
            "shard writer recovered"
        );
        Ok(())
    }

    /// Adds the retention entries of runs closed before the index existed (data of an older
    /// Keel), a bounded write at a time, then the marker that they are in. A failure is
    /// logged; the next leader of the shard tries again.
    async fn index_closed_runs(&self, entries: Vec<Vec<u8>>) {
        const PER_WRITE: usize = 10_000;
        let count = entries.len();
        let mut chunks = entries.chunks(PER_WRITE).peekable();
        loop {
            let mut writes = WriteSet::fenced(self.term);
            writes.puts = chunks
                .next()
                .unwrap_or_default()
                .iter()
                .map(|key| (key.clone(), Vec::new()))
                .collect();
            let last = chunks.peek().is_none();
            if last {
                writes.puts.push((keys::retention_indexed(), Vec::new()));
            }
            match self.group().propose(writes.encode()).await {
                Ok(committed) if committed.response.as_ref() == APPLIED => {}
                outcome => {
                    tracing::warn!(
                        shard = self.shard.id,
                        ?outcome,
                        "retention index of earlier closed runs not written; the next leader retries"
                    );
                    return;
                }
            }
            if last {
                break;
            }
        }
        if count > 0 {
            tracing::info!(
                shard = self.shard.id,
                closed_runs = count,
                "retention index built for earlier closed runs"
            );
        }
    }

    /// Waits until this leader's whole log is applied (after a failed proposal: so no decision
    /// of ours with an unknown fate can land behind later ones). False if leadership is gone.
    async fn settle(&self) -> bool {
        self.group().apply_own_log(self.term, SETTLE_WAIT).await
    }

    fn due_deadlines(&mut self) -> Vec<Job> {
        let now = self.shard.context.clock.now_ns();
        let mut jobs = Vec::new();
        while let Some((at, _, _)) = self.deadlines.first() {
            if *at > now || jobs.len() >= MAX_BATCH {
                break;
            }
            let Some((_, run, deadline)) = self.deadlines.pop_first() else {
                break;
            };
            jobs.push(Job {
                namespace_id: run.namespace_id,
                workflow_id: run.workflow_id,
                op: Op::Run {
                    run_id: run.run_id,
                    request: Request::Deadline(deadline),
                },
                reply: None,
            });
        }
        jobs
    }

    /// Deletion jobs for up to `room` runs past their namespace's retention, when the sweep is
    /// due. The sweep comes back at once while it finds a full batch, else after
    /// [`SWEEP_INTERVAL_NS`].
    fn expired_runs(&mut self, room: usize) -> Vec<Job> {
        let now = self.shard.context.clock.now_ns();
        if now < self.next_sweep_ns || room == 0 {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        for namespace in self.shard.context.namespaces.list() {
            let retention_ns = namespace.retention_ms.saturating_mul(1_000_000);
            let (start, end) =
                keys::retention_range(&namespace.id, now.saturating_sub(retention_ns));
            let scanned = self.group().scan_local(&start, &end, |key, _| {
                if let Some((close_time_ns, workflow_id, run_id)) = keys::parse_retention(key) {
                    jobs.push(Job {
                        namespace_id: namespace.id.clone(),
                        workflow_id,
                        op: Op::Delete {
                            run_id,
                            expired_at_ns: Some(close_time_ns),
                        },
                        reply: None,
                    });
                }
                jobs.len() < room
            });
            if let Err(error) = scanned {
                tracing::warn!(shard = self.shard.id, %error, "retention sweep could not read its index");
            }
            if jobs.len() >= room {
                return jobs;
            }
        }
        self.next_sweep_ns = now.saturating_add(SWEEP_INTERVAL_NS);
        jobs
    }

    /// Decides every job, proposes the writes, and on commit runs effects and replies. False if
    /// the proposal failed (outcomes unknown; the writer must settle and recover).
    async fn run_batch(&mut self, batch: Vec<Job>) -> bool {
        if self.states.len() > CACHE_LIMIT {
            self.states.clear();
            self.currents.clear();
        }
        let now = self.shard.context.clock.now_ns();
        let mut writes = WriteSet::fenced(self.term);
        let mut done = Vec::new();
        let mut touched = Vec::new();
        for job in batch {
            let result = self.decide(&job, now, &mut writes, &mut touched);
            done.push((job.reply, result));
        }
        let claimed = self.start_for_waiting_polls(now, &mut writes, &mut touched);
        if !writes.is_empty() {
            // In key order (stable: a key put twice keeps its last value), RocksDB's memtable
            // inserts each key next to the one before instead of searching from the top.
            writes.puts.sort_by(|a, b| a.0.cmp(&b.0));
            let outcome = self.group().propose(writes.encode()).await;
            let failure = match outcome {
                Ok(committed) if committed.response.as_ref() == APPLIED => {
                    self.shard.answered_through(committed.index);
                    None
                }
                Ok(committed) => Some(format!(
                    "the write was not applied ({})",
                    String::from_utf8_lossy(&committed.response)
                )),
                Err(error) => Some(error.to_string()),
            };
            if let Some(reason) = failure {
                self.fresh.clear();
                tracing::warn!(shard = self.shard.id, term = self.term, %reason, "shard proposal failed");
                for (reply, result) in done {
                    let result = result.and_then(|_| {
                        Err(self
                            .shard
                            .unavailable(format!("{reason}; the outcome is unknown")))
                    });
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
                return false;
            }
        }
        self.shard.recent.append(std::mem::take(&mut self.fresh));
        for run in &self.deleted {
            self.shard.recent.forget(&run.run_id);
        }
        let mut offers = Vec::new();
        for run in touched {
            if let Some(state) = self.states.get(&run).cloned() {
                self.after_commit(&state, &mut offers);
            }
        }
        super::forwarding::offer_tasks(&self.shard, offers);
        for (poll, started) in claimed {
            poll.deliver(started);
        }
        for (reply, result) in done {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
        self.deleted.clear();
        true
    }

    /// For each task this batch made dispatchable that a poll waits for on this node (when it
    /// runs matching), records the task as started for that poll in this batch: the start
    /// rides on the commit that scheduled it instead of a commit of its own. The polls get
    /// their tasks after the commit.
    fn start_for_waiting_polls(
        &mut self,
        now: i64,
        writes: &mut WriteSet,
        touched: &mut Vec<RunKey>,
    ) -> Vec<(ClaimedPoll, StartedTask)> {
        let mut claimed = Vec::new();
        if touched.is_empty() || !matches!(self.shard.context.owner.remote(), Ok(None)) {
            return claimed;
        }
        let matching = self.shard.context.matching.clone();
        let mut runs = touched.clone();
        runs.sort_unstable();
        runs.dedup();
        for run in runs {
            let Some(mut current) = self.states.get(&run).cloned() else {
                continue;
            };
            for task in dispatchable(&current, now) {
                let (key, task, _) = self.shard.route(&current, task);
                let Some(poll) = matching.claim(&key) else {
                    continue;
                };
                let (request_id, identity) = (poll.request_id.clone(), poll.identity.clone());
                let (scheduled_event_id, attempt) = (task.scheduled_event_id, task.attempt);
                let request = match task.kind {
                    engine::TaskKind::Workflow => Request::RecordWorkflowTaskStarted {
                        scheduled_event_id,
                        attempt,
                        request_id,
                        identity,
                        target_version_changed: self.shard.target_version_changed(&current),
                    },
                    engine::TaskKind::Activity => Request::RecordActivityTaskStarted {
                        scheduled_event_id,
                        attempt,
                        task_queue: task.task_queue.clone(),
                        request_id,
                        identity,
                    },
                };
                match engine::handle(&current, request, now, &self.shard.context.limits) {
                    Ok(outcome) => {
                        let reply = self.record(outcome, writes, touched);
                        if let Some(state) = self.states.get(&run) {
                            current = state.clone();
                        }
                        let state = current.clone();
                        claimed.push((poll, StartedTask { state, task, reply }));
                    }
                    Err(error) => {
                        tracing::debug!(shard = self.shard.id, %error, "a dispatchable task did not start");
                        matching.unclaim(&key, poll);
                    }
                }
            }
        }
        claimed
    }

    /// Collects the run's dispatchable tasks into `offers`, arms its deadlines and starts its
    /// deliveries.
    fn after_commit(&mut self, state: &MutableState, offers: &mut Vec<(QueueKey, RunTask)>) {
        let now = self.shard.context.clock.now_ns();
        let run = RunKey::of(state);
        for task in dispatchable(state, now) {
            let (key, task, routing) = self.shard.route(state, task);
            offers.push((
                key,
                RunTask {
                    workflow_id: state.workflow_id.clone(),
                    run_id: state.run_id.clone(),
                    task,
                    routing,
                },
            ));
        }
        for (at, deadline) in engine::deadlines_to_arm(state, now) {
            self.deadlines.insert((at, run.clone(), deadline));
        }
        for transfer in engine::transfers(state) {
            super::transfer::start_delivery(&self.shard, state, transfer);
        }
    }

    /// The run a job names: `run_id`, or the current run when it is empty.
    fn resolve_run(&mut self, job: &Job, run_id: &str) -> Result<RunKey, ShardError> {
        let run_id = if run_id.is_empty() {
            self.current_run(&job.namespace_id, &job.workflow_id)?
                .ok_or_else(|| super::run_not_found(&job.workflow_id, ""))?
        } else {
            run_id.to_string()
        };
        Ok(RunKey {
            namespace_id: job.namespace_id.clone(),
            workflow_id: job.workflow_id.clone(),
            run_id,
        })
    }

    fn current_run(
        &mut self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> Result<Option<String>, ShardError> {
        let key = (namespace_id.to_string(), workflow_id.to_string());
        if let Some(run) = self.currents.get(&key) {
            return Ok(Some(run.clone()));
        }
        let run = self.shard.current_run(namespace_id, workflow_id)?;
        if let Some(run) = &run {
            self.currents.insert(key, run.clone());
        }
        Ok(run)
    }

    fn state(&mut self, run: &RunKey) -> Result<Option<Arc<MutableState>>, ShardError> {
        if self.deleted.contains(run) {
            return Ok(None);
        }
        if let Some(state) = self.states.get(run) {
            return Ok(Some(state.clone()));
        }
        let state = self
            .shard
            .load_state(&run.namespace_id, &run.workflow_id, &run.run_id)?
            .map(Arc::new);
        if let Some(state) = &state {
            self.states.insert(run.clone(), state.clone());
        }
        Ok(state)
    }

    /// Adds the outcome's writes (events, mutable state, and a successor run's) and caches its
    /// states; answers its reply.
    fn record(
        &mut self,
        outcome: Outcome,
        writes: &mut WriteSet,
        touched: &mut Vec<RunKey>,
    ) -> Reply {
        let Outcome {
            state,
            events,
            reply,
            successor,
        } = outcome;
        let run = RunKey::of(&state);
        if let Some(close_time_ns) = state.close_time_ns {
            if events.iter().any(|e| e.event_id == state.close_event_id) {
                writes
                    .puts
                    .push((run.retention_key(close_time_ns), Vec::new()));
            }
        }
        let mut fresh = Vec::with_capacity(events.len());
        for event in events {
            let key = keys::event(
                &state.namespace_id,
                &state.workflow_id,
                &state.run_id,
                event.event_id,
            );
            let encoded = event.encode_to_vec();
            fresh.push((event, recent_history::event_weight(encoded.len())));
            writes.puts.push((key, encoded));
        }
        if !fresh.is_empty() {
            self.fresh.push(FreshEvents {
                namespace_id: run.namespace_id.clone(),
                workflow_id: run.workflow_id.clone(),
                run_id: run.run_id.clone(),
                events: fresh,
            });
        }
        writes.puts.push((
            keys::state(&state.namespace_id, &state.workflow_id, &state.run_id),
            encode_state(&state),
        ));
        self.states.insert(run.clone(), Arc::new(state));
        touched.push(run);
        if let Some(successor) = successor {
            let next = RunKey::of(&successor.state);
            self.record(*successor, writes, touched);
            writes.puts.push((
                keys::current(&next.namespace_id, &next.workflow_id),
                next.run_id.clone().into_bytes(),
            ));
            self.currents
                .insert((next.namespace_id, next.workflow_id), next.run_id);
        }
        reply
    }

    fn decide(
        &mut self,
        job: &Job,
        now: i64,
        writes: &mut WriteSet,
        touched: &mut Vec<RunKey>,
    ) -> Result<OpResult, ShardError> {
        let limits = self.shard.context.limits.clone();
        match &job.op {
            Op::Run { run_id, request } => {
                let run = self.resolve_run(job, run_id)?;
                let run_id = run.run_id.clone();
                let state = self
                    .state(&run)?
                    .ok_or_else(|| super::run_not_found(&job.workflow_id, &run_id))?;
                let mut request = request.clone();
                if let Request::RecordWorkflowTaskStarted {
                    target_version_changed,
                    ..
                } = &mut request
                {
                    *target_version_changed = self.shard.target_version_changed(&state);
                }
                match engine::handle(&state, request, now, &limits) {
                    Ok(outcome) => {
                        let reply = if outcome.state != *state || !outcome.events.is_empty() {
                            self.record(outcome, writes, touched)
                        } else {
                            outcome.reply
                        };
                        let state = self.states.get(&run).cloned();
                        Ok(OpResult::Reply {
                            run_id,
                            reply,
                            state,
                        })
                    }
                    Err(EngineError::NoChange) => {
                        touched.push(run);
                        Ok(OpResult::Reply {
                            run_id,
                            reply: Reply::Done,
                            state: Some(state),
                        })
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Op::Reset { run_id, args } => self.reset(job, run_id, args, now, writes, touched),
            Op::Delete {
                run_id,
                expired_at_ns,
            } => self.delete(job, run_id, *expired_at_ns, now, writes, touched),
            Op::Start {
                args,
                reuse_policy,
                conflict_policy,
                signal_if_running,
                update,
            } => {
                let current = match self.current_run(&job.namespace_id, &job.workflow_id)? {
                    Some(run_id) => self.state(&RunKey {
                        namespace_id: job.namespace_id.clone(),
                        workflow_id: job.workflow_id.clone(),
                        run_id,
                    })?,
                    None => None,
                };
                if let (Some(signal), Some(current)) = (signal_if_running, &current) {
                    if current.is_running() {
                        let outcome =
                            engine::handle(current, Request::Signal(signal.clone()), now, &limits)?;
                        self.record(outcome, writes, touched);
                        return Ok(OpResult::Started {
                            run_id: current.run_id.clone(),
                            started: false,
                            update: None,
                            eager_task: None,
                        });
                    }
                }
                // Update-with-start attaches to an update the workflow already knows: in a
                // running run whatever its stage, in a closed one only if the workflow
                // completed it.
                if let (Some(update), Some(current)) = (update, &current) {
                    let update_id = update.meta.as_ref().map(|m| m.update_id.as_str());
                    if let Some(status) =
                        update_id.and_then(|id| engine::update_status(current, id))
                    {
                        let completed =
                            update_id.is_some_and(|id| engine::completed_by_workflow(current, id));
                        if current.is_running() || completed {
                            return Ok(OpResult::Started {
                                run_id: current.run_id.clone(),
                                started: false,
                                update: Some(Box::new(status)),
                                eager_task: None,
                            });
                        }
                    }
                }
                match decide_start(
                    current.as_deref(),
                    &args.request_id,
                    *reuse_policy,
                    *conflict_policy,
                ) {
                    StartDecision::Existing { run_id, started } => {
                        let update = match (update, &current) {
                            (Some(update), Some(current)) => {
                                let outcome = engine::handle(
                                    current,
                                    Request::Update {
                                        request: update.clone(),
                                        first_execution_run_id: String::new(),
                                    },
                                    now,
                                    &limits,
                                )?;
                                update_reply(if outcome.state != **current {
                                    self.record(outcome, writes, touched)
                                } else {
                                    outcome.reply
                                })
                            }
                            _ => None,
                        };
                        Ok(OpResult::Started {
                            run_id,
                            started,
                            update,
                            eager_task: None,
                        })
                    }
                    StartDecision::AlreadyStarted {
                        run_id,
                        start_request_id,
                        message,
                    } => Err(ShardError::AlreadyStarted {
                        run_id,
                        start_request_id,
                        message,
                    }),
                    StartDecision::New { terminate_current } => {
                        let mut started = engine::new_run((**args).clone(), now, &limits)?;
                        let update = match update {
                            Some(update) => {
                                let admitted = engine::handle(
                                    &started.state,
                                    Request::Update {
                                        request: update.clone(),
                                        first_execution_run_id: String::new(),
                                    },
                                    now,
                                    &limits,
                                )?;
                                started.state = admitted.state;
                                started.events.extend(admitted.events);
                                update_reply(admitted.reply)
                            }
                            None => None,
                        };
                        if let (true, Some(current)) = (terminate_current, &current) {
                            let outcome = engine::handle(
                                current,
                                Request::Terminate {
                                    reason:
                                        "terminated by a start with a terminate-existing policy"
                                            .to_string(),
                                    details: None,
                                    identity: args.identity.clone(),
                                },
                                now,
                                &limits,
                            )?;
                            self.record(outcome, writes, touched);
                        }
                        let (started, eager_task) = if args.eager_workflow_task {
                            start_eagerly(started, args, now, &limits)
                        } else {
                            (started, None)
                        };
                        self.record(started, writes, touched);
                        writes.puts.push((
                            keys::current(&job.namespace_id, &job.workflow_id),
                            args.run_id.clone().into_bytes(),
                        ));
                        self.currents.insert(
                            (job.namespace_id.clone(), job.workflow_id.clone()),
                            args.run_id.clone(),
                        );
                        Ok(OpResult::Started {
                            run_id: args.run_id.clone(),
                            started: true,
                            update,
                            eager_task,
                        })
                    }
                }
            }
        }
    }
}

impl Writer {
    /// Creates the reset run of `run_id` (empty: the current run), terminating the current
    /// run if it is running; a retried reset (same request id) answers the run it created.
    fn reset(
        &mut self,
        job: &Job,
        run_id: &str,
        args: &engine::ResetArgs,
        now: i64,
        writes: &mut WriteSet,
        touched: &mut Vec<RunKey>,
    ) -> Result<OpResult, ShardError> {
        let limits = self.shard.context.limits.clone();
        let current_id = self
            .current_run(&job.namespace_id, &job.workflow_id)?
            .ok_or_else(|| super::run_not_found(&job.workflow_id, ""))?;
        let run = |run_id: &str| RunKey {
            namespace_id: job.namespace_id.clone(),
            workflow_id: job.workflow_id.clone(),
            run_id: run_id.to_string(),
        };
        let current = self
            .state(&run(&current_id))?
            .ok_or_else(|| super::run_not_found(&job.workflow_id, &current_id))?;
        if !args.request_id.is_empty() && current.reset_request_id == args.request_id {
            return Ok(OpResult::Started {
                run_id: current.run_id.clone(),
                started: false,
                update: None,
                eager_task: None,
            });
        }
        let base_id = if run_id.is_empty() {
            &current_id
        } else {
            run_id
        };
        let base = self
            .state(&run(base_id))?
            .ok_or_else(|| super::run_not_found(&job.workflow_id, base_id))?;
        // The base run's events as committed; if this batch already changed the run, its
        // newest events are not readable yet and the engine asks for a retry.
        let events = self
            .shard
            .read_events(&base, 1, base.next_event_id, usize::MAX)?;
        let reset = engine::reset(&base, &events, args.clone(), now, &limits)?;
        if current.is_running() {
            let outcome = engine::handle(
                &current,
                Request::Terminate {
                    reason: args.reason.clone(),
                    details: None,
                    // As Temporal writes it, whoever asked for the reset.
                    identity: "history-resetter".to_string(),
                },
                now,
                &limits,
            )?;
            self.record(outcome, writes, touched);
        }
        let new_run = reset.state.run_id.clone();
        self.record(reset, writes, touched);
        writes.puts.push((
            keys::current(&job.namespace_id, &job.workflow_id),
            new_run.clone().into_bytes(),
        ));
        self.currents.insert(
            (job.namespace_id.clone(), job.workflow_id.clone()),
            new_run.clone(),
        );
        Ok(OpResult::Started {
            run_id: new_run,
            started: true,
            update: None,
            eager_task: None,
        })
    }
}

impl Writer {
    /// Deletes run `run_id` (empty: the current run) if it is closed and owes nothing, else
    /// marks it for deletion (terminating it if it runs): see [`Op::Delete`].
    fn delete(
        &mut self,
        job: &Job,
        run_id: &str,
        expired_at_ns: Option<i64>,
        now: i64,
        writes: &mut WriteSet,
        touched: &mut Vec<RunKey>,
    ) -> Result<OpResult, ShardError> {
        let run = self.resolve_run(job, run_id)?;
        let run_id = run.run_id.clone();
        let Some(state) = self.state(&run)? else {
            if let Some(close_time_ns) = expired_at_ns {
                // A retention entry whose run is gone already.
                writes.deletes.push(run.retention_key(close_time_ns));
            }
            return Err(super::run_not_found(&job.workflow_id, &run_id));
        };
        let outcome = engine::handle(&state, Request::Delete, now, &self.shard.context.limits)?;
        if state.is_running() || !engine::deletable(&outcome.state) {
            // Deleted by its DeleteRun delivery once closed (the termination written first, for
            // whoever waits on the run) and done; the retention entry, if any, has served.
            if let Some(close_time_ns) = state.close_time_ns {
                writes.deletes.push(run.retention_key(close_time_ns));
            }
            let reply = self.record(outcome, writes, touched);
            let state = self.states.get(&run).cloned();
            return Ok(OpResult::Reply {
                run_id,
                reply,
                state,
            });
        }
        let state_key = keys::state(&run.namespace_id, &run.workflow_id, &run.run_id);
        let events = keys::event_prefix(&run.namespace_id, &run.workflow_id, &run.run_id);
        writes
            .puts
            .retain(|(key, _)| *key != state_key && !key.starts_with(&events));
        writes.deletes.push(state_key);
        for event_id in 1..state.next_event_id {
            writes.deletes.push(keys::event(
                &run.namespace_id,
                &run.workflow_id,
                &run.run_id,
                event_id,
            ));
        }
        if let Some(close_time_ns) = state.close_time_ns {
            writes.deletes.push(run.retention_key(close_time_ns));
        }
        if self
            .current_run(&run.namespace_id, &run.workflow_id)?
            .as_deref()
            == Some(&run_id)
        {
            let current = keys::current(&run.namespace_id, &run.workflow_id);
            writes.puts.retain(|(key, _)| *key != current);
            writes.deletes.push(current);
            self.currents
                .remove(&(run.namespace_id.clone(), run.workflow_id.clone()));
        }
        self.states.remove(&run);
        self.fresh.retain(|fresh| fresh.run_id != run.run_id);
        self.deleted.insert(run);
        tracing::debug!(
            shard = self.shard.id,
            workflow_id = %job.workflow_id,
            %run_id,
            retention = expired_at_ns.is_some(),
            "run deleted"
        );
        Ok(OpResult::Reply {
            run_id,
            reply: Reply::Done,
            state: None,
        })
    }
}

/// An eager workflow start: the new run's first workflow task started for the caller in the
/// start's own commit (no poll), as Temporal's StartWorkflowExecution does with
/// `request_eager_execution`. A run whose first task waits (a start delay) starts as usual.
fn start_eagerly(
    mut started: Outcome,
    args: &engine::StartArgs,
    now: i64,
    limits: &engine::Limits,
) -> (Outcome, Option<Box<engine::StartedWorkflowTask>>) {
    let Some(task) = started.state.workflow_task.as_ref() else {
        return (started, None);
    };
    let request = Request::RecordWorkflowTaskStarted {
        scheduled_event_id: task.scheduled_event_id,
        attempt: task.attempt,
        request_id: args.request_id.clone(),
        identity: args.identity.clone(),
        target_version_changed: false,
    };
    match engine::handle(&started.state, request, now, limits) {
        Ok(outcome) => {
            let Reply::WorkflowTaskStarted(task) = outcome.reply else {
                return (started, None);
            };
            started.state = outcome.state;
            started.events.extend(outcome.events);
            (started, Some(task))
        }
        Err(_) => (started, None),
    }
}

fn update_reply(reply: Reply) -> Option<Box<engine::UpdateStatus>> {
    match reply {
        Reply::Update(status) => Some(status),
        _ => None,
    }
}
