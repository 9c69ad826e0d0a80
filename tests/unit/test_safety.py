"""Safety layer (SPEC §4): stop, trailing stop, drawdown guard, time stop, net of fees."""

from __future__ import annotations

import math

import pytest

from trading.models import PositionParams
from trading.safety import check_safety, net_pnl_pct, update_peak, update_trough

P = PositionParams()  # stop 4 %, trail at +8 % / 12 %, guard 15 %, fee 0.1 %
STOP_PRICE = 100 * 0.96 * 1.001 / 0.999  # net PnL exactly -4 % from an entry of 100


def test_net_pnl_counts_both_fees() -> None:
    assert net_pnl_pct(100, 100, 0.001) == pytest.approx(0.999 / 1.001 - 1)  # about -0.2 %
    assert check_safety(100, 100, 110, P, 1).pnl_pct == pytest.approx(110 * 0.999 / 100.1 - 1)


def test_stop_loss_at_minus_four_percent_net() -> None:
    above = check_safety(100, 100, STOP_PRICE + 0.01, P, 1)
    assert not above.exit and above.pnl_pct > -0.04
    hit = check_safety(100, 100, STOP_PRICE - 0.01, P, 1)
    assert hit.exit and hit.reason == "stop_loss"
    # gross -3.9 % is already beyond -4 % net: fees count
    assert STOP_PRICE > 96.0
    assert check_safety(100, 100, 96.1, P, 1).reason == "stop_loss"


def test_trailing_activation_is_net_of_fees() -> None:
    r = check_safety(100, 108.0, 107.0, P, 1)  # +8 % gross is +7.8 % net: not yet
    assert not r.trail_active and r.trail_price is None
    r = check_safety(100, 108.5, 107.0, P, 1)
    assert r.trail_active and r.trail_price == pytest.approx(108.5 * 0.88)


def test_trailing_follows_the_peak() -> None:
    peak = 100.0
    path = [104, 110, 118, 125, 121, 115, 111, 110.5, 109.9]
    results = []
    for price in path:
        peak = update_peak(peak, price)
        results.append(check_safety(100, peak, price, P, 1))
    assert peak == 125
    assert results[-1].trail_price == pytest.approx(125 * 0.88)  # 110
    assert [r.exit for r in results] == [False] * 8 + [True]
    assert results[-1].reason == "trailing_stop"
    assert results[-1].pnl_pct > 0.09  # the trail locked in a profit


def test_trail_multiplier_tightens() -> None:
    tight = P.model_copy(update={"trail_multiplier": 0.5})  # 6 % below the peak
    assert not check_safety(100, 120, 112.0, P, 1).exit  # trail at 105.6
    r = check_safety(100, 120, 112.0, tight, 1)
    assert r.exit and r.reason == "trailing_stop"
    assert r.trail_price == pytest.approx(112.8)


def test_peak_below_price_uses_price() -> None:
    r = check_safety(100, 100, 130, P, 1)  # caller has not updated the peak yet
    assert r.trail_active and r.trail_price == pytest.approx(130 * 0.88) and not r.exit


def test_max_drawdown_guard() -> None:
    no_stop = P.model_copy(update={"stop_loss_pct": 0.0})
    assert not check_safety(100, 100, 90, no_stop, 1).exit
    r = check_safety(100, 100, 84, no_stop, 1)
    assert r.exit and r.reason == "max_drawdown_guard"
    # a gap straight through the stop is reported as the guard (checked first)
    assert check_safety(100, 100, 80, P, 1).reason == "max_drawdown_guard"


def test_time_stop() -> None:
    assert not check_safety(100, 100, 101, P, 10_000).exit  # off by default
    timed = P.model_copy(update={"time_stop_hours": 24.0})
    assert not check_safety(100, 100, 101, timed, 23.9).exit
    r = check_safety(100, 100, 101, timed, 24.0)
    assert r.exit and r.reason == "time_stop"
    # a stop that fires at the same time wins
    assert check_safety(100, 100, 95, timed, 30).reason == "stop_loss"


def test_bad_prices_raise_and_are_ignored_by_peak_tracking() -> None:
    with pytest.raises(ValueError):
        check_safety(100, 100, math.nan, P, 1)
    with pytest.raises(ValueError):
        check_safety(0, 100, 100, P, 1)
    assert update_peak(110, math.nan) == 110
    assert update_peak(110, 111) == 111
    assert update_peak(math.nan, 105) == 105
    assert update_trough(90, 95) == 90 and update_trough(90, 85) == 85
    assert update_trough(90, -1) == 90


def test_workflow_modules_import_only_stdlib_and_models() -> None:
    """safety, scorer and risk run in Temporal workflow code: no numpy, pandas or I/O."""
    import ast
    import sys
    from pathlib import Path

    allowed = set(sys.stdlib_module_names) | {"trading.models", "pydantic"}
    root = Path(__file__).resolve().parents[2] / "trading"
    for name in ("safety.py", "scorer.py", "risk.py"):
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
                assert mod in allowed or top in allowed - {"trading"}, f"{name} imports {mod}"
