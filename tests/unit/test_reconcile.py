"""Reconciliation's comparison (trading/reconcile.py): what it cancels, checks and reports."""

from __future__ import annotations

from trading.models import Side, VenueOrder
from trading.reconcile import BookPosition, ReconcileInput, reconcile, summary_of

ACC = "acct"


def _inp(**kw) -> ReconcileInput:
    base = dict(
        account=ACC,
        time_ms=1,
        books_cash=1_000.0,
        exchange_cash=1_000.0,
        positions=[
            BookPosition(
                position_id="acct-e1-BTC-1",
                symbol="BTC/USDT",
                qty=0.02,
                stop_client_order_id="acct-e1-BTC-1-2",
            )
        ],
        exchange_holdings={"BTC/USDT": 0.02},
        open_orders=[
            VenueOrder(
                client_order_id="acct-e1-BTC-1-2",
                symbol="BTC/USDT",
                side=Side.SELL,
                qty=0.02,
                kind="stop",
                stop_price=46_000,
            )
        ],
        tolerance={"BTC/USDT": 0.00001},
    )
    base.update(kw)
    return ReconcileInput(**base)


def test_books_and_exchange_that_agree_need_nothing():
    report = reconcile(_inp())
    assert report.ok and report.actions == [] and report.mismatches == []


def test_orphan_orders_of_the_engine_are_cancelled_others_left_alone():
    orders = [
        *_inp().open_orders,
        VenueOrder(
            client_order_id="acct-e1-BTC-1-1-old",
            symbol="BTC/USDT",
            side=Side.SELL,
            qty=0.02,
            kind="stop",
        ),
        VenueOrder(client_order_id="acct-e0-ETH-3-4", symbol="ETH/USDT", side=Side.BUY, qty=1),
        VenueOrder(client_order_id="web_abc123", symbol="BTC/USDT", side=Side.BUY, qty=0.5),
    ]
    report = reconcile(_inp(open_orders=orders))
    cancels = [(a.kind, a.target) for a in report.actions]
    assert cancels == [("cancel", "acct-e1-BTC-1-1-old"), ("cancel", "acct-e0-ETH-3-4")]
    assert any("web_abc123" in n and "left alone" in n for n in report.notes)
    assert not report.ok  # until the cancels are done


def test_a_stop_that_ended_at_the_exchange_makes_the_position_look_now():
    report = reconcile(_inp(open_orders=[], exchange_holdings={}))
    assert [(a.kind, a.target) for a in report.actions] == [("check", "acct-e1-BTC-1")]
    assert report.mismatches == []  # explained by the ended stop
    assert report.ok


def test_a_position_the_exchange_no_longer_holds_has_its_books_closed():
    positions = [BookPosition(position_id="acct-e1-BTC-1", symbol="BTC/USDT", qty=0.02)]
    report = reconcile(_inp(positions=positions, open_orders=[], exchange_holdings={}))
    assert [(a.kind, a.target) for a in report.actions] == [("close", "acct-e1-BTC-1")]
    assert "reconciled" in report.actions[0].detail
    assert not report.ok  # until the close is done


def test_less_at_the_exchange_but_not_nothing_is_a_mismatch():
    positions = [BookPosition(position_id="acct-e1-BTC-1", symbol="BTC/USDT", qty=0.02)]
    held = {"BTC/USDT": 0.01}
    report = reconcile(_inp(positions=positions, open_orders=[], exchange_holdings=held))
    assert report.actions == [] and not report.ok
    assert "holds 0.01, the books 0.02" in report.mismatches[0]


def test_dust_within_tolerance_and_foreign_coins_are_no_mismatch():
    report = reconcile(_inp(exchange_holdings={"BTC/USDT": 0.020005 + 1.5}))
    assert report.ok
    assert any("beside the engine's position" in n for n in report.notes)
    dust = reconcile(_inp(exchange_holdings={"BTC/USDT": 0.019995}))
    assert dust.ok


def test_an_untracked_holding_is_adopted_at_the_exchange_price():
    report = reconcile(
        _inp(
            positions=[],
            open_orders=[],
            exchange_holdings={"BTC/USDT": 0.03, "ETH/USDT": 2.0, "DOGE/USDT": 100.0},
            traded=["BTC/USDT", "ETH/USDT"],
            prices={"BTC/USDT": 50_000.0},
            books_cash=1_000.0,
            exchange_cash=500.0,
        )
    )
    adopt = [a for a in report.actions if a.kind == "adopt"]
    assert [(a.symbol, a.qty, a.price) for a in adopt] == [("BTC/USDT", 0.03, 50_000.0)]
    assert any("ETH/USDT" in m and "no price" in m for m in report.mismatches)
    assert any("DOGE/USDT" in n for n in report.notes)  # not traded: not the engine's
    assert any(m.startswith("cash:") for m in report.mismatches)
    summary = summary_of(report)
    assert not summary.ok and summary.mismatches == report.mismatches


def test_an_unwatched_position_is_a_mismatch():
    positions = [
        BookPosition(position_id="acct-e1-BTC-1", symbol="BTC/USDT", qty=0.02, running=False)
    ]
    report = reconcile(_inp(positions=positions))
    assert any("unwatched" in m for m in report.mismatches)
    assert [a.kind for a in report.actions] == ["cancel"]  # its stop is nobody's now


def test_nothing_an_order_in_flight_could_explain_is_acted_on_while_trading():
    # an entry being placed: coins and a working order at the exchange, not yet in the books
    orders = [
        VenueOrder(client_order_id="acct-e1-BTC-2-1", symbol="BTC/USDT", side=Side.BUY, qty=1),
        VenueOrder(
            client_order_id="acct-e1-BTC-1-1-old",
            symbol="BTC/USDT",
            side=Side.SELL,
            qty=0.02,
            kind="stop",
        ),
    ]
    report = reconcile(
        _inp(
            busy=True,
            positions=[],
            open_orders=orders,
            exchange_holdings={"BTC/USDT": 0.05},
            traded=["BTC/USDT"],
            prices={"BTC/USDT": 50_000.0},
            exchange_cash=7_500.0,
            books_cash=10_000.0,
        )
    )
    assert [(a.kind, a.target) for a in report.actions] == [("cancel", "acct-e1-BTC-1-1-old")]
    assert report.mismatches == []
    assert any("deferred" in n for n in report.notes)
    # an exit in flight: the exchange already sold, the books not yet
    exiting = [BookPosition(position_id="acct-e1-BTC-1", symbol="BTC/USDT", qty=0.02, busy=True)]
    report = reconcile(_inp(positions=exiting, open_orders=[], exchange_holdings={}))
    assert report.actions == [] and report.mismatches == []
