"""Activities served by the listener from its in-memory BarStore (market task queue).

Workflows never hold bar windows: they ask for the latest prices or for a compact MarketView
(indicators per symbol), computed here next to the bars.
"""

from __future__ import annotations

import logging

from temporalio import activity

from signals.bar_store import BarStore
from trading.config import interval_seconds
from trading.features import compute_features
from trading.models import MarketView, SymbolFeatures
from trading.state import MarketViewRequest, PricesRequest, PricesResult
from workflows import activity_api as api

log = logging.getLogger(__name__)

WINDOW = 200  # bars per indicator window: SMA72 and EMA50 need well over 72


class MarketActivities:
    def __init__(self, store: BarStore) -> None:
        self.store = store

    def all(self) -> list:
        return [self.market_prices, self.market_view]

    @activity.defn(name=api.MARKET_PRICES)
    async def market_prices(self, req: PricesRequest) -> PricesResult:
        result = PricesResult()
        for symbol in req.symbols:
            tick = self.store.last_price(symbol)
            if tick is None:
                result.missing.append(symbol)
                continue
            result.prices[symbol] = tick.price
            result.time_ms[symbol] = tick.time_ms
        return result

    @activity.defn(name=api.MARKET_VIEW)
    async def market_view(self, req: MarketViewRequest) -> MarketView:
        return self.view(req.symbols, req.interval)

    def view(self, symbols: list[str], interval: str) -> MarketView:
        out: dict[str, SymbolFeatures] = {}
        missing: list[str] = []
        as_of = 0
        for symbol in symbols:
            features = self._features(symbol, interval)
            if features is None:
                missing.append(symbol)
                continue
            out[symbol] = features
            as_of = max(as_of, features.time_ms)
        return MarketView(as_of_ms=as_of, symbols=out, missing=missing)

    def _features(self, symbol: str, interval: str) -> SymbolFeatures | None:
        tick = self.store.last_price(symbol)
        bars = self.store.closed_bars(symbol, interval, WINDOW)
        if tick is None and not bars:
            return None
        finer_intervals = [
            i
            for i in self.store.intervals(symbol)
            if interval_seconds(i) < interval_seconds(interval)
        ]
        finer = None
        if finer_intervals:
            finest = max(finer_intervals, key=interval_seconds)  # closest below the interval
            finer = self.store.closed_bars(symbol, finest, WINDOW)
        try:
            return compute_features(
                symbol,
                bars,
                interval,
                price=tick.price if tick else None,
                time_ms=tick.time_ms if tick else None,
                finer=finer,
            )
        except ValueError as err:
            log.warning("no features for %s: %s", symbol, err)
            return None
