"""Reconciliation (SPEC §9): the exchange's word against the workflows' books, and what to do.

Run when the trading worker starts, then every ``OCW_RECONCILE_EVERY_S``, and by hand
(``ocw reconcile [--dry-run]``). Pure: the caller gathers both sides, this module compares
them and lists actions, the caller carries them out (or only prints them).

What is the engine's: every client order id the engine sends starts with its account name
(``trading/orders.py``: position ids are ``<account>-<epoch>-...``). Anything else at the
exchange (the user's own orders and coins) is reported and never touched.

Actions:

* ``cancel``: an open order of the engine's that no open position expects (a stop left by a
  position that closed or was replaced, an order whose watcher is gone). Cancelling the
  engine's own orphan is always safe.
* ``check``: a position whose protective stop is no longer open at the exchange (it filled
  or was cancelled outside the engine): the position is told to read it now rather than at
  its next safety tick, and books the exit itself.
* ``adopt``: the exchange holds a traded symbol above dust that no position tracks: it becomes
  a position of its own, flagged ``adopted``, valued at the exchange's price (its watcher
  places its stop). The engine assumes an account (or sub-account) of its own: coins on a
  traded symbol are its to manage. Beside a tracked position, a surplus is only noted.
* ``close``: a tracked position of which the exchange holds nothing (sold or moved outside
  the engine) and whose stop does not explain it: its books close at the last price, reason
  ``reconciled``, with no order.
* shorts (USDⓈ-M, one-way mode): the exchange's holding is signed (a short negative, Binance's
  ``positionAmt``) and is compared with the books in the tracked position's direction: a short
  the engine holds that the exchange no longer holds (nothing, or a long) is closed like a
  long; an untracked short is adopted as a short (``side``) when the account trades shorts,
  and reported otherwise. A long and a short are never netted against each other.
* while the account trades (a decision cycle runs or work is queued: an entry may be in
  flight) or a position's exit or add is under way, nothing that an in-flight order could
  explain is acted on or reported: it waits for the next round (notes say so). Orphan stops
  are cancelled all the same.
* mismatches: what cannot be explained (the exchange holds some but less than the books,
  less cash than the books, a position nobody watches), shown by ``ocw status``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trading.models import Model, PositionSide, VenueOrder

ActionKind = Literal["cancel", "check", "adopt", "close"]
QTY_RTOL = 1e-6
CASH_RTOL = 0.002


class BookPosition(Model):
    """One open position as the workflows hold it."""

    position_id: str
    symbol: str
    qty: float
    workflow_id: str = ""  # its PositionWorkflow (the one told to look, or to close its books)
    stop_client_order_id: str | None = None  # its working exchange-side stop, if any
    running: bool = True  # its PositionWorkflow runs
    busy: bool = False  # an exit or an add is under way: its order may be in flight
    side: PositionSide = PositionSide.LONG  # ``qty`` is its size either way


class ReconcileInput(Model):
    account: str
    time_ms: int
    books_cash: float
    busy: bool = False  # the account is mid-cycle (an entry may be in flight) or has work queued
    positions: list[BookPosition] = Field(default_factory=list)
    exchange_cash: float
    # symbol -> base qty; signed on futures: a short negative (Binance's positionAmt)
    exchange_holdings: dict[str, float] = Field(default_factory=dict)
    open_orders: list[VenueOrder] = Field(default_factory=list)
    traded: list[str] = Field(default_factory=list)  # the account's symbols
    prices: dict[str, float] = Field(default_factory=dict)  # symbol -> the exchange's last
    tolerance: dict[str, float] = Field(default_factory=dict)  # symbol -> untradable dust
    shorts: bool = False  # the account trades shorts: an untracked short is adopted as one


class ReconcileAction(Model):
    kind: ActionKind
    symbol: str
    target: str  # a client order id, a position id, or the symbol (adopt)
    detail: str
    qty: float = 0.0  # adopt: what to adopt (its size), at ``price``
    price: float = 0.0
    side: PositionSide = PositionSide.LONG  # adopt: a long, or a short (negative holding)
    done: bool = False
    error: str = ""


class ReconcileReport(Model):
    """What was found and done. ``ok``: books and exchange agree (after the actions)."""

    time_ms: int
    account: str
    ok: bool
    dry_run: bool = True
    actions: list[ReconcileAction] = Field(default_factory=list)
    mismatches: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def lines(self) -> list[str]:
        head = "agree" if self.ok else f"{len(self.mismatches)} mismatch(es)"
        out = [f"reconciliation of {self.account}: {head}, {len(self.actions)} action(s)"]
        for a in self.actions:
            state = "would " if self.dry_run else ("done: " if a.done else "FAILED: ")
            out.append(f"  {state}{a.kind} {a.target} ({a.symbol}): {a.detail} {a.error}".rstrip())
        out += [f"  mismatch: {m}" for m in self.mismatches]
        out += [f"  note: {n}" for n in self.notes]
        return out


def is_engines(client_order_id: str, account: str) -> bool:
    return client_order_id.startswith(f"{account}-")


def reconcile(inp: ReconcileInput) -> ReconcileReport:
    """Compare; list actions and mismatches (nothing is done here)."""
    actions: list[ReconcileAction] = []
    mismatches: list[str] = []
    notes: list[str] = []
    expected_stops = {
        p.stop_client_order_id: p for p in inp.positions if p.stop_client_order_id and p.running
    }
    open_ids = {o.client_order_id for o in inp.open_orders}

    for o in inp.open_orders:
        if not is_engines(o.client_order_id, inp.account):
            notes.append(
                f"{o.symbol} {o.side} {o.qty:g} ({o.kind} {o.client_order_id or '?'}) is not "
                "the engine's: left alone"
            )
            continue
        if o.kind == "stop" and o.client_order_id in expected_stops:
            continue
        if o.kind == "order" and inp.busy:  # maybe an order being placed right now
            notes.append(f"{o.client_order_id}: left while the account trades (next round)")
            continue
        why = "a stop no open position holds" if o.kind == "stop" else "an order no one waits for"
        actions.append(
            ReconcileAction(kind="cancel", symbol=o.symbol, target=o.client_order_id, detail=why)
        )

    for p in inp.positions:
        if p.stop_client_order_id and p.running and p.stop_client_order_id not in open_ids:
            actions.append(
                ReconcileAction(
                    kind="check",
                    symbol=p.symbol,
                    target=p.position_id,
                    detail=f"its stop {p.stop_client_order_id} is no longer open at the exchange",
                )
            )
        if not p.running:
            mismatches.append(f"{p.position_id} ({p.symbol}) is open in the books but unwatched")

    symbols = sorted({p.symbol for p in inp.positions} | set(inp.exchange_holdings))
    checked = {a.symbol for a in actions if a.kind == "check"}
    for sym in symbols:
        tracked = [p for p in inp.positions if p.symbol == sym]
        signed = inp.exchange_holdings.get(sym, 0.0)
        sides = {p.side for p in tracked}
        if len(sides) > 1:
            mismatches.append(f"{sym}: a long and a short tracked at once (one-way mode nets them)")
            continue
        if tracked:
            side = next(iter(sides))
        else:
            side = PositionSide.SHORT if signed < 0 else PositionSide.LONG
        short = side is PositionSide.SHORT
        label = "short " if short else ""
        books = sum(p.qty for p in tracked)
        held = signed * side.sign  # what the exchange holds in the books' direction
        slack = inp.tolerance.get(sym, 0.0) + max(books, abs(held)) * QTY_RTOL
        if held < books - slack:
            if sym in checked:
                notes.append(
                    f"{sym}: exchange {label}{held:g} < books {label}{books:g}: a stop ended "
                    "(checked)"
                )
            elif inp.busy or any(p.busy for p in tracked):
                notes.append(
                    f"{sym}: exchange {label}{held:g} < books {label}{books:g} while trading: "
                    "deferred"
                )
            elif held <= slack:
                for p in (p for p in tracked if p.running):
                    actions.append(
                        ReconcileAction(
                            kind="close",
                            symbol=sym,
                            target=p.position_id,
                            detail=f"the exchange holds none of its {label}{p.qty:g}: books "
                            "closed at the last price (reconciled)",
                            side=side,
                        )
                    )
                if held < -slack:
                    notes.append(
                        f"{sym}: the exchange holds {signed:g}, the other way round: looked at "
                        "again once the books are closed"
                    )
            else:
                mismatches.append(
                    f"{sym}: the exchange holds {label}{held:g}, the books {label}{books:g}: "
                    f"{'bought back' if short else 'sold'} in part outside the engine, or an "
                    "exit not booked yet"
                )
        elif held > books + slack:
            price = inp.prices.get(sym, 0.0)
            if inp.busy and not tracked:
                notes.append(f"{sym}: {label}{held:g} untracked while the account trades: deferred")
            elif not tracked and sym in inp.traded and short and not inp.shorts:
                mismatches.append(
                    f"{sym}: a short of {held:g} that no position tracks: not adopted, the "
                    "account does not trade shorts"
                )
            elif not tracked and sym in inp.traded and price > 0:
                what = f"a short of {held:g}" if short else f"{held:g} held"
                actions.append(
                    ReconcileAction(
                        kind="adopt",
                        symbol=sym,
                        target=sym,
                        qty=held,
                        price=price,
                        side=side,
                        detail=f"{what} that no position tracks: adopted at {price:g}",
                    )
                )
            elif not tracked and sym in inp.traded:
                mismatches.append(f"{sym}: {label}{held:g} untracked and no price to adopt it at")
            else:
                notes.append(f"{sym}: {label}{held - books:g} held beside the engine's position")

    # the books cannot know every fee of what happened outside them (a sale by hand): a
    # shortfall within a round trip's fees is no mismatch
    if inp.busy:
        notes.append("cash not compared: the account is trading")
    elif inp.exchange_cash < inp.books_cash * (1 - CASH_RTOL) - 0.01:
        mismatches.append(
            f"cash: the exchange holds {inp.exchange_cash:.2f}, the books {inp.books_cash:.2f}"
        )
    pending = [a for a in actions if a.kind != "check"]
    return ReconcileReport(
        time_ms=inp.time_ms,
        account=inp.account,
        ok=not mismatches and not pending,
        actions=actions,
        mismatches=mismatches,
        notes=notes,
    )


class ReconcileSummary(Model):
    """The last reconciliation, as the DecisionWorkflow keeps it for ``ocw status``."""

    time_ms: int
    ok: bool
    actions: int = 0
    mismatches: list[str] = Field(default_factory=list)
    source: str = "worker"  # worker | cli


def summary_of(report: ReconcileReport, source: str = "worker") -> ReconcileSummary:
    return ReconcileSummary(
        time_ms=report.time_ms,
        ok=report.ok,
        actions=sum(1 for a in report.actions if a.done),
        mismatches=report.mismatches[:10],
        source=source,
    )
