"""GateSync reads the agent's gate settings from a running DecisionWorkflow by query only."""

from __future__ import annotations

import asyncio
import uuid

from temporalio import activity

from signals.gate import Gate, GateParams
from signals.gate_sync import GateSync
from tests.workflows.fakes import FakeMarket, ScriptedPolicy
from tests.workflows.test_decision_workflow import Rig, _until
from trading.models import AgentDecision, Bar, Wake, WakeCondition
from trading.state import DecideRequest
from workflows import activity_api as api
from workflows.decision import DecisionWorkflow


class ConditionPolicy(ScriptedPolicy):
    """Every decision asks for a 15-minute timer and one price condition per cycle."""

    @activity.defn(name=api.DECIDE)
    async def decide(self, req: DecideRequest) -> AgentDecision:
        self.requests.append(req)
        cycle = int(req.decision_id.rsplit("-", 1)[1])
        return AgentDecision(
            source="test",
            next_check_seconds=900,
            wake_conditions=[
                WakeCondition(
                    metric="BTC/USDT:price",
                    operator="gt",
                    threshold=100.0 + cycle,
                    reason=f"breakout {cycle}",
                )
            ],
        )


def _tick(price: float, t_ms: int) -> Bar:
    return Bar(
        symbol="BTC/USDT",
        interval="1h",
        open_time=t_ms - t_ms % 3_600_000,
        close_time=t_ms - t_ms % 3_600_000 + 3_599_999,
        open=price,
        high=price,
        low=price,
        close=price,
        volume=1.0,
        closed=False,
    )


async def _wait(predicate, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_settings_follow_each_wake_and_are_read_without_signals(ts_env, tmp_path):
    rig = Rig(ts_env, tmp_path, FakeMarket(), ConditionPolicy())
    gate = Gate("4h", params=GateParams(cooldown_s=0), symbols=["BTC/USDT", "ETH/USDT"])
    async with rig.worker():
        handle = await rig.start()
        sync = GateSync(
            ts_env.client, handle.id, gate, poll_s=3600, follow_delays_s=(0.05, 0.1, 0.2, 0.5)
        )
        runner = asyncio.create_task(sync.run())
        try:
            await _wait(lambda: sync.stats.version == 0)  # the initial read
            assert gate.settings_version == 0
            await handle.signal(DecisionWorkflow.wake, Wake(reason="first", wake_id="w1"))
            await _until(handle, lambda s: s.counters.wakes_handled == 1, ts_env)
            sync.poke()  # what the dispatcher's on_sent does
            await _wait(lambda: gate.settings_version == 1)
            state = await handle.query(DecisionWorkflow.state)
            t = state.gate.set_at_ms
            assert t is not None
            # the condition of cycle 1 is armed in the gate: price > 101
            assert gate.evaluate(_tick(100.5, t + 1000), False, t + 1000) == []
            assert gate.evaluate(_tick(101.5, t + 2000), False, t + 2000) == [
                "condition:BTC/USDT:price gt 101 (breakout 1)"
            ]
            # and the timer: 900 s of market time after that wake
            assert gate.evaluate(_tick(101.0, t), False, t + 2000 + 899_000) == []
            assert gate.evaluate(_tick(101.0, t), False, t + 2000 + 900_000) == ["timer:900s"]

            await handle.signal(DecisionWorkflow.wake, Wake(reason="second", wake_id="w2"))
            await _until(handle, lambda s: s.counters.wakes_handled == 2, ts_env)
            sync.poke()
            await _wait(lambda: gate.settings_version == 2)
            assert gate.counters.conditions_active == 1  # the new list replaced the old one
            applied = sync.stats.applied
            assert not await sync.refresh()  # same version: nothing re-applied
            assert sync.stats.applied == applied
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        state = await handle.query(DecisionWorkflow.state)
    # the sync only queried: the workflow saw exactly the two wakes the test sent
    assert state.counters.wakes_received == 2
    assert sync.stats.failures == 0


async def test_unreachable_workflow_keeps_the_last_settings(ts_env):
    gate = Gate("4h")
    sync = GateSync(ts_env.client, f"no-such-workflow-{uuid.uuid4()}", gate, poll_s=3600)
    assert not await sync.refresh()
    assert sync.stats.failures == 1 and sync.stats.last_error
    assert gate.settings_version is None
