"""The CLI's failure paths as a user meets them (issue 12): one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.procs import free_port, run_ocw

pytestmark = pytest.mark.integration


def base_env(home: Path, address: str, account: str = "nobody") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCW_", "BINANCE_"))}
    env.update(OCW_HOME=str(home), OCW_TEMPORAL_ADDRESS=address, OCW_ACCOUNT=account)
    return env


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("ocw: ")
    return err


@pytest.mark.parametrize("command", [["close-all"], ["halt"], ["wake"], ["status"]])
def test_a_wrong_account_is_one_line(dev_env, tmp_path, command):
    env = base_env(tmp_path, dev_env.client.service_client.config.target_host)
    err = one_line(run_ocw(command, env))
    assert "ocw-decision-nobody" in err


def test_no_server_is_one_line_within_seconds(tmp_path):
    env = base_env(tmp_path, f"127.0.0.1:{free_port()}")
    for command in (["worker"], ["close-all"], ["status"], ["reconcile", "--dry-run"]):
        started = time.monotonic()
        err = one_line(run_ocw(command, env))
        assert "cannot reach Temporal" in err and "connection refused" in err
        assert time.monotonic() - started < 15, command


def test_live_without_live_trading_is_one_line(tmp_path):
    env = base_env(tmp_path, f"127.0.0.1:{free_port()}")
    env.update(OCW_MODE="live")
    err = one_line(run_ocw(["reconcile"], env))
    assert "LIVE_TRADING=true" in err
