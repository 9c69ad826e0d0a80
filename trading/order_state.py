"""Orders as state machines (issue 11, SPEC §9): an order changes only by ``apply(event)``.

In the manner of NautilusTrader (``model/orders/base.pyx``): an ``Order`` is an immutable
pydantic model, ``order.apply(event)`` returns the next one, and ``TRANSITIONS`` lists every
(status, event kind) pair that is legal with the statuses it may lead to. Anything else raises
``InvalidOrderEvent`` (a ``ValueError``) and the caller still holds the unchanged order. Pure:
standard library and pydantic only, no clock, no I/O, so workflow code imports it and the
broker activities build the events.

Quantities are compared exactly: every float is read through its shortest repr into a
``Decimal`` (``0.1`` is ``Decimal("0.1")``), so three fills of 0.1 complete an order of 0.3.
Venues send decimal strings, which survive the float round trip unchanged.

Lifecycle::

    INITIALIZED --submitted--> SUBMITTED --accepted--> NEW --filled--> PARTIALLY_FILLED
        |                         |                     |                 |
        | rejected (a filter)     | filled ------------ | -- filled ----> FILLED
        | canceled (abandoned)    | rejected            | canceled / expired / rejected
        |                         | canceled / expired  v
        |                         +--- unknown ---> UNKNOWN --looked_up--> any venue status
        +<--------- looked_up "does not exist", conclusive ------------------+

Terminal statuses (FILLED, CANCELED, EXPIRED, REJECTED) are final: no event changes them. A
terminal order still takes late *information* that agrees with it: a fill that happened
before the cancel but was reported after it, a venue id it did not know, a lookup showing
the same status (which may reveal fills it missed). Anything that contradicts it raises.

UNKNOWN and lookups
-------------------
* ``OrderOutcomeUnknown`` (a timeout, a 5xx, -1007 after sending, or a cancel whose answer
  was lost) is legal from SUBMITTED, NEW, PARTIALLY_FILLED and UNKNOWN. While UNKNOWN the
  order takes fills and a venue id as facts, but only a lookup, a fill completing it or a
  terminal event ends the doubt; an ``OrderAccepted`` alone does not (it says nothing about
  a cancel in flight). Nothing is ever resubmitted from SUBMITTED or UNKNOWN: ``submitted``
  is legal from INITIALIZED only.
* ``OrderLookedUp`` is any snapshot the venue returns for the order: a query by
  ``origClientOrderId``, or the order structure of a create or cancel answer. Its status and
  executed quantity are the truth. When it reports more executed than the fills known, the
  difference is kept as an *inferred* quantity at the venue's price (``cum_quote``), counted
  in ``filled_qty`` and ``avg_price`` at once; trades fetched later (``OrderFilled``) replace
  it, so ``inferred_qty > 0`` means "fetch the trades" (fees of that part are not known yet).
  A snapshot reporting *less* than the fills known is stale when open (kept fills win) and a
  contradiction when terminal (raises). Open snapshots never end UNKNOWN into FILLED: an
  open snapshot with everything executed raises.
* "Does not exist" (-2013) is ``OrderLookedUp(found=False)``. It proves the order never
  reached the venue only once the attempt can no longer land: Binance refuses a request
  whose signed timestamp is older than its ``recvWindow`` (at most 60 s), so the lookup is
  *conclusive* when ``lookup.time_ms >= last_submit_ms + recv_window_ms``. A conclusive
  not-found sends the order back to INITIALIZED (never at the venue: it may be submitted
  again with the *same* client id, or abandoned by ``canceled``); an earlier one leaves it
  UNKNOWN until ``lookup_conclusive_from_ms``. Not-found for an order the venue acknowledged
  before (a venue id or fills known) raises. ``OrderSubmitted.time_ms`` must therefore be an
  upper bound of the signed timestamp of the attempt: take it just before signing; an
  attempt that may follow an unrecorded earlier one (an activity retry) applies
  ``OrderSubmitted`` at its own start time before looking up.

Client order ids (what the machine assumes)
-------------------------------------------
Binance keeps a client order id unique only among *open* orders: once an order is filled,
canceled or expired, another order may carry the same id, and a lookup by
``origClientOrderId`` then finds one of them. This machine assumes one client id names one
venue order for its whole life: ids are deterministic per (position id, sequence) and never
reused (``trading/orders.py``; position ids carry a random epoch per account history, and
every new order, a stop's cancel-replace included, takes a new sequence). A resubmission
after a conclusive not-found reuses the id safely because the first attempt never existed.
A snapshot or fill naming another venue order id than the one recorded raises: that is how a
reused id (a manual order, another engine on the account) shows. A placement refused as a
duplicate client id (an open order already has it) is no rejection: the broker applies
``OrderOutcomeUnknown`` and looks it up.

History size
------------
An order lives in workflow state. ``fills`` keeps every trade (needed for duplicate trade
ids and fees; the venue bounds their number). ``events`` keeps the lifecycle events that
changed the order, fills excluded (they are in ``fills``), at most ``MAX_EVENTS`` of them,
oldest dropped first (``events_dropped`` counts them): only repeated unknown/lookup rounds
could grow it. Events that change nothing (a duplicate fill, a repeated ack, a poll showing
the same state) are not recorded. Derived values (``filled_qty``, ``avg_price``…) are
properties, not fields, so they never disagree with the fills and never enter history.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, NewType

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from trading.models import Model, Side

MAX_EVENTS = 16
MAX_RECV_WINDOW_MS = 60_000  # Binance refuses a larger recvWindow: any attempt is dead by then

ClientOrderId = NewType("ClientOrderId", str)
VenueOrderId = NewType("VenueOrderId", str)
TradeId = NewType("TradeId", str)

# Validated forms: a client id is Binance-valid (trading/orders.py), the others non-empty.
ClientOrderIdStr = Annotated[
    ClientOrderId, StringConstraints(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9_-]+$")
]
VenueOrderIdStr = Annotated[VenueOrderId, StringConstraints(min_length=1, max_length=64)]
TradeIdStr = Annotated[TradeId, StringConstraints(min_length=1, max_length=64)]


class InvalidOrderEvent(ValueError):
    """An event that the order's status does not allow or that contradicts what it knows."""


class OrderStatus(StrEnum):
    """Status of an ``Order`` (not ``trading.models.OrderStatus``, the paper fill's outcome)."""

    INITIALIZED = "INITIALIZED"  # built, not at the venue (never sent, or proven never landed)
    SUBMITTED = "SUBMITTED"  # sent or possibly sent, no answer yet
    NEW = "NEW"  # open at the venue, nothing filled
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    UNKNOWN = "UNKNOWN"  # an outcome not known yet: look it up before anything else
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


_S = OrderStatus
TERMINAL_STATUSES = frozenset({_S.FILLED, _S.CANCELED, _S.EXPIRED, _S.REJECTED})
OPEN_STATUSES = frozenset({_S.NEW, _S.PARTIALLY_FILLED})
IN_DOUBT_STATUSES = frozenset({_S.SUBMITTED, _S.UNKNOWN})
VENUE_STATUSES = frozenset({_S.NEW, _S.PARTIALLY_FILLED, *TERMINAL_STATUSES})

_BINANCE_STATUS = {
    # Binance spot / USDⓈ-M order statuses (PENDING_CANCEL is documented as unused)
    "NEW": _S.NEW,
    "PARTIALLY_FILLED": _S.PARTIALLY_FILLED,
    "FILLED": _S.FILLED,
    "CANCELED": _S.CANCELED,
    "PENDING_CANCEL": _S.NEW,
    "REJECTED": _S.REJECTED,
    "EXPIRED": _S.EXPIRED,
    "EXPIRED_IN_MATCH": _S.EXPIRED,  # self-trade prevention
    # ccxt unified statuses ("open" becomes PARTIALLY_FILLED when the snapshot has fills)
    "OPEN": _S.NEW,
    "CLOSED": _S.FILLED,
    "CANCELLED": _S.CANCELED,
}


def parse_venue_status(raw: str) -> OrderStatus:
    """A venue status for ``OrderLookedUp``, from Binance's raw name or ccxt's unified one."""
    status = _BINANCE_STATUS.get(raw.strip().upper())
    if status is None:
        raise ValueError(f"unknown venue order status {raw!r}")
    return status


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT_IOC = "LIMIT_IOC"  # marketable limit, immediate or cancel
    STOP_MARKET = "STOP_MARKET"  # futures protective stop (reduce-only)
    STOP_LIMIT = "STOP_LIMIT"  # spot STOP_LOSS_LIMIT


class _Frozen(Model):
    model_config = ConfigDict(frozen=True)


# ---------------------------------------------------------------- events

EventKind = Literal[
    "submitted", "accepted", "rejected", "filled", "canceled", "expired", "unknown", "looked_up"
]


class _Event(_Frozen):
    """``time_ms``: epoch ms. For submitted, unknown and looked_up it is the broker's clock
    (the recvWindow rule compares them); for a fill, the trade's time at the venue."""

    client_order_id: ClientOrderIdStr
    time_ms: int = Field(ge=0)


class OrderSubmitted(_Event):
    kind: Literal["submitted"] = "submitted"
    recv_window_ms: int = Field(default=MAX_RECV_WINDOW_MS, ge=0, le=10 * MAX_RECV_WINDOW_MS)


class OrderAccepted(_Event):
    kind: Literal["accepted"] = "accepted"
    venue_order_id: VenueOrderIdStr


class OrderRejected(_Event):
    """Refused by the venue (``code``: -2010, -1013, -4164, -2022…) or, with no code, by a
    filter check before sending (from INITIALIZED)."""

    kind: Literal["rejected"] = "rejected"
    code: int | None = None
    reason: str


class OrderFilled(_Event):
    """One trade. ``fee`` is in ``fee_asset``; ``fee_quote`` is it converted to the quote
    currency by the broker. Fees may be negative (a maker rebate)."""

    kind: Literal["filled"] = "filled"
    trade_id: TradeIdStr
    venue_order_id: VenueOrderIdStr | None = None
    qty: float = Field(gt=0)
    price: float = Field(gt=0)
    fee: float = 0.0
    fee_asset: str = ""
    fee_quote: float = 0.0

    @property
    def quote(self) -> float:
        return float(_d(self.qty) * _d(self.price))


class OrderCanceled(_Event):
    kind: Literal["canceled"] = "canceled"
    reason: str = ""


class OrderExpired(_Event):
    kind: Literal["expired"] = "expired"
    reason: str = ""


class OrderOutcomeUnknown(_Event):
    kind: Literal["unknown"] = "unknown"
    reason: str


class OrderLookedUp(_Event):
    """The venue's snapshot of the order, or ``found=False`` for "does not exist" (-2013).

    ``executed_qty`` is the venue's cumulative filled quantity, ``cum_quote`` its quote value
    (Binance ``cummulativeQuoteQty`` / futures ``cumQuote``).
    """

    kind: Literal["looked_up"] = "looked_up"
    found: bool = True
    venue_order_id: VenueOrderIdStr | None = None
    status: OrderStatus | None = None
    executed_qty: float = Field(default=0.0, ge=0)
    cum_quote: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> OrderLookedUp:
        if not self.found:
            if self.status or self.venue_order_id or self.executed_qty or self.cum_quote:
                raise ValueError("a not-found lookup carries no status, venue id or quantity")
            return self
        if self.status not in VENUE_STATUSES or self.venue_order_id is None:
            raise ValueError(
                f"a found lookup needs a venue order id and a venue status, got "
                f"{self.venue_order_id!r} / {self.status}"
            )
        if (self.executed_qty > 0) != (self.cum_quote > 0):
            raise ValueError(
                f"executed_qty {self.executed_qty} and cum_quote {self.cum_quote} disagree"
            )
        return self


OrderEvent = Annotated[
    OrderSubmitted
    | OrderAccepted
    | OrderRejected
    | OrderFilled
    | OrderCanceled
    | OrderExpired
    | OrderOutcomeUnknown
    | OrderLookedUp,
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- transition table


def _t(*targets: OrderStatus) -> frozenset[OrderStatus]:
    return frozenset(targets)


_ANY_VENUE = _t(*VENUE_STATUSES)

TRANSITIONS: dict[tuple[OrderStatus, EventKind], frozenset[OrderStatus]] = {
    (_S.INITIALIZED, "submitted"): _t(_S.SUBMITTED),
    (_S.INITIALIZED, "rejected"): _t(_S.REJECTED),  # denied before sending
    (_S.INITIALIZED, "canceled"): _t(_S.CANCELED),  # abandoned before sending
    (_S.INITIALIZED, "looked_up"): _t(_S.INITIALIZED, *_ANY_VENUE),  # a landing not recorded
    (_S.SUBMITTED, "accepted"): _t(_S.NEW),
    (_S.SUBMITTED, "rejected"): _t(_S.REJECTED),
    (_S.SUBMITTED, "filled"): _t(_S.PARTIALLY_FILLED, _S.FILLED),
    (_S.SUBMITTED, "canceled"): _t(_S.CANCELED),
    (_S.SUBMITTED, "expired"): _t(_S.EXPIRED),
    (_S.SUBMITTED, "unknown"): _t(_S.UNKNOWN),
    (_S.SUBMITTED, "looked_up"): _t(_S.INITIALIZED, _S.UNKNOWN, *_ANY_VENUE),
    (_S.NEW, "accepted"): _t(_S.NEW),
    (_S.NEW, "rejected"): _t(_S.REJECTED),  # a stop refused when it triggers
    (_S.NEW, "filled"): _t(_S.PARTIALLY_FILLED, _S.FILLED),
    (_S.NEW, "canceled"): _t(_S.CANCELED),
    (_S.NEW, "expired"): _t(_S.EXPIRED),
    (_S.NEW, "unknown"): _t(_S.UNKNOWN),
    (_S.NEW, "looked_up"): _ANY_VENUE,
    (_S.PARTIALLY_FILLED, "accepted"): _t(_S.PARTIALLY_FILLED),
    (_S.PARTIALLY_FILLED, "filled"): _t(_S.PARTIALLY_FILLED, _S.FILLED),
    (_S.PARTIALLY_FILLED, "canceled"): _t(_S.CANCELED),
    (_S.PARTIALLY_FILLED, "expired"): _t(_S.EXPIRED),
    (_S.PARTIALLY_FILLED, "unknown"): _t(_S.UNKNOWN),
    (_S.PARTIALLY_FILLED, "looked_up"): _t(_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED),
    (_S.UNKNOWN, "accepted"): _t(_S.UNKNOWN),
    (_S.UNKNOWN, "rejected"): _t(_S.REJECTED),
    (_S.UNKNOWN, "filled"): _t(_S.UNKNOWN, _S.FILLED),
    (_S.UNKNOWN, "canceled"): _t(_S.CANCELED),
    (_S.UNKNOWN, "expired"): _t(_S.EXPIRED),
    (_S.UNKNOWN, "unknown"): _t(_S.UNKNOWN),
    (_S.UNKNOWN, "looked_up"): _t(_S.INITIALIZED, _S.UNKNOWN, *_ANY_VENUE),
    # terminal: late information that agrees, never a new status
    **{(s, k): _t(s) for s in (_S.FILLED, _S.CANCELED, _S.EXPIRED) for k in ("accepted", "filled")},
    **{(s, "looked_up"): _t(s) for s in TERMINAL_STATUSES},
}

# ---------------------------------------------------------------- the order


def _d(x: float | int) -> Decimal:
    """Exact decimal of a float as written (shortest repr): 0.1 -> Decimal('0.1')."""
    return Decimal(repr(float(x)))


def _f(x: Decimal) -> float:
    return float(x)


class Order(_Frozen):
    """One order and everything known about it. Change it only with ``apply``.

    ``inferred_qty`` / ``inferred_quote``: executed at the venue per a lookup, not yet itemized
    by trades (module docstring). ``submit_count``, ``last_submit_ms`` and ``recv_window_ms``
    come from ``OrderSubmitted`` and decide when a not-found lookup is conclusive. ``reason``
    says why the order is in its status when an event said (rejected, canceled, unknown).
    """

    client_order_id: ClientOrderIdStr
    symbol: str = Field(min_length=1)
    side: Side
    type: OrderType
    qty: float = Field(gt=0)
    limit_price: float | None = Field(default=None, gt=0)
    stop_price: float | None = Field(default=None, gt=0)
    reduce_only: bool = False
    status: OrderStatus = _S.INITIALIZED
    venue_order_id: VenueOrderIdStr | None = None
    fills: tuple[OrderFilled, ...] = ()
    inferred_qty: float = Field(default=0.0, ge=0)
    inferred_quote: float = Field(default=0.0, ge=0)
    submit_count: int = Field(default=0, ge=0)
    last_submit_ms: int | None = None
    recv_window_ms: int = MAX_RECV_WINDOW_MS
    reject_code: int | None = None
    reason: str = ""
    events: tuple[OrderEvent, ...] = ()
    events_dropped: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _prices_match_type(self) -> Order:
        need_limit = self.type in (OrderType.LIMIT_IOC, OrderType.STOP_LIMIT)
        need_stop = self.type in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT)
        if (self.limit_price is not None) != need_limit:
            raise ValueError(
                f"{self.type} order {'needs' if need_limit else 'takes no'} limit_price"
            )
        if (self.stop_price is not None) != need_stop:
            raise ValueError(f"{self.type} order {'needs' if need_stop else 'takes no'} stop_price")
        return self

    # ------------------------------------------------------------ derived values

    @property
    def _real_qty(self) -> Decimal:
        return sum((_d(f.qty) for f in self.fills), Decimal(0))

    @property
    def _real_quote(self) -> Decimal:
        return sum((_d(f.qty) * _d(f.price) for f in self.fills), Decimal(0))

    @property
    def _cum(self) -> Decimal:
        return self._real_qty + _d(self.inferred_qty)

    @property
    def filled_qty(self) -> float:
        """What actually filled: the trades plus what a lookup showed beyond them."""
        return _f(self._cum)

    @property
    def remaining(self) -> float:
        return _f(_d(self.qty) - self._cum)

    @property
    def avg_price(self) -> float | None:
        cum = self._cum
        if cum == 0:
            return None
        return _f((self._real_quote + _d(self.inferred_quote)) / cum)

    @property
    def fees_quote(self) -> float:
        """Fees of the known trades in quote currency (the inferred part has none yet)."""
        return _f(sum((_d(f.fee_quote) for f in self.fills), Decimal(0)))

    @property
    def trade_ids(self) -> frozenset[str]:
        return frozenset(f.trade_id for f in self.fills)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_open(self) -> bool:
        """Working at the venue as far as known (NEW or PARTIALLY_FILLED)."""
        return self.status in OPEN_STATUSES

    @property
    def needs_lookup(self) -> bool:
        """SUBMITTED or UNKNOWN: look the client id up before doing anything else."""
        return self.status in IN_DOUBT_STATUSES

    @property
    def needs_trades(self) -> bool:
        """A lookup showed fills whose trades (price, fee) are not known yet."""
        return self.inferred_qty > 0

    @property
    def lookup_conclusive_from_ms(self) -> int | None:
        """From when a not-found lookup proves the last attempt never landed."""
        if self.last_submit_ms is None:
            return None
        return self.last_submit_ms + self.recv_window_ms

    # ------------------------------------------------------------ apply

    def apply(self, event: OrderEvent) -> Order:
        """The order after ``event``; raises ``InvalidOrderEvent`` and changes nothing when
        the event is not legal in this status or contradicts what the order knows."""
        if event.client_order_id != self.client_order_id:
            raise self._invalid(event, f"event for order {event.client_order_id}")
        allowed = TRANSITIONS.get((self.status, event.kind))
        if allowed is None:
            raise self._invalid(event, "not a legal transition")
        new = _HANDLERS[event.kind](self, event)
        if new.status not in allowed:  # the table is the authority, even over a handler
            raise self._invalid(event, f"would lead to {new.status}")
        return new

    def _invalid(self, event: _Event, why: str) -> InvalidOrderEvent:
        return InvalidOrderEvent(
            f"order {self.client_order_id} ({self.status}): {event.kind} refused: {why}"
        )

    def _record(self, event: _Event, **update: object) -> Order:
        events = (*self.events, event)
        dropped = max(0, len(events) - MAX_EVENTS)
        update.update(events=events[dropped:], events_dropped=self.events_dropped + dropped)
        return self.model_copy(update=update)

    def _check_venue_id(self, event: _Event, venue_order_id: str | None) -> str | None:
        if venue_order_id is None:
            return self.venue_order_id
        if self.venue_order_id is not None and venue_order_id != self.venue_order_id:
            raise self._invalid(
                event,
                f"venue order id {venue_order_id} is not {self.venue_order_id} "
                "(a client order id reused?)",
            )
        return venue_order_id

    def _status_from_cum(self, cum: Decimal) -> OrderStatus:
        """After a fill: terminal and UNKNOWN stay unless it completes the order."""
        if cum == _d(self.qty):
            return _S.FILLED
        if self.status in TERMINAL_STATUSES or self.status == _S.UNKNOWN:
            return self.status
        return _S.PARTIALLY_FILLED if cum > 0 else _S.NEW


def _on_submitted(o: Order, e: OrderSubmitted) -> Order:
    return o._record(
        e,
        status=_S.SUBMITTED,
        submit_count=o.submit_count + 1,
        last_submit_ms=e.time_ms,
        recv_window_ms=e.recv_window_ms,
        reason="",
    )


def _on_accepted(o: Order, e: OrderAccepted) -> Order:
    vid = o._check_venue_id(e, e.venue_order_id)
    status = _S.NEW if o.status == _S.SUBMITTED else o.status
    if vid == o.venue_order_id and status == o.status:
        return o  # a repeated ack
    return o._record(e, status=status, venue_order_id=vid)


def _on_rejected(o: Order, e: OrderRejected) -> Order:
    if o._cum > 0:
        raise o._invalid(e, f"{o.filled_qty} already filled")
    return o._record(e, status=_S.REJECTED, reject_code=e.code, reason=e.reason)


def _on_filled(o: Order, e: OrderFilled) -> Order:
    for f in o.fills:
        if f.trade_id == e.trade_id:
            if _d(f.qty) != _d(e.qty) or _d(f.price) != _d(e.price):
                raise o._invalid(
                    e, f"trade {e.trade_id} seen before as {f.qty} @ {f.price}, now {e.qty}"
                )
            return o  # duplicate trade (its fee converted again may differ): ignored
    vid = o._check_venue_id(e, e.venue_order_id)
    qty, inferred = _d(e.qty), _d(o.inferred_qty)
    consumed = min(qty, inferred)  # a trade itemizing what a lookup showed first
    cum = o._cum + qty - consumed
    if cum > _d(o.qty):
        raise o._invalid(e, f"over-fill: {_f(cum)} of {o.qty}")
    # a terminal order keeps its status: a fill completing a CANCELED one fails the table
    status = o._status_from_cum(cum)
    inferred_left = inferred - consumed
    quote_left = _d(o.inferred_quote) * inferred_left / inferred if inferred else Decimal(0)
    return o.model_copy(
        update=dict(
            status=status,
            venue_order_id=vid,
            fills=(*o.fills, e),
            inferred_qty=_f(inferred_left),
            inferred_quote=_f(quote_left),
            reason="" if status != o.status else o.reason,
        )
    )


def _on_canceled(o: Order, e: OrderCanceled) -> Order:
    return o._record(e, status=_S.CANCELED, reason=e.reason)


def _on_expired(o: Order, e: OrderExpired) -> Order:
    return o._record(e, status=_S.EXPIRED, reason=e.reason)


def _on_unknown(o: Order, e: OrderOutcomeUnknown) -> Order:
    return o._record(e, status=_S.UNKNOWN, reason=e.reason)


def _on_looked_up(o: Order, e: OrderLookedUp) -> Order:
    if not e.found:
        return _on_not_found(o, e)
    vid = o._check_venue_id(e, e.venue_order_id)
    qty, executed, cum = _d(o.qty), _d(e.executed_qty), o._cum
    target = e.status
    assert target is not None  # the event's validator guarantees it
    if o.is_terminal and target != o.status:
        raise o._invalid(e, f"the venue says {target}")
    if executed > qty:
        raise o._invalid(e, f"over-fill: the venue executed {e.executed_qty} of {o.qty}")
    inferred, inferred_quote = _d(o.inferred_qty), _d(o.inferred_quote)
    if executed > cum:  # fills we missed
        gap = executed - cum
        known_quote = o._real_quote + inferred_quote
        venue_quote = _d(e.cum_quote)
        gap_quote = venue_quote - known_quote
        if gap_quote <= 0:  # the venue's sum disagrees with our prices: its average then
            gap_quote = gap * venue_quote / executed
        inferred, inferred_quote, cum = inferred + gap, inferred_quote + gap_quote, executed
    elif executed < cum and target not in OPEN_STATUSES:
        raise o._invalid(e, f"the venue says {target} with {e.executed_qty}, fills say {_f(cum)}")
    if target in OPEN_STATUSES:
        if cum == qty:
            raise o._invalid(e, "the venue says open but everything is executed")
        status = _S.PARTIALLY_FILLED if cum > 0 else _S.NEW
    elif target == _S.FILLED and cum != qty:
        raise o._invalid(e, f"the venue says FILLED with {e.executed_qty} of {o.qty}")
    elif target in (_S.CANCELED, _S.EXPIRED) and cum == qty:
        raise o._invalid(e, f"the venue says {target} with everything executed")
    elif target == _S.REJECTED and cum > 0:
        raise o._invalid(e, "the venue says REJECTED after fills")
    else:
        status = target
    update = dict(
        status=status,
        venue_order_id=vid,
        inferred_qty=_f(inferred),
        inferred_quote=_f(inferred_quote),
    )
    if all(getattr(o, k) == v for k, v in update.items()):
        return o  # a poll that shows nothing new
    if status != o.status:
        update["reason"] = ""
    return o._record(e, **update)


def _on_not_found(o: Order, e: OrderLookedUp) -> Order:
    if o.venue_order_id is not None or o._cum > 0:
        raise o._invalid(e, "the venue acknowledged this order before; not-found is no proof")
    if o.status not in IN_DOUBT_STATUSES:
        return o  # never sent, abandoned or rejected: the venue agrees
    conclusive_from = o.lookup_conclusive_from_ms
    if conclusive_from is not None and e.time_ms >= conclusive_from:
        return o._record(e, status=_S.INITIALIZED, reason="not found at the venue: never landed")
    reason = f"not found yet; conclusive from {conclusive_from}"
    if o.status == _S.UNKNOWN and o.reason == reason:
        return o
    return o._record(e, status=_S.UNKNOWN, reason=reason)


_HANDLERS = {
    "submitted": _on_submitted,
    "accepted": _on_accepted,
    "rejected": _on_rejected,
    "filled": _on_filled,
    "canceled": _on_canceled,
    "expired": _on_expired,
    "unknown": _on_unknown,
    "looked_up": _on_looked_up,
}
