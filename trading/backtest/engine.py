"""Event-driven backtester over the bars of several symbols (SPEC §10), without Temporal.

It runs the code that trades live: ``rule_policy.decide`` (via ``policy.RuleDecisions``),
``safety.check_safety`` (via ``fills``), ``scorer.score_position``, ``risk.check_order`` (hence
``risk.size_entry``) and ``risk.drawdown_update``, on features equal to ``compute_features``.

One timeline step = one bar of the decision timeframe, in this order:

1. orders decided at the previous close fill at this bar's open ± slippage, fee per side
   (exits first, then entries and adds; a buy never spends more than the cash);
2. the safety layer on the bar's path open → low → high → close (``fills``; a short's
   open → high → low → close), and the liquidation check of positions that have one;
3. funding of perpetual positions for every funding time inside the bar;
4. mark to market at the close, drawdown halt update (``drawdown_update``);
5. the agent layer (scorer) at the close: EXIT → sell at the next open, ADD → a buy of
   ``default_position_pct / 2`` at the next open, sized by ``check_order`` as live;
6. on a decision bar, the rule policy: SELL → exit at the next open, BUY → ``check_order`` at
   the close, filled at the next open.

Positions still open after the last bar are closed at its close ("end_of_test").

Shorts (``allow_shorts``, perpetual runs only; the run refuses to start otherwise). A BUY
intent with side SHORT sells to open at the next open less slippage; an exit (SELL, a stop,
the scorer, the end of the test) buys to cover at the price plus slippage; the fee per side is
a long's. Accounting is margin-free and in notional, as ``trading.safety`` reckons a short's
PnL:

* collateral — opening takes the entry notional ``q·E`` plus the fee out of the cash, as a
  long's purchase does (at 1× a short's margin is its notional), so a short can never spend
  cash the account does not have; an ADD to a short adds its notional the same way and moves
  the average entry ``E`` as a long's ADD does;
* mark — a short is worth ``q·E + (E - P)·q = q·(2E - P)`` at price P (its collateral plus its
  open PnL); equity = cash + Σ long ``q·P`` + Σ short ``q·(2E - P)``;
* cover at fill price X — the cash gets ``q·(2E - X)`` less the fee ``q·X·f``; the trade's
  pnl = that − the cost ``q·E·(1 + f)`` − its funding, i.e. ``q·(E - X) - f·q·(E + X)``
  minus funding, and ``pnl_pct`` = pnl / cost: ``safety.net_pnl_pct(E, X, f, side=SHORT)``
  without funding (the closed trade says ``side="short"``; ``ClosedTrade.side`` defaults to
  long);
* exposure is gross: a short's ``q·P`` counts like a long's in the ``max_exposure`` check of
  ``check_order`` and in the reported exposure;
* funding: ``funding.funding_paid(side, q·close, Σ rates)`` at the bar's close, so a short
  receives a positive rate and pays a negative one.

The safety layer runs mirrored for a short: path open → high → low → close (the adverse
extreme, the high, first; ``fills.intrabar_exit(..., side=SHORT)``), the trail from the
trough. The scorer scores with ``side=``. ``leverage`` does not scale sizes (they stay
``position_pct`` of equity within ``max_exposure`` <= 1, fully collateralised as above): it
sets the isolated liquidation price of ``trading.leverage`` (simplified Binance formula, MMR
``DEFAULT_MMR``). Above 1× an entry whose loss exit is not in front of it by the buffer
(``liquidation_distance_ok``, checked at the decision: the verdict does not depend on the
price) is skipped ("entry: liquidation"). A position with a liquidation price — every short
(about 2× its entry at 1×), a long above 1× — is closed at that price with reason
"liquidation" (fee paid, no slippage, also on a gap through it) when the bar's adverse extreme
reaches it, unless a stop fired before it on the adverse leg; this check runs on every bar,
whatever ``safety_every_bars``. Long-only runs at 1× never see any of this: their numbers are
the same as before shorts existed.

Exit plans (``rule_exit_plans``, off by default; live ``OCW_RULE_EXIT_PLANS`` with
``OCW_EXIT_PLANS``). At a decision the engine passes the position parameters of that moment
(``position_params(trail multiplier)``, as the DecisionWorkflow's ``plan_params``) to a source
that takes ``plan_params`` (the rule policy), and keeps the plan an entry intent carries
(``Intent.exit_plan``, any source). The plan acts as in the PositionWorkflow, the rule policy
having no LLM to ask:

* **stop** — at the fill the position's stop loss becomes ``stop_loss_pct_for(plan, fill price,
  fee, stop_loss_pct, side)`` (never looser than the hard stop), the stop the safety layer
  checks from then on; the liquidation check before a leveraged entry reads it too;
* **price invalidation** (``<SYMBOL>:price``, ``lt`` for a long, ``gt`` for a short; live: every
  safety tick) — on the safety layer's bar path, on its adverse leg (open → low for a long, open
  → high for a short; the only leg that can cross a level against the position first): when the
  leg crosses the level the position exits there (at the open when the bar opened through it),
  less slippage, stamped with the bar's close, reason ``plan_invalidated``. On that leg the
  first level crossed wins; a stop at the same price wins, as live checks the stop first. With
  ``safety_every_bars`` > 1 the close of every Nth bar is checked instead, after the stops;
* **feature invalidation** (``change_pct_1h``, ``volume_z``; live: every agent check on the 1h
  features) — at each agent-layer bar, before the scorer, on the scorer's features of that bar
  (``ret_1h`` and ``volume_z``, as ``exit_plan.plan_features``): it fires an exit at the next
  open (``plan_invalidated``), and the scorer is not asked. With the agent layer off (``agent_
  every_bars`` 0) it is never checked, as live without agent checks;
* **target** — reached when the bar's favourable extreme (or the close, close-only) gets
  there, the position surviving the bar: it is counted (``plan_events["target"]``) and, live
  asking the agent layer at once, the agent layer runs for that position at this bar's close
  if it is on and this is not already one of its bars. Each condition fires once.

The approximation: live sees a tick every 30 s and the 1h features every 3 minutes; here the
price conditions see the bar's path (its extremes, not the order of the ticks inside it) and
the feature conditions the agent layer's bar closes. Runs without ``rule_exit_plans`` never read
any of it: their numbers are the same as before plans existed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from trading.backtest.data import BacktestData
from trading.backtest.fills import (
    buy_price,
    close_only_exit,
    entry_fill,
    exit_fill,
    intrabar_exit,
    sell_price,
)
from trading.backtest.params import BacktestParams
from trading.backtest.policy import DecisionSource, RuleDecisions
from trading.exit_plan import PRICE_METRIC, invalidated, stop_loss_pct_for
from trading.funding import funding_paid
from trading.halt import HaltEpisode, HaltState, lift_text, vol_ratio
from trading.leverage import (
    DEFAULT_MMR,
    liquidation_distance_ok,
    liquidation_price,
    loss_exit_price,
)
from trading.models import Action, ClosedTrade, ExitPlan, PositionParams, PositionSide
from trading.risk import check_order, cooloff_over, drawdown_update
from trading.safety import net_pnl_pct
from trading.scorer import ScorerInputs, score_position

HOUR_MS = 3_600_000
BTC = "BTC/USDT"
CARRIED = "carried over"  # a halt on when the run started (``halt_state``)
LONG = PositionSide.LONG
SHORT = PositionSide.SHORT
PLAN_EXIT = "plan_invalidated"
# the features a plan's invalidation may watch, and the frame column of each (plan_features)
PLAN_FEATURES = (("change_pct_1h", "ret_1h"), ("volume_z", "volume_z"))


class LearnerHook(Protocol):
    """The learner as the backtester uses it: told of every closed trade, asked for weights."""

    def record_trade(self, trade: ClosedTrade, regime: str) -> None: ...

    def group_weights(self, regime: str) -> dict[str, float] | None: ...


MacroProvider = Callable[[int], tuple[float, float]]  # time ms -> (exposure scale, trail mult.)
VolRegimeProvider = Callable[[int], str | None]  # time ms -> crypto vol regime label


@dataclass
class Hooks:
    """Optional providers; None means the live default (no learner, scale 1, no vol regime)."""

    learner: LearnerHook | None = None
    macro: MacroProvider | None = None
    vol_regime: VolRegimeProvider | None = None


@dataclass
class _Position:
    pid: str
    symbol: str
    qty: float
    avg_entry: float
    cost: float
    fees: float
    entry_time_ms: int
    peak: float  # the best price seen: a long's highest, a short's lowest (its trough)
    entry_regime: str
    entry_vol_regime: str | None
    signal_weights: dict[str, float]
    funding: float = 0.0
    exit_reason: str | None = None  # set when an exit is pending for the next open
    add_pending: bool = False
    side: PositionSide = LONG
    liq_price: float | None = None  # isolated liquidation price (perpetual runs)
    plan: ExitPlan | None = None  # the entry's exit plan (runs with ``rule_exit_plans``)
    stop_pct: float | None = None  # the plan's stop as a net loss from the fill
    plan_fired: set[str] = field(default_factory=set)  # "invalidated", "target": once each
    agent_due: bool = False  # the target was reached: the agent layer looks at this close
    plan_params: tuple[PositionParams, PositionParams] | None = None  # (base, with the stop)


@dataclass(frozen=True)
class _PlanHit:
    """A price invalidation on the bar path (duck-types ``fills.StopHit`` for the exit)."""

    price: float
    reason: str
    leg: str


@dataclass
class _Order:
    kind: str  # "entry" | "add"
    symbol: str
    qty: float
    notional: float
    weights: dict[str, float] = field(default_factory=dict)
    regime: str = "unknown"
    side: PositionSide = LONG
    plan: ExitPlan | None = None


@dataclass
class BacktestResult:
    """What a run produced; metrics are computed from it (``metrics.compute_metrics``)."""

    params: BacktestParams
    symbols: list[str]
    interval: str
    times: np.ndarray  # close time (ms) of each step
    equity: np.ndarray
    exposure: np.ndarray  # position value / equity at each close
    trades: list[ClosedTrade]
    closes: dict[str, np.ndarray]  # each symbol's close per step (NaN without a bar)
    first_open: dict[str, float]  # each symbol's open at the first step (benchmarks)
    skipped: Counter = field(default_factory=Counter)  # orders not sent, by reason
    funding_paid: float = 0.0
    fees_paid: float = 0.0
    adds: int = 0  # ADD orders filled (agent layer)
    cooloffs: int = 0  # drawdown halts lifted by the opt-in cool-off
    # (first, last) market close (ms) of each stretch the drawdown halt froze entries; the last
    # one is still on at the end when its end is None
    halt_spans: list[tuple[int, int | None]] = field(default_factory=list)
    liquidations: int = 0  # positions closed at their liquidation price
    # every halt: when, the drawdown and threshold, why, and how it lifted (None: to the end)
    halts: list[HaltEpisode] = field(default_factory=list)
    halt_end: HaltState | None = None  # the halt's state after the last bar (to carry on)
    # exit plans (``rule_exit_plans``): entries with a plan, invalidations by kind, targets
    plan_events: Counter = field(default_factory=Counter)


@dataclass
class _Held:
    """Quiet stretches skipped while holding: cash and quantities per step, marked at the end."""

    mask: np.ndarray
    cash: np.ndarray
    qty: dict[str, np.ndarray]


class Backtester:
    """One run of the rule policy over ``data`` between two times; ``run()`` does it."""

    def __init__(
        self,
        data: BacktestData,
        params: BacktestParams,
        decisions: DecisionSource | None = None,
        hooks: Hooks | None = None,
        skip_quiet: bool = True,
        halt_state: HaltState | None = None,
    ) -> None:
        self.skip_quiet = skip_quiet  # False: visit every bar (tests compare both paths)
        p = params
        self.stops_on = (
            p.stop_loss_pct > 0
            or p.trail_pct > 0
            or p.max_drawdown_guard_pct > 0
            or p.time_stop_hours is not None
        )
        self.data = data
        self.p = params
        self.decisions: DecisionSource = decisions or RuleDecisions(
            data, params.default_position_pct, params.max_position_pct, shorts=params.allow_shorts
        )
        self.hooks = hooks or Hooks()
        self.step_ms = int(data.step_close[0] - data.timeline[0] + 1) if len(data.timeline) else 0
        self.opens_ms, self.closes_ms = data.step_lists
        self.bars = data.bars_by_step  # symbol -> (index, open, high, low, close) per step
        self._index_closes = [(sym, cols[0], cols[4]) for sym, cols in self.bars.items()]
        self._params_cache: dict[float, PositionParams] = {}
        self.cash = params.initial_cash
        self.positions: dict[str, _Position] = {}
        self.orders: list[_Order] = []
        self.trades: list[ClosedTrade] = []
        self.skipped: Counter = Counter()
        self.last_close: dict[str, float] = {}
        self.peak_equity = params.initial_cash
        self.halted = False
        self._marked = math.nan  # equity of the last drawdown_update call
        self._expo = 0.0  # exposure value at the last mark
        self._halted_since: int | None = None  # market time the halt was first marked
        self.cooloffs = 0  # halts lifted by the opt-in cool-off
        self._was_halted = False
        self.halt_spans: list[tuple[int, int | None]] = []
        halt = params.drawdown_halt_pct
        self._halt_valid = math.isfinite(halt) and halt > 0  # drawdown_update's own guard
        self.halt_rule = params.halt_rule()
        self._size_scale = 1.0  # a reduced-size restart's factor on entries
        self._restart_target: float | None = None  # equity at which full size resumes
        self._lift_text: str | None = None  # how the halt that just ended lifted
        self.halts: list[HaltEpisode] = []
        self._vol_ratio = halt_vol_ratios(data) if self.halt_rule.vol_band is not None else None
        if self._vol_ratio is not None:  # the threshold of every step (``halt.threshold``)
            lo, hi = self.halt_rule.vol_band
            r = self._vol_ratio
            scaled = halt * np.minimum(np.maximum(np.nan_to_num(r, nan=1.0), lo), hi)
            self._halt_arr = np.where(np.isnan(r), halt, scaled)
            self._halt_pcts = self._halt_arr.tolist()
        if halt_state is not None:  # carried over from a previous run (chained windows)
            self.peak_equity = halt_state.peak
            self.halted = self._was_halted = halt_state.halted
            self._halted_since = halt_state.halted_since_ms
            self._size_scale = halt_state.size_scale
            self._restart_target = halt_state.restart_target
            if halt_state.halted:  # the episode goes on: its lift is reported here
                self.halt_spans.append((halt_state.halted_since_ms or 0, None))
                self.halts.append(
                    HaltEpisode(
                        start_ms=halt_state.halted_since_ms or 0,
                        drawdown=halt_state.drawdown,
                        threshold=math.nan,
                        peak=halt_state.peak,
                        equity=math.nan,
                        reason=CARRIED,
                    )
                )
        self.fees_paid = 0.0
        self.funding_paid = 0.0
        self.seq: Counter = Counter()
        self.adds = 0
        self.liquidations = 0
        # liquidation prices exist for shorts (any leverage) and for longs above 1x, and only
        # on perpetuals; a long-only 1x run never computes one
        self._liq_on = params.perpetual and (params.allow_shorts or params.leverage > 1.0)
        self._shorts = params.allow_shorts
        self._intents_short_kw = self._shorts and _takes(self.decisions.intents, "short")
        self._plans = params.rule_exit_plans
        self._intents_plan_kw = self._plans and _takes(self.decisions.intents, "plan_params")
        self.plan_events: Counter = Counter()

    # ------------------------------------------------------------ helpers

    def _bar(self, symbol: str, step: int) -> int:
        return self.bars[symbol][0][step]

    def _position_params(self, trail_multiplier: float) -> PositionParams:
        params = self._params_cache.get(trail_multiplier)
        if params is None:
            params = self.p.position_params(trail_multiplier=trail_multiplier)
            self._params_cache[trail_multiplier] = params
        return params

    def _macro(self, time_ms: int) -> tuple[float, float]:
        return self.hooks.macro(time_ms) if self.hooks.macro else (1.0, 1.0)

    def _vol(self, time_ms: int) -> str | None:
        return self.hooks.vol_regime(time_ms) if self.hooks.vol_regime else None

    def _exposure_value(self) -> float:
        """Gross exposure: Σ qty·price over longs and shorts alike (``risk.gross_exposure``)."""
        value = 0.0  # a plain loop: this runs at every visited bar, generators cost more
        last = self.last_close
        for s, p in self.positions.items():
            value += p.qty * last.get(s, p.avg_entry)
        return value

    def position_values(self) -> tuple[float, float]:
        """(gross exposure, what the positions add to the equity): a long's ``q·P``, a short's
        collateral plus open PnL ``q·(2E - P)``. Equal, to the last bit, without shorts."""
        gross = 0.0
        value = 0.0
        last = self.last_close
        for s, p in self.positions.items():
            notional = p.qty * last.get(s, p.avg_entry)
            gross += notional
            if p.side is SHORT:
                value += 2.0 * p.qty * p.avg_entry - notional
            else:
                value += notional
        return gross, value

    def _equity(self) -> float:
        return self.cash + self.position_values()[1]

    # ------------------------------------------------------------ fills

    def _close(self, pos: _Position, price: float, time_ms: int, reason: str) -> None:
        fee = pos.qty * price * self.p.fee_rate
        if pos.side is SHORT:  # the collateral back, plus (entry - price)·qty
            proceeds = pos.qty * (2.0 * pos.avg_entry - price) - fee
        else:
            proceeds = pos.qty * price - fee
        self.cash += proceeds
        self.fees_paid += fee
        pnl = proceeds - pos.cost - pos.funding
        trade = ClosedTrade(
            trade_id=pos.pid,
            symbol=pos.symbol,
            qty=pos.qty,
            entry_price=pos.avg_entry,
            exit_price=price,
            entry_time_ms=pos.entry_time_ms,
            exit_time_ms=time_ms,
            fees=pos.fees + fee,
            pnl=pnl,
            pnl_pct=pnl / pos.cost if pos.cost > 0 else 0.0,
            exit_reason=reason,
            signal_weights=pos.signal_weights,
            side=pos.side,
        )
        self.trades.append(trade)
        del self.positions[pos.symbol]
        if self.hooks.learner is not None:
            # as live: the trade teaches the crypto regime it was opened in
            self.hooks.learner.record_trade(trade, pos.entry_vol_regime or "unknown")

    def _liquidation_price(self, side: PositionSide, entry: float) -> float | None:
        if not self._liq_on:
            return None
        return liquidation_price(side, entry, self.p.leverage, DEFAULT_MMR)

    def _buy(self, order: _Order, open_price: float, time_ms: int) -> None:
        """Fill an entry or add: a long buys, a short sells to open; either way the notional
        and the fee come out of the cash (a short's notional is its collateral)."""
        if order.side is SHORT:
            price = entry_fill(SHORT, open_price, self.p.slippage_bps)
        else:
            price = buy_price(open_price, self.p.slippage_bps)
        qty = min(order.qty, max(self.cash, 0.0) / (price * (1.0 + self.p.fee_rate)))
        pos = self.positions.get(order.symbol)
        if qty <= 0 or qty * price < self.p.min_order_notional:
            self.skipped[f"{order.kind}: no cash at the fill"] += 1
            if order.kind == "add" and pos is not None:
                pos.add_pending = False  # the scorer may ask again
            return
        fee = qty * price * self.p.fee_rate
        self.cash -= qty * price + fee
        self.fees_paid += fee
        if order.kind == "add" and pos is not None:
            new_qty = pos.qty + qty
            pos.avg_entry = (pos.avg_entry * pos.qty + price * qty) / new_qty
            pos.qty = new_qty
            pos.cost += qty * price + fee
            pos.fees += fee
            pos.add_pending = False
            if pos.liq_price is not None:
                pos.liq_price = self._liquidation_price(pos.side, pos.avg_entry)
            self.adds += 1
            return
        self.seq[order.symbol] += 1
        base = order.symbol.split("/")[0]
        self.positions[order.symbol] = _Position(
            pid=f"bt-{base}-{self.seq[order.symbol]}",
            symbol=order.symbol,
            qty=qty,
            avg_entry=price,
            cost=qty * price + fee,
            fees=fee,
            entry_time_ms=time_ms,
            peak=price,
            entry_regime=order.regime,
            entry_vol_regime=self._vol(time_ms),
            signal_weights=order.weights,
            side=order.side,
            liq_price=self._liquidation_price(order.side, price),
        )
        if order.plan is not None:  # as live: the plan's stop, from the fill
            pos = self.positions[order.symbol]
            pos.plan = order.plan
            p = self.p
            pos.stop_pct = stop_loss_pct_for(
                order.plan, price, p.fee_rate, p.stop_loss_pct, order.side
            )
            self.plan_events["entries"] += 1
            self.plan_events["entries: " + order.plan.invalidation.metric.rpartition(":")[2]] += 1

    def _fill_at_open(self, step: int) -> None:
        if not self.orders and not self.positions:
            return
        if not self.orders and not self._exits_pending():
            return  # holding, nothing to fill
        closing = [p for p in self.positions.values() if p.exit_reason]
        t_open = self.opens_ms[step]
        for pos in closing:
            if self._bar(pos.symbol, step) >= 0:
                price = self._exit_fill(pos, self.bars[pos.symbol][1][step])
                self._close(pos, price, t_open, pos.exit_reason)
        waiting: list[_Order] = []
        for order in self.orders:
            if self._bar(order.symbol, step) < 0:
                waiting.append(order)  # no bar for this symbol now: fill at its next open
                continue
            if order.kind == "add" and order.symbol not in self.positions:
                continue  # the position closed before its add filled
            self._buy(order, self.bars[order.symbol][1][step], t_open)
        self.orders = waiting

    def _exit_fill(self, pos: _Position, price: float) -> float:
        if pos.side is SHORT:
            return exit_fill(SHORT, price, self.p.slippage_bps)
        return sell_price(price, self.p.slippage_bps)

    # ------------------------------------------------------------ layers

    def _safety(self, step: int, check_now: bool) -> None:
        if not self.positions or not (self.stops_on or self._liq_on or self._plans):
            return
        t_open = self.opens_ms[step]
        t_close = t_open + self.step_ms
        _, trail_mult = self._macro(t_open)
        params = self._position_params(trail_mult)
        for pos in list(self.positions.values()):
            index, opens, highs, lows, closes = self.bars[pos.symbol]
            if index[step] < 0:
                continue
            hours_open = max(0.0, (t_open - pos.entry_time_ms) / HOUR_MS)
            hours_close = max(0.0, (t_close - pos.entry_time_ms) / HOUR_MS)
            pp = params if pos.stop_pct is None else self._plan_stop_params(pos, params)
            hit = None
            if not self.stops_on:
                pass  # liquidation only
            elif self.p.safety_every_bars == 1:
                hit, pos.peak = intrabar_exit(
                    pos.avg_entry,
                    pos.peak,
                    opens[step],
                    highs[step],
                    lows[step],
                    closes[step],
                    pp,
                    hours_open,
                    hours_close,
                    side=pos.side,
                )
            elif check_now:
                hit, pos.peak = close_only_exit(
                    pos.avg_entry, pos.peak, closes[step], pp, hours_close, side=pos.side
                )
            elif pos.liq_price is None:
                continue
            if pos.plan is not None and (self.p.safety_every_bars == 1 or check_now):
                hit = self._plan_path(pos, step, hit, self.p.safety_every_bars == 1)
            liq = pos.liq_price
            if liq is not None and self._liquidated(pos, liq, highs[step], lows[step], hit):
                self.liquidations += 1
                self._close(pos, liq, t_close, "liquidation")
            elif hit is not None:
                # stamped with the bar's close: the moment the bar (and the exit) is known
                self._close(pos, self._exit_fill(pos, hit.price), t_close, hit.reason)

    def _plan_stop_params(self, pos: _Position, params: PositionParams) -> PositionParams:
        """``params`` with the position's plan stop (made once per parameter set)."""
        got = pos.plan_params
        if got is None or got[0] is not params:
            got = (params, params.model_copy(update={"stop_loss_pct": pos.stop_pct}))
            pos.plan_params = got
        return got[1]

    def _plan_path(self, pos: _Position, step: int, hit, path: bool):
        """The plan's price conditions on this bar (module docstring): the exit that comes
        first, the stop's or the invalidation's; a reached target is marked when the position
        survives the bar. ``path``: the bar's path, else its close only."""
        plan = pos.plan
        assert plan is not None
        _, opens, highs, lows, closes = self.bars[pos.symbol]
        o, high, low, close = opens[step], highs[step], lows[step], closes[step]
        short = pos.side is SHORT
        cond = plan.invalidation
        if "invalidated" not in pos.plan_fired and cond.metric.rpartition(":")[2] == PRICE_METRIC:
            inv = None
            thr = cond.threshold
            if path and cond.operator == ("gt" if short else "lt"):  # on the adverse leg
                if short and high > thr:
                    inv = _PlanHit(max(o, thr), PLAN_EXIT, "high")
                elif not short and low < thr:
                    inv = _PlanHit(min(o, thr), PLAN_EXIT, "low")
            elif invalidated(plan, close, None):
                inv = _PlanHit(close, PLAN_EXIT, "close")
            if inv is not None:
                first = inv
                if hit is not None and hit.leg == inv.leg:
                    # the same leg: the first level crossed; a tie (and the close) to the stop,
                    # which live checks first
                    stop_first = hit.price <= inv.price if short else hit.price >= inv.price
                    if inv.leg == "close" or stop_first:
                        first = hit
                # a stop on the path's last leg (high/low → close) comes after the adverse leg
                if first is inv:
                    pos.plan_fired.add("invalidated")
                    self.plan_events["invalidated: price"] += 1
                return first
        if hit is None and "target" not in pos.plan_fired:
            if path:
                reached = low <= plan.target_price if short else high >= plan.target_price
            else:
                reached = close <= plan.target_price if short else close >= plan.target_price
            if reached:
                pos.plan_fired.add("target")
                pos.agent_due = True  # live asks the agent layer at once
                self.plan_events["target"] += 1
        return hit

    def _feature_invalidated(self, pos: _Position, frame, j: int) -> bool:
        """The plan's feature invalidation on the agent layer's features (the values of
        ``exit_plan.plan_features``); fires once."""
        plan = pos.plan
        if plan is None or "invalidated" in pos.plan_fired:
            return False
        if plan.invalidation.metric.rpartition(":")[2] == PRICE_METRIC:
            return False  # the safety layer's
        features = {}
        for name, column in PLAN_FEATURES:
            v = frame.value(column, j)
            if v is not None:
                features[name] = v
        if not invalidated(plan, None, features):
            return False
        pos.plan_fired.add("invalidated")
        self.plan_events["invalidated: feature"] += 1
        return True

    @staticmethod
    def _liquidated(pos: _Position, liq: float, high: float, low: float, hit) -> bool:
        """Whether the bar's adverse extreme reached the liquidation price before a stop: the
        adverse leg (open → low for a long, open → high for a short) is the only part of the
        path that can reach it, so a stop wins only on that leg and in front of the price."""
        if pos.side is SHORT:
            if high < liq:
                return False
            return not (hit is not None and hit.leg == "high" and hit.price < liq)
        if low > liq:
            return False
        return not (hit is not None and hit.leg == "low" and hit.price > liq)

    def _funding(self, step: int) -> None:
        if not self.p.perpetual or not self.positions:
            return
        t_open = self.opens_ms[step]
        for pos in self.positions.values():
            series = self.data.funding.get(pos.symbol)
            i = self._bar(pos.symbol, step)
            if series is None or i < 0:
                continue
            times, rates = series
            lo = int(np.searchsorted(times, t_open, "left"))
            hi = int(np.searchsorted(times, t_open + self.step_ms, "left"))
            if hi > lo:
                # a long pays rate x position value at each funding time inside the bar, a
                # short receives it (``funding_paid``: negative when received)
                value = pos.qty * self.bars[pos.symbol][4][step]
                if pos.side is SHORT:
                    paid = funding_paid(SHORT, value, float(np.sum(rates[lo:hi])))
                else:
                    paid = value * float(np.sum(rates[lo:hi]))
                pos.funding += paid
                self.cash -= paid
                self.funding_paid += paid

    def _mark(self, step: int) -> float:
        last = self.last_close
        for s, index, closes in self._index_closes:
            if index[step] >= 0:
                last[s] = closes[step]
        self._expo, value = self.position_values()
        equity = self.cash + value
        if self._restart_target is not None and equity >= self._restart_target:
            self._size_scale, self._restart_target = 1.0, None  # a reduced restart recovered
        halt = self.p.drawdown_halt_pct if self._vol_ratio is None else self._halt_pcts[step]
        reason = None
        if equity == self._marked and self._vol_ratio is None:
            pass  # same reading again: drawdown_update would return the same state
        elif not self.halted and self.peak_equity <= equity < math.inf and self._halt_valid:
            # a new high while trading: drawdown_update's answer is (equity, not halted)
            self.peak_equity = equity
            self._marked = equity
        else:
            dd = drawdown_update(self.peak_equity, equity, halt, self.halted)
            self.peak_equity, self.halted = dd.peak, dd.halted
            self._marked = equity
            reason = dd.reason
        if self.halted:
            self._halt_clock(step, equity)
        else:
            self._halted_since = None
        if self.halted != self._was_halted:  # a halt begins or ends: for the report
            if self._lift_text is not None:
                reason, self._lift_text = self._lift_text, None
            drawdown = 1.0 - equity / self.peak_equity if self.peak_equity > 0 else 0.0
            self._halt_change(step, drawdown, halt, reason or "", self.peak_equity, equity)
        return equity

    def _halt_clock(self, step: int, equity: float) -> None:
        """The opt-in cool-off (``drawdown_cooloff_hours``), counted from the first mark that
        saw the halt, on market time as live; when over, the drawdown restarts from here, at
        reduced size until the equity recovers when the run has a reduced-size restart."""
        now = self.closes_ms[step]
        if self._halted_since is None:
            self._halted_since = now
        elif cooloff_over(self._halted_since, now, self.p.drawdown_cooloff_hours):
            self.halted, self._halted_since = False, None
            self.peak_equity, self._marked = equity, equity
            self.cooloffs += 1
            self._lift_text = lift_text(self.halt_rule, equity)
            if self.halt_rule.reduces:
                self._size_scale = self.halt_rule.restart_scale
                self._restart_target = equity * (1.0 + self.halt_rule.restart_recover_pct)

    def _scorer_features(self, symbol: str, step: int):
        sf = self.data.scorer_frames[symbol]
        j = int(self.data.scorer_index[symbol][step])
        t_close = self.closes_ms[step]
        if j >= 0 and t_close - int(sf.close_time[j]) < self.step_ms:
            return sf, j
        i = self._bar(symbol, step)
        return (self.data.frames[symbol], i) if i >= 0 else (None, -1)

    def _agent(self, step: int, equity: float, due_only: bool = False) -> None:
        """The agent layer at this close: every position, or (``due_only``) those whose plan
        target was reached on this bar (live asks at once)."""
        if not self.positions:
            return
        t_close = self.closes_ms[step]
        vol_now = self._vol(t_close)
        btc_ret = None
        if BTC in self.data.symbols:
            btc_frame, btc_i = self._scorer_features(BTC, step)
            btc_ret = btc_frame.value("ret_1h", btc_i) if btc_frame is not None else None
        for pos in list(self.positions.values()):
            if pos.exit_reason or self._bar(pos.symbol, step) < 0:
                continue
            if due_only and not pos.agent_due:
                continue
            pos.agent_due = False
            frame, j = self._scorer_features(pos.symbol, step)
            if frame is None:
                continue
            if pos.plan is not None and self._feature_invalidated(pos, frame, j):
                pos.exit_reason = PLAN_EXIT  # live: before the scorer, which is not asked
                continue
            price = self.last_close[pos.symbol]
            side = pos.side
            best = min(pos.peak, price) if side is SHORT else max(pos.peak, price)
            inputs = ScorerInputs(
                pnl_pct=net_pnl_pct(pos.avg_entry, price, self.p.fee_rate, side=side),
                peak_pnl_pct=net_pnl_pct(pos.avg_entry, best, self.p.fee_rate, side=side),
                hours_held=max(0.0, (t_close + 1 - pos.entry_time_ms) / HOUR_MS),
                entry_regime=pos.entry_regime,
                current_regime=frame.regime(j),
                entry_vol_regime=pos.entry_vol_regime,
                current_vol_regime=vol_now,
                momentum14=frame.value("momentum14", j),
                rsi14=frame.value("rsi14", j),
                btc_ret_1h=btc_ret,
                symbol_ret_1h=frame.value("ret_1h", j),
                is_btc=pos.symbol == BTC,
            )
            verdict = score_position(inputs, self.p.exit_score, self.p.add_score, side=side).verdict
            if verdict == "EXIT":
                pos.exit_reason = "agent_exit"
            elif verdict == "ADD" and not pos.add_pending:
                pct = self.p.default_position_pct / 2
                self._queue_buy("add", pos.symbol, pct, equity, t_close, {}, "", side)

    def _pending_notional(self) -> float:
        return sum(o.notional for o in self.orders)

    def _queue_buy(
        self,
        kind: str,
        symbol: str,
        pct: float,
        equity: float,
        time_ms: int,
        weights: dict[str, float],
        regime: str,
        side: PositionSide = LONG,
        plan: ExitPlan | None = None,
    ) -> None:
        price = self.last_close[symbol]
        pos = self.positions.get(symbol)
        if kind == "entry" and self._liq_on and self.p.leverage > 1.0:
            # the stop must fire in front of liquidation; the verdict is the same at any entry
            # price (every level scales with it), so the last close stands in for the fill
            pp = self._position_params(1.0)
            if plan is not None:  # as live: the plan's stop from the decision's price
                stop_pct = stop_loss_pct_for(plan, price, pp.fee_rate, pp.stop_loss_pct, side)
                pp = pp.model_copy(update={"stop_loss_pct": stop_pct})
            stop = loss_exit_price(side, price, pp)
            ok, _ = liquidation_distance_ok(side, price, stop, self.p.leverage, DEFAULT_MMR)
            if not ok:
                self.skipped[f"{kind}: liquidation"] += 1
                return
        pending = self._pending_notional()  # entries and adds waiting for the next open
        scale, _ = self._macro(time_ms)
        if self._size_scale != 1.0:  # a reduced-size restart after a drawdown halt
            scale = scale * self._size_scale
        verdict = check_order(
            action="ADD" if kind == "add" else "BUY",
            symbol=symbol,
            position_pct=pct,
            price=price,
            portfolio_value=equity,
            cash=self.cash - pending * (1.0 + self.p.fee_rate),
            exposure_value=self._exposure_value() + pending,
            position_qty=pos.qty if pos is not None else 0.0,
            halted=self.halted,
            max_position_pct=self.p.max_position_pct,
            max_exposure=self.p.max_exposure,
            min_notional=self.p.min_order_notional,
            macro_scale=scale,
            fee_rate=self.p.fee_rate,
            side=side,
        )
        if not verdict.approved:
            self.skipped[f"{kind}: {(verdict.reason or 'rejected').split(':')[0]}"] += 1
            return
        self.orders.append(
            _Order(kind, symbol, verdict.qty, verdict.notional, weights, regime, side, plan)
        )
        if pos is not None and kind == "add":
            pos.add_pending = True

    def _decide(self, step: int, equity: float) -> None:
        t_close = self.closes_ms[step]
        held = set(self.positions)
        for o in self.orders:
            if o.kind == "entry":
                held.add(o.symbol)
        weights = None
        if self.hooks.learner is not None:
            weights = self.hooks.learner.group_weights(self._vol(t_close) or "unknown")
        kwargs: dict = {}
        if self._intents_short_kw:
            short = {s for s, p in self.positions.items() if p.side is SHORT}
            short.update(o.symbol for o in self.orders if o.kind == "entry" and o.side is SHORT)
            kwargs["short"] = short
            if self.hooks.learner is not None and _takes(
                self.decisions.intents, "short_group_weights"
            ):  # as live: the learner's weights from shorts size a short
                kwargs["short_group_weights"] = self.hooks.learner.group_weights(
                    self._vol(t_close) or "unknown", side=SHORT
                )
        if self._intents_plan_kw:  # as live: the position parameters at the decision
            kwargs["plan_params"] = self._position_params(self._macro(t_close)[1])
        if kwargs:
            intents = self.decisions.intents(step, held, weights, **kwargs)
        else:
            intents = self.decisions.intents(step, held, weights)
        for symbol, intent in intents.items():
            if intent.action is Action.SELL:
                pos = self.positions.get(symbol)
                if pos is not None and not pos.exit_reason:  # a short's SELL is its COVER
                    pos.exit_reason = "decision_cover" if pos.side is SHORT else "decision_sell"
            elif intent.action is Action.BUY and symbol not in held:
                i = self._bar(symbol, step)
                if i < 0:
                    continue
                side = intent.side
                if side is not LONG and side is not SHORT:
                    side = PositionSide(side)  # a plain "long"/"short"
                if side is SHORT and not self._shorts:
                    self.skipped["entry: shorts not allowed"] += 1
                    continue
                # as live: the symbol regime of the decision view the BUY came from
                regime = (
                    self.data.frames[symbol].regime(i)
                    if self.p.record_entry_regime
                    else ("unknown")
                )
                self._queue_buy(
                    "entry",
                    symbol,
                    intent.position_pct,
                    equity,
                    t_close,
                    intent.signal_weights,
                    regime,
                    side,
                    intent.exit_plan if self._plans else None,
                )

    def _is_every(self, step: int, every: int) -> bool:
        if every == 1:
            return True
        if every <= 0:
            return False
        t_close = self.closes_ms[step] + 1
        return (t_close // self.step_ms) % every == 0

    # ------------------------------------------------------------ event skipping

    def _agent_due(self) -> bool:
        return any(p.agent_due for p in self.positions.values())

    def _exits_pending(self) -> bool:
        for p in self.positions.values():  # noqa: SIM110 - per-bar path: no generator
            if p.exit_reason:
                return True
        return False

    def _needs_every_bar(self) -> bool:
        """Whether an open position needs every bar (stops, scorer, funding). Always so on a
        perpetual run, hence for every short and every liquidation price: the quiet-stretch
        shortcuts (``_quiet``, ``_held_equity``, ``_fill_held``) only ever see longs."""
        return (
            self.stops_on
            or self.p.agent_every_bars > 0
            or self.p.perpetual
            or self.p.rule_exit_plans
        )

    def _event_steps(self, t0: int, t1: int, flat: bool) -> list[int]:
        """Decision steps in ``[t0, t1)`` at which the policy may BUY (``flat``) or BUY or
        SELL; all decision steps when the decision source cannot tell."""
        steps = np.arange(t0, t1)
        every = self.p.decision_every_bars
        cadence = ((self.data.step_close[t0:t1] + 1) // self.step_ms) % every == 0
        steps = steps[cadence]
        active = getattr(self.decisions, "active_steps", None)
        if active is not None and self.hooks.learner is None:
            if not self._shorts:
                steps = steps[np.asarray(active(steps, flat), dtype=bool)]
            elif _takes(active, "shorts"):  # a source that knows short entries and covers
                steps = steps[np.asarray(active(steps, flat, shorts=True), dtype=bool)]
        return steps.tolist()

    def _next_event(self, step: int, t1: int, cursors: dict[bool, list]) -> int:
        """The next step that must be visited when nothing is pending after ``step``."""
        flat = not self.positions
        events, pos = cursors[flat]
        while pos < len(events) and events[pos] <= step:
            pos += 1
        cursors[flat][1] = pos
        nxt = min(events[pos] if pos < len(events) else t1 - 1, t1 - 1)
        if not self.halted:
            return nxt
        hours = self.p.drawdown_cooloff_hours
        if hours is None or self._halted_since is None:
            # flat and halted the equity cannot move: only a cool-off can lift the halt (or a
            # vol-scaled threshold, which ``_halt_stretch`` watches)
            return t1 - 1 if flat else nxt
        # the bar the cool-off lifts the halt: visited, so that the lift (and, holding, the
        # peak re-based there) falls on it as bar by bar; flat, nothing can trade before it
        resume_ms = self._halted_since + hours * 3_600_000
        lift = int(np.searchsorted(self.data.step_close, resume_ms, "left"))
        return max(min(t1 - 1 if flat else nxt, lift), step + 1)

    def _quiet(self, a: int, b: int, t0: int, equity: np.ndarray, exposure: np.ndarray) -> int:
        """Bars ``a .. b-1`` where nothing trades: mark them in one go; returns the step after
        the last bar marked (``b``, or less when the halt changed inside the stretch).

        Flat, the equity is the cash and the drawdown cannot change (a vol-scaled threshold
        can: ``_halt_stretch``). Holding without stops or scorer, the equity moves with the
        closes: the peak takes its maximum, and where a bar-by-bar ``drawdown_update`` would
        start or lift the halt, the stretch ends at that bar with the change made there, so
        every halt starts and ends (and its cool-off clock runs) on the bar it would bar by
        bar. The equity and exposure of held stretches are written once at the end of the run
        (``_fill_held``).
        """
        b = self._halt_stretch(a, b)
        if not self.positions:
            equity[a - t0 : b - t0] = self.cash
            exposure[a - t0 : b - t0] = 0.0
            return b
        held = self._held
        held.cash[a - t0 : b - t0] = self.cash
        held.mask[a - t0 : b - t0] = True
        for pos in self.positions.values():
            held.qty[pos.symbol][a - t0 : b - t0] = pos.qty
        if len(self.positions) == 1:
            pos = next(iter(self.positions.values()))
            _, hi_close = self.data.close_range(pos.symbol, a, b)
            high = self.cash + pos.qty * hi_close
        else:
            high = float(self._held_equity(a, b).max())
        self.peak_equity = max(self.peak_equity, high)
        if self._restart_target is not None and high >= self._restart_target:
            self._size_scale, self._restart_target = 1.0, None  # monotone: the max decides
        self._marked = math.nan
        ffill = self.data.close_ffill
        for s in self.positions:
            self.last_close[s] = float(ffill[s][b - 1])
        return b

    def _halt_stretch(self, a: int, b: int) -> int:
        """The first bar of ``a .. b-1`` where the halt would start or lift, bar by bar: the
        change is made there and the stretch ends after it. Returns the stretch's new end."""
        halt = self.p.drawdown_halt_pct
        halts = None if self._vol_ratio is None else self._halt_arr[a:b]
        if not self.positions:
            if halts is None:
                return b  # nothing moves
            eq = np.full(b - a, self.cash)
            low = high = self.cash
        elif len(self.positions) == 1:
            eq = None
            pos = next(iter(self.positions.values()))
            lo_close, hi_close = self.data.close_range(pos.symbol, a, b)
            low, high = self.cash + pos.qty * lo_close, self.cash + pos.qty * hi_close
        else:
            eq = self._held_equity(a, b)
            low, high = float(eq.min()), float(eq.max())
        peak_end = max(self.peak_equity, high)
        lowest = halt if halts is None else float(halts.min())
        # no bar can be deeper than the lowest equity under the highest peak: usually the halt
        # cannot start, and the bar-by-bar drawdowns are not needed
        if not self.halted and 1.0 - low / peak_end < lowest - 1e-12:
            return b
        if eq is None:
            eq = self._held_equity(a, b)
        peaks = np.maximum(np.maximum.accumulate(eq), self.peak_equity)
        dd = 1.0 - eq / peaks
        lim = halt if halts is None else halts
        hits = np.flatnonzero(dd < lim / 2) if self.halted else np.flatnonzero(dd >= lim)
        if not len(hits):
            return b
        c = int(hits[0])
        before = float(peaks[c - 1]) if c > 0 else self.peak_equity
        at = halt if halts is None else float(halts[c])
        state = drawdown_update(before, float(eq[c]), at, self.halted)
        self.halted = state.halted
        self.peak_equity = state.peak
        if self.halted:
            self._halted_since = self.closes_ms[a + c]
        else:
            self._halted_since = None
        self._halt_change(a + c, state.drawdown, at, state.reason or "", state.peak, float(eq[c]))
        return a + c + 1

    def _halt_change(
        self,
        step: int,
        drawdown: float,
        halt_pct: float,
        reason: str,
        peak: float | None = None,
        equity: float | None = None,
    ) -> None:
        """The halt began or ended at ``step``'s close: for the report (``halts``)."""
        at = int(self.closes_ms[step])
        if self.halted:
            self.halt_spans.append((at, None))
            self.halts.append(
                HaltEpisode(
                    start_ms=at,
                    drawdown=drawdown,
                    threshold=halt_pct,
                    peak=self.peak_equity if peak is None else peak,
                    equity=math.nan if equity is None else equity,
                    reason=reason,
                )
            )
        else:
            if self.halt_spans:
                self.halt_spans[-1] = (self.halt_spans[-1][0], at)
            if self.halts:
                self.halts[-1] = dataclasses.replace(self.halts[-1], end_ms=at, lifted_by=reason)
        self._was_halted = self.halted

    def _held_equity(self, a: int, b: int) -> np.ndarray:
        """Equity over steps ``a .. b-1`` with the current cash and positions."""
        ffill = self.data.close_ffill
        value = None
        for pos in self.positions.values():
            part = pos.qty * ffill[pos.symbol][a:b]
            value = part if value is None else value + part
        return self.cash + value

    def _fill_held(self, t0: int, t1: int, equity: np.ndarray, exposure: np.ndarray) -> None:
        """Equity and exposure of every held quiet stretch, in one vectorised pass: the same
        ``cash + Σ qty·close`` and ``value / equity`` a bar-by-bar mark computes."""
        held = self._held
        idx = np.flatnonzero(held.mask)
        if not len(idx):
            return
        ffill = self.data.close_ffill
        value = np.zeros(len(idx))
        for s, qty in held.qty.items():
            q = qty[idx]
            if q.any():
                value = value + q * ffill[s][t0 + idx]
        eq = held.cash[idx] + value
        equity[idx] = eq
        exposure[idx] = np.divide(value, eq, out=np.zeros_like(eq), where=eq > 0)

    # ------------------------------------------------------------ run

    def run(
        self,
        start_ms: int | None = None,
        end_ms: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> BacktestResult:
        """Trade the bars opening in ``[start_ms, end_ms)``; earlier bars are warm-up only."""
        if self.p.allow_shorts and not self.p.perpetual:
            raise ValueError(
                "allow_shorts needs perpetual=True: shorts exist on USDⓈ-M perpetuals only, "
                "a spot run cannot sell what it does not hold"
            )
        if self.p.leverage > 1.0 and not self.p.perpetual:
            raise ValueError(f"leverage {self.p.leverage:g}x needs perpetual=True (spot is 1x)")
        t0, t1 = self.data.steps_between(start_ms, end_ms)
        if t1 <= t0:
            raise ValueError("no bars in the backtest window")
        n = t1 - t0
        equity = np.empty(n)
        exposure = np.empty(n)
        self._held = _Held(
            mask=np.zeros(n, dtype=bool),
            cash=np.zeros(n),
            qty={sym: np.zeros(n) for sym in self.data.symbols},
        )
        closes = {s: self.data.ohlc_by_step[s]["close"][t0:t1].copy() for s in self.data.symbols}
        first_open: dict[str, float] = {}
        for s in self.data.symbols:
            opens = self.data.ohlc_by_step[s]["open"][t0:t1]
            present = np.flatnonzero(~np.isnan(opens))
            if len(present):
                first_open[s] = float(opens[present[0]])
        cursors = {
            True: [self._event_steps(t0, t1, flat=True), 0],
            False: [self._event_steps(t0, t1, flat=False), 0],
        }
        active = set(cursors[False][0])  # decision steps where the policy may act at all
        per_bar = self._needs_every_bar()
        agent_every = self.p.agent_every_bars
        step = t0
        while step < t1:
            k = step - t0
            if self.orders or self.positions:
                self._fill_at_open(step)
                if self.positions and (self.stops_on or self._liq_on or self._plans):
                    self._safety(step, self._is_every(step, self.p.safety_every_bars))
                if self.positions and self.p.perpetual:
                    self._funding(step)
            eq = self._mark(step)
            last = step == t1 - 1
            if not last and agent_every and self.positions and self._is_every(step, agent_every):
                self._agent(step, eq)
            elif not last and agent_every and self._plans and self._agent_due():
                self._agent(step, eq, due_only=True)  # a plan's target reached on this bar
            if not last and step in active:  # ``active`` holds decision-cadence steps only
                self._decide(step, eq)
            if last and self.p.close_at_end:
                t_close = self.closes_ms[step]
                for pos in list(self.positions.values()):
                    price = self._exit_fill(pos, self.last_close[pos.symbol])
                    self._close(pos, price, t_close, "end_of_test")
                self.orders = []
                eq = self._equity()
                self._expo = self._exposure_value()
            equity[k] = eq
            exposure[k] = self._expo / eq if self.positions and eq > 0 else 0.0
            nxt = step + 1
            quiet = not self.orders and (not self.positions or not per_bar)
            if self.skip_quiet and not last and quiet and not self._exits_pending():
                # nothing can happen before the next bar where the policy may act
                nxt = self._next_event(step, t1, cursors)
                if nxt > step + 1:
                    nxt = self._quiet(step + 1, nxt, t0, equity, exposure)
            if progress is not None:
                progress(nxt - step)
            step = nxt
        self._fill_held(t0, t1, equity, exposure)
        return BacktestResult(
            params=self.p,
            symbols=list(self.data.symbols),
            interval=self.data.interval,
            times=self.data.step_close[t0:t1].copy(),
            equity=equity,
            exposure=exposure,
            trades=list(self.trades),
            closes=closes,
            first_open=first_open,
            skipped=self.skipped,
            funding_paid=self.funding_paid,
            fees_paid=self.fees_paid,
            adds=self.adds,
            cooloffs=self.cooloffs,
            halt_spans=list(self.halt_spans),
            liquidations=self.liquidations,
            halts=list(self.halts),
            plan_events=Counter(self.plan_events),
            halt_end=HaltState(
                peak=self.peak_equity,
                drawdown=max(0.0, 1.0 - float(equity[-1]) / self.peak_equity)
                if self.peak_equity > 0
                else 0.0,
                halted=self.halted,
                halted_since_ms=self._halted_since,
                size_scale=self._size_scale,
                restart_target=self._restart_target,
            ),
        )


def halt_vol_ratios(data: BacktestData) -> np.ndarray:
    """``halt.vol_ratio`` at every step: the regime symbol's (BTC/USDT, else the first
    symbol's) daily closes (the last close of each UTC day) of the completed days before the
    step's day; NaN where there are too few. Computed once per data set."""
    cache = data.__dict__.setdefault("_halt_vol_ratios", {})
    symbol = BTC if BTC in data.symbols else data.symbols[0]
    got = cache.get(symbol)
    if got is not None:
        return got
    close = data.close_ffill[symbol]
    days = np.asarray(data.step_close, dtype=np.int64) // 86_400_000
    last = np.append(np.flatnonzero(np.diff(days)), len(days) - 1)
    daily = close[last].tolist()
    keep = 366
    by_day = [vol_ratio(daily[max(0, k - keep) : k]) for k in range(len(daily))]
    ratios = np.array([math.nan if r is None else r for r in by_day])
    got = ratios[np.searchsorted(days[last], days)]
    cache[symbol] = got
    return got


def _takes(method, name: str) -> bool:
    """Whether ``method`` accepts the keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def run_backtest(
    data: BacktestData,
    params: BacktestParams,
    start_ms: int | None = None,
    end_ms: int | None = None,
    decisions: DecisionSource | None = None,
    hooks: Hooks | None = None,
    progress: Callable[[int], None] | None = None,
    halt_state: HaltState | None = None,
) -> BacktestResult:
    """One backtest of the rule policy (see the module docstring for the bar order);
    ``halt_state`` carries a previous run's drawdown halt on (``BacktestResult.halt_end``)."""
    if not math.isfinite(params.initial_cash):
        raise ValueError("initial cash must be finite")
    bt = Backtester(data, params, decisions, hooks, halt_state=halt_state)
    return bt.run(start_ms, end_ms, progress)
