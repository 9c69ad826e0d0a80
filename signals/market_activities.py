"""Activities served by the listener from its in-memory BarStore (market task queue).

Workflows never hold bar windows: they ask for the latest prices or for a compact MarketView
(indicators per symbol), computed here next to the bars.
"""

from __future__ import annotations

import logging
import time

from temporalio import activity

from signals.bar_store import BarStore, DailyBarsRequest, DailyBarsResult
from signals.derivatives import (
    DerivativesMonitor,
    DerivativesRequest,
    DerivativesSnapshot,
    DerivativesView,
    to_reading_fields,
)
from signals.sentiment import SentimentFeeds, SentimentReading
from trading.config import interval_seconds
from trading.features import compute_features
from trading.models import Bar, MarketView, SymbolFeatures
from trading.snapshot import (
    DerivativesSnapshot as SnapshotDerivatives,
)
from trading.snapshot import (
    LiquidationReading,
    MarketContext,
    MarketContextRequest,
)
from trading.snapshot import (
    SentimentReading as SnapshotSentiment,
)
from trading.state import MarketViewRequest, PricesRequest, PricesResult
from workflows import activity_api as api

log = logging.getLogger(__name__)

WINDOW = 200  # bars per indicator window: SMA72 and EMA50 need well over 72


class MarketActivities:
    def __init__(
        self,
        store: BarStore,
        sentiment: SentimentFeeds | None = None,
        derivatives: DerivativesMonitor | None = None,
    ) -> None:
        self.store = store
        self.sentiment = sentiment or SentimentFeeds.unavailable("not configured")
        self.derivatives = derivatives  # None in replay: every symbol is reported missing

    def all(self) -> list:
        return [
            self.market_prices,
            self.market_view,
            self.market_sentiment,
            self.market_derivatives,
            self.market_daily_bars,
            self.market_context,
        ]

    def daily_bars_until(self, symbol: str, as_of_ms: int) -> list[Bar]:
        """The store's closed daily bars of ``symbol`` that closed by ``as_of_ms`` (the crypto
        regime is fitted in this process, beside the bars: nothing big enters history)."""
        req = DailyBarsRequest(symbol=symbol, as_of_ms=as_of_ms, limit=min(self.store.maxlen, 1000))
        return self.store.daily_bars(req, as_of_ms).bars

    @activity.defn(name=api.MARKET_CONTEXT)
    async def market_context(self, req: MarketContextRequest) -> MarketContext:
        """Derivatives, liquidations and sentiment in the snapshot's types; gaps are listed."""
        missing: list[str] = []
        derivatives: dict[str, SnapshotDerivatives] = {}
        liquidations: LiquidationReading | None = None
        if self.derivatives is None:
            missing.append("derivatives (not monitored here)")
        else:
            view = self.derivatives.view(req.symbols)
            for symbol, snap in view.symbols.items():
                fields = to_reading_fields(snap)
                if any(v is not None for v in fields.values()) or _fresh_basis(snap):
                    derivatives[symbol] = SnapshotDerivatives(
                        **fields, basis_annualised=_fresh_basis(snap)
                    )
            missing += [f"derivatives {s}" for s in req.symbols if s not in derivatives]
            liq = view.liquidations
            if liq is not None and liq.connected:
                liquidations = LiquidationReading(usd_1h=liq.total_1h, cascade=liq.cascade)
            else:
                missing.append("liquidations")
        sentiment = self._sentiment()
        if sentiment is None:
            missing.append("sentiment")
        return MarketContext(
            derivatives=derivatives,
            liquidations=liquidations,
            sentiment=sentiment,
            missing=missing,
        )

    def _sentiment(self) -> SnapshotSentiment | None:
        r = self.sentiment.snapshot()
        out = SnapshotSentiment(
            fear_greed=r.fear_greed,
            fear_greed_label=r.fear_greed_label,
            stablecoin_supply_change_pct=r.stablecoin_change_7d,
            etf_flows_usd=r.etf_net_flow_usd,
            trending=[c.name or c.symbol for c in r.trending],
        )
        known = out.model_dump(exclude_defaults=True)
        return out if known else None

    @activity.defn(name=api.MARKET_DERIVATIVES)
    async def market_derivatives(self, req: DerivativesRequest) -> DerivativesView:
        """Latest derivatives readings and liquidations; what is not known is listed missing."""
        if self.derivatives is None:
            return DerivativesView(as_of_ms=int(time.time() * 1000), missing=list(req.symbols))
        return self.derivatives.view(req.symbols)

    @activity.defn(name=api.MARKET_DAILY_BARS)
    async def market_daily_bars(self, req: DailyBarsRequest) -> DailyBarsResult:
        """Closed daily bars for the regime fit, none after ``as_of_ms`` (from the bootstrap)."""
        return self.store.daily_bars(req, int(time.time() * 1000))

    @activity.defn(name=api.MARKET_SENTIMENT)
    async def market_sentiment(self) -> SentimentReading:
        """The cached sentiment feeds; a feed without a usable value is listed in ``missing``."""
        return self.sentiment.snapshot()

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
            age = self.store.heard_age_s(symbol)
            if age is not None:
                result.age_s[symbol] = round(age, 3)
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


def _fresh_basis(snap: DerivativesSnapshot) -> float | None:
    if snap.basis_annualised is None or "basis" in snap.stale or "basis" in snap.missing:
        return None
    return snap.basis_annualised
