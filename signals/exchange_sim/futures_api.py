"""USDⓈ-M ``/fapi`` endpoints in the versions ccxt 4.5.x calls.

Orders on ``v1/order``; conditional orders on ``v1/algoOrder`` / ``v1/openAlgoOrders`` /
``v1/allAlgoOrders``; balance on ``v3/account`` (``v2`` when ccxt's ``useV2``); positions on
``v3/positionRisk`` (``v2`` likewise) after ``v1/leverageBracket``; settings on ``v1/leverage``,
``v1/marginType``, ``v1/symbolConfig``; funding on ``v1/income``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from signals.exchange_sim import futures_payloads as out
from signals.exchange_sim.core import Core
from signals.exchange_sim.errors import BinanceError, mandatory, no_such_order
from signals.exchange_sim.futures import FuturesBook
from signals.exchange_sim.markets import Market, exchange_info, futures_symbol_info
from signals.exchange_sim.numbers import ZERO, fmt
from signals.exchange_sim.routing import Ctx, Route

V1, V2, V3 = "/fapi/v1", "/fapi/v2", "/fapi/v3"


class FuturesApi:
    def __init__(self, core: Core, book: FuturesBook) -> None:
        self.core = core
        self.book = book
        self.funding_rate = Decimal("0.0001")  # shown by premiumIndex

    def routes(self) -> list[Route]:
        return [
            Route("GET", f"{V1}/ping", lambda ctx: {}),
            Route("GET", f"{V1}/time", lambda ctx: {"serverTime": self.core.clock_ms()}),
            Route("GET", f"{V1}/exchangeInfo", self.exchange_info),
            Route("GET", f"{V1}/ticker/price", self.ticker_price),
            Route("GET", f"{V2}/ticker/price", self.ticker_price),
            Route("GET", f"{V1}/ticker/24hr", self.ticker_24hr),
            Route("GET", f"{V1}/premiumIndex", self.premium_index),
            Route("POST", f"{V1}/order", self.new_order, signed=True),
            Route("GET", f"{V1}/order", self.query_order, signed=True),
            Route("DELETE", f"{V1}/order", self.cancel_order, signed=True),
            Route("GET", f"{V1}/openOrders", self.open_orders, signed=True),
            Route("DELETE", f"{V1}/allOpenOrders", self.cancel_all, signed=True),
            Route("GET", f"{V1}/allOrders", self.all_orders, signed=True),
            Route("GET", f"{V1}/userTrades", self.user_trades, signed=True),
            Route("POST", f"{V1}/algoOrder", self.new_algo, signed=True),
            Route("GET", f"{V1}/algoOrder", self.query_algo, signed=True),
            Route("DELETE", f"{V1}/algoOrder", self.cancel_algo, signed=True),
            Route("GET", f"{V1}/openAlgoOrders", self.open_algos, signed=True),
            Route("GET", f"{V1}/allAlgoOrders", self.all_algos, signed=True),
            Route("DELETE", f"{V1}/algoOpenOrders", self.cancel_all_algos, signed=True),
            Route("GET", f"{V2}/account", self.account_v2, signed=True),
            Route("GET", f"{V3}/account", self.account_v3, signed=True),
            Route("GET", f"{V2}/balance", self.balance, signed=True),
            Route("GET", f"{V3}/balance", self.balance, signed=True),
            Route("GET", f"{V2}/positionRisk", self.position_risk_v2, signed=True),
            Route("GET", f"{V3}/positionRisk", self.position_risk_v3, signed=True),
            Route("GET", f"{V1}/leverageBracket", self.leverage_bracket, signed=True),
            Route("POST", f"{V1}/leverage", self.leverage, signed=True),
            Route("POST", f"{V1}/marginType", self.margin_type, signed=True),
            Route("GET", f"{V1}/symbolConfig", self.symbol_config, signed=True),
            Route("GET", f"{V1}/positionSide/dual", self.position_mode, signed=True),
            Route("POST", f"{V1}/positionSide/dual", self.set_position_mode, signed=True),
            Route(
                "GET",
                f"{V1}/multiAssetsMargin",
                lambda ctx: {"multiAssetsMargin": False},
                signed=True,
            ),
            Route("GET", f"{V1}/commissionRate", self.commission_rate, signed=True),
            Route("GET", f"{V1}/income", self.income, signed=True),
        ]

    # ------------------------------------------------------------ helpers

    def _markets(self) -> list[Market]:
        return list(self.core.futures_markets.values())

    def _market(self, ctx: Ctx, required: bool = True) -> Market | None:
        symbol = ctx.params.req("symbol") if required else ctx.params.opt("symbol")
        return self.core.market(True, symbol) if symbol is not None else None

    def _selected(self, ctx: Ctx) -> list[Market]:
        market = self._market(ctx, required=False)
        return [market] if market is not None else self._markets()

    def _one_or_all(self, ctx: Ctx, rows: list[Any]) -> Any:
        return rows[0] if ctx.params.has("symbol") else rows

    def _last(self, market: Market) -> str:
        quote = self.core.quote(market)
        return fmt(quote.price if quote else ZERO, market.rules.price_places)

    # ------------------------------------------------------------ public

    def exchange_info(self, ctx: Ctx) -> Any:
        return exchange_info(
            [futures_symbol_info(m) for m in self._markets()], True, self.core.clock_ms()
        )

    def ticker_price(self, ctx: Ctx) -> Any:
        now = self.core.clock_ms()
        rows = [{"symbol": m.id, "price": self._last(m), "time": now} for m in self._selected(ctx)]
        return self._one_or_all(ctx, rows)

    def ticker_24hr(self, ctx: Ctx) -> Any:
        now = self.core.clock_ms()
        rows = []
        for m in self._selected(ctx):
            px = self._last(m)
            rows.append(
                {
                    "symbol": m.id,
                    "priceChange": "0",
                    "priceChangePercent": "0",
                    "weightedAvgPrice": px,
                    "lastPrice": px,
                    "lastQty": "0",
                    "openPrice": px,
                    "highPrice": px,
                    "lowPrice": px,
                    "volume": "0",
                    "quoteVolume": "0",
                    "openTime": now - 86_400_000,
                    "closeTime": now,
                    "firstId": 0,
                    "lastId": 0,
                    "count": 0,
                }
            )
        return self._one_or_all(ctx, rows)

    def premium_index(self, ctx: Ctx) -> Any:
        now = self.core.clock_ms()
        rows = [
            {
                "symbol": m.id,
                "markPrice": self._last(m),
                "indexPrice": self._last(m),
                "estimatedSettlePrice": self._last(m),
                "lastFundingRate": fmt(self.funding_rate),
                "interestRate": "0.00010000",
                "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000,
                "time": now,
            }
            for m in self._selected(ctx)
        ]
        return self._one_or_all(ctx, rows)

    # ------------------------------------------------------------ orders

    def new_order(self, ctx: Ctx) -> Any:
        order = self.book.place(ctx.params, ctx.partial)
        return out.order(order, self.core.market(True, order.symbol))

    def query_order(self, ctx: Ctx) -> Any:
        order = self.book.find(ctx.params)
        if ctx.lost():
            raise no_such_order()
        return out.order(order, self.core.market(True, order.symbol))

    def cancel_order(self, ctx: Ctx) -> Any:
        order = self.book.cancel(ctx.params)
        return out.order(order, self.core.market(True, order.symbol))

    def open_orders(self, ctx: Ctx) -> Any:
        return [
            out.order(o, self.core.market(True, o.symbol))
            for o in self.book.open_orders(ctx.params.opt("symbol"))
        ]

    def cancel_all(self, ctx: Ctx) -> Any:
        self.book.cancel_all(ctx.params.req("symbol"))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def all_orders(self, ctx: Ctx) -> Any:
        market = self._market(ctx)
        assert market is not None
        p = ctx.params
        from_id, start, end = p.int("orderId"), p.int("startTime"), p.int("endTime")
        limit = min(p.int("limit", 500) or 500, 1000)
        rows = [
            o
            for o in self.book.state.orders.values()
            if o.symbol == market.id
            and (from_id is None or o.order_id >= from_id)
            and (start is None or o.time >= start)
            and (end is None or o.time <= end)
        ]
        return [out.order(o, market) for o in rows[:limit]]

    def user_trades(self, ctx: Ctx) -> Any:
        market = self._market(ctx)
        assert market is not None
        p = ctx.params
        order_id, from_id = p.int("orderId"), p.int("fromId")
        start, end = p.int("startTime"), p.int("endTime")
        limit = min(p.int("limit", 500) or 500, 1000)
        fills = [
            f
            for f in self.core.ledger
            if f.market == "futures"
            and f.symbol == market.id
            and (order_id is None or f.order_id == order_id)
            and (from_id is None or f.trade_id >= from_id)
            and (start is None or f.time_ms >= start)
            and (end is None or f.time_ms <= end)
        ]
        return [out.user_trade(f, market) for f in fills[:limit]]

    # ------------------------------------------------------------ algo orders

    def new_algo(self, ctx: Ctx) -> Any:
        algo = self.book.algo.place(ctx.params)
        return out.algo_order(algo, self.core.market(True, algo.symbol))

    def query_algo(self, ctx: Ctx) -> Any:
        algo = self.book.algo.find(ctx.params)
        if ctx.lost():
            raise no_such_order()
        return out.algo_order(algo, self.core.market(True, algo.symbol))

    def cancel_algo(self, ctx: Ctx) -> Any:
        return out.algo_cancel(self.book.algo.cancel(ctx.params))

    def open_algos(self, ctx: Ctx) -> Any:
        return [
            out.algo_order(a, self.core.market(True, a.symbol))
            for a in self.book.algo.open(ctx.params.opt("symbol"))
        ]

    def all_algos(self, ctx: Ctx) -> Any:
        market = self._market(ctx)
        assert market is not None
        return [
            out.algo_order(a, market)
            for a in self.book.state.algos.values()
            if a.symbol == market.id
        ]

    def cancel_all_algos(self, ctx: Ctx) -> Any:
        self.book.algo.cancel_all(ctx.params.req("symbol"))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ------------------------------------------------------------ account

    def account_v2(self, ctx: Ctx) -> Any:
        return out.account_v2(self.book, self._markets())

    def account_v3(self, ctx: Ctx) -> Any:
        return out.account_v3(self.book, self._markets())

    def balance(self, ctx: Ctx) -> Any:
        return out.balance(self.book, self._markets())

    def position_risk_v2(self, ctx: Ctx) -> Any:
        return out.position_risk_v2(self.book, self._selected(ctx))

    def position_risk_v3(self, ctx: Ctx) -> Any:
        return out.position_risk_v3(self.book, self._selected(ctx))

    def leverage_bracket(self, ctx: Ctx) -> Any:
        return [out.leverage_bracket(m) for m in self._selected(ctx)]

    def leverage(self, ctx: Ctx) -> Any:
        market = self._market(ctx)
        assert market is not None
        value = ctx.params.int("leverage")
        if value is None:
            raise mandatory("leverage")
        settings = self.book.set_leverage(market.id, value)
        return {"leverage": settings.leverage, "maxNotionalValue": "50000000", "symbol": market.id}

    def margin_type(self, ctx: Ctx) -> Any:
        market = self._market(ctx)
        assert market is not None
        self.book.set_margin_type(market.id, ctx.params.req("marginType"))
        return {"code": 200, "msg": "success"}

    def symbol_config(self, ctx: Ctx) -> Any:
        return [out.symbol_config(self.book, m) for m in self._selected(ctx)]

    def position_mode(self, ctx: Ctx) -> Any:
        return {"dualSidePosition": False}

    def set_position_mode(self, ctx: Ctx) -> Any:
        if not ctx.params.bool("dualSidePosition"):
            raise BinanceError(-4059, "No need to change position side.")
        raise BinanceError(-1000, "Hedge mode is not supported by the exchange simulator.")

    def commission_rate(self, ctx: Ctx) -> Any:
        market = self._market(ctx)
        assert market is not None
        rate = fmt(self.core.config.fee_rate, 6)
        return {"symbol": market.id, "makerCommissionRate": rate, "takerCommissionRate": rate}

    def income(self, ctx: Ctx) -> Any:
        p = ctx.params
        symbol, kind = p.opt("symbol"), p.opt("incomeType")
        if symbol is not None:
            self.core.market(True, symbol)
        start, end = p.int("startTime"), p.int("endTime")
        limit = min(p.int("limit", 100) or 100, 1000)
        rows = [
            i
            for i in self.book.state.income
            if (symbol is None or i.symbol == symbol)
            and (kind is None or i.income_type == kind)
            and (start is None or i.time >= start)
            and (end is None or i.time <= end)
        ]
        return [out.income(i) for i in rows[:limit]]
