"""The listener process: kline stream → BarStore → gate → wakes, plus the market activities.

With ``replay`` it first starts the local replay WebSocket server and connects to it with the
very same client it uses for Binance; only the URL differs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.worker import Worker

from activities.alerts import AlertSender
from activities.bars_board import INTERVAL as BARS_INTERVAL
from activities.bars_board import BarsBoard, BarsBoardWriter
from activities.decision_board import DecisionBoard, DecisionSheetWriter
from activities.decision_board import sheet_name as decision_sheet_name
from activities.feature_board import MIN_WRITE_EVERY_S as FEATURES_MIN_EVERY_S
from activities.feature_board import FeatureBoard, sheet_name
from activities.listener_health import ListenerHealthActivities
from activities.price_board import BoardPrice, BoardWriter, PriceBoard
from activities.regimes import RegimeActivities
from signals.bar_store import BarStore
from signals.binance_rest import BinanceRest
from signals.derivatives import DerivativesMonitor, ExtremeThresholds
from signals.gap_repair import GapRepairer, RepairReport
from signals.gate import Gate, GateParams, reason_symbol
from signals.gate_sync import GateSync
from signals.kline_frames import KlineUpdate, stream_name
from signals.kline_stream import KlineStream
from signals.liquidations import LiquidationStream, LiquidationTracker
from signals.listener_status import ListenerStatus, StatusWriter, status_path, store_staleness
from signals.lockstep import Lockstep
from signals.market_activities import MarketActivities
from signals.replay_plan import ReplayPlan, plan_replay
from signals.replay_server import ReplayServer, load_replay_bars
from signals.rest_budget import RestBudget
from signals.sentiment import SentimentFeeds
from signals.wake_dispatcher import WakeDispatcher
from trading import metrics
from trading.alerts import worker_alert
from trading.config import Settings, interval_seconds
from trading.market_data import find_funding_csv, load_funding_csv, resample
from trading.models import Bar, SymbolFeatures, Wake
from trading.snapshot import MarketContext, MarketContextRequest
from workers.account import warm_update
from workers.telemetry import CounterDeltas, install_metrics, process_meter
from workers.temporal_env import connect
from workers.worker_watch import WorkerWatch
from workflows import activity_api as api
from workflows.decision import DecisionWorkflow, SpeedRequest

log = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    files: list[Path]
    speed: float
    days: float | None = None
    warmup_days: float = 40.0
    start_ms: int | None = None
    updates_per_bar: int = 4
    lockstep: bool = False  # the replay waits for the engine after each bar (signals/lockstep.py)


def replay_funding(files: list[Path], symbols: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Each symbol's funding prints from ``binance_<SYMBOL>_perp_funding_8h.csv`` beside the
    replay's bar files (the shared data's layout); symbols without one have none. A file that
    does not parse is logged and skipped: the replay runs, its carry family then holds."""
    out: dict[str, list[tuple[int, float]]] = {}
    folders = list(dict.fromkeys(Path(f).parent for f in files))
    for symbol in symbols:
        for folder in folders:
            path = find_funding_csv(folder, symbol)
            if path is None:
                continue
            try:
                times, rates = load_funding_csv(path)
            except (OSError, ValueError) as err:
                log.warning("replay funding of %s not loaded: %s", symbol, err)
                break
            out[symbol] = [(int(t), float(r)) for t, r in zip(times, rates, strict=True)]
            break
    return out


@dataclass
class WakeLane:
    """One more account on the same feed (an arena, issue 15): its own gate (its agent's timer
    and wake conditions, kept in step by its own GateSync) and its own wake dispatcher."""

    account: str
    gate: Gate
    dispatcher: WakeDispatcher | None = None
    gate_sync: GateSync | None = None

    @property
    def workflow_id(self) -> str:
        return f"ocw-decision-{self.account}"


@dataclass
class Listener:
    """Wires stream updates through the store and the gate into the dispatcher."""

    store: BarStore
    gate: Gate
    dispatcher: WakeDispatcher
    repairer: GapRepairer | None = None  # live only: a stream bar after a hole asks a repair
    lanes: list[WakeLane] = field(default_factory=list)  # more accounts on this feed
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # last event time per stream

    def on_update(self, update: KlineUpdate) -> None:
        bar = update.bar
        self.seen[(bar.symbol, bar.interval)] = update.event_time_ms
        if self.repairer is not None:
            self.repairer.check_hole(bar)  # before the update moves the last closed bar
        newly_closed = self.store.update(bar, update.event_time_ms)
        reasons = self.gate.evaluate(bar, newly_closed, update.event_time_ms)
        for reason in reasons:  # held reasons may be about another symbol
            self.dispatcher.push(reason, reason_symbol(reason) or bar.symbol, update.event_time_ms)
        for lane in self.lanes:
            assert lane.dispatcher is not None
            for reason in lane.gate.evaluate(bar, newly_closed, update.event_time_ms):
                lane.dispatcher.push(
                    reason, reason_symbol(reason) or bar.symbol, update.event_time_ms
                )


def _wake_status(gate: Gate, dispatcher: WakeDispatcher | None) -> dict[str, Any]:
    """One account's gate counters and wake delivery, for the status file (WAKE_FIELDS)."""
    return {
        "gate": gate.counters.as_dict(),
        "wakes_sent": dispatcher.sent if dispatcher else 0,
        "wake_failures": dispatcher.failures if dispatcher else 0,
        "account_missing": dispatcher.account_missing if dispatcher else False,
        "wakes_held": dispatcher.held if dispatcher else 0,
    }


def _once_per_wake(*hooks: Callable[[Wake], Awaitable[None]]) -> Callable[[Wake], Awaitable[None]]:
    """The boards' hooks before a wake, run once per wake id (every account of an arena gets
    the same candle's wake: one write serves them all)."""
    last: list[str | None] = [None]

    async def before(wake: Wake) -> None:
        if wake.wake_id and wake.wake_id == last[0]:
            return
        for hook in hooks:
            try:
                await hook(wake)
            except Exception as err:  # noqa: BLE001 - the wake goes out regardless
                log.warning("before the wake: %s", err)
        last[0] = wake.wake_id

    return before


def seed_store(store: BarStore, warmup: dict[str, list[Bar]], intervals: list[str]) -> None:
    for symbol, bars in warmup.items():
        if not bars:
            continue
        base = bars[0].interval
        for interval in intervals:
            if interval == base:
                store.seed(symbol, interval, bars)
            elif interval_seconds(interval) > interval_seconds(base):
                store.seed(symbol, interval, resample(bars, interval))


class ListenerService:
    """Everything the listener process runs; ``run`` returns when stopped or the replay ends."""

    def __init__(self, settings: Settings, replay: ReplayOptions | None = None) -> None:
        self.settings = settings
        self.replay_options = replay
        self.store = BarStore()
        self.gate = Gate(
            settings.decision_interval,
            params=GateParams.from_settings(settings),
            symbols=settings.symbols,
        )
        self.lanes = [  # an arena's other accounts (OCW_WAKE_ACCOUNTS), one gate each
            WakeLane(
                account,
                Gate(
                    settings.decision_interval,
                    params=GateParams.from_settings(settings),
                    symbols=settings.symbols,
                ),
            )
            for account in dict.fromkeys(settings.wake_accounts)
            if account != settings.account
        ]
        # today's sentiment says nothing about a replayed past: the snapshot marks it missing
        self.sentiment = (
            SentimentFeeds.unavailable("replay: no historical sentiment")
            if replay is not None
            else SentimentFeeds.from_settings(settings)
        )
        self.gate_sync: GateSync | None = None
        self.started_at_ms = 0
        self.status_writer = StatusWriter(
            status_path(settings.home), self.listener_status, settings.listener_status_s
        )
        self.server: ReplayServer | None = None
        self.plan: ReplayPlan | None = None
        self.client: Client | None = None
        self.stream: KlineStream | None = None
        self.dispatcher: WakeDispatcher | None = None
        self.replay_finished = asyncio.Event()
        # live exchange data (docs/market-data.md); all None in replay
        self.budget: RestBudget | None = None
        self.repairer: GapRepairer | None = None
        self.derivatives: DerivativesMonitor | None = None
        self.liquidations: LiquidationTracker | None = None
        self.liquidation_stream: LiquidationStream | None = None
        self._rest_clients: list[BinanceRest] = []
        # what bootstrap and gap repair brought, for the status file (issue 3 live run)
        self.bootstrap_report: RepairReport | None = None
        self.repaired_bars = 0
        self.worker_watch: WorkerWatch | None = None
        self.lockstep: Lockstep | None = None
        # a replay's settled funding prints per symbol, from the files beside its bars
        self.replay_funding: dict[str, list[tuple[int, float]]] = {}

    def prepare_replay(self) -> ReplayPlan:
        opts = self.replay_options
        assert opts is not None
        bars = load_replay_bars(opts.files)
        unknown = sorted(set(bars) - set(self.settings.symbols))
        if unknown:
            log.info("replay files bring symbols outside the universe: %s", ", ".join(unknown))
        plan = plan_replay(
            bars,
            days=opts.days,
            warmup_days=opts.warmup_days,
            align_interval=self.settings.decision_interval,
            start_ms=opts.start_ms,
        )
        seed_store(self.store, plan.warmup, self.settings.stream_intervals)
        for symbol, series in bars.items():  # daily history for the regime fit, point in time
            before = [b for b in series if b.close_time < plan.start_ms]
            if before:
                self.store.seed(symbol, "1d", resample(before, "1d")[-self.store.maxlen :])
        self.plan = plan
        self.replay_funding = replay_funding(opts.files, self.settings.symbols)
        return plan

    async def run(self, stop: asyncio.Event, exit_when_replay_done: bool = False) -> None:
        settings = self.settings
        url = settings.kline_ws_url
        if self.replay_options is None:
            await self._start_live_data()  # REST bootstrap before the gate warms up on it
        if self.replay_options is not None:
            plan = self.plan or self.prepare_replay()
            self.server = ReplayServer(
                plan.replay,
                speed=self.replay_options.speed,
                updates_per_bar=self.replay_options.updates_per_bar,
            )
            await self.server.start()
            url = self.server.url
        install_metrics(settings.listener_metrics, "listener")  # before the client's runtime
        self.client = await connect(settings, attempts=30)
        self.dispatcher = WakeDispatcher(
            self.client,
            settings.decision_workflow_id,
            batch_window_s=settings.wake_batch_s / settings.speed,  # one wake per candle close
        )
        self.gate_sync = GateSync(
            self.client,
            settings.decision_workflow_id,
            self.gate,
            poll_s=max(settings.min_timer_s, settings.gate_sync_poll_s / settings.speed),
        )
        self.dispatcher.on_sent = self.gate_sync.poke
        for lane in self.lanes:
            lane.dispatcher = WakeDispatcher(
                self.client, lane.workflow_id, batch_window_s=self.dispatcher.batch_window_s
            )
            lane.gate_sync = GateSync(
                self.client, lane.workflow_id, lane.gate, poll_s=self.gate_sync.poll_s
            )
            lane.dispatcher.on_sent = lane.gate_sync.poke
        warmed = sum(  # bootstrap / replay warm-up: z-scores work from the first close
            gate.warm_up(self.store.closed_bars(symbol, interval))
            for gate in [self.gate, *(lane.gate for lane in self.lanes)]
            for symbol in self.store.symbols()
            for interval in self.store.intervals(symbol)
        )
        log.info("gate warmed up with %d closed bars", warmed)
        if self.lanes:
            log.info(
                "waking %d accounts from this feed: %s",
                1 + len(self.lanes),
                ", ".join([settings.account, *(lane.account for lane in self.lanes)]),
            )
        listener = Listener(self.store, self.gate, self.dispatcher, self.repairer, self.lanes)
        if self.server is not None and self.replay_options and self.replay_options.lockstep:
            self.lockstep = Lockstep(
                listener.seen,
                [self.dispatcher, *(lane.dispatcher for lane in self.lanes if lane.dispatcher)],
                self._account_idle,
            )
            self.server.hold = self.lockstep.hold
        intervals = settings.stream_intervals
        if self.server is not None:  # a replay serves multiples of its base interval only
            base = interval_seconds(self.server.base_interval)
            intervals = [i for i in [*intervals, "1d"] if interval_seconds(i) % base == 0]
            intervals = list(dict.fromkeys(intervals))  # "1d" keeps the regime's bars current
        streams = [
            stream_name(symbol, interval) for symbol in settings.symbols for interval in intervals
        ]
        self.stream = KlineStream(
            url,
            streams,
            listener.on_update,
            on_watchdog=self._on_watchdog,
            watchdog_s=self._watchdog_s(),
            on_reconnect=self.repairer.on_reconnect if self.repairer else None,
            max_connection_s=settings.max_connection_s,
        )
        market = MarketActivities(self.store, self.sentiment, self.derivatives)
        self.decision_sheets = self.decision_writer(market)
        self.bars_sheets = self.bars_writer()
        before_wake = _once_per_wake(self.bars_sheets.before_wake, self.decision_sheets.before_wake)
        self.dispatcher.before_send = before_wake
        for lane in self.lanes:
            assert lane.dispatcher is not None
            lane.dispatcher.before_send = before_wake
        regimes = RegimeActivities.from_settings(settings, bars_source=market.daily_bars_until)
        worker = Worker(
            self.client,
            task_queue=settings.market_task_queue,
            activities=[
                *market.all(),
                regimes.crypto_regime,
                *ListenerHealthActivities(self.listener_status).all(),  # the monitor's probe
            ],
            max_concurrent_activities=50,
        )
        tasks: list[asyncio.Task] = []
        async with worker:
            tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatcher"))
            for lane in self.lanes:
                assert lane.dispatcher is not None and lane.gate_sync is not None
                tasks.append(asyncio.create_task(lane.dispatcher.run(), name="dispatcher"))
                tasks.append(asyncio.create_task(lane.gate_sync.run(), name="gate-sync"))
            tasks.append(asyncio.create_task(self.bars_sheets.run(), name="bars-board"))
            tasks.append(asyncio.create_task(self.stream.run(stop), name="stream"))
            tasks.append(asyncio.create_task(self.gate_sync.run(), name="gate-sync"))
            tasks.append(asyncio.create_task(self.sentiment.run(), name="sentiment"))
            if self.replay_options is not None:
                tasks.append(asyncio.create_task(self._set_replay_clock(stop), name="clock"))
            self.started_at_ms = int(time.time() * 1000)
            tasks.append(asyncio.create_task(self.status_writer.run(), name="status-file"))
            tasks.append(asyncio.create_task(self.board_writer().run(), name="price-board"))
            features = self.feature_writer(market)
            tasks.append(asyncio.create_task(features.run(), name="feature-board"))
            tasks.append(asyncio.create_task(self.decision_sheets.run(), name="decision-board"))
            tasks.append(asyncio.create_task(self._export_metrics(), name="metrics"))
            tasks.append(asyncio.create_task(self._watch_worker(), name="worker-watch"))
            tasks += self._live_data_tasks(stop)
            if self.server is not None:
                tasks.append(
                    asyncio.create_task(
                        self._replay_end(stop if exit_when_replay_done else None), name="replay-end"
                    )
                )
            try:
                await stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if self.server is not None:
                    await self.server.stop()
                await self._stop_live_data()

    # ------------------------------------------------------------ live exchange data

    async def _start_live_data(self) -> None:
        """REST budget and clients, bootstrap, derivatives monitor, liquidations (live only)."""
        s = self.settings
        self.budget = RestBudget(
            {"spot": s.rest_weight_limit_spot, "futures": s.rest_weight_limit_futures},
            throttle_fraction=s.rest_throttle_fraction,
            shared_path=s.paths()["rest_pause"],
        )
        urls = {"spot_url": s.binance_rest_url, "futures_url": s.binance_futures_rest_url}
        klines = BinanceRest(s.market_type, self.budget, **urls)
        self._rest_clients.append(klines)
        self.repairer = GapRepairer(
            klines,
            self.store,
            s.symbols,
            s.stream_intervals,
            bootstrap_bars=s.bootstrap_bars,
            daily_bars=s.daily_bars,
            on_repaired=self._on_repaired,
        )
        self.bootstrap_report = await self.repairer.bootstrap()
        if not s.derivatives_enabled:
            return
        self.liquidations = LiquidationTracker(s.liquidation_cascade_usd)
        self.liquidation_stream = LiquidationStream(
            self.liquidations,
            s.binance_futures_ws_url,
            watchdog_s=s.liquidation_watchdog_s,
            max_connection_s=s.max_connection_s,
        )
        futures = BinanceRest("futures", self.budget, **urls)  # mainnet data even on testnet
        self._rest_clients.append(futures)
        self.derivatives = DerivativesMonitor(
            futures,
            s.symbols,
            ExtremeThresholds(
                funding_abs=s.extreme_funding_abs,
                oi_change_1h_abs=s.extreme_oi_change_abs,
                taker_ratio_high=s.extreme_taker_ratio,
                ls_z_abs=s.extreme_ls_z_abs,
                basis_annualised_abs=s.extreme_basis_abs,
            ),
            cadence_s=s.derivatives_cadence_s,
            fast_cadence_s=min(s.derivatives_fast_cadence_s, s.derivatives_cadence_s),
            stale_after_s=s.derivatives_stale_s,
            liquidations=lambda: (
                self.liquidations.summary(s.symbols) if self.liquidations else None
            ),
        )
        self.gate.metric_provider = self.derivatives.metric  # G4 funding_rate / oi_change_pct

    def _live_data_tasks(self, stop: asyncio.Event) -> list[asyncio.Task]:
        tasks = []
        if self.derivatives is not None:
            tasks.append(asyncio.create_task(self.derivatives.run(stop), name="derivatives"))
        if self.liquidation_stream is not None:
            tasks.append(
                asyncio.create_task(self.liquidation_stream.run(stop), name="liquidations")
            )
        if self.repairer is not None and self.repairer.daily_bars:
            tasks.append(asyncio.create_task(self._daily_refresh(stop), name="daily-bars"))
        return tasks

    async def _daily_refresh(self, stop: asyncio.Event, every_s: float = 3600.0) -> None:
        """Keep the 1d series (regime fit) current: a no-op request-free check most hours."""
        assert self.repairer is not None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            if not stop.is_set():
                await self.repairer.refresh_daily()

    def _on_repaired(self, report: RepairReport) -> None:
        """Repaired bars fill the store; only a bar that closed within its own interval may
        still wake (as the stream would have), older ones only warm the gate's windows."""
        self.repaired_bars += len(report.new_bars)  # for the status file
        now = int(time.time() * 1000)
        newest = report.newest()
        recent = {
            key: bar
            for key, bar in newest.items()
            if now - bar.close_time <= interval_seconds(bar.interval) * 1000
        }
        self.gate.warm_up(b for b in report.new_bars if recent.get((b.symbol, b.interval)) is not b)
        if self.dispatcher is None:
            return
        for lane in self.lanes:
            lane.gate.warm_up(
                b for b in report.new_bars if recent.get((b.symbol, b.interval)) is not b
            )
        for bar in sorted(recent.values(), key=lambda b: b.close_time):
            for reason in self.gate.evaluate(bar, True, bar.close_time):
                self.dispatcher.push(reason, reason_symbol(reason) or bar.symbol, bar.close_time)
            for lane in self.lanes:
                if lane.dispatcher is None:
                    continue
                for reason in lane.gate.evaluate(bar, True, bar.close_time):
                    lane.dispatcher.push(
                        reason, reason_symbol(reason) or bar.symbol, bar.close_time
                    )

    async def _stop_live_data(self) -> None:
        if self.repairer is not None:
            await self.repairer.close()
        for rest in self._rest_clients:
            with contextlib.suppress(Exception):
                await rest.close()

    def _on_watchdog(self, silent_s: float) -> None:
        """The stream heard nothing for the watchdog time and reconnects: wake the agent."""
        if self.dispatcher is None:
            return
        market_ms = self.gate.market_time_ms or int(time.time() * 1000)
        lanes = [(self.gate, self.dispatcher)]
        lanes += [(lane.gate, lane.dispatcher) for lane in self.lanes if lane.dispatcher]
        for gate, dispatcher in lanes:
            for reason in gate.watchdog():
                symbol = reason_symbol(reason)  # "watchdog" itself is about every symbol
                for sym in [symbol] if symbol else self.settings.symbols:
                    dispatcher.push(reason, sym, market_ms)

    def _watchdog_s(self) -> float:
        """SPEC's 5 min of silence on the replay clock, but never shorter than three gaps
        between the replay's own frames (coarse base bars at a low speed are sparse). A lockstep
        replay is silent by design while the engine works, so it has none."""
        if self.replay_options is not None and self.replay_options.lockstep:
            return float("inf")
        settings = self.settings
        watchdog = settings.scaled(settings.watchdog_s)
        if self.server is not None and self.replay_options is not None:
            per_bar = self.replay_options.updates_per_bar + 1
            gap = interval_seconds(self.server.base_interval) / settings.speed / per_bar
            watchdog = max(watchdog, 3 * gap)
        return watchdog

    async def _watch_worker(self) -> None:
        """Is anyone polling the trading task queue? The one alert the monitor, which runs
        on that worker, cannot send (``workers/worker_watch.py``)."""
        assert self.client is not None
        try:
            sender = AlertSender.from_settings(self.settings)
        except ValueError as err:
            log.error("alerts off in the listener: %s", err)
            return

        async def tell(change: str, key: str, detail: dict[str, object]) -> None:
            gone = change == "worker_gone"
            since = int(key.rpartition(":")[2] or 0) or int(time.time() * 1000)
            alert = worker_alert(
                self.settings.account,
                gone,
                since,
                now_ms=int(time.time() * 1000),
                detail=str(detail.get("detail") or "") or None,
            )
            if sender.configured:
                await sender.send_now([alert])
            log.warning("trading worker %s", "GONE" if gone else "back")

        self.worker_watch = WorkerWatch(
            self.client,
            self.settings.trading_task_queue,
            self.settings.monitor_every_s,
            tell,
        )
        try:
            await self.worker_watch.run()
        finally:
            sender.close()

    async def _export_metrics(self) -> None:
        """The listener's counters and feed ages on its Prometheus endpoint, every few s."""
        if not self.settings.listener_metrics:
            return
        deltas = CounterDeltas()
        while True:
            try:
                self._metrics_once(process_meter(), deltas)
            except Exception as err:  # noqa: BLE001 - metrics never stop the listener
                log.warning("listener metrics not exported: %s", err)
            await asyncio.sleep(min(5.0, self.settings.listener_status_s))

    def _metrics_once(self, meter: object, deltas: CounterDeltas) -> None:
        counters = self.gate.counters
        deltas.export(meter, metrics.GATE_TICKS, counters.ticks)
        for layer, count in counters.woken_by_layer.items():
            deltas.export(meter, metrics.GATE_WAKES, count, {"layer": layer})
        if self.dispatcher is not None:
            deltas.export(meter, metrics.WAKES_SENT, self.dispatcher.sent)
            deltas.export(meter, metrics.WAKE_FAILURES, self.dispatcher.failures)
        stats = self.stream.stats if self.stream else None
        up = bool(stats and stats.connects > stats.disconnects)
        metrics.set_gauge(meter, metrics.FEED_CONNECTED, 1.0 if up else 0.0)
        known = [
            (symbol, interval, self.store.last_event_ms(symbol, interval))
            for symbol in self.store.symbols()
            for interval in self.store.intervals(symbol)
        ]
        if self.server is None:  # live: the wall clock; a replay runs on its own clock
            clock = int(time.time() * 1000)
        else:
            clock = max((t for *_, t in known if t is not None), default=0)
        for symbol, interval, last in known:
            if last is None:
                continue
            age_s = max(0.0, (clock - last) / 1000 - interval_seconds(interval))
            metrics.set_gauge(meter, metrics.FEED_STALENESS, age_s, series=f"{symbol} {interval}")

    def board_writer(self) -> BoardWriter:
        """Writes the store's prices for lean safety checks (activities/price_board.py),
        every ``OCW_PRICE_BOARD_EVERY_S`` on the replay clock."""
        s = self.settings
        return BoardWriter(
            PriceBoard.from_settings(s),
            s.market_task_queue,
            self.board_prices,
            s.price_board_every_s / s.speed,
            socket.gethostname(),
        )

    def feature_writer(self, market: MarketActivities) -> BoardWriter:
        """Writes the agent checks' features (activities/feature_board.py) every
        ``OCW_FEATURE_BOARD_EVERY_S`` on the replay clock."""
        s = self.settings
        interval = api.AGENT_FEATURES_INTERVAL

        def snapshot() -> dict[str, SymbolFeatures]:
            return market.view(self.store.symbols(), interval).symbols

        return BoardWriter(
            FeatureBoard.from_settings(s),
            sheet_name(s.market_task_queue, interval),
            snapshot,
            s.feature_board_every_s / s.speed,
            socket.gethostname(),
            what="feature board",
            min_every_s=FEATURES_MIN_EVERY_S,
        )

    def bars_writer(self) -> BarsBoardWriter:
        """Writes the store's closed daily bars (activities/bars_board.py) for the accounts that
        decide with a policy family, when a new daily bar closed, before each wake."""
        s = self.settings

        def daily() -> dict[str, list[Bar]]:
            return {sym: self.store.closed_bars(sym, BARS_INTERVAL) for sym in s.symbols}

        def funding() -> dict[str, list[tuple[int, float]]]:
            """Settled prints known now: the replay's files up to its clock, or live the
            derivatives monitor's /fapi/v1/fundingRate history."""
            if self.replay_options is not None:
                now = self.gate.market_time_ms
                if now is None:
                    return {}
                return {
                    sym: prints[: bisect.bisect_right(prints, (now, math.inf))]
                    for sym, prints in self.replay_funding.items()
                }
            return self.derivatives.funding_history() if self.derivatives is not None else {}

        return BarsBoardWriter(
            BarsBoard.from_settings(s),
            s.market_task_queue,
            daily,
            s.bars_board_every_s / s.speed,
            socket.gethostname(),
            funding=funding,
        )

    def decision_writer(self, market: MarketActivities) -> DecisionSheetWriter:
        """Writes each wake's view and context (activities/decision_board.py) just before the
        wake goes out, for a lean DecisionWorkflow to decide without asking back."""
        s = self.settings
        symbols = list(s.symbols)

        async def context() -> MarketContext:
            return await market.market_context(MarketContextRequest(symbols=symbols))

        return DecisionSheetWriter(
            DecisionBoard.from_settings(s),
            decision_sheet_name(s.market_task_queue, s.decision_interval),
            lambda: market.view(symbols, s.decision_interval),
            context,
            socket.gethostname(),
            every_s=s.decision_board_every_s / s.speed,
        )

    def board_prices(self) -> dict[str, BoardPrice]:
        wall = time.time()
        out: dict[str, BoardPrice] = {}
        for symbol in self.store.symbols():
            tick = self.store.last_price(symbol)
            if tick is None:
                continue
            age = self.store.heard_age_s(symbol)
            out[symbol] = BoardPrice(tick.price, tick.time_ms, None if age is None else wall - age)
        return out

    def listener_status(self) -> ListenerStatus:
        """Counters for the status file (``ocw status``)."""
        market_ms, stale, series = store_staleness(self.store)
        stream = self.stream.stats if self.stream else None
        own = _wake_status(self.gate, self.dispatcher)  # the top level: the first account's
        return ListenerStatus(
            written_at_ms=int(time.time() * 1000),
            started_at_ms=self.started_at_ms,
            pid=os.getpid(),
            host=socket.gethostname(),
            mode=self.settings.mode,
            every_s=self.status_writer.every_s,
            market_time_ms=market_ms,
            stream={k: v for k, v in vars(stream).items()} if stream else {},
            store=dict(self.store.stats),
            stale_series=stale,
            series=series,
            **own,
            gate_sync=vars(self.gate_sync.stats) if self.gate_sync else {},
            sentiment=self.sentiment.status(),
            live=self._live_status(),
            trading_worker=self.worker_watch.status() if self.worker_watch else {},
            accounts={
                self.settings.account: own,
                **{lane.account: _wake_status(lane.gate, lane.dispatcher) for lane in self.lanes},
            },
        )

    def _live_status(self) -> dict[str, object]:
        """Exchange data for the status file, live only. Added when `ocw listen` first ran
        against local Binance stand-ins (issue 3): without it neither `ocw status` nor a test
        could tell whether bootstrap, gap repair, REST and the derivatives monitor work."""
        if self.repairer is None:
            return {}
        boot = self.bootstrap_report
        last = self.repairer.last_report
        out: dict[str, object] = {
            "bootstrap": {
                "bars": len(boot.new_bars) if boot else 0,
                "requests": boot.requests if boot else 0,
                "failed": sorted(boot.failed) if boot else [],
            },
            "repair": {
                "runs": self.repairer.repairs,
                "bars": self.repaired_bars,
                "failing": sorted(last.failed) if last else [],
            },
        }
        if self.budget is not None:
            out["rest"] = self.budget.status()
        if self.derivatives is not None:
            view = self.derivatives.view()
            out["derivatives"] = {
                "refreshes": self.derivatives.refreshes,
                "errors": len(self.derivatives.errors),
                "symbols": {
                    symbol: {
                        "fresh": [r for r in snap.updated_ms if r not in snap.stale],
                        "missing": snap.missing,
                        "stale": snap.stale,
                        "extreme": snap.extreme,
                    }
                    for symbol, snap in view.symbols.items()
                },
            }
        if self.liquidations is not None and self.liquidation_stream is not None:
            summary = self.liquidations.summary(self.settings.symbols)
            out["liquidations"] = {
                "connected": summary.connected,
                "connects": self.liquidation_stream.stats.connects,
                "events": summary.events,
                "usd_1h": summary.total_1h,
                "cascade": summary.cascade,
            }
        return out

    async def _set_replay_clock(self, stop: asyncio.Event) -> None:
        """The replay clock of every account this listener wakes (an arena's too)."""
        await asyncio.gather(
            self._set_account_clock(self.settings.decision_workflow_id, stop),
            *(self._set_account_clock(lane.workflow_id, stop) for lane in self.lanes),
        )

    async def _set_account_clock(self, workflow_id: str, stop: asyncio.Event) -> None:
        """A replay runs the account's timers on its clock: ``set_speed`` (validated by the
        workflow, refused for a real-money account). Limits are the trading side's own: the
        listener never configures them, and never creates the account."""
        assert self.client is not None
        handle = self.client.get_workflow_handle(workflow_id)
        delay = 0.5
        while not stop.is_set():
            try:
                view = await handle.query(DecisionWorkflow.status)
                if view.config is not None and view.config.speed == self.settings.speed:
                    log.info("replay clock: the account already runs at %g", view.config.speed)
                    return
                answer = await warm_update(
                    handle, DecisionWorkflow.set_speed, SpeedRequest(speed=self.settings.speed)
                )
                log.info("replay clock: %s", answer)
                return
            except WorkflowUpdateFailedError as err:
                log.error("the account refused the replay clock: %s", err.cause or err)
                return
            except Exception as err:  # noqa: BLE001 - no account yet, or Temporal away
                log.warning("replay clock not set yet (%s); retrying", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)

    async def _account_idle(self, workflow_id: str) -> bool:
        """A lockstep replay's test: no wake queued, no cycle running, no exit awaiting a fill."""
        assert self.client is not None
        return await self.client.get_workflow_handle(workflow_id).query(DecisionWorkflow.idle)

    async def _replay_end(self, stop: asyncio.Event | None) -> None:
        """Say when the replay is over (and every wake delivered); optionally stop then."""
        assert self.server is not None and self.dispatcher is not None
        await self.server.done.wait()
        if self.stream is not None:  # a finished replay is silent by design: no watchdog
            self.stream.watchdog_s = float("inf")
        while not self.dispatcher.idle() or not all(
            lane.dispatcher is None or lane.dispatcher.idle() for lane in self.lanes
        ):
            await asyncio.sleep(0.05)
        self.replay_finished.set()
        print(
            f"replay finished: {self.server.bars_sent} bars, {self.dispatcher.sent} wakes sent",
            flush=True,
        )
        if stop is not None:
            stop.set()

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {
            "gate": self.gate.counters.as_dict(),
            "store": dict(self.store.stats),
        }
        if self.stream:
            out["stream"] = vars(self.stream.stats)
        if self.dispatcher:
            out["wakes_sent"] = self.dispatcher.sent
        if self.lanes:
            out["accounts"] = {
                lane.account: lane.dispatcher.sent if lane.dispatcher else 0 for lane in self.lanes
            }
        if self.gate_sync:
            out["gate_sync"] = vars(self.gate_sync.stats)
        if self.lockstep is not None:
            out["lockstep"] = vars(self.lockstep.stats)
        out["sentiment"] = self.sentiment.status()
        if self.budget is not None:
            out["rest"] = self.budget.status()
        if self.derivatives is not None:
            out["derivatives_errors"] = dict(self.derivatives.errors)
        if self.liquidation_stream is not None:
            out["liquidation_stream"] = vars(self.liquidation_stream.stats)
        return out
