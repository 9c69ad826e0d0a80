"""REST bootstrap at start and gap repair after every stream reconnect.

The stream only tells what happens while it is connected. At start one klines request per
(symbol, interval) fills the BarStore (plus a daily series per symbol for the regime fit);
after a reconnect the bars between the last closed bar the store holds and now are fetched and
merged. Repaired bars count as closed bars for the store, each once, but they are *returned*
rather than pushed through the gate: a reconnect after an hour away must not fire a burst of
candle-close wakes for candles that closed long ago. The listener decides what to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from signals.bar_store import BarStore
from signals.binance_rest import BinanceRest, RestError
from signals.rest_budget import RestUnavailable
from trading.config import interval_seconds
from trading.models import Bar

log = logging.getLogger(__name__)

DAILY = "1d"


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RepairReport:
    """What one bootstrap or repair brought: new closed bars, and the series that failed."""

    new_bars: list[Bar] = field(default_factory=list)  # oldest first within each series
    failed: dict[str, str] = field(default_factory=dict)  # "BTC/USDT 1h" -> reason
    requests: int = 0

    def count(self, symbol: str, interval: str) -> int:
        return sum(1 for b in self.new_bars if b.symbol == symbol and b.interval == interval)

    def newest(self) -> dict[tuple[str, str], Bar]:
        """The newest new bar of each series (what a listener may still act on)."""
        out: dict[tuple[str, str], Bar] = {}
        for bar in self.new_bars:
            key = (bar.symbol, bar.interval)
            if key not in out or bar.open_time > out[key].open_time:
                out[key] = bar
        return out


class GapRepairer:
    """Keeps a BarStore whole across restarts and reconnects, through one BinanceRest."""

    def __init__(
        self,
        rest: BinanceRest,
        store: BarStore,
        symbols: list[str],
        intervals: list[str],
        bootstrap_bars: int = 300,
        daily_bars: int = 400,
        clock: Callable[[], int] = wall_ms,
        concurrency: int = 4,
        on_repaired: Callable[[RepairReport], None] | None = None,
        retry_s: float = 30.0,
    ) -> None:
        if bootstrap_bars < 1 or daily_bars < 0:
            raise ValueError("bootstrap_bars must be >= 1 and daily_bars >= 0")
        self.rest = rest
        self.store = store
        self.symbols = list(symbols)
        self.intervals = list(intervals)
        self.bootstrap_bars = min(bootstrap_bars, store.maxlen)
        self.daily_bars = min(daily_bars, store.maxlen)
        self.clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._repair_lock = asyncio.Lock()
        self.repairs = 0
        self.on_repaired = on_repaired
        self.retry_s = retry_s
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self.last_report: RepairReport | None = None
        self._holes: dict[tuple[str, str], int] = {}  # series -> first missing open time asked

    # ------------------------------------------------------------ bootstrap

    async def bootstrap(self) -> RepairReport:
        """One request per (symbol, interval) for the latest bars, plus the daily series."""
        now = self.clock()
        report = RepairReport()
        jobs = [(s, i, self.bootstrap_bars) for s in self.symbols for i in self.intervals]
        if self.daily_bars and DAILY not in self.intervals:
            jobs += [(s, DAILY, self.daily_bars) for s in self.symbols]
        await asyncio.gather(*(self._latest(s, i, n, now, report) for s, i, n in jobs))
        log.info(
            "bootstrap: %d closed bars over %d series, %d failed",
            len(report.new_bars),
            len(jobs),
            len(report.failed),
        )
        return report

    async def _latest(
        self, symbol: str, interval: str, limit: int, now: int, report: RepairReport
    ) -> None:
        async with self._limit:
            try:
                report.requests += 1
                bars = await self.rest.fetch_ohlcv_page(symbol, interval, limit=limit, now_ms=now)
            except (RestError, RestUnavailable) as err:
                report.failed[f"{symbol} {interval}"] = str(err)
                log.warning("bootstrap of %s %s failed: %s", symbol, interval, err)
                return
        report.new_bars.extend(self.store.insert_closed(symbol, interval, bars))

    # ------------------------------------------------------------ repair

    async def repair(self, intervals: list[str] | None = None) -> RepairReport:
        """Fetch and merge every closed bar missing between the store's last one and now.

        A series the store has never filled gets a bootstrap instead. Concurrent calls (two
        reconnects in a row) are serialised: the second finds little or nothing left to do.
        """
        async with self._repair_lock:
            now = self.clock()
            report = RepairReport()
            series = [(s, i) for s in self.symbols for i in intervals or self.intervals]
            await asyncio.gather(*(self._fill(s, i, now, report) for s, i in series))
            self.repairs += 1
            if report.new_bars or report.failed:
                log.info(
                    "gap repair: %d missing closed bars merged, %d series failed",
                    len(report.new_bars),
                    len(report.failed),
                )
            return report

    async def _fill(self, symbol: str, interval: str, now: int, report: RepairReport) -> None:
        last = self.store.last_closed_open(symbol, interval)
        if last is None:
            limit = self.daily_bars if interval == DAILY else self.bootstrap_bars
            await self._latest(symbol, interval, limit, now, report)
            return
        step = interval_seconds(interval) * 1000
        hole = self.store.first_gap(symbol, interval)  # the stream may have moved past a gap
        since = last + step if hole is None else hole
        if since + step > now:  # the next bar has not closed yet: nothing can be missing
            return
        # a gap longer than the ring: only the newest ``maxlen`` bars would be kept anyway
        floor = now - now % step - self.store.maxlen * step
        since = max(since, floor)
        async with self._limit:
            try:
                report.requests += 1
                bars = await self.rest.fetch_ohlcv(
                    symbol, interval, since, now_ms=now, max_bars=self.store.maxlen
                )
            except (RestError, RestUnavailable) as err:
                report.failed[f"{symbol} {interval}"] = str(err)
                log.warning("gap repair of %s %s failed: %s", symbol, interval, err)
                return
        report.new_bars.extend(self.store.insert_closed(symbol, interval, bars))

    async def refresh_daily(self) -> RepairReport:
        """Bring the daily series up to the last closed day (a no-op while it is current)."""
        if not self.daily_bars:
            return RepairReport()
        return await self.repair([DAILY])

    # ------------------------------------------------------------ after reconnects

    def on_reconnect(self, gap_start_ms: int) -> None:
        """``KlineStream`` callback: schedule a repair."""
        log.info("stream reconnected (gap from %d): repairing over REST", gap_start_ms)
        self.request_repair()

    def check_hole(self, bar: Bar) -> bool:
        """Schedule a repair when a stream bar shows closed bars missing before it.

        Catches what a reconnect repair cannot: a bar that closed during the reconnect but was
        still open at the exchange's clock when the repair asked. Asked once per hole.
        """
        key = (bar.symbol, bar.interval)
        last = self.store.last_closed_open(*key)
        if last is None:
            return False
        first_missing = last + interval_seconds(bar.interval) * 1000
        if bar.open_time <= first_missing or self._holes.get(key) == first_missing:
            return False
        self._holes[key] = first_missing
        log.info("%s %s: closed bars missing from %d: repairing", *key, first_missing)
        self.request_repair()
        return True

    def request_repair(self) -> None:
        """Schedule a repair (one runs at a time; asking during a run queues one more)."""
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._repair_until_whole(), name="gap-repair"
            )

    async def _repair_until_whole(self) -> None:
        """Repair until every series is whole; a ban or outage is waited out, never hammered."""
        while self._pending:
            self._pending = False
            report = await self.repair()
            self.last_report = report
            if self.on_repaired is not None:
                try:
                    self.on_repaired(report)
                except Exception:
                    log.exception("on_repaired callback failed")
            if report.failed:
                self._pending = True
                paused = self.rest.budget.paused_until_ms()
                wait = max(self.retry_s, (paused - wall_ms()) / 1000 if paused else 0.0)
                await asyncio.sleep(wait)

    async def idle(self) -> None:
        """Wait for the scheduled repairs to finish (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
