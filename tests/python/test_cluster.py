"""A three-node Keel cluster (three `keel node` processes): the client talks to one node, workers
to the others, and a node is killed with SIGKILL mid-run and restarted; every workflow completes
exactly once with the right result and every history is contiguous. Keel only.

KEEL_CLUSTER_WORKFLOWS sets the number of workflows (default 500)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from helpers import NAMESPACE, SERVER_KIND, Server, event_type_name, new_worker, server_binary
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus

pytestmark = pytest.mark.skipif(SERVER_KIND != "keel", reason="runs a Keel cluster")

WORKFLOWS = int(os.environ.get("KEEL_CLUSTER_WORKFLOWS", "500"))
SHARDS = 8
# How long the killed node stays down.
DOWN_SECONDS = 5.0


@activity.defn
async def double(x: int) -> int:
    return x * 2


@workflow.defn
class ActivityTimerSignal:
    def __init__(self) -> None:
        self.bonus: int | None = None

    @workflow.signal
    def give(self, bonus: int) -> None:
        self.bonus = bonus

    @workflow.run
    async def run(self, x: int) -> int:
        doubled = await workflow.execute_activity(double, x, start_to_close_timeout=timedelta(seconds=10))
        await asyncio.sleep(0.3)
        await workflow.wait_condition(lambda: self.bonus is not None)
        assert self.bonus is not None
        return doubled + self.bonus


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[Server]]:
    nodes = [Server(tmp_path / f"node-{i}", tmp_path / f"node-{i}.log") for i in (1, 2, 3)]
    peers = ",".join(f"{i}={node.address}" for i, node in enumerate(nodes, 1))
    for i, node in enumerate(nodes, 1):
        node.args = [
            "node",
            f"--node-id={i}",
            "--cluster-id=e2e",
            f"--listen={node.address}",
            f"--peer={peers}",
            f"--data-dir={node.data_dir}",
            f"--shards={SHARDS}",
        ]
    # Together: no node is ready before the metadata group has a quorum.
    for node in nodes:
        node.spawn()
    try:
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        yield nodes
    finally:
        for node in nodes:
            await node.stop(kill=True)


def shard_leaders(address: str) -> Counter[str]:
    """How many groups each node leads, from `keel cluster status`."""
    out = subprocess.run(
        [server_binary(), "cluster", "status", "--address", address], capture_output=True, text=True, timeout=30
    ).stdout
    leaders: Counter[str] = Counter()
    for line in out.splitlines():
        if line.startswith("shard "):
            leaders[line.split()[2]] += 1
    return leaders


async def run_through_a_node_loss(nodes: list[Server], victim: Server) -> None:
    client = await Client.connect(nodes[0].address, namespace=NAMESPACE)
    task_queue = f"tq-{uuid.uuid4()}"
    workers = [
        new_worker(await Client.connect(node.address, namespace=NAMESPACE), task_queue, [ActivityTimerSignal], [double])
        for node in nodes[1:]
    ]
    running = [asyncio.create_task(worker.run()) for worker in workers]
    prefix = f"cluster-{uuid.uuid4()}"
    try:
        async def finish(handle) -> tuple[float, int]:
            result = await handle.result()
            return time.monotonic(), result

        async def kill_then_restart() -> tuple[float, float]:
            await victim.stop(kill=True)
            killed = time.monotonic()
            await asyncio.sleep(DOWN_SECONDS)
            await victim.start()
            return killed, time.monotonic()

        started = time.monotonic()
        handles = []
        waits = []
        outage = None
        for i in range(WORKFLOWS):
            handle = await client.start_workflow(
                ActivityTimerSignal.run, i, id=f"{prefix}-{i}", task_queue=task_queue
            )
            await handle.signal(ActivityTimerSignal.give, 1)
            handles.append(handle)
            waits.append(asyncio.create_task(finish(handle)))
            if i == WORKFLOWS // 3:
                outage = asyncio.create_task(kill_then_restart())
        assert outage is not None
        killed_at, restarted_at = await outage
        finished = await asyncio.wait_for(asyncio.gather(*waits), 240)
        results = [result for _, result in finished]
        elapsed = time.monotonic() - started

        def rate(since: float, until: float) -> str:
            done = sum(1 for at, _ in finished if since <= at < until)
            return f"{done / max(until - since, 1e-3):.0f}/s"

        end = max(at for at, _ in finished)
        print(
            f"\n{WORKFLOWS} workflows in {elapsed:.1f} s through the loss of node {victim.address}: "
            f"completions {rate(started, killed_at)} before the kill, {rate(killed_at, restarted_at)} "
            f"while it was down ({restarted_at - killed_at:.1f} s), {rate(restarted_at, end + 1e-3)} after"
        )
        assert results == [2 * i + 1 for i in range(WORKFLOWS)]
        for handle in handles:
            runs = [w async for w in client.list_workflows(f"WorkflowId = '{handle.id}'")]
            assert [r.status for r in runs] == [WorkflowExecutionStatus.COMPLETED], handle.id
            events = [e async for e in handle.fetch_history_events()]
            assert [e.event_id for e in events] == list(range(1, len(events) + 1)), handle.id
            types = Counter(event_type_name(e) for e in events)
            assert types["WorkflowExecutionCompleted"] == 1, (handle.id, types)
            assert types["ActivityTaskCompleted"] == 1, (handle.id, types)
            assert types["TimerFired"] == 1, (handle.id, types)
    finally:
        for worker in workers:
            await worker.shutdown()
        for task in running:
            task.cancel()


@pytest.mark.timeout(600)
async def test_workflows_survive_the_loss_of_a_worker_node(cluster: list[Server]) -> None:
    await run_through_a_node_loss(cluster, cluster[1])


@pytest.mark.timeout(600)
async def test_workflows_survive_the_loss_of_the_node_leading_most_shards(cluster: list[Server]) -> None:
    leaders = shard_leaders(cluster[0].address)
    # The client's node stays up: among the others, the one leading the most shards.
    candidates = {str(i): node for i, node in enumerate(cluster, 1) if i != 1}
    victim_id = max(candidates, key=lambda i: leaders.get(i, 0))
    await run_through_a_node_loss(cluster, candidates[victim_id])
