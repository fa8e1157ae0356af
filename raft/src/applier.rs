//! The seam between the Raft layer and what a group replicates: an [`Applier`] turns committed
//! commands into writes to the group's own key range, deterministically.

use bytes::Bytes;
use keel_storage::{keys, Cf, GroupId, WriteBatch};

/// Applies committed commands to a group's replicated state.
///
/// `apply` must be deterministic: the same command on the same state yields the same writes and
/// response on every replica. It must not read clocks, randomness or anything outside its
/// arguments, and it must not fail: a command it cannot execute gets an error response.
pub trait Applier: Send + Sync + 'static {
    /// Applies `command`, committed at log `index` of `group` in an entry proposed by the leader
    /// of `term`, by adding writes to `writes`. The term lets an applier fence out commands that
    /// a writer of an earlier term computed but that reached the log only now.
    fn apply(
        &self,
        group: GroupId,
        term: u64,
        index: u64,
        command: &[u8],
        writes: &mut GroupWrites<'_>,
    ) -> Bytes;
}

/// Writes of one apply call, confined to the group's application key range. They are committed
/// atomically with the group's applied index.
pub struct GroupWrites<'a> {
    pub(crate) batch: &'a mut WriteBatch,
    pub(crate) group: GroupId,
}

impl GroupWrites<'_> {
    /// Puts `value` under the application key `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch
            .put(Cf::State, &keys::state_user_key(self.group, key), value);
    }

    /// Deletes the application key `key`.
    pub fn delete(&mut self, key: &[u8]) {
        self.batch
            .delete(Cf::State, &keys::state_user_key(self.group, key));
    }
}
