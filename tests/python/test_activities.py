"""Activities: results, retries, timeouts, heartbeats, cancellation and async completion."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from helpers import event_types, history_events, new_id, new_worker, wait_for
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
    TimeoutType,
)
from temporalio.api.enums.v1 import RateLimitSource, TaskQueueType
from temporalio.api.taskqueue.v1 import RateLimit, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, UpdateTaskQueueConfigRequest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import ActivityCancellationType

# Per workflow id: what the activities saw, so tests can assert on attempts.
ATTEMPTS: dict[str, list[int]] = defaultdict(list)
HEARTBEAT_DETAILS: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
CANCELLED: set[str] = set()
TASK_TOKENS: dict[str, bytes] = {}
FAST_RETRY = dict(initial_interval=timedelta(milliseconds=100), backoff_coefficient=2.0)


def _record() -> int:
    info = activity.info()
    ATTEMPTS[info.workflow_id].append(info.attempt)
    return info.attempt


@activity.defn
async def echo(value: str) -> str:
    _record()
    return f"echo {value}"


@activity.defn
async def flaky(succeed_on: int) -> int:
    attempt = _record()
    if attempt < succeed_on:
        raise ApplicationError(f"attempt {attempt} failed", type="Flaky")
    return attempt


@activity.defn
async def fail_with_type(error_type: str) -> None:
    _record()
    raise ApplicationError("typed failure", type=error_type)


@activity.defn
async def fail_non_retryable() -> None:
    _record()
    raise ApplicationError("do not retry me", type="Whatever", non_retryable=True)


@activity.defn
async def slow_first_attempt() -> int:
    attempt = _record()
    if attempt == 1:
        await asyncio.sleep(30)  # cancelled by the worker when start-to-close passes
    return attempt


@activity.defn
async def sleep_forever() -> None:
    _record()
    await asyncio.sleep(3600)


@activity.defn
async def heartbeat_then_fail() -> tuple[int, list[Any]]:
    info = activity.info()
    attempt = _record()
    HEARTBEAT_DETAILS[info.workflow_id].append(tuple(info.heartbeat_details))
    if attempt == 1:
        activity.heartbeat("progress", 5)
        await asyncio.sleep(0.3)
        raise ApplicationError("crash after heartbeat")
    return attempt, list(info.heartbeat_details)


@activity.defn
async def heartbeat_until_cancelled() -> str:
    wf_id = activity.info().workflow_id
    _record()
    try:
        while True:
            activity.heartbeat("alive")
            await asyncio.sleep(0.2)
    except asyncio.CancelledError:
        CANCELLED.add(wf_id)
        raise


@activity.defn
async def complete_later() -> str:
    info = activity.info()
    _record()
    TASK_TOKENS[info.workflow_id] = info.task_token
    activity.raise_complete_async()


@workflow.defn
class RunActivity:
    """Runs one activity named by the test with the given options; returns its result or a
    description of the ActivityError."""

    @workflow.run
    async def run(self, name: str, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        for key in ("start_to_close_timeout", "schedule_to_close_timeout", "heartbeat_timeout"):
            if key in options:
                opts[key] = timedelta(seconds=options[key])
        if "retry" in options:
            r = options["retry"]
            opts["retry_policy"] = RetryPolicy(
                initial_interval=timedelta(milliseconds=r.get("initial_ms", 100)),
                backoff_coefficient=r.get("backoff", 2.0),
                maximum_attempts=r.get("max_attempts", 0),
                non_retryable_error_types=r.get("non_retryable", None),
            )
        if "activity_id" in options:
            opts["activity_id"] = options["activity_id"]
        try:
            result = await workflow.execute_activity(name, args=args, **opts)
            return {"result": result}
        except ActivityError as err:
            cause = err.cause
            return {
                "error": type(cause).__name__,
                "message": cause.message if cause else None,
                "cause_type": getattr(cause, "type", None) if isinstance(cause, ApplicationError) else None,
                "timeout_type": int(cause.type) if isinstance(cause, TimeoutError) and cause.type else None,
                "retry_state": int(err.retry_state) if err.retry_state else None,
                "activity_id": err.activity_id,
                "activity_type": err.activity_type,
            }


@workflow.defn
class CancelActivity:
    @workflow.run
    async def run(self) -> str:
        handle = workflow.start_activity(
            heartbeat_until_cancelled,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=2),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await workflow.sleep(1)
        handle.cancel()
        try:
            await handle
        except ActivityError as err:
            assert isinstance(err.cause, CancelledError), repr(err.cause)
            return "activity cancelled"
        return "activity not cancelled"


ACTIVITIES = [
    echo,
    flaky,
    fail_with_type,
    fail_non_retryable,
    slow_first_attempt,
    sleep_forever,
    heartbeat_then_fail,
    heartbeat_until_cancelled,
    complete_later,
]
WORKFLOWS = [RunActivity, CancelActivity]


async def run_activity(client: Client, task_queue: str, name: str, args: list[Any], **options: Any):
    wf_id = new_id()
    handle = await client.start_workflow(RunActivity.run, args=[name, args, options], id=wf_id, task_queue=task_queue)
    return handle, await handle.result()


ACTIVITY_HISTORY = [
    "WorkflowExecutionStarted",
    "WorkflowTaskScheduled",
    "WorkflowTaskStarted",
    "WorkflowTaskCompleted",
    "ActivityTaskScheduled",
    "ActivityTaskStarted",
    "ActivityTaskCompleted",
    "WorkflowTaskScheduled",
    "WorkflowTaskStarted",
    "WorkflowTaskCompleted",
    "WorkflowExecutionCompleted",
]


def attrs(events, field: str):
    return [getattr(e, field) for e in events if e.HasField(field)]


async def test_activity_result(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(client, task_queue, "echo", ["hi"], start_to_close_timeout=5)
    assert out == {"result": "echo hi"}
    assert ATTEMPTS[handle.id] == [1]
    assert await event_types(handle) == ACTIVITY_HISTORY
    events = await history_events(handle)
    (scheduled,) = attrs(events, "activity_task_scheduled_event_attributes")
    assert scheduled.activity_type.name == "echo"
    assert scheduled.task_queue.name == task_queue
    assert scheduled.start_to_close_timeout.ToTimedelta() == timedelta(seconds=5)
    (started,) = attrs(events, "activity_task_started_event_attributes")
    assert started.scheduled_event_id == 5 and started.attempt == 1
    (completed,) = attrs(events, "activity_task_completed_event_attributes")
    assert completed.scheduled_event_id == 5 and completed.started_event_id == 6


async def test_activity_retries_with_backoff(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "flaky", [3], start_to_close_timeout=5, retry={"initial_ms": 100, "max_attempts": 5}
        )
    assert out == {"result": 3}
    assert ATTEMPTS[handle.id] == [1, 2, 3]
    # Retries are not in history: one scheduled/started/completed, the started event tells the
    # attempt and carries the last failure.
    assert await event_types(handle) == ACTIVITY_HISTORY
    (started,) = attrs(await history_events(handle), "activity_task_started_event_attributes")
    assert started.attempt == 3
    assert started.last_failure.message == "attempt 2 failed"
    assert started.last_failure.application_failure_info.type == "Flaky"


async def test_activity_maximum_attempts(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "fail_with_type", ["Boom"], start_to_close_timeout=5,
            retry={"initial_ms": 100, "max_attempts": 3},
        )
    assert out["error"] == "ApplicationError"
    assert out["cause_type"] == "Boom"
    assert out["retry_state"] == RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert out["activity_type"] == "fail_with_type"
    assert ATTEMPTS[handle.id] == [1, 2, 3]
    types = await event_types(handle)
    assert types[4:7] == ["ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskFailed"]
    events = await history_events(handle)
    (started,) = attrs(events, "activity_task_started_event_attributes")
    assert started.attempt == 3
    (failed,) = attrs(events, "activity_task_failed_event_attributes")
    assert failed.failure.message == "typed failure"
    assert failed.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED


async def test_activity_non_retryable_error_types(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "fail_with_type", ["Fatal"], start_to_close_timeout=5,
            retry={"max_attempts": 10, "non_retryable": ["Fatal"]},
        )
        other, other_out = await run_activity(
            client, task_queue, "fail_with_type", ["NotFatal"], start_to_close_timeout=5,
            retry={"max_attempts": 2, "non_retryable": ["Fatal"]},
        )
    assert out["cause_type"] == "Fatal"
    assert out["retry_state"] == RetryState.NON_RETRYABLE_FAILURE
    assert ATTEMPTS[handle.id] == [1]
    assert other_out["retry_state"] == RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert ATTEMPTS[other.id] == [1, 2]


async def test_activity_application_error_non_retryable(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "fail_non_retryable", [], start_to_close_timeout=5, retry={"max_attempts": 10}
        )
    assert out["error"] == "ApplicationError"
    assert out["message"] == "do not retry me"
    assert out["retry_state"] == RetryState.NON_RETRYABLE_FAILURE
    assert ATTEMPTS[handle.id] == [1]
    (failed,) = attrs(await history_events(handle), "activity_task_failed_event_attributes")
    assert failed.failure.application_failure_info.non_retryable


async def test_activity_start_to_close_timeout_then_retry(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "slow_first_attempt", [], start_to_close_timeout=1, retry={"max_attempts": 3}
        )
    assert out == {"result": 2}
    assert ATTEMPTS[handle.id] == [1, 2]
    assert await event_types(handle) == ACTIVITY_HISTORY
    (started,) = attrs(await history_events(handle), "activity_task_started_event_attributes")
    assert started.attempt == 2
    assert started.last_failure.timeout_failure_info.timeout_type == TimeoutType.START_TO_CLOSE


async def test_activity_start_to_close_timeout_final(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "sleep_forever", [], start_to_close_timeout=1, retry={"max_attempts": 1}
        )
    assert out["error"] == "TimeoutError"
    assert out["timeout_type"] == TimeoutType.START_TO_CLOSE
    assert out["retry_state"] == RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert (await event_types(handle))[4:7] == ["ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskTimedOut"]


async def test_activity_schedule_to_close_timeout(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(client, task_queue, "sleep_forever", [], schedule_to_close_timeout=1.5)
    assert out["error"] == "TimeoutError"
    assert out["timeout_type"] == TimeoutType.SCHEDULE_TO_CLOSE
    assert out["retry_state"] == RetryState.TIMEOUT
    assert (await event_types(handle))[4:7] == ["ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskTimedOut"]
    (timed_out,) = attrs(await history_events(handle), "activity_task_timed_out_event_attributes")
    assert timed_out.failure.timeout_failure_info.timeout_type == TimeoutType.SCHEDULE_TO_CLOSE


async def test_activity_schedule_to_close_timeout_without_worker(client: Client, task_queue: str) -> None:
    """No worker polls the activity's task queue: it times out without ever starting. Temporal
    reports it as SCHEDULE_TO_START (which defaults to the schedule-to-close timeout)."""
    async with new_worker(client, task_queue, WORKFLOWS, []):
        handle, out = await run_activity(client, task_queue, "echo", ["never"], schedule_to_close_timeout=1)
    assert out["error"] == "TimeoutError"
    assert out["timeout_type"] == TimeoutType.SCHEDULE_TO_START
    assert out["retry_state"] == RetryState.TIMEOUT
    types = await event_types(handle)
    assert "ActivityTaskStarted" not in types
    assert types[4:6] == ["ActivityTaskScheduled", "ActivityTaskTimedOut"]


async def test_activity_heartbeat_timeout(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "sleep_forever", [], start_to_close_timeout=20, heartbeat_timeout=1,
            retry={"max_attempts": 1},
        )
    assert out["error"] == "TimeoutError"
    assert out["timeout_type"] == TimeoutType.HEARTBEAT
    (timed_out,) = attrs(await history_events(handle), "activity_task_timed_out_event_attributes")
    assert timed_out.failure.timeout_failure_info.timeout_type == TimeoutType.HEARTBEAT


async def test_heartbeat_details_reach_next_attempt(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle, out = await run_activity(
            client, task_queue, "heartbeat_then_fail", [], start_to_close_timeout=10, heartbeat_timeout=5,
            retry={"max_attempts": 3},
        )
    assert out == {"result": [2, ["progress", 5]]}
    assert HEARTBEAT_DETAILS[handle.id] == [(), ("progress", 5)]


async def test_activity_cancellation_through_heartbeat(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        handle = await client.start_workflow(CancelActivity.run, id=new_id(), task_queue=task_queue)
        assert await handle.result() == "activity cancelled"
    assert handle.id in CANCELLED
    types = await event_types(handle)
    assert types[4:6] == ["ActivityTaskScheduled", "TimerStarted"]
    assert "ActivityTaskStarted" in types
    assert types.index("ActivityTaskCancelRequested") < types.index("ActivityTaskCanceled")
    assert types[-1] == "WorkflowExecutionCompleted"


async def test_async_completion_by_task_token(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        wf_id = new_id()
        handle = await client.start_workflow(
            RunActivity.run, args=["complete_later", [], {"start_to_close_timeout": 30}], id=wf_id, task_queue=task_queue
        )
        token = await wait_for(lambda: TASK_TOKENS.get(wf_id), what="activity task token")
        activity_handle = client.get_async_activity_handle(task_token=token)
        await activity_handle.heartbeat("still working")
        await activity_handle.complete("finished elsewhere")
        assert await handle.result() == {"result": "finished elsewhere"}
    assert await event_types(handle) == ACTIVITY_HISTORY
    # Completing twice: the activity (and here its workflow) is gone.
    with pytest.raises(RPCError) as err:
        await activity_handle.complete("again")
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_async_completion_by_activity_id(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        wf_id = new_id()
        handle = await client.start_workflow(
            RunActivity.run,
            args=["complete_later", [], {"start_to_close_timeout": 30, "activity_id": "act-1", "retry": {"max_attempts": 1}}],
            id=wf_id,
            task_queue=task_queue,
        )
        await wait_for(lambda: TASK_TOKENS.get(wf_id), what="activity started")
        activity_handle = client.get_async_activity_handle(workflow_id=wf_id, run_id=handle.result_run_id, activity_id="act-1")
        await activity_handle.heartbeat("half way")
        desc = await handle.describe()
        (pending,) = desc.raw_description.pending_activities
        assert pending.activity_id == "act-1"
        assert pending.activity_type.name == "complete_later"
        assert pending.heartbeat_details.payloads
        await activity_handle.fail(ApplicationError("failed elsewhere", type="Remote"))
        out = await handle.result()
    assert out["error"] == "ApplicationError"
    assert out["message"] == "failed elsewhere"
    assert out["cause_type"] == "Remote"
    assert out["activity_id"] == "act-1"
    assert (await event_types(handle))[4:7] == ["ActivityTaskScheduled", "ActivityTaskStarted", "ActivityTaskFailed"]


async def test_async_completion_by_activity_id_complete(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, WORKFLOWS, ACTIVITIES):
        wf_id = new_id()
        handle = await client.start_workflow(
            RunActivity.run,
            args=["complete_later", [], {"start_to_close_timeout": 30, "activity_id": "act-2"}],
            id=wf_id,
            task_queue=task_queue,
        )
        await wait_for(lambda: TASK_TOKENS.get(wf_id), what="activity started")
        # Without a run id: the current run.
        await client.get_async_activity_handle(workflow_id=wf_id, run_id=None, activity_id="act-2").complete(
            {"by": "id"}
        )
        assert await handle.result() == {"result": {"by": "id"}}


@activity.defn(name="stamp")
async def stamp() -> float:
    return asyncio.get_running_loop().time()


@workflow.defn(name="Stamps")
class Stamps:
    @workflow.run
    async def run(self, count: int) -> list[float]:
        return list(
            await asyncio.gather(
                *(
                    workflow.execute_activity("stamp", start_to_close_timeout=timedelta(seconds=30))
                    for _ in range(count)
                )
            )
        )


async def test_the_task_queue_dispatches_activities_at_the_rate_its_workers_ask_for(
    client: Client, task_queue: str
) -> None:
    # Two a second with a burst of two: the last of 8 starts at least 2.5 s after the first.
    async with new_worker(
        client,
        task_queue,
        [Stamps],
        [stamp],
        max_task_queue_activities_per_second=2,
        max_concurrent_activities=20,
    ):
        stamps = await client.execute_workflow("Stamps", 8, id=new_id(), task_queue=task_queue)
        spread = max(stamps) - min(stamps)
        assert 2.5 <= spread < 6, f"8 activities at 2/s started over {spread:.2f}s"
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        assert described.effective_rate_limit.requests_per_second == 2
        assert described.effective_rate_limit.rate_limit_source == RateLimitSource.RATE_LIMIT_SOURCE_WORKER

    # The last poller to name a rate sets it.
    async with new_worker(
        client,
        task_queue,
        [Stamps],
        [stamp],
        max_task_queue_activities_per_second=100,
        max_concurrent_activities=20,
    ):
        stamps = await client.execute_workflow("Stamps", 8, id=new_id(), task_queue=task_queue)
        assert max(stamps) - min(stamps) < 1.5


async def test_a_rate_limit_set_through_the_api_overrides_the_workers(client: Client, task_queue: str) -> None:
    update = UpdateTaskQueueConfigRequest.RateLimitUpdate

    def configure(rate_limit: update) -> UpdateTaskQueueConfigRequest:
        return UpdateTaskQueueConfigRequest(
            namespace=client.namespace,
            identity="ops",
            task_queue=task_queue,
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            update_queue_rate_limit=rate_limit,
        )

    for bad, words in [
        (update(rate_limit=RateLimit(requests_per_second=-1)), "must be non-negative"),
        (update(rate_limit=RateLimit(requests_per_second=1), reason="x" * 1001), "too long"),
    ]:
        with pytest.raises(RPCError) as err:
            await client.workflow_service.update_task_queue_config(configure(bad))
        assert err.value.status == RPCStatusCode.INVALID_ARGUMENT and words in err.value.message

    set_ = await client.workflow_service.update_task_queue_config(
        configure(update(rate_limit=RateLimit(requests_per_second=2), reason="protect the API"))
    )
    limit = set_.config.queue_rate_limit
    assert limit.rate_limit.requests_per_second == 2
    assert (limit.metadata.reason, limit.metadata.update_identity) == ("protect the API", "ops")

    describe = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        report_config=True,
    )
    described = await client.workflow_service.describe_task_queue(describe)
    assert described.effective_rate_limit.requests_per_second == 2
    assert described.effective_rate_limit.rate_limit_source == RateLimitSource.RATE_LIMIT_SOURCE_API
    assert described.config.queue_rate_limit.metadata.reason == "protect the API"

    # Workers asking for more get the API's rate.
    async with new_worker(
        client, task_queue, [Stamps], [stamp], max_task_queue_activities_per_second=100, max_concurrent_activities=20
    ):
        stamps = await client.execute_workflow("Stamps", 8, id=new_id(), task_queue=task_queue)
        spread = max(stamps) - min(stamps)
        assert 2.5 <= spread < 6, f"8 activities at 2/s started over {spread:.2f}s"

        # Removed: the workers' rate applies again.
        await client.workflow_service.update_task_queue_config(configure(update()))
        stamps = await client.execute_workflow("Stamps", 8, id=new_id(), task_queue=task_queue)
        assert max(stamps) - min(stamps) < 1.5
        described = await client.workflow_service.describe_task_queue(describe)
        assert described.effective_rate_limit.rate_limit_source == RateLimitSource.RATE_LIMIT_SOURCE_WORKER
        assert not described.config.queue_rate_limit.HasField("rate_limit")
