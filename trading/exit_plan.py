"""Exit plans (issue 15): every entry says where it is wrong, where it has worked, and what
would invalidate it.

An LLM's entry must carry a plan; the rule policy writes one from its own rules, so live
trading and the backtester run the same path. This module validates a proposed plan against
the price at decision time and the engine's limits, and tells a position when its plan's
conditions have fired. Pure and deterministic (standard library and ``trading.models``): the
PositionWorkflow runs ``invalidated`` and ``target_reached``.

The stop (long; a short mirrors every rule):

* below the price, else rejected ("wrong side");
* at least the minimum distance below it: ``max(MIN_STOP_ATR · ATR%, MIN_STOP_PCT)`` of the
  price, ATR(14) on the decision interval, but never more than the hard stop's distance (a
  wide ATR leaves the hard stop as the only stop). A stop inside it is rejected ("too close"):
  noise would take it out, and fees alone are 0.2 % a round trip;
* never further than the hard stop (``stop_loss_pct``, net of fees): a looser proposal is kept
  at the hard stop, with a note. The position's stop (the safety layer's and the exchange's)
  is then the plan's, converted to a net loss from the fill (``stop_loss_pct_for``).

The target: above the price by at least the minimum distance, else rejected. When the price
reaches it, the position's agent layer is asked at once (the trailing stop then protects the
gain; the plan does not sell by itself).

The invalidation: a condition in the wake-condition vocabulary on the entry's own symbol,
``<SYMBOL>:price`` (``lt`` for a long: a level below the price; checked on every safety
tick), ``<SYMBOL>:change_pct_1h`` or ``<SYMBOL>:volume_z`` (checked at each agent check on the
1h features). One already true at entry is rejected. When it fires the position's agent layer
is asked at once and the scorer exits ("plan_invalidated"); an LLM is told and decides.
"""

from __future__ import annotations

import math
from typing import Any

from trading.answer_values import finite_number, normalize_ticker
from trading.models import ExitPlan, PositionSide, SymbolFeatures, WakeCondition

MIN_STOP_ATR = 1.0  # the stop at least one ATR(14) of the decision interval from the price
MIN_STOP_PCT = 0.005  # ... and never closer than 0.5 %
PRICE_METRIC = "price"
FEATURE_METRICS = ("change_pct_1h", "volume_z")
PLAN_OPERATORS = ("lt", "gt", "crosses_below", "crosses_above")
REASON_MAX_CHARS = 160


def min_distance_pct(atr_pct: float | None) -> float:
    """The closest a stop or target may sit to the price, as a fraction of it."""
    atr = atr_pct if atr_pct is not None and math.isfinite(atr_pct) and atr_pct > 0 else 0.0
    return max(MIN_STOP_ATR * atr, MIN_STOP_PCT)


def hard_stop_price(
    price: float, stop_loss_pct: float, fee_rate: float, side: PositionSide
) -> float:
    """The price at which the hard stop (a net loss of ``stop_loss_pct``) fires."""
    k = (1.0 - fee_rate) / (1.0 + fee_rate)
    if side is PositionSide.SHORT:
        return price * (k + stop_loss_pct)
    return price * (1.0 - stop_loss_pct) / k


def _condition_operator(op: str, side: PositionSide) -> str:
    """A level crossed against the position: ``crosses_below`` is ``lt`` for a level the
    price starts above (it is not yet true at entry, so the first tick past it fires)."""
    return {"crosses_below": "lt", "crosses_above": "gt"}.get(op, op)


def _invalidation(
    raw: Any, symbol: str, price: float, features: dict[str, float], side: PositionSide
) -> WakeCondition | str:
    if not isinstance(raw, dict):
        return "invalidation is not an object"
    metric_raw = raw.get("metric")
    if not isinstance(metric_raw, str) or ":" not in metric_raw:
        return f"invalidation metric {str(metric_raw)[:40]!r} is not <SYMBOL>:<metric>"
    sym_raw, _, name = metric_raw.rpartition(":")
    if normalize_ticker(sym_raw, [symbol]) is None:
        return f"invalidation must watch {symbol} itself, not {sym_raw[:20]!r}"
    name = name.strip().lower()
    if name != PRICE_METRIC and name not in FEATURE_METRICS:
        allowed = ", ".join((PRICE_METRIC, *FEATURE_METRICS))
        return f"invalidation metric {name[:20]!r} is not one a position watches ({allowed})"
    op_raw = raw.get("operator")
    op = op_raw.strip().lower() if isinstance(op_raw, str) else None
    if op not in PLAN_OPERATORS:
        return (
            f"invalidation operator {str(op_raw)[:20]!r} is not one of {', '.join(PLAN_OPERATORS)}"
        )
    op = _condition_operator(op, side)
    threshold = finite_number(raw.get("threshold"))
    if threshold is None:
        return "invalidation threshold is not a finite number"
    if name == PRICE_METRIC:
        if threshold <= 0:
            return "invalidation price must be positive"
        against = "lt" if side is PositionSide.LONG else "gt"
        if op != against:
            return f"a {side.value}'s price invalidation is a level it falls past ({against})"
    current = price if name == PRICE_METRIC else features.get(name)
    if current is not None and _holds(op, current, threshold):
        return f"invalidation {name} {op} {threshold:g} is already true ({current:g})"
    reason = raw.get("reason")
    reason = reason[:REASON_MAX_CHARS] if isinstance(reason, str) else ""
    return WakeCondition(metric=f"{symbol}:{name}", operator=op, threshold=threshold, reason=reason)


def _holds(op: str, value: float, threshold: float) -> bool:
    return value < threshold if op == "lt" else value > threshold


def validate_plan(
    raw: Any,
    *,
    symbol: str,
    price: float,
    atr_pct: float | None,
    stop_loss_pct: float,
    fee_rate: float,
    side: PositionSide = PositionSide.LONG,
    features: dict[str, float] | None = None,
    source: str = "llm",
) -> ExitPlan | str:
    """The plan the engine keeps for an entry at ``price``, or why it is rejected."""
    if not isinstance(raw, dict):
        return "no exit plan (stop_price, target_price, invalidation)"
    if not math.isfinite(price) or price <= 0:
        return "no price to judge the exit plan by"
    sign = 1.0 if side is PositionSide.LONG else -1.0
    hard = hard_stop_price(price, stop_loss_pct, fee_rate, side)
    near = min_distance_pct(atr_pct)
    if stop_loss_pct > 0:  # a wide ATR never pushes the band past the hard stop: it then is it
        near = min(near, sign * (price - hard) / price)
    notes: list[str] = []
    stop = finite_number(raw.get("stop_price"))
    if stop is None or stop <= 0:
        return f"stop_price {str(raw.get('stop_price'))[:20]!r} is not a positive finite number"
    if sign * (price - stop) <= 0:
        return f"stop_price {stop:g} is on the wrong side of the price {price:g}"
    if sign * (price - stop) < near * price * (1 - 1e-9):
        return f"stop_price {stop:g} is too close to {price:g} (at least {near:.2%} away)"
    if stop_loss_pct > 0 and sign * (hard - stop) > 0:
        notes.append(f"stop_price {stop:g} beyond the hard stop: kept at {hard:.6g}")
        stop = hard
    target = finite_number(raw.get("target_price"))
    if target is None or target <= 0:
        return f"target_price {str(raw.get('target_price'))[:20]!r} is not a positive finite number"
    if sign * (target - price) <= 0:
        return f"target_price {target:g} is on the wrong side of the price {price:g}"
    if sign * (target - price) < near * price:
        return f"target_price {target:g} is too close to {price:g} (at least {near:.2%} away)"
    cond = _invalidation(raw.get("invalidation"), symbol, price, features or {}, side)
    if isinstance(cond, str):
        return cond
    return ExitPlan(
        stop_price=round(stop, 10),
        target_price=target,
        invalidation=cond,
        source=source,
        notes=notes,
    )


def stop_loss_pct_for(
    plan: ExitPlan,
    entry: float,
    fee_rate: float,
    hard_pct: float,
    side: PositionSide | None = None,
) -> float:
    """The position's stop as the net loss at the plan's stop from the actual ``entry`` (its
    fill), never looser than the hard stop nor tighter than a tick above zero. Without a
    ``side`` the stop's place says it (above the entry: a short's)."""
    k = (1.0 - fee_rate) / (1.0 + fee_rate)
    loss = 1.0 - k * plan.stop_price / entry  # long: net loss at the stop
    short = plan.stop_price > entry if side is None else PositionSide(side) is PositionSide.SHORT
    if short:  # a short's stop lies above
        loss = plan.stop_price / entry - k
    if not math.isfinite(loss):
        return hard_pct
    return min(hard_pct, max(1e-6, loss))


def plan_features(f: SymbolFeatures) -> dict[str, float]:
    """The feature values a plan's invalidation may watch, from the 1h features."""
    values = (("change_pct_1h", f.ret_1h), ("volume_z", f.volume_z))
    return {k: v for k, v in values if v is not None and math.isfinite(v)}


def _metric(cond: WakeCondition) -> str:
    return cond.metric.rpartition(":")[2]


def invalidated(plan: ExitPlan, price: float | None, features: dict[str, float] | None) -> bool:
    """Whether the plan's invalidation holds now: a price condition on ``price``, a feature
    condition on ``features`` (None: not known now, so not fired)."""
    cond = plan.invalidation
    name = _metric(cond)
    value = price if name == PRICE_METRIC else (features or {}).get(name)
    if value is None or not math.isfinite(value):
        return False
    return _holds(cond.operator, value, cond.threshold)


def target_reached(plan: ExitPlan, price: float, side: PositionSide = PositionSide.LONG) -> bool:
    if not math.isfinite(price):
        return False
    return price >= plan.target_price if side is PositionSide.LONG else price <= plan.target_price


def describe(plan: ExitPlan) -> str:
    """One line for the status, the Temporal UI and the journal."""
    c = plan.invalidation
    why = f" ({c.reason})" if c.reason else ""
    return (
        f"stop {plan.stop_price:.6g}, target {plan.target_price:.6g}, "
        f"invalid if {_metric(c)} {c.operator} {c.threshold:g}{why}"
    )


def rule_plan(
    symbol: str,
    price: float,
    *,
    atr_pct: float | None,
    ema21: float | None,
    stop_loss_pct: float,
    trail_activate_pct: float,
    fee_rate: float,
    side: PositionSide = PositionSide.LONG,
) -> ExitPlan | None:
    """The rule policy's plan (SPEC §7 rules; a short's mirrored): the hard stop, the target
    where its trailing stop takes over (``trail_activate_pct`` in the trade's favour), invalid
    once the trend's EMA21 at entry is lost (when it lies between the stop and the price; else
    the 1h change moving three ATRs against the trade). None when the rules leave no valid
    plan (no stop configured)."""
    side = PositionSide(side)
    long = side is PositionSide.LONG
    hard = hard_stop_price(price, stop_loss_pct, fee_rate, side)
    ema_between = (
        ema21 is not None
        and math.isfinite(ema21)
        and (hard < ema21 < price if long else price < ema21 < hard)
    )
    if ema_between:
        assert ema21 is not None
        invalid: dict[str, Any] = {
            "metric": f"{symbol}:price",
            "operator": "lt" if long else "gt",
            "threshold": round(ema21, 10),
            "reason": "the trend's EMA21 at entry lost",
        }
    else:
        atr = atr_pct if atr_pct is not None and math.isfinite(atr_pct) and atr_pct > 0 else 0.01
        invalid = {
            "metric": f"{symbol}:change_pct_1h",
            "operator": "lt" if long else "gt",
            "threshold": round((-3.0 if long else 3.0) * atr, 6),
            "reason": "a 1h fall of three ATRs" if long else "a 1h rise of three ATRs",
        }
    move = max(trail_activate_pct, min_distance_pct(atr_pct))
    target = price * (1.0 + move) if long else price * (1.0 - move)
    if target <= 0:
        return None
    got = validate_plan(
        {"stop_price": hard, "target_price": target, "invalidation": invalid},
        symbol=symbol,
        price=price,
        atr_pct=atr_pct,
        stop_loss_pct=stop_loss_pct,
        fee_rate=fee_rate,
        side=side,
        source="rule",
    )
    return got if isinstance(got, ExitPlan) else None
