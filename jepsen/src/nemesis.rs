//! The nemesis: faults injected one at a time on a seeded schedule (a calm gap, a fault held for
//! a while, its heal), each recorded in the history as invoke (injected) and ok (healed). The
//! first round injects every chosen kind once, in a seeded order, so even a short run sees each.

use std::{
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::{
    cluster::Cluster,
    history::{op_name, Fault, HistoryWriter, RecordType},
    topology::Topology,
};

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisKind {
    /// SIGKILL a node; heal: start it again.
    Kill,
    /// SIGSTOP a node; heal: SIGCONT.
    Pause,
    /// Drop packets between nodes (one isolated, or a bridge: two halves that share one node);
    /// heal: flush the rules.
    Partition,
    /// Restart a node with its wall clock 20-400 ms off (libfaketime), skew NTP keeps clocks
    /// within; heal: restart it on the real clock.
    Clock,
    /// The same with 5-120 s: beyond Keel's clock assumption (see the timers checker), so
    /// timers may fire early. Not part of `all`.
    ClockBig,
    /// Replace a node: remove it from every group and add a fresh node in a free slot.
    Membership,
    /// Crash a node's machine, or half the time every member's at once (a power loss): SIGKILL
    /// the node and the lazyfs daemon its data dir is mounted through, so every write it had
    /// not fsynced is lost; heal: start it on a fresh lazyfs. Chosen, it mounts every node's
    /// data dir through lazyfs.
    CrashUnsynced,
}

impl NemesisKind {
    /// What `all` runs: every fault Keel must survive without a violation.
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Clock,
        NemesisKind::Membership,
        NemesisKind::CrashUnsynced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Clock => "clock",
            NemesisKind::ClockBig => "clock-big",
            NemesisKind::Membership => "membership",
            NemesisKind::CrashUnsynced => "crash-unsynced",
        }
    }

    /// `all`, `none`, or a comma-separated list of kinds.
    pub fn parse_list(text: &str) -> Result<Vec<NemesisKind>> {
        match text.trim() {
            "all" => Ok(NemesisKind::ALL.to_vec()),
            "none" | "" => Ok(Vec::new()),
            list => list.split(',').map(|name| name.trim().parse()).collect(),
        }
    }
}

impl FromStr for NemesisKind {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        let known = NemesisKind::ALL.iter().chain([&NemesisKind::ClockBig]);
        match known.into_iter().find(|k| k.name() == name) {
            Some(kind) => Ok(*kind),
            None => bail!(
                "unknown nemesis {name:?}: use all, none, or a list of kill, pause, partition, clock, clock-big, membership, crash-unsynced"
            ),
        }
    }
}

/// How long faults last and the gaps between them.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub calm: (Duration, Duration),
    pub hold: (Duration, Duration),
}

/// A fault in force and how to heal it.
enum Injected {
    Killed(u64),
    Crashed(Vec<u64>),
    Paused(u64),
    Partitioned,
    Skewed(u64),
    Replaced,
}

pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub topology: Arc<Topology>,
    pub history: Arc<HistoryWriter>,
    pub kinds: Vec<NemesisKind>,
    pub schedule: Schedule,
}

impl Nemesis {
    /// Injects and heals faults until `until`; every fault is healed before it returns.
    pub async fn run(&self, until: Instant, seed: u64) -> Result<()> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
        if self.kinds.is_empty() {
            tokio::time::sleep_until(until.into()).await;
            return Ok(());
        }
        let mut first_round = self.kinds.clone();
        first_round.shuffle(&mut rng);
        first_round.reverse();
        loop {
            tokio::time::sleep(between(&mut rng, self.schedule.calm)).await;
            if Instant::now() >= until {
                return Ok(());
            }
            let kind = match first_round.pop() {
                Some(kind) => kind,
                None => self.kinds[rng.random_range(0..self.kinds.len())],
            };
            let (fault, injected) = self.inject(kind, &mut rng).await?;
            tracing::info!(fault = fault.fault, nodes = ?fault.nodes, detail = fault.detail, "injected");
            let hold = between(&mut rng, self.schedule.hold);
            tokio::time::sleep(hold.min(until.saturating_duration_since(Instant::now()))).await;
            self.heal(injected).await?;
            self.history.record(
                "nemesis",
                RecordType::Ok,
                op_name::NEMESIS,
                None,
                serde_json::to_value(&fault)?,
                None,
            );
            tracing::info!(fault = fault.fault, "healed");
        }
    }

    async fn inject(&self, kind: NemesisKind, rng: &mut StdRng) -> Result<(Fault, Injected)> {
        let mut cluster = self.cluster.lock().await;
        let ids = cluster.ids();
        let target = ids[rng.random_range(0..ids.len())];
        let mut fault = Fault {
            fault: kind.name().to_string(),
            nodes: vec![target],
            detail: String::new(),
            clock_offset_ms: None,
        };
        // Recorded before the fault takes effect, so the window covers all of it.
        let record = |fault: &Fault| {
            self.history.record(
                "nemesis",
                RecordType::Invoke,
                op_name::NEMESIS,
                None,
                serde_json::to_value(fault).unwrap_or_default(),
                None,
            );
        };
        let injected = match kind {
            NemesisKind::Kill => {
                record(&fault);
                cluster.kill(target).await?;
                Injected::Killed(target)
            }
            NemesisKind::CrashUnsynced => {
                // Half the time every member at once, as a power loss: then what no quorum
                // fsynced is gone everywhere.
                if rng.random_bool(0.5) {
                    fault.nodes = ids.clone();
                }
                record(&fault);
                let mut details = Vec::new();
                for &id in &fault.nodes {
                    let lost = cluster.crash_unsynced(id).await?;
                    details.push(describe_crash(id, lost));
                }
                fault.detail = details.join("; ");
                Injected::Crashed(fault.nodes.clone())
            }
            NemesisKind::Pause => {
                record(&fault);
                cluster.pause(target)?;
                Injected::Paused(target)
            }
            NemesisKind::Partition => {
                let slots: Vec<(u64, usize)> =
                    cluster.nodes.values().map(|n| (n.id, n.slot)).collect();
                let middle = slots.iter().position(|(id, _)| *id == target).unwrap_or(0);
                let cuts: Vec<(usize, usize)> = if rng.random_bool(0.5) {
                    fault.detail = format!("node {target} isolated");
                    slots
                        .iter()
                        .filter(|(id, _)| *id != target)
                        .map(|(_, slot)| (slots[middle].1, *slot))
                        .collect()
                } else {
                    // A bridge: every pair but those through the target is cut.
                    fault.detail = format!("bridge through node {target}");
                    fault.nodes = slots.iter().map(|(id, _)| *id).collect();
                    let others: Vec<usize> = slots
                        .iter()
                        .filter(|(id, _)| *id != target)
                        .map(|(_, slot)| *slot)
                        .collect();
                    let mut cuts = Vec::new();
                    for (i, a) in others.iter().enumerate() {
                        for b in &others[i + 1..] {
                            cuts.push((*a, *b));
                        }
                    }
                    cuts
                };
                record(&fault);
                for (a, b) in cuts {
                    self.topology.cut(a, b)?;
                }
                Injected::Partitioned
            }
            NemesisKind::Clock | NemesisKind::ClockBig => {
                let magnitude = if kind == NemesisKind::Clock {
                    rng.random_range(20..=400)
                } else {
                    rng.random_range(5_000..=120_000)
                };
                let offset = if rng.random_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                };
                fault.detail = format!("clock {offset:+} ms");
                fault.clock_offset_ms = Some(offset);
                record(&fault);
                cluster.restart_with_clock(target, offset).await?;
                Injected::Skewed(target)
            }
            NemesisKind::Membership => {
                record(&fault);
                let new_id = cluster.replace(target, Duration::from_secs(90)).await?;
                fault.nodes.push(new_id);
                fault.detail = format!("node {target} replaced by node {new_id}");
                Injected::Replaced
            }
        };
        Ok((fault, injected))
    }

    async fn heal(&self, injected: Injected) -> Result<()> {
        let mut cluster = self.cluster.lock().await;
        match injected {
            Injected::Killed(id) => cluster.start(id),
            Injected::Crashed(ids) => {
                // Every crashed node gets its start even if one fails: a failed heal must not
                // leave the rest of a power loss down.
                let started: Vec<Result<()>> =
                    ids.into_iter().map(|id| cluster.start(id)).collect();
                started.into_iter().collect()
            }
            Injected::Paused(id) => cluster.resume(id),
            Injected::Partitioned => self.topology.heal(),
            Injected::Skewed(id) => cluster.restart_with_clock(id, 0).await,
            Injected::Replaced => Ok(()),
        }
    }
}

/// What a crash of node `id` lost: its files that lost bytes (the largest three named), or
/// that it was a plain kill.
fn describe_crash(id: u64, lost: Option<Vec<(PathBuf, u64)>>) -> String {
    let Some(files) = lost else {
        return format!("node {id} killed (its data dir is not on lazyfs)");
    };
    let total: u64 = files.iter().map(|(_, bytes)| bytes).sum();
    let largest: Vec<String> = files
        .iter()
        .take(3)
        .map(|(path, bytes)| format!("{} {bytes}", path.display()))
        .collect();
    format!(
        "node {id} crashed: {total} unsynced bytes lost in {} files ({})",
        files.len(),
        largest.join(", ")
    )
}

fn between(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    Duration::from_millis(rng.random_range(low.as_millis() as u64..=high.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_all_leaves_out_big_clock_skew() {
        assert_eq!(NemesisKind::parse_list("all").unwrap(), NemesisKind::ALL);
        assert!(!NemesisKind::ALL.contains(&NemesisKind::ClockBig));
        assert!(NemesisKind::ALL.contains(&NemesisKind::CrashUnsynced));
        assert_eq!(
            NemesisKind::parse_list("kill, clock-big").unwrap(),
            vec![NemesisKind::Kill, NemesisKind::ClockBig]
        );
        assert_eq!(
            NemesisKind::parse_list("crash-unsynced,kill").unwrap(),
            vec![NemesisKind::CrashUnsynced, NemesisKind::Kill]
        );
        for kind in NemesisKind::ALL.iter().chain([&NemesisKind::ClockBig]) {
            assert_eq!(kind.name().parse::<NemesisKind>().unwrap(), *kind);
        }
        assert!(NemesisKind::parse_list("none").unwrap().is_empty());
        let error = NemesisKind::parse_list("kill,flood")
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"flood\""), "{error}");
    }
}
