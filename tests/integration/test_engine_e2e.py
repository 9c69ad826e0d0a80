"""The whole engine as a user runs it: dev server, `ocw worker`, `ocw listen --replay`, processes.

A replay of a generated market produces trades; the trading worker is killed with SIGKILL while
positions are open and restarted; the run finishes with every position accounted for, the broker
and the workflow agreeing on cash, and no client order id filled twice. The decision workflow is
also woken by hand through the `temporal` CLI, as the README shows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from activities.journal import Journal
from activities.paper_broker import PaperBroker
from tests.integration.procs import file_has, free_port, has, ocw, wait_for
from trading.config import Settings
from trading.market_data import generate_market, write_ohlcv_csv
from trading.models import Side
from workers.temporal_env import connect, find_binary, start_dev_server, stop_process
from workflows.decision import DecisionWorkflow

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"]
REPLAY_DAYS = 8
REPLAY_SECONDS = 30


async def test_replay_survives_a_killed_worker(tmp_path: Path):
    home = tmp_path / "home"
    speed = REPLAY_DAYS * 86_400 / REPLAY_SECONDS
    env = {
        **os.environ,
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "OCW_ACCOUNT": "e2e",
        "OCW_SYMBOLS": ",".join(SYMBOLS),
        "OCW_SPEED": str(speed),
    }
    settings = Settings(
        home=home, temporal_address=env["OCW_TEMPORAL_ADDRESS"], account="e2e", symbols=SYMBOLS
    )
    data = tmp_path / "market"
    files = [
        write_ohlcv_csv(bars, data / f"{sym.replace('/', '')}_1h.csv")
        for sym, bars in generate_market(SYMBOLS, "1h", (REPLAY_DAYS + 42) * 24, seed=11).items()
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    server = start_dev_server(settings, log_file=logs / "temporal.log", ui=False)
    procs: list[subprocess.Popen] = []
    try:
        worker = ocw(["worker"], env, logs / "worker1.log")
        procs.append(worker)
        listen_log = logs / "listen.log"
        listener = ocw(
            [
                "listen",
                "--replay",
                *map(str, files),
                "--speed",
                str(speed),
                "--days",
                str(REPLAY_DAYS),
            ],
            env,
            listen_log,
        )
        procs.append(listener)
        client = await connect(settings, attempts=60, delay_s=0.5)
        handle = client.get_workflow_handle(settings.decision_workflow_id)

        async def status():
            try:
                return await handle.query(DecisionWorkflow.status)
            except Exception:  # noqa: BLE001 - not started yet
                return None

        # trades happen; kill the worker while at least one position is open
        await wait_for(
            lambda: has(status, lambda s: s.counters.positions_opened >= 1 and s.positions),
            timeout=60,
            what="a first open position",
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        await asyncio.sleep(2)
        procs.append(ocw(["worker"], env, logs / "worker2.log"))

        await wait_for(
            lambda: file_has(listen_log, "replay finished"),
            timeout=REPLAY_SECONDS * 6,
            what="replay end",
        )
        await wait_for(
            lambda: has(status, lambda s: s.queue_length == 0 and not s.busy), 60, "idle engine"
        )

        # a wake by hand through the temporal CLI, exactly as the README shows it
        before = (await status()).counters.wakes_handled
        subprocess.run(
            [
                find_binary("temporal"),
                "workflow",
                "signal",
                "--address",
                settings.temporal_address,
                "--workflow-id",
                settings.decision_workflow_id,
                "--name",
                "wake",
                "--input",
                '{"reason": "manual"}',
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        woken = await wait_for(
            lambda: has(status, lambda s: s.counters.wakes_handled == before + 1 and not s.busy),
            30,
            "the manual wake",
        )
        assert woken.last_decision.wake_reasons == ["manual"]

        # close everything and audit the books
        await handle.signal(DecisionWorkflow.close_all)
        final = await wait_for(
            lambda: has(status, lambda s: not s.positions and not s.busy), 60, "flat book"
        )
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(server)

    counters = final.counters
    assert counters.positions_opened >= 2, "the replay should trade"
    assert counters.positions_opened == counters.positions_closed
    broker = PaperBroker(home / "paper_broker.db", initial_cash=settings.initial_cash)
    fills = broker.fills()
    coids = [f.client_order_id for f in fills]
    assert len(coids) == len(set(coids))
    buys = Counter(f.position_id for f in fills if f.side == Side.BUY)
    sells = Counter(f.position_id for f in fills if f.side == Side.SELL)
    assert len(buys) == counters.positions_opened
    assert set(sells) == set(buys) and set(sells.values()) == {1}  # one exit per position
    balances = broker.balances()
    assert balances.holdings == {}
    assert balances.cash == pytest.approx(final.portfolio.cash, rel=1e-9)
    journal = Journal(home / "journal.db")
    assert sorted(t.trade_id for t in journal.trades("e2e")) == sorted(sells)
    assert {f.client_order_id for f in journal.fills("e2e")} == set(coids)
