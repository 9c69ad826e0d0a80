"""Five-signal scorer (SPEC §4): reference values, a strong trend reaches ADD, a crash EXIT."""

from __future__ import annotations

import itertools

import pytest

from trading.scorer import (
    WEIGHTS,
    ScorerInputs,
    correlation_risk,
    momentum_reversal,
    pnl_trajectory,
    regime_change,
    score_position,
    time_decay,
)

NEUTRAL = dict(pnl_pct=0.0, peak_pnl_pct=0.0, hours_held=1.0)


def inputs(**kw) -> ScorerInputs:
    return ScorerInputs(**{**NEUTRAL, **kw})


def test_reference_values() -> None:
    assert regime_change(inputs(entry_vol_regime="low", current_vol_regime="high")) == -0.8
    assert correlation_risk(inputs(btc_ret_1h=-0.05)) == pytest.approx(-0.9)
    assert pnl_trajectory(inputs(pnl_pct=0.012, peak_pnl_pct=0.04)) == -0.6  # gave back 70 %
    assert time_decay(inputs(pnl_pct=0.002, peak_pnl_pct=0.01, hours_held=72)) == -0.5


def test_strong_trend_reaches_add() -> None:
    strong = inputs(
        pnl_pct=0.08,
        peak_pnl_pct=0.085,
        hours_held=24,
        entry_regime="trending",
        current_regime="trending",
        entry_vol_regime="low",
        current_vol_regime="low",
        momentum14=0.08,
        prev_momentum14=0.05,
        rsi14=66,
        btc_ret_1h=0.005,
    )
    r = score_position(strong)
    assert r.verdict == "ADD", r
    assert r.score > 0.4
    assert all(v > 0 for v in r.components.values())


def test_crash_reaches_exit() -> None:
    crash = inputs(
        pnl_pct=-0.02,
        peak_pnl_pct=0.02,
        hours_held=10,
        entry_regime="trending",
        current_regime="ranging",
        entry_vol_regime="low",
        current_vol_regime="high",
        momentum14=-0.03,
        prev_momentum14=0.04,
        rsi14=35,
        btc_ret_1h=-0.05,
    )
    r = score_position(crash)
    assert r.verdict == "EXIT" and r.score < -0.3
    assert r.components["correlation_risk"] == pytest.approx(-0.9)
    assert any("BTC" in reason for reason in r.reasons)


def test_btc_crash_alone_is_not_an_exit_but_pushes_towards_it() -> None:
    r = score_position(inputs(btc_ret_1h=-0.05))
    assert r.verdict == "HOLD" and r.score == pytest.approx(0.2 * -0.9, abs=0.01)


def test_neutral_position_holds() -> None:
    r = score_position(inputs())
    assert r.verdict == "HOLD" and abs(r.score) < 0.05


def test_score_is_the_weighted_sum() -> None:
    r = score_position(inputs(pnl_pct=0.03, peak_pnl_pct=0.05, momentum14=0.01, btc_ret_1h=0.01))
    assert r.score == pytest.approx(sum(WEIGHTS[k] * v for k, v in r.components.items()), abs=1e-3)
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_no_add_to_a_losing_position() -> None:
    t = dict(entry_regime="trending", current_regime="trending", momentum14=0.1)
    r = score_position(inputs(**t, prev_momentum14=0.02, btc_ret_1h=0.05), add_score=0.2)
    assert r.score > 0.2 and r.verdict == "HOLD"
    assert any("losing" in reason for reason in r.reasons)


def test_thresholds_are_parameters() -> None:
    mild = inputs(btc_ret_1h=-0.03)
    assert score_position(mild).verdict == "HOLD"
    assert score_position(mild, exit_score=-0.05).verdict == "EXIT"


def test_regime_components() -> None:
    up = dict(momentum14=0.03)
    assert regime_change(inputs(entry_regime="trending", current_regime="trending", **up)) == 0.5
    assert regime_change(inputs(entry_regime="trending", current_regime="ranging")) == -0.4
    assert regime_change(inputs(entry_regime="ranging", current_regime="trending", **up)) == 0.5
    # a vol shock is not softened by an intact trend
    shock = inputs(
        entry_regime="trending",
        current_regime="trending",
        entry_vol_regime="low",
        current_vol_regime="high",
        **up,
    )
    assert regime_change(shock) == -0.8
    assert regime_change(inputs(entry_vol_regime="high", current_vol_regime="low")) == 0.4


def test_momentum_and_pnl_components() -> None:
    assert momentum_reversal(inputs(momentum14=0.05, prev_momentum14=0.02)) > 0.6
    assert momentum_reversal(inputs(momentum14=-0.02, prev_momentum14=0.04)) < -0.5
    fading_top = momentum_reversal(inputs(momentum14=0.04, prev_momentum14=0.05, rsi14=85))
    assert fading_top < momentum_reversal(inputs(momentum14=0.04, prev_momentum14=0.05, rsi14=60))
    assert pnl_trajectory(inputs(pnl_pct=0.10, peak_pnl_pct=0.10)) == 1.0
    assert pnl_trajectory(inputs(pnl_pct=-0.01, peak_pnl_pct=0.05)) == -0.8
    assert pnl_trajectory(inputs(pnl_pct=-0.04, peak_pnl_pct=0.0)) == -0.5
    assert time_decay(inputs(pnl_pct=0.0, hours_held=0)) == 0.0


def test_components_stay_in_range() -> None:
    grid = itertools.product(
        [-0.3, -0.02, 0.0, 0.02, 0.5],
        [None, -0.2, 0.2],
        [None, -0.2, 0.3],
        ["low", "high", "extreme", "weird"],
    )
    for pnl, mom, btc, vol in grid:
        r = score_position(
            inputs(
                pnl_pct=pnl,
                peak_pnl_pct=max(pnl, 0.1),
                hours_held=500,
                momentum14=mom,
                prev_momentum14=0.0 if mom is not None else None,
                rsi14=95,
                btc_ret_1h=btc,
                entry_vol_regime="very_low",
                current_vol_regime=vol,
                entry_regime="ranging",
                current_regime="trending",
            )
        )
        assert all(-1 <= v <= 1 for v in r.components.values())
        assert -1 <= r.score <= 1


def test_btc_position_uses_its_own_move() -> None:
    assert correlation_risk(inputs(is_btc=True, symbol_ret_1h=-0.05)) == pytest.approx(-0.9)
    assert correlation_risk(inputs(symbol_ret_1h=-0.05)) == pytest.approx(-0.45)
    assert correlation_risk(inputs(btc_ret_1h=-0.2)) == -1.0
