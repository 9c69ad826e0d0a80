"""Claude in the workflows, on the time-skipping server, against the local Messages API server.

The real LLM activities and the real anthropic client talk to tests/servers/fake_anthropic.py;
the market is scripted and the rule policy is the ScriptedPolicy (source "test"), so each test
can tell who decided. Covers: a decision executed end to end, the circuit breaker (529 and 500
until it opens, the rule policy taking over, the half-open probe closing it), the daily budget
(fallback, then the next market day resumes) and an LLM EXIT on the position's agent timer.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.llm_agent import LLMActivities, LLMConfig
from activities.llm_cache import LLMStore
from tests.llm_plans import exit_plan
from tests.servers.fake_anthropic import FakeAnthropic, error_reply, tool_reply
from tests.workflows.fakes import FakeMarket, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig, _until
from trading.agent_contract import DECISION_TOOL, EVALUATION_TOOL, AgentLimits
from trading.circuit_breaker import BreakerParams
from trading.models import Wake
from trading.state import DecisionState, LLMSettings
from workflows.decision import DecisionWorkflow

KEY = "fake-test-key-workflow"
USAGE = {"input_tokens": 1000, "output_tokens": 300, "cache_read_input_tokens": 2000}


def buy(symbol: str = "BTC/USDT", pct: float = 0.2) -> dict:
    return {
        "decisions": [
            {
                "ticker": symbol,
                "action": "BUY",
                "position_pct": pct,
                "confidence": 0.8,
                "reasoning": "trend",
                "signal_weights": {"trend": 0.6},
                "exit_plan": exit_plan(100.0, symbol),  # FakeMarket's price
            }
        ],
        "market_assessment": "constructive",
        "next_check_seconds": 1800,
        "memory_update": "bought BTC",
    }


HOLD = {"decisions": [], "market_assessment": "quiet"}


class LLMRig(Rig):
    """The decision-workflow rig plus the real LLM activities against the local server."""

    def __init__(self, env: WorkflowEnvironment, tmp: Path, server: FakeAnthropic) -> None:
        super().__init__(env, tmp, FakeMarket(), ScriptedPolicy())
        self.server = server
        self.llm = LLMActivities(
            LLMConfig(limits=AgentLimits(universe=SYMBOLS), timeout_s=5.0),
            LLMStore(tmp / "llm.db"),
            env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.base_url},
        )
        self.extra_activities = self.llm.all()

    async def start(self, llm: LLMSettings) -> WorkflowHandle:  # type: ignore[override]
        return await super().start(llm=llm)


until = _until


async def wake_and_wait(handle: WorkflowHandle, env: WorkflowEnvironment, n: int) -> DecisionState:
    await handle.signal(DecisionWorkflow.wake, Wake(reason=f"test-{n}"))
    return await until(handle, lambda s: s.counters.wakes_handled >= n and not s.queue, env)


async def flatten(handle: WorkflowHandle, env: WorkflowEnvironment) -> None:
    await handle.signal(DecisionWorkflow.close_all)
    await until(handle, lambda s: not s.positions and not s.queue, env)


async def test_llm_decision_is_executed_and_priced(ts_env, tmp_path, anthropic_server) -> None:
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    anthropic_server.push(tool_reply(DECISION_TOOL, buy(), USAGE))
    async with rig.worker():
        handle = await rig.start(LLMSettings(enabled=True, position_eval_interval_s=10**6))
        state = await wake_and_wait(handle, ts_env, 1)
        assert state.decided_by == "llm"
        assert "BTC/USDT" in state.positions
        assert state.memory == "bought BTC"
        assert state.gate.next_check_seconds == 1800
        assert state.llm_spend.total_calls == 1 and state.llm_spend.total_usd > 0
        assert state.llm_spend.input_tokens == 1000
        assert state.decision_log[-1].source == "llm"
        assert not rig.policy.requests  # the rule policy was not asked
        status = await handle.query(DecisionWorkflow.status)
        assert status.llm is not None and status.llm.breaker_phase == "closed"
        # the agent layer asked the LLM about the new position (first check): answer HOLD
        anthropic_server.push(
            tool_reply(EVALUATION_TOOL, {"verdict": "HOLD", "confidence": 0.5, "reasoning": "ok"})
        )
        await flatten(handle, ts_env)
    body = anthropic_server.requests[0].body
    assert KEY not in anthropic_server.requests[0].raw
    assert body["model"] == "claude-sonnet-4-6"


async def test_breaker_opens_rule_policy_takes_over_and_probe_closes_it(
    ts_env, tmp_path, anthropic_server
) -> None:
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    # three cycles, each three attempts: overloaded, server errors
    for _ in range(3):
        anthropic_server.push(
            error_reply(529, "overloaded_error"),
            error_reply(500, "api_error"),
            error_reply(529, "overloaded_error"),
        )
    llm = LLMSettings(enabled=True, breaker=BreakerParams(failure_threshold=3, open_ms=900_000))
    async with rig.worker():
        handle = await rig.start(llm)
        for n in (1, 2):
            state = await wake_and_wait(handle, ts_env, n)
            assert state.breaker.phase == "closed" and state.breaker.consecutive_failures == n
            assert state.decided_by.startswith("rule: LLM failed (LLMOverloaded")
        state = await wake_and_wait(handle, ts_env, 3)
        assert state.breaker.phase == "open" and state.breaker.trips == 1
        assert len(rig.policy.requests) == 3  # the rule policy decided every failed cycle
        calls = len(anthropic_server.requests)
        assert calls == 9

        state = await wake_and_wait(handle, ts_env, 4)  # breaker open: no call at all
        assert len(anthropic_server.requests) == calls
        assert state.decided_by.startswith("rule: LLM circuit breaker open")
        assert any("rule policy decides" in a for a in state.decision_log[-1].actions)
        status = await handle.query(DecisionWorkflow.status)
        assert status.llm is not None and status.llm.breaker.startswith("open for")

        await ts_env.sleep(timedelta(minutes=16))
        anthropic_server.push(tool_reply(DECISION_TOOL, HOLD, USAGE))
        state = await wake_and_wait(handle, ts_env, 5)
        assert state.breaker.phase == "closed" and state.breaker.probes == 1
        assert state.decided_by == "llm"
        assert any("probe succeeded" in a for a in state.decision_log[-1].actions)
        assert len(rig.policy.requests) == 4


async def test_failed_probe_reopens_for_another_period(ts_env, tmp_path, anthropic_server) -> None:
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    anthropic_server.push(*[error_reply(401, "authentication_error")] * 1)  # final at once
    llm = LLMSettings(enabled=True, breaker=BreakerParams(failure_threshold=1, open_ms=900_000))
    async with rig.worker():
        handle = await rig.start(llm)
        state = await wake_and_wait(handle, ts_env, 1)
        assert state.breaker.phase == "open"
        assert "LLMAuthError" in state.breaker.last_error and KEY not in state.breaker.last_error
        await ts_env.sleep(timedelta(minutes=16))
        anthropic_server.push(error_reply(400, "invalid_request_error"))
        state = await wake_and_wait(handle, ts_env, 2)
        assert state.breaker.phase == "open" and state.breaker.trips == 2
        assert len(anthropic_server.requests) == 2


async def test_budget_spent_falls_back_until_the_next_day(ts_env, tmp_path, anthropic_server):
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    anthropic_server.push(tool_reply(DECISION_TOOL, HOLD, USAGE))
    async with rig.worker():
        handle = await rig.start(LLMSettings(enabled=True, daily_budget_usd=0.001))
        state = await wake_and_wait(handle, ts_env, 1)
        assert state.decided_by == "llm" and state.llm_spend.day_usd > 0.001
        state = await wake_and_wait(handle, ts_env, 2)
        assert state.decided_by.startswith("rule: LLM daily budget of $0.00 spent")
        assert len(anthropic_server.requests) == 1
        await ts_env.sleep(timedelta(hours=24))
        anthropic_server.push(tool_reply(DECISION_TOOL, HOLD, USAGE))
        state = await wake_and_wait(handle, ts_env, 3)
        assert state.decided_by == "llm"
        assert state.llm_spend.total_calls == 2 and len(anthropic_server.requests) == 2


async def test_no_llm_configured_means_rule_policy_and_no_call(ts_env, tmp_path, anthropic_server):
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    async with rig.worker():
        handle = await rig.start(LLMSettings(enabled=False))
        state = await wake_and_wait(handle, ts_env, 1)
    assert state.decided_by == "rule: no LLM configured"
    assert not anthropic_server.requests and len(rig.policy.requests) == 1


async def test_llm_exit_on_the_agent_timer_closes_the_position(ts_env, tmp_path, anthropic_server):
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    anthropic_server.push(
        tool_reply(DECISION_TOOL, buy("ETH/USDT"), USAGE),
        tool_reply(
            EVALUATION_TOOL,
            {"verdict": "EXIT", "confidence": 0.9, "reasoning": "momentum has turned"},
            USAGE,
        ),
    )
    async with rig.worker():
        handle = await rig.start(LLMSettings(enabled=True))
        state = await wake_and_wait(handle, ts_env, 1)
        assert "ETH/USDT" in state.positions
        await ts_env.sleep(timedelta(minutes=4))  # past the 3-minute agent timer
        state = await until(handle, lambda s: s.counters.positions_closed == 1, ts_env)
    trade = state.recent_trades[-1]
    assert trade.symbol == "ETH/USDT" and trade.exit_reason == "llm_exit"
    assert state.llm_spend.total_calls == 2  # the position's call was counted on the budget
    assert anthropic_server.requests[1].body["tool_choice"]["name"] == EVALUATION_TOOL


async def test_rule_policy_trades_on_candle_closes_not_on_outlier_wakes(
    ts_env, tmp_path, anthropic_server
) -> None:
    rig = LLMRig(ts_env, tmp_path, anthropic_server)
    async with rig.worker():
        handle = await rig.start(LLMSettings(enabled=False))
        for n, reason in enumerate(
            ["zscore:BTC/USDT:1h:return:-3.10", "timer:900s", "candle_close:BTC/USDT:4h"], 1
        ):
            await handle.signal(DecisionWorkflow.wake, Wake(reason=reason))
            state = await until(handle, lambda s, n=n: s.counters.wakes_handled == n, ts_env)
    assert len(rig.policy.requests) == 1  # only the candle close asked the rules
    assert rig.policy.requests[0].wake_reasons == ["candle_close:BTC/USDT:4h"]
    waits = [
        e for e in state.decision_log if any("waits for a candle close" in a for a in e.actions)
    ]
    assert len(waits) == 2
