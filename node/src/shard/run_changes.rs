//! Which runs each replica has applied changes to, so that a long poll (history, update waits)
//! wakes when its own run changes rather than on every apply of its shard.
//!
//! The applier records each applied mutable-state write as (log index, run hash). The shard's
//! apply follower publishes those at or below the replica's applied index, which openraft
//! reports only after the apply's write is readable: a woken waiter always reads the change.
//! Recording is unconditional (a waiter registering while an apply is in progress must not miss
//! it), and the hash may collide (a spurious wake is harmless).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_storage::GroupId;
use tokio::sync::watch;

/// Most applied changes held for one group before they are published (past it, every waiter
/// of the group is woken instead: only a group whose applies are never published gets there).
const PENDING_LIMIT: usize = 65_536;

#[derive(Default)]
struct Pending {
    changes: Vec<(u64, u64)>,
    overflowed: bool,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<GroupId, Pending>,
    waiters: HashMap<(GroupId, u64), (watch::Sender<()>, usize)>,
}

/// The node's record of applied run changes and of the long polls waiting on them.
#[derive(Default)]
pub struct RunChanges {
    inner: Mutex<Inner>,
}

/// The hash a run is known by: of its mutable state key.
pub fn run_hash(state_key: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    state_key.hash(&mut hasher);
    hasher.finish()
}

impl RunChanges {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The applier wrote the mutable state `state_key` of `group` at log `index`.
    pub fn record(&self, group: GroupId, index: u64, state_key: &[u8]) {
        let hash = run_hash(state_key);
        let mut inner = self.lock();
        let pending = inner.pending.entry(group).or_default();
        if pending.changes.len() >= PENDING_LIMIT {
            pending.changes.clear();
            pending.overflowed = true;
        }
        pending.changes.push((index, hash));
    }

    /// `group`'s replica has applied (and made readable) everything through `applied`: wakes
    /// the waiters of the runs changed so far.
    pub fn publish(&self, group: GroupId, applied: u64) {
        let mut inner = self.lock();
        let Inner { pending, waiters } = &mut *inner;
        let Some(pending) = pending.get_mut(&group) else {
            return;
        };
        if std::mem::take(&mut pending.overflowed) {
            pending.changes.retain(|(index, _)| *index > applied);
            wake_group(waiters, group);
            return;
        }
        pending.changes.retain(|(index, hash)| {
            if *index > applied {
                return true;
            }
            if let Some((sender, _)) = waiters.get(&(group, *hash)) {
                sender.send_replace(());
            }
            false
        });
    }

    /// Wakes every waiter of `group` (its state changed without applies: a snapshot).
    pub fn publish_all(&self, group: GroupId) {
        wake_group(&self.lock().waiters, group);
    }

    /// Starts watching the run whose mutable state key is `state_key`.
    pub fn watch(self: &Arc<Self>, group: GroupId, state_key: &[u8]) -> RunWatch {
        let key = (group, run_hash(state_key));
        let mut inner = self.lock();
        let (sender, count) = inner
            .waiters
            .entry(key)
            .or_insert_with(|| (watch::channel(()).0, 0));
        *count += 1;
        RunWatch {
            receiver: sender.subscribe(),
            changes: self.clone(),
            key,
        }
    }
}

fn wake_group(waiters: &HashMap<(GroupId, u64), (watch::Sender<()>, usize)>, group: GroupId) {
    for ((waiter_group, _), (sender, _)) in waiters {
        if *waiter_group == group {
            sender.send_replace(());
        }
    }
}

/// A long poll's registration for one run's changes; unregisters when dropped.
pub struct RunWatch {
    receiver: watch::Receiver<()>,
    changes: Arc<RunChanges>,
    key: (GroupId, u64),
}

impl RunWatch {
    /// Marks every change so far as seen: call before reading the run.
    pub fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits for a change applied after the last [`RunWatch::mark_seen`].
    pub async fn changed(&mut self) {
        // The sender lives as long as this registration: the wait cannot fail.
        let _ = self.receiver.changed().await;
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        let mut inner = self.changes.lock();
        if let Some((_, count)) = inner.waiters.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                inner.waiters.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(watch: &mut RunWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(50), watch.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_waiter_wakes_for_its_run_once_the_change_is_applied_and_not_for_others() {
        let changes = Arc::new(RunChanges::default());
        let mut mine = changes.watch(3, b"run-a");
        mine.mark_seen();
        changes.record(3, 10, b"run-b");
        changes.record(4, 10, b"run-a");
        changes.publish(3, 10);
        changes.publish(4, 10);
        assert!(!woken(&mut mine).await, "woken by another run or group");
        changes.record(3, 11, b"run-a");
        changes.publish(3, 10);
        assert!(!woken(&mut mine).await, "woken before index 11 was applied");
        changes.publish(3, 11);
        assert!(woken(&mut mine).await, "not woken by its own run's change");
    }

    #[tokio::test]
    async fn a_change_published_before_the_wait_still_wakes_it() {
        let changes = Arc::new(RunChanges::default());
        let mut mine = changes.watch(1, b"run");
        mine.mark_seen();
        changes.record(1, 5, b"run");
        changes.publish(1, 5);
        assert!(woken(&mut mine).await);
    }

    #[tokio::test]
    async fn registrations_are_counted_and_removed_with_their_last_watch() {
        let changes = Arc::new(RunChanges::default());
        let first = changes.watch(1, b"run");
        let mut second = changes.watch(1, b"run");
        second.mark_seen();
        drop(first);
        changes.record(1, 1, b"run");
        changes.publish(1, 1);
        assert!(
            woken(&mut second).await,
            "the second watch lost its registration"
        );
        drop(second);
        assert!(changes.lock().waiters.is_empty());
    }

    #[tokio::test]
    async fn an_overflowing_group_and_a_snapshot_wake_every_waiter_of_the_group() {
        let changes = Arc::new(RunChanges::default());
        let mut mine = changes.watch(2, b"run-a");
        mine.mark_seen();
        for index in 0..=PENDING_LIMIT as u64 {
            changes.record(2, index, b"run-b");
        }
        changes.publish(2, PENDING_LIMIT as u64);
        assert!(woken(&mut mine).await, "overflow did not wake the group");
        mine.mark_seen();
        assert!(changes.lock().pending[&2].changes.is_empty());
        changes.publish_all(2);
        assert!(woken(&mut mine).await, "a snapshot did not wake the group");
    }
}
