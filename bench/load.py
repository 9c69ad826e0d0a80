"""Load bench: N open positions on one trading worker and the dev server, at the real cadence.

    .venv/bin/python bench/load.py [--n 10,100,300,1000,2000] [--minutes 5] [--warmup 60]
                                   [--spread 30] [--sample 50] [--cache N] [--slots N]
                                   [--activities N] [--pollers N] [--set OCW_NAME=VALUE]
                                   [--speed 1] [--keep] [--pyspy SECONDS]
                                   [--temporal-address HOST:PORT [--server-metrics URL]]

For each N, a fresh engine (bench/_harness.py): a dev server on its own ``OCW_HOME`` (its
``/metrics`` on a free port), ``ocw worker`` (``OCW_WORKER_METRICS`` on a free port; ``--cache``
→ ``OCW_WORKER_MAX_CACHED_WORKFLOWS``, ``--slots`` → ``OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS``,
``--activities`` → ``OCW_WORKER_MAX_CONCURRENT_ACTIVITIES``, ``--pollers`` →
``OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASK_POLLS``, ``--set`` any other setting) and ``ocw listen --replay`` of a generated
1m market at speed 1 (a price every 12 s, the 30 s safety and 3 min agent timers as live). N
PositionWorkflows are started as the engine starts them (``start_position``), their stops out of
reach, evenly over ``--spread`` seconds (positions open at any moment in real life, so their
ticks do not fire in one burst); after ``--warmup`` seconds the window of ``--minutes`` begins.

With ``--temporal-address`` the engine runs on that server (a compose cluster, Temporal
Cloud) instead of a dev server of its own; the server's figures come from ``--server-metrics``
when given, its CPU and RSS are not measured, and only the bench's own workflows are
terminated at the end.

Measured over the window, from outside:
- safety-tick lag: (interval between consecutive safety checks − 30 s), a check being the
  workflow task that schedules ``market_prices``, from the histories of ``--sample`` positions
  read through the client (all of them when N ≤ sample); p50 / p99 / max, with how late the
  timer that woke it fired (the server) and how long its workflow task waited to start;
- from the worker's Prometheus endpoint (the SDK's metrics): workflow-task schedule-to-start and
  execution p50 / p99 (interpolated in the histogram's buckets, which are coarse), sticky cache
  hits, misses and forced evictions, workflow task failures; the engine's own
  ``ocw_safety_tick_lag_seconds`` (all positions) for comparison; from the listener's:
  ``market_prices`` schedule-to-start and run time;
- from the dev server's ``/metrics``: workflow task timeouts (start-to-close, and sticky
  schedule-to-start), its user-timer queue latency, its SQLite ``UpdateWorkflowExecution`` p99;
- CPU (% of one core over the window) and RSS (end, peak) of worker, server and listener,
  from ``/proc``;
- history per position per hour (events, kB, workflow tasks, activities, timers), errors in the
  sampled histories (task timeouts and failures, failed activities), the sampled positions'
  missed and stale checks and incidents, and how many positions still run at the end.

Prints a block per N, a table of all N, then ``positions_<N>_lag_p99_s: <value>`` per N and the
issue's targets (1,000: p99 ≤ 1.2 s; 2,000: p99 ≤ 2 s; no workflow task timeout). Every
workflow is terminated and every process stopped at the end of each N. Run it on a quiet
machine: the figures are the machine's as much as the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._harness import (  # noqa: E402
    Engine,
    HistoryCounts,
    Market,
    ProcSample,
    Samples,
    Stats,
    add_worker_args,
    bucket_delta,
    buckets,
    count_events,
    cpu_percent,
    fmt,
    hist_count,
    histogram_quantile,
    histories,
    overrides_from,
    remove_tree,
    safety_checks,
    sample_ids,
    scrape,
    server_from,
    start_positions,
    table,
    task_waits,
    total,
    write_market,
)
from bench._stalls import (  # noqa: E402
    STALL_HEADER,
    Timeline,
    merge_spans,
    stall_rows,
    task_wait_spans,
    worker_marks,
)

TARGETS_P99_S = {1000: 1.2, 2000: 2.0}
# a check woken by a timer this short came right after an agent check that fell due just
# before it: the dev server fires a sub-second timer after about 1 s
SHORT_TIMER_S = 1.0
# a workflow task that waited this long at the server is part of a stall
STALL_WAIT_S = 1.0
STALL_LEAD_S = 5.0  # the stall table's "before" columns cover this many seconds
PROCS = ("worker", "server", "listener")


@dataclass
class Scrapes:
    worker: Samples
    listener: Samples
    server: Samples


def scrape_all(eng: Engine) -> Scrapes:
    return Scrapes(
        scrape(eng.worker_metrics), scrape(eng.listener_metrics), scrape(eng.server_metrics)
    )


@dataclass
class Result:
    n: int
    started: int = 0
    start_s: float = 0.0
    ready_s: float = 0.0
    window_s: float = 0.0
    sampled: int = 0
    lag: Stats = field(default_factory=lambda: Stats.of([]))
    timer_late: Stats = field(default_factory=lambda: Stats.of([]))
    task_wait: Stats = field(default_factory=lambda: Stats.of([]))
    all_waits: Stats = field(default_factory=lambda: Stats.of([]))
    short_woken: Stats = field(default_factory=lambda: Stats.of([]))  # lag of those ticks
    lag_rest: Stats = field(default_factory=lambda: Stats.of([]))  # lag of all the others
    counts: HistoryCounts = field(default_factory=HistoryCounts)
    metrics: dict[str, str] = field(default_factory=dict)  # name -> printed value
    raw: dict[str, float] = field(default_factory=dict)  # for the summary table
    cpu: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    running_end: int = 0
    missed_checks: int = 0
    stale_checks: int = 0
    incidents: int = 0
    problems: list[str] = field(default_factory=list)
    stalls: list[tuple[str, ...]] = field(default_factory=list)  # STALL_HEADER rows
    stacks: Path | None = None  # py-spy dumps of the worker over the window (--pyspy)


def _q(after: Samples, before: Samples, name: str, q: float, match=None) -> tuple[float, float]:
    """(quantile, count) of a histogram between two scrapes."""
    cum = bucket_delta(buckets(after, name, match), buckets(before, name, match))
    return histogram_quantile(cum, q)[0], hist_count(cum)


def _delta(after: Samples, before: Samples, name: str, match=None) -> float | None:
    """A counter's growth; the SDK exports a counter only once it counted (absent = 0), but
    None when the endpoint itself did not answer."""
    if not after:
        return None
    return total(after, name, match) - total(before, name, match)


def read_metrics(res: Result, a: Scrapes, b: Scrapes, window_s: float) -> None:
    w0, w1 = a.worker, b.worker
    m = res.metrics
    if not w1:
        m["worker metrics"] = "not answering"
    s2s = "temporal_workflow_task_schedule_to_start_latency"
    p50, n = _q(w1, w0, s2s, 0.5)
    p99, _ = _q(w1, w0, s2s, 0.99)
    res.raw["s2s_p99"] = p99
    m["workflow task schedule-to-start p50 / p99 (SDK, s)"] = (
        f"{fmt(p50, 3)} / {fmt(p99, 3)} over {n:.0f} tasks"
    )
    ex = "temporal_workflow_task_execution_latency"
    p50, n = _q(w1, w0, ex, 0.5)
    p99, _ = _q(w1, w0, ex, 0.99)
    m["workflow task execution p50 / p99 (SDK, s)"] = f"{fmt(p50, 3)} / {fmt(p99, 3)}"
    hits = _delta(w1, w0, "temporal_sticky_cache_hit_total")
    misses = _delta(w1, w0, "temporal_sticky_cache_miss_total")
    evictions = _delta(w1, w0, "temporal_sticky_cache_total_forced_eviction_total")
    size = total(w1, "temporal_sticky_cache_size") if "temporal_sticky_cache_size" in w1 else None
    res.raw["evictions"] = evictions if evictions is not None else math.nan
    m["sticky cache: size at end, hits, misses, forced evictions"] = ", ".join(
        "n/a" if v is None else f"{v:.0f}" for v in (size, hits, misses, evictions)
    )
    failed = _delta(w1, w0, "temporal_workflow_task_execution_failed_total")
    res.raw["wft_failed"] = failed or 0.0
    m["workflow task failures (SDK counter)"] = "0" if not failed else f"{failed:.0f}"
    act = "temporal_activity_schedule_to_start_latency"
    p99, n = _q(w1, w0, act, 0.99)
    m["trading-queue activity schedule-to-start p99 (s)"] = f"{fmt(p99, 3)} over {n:.0f}"
    lag = "ocw_safety_tick_lag_seconds"
    p50, n = _q(w1, w0, lag, 0.5)
    p99, _ = _q(w1, w0, lag, 0.99)
    m["engine's own ocw_safety_tick_lag_seconds p50 / p99 (all positions, s)"] = (
        f"{fmt(p50, 2)} / {fmt(p99, 2)} over {n:.0f} ticks"
    )
    l0, l1 = a.listener, b.listener
    s, n = _q(l1, l0, act, 0.99, {"task_queue": "ocw-market"})
    m["listener (market queue) activity schedule-to-start p99 (s)"] = (
        f"{fmt(s, 3)} over {n:.0f} ({n / window_s:.1f}/s)"
    )
    r, n = _q(
        l1, l0, "temporal_activity_execution_latency", 0.99, {"activity_type": "market_prices"}
    )
    m["listener market_prices run p99 (s)"] = f"{fmt(r, 3)} over {n:.0f} ({n / window_s:.1f}/s)"
    s0, s1 = a.server, b.server
    if not s1:
        m["dev server metrics"] = "not answering"
        return
    wft_timer = {"operation": lambda op: "WorkflowTask" in op}
    stc = _delta(s1, s0, "start_to_close_timeout", wft_timer) or 0.0
    sts = _delta(s1, s0, "schedule_to_start_timeout", wft_timer) or 0.0
    res.raw["wft_timeouts"] = stc
    m["workflow task timeouts: start-to-close, schedule-to-start (server)"] = (
        f"{stc:.0f}, {sts:.0f}"
    )
    timers = {"operation": "TimerActiveTaskUserTimer"}
    p50, n = _q(s1, s0, "task_latency_queue", 0.5, timers)
    p99, _ = _q(s1, s0, "task_latency_queue", 0.99, timers)
    m["server user-timer queue latency p50 / p99 (s)"] = (
        f"{fmt(p50, 3)} / {fmt(p99, 3)} over {n:.0f} timers"
    )
    for what, op in (
        ("workflow tasks", "TransferActiveTaskWorkflowTask"),
        ("activities", "TransferActiveTaskActivity"),
    ):
        p99, n = _q(s1, s0, "task_latency_queue", 0.99, {"operation": op})
        m[f"server transfer queue latency p99, {what} (s)"] = f"{fmt(p99, 3)} over {n:.0f}"
    upd = {"operation": "UpdateWorkflowExecution"}
    p99, n = _q(s1, s0, "persistence_latency", 0.99, upd)
    m["server SQLite UpdateWorkflowExecution p99 (s)"] = (
        f"{fmt(p99, 3)} over {n:.0f} ({n / window_s:.0f}/s)"
    )


async def statuses(eng: Engine, ids: list[str], res: Result) -> None:
    """missed / stale checks and incidents of the sampled positions (their ``status`` query)."""
    from trading.state import PositionState

    gate = asyncio.Semaphore(8)

    async def one(wid: str) -> None:
        async with gate:
            try:
                s = await asyncio.wait_for(
                    eng.client.get_workflow_handle(wid).query("status", result_type=PositionState),
                    20,
                )
            except Exception as err:  # noqa: BLE001 - reported
                res.problems.append(f"status of {wid}: {type(err).__name__}")
                return
            res.missed_checks += s.missed_checks
            res.stale_checks += s.stale_checks
            res.incidents += len(s.incidents)

    await asyncio.gather(*(one(w) for w in ids))


async def dump_stacks(pid: int, out: Path, until: float, every_s: float) -> None:
    """``py-spy dump`` of the worker every ``every_s`` (non-blocking: the worker never pauses),
    each under a line with its unix time, to read beside the stall table."""
    spy = Path(sys.executable).with_name("py-spy")
    with open(out, "a") as f:
        while time.monotonic() < until:
            began = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                str(spy),
                "dump",
                "--nonblocking",
                "--pid",
                str(pid),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            text, _ = await proc.communicate()
            f.write(f"=== {time.time():.3f}\n{text.decode(errors='replace')}\n")
            f.flush()
            await asyncio.sleep(max(0.0, every_s - (time.monotonic() - began)))


async def count_running(eng: Engine) -> int:
    try:
        c = await eng.client.count_workflows(
            "WorkflowType='PositionWorkflow' AND ExecutionStatus='Running'"
        )
        return c.count
    except Exception:  # noqa: BLE001 - visibility lag or unsupported
        return -1


async def run_n(n: int, args: argparse.Namespace, market: Market, root: Path) -> Result:
    res = Result(n=n)
    eng = Engine(
        root / f"n{n}", market, overrides=args.overrides, speed=args.speed, **server_from(args)
    )
    safety_s = 30.0
    began = time.monotonic()
    try:
        await eng.start()
        from workers.wiring import engine_config

        safety_s = engine_config(eng.settings).position_params().safety_interval_s
        res.ready_s = time.monotonic() - began
        print(f"  engine ready in {res.ready_s:.0f} s; starting {n} positions", flush=True)
        ids, res.start_s = await start_positions(eng, n, args.spread)
        res.started = len(ids)
        print(
            f"  {res.started} positions started in {res.start_s:.1f} s; warm-up {args.warmup:g} s, "
            f"then {args.minutes:g} min measured",
            flush=True,
        )
        await asyncio.sleep(args.warmup)
        a = scrape_all(eng)
        p0 = eng.proc_samples()
        w0 = time.time()
        peaks: dict[str, int] = {}
        end = time.monotonic() + args.minutes * 60
        pids = {name: eng.procs[name].pid for name in PROCS if name in eng.procs}
        timeline = Timeline(pids, eng.client)
        sampler = asyncio.create_task(timeline.run(end))
        dumper = None
        if args.pyspy:
            res.stacks = eng.logs / "worker-stacks.txt"
            dumper = asyncio.create_task(dump_stacks(pids["worker"], res.stacks, end, args.pyspy))
        while time.monotonic() < end:
            await asyncio.sleep(min(10.0, max(0.0, end - time.monotonic())))
            for name, smp in eng.proc_samples().items():
                if smp is not None:
                    peaks[name] = max(peaks.get(name, 0), smp.rss_kb)
            dead = [p.name for p in eng.procs.values() if not p.alive()]
            if dead:
                res.problems.append(f"{', '.join(dead)} exited during the window")
                break
        w1 = time.time()
        p1 = eng.proc_samples()
        for task in (sampler, dumper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        b = scrape_all(eng)
        res.window_s = w1 - w0
        for name in PROCS:
            s0: ProcSample | None = p0.get(name)
            s1: ProcSample | None = p1.get(name)
            res.cpu[name] = cpu_percent(s0, s1)
            res.rss_mb[name] = (s1.rss_kb / 1024) if s1 else math.nan
            res.peak_mb[name] = max(peaks.get(name, 0), s1.hwm_kb if s1 else 0) / 1024
        read_metrics(res, a, b, res.window_s)
        print("  window over; reading histories", flush=True)
        sample = sample_ids(ids, args.sample)
        hists = await histories(eng.client, sample)
        res.sampled = len(hists)
        lags, late, wait, waits, short, rest = [], [], [], [], [], []
        spans = []
        for events in hists.values():
            waits += task_waits(events, w0, w1)
            spans += task_wait_spans(events, w0, w1, STALL_WAIT_S)
            for c in safety_checks(events):
                if c.interval_s is None or not w0 <= c.t < w1:
                    continue
                lags.append(c.interval_s - safety_s)
                woken_short = c.timer_s is not None and c.timer_s < SHORT_TIMER_S
                (short if woken_short else rest).append(c.interval_s - safety_s)
                wait.append(c.task_wait_s)
                if c.timer_late_s is not None:
                    late.append(c.timer_late_s)
            res.counts.add(count_events(events, w0, w1))
        res.lag, res.timer_late, res.task_wait = Stats.of(lags), Stats.of(late), Stats.of(wait)
        res.all_waits = Stats.of(waits)
        res.short_woken, res.lag_rest = Stats.of(short), Stats.of(rest)
        marks = worker_marks(eng.procs["worker"].log.read_text(errors="replace"))
        res.stalls = stall_rows(merge_spans(spans), timeline, marks, w0, STALL_LEAD_S)
        await statuses(eng, sample, res)
        res.running_end = await count_running(eng)
    finally:
        terminated = await eng.terminate_running()
        eng.stop()
        print(f"  terminated {terminated} workflows, processes stopped", flush=True)
        if not args.keep and not res.problems:
            remove_tree(eng.root)
    return res


def print_block(res: Result, args: argparse.Namespace) -> None:
    n = res.n
    hours = res.window_s / 3600 if res.window_s else math.nan
    per = max(1, res.sampled) * hours
    c = res.counts
    rows: list[tuple[str, str]] = [
        ("positions started (over --spread)", f"{res.started} in {res.start_s:.1f} s"),
        ("window", f"{res.window_s:.0f} s after {args.warmup:g} s warm-up"),
        ("sampled histories", f"{res.sampled}"),
        ("safety ticks measured", f"{res.lag.n}"),
        (
            "safety lag p50 / p99 / max (s)",
            f"{fmt(res.lag.p50)} / {fmt(res.lag.p99)} / {fmt(res.lag.max)}",
        ),
        (
            "  timer fired late p50 / p99 / max (s)",
            f"{fmt(res.timer_late.p50)} / {fmt(res.timer_late.p99)} / {fmt(res.timer_late.max)}",
        ),
        (
            "  its workflow task waited p50 / p99 / max (s)",
            f"{fmt(res.task_wait.p50)} / {fmt(res.task_wait.p99)} / {fmt(res.task_wait.max)}",
        ),
        (
            "  ticks woken by a sub-second timer (agent check due just before): n, lag p50 / max",
            f"{res.short_woken.n} of {res.lag.n}, {fmt(res.short_woken.p50)} / "
            f"{fmt(res.short_woken.max)}",
        ),
        (
            "  lag of the other ticks p50 / p99 / max (s)",
            f"{fmt(res.lag_rest.p50)} / {fmt(res.lag_rest.p99)} / {fmt(res.lag_rest.max)}",
        ),
        (
            "workflow task schedule-to-start p50 / p99 / max (sampled histories, s)",
            f"{fmt(res.all_waits.p50, 3)} / {fmt(res.all_waits.p99, 3)} / "
            f"{fmt(res.all_waits.max, 3)} over {res.all_waits.n} tasks",
        ),
        *res.metrics.items(),
        (
            "history per position per hour: events, kB",
            f"{c.events / per:.0f}, {c.bytes / 1024 / per:.0f}",
        ),
        (
            "  workflow tasks, activities, local activities, timers per position per hour",
            f"{c.workflow_tasks / per:.0f}, {c.activities / per:.0f}, "
            f"{c.local_activities / per:.0f}, {c.timers / per:.0f}",
        ),
        (
            "errors in sampled histories: task timeouts, task failures, failed activities",
            f"{c.task_timeouts}, {c.task_failures}, {c.activity_failures}",
        ),
        (
            "sampled positions: missed checks, stale checks, incidents",
            f"{res.missed_checks}, {res.stale_checks}, {res.incidents}",
        ),
        ("positions running at the end", f"{res.running_end} of {res.started}"),
    ]
    for name in PROCS:
        rows.append(
            (
                f"{name}: CPU % of one core, RSS MB (end / peak)",
                f"{fmt(res.cpu.get(name), 1)} %, {fmt(res.rss_mb.get(name), 0)} / "
                f"{fmt(res.peak_mb.get(name), 0)}",
            )
        )
    if res.problems:
        rows.append(("problems", "; ".join(res.problems[:5])))
    print(f"== {n} positions ==")
    for line in table(("figure", "value"), rows, right=False):
        print("  " + line)
    if res.stalls:
        print(
            f"  stalls (sampled workflow tasks that waited ≥ {STALL_WAIT_S:g} s, merged; CPU of "
            f"worker/server/listener in the stall and the {STALL_LEAD_S:g} s before; the "
            "machine's CPU is % of one core over all cores; probe: GetSystemInfo round trip):"
        )
        for line in table(STALL_HEADER, res.stalls):
            print("    " + line)
    else:
        print(f"  stalls: no sampled workflow task waited ≥ {STALL_WAIT_S:g} s")
    if res.stacks is not None:
        print(f"  worker stacks (py-spy every {args.pyspy:g} s): {res.stacks}")


def errors_of(res: Result) -> int:
    c = res.counts
    return int(
        c.task_timeouts
        + c.task_failures
        + c.activity_failures
        + res.raw.get("wft_timeouts", 0)
        + res.raw.get("wft_failed", 0)
        + res.missed_checks
        + len(res.problems)
    )


def print_summary(results: list[Result]) -> None:
    rows = []
    for r in results:
        per = max(1, r.sampled) * (r.window_s / 3600 if r.window_s else math.nan)
        rows.append(
            (
                r.n,
                fmt(r.lag.p50),
                fmt(r.lag.p99),
                fmt(r.lag.max),
                fmt(r.all_waits.p99, 3),
                f"{r.raw.get('wft_timeouts', 0):.0f}",
                fmt(r.raw.get("evictions"), 0),
                f"{r.counts.events / per:.0f}",
                *(f"{fmt(r.cpu.get(p), 0)}/{fmt(r.peak_mb.get(p), 0)}" for p in PROCS),
                errors_of(r),
            )
        )
    header = (
        "N",
        "lag p50 s",
        "lag p99 s",
        "lag max s",
        "WFT wait p99 s",
        "WFT timeouts",
        "evictions",
        "events/pos/h",
        "worker %/MB",
        "server %/MB",
        "listener %/MB",
        "errors",
    )
    print("== all N (CPU % of one core / peak RSS MB) ==")
    for line in table(header, rows):
        print("  " + line)


async def main_async(args: argparse.Namespace) -> list[Result]:
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ocw-load-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"run_folder: {root}")
    market = write_market(root / "market")
    print(
        f"market: generated 1m bars, replay from {market.start_ms} at speed {args.speed:g}; "
        + "; ".join(f"{s} {v.split(' ', 1)[0]}" for s, v in market.verdicts.items())
    )
    print(
        "worker settings: "
        + (", ".join(f"{k}={v}" for k, v in sorted(args.overrides.items())) or "the defaults")
    )
    if args.temporal_address:
        print(
            f"server: external at {args.temporal_address} ("
            + (f"metrics {args.server_metrics}" if args.server_metrics else "no /metrics given")
            + "; its CPU and RSS are not measured from here)"
        )
    if args.minutes * 60 < 180:
        print(
            "note: a window shorter than the 3 min agent cadence under-counts the agent checks "
            "(history per hour, and the ticks that follow an agent check)"
        )
    results = []
    for n in args.ns:
        print(f"-- N = {n}", flush=True)
        res = await run_n(n, args, market, root)
        print_block(res, args)
        results.append(res)
    if not args.keep and not args.out and all(not r.problems for r in results):
        remove_tree(root)
    return results


def parse_ns(text: str) -> list[int]:
    try:
        ns = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n {text!r}: a comma list of integers") from None
    if not ns or any(n < 0 for n in ns):
        raise argparse.ArgumentTypeError("--n: at least one N >= 0")
    return ns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n",
        dest="ns",
        type=parse_ns,
        default=[10, 100, 300, 1000, 2000],
        help="open positions, a comma list (default 10,100,300,1000,2000)",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="measured window per N")
    parser.add_argument(
        "--warmup",
        type=float,
        default=60.0,
        help="seconds after the last start before the window (default 60)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=30.0,
        help="seconds over which the positions are started (default 30)",
    )
    parser.add_argument(
        "--sample", type=int, default=50, help="position histories read per N (0: all; default 50)"
    )
    add_worker_args(parser)
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed (default 1)")
    parser.add_argument("--out", default=None, help="run folder (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep logs and state")
    parser.add_argument(
        "--pyspy",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="dump the worker's Python stacks with py-spy every SECONDS of the window (into its "
        "logs folder; implies --keep; py-spy must be installed)",
    )
    args = parser.parse_args(argv)
    args.overrides = overrides_from(args)
    if args.pyspy:
        args.keep = True
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    print_summary(results)
    print(f"seconds: {time.monotonic() - started:.0f}")
    timeouts = 0
    for r in results:
        timeouts += int(r.raw.get("wft_timeouts", 0) + r.counts.task_timeouts)
        target = TARGETS_P99_S.get(r.n)
        if target is not None:
            met = r.lag.p99 <= target and not r.raw.get("wft_timeouts", 0)
            print(f"positions_{r.n}_lag_target_p99_s: {target:g} (met: {'yes' if met else 'no'})")
    print(f"workflow_task_timeouts: {timeouts}")
    for r in results:
        print(f"positions_{r.n}_lag_p99_s: {fmt(r.lag.p99)}")
    return 0 if all(not r.problems for r in results) else 1


if __name__ == "__main__":
    code = main()
    # the Temporal SDK's core runtime may abort the interpreter at exit (sdk-python issue 300)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
