"""`ocw listen` in live mode, as a user runs it, against local stand-ins for Binance.

The Temporal dev server, `ocw worker` and `ocw listen` (no --replay) run as processes; the test
process serves Binance: the spot and futures REST API (the real ccxt client talks to it) and a
WebSocket that streams 1m klines of *now* on the wall clock, a frame every 2 s as Binance does,
plus forced orders on the futures stream. The decision interval is 1m so that a candle closes
within the test.

At the first candle close after the listener is up, the connection is cut in the middle of the
close burst: BTC and ETH closes arrive over the stream, SOL and PAXG closes are lost with the
connection and have to come back from REST. Both halves must wake the DecisionWorkflow.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

from activities.bars_board import BarsBoard
from activities.journal import Journal
from signals.kline_frames import encode_kline_frame, exchange_symbol, stream_name
from signals.listener_status import ListenerStatus, read_status, status_path
from signals.replay_server import partial_bar
from tests.integration.procs import free_port, ocw, wait_for
from tests.servers.binance_rest import BinanceRestServer
from trading.config import Settings
from trading.market_data import generate_market
from trading.models import Bar
from workers.temporal_env import connect, start_dev_server, stop_process
from workflows.decision import DecisionWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"]  # the order of the close burst
KEPT = 2  # closes delivered before the cut: BTC and ETH; SOL and PAXG are lost
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
HISTORY = 400  # 1m bars before now (the bootstrap asks for 300)
AHEAD = 10  # 1m bars after now: the test ends long before they run out
DAYS = 400  # daily bars, the bootstrap's default
FRAME_MS = 2_000  # Binance pushes a kline update every 2 s
LIQUIDATION_EVERY_MS = 6_000
LISTENER_ACCOUNT = "live"


def wall_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- stand-ins


class LiveBinanceWs:
    """Binance's combined streams for *now*: 1m klines on the wall clock and forced orders.

    Every 2 s each subscribed symbol gets an update of its running bar; at a minute boundary
    the closing bar's final frame (``x: true``) comes first. ``cut_at`` aborts every kline
    connection in the middle of a given close burst, as a network failure would.
    """

    def __init__(self, bars: dict[str, list[Bar]]) -> None:
        self.bars = {s: {b.open_time: b for b in series} for s, series in bars.items()}
        self.order = [s for s in SYMBOLS if s in bars]
        self.by_stream = {stream_name(s, "1m"): s for s in bars}
        self.kline_clients: dict[ServerConnection, set[str]] = {}
        self.liquidation_clients: set[ServerConnection] = set()
        self.kline_connects: list[int] = []  # wall ms of every kline connection
        self.on_kline_connect: Callable[[], None] | None = None
        self.cut: tuple[int, int] | None = None  # (boundary ms, closes sent before the cut)
        self.cuts = 0
        self.closes_lost: list[str] = []
        self.frames = 0
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> LiveBinanceWs:
        self._server = await serve(self._handler, "127.0.0.1", 0, close_timeout=1.0)
        self._task = asyncio.create_task(self._clock(), name="live-ws-clock")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut_at(self, boundary_ms: int, kept: int) -> None:
        self.cut = (boundary_ms, kept)

    def drop_now(self) -> None:
        """Abort every kline connection now (mid-bar, nothing closes meanwhile)."""
        self._abort_kline_clients()

    async def _handler(self, conn: ServerConnection) -> None:
        url = urlsplit(conn.request.path if conn.request else "/")
        names = "/".join(parse_qs(url.query).get("streams", [])).split("/")
        symbols = {self.by_stream[n] for n in names if n in self.by_stream}
        if symbols:
            self.kline_clients[conn] = symbols
            self.kline_connects.append(wall_ms())
            if self.on_kline_connect is not None:
                self.on_kline_connect()
        if "!forceOrder@arr" in names:
            self.liquidation_clients.add(conn)
        try:
            await conn.wait_closed()
        finally:
            self.kline_clients.pop(conn, None)
            self.liquidation_clients.discard(conn)

    async def _clock(self) -> None:
        tick = (wall_ms() // FRAME_MS + 1) * FRAME_MS
        while True:
            await asyncio.sleep(max(0.0, (tick - wall_ms()) / 1000))
            await self._tick(tick)  # late on a busy machine: sent late, never skipped
            tick += FRAME_MS

    async def _tick(self, t: int) -> None:
        minute = t - t % MINUTE
        if t == minute:
            cut = self.cut if self.cut is not None and self.cut[0] == t else None
            for i, symbol in enumerate(self.order):
                if cut is not None and i == cut[1]:
                    await asyncio.sleep(0.2)  # the closes before the cut reach the listener
                    self._abort_kline_clients()
                    self.cuts += 1
                if cut is not None and i >= cut[1]:
                    self.closes_lost.append(symbol)
                self._send(self.bars[symbol][t - MINUTE], t)
        for symbol in self.order:
            bar = self.bars[symbol][minute]
            self._send(partial_bar(bar, (t - minute) / MINUTE, bar.open_time, bar.close_time), t)
        if t % LIQUIDATION_EVERY_MS == 0 and self.liquidation_clients:
            broadcast(self.liquidation_clients, _force_order("BTCUSDT", "SELL", 0.5, 60_000.0, t))

    def _send(self, bar: Bar, event_ms: int) -> None:
        targets = [c for c, symbols in self.kline_clients.items() if bar.symbol in symbols]
        if targets:
            broadcast(targets, encode_kline_frame(bar, event_ms))
            self.frames += len(targets)

    def _abort_kline_clients(self) -> None:
        for conn in list(self.kline_clients):
            self.kline_clients.pop(conn, None)
            if conn.transport is not None:
                conn.transport.abort()


def _force_order(symbol: str, side: str, qty: float, price: float, t: int) -> str:
    order = {
        "s": symbol,
        "S": side,
        "o": "LIMIT",
        "f": "IOC",
        "q": repr(qty),
        "p": repr(price),
        "ap": repr(price),
        "X": "FILLED",
        "l": repr(qty),
        "z": repr(qty),
        "T": t,
    }
    return f'{{"stream":"!forceOrder@arr","data":{{"e":"forceOrder","E":{t},"o":{_json(order)}}}}}'


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


class LiveRestServer(BinanceRestServer):
    """The local REST server with a daily series of its own: 400 days of 1m bars would be
    half a million rows to resample, so the daily history is generated separately."""

    def __init__(self, bars: dict[str, list[Bar]], daily: dict[str, list[Bar]]) -> None:
        super().__init__(bars)  # market clock: the wall clock, as live
        self.daily = daily

    def _series(self, symbol: str, interval: str) -> list[Bar]:
        if interval == "1d":
            return self.daily.get(symbol, [])
        return super()._series(symbol, interval)


def make_market(now: int) -> tuple[dict[str, list[Bar]], dict[str, list[Bar]]]:
    """1m bars around now and daily bars before today, the latter scaled to meet the former."""
    minute = now - now % MINUTE
    bars = generate_market(
        SYMBOLS, "1m", HISTORY + AHEAD, seed=23, start_ms=minute - HISTORY * MINUTE
    )
    today = now - now % DAY
    raw_daily = generate_market(SYMBOLS, "1d", DAYS, seed=23, start_ms=today - DAYS * DAY)
    daily = {}
    for symbol, series in raw_daily.items():
        k = bars[symbol][0].open / series[-1].close
        daily[symbol] = [
            b.model_copy(
                update={
                    "open": b.open * k,
                    "high": b.high * k,
                    "low": b.low * k,
                    "close": b.close * k,
                }
            )
            for b in series
        ]
    return bars, daily


def serve_derivatives(server: LiveRestServer, now: int) -> None:
    """Ordinary USDⓈ-M readings for every symbol: funding 0.01 %, OI drifting up, balanced flow."""
    d = server.derivatives
    five = 300_000
    last_5m = now - now % five
    for symbol in SYMBOLS:
        name = exchange_symbol(symbol)
        spot = server.bars[symbol][HISTORY - 1].close
        mark = spot * 1.0001
        server.spot_prices[name] = spot
        d.premium[name] = {
            "symbol": name,
            "markPrice": repr(mark),
            "indexPrice": repr(spot),
            "lastFundingRate": "0.0001",
            "nextFundingTime": now - now % (8 * HOUR) + 8 * HOUR,
            "interestRate": "0.0001",
            "time": now,
        }
        last_print = now - now % (8 * HOUR)
        d.funding_history[name] = [
            {"symbol": name, "fundingTime": last_print - k * 8 * HOUR, "fundingRate": "0.0001",
             "markPrice": repr(mark)}
            for k in range(29, -1, -1)
        ]  # fmt: skip
        d.open_interest[name] = [
            {
                "symbol": name,
                "sumOpenInterest": repr(1000.0 * (1 + 0.0001 * i)),
                "sumOpenInterestValue": repr(1e9 * (1 + 0.0001 * i)),
                "timestamp": last_5m - (288 - i) * five,
            }
            for i in range(289)
        ]
        d.taker[name] = [
            {
                "buySellRatio": "1.05",
                "buyVol": "105",
                "sellVol": "100",
                "timestamp": last_5m - i * five,
            }
            for i in range(12)
        ]
        d.top_long_short[name] = [
            {
                "symbol": name,
                "longShortRatio": repr(1.0 + 0.1 * (i % 2)),
                "longAccount": "0.52",
                "shortAccount": "0.48",
                "timestamp": now - now % HOUR - (30 - i) * HOUR,
            }
            for i in range(31)
        ]


# ---------------------------------------------------------------- processes


class StatusWatch:
    """Reads the listener's status file all along: it must never show a stale series."""

    def __init__(self, home: Path) -> None:
        self.path = status_path(home)
        self.seen: list[ListenerStatus] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-watch")

    async def _run(self) -> None:
        while True:
            status = read_status(self.path) if self.path.exists() else None
            if status is not None and (not self.seen or status != self.seen[-1]):
                self.seen.append(status)
            await asyncio.sleep(0.25)

    async def latest(self) -> ListenerStatus | None:
        return self.seen[-1] if self.seen else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _env(settings: Settings, rest: LiveRestServer, ws: LiveBinanceWs) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OCW_", "ANTHROPIC_", "FRED_", "BINANCE_"))  # nothing leaves here
    }
    env.update(
        {
            "OCW_HOME": str(settings.home),
            "OCW_TEMPORAL_ADDRESS": settings.temporal_address,
            "OCW_ACCOUNT": settings.account,
            "OCW_SYMBOLS": ",".join(SYMBOLS),
            "OCW_MODE": "paper",  # live market data, paper broker: what `ocw listen` runs
            "OCW_DECISION_INTERVAL": "1m",
            "OCW_INTERVALS": "1m",
            "OCW_BINANCE_WS_URL": ws.url,
            "OCW_BINANCE_FUTURES_WS_URL": ws.url,
            "OCW_BINANCE_REST_URL": rest.url,
            "OCW_BINANCE_FUTURES_REST_URL": rest.url,
            "OCW_WATCHDOG_S": "15",  # 7 missed frames; a healthy 2 s feed never trips it
            "OCW_LISTENER_STATUS_S": "1",
            "OCW_SENTIMENT_ENABLED": "false",  # no outside feeds in a test
            "OCW_LLM_ENABLED": "false",
        }
    )
    return env


# ---------------------------------------------------------------- the test


async def test_listen_live_bootstrap_stream_cut_repair_and_wakes(tmp_path: Path) -> None:
    started = time.monotonic()
    home = tmp_path / "home"
    settings = Settings(
        home=home,
        temporal_address=f"127.0.0.1:{free_port()}",
        account=LISTENER_ACCOUNT,
        symbols=SYMBOLS,
    )
    now = wall_ms()
    bars, daily = make_market(now)
    rest = await LiveRestServer(bars, daily).start()
    serve_derivatives(rest, now)
    ws = await LiveBinanceWs(bars).start()
    klines_before_stream: list[int] = []
    ws.on_kline_connect = lambda: klines_before_stream.append(len(rest.paths("/api/v3/klines")))
    env = _env(settings, rest, ws)
    logs = tmp_path / "logs"
    logs.mkdir()
    watch = StatusWatch(home)
    server = await asyncio.to_thread(
        start_dev_server, settings, log_file=logs / "temporal.log", ui=False
    )
    procs: list[subprocess.Popen] = []
    try:
        procs.append(ocw(["worker"], env, logs / "worker.log"))
        procs.append(ocw(["listen"], env, logs / "listen.log"))
        watch.start()

        # 1. the REST bootstrap filled the store before the stream was opened
        await wait_for(lambda: _true(ws.kline_connects), 60, "the listener's kline stream")
        assert klines_before_stream[0] == len(SYMBOLS) * 2  # 1m and 1d per symbol, then stream
        first = await wait_for(
            lambda: _status_with(watch, lambda s: s.stream.get("connects") == 1), 15, "status"
        )
        assert first.mode == "paper" and first.series == len(SYMBOLS) * 2
        boot = first.live["bootstrap"]
        assert boot == {"bars": len(SYMBOLS) * (299 + DAYS), "requests": 8, "failed": []}
        log_text = (logs / "listen.log").read_text()
        assert log_text.index("bootstrap: ") < log_text.index("connected to ws://")

        # 2. the next candle close: the connection is cut halfway through the close burst
        boundary = (wall_ms() + 1000) // MINUTE * MINUTE + MINUTE
        ws.cut_at(boundary, KEPT)
        after_cut = await wait_for(
            lambda: _status_with(
                watch,
                lambda s: s.stream.get("connects") == 2 and s.live["repair"]["bars"] >= 2,
            ),
            (boundary - wall_ms()) / 1000 + 20,
            "a reconnect and a REST gap repair",
        )
        assert ws.cuts == 1 and ws.closes_lost == SYMBOLS[KEPT:]
        # the lost 1m closes; on a loaded machine the reconnect can pass one more minute close,
        # whose bars (one per symbol) the repair brings too: never fewer, never a partial minute
        extra = after_cut.live["repair"]["bars"] - (len(SYMBOLS) - KEPT)
        assert extra >= 0 and extra % len(SYMBOLS) == 0, after_cut.live["repair"]
        assert after_cut.stream["disconnects"] == 1
        assert after_cut.stream["watchdog_reconnects"] == 0
        assert "ConnectionClosed" in after_cut.stream["last_error"]
        repairs = [
            r
            for r in rest.requests
            if r.path == "/api/v3/klines" and r.query.get("startTime") == str(boundary - MINUTE)
        ]
        assert {r.query["symbol"] for r in repairs} >= {exchange_symbol(s) for s in SYMBOLS[KEPT:]}
        assert after_cut.live["repair"]["failing"] == []

        # 3. both halves of the close woke the DecisionWorkflow: stream closes and repaired ones
        expected = {f"candle_close:{s}:1m" for s in SYMBOLS}
        journal_db = home / "journal.db"

        async def woken() -> list[Any] | None:
            if not journal_db.exists():
                return None
            records = [
                r
                for r in Journal(journal_db).decisions(LISTENER_ACCOUNT)
                if r.market_time_ms is not None and r.market_time_ms >= boundary - MINUTE
            ]
            reasons = {reason for r in records for reason in r.wake_reasons}
            return records if expected <= reasons else None

        records = await wait_for(woken, 30, "decision cycles woken by every close")
        by_reason = {reason: r.decision_id for r in records for reason in r.wake_reasons}
        # the closes that came over the stream, frame by frame, woke one decision cycle
        assert len({by_reason[f"candle_close:{s}:1m"] for s in SYMBOLS[:KEPT]}) == 1

        client = await connect(settings, attempts=10, delay_s=0.5)
        handle = client.get_workflow_handle(settings.decision_workflow_id)

        async def settled() -> Any:
            view = await handle.query(DecisionWorkflow.status)
            counters = view.counters
            done = not view.busy and counters.wakes_handled == counters.wakes_received >= 1
            return view if done else None

        view = await wait_for(settled, 20, "every wake handled")
        assert view.last_decision is not None
        assert any(r.startswith("candle_close:") for r in view.last_decision.wake_reasons)

        # 4. a drop in the middle of a bar: reconnect, a repair that finds nothing missing
        # (and asks REST nothing), no candle-close wake for the bar still running
        if wall_ms() % MINUTE > MINUTE - 15_000:  # a slow machine: drop after the next close
            await asyncio.sleep((MINUTE - wall_ms() % MINUTE + 4_000) / 1000)
        mark = wall_ms()
        before = await wait_for(
            lambda: _status_with(watch, lambda s: s.written_at_ms > mark + 1_500), 10, "status"
        )
        assert before.stream["connects"] == 2
        klines_asked = len(rest.paths("/api/v3/klines"))
        ws.drop_now()
        mid_bar = await wait_for(
            lambda: _status_with(
                watch,
                lambda s: (
                    s.stream.get("connects") == 3
                    and s.live["repair"]["runs"] > before.live["repair"]["runs"]
                ),
            ),
            15,
            "a reconnect after a mid-bar drop",
        )
        assert mid_bar.live["repair"]["bars"] == before.live["repair"]["bars"]
        assert len(rest.paths("/api/v3/klines")) == klines_asked
        assert mid_bar.gate["by_layer"]["G1"] == before.gate["by_layer"]["G1"]

        # 5. derivatives and liquidations flowed; the gate counted its closes
        final = await wait_for(
            lambda: _status_with(
                watch, lambda s: s.live.get("liquidations", {}).get("events", 0) >= 1
            ),
            15,
            "a forced order",
        )
        derivatives = final.live["derivatives"]
        assert derivatives["errors"] == 0 and derivatives["refreshes"] >= 1
        for symbol in SYMBOLS:
            info = derivatives["symbols"][symbol]
            assert sorted(info["fresh"]) == sorted(
                ["funding", "open_interest", "taker", "long_short", "basis"]
            ), (symbol, info)
        # the settled funding history reached the bars board (a carry family's input)
        sheet = BarsBoard.from_settings(settings).read(settings.market_task_queue)
        assert sheet is not None
        assert {s: len(p) for s, p in sheet.funding.items()} == {s: 30 for s in SYMBOLS}
        assert final.live["liquidations"]["connected"]
        assert final.gate["by_layer"]["G1"] >= len(SYMBOLS)
        assert final.wakes_sent >= 1 and final.wake_failures == 0
        assert final.live["rest"]["banned"] is False

        # 6. `ocw status` shows the workflow and the listener's live section; it reads the
        # listener through the monitor, whose copy can be a probe older than the file read
        # above (a loaded run showed 4/5 derivatives fresh there): ask again until it caught up
        async def ocw_status() -> tuple[int | None, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers.cli",
                "status",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode, out.decode()

        deadline = time.monotonic() + 30
        code, text = await ocw_status()
        while "5/5 fresh" not in text and time.monotonic() < deadline:
            await asyncio.sleep(2)
            code, text = await ocw_status()
        assert code == 0, text
        assert "up (answered the monitor" in text and "GONE" not in text  # through Temporal
        assert "stale: none" in text
        assert "exchange: bootstrap" in text and "bars merged" in text
        assert "derivatives:" in text and "5/5 fresh" in text
        assert "liquidations: connected" in text
    finally:
        await watch.stop()
        for proc in procs:
            stop_process(proc)
        stop_process(server)
        await ws.stop()
        await rest.stop()

    # never stale, from the first status written to the last
    assert watch.seen, "no status file was ever read"
    stale = [(s.written_at_ms, s.stale_series) for s in watch.seen if s.stale_series]
    assert not stale, stale
    print(f"live listen test took {time.monotonic() - started:.1f} s")


async def _true(value: Any) -> Any:
    return value


async def _status_with(
    watch: StatusWatch, pred: Callable[[ListenerStatus], bool]
) -> ListenerStatus | None:
    status = await watch.latest()
    return status if status is not None and pred(status) else None
