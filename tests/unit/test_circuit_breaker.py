"""Circuit breaker and daily LLM budget: the pure state machines the DecisionWorkflow keeps."""

from __future__ import annotations

from trading.circuit_breaker import (
    BreakerParams,
    BreakerState,
    allow_call,
    describe,
    record_failure,
    record_success,
)
from trading.llm_budget import LLMSpend, budget_left, day_key, over_budget, record_call

P = BreakerParams(failure_threshold=3, open_ms=900_000)


def fail(state: BreakerState, now: int) -> BreakerState:
    return record_failure(state, now, "HTTP 529 overloaded", P)


def test_three_consecutive_failures_open_it_for_15_minutes() -> None:
    s = BreakerState()
    s = fail(fail(s, 0), 1)
    assert s.phase == "closed" and s.consecutive_failures == 2
    assert allow_call(s, 2)[0]
    s = fail(s, 2)
    assert s.phase == "open" and s.open_until_ms == 2 + 900_000 and s.trips == 1
    assert allow_call(s, 2 + 899_999) == (False, s)
    assert "open for" in describe(s, 10)


def test_a_success_between_failures_resets_the_count() -> None:
    s = fail(fail(BreakerState(), 0), 1)
    s = record_success(s)
    s = fail(fail(s, 2), 3)
    assert s.phase == "closed"


def test_half_open_probe_success_closes() -> None:
    s = fail(fail(fail(BreakerState(), 0), 0), 0)
    ok, s = allow_call(s, 900_000)
    assert ok and s.phase == "half_open" and s.probes == 1
    s = record_success(s)
    assert s.phase == "closed" and s.consecutive_failures == 0 and s.open_until_ms is None


def test_half_open_probe_failure_reopens_at_once() -> None:
    s = fail(fail(fail(BreakerState(), 0), 0), 0)
    _, s = allow_call(s, 1_000_000)
    s = fail(s, 1_000_000)
    assert s.phase == "open" and s.open_until_ms == 1_900_000 and s.trips == 2
    assert not allow_call(s, 1_899_999)[0]


def test_error_text_is_bounded() -> None:
    s = record_failure(BreakerState(), 0, "x" * 5000, P)
    assert len(s.last_error) == 200


DAY = 86_400_000


def test_day_key_is_utc_calendar_day() -> None:
    assert day_key(0) == "1970-01-01"
    assert day_key(1_767_225_600_000) == "2026-01-01"
    assert day_key(1_767_225_600_000 - 1) == "2025-12-31"


def test_budget_spent_then_next_day_resumes() -> None:
    t = 1_767_225_600_000
    s = LLMSpend()
    assert budget_left(s, t, None) is None and not over_budget(s, t, None)
    s = record_call(s, t, 0.6, input_tokens=1000, output_tokens=200, cache_read_tokens=800)
    s = record_call(s, t + 1000, 0.5)
    assert s.day_calls == 2 and round(s.day_usd, 6) == 1.1
    assert over_budget(s, t + 2000, 1.0)
    assert not over_budget(s, t + DAY, 1.0)  # next day
    assert budget_left(s, t + DAY, 1.0) == 1.0
    s = record_call(s, t + DAY, 0.25, replayed=False)
    assert s.day_usd == 0.25 and round(s.total_usd, 6) == 1.35 and s.total_calls == 3
    assert s.input_tokens == 1000 and s.cache_read_tokens == 800


def test_negative_costs_never_refund() -> None:
    s = record_call(LLMSpend(), 0, -5.0, input_tokens=-3)
    assert s.day_usd == 0.0 and s.input_tokens == 0
