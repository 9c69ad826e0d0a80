"""Record the workflow histories that ``tests/replay/test_replay_histories.py`` replays.

    .venv/bin/python -m tests.replay.record_histories            # (re)write tests/replay/histories/
    .venv/bin/python -m tests.replay.record_histories --check    # record into a temp dir, write nothing
    .venv/bin/python -m tests.replay.record_histories --only position_stop_loss decision_can
    .venv/bin/python -m tests.replay.record_histories --out tests/replay/histories/v0.1

Each scenario drives the project's real DecisionWorkflow / PositionWorkflow on Temporal's
time-skipping test server with the workflow-test rig (``tests/workflows``): scripted market and
policy at the activity seam, the real paper broker, journal and learner, the real LLM
activities against the local Messages API stand-in. Each run of each workflow of interest is
written as ``<scenario file name>.json`` (``..._runN`` for the runs of a continue-as-new chain).
Before anything is written, every recorded history is replayed with the current code: a
recording that does not replay (a non-deterministic workflow, or a rig problem) writes nothing
and exits non-zero. Only the files named by the scenarios are replaced; other JSON files in the
folder (e.g. kept histories of an older release) are left alone and listed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.llm_agent import LLMActivities, LLMConfig
from activities.llm_cache import LLMStore
from tests.llm_plans import exit_plan
from tests.replay import replaying
from tests.servers.fake_anthropic import FakeAnthropic, ScriptedReply, error_reply, tool_reply
from tests.workflows.fakes import FakeMarket, PriceScript, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig, _config, _until
from trading.agent_contract import DECISION_TOOL, EVALUATION_TOOL, AgentLimits
from trading.models import Action, PositionParams, Side, TradeDecision, Wake
from trading.state import (
    DecisionInput,
    DecisionState,
    EvaluateRequest,
    LLMSettings,
    PositionVerdict,
)
from workers.temporal_env import EPHEMERAL_STARTUP, find_binary
from workflows import activity_api as api
from workflows.decision import DecisionWorkflow

BTC, ETH = "BTC/USDT", "ETH/USDT"
MINUTE = timedelta(minutes=1)
# Pauses between the steps of a scenario stay off the positions' 30 s safety grid (77 s: no
# multiple up to 29 pauses lands on it): the time-skipping test server rejects a workflow task
# completion when a timer fires at the instant a signal arrives ("invalid history builder state
# for action") and then stalls. The real server has no such problem. A stalled scenario is
# retried on a fresh test server (see ``record``).
PAUSE = timedelta(seconds=77)


class RecordingError(RuntimeError):
    """A scenario did not do what it is meant to record (the rig or the workflows changed)."""


# ---------------------------------------------------------------- the recorder


@dataclass
class Recorded:
    file: str  # file name without .json
    workflow_id: str
    run_id: str
    history: WorkflowHistory


@dataclass
class Recorder:
    env: WorkflowEnvironment
    tmp: Path
    recorded: list[Recorded] = field(default_factory=list)
    _decisions: list[str] = field(default_factory=list)

    def rig(self, name: str, market: FakeMarket, policy: ScriptedPolicy) -> Rig:
        folder = self.tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        return Rig(self.env, folder, market, policy)

    async def start(self, rig: Rig, position: PositionParams | None = None, **config: Any):
        """Start the rig's DecisionWorkflow; ``position`` replaces the positions' parameters."""
        if position is None:
            handle = await rig.start(**config)
        else:  # the rig's config with other position parameters, started as the rig does
            market_queue = getattr(rig, "market_queue", rig.queue)
            cfg = _config(rig.queue, **config).model_copy(
                update={"position": position, "market_task_queue": market_queue}
            )
            handle = await self.env.client.start_workflow(
                DecisionWorkflow.run,
                DecisionInput(config=cfg),
                id=f"decision-{rig.queue}",
                task_queue=rig.queue,
            )
        self._decisions.append(handle.id)
        return handle

    async def runs(self, workflow_id: str) -> list[tuple[str, WorkflowHistory]]:
        """(run id, history) of every run of a workflow id, first to latest: walks back from the
        latest run along ``continued_execution_run_id``."""
        client: Client = self.env.client
        run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
        chain: list[tuple[str, WorkflowHistory]] = []
        while run_id:
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            history = await handle.fetch_history()
            chain.insert(0, (run_id, history))
            started = history.events[0].workflow_execution_started_event_attributes
            run_id = started.continued_execution_run_id
        return chain

    async def capture(self, file: str, workflow_id: str, *, chain: bool = False) -> None:
        """Keep the workflow's history: one run (``chain=False``, it must not have continued as
        new) or every run of its continue-as-new chain as ``<file>_run1``, ``<file>_run2``…"""
        runs = await self.runs(workflow_id)
        if chain:
            if len(runs) < 2:
                raise RecordingError(f"{file}: {workflow_id} never continued as new")
            for n, (run_id, history) in enumerate(runs, start=1):
                self.recorded.append(Recorded(f"{file}_run{n}", workflow_id, run_id, history))
        else:
            if len(runs) != 1:
                raise RecordingError(
                    f"{file}: {workflow_id} continued as new ({len(runs)} runs): record a "
                    "shorter scenario or capture it with chain=True"
                )
            run_id, history = runs[0]
            self.recorded.append(Recorded(file, workflow_id, run_id, history))

    async def settle(self, handle) -> DecisionState:
        """Wait until the DecisionWorkflow is idle: nothing queued, no position open, no item
        being handled. Call it before the captures and before leaving the worker: a task left
        pending on a queue without a worker stalls the test server's time skipping."""
        while True:
            state = await _until(handle, lambda s: not s.queue and not s.positions, self.env)
            status = await handle.query(DecisionWorkflow.status)
            if not getattr(status, "busy", False):
                return state
            await self.env.sleep(timedelta(seconds=5))

    async def cleanup(self) -> None:
        """DecisionWorkflows never end: terminate them (after their capture) so that no run is
        left on the server."""
        for workflow_id in self._decisions:
            with contextlib.suppress(Exception):  # already closed
                await self.env.client.get_workflow_handle(workflow_id).terminate("recorded")
        self._decisions.clear()


# ---------------------------------------------------------------- helpers


async def wake(handle, env: WorkflowEnvironment, n: int, reason: str = "") -> DecisionState:
    """Send wake number ``n`` and wait until it has been handled and the queue is empty."""
    await handle.signal(
        DecisionWorkflow.wake, Wake(reason=reason or f"candle_close:4h:{n}", wake_id=f"w{n}")
    )
    return await _until(handle, lambda s: s.counters.wakes_handled >= n and not s.queue, env)


async def close_all(handle, env: WorkflowEnvironment, closed: int) -> DecisionState:
    """close_all by its signal name, then wait until ``closed`` positions in all have closed."""
    await handle.signal("close_all")
    return await _until(
        handle,
        lambda s: not s.positions and not s.queue and s.counters.positions_closed >= closed,
        env,
    )


def position_ids(state: DecisionState) -> dict[str, tuple[str, str]]:
    """symbol -> (position id, PositionWorkflow id) of the open positions."""
    return {s: (pos.position_id, pos.workflow_id) for s, pos in state.positions.items()}


def buys(rig: Rig, position: tuple[str, str]) -> int:
    """How many BUY fills the broker holds for a position (entry + adds)."""
    return sum(1 for f in rig.broker.fills(position[0]) if f.side == Side.BUY)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise RecordingError(what)


def exit_reasons(state: DecisionState) -> list[str]:
    return [t.exit_reason for t in state.recent_trades]


class VerdictPolicy(ScriptedPolicy):
    """The scripted policy whose agent layer answers from a list of verdicts (then HOLD)."""

    def __init__(self, script, verdicts: list[str]) -> None:
        super().__init__(script)
        self.verdicts = list(verdicts)

    @activity.defn(name=api.EVALUATE_POSITION)
    async def evaluate_position(self, req: EvaluateRequest) -> PositionVerdict:
        verdict = self.verdicts.pop(0) if self.verdicts else "HOLD"
        score = {"ADD": 0.6, "EXIT": -0.6}.get(verdict, 0.0)
        return PositionVerdict(verdict=verdict, score=score, reasons=[f"scripted {verdict}"])


def buy(symbol: str, pct: float, **weights: float) -> TradeDecision:
    return TradeDecision(ticker=symbol, action=Action.BUY, position_pct=pct, signal_weights=weights)


# ---------------------------------------------------------------- scenarios


async def decision_trading(rec: Recorder) -> None:
    """Six wakes: two entries, a decision ADD, a decision SELL, halt / resume, close_all."""
    plan = {
        1: [buy(BTC, 0.2, trend=0.6, volume=0.2)],
        2: [buy(ETH, 0.2, reversion=0.4)],
        3: [TradeDecision(ticker=BTC, action=Action.ADD, position_pct=0.1)],
        4: [TradeDecision(ticker=ETH, action=Action.SELL)],
        5: [buy(ETH, 0.2)],  # halted: skipped
        6: [TradeDecision(ticker="DOGE/USDT", action=Action.BUY, position_pct=0.1)],  # rejected
    }
    market = FakeMarket(
        {BTC: PriceScript([(0, 100.0), (180, 103.0)]), ETH: PriceScript([(0, 50.0), (120, 51.0)])}
    )
    rig = rec.rig("decision_trading", market, ScriptedPolicy(lambda c, r: plan.get(c, [])))
    async with rig.worker():
        handle = await rec.start(rig)
        ids: dict[str, tuple[str, str]] = {}
        for n in range(1, 7):
            if n == 5:
                await handle.signal("halt")
            if n == 6:
                await handle.signal("resume")
            state = await wake(handle, rec.env, n)
            ids.update(position_ids(state))
            await rec.env.sleep(PAUSE)
        state = await close_all(handle, rec.env, closed=2)
        expect(sorted(exit_reasons(state)) == ["close_all", "decision_sell"], exit_reasons(state))
        expect(buys(rig, ids[BTC]) == 2, "the decision's ADD was not filled")
        await rec.settle(handle)
        await rec.capture("decision_trading", handle.id)
        await rec.capture("position_add_then_close_all", ids[BTC][1])
        await rec.capture("position_decision_sell", ids[ETH][1])
        await rec.cleanup()


async def decision_can(rec: Recorder) -> None:
    """Continue-as-new every 2 handled items, with a position opened and sold across runs."""
    plan = {1: [buy(BTC, 0.2, trend=0.5)], 3: [TradeDecision(ticker=BTC, action=Action.SELL)]}
    market = FakeMarket({BTC: PriceScript([(0, 100.0), (120, 102.0)]), ETH: PriceScript([(0, 50)])})
    rig = rec.rig("decision_can", market, ScriptedPolicy(lambda c, r: plan.get(c, [])))
    async with rig.worker():
        handle = await rec.start(rig, max_cycles_per_run=2)
        for n in range(1, 6):
            await wake(handle, rec.env, n)
            await rec.env.sleep(PAUSE)
        state = await _until(
            handle, lambda s: s.counters.positions_closed == 1 and not s.queue, rec.env
        )
        expect(state.counters.continued_as_new >= 2, f"too few hand-overs: {state.counters}")
        await rec.settle(handle)
        await rec.capture("decision_can", handle.id, chain=True)
        await rec.cleanup()


async def position_stop_loss(rec: Recorder) -> None:
    """An entry, then the price falls through the stop: the safety layer exits."""
    market = FakeMarket({BTC: PriceScript([(0, 100.0), (61, 95.5)]), ETH: PriceScript([(0, 50)])})
    plan = {1: [buy(BTC, 0.2)]}
    rig = rec.rig("position_stop_loss", market, ScriptedPolicy(lambda c, r: plan.get(c, [])))
    async with rig.worker():
        handle = await rec.start(rig)
        ids = position_ids(await wake(handle, rec.env, 1))
        await rec.env.sleep(2 * MINUTE)
        state = await _until(handle, lambda s: s.counters.positions_closed == 1, rec.env)
        expect(exit_reasons(state) == ["stop_loss"], f"expected a stop loss: {exit_reasons(state)}")
        await rec.settle(handle)
        await rec.capture("position_stop_loss", ids[BTC][1])
        await rec.cleanup()


async def position_agent_verdicts(rec: Recorder) -> None:
    """The agent layer says ADD (the DecisionWorkflow sizes and sends it), then EXIT."""
    market = FakeMarket({BTC: PriceScript([(0, 100.0), (60, 104.0)]), ETH: PriceScript([(0, 50)])})
    plan = {1: [buy(BTC, 0.2)]}
    policy = VerdictPolicy(lambda c, r: plan.get(c, []), ["ADD", "HOLD", "EXIT"])
    rig = rec.rig("position_agent_verdicts", market, policy)
    async with rig.worker():
        # agent ticks off the 30 s safety grid: the ADD's round trip (add_request to the
        # DecisionWorkflow, add back) must not meet a safety timer firing (see PAUSE)
        handle = await rec.start(rig, position=PositionParams(agent_interval_s=100.0))
        ids = position_ids(await wake(handle, rec.env, 1))
        await rec.env.sleep(10 * MINUTE)
        state = await _until(
            handle, lambda s: s.counters.positions_closed == 1 and not s.queue, rec.env
        )
        expect(exit_reasons(state) == ["agent_exit"], f"expected agent_exit: {exit_reasons(state)}")
        expect(buys(rig, ids[BTC]) == 2, "the agent's ADD was not filled")
        await rec.settle(handle)
        await rec.capture("position_agent_add_exit", ids[BTC][1])
        await rec.capture("decision_agent_add", handle.id)
        await rec.cleanup()


async def position_can(rec: Recorder) -> None:
    """A position that continues as new every 3 ticks until its stop loss."""
    market = FakeMarket({BTC: PriceScript([(0, 100.0), (200, 95.0)]), ETH: PriceScript([(0, 50)])})
    plan = {1: [buy(BTC, 0.2)]}
    rig = rec.rig("position_can", market, ScriptedPolicy(lambda c, r: plan.get(c, [])))
    async with rig.worker():
        handle = await rec.start(rig, max_ticks_per_run=3)
        ids = position_ids(await wake(handle, rec.env, 1))
        await rec.env.sleep(5 * MINUTE)
        state = await _until(handle, lambda s: s.counters.positions_closed == 1, rec.env)
        expect(exit_reasons(state) == ["stop_loss"], f"expected a stop loss: {exit_reasons(state)}")
        await rec.settle(handle)
        await rec.capture("position_can", ids[BTC][1], chain=True)
        await rec.cleanup()


def _llm_responder(body: dict) -> ScriptedReply:
    """Claude stand-in: the first decision buys BTC, later ones hold; position checks HOLD."""
    tool = (body.get("tool_choice") or {}).get("name")
    if tool == EVALUATION_TOOL:
        return tool_reply(tool, {"verdict": "HOLD", "confidence": 0.5, "reasoning": "fine"})
    return tool_reply(tool or DECISION_TOOL, {"decisions": [], "market_assessment": "ok"})


async def decision_llm(rec: Recorder) -> None:
    """Claude decides (BUY), checks the position (HOLD, then EXIT), fails once (rule fallback)."""
    async with FakeAnthropic(responder=_llm_responder) as server:
        market = FakeMarket({BTC: PriceScript([(0, 100.0)]), ETH: PriceScript([(0, 50.0)])})
        rig = rec.rig("decision_llm", market, ScriptedPolicy())
        llm = LLMActivities(
            LLMConfig(limits=AgentLimits(universe=SYMBOLS), timeout_s=5.0),
            LLMStore(rec.tmp / "decision_llm" / "llm.db"),
            env={"ANTHROPIC_API_KEY": "fake-recorder-key", "ANTHROPIC_BASE_URL": server.base_url},
        )
        rig.extra_activities = llm.all()
        bought = {
            "decisions": [
                {
                    "ticker": BTC,
                    "action": "BUY",
                    "position_pct": 0.2,
                    "confidence": 0.8,
                    "reasoning": "trend",
                    "signal_weights": {"trend": 0.6},
                    "exit_plan": exit_plan(100.0),
                }
            ],
            "market_assessment": "constructive",
            "next_check_seconds": 1800,
            "memory_update": "bought BTC",
        }
        server.push(tool_reply(DECISION_TOOL, bought))
        try:
            async with rig.worker():
                handle = await rec.start(
                    rig, llm=LLMSettings(enabled=True, position_eval_interval_s=300)
                )
                state = await wake(handle, rec.env, 1)
                expect(state.decided_by == "llm", f"the LLM did not decide: {state.decided_by}")
                ids = position_ids(state)
                await rec.env.sleep(4 * MINUTE)  # first agent tick: Claude says HOLD
                server.push(*[error_reply(500, "api_error")] * 3)  # the next decision fails
                state = await wake(handle, rec.env, 2, reason="manual")
                expect(state.decided_by.startswith("rule"), f"no fallback: {state.decided_by}")
                server.push(
                    tool_reply(
                        EVALUATION_TOOL,
                        {"verdict": "EXIT", "confidence": 0.9, "reasoning": "momentum turned"},
                    )
                )
                await rec.env.sleep(4 * MINUTE)  # the check after the eval interval: EXIT
                state = await _until(
                    handle, lambda s: s.counters.positions_closed == 1 and not s.queue, rec.env
                )
                expect(exit_reasons(state) == ["llm_exit"], f"no llm_exit: {exit_reasons(state)}")
                await rec.settle(handle)
                await rec.capture("decision_llm", handle.id)
                await rec.capture("position_llm_exit", ids[BTC][1])
                await rec.cleanup()
        finally:
            await llm.aclose()


Scenario = Callable[[Recorder], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {
    "decision_trading": decision_trading,
    "decision_can": decision_can,
    "position_stop_loss": position_stop_loss,
    "position_agent_verdicts": position_agent_verdicts,
    "position_can": position_can,
    "decision_llm": decision_llm,
}


# ---------------------------------------------------------------- record, verify, write


async def start_env() -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=find_binary("temporal-test-server"),
        test_server_startup_timeout=EPHEMERAL_STARTUP,
    )


def _stalled(err: BaseException) -> bool:
    """The test server stopped skipping time (see PAUSE): an RPC or the scenario timed out."""
    if isinstance(err, TimeoutError):
        return True
    return isinstance(err, RPCError) and "timeout" in str(err).lower()


async def record(
    only: list[str] | None = None, attempts: int = 3, scenario_timeout_s: float = 120.0
) -> list[Recorded]:
    """Run the scenarios, each on a fresh time-skipping test server, and return their histories.

    A scenario that stalls the test server is retried on a new one (up to ``attempts``); one
    that does not do what it records raises ``RecordingError`` at once.
    """
    names = only or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise RecordingError(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    recorded: list[Recorded] = []
    with tempfile.TemporaryDirectory(prefix="ocw-record-") as tmp:
        for name in names:
            for attempt in range(1, attempts + 1):
                t0 = time.monotonic()
                env = await start_env()
                rec = Recorder(env, Path(tmp) / f"{name}-{attempt}")
                try:
                    await asyncio.wait_for(SCENARIOS[name](rec), scenario_timeout_s)
                except AssertionError as err:  # _until's "condition not met"
                    raise RecordingError(f"scenario {name}: {err}") from err
                except Exception as err:
                    if not _stalled(err) or attempt == attempts:
                        raise
                    print(f"  {name}: the test server stalled ({err!r}); retrying", flush=True)
                    continue
                finally:
                    with contextlib.suppress(Exception):
                        await rec.cleanup()
                    await env.shutdown()
                recorded += rec.recorded
                files = ", ".join(r.file for r in rec.recorded)
                print(f"  {name}: {files} ({time.monotonic() - t0:.1f}s)", flush=True)
                break
    return recorded


async def verify(recorded: list[Recorded]) -> list[str]:
    """Replay every recorded history with the current code; problems as text (empty: all good)."""
    problems = []
    rep = replaying.replayer()
    for r in recorded:
        outcome = await replaying.replay(r.history, r.file, rep)
        if outcome.error:
            problems.append(f"{r.file}: does not replay: {outcome.error}")
        text = replaying.to_json(r.history)
        if not replaying.size_ok(text):
            problems.append(
                f"{r.file}: {len(text.encode()) / 1000:.0f} kB, over the "
                f"{replaying.MAX_HISTORY_BYTES / 1000:.0f} kB limit: shorten the scenario"
            )
        # the JSON written is the JSON replayed by the test
        again = replaying.load_text(r.file, text)
        if len(again.events) != len(r.history.events):
            problems.append(f"{r.file}: JSON round trip lost events")
    return problems


def write(recorded: list[Recorded], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for r in recorded:
        path = out / f"{r.file}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(replaying.to_json(r.history))
        tmp.replace(path)
        print(
            f"  wrote {path} ({path.stat().st_size / 1000:.0f} kB, {len(r.history.events)} events)"
        )
    written = {f"{r.file}.json" for r in recorded}
    others = [p for p in replaying.history_files(out) if p.name not in written]
    if others:
        print("  left alone (not produced by this recording):")
        for p in others:
            print(f"    {p}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.replay.record_histories", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=replaying.HISTORIES_DIR,
        help="folder to write (default: %(default)s)",
    )
    parser.add_argument(
        "--check", action="store_true", help="record and replay, write nothing (a dry run)"
    )
    parser.add_argument("--only", nargs="+", metavar="SCENARIO", choices=list(SCENARIOS))
    args = parser.parse_args(argv)

    # the scenarios make activities fail on purpose (LLM errors): keep their logs out of sight
    logging.basicConfig(level=logging.ERROR)
    t0 = time.monotonic()
    print("recording on the time-skipping test server:", flush=True)
    try:
        recorded = await record(args.only)
    except RecordingError as err:
        print(f"recording failed, nothing written: {err}", file=sys.stderr)
        return 1
    problems = await verify(recorded)
    if problems:
        print("recorded histories do not verify, nothing written:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{len(recorded)} histories replay cleanly with the current code")
    if args.check:
        print(f"--check: nothing written ({time.monotonic() - t0:.1f}s)")
        return 0
    write(recorded, args.out)
    print(f"done in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
