"""Bad input and missing entities: the gRPC status codes the SDK sees."""

from __future__ import annotations

import pytest

from helpers import NAMESPACE, new_id
from temporalio.api.common.v1 import WorkflowExecution, WorkflowType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryRequest,
    StartWorkflowExecutionRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode


async def test_workflow_id_too_long(client: Client, task_queue: str) -> None:
    with pytest.raises(RPCError) as err:
        await client.start_workflow("Anything", id="x" * 1001, task_queue=task_queue)
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    # Exactly the limit is fine.
    handle = await client.start_workflow("Anything", id="y" * 999 + "z", task_queue=task_queue)
    await handle.terminate()


async def test_missing_required_fields(client: Client, task_queue: str) -> None:
    base = dict(
        namespace=NAMESPACE,
        workflow_id=new_id(),
        workflow_type=WorkflowType(name="Anything"),
        task_queue=TaskQueue(name=task_queue),
        request_id=new_id("req"),
    )
    for missing in ("workflow_id", "workflow_type", "task_queue"):
        fields = dict(base)
        del fields[missing]
        with pytest.raises(RPCError) as err:
            await client.workflow_service.start_workflow_execution(StartWorkflowExecutionRequest(**fields))
        assert err.value.status == RPCStatusCode.INVALID_ARGUMENT, missing


async def test_unknown_namespace(client: Client, server, task_queue: str) -> None:
    other = await Client.connect(server.address, namespace=new_id("no-such-ns"))
    with pytest.raises(RPCError) as err:
        await other.start_workflow("Anything", id=new_id(), task_queue=task_queue)
    assert err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as err:
        await other.get_workflow_handle(new_id()).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_oversized_payload_rejected(client: Client, task_queue: str) -> None:
    big = "y" * (2 * 1024 * 1024 + 1024)  # just over the 2 MiB blob limit, under gRPC's 4 MiB
    with pytest.raises(RPCError) as err:
        await client.start_workflow("Anything", big, id=new_id(), task_queue=task_queue)
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    # A signal that large is refused as well.
    handle = await client.start_workflow("Anything", "small", id=new_id(), task_queue=task_queue)
    with pytest.raises(RPCError) as err:
        await handle.signal("sig", big)
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    await handle.terminate()


async def test_describe_nonexistent_workflow(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.get_workflow_handle(new_id("missing")).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as err:
        await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(namespace=NAMESPACE, execution=WorkflowExecution(workflow_id=new_id()))
        )
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_nonexistent_run_id(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow("Anything", id=new_id(), task_queue=task_queue)
    wrong_run = client.get_workflow_handle(handle.id, run_id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(RPCError) as err:
        await wrong_run.describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND
    await handle.terminate()


async def test_a_run_id_that_is_not_a_uuid_is_invalid(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow("Anything", id=new_id(), task_queue=task_queue)
    malformed = client.get_workflow_handle(handle.id, run_id="not-a-uuid")
    for call in (malformed.describe(), malformed.signal("s"), malformed.cancel(), malformed.terminate()):
        with pytest.raises(RPCError) as err:
            await call
        assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
        assert err.value.message == "Invalid RunId."
    with pytest.raises(RPCError) as err:
        await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=NAMESPACE, execution=WorkflowExecution(workflow_id=handle.id, run_id="not-a-uuid")
            )
        )
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
    # Nothing was done to the run.
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await handle.terminate()


async def test_history_of_nonexistent_workflow(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(namespace=NAMESPACE, execution=WorkflowExecution(workflow_id=new_id()))
        )
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_operations_on_nonexistent_workflow(client: Client) -> None:
    handle = client.get_workflow_handle(new_id("missing"))
    for op in (handle.cancel, handle.terminate, lambda: handle.signal("sig")):
        with pytest.raises(RPCError) as err:
            await op()
        assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_garbage_task_token(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.get_async_activity_handle(task_token=b"not a task token").complete("x")
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
