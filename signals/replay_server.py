"""A local WebSocket server that replays bars exactly as Binance's kline streams send them.

Replay mode runs the real listener against this server: same URLs (``/stream?streams=...``
combined, ``/ws/<stream>`` raw), same frames, same in-progress updates followed by one
closed frame per bar, aggregated intervals built on the fly. There is one global timeline,
as on an exchange: clients that connect late get frames from the current market time on.
Pacing is scheduled against a monotonic start time so a long replay does not drift. With a
``hold`` (lockstep replay, signals/lockstep.py) the clock pauses after each base bar's closed
frames until the hold returns, and resumes from where it paused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from signals.kline_frames import (
    encode_kline_event,
    exchange_symbol,
    parse_stream_name,
    stream_name,
    unified_symbol,
)
from trading.config import INTERVAL_SECONDS
from trading.market_data import load_ohlcv_csv, parse_timestamp_ms
from trading.models import Bar

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
_BAR_FIELDS = frozenset(Bar.model_fields)
# after a base bar's closed frames: (their event time, the (symbol, interval) streams sent)
Hold = Callable[[int, frozenset[tuple[str, str]]], Awaitable[None]]
# binance_BTCUSDT_1h.csv, BTCUSDT_1h.csv, binance_BTCUSDT_1m_2025-06.csv
_FILE_RE = re.compile(
    r"^(?:(?P<exchange>[a-z0-9]+)_)?(?P<symbol>[A-Za-z0-9]+)_(?P<interval>\d+[mhdw])(?:_[\w-]+)?\.csv$"
)


# ---------------------------------------------------------------- loading


def load_replay_bars(
    paths: Sequence[Path | str], start_ms: int | None = None, end_ms: int | None = None
) -> dict[str, list[Bar]]:
    """Bars per symbol from files named like ``binance_BTCUSDT_1h.csv`` or ``ETHUSDT_4h.csv``."""
    out: dict[str, list[Bar]] = {}
    intervals: set[str] = set()
    for raw in paths:
        path = Path(raw)
        match = _FILE_RE.match(path.name)
        if match is None or match["interval"] not in INTERVAL_SECONDS:
            raise ValueError(
                f"cannot tell symbol and interval from file name {path.name!r}: "
                "name it like binance_BTCUSDT_1h.csv or BTCUSDT_1h.csv"
            )
        try:
            symbol = unified_symbol(match["symbol"])
        except ValueError as exc:
            raise ValueError(f"{path.name}: {exc}") from None
        if symbol in out:
            raise ValueError(f"{path.name}: {symbol} given twice")
        intervals.add(match["interval"])
        out[symbol] = load_ohlcv_csv(path, symbol, match["interval"], start_ms, end_ms)
    if len(intervals) > 1:
        raise ValueError(f"replay files must share one interval, got {sorted(intervals)}")
    return out


# ---------------------------------------------------------------- helpers


def partial_bar(bar: Bar, fraction: float, open_time: int, close_time: int) -> Bar:
    """The bar as it looked ``fraction`` of the way through, along a plausible path.

    Bullish bars go open -> low -> high -> close, bearish ones open -> high -> low -> close;
    high/low are those reached so far and volume grows linearly, so every partial bar is
    consistent with the final one.
    """
    o, h, low, c = bar.open, bar.high, bar.low, bar.close
    first, second = (low, h) if c >= o else (h, low)
    points = ((0.0, o), (1 / 3, first), (2 / 3, second), (1.0, c))
    seen_hi = seen_lo = o
    price = c
    for (t0, p0), (t1, p1) in zip(points, points[1:], strict=False):
        if fraction <= t1:
            price = p0 + (p1 - p0) * (fraction - t0) / (t1 - t0)
            break
        seen_hi, seen_lo = max(seen_hi, p1), min(seen_lo, p1)
    price = min(max(round(price, 8), low), h)
    return Bar.model_construct(
        _BAR_FIELDS,
        symbol=bar.symbol,
        interval=bar.interval,
        open_time=open_time,
        close_time=close_time,
        open=o,
        high=max(seen_hi, price),
        low=min(seen_lo, price),
        close=price,
        volume=round(bar.volume * fraction, 8),
        closed=False,
    )


@dataclass(slots=True, eq=False)
class _Client:
    conn: ServerConnection
    enveloped: bool
    streams: set[tuple[str, str]] = field(default_factory=set)


@dataclass(slots=True)
class _Agg:
    """Completed base bars of the aggregated bar in progress (folded lazily).

    Like Binance, which builds every interval from trades, a base bar without volume (an
    exchange outage fills those with the previous close) sets no open, high or low as long
    as another bar of the group traded.
    """

    group: int
    next_idx: int
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    volume: float = 0.0
    count: int = 0
    traded: bool = False

    def add(self, bar: Bar) -> None:
        self.open, self.high, self.low, self.traded = self.merged(bar)
        self.volume += bar.volume
        self.count += 1

    def merged(self, bar: Bar) -> tuple[float, float, float, bool]:
        """Open, high, low and "traded" of the completed bars plus ``bar``."""
        trades = bar.volume > 0
        if self.count == 0 or (trades and not self.traded):
            return bar.open, bar.high, bar.low, trades
        if self.traded and not trades:
            return self.open, self.high, self.low, True
        return self.open, max(self.high, bar.high), min(self.low, bar.low), self.traded


# ---------------------------------------------------------------- server


class ReplayServer:
    """Replays bars of one base interval as Binance kline streams, on one global clock."""

    def __init__(
        self,
        bars: dict[str, list[Bar]],
        speed: float,
        updates_per_bar: int = 4,
        host: str = "127.0.0.1",
        port: int = 0,
        start_on_first_client: bool = True,
        loop_forever: bool = False,
        max_client_buffer: int = 8 * 2**20,
        hold: Hold | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if updates_per_bar < 0:
            raise ValueError("updates_per_bar must be >= 0")
        bars = {s: list(b) for s, b in bars.items() if b}
        if not bars:
            raise ValueError("no bars to replay")
        intervals = {b.interval for series in bars.values() for b in series}
        if len(intervals) != 1:
            raise ValueError(f"all bars must share one base interval, got {sorted(intervals)}")
        self.base_interval = intervals.pop()
        self._base_ms = INTERVAL_SECONDS[self.base_interval] * 1000
        steps: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for symbol in sorted(bars):
            previous = -1
            for idx, bar in enumerate(bars[symbol]):
                if bar.symbol != symbol:
                    raise ValueError(f"bar of {bar.symbol} in the series of {symbol}")
                if bar.open_time <= previous or bar.open_time % self._base_ms:
                    raise ValueError(f"{symbol}: bars must be increasing and interval-aligned")
                previous = bar.open_time
                steps[bar.open_time].append((symbol, idx))
        self._bars = bars
        self._steps = sorted(steps.items())
        first, last = self._steps[0][0], self._steps[-1][0]
        self._loop_span = -(-(last - first + self._base_ms) // DAY_MS) * DAY_MS
        self._by_name = {exchange_symbol(s).lower(): s for s in bars}
        self.speed = speed
        self.updates_per_bar = updates_per_bar
        self.host = host
        self._port = port
        self.start_on_first_client = start_on_first_client
        self.loop_forever = loop_forever
        self.max_client_buffer = max_client_buffer
        self.hold = hold

        self.done = asyncio.Event()
        self.frames_sent = 0
        self.bars_sent = 0
        self.bars_total = sum(len(b) for b in bars.values())
        self.market_time_ms = first
        self._clock = asyncio.Event()
        self._clock_start = 0.0
        self._clients: set[_Client] = set()
        # (symbol, interval) -> (enveloped connections, raw connections)
        self._subs: dict[tuple[str, str], tuple[set[ServerConnection], set[ServerConnection]]] = {}
        self._active: dict[str, list[str]] = {}  # symbol -> subscribed intervals, ascending
        self._agg: dict[tuple[str, str], _Agg] = {}
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._muted: set[ServerConnection] = set()  # connections that get no more frames

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> ReplayServer:
        self._server = await serve(
            self._handler,
            self.host,
            self._port,
            process_request=self._process_request,
            close_timeout=2.0,  # a stuck client must not hold up stop() for long
        )
        self._task = asyncio.create_task(self._run(), name="replay-clock")
        if not self.start_on_first_client:
            self.start_clock()
        log.info(
            "replay server on %s: %d bars of %s", self.url, self.bars_total, self.base_interval
        )
        return self

    def start_clock(self) -> None:
        """Start the timeline now (idempotent)."""
        if not self._clock.is_set():
            self._clock_start = asyncio.get_running_loop().time()
            self._clock.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._closers):
            task.cancel()

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ faults (for tests)

    def drop_clients(self) -> int:
        """Abort every client connection at once, as a network failure would; returns how many."""
        dropped = 0
        for client in list(self._clients):
            self._drop(client)
            if client.conn.transport is not None:
                client.conn.transport.abort()
                dropped += 1
        return dropped

    def mute_clients(self) -> int:
        """Stop sending to the connections open now (they stay open and answer pings).

        A client that reconnects gets frames again: this is a feed that died silently.
        """
        self._muted.update(c.conn for c in self._clients)
        return len(self._muted)

    def broadcast_raw(self, text: str) -> int:
        """Send one raw text frame (malformed, foreign event, forceOrder) to every client."""
        targets = {c.conn for c in self._clients} - self._muted
        if targets:
            broadcast(targets, text.encode(), text=True)
        return len(targets)

    # ------------------------------------------------------------ connections

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.rstrip("/") in ("/stream", "/ws") or path.startswith("/ws/"):
            return None
        return conn.respond(HTTPStatus.NOT_FOUND, "use /stream?streams=... or /ws/<stream>\n")

    async def _handler(self, conn: ServerConnection) -> None:
        url = urlsplit(conn.request.path if conn.request else "/ws")
        if url.path.rstrip("/") == "/stream":
            client = _Client(conn, enveloped=True)
            names = "/".join(parse_qs(url.query).get("streams", [])).split("/")
        else:
            client = _Client(conn, enveloped=False)
            names = url.path[len("/ws") :].split("/")
        self._clients.add(client)
        for name in names:
            if name:
                self._subscribe(client, name)
        if self.start_on_first_client:
            self.start_clock()
        try:
            async for message in conn:
                await self._control(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._drop(client)

    async def _control(self, client: _Client, message: str | bytes) -> None:
        """Binance's live subscription messages: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS."""
        try:
            request = json.loads(message)
        except ValueError as exc:
            await client.conn.send(json.dumps({"code": 3, "msg": f"Invalid JSON: {exc}"}))
            return
        ident = request.get("id") if isinstance(request, dict) else None
        method = request.get("method") if isinstance(request, dict) else None
        params = request.get("params", []) if isinstance(request, dict) else None
        if not isinstance(method, str) or not isinstance(params, list):
            reply = {
                "code": 2,
                "msg": "Invalid request: need method and a params list",
                "id": ident,
            }
            await client.conn.send(json.dumps(reply))
            return
        result: Any = None
        if method == "SUBSCRIBE":
            for name in params:
                self._subscribe(client, str(name))
        elif method == "UNSUBSCRIBE":
            for name in params:
                self._unsubscribe(client, str(name))
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(stream_name(s, i) for s, i in client.streams)
        else:
            reply = {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": ident}
            await client.conn.send(json.dumps(reply))
            return
        await client.conn.send(json.dumps({"result": result, "id": ident}))

    def _resolve(self, name: str) -> tuple[str, str] | None:
        try:
            _, interval = parse_stream_name(name)
        except ValueError as exc:
            log.warning("ignoring stream %r: %s", name, exc)
            return None
        symbol = self._by_name.get(name.partition("@")[0].lower())
        if symbol is None:
            log.warning("ignoring stream %r: symbol not in this replay", name)
            return None
        if (INTERVAL_SECONDS[interval] * 1000) % self._base_ms:
            log.warning(
                "ignoring stream %r: %s is not a multiple of the base interval %s",
                name,
                interval,
                self.base_interval,
            )
            return None
        return symbol, interval

    def _subscribe(self, client: _Client, name: str) -> None:
        key = self._resolve(name)
        if key is None or key in client.streams:
            return
        client.streams.add(key)
        subs = self._subs.setdefault(key, (set(), set()))
        subs[0 if client.enveloped else 1].add(client.conn)
        self._refresh_active(key[0])

    def _unsubscribe(self, client: _Client, name: str) -> None:
        key = self._resolve(name)
        if key is None or key not in client.streams:
            return
        client.streams.discard(key)
        subs = self._subs[key]
        subs[0 if client.enveloped else 1].discard(client.conn)
        if not subs[0] and not subs[1]:
            del self._subs[key]
        self._refresh_active(key[0])

    def _drop(self, client: _Client) -> None:
        if client not in self._clients:
            return
        self._clients.discard(client)
        self._muted.discard(client.conn)
        for key in list(client.streams):
            self._unsubscribe(client, stream_name(*key))

    def _refresh_active(self, symbol: str) -> None:
        intervals = sorted((i for s, i in self._subs if s == symbol), key=INTERVAL_SECONDS.get)
        if intervals:
            self._active[symbol] = intervals
        else:
            self._active.pop(symbol, None)

    def _evict_slow_clients(self) -> None:
        """Close clients whose unsent data exceeds the limit so they cannot hog memory."""
        for client in list(self._clients):
            transport = client.conn.transport
            if transport is not None and transport.get_write_buffer_size() > self.max_client_buffer:
                log.warning("closing slow client %s", client.conn.remote_address)
                self._drop(client)
                task = asyncio.create_task(client.conn.close(1008, "client too slow"))
                self._closers.add(task)
                task.add_done_callback(self._closers.discard)

    # ------------------------------------------------------------ timeline

    async def _run(self) -> None:
        await self._clock.wait()
        loop = asyncio.get_running_loop()
        first = self._steps[0][0]
        per_bar = self.updates_per_bar + 1
        scale = 1.0 / (1000.0 * self.speed)  # wall seconds per market ms
        offset = 0
        while True:
            for open_ms, entries in self._steps:
                base = open_ms + offset - first
                for k in range(1, per_bar + 1):
                    target = self._clock_start + (base + k * self._base_ms / per_bar) * scale
                    delay = target - loop.time()
                    # never sleep a fixed step: behind schedule means send at once
                    await asyncio.sleep(delay if delay > 0 else 0)
                    sent = self._emit(entries, k, per_bar, offset)
                if self.hold is not None and sent:
                    paused = loop.time()
                    await self.hold(self.market_time_ms, frozenset(sent))
                    self._clock_start += loop.time() - paused  # the timeline resumes here
                if self._clients:
                    self._evict_slow_clients()
            if not self.loop_forever:
                break
            offset += self._loop_span
        self.done.set()
        log.info("replay finished: %d bars, %d frames sent", self.bars_sent, self.frames_sent)

    def _emit(
        self, entries: list[tuple[str, int]], k: int, per_bar: int, offset: int
    ) -> set[tuple[str, str]]:
        """Send one step's frames; on its closed frames, returns the streams that got one."""
        final = k == per_bar
        sent: set[tuple[str, str]] = set()
        for symbol, idx in entries:
            bar = self._bars[symbol][idx]
            open_time = bar.open_time + offset
            close_time = bar.close_time + offset
            event_ms = close_time if final else open_time + k * self._base_ms // per_bar
            self.market_time_ms = event_ms
            if final:
                self.bars_sent += 1
            intervals = self._active.get(symbol)
            if not intervals:
                continue
            if final:
                current = (
                    bar if offset == 0 and bar.closed else _shifted(bar, open_time, close_time)
                )
            else:
                current = partial_bar(bar, k / per_bar, open_time, close_time)
            for interval in intervals:
                if interval == self.base_interval:
                    frame: Bar | None = current
                else:
                    frame = self._aggregate(symbol, interval, idx, current, offset)
                if frame is not None and self._send(frame, event_ms) and final:
                    sent.add((symbol, interval))
        return sent

    def _aggregate(
        self, symbol: str, interval: str, idx: int, current: Bar, offset: int
    ) -> Bar | None:
        """The aggregated bar containing base bar ``idx``, with ``current`` as its latest part.

        None when the data starts inside that aggregated bar: its true open is unknown, and
        a wrong bar is worse than a missing one.
        """
        span = INTERVAL_SECONDS[interval] * 1000
        bars = self._bars[symbol]
        group = current.open_time - current.open_time % span
        if group < bars[0].open_time + offset:
            return None
        state = self._agg.get((symbol, interval))
        if state is None or state.group != group or state.next_idx > idx:
            start = idx
            while start > 0 and bars[start - 1].open_time + offset >= group:
                start -= 1
            state = self._agg[(symbol, interval)] = _Agg(group, start)
        while state.next_idx < idx:  # fold completed base bars, including ones nobody watched
            state.add(bars[state.next_idx])
            state.next_idx += 1
        end = group + span
        closes = current.closed and (
            current.close_time == end - 1
            or (idx + 1 < len(bars) and bars[idx + 1].open_time + offset >= end)
        )
        o, h, low, _ = state.merged(current)
        return Bar.model_construct(
            _BAR_FIELDS,
            symbol=symbol,
            interval=interval,
            open_time=group,
            close_time=end - 1,
            open=o,
            high=h,
            low=low,
            close=current.close,
            volume=state.volume + current.volume,
            closed=closes,
        )

    def _send(self, bar: Bar, event_ms: int) -> bool:
        subs = self._subs.get((bar.symbol, bar.interval))
        if subs is None:
            return False
        enveloped, raw = subs
        if self._muted:
            enveloped, raw = enveloped - self._muted, raw - self._muted
        event = encode_kline_event(bar, event_ms)
        if raw:
            broadcast(raw, event.encode(), text=True)
            self.frames_sent += len(raw)
        if enveloped:
            name = stream_name(bar.symbol, bar.interval)
            broadcast(enveloped, f'{{"stream":"{name}","data":{event}}}'.encode(), text=True)
            self.frames_sent += len(enveloped)
        return bool(raw or enveloped)


def _shifted(bar: Bar, open_time: int, close_time: int) -> Bar:
    return Bar.model_construct(
        _BAR_FIELDS,
        symbol=bar.symbol,
        interval=bar.interval,
        open_time=open_time,
        close_time=close_time,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        closed=True,
    )


async def replay_from_csv(
    paths: Sequence[Path | str],
    speed: float,
    start_ms: int | None = None,
    end_ms: int | None = None,
    **kwargs: Any,
) -> ReplayServer:
    """Load CSV files and start a replay server on them."""
    return await ReplayServer(load_replay_bars(paths, start_ms, end_ms), speed, **kwargs).start()


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m signals.replay_server FILE... --speed 3600``: serve until interrupted."""
    parser = argparse.ArgumentParser(description="Replay CSV bars as Binance kline streams")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--updates-per-bar", type=int, default=4)
    parser.add_argument("--start", help="first bar open time, ISO-8601 UTC")
    parser.add_argument("--end", help="end (exclusive), ISO-8601 UTC")
    parser.add_argument("--loop", action="store_true", help="replay forever")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        server = await replay_from_csv(
            args.paths,
            args.speed,
            start_ms=parse_timestamp_ms(args.start) if args.start else None,
            end_ms=parse_timestamp_ms(args.end) if args.end else None,
            updates_per_bar=args.updates_per_bar,
            port=args.port,
            loop_forever=args.loop,
        )
        try:
            await asyncio.Future()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
