//! The replicated command of every Keel group: a write set decided by the group's leader,
//! applied verbatim. Fenced by the leader term it was decided in, so a writer of an old term
//! cannot land decisions computed from stale state after a newer leader took over.

use bytes::Bytes;
use keel_raft::{Applier, GroupWrites};
use keel_storage::GroupId;
use serde::{Deserialize, Serialize};

/// Format version of [`WriteSet`] encodings: varint lengths. Version 1, fixed-width lengths,
/// is in logs written before it and still applies.
const VERSION: u8 = 2;

/// The fixed-width format version.
const FIXED_WIDTH_VERSION: u8 = 1;

fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

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
        use bincode::Options;
        let size = self
            .puts
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .chain(self.deletes.iter().map(|k| k.len() + 3))
            .sum::<usize>();
        let mut out = Vec::with_capacity(size + 16);
        out.push(VERSION);
        // Serializing plain vectors of bytes cannot fail.
        let _ = codec().serialize_into(&mut out, self);
        Bytes::from(out)
    }

    fn decode(bytes: &[u8]) -> Option<WriteSet> {
        use bincode::Options;
        match bytes.split_first() {
            Some((&VERSION, rest)) => codec().deserialize(rest).ok(),
            Some((&FIXED_WIDTH_VERSION, rest)) => bincode::deserialize(rest).ok(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WriteSet {
        WriteSet {
            fence_term: Some(7),
            puts: vec![
                (b"key".to_vec(), vec![1; 300]),
                (b"k2".to_vec(), Vec::new()),
            ],
            deletes: vec![b"gone".to_vec()],
        }
    }

    #[test]
    fn write_sets_round_trip_in_the_varint_form_and_the_fixed_width_one_still_decodes() {
        let set = sample();
        let encoded = set.encode();
        assert_eq!(encoded[0], VERSION);
        assert_eq!(WriteSet::decode(&encoded), Some(set.clone()));
        let mut fixed_width = vec![FIXED_WIDTH_VERSION];
        fixed_width.extend(bincode::serialize(&set).unwrap_or_else(|e| panic!("encode: {e}")));
        assert!(encoded.len() + 30 < fixed_width.len(), "{encoded:?}");
        assert_eq!(WriteSet::decode(&fixed_width), Some(set));
        assert_eq!(WriteSet::decode(&[3, 0]), None);
        assert_eq!(WriteSet::decode(&encoded[..encoded.len() - 1]), None);
    }
}
