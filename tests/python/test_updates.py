"""Workflow updates: validators, history events, update ids, wait stages and failures."""

from __future__ import annotations

import asyncio

import pytest

from helpers import NAMESPACE, event_types, history_events, new_id, new_worker, wait_for, wait_for_event
from temporalio import workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import Input, Meta, Request, UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest, UpdateWorkflowExecutionRequest
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]
UPDATE = ["WorkflowExecutionUpdateAccepted", "WorkflowExecutionUpdateCompleted"]


@workflow.defn
class Counter:
    """Adds amounts by update (validated), counts handler runs, and finishes when signalled."""

    def __init__(self) -> None:
        self.total = 0
        self.handler_runs = 0
        self.released = False
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done and workflow.all_handlers_finished())
        return self.total

    @workflow.update
    def add(self, amount: int) -> int:
        self.handler_runs += 1
        self.total += amount
        return self.total

    @add.validator
    def validate_add(self, amount: int) -> None:
        if amount < 0:
            raise ApplicationError(f"negative amount {amount}", type="NegativeAmount")

    @workflow.update
    def fail(self, message: str) -> str:
        self.handler_runs += 1
        raise ApplicationError(message, {"detail": 1}, type="UpdateBroke", non_retryable=True)

    @workflow.update
    async def wait_for_release(self, tag: str) -> str:
        self.handler_runs += 1
        await workflow.wait_condition(lambda: self.released)
        return f"released {tag}"

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def runs(self) -> int:
        return self.handler_runs


async def _started(client: Client, task_queue: str):
    """A Counter whose first workflow task has completed, so the next update gets its own task."""
    handle = await client.start_workflow(Counter.run, id=new_id(), task_queue=task_queue)
    await wait_for_event(handle, "WorkflowTaskCompleted")
    return handle


async def test_update_with_validator(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        assert await handle.execute_update(Counter.add, 5) == 5
        # By name, as a string.
        assert await handle.execute_update("add", 2, result_type=int) == 7
        before = await history_events(handle)

        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(Counter.add, -3)
        cause = err.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.message == "negative amount -3"
        assert cause.type == "NegativeAmount"

        # The rejection leaves no trace: the workflow task that carried the update is dropped,
        # so not even WorkflowTask* events are written.
        after = await history_events(handle)
        assert len(after) == len(before)
        assert [e.event_id for e in after] == [e.event_id for e in before]
        assert await handle.query(Counter.runs) == 2
        assert await handle.execute_update(Counter.add, 1) == 8
        await handle.signal(Counter.finish)
        assert await handle.result() == 8

    types = await event_types(handle)
    assert types == [
        "WorkflowExecutionStarted",
        *WFT,
        *WFT, *UPDATE,
        *WFT, *UPDATE,
        *WFT, *UPDATE,
        "WorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionCompleted",
    ]


async def test_accepted_update_history(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        assert await handle.execute_update(Counter.add, 42, id="the-update") == 42
        events = await history_events(handle)
        await handle.signal(Counter.finish)
        assert await handle.result() == 42

    assert [e for e in await event_types(handle)][: len(events)] == ["WorkflowExecutionStarted", *WFT, *WFT, *UPDATE]
    scheduled, accepted_event, completed_event = events[4], events[7], events[8]
    accepted = accepted_event.workflow_execution_update_accepted_event_attributes
    assert accepted.protocol_instance_id == "the-update"
    assert accepted.accepted_request.meta.update_id == "the-update"
    assert accepted.accepted_request.input.name == "add"
    assert [p.data for p in accepted.accepted_request.input.args.payloads] == [b"42"]
    assert accepted.accepted_request_sequencing_event_id == scheduled.event_id
    assert accepted.accepted_request_message_id

    completed = completed_event.workflow_execution_update_completed_event_attributes
    assert completed.accepted_event_id == accepted_event.event_id
    assert completed.meta.update_id == "the-update"
    assert completed.outcome.HasField("success")
    assert [p.data for p in completed.outcome.success.payloads] == [b"42"]


async def test_update_id_dedup(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        # While the first is still in flight: the second call attaches to the same update.
        first = await handle.start_update(
            Counter.wait_for_release, "a", id="wait-1", wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        second = await handle.start_update(
            Counter.wait_for_release, "b", id="wait-1", wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await handle.signal(Counter.release)
        assert await first.result() == "released a"
        assert await second.result() == "released a"
        assert await handle.query(Counter.runs) == 1

        # After the first has completed: the same result again, without running the handler.
        assert await handle.execute_update(Counter.add, 10, id="add-1") == 10
        assert await handle.execute_update(Counter.add, 99, id="add-1") == 10
        assert await handle.query(Counter.runs) == 2
        assert await handle.execute_update(Counter.add, 1, id="add-2") == 11
        await handle.signal(Counter.finish)
        assert await handle.result() == 11

    events = await history_events(handle)
    accepted_ids = [
        e.workflow_execution_update_accepted_event_attributes.protocol_instance_id
        for e in events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert accepted_ids == ["wait-1", "add-1", "add-2"]
    assert (await event_types(handle)).count("WorkflowExecutionUpdateCompleted") == 3


async def test_start_update_and_get_handle_by_id(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        update = await handle.start_update(
            Counter.wait_for_release, "x", id="by-id", wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        assert update.id == "by-id"
        assert update.workflow_id == handle.id
        assert update.workflow_run_id == handle.result_run_id
        # Accepted, not completed.
        types = await wait_for_event(handle, "WorkflowExecutionUpdateAccepted")
        assert "WorkflowExecutionUpdateCompleted" not in types

        # A handle for the same update from another workflow handle (no run id), by id only.
        other = client.get_workflow_handle(handle.id).get_update_handle_for(Counter.wait_for_release, "by-id")
        waiter = asyncio.create_task(other.result())
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await handle.signal(Counter.release)
        assert await waiter == "released x"
        assert await update.result() == "released x"
        untyped = client.get_workflow_handle(handle.id, run_id=handle.result_run_id).get_update_handle("by-id")
        assert await untyped.result() == "released x"

        # An update id the workflow never saw.
        with pytest.raises(RPCError) as err:
            await client.get_workflow_handle(handle.id).get_update_handle("no-such-update").result()
        assert err.value.status == RPCStatusCode.NOT_FOUND
        assert err.value.message == 'update "no-such-update" not found'
        await handle.signal(Counter.finish)
        await handle.result()


async def test_update_fails_in_handler(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(Counter.fail, "handler broke", id="failing")
        cause = err.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.message == "handler broke"
        assert cause.type == "UpdateBroke"
        assert cause.details == ({"detail": 1},)
        # The workflow itself is unaffected.
        assert await handle.execute_update(Counter.add, 3) == 3
        await handle.signal(Counter.finish)
        assert await handle.result() == 3

    events = await history_events(handle)
    types = await event_types(handle)
    assert types[:9] == ["WorkflowExecutionStarted", *WFT, *WFT, *UPDATE]
    accepted = events[7].workflow_execution_update_accepted_event_attributes
    assert accepted.accepted_request.input.name == "fail"
    completed = events[8].workflow_execution_update_completed_event_attributes
    assert completed.accepted_event_id == events[7].event_id
    assert completed.meta.update_id == "failing"
    assert completed.outcome.HasField("failure")
    assert completed.outcome.failure.message == "handler broke"
    assert completed.outcome.failure.application_failure_info.type == "UpdateBroke"
    assert completed.outcome.failure.application_failure_info.non_retryable


async def test_update_completed_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        assert await handle.execute_update(Counter.add, 4, id="before-close") == 4
        await handle.signal(Counter.finish)
        assert await handle.result() == 4
        with pytest.raises(RPCError) as err:
            await handle.execute_update(Counter.add, 1)
        assert err.value.status == RPCStatusCode.NOT_FOUND
        assert err.value.message == "workflow execution already completed"
        # An update id the closed workflow has completed still returns its outcome.
        assert await handle.execute_update(Counter.add, 1, id="before-close") == 4
        assert await handle.get_update_handle("before-close", result_type=int).result() == 4


async def test_update_unknown_workflow(client: Client) -> None:
    wf_id = new_id("missing")
    with pytest.raises(RPCError) as err:
        await client.get_workflow_handle(wf_id).execute_update("add", 1)
    assert err.value.status == RPCStatusCode.NOT_FOUND
    assert err.value.message == f"workflow not found for ID: {wf_id}"


async def test_concurrent_updates(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        amounts = [1, 2, 3, 4, 5]
        results = await asyncio.gather(*(handle.execute_update(Counter.add, n) for n in amounts))
        # Each result is the running total after that update, in whatever order they ran.
        assert len(set(results)) == 5
        assert max(results) == sum(amounts)
        assert all(r >= n for r, n in zip(results, amounts))
        assert await handle.query(Counter.runs) == 5
        await handle.signal(Counter.finish)
        assert await handle.result() == 15

    types = await event_types(handle)
    assert types.count("WorkflowExecutionUpdateAccepted") == 5
    assert types.count("WorkflowExecutionUpdateCompleted") == 5
    events = await history_events(handle)
    args = sorted(
        int(e.workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads[0].data)
        for e in events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    )
    assert args == amounts


async def test_async_update_released_by_signal(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        update = asyncio.create_task(handle.execute_update(Counter.wait_for_release, "late"))
        await wait_for_event(handle, "WorkflowExecutionUpdateAccepted")
        await asyncio.sleep(0.2)
        assert not update.done()
        await handle.signal(Counter.release)
        assert await update == "released late"
        await handle.signal(Counter.finish)
        assert await handle.result() == 0

    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        *WFT,
        "WorkflowExecutionUpdateAccepted",
        "WorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionUpdateCompleted",
        "WorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionCompleted",
    ]


async def test_update_before_worker_starts(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(Counter.run, id=new_id(), task_queue=task_queue)
    starting = asyncio.create_task(
        handle.start_update(Counter.add, 7, id="early", wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    )

    # Admitted but not accepted: PollWorkflowExecutionUpdate waiting for ADMITTED (or UNSPECIFIED)
    # answers at once with stage ADMITTED, and nothing is in history yet.
    async def poll(stage: UpdateWorkflowExecutionLifecycleStage.ValueType):
        return await client.workflow_service.poll_workflow_execution_update(
            PollWorkflowExecutionUpdateRequest(
                namespace=NAMESPACE,
                update_ref=UpdateRef(workflow_execution=WorkflowExecution(workflow_id=handle.id), update_id="early"),
                wait_policy=WaitPolicy(lifecycle_stage=stage),
            )
        )

    async def admitted() -> bool:
        try:
            return (await poll(UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED)).stage == (
                UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # not admitted yet
                return False
            raise

    await wait_for(admitted, what="update admitted")
    resp = await poll(UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_UNSPECIFIED)
    assert resp.stage == UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
    assert not resp.HasField("outcome")
    assert resp.update_ref.workflow_execution.run_id == handle.result_run_id
    assert await event_types(handle) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    await asyncio.sleep(0.3)
    assert not starting.done()

    async with new_worker(client, task_queue, [Counter]):
        update = await starting
        assert update.id == "early"
        assert await update.result() == 7
        await handle.signal(Counter.finish)
        assert await handle.result() == 7

    # The update rode on the first workflow task.
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        *UPDATE,
        "WorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionCompleted",
    ]
    done = await poll(UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED)
    assert done.stage == UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED
    assert [p.data for p in done.outcome.success.payloads] == [b"7"]


async def test_update_wait_for_admitted_unsupported(client: Client, task_queue: str) -> None:
    """UpdateWorkflowExecution waiting only for ADMITTED is refused, and admits nothing."""
    handle = await client.start_workflow(Counter.run, id=new_id(), task_queue=task_queue)
    request = UpdateWorkflowExecutionRequest(
        namespace=NAMESPACE,
        workflow_execution=WorkflowExecution(workflow_id=handle.id),
        request=Request(
            meta=Meta(update_id="admitted-only", identity="pytest"),
            input=Input(name="add", args=await client.data_converter.encode_wrapper([1])),
        ),
        wait_policy=WaitPolicy(
            lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
        ),
    )
    with pytest.raises(RPCError) as err:
        await client.workflow_service.update_workflow_execution(request)
    assert err.value.status == RPCStatusCode.PERMISSION_DENIED
    assert "not supported" in err.value.message
    with pytest.raises(RPCError) as err:
        await client.workflow_service.poll_workflow_execution_update(
            PollWorkflowExecutionUpdateRequest(
                namespace=NAMESPACE,
                update_ref=UpdateRef(workflow_execution=WorkflowExecution(workflow_id=handle.id), update_id="admitted-only"),
                wait_policy=WaitPolicy(
                    lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
                ),
            )
        )
    assert err.value.status == RPCStatusCode.NOT_FOUND
    assert await event_types(handle) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    await handle.terminate()


async def test_unknown_update_name_rejected(client: Client, task_queue: str) -> None:
    """The worker rejects an update it has no handler for; like any rejection, it leaves no events."""
    async with new_worker(client, task_queue, [Counter]):
        handle = await _started(client, task_queue)
        before = await event_types(handle)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update("no_such_update", 1)
        assert isinstance(err.value.cause, ApplicationError)
        assert err.value.cause.type == "RuntimeError"
        assert "no_such_update" in err.value.cause.message
        assert await event_types(handle) == before
        await handle.signal(Counter.finish)
        assert await handle.result() == 0
