//! The Temporal frontend: validates WorkflowService requests the way Temporal does, resolves
//! namespaces, routes each request to the shard that owns the workflow, and shapes replies
//! (poll responses, histories, descriptions).

mod activities;
mod activity_executions;
mod batches;
mod deployments;
mod errors;
mod operator;
mod queries;
mod queue_config;
mod routing;
mod schedules;
mod service;
mod tokens;
mod updates;
mod views;
mod workflow_options;

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::engine::proto::common;
use crate::engine::{Limits, MutableState};
use crate::matching::Matching;
use crate::namespaces::{NamespaceRecord, Namespaces};
use crate::shard::{keys, Clock, Shard};

pub use errors::namespace_not_found;
pub use queries::Queries;

/// Longest workflow, activity, task queue or request id Temporal accepts.
pub const MAX_ID_LEN: usize = 1000;

/// What the frontend serves from.
pub struct Frontend {
    /// Namespaces.
    pub namespaces: Arc<Namespaces>,
    /// Worker Deployments.
    pub deployments: Arc<crate::deployments::Deployments>,
    /// Task queue configs (API rate limits).
    pub queue_configs: Arc<crate::queue_configs::QueueConfigs>,
    /// Shards 1..=N, at index shard-1.
    pub shards: Vec<Arc<Shard>>,
    /// Matching.
    pub matching: Arc<Matching>,
    /// Pending queries.
    pub queries: Arc<Queries>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Limits.
    pub limits: Limits,
    /// Longest a poll waits before an empty answer.
    pub long_poll: Duration,
    /// Cluster id, for GetClusterInfo.
    pub cluster_id: String,
    /// Where matching runs.
    pub owner: crate::matching::MatchingOwner,
    /// Clients of the node that runs matching.
    pub matching_clients: routing::MatchingClients,
    /// Counts the history long polls waiting for an event.
    pub history_long_polls: crate::metrics::HistoryLongPolls,
}

impl Frontend {
    async fn namespace(&self, name: &str) -> Result<NamespaceRecord, Status> {
        if name.is_empty() {
            return Err(errors::invalid("Namespace not set on request."));
        }
        self.namespaces
            .lookup(name)
            .await
            .map_err(Status::from)?
            .ok_or_else(|| errors::namespace_not_found(name))
    }

    fn shard(&self, namespace_id: &str, workflow_id: &str) -> &Arc<Shard> {
        let index = keys::shard_of(namespace_id, workflow_id, self.shards.len() as u64);
        &self.shards[usize::try_from(index - 1).unwrap_or(0) % self.shards.len()]
    }

    fn now(&self) -> i64 {
        self.clock.now_ns()
    }

    /// Pollers seen since this time are present (`matching.PollerHistoryTTL`).
    fn pollers_since(&self) -> i64 {
        self.now() - self.limits.poller_history_ttl_ms.saturating_mul(1_000_000)
    }

    /// A run's state read linearizably (current run when `run_id` is empty); NotFound if none.
    async fn read_state(
        &self,
        namespace: &NamespaceRecord,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<MutableState, Status> {
        let shard = self.shard(&namespace.id, workflow_id);
        shard.barrier().await?;
        shard
            .load_state(&namespace.id, workflow_id, run_id)?
            .ok_or_else(|| crate::shard::run_not_found(workflow_id, run_id).into())
    }

    /// Every run of the namespace that `keep` selects, read after a barrier on each shard
    /// (lists have no index: each scans the namespace's states).
    async fn scan_runs(
        &self,
        namespace: &NamespaceRecord,
        mut keep: impl FnMut(&MutableState) -> bool,
    ) -> Result<Vec<MutableState>, Status> {
        let mut runs = Vec::new();
        for shard in &self.shards {
            shard.barrier().await?;
            shard.scan_states(&namespace.id, |state| {
                if keep(&state) {
                    runs.push(state);
                }
                true
            })?;
        }
        Ok(runs)
    }

    /// The run's state after a write: the one this node's writer handed back (`written`), else
    /// read once this replica has applied what this node's writes were answered through (the
    /// writer was another node's); None if the run is gone.
    async fn state_after_write(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        written: Option<Arc<MutableState>>,
    ) -> Result<Option<Arc<MutableState>>, Status> {
        if written.is_some() {
            return Ok(written);
        }
        let shard = self.shard(namespace_id, workflow_id);
        shard.catch_up().await?;
        Ok(shard
            .load_state(namespace_id, workflow_id, run_id)?
            .map(Arc::new))
    }

    fn check_payloads(&self, payloads: Option<&common::Payloads>) -> Result<(), Status> {
        if payload_bytes(payloads) > self.limits.max_blob_bytes {
            return Err(errors::invalid("Blob data size exceeds limit."));
        }
        Ok(())
    }
}

/// The bytes of data `payloads` carry (what Temporal's blob size limit counts).
fn payload_bytes(payloads: Option<&common::Payloads>) -> usize {
    payloads
        .map(|p| p.payloads.iter().map(|p| p.data.len()).sum())
        .unwrap_or(0)
}

/// One page of a list paged by offset (the token is the next page's offset): the page's items
/// and the next token (empty after the last page). Pages hold `page_size` items, or `max` when
/// it is not in 1..=`max`.
fn offset_page<'a, T>(
    items: &'a [T],
    page_size: i32,
    token: &[u8],
    max: usize,
) -> Result<(&'a [T], Vec<u8>), Status> {
    let offset = if token.is_empty() {
        0
    } else {
        bincode::deserialize::<u64>(token).map_err(|_| errors::invalid("Invalid NextPageToken."))?
            as usize
    };
    let page = usize::try_from(page_size)
        .ok()
        .filter(|p| (1..=max).contains(p))
        .unwrap_or(max);
    let end = offset.saturating_add(page).min(items.len());
    let next = if end < items.len() {
        bincode::serialize(&(end as u64)).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok((items.get(offset..end).unwrap_or_default(), next))
}

fn check_id(kind: &str, value: &str, required: bool) -> Result<(), Status> {
    if required && value.is_empty() {
        return Err(errors::invalid(format!("{kind} is not set on request.")));
    }
    let len = value.chars().count();
    if len > MAX_ID_LEN {
        return Err(errors::invalid(format!(
            "{kind} exceeds maximum allowed length ({len}/{MAX_ID_LEN})"
        )));
    }
    Ok(())
}

/// Checks a request's workflow execution as Temporal's frontend does: a workflow id, and a run
/// id that is empty or a UUID.
fn check_execution(
    execution: &temporalio_protos::temporal::api::common::v1::WorkflowExecution,
) -> Result<(), Status> {
    check_id("WorkflowId", &execution.workflow_id, true)?;
    if !execution.run_id.is_empty() && uuid::Uuid::parse_str(&execution.run_id).is_err() {
        return Err(errors::invalid("Invalid RunId."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::offset_page;

    #[test]
    fn offset_pages_walk_the_list_and_refuse_bad_tokens() {
        let items: Vec<u32> = (0..5).collect();
        let (first, token) = offset_page(&items, 2, &[], 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, [0, 1]);
        let (second, token) =
            offset_page(&items, 2, &token, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second, [2, 3]);
        let (last, token) = offset_page(&items, 2, &token, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((last, token.is_empty()), (&[4][..], true));
        // A page size out of range is the largest page.
        let (all, _) = offset_page(&items, 0, &[], 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all, [0, 1, 2]);
        assert!(offset_page(&items, 2, b"x", 1000).is_err());
    }
}
