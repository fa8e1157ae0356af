//! Snapshot files: a key range exported to one SST file, and a key range replaced by ingesting
//! such a file. Raft snapshots of a group are its state range moved this way.

use std::path::Path;

use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter};

use crate::store::StoreView;
use crate::{Cf, StorageError, Store};

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportedRange {
    /// Number of keys written.
    pub keys: u64,
    /// Size of the SST file in bytes (0 when the range was empty and no file content was needed).
    pub bytes: u64,
}

fn file_error(
    path: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StorageError {
    StorageError::SnapshotFile {
        path: path.to_path_buf(),
        source: source.into(),
    }
}

impl StoreView<'_> {
    /// Writes every key of `[start, end)` in `cf`, as of the view, to a new SST file at `file`.
    /// An empty range produces an empty file.
    pub fn export_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        file: &Path,
    ) -> Result<ExportedRange, StorageError> {
        let options = Options::default();
        let mut writer: Option<SstFileWriter> = None;
        let mut keys = 0u64;
        let mut failure: Option<StorageError> = None;
        self.scan(cf, start, end, |key, value| {
            let writer = match &mut writer {
                Some(writer) => writer,
                None => {
                    let new = SstFileWriter::create(&options);
                    if let Err(e) = new.open(file) {
                        failure = Some(file_error(file, e));
                        return false;
                    }
                    writer.insert(new)
                }
            };
            if let Err(e) = writer.put(key, value) {
                failure = Some(file_error(file, e));
                return false;
            }
            keys += 1;
            true
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        match writer {
            Some(mut writer) => writer.finish().map_err(|e| file_error(file, e))?,
            None => {
                std::fs::File::create(file).map_err(|e| file_error(file, e))?;
            }
        }
        let bytes = std::fs::metadata(file)
            .map_err(|e| file_error(file, e))?
            .len();
        Ok(ExportedRange { keys, bytes })
    }
}

impl Store {
    /// Replaces everything in `[start, end)` of `cf` with the content of the SST `file` made by
    /// [`Store::export_range`]. The file is copied in and kept, so a crash half-way can be
    /// recovered by calling this again with the same file. Durable when it returns.
    pub fn replace_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        file: &Path,
    ) -> Result<(), StorageError> {
        let size = std::fs::metadata(file)
            .map_err(|e| file_error(file, e))?
            .len();
        let mut clear = self.batch();
        clear.delete_range(cf, start, end);
        self.write_synced_blocking(clear)?;
        if size == 0 {
            return Ok(());
        }
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(false);
        self.inner
            .db
            .ingest_external_file_cf_opts(self.cf_handle(cf), &ingest, vec![file])
            .map_err(|e| file_error(file, e))?;
        self.sync_wal()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cf, NodeIdentity, Store};

    fn open(dir: &std::path::Path, node: u64) -> Store {
        let identity = NodeIdentity {
            cluster_id: "c".to_string(),
            node_id: node,
        };
        Store::open(dir, &identity).unwrap()
    }

    #[test]
    fn export_then_replace_moves_exactly_the_range() {
        let source_dir = tempfile::tempdir().unwrap();
        let target_dir = tempfile::tempdir().unwrap();
        let source = open(source_dir.path(), 1);
        let target = open(target_dir.path(), 2);
        let mut batch = source.batch();
        for i in 0u32..1000 {
            batch.put(
                Cf::State,
                &[b"g1".as_slice(), &i.to_be_bytes()].concat(),
                b"new",
            );
        }
        batch.put(Cf::State, b"g2-other", b"source-only");
        source.write_buffered(batch).unwrap();

        let mut batch = target.batch();
        batch.put(Cf::State, b"g1-stale", b"must vanish");
        batch.put(Cf::State, b"g0-keep", b"keep");
        batch.put(Cf::State, b"g2-keep", b"keep");
        target.write_buffered(batch).unwrap();

        let file = source_dir.path().join("snap.sst");
        let exported = source
            .view()
            .export_range(Cf::State, b"g1", b"g2", &file)
            .unwrap();
        assert_eq!(exported.keys, 1000);
        target
            .replace_range(Cf::State, b"g1", b"g2", &file)
            .unwrap();
        target
            .replace_range(Cf::State, b"g1", b"g2", &file)
            .unwrap();

        assert_eq!(target.get(Cf::State, b"g1-stale").unwrap(), None);
        assert_eq!(
            target.get(Cf::State, b"g0-keep").unwrap(),
            Some(b"keep".to_vec())
        );
        assert_eq!(
            target.get(Cf::State, b"g2-keep").unwrap(),
            Some(b"keep".to_vec())
        );
        assert_eq!(target.get(Cf::State, b"g2-other").unwrap(), None);
        let mut count = 0;
        target
            .scan(Cf::State, b"g1", b"g2", |_, v| {
                assert_eq!(v, b"new");
                count += 1;
                true
            })
            .unwrap();
        assert_eq!(count, 1000);
    }

    #[test]
    fn empty_range_exports_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1);
        let mut batch = store.batch();
        batch.put(Cf::State, b"b-old", b"x");
        store.write_buffered(batch).unwrap();
        let file = dir.path().join("empty.sst");
        assert_eq!(
            store
                .view()
                .export_range(Cf::State, b"a", b"b", &file)
                .unwrap()
                .keys,
            0
        );
        store.replace_range(Cf::State, b"b", b"c", &file).unwrap();
        assert_eq!(store.get(Cf::State, b"b-old").unwrap(), None);
    }
}
