"""Fill prices and intrabar stop checks of the backtester (SPEC §10), on ``check_safety``.

Intrabar path of a bar, for a long position: open → low → high → close. The adverse leg comes
first: the low is checked against the stops with the peak known *before* the bar (and its
open); only then does the high raise the peak, and the trailing stop from that new peak is
checked on the way down to the close. Nothing is decided with a price the path has not reached.

On a falling leg the exit happens at the first stop level the price crosses, not at the leg's
end: the candidate prices are the leg's start, every stop level inside the leg (highest first,
nudged a hair below the level so that ``check_safety`` sees it crossed) and the leg's end; the
first candidate at which the live ``check_safety`` says exit is the fill (before slippage). A
gap through a stop fills at the open.
"""

from __future__ import annotations

from dataclasses import dataclass

from trading.models import PositionParams
from trading.safety import SafetyResult, check_safety, net_pnl_pct

NUDGE = 1e-10  # relative: a level is tested just past itself so float rounding cannot miss it
SAFE_MARGIN = 1e-9  # a leg this far above every level skips check_safety (it cannot fire)


@dataclass(frozen=True)
class StopHit:
    price: float  # trigger price, before slippage
    reason: str
    leg: str  # "open" | "low" | "close"
    result: SafetyResult


def buy_price(open_price: float, slippage_bps: float) -> float:
    return open_price * (1.0 + slippage_bps / 10_000.0)


def sell_price(price: float, slippage_bps: float) -> float:
    return price * (1.0 - slippage_bps / 10_000.0)


def _level_for_pnl(entry: float, pnl: float, fee: float) -> float:
    """The price at which ``net_pnl_pct`` equals ``pnl``."""
    return entry * (1.0 + fee) * (1.0 + pnl) / (1.0 - fee)


def stop_levels(entry: float, peak: float, params: PositionParams) -> list[float]:
    """Prices at which a falling price first trips each active stop, highest first."""
    fee = params.fee_rate
    levels: list[float] = []
    if params.max_drawdown_guard_pct > 0:
        levels.append(_level_for_pnl(entry, -params.max_drawdown_guard_pct, fee))
    if params.stop_loss_pct > 0:
        levels.append(_level_for_pnl(entry, -params.stop_loss_pct, fee))
    if params.trail_pct > 0 and net_pnl_pct(entry, peak, fee) >= params.trail_activate_pct:
        levels.append(peak * (1.0 - params.trail_pct * params.trail_multiplier))
    return sorted(levels, reverse=True)


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
) -> tuple[StopHit | None, float]:
    """The first safety exit inside one bar, and the peak after the part of the bar lived.

    Legs: open → low with the peak before the bar (including the open), then the high raises
    the peak, then high → close with the new peak. The time stop is seen at the open (time
    already expired) or at the close.
    """
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


def close_only_exit(
    entry: float, peak_before: float, bar_close: float, params: PositionParams, hours: float
) -> tuple[StopHit | None, float]:
    """A safety check on the bar's close only (``safety_every_bars`` > 1)."""
    peak = max(peak_before, bar_close)
    result = check_safety(entry, peak, bar_close, params, hours)
    if result.exit:
        return StopHit(bar_close, result.reason or "safety", "close", result), peak
    return None, peak
