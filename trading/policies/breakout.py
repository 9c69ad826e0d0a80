"""Donchian channel breakout with an ATR trailing exit (Donchian; the Turtle rules, Faith 2007).

Rule, long side: enter (+1) on a close above the highest high of the previous N bars
(``entry_days``); leave on a close below the lowest low of the previous M bars (``exit_days``,
M < N), or, with ``atr_mult > 0``, on a close below the highest high since entry minus
``atr_mult`` x ATR (Wilder, ``atr_days``; a chandelier stop). The short side mirrors it in
long/short mode; long-only mode never goes short. After an exit the opposite side may enter on
the same bar.

No look-ahead: the channels of bar ``i`` are built from bars ``i-N .. i-1`` (bar ``i`` itself
is what breaks out), the ATR and the trailing extreme from bars ``<= i``. Fewer than N bars of
history give 0.

Default grid: 4 (entry, exit) channels in days ((10, 5), (20, 10), (40, 20), (55, 20)) x ATR
trailing exit off or at 3 ATR = 8 sets.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from trading.indicators import atr_wilder
from trading.policies.base import (
    BarSeries,
    Family,
    check,
    check_bool,
    check_positive,
    days_to_bars,
    finish,
    prior_max,
    prior_min,
)


@dataclass(frozen=True)
class BreakoutParams:
    entry_days: float = 20.0
    exit_days: float = 10.0
    atr_days: float = 20.0
    atr_mult: float = 3.0  # 0 turns the ATR trailing exit off
    long_only: bool = True

    def __post_init__(self) -> None:
        check_positive("entry_days", self.entry_days)
        check_positive("exit_days", self.exit_days)
        check_positive("atr_days", self.atr_days)
        check(
            self.exit_days < self.entry_days,
            f"exit_days ({self.exit_days!r}) must be shorter than entry_days ({self.entry_days!r})",
        )
        check(
            isinstance(self.atr_mult, int | float)
            and math.isfinite(self.atr_mult)
            and self.atr_mult >= 0,
            f"atr_mult must be >= 0 (0 = off), got {self.atr_mult!r}",
        )
        check_bool("long_only", self.long_only)


def target_weights(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, params: BreakoutParams, bar_ms: int
) -> np.ndarray:
    """The breakout state (+1 / 0 / -1) of every bar (see the module docstring)."""
    h, lo, c = (np.asarray(a, dtype=float) for a in (high, low, close))
    n = days_to_bars(params.entry_days, bar_ms)
    m = min(days_to_bars(params.exit_days, bar_ms), n - 1) if n > 1 else 1
    up_n, down_n = prior_max(h, n).tolist(), prior_min(lo, n).tolist()
    up_m, down_m = prior_max(h, m).tolist(), prior_min(lo, m).tolist()
    atr = atr_wilder(h, lo, c, days_to_bars(params.atr_days, bar_ms)).tolist()
    k = params.atr_mult
    highs, lows, closes = h.tolist(), lo.tolist(), c.tolist()
    out = [0.0] * len(closes)
    state, extreme = 0, 0.0
    for i, price in enumerate(closes):
        exited = 0
        if state == 1:
            extreme = max(extreme, highs[i])
            trail = k > 0 and atr[i] == atr[i] and price < extreme - k * atr[i]
            if price < down_m[i] or trail:
                state, exited = 0, 1
        elif state == -1:
            extreme = min(extreme, lows[i])
            trail = k > 0 and atr[i] == atr[i] and price > extreme + k * atr[i]
            if price > up_m[i] or trail:
                state, exited = 0, -1
        if state == 0:
            if price > up_n[i] and exited != 1:
                state, extreme = 1, highs[i]
            elif not params.long_only and price < down_n[i] and exited != -1:
                state, extreme = -1, lows[i]
        out[i] = float(state)
    return finish(np.asarray(out), params.long_only)


def _target(series: BarSeries, params: BreakoutParams) -> np.ndarray:
    return target_weights(series.high, series.low, series.close, params, series.bar_ms)


DEFAULT_GRID: tuple[BreakoutParams, ...] = tuple(
    BreakoutParams(entry_days=n, exit_days=m, atr_mult=k)
    for (n, m), k in itertools.product(
        ((10.0, 5.0), (20.0, 10.0), (40.0, 20.0), (55.0, 20.0)), (0.0, 3.0)
    )
)

FAMILY = Family(
    name="breakout", params_type=BreakoutParams, target=_target, grid=DEFAULT_GRID, group="trend"
)
