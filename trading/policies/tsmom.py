"""Time-series momentum with volatility targeting (Moskowitz, Ooi, Pedersen 2012).

Rule: the sign of the trailing return over ``lookback_days`` sets the side; the size is
``target_vol / realised_vol`` capped at ``max_weight``. Realised volatility is an EWMA of
squared bar log returns (span ``vol_days``, seeded with the mean of its first span, as
``indicators.ema``), annualised over 365 days, so a market twice as volatile gets half the
weight. Long-only mode keeps the longs and is flat instead of short.

No look-ahead: the weight of bar ``i`` reads closes ``0 .. i`` (``close[i] / close[i - L]`` and
returns up to bar ``i``); warm-up bars (fewer than L bars back, or no volatility yet) give 0.

Default grid: 4 lookbacks (30, 60, 90, 180 days) x 3 volatility targets (40, 60, 80 % a year)
= 12 sets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from trading.indicators import ema
from trading.policies.base import (
    BarSeries,
    Family,
    bars_per_year,
    check,
    check_bool,
    check_positive,
    days_to_bars,
    finish,
)


@dataclass(frozen=True)
class TsmomParams:
    lookback_days: float = 90.0
    target_vol: float = 0.6  # annualised
    vol_days: float = 30.0  # EWMA span of the realised volatility
    max_weight: float = 1.0
    long_only: bool = True

    def __post_init__(self) -> None:
        check_positive("lookback_days", self.lookback_days)
        check_positive("target_vol", self.target_vol)
        check_positive("vol_days", self.vol_days)
        check_positive("max_weight", self.max_weight)
        check(self.max_weight <= 1.0, f"max_weight must be <= 1, got {self.max_weight!r}")
        check_bool("long_only", self.long_only)


def realised_vol(close: np.ndarray, span_bars: int, bar_ms: int) -> np.ndarray:
    """Annualised EWMA volatility of bar log returns at each bar; NaN during warm-up."""
    c = np.asarray(close, dtype=float)
    out = np.full(len(c), np.nan)
    if len(c) < 2:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.diff(np.log(c))
    out[1:] = np.sqrt(ema(r * r, span_bars) * bars_per_year(bar_ms))
    return out


def trailing_sign(close: np.ndarray, lookback: int) -> np.ndarray:
    """Sign of ``close[i] / close[i - lookback] - 1``; 0 for ``i < lookback``."""
    c = np.asarray(close, dtype=float)
    out = np.zeros(len(c))
    if len(c) > lookback:
        out[lookback:] = np.sign(c[lookback:] - c[:-lookback])
    return out


def target_weights(close: np.ndarray, params: TsmomParams, bar_ms: int) -> np.ndarray:
    """The TSMOM target weight of every bar (see the module docstring)."""
    c = np.asarray(close, dtype=float)
    side = trailing_sign(c, days_to_bars(params.lookback_days, bar_ms))
    vol = realised_vol(c, days_to_bars(params.vol_days, bar_ms), bar_ms)
    size = np.full(len(c), params.max_weight)
    np.divide(params.target_vol, vol, out=size, where=vol > 0)
    size = np.where(np.isnan(vol), 0.0, np.minimum(size, params.max_weight))
    return finish(side * size, params.long_only)


def _target(series: BarSeries, params: TsmomParams) -> np.ndarray:
    return target_weights(series.close, params, series.bar_ms)


DEFAULT_GRID: tuple[TsmomParams, ...] = tuple(
    TsmomParams(lookback_days=lb, target_vol=tv)
    for lb, tv in itertools.product((30.0, 60.0, 90.0, 180.0), (0.4, 0.6, 0.8))
)

FAMILY = Family(
    name="tsmom", params_type=TsmomParams, target=_target, grid=DEFAULT_GRID, group="trend"
)
