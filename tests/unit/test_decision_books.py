"""The DecisionWorkflow's books (workflows/decision_books.py): folding queued wakes, booking a
closed trade once, the marks."""

from __future__ import annotations

import pytest

from trading.models import ClosedTrade, Wake
from trading.state import DecisionState, EngineConfig, OpenPosition, Portfolio, WorkItem
from workflows import decision_books as books


def state(*items: WorkItem) -> DecisionState:
    return DecisionState(
        config=EngineConfig(account="t", symbols=["BTC/USDT", "ETH/USDT"]),
        portfolio=Portfolio(cash=10_000, peak_equity=10_000, equity=10_000),
        queue=list(items),
    )


def w(reason: str, t: int | None = None, *symbols: str) -> WorkItem:
    return WorkItem(kind="wake", wake=Wake(reason=reason, market_time_ms=t, symbols=list(symbols)))


def test_queued_wakes_fold_into_one_with_every_reason_and_the_newest_time():
    s = state(w("a", 1, "BTC/USDT"), w("b", 3, "ETH/USDT"), w("a", 2))
    item = books.next_work_item(s)
    assert item.wake is not None
    assert item.wake.all_reasons() == ["a", "b"]
    assert item.wake.market_time_ms == 3
    assert item.wake.symbols == ["BTC/USDT", "ETH/USDT"]
    assert item.folded == 2 and s.queue == []


def test_folding_takes_only_the_run_of_wakes_at_the_head():
    learn = WorkItem(kind="learn")
    close_all = WorkItem(kind="close_all")
    s = state(w("a", 1), w("b", 2), learn, w("c", 3), close_all, w("d", 4))
    first = books.next_work_item(s)
    assert first.wake is not None and first.wake.all_reasons() == ["a", "b"]
    # first in, first out: what follows is taken in order, nothing further back moves up
    assert [i.kind for i in s.queue] == ["learn", "wake", "close_all", "wake"]
    assert books.next_work_item(s).kind == "learn"
    third = books.next_work_item(s)
    assert third.wake is not None and third.wake.all_reasons() == ["c"]


def test_what_is_taken_never_depends_on_items_further_back():
    """A replay may see a late signal's item that the original run had not seen yet: at the
    tail, so the head is taken the same way."""
    live = state(w("a", 1), w("b", 2))
    replay = state(w("a", 1), w("b", 2), WorkItem(kind="learn"))
    assert books.next_work_item(live) == books.next_work_item(replay)


def test_a_single_wake_is_taken_as_it_is():
    item = w("only", 5)
    s = state(item, WorkItem(kind="close_all"))
    assert books.next_work_item(s) == item
    assert [i.kind for i in s.queue] == ["close_all"]


def test_a_closed_trade_is_booked_once_and_remembers_its_exit_time():
    s = state()
    s.positions["BTC/USDT"] = OpenPosition(
        position_id="p1",
        workflow_id="ocw-position-p1",
        symbol="BTC/USDT",
        qty=1.0,
        avg_entry=100.0,
        entry_time_ms=0,
        cost=100.1,
        fees=0.1,
        last_price=100.0,
    )
    s.portfolio.cash = 10_000 - 100.1
    trade = ClosedTrade(
        trade_id="p1",
        symbol="BTC/USDT",
        qty=1.0,
        entry_price=100.0,
        exit_price=110.0,
        entry_time_ms=0,
        exit_time_ms=7_000,
        fees=0.21,
        pnl=9.79,
        pnl_pct=9.79 / 100.1,
        exit_reason="manual",
    )
    assert books.apply_closed(s, trade, now_ms=1)
    assert not books.apply_closed(s, trade, now_ms=2)  # a second delivery changes nothing
    assert s.portfolio.cash == pytest.approx(10_000 + 9.79)
    assert s.last_exit_ms == {"BTC/USDT": 7_000}
    assert s.counters.positions_closed == 1
    assert [i.kind for i in s.queue] == ["learn"]
