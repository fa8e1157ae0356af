"""Child workflows (results, failures, id conflicts, fan-out, parent close policies, cancellation)
and signalling and cancelling external workflows."""

from __future__ import annotations

import asyncio

import pytest

from helpers import event_types, history_events, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.enums.v1 import (
    CancelExternalWorkflowExecutionFailedCause,
    SignalExternalWorkflowExecutionFailedCause,
    StartChildWorkflowExecutionFailedCause,
)
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]


@workflow.defn
class Child:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"child {name}"


@workflow.defn
class FailingChild:
    @workflow.run
    async def run(self) -> str:
        raise ApplicationError("child broke", type="ChildBroke", non_retryable=True)


@workflow.defn
class Waiter:
    """Waits for a ``stop`` poke; on cancellation returns "cancelled" if ``catch`` else is cancelled."""

    def __init__(self) -> None:
        self.pokes: list[str] = []

    @workflow.run
    async def run(self, catch: bool) -> str:
        try:
            await workflow.wait_condition(lambda: "stop" in self.pokes)
            return f"stopped after {self.pokes}"
        except asyncio.CancelledError:
            if catch:
                return "cancelled"
            raise

    @workflow.signal
    def poke(self, value: str) -> None:
        self.pokes.append(value)

    @workflow.query
    def seen(self) -> list[str]:
        return self.pokes


@workflow.defn
class Parent:
    @workflow.run
    async def run(self, name: str) -> str:
        child_id = f"{workflow.info().workflow_id}-child"
        return await workflow.execute_child_workflow(Child.run, name, id=child_id)


@workflow.defn
class ParentOfFailing:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_child_workflow(FailingChild.run, id=f"{workflow.info().workflow_id}-child")


@workflow.defn
class ParentWithConflict:
    @workflow.run
    async def run(self, child_id: str) -> str:
        try:
            await workflow.start_child_workflow(Waiter.run, False, id=child_id)
        except WorkflowAlreadyStartedError as err:
            return f"already started: {err.workflow_id} {err.workflow_type}"
        return "started"


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, count: int) -> list[str]:
        wf_id = workflow.info().workflow_id
        return list(
            await asyncio.gather(
                *(workflow.execute_child_workflow(Child.run, str(i), id=f"{wf_id}-{i}") for i in range(count))
            )
        )


@workflow.defn
class ParentWithPolicy:
    """Starts a Waiter child with the given close policy and completes without waiting for it."""

    @workflow.run
    async def run(self, child_id: str, policy: str) -> str:
        child = await workflow.start_child_workflow(
            Waiter.run, True, id=child_id, parent_close_policy=workflow.ParentClosePolicy[policy]
        )
        return child.first_execution_run_id or ""


@workflow.defn
class ParentAwaitingChild:
    """Awaits a Waiter child (which does not catch its cancellation)."""

    @workflow.run
    async def run(self, child_id: str) -> str:
        return await workflow.execute_child_workflow(Waiter.run, False, id=child_id)


@workflow.defn
class ExternalCaller:
    """Signals or cancels another workflow; reports a failure to do so as text."""

    @workflow.run
    async def run(self, action: str, target_id: str) -> str:
        target = workflow.get_external_workflow_handle(target_id)
        try:
            if action == "signal":
                await target.signal(Waiter.poke, "from a workflow")
            else:
                await target.cancel()
        except ApplicationError as err:
            return f"{type(err).__name__} {err.type}: {err.message}"
        return "done"


ALL = [
    Child,
    FailingChild,
    Waiter,
    Parent,
    ParentOfFailing,
    ParentWithConflict,
    FanOut,
    ParentWithPolicy,
    ParentAwaitingChild,
    ExternalCaller,
]


async def test_child_workflow_result(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        handle = await client.start_workflow(Parent.run, "ada", id=wf_id, task_queue=task_queue)
        assert await handle.result() == "child ada"

    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "StartChildWorkflowExecutionInitiated",
        "ChildWorkflowExecutionStarted",
        *WFT,
        "ChildWorkflowExecutionCompleted",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    events = await history_events(handle)
    initiated = events[4].start_child_workflow_execution_initiated_event_attributes
    assert initiated.workflow_id == f"{wf_id}-child"
    assert initiated.workflow_type.name == "Child"
    assert initiated.task_queue.name == task_queue
    assert [p.data for p in initiated.input.payloads] == [b'"ada"']
    started = events[5].child_workflow_execution_started_event_attributes
    assert started.initiated_event_id == events[4].event_id
    assert started.workflow_execution.workflow_id == f"{wf_id}-child"
    completed = events[9].child_workflow_execution_completed_event_attributes
    assert completed.initiated_event_id == events[4].event_id
    assert completed.started_event_id == events[5].event_id
    assert completed.workflow_execution.run_id == started.workflow_execution.run_id
    assert [p.data for p in completed.result.payloads] == [b'"child ada"']

    # The child knows its parent.
    child = client.get_workflow_handle(f"{wf_id}-child")
    assert await child.result() == "child ada"
    desc = await child.describe()
    assert desc.run_id == started.workflow_execution.run_id
    assert desc.parent_id == wf_id
    assert desc.parent_run_id == handle.result_run_id
    parent_execution = desc.raw_description.workflow_execution_info.parent_execution
    assert (parent_execution.workflow_id, parent_execution.run_id) == (wf_id, handle.result_run_id)
    child_started = (await history_events(child))[0].workflow_execution_started_event_attributes
    assert child_started.parent_workflow_execution.workflow_id == wf_id
    assert child_started.parent_workflow_execution.run_id == handle.result_run_id
    assert child_started.parent_initiated_event_id == events[4].event_id
    # A top-level workflow has no parent.
    assert (await handle.describe()).parent_id is None


async def test_child_failure(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(ParentOfFailing.run, id=new_id(), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    child_error = err.value.cause
    assert isinstance(child_error, ChildWorkflowError)
    assert child_error.workflow_id == f"{handle.id}-child"
    assert child_error.workflow_type == "FailingChild"
    assert isinstance(child_error.cause, ApplicationError)
    assert child_error.cause.message == "child broke"
    assert child_error.cause.type == "ChildBroke"
    types = await event_types(handle)
    assert types == [
        "WorkflowExecutionStarted",
        *WFT,
        "StartChildWorkflowExecutionInitiated",
        "ChildWorkflowExecutionStarted",
        *WFT,
        "ChildWorkflowExecutionFailed",
        *WFT,
        "WorkflowExecutionFailed",
    ]
    failed = (await history_events(handle))[9].child_workflow_execution_failed_event_attributes
    assert failed.failure.message == "child broke"
    assert failed.failure.application_failure_info.type == "ChildBroke"
    assert (await client.get_workflow_handle(f"{handle.id}-child").describe()).status == WorkflowExecutionStatus.FAILED


async def test_child_id_conflict(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        running = await client.start_workflow(Waiter.run, False, id=new_id(), task_queue=task_queue)
        handle = await client.start_workflow(ParentWithConflict.run, running.id, id=new_id(), task_queue=task_queue)
        assert await handle.result() == f"already started: {running.id} Waiter"
        await running.terminate()
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "StartChildWorkflowExecutionInitiated",
        "StartChildWorkflowExecutionFailed",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    failed = (await history_events(handle))[5].start_child_workflow_execution_failed_event_attributes
    assert failed.cause == StartChildWorkflowExecutionFailedCause.START_CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_EXISTS
    assert failed.workflow_id == running.id
    assert failed.workflow_type.name == "Waiter"
    assert failed.initiated_event_id == 5


async def test_fan_out_of_a_hundred_children(client: Client, task_queue: str) -> None:
    count = 100
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(FanOut.run, count, id=new_id(), task_queue=task_queue)
        assert await handle.result() == [f"child {i}" for i in range(count)]
    types = await event_types(handle)
    assert types.count("StartChildWorkflowExecutionInitiated") == count
    assert types.count("ChildWorkflowExecutionStarted") == count
    assert types.count("ChildWorkflowExecutionCompleted") == count
    assert types[-1] == "WorkflowExecutionCompleted"
    events = await history_events(handle)
    child_ids = sorted(
        e.child_workflow_execution_completed_event_attributes.workflow_execution.workflow_id
        for e in events
        if e.HasField("child_workflow_execution_completed_event_attributes")
    )
    assert child_ids == sorted(f"{handle.id}-{i}" for i in range(count))


async def _child_after_parent_closes(client: Client, task_queue: str, policy: str):
    child_id = new_id("child")
    parent = await client.start_workflow(ParentWithPolicy.run, args=[child_id, policy], id=new_id(), task_queue=task_queue)
    child_run_id = await parent.result()
    child = client.get_workflow_handle(child_id, run_id=child_run_id)
    assert (await child.describe()).parent_id == parent.id
    return child


async def test_parent_close_policy_terminate(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        child = await _child_after_parent_closes(client, task_queue, "TERMINATE")
        with pytest.raises(WorkflowFailureError) as err:
            await child.result()
    assert isinstance(err.value.cause, TerminatedError)
    assert (await child.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert (await event_types(child))[-1] == "WorkflowExecutionTerminated"


async def test_parent_close_policy_request_cancel(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        child = await _child_after_parent_closes(client, task_queue, "REQUEST_CANCEL")
        # The child saw the cancellation (and chose to complete).
        assert await child.result() == "cancelled"
    types = await event_types(child)
    assert "WorkflowExecutionCancelRequested" in types
    assert types[-1] == "WorkflowExecutionCompleted"


async def test_parent_close_policy_abandon(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        child = await _child_after_parent_closes(client, task_queue, "ABANDON")
        await asyncio.sleep(0.3)
        assert (await child.describe()).status == WorkflowExecutionStatus.RUNNING
        assert "WorkflowExecutionCancelRequested" not in await event_types(child)
        await child.signal(Waiter.poke, "stop")
        assert await child.result() == "stopped after ['stop']"


async def test_cancel_parent_cancels_child(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        child_id = new_id("child")
        parent = await client.start_workflow(ParentAwaitingChild.run, child_id, id=new_id(), task_queue=task_queue)
        started_prefix = ["WorkflowExecutionStarted", *WFT, "StartChildWorkflowExecutionInitiated", "ChildWorkflowExecutionStarted", *WFT]

        async def child_started_and_task_done() -> bool:
            return await event_types(parent) == started_prefix

        await wait_for(child_started_and_task_done, what="the parent's task after ChildWorkflowExecutionStarted")
        await parent.cancel()
        with pytest.raises(WorkflowFailureError) as err:
            await parent.result()
        child = client.get_workflow_handle(child_id)
        with pytest.raises(WorkflowFailureError) as child_err:
            await child.result()
    # The parent's cancellation is passed to the child, which is cancelled; so is the parent.
    assert isinstance(err.value.cause, CancelledError)
    assert (await parent.describe()).status == WorkflowExecutionStatus.CANCELED
    assert isinstance(child_err.value.cause, CancelledError)
    assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED
    child_types = await event_types(child)
    assert "WorkflowExecutionCancelRequested" in child_types
    assert child_types[-1] == "WorkflowExecutionCanceled"

    types = await event_types(parent)
    assert types[: len(started_prefix) + 5] == [
        *started_prefix,
        "WorkflowExecutionCancelRequested",
        *WFT,
        "RequestCancelExternalWorkflowExecutionInitiated",
    ]
    assert types[-2:] == ["WorkflowTaskCompleted", "WorkflowExecutionCanceled"]
    assert types.index("ExternalWorkflowExecutionCancelRequested") < types.index("ChildWorkflowExecutionCanceled")
    events = await history_events(parent)
    initiated = events[len(started_prefix) + 4].request_cancel_external_workflow_execution_initiated_event_attributes
    assert initiated.workflow_execution.workflow_id == child_id
    assert initiated.child_workflow_only
    canceled = next(
        e.child_workflow_execution_canceled_event_attributes
        for e in events
        if e.HasField("child_workflow_execution_canceled_event_attributes")
    )
    assert canceled.workflow_execution.workflow_id == child_id
    assert canceled.initiated_event_id == 5


async def test_signal_external_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        target = await client.start_workflow(Waiter.run, False, id=new_id(), task_queue=task_queue)
        caller = await client.start_workflow(ExternalCaller.run, args=["signal", target.id], id=new_id(), task_queue=task_queue)
        assert await caller.result() == "done"
        assert await target.query(Waiter.seen) == ["from a workflow"]
        await target.signal(Waiter.poke, "stop")
        assert await target.result() == "stopped after ['from a workflow', 'stop']"

    assert await event_types(caller) == [
        "WorkflowExecutionStarted",
        *WFT,
        "SignalExternalWorkflowExecutionInitiated",
        "ExternalWorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    events = await history_events(caller)
    initiated = events[4].signal_external_workflow_execution_initiated_event_attributes
    assert initiated.workflow_execution.workflow_id == target.id
    assert initiated.signal_name == "poke"
    assert [p.data for p in initiated.input.payloads] == [b'"from a workflow"']
    signaled = events[5].external_workflow_execution_signaled_event_attributes
    assert signaled.initiated_event_id == events[4].event_id
    assert signaled.workflow_execution.workflow_id == target.id
    # The run id is echoed from the command, which named none.
    assert initiated.workflow_execution.run_id == signaled.workflow_execution.run_id == ""

    received = [
        e.workflow_execution_signaled_event_attributes
        for e in await history_events(target)
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert received[0].signal_name == "poke"
    assert received[0].external_workflow_execution.workflow_id == caller.id
    assert received[0].external_workflow_execution.run_id == caller.result_run_id


async def test_cancel_external_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        target = await client.start_workflow(Waiter.run, True, id=new_id(), task_queue=task_queue)
        caller = await client.start_workflow(ExternalCaller.run, args=["cancel", target.id], id=new_id(), task_queue=task_queue)
        assert await caller.result() == "done"
        assert await target.result() == "cancelled"

    assert await event_types(caller) == [
        "WorkflowExecutionStarted",
        *WFT,
        "RequestCancelExternalWorkflowExecutionInitiated",
        "ExternalWorkflowExecutionCancelRequested",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    events = await history_events(caller)
    initiated = events[4].request_cancel_external_workflow_execution_initiated_event_attributes
    assert initiated.workflow_execution.workflow_id == target.id
    requested = events[5].external_workflow_execution_cancel_requested_event_attributes
    assert requested.initiated_event_id == events[4].event_id
    assert requested.workflow_execution.workflow_id == target.id
    assert initiated.workflow_execution.run_id == requested.workflow_execution.run_id == ""

    cancel_requested = [
        e.workflow_execution_cancel_requested_event_attributes
        for e in await history_events(target)
        if e.HasField("workflow_execution_cancel_requested_event_attributes")
    ]
    assert len(cancel_requested) == 1
    assert cancel_requested[0].external_initiated_event_id == events[4].event_id
    assert cancel_requested[0].external_workflow_execution.workflow_id == caller.id
    assert cancel_requested[0].external_workflow_execution.run_id == caller.result_run_id


async def test_signal_and_cancel_unknown_external_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        signaller = await client.start_workflow(
            ExternalCaller.run, args=["signal", new_id("missing")], id=new_id(), task_queue=task_queue
        )
        assert await signaller.result() == (
            "ApplicationError ExternalWorkflowExecutionNotFound: Unable to signal external workflow because it was not found"
        )
        canceller = await client.start_workflow(
            ExternalCaller.run, args=["cancel", new_id("missing")], id=new_id(), task_queue=task_queue
        )
        assert await canceller.result() == (
            "ApplicationError ExternalWorkflowExecutionNotFound: Unable to cancel external workflow because not found"
        )

    assert await event_types(signaller) == [
        "WorkflowExecutionStarted",
        *WFT,
        "SignalExternalWorkflowExecutionInitiated",
        "SignalExternalWorkflowExecutionFailed",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    failed = (await history_events(signaller))[5].signal_external_workflow_execution_failed_event_attributes
    assert failed.cause == (
        SignalExternalWorkflowExecutionFailedCause.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_EXTERNAL_WORKFLOW_EXECUTION_NOT_FOUND
    )
    assert failed.initiated_event_id == 5

    assert await event_types(canceller) == [
        "WorkflowExecutionStarted",
        *WFT,
        "RequestCancelExternalWorkflowExecutionInitiated",
        "RequestCancelExternalWorkflowExecutionFailed",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    failed = (await history_events(canceller))[5].request_cancel_external_workflow_execution_failed_event_attributes
    assert failed.cause == (
        CancelExternalWorkflowExecutionFailedCause.CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_EXTERNAL_WORKFLOW_EXECUTION_NOT_FOUND
    )
    assert failed.initiated_event_id == 5
