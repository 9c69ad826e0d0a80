"""Liquidations from Binance's ``!forceOrder@arr`` futures stream: rolling 1 h sums, cascade flag.

Binance pushes at most one forced order per symbol per second (the latest), so the sums are a
lower bound of what was liquidated, which is the accepted reading of this stream. Notional is
filled quantity times average price (``z`` x ``ap``). Sums are kept in one-minute buckets per
symbol: memory stays bounded however violent the hour, and the 1 h window is exact to a minute.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from signals.derivatives import LiquidationSummary, LiquidationSymbol
from signals.kline_frames import FrameError, unified_symbol
from signals.kline_stream import FUTURES_WS_URL, WsStream

log = logging.getLogger(__name__)

STREAM = "!forceOrder@arr"
MINUTE_MS = 60_000
WINDOW_MS = 3_600_000
CASCADE_USD = 5_000_000.0


class ForcedOrder(NamedTuple):
    symbol: str  # unified, e.g. "BTC/USDT"
    side: str  # "SELL" closes a long, "BUY" closes a short
    notional: float  # USD
    time_ms: int


def parse_force_order(raw: str | bytes) -> ForcedOrder:
    """One ``forceOrder`` frame (combined or raw) -> a checked ForcedOrder; FrameError if bad."""
    try:
        obj = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise FrameError(f"invalid JSON: {exc}") from None
    if type(obj) is not dict:
        raise FrameError("frame is not a JSON object")
    event = obj.get("data", obj) if "stream" in obj else obj
    if type(event) is not dict or event.get("e") != "forceOrder":
        raise FrameError(f"not a forceOrder event: {str(event)[:80]}")
    order = event.get("o")
    if type(order) is not dict:
        raise FrameError("forceOrder event has no object 'o'")
    side = order.get("S")
    if side not in ("BUY", "SELL"):
        raise FrameError(f"forceOrder side must be BUY or SELL, got {side!r}")
    sym = order.get("s")
    if type(sym) is not str or not sym:
        raise FrameError("forceOrder without a symbol")
    try:
        symbol = unified_symbol(sym)
    except ValueError:  # e.g. a quarterly contract "BTCUSDT_250627": still counts in the total
        symbol = sym
    stamp = order.get("T", event.get("E"))
    if type(stamp) is not int:
        raise FrameError(f"forceOrder time must be an integer, got {stamp!r}")
    qty = _positive(order, "z")
    price = _positive(order, "ap") if _is_positive(order.get("ap")) else _positive(order, "p")
    return ForcedOrder(symbol, side, qty * price, stamp)


def _is_positive(raw: Any) -> bool:
    try:
        return float(raw) > 0
    except (TypeError, ValueError):
        return False


def _positive(order: dict[str, Any], key: str) -> float:
    try:
        value = float(order[key])
    except (KeyError, TypeError, ValueError):
        raise FrameError(f"forceOrder field {key!r} missing or not numeric") from None
    if not math.isfinite(value) or value <= 0:
        raise FrameError(f"forceOrder field {key!r} must be a positive number, got {value}")
    return value


class LiquidationTracker:
    """Rolling one-hour liquidation sums per symbol and over every symbol."""

    def __init__(
        self,
        cascade_usd: float = CASCADE_USD,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if cascade_usd <= 0:
            raise ValueError("cascade_usd must be > 0")
        self.cascade_usd = cascade_usd
        self.clock = clock or (lambda: int(time.time() * 1000))
        # symbol -> deque of [minute, long usd, short usd], oldest first
        self._buckets: dict[str, deque[list[float]]] = {}
        self.events = 0
        self.latest_ms = 0
        self.connected: Callable[[], bool] = lambda: False

    def add(self, order: ForcedOrder) -> None:
        now = self.clock()
        minute = order.time_ms // MINUTE_MS
        if minute <= (now - WINDOW_MS) // MINUTE_MS:  # older than the window: nothing to add to
            return
        buckets = self._buckets.setdefault(order.symbol, deque())
        if not buckets or buckets[-1][0] < minute:
            buckets.append([minute, 0.0, 0.0])
            bucket = buckets[-1]
        else:  # this minute or a late frame: find its bucket, or insert one in order
            bucket = next((b for b in buckets if b[0] == minute), None)
            if bucket is None:
                bucket = [minute, 0.0, 0.0]
                ordered = sorted([*buckets, bucket], key=lambda b: b[0])
                buckets.clear()
                buckets.extend(ordered)
        bucket[1 if order.side == "SELL" else 2] += order.notional
        self.events += 1
        self.latest_ms = max(self.latest_ms, order.time_ms)
        self._prune(buckets, now)

    @staticmethod
    def _prune(buckets: deque[list[float]], now_ms: int) -> None:
        oldest = (now_ms - WINDOW_MS) // MINUTE_MS
        while buckets and buckets[0][0] <= oldest:
            buckets.popleft()

    def summary(self, symbols: list[str] | None = None) -> LiquidationSummary:
        """The last hour: total over every symbol, and per symbol (the given ones, or all)."""
        now = self.clock()
        per: dict[str, LiquidationSymbol] = {}
        total = 0.0
        for symbol, buckets in list(self._buckets.items()):
            self._prune(buckets, now)
            if not buckets:
                del self._buckets[symbol]
                continue
            longs = math.fsum(b[1] for b in buckets)
            shorts = math.fsum(b[2] for b in buckets)
            total += longs + shorts
            if symbols is None or symbol in symbols:
                per[symbol] = LiquidationSymbol(
                    symbol=symbol,
                    notional_1h=longs + shorts,
                    long_liquidated_1h=longs,
                    short_liquidated_1h=shorts,
                    cascade=longs + shorts > self.cascade_usd,
                )
        for symbol in symbols or []:
            per.setdefault(
                symbol,
                LiquidationSymbol(
                    symbol=symbol, notional_1h=0.0, long_liquidated_1h=0.0, short_liquidated_1h=0.0
                ),
            )
        return LiquidationSummary(
            as_of_ms=now,
            total_1h=total,
            cascade=total > self.cascade_usd,
            threshold=self.cascade_usd,
            symbols=per,
            events=self.events,
            connected=self.connected(),
        )


class LiquidationStream(WsStream):
    """The ``!forceOrder@arr`` stream into a LiquidationTracker.

    Liquidations can pause for many minutes in a calm market, so this stream's watchdog is
    much longer than the kline stream's (``watchdog_s``, default 30 min): a reconnect after
    a quiet spell is harmless, a reconnect every five quiet minutes is noise.
    """

    def __init__(
        self,
        tracker: LiquidationTracker,
        base_url: str = FUTURES_WS_URL,
        watchdog_s: float = 1800.0,
        **options: Any,
    ) -> None:
        super().__init__(
            f"{base_url.rstrip('/')}/stream?streams={STREAM}", watchdog_s=watchdog_s, **options
        )
        self.tracker = tracker
        tracker.connected = self.connected.is_set

    def handle_frame(self, raw: str | bytes) -> None:
        self.stats.frames += 1
        try:
            order = parse_force_order(raw)
        except FrameError as err:
            if '"result"' in str(raw)[:40]:  # subscription reply
                return
            self.stats.bad_frames += 1
            if self.stats.bad_frames <= 10 or self.stats.bad_frames % 1000 == 0:
                log.warning("bad forceOrder frame #%d dropped: %s", self.stats.bad_frames, err)
            return
        self.stats.updates += 1
        if order.time_ms > self._last_market_ms:
            self._last_market_ms = order.time_ms
        self.tracker.add(order)
