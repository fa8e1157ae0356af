//! lazyfs: a FUSE filesystem that forgets every write not fsynced when its daemon is killed
//! (`keel-jepsen lazyfs`), and [`LazyfsMount`], which runs that daemon over a node's data dir
//! for the `crash-unsynced` nemesis: kill it, detach its mount, mount a fresh one.

mod filesystem;
pub mod pending;

use std::{
    ffi::CString,
    fs::OpenOptions,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub use filesystem::LazyFs;

/// `statfs` f_type of a FUSE mount.
const FUSE_SUPER_MAGIC: libc::__fsword_t = 0x6573_5546;
/// How long a new daemon may take to mount.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on pending data, in MiB (`--max-pending-mib`).
pub const DEFAULT_MAX_PENDING_MIB: usize = 256;

/// Mounts lazyfs over `backing` at `mount` and serves it until it is unmounted (or the process
/// is killed: then the mount must be detached with `umount -l`).
pub fn serve(backing: &Path, mount: &Path, max_pending_bytes: usize) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: lazyfs needs the fuse kernel module (modprobe fuse)");
    }
    let filesystem = LazyFs::new(backing, max_pending_bytes)
        .with_context(|| format!("opening the backing dir {}", backing.display()))?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("lazyfs:{}", backing.display())),
        fuser::MountOption::Subtype("lazyfs".to_string()),
    ];
    // Two threads: one request may wait on a backing fsync while another is served.
    config.n_threads = Some(2);
    fuser::mount(filesystem, mount, &config)
        .with_context(|| format!("mounting lazyfs at {}", mount.display()))
}

/// A lazyfs daemon (a `keel-jepsen lazyfs` child process) serving `backing` at `mount`.
pub struct LazyfsMount {
    /// The keel-jepsen binary (it runs the daemon).
    program: PathBuf,
    backing: PathBuf,
    mount: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
}

impl LazyfsMount {
    /// Not mounted yet: [`LazyfsMount::start`] mounts. The daemon's output goes to `log`.
    pub fn new(program: &Path, backing: &Path, mount: &Path, log: &Path) -> LazyfsMount {
        LazyfsMount {
            program: program.to_path_buf(),
            backing: backing.to_path_buf(),
            mount: mount.to_path_buf(),
            log: log.to_path_buf(),
            daemon: None,
        }
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Starts a daemon, unless one runs, and waits until its mount serves. A daemon that
    /// exited on its own is an error (a lazyfs bug: its mount answered ENOTCONN since).
    pub fn start(&mut self) -> Result<()> {
        if let Some(daemon) = self.daemon.as_mut() {
            return match daemon.try_wait()? {
                None => Ok(()),
                Some(status) => bail!(
                    "the lazyfs daemon of {} exited on its own ({status}); see {}",
                    self.mount.display(),
                    self.log.display()
                ),
            };
        }
        for dir in [&self.backing, &self.mount] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let daemon = Command::new(&self.program)
            .arg("lazyfs")
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mount")
            .arg(&self.mount)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} lazyfs", self.program.display()))?;
        self.daemon = Some(daemon);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if is_fuse_mount(&self.mount) {
                return Ok(());
            }
            let exited = match self.daemon.as_mut() {
                Some(daemon) => daemon.try_wait()?,
                None => None,
            };
            if exited.is_some() || Instant::now() > deadline {
                self.crash();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!(
                    "lazyfs did not mount {} within {MOUNT_TIMEOUT:?} ({}): {}",
                    self.mount.display(),
                    exited.map_or("still running".to_string(), |s| s.to_string()),
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The files (relative to the mount) larger through the mount than in the backing dir, by
    /// how much, largest first: what a crash now would lose, as far as sizes show it (appends;
    /// overwrites in place are not counted).
    pub fn unsynced_files(&self) -> Vec<(PathBuf, u64)> {
        let mut files = Vec::new();
        sizes_beyond(&self.mount, &self.backing, Path::new(""), &mut files);
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        files
    }

    /// SIGKILLs the daemon (every write not fsynced is gone with it) and detaches its mount;
    /// whoever still has files open there gets ENOTCONN.
    pub fn crash(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill().ok();
            daemon.wait().ok();
        }
        if let Err(error) = detach(&self.mount) {
            tracing::warn!(mount = %self.mount.display(), %error, "detaching a lazyfs mount");
        }
    }
}

impl Drop for LazyfsMount {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Adds to `files` each file under `upper` larger than the same path under `lower`, named
/// `relative`/name, with the difference (unreadable entries are skipped).
fn sizes_beyond(upper: &Path, lower: &Path, relative: &Path, files: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(upper) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let (lower, relative) = (lower.join(&name), relative.join(&name));
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => sizes_beyond(&entry.path(), &lower, &relative, files),
            Ok(kind) if kind.is_file() => {
                let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
                let beyond = size(&entry.path()).saturating_sub(size(&lower));
                if beyond > 0 {
                    files.push((relative, beyond));
                }
            }
            _ => {}
        }
    }
}

/// Whether `path` is the root of a live FUSE mount.
pub fn is_fuse_mount(path: &Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid value to be overwritten.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) with a NUL-terminated path and a statfs we own.
    let result = unsafe { libc::statfs(path.as_ptr(), &mut stats) };
    result == 0 && stats.f_type == FUSE_SUPER_MAGIC
}

/// Lazily unmounts every mount stacked at `path` (`umount -l`); nothing mounted there is fine.
pub fn detach(path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: umount2(2) with a NUL-terminated path.
        if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
            let error = io::Error::last_os_error();
            // EINVAL: not a mount point (any more); ENOENT: no such path.
            return match error.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(error),
            };
        }
    }
}
