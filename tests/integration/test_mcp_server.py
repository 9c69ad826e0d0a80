"""``ocw mcp`` through the MCP SDK's own client: the read-only views as tools and resources
(in process, over stdio and over streamable HTTP), clear errors, and control tools that exist
only with OCW_MCP_CONTROL=true and then ask for a confirmation.

The account is a real DecisionWorkflow on the dev server (the Rig of the workflow tests: the
paper broker, a scripted market and policy) that has bought BTC, started under the id the
settings expect (``ocw-decision-<account>``), its journal at ``OCW_HOME/journal.db``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import mcp_types as types
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.journal import Journal
from activities.trading import TradingActivities
from tests.integration.procs import free_port, ocw, wait_for
from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig
from trading.config import Settings
from trading.models import Action, PositionParams, TradeDecision, Wake
from trading.state import DecisionInput, EngineConfig
from workers.mcp_server import build_server
from workflows.decision import DecisionWorkflow

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BTC = SYMBOLS[0]
FAST = PositionParams(safety_interval_s=1.0, agent_interval_s=600.0)
READ_TOOLS = {
    "overview",
    "positions",
    "decisions",
    "trades",
    "metrics",
    "learner",
    "regimes",
    "incidents",
    "status",
}
CONTROL_TOOLS = {"halt", "resume", "close_all", "wake"}


@dataclass
class Account:
    settings: Settings
    handle: WorkflowHandle
    rig: Rig

    @property
    def name(self) -> str:
        return self.settings.account

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OCW_", "BINANCE_"))}
        env.update(
            OCW_HOME=str(self.settings.home),
            OCW_TEMPORAL_ADDRESS=self.settings.temporal_address,
            OCW_ACCOUNT=self.name,
            **extra,
        )
        return env


@contextlib.asynccontextmanager
async def running_account(env: WorkflowEnvironment, home: Path) -> AsyncIterator[Account]:
    """An account that has bought BTC on its first decision ("trend up, RSI 62")."""
    name = f"mcp-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        account=name, home=home, temporal_address=env.client.service_client.config.target_host
    )
    buy = [TradeDecision(ticker=BTC, action=Action.BUY, position_pct=0.2, reasoning="trend up")]
    rig = Rig(
        env,
        home,
        FakeMarket({BTC: PriceScript([(0, 100.0)])}),
        ScriptedPolicy(lambda c, r: buy if c == 1 else []),
    )
    # the journal where the views read it
    rig.trading = TradingActivities(rig.broker, Journal(settings.paths()["journal_db"]), env.client)
    config = EngineConfig(
        account=name,
        symbols=SYMBOLS,
        trading_task_queue=rig.queue,
        market_task_queue=rig.queue,
        initial_cash=10_000,
        position=FAST,
    )
    async with rig.worker():
        handle = await env.client.start_workflow(
            DecisionWorkflow.run,
            DecisionInput(config=config),
            id=settings.decision_workflow_id,
            task_queue=rig.queue,
        )
        rig.track(handle.id)
        await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))

        async def bought():
            s = await handle.query(DecisionWorkflow.state)
            return BTC in s.positions and not s.queue

        await wait_for(bought, 20, "the BTC buy")
        yield Account(settings, handle, rig)


@pytest_asyncio.fixture(scope="module")
async def account(dev_env, tmp_path_factory) -> AsyncIterator[Account]:
    async with running_account(dev_env, tmp_path_factory.mktemp("mcp")) as acc:
        yield acc


def data(result: types.CallToolResult) -> dict:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # the text block carries the same JSON, for clients that read only text
    assert json.loads(result.content[0].text)
    return result.structured_content


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error
    text = " ".join(c.text for c in result.content)
    assert "Traceback" not in text
    return text


async def test_tools_and_resources_in_process(account, dev_env):
    server = build_server(account.settings, client=dev_env.client, control=False)
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == READ_TOOLS  # control tools are absent by default
        for tool in tools.values():
            assert tool.description and tool.output_schema and tool.annotations.read_only_hint

        overview = data(await client.call_tool("overview", {}))
        assert overview["account"] == account.name and overview["halted"] is None
        assert [p["symbol"] for p in overview["positions"]] == [BTC]
        assert 0 < overview["exposure"] < 0.25 and overview["equity"] > 9_900

        positions = data(await client.call_tool("positions", {}))["positions"]
        (btc,) = positions
        assert btc["symbol"] == BTC and btc["qty"] > 0 and btc["avg_entry"] == 100.0
        assert btc["stop"] is not None and btc["stop"] < 100 and btc["answered"]

        decisions = data(await client.call_tool("decisions", {"limit": 5}))["decisions"]
        assert any(
            d["wake_reasons"] == ["w1"] and any("BUY: trend up" in r for r in d["reasoning"])
            for d in decisions
        ), decisions
        assert data(await client.call_tool("trades", {}))["trades"] == []
        assert data(await client.call_tool("metrics", {}))["initial_cash"] == 10_000
        assert "sets" in data(await client.call_tool("learner", {}))
        assert "regimes" in data(await client.call_tool("regimes", {}))
        assert "incidents" in data(await client.call_tool("incidents", {"limit": 3}))
        assert data(await client.call_tool("status", {}))["account"] == account.name
        bad = await client.call_tool("decisions", {"limit": 0})  # out of range: a clear error
        assert "limit" in error_text(bad)

        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"ocw://overview", "ocw://positions", "ocw://trades"} <= uris
        read = await client.read_resource("ocw://positions")
        (content,) = read.contents
        assert content.mime_type == "application/json"
        assert json.loads(content.text)["positions"][0]["symbol"] == BTC


async def test_errors_are_one_clear_line(dev_env, tmp_path):
    target = dev_env.client.service_client.config.target_host
    nobody = Settings(account="nobody", home=tmp_path, temporal_address=target)
    async with Client(build_server(nobody, client=dev_env.client, control=False)) as client:
        text = error_text(await client.call_tool("overview", {}))
        assert "no running account 'nobody'" in text and "ocw-decision-nobody" in text
        with pytest.raises(MCPError, match="no running account 'nobody'"):
            await client.read_resource("ocw://overview")
        # the journal's views need no Temporal: empty, not an error
        assert data(await client.call_tool("trades", {}))["trades"] == []

    # a workflow no worker serves: the query is bounded, and says what to start
    stuck = Settings(
        account=f"stuck-{uuid.uuid4().hex[:6]}", home=tmp_path, temporal_address=target
    )
    config = EngineConfig(
        account=stuck.account,
        symbols=SYMBOLS,
        trading_task_queue="no-worker",
        market_task_queue="no-worker",
        initial_cash=1_000,
    )
    handle = await dev_env.client.start_workflow(
        DecisionWorkflow.run,
        DecisionInput(config=config),
        id=stuck.decision_workflow_id,
        task_queue="no-worker",
    )
    try:
        server = build_server(stuck, client=dev_env.client, control=False, timeout_s=1)
        async with Client(server) as client:
            text = error_text(await client.call_tool("overview", {}))
            assert "did not answer within 1 s; is `ocw worker` running?" in text
    finally:
        await handle.terminate(reason="test over")

    down = Settings(account="x", home=tmp_path, temporal_address=f"127.0.0.1:{free_port()}")
    async with Client(build_server(down, control=False)) as client:
        text = error_text(await client.call_tool("positions", {}))
        assert "cannot reach Temporal at 127.0.0.1:" in text and "ocw server" in text


async def test_a_journal_database_error_is_one_line_without_the_password(dev_env, tmp_path):
    secret, port = "pw-not-shown-4711", free_port()
    url = f"postgresql://ocw:{secret}@127.0.0.1:{port}/ocw"
    s = Settings(account="x", home=tmp_path, db_url=url)
    async with Client(build_server(s, client=dev_env.client, control=False)) as client:
        text = error_text(await client.call_tool("trades", {}))
    assert f"trades: cannot reach the journal database at 127.0.0.1:{port}/ocw: " in text
    assert secret not in text and "postgresql://" not in text


async def test_stdio_subprocess(account):
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "workers.cli", "mcp"], env=account.env(), cwd=REPO
    )
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == READ_TOOLS
        assert data(await client.call_tool("overview", {}))["account"] == account.name
        positions = data(await client.call_tool("positions", {}))["positions"]
        assert [p["symbol"] for p in positions] == [BTC]
        read = await client.read_resource("ocw://overview")
        assert json.loads(read.contents[0].text)["account"] == account.name


async def test_streamable_http_subprocess_with_control(account, tmp_path):
    port = free_port()
    log = tmp_path / "mcp.log"
    proc = ocw(["mcp", "--http", "--port", str(port)], account.env(OCW_MCP_CONTROL="true"), log)
    try:
        await wait_for(lambda: _listening(port), 20, "ocw mcp --http")
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == READ_TOOLS | CONTROL_TOOLS
            positions = data(await client.call_tool("positions", {}))["positions"]
            assert [p["symbol"] for p in positions] == [BTC]
            # this client cannot elicit: a control tool refuses without confirm: true
            text = error_text(await client.call_tool("halt", {"reason": "over http"}))
            assert "confirm: true" in text and "nothing changed" in text
            read = await client.read_resource("ocw://trades")
            assert json.loads(read.contents[0].text)["trades"] == []
        status = await account.handle.query(DecisionWorkflow.status)
        assert not status.portfolio.entries_blocked
    finally:
        proc.terminate()
        code = proc.wait(10)
    assert code == 0, log.read_text()
    assert f"on http://127.0.0.1:{port}/mcp, control tools on" in log.read_text()


async def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Answers:
    """An elicitation callback that answers from a list, recording the questions."""

    def __init__(self, *answers: types.ElicitResult) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    async def __call__(self, context, params) -> types.ElicitResult:
        self.questions.append(params.message)
        return self.answers.pop(0)


def accept(confirm: bool = True) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"confirm": confirm})


async def test_control_tools_ask_for_confirmation(dev_env, tmp_path):
    async with running_account(dev_env, tmp_path) as acc:
        server = build_server(acc.settings, client=dev_env.client, control=True)

        async def halted() -> str | None:
            return (await acc.handle.query(DecisionWorkflow.status)).portfolio.halt_reason or None

        # no elicitation: confirm: true is needed
        async with Client(server) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == READ_TOOLS | CONTROL_TOOLS
            (halt,) = [t for t in (await client.list_tools()).tools if t.name == "halt"]
            assert "confirm: true" in halt.description and "elicitation" in halt.description
            assert "confirm: true" in error_text(await client.call_tool("halt", {}))
            assert await halted() is None
            done = data(await client.call_tool("halt", {"reason": "mcp test", "confirm": True}))
            assert done["ok"] and "entries halted" in done["answer"]
            assert await halted() == "manual: mcp test"

        # elicitation (the modern protocol's input_required round): decline, then unchecked
        answers = Answers(types.ElicitResult(action="decline"), accept(False), accept())
        async with Client(server, elicitation_callback=answers) as client:
            refused = error_text(await client.call_tool("resume", {"confirm": True}))
            assert "not confirmed (answer: decline)" in refused
            refused = error_text(await client.call_tool("resume", {}))
            assert "not confirmed (answer: no)" in refused
            assert await halted() == "manual: mcp test"
            done = data(await client.call_tool("resume", {}))
            assert "entries allowed again" in done["answer"]
            assert await halted() is None
        assert f"account {acc.name}" in answers.questions[0]

        # elicitation over the handshake protocol (a request back to the client mid-call)
        answers = Answers(accept(), accept())
        async with Client(server, mode="legacy", elicitation_callback=answers) as client:
            done = data(await client.call_tool("close_all", {"reason": "mcp"}))
            assert "closing 1 position(s)" in done["answer"]

            async def closed():
                trades = data(await client.call_tool("trades", {}))["trades"]
                return trades if trades else None

            (trade,) = await wait_for(closed, 20, "the closed trade in the journal")
            assert trade["symbol"] == BTC and trade["exit_reason"]

            async def flat():
                return data(await client.call_tool("positions", {}))["positions"] == []

            await wait_for(flat, 20, "no open position")
            assert "wake sent" in data(await client.call_tool("wake", {}))["answer"]
        assert "Sell every open position" in answers.questions[0]
