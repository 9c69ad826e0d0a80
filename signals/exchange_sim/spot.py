"""The spot account and its matching: balances with free/locked, orders, fills.

Funds an order may need are *locked* when it is accepted (a BUY locks ``price × qty`` plus the
fee, a MARKET BUY the estimate at ``last ± slippage``; a SELL locks the base quantity) and given
back when the order ends. Fees are charged in the **quote asset** on both sides (Binance
charges the asset received, or BNB): a BUY of 0.01 BTC credits exactly 0.01 BTC and debits
``cost + fee`` USDT, a SELL credits ``cost - fee``. ``commissionAsset`` says so in every fill.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from signals.exchange_sim.core import Core
from signals.exchange_sim.errors import (
    BinanceError,
    bad_order_type,
    bad_side,
    bad_tif,
    illegal,
    insufficient_balance,
    mandatory,
    market_closed,
    no_such_order,
    not_required,
    unknown_order,
)
from signals.exchange_sim.ledger import Fill
from signals.exchange_sim.markets import Market, check_spot
from signals.exchange_sim.numbers import ONE, ZERO, dec, floor_to, money
from signals.exchange_sim.orders import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    LIMIT_TYPES,
    NEW,
    PARTIALLY_FILLED,
    SIDES,
    Order,
    PartialScript,
    execution_price,
    marketable,
    scripted_expiry,
    slice_qty,
    taker_price,
    triggered,
)
from signals.exchange_sim.params import Params

# type -> mandatory parameters (quantity / quoteOrderQty of MARKET are checked apart)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "LIMIT": ("timeInForce", "quantity", "price"),
    "MARKET": (),
    "LIMIT_MAKER": ("quantity", "price"),
    "STOP_LOSS": ("quantity", "stopPrice"),
    "STOP_LOSS_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
    "TAKE_PROFIT": ("quantity", "stopPrice"),
    "TAKE_PROFIT_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
}
_TIFS = ("GTC", "IOC", "FOK")
_RESP_TYPES = ("ACK", "RESULT", "FULL")


@dataclass
class _NewOrder:
    market: Market
    side: str
    type: str
    tif: str | None
    qty: Decimal  # from quoteOrderQty at the current price when that was sent
    quote_qty: Decimal | None
    price: Decimal | None
    stop: Decimal | None
    client_id: str
    resp_type: str


class SpotBook:
    def __init__(self, core: Core, balances: Mapping[str, float | str | Decimal]) -> None:
        self.core = core
        self.initial = {asset: dec(v) for asset, v in balances.items()}
        self.reset()

    def reset(self) -> None:
        self.free: dict[str, Decimal] = dict(self.initial)
        self.locked: dict[str, Decimal] = {}
        self.orders: dict[int, Order] = {}
        self.update_time = self.core.clock_ms()

    # ------------------------------------------------------------ balances

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        self.free[asset] = dec(free)

    def _lock(self, order: Order, asset: str, amount: Decimal) -> None:
        if self.free.get(asset, ZERO) < amount:
            raise insufficient_balance()
        self.free[asset] = self.free.get(asset, ZERO) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount
        order.locked, order.locked_asset = amount, asset

    def _spend(self, order: Order, asset: str, amount: Decimal) -> bool:
        """Take ``amount`` from the order's lock, then from free funds; False if short."""
        from_lock = min(amount, order.locked) if order.locked_asset == asset else ZERO
        rest = amount - from_lock
        if rest > self.free.get(asset, ZERO):
            return False
        if from_lock:
            order.locked -= from_lock
            self.locked[asset] -= from_lock
        if rest:
            self.free[asset] -= rest
        return True

    def _release(self, order: Order) -> None:
        if order.locked and order.locked_asset:
            self.locked[order.locked_asset] -= order.locked
            self.free[order.locked_asset] = self.free.get(order.locked_asset, ZERO) + order.locked
        order.locked = ZERO

    # ------------------------------------------------------------ lookups

    def find(self, p: Params, *, for_cancel: bool = False) -> Order:
        market = self.core.market(False, p.req("symbol"))
        order_id = p.int("orderId")
        client_id = p.opt("origClientOrderId")
        if order_id is None and client_id is None:
            raise BinanceError(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        not_found = unknown_order if for_cancel else no_such_order
        if order_id is not None:
            order = self.orders.get(order_id)
            if order is None or order.symbol != market.id:
                raise not_found()
            if client_id is not None and order.client_order_id != client_id:
                raise not_found()
            return order
        matches = [
            o
            for o in self.orders.values()
            if o.symbol == market.id and o.client_order_id == client_id
        ]
        if not matches:
            raise not_found()
        open_ones = [o for o in matches if o.is_open]
        return (open_ones or matches)[-1]  # the open one, else the latest with that id

    def open_orders(self, exchange_id: str | None) -> list[Order]:
        if exchange_id is not None:
            self.core.market(False, exchange_id)
        return [
            o
            for o in self.orders.values()
            if o.is_open and (exchange_id is None or o.symbol == exchange_id)
        ]

    # ------------------------------------------------------------ placing

    def place(self, p: Params, partial: PartialScript) -> tuple[Order, str]:
        """Validate, lock funds, record and match one order; returns it and its response type."""
        req = self._read(p)
        market = req.market
        quote = self.core.quote(market)
        last = quote.price if quote else None
        self._check(req, last)
        now = self.core.clock_ms()
        order = Order(
            market="spot",
            order_id=self.core.next_order_id(),
            client_order_id=req.client_id,
            symbol=market.id,
            side=req.side,
            type=req.type,
            time_in_force=req.tif,
            qty=req.qty,
            price=req.price,
            stop_price=req.stop,
            time=now,
            update_time=now,
            quote_order_qty=req.quote_qty or ZERO,
            working=req.stop is None,
            working_time=now if req.stop is None else -1,
            orig_type=req.type,
        )
        self._lock(order, *self._needs(order, market, last))
        order.expire_after = scripted_expiry(partial, order.qty, market.rules.step_size)
        self.orders[order.order_id] = order
        self._match(order, market, taker=True)
        return order, req.resp_type

    def _read(self, p: Params) -> _NewOrder:
        """The order's parameters, with Binance's rules on which a type needs or refuses."""
        market = self.core.market(False, p.req("symbol"))
        side = p.req("side")
        if side not in SIDES:
            raise bad_side()
        otype = p.req("type")
        if otype not in _REQUIRED:
            raise bad_order_type()
        for name in _REQUIRED[otype]:
            p.req(name)
        tif = p.opt("timeInForce")
        if "timeInForce" in _REQUIRED[otype]:
            if tif not in _TIFS:
                raise bad_tif()
        elif tif is not None:
            raise not_required("timeInForce")
        qty, quote_qty = p.dec("quantity"), p.dec("quoteOrderQty")
        if otype == "MARKET":
            if qty is None and quote_qty is None:
                raise BinanceError(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                )
            if qty is not None and quote_qty is not None:
                raise not_required("quoteOrderQty")
        elif quote_qty is not None:
            raise not_required("quoteOrderQty")
        price = p.dec("price")
        if price is not None and otype not in LIMIT_TYPES:
            raise not_required("price")
        stop = p.dec("stopPrice")
        if stop is not None and "stopPrice" not in _REQUIRED[otype]:
            raise not_required("stopPrice")
        pattern = self.core.config.spot_client_id_pattern
        client_id = p.opt("newClientOrderId") or self.core.random_client_id()
        if not re.match(pattern, client_id):
            raise illegal("newClientOrderId", pattern)
        resp_type = p.opt("newOrderRespType") or ("FULL" if otype in ("MARKET", "LIMIT") else "ACK")
        if resp_type not in _RESP_TYPES:
            raise BinanceError(-1136, "Invalid newOrderRespType.")
        return _NewOrder(
            market, side, otype, tif, qty or ZERO, quote_qty, price, stop, client_id, resp_type
        )

    def _check(self, req: _NewOrder, last: Decimal | None) -> None:
        """Uniqueness, filters and would-trigger checks against the current price."""
        if any(o.is_open and o.client_order_id == req.client_id for o in self.orders.values()):
            raise BinanceError(-2010, "Duplicate order sent.")
        needs_price = req.type == "MARKET" or req.stop is not None or req.type == "LIMIT_MAKER"
        if last is None and needs_price:
            raise market_closed()
        rules = req.market.rules
        if req.quote_qty is not None:
            assert last is not None
            px = taker_price(req.side, last, self.core.config.slippage, rules.tick_size)
            req.qty = floor_to(req.quote_qty / px, rules.step_size)
        check_spot(
            rules,
            price=req.price,
            stop_price=req.stop,
            qty=req.qty,
            is_market=req.type in ("MARKET", "STOP_LOSS", "TAKE_PROFIT"),
            notional_price=req.price or req.stop or last,
            quote_qty=req.quote_qty,
        )
        if (
            req.stop is not None
            and last is not None
            and triggered(req.type, req.side, req.stop, last)
        ):
            raise BinanceError(-2010, "Stop price would trigger immediately.")
        post_only = req.type == "LIMIT_MAKER" and req.price is not None and last is not None
        if post_only and marketable(req.side, req.price, last):  # type: ignore[arg-type]
            raise BinanceError(-2010, "Order would immediately match and take.")

    def _needs(self, order: Order, market: Market, last: Decimal | None) -> tuple[str, Decimal]:
        """The asset and amount an order locks when accepted."""
        if order.side != BUY:
            return market.base, order.qty
        cfg = self.core.config
        fee = ONE + cfg.fee_rate
        if order.quote_order_qty:
            return market.quote, money(order.quote_order_qty * fee)
        if order.price is not None:
            return market.quote, money(order.price * order.qty * fee)
        ref = order.stop_price if order.stop_price is not None else last
        assert ref is not None
        return market.quote, money(
            taker_price(BUY, ref, cfg.slippage, market.rules.tick_size) * order.qty * fee
        )

    # ------------------------------------------------------------ matching

    def match_all(self) -> None:
        for order in list(self.orders.values()):
            if order.is_open:
                self._match(order, self.core.market(False, order.symbol), taker=False)

    def _match(self, order: Order, market: Market, taker: bool) -> None:
        quote = self.core.quote(market)
        now = self.core.clock_ms()
        if quote is not None and not order.working:
            if not triggered(order.type, order.side, order.stop_price or ZERO, quote.price):
                return
            order.working, order.working_time, taker = True, now, True
        cfg = self.core.config
        rules = market.rules
        px = None
        if quote is not None and order.working:
            px = execution_price(order, quote.price, cfg.slippage, rules.tick_size, taker)
        q = slice_qty(order, cfg.max_fill_qty, rules.step_size)
        if px is not None and order.time_in_force == "FOK" and q < order.remaining:
            px = None  # fill or kill: all of it or nothing
        if px is not None and q > 0:
            self._fill(
                order, market, px, q, maker=not taker, market_time=quote.time_ms if quote else None
            )
        self._settle(order, taker)

    def _settle(self, order: Order, taker: bool) -> None:
        market_like = order.type not in LIMIT_TYPES
        scripted = order.expire_after is not None and order.executed_qty >= order.expire_after
        immediate = taker and (market_like or order.time_in_force in ("IOC", "FOK"))
        if order.remaining <= 0:
            order.status = FILLED
        elif order.working and (scripted or immediate):
            order.status = EXPIRED  # the unfilled rest of an IOC / FOK / MARKET, or a script
        else:
            order.status = PARTIALLY_FILLED if order.executed_qty > 0 else NEW
            if order.working:
                order.rested = True
            return
        order.update_time = self.core.clock_ms()
        self._release(order)

    def _fill(
        self,
        order: Order,
        market: Market,
        px: Decimal,
        q: Decimal,
        maker: bool,
        market_time: int | None,
    ) -> None:
        cost = money(px * q)
        fee = money(cost * self.core.config.fee_rate)
        if order.side == BUY:
            if not self._spend(order, market.quote, cost + fee):
                order.expire_after = order.executed_qty  # cannot pay: the rest expires
                return
            self.free[market.base] = self.free.get(market.base, ZERO) + q
        else:
            if not self._spend(order, market.base, q):
                order.expire_after = order.executed_qty
                return
            self.free[market.quote] = self.free.get(market.quote, ZERO) + cost - fee
        now = self.core.clock_ms()
        fill = Fill(
            trade_id=self.core.next_trade_id(),
            market="spot",
            symbol=market.id,
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            side=order.side,
            price=px,
            qty=q,
            quote_qty=cost,
            fee=fee,
            fee_asset=market.quote,
            is_maker=maker,
            time_ms=now,
            market_time_ms=market_time,
        )
        self.core.ledger.add(fill)
        order.fills.append(fill)
        order.executed_qty += q
        order.cum_quote += cost
        order.update_time = now
        self.update_time = now

    # ------------------------------------------------------------ cancel

    def cancel(self, p: Params) -> Order:
        order = self.find(p, for_cancel=True)
        if not order.is_open:
            raise unknown_order()
        order.status = CANCELED
        order.update_time = self.core.clock_ms()
        self._release(order)
        return order

    def cancel_all(self, exchange_id: str) -> list[Order]:
        if not exchange_id:
            raise mandatory("symbol")
        cancelled = []
        for order in self.open_orders(exchange_id):
            order.status = CANCELED
            order.update_time = self.core.clock_ms()
            self._release(order)
            cancelled.append(order)
        return cancelled
