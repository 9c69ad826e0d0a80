"""Fill prices and intrabar stop checks of the backtester (SPEC §10), on ``check_safety``.

Intrabar path of a bar, for a long position: open → low → high → close; for a short the
mirror, open → high → low → close (its adverse extreme is the high). The adverse leg comes
first: the low is checked against the stops with the peak known *before* the bar (and its
open); only then does the high raise the peak, and the trailing stop from that new peak is
checked on the way down to the close. Nothing is decided with a price the path has not reached.

On a falling leg the exit happens at the first stop level the price crosses, not at the leg's
end: the candidate prices are the leg's start, every stop level inside the leg (highest first,
nudged a hair below the level so that ``check_safety`` sees it crossed) and the leg's end; the
first candidate at which the live ``check_safety`` says exit is the fill (before slippage). A
gap through a stop fills at the open.

A short (``side=PositionSide.SHORT``) runs the same rules on rising legs: the high is checked
first with the trough (the lowest price seen, ``check_safety``'s ``peak_price`` for a short)
known before the bar; then the low lowers the trough; then the rise from the low to the close
is checked against the trail above that new trough. Its stop levels lie above the entry
(``safety.price_at_pnl``), lowest first, each nudged a hair above itself. A short's exit is a
buy: slippage makes it dearer (``buy_price``).
"""

from __future__ import annotations

from dataclasses import dataclass

from trading.models import PositionParams, PositionSide
from trading.safety import SafetyResult, check_safety, net_pnl_pct, price_at_pnl

LONG = PositionSide.LONG
SHORT = PositionSide.SHORT

NUDGE = 1e-10  # relative: a level is tested just past itself so float rounding cannot miss it
SAFE_MARGIN = 1e-9  # a leg this far above every level skips check_safety (it cannot fire)


@dataclass(frozen=True)
class StopHit:
    price: float  # trigger price, before slippage
    reason: str
    leg: str  # "low" | "close" for a long; "high" | "close" for a short
    result: SafetyResult


def buy_price(open_price: float, slippage_bps: float) -> float:
    return open_price * (1.0 + slippage_bps / 10_000.0)


def sell_price(price: float, slippage_bps: float) -> float:
    return price * (1.0 - slippage_bps / 10_000.0)


def _level_for_pnl(entry: float, pnl: float, fee: float) -> float:
    """The price at which ``net_pnl_pct`` equals ``pnl``."""
    return entry * (1.0 + fee) * (1.0 + pnl) / (1.0 - fee)


def entry_fill(side: PositionSide, price: float, slippage_bps: float) -> float:
    """Fill of an entry (or add): a long buys, a short sells to open."""
    return sell_price(price, slippage_bps) if side is SHORT else buy_price(price, slippage_bps)


def exit_fill(side: PositionSide, price: float, slippage_bps: float) -> float:
    """Fill of an exit: a long sells, a short buys to cover."""
    return buy_price(price, slippage_bps) if side is SHORT else sell_price(price, slippage_bps)


def stop_levels(
    entry: float, peak: float, params: PositionParams, *, side: PositionSide = LONG
) -> list[float]:
    """Prices at which an adverse move first trips each active stop, the nearest first: for a
    long those a falling price crosses, highest first; for a short (``peak`` = its trough)
    those a rising price crosses, lowest first."""
    if side is SHORT:
        return _short_stop_levels(entry, peak, params)
    fee = params.fee_rate
    levels: list[float] = []
    if params.max_drawdown_guard_pct > 0:
        levels.append(_level_for_pnl(entry, -params.max_drawdown_guard_pct, fee))
    if params.stop_loss_pct > 0:
        levels.append(_level_for_pnl(entry, -params.stop_loss_pct, fee))
    if params.trail_pct > 0 and net_pnl_pct(entry, peak, fee) >= params.trail_activate_pct:
        levels.append(peak * (1.0 - params.trail_pct * params.trail_multiplier))
    return sorted(levels, reverse=True)


def _short_stop_levels(entry: float, trough: float, params: PositionParams) -> list[float]:
    fee = params.fee_rate
    levels: list[float] = []
    if params.max_drawdown_guard_pct > 0:
        levels.append(price_at_pnl(entry, -params.max_drawdown_guard_pct, fee, side=SHORT))
    if params.stop_loss_pct > 0:
        levels.append(price_at_pnl(entry, -params.stop_loss_pct, fee, side=SHORT))
    trail_on = net_pnl_pct(entry, trough, fee, side=SHORT) >= params.trail_activate_pct
    if params.trail_pct > 0 and trail_on:
        levels.append(trough * (1.0 + params.trail_pct * params.trail_multiplier))
    return sorted(levels)


def _time_due(params: PositionParams, hours_held: float) -> bool:
    return (
        params.time_stop_hours is not None
        and params.time_stop_hours > 0
        and hours_held >= params.time_stop_hours
    )


def falling_leg_exit(
    entry: float,
    peak: float,
    start: float,
    end: float,
    params: PositionParams,
    hours_held: float,
    leg: str,
) -> StopHit | None:
    """First exit of ``check_safety`` while the price falls from ``start`` to ``end``."""
    levels = stop_levels(entry, peak, params)
    time_due = (
        params.time_stop_hours is not None
        and params.time_stop_hours > 0
        and hours_held >= params.time_stop_hours
    )
    if not time_due and (not levels or min(start, end) > levels[0] * (1.0 + SAFE_MARGIN)):
        return None  # every price of the leg is clear of every stop: check_safety would agree
    candidates = [start]
    if end < start:
        inside = [lv * (1.0 - NUDGE) for lv in levels]
        candidates += [p for p in inside if end < p < start]
        candidates.append(end)
    for price in candidates:
        result = check_safety(entry, peak, price, params, hours_held)
        if result.exit:
            return StopHit(price=price, reason=result.reason or "safety", leg=leg, result=result)
    return None


def rising_leg_exit(
    entry: float,
    trough: float,
    start: float,
    end: float,
    params: PositionParams,
    hours_held: float,
    leg: str,
) -> StopHit | None:
    """First exit of ``check_safety`` for a short while the price rises from ``start`` to
    ``end`` (``trough``: the lowest price seen, the start included)."""
    levels = _short_stop_levels(entry, trough, params)
    time_due = _time_due(params, hours_held)
    if not time_due and (not levels or max(start, end) < levels[0] * (1.0 - SAFE_MARGIN)):
        return None  # every price of the leg is clear of every stop: check_safety would agree
    candidates = [start]
    if end > start:
        inside = [lv * (1.0 + NUDGE) for lv in levels]
        candidates += [p for p in inside if start < p < end]
        candidates.append(end)
    for price in candidates:
        result = check_safety(entry, trough, price, params, hours_held, side=SHORT)
        if result.exit:
            return StopHit(price=price, reason=result.reason or "safety", leg=leg, result=result)
    return None


def intrabar_exit(
    entry: float,
    peak_before: float,
    bar_open: float,
    bar_high: float,
    bar_low: float,
    bar_close: float,
    params: PositionParams,
    hours_at_open: float,
    hours_at_close: float,
    *,
    side: PositionSide = LONG,
) -> tuple[StopHit | None, float]:
    """The first safety exit inside one bar, and the peak after the part of the bar lived.

    Legs: open → low with the peak before the bar (including the open), then the high raises
    the peak, then high → close with the new peak. The time stop is seen at the open (time
    already expired) or at the close. A short mirrors it (``peak_before`` is its trough):
    open → high with the trough before the bar, the low lowers the trough, low → close.
    """
    if side is SHORT:
        return _intrabar_exit_short(
            entry, peak_before, bar_open, bar_high, bar_low, bar_close, params,
            hours_at_open, hours_at_close,
        )  # fmt: skip
    peak = max(peak_before, bar_open)
    hit = falling_leg_exit(entry, peak, bar_open, bar_low, params, hours_at_open, "low")
    if hit is not None:
        return hit, peak
    peak = max(peak, bar_high)
    hit = falling_leg_exit(entry, peak, bar_high, bar_close, params, hours_at_close, "close")
    if hit is not None and hit.price == bar_high and hit.reason == "time_stop":
        # the time stop expires at the bar's close, not at its high
        hit = StopHit(price=bar_close, reason=hit.reason, leg="close", result=hit.result)
    return hit, peak


def _intrabar_exit_short(
    entry: float,
    trough_before: float,
    bar_open: float,
    bar_high: float,
    bar_low: float,
    bar_close: float,
    params: PositionParams,
    hours_at_open: float,
    hours_at_close: float,
) -> tuple[StopHit | None, float]:
    trough = min(trough_before, bar_open)
    hit = rising_leg_exit(entry, trough, bar_open, bar_high, params, hours_at_open, "high")
    if hit is not None:
        return hit, trough
    trough = min(trough, bar_low)
    hit = rising_leg_exit(entry, trough, bar_low, bar_close, params, hours_at_close, "close")
    if hit is not None and hit.price == bar_low and hit.reason == "time_stop":
        # the time stop expires at the bar's close, not at its low
        hit = StopHit(price=bar_close, reason=hit.reason, leg="close", result=hit.result)
    return hit, trough


def close_only_exit(
    entry: float,
    peak_before: float,
    bar_close: float,
    params: PositionParams,
    hours: float,
    *,
    side: PositionSide = LONG,
) -> tuple[StopHit | None, float]:
    """A safety check on the bar's close only (``safety_every_bars`` > 1); a short's
    ``peak_before`` is its trough."""
    if side is SHORT:
        trough = min(peak_before, bar_close)
        result = check_safety(entry, trough, bar_close, params, hours, side=SHORT)
        if result.exit:
            return StopHit(bar_close, result.reason or "safety", "close", result), trough
        return None, trough
    peak = max(peak_before, bar_close)
    result = check_safety(entry, peak, bar_close, params, hours)
    if result.exit:
        return StopHit(bar_close, result.reason or "safety", "close", result), peak
    return None, peak
