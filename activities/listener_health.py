"""The listener's ``listener_health`` activity: its live status, for the monitor.

Served by the listener's own worker on the market task queue, so an answer proves the
listener process is up and polling; the status is built from its memory at the moment of the
call (the same counters ``ocw status`` shows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from workflows.activity_api import LISTENER_HEALTH


class ListenerHealthActivities:
    def __init__(self, collect: Callable[[], Any]) -> None:
        self._collect = collect  # -> signals.listener_status.ListenerStatus

    def all(self) -> list:
        return [self.listener_health]

    @activity.defn(name=LISTENER_HEALTH)
    async def listener_health(self) -> dict[str, Any]:
        return self._collect().model_dump(mode="json")
