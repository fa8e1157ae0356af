//! Matching: hands dispatchable tasks to long-polling workers. In a cluster it runs on one node,
//! the leader of the metadata group ([`MatchingOwner`]): shard leaders send it their offers and
//! other nodes forward polls and queries to it. Soft state only: tasks are durable in their
//! runs' mutable state, and shard leaders offer them again when the owner changes, so this
//! index may be lost at any time. Offers are deduplicated while queued; a task handed out twice
//! is harmless because recording it as started is idempotent in the owning shard.
//!
//! A shard writer on this node may also claim a waiting poll ([`Matching::claim`]) for a task
//! its batch made dispatchable, record the task as started in that same commit, and hand the
//! poll the started task afterwards: one commit instead of two, as a sync match saves a hop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::engine::{MutableState, Reply, TaskKind, TaskRef};

/// One task queue of one namespace, for one kind of task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct QueueKey {
    /// Namespace id.
    pub namespace_id: String,
    /// Task queue name.
    pub name: String,
    /// Workflow or activity tasks.
    pub kind: TaskKind,
    /// The worker deployment version whose pollers take these tasks (`deployment.build_id`),
    /// or empty for unversioned workers: see [`crate::deployments`].
    pub lane: String,
}

impl QueueKey {
    /// The queue a run's task of namespace `namespace_id` is dispatched on, in `lane`.
    pub fn of_task(namespace_id: &str, task: &TaskRef, lane: String) -> QueueKey {
        QueueKey {
            namespace_id: namespace_id.to_string(),
            name: task.task_queue.clone(),
            kind: task.kind,
            lane,
        }
    }

    /// True when `other` is this queue in any lane.
    fn same_queue(&self, other: &QueueKey) -> bool {
        self.namespace_id == other.namespace_id
            && self.name == other.name
            && self.kind == other.kind
    }
}

/// A task of a run, as matching holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RunTask {
    /// Workflow id.
    pub workflow_id: String,
    /// Run id.
    pub run_id: String,
    /// The task.
    pub task: TaskRef,
    /// The worker deployment routing its lane was chosen under
    /// ([`crate::deployments::Deployments::refresh`]); a queued task of another routing is
    /// dropped when reached, since its shard leader offers it again under the new one.
    pub routing: u64,
}

/// What a poller receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchTask {
    /// A workflow or activity task of a run.
    Run(RunTask),
    /// A query (workflow queues only), by query id.
    Query(u64),
}

/// What a poll receives.
#[derive(Debug, PartialEq)]
pub enum Dispatch {
    /// A task for the poll to record as started.
    Task(MatchTask),
    /// A task a shard writer already recorded as started for this poll.
    Started(Box<StartedTask>),
}

/// A run's task recorded as started for a claimed poll, with the run's state as committed.
#[derive(Debug, PartialEq)]
pub struct StartedTask {
    /// The run's state after the start was applied.
    pub state: std::sync::Arc<MutableState>,
    /// The task.
    pub task: TaskRef,
    /// The engine's reply to the start.
    pub reply: Reply,
}

/// A poll waiting on a queue. It is sent its dispatch, or None to look at the queue again
/// (a task was queued for want of a dispatch token: the poll waits for the next one).
struct WaitingPoll {
    id: u64,
    identity: String,
    request_id: String,
    sender: oneshot::Sender<Option<Dispatch>>,
}

/// A waiting poll a shard writer took out of its queue, to start a task for it in the writer's
/// next commit. Dropped undelivered (the commit failed), the poll ends empty, as on a timeout.
pub struct ClaimedPoll {
    /// The poller's identity.
    pub identity: String,
    /// The poll's request id.
    pub request_id: String,
    id: u64,
    sender: oneshot::Sender<Option<Dispatch>>,
}

impl ClaimedPoll {
    /// Hands the poll its started task.
    pub fn deliver(self, started: StartedTask) {
        let _ = self.sender.send(Some(Dispatch::Started(Box::new(started))));
    }
}

/// The key a queue's dispatch rate is kept under: the queue in any lane.
fn rate_key(key: &QueueKey) -> QueueKey {
    QueueKey {
        lane: String::new(),
        ..key.clone()
    }
}

/// Who set a task queue's dispatch rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateSource {
    /// Its workers' polls (`max_task_queue_activities_per_second` in the Python SDK).
    Worker,
    /// UpdateTaskQueueConfig; takes precedence over the workers'.
    Api,
}

/// A task queue's dispatch rate limit, a token bucket with a burst of the rate rounded up and
/// at least 1, as in Temporal.
#[derive(Debug)]
struct DispatchRate {
    worker: Option<f64>,
    api: Option<f64>,
    tokens: f64,
    refilled: Instant,
}

impl DispatchRate {
    /// The rate in force and who set it.
    fn effective(&self) -> Option<(f64, RateSource)> {
        match (self.api, self.worker) {
            (Some(api), _) => Some((api, RateSource::Api)),
            (None, Some(worker)) => Some((worker, RateSource::Worker)),
            (None, None) => None,
        }
    }

    fn per_second(&self) -> f64 {
        self.effective().map_or(f64::INFINITY, |(rate, _)| rate)
    }

    fn burst(&self) -> f64 {
        self.per_second().ceil().clamp(1.0, 1e9)
    }

    /// Takes a token, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let per_second = self.per_second();
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(self.burst());
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if per_second > 0.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / per_second);
            Err(wait.max(Duration::from_millis(1)))
        } else {
            // Dispatch stopped: look again now and then, in case the rate changes.
            Err(Duration::from_secs(1))
        }
    }

    /// Gives back a token taken for a dispatch that did not happen.
    fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst());
    }
}

/// Longest a poll whose deadline passed waits for a claimed task's commit.
const CLAIMED_WAIT: Duration = Duration::from_secs(10);

/// Where matching runs: on the leader of the metadata group.
pub struct MatchingOwner {
    metadata: keel_raft::ShardGroup,
}

impl MatchingOwner {
    /// Matching follows the leadership of `metadata` (group 0).
    pub fn new(metadata: keel_raft::ShardGroup) -> MatchingOwner {
        MatchingOwner { metadata }
    }

    /// None when this node runs matching; else the address of the node that does.
    pub fn remote(&self) -> Result<Option<String>, String> {
        match self.metadata.leader_address() {
            Some((leader, _)) if leader == self.metadata.node_id() => Ok(None),
            _ => self.address().map(Some),
        }
    }

    /// The address of the node that runs matching (this one's included).
    pub fn address(&self) -> Result<String, String> {
        match self.metadata.leader_address() {
            Some((_, Some(address))) => Ok(address),
            Some((leader, None)) => Err(format!("the matching node {leader} has no address")),
            None => Err("the metadata group has no leader, so no node runs matching; retry".into()),
        }
    }

    /// Changes whenever the metadata group's leadership may have moved.
    pub fn changes(
        &self,
    ) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<keel_raft::NodeId, keel_raft::BasicNode>>
    {
        self.metadata.metrics()
    }
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<MatchTask>,
    queued: HashSet<MatchTask>,
    pollers: VecDeque<WaitingPoll>,
    recent_pollers: HashMap<String, i64>,
}

impl std::hash::Hash for MatchTask {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            MatchTask::Run(task) => task.hash(state),
            MatchTask::Query(id) => id.hash(state),
        }
    }
}

/// A poller that saw a task queue recently.
#[derive(Clone, Debug)]
pub struct PollerSeen {
    /// Worker identity.
    pub identity: String,
    /// Last poll, ns since the epoch.
    pub last_access_ns: i64,
}

/// Polls waiting for a task on this node, by task kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitingPolls {
    /// On workflow task queues (normal and sticky).
    pub workflow: usize,
    /// On activity task queues.
    pub activity: usize,
}

/// The current worker deployment routing, as a hash (see [`RunTask::routing`]).
pub type RoutingSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// The node's task queues.
#[derive(Default)]
pub struct Matching {
    queues: Mutex<HashMap<QueueKey, Queue>>,
    /// Dispatch rate limits by queue (any lane: the key's lane is empty). Locked after
    /// `queues` when both are.
    rates: Mutex<HashMap<QueueKey, DispatchRate>>,
    /// True while `rates` has an entry: dispatch skips its lock when no queue is limited.
    limited: std::sync::atomic::AtomicBool,
    next_poller: std::sync::atomic::AtomicU64,
    routing: std::sync::OnceLock<RoutingSource>,
}

impl Matching {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueKey, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the current routing comes from (set once, when the node's deployments exist).
    pub fn set_routing_source(&self, source: RoutingSource) {
        let _ = self.routing.set(source);
    }

    /// True for a run task offered under another routing than the current one.
    fn stale(&self, task: &MatchTask) -> bool {
        match (task, self.routing.get()) {
            (MatchTask::Run(run), Some(current)) => run.routing != current(),
            _ => false,
        }
    }

    /// Offers a task: a waiting poller gets it, otherwise it is queued (once). A task offered
    /// under another routing than the current one is dropped. While the queue's dispatch rate
    /// is used up, the task is queued and a waiting poller told to wait for the next token.
    pub fn offer(&self, key: QueueKey, task: MatchTask) {
        if self.stale(&task) {
            return;
        }
        let mut queues = self.lock();
        let queue = queues.entry(key.clone()).or_default();
        if queue.queued.contains(&task) {
            return;
        }
        let mut dispatch = Some(Dispatch::Task(task));
        let token = !queue.pollers.is_empty() && self.take_token(&key).is_ok();
        while let Some(poller) = queue.pollers.pop_front() {
            let message = if token { dispatch.take() } else { None };
            match poller.sender.send(message) {
                Ok(()) if token => return,
                Ok(()) => break,
                Err(returned) => {
                    if token {
                        dispatch = returned;
                    }
                }
            }
        }
        if token {
            self.refund_token(&key);
        }
        if let Some(Dispatch::Task(task)) = dispatch {
            queue.queued.insert(task.clone());
            queue.tasks.push_back(task);
        }
    }

    /// Takes the longest-waiting live poll of `key`, if any.
    pub fn claim(&self, key: &QueueKey) -> Option<ClaimedPoll> {
        let mut queues = self.lock();
        let queue = queues.get_mut(key)?;
        queue.pollers.retain(|poller| !poller.sender.is_closed());
        if queue.pollers.is_empty() || self.take_token(key).is_err() {
            return None;
        }
        let poller = queue.pollers.pop_front()?;
        Some(ClaimedPoll {
            id: poller.id,
            identity: poller.identity,
            request_id: poller.request_id,
            sender: poller.sender,
        })
    }

    /// Puts a claimed poll back at the head of its queue (no task was started for it).
    pub fn unclaim(&self, key: &QueueKey, poll: ClaimedPoll) {
        self.refund_token(key);
        if let Some(queue) = self.lock().get_mut(key) {
            queue.pollers.push_front(WaitingPoll {
                id: poll.id,
                identity: poll.identity,
                request_id: poll.request_id,
                sender: poll.sender,
            });
        }
    }

    /// Waits up to `timeout` for a task of `key`, for a poll with `request_id` (which names
    /// the poll in the task's started event if a shard writer starts the task for it).
    pub async fn poll(
        &self,
        key: &QueueKey,
        identity: &str,
        request_id: String,
        now_ns: i64,
        timeout: Duration,
    ) -> Option<Dispatch> {
        let id = self.next_poller.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        loop {
            // When tasks wait for a dispatch token: how long until the next one.
            let mut throttled = None;
            let mut receiver = {
                let mut queues = self.lock();
                let queue = queues.entry(key.clone()).or_default();
                queue.recent_pollers.insert(identity.to_string(), now_ns);
                while let Some(task) = queue.tasks.front() {
                    if self.stale(task) {
                        let task = queue.tasks.pop_front();
                        if let Some(task) = task {
                            queue.queued.remove(&task);
                        }
                        continue;
                    }
                    match self.take_token(key) {
                        Ok(()) => {
                            let task = queue.tasks.pop_front()?;
                            queue.queued.remove(&task);
                            if !queue.tasks.is_empty() {
                                // More wait for tokens: a waiting poll takes over the watch.
                                while let Some(poller) = queue.pollers.pop_front() {
                                    if poller.sender.send(None).is_ok() {
                                        break;
                                    }
                                }
                            }
                            return Some(Dispatch::Task(task));
                        }
                        Err(wait) => {
                            throttled = Some(wait);
                            break;
                        }
                    }
                }
                let (sender, receiver) = oneshot::channel();
                queue.pollers.push_back(WaitingPoll {
                    id,
                    identity: identity.to_string(),
                    request_id: request_id.clone(),
                    sender,
                });
                receiver
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = throttled.map_or(left, |t| t.min(left));
            match tokio::time::timeout(wait, &mut receiver).await {
                Ok(Ok(Some(dispatch))) => return Some(dispatch),
                // Told to look again: a task waits for a token.
                Ok(Ok(None)) => continue,
                Ok(Err(_)) => return None,
                Err(_) => {
                    let still_queued = {
                        let mut queues = self.lock();
                        queues.get_mut(key).is_some_and(|queue| {
                            let before = queue.pollers.len();
                            queue.pollers.retain(|poller| poller.id != id);
                            queue.pollers.len() < before
                        })
                    };
                    if !still_queued {
                        // Handed a task or claimed by a writer: a claimed poll's task may be
                        // started for it, so it waits for the commit rather than leave the
                        // task to time out.
                        return tokio::time::timeout(CLAIMED_WAIT, receiver)
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .flatten();
                    }
                    if throttled.is_none() || Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Limits dispatch from `key`'s queue (every lane) to `per_second` tasks a second as
    /// `source` asks; None takes that source's limit away. The last poll to name a rate sets
    /// the workers' one, as in Temporal; the API's takes precedence over it.
    pub fn set_dispatch_rate(&self, key: &QueueKey, source: RateSource, per_second: Option<f64>) {
        let per_second = per_second.filter(|r| r.is_finite() && *r >= 0.0);
        if per_second.is_none() && !self.limited.load(Ordering::Acquire) {
            return;
        }
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if per_second.is_none() && !rates.contains_key(&rate_key(key)) {
            return;
        }
        let rate = rates.entry(rate_key(key)).or_insert_with(|| DispatchRate {
            worker: None,
            api: None,
            tokens: 0.0,
            refilled: Instant::now(),
        });
        let fresh = rate.effective().is_none();
        match source {
            RateSource::Worker => rate.worker = per_second,
            RateSource::Api => rate.api = per_second,
        }
        if rate.effective().is_none() {
            rates.remove(&rate_key(key));
            self.limited.store(!rates.is_empty(), Ordering::Release);
        } else {
            rate.tokens = if fresh {
                rate.burst()
            } else {
                rate.tokens.min(rate.burst())
            };
            self.limited.store(true, Ordering::Release);
        }
    }

    /// The dispatch rate limit in force on `key`'s queue, and who set it.
    pub fn dispatch_rate(&self, key: &QueueKey) -> Option<(f64, RateSource)> {
        let rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.get(&rate_key(key)).and_then(DispatchRate::effective)
    }

    fn take_token(&self, key: &QueueKey) -> Result<(), Duration> {
        self.with_rate(key, |rate| rate.take(Instant::now()))
            .unwrap_or(Ok(()))
    }

    fn refund_token(&self, key: &QueueKey) {
        self.with_rate(key, DispatchRate::refund);
    }

    fn with_rate<T>(&self, key: &QueueKey, f: impl FnOnce(&mut DispatchRate) -> T) -> Option<T> {
        if !self.limited.load(Ordering::Acquire) {
            return None;
        }
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.get_mut(&rate_key(key)).map(f)
    }

    /// Pollers seen on `key`'s queue since `since_ns`, in every lane (most recent poll per
    /// identity).
    pub fn pollers(&self, key: &QueueKey, since_ns: i64) -> Vec<PollerSeen> {
        let mut seen: HashMap<String, i64> = HashMap::new();
        for (_, queue) in self.lock().iter().filter(|(k, _)| k.same_queue(key)) {
            for (identity, at) in queue
                .recent_pollers
                .iter()
                .filter(|(_, at)| **at >= since_ns)
            {
                let last = seen.entry(identity.clone()).or_insert(*at);
                *last = (*last).max(*at);
            }
        }
        seen.into_iter()
            .map(|(identity, last_access_ns)| PollerSeen {
                identity,
                last_access_ns,
            })
            .collect()
    }

    /// True if a poller of lane `lane` (a worker deployment version) polled any queue of
    /// namespace `namespace_id` since `since_ns` and has not shut down.
    pub fn lane_polled(&self, namespace_id: &str, lane: &str, since_ns: i64) -> bool {
        self.lock().iter().any(|(key, queue)| {
            key.namespace_id == namespace_id
                && key.lane == lane
                && queue.recent_pollers.values().any(|at| *at >= since_ns)
        })
    }

    /// Tasks waiting on `key`'s queue, in every lane.
    pub fn backlog(&self, key: &QueueKey) -> usize {
        self.lock()
            .iter()
            .filter(|(k, _)| k.same_queue(key))
            .map(|(_, queue)| queue.tasks.len())
            .sum()
    }

    /// Polls waiting for a task now (a poll whose caller went away is not counted).
    pub fn waiting_polls(&self) -> WaitingPolls {
        let mut waiting = WaitingPolls::default();
        for (key, queue) in self.lock().iter() {
            let polls = queue
                .pollers
                .iter()
                .filter(|poller| !poller.sender.is_closed())
                .count();
            match key.kind {
                TaskKind::Workflow => waiting.workflow += polls,
                TaskKind::Activity => waiting.activity += polls,
            }
        }
        waiting
    }

    /// Forgets a worker identity's polls on every queue of a namespace (ShutdownWorker).
    pub fn forget_poller(&self, namespace_id: &str, identity: &str) {
        for (key, queue) in self.lock().iter_mut() {
            if key.namespace_id == namespace_id {
                queue.recent_pollers.remove(identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> QueueKey {
        QueueKey {
            namespace_id: "ns".into(),
            name: "q".into(),
            kind: TaskKind::Workflow,
            lane: String::new(),
        }
    }

    fn task(id: i64) -> MatchTask {
        MatchTask::Run(RunTask {
            workflow_id: "wf".into(),
            run_id: "run".into(),
            task: TaskRef {
                kind: TaskKind::Workflow,
                task_queue: "q".into(),
                scheduled_event_id: id,
                attempt: 1,
            },
            routing: 0,
        })
    }

    fn offered(id: i64) -> Option<Dispatch> {
        Some(Dispatch::Task(task(id)))
    }

    fn poll(
        matching: &std::sync::Arc<Matching>,
        key: QueueKey,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<Option<Dispatch>> {
        let matching = matching.clone();
        tokio::spawn(async move {
            let request_id = "poll-1".to_string();
            matching.poll(&key, "w", request_id, 0, timeout).await
        })
    }

    /// A poll of `key()` with `timeout`, claimed once it waits.
    async fn claimed_poll(
        matching: &std::sync::Arc<Matching>,
        timeout: Duration,
    ) -> (tokio::task::JoinHandle<Option<Dispatch>>, ClaimedPoll) {
        let waiting = poll(matching, key(), timeout);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let claimed = matching.claim(&key());
        let claimed = claimed.unwrap_or_else(|| panic!("no poll to claim"));
        (waiting, claimed)
    }

    fn started() -> StartedTask {
        let args = crate::engine::StartArgs {
            workflow_id: "wf".into(),
            run_id: "run".into(),
            workflow_type: "t".into(),
            task_queue: "q".into(),
            ..Default::default()
        };
        let limits = crate::engine::Limits::default();
        let outcome = crate::engine::new_run(args, 0, &limits);
        StartedTask {
            state: std::sync::Arc::new(outcome.map(|o| o.state).unwrap_or_else(|e| panic!("{e}"))),
            task: TaskRef {
                kind: TaskKind::Workflow,
                task_queue: "q".into(),
                scheduled_event_id: 2,
                attempt: 1,
            },
            reply: Reply::Done,
        }
    }

    #[tokio::test]
    async fn queued_tasks_are_deduplicated_and_handed_out_in_order() {
        let matching = Matching::default();
        matching.offer(key(), task(2));
        matching.offer(key(), task(2));
        matching.offer(key(), task(5));
        assert_eq!(matching.backlog(&key()), 2);
        let short = Duration::from_millis(10);
        let key = key();
        let poll = || matching.poll(&key, "w", String::new(), 0, short);
        assert_eq!(poll().await, offered(2));
        assert_eq!(poll().await, offered(5));
        assert_eq!(poll().await, None);
    }

    #[tokio::test]
    async fn a_waiting_poller_gets_an_offered_task() {
        let matching = std::sync::Arc::new(Matching::default());
        let waiting = poll(&matching, key(), Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
        matching.offer(key(), task(7));
        assert_eq!(waiting.await.ok().flatten(), offered(7));
        assert_eq!(matching.backlog(&key()), 0);
    }

    #[tokio::test]
    async fn a_claimed_poll_gets_the_task_started_for_it() {
        let matching = std::sync::Arc::new(Matching::default());
        let (waiting, claimed) = claimed_poll(&matching, Duration::from_secs(5)).await;
        assert_eq!(
            (claimed.identity.as_str(), claimed.request_id.as_str()),
            ("w", "poll-1")
        );
        assert!(matching.claim(&key()).is_none(), "a poll is claimed once");
        // An offer meanwhile does not reach the claimed poll: it is queued.
        matching.offer(key(), task(9));
        claimed.deliver(started());
        let got = waiting.await.ok().flatten();
        assert_eq!(got, Some(Dispatch::Started(Box::new(started()))));
        assert_eq!(matching.backlog(&key()), 1);
    }

    #[tokio::test]
    async fn a_poll_claimed_before_its_deadline_waits_for_its_task() {
        let matching = std::sync::Arc::new(Matching::default());
        let (waiting, claimed) = claimed_poll(&matching, Duration::from_millis(100)).await;
        // The commit outlasts the poll's deadline.
        tokio::time::sleep(Duration::from_millis(150)).await;
        claimed.deliver(started());
        let got = waiting.await.ok().flatten();
        assert_eq!(got, Some(Dispatch::Started(Box::new(started()))));
    }

    #[tokio::test]
    async fn claims_skip_polls_whose_caller_left_and_unclaimed_polls_wait_on() {
        let matching = std::sync::Arc::new(Matching::default());
        let gone = poll(&matching, key(), Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone.abort();
        let _ = gone.await;
        assert!(matching.claim(&key()).is_none());
        let (waiting, claimed) = claimed_poll(&matching, Duration::from_secs(5)).await;
        matching.unclaim(&key(), claimed);
        matching.offer(key(), task(4));
        assert_eq!(waiting.await.ok().flatten(), offered(4));
    }

    #[tokio::test]
    async fn waiting_polls_are_counted_by_kind_until_they_end() {
        let matching = std::sync::Arc::new(Matching::default());
        let activities = QueueKey {
            kind: TaskKind::Activity,
            ..key()
        };
        let long = Duration::from_secs(5);
        let first = poll(&matching, key(), long);
        let _second = poll(&matching, key(), long);
        let _third = poll(&matching, activities, long);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let expected = WaitingPolls {
            workflow: 2,
            activity: 1,
        };
        assert_eq!(matching.waiting_polls(), expected);
        first.abort();
        let _ = first.await;
        assert_eq!(matching.waiting_polls().workflow, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dispatch_rate_spaces_out_queued_tasks_and_waiting_polls() {
        let matching = std::sync::Arc::new(Matching::default());
        matching.set_dispatch_rate(&key(), RateSource::Worker, Some(5.0));
        matching.set_dispatch_rate(&key(), RateSource::Api, Some(1.0));
        assert_eq!(matching.dispatch_rate(&key()), Some((1.0, RateSource::Api)));
        for id in 1..=3 {
            matching.offer(key(), task(id));
        }
        let begin = Instant::now();
        let long = Duration::from_secs(30);
        let key = key();
        assert_eq!(
            matching.poll(&key, "w", String::new(), 0, long).await,
            offered(1)
        );
        assert_eq!(
            matching.poll(&key, "w", String::new(), 0, long).await,
            offered(2)
        );
        assert_eq!(begin.elapsed().as_secs(), 1, "the burst is one task");
        assert_eq!(
            matching.poll(&key, "w", String::new(), 0, long).await,
            offered(3)
        );
        assert_eq!(begin.elapsed().as_secs(), 2);

        // Out of tokens: a writer claims no poll, and a waiting poll gets an offered task once
        // the next token is there.
        let waiting = poll(&matching, key.clone(), long);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(matching.claim(&key).is_none());
        matching.offer(key.clone(), task(4));
        assert_eq!(waiting.await.ok().flatten(), offered(4));
        assert_eq!(begin.elapsed().as_secs(), 3);

        // No rate: at once.
        matching.set_dispatch_rate(&key, RateSource::Api, None);
        assert_eq!(
            matching.dispatch_rate(&key),
            Some((5.0, RateSource::Worker))
        );
        matching.set_dispatch_rate(&key, RateSource::Worker, None);
        assert_eq!(matching.dispatch_rate(&key), None);
        matching.offer(key.clone(), task(5));
        matching.offer(key.clone(), task(6));
        let now = Instant::now();
        assert_eq!(
            matching.poll(&key, "w", String::new(), 0, long).await,
            offered(5)
        );
        assert_eq!(
            matching.poll(&key, "w", String::new(), 0, long).await,
            offered(6)
        );
        assert_eq!(now.elapsed(), Duration::ZERO);
    }
}
