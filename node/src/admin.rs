//! `keel.admin.v1.ClusterAdmin`: each node reports its view of the cluster (membership from the
//! metadata group, and every Raft group it hosts with its leader, term, log and, on leaders,
//! each replica's progress), and `keel cluster status` gathers and prints those views.

use std::fmt::Write as _;
use std::time::Duration;

use keel_proto::admin::cluster_admin_client::ClusterAdminClient;
use keel_proto::admin::cluster_admin_server::ClusterAdmin;
use keel_proto::admin::{
    GroupStatus, Member, MembershipChange, MembershipChangeReply, Replica, StatusReply,
    StatusRequest,
};
use keel_raft::{GroupRegistry, NodeId};
use tonic::{Request, Response, Status};

/// The admin service of one node.
pub struct ClusterAdminService {
    /// This node.
    pub node_id: NodeId,
    /// The cluster's id.
    pub cluster_id: String,
    /// The node's Raft groups.
    pub registry: std::sync::Arc<GroupRegistry>,
}

#[tonic::async_trait]
impl ClusterAdmin for ClusterAdminService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let mut groups: Vec<GroupStatus> = self
            .registry
            .groups()
            .iter()
            .map(|group| {
                let metrics = group.metrics().borrow().clone();
                let replicas = metrics
                    .replication
                    .as_ref()
                    .map(|replication| {
                        replication
                            .iter()
                            .map(|(node_id, matched)| Replica {
                                node_id: *node_id,
                                matched: matched.is_some(),
                                matched_index: matched.map_or(0, |log| log.index),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let voters = metrics.membership_config.membership().voter_ids().collect();
                GroupStatus {
                    voters,
                    group_id: group.id(),
                    leader: metrics.current_leader.unwrap_or(0),
                    term: metrics.current_term,
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    last_applied: metrics.last_applied.map_or(0, |log| log.index),
                    replicas,
                }
            })
            .collect();
        groups.sort_by_key(|g| g.group_id);
        let members = self
            .registry
            .get(0)
            .map(|metadata| {
                metadata
                    .metrics()
                    .borrow()
                    .membership_config
                    .nodes()
                    .map(|(id, node)| Member {
                        node_id: *id,
                        address: node.addr.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(StatusReply {
            node_id: self.node_id,
            cluster_id: self.cluster_id.clone(),
            members,
            groups,
        }))
    }

    async fn change_membership(
        &self,
        request: Request<MembershipChange>,
    ) -> Result<Response<MembershipChangeReply>, Status> {
        let change = request.into_inner();
        if change.node_id == 0 || (change.add && change.address.is_empty()) {
            return Err(Status::invalid_argument(
                "a membership change needs a node id > 0, and an address to add a node",
            ));
        }
        let mut reply = MembershipChangeReply::default();
        for group in self.registry.groups() {
            if !group.is_leader() {
                continue;
            }
            let has = group
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == change.node_id);
            let result = match (change.add, has) {
                (true, false) => group.add_voter(change.node_id, &change.address).await,
                (false, true) => group.remove_voter(change.node_id).await,
                _ => Ok(()),
            };
            match result {
                Ok(()) => reply.changed.push(group.id()),
                Err(error) => reply.errors.push(format!("group {}: {error}", group.id())),
            }
        }
        Ok(Response::new(reply))
    }
}

/// How long `keel cluster status` waits for each node.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

async fn node_status(address: &str) -> Result<StatusReply, String> {
    let call = async {
        let mut client = ClusterAdminClient::connect(format!("http://{address}"))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        client
            .status(StatusRequest {})
            .await
            .map(Response::into_inner)
            .map_err(|e| e.message().to_string())
    };
    tokio::time::timeout(NODE_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {NODE_TIMEOUT:?}")))
}

/// `keel cluster status`: asks the node at `address` for the membership, then every member
/// for its view, and renders nodes (up or why not) and, per group, the leader's view: term,
/// log and applied index, and each replica's lag behind the leader's log.
pub async fn cluster_status(address: &str) -> anyhow::Result<String> {
    let first = node_status(address)
        .await
        .map_err(|e| anyhow::anyhow!("node {address}: {e}"))?;
    let mut members = first.members.clone();
    members.sort_by_key(|m| m.node_id);
    let mut views = Vec::new();
    let mut out = String::new();
    writeln!(
        out,
        "cluster {} ({} nodes)",
        first.cluster_id,
        members.len()
    )?;
    writeln!(out, "{:<6} {:<24} status", "node", "address")?;
    for member in &members {
        let view = if member.node_id == first.node_id {
            Ok(first.clone())
        } else {
            node_status(&member.address).await
        };
        let status = match &view {
            Ok(_) => "up".to_string(),
            Err(error) => format!("down ({error})"),
        };
        writeln!(out, "{:<6} {:<24} {status}", member.node_id, member.address)?;
        if let Ok(view) = view {
            views.push(view);
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<10} {:<7} {:<6} {:<9} {:<9} replica lag (entries)",
        "group", "leader", "term", "log", "applied"
    )?;
    for group in &first.groups {
        // The leader's own report knows its replicas; otherwise the freshest view we have.
        let reports = views.iter().filter_map(|v| {
            v.groups
                .iter()
                .find(|g| g.group_id == group.group_id)
                .map(|g| (v.node_id, g))
        });
        let leader_view = reports
            .clone()
            .find(|(node, g)| g.leader == *node)
            .or_else(|| reports.max_by_key(|(_, g)| g.term))
            .map(|(_, g)| g);
        let Some(g) = leader_view else { continue };
        let name = if g.group_id == 0 {
            "metadata".to_string()
        } else {
            format!("shard {}", g.group_id)
        };
        let leader = if g.leader == 0 {
            "none".to_string()
        } else {
            g.leader.to_string()
        };
        let lag = g
            .replicas
            .iter()
            .filter(|r| r.node_id != g.leader)
            .map(|r| {
                if r.matched {
                    format!(
                        "{}:{}",
                        r.node_id,
                        g.last_log_index.saturating_sub(r.matched_index)
                    )
                } else {
                    format!("{}:?", r.node_id)
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        writeln!(
            out,
            "{name:<10} {leader:<7} {:<6} {:<9} {:<9} {lag}",
            g.term, g.last_log_index, g.last_applied
        )?;
    }
    Ok(out)
}

/// How long one membership call may take (adding a voter waits until it has caught up).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// `keel cluster add-node` / `remove-node`: asks every reachable member to change the groups it
/// leads until every group's leader reports the new membership (leaderships may move meanwhile).
/// How many shard groups (group 0, the metadata group, aside) a node's status lists.
fn shard_groups(status: &StatusReply) -> usize {
    status.groups.iter().filter(|g| g.group_id > 0).count()
}

pub async fn change_membership(address: &str, change: MembershipChange) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
    let verb = if change.add { "added" } else { "removed" };
    if change.add {
        // A voter that is not running would lower the number of failures the groups survive:
        // the new node must answer, as a member of this cluster, under the id given.
        let asked = node_status(address)
            .await
            .map_err(|e| anyhow::anyhow!("node {address}: {e}"))?;
        let cluster = asked.cluster_id.clone();
        let joining = node_status(&change.address).await.map_err(|e| {
            anyhow::anyhow!(
                "the new node at {} does not answer ({e}); start it with `keel node --join` first",
                change.address
            )
        })?;
        if joining.cluster_id != cluster || joining.node_id != change.node_id {
            anyhow::bail!(
                "the node at {} is node {} of cluster {:?}, not node {} of {cluster:?}",
                change.address,
                joining.node_id,
                joining.cluster_id,
                change.node_id
            );
        }
        // The shard count is fixed when a cluster is created; a node started with another one
        // would host other groups (and route workflow ids to other shards).
        let (theirs, ours) = (shard_groups(&joining), shard_groups(&asked));
        if theirs != ours {
            anyhow::bail!(
                "the node at {} was started with --shards {theirs} but the cluster has {ours} shard groups: wipe its data dir and start it again with --shards {ours} --join",
                change.address
            );
        }
    }
    loop {
        let first = node_status(address)
            .await
            .map_err(|e| anyhow::anyhow!("node {address}: {e}"))?;
        let mut views = Vec::new();
        let mut errors = Vec::new();
        for member in &first.members {
            if !change.add && member.node_id == change.node_id {
                continue;
            }
            let Ok(view) = node_status(&member.address).await else {
                continue;
            };
            let call = async {
                let mut client =
                    ClusterAdminClient::connect(format!("http://{}", member.address)).await?;
                anyhow::Ok(client.change_membership(change.clone()).await?.into_inner())
            };
            match tokio::time::timeout(CHANGE_TIMEOUT, call).await {
                Ok(Ok(reply)) => errors.extend(reply.errors),
                Ok(Err(error)) => errors.push(format!("node {}: {error}", member.node_id)),
                Err(_) => errors.push(format!("node {}: no answer", member.node_id)),
            }
            views.push(view);
        }
        // Done when every group's leader (as it reports itself) has the change.
        let refreshed: Vec<StatusReply> = {
            let mut out = Vec::new();
            for view in &views {
                let address = first
                    .members
                    .iter()
                    .find(|m| m.node_id == view.node_id)
                    .map(|m| m.address.clone())
                    .unwrap_or_default();
                if let Ok(fresh) = node_status(&address).await {
                    out.push(fresh);
                }
            }
            out
        };
        let groups = first.groups.len();
        let done = refreshed
            .iter()
            .flat_map(|v| v.groups.iter().filter(move |g| g.leader == v.node_id))
            .filter(|g| g.voters.contains(&change.node_id) == change.add)
            .count();
        if done == groups {
            return Ok(format!(
                "node {} {verb} in all {groups} groups\n",
                change.node_id
            ));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "node {} {verb} in {done} of {groups} groups after {CHANGE_TIMEOUT:?}; errors: {}",
                change.node_id,
                errors.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
