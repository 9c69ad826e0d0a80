"""The listener's market_context activity: derivatives, liquidations and sentiment in the
snapshot's types, stale readings dropped, every gap named."""

from __future__ import annotations

import pytest

from signals.bar_store import BarStore
from signals.derivatives import DerivativesMonitor, LiquidationSummary
from signals.market_activities import MarketActivities
from signals.sentiment import SentimentFeeds
from tests.unit.test_derivatives import T0, FakeFutures
from trading.snapshot import MarketContextRequest


async def test_context_without_monitors_lists_everything_missing() -> None:
    acts = MarketActivities(BarStore(), SentimentFeeds.unavailable("replay"))
    ctx = await acts.market_context(MarketContextRequest(symbols=["BTC/USDT"]))
    assert ctx.derivatives == {} and ctx.liquidations is None and ctx.sentiment is None
    assert ctx.missing == ["derivatives (not monitored here)", "sentiment"]


async def test_context_maps_fresh_readings_and_liquidations() -> None:
    now = [T0]
    summary = LiquidationSummary(
        as_of_ms=T0, total_1h=6e6, cascade=True, threshold=5e6, connected=True
    )
    rest = FakeFutures()
    monitor = DerivativesMonitor(
        rest,  # type: ignore[arg-type]
        ["BTC/USDT", "ETH/USDT"],
        stale_after_s=900,
        clock=lambda: now[0],
        liquidations=lambda: summary,
    )
    await monitor.refresh()
    acts = MarketActivities(BarStore(), SentimentFeeds.unavailable("off"), monitor)
    ctx = await acts.market_context(MarketContextRequest(symbols=["BTC/USDT", "SOL/USDT"]))
    btc = ctx.derivatives["BTC/USDT"]
    assert btc.funding_rate == 0.0001 and btc.taker_ratio == pytest.approx(1.2)
    assert btc.basis_annualised == pytest.approx(0.0002 * 1095)
    assert "SOL/USDT" not in ctx.derivatives and "derivatives SOL/USDT" in ctx.missing
    assert ctx.liquidations is not None and ctx.liquidations.cascade
    assert ctx.liquidations.usd_1h == 6e6

    rest.fail = {"taker", "spot"}  # these go stale: not shown as if they were current
    now[0] = T0 + 10 * 60_000
    await monitor.refresh()
    now[0] = T0 + 16 * 60_000
    ctx = await acts.market_context(MarketContextRequest(symbols=["BTC/USDT"]))
    btc = ctx.derivatives["BTC/USDT"]
    assert btc.taker_ratio is None and btc.basis_annualised is None
    assert btc.funding_rate == 0.0001


def test_daily_bars_for_the_regime_fit_stop_at_the_decision_time() -> None:
    from trading.market_data import generate_market

    store = BarStore()
    days = generate_market(["BTC/USDT"], "1d", 60, seed=3)["BTC/USDT"]
    store.seed("BTC/USDT", "1d", days)
    acts = MarketActivities(store, SentimentFeeds.unavailable("off"))
    as_of = days[39].close_time
    got = acts.daily_bars_until("BTC/USDT", as_of)
    assert got == days[:40]  # nothing that closed after the decision time
