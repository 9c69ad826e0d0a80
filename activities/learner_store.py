"""The learner_update activity: new learner state after a closed trade, plus a snapshot row.

The learner's state lives in the DecisionWorkflow (Temporal keeps it durable); this activity
computes the next state with ``trading.learner.update`` (idempotent by trade id) and appends one
row per trade to ``learner.db`` under OCW_HOME, or to the PostgreSQL database of
``OCW_DB_URL`` (``activities/db.py``), for later analysis (reliabilities and posteriors after
each trade). ``INSERT OR IGNORE`` on the trade id: a retried activity writes once.

A row is of one direction (``side``, the trade's): its reliabilities are that side's, its
posteriors the two sets the trade updated ("global" and the regime for a long, "global/short" and
"<regime>/short" for a short). A ``learner.db`` from before shorts gains the ``side`` column
(its rows are longs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from temporalio import activity

from activities.db import DB_ERRORS, Database, target_for
from trading.config import Settings
from trading.learner import (
    GLOBAL,
    LearnerParams,
    LearnerState,
    LearnerUpdateRequest,
    active_set,
    posterior_table,
    regime_key,
    reliabilities,
    side_key,
    update,
)
from workflows import activity_api as api

log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS learner_updates (
        trade_id        TEXT PRIMARY KEY,
        account         TEXT NOT NULL,
        symbol          TEXT NOT NULL,
        regime          TEXT NOT NULL,
        set_used        TEXT NOT NULL,
        exit_time_ms    INTEGER NOT NULL,
        pnl_pct         REAL NOT NULL,
        signal_weights  TEXT NOT NULL,
        reliabilities   TEXT NOT NULL,
        posteriors      TEXT NOT NULL,
        n_trades        INTEGER NOT NULL,
        recorded_at     TEXT NOT NULL,
        side            TEXT NOT NULL DEFAULT 'long'
    )""",
    "CREATE INDEX IF NOT EXISTS learner_updates_time ON learner_updates (account, exit_time_ms)",
)
_COLUMNS = (
    "trade_id",
    "account",
    "symbol",
    "regime",
    "set_used",
    "exit_time_ms",
    "pnl_pct",
    "signal_weights",
    "reliabilities",
    "posteriors",
    "n_trades",
    "recorded_at",
    "side",
)


def learner_params_from(settings: Settings) -> LearnerParams:
    """The learner's SPEC §5 numbers from the settings (for the workflow's config)."""
    return LearnerParams(
        prior_alpha=settings.learner_prior,
        prior_beta=settings.learner_prior,
        decay=settings.learner_decay,
        min_weight=settings.learner_min_weight,
        min_regime_trades=settings.learner_min_regime_trades,
        warmup_trades=settings.learner_warmup_trades,
        max_seen_ids=settings.learner_max_seen_ids,
    )


class LearnerStore:
    """Append-only snapshots of the learner, one row per trade (multi-process, multi-host)."""

    def __init__(self, target: Path | str | SecretStr) -> None:
        """``target``: the SQLite file, or a PostgreSQL URL (a SecretStr)."""
        self.db = Database(target, "learner")
        self.db_path = self.db.path  # None on PostgreSQL
        self.db.create_schema(_SCHEMA)
        self._add_side()

    def _add_side(self) -> None:
        """A learner.db from before shorts has no ``side``: add it (every old row was a long).
        Idempotent, and safe when several processes open the store at once."""
        column = "side TEXT NOT NULL DEFAULT 'long'"
        if self.db.path is None:  # PostgreSQL knows IF NOT EXISTS for a column
            self.db.execute(f"ALTER TABLE learner_updates ADD COLUMN IF NOT EXISTS {column}")
            return
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(learner_updates)").rows}
        if "side" in columns:
            return
        try:
            self.db.execute(f"ALTER TABLE learner_updates ADD COLUMN {column}")
        except sqlite3.OperationalError as err:  # another process added it meanwhile
            if "duplicate column" not in str(err):
                raise

    @classmethod
    def from_settings(cls, settings: Settings) -> LearnerStore:
        """PostgreSQL with OCW_DB_URL, else ``learner.db`` under OCW_HOME."""
        return cls(target_for(settings, settings.home / "learner.db"))

    def close(self) -> None:
        self.db.close()

    def record(self, req: LearnerUpdateRequest, state: LearnerState) -> bool:
        """One snapshot of ``state`` after ``req.trade``; True when a row was added."""
        regime = regime_key(req.regime)
        side = req.trade.side
        used, _ = active_set(state, regime, req.params, side=side)
        table = posterior_table(state)
        mine = (side_key(GLOBAL, side), side_key(regime, side))
        touched = {k: v.model_dump(mode="json") for k, v in table.sets.items() if k in mine}
        row: dict[str, Any] = {
            "trade_id": req.trade.trade_id,
            "account": req.account,
            "symbol": req.trade.symbol,
            "regime": regime,
            "set_used": used,
            "exit_time_ms": req.trade.exit_time_ms,
            "pnl_pct": req.trade.pnl_pct,
            "signal_weights": json.dumps(req.trade.signal_weights, sort_keys=True),
            "reliabilities": json.dumps(
                reliabilities(state, regime, req.params, side=side), sort_keys=True
            ),
            "posteriors": json.dumps(touched, sort_keys=True),
            "n_trades": state.n_trades,
            "recorded_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "side": side.value,
        }
        sql = self.db.dialect.insert_ignore("learner_updates", _COLUMNS)
        return self.db.execute(sql, [row[c] for c in _COLUMNS]).rowcount == 1

    def rows(self, account: str | None = None) -> list[dict[str, Any]]:
        """Snapshots oldest first (by exit time), JSON columns decoded."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM learner_updates"
        args: list[Any] = []
        if account is not None:
            sql += " WHERE account = ?"
            args.append(account)
        sql += f" ORDER BY exit_time_ms, {self.db.dialect.bytewise('trade_id')}"
        out = []
        for row in self.db.execute(sql, args).rows:
            for col in ("signal_weights", "reliabilities", "posteriors"):
                row[col] = json.loads(row[col])
            out.append(row)
        return out


class LearnerActivities:
    def __init__(self, store: LearnerStore) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> LearnerActivities:
        return cls(LearnerStore.from_settings(settings))

    def all(self) -> list:
        return [self.learner_update]

    @activity.defn(name=api.LEARNER_UPDATE)
    async def learner_update(self, req: LearnerUpdateRequest) -> LearnerState:
        """The state after ``req.trade`` (unchanged if its id was seen) and its snapshot row."""
        state = update(req.state, req.trade, req.regime, req.params)
        if state is req.state:
            log.info("learner: trade %s already learned", req.trade.trade_id)
        try:
            await asyncio.to_thread(self.store.record, req, state)
        except DB_ERRORS as exc:  # the snapshot is for analysis: learning goes on
            log.warning("learner snapshot of %s not written: %s", req.trade.trade_id, exc)
        return state
