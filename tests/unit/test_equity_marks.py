"""The account's equity curve in its own state (workflows/decision_books.record_equity_mark)."""

from __future__ import annotations

import pytest

from trading.state import EQUITY_MARKS_KEPT, DecisionState, EngineConfig, Portfolio
from workflows import decision_books as books


def state() -> DecisionState:
    return DecisionState(
        config=EngineConfig(account="t", symbols=["BTC/USDT", "ETH/USDT"]),
        portfolio=Portfolio(cash=10_000, peak_equity=10_000, equity=10_000),
    )


def test_marks_carry_equal_weight_buy_and_hold_from_the_first_mark():
    s = state()
    books.record_equity_mark(s)  # no market time yet: nothing to mark
    assert s.equity_marks == []
    s.last_market_time_ms, s.last_prices = 1_000, {"BTC/USDT": 100.0, "ETH/USDT": 10.0}
    books.record_equity_mark(s)
    s.last_market_time_ms, s.last_prices = 2_000, {"BTC/USDT": 120.0, "ETH/USDT": 8.0}
    s.portfolio.equity = 10_500
    books.record_equity_mark(s)
    first, second = s.equity_marks
    assert first.benchmark == pytest.approx(10_000)
    assert second.equity == 10_500
    assert second.benchmark == pytest.approx(10_000 * (1.2 + 0.8) / 2)
    s.portfolio.equity = 10_600  # the same market time again: replaced, not added
    books.record_equity_mark(s)
    assert len(s.equity_marks) == 2 and s.equity_marks[-1].equity == 10_600


def test_the_history_stays_bounded_and_keeps_its_ends():
    s = state()
    s.last_prices = {"BTC/USDT": 100.0, "ETH/USDT": 10.0}
    for t in range(1, 3 * EQUITY_MARKS_KEPT):
        s.last_market_time_ms = t * 1000
        books.record_equity_mark(s)
    assert len(s.equity_marks) <= EQUITY_MARKS_KEPT
    assert s.equity_marks[0].time_ms == 1000
    assert s.equity_marks[-1].time_ms == (3 * EQUITY_MARKS_KEPT - 1) * 1000
    times = [m.time_ms for m in s.equity_marks]
    assert times == sorted(times)
