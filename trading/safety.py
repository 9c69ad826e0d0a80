"""Safety layer of a position (SPEC §4): hard exits checked every 30 s on the latest price.

Workflow code: standard library and ``trading.models`` only, deterministic, no I/O.

Order of checks (the first that fires gives the reason; all are evaluated on the same price):

1. ``max_drawdown_guard`` — net PnL <= -max_drawdown_guard_pct. The hard floor: it names a
   gap through the stop (or catches it when the stop loss is disabled).
2. ``stop_loss`` — net PnL <= -stop_loss_pct.
3. ``trailing_stop`` — active once the best price's net PnL >= +trail_activate_pct; a long
   exits when price <= peak · (1 - trail_pct · trail_multiplier), a short when
   price >= trough · (1 + trail_pct · trail_multiplier). The trail is on gross prices: it is a
   distance from the best price seen (a long's highest, a short's lowest).
4. ``time_stop`` — hours_held >= time_stop_hours, whatever the PnL (when configured).

A percentage <= 0 (or ``time_stop_hours`` None) disables its check.

Net PnL counts the fee ``f`` on both sides and is relative to the capital the entry took,
``entry · (1 + f)`` a unit (a long's cost; a 1× short's margin plus its entry fee):

* long — buy at E paying E·(1+f), sell at P receiving P·(1-f):
  ``P·(1-f) / (E·(1+f)) - 1``;
* short — sell at E receiving E·(1-f), buy back at P paying P·(1+f):
  ``(E·(1-f) - P·(1+f)) / (E·(1+f))`` = ``(1-f)/(1+f) - P/E``.

Both are ``-2f/(1+f)`` at P = E, so the fees cost a short what they cost a long. The short's
return is linear in P (a long's gain is P/E - 1, a short's 1 - P/E, before fees): its loss is
unbounded above, its gain at most (1-f)/(1+f). With k = (1-f)/(1+f), a long's net PnL at x
equals a short's at ``E·(1+k) - k·x`` (``mirror_price``): the exact reflection of the
PnL-driven checks (guard, stop, trail activation, time); the trail's exit distance is a gross
fraction of the best price on either side, so it is not reflected exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trading.models import PositionParams, PositionSide

EXIT_REASONS = ("max_drawdown_guard", "stop_loss", "trailing_stop", "time_stop")

LONG = PositionSide.LONG
SHORT = PositionSide.SHORT


def _side(side: PositionSide | str) -> PositionSide:
    """The member itself; a plain "long"/"short" (a decoded payload) is converted, anything
    else raises ValueError rather than be taken for a long."""
    return side if side is LONG or side is SHORT else PositionSide(side)


@dataclass(frozen=True)
class SafetyResult:
    """The verdict of one safety check and the numbers behind it."""

    exit: bool
    reason: str | None
    pnl_pct: float  # net of fees on both sides
    trail_active: bool
    trail_price: float | None
    peak_pnl_pct: float = 0.0  # net PnL at the best price (a long's peak, a short's trough)


def net_pnl_pct(
    entry_price: float, price: float, fee_rate: float, *, side: PositionSide = LONG
) -> float:
    """Return of a round trip entry → price after paying ``fee_rate`` on both sides, relative
    to ``entry · (1 + fee)`` (module docstring: the formulas of both sides)."""
    if _side(side) is SHORT:
        cost = entry_price * (1.0 + fee_rate)
        return (entry_price * (1.0 - fee_rate) - price * (1.0 + fee_rate)) / cost
    return price * (1.0 - fee_rate) / (entry_price * (1.0 + fee_rate)) - 1.0


def price_at_pnl(
    entry_price: float, pnl_pct: float, fee_rate: float, *, side: PositionSide = LONG
) -> float:
    """The price at which ``net_pnl_pct`` equals ``pnl_pct`` (where a stop sits): a long's
    ``E·(1+f)·(1+pnl)/(1-f)``, a short's ``E·((1-f)/(1+f) - pnl)``. A short's is <= 0 for a
    gain of (1-f)/(1+f) or more, which no price reaches."""
    if _side(side) is SHORT:
        return entry_price * ((1.0 - fee_rate) / (1.0 + fee_rate) - pnl_pct)
    return entry_price * (1.0 + fee_rate) * (1.0 + pnl_pct) / (1.0 - fee_rate)


def mirror_price(entry_price: float, price: float, fee_rate: float) -> float:
    """The short's price whose net PnL equals a long's at ``price`` (same entry and fee):
    ``E·(1+k) - k·price``, k = (1-f)/(1+f). Decreasing, so it maps a long's peak to the
    short's trough; used by tests to reflect paths, and to reason about the two sides."""
    k = (1.0 - fee_rate) / (1.0 + fee_rate)
    return entry_price * (1.0 + k) - k * price


def _check_price(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _unset(value: float) -> bool:
    return not math.isfinite(value) or value <= 0


def update_peak(peak: float, price: float, *, side: PositionSide = LONG) -> float:
    """Best price seen, the one the trail follows: a long's highest, a short's lowest. A bad
    price is ignored; a bad peak (a short's <= 0 too: an unset one) is replaced by the price."""
    if not math.isfinite(price) or price <= 0:
        return peak
    if _side(side) is SHORT:
        return price if _unset(peak) else min(peak, price)
    return price if not math.isfinite(peak) else max(peak, price)


def update_trough(trough: float, price: float, *, side: PositionSide = LONG) -> float:
    """Worst price seen (for the maximum adverse excursion): a long's lowest, a short's
    highest. Bad prices are ignored; a trough <= 0 is unset."""
    if not math.isfinite(price) or price <= 0:
        return trough
    if _side(side) is SHORT:
        return price if _unset(trough) else max(trough, price)
    return price if not math.isfinite(trough) or trough <= 0 else min(trough, price)


def best_price(side: PositionSide, best: float, price: float) -> float:
    """The favourable extreme after ``price`` (what ``check_safety`` takes as ``peak_price``):
    a workflow keeps one number for either side."""
    return update_peak(best, price, side=side)


def worst_price(side: PositionSide, worst: float, price: float) -> float:
    """The adverse extreme after ``price`` (maximum adverse excursion) for either side."""
    return update_trough(worst, price, side=side)


def best_of(side: PositionSide, peak: float, trough: float) -> float:
    """The best price of a position that keeps its plain extremes (highest ``peak``, lowest
    ``trough`` seen, as the workflows do): a long's peak, a short's trough."""
    return trough if _side(side) is SHORT else peak


def worst_of(side: PositionSide, peak: float, trough: float) -> float:
    """The adverse extreme of the same: a long's trough, a short's peak."""
    return peak if _side(side) is SHORT else trough


def mark_value(
    side: PositionSide, qty: float, entry_price: float, price: float, fee_rate: float = 0.0
) -> float:
    """What a position is worth at ``price`` net of the exit fee at ``fee_rate``: a long's
    ``q·P·(1-f)``, a short's collateral plus open PnL ``q·(2E - P) - q·P·f`` (the entry's
    notional is its collateral, as the backtester and the books reckon it). Less the cost
    (``q·E`` plus the entry fee) it is the net PnL."""
    exit_fee = qty * price * fee_rate
    if _side(side) is SHORT:
        return qty * (2.0 * entry_price - price) - exit_fee
    return qty * price - exit_fee


def check_safety(
    entry_price: float,
    peak_price: float,
    price: float,
    params: PositionParams,
    hours_held: float,
    *,
    side: PositionSide = LONG,
) -> SafetyResult:
    """Whether the safety layer exits now, and why. ``peak_price`` is the best price seen
    (``best_price``): a long's highest, a short's lowest. Raises ValueError on non-positive or
    non-finite prices: callers pass validated ticks, so a bad one is a programming error."""
    _check_price("entry_price", entry_price)
    _check_price("peak_price", peak_price)
    _check_price("price", price)
    side = _side(side)
    fee = params.fee_rate
    width = params.trail_pct * params.trail_multiplier
    if side is SHORT:
        peak = min(peak_price, price)
        pnl = net_pnl_pct(entry_price, price, fee, side=SHORT)
        peak_pnl = net_pnl_pct(entry_price, peak, fee, side=SHORT)
    else:
        peak = max(peak_price, price)
        pnl = net_pnl_pct(entry_price, price, fee)
        peak_pnl = net_pnl_pct(entry_price, peak, fee)

    trail_active = params.trail_pct > 0 and peak_pnl >= params.trail_activate_pct
    trail_price: float | None = None
    trail_hit = False
    if trail_active and side is SHORT:
        trail_price = peak * (1.0 + width)
        trail_hit = price >= trail_price
    elif trail_active:
        trail_price = peak * (1.0 - width)
        trail_hit = price <= trail_price

    reason: str | None = None
    if params.max_drawdown_guard_pct > 0 and pnl <= -params.max_drawdown_guard_pct:
        reason = "max_drawdown_guard"
    elif params.stop_loss_pct > 0 and pnl <= -params.stop_loss_pct:
        reason = "stop_loss"
    elif trail_hit:
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
