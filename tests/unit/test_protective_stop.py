"""Where the exchange-side stop sits and when it moves (trading/protective_stop.py)."""

from __future__ import annotations

import pytest

from trading.models import PositionParams
from trading.protective_stop import should_move, stop_level, stop_loss_level
from trading.safety import check_safety, net_pnl_pct


def test_stop_loss_level_is_where_net_pnl_hits_the_stop():
    params = PositionParams(stop_loss_pct=0.04, fee_rate=0.001)
    level = stop_loss_level(100.0, params)
    assert net_pnl_pct(100.0, level, 0.001) == pytest.approx(-0.04)
    # the safety layer exits exactly there, not a tick above
    assert check_safety(100.0, 100.0, level * 0.99999, params, 0).reason == "stop_loss"
    assert not check_safety(100.0, 100.0, level * 1.00001, params, 0).exit


def test_level_is_the_higher_of_stop_loss_and_active_trail():
    params = PositionParams()
    assert stop_level(100.0, 100.0, 100.0, params) == pytest.approx(stop_loss_level(100.0, params))
    assert stop_level(100.0, 107.0, 106.0, params) == pytest.approx(stop_loss_level(100, params))
    assert stop_level(100.0, 120.0, 115.0, params) == pytest.approx(120 * 0.88)
    half = PositionParams(trail_multiplier=0.5)
    assert stop_level(100.0, 120.0, 115.0, half) == pytest.approx(120 * 0.94)


def test_no_level_when_both_are_off():
    off = PositionParams(stop_loss_pct=0.0, trail_pct=0.0)
    assert stop_level(100.0, 150.0, 140.0, off) is None
    assert not should_move(None, 0.0, None, 1.0)


def test_moves_only_up_by_the_minimum_or_on_a_new_quantity():
    assert should_move(None, 0.0, 96.0, 1.0)  # none yet
    assert not should_move(96.0, 1.0, 96.1, 1.0)  # +0.1 %: not worth a cancel-replace
    assert should_move(96.0, 1.0, 96.0 * 1.002, 1.0)
    assert not should_move(96.0, 1.0, 90.0, 1.0)  # never down
    assert should_move(96.0, 1.0, 96.0, 1.5)  # an add: resized
    assert should_move(96.0, 1.0, 95.0, 0.5)  # a partial exit: resized even if lower
