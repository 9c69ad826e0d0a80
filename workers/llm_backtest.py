"""Claude as the decision source of the in-process backtester (``ocw backtest --llm``).

At each decision bar the backtester asks ``intents``; this module builds the same
``DecideRequest`` the DecisionWorkflow would send at that candle close (market view from the
feature frames, account from the engine's book, ``candle_close`` wake reasons, the agent's
memory from its previous answer), calls ``LLMActivities.decide`` (the body of the live
``llm_decide`` activity: same prompt, record/replay cache, run budget, validation and cost
accounting) synchronously on its own event loop, and turns the validated ``AgentDecision`` into
the engine's ``Intent``s. A failed bar (invalid answer, API failure after bounded retries, spent
run budget) is decided by the rule policy instead and counted, as live. Errors that would fail
every bar the same way (no credentials, auth, unknown model, a replay miss unless told
otherwise) stop the run with a clear message.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field
from temporalio.exceptions import ApplicationError

from activities.llm_agent import (
    BUDGET_EXCEEDED,
    INVALID_ANSWER,
    NOT_CONFIGURED,
    REPLAY_MISS,
    LLMActivities,
    LLMConfig,
    llm_configured,
)
from activities.llm_cache import CacheMode, LLMStore
from trading.agent_contract import PROMPT_VERSION, AgentLimits
from trading.backtest.data import BacktestData
from trading.backtest.params import BacktestParams
from trading.backtest.policy import Intent, RuleDecisions, intent_of
from trading.llm_pricing import before_cutoff, training_cutoff
from trading.models import (
    Action,
    AgentDecision,
    LLMCallInfo,
    Model,
    PositionParams,
)
from trading.snapshot import EngineStatus, PositionMark, RegimeReading, SnapshotContext
from trading.state import (
    MEMORY_MAX_CHARS,
    AccountView,
    DecideRequest,
    OpenPosition,
)
from workers.temporal_env import SetupError

if TYPE_CHECKING:
    from trading.backtest.engine import Backtester

log = logging.getLogger(__name__)

RECENT_TRADES_SENT = 10  # SPEC §2: the last 10 closed trades
# failures that would repeat on every bar: the run stops instead of falling back for all of them
ABORT_TYPES = frozenset({NOT_CONFIGURED, "LLMAuthError", "LLMNotFound"})
# failures after which another attempt cannot help (activity_api.LLM_NON_RETRYABLE)
FINAL_TYPES = frozenset({INVALID_ANSWER, "LLMBadRequest", REPLAY_MISS, BUDGET_EXCEEDED})
# failures that happened after an HTTP request was sent
HTTP_ERROR_TYPES = frozenset(
    {
        "LLMRateLimited",
        "LLMOverloaded",
        "LLMServerError",
        "LLMTimeout",
        "LLMBadRequest",
        "LLMError",
        "LLMAuthError",
        "LLMNotFound",
    }
)
BacktestCacheMode = Literal["record", "replay", "record_replay"]
ReplayMiss = Literal["fail", "rules"]


class LLMBacktestError(SetupError):
    """The LLM backtest cannot go on (the CLI prints it as one line, no traceback)."""


class LLMBacktestReport(Model):
    """What the LLM did in one backtest: calls, cost, cache hits, fallbacks (metrics.json)."""

    model: str
    cache_mode: str
    run_id: str
    run_budget_usd: float | None
    prompt_version: str = PROMPT_VERSION
    decision_bars: int = 0  # bars at which the backtester asked for decisions
    llm_decided: int = 0  # of those, decided by the LLM (fresh or replayed answer)
    api_requests: int = 0  # HTTP requests sent (retries and failed calls included)
    cache_hits: int = 0  # answers replayed from the cache (no request, no cost)
    cost_usd: float = 0.0  # spent by this run (fresh answers, valid or not)
    replayed_cost_usd: float = 0.0  # what the replayed answers cost when recorded
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    fallbacks: dict[str, int] = Field(default_factory=dict)  # rule-policy bars, by LLM error
    rejected_decisions: int = 0  # single decisions dropped by validation
    adds_ignored: int = 0  # ADD decisions: the backtester adds only on the scorer's verdict
    entries_with_plan: int = 0  # BUY / SHORT decisions of Claude's that carried an exit plan
    short_entries: int = 0  # Claude's SHORT decisions (long/short runs only)
    training_cutoff: str | None = None
    before_training_cutoff: bool = False  # the period starts before the model's cutoff
    bars_before_cutoff: int = 0  # decision bars whose market time lies before it


@dataclass(frozen=True)
class CutoffCheck:
    model: str
    cutoff: date | None
    before: bool  # some of the period lies before the cutoff

    def warning(self, start_ms: int) -> str:
        start = datetime.fromtimestamp(start_ms / 1000, tz=UTC).date()
        return (
            f"warning: the backtest period starts {start}, before {self.model}'s training "
            f"cutoff ({self.cutoff}): the model may remember what came next, so its LLM "
            "results on this period are contaminated (look-ahead)"
        )


def check_training_cutoff(
    model: str, start_ms: int, overrides: dict[str, date] | None = None
) -> CutoffCheck:
    """Whether the backtest window begins before the model's training-data cutoff."""
    return CutoffCheck(
        model, training_cutoff(model, overrides), before_cutoff(model, start_ms, overrides)
    )


def new_run_id() -> str:
    """A run id of its own for each backtest, so its budget counts only its own calls."""
    return f"bt-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def backtest_llm_config(
    base: LLMConfig,
    params: BacktestParams,
    symbols: list[str],
    timeframe: str,
    cache_mode: BacktestCacheMode,
    run_id: str,
    run_budget_usd: float | None,
) -> LLMConfig:
    """The engine's LLM settings with the backtest's universe, limits and cache options.

    The system prompt states the backtest's limits (not the live settings'), so a changed
    limit is a different cache key, as live."""
    limits = AgentLimits(
        universe=list(symbols),
        max_position_pct=params.max_position_pct,
        max_exposure=params.max_exposure,
        stop_loss_pct=params.stop_loss_pct,
        trail_activate_pct=params.trail_activate_pct,
        trail_pct=params.trail_pct,
        drawdown_halt_pct=params.drawdown_halt_pct,
        decision_interval=timeframe,
        fee_rate=params.fee_rate,
        exit_plan_required=base.limits.exit_plan_required,  # the engine's setting, as live
        shorts=params.allow_shorts,  # SHORT / COVER offered on a long/short perpetual run
        leverage=max(1, int(params.leverage)),
    )
    return replace(
        base,
        limits=limits,
        cache_mode=CacheMode(cache_mode),
        run_id=run_id,
        run_budget_usd=run_budget_usd,
        daily_budget_usd=None,  # a backtest is bounded by its run budget, not the live day's
    )


class LLMDecisions:
    """``DecisionSource`` backed by Claude; ``attach`` the backtester before it runs.

    Not thread-safe; one instance per run. ``close()`` (or ``with``) releases the HTTP client,
    the event loop and the cache file.
    """

    def __init__(
        self,
        data: BacktestData,
        params: BacktestParams,
        acts: LLMActivities,
        *,
        on_replay_miss: ReplayMiss = "fail",
        max_attempts: int = 3,
        retry_initial_s: float = 2.0,
        retry_max_s: float = 20.0,
        start_ms: int | None = None,
        rule_plans: bool = False,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.data = data
        self.params = params
        self.acts = acts
        self.on_replay_miss = on_replay_miss
        self.max_attempts = max_attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        # a bar the rule policy decides writes its plans only where live it would
        # (Settings.rule_plans_apply); Claude's plans act whenever the run applies plans
        self.rule_plans = rule_plans
        self.rules = RuleDecisions(data, params.default_position_pct, params.max_position_pct)
        cfg = acts.config
        cutoff = training_cutoff(cfg.model, cfg.training_cutoffs)
        self.report = LLMBacktestReport(
            model=cfg.model,
            cache_mode=str(cfg.cache_mode),
            run_id=cfg.run_id,
            run_budget_usd=cfg.run_budget_usd,
            training_cutoff=cutoff.isoformat() if cutoff else None,
            before_training_cutoff=(
                start_ms is not None and before_cutoff(cfg.model, start_ms, cfg.training_cutoffs)
            ),
        )
        self.memory = ""
        self._fallbacks: Counter[str] = Counter()
        self._previous_fallback = False
        self._bt: Backtester | None = None
        self._loop = asyncio.new_event_loop()

    # ------------------------------------------------------------ lifecycle

    def attach(self, backtester: Backtester) -> None:
        """The running backtester, read for cash, positions, equity and trades."""
        self._bt = backtester

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self.acts.aclose())
        finally:
            self._loop.close()
            self.acts.store.close()

    def __enter__(self) -> LLMDecisions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ DecisionSource

    def intents(
        self,
        step: int,
        held: set[str],
        group_weights: dict[str, float] | None = None,
        short: set[str] | None = None,
        plan_params: PositionParams | None = None,
        short_group_weights: dict[str, float] | None = None,
    ) -> dict[str, Intent]:
        """Claude's decisions at ``step``; the rule policy's when the LLM failed this bar.

        ``short`` and ``plan_params`` come from a long/short run and a run that applies exit
        plans (the engine passes them to a source that takes them); the fallback gets them
        as the live rule policy would."""
        if self._bt is None:
            raise RuntimeError("LLMDecisions.attach(backtester) was not called")
        request = self.request(step)
        self.report.decision_bars += 1
        if before_cutoff(
            self.acts.config.model, request.market.as_of_ms, self.acts.config.training_cutoffs
        ):
            self.report.bars_before_cutoff += 1
        decision, failure = self._ask(request)
        if decision is None:
            self._fallbacks[failure] += 1
            self.report.fallbacks = dict(sorted(self._fallbacks.items()))
            self._previous_fallback = True
            return self.rules.intents(
                step,
                held,
                group_weights,
                short=short,
                plan_params=plan_params if self.rule_plans else None,
                short_group_weights=short_group_weights,
            )
        self._previous_fallback = False
        self.report.llm_decided += 1
        self.report.rejected_decisions += len(decision.rejected)
        if decision.memory_update is not None:
            self.memory = decision.memory_update[:MEMORY_MAX_CHARS]
        return self._to_intents(decision)

    # ------------------------------------------------------------ the request

    def request(self, step: int) -> DecideRequest:
        """What the DecisionWorkflow would send at this step's candle close."""
        bt = self._bt
        assert bt is not None
        view = self.rules.view(step)
        t_close = int(self.data.step_close[step])
        reasons = [
            f"candle_close:{s}:{self.data.interval}"
            for s in self.data.symbols
            if int(self.data.index[s][step]) >= 0
        ]
        account = self._account_view(step)
        return DecideRequest(
            account="backtest",
            decision_id=f"{self.acts.config.run_id}-{t_close + 1}",
            market=view,
            account_view=account,
            wake_reasons=reasons,
            memory=self.memory,
            default_position_pct=self.params.default_position_pct,
            max_position_pct=self.params.max_position_pct,
            max_exposure=self.params.max_exposure,
            context=self._context(account, t_close),
            shorts=self.params.allow_shorts,
        )

    def _account_view(self, step: int) -> AccountView:
        bt = self._bt
        assert bt is not None
        positions = []
        for symbol, pos in bt.positions.items():
            price = bt.last_close.get(symbol, pos.avg_entry)
            peak, trough = self._extremes(symbol, pos.entry_time_ms, step)
            positions.append(
                OpenPosition(
                    position_id=pos.pid,
                    workflow_id=f"backtest-{pos.pid}",
                    symbol=symbol,
                    qty=pos.qty,
                    avg_entry=pos.avg_entry,
                    entry_time_ms=pos.entry_time_ms,
                    cost=pos.cost,
                    fees=pos.fees,
                    last_price=price,
                    exit_requested=pos.exit_reason is not None,
                    signal_weights=dict(pos.signal_weights),
                    peak_price=max(peak, price),
                    trough_price=min(trough, price),
                    side=pos.side,
                )
            )
        # gross exposure, and what the positions add to the equity (a short: its collateral
        # plus open PnL), as the engine books them
        gross, value = bt.position_values()
        equity = bt.cash + value
        peak_equity = max(bt.peak_equity, equity)
        return AccountView(
            portfolio_value=equity,
            cash=bt.cash,
            exposure=gross / equity if equity > 0 else 0.0,  # gross, as live
            drawdown=max(0.0, 1.0 - equity / peak_equity) if peak_equity > 0 else 0.0,
            halted=bt.halted,
            positions=positions,
            recent_trades=list(bt.trades[-RECENT_TRADES_SENT:]),
        )

    def _extremes(self, symbol: str, entry_ms: int, step: int) -> tuple[float, float]:
        """Highest high and lowest low from the entry bar to ``step`` (the position's marks)."""
        first = max(0, bisect.bisect_right(self._opens, entry_ms) - 1)
        ohlc = self.data.ohlc_by_step[symbol]
        highs = ohlc["high"][first : step + 1]
        lows = ohlc["low"][first : step + 1]
        if not np.any(~np.isnan(highs)):
            return 0.0, float("inf")
        return float(np.nanmax(highs)), float(np.nanmin(lows))

    @property
    def _opens(self) -> list[int]:
        bt = self._bt
        assert bt is not None
        return bt.opens_ms

    def _context(self, account: AccountView, t_close: int) -> SnapshotContext:
        bt = self._bt
        assert bt is not None
        marks = {
            p.symbol: PositionMark(peak_price=p.peak_price, trough_price=p.trough_price)
            for p in account.positions
        }
        regime = bt.hooks.vol_regime(t_close) if bt.hooks.vol_regime is not None else None
        # as live, the agent is told when the rule policy decided the previous cycle; without
        # the error's text, so that a replay sees the same prompt whatever the failure was
        note = (
            EngineStatus(note="the previous cycle was decided by the rule policy")
            if self._previous_fallback
            else None
        )
        return SnapshotContext(
            crypto_regime=RegimeReading(label=regime) if regime else None,
            engine=note,
            position_marks=marks or None,
            decision_interval=self.data.interval,
            fee_rate=self.params.fee_rate,
        )

    # ------------------------------------------------------------ the call

    def _ask(self, request: DecideRequest) -> tuple[AgentDecision | None, str]:
        """The validated decision, or None and the error type that made this bar fall back."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                decision = self._loop.run_until_complete(self.acts.decide(request, attempt))
            except ApplicationError as err:
                kind = err.type or "LLMError"
                self._count_failure(kind, err)
                if kind in ABORT_TYPES or (kind == REPLAY_MISS and self.on_replay_miss == "fail"):
                    when = datetime.fromtimestamp((request.market.as_of_ms + 1) / 1000, tz=UTC)
                    hint = (
                        " (record it with --llm-cache-mode record_replay, or pass "
                        "--llm-replay-miss rules)"
                        if kind == REPLAY_MISS
                        else ""
                    )
                    raise LLMBacktestError(
                        f"LLM backtest stopped at the bar closing {when:%Y-%m-%d %H:%M}Z: "
                        f"{kind}: {err.message}{hint}"
                    ) from None
                if kind in FINAL_TYPES or err.non_retryable or attempt == self.max_attempts:
                    log.info("bar %s decided by the rule policy: %s", request.decision_id, kind)
                    return None, kind
                time.sleep(self._delay(attempt, err))
                continue
            self._count_answer(decision.llm)
            return decision, ""
        raise AssertionError("unreachable")  # the loop returns or raises

    def _delay(self, attempt: int, err: ApplicationError) -> float:
        if err.next_retry_delay is not None:
            return min(err.next_retry_delay.total_seconds(), self.retry_max_s)
        return min(self.retry_initial_s * 2.0 ** (attempt - 1), self.retry_max_s)

    def _count_answer(self, info: LLMCallInfo | None) -> None:
        if info is None:
            return
        r = self.report
        if info.replayed:
            r.cache_hits += 1
            r.replayed_cost_usd = round(r.replayed_cost_usd + info.recorded_cost_usd, 8)
        else:
            r.api_requests += 1
            r.cost_usd = round(r.cost_usd + info.cost_usd, 8)
        r.input_tokens += info.input_tokens
        r.output_tokens += info.output_tokens
        r.cache_read_tokens += info.cache_read_tokens
        r.cache_write_tokens += info.cache_creation_tokens

    def _count_failure(self, kind: str, err: ApplicationError) -> None:
        if kind == INVALID_ANSWER and err.details:
            detail = err.details[0]
            if isinstance(detail, dict):
                try:
                    self._count_answer(LLMCallInfo.model_validate(detail))
                except ValueError:
                    self.report.api_requests += 1
        elif kind in HTTP_ERROR_TYPES:
            self.report.api_requests += 1

    def _to_intents(self, decision: AgentDecision) -> dict[str, Intent]:
        """The validated decisions as intents: SHORT a BUY on the short side, COVER a SELL,
        each entry with its exit plan (``intent_of``); ADD is not backtested."""
        hold = Intent(Action.HOLD, 0.0, 0.0, {})
        out = {s: hold for s in self.data.symbols}
        for d in decision.decisions:
            if Action(d.action) is Action.ADD:
                self.report.adds_ignored += 1
                continue
            intent = intent_of(d)
            if intent.exit_plan is not None:
                self.report.entries_with_plan += 1
            if Action(d.action) is Action.SHORT:
                self.report.short_entries += 1
            out[d.ticker] = intent
        return out


def open_llm_decisions(
    base: LLMConfig,
    data: BacktestData,
    params: BacktestParams,
    symbols: list[str],
    store_path: Path,
    *,
    cache_mode: BacktestCacheMode,
    run_id: str,
    run_budget_usd: float | None,
    on_replay_miss: ReplayMiss = "fail",
    start_ms: int | None = None,
    max_attempts: int = 3,
    retry_initial_s: float = 2.0,
    rule_plans: bool = False,
) -> LLMDecisions:
    """An ``LLMDecisions`` for one backtest, its cache in ``store_path``; checks credentials
    up front when every bar must be asked (record mode)."""
    if cache_mode == "record" and not llm_configured():
        raise LLMBacktestError(
            "--llm in record mode needs ANTHROPIC_API_KEY, or ANTHROPIC_BASE_URL with "
            "ANTHROPIC_AUTH_TOKEN, in the environment"
        )
    config = backtest_llm_config(
        base, params, symbols, data.interval, cache_mode, run_id, run_budget_usd
    )
    store_path.parent.mkdir(parents=True, exist_ok=True)
    acts = LLMActivities(config, LLMStore(store_path))
    return LLMDecisions(
        data,
        params,
        acts,
        on_replay_miss=on_replay_miss,
        start_ms=start_ms,
        max_attempts=max_attempts,
        retry_initial_s=retry_initial_s,
        rule_plans=rule_plans,
    )
