"""Continue-as-new: the chain of runs, what carries over, and what reaches the newest run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers import KEEL_INT, KEEL_KEYWORD, event_types, history_events, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.enums.v1 import ContinueAsNewInitiator
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]


@workflow.defn
class Countdown:
    """Continues as new until ``n`` reaches ``limit``, then reports what its last run saw."""

    @workflow.run
    async def run(self, n: int, limit: int) -> dict[str, Any]:
        if n < limit:
            workflow.continue_as_new(args=[n + 1, limit])
        info = workflow.info()
        return {
            "n": n,
            "run_id": info.run_id,
            "continued_run_id": info.continued_run_id,
            "first_execution_run_id": info.first_execution_run_id,
            "memo": workflow.memo(),
            "keyword": info.typed_search_attributes.get(KEEL_KEYWORD),
            "int": info.typed_search_attributes.get(KEEL_INT),
        }


@workflow.defn
class Relay:
    """Collects signalled values; continues as new (carrying them) on ``advance``."""

    @workflow.init
    def __init__(self, generation: int, carried: list[str]) -> None:
        # In __init__, so that signals delivered with the run's first task are not overwritten.
        self.values = list(carried)
        self.advance_requested = False
        self.done = False

    @workflow.run
    async def run(self, generation: int, carried: list[str]) -> list[str]:
        await workflow.wait_condition(lambda: self.advance_requested or self.done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not self.done:
            workflow.continue_as_new(args=[generation + 1, self.values])
        return self.values

    @workflow.signal
    def add(self, value: str) -> None:
        self.values.append(value)

    @workflow.signal
    def advance(self) -> None:
        self.advance_requested = True

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.update
    def whoami(self, tag: str) -> str:
        return f"{tag} in generation {workflow.info().run_id}"


@workflow.defn
class LongHistory:
    """Starts ``timers`` long timers in one workflow task, then wakes up on a short one."""

    @workflow.run
    async def run(self, timers: int) -> list[Any]:
        first = workflow.info().is_continue_as_new_suggested()
        for _ in range(timers):
            asyncio.ensure_future(workflow.sleep(3600))
        await workflow.sleep(0.01)
        info = workflow.info()
        return [first, info.is_continue_as_new_suggested(), info.get_current_history_length()]


ALL = [Countdown, Relay, LongHistory]


async def _chain_run_ids(client: Client, wf_id: str, first_run_id: str) -> list[str]:
    """The run ids of a chain, following each run's ContinuedAsNew event to the next."""
    run_ids = [first_run_id]
    while True:
        events = await history_events(client.get_workflow_handle(wf_id, run_id=run_ids[-1]))
        last = events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            return run_ids
        run_ids.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)


async def test_continue_as_new_chain(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        handle = await client.start_workflow(Countdown.run, args=[0, 2], id=wf_id, task_queue=task_queue)
        first_run_id = handle.result_run_id
        # result() follows the chain to the last run.
        result = await handle.result()
    assert result["n"] == 2

    run_ids = await _chain_run_ids(client, wf_id, first_run_id)
    assert len(run_ids) == 3
    assert len(set(run_ids)) == 3
    assert result["run_id"] == run_ids[-1]
    assert result["continued_run_id"] == run_ids[-2]
    assert result["first_execution_run_id"] == first_run_id

    for n, run_id in enumerate(run_ids):
        run = client.get_workflow_handle(wf_id, run_id=run_id)
        desc = await run.describe()
        assert desc.id == wf_id
        assert desc.run_id == run_id
        assert desc.raw_description.workflow_execution_info.first_run_id == first_run_id
        events = await history_events(run)
        started = events[0].workflow_execution_started_event_attributes
        assert [p.data for p in started.input.payloads] == [str(n).encode(), b"2"]
        assert started.original_execution_run_id == run_id
        assert started.first_execution_run_id == first_run_id
        assert started.continued_execution_run_id == (run_ids[n - 1] if n else "")
        assert started.initiator == (
            ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW if n else ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_UNSPECIFIED
        )
        if n < 2:
            assert desc.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
            assert await event_types(run) == ["WorkflowExecutionStarted", *WFT, "WorkflowExecutionContinuedAsNew"]
            continued = events[-1].workflow_execution_continued_as_new_event_attributes
            assert continued.new_execution_run_id == run_ids[n + 1]
            assert continued.workflow_type.name == "Countdown"
            assert continued.task_queue.name == task_queue
            assert continued.workflow_task_completed_event_id == 4
            assert [p.data for p in continued.input.payloads] == [str(n + 1).encode(), b"2"]
        else:
            assert desc.status == WorkflowExecutionStatus.COMPLETED
            assert await event_types(run) == ["WorkflowExecutionStarted", *WFT, "WorkflowExecutionCompleted"]

    # A handle without a run id describes the newest run.
    latest = await client.get_workflow_handle(wf_id).describe()
    assert latest.run_id == run_ids[-1]
    assert latest.status == WorkflowExecutionStatus.COMPLETED


async def test_continue_as_new_keeps_memo_and_search_attributes(
    client: Client, task_queue: str, custom_search_attributes: None
) -> None:
    keyword = new_id("kw")
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(
            Countdown.run,
            args=[0, 1],
            id=new_id(),
            task_queue=task_queue,
            memo={"owner": "keel", "n": 7},
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(KEEL_KEYWORD, keyword), SearchAttributePair(KEEL_INT, 5)]
            ),
        )
        result = await handle.result()
    # As the last run saw them ...
    assert result["memo"] == {"owner": "keel", "n": 7}
    assert result["keyword"] == keyword
    assert result["int"] == 5
    # ... and as describe reports them.
    desc = await client.get_workflow_handle(handle.id).describe()
    assert desc.run_id == result["run_id"]
    assert await desc.memo() == {"owner": "keel", "n": 7}
    assert desc.typed_search_attributes.get(KEEL_KEYWORD) == keyword
    assert desc.typed_search_attributes.get(KEEL_INT) == 5
    # The ContinuedAsNew event carries them to the next run.
    events = await history_events(client.get_workflow_handle(handle.id, run_id=handle.result_run_id))
    continued = events[-1].workflow_execution_continued_as_new_event_attributes
    assert set(continued.memo.fields) == {"owner", "n"}
    assert {"KeelKeyword", "KeelInt"} <= set(continued.search_attributes.indexed_fields)


async def test_signal_and_update_reach_newest_run(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        wf_id = new_id()
        handle = await client.start_workflow(Relay.run, args=[0, []], id=wf_id, task_queue=task_queue)
        first_run_id = handle.result_run_id
        await handle.signal(Relay.add, "a")
        await handle.signal(Relay.advance)

        async def continued() -> str | None:
            desc = await client.get_workflow_handle(wf_id).describe()
            return desc.run_id if desc.run_id != first_run_id else None

        second_run_id = await wait_for(continued, what="the second run")
        # A handle without a run id targets the newest run.
        latest = client.get_workflow_handle(wf_id)
        await latest.signal(Relay.add, "b")
        assert await latest.execute_update(Relay.whoami, "hi") == f"hi in generation {second_run_id}"

        # The closed first run accepts neither.
        old = client.get_workflow_handle(wf_id, run_id=first_run_id)
        with pytest.raises(RPCError) as err:
            await old.signal(Relay.add, "lost")
        assert err.value.status == RPCStatusCode.NOT_FOUND
        with pytest.raises(RPCError) as err:
            await old.execute_update(Relay.whoami, "lost")
        assert err.value.status == RPCStatusCode.NOT_FOUND
        assert err.value.message == "workflow execution already completed"

        await latest.signal(Relay.finish)
        # The handle from the start follows the chain.
        assert await handle.result() == ["a", "b"]

    second = client.get_workflow_handle(wf_id, run_id=second_run_id)
    started = (await history_events(second))[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id == first_run_id
    assert [p.data for p in started.input.payloads] == [b"1", b'["a"]']
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in await history_events(second)
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == ["add", "finish"]


async def test_continue_as_new_suggested(client: Client, task_queue: str) -> None:
    """Suggested once the history (counting the WorkflowTaskStarted event) reaches 4096 events."""
    async with new_worker(client, task_queue, ALL):
        # n timers + 1 short one: the second workflow task starts at event n + 8.
        below, at = await asyncio.gather(
            client.execute_workflow(LongHistory.run, 4087, id=new_id(), task_queue=task_queue),
            client.execute_workflow(LongHistory.run, 4088, id=new_id(), task_queue=task_queue),
        )
    assert below == [False, False, 4095]
    assert at == [False, True, 4096]
