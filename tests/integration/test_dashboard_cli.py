"""``ocw dashboard`` as a user runs it: serves the page and the API on 127.0.0.1; a taken
port is one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.procs import free_port, ocw, wait_for

pytestmark = pytest.mark.integration


def _env(dev_env, home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCW_", "BINANCE_"))}
    env.update(
        OCW_HOME=str(home),
        OCW_TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        OCW_ACCOUNT="dashcli",  # no account of that name runs on the shared server
        OCW_DASHBOARD_PORT=str(port),
    )
    return env


async def test_dashboard_serves_the_page_and_a_read_only_api(dev_env, tmp_path):
    port = free_port()
    proc = ocw(["dashboard"], _env(dev_env, tmp_path, port), tmp_path / "dashboard.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up():
                try:
                    return (await http.get("/api/control")).json()
                except httpx.HTTPError:
                    return None

            assert await wait_for(up, 20, "the dashboard") == {"enabled": False}
            page = await http.get("/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            missing = await http.get("/api/overview")  # no account "dash" runs
            assert missing.status_code == 503 and "not found" in missing.text.lower()
            assert (await http.post("/api/close-all", json={})).status_code in (404, 405)
        log = (tmp_path / "dashboard.log").read_text()
        assert f"dashboard on http://127.0.0.1:{port}/" in log
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_taken_port_is_one_clear_line(dev_env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", "dashboard"],
            env=_env(dev_env, tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and f"port {port}" in done.stderr
    assert "Traceback" not in done.stderr
