//! Queries in flight on this node: a QueryWorkflow call waits here until a worker answers the
//! query task matching handed it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use temporalio_protos::temporal::api::query::v1::WorkflowQuery;
use temporalio_protos::temporal::api::workflowservice::v1::RespondQueryTaskCompletedRequest;
use tokio::sync::oneshot;

/// A query waiting for a worker.
pub struct PendingQuery {
    /// Workflow id.
    pub workflow_id: String,
    /// Run id.
    pub run_id: String,
    /// The query.
    pub query: WorkflowQuery,
    answer: oneshot::Sender<RespondQueryTaskCompletedRequest>,
}

/// Queries in flight.
#[derive(Default)]
pub struct Queries {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, PendingQuery>>,
}

/// Details of a pending query handed to a poller.
#[derive(Clone)]
pub struct QueryTask {
    /// Workflow id.
    pub workflow_id: String,
    /// Run id.
    pub run_id: String,
    /// The query.
    pub query: WorkflowQuery,
}

impl Queries {
    /// Registers a query; returns its id and where its answer arrives.
    pub fn register(
        &self,
        workflow_id: String,
        run_id: String,
        query: WorkflowQuery,
    ) -> (u64, oneshot::Receiver<RespondQueryTaskCompletedRequest>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (answer, receiver) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                PendingQuery {
                    workflow_id,
                    run_id,
                    query,
                    answer,
                },
            );
        (id, receiver)
    }

    /// The query `id`, if still waiting.
    pub fn task(&self, id: u64) -> Option<QueryTask> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|p| QueryTask {
                workflow_id: p.workflow_id.clone(),
                run_id: p.run_id.clone(),
                query: p.query.clone(),
            })
    }

    /// Delivers a worker's answer; false if nobody waits for it any more.
    pub fn answer(&self, id: u64, answer: RespondQueryTaskCompletedRequest) -> bool {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        pending.is_some_and(|p| p.answer.send(answer).is_ok())
    }

    /// Drops a query whose caller gave up.
    pub fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
