//! Namespaces: records replicated in the metadata group (group 0), cached in memory on the node.
//! Writes go through the metadata group's leader one at a time.

use std::collections::BTreeMap;
use std::sync::RwLock;

use keel_raft::ShardGroup;
use serde::{Deserialize, Serialize};

use crate::shard::applier::{WriteSet, APPLIED};
use crate::shard::keys;

/// Version byte of stored namespace records.
const VERSION: u8 = 1;

/// One namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Stable id (a UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Owner email.
    pub owner_email: String,
    /// Retention of closed workflows, ms.
    pub retention_ms: i64,
    /// User data.
    pub data: BTreeMap<String, String>,
    /// `NamespaceState` value.
    pub state: i32,
}

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// Exists already.
    #[error("Namespace {0:?} already exists")]
    AlreadyExists(String),
    /// No such namespace.
    #[error("Namespace {0} is not found.")]
    NotFound(String),
    /// The metadata group cannot take the write now; the outcome may be unknown.
    #[error("the metadata group is unavailable: {0}")]
    Unavailable(String),
}

/// The namespace registry of a node.
pub struct Namespaces {
    group: ShardGroup,
    cache: RwLock<BTreeMap<String, NamespaceRecord>>,
    writes: tokio::sync::Mutex<()>,
}

impl Namespaces {
    /// Loads the records applied on this node.
    pub fn load(group: ShardGroup) -> Result<Namespaces, NamespaceError> {
        let namespaces = Namespaces {
            group,
            cache: RwLock::new(BTreeMap::new()),
            writes: tokio::sync::Mutex::new(()),
        };
        namespaces.reload()?;
        Ok(namespaces)
    }

    fn reload(&self) -> Result<(), NamespaceError> {
        let (start, end) = keys::namespace_range();
        let mut records = BTreeMap::new();
        self.group
            .scan_local(&start, &end, |_, value| {
                if let Some(record) = decode(value) {
                    records.insert(record.name.clone(), record);
                }
                true
            })
            .map_err(|e| NamespaceError::Unavailable(e.to_string()))?;
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = records;
        Ok(())
    }

    /// The namespace named `name`. A miss re-reads the records applied on this node, so
    /// namespaces created through another node's metadata leader show up here too.
    pub fn by_name(&self, name: &str) -> Option<NamespaceRecord> {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        cached.or_else(|| {
            self.reload().ok()?;
            self.cache
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned()
        })
    }

    /// The namespace with id `id`.
    pub fn by_id(&self, id: &str) -> Option<NamespaceRecord> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|record| record.id == id)
            .cloned()
    }

    /// Every namespace, by name.
    pub fn list(&self) -> Vec<NamespaceRecord> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Creates a namespace (`create = true`, fails if it exists) or replaces one (fails if it
    /// does not exist), through the metadata group.
    pub async fn write(&self, record: NamespaceRecord, create: bool) -> Result<(), NamespaceError> {
        let _serial = self.writes.lock().await;
        self.group
            .ensure_linearizable()
            .await
            .map_err(|e| NamespaceError::Unavailable(e.to_string()))?;
        self.reload()?;
        match (self.by_name(&record.name).is_some(), create) {
            (true, true) => return Err(NamespaceError::AlreadyExists(record.name)),
            (false, false) => return Err(NamespaceError::NotFound(record.name)),
            _ => {}
        }
        let term = self.group.metrics().borrow().current_term;
        let mut writes = WriteSet::fenced(term);
        writes
            .puts
            .push((keys::namespace(&record.name), encode(&record)));
        let committed = self
            .group
            .propose(writes.encode())
            .await
            .map_err(|e| NamespaceError::Unavailable(e.to_string()))?;
        if committed.response.as_ref() != APPLIED {
            return Err(NamespaceError::Unavailable(
                "leadership changed during the write".into(),
            ));
        }
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.name.clone(), record);
        Ok(())
    }
}

fn encode(record: &NamespaceRecord) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend(bincode::serialize(record).unwrap_or_default());
    out
}

fn decode(bytes: &[u8]) -> Option<NamespaceRecord> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => bincode::deserialize(rest).ok(),
        _ => None,
    }
}
