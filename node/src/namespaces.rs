//! Namespaces: records replicated in the metadata group (group 0), cached in memory on the node.
//! Writes go through the metadata group's leader one at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use keel_raft::ShardGroup;
use serde::{Deserialize, Serialize};

use crate::shard::applier::{WriteSet, APPLIED};
use crate::shard::forwarding::{read_barrier, PeerClients};
use crate::shard::keys;

/// Longest a namespace write waits for the metadata leader to apply its own log.
const OWN_LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Version byte of stored metadata records (namespaces, search attributes, deployments).
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
    /// A search attribute request Temporal would refuse.
    #[error("{0}")]
    InvalidSearchAttribute(String),
    /// The metadata group cannot take the write now; the outcome may be unknown.
    #[error("the metadata group is unavailable: {0}")]
    Unavailable(String),
}

/// The namespace registry of a node.
pub struct Namespaces {
    group: ShardGroup,
    peers: Arc<PeerClients>,
    cache: RwLock<BTreeMap<String, NamespaceRecord>>,
    writes: tokio::sync::Mutex<()>,
}

impl Namespaces {
    /// Loads the records applied on this node.
    pub fn load(group: ShardGroup, peers: Arc<PeerClients>) -> Result<Namespaces, NamespaceError> {
        let namespaces = Namespaces {
            group,
            peers,
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
                if let Some(record) = decode::<NamespaceRecord>(value) {
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
        self.cached(name).or_else(|| {
            self.reload().ok()?;
            self.cached(name)
        })
    }

    /// The namespace named `name` in this node's cache, as last loaded.
    fn cached(&self, name: &str) -> Option<NamespaceRecord> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The namespace named `name` as the metadata group holds it now: a miss first catches this
    /// replica up with the group's leader (read index), so a namespace created through another
    /// node, or before this node joined, is found, and "not found" is the truth.
    pub async fn lookup(&self, name: &str) -> Result<Option<NamespaceRecord>, NamespaceError> {
        if let Some(record) = self.cached(name) {
            return Ok(Some(record));
        }
        read_barrier(&self.group, 0, &self.peers)
            .await
            .map_err(|reason| {
                NamespaceError::Unavailable(format!("cannot confirm namespace {name}: {reason}"))
            })?;
        Ok(self.by_name(name))
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
        let term = self.linearize().await?;
        match (self.by_name(&record.name).is_some(), create) {
            (true, true) => return Err(NamespaceError::AlreadyExists(record.name)),
            (false, false) => return Err(NamespaceError::NotFound(record.name)),
            _ => {}
        }
        self.propose(
            term,
            vec![(keys::namespace(&record.name), encode(&record))],
            Vec::new(),
        )
        .await?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.name.clone(), record);
        Ok(())
    }
}

/// Custom search attributes of one namespace: name -> `IndexedValueType`.
pub type SearchAttributeTypes = BTreeMap<String, i32>;

impl Namespaces {
    /// Proposes `writes` (decided from state read under the write lock) through the metadata
    /// group, fenced by the current term.
    async fn propose(
        &self,
        term: u64,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
    ) -> Result<(), NamespaceError> {
        let writes = WriteSet {
            fence_term: Some(term),
            puts,
            deletes,
        };
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
        Ok(())
    }

    /// Makes the cache reflect everything this leader's writes could depend on; answers the
    /// term to fence them with.
    async fn linearize(&self) -> Result<u64, NamespaceError> {
        let term = self.group.metrics().borrow().current_term;
        self.group
            .ensure_linearizable()
            .await
            .map_err(|e| NamespaceError::Unavailable(e.to_string()))?;
        if !self.group.apply_own_log(term, OWN_LOG_WAIT).await {
            return Err(NamespaceError::Unavailable(
                "the metadata group's leader changed or could not apply its own log".into(),
            ));
        }
        self.reload()?;
        Ok(term)
    }

    /// The custom search attributes of a namespace (applied state).
    pub fn search_attributes(
        &self,
        namespace_id: &str,
    ) -> Result<SearchAttributeTypes, NamespaceError> {
        let bytes = self
            .group
            .read_local(&keys::search_attributes(namespace_id))
            .map_err(|e| NamespaceError::Unavailable(e.to_string()))?;
        Ok(bytes.and_then(|b| decode(&b)).unwrap_or_default())
    }

    /// Adds (`add`) or removes custom search attributes of a namespace.
    pub async fn change_search_attributes(
        &self,
        name: &str,
        change: SearchAttributeTypes,
        add: bool,
    ) -> Result<(), NamespaceError> {
        let _serial = self.writes.lock().await;
        let term = self.linearize().await?;
        let record = self
            .by_name(name)
            .ok_or_else(|| NamespaceError::NotFound(name.to_string()))?;
        let mut current = self.search_attributes(&record.id)?;
        for (attribute, kind) in change {
            if add {
                match current.get(&attribute) {
                    Some(existing) if *existing != kind => {
                        return Err(NamespaceError::InvalidSearchAttribute(format!(
                            "Search attribute {attribute} already exists with another type."
                        )))
                    }
                    _ => {
                        current.insert(attribute, kind);
                    }
                }
            } else if current.remove(&attribute).is_none() {
                return Err(NamespaceError::InvalidSearchAttribute(format!(
                    "Search attribute {attribute} doesn't exist."
                )));
            }
        }
        self.propose(
            term,
            vec![(keys::search_attributes(&record.id), encode(&current))],
            Vec::new(),
        )
        .await
    }

    /// The metadata group's applied index on this node.
    pub fn applied_index(&self) -> u64 {
        self.group
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |log_id| log_id.index)
    }

    /// Scans the metadata group's applied records in `[start, end)`.
    pub fn scan_metadata(
        &self,
        start: &[u8],
        end: &[u8],
        mut each: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), NamespaceError> {
        self.group
            .scan_local(start, end, |key, value| {
                each(key, value);
                true
            })
            .map_err(|e| NamespaceError::Unavailable(e.to_string()))
    }

    /// Writes what `decide` makes of the metadata group's current records (it reads them
    /// through the function it is given), serialized with every other metadata write and
    /// fenced by the leader's term; answers what `decide` answered.
    pub async fn write_metadata<T, E: From<NamespaceError>>(
        &self,
        decide: impl FnOnce(
            &dyn Fn(&[u8]) -> Result<Option<Vec<u8>>, NamespaceError>,
        ) -> Result<(MetadataWrite, T), E>,
    ) -> Result<T, E> {
        let _serial = self.writes.lock().await;
        let term = self.linearize().await?;
        let read = |key: &[u8]| {
            self.group
                .read_local(key)
                .map_err(|e| NamespaceError::Unavailable(e.to_string()))
        };
        let (write, answer) = decide(&read)?;
        if !write.puts.is_empty() || !write.deletes.is_empty() {
            self.propose(term, write.puts, write.deletes).await?;
        }
        Ok(answer)
    }

    /// Deletes a namespace the way Temporal does: it is renamed `<name>-deleted-<id prefix>`
    /// and marked deleted, so the name is free again. Returns the new name.
    pub async fn delete(&self, name: &str) -> Result<String, NamespaceError> {
        let _serial = self.writes.lock().await;
        let term = self.linearize().await?;
        let mut record = self
            .by_name(name)
            .ok_or_else(|| NamespaceError::NotFound(name.to_string()))?;
        let deleted = format!("{name}-deleted-{}", &record.id[..record.id.len().min(5)]);
        record.name = deleted.clone();
        record.state = temporalio_protos::temporal::api::enums::v1::NamespaceState::Deleted as i32;
        self.propose(
            term,
            vec![(keys::namespace(&deleted), encode(&record))],
            vec![keys::namespace(name)],
        )
        .await?;
        self.reload()?;
        Ok(deleted)
    }
}

/// What one [`Namespaces::write_metadata`] writes: keys put and keys deleted.
#[derive(Debug, Default)]
pub struct MetadataWrite {
    /// Keys and their new values.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys removed.
    pub deletes: Vec<Vec<u8>>,
}

/// A metadata record as stored: the format byte, then bincode.
pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend(bincode::serialize(record).unwrap_or_default());
    out
}

/// A stored metadata record, if it is one of the current format.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => bincode::deserialize(rest).ok(),
        _ => None,
    }
}
