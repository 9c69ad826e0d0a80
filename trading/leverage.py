"""Leverage and liquidation of USDⓈ-M linear perpetuals (isolated margin), before an entry.

The stop must fire before the exchange liquidates: a liquidation loses the isolated margin and
pays the liquidation fee, whatever the safety layer would have done. This module says where the
liquidation price lies and refuses an entry whose loss exit does not sit in front of it.

Liquidation price (Binance, isolated margin, one-way mode, one position): the position is
liquidated when its margin balance falls to the maintenance margin on the mark price,
``WB + side·Q·(LP - EP) = Q·LP·MMR + cum``, i.e.

    LP = (WB + cum - side·Q·EP) / (Q·MMR - side·Q)        side = +1 long, -1 short

with WB the isolated wallet balance, Q the size, EP the entry price, MMR the maintenance
margin rate and cum the maintenance amount of the notional's tier. Simplified here: WB is the
initial margin ``Q·EP / L`` (no fees, no funding, no margin added), cum = 0 (the lowest tier,
where Binance's maintenance amount is 0), so

* long:  ``LP = EP · (1 - 1/L) / (1 - MMR)`` — <= 0 at 1×: a 1× long cannot be liquidated;
* short: ``LP = EP · (1 + 1/L) / (1 + MMR)`` — at 1× about 2·EP less the maintenance margin
  (1.9920·EP at MMR 0.4 %).

What the simplification leaves out moves the real price towards the entry (funding paid and
fees come out of the isolated margin; the mark price can run ahead of the last price the
safety layer sees, and a check comes only every 30 s): ``buffer`` keeps the stop that far in
front of it, as a fraction of the entry.

``DEFAULT_MMR`` is BTCUSDT's lowest tier (0.4 %); other symbols and larger notionals have
higher rates: pass the symbol's own (GET /fapi/v1/leverageBracket). Pure and deterministic.
"""

from __future__ import annotations

import math

from trading.limits import HARD_MAX_LEVERAGE
from trading.models import PositionParams, PositionSide
from trading.safety import price_at_pnl

DEFAULT_MMR = 0.004  # Binance USDⓈ-M BTCUSDT, lowest notional tier (maintenance amount 0)
DEFAULT_LIQUIDATION_BUFFER = 0.01  # the stop at least 1 % of the entry in front of liquidation


def check_leverage(
    leverage: float, max_leverage: float = HARD_MAX_LEVERAGE
) -> tuple[bool, str | None]:
    """Whether ``leverage`` is allowed: finite, >= 1, within the setting's ``max_leverage``
    (the account's ``OCW_FUTURES_LEVERAGE``) and never above ``HARD_MAX_LEVERAGE``."""
    if not isinstance(leverage, int | float) or not math.isfinite(leverage) or leverage < 1:
        return False, f"invalid leverage {leverage!r}: it must be a finite number >= 1"
    finite_cap = isinstance(max_leverage, int | float) and math.isfinite(max_leverage)
    cap = min(max_leverage, HARD_MAX_LEVERAGE) if finite_cap else HARD_MAX_LEVERAGE
    if leverage > cap:
        which = "the hard maximum" if cap == HARD_MAX_LEVERAGE else "max_leverage"
        return False, f"leverage {leverage:g}x is above {which} of {cap:g}x"
    return True, None


def liquidation_price(
    side: PositionSide,
    entry: float,
    leverage: float,
    maintenance_margin_rate: float = DEFAULT_MMR,
) -> float | None:
    """The isolated position's liquidation price (module docstring: the simplified Binance
    formula); None when there is none (a long at 1×). Raises ValueError on inputs no position
    has (entry <= 0, leverage < 1, a rate outside [0, 1))."""
    if not math.isfinite(entry) or entry <= 0:
        raise ValueError(f"entry must be a positive finite price, got {entry!r}")
    if not math.isfinite(leverage) or leverage < 1:
        raise ValueError(f"leverage must be a finite number >= 1, got {leverage!r}")
    mmr = maintenance_margin_rate
    if not math.isfinite(mmr) or not 0 <= mmr < 1:
        raise ValueError(f"maintenance margin rate must lie in [0, 1), got {mmr!r}")
    if PositionSide(side) is PositionSide.SHORT:
        return entry * (1.0 + 1.0 / leverage) / (1.0 + mmr)
    price = entry * (1.0 - 1.0 / leverage) / (1.0 - mmr)
    return price if price > 0 else None


def loss_exit_price(side: PositionSide, entry: float, params: PositionParams) -> float | None:
    """Where the safety layer's first loss exit fires on an adverse move: the stop loss or the
    drawdown guard, whichever lies nearer the entry (both net of fees); None when both are
    off. This is the ``stop_price`` to hold against the liquidation price."""
    side = PositionSide(side)
    pcts = [p for p in (params.stop_loss_pct, params.max_drawdown_guard_pct) if p > 0]
    if not pcts:
        return None
    levels = [price_at_pnl(entry, -p, params.fee_rate, side=side) for p in pcts]
    return min(levels) if side is PositionSide.SHORT else max(levels)


def liquidation_distance_ok(
    side: PositionSide,
    entry: float,
    stop_price: float | None,
    leverage: float,
    maintenance_margin_rate: float = DEFAULT_MMR,
    buffer: float = DEFAULT_LIQUIDATION_BUFFER,
    *,
    max_leverage: float = HARD_MAX_LEVERAGE,
) -> tuple[bool, str | None]:
    """Whether an entry may be sent: the leverage is allowed (``check_leverage``) and the stop
    triggers before liquidation, at least ``buffer · entry`` in front of it (a long's stop
    above the liquidation price, a short's below). A position without a stop (None) passes
    only when it cannot be liquidated. Returns (ok, reason when refused)."""
    side = PositionSide(side)
    ok, reason = check_leverage(leverage, max_leverage)
    if not ok:
        return False, reason
    if not math.isfinite(entry) or entry <= 0:
        return False, f"invalid entry price {entry!r}"
    if not math.isfinite(buffer) or buffer < 0:
        return False, f"invalid liquidation buffer {buffer!r}"
    try:
        liq = liquidation_price(side, entry, leverage, maintenance_margin_rate)
    except ValueError as exc:
        return False, str(exc)
    if stop_price is None:
        if liq is None:
            return True, None
        return False, f"no stop in front of the liquidation price {liq:.6g}"
    if not math.isfinite(stop_price) or stop_price <= 0:
        return False, f"invalid stop price {stop_price!r}"
    if side is PositionSide.LONG and stop_price >= entry:
        return False, f"a long's stop {stop_price:.6g} must lie below its entry {entry:.6g}"
    if side is PositionSide.SHORT and stop_price <= entry:
        return False, f"a short's stop {stop_price:.6g} must lie above its entry {entry:.6g}"
    if liq is None:
        return True, None
    gap = stop_price - liq if side is PositionSide.LONG else liq - stop_price
    if gap <= 0:
        return False, (
            f"{side.value} at {leverage:g}x: liquidation at {liq:.6g} comes before "
            f"the stop at {stop_price:.6g}"
        )
    if gap < buffer * entry:
        return False, (
            f"{side.value} at {leverage:g}x: liquidation at {liq:.6g} is within "
            f"{buffer:.2%} of the entry of the stop at {stop_price:.6g}"
        )
    return True, None
