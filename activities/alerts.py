"""Sending alerts: Telegram's Bot API and a generic JSON webhook, deduplicated and rate-limited.

:class:`AlertSender` sends each alert to every configured destination:

* **Telegram**: ``POST {OCW_TELEGRAM_API_URL}/bot{token}/sendMessage`` with ``chat_id``, the
  alert as HTML (``parse_mode=HTML``, everything escaped) and ``disable_web_page_preview``; the
  answer must be ``{"ok": true, "result": {...}}``. 429 waits ``parameters.retry_after``; 5xx,
  timeouts and dropped connections are retried; 400 (chat not found, ...), 401, 403 and 404
  are final, with a clear reason and no retry;
* **webhook**: ``POST OCW_ALERT_WEBHOOK_URL`` with :func:`trading.alerts.webhook_body` (the
  alert's JSON plus ``text``) and ``Idempotency-Key: <alert key>``. 2xx is delivered, 409 is
  taken as "already delivered"; 408, 425, 429 (``Retry-After``) and 5xx are retried, any other
  status is final.

Exactly once, as far as it can be had: a sent-log (:class:`AlertLog`: :class:`DbAlertLog`,
the SQLite file ``$OCW_HOME/alerts.db``, or with ``OCW_DB_URL`` the PostgreSQL database every
host shares) keeps ``(destination, alert key)`` of every alert sent or suppressed, so an alert
re-emitted after a restart or resent by a retried activity is reported ``duplicate`` and not
sent again. Before a send the sender *claims* the pair for a short lease, so two processes, on
one host or several, never send the same alert at once (the loser is told to retry later, by
when the pair is sent or the lease of a crashed sender has run out). One window stays
at-least-once: a destination that accepted a message whose answer was lost (connection dropped
after the request was processed) sees the retry as a new message. The webhook gets the same
``Idempotency-Key`` and can drop it; Telegram has no idempotency key and shows it twice.

The hourly rate limit per destination counts the sends in the same log (it survives restarts
and is shared by the hosts; two sending at the same instant may each take the last slot);
alerts over it are logged as suppressed and go out folded into one summary alert when the
window has room (see ``trading/alerts.py``). A summary is due at the start of any send, so a
caller that sends nothing for a while may call ``send_now([])`` to flush it.

No secret leaves: every text is scrubbed (:func:`trading.alerts.scrub`) of the configured
secrets and anything shaped like one; error reasons are built from the HTTP status and
Telegram's ``description``, never from a URL (the bot URL holds the token, the webhook URL is a
secret too); the ``httpx`` / ``httpcore`` loggers are set to WARNING here (httpx logs every
request URL at INFO) and their records are scrubbed besides.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import httpx
from pydantic import Field, SecretStr
from temporalio import activity

from activities.db import Database, Target, target_for
from trading.alerts import (
    WINDOW_MS,
    Alert,
    SuppressedEntry,
    expand_kinds,
    kind_allowed,
    rate_admits,
    render_html,
    scrub,
    scrub_alert,
    summary_alert,
    webhook_body,
)
from trading.config import SECRET_FIELDS, Settings
from trading.metrics import ALERTS, add
from trading.models import Model

log = logging.getLogger(__name__)

Outcome = Literal["sent", "duplicate", "suppressed", "filtered", "failed"]
RETENTION_MS = 30 * 86_400_000  # sent-log rows older than this are pruned (not suppressed ones)
USER_AGENT = "ocw-alerts/1"

# ---------------------------------------------------------------- no token in any log

_LOG_SECRETS: set[str] = set()


class _ScrubRecords(logging.Filter):
    """Scrub records of the HTTP client loggers, should anyone turn them up again."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):
            text = record.getMessage()
            clean = scrub(text, _LOG_SECRETS)
            if clean != text:
                record.msg, record.args = clean, ()
        return True


for _name in ("httpx", "httpcore"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _ScrubRecords) for f in _logger.filters):
        _logger.addFilter(_ScrubRecords())


# ---------------------------------------------------------------- reports


class Delivery(Model):
    """One alert at one destination."""

    destination: str
    outcome: Outcome
    reason: str = ""
    retryable: bool = False
    retry_after_s: float | None = None
    receipt: str | None = None  # Telegram's message_id


class AlertOutcome(Model):
    key: str
    kind: str
    outcome: Outcome  # failed if any destination failed, else sent if any sent, ...
    deliveries: list[Delivery] = Field(default_factory=list)


class SendReport(Model):
    destinations: list[str] = Field(default_factory=list)
    outcomes: list[AlertOutcome] = Field(default_factory=list)
    summaries: list[Delivery] = Field(default_factory=list)  # "N more suppressed", sent first
    sent: int = 0  # alerts, not deliveries (an alert sent anywhere counts once)
    duplicates: int = 0
    suppressed: int = 0
    filtered: int = 0
    failed: int = 0
    retryable: bool = False  # some delivery failed and a later try may succeed
    retry_after_s: float | None = None  # the longest wait a destination asked for
    errors: list[str] = Field(default_factory=list)  # one line per failed delivery


def _overall(deliveries: Sequence[Delivery]) -> Outcome:
    outcomes = {d.outcome for d in deliveries}
    for o in ("failed", "sent", "suppressed", "duplicate"):
        if o in outcomes:
            return o  # type: ignore[return-value]
    return "filtered" if "filtered" in outcomes else "failed"


def _report(
    destinations: list[str], outcomes: list[AlertOutcome], summaries: list[Delivery]
) -> SendReport:
    all_deliveries = [d for o in outcomes for d in o.deliveries] + summaries
    failures = [d for d in all_deliveries if d.outcome == "failed"]
    waits = [d.retry_after_s for d in failures if d.retryable and d.retry_after_s is not None]
    counts = {o: sum(1 for a in outcomes if a.outcome == o) for o in get_args(Outcome)}
    errors = []
    for o in outcomes:
        errors += [
            f"{o.key} -> {d.destination}: {d.reason}" for d in o.deliveries if d.outcome == "failed"
        ]
    errors += [
        f"summary -> {d.destination}: {d.reason}" for d in summaries if d.outcome == "failed"
    ]
    return SendReport(
        destinations=destinations,
        outcomes=outcomes,
        summaries=summaries,
        sent=counts["sent"],
        duplicates=counts["duplicate"],
        suppressed=counts["suppressed"],
        filtered=counts["filtered"],
        failed=counts["failed"],
        retryable=any(d.retryable for d in failures),
        retry_after_s=max(waits) if waits else None,
        errors=errors,
    )


# ---------------------------------------------------------------- the sent-log


class AlertLog(Protocol):
    """What was sent or suppressed where, and claims of sends in flight.

    States of a ``(destination, key)`` pair: ``sending`` (claimed until a lease ends),
    ``sent``, ``suppressed`` (by the rate limit; pending until a summary reports it).
    """

    def seen(self, destination: str, key: str, now_ms: int) -> str | None:
        """``sent``, ``suppressed``, ``sending`` (a live claim), or None."""
        ...

    def claim(self, destination: str, alert: Alert, now_ms: int, lease_ms: int) -> bool: ...

    def release(self, destination: str, key: str) -> None: ...

    def mark(
        self,
        destination: str,
        alert: Alert,
        now_ms: int,
        state: Literal["sent", "suppressed"] = "sent",
    ) -> None: ...

    def sent_count(self, destination: str, since_ms: int) -> int: ...

    def pending(self, destination: str) -> list[SuppressedEntry]: ...

    def settle(self, destination: str, keys: Sequence[str], summary_key: str) -> None: ...

    def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS alert_log (
        destination    TEXT NOT NULL,
        key            TEXT NOT NULL,
        kind           TEXT NOT NULL,
        account        TEXT NOT NULL,
        severity       TEXT NOT NULL,
        title          TEXT NOT NULL,
        state          TEXT NOT NULL,
        at_ms          INTEGER NOT NULL,
        lease_until_ms INTEGER,
        summary_key    TEXT,
        PRIMARY KEY (destination, key)
    )""",
    "CREATE INDEX IF NOT EXISTS alert_log_window ON alert_log (destination, state, at_ms)",
)
_COLS = ("destination", "key", "kind", "account", "severity", "title", "state", "at_ms")
_SETTLE_CHUNK = 500  # keys per UPDATE (SQLite's bound-parameter limit)


class DbAlertLog:
    """The sent-log on the database seam (``activities/db.py``): the SQLite file
    ``$OCW_HOME/alerts.db`` (processes of one host), or the table ``alert_log`` in the shared
    PostgreSQL database when ``OCW_DB_URL`` is set, so senders on several hosts (the trading
    worker, the listener, ``ocw alerts test``) share one sent-log and one rate window.

    A claim is one atomic statement on both back ends: an insert, or, on a conflict, an
    update only of a ``sending`` row whose lease has run out; the row count tells who won.
    """

    def __init__(self, target: Path | str | SecretStr, now_ms: int | None = None) -> None:
        """``target``: the SQLite file, or a PostgreSQL URL (a SecretStr)."""
        self.db = Database(target, "alert log")
        self.db_path = self.db.path  # None on PostgreSQL
        self.db.create_schema(_SCHEMA)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self.db.execute(
            "DELETE FROM alert_log WHERE at_ms < ? "
            "AND (state != 'suppressed' OR summary_key IS NOT NULL)",
            (now - RETENTION_MS,),
        )

    @staticmethod
    def target_of(settings: Settings) -> Target:
        return target_for(settings, settings.home / "alerts.db")

    @classmethod
    def from_settings(cls, settings: Settings) -> DbAlertLog:
        """PostgreSQL with OCW_DB_URL, else ``$OCW_HOME/alerts.db``."""
        return cls(cls.target_of(settings))

    def seen(self, destination: str, key: str, now_ms: int) -> str | None:
        row = self.db.execute(
            "SELECT state, lease_until_ms FROM alert_log WHERE destination = ? AND key = ?",
            (destination, key),
        ).one()
        if row is None:
            return None
        if row["state"] == "sending" and (row["lease_until_ms"] or 0) <= now_ms:
            return None  # a claim whose sender is gone
        return str(row["state"])

    def claim(self, destination: str, alert: Alert, now_ms: int, lease_ms: int) -> bool:
        sql = self.db.dialect.upsert(
            "alert_log",
            (*_COLS, "lease_until_ms"),
            "destination, key",
            {"at_ms": "excluded.at_ms", "lease_until_ms": "excluded.lease_until_ms"},
        )
        sql += " WHERE alert_log.state = 'sending' AND alert_log.lease_until_ms <= excluded.at_ms"
        args = (*self._values(destination, alert, "sending", now_ms), now_ms + lease_ms)
        # not idempotent: re-run after a lost answer, it would report our own claim as taken
        return self.db.execute(sql, args, idempotent=False).rowcount == 1

    def release(self, destination: str, key: str) -> None:
        self.db.execute(
            "DELETE FROM alert_log WHERE destination = ? AND key = ? AND state = 'sending'",
            (destination, key),
        )

    def mark(
        self,
        destination: str,
        alert: Alert,
        now_ms: int,
        state: Literal["sent", "suppressed"] = "sent",
    ) -> None:
        sql = self.db.dialect.upsert(
            "alert_log",
            _COLS,
            "destination, key",
            {"state": "excluded.state", "at_ms": "excluded.at_ms", "lease_until_ms": "NULL"},
        )
        self.db.execute(sql, self._values(destination, alert, state, now_ms))

    @staticmethod
    def _values(destination: str, alert: Alert, state: str, now_ms: int) -> tuple:
        a = alert
        return (destination, a.key, a.kind, a.account, a.severity, a.title[:200], state, now_ms)

    def sent_count(self, destination: str, since_ms: int) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) AS n FROM alert_log "
            "WHERE destination = ? AND state = 'sent' AND at_ms > ?",
            (destination, since_ms),
        ).one()
        return int(row["n"]) if row else 0

    def pending(self, destination: str) -> list[SuppressedEntry]:
        rows = self.db.execute(
            "SELECT kind, key, severity, title, at_ms, account FROM alert_log "
            "WHERE destination = ? AND state = 'suppressed' AND summary_key IS NULL "
            f"ORDER BY at_ms, {self.db.dialect.bytewise('key')}",
            (destination,),
        ).rows
        return [SuppressedEntry.model_validate(r) for r in rows]

    def settle(self, destination: str, keys: Sequence[str], summary_key: str) -> None:
        """Mark these suppressed alerts reported by that summary (idempotent, in chunks)."""
        keys = list(keys)
        for i in range(0, len(keys), _SETTLE_CHUNK):
            chunk = keys[i : i + _SETTLE_CHUNK]
            self.db.execute(
                "UPDATE alert_log SET summary_key = ? "
                f"WHERE destination = ? AND key IN ({', '.join('?' for _ in chunk)})",
                (summary_key, destination, *chunk),
            )

    def close(self) -> None:
        self.db.close()


class MemoryAlertLog:
    """The sent-log in memory (tests, or a process that may forget on restart)."""

    def __init__(self) -> None:
        # (destination, key) -> [state, at_ms, lease_until_ms, summary_key, alert]
        self.rows: dict[tuple[str, str], list] = {}

    def seen(self, destination: str, key: str, now_ms: int) -> str | None:
        row = self.rows.get((destination, key))
        if row is None or (row[0] == "sending" and row[2] <= now_ms):
            return None
        return row[0]

    def claim(self, destination: str, alert: Alert, now_ms: int, lease_ms: int) -> bool:
        if self.seen(destination, alert.key, now_ms) is not None:
            return False
        self.rows[(destination, alert.key)] = ["sending", now_ms, now_ms + lease_ms, None, alert]
        return True

    def release(self, destination: str, key: str) -> None:
        row = self.rows.get((destination, key))
        if row is not None and row[0] == "sending":
            del self.rows[(destination, key)]

    def mark(
        self,
        destination: str,
        alert: Alert,
        now_ms: int,
        state: Literal["sent", "suppressed"] = "sent",
    ) -> None:
        self.rows[(destination, alert.key)] = [state, now_ms, None, None, alert]

    def sent_count(self, destination: str, since_ms: int) -> int:
        return sum(
            1
            for (d, _), r in self.rows.items()
            if d == destination and r[0] == "sent" and r[1] > since_ms
        )

    def pending(self, destination: str) -> list[SuppressedEntry]:
        out = [
            SuppressedEntry(
                kind=r[4].kind,
                key=k,
                severity=r[4].severity,
                title=r[4].title,
                at_ms=r[1],
                account=r[4].account,
            )
            for (d, k), r in self.rows.items()
            if d == destination and r[0] == "suppressed" and r[3] is None
        ]
        return sorted(out, key=lambda e: (e.at_ms, e.key))

    def settle(self, destination: str, keys: Sequence[str], summary_key: str) -> None:
        for k in keys:
            row = self.rows.get((destination, k))
            if row is not None:
                row[3] = summary_key

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- destinations


class DeliveryError(Exception):
    """A destination refused or could not be reached. ``reason`` is safe to show (no URL,
    no token); ``retryable``: a later try may succeed (after ``retry_after`` seconds)."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Destination(Protocol):
    name: str

    async def deliver(self, client: httpx.AsyncClient, alert: Alert) -> str | None:
        """Send; a receipt (Telegram's message id) or None. Raises DeliveryError."""
        ...


def _transport_error(exc: httpx.HTTPError) -> DeliveryError:
    """Timeouts and connection failures, named by their class only (their texts may hold the
    URL in some versions)."""
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryError(f"timed out ({type(exc).__name__})", True)
    if isinstance(exc, httpx.RemoteProtocolError):
        return DeliveryError("connection dropped before an answer", True)
    if isinstance(exc, httpx.TransportError):
        return DeliveryError(f"cannot connect ({type(exc).__name__})", True)
    return DeliveryError(f"request failed ({type(exc).__name__})", False)


def _retry_after_header(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


class TelegramDestination:
    name = "telegram"

    def __init__(self, api_url: str, token: str, chat_id: str) -> None:
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"  # never logged or shown
        self.chat_id = chat_id

    def __repr__(self) -> str:
        return "TelegramDestination(chat_id=…)"

    async def deliver(self, client: httpx.AsyncClient, alert: Alert) -> str | None:
        payload = {
            "chat_id": self.chat_id,
            "text": render_html(alert),
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        try:
            resp = await client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # a proxy's page; the status says whether trying again can help
            final = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
            raise DeliveryError(
                f"{resp.status_code} with an answer that is not the Bot API's",
                not final,
            )
        if resp.status_code == 200 and body.get("ok") is True:
            result = body.get("result")
            if isinstance(result, dict) and "message_id" in result:
                return str(result["message_id"])
            raise DeliveryError("ok without a message in the answer", True)
        code = int(body.get("error_code") or resp.status_code)
        desc = " ".join(str(body.get("description") or resp.reason_phrase or "").split())[:200]
        params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        if code == 429 or resp.status_code == 429:
            wait = params.get("retry_after")
            retry_after = float(wait) if isinstance(wait, int | float) else None
            if retry_after is None:
                retry_after = _retry_after_header(resp.headers.get("retry-after"))
            raise DeliveryError(f"429 {desc}", True, retry_after)
        if resp.status_code >= 500 or code >= 500 or code == 408:
            raise DeliveryError(f"{code} {desc}", True)
        hint = {
            401: " (check OCW_TELEGRAM_BOT_TOKEN)",
            403: " (the bot cannot write to OCW_TELEGRAM_CHAT_ID: add it to the chat, or "
            "start a chat with it)",
            404: " (a malformed token, or OCW_TELEGRAM_API_URL is wrong)",
        }.get(code, "")
        if code == 400 and "chat not found" in desc.lower():
            hint = " (check OCW_TELEGRAM_CHAT_ID; the bot must be a member of the chat)"
        migrated = params.get("migrate_to_chat_id")
        if migrated is not None:
            hint = f" (the group is now chat {migrated}: set OCW_TELEGRAM_CHAT_ID to it)"
        raise DeliveryError(f"{code} {desc}{hint}", False)


class WebhookDestination:
    name = "webhook"

    def __init__(self, url: str) -> None:
        self._url = url  # a secret: never logged or shown

    def __repr__(self) -> str:
        return "WebhookDestination(url=…)"

    async def deliver(self, client: httpx.AsyncClient, alert: Alert) -> str | None:
        headers = {"Idempotency-Key": alert.key, "User-Agent": USER_AGENT}
        try:
            resp = await client.post(self._url, json=webhook_body(alert), headers=headers)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        status = resp.status_code
        if 200 <= status < 300 or status == 409:  # 409: the receiver has this key already
            return None
        text = f"{status} {resp.reason_phrase or ''}".rstrip()
        if status == 429:
            raise DeliveryError(text, True, _retry_after_header(resp.headers.get("retry-after")))
        if status in (408, 425) or status >= 500:
            raise DeliveryError(text, True, _retry_after_header(resp.headers.get("retry-after")))
        raise DeliveryError(text, False)


class MisconfiguredDestination:
    """A destination half set up (a token without a chat id): every alert fails, clearly."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem

    async def deliver(self, client: httpx.AsyncClient, alert: Alert) -> str | None:
        raise DeliveryError(self.problem, False)


# ---------------------------------------------------------------- the sender

NOT_CONFIGURED = (
    "no alert destination configured: set OCW_TELEGRAM_BOT_TOKEN and OCW_TELEGRAM_CHAT_ID, "
    "or OCW_ALERT_WEBHOOK_URL"
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the process knows: the settings' and the LLM's credentials."""
    out: list[str] = []
    for name in SECRET_FIELDS:
        value = getattr(settings, name, None)
        if value is not None:
            out.append(
                value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            )
    out += [os.environ.get(k, "") for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")]
    return [s for s in out if s]


def destinations_from_settings(settings: Settings) -> list[Destination]:
    out: list[Destination] = []
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    chat = (settings.telegram_chat_id or "").strip()
    if token and chat:
        out.append(TelegramDestination(settings.telegram_api_url, token, chat))
    elif token:
        out.append(
            MisconfiguredDestination(
                "telegram", "OCW_TELEGRAM_CHAT_ID is not set (the chat to write to)"
            )
        )
    elif chat:
        out.append(MisconfiguredDestination("telegram", "OCW_TELEGRAM_BOT_TOKEN is not set"))
    url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else ""
    if url.strip():
        out.append(WebhookDestination(url.strip()))
    return out


class AlertSender:
    """Sends alerts to every destination; see the module's docstring for the guarantees.

    ``clock`` (epoch ms) drives the rate window and the log; tests move it. Per delivery it
    tries ``attempts`` times within ``retry_budget_s`` (waiting what a 429 asks, if it fits);
    a destination that failed is not tried again in the same batch.
    """

    def __init__(
        self,
        destinations: Sequence[Destination],
        log: AlertLog,
        *,
        kinds: Iterable[str] = ("all",),
        max_per_hour: int = 30,
        secrets: Iterable[str] = (),
        clock: Callable[[], int] = _now_ms,
        timeout_s: float = 10.0,
        attempts: int = 3,
        retry_budget_s: float = 20.0,
        backoff_s: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.destinations = list(destinations)
        self.log = log
        self.kinds = expand_kinds(kinds)
        self.max_per_hour = max_per_hour
        self.secrets = [s for s in secrets if s]
        _LOG_SECRETS.update(s for s in self.secrets if len(s) >= 6)
        self.clock = clock
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.retry_budget_s = retry_budget_s
        self.backoff_s = backoff_s
        self._sleep = sleep
        # a claim outlives one delivery's tries: a crashed sender's is free after this
        self.lease_ms = int((retry_budget_s + 2 * timeout_s + 5) * 1000)

    @classmethod
    def from_settings(
        cls, settings: Settings, log: AlertLog | None = None, **kwargs
    ) -> AlertSender:
        """Destinations, kinds, limit and secrets from the settings; the sent-log
        (:class:`DbAlertLog`: the shared PostgreSQL database with OCW_DB_URL, else
        ``$OCW_HOME/alerts.db``) unless one is given. Raises ValueError on bad OCW_ALERT_KINDS."""
        expand_kinds(settings.alert_kinds)  # fail before opening anything
        return cls(
            destinations_from_settings(settings),
            log if log is not None else DbAlertLog.from_settings(settings),
            kinds=settings.alert_kinds,
            max_per_hour=settings.alert_max_per_hour,
            secrets=settings_secrets(settings),
            **kwargs,
        )

    @property
    def configured(self) -> bool:
        return bool(self.destinations)

    def close(self) -> None:
        self.log.close()

    async def send_now(self, alerts: Sequence[Alert]) -> SendReport:
        """Send and report; never raises for a destination's failure (the report says).
        For processes that are not workers (the listener, the CLI); activities use it too."""
        timeout = httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s))
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            blocked: dict[str, Delivery] = {}
            summaries = []
            for dest in self.destinations:
                summary = await self._flush_summary(client, dest, blocked)
                if summary is not None:
                    summaries.append(summary)
            outcomes = []
            for alert in alerts:
                outcomes.append(await self._one(client, alert, blocked))
        report = _report([d.name for d in self.destinations], outcomes, summaries)
        for line in report.errors:
            log.warning("alert not delivered: %s", line)
        return report

    # ------------------------------------------------------------ internals

    async def _one(
        self, client: httpx.AsyncClient, alert: Alert, blocked: dict[str, Delivery]
    ) -> AlertOutcome:
        clean = scrub_alert(alert, self.secrets)
        if not self.destinations:
            d = Delivery(destination="none", outcome="failed", reason=NOT_CONFIGURED)
            self._count(clean, d)
            return AlertOutcome(key=clean.key, kind=clean.kind, outcome="failed", deliveries=[d])
        if not kind_allowed(clean, self.kinds):
            ds = [Delivery(destination=dest.name, outcome="filtered") for dest in self.destinations]
            for d in ds:
                self._count(clean, d)
            return AlertOutcome(key=clean.key, kind=clean.kind, outcome="filtered", deliveries=ds)
        deliveries = []
        for dest in self.destinations:
            d = await self._deliver(client, dest, clean, blocked, rate_limited=True)
            self._count(clean, d)
            deliveries.append(d)
        return AlertOutcome(
            key=clean.key, kind=clean.kind, outcome=_overall(deliveries), deliveries=deliveries
        )

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        dest: Destination,
        alert: Alert,
        blocked: dict[str, Delivery],
        rate_limited: bool,
    ) -> Delivery:
        name = dest.name
        now = self.clock()
        state = self.log.seen(name, alert.key, now)
        if state == "sent":
            return Delivery(destination=name, outcome="duplicate", reason="sent before")
        if state == "suppressed":
            return Delivery(destination=name, outcome="suppressed", reason="suppressed before")
        if state == "sending":
            return Delivery(
                destination=name,
                outcome="failed",
                reason="being sent by another process; will check again",
                retryable=True,
                retry_after_s=self.lease_ms / 1000,
            )
        if name in blocked:
            b = blocked[name]
            return b.model_copy(update={"reason": f"{b.reason} (not tried again in this batch)"})
        bypass = alert.test or alert.kind == "suppressed" or not rate_limited
        recent = self.log.sent_count(name, now - WINDOW_MS)
        if not rate_admits(recent, self.max_per_hour, alert.severity, bypass):
            self.log.mark(name, alert, now, "suppressed")
            return Delivery(
                destination=name,
                outcome="suppressed",
                reason=f"rate limit: {recent} sent in the last hour (OCW_ALERT_MAX_PER_HOUR="
                f"{self.max_per_hour}); it goes out in a summary",
            )
        if not self.log.claim(name, alert, now, self.lease_ms):
            return Delivery(
                destination=name,
                outcome="failed",
                reason="being sent by another process; will check again",
                retryable=True,
                retry_after_s=self.lease_ms / 1000,
            )
        try:
            receipt = await self._tries(client, dest, alert)
        except DeliveryError as err:
            self.log.release(name, alert.key)
            failed = Delivery(
                destination=name,
                outcome="failed",
                reason=scrub(err.reason, self.secrets),
                retryable=err.retryable,
                retry_after_s=err.retry_after,
            )
            blocked[name] = failed
            return failed
        except BaseException:
            self.log.release(name, alert.key)  # cancelled: a later try sends it
            raise
        self.log.mark(name, alert, self.clock(), "sent")
        return Delivery(destination=name, outcome="sent", receipt=receipt)

    async def _tries(
        self, client: httpx.AsyncClient, dest: Destination, alert: Alert
    ) -> str | None:
        deadline = time.monotonic() + self.retry_budget_s
        for attempt in range(1, self.attempts + 1):
            try:
                return await dest.deliver(client, alert)
            except DeliveryError as err:
                if not err.retryable or attempt == self.attempts:
                    raise
                wait = err.retry_after
                if wait is None:
                    wait = self.backoff_s * 2 ** (attempt - 1)
                if time.monotonic() + wait > deadline:
                    raise
                log.info(
                    "alert %s to %s: %s; trying again in %.1f s",
                    alert.key,
                    dest.name,
                    scrub(err.reason, self.secrets),
                    wait,
                )
                await self._pause(wait)
        raise AssertionError("unreachable")

    async def _pause(self, seconds: float) -> None:
        """Sleep, heartbeating when in an activity (a 429 may ask for a while)."""
        left = seconds
        while left > 0:
            step = min(left, 5.0)
            await self._sleep(step)
            left -= step
            if activity.in_activity():
                with contextlib.suppress(Exception):
                    activity.heartbeat(f"alerts: waiting {math.ceil(left)} s")

    async def _flush_summary(
        self, client: httpx.AsyncClient, dest: Destination, blocked: dict[str, Delivery]
    ) -> Delivery | None:
        pending = self.log.pending(dest.name)
        if not pending:
            return None
        now = self.clock()
        if not rate_admits(
            self.log.sent_count(dest.name, now - WINDOW_MS), self.max_per_hour, "info"
        ):
            return None
        accounts = {e.account for e in pending if e.account}
        account = accounts.pop() if len(accounts) == 1 else ", ".join(sorted(accounts))[:100]
        summary = scrub_alert(
            summary_alert(dest.name, pending, account=account or "?", now_ms=now), self.secrets
        )
        d = await self._deliver(client, dest, summary, blocked, rate_limited=False)
        if d.outcome in ("sent", "duplicate"):
            self.log.settle(dest.name, [e.key for e in pending], summary.key)
        self._count(summary, d)
        return d

    def _count(self, alert: Alert, d: Delivery) -> None:
        if not activity.in_activity():
            return
        with contextlib.suppress(Exception):
            add(
                activity.metric_meter(),
                ALERTS,
                kind=alert.kind,
                destination=d.destination,
                outcome=d.outcome,
            )
