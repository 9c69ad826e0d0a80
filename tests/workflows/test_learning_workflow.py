"""Risk and learning in the DecisionWorkflow on the time-skipping server.

A losing streak halts entries while exits go on; the learner's posteriors equal a plain fold of
``learner.update`` over the closed trades, after continue-as-new and after a worker restart;
the macro scale shrinks entries.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import Rig, _flatten, _until
from trading import learner
from trading.models import Action, TradeDecision, Wake
from workflows.decision import DecisionWorkflow


async def _cycle(handle, env, n: int) -> None:
    await handle.signal(DecisionWorkflow.wake, Wake(reason=f"w{n}", wake_id=f"w{n}"))
    await _until(handle, lambda s: s.counters.wakes_handled == n and not s.queue, env)


async def test_losing_streak_halts_entries_while_exits_continue(ts_env, tmp_path):
    # BTC falls 40% one minute in: its stop loss fills at 60 and costs 12% of the portfolio
    market = FakeMarket(
        {"BTC/USDT": PriceScript([(0, 100.0), (60, 60.0)]), "ETH/USDT": PriceScript([(0, 50.0)])}
    )

    def script(cycle: int, req) -> list[TradeDecision]:
        if cycle == 1:
            return [
                TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.3),
                TradeDecision(ticker="ETH/USDT", action=Action.BUY, position_pct=0.3),
            ]
        return [
            TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.2),
            TradeDecision(ticker="ETH/USDT", action=Action.SELL),
        ]

    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(script))
    async with rig.worker():
        handle = await rig.start(max_position_pct=0.3, drawdown_halt_pct=0.10)
        await _cycle(handle, ts_env, 1)
        await ts_env.sleep(timedelta(minutes=2))  # a safety tick sees 60
        state = await _until(handle, lambda s: s.counters.positions_closed == 1, ts_env)
        assert state.recent_trades[-1].exit_reason in ("stop_loss", "max_drawdown_guard")
        assert state.portfolio.halted and "ETH/USDT" in state.positions
        await _cycle(handle, ts_env, 2)
        state = await _until(handle, lambda s: s.counters.positions_closed == 2, ts_env)
        actions = state.decision_log[-1].actions
        assert any("BTC/USDT BUY: skipped, entries halted" in a for a in actions)
        assert any("ETH/USDT SELL: exit requested" in a for a in actions)
        assert "BTC/USDT" not in state.positions and not state.positions
        assert [t.exit_reason for t in state.recent_trades] == [
            state.recent_trades[0].exit_reason,
            "decision_sell",
        ]
        await _flatten(handle, ts_env)
    # the rejection reason reached the journal
    rows = rig.trading.journal.rows("decisions", "t")
    assert any("entries halted" in row["executed"] for row in rows)
    assert rig.broker.balances().holdings == {}


def _round_trips(cycle: int, req) -> list[TradeDecision]:
    """Odd cycles buy BTC with signal weights, even cycles sell it."""
    weights = [
        {"trend": 0.8, "volume": 0.3},
        {"reversion": -0.6, "derivatives": 0.2},
        {"trend": 0.4, "sentiment": -0.5, "macro": 0.04},
    ][(cycle // 2) % 3]
    if cycle % 2:
        return [
            TradeDecision(
                ticker="BTC/USDT", action=Action.BUY, position_pct=0.2, signal_weights=weights
            )
        ]
    return [TradeDecision(ticker="BTC/USDT", action=Action.SELL)]


async def test_learner_posteriors_survive_continue_as_new_and_a_worker_restart(ts_env, tmp_path):
    # prices alternate so trades win and lose
    steps = [(i * 300.0, 100.0 + (7 if (i // 2) % 2 else -5) * (i % 2)) for i in range(40)]
    market = FakeMarket({"BTC/USDT": PriceScript(steps), "ETH/USDT": PriceScript([(0, 50.0)])})
    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(_round_trips))
    rig.regimes.crypto = "high"
    # no workflow cache: every workflow task is replayed from history, as after a restart
    async with rig.worker(keep=True, max_cached_workflows=0):
        handle = await rig.start(max_cycles_per_run=3)
        for n in range(1, 7):
            await _cycle(handle, ts_env, n)
            await ts_env.sleep(timedelta(minutes=5))
        before = await handle.query(DecisionWorkflow.learner)
    assert before.n_trades == 3
    async with rig.worker(max_cached_workflows=0):  # a new worker picks the workflow up
        after = await handle.query(DecisionWorkflow.learner)
        assert after == before
        for n in range(7, 11):
            await _cycle(handle, ts_env, n)
            await ts_env.sleep(timedelta(minutes=5))
        state = await _until(
            handle, lambda s: s.learner.n_trades == 5 and not s.queue and not s.positions, ts_env
        )
        table = await handle.query(DecisionWorkflow.learner)
    assert state.counters.continued_as_new >= 2
    expected = learner.new_state()
    for trade in state.recent_trades:
        expected = learner.update(expected, trade, "high", state.config.learner)
    assert state.learner == expected
    assert table == learner.posterior_table(expected)
    assert set(table.sets) == {"global", "high"}
    assert table.sets["high"].n == 5
    # the pnl signs differ, so the arms did learn something
    means = {g: row.mean for g, row in table.sets["global"].arms.items()}
    assert means["trend"] != pytest.approx(0.5)
    assert means["macro"] == pytest.approx(0.5)  # |w| 0.04 < 0.05 never teaches


async def test_macro_scale_shrinks_entries_and_trail_multiplier_reaches_the_position(
    ts_env, tmp_path
):
    market = FakeMarket(
        {"BTC/USDT": PriceScript([(0, 100.0)]), "ETH/USDT": PriceScript([(0, 50.0)])}
    )

    def script(cycle: int, req) -> list[TradeDecision]:
        return [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.25)]

    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(script))
    rig.regimes.macro = "stagflation"  # exposure x0.6, trail x0.75
    async with rig.worker():
        handle = await rig.start(crypto_regime_every_h=0.05)  # refit every 3 market minutes
        await _cycle(handle, ts_env, 1)
        state = await handle.query(DecisionWorkflow.state)
        pos = state.positions["BTC/USDT"]
        assert pos.qty * pos.avg_entry == pytest.approx(10_000 * 0.25 * 0.6, rel=0.01)
        assert state.regimes.macro == "stagflation" and state.regimes.crypto == "low"
        assert pos.entry_crypto_regime == "low"
        position = ts_env.client.get_workflow_handle(pos.workflow_id)
        pstate = await position.query("status")
        assert pstate["entry_vol_regime"] == "low"
        rig.regimes.crypto = "high"
        await ts_env.sleep(timedelta(minutes=5))  # past the refit interval
        await _cycle(handle, ts_env, 2)
        pstate = await position.query("status")
        assert pstate["current_vol_regime"] == "high"
        assert len(rig.regimes.crypto_calls) == 2
        await _flatten(handle, ts_env)


async def test_drawdown_cooloff_lifts_the_halt_when_configured(ts_env, tmp_path):
    market = FakeMarket(
        {"BTC/USDT": PriceScript([(0, 100.0), (60, 60.0)]), "ETH/USDT": PriceScript([(0, 50.0)])}
    )

    def script(cycle: int, req) -> list[TradeDecision]:
        if cycle == 1:
            return [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.3)]
        return [TradeDecision(ticker="ETH/USDT", action=Action.BUY, position_pct=0.1)]

    rig = Rig(ts_env, tmp_path, market, ScriptedPolicy(script))
    async with rig.worker():
        handle = await rig.start(
            max_position_pct=0.3, drawdown_halt_pct=0.10, drawdown_cooloff_hours=1.0
        )
        await _cycle(handle, ts_env, 1)
        await ts_env.sleep(timedelta(minutes=2))  # the stop fills at 60: 12 % drawdown
        await _until(handle, lambda s: s.counters.positions_closed == 1, ts_env)
        await _cycle(handle, ts_env, 2)
        state = await handle.query(DecisionWorkflow.state)
        assert state.portfolio.halted and state.portfolio.halted_since_ms is not None
        assert "ETH/USDT" not in state.positions
        await ts_env.sleep(timedelta(minutes=70))  # market time passes the 1 h cool-off
        await _cycle(handle, ts_env, 3)
        state = await handle.query(DecisionWorkflow.state)
        assert not state.portfolio.halted
        assert state.portfolio.peak_equity == pytest.approx(state.portfolio.equity, rel=1e-3)
        log = state.decision_log[-1].actions
        assert any("cool-off" in a for a in log) and "ETH/USDT" in state.positions
        await _flatten(handle, ts_env)
