"""Stalls in a load run: when workflow tasks waited at the server, and who was busy meanwhile.

The load bench's bad runs at 2,000 positions lag from one or two stalls of seconds, not from a
steady backlog (issue 14). To say whose stall it is, a ``Timeline`` samples every
``every_s`` during the window: each process's CPU seconds, the machine's busy share (``/proc/
stat``) and one cheap server round trip (``GetSystemInfo``). After the window the sampled
histories' workflow-task waits over ``min_wait_s`` are merged into stalls (overlapping
[scheduled, started] spans), and each stall is printed with what the timeline saw in it and
just before it, beside the worker's own log lines of a blocked event loop or a long GC pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._harness import Ev, read_proc, task_starts


@dataclass(frozen=True)
class Span:
    start: float  # unix seconds
    end: float
    tasks: int = 1
    max_wait_s: float = 0.0


def task_wait_spans(events: Iterable[Ev], t0: float, t1: float, min_wait_s: float) -> list[Span]:
    """[scheduled, started] of every workflow task started in [t0, t1) that waited ≥ min."""
    return [
        Span(at, started, 1, started - at)
        for at, started in task_starts(events, t0, t1)
        if started - at >= min_wait_s
    ]


def merge_spans(spans: Iterable[Span], gap_s: float = 0.0) -> list[Span]:
    """Overlapping spans (or ones closer than ``gap_s``) merged into one stall each."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: s.start):
        if out and s.start <= out[-1].end + gap_s:
            last = out[-1]
            out[-1] = Span(
                last.start,
                max(last.end, s.end),
                last.tasks + s.tasks,
                max(last.max_wait_s, s.max_wait_s),
            )
        else:
            out.append(s)
    return out


@dataclass
class Sample:
    t: float  # unix seconds
    cpu_s: dict[str, float]  # cumulative user + system seconds per process
    busy_s: float  # the machine's cumulative non-idle CPU seconds (all cores)
    probe_s: float  # GetSystemInfo round trip (nan: failed)
    steal_s: float = 0.0  # cumulative CPU seconds the hypervisor gave other guests


def machine_busy_s(stat: str, clk_tck: int) -> float:
    """Non-idle CPU seconds of all cores from the first line of /proc/stat (steal excluded:
    time this machine wanted and the hypervisor gave to another guest)."""
    fields = [int(x) for x in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:7]) - idle) / clk_tck


def machine_steal_s(stat: str, clk_tck: int) -> float:
    """Stolen CPU seconds of all cores (the 8th field of /proc/stat's first line)."""
    fields = [int(x) for x in stat.splitlines()[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0) / clk_tck


@dataclass
class Timeline:
    pids: dict[str, int]
    client: Any
    every_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)

    async def run(self, until: float) -> None:
        import os

        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

        tck = os.sysconf("SC_CLK_TCK")
        while time.monotonic() < until:
            began = time.perf_counter()
            probe = float("nan")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.client.workflow_service.get_system_info(GetSystemInfoRequest()), 10.0
                )
                probe = time.perf_counter() - began
            cpu = {}
            for name, pid in self.pids.items():
                smp = read_proc(pid)
                if smp is not None:
                    cpu[name] = smp.cpu_s
            busy = steal = float("nan")
            with contextlib.suppress(OSError):
                stat = Path("/proc/stat").read_text()
                busy, steal = machine_busy_s(stat, tck), machine_steal_s(stat, tck)
            self.samples.append(Sample(time.time(), cpu, busy, probe, steal))
            await asyncio.sleep(max(0.0, self.every_s - (time.perf_counter() - began)))

    def usage(self, t0: float, t1: float) -> tuple[dict[str, float], float, float]:
        """CPU % of one core per process and of the machine in [t0, t1], and the worst probe
        (the machine's stolen share: ``steal``)."""
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        before = [s for s in self.samples if s.t < t0]
        first = before[-1] if before else (inside[0] if inside else None)
        after = [s for s in self.samples if s.t > t1]
        last = after[0] if after else (inside[-1] if inside else None)
        if first is None or last is None or last.t <= first.t:
            return {}, float("nan"), float("nan")
        dt = last.t - first.t
        cpu = {
            name: 100.0 * (last.cpu_s[name] - first.cpu_s[name]) / dt
            for name in last.cpu_s
            if name in first.cpu_s
        }
        busy = 100.0 * (last.busy_s - first.busy_s) / dt
        cpu["steal"] = 100.0 * (last.steal_s - first.steal_s) / dt
        probes = [s.probe_s for s in inside + ([last] if after else []) if s.probe_s == s.probe_s]
        return cpu, busy, max(probes, default=float("nan"))


_ASCTIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
_BLOCKED = re.compile(r"event loop: blocked ([\d.]+) s \(from ([\d.]+) to ([\d.]+)")


@dataclass(frozen=True)
class LogMark:
    start: float
    end: float
    text: str


def worker_marks(log_text: str) -> list[LogMark]:
    """The worker's blocked-loop and long-GC lines, each as the span it covers."""
    out = []
    for line in log_text.splitlines():
        m = _BLOCKED.search(line)
        if m:
            out.append(
                LogMark(float(m.group(2)), float(m.group(3)), f"loop blocked {m.group(1)} s")
            )
            continue
        if "gc: generation" in line:
            a = _ASCTIME.match(line)
            pause = re.search(r"paused the process ([\d.]+) s", line)
            if a and pause:
                end = datetime.strptime(a.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                t1 = end.timestamp() + int(a.group(2)) / 1000
                out.append(LogMark(t1 - float(pause.group(1)), t1, line[a.end() :].strip()))
    return out


def stall_rows(
    stalls: Sequence[Span], timeline: Timeline, marks: Sequence[LogMark], t0: float, lead_s: float
) -> list[tuple[str, ...]]:
    """One row per stall: when, how many tasks waited and how long, CPU in it and just before,
    the worst server round trip in it, and the worker's log marks that overlap it."""
    rows = []
    for s in stalls:
        cpu, busy, probe = timeline.usage(s.start, s.end)
        pre, pre_busy, _ = timeline.usage(s.start - lead_s, s.start)
        seen = [m.text for m in marks if m.start <= s.end and m.end >= s.start]

        def pct(d: dict[str, float], name: str) -> str:
            v = d.get(name)
            return "-" if v is None else f"{v:.0f}"

        rows.append(
            (
                f"+{s.start - t0:.1f}",
                f"{s.end - s.start:.1f}",
                str(s.tasks),
                f"{s.max_wait_s:.2f}",
                f"{pct(cpu, 'worker')}/{pct(cpu, 'server')}/{pct(cpu, 'listener')}",
                f"{pct(pre, 'worker')}/{pct(pre, 'server')}/{pct(pre, 'listener')}",
                f"{busy:.0f} ({pre_busy:.0f})" if busy == busy else "-",
                f"{pct(cpu, 'steal')} ({pct(pre, 'steal')})",
                f"{probe * 1000:.0f}" if probe == probe else "-",
                "; ".join(seen[:3]) or "-",
            )
        )
    return rows


STALL_HEADER = (
    "stall at (s)",
    "length s",
    "tasks",
    "max wait s",
    "CPU % w/s/l in",
    "w/s/l before",
    "machine % (before)",
    "steal % (before)",
    "probe max ms",
    "worker log",
)
