"""Durable timers: workflow.sleep, cancelled timers, timeouts built on timers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from helpers import event_types, history_events, new_id, new_worker, wait_for_event
from temporalio import workflow
from temporalio.client import Client

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]


@workflow.defn
class SleepOnce:
    @workflow.run
    async def run(self, seconds: float) -> float:
        start = workflow.now()
        await workflow.sleep(seconds)
        return (workflow.now() - start).total_seconds()


@workflow.defn
class CancelSleepTask:
    """Starts a long sleep as a task, lets a short timer fire, then cancels the long one."""

    @workflow.run
    async def run(self) -> str:
        long_sleep = asyncio.create_task(workflow.sleep(3600))
        await workflow.sleep(0.5)
        long_sleep.cancel()
        try:
            await long_sleep
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"


@workflow.defn
class WaitForTimeout:
    """asyncio.wait_for on a condition that never holds: the timeout's timer fires."""

    @workflow.run
    async def run(self) -> str:
        try:
            await asyncio.wait_for(workflow.wait_condition(lambda: False), timeout=1)
        except asyncio.TimeoutError:
            return "timed out"
        return "condition met"


@workflow.defn
class WaitForSignalOrTimeout:
    """Waits for a signal with a timeout; the signal arrives first so the timer is cancelled."""

    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.wait_condition(lambda: self.go, timeout=timedelta(seconds=60))
            return "signalled"
        except asyncio.TimeoutError:
            return "timed out"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


ALL = [SleepOnce, CancelSleepTask, WaitForTimeout, WaitForSignalOrTimeout]


async def test_workflow_sleep(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(SleepOnce.run, 1.0, id=new_id(), task_queue=task_queue)
        elapsed = await handle.result()
    assert elapsed >= 1.0
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "TimerStarted",
        "TimerFired",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    events = await history_events(handle)
    started = events[4].timer_started_event_attributes
    assert started.start_to_fire_timeout.ToTimedelta() == timedelta(seconds=1)
    assert started.workflow_task_completed_event_id == 4
    fired = events[5].timer_fired_event_attributes
    assert fired.timer_id == started.timer_id
    assert fired.started_event_id == 5
    # The timer fired no earlier than it was due.
    assert events[5].event_time.ToDatetime() - events[4].event_time.ToDatetime() >= timedelta(seconds=1)


async def test_cancel_sleep_task(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(CancelSleepTask.run, id=new_id(), task_queue=task_queue)
        assert await handle.result() == "cancelled"
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "TimerStarted",
        "TimerStarted",
        "TimerFired",
        *WFT,
        "TimerCanceled",
        "WorkflowExecutionCompleted",
    ]
    events = await history_events(handle)
    # The task's timer is only created once the workflow yields, so its order is the SDK's choice.
    long_timer, short_timer = sorted(
        (events[4].timer_started_event_attributes, events[5].timer_started_event_attributes),
        key=lambda t: -t.start_to_fire_timeout.ToTimedelta(),
    )
    assert long_timer.start_to_fire_timeout.ToTimedelta() == timedelta(hours=1)
    assert short_timer.start_to_fire_timeout.ToTimedelta() == timedelta(milliseconds=500)
    assert events[6].timer_fired_event_attributes.timer_id == short_timer.timer_id
    canceled = events[10].timer_canceled_event_attributes
    assert canceled.timer_id == long_timer.timer_id
    assert events[canceled.started_event_id - 1].timer_started_event_attributes == long_timer


async def test_wait_for_timeout_fires_timer(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(WaitForTimeout.run, id=new_id(), task_queue=task_queue)
        assert await handle.result() == "timed out"
    types = await event_types(handle)
    assert types == ["WorkflowExecutionStarted", *WFT, "TimerStarted", "TimerFired", *WFT, "WorkflowExecutionCompleted"]


async def test_signal_cancels_timeout_timer(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(WaitForSignalOrTimeout.run, id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "TimerStarted")
        await handle.signal(WaitForSignalOrTimeout.proceed)
        assert await handle.result() == "signalled"
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "TimerStarted",
        "WorkflowExecutionSignaled",
        *WFT,
        "TimerCanceled",
        "WorkflowExecutionCompleted",
    ]


async def test_many_concurrent_timers(client: Client, task_queue: str) -> None:
    """Timers due at the same moment all fire (possibly in one workflow task)."""

    async with new_worker(client, task_queue, [ManyTimers]):
        handle = await client.start_workflow(ManyTimers.run, 20, id=new_id(), task_queue=task_queue)
        assert await handle.result() == 20
    types = await event_types(handle)
    assert types.count("TimerStarted") == 20
    assert types.count("TimerFired") == 20


@workflow.defn
class ManyTimers:
    @workflow.run
    async def run(self, n: int) -> int:
        await asyncio.gather(*(workflow.sleep(0.5 + i * 0.01) for i in range(n)))
        return n
