//! The `keel node` processes under test: each runs in its slot's network namespace, with its own
//! data dir and log in the report dir, optionally under libfaketime with a clock offset, and
//! optionally with its data dir mounted through lazyfs. The nemesis kills, pauses, skews,
//! crashes and replaces them through this module; membership changes go through `keel cluster`,
//! as an operator's would.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};

use crate::{lazyfs::LazyfsMount, topology::Topology};

/// The port every node listens on, in its own namespace.
pub const PORT: u16 = 7233;
/// The cluster id the nodes carry.
const CLUSTER_ID: &str = "jepsen";
/// Where Debian's libfaketime package puts the library.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

/// One node: its identity, where it runs and, while it runs, its process.
pub struct Node {
    pub id: u64,
    pub slot: usize,
    pub address: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// Started with `--join` (added after the cluster formed).
    joined: bool,
    /// Wall-clock offset given to libfaketime, in ms (0: the real clock).
    pub clock_offset_ms: i64,
    child: Option<Child>,
    paused: bool,
    /// The lazyfs daemon its data dir is mounted through, once started (dropped after `child`,
    /// so the node is killed before its mount goes).
    lazyfs: Option<LazyfsMount>,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .and_then(|pid| i32::try_from(pid).ok())
    }
}

/// The cluster: its members (by id) and the slots free for a replacement.
pub struct Cluster {
    binary: PathBuf,
    /// Data dirs go under it.
    data_root: PathBuf,
    /// Logs go in it (the report dir: they are kept).
    log_dir: PathBuf,
    shards: u64,
    topology: Arc<Topology>,
    /// Current members, by node id.
    pub nodes: BTreeMap<u64, Node>,
    /// Members of the first formation, as `--peer` gives them to every node.
    initial_peers: String,
    /// Slots (1-based) of the current members, shared with the clients, which talk only to
    /// members (as a user's configuration would).
    pub member_slots: Arc<RwLock<Vec<usize>>>,
    next_id: u64,
    /// The keel-jepsen binary that serves lazyfs, when data dirs are mounted through it.
    lazyfs_program: Option<PathBuf>,
}

impl Cluster {
    /// `members` nodes on slots 1..=members (not started); further slots stay free for
    /// replacements. Data dirs go under `data_root`, logs (`node-ID.log`) in `log_dir`.
    pub fn new(
        binary: &Path,
        data_root: &Path,
        log_dir: &Path,
        shards: u64,
        members: usize,
        topology: Arc<Topology>,
    ) -> Cluster {
        let mut nodes = BTreeMap::new();
        for slot in 1..=members {
            let id = slot as u64;
            nodes.insert(
                id,
                Cluster::node(data_root, log_dir, &topology, id, slot, false),
            );
        }
        let initial_peers = nodes
            .values()
            .map(|node| format!("{}={}", node.id, node.address))
            .collect::<Vec<_>>()
            .join(",");
        let member_slots = Arc::new(RwLock::new((1..=members).collect()));
        Cluster {
            member_slots,
            binary: binary.to_path_buf(),
            data_root: data_root.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            shards,
            topology,
            nodes,
            initial_peers,
            next_id: members as u64 + 1,
            lazyfs_program: None,
        }
    }

    /// Mounts every node's data dir through lazyfs (served by `program`, a keel-jepsen binary)
    /// from its next start on: files stay in `node-ID.backing`, the node sees them at its data
    /// dir, and [`Cluster::crash_unsynced`] can drop what it did not fsync.
    pub fn mount_through_lazyfs(&mut self, program: &Path) {
        self.lazyfs_program = Some(program.to_path_buf());
    }

    fn node(
        data_root: &Path,
        log_dir: &Path,
        topology: &Topology,
        id: u64,
        slot: usize,
        joined: bool,
    ) -> Node {
        Node {
            id,
            slot,
            address: format!("{}:{PORT}", topology.node_ip(slot)),
            data_dir: data_root.join(format!("node-{id}")),
            log: log_dir.join(format!("node-{id}.log")),
            joined,
            clock_offset_ms: 0,
            child: None,
            paused: false,
            lazyfs: None,
        }
    }

    /// Client addresses of the current members.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.address.clone()).collect()
    }

    /// Every address a member may ever have (one per slot), for clients that outlive
    /// membership changes.
    pub fn slot_addresses(&self) -> Vec<String> {
        (1..=self.topology.slots())
            .map(|slot| format!("{}:{PORT}", self.topology.node_ip(slot)))
            .collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn member(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("node {id} is not a member"))
    }

    /// Starts node `id` if it is not running.
    pub fn start(&mut self, id: u64) -> Result<()> {
        let binary = self.binary.clone();
        let shards = self.shards;
        let namespace = {
            let node = self.member(id)?;
            if node.child.is_some() {
                return Ok(());
            }
            node.slot
        };
        let namespace = self.topology.node_namespace(namespace);
        let peers = self.initial_peers.clone();
        let lazyfs_program = self.lazyfs_program.clone();
        let log_dir = self.log_dir.clone();
        let node = self.member(id)?;
        if let Some(program) = lazyfs_program {
            let backing = node.data_dir.with_extension("backing");
            let log = log_dir.join(format!("node-{id}-lazyfs.log"));
            node.lazyfs
                .get_or_insert_with(|| LazyfsMount::new(&program, &backing, &node.data_dir, &log))
                .start()
                .with_context(|| format!("mounting node {id}'s data dir through lazyfs"))?;
        }
        let peers = if node.joined {
            format!("{peers},{}={}", node.id, node.address)
        } else {
            peers
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &namespace])
            .arg(&binary)
            .args([
                "node".to_string(),
                format!("--node-id={}", node.id),
                format!("--cluster-id={CLUSTER_ID}"),
                format!("--listen={}", node.address),
                format!("--peer={peers}"),
                format!("--data-dir={}", node.data_dir.display()),
                format!("--shards={shards}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if node.joined {
            command.arg("--join");
        }
        if node.clock_offset_ms != 0 {
            let offset = node.clock_offset_ms;
            let sign = if offset < 0 { '-' } else { '+' };
            let magnitude = offset.unsigned_abs();
            command
                .env("LD_PRELOAD", libfaketime()?)
                .env(
                    "FAKETIME",
                    format!("{sign}{}.{:03}s", magnitude / 1000, magnitude % 1000),
                )
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting node {id} ({})", binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs node `id` and waits for it to exit.
    pub async fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.member(id)?;
        if let Some(mut child) = node.child.take() {
            child.start_kill().ok();
            child.wait().await.ok();
        }
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs node `id` and its lazyfs daemon, losing every write the node had not fsynced,
    /// and detaches the mount ([`Cluster::start`] mounts a fresh daemon). Answers the node's
    /// files that lost bytes, by size (see [`LazyfsMount::unsynced_files`]); none and a plain
    /// kill when the data dirs are not mounted through lazyfs.
    pub async fn crash_unsynced(&mut self, id: u64) -> Result<Option<Vec<(PathBuf, u64)>>> {
        self.kill(id).await?;
        Ok(self.member(id)?.lazyfs.as_mut().map(|lazyfs| {
            let lost = lazyfs.unsynced_files();
            lazyfs.crash();
            lost
        }))
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self.member(id)?;
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGSTOP)?;
            node.paused = true;
        }
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.member(id)?;
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGCONT)?;
        }
        node.paused = false;
        Ok(())
    }

    /// Restarts node `id` with its wall clock `offset_ms` off (0: the real clock).
    pub async fn restart_with_clock(&mut self, id: u64, offset_ms: i64) -> Result<()> {
        self.kill(id).await?;
        self.member(id)?.clock_offset_ms = offset_ms;
        self.start(id)
    }

    /// Replaces member `id` with a fresh node in a free slot, as an operator replaces a machine:
    /// the old one is killed and removed from every group (`keel cluster remove-node`), its data
    /// dir wiped; a new node id starts with `--join` and is added (`keel cluster add-node`).
    /// Answers the new node's id.
    pub async fn replace(&mut self, id: u64, timeout: Duration) -> Result<u64> {
        let free_slot = (1..=self.topology.slots())
            .find(|slot| self.nodes.values().all(|n| n.slot != *slot))
            .ok_or_else(|| anyhow!("no free slot for a replacement node"))?;
        self.kill(id).await?;
        let survivor = self
            .nodes
            .values()
            .find(|n| n.id != id && n.is_running())
            .map(|n| n.address.clone())
            .ok_or_else(|| anyhow!("no running member to ask for remove-node"))?;
        let node_id = id.to_string();
        self.keel_cluster_until_ok(
            &["remove-node", "--address", &survivor, "--node-id", &node_id],
            timeout,
        )
        .await?;
        if let Some(mut old) = self.nodes.remove(&id) {
            if let Some(mut lazyfs) = old.lazyfs.take() {
                lazyfs.crash();
                std::fs::remove_dir_all(lazyfs.backing()).ok();
            }
            std::fs::remove_dir_all(&old.data_dir).ok();
        }
        let new_id = self.next_id;
        self.next_id += 1;
        let node = Cluster::node(
            &self.data_root,
            &self.log_dir,
            &self.topology,
            new_id,
            free_slot,
            true,
        );
        let new_address = node.address.clone();
        self.nodes.insert(new_id, node);
        *self
            .member_slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            self.nodes.values().map(|n| n.slot).collect();
        self.start(new_id)?;
        let new_node_id = new_id.to_string();
        self.keel_cluster_until_ok(
            &[
                "add-node",
                "--address",
                &survivor,
                "--node-id",
                &new_node_id,
                "--node-address",
                &new_address,
            ],
            timeout,
        )
        .await?;
        Ok(new_id)
    }

    /// Runs `keel cluster ARGS` until it succeeds or `timeout` passes; answers its output.
    pub async fn keel_cluster_until_ok(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = Command::new(&self.binary)
                .arg("cluster")
                .args(args)
                .output()
                .await
                .with_context(|| format!("running {} cluster", self.binary.display()))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if output.status.success() {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "`keel cluster {}` did not succeed in {timeout:?}: {}",
                    args.join(" "),
                    text.trim()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Brings every member back to normal: resumed, running, on the real clock.
    pub async fn restore(&mut self) -> Result<()> {
        for id in self.ids() {
            let (paused, skewed) = {
                let node = self.member(id)?;
                (node.paused, node.clock_offset_ms != 0)
            };
            if paused {
                self.resume(id)?;
            }
            if skewed {
                self.restart_with_clock(id, 0).await?;
            }
            self.start(id)?;
        }
        Ok(())
    }

    /// Kills every node, then its lazyfs daemon, if any (dropping a mount kills its daemon and
    /// detaches it).
    pub async fn stop_all(&mut self) {
        for id in self.ids() {
            let _ = self.resume(id);
            let _ = self.kill(id).await;
        }
        for node in self.nodes.values_mut() {
            node.lazyfs = None;
        }
    }

    /// The last lines of every member's log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- node {} ({})\n", node.id, node.log.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn signal(pid: i32, signal: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid of a child we spawned and have not reaped.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn libfaketime() -> Result<&'static str> {
    LIBFAKETIME
        .iter()
        .copied()
        .find(|path| Path::new(path).exists())
        .ok_or_else(|| {
            anyhow!("libfaketime is not installed (apt-get install -y faketime; scripts/jepsen does it)")
        })
}
