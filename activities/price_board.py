"""The price board: the listener's latest prices where a trading worker can read them locally.

A position's 30 s safety check needs one number, the symbol's latest price, which lives in the
listener's BarStore. Asking for it with a ``market_prices`` activity on the listener's task
queue costs the Temporal server a cross-process activity task and a second workflow task per
check (11 history events), which is what saturates the embedded server at a few thousand
positions (issue 14). Instead the listener writes its prices to a board (one row per market task
queue, in the engine's database: a SQLite file under ``OCW_HOME`` on one host, PostgreSQL through
``OCW_DB_URL`` on several) every ``OCW_PRICE_BOARD_EVERY_S``, and the check reads it through a
*local* activity on the trading worker: one workflow task, one marker event.

The board is an optimisation, never a source of truth: a board older than the reader's bound
(a fraction of the safety interval), absent or unreadable answers "missing", and the position
asks the listener directly as before. A reader's process caches the board for a fraction of
that bound, so 2,000 positions cost a few reads a second, not 67.

Ages: each price carries the wall time the listener last heard of the symbol; the reader turns
it into ``age_s`` (the stream's freshness, as ``market_prices`` reports it) and the board's own
write time into its freshness. Hosts' clocks are assumed NTP-synced (Binance's recvWindow needs
that already).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, Self, TypeVar

from temporalio import activity

from activities.db import DB_ERRORS, Database, Target, target_for
from trading.config import Settings
from trading.state import BoardPricesRequest, PricesResult
from workflows import activity_api as api

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE = "price_board"
SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " board TEXT PRIMARY KEY, written_at REAL NOT NULL, host TEXT NOT NULL, prices TEXT NOT NULL)"
]
MIN_WRITE_EVERY_S = 0.05  # the listener never writes more often than this (a fast replay)
READ_EVERY_FRACTION = 0.25  # a reader re-reads after this fraction of its freshness bound
MAX_READ_EVERY_S = 0.25


@dataclass(frozen=True)
class BoardPrice:
    price: float
    time_ms: int  # the price's event time (the exchange's)
    heard_at: float | None  # wall epoch seconds the listener last heard of it (None: never)


@dataclass
class Board:
    written_at: float  # wall epoch seconds
    host: str
    prices: dict[str, BoardPrice] = field(default_factory=dict)


class BoardTable:
    """A board's table in the engine's database (``prices.db`` under ``OCW_HOME``, or
    ``OCW_DB_URL``), opened on first use: a bad file fails a read, never the worker's start."""

    WHAT = "board"
    SCHEMA: list[str] = []

    def __init__(self, target: Path | Target) -> None:
        self.target = target
        self._db: Database | None = None
        self._ready = False

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.target, self.WHAT)
        return self._db

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(target_for(settings, settings.home / "prices.db"))

    def _schema(self) -> None:
        if not self._ready:
            self.db.create_schema(self.SCHEMA)
            self._ready = True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class PriceBoard(BoardTable):
    """The ``price_board`` table: one row per market task queue, all its prices as JSON."""

    WHAT = "price board"
    SCHEMA = SCHEMA

    def write(self, board: str, prices: dict[str, BoardPrice], host: str, now: float) -> None:
        self._schema()
        body = json.dumps(
            {
                s: [p.price, p.time_ms, None if p.heard_at is None else round(p.heard_at, 3)]
                for s, p in sorted(prices.items())
            },
            separators=(",", ":"),
        )
        sql = self.db.dialect.upsert(TABLE, ["board", "written_at", "host", "prices"], "board")
        self.db.execute(sql, (board, now, host, body))

    def read(self, board: str) -> Board | None:
        self._schema()
        row = self.db.execute(
            f"SELECT written_at, host, prices FROM {TABLE} WHERE board = ?", (board,)
        ).one()
        if row is None:
            return None
        out = Board(written_at=float(row["written_at"]), host=str(row["host"]))
        for symbol, value in json.loads(row["prices"]).items():
            price, time_ms, heard_at = value
            if isinstance(price, int | float) and math.isfinite(price) and price > 0:
                heard = None if heard_at is None else float(heard_at)
                out.prices[symbol] = BoardPrice(float(price), int(time_ms), heard)
        return out


def answer(board: Board | None, req: BoardPricesRequest, now: float) -> PricesResult:
    """What a reader makes of the board: the prices it holds when it is fresh enough, every
    other symbol missing (the caller then asks the listener)."""
    out = PricesResult()
    if board is None or now - board.written_at > req.max_age_s:
        out.missing = list(req.symbols)
        return out
    for symbol in req.symbols:
        p = board.prices.get(symbol)
        if p is None:
            out.missing.append(symbol)
            continue
        out.prices[symbol] = p.price
        out.time_ms[symbol] = p.time_ms
        if p.heard_at is not None:
            out.age_s[symbol] = round(max(0.0, now - p.heard_at), 3)
    return out


class BoardCache(Generic[T]):
    """A process's cached reads of board rows: many readers at once cost one read per
    ``every`` (a fraction of the freshness bound the reader asks for, at most ``max_every_s``);
    an unreadable board is remembered as None (missing) for the same time."""

    def __init__(
        self,
        read: Callable[[str], T | None],
        what: str,
        max_every_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.read = read
        self.what = what
        self.max_every_s = max_every_s
        self.clock = clock
        self._cache: dict[str, tuple[float, T | None]] = {}  # name -> (read at, row)
        self._lock = asyncio.Lock()
        self.reads = 0
        self.errors = 0

    def _cached(self, name: str, every: float) -> tuple[float, T | None] | None:
        cached = self._cache.get(name)
        return cached if cached is not None and self.clock() - cached[0] < every else None

    async def get(self, name: str, max_age_s: float) -> T | None:
        every = min(self.max_every_s, max_age_s * READ_EVERY_FRACTION)
        if (cached := self._cached(name, every)) is not None:
            return cached[1]
        async with self._lock:  # many checks at once: one of them reads
            if (cached := self._cached(name, every)) is not None:
                return cached[1]
            try:
                row = await asyncio.to_thread(self.read, name)
            except (*DB_ERRORS, ValueError, TypeError, KeyError) as err:
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    log.warning("%s unreadable (%d times): %s", self.what, self.errors, err)
                row = None
            self.reads += 1
            self._cache[name] = (self.clock(), row)
            return row


class PriceBoardActivities:
    """The trading worker's side: ``board_prices``, a local activity, from a cached read."""

    def __init__(self, board: PriceBoard, clock: Callable[[], float] = time.time) -> None:
        self.board = board
        self.clock = clock
        self.cache: BoardCache[Board] = BoardCache(
            board.read, "price board", MAX_READ_EVERY_S, clock
        )

    @property
    def reads(self) -> int:
        return self.cache.reads

    @property
    def errors(self) -> int:
        return self.cache.errors

    def all(self) -> list:
        return [self.board_prices]

    @activity.defn(name=api.BOARD_PRICES)
    async def board_prices(self, req: BoardPricesRequest) -> PricesResult:
        """Prices from the listener's board, or missing: never an error for a stale board."""
        board = await self.cache.get(req.board, req.max_age_s)
        return answer(board, req, self.clock())


class BoardStore(Protocol):
    """A board table as its writer sees it: one row per name, rewritten whole."""

    def write(self, board: str, rows: dict, host: str, now: float) -> None: ...


class BoardWriter:
    """The listener's side: writes the store's prices (or features) to a board every
    ``every_s`` (the write time is how readers know the listener is alive, so it is written
    even when nothing moved)."""

    def __init__(
        self,
        board: BoardStore,
        name: str,
        snapshot: Callable[[], dict],
        every_s: float,
        host: str,
        clock: Callable[[], float] = time.time,
        what: str = "price board",
        min_every_s: float = MIN_WRITE_EVERY_S,
    ) -> None:
        self.board = board
        self.name = name
        self.snapshot = snapshot
        self.every_s = max(min_every_s, every_s)
        self.host = host
        self.clock = clock
        self.what = what
        self.writes = 0
        self.errors = 0

    def write_once(self, rows: dict | None = None) -> bool:
        """One write of every row the store holds; True when written (an empty store or a
        database error writes nothing: readers then ask the listener directly)."""
        rows = self.snapshot() if rows is None else rows
        if not rows:
            return False
        try:
            self.board.write(self.name, rows, self.host, self.clock())
        except DB_ERRORS as err:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("%s not written (%d times): %s", self.what, self.errors, err)
            return False
        self.writes += 1
        return True

    async def run(self) -> None:
        """Snapshot on the event loop (the store is not thread-safe), write in a thread."""
        while True:
            await asyncio.to_thread(self.write_once, self.snapshot())
            await asyncio.sleep(self.every_s)
