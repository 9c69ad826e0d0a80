"""Exchange filters and rounding (issue 11, SPEC §9): exact, so no order is sent to be rejected.

``MarketRules`` holds a symbol's Binance filters (LOT_SIZE, MARKET_LOT_SIZE, PRICE_FILTER,
NOTIONAL / MIN_NOTIONAL), read from a ccxt unified market (``MarketRules.from_ccxt_market``)
for spot and USDⓈ-M futures. The functions round quantities and prices to them and check an
order before it is sent; ``check_order`` names the filter that fails, so the broker skips the
order with that reason instead of collecting a -1013 / -4164.

Exact arithmetic: floats at the boundary, ``decimal.Decimal`` inside. A float is read through
its shortest repr (``0.1`` is ``Decimal("0.1")``, ``0.1 + 0.2`` is
``Decimal("0.30000000000000004")``), and every result is a float whose repr is the decimal on
the grid (``0.3``, never ``0.30000000000000004``), which ccxt and the venue read back exactly.

Float slack: a quantity or a stop level arrives computed in floats (cash × pct / price,
entry × (1 − stop)) and may sit a few ulps beside the grid point it means (``0.7 - 0.4`` is
``0.29999999999999993``). Within ``FLOAT_SLACK`` (1e-12, relative) of a grid point it *is*
that point; anything farther is rounded in the safe direction. The slack is thousands of ulps
and far below any real step (BTC's 0.00001 step is 1e-9 of a 9,000 BTC order). The
marketable limit price takes no slack: it is computed here, exactly, from the last price and
the cap, and rounded strictly so it never passes the cap.

Pure: standard library and pydantic only (workflow code may import it). Binance's precision
mode is TICK_SIZE: ``market['precision']`` holds the step and the tick themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from math import lcm
from typing import Any, Literal

from pydantic import ConfigDict, Field

from trading.models import Model, Side

FLOAT_SLACK = Decimal("1e-12")

MarketType = Literal["spot", "futures"]


class MarketRules(Model):
    """One symbol's trading filters. ``None`` (or a venue's 0) means "no such limit".

    ``step_size`` / ``min_qty`` / ``max_qty``: LOT_SIZE, every order. ``market_*``:
    MARKET_LOT_SIZE, market orders on top of LOT_SIZE (spot reports a 0 step: none).
    ``tick_size`` / ``min_price`` / ``max_price``: PRICE_FILTER, for limit and stop prices.
    ``min_notional`` / ``max_notional``: spot NOTIONAL (or the older MIN_NOTIONAL), futures
    MIN_NOTIONAL, with whether they apply to market orders (spot ``applyMinToMarket`` /
    ``applyToMarket``, ``applyMaxToMarket``; futures: always the min). ``notional_filter``
    names the filter for reasons.
    """

    model_config = ConfigDict(frozen=True)

    symbol: str = Field(min_length=1)  # unified: "BTC/USDT", "BTC/USDT:USDT"
    market_type: MarketType = "spot"
    base: str = Field(min_length=1)
    quote: str = Field(min_length=1)
    step_size: float = Field(gt=0)
    min_qty: float = Field(default=0.0, ge=0)
    max_qty: float | None = Field(default=None, gt=0)
    market_step_size: float | None = Field(default=None, gt=0)
    market_min_qty: float | None = Field(default=None, ge=0)
    market_max_qty: float | None = Field(default=None, gt=0)
    tick_size: float = Field(gt=0)
    min_price: float | None = Field(default=None, gt=0)
    max_price: float | None = Field(default=None, gt=0)
    min_notional: float | None = Field(default=None, gt=0)
    min_notional_applies_to_market: bool = True
    max_notional: float | None = Field(default=None, gt=0)
    max_notional_applies_to_market: bool = False
    notional_filter: str = "NOTIONAL"

    @classmethod
    def from_ccxt_market(cls, market: Mapping[str, Any]) -> MarketRules:
        """Rules of a ccxt unified market (``exchange.market(symbol)`` after
        ``load_markets``): Binance's raw filters in ``market['info']['filters']`` when present
        (they carry what the unified fields drop: ``applyMinToMarket``, the market step),
        otherwise ``market['precision']`` (TICK_SIZE mode) and ``market['limits']``. Spot
        and USDⓈ-M (linear) futures; anything else is a ``ValueError``."""
        symbol = market.get("symbol") or ""
        if market.get("spot"):
            market_type: MarketType = "spot"
        elif (market.get("swap") or market.get("future")) and market.get("linear"):
            market_type = "futures"
        else:
            raise ValueError(f"{symbol or market!r}: only spot and USDⓈ-M futures markets")
        info = market.get("info") or {}
        filters = {f.get("filterType"): f for f in info.get("filters") or [] if isinstance(f, dict)}
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}

        def limit(name: str, bound: str) -> float | None:
            return _positive((limits.get(name) or {}).get(bound))

        lot = filters.get("LOT_SIZE")
        mlot = filters.get("MARKET_LOT_SIZE")
        price = filters.get("PRICE_FILTER")
        step = _positive(lot["stepSize"] if lot else precision.get("amount"))
        tick = _positive(price["tickSize"] if price else precision.get("price"))
        if step is None or tick is None:
            raise ValueError(f"{symbol}: no step size or tick size in the market")
        fields: dict[str, Any] = dict(
            symbol=symbol,
            market_type=market_type,
            base=market.get("base") or info.get("baseAsset"),
            quote=market.get("quote") or info.get("quoteAsset"),
            step_size=step,
            min_qty=_positive(lot.get("minQty")) if lot else limit("amount", "min"),
            max_qty=_positive(lot.get("maxQty")) if lot else limit("amount", "max"),
            market_step_size=_positive(mlot.get("stepSize")) if mlot else None,
            market_min_qty=_positive(mlot.get("minQty")) if mlot else limit("market", "min"),
            market_max_qty=_positive(mlot.get("maxQty")) if mlot else limit("market", "max"),
            tick_size=tick,
            min_price=_positive(price.get("minPrice")) if price else limit("price", "min"),
            max_price=_positive(price.get("maxPrice")) if price else limit("price", "max"),
        )
        fields.update(_notional(filters, market_type, limit))
        fields["min_qty"] = fields["min_qty"] or 0.0
        return cls(**fields)


def _positive(value: Any) -> float | None:
    """A venue number (string or number) as a float; absent, 0 or negative is no limit."""
    if value is None or value == "":
        return None
    x = float(value)
    return x if x > 0 else None


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _notional(filters: Mapping[str, Any], market_type: MarketType, limit: Any) -> dict[str, Any]:
    if market_type == "spot" and "NOTIONAL" in filters:
        f = filters["NOTIONAL"]
        return dict(
            min_notional=_positive(f.get("minNotional")),
            min_notional_applies_to_market=_flag(f.get("applyMinToMarket"), True),
            max_notional=_positive(f.get("maxNotional")),
            max_notional_applies_to_market=_flag(f.get("applyMaxToMarket"), False),
            notional_filter="NOTIONAL",
        )
    if "MIN_NOTIONAL" in filters:
        f = filters["MIN_NOTIONAL"]  # spot's older form: minNotional; futures: notional
        return dict(
            min_notional=_positive(f.get("minNotional", f.get("notional"))),
            min_notional_applies_to_market=_flag(f.get("applyToMarket"), True),
            notional_filter="MIN_NOTIONAL",
        )
    return dict(
        min_notional=limit("cost", "min"),
        max_notional=limit("cost", "max"),
        notional_filter="NOTIONAL" if market_type == "spot" else "MIN_NOTIONAL",
    )


# ---------------------------------------------------------------- exact rounding


def _d(x: float | int | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(repr(float(x)))


def _to_grid(value: Decimal, step: Decimal, rounding: str, slack: bool) -> Decimal:
    """``value`` on the grid of ``step``, rounded ``ROUND_FLOOR`` or ``ROUND_CEILING``; with
    ``slack``, a value within FLOAT_SLACK (relative) of a grid point is that point."""
    units = value / step
    if slack:
        nearest = units.to_integral_value()
        if abs(units - nearest) * step <= abs(value) * FLOAT_SLACK:
            return nearest * step
    return units.to_integral_value(rounding=rounding) * step


def _step_lcm(a: Decimal, b: Decimal) -> Decimal:
    """The coarsest grid on which a quantity fits both steps (equal steps: that step)."""
    exp = min(a.as_tuple().exponent, b.as_tuple().exponent, 0)
    scale = Decimal(10) ** -exp
    return Decimal(lcm(int(a * scale), int(b * scale))) / scale


def _qty_step(rules: MarketRules, is_market: bool) -> Decimal:
    step = _d(rules.step_size)
    if is_market and rules.market_step_size is not None:
        step = _step_lcm(step, _d(rules.market_step_size))
    return step


def _float(x: Decimal) -> float:
    return float(x)


def round_qty(qty: float, rules: MarketRules, *, is_market: bool = False) -> float:
    """``qty`` floored to the step size (and to MARKET_LOT_SIZE's step for a market order),
    never up beyond a float's slack: 0.30000000000000004 and 0.29999999999999993 are 0.3 on a
    0.1 step, 0.2999999 is 0.2."""
    return _float(_to_grid(_d(qty), _qty_step(rules, is_market), ROUND_FLOOR, slack=True))


def round_price(price: float, rules: MarketRules, *, up: bool = False) -> float:
    """``price`` on the tick, down (or up), within a float's slack of a tick it is that tick."""
    rounding = ROUND_CEILING if up else ROUND_FLOOR
    return _float(_to_grid(_d(price), _d(rules.tick_size), rounding, slack=True))


def marketable_limit_price(last: float, side: Side, cap_pct: float, rules: MarketRules) -> float:
    """Limit price of a marketable IOC order: BUY at last·(1+cap) rounded DOWN to the tick,
    SELL at last·(1−cap) rounded UP, computed exactly so it never passes the cap."""
    if not last > 0 or not 0 <= cap_pct < 1:
        raise ValueError(f"need last > 0 and 0 <= cap_pct < 1, got {last}, {cap_pct}")
    one, cap = Decimal(1), _d(cap_pct)
    if side == Side.BUY:
        return _float(_to_grid(_d(last) * (one + cap), _d(rules.tick_size), ROUND_FLOOR, False))
    return _float(_to_grid(_d(last) * (one - cap), _d(rules.tick_size), ROUND_CEILING, False))


def stop_price(level: float, rules: MarketRules, side: Side = Side.SELL) -> float:
    """Trigger price of a protective stop at ``level``: a SELL stop (under a long) rounded
    DOWN to the tick, so it is never above the intended level; a BUY stop (over a short)
    rounded UP. A level a float's slack off a tick is that tick."""
    return round_price(level, rules, up=side == Side.BUY)


def stop_limit_price(
    stop: float, rules: MarketRules, side: Side = Side.SELL, offset_pct: float = 0.01
) -> float:
    """Limit price of a stop-limit (spot STOP_LOSS_LIMIT) triggered at ``stop``: a SELL
    ``offset_pct`` below it rounded DOWN, and at least one tick below; a BUY above it,
    rounded UP, at least one tick above. The 1 % default follows freqtrade's
    ``stoploss_on_exchange_limit_ratio`` 0.99: room to fill in a fast fall."""
    if not 0 <= offset_pct < 1:
        raise ValueError(f"offset_pct must lie in [0, 1), got {offset_pct}")
    tick, s, off = _d(rules.tick_size), _d(stop), _d(offset_pct)
    if side == Side.SELL:
        price = min(_to_grid(s * (1 - off), tick, ROUND_FLOOR, False), s - tick)
        if price <= 0:
            raise ValueError(f"stop {stop} leaves no room for a limit below it")
        return _float(price)
    return _float(max(_to_grid(s * (1 + off), tick, ROUND_CEILING, False), s + tick))


def decimal_str(x: float | Decimal) -> str:
    """Plain decimal text of a rounded value (``1e-05`` -> ``"0.00001"``), for a venue."""
    return format(_d(x).normalize(), "f")


# ---------------------------------------------------------------- the check


class OrderCheck(Model):
    """Result of ``check_order``: ``ok`` or the ``reason`` naming the failed ``filter``
    ("LOT_SIZE", "MARKET_LOT_SIZE", "PRICE_FILTER", "NOTIONAL" / "MIN_NOTIONAL", "INPUT").
    ``qty`` / ``price`` are what to send (rounded); ``notional`` is their product."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    reason: str = ""
    filter: str | None = None
    qty: float = 0.0
    price: float = 0.0
    stop_price: float | None = None
    notional: float = 0.0


def check_order(
    side: Side,
    qty: float,
    price: float,
    rules: MarketRules,
    is_market: bool,
    *,
    stop_price: float | None = None,
    reduce_only: bool = False,
) -> OrderCheck:
    """Round ``qty`` (and a limit ``price``) to the market and check every filter.

    ``qty`` is floored to the step. For a limit order ``price`` is the limit: rounded to the
    tick towards the better side (a BUY down, a SELL up), so the order never pays past what
    was asked; ``stop_price`` is rounded as ``stop_price()`` does (a SELL stop down, a BUY
    stop up); PRICE_FILTER applies to both. For a market order ``price`` is the reference
    price the notional is estimated with (Binance spot uses a 5-minute average for market
    orders, futures the mark price: pass a cautious one near a limit) and is returned as
    given. Futures exempt reduce-only orders from MIN_NOTIONAL (-4164 says so).
    """
    bad = [n for n, v in (("qty", qty), ("price", price)) if not (v > 0 and v < float("inf"))]
    if stop_price is not None and not (0 < stop_price < float("inf")):
        bad.append("stop_price")
    if bad:
        return OrderCheck(ok=False, filter="INPUT", reason=f"INPUT: invalid {', '.join(bad)}")
    q = _to_grid(_d(qty), _qty_step(rules, is_market), ROUND_FLOOR, slack=True)
    if is_market:
        p = _d(price)
    else:
        p = _to_grid(_d(price), _d(rules.tick_size), _limit_rounding(side), slack=True)
    sp = None
    if stop_price is not None:  # as stop_price() rounds it: a SELL stop down, a BUY stop up
        rounding = ROUND_CEILING if side == Side.BUY else ROUND_FLOOR
        sp = _to_grid(_d(stop_price), _d(rules.tick_size), rounding, slack=True)
    result = dict(qty=_float(q), price=_float(p), notional=_float(q * p))
    result["stop_price"] = None if sp is None else _float(sp)

    def fail(filter_: str, reason: str) -> OrderCheck:
        return OrderCheck(ok=False, filter=filter_, reason=f"{filter_}: {reason}", **result)

    why = _qty_failure(qty, q, rules, is_market)
    if why:
        return fail(*why)
    if not is_market:
        why = _price_failure("price", p, rules)
        if why:
            return fail("PRICE_FILTER", why)
    if sp is not None:
        why = _price_failure("stop price", sp, rules)
        if why:
            return fail("PRICE_FILTER", why)
    notional = q * p
    exempt = rules.market_type == "futures" and reduce_only
    min_n, max_n = rules.min_notional, rules.max_notional
    applies_min = min_n and not exempt and (not is_market or rules.min_notional_applies_to_market)
    if applies_min and notional < _d(min_n):
        return fail(
            rules.notional_filter,
            f"notional {decimal_str(notional)} ({decimal_str(q)} x {decimal_str(p)}) "
            f"below minNotional {decimal_str(min_n)}",
        )
    applies_max = max_n and (not is_market or rules.max_notional_applies_to_market)
    if applies_max and notional > _d(max_n):
        return fail(
            rules.notional_filter,
            f"notional {decimal_str(notional)} above maxNotional {decimal_str(max_n)}",
        )
    return OrderCheck(ok=True, **result)


def _limit_rounding(side: Side) -> str:
    return ROUND_FLOOR if side == Side.BUY else ROUND_CEILING


def _qty_failure(
    asked: float, q: Decimal, rules: MarketRules, is_market: bool
) -> tuple[str, str] | None:
    step = _qty_step(rules, is_market)
    if q <= 0:
        return "LOT_SIZE", f"qty {decimal_str(asked)} rounds to 0 at stepSize {decimal_str(step)}"
    if rules.min_qty and q < _d(rules.min_qty):
        return "LOT_SIZE", f"qty {decimal_str(q)} below minQty {decimal_str(rules.min_qty)}"
    if rules.max_qty and q > _d(rules.max_qty):
        return "LOT_SIZE", f"qty {decimal_str(q)} above maxQty {decimal_str(rules.max_qty)}"
    if is_market:
        if rules.market_min_qty and q < _d(rules.market_min_qty):
            return (
                "MARKET_LOT_SIZE",
                f"qty {decimal_str(q)} below minQty {decimal_str(rules.market_min_qty)}",
            )
        if rules.market_max_qty and q > _d(rules.market_max_qty):
            return (
                "MARKET_LOT_SIZE",
                f"qty {decimal_str(q)} above maxQty {decimal_str(rules.market_max_qty)}",
            )
    return None


def _price_failure(name: str, p: Decimal, rules: MarketRules) -> str | None:
    if p <= 0:
        return f"{name} rounds to 0 at tickSize {decimal_str(rules.tick_size)}"
    if rules.min_price and p < _d(rules.min_price):
        return f"{name} {decimal_str(p)} below minPrice {decimal_str(rules.min_price)}"
    if rules.max_price and p > _d(rules.max_price):
        return f"{name} {decimal_str(p)} above maxPrice {decimal_str(rules.max_price)}"
    return None
