"""Intrabar stop checks: adverse leg first, no peak from the future, first level crossed."""

from __future__ import annotations

import pytest

from trading.backtest.fills import buy_price, intrabar_exit, sell_price, stop_levels
from trading.models import PositionParams
from trading.safety import net_pnl_pct

P = PositionParams()  # stop -4 % net, trail from +8 % net at 12 % below the peak, guard -15 %


def test_fill_prices_carry_slippage() -> None:
    assert buy_price(100.0, 5.0) == pytest.approx(100.05)
    assert sell_price(100.0, 5.0) == pytest.approx(99.95)


def test_stop_fills_at_its_level_not_at_the_low() -> None:
    hit, _ = intrabar_exit(100.0, 100.0, 99.0, 101.0, 80.0, 100.5, P, 1.0, 5.0)
    assert hit is not None and hit.reason == "stop_loss" and hit.leg == "low"
    assert net_pnl_pct(100.0, hit.price, P.fee_rate) == pytest.approx(-0.04, abs=1e-8)
    assert hit.price > 80.0  # the -15 % guard level is lower: the stop was crossed first


def test_gap_through_the_stop_fills_at_the_open() -> None:
    hit, _ = intrabar_exit(100.0, 100.0, 90.0, 91.0, 85.0, 90.5, P, 1.0, 5.0)
    assert hit is not None and hit.price == 90.0 and hit.reason == "stop_loss"


def test_low_is_checked_before_the_high_moves_the_peak() -> None:
    """Peak 115 before the bar, trail at 101.2. The bar's high (130) would lift the trail to
    114.4 and its low (105) is under that, but the low comes first: no exit on the low leg.
    The close (108) then sits under the new trail: exit on the close leg at the trail."""
    hit, peak = intrabar_exit(100.0, 115.0, 112.0, 130.0, 105.0, 108.0, P, 1.0, 5.0)
    assert peak == 130.0
    assert hit is not None and hit.reason == "trailing_stop" and hit.leg == "close"
    assert hit.price == pytest.approx(130.0 * (1 - 0.12), rel=1e-9)


def test_quiet_bar_changes_only_the_peak() -> None:
    hit, peak = intrabar_exit(100.0, 100.0, 100.0, 103.0, 99.0, 102.0, P, 1.0, 5.0)
    assert hit is None and peak == 103.0


def test_trail_multiplier_tightens_the_trail() -> None:
    tight = P.model_copy(update={"trail_multiplier": 0.5})
    assert stop_levels(100.0, 120.0, tight)[0] == pytest.approx(120.0 * (1 - 0.06))
    hit, _ = intrabar_exit(100.0, 120.0, 119.0, 119.5, 112.0, 113.0, tight, 1.0, 5.0)
    assert hit is not None and hit.reason == "trailing_stop"
    assert hit.price == pytest.approx(112.8, rel=1e-9)


def test_time_stop_exits_at_the_close() -> None:
    timed = P.model_copy(update={"time_stop_hours": 4.0})
    hit, _ = intrabar_exit(100.0, 100.0, 100.0, 101.0, 99.5, 100.5, timed, 2.0, 6.0)
    assert hit is not None and hit.reason == "time_stop" and hit.price == 100.5
