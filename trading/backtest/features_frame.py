"""Vectorised per-bar features: what ``compute_features`` returns at every bar, in one pass.

The backtester needs the features of every bar; calling ``compute_features`` bar by bar is
quadratic. This module computes the same numbers on whole arrays, with the same conventions:

* bar ``i`` sees the closed bars ``i - window + 1 .. i`` (``window`` = the live BarStore window,
  200 bars; ``None`` = all history), at ``price`` = its close and ``time_ms`` = its close_time;
* the recursive indicators (EMA, Wilder RSI and ATR) are *seeded at the start of that window*,
  as ``compute_features`` does on the window it is given. A linear filter started at bar ``s``
  equals the full-history filter plus the decayed difference of the two seeds:
  ``W_i = F_i + a^(i - j)·(seed_s - F_j)`` with ``j`` the seed index, so every row costs O(1);
* returns come from this series only (no finer series): a 4h frame has no 1h return.

``tests/unit/test_backtest_features.py`` checks every field against ``compute_features`` bar by
bar on real data (to 1e-9 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from trading.features import OPTIONAL_FIELDS, RETURN_HORIZONS_MS, TREND_DIST_MIN, TREND_ER_MIN
from trading.indicators import true_range
from trading.market_data import interval_ms
from trading.models import Bar, SymbolFeatures

LIVE_WINDOW = 200  # signals/market_activities.py WINDOW: bars per live indicator window
VOLUME_Z_WINDOW = 50


@dataclass
class FeatureFrame:
    """Features of one symbol at every bar close; NaN where ``compute_features`` gives None."""

    symbol: str
    interval: str
    open_time: np.ndarray  # int64 epoch ms
    close_time: np.ndarray  # int64 epoch ms (last millisecond of the bar)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    values: dict[str, np.ndarray]  # one array per name of trading.features.OPTIONAL_FIELDS
    n_bars: np.ndarray  # bars the window held
    trending: np.ndarray  # bool; regime "trending" where True and regime_known
    regime_known: np.ndarray

    def __len__(self) -> int:
        return len(self.close)

    def regime(self, i: int) -> str:
        if not self.regime_known[i]:
            return "unknown"
        return "trending" if self.trending[i] else "ranging"

    def value(self, name: str, i: int) -> float | None:
        v = float(self.values[name][i])
        return v if math.isfinite(v) else None

    def features(self, i: int) -> SymbolFeatures:
        """The ``SymbolFeatures`` model of bar ``i``, exactly as the live code receives it."""
        values = {name: self.value(name, i) for name in OPTIONAL_FIELDS}
        regime = self.regime(i)
        missing = [name for name in OPTIONAL_FIELDS if values[name] is None]
        if regime == "unknown":
            missing.append("regime")
        return SymbolFeatures(
            symbol=self.symbol,
            interval=self.interval,
            time_ms=int(self.close_time[i]),
            price=float(self.close[i]),
            n_bars=int(self.n_bars[i]),
            regime=regime,
            missing=missing,
            **values,
        )


def bars_to_arrays(bars: Sequence[Bar]) -> dict[str, np.ndarray]:
    """Columns of a bar list: open_time, close_time (int64) and OHLCV (float)."""
    n = len(bars)
    out = {
        "open_time": np.fromiter((b.open_time for b in bars), dtype=np.int64, count=n),
        "close_time": np.fromiter((b.close_time for b in bars), dtype=np.int64, count=n),
    }
    for name in ("open", "high", "low", "close", "volume"):
        out[name] = np.fromiter((getattr(b, name) for b in bars), dtype=float, count=n)
    return out


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of x[k - n + 1 .. k] at index k; NaN before."""
    out = _nan(len(x))
    if len(x) >= n:
        out[n - 1 :] = sliding_window_view(x, n).mean(axis=1)
    return out


def _rewindow(full: np.ndarray, seeds: np.ndarray, decay: float, lag: int, window: int | None):
    """Restart a linear filter at each row's window start (see the module docstring).

    ``full[i]`` is the filter seeded at the first possible index; ``seeds[j]`` the seed a
    window whose seed index is ``j`` would use; ``lag`` = seed index - window start.
    """
    if window is None or len(full) < window:
        return full
    out = full.copy()
    rows = np.arange(window - 1, len(full))
    j = rows - window + 1 + lag
    out[rows] = full[rows] + decay ** (window - 1 - lag) * (seeds[j] - full[j])
    return out


def _ema(x: np.ndarray, span: int, window: int | None) -> np.ndarray:
    n = len(x)
    full = _nan(n)
    if n < span or (window is not None and window < span):
        return full
    alpha = 2.0 / (span + 1.0)
    level = float(np.mean(x[:span]))
    res = full.tolist()
    res[span - 1] = level
    values = x.tolist()
    for i in range(span, n):
        level += alpha * (values[i] - level)
        res[i] = level
    return _rewindow(np.asarray(res), _rolling_mean(x, span), 1.0 - alpha, span - 1, window)


def _wilder(values: np.ndarray, period: int, first: int) -> np.ndarray:
    """Wilder average of ``values``: seeded at index ``first + period - 1`` with the mean of
    ``values[first : first + period]``, then alpha = 1/period."""
    n = len(values)
    out = _nan(n)
    seed_at = first + period - 1
    if n <= seed_at:
        return out
    res = out.tolist()
    v = values.tolist()
    level = sum(v[first : first + period]) / period
    res[seed_at] = level
    for i in range(seed_at + 1, n):
        level = (level * (period - 1) + v[i]) / period
        res[i] = level
    return np.asarray(res)


def _rsi(close: np.ndarray, period: int, window: int | None) -> np.ndarray:
    n = len(close)
    out = _nan(n)
    if n < period + 1 or (window is not None and window < period + 1):
        return out
    diff = np.diff(close)
    # index k of these series is the bar whose close ends the change: gains[k] = c[k] - c[k-1]
    gains = np.concatenate(([0.0], np.clip(diff, 0.0, None)))
    losses = np.concatenate(([0.0], np.clip(-diff, 0.0, None)))
    decay = (period - 1) / period
    avg = []
    for series in (gains, losses):
        full = _wilder(series, period, 1)
        seeds = _rolling_mean(series, period)
        avg.append(_rewindow(full, seeds, decay, period, window))
    gain, loss = avg
    valid = ~np.isnan(gain)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + gain / loss)
    rsi = np.where(loss == 0.0, np.where(gain > 0.0, 100.0, 50.0), rsi)
    out[valid] = rsi[valid]
    return out


def _atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, window: int | None):
    n = len(close)
    if n < period + 1 or (window is not None and window < period + 1):
        return _nan(n)
    tr = true_range(high, low, close)
    full = _wilder(tr, period, 1)
    return _rewindow(full, _rolling_mean(tr, period), (period - 1) / period, period, window)


def _bollinger(close: np.ndarray, n: int = 20, k: float = 2.0):
    mid, std = _nan(len(close)), _nan(len(close))
    if len(close) >= n:
        windows = sliding_window_view(close, n)
        mid[n - 1 :] = windows.mean(axis=1)
        std[n - 1 :] = windows.std(axis=1)
    return mid, mid + k * std, mid - k * std


def _momentum(close: np.ndarray, n: int) -> np.ndarray:
    out = _nan(len(close))
    if len(close) > n:
        ref = close[:-n]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[n:] = np.where(ref > 0, close[n:] / ref - 1.0, np.nan)
    return out


def _efficiency_ratio(close: np.ndarray, n: int) -> np.ndarray:
    out = _nan(len(close))
    if len(close) > n:
        path = sliding_window_view(np.abs(np.diff(close)), n).sum(axis=1)
        net = np.abs(close[n:] - close[:-n])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[n:] = np.where(path == 0.0, 0.0, net / path)
    return out


def _volume_z(volume: np.ndarray, window: int, bar_window: int | None) -> np.ndarray:
    """zscore_last at each bar: the bar's volume against up to ``window`` volumes before it
    (within the bar window); None below 3 references; 0 or None on zero variance."""
    n = len(volume)
    out = _nan(n)
    limit = window if bar_window is None else min(window, bar_window - 1)
    refs = np.arange(n)  # references available before bar i
    if bar_window is not None:
        refs = np.minimum(refs, bar_window - 1)
    refs = np.minimum(refs, limit)
    for i in range(min(n, limit)):  # short history: few rows, plain loop
        if refs[i] >= 3:
            out[i] = _z(volume[i - refs[i] : i], volume[i])
    if n > limit >= 3:
        ref = sliding_window_view(volume[:-1], limit)  # row r = volume[r : r + limit]
        last = volume[limit:]
        mean = ref.mean(axis=1)
        std = ref.std(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (last - mean) / std
        z = np.where(std == 0.0, np.where(last == mean, 0.0, np.nan), z)
        out[limit:] = z
    return out


def _z(ref: np.ndarray, last: float) -> float:
    mean, std = float(ref.mean()), float(ref.std())
    if std == 0.0:
        return 0.0 if last == mean else math.nan
    return (last - mean) / std


def _returns(
    close: np.ndarray, close_time: np.ndarray, step: int, window: int | None
) -> dict[str, np.ndarray]:
    """Horizon returns from this series only (compute_features' rule for one series); the
    reference bar must lie inside the row's window."""
    out: dict[str, np.ndarray] = {}
    first = np.zeros(len(close), dtype=np.int64)
    if window is not None:
        first = np.maximum(np.arange(len(close)) - window + 1, 0)
    for name, horizon in RETURN_HORIZONS_MS.items():
        ret = _nan(len(close))
        if step <= horizon:
            idx = np.searchsorted(close_time, close_time - horizon, side="right") - 1
            ok = idx >= first
            ok[ok] &= (close_time[ok] - close_time[idx[ok]]) < horizon + step
            ret[ok] = close[ok] / close[idx[ok]] - 1.0
        out[name] = ret
    return out


def compute_feature_frame(
    symbol: str, interval: str, bars: Sequence[Bar], window: int | None = LIVE_WINDOW
) -> FeatureFrame:
    """Features at every bar of ``bars`` (one symbol, closed, oldest first, unique times)."""
    cols = bars_to_arrays(bars)
    return frame_from_arrays(symbol, interval, cols, window)


def frame_from_arrays(
    symbol: str, interval: str, cols: dict[str, np.ndarray], window: int | None = LIVE_WINDOW
) -> FeatureFrame:
    close, high, low, volume = cols["close"], cols["high"], cols["low"], cols["volume"]
    n = len(close)
    if window is not None and window < 1:
        raise ValueError("window must be >= 1 or None")
    values = _returns(close, cols["close_time"], interval_ms(interval), window)
    values["volume"] = volume.astype(float).copy()
    values["volume_z"] = _volume_z(volume, VOLUME_Z_WINDOW, window)
    values["rsi14"] = _rsi(close, 14, window)
    for span in (9, 21, 50):
        values[f"ema{span}"] = _ema(close, span, window)
    fits = window is None or window >= 72
    values["sma72"] = _rolling_mean(close, 72) if fits else _nan(n)
    mid, upper, lower = _bollinger(close) if window is None or window >= 20 else (_nan(n),) * 3
    values["bb_upper"], values["bb_lower"] = upper, lower
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        values["bb_width"] = np.where(mid > 0, width / mid, np.nan)
        values["bb_pct_b"] = np.where(width > 0, (close - lower) / width, np.nan)
        atr = _atr(high, low, close, 14, window)
        values["atr_pct"] = atr / close
    values["momentum14"] = _momentum(close, 14) if window is None or window > 14 else _nan(n)
    er_fits = window is None or window > 30
    values["efficiency_ratio30"] = _efficiency_ratio(close, 30) if er_fits else _nan(n)
    for name, arr in values.items():  # compute_features turns every non-finite value into None
        arr[~np.isfinite(arr)] = np.nan
        values[name] = arr

    er, sma72 = values["efficiency_ratio30"], values["sma72"]
    known = ~np.isnan(er) & ~np.isnan(sma72) & (np.nan_to_num(sma72) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        trending = known & (er > TREND_ER_MIN) & (np.abs(close - sma72) / sma72 > TREND_DIST_MIN)
    n_bars = np.arange(1, n + 1) if window is None else np.minimum(np.arange(1, n + 1), window)
    return FeatureFrame(
        symbol=symbol,
        interval=interval,
        open_time=cols["open_time"],
        close_time=cols["close_time"],
        open=cols["open"],
        high=high,
        low=low,
        close=close,
        values=values,
        n_bars=n_bars,
        trending=trending,
        regime_known=known,
    )
