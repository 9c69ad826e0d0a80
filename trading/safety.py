"""Safety layer of a position (SPEC §4): hard exits checked every 30 s on the latest price.

Workflow code: standard library and ``trading.models`` only, deterministic, no I/O.

Order of checks (the first that fires gives the reason; all are evaluated on the same price):

1. ``max_drawdown_guard`` — net PnL <= -max_drawdown_guard_pct. The hard floor: it names a
   gap through the stop (or catches it when the stop loss is disabled).
2. ``stop_loss`` — net PnL <= -stop_loss_pct.
3. ``trailing_stop`` — active once the peak's net PnL >= +trail_activate_pct; exits when
   price <= peak · (1 - trail_pct · trail_multiplier). The trail is on gross prices: it is a
   distance from the best price seen.
4. ``time_stop`` — hours_held >= time_stop_hours, whatever the PnL (when configured).

A percentage <= 0 (or ``time_stop_hours`` None) disables its check. Net PnL counts the fee on
both sides: price·(1-fee) / (entry·(1+fee)) - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trading.models import PositionParams

EXIT_REASONS = ("max_drawdown_guard", "stop_loss", "trailing_stop", "time_stop")


@dataclass(frozen=True)
class SafetyResult:
    """The verdict of one safety check and the numbers behind it."""

    exit: bool
    reason: str | None
    pnl_pct: float  # net of fees on both sides
    trail_active: bool
    trail_price: float | None
    peak_pnl_pct: float = 0.0  # net PnL at the peak price


def net_pnl_pct(entry_price: float, price: float, fee_rate: float) -> float:
    """Return of a round trip entry → price after paying ``fee_rate`` on both sides."""
    return price * (1.0 - fee_rate) / (entry_price * (1.0 + fee_rate)) - 1.0


def _check_price(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def update_peak(peak: float, price: float) -> float:
    """Highest price seen; a bad price is ignored, a bad peak is replaced by the price."""
    if not math.isfinite(price) or price <= 0:
        return peak
    return price if not math.isfinite(peak) else max(peak, price)


def update_trough(trough: float, price: float) -> float:
    """Lowest price seen (for the maximum adverse excursion); bad prices are ignored."""
    if not math.isfinite(price) or price <= 0:
        return trough
    return price if not math.isfinite(trough) or trough <= 0 else min(trough, price)


def check_safety(
    entry_price: float,
    peak_price: float,
    price: float,
    params: PositionParams,
    hours_held: float,
) -> SafetyResult:
    """Whether the safety layer exits now, and why. Raises ValueError on non-positive or
    non-finite prices: callers pass validated ticks, so a bad one is a programming error."""
    _check_price("entry_price", entry_price)
    _check_price("peak_price", peak_price)
    _check_price("price", price)
    fee = params.fee_rate
    peak = max(peak_price, price)
    pnl = net_pnl_pct(entry_price, price, fee)
    peak_pnl = net_pnl_pct(entry_price, peak, fee)

    trail_active = params.trail_pct > 0 and peak_pnl >= params.trail_activate_pct
    trail_price = (
        peak * (1.0 - params.trail_pct * params.trail_multiplier) if trail_active else None
    )

    reason: str | None = None
    if params.max_drawdown_guard_pct > 0 and pnl <= -params.max_drawdown_guard_pct:
        reason = "max_drawdown_guard"
    elif params.stop_loss_pct > 0 and pnl <= -params.stop_loss_pct:
        reason = "stop_loss"
    elif trail_price is not None and price <= trail_price:
        reason = "trailing_stop"
    elif (
        params.time_stop_hours is not None
        and params.time_stop_hours > 0
        and math.isfinite(hours_held)
        and hours_held >= params.time_stop_hours
    ):
        reason = "time_stop"
    return SafetyResult(
        exit=reason is not None,
        reason=reason,
        pnl_pct=pnl,
        trail_active=trail_active,
        trail_price=trail_price,
        peak_pnl_pct=peak_pnl,
    )
