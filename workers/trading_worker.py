"""The trading worker: DecisionWorkflow, PositionWorkflow and their activities."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.worker import Worker

from activities.journal import Journal
from activities.learner_store import LearnerActivities
from activities.llm_agent import LLMActivities, LLMConfig
from activities.llm_cache import LLMStore
from activities.paper_broker import PaperBroker
from activities.regimes import RegimeActivities
from activities.trading import TradingActivities
from trading.config import Settings
from workers.temporal_env import SetupError, connect
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

log = logging.getLogger(__name__)


def build_activities(settings: Settings, client: Client) -> TradingActivities:
    if settings.mode == "live":
        raise SetupError(
            "live mode needs the exchange broker, which is not built yet: use OCW_MODE=paper"
        )
    paths = settings.paths()
    broker = PaperBroker(
        paths["broker_db"],
        initial_cash=settings.initial_cash,
        fee_rate=settings.fee_rate,
        slippage_bps=settings.slippage_bps,
    )
    return TradingActivities(broker, Journal(paths["journal_db"]), client)


async def run_trading_worker(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect(settings, attempts=30)
    activities = build_activities(settings, client)
    llm = LLMActivities(LLMConfig.from_settings(settings), LLMStore(settings.paths()["llm_db"]))
    regimes = RegimeActivities.from_settings(settings)
    learner = LearnerActivities.from_settings(settings)
    worker = Worker(
        client,
        task_queue=settings.trading_task_queue,
        workflows=[DecisionWorkflow, PositionWorkflow],
        activities=[
            *activities.all(),
            *llm.all(),
            regimes.macro_regime,  # the crypto regime is fitted by the listener, beside its bars
            *learner.all(),
        ],
        max_concurrent_activities=20,
    )
    log.info(
        "trading worker on %s (queue %s)", settings.temporal_address, settings.trading_task_queue
    )
    try:
        async with worker:
            await stop.wait()
    finally:
        await llm.aclose()
