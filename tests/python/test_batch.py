"""Batch operations: `temporal workflow terminate/cancel/signal --query`, `temporal batch`, and
the StartBatchOperation family over gRPC (the Python SDK has no batch API)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from helpers import Cli, history_events, new_id, new_worker, wait_for, wait_for_event
from temporalio import workflow
from temporalio.api.batch.v1 import BatchOperationSignal, BatchOperationTermination
from temporalio.api.common.v1 import Payloads, WorkflowExecution
from temporalio.api.enums.v1 import BatchOperationState, BatchOperationType
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    StartBatchOperationRequest,
    StopBatchOperationRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode


async def start_idle(client: Client, workflow_type: str, count: int, task_queue: str) -> list[str]:
    """Starts workflows no worker polls for: they stay running."""
    ids = []
    for _ in range(count):
        handle = await client.start_workflow(workflow_type, id=new_id(workflow_type), task_queue=task_queue)
        ids.append(handle.id)
    return ids


async def describe_job(client: Client, job_id: str):
    return await client.workflow_service.describe_batch_operation(
        DescribeBatchOperationRequest(namespace=client.namespace, job_id=job_id)
    )


async def wait_done(client: Client, job_id: str):
    async def done():
        d = await describe_job(client, job_id)
        return d if d.state != BatchOperationState.BATCH_OPERATION_STATE_RUNNING else None

    return await wait_for(done, timeout=20, what=f"batch job {job_id} to finish")


async def test_terminate_by_query_through_the_cli(cli: Cli, client: Client, task_queue: str) -> None:
    kind = f"Doomed{uuid.uuid4().hex[:8]}"
    doomed = await start_idle(client, kind, 3, task_queue)
    spared = await start_idle(client, kind + "Spared", 1, task_queue)
    out, _ = await cli.run("workflow", "terminate", "--query", f"WorkflowType = '{kind}'", "--reason", "cleanup", "--yes")
    job_id = out.strip().split()[-1]
    desc = await wait_done(client, job_id)
    assert desc.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
    assert desc.operation_type == BatchOperationType.BATCH_OPERATION_TYPE_TERMINATE_WORKFLOW
    assert (desc.total_operation_count, desc.complete_operation_count, desc.failure_operation_count) == (3, 3, 0)
    assert desc.reason == "cleanup" and desc.query == f"WorkflowType = '{kind}'"
    for workflow_id in doomed:
        assert (await client.get_workflow_handle(workflow_id).describe()).status == WorkflowExecutionStatus.TERMINATED
        events = await history_events(client.get_workflow_handle(workflow_id))
        assert events[-1].workflow_execution_terminated_event_attributes.reason == "cleanup"
    assert (await client.get_workflow_handle(spared[0]).describe()).status == WorkflowExecutionStatus.RUNNING
    # The job shows in `temporal batch list`, and its run only in lists that ask for it.
    listed, _ = await cli.run("batch", "list", "-o", "json")
    assert job_id in [job["jobId"] for job in json.loads(listed)]
    assert [w async for w in client.list_workflows(f"WorkflowId = '{job_id}'")] == []
    system = [w async for w in client.list_workflows(f"TemporalNamespaceDivision = 'TemporalBatcher' AND WorkflowId = '{job_id}'")]
    assert len(system) == 1
    # Terminate and cancel act on running workflows only: a second run finds none.
    out, _ = await cli.run("workflow", "terminate", "--query", f"WorkflowType = '{kind}'", "--reason", "again", "--yes")
    again = await wait_done(client, out.strip().split()[-1])
    assert again.total_operation_count == 0


async def test_signal_listed_executions_and_refusals(client: Client, task_queue: str) -> None:
    kind = f"Signaled{uuid.uuid4().hex[:8]}"
    ids = await start_idle(client, kind, 2, task_queue)
    job_id = str(uuid.uuid4())
    payloads = Payloads(payloads=await DataConverter.default.encode(["hi"]))
    await client.workflow_service.start_batch_operation(
        StartBatchOperationRequest(
            namespace=client.namespace,
            job_id=job_id,
            reason="ping",
            executions=[WorkflowExecution(workflow_id=workflow_id) for workflow_id in ids],
            signal_operation=BatchOperationSignal(signal="ping", input=payloads, identity="batcher"),
        )
    )
    desc = await wait_done(client, job_id)
    assert (desc.total_operation_count, desc.complete_operation_count) == (2, 2)
    assert desc.operation_type == BatchOperationType.BATCH_OPERATION_TYPE_SIGNAL_WORKFLOW
    for workflow_id in ids:
        events = await history_events(client.get_workflow_handle(workflow_id))
        signaled = [e for e in events if e.HasField("workflow_execution_signaled_event_attributes")]
        assert [e.workflow_execution_signaled_event_attributes.signal_name for e in signaled] == ["ping"]

    # A job id is used once.
    with pytest.raises(RPCError) as error:
        await client.workflow_service.start_batch_operation(
            StartBatchOperationRequest(
                namespace=client.namespace,
                job_id=job_id,
                reason="again",
                visibility_query=f"WorkflowType = '{kind}'",
                termination_operation=BatchOperationTermination(),
            )
        )
    assert error.value.status == RPCStatusCode.ALREADY_EXISTS
    for bad in (
        StartBatchOperationRequest(namespace=client.namespace, job_id=new_id("job"), reason="r", termination_operation=BatchOperationTermination()),
        StartBatchOperationRequest(namespace=client.namespace, job_id=new_id("job"), reason="r", visibility_query="WorkflowType = "),
    ):
        with pytest.raises(RPCError) as error:
            await client.workflow_service.start_batch_operation(bad)
        assert error.value.status == RPCStatusCode.INVALID_ARGUMENT
    with pytest.raises(RPCError) as error:
        await describe_job(client, new_id("no-such-job"))
    assert error.value.status == RPCStatusCode.NOT_FOUND


async def test_one_job_at_a_time_and_stop(client: Client, task_queue: str) -> None:
    kind = f"Slow{uuid.uuid4().hex[:8]}"
    await start_idle(client, kind, 5, task_queue)
    job_id = str(uuid.uuid4())
    await client.workflow_service.start_batch_operation(
        StartBatchOperationRequest(
            namespace=client.namespace,
            job_id=job_id,
            reason="slowly",
            visibility_query=f"WorkflowType = '{kind}'",
            max_operations_per_second=1,
            termination_operation=BatchOperationTermination(),
        )
    )
    with pytest.raises(RPCError) as error:
        await client.workflow_service.start_batch_operation(
            StartBatchOperationRequest(
                namespace=client.namespace,
                job_id=str(uuid.uuid4()),
                reason="second",
                visibility_query=f"WorkflowType = '{kind}'",
                termination_operation=BatchOperationTermination(),
            )
        )
    assert error.value.status == RPCStatusCode.RESOURCE_EXHAUSTED
    await client.workflow_service.stop_batch_operation(
        StopBatchOperationRequest(namespace=client.namespace, job_id=job_id, reason="enough", identity="test")
    )
    desc = await wait_done(client, job_id)
    assert desc.state == BatchOperationState.BATCH_OPERATION_STATE_FAILED
    # The targets it had not reached stay running.
    await asyncio.sleep(2)
    still_running = [w async for w in client.list_workflows(f"WorkflowType = '{kind}' AND ExecutionStatus = 'Running'")]
    assert len(still_running) >= 3, "stopping the job should leave the targets it had not reached"


@workflow.defn
class WaitForGo:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "went"

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


async def test_reset_by_query_through_the_cli(cli: Cli, client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [WaitForGo]):
        handles = [
            await client.start_workflow(WaitForGo.run, id=new_id("reset-batch"), task_queue=task_queue)
            for _ in range(2)
        ]
        for handle in handles:
            await wait_for_event(handle, "WorkflowTaskCompleted")
        out, _ = await cli.run(
            "workflow", "reset", "--query", f"WorkflowId = '{handles[0].id}' OR WorkflowId = '{handles[1].id}'",
            "--type", "FirstWorkflowTask", "--reason", "redo", "--yes",
        )
        job_id = out.strip().split()[-1]
        desc = await wait_done(client, job_id)
        assert desc.operation_type == BatchOperationType.BATCH_OPERATION_TYPE_RESET_WORKFLOW
        assert (desc.total_operation_count, desc.complete_operation_count) == (2, 2)
        for handle in handles:
            old = await client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id).describe()
            assert old.status == WorkflowExecutionStatus.TERMINATED
            current = client.get_workflow_handle(handle.id)
            assert (await current.describe()).run_id != handle.first_execution_run_id
            await current.signal(WaitForGo.proceed)
            assert await current.result() == "went"


async def test_update_options_by_query_through_the_cli(cli: Cli, client: Client, task_queue: str) -> None:
    kind = f"Options{uuid.uuid4().hex[:8]}"
    targets = await start_idle(client, kind, 2, task_queue)
    spared = await start_idle(client, kind + "Spared", 1, task_queue)
    out, _ = await cli.run(
        "workflow", "update-options", "--query", f"WorkflowType = '{kind}'",
        "--versioning-override-behavior", "auto_upgrade", "--reason", "upgrade all", "--yes",
    )
    job_id = out.strip().split()[-1]
    desc = await wait_done(client, job_id)
    assert desc.state == BatchOperationState.BATCH_OPERATION_STATE_COMPLETED
    assert (desc.total_operation_count, desc.complete_operation_count, desc.failure_operation_count) == (2, 2, 0)
    for workflow_id in targets:
        info = (await client.get_workflow_handle(workflow_id).describe()).raw_description.workflow_execution_info
        assert info.versioning_info.versioning_override.auto_upgrade
        events = await history_events(client.get_workflow_handle(workflow_id))
        assert events[-1].HasField("workflow_execution_options_updated_event_attributes")
    info = (await client.get_workflow_handle(spared[0]).describe()).raw_description.workflow_execution_info
    assert not info.versioning_info.HasField("versioning_override")
