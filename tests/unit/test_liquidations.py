"""forceOrder frames validated; rolling 1 h sums per symbol and in total; the cascade flag."""

from __future__ import annotations

import json

import pytest

from signals.kline_frames import FrameError
from signals.liquidations import LiquidationTracker, parse_force_order

T0 = 1_800_000_000_000
MIN = 60_000


def frame(symbol="BTCUSDT", side="SELL", qty="2", price="50000", t=T0, combined=True) -> str:
    event = {
        "e": "forceOrder",
        "E": t + 5,
        "o": {
            "s": symbol,
            "S": side,
            "o": "LIMIT",
            "f": "IOC",
            "q": qty,
            "p": "49000",
            "ap": price,
            "X": "FILLED",
            "l": qty,
            "z": qty,
            "T": t,
        },
    }
    return json.dumps({"stream": "!forceOrder@arr", "data": event} if combined else event)


def test_parses_combined_and_raw_frames() -> None:
    order = parse_force_order(frame())
    assert order == ("BTC/USDT", "SELL", 100_000.0, T0)
    assert parse_force_order(frame(combined=False, side="BUY")).side == "BUY"
    # quarterly contracts cannot be split into base/quote but still count
    assert parse_force_order(frame(symbol="BTCUSDT_260327")).symbol == "BTCUSDT_260327"


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{oops", "invalid JSON"),
        (json.dumps({"e": "kline"}), "not a forceOrder"),
        (frame(side="HOLD"), "side"),
        (frame(qty="-1"), "'z'"),
        (frame(qty="NaN"), "'z'"),
        (json.dumps({"e": "forceOrder", "E": 1}), "no object 'o'"),
    ],
)
def test_rejects_malformed_frames(raw: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        parse_force_order(raw)


def test_rolling_hour_per_symbol_and_total_with_cascade() -> None:
    now = [T0]
    tracker = LiquidationTracker(cascade_usd=5_000_000, clock=lambda: now[0])
    tracker.add(parse_force_order(frame(qty="40", price="50000", t=T0)))  # 2.0M longs
    tracker.add(parse_force_order(frame(symbol="ETHUSDT", side="BUY", qty="500", price="3000")))
    now[0] = T0 + 30 * MIN
    tracker.add(parse_force_order(frame(qty="50", price="50000", t=now[0])))  # 2.5M longs
    s = tracker.summary(["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    assert s.total_1h == pytest.approx(6_000_000)
    assert s.cascade is True and s.events == 3
    btc = s.symbols["BTC/USDT"]
    assert btc.long_liquidated_1h == pytest.approx(4_500_000) and btc.short_liquidated_1h == 0
    assert btc.cascade is False
    assert s.symbols["ETH/USDT"].short_liquidated_1h == pytest.approx(1_500_000)
    assert s.symbols["SOL/USDT"].notional_1h == 0
    now[0] = T0 + 61 * MIN  # the first minute has left the window
    s = tracker.summary()
    assert s.total_1h == pytest.approx(2_500_000) and s.cascade is False
    assert set(s.symbols) == {"BTC/USDT"}
    now[0] = T0 + 200 * MIN
    assert tracker.summary().total_1h == 0


def test_late_frames_land_in_their_minute_and_ancient_ones_are_ignored() -> None:
    now = [T0 + 10 * MIN]
    tracker = LiquidationTracker(clock=lambda: now[0])
    tracker.add(parse_force_order(frame(qty="1", t=T0 + 10 * MIN)))
    tracker.add(parse_force_order(frame(qty="1", t=T0 + 5 * MIN)))  # late, within the hour
    tracker.add(parse_force_order(frame(qty="1", t=T0 - 120 * MIN)))  # older than the window
    assert tracker.summary().total_1h == pytest.approx(100_000)
    now[0] = T0 + 66 * MIN  # the late frame's minute expires first
    assert tracker.summary().total_1h == pytest.approx(50_000)
