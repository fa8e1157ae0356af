"""Starting workflows and getting their results: ids, reuse and conflict policies, memo, search
attributes, timeouts and workflow retries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from helpers import KEEL_INT, KEEL_KEYWORD, NAMESPACE, event_types, history_events, new_id, new_worker, wait_for_event
from temporalio import workflow
from temporalio.api.common.v1 import WorkflowType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import StartWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ApplicationError,
    TerminatedError,
    TimeoutError,
    TimeoutType,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode


@workflow.defn
class Greet:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"hello {name}"


@workflow.defn
class Sleep:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return "slept"


@workflow.defn
class Fail:
    @workflow.run
    async def run(self, message: str) -> str:
        raise ApplicationError(message, {"why": "because"}, type="MyFailure", non_retryable=True)


@workflow.defn
class FlakyWorkflow:
    """Fails its first two attempts (each is a new run), succeeds on the third."""

    @workflow.run
    async def run(self) -> int:
        attempt = workflow.info().attempt
        if attempt < 3:
            raise ApplicationError(f"attempt {attempt} fails")
        return attempt


ALL = [Greet, Sleep, Fail, FlakyWorkflow]
SIMPLE_HISTORY = [
    "WorkflowExecutionStarted",
    "WorkflowTaskScheduled",
    "WorkflowTaskStarted",
    "WorkflowTaskCompleted",
    "WorkflowExecutionCompleted",
]


async def test_start_and_result(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        handle = await client.start_workflow(Greet.run, "keel", id=wf_id, task_queue=task_queue)
        assert handle.id == wf_id
        assert handle.result_run_id
        assert await handle.result() == "hello keel"
        assert await event_types(handle) == SIMPLE_HISTORY
        # execute_workflow = start + result.
        assert await client.execute_workflow(Greet.run, "again", id=new_id(), task_queue=task_queue) == "hello again"

    events = await history_events(handle)
    started = events[0].workflow_execution_started_event_attributes
    assert started.workflow_type.name == "Greet"
    assert started.task_queue.name == task_queue
    assert started.attempt == 1
    assert started.original_execution_run_id == handle.result_run_id
    assert events[-1].workflow_execution_completed_event_attributes.workflow_task_completed_event_id == 4


async def test_workflow_fails_with_application_error(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(Fail.run, "it broke", id=new_id(), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.message == "it broke"
    assert cause.type == "MyFailure"
    assert cause.non_retryable
    assert cause.details == ({"why": "because"},)
    assert await event_types(handle) == SIMPLE_HISTORY[:-1] + ["WorkflowExecutionFailed"]
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED


async def _run_to_completion(client: Client, wf: str, arg: str, wf_id: str, task_queue: str, **kw):
    handle = await client.start_workflow(wf, arg, id=wf_id, task_queue=task_queue, **kw)
    try:
        await handle.result()
    except WorkflowFailureError:
        pass
    return handle


async def test_id_reuse_allow_duplicate(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        first = await _run_to_completion(client, "Greet", "a", wf_id, task_queue)
        second = await client.start_workflow(
            Greet.run, "b", id=wf_id, task_queue=task_queue, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
        )
        assert second.result_run_id != first.result_run_id
        assert await second.result() == "hello b"
        # The handle without a run id follows the latest run.
        assert (await client.get_workflow_handle(wf_id).describe()).run_id == second.result_run_id


async def test_id_reuse_reject_duplicate(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        first = await _run_to_completion(client, "Greet", "a", wf_id, task_queue)
        with pytest.raises(WorkflowAlreadyStartedError) as err:
            await client.start_workflow(
                Greet.run, "b", id=wf_id, task_queue=task_queue, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
            )
        assert err.value.workflow_id == wf_id
        assert err.value.workflow_type == "Greet"
        assert (await client.get_workflow_handle(wf_id).describe()).run_id == first.result_run_id


async def test_id_reuse_allow_duplicate_failed_only(client: Client, task_queue: str) -> None:
    policy = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
    async with new_worker(client, task_queue, ALL):
        # After a success: rejected.
        ok_id = new_id()
        await _run_to_completion(client, "Greet", "a", ok_id, task_queue)
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(Greet.run, "b", id=ok_id, task_queue=task_queue, id_reuse_policy=policy)
        # After a failure: allowed.
        failed_id = new_id()
        failed = await _run_to_completion(client, "Fail", "x", failed_id, task_queue)
        again = await client.start_workflow(Greet.run, "c", id=failed_id, task_queue=task_queue, id_reuse_policy=policy)
        assert again.result_run_id != failed.result_run_id
        assert await again.result() == "hello c"
        # After a termination (counts as failed): allowed.
        term_id = new_id()
        term = await client.start_workflow(Sleep.run, 60, id=term_id, task_queue=task_queue)
        await term.terminate("stop")
        again = await client.start_workflow(Greet.run, "d", id=term_id, task_queue=task_queue, id_reuse_policy=policy)
        assert await again.result() == "hello d"


async def test_id_reuse_terminate_if_running(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        old = await client.start_workflow(Sleep.run, 60, id=wf_id, task_queue=task_queue)
        await wait_for_event(old, "TimerStarted")
        new = await client.start_workflow(
            Sleep.run, 0.1, id=wf_id, task_queue=task_queue, id_reuse_policy=WorkflowIDReusePolicy.TERMINATE_IF_RUNNING
        )
        assert new.result_run_id != old.result_run_id
        assert await new.result() == "slept"
        old_handle = client.get_workflow_handle(wf_id, run_id=old.result_run_id)
        assert (await old_handle.describe()).status == WorkflowExecutionStatus.TERMINATED
        assert (await event_types(old_handle))[-2:] == ["TimerStarted", "WorkflowExecutionTerminated"]
        with pytest.raises(WorkflowFailureError) as err:
            await old_handle.result(follow_runs=False)
        assert isinstance(err.value.cause, TerminatedError)


async def test_id_conflict_fail(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        running = await client.start_workflow(Sleep.run, 60, id=wf_id, task_queue=task_queue)
        for policy in (WorkflowIDConflictPolicy.UNSPECIFIED, WorkflowIDConflictPolicy.FAIL):
            with pytest.raises(WorkflowAlreadyStartedError) as err:
                await client.start_workflow(Sleep.run, 1, id=wf_id, task_queue=task_queue, id_conflict_policy=policy)
            assert err.value.workflow_id == wf_id
            # From the WorkflowExecutionAlreadyStartedFailure detail of the ALREADY_EXISTS status.
            assert err.value.run_id == running.result_run_id
        # Even a reuse policy that allows duplicates does not start a second run while one runs.
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(
                Sleep.run, 1, id=wf_id, task_queue=task_queue, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
            )
        await running.terminate()


async def test_id_conflict_use_existing(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        first = await client.start_workflow(Sleep.run, 1, id=wf_id, task_queue=task_queue)
        second = await client.start_workflow(
            Sleep.run, 30, id=wf_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING
        )
        assert second.result_run_id == first.result_run_id
        assert await second.result() == "slept"
        # Once closed, USE_EXISTING starts a new run.
        third = await client.start_workflow(
            Greet.run, "x", id=wf_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING
        )
        assert third.result_run_id != first.result_run_id
        assert await third.result() == "hello x"


async def test_id_conflict_terminate_existing(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        old = await client.start_workflow(Sleep.run, 60, id=wf_id, task_queue=task_queue)
        await wait_for_event(old, "TimerStarted")
        new = await client.start_workflow(
            Greet.run, "y", id=wf_id, task_queue=task_queue, id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING
        )
        assert new.result_run_id != old.result_run_id
        assert await new.result() == "hello y"
        old_handle = client.get_workflow_handle(wf_id, run_id=old.result_run_id)
        assert (await event_types(old_handle))[-1] == "WorkflowExecutionTerminated"


async def test_request_id_makes_start_idempotent(client: Client, task_queue: str) -> None:
    """A retried StartWorkflowExecution with the same request_id returns the same run."""
    wf_id = new_id()
    request = StartWorkflowExecutionRequest(
        namespace=NAMESPACE,
        workflow_id=wf_id,
        workflow_type=WorkflowType(name="Greet"),
        task_queue=TaskQueue(name=task_queue),
        identity="pytest",
        request_id=new_id("req"),
    )
    first = await client.workflow_service.start_workflow_execution(request)
    retried = await client.workflow_service.start_workflow_execution(request)
    assert first.run_id and retried.run_id == first.run_id
    assert first.started
    request.request_id = new_id("req")
    with pytest.raises(RPCError) as err:
        await client.workflow_service.start_workflow_execution(request)
    assert err.value.status == RPCStatusCode.ALREADY_EXISTS
    handle = client.get_workflow_handle(wf_id)
    assert await event_types(handle) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    await handle.terminate()


async def test_memo_and_search_attributes_in_describe(
    client: Client, task_queue: str, custom_search_attributes: None
) -> None:
    keyword = new_id("kw")
    handle = await client.start_workflow(
        Sleep.run,
        60,
        id=new_id(),
        task_queue=task_queue,
        memo={"owner": "keel", "n": 7, "nested": {"a": [1, 2]}},
        search_attributes=TypedSearchAttributes([SearchAttributePair(KEEL_KEYWORD, keyword), SearchAttributePair(KEEL_INT, 42)]),
    )
    desc = await handle.describe()
    assert await desc.memo() == {"owner": "keel", "n": 7, "nested": {"a": [1, 2]}}
    assert await desc.memo_value("owner") == "keel"
    assert desc.typed_search_attributes.get(KEEL_KEYWORD) == keyword
    assert desc.typed_search_attributes.get(KEEL_INT) == 42
    events = await history_events(handle)
    started = events[0].workflow_execution_started_event_attributes
    assert set(started.memo.fields) == {"owner", "n", "nested"}
    assert {"KeelKeyword", "KeelInt"} <= set(started.search_attributes.indexed_fields)
    await handle.terminate()


async def test_execution_timeout(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(
            Sleep.run, 30, id=new_id(), task_queue=task_queue, execution_timeout=timedelta(seconds=1)
        )
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert isinstance(err.value.cause, TimeoutError)
    assert err.value.cause.type == TimeoutType.START_TO_CLOSE
    assert await event_types(handle) == SIMPLE_HISTORY[:-1] + ["TimerStarted", "WorkflowExecutionTimedOut"]
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.TIMED_OUT
    assert desc.raw_info.execution_time.ToSeconds() > 0


async def test_run_timeout(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(Sleep.run, 30, id=new_id(), task_queue=task_queue, run_timeout=timedelta(seconds=1))
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert isinstance(err.value.cause, TimeoutError)
    assert await event_types(handle) == SIMPLE_HISTORY[:-1] + ["TimerStarted", "WorkflowExecutionTimedOut"]
    started = (await history_events(handle))[0].workflow_execution_started_event_attributes
    assert started.workflow_run_timeout.ToTimedelta() == timedelta(seconds=1)


async def test_workflow_retry_policy(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(
            FlakyWorkflow.run,
            id=new_id(),
            task_queue=task_queue,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
        )
        # result() follows the chain of runs to the last one.
        assert await handle.result() == 3

    first_run = client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    events = await history_events(first_run)
    assert [e for e in await event_types(first_run)] == SIMPLE_HISTORY[:-1] + ["WorkflowExecutionFailed"]
    failed = events[-1].workflow_execution_failed_event_attributes
    assert failed.failure.message == "attempt 1 fails"
    assert failed.new_execution_run_id
    second_run = client.get_workflow_handle(handle.id, run_id=failed.new_execution_run_id)
    second_started = (await history_events(second_run))[0].workflow_execution_started_event_attributes
    assert second_started.attempt == 2
    assert second_started.continued_execution_run_id == handle.result_run_id
    assert second_started.original_execution_run_id  # the run that started the chain
    latest = await client.get_workflow_handle(handle.id).describe()
    assert latest.status == WorkflowExecutionStatus.COMPLETED
    assert latest.run_id not in (handle.result_run_id, failed.new_execution_run_id)
    assert latest.raw_info.first_run_id == handle.result_run_id


async def test_eager_start_hands_the_first_task_to_the_starting_worker(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Greet]):
        handle = await client.start_workflow(
            Greet.run, "eager", id=new_id(), task_queue=task_queue, request_eager_start=True
        )
        assert handle.__temporal_eagerly_started  # type: ignore[attr-defined]
        assert await handle.result() == "hello eager"
    events = await history_events(handle)
    started = [e for e in events if e.HasField("workflow_task_started_event_attributes")]
    assert started[0].event_id == 3
