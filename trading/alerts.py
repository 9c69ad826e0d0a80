"""Alerts: what the engine tells its user (Telegram, a webhook), as plain data. No I/O here.

An :class:`Alert` is built from a journal row (a fill, a closed trade, a reconciliation action)
or from a state transition the monitor saw (a halt, the LLM breaker, a stale feed, the
listener or the worker gone and back). ``activities/alerts.py`` sends it; this module decides
what it says and whether it may go:

* **keys**: every alert carries a stable dedup ``key`` made from what it is about, never from
  when it was built (``fill:<account>:<client order id>``, ``halt:<account>:<since_ms>``,
  ``listener_back:<account>:<gone since ms>``...), so an alert rebuilt after a restart or sent
  again by a retried activity has the same key and the sent-log drops it;
* **texts**: :func:`render_text` (plain) and :func:`render_html` (Telegram ``parse_mode=HTML``)
  give a short message, at most :data:`TELEGRAM_MAX_CHARS` (counted as Telegram counts: UTF-16
  code units of the text after entity parsing); :func:`webhook_body` is the JSON of a webhook
  POST (the alert's fields plus ``text``, which Slack-style receivers show as is);
* **kinds**: :func:`kind_allowed` applies ``OCW_ALERT_KINDS`` (``all``, kinds, or groups);
* **rate limit**: a sliding window of one hour per destination, ``OCW_ALERT_MAX_PER_HOUR``
  sends. An alert over the limit is not sent and not lost: it is logged as *suppressed* and
  folded, with every other suppressed one, into one summary alert ("N more alerts
  suppressed", kind ``suppressed``) sent as soon as the window has room again. Critical alerts
  (halt, listener or worker gone, a failed reconciliation action) bypass the limit up to a
  second allowance of the same size (at most twice the limit an hour in all), so a flood of
  ordinary alerts never hides a halt, and a bug that floods critical ones is still capped.
  Test alerts (``ocw alerts test``) bypass the limit and the kinds filter;
* **secrets**: :func:`scrub` removes anything that looks like a bot token, an API key, URL
  credentials, a Bearer token or a ``key=value`` secret, and any known secret value, from every
  text that goes out (:func:`scrub_alert` applies it to a whole alert, key included: defence in
  depth, since no builder should put a secret in an alert in the first place).
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import Field

from trading.models import Model

AlertKind = Literal[
    "fill",
    "exit",
    "halt",
    "resume",
    "breaker_open",
    "breaker_closed",
    "stale_feed",
    "feed_ok",
    "reconcile_mismatch",
    "worker_gone",
    "worker_back",
    "listener_gone",
    "listener_back",
    "test",
    "suppressed",  # the summary of alerts the rate limit held back
]
Severity = Literal["info", "warning", "critical"]
Scalar = str | int | float | bool | None

KINDS: tuple[str, ...] = get_args(AlertKind)
# what OCW_ALERT_KINDS may name besides single kinds
KIND_GROUPS: dict[str, tuple[str, ...]] = {
    "all": KINDS,
    "trades": ("fill", "exit"),
    "risk": ("halt", "resume", "breaker_open", "breaker_closed", "reconcile_mismatch"),
    "health": (
        "stale_feed",
        "feed_ok",
        "worker_gone",
        "worker_back",
        "listener_gone",
        "listener_back",
    ),
    "halt": ("halt", "resume"),  # a halt and its lifting go together
    "breaker": ("breaker_open", "breaker_closed"),
    "feed": ("stale_feed", "feed_ok"),
    "worker": ("worker_gone", "worker_back"),
    "listener": ("listener_gone", "listener_back"),
}
ALWAYS_ALLOWED = frozenset({"test", "suppressed"})

TELEGRAM_MAX_CHARS = 4096
WINDOW_MS = 3_600_000  # the rate limit's sliding window
CRITICAL_ALLOWANCE = 2  # critical alerts may use up to this many times the hourly limit
FIELD_MAX_CHARS = 400  # one field's value in a text
KEY_MAX_CHARS = 200
_ICON: dict[str, str] = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}


class Alert(Model):
    """One notification. ``fields`` are the lines of its text (label -> shown value, in order);
    ``data`` the same facts as numbers and ids for machines (the webhook's JSON)."""

    kind: AlertKind
    key: str = Field(min_length=1, max_length=KEY_MAX_CHARS)  # stable dedup key
    account: str
    severity: Severity = "info"
    title: str
    symbol: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    data: dict[str, Scalar] = Field(default_factory=dict)
    created_at_ms: int
    test: bool = False  # sent by `ocw alerts test`: not a real event


class SuppressedEntry(Model):
    """An alert the rate limit held back, waiting for the next summary."""

    kind: str
    key: str
    severity: Severity = "info"
    title: str = ""
    at_ms: int
    account: str = ""


# ---------------------------------------------------------------- keys and formatting

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]+")


def make_key(*parts: object) -> str:
    """A dedup key from its parts: ``a:b:c``, header-safe (it is the webhook's
    ``Idempotency-Key``), at most :data:`KEY_MAX_CHARS`; a longer one ends in a hash of all."""
    raw = ":".join(str(p) for p in parts)
    key = _KEY_UNSAFE.sub("_", raw)
    if len(key) > KEY_MAX_CHARS:
        digest = hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()
        key = f"{key[: KEY_MAX_CHARS - 17]}~{digest}"
    return key


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def fmt_num(value: float | int | None, digits: int = 8) -> str:
    """A number for a human: thousands separated, no float noise (``65,012.5``, ``0.00123``)."""
    if value is None:
        return "?"
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and abs(v) < 1e-4:
        return f"{v:.{digits}g}"
    text = f"{v:,.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_money(value: float, quote: str, signed: bool = False) -> str:
    text = f"{value:+,.2f}" if signed else f"{value:,.2f}"
    return f"{text} {quote}".strip()


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d {h}h" if h else f"{d}d"


def _quote(symbol: str) -> str:
    return symbol.partition("/")[2] or ""


def _base(symbol: str) -> str:
    return symbol.partition("/")[0]


def _row(row: Mapping[str, Any] | Model) -> dict[str, Any]:
    return row.model_dump(mode="json") if isinstance(row, Model) else dict(row)


# ---------------------------------------------------------------- builders: journal rows


def fill_alert(row: Mapping[str, Any] | Model, *, now_ms: int, account: str | None = None) -> Alert:
    """A journal ``fills`` row (or a :class:`~trading.models.Fill` with ``account``)."""
    r = _row(row)
    acct = str(account or r.get("account") or "")
    symbol = str(r["symbol"])
    side = str(r["side"])
    status = str(r["status"])
    qty = float(r.get("qty") or 0.0)
    price = float(r.get("price") or 0.0)
    fee = float(r.get("fee") or 0.0)
    quote = _quote(symbol)
    what = {"FILLED": "filled", "PARTIALLY_FILLED": "partially filled"}.get(status, "rejected")
    fields: dict[str, str] = {"account": acct}
    if what != "rejected":
        fields["qty"] = f"{fmt_num(qty)} {_base(symbol)}"
        fields["price"] = f"{fmt_num(price)} {quote}".strip()
        fields["notional"] = fmt_money(qty * price, quote)
        fields["fee"] = f"{fmt_num(fee, 6)} {quote}".strip()
    if r.get("reason"):
        fields["reason"] = str(r["reason"])
    fields["order"] = str(r["client_order_id"])
    fields["time"] = fmt_time(r.get("market_time_ms"))
    return Alert(
        kind="fill",
        key=make_key("fill", acct, r["client_order_id"]),
        account=acct,
        severity="warning" if what == "rejected" else "info",
        title=f"{side} {symbol} {what}",
        symbol=symbol,
        fields=fields,
        data={
            "client_order_id": str(r["client_order_id"]),
            "position_id": str(r.get("position_id") or ""),
            "side": side,
            "status": status,
            "qty": qty,
            "price": price,
            "fee": fee,
            "market_time_ms": r.get("market_time_ms"),
        },
        created_at_ms=now_ms,
    )


def exit_alert(row: Mapping[str, Any] | Model, *, now_ms: int, account: str | None = None) -> Alert:
    """A journal ``trades`` row (or a :class:`~trading.models.ClosedTrade` with ``account``)."""
    r = _row(row)
    acct = str(account or r.get("account") or "")
    symbol = str(r["symbol"])
    quote = _quote(symbol)
    pnl = float(r["pnl"])
    pnl_pct = float(r["pnl_pct"])
    held_s = (int(r["exit_time_ms"]) - int(r["entry_time_ms"])) / 1000
    fields = {
        "account": acct,
        "reason": str(r.get("exit_reason") or "?"),
        "qty": f"{fmt_num(float(r['qty']))} {_base(symbol)}",
        "entry": f"{fmt_num(float(r['entry_price']))} {quote}".strip(),
        "exit": f"{fmt_num(float(r['exit_price']))} {quote}".strip(),
        "fees": fmt_money(float(r.get("fees") or 0.0), quote),
        "held": fmt_duration(held_s),
        "position": str(r["trade_id"]),
        "time": fmt_time(int(r["exit_time_ms"])),
    }
    return Alert(
        kind="exit",
        key=make_key("exit", acct, r["trade_id"]),
        account=acct,
        severity="info",
        title=f"Exit {symbol}: {fmt_money(pnl, quote, signed=True)} ({pnl_pct:+.2%})",
        symbol=symbol,
        fields=fields,
        data={
            "trade_id": str(r["trade_id"]),
            "qty": float(r["qty"]),
            "entry_price": float(r["entry_price"]),
            "exit_price": float(r["exit_price"]),
            "pnl": pnl,
            "pnl_pct": pnl_pct,
            "fees": float(r.get("fees") or 0.0),
            "exit_reason": str(r.get("exit_reason") or ""),
            "entry_time_ms": int(r["entry_time_ms"]),
            "exit_time_ms": int(r["exit_time_ms"]),
        },
        created_at_ms=now_ms,
    )


def reconcile_alert(row: Mapping[str, Any], *, now_ms: int) -> Alert:
    """A journal ``reconciliations`` row: one action of a reconciliation and its outcome."""
    r = dict(row)
    acct = str(r.get("account") or "")
    error = str(r.get("error") or "")
    done = bool(r.get("done"))
    state = f"FAILED: {error}" if error else ("done" if done else "not done")
    symbol = str(r.get("symbol") or "") or None
    action_id = r.get("action_id") or f"{r.get('time_ms')}-{r.get('kind')}-{r.get('target')}"
    fields = {
        "account": acct,
        "action": str(r.get("kind") or "?"),
        "target": str(r.get("target") or ""),
        "detail": str(r.get("detail") or ""),
        "state": state,
        "time": fmt_time(r.get("time_ms")),
    }
    return Alert(
        kind="reconcile_mismatch",
        key=make_key("reconcile", acct, action_id),
        account=acct,
        severity="critical" if error else "warning",
        title=f"Reconciliation: {r.get('kind')} {symbol or r.get('target') or ''}".rstrip(),
        symbol=symbol,
        fields={k: v for k, v in fields.items() if v},
        data={
            "action_id": str(action_id),
            "action": str(r.get("kind") or ""),
            "target": str(r.get("target") or ""),
            "done": done,
            "error": error,
            "time_ms": r.get("time_ms"),
        },
        created_at_ms=now_ms,
    )


def mismatch_alert(account: str, mismatch: str, *, time_ms: int, now_ms: int) -> Alert:
    """A reconciliation mismatch (``ReconcileReport.mismatches``: text, no id). Keyed by its
    text, so the same finding round after round alerts once."""
    return Alert(
        kind="reconcile_mismatch",
        key=make_key("mismatch", account, _hash(mismatch)),
        account=account,
        severity="warning",
        title="Reconciliation mismatch",
        fields={"account": account, "found": mismatch, "time": fmt_time(time_ms)},
        data={"mismatch": mismatch, "time_ms": time_ms},
        created_at_ms=now_ms,
    )


# ---------------------------------------------------------------- builders: transitions


def halt_alert(
    account: str,
    since_ms: int,
    reason: str,
    *,
    now_ms: int,
    drawdown: float | None = None,
    equity: float | None = None,
) -> Alert:
    """The account stopped opening positions (``since_ms``: when the halt began, the episode)."""
    fields = {"account": account, "reason": reason or "?"}
    if drawdown is not None:
        fields["drawdown"] = f"{drawdown:.2%}"
    if equity is not None:
        fields["equity"] = fmt_num(equity, 2)
    fields["since"] = fmt_time(since_ms)
    return Alert(
        kind="halt",
        key=make_key("halt", account, since_ms),
        account=account,
        severity="critical",
        title="Trading halted: no new entries (exits continue)",
        fields=fields,
        data={"since_ms": since_ms, "reason": reason, "drawdown": drawdown, "equity": equity},
        created_at_ms=now_ms,
    )


def resume_alert(
    account: str, halted_since_ms: int, *, now_ms: int, at_ms: int | None = None, reason: str = ""
) -> Alert:
    """The halt that began at ``halted_since_ms`` was lifted (keyed by that episode)."""
    at = now_ms if at_ms is None else at_ms
    fields = {"account": account, "halted": fmt_duration((at - halted_since_ms) / 1000)}
    if reason:
        fields["reason"] = reason
    fields["time"] = fmt_time(at)
    return Alert(
        kind="resume",
        key=make_key("resume", account, halted_since_ms),
        account=account,
        severity="info",
        title="Trading resumed",
        fields=fields,
        data={"halted_since_ms": halted_since_ms, "at_ms": at, "reason": reason},
        created_at_ms=now_ms,
    )


def breaker_alert(
    account: str,
    opened: bool,
    since_ms: int,
    *,
    now_ms: int,
    failures: int | None = None,
    reason: str = "",
) -> Alert:
    """The LLM circuit breaker opened (the rules decide) or closed again; ``since_ms``: when
    it opened (both alerts of one episode share it)."""
    kind = "breaker_open" if opened else "breaker_closed"
    fields = {"account": account}
    if failures is not None:
        fields["failures"] = str(failures)
    if reason:
        fields["reason"] = reason
    fields["since"] = fmt_time(since_ms)
    return Alert(
        kind=kind,
        key=make_key(kind, account, since_ms),
        account=account,
        severity="warning" if opened else "info",
        title="LLM breaker open: the rule policy decides"
        if opened
        else "LLM breaker closed: the LLM decides again",
        fields=fields,
        data={"since_ms": since_ms, "failures": failures, "reason": reason},
        created_at_ms=now_ms,
    )


def feed_alert(
    account: str,
    series: str,
    stale: bool,
    since_ms: int,
    *,
    now_ms: int,
    age_s: float | None = None,
) -> Alert:
    """A market data series (``BTC/USDT 1h``) went stale or is fresh again; ``since_ms``:
    when it went stale."""
    kind = "stale_feed" if stale else "feed_ok"
    symbol = series.split()[0] if series else None
    fields = {"account": account, "series": series}
    if age_s is not None:
        fields["age" if stale else "was stale for"] = fmt_duration(age_s)
    fields["since"] = fmt_time(since_ms)
    return Alert(
        kind=kind,
        key=make_key(kind, account, series, since_ms),
        account=account,
        severity="warning" if stale else "info",
        title=f"Stale market data: {series}" if stale else f"Market data back: {series}",
        symbol=symbol,
        fields=fields,
        data={"series": series, "since_ms": since_ms, "age_s": age_s},
        created_at_ms=now_ms,
    )


def _presence_alert(
    who: Literal["listener", "worker"],
    account: str,
    gone: bool,
    since_ms: int,
    now_ms: int,
    detail: str | None,
    host: str | None,
) -> Alert:
    kind = f"{who}_{'gone' if gone else 'back'}"
    fields = {"account": account}
    if host:
        fields["host"] = host
    if detail:
        fields["detail"] = detail
    if gone:
        fields["since"] = fmt_time(since_ms)
    else:
        fields["was gone"] = fmt_duration((now_ms - since_ms) / 1000)
    what = "market listener" if who == "listener" else "trading worker"
    return Alert(
        kind=kind,  # type: ignore[arg-type]
        key=make_key(kind, account, since_ms),
        account=account,
        severity="critical" if gone else "info",
        title=f"The {what} is gone" if gone else f"The {what} is back",
        fields=fields,
        data={"since_ms": since_ms, "detail": detail, "host": host},
        created_at_ms=now_ms,
    )


def listener_alert(
    account: str,
    gone: bool,
    since_ms: int,
    *,
    now_ms: int,
    error: str | None = None,
    host: str | None = None,
) -> Alert:
    """``since_ms``: when the listener was first missed (its back alert carries the same)."""
    return _presence_alert("listener", account, gone, since_ms, now_ms, error, host)


def worker_alert(
    account: str,
    gone: bool,
    since_ms: int,
    *,
    now_ms: int,
    detail: str | None = None,
    host: str | None = None,
) -> Alert:
    """``since_ms``: when the worker was first missed (its back alert carries the same)."""
    return _presence_alert("worker", account, gone, since_ms, now_ms, detail, host)


def sample_alert(account: str, *, now_ms: int, kind: str = "test") -> Alert:
    """What ``ocw alerts test`` sends: a sample of ``kind``, marked ``test`` and ``[TEST]``,
    keyed by its time (every run sends again)."""
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}; use one of {', '.join(KINDS)}")
    t = now_ms
    samples: dict[str, Alert] = {
        "fill": fill_alert(
            {
                "client_order_id": f"{account}-test-1",
                "position_id": f"{account}-test",
                "symbol": "BTC/USDT",
                "side": "BUY",
                "status": "FILLED",
                "qty": 0.0123,
                "price": 65_000.0,
                "fee": 0.7995,
                "market_time_ms": t,
                "reason": "test alert",
            },
            now_ms=t,
            account=account,
        ),
        "exit": exit_alert(
            {
                "trade_id": f"{account}-test",
                "symbol": "BTC/USDT",
                "qty": 0.0123,
                "entry_price": 65_000.0,
                "exit_price": 66_300.0,
                "entry_time_ms": t - 5 * 3_600_000,
                "exit_time_ms": t,
                "fees": 1.61,
                "pnl": 14.38,
                "pnl_pct": 0.018,
                "exit_reason": "trailing_stop",
            },
            now_ms=t,
            account=account,
        ),
        "halt": halt_alert(account, t, "drawdown 12.0% >= 12.0%", now_ms=t, drawdown=0.12),
        "resume": resume_alert(account, t - 3_600_000, now_ms=t, reason="test alert"),
        "breaker_open": breaker_alert(account, True, t, now_ms=t, failures=3, reason="timeouts"),
        "breaker_closed": breaker_alert(account, False, t - 900_000, now_ms=t),
        "stale_feed": feed_alert(account, "BTC/USDT 1h", True, t, now_ms=t, age_s=420),
        "feed_ok": feed_alert(account, "BTC/USDT 1h", False, t - 600_000, now_ms=t, age_s=600),
        "reconcile_mismatch": reconcile_alert(
            {
                "action_id": f"{t}-close-test",
                "account": account,
                "time_ms": t,
                "kind": "close",
                "symbol": "BTC/USDT",
                "target": f"{account}-test",
                "detail": "the exchange holds nothing of it",
                "done": 1,
                "error": "",
            },
            now_ms=t,
        ),
        "worker_gone": worker_alert(account, True, t, now_ms=t, detail="test alert"),
        "worker_back": worker_alert(account, False, t - 120_000, now_ms=t),
        "listener_gone": listener_alert(account, True, t, now_ms=t, error="test alert"),
        "listener_back": listener_alert(account, False, t - 120_000, now_ms=t),
        "suppressed": summary_alert(
            "test",
            [SuppressedEntry(kind="fill", key="x", title="BUY BTC/USDT filled", at_ms=t)],
            account=account,
            now_ms=t,
        ),
    }
    base = samples.get(kind) or Alert(
        kind="test",
        key="test",
        account=account,
        title="Test alert: this destination works",
        fields={"account": account, "time": fmt_time(t)},
        created_at_ms=t,
    )
    return base.model_copy(
        update={"key": make_key("test", kind, account, t), "test": True, "created_at_ms": t}
    )


# ---------------------------------------------------------------- kinds filter


def expand_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """``OCW_ALERT_KINDS`` as a set of kinds; unknown names raise ValueError (a typo would
    silence alerts)."""
    out: set[str] = set()
    for name in kinds:
        n = name.strip().lower()
        if not n:
            continue
        if n in KIND_GROUPS:
            out.update(KIND_GROUPS[n])
        elif n in KINDS:
            out.add(n)
        else:
            names = ", ".join([*KIND_GROUPS, *KINDS])
            raise ValueError(f"unknown alert kind {name!r} in OCW_ALERT_KINDS; use {names}")
    return frozenset(out | ALWAYS_ALLOWED)


def kind_allowed(alert: Alert, kinds: Iterable[str] | frozenset[str]) -> bool:
    """Test alerts and summaries always pass (they answer for alerts that did)."""
    if alert.test or alert.kind in ALWAYS_ALLOWED:
        return True
    allowed = kinds if isinstance(kinds, frozenset) else expand_kinds(kinds)
    return alert.kind in allowed


def filter_kinds(alerts: Iterable[Alert], kinds: Iterable[str]) -> list[Alert]:
    allowed = expand_kinds(kinds)
    return [a for a in alerts if kind_allowed(a, allowed)]


# ---------------------------------------------------------------- rate limit


def rate_admits(recent_sends: int, limit: int, severity: Severity, bypass: bool = False) -> bool:
    """May one more alert go to a destination that sent ``recent_sends`` in the last hour?"""
    if bypass:
        return True
    if recent_sends < limit:
        return True
    return severity == "critical" and recent_sends < CRITICAL_ALLOWANCE * limit


def window_reopens_ms(sent_at_ms: Sequence[int], limit: int, now_ms: int) -> int:
    """When the window next has room for an ordinary alert (``now_ms`` if it has now)."""
    recent = sorted(t for t in sent_at_ms if t > now_ms - WINDOW_MS)
    if len(recent) < limit:
        return now_ms
    return recent[len(recent) - limit] + WINDOW_MS


class SlidingWindow:
    """The rate limit in memory: send times of one destination over the last hour. The
    sender keeps the same times in its sent-log (so they survive a restart); this class is
    the policy on its own, for tests and for callers without a log."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[int] = []
        self.suppressed: list[SuppressedEntry] = []

    def recent(self, now_ms: int) -> int:
        self.sent = [t for t in self.sent if t > now_ms - WINDOW_MS]
        return len(self.sent)

    def offer(self, alert: Alert, now_ms: int) -> bool:
        """True: send it (and its time is counted); False: it was folded into the summary."""
        bypass = alert.test or alert.kind == "suppressed"
        if rate_admits(self.recent(now_ms), self.limit, alert.severity, bypass):
            self.sent.append(now_ms)
            return True
        self.suppressed.append(
            SuppressedEntry(
                kind=alert.kind,
                key=alert.key,
                severity=alert.severity,
                title=alert.title,
                at_ms=now_ms,
                account=alert.account,
            )
        )
        return False

    def due_summary(self, now_ms: int, account: str, destination: str = "") -> Alert | None:
        """The summary of what was held back, when the window has room for it (it is then
        counted and the held list cleared)."""
        if not self.suppressed or not rate_admits(self.recent(now_ms), self.limit, "info"):
            return None
        alert = summary_alert(destination, self.suppressed, account=account, now_ms=now_ms)
        self.sent.append(now_ms)
        self.suppressed = []
        return alert


def summary_alert(
    destination: str, entries: Sequence[SuppressedEntry], *, account: str, now_ms: int
) -> Alert:
    """ "N more alerts suppressed": what the rate limit held back, by kind, first and last.
    Keyed by the held alerts' keys, so a retried summary is the same alert."""
    if not entries:
        raise ValueError("a summary needs suppressed alerts")
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    first = min(e.at_ms for e in entries)
    last = max(e.at_ms for e in entries)
    n = len(entries)
    fields = {
        "account": account,
        "kinds": ", ".join(f"{k} ×{c}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1])),
        "between": f"{fmt_time(first)} and {fmt_time(last)}",
    }
    latest = [e.title for e in sorted(entries, key=lambda e: e.at_ms)[-3:] if e.title]
    if latest:
        fields["latest"] = "; ".join(latest)
    fields["see"] = "ocw trades / ocw status for the details"
    digest = _hash("\n".join(sorted(e.key for e in entries)))
    return Alert(
        kind="suppressed",
        key=make_key("suppressed", destination or "-", first, n, digest),
        account=account,
        severity="critical" if any(e.severity == "critical" for e in entries) else "warning",
        title=f"{n} more alert{'s' if n != 1 else ''} suppressed (rate limit)",
        fields=fields,
        data={
            "count": n,
            "first_ms": first,
            "last_ms": last,
            **{f"n_{k}": c for k, c in counts.items()},
        },
        created_at_ms=now_ms,
    )


# ---------------------------------------------------------------- secrets

_REDACTED = "[redacted]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a Telegram bot token, alone or in a Bot API path (/bot123456:AA.../sendMessage)
    (re.compile(r"(?<![A-Za-z0-9])(bot)?\d{5,12}:[A-Za-z0-9_-]{30,}"), _REDACTED),
    # URL credentials: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@"), r"\1" + _REDACTED + "@"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]+@"), r"\1" + _REDACTED + "@"),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + _REDACTED),
    (
        re.compile(r"(?i)\b(token)\s+(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{16,}"),
        r"\1 " + _REDACTED,
    ),
    # provider keys with a known shape
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{16,}"), _REDACTED),
    (re.compile(r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{20,}"), _REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), _REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), _REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), _REDACTED),
    # key=value and "key": "value" secrets (query strings, configs, error texts)
    (
        re.compile(
            r"(?i)\b([a-z0-9_-]*(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|signature"
            r"|auth(?:orization)?|credentials?|x-api-key)[a-z0-9_-]*)"
            r"(\"?\s*[:=]\s*\"?)(?!\[redacted\])[^\s\"'&,;}]{4,}"
        ),
        r"\1\2" + _REDACTED,
    ),
    # a long run of letters and digits with both in it (Binance keys are 64 of them)
    (
        re.compile(
            r"(?<![A-Za-z0-9])(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{32,}(?![A-Za-z0-9])"
        ),
        _REDACTED,
    ),
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any known secret value and without anything shaped like one."""
    out = text
    for s in sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True):
        out = out.replace(s, _REDACTED)
    for pattern, repl in _SECRET_PATTERNS:
        out = pattern.sub(repl, out)
    return out


def _scrub_value(value: Any, secrets: Sequence[str]) -> Any:
    return scrub(value, secrets) if isinstance(value, str) else value


def scrub_alert(alert: Alert, secrets: Iterable[str] = ()) -> Alert:
    """A copy of ``alert`` with every text scrubbed (title, fields, data, symbol, key)."""
    s = list(secrets)
    key = scrub(alert.key, s)
    if key != alert.key:  # keep it a valid, stable key
        key = make_key(key)
    return alert.model_copy(
        update={
            "key": key,
            "account": scrub(alert.account, s),
            "title": scrub(alert.title, s),
            "symbol": None if alert.symbol is None else scrub(alert.symbol, s),
            "fields": {scrub(k, s): scrub(v, s) for k, v in alert.fields.items()},
            "data": {scrub(k, s): _scrub_value(v, s) for k, v in alert.data.items()},
        }
    )


# ---------------------------------------------------------------- texts


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` UTF-16 units, ending in an ellipsis when cut."""
    if utf16_len(text) <= limit:
        return text
    out = []
    used = 0
    for ch in text:
        w = 2 if ord(ch) > 0xFFFF else 1
        if used + w > limit - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _lines(alert: Alert, limit: int) -> list[tuple[str, str]]:
    """(label, value) lines of the text; the first is the title (label ''), clipped so the
    whole plain text fits ``limit``."""
    icon = "🧪 [TEST] " if alert.test else f"{_ICON[alert.severity]} "
    title = _clip(icon + " ".join(alert.title.split()), 300)
    lines: list[tuple[str, str]] = [("", title)]
    for label, value in alert.fields.items():
        flat = " ".join(str(value).split())
        lines.append((_clip(" ".join(label.split()), 40), _clip(flat, FIELD_MAX_CHARS)))
    out: list[tuple[str, str]] = []
    used = 0
    for i, (label, value) in enumerate(lines):
        width = utf16_len(f"{label}: {value}" if label else value) + (1 if i else 0)
        if used + width > limit - 2:  # room for a last "…" line
            out.append(("", "…"))
            break
        out.append((label, value))
        used += width
    return out


def render_text(alert: Alert, limit: int = TELEGRAM_MAX_CHARS) -> str:
    """The plain text: the title, then one ``label: value`` line per field."""
    return "\n".join(f"{k}: {v}" if k else v for k, v in _lines(alert, limit))


def render_html(alert: Alert, limit: int = TELEGRAM_MAX_CHARS) -> str:
    """For Telegram ``parse_mode=HTML``: the same text, title in bold, labels in italics,
    everything escaped; its visible text is :func:`render_text`'s, so it fits ``limit``."""
    out = []
    for i, (k, v) in enumerate(_lines(alert, limit)):
        if i == 0:
            out.append(f"<b>{html.escape(v, quote=False)}</b>")
        elif k:
            out.append(f"<i>{html.escape(k, quote=False)}</i>: {html.escape(v, quote=False)}")
        else:
            out.append(html.escape(v, quote=False))
    return "\n".join(out)


def webhook_body(alert: Alert) -> dict[str, Any]:
    """The JSON a webhook receives: the alert's fields, ``text`` (the plain message) and
    ``created_at`` (ISO 8601)."""
    body = alert.model_dump(mode="json")
    body["text"] = render_text(alert)
    body["created_at"] = (
        datetime.fromtimestamp(alert.created_at_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    return body
