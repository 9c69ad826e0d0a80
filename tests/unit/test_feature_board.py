"""The feature board (activities/feature_board.py): the listener's features as a lean agent check
reads them, and that a stale, absent, foreign or broken sheet only ever answers "missing"."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.feature_board import (
    FeatureBoard,
    FeatureBoardActivities,
    Sheet,
    sheet_name,
    view_answer,
)
from activities.price_board import BoardWriter
from tests.pg_server import db_target
from trading.models import SymbolFeatures
from trading.state import BoardViewRequest

NOW = 1_780_000_000.0
BTC, ETH = "BTC/USDT", "ETH/USDT"
QUEUE = "ocw-market"


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def feat(symbol: str, price: float, interval: str = "1h", **extra) -> SymbolFeatures:
    return SymbolFeatures(symbol=symbol, interval=interval, time_ms=1_000, price=price, **extra)


def req(*symbols: str, max_age_s: float = 9.0, interval: str = "1h") -> BoardViewRequest:
    return BoardViewRequest(
        board=QUEUE, symbols=list(symbols), interval=interval, max_age_s=max_age_s
    )


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SecretStr:
    return db_target(request, tmp_path / "prices.db")


def test_a_written_sheet_reads_back_whole_on_both_back_ends(target):
    board = FeatureBoard(target)
    rows = {
        BTC: feat(BTC, 97_000.5, rsi14=61.2, momentum14=0.031, regime="trending", n_bars=200),
        ETH: feat(ETH, 3_500.25, missing=["sma72"]),
    }
    name = sheet_name(QUEUE, "1h")
    board.write(name, rows, "host-a", NOW)
    got = FeatureBoard(target).read(name)  # another process's connection
    assert got is not None and got.written_at == NOW and got.host == "host-a"
    assert got.features == rows
    assert FeatureBoard(target).read(sheet_name(QUEUE, "4h")) is None


def test_the_answer_is_the_listeners_view_when_fresh_and_missing_otherwise():
    sheet = Sheet(NOW - 2.0, "h", {BTC: feat(BTC, 100.0), ETH: feat(ETH, 5.0)})
    got = view_answer(sheet, req(ETH, BTC), NOW)
    assert set(got.symbols) == {ETH, BTC} and got.missing == [] and got.as_of_ms == 1_000
    # a symbol the listener does not follow is missing, the others are given
    partial = view_answer(sheet, req(BTC, "SOL/USDT"), NOW)
    assert set(partial.symbols) == {BTC} and partial.missing == ["SOL/USDT"]
    # too old for the reader's bound, or no sheet at all: everything missing
    assert view_answer(sheet, req(BTC, max_age_s=1.0), NOW).missing == [BTC]
    assert view_answer(None, req(BTC, ETH), NOW).missing == [BTC, ETH]
    # features of another interval are never passed off as the asked one
    other = Sheet(NOW, "h", {BTC: feat(BTC, 100.0, interval="4h")})
    assert view_answer(other, req(BTC), NOW).missing == [BTC]


def test_readers_share_one_read_per_second_and_see_a_new_sheet_after_it(tmp_path):
    clock = Clock()
    board = FeatureBoard(tmp_path / "prices.db")
    acts = FeatureBoardActivities(board, clock=clock)
    name = sheet_name(QUEUE, "1h")
    board.write(name, {BTC: feat(BTC, 100.0)}, "h", NOW)

    async def many() -> list:
        return await asyncio.gather(*(acts.board_view(req(BTC)) for _ in range(50)))

    views = asyncio.run(many())
    assert all(v.symbols[BTC].price == 100.0 for v in views) and acts.cache.reads == 1
    board.write(name, {BTC: feat(BTC, 101.0)}, "h", NOW + 0.5)
    clock.t = NOW + 0.5  # within the cache's second: the old sheet still
    assert asyncio.run(acts.board_view(req(BTC))).symbols[BTC].price == 100.0
    clock.t = NOW + 1.5
    assert asyncio.run(acts.board_view(req(BTC))).symbols[BTC].price == 101.0
    assert acts.cache.reads == 2


def test_a_corrupt_file_or_entry_reads_as_missing_never_as_an_error(tmp_path):
    path = tmp_path / "prices.db"
    path.write_bytes(b"this is not a database" * 100)
    acts = FeatureBoardActivities(FeatureBoard(path), clock=Clock())
    got = asyncio.run(acts.board_view(req(BTC)))
    assert got.missing == [BTC] and acts.cache.errors == 1

    good = tmp_path / "good.db"
    FeatureBoard(good).write(sheet_name(QUEUE, "1h"), {BTC: feat(BTC, 100.0)}, "h", NOW)
    with sqlite3.connect(good) as con:  # an entry a newer listener wrote, or a torn edit
        con.execute(
            "UPDATE feature_board SET features = ? WHERE board = ?",
            ('{"BTC/USDT": {"symbol": "BTC/USDT", "price": -1}, "ETH/USDT": 7}', "ocw-market/1h"),
        )
    acts = FeatureBoardActivities(FeatureBoard(good), clock=Clock())
    got = asyncio.run(acts.board_view(req(BTC)))
    assert got.missing == [BTC] and acts.cache.errors == 0


def test_the_listeners_writer_puts_its_features_on_the_board(tmp_path):
    board = FeatureBoard(tmp_path / "prices.db")
    rows = {BTC: feat(BTC, 100.0)}
    writer = BoardWriter(
        board, sheet_name(QUEUE, "1h"), lambda: rows, 2.0, "h", clock=Clock(), what="feature board"
    )
    assert writer.write_once() and writer.writes == 1
    assert board.read(sheet_name(QUEUE, "1h")).features == rows
    assert not BoardWriter(board, "x", dict, 2.0, "h").write_once()  # nothing to write yet
    # a fast replay is floored to the feature board's own minimum, not the price board's
    fast = BoardWriter(board, "x", dict, 2.0 / 10_000, "h", min_every_s=0.25)
    assert fast.every_s == 0.25
