"""State survives a server restart on the same data dir; a workflow task that a dying worker
took is handed out again after its timeout."""

from __future__ import annotations

from datetime import timedelta

from helpers import NAMESPACE, Server, event_types, history_events, new_id, new_worker, wait_for_event
from temporalio import workflow
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus


@workflow.defn
class Nap:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return f"napped {seconds}"


@workflow.defn
class Quick:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"quick {name}"


async def test_timer_survives_server_crash(fresh_server: Server, task_queue: str) -> None:
    client = await Client.connect(fresh_server.address, namespace=NAMESPACE)
    async with new_worker(client, task_queue, [Nap, Quick]):
        finished = await client.start_workflow(Quick.run, "before", id=new_id(), task_queue=task_queue)
        assert await finished.result() == "quick before"
        finished_history = await history_events(finished)

        sleeping = await client.start_workflow(Nap.run, 8.0, id=new_id(), task_queue=task_queue)
        await wait_for_event(sleeping, "TimerStarted")
        # A crash, not a clean shutdown: SIGKILL, then start again on the same port and data dir.
        await fresh_server.restart(kill=True)

        assert (await sleeping.describe()).status == WorkflowExecutionStatus.RUNNING
        assert await sleeping.result() == "napped 8.0"
        # What was there before the crash is still there, unchanged.
        assert await history_events(finished) == finished_history
        # And the restarted server takes new work.
        assert await client.execute_workflow(Quick.run, "after", id=new_id(), task_queue=task_queue) == "quick after"
    assert await event_types(sleeping) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
        "WorkflowTaskCompleted",
        "TimerStarted",
        "TimerFired",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
        "WorkflowTaskCompleted",
        "WorkflowExecutionCompleted",
    ]


async def test_state_survives_clean_restart(fresh_server: Server, task_queue: str) -> None:
    client = await Client.connect(fresh_server.address, namespace=NAMESPACE)
    # No worker: the workflow waits for its first task across the restart.
    handle = await client.start_workflow(Quick.run, "later", id=new_id(), task_queue=task_queue)
    await handle.signal("ignored", 1)
    await fresh_server.restart(kill=False)
    assert await event_types(handle) == ["WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowExecutionSignaled"]
    async with new_worker(client, task_queue, [Quick]):
        assert await handle.result() == "quick later"


async def test_workflow_task_redelivered_after_worker_dies(client: Client, task_queue: str) -> None:
    handle = await client.start_workflow(
        Quick.run, "second worker", id=new_id(), task_queue=task_queue, task_timeout=timedelta(seconds=2)
    )
    # A "worker" takes the workflow task and dies without answering.
    task = await client.workflow_service.poll_workflow_task_queue(
        PollWorkflowTaskQueueRequest(namespace=NAMESPACE, task_queue=TaskQueue(name=task_queue), identity="doomed-worker")
    )
    assert task.workflow_execution.workflow_id == handle.id
    assert task.attempt == 1
    assert [e.event_id for e in task.history.events] == [1, 2, 3]
    # After the 2 s workflow task timeout, a live worker gets the task again.
    async with new_worker(client, task_queue, [Quick]):
        assert await handle.result() == "quick second worker"
    assert await event_types(handle) == [
        "WorkflowExecutionStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
        "WorkflowTaskTimedOut",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
        "WorkflowTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    events = await history_events(handle)
    assert events[1].workflow_task_scheduled_event_attributes.start_to_close_timeout.ToTimedelta() == timedelta(seconds=2)
    assert events[2].workflow_task_started_event_attributes.identity == "doomed-worker"
    timed_out = events[3].workflow_task_timed_out_event_attributes
    assert timed_out.scheduled_event_id == 2 and timed_out.started_event_id == 3
    assert events[4].workflow_task_scheduled_event_attributes.attempt == 2
    # The retry went to the live worker, not the dead one.
    assert events[5].workflow_task_started_event_attributes.identity != "doomed-worker"
    assert events[3].event_time.ToDatetime() - events[2].event_time.ToDatetime() >= timedelta(seconds=2)
