"""Agent vs agent as a user runs it: `ocw arena start`, `ocw listen --arena --replay`, the board.

Two agents, the rule policy and a policy family (TSMOM on a 5-day lookback), trade the same
replayed market (a generated one, seed 13, where both enter) from one listener. Each is its own
account: its own DecisionWorkflow, its own PositionWorkflows and paper broker; the test reads
their books and the leaderboard of `ocw arena status --json` and `ocw status`, then
`ocw arena stop` halts both and leaves them flat.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient

from activities.paper_broker import PaperBroker
from tests.integration.procs import decision_status, free_port, has, ocw, run_ocw, wait_for
from trading.config import Settings
from trading.market_data import generate_market, write_ohlcv_csv
from workers.api import create_app
from workers.temporal_env import connect, start_dev_server, stop_process

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
DAYS = 3
SECONDS = 12
FAMILY = "family:tsmom:lookback_days=5:vol_days=5"


async def test_two_agents_trade_one_feed_independently(tmp_path: Path) -> None:
    home = tmp_path / "home"
    speed = DAYS * 86_400 / SECONDS
    env = {
        **os.environ,
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "OCW_LLM_ENABLED": "false",
    }
    for name in ("OCW_ACCOUNT", "OCW_MODE", "OCW_SYMBOLS", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    settings = Settings(home=home, temporal_address=env["OCW_TEMPORAL_ADDRESS"], symbols=SYMBOLS)
    files = [
        write_ohlcv_csv(bars, tmp_path / "market" / f"{sym.replace('/', '')}_1h.csv")
        for sym, bars in generate_market(SYMBOLS, "1h", (DAYS + 45) * 24, seed=13).items()
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    server = start_dev_server(settings, log_file=logs / "temporal.log", ui=False)
    procs: list[subprocess.Popen] = []
    try:
        start = ["arena", "start", "--agents", f"rule,{FAMILY}", "--symbols", ",".join(SYMBOLS)]
        procs.append(ocw(start, env, logs / "arena.log"))
        client = await connect(settings, attempts=60, delay_s=0.5)
        handles = {
            a: client.get_workflow_handle(f"ocw-decision-arena-{a}") for a in ("rule", "tsmom")
        }

        def status(agent: str):
            return decision_status(handles[agent])

        for agent in handles:  # both accounts up before the feed starts
            await wait_for(lambda a=agent: status(a)(), 60, f"account arena-{agent}")
        listen = ["listen", "--arena", "--replay", *map(str, files), "--speed", str(speed)]
        procs.append(ocw([*listen, "--days", str(DAYS)], env, logs / "listen.log"))
        opened = {
            agent: await wait_for(
                lambda a=agent: has(status(a), lambda s: s.counters.positions_opened >= 1),
                timeout=90,
                what=f"arena-{agent} opened a position",
            )
            for agent in handles
        }
        board = json.loads(run_ocw(["arena", "status", "--json"], env).stdout)
        app = create_app(client, settings)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://ocw") as http:
            served = (await http.get("/api/arena")).json()
        shown = run_ocw(["status"], env)  # OCW_ACCOUNT is none of the agents: the board
        agent_shown = run_ocw(["status"], {**env, "OCW_ACCOUNT": "arena-tsmom"})
        stopped = run_ocw(["arena", "stop", "--wait", "60"], env)
        finals = {agent: await status(agent)() for agent in handles}
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(server)

    # each agent is its own account, with its own positions and broker
    for agent, view in opened.items():
        assert view.account == f"arena-{agent}"
        assert all(p.position_id.startswith(f"arena-{agent}-") for p in view.positions)
        assert view.config.trading_task_queue == f"ocw-trading-arena-{agent}"
    assert opened["tsmom"].config.policy == FAMILY and opened["rule"].config.policy == "rule"
    rule_log = opened["rule"].last_decision
    family_log = opened["tsmom"].last_decision
    assert rule_log is not None and family_log is not None
    assert rule_log.source == "rule" and family_log.source == FAMILY
    for agent in handles:
        broker = PaperBroker(home / "arena" / f"arena-{agent}.db", initial_cash=10_000.0)
        fills = broker.fills()
        broker.close()
        assert fills and all(f.position_id.startswith(f"arena-{agent}-") for f in fills)

    rows = {r["agent"]: r for r in board["rows"]}
    assert {r["agent"] for r in served["arena"]["rows"]} == {"rule", "tsmom"}
    assert [a["account"] for a in served["agents"]] == ["arena-rule", "arena-tsmom"]
    assert set(rows) == {"rule", "tsmom"}
    for row in rows.values():
        assert row["rank"] in (1, 2) and row["status"] == "running"
        assert row["equity"] > 0 and row["fees"] > 0 and row["llm_cost_usd"] == 0
    assert rows["tsmom"]["decider"] == FAMILY
    assert shown.returncode == 0, shown.stderr
    assert "arena arena (running)" in shown.stdout and FAMILY[:30] in shown.stdout
    # an agent's own status: its lane of the one listener, and the other account on the feed
    assert agent_shown.returncode == 0, agent_shown.stderr
    assert "gate and wakes above: arena-tsmom's; this feed also wakes arena-rule (" in (
        agent_shown.stdout
    ), agent_shown.stdout

    assert stopped.returncode == 0, stopped.stderr
    assert "arena arena (stopped)" in stopped.stdout
    for view in finals.values():
        assert view is not None and not view.positions
        assert view.portfolio.manual_halt
