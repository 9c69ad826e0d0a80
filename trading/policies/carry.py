"""Funding-rate carry and crowding on perpetuals.

Rule, on the mean ``f`` of the last K funding prints known at the bar's close:

* ``f < long_below`` (default 0: shorts pay longs) → long carry, +1;
* ``f > crowded_above`` (crowded longs paying a premium) → no long: 0, or -1 in long/short
  mode (the short then collects the funding);
* in between → ``neutral_weight`` (0 = trade the extremes only).

The idea is the basis / funding carry of futures (Koijen, Moskowitz, Pedersen, Vrugt 2018,
"Carry") and funding as a crowding gauge on crypto perps (the rule policy's derivatives
composite reads it the same way: high funding is bearish). Thresholds are per print (Binance
USDT-M: every 8 h, 0.0001 = the 0.01 % baseline).

No look-ahead: a print counts for bar ``i`` only if its time is at or before bar ``i``'s close
time (its last millisecond), so a print stamped at the next bar's open is not seen. Bars with
fewer than K prints before them give 0; a symbol without a funding series is flat.

Default grid: K in (3, 9, 21) prints (1, 3, 7 days) x ``long_below`` in (0, 0.00005) x
``neutral_weight`` in (0, 0.5), ``crowded_above`` = 0.0002 = 12 sets.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from trading.policies.base import BarSeries, Family, check, check_bool, finish


@dataclass(frozen=True)
class CarryParams:
    prints: int = 9  # K: funding prints averaged (9 x 8 h = 3 days)
    long_below: float = 0.0
    crowded_above: float = 0.0002
    neutral_weight: float = 0.0
    long_only: bool = True

    def __post_init__(self) -> None:
        check(
            isinstance(self.prints, int) and not isinstance(self.prints, bool) and self.prints >= 1,
            f"prints must be an integer >= 1, got {self.prints!r}",
        )
        for name in ("long_below", "crowded_above", "neutral_weight"):
            value = getattr(self, name)
            check(
                isinstance(value, int | float) and math.isfinite(value),
                f"{name} must be a finite number, got {value!r}",
            )
        check(
            self.long_below < self.crowded_above,
            f"long_below ({self.long_below!r}) must be below crowded_above "
            f"({self.crowded_above!r})",
        )
        check(
            0.0 <= self.neutral_weight <= 1.0,
            f"neutral_weight must be in [0, 1], got {self.neutral_weight!r}",
        )
        check_bool("long_only", self.long_only)


def funding_mean_at(
    close_time: np.ndarray, times: np.ndarray, rates: np.ndarray, prints: int
) -> np.ndarray:
    """Mean of the last ``prints`` funding rates stamped at or before each bar's close time;
    NaN where fewer prints exist."""
    t = np.asarray(times, dtype=np.int64)
    r = np.asarray(rates, dtype=float)
    check(len(t) == len(r), "funding times and rates must have the same length")
    check(bool(np.all(np.diff(t) > 0)), "funding times must be increasing")
    check(bool(np.all(np.isfinite(r))), "funding rates must be finite")
    ct = np.asarray(close_time, dtype=np.int64)
    out = np.full(len(ct), np.nan)
    if len(r) < prints:
        return out
    means = np.lib.stride_tricks.sliding_window_view(r, prints).mean(axis=1)
    seen = np.searchsorted(t, ct, side="right")  # prints with time <= close time
    ok = seen >= prints
    out[ok] = means[seen[ok] - prints]
    return out


def weights_from_funding(funding_mean: np.ndarray, params: CarryParams) -> np.ndarray:
    """The carry weight of each bar from its (already aligned, causal) mean funding."""
    f = np.asarray(funding_mean, dtype=float)
    with np.errstate(invalid="ignore"):
        w = np.where(
            f < params.long_below,
            1.0,
            np.where(f > params.crowded_above, -1.0, params.neutral_weight),
        )
    return finish(np.where(np.isnan(f), 0.0, w), params.long_only)


def target_weights(
    close_time: np.ndarray, times: np.ndarray, rates: np.ndarray, params: CarryParams
) -> np.ndarray:
    """The carry target weight of every bar from the raw funding prints."""
    return weights_from_funding(funding_mean_at(close_time, times, rates, params.prints), params)


def _target(series: BarSeries, params: CarryParams) -> np.ndarray:
    if series.funding is None:
        return np.zeros(len(series))
    times, rates = series.funding
    return target_weights(series.close_time, times, rates, params)


DEFAULT_GRID: tuple[CarryParams, ...] = tuple(
    CarryParams(prints=k, long_below=lb, neutral_weight=nw)
    for k, lb, nw in itertools.product((3, 9, 21), (0.0, 0.00005), (0.0, 0.5))
)

FAMILY = Family(
    name="carry",
    params_type=CarryParams,
    target=_target,
    grid=DEFAULT_GRID,
    group="derivatives",
    needs_funding=True,
)
