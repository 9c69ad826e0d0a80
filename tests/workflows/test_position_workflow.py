"""PositionWorkflow on the time-skipping server: stops, trailing stop, one exit, continue-as-new."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.journal import Journal
from activities.paper_broker import PaperBroker
from activities.trading import TradingActivities
from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy, SignalSink
from trading.models import (
    ClosedTrade,
    ExitPlan,
    OrderRequest,
    PositionParams,
    PositionSide,
    Side,
    WakeCondition,
)
from trading.orders import client_order_id
from trading.state import EvaluateRequest, PositionInput, PositionState, PositionVerdict
from workflows import activity_api as api
from workflows.position import PositionWorkflow

ENTRY = 100.0
QTY = 10.0
T0 = 1_750_000_000_000


def _broker_with_entry(
    tmp_path: Path, position_id: str, side: PositionSide = PositionSide.LONG
) -> tuple[PaperBroker, Journal]:
    broker = PaperBroker(
        tmp_path / "broker.db",
        initial_cash=10_000,
        fee_rate=0.001,
        slippage_bps=0,
        allow_shorts=side is PositionSide.SHORT,
    )
    broker.place_order(
        OrderRequest(
            client_order_id=client_order_id(position_id, 1),
            position_id=position_id,
            seq=1,
            symbol="BTC/USDT",
            side=side.entry_side,
            qty=QTY,
            ref_price=ENTRY,
            market_time_ms=T0,
            position_side=side,
        )
    )
    return broker, Journal(tmp_path / "journal.db")


def _input(position_id: str, sink_id: str, queue: str, **params) -> PositionInput:
    fee = ENTRY * QTY * 0.001
    return PositionInput(
        state=PositionState(
            position_id=position_id,
            account="test",
            symbol="BTC/USDT",
            qty=QTY,
            avg_entry=ENTRY,
            entry_time_ms=T0,
            entry_fees=fee,
            cost=ENTRY * QTY + fee,
            peak_price=ENTRY,
            trough_price=ENTRY,
            last_price=ENTRY,
            last_price_ms=T0,
        ),
        params=PositionParams(**params),
        decision_workflow_id=sink_id,
        trading_task_queue=queue,
        market_task_queue=queue,
    )


async def _run_position(
    env: WorkflowEnvironment,
    tmp_path: Path,
    market: FakeMarket,
    policy: ScriptedPolicy | None = None,
    max_ticks_per_run: int | None = None,
    lean: bool = False,
    plan: ExitPlan | None = None,
    side: PositionSide = PositionSide.LONG,
    **params,
) -> tuple[ClosedTrade, PaperBroker, str]:
    queue = f"q-{uuid.uuid4()}"
    position_id = f"test-{uuid.uuid4().hex[:8]}-BTC-1"
    broker, journal = _broker_with_entry(tmp_path, position_id, side)
    trading = TradingActivities(broker, journal)
    policy = policy or ScriptedPolicy()
    market.use_clock_of(env)
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[PositionWorkflow, SignalSink],
        activities=[
            market.market_prices,
            market.board_prices,
            market.board_view,
            market.market_view,
            trading.place_order,
            trading.journal_trade,
            policy.evaluate_position,
        ],
    ):
        sink = await env.client.start_workflow(SignalSink.run, id=f"sink-{queue}", task_queue=queue)
        inp = _input(position_id, sink.id, queue, **params)
        inp.max_ticks_per_run = max_ticks_per_run
        inp.lean_ticks = lean
        inp.state.exit_plan = plan
        inp.state.side = side
        handle = await env.client.start_workflow(
            PositionWorkflow.run, inp, id=f"pos-{position_id}", task_queue=queue
        )
        trade = await handle.result()
        # the DecisionWorkflow stand-in got the closed trade exactly once
        assert [t.trade_id for t in await sink.query(SignalSink.trades)] == [position_id]
        last_run = (await env.client.get_workflow_handle(handle.id).describe()).run_id
        runs_changed = last_run != handle.first_execution_run_id
        assert runs_changed == (max_ticks_per_run is not None)
    return trade, broker, position_id


async def test_stop_loss_exits_within_one_safety_interval(ts_env, tmp_path):
    drop_at = 61.0  # seconds after the first price check: just after one, 29 s before the next
    script = PriceScript([(0, 100.0), (drop_at, 95.5)])  # -4.5% gross, below the -4% net stop
    market = FakeMarket({"BTC/USDT": script})
    trade, broker, position_id = await _run_position(ts_env, tmp_path, market)

    assert trade.exit_reason == "stop_loss"
    assert trade.exit_price == pytest.approx(95.5)
    drop_ms = script.t0_ms + drop_at * 1000
    assert drop_ms <= trade.exit_time_ms <= drop_ms + 30_000  # within one 30 s safety interval
    # the price checks before the drop saw 100 and did not exit
    assert all(p == 100.0 for t, p in script.calls if t < drop_ms)
    assert trade.pnl < 0 and trade.fees == pytest.approx(1.0 + 0.955)
    fills = broker.fills(position_id)
    assert [f.side for f in fills] == [Side.BUY, Side.SELL]
    assert broker.balances().holdings.get("BTC/USDT", 0.0) == pytest.approx(0.0)


@pytest.mark.parametrize("lean", [False, True], ids=["listener", "board"])
async def test_a_shorts_stop_above_entry_fires_on_a_rise(ts_env, tmp_path, lean):
    drop_at = 61.0
    script = PriceScript([(0, 100.0), (30, 97.0), (drop_at, 104.5)])  # +4.5 %: past the stop
    market = FakeMarket({"BTC/USDT": script})
    trade, broker, position_id = await _run_position(
        ts_env, tmp_path, market, lean=lean, side=PositionSide.SHORT
    )
    assert trade.exit_reason == "stop_loss" and trade.side is PositionSide.SHORT
    assert trade.exit_price == pytest.approx(104.5)
    rise_ms = script.t0_ms + drop_at * 1000
    assert rise_ms <= trade.exit_time_ms <= rise_ms + 30_000
    # sold at 100, bought back at 104.5: (100 - 104.5)·10 less both fees
    assert trade.pnl == pytest.approx(-45.0 - 1.0 - 1.045)
    assert trade.pnl_pct == pytest.approx(trade.pnl / (1_000.0 + 1.0))
    fills = broker.fills(position_id)
    assert [f.side for f in fills] == [Side.SELL, Side.BUY]  # the cover is a BUY
    assert broker.balances().holdings == {}
    assert broker.balances().cash == pytest.approx(10_000.0 + trade.pnl)


async def test_a_shorts_trail_follows_the_trough(ts_env, tmp_path):
    steps = [
        (0, 100.0),
        (60, 95.0),
        (120, 90.0),
        (180, 85.0),
        (240, 80.0),
        (300, 88.0),
        (400, 90.0),
    ]
    script = PriceScript(steps)
    market = FakeMarket({"BTC/USDT": script})
    trade, _, _ = await _run_position(ts_env, tmp_path, market, side=PositionSide.SHORT)
    # the trail hangs 12 % above the trough of 80 (89.6): 88 kept the short, 90 covered it
    assert trade.exit_reason == "trailing_stop"
    assert trade.exit_price == pytest.approx(90.0)
    assert 88.0 in [p for _, p in script.calls]
    assert trade.pnl == pytest.approx(100.0 - 1.0 - 0.9)


async def test_no_exit_while_price_holds_above_stop(ts_env, tmp_path):
    # -3.5% never triggers the -4% stop; the time stop closes it after 2 market hours
    script = PriceScript([(0, 100.0), (60, 96.5)])
    market = FakeMarket({"BTC/USDT": script})
    trade, _, _ = await _run_position(ts_env, tmp_path, market, time_stop_hours=2.0)
    assert trade.exit_reason == "time_stop"
    assert trade.exit_time_ms - T0 >= 2 * 3_600_000 - 1


@pytest.mark.parametrize("lean", [False, True], ids=["listener", "board"])
async def test_trailing_stop_follows_the_peak(ts_env, tmp_path, lean):
    steps = [
        (0, 100.0),
        (60, 105.0),
        (120, 110.0),
        (180, 115.0),
        (240, 120.0),
        (300, 112.0),
        (400, 105.0),
    ]
    script = PriceScript(steps)
    market = FakeMarket({"BTC/USDT": script})
    trade, _, _ = await _run_position(ts_env, tmp_path, market, lean=lean)

    assert trade.exit_reason == "trailing_stop"
    # the trail hangs 12% below the peak of 120 (105.6): 112 kept the position, 105 closed it
    assert trade.exit_price == pytest.approx(105.0)
    seen = [p for _, p in script.calls]
    assert 112.0 in seen
    assert trade.pnl > 0


async def test_trail_multiplier_tightens_the_trail(ts_env, tmp_path):
    steps = [(0, 100.0), (60, 120.0), (120, 112.0), (400, 105.0)]
    script = PriceScript(steps)
    market = FakeMarket({"BTC/USDT": script})
    # trail 12% x 0.5 = 6% below 120 -> exits at 112.8 or lower: 112 closes it
    trade, _, _ = await _run_position(ts_env, tmp_path, market, trail_multiplier=0.5)
    assert trade.exit_reason == "trailing_stop"
    assert trade.exit_price == pytest.approx(112.0)


async def test_exit_signal_and_stop_give_one_exit(ts_env, tmp_path):
    """A manual exit and a stop racing: exactly one sell order, whoever asked first."""
    script = PriceScript([(0, 100.0), (30, 90.0)])
    market = FakeMarket({"BTC/USDT": script})
    queue = f"q-{uuid.uuid4()}"
    position_id = f"test-{uuid.uuid4().hex[:8]}-BTC-1"
    broker, journal = _broker_with_entry(tmp_path, position_id)
    trading = TradingActivities(broker, journal)
    async with Worker(
        ts_env.client,
        task_queue=queue,
        workflows=[PositionWorkflow, SignalSink],
        activities=[
            market.market_prices,
            market.market_view,
            trading.place_order,
            trading.journal_trade,
            ScriptedPolicy().evaluate_position,
        ],
    ):
        sink = await ts_env.client.start_workflow(
            SignalSink.run, id=f"sink-{queue}", task_queue=queue
        )
        handle = await ts_env.client.start_workflow(
            PositionWorkflow.run,
            _input(position_id, sink.id, queue),
            id=f"pos-{position_id}",
            task_queue=queue,
        )
        await ts_env.sleep(timedelta(seconds=31))
        await handle.signal(PositionWorkflow.exit, "decision_sell")
        await handle.signal(PositionWorkflow.exit, "manual")
        trade = await handle.result()
    sells = [f for f in broker.fills(position_id) if f.side == Side.SELL]
    assert len(sells) == 1
    assert trade.exit_reason in {"stop_loss", "decision_sell"}


@pytest.mark.parametrize("lean", [False, True], ids=["listener", "board"])
async def test_state_survives_continue_as_new(ts_env, tmp_path, lean):
    steps = [(0, 100.0), (60, 110.0), (120, 121.0), (300, 118.0), (2000, 104.0)]
    script = PriceScript(steps)
    market = FakeMarket({"BTC/USDT": script})
    trade, _, position_id = await _run_position(
        ts_env, tmp_path, market, max_ticks_per_run=3, lean=lean
    )
    # the peak of 121 was seen in an earlier run and still drives the trail after the hand-over
    assert trade.exit_reason == "trailing_stop"
    assert trade.exit_price == pytest.approx(104.0)


# ------------------------------------------------------------ lean ticks (issue 14)


async def _history(env: WorkflowEnvironment, position_id: str):
    return await env.client.get_workflow_handle(f"pos-{position_id}").fetch_history()


def _scheduled(history, name: str) -> int:
    return sum(
        1
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == name
    )


def _count(history, field: str) -> int:
    return sum(1 for e in history.events if e.HasField(field))


async def test_a_lean_position_checks_on_the_board_in_one_workflow_task(ts_env, tmp_path):
    drop_at = 61.0
    script = PriceScript([(0, 100.0), (drop_at, 95.5)])
    market = FakeMarket({"BTC/USDT": script})
    trade, broker, position_id = await _run_position(ts_env, tmp_path, market, lean=True)

    assert trade.exit_reason == "stop_loss" and trade.exit_price == pytest.approx(95.5)
    drop_ms = script.t0_ms + drop_at * 1000
    assert drop_ms <= trade.exit_time_ms <= drop_ms + 30_000  # still within one interval
    assert [f.side for f in broker.fills(position_id)] == [Side.BUY, Side.SELL]
    history = await _history(ts_env, position_id)
    checks = market.board_calls
    assert checks >= 3
    # no safety check asked the listener: its one market_prices is the exit's sell price
    assert _scheduled(history, "market_prices") == market.price_calls == 1
    assert _scheduled(history, "evaluate_position") == 0  # the scorer ran locally too
    assert _count(history, "marker_recorded_event_attributes") >= checks
    # a check is one workflow task (timer fired -> task -> marker + next timer), not two
    tasks = _count(history, "workflow_task_completed_event_attributes")
    assert tasks <= checks + 6, (tasks, checks)


async def test_a_stale_board_falls_back_to_the_listener(ts_env, tmp_path):
    script = PriceScript([(0, 100.0), (61.0, 95.5)])
    market = FakeMarket({"BTC/USDT": script})
    market.board_fresh = False  # the listener stopped writing it, or another host holds it
    trade, _, position_id = await _run_position(ts_env, tmp_path, market, lean=True)

    assert trade.exit_reason == "stop_loss" and trade.exit_price == pytest.approx(95.5)
    assert market.board_calls >= 3
    # every check asked the listener after the board said "missing", and the exit once more
    assert market.price_calls == market.board_calls + 1
    history = await _history(ts_env, position_id)
    assert _scheduled(history, "market_prices") == market.price_calls


class ExitPolicy(ScriptedPolicy):
    @activity.defn(name=api.EVALUATE_POSITION)
    async def evaluate_position(self, req: EvaluateRequest) -> PositionVerdict:
        return PositionVerdict(verdict="EXIT", score=-1.0)


@pytest.mark.parametrize("lean", [False, True], ids=["activity", "local"])
async def test_the_scorers_exit_closes_the_position_either_way(ts_env, tmp_path, lean):
    script = PriceScript([(0, 101.0)])
    market = FakeMarket({"BTC/USDT": script})
    trade, _, position_id = await _run_position(
        ts_env, tmp_path, market, policy=ExitPolicy(), lean=lean
    )
    assert trade.exit_reason == "agent_exit"
    # the first agent check: after 3 minutes, or (lean) on a safety tick in the second half;
    # the script's clock starts at the first safety check, 30 s in
    first_ms = trade.exit_time_ms - script.t0_ms + 30_000
    assert (89_000 if lean else 178_000) <= first_ms <= 185_000, first_ms  # ms of jitter
    history = await _history(ts_env, position_id)
    assert _scheduled(history, "evaluate_position") == (0 if lean else 1)
    # a lean agent check reads its features from the feature board, not from the listener
    assert _scheduled(history, "market_view") == market.view_calls == (0 if lean else 1)
    assert market.board_view_calls == (1 if lean else 0)


async def test_a_stale_feature_board_falls_back_to_the_listener(ts_env, tmp_path):
    market = FakeMarket({"BTC/USDT": PriceScript([(0, 101.0)])})
    market.board_fresh = False
    trade, _, position_id = await _run_position(
        ts_env, tmp_path, market, policy=ExitPolicy(), lean=True
    )
    assert trade.exit_reason == "agent_exit"  # the scorer still ran, on the listener's view
    assert market.board_view_calls == 1
    history = await _history(ts_env, position_id)
    assert _scheduled(history, "market_view") == market.view_calls == 1


async def test_lean_positions_opened_together_spread_their_first_agent_check(ts_env, tmp_path):
    """Issue 14: the first agent check falls on one of the safety ticks of the interval's
    second half (90, 120, 150 or 180 s), drawn per position, so positions opened at one
    candle close do not all ask for their features in the same seconds."""
    firsts = []
    for _ in range(8):
        script = PriceScript([(0, 101.0)])
        market = FakeMarket({"BTC/USDT": script})
        trade, _, _ = await _run_position(ts_env, tmp_path, market, policy=ExitPolicy(), lean=True)
        assert trade.exit_reason == "agent_exit"
        firsts.append((trade.exit_time_ms - script.t0_ms + 30_000) / 1000)
    slots = [round(t / 30) * 30 for t in firsts]
    assert all(abs(t - s) < 5 for t, s in zip(firsts, slots, strict=True)), firsts
    assert set(slots) <= {90, 120, 150, 180}, firsts
    assert len(set(slots)) > 1, firsts  # 8 positions on one slot: 4 * 4**-8, never by chance


# ------------------------------------------------------------ exit plans (issue 15)


def _plan(invalid_below: float = 98.0, target: float = 110.0) -> ExitPlan:
    return ExitPlan(
        stop_price=96.2,
        target_price=target,
        invalidation=WakeCondition(
            metric="BTC/USDT:price", operator="lt", threshold=invalid_below, reason="range lost"
        ),
    )


async def test_a_fired_invalidation_exits_within_one_safety_interval(ts_env, tmp_path):
    # 97.5: above the 4 % stop, below the plan's invalidation at 98
    script = PriceScript([(0, 100.0), (61.0, 97.5)])
    market = FakeMarket({"BTC/USDT": script})
    trade, _, position_id = await _run_position(ts_env, tmp_path, market, plan=_plan())
    assert trade.exit_reason == "plan_invalidated" and trade.exit_price == pytest.approx(97.5)
    drop_ms = script.t0_ms + 61_000
    assert drop_ms <= trade.exit_time_ms <= drop_ms + 30_000


async def test_a_reached_target_asks_the_agent_layer_at_once(ts_env, tmp_path):
    # the target at 105 is reached at 61 s: the scorer is asked then (its EXIT closes the
    # position), not at its 3-minute timer
    script = PriceScript([(0, 101.0), (61.0, 105.5)])
    market = FakeMarket({"BTC/USDT": script})
    trade, _, _ = await _run_position(
        ts_env, tmp_path, market, policy=ExitPolicy(), plan=_plan(target=105.0)
    )
    assert trade.exit_reason == "agent_exit"
    assert trade.exit_time_ms - script.t0_ms <= 61_000 + 30_000  # long before 180 s
    assert market.view_calls == 1
