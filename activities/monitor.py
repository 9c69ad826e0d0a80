"""The monitor's alert check (``monitor_check``): what changed since the last check, sent.

Run by the trading worker for ``workflows/monitor.py``. It reads the account (the
DecisionWorkflow's status query: halt, LLM breaker), the listener's probe (gone, stale feeds)
and the journal rows recorded since the last check (fills, exits, reconciliation actions),
turns them into alerts (``trading/alerts.py``) and hands them to the sender, which
deduplicates, rate-limits and retries. A trade never waits for any of this: the journal is
the outbox, and the monitor reads it on its own timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.alerts import AlertSender
from activities.heartbeat import heartbeats
from activities.journal import Journal
from trading import alerts as A
from trading.monitor import (
    AlertMemory,
    CheckReport,
    CheckRequest,
    Observed,
    Transition,
    stale_series,
    transitions,
)
from workflows.activity_api import MONITOR_CHECK

log = logging.getLogger(__name__)

JOURNAL_KINDS = ("fills", "trades", "reconciliations")
ROWS_PER_CHECK = 200  # per kind: a burst beyond this is sent on the next checks

# the sender: alerts -> (sent, duplicates, suppressed, failed, errors, worth retrying)
Deliver = Callable[[list[A.Alert]], Awaitable[tuple[int, int, int, int, list[str], bool]]]


def deliver_with(sender: AlertSender) -> Deliver:
    """The monitor's deliver step through an ``AlertSender`` (dedup, rate limit, retries)."""

    async def deliver(alerts: list[A.Alert]) -> tuple[int, int, int, int, list[str], bool]:
        if not sender.configured:
            return 0, 0, 0, 0, ["no alert destination configured"] if alerts else [], False
        r = await sender.send_now(alerts)
        return r.sent, r.duplicates, r.suppressed, r.failed, r.errors, r.retryable

    return deliver


class MonitorActivities:
    def __init__(
        self,
        client: Client,
        journal: Journal,
        deliver: Deliver,
        stale_after_s: float = 300.0,
    ) -> None:
        self.client = client
        self.journal = journal
        self.deliver = deliver
        self.stale_after_s = stale_after_s

    def all(self) -> list:
        return [self.monitor_check]

    @activity.defn(name=MONITOR_CHECK)
    @heartbeats
    async def monitor_check(self, req: CheckRequest) -> CheckReport:
        # the check's instant is the workflow's (the probe's): a retried check builds the
        # same alerts with the same keys, so nothing already delivered goes out again
        now_ms = req.probe.at_ms
        errors: list[str] = []
        seen = await self._observe(req, now_ms, errors)
        changes, memory = transitions(req.memory, seen)
        rows, cursors = await self._new_rows(req.account, req.memory, req.first, errors)
        memory = memory.model_copy(update={"cursors": cursors})
        if req.first:
            changes = [c for c in changes if c.change not in ("resume", "breaker_closed")]
        built = [a for c in changes if (a := _alert_of(c, req, seen, now_ms)) is not None]
        built += [_row_alert(kind, row, now_ms) for kind, row in rows]
        report = CheckReport(at_ms=now_ms, memory=memory, alerts=len(built), errors=errors)
        if built or not req.first:  # an empty send flushes the rate limit's summary
            sent, dup, held, failed, why, retry = await self.deliver(built)
            if retry:  # a destination may take them later: keep the memory, try again
                raise ApplicationError(
                    f"{failed} alert(s) not delivered yet: {'; '.join(why[:3])}",
                    type="AlertsNotDelivered",
                )
            report = report.model_copy(
                update={
                    "sent": sent,
                    "duplicates": dup,
                    "suppressed": held,
                    "failed": failed,
                    "errors": errors + why,
                }
            )
        return report

    async def _observe(self, req: CheckRequest, now_ms: int, errors: list[str]) -> Observed:
        from workflows.decision import DecisionWorkflow

        seen: dict[str, Any] = {
            "at_ms": now_ms,
            "listener_ok": req.probe.ok,
            "listener_error": req.probe.error,
            "stale_series": stale_series(req.probe.status, now_ms, self.stale_after_s),
        }
        try:
            handle = self.client.get_workflow_handle(req.decision_workflow_id)
            view = await handle.query(DecisionWorkflow.status)
        except Exception as err:  # noqa: BLE001 - the account's side is skipped this check
            errors.append(f"account not readable: {type(err).__name__}")
            mem = req.memory  # nothing known: keep what was remembered
            seen["halted"] = mem.halted_since_ms is not None
            seen["halt_reason"] = mem.halt_reason
            seen["breaker_open"] = None
            return Observed(**seen)
        p = view.portfolio
        seen["halted"] = bool(p.entries_blocked)
        seen["halt_reason"] = p.halt_reason
        if view.llm is not None and view.llm.enabled:
            seen["breaker_open"] = view.llm.breaker_phase != "closed"
            seen["breaker_error"] = view.llm.breaker
        return Observed(**seen)

    async def _new_rows(
        self, account: str, memory: AlertMemory, first: bool, errors: list[str]
    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
        """Journal rows recorded since the cursors; the first check only sets them (history
        is not news). A cursor is the last row's ``recorded_at`` and the ids recorded in that
        same millisecond, so a row is never skipped nor read twice."""
        cursors = dict(memory.cursors)
        out: list[tuple[str, dict[str, Any]]] = []
        for kind in JOURNAL_KINDS:
            try:
                if first:  # history is not news: start after the newest row
                    latest = await asyncio.to_thread(self.journal.latest_recorded_at, kind, account)
                    at = latest or ""
                    rows = await asyncio.to_thread(
                        self.journal.rows_since, kind, account, at, 1_000_000
                    )
                    cursors[kind] = rows_after(rows, kind, at, len(rows) + 1)[1] if rows else ""
                    continue
                cursor = cursors.get(kind) or ""
                at, _, ids = cursor.partition(" ")
                # rows at the cursor's millisecond come back again: ask for that many more
                limit = ROWS_PER_CHECK + len(ids.split())
                rows = await asyncio.to_thread(self.journal.rows_since, kind, account, at, limit)
            except Exception as err:  # noqa: BLE001 - this kind waits for the next check
                errors.append(f"journal {kind} not readable: {type(err).__name__}")
                continue
            new, cursors[kind] = rows_after(rows, kind, cursor, ROWS_PER_CHECK)
            out += [(kind, row) for row in new]
        return out, cursors


_ID = {"fills": "client_order_id", "trades": "trade_id", "reconciliations": "action_id"}


def rows_after(
    rows: list[dict[str, Any]], kind: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str]:
    """The rows recorded after ``cursor`` (oldest first, at most ``limit``) and the new
    cursor: ``<recorded_at> <id> <id>...`` (the ids recorded in that millisecond)."""
    at, _, ids = (cursor or "").partition(" ")
    seen = set(ids.split()) if ids else set()
    id_col = _ID[kind]
    fresh = sorted(
        (
            r
            for r in rows
            if r["recorded_at"] > at or (r["recorded_at"] == at and str(r[id_col]) not in seen)
        ),
        key=lambda r: r["recorded_at"],
    )[:limit]
    if not fresh:
        return [], cursor or ""
    last = fresh[-1]["recorded_at"]
    same = {str(r[id_col]) for r in fresh if r["recorded_at"] == last}
    if last == at:
        same |= seen
    return fresh, " ".join([last, *sorted(same)])


def _row_alert(kind: str, row: dict[str, Any], now_ms: int) -> A.Alert:
    if kind == "fills":
        return A.fill_alert(row, now_ms=now_ms)
    if kind == "trades":
        return A.exit_alert(row, now_ms=now_ms)
    return A.reconcile_alert(row, now_ms=now_ms)


def _alert_of(c: Transition, req: CheckRequest, seen: Observed, now_ms: int) -> A.Alert | None:
    account, since = req.account, seen.at_ms
    d = c.detail
    if c.change == "halt":
        return A.halt_alert(account, since, str(d.get("reason") or ""), now_ms=now_ms)
    if c.change == "resume":
        halted = req.memory.halted_since_ms or since
        return A.resume_alert(account, halted, now_ms=now_ms, at_ms=since)
    if c.change in ("breaker_open", "breaker_closed"):
        return A.breaker_alert(
            account,
            c.change == "breaker_open",
            since,
            now_ms=now_ms,
            reason=str(d.get("error") or ""),
        )
    if c.change == "stale_feed":
        series = ", ".join(d.get("series") or [])
        return A.feed_alert(account, series, True, since, now_ms=now_ms)
    if c.change == "feed_ok":
        return A.feed_alert(account, "all series", False, since, now_ms=now_ms)
    if c.change == "listener_gone":
        return A.listener_alert(account, True, since, now_ms=now_ms, error=str(d.get("error")))
    if c.change == "listener_back":
        gone = req.memory.listener_gone_since_ms or since
        return A.listener_alert(account, False, gone, now_ms=now_ms)
    log.warning("no alert for change %s", c.change)
    return None
