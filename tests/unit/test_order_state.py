"""Orders as state machines (trading/order_state.py): transitions, fills, UNKNOWN and lookups."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from trading.models import Side
from trading.order_state import (
    MAX_EVENTS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    InvalidOrderEvent,
    Order,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderLookedUp,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderStatus,
    OrderSubmitted,
    OrderType,
    parse_venue_status,
)

S = OrderStatus
CID = "paper-ab12cd-BTC-1-1"
VID = "4242"
T0 = 1_700_000_000_000  # broker clock of the first attempt


def order(**kw: object) -> Order:
    base: dict[str, object] = dict(
        client_order_id=CID,
        symbol="BTC/USDT",
        side=Side.BUY,
        type=OrderType.LIMIT_IOC,
        qty=0.3,
        limit_price=100.0,
    )
    return Order(**{**base, **kw})


def submitted(t: int = T0, **kw: object) -> OrderSubmitted:
    return OrderSubmitted(client_order_id=CID, time_ms=t, **kw)


def accepted(vid: str = VID) -> OrderAccepted:
    return OrderAccepted(client_order_id=CID, time_ms=T0 + 1, venue_order_id=vid)


def fill(tid: str, qty: float, price: float = 100.0, **kw: object) -> OrderFilled:
    kw.setdefault("fee_quote", round(qty * price * 0.001, 10))
    return OrderFilled(
        client_order_id=CID, time_ms=T0 + 2, trade_id=tid, qty=qty, price=price, **kw
    )


def rejected(code: int | None = -2010, reason: str = "insufficient balance") -> OrderRejected:
    return OrderRejected(client_order_id=CID, time_ms=T0 + 1, code=code, reason=reason)


def canceled() -> OrderCanceled:
    return OrderCanceled(client_order_id=CID, time_ms=T0 + 3, reason="rest of IOC")


def expired() -> OrderExpired:
    return OrderExpired(client_order_id=CID, time_ms=T0 + 3)


def unknown(reason: str = "timeout") -> OrderOutcomeUnknown:
    return OrderOutcomeUnknown(client_order_id=CID, time_ms=T0 + 10_000, reason=reason)


def looked_up(
    status: OrderStatus, executed: float = 0.0, cum: float = 0.0, t: int = T0 + 20_000
) -> OrderLookedUp:
    return OrderLookedUp(
        client_order_id=CID,
        time_ms=t,
        venue_order_id=VID,
        status=status,
        executed_qty=executed,
        cum_quote=cum,
    )


def not_found(t: int) -> OrderLookedUp:
    return OrderLookedUp(client_order_id=CID, time_ms=t, found=False)


def in_status(status: OrderStatus) -> Order:
    """An order in ``status`` reached by ordinary events (PARTIALLY_FILLED: 0.1 of 0.3)."""
    o = order()
    paths: dict[OrderStatus, list[object]] = {
        S.INITIALIZED: [],
        S.SUBMITTED: [submitted()],
        S.NEW: [submitted(), accepted()],
        S.PARTIALLY_FILLED: [submitted(), accepted(), fill("t1", 0.1)],
        S.UNKNOWN: [submitted(), unknown()],
        S.FILLED: [submitted(), accepted(), fill("t1", 0.1), fill("t2", 0.2)],
        S.CANCELED: [submitted(), accepted(), fill("t1", 0.1), canceled()],
        S.EXPIRED: [submitted(), accepted(), fill("t1", 0.1), expired()],
        S.REJECTED: [submitted(), rejected()],
    }
    for e in paths[status]:
        o = o.apply(e)  # type: ignore[arg-type]
    assert o.status == status
    return o


# ---------------------------------------------------------------- every legal transition

# (from, event, to, filled_qty after): one case at least for every pair of TRANSITIONS
LEGAL: list[tuple[OrderStatus, Callable[[], object], OrderStatus, float]] = [
    (S.INITIALIZED, submitted, S.SUBMITTED, 0.0),
    (S.INITIALIZED, lambda: rejected(None, "LOT_SIZE: qty below minQty"), S.REJECTED, 0.0),
    (S.INITIALIZED, canceled, S.CANCELED, 0.0),
    (S.INITIALIZED, lambda: looked_up(S.FILLED, 0.3, 30.0), S.FILLED, 0.3),
    (S.SUBMITTED, accepted, S.NEW, 0.0),
    (S.SUBMITTED, rejected, S.REJECTED, 0.0),
    (S.SUBMITTED, lambda: fill("t1", 0.1), S.PARTIALLY_FILLED, 0.1),
    (S.SUBMITTED, lambda: fill("t1", 0.3), S.FILLED, 0.3),
    (S.SUBMITTED, canceled, S.CANCELED, 0.0),
    (S.SUBMITTED, expired, S.EXPIRED, 0.0),
    (S.SUBMITTED, unknown, S.UNKNOWN, 0.0),
    (S.SUBMITTED, lambda: looked_up(S.NEW), S.NEW, 0.0),
    (S.NEW, accepted, S.NEW, 0.0),
    (S.NEW, lambda: rejected(-2022, "ReduceOnly Order is rejected"), S.REJECTED, 0.0),
    (S.NEW, lambda: fill("t1", 0.1), S.PARTIALLY_FILLED, 0.1),
    (S.NEW, lambda: fill("t1", 0.3), S.FILLED, 0.3),
    (S.NEW, canceled, S.CANCELED, 0.0),
    (S.NEW, expired, S.EXPIRED, 0.0),
    (S.NEW, unknown, S.UNKNOWN, 0.0),
    (S.NEW, lambda: looked_up(S.CANCELED), S.CANCELED, 0.0),
    (S.PARTIALLY_FILLED, accepted, S.PARTIALLY_FILLED, 0.1),
    (S.PARTIALLY_FILLED, lambda: fill("t2", 0.1), S.PARTIALLY_FILLED, 0.2),
    (S.PARTIALLY_FILLED, lambda: fill("t2", 0.2), S.FILLED, 0.3),
    (S.PARTIALLY_FILLED, canceled, S.CANCELED, 0.1),
    (S.PARTIALLY_FILLED, expired, S.EXPIRED, 0.1),
    (S.PARTIALLY_FILLED, unknown, S.UNKNOWN, 0.1),
    (S.PARTIALLY_FILLED, lambda: looked_up(S.FILLED, 0.3, 30.0), S.FILLED, 0.3),
    (S.UNKNOWN, accepted, S.UNKNOWN, 0.0),
    (S.UNKNOWN, rejected, S.REJECTED, 0.0),
    (S.UNKNOWN, lambda: fill("t1", 0.1), S.UNKNOWN, 0.1),
    (S.UNKNOWN, lambda: fill("t1", 0.3), S.FILLED, 0.3),
    (S.UNKNOWN, canceled, S.CANCELED, 0.0),
    (S.UNKNOWN, expired, S.EXPIRED, 0.0),
    (S.UNKNOWN, lambda: unknown("lookup timed out too"), S.UNKNOWN, 0.0),
    (S.UNKNOWN, lambda: looked_up(S.PARTIALLY_FILLED, 0.1, 10.0), S.PARTIALLY_FILLED, 0.1),
    (S.FILLED, accepted, S.FILLED, 0.3),
    (S.FILLED, lambda: fill("t2", 0.2), S.FILLED, 0.3),  # a duplicate trade
    (S.FILLED, lambda: looked_up(S.FILLED, 0.3, 30.0), S.FILLED, 0.3),
    (S.CANCELED, accepted, S.CANCELED, 0.1),
    (S.CANCELED, lambda: fill("t0", 0.05), S.CANCELED, 0.15),  # traded before the cancel
    (S.CANCELED, lambda: looked_up(S.CANCELED, 0.2, 20.0), S.CANCELED, 0.2),
    (S.EXPIRED, accepted, S.EXPIRED, 0.1),
    (S.EXPIRED, lambda: fill("t0", 0.05), S.EXPIRED, 0.15),
    (S.EXPIRED, lambda: looked_up(S.EXPIRED, 0.1, 10.0), S.EXPIRED, 0.1),
    (S.REJECTED, lambda: not_found(T0 + 99_000), S.REJECTED, 0.0),
]


@pytest.mark.parametrize(("start", "event", "end", "filled"), LEGAL)
def test_legal_transition(
    start: OrderStatus, event: Callable[[], object], end: OrderStatus, filled: float
) -> None:
    before = in_status(start)
    e = event()
    after = before.apply(e)  # type: ignore[arg-type]
    assert after.status == end
    assert end in TRANSITIONS[(start, e.kind)]  # type: ignore[attr-defined]
    assert after.filled_qty == pytest.approx(filled, abs=0)
    assert before.status == start  # immutable: the old order is untouched


def test_every_pair_of_the_table_has_a_legal_case() -> None:
    covered = {(start, event().kind) for start, event, _, _ in LEGAL}  # type: ignore[attr-defined]
    assert covered == set(TRANSITIONS)


# ---------------------------------------------------------------- illegal transitions

EVENT_OF_KIND: dict[str, Callable[[], object]] = {
    "submitted": lambda: submitted(T0 + 50),
    "accepted": lambda: accepted("9999"),
    "rejected": rejected,
    "filled": lambda: fill("t9", 0.01),
    "canceled": canceled,
    "expired": expired,
    "unknown": unknown,
    "looked_up": lambda: looked_up(S.NEW),
}
ILLEGAL = [
    (status, kind)
    for status, kind in itertools.product(OrderStatus, EVENT_OF_KIND)
    if (status, kind) not in TRANSITIONS
]


@pytest.mark.parametrize(("status", "kind"), ILLEGAL)
def test_every_pair_outside_the_table_raises_and_changes_nothing(
    status: OrderStatus, kind: str
) -> None:
    before = in_status(status)
    copy = before.model_copy(deep=True)
    with pytest.raises(InvalidOrderEvent, match="not a legal transition"):
        before.apply(EVENT_OF_KIND[kind]())  # type: ignore[arg-type]
    assert before == copy


def test_illegal_pairs_include_the_obvious_ones() -> None:
    must_fail = {
        (S.INITIALIZED, "filled"),  # never sent
        (S.INITIALIZED, "unknown"),  # submitted must come first: it holds the send time
        (S.SUBMITTED, "submitted"),  # no blind resubmit
        (S.UNKNOWN, "submitted"),
        (S.FILLED, "canceled"),
        (S.CANCELED, "submitted"),
        (S.REJECTED, "filled"),
        (S.EXPIRED, "unknown"),
    }
    assert must_fail <= set(ILLEGAL)
    assert all((s, k) in ILLEGAL for s in TERMINAL_STATUSES for k in ("submitted", "canceled"))


def test_invalid_order_event_is_a_value_error() -> None:
    assert issubclass(InvalidOrderEvent, ValueError)


@pytest.mark.parametrize(
    ("start", "event", "match"),
    [
        (S.PARTIALLY_FILLED, lambda: fill("t2", 0.25), "over-fill"),
        (S.NEW, lambda: fill("t1", 0.30000000000000004), "over-fill"),
        (S.CANCELED, lambda: fill("t0", 0.2), "would lead to FILLED"),
        (S.FILLED, lambda: looked_up(S.CANCELED, 0.3, 30.0), "the venue says CANCELED"),
        (S.NEW, lambda: fill("t1", 0.1, venue_order_id="777"), "a client order id reused"),
        (S.NEW, lambda: looked_up(S.NEW).model_copy(update={"venue_order_id": "1"}), "reused"),
        (S.PARTIALLY_FILLED, lambda: fill("t1", 0.2), "seen before"),
        (S.NEW, lambda: looked_up(S.FILLED, 0.2, 20.0), "FILLED with 0.2 of 0.3"),
        (S.NEW, lambda: looked_up(S.CANCELED, 0.4, 40.0), "over-fill"),
        (S.NEW, lambda: looked_up(S.NEW, 0.3, 30.0), "open but everything is executed"),
        (S.NEW, lambda: looked_up(S.CANCELED, 0.3, 30.0), "CANCELED with everything"),
        (S.PARTIALLY_FILLED, lambda: looked_up(S.CANCELED, 0.05, 5.0), "fills say 0.1"),
        (S.PARTIALLY_FILLED, lambda: looked_up(S.REJECTED, 0.1, 10.0), "REJECTED after fills"),
        (S.NEW, lambda: not_found(T0 + 99_000), "acknowledged this order before"),
        (S.INITIALIZED, lambda: OrderCanceled(client_order_id="other-1", time_ms=1), "other-1"),
    ],
)
def test_contradicting_events_raise_and_change_nothing(
    start: OrderStatus, event: Callable[[], object], match: str
) -> None:
    before = in_status(start)
    copy = before.model_copy(deep=True)
    with pytest.raises(InvalidOrderEvent, match=match):
        before.apply(event())  # type: ignore[arg-type]
    assert before == copy


def test_rejected_after_fills_raises() -> None:
    o = in_status(S.UNKNOWN).apply(fill("t1", 0.1))
    with pytest.raises(InvalidOrderEvent, match="already filled"):
        o.apply(rejected())


def test_terminal_statuses_are_final() -> None:
    """No event moves a terminal order to another status; late facts keep the status."""
    for status in TERMINAL_STATUSES:
        o = in_status(status)
        for make in EVENT_OF_KIND.values():
            try:
                after = o.apply(make())  # type: ignore[arg-type]
            except InvalidOrderEvent:
                continue
            assert after.status == status


# ---------------------------------------------------------------- fills


def test_partial_fills_add_up_exactly() -> None:
    o = in_status(S.NEW)
    assert 0.1 + 0.1 + 0.1 != 0.3  # the float trap the exact sums avoid
    o = o.apply(fill("t1", 0.1, 100.0))
    assert (o.status, o.filled_qty, o.remaining) == (S.PARTIALLY_FILLED, 0.1, 0.2)
    o = o.apply(fill("t2", 0.1, 101.0))
    assert (o.status, o.filled_qty, o.remaining) == (S.PARTIALLY_FILLED, 0.2, 0.1)
    o = o.apply(fill("t3", 0.1, 102.0, fee=0.00005, fee_asset="BNB", fee_quote=0.03))
    assert (o.status, o.filled_qty, o.remaining) == (S.FILLED, 0.3, 0.0)
    assert o.avg_price == 101.0
    assert o.fees_quote == pytest.approx(0.01 + 0.0101 + 0.03, abs=1e-12)
    assert o.trade_ids == {"t1", "t2", "t3"}
    assert o.is_terminal and not o.is_open and not o.needs_lookup
    assert [f.trade_id for f in o.fills] == ["t1", "t2", "t3"]


def test_a_fill_sets_the_venue_id_when_the_ack_was_never_seen() -> None:
    o = in_status(S.SUBMITTED).apply(fill("t1", 0.3, venue_order_id=VID))
    assert (o.status, o.venue_order_id) == (S.FILLED, VID)
    assert o.apply(accepted()) is o  # the late ack changes nothing


def test_duplicate_trade_id_is_ignored() -> None:
    o = in_status(S.NEW).apply(fill("t1", 0.1))
    again = o.apply(fill("t1", 0.1))
    assert again is o and again.filled_qty == 0.1 and len(again.fills) == 1
    # the broker re-converted a BNB fee at another price: still the same trade
    assert o.apply(fill("t1", 0.1, fee_quote=0.0123)) is o
    done = o.apply(fill("t2", 0.2))
    assert done.apply(fill("t1", 0.1)) is done and done.apply(fill("t2", 0.2)) is done


def test_unknown_keeps_fills_but_only_completion_ends_the_doubt() -> None:
    o = in_status(S.UNKNOWN).apply(fill("t1", 0.1, venue_order_id=VID))
    assert (o.status, o.filled_qty, o.venue_order_id) == (S.UNKNOWN, 0.1, VID)
    assert o.needs_lookup
    o = o.apply(fill("t2", 0.2))
    assert o.status == S.FILLED and not o.needs_lookup


# ---------------------------------------------------------------- UNKNOWN resolved by lookup


def test_unknown_resolved_to_filled_by_lookup_then_itemized_by_trades() -> None:
    o = in_status(S.UNKNOWN).apply(looked_up(S.FILLED, 0.3, 30.09))
    assert (o.status, o.venue_order_id, o.filled_qty) == (S.FILLED, VID, 0.3)
    assert o.avg_price == pytest.approx(100.3, abs=1e-9)
    assert o.needs_trades and o.inferred_qty == 0.3 and o.fees_quote == 0
    o = o.apply(fill("t1", 0.1, 100.0))
    assert (o.status, o.filled_qty, o.inferred_qty) == (S.FILLED, 0.3, 0.2)
    o = o.apply(fill("t2", 0.2, 100.45))
    assert (o.status, o.filled_qty, o.inferred_qty, o.needs_trades) == (S.FILLED, 0.3, 0, False)
    assert o.avg_price == pytest.approx(100.3, abs=1e-9)
    assert o.fees_quote == pytest.approx(0.01 + 0.02009, abs=1e-12)
    with pytest.raises(InvalidOrderEvent, match="over-fill"):
        o.apply(fill("t3", 0.01))


def test_lookup_reveals_fills_it_missed_beside_known_ones() -> None:
    o = in_status(S.NEW).apply(fill("t1", 0.1, 99.0))
    o = o.apply(looked_up(S.FILLED, 0.3, 9.9 + 20.2))  # the rest at 101
    assert (o.status, o.filled_qty, o.inferred_qty) == (S.FILLED, 0.3, 0.2)
    assert o.inferred_quote == pytest.approx(20.2, abs=1e-9)
    assert o.avg_price == pytest.approx(30.1 / 0.3, abs=1e-9)


def test_unknown_resolved_partially_filled_then_canceled() -> None:
    o = in_status(S.UNKNOWN).apply(looked_up(S.PARTIALLY_FILLED, 0.1, 10.0))
    assert (o.status, o.filled_qty, o.is_open) == (S.PARTIALLY_FILLED, 0.1, True)
    o = o.apply(unknown("cancel timed out"))
    assert o.status == S.UNKNOWN
    o = o.apply(accepted())  # a late ack says nothing about the cancel
    assert o.status == S.UNKNOWN
    o = o.apply(looked_up(S.CANCELED, 0.1, 10.0))
    assert (o.status, o.filled_qty, o.remaining) == (S.CANCELED, 0.1, pytest.approx(0.2))
    # the position is sized to what filled, the trade itemizes the inferred part
    o = o.apply(fill("t1", 0.1, 100.0))
    assert (o.status, o.filled_qty, o.inferred_qty) == (S.CANCELED, 0.1, 0.0)


@pytest.mark.parametrize(
    ("status", "executed", "cum", "end", "filled"),
    [
        (S.NEW, 0.0, 0.0, S.NEW, 0.0),
        (S.EXPIRED, 0.1, 10.0, S.EXPIRED, 0.1),  # IOC: partly filled, rest expired
        (S.EXPIRED, 0.0, 0.0, S.EXPIRED, 0.0),
        (S.CANCELED, 0.0, 0.0, S.CANCELED, 0.0),
        (S.REJECTED, 0.0, 0.0, S.REJECTED, 0.0),
        (S.PARTIALLY_FILLED, 0.2, 20.0, S.PARTIALLY_FILLED, 0.2),
        (S.NEW, 0.1, 10.0, S.PARTIALLY_FILLED, 0.1),  # ccxt "open" with fills
    ],
)
def test_unknown_resolved_to_each_venue_status(
    status: OrderStatus, executed: float, cum: float, end: OrderStatus, filled: float
) -> None:
    o = in_status(S.UNKNOWN).apply(looked_up(status, executed, cum))
    assert (o.status, o.filled_qty, o.venue_order_id) == (end, filled, VID)
    assert not o.needs_lookup and o.reason == ""


def test_stale_open_snapshot_keeps_the_fills_known() -> None:
    o = in_status(S.UNKNOWN).apply(fill("t1", 0.2))
    o = o.apply(looked_up(S.NEW, 0.1, 10.0))  # the query lags the trade stream
    assert (o.status, o.filled_qty) == (S.PARTIALLY_FILLED, 0.2)


def test_polls_that_show_nothing_new_are_not_recorded() -> None:
    o = in_status(S.NEW).apply(looked_up(S.NEW))
    assert o.apply(looked_up(S.NEW)) is o
    assert o.apply(looked_up(S.NEW, t=T0 + 90_000)) is o


# ---------------------------------------------------------------- "does not exist"


def test_not_found_is_inconclusive_within_the_recv_window() -> None:
    o = order().apply(submitted(T0, recv_window_ms=10_000))
    assert o.lookup_conclusive_from_ms == T0 + 10_000
    early = o.apply(not_found(T0 + 9_999))
    assert early.status == S.UNKNOWN and "conclusive from" in early.reason
    assert early.apply(not_found(T0 + 9_999)) is early
    with pytest.raises(InvalidOrderEvent):
        early.apply(submitted(T0 + 9_999))  # still no resubmit


def test_conclusive_not_found_means_never_landed_and_allows_the_same_id_again() -> None:
    o = order().apply(submitted(T0, recv_window_ms=10_000)).apply(unknown("HTTP 503"))
    o = o.apply(not_found(T0 + 10_000))
    assert o.status == S.INITIALIZED and o.submit_count == 1 and not o.needs_lookup
    assert "never landed" in o.reason
    o = o.apply(submitted(T0 + 11_000)).apply(fill("t1", 0.3, venue_order_id=VID))
    assert (o.status, o.client_order_id, o.submit_count) == (S.FILLED, CID, 2)


def test_not_found_defaults_to_binance_s_largest_recv_window() -> None:
    o = order().apply(submitted(T0))
    assert o.apply(not_found(T0 + 59_999)).status == S.UNKNOWN
    assert o.apply(not_found(T0 + 60_000)).status == S.INITIALIZED


def test_order_lost_then_found() -> None:
    o = order().apply(submitted(T0)).apply(unknown("-1007 timeout waiting for backend"))
    o = o.apply(not_found(T0 + 1_000))
    assert o.status == S.UNKNOWN
    o = o.apply(looked_up(S.FILLED, 0.3, 30.0, t=T0 + 2_000))
    assert (o.status, o.filled_qty) == (S.FILLED, 0.3)


def test_a_landing_found_after_a_conclusive_not_found_is_adopted() -> None:
    o = order().apply(submitted(T0)).apply(not_found(T0 + 60_000))
    assert o.status == S.INITIALIZED
    o = o.apply(looked_up(S.FILLED, 0.3, 30.0, t=T0 + 61_000))
    assert (o.status, o.venue_order_id) == (S.FILLED, VID)


def test_not_found_on_orders_the_venue_never_saw_changes_nothing() -> None:
    fresh = order()
    assert fresh.apply(not_found(T0)) is fresh
    denied = fresh.apply(rejected(None, "NOTIONAL: below minNotional 5"))
    assert denied.apply(not_found(T0)) is denied
    assert denied.reject_code is None and denied.reason.startswith("NOTIONAL")


def test_abandoned_before_sending() -> None:
    o = order().apply(submitted(T0)).apply(not_found(T0 + 60_000)).apply(canceled())
    assert o.status == S.CANCELED and o.filled_qty == 0 and o.venue_order_id is None


# ---------------------------------------------------------------- history, payloads, validation


def test_history_is_bounded_and_fills_are_not_duplicated_in_it() -> None:
    o = order().apply(submitted(T0))
    for i in range(40):
        o = o.apply(unknown(f"timeout {i}"))
    assert len(o.events) == MAX_EVENTS and o.events_dropped == 41 - MAX_EVENTS
    assert o.events[-1].reason == "timeout 39"  # type: ignore[union-attr]
    o = o.apply(looked_up(S.NEW)).apply(fill("t1", 0.1)).apply(fill("t2", 0.2))
    assert len(o.fills) == 2 and all(e.kind != "filled" for e in o.events)
    assert len(o.model_dump_json()) < 6_000


def test_order_survives_json_and_temporal_payloads() -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter

    o = order(side=Side.SELL, reduce_only=True).apply(submitted(T0)).apply(unknown())
    o = o.apply(not_found(T0 + 1)).apply(looked_up(S.PARTIALLY_FILLED, 0.1, 10.0))
    o = o.apply(fill("t1", 0.05)).apply(canceled())
    assert Order.model_validate_json(o.model_dump_json()) == o
    conv = pydantic_data_converter.payload_converter
    back = conv.from_payloads(conv.to_payloads([o]), [Order])[0]
    assert back == o and [type(e) for e in back.events] == [type(e) for e in o.events]
    assert back.filled_qty == 0.1 and back.inferred_qty == 0.05


def test_events_are_frozen_strict_and_finite() -> None:
    e = fill("t1", 0.1)
    with pytest.raises(ValidationError):
        e.qty = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        fill("t1", float("nan"))
    with pytest.raises(ValidationError):
        fill("t1", 0.1, price=float("inf"))
    with pytest.raises(ValidationError):
        OrderCanceled(client_order_id=CID, time_ms=1, note="extra")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        OrderCanceled(client_order_id="has space", time_ms=1)
    with pytest.raises(ValidationError):
        OrderCanceled(client_order_id="x" * 37, time_ms=1)
    with pytest.raises(ValidationError, match="venue order id"):
        OrderLookedUp(client_order_id=CID, time_ms=1, status=S.NEW)
    with pytest.raises(ValidationError, match="disagree"):
        OrderLookedUp(
            client_order_id=CID, time_ms=1, venue_order_id=VID, status=S.FILLED, executed_qty=1
        )
    with pytest.raises(ValidationError, match="venue status"):
        OrderLookedUp(client_order_id=CID, time_ms=1, venue_order_id=VID, status=S.UNKNOWN)
    with pytest.raises(ValidationError, match="not-found"):
        OrderLookedUp(client_order_id=CID, time_ms=1, found=False, status=S.NEW)


@pytest.mark.parametrize(
    ("kind", "limit", "stop", "ok"),
    [
        (OrderType.MARKET, None, None, True),
        (OrderType.MARKET, 100.0, None, False),
        (OrderType.LIMIT_IOC, 100.0, None, True),
        (OrderType.LIMIT_IOC, None, None, False),
        (OrderType.STOP_MARKET, None, 95.0, True),
        (OrderType.STOP_MARKET, 94.0, 95.0, False),
        (OrderType.STOP_LIMIT, 94.0, 95.0, True),
        (OrderType.STOP_LIMIT, None, 95.0, False),
    ],
)
def test_order_prices_match_its_type(
    kind: OrderType, limit: float | None, stop: float | None, ok: bool
) -> None:
    make = lambda: order(type=kind, limit_price=limit, stop_price=stop)  # noqa: E731
    if ok:
        assert make().type == kind
    else:
        with pytest.raises(ValidationError):
            make()


def test_parse_venue_status() -> None:
    assert parse_venue_status("PARTIALLY_FILLED") == S.PARTIALLY_FILLED
    assert parse_venue_status("EXPIRED_IN_MATCH") == S.EXPIRED
    assert parse_venue_status("closed") == S.FILLED
    assert parse_venue_status("open") == S.NEW
    assert parse_venue_status("canceled") == S.CANCELED
    with pytest.raises(ValueError, match="TRIGGERING"):
        parse_venue_status("TRIGGERING")


def test_module_imports_only_stdlib_pydantic_and_models() -> None:
    import ast
    import sys
    from pathlib import Path

    allowed = set(sys.stdlib_module_names) | {"pydantic", "trading.models"}
    for name in ("order_state.py", "market_rules.py"):
        path = Path(__file__).resolve().parents[2] / "trading" / name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for mod in mods:
                assert mod in allowed or mod.split(".")[0] in allowed - {"trading"}, (name, mod)
