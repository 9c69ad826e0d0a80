"""GC pauses of a worker process: every collection timed, long ones logged."""

from __future__ import annotations

import copy
import gc
import logging

from workers.gc_watch import GcWatch


def test_every_collection_is_timed_and_a_long_pause_is_logged(caplog):
    watch = GcWatch(log_above_s=0.0).install()  # every pause counts as long here
    try:
        with caplog.at_level(logging.WARNING, logger="workers.gc_watch"):
            gc.collect(0)
            gc.collect(2)
    finally:
        watch.remove()
    s = watch.stats
    assert s.collections[0] >= 1 and s.collections[2] >= 1
    assert s.seconds[2] > 0 and s.max_s[2] <= s.seconds[2]
    assert s.long_pauses >= 2
    assert "gc: generation 2 collection paused the process" in caplog.text
    assert watch not in gc.callbacks  # removed: no cost left behind
    before = copy.deepcopy(s)
    gc.collect()
    assert watch.stats == before


def test_short_pauses_are_counted_not_logged(caplog):
    watch = GcWatch(log_above_s=60.0).install()
    try:
        with caplog.at_level(logging.WARNING, logger="workers.gc_watch"):
            gc.collect(1)
    finally:
        watch.remove()
    assert watch.stats.collections[1] >= 1 and watch.stats.long_pauses == 0
    assert caplog.text == ""
