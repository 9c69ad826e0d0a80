"""Shorts in reconciliation (trading/reconcile.py) and the exchange side's pure helpers."""

from __future__ import annotations

from activities.exchange_broker import _position_side, _reduce_only
from activities.exchange_stops import _side_of
from trading.models import PositionSide, Side, StopRef, VenueOrder
from trading.reconcile import BookPosition, ReconcileInput, reconcile
from trading.state import AdoptedHolding

ACC = "acct"
BTC = "BTC/USDT"
SHORT = PositionSide.SHORT
LONG = PositionSide.LONG


def _short(**kw) -> BookPosition:
    base = dict(
        position_id="acct-e1-BTC-1",
        symbol=BTC,
        qty=0.02,
        side=SHORT,
        stop_client_order_id="acct-e1-BTC-1-2",
    )
    base.update(kw)
    return BookPosition(**base)


def _inp(**kw) -> ReconcileInput:
    base = dict(
        account=ACC,
        time_ms=1,
        books_cash=1_000.0,
        exchange_cash=1_000.0,
        positions=[_short()],
        exchange_holdings={BTC: -0.02},
        open_orders=[
            VenueOrder(
                client_order_id="acct-e1-BTC-1-2",
                symbol=BTC,
                side=Side.BUY,
                qty=0.02,
                kind="stop",
                stop_price=52_000,
            )
        ],
        traded=[BTC],
        prices={BTC: 50_000.0},
        tolerance={BTC: 0.00001},
        shorts=True,
    )
    base.update(kw)
    return ReconcileInput(**base)


def test_a_short_held_at_the_exchange_as_in_the_books_needs_nothing():
    report = reconcile(_inp())
    assert report.ok and report.actions == [] and report.mismatches == [], report.lines()
    dust = reconcile(_inp(exchange_holdings={BTC: -0.019995}))
    assert dust.ok


def test_a_short_the_exchange_no_longer_holds_has_its_books_closed():
    report = reconcile(_inp(positions=[_short(stop_client_order_id=None)], open_orders=[]))
    assert report.actions == []  # exchange_holdings still -0.02: nothing to do
    gone = reconcile(
        _inp(positions=[_short(stop_client_order_id=None)], open_orders=[], exchange_holdings={})
    )
    assert [(a.kind, a.target, a.side) for a in gone.actions] == [("close", "acct-e1-BTC-1", SHORT)]
    assert "none of its short 0.02" in gone.actions[0].detail
    assert not gone.ok


def test_a_short_whose_stop_ended_is_checked_not_closed():
    report = reconcile(_inp(open_orders=[], exchange_holdings={}))
    assert [(a.kind, a.target) for a in report.actions] == [("check", "acct-e1-BTC-1")]
    assert report.ok and any("a stop ended" in n for n in report.notes)


def test_a_short_bought_back_in_part_outside_the_engine_is_a_mismatch():
    report = reconcile(_inp(exchange_holdings={BTC: -0.01}))
    assert report.actions == [] and not report.ok
    assert "holds short 0.01, the books short 0.02: bought back in part" in report.mismatches[0]


def test_a_long_at_the_exchange_is_not_the_engines_short():
    report = reconcile(
        _inp(
            positions=[_short(stop_client_order_id=None)],
            open_orders=[],
            exchange_holdings={BTC: 0.02},
        )
    )
    assert [(a.kind, a.side) for a in report.actions] == [("close", SHORT)]
    assert any("the other way round" in n for n in report.notes)


def test_a_short_at_the_exchange_is_not_the_engines_long():
    long_ = _short(side=LONG, stop_client_order_id=None)
    report = reconcile(_inp(positions=[long_], open_orders=[], exchange_holdings={BTC: -0.02}))
    assert [(a.kind, a.side) for a in report.actions] == [("close", LONG)]
    assert "none of its 0.02" in report.actions[0].detail  # a long's words, as before


def test_an_untracked_short_is_adopted_as_a_short_when_the_account_trades_them():
    report = reconcile(_inp(positions=[], open_orders=[], exchange_holdings={BTC: -0.03}))
    (action,) = report.actions
    assert (action.kind, action.side, action.qty, action.price) == ("adopt", SHORT, 0.03, 50_000)
    assert action.detail == "a short of 0.03 that no position tracks: adopted at 50000"
    off = reconcile(
        _inp(positions=[], open_orders=[], exchange_holdings={BTC: -0.03}, shorts=False)
    )
    assert off.actions == [] and not off.ok
    assert "not adopted, the account does not trade shorts" in off.mismatches[0]
    busy = reconcile(_inp(positions=[], open_orders=[], exchange_holdings={BTC: -0.03}, busy=True))
    assert busy.actions == [] and any("short 0.03 untracked" in n for n in busy.notes)


def test_an_untracked_long_is_still_adopted_as_a_long():
    report = reconcile(_inp(positions=[], open_orders=[], exchange_holdings={BTC: 0.03}))
    (action,) = report.actions
    assert (action.kind, action.side, action.qty) == ("adopt", LONG, 0.03)
    assert action.detail == "0.03 held that no position tracks: adopted at 50000"


def test_more_short_beside_the_engines_short_is_only_noted():
    report = reconcile(_inp(exchange_holdings={BTC: -0.05}))
    assert report.ok and any("short 0.03 held beside" in n for n in report.notes)


def test_a_short_exit_in_flight_is_deferred():
    report = reconcile(_inp(positions=[_short(busy=True)], exchange_holdings={}))
    assert [a.kind for a in report.actions] == []
    assert any("while trading: deferred" in n for n in report.notes)


def test_a_long_and_a_short_tracked_on_one_symbol_is_a_mismatch():
    both = [_short(), _short(position_id="acct-e1-BTC-2", side=LONG, stop_client_order_id=None)]
    report = reconcile(_inp(positions=both))
    assert any("a long and a short tracked" in m for m in report.mismatches)
    assert not [a for a in report.actions if a.kind in ("close", "adopt")]


def test_an_adopted_holding_is_a_long_unless_it_says_short():
    old = AdoptedHolding.model_validate(
        {"symbol": BTC, "qty": 0.02, "avg_entry": 50_000, "cost": 1_000, "entry_time_ms": 1}
    )
    assert old.side is LONG
    short = old.model_copy(update={"side": SHORT})
    assert AdoptedHolding.model_validate_json(short.model_dump_json()).side is SHORT


# ---------------------------------------------------------------- the broker's helpers


def test_a_looked_up_orders_position_side_follows_from_reduce_only():
    assert _position_side(Side.SELL, False, "futures") is SHORT  # a short's entry or add
    assert _position_side(Side.BUY, True, "futures") is SHORT  # its cover
    assert _position_side(Side.BUY, False, "futures") is LONG
    assert _position_side(Side.SELL, True, "futures") is LONG
    assert _position_side(Side.SELL, False, "spot") is LONG  # spot is long-only
    assert _reduce_only({"reduceOnly": True}) and _reduce_only({"info": {"reduceOnly": "true"}})
    assert not _reduce_only({"reduceOnly": False}) and not _reduce_only({"info": {}})


def test_a_stops_side_is_the_exchanges_word_else_its_positions_exit_side():
    ref = StopRef(
        client_order_id="p-2",
        position_id="p",
        symbol=BTC,
        qty=0.02,
        stop_price=52_000,
        market_time_ms=1,
        position_side=SHORT,
    )
    assert _side_of({}, ref) is Side.BUY
    assert _side_of({"side": "sell"}, ref) is Side.SELL
    assert _side_of({"info": {"side": "BUY"}}, ref.model_copy(update={"position_side": LONG})) is (
        Side.BUY
    )
    assert _side_of(None, ref.model_copy(update={"position_side": LONG})) is Side.SELL
