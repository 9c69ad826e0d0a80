"""WebSocket clients for Binance's public streams (or the replay feed: only the URL differs).

``WsStream`` owns the connection: jittered exponential backoff after a failure, a watchdog that
reconnects when the exchange says nothing for ``watchdog_s`` (the socket can stay open while the
feed is dead), a planned reconnect before Binance's 24 h connection limit, and ``on_reconnect``
after every reconnect so the caller can repair the gap over REST. ``KlineStream`` adds the kline
frames: validated at the boundary (a bad frame is counted and logged, never fatal) and a frame
for a bar older than the newest one seen on its stream dropped and counted.

Keepalive: Binance pings every 20 s (spot) or 3 min (futures) and drops a connection that does
not pong within 1 min (spot) or 10 min (futures); ``websockets`` answers pings by itself. Its
own client pings (every ``ping_interval_s``) are answered by Binance and detect a dead TCP
connection long before the watchdog would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from signals.kline_frames import FrameError, KlineUpdate, NotAKline, parse_kline_frame

log = logging.getLogger(__name__)

SPOT_WS_URL = "wss://stream.binance.com:9443"
FUTURES_WS_URL = "wss://fstream.binance.com"
MAX_CONNECTION_S = 23.5 * 3600  # Binance closes every connection at 24 h
WATCHDOG_S = 300.0  # SPEC §1: five minutes without a message


@dataclass
class StreamStats:
    frames: int = 0
    updates: int = 0
    bad_frames: int = 0
    out_of_order: int = 0
    connects: int = 0
    disconnects: int = 0
    watchdog_reconnects: int = 0
    planned_reconnects: int = 0
    last_message_ms: int = 0  # wall clock of the last frame received
    last_error: str = ""


class WsStream:
    """A reconnecting, watched WebSocket connection; subclasses turn frames into updates."""

    def __init__(
        self,
        url: str,
        max_backoff_s: float = 30.0,
        watchdog_s: float = WATCHDOG_S,
        max_connection_s: float = MAX_CONNECTION_S,
        on_watchdog: Callable[[float], None] | None = None,
        on_reconnect: Callable[[int], None] | None = None,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0,
    ) -> None:
        if watchdog_s <= 0 or max_connection_s <= 0:
            raise ValueError("watchdog_s and max_connection_s must be > 0")
        self.url = url
        self.max_backoff_s = max_backoff_s
        self.watchdog_s = watchdog_s
        self.max_connection_s = max_connection_s
        self.on_watchdog = on_watchdog
        self.on_reconnect = on_reconnect
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.stats = StreamStats()
        self.connected = asyncio.Event()
        self._last_market_ms = 0  # newest event time seen, for on_reconnect's gap start
        self._last_rx = 0.0  # loop time of the last frame

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            delay: float | None = None
            try:
                async with websockets.connect(
                    self.url,
                    ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_timeout_s,
                    max_size=2**20,
                    open_timeout=10,
                    close_timeout=2,
                ) as ws:
                    self.stats.connects += 1
                    self.connected.set()
                    backoff = 0.5
                    log.info("connected to %s", self.url)
                    if self.stats.connects > 1:
                        self._reconnected()
                    ended = await self._consume(ws, stop)
                    if ended == "planned":
                        delay = 0.0
                    elif ended == "watchdog":
                        delay = random.random()  # jitter: many clients may go silent at once
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as err:
                self.stats.last_error = f"{type(err).__name__}: {err}"
                log.warning("stream connection lost (%s)", self.stats.last_error)
            except InvalidURI as err:
                raise ValueError(f"invalid stream URL {self.url}: {err}") from err
            finally:
                if self.connected.is_set():
                    self.stats.disconnects += 1
                self.connected.clear()
            if stop.is_set():
                break
            if delay is None:
                delay = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, self.max_backoff_s)
            log.info("reconnecting in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def _reconnected(self) -> None:
        gap_start = self._last_market_ms or self.stats.last_message_ms or int(time.time() * 1000)
        if self.on_reconnect is not None:
            try:
                self.on_reconnect(gap_start)
            except Exception:  # a callback bug must not kill the stream
                log.exception("on_reconnect callback failed")

    async def _consume(self, ws, stop: asyncio.Event) -> str:
        """Read frames until the connection ends; say why: closed, stop, watchdog or planned.

        The per-frame path only notes the arrival time; a supervisor task sleeps until the
        earliest deadline (silence, connection age) and closes the socket when one is due.
        """
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        ended: list[str] = []
        supervisor = asyncio.create_task(self._supervise(ws, stop, ended), name="ws-supervisor")
        try:
            async for raw in ws:
                self._last_rx = loop.time()
                self.stats.last_message_ms = int(time.time() * 1000)
                self.handle_frame(raw)
        except ConnectionClosed:
            if not ended:
                raise
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        return ended[0] if ended else "closed"

    async def _supervise(self, ws, stop: asyncio.Event, ended: list[str]) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                now = loop.time()
                silent_for = now - self._last_rx
                if stop.is_set():
                    ended.append("stop")
                    await ws.close()
                    return
                if silent_for >= self.watchdog_s:
                    ended.append("watchdog")
                    self.stats.watchdog_reconnects += 1
                    log.warning("no message for %.1f s: reconnecting (watchdog)", silent_for)
                    if self.on_watchdog is not None:
                        try:
                            self.on_watchdog(silent_for)
                        except Exception:
                            log.exception("on_watchdog callback failed")
                    await ws.close(4000, "watchdog")
                    return
                if now - opened >= self.max_connection_s:
                    ended.append("planned")
                    self.stats.planned_reconnects += 1
                    log.info("connection %.0f s old: planned reconnect", now - opened)
                    await ws.close(1000, "planned reconnect")
                    return
                wake = min(self._last_rx + self.watchdog_s, opened + self.max_connection_s)
                await asyncio.wait({stopping}, timeout=max(wake - now, 0.0) + 0.001)
        finally:
            stopping.cancel()

    def handle_frame(self, raw: str | bytes) -> None:
        raise NotImplementedError


class KlineStream(WsStream):
    """Binance's combined kline stream: every frame validated, then handed to ``on_update``."""

    def __init__(
        self,
        base_url: str,
        streams: list[str],
        on_update: Callable[[KlineUpdate], None],
        max_backoff_s: float = 30.0,
        **options: object,
    ) -> None:
        if not streams:
            raise ValueError("no streams to subscribe to")
        super().__init__(
            f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}",
            max_backoff_s=max_backoff_s,
            **options,  # type: ignore[arg-type]
        )
        self.on_update = on_update
        self._newest_open: dict[str, int] = {}  # stream -> newest bar open time seen

    def handle_frame(self, raw: str | bytes) -> None:
        self.stats.frames += 1
        try:
            update = parse_kline_frame(raw)
        except NotAKline:
            return
        except FrameError as err:
            self.stats.bad_frames += 1
            if self.stats.bad_frames <= 10 or self.stats.bad_frames % 1000 == 0:
                log.warning("bad frame #%d dropped: %s", self.stats.bad_frames, err)
            return
        newest = self._newest_open.get(update.stream, -1)
        if update.bar.open_time < newest:
            self.stats.out_of_order += 1
            return
        self._newest_open[update.stream] = update.bar.open_time
        if update.event_time_ms > self._last_market_ms:
            self._last_market_ms = update.event_time_ms
        self.stats.updates += 1
        self.on_update(update)
