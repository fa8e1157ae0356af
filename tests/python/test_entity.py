"""Entity workflows, the control-plane pattern: one long-running workflow per managed resource.

Updates (with a validator) enqueue commands that the main loop processes; a signal deletes the
entity; a query reports its status; a periodic tick runs through a wait_condition timeout;
a failed command is compensated in reverse order; the workflow continues as new when suggested,
after all handlers finish. The last test sends 20,000 updates and signals through several runs
and checks that none was lost or applied twice.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from helpers import history_events, new_id, new_worker, wait_for
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode


@dataclass
class Command:
    kind: str
    size: int = 0


@dataclass
class EntityState:
    name: str
    size: int = 1
    applied: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    ticks: int = 0
    runs: int = 1


@activity.defn
async def apply_step(step: str) -> str:
    if step == "fail-step":
        raise ApplicationError("the step failed", non_retryable=True)
    return step


@activity.defn
async def undo_step(step: str) -> str:
    return f"undo-{step}"


@workflow.defn
class DatabaseEntity:
    """One managed database: commands arrive as updates and are applied by the main loop."""

    @workflow.init
    def __init__(self, state: EntityState, tick_seconds: float) -> None:
        self.state = state
        self.queue: list[tuple[int, Command]] = []
        self.results: dict[int, str] = {}
        self.next_seq = 0
        self.deleted = False

    @workflow.update
    async def submit(self, command: Command) -> str:
        seq = self.next_seq
        self.next_seq += 1
        self.queue.append((seq, command))
        await workflow.wait_condition(lambda: seq in self.results)
        result = self.results.pop(seq)
        if result.startswith("failed"):
            raise ApplicationError(result)
        return result

    @submit.validator
    def check(self, command: Command) -> None:
        if self.deleted:
            raise ValueError("the database is being deleted")
        if command.kind not in ("resize", "migrate"):
            raise ValueError(f"unknown command {command.kind!r}")
        if command.kind == "resize" and command.size <= 0:
            raise ValueError("size must be positive")

    @workflow.signal
    def delete(self) -> None:
        self.deleted = True

    @workflow.query
    def status(self) -> EntityState:
        return self.state

    async def process(self, seq: int, command: Command) -> None:
        steps = ["snapshot", "resize" if command.kind == "resize" else "fail-step", "verify"]
        done: list[str] = []
        try:
            for step in steps:
                await workflow.execute_activity(
                    apply_step,
                    step,
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
                done.append(step)
        except Exception:
            # Saga: undo what was done, in reverse order.
            for step in reversed(done):
                self.state.compensated.append(
                    await workflow.execute_activity(
                        undo_step, step, start_to_close_timeout=timedelta(seconds=10)
                    )
                )
            self.results[seq] = f"failed {command.kind}"
            return
        if command.kind == "resize":
            self.state.size = command.size
        self.state.applied.append(command.kind)
        self.results[seq] = f"{command.kind} done"

    @workflow.run
    async def run(self, state: EntityState, tick_seconds: float) -> EntityState:
        while True:
            try:
                await workflow.wait_condition(
                    lambda: bool(self.queue) or self.deleted, timeout=timedelta(seconds=tick_seconds)
                )
            except asyncio.TimeoutError:
                self.state.ticks += 1  # the periodic health check
            while self.queue:
                seq, command = self.queue.pop(0)
                await self.process(seq, command)
            if self.deleted:
                await workflow.wait_condition(workflow.all_handlers_finished)
                return self.state
            if workflow.info().is_continue_as_new_suggested() or self.state.ticks >= 3:
                await workflow.wait_condition(workflow.all_handlers_finished)
                self.state.ticks = 0
                self.state.runs += 1
                workflow.continue_as_new(args=[self.state, tick_seconds])


async def test_database_entity_lifecycle(client: Client, task_queue: str) -> None:
    async with new_worker(client, task_queue, [DatabaseEntity], activities=[apply_step, undo_step]):
        handle = await client.start_workflow(
            DatabaseEntity.run, args=[EntityState(name="db-1"), 0.3], id=new_id(), task_queue=task_queue
        )
        assert await handle.execute_update(DatabaseEntity.submit, Command("resize", 4)) == "resize done"
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(DatabaseEntity.submit, Command("resize", 0))
        assert "size must be positive" in str(rejected.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(DatabaseEntity.submit, Command("migrate"))
        assert "failed migrate" in str(failed.value.cause)
        status = await handle.query(DatabaseEntity.status)
        assert status.size == 4
        assert status.applied == ["resize"]
        assert status.compensated == ["undo-snapshot"]

        # The periodic tick continues the entity as new after three ticks; it keeps its state.
        first_run = handle.result_run_id

        async def continued() -> bool:
            return (await handle.query(DatabaseEntity.status)).runs >= 2

        await wait_for(continued, timeout=20, what="the entity to continue as new after three ticks")
        status = await handle.query(DatabaseEntity.status)
        assert status.size == 4
        assert (await handle.describe()).run_id != first_run

        assert await handle.execute_update(DatabaseEntity.submit, Command("resize", 8)) == "resize done"
        await handle.signal(DatabaseEntity.delete)
        final = await handle.result()
        assert final.size == 8
        assert final.applied == ["resize", "resize"]
        with pytest.raises(Exception):
            await handle.execute_update(DatabaseEntity.submit, Command("resize", 2))


@workflow.defn
class Ledger:
    """Records every update and signal by its sequence number, across continue-as-new."""

    @workflow.init
    def __init__(self, updates: list[int], signals: list[int]) -> None:
        self.updates = list(updates)
        self.signals = list(signals)
        self.closing = False

    @workflow.update
    def record(self, seq: int) -> int:
        self.updates.append(seq)
        return seq

    @workflow.signal
    def note(self, seq: int) -> None:
        self.signals.append(seq)

    @workflow.signal
    def close(self) -> None:
        self.closing = True

    @workflow.run
    async def run(self, updates: list[int], signals: list[int]) -> dict[str, list[int]]:
        await workflow.wait_condition(
            lambda: self.closing or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.closing:
            return {"updates": self.updates, "signals": self.signals}
        workflow.continue_as_new(args=[self.updates, self.signals])


@pytest.mark.timeout(900)
async def test_twenty_thousand_updates_and_signals_cross_runs_exactly_once(
    client: Client, task_queue: str
) -> None:
    # 10,000 of each (20,000 operations) by default; KEEL_ENTITY_OPS sets the total.
    count = int(os.environ.get("KEEL_ENTITY_OPS", "20000")) // 2
    async with new_worker(client, task_queue, [Ledger], max_concurrent_workflow_tasks=4):
        handle = await client.start_workflow(Ledger.run, args=[[], []], id=new_id(), task_queue=task_queue)
        async def record(seq: int) -> int:
            # Temporal aborts updates whose workflow task failed (FAILED_PRECONDITION,
            # WorkflowNotReady) and expects the caller to retry; the update id keeps it once.
            while True:
                try:
                    return await handle.execute_update(Ledger.record, seq, id=f"u-{seq}")
                except RPCError as err:
                    if err.status != RPCStatusCode.FAILED_PRECONDITION:
                        raise

        # In rounds: a run can continue as new only through a workflow task during which no
        # new signal or update arrived (Temporal's rule), so the senders pause between rounds.
        round_size = 500
        for start in range(0, count, round_size):
            seqs = iter(range(start, min(start + round_size, count)))

            async def send_updates() -> None:
                for seq in seqs:
                    assert await record(seq) == seq

            async def send_signals() -> None:
                for seq in range(start, min(start + round_size, count)):
                    await handle.signal(Ledger.note, seq)

            await asyncio.gather(*[send_updates() for _ in range(8)], send_signals())
            await asyncio.sleep(0.2)
        await handle.signal(Ledger.close)
        result = await handle.result()
    assert sorted(result["updates"]) == list(range(count)), "every update applied exactly once"
    assert result["signals"] == list(range(count)), "every signal applied exactly once, in order"
    runs = [e async for e in client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 3, f"expected several runs through continue-as-new, got {len(runs)}"
    assert len(await history_events(handle)) < 20_000
