"""Garbage-collector pauses of a worker process, measured and logged.

A trading worker holding thousands of cached workflows has millions of live Python objects, and
a full (generation 2) collection walks all of them while every workflow task waits: a pause of
seconds would show up as safety-tick lag without any Temporal metric pointing at it. This module
times every collection through ``gc.callbacks``; a pause above ``log_above_s`` is logged with
its generation and the objects it walked (counted only then: listing them costs), and the
per-generation counts and times stay in ``GcWatch.stats`` for whoever holds the watch.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class GcStats:
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    max_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    long_pauses: int = 0


class GcWatch:
    """Times each collection; install once per process (``install``), remove with ``remove``."""

    def __init__(self, log_above_s: float = 0.25) -> None:
        self.log_above_s = log_above_s
        self.stats = GcStats()
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        gen = int(info.get("generation", 0))
        s = self.stats
        s.collections[gen] += 1
        s.seconds[gen] += took
        s.max_s[gen] = max(s.max_s[gen], took)
        if took >= self.log_above_s:
            s.long_pauses += 1
            log.warning(
                "gc: generation %d collection paused the process %.2f s (%d objects tracked, "
                "%d collected)",
                gen,
                took,
                len(gc.get_objects(generation=2)) if gen == 2 else -1,
                int(info.get("collected", 0)),
            )

    def install(self) -> GcWatch:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
