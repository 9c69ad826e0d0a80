"""CSV loading, the synthetic market and resampling, checked against the real shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trading.market_data import (
    find_symbol_csv,
    format_timestamp,
    generate_market,
    load_ohlcv_csv,
    parse_timestamp_ms,
    resample,
    shared_data_dir,
    write_ohlcv_csv,
)
from trading.models import Bar

H = 3_600_000
MAR_1 = parse_timestamp_ms("2025-03-01T00:00:00Z")


def bar(t: int, o: float, h: float, low: float, c: float, v: float = 1.0, interval="1h") -> Bar:
    step = {"1h": H, "4h": 4 * H}[interval]
    return Bar(
        symbol="BTC/USDT",
        interval=interval,
        open_time=t,
        close_time=t + step - 1,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
    )


@pytest.fixture
def data_dir() -> Path:
    found = shared_data_dir()
    if found is None or find_symbol_csv(found, "BTC/USDT", "1h") is None:
        pytest.skip("shared data not available")
    return found


# ---------------------------------------------------------------- locating


def test_shared_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OCW_DATA_DIR", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.setenv("OCW_DATA_DIR", str(tmp_path / "missing"))
    assert shared_data_dir() is None


def test_find_symbol_csv(tmp_path):
    (tmp_path / "binance_BTCUSDT_1h.csv").write_text("x")
    (tmp_path / "ETHUSDT_4h.csv").write_text("x")
    (tmp_path / "binance_BTCUSDT_1m_2025-06.csv").write_text("x")
    assert find_symbol_csv(tmp_path, "BTC/USDT", "1h") == tmp_path / "binance_BTCUSDT_1h.csv"
    assert find_symbol_csv(tmp_path, "ETH/USDT", "4h") == tmp_path / "ETHUSDT_4h.csv"
    assert (
        find_symbol_csv(tmp_path, "BTC/USDT", "1m") == tmp_path / "binance_BTCUSDT_1m_2025-06.csv"
    )
    assert find_symbol_csv(tmp_path, "SOL/USDT", "1h") is None
    assert find_symbol_csv(None, "BTC/USDT", "1h") is None


def test_timestamps_round_trip():
    assert parse_timestamp_ms("2025-03-01T00:00:00Z") == 1_740_787_200_000
    assert parse_timestamp_ms("2025-03-01T00:00:00") == 1_740_787_200_000
    assert parse_timestamp_ms("1740787200000") == 1_740_787_200_000
    assert format_timestamp(1_740_787_200_000) == "2025-03-01T00:00:00Z"
    assert format_timestamp(1_740_787_200_123) == "2025-03-01T00:00:00.123Z"


# ---------------------------------------------------------------- CSV


def test_write_then_load_round_trips(tmp_path):
    bars = generate_market(["BTC/USDT"], "1h", 30, start_ms=MAR_1)["BTC/USDT"]
    path = write_ohlcv_csv(bars, tmp_path / "out" / "binance_BTCUSDT_1h.csv")
    text = path.read_text().splitlines()
    assert text[0] == "timestamp,open,high,low,close,volume"
    assert text[1].startswith("2025-03-01T00:00:00Z,60000.0,")
    loaded = load_ohlcv_csv(path, "BTC/USDT", "1h")
    assert loaded == bars
    assert all(b.closed and b.close_time == b.open_time + H - 1 for b in loaded)
    window = load_ohlcv_csv(path, "BTC/USDT", "1h", start_ms=MAR_1 + 5 * H, end_ms=MAR_1 + 8 * H)
    assert [b.open_time for b in window] == [MAR_1 + 5 * H, MAR_1 + 6 * H, MAR_1 + 7 * H]


GOOD = "2025-03-01T00:00:00Z,100,110,90,105,5"


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("2025-03-01T01:00:00Z,100,110,90,105", "columns"),
        ("2025-03-01T01:00:00Z,100,abc,90,105,5", "abc"),
        ("not-a-time,100,110,90,105,5", "not-a-time"),
        ("2025-03-01T01:00:00Z,-100,110,90,105,5", "open"),
        ("2025-03-01T01:00:00Z,100,110,90,105,-5", "volume"),
        ("2025-03-01T01:00:00Z,100,110,90,105,nan", "volume"),
        ("2025-03-01T01:00:00Z,100,80,90,85,5", "outside"),
        ("2025-03-01T01:00:00Z,100,110,90,120,5", "outside"),
        ("2025-03-01T00:00:00Z,100,110,90,105,5", "not after"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, row, needle):
    path = tmp_path / "bad.csv"
    path.write_text(f"timestamp,open,high,low,close,volume\n{GOOD}\n{row}\n")
    with pytest.raises(ValueError, match=rf"bad\.csv:3: .*{needle}"):
        load_ohlcv_csv(path, "BTC/USDT", "1h")


def test_bad_header_rejected(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(f"date,o,h,l,c,v\n{GOOD}\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: expected header"):
        load_ohlcv_csv(path, "BTC/USDT", "1h")


def test_real_file_loads(data_dir):
    bars = load_ohlcv_csv(data_dir / "binance_BTCUSDT_4h.csv", "BTC/USDT", "4h", start_ms=MAR_1)
    assert bars[0].open_time == MAR_1 and bars[0].open == 84349.95
    gap = load_ohlcv_csv(
        data_dir / "binance_BTCUSDT_1h.csv",
        "BTC/USDT",
        "1h",
        start_ms=parse_timestamp_ms("2023-03-24T11:00:00Z"),
        end_ms=parse_timestamp_ms("2023-03-24T16:00:00Z"),
    )
    # the documented Binance outage: 12:00 has zero volume and 13:00 is missing
    assert [format_timestamp(b.open_time)[11:16] for b in gap] == [
        "11:00",
        "12:00",
        "14:00",
        "15:00",
    ]
    assert gap[1].volume == 0


# ---------------------------------------------------------------- synthetic market


SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT", "DOGE/USDT"]


@pytest.fixture(scope="module")
def market() -> dict[str, list[Bar]]:
    return generate_market(SYMBOLS, "1h", 3000, seed=11)


def test_same_seed_same_market(market):
    assert generate_market(SYMBOLS, "1h", 3000, seed=11) == market
    other = generate_market(SYMBOLS, "1h", 3000, seed=12)
    assert other["BTC/USDT"][-1].close != market["BTC/USDT"][-1].close
    # a symbol's path does not depend on which other symbols were asked for
    assert generate_market(["ETH/USDT"], "1h", 3000, seed=11)["ETH/USDT"] == market["ETH/USDT"]


def test_bars_are_consistent(market):
    for symbol, bars in market.items():
        assert len(bars) == 3000
        for prev, b in zip(bars, bars[1:], strict=False):
            assert b.open_time == prev.open_time + H
            assert b.open == prev.close
        for b in bars:
            assert b.symbol == symbol and b.interval == "1h" and b.closed
            assert b.close_time == b.open_time + H - 1
            assert b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close)
            assert b.low > 0 and b.volume > 0
    assert market["BTC/USDT"][0].open == 60_000.0
    assert market["ETH/USDT"][0].open == 3_000.0
    assert market["SOL/USDT"][0].open == 150.0
    assert market["PAXG/USDT"][0].open == 2_600.0
    assert market["DOGE/USDT"][0].open == 100.0
    assert market["BTC/USDT"][0].open_time == parse_timestamp_ms("2025-01-01T00:00:00Z")


def _returns(bars: list[Bar]) -> np.ndarray:
    return np.diff(np.log([b.close for b in bars]))


def test_symbols_are_correlated_gold_less_so(market):
    btc, eth, sol, paxg = (_returns(market[s]) for s in SYMBOLS[:4])
    assert np.corrcoef(btc, eth)[0, 1] > 0.5
    assert np.corrcoef(btc, sol)[0, 1] > 0.5
    assert np.corrcoef(btc, paxg)[0, 1] < np.corrcoef(btc, eth)[0, 1] - 0.2


def test_regimes_and_volume_follow_volatility(market):
    bars = market["BTC/USDT"]
    r = _returns(bars)
    windows = r[: len(r) // 48 * 48].reshape(-1, 48).std(axis=1)
    assert windows.max() / windows.min() > 2.5  # volatility clusters, not a constant-vol walk
    ranges = np.array([(b.high - b.low) / b.open for b in bars])
    volumes = np.array([b.volume for b in bars])
    assert np.corrcoef(ranges, np.log(volumes))[0, 1] > 0.3
    prices = np.array([b.close for b in bars])
    assert prices.min() > 10_000 and prices.max() < 400_000


def test_generate_rejects_misaligned_start():
    with pytest.raises(ValueError, match="aligned"):
        generate_market(["BTC/USDT"], "4h", 10, start_ms=MAR_1 + H)


# ---------------------------------------------------------------- resample


def test_resample_aggregates_aligned_complete_groups():
    start = MAR_1 + 2 * H  # starts mid-group: the 00:00 group is incomplete
    bars = [
        bar(start + i * H, 100 + i, 101 + i + (i == 4), 99 + i, 100.5 + i, v=1 + i)
        for i in range(10)
    ]
    out = resample(bars, "4h")
    assert [b.open_time for b in out] == [MAR_1 + 4 * H, MAR_1 + 8 * H]
    first = out[0]
    assert first.interval == "4h" and first.close_time == MAR_1 + 8 * H - 1 and first.closed
    assert (first.open, first.high, first.low, first.close) == (102, 106, 101, 105.5)
    assert first.volume == 3 + 4 + 5 + 6


def test_resample_drops_groups_with_a_gap_and_rejects_non_multiples():
    bars = [bar(MAR_1 + i * H, 100, 101, 99, 100) for i in range(8) if i != 2]
    assert [b.open_time for b in resample(bars, "4h")] == [MAR_1 + 4 * H]
    with pytest.raises(ValueError, match="multiple"):
        resample(bars, "5m")
    assert resample([], "4h") == []


def test_resample_matches_real_4h_file(data_dir):
    end = MAR_1 + 60 * 24 * H
    hourly = load_ohlcv_csv(data_dir / "binance_BTCUSDT_1h.csv", "BTC/USDT", "1h", MAR_1, end)
    real = load_ohlcv_csv(data_dir / "binance_BTCUSDT_4h.csv", "BTC/USDT", "4h", MAR_1, end)
    ours = resample(hourly, "4h")
    assert len(ours) == len(real) == 360
    for a, b in zip(ours, real, strict=True):
        assert (a.open_time, a.close_time, a.open, a.high, a.low, a.close) == (
            b.open_time,
            b.close_time,
            b.open,
            b.high,
            b.low,
            b.close,
        )
        assert a.volume == pytest.approx(b.volume, rel=1e-12)
