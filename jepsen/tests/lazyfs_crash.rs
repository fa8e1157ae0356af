//! lazyfs end to end: a real FUSE mount on temp dirs (needs root and /dev/fuse), written
//! through, crashed (daemon SIGKILLed, mount detached) and mounted again. What was fsynced is
//! there; what was only written is not, though the files themselves (metadata) are.
//!
//! Run with `cargo test -p keel-jepsen --test lazyfs_crash` (as root).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::FileExt,
    path::Path,
};

use keel_jepsen::lazyfs::{is_fuse_mount, LazyfsMount};

const REPRODUCE: &str = "cargo test -p keel-jepsen --test lazyfs_crash (as root)";

/// A mounted lazyfs on fresh temp dirs.
fn mounted(dir: &Path) -> LazyfsMount {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lazyfs tests mount a FUSE filesystem and must run as root; reproduce: {REPRODUCE}"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing (modprobe fuse); reproduce: {REPRODUCE}"
    );
    let mut mount = LazyfsMount::new(
        Path::new(env!("CARGO_BIN_EXE_keel-jepsen")),
        &dir.join("backing"),
        &dir.join("mount"),
        &dir.join("lazyfs.log"),
    );
    mount
        .start()
        .unwrap_or_else(|e| panic!("mounting lazyfs: {e:#}; reproduce: {REPRODUCE}"));
    mount
}

fn read(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .unwrap_or_else(|e| panic!("reading {}: {e}; reproduce: {REPRODUCE}", path.display()));
    bytes
}

#[test]
fn a_crash_keeps_fsynced_data_and_loses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut lazyfs = mounted(dir.path());
    let mount = dir.path().join("mount");
    std::fs::create_dir(mount.join("wal")).unwrap();

    // A writer that fsyncs, then writes more it does not fsync.
    let mut synced = File::create(mount.join("wal/synced.log")).unwrap();
    synced.write_all(b"acknowledged record 1\n").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b"unsynced record 2\n").unwrap();
    synced.write_at(b"ACK", 0).unwrap();
    // A writer that never fsyncs.
    let mut unsynced = File::create(mount.join("wal/unsynced.log")).unwrap();
    unsynced.write_all(b"never synced\n").unwrap();
    drop((synced, unsynced));
    // The rename pattern (write, fsync, rename) is durable; the renamed file's later,
    // unsynced overwrite is not.
    let mut current = File::create(mount.join("CURRENT.tmp")).unwrap();
    current.write_all(b"MANIFEST-000001\n").unwrap();
    current.sync_all().unwrap();
    std::fs::rename(mount.join("CURRENT.tmp"), mount.join("CURRENT")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(mount.join("CURRENT"))
        .and_then(|file| file.write_all_at(b"MANIFEST-000002\n", 0))
        .unwrap();

    // Before the crash the writers read what they wrote, as through a page cache.
    assert_eq!(
        read(&mount.join("wal/synced.log")),
        b"ACKnowledged record 1\nunsynced record 2\n"
    );
    assert_eq!(read(&mount.join("wal/unsynced.log")), b"never synced\n");
    assert_eq!(read(&mount.join("CURRENT")), b"MANIFEST-000002\n");
    assert_eq!(
        std::fs::metadata(mount.join("wal/unsynced.log"))
            .unwrap()
            .len(),
        13,
        "sizes include pending writes; reproduce: {REPRODUCE}"
    );
    assert_eq!(
        lazyfs.unsynced_files(),
        vec![
            ("wal/synced.log".into(), 18),
            ("wal/unsynced.log".into(), 13)
        ],
        "the appends not fsynced, by size; reproduce: {REPRODUCE}"
    );

    lazyfs.crash();
    assert!(
        !is_fuse_mount(&mount),
        "the crashed mount is still attached"
    );
    lazyfs.start().unwrap();

    assert_eq!(
        read(&mount.join("wal/synced.log")),
        b"acknowledged record 1\n",
        "fsynced data must survive the crash, later writes must not; reproduce: {REPRODUCE}"
    );
    assert_eq!(
        read(&mount.join("wal/unsynced.log")),
        b"",
        "unsynced data must be lost (the file, metadata, stays); reproduce: {REPRODUCE}"
    );
    assert_eq!(read(&mount.join("CURRENT")), b"MANIFEST-000001\n");
    assert!(!mount.join("CURRENT.tmp").exists());
}

#[test]
fn truncate_and_unlink_apply_at_once_and_drop_pending_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut lazyfs = mounted(dir.path());
    let mount = dir.path().join("mount");

    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(mount.join("data"))
        .unwrap();
    file.write_all_at(b"0123456789", 0).unwrap();
    file.sync_all().unwrap();
    file.write_all_at(b"abcdefghij", 10).unwrap();
    file.set_len(15).unwrap();
    assert_eq!(read(&mount.join("data")), b"0123456789abcde");
    file.set_len(4).unwrap();
    file.write_all_at(b"XY", 6).unwrap();
    assert_eq!(read(&mount.join("data")), b"0123\0\0XY");
    drop(file);

    std::fs::write(mount.join("gone"), b"pending").unwrap();
    std::fs::remove_file(mount.join("gone")).unwrap();
    std::fs::write(mount.join("gone"), b"new").unwrap();
    assert_eq!(read(&mount.join("gone")), b"new");

    lazyfs.crash();
    lazyfs.start().unwrap();
    // The truncate to 4 is durable; the write after it is not.
    assert_eq!(
        read(&mount.join("data")),
        b"0123",
        "truncate is applied at once; reproduce: {REPRODUCE}"
    );
    assert_eq!(read(&mount.join("gone")), b"");
}
