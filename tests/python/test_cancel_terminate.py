"""Cancelling and terminating workflows."""

from __future__ import annotations

import asyncio

import pytest

from helpers import NAMESPACE, event_types, history_events, new_id, new_worker, wait_for_event
from temporalio import workflow
from temporalio.api.enums.v1 import WorkflowTaskFailedCause
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    PollWorkflowTaskQueueRequest,
    RespondWorkflowTaskCompletedRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError, TerminatedError
from temporalio.service import RPCError, RPCStatusCode

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]


@workflow.defn
class LongSleep:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(3600)
        return "woke"


@workflow.defn
class CleanupOnCancel:
    """Catches the cancellation, cleans up, and completes normally."""

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(3600)
            return "woke"
        except asyncio.CancelledError:
            return "cleaned up"


ALL = [LongSleep, CleanupOnCancel]


async def test_cancel(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(LongSleep.run, id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "TimerStarted")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert isinstance(err.value.cause, CancelledError)
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "TimerStarted",
        "WorkflowExecutionCancelRequested",
        *WFT,
        "TimerCanceled",
        "WorkflowExecutionCanceled",
    ]
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_cancel_handled_by_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(CleanupOnCancel.run, id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "TimerStarted")
        await handle.cancel()
        assert await handle.result() == "cleaned up"
    types = await event_types(handle)
    assert "WorkflowExecutionCancelRequested" in types
    assert types[-1] == "WorkflowExecutionCompleted"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_cancel_before_first_workflow_task(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(LongSleep.run, id=new_id(), task_queue=task_queue)
    await handle.cancel()
    # A second request is accepted too (the request is already recorded).
    await handle.cancel()
    async with new_worker(client, task_queue, ALL):
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert isinstance(err.value.cause, CancelledError)
    types = await event_types(handle)
    assert types[:3] == ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowExecutionCancelRequested"]
    assert types.count("WorkflowExecutionCancelRequested") == 1
    assert types[-1] == "WorkflowExecutionCanceled"


async def test_terminate(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(LongSleep.run, id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "TimerStarted")
        await handle.terminate("enough", reason="operator said so")
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert isinstance(err.value.cause, TerminatedError)
    assert await event_types(handle) == ["WorkflowExecutionStarted", *WFT, "TimerStarted", "WorkflowExecutionTerminated"]
    events = await history_events(handle)
    terminated = events[-1].workflow_execution_terminated_event_attributes
    assert terminated.reason == "operator said so"
    assert terminated.details.payloads[0].data == b'"enough"'
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.TERMINATED
    assert desc.close_time is not None
    # Terminating a closed workflow fails...
    with pytest.raises(RPCError) as rpc_err:
        await handle.terminate()
    assert rpc_err.value.status == RPCStatusCode.NOT_FOUND
    # ...but Temporal takes a cancel request for a closed workflow as a no-op success.
    await handle.cancel()
    assert (await event_types(handle))[-1] == "WorkflowExecutionTerminated"


async def test_terminate_without_worker(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(LongSleep.run, id=new_id(), task_queue=task_queue)
    await handle.terminate()
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskScheduled",
        "WorkflowExecutionTerminated",
    ]


async def test_terminate_while_workflow_task_in_flight(client: Client, task_queue: str) -> None:
    """A worker holds the workflow task when the workflow is terminated: Temporal fails the task
    (cause FORCE_CLOSE_COMMAND) before the termination event, and the late answer is refused."""
    handle = await client.start_workflow(LongSleep.run, id=new_id(), task_queue=task_queue)
    task = await client.workflow_service.poll_workflow_task_queue(
        PollWorkflowTaskQueueRequest(namespace=NAMESPACE, task_queue=TaskQueue(name=task_queue), identity="raw-poller")
    )
    assert task.workflow_execution.workflow_id == handle.id
    await handle.terminate(reason="mid-task")
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
        "WorkflowTaskFailed",
        "WorkflowExecutionTerminated",
    ]
    failed = (await history_events(handle))[3].workflow_task_failed_event_attributes
    assert failed.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND
    assert failed.scheduled_event_id == 2 and failed.started_event_id == 3
    with pytest.raises(RPCError) as err:
        await client.workflow_service.respond_workflow_task_completed(
            RespondWorkflowTaskCompletedRequest(namespace=NAMESPACE, task_token=task.task_token, identity="raw-poller")
        )
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_describe_status_while_running_and_after(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(LongSleep.run, id=new_id(), task_queue=task_queue)
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
        assert desc.close_time is None
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
