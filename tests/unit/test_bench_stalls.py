"""The load bench's stall finder: waits merged into stalls, CPU and log marks read beside them."""

from __future__ import annotations

import math

import pytest

from bench._harness import Ev
from bench._stalls import (
    Sample,
    Span,
    Timeline,
    machine_busy_s,
    machine_steal_s,
    merge_spans,
    stall_rows,
    task_wait_spans,
    worker_marks,
)


def test_only_long_waits_started_in_the_window_are_spans():
    events = [
        Ev(1, "WorkflowTaskScheduled", 100.0),
        Ev(2, "WorkflowTaskStarted", 100.01, {"scheduled": 1}),  # short
        Ev(5, "WorkflowTaskScheduled", 130.0),
        Ev(6, "WorkflowTaskStarted", 133.5, {"scheduled": 5}),  # 3.5 s
        Ev(9, "WorkflowTaskScheduled", 190.0),
        Ev(10, "WorkflowTaskStarted", 202.0, {"scheduled": 9}),  # after the window
    ]
    assert task_wait_spans(events, 100.0, 200.0, 1.0) == [Span(130.0, 133.5, 1, 3.5)]


def test_overlapping_spans_merge_into_one_stall_and_apart_ones_do_not():
    spans = [Span(10, 12, 1, 2), Span(11, 15, 1, 4), Span(14.5, 15.5, 1, 1), Span(30, 31, 1, 1)]
    assert merge_spans(spans) == [Span(10, 15.5, 3, 4), Span(30, 31, 1, 1)]
    assert merge_spans([Span(1, 2, 1, 1), Span(2.4, 3, 1, 0.6)], gap_s=0.5) == [Span(1, 3, 2, 1)]
    assert merge_spans([]) == []


def test_machine_busy_counts_everything_but_idle_iowait_and_steal():
    stat = "cpu  100 5 50 1000 20 3 2 40 0 0\ncpu0 1 2 3 4\n"
    assert machine_busy_s(stat, 100) == pytest.approx((100 + 5 + 50 + 3 + 2) / 100)
    assert machine_steal_s(stat, 100) == pytest.approx(0.4)


def test_usage_and_rows_read_the_samples_around_a_stall():
    tl = Timeline({"worker": 1, "server": 2}, client=None)
    # the server burns a whole core from t=10 to t=12, the worker a tenth
    tl.samples = [
        Sample(8.0, {"worker": 0.0, "server": 0.0}, 0.0, 0.001),
        Sample(10.0, {"worker": 0.1, "server": 0.2}, 0.4, 0.002),
        Sample(11.0, {"worker": 0.2, "server": 1.2}, 1.6, 0.900),
        Sample(12.0, {"worker": 0.3, "server": 2.2}, 2.8, 0.003),
    ]
    cpu, busy, probe = tl.usage(10.5, 11.5)
    assert cpu["server"] == pytest.approx(100.0) and cpu["worker"] == pytest.approx(10.0)
    assert busy == pytest.approx(120.0) and probe == pytest.approx(0.9)
    nothing, busy_after, _ = tl.usage(50.0, 60.0)  # after the last sample: nothing to say
    assert nothing == {} and math.isnan(busy_after)
    marks = worker_marks(
        "2026-12-03 13:00:00,500 WARNING workers.loop_watch: event loop: blocked 1.20 s "
        "(from 10.800 to 12.000 unix time)\n"
        "2026-12-03 13:00:01,000 INFO something else\n"
    )
    assert len(marks) == 1 and marks[0].start == pytest.approx(10.8)
    rows = stall_rows([Span(10.5, 11.5, 4, 1.0)], tl, marks, t0=8.0, lead_s=2.0)
    assert rows[0][:4] == ("+2.5", "1.0", "4", "1.00")
    assert rows[0][4].startswith("10/100/") and rows[0][8] == "900"
    assert rows[0][7] == "0 (0)"  # no CPU stolen by the hypervisor
    assert rows[0][9] == "loop blocked 1.20 s"


def test_a_long_gc_line_becomes_the_span_it_paused():
    marks = worker_marks(
        "2026-12-03 13:00:02,000 WARNING workers.gc_watch: gc: generation 2 collection paused "
        "the process 0.40 s (500 objects tracked, 3 collected)\n"
    )
    assert len(marks) == 1
    assert marks[0].end - marks[0].start == pytest.approx(0.4)
    assert marks[0].text.startswith("WARNING workers.gc_watch: gc: generation 2")
