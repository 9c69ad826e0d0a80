"""Durable state of the workflows and the requests they send to activities.

Plain pydantic data: the workflows carry these across continue-as-new, the activities take
them as input, ``ocw status`` renders them. Nothing here may hold a secret.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trading.circuit_breaker import BreakerParams, BreakerState
from trading.learner import LearnerParams, LearnerState
from trading.limits import (
    MAX_SIGNALS_PER_RUN_DEFAULT,
    Cash,
    CooloffHours,
    DrawdownFraction,
    Leverage,
    Notional,
    PortfolioFraction,
    SignalsPerRun,
    Speed,
)
from trading.llm_budget import LLMSpend
from trading.models import (
    ClosedTrade,
    ExitPlan,
    Fill,
    IncomeEntry,
    LLMCallInfo,
    MarketView,
    Model,
    PositionParams,
    PositionSide,
    PositionStatus,
    StopState,
    SymbolFeatures,
    Wake,
    WakeCondition,
)
from trading.reconcile import ReconcileSummary
from trading.snapshot import MarketContext, SnapshotContext

RECENT_TRADES_KEPT = 50
DECISION_LOG_KEPT = 20
MEMORY_MAX_CHARS = 500
INCIDENTS_KEPT = 30
ERROR_TEXT_MAX = 300


class Incident(Model):
    """A contained failure: a work item, a signal delivery or an activity that went wrong.

    The workflow logs it, keeps the last few in its state (``ocw status``) and journals it,
    then goes on: no single error may fail a long-lived workflow.
    """

    time_ms: int  # workflow time
    market_time_ms: int | None = None
    where: str  # e.g. "work item close_all", "signal exit -> <position>", "activity journal"
    error: str


class LLMSettings(Model):
    """How the workflows use the LLM; ``enabled`` is decided by the worker from its environment."""

    enabled: bool = False
    daily_budget_usd: float | None = Field(default=0.50, ge=0, le=10_000)
    breaker: BreakerParams = Field(default_factory=BreakerParams)  # open_ms at speed 1
    position_eval_interval_s: float = Field(default=14400.0, ge=0, le=365 * 86_400)  # speed 1
    call_timeout_s: float = Field(default=60.0, gt=0, le=600)  # one HTTP call, whole


class EngineConfig(Model):
    """What the DecisionWorkflow needs to know of the settings (owned by the trading side).

    Durations are wall seconds at speed 1; ``speed`` (the replay clock, set by a replay
    listener through the ``set_speed`` update) scales them where they are used, never below
    ``min_timer_s`` in a replay. Every limit is bounded (``trading/limits.py``).
    """

    account: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    mode: str = "paper"  # paper | replay | testnet | live: a replay clock is refused live
    symbols: list[str] = Field(min_length=1, max_length=200)
    decision_interval: str = "4h"
    trading_task_queue: str = "ocw-trading"
    market_task_queue: str = "ocw-market"
    speed: Speed = 1.0
    min_timer_s: float = Field(default=1.0, gt=0, le=60)
    initial_cash: Cash = 10_000.0
    max_position_pct: PortfolioFraction = 0.30
    max_exposure: PortfolioFraction = 0.70
    drawdown_halt_pct: DrawdownFraction = 0.12
    drawdown_cooloff_hours: CooloffHours | None = None  # opt-in: lift an automatic halt
    min_order_notional: Notional = 10.0
    default_position_pct: PortfolioFraction = 0.20
    position: PositionParams = Field(default_factory=PositionParams)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    learner: LearnerParams = Field(default_factory=LearnerParams)
    regime_symbol: str = "BTC/USDT"
    crypto_regime_every_h: float = Field(default=24.0, gt=0)  # market hours between HMM refits
    macro_regime_every_h: float = Field(default=6.0, gt=0)
    # continue-as-new after this many handled items even if Temporal does not suggest it;
    # None = only when suggested. Tests use a small number to exercise the hand-over.
    max_cycles_per_run: int | None = Field(default=None, ge=1)
    max_ticks_per_run: int | None = Field(default=None, ge=1)
    # Temporal takes at most 10,000 signals per run: continue-as-new after this many
    max_signals_per_run: SignalsPerRun = MAX_SIGNALS_PER_RUN_DEFAULT
    # every position keeps a protective stop at the exchange (testnet / live brokers)
    exchange_stops: bool = False
    # the server has the engine's search attributes: set and upsert them (Temporal UI)
    search_attributes: bool = False
    # positions read prices and features from the boards and score locally
    # (PositionInput.lean_ticks); the rule policy decides as a local activity
    lean_ticks: bool = False
    # entries carry exit plans: their stop becomes the position's, their target and
    # invalidation wake its agent layer (issue 15; off in histories from before)
    exit_plans: bool = False
    rule_exit_plans: bool = False  # ... and the rule policy writes them too
    # short entries (SHORT / COVER) on USDⓈ-M futures (issue 15); off: long-only, as on spot
    shorts: bool = False
    leverage: Leverage = 1  # the futures leverage: a short's liquidation price follows from it
    # a paper futures account books funding at every funding time (00, 08, 16 UTC) on the
    # positions open then, at the listener's funding rate; an exchange books its own
    paper_funding: bool = False
    # who decides when Claude does not (issue 15, agent vs agent): "rule" (the rule policy, as
    # before) or "family:<name>[:<param>=<value>...]" (a policy family of trading/policies on
    # the listener's daily bars); the decide activity dispatches on it
    policy: str = Field(default="rule", max_length=200)
    agent: str = Field(default="", max_length=200)  # an arena agent's label ("" outside one)

    @model_validator(mode="after")
    def _limits_consistent(self) -> EngineConfig:
        if self.max_position_pct > self.max_exposure:
            raise ValueError(
                f"max_position_pct {self.max_position_pct} exceeds max_exposure {self.max_exposure}"
            )
        if self.default_position_pct > self.max_position_pct:
            raise ValueError(
                f"default_position_pct {self.default_position_pct} exceeds max_position_pct "
                f"{self.max_position_pct}"
            )
        return self

    def scaled_s(self, seconds: float) -> float:
        """A wall-clock duration on the replay clock: divided by the speed, and in a replay
        never below the dev server's timer grain."""
        if self.speed == 1.0:
            return seconds
        return max(self.min_timer_s, seconds / self.speed)

    def position_params(self, trail_multiplier: float = 1.0) -> PositionParams:
        """The position monitor's limits with its timers on the replay clock."""
        p = self.position
        return p.model_copy(
            update={
                "safety_interval_s": self.scaled_s(p.safety_interval_s),
                "agent_interval_s": self.scaled_s(p.agent_interval_s),
                "trail_multiplier": trail_multiplier,
            }
        )

    def breaker_params(self) -> BreakerParams:
        b = self.llm.breaker
        return b.model_copy(update={"open_ms": int(self.scaled_s(b.open_ms / 1000) * 1000)})


# ---------------------------------------------------------------- decision workflow


class OpenPosition(Model):
    """The DecisionWorkflow's view of one open position (the PositionWorkflow owns the detail)."""

    position_id: str
    workflow_id: str
    symbol: str
    qty: float
    avg_entry: float
    entry_time_ms: int
    cost: float  # quote spent including fees
    fees: float = 0.0
    last_price: float
    exit_requested: bool = False
    exit_requested_ms: int | None = None  # workflow time of the request (a stuck one is checked)
    exit_reason: str = ""  # why the exit was asked (resent with it if the watcher changes)
    pending_add_notional: float = 0.0
    watcher: int = 1  # the PositionWorkflow watching it; > 1 after a lost watcher was replaced
    signal_weights: dict[str, float] = Field(default_factory=dict)
    peak_price: float = 0.0  # extremes of the prices this workflow saw (cycle marks)
    trough_price: float = 0.0
    entry_crypto_regime: str = "unknown"  # the learner credits the trade to this regime
    adopted: bool = False  # taken over from the exchange by reconciliation, not bought here
    exit_plan: ExitPlan | None = None  # the entry's plan, handed to every watcher (issue 15)
    side: PositionSide = PositionSide.LONG  # a short sold to open; its value is q·(2E - P)


class Portfolio(Model):
    cash: float
    peak_equity: float
    equity: float
    drawdown: float = 0.0
    halted: bool = False  # automatic drawdown halt
    halted_since_ms: int | None = None  # market time the automatic halt was first seen
    manual_halt: bool = False
    halt_reason: str = ""
    realized_pnl: float = 0.0
    fees_paid: float = 0.0
    funding: float = 0.0  # booked on a paper futures account: received (+) less paid

    @property
    def entries_blocked(self) -> bool:
        return self.halted or self.manual_halt


WorkKind = Literal[
    "wake", "add_request", "close_all", "llm_mode", "learn", "check_position", "adopt"
]


class WorkItem(Model):
    """One queued piece of work of the DecisionWorkflow."""

    kind: WorkKind
    wake: Wake | None = None
    position_id: str | None = None  # "add_request", "check_position"
    trade: ClosedTrade | None = None  # "learn": the closed trade
    regime: str | None = None  # "learn": the crypto regime at its entry
    holding: AdoptedHolding | None = None  # "adopt": a holding reconciliation found untracked
    received_ms: int = 0
    attempts: int = 0  # a failed item may be queued again, a few times
    folded: int = 0  # "wake": how many queued wakes were folded into this one


class RegimeView(Model):
    """The latest crypto (HMM) and macro (FRED) regimes as the DecisionWorkflow holds them.

    Refresh times are on *market* time, so a replay refits once per market day like live.
    """

    crypto: str = "unknown"
    crypto_probability: float | None = None
    crypto_as_of_ms: int | None = None
    crypto_note: str | None = None
    macro: str = "unknown"
    exposure_scale: float = 1.0
    trail_multiplier: float = 1.0
    macro_as_of_ms: int | None = None
    macro_note: str | None = None
    next_crypto_ms: int | None = None
    next_macro_ms: int | None = None


class DecisionLogEntry(Model):
    cycle: int
    time_ms: int
    market_time_ms: int | None
    wake_reasons: list[str]
    source: str
    actions: list[str]
    rejected: list[str] = Field(default_factory=list)
    done: bool = False


class GateSettings(Model):
    """What the agent asked of the gate; the listener reads it by query."""

    next_check_seconds: int | None = None
    wake_conditions: list[WakeCondition] = Field(default_factory=list)
    set_at_ms: int | None = None
    version: int = 0


class Counters(Model):
    wakes_received: int = 0
    wakes_handled: int = 0
    cycles: int = 0
    orders: int = 0
    orders_rejected: int = 0
    positions_opened: int = 0
    positions_closed: int = 0
    continued_as_new: int = 0
    incidents: int = 0  # contained failures (state.incidents keeps the last few)
    wakes_folded: int = 0  # queued wakes worked off together with a newer one
    stale_wakes: int = 0  # wakes whose market had passed: no entries on them
    exits_failed: int = 0  # exits the broker rejected (the position stays open and retries)
    watchers_replaced: int = 0  # positions whose PositionWorkflow was gone and restarted


class EquityMark(Model):
    """One point of the account's equity curve (market time), with buy-and-hold beside it."""

    time_ms: int
    equity: float
    benchmark: float | None = None  # equal weight of the universe, bought at the first mark


EQUITY_MARKS_KEPT = 400  # halved (every other one dropped) when full: bounded state


class DecisionState(Model):
    config: EngineConfig
    last_reconcile: ReconcileSummary | None = None  # the exchange against these books
    last_funding_ms: int | None = None  # the last funding time booked (paper futures)
    epoch: str = ""  # random per account history, keeps position ids unique across resets
    portfolio: Portfolio
    positions: dict[str, OpenPosition] = Field(default_factory=dict)  # by symbol
    entry_seq: dict[str, int] = Field(default_factory=dict)  # by symbol
    queue: list[WorkItem] = Field(default_factory=list)
    recent_trades: list[ClosedTrade] = Field(default_factory=list)
    seen_trade_ids: list[str] = Field(default_factory=list)
    decision_log: list[DecisionLogEntry] = Field(default_factory=list)
    handled_wake_ids: list[str] = Field(default_factory=list)
    memory: str = ""
    gate: GateSettings = Field(default_factory=GateSettings)
    counters: Counters = Field(default_factory=Counters)
    last_market_time_ms: int | None = None
    last_prices: dict[str, float] = Field(default_factory=dict)
    equity_marks: list[EquityMark] = Field(default_factory=list)  # one per decision cycle
    benchmark_base: dict[str, float] = Field(default_factory=dict)  # prices at the first mark
    breaker: BreakerState = Field(default_factory=BreakerState)
    llm_spend: LLMSpend = Field(default_factory=LLMSpend)
    regimes: RegimeView = Field(default_factory=RegimeView)
    learner: LearnerState = Field(default_factory=LearnerState)
    positions_context_sent: str = ""  # "<vol regime>|<trail multiplier>" last told to positions
    llm_positions_on: bool = False  # what the open PositionWorkflows were last told
    decided_by: str = ""  # "llm" or "rule: <why>" for the last cycle
    incidents: list[Incident] = Field(default_factory=list)
    last_exit_ms: dict[str, int] = Field(default_factory=dict)  # symbol -> market time of exit
    restored: bool = False  # LLM spend and breaker seeded from the ledger (a new account run)
    breaker_saved: str = ""  # breaker phase last written to the ledger


class AdoptedHolding(Model):
    """A holding the broker has that a new account run takes over (``ocw account reset``)."""

    symbol: str
    qty: float = Field(gt=0)
    avg_entry: float = Field(gt=0)
    cost: float = Field(gt=0)  # quote spent including fees
    fees: float = Field(default=0.0, ge=0)
    entry_time_ms: int
    # a short held at the exchange (USDⓈ-M; reconciliation): ``qty`` is its size, ``cost``
    # the margin it stands for (qty x avg_entry); LONG where a payload has none
    side: PositionSide = PositionSide.LONG


class AdoptRequest(Model):
    """Reconciliation found a holding no position tracks: watch it (a flagged position)."""

    holding: AdoptedHolding
    reason: str = "reconciled"


class AccountSeed(Model):
    """What a new run of an account starts from when it replaces an old one: the broker's
    cash and holdings (reconciled by ``ocw account reset``), never ``initial_cash``."""

    cash: float = Field(ge=0)
    holdings: list[AdoptedHolding] = Field(default_factory=list)
    reason: str = ""


class DecisionInput(Model):
    config: EngineConfig
    state: DecisionState | None = None
    seed: AccountSeed | None = None  # a reset account: start from the broker's books


class LLMStatus(Model):
    enabled: bool
    breaker: str
    breaker_phase: str
    decided_by: str
    spend: LLMSpend
    daily_budget_usd: float | None


class StatusView(Model):
    """Answer of the DecisionWorkflow's ``status`` query."""

    account: str
    portfolio: Portfolio
    positions: list[OpenPosition]
    gate: GateSettings
    memory: str
    last_decision: DecisionLogEntry | None
    recent_trades: list[ClosedTrade]
    counters: Counters
    queue_length: int
    busy: bool
    llm: LLMStatus | None = None
    regimes: RegimeView | None = None
    reliabilities: dict[str, float] = Field(default_factory=dict)
    incidents: list[Incident] = Field(default_factory=list)  # the last few contained failures
    config: EngineConfig | None = None
    reconcile: ReconcileSummary | None = None
    equity_marks: list[EquityMark] = Field(default_factory=list)


# ---------------------------------------------------------------- position workflow


class PositionState(Model):
    position_id: str
    account: str
    symbol: str
    qty: float
    avg_entry: float
    entry_time_ms: int
    entry_fees: float
    cost: float  # quote spent including fees
    peak_price: float
    trough_price: float
    last_price: float
    last_price_ms: int
    next_seq: int = 2  # seq 1 was the entry order
    status: PositionStatus = PositionStatus.OPEN
    exit_requested: str | None = None  # reason of a pending exit request
    exit_failures: int = 0  # exits the broker rejected or that failed for good
    exit_retry_after_ms: int | None = None  # workflow time: no new safety exit before this
    rejected_orders: int = 0  # rejected orders are counted, not kept in ``fills``
    last_order_error: str | None = None
    price_at_ms: int | None = None  # workflow time ``last_price`` was read
    price_age_s: float | None = None  # the listener's age of that price (wall seconds)
    price_stale: bool = False  # the last safety check ran on a stale price, or on none
    stale_checks: int = 0  # safety checks on a stale price
    missed_checks: int = 0  # safety checks without any price
    incidents: list[Incident] = Field(default_factory=list)
    pending_adds: list[AddOrder] = Field(default_factory=list)
    signal_weights: dict[str, float] = Field(default_factory=dict)
    entry_regime: str = "unknown"
    last_score: float | None = None
    last_verdict: str | None = None
    safety_checks: int = 0
    agent_checks: int = 0
    next_safety_ms: int | None = None  # workflow-time deadlines, carried over CAN
    next_agent_ms: int | None = None
    entry_vol_regime: str | None = None  # crypto (HMM) regime at entry, for the scorer
    current_vol_regime: str | None = None  # updated by the ``market_context`` signal
    llm_on: bool | None = None  # None: as PositionInput.llm_enabled; toggled by ``llm_mode``
    last_llm_eval_ms: int | None = None
    llm_checks: int = 0
    fills: list[Fill] = Field(default_factory=list)
    exit_qty: float = 0.0  # sold so far by the exit (several orders when one fills in part)
    exit_value: float = 0.0  # their qty x price
    exit_fees: float = 0.0
    exit_reason: str | None = None
    trade: ClosedTrade | None = None
    stop: StopState | None = None  # the exchange-side stop while one works
    close_books: str | None = None  # reconciliation: gone at the exchange, book it closed
    stop_orders: int = 0  # stops placed (a move is a cancel and a new one)
    stop_errors: int = 0  # stop placements, reads or cancels that failed
    # the entry's exit plan (issue 15, trading/exit_plan.py): its stop is ``params``' stop loss;
    # its target and invalidation wake the agent layer once each ("target", "invalidated")
    exit_plan: ExitPlan | None = None
    # the direction (issue 15): a short's stop sits above the entry and its exit is a BUY;
    # ``peak_price`` / ``trough_price`` keep their plain meaning (highest / lowest seen)
    side: PositionSide = PositionSide.LONG
    plan_event: str | None = None  # the last of them to fire, as the agent layer is told
    plan_fired: list[str] = Field(default_factory=list)


class AddOrder(Model):
    qty: float
    ref_price: float
    reason: str = "add"


class PositionInput(Model):
    state: PositionState
    params: PositionParams
    decision_workflow_id: str
    trading_task_queue: str
    market_task_queue: str
    max_ticks_per_run: int | None = Field(default=None, ge=1)
    llm_enabled: bool = False  # may the agent layer ask the LLM (the DecisionWorkflow decides)
    llm_eval_interval_s: float = 14400.0  # at most this often, unless the scorer leans EXIT/ADD
    llm_call_timeout_s: float = Field(default=60.0, gt=0, le=600)  # the HTTP call's deadline
    exchange_stops: bool = False  # keep a protective stop at the exchange (a real broker)
    search_attributes: bool = False  # upsert OcwPositionStatus / OcwExitReason as they change
    # local reads (issue 14): the safety price from the price board and the scorer as local
    # activities, a safety check then costing one workflow task; off in older histories
    lean_ticks: bool = False


class StartPosition(Model):
    """Request to start a PositionWorkflow under a deterministic workflow id."""

    workflow_id: str
    input: PositionInput
    summary: str = ""  # what the Temporal UI shows of it from the start
    details: str = ""


class PositionContext(Model):
    """Market context the DecisionWorkflow pushes to open positions when it changes."""

    vol_regime: str | None = None
    trail_multiplier: float | None = Field(default=None, gt=0)


class LLMReport(Model):
    """A position's LLM call, for the DecisionWorkflow's budget and circuit breaker."""

    position_id: str
    ok: bool
    info: LLMCallInfo | None = None
    error: str = ""
    error_type: str = ""  # ApplicationError type; a spent budget is no breaker failure


class ExitFailed(Model):
    """Sent by a PositionWorkflow whose exit order did not fill: it stays open, and the
    DecisionWorkflow's view must say so too (a later SELL or close-all asks again)."""

    position_id: str
    symbol: str
    reason: str  # the exit's reason
    error: str  # the broker's rejection or the order's final error


class PositionStatusRequest(Model):
    workflow_id: str
    position_id: str


class PositionStatusView(Model):
    """What Temporal and the broker say of a position whose PositionWorkflow did not answer."""

    status: str  # RUNNING, COMPLETED, FAILED, TERMINATED, CANCELED, TIMED_OUT, NOT_FOUND, ...
    trade: ClosedTrade | None = None  # the result of a completed PositionWorkflow
    broker_orders: int = 0  # orders the broker holds for the position id (any status)
    broker_qty: float = 0.0  # what the broker holds of the symbol


class PositionUpdate(Model):
    """Sent by a PositionWorkflow to the DecisionWorkflow after an ADD fill."""

    position_id: str
    symbol: str
    qty: float
    avg_entry: float
    cost: float
    fill: Fill


# ---------------------------------------------------------------- activity requests


class PricesRequest(Model):
    symbols: list[str]


class BoardPricesRequest(Model):
    """A safety check's price from the listener's price board (activities/price_board.py)."""

    board: str  # the market task queue whose listener writes it
    symbols: list[str]
    max_age_s: float = Field(gt=0)  # an older board answers "missing"


class PricesResult(Model):
    prices: dict[str, float] = Field(default_factory=dict)
    time_ms: dict[str, int] = Field(default_factory=dict)
    # wall seconds since the listener last heard of the symbol (its stream's freshness)
    age_s: dict[str, float] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)


class MarketViewRequest(Model):
    symbols: list[str]
    interval: str


class BoardViewRequest(Model):
    """An agent check's features from the listener's feature board (activities/feature_board.py)."""

    board: str  # the market task queue whose listener writes it
    symbols: list[str]
    interval: str
    max_age_s: float = Field(gt=0)  # an older sheet answers "missing"


class FundingRequest(Model):
    """Funding to book on a paper futures account, one entry per position and funding time."""

    account: str
    entries: list[IncomeEntry]


class BoardDecisionRequest(Model):
    """A wake's view and context from the listener's decision board (activities/decision_board.py)."""

    board: str  # the market task queue whose listener writes it
    interval: str  # the decision interval
    symbols: list[str]
    market_time_ms: int | None = None  # a candle wake's: an older sheet does not serve
    max_age_s: float = Field(gt=0)  # nor does one written longer ago than this


class BoardDecision(Model):
    """The board's answer: the view and context when the sheet serves, else why not."""

    view: MarketView | None = None
    context: MarketContext | None = None
    market_time_ms: int | None = None
    reason: str = ""


class AccountView(Model):
    portfolio_value: float
    cash: float
    exposure: float  # fraction of portfolio in positions
    drawdown: float
    halted: bool
    positions: list[OpenPosition]
    recent_trades: list[ClosedTrade]


class DecideRequest(Model):
    account: str
    decision_id: str
    market: MarketView
    account_view: AccountView
    wake_reasons: list[str]
    memory: str = ""
    default_position_pct: float = 0.20
    max_position_pct: float = 0.30
    # LLM trader (issue 4): what the snapshot shows beyond market and account
    max_exposure: float = 0.70
    context: SnapshotContext | None = None
    group_weights: dict[str, float] | None = None  # learner weights for the rule policy
    short_group_weights: dict[str, float] | None = None  # ... learned from shorts
    # with it the rule policy writes each entry's exit plan from these limits (issue 15)
    plan_params: PositionParams | None = None
    shorts: bool = False  # short entries may be proposed (USDⓈ-M futures with shorts on)
    # the account's EngineConfig.policy; None: the decide activity's own (its worker's settings)
    policy: str | None = Field(default=None, max_length=200)


class EvaluateRequest(Model):
    position: PositionState
    features: SymbolFeatures | None = None
    btc_features: SymbolFeatures | None = None
    params: PositionParams
    context: SnapshotContext | None = None  # LLM trader: regime, macro, derivatives, ...


class PositionVerdict(Model):
    verdict: str  # HOLD | EXIT | ADD
    score: float
    components: dict[str, float] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)
    source: str = "scorer"
    llm: LLMCallInfo | None = None  # set when source == "llm"


class JournalTrade(Model):
    account: str
    trade: ClosedTrade


class JournalIncident(Model):
    account: str
    incident: Incident


class JournalFill(Model):
    account: str
    fill: Fill


PositionState.model_rebuild()
