"""The listener watches the trading worker: the one alert the monitor cannot send.

The monitor runs on the trading worker, so when that worker dies nothing of it runs. The
listener therefore asks Temporal who polls the trading task queue; a queue nobody polled for
``gone_after_s`` means the worker is gone. Temporal holds a poll open for about a minute, so
an idle, live worker shows a last access up to ~70 s old: the threshold stays above that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

log = logging.getLogger(__name__)

MIN_GONE_AFTER_S = 75.0

OnChange = Callable[[str, str, dict[str, object]], Awaitable[None]]  # change, key, detail


async def last_poll_age_s(client: Client, task_queue: str) -> float | None:
    """Seconds since any worker last polled ``task_queue`` for workflow tasks (None: never)."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=timedelta(seconds=10),
    )
    now = time.time()
    ages = [now - p.last_access_time.ToSeconds() for p in resp.pollers]
    return max(0.0, min(ages)) if ages else None


class WorkerWatch:
    def __init__(
        self,
        client: Client,
        task_queue: str,
        every_s: float,
        on_change: OnChange,
        gone_after_s: float | None = None,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.every_s = every_s
        self.on_change = on_change
        self.gone_after_s = max(MIN_GONE_AFTER_S, gone_after_s or 2 * every_s)
        self.state = "unknown"  # up | gone | unknown
        self.gone_since_ms: int | None = None
        self.last_poll_age_s: float | None = None
        self.errors = 0
        self.started = time.monotonic()  # a worker starting beside the listener gets time

    async def check_once(self) -> str:
        try:
            age = await last_poll_age_s(self.client, self.task_queue)
        except Exception as err:  # noqa: BLE001 - Temporal itself unreachable: say nothing new
            self.errors += 1
            log.warning("cannot ask Temporal about %s: %s", self.task_queue, err)
            return self.state
        self.last_poll_age_s = age
        alive = age is not None and age <= self.gone_after_s
        now_ms = int(time.time() * 1000)
        if not alive and time.monotonic() - self.started < self.gone_after_s:
            return self.state  # too early to call a worker that may still be starting gone
        if alive and self.state == "gone":
            await self._tell("worker_back", f"worker_back:{self.gone_since_ms}", {})
            self.gone_since_ms = None
        elif not alive and self.state != "gone":
            self.gone_since_ms = now_ms
            polled = "never polled" if age is None else f"last polled {age:.0f} s ago"
            await self._tell(
                "worker_gone",
                f"worker_gone:{now_ms}",
                {"task_queue": self.task_queue, "detail": polled},
            )
        self.state = "up" if alive else "gone"
        return self.state

    async def _tell(self, change: str, key: str, detail: dict[str, object]) -> None:
        try:
            await self.on_change(change, key, detail)
        except Exception as err:  # noqa: BLE001 - an alert never stops the listener
            log.warning("%s alert not sent: %s", change, err)

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.every_s)

    def status(self) -> dict[str, object]:
        return {
            "state": self.state,
            "task_queue": self.task_queue,
            "last_poll_age_s": None
            if self.last_poll_age_s is None
            else round(self.last_poll_age_s, 1),
            "gone_since_ms": self.gone_since_ms,
        }
