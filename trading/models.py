"""Domain models shared by the listener, the workflows, the activities and the backtester.

Every payload that crosses a process or Temporal boundary is one of these pydantic models.
They are plain data: no I/O, no numpy, so workflow code may import them. Non-finite numbers
are rejected at construction (``allow_inf_nan=False``): a NaN price never gets in.
Times are UTC epoch milliseconds (Binance's own unit) so that they compare cheaply and
serialise without time-zone surprises.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.limits import (
    AgentIntervalS,
    FeeRate,
    GuardFraction,
    PositiveHours,
    SafetyIntervalS,
    Score,
    StopLossFraction,
    TrailActivateFraction,
    TrailFraction,
    TrailMultiplier,
)


class Model(BaseModel):
    """Base for every payload: finite numbers only, no silent extra fields."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


# ---------------------------------------------------------------- market data


class Bar(Model):
    """One kline. ``closed`` is False for the bar still in progress."""

    symbol: str  # unified form, e.g. "BTC/USDT"
    interval: str  # Binance form: "1m", "5m", "15m", "1h", "4h", "1d"
    open_time: int  # epoch ms of the bar's open
    close_time: int  # epoch ms of the bar's last millisecond (Binance "T")
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)
    closed: bool = True


class PriceTick(Model):
    """The latest known price of a symbol and the market time it refers to."""

    symbol: str
    price: float = Field(gt=0)
    time_ms: int  # market time of the price (event time of the frame)
    stale: bool = False


class SymbolFeatures(Model):
    """Indicators of one symbol on the decision interval (SPEC §2), computed in activities.

    Optional fields are None when there are not enough bars; ``missing`` names them.
    """

    symbol: str
    interval: str
    time_ms: int  # market time of ``price``
    price: float = Field(gt=0)
    n_bars: int = 0
    ret_1h: float | None = None
    ret_4h: float | None = None
    ret_24h: float | None = None
    ret_7d: float | None = None
    volume: float | None = None
    volume_z: float | None = None
    rsi14: float | None = None
    ema9: float | None = None
    ema21: float | None = None
    ema50: float | None = None
    sma72: float | None = None
    bb_upper: float | None = None
    bb_lower: float | None = None
    bb_pct_b: float | None = None
    bb_width: float | None = None
    atr_pct: float | None = None
    momentum14: float | None = None  # fractional change over 14 bars
    efficiency_ratio30: float | None = None
    regime: str = "unknown"  # "trending" | "ranging" | "unknown" (SPEC §7)
    missing: list[str] = Field(default_factory=list)


class DerivativesReading(Model):
    """Latest derivatives metrics of one symbol; any of them may be unavailable.

    ``funding_rate`` per 8 h funding period (0.0001 = 0.01 %); ``taker_ratio`` taker buy/sell
    volume (1 = balanced); ``ls_z`` z-score of the long/short account ratio; ``oi_change_pct``
    open-interest change as a fraction (0.05 = +5 %); ``basis_annualised`` perp-spot basis a
    year (0.08 = 8 %). The rule policy's composite (SPEC §7) reads the first four; the snapshot
    shows all five.
    """

    funding_rate: float | None = None
    taker_ratio: float | None = None
    ls_z: float | None = None
    oi_change_pct: float | None = None
    basis_annualised: float | None = None


class MarketView(Model):
    """Features of every symbol at one moment, as served by the listener."""

    as_of_ms: int
    symbols: dict[str, SymbolFeatures] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)  # symbols with no data at all


# ---------------------------------------------------------------- wakes


class Wake(Model):
    """Signal payload that wakes the DecisionWorkflow.

    ``temporal workflow signal --name wake --input '{"reason": "manual"}'`` is a valid Wake:
    every other field has a default.
    """

    model_config = ConfigDict(allow_inf_nan=False, extra="ignore")

    reason: str = "manual"
    reasons: list[str] = Field(default_factory=list)
    symbols: list[str] = Field(default_factory=list)
    market_time_ms: int | None = None
    wake_id: str | None = None

    def all_reasons(self) -> list[str]:
        return [self.reason, *[r for r in self.reasons if r != self.reason]]


# ---------------------------------------------------------------- decisions


class Action(StrEnum):
    """BUY opens a long and SELL closes it; SHORT opens a short and COVER closes it (USDⓈ-M
    futures with shorts enabled only); ADD adds to whichever position is open."""

    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"
    ADD = "ADD"
    SHORT = "SHORT"
    COVER = "COVER"


class WakeCondition(Model):
    metric: str
    operator: str
    threshold: float
    reason: str = ""


class ExitPlan(Model):
    """An entry's plan (issue 15; trading/exit_plan.py): where the trade is wrong (the stop,
    kept between the hard stop and a minimum distance), where it has worked (the target), and
    what would invalidate it before either (a condition its position watches)."""

    stop_price: float = Field(gt=0)
    target_price: float = Field(gt=0)
    invalidation: WakeCondition
    source: str = "llm"  # who wrote it: "llm" or "rule"
    notes: list[str] = Field(default_factory=list)  # clamps applied to the proposal


class TradeDecision(Model):
    """One decision of the agent (LLM or rule policy) for one ticker (SPEC §3)."""

    ticker: str
    action: Action
    position_pct: float = Field(default=0.0, ge=0.0)  # share of portfolio value
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    reasoning: str = ""
    signal_weights: dict[str, float] = Field(default_factory=dict)
    exit_plan: ExitPlan | None = None  # every entry carries one (BUY)


class LLMCallInfo(Model):
    """Accounting of one LLM call (no prompt text, no secret): the workflow's budget reads it.

    ``replayed`` answers came from the record/replay cache and cost nothing now;
    ``recorded_cost_usd`` is what the original call cost. ``notes`` lists clamps and dropped
    fields of the answer.
    """

    call_id: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0
    recorded_cost_usd: float = 0.0
    replayed: bool = False
    attempt: int = 1
    latency_ms: int = 0
    before_training_cutoff: bool = False
    notes: list[str] = Field(default_factory=list)


class AgentDecision(Model):
    """A validated answer of the agent. ``source`` says who decided: "rule" or "llm"."""

    source: str = "rule"
    decisions: list[TradeDecision] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)  # reasons for decisions dropped
    market_assessment: str = ""
    regime_agreement: str = ""
    learning_note: str = ""
    next_check_seconds: int | None = None
    wake_conditions: list[WakeCondition] | None = None
    memory_update: str | None = None
    llm: LLMCallInfo | None = None  # set when source == "llm"


# ---------------------------------------------------------------- orders


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class PositionSide(StrEnum):
    """Direction of a position. LONG everywhere a payload has no side (histories before shorts);
    SHORT only on USDⓈ-M futures. An order's ``Side`` follows from it: see the properties."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        """+1 for a long, -1 for a short: the sign of the position's PnL per unit price rise."""
        return 1 if self is PositionSide.LONG else -1

    @property
    def entry_side(self) -> Side:
        """The order that opens (or adds to) the position: BUY for a long, SELL for a short."""
        return Side.BUY if self is PositionSide.LONG else Side.SELL

    @property
    def exit_side(self) -> Side:
        """The order that closes it (reduce-only on futures): SELL for a long, BUY for a short."""
        return Side.SELL if self is PositionSide.LONG else Side.BUY


class OrderStatus(StrEnum):
    """A final outcome as the workflows see it (the broker resolves anything in between)."""

    FILLED = "FILLED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"  # part filled, the rest cancelled or expired: final
    REJECTED = "REJECTED"  # nothing filled; ``reason`` says why


class OrderRequest(Model):
    """An order to the broker. ``client_order_id`` is deterministic (position id + sequence)."""

    client_order_id: str
    position_id: str
    seq: int = Field(ge=1)
    symbol: str
    side: Side
    qty: float = Field(gt=0)
    ref_price: float = Field(gt=0)  # last price the caller saw; paper fills around it
    market_time_ms: int
    reason: str = ""
    account: str = ""
    # the position's direction: an order on the exit side of it (a long's SELL, a short's BUY)
    # is reduce-only on futures; LONG where a payload has none (histories before shorts)
    position_side: PositionSide = PositionSide.LONG

    @property
    def reduces(self) -> bool:
        """The order closes (part of) its position rather than opening or adding to it."""
        return self.side == self.position_side.exit_side


class Fill(Model):
    """The broker's answer to an order. A REJECTED fill is final: nothing to track."""

    client_order_id: str
    position_id: str
    symbol: str
    side: Side
    status: OrderStatus
    qty: float = Field(ge=0)
    price: float = Field(ge=0)
    fee: float = Field(ge=0)  # in quote currency
    market_time_ms: int
    reason: str = ""
    venue_order_id: str | None = None  # the exchange's own id (None for the paper broker)
    requested_qty: float | None = Field(default=None, ge=0)  # what was asked, when it differs
    # of a SELL: the part of the asked quantity too small to trade on its own (under the lot
    # step or the minimum notional); it stays on the account and an exit does not chase it
    dust: float = Field(default=0.0, ge=0)

    @property
    def notional(self) -> float:
        return self.qty * self.price

    @property
    def filled(self) -> bool:
        """Something was bought or sold: the books follow ``qty``, whatever was asked."""
        return self.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED) and self.qty > 0


class StopStatus(StrEnum):
    """A protective stop at the exchange, as the workflows see it."""

    WORKING = "WORKING"  # resting at the exchange (or triggered and still filling)
    FILLED = "FILLED"  # triggered and sold all it covered
    CANCELED = "CANCELED"  # cancelled, or ended unfilled; ``fill`` holds any part sold first
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"  # refused or not sent (``reason``): nothing rests at the exchange
    NOT_FOUND = "NOT_FOUND"  # the exchange has no order with this client id


class StopRequest(Model):
    """A protective stop: a SELL under a long (spot STOP_LOSS_LIMIT, futures STOP_MARKET
    reduce-only) or a BUY above a short (futures STOP_MARKET reduce-only only).
    ``client_order_id`` is deterministic (position id + sequence), as for orders."""

    client_order_id: str
    position_id: str
    seq: int = Field(ge=1)
    symbol: str
    qty: float = Field(gt=0)
    stop_price: float = Field(gt=0)
    market_time_ms: int
    account: str = ""
    position_side: PositionSide = PositionSide.LONG  # the stop's order is its exit side


class StopRef(Model):
    """Which stop to look up or cancel."""

    client_order_id: str
    position_id: str
    symbol: str
    qty: float = Field(gt=0)
    stop_price: float = Field(gt=0)
    market_time_ms: int
    account: str = ""
    position_side: PositionSide = PositionSide.LONG


class StopState(Model):
    """What the exchange holds of a stop. ``fill`` is what it sold (all of it when FILLED,
    a part when a stop-limit filled in part before it was cancelled or expired)."""

    client_order_id: str
    symbol: str
    status: StopStatus
    stop_price: float
    qty: float
    fill: Fill | None = None
    venue_order_id: str | None = None
    reason: str = ""

    @property
    def working(self) -> bool:
        return self.status == StopStatus.WORKING

    @property
    def sold(self) -> float:
        return self.fill.qty if self.fill is not None and self.fill.filled else 0.0


class VenueOrder(Model):
    """An open order at the venue (reconciliation): regular, or a conditional stop."""

    client_order_id: str
    symbol: str  # the engine's symbol ("BTC/USDT")
    side: Side
    qty: float
    kind: Literal["order", "stop"] = "order"
    stop_price: float | None = None
    venue_order_id: str | None = None


class IncomeEntry(Model):
    """A futures account's income that no fill carries: funding paid (negative) or received."""

    income_id: str  # the exchange's transaction id
    symbol: str
    kind: str  # FUNDING_FEE
    amount: float  # in ``asset``; signed
    asset: str
    time_ms: int


class Balances(Model):
    cash: float
    holdings: dict[str, float] = Field(default_factory=dict)  # symbol -> base qty


# ---------------------------------------------------------------- positions


class PositionStatus(StrEnum):
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


class PositionParams(Model):
    """Limits of one position's monitor (SPEC §4). Durations are wall seconds, already scaled.

    Bounded by ``trading/limits.py`` like the settings they come from, so an out-of-range value
    in a ``configure`` update is refused before it enters history.
    """

    stop_loss_pct: StopLossFraction = 0.04
    trail_activate_pct: TrailActivateFraction = 0.08
    trail_pct: TrailFraction = 0.12
    trail_multiplier: TrailMultiplier = 1.0
    max_drawdown_guard_pct: GuardFraction = 0.15
    time_stop_hours: PositiveHours | None = None  # market hours
    fee_rate: FeeRate = 0.001
    safety_interval_s: SafetyIntervalS = 30.0
    agent_interval_s: AgentIntervalS = 180.0
    exit_score: Score = -0.3
    add_score: Score = 0.4

    @model_validator(mode="after")
    def _scores_ordered(self) -> PositionParams:
        if self.exit_score >= self.add_score:
            raise ValueError(
                f"exit_score {self.exit_score} must lie below add_score {self.add_score}"
            )
        return self


class ClosedTrade(Model):
    """A position that has ended; its id is the position id, so learner updates are idempotent."""

    trade_id: str
    symbol: str
    qty: float
    entry_price: float
    exit_price: float
    entry_time_ms: int
    exit_time_ms: int
    fees: float
    pnl: float  # net of fees, quote currency
    pnl_pct: float  # net, relative to entry cost
    exit_reason: str
    signal_weights: dict[str, float] = Field(default_factory=dict)
    side: PositionSide = PositionSide.LONG  # a short's pnl is (entry - exit)·qty less fees


# ---------------------------------------------------------------- journal


class DecisionRecord(Model):
    """One decision cycle as the journal keeps it. ``decision_id`` makes the write idempotent."""

    decision_id: str
    account: str
    market_time_ms: int | None = None
    wake_reasons: list[str] = Field(default_factory=list)
    source: str = "rule"
    decision: AgentDecision
    executed: list[str] = Field(default_factory=list)  # what was done, one line per order
