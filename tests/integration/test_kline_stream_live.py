"""The live market path on local servers: replay WS server + Binance-format REST server + real ccxt.

Malformed and out-of-order frames, a silent connection (watchdog), a connection dropped mid-bar
(gap repaired from REST), the 24 h rollover with a shortened limit, and a 418 ban during which
REST stops while the stream keeps running. One 1h bar lasts 0.04 s of wall time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from signals.bar_store import BarStore
from signals.binance_rest import BinanceRest
from signals.gap_repair import GapRepairer, RepairReport
from signals.kline_frames import KlineUpdate, encode_kline_frame, stream_name
from signals.kline_stream import KlineStream
from signals.replay_server import ReplayServer
from signals.rest_budget import RestBanned, RestBudget
from tests.servers.binance_rest import BinanceRestServer
from trading.market_data import generate_market, resample
from trading.models import Bar

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
INTERVALS = ["1h", "4h"]
HISTORY = 200  # bars served by REST only (the bootstrap)
REPLAYED = 60  # bars replayed over the stream after them
BAR_S = 0.04


@dataclass
class Rig:
    bars: dict[str, list[Bar]]
    replay: ReplayServer
    rest_server: BinanceRestServer
    rest: BinanceRest
    store: BarStore
    repairer: GapRepairer
    reports: list[RepairReport] = field(default_factory=list)
    watchdog_calls: list[float] = field(default_factory=list)
    reconnects: list[int] = field(default_factory=list)
    updates: int = 0

    def stream(self, **options: object) -> KlineStream:
        def on_update(update: KlineUpdate) -> None:
            self.updates += 1
            self.repairer.check_hole(update.bar)  # as the listener does: before the update
            self.store.update(update.bar, update.event_time_ms)

        def on_reconnect(gap_start_ms: int) -> None:
            self.reconnects.append(gap_start_ms)
            self.repairer.on_reconnect(gap_start_ms)

        streams = [stream_name(s, i) for s in SYMBOLS for i in INTERVALS]
        return KlineStream(
            self.replay.url,
            streams,
            on_update,
            max_backoff_s=0.5,
            on_reconnect=on_reconnect,
            on_watchdog=self.watchdog_calls.append,
            **options,
        )

    def expected(self, symbol: str, interval: str) -> list[Bar]:
        bars = [b for b in self.bars[symbol] if b.close_time <= self.replay.market_time_ms]
        return bars if interval == "1h" else resample(bars, interval)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    bars = generate_market(SYMBOLS, "1h", HISTORY + REPLAYED, seed=11)
    replay = ReplayServer({s: b[HISTORY:] for s, b in bars.items()}, speed=3600 / BAR_S)
    await replay.start()
    rest_server = BinanceRestServer(bars, now_ms=lambda: replay.market_time_ms)
    await rest_server.start()
    rest = BinanceRest("spot", RestBudget(), spot_url=rest_server.url, futures_url=rest_server.url)
    store = BarStore()
    rig = Rig(bars, replay, rest_server, rest, store, None)  # type: ignore[arg-type]
    rig.repairer = GapRepairer(
        rest,
        store,
        SYMBOLS,
        INTERVALS,
        bootstrap_bars=100,
        daily_bars=0,
        clock=lambda: replay.market_time_ms,
        on_repaired=rig.reports.append,
        retry_s=0.2,
    )
    try:
        yield rig
    finally:
        await rig.repairer.close()
        await rest.close()
        await rest_server.stop()
        await replay.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def run_stream(rig: Rig, stream: KlineStream, scenario: Callable) -> None:
    """Bootstrap, run the stream through ``scenario``, then to the end of the replay."""
    report = await rig.repairer.bootstrap()
    assert not report.failed
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        await asyncio.wait_for(stream.connected.wait(), 5)
        await scenario()
        await asyncio.wait_for(rig.replay.done.wait(), 30)
        await asyncio.sleep(0.3)  # the last frames in flight
        await rig.repairer.idle()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def assert_whole(rig: Rig) -> None:
    """Every closed bar up to the end of the replay is in the store, exactly as the source."""
    for symbol in SYMBOLS:
        for interval in INTERVALS:
            want = rig.expected(symbol, interval)[-60:]
            got = rig.store.closed_bars(symbol, interval)[-len(want) :]
            assert [b.open_time for b in got] == [b.open_time for b in want], (symbol, interval)
            for g, w in zip(got, want, strict=True):
                assert (g.open, g.high, g.low, g.close) == (w.open, w.high, w.low, w.close)
                assert g.volume == pytest.approx(w.volume, rel=1e-9)


async def test_malformed_and_out_of_order_frames_are_dropped_and_counted(rig: Rig) -> None:
    stream = rig.stream()

    async def scenario() -> None:
        await wait_for(lambda: rig.store.last_closed_open("BTC/USDT", "1h") is not None)
        await wait_for(lambda: rig.updates > 40)
        stale = rig.bars["BTC/USDT"][HISTORY - 5]  # long closed
        good = json.loads(encode_kline_frame(rig.bars["BTC/USDT"][-1], 1))
        bad_price = json.loads(json.dumps(good))
        bad_price["data"]["k"]["l"] = "-1"
        for text in (
            "{not json",
            json.dumps(bad_price),
            json.dumps({"stream": "btcusdt@kline_1h", "data": {"e": "kline", "E": 1}}),
            encode_kline_frame(stale, stale.close_time),
            json.dumps({"result": None, "id": 1}),
            json.dumps({"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade"}}),
        ):
            rig.replay.broadcast_raw(text)
        before = rig.updates
        await wait_for(lambda: rig.updates > before + 20)

    await run_stream(rig, stream, scenario)
    assert stream.stats.bad_frames == 3
    assert stream.stats.out_of_order == 1
    assert stream.stats.connects == 1 and stream.stats.watchdog_reconnects == 0
    assert rig.store.stats["duplicates"] == 0
    assert_whole(rig)


async def test_silent_connection_is_reconnected_by_the_watchdog(rig: Rig) -> None:
    stream = rig.stream(watchdog_s=0.3)

    async def scenario() -> None:
        await wait_for(lambda: rig.updates > 20)
        rig.replay.mute_clients()
        await wait_for(lambda: stream.stats.watchdog_reconnects == 1)
        before = rig.updates
        await wait_for(lambda: rig.updates > before + 10)
        assert len(rig.watchdog_calls) == 1 and rig.watchdog_calls[0] >= 0.3
        assert stream.stats.connects == 2 and len(rig.reconnects) == 1

    await run_stream(rig, stream, scenario)
    # several bars went by in silence: the repair brought them back from REST
    repaired_1h = sum(r.count("BTC/USDT", "1h") for r in rig.reports)
    assert repaired_1h >= 3
    assert_whole(rig)


async def test_connection_dropped_mid_bar_is_repaired_from_rest(rig: Rig) -> None:
    stream = rig.stream()

    async def scenario() -> None:
        await wait_for(lambda: rig.updates > 30)
        current = rig.store.current("BTC/USDT", "1h")
        await wait_for(lambda: rig.store.current("BTC/USDT", "1h") is not current)
        assert rig.replay.drop_clients() == 1  # right after an in-progress frame
        await wait_for(lambda: stream.stats.connects == 2)

    await run_stream(rig, stream, scenario)
    assert stream.stats.disconnects == 2 and "ConnectionClosed" in stream.stats.last_error
    assert len(rig.reconnects) == 1 and rig.reports
    assert sum(r.count("BTC/USDT", "1h") for r in rig.reports) >= 1
    assert all(not r.failed for r in rig.reports)
    assert_whole(rig)
    # repaired bars were merged once: nothing was counted twice by the store
    assert rig.store.stats["duplicates"] <= 4 * len(SYMBOLS)


async def test_planned_reconnect_before_the_connection_limit(rig: Rig) -> None:
    stream = rig.stream(max_connection_s=0.5)

    async def scenario() -> None:
        await wait_for(lambda: stream.stats.planned_reconnects >= 3, timeout=15)

    await run_stream(rig, stream, scenario)
    assert stream.stats.connects >= 4
    assert stream.stats.watchdog_reconnects == 0
    assert len(rig.reconnects) == stream.stats.connects - 1
    assert_whole(rig)


async def test_418_stops_rest_until_retry_after_while_the_stream_runs(rig: Rig) -> None:
    stream = rig.stream()
    budget = rig.rest.budget

    async def scenario() -> None:
        await wait_for(lambda: rig.updates > 20)
        rig.rest_server.fail(418, retry_after=1, path_prefix="/api/v3/klines")
        rig.replay.drop_clients()
        await wait_for(lambda: bool(rig.reports) and bool(rig.reports[0].failed))
        assert "418" in next(iter(rig.reports[0].failed.values()))
        assert budget.stats.bans == 1 and budget.paused_until_ms() > 0
        sent = len(rig.rest_server.requests)
        with pytest.raises(RestBanned, match="banned"):
            await rig.rest.fetch_ohlcv_page("BTC/USDT", "1h", limit=2)
        assert len(rig.rest_server.requests) == sent  # refused without touching the network
        during_ban = rig.updates
        await asyncio.sleep(0.4)
        assert rig.updates > during_ban + 10  # the public stream keeps running
        assert budget.paused_until_ms() > 0 and len(rig.rest_server.requests) == sent
        await wait_for(lambda: any(not r.failed for r in rig.reports), timeout=5)

    await run_stream(rig, stream, scenario)
    assert budget.stats.refused >= 1
    assert_whole(rig)


async def test_listener_live_wiring_bootstraps_and_serves_derivatives(tmp_path) -> None:
    """The listener's live path without Temporal: bootstrap, 1d series, derivatives, activities."""
    from activities.feature_board import FeatureBoard
    from signals.bar_store import DailyBarsRequest
    from signals.derivatives import DerivativesRequest
    from signals.market_activities import MarketActivities
    from trading.config import Settings
    from workers.listener_worker import ListenerService

    bars = generate_market(SYMBOLS, "1h", 24 * 60, seed=2)
    now = bars["BTC/USDT"][-1].close_time + 1
    async with BinanceRestServer(bars, now_ms=lambda: now) as server:
        server.derivatives.premium["BTCUSDT"] = {
            "symbol": "BTCUSDT",
            "markPrice": "50000",
            "lastFundingRate": "0.0002",
            "nextFundingTime": now,
        }
        settings = Settings(
            home=tmp_path,
            symbols=SYMBOLS,
            intervals=["1h", "4h"],
            binance_rest_url=server.url,
            binance_futures_rest_url=server.url,
            sentiment_enabled=False,
            bootstrap_bars=50,
            daily_bars=30,
        )
        service = ListenerService(settings)
        try:
            await service._start_live_data()
            assert service.repairer is not None and service.derivatives is not None
            service.repairer.clock = lambda: now
            assert len(service.store.closed_bars("ETH/USDT", "4h")) == 50
            await service.derivatives.refresh()
            activities = MarketActivities(service.store, None, service.derivatives)
            view = await activities.market_derivatives(DerivativesRequest(symbols=SYMBOLS))
            daily = await activities.market_daily_bars(
                DailyBarsRequest(symbol="BTC/USDT", as_of_ms=bars["BTC/USDT"][-25].close_time)
            )
            # the feature board a lean agent check reads holds the listener's own 1h view
            writer = service.feature_writer(activities)
            assert writer.write_once()
            sheet = FeatureBoard.from_settings(settings).read(writer.name)
            expected = activities.view(SYMBOLS, "1h").symbols
        finally:
            await service._stop_live_data()
    assert view.symbols["BTC/USDT"].funding_rate == 0.0002
    assert "open_interest" in view.symbols["BTC/USDT"].missing
    assert view.missing == ["ETH/USDT"] and view.liquidations is not None
    assert service.gate.metric_provider is not None
    assert service.gate.metric_provider("BTC/USDT", "funding_rate") == 0.0002
    assert len(daily.bars) == 29 and not daily.stale  # no day closing after as_of_ms
    assert daily.bars[-1].close_time <= bars["BTC/USDT"][-25].close_time
    assert service.stats()["rest"]["calls"] > 0
    assert sheet is not None and writer.name == "ocw-market/1h"
    assert sheet.features == expected and set(expected) == set(SYMBOLS)
