"""Update-with-start: ExecuteMultiOperation with a start and an update, and its conflict policies."""

from __future__ import annotations

import asyncio

import pytest

from helpers import NAMESPACE, event_types, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.common.v1 import WorkflowExecution, WorkflowType
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage, WorkflowIdConflictPolicy
from temporalio.api.errordetails.v1 import MultiOperationExecutionFailure, WorkflowExecutionAlreadyStartedFailure
from temporalio.api.failure.v1 import MultiOperationExecutionAborted
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.update.v1 import Input, Meta, Request, WaitPolicy
from temporalio.api.workflowservice.v1 import (
    ExecuteMultiOperationRequest,
    StartWorkflowExecutionRequest,
    UpdateWorkflowExecutionRequest,
)
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

WFT = ["WorkflowTaskScheduled", "WorkflowTaskStarted", "WorkflowTaskCompleted"]
UPDATE = ["WorkflowExecutionUpdateAccepted", "WorkflowExecutionUpdateCompleted"]


@workflow.defn
class Cart:
    """Items are added by update (validated); finishes when signalled and returns the items."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.released = False
        self.done = False

    @workflow.run
    async def run(self, owner: str) -> str:
        await workflow.wait_condition(lambda: self.done and workflow.all_handlers_finished())
        return f"{owner}: {','.join(self.items)}"

    @workflow.update
    def add_item(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    @add_item.validator
    def validate_add_item(self, item: str) -> None:
        if not item:
            raise ApplicationError("empty item", type="EmptyItem")

    @workflow.update
    async def add_when_released(self, item: str) -> int:
        await workflow.wait_condition(lambda: self.released)
        self.items.append(item)
        return len(self.items)

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.signal
    def checkout(self) -> None:
        self.done = True


def start_op(wf_id: str, task_queue: str, policy: WorkflowIDConflictPolicy, **kwargs) -> WithStartWorkflowOperation:
    return WithStartWorkflowOperation(
        Cart.run, "ann", id=wf_id, task_queue=task_queue, id_conflict_policy=policy, **kwargs
    )


async def test_update_with_start_new_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Cart]):
        wf_id = new_id()
        op = start_op(wf_id, task_queue, WorkflowIDConflictPolicy.FAIL)
        assert await client.execute_update_with_start_workflow(Cart.add_item, "apple", start_workflow_operation=op) == 1
        handle = await op.workflow_handle()
        assert handle.id == wf_id
        assert handle.result_run_id
        assert handle.first_execution_run_id == handle.result_run_id
        # The update rode on the first workflow task.
        assert await event_types(handle) == ["WorkflowExecutionStarted", *WFT, *UPDATE]
        await handle.signal(Cart.checkout)
        assert await handle.result() == "ann: apple"


async def test_start_update_with_start_accepted(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Cart]):
        op = start_op(new_id(), task_queue, WorkflowIDConflictPolicy.FAIL)
        update = await client.start_update_with_start_workflow(
            Cart.add_when_released,
            "pear",
            id="with-start-update",
            start_workflow_operation=op,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        handle = await op.workflow_handle()
        assert update.id == "with-start-update"
        assert update.workflow_id == handle.id
        assert update.workflow_run_id == handle.result_run_id
        assert await event_types(handle) == ["WorkflowExecutionStarted", *WFT, "WorkflowExecutionUpdateAccepted"]
        await handle.signal(Cart.release)
        assert await update.result() == 1
        await handle.signal(Cart.checkout)
        assert await handle.result() == "ann: pear"
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        *WFT,
        "WorkflowExecutionUpdateAccepted",
        "WorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionUpdateCompleted",
        "WorkflowExecutionSignaled",
        *WFT,
        "WorkflowExecutionCompleted",
    ]


async def test_update_with_start_use_existing(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Cart]):
        wf_id = new_id()
        running = await client.start_workflow(Cart.run, "ann", id=wf_id, task_queue=task_queue)
        assert await running.execute_update(Cart.add_item, "one") == 1
        op = start_op(wf_id, task_queue, WorkflowIDConflictPolicy.USE_EXISTING)
        assert await client.execute_update_with_start_workflow(Cart.add_item, "two", start_workflow_operation=op) == 2
        assert (await op.workflow_handle()).result_run_id == running.result_run_id
        # The same update id on the running workflow: deduplicated, the first result again.
        for item in ("three", "ignored"):
            again = start_op(wf_id, task_queue, WorkflowIDConflictPolicy.USE_EXISTING)
            assert await client.execute_update_with_start_workflow(
                Cart.add_item, item, id="dedup", start_workflow_operation=again
            ) == 3
        await running.signal(Cart.checkout)
        assert await running.result() == "ann: one,two,three"

        # Once the workflow is closed, USE_EXISTING starts a new run (reuse policy ALLOW_DUPLICATE).
        op = start_op(wf_id, task_queue, WorkflowIDConflictPolicy.USE_EXISTING)
        assert await client.execute_update_with_start_workflow(Cart.add_item, "new", start_workflow_operation=op) == 1
        new_run = await op.workflow_handle()
        assert new_run.result_run_id != running.result_run_id
        await new_run.signal(Cart.checkout)
        assert await new_run.result() == "ann: new"

        # ... unless the reuse policy rejects duplicates.
        op = start_op(
            wf_id, task_queue, WorkflowIDConflictPolicy.USE_EXISTING, id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
        )
        with pytest.raises(WorkflowAlreadyStartedError) as err:
            await client.execute_update_with_start_workflow(Cart.add_item, "x", start_workflow_operation=op)
        assert err.value.run_id == new_run.result_run_id
        with pytest.raises(WorkflowAlreadyStartedError):
            await op.workflow_handle()


async def test_update_with_start_fail_policy_on_running(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Cart]):
        wf_id = new_id()
        running = await client.start_workflow(Cart.run, "ann", id=wf_id, task_queue=task_queue)
        op = start_op(wf_id, task_queue, WorkflowIDConflictPolicy.FAIL)
        with pytest.raises(WorkflowAlreadyStartedError) as err:
            await client.execute_update_with_start_workflow(Cart.add_item, "x", start_workflow_operation=op)
        assert err.value.workflow_id == wf_id
        assert err.value.workflow_type == "Cart"
        assert err.value.run_id == running.result_run_id
        with pytest.raises(WorkflowAlreadyStartedError):
            await op.workflow_handle()
        # The update was not delivered.
        await running.signal(Cart.checkout)
        assert await running.result() == "ann: "
    assert "WorkflowExecutionUpdateAccepted" not in await event_types(running)


async def test_multi_operation_conflict_status(client: Client, task_queue: str) -> None:
    """The raw ExecuteMultiOperation error: ALREADY_EXISTS carrying one status per operation."""
    wf_id = new_id()
    running = await client.start_workflow(Cart.run, "ann", id=wf_id, task_queue=task_queue)
    request = ExecuteMultiOperationRequest(
        namespace=NAMESPACE,
        operations=[
            ExecuteMultiOperationRequest.Operation(
                start_workflow=StartWorkflowExecutionRequest(
                    namespace=NAMESPACE,
                    workflow_id=wf_id,
                    workflow_type=WorkflowType(name="Cart"),
                    task_queue=TaskQueue(name=task_queue),
                    identity="pytest",
                    request_id=new_id("req"),
                    workflow_id_conflict_policy=WorkflowIdConflictPolicy.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
                )
            ),
            ExecuteMultiOperationRequest.Operation(
                update_workflow=UpdateWorkflowExecutionRequest(
                    namespace=NAMESPACE,
                    workflow_execution=WorkflowExecution(workflow_id=wf_id),
                    request=Request(
                        meta=Meta(update_id="u", identity="pytest"),
                        input=Input(name="add_item", args=await client.data_converter.encode_wrapper(["x"])),
                    ),
                    wait_policy=WaitPolicy(
                        lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED
                    ),
                )
            ),
        ],
    )
    with pytest.raises(RPCError) as err:
        await client.workflow_service.execute_multi_operation(request)
    assert err.value.status == RPCStatusCode.ALREADY_EXISTS
    assert err.value.message == "Update-with-Start could not be executed."
    failure = MultiOperationExecutionFailure()
    assert err.value.grpc_status.details[0].Unpack(failure)
    start_status, update_status = failure.statuses
    assert start_status.code == RPCStatusCode.ALREADY_EXISTS
    assert start_status.message.startswith("Workflow execution is already running.")
    already = WorkflowExecutionAlreadyStartedFailure()
    assert start_status.details[0].Unpack(already)
    assert already.run_id == running.result_run_id
    assert update_status.code == RPCStatusCode.ABORTED
    assert update_status.message == "Operation was aborted."
    assert update_status.details[0].Is(MultiOperationExecutionAborted.DESCRIPTOR)
    await running.terminate()


async def test_update_with_start_rejected_update(client: Client, task_queue: str) -> None:
    """A rejected update still leaves the workflow started, with its first workflow task done."""
    async with new_worker(client, task_queue, [Cart]):
        op = start_op(new_id(), task_queue, WorkflowIDConflictPolicy.FAIL)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await client.execute_update_with_start_workflow(Cart.add_item, "", start_workflow_operation=op)
        assert isinstance(err.value.cause, ApplicationError)
        assert err.value.cause.type == "EmptyItem"
        handle = await op.workflow_handle()
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert await event_types(handle) == ["WorkflowExecutionStarted", *WFT]
        await handle.signal(Cart.checkout)
        assert await handle.result() == "ann: "


async def test_update_with_start_before_worker_runs(client: Client, task_queue: str) -> None:
    """The workflow starts at once, but the call returns only once a worker has accepted the update."""
    wf_id = new_id()
    op = start_op(wf_id, task_queue, WorkflowIDConflictPolicy.FAIL)
    starting = asyncio.create_task(
        client.start_update_with_start_workflow(
            Cart.add_item, "early", start_workflow_operation=op, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
    )

    async def started() -> bool:
        try:
            return (await client.get_workflow_handle(wf_id).describe()).status == WorkflowExecutionStatus.RUNNING
        except RPCError:
            return False

    await wait_for(started, what="workflow started")
    assert await event_types(client.get_workflow_handle(wf_id)) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    await asyncio.sleep(0.3)
    assert not starting.done()
    async with new_worker(client, task_queue, [Cart]):
        update = await starting
        assert await update.result() == 1
        handle = await op.workflow_handle()
        await handle.signal(Cart.checkout)
        assert await handle.result() == "ann: early"
