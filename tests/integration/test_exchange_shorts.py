"""Shorts on USDⓈ-M, the exchange side: the real ccxt client against the local exchange.

The simulator behaves as Binance one-way mode does for a short (a plain SELL opens it, a
negative ``positionAmt``, reduce-only refusals with -2022, a STOP_MARKET BUY triggering on a
rise, funding received at a positive rate, the isolated liquidation price); the exchange broker
opens a short with a plain SELL, covers it reduce-only, protects it with a BUY stop above,
resolves a cover whose answer was lost by lookup, and reports the short as a negative holding
that reconciliation compares with the books. Spot refuses a short before sending anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt
import pytest

from activities.exchange_broker import ExchangeBroker
from signals.exchange_sim import ExchangeSim, FaultKind, ccxt_overrides
from tests.integration.exchange_fixtures import BTC, fresh, make_broker, sim, spot, usdm
from trading.leverage import liquidation_price
from trading.models import (
    OrderRequest,
    OrderStatus,
    PositionSide,
    Side,
    StopRef,
    StopRequest,
    StopState,
    StopStatus,
)
from trading.reconcile import BookPosition, ReconcileInput, reconcile

pytestmark = pytest.mark.integration

__all__ = ["fresh", "sim", "spot", "usdm"]  # the shared fixtures this module's tests use
PERP = "BTC/USDT:USDT"
SHORT = PositionSide.SHORT
D = Decimal


@pytest.fixture
async def raw(sim: ExchangeSim) -> AsyncIterator[Any]:
    """A bare ccxt USDⓈ-M client, as a user trading by hand (or a test) would have."""
    exchange = ccxt.binanceusdm(
        {
            "apiKey": sim.api_key,
            "secret": sim.secret,
            "enableRateLimit": False,
            "timeout": 3000,
            "timeout_on_exit": 0,
            **ccxt_overrides(sim.base_url, "futures"),
        }
    )
    await exchange.load_markets()
    try:
        yield exchange
    finally:
        await exchange.close()


def order(
    coid: str,
    side: Side,
    qty: float = 0.02,
    ref: float = 50_000,
    position_side: PositionSide = SHORT,
) -> OrderRequest:
    pid, seq = coid.rsplit("-", 1)
    return OrderRequest(
        client_order_id=coid,
        position_id=pid,
        seq=int(seq),
        symbol=BTC,
        side=side,
        qty=qty,
        ref_price=ref,
        market_time_ms=1_700_000_000_000,
        reason="test",
        position_side=position_side,
    )


def stop(coid: str, price: float, qty: float = 0.02, side: PositionSide = SHORT) -> StopRequest:
    pid, seq = coid.rsplit("-", 1)
    return StopRequest(
        client_order_id=coid,
        position_id=pid,
        seq=int(seq),
        symbol=BTC,
        qty=qty,
        stop_price=price,
        market_time_ms=1_700_000_000_000,
        position_side=side,
    )


def ref_of(state: StopState, side: PositionSide = SHORT) -> StopRef:
    return StopRef(
        client_order_id=state.client_order_id,
        position_id=state.client_order_id.rsplit("-", 1)[0],
        symbol=state.symbol,
        qty=state.qty,
        stop_price=state.stop_price,
        market_time_ms=1_700_000_000_000,
        position_side=side,
    )


def sent(sim: ExchangeSim, coid: str, path: str = "/fapi/v1/order") -> list[dict[str, str]]:
    """The params of every POST with this client id to ``path``."""
    return [
        r.params
        for r in sim.requests
        if r.method == "POST"
        and r.path == path
        and coid in (r.params.get("newClientOrderId"), r.params.get("clientAlgoId"))
    ]


def one_fill(sim: ExchangeSim, coid: str) -> Decimal:
    assert len(sim.ledger.order_ids(coid)) == 1, sim.ledger[coid]
    return sim.ledger.qty(coid)


async def position_amt(raw: Any) -> Decimal:
    rows = await raw.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})
    return D(rows[0]["positionAmt"])


# ---------------------------------------------------------------- the simulator, as Binance


async def test_a_sell_with_no_position_opens_a_short_shown_negative(
    sim: ExchangeSim, raw: Any
) -> None:
    await raw.set_leverage(2, PERP)
    await raw.set_margin_mode("isolated", PERP)
    await raw.create_order(PERP, "market", "sell", 0.1, None, {"clientOrderId": "s1-1"})
    sim.set_price(BTC, 48_000)
    await raw.create_order(PERP, "market", "sell", 0.1, None, {"clientOrderId": "s1-2"})  # add
    (row,) = await raw.fapiPrivateV3GetPositionRisk({"symbol": "BTCUSDT"})
    assert row["positionAmt"] == "-0.200"
    assert D(row["entryPrice"]) == D(49_000)  # (0.1 x 50,000 + 0.1 x 48,000) / 0.2
    assert D(row["notional"]) == D(-9_600)  # signed, at the 48,000 mark
    assert D(row["unRealizedProfit"]) == D(200)  # 0.2 x (49,000 - 48,000): a fall pays a short
    wallet = D(row["isolatedWallet"])
    assert wallet == D(4_900)  # 0.2 x 49,000 / 2x
    assert D(row["isolatedMargin"]) == wallet + 200
    # Binance, isolated, one-way: (WB + Q·EP) / (Q·MMR + Q) for a short
    expected = (wallet + D("0.2") * 49_000) / (D("0.2") * D("0.004") + D("0.2"))
    assert D(row["liquidationPrice"]) == pytest.approx(expected, rel=D("1e-12"))
    assert float(row["liquidationPrice"]) == pytest.approx(
        liquidation_price(SHORT, 49_000, 2, 0.004)  # the engine's own formula agrees
    )
    (position,) = await raw.fetch_positions([PERP])
    assert (position["side"], position["contracts"]) == ("short", 0.2)
    assert position["liquidationPrice"] == pytest.approx(float(expected))
    (v2,) = await raw.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})
    assert v2["liquidationPrice"] == row["liquidationPrice"]

    sim.set_price(BTC, 51_000)
    (row,) = await raw.fapiPrivateV3GetPositionRisk({"symbol": "BTCUSDT"})
    assert D(row["unRealizedProfit"]) == D(-400)  # and a rise costs it


async def test_liquidation_prices_long_short_isolated_and_cross(sim: ExchangeSim, raw: Any) -> None:
    await raw.set_leverage(1, PERP)
    await raw.set_margin_mode("isolated", PERP)
    await raw.create_order(PERP, "market", "buy", 0.1, None)
    (row,) = await raw.fapiPrivateV3GetPositionRisk({"symbol": "BTCUSDT"})
    assert row["liquidationPrice"] == "0"  # a 1x long cannot be liquidated
    await raw.create_order(PERP, "market", "sell", 0.1, None, {"reduceOnly": True})
    await raw.set_margin_mode("cross", PERP)
    await raw.create_order(PERP, "market", "sell", 0.1, None)
    (row,) = await raw.fapiPrivateV3GetPositionRisk({"symbol": "BTCUSDT"})
    # cross: WB is the whole cross wallet (fees paid so far come out of it)
    wallet = D((await raw.fapiPrivateV2GetBalance())[0]["crossWalletBalance"])
    expected = (wallet + D("0.1") * 50_000) / (D("0.1") * D("0.004") + D("0.1"))
    assert D(row["liquidationPrice"]) == pytest.approx(expected, rel=D("1e-12"))


async def test_reduce_only_refuses_what_would_increase_or_flip(sim: ExchangeSim, raw: Any) -> None:
    await raw.create_order(PERP, "market", "sell", 0.1, None, {"clientOrderId": "r1-1"})
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # same direction: would increase
        await raw.create_order(PERP, "market", "sell", 0.01, None, {"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # a limit past the position: flip
        await raw.create_order(
            PERP, "limit", "buy", 0.2, 50_100, {"reduceOnly": True, "timeInForce": "IOC"}
        )
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # a stop-limit past it likewise
        await raw.create_order(
            PERP, "limit", "buy", 0.2, 52_100, {"stopLossPrice": 52_000, "reduceOnly": True}
        )
    assert await position_amt(raw) == D("-0.1")
    sim.set_price(BTC, 48_000)
    part = await raw.create_order(
        PERP, "limit", "buy", 0.04, 48_100, {"reduceOnly": True, "timeInForce": "IOC"}
    )
    assert (part["status"], part["filled"]) == ("closed", 0.04)
    assert await position_amt(raw) == D("-0.06")
    (trade,) = [t for t in await raw.fetch_my_trades(PERP) if t["order"] == part["id"]]
    assert D(trade["info"]["realizedPnl"]) == D(80)  # 0.04 x (50,000 - 48,000)
    # a reduce-only MARKET order larger than the position has priority: it closes it only
    rest = await raw.create_order(PERP, "market", "buy", 0.5, None, {"reduceOnly": True})
    assert rest["filled"] == 0.06 and rest["status"] == "expired"
    assert await raw.fetch_positions([PERP]) == []  # never a long
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # nothing left to reduce
        await raw.create_order(PERP, "market", "buy", 0.01, None, {"reduceOnly": True})


async def test_a_short_stop_market_buy_triggers_on_the_rise(sim: ExchangeSim, raw: Any) -> None:
    await raw.create_order(PERP, "market", "sell", 0.02, None)
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="-2021"):  # under the price
        await raw.create_order(
            PERP, "STOP_MARKET", "buy", 0.02, None, {"triggerPrice": 49_000, "reduceOnly": True}
        )
    placed = await raw.create_order(
        PERP, "STOP_MARKET", "buy", 0.02, None, {"triggerPrice": 51_000, "reduceOnly": True}
    )
    sim.set_price(BTC, 50_900)
    assert (await raw.fetch_order(placed["id"], PERP, {"trigger": True}))["status"] == "open"
    sim.set_price(BTC, 49_000)  # a fall is no trigger for a BUY stop
    assert (await raw.fetch_order(placed["id"], PERP, {"trigger": True}))["status"] == "open"
    sim.set_price(BTC, 51_050)
    done = await raw.fetch_order(placed["id"], PERP, {"trigger": True})
    assert (done["status"], done["filled"], done["side"]) == ("closed", 0.02, "buy")
    assert done["info"]["algoStatus"] == "FINISHED"
    assert await raw.fetch_positions([PERP]) == []


async def test_funding_is_received_by_shorts_and_paid_by_longs(sim: ExchangeSim, raw: Any) -> None:
    await raw.create_order(PERP, "market", "sell", 0.1, None)
    sim.set_price(BTC, 52_000)
    assert sim.pay_funding(BTC, 0.0001) == D("0.52")  # a positive rate: the short receives
    assert sim.pay_funding(BTC, -0.0002) == D("-1.04")  # a negative one: it pays
    await raw.create_order(PERP, "market", "buy", 0.3, None)  # now long 0.2
    assert sim.pay_funding(BTC, 0.0001) == D("-1.04")
    income = await raw.fapiPrivateGetIncome({"incomeType": "FUNDING_FEE"})
    assert [(i["incomeType"], D(i["income"])) for i in income] == [
        ("FUNDING_FEE", D("0.52")),
        ("FUNDING_FEE", D("-1.04")),
        ("FUNDING_FEE", D("-1.04")),
    ]
    assert [f["amount"] for f in await raw.fetch_funding_history(PERP)] == [0.52, -1.04, -1.04]


# ---------------------------------------------------------------- the broker


async def test_a_short_opens_with_a_plain_sell_and_covers_reduce_only(
    sim: ExchangeSim, usdm: ExchangeBroker
) -> None:
    entry = await usdm.place_order(order("sh-1", Side.SELL))
    assert entry.status == OrderStatus.FILLED and entry.side == Side.SELL and entry.qty == 0.02
    assert entry.dust == 0
    (params,) = sent(sim, "sh-1")
    assert params["side"] == "SELL" and "reduceOnly" not in params
    assert params["price"] == "49950"  # marketable IOC: last - 0.1 %
    assert (await usdm.balances()).holdings == {BTC: pytest.approx(-0.02)}
    add = await usdm.place_order(order("sh-2", Side.SELL, qty=0.01))
    assert add.status == OrderStatus.FILLED and "reduceOnly" not in sent(sim, "sh-2")[0]
    assert (await usdm.balances()).holdings == {BTC: pytest.approx(-0.03)}

    sim.set_price(BTC, 48_000)
    cover = await usdm.place_order(order("sh-3", Side.BUY, qty=0.03, ref=48_000))
    assert cover.status == OrderStatus.FILLED and cover.side == Side.BUY
    assert cover.qty == 0.03 and cover.price == 48_000 and cover.dust == 0
    assert cover.fee == pytest.approx(0.03 * 48_000 * 0.001)
    (params,) = sent(sim, "sh-3")
    assert params["side"] == "BUY" and params["reduceOnly"] == "true"
    assert params["price"] == "48048"  # last + 0.1 %
    assert (await usdm.balances()).holdings == {}
    looked = await usdm.lookup("sh-3")
    assert looked is not None and looked.side == Side.BUY and looked.qty == 0.03
    assert [f.client_order_id for f in await usdm.orders_of("sh")] == ["sh-1", "sh-2", "sh-3"]


async def test_a_long_is_unchanged_beside_shorts(sim: ExchangeSim, usdm: ExchangeBroker) -> None:
    long_ = PositionSide.LONG
    await usdm.place_order(order("lg-1", Side.BUY, position_side=long_))
    assert "reduceOnly" not in sent(sim, "lg-1")[0]
    assert (await usdm.balances()).holdings == {BTC: pytest.approx(0.02)}
    await usdm.place_order(order("lg-2", Side.SELL, position_side=long_))
    assert sent(sim, "lg-2")[0]["reduceOnly"] == "true"
    assert (await usdm.balances()).holdings == {}


async def test_a_cover_that_would_flip_the_position_is_refused(
    sim: ExchangeSim, usdm: ExchangeBroker
) -> None:
    await usdm.place_order(order("fl-1", Side.SELL))
    flip = await usdm.place_order(order("fl-2", Side.BUY, qty=0.05))
    assert flip.status == OrderStatus.REJECTED and not flip.filled
    assert "-2022" in flip.reason and "ReduceOnly Order is rejected" in flip.reason
    assert "fl-2" not in sim.ledger and len(sent(sim, "fl-2")) == 1  # final: not sent again
    # a long's exit on a short account would add to the short: refused the same way
    wrong = await usdm.place_order(order("fl-3", Side.SELL, position_side=PositionSide.LONG))
    assert wrong.status == OrderStatus.REJECTED and "-2022" in wrong.reason
    assert (await usdm.balances()).holdings == {BTC: pytest.approx(-0.02)}


async def test_a_cover_rest_too_small_to_trade_is_dust_a_tradable_one_is_not(
    sim: ExchangeSim, usdm: ExchangeBroker
) -> None:
    await usdm.place_order(order("du-1", Side.SELL, qty=0.03))
    sim.fault(FaultKind.PARTIAL_THEN_EXPIRE, path="/fapi/v1/order", fill_qty="0.029")
    part = await usdm.place_order(order("du-2", Side.BUY, qty=0.03))
    assert part.status == OrderStatus.PARTIALLY_FILLED and part.qty == 0.029
    # 0.001 at 50,000 is under the 100 USDT minimum, yet a reduce-only order may trade it
    assert part.dust == 0
    rest = await usdm.place_order(order("du-3", Side.BUY, qty=0.001))
    assert rest.status == OrderStatus.FILLED and rest.qty == 0.001
    assert (await usdm.balances()).holdings == {}
    # books a hair above the exchange: what is under the lot step is dust, not chased
    await usdm.place_order(order("du-4", Side.SELL, qty=0.02))
    cover = await usdm.place_order(order("du-5", Side.BUY, qty=0.0204))
    assert cover.status == OrderStatus.FILLED and cover.qty == 0.02
    assert cover.dust == pytest.approx(0.0004)
    assert (await usdm.balances()).holdings == {}


@pytest.mark.parametrize(
    "kind",
    [FaultKind.ERROR_AFTER, FaultKind.UNKNOWN_AFTER],
    ids=["5xx-after-accept", "1007-after-accept"],
)
async def test_a_cover_whose_answer_was_lost_is_looked_up_not_resent(
    sim: ExchangeSim, usdm: ExchangeBroker, kind: FaultKind
) -> None:
    await usdm.place_order(order("lc-1", Side.SELL))
    sim.fault(kind, path="/fapi/v1/order", method="POST", client_order_id="lc-2")
    cover = await usdm.place_order(order("lc-2", Side.BUY))
    assert cover.status == OrderStatus.FILLED and cover.qty == 0.02 and cover.side == Side.BUY
    assert len(sent(sim, "lc-2")) == 1  # sent once, found by its client id
    assert one_fill(sim, "lc-2") == D("0.02")
    assert (await usdm.balances()).holdings == {}
    again = await usdm.place(order("lc-2", Side.BUY), retried=True)  # a retried attempt
    assert again.status == OrderStatus.FILLED and again.venue_order_id == cover.venue_order_id
    assert len(sent(sim, "lc-2")) == 1 and one_fill(sim, "lc-2") == D("0.02")


async def test_a_cover_held_past_the_client_timeout_is_found(sim: ExchangeSim) -> None:
    broker = make_broker(sim, "futures", timeout_ms=300)
    try:
        await broker.place_order(order("ht-1", Side.SELL))
        sim.fault(FaultKind.DELAY_AFTER, path="/fapi/v1/order", method="POST", delay_s=1.0)
        cover = await broker.place_order(order("ht-2", Side.BUY))
        assert cover.status == OrderStatus.FILLED and one_fill(sim, "ht-2") == D("0.02")
        assert (await broker.balances()).holdings == {}
    finally:
        await broker.close()


# ---------------------------------------------------------------- a short's exchange stop


async def test_a_short_stop_is_a_reduce_only_buy_above_that_fills_on_a_rise(
    sim: ExchangeSim, usdm: ExchangeBroker
) -> None:
    await usdm.place_order(order("ss-1", Side.SELL))
    placed = await usdm.place_stop(stop("ss-2", 52_000.04))
    assert placed.status == StopStatus.WORKING
    assert placed.stop_price == 52_000.1  # a BUY stop rounds up to the tick, never below
    (params,) = sent(sim, "ss-2", "/fapi/v1/algoOrder")
    assert (params["side"], params["type"], params["reduceOnly"]) == ("BUY", "STOP_MARKET", "true")
    assert params["triggerPrice"] == "52000.1" and "closePosition" not in params
    assert (await usdm.stop_status(ref_of(placed))).working
    (venue,) = [o for o in await usdm.open_orders() if o.kind == "stop"]
    assert (venue.side, venue.stop_price, venue.client_order_id) == (Side.BUY, 52_000.1, "ss-2")
    sim.set_price(BTC, 51_900)
    assert (await usdm.stop_status(ref_of(placed))).working
    sim.set_price(BTC, 52_100)
    done = await usdm.stop_status(ref_of(placed))
    assert done.status == StopStatus.FILLED and done.fill is not None
    assert done.fill.side == Side.BUY and done.fill.qty == pytest.approx(0.02)
    assert done.fill.price == 52_100 and done.fill.dust == 0
    assert done.fill.reason == "exchange_stop"
    assert one_fill(sim, "ss-2") == D("0.02")
    assert (await usdm.balances()).holdings == {}  # the fill was the exit
    late = await usdm.cancel_stop(ref_of(placed))  # too late: it says what happened
    assert late.status == StopStatus.FILLED and late.sold == pytest.approx(0.02)


async def test_a_short_stop_cancelled_leaves_the_short(
    sim: ExchangeSim, usdm: ExchangeBroker
) -> None:
    await usdm.place_order(order("sk-1", Side.SELL))
    placed = await usdm.place_stop(stop("sk-2", 53_000))
    cancelled = await usdm.cancel_stop(ref_of(placed))
    assert cancelled.status == StopStatus.CANCELED and cancelled.sold == 0
    sim.set_price(BTC, 54_000)
    assert "sk-2" not in sim.ledger
    assert (await usdm.balances()).holdings == {BTC: pytest.approx(-0.02)}


async def test_a_short_stop_at_or_under_the_price_is_refused(
    sim: ExchangeSim, usdm: ExchangeBroker
) -> None:
    await usdm.place_order(order("su-1", Side.SELL))
    refused = await usdm.place_stop(stop("su-2", 49_000))  # a BUY stop under the last
    assert refused.status == StopStatus.REJECTED and "-2021" in refused.reason
    assert await usdm.open_orders() == []


async def test_a_short_stop_placed_despite_a_lost_answer_is_found_not_doubled(
    sim: ExchangeSim, usdm: ExchangeBroker, raw: Any
) -> None:
    await usdm.place_order(order("sl-1", Side.SELL))
    sim.fault(FaultKind.ERROR_AFTER, path="/fapi/v1/algoOrder", method="POST")
    placed = await usdm.place_stop(stop("sl-2", 52_000))
    assert placed.working
    retried = await usdm.stops.place(stop("sl-2", 52_000), retried=True)
    assert retried.working and retried.venue_order_id == placed.venue_order_id
    assert len(await raw.fetch_open_orders(PERP, params={"trigger": True})) == 1


# ---------------------------------------------------------------- spot is long-only


async def test_spot_refuses_a_short_entry_cover_and_stop(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    before = len(sim.requests)
    entry = await spot.place_order(order("sp-1", Side.SELL))
    assert entry.status == OrderStatus.REJECTED and "spot is long-only" in entry.reason
    cover = await spot.place_order(order("sp-2", Side.BUY))
    assert cover.status == OrderStatus.REJECTED and "spot is long-only" in cover.reason
    refused = await spot.place_stop(stop("sp-3", 52_000))
    assert refused.status == StopStatus.REJECTED and "spot is long-only" in refused.reason
    posts = [r for r in sim.requests[before:] if r.method == "POST"]
    assert posts == []  # nothing was sent
    assert sim.ledger.fills == []
    # a retried attempt is refused the same way, without a lookup that could find nothing
    again = await spot.place(order("sp-1", Side.SELL), retried=True)
    assert again.status == OrderStatus.REJECTED and "spot is long-only" in again.reason


# ---------------------------------------------------------------- reconciliation


async def _input(
    usdm: ExchangeBroker, positions: list[BookPosition], shorts: bool = True
) -> ReconcileInput:
    balances = await usdm.balances()
    return ReconcileInput(
        account="acct",
        time_ms=1,
        books_cash=balances.cash,
        exchange_cash=balances.cash,
        positions=positions,
        exchange_holdings=balances.holdings,
        open_orders=await usdm.open_orders(),
        traded=[BTC, "ETH/USDT"],
        prices=await usdm.last_prices(),
        tolerance={BTC: 0.002, "ETH/USDT": 0.04},
        shorts=shorts,
    )


async def test_reconciliation_sees_a_short_from_the_exchange(
    sim: ExchangeSim, usdm: ExchangeBroker, raw: Any
) -> None:
    await usdm.place_order(order("acct-e1-BTC-1-1", Side.SELL))
    placed = await usdm.place_stop(stop("acct-e1-BTC-1-2", 52_000))
    book = BookPosition(
        position_id="acct-e1-BTC-1",
        symbol=BTC,
        qty=0.02,
        side=SHORT,
        stop_client_order_id=placed.client_order_id,
    )
    agree = reconcile(await _input(usdm, [book]))
    assert agree.ok and agree.actions == [] and agree.mismatches == [], agree.lines()

    # the same short booked as a long is not the exchange's word
    as_long = book.model_copy(update={"side": PositionSide.LONG, "stop_client_order_id": None})
    wrong = reconcile(await _input(usdm, [as_long]))
    assert [(a.kind, a.target) for a in wrong.actions] == [
        ("cancel", "acct-e1-BTC-1-2"),  # a stop no position holds
        ("close", "acct-e1-BTC-1"),  # no long at the exchange
    ]
    assert any("the other way round" in n for n in wrong.notes)

    # covered by hand: the engine's short is gone at the exchange, its books close
    await usdm.cancel_stop(ref_of(placed))
    await raw.create_order(PERP, "market", "buy", 0.02, None, {"reduceOnly": True})
    gone = reconcile(await _input(usdm, [book.model_copy(update={"stop_client_order_id": None})]))
    assert [(a.kind, a.target, a.side) for a in gone.actions] == [("close", "acct-e1-BTC-1", SHORT)]

    # a short opened by hand that no position tracks: adopted as a short at the last price
    await raw.create_order(PERP, "market", "sell", 0.03, None)
    sim.set_price(BTC, 49_000)
    adopted = reconcile(await _input(usdm, []))
    (action,) = adopted.actions
    assert (action.kind, action.side, action.qty, action.price) == ("adopt", SHORT, 0.03, 49_000)
    assert "a short of 0.03" in action.detail
    # an account without shorts reports it and adopts nothing
    off = reconcile(await _input(usdm, [], shorts=False))
    assert off.actions == [] and "does not trade shorts" in off.mismatches[0]
