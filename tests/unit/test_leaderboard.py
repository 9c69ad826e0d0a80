"""The arena's leaderboard (trading/leaderboard.py): return, Sharpe, drawdown, ranking."""

from __future__ import annotations

import math

import pytest

from trading.leaderboard import (
    DAY_MS,
    HOUR_MS,
    AgentStatus,
    leaderboard,
    max_drawdown,
    render,
    sampled,
    sharpe,
    sharpe_step_ms,
)
from trading.llm_budget import LLMSpend
from trading.state import (
    Counters,
    EngineConfig,
    EquityMark,
    GateSettings,
    LLMStatus,
    Portfolio,
    StatusView,
)

T0 = 1_740_000_000_000


def marks(values: list[float], step_ms: int = DAY_MS, bench: list[float] | None = None):
    return [
        EquityMark(time_ms=T0 + i * step_ms, equity=v, benchmark=bench[i] if bench else None)
        for i, v in enumerate(values)
    ]


def view(equity_marks, equity: float, fees: float = 0.0, closed: int = 0, llm_usd: float = 0.0):
    cfg = EngineConfig(account="a", symbols=["BTC/USDT"], initial_cash=10_000.0)
    spend = LLMSpend(total_usd=llm_usd, total_calls=3 if llm_usd else 0)
    return StatusView(
        account="a",
        portfolio=Portfolio(
            cash=equity, peak_equity=max(equity, 10_000), equity=equity, fees_paid=fees
        ),
        positions=[],
        gate=GateSettings(),
        memory="",
        last_decision=None,
        recent_trades=[],
        counters=Counters(positions_closed=closed, cycles=len(equity_marks)),
        queue_length=0,
        busy=False,
        llm=LLMStatus(
            enabled=llm_usd > 0,
            breaker="closed",
            breaker_phase="closed",
            decided_by="llm" if llm_usd else "rule: no LLM configured",
            spend=spend,
            daily_budget_usd=0.5,
        ),
        config=cfg,
        equity_marks=equity_marks,
    )


def test_max_drawdown_from_the_running_peak_with_the_initial_cash_first() -> None:
    assert max_drawdown(marks([10_000, 11_000, 9_900, 10_500]), 10_000) == pytest.approx(0.1)
    assert max_drawdown(marks([9_000, 9_500]), 10_000) == pytest.approx(0.1)
    assert max_drawdown(marks([10_000, 10_100, 10_200]), 10_000) == 0.0
    assert max_drawdown([], 10_000) == 0.0


def test_sharpe_of_daily_marks_matches_the_textbook_formula() -> None:
    values = [10_000, 10_100, 10_050, 10_200, 10_300, 10_250]
    rets = [b / a - 1 for a, b in zip(values, values[1:], strict=False)]
    mean = sum(rets) / len(rets)
    sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
    assert sharpe(marks(values), DAY_MS) == pytest.approx(mean / sd * math.sqrt(365))


def test_sharpe_needs_three_steps_and_a_moving_curve() -> None:
    assert sharpe(marks([10_000, 10_100, 10_200]), DAY_MS) is None  # two returns
    assert sharpe(marks([10_000] * 10), DAY_MS) is None  # flat
    assert sharpe([], DAY_MS) is None


def test_irregular_marks_are_sampled_on_a_regular_grid() -> None:
    pts = [
        EquityMark(time_ms=T0, equity=100.0),
        EquityMark(time_ms=T0 + 30 * 60_000, equity=101.0),  # between steps: not its own step
        EquityMark(time_ms=T0 + 2 * HOUR_MS, equity=102.0),
        EquityMark(time_ms=T0 + 5 * HOUR_MS + 1, equity=99.0),
    ]
    assert sampled(pts, HOUR_MS) == [100.0, 101.0, 102.0, 102.0, 102.0, 102.0, 99.0]


def test_the_grid_follows_the_span() -> None:
    assert sharpe_step_ms(marks([1, 2], 20 * DAY_MS)) == DAY_MS
    assert sharpe_step_ms(marks([1, 2, 3], DAY_MS)) == 4 * HOUR_MS
    assert sharpe_step_ms(marks([1, 2], HOUR_MS)) == HOUR_MS


def test_leaderboard_ranks_by_return_and_keeps_unreadable_agents_last() -> None:
    up = marks(
        [10_000, 10_200, 10_100, 10_400, 10_600], bench=[10_000, 10_100, 10_000, 9_900, 9_800]
    )
    down = marks([10_000, 9_800, 9_900, 9_700, 9_500])
    board = leaderboard(
        "arena",
        [
            AgentStatus("rule", "arena-rule", "rule", view(down, 9_500, fees=12.5, closed=4)),
            AgentStatus("missing", "arena-missing", "family:tsmom", error="not started"),
            AgentStatus(
                "claude", "arena-claude", "claude claude-sonnet-4-6", view(up, 10_600, 8.0, 2, 0.12)
            ),
        ],
    )
    first, second, third = board.rows
    assert (first.agent, first.rank) == ("claude", 1)
    assert first.return_pct == pytest.approx(0.06)
    assert first.llm_cost_usd == pytest.approx(0.12) and first.llm_calls == 3
    assert first.trades == 2 and first.fees == 8.0 and first.decided_by == "llm"
    assert first.sharpe is not None and first.sharpe > 0
    assert (second.agent, second.rank) == ("rule", 2)
    assert second.return_pct == pytest.approx(-0.05)
    assert second.max_drawdown == pytest.approx(0.05)
    assert second.sharpe is not None and second.sharpe < 0
    assert (third.agent, third.rank, third.status) == ("missing", 0, "not started")
    assert board.benchmark_return == pytest.approx(-0.02)
    assert board.sharpe_step == "4h"
    text = render(board)
    assert "arena arena (running)" in text
    assert "claude claude-sonnet-4-6" in text and "+6.00%" in text and "not started" in text
    assert "buy-and-hold (equal weight) -2.00%" in text


def test_an_agent_without_marks_yet_has_a_return_and_no_sharpe() -> None:
    board = leaderboard("a", [AgentStatus("rule", "a-rule", "rule", view([], 10_000))])
    row = board.rows[0]
    assert row.return_pct == 0.0 and row.sharpe is None and row.max_drawdown == 0.0
