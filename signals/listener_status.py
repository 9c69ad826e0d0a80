"""The listener's counters in a small JSON file under OCW_HOME, for ``ocw status``.

The listener is a plain process, not a workflow: it has no query to answer, and its counters
change on every tick, far too often for signals or workflow history. So it writes a snapshot
every few seconds (atomically: temp file + rename, a reader never sees half a file) and
``ocw status`` reads it and shows its age; an old file means the listener is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from trading.models import Model

log = logging.getLogger(__name__)

STATUS_FILE = "listener_status.json"


class ListenerStatus(Model):
    written_at_ms: int
    started_at_ms: int
    pid: int
    mode: str
    host: str = ""  # the machine it runs on (the monitor reads it from any host)
    every_s: float = 5.0
    market_time_ms: int | None = None
    gate: dict[str, Any] = Field(default_factory=dict)
    stream: dict[str, Any] = Field(default_factory=dict)
    store: dict[str, Any] = Field(default_factory=dict)
    stale_series: list[str] = Field(default_factory=list)
    series: int = 0
    wakes_sent: int = 0
    wake_failures: int = 0
    account_missing: bool = False  # no running DecisionWorkflow to deliver wakes to
    wakes_held: int = 0  # reasons held until the account runs
    gate_sync: dict[str, Any] = Field(default_factory=dict)
    sentiment: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # live only: bootstrap, gap repair, REST budget, derivatives, liquidations (issue 3)
    live: dict[str, Any] = Field(default_factory=dict)
    # who polls the trading task queue, as this listener sees it (workers/worker_watch.py)
    trading_worker: dict[str, Any] = Field(default_factory=dict)
    # every account this listener wakes (an arena's too), by account: its own gate counters
    # and wake delivery ("gate", "wakes_sent", "wake_failures", "account_missing", "wakes_held")
    accounts: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def for_account(self, account: str | None) -> ListenerStatus:
        """This status as one account sees it: its own gate and wakes when the listener wakes
        several (the first account's are the top-level fields, as before)."""
        return self.model_copy(update=own_lane({"accounts": self.accounts}, account))


# one account's part of the status, top level and in ``accounts``
WAKE_FIELDS = ("gate", "wakes_sent", "wake_failures", "account_missing", "wakes_held")


def own_lane(status: dict[str, Any], account: str | None) -> dict[str, Any]:
    """``account``'s wake fields from a status (the file's, or the monitor's copy as a dict);
    empty when the listener does not wake it by name (one account: the top level is its)."""
    own = (status.get("accounts") or {}).get(account or "")
    return {k: own[k] for k in WAKE_FIELDS if k in own} if isinstance(own, dict) else {}


def status_path(home: Path) -> Path:
    return Path(home) / STATUS_FILE


def write_status(path: Path, status: ListenerStatus) -> None:
    """Replace the file atomically (same directory, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".listener_status.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(status.model_dump_json())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: Path) -> ListenerStatus | None:
    """The last status written, or None when there is none; ValueError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return ListenerStatus.model_validate_json(text)
    except ValidationError as err:
        raise ValueError(f"{path}: not a listener status ({err.error_count()} errors)") from None


def store_staleness(store: Any) -> tuple[int | None, list[str], int]:
    """(market clock, stale series, series count) of a BarStore, on its own market clock:
    a series is stale when nothing arrived for more than two of its intervals."""
    keys = [(s, i) for s in store.symbols() for i in store.intervals(s)]
    times = [store.last_event_ms(s, i) for s, i in keys]
    known = [t for t in times if t is not None]
    if not known:
        return None, [f"{s} {i}" for s, i in keys], len(keys)
    now = max(known)
    stale = [f"{s} {i}" for s, i in keys if store.is_stale(s, i, now)]
    return now, stale, len(keys)


class StatusWriter:
    """Writes ``collect()`` every ``every_s`` wall seconds (and once more when stopped)."""

    def __init__(self, path: Path, collect: Callable[[], ListenerStatus], every_s: float) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be > 0")
        self.path = path
        self.collect = collect
        self.every_s = every_s
        self.writes = 0
        self.errors = 0

    def write_now(self) -> bool:
        try:
            write_status(self.path, self.collect())
        except Exception as err:  # noqa: BLE001 - a status file must never stop the listener
            self.errors += 1
            if self.errors <= 3:
                log.warning("listener status not written to %s: %s", self.path, err)
            return False
        self.writes += 1
        return True

    async def run(self) -> None:
        try:
            while True:
                self.write_now()
                await asyncio.sleep(self.every_s)
        finally:
            self.write_now()


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- rendering


def _layers(counts: dict[str, Any]) -> str:
    return " ".join(f"{k} {counts.get(k, 0):,}" for k in ("G1", "G2", "G3", "G4", "watchdog"))


def render_listener_status(
    status: ListenerStatus, at_ms: int | None = None, account: str | None = None
) -> str:
    """The status as ``ocw status`` prints it; with ``account``, that account's gate and wakes."""
    others = sorted(a for a in status.accounts if a != account)
    status = status.for_account(account)
    at_ms = now_ms() if at_ms is None else at_ms
    age_s = max(0.0, (at_ms - status.written_at_ms) / 1000)
    late = age_s > max(30.0, 3 * status.every_s)
    head = f"listener (pid {status.pid}, {status.mode}) status written {age_s:.0f} s ago"
    if late:
        head += "  [OLD: is `ocw listen` running?]"
    g = status.gate
    lines = [
        head,
        f"  gate: {g.get('ticks', 0):,} ticks, {g.get('skipped', 0):,} skipped "
        f"({float(g.get('skip_rate', 0.0)):.2%}), {g.get('woken', 0):,} woken",
        f"    reasons raised  {_layers(g.get('by_layer', {}))}",
        f"    wakes carrying  {_layers(g.get('woken_by_layer', {}))}",
        f"    held by cooldown {g.get('deferred', 0):,} (delivered later {g.get('delivered_late', 0):,}),"
        f" muted z-scores {g.get('muted', 0):,}; conditions {g.get('conditions_active', 0)} active,"
        f" {g.get('conditions_fired', 0)} fired, {g.get('conditions_rejected', 0)} rejected;"
        f" agent settings v{g.get('settings_version', 0)}",
    ]
    s = status.stream
    if s:
        lines.append(
            "  stream: "
            + ", ".join(f"{k} {v}" for k, v in s.items() if not isinstance(v, dict) and v != "")
        )
    st = status.store
    stale = ", ".join(status.stale_series[:8]) or "none"
    if len(status.stale_series) > 8:
        stale += f" (+{len(status.stale_series) - 8} more)"
    lines.append(
        f"  store: {status.series} series, {st.get('updates', 0):,} updates, "
        f"{st.get('closed', 0):,} closed; stale: {stale}"
    )
    sync = status.gate_sync
    lines.append(
        f"  wakes sent {status.wakes_sent:,} (send failures {status.wake_failures}); "
        f"settings reads {sync.get('queries', 0)}, failures {sync.get('failures', 0)}"
    )
    if account in status.accounts and others:
        wakes = status.accounts
        lines.append(
            f"  gate and wakes above: {account}'s; this feed also wakes "
            + ", ".join(f"{a} ({int(wakes[a].get('wakes_sent', 0)):,} wakes)" for a in others)
        )
    if status.account_missing:
        lines.append(
            f"  NO RUNNING ACCOUNT: {status.wakes_held} wake reason(s) held; start it with "
            "`ocw worker` or `ocw account init` (the listener never creates one)"
        )
    if status.sentiment:
        parts = []
        for name, info in status.sentiment.items():
            state = info.get("state", "?")
            age = info.get("age_s")
            parts.append(f"{name} {state}" + (f" ({age:.0f} s old)" if age is not None else ""))
        lines.append("  sentiment: " + "; ".join(parts))
    watch = status.trading_worker
    if watch:
        age = watch.get("last_poll_age_s")
        lines.append(
            f"  trading worker: {watch.get('state', '?')} (queue {watch.get('task_queue')}, "
            + ("never polled" if age is None else f"last poll {age:.0f} s ago")
            + ")"
        )
    lines += _live_lines(status.live)
    return "\n".join(lines)


def _live_lines(live: dict[str, Any]) -> list[str]:
    """A live listener's exchange data: where the store came from and what keeps it whole."""
    if not live:
        return []
    boot, repair = live.get("bootstrap", {}), live.get("repair", {})
    failing = ", ".join(repair.get("failing", [])) or "none"
    lines = [
        f"  exchange: bootstrap {boot.get('bars', 0):,} bars in {boot.get('requests', 0)} "
        f"requests ({len(boot.get('failed', []))} failed); gap repair {repair.get('runs', 0)} "
        f"runs, {repair.get('bars', 0):,} bars merged, failing: {failing}"
    ]
    rest = live.get("rest")
    if rest:
        weights = ", ".join(f"{k} {v}" for k, v in rest.get("used_weight", {}).items())
        lines.append(
            f"    rest: {'BANNED' if rest.get('banned') else 'ok'}, {rest.get('calls', 0):,} "
            f"calls, weight used {weights}; throttled {rest.get('throttled', 0)}, "
            f"rate limited {rest.get('rate_limited', 0)}"
        )
    deriv = live.get("derivatives")
    if deriv:
        parts = []
        for symbol, info in deriv.get("symbols", {}).items():
            flags = "".join(
                f" {k}: {','.join(info[k])}" for k in ("stale", "extreme") if info.get(k)
            )
            fresh = len(info.get("fresh", []))
            total = fresh + len(info.get("missing", [])) + len(info.get("stale", []))
            parts.append(f"{symbol} {fresh}/{total} fresh{flags}")
        lines.append(
            f"    derivatives: {deriv.get('refreshes', 0)} refreshes, "
            f"{deriv.get('errors', 0)} errors; " + "; ".join(parts)
        )
    liq = live.get("liquidations")
    if liq:
        lines.append(
            f"    liquidations: {'connected' if liq.get('connected') else 'NOT connected'}, "
            f"{liq.get('events', 0):,} forced orders, ${float(liq.get('usd_1h', 0.0)):,.0f} in 1 h"
            + (" CASCADE" if liq.get("cascade") else "")
        )
    return lines


def render_status_file(home: Path, at_ms: int | None = None, account: str | None = None) -> str:
    """What ``ocw status`` prints for the listener; never raises."""
    path = status_path(home)
    try:
        status = read_status(path)
    except (OSError, ValueError) as err:
        return f"listener: status file unreadable ({err})"
    if status is None:
        return f"listener: no status file at {path} (has `ocw listen` run with this OCW_HOME?)"
    return render_listener_status(status, at_ms, account)
