"""What the dashboard, the REST API and the MCP server show: one set of read-only views.

Every view is read afresh from the source of truth on each call: Temporal queries (the
DecisionWorkflow's status, each PositionWorkflow's status, the learner's posteriors) and the
journal (decisions, trades, incidents). Nothing is cached, so nothing can lie after a restart.
The listener's health comes from the monitor's query (``workers/health_view.py``).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from pydantic import Field
from temporalio.client import Client

from activities.journal import Journal
from trading.config import Settings
from trading.exit_plan import describe as describe_plan
from trading.learner import PosteriorTable
from trading.models import ClosedTrade, Model, PositionSide
from trading.protective_stop import stop_loss_level
from trading.safety import check_safety, mark_value, net_pnl_pct
from trading.state import PositionState, StatusView
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

QUERY_TIMEOUT = timedelta(seconds=10)  # a workflow no worker serves answers nothing: say so


class PositionView(Model):
    position_id: str
    workflow_id: str
    symbol: str
    side: str = "long"  # "short": sold to open on USDⓈ-M futures (issue 15)
    qty: float
    avg_entry: float
    last_price: float
    cost: float
    pnl: float  # net of the exit fee, as if closed at the last price
    pnl_pct: float
    stop: float | None  # the safety layer's stop-loss level
    trail: float | None  # the trailing stop, once active
    exchange_stop: float | None  # the stop resting at the exchange, if any
    status: str
    last_verdict: str | None = None
    last_score: float | None = None
    exit_plan: str | None = None  # the entry's plan, one line (issue 15)
    plan_event: str | None = None  # the last of its conditions to fire
    entry_time_ms: int
    last_price_ms: int | None = None  # market time of the last price
    adopted: bool = False
    exit_requested: bool = False
    answered: bool = True  # its workflow answered the query


class EquityPoint(Model):
    time_ms: int
    equity: float


class MetricsView(Model):
    """The equity curve (the account's marks per decision cycle, then the live mark) against
    the equal-weight buy-and-hold of its universe, and drawdown."""

    initial_cash: float
    equity: float
    cash: float
    drawdown: float
    peak_equity: float
    realized_pnl: float
    fees_paid: float
    n_trades: int
    wins: int
    losses: int
    curve: list[EquityPoint] = Field(default_factory=list)
    benchmark: list[EquityPoint] = Field(default_factory=list)  # buy and hold, where known


class DecisionView(Model):
    decision_id: str
    market_time_ms: int | None
    source: str  # who decided: llm / rule / ...
    wake_reasons: list[str]
    reasoning: list[str]  # per ticker: action and why
    executed: list[str]


class LLMView(Model):
    enabled: bool
    decided_by: str
    breaker: str
    breaker_phase: str
    spent_today_usd: float
    daily_budget_usd: float | None
    calls_today: int


class RegimeInfo(Model):
    crypto: str
    crypto_probability: float | None
    macro: str
    exposure_scale: float
    trail_multiplier: float


class Overview(Model):
    """Everything the dashboard's first screen needs in one call."""

    account: str
    mode: str
    time_ms: int
    equity: float
    cash: float
    exposure: float
    drawdown: float
    halted: str | None
    positions: list[PositionView]
    llm: LLMView | None
    regimes: RegimeInfo | None
    reliabilities: dict[str, float]
    gate: dict[str, Any]
    listener: dict[str, Any]
    reconcile: dict[str, Any] | None
    incidents: list[dict[str, Any]]
    counters: dict[str, Any]


class Views:
    """The views of one account, read through a Temporal client and the journal."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._journal_db: Journal | None = None  # a connection, not a cache: reads are live

    @property
    def _handle(self):  # noqa: ANN202 - a WorkflowHandle
        return self.client.get_workflow_handle(self.settings.decision_workflow_id)

    def _journal(self) -> Journal | None:
        if self._journal_db is None:  # opened on first use (the file may not exist yet)
            self._journal_db = Journal.existing(self.settings)
        return self._journal_db

    async def status(self) -> StatusView:
        return await self._handle.query(DecisionWorkflow.status, rpc_timeout=QUERY_TIMEOUT)

    async def positions(self, view: StatusView | None = None) -> list[PositionView]:
        view = view or await self.status()
        return list(await asyncio.gather(*(self._position(p, view) for p in view.positions)))

    async def _position(self, pos: Any, view: StatusView) -> PositionView:
        params = view.config.position_params() if view.config is not None else None
        state: PositionState | None = None
        try:
            state = await self.client.get_workflow_handle(pos.workflow_id).query(
                PositionWorkflow.status, rpc_timeout=QUERY_TIMEOUT
            )
        except Exception:  # noqa: BLE001 - shown as not answering
            state = None
        last = state.last_price if state else pos.last_price
        entry = state.avg_entry if state else pos.avg_entry
        qty = state.qty if state else pos.qty
        cost = state.cost if state else pos.cost
        fee = params.fee_rate if params else 0.001
        side = pos.side
        trail = None
        stop = None
        if params is not None and entry > 0 and last > 0:
            if side is PositionSide.SHORT:
                best = min(state.trough_price if state else min(entry, last), last)
            else:
                best = max(state.peak_price if state else max(entry, last), last)
            trail = check_safety(entry, best, last, params, 0.0, side=side).trail_price
            stop = stop_loss_level(entry, params, side)
        plan = state.exit_plan if state else pos.exit_plan
        if plan is not None:
            stop = plan.stop_price  # the position's stop is its plan's
        value = mark_value(side, qty, entry, last, fee)
        return PositionView(
            position_id=pos.position_id,
            workflow_id=pos.workflow_id,
            symbol=pos.symbol,
            side=side.value,
            qty=qty,
            avg_entry=entry,
            last_price=last,
            cost=cost,
            pnl=value - cost,
            pnl_pct=net_pnl_pct(entry, last, fee, side=side) if entry > 0 and last > 0 else 0.0,
            stop=stop,
            trail=trail,
            exchange_stop=(
                state.stop.stop_price if state and state.stop and state.stop.working else None
            ),
            status=state.status.value if state else "UNKNOWN",
            last_verdict=state.last_verdict if state else None,
            last_score=state.last_score if state else None,
            exit_plan=describe_plan(plan) if plan is not None else None,
            plan_event=(state.plan_fired[-1] if state and state.plan_fired else None),
            entry_time_ms=pos.entry_time_ms,
            last_price_ms=state.last_price_ms if state else None,
            adopted=pos.adopted,
            exit_requested=pos.exit_requested,
            answered=state is not None,
        )

    async def overview(self) -> Overview:
        view = await self.status()
        p = view.portfolio
        positions = await self.positions(view)
        exposure = sum(x.qty * x.last_price for x in positions)
        equity = p.cash + exposure  # marked at the positions' latest prices, not the last cycle
        llm = None
        if view.llm is not None:
            llm = LLMView(
                enabled=view.llm.enabled,
                decided_by=view.llm.decided_by,
                breaker=view.llm.breaker,
                breaker_phase=view.llm.breaker_phase,
                spent_today_usd=view.llm.spend.day_usd,
                daily_budget_usd=view.llm.daily_budget_usd,
                calls_today=view.llm.spend.day_calls,
            )
        regimes = _regimes(view)
        return Overview(
            account=view.account,
            mode=view.config.mode if view.config else self.settings.mode,
            time_ms=int(time.time() * 1000),
            equity=equity,
            cash=p.cash,
            exposure=exposure / equity if equity > 0 else 0.0,
            drawdown=p.drawdown,
            halted=p.halt_reason if p.entries_blocked else None,
            positions=positions,
            llm=llm,
            regimes=regimes,
            reliabilities=view.reliabilities,
            gate=view.gate.model_dump(mode="json"),
            listener=await self.listener(),
            reconcile=view.reconcile.model_dump(mode="json") if view.reconcile else None,
            incidents=[i.model_dump(mode="json") for i in view.incidents],
            counters=view.counters.model_dump(mode="json"),
        )

    async def listener(self) -> dict[str, Any]:
        """The listener's health as the monitor last saw it through Temporal (any host); the
        listener's local status file only when no monitor runs."""
        from signals.listener_status import own_lane
        from workers.monitor import monitor_health

        try:
            health = await monitor_health(self.client, self.settings)
        except Exception:  # noqa: BLE001 - no monitor: the local file, if any
            return self._listener_file()
        status = health.listener or {}
        status = {**status, **own_lane(status, self.settings.account)}  # an arena agent's
        checked = health.listener_checked_ms or 0
        return {
            "state": health.listener_state,
            "source": "temporal",
            "age_s": round(max(0.0, time.time() - checked / 1000), 1) if checked else None,
            "error": health.listener_error,
            "host": status.get("host"),
            "mode": status.get("mode"),
            "market_time_ms": status.get("market_time_ms"),
            "wakes_sent": status.get("wakes_sent", 0),
            "wake_failures": status.get("wake_failures", 0),
            "account_missing": status.get("account_missing", False),
            "stale_series": status.get("stale_series", []),
            "gate": status.get("gate", {}),
        }

    def _listener_file(self) -> dict[str, Any]:
        """The listener's status file beside this process (one host, older engines)."""
        from signals.listener_status import read_status, status_path

        try:
            status = read_status(status_path(self.settings.home))
        except ValueError as err:
            return {"state": "unreadable", "error": str(err)}
        if status is None:
            return {"state": "no status file (is `ocw listen` running?)"}
        status = status.for_account(self.settings.account)
        age_s = max(0.0, time.time() - status.written_at_ms / 1000)
        state = "up" if age_s <= 3 * status.every_s + 5 else "silent"
        return {
            "state": state,
            "source": "file",
            "age_s": round(age_s, 1),
            "mode": status.mode,
            "market_time_ms": status.market_time_ms,
            "wakes_sent": status.wakes_sent,
            "wake_failures": status.wake_failures,
            "account_missing": status.account_missing,
            "stale_series": status.stale_series,
            "gate": status.gate,
        }

    async def trades(self, limit: int = 200) -> list[ClosedTrade]:
        journal = self._journal()
        if journal is None:
            return []
        trades = await asyncio.to_thread(journal.trades, self.settings.account)
        return trades[-limit:]

    async def decisions(self, limit: int = 50) -> list[DecisionView]:
        journal = self._journal()
        if journal is None:
            return []
        records = await asyncio.to_thread(journal.decisions, self.settings.account)
        out = []
        for rec in records[-limit:]:
            out.append(
                DecisionView(
                    decision_id=rec.decision_id,
                    market_time_ms=rec.market_time_ms,
                    source=rec.source,
                    wake_reasons=rec.wake_reasons,
                    reasoning=[
                        f"{d.ticker} {d.action.value}: {d.reasoning}".rstrip(": ")
                        for d in rec.decision.decisions
                    ],
                    executed=rec.executed,
                )
            )
        return out

    async def metrics(self) -> MetricsView:
        view = await self.status()
        p = view.portfolio
        initial = view.config.initial_cash if view.config else self.settings.initial_cash
        trades = await self.trades(limit=10_000)
        positions = await self.positions(view)
        live = p.cash + sum(x.qty * x.last_price for x in positions)
        curve: list[EquityPoint] = []
        benchmark: list[EquityPoint] = []
        if view.equity_marks:  # the account's own curve, one mark per decision cycle
            curve = [EquityPoint(time_ms=m.time_ms, equity=m.equity) for m in view.equity_marks]
            benchmark = [
                EquityPoint(time_ms=m.time_ms, equity=m.benchmark)
                for m in view.equity_marks
                if m.benchmark is not None
            ]
        elif trades:  # an account from before the marks: its closed trades
            equity = initial
            curve.append(EquityPoint(time_ms=trades[0].entry_time_ms, equity=equity))
            for t in sorted(trades, key=lambda t: t.exit_time_ms):
                equity += t.pnl
                curve.append(EquityPoint(time_ms=t.exit_time_ms, equity=equity))
        # the live mark on the market's clock (a replay's is not the wall clock)
        times = [x.last_price_ms for x in positions if x.last_price_ms]
        if view.last_decision is not None and view.last_decision.market_time_ms:
            times.append(view.last_decision.market_time_ms)
        times += [c.time_ms for c in curve]
        now_ms = max(times) if times and view.config and view.config.mode == "replay" else None
        curve.append(EquityPoint(time_ms=now_ms or int(time.time() * 1000), equity=live))
        wins = sum(1 for t in trades if t.pnl > 0)
        return MetricsView(
            initial_cash=initial,
            equity=live,
            cash=p.cash,
            drawdown=p.drawdown,
            peak_equity=p.peak_equity,
            realized_pnl=p.realized_pnl,
            fees_paid=p.fees_paid,
            n_trades=len(trades),
            wins=wins,
            losses=len(trades) - wins,
            curve=curve,
            benchmark=benchmark,
        )

    async def learner(self) -> PosteriorTable:
        return await self._handle.query(DecisionWorkflow.learner, rpc_timeout=QUERY_TIMEOUT)

    async def regimes(self) -> RegimeInfo | None:
        return _regimes(await self.status())  # the account's own answer: no position queried

    async def incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        journal = self._journal()
        if journal is None:
            return []
        rows = await asyncio.to_thread(journal.incidents, self.settings.account)
        return rows[-limit:]


def _regimes(view: StatusView) -> RegimeInfo | None:
    r = view.regimes
    if r is None:
        return None
    return RegimeInfo(
        crypto=r.crypto,
        crypto_probability=r.crypto_probability,
        macro=r.macro,
        exposure_scale=r.exposure_scale,
        trail_multiplier=r.trail_multiplier,
    )
