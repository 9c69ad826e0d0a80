"""What the Temporal UI shows (issue 12): summaries, details, search attributes, memo links.

On the dev server with the engine's search attributes registered (as `ocw server` does), read
back through the client's describe, list and history, the way the web UI reads them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig
from trading.models import Action, PositionParams, TradeDecision, Wake
from workers.search_setup import missing_search_attributes, register_search_attributes
from workers.temporal_env import find_binary
from workflows import search_attributes as sa
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

pytestmark = pytest.mark.integration

BTC, ETH = SYMBOLS
FAST = PositionParams(safety_interval_s=1.0, agent_interval_s=600.0)


async def eventually(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await fn()
        except RPCError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.2)


async def current_details(handle: WorkflowHandle) -> str:
    meta = await handle.query("__temporal_workflow_metadata")
    return meta.current_details


async def test_workflows_explain_themselves_in_the_ui(dev_env, tmp_path):
    assert await missing_search_attributes(dev_env.client, "default") == []
    ok, _ = await register_search_attributes(dev_env.client, "default")  # idempotent
    assert ok
    decision = [
        TradeDecision(ticker=BTC, action=Action.BUY, position_pct=0.2, reasoning="trend up, RSI 62")
    ]
    script = PriceScript([(0, 100.0)])
    rig = Rig(
        dev_env,
        tmp_path,
        FakeMarket({BTC: script}),
        ScriptedPolicy(lambda c, r: decision if c == 1 else []),
    )
    async with rig.worker():
        handle = await rig.start(position=FAST, search_attributes=True)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
        state = await eventually(
            lambda: _state_with(handle, lambda s: BTC in s.positions and not s.queue)
        )
        pos = state.positions[BTC]
        ph = dev_env.client.get_workflow_handle(pos.workflow_id)
        desc = await eventually(ph.describe)
        summary = await desc.static_summary()
        assert summary.startswith(f"BTC/USDT long {pos.qty:g} @ 100") and "stop 96.19" in summary
        assert 'opened by the rule policy: "trend up, RSI 62"' in summary
        assert pos.position_id in (await desc.static_details())
        attrs = desc.typed_search_attributes
        assert attrs.get(sa.OCW_ACCOUNT) == "t" and attrs.get(sa.OCW_SYMBOL) == BTC
        assert attrs.get(sa.OCW_POSITION_STATUS) == "OPEN"
        details = await eventually(lambda: current_details(ph))
        assert "BTC/USDT" in details and "PnL" in details and "net of fees" in details

        # the decision links to its positions and says who decides
        assert await eventually(lambda: _memo(handle)) == [pos.workflow_id]
        ddesc = await handle.describe()
        assert ddesc.typed_search_attributes.get(sa.OCW_DECIDED_BY) == "rule"
        assert "Equity" in await current_details(handle)

        # the queries a user types into `temporal workflow list --query`
        query = f"OcwSymbol='{BTC}' AND OcwAccount='t' AND OcwPositionStatus='OPEN'"

        async def listed() -> list[str] | None:
            ids = [wf.id async for wf in dev_env.client.list_workflows(query)]
            return ids if pos.workflow_id in ids else None

        assert await eventually(listed) == [pos.workflow_id]
        # and the README's own line, through the temporal CLI
        cli = subprocess.run(
            [
                find_binary("temporal"),
                "workflow",
                "list",
                "--address",
                dev_env.client.service_client.config.target_host,
                "--query",
                f"OcwSymbol='{BTC}'",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == 0 and pos.workflow_id in cli.stdout, cli.stderr

        # activities and timers carry summaries
        await eventually(lambda: _ticked(ph))
        history = await ph.fetch_history()
        summaries = [
            json.loads(e.user_metadata.summary.data)
            for e in history.events
            if e.HasField("user_metadata") and e.user_metadata.HasField("summary")
        ]
        assert any("price of BTC/USDT" in x for x in summaries), summaries
        assert any("safety check" in x for x in summaries), summaries
        dhistory = await handle.fetch_history()
        scheduled = [
            json.loads(e.user_metadata.summary.data)
            for e in dhistory.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.user_metadata.HasField("summary")
        ]
        assert any(x.startswith("place BUY") and "BTC/USDT" in x for x in scheduled)
        assert any(x == "rule policy: decide 2 symbols" for x in scheduled), scheduled

        await ph.signal(PositionWorkflow.exit, "manual")
        await eventually(lambda: _closed(ph))
        attrs = (await ph.describe()).typed_search_attributes
        assert attrs.get(sa.OCW_POSITION_STATUS) == "CLOSED"
        assert attrs.get(sa.OCW_EXIT_REASON) == "manual"
        await eventually(lambda: _memo_empty(handle))


async def _state_with(handle, cond):
    state = await handle.query(DecisionWorkflow.state)
    return state if cond(state) else None


async def _ticked(ph):
    return (await ph.query(PositionWorkflow.status)).safety_checks >= 1


async def _closed(ph):
    desc = await ph.describe()
    return desc.typed_search_attributes.get(sa.OCW_POSITION_STATUS) == "CLOSED"


async def _memo(handle):
    return await (await handle.describe()).memo_value("positions", default=None)


async def _memo_empty(handle):
    return await _memo(handle) in (None, [])  # the server drops an empty list
