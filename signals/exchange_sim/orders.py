"""Orders as the exchange keeps them, and the price logic every order type shares.

Liquidity model: no order book, one counterparty at the last price. A taker fills at
``last ± slippage`` (rounded to the tick against the taker), capped by its limit; a resting
limit order fills at its own price once the last price reaches it. Each matching pass fills at
most ``max_fill_qty`` (when set), which is how partial fills happen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from signals.exchange_sim.ledger import Fill
from signals.exchange_sim.numbers import ONE, ZERO, ceil_to, floor_to

NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
EXPIRED = "EXPIRED"
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})

BUY = "BUY"
SELL = "SELL"
SIDES = frozenset({BUY, SELL})

# Order types that carry a limit price once working (futures stop-limits become LIMIT orders
# when their algo order triggers, so they never reach the book under their own type).
LIMIT_TYPES = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})
# Stop-loss trigger: a SELL fires when the price falls to the stop, a BUY when it rises to it.
STOP_TYPES = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "STOP", "STOP_MARKET"})
TAKE_PROFIT_TYPES = frozenset({"TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "TAKE_PROFIT_MARKET"})


@dataclass
class Order:
    market: str  # "spot" | "futures"
    order_id: int
    client_order_id: str
    symbol: str  # exchange id
    side: str
    type: str
    time_in_force: str | None
    qty: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    time: int
    quote_order_qty: Decimal = ZERO
    status: str = NEW
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    working: bool = True  # False while a stop order waits for its trigger
    working_time: int = -1
    reduce_only: bool = False
    close_position: bool = False
    orig_type: str = ""
    rested: bool = False  # has been through a matching pass and stayed open: now a maker
    expire_after: Decimal | None = None  # PARTIAL_THEN_EXPIRE: expire once this much filled
    locked: Decimal = ZERO  # spot: funds this order holds
    locked_asset: str = ""
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty > 0 else ZERO


@dataclass
class AlgoOrder:
    """A USDⓈ-M conditional order held by the Algo Service until its trigger fires."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str  # STOP_MARKET | TAKE_PROFIT_MARKET | STOP | TAKE_PROFIT
    time_in_force: str
    qty: Decimal  # zero with close_position
    price: Decimal | None
    trigger_price: Decimal
    working_type: str
    close_position: bool
    reduce_only: bool
    price_protect: bool
    create_time: int
    update_time: int
    status: str = NEW  # NEW, TRIGGERED, FINISHED, CANCELED, EXPIRED, REJECTED
    trigger_time: int = 0
    child: Order | None = None

    @property
    def is_open(self) -> bool:
        return self.status == NEW


def triggered(order_type: str, side: str, stop: Decimal, last: Decimal) -> bool:
    """Has the last price reached a stop / take-profit trigger?"""
    if order_type in STOP_TYPES:
        return last <= stop if side == SELL else last >= stop
    if order_type in TAKE_PROFIT_TYPES:
        return last >= stop if side == SELL else last <= stop
    return True


def taker_price(side: str, last: Decimal, slippage: Decimal, tick: Decimal) -> Decimal:
    """What a taker pays or gets: the last price moved against it, on the tick grid."""
    if side == BUY:
        return ceil_to(last * (ONE + slippage), tick)
    return max(tick, floor_to(last * (ONE - slippage), tick))


def marketable(side: str, limit: Decimal, last: Decimal) -> bool:
    return last <= limit if side == BUY else last >= limit


def execution_price(
    order: Order, last: Decimal, slippage: Decimal, tick: Decimal, taker: bool
) -> Decimal | None:
    """The price this order trades at now, or None when it cannot trade."""
    limit = order.price if order.type in LIMIT_TYPES else None
    px = taker_price(order.side, last, slippage, tick)
    if limit is None:
        return px
    if not marketable(order.side, limit, last):
        return None
    if not taker:
        return limit  # a resting order trades at its own price
    return min(limit, px) if order.side == BUY else max(limit, px)


def slice_qty(order: Order, max_fill: Decimal | None, step: Decimal) -> Decimal:
    """How much one matching pass may fill: the rest, capped by liquidity and scripted expiry."""
    q = order.remaining
    if max_fill is not None and max_fill > 0:
        q = min(q, max(step, floor_to(max_fill, step)))
    if order.expire_after is not None:
        q = min(q, max(ZERO, order.expire_after - order.executed_qty))
    return max(ZERO, q)


# A scripted PARTIAL_THEN_EXPIRE for one placement: (fill_qty, fill_fraction) or None. Asked
# only once the order passed every check, so a rejected order does not use up the script.
PartialScript = Callable[[], "tuple[Decimal | None, Decimal | None] | None"]


def scripted_expiry(script: PartialScript, qty: Decimal, step: Decimal) -> Decimal | None:
    """The quantity after which a scripted order expires, or None when nothing is scripted."""
    got = script()
    if got is None:
        return None
    fill_qty, fraction = got
    if fill_qty is not None:
        return fill_qty
    return floor_to(qty * (fraction or ZERO), step)
