"""DecisionWorkflow on the time-skipping server: no wake lost, limits, continue-as-new."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.journal import Journal
from activities.learner_store import LearnerActivities, LearnerStore
from activities.paper_broker import PaperBroker
from activities.trading import TradingActivities
from tests.replay.replaying import replayer
from tests.workflows.fakes import FakeMarket, FakeRegimes, PriceScript, ScriptedPolicy
from trading.exit_plan import stop_loss_pct_for
from trading.models import (
    Action,
    ExitPlan,
    PositionParams,
    PositionSide,
    Side,
    TradeDecision,
    Wake,
    WakeCondition,
)
from trading.state import DecisionInput, DecisionState, EngineConfig, PositionInput
from workflows.decision import LATER_PATCHES, DecisionWorkflow
from workflows.position import PositionWorkflow

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def _config(queue: str, market_queue: str | None = None, **overrides) -> EngineConfig:
    return EngineConfig(
        account="t",
        symbols=SYMBOLS,
        trading_task_queue=queue,
        market_task_queue=market_queue or queue,
        initial_cash=10_000,
        **{"position": PositionParams(), **overrides},
    )


class Rig:
    """A worker with the real broker and journal, a scripted market and policy."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        tmp: Path,
        market: FakeMarket,
        policy: ScriptedPolicy,
        trading_cls: type[TradingActivities] = TradingActivities,
        separate_market: bool = False,
    ):
        self.env = env
        self.queue = f"q-{uuid.uuid4()}"
        # the listener's activities on a queue of their own, so a test can stop that worker
        self.market_queue = f"{self.queue}-market" if separate_market else self.queue
        self.broker = PaperBroker(
            tmp / f"{self.queue}-broker.db", initial_cash=10_000, slippage_bps=0
        )
        self.trading = trading_cls(
            self.broker, Journal(tmp / f"{self.queue}-journal.db"), env.client
        )
        self.market = market
        self.policy = policy
        self.regimes = FakeRegimes()
        self.learner = LearnerActivities(LearnerStore(tmp / f"{self.queue}-learner.db"))
        self.extra_activities: list = []  # e.g. the real LLM activities
        self.workflow_ids: list[str] = []  # terminated when the rig's worker stops
        self.flat: DecisionState | None = None

    def market_activities(self) -> list:
        return [
            self.market.market_prices,
            self.market.market_view,
            self.market.market_context,
            self.regimes.crypto_regime,  # fitted in the listener, beside its bars
        ]

    def market_worker(self) -> Worker:
        """The listener's side alone (``separate_market``): stop it to take the listener away."""
        return Worker(
            self.env.client, task_queue=self.market_queue, activities=self.market_activities()
        )

    @contextlib.asynccontextmanager
    async def worker(self, keep: bool = False, **options) -> AsyncIterator[Worker]:
        """The trading worker; on the way out every workflow of the rig is terminated first
        (unless ``keep``, for a worker restart): a leftover timer or activity on a queue
        without a worker stalls time skipping for every later test on the shared server."""
        async with self.trading_worker(**options) as worker:
            try:
                yield worker
            finally:
                if not keep:
                    await self.terminate_all()

    def track(self, workflow_id: str) -> None:
        self.workflow_ids.append(workflow_id)

    async def terminate_all(self) -> None:
        ids = list(self.workflow_ids)
        for wid in list(ids):
            with contextlib.suppress(Exception):
                state = await self.env.client.get_workflow_handle(wid).query(DecisionWorkflow.state)
                ids += [p.workflow_id for p in state.positions.values()]
        for fill in self.broker.fills():
            base = f"ocw-position-{fill.position_id}"
            ids += [base, *(f"{base}-w{n}" for n in range(2, 5))]
        for wid in dict.fromkeys(ids):
            with contextlib.suppress(Exception):
                await self.env.client.get_workflow_handle(wid).terminate(reason="test over")

    def trading_worker(self, **options) -> Worker:
        market = self.market_activities() if self.market_queue == self.queue else []
        return Worker(
            self.env.client,
            task_queue=self.queue,
            **options,
            workflows=[DecisionWorkflow, PositionWorkflow],
            activities=[
                *market,
                self.market.board_decision,  # a local activity: on the trading worker
                self.policy.decide,
                self.policy.evaluate_position,
                self.trading.place_order,
                self.trading.journal_decision,
                self.trading.journal_trade,
                self.trading.journal_incident,
                self.trading.start_position,
                self.trading.position_status,
                self.trading.book_funding,
                self.regimes.macro_regime,
                *self.learner.all(),
                *self.extra_activities,
            ],
        )

    async def start(self, **overrides) -> WorkflowHandle:
        handle = await self.env.client.start_workflow(
            DecisionWorkflow.run,
            DecisionInput(config=_config(self.queue, self.market_queue, **overrides)),
            id=f"decision-{self.queue}",
            task_queue=self.queue,
        )
        self.track(handle.id)
        return handle


async def _until(
    handle: WorkflowHandle,
    cond,
    env: WorkflowEnvironment,
    timeout_s: float = 30,
    skip_time: bool = True,
) -> DecisionState:
    """The state once ``cond`` holds, skipping 5 s of server time between looks; with
    ``skip_time`` off it polls in real time instead (a skip while a local activity runs can
    reach the workflow task's heartbeat and cut the task, which a task-layout test sees)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        state = await handle.query(DecisionWorkflow.state)
        if cond(state):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"condition not met: {state.counters}, {state.decided_by}")
        if skip_time:
            await env.sleep(timedelta(seconds=5))
        else:
            await asyncio.sleep(0.05)


async def test_wakes_during_a_running_decision_are_all_handled_in_one_cycle(ts_env, tmp_path):
    """Wakes queued while a decision runs are not lost, and not worked off one decision each
    on the same (current) market: they fold into one cycle carrying every reason."""
    policy = ScriptedPolicy()
    policy.gate = asyncio.Event()  # the first decision hangs like a slow LLM call
    rig = Rig(ts_env, tmp_path, FakeMarket(), policy)
    async with rig.worker():
        handle = await rig.start()
        await handle.signal(DecisionWorkflow.wake, Wake(reason="first"))
        await asyncio.wait_for(policy.started.wait(), 10)
        for i in range(5):
            await handle.signal(DecisionWorkflow.wake, Wake(reason=f"during-{i}"))
        status = await handle.query(DecisionWorkflow.status)
        assert status.busy and status.queue_length == 5
        policy.gate.set()
        state = await _until(
            handle, lambda s: s.counters.wakes_handled == 6 and not s.queue, ts_env
        )
    cycles = [e for e in state.decision_log if e.source != "note"]
    assert [e.wake_reasons for e in cycles] == [
        ["first"],
        [f"during-{i}" for i in range(5)],
    ]
    assert any("folded 4 queued wake(s)" in a for a in cycles[1].actions)
    assert state.counters.wakes_received == 6
    assert state.counters.cycles == 2 and state.counters.wakes_folded == 4
    assert [r.decision_id.rsplit("-", 1)[1] for r in policy.requests] == ["1", "2"]
    assert policy.requests[1].wake_reasons == [f"during-{i}" for i in range(5)]


async def test_a_cycle_asks_for_the_view_and_the_context_in_one_workflow_task(ts_env, tmp_path):
    """Issue 14: the context does not wait for the view (one round trip less per wake)."""
    policy = ScriptedPolicy()
    rig = Rig(ts_env, tmp_path, FakeMarket(), policy)
    async with rig.worker():
        handle = await rig.start()
        await handle.signal(DecisionWorkflow.wake, Wake(reason="by hand"))
        await _until(handle, lambda s: s.counters.wakes_handled == 1 and not s.queue, ts_env)
        assert len(policy.requests) == 1
        history = await handle.fetch_history()
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name: (
            e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
        )
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert scheduled["market_view"] == scheduled["market_context"]
    assert scheduled["decide"] > scheduled["market_view"]  # the decision waits for both


async def test_a_lean_engine_decides_sizes_and_orders_in_one_workflow_task(ts_env, tmp_path):
    """Issue 14: with lean ticks the rule policy's decide is a local activity, so the risk
    check and the entry's order follow it in the same workflow task (one round trip less per
    wake); the entry is the same as on the activity path."""

    def script(cycle: int, req) -> list[TradeDecision]:
        return [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.25)]

    policy = ScriptedPolicy(script)
    market = FakeMarket()
    market.board_fresh = False  # the view from the listener (the decision board: below)
    rig = Rig(ts_env, tmp_path, market, policy)
    async with rig.worker():
        handle = await rig.start(lean_ticks=True)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="by hand"))
        state = await _until(
            handle,
            lambda s: s.counters.wakes_handled == 1 and "BTC/USDT" in s.positions,
            ts_env,
            skip_time=False,
        )
        history = await handle.fetch_history()
    assert len(policy.requests) == 1 and state.counters.orders == 1
    events = list(history.events)
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name: (
            e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
        )
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert "decide" not in scheduled  # no activity task of its own
    markers = [
        e.marker_recorded_event_attributes.workflow_task_completed_event_id
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    assert len(markers) == 2  # the decision board's (it could not serve), the decide's
    # the decision's marker and the entry's order come out of one workflow task
    assert markers[1] == scheduled["place_order"] > scheduled["market_view"]
    fills = rig.broker.fills()
    assert [f.symbol for f in fills] == ["BTC/USDT"]


async def test_duplicate_wake_ids_are_handled_once(ts_env, tmp_path):
    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy())
    async with rig.worker():
        handle = await rig.start()
        for _ in range(3):  # a retried delivery brings the same wake again
            await handle.signal(DecisionWorkflow.wake, Wake(reason="candle_close", wake_id="w1"))
        await _until(handle, lambda s: s.counters.wakes_handled == 1 and not s.queue, ts_env)
        # ... and again after it was handled; then a new wake (sent after the first cycle, so
        # it cannot fold into it however fast the signals arrive)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="candle_close", wake_id="w1"))
        await handle.signal(DecisionWorkflow.wake, Wake(reason="candle_close", wake_id="w2"))
        state = await _until(
            handle, lambda s: s.counters.wakes_handled == 2 and not s.queue, ts_env
        )
    assert state.counters.wakes_received == 5
    assert state.counters.cycles == 2 and state.counters.wakes_folded == 0


async def _flatten(handle: WorkflowHandle, env: WorkflowEnvironment) -> DecisionState:
    """Close every position: leftover 30 s timers on a queue without a worker stall time skipping."""
    await handle.signal(DecisionWorkflow.close_all)
    return await _until(handle, lambda s: not s.positions and not s.queue, env)


def _trading_script(cycle: int, req) -> list[TradeDecision]:
    """BUY BTC, BUY ETH, SELL BTC, BUY BTC again (a second position), then hold."""
    plan = {
        1: [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.25)],
        2: [TradeDecision(ticker="ETH/USDT", action=Action.BUY, position_pct=5.0)],  # clamped
        3: [TradeDecision(ticker="BTC/USDT", action=Action.SELL)],
        4: [
            TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.2),
            TradeDecision(ticker="DOGE/USDT", action=Action.BUY, position_pct=0.2),
            TradeDecision(ticker="SOL/USDT", action=Action.SELL),
        ],
    }
    return plan.get(cycle, [])


async def _scenario(
    env: WorkflowEnvironment, tmp: Path, max_cycles_per_run: int | None
) -> tuple[DecisionState, Rig, WorkflowHandle]:
    market = FakeMarket(
        {"BTC/USDT": PriceScript([(0, 100.0), (600, 104.0)]), "ETH/USDT": PriceScript([(0, 50.0)])}
    )
    rig = Rig(env, tmp, market, ScriptedPolicy(_trading_script))
    async with rig.worker():
        handle = await rig.start(max_cycles_per_run=max_cycles_per_run)
        for i in range(6):
            await handle.signal(DecisionWorkflow.wake, Wake(reason=f"w{i}", wake_id=f"w{i}"))
            await _until(
                handle, lambda s, n=i + 1: s.counters.wakes_handled == n and not s.queue, env
            )
            await env.sleep(timedelta(minutes=5))
        state = await _until(
            handle, lambda s: s.counters.positions_closed == 1 and len(s.positions) == 2, env
        )
        rig.flat = await _flatten(handle, env)
    return state, rig, handle


def _normalised(state: DecisionState) -> object:
    """The state without what differs by construction: clock readings, queue names, the epoch."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("_ms")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str):
            return value.replace(state.epoch, "E")
        return value

    data = state.model_dump(mode="json")
    data["counters"].pop("continued_as_new")
    data.pop("epoch")
    data.pop("config")  # differs by task queue and max_cycles_per_run, by construction
    return strip(data)


async def test_state_is_identical_after_continue_as_new(ts_env, tmp_path):
    plain, _, _ = await _scenario(ts_env, tmp_path / "a", max_cycles_per_run=None)
    chained, rig, handle = await _scenario(ts_env, tmp_path / "b", max_cycles_per_run=2)

    assert plain.counters.continued_as_new == 0
    assert chained.counters.continued_as_new >= 2
    assert (await handle.describe()).run_id != handle.first_execution_run_id
    # everything else is the same: portfolio, positions, trades, memory, gate, log, sequences
    a, b = _normalised(plain), _normalised(chained)
    assert a == b

    # and the behaviour behind that state is right
    assert chained.memory == "cycle 6"
    assert chained.gate.next_check_seconds == 600
    assert chained.entry_seq == {"BTC/USDT": 2, "ETH/USDT": 1}
    assert [t.exit_reason for t in chained.recent_trades] == ["decision_sell"]
    eth = chained.positions["ETH/USDT"]
    assert eth.qty * eth.avg_entry == pytest.approx(3_000, rel=0.01)  # 5.0 clamped to 30%
    log = {e.cycle: e for e in chained.decision_log}
    assert any("DOGE/USDT BUY: rejected, not in the universe" in a for a in log[4].actions)
    assert any("SOL/USDT SELL" in a for a in log[4].actions)
    # after closing everything, the broker and the workflow agree to the cent
    balances = rig.broker.balances()
    assert balances.holdings == {}
    assert balances.cash == pytest.approx(rig.flat.portfolio.cash, rel=1e-9)
    assert rig.flat.counters.positions_closed == 3


async def test_drawdown_halts_entries_until_resume(ts_env, tmp_path):
    market = FakeMarket(
        {"BTC/USDT": PriceScript([(0, 100.0), (1, 60.0)]), "ETH/USDT": PriceScript([(0, 50.0)])}
    )

    def script(cycle: int, req) -> list[TradeDecision]:
        if cycle == 1:
            return [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.3)]
        return [TradeDecision(ticker="ETH/USDT", action=Action.BUY, position_pct=0.3)]

    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(script))
    async with rig.worker():
        # a 30% position that loses 40% is a 12% portfolio drawdown, over the 5% halt
        handle = await rig.start(max_position_pct=0.3, drawdown_halt_pct=0.05)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
        await _until(handle, lambda s: s.counters.wakes_handled == 1 and not s.queue, ts_env)
        await ts_env.sleep(timedelta(seconds=60))  # a safety tick sees 60: stop loss
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w2"))
        state = await _until(
            handle, lambda s: s.counters.wakes_handled == 2 and not s.queue, ts_env
        )
        assert state.portfolio.halted
        assert any("entries halted" in a for a in state.decision_log[-1].actions)
        assert "ETH/USDT" not in state.positions
        await handle.signal(DecisionWorkflow.resume)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w3"))
        state = await _until(
            handle, lambda s: s.counters.wakes_handled == 3 and not s.queue, ts_env
        )
        assert not state.portfolio.halted
        assert "ETH/USDT" in state.positions
        state = await _flatten(handle, ts_env)
    assert rig.broker.balances().holdings == {}


async def test_an_entrys_exit_plan_reaches_its_position_and_sets_its_stop(ts_env, tmp_path):
    """Issue 15: the plan's stop at 97 (FakeMarket's price is 100) is the position's stop loss,
    and the plan is the position's, as the status and the Temporal UI show."""
    plan = ExitPlan(
        stop_price=97.0,
        target_price=110.0,
        invalidation=WakeCondition(metric="BTC/USDT:price", operator="lt", threshold=96.0),
    )

    def script(cycle: int, req) -> list[TradeDecision]:
        return [
            TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.2, exit_plan=plan)
        ]

    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy(script))
    async with rig.worker():
        handle = await rig.start(exit_plans=True)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="by hand"))
        state = await _until(handle, lambda s: "BTC/USDT" in s.positions, ts_env)
        pos = state.positions["BTC/USDT"]
        assert pos.exit_plan == plan
        position = ts_env.client.get_workflow_handle(pos.workflow_id)
        status = await position.query(PositionWorkflow.status)
        history = await position.fetch_history()
    assert status.exit_plan == plan
    started = history.events[0].workflow_execution_started_event_attributes
    (inp,) = await ts_env.client.data_converter.decode(started.input.payloads, [PositionInput])
    assert inp.params.stop_loss_pct == pytest.approx(
        stop_loss_pct_for(plan, pos.avg_entry, 0.001, 0.04)
    )
    assert inp.params.stop_loss_pct < 0.04  # tighter than the hard stop


async def test_a_short_opens_is_valued_and_closes_through_the_books(ts_env, tmp_path):
    """Issue 15: a SHORT sells to open a short position (its own PositionWorkflow, side
    short), the books value it at q·(2E - P), its stop above the entry fires on a rise with a
    BUY, and the cash ends at the start plus (entry - exit)·q less both fees."""
    script = PriceScript([(0, 100.0), (400, 95.0), (800, 104.5)])

    def decide(cycle: int, req) -> list[TradeDecision]:
        assert req.shorts  # the policy is told shorts are on
        return [TradeDecision(ticker="BTC/USDT", action=Action.SHORT, position_pct=0.2)]

    rig = Rig(ts_env, tmp_path, FakeMarket({"BTC/USDT": script}), ScriptedPolicy(decide))
    rig.broker.allow_shorts = True
    async with rig.worker():
        handle = await rig.start(shorts=True)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="by hand"))
        state = await _until(handle, lambda s: "BTC/USDT" in s.positions, ts_env)
        pos = state.positions["BTC/USDT"]
        assert pos.side is PositionSide.SHORT
        position = ts_env.client.get_workflow_handle(pos.workflow_id)
        assert (await position.query(PositionWorkflow.status)).side is PositionSide.SHORT
        # at 95 the short is worth its collateral plus (100 - 95)·q
        await ts_env.sleep(timedelta(seconds=450))
        await handle.signal(DecisionWorkflow.wake, Wake(reason="mark"))
        marked = await _until(handle, lambda s: s.last_prices.get("BTC/USDT") == 95.0, ts_env)
        assert marked.positions and marked.portfolio.equity == pytest.approx(
            marked.portfolio.cash + pos.qty * (2 * pos.avg_entry - 95.0)
        )
        assert marked.portfolio.equity > 10_000.0 - 5.0  # a gain, not a long's loss
        state = await _until(handle, lambda s: not s.positions, ts_env, timeout_s=120)
    (trade,) = state.recent_trades
    assert trade.side is PositionSide.SHORT and trade.exit_reason == "stop_loss"
    assert trade.exit_price == pytest.approx(104.5)
    fills = [f for f in rig.broker.fills() if f.position_id == trade.trade_id]
    assert [f.side for f in fills] == [Side.SELL, Side.BUY]
    expected = (trade.entry_price - trade.exit_price) * trade.qty - trade.fees
    assert trade.pnl == pytest.approx(expected)
    assert state.portfolio.cash == pytest.approx(10_000.0 + trade.pnl)
    assert rig.broker.balances().cash == pytest.approx(state.portfolio.cash)


async def test_a_short_is_refused_when_shorts_are_off(ts_env, tmp_path):
    def decide(cycle: int, req) -> list[TradeDecision]:
        return [TradeDecision(ticker="BTC/USDT", action=Action.SHORT, position_pct=0.2)]

    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy(decide))
    async with rig.worker():
        handle = await rig.start()
        await handle.signal(DecisionWorkflow.wake, Wake(reason="by hand"))
        state = await _until(handle, lambda s: any(e.done for e in s.decision_log), ts_env)
    assert not state.positions and rig.broker.fills() == []
    notes = [a for entry in state.decision_log for a in entry.actions]
    assert any("SHORT: rejected, shorts are off" in a for a in notes)


@pytest.mark.parametrize("fresh", [True, False], ids=["board", "stale-board"])
async def test_a_lean_wake_decides_on_the_decision_board_in_its_own_workflow_task(
    ts_env, tmp_path, fresh
):
    """Issue 14: a candle wake on a lean engine takes its view and context from the decision
    board (local activity), so the order leaves in the workflow task that took the signal:
    no market_view, no market_context. A board that cannot serve falls back to the listener
    and the entry is the same. (The first cycle also fits the regimes; the second is the
    steady state measured.)"""

    def script(cycle: int, req) -> list[TradeDecision]:
        if cycle < 2:
            return []
        return [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.25)]

    market = FakeMarket()
    market.board_fresh = fresh
    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(script))
    async with rig.worker():
        handle = await rig.start(lean_ticks=True)
        for n in (1, 2):
            now = int((await ts_env.get_current_time()).timestamp() * 1000)
            await handle.signal(
                DecisionWorkflow.wake, Wake(reason="candle_close", market_time_ms=now - 1)
            )
            state = await _until(
                handle, lambda s, n=n: s.counters.wakes_handled == n, ts_env, skip_time=False
            )
        state = await _until(handle, lambda s: "BTC/USDT" in s.positions, ts_env, skip_time=False)
        history = await handle.fetch_history()
    assert state.counters.orders == 1 and market.board_decision_calls == 2
    events = list(history.events)
    second = [
        i
        for i, e in enumerate(events)
        if e.HasField("workflow_execution_signaled_event_attributes")
    ][-1]
    after = events[second:]
    markers = [
        e.marker_recorded_event_attributes.workflow_task_completed_event_id
        for e in after
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in after
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    names = [a.activity_type.name for a in scheduled]
    order = scheduled[names.index("place_order")].workflow_task_completed_event_id
    if fresh:
        # the board's and the decide's markers, then the order: all from the signal's task
        assert names[0] == "place_order" and "market_view" not in names
        assert "market_context" not in names
        assert markers[:2] == [order, order]
    else:
        assert names[:2] == ["market_view", "market_context"]
        assert scheduled[0].workflow_task_completed_event_id == markers[0]  # board, then ask
        assert order > markers[0]
    assert [f.symbol for f in rig.broker.fills()] == ["BTC/USDT"]


@pytest.mark.parametrize("action", [Action.SHORT, Action.BUY], ids=["short", "long"])
async def test_a_paper_futures_account_books_funding_by_side(ts_env, tmp_path, action):
    """Issue 15: at each funding time a position open then receives (a short, rate > 0) or
    pays (a long) qty x price x rate; the paper broker books it once per position and time
    and the books follow it exactly; nothing is booked for a time before the entry."""
    rate = 0.0005

    def decide(cycle: int, req) -> list[TradeDecision]:
        if cycle == 1:
            return [TradeDecision(ticker="BTC/USDT", action=action, position_pct=0.2)]
        return []

    market = FakeMarket()
    market.funding_rate = rate
    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(decide))
    rig.broker.allow_shorts = True
    slow = PositionParams(safety_interval_s=3600, agent_interval_s=1e8)
    async with rig.worker():
        handle = await rig.start(shorts=True, paper_funding=True, position=slow)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="open"))
        state = await _until(handle, lambda s: "BTC/USDT" in s.positions, ts_env)
        pos = state.positions["BTC/USDT"]
        cash_after_entry = state.portfolio.cash
        for n in (1, 2):  # two funding times later, each with a wake after it
            await ts_env.sleep(timedelta(hours=8))
            await handle.signal(DecisionWorkflow.wake, Wake(reason=f"later {n}"))
            state = await _until(handle, lambda s, n=n: s.counters.wakes_handled == n + 1, ts_env)
    per_period = pos.qty * 100.0 * rate  # FakeMarket's price is 100
    sign = 1.0 if action is Action.SHORT else -1.0
    assert state.portfolio.funding == pytest.approx(2 * sign * per_period)
    assert state.portfolio.cash == pytest.approx(cash_after_entry + 2 * sign * per_period)
    assert rig.broker.balances().cash == pytest.approx(state.portfolio.cash)
    booked = rig.broker.income()
    assert len(booked) == 2 and len({e.income_id for e in booked}) == 2
    assert all(e.time_ms > pos.entry_time_ms and e.time_ms % (8 * 3_600_000) == 0 for e in booked)


async def test_a_new_run_records_every_patch_in_its_first_workflow_task(ts_env, tmp_path):
    """A patch asked for after a local activity can land a task later than the activity's
    marker when a task is cut (the chaos test's worker kill, 2026-12-03), and a replay then
    fails on it. A new run decides every patch in its first task (workflows/patches.py): all
    its patch markers come out of that task, before any local activity's marker, so a cycle
    that falls back to the listener records none and a replay cannot misplace one."""
    market = FakeMarket()
    market.board_fresh = False  # the board cannot serve: the cycle asks the listener
    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy())
    async with rig.worker():
        handle = await rig.start(lean_ticks=True)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="by hand"))
        await _until(handle, lambda s: s.counters.wakes_handled == 1 and not s.queue, ts_env)
        history = await handle.fetch_history()
    events = list(history.events)
    started = [e.event_id for e in events if e.HasField("workflow_task_started_event_attributes")]
    markers = [
        (e.event_id, e.marker_recorded_event_attributes)
        for e in events
        if e.HasField("marker_recorded_event_attributes")
    ]
    patches = [(i, m) for i, m in markers if m.marker_name == "core_patch"]
    local = [i for i, m in markers if m.marker_name == "core_local_activity"]
    assert len(patches) == 1 + len(LATER_PATCHES)  # the early marker and every later one
    assert len(started) > 1 and all(i < started[1] for i, _ in patches)  # the first task's
    assert local and max(i for i, _ in patches) < min(local)
    # and the history replays (the cycle's own calls recorded nothing more)
    replay = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None
