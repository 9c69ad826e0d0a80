"""USDⓈ-M conditional orders, which Binance takes only on its Algo Service since 2025-12-09.

``POST /fapi/v1/algoOrder`` (``algoType=CONDITIONAL``, ``clientAlgoId``, ``triggerPrice``)
holds a STOP_MARKET / TAKE_PROFIT_MARKET / STOP / TAKE_PROFIT order until the last price
crosses its trigger; the old ``/fapi/v1/order`` answers -4120 for those types. On trigger the
algo order becomes TRIGGERED and places a MARKET (``*_MARKET``) or LIMIT (``STOP`` /
``TAKE_PROFIT``) order in the book *under the same client id*, then FINISHED once that order
is done. A reduce-only / close-position order with nothing left to reduce at trigger time
EXPIRES (a stop orphaned by a closed position never opens the other side); one refused for
margin is REJECTED. A short's stop is a BUY: a STOP / STOP_MARKET BUY triggers when the last
price rises to its trigger (``orders.triggered``), and is refused at once (-2021) when the
price is there already. Reduce-only: refused (-2022) in the position's own direction or with
no position, and as a STOP / TAKE_PROFIT limit larger than the position; a STOP_MARKET larger
than the position closes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from signals.exchange_sim.errors import (
    BinanceError,
    bad_order_type,
    bad_side,
    bad_tif,
    invalid_value,
    market_closed,
    no_such_order,
    not_required,
    reduce_only_rejected,
    unknown_order,
)
from signals.exchange_sim.markets import check_futures
from signals.exchange_sim.numbers import ZERO
from signals.exchange_sim.orders import CANCELED, EXPIRED, SIDES, AlgoOrder, triggered
from signals.exchange_sim.params import Params

if TYPE_CHECKING:
    from signals.exchange_sim.futures import FuturesBook

ALGO_TYPES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET")
_TIFS = ("GTC", "IOC", "FOK", "GTX")


class AlgoService:
    def __init__(self, book: FuturesBook) -> None:
        self.book = book
        self.core = book.core

    def check_triggers(self) -> None:
        for algo in list(self.book.state.algos.values()):
            if algo.is_open:
                self._check_trigger(algo)

    def finish_done(self) -> None:
        """TRIGGERED -> FINISHED once the order it placed is done."""
        for algo in self.book.state.algos.values():
            if algo.status == "TRIGGERED" and algo.child is not None and not algo.child.is_open:
                algo.status, algo.update_time = "FINISHED", self.core.clock_ms()

    def place(self, p: Params) -> AlgoOrder:
        """Validate and hold one conditional order; it may not trigger at once (-2021)."""
        if p.req("algoType") != "CONDITIONAL":
            raise invalid_value("algoType")
        market = self.core.market(True, p.req("symbol"))
        side = p.req("side")
        if side not in SIDES:
            raise bad_side()
        otype = p.req("type")
        if otype not in ALGO_TYPES:
            raise bad_order_type()
        if (p.opt("positionSide") or "BOTH") != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        trigger = p.dec("triggerPrice", required=True)
        assert trigger is not None
        close_position = p.bool("closePosition")
        reduce_only = p.bool("reduceOnly")
        if close_position and otype not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise not_required("closePosition")
        if close_position and p.has("quantity"):
            raise not_required("quantity")
        if close_position and p.has("reduceOnly"):
            raise not_required("reduceOnly")
        qty = ZERO if close_position else p.dec("quantity", required=True)
        assert qty is not None
        price = p.dec("price", required=otype in ("STOP", "TAKE_PROFIT"))
        if price is not None and otype.endswith("_MARKET"):
            raise not_required("price")
        tif = p.opt("timeInForce") or "GTC"
        if tif not in _TIFS:
            raise bad_tif()
        working_type = p.opt("workingType") or "CONTRACT_PRICE"
        if working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise BinanceError(-4031, f"Invalid parameter working type: {working_type}")
        client_id = self.book.client_id(p, "clientAlgoId")
        if any(a.is_open and a.client_algo_id == client_id for a in self.book.state.algos.values()):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        quote = self.core.quote(market)
        if quote is None:
            raise market_closed()
        check_futures(
            market.rules,
            price=price,
            stop_price=trigger,
            qty=None if close_position else qty,
            is_market=otype.endswith("_MARKET"),
            reduce_only=reduce_only or close_position,
            notional_price=price if price is not None else trigger,
        )
        room = self.book.reducible(market.id, side)
        if (reduce_only or close_position) and room <= 0:
            raise reduce_only_rejected()
        if reduce_only and not otype.endswith("_MARKET") and qty > room:
            raise reduce_only_rejected()  # a stop-limit that would flip the position
        if triggered(otype, side, trigger, quote.price):
            raise BinanceError(-2021, "Order would immediately trigger.")
        now = self.core.clock_ms()
        algo = AlgoOrder(
            algo_id=self.core.next_algo_id(),
            client_algo_id=client_id,
            symbol=market.id,
            side=side,
            order_type=otype,
            time_in_force=tif,
            qty=qty,
            price=price,
            trigger_price=trigger,
            working_type=working_type,
            close_position=close_position,
            reduce_only=reduce_only,
            price_protect=p.bool("priceProtect"),
            create_time=now,
            update_time=now,
        )
        self.book.state.algos[algo.algo_id] = algo
        return algo

    def _check_trigger(self, algo: AlgoOrder) -> None:
        market = self.core.market(True, algo.symbol)
        quote = self.core.quote(market)
        if quote is None or not triggered(
            algo.order_type, algo.side, algo.trigger_price, quote.price
        ):
            return
        now = self.core.clock_ms()
        algo.trigger_time = algo.update_time = now
        reduce = algo.reduce_only or algo.close_position
        room = self.book.reducible(algo.symbol, algo.side)
        qty = room if algo.close_position else algo.qty
        if reduce and room <= 0:
            algo.status = EXPIRED
            return
        is_market = algo.order_type.endswith("_MARKET")
        if not reduce:
            try:
                self.book.check_margin(market, algo.side, qty, algo.price or quote.price)
            except BinanceError:
                algo.status = "REJECTED"
                return
        algo.status = "TRIGGERED"
        child = self.book.new_order(
            market,
            algo.client_algo_id,
            algo.side,
            "MARKET" if is_market else "LIMIT",
            "GTC" if is_market else algo.time_in_force,
            qty,
            None if is_market else algo.price,
            algo.reduce_only,
            close_position=algo.close_position,
            orig_type=algo.order_type,
            stop_price=algo.trigger_price,
        )
        algo.child = child
        self.book.match(child, market, taker=True)
        if not child.is_open:
            algo.status = "FINISHED"

    def find(self, p: Params, *, for_cancel: bool = False) -> AlgoOrder:
        algo_id = p.int("algoId")
        client_id = p.opt("clientAlgoId")
        if algo_id is None and client_id is None:
            raise BinanceError(
                -1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!"
            )
        not_found = unknown_order if for_cancel else no_such_order
        if algo_id is not None:
            algo = self.book.state.algos.get(algo_id)
            if algo is None:
                raise not_found()
            return algo
        matches = [a for a in self.book.state.algos.values() if a.client_algo_id == client_id]
        if not matches:
            raise not_found()
        open_ones = [a for a in matches if a.is_open]
        return (open_ones or matches)[-1]

    def cancel(self, p: Params) -> AlgoOrder:
        algo = self.find(p, for_cancel=True)
        if not algo.is_open:
            raise unknown_order()
        algo.status, algo.update_time = CANCELED, self.core.clock_ms()
        return algo

    def open(self, exchange_id: str | None) -> list[AlgoOrder]:
        if exchange_id is not None:
            self.core.market(True, exchange_id)
        return [
            a
            for a in self.book.state.algos.values()
            if a.is_open and (exchange_id is None or a.symbol == exchange_id)
        ]

    def cancel_all(self, exchange_id: str) -> None:
        now = self.core.clock_ms()
        for algo in self.open(exchange_id):
            algo.status, algo.update_time = CANCELED, now
