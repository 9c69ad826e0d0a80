"""Alerts as data (trading/alerts.py): texts, keys, the kinds filter, the rate limit and its
summary, the secret scrubber; the sender's bookkeeping with an in-memory log and a fake
destination (no network: the HTTP path is tests/integration/test_alerts_telegram.py); and the
sent-log on both database back ends (SQLite file, PostgreSQL: ``tests/pg_server.py``), shared by
several senders and raced by concurrent claims."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from activities.alerts import RETENTION_MS, AlertSender, DbAlertLog, DeliveryError, MemoryAlertLog
from tests.pg_server import db_target
from tests.servers.telegram import parse_html
from trading import alerts as A
from trading.config import Settings
from trading.models import ClosedTrade, Fill, OrderStatus, Side

T0 = 1_700_000_000_000
HOUR = 3_600_000
BOT_TOKEN = "987654321:AAEsecretSECRETsecretSECRETsecret123"
FILL_ROW = {
    "client_order_id": "paper-1700000000000-BTCUSDT-1",
    "account": "paper",
    "position_id": "paper-1700000000000-BTCUSDT",
    "symbol": "BTC/USDT",
    "side": "BUY",
    "status": "FILLED",
    "qty": 0.0153,
    "price": 65_012.5,
    "fee": 0.9947,
    "market_time_ms": T0,
    "reason": "entry: score 0.62",
    "recorded_at": "2023-11-14T22:13:20.000Z",
}
TRADE_ROW = {
    "trade_id": "paper-1700000000000-BTCUSDT",
    "account": "paper",
    "symbol": "BTC/USDT",
    "qty": 0.0153,
    "entry_price": 65_012.5,
    "exit_price": 62_411.0,
    "entry_time_ms": T0,
    "exit_time_ms": T0 + 26 * HOUR + 15 * 60_000,
    "fees": 1.95,
    "pnl": -41.75,
    "pnl_pct": -0.042,
    "exit_reason": "stop_loss",
    "signal_weights": "{}",
    "recorded_at": "2023-11-15T22:13:20.000Z",
}
RECON_ROW = {
    "action_id": f"{T0}-close-paper-1700000000000-ETHUSDT",
    "account": "paper",
    "time_ms": T0,
    "kind": "close",
    "symbol": "ETH/USDT",
    "target": "paper-1700000000000-ETHUSDT",
    "detail": "the exchange holds no ETH; the books had 0.5",
    "done": 1,
    "error": "",
    "recorded_at": "2023-11-14T22:13:20.000Z",
}


# ---------------------------------------------------------------- builders and texts


def test_fill_alert_says_what_where_how_much() -> None:
    alert = A.fill_alert(FILL_ROW, now_ms=T0 + 5)
    assert alert.kind == "fill" and alert.severity == "info"
    assert alert.key == "fill:paper:paper-1700000000000-BTCUSDT-1"
    text = A.render_text(alert)
    assert text.splitlines()[0] == "ℹ️ BUY BTC/USDT filled"
    for part in (
        "account: paper",
        "qty: 0.0153 BTC",
        "price: 65,012.5 USDT",
        "notional: 994.69 USDT",
        "reason: entry: score 0.62",
        "order: paper-1700000000000-BTCUSDT-1",
        "time: 2023-11-14 22:13:20 UTC",
    ):
        assert part in text, part
    assert alert.data["qty"] == 0.0153 and alert.data["price"] == 65_012.5


def test_a_rejected_order_is_a_warning_without_numbers() -> None:
    row = {**FILL_ROW, "status": "REJECTED", "qty": 0.0, "price": 0.0, "reason": "min notional"}
    alert = A.fill_alert(row, now_ms=T0)
    assert alert.severity == "warning"
    assert alert.title == "BUY BTC/USDT rejected"
    text = A.render_text(alert)
    assert "reason: min notional" in text and "qty:" not in text


def test_a_fill_model_and_its_journal_row_give_the_same_alert() -> None:
    fill = Fill(
        client_order_id=FILL_ROW["client_order_id"],
        position_id=FILL_ROW["position_id"],
        symbol="BTC/USDT",
        side=Side.BUY,
        status=OrderStatus.FILLED,
        qty=0.0153,
        price=65_012.5,
        fee=0.9947,
        market_time_ms=T0,
        reason="entry: score 0.62",
    )
    assert A.fill_alert(fill, now_ms=T0, account="paper") == A.fill_alert(FILL_ROW, now_ms=T0)


def test_exit_alert_shows_the_pnl_and_why() -> None:
    alert = A.exit_alert(TRADE_ROW, now_ms=T0)
    assert alert.key == "exit:paper:paper-1700000000000-BTCUSDT"
    assert alert.title == "Exit BTC/USDT: -41.75 USDT (-4.20%)"
    text = A.render_text(alert)
    for part in (
        "reason: stop_loss",
        "qty: 0.0153 BTC",
        "entry: 65,012.5 USDT",
        "exit: 62,411 USDT",
        "fees: 1.95 USDT",
        "held: 26h 15m",
    ):
        assert part in text, part
    trade = ClosedTrade.model_validate(
        {k: v for k, v in TRADE_ROW.items() if k in ClosedTrade.model_fields}
        | {"signal_weights": {}}
    )
    assert A.exit_alert(trade, now_ms=T0, account="paper").key == alert.key
    win = A.exit_alert({**TRADE_ROW, "pnl": 12.5, "pnl_pct": 0.0125}, now_ms=T0)
    assert "+12.50 USDT (+1.25%)" in win.title


def test_reconcile_alert_and_a_failed_action_is_critical() -> None:
    alert = A.reconcile_alert(RECON_ROW, now_ms=T0)
    assert alert.kind == "reconcile_mismatch" and alert.severity == "warning"
    assert alert.key == f"reconcile:paper:{RECON_ROW['action_id']}"
    text = A.render_text(alert)
    assert "action: close" in text and "state: done" in text and "holds no ETH" in text
    failed = A.reconcile_alert({**RECON_ROW, "done": 0, "error": "-2011 unknown order"}, now_ms=T0)
    assert failed.severity == "critical"
    assert "state: FAILED: -2011 unknown order" in A.render_text(failed)
    m1 = A.mismatch_alert("paper", "exchange cash 90 < books 100", time_ms=T0, now_ms=T0)
    m2 = A.mismatch_alert("paper", "exchange cash 90 < books 100", time_ms=T0 + 1, now_ms=T0 + 9)
    assert m1.key == m2.key  # the same finding round after round alerts once


def test_transition_keys_name_their_episode_not_the_build_time() -> None:
    halt = A.halt_alert("paper", T0, "drawdown 12.4% >= 12.0%", now_ms=T0 + 1, drawdown=0.124)
    assert halt.key == f"halt:paper:{T0}" and halt.severity == "critical"
    assert A.halt_alert("paper", T0, "drawdown", now_ms=T0 + 999).key == halt.key
    resume = A.resume_alert("paper", T0, now_ms=T0 + 2 * HOUR)
    assert resume.key == f"resume:paper:{T0}" and "halted: 2h" in A.render_text(resume)
    opened = A.breaker_alert("paper", True, T0, now_ms=T0, failures=3, reason="timeouts")
    closed = A.breaker_alert("paper", False, T0, now_ms=T0 + HOUR)
    assert (opened.kind, opened.severity, closed.kind) == (
        "breaker_open",
        "warning",
        "breaker_closed",
    )
    assert opened.key != closed.key and str(T0) in closed.key
    stale = A.feed_alert("paper", "BTC/USDT 1h", True, T0, now_ms=T0, age_s=420)
    ok = A.feed_alert("paper", "BTC/USDT 1h", False, T0, now_ms=T0 + 600_000)
    assert stale.key == f"stale_feed:paper:BTC/USDT_1h:{T0}" and ok.kind == "feed_ok"
    assert stale.symbol == "BTC/USDT" and "age: 7m" in A.render_text(stale)
    gone = A.listener_alert("paper", True, T0, now_ms=T0 + 30_000, error="no answer")
    back = A.listener_alert("paper", False, T0, now_ms=T0 + 150_000)
    assert (gone.key, back.key) == (f"listener_gone:paper:{T0}", f"listener_back:paper:{T0}")
    assert gone.severity == "critical" and "was gone: 2m 30s" in A.render_text(back)
    wgone = A.worker_alert("paper", True, T0, now_ms=T0, host="vm-1")
    assert wgone.key == f"worker_gone:paper:{T0}" and "host: vm-1" in A.render_text(wgone)


def test_keys_are_header_safe_and_bounded() -> None:
    assert (
        A.make_key("stale_feed", "my acct", "BTC/USDT 1h", 5) == "stale_feed:my_acct:BTC/USDT_1h:5"
    )
    long_a = A.make_key("fill", "x" * 300, "a")
    long_b = A.make_key("fill", "x" * 300, "b")
    assert len(long_a) <= A.KEY_MAX_CHARS and long_a != long_b
    assert A.make_key("fill", "x" * 300, "a") == long_a
    assert all(ch.isascii() and ch not in "\r\n" for ch in A.make_key("é\n", "ü"))


def test_every_sample_is_marked_as_a_test() -> None:
    for kind in A.KINDS:
        alert = A.sample_alert("paper", now_ms=T0, kind=kind)
        assert alert.test and alert.kind == kind
        assert alert.key == f"test:{kind}:paper:{T0}"
        assert A.render_text(alert).startswith("🧪 [TEST] ")
    with pytest.raises(ValueError, match="unknown alert kind"):
        A.sample_alert("paper", now_ms=T0, kind="fills")


def test_texts_fit_telegram_and_html_shows_the_same_text() -> None:
    huge = "🚀" * 3000 + "<b>&amp;</b>"  # 6,000+ UTF-16 units in one field
    alert = A.Alert(
        kind="fill",
        key="k",
        account="paper",
        title="T <x> & y " * 100,
        fields={f"f{i}": huge for i in range(30)},
        created_at_ms=T0,
    )
    text = A.render_text(alert)
    assert A.utf16_len(text) <= A.TELEGRAM_MAX_CHARS
    assert text.endswith("…")
    visible, entities = parse_html(A.render_html(alert))  # Telegram's own parse succeeds
    assert visible == text
    assert entities[0] == {"type": "bold", "offset": 0, "length": A.utf16_len(text.splitlines()[0])}


def test_html_escapes_what_a_field_holds() -> None:
    alert = A.fill_alert({**FILL_ROW, "reason": "<script>alert(1)</script> & co"}, now_ms=T0)
    rendered = A.render_html(alert)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in rendered
    visible, _ = parse_html(rendered)
    assert "reason: <script>alert(1)</script> & co" in visible


def test_webhook_body_is_the_alert_plus_its_text() -> None:
    alert = A.exit_alert(TRADE_ROW, now_ms=T0)
    body = json.loads(json.dumps(A.webhook_body(alert)))
    assert body["kind"] == "exit" and body["key"] == alert.key and body["test"] is False
    assert body["data"]["pnl"] == -41.75 and body["text"] == A.render_text(alert)
    assert body["created_at"] == "2023-11-14T22:13:20.000Z"


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "secret",
    [
        BOT_TOKEN,
        f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "Authorization: Bearer abcdefgh12345678",
        "postgresql://ocw:hunter2pass@db.internal:5432/ocw",
        "https://user:pa55word@hooks.example.com/x",
        "api_key=AKf83jd92kd0s",
        '{"secret": "s3cr3t-value"}',
        "sk-" + "ant-api03-FAKE-fake-not-a-key-0123456789",  # an Anthropic key's shape, built
        "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",  # Binance shape
        "https://hooks.slack.com/services/T000/B000?token=xoxb-1234567890-abcdefghij",
    ],
)
def test_nothing_shaped_like_a_secret_goes_out(secret: str) -> None:
    cleaned = A.scrub(f"failed: {secret} (retrying)")
    assert "[redacted]" in cleaned and cleaned.startswith("failed: ")
    for piece in ("hunter2pass", "pa55word", "AKf83jd92kd0s", "s3cr3t-value", BOT_TOKEN):
        assert piece not in cleaned
    assert A.scrub(secret) == A.scrub(A.scrub(secret))  # stable


def test_known_secrets_go_whatever_their_shape() -> None:
    assert A.scrub("url was https://ntfy.sh/ocw-alerts-42", ["https://ntfy.sh/ocw-alerts-42"]) == (
        "url was [redacted]"
    )


def test_what_is_not_a_secret_stays() -> None:
    for text in (
        "paper-1700000000000-BTCUSDT-1",
        "halt:paper:1700000000000",
        "2023-11-14 22:13:20 UTC",
        "price: 65,012.5 USDT",
        "token bucket is empty",
        "incident 3f2a9c0d1e4b5a6f7c8d9e0f",
        "https://api.binance.com/api/v3/order",
    ):
        assert A.scrub(text) == text


def test_a_secret_put_into_any_field_never_reaches_a_text() -> None:
    dirty = A.Alert(
        kind="fill",
        key=f"fill:paper:{BOT_TOKEN}",
        account="paper",
        title=f"BUY with {BOT_TOKEN}",
        symbol=BOT_TOKEN,
        fields={
            "reason": f"token={BOT_TOKEN}",
            BOT_TOKEN: "label",
            "url": "see https://x/hook-abc",
        },
        data={"note": f"Bearer {BOT_TOKEN}", "qty": 1.0},
        created_at_ms=T0,
    )
    clean = A.scrub_alert(dirty, ["https://x/hook-abc"])
    outputs = [
        A.render_text(clean),
        A.render_html(clean),
        json.dumps(A.webhook_body(clean)),
        clean.key,
    ]
    for out in outputs:
        assert BOT_TOKEN not in out and "AAEsecret" not in out and "hook-abc" not in out
    assert clean.key == A.scrub_alert(dirty, ["https://x/hook-abc"]).key  # still a stable key
    assert clean.data["qty"] == 1.0


# ---------------------------------------------------------------- kinds


def test_kinds_filter() -> None:
    fill = A.fill_alert(FILL_ROW, now_ms=T0)
    halt = A.halt_alert("paper", T0, "dd", now_ms=T0)
    resume = A.resume_alert("paper", T0, now_ms=T0)
    gone = A.listener_alert("paper", True, T0, now_ms=T0)
    assert A.kind_allowed(fill, ["all"]) and A.kind_allowed(gone, ["all"])
    assert A.filter_kinds([fill, halt, resume, gone], ["halt", "listener_gone"]) == [
        halt,
        resume,
        gone,
    ]
    assert A.filter_kinds([fill, halt, gone], ["trades"]) == [fill]
    assert A.filter_kinds([fill, halt, gone], ["health"]) == [gone]
    assert A.filter_kinds([fill, halt], [" Fill ", ""]) == [fill]
    sample = A.sample_alert("paper", now_ms=T0, kind="exit")
    assert A.kind_allowed(sample, ["halt"])  # a test always passes
    with pytest.raises(ValueError, match="unknown alert kind 'fills'"):
        A.expand_kinds(["fills"])


# ---------------------------------------------------------------- rate limit


def test_rate_admits_and_the_critical_allowance() -> None:
    assert A.rate_admits(2, 3, "info") and not A.rate_admits(3, 3, "info")
    assert not A.rate_admits(3, 3, "warning")
    assert A.rate_admits(3, 3, "critical") and A.rate_admits(5, 3, "critical")
    assert not A.rate_admits(6, 3, "critical")
    assert A.rate_admits(100, 3, "info", bypass=True)


def test_sliding_window_folds_the_rest_into_one_summary() -> None:
    w = A.SlidingWindow(limit=3)
    fills = [A.fill_alert({**FILL_ROW, "client_order_id": f"c{i}"}, now_ms=T0) for i in range(7)]
    taken = [w.offer(a, T0 + i * 1000) for i, a in enumerate(fills)]
    assert taken == [True, True, True, False, False, False, False]
    halt = A.halt_alert("paper", T0, "dd", now_ms=T0)
    assert w.offer(halt, T0 + 8000)  # critical: through
    assert w.due_summary(T0 + 10_000, "paper") is None  # the window is still full
    assert A.window_reopens_ms(w.sent, 3, T0 + 10_000) == T0 + 1000 + HOUR  # the halt counts
    summary = w.due_summary(T0 + 2001 + HOUR, "paper", "telegram")
    assert summary is not None and summary.kind == "suppressed"
    assert summary.title == "4 more alerts suppressed (rate limit)"
    assert "kinds: fill ×4" in A.render_text(summary)
    assert w.due_summary(T0 + 2002 + HOUR, "paper") is None  # nothing left to report


def test_summary_key_is_stable_and_severity_follows_the_worst() -> None:
    entries = [
        A.SuppressedEntry(kind="fill", key=f"fill:paper:{i}", title=f"BUY {i}", at_ms=T0 + i)
        for i in range(3)
    ]
    a = A.summary_alert("telegram", entries, account="paper", now_ms=T0 + 10)
    b = A.summary_alert("telegram", list(reversed(entries)), account="paper", now_ms=T0 + 99)
    assert a.key == b.key and a.severity == "warning"
    assert "latest: BUY 0; BUY 1; BUY 2" in A.render_text(a)
    crit = entries + [A.SuppressedEntry(kind="halt", key="h", severity="critical", at_ms=T0)]
    worst = A.summary_alert("telegram", crit, account="paper", now_ms=T0)
    assert worst.severity == "critical" and worst.key != a.key
    with pytest.raises(ValueError):
        A.summary_alert("telegram", [], account="paper", now_ms=T0)


# ---------------------------------------------------------------- the sender's bookkeeping


class FakeDestination:
    """Records what it was given; raises the scripted errors first."""

    def __init__(self, name: str = "fake", errors: list[DeliveryError] | None = None) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.got: list[A.Alert] = []
        self.calls = 0

    async def deliver(self, client: httpx.AsyncClient, alert: A.Alert) -> str | None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.got.append(alert)
        return str(len(self.got))


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def _no_sleep(_: float) -> None:
    return None


def _sender(dests, log=None, clock=None, **kw) -> AlertSender:
    return AlertSender(
        dests, log or MemoryAlertLog(), clock=clock or Clock(), sleep=_no_sleep, **kw
    )


async def test_sender_dedups_filters_and_counts() -> None:
    dest = FakeDestination()
    log = MemoryAlertLog()
    sender = _sender([dest], log, kinds=["trades"])
    fill = A.fill_alert(FILL_ROW, now_ms=T0)
    halt = A.halt_alert("paper", T0, "dd", now_ms=T0)
    first = await sender.send_now([fill, halt])
    assert [o.outcome for o in first.outcomes] == ["sent", "filtered"]
    assert (first.sent, first.filtered) == (1, 1)
    again = await _sender([dest], log, kinds=["all"]).send_now([fill])  # a restart, same log
    assert again.outcomes[0].outcome == "duplicate" and len(dest.got) == 1


async def test_sender_rate_limit_then_summary_when_the_window_allows() -> None:
    dest = FakeDestination()
    clock = Clock()
    sender = _sender([dest], clock=clock, max_per_hour=2)
    fills = [A.fill_alert({**FILL_ROW, "client_order_id": f"c{i}"}, now_ms=T0) for i in range(5)]
    report = await sender.send_now(fills)
    assert [o.outcome for o in report.outcomes] == ["sent"] * 2 + ["suppressed"] * 3
    assert "OCW_ALERT_MAX_PER_HOUR=2" in report.outcomes[2].deliveries[0].reason
    halt = A.halt_alert("paper", T0, "dd", now_ms=T0)
    assert (await sender.send_now([halt])).outcomes[0].outcome == "sent"  # critical
    again = await sender.send_now(fills[2:3])
    assert again.outcomes[0].outcome == "suppressed"  # not sent later on its own either
    assert (await sender.send_now([])).summaries == []  # no room yet
    clock.now += HOUR + 1
    flushed = await sender.send_now([])
    assert [d.outcome for d in flushed.summaries] == ["sent"]
    assert dest.got[-1].title == "3 more alerts suppressed (rate limit)"
    assert (await sender.send_now([])).summaries == []


async def test_a_final_failure_is_not_retried_and_stops_the_batch() -> None:
    dest = FakeDestination(errors=[DeliveryError(f"401 Unauthorized {BOT_TOKEN}", False)])
    sender = _sender([dest], secrets=[BOT_TOKEN])
    fills = [A.fill_alert({**FILL_ROW, "client_order_id": f"c{i}"}, now_ms=T0) for i in range(3)]
    report = await sender.send_now(fills)
    assert dest.calls == 1 and report.failed == 3 and not report.retryable
    assert all(BOT_TOKEN not in e for e in report.errors)
    assert "not tried again in this batch" in report.outcomes[1].deliveries[0].reason


async def test_retryable_failures_are_retried_within_the_budget() -> None:
    dest = FakeDestination(errors=[DeliveryError("500", True), DeliveryError("429", True, 1.0)])
    report = await _sender([dest]).send_now([A.fill_alert(FILL_ROW, now_ms=T0)])
    assert report.sent == 1 and dest.calls == 3
    slow = FakeDestination(errors=[DeliveryError("429 retry after 60", True, 60.0)])
    report = await _sender([slow], retry_budget_s=5).send_now([A.fill_alert(FILL_ROW, now_ms=T0)])
    assert report.failed == 1 and report.retryable and report.retry_after_s == 60.0
    assert slow.calls == 1


async def test_a_send_in_flight_elsewhere_is_left_to_it() -> None:
    log = MemoryAlertLog()
    fill = A.fill_alert(FILL_ROW, now_ms=T0)
    assert log.claim("fake", fill, T0, 30_000)  # another process is sending it
    dest = FakeDestination()
    report = await _sender([dest], log).send_now([fill])
    assert report.outcomes[0].outcome == "failed" and report.retryable and dest.calls == 0
    late = _sender([dest], log, clock=Clock(T0 + 31_000))  # its claim ran out: it crashed
    assert (await late.send_now([fill])).sent == 1


async def test_no_destination_is_a_clear_failure() -> None:
    report = await _sender([]).send_now([A.fill_alert(FILL_ROW, now_ms=T0)])
    assert report.failed == 1 and "OCW_TELEGRAM_BOT_TOKEN" in report.errors[0]


# ---------------------------------------------------------------- the sent-log's storage


@pytest.fixture(params=["sqlite", "postgres"])
def log_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SecretStr:
    """Where the sent-log lives: ``alerts.db``, or a fresh schema on the test PostgreSQL."""
    return db_target(request, tmp_path / "home" / "alerts.db")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_log(request: pytest.FixtureRequest, tmp_path: Path):
    """Every AlertLog: the semantics are the same in memory and on both back ends."""
    if request.param == "memory":
        yield MemoryAlertLog()
        return
    log = DbAlertLog(db_target(request, tmp_path / "home" / "alerts.db"), now_ms=T0)
    yield log
    log.close()


def _fill(i: int | str = 1) -> A.Alert:
    return A.fill_alert({**FILL_ROW, "client_order_id": f"c{i}"}, now_ms=T0)


def test_alert_log_claims_leases_marks_and_releases(any_log) -> None:
    log, alert = any_log, _fill()
    assert log.seen("fake", alert.key, T0) is None
    assert log.claim("fake", alert, T0, 30_000) is True
    assert log.seen("fake", alert.key, T0 + 29_999) == "sending"
    assert log.claim("fake", alert, T0 + 10_000, 30_000) is False  # a live claim
    assert log.seen("other", alert.key, T0) is None  # per destination
    assert log.seen("fake", alert.key, T0 + 30_000) is None  # its lease ran out
    assert log.claim("fake", alert, T0 + 30_000, 30_000) is True  # taken over
    assert log.claim("fake", alert, T0 + 59_999, 30_000) is False  # the new lease holds
    log.release("fake", alert.key)
    assert log.seen("fake", alert.key, T0 + 30_001) is None
    assert log.claim("fake", alert, T0 + 40_000, 30_000) is True
    log.mark("fake", alert, T0 + 41_000)
    assert log.seen("fake", alert.key, T0 + 10 * HOUR) == "sent"  # no lease on a sent row
    assert log.claim("fake", alert, T0 + 10 * HOUR, 30_000) is False
    log.release("fake", alert.key)  # only a claim is released
    assert log.seen("fake", alert.key, T0) == "sent"
    log.mark("fake", _fill(2), T0, "suppressed")
    assert log.seen("fake", _fill(2).key, T0) == "suppressed"
    assert log.claim("fake", _fill(2), T0, 30_000) is False


def test_alert_log_counts_the_window_and_settles_the_pending(any_log) -> None:
    log = any_log
    log.mark("fake", _fill(1), T0)
    log.mark("fake", _fill(2), T0 + 10)
    log.mark("other", _fill(3), T0 + 10)
    log.claim("fake", _fill(4), T0 + 10, 30_000)  # in flight: not counted
    assert log.sent_count("fake", T0 - 1) == 2
    assert log.sent_count("fake", T0) == 1  # strictly after
    assert log.sent_count("nowhere", 0) == 0
    for key, at in (("b", T0 + 5), ("a", T0 + 5), ("c", T0 + 3)):
        log.mark("fake", _fill(key), at, "suppressed")
    log.mark("other", _fill("z"), T0, "suppressed")
    pending = log.pending("fake")
    assert [(e.key, e.at_ms) for e in pending] == [
        (_fill("c").key, T0 + 3),
        (_fill("a").key, T0 + 5),
        (_fill("b").key, T0 + 5),
    ]
    first = pending[0]
    assert (first.kind, first.severity, first.account) == ("fill", "info", "paper")
    assert first.title == _fill("c").title
    log.settle("fake", [e.key for e in pending[:2]], "summary:1")
    log.settle("fake", [], "summary:2")
    assert [e.key for e in log.pending("fake")] == [_fill("b").key]
    assert [e.key for e in log.pending("other")] == [_fill("z").key]
    assert log.seen("fake", _fill("c").key, T0) == "suppressed"  # settled, still not re-sent
    log.mark("fake", _fill(5).model_copy(update={"title": "x" * 5_000}), T0)  # cut to 200
    assert log.sent_count("fake", T0 - 1) == 3


def test_alert_log_prunes_after_30_days_but_keeps_what_is_pending(
    log_target: Path | SecretStr,
) -> None:
    log = DbAlertLog(log_target, now_ms=T0)
    log.mark("fake", _fill("old-sent"), T0)
    log.mark("fake", _fill("old-pending"), T0, "suppressed")
    log.mark("fake", _fill("old-settled"), T0, "suppressed")
    log.settle("fake", [_fill("old-settled").key], "summary:1")
    log.claim("fake", _fill("old-claim"), T0, 30_000)
    log.mark("fake", _fill("recent"), T0 + 2 * 86_400_000)
    log.close()
    later = DbAlertLog(log_target, now_ms=T0 + RETENTION_MS + 1)
    try:
        now = T0 + RETENTION_MS + 1
        assert later.seen("fake", _fill("old-sent").key, now) is None
        assert later.seen("fake", _fill("old-settled").key, now) is None
        assert later.claim("fake", _fill("old-claim"), now, 30_000) is True
        assert later.seen("fake", _fill("old-pending").key, now) == "suppressed"
        assert later.seen("fake", _fill("recent").key, now) == "sent"
        assert [e.key for e in later.pending("fake")] == [_fill("old-pending").key]
    finally:
        later.close()


def test_two_logs_on_one_database_dedupe_each_other(log_target: Path | SecretStr) -> None:
    """Two processes (two hosts, on PostgreSQL) see each other's claims, sends and window."""
    a, b = DbAlertLog(log_target), DbAlertLog(log_target)
    try:
        alert = _fill()
        assert a.claim("fake", alert, T0, 30_000)
        assert b.seen("fake", alert.key, T0) == "sending"
        assert not b.claim("fake", alert, T0 + 1, 30_000)
        a.mark("fake", alert, T0 + 2)
        assert b.seen("fake", alert.key, T0 + HOUR) == "sent"
        assert b.sent_count("fake", T0 - HOUR) == 1
        b.mark("fake", _fill(2), T0 + 3, "suppressed")
        assert [e.key for e in a.pending("fake")] == [_fill(2).key]
        a.settle("fake", [_fill(2).key], "summary:1")
        assert b.pending("fake") == []
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("lease", ["free", "expired"])
def test_concurrent_claims_have_exactly_one_winner(
    log_target: Path | SecretStr, lease: str
) -> None:
    """Senders racing for one (destination, key), each on its own connection: a new pair, or
    one whose claimer crashed (its lease ran out). Exactly one claim wins each race."""
    n = 8
    logs = [DbAlertLog(log_target) for _ in range(n)]
    try:
        for race in range(5):
            alert = _fill(f"race-{race}")
            if lease == "expired":
                assert logs[0].claim("fake", alert, T0 - 60_000, 30_000)  # a crashed sender's
            barrier = threading.Barrier(n)

            def claim(log: DbAlertLog, alert: A.Alert = alert, barrier=barrier) -> bool:
                barrier.wait()
                return log.claim("fake", alert, T0, 30_000)

            with ThreadPoolExecutor(n) as pool:
                wins = list(pool.map(claim, logs))
            assert sum(wins) == 1, wins
            assert {log.seen("fake", alert.key, T0) for log in logs} == {"sending"}
    finally:
        for log in logs:
            log.close()


def test_from_settings_picks_the_database(tmp_path: Path, postgres) -> None:
    local = AlertSender.from_settings(Settings(_env_file=None, home=tmp_path / "a"))
    assert isinstance(local.log, DbAlertLog) and local.log.db_path == tmp_path / "a" / "alerts.db"
    local.close()
    url = postgres.fresh_url()
    shared = AlertSender.from_settings(Settings(_env_file=None, home=tmp_path / "b", db_url=url))
    assert isinstance(shared.log, DbAlertLog) and shared.log.db.dialect.name == "postgres"
    assert not (tmp_path / "b" / "alerts.db").exists()
    shared.close()


async def test_senders_on_two_hosts_share_one_sent_log_and_rate_window(
    tmp_path: Path, postgres
) -> None:
    url = postgres.fresh_url()
    clock = Clock()
    hosts = [Settings(_env_file=None, home=tmp_path / h, db_url=url) for h in ("a", "b")]
    dest_a, dest_b = FakeDestination(), FakeDestination()
    a = _sender([dest_a], DbAlertLog.from_settings(hosts[0]), clock, max_per_hour=2)
    b = _sender([dest_b], DbAlertLog.from_settings(hosts[1]), clock, max_per_hour=2)
    try:
        assert (await a.send_now([_fill(1)])).sent == 1
        assert (await b.send_now([_fill(1)])).outcomes[0].outcome == "duplicate"
        assert (await b.send_now([_fill(2)])).sent == 1  # the window: 2 of 2, on two hosts
        assert (await a.send_now([_fill(3)])).outcomes[0].outcome == "suppressed"
        assert (len(dest_a.got), len(dest_b.got)) == (1, 1)
        clock.now += HOUR + 1
        flushed = await b.send_now([])  # b reports what a suppressed, once
        assert [d.outcome for d in flushed.summaries] == ["sent"]
        assert dest_b.got[-1].kind == "suppressed"
        assert (await a.send_now([])).summaries == []
    finally:
        a.close()
        b.close()
