"""The USDⓈ-M futures account: one-way positions, margin, orders, conditional (algo) orders.

Bookkeeping is deliberately simple but consistent: one USDT wallet; a position's initial margin
is ``|amount| × mark / leverage`` (mark = last price); open orders hold
``opening qty × price / leverage``; ``available = wallet − isolated wallets − cross margin
+ cross unrealized PnL − order margin``. An order that would open more than ``available``
covers is refused (-2019). Realized PnL, commission (fee rate × notional, in USDT) and funding
go to the wallet and to the income history. There is no liquidation and no maintenance-margin
call (``liquidation_price`` is reported, never acted on); there is one leverage bracket per
symbol, its maintenance amount 0. Conditional orders are ``algo.py``'s.

Shorts, as Binance one-way mode has them: a SELL with no position opens a short (a negative
``positionAmt``), a BUY reduces it. Reduce-only (the FAQ "Summary of Failed Orders in Binance
Futures"): an order in the position's own direction, or with no position, is refused (-2022
"ReduceOnly Order is rejected."); so is a reduce-only LIMIT order larger than the position (it
would flip it), while a reduce-only MARKET order (and a triggered STOP_MARKET) larger than the
position has priority and closes it, the rest expiring. Funding: ``rate × notional``, paid by
longs and received by shorts when the rate is positive (the other way when negative).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from signals.exchange_sim.algo import AlgoService
from signals.exchange_sim.core import Core
from signals.exchange_sim.errors import (
    BinanceError,
    bad_order_type,
    bad_side,
    bad_tif,
    insufficient_margin,
    invalid_value,
    mandatory,
    market_closed,
    no_such_order,
    not_required,
    reduce_only_rejected,
    unknown_order,
)
from signals.exchange_sim.ledger import Fill
from signals.exchange_sim.markets import Market, check_futures
from signals.exchange_sim.numbers import ZERO, dec, money
from signals.exchange_sim.orders import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    NEW,
    PARTIALLY_FILLED,
    SIDES,
    AlgoOrder,
    Order,
    PartialScript,
    execution_price,
    marketable,
    scripted_expiry,
    slice_qty,
)
from signals.exchange_sim.params import Params

CONDITIONAL_TYPES = (
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)
_TIFS = ("GTC", "IOC", "FOK", "GTX")
MARGIN_ASSET = "USDT"


@dataclass
class Position:
    amount: Decimal = ZERO  # signed: > 0 long, < 0 short (one-way mode, positionSide BOTH)
    entry: Decimal = ZERO
    isolated_wallet: Decimal = ZERO
    update_time: int = 0


@dataclass
class SymbolSettings:
    leverage: int
    margin_type: str  # "CROSSED" | "ISOLATED"


@dataclass
class Income:
    symbol: str
    income_type: str  # REALIZED_PNL | COMMISSION | FUNDING_FEE | TRANSFER
    income: Decimal
    time: int
    tran_id: int
    trade_id: str = ""
    info: str = ""


@dataclass
class FuturesState:
    wallet: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    settings: dict[str, SymbolSettings] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    algos: dict[int, AlgoOrder] = field(default_factory=dict)
    income: list[Income] = field(default_factory=list)


@dataclass
class _NewOrder:
    market: Market
    side: str
    type: str
    tif: str | None
    qty: Decimal
    price: Decimal | None
    reduce_only: bool
    client_id: str


def _sign(side: str) -> Decimal:
    return Decimal(1) if side == BUY else Decimal(-1)


class FuturesBook:
    def __init__(self, core: Core, wallet: float | str | Decimal) -> None:
        self.core = core
        self.initial_wallet = dec(wallet)
        self.algo = AlgoService(self)
        self.reset()

    def reset(self) -> None:
        self.state = FuturesState(wallet=self.initial_wallet)
        self.update_time = self.core.clock_ms()

    # ------------------------------------------------------------ per-symbol state

    def position(self, exchange_id: str) -> Position:
        return self.state.positions.setdefault(exchange_id, Position())

    def settings(self, exchange_id: str) -> SymbolSettings:
        cfg = self.core.config
        return self.state.settings.setdefault(
            exchange_id, SymbolSettings(cfg.default_leverage, cfg.default_margin_type)
        )

    def mark(self, market: Market) -> Decimal:
        quote = self.core.quote(market)
        return quote.price if quote is not None else self.position(market.id).entry

    def unrealized(self, market: Market) -> Decimal:
        pos = self.position(market.id)
        return pos.amount * (self.mark(market) - pos.entry) if pos.amount else ZERO

    def position_margin(self, market: Market) -> Decimal:
        pos = self.position(market.id)
        if self.settings(market.id).margin_type == "ISOLATED":
            return pos.isolated_wallet
        return abs(pos.amount) * self.mark(market) / self.settings(market.id).leverage

    def liquidation_price(self, market: Market) -> Decimal:
        """Binance's one-way liquidation price (USDⓈ-M FAQ "How to Calculate Liquidation Price"):
        ``LP = (WB - TMM1 + UPNL1 + cum - side·Q·EP) / (Q·MMR - side·Q)``, side +1 long, -1
        short, Q the size, cum 0 (one bracket). Isolated: WB the position's isolated wallet,
        TMM1 = UPNL1 = 0; cross: WB the cross wallet, TMM1 / UPNL1 the maintenance margin and
        unrealized PnL of the other cross positions. 0 when there is none (a 1x long)."""
        pos = self.position(market.id)
        if not pos.amount:
            return ZERO
        side = Decimal(1) if pos.amount > 0 else Decimal(-1)
        q = abs(pos.amount)
        mmr = market.rules.maint_margin_ratio
        if self.settings(market.id).margin_type == "ISOLATED":
            wb, tmm, upnl = pos.isolated_wallet, ZERO, ZERO
        else:
            wb, tmm, upnl = self.state.wallet, ZERO, ZERO
            for other in self.core.futures_markets.values():
                o = self.position(other.id)
                if not o.amount:
                    continue
                if self.settings(other.id).margin_type == "ISOLATED":
                    wb -= o.isolated_wallet
                elif other.id != market.id:
                    tmm += abs(o.amount) * self.mark(other) * other.rules.maint_margin_ratio
                    upnl += self.unrealized(other)
        denominator = q * mmr - side * q
        if denominator == 0:
            return ZERO
        price = (wb - tmm + upnl - side * q * pos.entry) / denominator
        return max(ZERO, price)

    def reducible(self, exchange_id: str, side: str) -> Decimal:
        """How much an order of ``side`` can reduce the position by."""
        amount = self.position(exchange_id).amount
        if amount == 0 or (amount > 0) == (side == BUY):
            return ZERO
        return abs(amount)

    def order_margin(self, exchange_id: str | None = None) -> Decimal:
        total = ZERO
        for o in self.state.orders.values():
            if not o.is_open or o.reduce_only or (exchange_id and o.symbol != exchange_id):
                continue
            market = self.core.market(True, o.symbol)
            ref = o.price if o.price is not None else self.mark(market)
            total += o.remaining * ref / self.settings(o.symbol).leverage
        return total

    def available(self) -> Decimal:
        total = self.state.wallet - self.order_margin()
        for market in self.core.futures_markets.values():
            if not self.position(market.id).amount:
                continue
            if self.settings(market.id).margin_type == "ISOLATED":
                total -= self.position(market.id).isolated_wallet
            else:
                total += self.unrealized(market) - self.position_margin(market)
        return total

    def check_margin(self, market: Market, side: str, qty: Decimal, price: Decimal) -> None:
        opening = max(ZERO, qty - self.reducible(market.id, side))
        need = opening * price / self.settings(market.id).leverage
        if need > self.available():
            raise insufficient_margin()

    # ------------------------------------------------------------ orders

    def client_id(self, p: Params, name: str) -> str:
        client_id = p.opt(name) or self.core.random_client_id()
        if not re.match(self.core.config.futures_client_id_pattern, client_id):
            raise BinanceError(-4015, "Client order id is not valid.")
        return client_id

    def find(self, p: Params, *, for_cancel: bool = False) -> Order:
        market = self.core.market(True, p.req("symbol"))
        order_id = p.int("orderId")
        client_id = p.opt("origClientOrderId")
        if order_id is None and client_id is None:
            raise BinanceError(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        not_found = unknown_order if for_cancel else no_such_order
        if order_id is not None:
            order = self.state.orders.get(order_id)
            if order is None or order.symbol != market.id:
                raise not_found()
            return order
        matches = [
            o
            for o in self.state.orders.values()
            if o.symbol == market.id and o.client_order_id == client_id
        ]
        if not matches:
            raise not_found()
        open_ones = [o for o in matches if o.is_open]
        return (open_ones or matches)[-1]

    def open_orders(self, exchange_id: str | None) -> list[Order]:
        if exchange_id is not None:
            self.core.market(True, exchange_id)
        return [
            o
            for o in self.state.orders.values()
            if o.is_open and (exchange_id is None or o.symbol == exchange_id)
        ]

    def place(self, p: Params, partial: PartialScript) -> Order:
        """Validate, record and match one ``/fapi/v1/order`` order."""
        req = self._read(p)
        self._check(req)
        order = self.new_order(
            req.market,
            req.client_id,
            req.side,
            req.type,
            req.tif,
            req.qty,
            req.price,
            req.reduce_only,
        )
        order.expire_after = scripted_expiry(partial, req.qty, req.market.rules.step_size)
        self.match(order, req.market, taker=True)
        return order

    def _read(self, p: Params) -> _NewOrder:
        """The order's parameters; conditional types belong to the algo endpoint (-4120)."""
        market = self.core.market(True, p.req("symbol"))
        side = p.req("side")
        if side not in SIDES:
            raise bad_side()
        otype = p.req("type")
        if otype in CONDITIONAL_TYPES:
            raise BinanceError(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API "
                "endpoints instead.",
            )
        if otype not in ("MARKET", "LIMIT"):
            raise bad_order_type()
        if (p.opt("positionSide") or "BOTH") != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        if p.has("closePosition"):
            raise not_required("closePosition")
        qty = p.dec("quantity", required=True)
        assert qty is not None
        price = p.dec("price", required=otype == "LIMIT")
        tif = p.opt("timeInForce")
        if otype == "LIMIT":
            if tif is None:
                raise mandatory("timeInForce")
            if tif not in _TIFS:
                raise bad_tif()
        elif price is not None:
            raise not_required("price")
        if (p.opt("newOrderRespType") or "ACK") not in ("ACK", "RESULT"):
            raise BinanceError(-1136, "Invalid newOrderRespType.")
        client_id = self.client_id(p, "newClientOrderId")
        return _NewOrder(market, side, otype, tif, qty, price, p.bool("reduceOnly"), client_id)

    def _check(self, req: _NewOrder) -> None:
        """Uniqueness, filters, reduce-only, post-only and margin, against the current price."""
        market = req.market
        if any(
            o.is_open and o.client_order_id == req.client_id for o in self.state.orders.values()
        ):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        quote = self.core.quote(market)
        if quote is None and req.type == "MARKET":
            raise market_closed()
        ref = req.price if req.price is not None else (quote.price if quote else None)
        check_futures(
            market.rules,
            price=req.price,
            stop_price=None,
            qty=req.qty,
            is_market=req.type == "MARKET",
            reduce_only=req.reduce_only,
            notional_price=ref,
        )
        if req.reduce_only:
            room = self.reducible(market.id, req.side)
            if room <= 0 or (req.type != "MARKET" and req.qty > room):
                raise reduce_only_rejected()  # it would increase or flip the position
        post_only = req.tif == "GTX" and quote is not None and req.price is not None
        if post_only and marketable(req.side, req.price, quote.price):  # type: ignore[arg-type,union-attr]
            raise BinanceError(
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will "
                "be rejected.",
            )
        if not req.reduce_only and ref is not None:
            self.check_margin(market, req.side, req.qty, ref)

    def new_order(
        self,
        market: Market,
        client_id: str,
        side: str,
        otype: str,
        tif: str | None,
        qty: Decimal,
        price: Decimal | None,
        reduce_only: bool,
        close_position: bool = False,
        orig_type: str | None = None,
        stop_price: Decimal | None = None,
    ) -> Order:
        now = self.core.clock_ms()
        order = Order(
            market="futures",
            order_id=self.core.next_order_id(),
            client_order_id=client_id,
            symbol=market.id,
            side=side,
            type=otype,
            time_in_force=tif if otype == "LIMIT" else "GTC",
            qty=qty,
            price=price,
            stop_price=stop_price,
            time=now,
            update_time=now,
            working_time=now,
            reduce_only=reduce_only or close_position,
            close_position=close_position,
            orig_type=orig_type or otype,
        )
        self.state.orders[order.order_id] = order
        return order

    def cancel(self, p: Params) -> Order:
        order = self.find(p, for_cancel=True)
        if not order.is_open:
            raise unknown_order()
        order.status = CANCELED
        order.update_time = self.core.clock_ms()
        return order

    def cancel_all(self, exchange_id: str) -> None:
        self.core.market(True, exchange_id)
        now = self.core.clock_ms()
        for order in self.open_orders(exchange_id):
            order.status, order.update_time = CANCELED, now

    # ------------------------------------------------------------ matching

    def match_all(self) -> None:
        self.algo.check_triggers()
        for order in list(self.state.orders.values()):
            if order.is_open:
                self.match(order, self.core.market(True, order.symbol), taker=False)
        self.algo.finish_done()

    def match(self, order: Order, market: Market, taker: bool) -> None:
        quote = self.core.quote(market)
        cfg = self.core.config
        rules = market.rules
        px = None
        if quote is not None:
            px = execution_price(order, quote.price, cfg.slippage, rules.tick_size, taker)
        q = slice_qty(order, cfg.max_fill_qty, rules.step_size)
        if order.reduce_only:
            room = self.reducible(order.symbol, order.side)
            if room <= 0:
                order.expire_after = order.executed_qty  # nothing left to reduce
            q = min(q, room)
        if px is not None and order.time_in_force == "FOK" and q < order.remaining:
            px = None
        if px is not None and q > 0:
            self._fill(
                order, market, px, q, maker=not taker, market_time=quote.time_ms if quote else None
            )
        self._settle(order, taker)

    def _settle(self, order: Order, taker: bool) -> None:
        scripted = order.expire_after is not None and order.executed_qty >= order.expire_after
        immediate = taker and (order.type == "MARKET" or order.time_in_force in ("IOC", "FOK"))
        if order.remaining <= 0:
            order.status = FILLED
        elif scripted or immediate:
            order.status = EXPIRED  # the unfilled rest of an IOC / FOK / MARKET, or a script
        else:
            order.status = PARTIALLY_FILLED if order.executed_qty > 0 else NEW
            order.rested = True
            return
        order.update_time = self.core.clock_ms()

    def _fill(
        self,
        order: Order,
        market: Market,
        px: Decimal,
        q: Decimal,
        maker: bool,
        market_time: int | None,
    ) -> None:
        now = self.core.clock_ms()
        realized = self._apply(market, order.side, q, px, now)
        notional = money(px * q)
        fee = money(notional * self.core.config.fee_rate)
        self.state.wallet += realized - fee
        trade_id = self.core.next_trade_id()
        fill = Fill(
            trade_id=trade_id,
            market="futures",
            symbol=market.id,
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            side=order.side,
            price=px,
            qty=q,
            quote_qty=notional,
            fee=fee,
            fee_asset=MARGIN_ASSET,
            is_maker=maker,
            time_ms=now,
            market_time_ms=market_time,
            realized_pnl=realized,
        )
        self.core.ledger.add(fill)
        order.fills.append(fill)
        order.executed_qty += q
        order.cum_quote += notional
        order.update_time = now
        self.update_time = now
        if realized:
            self._income(market.id, "REALIZED_PNL", realized, str(trade_id))
        self._income(market.id, "COMMISSION", -fee, str(trade_id))

    def _apply(self, market: Market, side: str, q: Decimal, px: Decimal, now: int) -> Decimal:
        """Move the position by one fill; the realized PnL of the part that closed."""
        pos = self.position(market.id)
        signed = _sign(side) * q
        realized = ZERO
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            new = pos.amount + signed
            pos.entry = (abs(pos.amount) * pos.entry + q * px) / abs(new)
            pos.amount = new
        else:
            closing = min(q, abs(pos.amount))
            direction = Decimal(1) if pos.amount > 0 else Decimal(-1)
            realized = money(closing * (px - pos.entry) * direction)
            pos.amount += _sign(side) * closing
            if q > closing:  # flipped through zero
                pos.amount = _sign(side) * (q - closing)
                pos.entry = px
            elif pos.amount == 0:
                pos.entry = ZERO
        leverage = self.settings(market.id).leverage
        pos.isolated_wallet = (
            abs(pos.amount) * pos.entry / leverage
            if self.settings(market.id).margin_type == "ISOLATED"
            else ZERO
        )
        pos.update_time = now
        return realized

    def _income(
        self, symbol: str, kind: str, amount: Decimal, trade_id: str = "", info: str = ""
    ) -> None:
        self.state.income.append(
            Income(
                symbol=symbol,
                income_type=kind,
                income=amount,
                time=self.core.clock_ms(),
                tran_id=self.core.next_tran_id(),
                trade_id=trade_id,
                info=info,
            )
        )

    # ------------------------------------------------------------ settings, funding

    def set_leverage(self, exchange_id: str, leverage: int) -> SymbolSettings:
        market = self.core.market(True, exchange_id)
        if leverage < 1 or leverage > market.rules.max_leverage:
            raise BinanceError(-4028, f"Leverage {leverage} is not valid")
        settings = self.settings(exchange_id)
        old = settings.leverage
        settings.leverage = leverage
        if self.available() < 0:
            settings.leverage = old
            raise BinanceError(
                -2028, "Leverage is smaller than permitted: insufficient margin balance."
            )
        pos = self.position(exchange_id)
        if settings.margin_type == "ISOLATED" and pos.amount:
            pos.isolated_wallet = abs(pos.amount) * pos.entry / leverage
        return settings

    def set_margin_type(self, exchange_id: str, margin_type: str) -> None:
        self.core.market(True, exchange_id)
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise invalid_value("marginType")
        settings = self.settings(exchange_id)
        if settings.margin_type == margin_type:
            raise BinanceError(-4046, "No need to change margin type.")
        if self.open_orders(exchange_id) or self.algo.open(exchange_id):
            raise BinanceError(-4047, "Margin type cannot be changed if there exists open orders.")
        if self.position(exchange_id).amount:
            raise BinanceError(-4048, "Margin type cannot be changed if there exists position.")
        settings.margin_type = margin_type

    def pay_funding(self, exchange_id: str, rate: Decimal) -> Decimal:
        """Settle one funding interval: ``-positionAmt × mark × rate``, so at a positive rate
        longs pay and shorts receive (a negative rate the other way), as a FUNDING_FEE income
        entry of that sign."""
        market = self.core.market(True, exchange_id)
        pos = self.position(exchange_id)
        if not pos.amount:
            return ZERO
        payment = money(-pos.amount * self.mark(market) * rate)
        self.state.wallet += payment
        self._income(exchange_id, "FUNDING_FEE", payment)
        return payment
