"""Binance answers, as ccxt returns them, turned into order events (``trading/order_state.py``).

The broker never edits an order by hand: whatever the exchange says (a create or cancel answer,
a query, the trades of an order) becomes an ``OrderLookedUp`` or ``OrderFilled`` and is applied.
Raw fields (``order['info']``) are read where ccxt's unified ones lose precision or meaning:
Binance's status names, ``executedQty`` and the quote total (spot ``cummulativeQuoteQty``,
futures ``cumQuote``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from trading.order_state import OrderFilled, OrderLookedUp, parse_venue_status

# converts (fee amount, fee asset, trade price) to the quote currency; None when it cannot
FeeToQuote = Callable[[float, str, float], float | None]


def num(value: Any) -> float:
    """A venue's number (text or float) as a float; 0 for missing, unreadable or not finite."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def looked_up(order: Mapping[str, Any], client_order_id: str, now_ms: int) -> OrderLookedUp:
    """The venue's snapshot of one order (a ccxt order structure). Raises ``ValueError`` when
    the answer is not a usable snapshot (no id or no status: an ACK answer)."""
    info = order.get("info") or {}
    venue_id = info.get("orderId") or order.get("id")
    raw_status = info.get("status") or order.get("status")
    if venue_id in (None, "") or not raw_status:
        raise ValueError(f"order {client_order_id}: answer without an id or a status")
    executed = num(info.get("executedQty", order.get("filled")))
    quote = num(info.get("cummulativeQuoteQty", info.get("cumQuote", order.get("cost"))))
    if executed > 0 and quote <= 0:  # a venue that sent no quote total: price it at the average
        quote = executed * num(info.get("avgPrice") or order.get("average"))
    if executed <= 0 or quote <= 0:
        executed = quote = 0.0
    return OrderLookedUp(
        client_order_id=client_order_id,
        time_ms=now_ms,
        venue_order_id=str(venue_id),
        status=parse_venue_status(str(raw_status)),
        executed_qty=executed,
        cum_quote=quote,
    )


def trade_fills(
    trades: list[Mapping[str, Any]],
    client_order_id: str,
    venue_order_id: str,
    fee_to_quote: FeeToQuote,
    *,
    own_answer: bool = False,
) -> list[OrderFilled]:
    """The trades of one order as fill events, fees converted to the quote currency.

    Trades of other orders are skipped (a symbol's trade list holds them all); the fills of a
    spot FULL create answer (``own_answer``) name no order and are all this one's. A fee whose
    asset cannot be priced keeps ``fee_quote`` 0 and the asset in ``fee_asset``: the broker
    estimates it from its fee rate and says so."""
    fills: list[OrderFilled] = []
    for t in trades:
        if not own_answer and str(t.get("order")) != venue_order_id:
            continue
        qty, price = num(t.get("amount")), num(t.get("price"))
        if qty <= 0 or price <= 0:
            raise ValueError(f"order {client_order_id}: trade {t.get('id')} without qty or price")
        fee = t.get("fee") or {}
        cost, asset = num(fee.get("cost")), str(fee.get("currency") or "")
        in_quote = fee_to_quote(cost, asset, price) if cost else 0.0
        fills.append(
            OrderFilled(
                client_order_id=client_order_id,
                time_ms=int(t.get("timestamp") or 0),
                trade_id=str(t.get("id")),
                venue_order_id=venue_order_id,
                qty=qty,
                price=price,
                fee=cost,
                fee_asset=asset,
                fee_quote=in_quote if in_quote is not None else 0.0,
            )
        )
    return fills
