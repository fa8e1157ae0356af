"""Standalone activities: activities a client starts directly, with no workflow
(StartActivityExecution, DescribeActivityExecution, PollActivityExecution,
RequestCancelActivityExecution, TerminateActivityExecution, List/CountActivityExecutions and the
*ById completion calls), through ``client.start_activity``, ``client.execute_activity``,
``client.get_activity_handle``, ``client.list_activities`` and ``client.count_activities``, as
Temporal's dev server (1.32.0, where they are on by default) does them."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from helpers import NAMESPACE, Server, new_id, new_worker, wait_for
from temporalio import activity
from temporalio.api.common.v1 import ActivityType
from temporalio.api.enums.v1 import RetryState as RetryStateProto
from temporalio.api.errordetails.v1 import ActivityExecutionAlreadyStartedFailure
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DeleteActivityExecutionRequest,
    DescribeActivityExecutionRequest,
    RequestCancelActivityExecutionRequest,
    StartActivityExecutionRequest,
    TerminateActivityExecutionRequest,
)
from temporalio.client import (
    ActivityExecutionStatus,
    ActivityFailureError,
    ActivityHandle,
    Client,
    PendingActivityState,
)
from temporalio.common import (
    ActivityIDConflictPolicy,
    ActivityIDReusePolicy,
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import (
    ActivityAlreadyStartedError,
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    TimeoutType,
)
from temporalio.service import RPCError, RPCStatusCode

# What each activity saw, by activity id: its activity.info() per attempt, and whether it saw its
# cancellation.
INFOS: dict[str, list[activity.Info]] = defaultdict(list)
CANCELLED: set[str] = set()

# Fast retries, so retrying tests take well under a second per attempt.
FAST_RETRY = dict(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0)
# Heartbeats reach the server at once, so a cancel reaches a heartbeating activity quickly.
FAST_HEARTBEATS = dict(
    max_heartbeat_throttle_interval=timedelta(milliseconds=100),
    default_heartbeat_throttle_interval=timedelta(milliseconds=100),
)


def _record() -> activity.Info:
    info = activity.info()
    INFOS[info.activity_id].append(info)
    return info


@activity.defn
async def greet(name: str) -> str:
    _record()
    return f"hello {name}"


@activity.defn
async def flaky(succeed_on: int) -> int:
    attempt = _record().attempt
    if attempt < succeed_on:
        raise ApplicationError(f"attempt {attempt} failed", type="Flaky")
    return attempt


@activity.defn
async def always_fails() -> None:
    attempt = _record().attempt
    raise ApplicationError(f"attempt {attempt} failed", type="Always")


@activity.defn
async def fail_non_retryable() -> None:
    _record()
    raise ApplicationError("do not retry me", "some detail", type="Fatal", non_retryable=True)


@activity.defn
async def sleep_long() -> None:
    _record()
    await asyncio.sleep(30)  # cancelled by the worker when it shuts down


@activity.defn
async def heartbeat_until_cancelled() -> str:
    """Heartbeats until cancelled; then takes a second before it reports the cancel, so the test
    can look at the activity while its cancel is requested but not yet acknowledged."""
    info = _record()
    try:
        while True:
            activity.heartbeat("beating")
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        CANCELLED.add(info.activity_id)
        await asyncio.sleep(1)
        raise


@activity.defn
async def heartbeat_then_fail() -> list[Any]:
    """Attempt 1 heartbeats details and fails; later attempts return the details they got."""
    info = _record()
    if info.attempt == 1:
        activity.heartbeat("progress", 7)
        raise ApplicationError("first attempt fails", type="Flaky")
    return list(info.heartbeat_details)


@activity.defn
async def complete_later() -> str:
    _record()
    activity.raise_complete_async()


ACTIVITIES = [
    greet,
    flaky,
    always_fails,
    fail_non_retryable,
    sleep_long,
    heartbeat_until_cancelled,
    heartbeat_then_fail,
    complete_later,
]


def new_activity_id() -> str:
    return new_id("act")


async def unpolled(client: Client, task_queue: str, **kwargs: Any) -> ActivityHandle[Any]:
    """Starts an activity on a task queue no worker polls, so it stays SCHEDULED."""
    kwargs.setdefault("start_to_close_timeout", timedelta(seconds=30))
    return await client.start_activity("nobody_runs_this", id=new_activity_id(), task_queue=task_queue, **kwargs)


async def failure_of(handle: ActivityHandle[Any]) -> BaseException:
    """The cause of the ActivityFailureError that handle.result() raises."""
    with pytest.raises(ActivityFailureError) as failed:
        await asyncio.wait_for(handle.result(), 20)
    return failed.value.cause


async def retry_state(handle: ActivityHandle[Any]) -> int:
    described = await handle.describe(include_outcome=True)
    assert described.raw_outcome is not None, "a closed activity's describe has its outcome"
    return described.raw_outcome.retry_state


# --- results and describe ---------------------------------------------------------------------


async def test_execute_activity_runs_it_on_a_worker_outside_any_workflow(client: Client, task_queue: str):
    """execute_activity returns the worker's result; the worker's activity.info() has no workflow,
    the activity's run id (activity_run_id) and the client's namespace."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        result = await client.execute_activity(
            greet, "standalone", id=activity_id, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=10)
        )
    assert result == "hello standalone"
    [info] = INFOS[activity_id]
    assert info.workflow_id is None and info.workflow_run_id is None and info.workflow_type is None
    assert info.activity_run_id, "a standalone activity's task carries its run id"
    assert info.namespace == client.namespace
    assert info.activity_type == "greet" and info.task_queue == task_queue
    assert info.attempt == 1
    described = await client.get_activity_handle(activity_id).describe()
    assert described.activity_run_id == info.activity_run_id


async def test_start_activity_then_result_and_describe_of_the_completed_activity(client: Client, task_queue: str):
    """start_activity returns a handle with the run id; result() waits for the worker's result, also
    through get_activity_handle with or without the run id; describe of the completed activity
    shows COMPLETED with close time and duration, and its input and outcome on request."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            greet,
            "again",
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            schedule_to_close_timeout=timedelta(seconds=20),
        )
        assert handle.id == activity_id and handle.run_id
        assert await asyncio.wait_for(handle.result(), 20) == "hello again"
    assert await client.get_activity_handle(activity_id).result() == "hello again"
    by_run = client.get_activity_handle(activity_id, run_id=handle.run_id, result_type=str)
    assert await by_run.result() == "hello again"

    described = await handle.describe()
    assert described.activity_id == activity_id and described.activity_run_id == handle.run_id
    assert described.activity_type == "greet" and described.task_queue == task_queue
    assert described.namespace == client.namespace
    assert described.status == ActivityExecutionStatus.COMPLETED
    # A closed activity has no run state (PENDING_ACTIVITY_STATE_UNSPECIFIED).
    assert described.run_state is None
    assert described.attempt == 1
    assert described.schedule_time is not None and described.last_started_time is not None
    assert described.close_time is not None and described.close_time >= described.last_started_time
    # close_time - schedule_time, up to Python's microsecond rounding of the nanosecond times.
    assert described.execution_duration is not None
    assert abs(described.execution_duration - (described.close_time - described.schedule_time)) < timedelta(milliseconds=1)
    assert described.last_attempt_complete_time is not None
    assert described.last_worker_identity, "the identity of the worker that ran it"
    assert described.start_to_close_timeout == timedelta(seconds=10)
    assert described.schedule_to_close_timeout == timedelta(seconds=20)
    assert described.expiration_time == described.schedule_time + timedelta(seconds=20)
    # Input and outcome only when asked for.
    assert described.raw_input is None and described.raw_outcome is None
    full = await handle.describe(include_input=True, include_outcome=True)
    assert full.raw_input is not None
    assert await client.data_converter.decode(full.raw_input.payloads) == ["again"]
    assert full.raw_outcome is not None and full.raw_outcome.HasField("result")
    assert await client.data_converter.decode(full.raw_outcome.result.payloads) == ["hello again"]
    assert full.raw_outcome.retry_state == RetryStateProto.RETRY_STATE_UNSPECIFIED


async def test_describe_of_an_activity_no_worker_polls(client: Client, task_queue: str):
    """An activity nobody has picked up is RUNNING with run state SCHEDULED at attempt 1; its
    timeouts are normalized, its retry policy has Temporal's defaults filled in, and the fields of
    a started or closed activity are unset."""
    handle = await unpolled(
        client,
        task_queue,
        start_to_close_timeout=timedelta(seconds=30),
        schedule_to_close_timeout=timedelta(seconds=60),
    )
    described = await handle.describe()
    assert described.activity_run_id == handle.run_id
    assert described.activity_type == "nobody_runs_this"
    assert described.status == ActivityExecutionStatus.RUNNING
    assert described.run_state == PendingActivityState.SCHEDULED
    assert described.attempt == 1
    assert described.execution_time == described.schedule_time
    assert described.expiration_time == described.schedule_time + timedelta(seconds=60)
    # Normalized: schedule-to-start defaults to schedule-to-close; no heartbeat timeout is 0s, not
    # absent.
    assert described.schedule_to_close_timeout == timedelta(seconds=60)
    assert described.schedule_to_start_timeout == timedelta(seconds=60)
    assert described.start_to_close_timeout == timedelta(seconds=30)
    assert described.heartbeat_timeout == timedelta(0)
    assert described.retry_policy == RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=100),
        maximum_attempts=0,
    )
    for unset in (
        "close_time",
        "execution_duration",
        "last_started_time",
        "last_attempt_complete_time",
        "last_heartbeat_time",
        "last_worker_identity",
        "current_retry_interval",
        "next_attempt_schedule_time",
        "canceled_reason",
    ):
        assert getattr(described, unset) is None, f"{unset} = {getattr(described, unset)!r}"
    assert described.total_heartbeat_count == 0

    # With only a start-to-close timeout there is no overall deadline: no expiration time, and
    # schedule-to-close and schedule-to-start are 0s (unlimited).
    only_stc = await (await unpolled(client, task_queue)).describe()
    assert only_stc.expiration_time is None
    assert only_stc.schedule_to_close_timeout == timedelta(0)
    assert only_stc.schedule_to_start_timeout == timedelta(0)
    await handle.terminate()


# --- retries ----------------------------------------------------------------------------------


async def test_a_failing_activity_is_retried_until_it_succeeds(client: Client, task_queue: str):
    """Retryable ApplicationErrors retry the activity with the same run; the result is the
    successful attempt's, and describe shows attempt 3 and the last attempt's failure."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            flaky,
            3,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(**FAST_RETRY),
        )
        assert await asyncio.wait_for(handle.result(), 20) == 3
    assert [i.attempt for i in INFOS[activity_id]] == [1, 2, 3]
    assert {i.activity_run_id for i in INFOS[activity_id]} == {handle.run_id}
    described = await handle.describe(include_last_failure=True)
    assert described.status == ActivityExecutionStatus.COMPLETED
    assert described.attempt == 3
    # The failure of attempt 2 is still there after attempt 3 succeeded.
    assert described.raw_info.last_failure.message == "attempt 2 failed"
    assert described.raw_info.last_failure.application_failure_info.type == "Flaky"


async def test_a_non_retryable_failure_fails_the_activity_at_once(client: Client, task_queue: str):
    """A non-retryable ApplicationError fails the activity after one attempt: result() raises
    ActivityFailureError whose cause is the ApplicationError itself (no ActivityError wrapper)."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            fail_non_retryable,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(**FAST_RETRY),
        )
        cause = await failure_of(handle)
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.message == "do not retry me" and cause.type == "Fatal" and cause.non_retryable
    assert list(cause.details) == ["some detail"]
    assert len(INFOS[activity_id]) == 1
    assert (await handle.describe()).status == ActivityExecutionStatus.FAILED
    assert await retry_state(handle) == RetryStateProto.RETRY_STATE_NON_RETRYABLE_FAILURE


async def test_an_activity_fails_when_its_maximum_attempts_are_used_up(client: Client, task_queue: str):
    """With maximum_attempts=2 the second failure fails the activity with that attempt's error."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            always_fails,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=2, **FAST_RETRY),
        )
        cause = await failure_of(handle)
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.message == "attempt 2 failed" and cause.type == "Always"
    assert [i.attempt for i in INFOS[activity_id]] == [1, 2]
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.FAILED and described.attempt == 2
    assert await retry_state(handle) == RetryStateProto.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED


async def test_heartbeat_details_of_a_failed_attempt_reach_the_next_attempt(client: Client, task_queue: str):
    """Details heartbeated by attempt 1 are given to attempt 2 (activity.info().heartbeat_details),
    and describe shows them and the heartbeat count."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES, **FAST_HEARTBEATS):
        handle = await client.start_activity(
            heartbeat_then_fail,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(**FAST_RETRY),
        )
        assert await asyncio.wait_for(handle.result(), 20) == ["progress", 7]
    assert [list(i.heartbeat_details) for i in INFOS[activity_id]] == [[], ["progress", 7]]
    described = await handle.describe(include_heartbeat_details=True)
    assert described.attempt == 2
    assert described.total_heartbeat_count >= 1
    assert described.last_heartbeat_time is not None
    details = await client.data_converter.decode(described.raw_info.heartbeat_details.payloads)
    assert details == ["progress", 7]


# --- timeouts ---------------------------------------------------------------------------------


async def test_start_to_close_timeout(client: Client, task_queue: str):
    """An attempt that outlives start_to_close with no retries left times the activity out:
    ActivityFailureError caused by a TimeoutError of type START_TO_CLOSE."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            sleep_long,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        cause = await failure_of(handle)
    assert isinstance(cause, TimeoutError), repr(cause)
    assert cause.type == TimeoutType.START_TO_CLOSE
    assert cause.message == "activity StartToClose timeout"
    assert (await handle.describe()).status == ActivityExecutionStatus.TIMED_OUT
    assert await retry_state(handle) == RetryStateProto.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED


async def test_schedule_to_start_timeout(client: Client, task_queue: str):
    """An activity no worker picks up within schedule_to_start times out with SCHEDULE_TO_START."""
    handle = await unpolled(client, task_queue, schedule_to_start_timeout=timedelta(seconds=1))
    cause = await failure_of(handle)
    assert isinstance(cause, TimeoutError), repr(cause)
    assert cause.type == TimeoutType.SCHEDULE_TO_START
    assert cause.message == "activity ScheduleToStart timeout"
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.TIMED_OUT and described.attempt == 1
    assert await retry_state(handle) == RetryStateProto.RETRY_STATE_TIMEOUT


async def test_schedule_to_close_timeout(client: Client, task_queue: str):
    """A running attempt past schedule_to_close times the activity out with SCHEDULE_TO_CLOSE."""
    activity_id = new_activity_id()
    handle = await client.start_activity(
        sleep_long, id=activity_id, task_queue=task_queue, schedule_to_close_timeout=timedelta(seconds=1)
    )
    # Start-to-close defaults to schedule-to-close (1 s) from the attempt's start: a worker that
    # starts the attempt 0.3 s late makes sure schedule-to-close fires first.
    await asyncio.sleep(0.3)
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        cause = await failure_of(handle)
    assert isinstance(cause, TimeoutError), repr(cause)
    assert cause.type == TimeoutType.SCHEDULE_TO_CLOSE
    assert cause.message == "activity ScheduleToClose timeout"
    assert len(INFOS[activity_id]) == 1, "the worker did start it"
    assert (await handle.describe()).status == ActivityExecutionStatus.TIMED_OUT
    assert await retry_state(handle) == RetryStateProto.RETRY_STATE_TIMEOUT


async def test_a_retry_that_would_end_past_schedule_to_close_is_not_made(client: Client, task_queue: str):
    """An attempt times out (start_to_close) when its retry would begin after the
    schedule-to-close deadline: the activity times out at once with SCHEDULE_TO_CLOSE, retry
    state TIMEOUT, and Temporal's message saying it gave up retrying."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            sleep_long,
            id=activity_id,
            task_queue=task_queue,
            schedule_to_close_timeout=timedelta(seconds=20),
            start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=30)),
        )
        cause = await failure_of(handle)
    assert isinstance(cause, TimeoutError), repr(cause)
    assert cause.type == TimeoutType.SCHEDULE_TO_CLOSE
    assert cause.message == (
        "Not enough time to schedule next retry before activity ScheduleToClose timeout, giving up retrying"
    )
    assert await retry_state(handle) == RetryStateProto.RETRY_STATE_TIMEOUT
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.TIMED_OUT
    assert described.attempt == 1


# --- cancel and terminate ---------------------------------------------------------------------


async def test_cancelling_an_activity_no_worker_has_picked_up(client: Client, task_queue: str):
    """Cancelling a scheduled activity cancels it at once: result() raises ActivityFailureError
    caused by a CancelledError carrying the reason; describe shows CANCELED and the reason. A
    second cancel is refused with FAILED_PRECONDITION."""
    handle = await unpolled(client, task_queue)
    await handle.cancel(reason="not needed")
    cause = await failure_of(handle)
    assert isinstance(cause, CancelledError), repr(cause)
    assert cause.message == "Activity canceled"
    assert list(cause.details) == ["not needed"]
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.CANCELED
    assert described.run_state is None
    assert described.canceled_reason == "not needed"
    assert described.close_time is not None and described.execution_duration is not None
    # The SDK sends a fresh request id per cancel, so this is not a retry of the first one.
    with pytest.raises(RPCError) as again:
        await handle.cancel()
    assert again.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert again.value.message == "activity is in terminal state Canceled"


async def test_cancelling_a_running_activity_reaches_it_through_its_heartbeat(client: Client, task_queue: str):
    """Cancelling a started activity only requests the cancel (RUNNING, run state
    CANCEL_REQUESTED) until the worker learns of it from a heartbeat, the activity sees
    asyncio.CancelledError and reports the cancel; then the activity is CANCELED. A second cancel
    while the first is pending is refused with FAILED_PRECONDITION."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES, **FAST_HEARTBEATS):
        handle = await client.start_activity(
            heartbeat_until_cancelled,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=5),
        )

        async def started():
            described = await handle.describe()
            return described if described.run_state == PendingActivityState.STARTED else None

        running = await wait_for(started, what="the worker to start the activity")
        assert running.status == ActivityExecutionStatus.RUNNING
        assert running.last_started_time is not None and running.last_worker_identity
        await handle.cancel(reason="stop it")
        requested = await handle.describe()
        assert requested.status == ActivityExecutionStatus.RUNNING
        assert requested.run_state == PendingActivityState.CANCEL_REQUESTED
        assert requested.canceled_reason == "stop it"
        with pytest.raises(RPCError) as again:
            await handle.cancel()
        assert again.value.status == RPCStatusCode.FAILED_PRECONDITION
        assert again.value.message.startswith("cancellation already requested with request ID "), again.value.message
        cause = await failure_of(handle)
    assert activity_id in CANCELLED, "the activity saw its cancellation"
    assert isinstance(cause, CancelledError), repr(cause)
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.CANCELED
    assert described.canceled_reason == "stop it"


async def test_terminating_a_running_activity(client: Client, task_queue: str):
    """Terminating a started activity closes it at once as TERMINATED: result() raises
    ActivityFailureError caused by a TerminatedError with the reason; the worker's activity is
    cancelled when its next heartbeat finds the activity gone. Terminating it again, or cancelling
    it, is refused with FAILED_PRECONDITION."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES, **FAST_HEARTBEATS):
        handle = await client.start_activity(
            heartbeat_until_cancelled,
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=5),
        )
        await wait_for(lambda: INFOS.get(activity_id), what="the worker to start the activity")
        await handle.terminate(reason="shut it down")
        cause = await failure_of(handle)
        assert isinstance(cause, TerminatedError), repr(cause)
        assert cause.message == "shut it down"
        described = await handle.describe()
        assert described.status == ActivityExecutionStatus.TERMINATED
        assert described.run_state is None and described.attempt == 1
        assert described.close_time is not None and described.execution_duration is not None
        # Nothing tells the worker, but its next heartbeat gets NOT_FOUND, which the SDK treats
        # as a cancellation.
        await wait_for(lambda: activity_id in CANCELLED, what="the worker's activity to be cancelled")
    with pytest.raises(RPCError) as again:
        await handle.terminate(reason="again")
    assert again.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert again.value.message.startswith("already terminated with request ID "), again.value.message
    with pytest.raises(RPCError) as cancel:
        await handle.cancel()
    assert cancel.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert cancel.value.message == "activity is in terminal state Terminated"


async def test_terminating_a_closed_activity_is_refused(client: Client, task_queue: str):
    """Terminate of a closed (here: canceled) activity fails with FAILED_PRECONDITION."""
    handle = await unpolled(client, task_queue)
    await handle.cancel()
    with pytest.raises(RPCError) as refused:
        await handle.terminate()
    assert refused.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert refused.value.message == "invalid transition from Canceled"


async def test_cancel_and_terminate_retried_with_the_same_request_id_succeed(client: Client, task_queue: str):
    """A cancel or terminate request repeated with its request id is a no-op success, even after
    the activity closed; a new request id is refused (FAILED_PRECONDITION)."""
    cancelled = await unpolled(client, task_queue)

    def cancel(request_id: str) -> RequestCancelActivityExecutionRequest:
        return RequestCancelActivityExecutionRequest(
            namespace=client.namespace, activity_id=cancelled.id, request_id=request_id, reason="retried"
        )

    await client.workflow_service.request_cancel_activity_execution(cancel("cancel-1"))
    await client.workflow_service.request_cancel_activity_execution(cancel("cancel-1"))
    with pytest.raises(RPCError) as refused:
        await client.workflow_service.request_cancel_activity_execution(cancel("cancel-2"))
    assert refused.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert (await cancelled.describe()).status == ActivityExecutionStatus.CANCELED

    terminated = await unpolled(client, task_queue)

    def terminate(request_id: str) -> TerminateActivityExecutionRequest:
        return TerminateActivityExecutionRequest(
            namespace=client.namespace,
            activity_id=terminated.id,
            run_id=terminated.run_id or "",
            request_id=request_id,
            reason="retried",
        )

    await client.workflow_service.terminate_activity_execution(terminate("terminate-1"))
    await client.workflow_service.terminate_activity_execution(terminate("terminate-1"))
    with pytest.raises(RPCError) as refused:
        await client.workflow_service.terminate_activity_execution(terminate("terminate-2"))
    assert refused.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert refused.value.message == "already terminated with request ID terminate-1"
    assert (await terminated.describe()).status == ActivityExecutionStatus.TERMINATED


# --- id policies ------------------------------------------------------------------------------


async def test_id_conflict_policy_while_the_activity_runs(client: Client, task_queue: str):
    """Starting a running activity's id again: FAIL (the default) raises
    ActivityAlreadyStartedError with the running run's id (gRPC ALREADY_EXISTS with
    ActivityExecutionAlreadyStartedFailure details); USE_EXISTING returns the running run."""
    handle = await unpolled(client, task_queue)
    with pytest.raises(ActivityAlreadyStartedError) as started:
        await client.start_activity(
            "nobody_runs_this", id=handle.id, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=30)
        )
    assert started.value.run_id == handle.run_id
    assert started.value.activity_id == handle.id
    rpc = started.value.__context__
    assert isinstance(rpc, RPCError) and rpc.status == RPCStatusCode.ALREADY_EXISTS
    assert rpc.message == "activity execution already started"
    details = ActivityExecutionAlreadyStartedFailure()
    assert rpc.grpc_status.details[0].Unpack(details) and details.run_id == handle.run_id
    assert details.start_request_id, "the request id of the start that created the run"

    existing = await client.start_activity(
        "nobody_runs_this",
        id=handle.id,
        task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=30),
        id_conflict_policy=ActivityIDConflictPolicy.USE_EXISTING,
    )
    assert existing.run_id == handle.run_id
    await handle.terminate()


async def test_id_reuse_policy_after_the_activity_closed(client: Client, task_queue: str):
    """Reusing a closed activity's id: REJECT_DUPLICATE raises ActivityAlreadyStartedError naming
    the closed run; ALLOW_DUPLICATE (the default) starts a new run, which the id alone now means;
    the old run stays reachable by its run id."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        first = await client.start_activity(
            greet, "one", id=activity_id, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=10)
        )
        assert await first.result() == "hello one"
        with pytest.raises(ActivityAlreadyStartedError) as rejected:
            await client.start_activity(
                greet,
                "two",
                id=activity_id,
                task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=10),
                id_reuse_policy=ActivityIDReusePolicy.REJECT_DUPLICATE,
            )
        assert rejected.value.run_id == first.run_id
        second = await client.start_activity(
            greet,
            "two",
            id=activity_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=10),
            id_reuse_policy=ActivityIDReusePolicy.ALLOW_DUPLICATE,
        )
        assert second.run_id and second.run_id != first.run_id
        assert await second.result() == "hello two"
    latest = await client.get_activity_handle(activity_id).describe()
    assert latest.activity_run_id == second.run_id
    old = client.get_activity_handle(activity_id, run_id=first.run_id)
    assert (await old.describe()).activity_run_id == first.run_id
    assert await old.result() == "hello one"
    assert {i.activity_run_id for i in INFOS[activity_id]} == {first.run_id, second.run_id}


# --- visibility -------------------------------------------------------------------------------


async def test_list_and_count_activities(client: Client, task_queue: str):
    """list_activities / count_activities find standalone activities by ActivityType, ActivityId
    and ExecutionStatus, GROUP BY ExecutionStatus counts per status, and list_workflows does not
    show them."""
    activity_type = f"listed_{uuid.uuid4().hex}"
    handles = [
        await client.start_activity(
            activity_type, id=new_activity_id(), task_queue=task_queue, start_to_close_timeout=timedelta(seconds=30)
        )
        for _ in range(3)
    ]
    await handles[0].terminate()
    by_type = f"ActivityType = '{activity_type}'"

    async def listed() -> list[Any] | None:
        found = [a async for a in client.list_activities(by_type)]
        statuses = sorted(a.status for a in found)
        want = sorted([ActivityExecutionStatus.TERMINATED] + [ActivityExecutionStatus.RUNNING] * 2)
        return found if statuses == want else None

    found = await wait_for(listed, timeout=15, interval=0.3, what=f"list_activities({by_type!r})")
    assert {(a.activity_id, a.activity_run_id) for a in found} == {(h.id, h.run_id) for h in handles}
    for a in found:
        assert a.activity_type == activity_type and a.task_queue == task_queue
        assert a.namespace == client.namespace and a.schedule_time is not None
        closed = a.status == ActivityExecutionStatus.TERMINATED
        assert (a.close_time is not None) == closed and (a.execution_duration is not None) == closed

    assert (await client.count_activities(by_type)).count == 3
    running = f"{by_type} AND ExecutionStatus = 'Running'"
    assert (await client.count_activities(running)).count == 2
    grouped = await client.count_activities(f"{by_type} GROUP BY ExecutionStatus")
    assert grouped.count == 3
    assert sorted((list(g.group_values), g.count) for g in grouped.groups) == [
        (["Running"], 2),
        (["Terminated"], 1),
    ]
    one = [a async for a in client.list_activities(f"ActivityId = '{handles[1].id}'")]
    assert [(a.activity_id, a.status) for a in one] == [(handles[1].id, ActivityExecutionStatus.RUNNING)]
    # Standalone activities are not workflows.
    assert [w async for w in client.list_workflows(f"WorkflowType = '{activity_type}'")] == []
    assert [w async for w in client.list_workflows(f"WorkflowId = '{handles[1].id}'")] == []
    for handle in handles[1:]:
        await handle.terminate()


# --- errors -----------------------------------------------------------------------------------


async def test_an_unknown_activity_is_not_found(client: Client, task_queue: str):
    """describe, result, cancel and terminate of an unknown activity id, or of an unknown run of a
    known one, fail with NOT_FOUND "activity not found for ID: <id>"; a run id that is not a UUID
    is INVALID_ARGUMENT."""
    unknown = client.get_activity_handle(new_activity_id())
    for call in (unknown.describe, unknown.result, unknown.cancel, unknown.terminate):
        with pytest.raises(RPCError) as missing:
            await asyncio.wait_for(call(), 10)
        assert missing.value.status == RPCStatusCode.NOT_FOUND, f"{call.__name__}: {missing.value}"
        assert missing.value.message == f"activity not found for ID: {unknown.id}", call.__name__

    known = await unpolled(client, task_queue)
    other_run = client.get_activity_handle(known.id, run_id=str(uuid.uuid4()))
    with pytest.raises(RPCError) as missing:
        await other_run.describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    assert missing.value.message == f"activity not found for ID: {known.id}"
    with pytest.raises(RPCError) as invalid:
        await client.get_activity_handle(known.id, run_id="not-a-uuid").describe()
    assert invalid.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert invalid.value.message == "invalid run id: must be a valid UUID"
    await known.terminate()


async def test_starting_without_a_timeout_is_rejected(client: Client, task_queue: str):
    """The SDK refuses a start with neither start_to_close nor schedule_to_close; the server
    answers such a request, and one without an activity id, with INVALID_ARGUMENT."""
    with pytest.raises(ValueError, match="start_to_close_timeout or schedule_to_close_timeout"):
        await client.start_activity("nobody_runs_this", id=new_activity_id(), task_queue=task_queue)

    def request(**fields: Any) -> StartActivityExecutionRequest:
        base: dict[str, Any] = dict(
            namespace=client.namespace,
            activity_id=new_activity_id(),
            activity_type=ActivityType(name="nobody_runs_this"),
            task_queue=TaskQueue(name=task_queue),
            request_id=str(uuid.uuid4()),
        )
        base.update(fields)
        return StartActivityExecutionRequest(**base)

    # Temporal says "a valid StartToCloseTimeout or ScheduleToCloseTimeout must be set on the
    # activity. ActivityId=... ActivityType=..." and "activityId is not set".
    for bad in (request(), request(activity_id="", start_to_close_timeout=timedelta(seconds=5))):
        with pytest.raises(RPCError) as rejected:
            await client.workflow_service.start_activity_execution(bad)
        assert rejected.value.status == RPCStatusCode.INVALID_ARGUMENT, rejected.value.message


# --- async completion -------------------------------------------------------------------------


async def test_async_completion_of_a_standalone_activity_by_id(client: Client, task_queue: str):
    """An activity that raises complete_async can be heartbeated and completed through
    get_async_activity_handle(activity_id=..., run_id=<activity run id>) (the *ById calls with an
    empty workflow id), or failed through its task token."""
    done_id, failed_id = new_activity_id(), new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        done = await client.start_activity(
            complete_later, id=done_id, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=30)
        )
        failed = await client.start_activity(
            complete_later,
            id=failed_id,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        await wait_for(lambda: INFOS.get(done_id) and INFOS.get(failed_id), what="both activities to start")

    [info] = INFOS[done_id]
    assert info.activity_run_id == done.run_id
    by_id = client.get_async_activity_handle(activity_id=done_id, run_id=info.activity_run_id)
    await by_id.heartbeat("halfway")
    described = await done.describe(include_heartbeat_details=True)
    assert described.run_state == PendingActivityState.STARTED
    assert described.total_heartbeat_count == 1
    assert await client.data_converter.decode(described.raw_info.heartbeat_details.payloads) == ["halfway"]
    await by_id.complete("finished elsewhere")
    assert await asyncio.wait_for(done.result(), 10) == "finished elsewhere"
    # Completing the closed activity again by id is FAILED_PRECONDITION "invalid transition from
    # Completed", not NOT_FOUND: a *ById call skips the attempt check a task token gets (see the
    # task-token case below) and reaches the state machine.
    with pytest.raises(RPCError) as closed:
        await by_id.complete("twice")
    assert closed.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert closed.value.message == "invalid transition from Completed"

    by_token = client.get_async_activity_handle(task_token=INFOS[failed_id][0].task_token)
    await by_token.fail(ApplicationError("failed elsewhere", type="Remote", non_retryable=True))
    cause = await failure_of(failed)
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.message == "failed elsewhere" and cause.type == "Remote"
    # The task token of a closed activity is stale: NOT_FOUND "activity not found for ID: <id>".
    with pytest.raises(RPCError) as stale:
        await by_token.complete("too late")
    assert stale.value.status == RPCStatusCode.NOT_FOUND
    assert stale.value.message == f"activity not found for ID: {failed_id}"


async def test_a_start_delay_holds_the_first_attempt(client: Client, task_queue: str):
    """With a start delay the activity is RUNNING / SCHEDULED and shows its execution time and
    next attempt time until the delay has passed; then a worker runs it."""
    activity_id = new_activity_id()
    handle = await client.start_activity(
        greet,
        "later",
        id=activity_id,
        task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
        start_delay=timedelta(seconds=1),
    )
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.RUNNING
    assert described.run_state == PendingActivityState.SCHEDULED
    assert described.execution_time is not None and described.schedule_time is not None
    assert described.execution_time - described.schedule_time == timedelta(seconds=1)
    assert described.next_attempt_schedule_time == described.execution_time
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        assert await asyncio.wait_for(handle.result(), 20) == "hello later"
    described = await handle.describe()
    assert described.last_started_time is not None
    assert described.last_started_time - described.schedule_time >= timedelta(seconds=1)


async def test_pause_and_unpause_of_a_standalone_activity(client: Client, task_queue: str):
    """A paused activity that no attempt runs is PAUSED (status and run state), is listed by
    ExecutionStatus = 'Paused', and is not dispatched; unpausing it lets a worker run it."""
    handle = await client.start_activity(
        greet,
        "paused",
        id=new_activity_id(),
        task_queue=task_queue,
        start_to_close_timeout=timedelta(seconds=10),
    )
    await handle.pause(reason="hold on")
    described = await handle.describe()
    assert described.status == ActivityExecutionStatus.PAUSED
    assert described.run_state == PendingActivityState.PAUSED

    async def listed_paused() -> bool:
        query = f"ActivityId = '{handle.id}' AND ExecutionStatus = 'Paused'"
        return [a.activity_id async for a in client.list_activities(query)] == [handle.id]

    await wait_for(listed_paused, what="the activity listed as Paused")
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        await asyncio.sleep(0.5)
        assert (await handle.describe()).status == ActivityExecutionStatus.PAUSED
        await handle.unpause()
        assert await asyncio.wait_for(handle.result(), 20) == "hello paused"
    assert (await handle.describe()).status == ActivityExecutionStatus.COMPLETED
    unknown = new_activity_id()
    with pytest.raises(RPCError) as missing:
        await client.get_activity_handle(unknown).pause()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    assert missing.value.message == f"activity not found for ID: {unknown}"


async def test_deleting_a_standalone_activity(client: Client, task_queue: str):
    """DeleteActivityExecution of a running activity terminates it and removes it: describe and
    delete then answer NOT_FOUND."""
    handle = await unpolled(client, task_queue)
    await client.workflow_service.delete_activity_execution(
        DeleteActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id)
    )

    async def gone() -> bool:
        try:
            await handle.describe()
        except RPCError as err:
            assert err.status == RPCStatusCode.NOT_FOUND, err
            assert err.message == f"activity not found for ID: {handle.id}"
            return True
        return False

    await wait_for(gone, what="the deleted activity to be gone")
    with pytest.raises(RPCError) as again:
        await client.workflow_service.delete_activity_execution(
            DeleteActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id)
        )
    assert again.value.status == RPCStatusCode.NOT_FOUND


async def test_describe_long_poll_waits_for_the_next_change(client: Client, task_queue: str):
    """DescribeActivityExecution with the long poll token of an earlier answer waits until the
    activity changes (here: a cancel closes it), then answers with its new state; a token for
    another activity is refused."""
    handle = await unpolled(client, task_queue)
    first = await client.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(namespace=client.namespace, activity_id=handle.id)
    )
    assert first.long_poll_token
    waiting = asyncio.create_task(
        client.workflow_service.describe_activity_execution(
            DescribeActivityExecutionRequest(
                namespace=client.namespace,
                activity_id=handle.id,
                run_id=first.run_id,
                long_poll_token=first.long_poll_token,
            )
        )
    )
    await asyncio.sleep(0.5)
    assert not waiting.done(), "the long poll answered before anything changed"
    await handle.cancel(reason="changed")
    changed = await asyncio.wait_for(waiting, 10)
    assert changed.info.status == ActivityExecutionStatus.CANCELED.value
    other = await unpolled(client, task_queue)
    with pytest.raises(RPCError) as mismatch:
        await client.workflow_service.describe_activity_execution(
            DescribeActivityExecutionRequest(
                namespace=client.namespace,
                activity_id=other.id,
                run_id=other.run_id or "",
                long_poll_token=first.long_poll_token,
            )
        )
    assert mismatch.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_a_standalone_activity_survives_a_server_restart(fresh_server: Server, task_queue: str):
    """A scheduled standalone activity is stored like a workflow: after the server is killed
    and restarted it is still there, and a worker completes it."""
    client = await Client.connect(fresh_server.address, namespace=NAMESPACE)
    handle = await client.start_activity(
        nobody_runs_this,
        id=new_activity_id(),
        task_queue=task_queue,
        schedule_to_close_timeout=timedelta(seconds=60),
    )
    await fresh_server.restart(kill=True)
    client = await Client.connect(fresh_server.address, namespace=NAMESPACE)
    handle = client.get_activity_handle(handle.id, run_id=handle.run_id)
    assert (await handle.describe()).status == ActivityExecutionStatus.RUNNING
    async with new_worker(client, task_queue, activities=[nobody_runs_this]):
        assert await asyncio.wait_for(handle.result(), 20) == "ran after all"


@activity.defn
async def nobody_runs_this() -> str:
    return "ran after all"


async def test_a_cancel_is_reported_only_after_one_was_requested(client: Client, task_queue: str):
    """An activity completing asynchronously cannot report itself canceled before a cancel was
    requested (INVALID_ARGUMENT, as Temporal refuses it for workflow activities too); once one
    was, the report cancels it with the worker's details."""
    activity_id = new_activity_id()
    async with new_worker(client, task_queue, activities=ACTIVITIES):
        handle = await client.start_activity(
            complete_later, id=activity_id, task_queue=task_queue, start_to_close_timeout=timedelta(seconds=30)
        )
        await wait_for(lambda: INFOS.get(activity_id), what="the activity to start")
    by_id = client.get_async_activity_handle(activity_id=activity_id, run_id=handle.run_id)
    with pytest.raises(RPCError) as early:
        await by_id.report_cancellation("too early")
    assert early.value.status == RPCStatusCode.INVALID_ARGUMENT
    assert early.value.message == "unable to mark activity as canceled without activity being request canceled first"
    await handle.cancel()
    await by_id.report_cancellation("as asked")
    cause = await failure_of(handle)
    assert isinstance(cause, CancelledError), repr(cause)
    assert list(cause.details) == ["as asked"]


async def test_predefined_search_attributes_are_accepted(client: Client, task_queue: str):
    """A start may set Temporal's predefined TemporalChangeVersion (a keyword list), as SDKs
    do for patches, and describe shows it. (Temporal's dev server does not select activities by
    it in list queries; Keel does, as it does for workflows.)"""
    change_version = SearchAttributeKey.for_keyword_list("TemporalChangeVersion")
    handle = await unpolled(
        client,
        task_queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(change_version, ["patch-1", "patch-2"])]),
    )
    described = await handle.describe()
    assert described.typed_search_attributes[change_version] == ["patch-1", "patch-2"]


async def test_the_temporal_activity_commands_for_standalone_activities(client: Client, task_queue: str, cli):
    """`temporal activity start/describe/list/count/complete/result/cancel/terminate/delete`
    work on standalone activities."""
    done_id, cancel_id, stop_id = new_activity_id(), new_activity_id(), new_activity_id()
    activity_type = f"cli_{uuid.uuid4().hex}"
    for activity_id in (done_id, cancel_id, stop_id):
        await cli.run(
            "activity", "start", "--activity-id", activity_id, "--type", activity_type,
            "--task-queue", task_queue, "--start-to-close-timeout", "30s", "--input", '"in"',
        )
    described = await cli.json("activity", "describe", "--activity-id", done_id)
    assert described["info"]["activityId"] == done_id, described
    assert described["info"]["status"] == "ACTIVITY_EXECUTION_STATUS_RUNNING", described

    async def counted() -> bool:
        count = await cli.json("activity", "count", "--query", f"ActivityType = '{activity_type}'")
        return int(count["count"]) == 3

    await wait_for(counted, what="three activities counted")
    listed = await cli.json("activity", "list", "--query", f"ActivityId = '{done_id}'")
    assert [a["activityId"] for a in listed] == [done_id], listed
    await cli.run("activity", "complete", "--activity-id", done_id, "--result", '"from the cli"')
    result, _ = await cli.run("activity", "result", "--activity-id", done_id)
    assert "from the cli" in result, result
    await cli.run("activity", "cancel", "--activity-id", cancel_id, "--reason", "cli cancel")
    await cli.run("activity", "terminate", "--activity-id", stop_id, "--reason", "cli stop")
    statuses = {
        activity_id: (await client.get_activity_handle(activity_id).describe()).status
        for activity_id in (done_id, cancel_id, stop_id)
    }
    assert statuses == {
        done_id: ActivityExecutionStatus.COMPLETED,
        cancel_id: ActivityExecutionStatus.CANCELED,
        stop_id: ActivityExecutionStatus.TERMINATED,
    }
    await cli.run("activity", "delete", "--activity-id", stop_id, "--yes")


async def test_a_retried_start_answers_the_run_it_started(client: Client, task_queue: str):
    """A start retried with the same request id answers the run the first one started, as not
    started by this call, even under the FAIL conflict policy."""
    from google.protobuf.duration_pb2 import Duration

    request = StartActivityExecutionRequest(
        namespace=client.namespace,
        activity_id=new_activity_id(),
        activity_type=ActivityType(name="nobody_runs_this"),
        task_queue=TaskQueue(name=task_queue),
        start_to_close_timeout=Duration(seconds=30),
        request_id=str(uuid.uuid4()),
    )
    first = await client.workflow_service.start_activity_execution(request)
    again = await client.workflow_service.start_activity_execution(request)
    assert first.started and not again.started
    assert again.run_id == first.run_id
