"""Event-loop stalls of a worker: a blocked loop is measured and logged, a free one is not."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from workers.loop_watch import LoopWatch


async def test_a_blocked_loop_is_logged_with_how_long_and_when(caplog):
    watch = LoopWatch(beat_s=0.02, log_above_s=0.2)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="workers.loop_watch"):
        task = asyncio.create_task(watch.watch(stop))
        await asyncio.sleep(0.1)
        time.sleep(0.4)  # the loop cannot run: a stall of about 0.4 s
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 1.0)
    s = watch.stats
    assert s.stalls == 1 and 0.3 <= s.max_s < 1.0
    assert s.beats >= 5
    assert re.search(r"event loop: blocked 0\.\d\d s \(from \d+\.\d{3} to", caplog.text)


async def test_a_free_loop_logs_nothing(caplog):
    watch = LoopWatch(beat_s=0.01, log_above_s=0.5)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="workers.loop_watch"):
        task = asyncio.create_task(watch.watch(stop))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 1.0)
    assert watch.stats.stalls == 0 and watch.stats.beats >= 5
    assert caplog.text == ""


def test_observe_reports_the_delay_past_the_beat():
    watch = LoopWatch(beat_s=0.1, log_above_s=1.0)
    assert watch.observe(10.0, 10.1, 0.0) == pytest.approx(0.0)
    assert watch.observe(10.0, 12.6, 0.0) == pytest.approx(2.5)
    assert watch.stats.stalls == 1 and watch.stats.max_s == pytest.approx(2.5)
    with pytest.raises(ValueError):
        LoopWatch(beat_s=0)
