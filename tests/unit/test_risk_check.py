"""check_order (SPEC §8): each limit blocks exactly what it should and nothing else."""

from __future__ import annotations

import pytest

from trading.models import Action
from trading.risk import check_order, size_entry

BASE = dict(
    symbol="BTC/USDT",
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
HELD = dict(position_qty=20.0, exposure_value=1000.0, cash=9000.0)  # 1000 USDT of BTC


def check(action: str, **kw):
    return check_order(action=action, **{**BASE, **kw})


def test_plain_buy_is_sized_by_size_entry() -> None:
    v = check("BUY")
    expected = size_entry(
        portfolio_value=10_000.0,
        cash=10_000.0,
        exposure_value=0.0,
        position_pct=0.20,
        max_position_pct=0.30,
        max_exposure=0.70,
        price=50.0,
        min_notional=10.0,
    )
    assert v.approved and v.reason is None
    assert v.qty == expected.qty and v.notional == pytest.approx(2000.0)
    assert check(Action.BUY).approved  # the enum works as well as the string


def test_one_position_per_symbol_blocks_buy_only() -> None:
    v = check("BUY", **HELD)
    assert not v.approved and "one position per symbol" in v.reason and v.qty == 0
    assert check("ADD", **HELD).approved
    assert check("SELL", **HELD).approved
    assert check("BUY", **{**HELD, "position_qty": 0.0}).approved


def test_add_needs_a_position_and_stays_within_the_position_cap() -> None:
    v = check("ADD")
    assert not v.approved and "no open position" in v.reason
    v = check("ADD", **HELD)  # 1000 held, cap 3000: a 2000 add fits exactly
    assert v.approved and v.notional == pytest.approx(2000.0)
    v = check("ADD", **{**HELD, "position_qty": 50.0, "exposure_value": 2500.0})
    assert v.approved and v.notional == pytest.approx(500.0) and v.capped_by == "max_position_pct"
    v = check("ADD", **{**HELD, "position_qty": 60.0, "exposure_value": 3000.0})
    assert not v.approved and "max_position_pct" in v.reason


def test_pending_add_counts_against_the_cap() -> None:
    v = check("ADD", **HELD, pending_add_notional=1500.0)
    assert v.approved and v.notional == pytest.approx(500.0) and v.capped_by == "max_position_pct"
    assert check("BUY", pending_add_notional=9000.0).approved  # only ADDs of this position


def test_total_exposure_cap() -> None:
    v = check("BUY", exposure_value=6000.0, cash=4000.0)
    assert v.approved and v.notional == pytest.approx(1000.0) and v.capped_by == "max_exposure"
    v = check("BUY", exposure_value=7000.0, cash=3000.0)
    assert not v.approved and "max_exposure" in v.reason
    v = check("ADD", **{**HELD, "exposure_value": 6800.0, "cash": 3200.0})
    assert v.approved and v.notional == pytest.approx(200.0) and v.capped_by == "max_exposure"
    assert check("BUY", exposure_value=4000.0, cash=6000.0).capped_by is None


def test_per_position_cap_clamps_the_request() -> None:
    v = check("BUY", position_pct=0.9)
    assert v.approved and v.notional == pytest.approx(3000.0)


def test_macro_scale_applies_to_the_requested_pct() -> None:
    assert check("BUY", macro_scale=0.6).notional == pytest.approx(1200.0)
    assert check("BUY", macro_scale=1.2).notional == pytest.approx(2400.0)
    boosted = check("BUY", position_pct=0.30, macro_scale=1.2)
    assert boosted.notional == pytest.approx(3000.0) and boosted.capped_by == "max_position_pct"
    assert check("SELL", **HELD, macro_scale=0.6).qty == 20.0  # exits are never scaled


def test_cash_net_of_fee() -> None:
    v = check("BUY", cash=500.0, exposure_value=9500.0, max_exposure=1.0)
    assert v.approved and v.capped_by == "cash"
    assert v.notional * 1.001 == pytest.approx(500.0)


def test_min_notional() -> None:
    v = check("BUY", position_pct=0.0005)
    assert not v.approved and v.reason.startswith("below min notional")
    assert check("BUY", position_pct=0.001).approved  # 10 USDT: exactly the minimum


def test_drawdown_halt_blocks_entries_and_adds_never_exits() -> None:
    assert "halted" in check("BUY", halted=True).reason
    assert "halted" in check("ADD", **HELD, halted=True).reason
    v = check("SELL", **HELD, halted=True)
    assert v.approved and v.qty == 20.0 and v.notional == pytest.approx(1000.0)


def test_sell_is_whole_position_and_needs_one() -> None:
    v = check("SELL", **HELD, min_notional=5000.0)  # exits ignore sizing limits
    assert v.approved and v.qty == 20.0
    v = check("SELL")
    assert not v.approved and "no open position" in v.reason


def test_hold_and_unknown_actions_send_nothing() -> None:
    for action in ("HOLD", "SHORT"):
        v = check(action)
        assert not v.approved and v.qty == 0 and "nothing to send" in v.reason


def test_invalid_numbers_reject_with_a_reason() -> None:
    v = check("BUY", price=float("nan"))
    assert not v.approved and "invalid" in v.reason
    assert not check("SELL", position_qty=float("nan")).approved
