"""Exit plans in the backtester (issue 15, ``rule_exit_plans``): the plan's stop from the fill,
the invalidation on the bar path (price) and on the agent layer's features, the target that
asks the agent layer, the short mirror, and runs without the switch unchanged. Hand-made bars,
hand-computed numbers; the rule policy's plans against direct ``decide`` calls."""

from __future__ import annotations

import numpy as np
import pytest

from trading.backtest.data import prepare_data
from trading.backtest.engine import Backtester, run_backtest
from trading.backtest.params import BacktestParams
from trading.backtest.policy import Intent, RuleDecisions
from trading.exit_plan import plan_features, stop_loss_pct_for
from trading.market_data import generate_market
from trading.models import Action, Bar, ExitPlan, PositionSide, WakeCondition
from trading.rule_policy import decide

LONG = PositionSide.LONG
SHORT = PositionSide.SHORT
H4 = 4 * 3_600_000
START = 1_735_689_600_000  # 2025-01-01 00:00 UTC
FEE = 0.001
SLIP = 5e-4
SYM = "BTC/USDT"

# stops: the hard stop only (4 % net); no trail, guard, scorer or halt
PLANS = BacktestParams(
    agent_every_bars=0,
    trail_pct=0.0,
    max_drawdown_guard_pct=0.0,
    drawdown_halt_pct=0.9,
    rule_exit_plans=True,
)


def _bars(ohlc: list[tuple[float, float, float, float]]) -> list[Bar]:
    return [
        Bar(
            symbol=SYM,
            interval="4h",
            open_time=START + i * H4,
            close_time=START + (i + 1) * H4 - 1,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=1.0,
        )
        for i, (o, h, lo, c) in enumerate(ohlc)
    ]


FLAT = (100.0, 100.2, 99.8, 100.0)


def _data(changes: dict[int, tuple[float, float, float, float]], n: int = 12):
    ohlc = [changes.get(i, FLAT) for i in range(n)]
    return prepare_data({SYM: _bars(ohlc)}, "4h")


class Script:
    """A decision source playing ``{step: {symbol: Intent}}``."""

    def __init__(self, plan: dict[int, dict[str, Intent]]) -> None:
        self.plan = plan

    def intents(self, step, held, group_weights=None):
        return dict(self.plan.get(step, {}))


def _plan(stop: float, target: float, metric: str, op: str, threshold: float) -> ExitPlan:
    cond = WakeCondition(metric=f"{SYM}:{metric}", operator=op, threshold=threshold)
    return ExitPlan(stop_price=stop, target_price=target, invalidation=cond, source="rule")


def _entry(plan: ExitPlan | None, side: PositionSide = LONG) -> Script:
    """Enter at step 2's close (filled at step 3's open), hold to the end."""
    return Script({2: {SYM: Intent(Action.BUY, 0.3, 1.0, {}, side, plan)}})


def _run(data, params, source, cls=Backtester):
    return cls(data, params, source).run()


# ------------------------------------------------------------ the stop


def test_the_plan_stop_becomes_the_position_stop_from_the_fill() -> None:
    data = _data({5: (100.0, 100.1, 97.5, 99.0)})  # a dip to 97.5: inside the hard stop (~96.1)
    plan = _plan(98.0, 120.0, "price", "lt", 80.0)
    (t,) = _run(data, PLANS, _entry(plan)).trades
    fill = 100.0 * (1 + SLIP)
    assert t.entry_price == pytest.approx(fill)
    stop_pct = stop_loss_pct_for(plan, fill, FEE, 0.04, LONG)
    assert stop_pct == pytest.approx(1 - (1 - FEE) / (1 + FEE) * 98.0 / fill)
    level = fill * (1 + FEE) * (1 - stop_pct) / (1 - FEE)  # the net loss of stop_pct: the plan's
    assert level == pytest.approx(98.0, rel=1e-12)
    assert t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(98.0 * (1 - SLIP), rel=1e-8)
    assert t.exit_time_ms == START + 6 * H4  # stamped with the bar's close

    # without the switch the plan is not read: the hard stop (-4 %) is out of reach
    (t,) = _run(data, PLANS.model_copy(update={"rule_exit_plans": False}), _entry(plan)).trades
    assert t.exit_reason == "end_of_test"


def test_a_plan_stop_beyond_the_hard_stop_is_kept_at_the_hard_stop() -> None:
    data = _data({5: (100.0, 100.1, 95.0, 99.0)})
    plan = _plan(90.0, 120.0, "price", "lt", 80.0)
    (t,) = _run(data, PLANS, _entry(plan)).trades
    fill = 100.0 * (1 + SLIP)
    hard = fill * (1 + FEE) * (1 - 0.04) / (1 - FEE)
    assert t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(hard * (1 - SLIP), rel=1e-8)


# ------------------------------------------------------------ the invalidation, price


def test_a_price_invalidation_exits_at_its_level_on_the_bar_path() -> None:
    data = _data({5: (100.0, 100.3, 98.5, 99.6)})
    plan = _plan(90.0, 120.0, "price", "lt", 99.0)
    result = _run(data, PLANS, _entry(plan))
    (t,) = result.trades
    assert t.exit_reason == "plan_invalidated"
    assert t.exit_price == pytest.approx(99.0 * (1 - SLIP), rel=1e-12)
    assert t.exit_time_ms == START + 6 * H4
    assert result.plan_events["invalidated: price"] == 1
    assert result.plan_events["entries"] == 1 and result.plan_events["entries: price"] == 1


def test_a_bar_opening_through_the_level_exits_at_its_open() -> None:
    data = _data({5: (98.8, 99.5, 98.2, 99.2)})
    plan = _plan(90.0, 120.0, "price", "lt", 99.0)
    (t,) = _run(data, PLANS, _entry(plan)).trades
    assert t.exit_reason == "plan_invalidated"
    assert t.exit_price == pytest.approx(98.8 * (1 - SLIP), rel=1e-12)


def test_on_the_falling_leg_the_first_level_crossed_wins() -> None:
    data = _data({5: (100.0, 100.3, 97.0, 99.6)})
    # the stop (98.5) lies above the invalidation (98): the stop fires first
    (t,) = _run(data, PLANS, _entry(_plan(98.5, 120.0, "price", "lt", 98.0))).trades
    assert t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(98.5 * (1 - SLIP), rel=1e-8)
    # the other way round
    (t,) = _run(data, PLANS, _entry(_plan(98.0, 120.0, "price", "lt", 98.5))).trades
    assert t.exit_reason == "plan_invalidated"
    assert t.exit_price == pytest.approx(98.5 * (1 - SLIP), rel=1e-12)


def test_a_trail_on_the_last_leg_comes_after_the_invalidation() -> None:
    # the bar dips to 98.9 (invalidation 99), then rallies to 112 and falls back to 100: a trail
    # armed at the high would fire on the way down, but the dip came first
    data = _data({5: (100.0, 112.0, 98.9, 100.0)})
    params = PLANS.model_copy(update={"trail_pct": 0.05, "trail_activate_pct": 0.05})
    (t,) = _run(data, params, _entry(_plan(90.0, 130.0, "price", "lt", 99.0))).trades
    assert t.exit_reason == "plan_invalidated"
    # and without the dip the trail takes it
    data = _data({5: (100.0, 112.0, 99.5, 100.0)})
    (t,) = _run(data, params, _entry(_plan(90.0, 130.0, "price", "lt", 99.0))).trades
    assert t.exit_reason == "trailing_stop"


def test_close_only_safety_checks_the_invalidation_on_the_close() -> None:
    # safety on every 2nd bar's close: step 5 closes at 99.2 (not checked), step 7 at 98.6
    params = PLANS.model_copy(update={"safety_every_bars": 2})
    data = _data(
        {5: (100.0, 100.1, 98.0, 99.2), 6: (99.2, 99.4, 99.1, 99.2), 7: (99.2, 99.3, 98.5, 98.6)}
    )
    (t,) = _run(data, params, _entry(_plan(90.0, 120.0, "price", "lt", 99.0))).trades
    assert t.exit_reason == "plan_invalidated"
    assert t.exit_price == pytest.approx(98.6 * (1 - SLIP), rel=1e-12)
    assert t.exit_time_ms == START + 8 * H4


# ------------------------------------------------------------ the invalidation, features


def test_a_feature_invalidation_fires_at_an_agent_bar_and_exits_at_the_next_open() -> None:
    data = _data({})
    data.scorer_frames[SYM].values["ret_1h"][6] = -0.05  # the 1h change at step 6's close
    plan = _plan(90.0, 120.0, "change_pct_1h", "lt", -0.03)
    params = PLANS.model_copy(update={"agent_every_bars": 1, "exit_score": -1.0})
    result = _run(data, params, _entry(plan))
    (t,) = result.trades
    assert t.exit_reason == "plan_invalidated"
    assert t.exit_time_ms == START + 7 * H4  # step 7's open
    assert t.exit_price == pytest.approx(100.0 * (1 - SLIP))
    assert result.plan_events["invalidated: feature"] == 1
    # the agent layer off: live never checks it either
    (t,) = _run(data, PLANS, _entry(plan)).trades
    assert t.exit_reason == "end_of_test"


def test_the_feature_values_are_plan_features_of_the_frame() -> None:
    market = generate_market([SYM], "1h", 400, seed=3)
    data = prepare_data({SYM: market[SYM]}, "1h")
    frame = data.frames[SYM]
    from trading.backtest.engine import PLAN_FEATURES

    for j in (50, 250, 399):
        mine = {
            name: frame.value(col, j)
            for name, col in PLAN_FEATURES
            if frame.value(col, j) is not None
        }
        assert mine == plan_features(frame.features(j))


# ------------------------------------------------------------ the target


class Spy(Backtester):
    calls: list[tuple[int, bool]]

    def _agent(self, step, equity, due_only=False):
        self.__dict__.setdefault("calls", []).append((step, due_only))
        return super()._agent(step, equity, due_only)


def test_a_reached_target_is_marked_and_asks_the_agent_layer_at_that_close() -> None:
    # the agent layer every 3rd bar: at steps 5, 8, ... here ((step + 1) x 4h a multiple of 12h)
    data = _data({6: (100.0, 103.5, 99.9, 101.0)})
    plan = _plan(90.0, 103.0, "price", "lt", 80.0)
    params = PLANS.model_copy(update={"agent_every_bars": 3, "exit_score": -1.0})
    bt = Spy(data, params, _entry(plan), skip_quiet=False)
    result = bt.run()
    assert result.plan_events["target"] == 1
    assert {s for s, due in bt.calls if not due} == {5, 8}
    assert (6, True) in bt.calls  # asked at once, at the close of the bar that reached it
    assert result.trades[0].exit_reason == "end_of_test"  # the plan does not sell by itself


# ------------------------------------------------------------ shorts


def test_a_short_mirrors_the_plan() -> None:
    perp = PLANS.model_copy(update={"perpetual": True, "allow_shorts": True})
    # a rise through the invalidation level 101 (the stop at 102 is further)
    data = _data({5: (100.0, 101.6, 99.9, 100.5)})
    plan = _plan(102.0, 95.0, "price", "gt", 101.0)
    result = _run(data, perp, _entry(plan, SHORT))
    (t,) = result.trades
    assert t.side is SHORT and t.exit_reason == "plan_invalidated"
    assert t.exit_price == pytest.approx(101.0 * (1 + SLIP), rel=1e-12)  # a buy: dearer
    # the stop from the fill, above it
    fill = 100.0 * (1 - SLIP)
    stop_pct = stop_loss_pct_for(plan, fill, FEE, 0.04, SHORT)
    assert stop_pct == pytest.approx(102.0 / fill - (1 - FEE) / (1 + FEE))
    data = _data({5: (100.0, 102.4, 99.9, 100.5)})
    (t,) = _run(data, perp, _entry(_plan(101.5, 95.0, "price", "gt", 102.0), SHORT)).trades
    assert t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(101.5 * (1 + SLIP), rel=1e-8)
    # the target below, on the low
    data = _data({5: (100.0, 100.1, 94.5, 96.0)})
    result = _run(data, perp, _entry(_plan(103.0, 95.0, "price", "gt", 102.0), SHORT))
    assert result.plan_events["target"] == 1


# ------------------------------------------------------------ unchanged without the switch


def test_without_the_switch_plans_change_nothing() -> None:
    market = generate_market(["BTC/USDT", "ETH/USDT"], "4h", 900, seed=11)
    data = prepare_data(market, "4h")
    plain = BacktestParams()
    rules = RuleDecisions(data, plain.default_position_pct, plain.max_position_pct)
    a = run_backtest(data, plain, decisions=rules)
    b = run_backtest(data, plain.model_copy(update={"rule_exit_plans": False}), decisions=rules)
    assert a.trades == b.trades and np.array_equal(a.equity, b.equity)
    assert not a.plan_events


def test_the_rule_policy_writes_its_plan_with_the_decision_s_parameters() -> None:
    market = generate_market(["BTC/USDT", "ETH/USDT"], "4h", 900, seed=11)
    data = prepare_data(market, "4h")
    params = BacktestParams(stop_loss_pct=0.06, trail_activate_pct=0.05)
    rules = RuleDecisions(data, params.default_position_pct, params.max_position_pct)
    pp = params.position_params()
    checked = 0
    for step in range(250, 900):
        flat, _ = rules.both(step)
        if not any(i.action is Action.BUY for i in flat.values()):
            assert rules.intents(step, set(), plan_params=pp) == flat
            continue
        got = rules.intents(step, set(), plan_params=pp)
        direct = decide(rules.view(step), set(), 0.2, 0.3, plan_params=pp)
        for d in direct.decisions:
            assert got[d.ticker].exit_plan == d.exit_plan
            assert got[d.ticker].action == flat[d.ticker].action
            if d.action is Action.BUY:
                assert d.exit_plan is not None
                checked += 1
        assert all(flat[s].exit_plan is None for s in flat)
    assert checked > 5
    result = run_backtest(
        data, params.model_copy(update={"rule_exit_plans": True}), decisions=rules
    )
    assert result.plan_events["entries"] == len(result.trades) > 0
