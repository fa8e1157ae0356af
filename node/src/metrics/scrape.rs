//! Metrics read from their owners only when `/metrics` is scraped, so they cost nothing between
//! scrapes: per Raft group its term, leadership, log and applied indexes, each follower's
//! matched index (on the leader) and the proposals committed and failed; Raft messages sent to
//! each peer by kind and their failures; the store's fsyncs; and the polls waiting in matching.

use std::sync::{Arc, Weak};

use keel_raft::{GroupRegistry, PeerMessageStats, ProposalStats};
use keel_storage::{Store, SyncStats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::matching::{Matching, WaitingPolls};

/// One metric family this collector exports.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const RAFT_TERM: Spec = Spec {
    name: "keel_raft_term",
    help: "Current Raft term of the group on this node",
    kind: MetricType::GAUGE,
    labels: &["group"],
};
const RAFT_LEADER: Spec = Spec {
    name: "keel_raft_leader",
    help: "1 if this node leads the group, else 0",
    kind: MetricType::GAUGE,
    labels: &["group"],
};
const RAFT_LAST_LOG_INDEX: Spec = Spec {
    name: "keel_raft_last_log_index",
    help: "Index of the last entry in the group's log on this node",
    kind: MetricType::GAUGE,
    labels: &["group"],
};
const RAFT_APPLIED_INDEX: Spec = Spec {
    name: "keel_raft_applied_index",
    help: "Index of the last entry of the group applied on this node",
    kind: MetricType::GAUGE,
    labels: &["group"],
};
const RAFT_MATCHED_INDEX: Spec = Spec {
    name: "keel_raft_replica_matched_index",
    help: "On the group's leader: the last log index each replica is known to hold",
    kind: MetricType::GAUGE,
    labels: &["group", "peer"],
};
const RAFT_COMMANDS_COMMITTED: Spec = Spec {
    name: "keel_raft_commands_committed_total",
    help: "Commands proposed on this node and committed",
    kind: MetricType::COUNTER,
    labels: &["group"],
};
const RAFT_ENTRIES_COMMITTED: Spec = Spec {
    name: "keel_raft_entries_committed_total",
    help: "Log entries (batches of commands) proposed on this node and committed",
    kind: MetricType::COUNTER,
    labels: &["group"],
};
const RAFT_COMMANDS_FAILED: Spec = Spec {
    name: "keel_raft_commands_failed_total",
    help: "Commands proposed on this node whose proposal failed (not leader, no quorum)",
    kind: MetricType::COUNTER,
    labels: &["group"],
};
const RAFT_MESSAGES_SENT: Spec = Spec {
    name: "keel_raft_messages_sent_total",
    help: "Raft messages sent to a peer, all groups together, by kind",
    kind: MetricType::COUNTER,
    labels: &["peer", "kind"],
};
const RAFT_MESSAGES_FAILED: Spec = Spec {
    name: "keel_raft_messages_failed_total",
    help: "Raft messages to a peer that failed (unreachable, refused, timed out), by kind",
    kind: MetricType::COUNTER,
    labels: &["peer", "kind"],
};
const STORAGE_FSYNCS: Spec = Spec {
    name: "keel_storage_fsyncs_total",
    help: "fsyncs of the RocksDB WAL (each covers every synced write queued at the time)",
    kind: MetricType::COUNTER,
    labels: &[],
};
const STORAGE_FSYNC_FAILURES: Spec = Spec {
    name: "keel_storage_fsync_failures_total",
    help: "fsyncs of the RocksDB WAL that failed",
    kind: MetricType::COUNTER,
    labels: &[],
};
const STORAGE_SYNCED_BATCHES: Spec = Spec {
    name: "keel_storage_synced_batches_total",
    help: "Write batches made durable by those fsyncs (Raft appends, votes, purges)",
    kind: MetricType::COUNTER,
    labels: &[],
};
const STORAGE_FSYNC_SECONDS: Spec = Spec {
    name: "keel_storage_fsync_seconds_total",
    help: "Time spent in fsyncs of the RocksDB WAL, in seconds",
    kind: MetricType::COUNTER,
    labels: &[],
};
const POLLS_WAITING: Spec = Spec {
    name: "keel_matching_polls_waiting",
    help: "Task polls waiting in matching on this node, by task type",
    kind: MetricType::GAUGE,
    labels: &["task_type"],
};

const SPECS: [&Spec; 15] = [
    &RAFT_TERM,
    &RAFT_LEADER,
    &RAFT_LAST_LOG_INDEX,
    &RAFT_APPLIED_INDEX,
    &RAFT_MATCHED_INDEX,
    &RAFT_COMMANDS_COMMITTED,
    &RAFT_ENTRIES_COMMITTED,
    &RAFT_COMMANDS_FAILED,
    &RAFT_MESSAGES_SENT,
    &RAFT_MESSAGES_FAILED,
    &STORAGE_FSYNCS,
    &STORAGE_FSYNC_FAILURES,
    &STORAGE_SYNCED_BATCHES,
    &STORAGE_FSYNC_SECONDS,
    &POLLS_WAITING,
];

/// What one Raft group looked like at a scrape.
#[derive(Clone, Debug, Default)]
struct GroupReading {
    group: u64,
    term: u64,
    leads: bool,
    last_log_index: u64,
    applied_index: u64,
    /// On the leader: (peer, matched index) of each replica.
    matched: Vec<(u64, u64)>,
    proposals: ProposalStats,
}

/// Everything one scrape reads, before it is turned into metric families.
#[derive(Clone, Debug, Default)]
struct Reading {
    groups: Vec<GroupReading>,
    peers: Vec<PeerMessageStats>,
    sync: SyncStats,
    polls: WaitingPolls,
}

/// The families of one scrape, in [`SPECS`] order.
struct Families(Vec<MetricFamily>);

impl Families {
    fn new() -> Families {
        Families(
            SPECS
                .iter()
                .map(|spec| {
                    let mut family = MetricFamily::default();
                    family.set_name(spec.name.to_string());
                    family.set_help(spec.help.to_string());
                    family.set_field_type(spec.kind);
                    family
                })
                .collect(),
        )
    }

    /// Adds the sample `value` with `label_values` (in the spec's label order) to `spec`.
    fn add(&mut self, spec: &Spec, label_values: &[&str], value: f64) {
        let Some(family) = self.0.iter_mut().find(|f| f.name() == spec.name) else {
            return;
        };
        let mut metric = Metric::default();
        metric.set_label(
            spec.labels
                .iter()
                .zip(label_values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect(),
        );
        if spec.kind == MetricType::COUNTER {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        family.mut_metric().push(metric);
    }
}

/// The metric families of `reading`.
fn families(reading: &Reading) -> Vec<MetricFamily> {
    let mut out = Families::new();
    for group in &reading.groups {
        let id = group.group.to_string();
        let labels = [id.as_str()];
        out.add(&RAFT_TERM, &labels, group.term as f64);
        out.add(&RAFT_LEADER, &labels, if group.leads { 1.0 } else { 0.0 });
        out.add(&RAFT_LAST_LOG_INDEX, &labels, group.last_log_index as f64);
        out.add(&RAFT_APPLIED_INDEX, &labels, group.applied_index as f64);
        for (peer, index) in &group.matched {
            out.add(
                &RAFT_MATCHED_INDEX,
                &[id.as_str(), &peer.to_string()],
                *index as f64,
            );
        }
        let proposals = group.proposals;
        out.add(
            &RAFT_COMMANDS_COMMITTED,
            &labels,
            proposals.commands_committed as f64,
        );
        out.add(
            &RAFT_ENTRIES_COMMITTED,
            &labels,
            proposals.entries_committed as f64,
        );
        out.add(
            &RAFT_COMMANDS_FAILED,
            &labels,
            proposals.commands_failed as f64,
        );
    }
    for peer in &reading.peers {
        let peer_id = peer.peer.to_string();
        let labels = [peer_id.as_str(), peer.kind.label()];
        out.add(&RAFT_MESSAGES_SENT, &labels, peer.sent as f64);
        out.add(&RAFT_MESSAGES_FAILED, &labels, peer.failed as f64);
    }
    let sync = reading.sync;
    out.add(&STORAGE_FSYNCS, &[], sync.fsyncs as f64);
    out.add(&STORAGE_FSYNC_FAILURES, &[], sync.failed_fsyncs as f64);
    out.add(&STORAGE_SYNCED_BATCHES, &[], sync.synced_batches as f64);
    out.add(&STORAGE_FSYNC_SECONDS, &[], sync.fsync_time.as_secs_f64());
    out.add(&POLLS_WAITING, &["workflow"], reading.polls.workflow as f64);
    out.add(&POLLS_WAITING, &["activity"], reading.polls.activity as f64);
    out.0
}

/// The description of every family in [`SPECS`].
fn descs() -> Result<Vec<Desc>, prometheus::Error> {
    SPECS
        .iter()
        .map(|spec| {
            Desc::new(
                spec.name.to_string(),
                spec.help.to_string(),
                spec.labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
        })
        .collect()
}

/// Reads Raft, storage and matching at each scrape.
pub struct NodeCollector {
    registry: Weak<GroupRegistry>,
    store: Store,
    matching: Arc<Matching>,
    descs: Vec<Desc>,
}

impl NodeCollector {
    /// A collector over this node's groups, store and matching.
    pub fn new(
        registry: &Arc<GroupRegistry>,
        store: Store,
        matching: Arc<Matching>,
    ) -> Result<NodeCollector, prometheus::Error> {
        Ok(NodeCollector {
            registry: Arc::downgrade(registry),
            store,
            matching,
            descs: descs()?,
        })
    }

    fn read(&self) -> Reading {
        let registry = self.registry.upgrade();
        let groups = registry
            .iter()
            .flat_map(|registry| registry.groups())
            .map(|group| {
                let proposals = group.proposal_stats();
                let metrics = group.metrics();
                let metrics = metrics.borrow();
                let matched = metrics
                    .replication
                    .iter()
                    .flatten()
                    .filter(|(peer, _)| **peer != metrics.id)
                    .map(|(peer, log_id)| (*peer, log_id.as_ref().map_or(0, |l| l.index)))
                    .collect();
                GroupReading {
                    group: group.id(),
                    term: metrics.current_term,
                    leads: metrics.current_leader == Some(metrics.id),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    applied_index: metrics.last_applied.map_or(0, |l| l.index),
                    matched,
                    proposals,
                }
            })
            .collect();
        Reading {
            groups,
            peers: registry
                .map(|registry| registry.peer_message_stats())
                .unwrap_or_default(),
            sync: self.store.sync_stats(),
            polls: self.matching.waiting_polls(),
        }
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::MessageKind;

    fn text(reading: &Reading) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&families(reading))
            .expect("text format")
    }

    #[test]
    fn a_reading_becomes_one_sample_per_group_peer_and_kind() {
        let reading = Reading {
            groups: vec![GroupReading {
                group: 3,
                term: 7,
                leads: true,
                last_log_index: 42,
                applied_index: 41,
                matched: vec![(2, 40)],
                proposals: ProposalStats {
                    commands_committed: 10,
                    entries_committed: 4,
                    commands_failed: 1,
                },
            }],
            peers: vec![PeerMessageStats {
                peer: 2,
                kind: MessageKind::AppendEntries,
                sent: 9,
                failed: 1,
            }],
            sync: SyncStats {
                fsyncs: 5,
                failed_fsyncs: 0,
                synced_batches: 12,
                fsync_time: std::time::Duration::from_millis(1500),
            },
            polls: WaitingPolls {
                workflow: 2,
                activity: 1,
            },
        };
        let text = text(&reading);
        for line in [
            "# TYPE keel_raft_term gauge",
            "keel_raft_term{group=\"3\"} 7",
            "keel_raft_leader{group=\"3\"} 1",
            "keel_raft_last_log_index{group=\"3\"} 42",
            "keel_raft_applied_index{group=\"3\"} 41",
            "keel_raft_replica_matched_index{group=\"3\",peer=\"2\"} 40",
            "# TYPE keel_raft_commands_committed_total counter",
            "keel_raft_commands_committed_total{group=\"3\"} 10",
            "keel_raft_entries_committed_total{group=\"3\"} 4",
            "keel_raft_commands_failed_total{group=\"3\"} 1",
            "keel_raft_messages_sent_total{peer=\"2\",kind=\"append_entries\"} 9",
            "keel_raft_messages_failed_total{peer=\"2\",kind=\"append_entries\"} 1",
            "keel_storage_fsyncs_total 5",
            "keel_storage_synced_batches_total 12",
            "keel_storage_fsync_seconds_total 1.5",
            "keel_matching_polls_waiting{task_type=\"workflow\"} 2",
            "keel_matching_polls_waiting{task_type=\"activity\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn every_family_has_a_valid_and_distinct_description() {
        let descs = descs().expect("valid descriptions");
        assert_eq!(descs.len(), SPECS.len());
        let names: std::collections::BTreeSet<_> = descs.iter().map(|d| &d.fq_name).collect();
        assert_eq!(names.len(), SPECS.len());
        assert_eq!(families(&Reading::default()).len(), SPECS.len());
    }
}
