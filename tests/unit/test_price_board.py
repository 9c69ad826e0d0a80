"""The price board (activities/price_board.py): what the listener writes, what a lean safety
check reads, and that a stale, absent or broken board only ever answers "missing"."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.price_board import (
    Board,
    BoardPrice,
    BoardWriter,
    PriceBoard,
    PriceBoardActivities,
    answer,
)
from tests.pg_server import db_target
from trading.state import BoardPricesRequest

NOW = 1_780_000_000.0
BTC, ETH = "BTC/USDT", "ETH/USDT"


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def req(*symbols: str, max_age_s: float = 1.5, board: str = "ocw-market") -> BoardPricesRequest:
    return BoardPricesRequest(board=board, symbols=list(symbols), max_age_s=max_age_s)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SecretStr:
    return db_target(request, tmp_path / "prices.db")


def test_a_written_board_reads_back_on_both_back_ends(target):
    board = PriceBoard(target)
    prices = {BTC: BoardPrice(97_000.5, 1_000, NOW - 2.0), ETH: BoardPrice(3_500.25, 900, None)}
    board.write("ocw-market", prices, "host-a", NOW)
    board.write("other-market", {BTC: BoardPrice(1.0, 1, NOW)}, "host-b", NOW - 100)
    got = PriceBoard(target).read("ocw-market")  # another process's connection
    assert got is not None and got.written_at == NOW and got.host == "host-a"
    assert got.prices == prices
    board.write("ocw-market", {BTC: BoardPrice(97_001.0, 1_100, NOW)}, "host-a", NOW + 0.5)
    again = board.read("ocw-market")
    assert again.written_at == NOW + 0.5 and set(again.prices) == {BTC}  # the last write wins
    assert board.read("no-such-market") is None


def test_the_answer_gives_prices_and_the_streams_age_when_fresh():
    board = Board(NOW - 1.0, "h", {BTC: BoardPrice(97_000.0, 1_000, NOW - 3.0)})
    got = answer(board, req(BTC, ETH), NOW)
    assert got.prices == {BTC: 97_000.0} and got.time_ms == {BTC: 1_000}
    assert got.age_s == {BTC: 3.0}  # how long the listener has not heard of BTC
    assert got.missing == [ETH]
    never_heard = Board(NOW, "h", {BTC: BoardPrice(97_000.0, 1_000, None)})
    assert answer(never_heard, req(BTC), NOW).age_s == {}  # as market_prices: unknown age


@pytest.mark.parametrize("board", [None, Board(NOW - 1.51, "h", {BTC: BoardPrice(1.0, 1, NOW)})])
def test_a_stale_or_absent_board_answers_missing(board):
    got = answer(board, req(BTC, ETH), NOW)
    assert got.prices == {} and got.missing == [BTC, ETH]


def test_bad_prices_in_the_row_are_dropped(tmp_path):
    board = PriceBoard(tmp_path / "prices.db")
    board.write("m", {BTC: BoardPrice(1.0, 1, NOW)}, "h", NOW)
    board.db.execute(
        "UPDATE price_board SET prices = ? WHERE board = ?",
        ('{"BTC/USDT":[NaN,1,null],"ETH/USDT":[-3,1,null],"SOL/USDT":[150.0,2,null]}', "m"),
    )
    got = board.read("m")
    assert set(got.prices) == {"SOL/USDT"}
    assert all(math.isfinite(p.price) and p.price > 0 for p in got.prices.values())


async def test_many_checks_at_once_cost_one_read(tmp_path):
    clock = Clock()
    store = PriceBoard(tmp_path / "prices.db")
    store.write("ocw-market", {BTC: BoardPrice(97_000.0, 1_000, NOW)}, "h", NOW)
    acts = PriceBoardActivities(store, clock=clock)
    results = await asyncio.gather(*(acts.board_prices(req(BTC)) for _ in range(200)))
    assert all(r.prices == {BTC: 97_000.0} for r in results)
    assert acts.reads == 1
    clock.t += 0.2  # within a quarter of the 1.5 s bound's cache: still the same read
    await acts.board_prices(req(BTC))
    assert acts.reads == 1
    store.write("ocw-market", {BTC: BoardPrice(97_500.0, 2_000, NOW + 0.3)}, "h", NOW + 0.3)
    clock.t += 0.1  # 0.3 s since the read: read again, and see the new price
    assert (await acts.board_prices(req(BTC))).prices == {BTC: 97_500.0}
    assert acts.reads == 2


async def test_a_board_that_stops_being_written_turns_missing(tmp_path):
    clock = Clock()
    store = PriceBoard(tmp_path / "prices.db")
    store.write("ocw-market", {BTC: BoardPrice(97_000.0, 1_000, NOW)}, "h", NOW)
    acts = PriceBoardActivities(store, clock=clock)
    assert (await acts.board_prices(req(BTC))).prices
    clock.t += 1.6  # the listener died 1.6 s ago: the check must ask it (and learn it is gone)
    got = await acts.board_prices(req(BTC))
    assert got.prices == {} and got.missing == [BTC]


async def test_an_unreadable_board_is_missing_not_an_error(tmp_path):
    path = tmp_path / "prices.db"
    path.write_bytes(b"this is not a database" * 100)
    acts = PriceBoardActivities(PriceBoard(path), clock=Clock())
    got = await acts.board_prices(req(BTC))
    assert got.missing == [BTC] and acts.errors == 1


def test_the_writer_writes_the_stores_prices_and_survives_a_failed_write(tmp_path):
    clock = Clock()
    store = PriceBoard(tmp_path / "prices.db")
    prices = {BTC: BoardPrice(97_000.0, 1_000, NOW)}
    writer = BoardWriter(store, "ocw-market", lambda: dict(prices), 0.5, "host-a", clock=clock)
    assert writer.write_once()
    assert store.read("ocw-market").prices == prices
    clock.t += 0.5  # unchanged prices are written again: the write time says "alive"
    assert writer.write_once() and store.read("ocw-market").written_at == NOW + 0.5
    assert not BoardWriter(store, "m", dict, 0.5, "h").write_once()  # an empty store

    class Broken(PriceBoard):
        def write(self, *a, **kw):
            raise sqlite3.OperationalError("disk I/O error")

    broken = BoardWriter(Broken(tmp_path / "b.db"), "m", lambda: prices, 0.5, "h")
    assert not broken.write_once() and broken.errors == 1


def test_the_writer_never_writes_faster_than_its_floor(tmp_path):
    writer = BoardWriter(PriceBoard(tmp_path / "p.db"), "m", dict, 0.5 / 10_000, "h")
    assert writer.every_s == 0.05
