//! Batch operations. As in Temporal, a batch job is a run of its own (workflow id = job id,
//! type `temporal-sys-batch-workflow-protobuf`) whose state carries a [`BatchState`] and which
//! never gets workflow tasks. One delivery ([`super::Transfer::BatchStep`]) walks the targets in
//! (workflow id, run id) order and reports its progress here; the run completes when no target
//! is left, and StopBatchOperation terminates it.

use serde::{Deserialize, Serialize};

use super::proto::{self, history, Attributes};
use super::state::RunStatus;
use super::txn::Txn;
use super::{EngineError, Reply};

pub use temporalio_protos::temporal::api::workflowservice::v1::StartBatchOperationRequest;

/// Workflow type of batch runs (Temporal's).
pub const WORKFLOW_TYPE: &str = "temporal-sys-batch-workflow-protobuf";
/// Task queue of batch runs (no worker polls it).
pub const TASK_QUEUE: &str = "temporal-sys-batcher-taskqueue";
/// `TemporalNamespaceDivision` of batch runs: lists of workflows leave them out.
pub const NAMESPACE_DIVISION: &str = "TemporalBatcher";

/// A batch job's own state, in the state of its run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchState {
    /// Encoded `StartBatchOperationRequest` (the operation, targets, reason, rate).
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    /// `BatchOperationType`.
    pub operation_type: i32,
    /// The query the targets are selected by (the request's, narrowed to running workflows for
    /// terminate, cancel and signal as Temporal narrows it); empty with explicit targets.
    pub query: String,
    /// Targets found when the job started (None until counted).
    pub total: Option<i64>,
    /// Targets the operation succeeded on.
    pub completed: i64,
    /// Targets the operation failed on.
    pub failed: i64,
    /// The last target handled, in (workflow id, run id) order.
    pub cursor: Option<(String, String)>,
}

/// What StartBatchOperation starts a batch run with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewBatch {
    /// The request (validated).
    #[serde(with = "crate::wire::message")]
    pub request: StartBatchOperationRequest,
    /// `BatchOperationType`.
    pub operation_type: i32,
    /// The selecting query (see [`BatchState::query`]).
    pub query: String,
}

/// What the batch's delivery reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BatchReport {
    /// The targets were counted.
    Counted {
        /// How many.
        total: i64,
    },
    /// Targets up to `cursor` were handled.
    Progress {
        /// The last target handled.
        cursor: (String, String),
        /// Of these, how many succeeded.
        completed: i64,
        /// And how many failed.
        failed: i64,
    },
    /// No target is left: the job is complete.
    Done,
}

/// Sets up the batch of a new batch run (its first transaction).
pub(crate) fn create(txn: &mut Txn, new: NewBatch) {
    use prost::Message as _;
    txn.state.batch = Some(Box::new(BatchState {
        request: new.request.encode_to_vec(),
        operation_type: new.operation_type,
        query: new.query,
        ..Default::default()
    }));
}

/// Takes a delivery's report. Progress is taken only forward of the cursor, so a report sent
/// twice counts once.
pub(crate) fn report(txn: &mut Txn, report: BatchReport) -> Result<Reply, EngineError> {
    let Some(state) = txn.state.batch.as_deref_mut() else {
        return Err(EngineError::NoChange);
    };
    match report {
        BatchReport::Counted { total } => {
            if state.total.is_some() {
                return Err(EngineError::NoChange);
            }
            state.total = Some(total);
        }
        BatchReport::Progress {
            cursor,
            completed,
            failed,
        } => {
            if state.cursor.as_ref().is_some_and(|old| *old >= cursor) {
                return Err(EngineError::NoChange);
            }
            state.cursor = Some(cursor);
            state.completed += completed;
            state.failed += failed;
        }
        BatchReport::Done => {
            txn.close(
                RunStatus::Completed,
                Attributes::WorkflowExecutionCompletedEventAttributes(
                    history::WorkflowExecutionCompletedEventAttributes::default(),
                ),
            );
        }
    }
    Ok(Reply::Done)
}

/// The deliveries a batch run owes: its one step, while it runs.
pub fn transfers(out: &mut Vec<super::Transfer>) {
    out.push(super::Transfer::BatchStep);
}

/// The request a batch run was started with.
pub fn request_of(state: &BatchState) -> StartBatchOperationRequest {
    proto::decode_opt(&state.request).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{handle, new_run, Limits, Report, Request, StartArgs, Transfer};

    fn started() -> crate::engine::MutableState {
        let args = StartArgs {
            namespace_id: "ns".into(),
            workflow_id: "job".into(),
            run_id: "run".into(),
            workflow_type: WORKFLOW_TYPE.into(),
            task_queue: TASK_QUEUE.into(),
            batch: Some(Box::new(NewBatch {
                query: "ExecutionStatus = 'Running'".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        new_run(args, 1, &Limits::default())
            .unwrap_or_else(|e| panic!("start: {e}"))
            .state
    }

    fn reported(
        state: &crate::engine::MutableState,
        report: BatchReport,
    ) -> Result<crate::engine::MutableState, EngineError> {
        let request = Request::Report(Report::Batch(report));
        handle(state, request, 2, &Limits::default()).map(|outcome| outcome.state)
    }

    #[test]
    fn progress_counts_once_and_done_completes_the_run() {
        let state = started();
        assert!(state.workflow_task.is_none());
        assert_eq!(crate::engine::transfers(&state), vec![Transfer::BatchStep]);
        let step = |wf: &str, completed, failed| BatchReport::Progress {
            cursor: (wf.to_string(), "r".to_string()),
            completed,
            failed,
        };
        let state = reported(&state, BatchReport::Counted { total: 3 })
            .unwrap_or_else(|e| panic!("count: {e}"));
        let state = reported(&state, step("b", 2, 0)).unwrap_or_else(|e| panic!("step: {e}"));
        // The same report again (a retried delivery) and an older one change nothing.
        assert_eq!(
            reported(&state, step("b", 2, 0)).err(),
            Some(EngineError::NoChange)
        );
        assert_eq!(
            reported(&state, step("a", 1, 0)).err(),
            Some(EngineError::NoChange)
        );
        let state = reported(&state, step("c", 0, 1)).unwrap_or_else(|e| panic!("step: {e}"));
        let batch = state.batch.as_deref().cloned().unwrap_or_default();
        assert_eq!(
            (batch.total, batch.completed, batch.failed),
            (Some(3), 2, 1)
        );
        let state = reported(&state, BatchReport::Done).unwrap_or_else(|e| panic!("done: {e}"));
        assert_eq!(state.status, RunStatus::Completed);
        assert!(crate::engine::transfers(&state).is_empty());
    }
}
