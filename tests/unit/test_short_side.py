"""Shorts on USDⓈ-M futures, in the pure trading layer: the safety layer, the scorer, funding,
leverage and liquidation, and gross exposure, each mirrored from the long and hand-checked."""

from __future__ import annotations

import ast
import itertools
import math
import random
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from trading.config import Settings
from trading.funding import funding_paid, funding_payment
from trading.leverage import (
    DEFAULT_MMR,
    check_leverage,
    liquidation_distance_ok,
    liquidation_price,
    loss_exit_price,
)
from trading.limits import HARD_MAX_LEVERAGE
from trading.models import PositionParams, PositionSide, Side
from trading.risk import check_order, gross_exposure, position_exposure
from trading.safety import (
    best_price,
    check_safety,
    mirror_price,
    net_pnl_pct,
    price_at_pnl,
    update_peak,
    update_trough,
    worst_price,
)
from trading.scorer import (
    ScorerInputs,
    correlation_risk,
    momentum_reversal,
    regime_change,
    score_position,
)

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
P = PositionParams()  # stop 4 %, trail at +8 % / 12 %, guard 15 %, fee 0.1 %
K = 0.999 / 1.001  # (1 - fee) / (1 + fee)
SHORT_STOP = 100 * (K + 0.04)  # a short from 100 is at -4 % net here: 103.8002


def short(entry: float, best: float, price: float, params: PositionParams = P, hours=1.0):
    return check_safety(entry, best, price, params, hours, side=SHORT)


# ---------------------------------------------------------------- the side itself


def test_position_side_names_the_orders_and_the_sign() -> None:
    assert PositionSide("long") is LONG and PositionSide("short") is SHORT
    assert (LONG.sign, SHORT.sign) == (1, -1)
    assert (LONG.entry_side, LONG.exit_side) == (Side.BUY, Side.SELL)
    assert (SHORT.entry_side, SHORT.exit_side) == (Side.SELL, Side.BUY)


# ---------------------------------------------------------------- net PnL


def test_net_pnl_of_a_short_with_fees_by_hand() -> None:
    # sell 1 at 100 receiving 99.9, buy back at 95 paying 95.095: +4.805 on 100.1 committed
    assert net_pnl_pct(100, 95, 0.001, side=SHORT) == pytest.approx(4.805 / 100.1)
    assert net_pnl_pct(100, 95, 0.001, side=SHORT) == pytest.approx(0.0480020)
    # flat: both fees, exactly what a flat long loses
    assert net_pnl_pct(100, 100, 0.001, side=SHORT) == pytest.approx(-0.2 / 100.1)
    assert net_pnl_pct(100, 100, 0.001, side=SHORT) == pytest.approx(net_pnl_pct(100, 100, 0.001))
    # a 10 % rise: pay 110.11 for what sold for 99.9
    assert net_pnl_pct(100, 110, 0.001, side=SHORT) == pytest.approx(-10.21 / 100.1)
    # without fees a short's return is 1 - P/E: linear, loss unbounded
    assert net_pnl_pct(100, 80, 0.0, side=SHORT) == pytest.approx(0.20)
    assert net_pnl_pct(100, 250, 0.0, side=SHORT) == pytest.approx(-1.5)


def test_price_at_pnl_inverts_net_pnl_for_both_sides() -> None:
    for side, pnl, fee in itertools.product((LONG, SHORT), (-0.15, -0.04, 0.0, 0.08), (0, 0.001)):
        price = price_at_pnl(100, pnl, fee, side=side)
        assert net_pnl_pct(100, price, fee, side=side) == pytest.approx(pnl, abs=1e-12)
    assert price_at_pnl(100, -0.04, 0.001, side=SHORT) == pytest.approx(SHORT_STOP)
    assert price_at_pnl(100, -0.04, 0.001) == pytest.approx(100 * 0.96 * 1.001 / 0.999)


def test_long_is_unchanged_bit_for_bit() -> None:
    rng = random.Random(1)
    for _ in range(500):
        e, x, f = rng.uniform(1, 1000), rng.uniform(1, 2000), rng.choice([0, 0.001, 0.0004])
        assert net_pnl_pct(e, x, f) == x * (1.0 - f) / (e * (1.0 + f)) - 1.0
        assert net_pnl_pct(e, x, f, side=LONG) == net_pnl_pct(e, x, f)
        peak = max(e, x * rng.uniform(1, 1.5))
        assert check_safety(e, peak, x, P, 30.0, side=LONG) == check_safety(e, peak, x, P, 30.0)
    assert check_safety(100, 125, 109.9, P, 1).trail_price == pytest.approx(110.0)


# ---------------------------------------------------------------- stops of a short


def test_short_stop_above_entry_fires_on_a_rise_not_on_a_fall() -> None:
    assert abs(SHORT_STOP - 103.8002) < 1e-4
    below = short(100, 100, SHORT_STOP - 0.01)
    assert not below.exit and below.pnl_pct > -0.04
    hit = short(100, 100, SHORT_STOP + 0.01)
    assert hit.exit and hit.reason == "stop_loss"
    assert short(100, 100, 103.85).reason == "stop_loss"  # gross +3.85 %: the fees count
    for price in (99.0, 96.0, 90.0, 80.0):  # a fall is the short's profit
        r = short(100, price, price)
        assert not r.exit and r.pnl_pct > 0
    # the long's stop is the other way round
    assert check_safety(100, 100, SHORT_STOP + 0.01, P, 1).reason is None


def test_short_trailing_activates_after_a_fall_and_exits_on_a_rebound() -> None:
    r = short(100, 92.0, 93.0)  # the trough is +7.8 % net: not yet
    assert not r.trail_active and r.trail_price is None
    r = short(100, 91.5, 93.0)  # +8.3 % net
    assert r.trail_active and r.trail_price == pytest.approx(91.5 * 1.12) and not r.exit

    best = 100.0
    path = [97, 92, 86, 80, 83, 86, 88, 89.5, 89.7]
    results = []
    for price in path:
        best = best_price(SHORT, best, price)
        results.append(short(100, best, price))
    assert best == 80
    assert results[-1].trail_price == pytest.approx(80 * 1.12)  # 89.6
    assert [r.exit for r in results] == [False] * 8 + [True]
    assert results[-1].reason == "trailing_stop"
    assert results[-1].pnl_pct == pytest.approx(K - 0.897)  # the trail locked in ~+10.1 %


def test_short_trail_multiplier_tightens() -> None:
    tight = P.model_copy(update={"trail_multiplier": 0.5})  # 6 % above the trough
    assert not short(100, 80, 88.0).exit  # trail at 89.6
    r = short(100, 80, 88.0, tight)
    assert r.exit and r.reason == "trailing_stop" and r.trail_price == pytest.approx(84.8)


def test_short_best_price_above_the_price_uses_the_price() -> None:
    r = short(100, 100, 85)  # the caller has not updated the trough yet
    assert r.trail_active and r.trail_price == pytest.approx(85 * 1.12) and not r.exit
    assert r.peak_pnl_pct == pytest.approx(K - 0.85)


def test_short_drawdown_guard_on_a_spike() -> None:
    no_stop = P.model_copy(update={"stop_loss_pct": 0.0})
    assert not short(100, 100, 110, no_stop).exit  # -10.2 % net
    r = short(100, 100, 116, no_stop)  # -16.2 %
    assert r.exit and r.reason == "max_drawdown_guard"
    # a gap straight through the stop is reported as the guard (checked first)
    assert short(100, 100, 120).reason == "max_drawdown_guard"
    assert short(100, 100, 250).pnl_pct == pytest.approx(K - 2.5)  # a short can lose > 100 %


def test_short_time_stop_and_the_order_of_checks() -> None:
    timed = P.model_copy(update={"time_stop_hours": 24.0})
    assert not short(100, 100, 99, timed, 23.9).exit
    assert short(100, 100, 99, timed, 24.0).reason == "time_stop"
    assert short(100, 100, 105, timed, 30).reason == "stop_loss"  # a stop at the same time wins
    assert short(100, 80, 90, timed, 30).reason == "trailing_stop"  # so does the trail


def test_side_of_a_decoded_payload_and_a_wrong_side() -> None:
    assert check_safety(100, 100, 104, P, 1, side="short").reason == "stop_loss"  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_safety(100, 100, 104, P, 1, side="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        short(100, 100, math.nan)


def test_extremes_of_a_short() -> None:
    assert update_peak(90, 85, side=SHORT) == 85 and update_peak(90, 95, side=SHORT) == 90
    assert update_peak(0.0, 95, side=SHORT) == 95  # an unset trough
    assert update_peak(math.nan, 95, side=SHORT) == 95
    assert update_peak(90, math.nan, side=SHORT) == 90 and update_peak(90, -1, side=SHORT) == 90
    assert update_trough(110, 105, side=SHORT) == 110 and update_trough(110, 115, side=SHORT) == 115
    assert update_trough(0.0, 95, side=SHORT) == 95
    assert best_price(SHORT, 90, 80) == 80 and best_price(LONG, 90, 80) == 90
    assert worst_price(SHORT, 90, 80) == 90 and worst_price(LONG, 90, 80) == 80
    assert update_peak(110, 111) == 111 and update_trough(90, 85) == 85  # longs as before


# ---------------------------------------------------------------- mirror property


def _near_threshold(pnl: float, peak_pnl: float, params: PositionParams) -> bool:
    levels = [-params.max_drawdown_guard_pct, -params.stop_loss_pct]
    return any(abs(pnl - t) < 1e-9 for t in levels) or (
        abs(peak_pnl - params.trail_activate_pct) < 1e-9
    )


def test_mirror_property_long_path_and_reflected_short_path() -> None:
    """With k = (1-f)/(1+f), a long's net PnL at x is a short's at E(1+k) - k·x. On the
    reflected path every PnL-driven check agrees: guard, stop, trail activation, time stop
    (so the same reason whenever the trail is off); the trail's exit is a gross distance from
    the best price on either side, checked against its definition."""
    rng = random.Random(20240611)
    compared = trailing_exits = 0
    for _ in range(400):
        entry = rng.uniform(5, 5000)
        params = PositionParams(
            stop_loss_pct=rng.choice([0.0, 0.02, 0.04, 0.1]),
            max_drawdown_guard_pct=rng.choice([0.0, 0.15, 0.3]),
            trail_pct=rng.choice([0.0, 0.0, 0.05, 0.12]),
            trail_activate_pct=rng.choice([0.02, 0.08]),
            trail_multiplier=rng.choice([0.75, 1.0]),
            time_stop_hours=rng.choice([None, 24.0]),
            fee_rate=rng.choice([0.0, 0.0005, 0.001]),
        )
        fee = params.fee_rate
        x, peak, best = entry, entry, entry
        for step in range(40):
            x = min(1.7 * entry, max(0.55 * entry, x * math.exp(rng.gauss(0, 0.03))))
            y = mirror_price(entry, x, fee)
            peak, best = update_peak(peak, x), best_price(SHORT, best, y)
            assert best == pytest.approx(mirror_price(entry, peak, fee), rel=1e-12)
            hours = 2.0 * step
            lr = check_safety(entry, peak, x, params, hours)
            sr = check_safety(entry, best, y, params, hours, side=SHORT)
            assert sr.pnl_pct == pytest.approx(lr.pnl_pct, abs=1e-9)
            assert sr.peak_pnl_pct == pytest.approx(lr.peak_pnl_pct, abs=1e-9)
            if _near_threshold(lr.pnl_pct, lr.peak_pnl_pct, params):
                continue
            compared += 1
            assert sr.trail_active == lr.trail_active
            if sr.trail_active:
                assert sr.trail_price == pytest.approx(
                    best * (1 + params.trail_pct * params.trail_multiplier)
                )
            short_trail = sr.trail_active and y >= best * (
                1 + params.trail_pct * params.trail_multiplier
            )
            if lr.reason in ("max_drawdown_guard", "stop_loss"):
                assert sr.reason == lr.reason
            elif short_trail:
                assert sr.reason == "trailing_stop"
                trailing_exits += 1
            elif lr.reason == "trailing_stop":  # the long's trail fired, the short's did not
                assert sr.reason in (None, "time_stop")
            else:
                assert sr.reason == lr.reason
            if params.trail_pct == 0:
                assert sr.reason == lr.reason
    assert compared > 10_000 and trailing_exits > 50


# ---------------------------------------------------------------- scorer


NEUTRAL = dict(pnl_pct=0.0, peak_pnl_pct=0.0, hours_held=1.0)


def inputs(**kw) -> ScorerInputs:
    return ScorerInputs(**{**NEUTRAL, **kw})


def mirrored(i: ScorerInputs) -> ScorerInputs:
    """The market upside down; PnL is the position's own, so it stays."""

    def neg(v: float | None) -> float | None:
        return None if v is None else -v

    return i.model_copy(
        update={
            "momentum14": neg(i.momentum14),
            "prev_momentum14": neg(i.prev_momentum14),
            "rsi14": None if i.rsi14 is None else 100 - i.rsi14,
            "btc_ret_1h": neg(i.btc_ret_1h),
            "symbol_ret_1h": neg(i.symbol_ret_1h),
        }
    )


SCORER_GRID = list(
    itertools.product(
        [-0.3, -0.02, 0.0, 0.02, 0.08],  # pnl
        [None, -0.08, -0.01, 0.03],  # momentum
        [None, -0.04, 0.05],  # previous momentum
        [None, 15.0, 50.0, 85.0],  # rsi
        [None, -0.05, 0.01, 0.2],  # btc 1h
        [("trending", "trending"), ("ranging", "trending"), ("trending", "ranging")],
        [("low", "high"), ("high", "low"), (None, None)],
        [False, True],  # is_btc
    )
)


def _grid_inputs(row) -> ScorerInputs:
    pnl, mom, prev, rsi, btc, (er, cr), (ev, cv), is_btc = row
    return inputs(
        pnl_pct=pnl,
        peak_pnl_pct=max(pnl, 0.05),
        hours_held=30,
        momentum14=mom,
        prev_momentum14=prev,
        rsi14=rsi,
        btc_ret_1h=btc,
        symbol_ret_1h=None if btc is None else btc * 1.5,
        entry_regime=er,
        current_regime=cr,
        entry_vol_regime=ev,
        current_vol_regime=cv,
        is_btc=is_btc,
    )


def test_scorer_long_unchanged_and_short_is_the_mirrored_long() -> None:
    for row in SCORER_GRID:
        i = _grid_inputs(row)
        long_result = score_position(i)
        assert score_position(i, side=LONG) == long_result
        s = score_position(mirrored(i), side=SHORT)
        assert s.components == long_result.components, row
        assert (s.score, s.verdict) == (long_result.score, long_result.verdict)


def test_scorer_short_reference_cases() -> None:
    # momentum turning up is a reversal against a short
    assert momentum_reversal(inputs(momentum14=0.02, prev_momentum14=-0.04), side=SHORT) < -0.5
    assert momentum_reversal(inputs(momentum14=-0.05, prev_momentum14=-0.02), side=SHORT) > 0.6
    # BTC +5 % in 1 h is the short's crash; -5 % helps it
    assert correlation_risk(inputs(btc_ret_1h=0.05), side=SHORT) == pytest.approx(-0.9)
    assert correlation_risk(inputs(btc_ret_1h=-0.05), side=SHORT) == pytest.approx(0.9)
    # a range breaking out upwards is adverse, downwards supports the short
    up, down = dict(momentum14=0.03), dict(momentum14=-0.03)
    rt = dict(entry_regime="ranging", current_regime="trending")
    assert regime_change(inputs(**rt, **up), side=SHORT) == -0.6
    assert regime_change(inputs(**rt, **down), side=SHORT) == 0.5
    tt = dict(entry_regime="trending", current_regime="trending")
    assert regime_change(inputs(**tt, **down), side=SHORT) == 0.5
    assert regime_change(inputs(**tt, **up), side=SHORT) == -0.5
    # a vol shock is a risk to either side
    shock = dict(entry_vol_regime="low", current_vol_regime="high")
    assert regime_change(inputs(**tt, **down, **shock), side=SHORT) == -0.8
    # exhaustion of a fall: RSI < 20 with the down-move fading
    fading = dict(momentum14=-0.04, prev_momentum14=-0.05)
    assert momentum_reversal(inputs(**fading, rsi14=15), side=SHORT) < momentum_reversal(
        inputs(**fading, rsi14=40), side=SHORT
    )
    assert momentum_reversal(inputs(**fading, rsi14=85), side=SHORT) == momentum_reversal(
        inputs(**fading, rsi14=40), side=SHORT
    )


def test_scorer_short_verdicts_and_reasons() -> None:
    strong_fall = inputs(
        pnl_pct=0.08,
        peak_pnl_pct=0.085,
        hours_held=24,
        entry_regime="trending",
        current_regime="trending",
        entry_vol_regime="low",
        current_vol_regime="low",
        momentum14=-0.08,
        prev_momentum14=-0.05,
        rsi14=34,
        btc_ret_1h=-0.005,
    )
    assert score_position(strong_fall, side=SHORT).verdict == "ADD"
    assert score_position(strong_fall).verdict != "ADD"  # the same market is bad for a long
    squeeze = inputs(
        pnl_pct=-0.02,
        peak_pnl_pct=0.02,
        hours_held=10,
        entry_regime="trending",
        current_regime="ranging",
        entry_vol_regime="low",
        current_vol_regime="high",
        momentum14=0.03,
        prev_momentum14=-0.04,
        rsi14=65,
        btc_ret_1h=0.05,
    )
    r = score_position(squeeze, side=SHORT)
    assert r.verdict == "EXIT" and r.components["correlation_risk"] == pytest.approx(-0.9)
    assert any("market (BTC) rising" in reason for reason in r.reasons)
    assert any(
        "market (BTC) falling" in reason for reason in score_position(mirrored(squeeze)).reasons
    )
    # no adding to a losing short either
    losing = inputs(**{**strong_fall.model_dump(), "pnl_pct": -0.01, "peak_pnl_pct": 0.0})
    assert score_position(losing, add_score=0.1, side=SHORT).verdict == "HOLD"


# ---------------------------------------------------------------- funding


@pytest.mark.parametrize(
    ("side", "rate", "flow"),
    [
        (LONG, 0.0001, -1.0),  # positive rate: longs pay
        (LONG, -0.0001, 1.0),  # negative rate: longs receive
        (SHORT, 0.0001, 1.0),  # positive rate: shorts receive
        (SHORT, -0.0001, -1.0),  # negative rate: shorts pay
    ],
)
def test_funding_sign_table(side: PositionSide, rate: float, flow: float) -> None:
    assert funding_payment(side, 10_000.0, rate) == pytest.approx(flow)
    assert funding_paid(side, 10_000.0, rate) == pytest.approx(-flow)


def test_funding_details() -> None:
    # the backtester books a long's funding as value x rate paid: the same number
    assert funding_paid(LONG, 1234.5, 0.00037) == 1234.5 * 0.00037
    assert funding_payment(SHORT, -10_000.0, 0.0001) == pytest.approx(1.0)  # sign of qty ignored
    assert funding_payment(SHORT, 10_000.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        funding_payment(LONG, math.nan, 0.0001)


# ---------------------------------------------------------------- leverage and liquidation


@pytest.mark.parametrize(
    ("side", "leverage", "expected"),
    [
        (LONG, 1, None),  # a 1x long cannot be liquidated
        (LONG, 2, 100 * 0.5 / 0.996),  # 50.2008
        (LONG, 3, 100 * (2 / 3) / 0.996),  # 66.9344
        (SHORT, 1, 200 / 1.004),  # 199.2032: twice the entry less the maintenance margin
        (SHORT, 2, 150 / 1.004),  # 149.4024
        (SHORT, 3, (400 / 3) / 1.004),  # 132.8021
    ],
)
def test_liquidation_price_by_hand(side: PositionSide, leverage: float, expected) -> None:
    got = liquidation_price(side, 100.0, leverage, 0.004)
    if expected is None:
        assert got is None
        return
    assert got == pytest.approx(expected, rel=1e-12)
    # the definition: margin balance = maintenance margin at LP (1 unit, margin = entry / L)
    margin = 100.0 / leverage
    assert margin + side.sign * (got - 100.0) == pytest.approx(got * 0.004)


def test_liquidation_price_values_and_inputs() -> None:
    assert liquidation_price(LONG, 100.0, 2, 0.0) == pytest.approx(50.0)
    assert liquidation_price(SHORT, 100.0, 1, 0.0) == pytest.approx(200.0)
    assert liquidation_price(SHORT, 100.0, 3) == pytest.approx((400 / 3) / (1 + DEFAULT_MMR))
    for bad in (dict(entry=0.0), dict(leverage=0.5), dict(maintenance_margin_rate=1.0)):
        args = dict(side=LONG, entry=100.0, leverage=2.0, maintenance_margin_rate=0.004) | bad
        with pytest.raises(ValueError):
            liquidation_price(**args)


def test_entry_refused_when_the_stop_lies_beyond_liquidation() -> None:
    # default stops: -4 % is far in front of liquidation at any allowed leverage
    for side, lev in itertools.product((LONG, SHORT), (1, 2, 3)):
        stop = loss_exit_price(side, 100.0, P)
        assert liquidation_distance_ok(side, 100.0, stop, lev) == (True, None)
    assert loss_exit_price(SHORT, 100.0, P) == pytest.approx(SHORT_STOP)
    # a long at 3x with its stop at 60: liquidated at 66.93 first
    ok, reason = liquidation_distance_ok(LONG, 100.0, 60.0, 3)
    assert not ok and "comes before the stop" in reason
    # a short at 3x: liquidation at 132.80; a stop at 135 is behind it, at 132 too near
    ok, reason = liquidation_distance_ok(SHORT, 100.0, 135.0, 3)
    assert not ok and "132.802" in reason
    ok, reason = liquidation_distance_ok(SHORT, 100.0, 132.0, 3, 0.004, 0.01)
    assert not ok and "within" in reason
    assert liquidation_distance_ok(SHORT, 100.0, 132.0, 3, 0.004, 0.0) == (True, None)
    assert liquidation_distance_ok(SHORT, 100.0, 131.5, 3) == (True, None)
    # the widest stop the settings allow (-50 %) with the guard off, a long at 2x: refused
    wide = P.model_copy(update={"stop_loss_pct": 0.5, "max_drawdown_guard_pct": 0.0})
    stop = loss_exit_price(LONG, 100.0, wide)
    assert stop == pytest.approx(50 * 1.001 / 0.999)  # 50.10 < 50.20
    assert not liquidation_distance_ok(LONG, 100.0, stop, 2)[0]
    assert liquidation_distance_ok(LONG, 100.0, stop, 1) == (True, None)  # 1x: no liquidation
    # without any stop only what cannot be liquidated passes
    off = P.model_copy(update={"stop_loss_pct": 0.0, "max_drawdown_guard_pct": 0.0})
    assert loss_exit_price(SHORT, 100.0, off) is None
    assert liquidation_distance_ok(LONG, 100.0, None, 1) == (True, None)
    assert not liquidation_distance_ok(SHORT, 100.0, None, 1)[0]
    # a stop on the wrong side of the entry is no stop
    assert not liquidation_distance_ok(SHORT, 100.0, 95.0, 1)[0]
    assert not liquidation_distance_ok(LONG, 100.0, 105.0, 2)[0]


def test_leverage_caps() -> None:
    assert check_leverage(3.0) == (True, None)
    ok, reason = check_leverage(HARD_MAX_LEVERAGE + 0.5)
    assert not ok and "hard maximum" in reason
    ok, reason = check_leverage(2.0, max_leverage=1.0)
    assert not ok and "max_leverage" in reason
    assert check_leverage(HARD_MAX_LEVERAGE + 1, max_leverage=10.0)[0] is False  # hard max holds
    assert check_leverage(2.0, max_leverage=math.nan)[0] is True  # a bad cap falls to the hard one
    for bad in (0.5, math.nan, math.inf):
        assert check_leverage(bad)[0] is False
    ok, reason = liquidation_distance_ok(SHORT, 100.0, 104.0, 2, max_leverage=1.0)
    assert not ok and "max_leverage" in reason


def test_the_leverage_setting_is_bounded_by_the_hard_maximum(monkeypatch) -> None:
    """One setting (OCW_FUTURES_LEVERAGE, 1x by default) and one hard maximum in code."""
    assert Settings(_env_file=None).futures_leverage == 1
    top = int(HARD_MAX_LEVERAGE)
    assert Settings(_env_file=None, futures_leverage=top).futures_leverage == top
    with pytest.raises(ValidationError):
        Settings(_env_file=None, futures_leverage=top + 1)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, futures_leverage=0)
    monkeypatch.setenv("OCW_FUTURES_LEVERAGE", str(top + 1))
    with pytest.raises(ValidationError):
        Settings(_env_file=None)
    assert check_leverage(float(top))[0] and not check_leverage(top + 0.5)[0]


# ---------------------------------------------------------------- gross exposure


BASE = dict(
    symbol="ETH/USDT",
    position_pct=0.20,
    price=50.0,
    portfolio_value=10_000.0,
    cash=10_000.0,
    exposure_value=0.0,
    position_qty=0.0,
    halted=False,
    max_position_pct=0.30,
    max_exposure=0.70,
    min_notional=10.0,
)


def test_gross_exposure_counts_a_short() -> None:
    assert position_exposure(2.0, 50.0) == 100.0
    assert position_exposure(-2.0, 50.0) == 100.0  # a signed short quantity is still exposure
    assert position_exposure(2.0, math.nan) == 0.0
    long_btc, short_eth = (0.1, 40_000.0), (-20.0, 100.0)  # 4000 long, 2000 short
    assert gross_exposure([long_btc, short_eth]) == pytest.approx(6000.0)
    # the 6000 of gross exposure leaves 1000 under max_exposure: the short does not net it away
    v = check_order(action="BUY", **{**BASE, "exposure_value": 6000.0}, side=SHORT)
    assert v.approved and v.capped_by == "max_exposure" and v.notional == pytest.approx(1000.0)
    assert v.side is SHORT and v.qty == pytest.approx(20.0)


def test_check_order_for_a_short() -> None:
    held = dict(position_qty=20.0, exposure_value=1000.0, cash=9000.0)
    sell = check_order(action="SELL", **{**BASE, **held}, side=SHORT)  # closes the short
    assert sell.approved and sell.qty == 20.0 and sell.side is SHORT
    assert sell.side.exit_side == Side.BUY
    add = check_order(action="ADD", **{**BASE, **held}, side=SHORT)
    long_add = check_order(action="ADD", **{**BASE, **held})
    assert (add.approved, add.qty, add.notional) == (True, long_add.qty, long_add.notional)
    assert not check_order(action="BUY", **{**BASE, **held}, side=SHORT).approved
    refused = check_order(action="SELL", **{**BASE, "position_qty": -20.0}, side=SHORT)
    assert not refused.approved and "position_qty must be >= 0" in refused.reason
    assert check_order(action="BUY", **BASE).side is LONG  # default, as before
    halted = check_order(action="BUY", **{**BASE, "halted": True}, side=SHORT)
    assert not halted.approved and halted.reason == "entries halted (drawdown)"


# ---------------------------------------------------------------- workflow-safe modules


def test_funding_and_leverage_import_only_stdlib_and_trading() -> None:
    root = Path(__file__).resolve().parents[2] / "trading"
    for name in ("funding.py", "leverage.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top in sys.stdlib_module_names or top == "trading", f"{name}: {mod}"
