//! A replicated key/value applier: the simplest real state machine, used by the debug KV RPC,
//! the foundation tests and the commit benchmark.

use bytes::Bytes;
use keel_storage::GroupId;
use serde::{Deserialize, Serialize};

use crate::applier::{Applier, GroupWrites};
use crate::codec;

/// One key/value command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
}

impl KvCommand {
    /// The command's wire form, as proposed to a group.
    pub fn encode(&self) -> Bytes {
        Bytes::from(codec::encode(self))
    }
}

/// Response to a command that could not be decoded (deterministic on every replica).
pub const KV_REJECTED: &[u8] = b"rejected: not a KvCommand";

/// Applies [`KvCommand`]s; the response is empty, or [`KV_REJECTED`].
#[derive(Clone, Copy, Debug, Default)]
pub struct KvApplier;

impl Applier for KvApplier {
    fn apply(
        &self,
        _group: GroupId,
        _term: u64,
        _index: u64,
        command: &[u8],
        writes: &mut GroupWrites<'_>,
    ) -> Bytes {
        match codec::decode::<KvCommand>(command) {
            Ok(KvCommand::Put { key, value }) => {
                writes.put(&key, &value);
                Bytes::new()
            }
            Ok(KvCommand::Delete { key }) => {
                writes.delete(&key);
                Bytes::new()
            }
            Err(_) => Bytes::from_static(KV_REJECTED),
        }
    }
}
