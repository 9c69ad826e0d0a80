"""Lean safety checks on the dev server in real time (issue 14): a board written by a listener-
side ``BoardWriter`` into a SQLite file, read by the trading worker's ``board_prices`` local
activity through its own connection, as two processes would. The time-skipping server cannot
show this: the board's freshness is wall-clock time.

* while the board is written, safety checks never ask the listener; a drop on the board fires
  the stop within one interval, and only the exit asks the listener (for its sell price);
* once the writer stops, the board goes stale and every check asks the listener again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from activities.paper_broker import PaperBroker
from activities.price_board import BoardPrice, BoardWriter, PriceBoard, PriceBoardActivities
from activities.trading import TradingActivities
from tests.workflows.fakes import FakeMarket, ScriptedPolicy, SignalSink
from tests.workflows.test_position_workflow import _broker_with_entry, _input
from trading.state import PositionState
from workflows.position import PositionWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

BTC = "BTC/USDT"
INTERVAL_S = 4.0  # the board is trusted up to 5 % of it: 200 ms, written every 50 ms
# a check that finds the board a little late (a busy machine delays the writer's thread) asks
# the listener, correctly: allow one such check per phase, so the test says "the board path",
# not "this machine is never busy"
SLACK = 1


class Listener:
    """The listener's side of the board: one price, written every 50 ms while running."""

    def __init__(self, path: Path, queue: str) -> None:
        self.price = 100.0
        self.writer = BoardWriter(PriceBoard(path), queue, self.snapshot, 0.05, "listener-host")
        self.task: asyncio.Task | None = None

    def snapshot(self) -> dict[str, BoardPrice]:
        now = time.time()
        return {BTC: BoardPrice(self.price, int(now * 1000), now)}

    def start(self) -> None:
        self.task = asyncio.create_task(self.writer.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class Run:
    handle: WorkflowHandle
    listener: Listener
    board: PriceBoardActivities
    broker: PaperBroker
    position_id: str


@contextlib.asynccontextmanager
async def lean_position(dev_env, tmp_path: Path, market: FakeMarket) -> AsyncIterator[Run]:
    """A lean PositionWorkflow with the board written, its trading worker (reading the board
    through a connection of its own) and a listener worker serving ``market_prices``."""
    trading_q, market_q = f"t-{uuid.uuid4()}", f"m-{uuid.uuid4()}"
    position_id = f"lean-{uuid.uuid4().hex[:8]}-BTC-1"
    broker, journal = _broker_with_entry(tmp_path, position_id)
    trading = TradingActivities(broker, journal)
    board = PriceBoardActivities(PriceBoard(tmp_path / "prices.db"))
    listener = Listener(tmp_path / "prices.db", market_q)
    listener.start()
    trading_worker = Worker(
        dev_env.client,
        task_queue=trading_q,
        workflows=[PositionWorkflow, SignalSink],
        activities=[
            board.board_prices,
            trading.place_order,
            trading.journal_trade,
            ScriptedPolicy().evaluate_position,
        ],
    )
    market_worker = Worker(dev_env.client, task_queue=market_q, activities=[market.market_prices])
    try:
        async with trading_worker, market_worker:
            sink = await dev_env.client.start_workflow(
                SignalSink.run, id=f"sink-{trading_q}", task_queue=trading_q
            )
            inp = _input(
                position_id, sink.id, trading_q, safety_interval_s=INTERVAL_S, agent_interval_s=600
            )
            inp.market_task_queue = market_q
            inp.lean_ticks = True
            handle = await dev_env.client.start_workflow(
                PositionWorkflow.run, inp, id=f"pos-{position_id}", task_queue=trading_q
            )
            yield Run(handle, listener, board, broker, position_id)
    finally:
        await listener.stop()


async def checks(handle: WorkflowHandle, at_least: int, timeout_s: float = 30.0) -> PositionState:
    """The position's state once it has run ``at_least`` safety checks."""
    deadline = time.monotonic() + timeout_s
    while (state := await handle.query(PositionWorkflow.status)).safety_checks < at_least:
        assert time.monotonic() < deadline, f"{state.safety_checks} safety checks, not {at_least}"
        await asyncio.sleep(0.2)
    return state


async def test_checks_read_the_board_and_a_drop_on_it_fires_the_stop(dev_env, tmp_path):
    market = FakeMarket(default=100.0)
    async with lean_position(dev_env, tmp_path, market) as run:
        await checks(run.handle, 3)
        on_board = market.price_calls
        assert on_board <= SLACK  # three checks, (all but at most one) on the board
        dropped_at = time.time()
        run.listener.price = market.default = 95.5  # -4.5 %: below the -4 % net stop
        trade = await asyncio.wait_for(run.handle.result(), 30)

    assert trade.exit_reason == "stop_loss" and trade.exit_price == pytest.approx(95.5)
    assert trade.exit_time_ms / 1000 - dropped_at <= INTERVAL_S + 1.5  # within one interval
    assert market.price_calls <= 1 + SLACK  # the exit's sell price, (almost) nothing else
    assert run.board.reads >= 1 and run.board.errors == 0
    assert [f.side.value for f in run.broker.fills(run.position_id)] == ["BUY", "SELL"]


async def test_a_board_whose_writer_stops_sends_the_checks_to_the_listener(dev_env, tmp_path):
    market = FakeMarket(default=100.0)
    async with lean_position(dev_env, tmp_path, market) as run:
        await checks(run.handle, 2)
        on_board = market.price_calls
        await run.listener.stop()  # the listener dies: its board ages past 200 ms
        await asyncio.sleep(0.3)  # a check from now on finds it stale
        before = (await run.handle.query(PositionWorkflow.status)).safety_checks
        # a loaded machine can count a check that read the board just before the stop only
        # after it: one more check than the two that must ask
        state = await checks(run.handle, before + 2 + SLACK)
        await run.handle.terminate("test over")

    assert on_board <= SLACK
    assert market.price_calls >= on_board + 2  # the checks after the writer stopped asked it
    assert state.missed_checks == 0 and not state.price_stale
