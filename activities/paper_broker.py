"""A paper broker whose every write is idempotent and atomic, so Temporal may retry freely.

State lives in one SQLite file: the account's cash, the holdings per symbol and every order
ever placed (rejected ones too), keyed by ``client_order_id``. ``place_order`` runs in a single
``BEGIN IMMEDIATE`` transaction: it first looks the id up and, when known, returns the stored
Fill unchanged. A retried activity, a worker killed with SIGKILL mid-call and restarted, or two
processes racing on the same id therefore fill at most once.

Shorts (``allow_shorts``: a paper USDⓈ-M futures account, issue 15): a SELL that opens a short
(``position_side`` SHORT) takes its notional and fee out of the cash as collateral, as the books
and the backtester reckon a 1x short; the short is kept apart (``shorts``: quantity and entry
notional per symbol) and shows as a negative holding. Its cover (a BUY on the short's side,
never more than is short) returns the collateral plus ``(entry - price)·qty`` less the fee.
One position per symbol, either side (Binance's one-way mode). Without ``allow_shorts`` (a
spot account) a short is refused: spot is long-only.

The paper broker stays single-host: its file is always SQLite under OCW_HOME, even when
``OCW_DB_URL`` puts the journal, learner snapshots and LLM store in PostgreSQL
(``activities/db.py``). Run the paper account's workers on one host (or use an exchange).
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from trading.models import (
    Balances,
    Fill,
    IncomeEntry,
    OrderRequest,
    OrderStatus,
    PositionSide,
    Side,
)
from trading.orders import CLIENT_ORDER_ID_MAX

log = logging.getLogger(__name__)

# Binance newClientOrderId: at most 36 characters from this set (spot's; futures' is wider).
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")

# Relative tolerance under which a SELL takes exactly what is held and a BUY spends exactly
# the cash available: float sizing (qty = cash / price / (1 + fee)) must not leave dust or
# be rejected by one ulp.
QTY_RTOL = 1e-9

BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    cash         REAL NOT NULL,
    initial_cash REAL NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS holdings (
    symbol TEXT PRIMARY KEY,
    qty    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL UNIQUE,
    position_id     TEXT NOT NULL,
    status          TEXT NOT NULL,
    fill_json       TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_position ON orders (position_id, id);
CREATE TABLE IF NOT EXISTS shorts (
    symbol   TEXT PRIMARY KEY,
    qty      REAL NOT NULL,
    notional REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS income (
    income_id  TEXT PRIMARY KEY,
    entry_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


def validate_client_order_id(coid: str) -> None:
    """Raise ValueError unless ``coid`` is a Binance-valid client order id."""
    if not isinstance(coid, str) or not _VALID_ID.fullmatch(coid):
        raise ValueError(
            f"invalid client_order_id {coid!r}: need 1-{CLIENT_ORDER_ID_MAX} chars of [A-Za-z0-9_-]"
        )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(db_path: Path) -> sqlite3.Connection:
    """Open ``db_path`` for multi-process use: WAL, busy timeout, explicit transactions."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        db_path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # autocommit; we issue BEGIN IMMEDIATE ourselves
        check_same_thread=False,  # guarded by a lock: activities may run in a thread pool
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL stays consistent
    return conn


class PaperBroker:
    """Simulated spot account (or a 1x futures one with ``allow_shorts``): fills at
    ``ref_price`` moved by slippage, charges a quote fee."""

    def __init__(
        self,
        db_path: Path,
        initial_cash: float,
        fee_rate: float = 0.001,
        slippage_bps: float = 5.0,
        allow_shorts: bool = False,
    ) -> None:
        if fee_rate < 0 or slippage_bps < 0 or initial_cash < 0:
            raise ValueError("initial_cash, fee_rate and slippage_bps must be >= 0")
        self.db_path = Path(db_path)
        self.fee_rate = fee_rate
        self.slippage = slippage_bps / 10_000
        self.allow_shorts = allow_shorts
        self.last_booked: list[IncomeEntry] = []  # what the last apply_funding booked anew
        self._lock = threading.Lock()
        self._conn = connect(self.db_path)
        with self._tx() as cur:
            # Statement by statement: executescript() would COMMIT our transaction.
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            # Seeds only a new DB: a restart never resets the balances.
            cur.execute(
                "INSERT OR IGNORE INTO account (id, cash, initial_cash, created_at) "
                "VALUES (1, ?, ?, ?)",
                (initial_cash, initial_cash, _now_iso()),
            )

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taken up front so read-modify-write cannot interleave."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PaperBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ orders

    def place_order(self, req: OrderRequest) -> Fill:
        """Fill or reject ``req`` once; a repeat of its client_order_id returns the first Fill."""
        validate_client_order_id(req.client_order_id)
        with self._tx() as cur:
            row = cur.execute(
                "SELECT fill_json FROM orders WHERE client_order_id = ?",
                (req.client_order_id,),
            ).fetchone()
            if row is not None:
                stored = Fill.model_validate_json(row[0])
                if (stored.symbol, stored.side, stored.position_id) != (
                    req.symbol,
                    req.side,
                    req.position_id,
                ):
                    log.warning(
                        "client_order_id %s reused for a different order: returning the stored one",
                        req.client_order_id,
                    )
                return stored

            fill = self._execute(cur, req)
            cur.execute(
                "INSERT INTO orders (client_order_id, position_id, status, fill_json, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    fill.client_order_id,
                    fill.position_id,
                    fill.status.value,
                    fill.model_dump_json(),
                    _now_iso(),
                ),
            )
            return fill

    def _execute(self, cur: sqlite3.Cursor, req: OrderRequest) -> Fill:
        """Price the order, check funds, move cash and holdings (inside the caller's tx)."""
        (cash,) = cur.execute("SELECT cash FROM account WHERE id = 1").fetchone()
        row = cur.execute("SELECT qty FROM holdings WHERE symbol = ?", (req.symbol,)).fetchone()
        held = row[0] if row else 0.0
        qty = req.qty
        short = cur.execute(
            "SELECT qty, notional FROM shorts WHERE symbol = ?", (req.symbol,)
        ).fetchone()
        if req.position_side is PositionSide.SHORT:
            if not self.allow_shorts:
                return self._reject(
                    req, "shorts are refused: this is a spot account (spot is long-only)"
                )
            if held > 0:
                return self._reject(req, f"{req.symbol} is held long: one position per symbol")
            return self._execute_short(cur, req, cash, short)
        if short is not None:
            return self._reject(req, f"{req.symbol} is held short: one position per symbol")

        if req.side is Side.BUY:
            price = req.ref_price * (1 + self.slippage)
            need = qty * price * (1 + self.fee_rate)
            if need > cash:
                if need > cash * (1 + QTY_RTOL):
                    return self._reject(
                        req, f"insufficient balance: need {need:.8f}, have {cash:.8f}"
                    )
                qty = cash / (price * (1 + self.fee_rate))  # spend exactly what is there
            notional = qty * price
            fee = notional * self.fee_rate
            new_cash = max(cash - notional - fee, 0.0)
            new_held = held + qty
        else:
            price = req.ref_price * (1 - self.slippage)
            if abs(qty - held) <= QTY_RTOL * max(qty, held):
                qty = held  # sell exactly what is held: no dust, no one-ulp rejection
            elif qty > held:
                return self._reject(
                    req, f"insufficient holdings: need {qty:.12g} {req.symbol}, have {held:.12g}"
                )
            notional = qty * price
            fee = notional * self.fee_rate
            new_cash = cash + notional - fee
            new_held = held - qty

        cur.execute("UPDATE account SET cash = ? WHERE id = 1", (new_cash,))
        if new_held > 0:
            cur.execute(
                "INSERT INTO holdings (symbol, qty) VALUES (?, ?) "
                "ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty",
                (req.symbol, new_held),
            )
        else:
            cur.execute("DELETE FROM holdings WHERE symbol = ?", (req.symbol,))
        return self._fill(req, OrderStatus.FILLED, qty, price, fee, req.reason)

    def _execute_short(
        self,
        cur: sqlite3.Cursor,
        req: OrderRequest,
        cash: float,
        short: tuple[float, float] | None,
    ) -> Fill:
        """A short's entry or add (SELL) or its cover (BUY), at 1x: the notional is the
        collateral (module docstring)."""
        qty = req.qty
        short_qty, short_notional = short if short is not None else (0.0, 0.0)
        if req.side is Side.SELL:  # open or add: the collateral and the fee leave the cash
            price = req.ref_price * (1 - self.slippage)
            need = qty * price * (1 + self.fee_rate)
            if need > cash:
                if need > cash * (1 + QTY_RTOL):
                    return self._reject(
                        req, f"insufficient margin: need {need:.8f}, have {cash:.8f}"
                    )
                qty = cash / (price * (1 + self.fee_rate))
            notional = qty * price
            fee = notional * self.fee_rate
            new_cash = max(cash - notional - fee, 0.0)
            new_qty, new_notional = short_qty + qty, short_notional + notional
        else:  # cover: reduce-only, never more than is short
            price = req.ref_price * (1 + self.slippage)
            if short is None:
                return self._reject(req, f"reduce-only: no short of {req.symbol} to cover")
            if abs(qty - short_qty) <= QTY_RTOL * max(qty, short_qty):
                qty = short_qty
            elif qty > short_qty:
                return self._reject(
                    req, f"reduce-only: cover {qty:.12g} exceeds the short {short_qty:.12g}"
                )
            released = short_notional * (qty / short_qty)
            notional = qty * price
            fee = notional * self.fee_rate
            new_cash = max(cash + 2.0 * released - notional - fee, 0.0)
            new_qty, new_notional = short_qty - qty, short_notional - released
        cur.execute("UPDATE account SET cash = ? WHERE id = 1", (new_cash,))
        if new_qty > 0:
            cur.execute(
                "INSERT INTO shorts (symbol, qty, notional) VALUES (?, ?, ?) "
                "ON CONFLICT (symbol) DO UPDATE SET qty = excluded.qty, "
                "notional = excluded.notional",
                (req.symbol, new_qty, new_notional),
            )
        else:
            cur.execute("DELETE FROM shorts WHERE symbol = ?", (req.symbol,))
        return self._fill(req, OrderStatus.FILLED, qty, price, fee, req.reason)

    @classmethod
    def _reject(cls, req: OrderRequest, reason: str) -> Fill:
        return cls._fill(req, OrderStatus.REJECTED, 0.0, 0.0, 0.0, reason)

    @staticmethod
    def _fill(
        req: OrderRequest, status: OrderStatus, qty: float, price: float, fee: float, reason: str
    ) -> Fill:
        """The order's outcome, echoing the request's ids, side and market time."""
        return Fill(
            client_order_id=req.client_order_id,
            position_id=req.position_id,
            symbol=req.symbol,
            side=req.side,
            status=status,
            qty=qty,
            price=price,
            fee=fee,
            market_time_ms=req.market_time_ms,
            reason=reason,
        )

    # ------------------------------------------------------------ funding

    def apply_funding(self, entries: list[IncomeEntry]) -> list[IncomeEntry]:
        """Book funding (a futures account's): each entry's signed amount moves the cash once
        per ``income_id``, so a retried call books nothing twice. Returns every entry as the
        broker holds it (an id it knew keeps its first amount) and the ones new now."""
        booked: list[IncomeEntry] = []
        held: list[IncomeEntry] = []
        with self._tx() as cur:
            for entry in entries:
                if not math.isfinite(entry.amount):
                    raise ValueError(f"funding {entry.income_id}: amount {entry.amount!r}")
                known = cur.execute(
                    "SELECT entry_json FROM income WHERE income_id = ?", (entry.income_id,)
                ).fetchone()
                if known is not None:
                    held.append(IncomeEntry.model_validate_json(known[0]))
                    continue
                cur.execute(
                    "UPDATE account SET cash = MAX(cash + ?, 0.0) WHERE id = 1", (entry.amount,)
                )
                cur.execute(
                    "INSERT INTO income (income_id, entry_json, created_at) VALUES (?, ?, ?)",
                    (entry.income_id, entry.model_dump_json(), _now_iso()),
                )
                booked.append(entry)
                held.append(entry)
        self.last_booked = booked
        return held

    def income(self, since_ms: int = 0) -> list[IncomeEntry]:
        """The funding booked at or after ``since_ms``, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT entry_json FROM income ORDER BY rowid").fetchall()
        entries = [IncomeEntry.model_validate_json(r[0]) for r in rows]
        return [e for e in entries if e.time_ms >= since_ms]

    # ------------------------------------------------------------ reads

    def lookup(self, client_order_id: str) -> Fill | None:
        """The stored Fill of an order, or None if it was never placed."""
        with self._lock:
            row = self._conn.execute(
                "SELECT fill_json FROM orders WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
        return Fill.model_validate_json(row[0]) if row else None

    def balances(self) -> Balances:
        """Cash and non-zero holdings, read in one snapshot."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                (cash,) = self._conn.execute("SELECT cash FROM account WHERE id = 1").fetchone()
                rows = self._conn.execute(
                    "SELECT symbol, qty FROM holdings ORDER BY symbol"
                ).fetchall()
                shorts = self._conn.execute(
                    "SELECT symbol, qty FROM shorts ORDER BY symbol"
                ).fetchall()
            finally:
                self._conn.execute("COMMIT")
        holdings = dict(rows)
        holdings.update({symbol: -qty for symbol, qty in shorts})  # a short: negative
        return Balances(cash=cash, holdings=holdings)

    def fills(self, position_id: str | None = None) -> list[Fill]:
        """Every stored order's Fill (REJECTED ones included), in the order they were placed."""
        sql = "SELECT fill_json FROM orders"
        args: tuple[str, ...] = ()
        if position_id is not None:
            sql += " WHERE position_id = ?"
            args = (position_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [Fill.model_validate_json(r[0]) for r in rows]
