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

Workflow code: standard library and ``trading.models`` only.
"""

from __future__ import annotations

from trading.models import PositionParams
from trading.safety import check_safety

MIN_MOVE_PCT = 0.002  # 0.2 % of the stop price
QTY_RTOL = 1e-9


def stop_loss_level(entry_price: float, params: PositionParams) -> float | None:
    """The price where net PnL reaches ``-stop_loss_pct``; None when the stop loss is off."""
    if params.stop_loss_pct <= 0 or entry_price <= 0:
        return None
    fee = params.fee_rate
    return entry_price * (1.0 + fee) * (1.0 - params.stop_loss_pct) / (1.0 - fee)


def stop_level(
    entry_price: float, peak_price: float, price: float, params: PositionParams
) -> float | None:
    """The exchange-side stop's level for a long: the stop loss or the active trail,
    whichever is higher; None when neither applies."""
    levels = []
    loss = stop_loss_level(entry_price, params)
    if loss is not None:
        levels.append(loss)
    trail = check_safety(entry_price, peak_price, price, params, 0.0).trail_price
    if trail is not None:
        levels.append(trail)
    return max(levels) if levels else None


def should_move(
    current_price: float | None,
    current_qty: float,
    level: float | None,
    qty: float,
    min_move_pct: float = MIN_MOVE_PCT,
) -> bool:
    """Whether to replace the stop at ``current_price`` covering ``current_qty`` by one at
    ``level`` covering ``qty``: always when there is none yet or the quantity changed, else
    only upwards by at least ``min_move_pct``."""
    if level is None:
        return False
    if current_price is None:
        return True
    if abs(qty - current_qty) > max(qty, current_qty) * QTY_RTOL:
        return True
    return level >= current_price * (1.0 + min_move_pct)
