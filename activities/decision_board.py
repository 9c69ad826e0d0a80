"""The decision board: the view and context of a wake, written by the listener before it wakes.

A decision cycle needs the decision interval's features of every symbol (``market_view``) and
the derivatives, liquidations and sentiment (``market_context``). Asked of the listener, they
cost two cross-process activity tasks and a second workflow task: on an idle engine about a
third of a wake's way to its fill (issue 14, ``bench/wake_latency.py``). So the listener writes
exactly that pair to a decision board (same database as the price and feature boards, one row
per market task queue and interval): just before it signals a wake, stamped with the wake's
market time, and every ``OCW_DECISION_BOARD_EVERY_S`` between wakes (for wakes it does not
send: by hand, from ``temporal workflow signal``). A lean DecisionWorkflow reads it through a
local activity and goes from the wake to its order in one workflow task.

The board is an optimisation with a strict rule, never a second source of truth: a sheet
serves a cycle only when it is younger than the reader's bound (a wake worked off late must
see the market as it is, not as it was at the close: the stale-wake rule depends on it), was
written for the wake's market time or later (a candle wake), and holds every symbol asked
for. Otherwise the answer is "missing" and the cycle asks the listener as before. A sheet's
market time never goes back (writes are serialised), so a periodic write that raced a wake's
cannot hide the wake's candle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError
from temporalio import activity

from activities.db import DB_ERRORS
from activities.price_board import BoardCache, BoardTable
from trading.models import MarketView, Wake
from trading.snapshot import MarketContext
from trading.state import BoardDecision, BoardDecisionRequest
from workflows import activity_api as api

log = logging.getLogger(__name__)

TABLE = "decision_board"
SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " board TEXT PRIMARY KEY, written_at REAL NOT NULL, host TEXT NOT NULL,"
    " market_time_ms INTEGER NOT NULL, body TEXT NOT NULL)"
]
WRITE_TIMEOUT_S = 1.0  # the wake is never held longer than this for the board
MIN_WRITE_EVERY_S = 0.25  # a sheet costs the listener a view and a context: not faster
READ_EVERY_S = 0.05  # a worker re-reads at most this often (the wake's sheet is new)


def sheet_name(board: str, interval: str) -> str:
    """The row of one decision interval on a market task queue's board."""
    return f"{board}/{interval}/decision"


@dataclass
class DecisionSheet:
    written_at: float  # wall epoch seconds
    host: str
    market_time_ms: int  # the wake's market time it was written for
    view: MarketView
    context: MarketContext


class DecisionBoard(BoardTable):
    """The ``decision_board`` table: one row per market task queue and interval."""

    WHAT = "decision board"
    SCHEMA = SCHEMA

    def write(
        self,
        board: str,
        view: MarketView,
        context: MarketContext,
        market_time_ms: int,
        host: str,
        now: float,
    ) -> None:
        self._schema()
        body = json.dumps(
            {"view": view.model_dump(mode="json"), "context": context.model_dump(mode="json")},
            separators=(",", ":"),
        )
        cols = ["board", "written_at", "host", "market_time_ms", "body"]
        sql = self.db.dialect.upsert(TABLE, cols, "board")
        self.db.execute(sql, (board, now, host, market_time_ms, body))

    def read(self, board: str) -> DecisionSheet | None:
        """The sheet; None when there is none or it no longer validates (then: missing)."""
        self._schema()
        row = self.db.execute(
            f"SELECT written_at, host, market_time_ms, body FROM {TABLE} WHERE board = ?",
            (board,),
        ).one()
        if row is None:
            return None
        try:
            body = json.loads(row["body"])
            return DecisionSheet(
                written_at=float(row["written_at"]),
                host=str(row["host"]),
                market_time_ms=int(row["market_time_ms"]),
                view=MarketView.model_validate(body["view"]),
                context=MarketContext.model_validate(body["context"]),
            )
        except (ValueError, KeyError, TypeError, ValidationError) as err:
            log.warning("decision board: sheet %s unreadable: %s", board, err)
            return None


def decision_answer(
    sheet: DecisionSheet | None, req: BoardDecisionRequest, now: float
) -> BoardDecision:
    """What a cycle makes of a sheet (module docstring: when it serves, and why not)."""
    if sheet is None:
        return BoardDecision(reason="no sheet")
    age = now - sheet.written_at
    if age > req.max_age_s:
        return BoardDecision(reason=f"sheet {age:.2f}s old (bound {req.max_age_s:g}s)")
    if req.market_time_ms is not None and sheet.market_time_ms < req.market_time_ms:
        return BoardDecision(reason="sheet older than the wake's market time")
    view = sheet.view
    absent = [s for s in req.symbols if s not in view.symbols]
    wrong = [
        s for s in req.symbols if s in view.symbols and view.symbols[s].interval != req.interval
    ]
    if absent or wrong:
        return BoardDecision(reason=f"sheet lacks {', '.join(absent + wrong)}")
    symbols = {s: view.symbols[s] for s in req.symbols}
    as_of = max((f.time_ms for f in symbols.values()), default=view.as_of_ms)
    return BoardDecision(
        view=MarketView(as_of_ms=as_of, symbols=symbols, missing=[]),
        context=sheet.context,
        market_time_ms=sheet.market_time_ms,
    )


class DecisionBoardActivities:
    """The trading worker's side: ``board_decision``, a local activity, from a cached read."""

    def __init__(self, board: DecisionBoard, clock: Callable[[], float] = time.time) -> None:
        self.board = board
        self.clock = clock
        self.cache: BoardCache[DecisionSheet] = BoardCache(
            board.read, "decision board", READ_EVERY_S, clock
        )

    def all(self) -> list:
        return [self.board_decision]

    @activity.defn(name=api.BOARD_DECISION)
    async def board_decision(self, req: BoardDecisionRequest) -> BoardDecision:
        """The wake's view and context from the listener's board, or why not (never an error)."""
        sheet = await self.cache.get(sheet_name(req.board, req.interval), req.max_age_s)
        wanted = req.market_time_ms
        if sheet is not None and wanted is not None and sheet.market_time_ms < wanted:
            sheet = await self.cache.get(sheet_name(req.board, req.interval), 0.0)  # re-read
        return decision_answer(sheet, req, self.clock())


class DecisionSheetWriter:
    """The listener's side: the decision interval's view and the market context, before a wake
    goes out (stamped with its market time) and every ``every_s`` between wakes (stamped with
    the view's). Bounded and never raising: a board that cannot be written only costs the
    cycle its shortcut."""

    def __init__(
        self,
        board: DecisionBoard,
        name: str,
        view: Callable[[], MarketView],
        context: Callable[[], Awaitable[MarketContext]],
        host: str,
        clock: Callable[[], float] = time.time,
        timeout_s: float = WRITE_TIMEOUT_S,
        every_s: float = 2.0,
    ) -> None:
        self.board = board
        self.name = name
        self.view = view
        self.context = context
        self.host = host
        self.clock = clock
        self.timeout_s = timeout_s
        self.every_s = max(MIN_WRITE_EVERY_S, every_s)
        self.writes = 0
        self.errors = 0
        self._stamp = 0  # the last sheet's market time: never goes back
        self._wake_written_at = float("-inf")  # wall time of the last wake's sheet
        self._lock = asyncio.Lock()

    async def before_wake(self, wake: Wake) -> None:
        """The wake's sheet, just before the wake is signalled. The periodic writes hold off for
        one period after it, so the cycle reads the view of the wake's close, not a later one."""
        if await self.write_once(wake.market_time_ms):
            self._wake_written_at = self.clock()

    async def run(self) -> None:
        while True:
            if self.clock() - self._wake_written_at >= self.every_s:
                await self.write_once(None)
            await asyncio.sleep(self.every_s)

    async def write_once(self, market_time_ms: int | None) -> bool:
        """One sheet; False when nothing was written (no features yet, or an error, logged)."""
        try:
            async with self._lock:
                written = await asyncio.wait_for(self._write(market_time_ms), self.timeout_s)
        except (TimeoutError, *DB_ERRORS, ValueError) as err:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning("decision board not written (%d times): %s", self.errors, err)
            return False
        self.writes += written
        return written

    async def _write(self, market_time_ms: int | None) -> bool:
        view = self.view()  # on the event loop: the store is not thread-safe
        if not view.symbols:
            return False  # the store is still warming up: readers ask the listener
        context = await self.context()
        stamp = max(self._stamp, view.as_of_ms, market_time_ms or 0)
        await asyncio.to_thread(
            self.board.write, self.name, view, context, stamp, self.host, self.clock()
        )
        self._stamp = stamp
        return True
