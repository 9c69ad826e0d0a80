"""`ocw account show | init | reset` as a user runs them, against the dev server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.paper_broker import PaperBroker
from trading.models import OrderRequest, Side

pytestmark = pytest.mark.integration


def ocw(args: list[str], env: dict[str, str], stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_account_init_show_and_a_confirmed_reset(dev_env, tmp_path: Path):
    home = tmp_path / "home"
    env = {
        **os.environ,
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "OCW_ACCOUNT": "cli",
        "OCW_TRADING_TASK_QUEUE": f"q-{tmp_path.name}",  # no worker: nothing runs the workflow
        "OCW_LLM_ENABLED": "false",
    }
    shown = ocw(["account", "show"], env)
    assert shown.returncode == 1 and "ocw-decision-cli NONE" in shown.stdout
    made = ocw(["account", "init"], env)
    assert made.returncode == 0, made.stderr
    assert "ocw-decision-cli created" in made.stdout
    again = ocw(["account", "init"], env)
    assert "ocw-decision-cli running" in again.stdout
    assert ocw(["account", "show"], env).returncode == 0
    first_run = (await dev_env.client.get_workflow_handle("ocw-decision-cli").describe()).run_id

    broker = PaperBroker(home / "paper_broker.db", initial_cash=10_000)
    broker.place_order(
        OrderRequest(
            client_order_id="cli-x-BTC-1-1",
            position_id="cli-x-BTC-1",
            seq=1,
            symbol="BTC/USDT",
            side=Side.BUY,
            qty=2.0,
            ref_price=100.0,
            market_time_ms=0,
        )
    )
    refused = ocw(["account", "reset"], env)  # not a terminal, no --yes: nothing happens
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert "Traceback" not in refused.stderr
    reset = ocw(["account", "reset", "--yes", "--reason", "test"], env)
    assert reset.returncode == 0, reset.stderr
    assert "BTC/USDT" in reset.stdout and "2 @ 100.05" in reset.stdout
    assert "new run started" in reset.stdout
    handle = dev_env.client.get_workflow_handle("ocw-decision-cli")
    assert (await handle.describe()).run_id != first_run
    await handle.terminate(reason="test over")
