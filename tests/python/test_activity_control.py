"""Pausing, unpausing, resetting and changing the options of a running workflow's activities
(PauseActivity, UnpauseActivity, ResetActivity, UpdateActivityOptions), with the SDK and the
`temporal activity` commands, as Temporal's dev server does them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from helpers import new_id, new_worker, wait_for
from temporalio import activity, workflow
from temporalio.api.activity.v1 import ActivityOptions
from temporalio.api.common.v1 import RetryPolicy as RetryPolicyProto
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflowservice.v1 import (
    PauseActivityRequest,
    ResetActivityRequest,
    UnpauseActivityRequest,
    UpdateActivityOptionsRequest,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

# Calls of each activity, by activity id: (attempt, heartbeat details seen).
calls: dict[str, list[tuple[int, list]]] = {}


@activity.defn
async def heartbeat_until_paused() -> str:
    """Heartbeats until cancelled; a pause cancels it and it says so."""
    info = activity.info()
    calls.setdefault(info.activity_id, []).append((info.attempt, list(info.heartbeat_details)))
    try:
        while True:
            activity.heartbeat("beating")
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        details = activity.cancellation_details()
        return f"paused={details.paused}" if details else "no details"


@activity.defn
async def stop_when_paused_then_succeed() -> str:
    """First attempt heartbeats until paused and lets the cancel fail it; later attempts
    return at once."""
    info = activity.info()
    calls.setdefault(info.activity_id, []).append((info.attempt, list(info.heartbeat_details)))
    if len(calls[info.activity_id]) > 1:
        return f"attempt {info.attempt}"
    while True:
        activity.heartbeat("progress")
        await asyncio.sleep(0.1)


@activity.defn
async def fail_first_call() -> str:
    info = activity.info()
    calls.setdefault(info.activity_id, []).append((info.attempt, list(info.heartbeat_details)))
    if len(calls[info.activity_id]) == 1:
        raise RuntimeError("first call fails")
    return f"attempt {info.attempt}"


@workflow.defn(sandboxed=False)
class RunOne:
    @workflow.run
    async def run(self, name: str, activity_id: str, retry_s: float, attempts: int) -> str:
        return await workflow.execute_activity(
            name,
            activity_id=activity_id,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=retry_s),
                maximum_attempts=attempts,
            ),
        )


ACTIVITIES = [heartbeat_until_paused, stop_when_paused_then_succeed, fail_first_call]


async def pending(handle: WorkflowHandle, activity_id: str):
    described = await handle.describe()
    for info in described.raw_description.pending_activities:
        if info.activity_id == activity_id:
            return info
    return None


async def wait_for_retry(handle: WorkflowHandle, activity_id: str):
    """Waits until the activity's first attempt failed and its second waits for its backoff."""

    async def waiting_retry():
        info = await pending(handle, activity_id)
        return info if info and info.attempt == 2 else None

    return await wait_for(waiting_retry, what="the retry to be scheduled")


def execution(handle: WorkflowHandle) -> WorkflowExecution:
    return WorkflowExecution(workflow_id=handle.id)


async def start(client: Client, task_queue: str, name: str, retry_s: float = 1.0, attempts: int = 0):
    activity_id = new_id("act")
    handle = await client.start_workflow(
        RunOne.run, args=[name, activity_id, retry_s, attempts], id=new_id(), task_queue=task_queue
    )
    return handle, activity_id


async def start_unpolled(client: Client, task_queue: str, name: str, retry_s: float = 1.0):
    """Starts RunOne and waits until its activity is scheduled, with no activity worker."""
    handle, activity_id = await start(client, task_queue, name, retry_s)
    async with new_worker(client, task_queue, [RunOne]):
        await wait_for(lambda: pending(handle, activity_id), what="the activity to be scheduled")
    return handle, activity_id


async def pause(client: Client, handle: WorkflowHandle, activity_id: str, request_id: str = "") -> None:
    await client.workflow_service.pause_activity(
        PauseActivityRequest(
            namespace=client.namespace,
            execution=execution(handle),
            id=activity_id,
            identity="operator",
            reason="investigating",
            request_id=request_id,
        )
    )


async def test_pausing_a_running_activity_cancels_it_through_its_heartbeat(client: Client, task_queue: str):
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        handle, activity_id = await start(client, task_queue, "heartbeat_until_paused")
        await wait_for(lambda: activity_id in calls, what="the activity to start")
        info = await pending(handle, activity_id)
        assert info is not None and not info.paused
        assert info.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        await pause(client, handle, activity_id)
        # The activity caught the cancel the pause caused and completed normally.
        assert await handle.result() == "paused=True"


async def test_a_paused_activity_is_not_retried_until_unpaused(client: Client, task_queue: str):
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES, max_heartbeat_throttle_interval=timedelta(milliseconds=300), default_heartbeat_throttle_interval=timedelta(milliseconds=300)):
        handle, activity_id = await start(client, task_queue, "stop_when_paused_then_succeed", retry_s=0.1)
        await wait_for(lambda: activity_id in calls, what="the activity to start")
        await pause(client, handle, activity_id, request_id="pause-1")
        # A retried pause with the same request id succeeds; another pause is refused.
        await pause(client, handle, activity_id, request_id="pause-1")
        with pytest.raises(RPCError) as refused:
            await pause(client, handle, activity_id, request_id="pause-2")
        assert refused.value.status == RPCStatusCode.FAILED_PRECONDITION

        async def paused_waiting():
            info = await pending(handle, activity_id)
            return info if info and info.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED else None

        info = await wait_for(paused_waiting, what="the failed attempt to leave the activity PAUSED")
        assert info.paused and info.attempt == 2
        assert info.pause_info.manual.identity == "operator"
        assert info.pause_info.manual.reason == "investigating"
        assert info.heartbeat_details.payloads, "the failed attempt's heartbeat details are kept"
        # Far past the 0.1 s retry interval: no second call while paused.
        await asyncio.sleep(1.5)
        assert len(calls[activity_id]) == 1
        await client.workflow_service.unpause_activity(
            UnpauseActivityRequest(namespace=client.namespace, execution=execution(handle), id=activity_id)
        )
        assert await handle.result() == "attempt 2"
        # The second attempt got the first one's heartbeat details.
        assert calls[activity_id][1][1], calls[activity_id]


async def test_unpausing_an_activity_in_retry_backoff_runs_it_at_once(client: Client, task_queue: str):
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        handle, activity_id = await start(client, task_queue, "fail_first_call", retry_s=3600)
        await wait_for_retry(handle, activity_id)
        await pause(client, handle, activity_id)
        info = await pending(handle, activity_id)
        assert info.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED
        await client.workflow_service.unpause_activity(
            UnpauseActivityRequest(namespace=client.namespace, execution=execution(handle), id=activity_id)
        )
        # Not an hour later: unpausing schedules the waiting attempt now.
        assert await asyncio.wait_for(handle.result(), 15) == "attempt 2"


async def test_resetting_an_activity_restarts_its_attempts_now(client: Client, task_queue: str):
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        handle, activity_id = await start(client, task_queue, "fail_first_call", retry_s=3600)
        waiting = await wait_for_retry(handle, activity_id)
        # Describe shows when the waiting attempt is due: in about an hour.
        started = (await handle.describe()).raw_description.workflow_execution_info.start_time
        due_in = waiting.next_attempt_schedule_time.ToDatetime() - started.ToDatetime()
        assert 3500 < due_in.total_seconds() < 3700, due_in
        # ... after the failed attempt's end by the retry interval.
        assert waiting.current_retry_interval.ToSeconds() == 3600, waiting.current_retry_interval
        ended = waiting.last_attempt_complete_time.ToDatetime()
        gap = waiting.next_attempt_schedule_time.ToDatetime() - ended
        assert abs(gap - timedelta(hours=1)) < timedelta(seconds=1), gap
        await client.workflow_service.reset_activity(
            ResetActivityRequest(namespace=client.namespace, execution=execution(handle), id=activity_id)
        )
        assert await asyncio.wait_for(handle.result(), 15) == "attempt 1"


async def test_reset_keeps_a_paused_activity_paused_when_asked(client: Client, task_queue: str):
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        handle, activity_id = await start(client, task_queue, "fail_first_call", retry_s=3600)
        await wait_for_retry(handle, activity_id)
        await pause(client, handle, activity_id)
        await client.workflow_service.reset_activity(
            ResetActivityRequest(
                namespace=client.namespace, execution=execution(handle), id=activity_id, keep_paused=True
            )
        )
        info = await pending(handle, activity_id)
        assert info.paused and info.attempt == 1
        assert info.state == PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED
        await asyncio.sleep(1)
        assert len(calls[activity_id]) == 1
        await client.workflow_service.reset_activity(
            ResetActivityRequest(namespace=client.namespace, execution=execution(handle), id=activity_id)
        )
        assert await asyncio.wait_for(handle.result(), 15) == "attempt 1"


async def test_updated_retry_options_reschedule_a_waiting_retry(client: Client, task_queue: str):
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        handle, activity_id = await start(client, task_queue, "fail_first_call", retry_s=3600)
        await wait_for_retry(handle, activity_id)
        response = await client.workflow_service.update_activity_options(
            UpdateActivityOptionsRequest(
                namespace=client.namespace,
                execution=execution(handle),
                id=activity_id,
                activity_options=ActivityOptions(
                    retry_policy=RetryPolicyProto(initial_interval=Duration(seconds=1)),
                    heartbeat_timeout=Duration(seconds=5),
                ),
                update_mask=FieldMask(paths=["retry_policy.initial_interval", "heartbeat_timeout"]),
            )
        )
        options = response.activity_options
        assert options.retry_policy.initial_interval.ToSeconds() == 1
        assert options.heartbeat_timeout.ToSeconds() == 5
        assert options.start_to_close_timeout.ToSeconds() == 30
        assert options.task_queue.name == task_queue
        info = await pending(handle, activity_id)
        assert info.activity_options.retry_policy.initial_interval.ToSeconds() == 1
        assert await asyncio.wait_for(handle.result(), 15) == "attempt 2"


async def test_activity_options_restore_to_those_scheduled(client: Client, task_queue: str):
    handle, activity_id = await start_unpolled(client, task_queue, "fail_first_call", retry_s=7)
    update = UpdateActivityOptionsRequest(
        namespace=client.namespace,
        execution=execution(handle),
        id=activity_id,
        activity_options=ActivityOptions(start_to_close_timeout=Duration(seconds=12)),
        update_mask=FieldMask(paths=["start_to_close_timeout"]),
    )
    changed = await client.workflow_service.update_activity_options(update)
    assert changed.activity_options.start_to_close_timeout.ToSeconds() == 12
    restored = await client.workflow_service.update_activity_options(
        UpdateActivityOptionsRequest(
            namespace=client.namespace, execution=execution(handle), id=activity_id, restore_original=True
        )
    )
    assert restored.activity_options.start_to_close_timeout.ToSeconds() == 30
    assert restored.activity_options.retry_policy.initial_interval.ToSeconds() == 7
    info = await pending(handle, activity_id)
    assert info.activity_options.start_to_close_timeout.ToSeconds() == 30
    await handle.terminate()


async def test_bad_activity_control_requests_are_refused(client: Client, task_queue: str):
    handle, activity_id = await start_unpolled(client, task_queue, "fail_first_call")
    service = client.workflow_service
    ns = client.namespace

    async def code(call) -> RPCStatusCode:
        with pytest.raises(RPCError) as refused:
            await call
        return refused.value.status

    assert await code(service.pause_activity(PauseActivityRequest(namespace=ns, execution=execution(handle)))) == RPCStatusCode.INVALID_ARGUMENT
    assert await code(service.pause_activity(PauseActivityRequest(namespace=ns, id=activity_id))) == RPCStatusCode.INVALID_ARGUMENT
    assert await code(service.pause_activity(PauseActivityRequest(namespace=ns, execution=execution(handle), id="nope"))) == RPCStatusCode.NOT_FOUND
    assert await code(service.unpause_activity(UnpauseActivityRequest(namespace=ns, execution=execution(handle), type="nope"))) == RPCStatusCode.NOT_FOUND
    assert await code(service.update_activity_options(UpdateActivityOptionsRequest(namespace=ns, execution=execution(handle), id=activity_id, activity_options=ActivityOptions()))) == RPCStatusCode.INVALID_ARGUMENT
    assert await code(service.update_activity_options(UpdateActivityOptionsRequest(namespace=ns, execution=execution(handle), id=activity_id, restore_original=True, update_mask=FieldMask(paths=["heartbeat_timeout"])))) == RPCStatusCode.INVALID_ARGUMENT
    assert await code(service.update_activity_options(UpdateActivityOptionsRequest(namespace=ns, execution=execution(handle), id=activity_id, activity_options=ActivityOptions(retry_policy=RetryPolicyProto(backoff_coefficient=0.5)), update_mask=FieldMask(paths=["retry_policy.backoff_coefficient"])))) == RPCStatusCode.INVALID_ARGUMENT
    # Unpausing an activity that is not paused changes nothing and succeeds.
    await service.unpause_activity(UnpauseActivityRequest(namespace=ns, execution=execution(handle), unpause_all=True))
    info = await pending(handle, activity_id)
    assert not info.paused
    await handle.terminate()
    assert await code(service.pause_activity(PauseActivityRequest(namespace=ns, execution=execution(handle), id=activity_id))) == RPCStatusCode.NOT_FOUND


async def test_temporal_activity_commands(client: Client, task_queue: str, cli):
    handle, activity_id = await start_unpolled(client, task_queue, "fail_first_call")
    target = ["--workflow-id", handle.id, "--activity-id", activity_id]
    await cli.run("activity", "pause", *target, "--reason", "cli pause")
    info = await pending(handle, activity_id)
    assert info.paused and info.pause_info.manual.reason == "cli pause"
    await cli.run("activity", "unpause", *target)
    info = await pending(handle, activity_id)
    assert not info.paused
    await cli.run("activity", "update-options", *target, "--start-to-close-timeout", "45s", "--retry-maximum-attempts", "9")
    info = await pending(handle, activity_id)
    assert info.activity_options.start_to_close_timeout.ToSeconds() == 45
    assert info.maximum_attempts == 9
    await cli.run("activity", "reset", *target, "--restore-original-options")
    info = await pending(handle, activity_id)
    assert info.activity_options.start_to_close_timeout.ToSeconds() == 30
    assert info.attempt == 1
    await cli.run("activity", "pause", *target)
    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        await asyncio.sleep(1)
        assert activity_id not in calls, "a paused activity was dispatched"
        await cli.run("activity", "unpause", *target)
        # First call fails, the retry (1 s later) succeeds.
        assert await asyncio.wait_for(handle.result(), 15) == "attempt 2"


async def test_batch_unpause_and_update_activity_options(client: Client, task_queue: str):
    from temporalio.api.batch.v1 import BatchOperationUnpauseActivities, BatchOperationUpdateActivityOptions
    from temporalio.api.enums.v1 import BatchOperationState
    from temporalio.api.workflowservice.v1 import DescribeBatchOperationRequest, StartBatchOperationRequest

    async with new_worker(client, task_queue, [RunOne], ACTIVITIES):
        started = [await start(client, task_queue, "fail_first_call", retry_s=3600) for _ in range(3)]
        for handle, activity_id in started:
            await wait_for_retry(handle, activity_id)
        for handle, activity_id in started[:2]:
            await pause(client, handle, activity_id)
        ids = ", ".join(f"'{h.id}'" for h, _ in started)

        async def run_job(**operation) -> int:
            job_id = new_id("job")
            await client.workflow_service.start_batch_operation(
                StartBatchOperationRequest(
                    namespace=client.namespace,
                    job_id=job_id,
                    reason="test",
                    visibility_query=f"WorkflowId IN ({ids})",
                    **operation,
                )
            )

            async def finished():
                job = await client.workflow_service.describe_batch_operation(
                    DescribeBatchOperationRequest(namespace=client.namespace, job_id=job_id)
                )
                return job if job.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED else None

            job = await wait_for(finished, timeout=20, what="the batch job to complete")
            assert job.failure_operation_count == 0, job
            return job.total_operation_count

        # Only the two runs with a paused fail_first_call are targets, as in Temporal.
        unpause = BatchOperationUnpauseActivities(type="fail_first_call")
        assert await run_job(unpause_activities_operation=unpause) == 2
        for handle, _ in started[:2]:
            assert await asyncio.wait_for(handle.result(), 15) == "attempt 2"
        # The third one's hour-long backoff becomes a second by a batch option update.
        update = BatchOperationUpdateActivityOptions(
            match_all=True,
            activity_options=ActivityOptions(retry_policy=RetryPolicyProto(initial_interval=Duration(seconds=1))),
            update_mask=FieldMask(paths=["retry_policy.initial_interval"]),
        )
        assert await run_job(update_activity_options_operation=update) == 1
        assert await asyncio.wait_for(started[2][0].result(), 15) == "attempt 2"
