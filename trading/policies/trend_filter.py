"""Long-term trend filter: price against its N-day simple moving average (default 200 days).

Rule: long (+1) once the close is above ``SMA · (1 + band)``, flat (long-only) or short (-1)
once it is below ``SMA · (1 - band)``; inside the band the previous state holds (hysteresis
against whipsaw; ``band = 0`` is the plain "close above / below the SMA"). The idea is the
classic 200-day rule (Faber 2007, "A Quantitative Approach to Tactical Asset Allocation");
used alone it is a long/flat timing rule, in ``combo`` it gates TSMOM's entries.

No look-ahead: the state of bar ``i`` reads ``close[i]`` and the SMA of closes ``i-N+1 .. i``;
it flips at the bar whose close crosses, and the engine acts at the next bar's open. Bars
before the SMA exists give 0.

Default grid: 4 SMA lengths (50, 100, 150, 200 days) x 2 bands (0, 2 %) = 8 sets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from trading.indicators import sma
from trading.policies.base import (
    BarSeries,
    Family,
    check,
    check_bool,
    check_positive,
    days_to_bars,
    finish,
)


@dataclass(frozen=True)
class TrendFilterParams:
    sma_days: float = 200.0
    band: float = 0.0  # fraction of the SMA each side: enter above +band, leave below -band
    long_only: bool = True

    def __post_init__(self) -> None:
        check_positive("sma_days", self.sma_days)
        check(
            isinstance(self.band, int | float) and 0.0 <= self.band < 0.5,
            f"band must be in [0, 0.5), got {self.band!r}",
        )
        check_bool("long_only", self.long_only)


def trend_state(close: np.ndarray, sma_bars: int, band: float = 0.0) -> np.ndarray:
    """+1 above the band, -1 below it, the last state inside it, 0 before the SMA exists."""
    c = np.asarray(close, dtype=float)
    if not len(c):
        return np.zeros(0)
    avg = sma(c, sma_bars)
    with np.errstate(invalid="ignore"):
        signal = np.where(c > avg * (1 + band), 1.0, np.where(c < avg * (1 - band), -1.0, 0.0))
    last = np.maximum.accumulate(np.where(signal != 0, np.arange(len(c)), -1))
    return np.where(last >= 0, signal[np.maximum(last, 0)], 0.0)


def target_weights(close: np.ndarray, params: TrendFilterParams, bar_ms: int) -> np.ndarray:
    """The trend filter's target weight of every bar (see the module docstring)."""
    state = trend_state(close, days_to_bars(params.sma_days, bar_ms), params.band)
    return finish(state, params.long_only)


def _target(series: BarSeries, params: TrendFilterParams) -> np.ndarray:
    return target_weights(series.close, params, series.bar_ms)


DEFAULT_GRID: tuple[TrendFilterParams, ...] = tuple(
    TrendFilterParams(sma_days=n, band=b)
    for n, b in itertools.product((50.0, 100.0, 150.0, 200.0), (0.0, 0.02))
)

FAMILY = Family(
    name="trend_filter",
    params_type=TrendFilterParams,
    target=_target,
    grid=DEFAULT_GRID,
    group="trend",
)
