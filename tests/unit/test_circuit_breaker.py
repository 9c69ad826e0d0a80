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


# ---------------------------------------------------------------- overlapping calls (issue 10)


def opened() -> BreakerState:
    s = fail(fail(fail(BreakerState(), 0), 0), 0)
    assert s.phase == "open" and s.open_until_ms == 900_000 and s.trips == 1
    return s


def test_a_success_while_open_does_not_close_it() -> None:
    """A position check already in flight when the breaker opened reports success 150 ms
    later: the breaker stays open until its window ends and the probe succeeds."""
    s = record_success(opened())
    assert s.phase == "open" and s.open_until_ms == 900_000
    assert s.consecutive_failures == 3 and s.successes == 1
    assert allow_call(s, 150) == (False, s)
    ok, s = allow_call(s, 900_000)
    assert ok and s.phase == "half_open"
    assert record_success(s).phase == "closed"


def test_failures_while_open_neither_trip_again_nor_extend_it() -> None:
    s = opened()
    for now in (100, 200, 300):
        s = record_failure(s, now, "late failure", P)
    assert s.phase == "open" and s.trips == 1 and s.open_until_ms == 900_000
    assert s.failures == 6 and s.consecutive_failures == 3
    assert s.last_error == "HTTP 529 overloaded"  # the error that opened it
    ok, s = allow_call(s, 900_000)  # the window ends when it was meant to
    assert ok and s.phase == "half_open"


def test_an_expired_open_breaker_is_still_open_until_the_probe_is_let_through() -> None:
    s = record_failure(opened(), 1_000_000, "late", P)  # window over, no call allowed yet
    assert s.phase == "open" and s.open_until_ms == 900_000 and s.trips == 1
    s = record_success(s)
    assert s.phase == "open"
    assert allow_call(s, 1_000_001)[1].phase == "half_open"


def test_success_in_closed_resets_and_describe_still_reads() -> None:
    s = record_success(fail(BreakerState(), 0))
    assert s.phase == "closed" and s.consecutive_failures == 0 and describe(s, 0) == "closed"
    assert describe(fail(BreakerState(), 0), 0) == "closed (1 recent failure(s))"
    assert describe(opened(), 300_000) == "open for 600s more after HTTP 529 overloaded"
    assert describe(allow_call(opened(), 900_000)[1], 900_000) == "half-open (probing)"
