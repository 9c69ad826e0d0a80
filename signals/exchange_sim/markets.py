"""Trading rules per symbol: the filters ``exchangeInfo`` publishes and every order must pass.

Spot publishes PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and NOTIONAL (the filter that replaced
MIN_NOTIONAL on spot in 2023) and answers a failure with -1013 ``Filter failure: <NAME>``.
USDⓈ-M futures publishes PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and MIN_NOTIONAL and answers
with its own codes (-1111 precision, -4014 tick, -4023 step, -4004/-4005 quantity bounds,
-4013/-4002 price bounds, -4164 notional unless reduce-only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from signals.exchange_sim.errors import BinanceError, filter_failure
from signals.exchange_sim.numbers import ZERO, dec, fmt, is_multiple, places_of

SPOT_ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
FUTURES_ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's filters; any field accepts float, str or Decimal (stored as Decimal)."""

    tick_size: Decimal = Decimal("0.01")
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    market_step_size: Decimal = Decimal("0.00001")
    market_min_qty: Decimal = Decimal("0")
    market_max_qty: Decimal = Decimal("1000")
    min_notional: Decimal = Decimal("5")
    max_notional: Decimal = Decimal("9000000")
    apply_min_to_market: bool = True
    max_leverage: int = 125
    maint_margin_ratio: Decimal = Decimal("0.004")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("Decimal", Decimal) and not isinstance(value, Decimal):
                object.__setattr__(self, f.name, dec(value))

    @classmethod
    def spot(cls, **overrides: Any) -> SymbolRules:
        """Binance spot BTCUSDT-like defaults."""
        return cls(**overrides)

    @classmethod
    def futures(cls, **overrides: Any) -> SymbolRules:
        """Binance USDⓈ-M BTCUSDT-like defaults (tick 0.10, step 0.001, notional 100)."""
        base: dict[str, Any] = {
            "tick_size": Decimal("0.10"),
            "min_price": Decimal("0.10"),
            "max_price": Decimal("4529764"),
            "step_size": Decimal("0.001"),
            "min_qty": Decimal("0.001"),
            "max_qty": Decimal("1000"),
            "market_step_size": Decimal("0.001"),
            "market_min_qty": Decimal("0.001"),
            "market_max_qty": Decimal("120"),
            "min_notional": Decimal("100"),
        }
        base.update(overrides)
        return cls(**base)

    @property
    def price_places(self) -> int:
        return places_of(self.tick_size)

    @property
    def qty_places(self) -> int:
        return places_of(self.step_size)


@dataclass(frozen=True)
class Market:
    """A listed symbol: exchange id (``BTCUSDT``), unified name, assets and rules."""

    id: str
    symbol: str  # unified, "BTC/USDT"
    base: str
    quote: str
    rules: SymbolRules


def make_market(symbol: str, rules: SymbolRules) -> Market:
    base, quote = symbol.split("/")
    return Market(id=f"{base}{quote}".upper(), symbol=symbol, base=base, quote=quote, rules=rules)


# ---------------------------------------------------------------- exchangeInfo payloads


def _spot_filters(r: SymbolRules) -> list[dict[str, Any]]:
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": fmt(r.min_price),
            "maxPrice": fmt(r.max_price),
            "tickSize": fmt(r.tick_size),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": fmt(r.min_qty),
            "maxQty": fmt(r.max_qty),
            "stepSize": fmt(r.step_size),
        },
        {
            "filterType": "MARKET_LOT_SIZE",
            "minQty": fmt(r.market_min_qty),
            "maxQty": fmt(r.market_max_qty),
            "stepSize": fmt(r.market_step_size),
        },
        {
            "filterType": "NOTIONAL",
            "minNotional": fmt(r.min_notional),
            "applyMinToMarket": r.apply_min_to_market,
            "maxNotional": fmt(r.max_notional),
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
    ]


def spot_symbol_info(m: Market) -> dict[str, Any]:
    return {
        "symbol": m.id,
        "status": "TRADING",
        "baseAsset": m.base,
        "baseAssetPrecision": 8,
        "quoteAsset": m.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": SPOT_ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": _spot_filters(m.rules),
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def futures_symbol_info(m: Market) -> dict[str, Any]:
    r = m.rules
    return {
        "symbol": m.id,
        "pair": m.id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
        "marginAsset": m.quote,
        "pricePrecision": r.price_places,
        "quantityPrecision": r.qty_places,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(r.min_price, r.price_places),
                "maxPrice": fmt(r.max_price, r.price_places),
                "tickSize": fmt(r.tick_size, r.price_places),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(r.min_qty, r.qty_places),
                "maxQty": fmt(r.max_qty, r.qty_places),
                "stepSize": fmt(r.step_size, r.qty_places),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt(r.market_min_qty, r.qty_places),
                "maxQty": fmt(r.market_max_qty, r.qty_places),
                "stepSize": fmt(r.market_step_size, r.qty_places),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": fmt(r.min_notional, 0)},
        ],
        "orderTypes": FUTURES_ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def exchange_info(symbols: list[dict[str, Any]], futures: bool, now_ms: int | None = None) -> dict:
    limit = 2400 if futures else 6000
    info: dict[str, Any] = {
        "timezone": "UTC",
        "serverTime": now_ms if now_ms is not None else int(time.time() * 1000),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }
    if futures:
        info["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}]
        info["futuresType"] = "U_MARGINED"
    return info


# ---------------------------------------------------------------- filter checks


def check_spot(
    r: SymbolRules,
    *,
    price: Decimal | None,
    stop_price: Decimal | None,
    qty: Decimal | None,
    is_market: bool,
    notional_price: Decimal | None,
    quote_qty: Decimal | None = None,
) -> None:
    """Raise -1013 naming the first filter the order fails, as spot does."""
    for p in (price, stop_price):
        if p is not None and (
            p < r.min_price or p > r.max_price or not is_multiple(p, r.tick_size, r.min_price)
        ):
            raise filter_failure("PRICE_FILTER")
    if qty is not None:
        if qty < r.min_qty or qty > r.max_qty or not is_multiple(qty, r.step_size, r.min_qty):
            raise filter_failure("LOT_SIZE")
        if is_market and (
            qty < r.market_min_qty
            or qty > r.market_max_qty
            or not is_multiple(qty, r.market_step_size)
        ):
            raise filter_failure("MARKET_LOT_SIZE")
    notional = quote_qty
    if notional is None and qty is not None and notional_price is not None:
        notional = qty * notional_price
    if notional is not None:
        if (not is_market or r.apply_min_to_market) and notional < r.min_notional:
            raise filter_failure("NOTIONAL")
        if not is_market and notional > r.max_notional:
            raise filter_failure("NOTIONAL")


def _precision(value: Decimal, places: int) -> bool:
    return -int(value.normalize().as_tuple().exponent) <= places


def check_futures(
    r: SymbolRules,
    *,
    price: Decimal | None,
    stop_price: Decimal | None,
    qty: Decimal | None,
    is_market: bool,
    reduce_only: bool,
    notional_price: Decimal | None,
) -> None:
    """Raise the USDⓈ-M error for the first rule the order breaks."""
    for p in (price, stop_price):
        if p is None:
            continue
        if not _precision(p, r.price_places):
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if p < r.min_price:
            raise BinanceError(-4013, "Price less than min price.")
        if p > r.max_price:
            raise BinanceError(-4002, "Price greater than max price.")
        if not is_multiple(p, r.tick_size, r.min_price):
            raise BinanceError(-4014, "Price not increased by tick size.")
    if qty is not None:
        if not _precision(qty, r.qty_places):
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if qty <= ZERO:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        low, high = (r.market_min_qty, r.market_max_qty) if is_market else (r.min_qty, r.max_qty)
        if qty < low:
            raise BinanceError(-4004, "Quantity less than min quantity.")
        if qty > high:
            raise BinanceError(-4005, "Quantity greater than max quantity.")
        if not is_multiple(qty, r.step_size):
            raise BinanceError(-4023, "Qty not increased by step size.")
        if notional_price is not None and not reduce_only and qty * notional_price < r.min_notional:
            raise BinanceError(
                -4164,
                f"Order's notional must be no smaller than {fmt(r.min_notional, 0)} "
                "(unless you choose reduce only).",
            )
