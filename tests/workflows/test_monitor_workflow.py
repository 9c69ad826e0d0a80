"""MonitorWorkflow on the time-skipping server: probes, checks, failures contained."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from trading.monitor import CheckReport, CheckRequest, MonitorHealth, MonitorInput
from workflows.activity_api import LISTENER_HEALTH, MONITOR_CHECK
from workflows.monitor import MonitorWorkflow


class FakeOps:
    def __init__(self, probe_fails: bool = False, check_fails: int = 0) -> None:
        self.probe_fails = probe_fails
        self.check_fails = check_fails
        self.requests: list[CheckRequest] = []

    @activity.defn(name=LISTENER_HEALTH)
    async def listener_health(self) -> dict:
        if self.probe_fails:
            raise ApplicationError("listener exploded", non_retryable=True)
        return {"written_at_ms": 1, "started_at_ms": 1, "pid": 7, "mode": "paper", "host": "h1"}

    @activity.defn(name=MONITOR_CHECK)
    async def monitor_check(self, req: CheckRequest) -> CheckReport:
        self.requests.append(req)
        if self.check_fails > 0:
            self.check_fails -= 1
            raise ApplicationError("journal unreachable", non_retryable=True)
        memory = req.memory.model_copy(update={"cursors": {"fills": f"c{len(self.requests)}"}})
        return CheckReport(at_ms=req.probe.at_ms, memory=memory, sent=1)


async def _run(env: WorkflowEnvironment, ops: FakeOps, **inp: object):
    queue = f"trading-{uuid.uuid4().hex[:6]}"
    market = f"market-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        env.client, task_queue=queue, workflows=[MonitorWorkflow], activities=[ops.monitor_check]
    )
    listener = Worker(env.client, task_queue=market, activities=[ops.listener_health])
    args = {
        "account": "paper",
        "decision_workflow_id": "ocw-decision-paper",
        "market_task_queue": market,
        **inp,
    }
    return worker, listener, queue, MonitorInput.model_validate(args)


async def _health_after(env, handle, checks: int) -> MonitorHealth:
    for _ in range(200):
        health = await handle.query(MonitorWorkflow.health)
        if health.checks >= checks:
            return health
        await env.sleep(5)
    raise AssertionError(f"only {health.checks} checks")


@pytest.mark.asyncio
async def test_probe_up_and_cursors_carried(ts_env: WorkflowEnvironment) -> None:
    ops = FakeOps()
    worker, listener, queue, inp = await _run(ts_env, ops)
    async with worker, listener:
        handle = await ts_env.client.start_workflow(
            MonitorWorkflow.run, inp, id=f"mon-{uuid.uuid4().hex[:6]}", task_queue=queue
        )
        health = await _health_after(ts_env, handle, 3)
        assert health.listener_state == "up"
        assert health.listener and health.listener["host"] == "h1"
        assert health.last_check and health.last_check.sent == 1
        assert ops.requests[0].first and not ops.requests[1].first
        # each check starts from what the last one remembered
        assert ops.requests[1].memory.cursors == {"fills": "c1"}
        assert ops.requests[2].memory.cursors == {"fills": "c2"}
        await handle.terminate()


@pytest.mark.asyncio
async def test_failing_probe_is_a_finding_and_a_failed_check_is_contained(
    ts_env: WorkflowEnvironment,
) -> None:
    ops = FakeOps(probe_fails=True, check_fails=1)
    worker, listener, queue, inp = await _run(ts_env, ops)
    async with worker, listener:
        handle = await ts_env.client.start_workflow(
            MonitorWorkflow.run, inp, id=f"mon-{uuid.uuid4().hex[:6]}", task_queue=queue
        )
        health = await _health_after(ts_env, handle, 2)
        assert health.listener_state == "gone"
        assert "listener exploded" in (health.listener_error or "")
        assert health.check_failures == 1
        assert "journal unreachable" in (health.last_error or "")
        assert health.last_check is not None  # the next check ran on time
        assert not ops.requests[0].probe.ok
        # the failed first check is retried as a first check (nothing was remembered)
        assert ops.requests[1].first
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
        await handle.terminate()


@pytest.mark.asyncio
async def test_check_now_and_continue_as_new_keep_health(ts_env: WorkflowEnvironment) -> None:
    ops = FakeOps()
    worker, listener, queue, inp = await _run(ts_env, ops, every_s=3600, checks_per_run=2)
    async with worker, listener:
        wid = f"mon-{uuid.uuid4().hex[:6]}"
        handle = await ts_env.client.start_workflow(
            MonitorWorkflow.run, inp, id=wid, task_queue=queue
        )
        await _health_after(ts_env, handle, 1)
        await handle.signal(MonitorWorkflow.check_now)
        for _ in range(100):
            if len(ops.requests) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(ops.requests) >= 2  # long before the hour
        latest = ts_env.client.get_workflow_handle(wid)
        await latest.signal(MonitorWorkflow.check_now)
        health = await _health_after(ts_env, latest, 3)
        assert health.checks >= 3  # counted across runs
        assert ops.requests[2].memory.cursors == {"fills": "c2"}  # memory carried over
        assert not ops.requests[2].first
        await latest.terminate()
