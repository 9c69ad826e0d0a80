"""A month of real BTC/USDT 1m bars through the real frame parser, BarStore and gate.

Frames are made the way the replay server makes them (4 in-progress updates per base bar
along open→low→high→close, then the closed bar; 1h and 4h aggregated on the fly) and fed
in-process, which is what the listener does with every frame it receives. Asserts SPEC §1's
skip rate and that every closed 4h candle woke the agent at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from signals.bar_store import BarStore
from signals.gate import Gate, GateParams
from signals.kline_frames import encode_kline_frame, parse_kline_frame
from signals.listener_status import (
    ListenerStatus,
    read_status,
    render_listener_status,
    status_path,
    store_staleness,
    write_status,
)
from signals.replay_server import partial_bar
from trading.config import interval_seconds
from trading.market_data import load_ohlcv_csv
from trading.models import Bar
from workers.listener_worker import Listener

FILE = "binance_BTCUSDT_1m_2025-06.csv"


def kline_frame(
    symbol: str,
    interval: str,
    open_time: int,
    close_time: int,
    ohlcv: tuple[float, float, float, float, float],
    closed: bool,
    event_ms: int,
) -> str:
    """A combined-stream kline frame with the fields and types ``encode_kline_frame`` writes,
    built from plain numbers (no model per frame: a month of frames must be cheap to make).
    ``test_fast_frames_match_the_canonical_encoder`` keeps the two in step."""
    o, h, low, c, v = ohlcv
    ex = symbol.replace("/", "")
    q = v * (o + h + low + c) / 4.0
    n = 0 if v <= 0 else 1 + min(int(v), 10_000_000)
    first = -1 if n == 0 else open_time // 1000
    last = -1 if n == 0 else first + n - 1
    return (
        f'{{"stream":"{ex.lower()}@kline_{interval}","data":{{"e":"kline","E":{event_ms},'
        f'"s":"{ex}","k":{{"t":{open_time},"T":{close_time},"s":"{ex}","i":"{interval}",'
        f'"f":{first},"L":{last},"o":"{o!r}","c":"{c!r}","h":"{h!r}","l":"{low!r}",'
        f'"v":"{v!r}","n":{n},"x":{"true" if closed else "false"},"q":"{q!r}",'
        f'"V":"{v / 2.0!r}","Q":"{q / 2.0!r}","B":"0"}}}}}}'
    )


def replay_frames(
    bars: Sequence[Bar], intervals: Sequence[str], updates_per_bar: int = 4
) -> Iterator[str]:
    """Binance combined-stream frames of ``bars`` (one base interval, contiguous) for each
    interval, in market-time order, as the replay server sends them. An aggregate whose start
    precedes the data is skipped, as the replay server does: its true open is unknown."""
    base_ms = interval_seconds(bars[0].interval) * 1000
    per_bar = updates_per_bar + 1
    spans = {i: interval_seconds(i) * 1000 for i in intervals}
    groups: dict[str, list[float]] = {}  # interval -> [group, open, high, low, volume]
    first_open = bars[0].open_time
    for bar in bars:
        symbol = bar.symbol
        for k in range(1, per_bar + 1):
            final = k == per_bar
            event_ms = bar.close_time if final else bar.open_time + k * base_ms // per_bar
            part = bar if final else partial_bar(bar, k / per_bar, bar.open_time, bar.close_time)
            for interval in intervals:
                span = spans[interval]
                if span == base_ms:
                    values = (part.open, part.high, part.low, part.close, part.volume)
                    yield kline_frame(
                        symbol, interval, bar.open_time, bar.close_time, values, final, event_ms
                    )
                    continue
                group = bar.open_time - bar.open_time % span
                if group < first_open:
                    continue
                state = groups.get(interval)
                if state is None or state[0] != group:
                    state = groups[interval] = [group, bar.open, bar.high, bar.low, 0.0]
                high = max(state[2], part.high)
                low = min(state[3], part.low)
                volume = state[4] + part.volume
                closes = final and bar.close_time == group + span - 1
                values = (state[1], high, low, part.close, volume)
                if final:  # fold the completed base bar into its group
                    state[2], state[3], state[4] = high, low, volume
                yield kline_frame(
                    symbol, interval, group, group + span - 1, values, closes, event_ms
                )


def test_fast_frames_match_the_canonical_encoder():
    bar = Bar(
        symbol="BTC/USDT",
        interval="1h",
        open_time=1_750_000_000_000 - 1_750_000_000_000 % 3_600_000,
        close_time=1_750_000_000_000 - 1_750_000_000_000 % 3_600_000 + 3_599_999,
        open=104_000.5,
        high=104_900.0,
        low=103_100.25,
        close=104_321.0,
        volume=123.456,
        closed=False,
    )
    values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    fast = kline_frame(bar.symbol, "1h", bar.open_time, bar.close_time, values, False, 42)
    assert json.loads(fast) == json.loads(encode_kline_frame(bar, 42))


@dataclass
class RecordingDispatcher:
    """Stands in for the WakeDispatcher: records what the listener would send."""

    pushed: list[tuple[str, str, int]] = field(default_factory=list)

    def push(self, reason: str, symbol: str, market_time_ms: int) -> None:
        self.pushed.append((reason, symbol, market_time_ms))


def test_real_month_of_1m_frames_skip_rate_and_every_4h_close_wakes(data_dir, tmp_path):
    bars = load_ohlcv_csv(data_dir / FILE, "BTC/USDT", "1m")
    assert len(bars) > 43_000
    intervals = ["1m", "1h", "4h"]
    store = BarStore()
    gate = Gate("4h", params=GateParams(), symbols=["BTC/USDT"])
    dispatcher = RecordingDispatcher()
    listener = Listener(store, gate, dispatcher)  # the listener's own tick path
    woke_4h: set[int] = set()
    wakes: list[tuple[int, bool]] = []  # (market time, carries a G1 reason)
    started = time.perf_counter()
    for frame in replay_frames(bars, intervals):
        update = parse_kline_frame(frame)
        before = len(dispatcher.pushed)
        listener.on_update(update)
        bar = update.bar
        new = [r for r, _, _ in dispatcher.pushed[before:]]
        if new:
            g1 = "candle_close:BTC/USDT:4h" in new
            wakes.append((update.event_time_ms, g1))
            if g1 and bar.interval == "4h" and bar.closed:
                woke_4h.add(bar.open_time)
    elapsed = time.perf_counter() - started

    c = gate.counters
    span = 4 * 3_600_000
    first_group = -(-bars[0].open_time // span) * span
    expected = {
        t
        for t in range(first_group, bars[-1].close_time + 1, span)
        if t + span - 1 <= bars[-1].close_time
    }
    assert len(expected) == 179  # 2025-06-01 20:00 .. 2025-07-01 12:00
    assert woke_4h == expected  # every closed decision candle woke, none was held
    assert c.by_layer["G1"] == len(expected)
    assert c.ticks > 640_000  # 5 frames per 1m bar on 1m, 1h and 4h
    assert c.skip_rate >= 0.95, c.as_dict()
    assert c.woken == c.ticks - c.skipped
    assert c.by_layer.get("G3", 0) > 0  # real data has outliers
    # cooldown: a wake without G1 comes at least 60 s of market time after the previous wake
    assert len(wakes) == c.woken
    assert all(
        g1 or t - prev >= 60_000 for (prev, _), (t, g1) in zip(wakes, wakes[1:], strict=False)
    )
    print(f"replay: {c.ticks} frames in {elapsed:.1f}s, {c.as_dict()}")

    # the status file the listener writes for `ocw status`
    market_ms, stale, series = store_staleness(store)
    path = status_path(tmp_path)
    write_status(
        path,
        ListenerStatus(
            written_at_ms=1_000_000,
            started_at_ms=0,
            pid=1,
            mode="replay",
            market_time_ms=market_ms,
            gate=c.as_dict(),
            store=dict(store.stats),
            stale_series=stale,
            series=series,
            wakes_sent=c.woken,
        ),
    )
    status = read_status(path)
    assert status is not None and status.gate["ticks"] == c.ticks and stale == []
    text = render_listener_status(status, at_ms=1_004_000)
    assert "written 4 s ago" in text and f"({c.skip_rate:.2%})" in text and "G1 179" in text
