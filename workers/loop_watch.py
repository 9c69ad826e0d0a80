"""Event-loop stalls of a worker process, measured and logged.

Every workflow task, activity heartbeat and poll of the trading worker goes through one asyncio
loop (workflow code runs in threads, under the same GIL). When the loop cannot run for seconds,
tasks wait at the server and the safety ticks lag, but no Temporal metric says the worker was
the one stuck. ``LoopWatch`` sleeps a short beat and measures how late it woke: a delay above
``log_above_s`` is logged with when it began and how long it lasted, and the worst ones stay in
``LoopWatch.stats`` for whoever holds the watch (a test, a bench reading the log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class LoopStats:
    beats: int = 0
    stalls: int = 0  # wake-ups later than log_above_s
    max_s: float = 0.0


class LoopWatch:
    """Run ``watch(stop)`` as a task on the loop to watch; it returns when ``stop`` is set."""

    def __init__(self, beat_s: float = 0.1, log_above_s: float = 0.5) -> None:
        if beat_s <= 0 or log_above_s <= 0:
            raise ValueError("beat_s and log_above_s must be positive")
        self.beat_s = beat_s
        self.log_above_s = log_above_s
        self.stats = LoopStats()

    def observe(self, slept_from: float, woke_at: float, wall_now: float) -> float:
        """Account one beat (monotonic times) and return how late it woke."""
        late = max(0.0, woke_at - slept_from - self.beat_s)
        s = self.stats
        s.beats += 1
        s.max_s = max(s.max_s, late)
        if late >= self.log_above_s:
            s.stalls += 1
            log.warning(
                "event loop: blocked %.2f s (from %.3f to %.3f unix time)",
                late,
                wall_now - late,
                wall_now,
            )
        return late

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(self.beat_s)
            self.observe(before, time.monotonic(), time.time())
