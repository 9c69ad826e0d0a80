"""TSMOM gated by the long-term trend filter.

Rule: the TSMOM weight (``tsmom``: sign of the trailing return, sized by volatility target)
is kept only when the trend filter (``trend_filter``: close against its SMA) points the same
way; otherwise 0. So a long needs both a positive trailing return and a close above the SMA,
a short (long/short mode) both negative; their disagreement, typical of turning points, is
flat. Combining a fast and a slow trend reading is the usual way to cut TSMOM's whipsaw
(e.g. Hurst, Ooi, Pedersen 2017, "A Century of Evidence on Trend-Following Investing").

No look-ahead: both parts read bars ``<= i`` only (see their modules).

Default grid: 3 lookbacks (30, 90, 180 days) x 2 SMA lengths (100, 200 days) x 2 volatility
targets (40, 80 %) = 12 sets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from trading.policies import trend_filter, tsmom
from trading.policies.base import BarSeries, Family, check_bool, finish


@dataclass(frozen=True)
class TrendTsmomParams:
    lookback_days: float = 90.0
    sma_days: float = 200.0
    target_vol: float = 0.6
    vol_days: float = 30.0
    max_weight: float = 1.0
    band: float = 0.0
    long_only: bool = True

    def __post_init__(self) -> None:
        check_bool("long_only", self.long_only)
        self.parts()  # validates every field through the parts' own checks

    def parts(self) -> tuple[tsmom.TsmomParams, trend_filter.TrendFilterParams]:
        return (
            tsmom.TsmomParams(
                self.lookback_days, self.target_vol, self.vol_days, self.max_weight, False
            ),
            trend_filter.TrendFilterParams(self.sma_days, self.band, False),
        )


def target_weights(close: np.ndarray, params: TrendTsmomParams, bar_ms: int) -> np.ndarray:
    """TSMOM's weight where the trend filter agrees in sign, else 0."""
    mom, trend = params.parts()
    w = tsmom.target_weights(close, mom, bar_ms)
    gate = trend_filter.target_weights(close, trend, bar_ms)
    return finish(np.where(np.sign(w) == gate, w, 0.0), params.long_only)


def _target(series: BarSeries, params: TrendTsmomParams) -> np.ndarray:
    return target_weights(series.close, params, series.bar_ms)


DEFAULT_GRID: tuple[TrendTsmomParams, ...] = tuple(
    TrendTsmomParams(lookback_days=lb, sma_days=n, target_vol=tv)
    for lb, n, tv in itertools.product((30.0, 90.0, 180.0), (100.0, 200.0), (0.4, 0.8))
)

FAMILY = Family(
    name="trend_tsmom",
    params_type=TrendTsmomParams,
    target=_target,
    grid=DEFAULT_GRID,
    group="trend",
)
