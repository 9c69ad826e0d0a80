"""LLM call storage in one SQLite file under OCW_HOME, or in the PostgreSQL database of
``OCW_DB_URL`` (``activities/db.py``; the daily spend and the breakers then hold across hosts):
record/replay cache, call journal, run spend.

* The cache makes LLM backtests and replays reproducible: an answer is stored under a hash of
  (call kind, model, prompt version, system prompt + tools, rendered snapshot), so the same run
  gets the same raw answer, and so the same validated decisions, without a second API call.
* The journal keeps every call's full prompt and raw answer; the workflow history only gets
  the validated decision.
* Run spend sums what recorded runs cost, so a per-run budget can stop a long backtest.
* The spend ledger holds every paid call's cost by account and UTC day of market time, written
  as soon as the API has answered (before the answer is validated); the activities refuse a
  fresh call once the day's ledger spend reaches the daily budget, whatever a workflow run
  remembers. The last breaker state of each account is kept beside it (issue 10).

Journal text is bounded (``JOURNAL_MAX_BYTES`` per prompt and per answer, with a truncation
marker) and made UTF-8 clean (lone surrogates replaced), so no answer can fail a write or grow
the file without limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr

from activities.db import Database, target_for
from trading.config import Settings
from trading.models import Model

JOURNAL_MAX_BYTES = 64_000  # per prompt and per answer in the call journal
ERROR_MAX_CHARS = 500
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def utf8_clean(text: str) -> str:
    """``text`` with lone surrogates (valid in JSON escapes, not in UTF-8) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def bounded(text: str, max_bytes: int = JOURNAL_MAX_BYTES) -> str:
    """At most ``max_bytes`` of UTF-8; a longer text is cut and ends with a marker naming its
    full size."""
    text = utf8_clean(text)
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    marker = f"…[truncated: {len(raw)} bytes]"
    keep = max(0, max_bytes - len(marker.encode("utf-8")))
    return raw[:keep].decode("utf-8", errors="ignore") + marker


class CacheMode(StrEnum):
    OFF = "off"  # always call, store nothing in the cache
    RECORD = "record"  # always call, store the answer
    REPLAY = "replay"  # never call: a miss is an error
    RECORD_REPLAY = "record_replay"  # stored answer when there is one, else call and store


class CachedAnswer(Model):
    """A raw Messages API answer as stored: content blocks and usage, plus what it cost."""

    key: str
    kind: str
    model: str
    content: list[dict[str, Any]]
    usage: dict[str, int] = Field(default_factory=dict)
    cost_usd: float = 0.0


class CallRecord(Model):
    """One row of the call journal."""

    call_id: str
    kind: str  # "decide" | "evaluate_position"
    model: str
    cache_key: str
    market_time_ms: int | None = None
    prompt: str
    answer: str = ""  # raw content blocks as JSON, or "" when the call failed
    usage: dict[str, int] = Field(default_factory=dict)
    cost_usd: float = 0.0
    replayed: bool = False
    error: str = ""


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS llm_cache (
        key            TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        model          TEXT NOT NULL,
        content        TEXT NOT NULL,
        usage          TEXT NOT NULL,
        cost_usd       REAL NOT NULL,
        recorded_at    TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS llm_calls (
        call_id        TEXT PRIMARY KEY,
        kind           TEXT NOT NULL,
        model          TEXT NOT NULL,
        cache_key      TEXT NOT NULL,
        market_time_ms INTEGER,
        prompt         TEXT NOT NULL,
        answer         TEXT NOT NULL,
        usage          TEXT NOT NULL,
        cost_usd       REAL NOT NULL,
        replayed       INTEGER NOT NULL,
        error          TEXT NOT NULL,
        recorded_at    TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS llm_runs (
        run_id         TEXT PRIMARY KEY,
        spent_usd      REAL NOT NULL,
        calls          INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS llm_ledger (
        call_id        TEXT PRIMARY KEY,
        account        TEXT NOT NULL,
        day            TEXT NOT NULL,
        cost_usd       REAL NOT NULL,
        estimated      INTEGER NOT NULL,
        recorded_at    TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS llm_ledger_day ON llm_ledger (account, day)",
    """CREATE TABLE IF NOT EXISTS llm_breakers (
        account        TEXT PRIMARY KEY,
        state          TEXT NOT NULL,
        saved_at       TEXT NOT NULL
    )""",
)


_CACHE_COLUMNS = ("key", "kind", "model", "content", "usage", "cost_usd", "recorded_at")
_CALL_COLUMNS = (
    "call_id",
    "kind",
    "model",
    "cache_key",
    "market_time_ms",
    "prompt",
    "answer",
    "usage",
    "cost_usd",
    "replayed",
    "error",
    "recorded_at",
)


def cache_key(kind: str, model: str, prompt_version: str, prefix: str, prompt: str) -> str:
    """sha256 over everything that decides the answer (the static prefix hashed as a whole)."""
    prefix_hash = hashlib.sha256(prefix.encode()).hexdigest()
    payload = json.dumps([kind, model, prompt_version, prefix_hash, prompt], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LLMStore:
    """Cache, journal and run spend; thread-safe (activities run database work in threads)."""

    def __init__(self, target: Path | str | SecretStr) -> None:
        """``target``: the SQLite file, or a PostgreSQL URL (a SecretStr)."""
        self.db = Database(target, "LLM store")
        self.db_path = self.db.path  # None on PostgreSQL
        self.db.create_schema(_SCHEMA)

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMStore:
        """PostgreSQL with OCW_DB_URL, else ``llm.db`` (or OCW_LLM_CACHE_PATH) under OCW_HOME."""
        return cls(target_for(settings, settings.paths()["llm_db"]))

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ cache

    def get(self, key: str) -> CachedAnswer | None:
        row = self.db.execute("SELECT * FROM llm_cache WHERE key = ?", (key,)).one()
        if row is None:
            return None
        return CachedAnswer(
            key=row["key"],
            kind=row["kind"],
            model=row["model"],
            content=json.loads(row["content"]),
            usage=json.loads(row["usage"]),
            cost_usd=row["cost_usd"],
        )

    def put(self, answer: CachedAnswer) -> None:
        """Store (or replace, in record mode) the answer under its key."""
        self.db.execute(
            self.db.dialect.upsert("llm_cache", _CACHE_COLUMNS, "key"),
            (
                answer.key,
                answer.kind,
                answer.model,
                utf8_clean(json.dumps(answer.content, ensure_ascii=False)),
                json.dumps(answer.usage),
                answer.cost_usd,
                _now_iso(),
            ),
        )

    # ------------------------------------------------------------ journal

    def record_call(self, rec: CallRecord) -> bool:
        """Append one call; idempotent by call id (a retried activity writes once per attempt).

        Prompt and answer are stored bounded and UTF-8 clean (see ``bounded``)."""
        result = self.db.execute(
            self.db.dialect.insert_ignore("llm_calls", _CALL_COLUMNS),
            (
                utf8_clean(rec.call_id),
                rec.kind,
                rec.model,
                rec.cache_key,
                rec.market_time_ms,
                bounded(rec.prompt),
                bounded(rec.answer),
                json.dumps(rec.usage),
                rec.cost_usd,
                int(rec.replayed),
                utf8_clean(rec.error)[:ERROR_MAX_CHARS],
                _now_iso(),
            ),
        )
        return result.rowcount == 1

    def calls(self) -> list[CallRecord]:
        order = self.db.dialect.insertion_order
        rows = self.db.execute(f"SELECT * FROM llm_calls ORDER BY {order}").rows
        return [
            CallRecord(
                call_id=r["call_id"],
                kind=r["kind"],
                model=r["model"],
                cache_key=r["cache_key"],
                market_time_ms=r["market_time_ms"],
                prompt=r["prompt"],
                answer=r["answer"],
                usage=json.loads(r["usage"]),
                cost_usd=r["cost_usd"],
                replayed=bool(r["replayed"]),
                error=r["error"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------ run spend

    def run_spent(self, run_id: str) -> float:
        row = self.db.execute("SELECT spent_usd FROM llm_runs WHERE run_id = ?", (run_id,)).one()
        return float(row["spent_usd"]) if row else 0.0

    def add_run_spend(self, run_id: str, cost_usd: float) -> float:
        """Add one call's cost to the run; returns the run's new total."""
        sql = self.db.dialect.upsert(
            "llm_runs",
            ("run_id", "spent_usd", "calls"),
            "run_id",
            {
                "spent_usd": "llm_runs.spent_usd + excluded.spent_usd",
                "calls": "llm_runs.calls + 1",
            },
        )
        # an increment: not retried on a fresh connection (the first one may have committed)
        self.db.execute(sql, (run_id, cost_usd, 1), idempotent=False)
        return self.run_spent(run_id)

    # ------------------------------------------------------------ spend ledger and breaker

    def add_spend(
        self, call_id: str, account: str, day: str, cost_usd: float, estimated: bool = False
    ) -> bool:
        """One paid call's cost on the account's day; idempotent by call id."""
        sql = self.db.dialect.insert_ignore(
            "llm_ledger", ("call_id", "account", "day", "cost_usd", "estimated", "recorded_at")
        )
        result = self.db.execute(
            sql,
            (
                utf8_clean(call_id),
                utf8_clean(account),
                day,
                max(0.0, float(cost_usd)),
                int(estimated),
                _now_iso(),
            ),
        )
        return result.rowcount == 1

    def day_spend(self, account: str, day: str) -> tuple[float, int]:
        """Dollars and paid calls of the account on that day."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0.0) AS usd, COUNT(*) AS calls FROM llm_ledger "
            "WHERE account = ? AND day = ?",
            (utf8_clean(account), day),
        ).rows[0]
        return float(row["usd"]), int(row["calls"])

    def save_breaker(self, account: str, state: dict[str, Any]) -> None:
        """The account's breaker state (upsert: the last save wins)."""
        self.db.execute(
            self.db.dialect.upsert("llm_breakers", ("account", "state", "saved_at"), "account"),
            (
                utf8_clean(account),
                utf8_clean(json.dumps(state, ensure_ascii=False)),
                _now_iso(),
            ),
        )

    def breaker(self, account: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT state FROM llm_breakers WHERE account = ?", (utf8_clean(account),)
        ).one()
        if row is None:
            return None
        try:
            value = json.loads(row["state"])
        except ValueError:  # a damaged row reads as "never saved"
            return None
        return value if isinstance(value, dict) else None
