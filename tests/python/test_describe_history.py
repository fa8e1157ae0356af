"""Describe, history reads (paging, reverse, long poll, close-event filter), visibility lists,
markers and search attribute upserts."""

from __future__ import annotations

import pytest
import asyncio
from datetime import datetime, timedelta, timezone

from helpers import (
    KEEL_INT,
    KEEL_KEYWORD,
    NAMESPACE,
    event_type_name,
    event_types,
    history_events,
    new_id,
    new_worker,
    wait_for,
    wait_for_event,
)
from temporalio import workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, HistoryEventFilterType
from temporalio.api.filter.v1 import StartTimeFilter, WorkflowExecutionFilter
from temporalio.api.workflowservice.v1 import (
    GetWorkflowExecutionHistoryRequest,
    GetWorkflowExecutionHistoryReverseRequest,
    ListClosedWorkflowExecutionsRequest,
    ListOpenWorkflowExecutionsRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]


@workflow.defn
class WaitForFinish:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, result: str) -> str:
        await workflow.wait_condition(lambda: self.done)
        return result

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@workflow.defn
class Patched:
    @workflow.run
    async def run(self) -> str:
        return "new" if workflow.patched("keel-patch") else "old"


@workflow.defn
class Upsert:
    @workflow.run
    async def run(self, keyword: str) -> int:
        workflow.upsert_search_attributes([KEEL_KEYWORD.value_set(keyword), KEEL_INT.value_set(99)])
        return workflow.info().typed_search_attributes.get(KEEL_INT) or 0


ALL = [WaitForFinish, Patched, Upsert]


def history_request(wf_id: str, **kw) -> GetWorkflowExecutionHistoryRequest:
    return GetWorkflowExecutionHistoryRequest(namespace=NAMESPACE, execution=WorkflowExecution(workflow_id=wf_id), **kw)


async def test_describe_fields(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(WaitForFinish.run, "r", id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "WorkflowTaskCompleted")
        running = await handle.describe()
        assert running.id == handle.id
        assert running.run_id == handle.result_run_id
        assert running.namespace == NAMESPACE
        assert running.status == WorkflowExecutionStatus.RUNNING
        assert running.workflow_type == "WaitForFinish"
        assert running.task_queue == task_queue
        assert running.start_time is not None and running.close_time is None
        assert running.history_length == 4
        assert running.parent_id is None
        assert running.raw_description.execution_config.task_queue.name == task_queue
        await handle.signal(WaitForFinish.finish)
        await handle.result()
    done = await handle.describe()
    assert done.status == WorkflowExecutionStatus.COMPLETED
    assert done.close_time is not None and done.close_time >= done.start_time
    assert done.history_length == len(await history_events(handle))
    assert done.raw_info.history_length == done.history_length


async def test_event_ids_contiguous(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(
            WaitForFinish.run, "r", id=new_id(), task_queue=task_queue, start_signal="finish"
        )
        await handle.result()
    events = await history_events(handle)
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))
    times = [e.event_time.ToDatetime() for e in events]
    assert times == sorted(times)
    task_ids = [e.task_id for e in events]
    assert all(t > 0 for t in task_ids)


async def _signal_many(client: Client, task_queue: str, n: int):
    """A workflow with no worker and n signals: 2 + n events, each signal in its own batch."""
    handle = await client.start_workflow(WaitForFinish.run, "r", id=new_id(), task_queue=task_queue)
    for i in range(n):
        await handle.signal("note", i)
    return handle


async def test_history_paging(client: Client, task_queue: str) -> None:
    handle = await _signal_many(client, task_queue, 300)
    full = await history_events(handle)
    assert len(full) == 302
    page_size = 50
    pages: list[list[int]] = []
    token = b""
    while True:
        resp = await client.workflow_service.get_workflow_execution_history(
            history_request(handle.id, maximum_page_size=page_size, next_page_token=token)
        )
        pages.append([e.event_id for e in resp.history.events])
        token = resp.next_page_token
        if not token:
            break
        assert len(pages) < 100, "paging does not end"
    assert [i for page in pages for i in page] == list(range(1, 303))
    # Temporal counts a page in event batches (the first batch holds 2 events here); a trailing
    # empty page is allowed.
    assert len(pages) >= 302 // page_size
    assert all(len(page) <= page_size + 1 for page in pages)
    assert all(pages[:-1])
    await handle.terminate()


async def test_history_reverse(client: Client, task_queue: str) -> None:
    handle = await _signal_many(client, task_queue, 120)
    await handle.terminate()
    forward = [e.event_id for e in await history_events(handle)]
    assert len(forward) == 123
    reverse: list[int] = []
    pages = 0
    token = b""
    while True:
        resp = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=NAMESPACE,
                execution=WorkflowExecution(workflow_id=handle.id),
                maximum_page_size=40,
                next_page_token=token,
            )
        )
        pages += 1
        if pages == 1:
            assert event_type_name(resp.history.events[0]) == "WorkflowExecutionTerminated"
        reverse += [e.event_id for e in resp.history.events]
        token = resp.next_page_token
        if not token:
            break
        assert pages < 100
    assert reverse == forward[::-1]
    assert pages >= 3


async def test_wait_new_event_long_poll(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(WaitForFinish.run, "r", id=new_id(), task_queue=task_queue)
    first = await client.workflow_service.get_workflow_execution_history(history_request(handle.id, wait_new_event=True))
    assert [event_type_name(e) for e in first.history.events] == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    assert first.next_page_token, "a running workflow's history read with wait_new_event continues"

    poll = asyncio.create_task(
        client.workflow_service.get_workflow_execution_history(
            history_request(handle.id, wait_new_event=True, next_page_token=first.next_page_token),
            timeout=timedelta(seconds=20),
        )
    )
    await asyncio.sleep(1)
    assert not poll.done(), "the long poll returned before any new event"
    await handle.signal(WaitForFinish.finish)
    second = await asyncio.wait_for(poll, 10)
    assert [event_type_name(e) for e in second.history.events] == ["WorkflowExecutionSignaled"]
    assert second.history.events[0].event_id == 3
    await handle.terminate()


async def test_close_event_filter(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(WaitForFinish.run, "closed", id=new_id(), task_queue=task_queue)
        await wait_for_event(handle, "WorkflowTaskCompleted")
        # A long poll for the close event waits for the workflow to close...
        poll = asyncio.create_task(
            client.workflow_service.get_workflow_execution_history(
                history_request(
                    handle.id,
                    wait_new_event=True,
                    history_event_filter_type=HistoryEventFilterType.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT,
                ),
                timeout=timedelta(seconds=20),
            )
        )
        await asyncio.sleep(0.5)
        assert not poll.done()
        await handle.signal(WaitForFinish.finish)
        resp = await asyncio.wait_for(poll, 10)
    (close,) = resp.history.events
    assert close.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    assert close.workflow_execution_completed_event_attributes.result.payloads[0].data == b'"closed"'
    # ...and on a closed workflow returns just that event at once.
    resp = await client.workflow_service.get_workflow_execution_history(
        history_request(handle.id, history_event_filter_type=HistoryEventFilterType.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
    )
    assert [e.event_id for e in resp.history.events] == [close.event_id]


async def test_list_workflows(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        done = await client.start_workflow(
            WaitForFinish.run, "r", id=new_id(), task_queue=task_queue, start_signal="finish"
        )
        await done.result()
        running = await client.start_workflow(WaitForFinish.run, "r", id=new_id(), task_queue=task_queue)

        async def listed(query: str) -> list[str]:
            return sorted([wf.id async for wf in client.list_workflows(query)])

        async def eventually(query: str, expected: list[str]) -> None:
            async def check() -> bool:
                return await listed(query) == sorted(expected)

            await wait_for(check, timeout=15, what=f"list_workflows({query!r}) == {expected}")

        await eventually(f"WorkflowId = '{running.id}'", [running.id])
        await eventually(f"TaskQueue = '{task_queue}'", [done.id, running.id])
        await eventually(f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'", [running.id])
        await eventually(f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Completed'", [done.id])
        await eventually(f"WorkflowType = 'WaitForFinish' AND TaskQueue = '{task_queue}'", [done.id, running.id])
        await eventually(f"WorkflowId = '{new_id('nobody')}'", [])
        count = await client.count_workflows(f"TaskQueue = '{task_queue}'")
        assert count.count == 2
        (info,) = [wf async for wf in client.list_workflows(f"WorkflowId = '{done.id}'")]
        assert info.status == WorkflowExecutionStatus.COMPLETED
        assert info.workflow_type == "WaitForFinish"
        assert info.run_id == done.result_run_id
        assert info.close_time is not None
        await running.terminate()


async def test_list_filter_language(client: Client, task_queue: str, custom_search_attributes: None) -> None:
    """Ranges, IN, STARTS_WITH, IS NULL, OR and parentheses, GROUP BY, the older list RPCs and a
    malformed query, as Temporal's SQL visibility answers them."""
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    prefix = new_id("lf")
    async with new_worker(client, task_queue, ALL):
        done = await client.start_workflow(
            WaitForFinish.run, "r", id=f"{prefix}-done", task_queue=task_queue, start_signal="finish"
        )
        await done.result()
        upserted = await client.start_workflow(Upsert.run, new_id("kw"), id=new_id(), task_queue=task_queue)
        assert await upserted.result() == 99
        running = await client.start_workflow(WaitForFinish.run, "r", id=f"{prefix}-running", task_queue=task_queue)
        await wait_for_event(running, "WorkflowTaskCompleted")

        async def eventually(query: str, expected: list[str]) -> None:
            async def check() -> bool:
                return sorted([wf.id async for wf in client.list_workflows(query)]) == sorted(expected)

            await wait_for(check, timeout=15, what=f"list_workflows({query!r}) == {expected}")

        tq = f"TaskQueue = '{task_queue}'"
        everyone = [done.id, upserted.id, running.id]
        await eventually(f"{tq} AND (ExecutionStatus = 'Running' OR WorkflowId = '{done.id}')", [running.id, done.id])
        await eventually(f'TaskQueue="{task_queue}" and ExecutionStatus in ("Completed", "Failed")', [done.id, upserted.id])
        await eventually(f"{tq} AND ExecutionStatus NOT IN ('Completed')", [running.id])
        await eventually(f"{tq} AND WorkflowId STARTS_WITH '{prefix}'", [done.id, running.id])
        await eventually(f"{tq} AND CloseTime IS NULL", [running.id])
        await eventually(f"{tq} AND CloseTime IS NOT NULL", [done.id, upserted.id])
        await eventually(f"{tq} AND StartTime > '{before.isoformat()}'", everyone)
        await eventually(f"{tq} AND StartTime < '{before.isoformat()}'", [])
        await eventually(f"{tq} AND KeelInt >= 50", [upserted.id])
        await eventually(f"{tq} AND KeelInt BETWEEN 1 AND 10", [])
        await eventually(f"{tq} AND ExecutionStatus != 'Running'", [done.id, upserted.id])

        counted = await client.count_workflows(f"{tq} GROUP BY ExecutionStatus")
        assert counted.count == 3
        groups = {tuple(g.group_values): g.count for g in counted.groups}
        assert groups == {("Completed",): 2, ("Running",): 1}

        since_before = StartTimeFilter()
        since_before.earliest_time.FromDatetime(before)
        opened = await client.workflow_service.list_open_workflow_executions(
            ListOpenWorkflowExecutionsRequest(
                namespace=NAMESPACE,
                maximum_page_size=10,
                start_time_filter=since_before,
                execution_filter=WorkflowExecutionFilter(workflow_id=running.id),
            )
        )
        assert [e.execution.workflow_id for e in opened.executions] == [running.id]
        closed = await client.workflow_service.list_closed_workflow_executions(
            ListClosedWorkflowExecutionsRequest(
                namespace=NAMESPACE,
                maximum_page_size=10,
                start_time_filter=since_before,
                execution_filter=WorkflowExecutionFilter(workflow_id=done.id),
            )
        )
        assert [e.execution.workflow_id for e in closed.executions] == [done.id]

        with pytest.raises(RPCError) as refused:
            [wf async for wf in client.list_workflows(f"{tq} AND WorkflowId >< 'x'")]
        assert refused.value.status == RPCStatusCode.INVALID_ARGUMENT
        with pytest.raises(RPCError) as unknown:
            [wf async for wf in client.list_workflows("NoSuchAttribute = 'x'")]
        assert unknown.value.status == RPCStatusCode.INVALID_ARGUMENT
        await running.terminate()


async def test_patched_records_marker(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(Patched.run, id=new_id(), task_queue=task_queue)
        assert await handle.result() == "new"
    # The Python SDK also upserts TemporalChangeVersion for a patch.
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "MarkerRecorded",
        "UpsertWorkflowSearchAttributes",
        "WorkflowExecutionCompleted",
    ]
    marker = (await history_events(handle))[4].marker_recorded_event_attributes
    assert marker.marker_name == "core_patch"
    assert marker.workflow_task_completed_event_id == 4
    assert b"keel-patch" in marker.details["patch-data"].payloads[0].data


async def test_upsert_search_attributes(client: Client, task_queue: str, custom_search_attributes: None) -> None:
    keyword = new_id("kw")
    async with new_worker(client, task_queue, ALL):
        handle = await client.start_workflow(Upsert.run, keyword, id=new_id(), task_queue=task_queue)
        assert await handle.result() == 99
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "UpsertWorkflowSearchAttributes",
        "WorkflowExecutionCompleted",
    ]
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(KEEL_KEYWORD) == keyword
    assert desc.typed_search_attributes.get(KEEL_INT) == 99

    async def found() -> bool:
        return [wf.id async for wf in client.list_workflows(f"KeelKeyword = '{keyword}'")] == [handle.id]

    await wait_for(found, timeout=15, what="workflow listed by its upserted search attribute")
