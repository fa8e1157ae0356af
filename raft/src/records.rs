//! Keel's own records in the node's store, seen from the Raft layer: read and decode them
//! (a record that does not decode is reported as corrupt, naming it), map storage failures to
//! openraft's storage errors, and await synced writes without blocking a runtime thread.

use keel_storage::{Cf, StorageError, Store, WriteBatch};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::codec;
use crate::types::NodeId;

pub(crate) type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// An openraft storage error for a failed storage operation.
pub(crate) fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> openraft::StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}

/// Decodes a record; one that does not decode is reported as corrupt, named by `what`.
pub(crate) fn decode_record<T: DeserializeOwned>(
    bytes: &[u8],
    subject: ErrorSubject<NodeId>,
    what: impl FnOnce() -> String,
) -> StorageResult<T> {
    codec::decode(bytes).map_err(|detail| {
        StorageIOError::new(
            subject,
            ErrorVerb::Read,
            AnyError::error(format!("corrupt {}: {detail}", what())),
        )
        .into()
    })
}

/// Reads and decodes the record under `key` in `cf`, if there is one.
pub(crate) fn read_record<T: DeserializeOwned>(
    store: &Store,
    cf: Cf,
    key: &[u8],
    subject: ErrorSubject<NodeId>,
    what: impl FnOnce() -> String,
) -> StorageResult<Option<T>> {
    let bytes = store
        .get(cf, key)
        .map_err(|e| storage_error(subject.clone(), ErrorVerb::Read, e))?;
    bytes
        .map(|bytes| decode_record(&bytes, subject, what))
        .transpose()
}

/// Writes `batch` through the synced writer and waits for the fsync without blocking a runtime
/// thread.
pub(crate) async fn write_synced(store: &Store, batch: WriteBatch) -> Result<(), StorageError> {
    let (tx, rx) = oneshot::channel();
    store.write_synced(batch, move |result| {
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| StorageError::Closed {
        path: store.path().to_path_buf(),
    })?
}
