"""USDⓈ-M ``/fapi`` JSON shapes, field for field as Binance answers them (numbers as strings)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from signals.exchange_sim.futures import MARGIN_ASSET, FuturesBook, Income
from signals.exchange_sim.ledger import Fill
from signals.exchange_sim.markets import Market
from signals.exchange_sim.numbers import ZERO, fmt
from signals.exchange_sim.orders import AlgoOrder, Order

_NOTIONAL_CAP = Decimal("50000000")


def order(o: Order, market: Market) -> dict[str, Any]:
    pp, qp = market.rules.price_places, market.rules.qty_places
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": fmt(o.price or ZERO, pp),
        "avgPrice": fmt(o.avg_price, pp + 3),
        "origQty": fmt(o.qty, qp),
        "executedQty": fmt(o.executed_qty, qp),
        "cumQty": fmt(o.executed_qty, qp),
        "cumQuote": fmt(o.cum_quote, 5),
        "timeInForce": o.time_in_force or "GTC",
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": "BOTH",
        "stopPrice": fmt(o.stop_price or ZERO, pp),
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": o.orig_type or o.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "time": o.time,
        "updateTime": o.update_time,
    }


def algo_order(a: AlgoOrder, market: Market) -> dict[str, Any]:
    pp, qp = market.rules.price_places, market.rules.qty_places
    child = a.child
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": a.time_in_force,
        "quantity": fmt(a.qty, qp),
        "algoStatus": a.status,
        "actualOrderId": str(child.order_id) if child is not None else "",
        "actualPrice": fmt(child.avg_price, pp) if child is not None else fmt(ZERO, pp),
        "executedQty": fmt(child.executed_qty if child is not None else ZERO, qp),
        "avgPrice": fmt(child.avg_price if child is not None else ZERO, pp),
        "triggerPrice": fmt(a.trigger_price, pp),
        "price": fmt(a.price or ZERO, pp),
        "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0,
    }


def algo_cancel(a: AlgoOrder) -> dict[str, Any]:
    return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}


def user_trade(f: Fill, market: Market) -> dict[str, Any]:
    pp, qp = market.rules.price_places, market.rules.qty_places
    return {
        "buyer": f.side == "BUY",
        "commission": fmt(f.fee),
        "commissionAsset": f.fee_asset,
        "id": f.trade_id,
        "maker": f.is_maker,
        "orderId": f.order_id,
        "price": fmt(f.price, pp),
        "qty": fmt(f.qty, qp),
        "quoteQty": fmt(f.quote_qty),
        "realizedPnl": fmt(f.realized_pnl),
        "side": f.side,
        "positionSide": "BOTH",
        "symbol": f.symbol,
        "time": f.time_ms,
    }


def income(i: Income) -> dict[str, Any]:
    return {
        "symbol": i.symbol,
        "incomeType": i.income_type,
        "income": fmt(i.income),
        "asset": MARGIN_ASSET,
        "info": i.info,
        "time": i.time,
        "tranId": i.tran_id,
        "tradeId": i.trade_id,
    }


# ---------------------------------------------------------------- account and positions


def _position_numbers(book: FuturesBook, m: Market) -> dict[str, Any]:
    pos = book.position(m.id)
    settings = book.settings(m.id)
    mark = book.mark(m)
    upnl = book.unrealized(m)
    notional = pos.amount * mark
    isolated = settings.margin_type == "ISOLATED"
    initial = abs(notional) / settings.leverage
    return {
        "symbol": m.id,
        "positionSide": "BOTH",
        "positionAmt": fmt(pos.amount, m.rules.qty_places),
        "entryPrice": fmt(pos.entry),
        "breakEvenPrice": fmt(pos.entry),
        "markPrice": fmt(mark),
        "unRealizedProfit": fmt(upnl),
        "liquidationPrice": _liquidation(book, m),
        "isolatedMargin": fmt(pos.isolated_wallet + upnl if isolated and pos.amount else ZERO),
        "notional": fmt(notional),
        "isolatedWallet": fmt(pos.isolated_wallet if isolated else ZERO),
        "initialMargin": fmt(initial + book.order_margin(m.id)),
        "maintMargin": fmt(abs(notional) * m.rules.maint_margin_ratio),
        "positionInitialMargin": fmt(initial),
        "openOrderInitialMargin": fmt(book.order_margin(m.id)),
        "updateTime": pos.update_time,
        "_isolated": isolated,
        "_leverage": settings.leverage,
        "_margin_type": settings.margin_type,
    }


def _liquidation(book: FuturesBook, m: Market) -> str:
    """Binance answers "0" where there is no liquidation price (no position, a 1x long)."""
    price = book.liquidation_price(m)
    return fmt(price) if price > 0 else "0"


def position_risk_v3(book: FuturesBook, markets: list[Market]) -> list[dict[str, Any]]:
    """v3: only symbols with a position or open orders, no leverage / marginType fields."""
    rows = []
    for m in markets:
        if not book.position(m.id).amount and not book.open_orders(m.id):
            continue
        n = _position_numbers(book, m)
        rows.append(
            {
                **{k: v for k, v in n.items() if not k.startswith("_")},
                "adl": 0,
                "bidNotional": "0",
                "askNotional": "0",
                "marginAsset": MARGIN_ASSET,
            }
        )
    return rows


def position_risk_v2(book: FuturesBook, markets: list[Market]) -> list[dict[str, Any]]:
    rows = []
    for m in markets:
        n = _position_numbers(book, m)
        rows.append(
            {
                "symbol": m.id,
                "positionAmt": n["positionAmt"],
                "entryPrice": n["entryPrice"],
                "breakEvenPrice": n["breakEvenPrice"],
                "markPrice": n["markPrice"],
                "unRealizedProfit": n["unRealizedProfit"],
                "liquidationPrice": n["liquidationPrice"],
                "leverage": str(n["_leverage"]),
                "maxNotionalValue": fmt(_NOTIONAL_CAP, 0),
                "marginType": "isolated" if n["_isolated"] else "cross",
                "isolatedMargin": n["isolatedMargin"],
                "isAutoAddMargin": "false",
                "positionSide": "BOTH",
                "notional": n["notional"],
                "isolatedWallet": n["isolatedWallet"],
                "updateTime": n["updateTime"],
                "isolated": n["_isolated"],
                "adlQuantile": 0,
            }
        )
    return rows


def _totals(book: FuturesBook, markets: list[Market]) -> dict[str, Decimal]:
    wallet = book.state.wallet
    upnl = sum((book.unrealized(m) for m in markets), ZERO)
    pos_im = sum(
        (
            abs(book.position(m.id).amount) * book.mark(m) / book.settings(m.id).leverage
            for m in markets
        ),
        ZERO,
    )
    order_im = book.order_margin()
    maint = sum(
        (
            abs(book.position(m.id).amount) * book.mark(m) * m.rules.maint_margin_ratio
            for m in markets
        ),
        ZERO,
    )
    cross_upnl = sum(
        (book.unrealized(m) for m in markets if book.settings(m.id).margin_type == "CROSSED"), ZERO
    )
    iso = sum(
        (
            book.position(m.id).isolated_wallet
            for m in markets
            if book.settings(m.id).margin_type == "ISOLATED"
        ),
        ZERO,
    )
    available = book.available()
    return {
        "wallet": wallet,
        "upnl": upnl,
        "margin_balance": wallet + upnl,
        "pos_im": pos_im,
        "order_im": order_im,
        "initial": pos_im + order_im,
        "maint": maint,
        "cross_wallet": wallet - iso,
        "cross_upnl": cross_upnl,
        "available": available,
        "max_withdraw": max(ZERO, min(available, wallet)),
    }


def _asset(book: FuturesBook, t: dict[str, Decimal]) -> dict[str, Any]:
    return {
        "asset": MARGIN_ASSET,
        "walletBalance": fmt(t["wallet"]),
        "unrealizedProfit": fmt(t["upnl"]),
        "marginBalance": fmt(t["margin_balance"]),
        "maintMargin": fmt(t["maint"]),
        "initialMargin": fmt(t["initial"]),
        "positionInitialMargin": fmt(t["pos_im"]),
        "openOrderInitialMargin": fmt(t["order_im"]),
        "crossWalletBalance": fmt(t["cross_wallet"]),
        "crossUnPnl": fmt(t["cross_upnl"]),
        "availableBalance": fmt(t["available"]),
        "maxWithdrawAmount": fmt(t["max_withdraw"]),
        "marginAvailable": True,
        "updateTime": book.update_time,  # ccxt skips an asset whose updateTime is 0
    }


def _account_totals(t: dict[str, Decimal]) -> dict[str, Any]:
    return {
        "totalInitialMargin": fmt(t["initial"]),
        "totalMaintMargin": fmt(t["maint"]),
        "totalWalletBalance": fmt(t["wallet"]),
        "totalUnrealizedProfit": fmt(t["upnl"]),
        "totalMarginBalance": fmt(t["margin_balance"]),
        "totalPositionInitialMargin": fmt(t["pos_im"]),
        "totalOpenOrderInitialMargin": fmt(t["order_im"]),
        "totalCrossWalletBalance": fmt(t["cross_wallet"]),
        "totalCrossUnPnl": fmt(t["cross_upnl"]),
        "availableBalance": fmt(t["available"]),
        "maxWithdrawAmount": fmt(t["max_withdraw"]),
    }


def account_v3(book: FuturesBook, markets: list[Market]) -> dict[str, Any]:
    t = _totals(book, markets)
    positions = []
    for m in markets:
        if not book.position(m.id).amount:
            continue
        n = _position_numbers(book, m)
        positions.append(
            {
                "symbol": m.id,
                "positionSide": "BOTH",
                "positionAmt": n["positionAmt"],
                "unrealizedProfit": n["unRealizedProfit"],
                "isolatedMargin": n["isolatedMargin"],
                "notional": n["notional"],
                "isolatedWallet": n["isolatedWallet"],
                "initialMargin": n["initialMargin"],
                "maintMargin": n["maintMargin"],
                "updateTime": n["updateTime"],
            }
        )
    return {**_account_totals(t), "assets": [_asset(book, t)], "positions": positions}


def account_v2(book: FuturesBook, markets: list[Market]) -> dict[str, Any]:
    t = _totals(book, markets)
    positions = []
    for m in markets:
        n = _position_numbers(book, m)
        positions.append(
            {
                "symbol": m.id,
                "initialMargin": n["initialMargin"],
                "maintMargin": n["maintMargin"],
                "unrealizedProfit": n["unRealizedProfit"],
                "positionInitialMargin": n["positionInitialMargin"],
                "openOrderInitialMargin": n["openOrderInitialMargin"],
                "leverage": str(n["_leverage"]),
                "isolated": n["_isolated"],
                "entryPrice": n["entryPrice"],
                "breakEvenPrice": n["breakEvenPrice"],
                "maxNotional": fmt(_NOTIONAL_CAP, 0),
                "positionSide": "BOTH",
                "positionAmt": n["positionAmt"],
                "notional": n["notional"],
                "isolatedWallet": n["isolatedWallet"],
                "updateTime": n["updateTime"],
                "bidNotional": "0",
                "askNotional": "0",
            }
        )
    return {
        "feeTier": 0,
        "feeBurn": False,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        "tradeGroupId": -1,
        **_account_totals(t),
        "assets": [_asset(book, t)],
        "positions": positions,
    }


def balance(book: FuturesBook, markets: list[Market]) -> list[dict[str, Any]]:
    t = _totals(book, markets)
    return [
        {
            "accountAlias": "SgsR",
            "asset": MARGIN_ASSET,
            "balance": fmt(t["wallet"]),
            "crossWalletBalance": fmt(t["cross_wallet"]),
            "crossUnPnl": fmt(t["cross_upnl"]),
            "availableBalance": fmt(t["available"]),
            "maxWithdrawAmount": fmt(t["max_withdraw"]),
            "marginAvailable": True,
            "updateTime": book.update_time,
        }
    ]


def leverage_bracket(m: Market) -> dict[str, Any]:
    return {
        "symbol": m.id,
        "notionalCoef": 1.0,
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": m.rules.max_leverage,
                "notionalCap": int(_NOTIONAL_CAP),
                "notionalFloor": 0,
                "maintMarginRatio": float(m.rules.maint_margin_ratio),
                "cum": 0.0,
            }
        ],
    }


def symbol_config(book: FuturesBook, m: Market) -> dict[str, Any]:
    s = book.settings(m.id)
    return {
        "symbol": m.id,
        "marginType": s.margin_type,
        "isAutoAddMargin": False,
        "leverage": s.leverage,
        "maxNotionalValue": fmt(_NOTIONAL_CAP, 0),
    }
