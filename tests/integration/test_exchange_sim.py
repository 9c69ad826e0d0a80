"""The real ccxt Binance client trades against the local exchange (signals/exchange_sim).

Spot through ``ccxt.async_support.binance``, USDⓈ-M through ``binanceusdm``, both configured
only by ``ccxt_overrides``. Every fault is checked the way a real client meets it: the exception
ccxt raises, and what the exchange's own ledger says happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from signals.exchange_sim import (
    ExchangeSim,
    FaultKind,
    SymbolRules,
    bars_price_source,
    ccxt_overrides,
)
from signals.exchange_sim.auth import sign
from tests.integration.exchange_fixtures import BTC, fresh, sim
from trading.models import Bar

pytestmark = pytest.mark.integration

__all__ = ["fresh", "sim"]  # the shared exchange fixtures (exchange_fixtures.py)
PERP = "BTC/USDT:USDT"
D = Decimal


def client(sim: ExchangeSim, market: str = "spot", **config: Any) -> Any:
    cls = ccxt.binance if market == "spot" else ccxt.binanceusdm
    base = {
        "apiKey": sim.api_key,
        "secret": sim.secret,
        "enableRateLimit": False,
        "timeout": 3000,
        "timeout_on_exit": 0,  # ccxt sleeps 250 ms on close for TLS; plain http needs none
        **ccxt_overrides(sim.base_url, market),  # type: ignore[arg-type]
    }
    options = {**base["options"], **config.pop("options", {})}
    return cls({**base, **config, "options": options})


@pytest.fixture
async def spot(sim: ExchangeSim) -> AsyncIterator[Any]:
    exchange = client(sim)
    await exchange.load_markets()
    try:
        yield exchange
    finally:
        await exchange.close()


@pytest.fixture
async def usdm(sim: ExchangeSim) -> AsyncIterator[Any]:
    exchange = client(sim, "futures")
    await exchange.load_markets()
    try:
        yield exchange
    finally:
        await exchange.close()


# ---------------------------------------------------------------- spot


async def test_spot_markets_orders_trades_and_balances(sim: ExchangeSim, spot: Any) -> None:
    market = spot.market(BTC)
    assert market["precision"]["amount"] == 0.00001 and market["precision"]["price"] == 0.01
    assert market["limits"]["cost"]["min"] == 5.0

    bought = await spot.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "p1-1"})
    assert (bought["status"], bought["filled"], bought["average"]) == ("closed", 0.01, 50_000)
    assert bought["fee"] == {"currency": "USDT", "cost": 0.5}  # 0.1 % of 500, in the quote asset

    looked_up = await spot.fetch_order(None, BTC, {"clientOrderId": "p1-1"})
    assert looked_up["id"] == bought["id"] and looked_up["status"] == "closed"
    trades = await spot.fetch_my_trades(BTC)
    assert [(t["order"], t["amount"], t["price"], t["side"]) for t in trades] == [
        (bought["id"], 0.01, 50_000, "buy")
    ]
    assert str(sim.ledger["p1-1"][0].trade_id) == trades[0]["id"]

    resting = await spot.create_order(BTC, "limit", "buy", 0.01, 49_000, {"clientOrderId": "p1-2"})
    assert resting["status"] == "open"
    balance = await spot.fetch_balance()
    assert balance["BTC"]["free"] == 0.01
    assert balance["USDT"]["used"] == pytest.approx(490.49)  # 490 + fee, locked
    assert balance["USDT"]["total"] == pytest.approx(10_000 - 500.5)
    assert balance["USDT"]["free"] == pytest.approx(10_000 - 500.5 - 490.49)
    assert [o["clientOrderId"] for o in await spot.fetch_open_orders(BTC)] == ["p1-2"]

    ack = await spot.create_order(BTC, "limit", "sell", 0.005, 60_000, {"newOrderRespType": "ACK"})
    assert ack["status"] is None and ack["id"]  # ACK: ids only
    await spot.cancel_order(ack["id"], BTC)
    by_cost = await spot.create_market_buy_order_with_cost(BTC, 100)  # quoteOrderQty
    assert (by_cost["cost"], by_cost["filled"]) == (100, 0.002)

    cancelled = await spot.cancel_order(resting["id"], BTC)
    assert cancelled["status"] == "canceled"
    assert (await spot.fetch_balance())["USDT"]["used"] == 0
    assert await spot.fetch_open_orders(BTC) == []
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        await spot.cancel_order(resting["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        await spot.fetch_order(None, BTC, {"clientOrderId": "never-sent"})


async def test_signed_requests_are_checked_like_binance(sim: ExchangeSim) -> None:
    cases = [
        ({"secret": "x" * 64}, ccxt.AuthenticationError, "-1022"),
        ({"apiKey": "A" * 64}, ccxt.AuthenticationError, "-2015"),
        ({"apiKey": "too-short"}, ccxt.AuthenticationError, "-2014"),
        ({"options": {"timeDifference": 70_000}}, ccxt.InvalidNonce, "-1021"),  # 70 s stale
        ({"options": {"timeDifference": -5_000}}, ccxt.InvalidNonce, "ahead"),
        # ccxt maps -1131 to BadRequest on spot only; through fapi it stays an ExchangeError
        ({"options": {"recvWindow": 70_000}}, ccxt.ExchangeError, "-1131"),
    ]
    for config, error, code in cases:
        for market in ("spot", "futures"):
            exchange = client(sim, market, **config)
            try:
                await exchange.load_markets()
                with pytest.raises(error, match=code):
                    await exchange.fetch_balance()
            finally:
                await exchange.close()
    assert sim.ledger.fills == []


async def test_recv_window_gives_slack_to_a_slow_clock(sim: ExchangeSim) -> None:
    exchange = client(sim, options={"timeDifference": 8_000, "recvWindow": 10_000})
    try:
        await exchange.load_markets()
        assert (await exchange.fetch_balance())["USDT"]["free"] == 10_000
    finally:
        await exchange.close()


async def test_duplicate_open_client_id_is_refused_but_reuse_after_fill_is_not(
    sim: ExchangeSim, spot: Any, usdm: Any
) -> None:
    await spot.create_order(BTC, "limit", "buy", 0.01, 40_000, {"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await spot.create_order(BTC, "limit", "buy", 0.01, 41_000, {"clientOrderId": "dup-1"})

    first = await spot.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "re-1"})
    second = await spot.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": "re-1"})
    assert first["id"] != second["id"]  # Binance keeps client ids unique among open orders only
    assert sim.ledger.order_ids("re-1") == {int(first["id"]), int(second["id"])}
    assert (await spot.fetch_order(None, BTC, {"clientOrderId": "re-1"}))["id"] == second["id"]

    await usdm.create_order(PERP, "limit", "buy", 0.01, 40_000, {"clientOrderId": "fdup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        await usdm.create_order(PERP, "limit", "buy", 0.01, 40_000, {"clientOrderId": "fdup-1"})


async def test_client_order_id_rules(sim: ExchangeSim, spot: Any, usdm: Any) -> None:
    for bad in ("has.dot-1", "x" * 37):
        with pytest.raises(ccxt.BadRequest, match="-1100"):
            await spot.create_order(BTC, "market", "buy", 0.001, None, {"clientOrderId": bad})
    with pytest.raises(ccxt.BadRequest, match="-4015"):
        await usdm.create_order(PERP, "market", "buy", 0.01, None, {"clientOrderId": "y" * 37})
    ok = await usdm.create_order(PERP, "market", "buy", 0.01, None, {"clientOrderId": "a.b:c/d-1"})
    assert ok["clientOrderId"] == "a.b:c/d-1"  # USDⓈ-M allows . : / as documented


async def test_filters_and_balance_rejections(sim: ExchangeSim, spot: Any) -> None:
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        await spot.create_order(BTC, "limit", "buy", 0.00001, 40_000)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        await spot.create_order(BTC, "limit", "buy", 10_000, 1)
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        await spot.create_order(BTC, "market", "buy", 1, None)
    with pytest.raises(ccxt.InsufficientFunds):
        await spot.create_order(BTC, "market", "sell", 0.01, None)
    with pytest.raises(ccxt.BadRequest, match="-1102"):
        await spot.privatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT"})
    assert sim.ledger.fills == [] and sim.spot.open_orders(None) == []


async def test_ioc_fills_what_is_marketable_and_expires_the_rest(
    sim: ExchangeSim, spot: Any
) -> None:
    sim.max_fill_qty = 0.004
    order = await spot.create_order(
        BTC, "limit", "buy", 0.01, 50_100, {"timeInForce": "IOC", "clientOrderId": "ioc-1"}
    )
    assert (order["status"], order["filled"], order["average"]) == ("expired", 0.004, 50_000)
    assert [f.qty for f in sim.ledger["ioc-1"]] == [D("0.004")]
    away = await spot.create_order(BTC, "limit", "buy", 0.01, 49_000, {"timeInForce": "IOC"})
    assert (away["status"], away["filled"]) == ("expired", 0)
    assert (await spot.fetch_balance())["USDT"]["used"] == 0  # nothing left locked


async def test_slippage_moves_takers_against_them_within_their_limit(
    sim: ExchangeSim, spot: Any
) -> None:
    sim.slippage = 0.001
    buy = await spot.create_order(BTC, "market", "buy", 0.01, None)
    sell = await spot.create_order(BTC, "market", "sell", 0.01, None)
    capped = await spot.create_order(BTC, "limit", "buy", 0.01, 50_020, {"timeInForce": "IOC"})
    assert (buy["average"], sell["average"], capped["average"]) == (50_050, 49_950, 50_020)


async def test_gtc_partial_fills_continue_on_later_matches(sim: ExchangeSim, spot: Any) -> None:
    sim.max_fill_qty = 0.004
    order = await spot.create_order(BTC, "limit", "buy", 0.01, 50_000, {"clientOrderId": "gtc-p"})
    assert (order["status"], order["filled"]) == ("open", 0.004)
    assert (await spot.fetch_order(order["id"], BTC))["filled"] == 0.008  # each request matches
    done = await spot.fetch_order(order["id"], BTC)
    assert (done["status"], done["filled"]) == ("closed", 0.01)
    assert [f.qty for f in sim.ledger["gtc-p"]] == [D("0.004"), D("0.004"), D("0.002")]
    assert [f.is_maker for f in sim.ledger["gtc-p"]] == [False, True, True]


async def test_gtc_rests_and_fills_at_its_price_when_the_market_crosses(
    sim: ExchangeSim, spot: Any
) -> None:
    order = await spot.create_order(BTC, "limit", "buy", 0.02, 48_000, {"clientOrderId": "g-1"})
    sim.set_price(BTC, 48_500)
    assert (await spot.fetch_order(order["id"], BTC))["status"] == "open"
    sim.set_price(BTC, 47_900)  # the move itself matches, before any request
    assert [(f.price, f.qty, f.is_maker) for f in sim.ledger["g-1"]] == [
        (D("48000"), D("0.02"), True)
    ]
    filled = await spot.fetch_order(order["id"], BTC)
    assert (filled["status"], filled["average"]) == ("closed", 48_000)


async def test_prices_come_from_the_price_source() -> None:
    timeline = {"price": 100.0, "t": 1_700_000_000_000}

    def feed(symbol: str) -> tuple[float, int] | None:
        return (timeline["price"], timeline["t"]) if symbol == "SOL/USDT" else None

    rules = {"SOL/USDT": SymbolRules.spot(step_size="0.001", min_qty="0.001")}
    async with ExchangeSim(["SOL/USDT"], price_source=feed, spot_rules=rules) as sim:
        exchange = client(sim)
        try:
            await exchange.load_markets()
            order = await exchange.create_order(
                "SOL/USDT", "limit", "buy", 1, 95, {"clientOrderId": "src-1"}
            )
            assert order["status"] == "open"
            timeline.update(price=94.5, t=1_700_000_060_000)
            closed = await exchange.fetch_order(order["id"], "SOL/USDT")
            assert closed["status"] == "closed" and closed["average"] == 95
            assert sim.ledger["src-1"][0].market_time_ms == 1_700_000_060_000
            ticker = await exchange.fetch_ticker("SOL/USDT")
            assert ticker["last"] == 94.5
            sell = await exchange.create_order("SOL/USDT", "limit", "sell", 1, 99)
            timeline.update(price=99.5, t=1_700_000_120_000)
            await asyncio.sleep(0.2)  # no request: the poller sees the move and matches
            assert [f.price for f in sim.ledger if f.order_id == int(sell["id"])] == [D("99")]
        finally:
            await exchange.close()


def test_bars_price_source_follows_the_replay_path() -> None:
    h = 3_600_000
    bar = Bar(
        symbol=BTC,
        interval="1h",
        open_time=h,
        close_time=2 * h - 1,
        open=100.0,
        high=110.0,
        low=90.0,
        close=105.0,
        volume=10.0,
        closed=True,
    )
    now = {"t": 0}
    feed = bars_price_source({BTC: [bar]}, lambda: now["t"])
    assert feed(BTC) is None and feed("ETH/USDT") is None
    seen = []
    for t in (h, h + h // 3, h + 2 * h // 3, 2 * h - 1, 5 * h):
        now["t"] = t
        seen.append(round(feed(BTC)[0], 4))  # type: ignore[index]
    assert seen == [100.0, 90.0, 110.0, 105.0, 105.0]  # bullish bar: open, low, high, close


async def test_signature_covers_query_then_body_exactly(sim: ExchangeSim) -> None:
    """Binance signs totalParams = query string + body, concatenated as sent."""
    ts = int(time.time() * 1000)
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = f"quantity=0.01&price=40000.00&newClientOrderId=raw-1&timestamp={ts}"
    headers = {"X-MBX-APIKEY": sim.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    url = f"{sim.base_url}/api/v3/order"
    async with aiohttp.ClientSession() as http:
        good = sign(sim.secret, query + body)
        async with http.post(
            f"{url}?{query}", data=f"{body}&signature={good}", headers=headers
        ) as r:
            assert r.status == 200 and (await r.json())["clientOrderId"] == "raw-1"
            assert int(r.headers["x-mbx-used-weight-1m"]) > 0
        joined = sign(sim.secret, query + "&" + body.replace("raw-1", "raw-2"))  # not how it signs
        tampered = body.replace("raw-1", "raw-2")
        async with http.post(
            f"{url}?{query}", data=f"{tampered}&signature={joined}", headers=headers
        ) as r:
            assert (r.status, (await r.json())["code"]) == (400, -1022)
        async with http.get(f"{sim.base_url}/api/v3/account?timestamp={ts}", headers=headers) as r:
            assert (await r.json())["code"] == -1102  # no signature
        async with http.get(f"{sim.base_url}/api/v3/account") as r:
            assert (r.status, (await r.json())["code"]) == (401, -2014)  # no key
    assert [o.client_order_id for o in sim.spot.open_orders("BTCUSDT")] == ["raw-1"]
    recorded = repr(sim.requests)
    assert (
        "signature" not in recorded and sim.api_key not in recorded and sim.secret not in recorded
    )


async def test_spot_stop_loss_limit_triggers_on_the_way_down(sim: ExchangeSim, spot: Any) -> None:
    await spot.create_order(BTC, "market", "buy", 0.02, None)
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        await spot.create_order(BTC, "limit", "sell", 0.02, 50_500, {"stopLossPrice": 51_000})
    stop = await spot.create_order(
        BTC, "limit", "sell", 0.02, 45_000, {"stopLossPrice": 46_000, "clientOrderId": "stop-1"}
    )
    assert (stop["status"], stop["triggerPrice"]) == ("open", 46_000)
    assert (await spot.fetch_balance())["BTC"]["used"] == 0.02  # locked while it waits
    sim.set_price(BTC, 46_500)
    assert sim.ledger["stop-1"] == []
    sim.set_price(BTC, 45_800)
    fills = sim.ledger["stop-1"]
    assert [(f.side, f.price, f.qty) for f in fills] == [("SELL", D("45800"), D("0.02"))]
    assert (await spot.fetch_order(stop["id"], BTC))["status"] == "closed"
    assert (await spot.fetch_balance())["BTC"]["total"] == 0


# ---------------------------------------------------------------- futures


async def test_futures_orders_positions_margin_and_income(sim: ExchangeSim, usdm: Any) -> None:
    assert usdm.market(PERP)["precision"]["amount"] == 0.001
    await usdm.set_leverage(2, PERP)
    await usdm.set_margin_mode("isolated", PERP)
    with pytest.raises(ccxt.MarginModeAlreadySet):
        await usdm.set_margin_mode("isolated", PERP)

    opened = await usdm.create_order(PERP, "market", "buy", 0.1, None, {"clientOrderId": "f1-1"})
    assert (opened["status"], opened["filled"], opened["average"]) == ("closed", 0.1, 50_000)
    assert (await usdm.fetch_order(None, PERP, {"clientOrderId": "f1-1"}))["id"] == opened["id"]

    (position,) = await usdm.fetch_positions([PERP])
    assert (position["side"], position["contracts"], position["entryPrice"]) == (
        "long",
        0.1,
        50_000,
    )
    assert position["marginMode"] == "isolated" and position["collateral"] == 2_500
    balance = await usdm.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(10_000 - 5)  # fee 0.1 % of 5,000
    assert balance["USDT"]["used"] == pytest.approx(2_500)  # 5,000 notional at 2x

    v2 = await usdm.fetch_balance({"useV2": True})
    assert v2["USDT"]["total"] == balance["USDT"]["total"]
    (v2_position,) = await usdm.fetch_positions([PERP], {"useV2": True})
    assert (v2_position["leverage"], v2_position["contracts"]) == (2, 0.1)

    resting = await usdm.create_order(PERP, "limit", "buy", 0.01, 45_000, {"clientOrderId": "f1-2"})
    assert [o["id"] for o in await usdm.fetch_open_orders(PERP)] == [resting["id"]]
    await usdm.cancel_order(resting["id"], PERP)

    sim.set_price(BTC, 52_000)
    assert sim.pay_funding(BTC, 0.0001) == D("-0.52")  # longs pay rate x notional
    closed = await usdm.create_order(
        PERP, "market", "sell", 0.1, None, {"reduceOnly": True, "clientOrderId": "f1-3"}
    )
    assert closed["status"] == "closed"
    trades = await usdm.fetch_my_trades(PERP)
    assert [t["info"]["realizedPnl"] for t in trades] == ["0.00000000", "200.00000000"]
    assert await usdm.fetch_positions([PERP]) == []
    funding = await usdm.fetch_funding_history(PERP)
    assert [f["amount"] for f in funding] == [-0.52]
    wallet = 10_000 - 5 - 5.2 - 0.52 + 200
    assert (await usdm.fetch_balance())["USDT"]["total"] == pytest.approx(wallet)


async def test_futures_rejections_carry_binance_codes(sim: ExchangeSim, usdm: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):
        await usdm.create_order(PERP, "market", "buy", 0.001, None)  # 50 USDT < 100
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):
        await usdm.create_order(PERP, "market", "sell", 0.01, None, {"reduceOnly": True})
    await usdm.set_leverage(1, PERP)
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
        await usdm.create_order(PERP, "market", "buy", 0.3, None)  # 15,000 at 1x > 10,000
    with pytest.raises(ccxt.InvalidOrder, match="-4120"):  # the pre-2025-12-09 endpoint
        await usdm.fapiPrivatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "quantity": "0.01",
                "stopPrice": "45000",
            }
        )
    assert sim.ledger.fills == []


async def test_futures_stop_market_reduce_only_through_the_algo_endpoint(
    sim: ExchangeSim, usdm: Any
) -> None:
    await usdm.create_order(PERP, "market", "buy", 0.02, None, {"clientOrderId": "pos-9-1"})
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="-2021"):
        await usdm.create_order(
            PERP, "STOP_MARKET", "sell", 0.02, None, {"triggerPrice": 50_500, "reduceOnly": True}
        )
    stop = await usdm.create_order(
        PERP,
        "STOP_MARKET",
        "sell",
        0.02,
        None,
        {"triggerPrice": 47_000, "reduceOnly": True, "clientOrderId": "pos-9-2"},
    )
    assert sim.paths()[-1] == "/fapi/v1/algoOrder"
    assert sim.requests[-1].params["algoType"] == "CONDITIONAL"
    assert (stop["status"], stop["clientOrderId"], stop["triggerPrice"]) == (
        "open",
        "pos-9-2",
        47_000,
    )

    by_id = await usdm.fetch_order(stop["id"], PERP, {"trigger": True})
    by_client = await usdm.fetch_order(None, PERP, {"trigger": True, "clientOrderId": "pos-9-2"})
    assert by_id["id"] == by_client["id"] == stop["id"] and by_id["status"] == "open"
    assert [o["id"] for o in await usdm.fetch_open_orders(PERP, params={"trigger": True})] == [
        stop["id"]
    ]
    assert await usdm.fetch_open_orders(PERP) == []  # not in the regular book

    sim.set_price(BTC, 47_500)
    assert sim.ledger["pos-9-2"] == []
    sim.set_price(BTC, 46_900)
    triggered = await usdm.fetch_order(stop["id"], PERP, {"trigger": True})
    assert (triggered["status"], triggered["filled"]) == ("closed", 0.02)
    assert triggered["info"]["algoStatus"] == "FINISHED"
    assert [(f.side, f.qty, f.price) for f in sim.ledger["pos-9-2"]] == [
        ("SELL", D("0.02"), D("46900"))
    ]
    assert await usdm.fetch_positions([PERP]) == []

    await usdm.create_order(PERP, "market", "buy", 0.01, None)
    second = await usdm.create_order(
        PERP, "market", "sell", 0.01, None, {"stopLossPrice": 45_000, "reduceOnly": True}
    )
    cancelled = await usdm.cancel_order(second["id"], PERP, {"trigger": True})
    assert cancelled["id"] == second["id"]
    assert (await usdm.fetch_order(second["id"], PERP, {"trigger": True}))["status"] == "canceled"
    assert await usdm.fetch_open_orders(PERP, params={"trigger": True}) == []
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        await usdm.cancel_order(second["id"], PERP, {"trigger": True})
    sim.set_price(BTC, 44_000)
    assert (await usdm.fetch_positions([PERP]))[0]["contracts"] == 0.01  # the stop is gone


async def test_close_position_stop_closes_whatever_is_open(sim: ExchangeSim, usdm: Any) -> None:
    await usdm.create_order(PERP, "market", "buy", 0.03, None)
    stop = await usdm.create_order(
        PERP, "STOP_MARKET", "sell", None, None, {"triggerPrice": 49_000, "closePosition": True}
    )
    assert stop["info"]["closePosition"] is True
    await usdm.create_order(PERP, "market", "buy", 0.01, None)
    sim.set_price(BTC, 48_990)
    done = await usdm.fetch_order(stop["id"], PERP, {"trigger": True})
    assert (done["status"], done["filled"]) == ("closed", 0.04)
    assert await usdm.fetch_positions([PERP]) == []


async def test_a_stop_left_after_its_position_closed_expires_on_trigger(
    sim: ExchangeSim, usdm: Any
) -> None:
    await usdm.create_order(PERP, "market", "buy", 0.01, None)
    stop = await usdm.create_order(
        PERP, "market", "sell", 0.01, None, {"stopLossPrice": 48_000, "reduceOnly": True}
    )
    await usdm.create_order(PERP, "market", "sell", 0.01, None, {"reduceOnly": True})
    sim.set_price(BTC, 47_000)
    orphan = await usdm.fetch_order(stop["id"], PERP, {"trigger": True})
    assert orphan["info"]["algoStatus"] == "EXPIRED" and orphan["filled"] == 0
    assert await usdm.fetch_positions([PERP]) == []  # it never opened a short


# ---------------------------------------------------------------- faults


async def _placed_despite(
    sim: ExchangeSim, exchange: Any, symbol: str, cid: str, error: type[Exception]
) -> dict:
    with pytest.raises(error):
        await exchange.create_order(symbol, "market", "buy", 0.01, None, {"clientOrderId": cid})
    assert len(sim.ledger[cid]) == 1  # the exchange executed it all the same
    found = await exchange.fetch_order(None, symbol, {"clientOrderId": cid})
    assert found["status"] == "closed" and found["filled"] == 0.01
    return found


async def test_5xx_after_accept_raises_yet_the_ledger_holds_the_fill(
    sim: ExchangeSim, spot: Any, usdm: Any
) -> None:
    fault = sim.fault(FaultKind.ERROR_AFTER, path="/api/v3/order", method="POST")
    await _placed_despite(sim, spot, BTC, "e5-1", ccxt.ExchangeNotAvailable)
    assert fault.hits == 1
    sim.fault(FaultKind.ERROR_AFTER, path="/fapi/v1/order", method="POST", status=502)
    await _placed_despite(sim, usdm, PERP, "e5-2", ccxt.ExchangeNotAvailable)

    sim.fault(FaultKind.ERROR_AFTER, path="/fapi/v1/algoOrder", method="POST")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await usdm.create_order(
            PERP,
            "STOP_MARKET",
            "sell",
            0.01,
            None,
            {"triggerPrice": 45_000, "reduceOnly": True, "clientOrderId": "e5-3"},
        )
    stop = await usdm.fetch_order(None, PERP, {"trigger": True, "clientOrderId": "e5-3"})
    assert stop["status"] == "open"  # the stop exists: placing it again would be a duplicate

    before = sim.fault(FaultKind.ERROR_BEFORE, path="/api/v3/order", method="POST")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await spot.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "e5-4"})
    assert before.hits == 1 and sim.ledger["e5-4"] == []
    with pytest.raises(ccxt.OrderNotFound):
        await spot.fetch_order(None, BTC, {"clientOrderId": "e5-4"})


async def test_unknown_status_1007_after_accept(sim: ExchangeSim, spot: Any) -> None:
    sim.fault(FaultKind.UNKNOWN_AFTER, path="/api/v3/order", method="POST")
    await _placed_despite(sim, spot, BTC, "u-1", ccxt.RequestTimeout)


async def test_answer_held_past_the_client_timeout_after_filling(sim: ExchangeSim) -> None:
    exchange = client(sim, timeout=300)
    try:
        await exchange.load_markets()
        sim.fault(FaultKind.DELAY_AFTER, path="/api/v3/order", method="POST", delay_s=1.0)
        started = time.monotonic()
        await _placed_despite(sim, exchange, BTC, "slow-1", ccxt.RequestTimeout)
        assert time.monotonic() - started < 0.9  # found while the first answer was still held
    finally:
        await exchange.close()


async def test_partial_fill_then_expiry(sim: ExchangeSim, spot: Any, usdm: Any) -> None:
    script = sim.fault(FaultKind.PARTIAL_THEN_EXPIRE, path="/api/v3/order", fill_qty="0.004")
    with pytest.raises(ccxt.InsufficientFunds):
        await spot.create_order(BTC, "market", "buy", 1, None)  # refused: the script waits
    assert script.hits == 0
    order = await spot.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "pe-1"})
    assert (order["status"], order["filled"], order["remaining"]) == ("expired", 0.004, 0.006)
    assert sim.ledger.qty("pe-1") == D("0.004")
    sim.fault(FaultKind.PARTIAL_THEN_EXPIRE, path="/fapi/v1/order", fill_fraction=0.5)
    fut = await usdm.create_order(PERP, "limit", "buy", 0.02, 50_000, {"clientOrderId": "pe-2"})
    assert (fut["status"], fut["filled"]) == ("expired", 0.01)
    assert (await usdm.fetch_positions([PERP]))[0]["contracts"] == 0.01


async def test_order_lost_then_found(sim: ExchangeSim, spot: Any, usdm: Any) -> None:
    placed = await spot.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "lost-1"})
    sim.fault(FaultKind.LOST_THEN_FOUND, path="/api/v3/order", count=2, client_order_id="lost-1")
    for _ in range(2):
        with pytest.raises(ccxt.OrderNotFound, match="-2013"):
            await spot.fetch_order(None, BTC, {"clientOrderId": "lost-1"})
    assert (await spot.fetch_order(None, BTC, {"clientOrderId": "lost-1"}))["id"] == placed["id"]

    await usdm.create_order(PERP, "market", "buy", 0.01, None)
    stop = await usdm.create_order(
        PERP, "market", "sell", 0.01, None, {"stopLossPrice": 45_000, "reduceOnly": True}
    )
    sim.fault(FaultKind.LOST_THEN_FOUND, path="/fapi/v1/algoOrder", count=1)
    with pytest.raises(ccxt.OrderNotFound):
        await usdm.fetch_order(stop["id"], PERP, {"trigger": True})
    assert (await usdm.fetch_order(stop["id"], PERP, {"trigger": True}))["status"] == "open"


async def test_429_and_418_with_retry_after(sim: ExchangeSim, spot: Any, usdm: Any) -> None:
    sim.fault(FaultKind.RATE_LIMIT, path="/api/v3/order", retry_after=7)
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        await spot.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "rl-1"})
    assert spot.last_response_headers["Retry-After"] == "7"
    assert sim.ledger["rl-1"] == []  # refused before execution
    await spot.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "rl-1"})

    sim.fault(FaultKind.BAN, path="/api/v3", retry_after=120)
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        await spot.fetch_balance()
    with pytest.raises(ccxt.DDoSProtection, match="IP banned until"):
        await spot.fetch_time()  # the whole spot pool stays banned
    assert int(spot.last_response_headers["Retry-After"]) > 100
    assert (await usdm.fetch_balance())["USDT"]["free"] > 0  # futures counts apart
    sim.lift_ban()
    assert await spot.fetch_time() > 0


async def test_weight_budget_answers_429_then_bans_a_client_that_keeps_going() -> None:
    async with ExchangeSim([BTC], weight_limits={"spot": 60, "futures": 60}) as sim:
        exchange = client(sim)
        try:
            await exchange.load_markets()  # exchangeInfo weighs 20
            assert exchange.last_response_headers["x-mbx-used-weight-1m"] == "20"
            await exchange.fetch_balance()  # account weighs 20
            await exchange.fetch_balance()
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                await exchange.fetch_balance()
            errors = []
            for _ in range(3):
                try:
                    await exchange.fetch_time()
                except ccxt.DDoSProtection as err:
                    errors.append(str(err))
            assert "418" in errors[-1] and "banned" in errors[-1]
        finally:
            await exchange.close()
