"""Operations end to end (issue 13): metrics, alerts and health through Temporal, processes.

A dev server, `ocw worker` and `ocw listen --replay` run as a user runs them, with both
Prometheus endpoints on, the monitor checking every 5 s and alerts going to the local
Telegram Bot API stand-in. Claude (the local Messages API server) buys BTC once. The test
scrapes both endpoints while the replay runs and checks the values move; reads `ocw status`
from a second OCW_HOME that holds no files; restarts the worker and sees no alert twice; stops
the listener and gets the "gone" alert; and finds the bot token in no log.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from activities.journal import Journal
from tests.integration.procs import free_port, ocw, wait_for
from tests.integration.test_llm_replay_e2e import KEY, SYMBOLS, Claude
from tests.servers.fake_anthropic import FakeAnthropic
from tests.servers.telegram import CHAT_ID, TOKEN, FakeTelegram
from trading.config import Settings
from trading.market_data import generate_market, write_ohlcv_csv
from workers.temporal_env import connect, start_dev_server, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DAYS = 3
SECONDS = 20
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text exposition (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in samples.items() if k.split("{")[0] == name and all(w in k for w in want)
    )


async def scrape(port: int) -> dict[str, float]:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.HTTPError:
        return {}
    return parse_metrics(r.text) if r.status_code == 200 else {}


async def test_metrics_alerts_and_health_across_hosts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    speed = DAYS * 86_400 / SECONDS
    worker_port, listener_port = free_port(), free_port()
    async with FakeAnthropic(responder=Claude()) as api, FakeTelegram() as tg:
        env = {
            **os.environ,
            "OCW_HOME": str(home),
            "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "OCW_ACCOUNT": "llm",
            "OCW_SYMBOLS": ",".join(SYMBOLS),
            "OCW_SPEED": str(speed),
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": api.base_url,
            "OCW_WORKER_METRICS": f"127.0.0.1:{worker_port}",
            "OCW_LISTENER_METRICS": f"127.0.0.1:{listener_port}",
            "OCW_MONITOR_EVERY_S": "5",
            "OCW_TELEGRAM_BOT_TOKEN": TOKEN,
            "OCW_TELEGRAM_CHAT_ID": CHAT_ID,
            "OCW_TELEGRAM_API_URL": tg.base_url,
        }
        settings = Settings(
            home=home, temporal_address=env["OCW_TEMPORAL_ADDRESS"], account="llm", symbols=SYMBOLS
        )
        files = [
            write_ohlcv_csv(bars, tmp_path / "market" / f"{sym.replace('/', '')}_1h.csv")
            for sym, bars in generate_market(SYMBOLS, "1h", (DAYS + 42) * 24, seed=5).items()
        ]
        logs = tmp_path / "logs"
        logs.mkdir()
        server = start_dev_server(settings, log_file=logs / "temporal.log", ui=False)
        worker = ocw(["worker"], env, logs / "worker.log")
        args = ["listen", "--replay", *map(str, files), "--speed", str(speed), "--days", str(DAYS)]
        listener = ocw(args, env, logs / "listen.log")
        try:
            await connect(settings, attempts=60, delay_s=0.5)

            # both endpoints answer, with the SDK's metrics beside the engine's
            first_l = await wait_for(
                lambda: _having(listener_port, "ocw_gate_ticks_total"), 60, "listener metrics"
            )
            first_w = await wait_for(
                lambda: _having(worker_port, "ocw_equity_usd"), 60, "worker metrics"
            )
            assert any(k.startswith("temporal_") for k in first_w)
            assert any(k.startswith("temporal_") for k in first_l)
            assert total(first_w, "ocw_equity_usd", account="llm") > 0

            # Claude's BUY: the fill on the endpoint and in Telegram
            await wait_for(
                lambda: _having(worker_port, "ocw_fills_total"), 90, "a fill on the endpoint"
            )
            await wait_for(
                lambda: _async(any("BTC/USDT" in t and "filled" in t for t in tg.texts())),
                60,
                "the fill's alert",
            )
            ticks = total(first_l, "ocw_gate_ticks_total")

            async def more_ticks() -> dict[str, float] | None:
                now = await scrape(listener_port)
                return now if total(now, "ocw_gate_ticks_total") > ticks else None

            later_l = await wait_for(more_ticks, 30, "the gate's ticks to grow")
            later_w = await wait_for(
                lambda: _having(worker_port, "ocw_safety_tick_lag_seconds_count"),
                60,
                "safety checks on the endpoint",
            )
            assert total(later_l, "ocw_wakes_sent_total") >= 1
            assert total(later_w, "ocw_fills_total", account="llm", side="BUY") >= 1
            assert total(later_w, "ocw_order_round_trip_seconds_count", account="llm") >= 1
            assert total(later_w, "ocw_open_positions", account="llm") >= 1
            assert total(later_w, "ocw_llm_calls_total", account="llm", outcome="ok") >= 1

            # `ocw status` from another machine: nothing of the listener's on its disk
            other = {**env, "OCW_HOME": str(tmp_path / "elsewhere")}
            shown = await _status(other)
            assert "listener" in shown and "up (answered the monitor" in shown, shown
            assert not (tmp_path / "elsewhere" / "listener_status.json").exists()

            # a worker restart sends nothing twice
            before = list(tg.texts())
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
            worker = ocw(["worker"], env, logs / "worker2.log")
            await asyncio.sleep(14)  # two checks of the new worker
            after = tg.texts()
            assert after[: len(before)] == before
            fills = Journal(home / "journal.db").rows("fills", "llm")
            fill_alerts = [t for t in after if "filled" in t]
            assert len(fill_alerts) == len(fills), (fill_alerts, fills)
            assert len(set(after)) == len(after), after

            # a halt by hand reaches the phone once
            halted = subprocess.run(
                [sys.executable, "-m", "workers.cli", "halt", "--reason", "ops test"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert halted.returncode == 0, halted.stderr
            await wait_for(
                lambda: _async(any("Trading halted" in t for t in tg.texts())),
                30,
                "the halt alert",
            )

            # the listener stops: the monitor says so
            os.killpg(listener.pid, signal.SIGTERM)
            listener.wait(20)
            await wait_for(
                lambda: _async(any("listener is gone" in t for t in tg.texts())),
                45,
                "the listener-gone alert",
            )
            shown = await _status(other)
            assert "GONE" in shown, shown
            assert sum("Trading halted" in t for t in tg.texts()) == 1
        finally:
            for proc in (worker, listener):
                stop_process(proc)
            stop_process(server)
    for path in logs.iterdir():
        assert TOKEN not in path.read_text(errors="replace"), f"the bot token leaked into {path}"


async def _having(port: int, name: str) -> dict[str, float] | None:
    samples = await scrape(port)
    return samples if any(k.split("{")[0] == name for k in samples) else None


async def _async(value: object) -> object:
    return value


async def _status(env: dict[str, str]) -> str:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout + proc.stderr
