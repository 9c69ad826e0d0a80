"""Who owns an account (issue 10), on the time-skipping server.

The trading side creates the DecisionWorkflow once and never silently replaces a closed one;
the listener's dispatcher only delivers to a running account and holds its reasons meanwhile;
``reset`` starts over from the broker's books (cash and holdings adopted, never initial cash);
the day's LLM spend and the breaker survive a new run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from signals.wake_dispatcher import WakeDispatcher
from tests.servers.fake_anthropic import error_reply, tool_reply
from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig, _until
from tests.workflows.test_llm_workflow import HOLD, USAGE, LLMRig, wake_and_wait
from trading.agent_contract import DECISION_TOOL
from trading.circuit_breaker import BreakerParams
from trading.config import Settings
from trading.models import Action, OrderRequest, Side, TradeDecision, Wake
from trading.state import LLMSettings
from workers.account import ensure_account, reset_account
from workers.temporal_env import SetupError
from workflows.decision import DecisionWorkflow

BTC = SYMBOLS[0]


def settings_for(rig: Rig, tmp: Path, account: str) -> Settings:
    return Settings(
        _env_file=None,
        home=tmp,
        account=account,
        symbols=SYMBOLS,
        trading_task_queue=rig.queue,
        market_task_queue=rig.queue,
        llm_enabled=False,
    )


async def status_of(rig: Rig, wid: str) -> WorkflowExecutionStatus | None:
    return (await rig.env.client.get_workflow_handle(wid).describe()).status


async def test_the_trading_side_creates_the_account_once_and_never_replaces_it(ts_env, tmp_path):
    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy())
    settings = settings_for(rig, tmp_path, "own")
    rig.track(settings.decision_workflow_id)
    async with rig.worker():
        first = await ensure_account(ts_env.client, settings)
        again = await ensure_account(ts_env.client, settings)
        assert first.created and not again.created and again.running
        handle = ts_env.client.get_workflow_handle(settings.decision_workflow_id)
        # (a run terminated inside its first workflow task wedges the time-skipping server)
        await _until(handle, lambda s: s.restored, ts_env)
        await handle.terminate(reason="test: the account broke")
        with pytest.raises(SetupError, match="not replaced silently"):
            await ensure_account(ts_env.client, settings)
        assert await status_of(rig, settings.decision_workflow_id) == (
            WorkflowExecutionStatus.TERMINATED
        )


async def test_the_listener_holds_wakes_until_the_account_runs(ts_env, tmp_path):
    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy())
    settings = settings_for(rig, tmp_path, "held")
    rig.track(settings.decision_workflow_id)
    dispatcher = WakeDispatcher(ts_env.client, settings.decision_workflow_id)
    task = asyncio.create_task(dispatcher.run())
    try:
        async with rig.worker():
            dispatcher.push("candle_close:BTC/USDT:4h", BTC, 1_000)
            for _ in range(50):
                if dispatcher.account_missing:
                    break
                await asyncio.sleep(0.1)
            assert dispatcher.account_missing and dispatcher.held == 1 and dispatcher.sent == 0
            with pytest.raises(RPCError):  # the listener created nothing
                await ts_env.client.get_workflow_handle(settings.decision_workflow_id).describe()
            dispatcher.push("candle_close:ETH/USDT:4h", SYMBOLS[1], 1_000)
            await ensure_account(ts_env.client, settings)
            for _ in range(100):
                if dispatcher.sent:
                    break
                await asyncio.sleep(0.1)
            assert dispatcher.sent == 1 and not dispatcher.account_missing
            handle = ts_env.client.get_workflow_handle(settings.decision_workflow_id)
            state = await _until(handle, lambda s: s.counters.wakes_handled == 1, ts_env)
            assert state.decision_log[-1].wake_reasons == [
                "candle_close:BTC/USDT:4h",
                "candle_close:ETH/USDT:4h",
            ]
    finally:
        task.cancel()


async def test_reset_starts_from_the_broker_books_and_adopts_holdings(ts_env, tmp_path):
    market = FakeMarket({BTC: PriceScript([(0, 100.0)])})
    policy = ScriptedPolicy(
        lambda c, r: (
            [TradeDecision(ticker=BTC, action=Action.BUY, position_pct=0.25)] if c == 1 else []
        )
    )
    rig = Rig(ts_env, tmp_path, market, policy)
    settings = settings_for(rig, tmp_path, "reset")
    rig.track(settings.decision_workflow_id)
    async with rig.worker():
        await ensure_account(ts_env.client, settings)
        handle = ts_env.client.get_workflow_handle(settings.decision_workflow_id)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
        old = await _until(handle, lambda s: BTC in s.positions, ts_env)
        old_watcher = old.positions[BTC].workflow_id
        await handle.terminate(reason="test: the account broke")
        held = rig.broker.balances()
        seed, stopped = await reset_account(ts_env.client, settings, rig.broker, "test")
        assert stopped == [old_watcher] or old_watcher in stopped
        assert seed.cash == pytest.approx(held.cash)
        assert [h.symbol for h in seed.holdings] == [BTC]
        new = await _until(handle, lambda s: BTC in s.positions, ts_env)
        pos = new.positions[BTC]
        assert new.portfolio.cash == pytest.approx(held.cash)  # not initial_cash
        assert pos.qty == pytest.approx(held.holdings[BTC])
        assert pos.avg_entry == pytest.approx(100.0)
        assert pos.workflow_id != old_watcher
        assert await status_of(rig, pos.workflow_id) == WorkflowExecutionStatus.RUNNING
        assert await status_of(rig, old_watcher) == WorkflowExecutionStatus.TERMINATED
        await handle.signal(DecisionWorkflow.close_all)
        flat = await _until(handle, lambda s: not s.positions and not s.queue, ts_env)
    assert rig.broker.balances().holdings == {}
    assert flat.portfolio.cash == pytest.approx(rig.broker.balances().cash, rel=1e-9)


async def test_the_day_spend_and_the_breaker_survive_a_new_run(ts_env, tmp_path, anthropic_server):
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    anthropic_server.push(tool_reply(DECISION_TOOL, HOLD, USAGE))
    anthropic_server.push(*[error_reply(529, "overloaded_error")] * 3)
    llm = LLMSettings(enabled=True, breaker=BreakerParams(failure_threshold=1, open_ms=900_000))
    async with rig.worker():
        handle = await rig.start(llm)
        await wake_and_wait(handle, ts_env, 1)
        old = await wake_and_wait(handle, ts_env, 2)
        assert old.llm_spend.day_usd > 0 and old.breaker.phase == "open"
        await ts_env.sleep(timedelta(seconds=1))  # the breaker's save is bookkeeping after
        await handle.terminate(reason="test: the run is gone")
        new_handle = await rig.start(llm)  # a new run of the same account
        new = await _until(new_handle, lambda s: s.restored, ts_env)
        assert new.llm_spend.day == old.llm_spend.day
        assert new.llm_spend.day_usd == pytest.approx(old.llm_spend.day_usd)
        assert (
            new.breaker.phase == "open" and new.breaker.open_until_ms == old.breaker.open_until_ms
        )
        calls = len(anthropic_server.requests)
        new = await wake_and_wait(new_handle, ts_env, 1)
        assert new.decided_by.startswith("rule: LLM circuit breaker open")
        assert len(anthropic_server.requests) == calls  # the open breaker holds in the new run


async def test_a_new_account_beside_a_broker_with_history_starts_from_its_books(ts_env, tmp_path):
    """A Temporal DB started afresh next to an old paper broker: the account is created from
    the broker's cash and holdings, never from initial cash."""
    rig = Rig(ts_env, tmp_path, FakeMarket({BTC: PriceScript([(0, 100.0)])}), ScriptedPolicy())
    settings = settings_for(rig, tmp_path, "fresh")
    rig.track(settings.decision_workflow_id)
    rig.broker.place_order(
        OrderRequest(
            client_order_id="old-run-BTC-1-1",
            position_id="old-run-BTC-1",
            seq=1,
            symbol=BTC,
            side=Side.BUY,
            qty=5.0,
            ref_price=100.0,
            market_time_ms=0,
        )
    )
    held = rig.broker.balances()
    async with rig.worker():
        state = await ensure_account(ts_env.client, settings, rig.broker)
        assert state.created
        handle = ts_env.client.get_workflow_handle(settings.decision_workflow_id)
        new = await _until(handle, lambda s: BTC in s.positions, ts_env)
        assert new.portfolio.cash == pytest.approx(held.cash)
        assert new.positions[BTC].qty == pytest.approx(5.0)
        await handle.signal(DecisionWorkflow.close_all)
        await _until(handle, lambda s: not s.positions and not s.queue, ts_env)
    assert rig.broker.balances().holdings == {}
