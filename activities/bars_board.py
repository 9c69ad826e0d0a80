"""The bars board: the listener's closed daily bars where a trading worker can read them.

A policy family (``trading/policies/live.py``) decides on daily bars, months of them, which
live in the listener's BarStore; the decide activity runs on the trading worker. So the
listener writes each symbol's closed 1d bars (``[close_time, high, low, close]``, oldest first)
to a bars board, one row per market task queue, in the same database as the price, feature
and decision boards (a SQLite file under ``OCW_HOME`` on one host, PostgreSQL through
``OCW_DB_URL`` on several): before each wake it sends and every ``OCW_BARS_BOARD_EVERY_S``, but
only when a symbol's newest daily bar changed (a new day) or the row is a minute old.

Beside the bars, the board holds each symbol's settled funding prints (``[funding time,
rate]``, oldest first: a carry family averages the last K of them), in a row of their own
(``<board>/8h/funding``) written when a print arrives: live from the derivatives monitor's
``/fapi/v1/fundingRate`` history, in a replay from the funding files beside the replay's bars,
up to the replay's clock.

The reader (the family decider) keeps only the bars (and prints) at or before the decision's
market time, so a board written later never leaks the future into a decision. When the
board's newest bar of a symbol is more than two days older than that market time the symbol
is reported stale and holds (never sells) until the board catches up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from activities.db import DB_ERRORS
from activities.price_board import BoardCache, BoardTable
from trading.models import Bar

log = logging.getLogger(__name__)

TABLE = "bars_board"
SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " board TEXT PRIMARY KEY, written_at REAL NOT NULL, host TEXT NOT NULL, bars TEXT NOT NULL)"
]
INTERVAL = "1d"
REWRITE_S = 60.0  # an unchanged row is rewritten this often (its age says the listener lives)
READ_EVERY_S = 0.5
STALE_MS = 2 * 86_400_000
MAX_BARS = 1000

Row = list[float]  # [close_time, high, low, close]
Print = list[float]  # [funding time, rate]
MAX_PRINTS = 200
MAX_RATE = 0.05  # per 8 h: Binance caps funding far below this


def sheet_name(board: str) -> str:
    return f"{board}/{INTERVAL}/bars"


def funding_sheet_name(board: str) -> str:
    return f"{board}/8h/funding"


@dataclass
class BarsSheet:
    written_at: float
    host: str
    bars: dict[str, list[Row]] = field(default_factory=dict)
    funding: dict[str, list[Print]] = field(default_factory=dict)  # settled prints per symbol

    def newest(self, symbol: str) -> int | None:
        rows = self.bars.get(symbol)
        return int(rows[-1][0]) if rows else None


class BarsBoard(BoardTable):
    """The ``bars_board`` table: one row per market task queue, every symbol's daily bars."""

    WHAT = "bars board"
    SCHEMA = SCHEMA

    def write(self, board: str, rows: dict[str, list[Row]], host: str, now: float) -> None:
        self._upsert(sheet_name(board), rows, host, now)

    def write_funding(
        self, board: str, prints: dict[str, list[Print]], host: str, now: float
    ) -> None:
        self._upsert(funding_sheet_name(board), prints, host, now)

    def _upsert(self, row_name: str, rows: dict[str, list], host: str, now: float) -> None:
        self._schema()
        body = json.dumps({s: r for s, r in sorted(rows.items())}, separators=(",", ":"))
        sql = self.db.dialect.upsert(TABLE, ["board", "written_at", "host", "bars"], "board")
        self.db.execute(sql, (row_name, now, host, body))

    def read(self, board: str) -> BarsSheet | None:
        """The bars row with the funding row's prints (when there is one); None: no bars."""
        self._schema()
        rows = self.db.execute(
            f"SELECT board, written_at, host, bars FROM {TABLE} WHERE board IN (?, ?)",
            (sheet_name(board), funding_sheet_name(board)),
        ).rows
        by_name = {str(r["board"]): r for r in rows}
        row = by_name.get(sheet_name(board))
        if row is None:
            return None
        out = BarsSheet(written_at=float(row["written_at"]), host=str(row["host"]))
        for symbol, rows in json.loads(row["bars"]).items():
            good = [
                [float(r[0]), float(r[1]), float(r[2]), float(r[3])]
                for r in rows
                if isinstance(r, list) and len(r) == 4 and all(v == v and v > 0 for v in r)
            ]
            out.bars[symbol] = sorted(good, key=lambda r: r[0])
        funding = by_name.get(funding_sheet_name(board))
        if funding is not None:
            for symbol, prints in json.loads(funding["bars"]).items():
                good = {
                    int(p[0]): float(p[1])
                    for p in prints
                    if isinstance(p, list)
                    and len(p) == 2
                    and all(isinstance(v, int | float) and math.isfinite(v) for v in p)
                    and p[0] > 0
                    and abs(p[1]) <= MAX_RATE
                }
                out.funding[symbol] = [[float(t), r] for t, r in sorted(good.items())]
        return out


def bar_rows(bars: list[Bar]) -> list[Row]:
    return [[float(b.close_time), b.high, b.low, b.close] for b in bars[-MAX_BARS:]]


class BarsBoardWriter:
    """The listener's side: writes the store's daily bars when they changed (never raises)."""

    def __init__(
        self,
        board: BarsBoard,
        name: str,
        snapshot: Callable[[], dict[str, list[Bar]]],
        every_s: float,
        host: str,
        clock: Callable[[], float] = time.time,
        funding: Callable[[], dict[str, list[tuple[int, float]]]] | None = None,
    ) -> None:
        self.board = board
        self.name = name
        self.snapshot = snapshot
        self.funding = funding  # settled prints known now (None: this listener has none)
        self.every_s = max(0.05, every_s)
        self.host = host
        self.clock = clock
        self.writes = 0
        self.errors = 0
        self._last: dict[str, tuple[tuple, float]] = {}  # row -> (signature, written at)
        self._lock = asyncio.Lock()

    async def before_wake(self, *_: object) -> None:
        await self.write_if_changed()
        await self.write_funding_if_changed()

    async def run(self) -> None:
        while True:
            await self.write_if_changed()
            await self.write_funding_if_changed()
            await asyncio.sleep(self.every_s)

    async def write_funding_if_changed(self) -> bool:
        """The funding row, when a print arrived or the row is a minute old (never raises)."""
        if self.funding is None:
            return False
        async with self._lock:
            prints = {s: p[-MAX_PRINTS:] for s, p in self.funding().items() if p}
            if not prints:
                return False
            signature = tuple(sorted((s, len(p), p[-1][0]) for s, p in prints.items()))
            return await self._write_changed(
                "funding",
                signature,
                lambda: {s: [[float(t), float(r)] for t, r in p] for s, p in prints.items()},
                self.board.write_funding,
            )

    async def write_if_changed(self) -> bool:
        async with self._lock:
            bars = self.snapshot()  # on the event loop: the store is not thread-safe
            if not any(bars.values()):
                return False
            signature = tuple(sorted((s, len(b), b[-1].close_time) for s, b in bars.items() if b))
            return await self._write_changed(
                "bars",
                signature,
                lambda: {s: bar_rows(b) for s, b in bars.items() if b},
                self.board.write,
            )

    async def _write_changed(
        self,
        row: str,
        signature: tuple,
        rows_of: Callable[[], dict[str, list]],
        write: Callable[[str, dict[str, list], str, float], None],
    ) -> bool:
        """``write`` the row's rows unless they are what was written last and that is younger
        than REWRITE_S; a database error is counted and logged, never raised."""
        last = self._last.get(row)
        if last is not None and last[0] == signature and self.clock() - last[1] < REWRITE_S:
            return False
        try:
            await asyncio.to_thread(write, self.name, rows_of(), self.host, self.clock())
        except DB_ERRORS as err:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                what = "bars board" if row == "bars" else f"bars board {row}"
                log.warning("%s not written (%d times): %s", what, self.errors, err)
            return False
        self._last[row] = (signature, self.clock())
        self.writes += 1
        return True


class BarsReader:
    """The trading worker's side: the board's daily bars, cached briefly, re-read once when
    the decision's market time says a newer day should be there."""

    def __init__(self, board: BarsBoard, name: str, clock: Callable[[], float] = time.time):
        self.board = board
        self.name = name
        self.cache: BoardCache[BarsSheet] = BoardCache(
            board.read, "bars board", READ_EVERY_S, clock
        )

    async def sheet(self, as_of_ms: int) -> BarsSheet | None:
        sheet = await self.cache.get(self.name, READ_EVERY_S / 0.25)
        if sheet is None or _behind(sheet, as_of_ms):
            sheet = await self.cache.get(self.name, 0.0)  # a new day may have been written
        return sheet

    def close(self) -> None:
        self.board.close()


def _behind(sheet: BarsSheet, as_of_ms: int) -> bool:
    newest = [n for n in (sheet.newest(s) for s in sheet.bars) if n is not None]
    return not newest or as_of_ms - max(newest) > 86_400_000


def stale_reason(sheet: BarsSheet | None, symbol: str, as_of_ms: int) -> str | None:
    """Why the board cannot serve ``symbol`` at ``as_of_ms`` (None: it can)."""
    if sheet is None:
        return "no bars board (is the listener running, on this host or OCW_DB_URL?)"
    newest = sheet.newest(symbol)
    if newest is None:
        return "no daily bars on the board"
    if as_of_ms - newest > STALE_MS:
        return f"daily bars stale ({(as_of_ms - newest) / 86_400_000:.1f} days behind)"
    return None
