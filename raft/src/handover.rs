//! Leadership handover: the leader of a group makes a chosen, caught-up voter the next leader
//! (openraft 0.9 has no leader transfer). The leader goes quiet (no proposals, no heartbeats,
//! no read-index rounds), waits until the target holds its whole log, asks the other voters not
//! to start elections for a while, and asks the target to campaign once the followers' leader
//! lease (the election timeout's upper bound after they last heard from the leader) has run
//! out. Raft's own rules keep it safe whatever happens; a failed handover only costs the group
//! that pause, after which the old leader carries on or a normal election follows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::GroupError;
use crate::group::ShardGroup;
use crate::network::Peers;
use crate::types::NodeId;

/// Longest the leader waits for the target to hold its whole log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// Margin after the followers' lease before the target campaigns.
const LEASE_MARGIN: Duration = Duration::from_millis(150);
/// Longest the leader waits, after the target campaigns, to see the new leader.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

/// One step of a handover, sent by the leader to a voter of the group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum HandoverStep {
    /// Answer with the last log index (shows the voter is up and hosts the group).
    Probe,
    /// Start no election of the group for this many milliseconds.
    HoldElections { millis: u64 },
    /// Start an election of the group after this many milliseconds.
    Campaign { after_millis: u64 },
}

/// A voter's answer to a [`HandoverStep`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HandoverReply {
    /// The voter's last log index of the group.
    pub last_log_index: Option<u64>,
}

/// Carries out `step` on this node's replica of `group`.
pub(crate) fn answer(group: &ShardGroup, step: &HandoverStep) -> HandoverReply {
    match step {
        HandoverStep::Probe => {}
        HandoverStep::HoldElections { millis } => {
            group.hold_elections(Duration::from_millis(*millis));
        }
        HandoverStep::Campaign { after_millis } => {
            group.campaign_after(Duration::from_millis(*after_millis));
        }
    }
    HandoverReply {
        last_log_index: group.metrics().borrow().last_log_index,
    }
}

/// Checks that node `to` is another voter of `group` and answers; returns its address and the
/// group's other voters (with addresses).
pub(crate) async fn probe(
    group: &ShardGroup,
    peers: &Peers,
    to: NodeId,
) -> Result<(String, Vec<(NodeId, String)>), GroupError> {
    let me = group.node_id();
    let (voters, address) = {
        let metrics = group.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: Vec<(NodeId, String)> = membership
            .voter_ids()
            .filter(|v| *v != me)
            .filter_map(|v| membership.get_node(&v).map(|n| (v, n.addr.clone())))
            .collect();
        let address = voters
            .iter()
            .find(|(v, _)| *v == to)
            .map(|(_, addr)| addr.clone());
        (voters, address)
    };
    let Some(address) = address else {
        return Err(handover_failed(
            group,
            format!("node {to} is not another voter of it"),
        ));
    };
    peers
        .handover_step(group.id(), to, &address, &HandoverStep::Probe)
        .await
        .map_err(|reason| handover_failed(group, reason))?;
    Ok((address, voters))
}

fn handover_failed(group: &ShardGroup, reason: String) -> GroupError {
    GroupError::Raft {
        group: group.id(),
        operation: "hand over leadership",
        reason,
    }
}

/// Makes node `to` the leader of `group`, which this node leads. `lease` is the followers'
/// leader lease (the election timeout's upper bound). Returns once this node has seen `to`
/// (or another node, if an election intervened) take over; an error says why not, and leaves
/// this node leading or a normal election under way.
pub(crate) async fn hand_over(
    group: &ShardGroup,
    peers: &Peers,
    to: NodeId,
    lease: Duration,
) -> Result<(), GroupError> {
    let id = group.id();
    let failed = |reason: String| handover_failed(group, reason);
    let me = group.node_id();
    if group.leader() != Some(me) {
        return Err(failed(format!("node {me} does not lead it")));
    }
    // Probe first, so an unreachable target costs no pause.
    let (address, voters) = probe(group, peers, to).await?;

    let quiet = group.quiesce().await;
    group.raft().runtime_config().heartbeat(false);
    let outcome = async {
        wait_for_target(group, to).await.map_err(failed)?;
        let hold = HandoverStep::HoldElections {
            millis: millis(lease + LEASE_MARGIN + ELECTION_WAIT),
        };
        for (voter, addr) in voters.iter().filter(|(v, _)| *v != to) {
            if let Err(reason) = peers.handover_step(id, *voter, addr, &hold).await {
                tracing::debug!(group = id, voter, %reason, "voter not held during handover");
            }
        }
        let campaign = HandoverStep::Campaign {
            after_millis: millis(lease + LEASE_MARGIN),
        };
        peers
            .handover_step(id, to, &address, &campaign)
            .await
            .map_err(failed)?;
        wait_for_new_leader(group, lease + LEASE_MARGIN + ELECTION_WAIT)
            .await
            .map_err(failed)
    }
    .await;
    group.raft().runtime_config().heartbeat(true);
    drop(quiet);
    match &outcome {
        Ok(leader) => tracing::info!(group = id, from = me, to, leader, "leadership handed over"),
        Err(error) => tracing::warn!(group = id, to, %error, "leadership handover failed"),
    }
    outcome.map(|_| ())
}

/// Waits until `to` has acknowledged every entry in this node's log.
async fn wait_for_target(group: &ShardGroup, to: NodeId) -> Result<(), String> {
    group
        .wait_for(CATCH_UP_WAIT, |m| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten())
                .map(|log| log.index);
            if matched >= m.last_log_index {
                Some(Ok(()))
            } else if m.current_leader != Some(m.id) {
                Some(Err("this node lost leadership meanwhile".to_string()))
            } else {
                None
            }
        })
        .await
        .unwrap_or_else(|| {
            Err(format!(
                "node {to} did not catch up within {CATCH_UP_WAIT:?}"
            ))
        })
}

/// Waits until this node knows of a leader other than itself; returns it.
async fn wait_for_new_leader(group: &ShardGroup, within: Duration) -> Result<NodeId, String> {
    let me = group.node_id();
    group
        .wait_for(within, |m| m.current_leader.filter(|leader| *leader != me))
        .await
        .ok_or_else(|| format!("no new leader within {within:?}"))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
