"""Test doubles at the activity seam: scripted market and decisions, a sink for position signals.

Orders go to the real PaperBroker and journal (on a temp path): only the market and the
policy are scripted, because a workflow test must control what the engine sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio import activity, workflow

from trading.macro import MacroRegime, MacroRequest, as_date
from trading.models import (
    AgentDecision,
    ClosedTrade,
    DerivativesReading,
    MarketView,
    SymbolFeatures,
    TradeDecision,
)
from trading.regime_crypto import CryptoRegime, CryptoRegimeRequest
from trading.snapshot import MarketContext, MarketContextRequest
from trading.state import (
    BoardDecision,
    BoardDecisionRequest,
    BoardPricesRequest,
    BoardViewRequest,
    DecideRequest,
    EvaluateRequest,
    MarketViewRequest,
    PositionUpdate,
    PositionVerdict,
    PricesRequest,
    PricesResult,
)
from workflows import activity_api as api


def now_ms() -> int:
    """Server time of this activity attempt: on the time-skipping server it is the skipped clock."""
    return int(activity.info().current_attempt_scheduled_time.timestamp() * 1000)


@dataclass
class PriceScript:
    """Price as a step function of (server) time since ``t0_ms``: [(seconds, price), ...]."""

    steps: list[tuple[float, float]]
    t0_ms: int | None = None
    calls: list[tuple[int, float]] = field(default_factory=list)

    def price_at(self, t_ms: int) -> float:
        if self.t0_ms is None:
            self.t0_ms = t_ms
        elapsed = (t_ms - self.t0_ms) / 1000
        price = self.steps[0][1]
        for at, value in self.steps:
            if elapsed >= at:
                price = value
        return price


class FakeMarket:
    def __init__(
        self, scripts: dict[str, PriceScript] | None = None, default: float = 100.0
    ) -> None:
        self.scripts = scripts or {}
        self.default = default
        self.view_calls = 0
        self.age_s: float | None = None  # the stream's staleness the listener reports
        self.price_calls = 0  # market_prices attempts (the listener's task queue)
        self.board_calls = 0  # board_prices (a local activity on the trading worker)
        self.board_fresh = True  # False: the boards answer "missing" (stale or absent)
        self.board_view_calls = 0  # board_view (the feature board, also a local activity)
        self.board_decision_calls = 0  # board_decision (the decision board, a local activity)
        self.funding_rate: float | None = None  # the derivatives' funding rate, when set
        # a local activity's attempt time is the worker's wall clock, not the skipped one:
        # the board reads the test server's clock through this (``use_clock_of``)
        self.board_clock: Callable[[], Awaitable[int]] | None = None

    def price(self, symbol: str, t_ms: int) -> float:
        script = self.scripts.get(symbol)
        if script is None:
            return self.default
        price = script.price_at(t_ms)
        script.calls.append((t_ms, price))
        return price

    def use_clock_of(self, env) -> None:
        async def clock() -> int:
            return int((await env.get_current_time()).timestamp() * 1000)

        self.board_clock = clock

    def _prices(self, symbols: list[str], t: int | None = None) -> PricesResult:
        t = now_ms() if t is None else t
        return PricesResult(
            prices={s: self.price(s, t) for s in symbols},
            time_ms={s: t for s in symbols},
            age_s={s: self.age_s for s in symbols if self.age_s is not None},
        )

    @activity.defn(name=api.MARKET_PRICES)
    async def market_prices(self, req: PricesRequest) -> PricesResult:
        self.price_calls += 1
        return self._prices(req.symbols)

    @activity.defn(name=api.BOARD_PRICES)
    async def board_prices(self, req: BoardPricesRequest) -> PricesResult:
        """The price board as a lean safety check reads it (activities/price_board.py)."""
        self.board_calls += 1
        if not self.board_fresh:
            return PricesResult(missing=list(req.symbols))
        t = await self.board_clock() if self.board_clock is not None else None
        return self._prices(req.symbols, t)

    @activity.defn(name=api.MARKET_VIEW)
    async def market_view(self, req: MarketViewRequest) -> MarketView:
        self.view_calls += 1
        return self._view(req.symbols, req.interval, now_ms())

    @activity.defn(name=api.BOARD_VIEW)
    async def board_view(self, req: BoardViewRequest) -> MarketView:
        """The feature board as a lean agent check reads it (activities/feature_board.py)."""
        self.board_view_calls += 1
        if not self.board_fresh:
            return MarketView(as_of_ms=0, missing=list(req.symbols))
        t = await self.board_clock() if self.board_clock is not None else now_ms()
        return self._view(req.symbols, req.interval, t)

    @activity.defn(name=api.BOARD_DECISION)
    async def board_decision(self, req: BoardDecisionRequest) -> BoardDecision:
        """The decision board as a lean DecisionWorkflow reads it (activities/decision_board.py):
        the wake's view and context when ``board_fresh``, else why not."""
        self.board_decision_calls += 1
        if not self.board_fresh:
            return BoardDecision(reason="sheet 60s old (test)")
        t = await self.board_clock() if self.board_clock is not None else now_ms()
        return BoardDecision(
            view=self._view(req.symbols, req.interval, t),
            context=self._context(req.symbols),
            market_time_ms=req.market_time_ms,
        )

    def _view(self, symbols: list[str], interval: str, t: int) -> MarketView:
        return MarketView(
            as_of_ms=t,
            symbols={
                s: SymbolFeatures(symbol=s, interval=interval, time_ms=t, price=self.price(s, t))
                for s in symbols
            },
        )

    @activity.defn(name=api.MARKET_CONTEXT)
    async def market_context(self, req: MarketContextRequest) -> MarketContext:
        return self._context(req.symbols)

    def _context(self, symbols: list[str]) -> MarketContext:
        if self.funding_rate is None:
            return MarketContext(missing=["derivatives", "liquidations", "sentiment"])
        return MarketContext(
            derivatives={s: DerivativesReading(funding_rate=self.funding_rate) for s in symbols},
            missing=["liquidations", "sentiment"],
        )


class ScriptedPolicy:
    """``decide`` answers from a script keyed by cycle number; it can be held to simulate a slow LLM."""

    def __init__(
        self, script: Callable[[int, DecideRequest], list[TradeDecision]] | None = None
    ) -> None:
        self.script = script or (lambda cycle, req: [])
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.requests: list[DecideRequest] = []

    @activity.defn(name=api.DECIDE)
    async def decide(self, req: DecideRequest) -> AgentDecision:
        self.requests.append(req)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        cycle = int(req.decision_id.rsplit("-", 1)[1])
        return AgentDecision(
            source="test",
            decisions=self.script(cycle, req),
            memory_update=f"cycle {cycle}",
            next_check_seconds=600,
        )

    @activity.defn(name=api.EVALUATE_POSITION)
    async def evaluate_position(self, req: EvaluateRequest) -> PositionVerdict:
        return PositionVerdict(verdict="HOLD", score=0.0)


@workflow.defn(name="SignalSink")
class SignalSink:
    """Stands in for the DecisionWorkflow when a PositionWorkflow is tested alone."""

    def __init__(self) -> None:
        self.closed: list[ClosedTrade] = []
        self.updates: list[PositionUpdate] = []
        self.add_requests: list[str] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def position_closed(self, trade: ClosedTrade) -> None:
        self.closed.append(trade)

    @workflow.signal
    def position_update(self, update: PositionUpdate) -> None:
        self.updates.append(update)

    @workflow.signal
    def add_request(self, position_id: str) -> None:
        self.add_requests.append(position_id)

    @workflow.query
    def trades(self) -> list[ClosedTrade]:
        return self.closed


class FakeRegimes:
    """Scripted crypto and macro regimes at the activity seam (the fits are unit-tested).

    Answers with whatever ``crypto`` and ``macro`` hold at the time of the call and records the
    as-of times it was asked for.
    """

    def __init__(self, crypto: str = "low", macro: str = "unknown") -> None:
        self.crypto = crypto
        self.macro = macro
        self.crypto_calls: list[int] = []
        self.macro_calls: list[int] = []

    @activity.defn(name=api.CRYPTO_REGIME)
    async def crypto_regime(self, req: CryptoRegimeRequest) -> CryptoRegime:
        self.crypto_calls.append(req.as_of_ms)
        return CryptoRegime(label=self.crypto, n_states=2, as_of_ms=req.as_of_ms)

    @activity.defn(name=api.MACRO_REGIME)
    async def macro_regime(self, req: MacroRequest) -> MacroRegime:
        self.macro_calls.append(req.as_of_ms)
        scale, trail = MACRO_TABLE.get(self.macro, (1.0, 1.0))
        return MacroRegime(
            quadrant=self.macro,  # type: ignore[arg-type]
            exposure_scale=scale,
            trail_multiplier=trail,
            as_of=as_date(req.as_of_ms),
        )

    def all(self) -> list:
        return [self.crypto_regime, self.macro_regime]


MACRO_TABLE = {
    "goldilocks": (1.2, 1.0),
    "reflation": (1.0, 1.0),
    "stagflation": (0.6, 0.75),
    "deflation": (0.9, 0.9),
}
