"""Last prices: pulled from a ``price_source`` callable, or set by a test.

The source answers ``(last price, its market time in ms)`` or None for a unified symbol
(``"BTC/USDT"``); the demo points it at the replay timeline, tests at a script. A price set with
``set`` wins over the source for that symbol until ``clear`` (``ExchangeSim.reset``). Spot and
futures share one price per symbol (the futures mark price is this last price too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from signals.exchange_sim.numbers import dec

log = logging.getLogger(__name__)

PriceSource = Callable[[str], "tuple[float, int] | None"]


@dataclass(frozen=True)
class Quote:
    price: Decimal
    time_ms: int


class PriceBoard:
    def __init__(self, source: PriceSource | None, clock_ms: Callable[[], int]) -> None:
        self.source = source
        self.clock_ms = clock_ms
        self._set: dict[str, Quote] = {}
        self._seen: dict[str, Quote] = {}

    def set(self, symbol: str, price: float | str | Decimal, time_ms: int | None = None) -> None:
        value = dec(price)
        if value <= 0:
            raise ValueError(f"price must be positive, got {price!r}")
        self._set[symbol] = Quote(value, self.clock_ms() if time_ms is None else time_ms)

    def clear(self) -> None:
        self._set.clear()
        self._seen.clear()

    def last(self, symbol: str) -> Quote | None:
        return self._set.get(symbol) or self._seen.get(symbol)

    def refresh(self, symbols: Iterable[str]) -> set[str]:
        """Read the source for every symbol; the symbols whose last price changed."""
        changed: set[str] = set()
        for symbol in symbols:
            before = self.last(symbol)
            if self.source is not None and symbol not in self._set:
                try:
                    got = self.source(symbol)
                except Exception:  # a broken feed must not break the exchange
                    log.exception("price source failed for %s", symbol)
                    got = None
                if got is not None:
                    price, time_ms = got
                    if price and price > 0:
                        self._seen[symbol] = Quote(dec(float(price)), int(time_ms))
            after = self.last(symbol)
            if after is not None and (before is None or before.price != after.price):
                changed.add(symbol)
        return changed
