"""Append-only trade journal: decisions, fills and closed trades, one SQLite file or PostgreSQL.

Every write is ``INSERT OR IGNORE`` (Postgres: ``ON CONFLICT DO NOTHING``) on a natural key
(decision id, client order id, trade id), so an activity retried after a crash records each
event exactly once, whichever host retries it. The embedded default is ``journal.db`` under
OCW_HOME, shared by the trading worker and the CLI (WAL mode and a busy timeout); with
``OCW_DB_URL`` every host's workers write one PostgreSQL journal (``activities/db.py``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import SecretStr

from activities.db import Database, Target, exists, target_for
from trading.config import Settings
from trading.models import AgentDecision, ClosedTrade, DecisionRecord, Fill, IncomeEntry
from trading.reconcile import ReconcileReport
from trading.state import JournalIncident

Kind = Literal["fills", "trades", "decisions", "incidents", "income", "reconciliations"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS decisions (
        decision_id    TEXT PRIMARY KEY,
        account        TEXT NOT NULL,
        market_time_ms INTEGER,
        recorded_at    TEXT NOT NULL,
        source         TEXT NOT NULL,
        wake_reasons   TEXT NOT NULL,
        decision       TEXT NOT NULL,
        executed       TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS fills (
        client_order_id TEXT PRIMARY KEY,
        account         TEXT NOT NULL,
        position_id     TEXT NOT NULL,
        symbol          TEXT NOT NULL,
        side            TEXT NOT NULL,
        status          TEXT NOT NULL,
        qty             REAL NOT NULL,
        price           REAL NOT NULL,
        fee             REAL NOT NULL,
        market_time_ms  INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        recorded_at     TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS trades (
        trade_id       TEXT PRIMARY KEY,
        account        TEXT NOT NULL,
        symbol         TEXT NOT NULL,
        qty            REAL NOT NULL,
        entry_price    REAL NOT NULL,
        exit_price     REAL NOT NULL,
        entry_time_ms  INTEGER NOT NULL,
        exit_time_ms   INTEGER NOT NULL,
        fees           REAL NOT NULL,
        pnl            REAL NOT NULL,
        pnl_pct        REAL NOT NULL,
        exit_reason    TEXT NOT NULL,
        signal_weights TEXT NOT NULL,
        recorded_at    TEXT NOT NULL,
        side           TEXT NOT NULL DEFAULT 'long'
    )""",
    """CREATE TABLE IF NOT EXISTS incidents (
        incident_id    TEXT PRIMARY KEY,
        account        TEXT NOT NULL,
        time_ms        INTEGER NOT NULL,
        market_time_ms INTEGER,
        source         TEXT NOT NULL,
        error          TEXT NOT NULL,
        recorded_at    TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS income (
        income_id      TEXT PRIMARY KEY,
        account        TEXT NOT NULL,
        symbol         TEXT NOT NULL,
        kind           TEXT NOT NULL,
        amount         REAL NOT NULL,
        asset          TEXT NOT NULL,
        time_ms        INTEGER NOT NULL,
        recorded_at    TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS reconciliations (
        action_id      TEXT PRIMARY KEY,
        account        TEXT NOT NULL,
        time_ms        INTEGER NOT NULL,
        kind           TEXT NOT NULL,
        symbol         TEXT NOT NULL,
        target         TEXT NOT NULL,
        detail         TEXT NOT NULL,
        done           INTEGER NOT NULL,
        error          TEXT NOT NULL,
        recorded_at    TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS decisions_account ON decisions (account, market_time_ms)",
    "CREATE INDEX IF NOT EXISTS fills_account ON fills (account, market_time_ms)",
    "CREATE INDEX IF NOT EXISTS trades_account ON trades (account, exit_time_ms)",
)

# Column order of each table and the market-time column its rows are sorted by.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "decisions": (
        "decision_id",
        "account",
        "market_time_ms",
        "recorded_at",
        "source",
        "wake_reasons",
        "decision",
        "executed",
    ),
    "fills": (
        "client_order_id",
        "account",
        "position_id",
        "symbol",
        "side",
        "status",
        "qty",
        "price",
        "fee",
        "market_time_ms",
        "reason",
        "recorded_at",
    ),
    "trades": (
        "trade_id",
        "account",
        "symbol",
        "qty",
        "entry_price",
        "exit_price",
        "entry_time_ms",
        "exit_time_ms",
        "fees",
        "pnl",
        "pnl_pct",
        "exit_reason",
        "signal_weights",
        "recorded_at",
        "side",
    ),
    "incidents": (
        "incident_id",
        "account",
        "time_ms",
        "market_time_ms",
        "source",
        "error",
        "recorded_at",
    ),
    "income": (
        "income_id",
        "account",
        "symbol",
        "kind",
        "amount",
        "asset",
        "time_ms",
        "recorded_at",
    ),
    "reconciliations": (
        "action_id",
        "account",
        "time_ms",
        "kind",
        "symbol",
        "target",
        "detail",
        "done",
        "error",
        "recorded_at",
    ),
}
# What ``rows_since`` reads: one index per table on (account, recorded_at), byte-wise on
# Postgres (``Dialect.bytewise``) so that its queries, which compare byte-wise, can use it.
_RECORDED_INDEX = "CREATE INDEX IF NOT EXISTS {t}_recorded ON {t} (account, {col})"

_TIME_KEY = {
    "decisions": "market_time_ms",
    "fills": "market_time_ms",
    "trades": "exit_time_ms",
    "incidents": "time_ms",
    "income": "time_ms",
    "reconciliations": "time_ms",
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_to_iso(ms: int | None) -> str:
    """Epoch ms as ISO 8601 UTC (``2024-01-01T00:00:00.000Z``); '' for None."""
    if ms is None:
        return ""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class Journal:
    """Idempotent writer and reader of the journal tables."""

    def __init__(self, target: Path | str | SecretStr) -> None:
        """``target``: the SQLite file, or a PostgreSQL URL (a SecretStr)."""
        self.db = Database(target, "journal")
        self.db_path = self.db.path  # None on PostgreSQL
        at = self.db.dialect.bytewise("recorded_at")
        self.db.create_schema((*_SCHEMA, *(_RECORDED_INDEX.format(t=t, col=at) for t in _COLUMNS)))
        self._add_trade_side()

    def _add_trade_side(self) -> None:
        """A journal from before shorts has no ``trades.side``: add it (every old trade was a
        long). Idempotent, and safe when several processes open the journal at once."""
        if self.db.path is None:  # PostgreSQL knows IF NOT EXISTS for a column
            self.db.execute(
                "ALTER TABLE trades ADD COLUMN IF NOT EXISTS side TEXT NOT NULL DEFAULT 'long'"
            )
            return
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(trades)").rows}
        if "side" in columns:
            return
        try:
            self.db.execute("ALTER TABLE trades ADD COLUMN side TEXT NOT NULL DEFAULT 'long'")
        except sqlite3.OperationalError as err:  # another process added it meanwhile
            if "duplicate column" not in str(err):
                raise

    @staticmethod
    def target_of(settings: Settings) -> Target:
        return target_for(settings, settings.paths()["journal_db"])

    @classmethod
    def from_settings(cls, settings: Settings) -> Journal:
        """The journal of these settings: PostgreSQL with OCW_DB_URL, else ``journal.db``."""
        return cls(cls.target_of(settings))

    @classmethod
    def existing(cls, settings: Settings) -> Journal | None:
        """``from_settings``, or None while the embedded file does not exist yet."""
        target = cls.target_of(settings)
        return cls(target) if exists(target) else None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writes

    def _insert(self, table: str, values: dict[str, Any]) -> bool:
        """One ``INSERT OR IGNORE`` (atomic on its own); True when a row was added."""
        cols = _COLUMNS[table]
        sql = self.db.dialect.insert_ignore(table, cols)
        return self.db.execute(sql, [values[c] for c in cols]).rowcount == 1

    def record_decision(self, rec: DecisionRecord) -> bool:
        return self._insert(
            "decisions",
            {
                "decision_id": rec.decision_id,
                "account": rec.account,
                "market_time_ms": rec.market_time_ms,
                "recorded_at": _now_iso(),
                "source": rec.source,
                "wake_reasons": json.dumps(rec.wake_reasons),
                "decision": rec.decision.model_dump_json(),
                "executed": json.dumps(rec.executed),
            },
        )

    def record_fill(self, account: str, fill: Fill) -> bool:
        return self._insert(
            "fills",
            {
                **fill.model_dump(mode="json"),
                "account": account,
                "recorded_at": _now_iso(),
            },
        )

    def record_trade(self, account: str, trade: ClosedTrade) -> bool:
        values = trade.model_dump(mode="json")
        values["signal_weights"] = json.dumps(trade.signal_weights, sort_keys=True)
        return self._insert("trades", {**values, "account": account, "recorded_at": _now_iso()})

    def record_incident(self, rec: JournalIncident) -> bool:
        """A contained failure of a workflow; idempotent on its content (a retried write)."""
        inc = rec.incident
        key = f"{rec.account}|{inc.time_ms}|{inc.where}|{inc.error}"
        return self._insert(
            "incidents",
            {
                "incident_id": hashlib.blake2b(key.encode(), digest_size=12).hexdigest(),
                "account": rec.account,
                "time_ms": inc.time_ms,
                "market_time_ms": inc.market_time_ms,
                "source": inc.where,
                "error": inc.error,
                "recorded_at": _now_iso(),
            },
        )

    def incidents(self, account: str | None = None) -> list[dict[str, Any]]:
        return self.rows("incidents", account)

    # ------------------------------------------------------------ reads

    def record_income(self, account: str, entry: IncomeEntry) -> bool:
        """One futures income entry (funding paid or received), once per exchange id."""
        return self._insert(
            "income",
            {
                **entry.model_dump(mode="json"),
                "account": account,
                "recorded_at": _now_iso(),
            },
        )

    def record_reconcile(self, report: ReconcileReport) -> int:
        """Every action of one reconciliation, with its reason and outcome."""
        added = 0
        for a in report.actions:
            added += self._insert(
                "reconciliations",
                {
                    "action_id": f"{report.time_ms}-{a.kind}-{a.target}",
                    "account": report.account,
                    "time_ms": report.time_ms,
                    "kind": a.kind,
                    "symbol": a.symbol,
                    "target": a.target,
                    "detail": a.detail,
                    "done": int(a.done),
                    "error": a.error,
                    "recorded_at": _now_iso(),
                },
            )
        return added

    def reconciliations(self, account: str | None = None) -> list[dict[str, Any]]:
        return self.rows("reconciliations", account)

    def income(self, account: str | None = None) -> list[IncomeEntry]:
        rows = self.rows("income", account)
        return [
            IncomeEntry.model_validate(
                {k: v for k, v in r.items() if k in IncomeEntry.model_fields}
            )
            for r in rows
        ]

    def rows(self, kind: Kind, account: str | None = None) -> list[dict[str, Any]]:
        """Raw rows of one table as dicts (JSON columns still text), in market-time order.

        Rows are sorted by market time (decisions and fills) or exit time (trades), ties by
        insertion order; decisions without a market time come first.
        """
        if kind not in _COLUMNS:
            raise ValueError(f"unknown journal kind {kind!r}")
        sql = f"SELECT {', '.join(_COLUMNS[kind])} FROM {kind}"
        args: tuple[str, ...] = ()
        if account is not None:
            sql += " WHERE account = ?"
            args = (account,)
        sql += f" ORDER BY {_TIME_KEY[kind]} NULLS FIRST, {self.db.dialect.insertion_order}"
        return self.db.execute(sql, args).rows

    def rows_since(
        self, kind: Kind, account: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Rows of ``account`` recorded at or after ``after`` (an ISO ``recorded_at``; every
        row when None or ''), oldest first (ties in insertion order), at most ``limit``.

        ``>=``, not ``>``: rows recorded in the cursor's own millisecond come back, and the
        caller drops those it has seen (``activities.monitor.rows_after``)."""
        if kind not in _COLUMNS:
            raise ValueError(f"unknown journal kind {kind!r}")
        if limit <= 0:
            return []
        at = self.db.dialect.bytewise("recorded_at")
        sql = f"SELECT {', '.join(_COLUMNS[kind])} FROM {kind} WHERE account = ?"
        args: list[Any] = [account]
        if after:
            sql += f" AND {at} >= ?"
            args.append(after)
        sql += f" ORDER BY {at}, {self.db.dialect.insertion_order} LIMIT ?"
        return self.db.execute(sql, [*args, int(limit)]).rows

    def latest_recorded_at(self, kind: Kind, account: str) -> str | None:
        """The newest ``recorded_at`` of ``account`` in that table; None when it has none."""
        if kind not in _COLUMNS:
            raise ValueError(f"unknown journal kind {kind!r}")
        at = self.db.dialect.bytewise("recorded_at")
        row = self.db.execute(
            f"SELECT recorded_at FROM {kind} WHERE account = ? ORDER BY {at} DESC LIMIT 1",
            (account,),
        ).one()
        return None if row is None else str(row["recorded_at"])

    def decisions(self, account: str | None = None) -> list[DecisionRecord]:
        return [
            DecisionRecord(
                decision_id=r["decision_id"],
                account=r["account"],
                market_time_ms=r["market_time_ms"],
                wake_reasons=json.loads(r["wake_reasons"]),
                source=r["source"],
                decision=AgentDecision.model_validate_json(r["decision"]),
                executed=json.loads(r["executed"]),
            )
            for r in self.rows("decisions", account)
        ]

    def fills(self, account: str | None = None) -> list[Fill]:
        fields = set(Fill.model_fields)
        return [
            Fill.model_validate({k: v for k, v in r.items() if k in fields})
            for r in self.rows("fills", account)
        ]

    def trades(self, account: str | None = None) -> list[ClosedTrade]:
        fields = set(ClosedTrade.model_fields)
        out = []
        for r in self.rows("trades", account):
            r["signal_weights"] = json.loads(r["signal_weights"])
            out.append(ClosedTrade.model_validate({k: v for k, v in r.items() if k in fields}))
        return out

    def summary(self, account: str | None = None) -> dict[str, Any]:
        """Trade statistics; a trade is a win when its net pnl > 0, otherwise a loss."""
        sql = (
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN pnl > 0 THEN 1 ELSE 0 END), 0) AS wins, "
            "COALESCE(SUM(pnl), 0.0) AS pnl, COALESCE(SUM(fees), 0.0) AS fees FROM trades"
        )
        args: tuple[str, ...] = ()
        if account is not None:
            sql += " WHERE account = ?"
            args = (account,)
        where = " WHERE account = ?" if account is not None else ""
        field = self.db.dialect.json_field
        llm_sql = (
            "SELECT source, COUNT(*) AS n, "
            f"COALESCE(SUM({field('decision', ('llm', 'cost_usd'), 'DOUBLE PRECISION')}), 0.0) "
            "AS cost, "
            f"COALESCE(SUM({field('decision', ('llm', 'input_tokens'), 'BIGINT')}), 0) AS tin, "
            f"COALESCE(SUM({field('decision', ('llm', 'output_tokens'), 'BIGINT')}), 0) AS tout "
            f"FROM decisions{where} GROUP BY source"
        )
        totals = self.db.execute(sql, args).rows[0]
        by_source = self.db.execute(llm_sql, args).rows
        n, wins = int(totals["n"]), int(totals["wins"])
        return {
            "n_trades": n,
            "wins": wins,
            "losses": n - wins,
            "total_pnl": float(totals["pnl"]),
            "total_fees": float(totals["fees"]),
            "win_rate": wins / n if n else 0.0,
            "decisions_by_source": {r["source"]: int(r["n"]) for r in by_source},
            "llm_decision_cost_usd": float(sum(float(r["cost"]) for r in by_source)),
            "llm_decision_tokens": {
                "input": int(sum(int(r["tin"]) for r in by_source)),
                "output": int(sum(int(r["tout"]) for r in by_source)),
            },
        }

    # ------------------------------------------------------------ export

    def export_csv(self, kind: Kind, out: TextIO, account: str | None = None) -> int:
        """Write one table as CSV with a header; each ``*_ms`` column is followed by its ISO
        UTC rendering (``*_ms`` → ``*``, e.g. ``market_time``). Returns data rows written."""
        columns: list[str] = []
        for c in _COLUMNS.get(kind, ()):
            columns.append(c)
            if c.endswith("_ms"):
                columns.append(c.removesuffix("_ms"))
        rows = self.rows(kind, account)  # validates kind
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in rows:
            for c in list(r):
                if c.endswith("_ms"):
                    r[c.removesuffix("_ms")] = ms_to_iso(r[c])
            writer.writerow(["" if r[c] is None else r[c] for c in columns])
        return len(rows)
