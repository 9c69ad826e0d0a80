"""The one broker interface of the trading activities: paper today, the exchange next.

Workflows never see a broker; the activities call this protocol and do not know which one
runs (issue 11: one execution path, not a ``dry_run`` flag threaded through exchange code).
Every implementation is idempotent by client order id: placing an id it already knows returns
that order's outcome, never a second order.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from activities.paper_broker import PaperBroker
from trading.models import (
    Balances,
    Fill,
    IncomeEntry,
    OrderRequest,
    StopRef,
    StopRequest,
    StopState,
    VenueOrder,
)


@runtime_checkable
class Broker(Protocol):
    """What the trading activities need of a venue."""

    kind: str  # "paper", "binance-spot", "binance-futures"
    supports_stops: bool  # holds protective stops of its own (the exchange does)

    async def place_order(self, req: OrderRequest) -> Fill:
        """Place ``req`` once; a repeat of its client order id answers the first outcome."""
        ...

    async def lookup(self, client_order_id: str) -> Fill | None:
        """The outcome of an order by client order id; None when the venue never had it."""
        ...

    async def orders_of(self, position_id: str) -> list[Fill]:
        """Every order the venue holds for a position (any status), in placing order."""
        ...

    async def balances(self) -> Balances: ...

    async def open_orders(self) -> list[VenueOrder]:
        """Every open order on the traded symbols, conditional stops included."""
        ...

    async def cancel_order(self, order: VenueOrder) -> None:
        """Cancel one open order; one already gone is no error."""
        ...

    async def place_stop(self, req: StopRequest) -> StopState:
        """Place a protective stop once per client id (a retry answers the first one)."""
        ...

    async def stop_status(self, ref: StopRef) -> StopState: ...

    async def cancel_stop(self, ref: StopRef) -> StopState:
        """Cancel a stop; the answer says what it sold first (FILLED: it triggered)."""
        ...

    async def close(self) -> None: ...


class PaperVenue:
    """The SQLite paper broker behind the async interface (its calls run in a thread, so the
    worker's event loop keeps serving workflow tasks)."""

    kind = "paper"
    supports_stops = False  # no market of its own: the positions' safety layer is the stop

    def __init__(self, paper: PaperBroker) -> None:
        self.paper = paper

    async def place_order(self, req: OrderRequest) -> Fill:
        return await asyncio.to_thread(self.paper.place_order, req)

    async def lookup(self, client_order_id: str) -> Fill | None:
        return await asyncio.to_thread(self.paper.lookup, client_order_id)

    async def orders_of(self, position_id: str) -> list[Fill]:
        return await asyncio.to_thread(self.paper.fills, position_id)

    async def balances(self) -> Balances:
        return await asyncio.to_thread(self.paper.balances)

    async def open_orders(self) -> list[VenueOrder]:
        return []  # paper orders fill or fail at once: none is ever open

    async def cancel_order(self, order: VenueOrder) -> None:
        raise ValueError(f"the paper broker has no open order {order.client_order_id}")

    async def place_stop(self, req: StopRequest) -> StopState:
        raise ValueError(_NO_STOPS)

    async def stop_status(self, ref: StopRef) -> StopState:
        raise ValueError(_NO_STOPS)

    async def cancel_stop(self, ref: StopRef) -> StopState:
        raise ValueError(_NO_STOPS)

    async def apply_funding(self, entries: list[IncomeEntry]) -> list[IncomeEntry]:
        """Book a paper futures account's funding (the exchange books its own)."""
        return await asyncio.to_thread(self.paper.apply_funding, entries)

    async def income(self, since_ms: int) -> list[IncomeEntry]:
        return await asyncio.to_thread(self.paper.income, since_ms)

    async def close(self) -> None:
        await asyncio.to_thread(self.paper.close)


_NO_STOPS = "the paper broker holds no exchange-side stops (the safety layer stops positions)"


def as_broker(broker: Broker | PaperBroker) -> Broker:
    """Accept the paper broker itself where a Broker is wanted (tests, the demo)."""
    return PaperVenue(broker) if isinstance(broker, PaperBroker) else broker
