"""Lockstep replay: the replay's clock waits for the engine after every base bar.

A replay is paced by the wall clock, so on a slow or loaded machine the feed can move on while a
decision cycle still runs, and the cycle then decides on a later view than the candle's close
(the parity test saw this on a loaded CI machine). With ``ocw listen --replay ... --lockstep``
the replay server calls :meth:`Lockstep.hold` after each base bar's closed frames; it returns
once the listener has read those frames, every wake they caused has been delivered, and each
woken account is idle again (no queued wake, no cycle running, no exit waiting for its fill).
The replay's timeline resumes where it paused, so the result no longer depends on how fast the
machine is, only on the market data.

A hold never blocks forever: after ``timeout_s`` of wall time it logs what it was still waiting
for and lets the replay go on (a stopped worker must not freeze the listener).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from signals.wake_dispatcher import WakeDispatcher

log = logging.getLogger(__name__)

AccountIdle = Callable[[str], Awaitable[bool]]


@dataclass
class LockstepStats:
    holds: int = 0
    waits: int = 0  # holds that waited for an account's cycle
    timeouts: int = 0
    held_s: float = 0.0  # wall time the replay spent paused


@dataclass
class Lockstep:
    """What one hold waits for; ``seen`` is the listener's last event time per stream."""

    seen: dict[tuple[str, str], int]
    dispatchers: Sequence[WakeDispatcher]
    account_idle: AccountIdle
    timeout_s: float = 60.0
    poll_s: float = 0.01
    max_query_poll_s: float = 0.1
    stats: LockstepStats = field(default_factory=LockstepStats)
    _sent: dict[str, int] = field(default_factory=dict)

    async def hold(self, event_ms: int, streams: frozenset[tuple[str, str]]) -> None:
        """Wait until the engine has acted on everything the frames of ``event_ms`` caused."""
        started = time.monotonic()
        deadline = started + self.timeout_s
        self.stats.holds += 1
        waiting = "the listener to read the frames"
        try:
            while any(self.seen.get(key, -1) < event_ms for key in streams):
                await self._pause(deadline, waiting, self.poll_s)
            waiting = "the wakes to be delivered"
            while not all(d.idle() for d in self.dispatchers):
                await self._pause(deadline, waiting, self.poll_s)
            woken = [
                d.workflow_id
                for d in self.dispatchers
                if d.sent != self._sent.get(d.workflow_id, 0)
            ]
            if woken:
                self.stats.waits += 1
            for workflow_id in woken:
                waiting = f"{workflow_id} to finish its cycle"
                pause = self.poll_s
                while not await self._idle(workflow_id):
                    # a query waits behind the workflow's task: poll a busy account gently,
                    # or the server's consistent-query buffer fills (seen at 10 ms on 2 cores)
                    await self._pause(deadline, waiting, pause)
                    pause = min(pause * 2, self.max_query_poll_s)
        except TimeoutError:
            self.stats.timeouts += 1
            log.warning(
                "lockstep: still waiting for %s after %.0fs at market time %d; the replay goes on",
                waiting,
                self.timeout_s,
                event_ms,
            )
        finally:
            for d in self.dispatchers:
                self._sent[d.workflow_id] = d.sent
            self.stats.held_s += time.monotonic() - started

    async def _idle(self, workflow_id: str) -> bool:
        try:
            return await self.account_idle(workflow_id)
        except Exception as err:  # noqa: BLE001 - Temporal away: ask again until the deadline
            log.debug("lockstep: %s not readable (%s)", workflow_id, err)
            return False

    async def _pause(self, deadline: float, waiting: str, pause: float) -> None:
        if time.monotonic() >= deadline:
            raise TimeoutError(waiting)
        await asyncio.sleep(pause)
