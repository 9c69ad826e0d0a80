"""The vectorised feature frame equals compute_features bar by bar (live and backtest agree)."""

from __future__ import annotations

import math

import pytest

from trading.backtest.features_frame import compute_feature_frame
from trading.features import OPTIONAL_FIELDS, compute_features
from trading.market_data import find_symbol_csv, generate_market, load_ohlcv_csv, parse_timestamp_ms

TOL = 1e-9


def _assert_same(expected, got, where: str) -> None:
    assert got.regime == expected.regime, where
    assert got.missing == expected.missing, where
    assert got.n_bars == expected.n_bars, where
    assert got.price == expected.price and got.time_ms == expected.time_ms, where
    for name in OPTIONAL_FIELDS:
        a, b = getattr(expected, name), getattr(got, name)
        assert (a is None) == (b is None), f"{where} {name}: {a} vs {b}"
        if a is not None:
            assert math.isclose(a, b, rel_tol=TOL, abs_tol=1e-12), f"{where} {name}: {a} vs {b}"


@pytest.mark.parametrize(("symbol", "interval"), [("BTC/USDT", "4h"), ("SOL/USDT", "1h")])
def test_frame_equals_compute_features_on_real_data(data_dir, symbol, interval) -> None:
    start = parse_timestamp_ms("2025-01-01")
    bars = load_ohlcv_csv(find_symbol_csv(data_dir, symbol, interval), symbol, interval, start)
    bars = bars[:700]
    frame = compute_feature_frame(symbol, interval, bars, window=200)
    # every bar of the warm-up (windows still growing), then a spread of full windows
    rows = [*range(0, 260), *range(260, len(bars), 3)]
    for i in rows:
        live = compute_features(symbol, bars[max(0, i - 199) : i + 1], interval)
        _assert_same(live, frame.features(i), f"{symbol} row {i}")


def test_frame_without_window_equals_full_history() -> None:
    bars = generate_market(["ETH/USDT"], "4h", 320, seed=3)["ETH/USDT"]
    frame = compute_feature_frame("ETH/USDT", "4h", bars, window=None)
    for i in range(0, 320, 7):
        _assert_same(compute_features("ETH/USDT", bars[: i + 1], "4h"), frame.features(i), str(i))


def test_window_restart_changes_recursive_indicators() -> None:
    """A 60-bar window reseeds EMA50 at its start: the values differ from full history, and
    each still equals compute_features on its own window."""
    bars = generate_market(["BTC/USDT"], "4h", 200, seed=5)["BTC/USDT"]
    short = compute_feature_frame("BTC/USDT", "4h", bars, window=60)
    full = compute_feature_frame("BTC/USDT", "4h", bars, window=None)
    assert short.value("ema50", 150) != pytest.approx(full.value("ema50", 150), rel=1e-6)
    live = compute_features("BTC/USDT", bars[91:151], "4h")
    assert short.value("ema50", 150) == pytest.approx(live.ema50, rel=TOL)
    assert short.value("sma72", 150) is None  # a 60-bar window has no SMA72, as live


def test_window_is_the_live_listener_window() -> None:
    from signals.market_activities import WINDOW
    from trading.backtest.features_frame import LIVE_WINDOW

    assert LIVE_WINDOW == WINDOW
