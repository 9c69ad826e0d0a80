"""The worker's side of the monitor: start it beside the account, read its health."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from trading.config import Settings
from trading.monitor import MonitorHealth, MonitorInput
from workflows.monitor import MonitorWorkflow, monitor_workflow_id

log = logging.getLogger(__name__)


def monitor_input(settings: Settings) -> MonitorInput:
    return MonitorInput(
        account=settings.account,
        decision_workflow_id=settings.decision_workflow_id,
        market_task_queue=settings.market_task_queue,
        every_s=settings.monitor_every_s,
    )


async def ensure_monitor(client: Client, settings: Settings) -> None:
    """Start the account's MonitorWorkflow unless it runs. A monitor that ended (terminated
    by hand) is started afresh: it holds no books, only what it last saw."""
    await client.start_workflow(
        MonitorWorkflow.run,
        monitor_input(settings),
        id=monitor_workflow_id(settings.account),
        task_queue=settings.trading_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"OCW monitor of {settings.account}: listener health and alerts",
    )
    log.info("monitor of %s running (%s)", settings.account, monitor_workflow_id(settings.account))


async def monitor_health(client: Client, settings: Settings) -> MonitorHealth:
    """The monitor's last health check (raises when no monitor runs)."""
    handle = client.get_workflow_handle(monitor_workflow_id(settings.account))
    return await handle.query(MonitorWorkflow.health, rpc_timeout=timedelta(seconds=10))
