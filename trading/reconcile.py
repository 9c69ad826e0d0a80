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
* ``adopt``: the exchange holds more of a traded symbol than the books and the surplus is the
  engine's (the caller says so from the exchange's order history): ``ocw account reset``
  adopts it (never done silently: it changes the account's capital).
* mismatches: what cannot be explained (less at the exchange than the books without an ended
  stop, less cash than the books), shown by ``ocw status`` until it clears.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trading.models import Model, VenueOrder

ActionKind = Literal["cancel", "check", "adopt"]
QTY_RTOL = 1e-6


class BookPosition(Model):
    """One open position as the workflows hold it."""

    position_id: str
    symbol: str
    qty: float
    stop_client_order_id: str | None = None  # its working exchange-side stop, if any
    running: bool = True  # its PositionWorkflow runs


class ReconcileInput(Model):
    account: str
    time_ms: int
    books_cash: float
    positions: list[BookPosition] = Field(default_factory=list)
    exchange_cash: float
    exchange_holdings: dict[str, float] = Field(default_factory=dict)  # symbol -> base qty
    open_orders: list[VenueOrder] = Field(default_factory=list)
    engine_surplus: dict[str, float] = Field(default_factory=dict)  # symbol -> qty of ours
    tolerance: dict[str, float] = Field(default_factory=dict)  # symbol -> untradable dust


class ReconcileAction(Model):
    kind: ActionKind
    symbol: str
    target: str  # a client order id or a position id
    detail: str
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
        books = sum(p.qty for p in inp.positions if p.symbol == sym)
        held = inp.exchange_holdings.get(sym, 0.0)
        slack = inp.tolerance.get(sym, 0.0) + max(books, abs(held)) * QTY_RTOL
        if held < books - slack:
            if sym in checked:
                notes.append(f"{sym}: exchange {held:g} < books {books:g}: a stop ended (checked)")
            else:
                mismatches.append(
                    f"{sym}: the exchange holds {held:g}, the books {books:g}: sold outside the "
                    "engine, or an exit not booked yet"
                )
        elif held > books + slack:
            ours = min(inp.engine_surplus.get(sym, 0.0), held - books)
            if ours > slack:
                actions.append(
                    ReconcileAction(
                        kind="adopt",
                        symbol=sym,
                        target=sym,
                        detail=f"{ours:g} bought by the engine is in no position: adopt it "
                        "with `ocw account reset`",
                    )
                )
            foreign = held - books - max(ours, 0.0)
            if foreign > slack:
                notes.append(f"{sym}: {foreign:g} held beside the engine's (not its own)")

    if inp.exchange_cash < inp.books_cash * (1 - QTY_RTOL) - 0.01:
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
