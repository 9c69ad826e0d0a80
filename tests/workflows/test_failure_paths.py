"""The spine never breaks (issue 10): every failure path of the account, on the time-skipping
server, each asserting that the workflows stay Running and the books stay in step.

A final order error, a signal to a position that has closed or is gone, a rejected exit, a
journal outage, the listener away, a hanging agent layer, stale wakes, Temporal's signal cap,
an out-of-range configuration: each is contained, recorded as an incident and shown by the
``status`` query, and trading goes on.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError

from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.faults import FaultyTrading
from tests.workflows.test_decision_workflow import SYMBOLS, Rig, _config, _flatten, _until
from trading.models import (
    Action,
    ClosedTrade,
    OrderRequest,
    PositionParams,
    Side,
    TradeDecision,
    Wake,
)
from trading.orders import client_order_id
from trading.state import DecisionInput, DecisionState, EngineConfig, PositionInput, PositionState
from workflows.decision import DecisionWorkflow, SpeedRequest
from workflows.position import PositionWorkflow

BTC, ETH = SYMBOLS


def buy(*symbols: str, pct: float = 0.2) -> list[TradeDecision]:
    return [TradeDecision(ticker=s, action=Action.BUY, position_pct=pct) for s in symbols]


def sell(*symbols: str) -> list[TradeDecision]:
    return [TradeDecision(ticker=s, action=Action.SELL) for s in symbols]


async def accepted_updates(handle: WorkflowHandle) -> int:
    history = await handle.fetch_history()
    return sum(
        1
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    )


async def running(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).status == WorkflowExecutionStatus.RUNNING


async def wake(handle: WorkflowHandle, env, n: int, **fields) -> DecisionState:
    await handle.signal(DecisionWorkflow.wake, Wake(reason=f"w{n}", wake_id=f"w{n}", **fields))
    return await _until(handle, lambda s: s.counters.wakes_handled >= n and not s.queue, env)


def rig_position_input(rig: Rig, state: DecisionState, owner: str) -> PositionInput:
    """A position of 10 BTC at 100 as the rig's broker holds it, owned by ``owner``."""
    pid = f"t-{rig.queue[-6:]}-BTC-9"
    order = OrderRequest(
        client_order_id=client_order_id(pid, 1),
        position_id=pid,
        seq=1,
        symbol=BTC,
        side=Side.BUY,
        qty=10.0,
        ref_price=100.0,
        market_time_ms=0,
    )
    fill = rig.broker.place_order(order)
    cost = fill.qty * fill.price + fill.fee
    return PositionInput(
        state=PositionState(
            position_id=pid,
            account="t",
            symbol=BTC,
            qty=fill.qty,
            avg_entry=fill.price,
            entry_time_ms=0,
            entry_fees=fill.fee,
            cost=cost,
            peak_price=fill.price,
            trough_price=fill.price,
            last_price=fill.price,
            last_price_ms=0,
            fills=[fill],
        ),
        params=state.config.position_params(),
        decision_workflow_id=owner,
        trading_task_queue=rig.queue,
        market_task_queue=rig.queue,
    )


async def position_handle(rig: Rig, state: DecisionState, symbol: str) -> WorkflowHandle:
    return rig.env.client.get_workflow_handle(state.positions[symbol].workflow_id)


# ---------------------------------------------------------------- orders


async def test_a_final_order_error_skips_that_entry_and_the_account_goes_on(ts_env, tmp_path):
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)]), ETH: PriceScript([(0, 50.0)])}),
        ScriptedPolicy(lambda cycle, req: buy(ETH, BTC) if cycle == 1 else []),
        trading_cls=FaultyTrading,
    )
    rig.trading.fail_buys = {ETH}
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        assert await running(handle)
        actions = state.decision_log[-1].actions
        assert any(a.startswith("ETH/USDT BUY: failed, InvalidOrder") for a in actions)
        assert any(a.startswith("BTC/USDT BUY 2") for a in actions)  # the rest still applies
        assert set(state.positions) == {BTC}
        assert state.counters.incidents == 1
        assert "InvalidOrder" in state.incidents[0].error
        status = await handle.query(DecisionWorkflow.status)
        assert status.incidents[0].where.startswith("order ")
        state = await wake(handle, ts_env, 2)  # and the next cycle runs as usual
        assert state.counters.cycles == 2
        await _flatten(handle, ts_env)
    rows = rig.trading.journal.incidents("t")
    assert [r["source"] for r in rows] == [state.incidents[0].where]


async def test_a_rejected_exit_is_reported_and_retried_and_fills_stay_small(ts_env, tmp_path):
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else sell(BTC) if c in (2, 3, 4) else []),
        trading_cls=FaultyTrading,
    )
    rig.trading.fail_sells = 1  # the first SELL: a final (non-retryable) order error
    rig.trading.reject_sells = 1  # the second: a REJECTED fill
    async with rig.worker():
        handle = await rig.start()
        await wake(handle, ts_env, 1)
        state = await wake(handle, ts_env, 2)  # SELL: the broker rejects it
        state = await _until(handle, lambda s: s.counters.exits_failed == 1, ts_env)
        pos = state.positions[BTC]
        assert not pos.exit_requested  # one truth: the position is open again, here too
        assert await running(handle)
        ph = await position_handle(rig, state, BTC)
        pstate = await ph.query(PositionWorkflow.status)
        assert pstate.status == "OPEN" and pstate.exit_requested is None
        assert pstate.rejected_orders == 1 and pstate.exit_failures == 1
        assert "InvalidOrder" in (pstate.last_order_error or "")
        assert len(pstate.fills) == 1  # the entry only: a failed exit is counted, not kept
        state = await wake(handle, ts_env, 3)  # a later SELL is not skipped as "requested"
        assert any("exit requested on" in a for a in state.decision_log[-1].actions)
        state = await _until(handle, lambda s: s.counters.exits_failed == 2, ts_env)
        assert (await ph.describe()).status == WorkflowExecutionStatus.RUNNING
        pstate = await ph.query(PositionWorkflow.status)
        assert "insufficient balance" in (pstate.last_order_error or "")
        assert pstate.rejected_orders == 2 and len(pstate.fills) == 1
        state = await wake(handle, ts_env, 4)  # the third SELL fills
        state = await _until(handle, lambda s: not s.positions, ts_env)
    assert state.recent_trades[-1].exit_reason == "decision_sell"
    assert rig.broker.balances().holdings == {}
    assert state.portfolio.cash == pytest.approx(rig.broker.balances().cash, rel=1e-9)


async def test_a_partly_filled_exit_sells_the_rest_and_books_one_trade(ts_env, tmp_path):
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else sell(BTC) if c == 2 else []),
        trading_cls=FaultyTrading,
    )
    rig.trading.partial_sells = 1
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        qty = state.positions[BTC].qty
        await wake(handle, ts_env, 2)
        state = await _until(handle, lambda s: not s.positions, ts_env)
    trade = state.recent_trades[-1]
    assert trade.qty == pytest.approx(qty) and trade.exit_reason == "decision_sell"
    sells = [f for f in rig.broker.fills(trade.trade_id) if f.side == Side.SELL]
    assert len(sells) == 2 and sum(f.qty for f in sells) == pytest.approx(qty)
    assert rig.broker.balances().holdings == {}
    assert state.portfolio.cash == pytest.approx(rig.broker.balances().cash, rel=1e-9)


# ---------------------------------------------------------------- signals to positions


async def test_close_all_after_a_manual_exit_keeps_the_account(ts_env, tmp_path):
    """The outside trial's reset: a position closed by hand, then close-all signals it."""
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)]), ETH: PriceScript([(0, 50.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC, ETH) if c == 1 else []),
    )
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        btc = await position_handle(rig, state, BTC)
        await btc.signal(PositionWorkflow.exit, "manual")
        await handle.signal(DecisionWorkflow.close_all)
        state = await _until(handle, lambda s: not s.positions and not s.queue, ts_env)
        assert await running(handle)
        assert sorted(t.exit_reason for t in state.recent_trades) == ["close_all", "manual"]
        assert state.counters.positions_closed == 2
    assert rig.broker.balances().holdings == {}


async def test_a_signal_to_a_completed_position_is_settled_from_its_result(ts_env, tmp_path):
    """The DecisionWorkflow's books hold a position whose workflow completed and whose
    ``position_closed`` never arrived: close-all's signal fails, the lookup books the trade."""
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else []),
    )
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        pos = state.positions[BTC]
        # a copy of the account, started from its state, that never hears of the close
        copy_id = f"copy-{rig.queue}"
        copy = await ts_env.client.start_workflow(
            DecisionWorkflow.run,
            DecisionInput(config=state.config, state=state.model_copy(update={"queue": []})),
            id=copy_id,
            task_queue=rig.queue,
        )
        rig.track(copy_id)
        ph = ts_env.client.get_workflow_handle(pos.workflow_id, result_type=ClosedTrade)
        await ph.signal(PositionWorkflow.exit, "manual")
        trade = await ph.result()
        await _until(handle, lambda s: not s.positions, ts_env)  # the real owner booked it
        await copy.signal(DecisionWorkflow.close_all)
        copied = await _until(copy, lambda s: not s.positions and not s.queue, ts_env)
        assert await running(copy)
        assert copied.recent_trades[-1] == trade
        assert copied.counters.incidents >= 1
        assert any(i.where.startswith("signal exit") for i in copied.incidents)
        log = [a for e in copied.decision_log for a in e.actions]
        assert any(f"{pos.position_id} had closed (manual)" in a for a in log)
        await copy.terminate()


async def test_an_llm_mode_broadcast_to_a_closed_position_keeps_the_account(ts_env, tmp_path):
    """The outside trial's first reset: a breaker or budget change tells every open position
    ``llm_mode``; one had just closed, the signal failed and the account FAILED."""
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else []),
    )
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        pos = state.positions[BTC]
        ph = ts_env.client.get_workflow_handle(pos.workflow_id, result_type=ClosedTrade)
        await ph.signal(PositionWorkflow.exit, "manual")
        trade = await ph.result()
        # a copy whose books still hold the position and whose positions were told "LLM on":
        # its next cycle broadcasts llm_mode(off) to them
        seeded = state.model_copy(update={"queue": [], "llm_positions_on": True})
        copy = await ts_env.client.start_workflow(
            DecisionWorkflow.run,
            DecisionInput(config=state.config, state=seeded),
            id=f"llm-copy-{rig.queue}",
            task_queue=rig.queue,
        )
        rig.track(copy.id)
        await copy.signal(DecisionWorkflow.wake, Wake(reason="w2"))
        copied = await _until(copy, lambda s: not s.positions and not s.queue, ts_env)
        assert await running(copy)
        assert any(i.where.startswith("signal llm_mode") for i in copied.incidents)
        assert copied.recent_trades[-1] == trade
        assert copied.portfolio.cash == pytest.approx(rig.broker.balances().cash, rel=1e-9)


async def test_a_terminated_watcher_is_replaced_and_the_exit_still_happens(ts_env, tmp_path):
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else []),
    )
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        first = state.positions[BTC]
        await (await position_handle(rig, state, BTC)).terminate(reason="test: watcher lost")
        await handle.signal(DecisionWorkflow.close_all)
        state = await _until(handle, lambda s: not s.positions and not s.queue, ts_env)
        assert await running(handle)
        assert state.counters.watchers_replaced == 1
        assert any("a new watcher" in i.error for i in state.incidents)
        trade = state.recent_trades[-1]
        assert trade.trade_id == first.position_id and trade.exit_reason == "close_all"
    fills = rig.broker.fills(first.position_id)
    assert [f.side for f in fills] == ["BUY", "SELL"]  # one exit, no second order
    assert rig.broker.balances().holdings == {}


async def test_a_position_whose_owner_is_gone_still_exits_and_completes(ts_env, tmp_path):
    """``position_closed`` to a DecisionWorkflow that is not there: incidents, not a failed
    run; the trade is the workflow's result, where the owner's lookup finds it."""
    script = PriceScript([(0, 100.0), (100, 90.0)])
    rig = Rig(ts_env, tmp_path, FakeMarket({BTC: script}), ScriptedPolicy())
    async with rig.worker():
        handle = await rig.start()
        state = await handle.query(DecisionWorkflow.state)
        inp = rig_position_input(rig, state, owner="no-such-account")
        ph = await ts_env.client.start_workflow(
            PositionWorkflow.run,
            inp,
            id=f"orphan-{rig.queue}",
            task_queue=rig.queue,
            result_type=ClosedTrade,
        )
        rig.track(ph.id)
        trade = await ph.result()
        assert trade.exit_reason == "stop_loss"
        pstate = await ph.query(PositionWorkflow.status)
        assert (await ph.describe()).status == WorkflowExecutionStatus.COMPLETED
        assert sum(i.where.startswith("signal position_closed") for i in pstate.incidents) == 5


async def test_a_stale_price_is_checked_but_never_silently(ts_env, tmp_path):
    market = FakeMarket({BTC: PriceScript([(0, 100.0)])})
    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else []))
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        market.age_s = 400.0  # the stream has not moved the price for minutes
        await ts_env.sleep(timedelta(seconds=95))
        ph = await position_handle(rig, state, BTC)
        pstate = await ph.query(PositionWorkflow.status)
        assert pstate.price_stale and pstate.stale_checks >= 2
        stale = [i for i in pstate.incidents if "stale price" in i.error]
        assert len(stale) == 1  # said once per stale spell, not every tick
        market.age_s = 0.5
        await ts_env.sleep(timedelta(seconds=35))
        pstate = await ph.query(PositionWorkflow.status)
        assert not pstate.price_stale


# ---------------------------------------------------------------- bookkeeping


async def test_a_journal_outage_never_blocks_an_exit_or_a_decision(ts_env, tmp_path):
    rig = Rig(
        ts_env,
        tmp_path,
        FakeMarket({BTC: PriceScript([(0, 100.0), (600, 90.0)])}),  # the stop fires at 600 s
        ScriptedPolicy(lambda c, r: buy(BTC) if c == 1 else []),
        trading_cls=FaultyTrading,
    )
    async with rig.worker():
        handle = await rig.start()
        await wake(handle, ts_env, 1)
        rig.trading.journal_down = True
        await ts_env.sleep(timedelta(minutes=11))
        state = await _until(handle, lambda s: not s.positions, ts_env)
        assert state.recent_trades[-1].exit_reason == "stop_loss"
        state = await wake(handle, ts_env, 2)
        assert state.decision_log[-1].done
        assert any(i.where == "journal decision" for i in state.incidents)
        assert await running(handle)
    assert rig.trading.journal.trades("t") == []  # the journal missed it; the books did not
    assert state.portfolio.cash == pytest.approx(rig.broker.balances().cash, rel=1e-9)


# ---------------------------------------------------------------- wakes


async def test_stale_wakes_are_recognised_and_never_re_enter(ts_env, tmp_path):
    market = FakeMarket({BTC: PriceScript([(0, 100.0), (200, 90.0)])})
    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(lambda c, r: buy(BTC)))
    async with rig.worker():
        handle = await rig.start()
        state = await wake(handle, ts_env, 1)
        entry_ms = state.positions[BTC].entry_time_ms
        await ts_env.sleep(timedelta(minutes=5))  # the stop fires at 200 s
        state = await _until(handle, lambda s: not s.positions, ts_env)
        exit_ms = state.recent_trades[-1].exit_time_ms
        # a wake from before the exit: its BUY would re-enter on a signal the exit overtook
        state = await wake(handle, ts_env, 2, market_time_ms=entry_ms + 1_000)
        actions = state.decision_log[-1].actions
        assert any("predates the last exit of BTC/USDT" in a for a in actions)
        assert not state.positions
        # a wake ten hours behind the market: stale, no entries on it
        state = await wake(handle, ts_env, 3, market_time_ms=exit_ms - 10 * 3_600_000)
        actions = state.decision_log[-1].actions
        assert any(a.startswith("stale wake") for a in actions)
        assert any("skipped, the wake is stale" in a for a in actions)
        assert state.counters.stale_wakes == 1 and not state.positions
        # a fresh wake enters again
        state = await wake(handle, ts_env, 4, market_time_ms=exit_ms + 60_000)
        assert BTC in state.positions
        await _flatten(handle, ts_env)


async def test_continue_as_new_before_temporal_signal_cap(ts_env, tmp_path):
    """Temporal takes at most 10,000 signals per run (a wake every 10 s is 8,640 a day): the
    account continues-as-new after ``max_signals_per_run``, whatever its event count."""
    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy())
    async with rig.worker():
        handle = await rig.start(max_signals_per_run=10)
        sent = 0
        for _batch in range(5):
            for _ in range(7):
                await handle.signal(
                    DecisionWorkflow.wake, Wake(reason=f"s{sent}", wake_id=f"s{sent}")
                )
                sent += 1
            await _until(
                handle, lambda s, n=sent: s.counters.wakes_handled == n and not s.queue, ts_env
            )
        state = await handle.query(DecisionWorkflow.state)
        assert state.counters.wakes_received == sent == 35
        assert state.counters.continued_as_new >= 2
        assert await running(handle)


# ---------------------------------------------------------------- limits


async def test_configure_is_a_validated_update(ts_env, tmp_path):
    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy())
    async with rig.worker():
        handle = await rig.start()
        bad = _config(rig.queue).model_dump()
        bad["max_position_pct"] = 5
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("configure", bad)
        other = _config(rig.queue).model_copy(update={"account": "someone-else"})
        with pytest.raises(WorkflowUpdateFailedError, match="update failed"):
            await handle.execute_update(DecisionWorkflow.configure, other)
        assert await accepted_updates(handle) == 0  # refused before they entered history
        good = _config(rig.queue, max_position_pct=0.25)
        answer = await handle.execute_update(DecisionWorkflow.configure, good)
        assert answer.startswith("configured t")
        state = await handle.query(DecisionWorkflow.state)
        assert state.config.max_position_pct == 0.25
        # the control updates answer; the signals of the same names still work
        assert "halted" in await handle.execute_update(DecisionWorkflow.halt_update, None)
        assert "allowed again" in await handle.execute_update(DecisionWorkflow.resume_update, None)
        await handle.signal("halt", {"reason": "by hand"})
        state = await _until(handle, lambda s: s.portfolio.manual_halt, ts_env)
        assert state.portfolio.halt_reason == "manual: by hand"
        assert "none open" in await handle.execute_update(DecisionWorkflow.close_all_update, None)
        assert await running(handle)


async def test_speed_is_refused_for_a_real_money_account(ts_env, tmp_path):
    rig = Rig(ts_env, tmp_path, FakeMarket(), ScriptedPolicy())
    async with rig.worker():
        live = await rig.env.client.start_workflow(
            DecisionWorkflow.run,
            DecisionInput(config=_config(rig.queue, mode="live")),
            id=f"live-{rig.queue}",
            task_queue=rig.queue,
        )
        rig.track(live.id)
        with pytest.raises(WorkflowUpdateFailedError):
            await live.execute_update(DecisionWorkflow.set_speed, SpeedRequest(speed=600))
        paper = await rig.start()
        assert await paper.execute_update(DecisionWorkflow.set_speed, SpeedRequest(speed=600))
        state = await paper.query(DecisionWorkflow.state)
        assert state.config.speed == 600
        assert state.config.position_params().safety_interval_s == 1.0  # 30 s / 600, at 1 s
        await live.terminate()


def test_every_limit_is_bounded():
    base = _config("q").model_dump()
    for field, value in [
        ("max_position_pct", 5.0),
        ("max_exposure", 0.0),
        ("drawdown_halt_pct", 1.5),
        ("default_position_pct", 0.5),  # above max_position_pct
        ("max_signals_per_run", 20_000),
        ("speed", -1.0),
    ]:
        with pytest.raises(ValueError):
            EngineConfig.model_validate({**base, field: value})
    for field, value in [("stop_loss_pct", 0.9), ("trail_pct", 1.0), ("exit_score", 0.5)]:
        with pytest.raises(ValueError):
            PositionParams.model_validate({field: value})
