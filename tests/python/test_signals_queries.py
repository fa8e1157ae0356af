"""Signals, signal-with-start and queries."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable

import pytest

from helpers import event_types, history_events, new_id, new_worker, wait_for, wait_for_event
from temporalio import workflow
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]


@workflow.defn
class Collector:
    """Collects signalled values until told to finish; query returns what it has."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.done = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.values

    @workflow.signal
    def add(self, value: str) -> None:
        self.values.append(value)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def values_so_far(self) -> list[str]:
        return self.values

    @workflow.query
    def summary(self, prefix: str) -> str:
        return f"{prefix}: {len(self.values)} values, done={self.done}"


async def test_signal(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "WorkflowTaskCompleted")
        await handle.signal(Collector.add, "a")
        await wait_for_event(handle, "WorkflowExecutionSignaled")
        await handle.signal(Collector.add, "b")
        await handle.signal(Collector.finish)
        assert await handle.result() == ["a", "b"]
    events = await history_events(handle)
    signals = [e.workflow_execution_signaled_event_attributes for e in events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert [s.signal_name for s in signals] == ["add", "add", "finish"]
    assert signals[0].input.payloads[0].data == b'"a"'
    types = await event_types(handle)
    assert types[:5] == ["WorkflowExecutionStarted", *WFT, "WorkflowExecutionSignaled"]
    assert types[-1] == "WorkflowExecutionCompleted"


async def test_signal_before_worker_runs(client: Client, task_queue: str) -> None:
    """Signals sent before the first workflow task are delivered with it."""
    handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
    await handle.signal(Collector.add, "early")
    await handle.signal(Collector.finish)
    async with new_worker(client, task_queue, [Collector]):
        assert await handle.result() == ["early"]
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskScheduled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionSignaled",
        "WorkflowTaskStarted",
        "WorkflowTaskCompleted",
        "WorkflowExecutionCompleted",
    ]


async def test_signal_with_start(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        wf_id = new_id()
        handle = await client.start_workflow(
            Collector.run, id=wf_id, task_queue=task_queue, start_signal="add", start_signal_args=["first"]
        )
        assert (await event_types(handle))[:3] == [
            "WorkflowExecutionStarted",
            "WorkflowExecutionSignaled",
            "WorkflowTaskScheduled",
        ]
        # Signal-with-start on the running workflow signals it and starts nothing new.
        again = await client.start_workflow(
            Collector.run, id=wf_id, task_queue=task_queue, start_signal="add", start_signal_args=["second"]
        )
        assert again.result_run_id == handle.result_run_id
        await wait_for_query(lambda: handle.query(Collector.values_so_far), ["first", "second"])
        await handle.signal(Collector.finish)
        assert await handle.result() == ["first", "second"]


async def wait_for_query(query: Callable[[], Awaitable[Any]], expected: Any) -> None:
    async def check() -> bool:
        return await query() == expected

    await wait_for(check, what=f"query result {expected}")


async def test_query(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        assert await handle.query(Collector.values_so_far) == []
        await handle.signal(Collector.add, "x")
        await wait_for_query(lambda: handle.query(Collector.values_so_far), ["x"])
        assert await handle.query(Collector.summary, "now") == "now: 1 values, done=False"
        # By name, as a string.
        assert await handle.query("values_so_far") == ["x"]
        types_before = await event_types(handle)
        assert await handle.query(Collector.values_so_far) == ["x"]
        # Queries leave no trace in history.
        assert await event_types(handle) == types_before
        await handle.signal(Collector.finish)
        await handle.result()


async def test_query_completed_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(
            Collector.run, id=new_id(), task_queue=task_queue, start_signal="add", start_signal_args=["v"]
        )
        await handle.signal(Collector.finish)
        assert await handle.result() == ["v"]
        # The worker replays the closed workflow to answer.
        assert await handle.query(Collector.values_so_far) == ["v"]
        assert await handle.query(Collector.summary, "end") == "end: 1 values, done=True"


async def test_query_unknown_type(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        with pytest.raises(WorkflowQueryFailedError) as err:
            await handle.query("no_such_query")
        assert "no_such_query" in str(err.value)
        await handle.terminate()


async def test_signal_completed_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        await handle.signal(Collector.finish)
        await handle.result()
    with pytest.raises(RPCError) as err:
        await handle.signal(Collector.add, "too late")
    assert err.value.status == RPCStatusCode.NOT_FOUND
    assert "completed" in err.value.message


async def test_signal_unknown_workflow(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.get_workflow_handle(new_id("missing")).signal("add", "x")
    assert err.value.status == RPCStatusCode.NOT_FOUND
