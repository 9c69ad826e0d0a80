"""The rule policy in the backtester: the live ``rule_policy.decide``, memoised per bar.

``decide`` treats symbols independently and depends on the holdings only through "BUY while
held → HOLD" and "SELL while flat → HOLD". So per bar it is called twice, once as if nothing
were held and once as if everything were; the decision of each symbol is then picked by whether
it is held. That is exactly what one live call returns, and it depends on no run parameter but
``(position_pct, max_position_pct)``: a grid of parameter sets shares one memo.

With learner group weights (when ``decide`` accepts them) the memo is bypassed: weights change
with every closed trade, so each decision bar calls ``decide`` afresh.

With ``shorts`` (a perpetual run with ``allow_shorts``) ``decide`` runs with its mirrored trend
rules and a third memo, as if every symbol were held short: the live SHORT becomes a BUY
intent with side SHORT, the live COVER a SELL intent (the engine closes whatever is held).

With ``plan_params`` (a run with ``rule_exit_plans``: the engine passes the position parameters
at the decision, as the live DecisionWorkflow does) the entries carry the rule policy's exit
plan: ``decide(..., plan_params=...)`` as if flat, memoised per step and per the three fields
``rule_plan`` reads (``stop_loss_pct``, ``trail_activate_pct``, ``fee_rate``), and called only
at steps where some flat symbol enters. Only an entry carries a plan and the rest of a decision
does not depend on it, so every other intent is the plan-less memo's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trading.backtest.data import BacktestData
from trading.models import Action, ExitPlan, MarketView, PositionParams, PositionSide
from trading.rule_policy import decide


@dataclass(frozen=True)
class Intent:
    """The parts of a live ``TradeDecision`` the backtester acts on.

    ``side`` is the direction of the position a BUY opens: BUY with ``PositionSide.SHORT``
    sells to open a short (runs with ``allow_shorts`` only; elsewhere the engine skips it).
    SELL closes whatever is held, long or short (a short's cover is a buy); its side is not
    read. Long by default: every intent made before shorts means what it meant.

    ``exit_plan``: the entry's exit plan (the live ``TradeDecision.exit_plan``), applied by a
    run with ``rule_exit_plans`` only; None elsewhere and for every other action.
    """

    action: Action
    position_pct: float
    confidence: float
    signal_weights: dict[str, float]
    side: PositionSide = PositionSide.LONG
    exit_plan: ExitPlan | None = None


class DecisionSource(Protocol):
    """What the engine asks at a decision bar: one intent per symbol, given the holdings.

    In a run with ``allow_shorts`` the engine also passes ``short=`` (the held symbols that are
    short, a subset of ``held``) to a source whose ``intents`` takes that keyword, and
    ``shorts=True`` to its ``active_steps`` when that takes it (a source whose
    ``active_steps`` does not is asked at every decision step of such a run). Long-only runs
    call both exactly as before.
    """

    def intents(
        self, step: int, held: set[str], group_weights: dict[str, float] | None = None
    ) -> dict[str, Intent]: ...


def intent_of(d) -> Intent:
    """A live decision as the backtester's intent: SHORT is a BUY with side SHORT, COVER a
    SELL (whatever is held closes); the rest as they are."""
    action, side = d.action, PositionSide.LONG
    if action is Action.SHORT:
        action, side = Action.BUY, PositionSide.SHORT
    elif action is Action.COVER:
        action = Action.SELL
    plan = getattr(d, "exit_plan", None)
    return Intent(action, d.position_pct, d.confidence, dict(d.signal_weights), side, plan)


def plan_key(p: PositionParams) -> tuple[float, float, float]:
    """What of the position parameters a rule plan depends on (``exit_plan.rule_plan``)."""
    return (p.stop_loss_pct, p.trail_activate_pct, p.fee_rate)


def decide_accepts_group_weights() -> bool:
    return "group_weights" in inspect.signature(decide).parameters


class RuleDecisions:
    """``decide`` at each timeline step, memoised; ``intents(step, held)`` mirrors one call."""

    def __init__(
        self,
        data: BacktestData,
        position_pct: float,
        max_position_pct: float,
        shorts: bool = False,
    ) -> None:
        self.data = data
        self.position_pct = position_pct
        self.max_position_pct = max_position_pct
        self.shorts = shorts
        self._memo: dict[int, tuple[dict[str, Intent], dict[str, Intent]]] = {}
        self._short_memo: dict[int, dict[str, Intent]] = {}
        self._plan_memo: dict[tuple[int, tuple[float, float, float]], dict[str, Intent]] = {}

    def view(self, step: int) -> MarketView:
        symbols = {}
        missing = []
        for s in self.data.symbols:
            i = int(self.data.index[s][step])
            if i < 0:
                missing.append(s)
            else:
                symbols[s] = self.data.frames[s].features(i)
        as_of = max((f.time_ms for f in symbols.values()), default=0)
        return MarketView(as_of_ms=as_of, symbols=symbols, missing=missing)

    def _call(
        self,
        view: MarketView,
        held: set[str],
        group_weights: dict[str, float] | None,
        short_held: set[str] | None = None,
        plan_params: PositionParams | None = None,
        short_group_weights: dict[str, float] | None = None,
    ) -> dict[str, Intent]:
        kwargs: dict = {}
        if group_weights is not None:
            kwargs["group_weights"] = group_weights
        if short_group_weights is not None:
            kwargs["short_group_weights"] = short_group_weights
        if plan_params is not None:
            kwargs["plan_params"] = plan_params
        if self.shorts:
            kwargs["shorts"] = True
            kwargs["short_held"] = short_held or set()
        answer = decide(
            view,
            held,
            position_pct=self.position_pct,
            max_position_pct=self.max_position_pct,
            **kwargs,
        )
        return {d.ticker: intent_of(d) for d in answer.decisions}

    def both(self, step: int) -> tuple[dict[str, Intent], dict[str, Intent]]:
        """(as if flat, as if holding everything) at ``step``."""
        got = self._memo.get(step)
        if got is None:
            view = self.view(step)
            got = (self._call(view, set(), None), self._call(view, set(self.data.symbols), None))
            self._memo[step] = got
        return got

    def holding_short(self, step: int) -> dict[str, Intent]:
        """As if every symbol were held short at ``step`` (a run with shorts)."""
        got = self._short_memo.get(step)
        if got is None:
            symbols = set(self.data.symbols)
            got = self._call(self.view(step), symbols, None, short_held=symbols)
            self._short_memo[step] = got
        return got

    def planned(self, step: int, plan_params: PositionParams) -> dict[str, Intent]:
        """As if flat at ``step``, with the exit plans ``plan_params`` give the entries."""
        key = (step, plan_key(plan_params))
        got = self._plan_memo.get(key)
        if got is None:
            got = self._call(self.view(step), set(), None, plan_params=plan_params)
            self._plan_memo[key] = got
        return got

    def precompute(self, steps: range) -> None:
        for step in steps:
            self.both(step)
            if self.shorts:
                self.holding_short(step)

    def intents(
        self,
        step: int,
        held: set[str],
        group_weights: dict[str, float] | None = None,
        short: set[str] | None = None,
        plan_params: PositionParams | None = None,
        short_group_weights: dict[str, float] | None = None,
    ) -> dict[str, Intent]:
        short = short or set()
        if group_weights is not None and decide_accepts_group_weights():
            return self._call(
                self.view(step),
                held,
                group_weights,
                short_held=short,
                plan_params=plan_params,
                short_group_weights=short_group_weights,
            )
        flat, holding = self.both(step)
        if plan_params is not None and any(
            i.action is Action.BUY and s not in held for s, i in flat.items()
        ):
            flat = self.planned(step, plan_params)
        shorted = self.holding_short(step) if self.shorts and short else {}
        return {
            s: (shorted[s] if s in short else holding[s] if s in held else flat[s]) for s in flat
        }

    def active_steps(
        self, steps: np.ndarray, flat: bool = False, shorts: bool = False
    ) -> np.ndarray:
        """For each step, whether some symbol's decision is BUY (as if flat), or, unless
        ``flat``, SELL (as if held, long or, with ``shorts``, short): the only steps where
        the policy can act. A short entry is a BUY intent too."""
        out = np.zeros(len(steps), dtype=bool)
        for k, step in enumerate(steps.tolist()):
            as_flat, holding = self.both(step)
            acts = any(i.action is Action.BUY for i in as_flat.values())
            if not acts and not flat:
                acts = any(i.action is Action.SELL for i in holding.values())
                if not acts and shorts and self.shorts:
                    acts = any(i.action is Action.SELL for i in self.holding_short(step).values())
            out[k] = acts
        return out

    def export(self) -> dict[int, tuple[dict[str, Intent], dict[str, Intent]]]:
        return dict(self._memo)

    def load(self, memo: dict[int, tuple[dict[str, Intent], dict[str, Intent]]]) -> None:
        self._memo.update(memo)

    def export_short(self) -> dict[int, dict[str, Intent]]:
        """The as-if-held-short memo (runs with shorts), to ship with ``export``."""
        return dict(self._short_memo)

    def load_short(self, memo: dict[int, dict[str, Intent]]) -> None:
        self._short_memo.update(memo)
