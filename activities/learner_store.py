"""The learner_update activity: new learner state after a closed trade, plus a snapshot row.

The learner's state lives in the DecisionWorkflow (Temporal keeps it durable); this activity
computes the next state with ``trading.learner.update`` (idempotent by trade id) and appends one
row per trade to ``learner.db`` under OCW_HOME for later analysis (reliabilities and posteriors
after each trade). ``INSERT OR IGNORE`` on the trade id: a retried activity writes once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.paper_broker import connect
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
        recorded_at     TEXT NOT NULL
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
    """Append-only snapshots of the learner, one row per trade (WAL, multi-process safe)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._conn = connect(self.db_path)
        self._lock = threading.Lock()
        with self._lock:
            for stmt in _SCHEMA:
                self._conn.execute(stmt)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def record(self, req: LearnerUpdateRequest, state: LearnerState) -> bool:
        """One snapshot of ``state`` after ``req.trade``; True when a row was added."""
        regime = regime_key(req.regime)
        used, _ = active_set(state, regime, req.params)
        table = posterior_table(state)
        touched = {k: v.model_dump() for k, v in table.sets.items() if k in (GLOBAL, regime)}
        row: dict[str, Any] = {
            "trade_id": req.trade.trade_id,
            "account": req.account,
            "symbol": req.trade.symbol,
            "regime": regime,
            "set_used": used,
            "exit_time_ms": req.trade.exit_time_ms,
            "pnl_pct": req.trade.pnl_pct,
            "signal_weights": json.dumps(req.trade.signal_weights, sort_keys=True),
            "reliabilities": json.dumps(reliabilities(state, regime, req.params), sort_keys=True),
            "posteriors": json.dumps(touched, sort_keys=True),
            "n_trades": state.n_trades,
            "recorded_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        sql = (
            f"INSERT OR IGNORE INTO learner_updates ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
        )
        with self._lock:
            cur = self._conn.execute(sql, [row[c] for c in _COLUMNS])
            return cur.rowcount == 1

    def rows(self, account: str | None = None) -> list[dict[str, Any]]:
        """Snapshots oldest first (by exit time), JSON columns decoded."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM learner_updates"
        args: list[Any] = []
        if account is not None:
            sql += " WHERE account = ?"
            args.append(account)
        sql += " ORDER BY exit_time_ms, trade_id"
        with self._lock:
            raw = self._conn.execute(sql, args).fetchall()
        out = []
        for values in raw:
            row = dict(zip(_COLUMNS, values, strict=True))
            for col in ("signal_weights", "reliabilities", "posteriors"):
                row[col] = json.loads(row[col])
            out.append(row)
        return out


class LearnerActivities:
    def __init__(self, store: LearnerStore) -> None:
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings) -> LearnerActivities:
        return cls(LearnerStore(settings.home / "learner.db"))

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
        except sqlite3.Error as exc:  # the snapshot is for analysis: learning goes on
            log.warning("learner snapshot of %s not written: %s", req.trade.trade_id, exc)
        return state
