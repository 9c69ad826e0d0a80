"""The exchange broker against the local Binance-compatible exchange, through the real ccxt.

Every fault the exchange can throw at an order is met here, and each test ends on what the
exchange's own ledger says: exactly one fill per client order id, the broker's answer equal to
it, nothing sent that a filter would refuse. A short ``recvWindow`` (1 s) keeps the "a lost
attempt can no longer land" rule real and the tests quick.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import ccxt.async_support as ccxt_async
import pytest

from activities.ccxt_binance import binance_client
from activities.exchange_broker import ExchangeBroker, ExchangeConfig, OrderInDoubt
from signals.exchange_sim import ExchangeSim, FaultKind
from tests.integration.exchange_fixtures import (
    BTC,
    RECV_MS,
    fresh,
    make_broker,
    sim,
    spot,
    usdm,
)
from trading.models import (
    OrderRequest,
    OrderStatus,
    Side,
    StopRef,
    StopRequest,
    StopState,
    StopStatus,
)

pytestmark = pytest.mark.integration

__all__ = ["fresh", "sim", "spot", "usdm"]  # the shared fixtures this module's tests use


def order(coid: str, side: Side = Side.BUY, qty: float = 0.01, ref: float = 50_000) -> OrderRequest:
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
    )


def one_fill(sim: ExchangeSim, coid: str) -> Decimal:
    """The exchange filled ``coid`` in one order (never two), and this much of it."""
    assert len(sim.ledger.order_ids(coid)) == 1, sim.ledger[coid]
    return sim.ledger.qty(coid)


def order_posts(sim: ExchangeSim, coid: str, path: str = "/api/v3/order") -> int:
    """Orders sent with this client id (by id: a held answer of an earlier test may land)."""
    return sum(
        1
        for r in sim.requests
        if r.method == "POST" and r.path == path and r.params.get("newClientOrderId") == coid
    )


# ---------------------------------------------------------------- the plain path


async def test_ioc_buy_fills_from_trades_rounded_to_the_lot(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    fill = await spot.place_order(order("p-1", qty=0.0123456))
    assert fill.status == OrderStatus.FILLED and fill.filled
    assert fill.qty == 0.01234  # floored to the 0.00001 step
    assert fill.price == 50_000 and fill.fee == pytest.approx(0.617)  # 0.1 % in USDT
    assert fill.requested_qty == 0.0123456 and fill.venue_order_id
    assert one_fill(sim, "p-1") == Decimal("0.01234")
    sent = [r for r in sim.requests if r.method == "POST" and r.path == "/api/v3/order"][-1]
    assert sent.params["type"] == "LIMIT" and sent.params["timeInForce"] == "IOC"
    assert sent.params["price"] == "50050"  # last + 0.1 % cap
    assert sent.params["newClientOrderId"] == "p-1"


async def test_market_orders_when_configured(sim: ExchangeSim) -> None:
    broker = make_broker(sim, order_type="market")
    try:
        fill = await broker.place_order(order("m-1"))
        assert fill.status == OrderStatus.FILLED and fill.qty == 0.01
        sent = [r for r in sim.requests if r.path == "/api/v3/order" and r.method == "POST"][-1]
        assert sent.params["type"] == "MARKET"
    finally:
        await broker.close()


async def test_an_order_a_filter_would_refuse_is_never_sent(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    fill = await spot.place_order(order("f-1", qty=0.00005))  # 2.5 USDT < 5 minNotional
    assert fill.status == OrderStatus.REJECTED and not fill.filled
    assert fill.reason.startswith("not sent: NOTIONAL")
    tiny = await spot.place_order(order("f-2", qty=0.000001))  # under the lot step
    assert "LOT_SIZE" in tiny.reason
    assert order_posts(sim, "f-1") == order_posts(sim, "f-2") == 0 and "f-1" not in sim.ledger


async def test_exchange_refusals_are_final_rejections_with_the_code(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    fill = await spot.place_order(order("r-1", qty=1.0))  # 50,000 USDT > 10,000 held
    assert fill.status == OrderStatus.REJECTED
    assert fill.reason.startswith("InsufficientFunds") and "insufficient balance" in fill.reason
    assert "r-1" not in sim.ledger


async def test_partial_fill_then_expiry_books_what_filled(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    sim.fault(FaultKind.PARTIAL_THEN_EXPIRE, path="/api/v3/order", fill_qty="0.004")
    fill = await spot.place_order(order("pe-1"))
    assert fill.status == OrderStatus.PARTIALLY_FILLED and fill.filled
    assert fill.qty == 0.004 and fill.requested_qty == 0.01
    assert one_fill(sim, "pe-1") == Decimal("0.004")


async def test_a_sell_leaves_dust_it_cannot_trade(sim: ExchangeSim, spot: ExchangeBroker) -> None:
    await spot.place_order(order("d-1", qty=0.01))
    fill = await spot.place_order(order("d-2", Side.SELL, qty=0.009999))  # 0.000009 < step
    assert fill.status == OrderStatus.FILLED and fill.qty == 0.00999
    assert fill.dust == pytest.approx(0.000009)


# ---------------------------------------------------------------- faults: exactly one fill


@pytest.mark.parametrize(
    "kind",
    [FaultKind.ERROR_AFTER, FaultKind.UNKNOWN_AFTER],
    ids=["5xx-after-accept", "1007-after-accept"],
)
async def test_an_answer_lost_after_the_fill_is_looked_up_not_resent(
    sim: ExchangeSim, spot: ExchangeBroker, kind: FaultKind
) -> None:
    sim.fault(kind, path="/api/v3/order", method="POST")
    fill = await spot.place_order(order("x-1"))
    assert fill.status == OrderStatus.FILLED and fill.qty == 0.01
    assert order_posts(sim, "x-1") == 1  # sent once, found by lookup
    assert one_fill(sim, "x-1") == Decimal("0.01")


async def test_an_answer_held_past_the_client_timeout(sim: ExchangeSim) -> None:
    broker = make_broker(sim, timeout_ms=300)
    try:
        sim.fault(FaultKind.DELAY_AFTER, path="/api/v3/order", method="POST", delay_s=1.0)
        fill = await broker.place_order(order("slow-1"))
        assert fill.status == OrderStatus.FILLED
        assert one_fill(sim, "slow-1") == Decimal("0.01")
    finally:
        await broker.close()


async def test_a_request_that_never_landed_is_sent_again_once_it_cannot_land(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    sim.fault(FaultKind.ERROR_BEFORE, path="/api/v3/order", method="POST")
    fill = await spot.place_order(order("b-1"))
    assert fill.status == OrderStatus.FILLED
    assert order_posts(sim, "b-1") == 2  # the lost one, then one more with the same id
    assert one_fill(sim, "b-1") == Decimal("0.01")
    resend = [r for r in sim.requests if r.params.get("newClientOrderId") == "b-1"]
    gap_ms = int(resend[1].params["timestamp"]) - int(resend[0].params["timestamp"])
    assert gap_ms >= RECV_MS  # not before the first attempt was dead at the exchange


async def test_a_retried_attempt_finds_the_order_its_predecessor_placed(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    first = await spot.place_order(order("re-1"))
    sim.fault(FaultKind.LOST_THEN_FOUND, path="/api/v3/order", count=2, client_order_id="re-1")
    again = await spot.place(order("re-1"), retried=True)  # a worker died after sending
    assert again.status == OrderStatus.FILLED and again.venue_order_id == first.venue_order_id
    assert again.qty == first.qty and again.fee == pytest.approx(first.fee)
    assert order_posts(sim, "re-1") == 1  # two "not found" answers did not make it send again
    assert one_fill(sim, "re-1") == Decimal("0.01")


async def test_a_retried_attempt_whose_predecessor_sent_nothing_sends_after_the_window(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    fill = await spot.place(order("re-2"), retried=True)
    assert fill.status == OrderStatus.FILLED
    assert order_posts(sim, "re-2") == 1
    assert one_fill(sim, "re-2") == Decimal("0.01")


async def test_rate_limit_and_ban_leave_the_order_in_doubt_never_doubled(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    sim.fault(FaultKind.RATE_LIMIT, path="/api/v3/order", method="POST", retry_after=1)
    fill = await spot.place_order(order("rl-1"))  # refused, looked up, sent once more
    assert fill.status == OrderStatus.FILLED and one_fill(sim, "rl-1") == Decimal("0.01")

    sim.fault(FaultKind.BAN, path="/api/v3", retry_after=120)
    with pytest.raises(OrderInDoubt):
        await spot.place_order(order("ban-1"))
    assert spot.budget.status()["banned"]  # the broker stops all REST, as the listener does
    sim.lift_ban()
    spot.budget.banned_until_ms = 0  # the operator waited the ban out
    fill = await spot.place(order("ban-1"), retried=True)
    assert fill.status == OrderStatus.FILLED and one_fill(sim, "ban-1") == Decimal("0.01")


async def test_duplicate_open_client_id_is_looked_up_not_rejected(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    raw = spot.exchange
    await raw.create_order(BTC, "limit", "buy", 0.01, 40_000, {"clientOrderId": "dup-1"})
    fill = await spot.place_order(order("dup-1"))  # the exchange says "Duplicate order sent."
    assert fill.status == OrderStatus.REJECTED  # that resting order is cancelled, not doubled
    assert "dup-1" not in sim.ledger and len(sim.ledger.order_ids("dup-1")) == 0
    assert await raw.fetch_open_orders(BTC) == []


async def test_no_secret_in_any_log_line_or_answer(
    sim: ExchangeSim, spot: ExchangeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.fault(FaultKind.ERROR_AFTER, path="/api/v3/order", method="POST")
    fill = await spot.place_order(order("s-1"))
    rejected = await spot.place_order(order("s-2", qty=5.0))
    text = caplog.text + fill.model_dump_json() + rejected.model_dump_json()
    assert sim.secret not in text and sim.api_key not in text
    assert "signature=" not in text


# ---------------------------------------------------------------- reading


async def test_balances_lookup_and_orders_of_a_position(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    await spot.place_order(order("pos-1"))
    await spot.place_order(order("pos-2", Side.SELL, qty=0.004))
    await spot.place_order(order("other-1"))
    balances = await spot.balances()
    assert balances.holdings == {BTC: pytest.approx(0.016)}
    assert balances.cash == pytest.approx(10_000 - 0.016 * 50_000 - 0.024 * 50)  # fees 0.1 %
    found = await spot.lookup("pos-2")
    assert found is not None and found.side == Side.SELL and found.qty == 0.004
    assert await spot.lookup("never-1") is None
    orders = await spot.orders_of("pos")
    assert [o.client_order_id for o in orders] == ["pos-1", "pos-2"]


async def test_futures_long_and_reduce_only_exit(sim: ExchangeSim, usdm: ExchangeBroker) -> None:
    fill = await usdm.place_order(order("fu-1", qty=0.02))
    assert fill.status == OrderStatus.FILLED and fill.qty == 0.02
    assert (await usdm.balances()).holdings == {BTC: pytest.approx(0.02)}
    exit_ = await usdm.place_order(order("fu-2", Side.SELL, qty=0.02))
    assert exit_.status == OrderStatus.FILLED
    sent = [r for r in sim.requests if r.path == "/fapi/v1/order" and r.method == "POST"][-1]
    assert sent.params["reduceOnly"] == "true" and sent.params["timeInForce"] == "IOC"
    assert (await usdm.balances()).holdings == {}
    setup = {r.path for r in sim.requests if r.method == "POST"}
    assert {"/fapi/v1/leverage", "/fapi/v1/marginType"} <= setup


async def test_unknown_symbol_is_a_clear_error(sim: ExchangeSim) -> None:
    client = binance_client("spot", api_key=sim.api_key, secret=sim.secret, base_url=sim.base_url)
    broker = ExchangeBroker(client, ExchangeConfig(symbols=("DOGE/USDT",)))
    try:
        with pytest.raises(ValueError, match="DOGE/USDT: no such market"):
            await broker.start()
    finally:
        await broker.close()
    assert issubclass(ccxt_async.binance, object)


# ---------------------------------------------------------------- protective stops


def stop(coid: str, qty: float = 0.02, price: float = 46_000) -> StopRequest:
    pid, seq = coid.rsplit("-", 1)
    return StopRequest(
        client_order_id=coid,
        position_id=pid,
        seq=int(seq),
        symbol=BTC,
        qty=qty,
        stop_price=price,
        market_time_ms=1_700_000_000_000,
    )


def ref_of(state: StopState) -> StopRef:
    return StopRef(
        client_order_id=state.client_order_id,
        position_id=state.client_order_id.rsplit("-", 1)[0],
        symbol=state.symbol,
        qty=state.qty,
        stop_price=state.stop_price,
        market_time_ms=1_700_000_000_000,
    )


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_a_stop_rests_triggers_and_reports_its_fill(sim: ExchangeSim, market: str) -> None:
    broker = make_broker(sim, market)
    try:
        await broker.place_order(order(f"st{market}-1", qty=0.02))
        placed = await broker.place_stop(stop(f"st{market}-2"))
        assert placed.status == StopStatus.WORKING and placed.stop_price == 46_000
        assert (await broker.stop_status(ref_of(placed))).working
        sim.set_price(BTC, 46_500)
        assert (await broker.stop_status(ref_of(placed))).working
        sim.set_price(BTC, 45_800)
        done = await broker.stop_status(ref_of(placed))
        assert done.status == StopStatus.FILLED and done.fill is not None
        assert done.fill.qty == pytest.approx(0.02) and done.fill.price == 45_800
        assert done.fill.fee == pytest.approx(0.02 * 45_800 * 0.001)
        assert one_fill(sim, f"st{market}-2") == Decimal("0.02")
        again = await broker.cancel_stop(ref_of(placed))  # too late: it says what happened
        assert again.status == StopStatus.FILLED and again.sold == pytest.approx(0.02)
        assert (await broker.balances()).holdings == {}
    finally:
        await broker.close()


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_a_cancelled_stop_is_gone_and_says_so(sim: ExchangeSim, market: str) -> None:
    broker = make_broker(sim, market)
    try:
        await broker.place_order(order(f"sc{market}-1", qty=0.02))
        placed = await broker.place_stop(stop(f"sc{market}-2"))
        cancelled = await broker.cancel_stop(ref_of(placed))
        assert cancelled.status == StopStatus.CANCELED and cancelled.sold == 0
        sim.set_price(BTC, 40_000)
        assert f"sc{market}-2" not in sim.ledger
        assert (await broker.balances()).holdings == {BTC: pytest.approx(0.02)}
    finally:
        await broker.close()


async def test_a_stop_placed_despite_a_lost_answer_is_found_not_doubled(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    await spot.place_order(order("sl-1", qty=0.02))
    sim.fault(FaultKind.ERROR_AFTER, path="/api/v3/order", method="POST")
    placed = await spot.place_stop(stop("sl-2"))
    assert placed.working
    retried = await spot.stops.place(stop("sl-2"), retried=True)
    assert retried.working and retried.venue_order_id == placed.venue_order_id
    assert len(await spot.exchange.fetch_open_orders(BTC)) == 1


async def test_a_stop_that_would_trigger_at_once_is_refused(
    sim: ExchangeSim, spot: ExchangeBroker
) -> None:
    await spot.place_order(order("si-1", qty=0.02))
    refused = await spot.place_stop(stop("si-2", price=51_000))  # above the 50,000 last
    assert refused.status == StopStatus.REJECTED and "OrderImmediatelyFillable" in refused.reason
    tiny = await spot.place_stop(stop("si-3", qty=0.00001))
    assert tiny.status == StopStatus.REJECTED and tiny.reason.startswith("not sent")


async def test_futures_funding_is_read_and_journaled_once(
    sim: ExchangeSim, usdm: ExchangeBroker, tmp_path
) -> None:
    from activities.journal import Journal
    from trading.config import Settings
    from workers.reconcile import journal_income

    await usdm.place_order(order("fund-1", qty=0.02))
    paid = sim.pay_funding(BTC, 0.0001)  # longs pay when the rate is positive
    entries = await usdm.income(0)
    assert [(e.symbol, e.kind) for e in entries] == [(BTC, "FUNDING_FEE")]
    assert entries[0].amount == pytest.approx(-float(abs(paid))) and entries[0].amount < 0
    journal = Journal(tmp_path / "journal.db")
    settings = Settings(_env_file=None, home=tmp_path, account="acct")
    assert await journal_income(settings, usdm, journal) == 1
    assert await journal_income(settings, usdm, journal) == 0  # once per exchange id
    assert [e.income_id for e in journal.income("acct")] == [entries[0].income_id]
    assert await make_broker(sim).income(0) == []  # spot has no funding


async def test_futures_leverage_and_margin_mode_come_from_the_config(sim: ExchangeSim) -> None:
    broker = make_broker(sim, "futures", leverage=2, margin_mode="cross")
    try:
        await broker.start()
        sent = {r.path: r.params for r in sim.requests if r.method == "POST"}
        assert sent["/fapi/v1/leverage"]["leverage"] == "2"
        assert sent["/fapi/v1/marginType"]["marginType"] == "CROSSED"
        assert {r.params["symbol"] for r in sim.requests if r.path == "/fapi/v1/leverage"} == {
            "BTCUSDT",
            "ETHUSDT",
        }
    finally:
        await broker.close()
