"""Where the journal, the learner snapshots and the LLM store live: SQLite or PostgreSQL.

The embedded default is one SQLite file per store under ``OCW_HOME`` (WAL, busy timeout:
several processes on one host). Setting ``OCW_DB_URL`` (``postgresql://user:pass@host:5432/ocw``)
puts all three stores in one PostgreSQL database, so workers on several hosts share one
journal; their tables have distinct names. The paper broker stays a SQLite file (single host).

The stores write portable SQL (``?`` placeholders) and ask the ``Dialect`` for what differs:
``INSERT OR IGNORE`` vs ``ON CONFLICT DO NOTHING``, upserts, column types (Postgres gets
BIGINT and DOUBLE PRECISION, and a ``seq`` identity column standing in for SQLite's ``rowid``,
i.e. insertion order), JSON fields and a byte-wise text order. ``Database`` runs statements
under a lock (activities call it from threads), returns rows as dicts, retries what is safe to
retry ("database is locked", serialization failures and deadlocks, and, for idempotent
statements, a dropped Postgres connection, once, on a fresh one) and creates schemas
idempotently (Postgres: under an advisory lock, so two hosts starting together do not race).

The URL is a secret: it never appears in a log line, an exception or a ``repr``; a
connection failure is one ``DatabaseUnavailable`` line naming ``host:port/db`` only.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from pydantic import SecretStr

from activities.paper_broker import connect as sqlite_connect
from trading.config import Settings

log = logging.getLogger(__name__)

Target = Path | SecretStr  # a SQLite file, or a PostgreSQL URL (a secret)
POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10
RETRIES = 5  # serialization failure / deadlock: attempts after the first
SQLITE_RETRIES = 2  # "database is locked": each after the 30 s busy timeout already waited
_SCHEMA_LOCK = 0x6F6377  # pg_advisory_xact_lock key of every schema creation ("ocw")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or opened: one line, never the password."""


# What a caller reading or writing a store catches: either back end, or no connection.
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error, DatabaseUnavailable)

T = TypeVar("T")


def as_target(where: Path | str | SecretStr) -> Target:
    """A path (str or Path) or a PostgreSQL URL (SecretStr, or a str with its scheme)."""
    if isinstance(where, SecretStr):
        return where
    if isinstance(where, str) and where.split("://", 1)[0] in POSTGRES_SCHEMES:
        return SecretStr(where)
    return Path(where)


def target_for(settings: Settings, path: Path) -> Target:
    """The store's database: ``OCW_DB_URL`` when set, else its SQLite file ``path``."""
    return settings.db_url if settings.db_url is not None else Path(path)


def exists(target: Target) -> bool:
    """Whether the store may hold anything yet (a Postgres database is always there)."""
    return isinstance(target, SecretStr) or target.exists()


def describe(target: Target) -> str:
    """The target for a message: the file, or ``host:port/db`` (no user, no password)."""
    if isinstance(target, Path):
        return str(target)
    try:
        parts = urlsplit(target.get_secret_value())
        query = parse_qs(parts.query)
        host = unquote(parts.hostname or "") or query.get("host", ["localhost"])[0]
        port = query.get("port", [None])[0] or (parts.port if parts.port else 5432)
    except ValueError:  # an unparsable port: say so without echoing the URL
        return "an unparsable OCW_DB_URL"
    return f"{host}:{port}/{unquote(parts.path.lstrip('/')) or '?'}"


def _scrub(text: str, url: str) -> str:
    """``text`` on one line without the URL or its password, bounded."""
    secrets = {url}
    password = urlsplit(url).password if "://" in url else None
    if password:
        secrets |= {password, unquote(password)}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())[:300]


# ------------------------------------------------------------------ dialects


@dataclass(frozen=True)
class Dialect:
    """The SQL that differs between the back ends; statements are written for SQLite."""

    name: Literal["sqlite", "postgres"]

    @property
    def insertion_order(self) -> str:
        """The column that orders rows as they were inserted."""
        return "rowid" if self.name == "sqlite" else "seq"

    def sql(self, stmt: str) -> str:
        """``?`` placeholders as this driver wants them."""
        return stmt if self.name == "sqlite" else _pg_placeholders(stmt)

    def ddl(self, stmt: str) -> str:
        """A ``CREATE`` statement in this dialect (Postgres: 64-bit integers, doubles, seq)."""
        return stmt if self.name == "sqlite" else _pg_ddl(stmt)

    def insert_ignore(self, table: str, cols: Sequence[str]) -> str:
        """An insert that keeps the existing row on a duplicate key (rowcount 0)."""
        values = f"({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        if self.name == "sqlite":
            return f"INSERT OR IGNORE INTO {table} {values}"
        return f"INSERT INTO {table} {values} ON CONFLICT DO NOTHING"

    def upsert(
        self, table: str, cols: Sequence[str], key: str, updates: dict[str, str] | None = None
    ) -> str:
        """Insert, or update the row with that key: ``updates`` maps a column to its new value
        (SQL; the existing row as ``table.col``, the proposed one as ``excluded.col``); by
        default every other column takes the proposed value (the last write wins)."""
        if updates is None:
            updates = {c: f"excluded.{c}" for c in cols if c != key}
        sets = ", ".join(f"{c} = {v}" for c, v in updates.items())
        return (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
        )

    def json_field(self, col: str, path: Sequence[str], sql_type: str) -> str:
        """A scalar inside a JSON text column as ``sql_type``; NULL when absent or null."""
        if self.name == "sqlite":
            return f"json_extract({col}, '$.{'.'.join(path)}')"
        return f"CAST(CAST({col} AS jsonb) #>> '{{{','.join(path)}}}' AS {sql_type})"

    def bytewise(self, col: str) -> str:
        """``col`` for ORDER BY in code-point order (SQLite's), whatever the server's locale."""
        return col if self.name == "sqlite" else f'{col} COLLATE "C"'


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")


@lru_cache(maxsize=512)
def _pg_placeholders(stmt: str) -> str:
    return stmt.replace("%", "%%").replace("?", "%s")


_CREATE_TABLE = re.compile(r"^(\s*CREATE TABLE IF NOT EXISTS \w+ \()", re.IGNORECASE)


@lru_cache(maxsize=128)
def _pg_ddl(stmt: str) -> str:
    out = re.sub(
        r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        stmt,
        flags=re.IGNORECASE,
    )
    out = re.sub(r"\bINTEGER\b", "BIGINT", out, flags=re.IGNORECASE)  # epoch ms > 2**31
    out = re.sub(r"\bREAL\b", "DOUBLE PRECISION", out, flags=re.IGNORECASE)  # REAL is 4 bytes
    return _CREATE_TABLE.sub(r"\1\n        seq BIGINT GENERATED ALWAYS AS IDENTITY,", out)


# ------------------------------------------------------------------ connections


@dataclass
class Result:
    """What one statement returned: its rows (dicts) and how many rows it changed."""

    rows: list[dict[str, Any]]
    rowcount: int

    def one(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None


class Database:
    """One connection to a store's database, shared by threads under a lock."""

    def __init__(self, target: Path | str | SecretStr, what: str = "journal") -> None:
        self.target = as_target(target)
        self.what = what  # for messages: "journal", "learner", "LLM store"
        self._lock = threading.RLock()
        self._closed = False
        if isinstance(self.target, Path):
            self.dialect = SQLITE
            self._sqlite = sqlite_connect(self.target)
            self._sqlite.row_factory = sqlite3.Row
            self._pg: psycopg.Connection | None = None
        else:
            self.dialect = POSTGRES
            self._pg = self._pg_connect()

    @property
    def path(self) -> Path | None:
        return self.target if isinstance(self.target, Path) else None

    def __repr__(self) -> str:
        return f"Database({self.dialect.name} {describe(self.target)})"

    def _pg_connect(self) -> psycopg.Connection:
        assert isinstance(self.target, SecretStr)
        url = self.target.get_secret_value()
        problem = ""
        if url.split("://", 1)[0] not in POSTGRES_SCHEMES:
            problem = "OCW_DB_URL must be a postgresql:// URL"
        else:
            try:
                return psycopg.connect(
                    url,
                    autocommit=True,  # one statement, one transaction, unless in transaction()
                    row_factory=dict_row,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    application_name="ocw",
                )
            except (psycopg.Error, ValueError) as exc:  # no chained cause: it may hold the DSN
                problem = _scrub(str(exc), url) or type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot reach the {self.what} database at {describe(self.target)}: {problem}"
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._pg is not None:
                self._pg.close()
            else:
                self._sqlite.close()

    # -------------------------------------------------------------- running statements

    def execute(self, stmt: str, params: Sequence[Any] = (), *, idempotent: bool = True) -> Result:
        """Run one statement (``?`` placeholders) in its own transaction.

        ``idempotent``: whether running it twice equals running it once, so it may be retried
        on a fresh connection when the old one dropped (the first run may have committed)."""
        sql = self.dialect.sql(stmt)
        if self._pg is None:
            return self._retrying(lambda: self._sqlite_run(sql, params), idempotent)
        clean = [_pg_text(p) for p in params]
        return self._retrying(lambda: self._pg_run(sql, clean), idempotent)

    def create_schema(self, statements: Iterable[str]) -> None:
        """``CREATE ... IF NOT EXISTS`` statements in one transaction (idempotent, race-free)."""
        ddl = [self.dialect.ddl(s) for s in statements]

        def sqlite_run() -> Result:
            conn = self._sqlite
            conn.execute("BEGIN IMMEDIATE")
            try:
                for s in ddl:
                    conn.execute(s)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return Result([], 0)

        def pg_run() -> Result:
            conn = self._pg_conn()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for s in ddl:
                    conn.execute(s)
            return Result([], 0)

        self._retrying(sqlite_run if self._pg is None else pg_run, idempotent=True)

    def _sqlite_run(self, sql: str, params: Sequence[Any]) -> Result:
        cur = self._sqlite.execute(sql, tuple(params))
        rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        return Result(rows, cur.rowcount)

    def _pg_conn(self) -> psycopg.Connection:
        assert self._pg is not None
        if self._closed:
            raise psycopg.InterfaceError(f"the {self.what} database was closed")
        if self._pg.closed or self._pg.broken:
            log.warning("%s database at %s: reconnecting", self.what, describe(self.target))
            self._pg.close()
            self._pg = self._pg_connect()
        return self._pg

    def _pg_run(self, sql: str, params: Sequence[Any]) -> Result:
        cur = self._pg_conn().execute(sql, params)
        rows = list(cur.fetchall()) if cur.description else []
        return Result(rows, cur.rowcount)

    def _retrying(self, run: Callable[[], T], idempotent: bool) -> T:
        attempt, reconnected = 0, False
        while True:
            try:
                with self._lock:
                    return run()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if attempt >= SQLITE_RETRIES or ("locked" not in text and "busy" not in text):
                    raise
            except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected):
                if attempt >= RETRIES:  # the statement was rolled back: always safe to retry
                    raise
            except psycopg.OperationalError:
                lost = self._pg is not None and (self._pg.closed or self._pg.broken)
                if not (lost and idempotent and not reconnected):
                    raise
                reconnected = True  # the next run reconnects, once
                continue
            time.sleep(min(1.0, 0.05 * 2**attempt))
            attempt += 1


def _pg_text(value: Any) -> Any:
    """Postgres text cannot hold NUL: it becomes U+FFFD (SQLite stores it as is)."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value
