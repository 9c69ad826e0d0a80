"""BarStore: a closed bar is reported once, stale and repeated frames are counted, not stored."""

from __future__ import annotations

import time

import pytest

from signals.bar_store import BarStore
from trading.models import Bar

H = 3_600_000
T0 = 1_740_787_200_000


def bar(
    i: int, closed: bool = True, close: float = 100.0, interval: str = "1h", symbol="BTC/USDT"
) -> Bar:
    step = {"1h": H, "4h": 4 * H}[interval]
    t = T0 + i * step
    return Bar(
        symbol=symbol,
        interval=interval,
        open_time=t,
        close_time=t + step - 1,
        open=100.0,
        high=max(100.0, close) + 1,
        low=min(100.0, close) - 1,
        close=close,
        volume=1.0,
        closed=closed,
    )


def test_in_progress_then_close_reports_once():
    store = BarStore()
    assert store.update(bar(0, closed=False, close=101), T0 + 10) is False
    assert store.current("BTC/USDT", "1h").close == 101
    assert store.closed_bars("BTC/USDT", "1h") == []
    assert store.update(bar(0, close=102), T0 + H - 1) is True
    assert store.current("BTC/USDT", "1h") is None
    assert [b.close for b in store.closed_bars("BTC/USDT", "1h")] == [102]
    # the same closed frame again (reconnect, replayed buffer) is not acted on twice
    assert store.update(bar(0, close=102), T0 + H - 1) is False
    assert store.stats == {"updates": 3, "closed": 1, "duplicates": 1, "out_of_order": 0}


def test_updates_older_than_last_closed_are_ignored():
    store = BarStore()
    store.update(bar(5), T0 + 6 * H - 1)
    assert store.update(bar(5, closed=False, close=50), T0 + 5 * H + 10) is False
    assert store.update(bar(3), T0 + 4 * H - 1) is False
    assert store.update(bar(4, closed=False), T0 + 4 * H + 5) is False
    assert store.stats["out_of_order"] == 3 and store.stats["duplicates"] == 0
    assert [b.open_time for b in store.closed_bars("BTC/USDT", "1h")] == [T0 + 5 * H]
    assert store.current("BTC/USDT", "1h") is None
    assert store.last_price("BTC/USDT").price == 100.0


def test_stale_in_progress_update_does_not_replace_newer_one():
    store = BarStore()
    store.update(bar(0, closed=False, close=103), T0 + 200)
    assert store.update(bar(0, closed=False, close=101), T0 + 100) is False
    assert store.current("BTC/USDT", "1h").close == 103
    store.update(bar(1, closed=False, close=104), T0 + H + 5)
    assert store.update(bar(0, closed=False, close=99), T0 + 300) is False
    assert store.current("BTC/USDT", "1h").open_time == T0 + H
    assert store.stats["out_of_order"] == 2
    # a late close of the previous bar is still new information and counts once
    assert store.update(bar(0, close=102), T0 + H - 1) is True
    assert store.current("BTC/USDT", "1h").open_time == T0 + H


def test_ring_is_bounded_and_limit_returns_newest():
    store = BarStore(maxlen=5)
    closes = [store.update(bar(i, close=100 + i), T0 + (i + 1) * H - 1) for i in range(12)]
    assert all(closes)
    bars = store.closed_bars("BTC/USDT", "1h")
    assert [b.close for b in bars] == [107, 108, 109, 110, 111]
    assert [b.close for b in store.closed_bars("BTC/USDT", "1h", limit=2)] == [110, 111]
    assert store.closed_bars("BTC/USDT", "1h", limit=0) == []
    assert store.closed_bars("ETH/USDT", "1h") == []
    with pytest.raises(ValueError):
        BarStore(maxlen=0)


def test_last_price_is_latest_by_event_time_over_intervals():
    store = BarStore()
    assert store.last_price("BTC/USDT") is None
    store.update(bar(0, closed=False, close=101, interval="4h"), T0 + 500)
    store.update(bar(0, closed=False, close=102, interval="1h"), T0 + 400)  # older event
    tick = store.last_price("BTC/USDT")
    assert (tick.price, tick.time_ms, tick.symbol) == (101, T0 + 500, "BTC/USDT")
    store.update(bar(0, closed=False, close=103, interval="1h"), T0 + 600)
    assert store.last_price("BTC/USDT").price == 103
    assert store.symbols() == ["BTC/USDT"]
    assert store.intervals("BTC/USDT") == ["1h", "4h"]
    assert store.intervals("ETH/USDT") == []


def test_seed_merges_with_stream_and_is_idempotent():
    store = BarStore(maxlen=10)
    store.update(bar(8), T0 + 9 * H - 1)  # the stream got ahead of the REST call
    assert store.seed("BTC/USDT", "1h", [bar(i) for i in range(3, 9)]) == 5
    assert store.seed("BTC/USDT", "1h", [bar(i) for i in range(3, 9)]) == 0
    assert [b.open_time for b in store.closed_bars("BTC/USDT", "1h")] == [
        T0 + i * H for i in range(3, 9)
    ]
    # seeded bars count as seen: their closed frames are duplicates, not new closes
    assert store.update(bar(7), T0 + 8 * H - 1) is False
    assert store.update(bar(9), T0 + 10 * H - 1) is True
    store.seed("BTC/USDT", "1h", [bar(i) for i in range(-10, 3)] + [bar(20, closed=False)])
    assert len(store.closed_bars("BTC/USDT", "1h")) == 10
    assert store.closed_bars("BTC/USDT", "1h")[-1].open_time == T0 + 9 * H
    with pytest.raises(ValueError):
        store.seed("ETH/USDT", "1h", [bar(1)])


def test_seed_on_empty_store_sets_price_and_freshness():
    store = BarStore()
    store.seed("BTC/USDT", "4h", [bar(i, close=100 + i, interval="4h") for i in range(3)])
    assert store.last_price("BTC/USDT").price == 102
    last_close = T0 + 3 * 4 * H - 1
    assert not store.is_stale("BTC/USDT", "4h", last_close + 8 * H)
    assert store.is_stale("BTC/USDT", "4h", last_close + 8 * H + 1)


def test_is_stale():
    store = BarStore()
    assert store.is_stale("BTC/USDT", "1h", T0)  # never seen
    store.update(bar(0, closed=False), T0 + 1000)
    assert not store.is_stale("BTC/USDT", "1h", T0 + 1000 + 2 * H)
    assert store.is_stale("BTC/USDT", "1h", T0 + 1001 + 2 * H)
    assert store.is_stale("BTC/USDT", "4h", T0 + 1000)


def test_update_is_cheap():
    store = BarStore()
    updates = []
    for i in range(2000):
        for j in range(4):
            updates.append((bar(i, closed=False), T0 + i * H + j))
        updates.append((bar(i), T0 + (i + 1) * H - 1))
    start = time.perf_counter()
    closed = sum(store.update(b, t) for b, t in updates)
    rate = len(updates) / (time.perf_counter() - start)
    assert closed == 2000
    assert rate > 200_000, f"only {rate:.0f} updates/s"


def test_insert_closed_merges_repaired_bars_behind_the_stream_once():
    store = BarStore()
    store.seed("BTC/USDT", "1h", [bar(i) for i in range(3)])
    store.update(bar(7), T0 + 8 * H - 1)  # the stream moved on past a hole (3..6)
    assert store.first_gap("BTC/USDT", "1h") == T0 + 3 * H
    assert store.last_closed_open("BTC/USDT", "1h") == T0 + 7 * H
    new = store.insert_closed("BTC/USDT", "1h", [bar(i) for i in (5, 3, 4, 6, 7)])
    assert [b.open_time for b in new] == [T0 + i * H for i in (3, 4, 5, 6)]  # 7 was known
    assert store.first_gap("BTC/USDT", "1h") is None
    assert store.insert_closed("BTC/USDT", "1h", [bar(4), bar(8, closed=False)]) == []
    assert [b.open_time for b in store.closed_bars("BTC/USDT", "1h")] == [
        T0 + i * H for i in range(8)
    ]
    assert store.last_closed_open("ETH/USDT", "1h") is None


def test_insert_closed_reports_only_bars_the_ring_keeps():
    store = BarStore(maxlen=3)
    store.seed("BTC/USDT", "1h", [bar(i) for i in (5, 6, 7)])
    assert store.insert_closed("BTC/USDT", "1h", [bar(1), bar(8)]) == [bar(8)]


def test_daily_bars_never_look_ahead():
    from signals.bar_store import DailyBarsRequest

    store = BarStore()
    day = 24 * H
    days = [
        Bar(
            symbol="BTC/USDT",
            interval="1d",
            open_time=T0 + i * day,
            close_time=T0 + (i + 1) * day - 1,
            open=100.0,
            high=101.0,
            low=99.0,
            close=100.0,
            volume=1.0,
        )
        for i in range(10)
    ]
    store.seed("BTC/USDT", "1d", days)
    got = store.daily_bars(DailyBarsRequest(symbol="BTC/USDT", as_of_ms=T0 + 5 * day), 0)
    assert [b.open_time for b in got.bars] == [T0 + i * day for i in range(5)]
    assert not got.stale
    got = store.daily_bars(DailyBarsRequest(symbol="BTC/USDT", limit=3), T0 + 20 * day)
    assert len(got.bars) == 3 and got.stale  # ten days without a new daily bar
