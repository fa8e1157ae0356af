//! Matching: hands dispatchable tasks to long-polling workers. In a cluster it runs on one node,
//! the leader of the metadata group ([`MatchingOwner`]): shard leaders send it their offers and
//! other nodes forward polls and queries to it. Soft state only: tasks are durable in their
//! runs' mutable state, and shard leaders offer them again when the owner changes, so this
//! index may be lost at any time. Offers are deduplicated while queued; a task handed out twice
//! is harmless because recording it as started is idempotent in the owning shard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::engine::{TaskKind, TaskRef};

/// One task queue of one namespace, for one kind of task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct QueueKey {
    /// Namespace id.
    pub namespace_id: String,
    /// Task queue name.
    pub name: String,
    /// Workflow or activity tasks.
    pub kind: TaskKind,
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
}

/// What a poller receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchTask {
    /// A workflow or activity task of a run.
    Run(RunTask),
    /// A query (workflow queues only), by query id.
    Query(u64),
}

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
            Some((_, Some(address))) => Ok(Some(address)),
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
    pollers: VecDeque<(u64, oneshot::Sender<MatchTask>)>,
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

/// The node's task queues.
#[derive(Default)]
pub struct Matching {
    queues: Mutex<HashMap<QueueKey, Queue>>,
    next_poller: std::sync::atomic::AtomicU64,
}

impl Matching {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueKey, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a task: a waiting poller gets it, otherwise it is queued (once).
    pub fn offer(&self, key: QueueKey, task: MatchTask) {
        let mut queues = self.lock();
        let queue = queues.entry(key).or_default();
        if queue.queued.contains(&task) {
            return;
        }
        let mut task = task;
        while let Some((_, poller)) = queue.pollers.pop_front() {
            match poller.send(task) {
                Ok(()) => return,
                Err(returned) => task = returned,
            }
        }
        queue.queued.insert(task.clone());
        queue.tasks.push_back(task);
    }

    /// Waits up to `timeout` for a task of `key`.
    pub async fn poll(
        &self,
        key: &QueueKey,
        identity: &str,
        now_ns: i64,
        timeout: Duration,
    ) -> Option<MatchTask> {
        let id = self
            .next_poller
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut receiver = {
            let mut queues = self.lock();
            let queue = queues.entry(key.clone()).or_default();
            queue.recent_pollers.insert(identity.to_string(), now_ns);
            if let Some(task) = queue.tasks.pop_front() {
                queue.queued.remove(&task);
                return Some(task);
            }
            let (sender, receiver) = oneshot::channel();
            queue.pollers.push_back((id, sender));
            receiver
        };
        match tokio::time::timeout(timeout, &mut receiver).await {
            Ok(Ok(task)) => Some(task),
            _ => {
                let mut queues = self.lock();
                if let Some(queue) = queues.get_mut(key) {
                    queue.pollers.retain(|(poller, _)| *poller != id);
                }
                receiver.try_recv().ok()
            }
        }
    }

    /// Pollers seen on `key` (most recent poll per identity).
    pub fn pollers(&self, key: &QueueKey) -> Vec<PollerSeen> {
        self.lock()
            .get(key)
            .map(|queue| {
                queue
                    .recent_pollers
                    .iter()
                    .map(|(identity, at)| PollerSeen {
                        identity: identity.clone(),
                        last_access_ns: *at,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tasks waiting on `key`.
    pub fn backlog(&self, key: &QueueKey) -> usize {
        self.lock().get(key).map_or(0, |queue| queue.tasks.len())
    }

    /// Polls waiting for a task now (a poll whose caller went away is not counted).
    pub fn waiting_polls(&self) -> WaitingPolls {
        let mut waiting = WaitingPolls::default();
        for (key, queue) in self.lock().iter() {
            let polls = queue
                .pollers
                .iter()
                .filter(|(_, poller)| !poller.is_closed())
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
        })
    }

    #[tokio::test]
    async fn queued_tasks_are_deduplicated_and_handed_out_in_order() {
        let matching = Matching::default();
        matching.offer(key(), task(2));
        matching.offer(key(), task(2));
        matching.offer(key(), task(5));
        assert_eq!(matching.backlog(&key()), 2);
        let short = Duration::from_millis(10);
        assert_eq!(matching.poll(&key(), "w", 0, short).await, Some(task(2)));
        assert_eq!(matching.poll(&key(), "w", 0, short).await, Some(task(5)));
        assert_eq!(matching.poll(&key(), "w", 0, short).await, None);
    }

    #[tokio::test]
    async fn a_waiting_poller_gets_an_offered_task() {
        let matching = std::sync::Arc::new(Matching::default());
        let waiting = {
            let matching = matching.clone();
            tokio::spawn(async move { matching.poll(&key(), "w", 0, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        matching.offer(key(), task(7));
        assert_eq!(waiting.await.ok().flatten(), Some(task(7)));
        assert_eq!(matching.backlog(&key()), 0);
    }

    #[tokio::test]
    async fn waiting_polls_are_counted_by_kind_until_they_end() {
        let matching = std::sync::Arc::new(Matching::default());
        let activities = QueueKey {
            kind: TaskKind::Activity,
            ..key()
        };
        let poll = |key: QueueKey| {
            let matching = matching.clone();
            tokio::spawn(async move { matching.poll(&key, "w", 0, Duration::from_secs(5)).await })
        };
        let first = poll(key());
        let _second = poll(key());
        let _third = poll(activities);
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
}
