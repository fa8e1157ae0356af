//! Workflow retries: a failed run with a retry policy closes into a new run of the same
//! workflow id, as Temporal does (WorkflowExecutionFailed names the new run; the new run's
//! WorkflowExecutionStarted carries the attempt, the failure and the backoff).

use super::activity;
use super::proto::{self, enums, failure, history, Attributes};
use super::start::{new_run, Continuation, StartArgs};
use super::state::RunStatus;
use super::txn::Txn;

/// Closes the run as failed; when its retry policy allows, starts the next attempt.
pub(crate) fn fail_run(txn: &mut Txn, failure: Option<failure::Failure>, completed_id: i64) {
    let retry = match &txn.state.retry {
        Some(policy) => activity::next_retry_delay(
            policy,
            txn.state.attempt,
            failure.as_ref(),
            txn.now,
            txn.state.execution_expiration_ns.unwrap_or(0),
        ),
        None => Err(enums::RetryState::RetryPolicyNotSet),
    };
    let (retry_state, new_run_id) = match retry {
        Ok(delay_ms) => {
            let run_id = successor_run_id(&txn.state.run_id, txn.state.attempt, txn.now);
            start_successor(txn, &run_id, delay_ms, failure.clone());
            (enums::RetryState::InProgress, run_id)
        }
        Err(state) => (state, String::new()),
    };
    txn.close(
        RunStatus::Failed,
        Attributes::WorkflowExecutionFailedEventAttributes(
            history::WorkflowExecutionFailedEventAttributes {
                failure,
                retry_state: retry_state as i32,
                workflow_task_completed_event_id: completed_id,
                new_execution_run_id: new_run_id,
            },
        ),
    );
}

fn start_successor(txn: &mut Txn, run_id: &str, delay_ms: i64, failure: Option<failure::Failure>) {
    let state = &txn.state;
    let args = StartArgs {
        namespace_id: state.namespace_id.clone(),
        workflow_id: state.workflow_id.clone(),
        run_id: run_id.to_string(),
        request_id: state.start_request_id.clone(),
        workflow_type: state.workflow_type.clone(),
        task_queue: state.task_queue.clone(),
        input: proto::decode_opt(&state.input),
        execution_timeout: proto::duration(state.execution_timeout_ms),
        run_timeout: proto::duration(state.run_timeout_ms),
        task_timeout: proto::duration(state.workflow_task_timeout_ms),
        retry_policy: state.retry.as_ref().map(activity::retry_policy_proto),
        memo: proto::decode_opt(&state.memo),
        search_attributes: proto::decode_opt(&state.search_attributes),
        header: proto::decode_opt(&state.header),
        start_delay: proto::duration(delay_ms),
        continuation: Some(Continuation {
            previous_run_id: state.run_id.clone(),
            first_execution_run_id: state.first_execution_run_id.clone(),
            attempt: state.attempt + 1,
            failure,
            execution_expiration_ns: state.execution_expiration_ns,
            initiator: enums::ContinueAsNewInitiator::Retry as i32,
        }),
        ..Default::default()
    };
    // The retry policy was validated when the first run started, so this cannot fail.
    txn.successor = new_run(args, txn.now, txn.limits).ok();
}

/// A run id for the retry of `run_id`'s `attempt`, shaped like Temporal's UUID v7 run ids
/// (time-ordered by `now_ns`): derived, not random, so the decision stays a pure function;
/// unique because run ids are.
fn successor_run_id(run_id: &str, attempt: i32, now_ns: i64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in run_id.bytes().chain(attempt.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let ms = (now_ns / 1_000_000) as u64 & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (hash >> 52) & 0xfff,
        0x8000 | ((hash >> 36) & 0x3fff),
        hash & 0xffff_ffff_ffff
    )
}
