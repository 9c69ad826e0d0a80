"""Pre-trade limits (SPEC §3, §8): order sizing and the portfolio drawdown halt.

Workflow code: standard library and ``trading.models`` only, deterministic. Every limit is
applied here, before an order exists; nothing downstream widens it.

Sides: a quantity is always >= 0 and a position's direction travels beside it
(``PositionSide``, long when not given). Exposure is gross: a short's notional counts like a
long's (``position_exposure``, ``gross_exposure``), so shorts never make room for more longs
under ``max_exposure``; the position and cash caps size a short's notional as they size a
long's (at 1× a short's margin is its notional).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from trading.models import PositionSide


@dataclass(frozen=True)
class Sizing:
    """Size of one entry (or ADD). ``qty`` is not rounded to the exchange's step size:
    execution does that with the market's precision."""

    qty: float
    notional: float
    skipped_reason: str | None = None
    capped_by: str | None = None  # the limit that bound the size, if any


@dataclass(frozen=True)
class DrawdownState:
    peak: float
    drawdown: float  # fraction below the peak, >= 0
    halted: bool
    reason: str | None = None


def position_exposure(qty: float, price: float) -> float:
    """Gross exposure of one position: |qty| × price whatever its side (a short is exposure
    too, and a caller that signs a short's quantity still gets it right); 0 when the product
    is not a finite number."""
    value = qty * price
    return abs(value) if math.isfinite(value) else 0.0


def gross_exposure(legs: Iterable[tuple[float, float]]) -> float:
    """Sum of ``position_exposure`` over (qty, price) pairs: what ``exposure_value`` of
    ``size_entry`` / ``check_order`` means when some positions are short."""
    return math.fsum(position_exposure(qty, price) for qty, price in legs)


def _skip(reason: str, capped_by: str | None = None) -> Sizing:
    return Sizing(qty=0.0, notional=0.0, skipped_reason=reason, capped_by=capped_by)


def _finite(**values: float) -> str | None:
    bad = [k for k, v in values.items() if not isinstance(v, int | float) or not math.isfinite(v)]
    return f"invalid input: non-finite {', '.join(bad)}" if bad else None


_SIZE_INPUTS = (
    "portfolio_value",
    "cash",
    "exposure_value",
    "position_pct",
    "max_position_pct",
    "max_exposure",
    "price",
    "min_notional",
    "macro_scale",
    "existing_position_value",
    "fee_rate",
)


def size_entry(
    portfolio_value: float,
    cash: float,
    exposure_value: float,
    position_pct: float,
    max_position_pct: float,
    max_exposure: float,
    price: float,
    min_notional: float,
    macro_scale: float = 1.0,
    existing_position_value: float = 0.0,
    fee_rate: float = 0.001,
) -> Sizing:
    """Quantity to buy for ``position_pct`` of the portfolio, within every limit.

    Order: clamp position_pct to max_position_pct; × macro_scale; cap the position (existing
    value + this order) at max_position_pct of the portfolio; cap total exposure
    (``exposure_value``, which includes the existing position, + this order) at max_exposure;
    cap by cash less the fee; skip below min_notional. ``position_pct`` is the size of *this*
    order, so for an ADD it is the addition, not the target.
    """
    values = (
        portfolio_value,
        cash,
        exposure_value,
        position_pct,
        max_position_pct,
        max_exposure,
        price,
        min_notional,
        macro_scale,
        existing_position_value,
        fee_rate,
    )
    try:  # fast path (the backtester sizes thousands of orders): one sum of plain numbers
        ok = math.isfinite(math.fsum(values))
    except (TypeError, OverflowError, ValueError):
        ok = False
    if not ok:
        bad = _finite(**dict(zip(_SIZE_INPUTS, values, strict=True)))
        if bad:
            return _skip(bad)
    if portfolio_value <= 0 or price <= 0:
        return _skip("invalid input: portfolio value and price must be positive")
    if min(position_pct, max_position_pct, max_exposure, macro_scale, fee_rate) < 0:
        return _skip("invalid input: negative percentage, scale or fee")

    pct = min(position_pct, max_position_pct) * macro_scale
    notional, capped_by = portfolio_value * pct, None
    limits = (
        ("max_position_pct", max_position_pct * portfolio_value - existing_position_value),
        ("max_exposure", max_exposure * portfolio_value - exposure_value),
        ("cash", max(cash, 0.0) / (1.0 + fee_rate)),
    )
    for name, room in limits:
        if room < notional:
            notional, capped_by = max(room, 0.0), name
    if notional <= 0:
        reason = "zero size" if capped_by is None else f"no room under {capped_by}"
        return _skip(reason, capped_by)
    if notional < min_notional:
        bound = f" (bound by {capped_by})" if capped_by else ""
        return _skip(f"below min notional: {notional:.2f} < {min_notional:.2f}{bound}", capped_by)
    return Sizing(qty=notional / price, notional=notional, capped_by=capped_by)


def drawdown_update(
    peak_equity: float,
    equity: float,
    halt_pct: float,
    halted: bool,
    manual: bool = False,
) -> DrawdownState:
    """New peak, drawdown and halt state after an equity reading (SPEC §8).

    Halts at drawdown >= halt_pct. An automatic halt lifts once the drawdown is back below
    halt_pct / 2; a ``manual`` halt stays until the caller handles a ``resume`` signal.
    A non-finite equity changes nothing (the halt state is kept, with a reason).
    """
    if not math.isfinite(equity) or not math.isfinite(halt_pct) or halt_pct <= 0:
        dd = 0.0
        if math.isfinite(peak_equity) and peak_equity > 0 and math.isfinite(equity):
            dd = max(0.0, 1.0 - equity / peak_equity)
        return DrawdownState(peak_equity, dd, halted, "invalid input: state unchanged")
    peak = equity if not math.isfinite(peak_equity) else max(peak_equity, equity)
    drawdown = max(0.0, 1.0 - equity / peak) if peak > 0 else 1.0
    if drawdown >= halt_pct:
        return DrawdownState(peak, drawdown, True, f"drawdown {drawdown:.1%} >= {halt_pct:.1%}")
    if not halted:
        return DrawdownState(peak, drawdown, False, None)
    if manual:
        return DrawdownState(peak, drawdown, True, "manual halt: waiting for resume")
    if drawdown < halt_pct / 2:
        return DrawdownState(
            peak, drawdown, False, f"recovered: drawdown {drawdown:.1%} < {halt_pct / 2:.1%}"
        )
    return DrawdownState(
        peak, drawdown, True, f"halted until drawdown < {halt_pct / 2:.1%} (now {drawdown:.1%})"
    )


def cooloff_over(
    halted_since_ms: int | None, now_ms: int | None, cooloff_hours: float | None
) -> bool:
    """Whether an automatic drawdown halt has lasted its cool-off (opt-in; SPEC has none).

    SPEC §8 lifts a halt on ``resume`` or when the drawdown recovers below half the trigger;
    a flat, halted book cannot recover by itself, so without a cool-off it waits for a human.
    With one, the caller re-bases the peak at the current equity and trades again.
    """
    if cooloff_hours is None or halted_since_ms is None or now_ms is None:
        return False
    if not math.isfinite(cooloff_hours) or cooloff_hours < 0:
        return False
    return now_ms - halted_since_ms >= cooloff_hours * 3_600_000


# ---------------------------------------------------------------- pre-order check


@dataclass(frozen=True)
class RiskVerdict:
    """What may be sent for one decision. ``approved`` False → ``reason`` says which rule."""

    approved: bool
    action: str
    symbol: str
    qty: float = 0.0
    notional: float = 0.0
    reason: str | None = None
    capped_by: str | None = None  # the limit that bound an approved size, if any
    side: PositionSide = PositionSide.LONG  # the position's direction (orders: entry_side...)


def check_order(
    *,
    action: str,
    symbol: str,
    position_pct: float,
    price: float,
    portfolio_value: float,
    cash: float,
    exposure_value: float,
    position_qty: float,
    halted: bool,
    max_position_pct: float,
    max_exposure: float,
    min_notional: float,
    macro_scale: float = 1.0,
    fee_rate: float = 0.001,
    pending_add_notional: float = 0.0,
    side: PositionSide = PositionSide.LONG,
) -> RiskVerdict:
    """Every SPEC §8 limit on one order, before it is sent (SPEC §3 sizing for entries).

    ``position_qty`` is the quantity already held in ``symbol`` (0 = no position);
    ``exposure_value`` the market value of all positions, this one included;
    ``pending_add_notional`` an ADD of this position already sized and not yet filled (counted
    against cash, exposure and the position cap). Rules:

    * SELL: approved for the whole position whenever one exists, halted or not (exits never
      wait); without a position it is rejected.
    * BUY: rejected when a position is open (one position per symbol) or entries are halted.
    * ADD: rejected without a position or when halted; sized within the position cap and the
      exposure cap.
    * BUY and ADD sizes come from ``size_entry``: position_pct clamped to max_position_pct,
      × macro_scale, capped by position, exposure and cash net of the fee, min notional.
    * HOLD (or any other action) sends nothing.

    ``side`` is the direction of the position opened (BUY), held (ADD) or closed (SELL); the
    actions keep their meaning for a short: BUY opens it (a SELL order,
    ``PositionSide.entry_side``), SELL closes it (a BUY order, ``exit_side``). ``position_qty``
    stays >= 0 for a short too; a negative one with ``side`` short is refused outright.
    """
    side = PositionSide(side)
    act = str(action).upper()
    if side is PositionSide.SHORT and isinstance(position_qty, int | float) and position_qty < 0:
        reason = "invalid input: position_qty must be >= 0 (the side carries the direction)"
        return RiskVerdict(False, act, symbol, reason=reason, side=side)
    held = (
        isinstance(position_qty, int | float) and math.isfinite(position_qty) and position_qty > 0
    )
    if act == "SELL":
        if not held:
            return RiskVerdict(False, act, symbol, reason="no open position to sell", side=side)
        notional = position_qty * price if math.isfinite(price) and price > 0 else 0.0
        return RiskVerdict(True, act, symbol, qty=position_qty, notional=notional, side=side)
    if act not in ("BUY", "ADD"):
        return RiskVerdict(False, act, symbol, reason=f"{act}: nothing to send", side=side)
    if act == "BUY" and held:
        return RiskVerdict(
            False, act, symbol, reason="one position per symbol: already open", side=side
        )
    if act == "ADD" and not held:
        return RiskVerdict(False, act, symbol, reason="no open position to add to", side=side)
    if halted:
        return RiskVerdict(False, act, symbol, reason="entries halted (drawdown)", side=side)
    pending = pending_add_notional if act == "ADD" else 0.0
    existing = position_qty * price + pending if act == "ADD" else 0.0
    sizing = size_entry(
        portfolio_value=portfolio_value,
        cash=cash - pending,
        exposure_value=exposure_value + pending,
        position_pct=position_pct,
        max_position_pct=max_position_pct,
        max_exposure=max_exposure,
        price=price,
        min_notional=min_notional,
        macro_scale=macro_scale,
        existing_position_value=existing,
        fee_rate=fee_rate,
    )
    if sizing.skipped_reason:
        return RiskVerdict(
            False,
            act,
            symbol,
            reason=sizing.skipped_reason,
            capped_by=sizing.capped_by,
            side=side,
        )
    return RiskVerdict(
        True,
        act,
        symbol,
        qty=sizing.qty,
        notional=sizing.notional,
        capped_by=sizing.capped_by,
        side=side,
    )
