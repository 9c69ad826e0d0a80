"""The REST API behind the dashboard (issue 12): its schema and every endpoint, on a running
account on the dev server; the control endpoints only with a token, and then only with it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from activities.journal import Journal
from activities.trading import TradingActivities
from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig, _config
from trading.config import Settings
from trading.models import Action, PositionParams, TradeDecision, Wake
from trading.state import DecisionInput
from workers.api import create_app
from workflows.decision import DecisionWorkflow

pytestmark = pytest.mark.integration

BTC, ETH = SYMBOLS
FAST = PositionParams(safety_interval_s=1.0, agent_interval_s=600.0)


def account_rig(dev_env, tmp_path: Path, account: str) -> tuple[Rig, Settings]:
    """A rig whose account and journal are where the settings say."""
    settings = Settings(_env_file=None, home=tmp_path / "home", account=account, symbols=SYMBOLS)
    settings.paths()["home"].mkdir(parents=True, exist_ok=True)
    buy = [TradeDecision(ticker=BTC, action=Action.BUY, position_pct=0.2, reasoning="trend up")]
    rig = Rig(
        dev_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0), (3, 104.0)])}),
        ScriptedPolicy(lambda c, r: buy if c == 1 else []),
    )
    rig.trading = TradingActivities(
        rig.broker, Journal(settings.paths()["journal_db"]), dev_env.client
    )
    return rig, settings


async def start_account(dev_env, rig: Rig, settings: Settings):
    config = _config(rig.queue, position=FAST).model_copy(update={"account": settings.account})
    handle = await dev_env.client.start_workflow(
        DecisionWorkflow.run,
        DecisionInput(config=config),
        id=settings.decision_workflow_id,
        task_queue=rig.queue,
    )
    rig.track(handle.id)
    return handle


async def until(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.2)


async def test_every_read_endpoint_answers_from_the_running_account(dev_env, tmp_path):
    rig, settings = account_rig(dev_env, tmp_path, "apiread")
    app = create_app(dev_env.client, settings)
    transport = httpx.ASGITransport(app=app)
    async with rig.worker(), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        handle = await start_account(dev_env, rig, settings)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))

        async def bought():
            body = (await http.get("/api/overview")).json()
            return body if body.get("positions") else None

        overview = await until(bought)
        pos = overview["positions"][0]
        assert pos["symbol"] == BTC and pos["answered"] and pos["status"] == "OPEN"
        assert pos["stop"] == pytest.approx(96.192, rel=1e-3)
        assert overview["account"] == "apiread" and overview["mode"] == "paper"
        assert {"listener", "gate", "counters", "llm", "regimes"} <= set(overview)

        async def moved():
            rows = (await http.get("/api/positions")).json()
            return rows if rows and rows[0]["last_price"] == 104.0 else None

        rows = await until(moved)
        assert rows[0]["pnl"] > 0

        status = (await http.get("/api/status")).json()
        assert status["account"] == "apiread" and len(status["positions"]) == 1
        decisions = (await http.get("/api/decisions")).json()
        assert decisions and decisions[-1]["source"] == "test"  # who decided: the scripted policy
        assert any("BTC/USDT BUY: trend up" in r for r in decisions[-1]["reasoning"])
        assert (await http.get("/api/learner")).json()["n_trades"] == 0
        assert (await http.get("/api/regimes")).status_code == 200
        assert (await http.get("/api/incidents")).status_code == 200
        assert (await http.get("/api/control")).json() == {"enabled": False}
        assert (await http.post("/api/halt", json={})).status_code in (404, 405)  # no token

        await handle.signal(DecisionWorkflow.close_all)

        async def closed():
            trades = (await http.get("/api/trades")).json()
            return trades or None

        trades = await until(closed)
        assert trades[0]["symbol"] == BTC and trades[0]["exit_reason"] == "close_all"
        metrics = (await http.get("/api/metrics")).json()
        assert metrics["n_trades"] == 1 and len(metrics["curve"]) >= 2
        assert metrics["curve"][-1]["equity"] == pytest.approx(metrics["equity"])
        assert metrics["benchmark"][0]["equity"] == pytest.approx(metrics["curve"][0]["equity"])

        schema = (await http.get("/openapi.json")).json()
        paths = set(schema["paths"])
        assert {
            "/api/overview",
            "/api/status",
            "/api/positions",
            "/api/decisions",
            "/api/trades",
            "/api/metrics",
            "/api/learner",
            "/api/regimes",
        } <= paths
        assert "/api/halt" not in paths  # off without a token


async def test_control_needs_the_token_and_does_what_it_says(dev_env, tmp_path):
    rig, settings = account_rig(dev_env, tmp_path, "apictl")
    app = create_app(dev_env.client, settings, token="s3cret-token")
    transport = httpx.ASGITransport(app=app)
    async with rig.worker(), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        handle = await start_account(dev_env, rig, settings)
        assert (await http.get("/api/control")).json() == {"enabled": True}
        refused = await http.post("/api/halt", json={"reason": "news"})
        assert refused.status_code == 401
        wrong = await http.post(
            "/api/halt", json={"reason": "news"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        auth = {"Authorization": "Bearer s3cret-token"}
        halted = await http.post("/api/halt", json={"reason": "news"}, headers=auth)
        assert halted.status_code == 200 and "halted" in halted.json()["answer"]
        status = await handle.query(DecisionWorkflow.status)
        assert status.portfolio.manual_halt
        resumed = await http.post("/api/resume", json={}, headers=auth)
        assert resumed.json()["ok"]
        woke = await http.post("/api/wake", json={"reason": "by hand"}, headers=auth)
        assert woke.json()["answer"] == "wake sent"
        await until(
            lambda: _handled(handle),
        )
        schema = (await http.get("/openapi.json")).json()
        assert {"/api/halt", "/api/resume", "/api/close-all", "/api/wake"} <= set(schema["paths"])


async def _handled(handle):
    state = await handle.query(DecisionWorkflow.state)
    return state.counters.wakes_handled >= 1


async def test_an_unreachable_account_is_one_clear_line(dev_env, tmp_path):
    settings = Settings(_env_file=None, home=tmp_path, account="nobody")
    app = create_app(dev_env.client, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answer = await http.get("/api/overview")
    assert answer.status_code == 503
    assert "not found" in answer.json()["detail"].lower()
