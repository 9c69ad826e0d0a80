"""The exchange broker: real orders on Binance spot or USDⓈ-M futures through ccxt (SPEC §9).

Exactly one order per client order id, whatever fails:

* an order is an ``Order`` state machine (``trading/order_state.py``) and changes only by the
  exchange's answers, turned into events (``activities/exchange_events.py``);
* a retried attempt (the activity's attempt > 1: a worker died, a timeout) looks the client
  id up before anything else. Not found is believed only once the earlier attempt can no
  longer land (Binance drops a request older than its ``recvWindow``), and only then is the
  order sent again, with the same id;
* an answer that does not say what happened (a timeout, a 5xx, -1007, a duplicate-id refusal,
  a 429 / 418) makes the order UNKNOWN; it is looked up until known. An attempt that cannot
  settle it raises ``OrderInDoubt``, a retryable error: the next attempt looks up first. It is
  never assumed failed and never sent blindly again;
* what the exchange refuses (filters, balance, permissions, keys) is a REJECTED fill with its
  reason: nothing was placed. Quantities and prices are rounded to the market first, and an
  order that fails a filter is not sent at all.

Orders are marketable limit IOC (last ± ``limit_cap_pct``) or market. Fills come from the
order's trades, fees converted to the quote currency; a BUY whose fee is taken in the base
asset books the quantity received. A remainder of an exit too small to trade on its own is
reported as ``dust``, so an exit does not chase it. The broker keeps no state of its own: the
exchange is the record, so any worker may pick up any attempt.

Shorts (USDⓈ-M only, one-way mode): an order carries its position's direction
(``OrderRequest.position_side``); a short opens and adds with a SELL and exits with a BUY. On
futures every order on its position's exit side is reduce-only (``OrderRequest.reduces``), so
an exit can never open the other side. Spot is long-only: an order for a short is refused
before anything is sent. Futures balances report a short as a negative holding.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import ccxt
from temporalio import activity

from activities.ccxt_binance import error_code, is_final_refusal, short_error
from activities.exchange_events import looked_up, trade_fills
from activities.exchange_stops import ExchangeStops
from signals.rest_budget import RestBudget, RestUnavailable
from trading.market_rules import MarketRules, check_order, marketable_limit_price
from trading.models import (
    Balances,
    Fill,
    IncomeEntry,
    OrderRequest,
    OrderStatus,
    PositionSide,
    Side,
    StopRef,
    StopRequest,
    StopState,
    VenueOrder,
)
from trading.order_state import (
    InvalidOrderEvent,
    Order,
    OrderAccepted,
    OrderLookedUp,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderSubmitted,
    OrderType,
)
from trading.order_state import OrderStatus as VenueStatus
from trading.orders import client_order_id

log = logging.getLogger(__name__)

MarketKind = Literal["spot", "futures"]

# Binance request weights of the calls the broker makes (spot / USDⓈ-M documentation)
_WEIGHTS = {
    "spot": {"create": 1, "fetch": 4, "cancel": 1, "trades": 20, "orders": 20, "balance": 20},
    "futures": {"create": 1, "fetch": 1, "cancel": 1, "trades": 5, "orders": 5, "balance": 5},
}
_ALREADY_SET = {-4046, -4059}  # "No need to change margin type" / "... position side"
QTY_RTOL = 1e-9
MAX_SENDS = 3  # sends of one client id in one attempt, each after a conclusive not-found
_BAN = re.compile(r"^\S+ 418\b")  # ccxt: "binance 418 I'm a teapot {...}"


class OrderInDoubt(RuntimeError):
    """The order's outcome is still unknown after this attempt's lookups: retry the activity
    (it looks the order up first). Retryable by design."""


class ExchangeRefused(RuntimeError):
    """An account call (balances, positions, set-up) the exchange answered with an error."""


@dataclass(frozen=True)
class ExchangeConfig:
    """How the broker trades. Seconds are wall time; ``recv_window_ms`` is sent with every
    signed request and bounds when a lost attempt can still land."""

    market: MarketKind = "spot"
    symbols: tuple[str, ...] = ("BTC/USDT",)  # engine symbols ("BTC/USDT", also on futures)
    order_type: Literal["limit_ioc", "market"] = "limit_ioc"
    limit_cap_pct: float = 0.001
    recv_window_ms: int = 10_000
    clock_skew_ms: int = 1_000  # Binance takes timestamps up to 1 s ahead of its clock
    poll_s: float = 0.25
    resolve_s: float = 20.0  # one attempt's patience with an UNKNOWN order (< the 30 s timeout)
    settle_s: float = 5.0  # an IOC / market order still open after this is cancelled
    fee_rate: float = 0.001  # only to estimate a fee the exchange has not itemized yet
    leverage: int = 1
    margin_mode: Literal["isolated", "cross"] = "isolated"
    max_seq_looked_up: int = 400  # orders per position ``orders_of`` recognises


class ExchangeBroker:
    """The ``Broker`` protocol on a ccxt Binance client (spot ``binance`` or ``binanceusdm``)."""

    def __init__(
        self,
        exchange: Any,
        config: ExchangeConfig,
        budget: RestBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.exchange = exchange
        self.config = config
        self.kind = f"binance-{config.market}"
        self.budget = budget or RestBudget()
        self._clock = clock
        self._rules: dict[str, MarketRules] = {}
        self._started = asyncio.Lock()
        self.stops = ExchangeStops(self)

    # ------------------------------------------------------------ set-up

    async def start(self) -> ExchangeBroker:
        """Load the markets (their filters) and, on futures, set leverage and margin mode."""
        async with self._started:
            if self._rules:
                return self
            await self._call("orders", self.exchange.load_markets)
            rules = {}
            for symbol in self.config.symbols:
                venue = self.venue_symbol(symbol)
                if venue not in self.exchange.markets:
                    raise ValueError(f"{symbol}: no such market on {self.kind}")
                rules[symbol] = MarketRules.from_ccxt_market(self.exchange.market(venue))
            if self.config.market == "futures":
                for symbol in self.config.symbols:
                    await self._futures_setup(self.venue_symbol(symbol))
            self._rules = rules
        return self

    async def _futures_setup(self, venue: str) -> None:
        cfg = self.config
        for call, arg in (
            (self.exchange.set_margin_mode, cfg.margin_mode),
            (self.exchange.set_leverage, cfg.leverage),
        ):
            try:
                await self._call("create", call, arg, venue)
            except ccxt.ExchangeError as err:
                if error_code(err) not in _ALREADY_SET:
                    raise ExchangeRefused(f"{venue}: {short_error(err)}") from None

    def venue_symbol(self, symbol: str) -> str:
        if self.config.market == "spot" or ":" in symbol:
            return symbol
        return f"{symbol}:{symbol.split('/')[1]}"

    async def rules(self, symbol: str) -> MarketRules:
        await self.start()
        try:
            return self._rules[symbol]
        except KeyError:
            raise ValueError(f"{symbol} is not traded by this broker") from None

    # ------------------------------------------------------------ placing

    async def place_order(self, req: OrderRequest) -> Fill:
        """Place ``req`` exactly once (module docstring); the attempt number of the running
        activity says whether an earlier attempt may have sent it."""
        return await self.place(req, retried=_attempt() > 1)

    async def place(self, req: OrderRequest, *, retried: bool) -> Fill:
        rules = await self.rules(req.symbol)
        cfg = self.config
        if cfg.market == "spot" and req.position_side is PositionSide.SHORT:
            log.warning("order %s refused: spot is long-only", req.client_order_id)
            return self._rejected(
                req, f"not sent: spot is long-only, no {req.side.value} for a short position"
            )
        is_market = cfg.order_type == "market"
        # on futures an order on its position's exit side (a long's SELL, a short's BUY) may
        # only reduce it: the exchange refuses (-2022) or caps what would flip the position
        reduce_only = cfg.market == "futures" and req.reduces
        ref = (
            req.ref_price
            if is_market
            else marketable_limit_price(req.ref_price, req.side, cfg.limit_cap_pct, rules)
        )
        check = check_order(req.side, req.qty, ref, rules, is_market, reduce_only=reduce_only)
        order = Order(
            client_order_id=req.client_order_id,
            symbol=req.symbol,
            side=req.side,
            type=OrderType.MARKET if is_market else OrderType.LIMIT_IOC,
            qty=check.qty if check.ok else req.qty,
            limit_price=None if is_market else (check.price if check.ok else ref),
            reduce_only=reduce_only,
        )
        deadline = self._clock() + cfg.resolve_s
        if retried:  # an earlier attempt may have sent it: look before anything else
            order = order.apply(self._submitted(order))
            order = await self._resolve(order, deadline)
            if order.status != VenueStatus.INITIALIZED:
                return await self._outcome(order, req, rules, deadline)
        if not check.ok:
            log.info("order %s not sent: %s", req.client_order_id, check.reason)
            return self._rejected(req, f"not sent: {check.reason}")
        for _ in range(MAX_SENDS):
            order = await self._send(order, req, check.qty, check.price, is_market)
            if order.status == VenueStatus.REJECTED:
                return self._rejected(req, order.reason, order)
            order = await self._resolve(order, deadline)
            if order.status != VenueStatus.INITIALIZED:
                return await self._outcome(order, req, rules, deadline)
            log.warning(
                "order %s never reached the exchange: sending it again", order.client_order_id
            )
        raise OrderInDoubt(f"order {req.client_order_id} never reached the exchange; retrying")

    async def _send(
        self, order: Order, req: OrderRequest, qty: float, price: float, is_market: bool
    ) -> Order:
        """One attempt to create the order; the order after its answer (or its doubt)."""
        cfg = self.config
        params: dict[str, Any] = {"clientOrderId": req.client_order_id}
        if not is_market:
            params["timeInForce"] = "IOC"
        if cfg.market == "spot":
            params["newOrderRespType"] = "FULL"
        else:
            params["newOrderRespType"] = "RESULT"
            if order.reduce_only:
                params["reduceOnly"] = True
        order = order.apply(self._submitted(order))
        try:
            raw = await self._call(
                "create",
                self.exchange.create_order,
                self.venue_symbol(req.symbol),
                "market" if is_market else "limit",
                req.side.value.lower(),
                qty,
                None if is_market else price,
                params,
            )
        except RestUnavailable as err:  # refused in this process: nothing left it
            raise OrderInDoubt(f"order {req.client_order_id} not sent yet: {err}") from None
        except Exception as err:  # noqa: BLE001 - every answer is classified below
            if is_final_refusal(err):
                reason = short_error(err)
                log.warning("order %s rejected: %s", req.client_order_id, reason)
                return order.apply(
                    OrderRejected(
                        client_order_id=order.client_order_id,
                        time_ms=self._now_ms(),
                        code=error_code(err),
                        reason=reason,
                    )
                )
            log.warning("order %s outcome unknown: %s", req.client_order_id, short_error(err))
            return order.apply(self._unknown(order, short_error(err)))
        return self._take(order, raw)

    def _submitted(self, order: Order) -> OrderSubmitted:
        window = self.config.recv_window_ms + self.config.clock_skew_ms
        return OrderSubmitted(
            client_order_id=order.client_order_id, time_ms=self._now_ms(), recv_window_ms=window
        )

    def _unknown(self, order: Order, reason: str) -> OrderOutcomeUnknown:
        return OrderOutcomeUnknown(
            client_order_id=order.client_order_id, time_ms=self._now_ms(), reason=reason[:300]
        )

    def _take(self, order: Order, raw: Any) -> Order:
        """Apply a create / cancel / query answer; an answer with ids only is an ack."""
        try:
            order = order.apply(looked_up(raw, order.client_order_id, self._now_ms()))
        except ValueError as err:
            if isinstance(err, InvalidOrderEvent):
                raise
            venue_id = (raw or {}).get("id")
            if venue_id:
                return order.apply(
                    OrderAccepted(
                        client_order_id=order.client_order_id,
                        time_ms=self._now_ms(),
                        venue_order_id=str(venue_id),
                    )
                )
            return order.apply(self._unknown(order, f"unreadable answer: {err}"))
        trades = (raw or {}).get("trades") or []
        if trades and order.venue_order_id:  # a spot FULL answer: the fills, fees and all
            for event in trade_fills(
                trades,
                order.client_order_id,
                order.venue_order_id,
                self._fee_to_quote,
                own_answer=True,
            ):
                order = order.apply(event)
        return order

    async def _resolve(self, order: Order, deadline: float) -> Order:
        """Look the order up until its outcome is known (or INITIALIZED: conclusively never
        landed); past ``deadline`` raise ``OrderInDoubt`` for the activity to retry."""
        venue = self.venue_symbol(order.symbol)
        while order.needs_lookup:
            if self._clock() > deadline:
                raise OrderInDoubt(
                    f"order {order.client_order_id} outcome still unknown ({order.reason or 'sent'}"
                    "); looking it up again on the next attempt"
                )
            try:
                raw = await self._call(
                    "fetch",
                    self.exchange.fetch_order,
                    None,
                    venue,
                    {"clientOrderId": order.client_order_id},
                )
            except ccxt.OrderNotFound:
                event = OrderLookedUp(
                    client_order_id=order.client_order_id, time_ms=self._now_ms(), found=False
                )
                try:
                    order = order.apply(event)
                except InvalidOrderEvent as err:  # known to the exchange before: a stale answer
                    log.warning("ignoring a not-found for a known order: %s", err)
            except RestUnavailable as err:
                if err.until_ms / 1000 > deadline:  # paused past this attempt: hand it on
                    raise OrderInDoubt(
                        f"order {order.client_order_id} outcome unknown and REST paused: {err}"
                    ) from None
                log.info("lookup of %s waits: %s", order.client_order_id, err)
            except (ccxt.NetworkError, ccxt.ExchangeError) as err:
                log.info("lookup of %s failed: %s", order.client_order_id, short_error(err))
            else:
                order = self._take(order, raw)
            if order.needs_lookup:
                await asyncio.sleep(self.config.poll_s)
        return order

    async def _outcome(
        self, order: Order, req: OrderRequest, rules: MarketRules, deadline: float
    ) -> Fill:
        """Settle an order that reached the exchange: wait for (or force) its end, read its
        trades, and answer what filled."""
        venue = self.venue_symbol(order.symbol)
        settle_by = self._clock() + self.config.settle_s
        while order.is_open:
            if self._clock() > settle_by:
                order = await self._cancel(order, deadline)
                break
            await asyncio.sleep(self.config.poll_s)
            order = order.apply(self._unknown(order, "waiting for an IOC order to end"))
            order = await self._resolve(order, deadline)
        if (
            order.filled_qty > 0
            and order.venue_order_id
            and (order.needs_trades or not order.fills)
        ):
            order = await self._trades(order, venue)
        return self._fill(order, req, rules)

    async def _cancel(self, order: Order, deadline: float) -> Order:
        venue = self.venue_symbol(order.symbol)
        try:
            raw = await self._call(
                "cancel", self.exchange.cancel_order, order.venue_order_id, venue
            )
        except ccxt.OrderNotFound:  # it ended meanwhile
            order = order.apply(self._unknown(order, "cancel found it ended"))
        except Exception as err:  # noqa: BLE001 - any doubt is settled by lookup
            order = order.apply(self._unknown(order, f"cancel: {short_error(err)}"))
        else:
            order = self._take(order, raw)
        return await self._resolve(order, deadline)

    async def _trades(self, order: Order, venue: str) -> Order:
        """The order's trades (price, qty, fee); a few tries, then the snapshot's totals."""
        assert order.venue_order_id is not None
        for _ in range(3):
            try:
                trades = await self._call(
                    "trades",
                    self.exchange.fetch_my_trades,
                    venue,
                    None,
                    None,
                    {"orderId": order.venue_order_id},
                )
                fills = trade_fills(
                    trades, order.client_order_id, order.venue_order_id, self._fee_to_quote
                )
                for event in fills:
                    order = order.apply(event)
                if not order.needs_trades:
                    return order
            except (RestUnavailable, ccxt.NetworkError, ccxt.ExchangeError) as err:
                log.info("trades of %s: %s", order.client_order_id, short_error(err))
            await asyncio.sleep(self.config.poll_s)
        log.warning(
            "order %s: %.8g filled without its trades; fee estimated at %.4f %%",
            order.client_order_id,
            order.inferred_qty,
            self.config.fee_rate * 100,
        )
        return order

    def _fee_to_quote(self, fee: float, asset: str, price: float) -> float | None:
        """A trade's fee in quote: as is in the quote asset, at the trade's price in its base
        asset; None for any other (e.g. BNB: estimated from the fee rate)."""
        if not self._rules or asset in {r.quote for r in self._rules.values()}:
            return fee
        if asset in {r.base for r in self._rules.values()}:
            return fee * price
        return None

    def _fill(self, order: Order, req: OrderRequest, rules: MarketRules) -> Fill:
        filled = order.filled_qty
        if filled <= 0:
            reason = order.reason or f"{order.status.value.lower()}: nothing filled"
            return self._rejected(req, reason, order)
        price = order.avg_price or req.ref_price
        fee = order.fees_quote
        unpriced = [f for f in order.fills if f.fee and not f.fee_quote]
        estimate_qty = order.inferred_qty + sum(f.qty for f in unpriced)
        fee += estimate_qty * price * self.config.fee_rate
        base_fee = sum(f.fee for f in order.fills if f.fee_asset == rules.base)
        qty = filled - base_fee if req.side == Side.BUY else filled
        complete = order.status == VenueStatus.FILLED
        dust = 0.0
        rest = req.qty - filled
        # dust is what an exit leaves that no order could trade on its own: a long's SELL on
        # spot (lot step, min notional), or on futures a reduce-only exit of either side (a
        # short's BUY cover too), where only the lot step counts: reduce-only orders are
        # exempt from the minimum notional, so a tradable rest of a short is never dust
        if req.reduces and rest > req.qty * QTY_RTOL:
            is_market = self.config.order_type == "market"
            alone = check_order(
                req.side, rest, price, rules, is_market, reduce_only=order.reduce_only
            )
            if not alone.ok and alone.filter in (
                "LOT_SIZE",
                "MARKET_LOT_SIZE",
                rules.notional_filter,
            ):
                dust = rest
        return Fill(
            client_order_id=req.client_order_id,
            position_id=req.position_id,
            symbol=req.symbol,
            side=req.side,
            status=OrderStatus.FILLED if complete else OrderStatus.PARTIALLY_FILLED,
            qty=qty,
            price=price,
            fee=max(fee, 0.0),
            market_time_ms=req.market_time_ms,
            reason=req.reason if complete else f"{order.status.value.lower()} after part filled",
            venue_order_id=order.venue_order_id,
            requested_qty=req.qty,
            dust=dust,
        )

    def _rejected(self, req: OrderRequest, reason: str, order: Order | None = None) -> Fill:
        return Fill(
            client_order_id=req.client_order_id,
            position_id=req.position_id,
            symbol=req.symbol,
            side=req.side,
            status=OrderStatus.REJECTED,
            qty=0.0,
            price=req.ref_price,
            fee=0.0,
            market_time_ms=req.market_time_ms,
            reason=reason[:300],
            venue_order_id=order.venue_order_id if order else None,
            requested_qty=req.qty,
        )

    # ------------------------------------------------------------ reading

    async def lookup(self, client_order_id: str, symbol: str | None = None) -> Fill | None:
        """The order's outcome by client id (on ``symbol``, else on every traded symbol)."""
        await self.start()
        for sym in [symbol] if symbol else list(self.config.symbols):
            try:
                raw = await self._call(
                    "fetch",
                    self.exchange.fetch_order,
                    None,
                    self.venue_symbol(sym),
                    {"clientOrderId": client_order_id},
                )
            except ccxt.OrderNotFound:
                continue
            return await self._fill_of(raw, client_order_id, sym)
        return None

    async def _fill_of(self, raw: Any, coid: str, symbol: str) -> Fill:
        rules = await self.rules(symbol)
        side = Side.BUY if str(raw.get("side")).lower() == "buy" else Side.SELL
        amount = float(raw.get("amount") or 0) or float(raw.get("filled") or 0)
        reduce_only = self.config.market == "futures" and _reduce_only(raw)
        order = Order(
            client_order_id=coid,
            symbol=symbol,
            side=side,
            type=OrderType.MARKET,
            qty=amount,
            reduce_only=reduce_only,
        )
        order = self._take(order, raw)
        if order.filled_qty > 0 and order.venue_order_id:
            order = await self._trades(order, self.venue_symbol(symbol))
        price = order.avg_price or float(raw.get("price") or 0) or 1.0
        req = OrderRequest(
            client_order_id=coid,
            position_id=coid.rsplit("-", 1)[0],
            seq=int(coid.rsplit("-", 1)[1]) if coid.rsplit("-", 1)[-1].isdigit() else 1,
            symbol=symbol,
            side=side,
            qty=amount,
            ref_price=price,
            market_time_ms=int(raw.get("timestamp") or 0),
            position_side=_position_side(side, reduce_only, self.config.market),
        )
        if order.is_open:  # a working order (a resting stop): nothing final to report yet
            return self._rejected(req, f"open: {order.status.value}", order).model_copy(
                update={"reason": f"open ({order.status.value})"}
            )
        return self._fill(order, req, rules)

    async def orders_of(self, position_id: str) -> list[Fill]:
        """Every order of a position the exchange holds, in sequence order (client ids are
        deterministic per position and sequence, so they are recognised, not remembered)."""
        await self.start()
        wanted = {
            client_order_id(position_id, k): k for k in range(1, self.config.max_seq_looked_up)
        }
        found: list[tuple[int, Fill]] = []
        for sym in self.config.symbols:
            raws = await self._call(
                "orders", self.exchange.fetch_orders, self.venue_symbol(sym), None, 1000
            )
            for raw in raws:
                coid = raw.get("clientOrderId")
                if coid in wanted:
                    found.append((wanted[coid], await self._fill_of(raw, coid, sym)))
        return [fill for _, fill in sorted(found, key=lambda x: x[0])]

    async def balances(self) -> Balances:
        """Cash (the quote asset's total) and the holdings of the traded symbols: spot base
        balances, or each open futures position signed (one-way mode): a long's size, a short's
        size negated (Binance's ``positionAmt``), so reconciliation tells one from the other."""
        await self.start()
        quote = next(iter(self._rules.values())).quote
        try:
            balance = await self._call("balance", self.exchange.fetch_balance)
        except ccxt.ExchangeError as err:
            raise ExchangeRefused(f"balances: {short_error(err)}") from None
        cash = float((balance.get(quote) or {}).get("total") or 0.0)
        holdings: dict[str, float] = {}
        if self.config.market == "spot":
            for sym, rules in self._rules.items():
                total = float((balance.get(rules.base) or {}).get("total") or 0.0)
                if total > 0:
                    holdings[sym] = total
        else:
            venues = [self.venue_symbol(s) for s in self.config.symbols]
            positions = await self._call("balance", self.exchange.fetch_positions, venues)
            by_venue = {self.venue_symbol(s): s for s in self.config.symbols}
            for p in positions:
                size = float(p.get("contracts") or 0.0)
                if size and p.get("symbol") in by_venue:
                    signed = size if p.get("side") != "short" else -size
                    holdings[by_venue[p["symbol"]]] = signed
        return Balances(cash=cash, holdings=holdings)

    async def close(self) -> None:
        await self.exchange.close()

    async def open_orders(self) -> list[VenueOrder]:
        """Open orders on every traded symbol; on futures the conditional (algo) ones too."""
        await self.start()
        found: list[VenueOrder] = []
        for sym in self.config.symbols:
            venue = self.venue_symbol(sym)
            books: list[tuple[str, dict[str, Any]]] = [("order", {})]
            if self.config.market == "futures":
                books.append(("stop", {"trigger": True}))
            for kind, params in books:
                raws = await self._call(
                    "orders", self.exchange.fetch_open_orders, venue, None, None, params
                )
                for raw in raws:
                    stop = raw.get("triggerPrice") or raw.get("stopPrice")
                    found.append(
                        VenueOrder(
                            client_order_id=str(raw.get("clientOrderId") or ""),
                            symbol=sym,
                            side=Side.BUY if str(raw.get("side")).lower() == "buy" else Side.SELL,
                            qty=float(raw.get("amount") or 0.0),
                            kind="stop" if kind == "stop" or stop else "order",
                            stop_price=float(stop) if stop else None,
                            venue_order_id=str(raw.get("id")) if raw.get("id") else None,
                        )
                    )
        return found

    async def last_prices(self) -> dict[str, float]:
        """The exchange's last price of every traded symbol."""
        await self.start()
        prices: dict[str, float] = {}
        for sym in self.config.symbols:
            ticker = await self._call("fetch", self.exchange.fetch_ticker, self.venue_symbol(sym))
            last = ticker.get("last") or ticker.get("close")
            if last:
                prices[sym] = float(last)
        return prices

    async def income(self, since_ms: int) -> list[IncomeEntry]:
        """Funding paid or received on USDⓈ-M since ``since_ms`` (none on spot)."""
        if self.config.market != "futures":
            return []
        await self.start()
        by_venue = {
            self.venue_symbol(s).replace("/", "").split(":")[0]: s for s in self.config.symbols
        }
        raws = await self._call(
            "orders",
            self.exchange.fapiPrivateGetIncome,
            {"incomeType": "FUNDING_FEE", "startTime": since_ms, "limit": 1000},
        )
        return [
            IncomeEntry(
                income_id=str(r.get("tranId")),
                symbol=by_venue.get(str(r.get("symbol")), str(r.get("symbol"))),
                kind=str(r.get("incomeType")),
                amount=float(r.get("income") or 0.0),
                asset=str(r.get("asset") or ""),
                time_ms=int(r.get("time") or 0),
            )
            for r in raws
            if str(r.get("incomeType")) == "FUNDING_FEE"
        ]

    async def cancel_order(self, order: VenueOrder) -> None:
        await self.start()
        params: dict[str, Any] = {}
        if self.config.market == "futures" and order.kind == "stop":
            params["trigger"] = True
        try:
            await self._call(
                "cancel", self.exchange.cancel_order, order.venue_order_id,
                self.venue_symbol(order.symbol), params,
            )  # fmt: skip
        except ccxt.OrderNotFound:
            return

    # ------------------------------------------------------------ protective stops

    supports_stops = True

    async def place_stop(self, req: StopRequest) -> StopState:
        return await self.stops.place(req, retried=_attempt() > 1)

    async def stop_status(self, ref: StopRef) -> StopState:
        return await self.stops.status(ref)

    async def cancel_stop(self, ref: StopRef) -> StopState:
        return await self.stops.cancel(ref)

    # ------------------------------------------------------------ plumbing

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _call(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """One REST call through the process's weight budget, its headers fed back to it."""
        pool = self.config.market
        await self.budget.acquire(pool, _WEIGHTS[pool].get(what, 1))
        try:
            result = await fn(*args)
        except ccxt.DDoSProtection as err:
            status = 418 if _BAN.search(str(err)) else 429
            self.budget.observe(
                pool, status, getattr(self.exchange, "last_response_headers", {}) or {}
            )
            raise
        self.budget.observe(pool, 200, getattr(self.exchange, "last_response_headers", {}) or {})
        return result


def _reduce_only(raw: Any) -> bool:
    """Whether an order answer (ccxt's, or its raw ``info``) says reduce-only."""
    info = (raw or {}).get("info") or {}
    flag = raw.get("reduceOnly")
    if flag is None:
        flag = info.get("reduceOnly")
    return flag is True or str(flag).lower() == "true"


def _position_side(side: Side, reduce_only: bool, market: str) -> PositionSide:
    """The direction of the position a looked-up order belongs to: on futures a reduce-only
    BUY covers a short and a plain SELL opens (or adds to) one; everything else is a long's."""
    if market != "futures":
        return PositionSide.LONG
    if (side == Side.BUY) == reduce_only:
        return PositionSide.SHORT
    return PositionSide.LONG


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


__all__ = ["ExchangeBroker", "ExchangeConfig", "ExchangeRefused", "OrderInDoubt"]
