"""The spine on the dev server, in real time (issue 10): what the time-skipping server cannot
show because it never skips past a task that no worker takes or an activity that hangs.

* exits and close-all work with the listener stopped (its queue has no worker);
* a hanging agent check never delays a stop: the safety layer runs on its own cadence;
* an order attempt lost with its worker is retried after the short heartbeat timeout, not
  after the whole start-to-close timeout.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle

from activities.trading import TradingActivities
from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.faults import SlowEvaluate
from tests.workflows.test_decision_workflow import SYMBOLS, Rig
from trading.models import Action, Fill, OrderRequest, PositionParams, TradeDecision, Wake
from trading.state import DecisionState
from workflows import activity_api as api
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

pytestmark = pytest.mark.integration

BTC, ETH = SYMBOLS
FAST = PositionParams(safety_interval_s=1.0, agent_interval_s=2.0)


def buy(*symbols: str) -> list[TradeDecision]:
    return [TradeDecision(ticker=s, action=Action.BUY, position_pct=0.2) for s in symbols]


async def until(handle: WorkflowHandle, cond, timeout: float = 30.0) -> DecisionState:
    deadline = time.monotonic() + timeout
    while True:
        state = await handle.query(DecisionWorkflow.state)
        if cond(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met: {state.counters}")
        await asyncio.sleep(0.2)


async def test_exits_and_close_all_work_with_the_listener_stopped(dev_env, tmp_path):
    market = FakeMarket({BTC: PriceScript([(0, 100.0)]), ETH: PriceScript([(0, 50.0)])})
    rig = Rig(
        dev_env,
        tmp_path,
        market,
        ScriptedPolicy(lambda c, r: buy(BTC, ETH) if c == 1 else []),
        separate_market=True,
    )
    async with rig.worker():
        async with rig.market_worker():
            handle = await rig.start(position=FAST)
            await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
            state = await until(handle, lambda s: len(s.positions) == 2)
            await asyncio.sleep(2.5)  # safety ticks read prices
        # the listener is gone: no worker takes its queue
        ph = dev_env.client.get_workflow_handle(state.positions[BTC].workflow_id)
        deadline = time.monotonic() + 20
        while True:
            pstate = await ph.query(PositionWorkflow.status)
            if pstate.missed_checks >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert pstate.missed_checks >= 1 and pstate.price_stale
        assert any("no price from the listener" in i.error for i in pstate.incidents)
        asked = time.monotonic()
        await handle.signal(DecisionWorkflow.close_all)
        state = await until(handle, lambda s: not s.positions and not s.queue, timeout=30)
        took = time.monotonic() - asked
        assert (await handle.describe()).status.name == "RUNNING"
    assert took < 15, f"close-all took {took:.1f}s with the listener down"
    assert {t.symbol: t.exit_price for t in state.recent_trades} == {BTC: 100.0, ETH: 50.0}
    assert {t.exit_reason for t in state.recent_trades} == {"close_all"}
    assert rig.broker.balances().holdings == {}


async def test_a_hanging_agent_check_never_delays_the_stop(dev_env, tmp_path):
    drop_at = 4.0
    script = PriceScript([(0, 100.0), (drop_at, 94.0)])
    slow = SlowEvaluate()
    policy = ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else [])
    policy.evaluate_position = slow.evaluate_position  # type: ignore[method-assign]
    rig = Rig(dev_env, tmp_path, FakeMarket({BTC: script}), policy)
    try:
        async with rig.worker():
            handle = await rig.start(position=FAST)
            await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
            state = await until(handle, lambda s: s.counters.positions_closed == 1, timeout=30)
            assert slow.started >= 1 and not slow.release.is_set()  # the agent layer hangs
            trade = state.recent_trades[-1]
            assert trade.exit_reason == "stop_loss"
            assert script.t0_ms is not None
            drop_ms = script.t0_ms + int(drop_at * 1000)
            # within one safety interval of the drop (plus a second of scheduling slack)
            assert trade.exit_time_ms - drop_ms <= 2_000
    finally:
        slow.release.set()


class LosesFirstOrderAttempt(TradingActivities):
    """The first attempt of an entry order hangs without a heartbeat, as when its worker died."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attempt_times: dict[str, list[float]] = {}

    @activity.defn(name=api.PLACE_ORDER)
    async def place_order(self, req: OrderRequest) -> Fill:
        self.attempt_times.setdefault(req.client_order_id, []).append(time.monotonic())
        if req.seq == 1 and activity.info().attempt == 1:
            await asyncio.sleep(3600)  # never answers, never heartbeats
        return await super().place_order(req)


async def test_a_lost_order_attempt_is_retried_after_the_heartbeat_timeout(dev_env, tmp_path):
    rig = Rig(
        dev_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else []),
        trading_cls=LosesFirstOrderAttempt,
    )
    async with rig.worker():
        handle = await rig.start(position=FAST)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
        state = await until(handle, lambda s: BTC in s.positions, timeout=40)
        times = next(iter(rig.trading.attempt_times.values()))
        gap = times[1] - times[0]
        hb = api.HEARTBEAT.total_seconds()
        assert hb <= gap < api.ORDER_TIMEOUT.total_seconds(), gap
        await handle.signal(DecisionWorkflow.close_all)
        await until(handle, lambda s: not s.positions, timeout=40)
    assert [f.side for f in rig.broker.fills(state.positions[BTC].position_id)] == ["BUY", "SELL"]
