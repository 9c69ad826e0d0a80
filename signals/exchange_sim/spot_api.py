"""Spot ``/api/v3`` endpoints: parameters in, book operations, Binance JSON out."""

from __future__ import annotations

from typing import Any

from signals.exchange_sim import spot_payloads as out
from signals.exchange_sim.core import Core
from signals.exchange_sim.errors import mandatory, no_such_order
from signals.exchange_sim.markets import exchange_info, spot_symbol_info
from signals.exchange_sim.numbers import ZERO, fmt
from signals.exchange_sim.routing import Ctx, Route
from signals.exchange_sim.spot import SpotBook

BASE = "/api/v3"


class SpotApi:
    def __init__(self, core: Core, book: SpotBook) -> None:
        self.core = core
        self.book = book

    def routes(self) -> list[Route]:
        return [
            Route("GET", f"{BASE}/ping", self.ping),
            Route("GET", f"{BASE}/time", self.time),
            Route("GET", f"{BASE}/exchangeInfo", self.exchange_info),
            Route("GET", f"{BASE}/ticker/price", self.ticker_price),
            Route("GET", f"{BASE}/ticker/bookTicker", self.book_ticker),
            Route("GET", f"{BASE}/ticker/24hr", self.ticker_24hr),
            Route("POST", f"{BASE}/order", self.new_order, signed=True),
            Route("GET", f"{BASE}/order", self.query_order, signed=True),
            Route("DELETE", f"{BASE}/order", self.cancel_order, signed=True),
            Route("GET", f"{BASE}/openOrders", self.open_orders, signed=True),
            Route("DELETE", f"{BASE}/openOrders", self.cancel_open_orders, signed=True),
            Route("GET", f"{BASE}/allOrders", self.all_orders, signed=True),
            Route("GET", f"{BASE}/myTrades", self.my_trades, signed=True),
            Route("GET", f"{BASE}/account", self.account, signed=True),
        ]

    # ------------------------------------------------------------ public

    def ping(self, ctx: Ctx) -> Any:
        return {}

    def time(self, ctx: Ctx) -> Any:
        return {"serverTime": self.core.clock_ms()}

    def exchange_info(self, ctx: Ctx) -> Any:
        markets = self._selected(ctx)
        return exchange_info([spot_symbol_info(m) for m in markets], False, self.core.clock_ms())

    def _selected(self, ctx: Ctx) -> list:
        symbol = ctx.params.opt("symbol")
        if symbol is not None:
            return [self.core.market(False, symbol)]
        return list(self.core.spot_markets.values())

    def _last(self, market: Any) -> Any:
        quote = self.core.quote(market)
        return quote.price if quote is not None else ZERO

    def ticker_price(self, ctx: Ctx) -> Any:
        rows = [{"symbol": m.id, "price": fmt(self._last(m))} for m in self._selected(ctx)]
        return rows[0] if ctx.params.has("symbol") else rows

    def book_ticker(self, ctx: Ctx) -> Any:
        rows = []
        for m in self._selected(ctx):
            px = fmt(self._last(m))
            rows.append(
                {
                    "symbol": m.id,
                    "bidPrice": px,
                    "bidQty": "1000.00000000",
                    "askPrice": px,
                    "askQty": "1000.00000000",
                }
            )
        return rows[0] if ctx.params.has("symbol") else rows

    def ticker_24hr(self, ctx: Ctx) -> Any:
        now = self.core.clock_ms()
        rows = []
        for m in self._selected(ctx):
            px = fmt(self._last(m))
            rows.append(
                {
                    "symbol": m.id,
                    "priceChange": "0.00000000",
                    "priceChangePercent": "0.000",
                    "weightedAvgPrice": px,
                    "prevClosePrice": px,
                    "lastPrice": px,
                    "lastQty": "0.00000000",
                    "bidPrice": px,
                    "bidQty": "1000.00000000",
                    "askPrice": px,
                    "askQty": "1000.00000000",
                    "openPrice": px,
                    "highPrice": px,
                    "lowPrice": px,
                    "volume": "0.00000000",
                    "quoteVolume": "0.00000000",
                    "openTime": now - 86_400_000,
                    "closeTime": now,
                    "firstId": -1,
                    "lastId": -1,
                    "count": 0,
                }
            )
        return rows[0] if ctx.params.has("symbol") else rows

    # ------------------------------------------------------------ trading

    def new_order(self, ctx: Ctx) -> Any:
        order, resp_type = self.book.place(ctx.params, ctx.partial)
        return out.new_order(order, resp_type)

    def query_order(self, ctx: Ctx) -> Any:
        order = self.book.find(ctx.params)
        if ctx.lost():
            raise no_such_order()
        return out.order_query(order)

    def cancel_order(self, ctx: Ctx) -> Any:
        order = self.book.cancel(ctx.params)
        cancel_id = ctx.params.opt("newClientOrderId") or self.core.random_client_id()
        return out.order_cancel(order, cancel_id)

    def open_orders(self, ctx: Ctx) -> Any:
        return [out.order_query(o) for o in self.book.open_orders(ctx.params.opt("symbol"))]

    def cancel_open_orders(self, ctx: Ctx) -> Any:
        cancelled = self.book.cancel_all(ctx.params.opt("symbol") or "")
        return [out.order_cancel(o, self.core.random_client_id()) for o in cancelled]

    def all_orders(self, ctx: Ctx) -> Any:
        market = self.core.market(False, ctx.params.req("symbol"))
        p = ctx.params
        start, end = p.int("startTime"), p.int("endTime")
        from_id = p.int("orderId")
        limit = min(p.int("limit", 500) or 500, 1000)
        rows = [
            o
            for o in self.book.orders.values()
            if o.symbol == market.id
            and (from_id is None or o.order_id >= from_id)
            and (start is None or o.time >= start)
            and (end is None or o.time <= end)
        ]
        return [out.order_query(o) for o in rows[:limit]]

    def my_trades(self, ctx: Ctx) -> Any:
        p = ctx.params
        symbol = p.opt("symbol")
        if symbol is None:
            raise mandatory("symbol")
        market = self.core.market(False, symbol)
        order_id = p.int("orderId")
        start, end, from_id = p.int("startTime"), p.int("endTime"), p.int("fromId")
        limit = min(p.int("limit", 500) or 500, 1000)
        fills = [
            f
            for f in self.core.ledger
            if f.market == "spot"
            and f.symbol == market.id
            and (order_id is None or f.order_id == order_id)
            and (from_id is None or f.trade_id >= from_id)
            and (start is None or f.time_ms >= start)
            and (end is None or f.time_ms <= end)
        ]
        return [out.my_trade(f) for f in fills[:limit]]

    def account(self, ctx: Ctx) -> Any:
        assets = sorted(set(self.book.free) | set(self.book.locked))
        rows = [(a, self.book.free.get(a, ZERO), self.book.locked.get(a, ZERO)) for a in assets]
        return out.account(
            rows,
            self.core.config.fee_rate,
            self.book.update_time,
            ctx.params.bool("omitZeroBalances"),
        )
