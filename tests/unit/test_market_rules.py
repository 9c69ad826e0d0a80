"""Exchange filters and exact rounding (trading/market_rules.py).

The markets are Binance exchangeInfo entries as the venue returns them, parsed by ccxt's own
``binance.parse_market`` (no network), so ``from_ccxt_market`` reads the very shape the
broker gets from ``load_markets``.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from pydantic import ValidationError

from trading.market_rules import (
    MarketRules,
    check_order,
    decimal_str,
    marketable_limit_price,
    round_price,
    round_qty,
    stop_limit_price,
    stop_price,
)
from trading.models import Side

BUY, SELL = Side.BUY, Side.SELL


def _spot(symbol: str, base: str, price: tuple, lot: tuple, market_max: str, **notional) -> dict:
    notional_filter = notional or {
        "filterType": "NOTIONAL",
        "minNotional": "5.00000000",
        "applyMinToMarket": True,
        "maxNotional": "9000000.00000000",
        "applyMaxToMarket": False,
        "avgPriceMins": 5,
    }
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": "USDT",
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "permissions": [],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": price[0],
                "maxPrice": price[1],
                "tickSize": price[2],
            },
            {"filterType": "LOT_SIZE", "minQty": lot[0], "maxQty": lot[1], "stepSize": lot[2]},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": market_max,
                "stepSize": "0.00000000",
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            notional_filter,
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
    }


def _futures(symbol: str, base: str, price: tuple, lot: tuple, market: tuple, notional: str):
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "filters": [
            {
                "minPrice": price[0],
                "maxPrice": price[1],
                "filterType": "PRICE_FILTER",
                "tickSize": price[2],
            },
            {"stepSize": lot[2], "filterType": "LOT_SIZE", "maxQty": lot[1], "minQty": lot[0]},
            {
                "stepSize": market[2],
                "filterType": "MARKET_LOT_SIZE",
                "maxQty": market[1],
                "minQty": market[0],
            },
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
            {"notional": notional, "filterType": "MIN_NOTIONAL"},
            {
                "multiplierDown": "0.9500",
                "multiplierUp": "1.0500",
                "multiplierDecimal": "4",
                "filterType": "PERCENT_PRICE",
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


RAW = {
    "BTC/USDT": _spot(
        "BTCUSDT",
        "BTC",
        ("0.01000000", "1000000.00000000", "0.01000000"),
        ("0.00001000", "9000.00000000", "0.00001000"),
        "83.59250366",
    ),
    "ETH/USDT": _spot(
        "ETHUSDT",
        "ETH",
        ("0.01000000", "1000000.00000000", "0.01000000"),
        ("0.00010000", "9000.00000000", "0.00010000"),
        "2426.50463736",
    ),
    "SOL/USDT": _spot(
        "SOLUSDT",
        "SOL",
        ("0.01000000", "10000.00000000", "0.01000000"),
        ("0.00100000", "9000000.00000000", "0.00100000"),
        "35000.00000000",
    ),
    "BTC/USDT:USDT": _futures(
        "BTCUSDT",
        "BTC",
        ("261.10", "809484", "0.10"),
        ("0.001", "1000", "0.001"),
        ("0.001", "120", "0.001"),
        "100",
    ),
    "ETH/USDT:USDT": _futures(
        "ETHUSDT",
        "ETH",
        ("39.86", "306177", "0.01"),
        ("0.001", "10000", "0.001"),
        ("0.001", "2000", "0.001"),
        "20",
    ),
    "SOL/USDT:USDT": _futures(
        "SOLUSDT",
        "SOL",
        ("0.4200", "6857", "0.0100"),
        ("1", "1000000", "1"),
        ("1", "5000", "1"),
        "5",
    ),
}


@pytest.fixture(scope="module")
def markets() -> dict[str, dict[str, Any]]:
    ex = ccxt.binance({"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}})
    parsed = {sym: ex.parse_market(raw) for sym, raw in RAW.items()}
    assert all(m["symbol"] == sym for sym, m in parsed.items())
    return parsed


@pytest.fixture(scope="module")
def rules(markets: dict[str, dict[str, Any]]) -> dict[str, MarketRules]:
    return {sym: MarketRules.from_ccxt_market(m) for sym, m in markets.items()}


def simple(step: float = 0.1, tick: float = 0.01, **kw: Any) -> MarketRules:
    return MarketRules(
        symbol="X/USDT", base="X", quote="USDT", step_size=step, tick_size=tick, **kw
    )


# ---------------------------------------------------------------- rules from ccxt markets


def test_spot_rules_from_ccxt_market(rules: dict[str, MarketRules]) -> None:
    btc = rules["BTC/USDT"]
    assert btc.model_dump() == dict(
        symbol="BTC/USDT",
        market_type="spot",
        base="BTC",
        quote="USDT",
        step_size=0.00001,
        min_qty=0.00001,
        max_qty=9000.0,
        market_step_size=None,  # spot reports a 0 step: no MARKET_LOT_SIZE step
        market_min_qty=None,
        market_max_qty=83.59250366,
        tick_size=0.01,
        min_price=0.01,
        max_price=1_000_000.0,
        min_notional=5.0,
        min_notional_applies_to_market=True,
        max_notional=9_000_000.0,
        max_notional_applies_to_market=False,
        notional_filter="NOTIONAL",
    )
    assert (rules["ETH/USDT"].step_size, rules["SOL/USDT"].step_size) == (0.0001, 0.001)
    assert rules["SOL/USDT"].max_price == 10_000.0


def test_futures_rules_from_ccxt_market(rules: dict[str, MarketRules]) -> None:
    btc = rules["BTC/USDT:USDT"]
    assert btc.model_dump() == dict(
        symbol="BTC/USDT:USDT",
        market_type="futures",
        base="BTC",
        quote="USDT",
        step_size=0.001,
        min_qty=0.001,
        max_qty=1000.0,
        market_step_size=0.001,
        market_min_qty=0.001,
        market_max_qty=120.0,
        tick_size=0.1,
        min_price=261.1,
        max_price=809_484.0,
        min_notional=100.0,
        min_notional_applies_to_market=True,
        max_notional=None,
        max_notional_applies_to_market=False,
        notional_filter="MIN_NOTIONAL",
    )
    sol = rules["SOL/USDT:USDT"]
    assert (sol.step_size, sol.min_qty, sol.tick_size, sol.min_notional) == (1.0, 1.0, 0.01, 5.0)
    assert rules["ETH/USDT:USDT"].min_notional == 20.0


def test_rules_from_unified_fields_when_info_has_no_filters(
    markets: dict[str, dict[str, Any]], rules: dict[str, MarketRules]
) -> None:
    for sym, market in markets.items():
        bare = {**market, "info": {}}
        got = MarketRules.from_ccxt_market(bare)
        want = rules[sym].model_copy(update={"market_step_size": None})  # only in the filters
        assert got == want, sym


def test_older_spot_min_notional_filter_with_apply_to_market_false() -> None:
    raw = _spot(
        "BNBUSDT",
        "BNB",
        ("0.10000000", "100000.00000000", "0.10000000"),
        ("0.00100000", "900000.00000000", "0.00100000"),
        "100000.00000000",
        filterType="MIN_NOTIONAL",
        minNotional="10.00000000",
        applyToMarket=False,
        avgPriceMins=5,
    )
    ex = ccxt.binance({"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}})
    r = MarketRules.from_ccxt_market(ex.parse_market(raw))
    assert (r.min_notional, r.min_notional_applies_to_market, r.notional_filter) == (
        10.0,
        False,
        "MIN_NOTIONAL",
    )
    assert check_order(BUY, 0.01, 600.0, r, is_market=True).ok  # 6 USDT, market: not applied
    limit = check_order(BUY, 0.01, 600.0, r, is_market=False)
    assert not limit.ok and limit.filter == "MIN_NOTIONAL"


def test_unsupported_or_incomplete_markets_are_refused(markets: dict[str, dict]) -> None:
    inverse = {**markets["BTC/USDT:USDT"], "linear": False, "inverse": True}
    with pytest.raises(ValueError, match="only spot and USDⓈ-M"):
        MarketRules.from_ccxt_market(inverse)
    no_step = {**markets["BTC/USDT"], "info": {}, "precision": {"amount": None, "price": 0.01}}
    with pytest.raises(ValueError, match="no step size"):
        MarketRules.from_ccxt_market(no_step)
    with pytest.raises(ValidationError):
        simple(step=0.0)


# ---------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("qty", "step", "want"),
    [
        (0.3, 0.1, 0.3),  # exactly on a step
        (math.nextafter(0.3, 0), 0.1, 0.3),  # 1 ulp below: the float meant 0.3
        (0.7 - 0.4, 0.1, 0.3),  # 0.29999999999999993: naive floor gives 0.2
        (0.1 + 0.2, 0.1, 0.3),  # 0.30000000000000004: naive floor keeps the tail
        (0.3 - 1e-9, 0.1, 0.2),  # a real shortfall floors
        (0.00012, 0.00001, 0.00012),
        (math.nextafter(0.00012, 0), 0.00001, 0.00012),
        (0.000129999, 0.00001, 0.00012),
        (0.123456789, 0.00001, 0.12345),
        (8999.999999, 0.00001, 8999.99999),
        (0.1 + 0.2, 0.00001, 0.3),
        (12.9999, 1.0, 12.0),
        (13 - 1e-15, 1.0, 13.0),
        (0.000009, 0.00001, 0.0),
    ],
)
def test_round_qty_floors_to_the_step_exactly(qty: float, step: float, want: float) -> None:
    got = round_qty(qty, simple(step=step))
    assert got == want and repr(got) == repr(want)


def test_naive_float_flooring_fails_where_round_qty_does_not() -> None:
    assert math.floor((0.7 - 0.4) / 0.1) * 0.1 == 0.2
    assert math.floor((0.1 + 0.2) / 0.1) * 0.1 == 0.30000000000000004
    assert round_qty(0.7 - 0.4, simple()) == round_qty(0.1 + 0.2, simple()) == 0.3


def test_market_orders_also_fit_the_market_lot_step() -> None:
    r = simple(step=0.001, market_step_size=0.01)
    assert round_qty(0.129, r) == 0.129
    assert round_qty(0.129, r, is_market=True) == 0.12
    odd = simple(step=0.002, market_step_size=0.003)  # both grids: multiples of 0.006
    assert round_qty(0.0119, odd, is_market=True) == 0.006


def test_real_steps(rules: dict[str, MarketRules]) -> None:
    assert round_qty(0.0153846153, rules["BTC/USDT"]) == 0.01538
    assert round_qty(0.0153846153, rules["BTC/USDT:USDT"]) == 0.015
    assert round_qty(0.5714285714, rules["ETH/USDT"]) == 0.5714
    assert round_qty(13.7931034, rules["SOL/USDT"]) == 13.793
    assert round_qty(13.7931034, rules["SOL/USDT:USDT"]) == 13.0


# ---------------------------------------------------------------- prices


def test_marketable_limit_price_on_a_cent_tick(rules: dict[str, MarketRules]) -> None:
    btc = rules["BTC/USDT"]
    assert marketable_limit_price(65000.12, BUY, 0.001, btc) == 65065.12  # 65065.12012 down
    assert marketable_limit_price(65000.12, SELL, 0.001, btc) == 64935.12  # 64935.11988 up
    assert 65000.0 * 1.001 == 65064.99999999999  # the float product misses the tick...
    assert marketable_limit_price(65000.0, BUY, 0.001, btc) == 65065.0  # ...the exact one not
    assert marketable_limit_price(65000.0, BUY, 0.0, btc) == 65000.0


def test_marketable_limit_price_on_a_dime_tick(rules: dict[str, MarketRules]) -> None:
    fut = rules["BTC/USDT:USDT"]
    assert marketable_limit_price(65000.1, BUY, 0.001, fut) == 65065.1  # 65065.1001
    assert marketable_limit_price(65000.1, SELL, 0.001, fut) == 64935.1  # 64935.0999
    assert marketable_limit_price(65000.0, SELL, 0.0015, fut) == 64902.5  # exactly on a tick


@pytest.mark.parametrize("tick", [0.01, 0.1, 0.0001, 1.0])
def test_marketable_limit_price_never_passes_the_cap(tick: float) -> None:
    rng = random.Random(11)
    r = simple(tick=tick)
    t = Decimal(repr(tick))
    for _ in range(500):
        last = round(rng.uniform(1, 100_000), 2)
        cap = rng.choice([0.001, 0.002, 0.005, 0.0005])
        lo = Decimal(repr(last)) * (1 - Decimal(repr(cap)))
        hi = Decimal(repr(last)) * (1 + Decimal(repr(cap)))
        buy = Decimal(repr(marketable_limit_price(last, BUY, cap, r)))
        sell = Decimal(repr(marketable_limit_price(last, SELL, cap, r)))
        assert hi - t < buy <= hi and buy % t == 0
        assert lo <= sell < lo + t and sell % t == 0


def test_marketable_limit_price_refuses_bad_inputs(rules: dict[str, MarketRules]) -> None:
    for last, cap in ((0.0, 0.001), (100.0, -0.1), (100.0, 1.0), (float("nan"), 0.001)):
        with pytest.raises(ValueError):
            marketable_limit_price(last, BUY, cap, rules["BTC/USDT"])


def test_stop_price_is_never_above_the_intended_level(rules: dict[str, MarketRules]) -> None:
    r = simple(tick=0.01)
    assert stop_price(96.0, r) == 96.0
    assert stop_price(95.995, r) == 95.99
    assert stop_price(28.999, r) == 28.99
    assert 0.29 * 100 == 28.999999999999996  # entry 100, a level computed in floats
    assert stop_price(0.29 * 100, r) == 29.0  # a float's slack below a tick is that tick
    assert stop_price(61234.56, rules["BTC/USDT:USDT"]) == 61234.5
    assert stop_price(95.991, r, side=BUY) == 96.0  # a short's stop: never below the level


def test_stop_limit_price_lies_below_the_stop() -> None:
    r = simple(tick=0.01)
    assert stop_limit_price(96.0, r) == 95.04
    assert stop_limit_price(96.0, r, offset_pct=0.0) == 95.99  # at least one tick below
    assert stop_limit_price(1.0, r, offset_pct=0.0001) == 0.99
    assert stop_limit_price(96.0, r, side=BUY) == 96.96
    assert stop_limit_price(96.0, r, side=BUY, offset_pct=0.0) == 96.01
    with pytest.raises(ValueError, match="no room"):
        stop_limit_price(0.01, r)


def test_round_price_and_decimal_str() -> None:
    r = simple(tick=0.01)
    assert round_price(100.019, r) == 100.01 and round_price(100.011, r, up=True) == 100.02
    assert round_price(100.00999999999999, r) == 100.01  # slack
    assert decimal_str(1e-05) == "0.00001"
    assert decimal_str(65065.1) == "65065.1"
    assert decimal_str(100.0) == "100"
    assert decimal_str(round_qty(0.1 + 0.2, simple(step=0.00001))) == "0.3"


# ---------------------------------------------------------------- check_order


def test_check_order_passes_a_sound_order(rules: dict[str, MarketRules]) -> None:
    btc = rules["BTC/USDT"]
    limit = marketable_limit_price(65000.12, BUY, 0.001, btc)
    c = check_order(BUY, 1000 / 65000.12, limit, btc, is_market=False)
    assert (c.ok, c.reason, c.filter, c.qty, c.price) == (True, "", None, 0.01538, 65065.12)
    assert c.notional == pytest.approx(0.01538 * 65065.12, rel=1e-12)


def test_check_order_rounds_a_limit_to_the_better_side() -> None:
    r = simple(step=0.1, tick=0.01)
    assert check_order(BUY, 0.1 + 0.2, 100.019, r, is_market=False).price == 100.01
    assert check_order(SELL, 0.1 + 0.2, 100.011, r, is_market=False).price == 100.02
    c = check_order(BUY, 0.1 + 0.2, 100.019, r, is_market=True)
    assert (c.qty, c.price) == (0.3, 100.019)  # a market order's price is only a reference


@pytest.mark.parametrize(
    ("symbol", "side", "qty", "price", "is_market", "kw", "filter_", "words"),
    [
        # NOTIONAL min: 0.00007 BTC at 65 000 is 4.55 USDT
        ("BTC/USDT", BUY, 0.00007, 65000.0, False, {}, "NOTIONAL", "below minNotional 5"),
        ("BTC/USDT", BUY, 0.00007, 65000.0, True, {}, "NOTIONAL", "4.55"),
        ("SOL/USDT", SELL, 0.03, 150.0, True, {"reduce_only": True}, "NOTIONAL", "4.5"),
        # futures MIN_NOTIONAL 100: 0.001 BTC at 65 000 is 65 USDT
        ("BTC/USDT:USDT", BUY, 0.001, 65000.0, True, {}, "MIN_NOTIONAL", "below minNotional 100"),
        ("ETH/USDT:USDT", BUY, 0.005, 3500.0, False, {}, "MIN_NOTIONAL", "minNotional 20"),
        # LOT_SIZE: below one step, below the minimum, above the maximum
        ("ETH/USDT", BUY, 0.00005, 3500.0, False, {}, "LOT_SIZE", "rounds to 0 at stepSize"),
        ("BTC/USDT:USDT", SELL, 0.0009, 65000.0, True, {}, "LOT_SIZE", "stepSize 0.001"),
        ("SOL/USDT:USDT", BUY, 0.9, 150.0, True, {}, "LOT_SIZE", "rounds to 0"),
        ("SOL/USDT", BUY, 9_000_001, 1.0, False, {}, "LOT_SIZE", "above maxQty 9000000"),
        # MARKET_LOT_SIZE: market orders only
        ("BTC/USDT", BUY, 100.0, 65000.0, True, {}, "MARKET_LOT_SIZE", "above maxQty 83.59"),
        ("BTC/USDT:USDT", SELL, 150.0, 65000.0, True, {}, "MARKET_LOT_SIZE", "maxQty 120"),
        # PRICE_FILTER on the limit and on the stop
        ("BTC/USDT:USDT", BUY, 1.0, 200.0, False, {}, "PRICE_FILTER", "below minPrice 261.1"),
        ("SOL/USDT", SELL, 1.0, 10_001.0, False, {}, "PRICE_FILTER", "above maxPrice 10000"),
        (
            "BTC/USDT:USDT",
            SELL,
            1.0,
            200.0,
            True,
            {"stop_price": 250.0, "reduce_only": True},
            "PRICE_FILTER",
            "stop price 250 below minPrice",
        ),
        # NOTIONAL max applies to limit orders only on spot (applyMaxToMarket false)
        ("ETH/USDT", BUY, 3000.0, 3500.0, False, {}, "NOTIONAL", "above maxNotional 9000000"),
        # inputs
        ("BTC/USDT", BUY, float("nan"), 65000.0, False, {}, "INPUT", "invalid qty"),
        ("BTC/USDT", BUY, 0.01, 0.0, True, {}, "INPUT", "invalid price"),
    ],
)
def test_check_order_names_the_filter_that_fails(
    rules: dict[str, MarketRules],
    symbol: str,
    side: Side,
    qty: float,
    price: float,
    is_market: bool,
    kw: dict[str, Any],
    filter_: str,
    words: str,
) -> None:
    c = check_order(side, qty, price, rules[symbol], is_market, **kw)
    assert not c.ok and c.filter == filter_
    assert c.reason.startswith(filter_) and words in c.reason, c.reason


def test_limits_that_do_not_apply(rules: dict[str, MarketRules]) -> None:
    fut = rules["BTC/USDT:USDT"]
    # a reduce-only futures exit below MIN_NOTIONAL is allowed (and must be: it closes)
    exit_ = check_order(SELL, 0.001, 65000.0, fut, is_market=True, reduce_only=True)
    assert exit_.ok and exit_.notional == 65.0
    # 150 BTC is too much for a futures market order, not for a limit one
    assert check_order(BUY, 150.0, 65000.0, fut, is_market=False).ok
    # spot's maxNotional does not apply to market orders there
    assert check_order(BUY, 2400.0, 3900.0, rules["ETH/USDT"], is_market=True).ok
    # exactly at the minimum notional passes
    assert check_order(BUY, 0.001, 5000.0, rules["SOL/USDT"], is_market=False).ok


def test_a_min_qty_above_one_step() -> None:
    r = simple(step=0.0001, min_qty=0.001)
    c = check_order(BUY, 0.00057, 100.0, r, is_market=False)
    assert (c.ok, c.filter, c.qty) == (False, "LOT_SIZE", 0.0005)
    assert "qty 0.0005 below minQty 0.001" in c.reason


def test_check_order_rounds_the_stop_like_stop_price(rules: dict[str, MarketRules]) -> None:
    spot = rules["SOL/USDT"]
    stop = 150.0 * (1 - 0.04)  # 144.0 in floats
    c = check_order(
        SELL, 1.2345, stop_limit_price(stop, spot), spot, is_market=False, stop_price=stop - 0.005
    )
    assert c.ok and (c.qty, c.stop_price, c.price) == (1.234, 143.99, 142.56)
