"""Fixtures for the end-to-end tests; see helpers.py for how the server under test is chosen."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from helpers import (
    NAMESPACE,
    Cli,
    REPO_ROOT,
    SERVER_KIND,
    Server,
    ensure_custom_search_attributes,
    server_binary,
)
from temporalio.client import Client

_servers: list[Server] = []


def _new_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Server:
    base = tmp_path_factory.mktemp(name)
    server = Server(base / "data", base / "server.log")
    _servers.append(server)
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The session's shared server, started once."""
    srv = _new_server(tmp_path_factory, f"{SERVER_KIND}-server")
    try:
        srv.start_sync()
    except Exception as err:  # noqa: BLE001
        # Every test needs it: stop here rather than fail each test the same way.
        pytest.exit(f"could not start the server under test: {err}", returncode=1)
    print(f"\n{SERVER_KIND} server on {srv.address}, log {srv.log_path}", file=sys.stderr)
    yield srv
    srv.stop_sync()


@pytest.fixture
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the test's own, for tests that stop and restart it (call ``await restart()``)."""
    srv = _new_server(tmp_path_factory, f"{SERVER_KIND}-own-server")
    srv.start_sync()
    yield srv
    srv.stop_sync(kill=True)


@pytest.fixture
def address(server: Server) -> str:
    return server.address


@pytest_asyncio.fixture
async def client(server: Server) -> Client:
    return await Client.connect(server.address, namespace=NAMESPACE)


@pytest_asyncio.fixture
async def custom_search_attributes(client: Client) -> None:
    """Registers the custom search attributes of helpers.CUSTOM_SEARCH_ATTRIBUTES on ``default``
    (a plain dev server has none), through the OperatorService as a user would."""
    await ensure_custom_search_attributes(client)


@pytest.fixture
def cli(server: Server) -> Cli:
    return Cli(server)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for srv in _servers:
        srv.stop_sync(kill=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"server under test: KEEL_TEST_SERVER={SERVER_KIND} ({server_binary()})"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure: how to run just this test again, and where the server's log is."""
    report = yield
    if report.failed:
        path = Path(str(item.path)).resolve().relative_to(REPO_ROOT)
        test = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else ""
        lines = [f"reproduce: KEEL_TEST_SERVER={SERVER_KIND} scripts/python-tests '{path}::{test}'"]
        funcargs = getattr(item, "funcargs", {})
        used = [funcargs[n] for n in ("server", "fresh_server") if isinstance(funcargs.get(n), Server)]
        for srv in used or _servers[:1]:
            running = srv.proc is not None and srv.proc.poll() is None
            lines.append(f"{srv.kind} server {srv.address} ({'running' if running else 'not running'}) log: {srv.log_path}")
            if not running:
                lines.append(srv.log_tail(20))
        report.sections.append(("keel e2e", "\n".join(lines)))
    return report

