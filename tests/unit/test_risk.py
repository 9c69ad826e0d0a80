"""Sizing limits and the drawdown halt (SPEC §3, §8)."""

from __future__ import annotations

import math

import pytest

from trading.risk import drawdown_update, size_entry

BASE = dict(
    portfolio_value=10_000.0,
    cash=10_000.0,
    exposure_value=0.0,
    position_pct=0.20,
    max_position_pct=0.30,
    max_exposure=0.70,
    price=50.0,
    min_notional=10.0,
)


def size(**kw):
    return size_entry(**{**BASE, **kw})


def test_plain_size() -> None:
    s = size()
    assert s.notional == pytest.approx(2000.0) and s.qty == pytest.approx(40.0)
    assert s.skipped_reason is None and s.capped_by is None


def test_position_pct_clamped_to_max() -> None:
    s = size(position_pct=5.0)
    assert s.notional == pytest.approx(3000.0)  # 0.30 of 10 000


def test_macro_scale_applies_after_the_clamp_and_never_breaks_the_cap() -> None:
    assert size(position_pct=0.20, macro_scale=0.6).notional == pytest.approx(1200.0)
    boosted = size(position_pct=0.30, macro_scale=1.2)
    assert boosted.notional == pytest.approx(3000.0) and boosted.capped_by == "max_position_pct"
    assert size(position_pct=0.20, macro_scale=1.2).notional == pytest.approx(2400.0)


def test_add_counts_the_existing_position() -> None:
    s = size(existing_position_value=2500.0, exposure_value=2500.0)
    assert s.notional == pytest.approx(500.0) and s.capped_by == "max_position_pct"
    full = size(existing_position_value=3000.0, exposure_value=3000.0)
    assert full.qty == 0 and "max_position_pct" in full.skipped_reason


def test_exposure_cap() -> None:
    s = size(exposure_value=6000.0)
    assert s.notional == pytest.approx(1000.0) and s.capped_by == "max_exposure"
    none_left = size(exposure_value=7000.0)
    assert none_left.qty == 0 and "max_exposure" in none_left.skipped_reason


def test_cash_cap_leaves_room_for_the_fee() -> None:
    s = size(cash=500.0)
    assert s.notional == pytest.approx(500.0 / 1.001) and s.capped_by == "cash"
    assert s.notional * 1.001 <= 500.0 + 1e-9


def test_min_notional_skip() -> None:
    s = size(cash=5.0)
    assert s.qty == 0 and s.notional == 0
    assert "min notional" in s.skipped_reason and "cash" in s.skipped_reason
    assert size(position_pct=0.0005).skipped_reason.startswith("below min notional")


def test_invalid_inputs_skip_with_reason() -> None:
    assert "price" in size(price=math.nan).skipped_reason
    assert "cash" in size(cash=math.inf).skipped_reason
    assert "invalid" in size(price=0.0).skipped_reason
    assert "invalid" in size(position_pct=-0.1).skipped_reason
    assert size(position_pct=0.0).skipped_reason == "zero size"


def test_drawdown_halt_and_recovery_at_half() -> None:
    s = drawdown_update(10_000, 9_000, 0.12, halted=False)
    assert not s.halted and s.drawdown == pytest.approx(0.10)
    s = drawdown_update(s.peak, 8_800, 0.12, halted=s.halted)
    assert s.halted and s.drawdown == pytest.approx(0.12)
    s = drawdown_update(s.peak, 9_300, 0.12, halted=s.halted)  # 7 %: not yet below 6 %
    assert s.halted
    s = drawdown_update(s.peak, 9_450, 0.12, halted=s.halted)  # 5.5 %: lifts
    assert not s.halted and "recovered" in s.reason
    assert s.peak == 10_000


def test_manual_halt_stays_until_resume() -> None:
    s = drawdown_update(10_000, 10_500, 0.12, halted=True, manual=True)
    assert s.halted and s.peak == 10_500 and s.drawdown == 0
    assert "resume" in s.reason


def test_new_peak_and_bad_equity() -> None:
    assert drawdown_update(10_000, 11_000, 0.12, halted=False).peak == 11_000
    s = drawdown_update(10_000, math.nan, 0.12, halted=True)
    assert s.halted and s.peak == 10_000 and "invalid" in s.reason
    assert drawdown_update(math.nan, 5_000, 0.12, halted=False).peak == 5_000


def test_cooloff_over() -> None:
    from trading.risk import cooloff_over

    h = 3_600_000
    assert not cooloff_over(0, 10 * h, None)  # SPEC default: no cool-off
    assert not cooloff_over(None, 10 * h, 1.0)
    assert not cooloff_over(0, h - 1, 1.0)
    assert cooloff_over(0, h, 1.0)
    assert not cooloff_over(0, 10 * h, float("nan"))
