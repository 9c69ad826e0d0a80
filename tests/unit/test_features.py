"""compute_features on hand-made bar series with known answers."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from trading.features import classify_regime, compute_features, regime_of
from trading.indicators import atr_wilder, bollinger, ema, rsi_wilder, sma
from trading.models import Bar

H = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % (4 * H))


def make_bars(
    closes: list[float] | np.ndarray,
    interval: str = "4h",
    step_ms: int = 4 * H,
    start: int = T0,
    volumes: list[float] | None = None,
    symbol: str = "BTC/USDT",
) -> list[Bar]:
    """Bars whose open is the previous close, high/low 0.5 % around the body."""
    bars = []
    prev = float(closes[0])
    for i, c in enumerate(closes):
        c = float(c)
        bars.append(
            Bar(
                symbol=symbol,
                interval=interval,
                open_time=start + i * step_ms,
                close_time=start + (i + 1) * step_ms - 1,
                open=prev,
                high=max(prev, c) * 1.005,
                low=min(prev, c) * 0.995,
                close=c,
                volume=100.0 if volumes is None else volumes[i],
            )
        )
        prev = c
    return bars


def rising(n: int = 200, step: float = 0.005) -> np.ndarray:
    return 100.0 * (1 + step) ** np.arange(n)


def test_returns_from_decision_bars() -> None:
    closes = rising(200)
    f = compute_features("BTC/USDT", make_bars(closes), "4h")
    assert f.price == closes[-1]
    assert f.time_ms == T0 + 200 * 4 * H - 1
    assert f.ret_4h == pytest.approx(closes[-1] / closes[-2] - 1)
    assert f.ret_24h == pytest.approx(closes[-1] / closes[-7] - 1)
    assert f.ret_7d == pytest.approx(closes[-1] / closes[-43] - 1)
    assert f.ret_1h is None and "ret_1h" in f.missing  # 4h bars cannot give a 1h return


def test_short_horizons_use_finer_bars() -> None:
    closes = rising(200)
    hourly = rising(400, 0.001) * 1.5
    fine_start = T0 + 200 * 4 * H - 400 * H  # both series end at the same moment
    finer = make_bars(hourly, "1h", H, fine_start)
    f = compute_features("BTC/USDT", make_bars(closes), "4h", finer=finer)
    assert f.ret_1h == pytest.approx(closes[-1] / hourly[-2] - 1)
    assert f.ret_4h == pytest.approx(closes[-1] / hourly[-5] - 1)
    assert "ret_1h" not in f.missing


def test_tick_price_mid_bar() -> None:
    closes = rising(200)
    bars = make_bars(closes)
    now = bars[-1].close_time + 2 * H  # 2 h into the next (unfinished) bar
    f = compute_features("BTC/USDT", bars, "4h", price=closes[-1] * 1.01, time_ms=now)
    assert f.price == pytest.approx(closes[-1] * 1.01)
    # the latest close at least 4 h before now is the bar before the last one
    assert f.ret_4h == pytest.approx(closes[-1] * 1.01 / closes[-2] - 1)
    # indicators stay on closed bars, price-relative ones use the tick
    assert f.rsi14 == pytest.approx(rsi_wilder(closes, 14)[-1])
    atr = atr_wilder([b.high for b in bars], [b.low for b in bars], closes, 14)[-1]
    assert f.atr_pct == pytest.approx(atr / f.price)


def test_gap_gives_no_return() -> None:
    bars = make_bars(rising(200))
    later = bars[-1].close_time + 3 * 24 * H  # three days without data
    f = compute_features("BTC/USDT", bars, "4h", price=150.0, time_ms=later)
    assert f.ret_4h is None and f.ret_24h is None
    assert f.ret_7d is not None


def test_indicators_match_reference_functions() -> None:
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    bars = make_bars(closes)
    f = compute_features("ETH/USDT", bars, "4h")
    assert f.n_bars == 200
    assert f.ema9 == pytest.approx(ema(closes, 9)[-1])
    assert f.ema21 == pytest.approx(ema(closes, 21)[-1])
    assert f.ema50 == pytest.approx(ema(closes, 50)[-1])
    assert f.sma72 == pytest.approx(closes[-72:].mean())
    mid, up, lo = (s[-1] for s in bollinger(closes, 20, 2.0))
    assert f.bb_upper == pytest.approx(up) and f.bb_lower == pytest.approx(lo)
    assert f.bb_width == pytest.approx((up - lo) / mid)
    assert f.bb_pct_b == pytest.approx((closes[-1] - lo) / (up - lo))
    assert f.momentum14 == pytest.approx(closes[-1] / closes[-15] - 1)
    assert f.missing == ["ret_1h"]


def test_volume_z_of_last_bar_against_previous_50() -> None:
    volumes = [500.0] * 10 + [90.0, 110.0] * 25 + [130.0]  # previous 50: mean 100, std 10
    bars = make_bars(rising(len(volumes)), volumes=volumes)
    f = compute_features("BTC/USDT", bars, "4h")
    assert f.volume == 130.0
    assert f.volume_z == pytest.approx(3.0)


def test_regime_trending_ranging_unknown() -> None:
    trend = compute_features("BTC/USDT", make_bars(rising(200)), "4h")
    assert trend.efficiency_ratio30 == pytest.approx(1.0)
    assert trend.regime == "trending"

    wave = 100 + 3 * np.sin(np.arange(200) * 2 * math.pi / 20)
    rng = compute_features("BTC/USDT", make_bars(wave), "4h")
    assert rng.efficiency_ratio30 < 0.45
    assert rng.regime == "ranging"

    short = compute_features("BTC/USDT", make_bars(rising(60)), "4h")
    assert short.regime == "unknown"
    assert "sma72" in short.missing and "regime" in short.missing
    assert short.rsi14 is not None and short.ema50 is not None


def test_trending_needs_distance_from_sma72() -> None:
    assert classify_regime(0.9, 101.0, 100.0) == "ranging"  # efficient but only 1 % away
    assert classify_regime(0.9, 103.0, 100.0) == "trending"
    assert classify_regime(0.9, 97.0, 100.0) == "trending"  # down-trends count
    assert classify_regime(0.40, 110.0, 100.0) == "ranging"
    assert classify_regime(None, 110.0, 100.0) == "unknown"
    f = compute_features("BTC/USDT", make_bars(rising(200)), "4h")
    assert regime_of(f) == "trending"


def test_unclosed_and_duplicate_bars_are_ignored() -> None:
    bars = make_bars(rising(100))
    forming = bars[-1].model_copy(update={"open_time": bars[-1].open_time + 4 * H, "closed": False})
    f = compute_features("BTC/USDT", [*bars, bars[5], forming], "4h")
    assert f.n_bars == 100
    assert f.price == bars[-1].close


def test_no_bars() -> None:
    f = compute_features("SOL/USDT", [], "4h", price=20.0, time_ms=T0)
    assert f.regime == "unknown" and f.n_bars == 0
    assert f.rsi14 is None and "rsi14" in f.missing and "volume" in f.missing
    with pytest.raises(ValueError):
        compute_features("SOL/USDT", [], "4h")


def test_speed_four_symbols_200_bars() -> None:
    series = {s: make_bars(rising(200), symbol=s) for s in ("A/U", "B/U", "C/U", "D/U")}
    hourly = {s: make_bars(rising(200), "1h", H, symbol=s) for s in series}
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for s, bars in series.items():
            compute_features(s, bars, "4h", finer=hourly[s])
        best = min(best, time.perf_counter() - t)
    assert best < 0.010, f"features for 4 symbols took {best * 1000:.1f} ms"


def test_sma_reference_sanity() -> None:
    closes = rising(80)
    assert compute_features("X/U", make_bars(closes), "4h").sma72 == pytest.approx(
        sma(closes, 72)[-1]
    )
