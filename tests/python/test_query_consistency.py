"""Queries see every event that came before them (Temporal's consistent queries), and are
refused, as Temporal refuses them, while no worker could answer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from helpers import new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from test_signals_queries import Collector


@workflow.defn(sandboxed=False)
class SlowCollector:
    """Collector whose signal handler takes 0.3 s of worker time, so that signals arrive
    while a workflow task is running."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.done = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.values

    @workflow.signal
    def add(self, value: str) -> None:
        import time

        if not workflow.unsafe.is_replaying():
            time.sleep(0.3)
        self.values.append(value)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def values_so_far(self) -> list[str]:
        return self.values


@workflow.defn
class AlwaysFailingTask:
    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug: the workflow task fails")

    @workflow.query
    def ping(self) -> str:
        return "pong"


async def test_query_right_after_signal_sees_it(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        expected: list[str] = []
        for i in range(20):
            await handle.signal(Collector.add, str(i))
            expected.append(str(i))
            assert await handle.query(Collector.values_so_far) == expected, f"after signal {i}"
        await handle.signal(Collector.finish)
        await handle.result()


async def test_query_during_a_workflow_task_sees_signals_sent_before_it(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [SlowCollector]):
        handle = await client.start_workflow(SlowCollector.run, id=new_id(), task_queue=task_queue)
        for round in range(4):
            await handle.signal(SlowCollector.add, f"{round}a")
            await asyncio.sleep(0.1)  # the task delivering it is running now
            await handle.signal(SlowCollector.add, f"{round}b")
            got = await handle.query(SlowCollector.values_so_far)
            assert got[-2:] == [f"{round}a", f"{round}b"], got
        await handle.signal(SlowCollector.finish)
        await handle.result()


async def test_query_before_the_first_workflow_task_waits_for_a_worker(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(
        Collector.run, id=new_id(), task_queue=task_queue, start_signal="add", start_signal_args=["v"]
    )
    query = asyncio.create_task(handle.query(Collector.values_so_far))
    await asyncio.sleep(1)
    assert not query.done()
    async with new_worker(client, task_queue, [Collector]):
        assert await query == ["v"]
        await handle.signal(Collector.finish)
        await handle.result()


async def test_query_during_a_start_delay_is_refused(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(
        Collector.run, id=new_id(), task_queue=task_queue, start_delay=timedelta(hours=1)
    )
    with pytest.raises(RPCError) as err:
        await handle.query(Collector.values_so_far)
    assert err.value.status == RPCStatusCode.FAILED_PRECONDITION
    assert err.value.message == "Workflow task is not scheduled yet."
    await handle.terminate()


async def test_query_of_a_failing_workflow_task_is_refused(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [AlwaysFailingTask]):
        # The SDK reports a failing task's first failures and lets later attempts time out, so
        # attempt 3 comes a task timeout after attempt 2.
        handle = await client.start_workflow(
            AlwaysFailingTask.run, id=new_id(), task_queue=task_queue, task_timeout=timedelta(seconds=2)
        )

        async def failed_three_times() -> bool:
            task = (await handle.describe()).raw_description.pending_workflow_task
            return task.attempt >= 3

        await wait_for(failed_three_times, timeout=30, what="workflow task attempt 3")
        with pytest.raises(RPCError) as err:
            await handle.query(AlwaysFailingTask.ping)
        assert err.value.status == RPCStatusCode.FAILED_PRECONDITION
        assert "Workflow Task in failed state" in err.value.message
        await handle.terminate()
