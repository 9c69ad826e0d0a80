"""The replay server against a real websockets client: format, aggregation, clock, reconnects."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import defaultdict

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from signals.kline_frames import FrameError, KlineUpdate, NotAKline, parse_kline_frame
from signals.replay_server import ReplayServer, load_replay_bars
from trading.market_data import (
    find_symbol_csv,
    generate_market,
    load_ohlcv_csv,
    parse_timestamp_ms,
    resample,
    shared_data_dir,
    write_ohlcv_csv,
)
from trading.models import Bar

H = 3_600_000
JAN_1 = parse_timestamp_ms("2025-01-01T00:00:00Z")


def speed_for(bar_seconds: float, interval_s: int = 3600) -> float:
    """The speed at which one bar of ``interval_s`` takes ``bar_seconds`` of wall time."""
    return interval_s / bar_seconds


async def collect(ws, server: ReplayServer, first_timeout: float = 5.0) -> list[tuple[float, str]]:
    """Every frame until the replay is done and the socket has gone quiet, with arrival times."""
    loop = asyncio.get_running_loop()
    frames = []
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), 0.25 if server.done.is_set() else first_timeout)
        except TimeoutError:
            return frames
        frames.append((loop.time(), raw))


def klines(frames: list[tuple[float, str]]) -> list[KlineUpdate]:
    out = []
    for _, raw in frames:
        try:
            out.append(parse_kline_frame(raw))
        except NotAKline:
            continue
    return out


def by_stream(updates: list[KlineUpdate]) -> dict[str, list[KlineUpdate]]:
    grouped: dict[str, list[KlineUpdate]] = defaultdict(list)
    for u in updates:
        grouped[u.stream].append(u)
    return grouped


def same_bar(a: Bar, b: Bar) -> None:
    assert (a.symbol, a.interval, a.open_time, a.close_time) == (
        b.symbol,
        b.interval,
        b.open_time,
        b.close_time,
    )
    assert (a.open, a.high, a.low, a.close) == (b.open, b.high, b.low, b.close)
    assert a.volume == pytest.approx(b.volume, rel=1e-9, abs=1e-9)


@pytest.fixture
def real_dir():
    found = shared_data_dir()
    if found is None or find_symbol_csv(found, "BTC/USDT", "4h") is None:
        pytest.skip("shared data not available")
    return found


# ---------------------------------------------------------------- format


async def test_combined_stream_format_and_bar_lifecycle():
    market = generate_market(["BTC/USDT", "ETH/USDT"], "1h", 12)
    async with ReplayServer(market, speed=speed_for(0.02), updates_per_bar=3) as server:
        assert server.url == f"ws://127.0.0.1:{server.port}" and server.port > 0
        url = f"{server.url}/stream?streams=btcusdt@kline_1h/ethusdt@kline_1h"
        async with connect(url) as ws:
            frames = await collect(ws, server)
            assert server.done.is_set()
            # after the end nothing more is sent, but the connection stays up
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
            await asyncio.wait_for(await ws.ping(), 1.0)
    assert server.bars_sent == server.bars_total == 24
    assert server.frames_sent == len(frames) == 24 * 4
    assert server.market_time_ms == JAN_1 + 12 * H - 1

    for _, raw in frames:
        obj = json.loads(raw)
        assert set(obj) == {"stream", "data"} and obj["data"]["e"] == "kline"
        k = obj["data"]["k"]
        assert all(isinstance(k[f], str) for f in "ohlcvqVQ")
        assert isinstance(k["t"], int) and isinstance(k["x"], bool)

    updates = klines(frames)
    event_times = [u.event_time_ms for u in updates]
    assert event_times == sorted(event_times)  # one global clock over all symbols
    streams = by_stream(updates)
    assert set(streams) == {"btcusdt@kline_1h", "ethusdt@kline_1h"}
    for stream, symbol in (("btcusdt@kline_1h", "BTC/USDT"), ("ethusdt@kline_1h", "ETH/USDT")):
        seq = streams[stream]
        for i, source in enumerate(market[symbol]):
            part = seq[4 * i : 4 * i + 4]
            assert [u.bar.closed for u in part] == [False, False, False, True]
            same_bar(part[-1].bar, source)
            assert part[-1].event_time_ms == source.close_time
            volumes = [u.bar.volume for u in part]
            assert volumes == sorted(volumes)
            for u in part[:-1]:
                b = u.bar
                assert source.open_time < u.event_time_ms < source.close_time
                assert b.open == source.open and b.open_time == source.open_time
                assert source.low <= b.low <= min(b.open, b.close)
                assert max(b.open, b.close) <= b.high <= source.high


async def test_raw_ws_endpoint_sends_plain_events():
    market = generate_market(["ETH/USDT"], "1h", 3)
    async with (
        ReplayServer(market, speed=speed_for(0.02), updates_per_bar=1) as server,
        connect(f"{server.url}/ws/ethusdt@kline_1h") as ws,
    ):
        frames = await collect(ws, server)
    assert len(frames) == 6
    assert all("stream" not in json.loads(raw) for _, raw in frames)
    updates = klines(frames)
    assert {u.stream for u in updates} == {"ethusdt@kline_1h"}
    same_bar(updates[-1].bar, market["ETH/USDT"][-1])


async def test_unknown_streams_are_ignored_and_subscribe_works(caplog):
    caplog.set_level(logging.WARNING, logger="signals.replay_server")
    market = generate_market(["BTC/USDT", "ETH/USDT"], "1h", 8)
    streams = "dogeusdt@kline_1h/btcusdt@kline_5m/btcusdt@trade/btcusdt@kline_1h"
    async with (
        ReplayServer(market, speed=speed_for(0.03), updates_per_bar=1) as server,
        connect(f"{server.url}/stream?streams={streams}") as ws,
    ):
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1h"], "id": 1}))
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        await ws.send("not json")
        await ws.send(json.dumps({"method": "DANCE", "id": 3}))
        frames = await collect(ws, server)
    replies = [(t, raw) for t, raw in frames if '"stream"' not in raw]
    decoded = [json.loads(raw) for _, raw in replies]
    assert {"result": None, "id": 1} in decoded
    assert {"result": ["btcusdt@kline_1h", "ethusdt@kline_1h"], "id": 2} in decoded
    assert [r["code"] for r in decoded if "code" in r] == [3, 2]
    assert len(decoded) == 4
    for _, raw in replies:  # acks are ignorable, error replies are not
        with pytest.raises(FrameError) as info:
            parse_kline_frame(raw)
        assert isinstance(info.value, NotAKline) == ("result" in raw)
    streams_seen = by_stream(klines([f for f in frames if f not in replies]))
    assert set(streams_seen) == {"btcusdt@kline_1h", "ethusdt@kline_1h"}
    assert len(streams_seen["btcusdt@kline_1h"]) == 16
    assert 0 < len(streams_seen["ethusdt@kline_1h"]) <= 16
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "dogeusdt" in warnings and "not a multiple" in warnings and "btcusdt@trade" in warnings


async def test_unknown_path_is_refused():
    market = generate_market(["BTC/USDT"], "1h", 2)
    async with ReplayServer(market, speed=1.0) as server:
        with pytest.raises(InvalidStatus):
            async with connect(f"{server.url}/nope"):
                pass


# ---------------------------------------------------------------- aggregation


async def test_aggregated_streams_equal_resample():
    start = JAN_1 + 2 * H  # the data starts inside the 00:00 4h bar: that one is not sent
    market = generate_market(["BTC/USDT"], "1h", 26, start_ms=start)
    bars = market["BTC/USDT"]
    url_streams = "btcusdt@kline_4h/btcusdt@kline_2h"
    async with (
        ReplayServer(market, speed=speed_for(0.015), updates_per_bar=3) as server,
        connect(f"{server.url}/stream?streams={url_streams}") as ws,
    ):
        streams = by_stream(klines(await collect(ws, server)))
    for interval, stream in (("4h", "btcusdt@kline_4h"), ("2h", "btcusdt@kline_2h")):
        expected = resample(bars, interval)
        closed = [u for u in streams[stream] if u.bar.closed]
        assert len(closed) == len(expected) > 0
        for u, want in zip(closed, expected, strict=True):
            same_bar(u.bar, want)
            assert u.event_time_ms == want.close_time
    four = streams["btcusdt@kline_4h"]
    assert four[0].bar.open_time == JAN_1 + 4 * H
    # every base update moves the 4h bar: 4 bars x 4 frames, the last one closes it
    first_group = [u for u in four if u.bar.open_time == JAN_1 + 4 * H]
    assert [u.bar.closed for u in first_group] == [False] * 15 + [True]
    assert all(u.bar.close_time == JAN_1 + 8 * H - 1 for u in first_group)
    highs = [u.bar.high for u in first_group]
    assert highs == sorted(highs)


async def test_bars_without_trades_do_not_set_the_aggregated_open():
    def one(i: int, o: float, h: float, low: float, c: float, v: float) -> Bar:
        t = JAN_1 + i * H
        return Bar(
            symbol="BTC/USDT",
            interval="1h",
            open_time=t,
            close_time=t + H - 1,
            open=o,
            high=h,
            low=low,
            close=c,
            volume=v,
        )

    bars = [
        one(0, 100, 100, 100, 100, 0.0),  # outage filler: previous close, no trades
        one(1, 95, 96, 90, 92, 5.0),
        one(2, 92, 94, 91, 93, 2.0),
        one(3, 93, 93, 93, 93, 0.0),
    ]
    async with (
        ReplayServer({"BTC/USDT": bars}, speed=speed_for(0.01), updates_per_bar=1) as server,
        connect(f"{server.url}/ws/btcusdt@kline_4h") as ws,
    ):
        updates = klines(await collect(ws, server))
    assert [u.bar.closed for u in updates] == [False] * 7 + [True]
    first = updates[0].bar
    assert (first.open, first.high, first.low, first.volume) == (100, 100, 100, 0)
    final = updates[-1].bar
    assert (final.open, final.high, final.low, final.close, final.volume) == (95, 96, 90, 93, 7)


@pytest.mark.parametrize(
    ("first", "days", "hours"),
    [
        ("2025-03-01T00:00:00Z", 7, 168),
        ("2023-03-24T00:00:00Z", 1, 23),  # Binance outage: the 13:00 1h candle does not exist
    ],
)
async def test_aggregated_4h_equals_real_binance_4h(real_dir, first, days, hours):
    start = parse_timestamp_ms(first)
    end = start + days * 24 * H
    replay = load_replay_bars([real_dir / "binance_BTCUSDT_1h.csv"], start_ms=start, end_ms=end)
    real_4h = load_ohlcv_csv(real_dir / "binance_BTCUSDT_4h.csv", "BTC/USDT", "4h", start, end)
    assert len(replay["BTC/USDT"]) == hours and len(real_4h) == days * 6
    async with ReplayServer(replay, speed=speed_for(0.4 / hours), updates_per_bar=1) as server:
        url = f"{server.url}/stream?streams=btcusdt@kline_4h/btcusdt@kline_1d"
        async with connect(url) as ws:
            streams = by_stream(klines(await collect(ws, server)))
    closed_4h = [u.bar for u in streams["btcusdt@kline_4h"] if u.bar.closed]
    assert len(closed_4h) == days * 6
    for ours, real in zip(closed_4h, real_4h, strict=True):
        same_bar(ours, real)
    closed_1d = [u.bar for u in streams["btcusdt@kline_1d"] if u.bar.closed]
    assert len(closed_1d) == days
    for ours, want in zip(closed_1d, resample(real_4h, "1d"), strict=True):
        same_bar(ours, want)


# ---------------------------------------------------------------- clock


async def test_reconnect_mid_replay_resumes_at_current_time():
    market = generate_market(["BTC/USDT"], "1h", 60)
    bars = market["BTC/USDT"]
    url_path = "/stream?streams=btcusdt@kline_1h"
    async with ReplayServer(market, speed=speed_for(0.02), updates_per_bar=1) as server:
        first: list[KlineUpdate] = []
        async with connect(server.url + url_path) as ws:
            while sum(u.bar.closed for u in first) < 10:
                first.append(parse_kline_frame(await ws.recv()))
        await asyncio.sleep(0.2)  # about ten bars pass while we are away
        clock_at_reconnect = server.market_time_ms
        async with connect(server.url + url_path) as ws:
            second = klines(await collect(ws, server))
    last_seen = first[-1].bar.open_time
    resumed = second[0]
    assert resumed.event_time_ms >= clock_at_reconnect
    assert resumed.bar.open_time >= last_seen + 5 * H  # not replayed from the start
    closed = [u.bar.open_time for u in second if u.bar.closed]
    # from where it joined, it sees every remaining bar, in order, up to the last one
    assert closed == [b.open_time for b in bars if b.open_time >= closed[0]]
    assert closed[-1] == bars[-1].open_time
    assert server.bars_sent == 60


async def test_pacing_follows_speed_without_drift():
    market = generate_market(["BTC/USDT", "ETH/USDT"], "1h", 20)
    bar_s = 0.04
    loop = asyncio.get_running_loop()
    async with (
        ReplayServer(market, speed=speed_for(bar_s), updates_per_bar=3) as server,
        connect(f"{server.url}/stream?streams=btcusdt@kline_1h") as ws,
    ):
        t0 = loop.time()
        frames = await collect(ws, server)
    arrivals = [t - t0 for (t, _), u in zip(frames, klines(frames), strict=True) if u.bar.closed]
    assert len(arrivals) == 20
    expected = [(i + 1) * bar_s for i in range(20)]
    assert max(abs(a - e) for a, e in zip(arrivals, expected, strict=True)) < 0.1
    assert arrivals[-1] == pytest.approx(20 * bar_s, abs=0.1)


async def test_a_hold_pauses_the_clock_after_each_closed_bar_and_resumes_without_a_burst():
    """Lockstep (signals/lockstep.py): the hold runs after a base bar's closed frames, with their
    event time and streams; while it runs nothing is sent, and after it the bars keep their
    spacing instead of catching up on the time spent paused."""
    market = generate_market(["BTC/USDT", "ETH/USDT"], "1h", 6)
    bar_s = 0.05
    holds: list[tuple[int, frozenset[tuple[str, str]]]] = []

    async def hold(event_ms: int, streams: frozenset[tuple[str, str]]) -> None:
        holds.append((event_ms, streams))
        if len(holds) == 2:
            await asyncio.sleep(0.5)  # an engine busy with the second close

    server = ReplayServer(market, speed=speed_for(bar_s), updates_per_bar=1, hold=hold)
    async with (
        server,
        connect(f"{server.url}/stream?streams=btcusdt@kline_1h/btcusdt@kline_2h") as ws,
    ):
        frames = await collect(ws, server)
    closes = [(t, u) for (t, _), u in zip(frames, klines(frames), strict=True) if u.bar.closed]
    one_h = [t for t, u in closes if u.bar.interval == "1h"]
    assert [e for e, _ in holds] == [b.close_time for b in market["BTC/USDT"]]
    # the streams a client watches (ETH's are not), each sent a frame at the 1h close
    assert {streams for _, streams in holds} == {
        frozenset({("BTC/USDT", "1h"), ("BTC/USDT", "2h")})
    }
    gaps = [b - a for a, b in zip(one_h, one_h[1:], strict=False)]
    assert gaps[1] >= 0.5  # nothing went out while the second close was held
    assert all(g == pytest.approx(bar_s, abs=0.04) for g in gaps[2:])  # no catch-up burst


async def test_start_clock_without_clients_and_done():
    market = generate_market(["BTC/USDT"], "1h", 10)
    server = ReplayServer(market, speed=speed_for(0.01), start_on_first_client=False)
    await server.start()
    try:
        await asyncio.wait_for(server.done.wait(), 2.0)
        assert server.bars_sent == 10 and server.frames_sent == 0
    finally:
        await server.stop()


async def test_waits_for_first_client_by_default():
    market = generate_market(["BTC/USDT"], "1h", 10)
    async with ReplayServer(market, speed=speed_for(0.01)) as server:
        await asyncio.sleep(0.2)
        assert server.bars_sent == 0 and server.market_time_ms == JAN_1
        server.start_clock()
        await asyncio.wait_for(server.done.wait(), 2.0)


async def test_loop_forever_keeps_time_moving_forward():
    market = generate_market(["BTC/USDT"], "1h", 6)
    async with ReplayServer(
        market, speed=speed_for(0.005), updates_per_bar=0, loop_forever=True
    ) as server:
        async with connect(f"{server.url}/ws/btcusdt@kline_1h") as ws:
            got = [parse_kline_frame(await asyncio.wait_for(ws.recv(), 2.0)) for _ in range(15)]
        assert not server.done.is_set()
    times = [u.bar.open_time for u in got]
    assert times == sorted(set(times))
    assert times[6] == JAN_1 + 24 * H  # second pass shifted by whole days
    assert got[6].bar.close == market["BTC/USDT"][0].close


async def _silent_client(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def test_slow_client_does_not_block_others_and_is_closed():
    symbols = ("btcusdt", "ethusdt", "solusdt", "paxgusdt")
    market = generate_market(["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"], "1h", 400)
    everything = "/".join(f"{s}@kline_{i}" for s in symbols for i in ("1h", "4h"))
    bar_s = 0.002
    server = ReplayServer(
        market, speed=speed_for(bar_s), updates_per_bar=4, max_client_buffer=256 * 1024
    )
    await server.start()
    try:
        # about 7 MB for the silent client: more than the kernel buffers can absorb
        reader, writer = await _silent_client(server.port, f"/stream?streams={everything}")
        loop = asyncio.get_running_loop()
        async with connect(f"{server.url}/stream?streams=btcusdt@kline_1h") as fast:
            t0 = loop.time()
            updates = klines(await collect(fast, server))
            elapsed = loop.time() - t0
        closed = [u.bar.open_time for u in updates if u.bar.closed]
        bars = market["BTC/USDT"]
        assert closed == [b.open_time for b in bars if b.open_time >= closed[0]]
        assert len(closed) >= 395
        assert elapsed < 400 * bar_s + 0.5
        # the silent client was closed with 1008 once its backlog passed the limit
        close_frame = b"\x88\x11\x03\xf0client too slow"
        tail = b""
        while close_frame not in tail:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 2.0)
            assert chunk, "connection ended without a close frame"
            tail = tail[-64:] + chunk
        writer.close()
    finally:
        await server.stop()


# ---------------------------------------------------------------- loading and validation


def test_load_replay_bars_infers_symbol_and_interval(tmp_path):
    market = generate_market(["BTC/USDT", "ETH/USDT"], "1h", 5)
    a = write_ohlcv_csv(market["BTC/USDT"], tmp_path / "binance_BTCUSDT_1h.csv")
    b = write_ohlcv_csv(market["ETH/USDT"], tmp_path / "ETHUSDT_1h.csv")
    loaded = load_replay_bars([a, b])
    assert loaded == market
    c = write_ohlcv_csv(market["ETH/USDT"], tmp_path / "ETHUSDT_4h.csv")
    with pytest.raises(ValueError, match="one interval"):
        load_replay_bars([a, c])
    for bad in ("prices.csv", "binance_BTCUSDT_7x.csv", "BTCUSDT-1h.csv"):
        (tmp_path / bad).write_text("timestamp,open,high,low,close,volume\n")
        with pytest.raises(ValueError, match="cannot tell symbol and interval"):
            load_replay_bars([tmp_path / bad])
    (tmp_path / "binance_FOO_1h.csv").write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(ValueError, match="cannot split"):
        load_replay_bars([tmp_path / "binance_FOO_1h.csv"])


def test_server_rejects_bad_input():
    h = generate_market(["BTC/USDT"], "1h", 4)["BTC/USDT"]
    four = generate_market(["ETH/USDT"], "4h", 4)["ETH/USDT"]
    with pytest.raises(ValueError, match="one base interval"):
        ReplayServer({"BTC/USDT": h, "ETH/USDT": four}, speed=1)
    with pytest.raises(ValueError, match="increasing"):
        ReplayServer({"BTC/USDT": h[::-1]}, speed=1)
    with pytest.raises(ValueError, match="speed"):
        ReplayServer({"BTC/USDT": h}, speed=0)
    with pytest.raises(ValueError, match="no bars"):
        ReplayServer({"BTC/USDT": []}, speed=1)
    assert issubclass(NotAKline, FrameError)
