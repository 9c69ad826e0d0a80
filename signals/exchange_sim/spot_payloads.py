"""Spot ``/api/v3`` JSON shapes, field for field as Binance answers them (numbers as strings)."""

from __future__ import annotations

from typing import Any

from signals.exchange_sim.ledger import Fill
from signals.exchange_sim.numbers import ZERO, fmt
from signals.exchange_sim.orders import Order


def _stop_fields(order: Order) -> dict[str, Any]:
    return {"stopPrice": fmt(order.stop_price)} if order.stop_price is not None else {}


def order_ack(order: Order) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": order.time,
    }


def order_result(order: Order) -> dict[str, Any]:
    return {
        **order_ack(order),
        "price": fmt(order.price or ZERO),
        "origQty": fmt(order.qty),
        "executedQty": fmt(order.executed_qty),
        "origQuoteOrderQty": fmt(order.quote_order_qty),
        "cummulativeQuoteQty": fmt(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force or "GTC",
        "type": order.type,
        "side": order.side,
        **_stop_fields(order),
        "workingTime": order.working_time,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def order_full(order: Order) -> dict[str, Any]:
    return {
        **order_result(order),
        "fills": [
            {
                "price": fmt(f.price),
                "qty": fmt(f.qty),
                "commission": fmt(f.fee),
                "commissionAsset": f.fee_asset,
                "tradeId": f.trade_id,
            }
            for f in order.fills
        ],
    }


def new_order(order: Order, resp_type: str) -> dict[str, Any]:
    if resp_type == "ACK":
        return order_ack(order)
    if resp_type == "RESULT":
        return order_result(order)
    return order_full(order)


def order_query(order: Order) -> dict[str, Any]:
    """GET /api/v3/order, openOrders and allOrders rows."""
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": fmt(order.price or ZERO),
        "origQty": fmt(order.qty),
        "executedQty": fmt(order.executed_qty),
        "cummulativeQuoteQty": fmt(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force or "GTC",
        "type": order.type,
        "side": order.side,
        "stopPrice": fmt(order.stop_price or ZERO),
        "icebergQty": fmt(ZERO),
        "time": order.time,
        "updateTime": order.update_time,
        "isWorking": order.working,
        "workingTime": order.working_time,
        "origQuoteOrderQty": fmt(order.quote_order_qty),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def order_cancel(order: Order, cancel_client_id: str) -> dict[str, Any]:
    """DELETE /api/v3/order: ``clientOrderId`` is the *cancel's* id, the order's is ``orig``."""
    return {
        "symbol": order.symbol,
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": order.update_time,
        "price": fmt(order.price or ZERO),
        "origQty": fmt(order.qty),
        "executedQty": fmt(order.executed_qty),
        "origQuoteOrderQty": fmt(order.quote_order_qty),
        "cummulativeQuoteQty": fmt(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force or "GTC",
        "type": order.type,
        "side": order.side,
        **_stop_fields(order),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def my_trade(fill: Fill) -> dict[str, Any]:
    return {
        "symbol": fill.symbol,
        "id": fill.trade_id,
        "orderId": fill.order_id,
        "orderListId": -1,
        "price": fmt(fill.price),
        "qty": fmt(fill.qty),
        "quoteQty": fmt(fill.quote_qty),
        "commission": fmt(fill.fee),
        "commissionAsset": fill.fee_asset,
        "time": fill.time_ms,
        "isBuyer": fill.side == "BUY",
        "isMaker": fill.is_maker,
        "isBestMatch": True,
    }


def account(
    balances: list[tuple[str, Any, Any]], fee_rate: Any, update_time: int, omit_zero: bool
) -> dict[str, Any]:
    rate = fmt(fee_rate)
    bps = int(fee_rate * 10000)
    rows = [
        {"asset": asset, "free": fmt(free), "locked": fmt(locked)}
        for asset, free, locked in balances
        if not (omit_zero and free == 0 and locked == 0)
    ]
    return {
        "makerCommission": bps,
        "takerCommission": bps,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate, "taker": rate, "buyer": fmt(ZERO), "seller": fmt(ZERO)},
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": update_time,
        "accountType": "SPOT",
        "balances": rows,
        "permissions": ["SPOT"],
        "uid": 354937868,
    }
