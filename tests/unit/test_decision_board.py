"""The decision board (activities/decision_board.py): the listener writes a wake's view and
context before the wake, a lean DecisionWorkflow reads them, and a sheet that is stale, older
than the wake, incomplete or broken only ever answers "not served"."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.decision_board import (
    DecisionBoard,
    DecisionBoardActivities,
    DecisionSheet,
    DecisionSheetWriter,
    decision_answer,
    sheet_name,
)
from signals.wake_dispatcher import WakeDispatcher
from tests.pg_server import db_target
from trading.models import MarketView, SymbolFeatures, Wake
from trading.snapshot import DerivativesSnapshot, MarketContext
from trading.state import BoardDecisionRequest

NOW = 1_780_000_000.0
BTC, ETH = "BTC/USDT", "ETH/USDT"
QUEUE = "ocw-market"
CLOSE_MS = 1_779_999_999_999  # the wake's candle close
NAME = sheet_name(QUEUE, "4h")


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def feat(symbol: str, price: float, interval: str = "4h") -> SymbolFeatures:
    return SymbolFeatures(symbol=symbol, interval=interval, time_ms=CLOSE_MS, price=price)


def view(*features: SymbolFeatures) -> MarketView:
    return MarketView(as_of_ms=CLOSE_MS, symbols={f.symbol: f for f in features})


CONTEXT = MarketContext(
    derivatives={BTC: DerivativesSnapshot(funding_rate=0.0001)}, missing=["sentiment"]
)


def req(
    *symbols: str, market_ms: int | None = CLOSE_MS, max_age_s: float = 2.0
) -> BoardDecisionRequest:
    return BoardDecisionRequest(
        board=QUEUE,
        interval="4h",
        symbols=list(symbols),
        market_time_ms=market_ms,
        max_age_s=max_age_s,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SecretStr:
    return db_target(request, tmp_path / "prices.db")


def test_a_written_sheet_serves_its_wake_on_both_back_ends(target) -> None:
    board = DecisionBoard(target)
    board.write(NAME, view(feat(BTC, 97_000.5), feat(ETH, 3_500.0)), CONTEXT, CLOSE_MS, "h", NOW)
    sheet = board.read(NAME)
    assert sheet is not None and sheet.market_time_ms == CLOSE_MS
    answer = decision_answer(sheet, req(BTC, ETH), NOW + 0.5)
    assert answer.view is not None and answer.context == CONTEXT
    assert answer.view.symbols[BTC].price == 97_000.5 and answer.view.as_of_ms == CLOSE_MS
    # a later wake's sheet overwrites it (one row per queue and interval)
    board.write(NAME, view(feat(BTC, 96_000.0)), MarketContext(), CLOSE_MS + 1, "h", NOW + 1)
    assert board.read(NAME).view.symbols[BTC].price == 96_000.0
    board.close()


@pytest.mark.parametrize(
    "request_,now,why",
    [
        (req(BTC), NOW + 2.5, "old (bound"),  # written too long ago: the market moved on
        (req(BTC, market_ms=CLOSE_MS + 1), NOW, "older than the wake"),  # a later wake
        (req(BTC, ETH), NOW, "lacks ETH/USDT"),  # a symbol it does not hold
    ],
)
def test_a_sheet_that_cannot_serve_says_why(request_, now, why) -> None:
    sheet = DecisionSheet(NOW, "h", CLOSE_MS, view(feat(BTC, 1.0)), CONTEXT)
    answer = decision_answer(sheet, request_, now)
    assert answer.view is None and answer.context is None and why in answer.reason


def test_a_wake_by_hand_is_served_by_a_fresh_sheet_alone() -> None:
    sheet = DecisionSheet(NOW, "h", CLOSE_MS - 3_600_000, view(feat(BTC, 1.0)), CONTEXT)
    assert decision_answer(sheet, req(BTC, market_ms=None), NOW + 1.0).view is not None
    assert decision_answer(sheet, req(BTC, market_ms=None), NOW + 2.5).view is None


def test_a_sheet_of_another_interval_or_none_does_not_serve() -> None:
    hourly = DecisionSheet(NOW, "h", CLOSE_MS, view(feat(BTC, 1.0, "1h")), CONTEXT)
    assert decision_answer(hourly, req(BTC), NOW).view is None
    assert decision_answer(None, req(BTC), NOW).reason == "no sheet"


def test_a_corrupt_sheet_reads_as_none(tmp_path: Path) -> None:
    board = DecisionBoard(tmp_path / "prices.db")
    board.write(NAME, view(feat(BTC, 1.0)), CONTEXT, CLOSE_MS, "h", NOW)
    board.close()
    with sqlite3.connect(tmp_path / "prices.db") as conn:
        conn.execute("UPDATE decision_board SET body = '{\"view\": 3}'")
    assert DecisionBoard(tmp_path / "prices.db").read(NAME) is None


async def test_the_activity_rereads_a_cached_sheet_older_than_the_wake(tmp_path: Path) -> None:
    clock = Clock()
    board = DecisionBoard(tmp_path / "prices.db")
    acts = DecisionBoardActivities(board, clock)
    board.write(NAME, view(feat(BTC, 1.0)), CONTEXT, CLOSE_MS, "h", NOW)
    assert (await acts.board_decision(req(BTC))).view is not None
    # the next wake's sheet lands within the cache's re-read time: it is read anyway
    board.write(NAME, view(feat(BTC, 2.0)), CONTEXT, CLOSE_MS + 4, "h", NOW)
    answer = await acts.board_decision(req(BTC, market_ms=CLOSE_MS + 4))
    assert answer.view is not None and answer.view.symbols[BTC].price == 2.0


async def test_the_writer_stamps_the_wake_and_never_fails_it(tmp_path: Path) -> None:
    board = DecisionBoard(tmp_path / "prices.db")

    async def context() -> MarketContext:
        return CONTEXT

    writer = DecisionSheetWriter(board, NAME, lambda: view(feat(BTC, 5.0)), context, "h", Clock())
    await writer.before_wake(Wake(reason="by hand"))  # no market time: the view's own
    assert writer.writes == 1 and board.read(NAME).market_time_ms == CLOSE_MS
    await writer.before_wake(Wake(reason="candle_close", market_time_ms=CLOSE_MS + 7))
    assert writer.writes == 2 and board.read(NAME).market_time_ms == CLOSE_MS + 7
    await writer.write_once(None)  # a periodic write after it: the stamp never goes back
    assert board.read(NAME).market_time_ms == CLOSE_MS + 7
    empty = DecisionSheetWriter(board, NAME, lambda: view(), context, "h", Clock())
    assert not await empty.write_once(None) and empty.errors == 0  # warming up: nothing

    async def slow() -> MarketContext:
        await asyncio.sleep(5)
        return CONTEXT

    def broken() -> MarketView:
        raise sqlite3.OperationalError("disk I/O error")

    late = DecisionSheetWriter(
        board, NAME, lambda: view(feat(BTC, 6.0)), slow, "h", Clock(), timeout_s=0.05
    )
    await late.before_wake(Wake(reason="candle_close", market_time_ms=CLOSE_MS + 1))
    bad = DecisionSheetWriter(board, NAME, broken, context, "h", Clock())
    await bad.before_wake(Wake(reason="candle_close", market_time_ms=CLOSE_MS + 2))
    assert late.errors == 1 and bad.errors == 1
    assert board.read(NAME).market_time_ms == CLOSE_MS + 7  # the last good sheet stands


class _Handle:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def signal(self, name: str, wake: Wake) -> None:
        self.log.append(f"signal {wake.market_time_ms}")


class _Client:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def get_workflow_handle(self, workflow_id: str) -> _Handle:
        return _Handle(self.log)


async def test_the_dispatcher_writes_the_sheet_before_the_wake_and_sends_despite_a_failure():
    log: list[str] = []

    async def before(wake: Wake) -> None:
        log.append(f"sheet {wake.market_time_ms}")
        if wake.market_time_ms == 2:
            raise RuntimeError("board down")

    dispatcher = WakeDispatcher(_Client(log), "ocw-decision-a", before_send=before)  # type: ignore[arg-type]
    task = asyncio.create_task(dispatcher.run())
    dispatcher.push("candle_close", BTC, 1)
    while dispatcher.sent < 1:
        await asyncio.sleep(0.01)
    dispatcher.push("candle_close", BTC, 2)
    while dispatcher.sent < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    assert log == ["sheet 1", "signal 1", "sheet 2", "signal 2"]
