//! The lazyfs FUSE filesystem: passes everything through to a backing directory except file
//! data, which it holds in memory (per backing inode, see `pending.rs`) until that file is
//! fsynced. Killing the daemon therefore loses exactly the writes nobody fsynced, as a machine
//! crash loses the page cache. The semantics are listed on [`LazyFs`].

use std::{
    collections::{hash_map::Entry, HashMap},
    ffi::{CString, OsStr, OsString},
    fs::{File, OpenOptions},
    io,
    os::{
        fd::AsRawFd,
        unix::{
            ffi::OsStrExt,
            fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt},
        },
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::pending::PendingWrites;

/// How long the kernel may cache names and attributes. Nothing but this daemon changes the
/// backing directory while it is mounted, so caching is safe.
const TTL: Duration = Duration::from_secs(1);

/// A backing inode: (device, inode number).
type BackingKey = (u64, u64);

/// The filesystem. Semantics:
/// - File data written through the mount is pending (in this process's memory only) until an
///   fsync or fdatasync of that file, through any of its handles, writes it to the backing
///   file and fsyncs that. close() does not sync; sync(2)/syncfs(2) are not forwarded by FUSE,
///   so they do not either. Reads and sizes (getattr) see the pending data.
/// - Pending data belongs to the backing inode: it follows renames and hard links, and is
///   dropped when the inode's last link is gone (unlink, or rename over it) and no handle is
///   open.
/// - Everything else (create, mkdir, unlink, rename, link, symlink, chmod, truncate, fallocate)
///   is applied to the backing directory at once: metadata survives a crash even unsynced. A
///   truncate trims pending data past the new size.
/// - Pending data above `max_pending_bytes` in total: the file just written is written back
///   (not fsynced), as the kernel writes dirty pages back under memory pressure, so it then
///   survives a crash.
/// - On a clean unmount every pending write is written back (a clean shutdown).
pub struct LazyFs {
    max_pending_bytes: usize,
    state: Mutex<State>,
}

struct State {
    inodes: HashMap<u64, Inode>,
    inode_of: HashMap<BackingKey, u64>,
    next_inode: u64,
    handles: HashMap<u64, Arc<FileHandleState>>,
    directories: HashMap<u64, Vec<DirectoryEntry>>,
    next_handle: u64,
    pending: HashMap<BackingKey, PendingFile>,
    pending_bytes: usize,
}

/// An inode the kernel knows: an `O_PATH` descriptor of the backing file and the kernel's
/// lookup count.
struct Inode {
    path_fd: File,
    key: BackingKey,
    lookups: u64,
}

/// An open file: the backing file opened read-write.
struct FileHandleState {
    file: File,
    key: BackingKey,
}

/// One file's pending writes and a descriptor to write them back through (it also keeps the
/// backing inode alive, so its number is not reused while data is pending).
struct PendingFile {
    file: File,
    writes: PendingWrites,
}

struct DirectoryEntry {
    backing_inode: u64,
    kind: FileType,
    name: OsString,
}

impl LazyFs {
    /// A filesystem over `backing` (an existing directory).
    pub fn new(backing: &Path, max_pending_bytes: usize) -> io::Result<LazyFs> {
        let root = open_path(backing)?;
        let key = key_of(&root.metadata()?);
        let mut inodes = HashMap::new();
        inodes.insert(
            INodeNo::ROOT.0,
            Inode {
                path_fd: root,
                key,
                lookups: 1,
            },
        );
        Ok(LazyFs {
            max_pending_bytes,
            state: Mutex::new(State {
                inodes,
                inode_of: HashMap::from([(key, INodeNo::ROOT.0)]),
                next_inode: INodeNo::ROOT.0 + 1,
                handles: HashMap::new(),
                directories: HashMap::new(),
                next_handle: 1,
                pending: HashMap::new(),
                pending_bytes: 0,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// `/proc/self/fd/N` of inode `ino`: a path to the backing file that survives renames.
    fn path(&self, ino: INodeNo) -> io::Result<PathBuf> {
        let inode = self.inodes.get(&ino.0).ok_or_else(stale)?;
        Ok(fd_path(&inode.path_fd))
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> io::Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// The attributes of inode `ino`, with the size its pending writes give it.
    fn attr(&self, ino: INodeNo) -> io::Result<FileAttr> {
        let inode = self.inodes.get(&ino.0).ok_or_else(stale)?;
        let metadata = inode.path_fd.metadata()?;
        Ok(self.attr_of(ino, &metadata))
    }

    fn attr_of(&self, ino: INodeNo, metadata: &std::fs::Metadata) -> FileAttr {
        let size = self
            .pending
            .get(&key_of(metadata))
            .map_or(metadata.size(), |p| p.writes.size(metadata.size()));
        let time = |secs: i64, nanos: i64| {
            let since = Duration::new(secs.unsigned_abs(), u32::try_from(nanos).unwrap_or(0));
            if secs >= 0 {
                UNIX_EPOCH + since
            } else {
                UNIX_EPOCH - since
            }
        };
        FileAttr {
            ino,
            size,
            blocks: metadata.blocks().max(size.div_ceil(512)),
            atime: time(metadata.atime(), metadata.atime_nsec()),
            mtime: time(metadata.mtime(), metadata.mtime_nsec()),
            ctime: time(metadata.ctime(), metadata.ctime_nsec()),
            crtime: time(metadata.ctime(), metadata.ctime_nsec()),
            kind: kind_of(metadata.mode()),
            perm: (metadata.mode() & 0o7777) as u16,
            nlink: u32::try_from(metadata.nlink()).unwrap_or(u32::MAX),
            uid: metadata.uid(),
            gid: metadata.gid(),
            rdev: u32::try_from(metadata.rdev()).unwrap_or(0),
            blksize: u32::try_from(metadata.blksize()).unwrap_or(4096),
            flags: 0,
        }
    }

    /// Looks `name` up in `parent`, counting one kernel lookup of the inode found.
    fn lookup(&mut self, parent: INodeNo, name: &OsStr) -> io::Result<FileAttr> {
        let path_fd = open_path(&self.child(parent, name)?)?;
        let metadata = path_fd.metadata()?;
        let key = key_of(&metadata);
        let ino = match self.inode_of.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next_inode;
                self.next_inode += 1;
                self.inode_of.insert(key, ino);
                self.inodes.insert(
                    ino,
                    Inode {
                        path_fd,
                        key,
                        lookups: 0,
                    },
                );
                ino
            }
        };
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
        Ok(self.attr_of(INodeNo(ino), &metadata))
    }

    fn forget(&mut self, ino: INodeNo, lookups: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&ino.0) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(lookups);
        if inode.lookups == 0 {
            let key = inode.key;
            self.inodes.remove(&ino.0);
            self.inode_of.remove(&key);
        }
    }

    /// A handle number not given out before (files and directories share the numbering).
    fn new_handle(&mut self) -> u64 {
        let fh = self.next_handle;
        self.next_handle += 1;
        fh
    }

    fn open_handle(&mut self, file: File, key: BackingKey) -> FileHandle {
        let fh = self.new_handle();
        self.handles
            .insert(fh, Arc::new(FileHandleState { file, key }));
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> io::Result<Arc<FileHandleState>> {
        self.handles
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Records a write through `handle`; past the memory bound, writes this file back.
    fn write(
        &mut self,
        handle: &FileHandleState,
        offset: u64,
        data: &[u8],
        max_pending_bytes: usize,
    ) -> io::Result<()> {
        let pending = match self.pending.entry(handle.key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(PendingFile {
                file: handle.file.try_clone()?,
                writes: PendingWrites::default(),
            }),
        };
        let before = pending.writes.bytes();
        pending.writes.write(offset, data);
        self.pending_bytes = self.pending_bytes - before + pending.writes.bytes();
        if self.pending_bytes > max_pending_bytes {
            self.write_back(handle.key)?;
        }
        Ok(())
    }

    /// Writes the pending data of `key` to the backing file (no fsync) and forgets it.
    fn write_back(&mut self, key: BackingKey) -> io::Result<()> {
        let Some(mut pending) = self.pending.remove(&key) else {
            return Ok(());
        };
        self.pending_bytes -= pending.writes.bytes();
        for (offset, bytes) in pending.writes.take() {
            pending.file.write_all_at(&bytes, offset)?;
        }
        Ok(())
    }

    fn read(&self, handle: &FileHandleState, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let backing_size = handle.file.metadata()?.size();
        let read_backing = |buffer: &mut [u8]| handle.file.read_exact_at(buffer, offset);
        match self.pending.get(&handle.key) {
            Some(pending) => pending.writes.read(offset, len, backing_size, read_backing),
            None => PendingWrites::default().read(offset, len, backing_size, read_backing),
        }
    }

    /// Sets the backing file's size at once and trims pending data past it.
    fn truncate(&mut self, path: &Path, size: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(size)?;
        let key = key_of(&file.metadata()?);
        if let Some(pending) = self.pending.get_mut(&key) {
            let before = pending.writes.bytes();
            pending.writes.truncate(size);
            self.pending_bytes = self.pending_bytes - before + pending.writes.bytes();
        }
        Ok(())
    }

    /// Drops the pending data of `key` if its inode has no link left and no open handle: no
    /// name can reach that data any more, and the inode number may be reused.
    fn drop_pending_if_unlinked(&mut self, key: BackingKey) {
        let unlinked = self
            .pending
            .get(&key)
            .and_then(|p| p.file.metadata().ok())
            .is_some_and(|m| m.nlink() == 0);
        let open = self.handles.values().any(|h| h.key == key);
        if unlinked && !open {
            if let Some(pending) = self.pending.remove(&key) {
                self.pending_bytes -= pending.writes.bytes();
            }
        }
    }

    /// The backing inode `name` in `parent` names now, if any.
    fn key_at(&self, parent: INodeNo, name: &OsStr) -> Option<BackingKey> {
        let path = self.child(parent, name).ok()?;
        std::fs::symlink_metadata(path).ok().map(|m| key_of(&m))
    }
}

impl Filesystem for LazyFs {
    fn destroy(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<BackingKey> = state.pending.keys().copied().collect();
        for key in keys {
            if let Err(error) = state.write_back(key) {
                tracing::error!(?key, %error, "lazyfs: writing pending data back at unmount");
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry_reply(reply, self.state().lookup(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.state().forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr_reply(reply, self.state().attr(ino));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let outcome = (|| -> io::Result<_> {
            let path = state.path(ino)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&path, uid, gid)?;
            }
            if let Some(size) = size {
                state.truncate(&path, size)?;
            }
            if atime.is_some() || mtime.is_some() {
                set_times(&path, atime, mtime)?;
            }
            state.attr(ino)
        })();
        attr_reply(reply, outcome);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.state();
        let outcome = state
            .inodes
            .get(&ino.0)
            .ok_or_else(stale)
            .and_then(|inode| read_link_of(&inode.path_fd));
        data_reply(reply, outcome);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let outcome = state.child(parent, name).and_then(|path| {
            let path = c_path(&path)?;
            // SAFETY: mknod(2) on a NUL-terminated path we own.
            let result =
                unsafe { libc::mknod(path.as_ptr(), mode & !umask, libc::dev_t::from(rdev)) };
            if result != 0 {
                return Err(io::Error::last_os_error());
            }
            state.lookup(parent, name)
        });
        entry_reply(reply, outcome);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let outcome = state.child(parent, name).and_then(|path| {
            std::fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(path)?;
            state.lookup(parent, name)
        });
        entry_reply(reply, outcome);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let key = state.key_at(parent, name);
        let outcome = state
            .child(parent, name)
            .and_then(std::fs::remove_file)
            .map(|()| {
                if let Some(key) = key {
                    state.drop_pending_if_unlinked(key);
                }
            });
        empty_reply(reply, outcome);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let state = self.state();
        empty_reply(
            reply,
            state.child(parent, name).and_then(std::fs::remove_dir),
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let outcome = state.child(parent, link_name).and_then(|path| {
            std::os::unix::fs::symlink(target, path)?;
            state.lookup(parent, link_name)
        });
        entry_reply(reply, outcome);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let replaced = state.key_at(newparent, newname);
        let outcome = (|| -> io::Result<_> {
            let from = c_path(&state.child(parent, name)?)?;
            let to = c_path(&state.child(newparent, newname)?)?;
            // SAFETY: renameat2(2) on NUL-terminated paths we own.
            let result = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    flags.bits(),
                )
            };
            if result != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(key) = replaced {
                state.drop_pending_if_unlinked(key);
            }
            Ok(())
        })();
        empty_reply(reply, outcome);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let outcome = (|| -> io::Result<_> {
            let from = c_path(&state.path(ino)?)?;
            let to = c_path(&state.child(newparent, newname)?)?;
            // SAFETY: linkat(2) on NUL-terminated paths we own; AT_SYMLINK_FOLLOW resolves the
            // /proc/self/fd link to the inode itself.
            let result = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if result != 0 {
                return Err(io::Error::last_os_error());
            }
            state.lookup(newparent, newname)
        })();
        entry_reply(reply, outcome);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let outcome = (|| -> io::Result<_> {
            let path = state.path(ino)?;
            let file = open_backing(&path)?;
            let key = key_of(&file.metadata()?);
            Ok(state.open_handle(file, key))
        })();
        opened_reply(reply, outcome);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let outcome = (|| -> io::Result<_> {
            let path = state.child(parent, name)?;
            let mut options = OpenOptions::new();
            options.read(true).write(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            let file = options.open(&path)?;
            if flags & libc::O_TRUNC != 0 {
                state.truncate(&path, 0)?;
            }
            let key = key_of(&file.metadata()?);
            let attr = state.lookup(parent, name)?;
            Ok((attr, state.open_handle(file, key)))
        })();
        match outcome {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(error) => reply.error(Errno::from(error)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        let outcome = state
            .handle(fh)
            .and_then(|handle| state.read(&handle, offset, size as usize));
        data_reply(reply, outcome);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        let outcome = state
            .handle(fh)
            .and_then(|handle| state.write(&handle, offset, data, self.max_pending_bytes));
        match outcome {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(error) => reply.error(error.into()),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if let Some(handle) = state.handles.remove(&fh.0) {
            state.drop_pending_if_unlinked(handle.key);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The pending data goes to the backing file under the lock (so no read sees neither it
        // nor the file's new bytes); the fsync itself runs without it.
        let outcome = (|| -> io::Result<_> {
            let handle = {
                let mut state = self.state();
                let handle = state.handle(fh)?;
                state.write_back(handle.key)?;
                handle
            };
            if datasync {
                handle.file.sync_data()
            } else {
                handle.file.sync_all()
            }
        })();
        empty_reply(reply, outcome);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let outcome = (|| -> io::Result<_> {
            let mut entries = vec![
                DirectoryEntry {
                    backing_inode: ino.0,
                    kind: FileType::Directory,
                    name: ".".into(),
                },
                DirectoryEntry {
                    backing_inode: ino.0,
                    kind: FileType::Directory,
                    name: "..".into(),
                },
            ];
            for entry in std::fs::read_dir(state.path(ino)?)? {
                let entry = entry?;
                let file_type = entry.file_type()?;
                entries.push(DirectoryEntry {
                    backing_inode: std::os::unix::fs::DirEntryExt::ino(&entry),
                    kind: FileType::from_std(file_type).unwrap_or(FileType::RegularFile),
                    name: entry.file_name(),
                });
            }
            let fh = state.new_handle();
            state.directories.insert(fh, entries);
            Ok(FileHandle(fh))
        })();
        opened_reply(reply, outcome);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let Some(entries) = state.directories.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in entries.iter().enumerate().skip(skip) {
            let full = reply.add(
                INodeNo(entry.backing_inode.max(1)),
                index as u64 + 1,
                entry.kind,
                &entry.name,
            );
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state().directories.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory entries are durable as soon as they are made.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let outcome = self.state().path(ino).and_then(|path| {
            let path = c_path(&path)?;
            // SAFETY: an all-zero statvfs is a valid value to be overwritten.
            let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: statvfs(3) with a NUL-terminated path and a statvfs we own.
            if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stats)
        });
        match outcome {
            Ok(stats) => reply.statfs(
                stats.f_blocks,
                stats.f_bfree,
                stats.f_bavail,
                stats.f_files,
                stats.f_ffree,
                u32::try_from(stats.f_bsize).unwrap_or(4096),
                u32::try_from(stats.f_namemax).unwrap_or(255),
                u32::try_from(stats.f_frsize).unwrap_or(4096),
            ),
            Err(error) => reply.error(error.into()),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The daemon and everything using the mount run as root.
        empty_reply(reply, self.state().path(ino).map(|_| ()));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Only allocation (mode 0 or KEEP_SIZE): it changes no byte a reader sees. Punching or
        // zeroing ranges would have to be applied to pending data too.
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            reply.error(Errno::from_i32(libc::EOPNOTSUPP));
            return;
        }
        let outcome = self.state().handle(fh).and_then(|handle| {
            let offset = libc::off_t::try_from(offset).map_err(|_| invalid())?;
            let length = libc::off_t::try_from(length).map_err(|_| invalid())?;
            // SAFETY: fallocate(2) on a descriptor the handle owns.
            if unsafe { libc::fallocate(handle.file.as_raw_fd(), mode, offset, length) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
        empty_reply(reply, outcome);
    }
}

fn entry_reply(reply: ReplyEntry, outcome: io::Result<FileAttr>) {
    match outcome {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(error) => reply.error(error.into()),
    }
}

fn opened_reply(reply: ReplyOpen, outcome: io::Result<FileHandle>) {
    match outcome {
        // No FOPEN_KEEP_CACHE: the kernel drops its cached pages of a file at each open, so
        // reads come here and see the pending data as it is.
        Ok(fh) => reply.opened(fh, FopenFlags::empty()),
        Err(error) => reply.error(error.into()),
    }
}

fn attr_reply(reply: ReplyAttr, outcome: io::Result<FileAttr>) {
    match outcome {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(error) => reply.error(error.into()),
    }
}

fn data_reply(reply: ReplyData, outcome: io::Result<Vec<u8>>) {
    match outcome {
        Ok(data) => reply.data(&data),
        Err(error) => reply.error(error.into()),
    }
}

fn empty_reply(reply: ReplyEmpty, outcome: io::Result<()>) {
    match outcome {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(error.into()),
    }
}

fn stale() -> io::Error {
    io::Error::from_raw_os_error(libc::ESTALE)
}

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

fn key_of(metadata: &std::fs::Metadata) -> BackingKey {
    (metadata.dev(), metadata.ino())
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// An `O_PATH` descriptor of `path` itself (a symlink is not followed).
fn open_path(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
}

/// The backing file opened read-write whatever the caller asked: an fsync through a read-only
/// handle must still write the pending data back.
fn open_backing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| invalid())
}

fn read_link_of(path_fd: &File) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat(2) with an empty path reads the link the O_PATH descriptor refers to,
    // into a buffer of the length given.
    let len = unsafe {
        libc::readlinkat(
            path_fd.as_raw_fd(),
            c"".as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    buffer.truncate(len);
    Ok(buffer)
}

fn set_times(path: &Path, atime: Option<TimeOrNow>, mtime: Option<TimeOrNow>) -> io::Result<()> {
    let spec = |time: Option<TimeOrNow>| match time {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(time)) => {
            let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: libc::time_t::try_from(since.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(since.subsec_nanos() as i32),
            }
        }
    };
    let times = [spec(atime), spec(mtime)];
    let path = c_path(path)?;
    // SAFETY: utimensat(2) with a NUL-terminated path and two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Run with `cargo test -p keel-jepsen lazyfs::filesystem`.
    use super::*;

    #[test]
    fn past_the_memory_bound_the_file_written_is_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"").unwrap();
        let lazyfs = LazyFs::new(dir.path(), 8).unwrap();
        let mut state = lazyfs.state();
        let file = open_backing(&path).unwrap();
        let key = key_of(&file.metadata().unwrap());
        let fh = state.open_handle(file, key);
        let handle = state.handle(fh).unwrap();

        state.write(&handle, 0, b"1234", 8).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"", "4 bytes stay pending");
        assert_eq!(state.read(&handle, 0, 100).unwrap(), b"1234");
        state.write(&handle, 4, b"56789", 8).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"123456789",
            "9 bytes pending are past the bound of 8: written back"
        );
        assert_eq!(state.pending_bytes, 0);
        assert!(state.pending.is_empty());
    }
}
