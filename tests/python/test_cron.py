"""Cron schedules on workflows: the first run waits for the schedule, each close starts the
next run, and the chain ends when the workflow is terminated."""

from __future__ import annotations

from datetime import timedelta

import pytest

from helpers import event_type_name, history_events, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.api.enums.v1 import ContinueAsNewInitiator
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode


@workflow.defn
class CronCounter:
    """Counts its runs through the last completion result."""

    @workflow.run
    async def run(self) -> int:
        previous = workflow.get_last_completion_result(int)
        return (previous or 0) + 1


async def test_cron_runs_follow_the_schedule_and_hand_on_their_results(
    client: Client, task_queue: str
) -> None:
    async with new_worker(client, task_queue, [CronCounter]):
        handle = await client.start_workflow(
            CronCounter.run, id=new_id("cron"), task_queue=task_queue, cron_schedule="@every 2s"
        )
        first = await history_events(handle)
        started = first[0].workflow_execution_started_event_attributes
        assert started.cron_schedule == "@every 2s"
        assert started.first_workflow_task_backoff.ToTimedelta() > timedelta(0)

        async def runs() -> list:
            found = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
            return found if len(found) >= 3 else []

        found = await wait_for(runs, timeout=20, what="three cron runs")
        await client.get_workflow_handle(handle.id).terminate("enough")
        # Each completed run names its successor, which counts on from its result.
        run_id = handle.first_execution_run_id
        for expected in (1, 2):
            events = await history_events(client.get_workflow_handle(handle.id, run_id=run_id))
            assert event_type_name(events[-1]) == "WorkflowExecutionCompleted"
            completed = events[-1].workflow_execution_completed_event_attributes
            assert completed.result.payloads[0].data == str(expected).encode()
            run_id = completed.new_execution_run_id
            assert run_id
            successor = await history_events(client.get_workflow_handle(handle.id, run_id=run_id))
            attrs = successor[0].workflow_execution_started_event_attributes
            assert attrs.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
            assert attrs.last_completion_result.payloads[0].data == str(expected).encode()
            assert attrs.first_execution_run_id == handle.first_execution_run_id
        statuses = {w.status for w in found}
        assert WorkflowExecutionStatus.COMPLETED in statuses
        last = await client.get_workflow_handle(handle.id).describe()
        assert last.status == WorkflowExecutionStatus.TERMINATED


@pytest.mark.parametrize("schedule", ["every minute", "61 * * * *", "* * * *"])
async def test_bad_cron_schedules_are_refused(client: Client, task_queue: str, schedule: str) -> None:
    with pytest.raises(RPCError) as err:
        await client.start_workflow(
            CronCounter.run, id=new_id("cron-bad"), task_queue=task_queue, cron_schedule=schedule
        )
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT


async def test_cron_and_start_delay_are_refused_together(client: Client, task_queue: str) -> None:
    with pytest.raises(RPCError) as err:
        await client.start_workflow(
            CronCounter.run,
            id=new_id("cron-delay"),
            task_queue=task_queue,
            cron_schedule="@every 2s",
            start_delay=timedelta(seconds=1),
        )
    assert err.value.status == RPCStatusCode.INVALID_ARGUMENT
