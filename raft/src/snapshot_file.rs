//! A group's snapshot: its state range pinned in RocksDB as of one applied index, written to an
//! SST file only when a peer needs it; or such a file, being sent or received. openraft streams
//! a file in chunks through this handle, which also remembers the file's path so the receiver
//! can ingest it.
//!
//! Pinning costs a RocksDB snapshot and a parked thread, whatever the size of the state; the
//! export, which reads the whole range, is paid only when a follower is too far behind for the
//! log.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use keel_storage::{Cf, Store};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Why a snapshot could not be pinned or written out.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The thread holding the view could not be started.
    #[error("could not start the snapshot thread: {0}")]
    Spawn(io::Error),
    /// The thread holding the view ended (it panicked) before answering.
    #[error("the snapshot thread ended without an answer")]
    Lost,
    /// Reading the view or writing the file failed.
    #[error(transparent)]
    Store(#[from] keel_storage::StorageError),
    /// The snapshot file could not be opened, copied or synced.
    #[error("snapshot file {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    /// Read as a file before [`SnapshotFile::export`] wrote it.
    #[error("the snapshot is pinned but not written to a file yet")]
    NotExported,
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// A range of the state column family to pin, and one key to read from the pinned view.
pub(crate) struct PinRequest {
    pub store: Store,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub read_key: Vec<u8>,
    /// Where [`SnapshotFile::export`] writes the range.
    pub path: PathBuf,
}

/// Asks the pinning thread to write its view of the range to the file, answering when done.
type ExportRequest = oneshot::Sender<Result<(), SnapshotError>>;

/// A snapshot and where its bytes are.
#[derive(Debug)]
pub struct SnapshotFile {
    content: Content,
}

#[derive(Debug)]
enum Content {
    /// The range as of a view a parked thread holds; [`SnapshotFile::export`] writes it to `path`.
    /// Dropping the handle releases the view.
    Pinned { view: PinnedView, path: PathBuf },
    File {
        file: tokio::fs::File,
        path: PathBuf,
        /// Written here to be sent or received: removed when the handle is dropped unless
        /// [`SnapshotFile::keep`] claimed it.
        temporary: bool,
    },
}

/// The way to the thread holding a pinned view: one export request, then it ends.
struct PinnedView(Option<oneshot::Sender<ExportRequest>>);

impl std::fmt::Debug for PinnedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pinned view")
    }
}

impl SnapshotFile {
    /// Pins a view of `request`'s range on a thread of its own and reads `read_key` from it.
    /// The view stays pinned, and the thread parked, until the handle is exported or dropped.
    pub(crate) async fn pin(
        request: PinRequest,
    ) -> Result<(Option<Vec<u8>>, SnapshotFile), SnapshotError> {
        let (pinned, answer) = oneshot::channel();
        let PinRequest {
            store,
            start,
            end,
            read_key,
            path,
        } = request;
        let export_path = path.clone();
        spawn_low_priority(move || {
            let view = store.view();
            let read = match view.get(Cf::State, &read_key) {
                Ok(value) => value,
                Err(e) => {
                    let _ = pinned.send(Err(SnapshotError::Store(e)));
                    return;
                }
            };
            let (export, requested) = oneshot::channel::<ExportRequest>();
            if pinned.send(Ok((read, export))).is_err() {
                return;
            }
            // Parks until the handle is exported or dropped; the view lives until then.
            let Ok(reply) = requested.blocking_recv() else {
                return;
            };
            let written = view
                .export_range(Cf::State, &start, &end, &export_path)
                .map(|_| ())
                .map_err(SnapshotError::Store);
            let _ = reply.send(written);
        })?;
        let (read, export) = answer.await.map_err(|_| SnapshotError::Lost)??;
        Ok((
            read,
            SnapshotFile {
                content: Content::Pinned {
                    view: PinnedView(Some(export)),
                    path,
                },
            },
        ))
    }

    /// Opens an existing snapshot file for reading; the file stays when the handle is dropped.
    pub async fn open(path: &Path) -> Result<SnapshotFile, SnapshotError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(file_error(path))?;
        Ok(SnapshotFile {
            content: Content::File {
                file,
                path: path.to_path_buf(),
                temporary: false,
            },
        })
    }

    /// Creates (truncating) a snapshot file to receive into, removed when the handle is dropped
    /// unless [`SnapshotFile::keep`] claims it.
    pub async fn create(path: &Path) -> Result<SnapshotFile, SnapshotError> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
            .map_err(file_error(path))?;
        Ok(SnapshotFile {
            content: Content::File {
                file,
                path: path.to_path_buf(),
                temporary: true,
            },
        })
    }

    /// Where the file is, or will be once exported.
    pub fn path(&self) -> &Path {
        match &self.content {
            Content::Pinned { path, .. } | Content::File { path, .. } => path,
        }
    }

    /// True if this is a file (not a pinned view) in `dir`.
    pub fn is_file_in(&self, dir: &Path) -> bool {
        matches!(&self.content, Content::File { path, .. } if path.parent() == Some(dir))
    }

    /// Writes a pinned snapshot to its file (on the pinning thread, at the lowest CPU priority),
    /// which is removed when the handle is dropped. A file is left as it is.
    pub async fn export(&mut self) -> Result<(), SnapshotError> {
        let Content::Pinned { view, path } = &mut self.content else {
            return Ok(());
        };
        // A view serves one export: after a failed one the thread is gone.
        let export = view.0.take().ok_or(SnapshotError::Lost)?;
        let (reply, written) = oneshot::channel();
        export.send(reply).map_err(|_| SnapshotError::Lost)?;
        written.await.map_err(|_| SnapshotError::Lost)??;
        let path = path.clone();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(file_error(&path))?;
        self.content = Content::File {
            file,
            path,
            temporary: true,
        };
        Ok(())
    }

    /// Writes this snapshot to a new file at `path` (exporting a pinned one, copying a file),
    /// fsynced, and kept when the returned handle is dropped.
    pub async fn write_to(&mut self, path: &Path) -> Result<SnapshotFile, SnapshotError> {
        self.export().await?;
        tokio::fs::copy(self.path(), path)
            .await
            .map_err(file_error(path))?;
        let mut copy = SnapshotFile::open(path).await?;
        copy.sync().await?;
        Ok(copy)
    }

    /// Flushes and fsyncs everything written so far.
    async fn sync(&mut self) -> Result<(), SnapshotError> {
        use tokio::io::AsyncWriteExt;
        let Content::File { file, path, .. } = &mut self.content else {
            return Err(SnapshotError::NotExported);
        };
        file.flush().await.map_err(file_error(path))?;
        file.sync_all().await.map_err(file_error(path))
    }

    /// Ends a received file where the last chunk ended, then fsyncs it. A sender that restarts
    /// a stream under the same snapshot id writes from offset 0 again, over the first attempt's
    /// bytes; if its file is shorter, the first attempt's tail must not stay behind.
    pub async fn finish_receiving(&mut self) -> Result<(), SnapshotError> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let Content::File { file, path, .. } = &mut self.content else {
            return Err(SnapshotError::NotExported);
        };
        file.flush().await.map_err(file_error(path))?;
        let end = file.stream_position().await.map_err(file_error(path))?;
        file.set_len(end).await.map_err(file_error(path))?;
        self.sync().await
    }

    /// Keeps the file when the handle is dropped, and returns where it is.
    pub fn keep(mut self) -> Result<PathBuf, SnapshotError> {
        match &mut self.content {
            Content::File {
                temporary, path, ..
            } => {
                *temporary = false;
                Ok(path.clone())
            }
            Content::Pinned { .. } => Err(SnapshotError::NotExported),
        }
    }

    fn file(&mut self) -> io::Result<Pin<&mut tokio::fs::File>> {
        match &mut self.content {
            Content::File { file, .. } => Ok(Pin::new(file)),
            Content::Pinned { .. } => Err(io::Error::other(SnapshotError::NotExported)),
        }
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Content::File {
            path,
            temporary: true,
            ..
        } = &self.content
        {
            // A leftover is also removed when the group opens next.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19). A snapshot export
/// reads the group's whole state: on a busy node it must take only CPU that serving leaves
/// idle, or every request waits behind it (50-90 ms stalls in p99 latency on two cores).
pub(crate) fn spawn_low_priority(
    work: impl FnOnce() + Send + 'static,
) -> Result<(), SnapshotError> {
    std::thread::Builder::new()
        .name("keel-snapshot".into())
        .spawn(move || {
            // On Linux the nice value is per thread: this lowers only this one.
            // SAFETY: setpriority has no memory effects; a failure leaves the priority as is.
            let lowered = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
            if !lowered {
                tracing::debug!("could not lower the snapshot thread's priority");
            }
            work();
        })
        .map(drop)
        .map_err(SnapshotError::Spawn)
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.file() {
            Ok(file) => file.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.file() {
            Ok(file) => file.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file() {
            Ok(file) => file.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.file() {
            Ok(file) => file.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        self.file()?.start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.file() {
            Ok(file) => file.poll_complete(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_snapshot_thread_runs_at_the_lowest_priority() {
        // SAFETY: getpriority only reads the calling thread's nice value.
        let nice_here = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice_here();
        let (answer, answered) = oneshot::channel();
        spawn_low_priority(move || {
            let _ = answer.send(nice_here());
        })
        .expect("spawn");
        assert_eq!(answered.await.ok(), Some(19));
        assert_eq!(
            nice_here(),
            before,
            "the caller's thread keeps its priority"
        );
    }

    #[tokio::test]
    async fn a_stream_restarted_from_the_start_leaves_no_tail_of_the_first_attempt() {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("recv-0.sst");
        let mut file = SnapshotFile::create(&path).await.expect("create");
        file.write_all(b"first attempt").await.expect("write");
        file.seek(io::SeekFrom::Start(0)).await.expect("seek");
        file.write_all(b"second").await.expect("write");
        file.finish_receiving().await.expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
    }

    #[tokio::test]
    async fn a_pinned_snapshot_cannot_be_read_before_it_is_written_out() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("db"),
            &keel_storage::NodeIdentity {
                cluster_id: "c".to_string(),
                node_id: 1,
            },
        )
        .expect("open store");
        let path = dir.path().join("send-0.sst");
        let (read, mut snapshot) = SnapshotFile::pin(PinRequest {
            store,
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            read_key: b"a-key".to_vec(),
            path: path.clone(),
        })
        .await
        .expect("pin");
        assert_eq!(read, None);
        let mut bytes = Vec::new();
        assert!(snapshot.read_to_end(&mut bytes).await.is_err());
        snapshot.export().await.expect("export");
        assert!(path.exists());
        drop(snapshot);
        assert!(!path.exists(), "a written-out snapshot outlived its handle");
    }
}
