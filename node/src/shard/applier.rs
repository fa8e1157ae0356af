//! The replicated command of every Keel group: a write set decided by the group's leader,
//! applied verbatim. Fenced by the leader term it was decided in, so a writer of an old term
//! cannot land decisions computed from stale state after a newer leader took over.

use bytes::Bytes;
use keel_raft::{Applier, GroupWrites};
use keel_storage::GroupId;
use serde::{Deserialize, Serialize};

/// Format version of [`WriteSet`] encodings.
const VERSION: u8 = 1;

/// Writes decided by a group leader, applied atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSet {
    /// Term of the leader that decided them; None for unconditional writes (debug KV).
    pub fence_term: Option<u64>,
    /// Keys to set.
    #[serde(with = "crate::byte_runs::pairs")]
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys to remove.
    #[serde(with = "crate::byte_runs::strings")]
    pub deletes: Vec<Vec<u8>>,
}

impl WriteSet {
    /// An empty write set fenced by `term`.
    pub fn fenced(term: u64) -> WriteSet {
        WriteSet {
            fence_term: Some(term),
            ..WriteSet::default()
        }
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// Wire form.
    pub fn encode(&self) -> Bytes {
        let mut out = vec![VERSION];
        // Serializing plain vectors of bytes cannot fail.
        out.extend(bincode::serialize(self).unwrap_or_default());
        Bytes::from(out)
    }

    fn decode(bytes: &[u8]) -> Option<WriteSet> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => bincode::deserialize(rest).ok(),
            _ => None,
        }
    }
}

/// Response when the command was applied.
pub const APPLIED: &[u8] = b"ok";
/// Response when the write set was decided in an older term and dropped.
pub const FENCED: &[u8] = b"fenced";
/// Response when the command could not be decoded.
pub const REJECTED: &[u8] = b"rejected";

/// Applies [`WriteSet`]s, recording which runs' mutable states each one wrote or deleted.
#[derive(Clone, Default)]
pub struct WriteSetApplier {
    /// Where applied run changes are recorded for long polls.
    pub runs: std::sync::Arc<super::run_changes::RunChanges>,
}

impl Applier for WriteSetApplier {
    fn apply(
        &self,
        group: GroupId,
        term: u64,
        index: u64,
        command: &[u8],
        writes: &mut GroupWrites<'_>,
    ) -> Bytes {
        let Some(set) = WriteSet::decode(command) else {
            return Bytes::from_static(REJECTED);
        };
        if set.fence_term.is_some_and(|fence| fence != term) {
            return Bytes::from_static(FENCED);
        }
        for key in &set.deletes {
            writes.delete(key);
            if super::keys::is_state(key) {
                self.runs.record(group, index, key);
            }
        }
        for (key, value) in &set.puts {
            writes.put(key, value);
            if super::keys::is_state(key) {
                self.runs.record(group, index, key);
            }
        }
        Bytes::from_static(APPLIED)
    }
}
