//! Leadership balance: a node that leads at least two shards more than some other voter hands
//! one of them to the voter that leads fewest, one at a time, so that leadership spreads out
//! again after a node returns (every shard's leader does that shard's work).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use keel_raft::{GroupRegistry, NodeId};

use super::Shard;

/// How often a node looks at the balance.
const BALANCE_EVERY: Duration = Duration::from_secs(5);

/// What this node knows of one shard's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupView {
    /// The shard.
    pub shard: u64,
    /// Its leader, if one is known.
    pub leader: Option<NodeId>,
    /// Its voters.
    pub voters: Vec<NodeId>,
    /// When this node leads it: the followers that hold its whole log.
    pub caught_up: Vec<NodeId>,
}

/// The next handover `me` should make, as (shard, new leader): the voter leading fewest shards
/// (lowest id on ties) if it leads at least two fewer than `me` and is caught up in a shard
/// `me` leads (the lowest such shard). None while some shard has no known leader.
pub(crate) fn next_handover(me: NodeId, groups: &[GroupView]) -> Option<(u64, NodeId)> {
    let mut led: BTreeMap<NodeId, usize> = BTreeMap::new();
    for group in groups {
        for voter in &group.voters {
            led.entry(*voter).or_default();
        }
    }
    for group in groups {
        *led.entry(group.leader?).or_default() += 1;
    }
    let mine = led.get(&me).copied().unwrap_or(0);
    let mut targets: Vec<(usize, NodeId)> = led
        .iter()
        .filter(|(node, count)| **node != me && **count + 2 <= mine)
        .map(|(node, count)| (*count, *node))
        .collect();
    targets.sort_unstable();
    targets.into_iter().find_map(|(_, target)| {
        groups
            .iter()
            .filter(|g| g.leader == Some(me) && g.caught_up.contains(&target))
            .map(|g| (g.shard, target))
            .min()
    })
}

/// What this node knows of `shard`'s group.
fn view(shard: &Shard) -> GroupView {
    let metrics = shard.group.metrics();
    let metrics = metrics.borrow();
    let caught_up = match (
        &metrics.replication,
        metrics.current_leader == Some(metrics.id),
    ) {
        (Some(replication), true) => replication
            .iter()
            .filter(|(node, matched)| {
                **node != metrics.id && matched.map(|log| log.index) >= metrics.last_log_index
            })
            .map(|(node, _)| *node)
            .collect(),
        _ => Vec::new(),
    };
    GroupView {
        shard: shard.id,
        leader: metrics.current_leader,
        voters: metrics.membership_config.membership().voter_ids().collect(),
        caught_up,
    }
}

/// Every [`BALANCE_EVERY`], makes the handover [`next_handover`] names, if any. Ends when the
/// node's registry or shards are dropped.
pub async fn balance_leadership(registry: Weak<GroupRegistry>, shards: Vec<Weak<Shard>>) {
    loop {
        tokio::time::sleep(BALANCE_EVERY).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let Some(shards) = shards
            .iter()
            .map(Weak::upgrade)
            .collect::<Option<Vec<Arc<Shard>>>>()
        else {
            return;
        };
        let views: Vec<GroupView> = shards.iter().map(|s| view(s)).collect();
        let Some((id, to)) = next_handover(registry.node_id(), &views) else {
            continue;
        };
        let Some(shard) = shards.iter().find(|s| s.id == id) else {
            continue;
        };
        if let Err(error) = shard.hand_over(&registry, to).await {
            tracing::info!(shard = id, to, %error, "leadership not handed over; the balance will try again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(shard: u64, leader: Option<NodeId>, caught_up: &[NodeId]) -> GroupView {
        GroupView {
            shard,
            leader,
            voters: vec![1, 2, 3],
            caught_up: caught_up.to_vec(),
        }
    }

    #[test]
    fn a_returning_node_gets_shards_from_the_node_leading_most() {
        // Node 3 came back: nodes 1 and 2 lead everything.
        let mut groups: Vec<GroupView> = (1..=5).map(|s| group(s, Some(1), &[2, 3])).collect();
        groups.extend((6..=9).map(|s| group(s, Some(2), &[1, 3])));
        assert_eq!(next_handover(1, &groups), Some((1, 3)));
        assert_eq!(next_handover(2, &groups), Some((6, 3)));
        assert_eq!(
            next_handover(3, &groups),
            None,
            "node 3 leads nothing to give"
        );
    }

    #[test]
    fn nothing_moves_when_balanced_within_one() {
        let groups = vec![
            group(1, Some(1), &[2, 3]),
            group(2, Some(1), &[2, 3]),
            group(3, Some(2), &[1, 3]),
            group(4, Some(3), &[1, 2]),
        ];
        for me in 1..=3 {
            assert_eq!(next_handover(me, &groups), None, "node {me}");
        }
    }

    #[test]
    fn only_a_caught_up_target_receives_a_shard() {
        let groups = vec![
            group(1, Some(1), &[2]),
            group(2, Some(1), &[2]),
            group(3, Some(1), &[2, 3]),
        ];
        // Node 2 and 3 both lead none; node 2 is preferred (lower id) and caught up in shard 1.
        assert_eq!(next_handover(1, &groups), Some((1, 2)));
        let lagging = vec![group(1, Some(1), &[]), group(2, Some(1), &[])];
        assert_eq!(next_handover(1, &lagging), None);
    }

    #[test]
    fn waits_while_a_shard_has_no_leader() {
        let groups = vec![
            group(1, Some(1), &[2, 3]),
            group(2, Some(1), &[2, 3]),
            group(3, None, &[]),
        ];
        assert_eq!(next_handover(1, &groups), None);
    }

    #[test]
    fn a_single_node_never_hands_over() {
        let groups: Vec<GroupView> = (1..=4)
            .map(|s| GroupView {
                shard: s,
                leader: Some(1),
                voters: vec![1],
                caught_up: vec![],
            })
            .collect();
        assert_eq!(next_handover(1, &groups), None);
    }
}
