"""A three-node Keel cluster (three `keel node` processes): the client talks to one node, workers
to the others, and mid-run a node is killed with SIGKILL and restarted, or replaced by a fresh
one (`keel node --join`, `keel cluster add-node`, `remove-node`); every workflow completes
exactly once with the right result and every history is contiguous. Keel only.

KEEL_CLUSTER_WORKFLOWS sets the number of workflows (default 500)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
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
    """Three running nodes, and a fourth, not started, that can join them."""
    nodes = [Server(tmp_path / f"node-{i}", tmp_path / f"node-{i}.log") for i in (1, 2, 3, 4)]
    peers = ",".join(f"{i}={node.address}" for i, node in enumerate(nodes[:3], 1))
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
    nodes[3].args += ["--join", f"--peer=4={nodes[3].address}"]
    # Together: no node is ready before the metadata group has a quorum.
    for node in nodes[:3]:
        node.spawn()
    try:
        await asyncio.gather(*(node.wait_ready() for node in nodes[:3]))
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


async def keel_cluster(*args: str) -> tuple[int, str]:
    """`keel cluster ARGS...`: (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        server_binary(), "cluster", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode()


def kill_then_restart(victim: Server) -> Callable[[], Awaitable[tuple[float, float]]]:
    async def disrupt() -> tuple[float, float]:
        await victim.stop(kill=True)
        killed = time.monotonic()
        await asyncio.sleep(DOWN_SECONDS)
        await victim.start()
        return killed, time.monotonic()

    return disrupt


def replace_node(nodes: list[Server], spare: Server, removed: Server) -> Callable[[], Awaitable[tuple[float, float]]]:
    """Adds `spare` (node 4, started with --join), then kills `removed` (node 2) and removes it."""

    async def disrupt() -> tuple[float, float]:
        began = time.monotonic()
        spare.spawn()
        deadline = began + 60
        while True:
            code, out = await keel_cluster(
                "add-node", "--address", nodes[0].address, "--node-id", "4", "--node-address", spare.address
            )
            if code == 0:
                break
            assert time.monotonic() < deadline, f"add-node kept failing: {out}"
            await asyncio.sleep(0.5)
        await removed.stop(kill=True)
        code, out = await keel_cluster("remove-node", "--address", nodes[0].address, "--node-id", "2")
        assert code == 0, out
        return began, time.monotonic()

    return disrupt


async def run_through(nodes: list[Server], disrupt: Callable[[], Awaitable[tuple[float, float]]], what: str) -> None:
    client = await Client.connect(nodes[0].address, namespace=NAMESPACE)
    task_queue = f"tq-{uuid.uuid4()}"
    workers = [
        new_worker(await Client.connect(node.address, namespace=NAMESPACE), task_queue, [ActivityTimerSignal], [double])
        for node in nodes[1:3]
    ]
    running = [asyncio.create_task(worker.run()) for worker in workers]
    prefix = f"cluster-{uuid.uuid4()}"
    try:
        async def finish(handle) -> tuple[float, int]:
            result = await handle.result()
            return time.monotonic(), result

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
                outage = asyncio.create_task(disrupt())
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
            f"\n{WORKFLOWS} workflows in {elapsed:.1f} s through {what}: "
            f"completions {rate(started, killed_at)} before, {rate(killed_at, restarted_at)} "
            f"during ({restarted_at - killed_at:.1f} s), {rate(restarted_at, end + 1e-3)} after"
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
    await run_through(cluster, kill_then_restart(cluster[1]), f"SIGKILL and restart of {cluster[1].address}")


@pytest.mark.timeout(600)
async def test_workflows_survive_the_loss_of_the_node_leading_most_shards(cluster: list[Server]) -> None:
    leaders = shard_leaders(cluster[0].address)
    # The client's node stays up: among the others, the one leading the most shards.
    candidates = {str(i): node for i, node in enumerate(cluster[:3], 1) if i != 1}
    victim = candidates[max(candidates, key=lambda i: leaders.get(i, 0))]
    await run_through(cluster, kill_then_restart(victim), f"SIGKILL and restart of {victim.address}")


@pytest.mark.timeout(600)
async def test_workflows_survive_replacing_a_node(cluster: list[Server]) -> None:
    await run_through(
        cluster, replace_node(cluster, cluster[3], cluster[1]), "node 4 joining and node 2 killed and removed"
    )
    _, status = await keel_cluster("status", "--address", cluster[3].address)
    assert "(3 nodes)" in status and cluster[1].address not in status, status
