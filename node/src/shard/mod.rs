//! Shards: each shard group has, on its leader, one writer task that owns the shard's workflow
//! state. The writer takes requests in batches, runs the pure engine on each against its cache
//! of mutable states, proposes all resulting writes as one Raft entry (fenced by its term), and
//! only after that entry is committed and applied replies, hands new tasks to matching and arms
//! deadlines. A new writer rebuilds its tasks and deadlines from the shard's applied state.

pub mod applier;
pub mod balance;
mod batch;
pub use batch::{batch_activity_control, batch_options_update};
pub mod forwarding;
pub mod keys;
mod recent_history;
pub mod run_changes;
mod scheduled;
mod transfer;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use keel_raft::{GroupError, GroupRegistry, NodeId, ReadError, ShardGroup};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::engine::proto::update::Request as UpdateRequest;
use crate::engine::proto::HistoryEvent;
use crate::engine::{
    EngineError, Limits, MutableState, Reply, Request, Signal, StartArgs, UpdateStatus,
};
use crate::matching::Matching;

/// Version byte of stored mutable states. Version 10 encodes integers and lengths as varints
/// (about half the bytes of version 9's fixed-width form, written at every commit of a run);
/// versions 2 to 9 are fixed-width and still decode.
const STATE_VERSION: u8 = 10;

/// The last fixed-width version of stored mutable states.
const FIXED_WIDTH_STATE_VERSION: u8 = 9;

/// bincode settings of the current stored-state format: varint integers and lengths, and a
/// prefix may be read (the state head).
fn state_codec() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().allow_trailing_bytes()
}

/// The wall clock, behind a seam tests can replace.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Why a shard request failed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ShardError {
    /// The engine refused the request; nothing was written.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A run is running, or the id reuse policy forbids a new one.
    #[error("{message}")]
    AlreadyStarted {
        /// The current run.
        run_id: String,
        /// Its start request id.
        start_request_id: String,
        /// Explanation.
        message: String,
    },
    /// This node cannot serve the shard now (not its leader, or leadership changing). The
    /// outcome of a write that got this error is unknown; retry idempotently.
    #[error("shard {shard} is unavailable: {reason}")]
    Unavailable {
        /// Shard group.
        shard: u64,
        /// Why.
        reason: String,
    },
    /// Stored data could not be read.
    #[error("shard {shard}: {reason}")]
    Corrupt {
        /// Shard group.
        shard: u64,
        /// What was wrong.
        reason: String,
    },
}

/// A request to a shard's writer. (A transient value, moved once: its size does not matter.)
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Op {
    /// StartWorkflowExecution or SignalWithStartWorkflowExecution.
    Start {
        /// The new run.
        args: Box<StartArgs>,
        /// `WorkflowIdReusePolicy`.
        reuse_policy: i32,
        /// `WorkflowIdConflictPolicy`.
        conflict_policy: i32,
        /// SignalWithStart: the signal to deliver to a running current run instead.
        signal_if_running: Option<Signal>,
        /// Update-with-start: the update to admit on the run answered (new or existing).
        #[serde(with = "crate::wire::opt")]
        update: Option<Box<UpdateRequest>>,
    },
    /// ResetWorkflowExecution of run `run_id` (empty: the current run). The current run, if
    /// running, is terminated; the new run becomes current.
    Reset {
        /// The base run, or empty for the current run.
        run_id: String,
        /// The reset.
        args: crate::engine::ResetArgs,
    },
    /// DeleteWorkflowExecution, retention and deferred deletion of run `run_id` (empty: the
    /// current run): a closed run with nothing left to deliver is deleted at once (its state,
    /// events, retention entry and, if it is current, the current pointer); otherwise the run
    /// is marked (a running one terminated first) and deleted when its deliveries are done.
    Delete {
        /// Run id, or empty for the current run.
        run_id: String,
        /// Set by the retention sweep: the close time of the run's retention entry, which goes
        /// even if the run is gone.
        expired_at_ns: Option<i64>,
    },
    /// A request for an existing run (`run_id` empty: the current run).
    Run {
        /// Run id, or empty for the current run.
        run_id: String,
        /// The request.
        request: Request,
    },
}

/// What a shard request produced.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum OpResult {
    /// A start: the run answered and whether this request started it.
    Started {
        /// Run id.
        run_id: String,
        /// True when a new run was started (or this request had started it before).
        started: bool,
        /// Update-with-start: where the update stands on that run.
        update: Option<Box<UpdateStatus>>,
        /// Eager start: the new run's first workflow task, started for the caller.
        eager_task: Option<Box<crate::engine::StartedWorkflowTask>>,
    },
    /// The engine's reply for a run request.
    Reply {
        /// The run the request resolved to.
        run_id: String,
        /// The reply.
        reply: Reply,
        /// The run's state as this request left it, committed and applied: set by this node's
        /// writer (so the caller need not read it back), never sent between nodes.
        #[serde(skip)]
        state: Option<Arc<MutableState>>,
    },
}

pub(crate) struct Job {
    namespace_id: String,
    workflow_id: String,
    op: Op,
    reply: Option<oneshot::Sender<Result<OpResult, ShardError>>>,
}

/// What the writers of all shards share.
pub struct ShardContext {
    /// The node's matching.
    pub matching: Arc<Matching>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Engine limits.
    pub limits: Limits,
    /// Namespaces (deliveries between runs resolve names).
    pub namespaces: Arc<crate::namespaces::Namespaces>,
    /// Worker Deployments (task routing between versions).
    pub deployments: Arc<crate::deployments::Deployments>,
    /// Every shard of this node, at index shard-1 (set once they exist).
    pub shards: OnceLock<Vec<Weak<Shard>>>,
    /// Clients of the other nodes (forwarding to shard leaders).
    pub peers: Arc<forwarding::PeerClients>,
    /// Where matching runs.
    pub owner: crate::matching::MatchingOwner,
    /// Applied run changes, for long polls (shared with the node's applier).
    pub runs: Arc<run_changes::RunChanges>,
}

/// One shard group as the node serves it.
pub struct Shard {
    id: u64,
    group: ShardGroup,
    context: Arc<ShardContext>,
    writer: Mutex<Option<(u64, mpsc::Sender<Job>)>>,
    deliveries: Mutex<HashSet<Delivery>>,
    /// On the leader: the log index through which its writer's answers so far are committed.
    answered_through: AtomicU64,
    /// On a follower: the highest such index the leader reported for ops forwarded from here.
    forwarded_through: AtomicU64,
    /// Held shared by every op this node's writer runs, and exclusively while this node hands
    /// the shard's leadership to another: ops that arrive meanwhile wait, then go to the new
    /// leader.
    handover: tokio::sync::RwLock<()>,
    /// Events this node's writer committed lately, for reads that would fetch them back.
    recent: recent_history::RecentHistory,
}

/// What became of an op offered to this node's writer.
pub(super) enum Local {
    /// The writer answered, or may have run it (an unknown outcome is an Unavailable error).
    Answered(Result<OpResult, ShardError>),
    /// This node does not lead the shard; the op, which nothing ran, is handed back.
    NotLeading(Box<Op>, ShardError),
}

/// A delivery in progress: namespace id, run id and what.
pub(crate) type Delivery = (String, String, crate::engine::Transfer);

/// Most jobs queued for one writer.
const WRITER_QUEUE: usize = 4096;
/// How long an op that reached no leader keeps being sent again (an election takes about 1-2 s).
const UNSENT_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);
/// Longest a handover waits for the ops in progress to be answered.
const HANDOVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// Pause between two such attempts.
const UNSENT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl Shard {
    /// Serves `group`; starts following its leadership.
    pub fn start(id: u64, group: ShardGroup, context: Arc<ShardContext>) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            id,
            group,
            context,
            writer: Mutex::new(None),
            deliveries: Mutex::new(HashSet::new()),
            answered_through: AtomicU64::new(0),
            forwarded_through: AtomicU64::new(0),
            handover: tokio::sync::RwLock::new(()),
            recent: recent_history::RecentHistory::default(),
        });
        tokio::spawn(writer::follow_leadership(Arc::downgrade(&shard)));
        tokio::spawn(publish_applied_runs(Arc::downgrade(&shard)));
        shard
    }

    fn deliveries_lock(&self) -> MutexGuard<'_, HashSet<Delivery>> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while this node runs the shard's writer (leads its group).
    fn leads(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The shard of this node that owns a workflow id.
    fn peer(&self, namespace_id: &str, workflow_id: &str) -> Result<Arc<Shard>, String> {
        let shards = self
            .context
            .shards
            .get()
            .ok_or_else(|| "the node's shards are not registered yet".to_string())?;
        let index = keys::shard_of(namespace_id, workflow_id, shards.len() as u64);
        shards
            .get(usize::try_from(index - 1).unwrap_or(0))
            .and_then(Weak::upgrade)
            .ok_or_else(|| format!("shard {index} is not served here"))
    }

    fn unavailable(&self, reason: impl Into<String>) -> ShardError {
        ShardError::Unavailable {
            shard: self.id,
            reason: reason.into(),
        }
    }

    /// Runs `op` through the shard's writer, on this node or on the node that leads the shard,
    /// and waits for its committed result.
    /// An op that could not reach a leader (none elected yet, or its node unreachable) is sent
    /// again, to the new leader, for up to [`UNSENT_RETRY_WINDOW`]: a failover then costs the
    /// client latency, not an error.
    pub async fn submit(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        op: Op,
    ) -> Result<OpResult, ShardError> {
        let deadline = tokio::time::Instant::now() + UNSENT_RETRY_WINDOW;
        let mut op = op;
        loop {
            let error = if self.leads() {
                match self.submit_local(namespace_id, workflow_id, op).await {
                    Local::Answered(result) => return result,
                    Local::NotLeading(unsent, error) => {
                        op = *unsent;
                        error
                    }
                }
            } else {
                match self.forward(namespace_id, workflow_id, &op).await {
                    forwarding::Forwarded::Answered(result) => return result,
                    forwarding::Forwarded::NotSent(error) => error,
                }
            };
            if tokio::time::Instant::now() + UNSENT_RETRY_PAUSE >= deadline {
                return Err(error);
            }
            tokio::time::sleep(UNSENT_RETRY_PAUSE).await;
        }
    }

    /// Runs `op` through this node's writer of the shard, unless this node does not lead it.
    pub(super) async fn submit_local(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        op: Op,
    ) -> Local {
        let _running = self.handover.read().await;
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, sender)| sender.clone())
            .filter(|_| self.group.is_leader());
        let Some(sender) = sender else {
            let error = self.unavailable(match self.group.leader() {
                Some(leader) => format!("node {leader} leads it, not this node"),
                None => "it has no leader right now".to_string(),
            });
            return Local::NotLeading(Box::new(op), error);
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            namespace_id: namespace_id.to_string(),
            workflow_id: workflow_id.to_string(),
            op,
            reply: Some(reply),
        };
        if let Err(unsent) = sender.send(job).await {
            return Local::NotLeading(
                Box::new(unsent.0.op),
                self.unavailable("its leader changed"),
            );
        }
        Local::Answered(answer.await.unwrap_or_else(|_| {
            Err(self.unavailable("its leader changed; the outcome is unknown"))
        }))
    }

    /// Where a dispatchable task of the run in `state` goes: its queue and the lane of the
    /// version that should run it ([`crate::deployments`]), and the routing hash of that
    /// choice. A workflow task meant for the sticky
    /// queue of a worker of another version than the one its lane names goes to the normal
    /// queue instead (an auto-upgrade workflow moving to a new current version). Reads the
    /// node's deployment cache as the writer last refreshed it (on each metadata change).
    pub(crate) fn route(
        &self,
        state: &MutableState,
        mut task: crate::engine::TaskRef,
    ) -> (crate::matching::QueueKey, crate::engine::TaskRef, u64) {
        let deployments = &self.context.deployments;
        let versioning = state.versioning.as_deref();
        let sticky = task.kind == crate::engine::TaskKind::Workflow
            && !state.sticky_queue.is_empty()
            && task.task_queue == state.sticky_queue;
        let queue = if sticky {
            &state.task_queue
        } else {
            &task.task_queue
        };
        let (lane, routing) = deployments.lane(
            &state.namespace_id,
            queue,
            task.kind,
            versioning,
            &state.workflow_id,
        );
        if sticky {
            let ran_on = versioning
                .filter(|v| !v.build_id.is_empty())
                .map(|v| crate::deployments::lane_of(&v.deployment_name, &v.build_id))
                .unwrap_or_default();
            if lane == ran_on {
                let key =
                    crate::matching::QueueKey::of_task(&state.namespace_id, &task, String::new());
                return (key, task, routing);
            }
            task.task_queue = state.task_queue.clone();
        }
        let key = crate::matching::QueueKey::of_task(&state.namespace_id, &task, lane);
        (key, task, routing)
    }

    /// True when the run in `state` is pinned to a worker deployment version and its
    /// deployment now routes the run's new workflows to another version.
    pub(crate) fn target_version_changed(&self, state: &MutableState) -> bool {
        self.context.deployments.target_changed(
            &state.namespace_id,
            &state.task_queue,
            state.versioning.as_deref(),
            &state.workflow_id,
        )
    }

    /// Makes node `to` the leader of this shard, which this node leads: ops wait until the ops
    /// in progress are answered, then while the group hands over, then go to the new leader.
    pub async fn hand_over(&self, registry: &GroupRegistry, to: NodeId) -> Result<(), GroupError> {
        registry.probe_voter(self.id, to).await?;
        let _quiet = tokio::time::timeout(HANDOVER_DRAIN, self.handover.write())
            .await
            .map_err(|_| GroupError::Raft {
                group: self.id,
                operation: "hand over leadership",
                reason: format!("the ops in progress did not finish within {HANDOVER_DRAIN:?}"),
            })?;
        registry.hand_over(self.id, to).await
    }

    fn read_error(&self, error: ReadError) -> ShardError {
        self.unavailable(error.to_string())
    }

    /// Waits until everything committed before the call is applied here: on the leader by
    /// confirming its leadership, on a follower through the leader's read index.
    /// A read that cannot be confirmed (no leader yet, its node unreachable) is tried again for
    /// up to [`UNSENT_RETRY_WINDOW`], as unsent ops are.
    pub async fn barrier(&self) -> Result<(), ShardError> {
        let deadline = tokio::time::Instant::now() + UNSENT_RETRY_WINDOW;
        loop {
            match forwarding::read_barrier(&self.group, self.id, &self.context.peers).await {
                Ok(()) => return Ok(()),
                Err(reason) if tokio::time::Instant::now() + UNSENT_RETRY_PAUSE < deadline => {
                    tracing::debug!(shard = self.id, %reason, "read barrier retried");
                    tokio::time::sleep(UNSENT_RETRY_PAUSE).await;
                }
                Err(reason) => return Err(self.unavailable(reason)),
            }
        }
    }

    /// The current run id of a workflow id (applied state).
    pub fn current_run(
        &self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> Result<Option<String>, ShardError> {
        let bytes = self
            .group
            .read_local(&keys::current(namespace_id, workflow_id))
            .map_err(|e| self.read_error(e))?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Waits until this replica has applied what the shard's leader answered this node so far:
    /// nothing to wait for on the leader (its writer answers after applying); on a follower,
    /// the log index the leader reported with its last answer to an op forwarded from here (no
    /// round trip: the leader sends its commit index to followers as soon as it advances).
    pub async fn catch_up(&self) -> Result<(), ShardError> {
        if self.leads() {
            Ok(())
        } else {
            self.await_applied(self.forwarded_through.load(Ordering::Acquire))
                .await
        }
    }

    /// Records, on the leader, that its writer's answers so far are committed through `index`.
    fn answered_through(&self, index: u64) {
        self.answered_through.fetch_max(index, Ordering::AcqRel);
    }

    /// Where a run stands in this replica's applied state, without decoding all of it.
    pub fn run_progress(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<RunProgress>, ShardError> {
        self.read_stored_state(namespace_id, workflow_id, run_id, decode_progress)
    }

    /// A run's mutable state (applied state); `run_id` empty means the current run.
    pub fn load_state(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<MutableState>, ShardError> {
        let run_id = if run_id.is_empty() {
            match self.current_run(namespace_id, workflow_id)? {
                Some(run) => run,
                None => return Ok(None),
            }
        } else {
            run_id.to_string()
        };
        self.read_stored_state(namespace_id, workflow_id, &run_id, decode_state)
    }

    /// Reads a run's stored mutable state from this replica's applied state and decodes it
    /// with `decode` (None: the bytes are not a stored state).
    fn read_stored_state<T>(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        decode: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Result<Option<T>, ShardError> {
        let Some(bytes) = self
            .group
            .read_local(&keys::state(namespace_id, workflow_id, run_id))
            .map_err(|e| self.read_error(e))?
        else {
            return Ok(None);
        };
        decode(&bytes).map(Some).ok_or_else(|| ShardError::Corrupt {
            shard: self.id,
            reason: format!("undecodable mutable state of {workflow_id}/{run_id}"),
        })
    }

    /// Events `[from, to)` of a run, at most `limit` (applied state).
    pub fn read_events(
        &self,
        state: &MutableState,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, ShardError> {
        let run = recent_history::RunRef {
            namespace_id: &state.namespace_id,
            workflow_id: &state.workflow_id,
            run_id: &state.run_id,
        };
        if let Some(events) = self.recent.read(run, from, to, limit) {
            return Ok(events);
        }
        let (start, end) = keys::event_range(
            &state.namespace_id,
            &state.workflow_id,
            &state.run_id,
            from,
            to,
        );
        let mut events = Vec::new();
        let mut corrupt = false;
        self.group
            .scan_local(&start, &end, |_, value| match HistoryEvent::decode(value) {
                Ok(event) => {
                    events.push(event);
                    events.len() < limit
                }
                Err(_) => {
                    corrupt = true;
                    false
                }
            })
            .map_err(|e| self.read_error(e))?;
        if corrupt {
            return Err(ShardError::Corrupt {
                shard: self.id,
                reason: format!("undecodable history event of {}", state.workflow_id),
            });
        }
        Ok(events)
    }

    /// Calls `visit` with every run's state of a namespace (applied state), until it returns
    /// false.
    pub fn scan_states(
        &self,
        namespace_id: &str,
        mut visit: impl FnMut(MutableState) -> bool,
    ) -> Result<(), ShardError> {
        let (start, end) = keys::namespace_state_range(namespace_id);
        self.group
            .scan_local(&start, &end, |_, value| match decode_state(value) {
                Some(state) => visit(state),
                None => true,
            })
            .map_err(|e| self.read_error(e))
    }

    /// Watches one run for changes this replica applies (for long polls on history and
    /// updates): mark it seen, read the run, then wait.
    pub fn watch_run(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> run_changes::RunWatch {
        self.context.runs.watch(
            self.group.id(),
            &keys::state(namespace_id, workflow_id, run_id),
        )
    }
}

/// Publishes the run changes this replica has applied whenever its applied index moves (on
/// leaders and followers alike), and wakes every waiter of the shard when a snapshot changed
/// its state wholesale. Ends when the shard is dropped.
async fn publish_applied_runs(shard: Weak<Shard>) {
    let Some(mut metrics) = shard.upgrade().map(|s| s.group.metrics()) else {
        return;
    };
    let (mut applied, mut snapshot) = (None, None);
    loop {
        let (now_applied, now_snapshot) = {
            let m = metrics.borrow_and_update();
            (m.last_applied, m.snapshot)
        };
        let Some(current) = shard.upgrade() else {
            return;
        };
        let group = current.group.id();
        if now_snapshot != snapshot {
            snapshot = now_snapshot;
            current.context.runs.publish_all(group);
        }
        if now_applied != applied {
            applied = now_applied;
            let index = applied.map_or(0, |log_id| log_id.index);
            current.context.runs.publish(group, index);
        }
        drop(current);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Temporal's NotFound for a missing workflow (`run_id` empty: no current run).
pub fn run_not_found(workflow_id: &str, run_id: &str) -> ShardError {
    ShardError::Engine(EngineError::NotFound(if run_id.is_empty() {
        format!("workflow not found for ID: {workflow_id}")
    } else {
        format!(
            "workflow execution not found for workflow ID \"{workflow_id}\" and run ID \"{run_id}\""
        )
    }))
}

/// Stored form of a mutable state.
pub(crate) fn encode_state(state: &MutableState) -> Vec<u8> {
    use bincode::Options;
    let mut out = Vec::with_capacity(512);
    out.push(STATE_VERSION);
    // Serializing plain data into a vector cannot fail.
    let _ = state_codec().serialize_into(&mut out, state);
    out
}

/// The leading fields of a stored mutable state, in [`MutableState`]'s order, borrowed from the
/// stored bytes: decoding them allocates nothing (bincode reads a prefix and ignores the rest).
#[derive(serde::Deserialize)]
struct StateHead<'a> {
    _namespace_id: &'a str,
    _workflow_id: &'a str,
    _run_id: &'a str,
    _first_execution_run_id: &'a str,
    _workflow_type: &'a str,
    _task_queue: &'a str,
    status: crate::engine::RunStatus,
    _start_request_id: &'a str,
    _start_time_ns: i64,
    _execution_time_ns: i64,
    _close_time_ns: Option<i64>,
    next_event_id: i64,
}

/// Where a run stands, as a long poll checks it on every change of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunProgress {
    /// The run is open.
    pub running: bool,
    /// Id of the next event it will write.
    pub next_event_id: i64,
}

/// Decodes the [`RunProgress`] of [`encode_state`] output (versions 2 to 9 share the head in
/// the fixed-width form).
fn decode_progress(bytes: &[u8]) -> Option<RunProgress> {
    use bincode::Options;
    let head: StateHead<'_> = match bytes.split_first() {
        Some((&STATE_VERSION, rest)) => state_codec().deserialize(rest).ok()?,
        Some((&(2..=FIXED_WIDTH_STATE_VERSION), rest)) => bincode::deserialize(rest).ok()?,
        _ => return None,
    };
    Some(RunProgress {
        running: head.status == crate::engine::RunStatus::Running,
        next_event_id: head.next_event_id,
    })
}

/// Decodes [`encode_state`] output, and states of versions 2 to 8.
pub(crate) fn decode_state(bytes: &[u8]) -> Option<MutableState> {
    // Each older version lacks fields at the end, which bincode reads from zero bytes:
    // version 2 `cron_schedule` and `reset_request_id` (empty strings: a zero u64 length
    // each), `schedule`, `batch`, `delete_requested`, `versioning`, `activity_controls` and
    // `priority`; version 3 `schedule` and `batch` (None: a zero tag byte each),
    // `delete_requested` (false: a zero byte), `versioning`, `activity_controls` (an empty
    // map: a zero u64 length) and `priority` (empty bytes: a zero u64 length); version 4
    // `delete_requested`, `versioning`, `activity_controls` and `priority`; version 5
    // `activity_controls` and `priority`; version 6 `priority`; versions 2 to 7
    // `activity_execution` (None: a zero tag byte); and all of them `activity_attempt_ends`
    // (an empty map).
    use bincode::Options;
    let (rest, missing) = match bytes.split_first() {
        Some((&STATE_VERSION, rest)) => return state_codec().deserialize(rest).ok(),
        Some((&FIXED_WIDTH_STATE_VERSION, rest)) => return bincode::deserialize(rest).ok(),
        Some((&8, rest)) => (rest, 8),
        Some((&7, rest)) => (rest, 9),
        Some((&6, rest)) => (rest, 17),
        Some((&5, rest)) => (rest, 25),
        Some((&4, rest)) => (rest, 27),
        Some((&3, rest)) => (rest, 29),
        Some((&2, rest)) => (rest, 45),
        _ => return None,
    };
    let mut upgraded = Vec::with_capacity(rest.len() + missing);
    upgraded.extend_from_slice(rest);
    upgraded.resize(rest.len() + missing, 0);
    bincode::deserialize(&upgraded).ok()
}

/// How long a writer waits for more jobs to join a batch once it has one.
pub(crate) const MAX_BATCH: usize = 256;

/// How long a replaced leader's writer waits for its last entry's fate.
pub(crate) const SETTLE_WAIT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    /// The state of a run just started.
    fn started_state() -> MutableState {
        crate::engine::new_run(
            crate::engine::StartArgs {
                namespace_id: "ns".into(),
                workflow_id: "wf".into(),
                run_id: "run".into(),
                workflow_type: "T".into(),
                task_queue: "q".into(),
                ..Default::default()
            },
            1,
            &Limits::default(),
        )
        .map(|outcome| outcome.state)
        .unwrap_or_else(|e| panic!("start: {e}"))
    }

    /// A state in the fixed-width form of version 9.
    fn encode_fixed_width(state: &MutableState) -> Vec<u8> {
        let mut out = vec![FIXED_WIDTH_STATE_VERSION];
        out.extend(bincode::serialize(state).unwrap_or_else(|e| panic!("encode: {e}")));
        out
    }

    #[test]
    fn states_of_versions_2_to_9_decode_with_empty_new_fields() {
        let state = started_state();
        let current = encode_state(&state);
        assert_eq!(decode_state(&current), Some(state.clone()));
        let fixed_width = encode_fixed_width(&state);
        assert!(current.len() < fixed_width.len() * 2 / 3, "{current:?}");
        assert_eq!(decode_state(&fixed_width), Some(state.clone()));
        for (version, missing) in [
            (8u8, 8),
            (7, 9),
            (6, 17),
            (5, 25),
            (4, 27),
            (3, 29),
            (2, 45),
        ] {
            let mut older = fixed_width[..fixed_width.len() - missing].to_vec();
            older[0] = version;
            assert_eq!(
                decode_state(&older),
                Some(state.clone()),
                "version {version}"
            );
        }
    }

    #[test]
    fn the_progress_read_from_a_stored_state_matches_the_state() {
        let mut state = started_state();
        state.start_request_id = "request".into();
        state.close_time_ns = Some(7);
        state.next_event_id = 42;
        let running = RunProgress {
            running: true,
            next_event_id: 42,
        };
        assert_eq!(decode_progress(&encode_state(&state)), Some(running));
        let encoded = encode_fixed_width(&state);
        assert_eq!(decode_progress(&encoded), Some(running));
        let mut version_2 = encoded[..encoded.len() - 45].to_vec();
        version_2[0] = 2;
        assert_eq!(decode_progress(&version_2), Some(running));
        let mut version_4 = encoded[..encoded.len() - 27].to_vec();
        version_4[0] = 4;
        assert_eq!(decode_progress(&version_4), Some(running));
        state.status = crate::engine::RunStatus::Completed;
        assert_eq!(
            decode_progress(&encode_state(&state)),
            Some(RunProgress {
                running: false,
                next_event_id: 42
            })
        );
        assert_eq!(decode_progress(&[9, 1, 2]), None);
        assert_eq!(decode_progress(&[STATE_VERSION, 1, 2]), None);
        assert_eq!(decode_progress(&[11, 1, 2]), None);
    }
}
