"""The listener's health as ``ocw status`` shows it, read through Temporal from any host.

The monitor (``workflows/monitor.py``) probes the listener every ``OCW_MONITOR_EVERY_S``;
its ``health`` query holds the answer. A machine with no local files sees the same as the
one the listener runs on. Only when no monitor runs (an engine started before it existed)
does the status fall back to the listener's local status file, and says so.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client

from signals.listener_status import ListenerStatus, render_listener_status, render_status_file
from trading.config import Settings
from trading.monitor import MonitorHealth


def _ago(at_ms: int | None, now_ms: int) -> str:
    if not at_ms:
        return "never"
    return f"{max(0.0, (now_ms - at_ms) / 1000):.0f} s ago"


def render_health(
    health: MonitorHealth, now_ms: int | None = None, account: str | None = None
) -> str:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    status = _status_of(health.listener)
    where = f" on {status.host}" if status and status.host else ""
    if health.listener_state == "up":
        head = (
            f"listener{where}: up (answered the monitor {_ago(health.listener_checked_ms, now_ms)})"
        )
    elif health.listener_state == "gone":
        head = (
            f"listener{where}: GONE: {health.listener_error or 'no answer'}; "
            f"last answer {_ago(health.listener_seen_ms, now_ms)}"
        )
    else:
        head = "listener: not checked yet"
    lines = [head + f"; the monitor checks every {health.every_s:g} s"]
    if status is not None:
        body = render_listener_status(status, status.written_at_ms, account).splitlines()[1:]
        if health.listener_state != "up":
            lines.append(f"  its last status ({_ago(status.written_at_ms, now_ms)}):")
            body = ["  " + line for line in body]
        lines += body
    check = health.last_check
    if check is not None:
        lines.append(
            f"  alerts: checked {_ago(check.at_ms, now_ms)}: {check.sent} sent, "
            f"{check.duplicates} duplicate(s), {check.suppressed} held by the rate limit, "
            f"{check.failed} failed" + (f"; {'; '.join(check.errors[:3])}" if check.errors else "")
        )
    if health.check_failures:
        lines.append(
            f"  monitor: {health.check_failures} failed check(s), last: {health.last_error}"
        )
    return "\n".join(lines)


def _status_of(raw: dict[str, Any] | None) -> ListenerStatus | None:
    if not raw:
        return None
    try:
        return ListenerStatus.model_validate(raw)
    except ValidationError:
        return None


async def listener_text(client: Client, settings: Settings) -> str:
    """What ``ocw status`` prints about the listener; never raises."""
    from workers.monitor import monitor_health

    try:
        health = await monitor_health(client, settings)
    except Exception as err:  # noqa: BLE001 - reported in the text
        local = settings.paths()["home"] / "listener_status.json"
        why = f"no monitor to ask on Temporal ({type(err).__name__}); start `ocw worker`"
        if local.exists():
            text = render_status_file(settings.home, account=settings.account)
            return f"{why}; the local status file says:\n{text}"
        return f"listener: unknown: {why}"
    return render_health(health, account=settings.account)
