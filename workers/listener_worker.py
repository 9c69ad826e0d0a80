"""The listener process: kline stream → BarStore → gate → wakes, plus the market activities.

With ``replay`` it first starts the local replay WebSocket server and connects to it with the
very same client it uses for Binance; only the URL differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from signals.bar_store import BarStore
from signals.gate import Gate
from signals.kline_frames import KlineUpdate, stream_name
from signals.kline_stream import KlineStream
from signals.market_activities import MarketActivities
from signals.replay_plan import ReplayPlan, plan_replay
from signals.replay_server import ReplayServer, load_replay_bars
from signals.wake_dispatcher import WakeDispatcher
from trading.config import Settings, interval_seconds
from trading.market_data import resample
from trading.models import Bar
from workers.temporal_env import connect
from workers.wiring import decision_input, engine_config
from workflows.decision import DecisionWorkflow

log = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    files: list[Path]
    speed: float
    days: float | None = None
    warmup_days: float = 40.0
    start_ms: int | None = None
    updates_per_bar: int = 4


@dataclass
class Listener:
    """Wires stream updates through the store and the gate into the dispatcher."""

    store: BarStore
    gate: Gate
    dispatcher: WakeDispatcher

    def on_update(self, update: KlineUpdate) -> None:
        newly_closed = self.store.update(update.bar, update.event_time_ms)
        for reason in self.gate.evaluate(update.bar, newly_closed):
            self.dispatcher.push(reason, update.bar.symbol, update.event_time_ms)


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
        self.gate = Gate(settings.decision_interval)
        self.server: ReplayServer | None = None
        self.plan: ReplayPlan | None = None
        self.client: Client | None = None
        self.stream: KlineStream | None = None
        self.dispatcher: WakeDispatcher | None = None
        self.replay_finished = asyncio.Event()

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
        self.plan = plan
        return plan

    async def run(self, stop: asyncio.Event, exit_when_replay_done: bool = False) -> None:
        settings = self.settings
        url = settings.binance_ws_url
        if self.replay_options is not None:
            plan = self.plan or self.prepare_replay()
            self.server = ReplayServer(
                plan.replay,
                speed=self.replay_options.speed,
                updates_per_bar=self.replay_options.updates_per_bar,
            )
            await self.server.start()
            url = self.server.url
        self.client = await connect(settings, attempts=30)
        await self._configure_workflow()
        self.dispatcher = WakeDispatcher(
            self.client,
            settings.decision_workflow_id,
            settings.trading_task_queue,
            start_input=lambda: decision_input(settings),
        )
        listener = Listener(self.store, self.gate, self.dispatcher)
        streams = [
            stream_name(symbol, interval)
            for symbol in settings.symbols
            for interval in settings.stream_intervals
        ]
        self.stream = KlineStream(url, streams, listener.on_update)
        worker = Worker(
            self.client,
            task_queue=settings.market_task_queue,
            activities=MarketActivities(self.store).all(),
            max_concurrent_activities=50,
        )
        tasks: list[asyncio.Task] = []
        async with worker:
            tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatcher"))
            tasks.append(asyncio.create_task(self.stream.run(stop), name="stream"))
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

    async def _configure_workflow(self) -> None:
        """Hand the current settings to the running DecisionWorkflow (or start it with them)."""
        assert self.client is not None
        await self.client.start_workflow(
            DecisionWorkflow.run,
            decision_input(self.settings),
            id=self.settings.decision_workflow_id,
            task_queue=self.settings.trading_task_queue,
            start_signal="configure",
            start_signal_args=[engine_config(self.settings)],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    async def _replay_end(self, stop: asyncio.Event | None) -> None:
        """Say when the replay is over (and every wake delivered); optionally stop then."""
        assert self.server is not None and self.dispatcher is not None
        await self.server.done.wait()
        while not self.dispatcher.idle():
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
        return out
