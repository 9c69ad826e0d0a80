"""The feature board: the listener's latest features where a trading worker can read them locally.

A position's 3-minute agent check scores the symbol's (and BTC's) 1h features, which the
listener computes from its BarStore. Asked with a ``market_view`` activity on the listener's
queue, every check costs the Temporal server a cross-process activity task and a second
workflow task; with 2,000 positions that is 11 checks a second (issue 14). So the listener also
writes each interval's features, for every symbol it follows, to a feature board (same database
as the price board, one row per market task queue and interval) every
``OCW_FEATURE_BOARD_EVERY_S``; a lean position reads it through a local activity.

As with prices the board is an optimisation: a sheet older than the reader's bound (a fraction
of the agent interval), absent, unreadable, or without a symbol answers "missing" for it and
the position asks the listener as before. A feature's price is the one the listener held when
it wrote the sheet, so it is at most that bound old; the scorer is advisory and the stops run
on the safety layer's own fresher price.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError
from temporalio import activity

from activities.price_board import BoardCache, BoardTable
from trading.models import MarketView, SymbolFeatures
from trading.state import BoardViewRequest
from workflows import activity_api as api

log = logging.getLogger(__name__)

TABLE = "feature_board"
SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " board TEXT PRIMARY KEY, written_at REAL NOT NULL, host TEXT NOT NULL,"
    " features TEXT NOT NULL)"
]
MIN_WRITE_EVERY_S = 0.25  # features cost the listener a computation per symbol: not faster
MAX_READ_EVERY_S = 1.0


def sheet_name(board: str, interval: str) -> str:
    """The row of one interval's features on a market task queue's board."""
    return f"{board}/{interval}"


@dataclass
class Sheet:
    written_at: float  # wall epoch seconds
    host: str
    features: dict[str, SymbolFeatures] = field(default_factory=dict)


class FeatureBoard(BoardTable):
    """The ``feature_board`` table: one row per market task queue and interval, as JSON."""

    WHAT = "feature board"
    SCHEMA = SCHEMA

    def write(self, board: str, rows: dict[str, SymbolFeatures], host: str, now: float) -> None:
        self._schema()
        body = json.dumps(
            {s: f.model_dump(mode="json") for s, f in sorted(rows.items())},
            separators=(",", ":"),
        )
        sql = self.db.dialect.upsert(TABLE, ["board", "written_at", "host", "features"], "board")
        self.db.execute(sql, (board, now, host, body))

    def read(self, board: str) -> Sheet | None:
        """The sheet, without the entries that no longer validate (they read as missing)."""
        self._schema()
        row = self.db.execute(
            f"SELECT written_at, host, features FROM {TABLE} WHERE board = ?", (board,)
        ).one()
        if row is None:
            return None
        out = Sheet(written_at=float(row["written_at"]), host=str(row["host"]))
        for symbol, value in json.loads(row["features"]).items():
            try:
                out.features[symbol] = SymbolFeatures.model_validate(value)
            except ValidationError as err:
                log.warning("feature board: %s skipped: %s", symbol, err.errors()[0]["msg"])
        return out


def view_answer(sheet: Sheet | None, req: BoardViewRequest, now: float) -> MarketView:
    """What a reader makes of a sheet: the features it holds for the interval when it is fresh
    enough; every other symbol missing (the caller then asks the listener)."""
    out: dict[str, SymbolFeatures] = {}
    missing: list[str] = []
    fresh = sheet is not None and now - sheet.written_at <= req.max_age_s
    for symbol in req.symbols:
        f = sheet.features.get(symbol) if fresh and sheet is not None else None
        if f is None or f.interval != req.interval:
            missing.append(symbol)
        else:
            out[symbol] = f
    as_of = max((f.time_ms for f in out.values()), default=0)
    return MarketView(as_of_ms=as_of, symbols=out, missing=missing)


class FeatureBoardActivities:
    """The trading worker's side: ``board_view``, a local activity, from a cached read."""

    def __init__(self, board: FeatureBoard, clock: Callable[[], float] = time.time) -> None:
        self.board = board
        self.clock = clock
        self.cache: BoardCache[Sheet] = BoardCache(
            board.read, "feature board", MAX_READ_EVERY_S, clock
        )

    def all(self) -> list:
        return [self.board_view]

    @activity.defn(name=api.BOARD_VIEW)
    async def board_view(self, req: BoardViewRequest) -> MarketView:
        """Features from the listener's board, or missing: never an error for a stale one."""
        sheet = await self.cache.get(sheet_name(req.board, req.interval), req.max_age_s)
        return view_answer(sheet, req, self.clock())
