"""Technical indicators on numpy arrays (activity code; pure functions, no I/O).

Conventions, shared by every function here:

* Inputs are 1-D sequences of finite floats, oldest first. They are not checked for NaN:
  the callers build them from validated ``Bar`` models.
* Series functions (``sma``, ``ema``, ``rsi_wilder``, ``atr_wilder``, ``bollinger``) return an
  array as long as the input, NaN during the warm-up, so that index ``i`` always refers to
  the same bar as the input. A too-short input gives an all-NaN array, never an error.
* Scalar functions (``momentum``, ``efficiency_ratio``, ``zscore_last``) describe the last
  value and return ``None`` when there is not enough history.
* Warm-up: ``sma``/``bollinger`` need ``n`` values; ``ema`` needs ``span`` values and is seeded
  with their simple mean (TA-Lib convention, so early values are not biased towards the first
  price); ``rsi_wilder``/``atr_wilder`` need ``period + 1`` values (one difference / true range
  per pair) and are seeded with the simple mean of the first ``period`` of them, then follow
  Wilder's smoothing (alpha = 1/period).
* Standard deviations are population (ddof=0), as in the adaptive gate (SPEC §1).

The recursive filters are plain Python loops over lists: on a few hundred bars that is a few
tens of microseconds, cheaper than any vectorised trick and exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ArrayLike = Sequence[float] | np.ndarray


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=float).ravel()


def _check_window(n: int, name: str) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def sma(x: ArrayLike, n: int) -> np.ndarray:
    """Simple moving average; NaN for the first ``n - 1`` values."""
    _check_window(n, "n")
    a = _arr(x)
    out = np.full(a.shape, np.nan)
    if len(a) >= n:
        out[n - 1 :] = sliding_window_view(a, n).mean(axis=1)
    return out


def ema(x: ArrayLike, span: int) -> np.ndarray:
    """Exponential moving average, alpha = 2/(span+1), seeded with the SMA of the first span."""
    _check_window(span, "span")
    a = _arr(x)
    out = np.full(a.shape, np.nan)
    if len(a) < span:
        return out
    alpha = 2.0 / (span + 1.0)
    values = a.tolist()
    level = float(np.mean(a[:span]))
    res = out.tolist()
    res[span - 1] = level
    for i in range(span, len(values)):
        level += alpha * (values[i] - level)
        res[i] = level
    return np.asarray(res)


def _rsi_value(avg_gain: float, avg_loss: float) -> float:
    # No losses: 100 if there were gains, 50 for a perfectly flat window (no information).
    if avg_loss == 0.0:
        return 100.0 if avg_gain > 0.0 else 50.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def rsi_wilder(close: ArrayLike, period: int = 14) -> np.ndarray:
    """Wilder's RSI in [0, 100]; first value at index ``period``."""
    _check_window(period, "period")
    a = _arr(close)
    out = np.full(a.shape, np.nan)
    if len(a) < period + 1:
        return out
    diff = np.diff(a)
    gains = np.clip(diff, 0.0, None).tolist()
    losses = np.clip(-diff, 0.0, None).tolist()
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period
    res = out.tolist()
    res[period] = _rsi_value(avg_gain, avg_loss)
    for i in range(period, len(gains)):
        avg_gain = (avg_gain * (period - 1) + gains[i]) / period
        avg_loss = (avg_loss * (period - 1) + losses[i]) / period
        res[i + 1] = _rsi_value(avg_gain, avg_loss)
    return np.asarray(res)


def true_range(high: ArrayLike, low: ArrayLike, close: ArrayLike) -> np.ndarray:
    """True range; index 0 has no previous close, so it is high - low."""
    h, lo, c = _arr(high), _arr(low), _arr(close)
    if not len(h) == len(lo) == len(c):
        raise ValueError("high, low and close must have the same length")
    tr = h - lo
    if len(c) > 1:
        prev = c[:-1]
        tr[1:] = np.maximum.reduce([h[1:] - lo[1:], np.abs(h[1:] - prev), np.abs(lo[1:] - prev)])
    return tr


def atr_wilder(high: ArrayLike, low: ArrayLike, close: ArrayLike, period: int = 14) -> np.ndarray:
    """Wilder's average true range in price units; first value at index ``period``.

    The seed is the mean of the true ranges of bars 1..period (each with a previous close);
    bar 0's high-low range is left out, as TA-Lib does.
    """
    _check_window(period, "period")
    tr = true_range(high, low, close)
    out = np.full(tr.shape, np.nan)
    if len(tr) < period + 1:
        return out
    values = tr.tolist()
    level = sum(values[1 : period + 1]) / period
    res = out.tolist()
    res[period] = level
    for i in range(period + 1, len(values)):
        level = (level * (period - 1) + values[i]) / period
        res[i] = level
    return np.asarray(res)


def bollinger(
    close: ArrayLike, n: int = 20, k: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands ``(mid, upper, lower)``: SMA(n) ± k·population std over the same window."""
    _check_window(n, "n")
    a = _arr(close)
    mid = np.full(a.shape, np.nan)
    std = np.full(a.shape, np.nan)
    if len(a) >= n:
        windows = sliding_window_view(a, n)
        mid[n - 1 :] = windows.mean(axis=1)
        std[n - 1 :] = windows.std(axis=1)
    return mid, mid + k * std, mid - k * std


def momentum(close: ArrayLike, n: int = 14) -> float | None:
    """Fractional change over ``n`` bars: close[-1] / close[-1-n] - 1 (0.02 = +2 %)."""
    _check_window(n, "n")
    a = _arr(close)
    if len(a) < n + 1 or a[-1 - n] <= 0:
        return None
    return float(a[-1] / a[-1 - n] - 1.0)


def efficiency_ratio(close: ArrayLike, n: int = 30) -> float | None:
    """Kaufman efficiency ratio over the last ``n`` bars, in [0, 1].

    |close[-1] - close[-1-n]| divided by the sum of absolute bar-to-bar changes over the same
    window: 1 for a straight line, near 0 for noise. A perfectly flat window gives 0.
    """
    _check_window(n, "n")
    a = _arr(close)
    if len(a) < n + 1:
        return None
    window = a[-1 - n :]
    path = float(np.abs(np.diff(window)).sum())
    if path == 0.0:
        return 0.0
    return float(abs(window[-1] - window[0]) / path)


def zscore_last(x: ArrayLike, window: int = 50) -> float | None:
    """z-score of the last value against the up-to-``window`` values *before* it.

    Population variance; ``None`` below 3 reference values. With zero variance the z is 0 if
    the last value equals the mean and undefined (``None``) otherwise.
    """
    _check_window(window, "window")
    a = _arr(x)
    if len(a) < 4:
        return None
    ref = a[-1 - window : -1]
    if len(ref) < 3:
        return None
    mean = float(ref.mean())
    std = float(ref.std())
    last = float(a[-1])
    if std == 0.0:
        return 0.0 if last == mean else None
    return (last - mean) / std
