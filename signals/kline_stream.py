"""WebSocket client for Binance's combined kline streams (or the replay feed: only the URL differs).

Frames are validated at the boundary; a bad frame is counted and logged, never fatal. A dropped
connection is retried with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from signals.kline_frames import FrameError, KlineUpdate, NotAKline, parse_kline_frame

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    frames: int = 0
    updates: int = 0
    bad_frames: int = 0
    connects: int = 0
    disconnects: int = 0
    last_error: str = ""


class KlineStream:
    def __init__(
        self,
        base_url: str,
        streams: list[str],
        on_update: Callable[[KlineUpdate], None],
        max_backoff_s: float = 30.0,
    ) -> None:
        if not streams:
            raise ValueError("no streams to subscribe to")
        self.url = f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"
        self.on_update = on_update
        self.max_backoff_s = max_backoff_s
        self.stats = StreamStats()
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                async with websockets.connect(
                    self.url, ping_interval=20, ping_timeout=20, max_size=2**20, open_timeout=10
                ) as ws:
                    self.stats.connects += 1
                    self.connected.set()
                    backoff = 0.5
                    log.info("connected to %s", self.url)
                    await self._consume(ws, stop)
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
            delay = backoff * (0.5 + random.random())
            log.info("reconnecting in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _consume(self, ws, stop: asyncio.Event) -> None:
        async def close_on_stop() -> None:
            await stop.wait()
            await ws.close()

        closer = asyncio.create_task(close_on_stop())
        try:
            async for raw in ws:
                self.handle_frame(raw)
        finally:
            closer.cancel()

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
        self.stats.updates += 1
        self.on_update(update)
