"""The pure parts of bench/_harness.py: statistics, Prometheus text, /proc text, histories."""

from __future__ import annotations

import math

import pytest

from bench._harness import (
    WORKER_FLAGS,
    Ev,
    Stats,
    _kind,
    bucket_delta,
    buckets,
    count_events,
    cycle_of,
    histogram_quantile,
    parse_prometheus,
    parse_stat_cpu,
    parse_status_kb,
    percentile,
    safety_checks,
    sample_ids,
    task_waits,
    total,
    worker_overrides,
)

PROM = """\
# HELP temporal_sticky_cache_hit_total Count
# TYPE temporal_sticky_cache_hit_total counter
temporal_sticky_cache_hit_total{task_queue="ocw-trading",workflow_type="PositionWorkflow"} 40
temporal_sticky_cache_hit_total{task_queue="ocw-trading",workflow_type="DecisionWorkflow"} 2
lat_bucket{task_queue="a",le="0.1"} 5
lat_bucket{task_queue="a",le="0.5"} 9
lat_bucket{task_queue="a",le="+Inf"} 10
lat_bucket{task_queue="b",le="0.1"} 5
lat_bucket{task_queue="b",le="0.5"} 5
lat_bucket{task_queue="b",le="+Inf"} 10
weird{msg="a \\"quoted\\", comma",op="TimerActiveTaskUserTimer"} 3.5
plain 7
"""


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 301))
    assert percentile(values, 0.99) == 297
    assert percentile(values, 0.5) == 150
    assert percentile([4.0], 0.99) == 4.0
    assert math.isnan(percentile([], 0.5))
    s = Stats.of([3.0, 1.0, 2.0, math.nan])
    assert (s.n, s.p50, s.max) == (3, 2.0, 3.0)
    assert Stats.of([]).n == 0


def test_prometheus_text_is_parsed_with_labels() -> None:
    samples = parse_prometheus(PROM)
    assert total(samples, "temporal_sticky_cache_hit_total") == 42
    assert (
        total(samples, "temporal_sticky_cache_hit_total", {"workflow_type": "DecisionWorkflow"})
        == 2
    )
    assert total(samples, "missing") == 0
    assert total(samples, "plain") == 7
    ((labels, value),) = samples["weird"]
    assert labels == {"msg": 'a "quoted", comma', "op": "TimerActiveTaskUserTimer"}
    assert value == 3.5
    assert total(samples, "weird", {"op": lambda op: "Timer" in op}) == 3.5


def test_histogram_buckets_sum_series_and_interpolate() -> None:
    samples = parse_prometheus(PROM)
    cum = buckets(samples, "lat")
    assert cum == [(0.1, 10.0), (0.5, 14.0), (math.inf, 20.0)]
    assert buckets(samples, "lat", {"task_queue": "a"}) == [
        (0.1, 5.0),
        (0.5, 9.0),
        (math.inf, 10.0),
    ]
    est, lo, hi = histogram_quantile(cum, 0.5)  # rank 10: the top of the first bucket
    assert (est, lo, hi) == pytest.approx((0.1, 0.0, 0.1))
    est, lo, hi = histogram_quantile(cum, 0.6)  # rank 12: half way into (0.1, 0.5]
    assert (est, lo, hi) == pytest.approx((0.3, 0.1, 0.5))
    est, lo, hi = histogram_quantile(cum, 0.99)  # in +Inf: the last finite bound
    assert (est, lo, hi) == (0.5, 0.5, 0.5)
    assert math.isnan(histogram_quantile([], 0.5)[0])
    before = [(0.1, 4.0), (0.5, 4.0), (math.inf, 4.0)]
    assert bucket_delta(cum, before) == [(0.1, 6.0), (0.5, 10.0), (math.inf, 16.0)]
    assert bucket_delta(cum, []) == cum


def test_proc_text() -> None:
    # the command name may hold spaces and parentheses
    stat = "1234 (python (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1"
    assert parse_stat_cpu(stat, 100) == pytest.approx(3.0)
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert parse_status_kb(status, "VmRSS") == 102400
    assert parse_status_kb(status, "VmHWM") == 204800
    assert parse_status_kb(status, "VmSwap") == 0


def test_event_kind_names() -> None:
    assert _kind("EVENT_TYPE_TIMER_FIRED") == "TimerFired"
    assert _kind("EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED") == "WorkflowExecutionSignaled"


def _position_history() -> list[Ev]:
    """Start, then two safety checks: the second one 30.8 s after the first, woken by a 30 s
    timer that fired 0.5 s late, its workflow task waiting 0.2 s."""
    e = [
        Ev(1, "WorkflowExecutionStarted", 100.0),
        Ev(2, "WorkflowTaskScheduled", 100.0),
        Ev(3, "WorkflowTaskStarted", 100.01, {"scheduled": 2}),
        Ev(4, "WorkflowTaskCompleted", 100.02, {"scheduled": 2, "started": 3}),
        Ev(5, "TimerStarted", 100.02, {"duration": 29.99, "timer": "1"}),
        Ev(6, "TimerFired", 130.01, {"started": 5}),
        Ev(7, "WorkflowTaskScheduled", 130.01),
        Ev(8, "WorkflowTaskStarted", 130.02, {"scheduled": 7}),
        Ev(9, "WorkflowTaskCompleted", 130.03, {"scheduled": 7, "started": 8}),
        Ev(10, "ActivityTaskScheduled", 130.03, {"name": "market_prices", "wft": 9}),
        Ev(11, "ActivityTaskStarted", 130.04, {"scheduled": 10}),
        Ev(12, "ActivityTaskCompleted", 130.05, {"scheduled": 10}),
        Ev(13, "WorkflowTaskScheduled", 130.05),
        Ev(14, "WorkflowTaskStarted", 130.06, {"scheduled": 13}),
        Ev(15, "WorkflowTaskCompleted", 130.07, {"scheduled": 13, "started": 14}),
        Ev(16, "TimerStarted", 130.07, {"duration": 29.96, "timer": "2"}),
        Ev(17, "TimerFired", 160.53, {"started": 16}),
        Ev(18, "WorkflowTaskScheduled", 160.62),
        Ev(19, "WorkflowTaskStarted", 160.82, {"scheduled": 18}),
        Ev(20, "WorkflowTaskCompleted", 160.83, {"scheduled": 18, "started": 19}),
        Ev(21, "ActivityTaskScheduled", 160.83, {"name": "market_prices", "wft": 20}),
        Ev(22, "ActivityTaskScheduled", 160.83, {"name": "market_view", "wft": 20}),
    ]
    return e


def test_safety_checks_from_a_position_history() -> None:
    checks = safety_checks(_position_history())
    assert len(checks) == 2
    first, second = checks
    assert first.interval_s is None
    assert first.timer_late_s == pytest.approx(0.0)
    assert second.interval_s == pytest.approx(30.8)  # a lag of 0.8 s against 30 s
    assert second.timer_late_s == pytest.approx(160.53 - (130.07 + 29.96))
    assert second.task_wait_s == pytest.approx(0.2)
    assert second.timer_s == pytest.approx(29.96)
    assert task_waits(_position_history(), 130.0, 200.0) == pytest.approx([0.01, 0.01, 0.2])


def test_counting_a_window_of_history() -> None:
    c = count_events(_position_history(), 130.0, 161.0)
    assert c.events == 17
    assert (c.workflow_tasks, c.activities, c.timers) == (3, 3, 1)
    assert c.task_timeouts == c.task_failures == 0


def _decision_history() -> list[Ev]:
    names = ["market_view", "market_context", "decide", "place_order", "start_position"]
    ev = [
        Ev(1, "WorkflowExecutionSignaled", 10.002, {"name": "wake", "input": {"reason": "other"}}),
        Ev(2, "WorkflowExecutionSignaled", 20.002, {"name": "wake", "input": {"reason": "b:1"}}),
        Ev(3, "WorkflowTaskScheduled", 20.002),
        Ev(4, "WorkflowTaskStarted", 20.005, {"scheduled": 3}),
        Ev(5, "WorkflowTaskCompleted", 20.007, {"scheduled": 3, "started": 4}),
    ]
    t, i = 20.007, 6
    for name in [*names, "journal_decision"]:
        ev.append(Ev(i, "ActivityTaskScheduled", t, {"name": name, "wft": i - 1}))
        ev.append(Ev(i + 1, "ActivityTaskStarted", t + 0.004, {"scheduled": i}))
        ev.append(Ev(i + 2, "ActivityTaskCompleted", t + 0.010, {"scheduled": i}))
        ev.append(Ev(i + 3, "WorkflowTaskScheduled", t + 0.010))
        ev.append(Ev(i + 4, "WorkflowTaskStarted", t + 0.012, {"scheduled": i + 3}))
        ev.append(
            Ev(i + 5, "WorkflowTaskCompleted", t + 0.014, {"scheduled": i + 3, "started": i + 4})
        )
        t, i = t + 0.014, i + 6
    # the next cycle's first activity must not count
    ev.append(Ev(i, "ActivityTaskScheduled", t + 5, {"name": "market_view", "wft": i - 1}))
    return ev


def test_the_stages_of_a_decision_cycle() -> None:
    events = _decision_history()
    cyc = cycle_of(events, "b:1", sent=20.0)
    assert cyc is not None
    labels = [label for label, _ in cyc.stages]
    assert labels == [
        "signal",
        "workflow task",
        "market view",
        "context",
        "decide",
        "risk",
        "order",
        "start position",
    ]
    stages = dict(cyc.stages)
    assert stages["signal"] == pytest.approx(0.002)
    assert stages["workflow task"] == pytest.approx(0.003)
    assert stages["market view"] == pytest.approx(0.012)  # task done + schedule + queue + run
    assert stages["risk"] == pytest.approx(0.004)  # decide done -> order scheduled
    assert stages["order"] == pytest.approx(0.010)
    done = cyc.done("start_position")
    assert done is not None
    assert sum(stages.values()) == pytest.approx(done - 20.0)  # the stages add up
    assert cyc.parts["market_view"] == pytest.approx((0.004, 0.006))
    assert [a[0] for a in cyc.activities][-1] == "journal_decision"
    assert cycle_of(events, "missing", sent=0.0) is None


def test_sample_ids_spread_over_all() -> None:
    ids = [f"p{i}" for i in range(100)]
    assert sample_ids(ids, 4) == ["p0", "p25", "p50", "p75"]
    assert sample_ids(ids, 0) == ids
    assert sample_ids(ids[:3], 50) == ids[:3]


def test_worker_overrides_name_real_settings() -> None:
    env = worker_overrides(cache=4000, slots=200, activities=50)
    assert env == {
        "OCW_WORKER_MAX_CACHED_WORKFLOWS": "4000",
        "OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "200",
        "OCW_WORKER_MAX_CONCURRENT_ACTIVITIES": "50",
    }
    assert worker_overrides(extra=["OCW_STICKY_SCHEDULE_TO_START_S=8"]) == {
        "OCW_STICKY_SCHEDULE_TO_START_S": "8"
    }
    with pytest.raises(SystemExit, match="not a setting"):
        worker_overrides(extra=["OCW_NO_SUCH_THING=1"])
    with pytest.raises(SystemExit, match="OCW_NAME=value"):
        worker_overrides(extra=["cache=1"])
    # every bench flag sets a setting the worker really reads
    from trading.config import Settings

    assert worker_overrides(pollers=10) == {"OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASK_POLLS": "10"}
    for env_name in WORKER_FLAGS.values():
        assert env_name[4:].lower() in Settings.model_fields, env_name


def test_a_local_decide_is_a_stage_of_its_own_and_leaves_no_risk_gap() -> None:
    """A lean engine's decide is a marker in the task that also schedules the order."""
    ev = [
        Ev(1, "WorkflowExecutionSignaled", 20.002, {"name": "wake", "input": {"reason": "b:1"}}),
        Ev(2, "WorkflowTaskScheduled", 20.002),
        Ev(3, "WorkflowTaskStarted", 20.005, {"scheduled": 2}),
        Ev(4, "WorkflowTaskCompleted", 20.007, {"scheduled": 2, "started": 3}),
        Ev(5, "ActivityTaskScheduled", 20.007, {"name": "market_view", "wft": 4}),
        Ev(6, "ActivityTaskStarted", 20.010, {"scheduled": 5}),
        Ev(7, "ActivityTaskCompleted", 20.020, {"scheduled": 5}),
        Ev(8, "WorkflowTaskScheduled", 20.020),
        Ev(9, "WorkflowTaskStarted", 20.022, {"scheduled": 8}),
        Ev(10, "WorkflowTaskCompleted", 20.035, {"scheduled": 8, "started": 9}),
        Ev(11, "MarkerRecorded", 20.035, {"name": "decide", "wft": 10}),
        Ev(12, "ActivityTaskScheduled", 20.035, {"name": "place_order", "wft": 10}),
        Ev(13, "ActivityTaskStarted", 20.036, {"scheduled": 12}),
        Ev(14, "ActivityTaskCompleted", 20.045, {"scheduled": 12}),
    ]
    cyc = cycle_of(ev, "b:1", sent=20.0)
    assert cyc is not None
    stages = dict(cyc.stages)
    assert list(stages) == [
        "signal",
        "workflow task",
        "market view",
        "decide (local)",
        "risk",
        "order",
    ]
    assert stages["decide (local)"] == pytest.approx(0.015)  # view done -> marker
    assert stages["risk"] == pytest.approx(0.0)  # the order left in the same task
    assert cyc.done("decide") == pytest.approx(20.035)


def test_an_external_server_keeps_the_users_temporal_settings_and_their_workflows(
    tmp_path, monkeypatch
) -> None:
    """``--temporal-address``: the children get the user's namespace and key (a compose
    cluster, Temporal Cloud), the bench starts no server, and only its own workflows are
    terminated at the end; the bench's own dev server gets none of the user's settings."""
    from bench._harness import Engine, Market, scrape

    monkeypatch.setenv("OCW_TEMPORAL_NAMESPACE", "prod-like")
    monkeypatch.setenv("OCW_ACCOUNT", "users-account")
    market = Market(files=[], start_ms=0, prices={}, verdicts={})
    ext = Engine(tmp_path / "a", market, server_address="temporal.example:7233")
    assert ext.env["OCW_TEMPORAL_ADDRESS"] == "temporal.example:7233"
    assert ext.env["OCW_TEMPORAL_NAMESPACE"] == "prod-like" and ext.external
    assert ext.env["OCW_ACCOUNT"] == "bench"  # never the user's account
    assert ext.server_metrics == "" and scrape(ext.server_metrics) == {}
    assert ext.owns("ocw-decision-bench") and ext.owns("ocw-monitor-bench")
    assert ext.owns("ocw-position-bench-load-BTC-7") and ext.owns("ocw-position-bench-3-BTC-1")
    assert not ext.owns("ocw-decision-users-account") and not ext.owns("users-own-wf")
    assert not ext.owns("ocw-position-benchmark-1")
    own = Engine(tmp_path / "b", market)
    assert own.env["OCW_TEMPORAL_ADDRESS"].startswith("127.0.0.1:")
    assert "OCW_TEMPORAL_NAMESPACE" not in own.env and not own.external
