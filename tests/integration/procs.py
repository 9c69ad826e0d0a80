"""Running the engine as a user does, in tests: free ports, `ocw` subprocesses, waiting."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ocw(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m workers.cli ARGS` in its own session, output appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_ocw(
    args: list[str], env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess:
    """`python -m workers.cli ARGS` to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def decision_status(handle: Any) -> Callable[[], Awaitable[Any]]:
    """A reader of the account's DecisionWorkflow status: None until it answers."""
    from workflows.decision import DecisionWorkflow

    async def read() -> Any:
        try:
            return await handle.query(DecisionWorkflow.status)
        except Exception:  # noqa: BLE001 - not started yet
            return None

    return read


def run_demo(
    args: list[str], env: dict[str, str], home: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`ocw demo ARGS` to its end (a few tens of seconds here). If it overruns ``timeout`` the
    test fails with where it stood: its output and the tails of its logs (under home/demo)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", "demo", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        import pytest

        logs = sorted((home / "demo" / "logs").glob("*.log"))
        tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        pytest.fail(f"the demo did not end in {timeout:.0f} s\n{out[-3000:]}\n{tails}")


async def wait_for(
    cond: Callable[[], Awaitable[Any]], timeout: float, what: str, poll: float = 0.25
) -> Any:
    """The first truthy answer of ``cond``; an AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await cond()
        if result:
            return result
        await asyncio.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def has(status: Callable[[], Awaitable[Any]], pred: Callable[[Any], bool]) -> Any:
    view = await status()
    return view if view is not None and pred(view) else None


async def file_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")
