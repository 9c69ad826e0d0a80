"""The exchange's own record of every fill, the ground truth for exactly-once checks.

A broker's books can be wrong in the ways this project must rule out (a retried order filled
twice, a fill never booked); the ledger is written by the matching engine only, so a test can
compare what the client believes with what the exchange actually executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from signals.exchange_sim.numbers import ZERO


@dataclass(frozen=True)
class Fill:
    """One execution: a trade id in the exchange's ledger."""

    trade_id: int
    market: str  # "spot" | "futures"
    symbol: str  # exchange id, "BTCUSDT"
    order_id: int
    client_order_id: str
    side: str  # "BUY" | "SELL"
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    fee: Decimal
    fee_asset: str
    is_maker: bool
    time_ms: int  # server clock, as Binance stamps trades
    market_time_ms: int | None  # time of the price the fill used (the replay's market time)
    realized_pnl: Decimal = ZERO  # futures only


class Ledger:
    """Fills in trade-id order, indexable by client order id: ``sim.ledger["pos-1-1"]``."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []

    def add(self, fill: Fill) -> None:
        self.fills.append(fill)

    def clear(self) -> None:
        self.fills.clear()

    def __getitem__(self, client_order_id: str) -> list[Fill]:
        return [f for f in self.fills if f.client_order_id == client_order_id]

    def __contains__(self, client_order_id: object) -> bool:
        return any(f.client_order_id == client_order_id for f in self.fills)

    def __iter__(self) -> Iterator[Fill]:
        return iter(self.fills)

    def __len__(self) -> int:
        return len(self.fills)

    def by_client_id(self) -> dict[str, list[Fill]]:
        out: dict[str, list[Fill]] = {}
        for f in self.fills:
            out.setdefault(f.client_order_id, []).append(f)
        return out

    def order_ids(self, client_order_id: str) -> set[int]:
        """Distinct exchange orders that filled under one client id (two means a duplicate)."""
        return {f.order_id for f in self[client_order_id]}

    def qty(self, client_order_id: str) -> Decimal:
        return sum((f.qty for f in self[client_order_id]), ZERO)
