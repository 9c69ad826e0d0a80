"""Exit plans (trading/exit_plan.py): what an entry's plan may say, and when its position acts."""

from __future__ import annotations

import math

import pytest

from trading.exit_plan import (
    hard_stop_price,
    invalidated,
    min_distance_pct,
    rule_plan,
    stop_loss_pct_for,
    target_reached,
    validate_plan,
)
from trading.models import ExitPlan, PositionSide
from trading.safety import net_pnl_pct

BTC = "BTC/USDT"
FEE = 0.001


def plan(stop=96.0, target=110.0, **invalidation) -> dict:
    cond = {"metric": "BTC/USDT:price", "operator": "lt", "threshold": 97.0, **invalidation}
    return {"stop_price": stop, "target_price": target, "invalidation": cond}


def check(raw, price=100.0, atr_pct=0.01, side=PositionSide.LONG, features=None):
    return validate_plan(
        raw,
        symbol=BTC,
        price=price,
        atr_pct=atr_pct,
        stop_loss_pct=0.04,
        fee_rate=FEE,
        side=side,
        features=features,
    )


def test_a_sound_plan_is_kept_as_proposed():
    got = check(plan(stop=97.0, target=108.0, threshold=98.0, reason="range low"))
    assert isinstance(got, ExitPlan)
    assert (got.stop_price, got.target_price) == (97.0, 108.0) and not got.notes
    assert got.invalidation.metric == "BTC/USDT:price" and got.invalidation.threshold == 98.0
    assert got.invalidation.reason == "range low" and got.source == "llm"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (plan(stop=101.0), "wrong side"),
        (plan(stop=100.0), "wrong side"),
        (plan(stop=99.5), "too close"),  # inside one ATR (1 %)
        (plan(stop=math.nan), "not a positive finite"),
        (plan(stop=math.inf), "not a positive finite"),
        (plan(stop="soon"), "not a positive finite"),
        (plan(stop=None), "not a positive finite"),
        (plan(stop=True), "not a positive finite"),
        (plan(target=99.0), "wrong side"),
        (plan(target=100.4), "too close"),
        (plan(target=math.nan), "not a positive finite"),
        (plan(threshold=101.0), "already true"),
        (plan(operator="gt", threshold=120.0), "falls past"),
        (plan(metric="ETH/USDT:price"), "watch BTC/USDT itself"),
        (plan(metric="BTC/USDT:funding_rate"), "not one a position watches"),
        (plan(metric="price"), "not <SYMBOL>:<metric>"),
        (plan(operator="abs_change_pct_gt"), "operator"),
        (plan(threshold=math.nan), "not a finite number"),
        ({"stop_price": 96.0, "target_price": 110.0}, "not an object"),
        (None, "no exit plan"),
        ("stop at 96", "no exit plan"),
    ],
)
def test_a_bad_plan_is_rejected_with_its_reason(raw, why):
    got = check(raw)
    assert isinstance(got, str) and why in got, got


def test_a_stop_beyond_the_hard_stop_is_kept_at_it_with_a_note():
    got = check(plan(stop=80.0))
    hard = hard_stop_price(100.0, 0.04, FEE, PositionSide.LONG)
    assert isinstance(got, ExitPlan) and got.stop_price == pytest.approx(hard)
    assert "kept at" in got.notes[0]
    # the hard stop is where the safety layer's net loss reaches stop_loss_pct
    assert net_pnl_pct(100.0, hard, FEE) == pytest.approx(-0.04)


def test_the_minimum_distance_follows_the_atr_and_never_passes_the_hard_stop():
    assert min_distance_pct(0.02) == 0.02 and min_distance_pct(0.001) == 0.005
    assert min_distance_pct(None) == 0.005 and min_distance_pct(math.nan) == 0.005
    assert isinstance(check(plan(stop=97.5), atr_pct=0.02), ExitPlan)  # 2.5 % > one ATR
    assert isinstance(check(plan(stop=98.5), atr_pct=0.02), str)  # 1.5 % < one ATR
    assert isinstance(check(plan(stop=97.9), atr_pct=0.025), str)
    # an ATR wider than the hard stop leaves the hard stop as the one valid stop
    hard = hard_stop_price(100.0, 0.04, FEE, PositionSide.LONG)
    got = check(plan(stop=hard, target=110.0, threshold=96.5), atr_pct=0.08)
    assert isinstance(got, ExitPlan) and got.stop_price == pytest.approx(hard)
    assert isinstance(check(plan(stop=97.0), atr_pct=0.08), str)


def test_a_short_plan_mirrors_every_rule():
    short = {
        "stop_price": 103.0,
        "target_price": 92.0,
        "invalidation": {"metric": "BTCUSDT:price", "operator": "crosses_above", "threshold": 102},
    }
    got = check(short, side=PositionSide.SHORT)
    assert isinstance(got, ExitPlan) and got.invalidation.operator == "gt"
    assert got.invalidation.metric == "BTC/USDT:price"
    assert "wrong side" in check({**short, "stop_price": 97.0}, side=PositionSide.SHORT)
    assert "wrong side" in check({**short, "target_price": 104.0}, side=PositionSide.SHORT)
    wide = check({**short, "stop_price": 120.0}, side=PositionSide.SHORT)
    assert isinstance(wide, ExitPlan) and wide.stop_price < 120.0 and wide.notes


def test_feature_invalidations_are_judged_on_the_features_known_at_entry():
    cond = {"metric": "BTC/USDT:change_pct_1h", "operator": "lt", "threshold": -0.03}
    assert isinstance(
        check(plan() | {"invalidation": cond}, features={"change_pct_1h": 0.0}), ExitPlan
    )
    bad = check(plan() | {"invalidation": cond}, features={"change_pct_1h": -0.05})
    assert isinstance(bad, str) and "already true" in bad


def test_a_position_sees_its_invalidation_and_target():
    p = check(plan(threshold=97.0))
    assert not invalidated(p, 97.5, None) and invalidated(p, 96.9, None)
    assert not invalidated(p, None, None) and not invalidated(p, math.nan, None)
    cond = {"metric": "BTC/USDT:volume_z", "operator": "gt", "threshold": 4.0}
    v = check(plan() | {"invalidation": cond}, features={"volume_z": 1.0})
    assert not invalidated(v, 50.0, None)  # a feature condition waits for the features
    assert not invalidated(v, 50.0, {"volume_z": 3.0}) and invalidated(v, 50.0, {"volume_z": 4.5})
    assert not target_reached(p, 109.9) and target_reached(p, 110.0)
    assert target_reached(
        ExitPlan(stop_price=103, target_price=92, invalidation=p.invalidation),
        91.0,
        PositionSide.SHORT,
    )


def test_the_positions_stop_is_the_plans_from_the_fill_never_looser_than_the_hard_one():
    p = check(plan(stop=97.0))
    pct = stop_loss_pct_for(p, 100.0, FEE, 0.04)
    assert net_pnl_pct(100.0, 97.0, FEE) == pytest.approx(-pct)
    # a fill above the decision price keeps the stop's level, a wider loss still capped
    assert stop_loss_pct_for(p, 101.0, FEE, 0.04) > pct
    assert stop_loss_pct_for(p, 130.0, FEE, 0.04) == 0.04


def test_the_rule_policy_writes_a_valid_plan_from_its_rules():
    trend = rule_plan(
        BTC,
        100.0,
        atr_pct=0.015,
        ema21=98.0,
        stop_loss_pct=0.04,
        trail_activate_pct=0.08,
        fee_rate=FEE,
    )
    assert trend is not None and trend.source == "rule"
    assert trend.stop_price == pytest.approx(hard_stop_price(100.0, 0.04, FEE, PositionSide.LONG))
    assert trend.target_price == pytest.approx(108.0)
    assert trend.invalidation.metric == "BTC/USDT:price" and trend.invalidation.threshold == 98.0
    # EMA21 below the stop (or above the price) is no invalidation: the 1h fall is
    dip = rule_plan(
        BTC,
        100.0,
        atr_pct=0.015,
        ema21=101.0,
        stop_loss_pct=0.04,
        trail_activate_pct=0.08,
        fee_rate=FEE,
    )
    assert dip is not None and dip.invalidation.metric == "BTC/USDT:change_pct_1h"
    assert dip.invalidation.threshold == pytest.approx(-0.045)
    # without a hard stop the rules have no stop to write: no plan
    none = rule_plan(
        BTC,
        100.0,
        atr_pct=None,
        ema21=None,
        stop_loss_pct=0.0,
        trail_activate_pct=0.08,
        fee_rate=FEE,
    )
    assert none is None
