"""Claude trading a replay end to end: dev server, `ocw worker`, `ocw listen --replay`, processes.

The worker's real anthropic client talks to the local Messages API server (the key and base URL
come from the environment, as a user sets them). The first decision buys BTC, later ones hold,
position checks hold. The test reads the engine's own records: the journal's decisions say
"llm", the BUY was executed, `ocw status` shows the LLM spend, and no key reaches the journal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from activities.journal import Journal
from tests.integration.procs import free_port, has, ocw, wait_for
from tests.llm_plans import exit_plan, price_in_prompt
from tests.servers.fake_anthropic import FakeAnthropic, ScriptedReply, tool_reply
from trading.agent_contract import DECISION_TOOL, EVALUATION_TOOL
from trading.config import Settings
from trading.market_data import generate_market, write_ohlcv_csv
from workers.temporal_env import connect, start_dev_server, stop_process
from workflows.decision import DecisionWorkflow

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
KEY = "fake-test-key-e2e-4242"
DAYS = 3
SECONDS = 20


class Claude:
    """Answers like a trader would: buy BTC once, then hold; positions: hold."""

    def __init__(self) -> None:
        self.decisions = 0

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        tool = (body.get("tool_choice") or {}).get("name")
        if tool == EVALUATION_TOOL:
            return tool_reply(
                EVALUATION_TOOL, {"verdict": "HOLD", "confidence": 0.6, "reasoning": "intact"}
            )
        self.decisions += 1
        decisions = []
        if self.decisions == 1:
            decisions = [
                {
                    "ticker": "BTC/USDT",
                    "action": "BUY",
                    "position_pct": 0.2,
                    "confidence": 0.7,
                    "reasoning": "trend up, volume confirms",
                    "signal_weights": {"trend": 0.6, "volume": 0.2},
                    "exit_plan": exit_plan(price_in_prompt(body, "BTC/USDT")),
                }
            ]
        return tool_reply(
            DECISION_TOOL,
            {
                "decisions": decisions,
                "market_assessment": "steady",
                "next_check_seconds": 3600,
                "memory_update": f"call {self.decisions}",
            },
        )


async def test_claude_trades_a_replay(tmp_path: Path) -> None:
    home = tmp_path / "home"
    speed = DAYS * 86_400 / SECONDS
    claude = Claude()
    async with FakeAnthropic(responder=claude) as api:
        env = {
            **os.environ,
            "OCW_HOME": str(home),
            "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "OCW_ACCOUNT": "llm",
            "OCW_SYMBOLS": ",".join(SYMBOLS),
            "OCW_SPEED": str(speed),
            "ANTHROPIC_API_KEY": KEY,
            "ANTHROPIC_BASE_URL": api.base_url,
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
        procs: list[subprocess.Popen] = []
        try:
            procs.append(ocw(["worker"], env, logs / "worker.log"))
            listen_log = logs / "listen.log"
            args = ["listen", "--replay", *map(str, files), "--speed", str(speed)]
            procs.append(ocw([*args, "--days", str(DAYS)], env, listen_log))
            client = await connect(settings, attempts=60, delay_s=0.5)
            handle = client.get_workflow_handle(settings.decision_workflow_id)

            async def status():
                try:
                    return await handle.query(DecisionWorkflow.status)
                except Exception:  # noqa: BLE001 - not started yet
                    return None

            opened = await wait_for(
                lambda: has(status, lambda s: s.counters.positions_opened >= 1),
                timeout=90,
                what="Claude's BUY executed",
            )
            assert opened.positions[0].symbol == "BTC/USDT"
            await wait_for(
                lambda: has(status, lambda s: s.counters.cycles >= 3 and not s.busy),
                timeout=90,
                what="more cycles",
            )
            shown = subprocess.run(
                [sys.executable, "-m", "workers.cli", "status"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            await handle.signal(DecisionWorkflow.close_all)
            final = await wait_for(
                lambda: has(status, lambda s: not s.positions and not s.busy), 60, "flat book"
            )
        finally:
            for proc in procs:
                stop_process(proc)
            stop_process(server)

    assert final.llm is not None and final.llm.enabled
    assert final.llm.decided_by == "llm"
    assert final.llm.spend.total_calls >= 3 and final.llm.spend.total_usd > 0
    assert final.llm.breaker_phase == "closed"
    assert final.memory.startswith("call ")
    assert "LLM: breaker closed; last cycle decided by llm" in shown.stdout, shown.stderr
    journal = Journal(home / "journal.db")
    decisions = journal.rows("decisions", "llm")
    assert decisions and all(row["source"] == "llm" for row in decisions)
    assert any("BTC/USDT BUY" in row["executed"] for row in decisions)
    summary = journal.summary("llm")
    assert summary["decisions_by_source"]["llm"] == len(decisions)
    assert summary["llm_decision_cost_usd"] > 0
    for path in (home / "journal.db", home / "llm.db", *logs.iterdir()):
        assert KEY.encode() not in path.read_bytes(), f"the key leaked into {path.name}"
    assert all(KEY not in r.raw for r in api.requests)  # sent as a header only
    assert all(r.headers.get("x-api-key") == KEY for r in api.requests)
