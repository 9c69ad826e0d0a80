"""MonitorWorkflow: the engine's health, checked on Temporal and readable from any host.

One per account (``ocw-monitor-<account>``), started by the trading worker beside the
account. Every ``every_s`` it probes the listener with an activity on the listener's own task
queue (no answer within seconds: the listener is gone) and then runs the alert check, which
reads the account and the journal and sends what changed. ``ocw status`` on any machine
queries ``health``; nothing is read from a local file.

No single failure stops it: a failed probe is a finding, a failed check is counted and shown,
and the next check runs on time.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.monitor import (
        AlertMemory,
        CheckReport,
        CheckRequest,
        ListenerProbe,
        MonitorHealth,
        MonitorInput,
    )
    from workflows.activity_api import (
        LISTENER_HEALTH,
        LISTENER_PROBE_CALL,
        MONITOR_CHECK,
        MONITOR_CHECK_CALL,
        failure_text,
    )


def monitor_workflow_id(account: str) -> str:
    return f"ocw-monitor-{account}"


@workflow.defn(name="MonitorWorkflow")
class MonitorWorkflow:
    @workflow.init
    def __init__(self, inp: MonitorInput) -> None:
        self._inp = inp
        self._health = inp.health or MonitorHealth(account=inp.account, every_s=inp.every_s)
        self._health.every_s = inp.every_s
        self._memory = inp.memory or AlertMemory()
        self._first = inp.health is None
        self._wanted = False

    @workflow.query
    def health(self) -> MonitorHealth:
        return self._health

    @workflow.signal
    def check_now(self) -> None:
        """Check at once (``ocw alerts`` and tests; a user may send it by hand)."""
        self._wanted = True

    @workflow.run
    async def run(self, inp: MonitorInput) -> None:
        for i in range(inp.checks_per_run):
            if i > 0 or inp.health is not None:  # a new run right after a check waits first
                await self._wait(inp.every_s)
            probe = await self._probe()
            await self._check(probe)
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            inp.model_copy(update={"health": self._health, "memory": self._memory})
        )

    async def _wait(self, every_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._wanted,
                timeout=timedelta(seconds=every_s),
                timeout_summary="next health check",
            )
        self._wanted = False

    async def _probe(self) -> ListenerProbe:
        h = self._health
        now = self._now_ms()
        try:
            status = await workflow.execute_activity(
                LISTENER_HEALTH,
                task_queue=self._inp.market_task_queue,
                result_type=dict,
                summary="is the listener there?",
                **LISTENER_PROBE_CALL.kwargs(),
            )
        except ActivityError as err:
            probe = ListenerProbe(at_ms=now, ok=False, error=_probe_error(err))
            h.listener_state = "gone"
            h.listener_error = probe.error
        else:
            probe = ListenerProbe(at_ms=now, ok=True, status=status)
            h.listener_state = "up"
            h.listener = status
            h.listener_seen_ms = now
            h.listener_error = None
        h.listener_checked_ms = now
        return probe

    async def _check(self, probe: ListenerProbe) -> None:
        h = self._health
        req = CheckRequest(
            account=self._inp.account,
            decision_workflow_id=self._inp.decision_workflow_id,
            probe=probe,
            memory=self._memory,
            first=self._first,
        )
        try:
            report = await workflow.execute_activity(
                MONITOR_CHECK,
                req,
                result_type=CheckReport,
                summary="alerts",
                **MONITOR_CHECK_CALL.kwargs(),
            )
        except ActivityError as err:
            h.check_failures += 1
            h.last_error = failure_text(err)
            workflow.logger.warning("health check failed: %s", h.last_error)
        else:
            self._memory = report.memory
            self._first = False
            h.last_check = report
        h.checks += 1

    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)


def _probe_error(err: ActivityError) -> str:
    """Why the probe failed, in words: a probe nobody picked up means the listener is gone."""
    text = failure_text(err)
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "no answer from the listener's task queue (is `ocw listen` running?)"
    return text
