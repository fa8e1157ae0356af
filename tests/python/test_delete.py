"""DeleteWorkflowExecution (`temporal workflow delete`) and namespace retention: a deleted run
is gone from describe, history and lists; a running one is terminated first."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from helpers import Cli, event_types, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest, RegisterNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import TerminatedError
from temporalio.service import RPCError, RPCStatusCode

from test_child_workflows import Waiter
from test_signals_queries import Collector

# Deletion is asynchronous: Keel's takes a moment, Temporal's dev server's up to half a minute.
DELETION = 60


@workflow.defn
class Quick:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"hello {name}"


@workflow.defn
class ParentOfWaiter:
    """Starts a Waiter child (parent close policy TERMINATE) and waits for a signal that never
    comes."""

    @workflow.run
    async def run(self, child_id: str) -> None:
        await workflow.start_child_workflow(Waiter.run, True, id=child_id)
        await workflow.wait_condition(lambda: False)


async def delete(client: Client, workflow_id: str, run_id: str = "") -> None:
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        )
    )


async def gone(client: Client, workflow_id: str, run_id: str = "") -> bool:
    try:
        await client.get_workflow_handle(workflow_id, run_id=run_id or None).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND, err
        return True
    return False


async def listed(client: Client, workflow_id: str) -> list[str]:
    return [w.run_id async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]


async def test_delete_a_completed_workflow(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Quick]):
        handle = await client.start_workflow(Quick.run, "a", id=new_id(), task_queue=task_queue)
        assert await handle.result() == "hello a"
    await wait_for(lambda: listed(client, handle.id), what="the run in the list")
    await delete(client, handle.id)
    await wait_for(lambda: gone(client, handle.id), timeout=DELETION, what="the run to be deleted")
    with pytest.raises(RPCError) as err:
        await handle.fetch_history()
    assert err.value.status == RPCStatusCode.NOT_FOUND
    assert await listed(client, handle.id) == []
    # The id is free again, even for a policy that refuses a duplicate of a closed run.
    async with new_worker(client, task_queue, [Quick]):
        again = await client.start_workflow(
            Quick.run,
            "b",
            id=handle.id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        assert await again.result() == "hello b"


async def test_delete_one_run_of_several(client: Client, task_queue: str) -> None:
    workflow_id = new_id()
    async with new_worker(client, task_queue, [Quick]):
        first = await client.start_workflow(Quick.run, "1", id=workflow_id, task_queue=task_queue)
        await first.result()
        second = await client.start_workflow(Quick.run, "2", id=workflow_id, task_queue=task_queue)
        await second.result()
    await delete(client, workflow_id, first.result_run_id or "")
    await wait_for(lambda: gone(client, workflow_id, first.result_run_id or ""), timeout=DELETION, what="the first run deleted")
    # The other run, still current, is untouched.
    assert (await client.get_workflow_handle(workflow_id).describe()).run_id == second.result_run_id
    assert await listed(client, workflow_id) == [second.result_run_id]


async def test_delete_a_running_workflow_terminates_it_first(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Collector]):
        handle = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        result = asyncio.create_task(handle.result())
        await asyncio.sleep(0.5)
        await delete(client, handle.id)
        with pytest.raises(WorkflowFailureError) as err:
            await result
        assert isinstance(err.value.cause, TerminatedError)
        assert err.value.cause.message == "Delete workflow execution"
        await wait_for(lambda: gone(client, handle.id), timeout=DELETION, what="the run to be deleted")


async def test_deleting_a_parent_terminates_its_child_then_deletes_the_parent(
    client: Client, task_queue: str
) -> None:
    async with new_worker(client, task_queue, [ParentOfWaiter, Waiter]):
        child_id = new_id("child")
        parent = await client.start_workflow(ParentOfWaiter.run, child_id, id=new_id(), task_queue=task_queue)
        child = client.get_workflow_handle(child_id)

        async def child_running() -> bool:
            try:
                return (await child.describe()).status == WorkflowExecutionStatus.RUNNING
            except RPCError:
                return False

        await wait_for(child_running, what="the child to start")
        await delete(client, parent.id)
        await wait_for(lambda: gone(client, parent.id), timeout=DELETION, what="the parent to be deleted")
        assert (await child.describe()).status == WorkflowExecutionStatus.TERMINATED
        assert (await event_types(child))[-1] == "WorkflowExecutionTerminated"


async def test_delete_an_unknown_workflow(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await delete(client, new_id("missing"))
    assert err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as err:
        await delete(client, "")
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_delete_through_the_cli(cli: Cli, client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Quick]):
        handle = await client.start_workflow(Quick.run, "cli", id=new_id(), task_queue=task_queue)
        await handle.result()
    await cli.run("workflow", "delete", "--workflow-id", handle.id, "--yes")
    await wait_for(lambda: gone(client, handle.id), timeout=DELETION, what="the run to be deleted")


async def test_delete_by_query_through_the_cli(cli: Cli, client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Quick]):
        closed = [await client.start_workflow(Quick.run, str(i), id=new_id(), task_queue=task_queue) for i in range(3)]
        for handle in closed:
            await handle.result()
    # Open runs match too (no worker for this one: it stays running until deleted).
    running = await client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
    async def all_listed() -> bool:
        return (await client.count_workflows(f"TaskQueue = '{task_queue}'")).count == 4

    await wait_for(all_listed, what="the runs in the list")
    await cli.run("workflow", "delete", "--query", f"TaskQueue = '{task_queue}'", "--reason", "cleanup", "--yes")

    async def all_gone() -> bool:
        return all([await gone(client, h.id) for h in [*closed, running]])

    await wait_for(all_gone, timeout=DELETION, what="the batch to delete every run")


async def test_retention_deletes_closed_runs(client: Client, task_queue: str) -> None:
    namespace = new_id("ns-retention")
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=Duration(seconds=2))
    )
    ns_client = await Client.connect(client.service_client.config.target_host, namespace=namespace)

    async def registered() -> bool:
        try:
            await ns_client.count_workflows()
            return True
        except RPCError:
            return False

    await wait_for(registered, timeout=30, what="the namespace to be usable")
    async with new_worker(ns_client, task_queue, [Quick, Collector]):
        done = await ns_client.start_workflow(Quick.run, "r", id=new_id(), task_queue=task_queue)
        await done.result()
        running = await ns_client.start_workflow(Collector.run, id=new_id(), task_queue=task_queue)
        await wait_for(lambda: gone(ns_client, done.id), timeout=DELETION, what="retention to delete the closed run")
        # An open run is not subject to retention.
        assert (await running.describe()).status == WorkflowExecutionStatus.RUNNING
        await running.terminate()


async def test_retention_shorter_than_the_minimum_is_refused(client: Client) -> None:
    with pytest.raises(RPCError) as err:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=new_id("ns"), workflow_execution_retention_period=Duration(nanos=500_000_000)
            )
        )
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
