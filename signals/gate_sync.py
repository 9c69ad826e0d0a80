"""Keeps the gate's agent settings (timer, wake conditions) in step with the DecisionWorkflow.

The DecisionWorkflow owns them (durable, versioned ``GateSettings``); the listener reads them
with the workflow's ``gate`` query and never signals the workflow for it. The settings only
change when a decision cycle ends, and cycles only start on a wake, so the sync follows each
wake it is told about (``poke``) with a few quick reads until the version moves, and otherwise
polls slowly in case the settings changed another way (a manual wake, a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.client import Client

from signals.gate import Gate
from trading.state import GateSettings

log = logging.getLogger(__name__)

GATE_QUERY = "gate"
# after a wake: a decision takes from well under a second (rule policy) to a minute (LLM)
FOLLOW_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


@dataclass
class SyncStats:
    queries: int = 0
    applied: int = 0
    failures: int = 0
    version: int | None = None
    last_error: str = ""


class GateSync:
    def __init__(
        self,
        client: Client,
        workflow_id: str,
        gate: Gate,
        poll_s: float = 30.0,
        follow_delays_s: Sequence[float] = FOLLOW_DELAYS_S,
    ) -> None:
        if poll_s <= 0:
            raise ValueError("poll_s must be > 0")
        self.client = client
        self.workflow_id = workflow_id
        self.gate = gate
        self.poll_s = poll_s
        self.follow_delays_s = tuple(follow_delays_s)
        self.stats = SyncStats()
        self._poked = asyncio.Event()

    def poke(self, *_: object) -> None:
        """A wake was sent: the settings are likely to change soon (fits ``on_sent``)."""
        self._poked.set()

    async def refresh(self) -> bool:
        """Read the settings once; True when a new version was applied. Never raises."""
        self.stats.queries += 1
        try:
            handle = self.client.get_workflow_handle(self.workflow_id)
            settings = await handle.query(GATE_QUERY, result_type=GateSettings)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the gate keeps its last settings
            self.stats.failures += 1
            self.stats.last_error = f"{type(err).__name__}: {err}"[:300]
            if self.stats.failures <= 5 or self.stats.failures % 100 == 0:
                log.warning("gate settings not read (%s)", self.stats.last_error)
            return False
        self.stats.version = settings.version
        if not self.gate.apply_settings(settings):
            return False
        self.stats.applied += 1
        log.info(
            "gate settings v%d: next_check_seconds=%s, %d wake conditions",
            settings.version,
            settings.next_check_seconds,
            len(settings.wake_conditions),
        )
        return True

    async def run(self) -> None:
        """Read now, then after every poke and every ``poll_s``; runs until cancelled."""
        await self.refresh()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), timeout=self.poll_s)
            if not self._poked.is_set():
                await self.refresh()
                continue
            self._poked.clear()
            before = self.stats.version
            for delay in self.follow_delays_s:
                await asyncio.sleep(delay)
                await self.refresh()
                if self.stats.version != before or self._poked.is_set():
                    break  # moved on, or another wake went out: follow that one
