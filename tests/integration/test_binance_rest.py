"""The real ccxt client against the local Binance REST server: pages, budget, errors, derivs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from signals.bar_store import BarStore
from signals.binance_rest import BinanceRest, RestError, RestNetworkError
from signals.derivatives import DerivativesMonitor
from signals.gap_repair import GapRepairer
from signals.rest_budget import RestBanned, RestBudget, RestRateLimited
from tests.servers.binance_rest import BinanceRestServer
from trading.market_data import generate_market, resample
from trading.models import Bar

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
N = 2600  # 1h bars: three pages of 1000
H = 3_600_000


class FakeClock:
    """Budget time that moves only when the budget sleeps: throttling costs no wall time."""

    def __init__(self, start_s: float) -> None:
        self.now = start_s
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def bars() -> dict[str, list[Bar]]:
    return generate_market(SYMBOLS, "1h", N, seed=5)


@pytest.fixture
async def server(bars: dict[str, list[Bar]]) -> AsyncIterator[BinanceRestServer]:
    now = bars["BTC/USDT"][-1].open_time + 20 * 60_000  # 20 minutes into the last bar
    srv = BinanceRestServer(bars, now_ms=lambda: now)
    async with srv:
        yield srv


def client(server: BinanceRestServer, market: str = "spot", **budget_args) -> BinanceRest:
    return BinanceRest(
        market,  # type: ignore[arg-type]
        RestBudget(**budget_args),
        spot_url=server.url,
        futures_url=server.url,
    )


@pytest.mark.parametrize("market, path", [("spot", "/api/v3"), ("futures", "/fapi/v1")])
async def test_paginated_klines_match_the_source(
    server: BinanceRestServer, bars: dict[str, list[Bar]], market: str, path: str
) -> None:
    rest = client(server, market)
    try:
        now = server.now_ms()
        got = await rest.fetch_ohlcv("ETH/USDT", "1h", bars["ETH/USDT"][0].open_time, now_ms=now)
        four = await rest.fetch_ohlcv_page("ETH/USDT", "4h", limit=10, now_ms=now)
    finally:
        await rest.close()
    want = bars["ETH/USDT"]
    assert [b.open_time for b in got] == [b.open_time for b in want]
    assert all(b.closed for b in got[:-1]) and not got[-1].closed  # the bar still running
    for g, w in zip(got[:-1], want[:-1], strict=True):
        assert (g.open, g.high, g.low, g.close, g.volume) == (
            w.open,
            w.high,
            w.low,
            w.close,
            w.volume,
        )
    assert [b.open_time for b in four[:-1]] == [b.open_time for b in resample(want, "4h")[-10:-1]]
    klines = [r for r in server.requests if r.path == f"{path}/klines"]
    assert len(klines) == 4  # three pages of 1h + one 4h
    assert server.paths(f"{path}/exchangeInfo") == [f"{path}/exchangeInfo"]  # markets once
    assert rest.budget.stats.used_weight[market] > 0  # headers reached the budget


async def test_bootstrap_fills_the_store_and_the_daily_series(
    server: BinanceRestServer, bars: dict[str, list[Bar]]
) -> None:
    rest = client(server)
    store = BarStore()
    repairer = GapRepairer(
        rest,
        store,
        SYMBOLS,
        ["1h", "4h"],
        bootstrap_bars=300,
        daily_bars=100,
        clock=server.now_ms,
    )
    try:
        report = await repairer.bootstrap()
        again = await repairer.repair()  # nothing is missing right after a bootstrap
    finally:
        await rest.close()
    assert not report.failed and report.requests == 6
    assert len(store.closed_bars("BTC/USDT", "1h")) == 299  # the running bar is left out
    assert len(store.closed_bars("BTC/USDT", "1d")) == 100  # the server serves whole days only
    assert store.closed_bars("BTC/USDT", "1h")[-1] == bars["BTC/USDT"][-2]
    assert again.new_bars == [] and again.requests == 0


async def test_used_weight_near_the_limit_throttles_to_the_next_minute(
    server: BinanceRestServer,
) -> None:
    fake = FakeClock(1_800_000_030.0)
    rest = client(
        server, limits={"spot": 6000, "futures": 2400}, clock=fake.clock, sleep=fake.sleep
    )
    server.base_weight = 5385  # other processes on this IP used most of the minute
    try:
        await rest.load_markets()  # weight 20: the header now says 5405, over 90 % of 6000
        assert rest.budget.used("spot") == 5405 and fake.slept == []
        bars = await rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=5)
    finally:
        await rest.close()
    assert len(bars) == 5
    assert rest.budget.stats.throttled == 1 and len(fake.slept) == 1
    assert 29 < fake.slept[0] <= 30.1  # waited for the next minute, then sent


async def test_429_raises_then_the_next_call_waits_out_retry_after(
    server: BinanceRestServer,
) -> None:
    fake = FakeClock(1_800_000_000.0)
    rest = client(server, clock=fake.clock, sleep=fake.sleep, max_wait_s=5)
    try:
        await rest.load_markets()
        server.fail(429, retry_after=3, path_prefix="/api/v3/klines")
        with pytest.raises(RestRateLimited, match="429"):
            await rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=5)
        bars = await rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=5)
    finally:
        await rest.close()
    assert len(bars) == 5 and fake.slept == [3.0]
    assert [r.status for r in server.requests if r.path == "/api/v3/klines"] == [429, 200]


async def test_418_bans_every_call_without_touching_the_network(
    server: BinanceRestServer,
) -> None:
    rest = client(server)
    futures = BinanceRest("futures", rest.budget, spot_url=server.url, futures_url=server.url)
    try:
        server.fail(418, retry_after=600)
        with pytest.raises(RestBanned, match="418"):
            await rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=5)
        sent = len(server.requests)
        with pytest.raises(RestBanned, match="banned"):
            await rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=5)
        with pytest.raises(RestBanned):  # one budget per process: futures calls stop too
            await futures.premium_index("BTC/USDT")
        assert len(server.requests) == sent
        assert rest.budget.paused_until_ms() - rest.budget.now_ms() > 590_000
    finally:
        await rest.close()
        await futures.close()


async def test_server_errors_bad_symbols_and_unreachable_hosts(
    server: BinanceRestServer,
) -> None:
    rest = client(server)
    try:
        await rest.load_markets()
        server.fail(503, path_prefix="/api/v3/klines")
        with pytest.raises(RestNetworkError):
            await rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=5)
        with pytest.raises(RestError, match="not a spot market"):
            await rest.fetch_ohlcv_page("DOGE/USDT", "1h", limit=5)
        server.delay_s = 0.5
        slow = BinanceRest("spot", RestBudget(), spot_url=server.url, timeout_s=0.2)
        with pytest.raises(RestNetworkError):
            await slow.load_markets()
        await slow.close()
    finally:
        await rest.close()
    gone = BinanceRest("spot", RestBudget(), spot_url="http://127.0.0.1:9")
    with pytest.raises(RestNetworkError):
        await gone.load_markets()
    await gone.close()


async def test_derivatives_monitor_through_ccxt(server: BinanceRestServer) -> None:
    t = 1_800_000_000_000
    d = server.derivatives
    d.premium["BTCUSDT"] = {
        "symbol": "BTCUSDT",
        "markPrice": "50025.0",
        "indexPrice": "50010.0",
        "lastFundingRate": "0.00061",
        "nextFundingTime": t + 3 * H,
        "interestRate": "0.0001",
        "time": t,
    }
    d.open_interest["BTCUSDT"] = [
        {
            "symbol": "BTCUSDT",
            "sumOpenInterest": "1000",
            "sumOpenInterestValue": str(1e9 * (1 + 0.0001 * i)),
            "timestamp": t - (288 - i) * 300_000,
        }
        for i in range(289)
    ]
    d.taker["BTCUSDT"] = [
        {"buySellRatio": "1.2", "buyVol": "120", "sellVol": "100", "timestamp": t - i * 300_000}
        for i in range(12)
    ]
    d.top_long_short["BTCUSDT"] = [
        {
            "symbol": "BTCUSDT",
            "longShortAccount": "0.6",
            "longShortRatio": str(1.0 + 0.1 * (i % 2)),
            "shortAccount": "0.4",
            "timestamp": t - (31 - i) * H,
        }
        for i in range(31)
    ]
    d.funding_history["BTCUSDT"] = [
        {"symbol": "BTCUSDT", "fundingTime": t - (150 - i) * 8 * H, "fundingRate": f"{i * 1e-6:.8f}",
         "markPrice": "50000"}
        for i in range(150)
    ]  # fmt: skip
    server.spot_prices["BTCUSDT"] = 50_000.0
    futures = client(server, "futures")
    monitor = DerivativesMonitor(futures, ["BTC/USDT", "ETH/USDT"], clock=lambda: t)
    try:
        await monitor.refresh()
    finally:
        await futures.close()
    btc = monitor.snapshot("BTC/USDT")
    assert btc.missing == [] and btc.extreme == ["funding_rate"]
    assert btc.funding_rate == 0.00061 and btc.mark_price == 50025.0
    assert btc.basis_annualised == pytest.approx(0.0005 * 1095)
    assert btc.oi_change_pct == pytest.approx(1.0288 / 1.0276 - 1)
    assert btc.oi_change_24h_pct == pytest.approx(0.0288)
    assert btc.taker_ratio == pytest.approx(1.2)
    assert btc.ls_z == pytest.approx(-1.0, abs=0.05)
    eth = monitor.snapshot("ETH/USDT")  # the server has no futures data for ETH
    assert set(eth.missing) == {"funding", "open_interest", "taker", "long_short", "basis"}
    assert monitor.next_delay_s() == monitor.fast_cadence_s
    paths = set(server.paths())
    assert {
        "/fapi/v1/premiumIndex",
        "/futures/data/openInterestHist",
        "/futures/data/takerlongshortRatio",
        "/futures/data/topLongShortAccountRatio",
        "/api/v3/ticker/price",
    } <= paths
    # the settled funding history: the last 100 prints, oldest first; none for ETH (recorded)
    history = monitor.funding_history()
    assert set(history) == {"BTC/USDT"} and len(history["BTC/USDT"]) == 100
    assert history["BTC/USDT"][0] == (t - 100 * 8 * H, pytest.approx(50e-6))
    assert history["BTC/USDT"][-1] == (t - 8 * H, pytest.approx(149e-6))
    assert "-1121" in monitor.errors["ETH/USDT funding history"]
    asked = next(r for r in server.requests if r.path == "/fapi/v1/fundingRate")
    assert asked.query == {"symbol": "BTCUSDT", "limit": "100"}
    oi = next(r for r in server.requests if r.path == "/futures/data/openInterestHist")
    assert oi.query == {"symbol": "BTCUSDT", "period": "5m", "limit": "289"}
