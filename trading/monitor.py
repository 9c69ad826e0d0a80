"""What the monitor (``workflows/monitor.py``) keeps between its health checks.

The monitor is the engine's own watchman, run on Temporal so that any machine that reaches
the server can read it: every ``OCW_MONITOR_EVERY_S`` it asks the listener for its status
(an activity on the listener's task queue: no answer within seconds means the listener is
gone), then runs one check that turns what changed since the last one into alerts. These
models are its payloads; they carry no secret.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trading.models import Model

ListenerState = Literal["unknown", "up", "gone"]


class ListenerProbe(Model):
    """One health probe of the listener."""

    at_ms: int
    ok: bool
    status: dict[str, Any] | None = None  # signals.listener_status.ListenerStatus, as JSON
    error: str | None = None


class AlertMemory(Model):
    """The state the alert check compares against: transitions alert once, rows once."""

    halted_since_ms: int | None = None
    halt_reason: str | None = None
    breaker_open: bool = False
    stale_series: list[str] = Field(default_factory=list)
    listener_gone_since_ms: int | None = None
    # journal rows already turned into alerts: kind -> the last row's recorded_at
    cursors: dict[str, str] = Field(default_factory=dict)


class CheckRequest(Model):
    account: str
    decision_workflow_id: str
    probe: ListenerProbe
    memory: AlertMemory
    first: bool = False  # the monitor's first check: set cursors, alert nothing from history


class CheckReport(Model):
    at_ms: int
    memory: AlertMemory
    alerts: int = 0  # built this check
    sent: int = 0
    duplicates: int = 0
    suppressed: int = 0
    failed: int = 0
    errors: list[str] = Field(default_factory=list)


class MonitorHealth(Model):
    """What ``ocw status`` (from any host) reads with the monitor's ``health`` query."""

    account: str
    every_s: float
    checks: int = 0
    listener_state: ListenerState = "unknown"
    listener: dict[str, Any] | None = None  # the last status the listener answered with
    listener_checked_ms: int | None = None
    listener_seen_ms: int | None = None
    listener_error: str | None = None
    last_check: CheckReport | None = None
    check_failures: int = 0
    last_error: str | None = None


class MonitorInput(Model):
    account: str
    decision_workflow_id: str
    market_task_queue: str
    every_s: float = Field(default=30.0, ge=1)
    checks_per_run: int = Field(default=500, ge=1)  # then continue-as-new: a small history
    health: MonitorHealth | None = None  # carried over continue-as-new
    memory: AlertMemory | None = None


# ---------------------------------------------------------------- what changed


Change = Literal[
    "halt",
    "resume",
    "breaker_open",
    "breaker_closed",
    "stale_feed",
    "feed_ok",
    "listener_gone",
    "listener_back",
]


class Observed(Model):
    """What one check saw of the account and the listener."""

    at_ms: int
    halted: bool = False
    halt_reason: str | None = None
    breaker_open: bool | None = None  # None: no LLM configured (nothing to say)
    breaker_error: str | None = None
    listener_ok: bool = True
    listener_error: str | None = None
    stale_series: list[str] = Field(default_factory=list)


class Transition(Model):
    change: Change
    key: str  # stable: the same change seen again after a restart is one alert
    detail: dict[str, Any] = Field(default_factory=dict)


def stale_series(status: dict[str, Any] | None, now_ms: int, stale_after_s: float) -> list[str]:
    """The listener's stale series, and the whole feed when no frame came for too long (a
    silent stream leaves the market clock where it stopped, so its series look fresh)."""
    if not status:
        return []
    out = list(status.get("stale_series") or [])
    last = int((status.get("stream") or {}).get("last_message_ms") or 0)
    if last and now_ms - last > stale_after_s * 1000:
        out.insert(0, f"stream: no frame for over {stale_after_s:g} s")
    return out


def transitions(memory: AlertMemory, seen: Observed) -> tuple[list[Transition], AlertMemory]:
    """The changes since the last check, and the memory to compare the next one with."""
    out: list[Transition] = []
    mem = memory.model_copy(deep=True)
    if seen.halted and mem.halted_since_ms is None:
        mem.halted_since_ms, mem.halt_reason = seen.at_ms, seen.halt_reason
        out.append(
            Transition(
                change="halt", key=f"halt:{seen.at_ms}", detail={"reason": seen.halt_reason or ""}
            )
        )
    elif not seen.halted and mem.halted_since_ms is not None:
        out.append(Transition(change="resume", key=f"resume:{mem.halted_since_ms}"))
        mem.halted_since_ms, mem.halt_reason = None, None
    if seen.breaker_open is not None and seen.breaker_open != mem.breaker_open:
        change: Change = "breaker_open" if seen.breaker_open else "breaker_closed"
        out.append(
            Transition(
                change=change,
                key=f"{change}:{seen.at_ms}",
                detail={"error": seen.breaker_error or ""},
            )
        )
        mem.breaker_open = seen.breaker_open
    if seen.listener_ok and mem.listener_gone_since_ms is not None:
        out.append(
            Transition(change="listener_back", key=f"listener_back:{mem.listener_gone_since_ms}")
        )
        mem.listener_gone_since_ms = None
    elif not seen.listener_ok and mem.listener_gone_since_ms is None:
        mem.listener_gone_since_ms = seen.at_ms
        out.append(
            Transition(
                change="listener_gone",
                key=f"listener_gone:{seen.at_ms}",
                detail={"error": seen.listener_error or "no answer"},
            )
        )
    if seen.listener_ok:  # a gone listener says nothing about its series
        new = sorted(set(seen.stale_series) - set(mem.stale_series))
        if new:
            out.append(
                Transition(
                    change="stale_feed",
                    key=f"stale:{seen.at_ms}",
                    detail={"series": new[:20], "count": len(new)},
                )
            )
        if mem.stale_series and not seen.stale_series:
            out.append(Transition(change="feed_ok", key=f"feed_ok:{seen.at_ms}"))
        mem.stale_series = sorted(set(seen.stale_series))
    return out, mem
