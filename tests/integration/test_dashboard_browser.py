"""The dashboard in a real browser (issue 12): headless Chromium drives the page while an
account trades on the dev server, and sees what a person would.

The page loads before the account exists (and says the API is unavailable), then shows the
rule policy's buy as a position row with its stops, the equity curve and its last value
moving when the price moves, the decision with who decided and why; the control buttons ask
for the token once and for a confirmation each time, and a dismissed confirmation sends
nothing. Screenshots of each moment land in ``test-artifacts/dashboard/``.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and Playwright for Python, which drives
that browser: no browser download.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from temporalio import activity

from activities.journal import Journal
from activities.trading import TradingActivities
from tests.conftest import REPO
from tests.workflows.fakes import FakeMarket, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig, _config
from trading.config import Settings
from trading.leaderboard import Leaderboard, LeaderRow
from trading.learner import ArmRow, PosteriorTable, SetRow
from trading.models import (
    Action,
    AgentDecision,
    ClosedTrade,
    PositionParams,
    TradeDecision,
    Wake,
    WakeCondition,
)
from trading.reconcile import ReconcileSummary
from trading.state import Counters, DecideRequest, DecisionInput, GateSettings, Incident
from workers.api import STATIC, create_app
from workers.views import (
    DecisionView,
    EquityPoint,
    LLMView,
    MetricsView,
    Overview,
    PositionView,
    RegimeInfo,
)
from workflows import activity_api as api
from workflows.decision import DecisionWorkflow

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
    ),
]
pw_api = pytest.importorskip("playwright.async_api")

BTC, ETH = SYMBOLS
FAST = PositionParams(safety_interval_s=1.0, agent_interval_s=600.0)
TOKEN = "dash-s3cret"
ARTIFACTS = REPO / "test-artifacts" / "dashboard"


class MovingMarket(FakeMarket):
    """Prices the test sets: the replay moves when the test says so, not on a timer."""

    def __init__(self, prices: dict[str, float]) -> None:
        super().__init__()
        self.prices = dict(prices)

    def price(self, symbol: str, t_ms: int) -> float:
        return self.prices.get(symbol, self.default)


class RulePolicy(ScriptedPolicy):
    """Scripted decisions, reported as the rule policy reports its own."""

    @activity.defn(name=api.DECIDE)
    async def decide(self, req: DecideRequest) -> AgentDecision:
        answer = await super().decide(req)
        return answer.model_copy(update={"source": "rule"})


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's chromium, headless, driven by Playwright (no browser of its own)."""
    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[str]:  # noqa: ANN001 - a FastAPI app
    """The app under uvicorn on a free loopback port, in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start: {task}")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()


async def until(fn, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not in time")
        await asyncio.sleep(0.2)


async def test_the_dashboard_shows_a_trading_account_live(dev_env, tmp_path):
    from playwright.async_api import expect

    expect.set_options(timeout=20_000)
    settings = Settings(_env_file=None, home=tmp_path / "home", account="dash", symbols=SYMBOLS)
    settings.paths()["home"].mkdir(parents=True, exist_ok=True)
    buy = [TradeDecision(ticker=BTC, action=Action.BUY, position_pct=0.2, reasoning="trend up")]
    market = MovingMarket({BTC: 100.0, ETH: 10.0})
    rig = Rig(dev_env, tmp_path, market, RulePolicy(lambda c, r: buy if c == 1 else []))
    rig.trading = TradingActivities(
        rig.broker, Journal(settings.paths()["journal_db"]), dev_env.client
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    async def shot(page, name: str) -> None:
        path = ARTIFACTS / f"{len(shots) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        shots.append(path)
        print(f"dashboard screenshot: {path}")

    dialogs: list[tuple[str, str]] = []
    confirm = {"answer": True}

    async def on_dialog(dialog) -> None:  # noqa: ANN001 - a playwright Dialog
        dialogs.append((dialog.type, dialog.message))
        if dialog.type == "prompt":
            await dialog.accept(TOKEN)
        elif dialog.type == "confirm" and confirm["answer"]:
            await dialog.accept()
        else:
            await dialog.dismiss()

    app = create_app(dev_env.client, settings, token=TOKEN)
    async with rig.worker(), serving(app) as url, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page_errors: list[str] = []
        page.on("pageerror", lambda err: page_errors.append(str(err)))
        page.on("dialog", on_dialog)
        status = page.locator("#status-line")

        # the page is up before the account: it says so in one line
        await page.goto(url)
        await expect(page).to_have_title("OCW dashboard")
        await expect(status).to_have_class("status error")
        await expect(status).to_contain_text("API unavailable")

        config = _config(rig.queue, position=FAST).model_copy(update={"account": settings.account})
        handle = await dev_env.client.start_workflow(
            DecisionWorkflow.run,
            DecisionInput(config=config),
            id=settings.decision_workflow_id,
            task_queue=rig.queue,
        )
        rig.track(handle.id)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="candle_close"))

        # the buy: a row with its stops and PnL
        row = page.locator(f'#positions tbody tr[data-symbol="{BTC}"]')
        await expect(row).to_have_count(1)
        await expect(status).to_contain_text("dash · paper · trading · 1 open")
        await expect(row.locator("td.last")).to_have_text("100.00")
        cells = await row.locator("td").all_inner_texts()
        assert cells[0] == BTC and cells[2] == "100.00", cells
        assert cells[4].startswith("96.19"), cells  # the stop-loss level the API computes
        assert "e" not in cells[1] and float(cells[1]) > 0, cells  # a decimal quantity
        assert "OPEN" in cells[10], cells

        # who decided and why
        decision = page.locator('#decisions li.decision[data-source="rule"]')
        await expect(decision.first).to_contain_text(f"{BTC} BUY: trend up")
        await expect(decision.first.locator(".badge.source.rule")).to_have_text("rule")

        # the equity before the move: the workflow idle, two polls later
        await until(lambda: _idle(handle), what="first cycle done")
        polls = int(await status.get_attribute("data-polls"))
        await page.wait_for_function(
            "n => Number(document.querySelector('#status-line').dataset.polls) >= n",
            arg=polls + 2,
        )
        chart = page.locator("#equity-chart")
        await expect(chart.locator("canvas")).to_have_count(1)
        first_points = int(await chart.get_attribute("data-points"))
        assert first_points >= 1
        equity_before = float(await page.locator("#last-equity").get_attribute("data-value"))
        assert float(await chart.get_attribute("data-last")) == pytest.approx(equity_before)
        assert 9_900 < equity_before <= 10_000
        await shot(page, "bought")

        # the market moves up 4 %; the next candle marks the books
        market.prices[BTC] = 104.0
        await expect(row.locator("td.last")).to_have_text("104.00")  # the safety tick
        await expect(row.locator("td.pnl")).to_have_class("num pnl pos")
        await handle.signal(DecisionWorkflow.wake, Wake(reason="candle_close"))
        await page.wait_for_function(
            "e => Number(document.querySelector('#last-equity').dataset.value) > e + 50",
            arg=equity_before,
        )
        equity_after = float(await page.locator("#last-equity").get_attribute("data-value"))
        await page.wait_for_function(
            "e => Number(document.querySelector('#equity-chart').dataset.last) === e",
            arg=equity_after,
        )
        assert int(await chart.get_attribute("data-points")) > first_points
        assert equity_after == pytest.approx(10_000 + 2_000 * 0.04, abs=10)
        await expect(page.locator("#drawdown-chart canvas")).to_have_count(1)
        await expect(page.locator("#decisions li.decision")).to_have_count(2)
        await shot(page, "price-moved")

        # control: the token asked once, a confirmation every time
        await expect(page.locator("#controls")).to_be_visible()
        confirm["answer"] = False
        await page.click("#btn-close-all")
        await expect(page.locator("#control-result")).to_have_text("close-all: cancelled")
        await asyncio.sleep(0.5)
        assert BTC in (await handle.query(DecisionWorkflow.state)).positions  # nothing sent

        confirm["answer"] = True
        await page.click("#btn-halt")
        await expect(page.locator("#control-result")).to_contain_text("halt:")
        await expect(status).to_contain_text("HALTED")
        await expect(page.locator("#halt-banner")).to_be_visible()
        await page.click("#btn-close-all")
        trade = page.locator(f'#trades tbody tr[data-symbol="{BTC}"]')
        await expect(trade).to_have_count(1)
        await expect(trade).to_contain_text("close_all")
        await expect(page.locator("#positions tbody tr")).to_have_count(0)
        await expect(page.locator("#kpi-trades")).to_have_text("1 (1/0)")
        await shot(page, "halted-closed")

        kinds = [kind for kind, _ in dialogs]
        assert kinds == ["prompt", "confirm", "confirm", "confirm"], dialogs
        assert all(f'account "{settings.account}"' in m for k, m in dialogs if k == "confirm")
        assert "partly unavailable" not in await status.inner_text()
        assert page_errors == []
    assert all(p.stat().st_size > 10_000 for p in shots)


async def _idle(handle) -> bool:  # noqa: ANN001 - a WorkflowHandle
    state = await handle.query(DecisionWorkflow.state)
    return bool(state.positions) and not state.queue and state.counters.wakes_handled >= 1


def canned_answers() -> dict[str, Any]:
    """Every endpoint's answer, built from the API's own models: a field the page reads that
    the models lose fails here first."""
    t = 1_750_000_000_000
    positions = [
        PositionView(
            position_id="canned-e1-BTC-1",
            workflow_id="ocw-position-canned-e1-BTC-1",
            symbol="BTC/USDT",
            qty=0.12345678,
            avg_entry=54_000.0,
            last_price=55_312.5,
            cost=6_673.33,
            pnl=148.9,
            pnl_pct=0.0223,
            stop=52_000.0,
            trail=54_100.25,
            exchange_stop=51_990.0,
            status="OPEN",
            last_verdict="HOLD",
            last_score=0.12,
            entry_time_ms=t - 3_600_000,
        ),
        PositionView(
            position_id="canned-e1-PEPE-1",
            workflow_id="ocw-position-canned-e1-PEPE-1",
            symbol="PEPE/USDT",
            qty=12_345_678.0,
            avg_entry=0.00001301,
            last_price=0.00001234,
            cost=160.7,
            pnl=-8.5,
            pnl_pct=-0.0529,
            stop=0.00001251,
            trail=None,
            exchange_stop=None,
            status="OPEN",
            entry_time_ms=t - 1_800_000,
            adopted=True,
        ),
    ]
    overview = Overview(
        account="canned",
        mode="replay",
        time_ms=t,
        equity=55_300.12,
        cash=48_466.0,
        exposure=0.1236,
        drawdown=0.031,
        halted=None,
        positions=positions,
        llm=LLMView(
            enabled=True,
            decided_by="llm",
            breaker="open until 12:00",
            breaker_phase="open",
            spent_today_usd=0.1234,
            daily_budget_usd=0.5,
            calls_today=7,
        ),
        regimes=RegimeInfo(
            crypto="high",
            crypto_probability=0.87,
            macro="goldilocks",
            exposure_scale=1.2,
            trail_multiplier=1.25,
        ),
        reliabilities={"trend": 0.71, "reversion": 0.42},
        gate=GateSettings(
            next_check_seconds=5400,
            wake_conditions=[
                WakeCondition(metric="BTC/USDT.rsi", operator="<", threshold=30, reason="oversold")
            ],
            set_at_ms=t - 60_000,
            version=4,
        ).model_dump(mode="json"),
        listener={"state": "up", "age_s": 3.2, "mode": "replay", "market_time_ms": t},
        reconcile=ReconcileSummary(
            time_ms=t - 120_000, ok=False, actions=1, mismatches=["BTC/USDT: 0.001 untracked"]
        ).model_dump(mode="json"),
        incidents=[
            Incident(time_ms=t - 5_000, where="activity journal", error="disk full").model_dump(
                mode="json"
            )
        ],
        counters=Counters(wakes_received=12, cycles=9).model_dump(mode="json"),
    )
    metrics = MetricsView(
        initial_cash=50_000.0,
        equity=55_300.12,
        cash=48_466.0,
        drawdown=0.031,
        peak_equity=57_069.0,
        realized_pnl=5_151.22,
        fees_paid=88.4,
        n_trades=3,
        wins=2,
        losses=1,
        curve=[
            EquityPoint(time_ms=t - 86_400_000, equity=50_000.0),
            EquityPoint(time_ms=t - 43_200_000, equity=57_069.0),
            EquityPoint(time_ms=t, equity=55_300.12),
        ],
        benchmark=[
            EquityPoint(time_ms=t - 86_400_000, equity=50_000.0),
            EquityPoint(time_ms=t - 50_000_000, equity=51_000.0),
            EquityPoint(time_ms=t, equity=52_500.0),
        ],
    )
    decisions = [
        DecisionView(
            decision_id="canned-e1-8",
            market_time_ms=t - 7_200_000,
            source="rule",
            wake_reasons=["candle_close 4h"],
            reasoning=["PEPE/USDT BUY: breakout"],
            executed=["PEPE/USDT BUY 12345678 @ 0.00001301"],
        ),
        DecisionView(
            decision_id="canned-e1-9",
            market_time_ms=t - 600_000,
            source="llm",
            wake_reasons=["rsi<30"],
            reasoning=["BTC/USDT HOLD: <b>not</b> yet"],
            executed=[],
        ),
    ]
    trade = ClosedTrade(
        trade_id="canned-e1-ETH-1",
        symbol="ETH/USDT",
        qty=1.5,
        entry_price=3_000.0,
        exit_price=3_300.0,
        entry_time_ms=t - 90_000_000,
        exit_time_ms=t - 43_200_000,
        fees=9.45,
        pnl=440.55,
        pnl_pct=0.0979,
        exit_reason="trail",
    )
    learner = PosteriorTable(
        n_trades=3,
        sets={
            "global": SetRow(n=3, arms={"trend": ArmRow(alpha=3, beta=1, mean=0.75)}),
            "high": SetRow(n=2, arms={"trend": ArmRow(alpha=2, beta=1, mean=0.667)}),
        },
    )
    arena = Leaderboard(
        arena="duel",
        rows=[
            LeaderRow(
                rank=1,
                agent="claude",
                account="canned",
                decider="claude claude-sonnet-4-5",
                equity=55_300.12,
                initial_cash=50_000.0,
                return_pct=0.106,
                sharpe=1.234,
                max_drawdown=0.031,
                fees=88.4,
                trades=3,
                open_positions=2,
                llm_cost_usd=0.1234,
                decided_by="llm",
            ),
            LeaderRow(
                rank=0,
                agent="rules",
                account="canned-rules",
                decider="rule policy",
                status="unreadable: no DecisionWorkflow",
            ),
        ],
        benchmark_return=0.05,
        sharpe_step="1h",
    )
    dump = lambda m: m.model_dump(mode="json")  # noqa: E731
    return {
        "arena": {"arena": dump(arena), "agents": []},
        "overview": dump(overview),
        "metrics": dump(metrics),
        "decisions": [dump(d) for d in decisions],
        "trades": [dump(trade)],
        "learner": dump(learner),
        "incidents": [
            {
                "incident_id": "i1",
                "account": "canned",
                "time_ms": t - 9_000,
                "market_time_ms": None,
                "source": "signal exit",
                "error": "position gone",
            }
        ],
        "control": {"enabled": False},
    }


async def test_every_view_renders_with_decimals_and_no_markup(tmp_path):
    """The page on canned answers (no engine): every section, prices and quantities as
    decimals, buy and hold beside the equity, engine text shown as text, the controls hidden
    while the API has none, and one failing endpoint named in the status line."""
    from playwright.async_api import expect

    expect.set_options(timeout=10_000)
    answers = canned_answers()
    failing: set[str] = set()

    async def serve(route) -> None:  # noqa: ANN001 - a playwright Route
        path = urlsplit(route.request.url).path
        if path.startswith("/api/"):
            name = path.removeprefix("/api/")
            if name in failing:
                await route.fulfill(status=503, json={"detail": "RPCError: deadline exceeded"})
            else:
                await route.fulfill(json=answers[name])
        elif path == "/":
            await route.fulfill(path=STATIC / "index.html")
        elif path.startswith("/static/") and ".." not in path:
            await route.fulfill(path=STATIC / path.removeprefix("/static/"))
        else:
            await route.fulfill(status=404, body="not here")

    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page_errors: list[str] = []
        page.on("pageerror", lambda err: page_errors.append(str(err)))
        await page.route("http://dash.test/**", serve)
        await page.goto("http://dash.test/")
        status = page.locator("#status-line")
        await expect(status).to_contain_text("canned · replay · trading · 2 open")

        btc = page.locator('#positions tbody tr[data-symbol="BTC/USDT"] td')
        pepe = page.locator('#positions tbody tr[data-symbol="PEPE/USDT"] td')
        assert (await btc.all_inner_texts())[1:7] == [
            "0.12345678",
            "54,000.00",
            "55,312.50",
            "52,000.00",
            "54,100.25",
            "51,990.00",
        ]
        pepe_cells = await pepe.all_inner_texts()
        assert pepe_cells[1:6] == ["12,345,678", "0.00001301", "0.00001234", "0.00001251", "—"]
        assert "adopted" in pepe_cells[10]
        for section in ("#positions", "#trades", "#kpis", "#decisions", "#gate"):
            text = await page.locator(section).inner_text()
            assert "e+" not in text and "e-0" not in text, (section, text)
        await expect(page.locator("#last-equity")).to_have_text("55,300.12")
        await expect(page.locator("#kpi-drawdown")).to_have_text("-3.10 %")
        await expect(page.locator("#kpi-trades")).to_have_text("3 (2/1)")

        chart = page.locator("#equity-chart")
        await expect(chart).to_have_attribute("data-points", "3")
        await expect(chart.locator(".u-legend")).to_contain_text("Buy and hold")
        await expect(page.locator("#equity-note")).to_have_text("with buy and hold")
        await expect(page.locator("#drawdown-chart canvas")).to_have_count(1)

        llm = page.locator('#decisions li.decision[data-source="llm"]')
        await expect(llm.locator(".badge.source.llm")).to_have_text("llm")
        await expect(llm.locator(".why")).to_have_text("BTC/USDT HOLD: <b>not</b> yet")  # text
        assert await page.locator("#decisions b").count() == 0
        rule = page.locator('#decisions li.decision[data-source="rule"]')
        await expect(rule.locator(".did")).to_have_text("PEPE/USDT BUY 12345678 @ 0.00001301")
        trade = page.locator('#trades tbody tr[data-symbol="ETH/USDT"]')
        await expect(trade).to_contain_text("3,300.00")
        await expect(trade).to_contain_text("+440.55")

        await expect(page.locator("#gate")).to_contain_text("Next check: 90 min")
        await expect(page.locator("#gate")).to_contain_text("BTC/USDT.rsi < 30 — oversold")
        await expect(page.locator("#counters")).to_contain_text("wakes received")
        await expect(page.locator("#regimes")).to_contain_text("high (87 %)")
        await expect(page.locator("#llm")).to_contain_text("$0.1234 of $0.50")
        await expect(page.locator("#llm dd.warn")).to_have_text("open until 12:00 (open)")
        await expect(page.locator("#llm progress")).to_have_attribute("max", "0.5")
        await expect(page.locator('#reliabilities tr[data-arm="trend"]')).to_contain_text("0.71")
        await expect(page.locator("#learner thead")).to_contain_text("global (n=3)")
        await expect(page.locator("#learner tbody")).to_contain_text("0.667")
        await expect(page.locator("#listener")).to_contain_text("up")
        await expect(page.locator("#reconcile")).to_contain_text("mismatch")
        await expect(page.locator("#reconcile")).to_contain_text("BTC/USDT: 0.001 untracked")
        await expect(page.locator("#incidents li")).to_have_count(2)
        await expect(page.locator("#incidents")).to_contain_text("disk full")
        await expect(page.locator("#incidents")).to_contain_text("position gone")
        await expect(page.locator("#controls")).to_be_hidden()  # read-only: no token set
        leader = page.locator('#arena tbody tr[data-account="canned"]')
        await expect(leader).to_have_class("current")
        await expect(leader).to_contain_text("+10.60 %")
        await expect(leader).to_contain_text("55,300.12")
        await expect(page.locator('#arena tbody tr[data-account="canned-rules"]')).to_contain_text(
            "unreadable: no DecisionWorkflow"
        )
        await expect(page.locator("#arena-note")).to_contain_text("duel · running")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / "canned-all-views.png"
        await page.screenshot(path=str(path), full_page=True)
        print(f"dashboard screenshot: {path}")

        # one view down: the rest stays, the status line names it
        failing.add("learner")
        await expect(status).to_contain_text("partly unavailable: api/learner: 503")
        await expect(status).to_have_class("status warn")
        await expect(page.locator("#last-equity")).to_have_text("55,300.12")
        # the whole API down: one line, the last data kept on screen
        failing.update(answers)
        await expect(status).to_have_class("status error")
        await expect(status).to_contain_text("API unavailable")
        await expect(status).to_contain_text("showing data from")
        await expect(page.locator('#positions tbody tr[data-symbol="BTC/USDT"]')).to_have_count(1)
        assert page_errors == []
