"""What every policy family shares: bar arrays, the family record and registry, the adapter.

A family is a pure function ``target(series, params) -> weights``: one target weight per bar
of ``series``, in [-1, 1] (long/short) or [0, 1] (``long_only``), NaN-free, 0 during warm-up.
No look-ahead: the weight of bar ``i`` reads bars ``0 .. i`` only (and funding prints stamped
at or before bar ``i``'s close); the engine acts on it at bar ``i + 1``'s open.

``FamilyDecisions`` turns those weights into the backtester's ``DecisionSource`` (see
``WeightDecisions``): long-only in a long-only run, long/short in a run with ``allow_shorts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trading.backtest.data import BacktestData, FundingSeries
from trading.backtest.features_frame import FeatureFrame
from trading.backtest.policy import Intent
from trading.market_data import interval_ms
from trading.models import Action, PositionSide
from trading.rule_policy import SIGNAL_GROUPS, learned_multiplier

DAY_MS = 86_400_000
YEAR_DAYS = 365.0  # crypto trades every day: annualise as the metrics do (sqrt 365)


# ------------------------------------------------------------ small helpers


def check(ok: bool, message: str) -> None:
    """Parameter validation: a clear ``ValueError`` instead of a silent nonsense run."""
    if not ok:
        raise ValueError(message)


def check_positive(name: str, value: float) -> None:
    check(
        isinstance(value, int | float) and math.isfinite(value) and value > 0,
        f"{name} must be a positive finite number, got {value!r}",
    )


def check_bool(name: str, value: object) -> None:
    check(isinstance(value, bool), f"{name} must be a bool, got {value!r}")


def days_to_bars(days: float, bar_ms: int) -> int:
    """A lookback in days as a whole number of bars (at least one)."""
    check_positive("days", days)
    check(int(bar_ms) == bar_ms and bar_ms > 0, f"bar_ms must be a positive integer: {bar_ms!r}")
    return max(1, round(days * DAY_MS / bar_ms))


def bars_per_year(bar_ms: int) -> float:
    return YEAR_DAYS * DAY_MS / bar_ms


def finish(weights: np.ndarray, long_only: bool) -> np.ndarray:
    """NaN → 0, clipped to [0, 1] or [-1, 1]: the contract every family returns."""
    w = np.nan_to_num(np.asarray(weights, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(w, 0.0 if long_only else -1.0, 1.0)


def prior_max(x: np.ndarray, n: int) -> np.ndarray:
    """``max(x[i-n .. i-1])`` at each ``i`` (the previous ``n`` bars, not bar ``i``); NaN before."""
    return _prior(x, n, np.max)


def prior_min(x: np.ndarray, n: int) -> np.ndarray:
    """``min(x[i-n .. i-1])`` at each ``i``; NaN for ``i < n``."""
    return _prior(x, n, np.min)


def _prior(x: np.ndarray, n: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) > n:
        windows = np.lib.stride_tricks.sliding_window_view(x[:-1], n)
        out[n:] = reduce(windows, axis=1)
    return out


# ------------------------------------------------------------ inputs


@dataclass(frozen=True)
class BarSeries:
    """One symbol's bars on the decision timeframe, oldest first, as float arrays."""

    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close_time: np.ndarray  # int64 epoch ms, last millisecond of each bar
    bar_ms: int
    funding: FundingSeries | None = None  # (times ms, rate per print), for the carry family

    def __post_init__(self) -> None:
        n = len(self.close)
        check(
            len(self.high) == n and len(self.low) == n and len(self.close_time) == n,
            "close, high, low and close_time must have the same length",
        )
        check(int(self.bar_ms) == self.bar_ms and self.bar_ms > 0, "bar_ms must be positive")

    def __len__(self) -> int:
        return len(self.close)

    @classmethod
    def from_frame(cls, frame: FeatureFrame, funding: FundingSeries | None = None) -> BarSeries:
        return cls(
            close=np.asarray(frame.close, dtype=float),
            high=np.asarray(frame.high, dtype=float),
            low=np.asarray(frame.low, dtype=float),
            close_time=np.asarray(frame.close_time, dtype=np.int64),
            bar_ms=interval_ms(frame.interval),
            funding=funding,
        )

    @classmethod
    def from_closes(
        cls,
        close: Sequence[float] | np.ndarray,
        bar_ms: int = DAY_MS,
        high: Sequence[float] | np.ndarray | None = None,
        low: Sequence[float] | np.ndarray | None = None,
        start_ms: int = 0,
        funding: FundingSeries | None = None,
    ) -> BarSeries:
        """Hand-made series (tests, notebooks): high/low default to the close."""
        c = np.asarray(close, dtype=float)
        opens = start_ms + bar_ms * np.arange(len(c), dtype=np.int64)
        return cls(
            close=c,
            high=c.copy() if high is None else np.asarray(high, dtype=float),
            low=c.copy() if low is None else np.asarray(low, dtype=float),
            close_time=opens + bar_ms - 1,
            bar_ms=bar_ms,
            funding=funding,
        )


# ------------------------------------------------------------ family record and registry

TargetFunction = Callable[[BarSeries, Any], np.ndarray]


@dataclass(frozen=True)
class Family:
    """A policy family: its parameters class, target function, default grid, signal group.

    ``grid`` is a modest tuple of parameter sets for walk-forward (its size is in each
    module's docstring); ``group`` is the learner's signal group the family's trades count for.
    """

    name: str
    params_type: type
    target: TargetFunction
    grid: tuple[Any, ...]
    group: str
    needs_funding: bool = False

    def __post_init__(self) -> None:
        check(self.group in SIGNAL_GROUPS, f"unknown signal group {self.group!r}")
        check(bool(self.grid), f"family {self.name} has an empty grid")

    def default_params(self) -> Any:
        return self.params_type()

    def weights(self, series: BarSeries, params: Any = None) -> np.ndarray:
        params = self.default_params() if params is None else params
        check(
            isinstance(params, self.params_type),
            f"{self.name} needs {self.params_type.__name__}, got {type(params).__name__}",
        )
        return self.target(series, params)


def families() -> dict[str, Family]:
    """Every family by name (imported here, late, so the modules can import this one)."""
    from trading.policies import breakout, carry, combo, trend_filter, tsmom

    found = (tsmom.FAMILY, trend_filter.FAMILY, breakout.FAMILY, carry.FAMILY, combo.FAMILY)
    return {f.name: f for f in found}


def get_family(name: str) -> Family:
    known = families()
    check(name in known, f"unknown policy family {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


# ------------------------------------------------------------ the backtester's decision source


class WeightDecisions:
    """Per-bar target weights as the backtester's ``DecisionSource``.

    Long-only mode (the engine calls ``intents`` without ``short``: every run without
    ``allow_shorts``), at a decision step, per symbol with a bar there (``w`` = its weight,
    negatives as 0):

    * not held and ``w > entry_threshold`` → BUY, ``position_pct = min(w · position_pct,
      max_position_pct)`` (times the learner's multiplier when group weights are given, as
      the rule policy does);
    * held and ``w <= exit_threshold`` → SELL;
    * otherwise HOLD (also without a bar).

    A negative (short) weight is treated as flat there. Long/short mode (a run with
    ``allow_shorts``: the engine passes ``short``, the held symbols that are short) adds the
    mirror image:

    * not held and ``w < -entry_threshold`` → BUY with side SHORT, sized by ``|w|`` as above;
    * held short and ``w >= -exit_threshold`` → SELL (cover); a held long still sells at
      ``w <= exit_threshold``.

    A flip is two decisions: a long whose weight turns negative is sold (SELL now, filled at
    the next open), and the short is opened at the next decision bar where the symbol is flat
    and the weight still below ``-entry_threshold`` (filled at the open after that bar); the
    same for a short turning long. The weight's size only sizes the entry: the engine neither
    adds to nor trims a held position when the target changes, and its safety and agent
    layers still exit on their own.
    """

    def __init__(
        self,
        data: BacktestData,
        weights: dict[str, np.ndarray],
        group: str,
        position_pct: float = 0.20,
        max_position_pct: float = 0.30,
        entry_threshold: float = 0.0,
        exit_threshold: float = 0.0,
    ) -> None:
        check(group in SIGNAL_GROUPS, f"unknown signal group {group!r}")
        check(0 < position_pct <= 1, f"position_pct must be in (0, 1], got {position_pct!r}")
        check(
            0 < max_position_pct <= 1,
            f"max_position_pct must be in (0, 1], got {max_position_pct!r}",
        )
        check(
            0 <= exit_threshold <= entry_threshold < 1,
            "thresholds must satisfy 0 <= exit_threshold <= entry_threshold < 1, got "
            f"{exit_threshold!r}, {entry_threshold!r}",
        )
        check(set(weights) == set(data.symbols), "weights must cover exactly data.symbols")
        self.data = data
        self.group = group
        self.position_pct = position_pct
        self.max_position_pct = max_position_pct
        self.entry_threshold = entry_threshold
        self.exit_threshold = exit_threshold
        self.weights = {}  # symbol -> weight per bar of its frame, as given (shorts kept)
        rows = []
        for s in data.symbols:
            w = np.asarray(weights[s], dtype=float)
            check(len(w) == len(data.frames[s]), f"{s}: one weight per bar of its frame")
            check(bool(np.all(np.isfinite(w))), f"{s}: weights must be finite")
            self.weights[s] = w
            idx = data.index[s]
            rows.append(np.where(idx >= 0, np.maximum(w[np.maximum(idx, 0)], 0.0), np.nan))
        self._by_step = np.vstack(rows) if rows else np.zeros((0, len(data.timeline)))
        self._lists = [row.tolist() for row in self._by_step]  # scalars per step: lists are fast
        self._signed: np.ndarray | None = None  # the same with shorts kept, made when asked
        self._signed_lists: list[list[float]] | None = None

    def _signed_by_step(self) -> np.ndarray:
        """Signed weight of each symbol at each timeline step (NaN without a bar)."""
        if self._signed is None:
            rows = []
            for s in self.data.symbols:
                idx = self.data.index[s]
                rows.append(np.where(idx >= 0, self.weights[s][np.maximum(idx, 0)], np.nan))
            self._signed = np.vstack(rows) if rows else np.zeros((0, len(self.data.timeline)))
            self._signed_lists = [row.tolist() for row in self._signed]
        return self._signed

    def step_weights(self, step: int) -> dict[str, float]:
        """Long weight of each symbol at a timeline step (NaN without a bar)."""
        return {s: self._lists[k][step] for k, s in enumerate(self.data.symbols)}

    def intents(
        self,
        step: int,
        held: set[str],
        group_weights: dict[str, float] | None = None,
        short: set[str] | None = None,
    ) -> dict[str, Intent]:
        """One intent per symbol; ``short`` (the held shorts) switches on long/short mode."""
        if short is not None:
            return self._long_short_intents(step, held, group_weights, short)
        out: dict[str, Intent] = {}
        for k, s in enumerate(self.data.symbols):
            w = self._lists[k][step]
            sw = {self.group: 1.0}
            if w != w:  # NaN: no bar for this symbol at this step
                out[s] = Intent(Action.HOLD, 0.0, 0.0, sw)
            elif s in held:
                sell = w <= self.exit_threshold
                out[s] = Intent(Action.SELL if sell else Action.HOLD, 0.0, 1.0 if sell else w, sw)
            elif w > self.entry_threshold:
                m = 1.0 if group_weights is None else learned_multiplier(sw, group_weights)
                pct = min(self.max_position_pct, w * self.position_pct * m)
                out[s] = Intent(Action.BUY, round(pct, 6), round(min(1.0, w), 4), sw)
            else:
                out[s] = Intent(Action.HOLD, 0.0, w, sw)
        return out

    def _long_short_intents(
        self,
        step: int,
        held: set[str],
        group_weights: dict[str, float] | None,
        short: set[str],
    ) -> dict[str, Intent]:
        self._signed_by_step()
        lists = self._signed_lists
        assert lists is not None
        out: dict[str, Intent] = {}
        for k, s in enumerate(self.data.symbols):
            w = lists[k][step]
            sw = {self.group: 1.0}
            if w != w:  # NaN: no bar for this symbol at this step
                out[s] = Intent(Action.HOLD, 0.0, 0.0, sw)
            elif s in held:
                is_short = s in short
                sell = w >= -self.exit_threshold if is_short else w <= self.exit_threshold
                side = PositionSide.SHORT if is_short else PositionSide.LONG
                conf = 1.0 if sell else abs(w)
                out[s] = Intent(Action.SELL if sell else Action.HOLD, 0.0, conf, sw, side)
            elif abs(w) > self.entry_threshold:
                m = 1.0 if group_weights is None else learned_multiplier(sw, group_weights)
                pct = min(self.max_position_pct, abs(w) * self.position_pct * m)
                side = PositionSide.SHORT if w < 0 else PositionSide.LONG
                out[s] = Intent(Action.BUY, round(pct, 6), round(min(1.0, abs(w)), 4), sw, side)
            else:
                out[s] = Intent(Action.HOLD, 0.0, w, sw)
        return out

    def active_steps(
        self, steps: np.ndarray, flat: bool = False, shorts: bool = False
    ) -> np.ndarray:
        """Whether some symbol would BUY (as if flat) or, unless ``flat``, SELL (as if held) at
        each step: the only steps where this source can act (the engine skips the rest).
        ``shorts``: in long/short mode (short entries, and covers as if held short)."""
        idx = np.asarray(steps, dtype=np.int64)
        if shorts:
            w = self._signed_by_step()[:, idx]
            with np.errstate(invalid="ignore"):
                active = (np.abs(w) > self.entry_threshold).any(axis=0)
                if not flat:
                    active |= (w <= self.exit_threshold).any(axis=0)
                    active |= (w >= -self.exit_threshold).any(axis=0)
            return active
        w = self._by_step[:, idx]
        with np.errstate(invalid="ignore"):
            active = (w > self.entry_threshold).any(axis=0)
            if not flat:
                active |= (w <= self.exit_threshold).any(axis=0)
        return active


class FamilyDecisions(WeightDecisions):
    """A family with one parameter set over every symbol of ``data``, as a ``DecisionSource``.

    Weights are computed once, on each symbol's whole decision-timeframe frame (warm-up bars
    included); being causal, the weight at a bar does not depend on where a run starts or ends.
    Funding defaults to ``data.funding`` (loaded for perpetual runs); a symbol without funding
    gets zero weights from the carry family (listed in ``no_funding``). Short (negative)
    weights (a family's ``long_only=False`` mode) act as flat in a long-only run and open
    shorts in a run with ``allow_shorts`` (``WeightDecisions``).
    """

    def __init__(
        self,
        data: BacktestData,
        family: Family | str,
        params: Any = None,
        position_pct: float = 0.20,
        max_position_pct: float = 0.30,
        entry_threshold: float = 0.0,
        exit_threshold: float = 0.0,
        funding: dict[str, FundingSeries] | None = None,
    ) -> None:
        fam = get_family(family) if isinstance(family, str) else family
        params = fam.default_params() if params is None else params
        funding = data.funding if funding is None else funding
        self.family = fam
        self.params = params
        self.no_funding = [s for s in data.symbols if fam.needs_funding and s not in funding]
        weights = {
            s: fam.weights(BarSeries.from_frame(data.frames[s], funding.get(s)), params)
            for s in data.symbols
        }
        super().__init__(
            data,
            weights,
            fam.group,
            position_pct,
            max_position_pct,
            entry_threshold,
            exit_threshold,
        )
