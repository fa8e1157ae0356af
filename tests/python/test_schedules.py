"""Schedules through the Python SDK: create, describe (the spec in Temporal's canonical form),
update, pause and unpause, trigger, backfill, overlap policies, list and delete."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from helpers import KEEL_KEYWORD, Cli, new_id, new_worker, wait_for
from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode
from test_workflow_basics import Greet, Sleep


@workflow.defn
class CountOn:
    """Counts on from the last scheduled run's result."""

    @workflow.run
    async def run(self) -> int:
        return (workflow.get_last_completion_result(int) or 0) + 1


def start_action(task_queue: str, workflow_id: str, arg: str = "schedule") -> ScheduleActionStartWorkflow:
    return ScheduleActionStartWorkflow(Greet.run, arg, id=workflow_id, task_queue=task_queue)


async def test_create_describe_update_and_delete(client: Client, task_queue: str) -> None:
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            Greet.run,
            "described",
            id=new_id("scheduled"),
            task_queue=task_queue,
            execution_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=20),
            memo={"k": "v"},
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=(ScheduleRange(1, step=1),),
                    minute=(ScheduleRange(2, 3),),
                    hour=(ScheduleRange(4, 5, 6),),
                    day_of_month=(ScheduleRange(7),),
                    month=(ScheduleRange(9),),
                    year=(ScheduleRange(2080),),
                    comment="a comment",
                )
            ],
            intervals=[ScheduleIntervalSpec(every=timedelta(days=10), offset=timedelta(days=2))],
            cron_expressions=["0 12 * * MON"],
            skip=[ScheduleCalendarSpec(year=(ScheduleRange(2050),))],
            start_at=datetime(2060, 7, 8, 9, 10, 11, tzinfo=timezone.utc),
            jitter=timedelta(seconds=80),
        ),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.BUFFER_ONE,
            catchup_window=timedelta(minutes=5),
            pause_on_failure=True,
        ),
        state=ScheduleState(note="note 1", paused=True, limited_actions=True, remaining_actions=30),
    )
    handle = await client.create_schedule(new_id("schedule"), schedule, memo={"owner": "keel"})
    desc = await handle.describe()
    assert desc.id == handle.id
    assert await desc.memo_value("owner") == "keel"
    spec = desc.schedule.spec
    # The cron expression comes back as a calendar, after the given one.
    assert spec.cron_expressions == []
    assert len(spec.calendars) == 2
    assert spec.calendars[0].comment == "a comment"
    assert spec.calendars[0].hour == (ScheduleRange(4, 5, 6),)
    assert spec.calendars[1] == ScheduleCalendarSpec(
        second=(ScheduleRange(0),),
        minute=(ScheduleRange(0),),
        hour=(ScheduleRange(12),),
        day_of_month=(ScheduleRange(1, 31),),
        month=(ScheduleRange(1, 12),),
        day_of_week=(ScheduleRange(1),),
    )
    assert spec.intervals == [ScheduleIntervalSpec(every=timedelta(days=10), offset=timedelta(days=2))]
    assert spec.jitter == timedelta(seconds=80)
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
    assert desc.schedule.policy.catchup_window == timedelta(minutes=5)
    assert desc.schedule.state.paused and desc.schedule.state.note == "note 1"
    assert desc.schedule.state.remaining_actions == 30
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    # The retry policy's maximum interval is filled in as Temporal does (100 x initial).
    assert action.retry_policy == RetryPolicy(maximum_attempts=20, maximum_interval=timedelta(seconds=100))
    assert action.execution_timeout == timedelta(hours=1)
    # No action before the start time; the next ones all after it.
    assert desc.info.num_actions == 0
    assert desc.info.next_action_times
    assert all(t >= datetime(2060, 7, 8, 9, 10, 11, tzinfo=timezone.utc) for t in desc.info.next_action_times)

    def set_timeout(input: ScheduleUpdateInput) -> ScheduleUpdate:
        assert isinstance(input.description.schedule.action, ScheduleActionStartWorkflow)
        input.description.schedule.action.task_timeout = timedelta(minutes=7)
        return ScheduleUpdate(schedule=input.description.schedule)

    await handle.update(set_timeout)
    desc = await handle.describe()
    assert isinstance(desc.schedule.action, ScheduleActionStartWorkflow)
    assert desc.schedule.action.task_timeout == timedelta(minutes=7)
    assert desc.info.last_updated_at is not None

    with pytest.raises(ScheduleAlreadyRunningError):
        await client.create_schedule(handle.id, schedule)

    await handle.delete()
    with pytest.raises(RPCError) as error:
        await handle.describe()
    assert error.value.status == RPCStatusCode.NOT_FOUND
    # The id is free again once deleted.
    again = await client.create_schedule(handle.id, schedule)
    await again.delete()


async def test_calendar_defaults_run_daily_at_midnight(client: Client, task_queue: str) -> None:
    handle = await client.create_schedule(
        new_id("schedule"),
        Schedule(
            action=start_action(task_queue, new_id("scheduled")),
            spec=ScheduleSpec(calendars=[ScheduleCalendarSpec()]),
            state=ScheduleState(paused=True),
        ),
    )
    desc = await handle.describe()
    assert desc.schedule.spec.calendars[0] == ScheduleCalendarSpec()
    times = desc.info.next_action_times
    assert len(times) == 10
    for i, time in enumerate(times):
        assert (time.hour, time.minute, time.second) == (0, 0, 0)
        if i:
            assert time - times[i - 1] == timedelta(days=1)
    await handle.delete()


async def test_trigger_pause_and_recent_actions(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Greet]):
        handle = await client.create_schedule(
            new_id("schedule"),
            Schedule(
                action=start_action(task_queue, new_id("scheduled"), "trigger"),
                spec=ScheduleSpec(),
                state=ScheduleState(paused=True),
            ),
            trigger_immediately=True,
        )
        # A paused schedule still takes triggered actions, and describe shows them at once.
        desc = await handle.describe()
        assert desc.info.num_actions == 1
        action = desc.info.recent_actions[0].action
        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
        assert action.workflow_id.startswith(desc.schedule.action.id + "-")  # type: ignore[union-attr]
        result = await client.get_workflow_handle(
            action.workflow_id, run_id=action.first_execution_run_id
        ).result()
        assert result == "hello trigger"

        await handle.unpause(note="go")
        desc = await handle.describe()
        assert not desc.schedule.state.paused and desc.schedule.state.note == "go"
        await handle.pause()
        desc = await handle.describe()
        assert desc.schedule.state.paused
        assert desc.schedule.state.note == "Paused via Python SDK"

        await handle.trigger()

        async def two_done() -> bool:
            d = await handle.describe()
            return d.info.num_actions == 2 and not d.info.running_actions

        await wait_for(two_done, timeout=15, what="the second triggered action to finish")
        # The scheduled workflows are ordinary workflows; the schedule's own run is not listed.
        listed = [w async for w in client.list_workflows(f"TemporalScheduledById = '{handle.id}'")]
        assert len(listed) == 2
        # Each carries its schedule's id and its nominal time, as Temporal sets them.
        attributes = listed[0].search_attributes
        assert attributes["TemporalScheduledById"] == [handle.id]
        assert isinstance(attributes["TemporalScheduledStartTime"][0], datetime)
        hidden = [w async for w in client.list_workflows(f"WorkflowId = 'temporal-sys-scheduler:{handle.id}'")]
        assert hidden == []
        await handle.delete()


async def test_each_scheduled_run_gets_the_last_result(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [CountOn]):
        handle = await client.create_schedule(
            new_id("schedule"),
            Schedule(
                action=ScheduleActionStartWorkflow(CountOn.run, id=new_id("count"), task_queue=task_queue),
                spec=ScheduleSpec(),
                state=ScheduleState(paused=True),
            ),
        )
        results = []
        for n in range(1, 4):
            await handle.trigger()

            async def finished() -> bool:
                d = await handle.describe()
                return d.info.num_actions == n and not d.info.running_actions

            await wait_for(finished, timeout=15, what=f"triggered action {n} to finish")
            last = (await handle.describe()).info.recent_actions[-1].action
            assert isinstance(last, ScheduleActionExecutionStartWorkflow)
            results.append(await client.get_workflow_handle(last.workflow_id, run_id=last.first_execution_run_id).result())
        assert results == [1, 2, 3]
        await handle.delete()


async def test_interval_schedule_runs_and_skips_overlaps(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [Sleep]):
        handle = await client.create_schedule(
            new_id("schedule"),
            Schedule(
                action=ScheduleActionStartWorkflow(
                    Sleep.run, 3.5, id=new_id("sleepy"), task_queue=task_queue
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=1))]),
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            ),
        )

        async def skipped() -> bool:
            d = await handle.describe()
            return d.info.num_actions >= 2 and d.info.num_actions_skipped_overlap >= 2

        await wait_for(skipped, timeout=20, what="a second action after skipped overlaps")
        desc = await handle.describe()
        # SKIP: never two at once.
        assert len(desc.info.running_actions) <= 1
        await handle.delete()
        # Deleting the schedule leaves its workflows alone.
        for action in desc.info.recent_actions:
            assert isinstance(action.action, ScheduleActionExecutionStartWorkflow)
            wf = client.get_workflow_handle(action.action.workflow_id)
            assert (await wf.describe()).status in (
                WorkflowExecutionStatus.RUNNING,
                WorkflowExecutionStatus.COMPLETED,
            )


async def test_backfill_starts_the_times_in_range(client: Client, task_queue: str) -> None:
    begin = datetime(2020, 1, 20, 5, tzinfo=timezone.utc)
    async with new_worker(client, task_queue, [Greet]):
        handle = await client.create_schedule(
            new_id("schedule"),
            Schedule(
                action=start_action(task_queue, new_id("backfilled")),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=1))]),
                state=ScheduleState(paused=True),
            ),
            backfill=[
                ScheduleBackfill(
                    start_at=begin - timedelta(minutes=30),
                    end_at=begin - timedelta(minutes=29),
                    overlap=ScheduleOverlapPolicy.ALLOW_ALL,
                )
            ],
        )
        await handle.backfill(
            ScheduleBackfill(
                start_at=begin - timedelta(minutes=4),
                end_at=begin - timedelta(minutes=2),
                overlap=ScheduleOverlapPolicy.ALLOW_ALL,
            )
        )

        async def five() -> bool:
            return (await handle.describe()).info.num_actions == 5

        await wait_for(five, timeout=15, what="five backfilled actions (both ends included)")
        desc = await handle.describe()
        ids = [a.action.workflow_id for a in desc.info.recent_actions]  # type: ignore[union-attr]
        # Recent actions are listed in the order they were taken (here, the nominal times').
        assert ids == sorted(ids)
        assert ids[0].endswith("-2020-01-20T04:30:00Z")
        assert ids[-1].endswith("-2020-01-20T04:58:00Z")
        await handle.delete()


async def test_list_schedules_with_a_query(client: Client, task_queue: str, custom_search_attributes: None) -> None:
    prefix = f"listed-{uuid.uuid4()}"
    schedule = Schedule(
        action=start_action(task_queue, new_id("listed")),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
        state=ScheduleState(paused=True, note="listed"),
    )
    ids = []
    for i in range(3):
        handle = await client.create_schedule(
            f"{prefix}-{i}",
            schedule,
            search_attributes=TypedSearchAttributes([SearchAttributePair(KEEL_KEYWORD, prefix)])
            if i > 0
            else None,
        )
        ids.append(handle.id)

    async def listed() -> list[str]:
        return sorted([s.id async for s in await client.list_schedules(page_size=2) if s.id.startswith(prefix)])

    assert await wait_for(listed, what="the schedules listed") == ids
    async def matching_two() -> list:
        found = [s async for s in await client.list_schedules(f"KeelKeyword = '{prefix}'")]
        return found if len(found) == 2 else []

    matching = await wait_for(matching_two, what="the two schedules with the search attribute")
    assert sorted(s.id for s in matching) == ids[1:]
    entry = matching[0]
    assert entry.schedule is not None and entry.info is not None
    assert entry.schedule.state.paused and entry.schedule.state.note == "listed"
    assert entry.schedule.action.workflow == "Greet"  # type: ignore[attr-defined]
    assert entry.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(hours=1))]
    assert len(entry.info.next_action_times) == 5
    assert entry.typed_search_attributes[KEEL_KEYWORD] == prefix
    for id in ids:
        await client.get_schedule_handle(id).delete()
    assert await listed() == []


async def test_bad_schedules_are_refused(client: Client, task_queue: str) -> None:
    with pytest.raises(RPCError) as error:
        await client.create_schedule(
            new_id("schedule"),
            Schedule(
                action=start_action(task_queue, new_id("bad")),
                spec=ScheduleSpec(cron_expressions=["0 25 * * *"]),
            ),
        )
    assert error.value.status == RPCStatusCode.INVALID_ARGUMENT
    with pytest.raises(RPCError) as error:
        await client.get_schedule_handle(new_id("missing")).describe()
    assert error.value.status == RPCStatusCode.NOT_FOUND


async def test_schedule_commands_of_the_cli(cli: Cli, client: Client, task_queue: str) -> None:
    schedule_id = new_id("cli-schedule")
    await cli.run(
        "schedule", "create", "--schedule-id", schedule_id, "--workflow-id", new_id("cli-scheduled"),
        "--task-queue", task_queue, "--type", "Greet", "--input", '"cli"',
        "--cron", "0 12 * * MON", "--paused", "--overlap-policy", "BufferOne",
    )
    described, _ = await cli.run("schedule", "describe", "--schedule-id", schedule_id, "-o", "json")
    desc = json.loads(described)
    assert desc["schedule"]["state"]["paused"] is True
    assert desc["schedule"]["policies"]["overlapPolicy"] == "SCHEDULE_OVERLAP_POLICY_BUFFER_ONE"
    calendar = desc["schedule"]["spec"]["structuredCalendar"][0]
    assert calendar["hour"] == [{"start": 12, "end": 12, "step": 1}]
    listed, _ = await cli.run("schedule", "list", "-o", "json")
    assert schedule_id in [s["scheduleId"] for s in json.loads(listed)]
    async with new_worker(client, task_queue, [Greet]):
        await cli.run("schedule", "trigger", "--schedule-id", schedule_id)

        async def one_done() -> bool:
            d = await client.get_schedule_handle(schedule_id).describe()
            return d.info.num_actions == 1 and not d.info.running_actions

        await wait_for(one_done, timeout=15, what="the action the CLI triggered")
    await cli.run("schedule", "toggle", "--schedule-id", schedule_id, "--unpause", "--reason", "go")
    desc = await client.get_schedule_handle(schedule_id).describe()
    assert not desc.schedule.state.paused and desc.schedule.state.note == "go"
    await cli.run("schedule", "delete", "--schedule-id", schedule_id)
    await cli.run("schedule", "describe", "--schedule-id", schedule_id, rc=1)
