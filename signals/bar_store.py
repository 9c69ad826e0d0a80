"""In-memory bars per (symbol, interval): a ring of closed bars plus the bar in progress.

The listener feeds every kline frame through ``update``; its return value says whether a
bar has just closed, which is what wakes strategies. Streams repeat and reorder frames
(reconnects, REST bootstrap overlapping the stream), so a closed bar is reported once and
anything older than the last closed bar is dropped and counted instead of being stored.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from pydantic import Field

from trading.config import INTERVAL_SECONDS, interval_seconds
from trading.models import Bar, Model, PriceTick


class DailyBarsRequest(Model):
    """``market_daily_bars``: closed 1d bars of a symbol, none closing after ``as_of_ms``."""

    symbol: str
    as_of_ms: int | None = None  # None: up to the latest closed day
    limit: int = Field(default=400, ge=1, le=1000)


class DailyBarsResult(Model):
    symbol: str
    bars: list[Bar] = Field(default_factory=list)  # oldest first
    stale: bool = False  # the newest bar is more than two days older than ``as_of_ms``


class _Series:
    """State of one (symbol, interval); slots keep the hot path to attribute access."""

    __slots__ = ("closed", "current", "current_event_ms", "last_closed_open", "last_event_ms")

    def __init__(self, maxlen: int) -> None:
        self.closed: deque[Bar] = deque(maxlen=maxlen)
        self.current: Bar | None = None
        self.current_event_ms = -1
        self.last_closed_open = -1
        self.last_event_ms = -1


class BarStore:
    """Closed bars and in-progress bars of every stream, plus each symbol's last price."""

    def __init__(self, maxlen: int = 500) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self._series: dict[tuple[str, str], _Series] = {}
        self._last: dict[str, tuple[float, int]] = {}  # symbol -> (price, event ms)
        self._heard: dict[str, float] = {}  # symbol -> monotonic time of its last stream update
        self.stats: dict[str, int] = {"updates": 0, "closed": 0, "duplicates": 0, "out_of_order": 0}

    def _get(self, symbol: str, interval: str) -> _Series:
        series = self._series.get((symbol, interval))
        if series is None:
            series = self._series[(symbol, interval)] = _Series(self.maxlen)
        return series

    def update(self, bar: Bar, event_time_ms: int) -> bool:
        """Apply one kline update; True exactly when it closes a bar not seen closed before."""
        stats = self.stats
        stats["updates"] += 1
        series = self._series.get((bar.symbol, bar.interval))
        if series is None:
            series = self._get(bar.symbol, bar.interval)
        open_time = bar.open_time
        if open_time <= series.last_closed_open:
            if open_time == series.last_closed_open and bar.closed:
                stats["duplicates"] += 1
            else:
                stats["out_of_order"] += 1
            return False
        current = series.current
        if bar.closed:
            series.closed.append(bar)
            series.last_closed_open = open_time
            if current is not None and current.open_time <= open_time:
                series.current = None
            stats["closed"] += 1
            closes = True
        elif (
            current is None
            or open_time > current.open_time
            or (open_time == current.open_time and event_time_ms >= series.current_event_ms)
        ):
            series.current = bar
            series.current_event_ms = event_time_ms
            closes = False
        else:
            stats["out_of_order"] += 1
            return False
        if event_time_ms > series.last_event_ms:
            series.last_event_ms = event_time_ms
        self._heard[bar.symbol] = time.monotonic()
        last = self._last.get(bar.symbol)
        if last is None or event_time_ms >= last[1]:
            self._last[bar.symbol] = (bar.close, event_time_ms)
        return closes

    def seed(self, symbol: str, interval: str, bars: Iterable[Bar]) -> int:
        """Merge closed bars from a REST bootstrap; returns how many were new.

        Bars already known (same open time) keep the stored version; bars still in progress
        are skipped, the stream supplies those.
        """
        return len(self.insert_closed(symbol, interval, bars))

    def insert_closed(self, symbol: str, interval: str, bars: Iterable[Bar]) -> list[Bar]:
        """Merge closed bars (bootstrap, gap repair) in any order; return the new ones, oldest 1st.

        Unlike ``update`` this accepts bars older than the newest closed one, which is what a
        gap repair brings when the stream has already moved on. A bar already stored is never
        returned again, so whoever acts on the result acts on each bar once.
        """
        series = self._get(symbol, interval)
        merged = {b.open_time: b for b in bars if b.closed}
        for b in merged.values():
            if b.symbol != symbol or b.interval != interval:
                raise ValueError(f"seed for {symbol} {interval} got a {b.symbol} {b.interval} bar")
        known = {b.open_time for b in series.closed}
        new = [merged[t] for t in sorted(merged) if t not in known]
        merged.update({b.open_time: b for b in series.closed})
        ordered = [merged[t] for t in sorted(merged)]
        series.closed = deque(ordered[-self.maxlen :], maxlen=self.maxlen)
        if ordered:
            newest = ordered[-1]
            series.last_closed_open = max(series.last_closed_open, newest.open_time)
            if series.current is not None and series.current.open_time <= newest.open_time:
                series.current = None
            series.last_event_ms = max(series.last_event_ms, newest.close_time)
            last = self._last.get(symbol)
            if last is None or newest.close_time >= last[1]:
                self._last[symbol] = (newest.close, newest.close_time)
        kept = {b.open_time for b in series.closed}
        return [b for b in new if b.open_time in kept]

    # ------------------------------------------------------------ queries

    def closed_bars(self, symbol: str, interval: str, limit: int | None = None) -> list[Bar]:
        """Closed bars, oldest first; the newest ``limit`` of them when a limit is given."""
        series = self._series.get((symbol, interval))
        if series is None:
            return []
        bars = series.closed
        if limit is None or limit >= len(bars):
            return list(bars)
        if limit <= 0:
            return []
        return list(bars)[-limit:]

    def last_closed_open(self, symbol: str, interval: str) -> int | None:
        """Open time of the newest closed bar of a series (None before the first one)."""
        series = self._series.get((symbol, interval))
        if series is None or series.last_closed_open < 0:
            return None
        return series.last_closed_open

    def first_gap(self, symbol: str, interval: str) -> int | None:
        """Open time of the oldest bar missing between the oldest and newest closed bar, if any."""
        series = self._series.get((symbol, interval))
        if series is None or len(series.closed) < 2:
            return None
        step = interval_seconds(interval) * 1000
        previous = None
        for bar in series.closed:
            if previous is not None and bar.open_time - previous > step:
                return previous + step
            previous = bar.open_time
        return None

    def current(self, symbol: str, interval: str) -> Bar | None:
        series = self._series.get((symbol, interval))
        return None if series is None else series.current

    def last_price(self, symbol: str) -> PriceTick | None:
        """The latest close seen on any interval of the symbol, by event time."""
        last = self._last.get(symbol)
        if last is None:
            return None
        return PriceTick(symbol=symbol, price=last[0], time_ms=last[1])

    def heard_age_s(self, symbol: str) -> float | None:
        """Wall seconds since the stream last updated ``symbol`` (None: never streamed).

        A position's safety check uses it to tell a fresh price from one the stream has not
        moved for a while (a stalled feed), which it must not use silently."""
        heard = self._heard.get(symbol)
        return None if heard is None else max(0.0, time.monotonic() - heard)

    def symbols(self) -> list[str]:
        return sorted({symbol for symbol, _ in self._series})

    def intervals(self, symbol: str) -> list[str]:
        found = [i for s, i in self._series if s == symbol]
        return sorted(found, key=lambda i: INTERVAL_SECONDS.get(i, 0))

    def last_event_ms(self, symbol: str, interval: str) -> int | None:
        series = self._series.get((symbol, interval))
        if series is None or series.last_event_ms < 0:
            return None
        return series.last_event_ms

    def daily_bars(self, req: DailyBarsRequest, now_ms: int) -> DailyBarsResult:
        """Closed 1d bars up to ``req.as_of_ms`` (no look-ahead), for the regime fit."""
        as_of = now_ms if req.as_of_ms is None else req.as_of_ms
        bars = [b for b in self.closed_bars(req.symbol, "1d") if b.close_time <= as_of]
        bars = bars[-req.limit :]
        stale = not bars or as_of - bars[-1].close_time > 2 * 86_400_000
        return DailyBarsResult(symbol=req.symbol, bars=bars, stale=stale)

    def is_stale(self, symbol: str, interval: str, now_ms: int) -> bool:
        """True when nothing arrived for more than twice the interval (or never)."""
        last = self.last_event_ms(symbol, interval)
        if last is None:
            return True
        return now_ms - last > 2 * interval_seconds(interval) * 1000
