"""Where a position's exchange-side stop sits (SPEC §4, §9), and when it moves.

The safety layer checks the stops every 30 s on the engine's price; the exchange-side stop is
the same rule held by the exchange itself, so a position stays protected while the engine,
its worker or its network is down. Its level is the higher of:

* the stop loss: the price at which the round trip's net PnL is ``-stop_loss_pct``, i.e.
  ``entry · (1 + fee) · (1 - stop_loss_pct) / (1 - fee)`` (the inverse of ``net_pnl_pct``);
* the trailing stop, once active: ``peak · (1 - trail_pct · trail_multiplier)``.

With both disabled there is no level; the drawdown guard sits below the stop loss and stays
the engine's (it names a gap through the stop). A stop only moves *up* (a long's stop never
loosens), and only by at least ``MIN_MOVE_PCT`` of its price, or when the quantity it covers
changed: every move is a cancel and a new order at the exchange, so a trail that creeps
tick by tick would spend request weight and history for nothing.

A short's stop is the mirror (a reduce-only BUY above the price): the stop loss at
``safety.price_at_pnl(entry, -stop_loss_pct, fee, side=SHORT)``, the trail at
``trough · (1 + trail_pct · trail_multiplier)``, the lower of the two, and it only moves down.

Workflow code: standard library and ``trading.models`` only.
"""

from __future__ import annotations

from trading.models import PositionParams, PositionSide
from trading.safety import check_safety, price_at_pnl

LONG = PositionSide.LONG
SHORT = PositionSide.SHORT

MIN_MOVE_PCT = 0.002  # 0.2 % of the stop price
QTY_RTOL = 1e-9


def stop_loss_level(
    entry_price: float, params: PositionParams, side: PositionSide = LONG
) -> float | None:
    """The price where net PnL reaches ``-stop_loss_pct`` (below a long's entry, above a
    short's); None when the stop loss is off."""
    if params.stop_loss_pct <= 0 or entry_price <= 0:
        return None
    fee = params.fee_rate
    if side is SHORT:
        return price_at_pnl(entry_price, -params.stop_loss_pct, fee, side=SHORT)
    return entry_price * (1.0 + fee) * (1.0 - params.stop_loss_pct) / (1.0 - fee)


def stop_level(
    entry_price: float,
    best_price: float,
    price: float,
    params: PositionParams,
    side: PositionSide = LONG,
) -> float | None:
    """The exchange-side stop's level: the stop loss or the active trail, whichever is
    tighter (a long's higher, a short's lower); None when neither applies. ``best_price`` is
    the best price seen: a long's peak, a short's trough."""
    levels = []
    loss = stop_loss_level(entry_price, params, side)
    if loss is not None:
        levels.append(loss)
    trail = check_safety(entry_price, best_price, price, params, 0.0, side=side).trail_price
    if trail is not None:
        levels.append(trail)
    if not levels:
        return None
    return min(levels) if side is SHORT else max(levels)


def triggers_now(level: float, price: float, side: PositionSide = LONG) -> bool:
    """A stop at ``level`` would trigger at once at ``price`` (the exchange refuses it): at or
    above the price for a long's SELL stop, at or below it for a short's BUY stop."""
    return level <= price if side is SHORT else level >= price


def should_move(
    current_price: float | None,
    current_qty: float,
    level: float | None,
    qty: float,
    min_move_pct: float = MIN_MOVE_PCT,
    side: PositionSide = LONG,
) -> bool:
    """Whether to replace the stop at ``current_price`` covering ``current_qty`` by one at
    ``level`` covering ``qty``: always when there is none yet or the quantity changed, else
    only tighter (a long's up, a short's down) by at least ``min_move_pct``."""
    if level is None:
        return False
    if current_price is None:
        return True
    if abs(qty - current_qty) > max(qty, current_qty) * QTY_RTOL:
        return True
    if side is SHORT:
        return level <= current_price * (1.0 - min_move_pct)
    return level >= current_price * (1.0 + min_move_pct)
