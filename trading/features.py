"""Per-symbol features for the snapshot and the rule policy (SPEC §2, §7); activity code.

Conventions:

* Indicators (RSI, EMAs, SMA72, bands, ATR, momentum, ER, volume z) use the *closed* bars of the
  decision interval only, so they do not flicker while a bar is forming. The latest tick
  ``price`` is used where a level is compared with the current price: the returns, Bollinger
  %B, ATR as a fraction of price and the distance to SMA72 in the regime rule.
* A return over horizon H compares ``price`` with the close of the latest bar that closed at
  least H before ``time_ms``. The finer series is tried first (more precise), then the decision
  bars; a series is used only if its interval is <= H, and a reference older than
  H + interval (a gap in the data) gives no return rather than a wrong one.
* Every optional field that cannot be computed is None and named in ``missing``; "regime" is
  named too when it is "unknown".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from trading.config import interval_seconds
from trading.indicators import (
    atr_wilder,
    bollinger,
    efficiency_ratio,
    ema,
    momentum,
    rsi_wilder,
    sma,
    zscore_last,
)
from trading.models import Bar, SymbolFeatures

HOUR_MS = 3_600_000
RETURN_HORIZONS_MS: dict[str, int] = {
    "ret_1h": HOUR_MS,
    "ret_4h": 4 * HOUR_MS,
    "ret_24h": 24 * HOUR_MS,
    "ret_7d": 7 * 24 * HOUR_MS,
}
VOLUME_Z_WINDOW = 50
TREND_ER_MIN = 0.45  # SPEC §7
TREND_DIST_MIN = 0.025  # SPEC §7: |p - SMA72| / SMA72

OPTIONAL_FIELDS: tuple[str, ...] = (
    *RETURN_HORIZONS_MS,
    "volume",
    "volume_z",
    "rsi14",
    "ema9",
    "ema21",
    "ema50",
    "sma72",
    "bb_upper",
    "bb_lower",
    "bb_pct_b",
    "bb_width",
    "atr_pct",
    "momentum14",
    "efficiency_ratio30",
)


def classify_regime(
    er30: float | None,
    price: float | None,
    sma72: float | None,
    er_min: float = TREND_ER_MIN,
    dist_min: float = TREND_DIST_MIN,
) -> str:
    """SPEC §7 symbol regime: "trending", "ranging", or "unknown" without the inputs."""
    if er30 is None or price is None or sma72 is None or sma72 <= 0:
        return "unknown"
    if er30 > er_min and abs(price - sma72) / sma72 > dist_min:
        return "trending"
    return "ranging"


def regime_of(features: SymbolFeatures) -> str:
    """The regime recomputed from a feature set's own fields (for hand-built features)."""
    return classify_regime(features.efficiency_ratio30, features.price, features.sma72)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _last(series: np.ndarray) -> float | None:
    return _finite(series[-1]) if len(series) else None


def _clean(bars: Sequence[Bar] | None) -> list[Bar]:
    """Closed bars only, one per open time (the later copy wins), oldest first."""
    if not bars:
        return []
    unique = {b.open_time: b for b in bars if b.closed}
    return [unique[t] for t in sorted(unique)]


def _interval_ms(interval: str | None, bars: list[Bar]) -> int | None:
    if interval:
        try:
            return interval_seconds(interval) * 1000
        except ValueError:
            pass
    if bars:  # unknown label: infer from the bar itself (close_time is the last ms)
        return bars[-1].close_time - bars[-1].open_time + 1
    return None


def _horizon_return(
    bars: list[Bar], step_ms: int | None, price: float, time_ms: int, horizon_ms: int
) -> float | None:
    if not bars or step_ms is None or step_ms > horizon_ms:
        return None
    close_times = np.fromiter((b.close_time for b in bars), dtype=np.int64, count=len(bars))
    idx = int(np.searchsorted(close_times, time_ms - horizon_ms, side="right")) - 1
    if idx < 0:
        return None
    if time_ms - int(close_times[idx]) >= horizon_ms + step_ms:
        return None  # gap in the data: the reference is too old to stand for this horizon
    return _finite(price / bars[idx].close - 1.0)


def compute_features(
    symbol: str,
    bars: list[Bar],
    interval: str,
    price: float | None = None,
    time_ms: int | None = None,
    finer: list[Bar] | None = None,
) -> SymbolFeatures:
    """Features of one symbol from its closed decision-interval bars (oldest first).

    ``price``/``time_ms`` default to the most recent closed bar of either series (its close and
    close_time). Raises ValueError only when there is neither a bar nor a price.
    """
    main = _clean(bars)
    fine = _clean(finer)
    if price is None or time_ms is None:
        latest = max([*main[-1:], *fine[-1:]], key=lambda b: b.close_time, default=None)
        if latest is None:
            raise ValueError(f"{symbol}: no closed bars and no price")
        price = latest.close if price is None else price
        time_ms = latest.close_time if time_ms is None else time_ms

    n = len(main)
    close = np.fromiter((b.close for b in main), dtype=float, count=n)
    high = np.fromiter((b.high for b in main), dtype=float, count=n)
    low = np.fromiter((b.low for b in main), dtype=float, count=n)
    volume = np.fromiter((b.volume for b in main), dtype=float, count=n)

    values: dict[str, float | None] = {}
    series = [
        (fine, _interval_ms(fine[0].interval if fine else None, fine)),
        (main, _interval_ms(interval, main)),
    ]
    for name, horizon in RETURN_HORIZONS_MS.items():
        values[name] = None
        for candidate, step in series:
            ret = _horizon_return(candidate, step, price, time_ms, horizon)
            if ret is not None:
                values[name] = ret
                break

    values["volume"] = float(volume[-1]) if n else None
    values["volume_z"] = _finite(zscore_last(volume, VOLUME_Z_WINDOW))
    values["rsi14"] = _last(rsi_wilder(close, 14))
    values["ema9"] = _last(ema(close, 9))
    values["ema21"] = _last(ema(close, 21))
    values["ema50"] = _last(ema(close, 50))
    values["sma72"] = _last(sma(close, 72))

    mid, upper, lower = (_last(s) for s in bollinger(close, 20, 2.0))
    values["bb_upper"], values["bb_lower"] = upper, lower
    values["bb_pct_b"] = values["bb_width"] = None
    if mid is not None and upper is not None and lower is not None:
        width = upper - lower
        values["bb_width"] = _finite(width / mid) if mid > 0 else None
        values["bb_pct_b"] = _finite((price - lower) / width) if width > 0 else None

    atr = _last(atr_wilder(high, low, close, 14))
    values["atr_pct"] = _finite(atr / price) if atr is not None else None
    values["momentum14"] = _finite(momentum(close, 14))
    values["efficiency_ratio30"] = _finite(efficiency_ratio(close, 30))

    regime = classify_regime(values["efficiency_ratio30"], price, values["sma72"])
    missing = [name for name in OPTIONAL_FIELDS if values[name] is None]
    if regime == "unknown":
        missing.append("regime")
    return SymbolFeatures(
        symbol=symbol,
        interval=interval,
        time_ms=time_ms,
        price=price,
        n_bars=n,
        regime=regime,
        missing=missing,
        **values,
    )
