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
