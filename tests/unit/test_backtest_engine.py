"""The backtest engine on generated markets: fills, stops, cadence, hooks, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from trading.backtest.data import prepare_data
from trading.backtest.engine import Backtester, Hooks, run_backtest
from trading.backtest.metrics import result_metrics
from trading.backtest.params import BacktestParams
from trading.backtest.policy import Intent, RuleDecisions
from trading.market_data import generate_market
from trading.models import Action, ClosedTrade

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
H = 3_600_000
DAY = 24 * H


@pytest.fixture(scope="module")
def market():
    return generate_market(SYMBOLS, "4h", 1500, seed=21)


@pytest.fixture(scope="module")
def data(market):
    return prepare_data(market, "4h")


def _start(data) -> int:
    return int(data.timeline[250])  # after the 200-bar warm-up


def _dump(result) -> tuple:
    return (
        [t.model_dump() for t in result.trades],
        result.equity.tolist(),
        result.exposure.tolist(),
        dict(result.skipped),
    )


def test_same_inputs_same_trades_and_metrics(market, data) -> None:
    params = BacktestParams()
    first = run_backtest(data, params, _start(data))
    second = run_backtest(prepare_data(market, "4h"), params, _start(data))
    assert len(first.trades) > 20
    assert _dump(first) == _dump(second)
    assert result_metrics(first) == result_metrics(second)


@pytest.mark.parametrize(
    "update",
    [
        {},
        {
            "stop_loss_pct": 0.0,
            "trail_pct": 0.0,
            "max_drawdown_guard_pct": 0.0,
            "agent_every_bars": 0,
            "drawdown_halt_pct": 0.05,
        },
        {"drawdown_halt_pct": 0.05, "drawdown_cooloff_hours": 72.0},
        {
            "stop_loss_pct": 0.0,
            "trail_pct": 0.0,
            "agent_every_bars": 0,
            "drawdown_halt_pct": 0.05,
            "drawdown_cooloff_hours": 24.0,
        },
    ],  # fmt: skip
)
def test_skipping_quiet_bars_changes_nothing(data, update) -> None:
    params = BacktestParams(**update)
    fast = Backtester(data, params).run(_start(data))
    slow = Backtester(data, params, skip_quiet=False).run(_start(data))
    assert [t.model_dump() for t in fast.trades] == [t.model_dump() for t in slow.trades]
    assert np.allclose(fast.equity, slow.equity, rtol=1e-12)
    assert np.allclose(fast.exposure, slow.exposure, rtol=1e-9, atol=1e-12)


def test_no_look_ahead(market, data) -> None:
    """Bars after the end cannot change anything: a run on data cut at the end is identical."""
    end = int(data.timeline[900])
    cut = {s: [b for b in bars if b.open_time < end] for s, bars in market.items()}
    full = run_backtest(data, BacktestParams(), _start(data), end)
    short = run_backtest(prepare_data(cut, "4h"), BacktestParams(), _start(data), end)
    assert _dump(full) == _dump(short)


def _open_at(data, symbol: str, time_ms: int) -> float:
    frame = data.frames[symbol]
    return float(frame.open[int(np.searchsorted(frame.open_time, time_ms))])


def test_entries_and_policy_exits_fill_at_the_next_open(data) -> None:
    params = BacktestParams(agent_every_bars=0, slippage_bps=10.0)  # no ADD: one fill per entry
    result = run_backtest(data, params, _start(data))
    assert result.trades
    for t in result.trades:
        assert t.entry_time_ms % (4 * H) == 0  # a bar's open
        assert t.entry_price == pytest.approx(_open_at(data, t.symbol, t.entry_time_ms) * 1.001)
        if t.exit_reason == "decision_sell":
            assert t.exit_price == pytest.approx(_open_at(data, t.symbol, t.exit_time_ms) * 0.999)
    assert sum(t.fees for t in result.trades) == pytest.approx(result.fees_paid)
    reasons = {t.exit_reason for t in result.trades}
    assert "decision_sell" in reasons and "stop_loss" in reasons


def test_stop_exits_respect_the_stop_level(data) -> None:
    result = run_backtest(data, BacktestParams(slippage_bps=0.0), _start(data))
    stops = [t for t in result.trades if t.exit_reason == "stop_loss"]
    assert stops
    for t in stops:  # at the level (-4 % net) or worse when the bar opened through it
        assert t.exit_price <= t.entry_price * 1.001 * 0.96 / 0.999 * (1 + 1e-9)


def test_decision_cadence_in_bars(data) -> None:
    result = run_backtest(
        data, BacktestParams(decision_every_bars=6, agent_every_bars=0), _start(data)
    )
    assert result.trades
    assert all(t.entry_time_ms % DAY == 0 for t in result.trades)  # decided at 00:00 closes


def test_add_is_reachable_through_the_scorer(data) -> None:
    params = BacktestParams(drawdown_halt_pct=0.5)
    result = run_backtest(data, params, _start(data))
    assert result.adds > 0
    assert all(t.entry_price > 0 for t in result.trades)


class RecordingLearner:
    def __init__(self) -> None:
        self.trades: list[tuple[str, str]] = []
        self.asked = 0

    def record_trade(self, trade: ClosedTrade, regime: str) -> None:
        self.trades.append((trade.trade_id, regime))

    def group_weights(self, regime: str) -> dict[str, float] | None:
        self.asked += 1
        return None


def test_hooks_learner_macro_and_vol_regime(data) -> None:
    learner = RecordingLearner()
    hooks = Hooks(learner=learner, macro=lambda t: (0.5, 1.0), vol_regime=lambda t: "low")
    result = run_backtest(data, BacktestParams(), _start(data), hooks=hooks)
    assert [tid for tid, _ in learner.trades] == [t.trade_id for t in result.trades]
    assert {regime for _, regime in learner.trades} == {"low"}
    assert learner.asked > 0
    plain = run_backtest(data, BacktestParams(), _start(data))
    first_scaled = result.trades[0].qty * result.trades[0].entry_price
    first_plain = plain.trades[0].qty * plain.trades[0].entry_price
    assert first_scaled == pytest.approx(first_plain * 0.5, rel=1e-9)


class BuyOnce:
    """A decision source that buys BTC at one step and never sells."""

    def __init__(self, step: int) -> None:
        self.step = step

    def intents(self, step, held, group_weights=None):
        if step == self.step and "BTC/USDT" not in held:
            return {"BTC/USDT": Intent(Action.BUY, 0.3, 1.0, {})}
        return {}


def test_funding_charged_on_perpetual_positions(market) -> None:
    bars = {"BTC/USDT": market["BTC/USDT"][:400]}
    times = np.arange(bars["BTC/USDT"][0].open_time, bars["BTC/USDT"][-1].close_time, 8 * H)
    funding = {"BTC/USDT": (times, np.full(len(times), 0.0001))}
    data = prepare_data(bars, "4h", funding=funding)
    params = BacktestParams(
        perpetual=True,
        stop_loss_pct=0.0,
        trail_pct=0.0,
        max_drawdown_guard_pct=0.0,
        agent_every_bars=0,
        slippage_bps=0.0,
    )
    start = int(data.timeline[250])
    result = run_backtest(data, params, start, decisions=BuyOnce(260))
    (trade,) = result.trades
    closes = data.frames["BTC/USDT"].close
    expected = sum(
        trade.qty * closes[i] * 0.0001
        for i in range(261, 400)
        if int(data.timeline[i]) % (8 * H) == 0  # one funding time in every other bar
    )
    assert result.funding_paid == pytest.approx(expected, rel=1e-12)
    spot = run_backtest(data, params.model_copy(update={"perpetual": False}), start,
                        decisions=BuyOnce(260))  # fmt: skip
    assert spot.equity[-1] - result.equity[-1] == pytest.approx(expected, rel=1e-9)
    assert trade.pnl == pytest.approx(spot.trades[0].pnl - expected, rel=1e-9)


def test_rule_decisions_mirror_one_live_call(data) -> None:
    from trading.rule_policy import decide

    decisions = RuleDecisions(data, 0.2, 0.3)
    for step in (300, 450, 700):
        view = decisions.view(step)
        for held in (set(), {"ETH/USDT"}, set(SYMBOLS)):
            live = {d.ticker: d for d in decide(view, held).decisions}
            memo = decisions.intents(step, held)
            for symbol, d in live.items():
                assert memo[symbol].action == d.action
                assert memo[symbol].position_pct == d.position_pct
                assert memo[symbol].signal_weights == d.signal_weights


def test_mark_shortcut_agrees_with_drawdown_update() -> None:
    """The engine skips drawdown_update on a new high; that must be its exact answer."""
    import math as _math

    from trading.risk import drawdown_update

    for peak, equity in [(100.0, 100.0), (100.0, 130.5), (1e-9, 5.0), (7.0, 7.0000001)]:
        state = drawdown_update(peak, equity, 0.12, False)
        assert state.peak == equity and not state.halted and state.drawdown == 0.0
    assert (
        not _math.isfinite(float("inf"))
        and drawdown_update(1.0, float("inf"), 0.12, False).peak == 1.0
    )


def test_drawdown_cooloff_lifts_a_flat_halt(data) -> None:
    """Without a cool-off a flat, halted book never trades again (SPEC: it waits for resume);
    with one, trading starts again once the halt has lasted the cool-off, market time."""
    strict = BacktestParams(drawdown_halt_pct=0.05)
    frozen = run_backtest(data, strict, _start(data))
    assert frozen.cooloffs == 0
    halted_at = _first_halt(frozen, 0.05)
    assert halted_at is not None, "the scenario must halt"
    assert all(t.entry_time_ms <= halted_at + 4 * H for t in frozen.trades)
    # the report can say so: one stretch, from the first halted mark, still on at the end
    assert len(frozen.halt_spans) == 1 and frozen.halt_spans[0][1] is None
    assert halted_at <= frozen.halt_spans[0][0] <= halted_at + 4 * H

    relaxed = run_backtest(
        data, strict.model_copy(update={"drawdown_cooloff_hours": 72.0}), _start(data)
    )
    assert relaxed.cooloffs >= 1
    assert len(relaxed.halt_spans) >= relaxed.cooloffs
    assert all(end is not None for _, end in relaxed.halt_spans[: relaxed.cooloffs])
    later = [t for t in relaxed.trades if t.entry_time_ms > halted_at + 72 * H]
    assert later, "trading resumes after the cool-off"
    first_after = min(t.entry_time_ms for t in later)
    assert first_after >= halted_at + 72 * H


def _first_halt(result, halt_pct: float) -> int | None:
    """Close time of the first bar whose drawdown from the running peak reaches ``halt_pct``."""
    peaks = np.maximum.accumulate(np.maximum(result.equity, result.params.initial_cash))
    hit = np.flatnonzero(1.0 - result.equity / peaks >= halt_pct)
    return int(result.times[hit[0]]) if len(hit) else None


def test_rule_decisions_with_shorts_mirror_one_live_call(data) -> None:
    """Issue 15: with shorts the memo is the live ``decide(..., shorts=True)`` for every
    holding (flat, held long, held short); SHORT is a BUY intent with side short, COVER a
    SELL; and the mirrored rules do short somewhere on a random market."""
    from trading.models import Action, PositionSide
    from trading.rule_policy import decide

    decisions = RuleDecisions(data, 0.2, 0.3, shorts=True)
    seen = set()
    for step in range(300, 1400, 7):
        view = decisions.view(step)
        for held, short in ((set(), set()), (set(SYMBOLS), set()), (set(SYMBOLS), set(SYMBOLS))):
            live = {
                d.ticker: d for d in decide(view, held, shorts=True, short_held=short).decisions
            }
            memo = decisions.intents(step, held, short=short)
            for symbol, d in live.items():
                i = memo[symbol]
                seen.add(d.action)
                want = {Action.SHORT: Action.BUY, Action.COVER: Action.SELL}.get(d.action, d.action)
                assert i.action == want and i.position_pct == d.position_pct
                assert i.side == (
                    PositionSide.SHORT if d.action is Action.SHORT else PositionSide.LONG
                )
    assert {Action.SHORT, Action.COVER} <= seen
    active = decisions.active_steps(np.arange(300, 1400), shorts=True)
    long_only = RuleDecisions(data, 0.2, 0.3).active_steps(np.arange(300, 1400))
    assert active.sum() > long_only.sum()  # short entries and covers are steps to act on


def test_a_backtest_with_shorts_trades_both_sides_and_keeps_longs_alone(data) -> None:
    start = _start(data)
    base = BacktestParams(perpetual=True)
    longs = run_backtest(data, base, start)
    both = run_backtest(data, base.model_copy(update={"allow_shorts": True}), start)
    sides = {t.side for t in both.trades}
    assert sides == {"long", "short"}
    assert all(t.exit_reason != "decision_sell" for t in both.trades if t.side == "short")
    assert any(t.exit_reason == "decision_cover" for t in both.trades)
    assert len(longs.trades) > 0 and all(t.side == "long" for t in longs.trades)
