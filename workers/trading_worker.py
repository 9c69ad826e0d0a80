"""The trading worker: DecisionWorkflow, PositionWorkflow and their activities."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import AlertSender
from activities.broker import PaperVenue
from activities.decision_board import DecisionBoard, DecisionBoardActivities
from activities.exchange_broker import ExchangeBroker
from activities.family_decider import FamilyDecider, policy_spec
from activities.feature_board import FeatureBoard, FeatureBoardActivities
from activities.journal import Journal
from activities.learner_store import LearnerActivities
from activities.llm_agent import LLMActivities, LLMConfig
from activities.llm_cache import LLMStore
from activities.monitor import MonitorActivities, deliver_with
from activities.paper_broker import PaperBroker
from activities.price_board import PriceBoard, PriceBoardActivities
from activities.regimes import RegimeActivities
from activities.trading import TradingActivities
from trading.config import Settings
from workers.account import configure_when_ready, ensure_account
from workers.brokers import build_broker
from workers.gc_watch import GcWatch
from workers.loop_watch import LoopWatch
from workers.monitor import ensure_monitor
from workers.reconcile import reconcile_forever
from workers.telemetry import install_metrics
from workers.temporal_env import SetupError, connect
from workers.versioning import (
    current_build,
    deployment_version,
    describe,
    rollout_hint,
    worker_versioning_options,
)
from workflows.decision import DecisionWorkflow
from workflows.monitor import MonitorWorkflow
from workflows.position import PositionWorkflow

log = logging.getLogger(__name__)

RECONCILE_FIRST_S = 5.0  # after start: the account is created and configured by then


def build_activities(settings: Settings, client: Client) -> TradingActivities:
    return TradingActivities(
        build_broker(settings),
        Journal.from_settings(settings),
        client,
        policy=settings.policy,
        family=FamilyDecider.from_settings(settings),  # reads the bars board only when used
    )


async def run_trading_worker(settings: Settings, stop: asyncio.Event) -> None:
    try:
        policy_spec(settings.policy)  # a bad OCW_POLICY is refused before anything starts
    except ValueError as err:
        raise SetupError(f"OCW_POLICY: {err}") from None
    install_metrics(settings.worker_metrics, "worker")  # before the client's runtime
    GcWatch().install()  # a long collection pause is logged: it would look like tick lag
    client = await connect(settings, attempts=5)  # no server: one clear line in ~5 s
    activities = build_activities(settings, client)
    exchange = exchange_of(activities)
    if exchange is not None:
        try:
            await exchange.start()
        except Exception as err:
            await exchange.close()
            raise SetupError(
                f"{exchange.kind} at {exchange.exchange.urls['api'].get('public') or '?'}: "
                f"cannot load markets or set up the account: {type(err).__name__}: {err}"
            ) from None
        log.info("trading through %s (%s orders)", exchange.kind, settings.order_type)
    llm = LLMActivities(LLMConfig.from_settings(settings), LLMStore.from_settings(settings))
    regimes = RegimeActivities.from_settings(settings)
    learner = LearnerActivities.from_settings(settings)
    try:
        sender = AlertSender.from_settings(settings)
    except ValueError as err:
        raise SetupError(f"alerts: {err}") from None
    monitor = MonitorActivities(
        client, activities.journal, deliver_with(sender), settings.alert_stale_feed_s
    )
    board = PriceBoardActivities(PriceBoard.from_settings(settings))
    sheets = FeatureBoardActivities(FeatureBoard.from_settings(settings))
    decisions = DecisionBoardActivities(DecisionBoard.from_settings(settings))
    worker = Worker(
        client,
        task_queue=settings.trading_task_queue,
        workflows=[DecisionWorkflow, PositionWorkflow, MonitorWorkflow],
        activities=[
            *activities.all(),
            *llm.all(),
            regimes.macro_regime,  # the crypto regime is fitted by the listener, beside its bars
            *learner.all(),
            *monitor.all(),
            *board.all(),  # a local activity of lean positions' safety checks
            *sheets.all(),  # ... and of their agent checks
            *decisions.all(),  # ... and of a lean DecisionWorkflow's wake
        ],
        **worker_tuning(settings),
        **worker_versioning_options(settings),
    )
    log.info(
        "trading worker on %s (queue %s, %s)",
        settings.temporal_address,
        settings.trading_task_queue,
        describe(settings),
    )
    try:
        async with worker:
            version = deployment_version(settings)
            if version and await current_build(client, version.deployment_name) != version.build_id:
                log.warning(
                    "build %s is not current and runs nothing until: %s",
                    version.build_id,
                    rollout_hint(settings, settings.temporal_address),
                )
            owner = asyncio.create_task(
                own_account(client, settings, stop, paper_of(activities), exchange_of(activities)),
                name="account",
            )
            reconciler = asyncio.create_task(
                _reconcile_later(client, settings, activities, stop), name="reconcile"
            )
            # a stalled loop is logged: tasks would wait at the server with no metric saying why
            loop_watch = asyncio.create_task(LoopWatch().watch(stop), name="loop-watch")
            try:
                await stop.wait()
            finally:
                for task in (owner, reconciler, loop_watch):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
    finally:
        sender.close()
        board.board.close()
        sheets.board.close()
        if activities.family is not None:
            activities.family.close()
        await llm.aclose()
        await activities.broker.close()


async def _reconcile_later(
    client: Client, settings: Settings, activities: TradingActivities, stop: asyncio.Event
) -> None:
    """Reconcile once the account is up, then every ``OCW_RECONCILE_EVERY_S`` (testnet and
    live; a paper broker fills at once and is checked by hand with ``ocw reconcile``)."""
    if settings.mode not in ("testnet", "live"):
        return
    try:
        await asyncio.wait_for(stop.wait(), RECONCILE_FIRST_S)
        return
    except TimeoutError:
        await reconcile_forever(client, settings, activities.broker, stop, activities.journal)


def worker_tuning(settings: Settings) -> dict[str, object]:
    """The trading worker's cache, slots and sticky timeout, from the settings."""
    options: dict[str, object] = {
        "max_concurrent_activities": settings.worker_max_concurrent_activities,
        "max_cached_workflows": settings.worker_max_cached_workflows,
        "sticky_queue_schedule_to_start_timeout": timedelta(
            seconds=settings.sticky_schedule_to_start_s
        ),
    }
    if settings.worker_max_concurrent_workflow_tasks:
        options["max_concurrent_workflow_tasks"] = settings.worker_max_concurrent_workflow_tasks
    if settings.worker_max_concurrent_workflow_task_polls:
        options["max_concurrent_workflow_task_polls"] = (
            settings.worker_max_concurrent_workflow_task_polls
        )
    return options


def paper_of(activities: TradingActivities) -> PaperBroker | None:
    """The paper broker behind the activities (the account is seeded from its books)."""
    venue = activities.broker
    return venue.paper if isinstance(venue, PaperVenue) else None


def exchange_of(activities: TradingActivities) -> ExchangeBroker | None:
    venue = activities.broker
    return venue if isinstance(venue, ExchangeBroker) else None


OWN_RETRY_FIRST_S = 2.0  # an account whose set-up failed (exchange down, bad key) is retried
OWN_RETRY_MAX_S = 60.0


async def own_account(
    client: Client,
    settings: Settings,
    stop: asyncio.Event,
    broker: PaperBroker | None = None,
    exchange: ExchangeBroker | None = None,
) -> None:
    """The trading side owns the account: start its DecisionWorkflow when it has never run,
    then hand it this worker's configuration (a validated update). A closed account is never
    replaced here; the worker still serves its positions and says what to do."""
    attempt = 0
    while True:
        try:
            state = await ensure_account(client, settings, broker, exchange)
            break
        except SetupError as err:
            log.error("%s", err)
            return
        except Exception as err:  # noqa: BLE001 - an exchange or server error: said, retried
            attempt += 1
            wait_s = min(OWN_RETRY_MAX_S, OWN_RETRY_FIRST_S * 2 ** (attempt - 1))
            log.error(
                "account %s not set up (attempt %d): %s: %s; trying again in %.0f s",
                settings.account,
                attempt,
                type(err).__name__,
                err,
                wait_s,
            )
            try:
                await asyncio.wait_for(stop.wait(), wait_s)
                return
            except TimeoutError:
                continue
    if state.created:
        log.info("account %s created (%s)", settings.account, state.workflow_id)
    try:
        await ensure_monitor(client, settings)
    except Exception as err:  # noqa: BLE001 - the account trades without its monitor
        log.error("monitor of %s not started: %s", settings.account, err)
    await configure_when_ready(client, settings, stop)
