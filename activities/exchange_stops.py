"""Protective stops held by the exchange (SPEC §4, §9): placed, read, and cancelled once.

Spot: a ``STOP_LOSS_LIMIT`` SELL (the limit ``stop_limit_price`` below the trigger, GTC).
USDⓈ-M: a ``STOP_MARKET`` on the position's exit side, reduce-only (never ``closePosition``),
through the algo-order endpoint (Binance moved conditional orders there; ccxt sends a
``stopLossPrice`` order on a linear market to it): a SELL under a long, a BUY above a short
(``StopRequest.position_side``), which triggers when the last price rises to it. Spot is
long-only: a stop for a short is refused, nothing is sent.

The same exactly-once rules as orders (``activities/exchange_broker.py``): a client id per stop
(a move is a cancel and a new stop with a new sequence), a retried placement looks the id up
first, an answer that says nothing is settled by lookup, and not-found is believed only once
the attempt can no longer land. A cancel reports what the stop did before it went: a stop that
triggered while the engine was away comes back FILLED with its fill, and the position books
that exit instead of selling again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import ccxt

from activities.ccxt_binance import is_final_refusal, short_error
from activities.exchange_events import looked_up, num
from signals.rest_budget import RestUnavailable
from trading.market_rules import check_order, stop_limit_price
from trading.models import (
    OrderRequest,
    PositionSide,
    Side,
    StopRef,
    StopRequest,
    StopState,
    StopStatus,
)
from trading.order_state import Order, OrderLookedUp, OrderType
from trading.order_state import OrderStatus as VenueStatus

if TYPE_CHECKING:
    from activities.exchange_broker import ExchangeBroker

log = logging.getLogger(__name__)

# Binance USDⓈ-M algo statuses -> (venue status, still working)
_ALGO_STATUS = {
    "NEW": (VenueStatus.NEW, True),
    "TRIGGERING": (VenueStatus.NEW, True),
    "TRIGGERED": (VenueStatus.NEW, True),
    "FINISHED": (VenueStatus.FILLED, False),
    "CANCELED": (VenueStatus.CANCELED, False),
    "CANCELLED": (VenueStatus.CANCELED, False),
    "EXPIRED": (VenueStatus.EXPIRED, False),
    "REJECTED": (VenueStatus.REJECTED, False),
}
_STATUS = {
    VenueStatus.NEW: StopStatus.WORKING,
    VenueStatus.PARTIALLY_FILLED: StopStatus.WORKING,
    VenueStatus.FILLED: StopStatus.FILLED,
    VenueStatus.CANCELED: StopStatus.CANCELED,
    VenueStatus.EXPIRED: StopStatus.EXPIRED,
    VenueStatus.REJECTED: StopStatus.REJECTED,
}
MAX_SENDS = 3
CANCEL_READS = 10


class StopInDoubt(RuntimeError):
    """A stop's placement or cancel is not known yet: retry (it looks the stop up first)."""


class ExchangeStops:
    """The stop side of ``ExchangeBroker``; it shares the broker's client, budget and rules."""

    def __init__(self, broker: ExchangeBroker) -> None:
        self.b = broker

    @property
    def futures(self) -> bool:
        return self.b.config.market == "futures"

    # ------------------------------------------------------------ place

    async def place(self, req: StopRequest, *, retried: bool) -> StopState:
        b = self.b
        ref = _ref(req)
        if not self.futures and req.position_side is PositionSide.SHORT:
            log.warning("stop %s refused: spot is long-only", req.client_order_id)
            return _state(
                ref, StopStatus.REJECTED, "not sent: spot is long-only, no stop for a short"
            )
        rules = await b.rules(req.symbol)
        side = req.position_side.exit_side  # SELL under a long, BUY above a short
        deadline = b._clock() + b.config.resolve_s
        if retried:
            found = await self._settled_read(ref, b._now_ms(), deadline)
            if found.status != StopStatus.NOT_FOUND:
                return found
        if self.futures:
            check = check_order(
                side, req.qty, req.stop_price, rules, True,
                stop_price=req.stop_price, reduce_only=True,
            )  # fmt: skip
            limit = None
        else:
            limit = stop_limit_price(req.stop_price, rules)
            check = check_order(Side.SELL, req.qty, limit, rules, False, stop_price=req.stop_price)
        if not check.ok:
            return _state(ref, StopStatus.REJECTED, f"not sent: {check.reason}")
        assert check.stop_price is not None
        ref = ref.model_copy(update={"qty": check.qty, "stop_price": check.stop_price})
        params: dict[str, Any] = {
            "clientOrderId": req.client_order_id,
            "stopLossPrice": check.stop_price,
        }
        if self.futures:
            params["reduceOnly"] = True
            kind, price = "market", None
        else:
            params["timeInForce"] = "GTC"
            kind, price = "limit", check.price
        for _ in range(MAX_SENDS):
            sent_ms = b._now_ms()
            try:
                raw = await b._call(
                    "create", b.exchange.create_order, b.venue_symbol(req.symbol),
                    kind, side.value.lower(), check.qty, price, params,
                )  # fmt: skip
            except RestUnavailable as err:
                raise StopInDoubt(f"stop {req.client_order_id} not sent yet: {err}") from None
            except Exception as err:  # noqa: BLE001 - classified below
                if is_final_refusal(err):
                    log.warning("stop %s refused: %s", req.client_order_id, short_error(err))
                    return _state(ref, StopStatus.REJECTED, short_error(err))
                log.warning("stop %s outcome unknown: %s", req.client_order_id, short_error(err))
            else:
                try:
                    return await self._state_of(raw, ref)
                except ValueError:
                    pass  # an answer with ids only: read it back
            found = await self._settled_read(ref, sent_ms, deadline)
            if found.status != StopStatus.NOT_FOUND:
                return found
            log.warning("stop %s never reached the exchange: sending it again", req.client_order_id)
        raise StopInDoubt(f"stop {req.client_order_id} never reached the exchange; retrying")

    # ------------------------------------------------------------ read

    async def status(self, ref: StopRef) -> StopState:
        deadline = self.b._clock() + self.b.config.resolve_s
        while True:
            try:
                return await self._read(ref)
            except (RestUnavailable, ccxt.NetworkError) as err:
                if self.b._clock() > deadline:
                    raise StopInDoubt(f"stop {ref.client_order_id}: {err}") from None
                await asyncio.sleep(self.b.config.poll_s)

    async def _read(self, ref: StopRef) -> StopState:
        """One lookup; NOT_FOUND when the exchange says it has no such order."""
        b = self.b
        params: dict[str, Any] = {"clientOrderId": ref.client_order_id}
        if self.futures:
            params["trigger"] = True
        try:
            raw = await b._call(
                "fetch", b.exchange.fetch_order, None, b.venue_symbol(ref.symbol), params
            )
        except ccxt.OrderNotFound:
            return _state(ref, StopStatus.NOT_FOUND, "no such order at the exchange")
        return await self._state_of(raw, ref)

    async def _settled_read(self, ref: StopRef, sent_ms: int, deadline: float) -> StopState:
        """Read until found, or until a not-found is conclusive (the attempt sent at
        ``sent_ms`` can no longer land); past ``deadline`` raise ``StopInDoubt``."""
        b = self.b
        conclusive_ms = sent_ms + b.config.recv_window_ms + b.config.clock_skew_ms
        while True:
            try:
                state = await self._read(ref)
            except (RestUnavailable, ccxt.NetworkError, ccxt.ExchangeError) as err:
                log.info("stop %s lookup failed: %s", ref.client_order_id, err)
            else:
                if state.status != StopStatus.NOT_FOUND or b._now_ms() >= conclusive_ms:
                    return state
            if b._clock() > deadline:
                raise StopInDoubt(f"stop {ref.client_order_id}: outcome still unknown")
            await asyncio.sleep(b.config.poll_s)

    async def _state_of(self, raw: Any, ref: StopRef) -> StopState:
        """A stop's state from an order answer (spot) or an algo-order answer (futures),
        with what it sold read from the exchange's trades."""
        b = self.b
        rules = await b.rules(ref.symbol)
        info = (raw or {}).get("info") or {}
        now = b._now_ms()
        side = _side_of(raw, ref)
        position_side = PositionSide.SHORT if side == Side.BUY else PositionSide.LONG
        order = Order(
            client_order_id=ref.client_order_id,
            symbol=ref.symbol,
            side=side,
            type=OrderType.STOP_MARKET if self.futures else OrderType.STOP_LIMIT,
            qty=ref.qty,
            limit_price=None if self.futures else stop_limit_price(ref.stop_price, rules),
            stop_price=ref.stop_price,
            reduce_only=self.futures,
        )
        if self.futures and "algoStatus" in info:
            status, _ = _ALGO_STATUS.get(str(info["algoStatus"]).upper(), (None, False))
            if status is None:
                raise ValueError(f"unknown algo status {info['algoStatus']!r}")
            executed = num(info.get("executedQty"))
            child = str(info.get("actualOrderId") or "")
            venue_id = child or str(info.get("algoId") or raw.get("id"))
            if status == VenueStatus.FILLED and executed < ref.qty * (1 - 1e-9):
                status = VenueStatus.EXPIRED if executed == 0 else VenueStatus.CANCELED
            avg = num(info.get("avgPrice"))
            snapshot = OrderLookedUp(
                client_order_id=ref.client_order_id,
                time_ms=now,
                venue_order_id=venue_id,
                status=status,
                executed_qty=executed if avg > 0 else 0.0,
                cum_quote=executed * avg if avg > 0 else 0.0,
            )
        else:
            snapshot = looked_up(raw, ref.client_order_id, now)
        order = order.apply(snapshot)
        if order.filled_qty > 0 and order.venue_order_id:
            order = await b._trades(order, b.venue_symbol(ref.symbol))
        stop_status = _STATUS[order.status]
        fill = None
        if order.filled_qty > 0:
            req = OrderRequest(
                client_order_id=ref.client_order_id,
                position_id=ref.position_id,
                seq=1,
                symbol=ref.symbol,
                side=side,
                qty=ref.qty,
                ref_price=ref.stop_price,
                market_time_ms=ref.market_time_ms,
                reason="exchange_stop",
                position_side=position_side,
            )
            fill = b._fill(order, req, rules)
        return StopState(
            client_order_id=ref.client_order_id,
            symbol=ref.symbol,
            status=stop_status,
            stop_price=ref.stop_price,
            qty=ref.qty,
            fill=fill,
            venue_order_id=order.venue_order_id,
            reason=order.reason,
        )

    # ------------------------------------------------------------ cancel

    async def cancel(self, ref: StopRef) -> StopState:
        """Cancel the stop and answer what it did: CANCELED (with any part it sold), or FILLED
        when it triggered first. A stop already gone is no error."""
        b = self.b
        params: dict[str, Any] = {"clientOrderId": ref.client_order_id}
        if self.futures:
            params["trigger"] = True
        for _ in range(CANCEL_READS):
            try:
                await b._call(
                    "cancel", b.exchange.cancel_order, None, b.venue_symbol(ref.symbol), params
                )
            except ccxt.OrderNotFound:
                pass  # ended already, or never there: the read says which
            except (RestUnavailable, ccxt.NetworkError, ccxt.ExchangeError) as err:
                log.info("cancel of stop %s: %s", ref.client_order_id, err)
            try:
                state = await self._read(ref)
            except (RestUnavailable, ccxt.NetworkError, ccxt.ExchangeError) as err:
                log.info("stop %s read after cancel: %s", ref.client_order_id, err)
            else:
                if not state.working:
                    return state
            await asyncio.sleep(b.config.poll_s)
        raise StopInDoubt(f"stop {ref.client_order_id} still working after cancelling")


def _ref(req: StopRequest) -> StopRef:
    return StopRef(
        client_order_id=req.client_order_id,
        position_id=req.position_id,
        symbol=req.symbol,
        qty=req.qty,
        stop_price=req.stop_price,
        market_time_ms=req.market_time_ms,
        account=req.account,
        position_side=req.position_side,
    )


def _side_of(raw: Any, ref: StopRef) -> Side:
    """The stop's order side as the exchange answers it (its word wins: a stop is always on
    its position's exit side, so a BUY is a short's), else the ref's exit side."""
    side = str((raw or {}).get("side") or ((raw or {}).get("info") or {}).get("side") or "")
    if side.lower() in ("buy", "sell"):
        return Side(side.upper())
    return ref.position_side.exit_side


def _state(ref: StopRef, status: StopStatus, reason: str) -> StopState:
    return StopState(
        client_order_id=ref.client_order_id,
        symbol=ref.symbol,
        status=status,
        stop_price=ref.stop_price,
        qty=ref.qty,
        reason=reason[:300],
    )
