"""Alerts through the real HTTP path: the sender against local Telegram and webhook stand-ins.

What is guaranteed and shown here: texts as Telegram shows them; 429 ``retry_after`` waited
out; 401 / chat not found final, with a clear reason and never the token; no second message
after a restart (two senders on one ``OCW_HOME``); the webhook's ``Idempotency-Key``; the rate
limit's summary; with ``OCW_DB_URL``, no second
message from a sender on another host (one sent-log in PostgreSQL). What is *not*: a message
whose answer was lost ("accepted, then the connection dropped") is sent again by the retry.
The webhook receiver can drop it by its key; Telegram has none and shows it twice
(at-least-once in that window, as the module says).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.alerts import AlertSender
from tests.servers.telegram import CHAT_ID, TOKEN, FakeTelegram, FakeWebhook
from trading import alerts as A
from trading.config import Settings
from workers import alerts_cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000
HOUR = 3_600_000
FILL = {
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
}
TRADE = {
    "trade_id": "paper-1700000000000-BTCUSDT",
    "account": "paper",
    "symbol": "BTC/USDT",
    "qty": 0.0153,
    "entry_price": 65_012.5,
    "exit_price": 66_400.0,
    "entry_time_ms": T0,
    "exit_time_ms": T0 + 5 * HOUR,
    "fees": 1.98,
    "pnl": 19.25,
    "pnl_pct": 0.0194,
    "exit_reason": "trailing_stop",
}
ALERT_ENV = (
    "OCW_TELEGRAM_BOT_TOKEN",
    "TELEGRAM_BOT_TOKEN",
    "OCW_TELEGRAM_CHAT_ID",
    "OCW_TELEGRAM_API_URL",
    "OCW_ALERT_WEBHOOK_URL",
    "OCW_ALERT_KINDS",
    "OCW_ALERT_MAX_PER_HOUR",
    "OCW_HOME",
)


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN not in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text


@pytest_asyncio.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest_asyncio.fixture
async def hook() -> AsyncIterator[FakeWebhook]:
    async with FakeWebhook() as server:
        yield server


def settings(
    tmp_path: Path, tg: FakeTelegram | None, hook: FakeWebhook | None = None, **kw
) -> Settings:
    values: dict[str, Any] = {"home": tmp_path / "home", "account": "paper"}
    if tg is not None:
        values |= {
            "telegram_bot_token": kw.pop("token", TOKEN),
            "telegram_chat_id": kw.pop("chat_id", CHAT_ID),
            "telegram_api_url": tg.base_url,
        }
    if hook is not None:
        values["alert_webhook_url"] = hook.url
    return Settings(_env_file=None, **(values | kw))


def fill(i: int = 1, **changes: Any) -> A.Alert:
    row = {**FILL, "client_order_id": f"paper-1700000000000-BTCUSDT-{i}", **changes}
    return A.fill_alert(row, now_ms=T0)


def clean(alert: A.Alert, s: Settings) -> A.Alert:
    from activities.alerts import settings_secrets

    return A.scrub_alert(alert, settings_secrets(s))


# ---------------------------------------------------------------- the stand-in itself


async def _call(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, **kw)


async def test_the_stand_in_is_strict_like_the_bot_api(tg: FakeTelegram) -> None:
    send = f"{tg.base_url}/bot{TOKEN}/sendMessage"
    ok = await _call(send, json={"chat_id": CHAT_ID, "text": "hello"})
    body = ok.json()
    assert ok.status_code == 200 and body["ok"] is True
    assert body["result"]["message_id"] == 1 and body["result"]["chat"]["id"] == int(CHAT_ID)
    assert body["result"]["text"] == "hello" and isinstance(body["result"]["date"], int)

    cases = [
        (
            f"{tg.base_url}/bot1:wrong/sendMessage",
            {"json": {"chat_id": CHAT_ID, "text": "x"}},
            401,
            "Unauthorized",
        ),
        (f"{tg.base_url}/bot{TOKEN}/sendCarrierPigeon", {"json": {}}, 404, "Not Found"),
        (f"{tg.base_url}/sendMessage", {"json": {}}, 404, "Not Found"),
        (send, {"json": {"text": "x"}}, 400, "Bad Request: chat_id is empty"),
        (send, {"json": {"chat_id": "42", "text": "x"}}, 400, "Bad Request: chat not found"),
        (send, {"json": {"chat_id": CHAT_ID}}, 400, "Bad Request: message text is empty"),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "  "}},
            400,
            "Bad Request: message text is empty",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "x" * 4097}},
            400,
            "Bad Request: message is too long",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "🚀" * 2049}},
            400,
            "Bad Request: message is too long",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "x", "parse_mode": "html5"}},
            400,
            "Bad Request: unsupported parse_mode",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "<b>x", "parse_mode": "HTML"}},
            400,
            "can't parse entities",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "a & b", "parse_mode": "HTML"}},
            400,
            "can't parse entities",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "<script>", "parse_mode": "HTML"}},
            400,
            "Unsupported start tag",
        ),
        (
            send,
            {"json": {"chat_id": CHAT_ID, "text": "1.5", "parse_mode": "MarkdownV2"}},
            400,
            "reserved",
        ),
        (
            send,
            {"content": b"[1, 2]", "headers": {"content-type": "application/json"}},
            400,
            "Bad Request",
        ),
    ]
    for url, kw, status, description in cases:
        resp = await _call(url, **kw)
        answer = resp.json()
        assert resp.status_code == status, (url, kw, answer)
        assert answer["ok"] is False and answer["error_code"] == status
        assert description in answer["description"], (description, answer)

    at_limit = await _call(send, json={"chat_id": CHAT_ID, "text": "x" * 4096})
    assert at_limit.status_code == 200
    html = await _call(
        send, json={"chat_id": CHAT_ID, "text": "<b>a &amp; b</b> c", "parse_mode": "HTML"}
    )
    result = html.json()["result"]
    assert result["text"] == "a & b c"
    assert result["entities"] == [{"type": "bold", "offset": 0, "length": 5}]
    form = await _call(send, data={"chat_id": CHAT_ID, "text": "from a form"})
    assert form.status_code == 200 and tg.messages[-1].text == "from a form"
    assert len(tg.messages) == 4  # only what was accepted


# ---------------------------------------------------------------- delivery and texts


async def test_alerts_arrive_with_their_texts(
    tmp_path: Path, tg: FakeTelegram, hook: FakeWebhook
) -> None:
    s = settings(tmp_path, tg, hook)
    sender = AlertSender.from_settings(s)
    alerts = [
        fill(),
        A.exit_alert(TRADE, now_ms=T0),
        A.halt_alert("paper", T0, "drawdown 12.4% >= 12.0%", now_ms=T0, drawdown=0.124),
        A.listener_alert("paper", True, T0, now_ms=T0, error="no answer from the listener"),
    ]
    report = await sender.send_now(alerts)
    assert report.destinations == ["telegram", "webhook"]
    assert report.sent == 4 and report.failed == 0
    assert tg.texts() == [A.render_text(a) for a in alerts]
    first = tg.messages[0]
    assert first.text.startswith("ℹ️ BUY BTC/USDT filled\naccount: paper\nqty: 0.0153 BTC")
    assert first.parse_mode == "HTML" and first.entities[0]["type"] == "bold"
    assert first.params["disable_web_page_preview"] is True
    assert "Exit BTC/USDT: +19.25 USDT (+1.94%)" in tg.messages[1].text
    assert tg.messages[2].text.startswith("🚨 Trading halted")
    receipts = [o.deliveries[0].receipt for o in report.outcomes]
    assert receipts == ["1", "2", "3", "4"]
    assert list(hook.deliveries) == [a.key for a in alerts]
    sender.close()


async def test_429_retry_after_is_waited_out(tmp_path: Path, tg: FakeTelegram) -> None:
    sender = AlertSender.from_settings(settings(tmp_path, tg))
    tg.fail_next("429", retry_after=1)
    started = time.monotonic()
    report = await sender.send_now([fill()])
    assert time.monotonic() - started >= 1.0
    assert report.sent == 1 and len(tg.messages) == 1
    assert [r.status for r in tg.requests] == [429, 200]


async def test_a_long_retry_after_is_left_to_the_next_try(tmp_path: Path, tg: FakeTelegram) -> None:
    sender = AlertSender.from_settings(settings(tmp_path, tg), retry_budget_s=2)
    tg.fail_next("429", retry_after=30)
    report = await sender.send_now([fill(1), fill(2)])
    assert report.failed == 2 and report.retryable and report.retry_after_s == 30
    assert len(tg.requests) == 1  # the second alert did not knock again
    assert (await sender.send_now([fill(1), fill(2)])).sent == 2


async def test_5xx_and_timeouts_are_retried(tmp_path: Path, tg: FakeTelegram) -> None:
    sender = AlertSender.from_settings(settings(tmp_path, tg), backoff_s=0.05)
    tg.fail_next("500", n=2)
    assert (await sender.send_now([fill(1)])).sent == 1
    assert [r.status for r in tg.requests] == [500, 500, 200]

    impatient = AlertSender.from_settings(settings(tmp_path, tg), timeout_s=0.5, attempts=1)
    tg.fail_next("hang")
    report = await impatient.send_now([fill(2)])
    delivery = report.outcomes[0].deliveries[0]
    assert delivery.outcome == "failed" and delivery.retryable
    assert delivery.reason.startswith("timed out")
    assert (await impatient.send_now([fill(2)])).sent == 1
    assert tg.texts() == [A.render_text(fill(1)), A.render_text(fill(2))]


async def test_401_is_final_and_names_no_token(
    tmp_path: Path, tg: FakeTelegram, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "555555555:AAWrongTokenWrongTokenWrongToken1234"
    sender = AlertSender.from_settings(settings(tmp_path, tg, token=wrong))
    report = await sender.send_now([fill(1), fill(2), fill(3)])
    assert report.failed == 3 and not report.retryable
    assert len(tg.requests) == 1 and tg.requests[0].status == 401  # no retry, no hammering
    reason = report.outcomes[0].deliveries[0].reason
    assert reason == "401 Unauthorized (check OCW_TELEGRAM_BOT_TOKEN)"
    dumped = report.model_dump_json() + capsys.readouterr().err
    assert wrong not in dumped and wrong.split(":")[1] not in dumped


async def test_chat_not_found_is_final(tmp_path: Path, tg: FakeTelegram) -> None:
    sender = AlertSender.from_settings(settings(tmp_path, tg, chat_id="-100999"))
    report = await sender.send_now([fill()])
    d = report.outcomes[0].deliveries[0]
    assert d.outcome == "failed" and not d.retryable
    assert d.reason.startswith("400 Bad Request: chat not found (check OCW_TELEGRAM_CHAT_ID")
    assert tg.messages == []


async def test_no_second_message_after_a_restart(
    tmp_path: Path, tg: FakeTelegram, hook: FakeWebhook
) -> None:
    s = settings(tmp_path, tg, hook)
    alerts = [fill(1), A.halt_alert("paper", T0, "drawdown", now_ms=T0)]
    first = AlertSender.from_settings(s)
    assert (await first.send_now(alerts)).sent == 2
    first.close()  # the worker stops; a new one rebuilds the same alerts from the same facts
    rebuilt = [fill(1), A.halt_alert("paper", T0, "drawdown", now_ms=T0 + 60_000)]
    second = AlertSender.from_settings(s)
    report = await second.send_now(rebuilt)
    assert [o.outcome for o in report.outcomes] == ["duplicate", "duplicate"]
    assert len(tg.messages) == 2 and len(hook.requests) == 2
    assert (s.home / "alerts.db").exists()


async def test_no_second_message_from_another_host_on_postgres(
    tmp_path: Path, tg: FakeTelegram, hook: FakeWebhook, postgres
) -> None:
    """With OCW_DB_URL the sent-log is in the shared database: a sender on another host (its
    own OCW_HOME) sees what the first one sent."""
    url = postgres.fresh_url()
    here = AlertSender.from_settings(settings(tmp_path / "host-a", tg, hook, db_url=url))
    there = AlertSender.from_settings(settings(tmp_path / "host-b", tg, hook, db_url=url))
    try:
        assert (await here.send_now([fill(1)])).sent == 1
        report = await there.send_now([fill(1), fill(2)])
        assert [o.outcome for o in report.outcomes] == ["duplicate", "sent"]
        assert len(tg.messages) == 2 and len(hook.requests) == 2
        assert (await here.send_now([fill(2)])).outcomes[0].outcome == "duplicate"
    finally:
        here.close()
        there.close()
    assert not (tmp_path / "host-a" / "home" / "alerts.db").exists()


async def test_accepted_then_dropped_is_at_least_once(
    tmp_path: Path, tg: FakeTelegram, hook: FakeWebhook
) -> None:
    s = settings(tmp_path, tg, hook)
    sender = AlertSender.from_settings(s, attempts=1)
    tg.fail_next("drop")
    hook.fail_next("drop")
    alert = fill()
    lost = await sender.send_now([alert])
    for d in lost.outcomes[0].deliveries:
        assert d.outcome == "failed" and d.retryable
        assert d.reason == "connection dropped before an answer"
    assert len(tg.messages) == 1  # it did arrive: only the answer was lost

    retried = await sender.send_now([alert])
    assert retried.sent == 1
    # Telegram has no idempotency key: the retry is a second, identical message
    assert tg.texts() == [A.render_text(alert)] * 2
    # the webhook got the same key twice and kept one
    keys = [r.headers["idempotency-key"] for r in hook.requests]
    assert keys == [alert.key, alert.key]
    assert list(hook.deliveries) == [alert.key] and hook.state.duplicates == 1
    # once an answer came back, nothing is sent again
    assert (await sender.send_now([alert])).outcomes[0].outcome == "duplicate"
    assert len(tg.messages) == 2 and len(hook.requests) == 2


async def test_webhook_body_and_idempotency_key(tmp_path: Path, hook: FakeWebhook) -> None:
    s = settings(tmp_path, None, hook, api_token="dashboard-api-token-123456")
    sender = AlertSender.from_settings(s)
    leaky = fill(reason=f"ask {TOKEN} with dashboard-api-token-123456 at {hook.url}")
    report = await sender.send_now([leaky])
    assert report.destinations == ["webhook"] and report.sent == 1
    (req,) = hook.requests
    assert req.headers["content-type"] == "application/json"
    assert req.headers["idempotency-key"] == leaky.key
    assert req.headers["user-agent"].startswith("ocw-alerts/")
    body = req.body
    assert body is not None
    assert body["kind"] == "fill" and body["key"] == leaky.key and body["account"] == "paper"
    assert body["symbol"] == "BTC/USDT" and body["data"]["qty"] == 0.0153
    assert body["text"] == A.render_text(clean(leaky, s))
    for secret in (TOKEN, "dashboard-api-token-123456", hook.path):
        assert secret not in req.raw


async def test_webhook_statuses(tmp_path: Path, hook: FakeWebhook) -> None:
    sender = AlertSender.from_settings(settings(tmp_path, None, hook), backoff_s=0.05)
    hook.fail_next("429", retry_after=1)
    hook.fail_next("500")
    assert (await sender.send_now([fill(1)])).sent == 1
    assert [r.status for r in hook.requests] == [429, 500, 200]
    gone = AlertSender.from_settings(
        Settings(_env_file=None, home=tmp_path / "h2", alert_webhook_url=f"{hook.base_url}/nope")
    )
    report = await gone.send_now([fill(2)])
    assert report.errors == [f"{fill(2).key} -> webhook: 404 Not Found"]
    assert not report.retryable


async def test_rate_limit_summary_survives_a_restart(tmp_path: Path, tg: FakeTelegram) -> None:
    now = [T0]
    s = settings(tmp_path, tg, alert_max_per_hour=2)
    sender = AlertSender.from_settings(s, clock=lambda: now[0])
    report = await sender.send_now([fill(i) for i in range(5)])
    assert [o.outcome for o in report.outcomes] == [
        "sent",
        "sent",
        "suppressed",
        "suppressed",
        "suppressed",
    ]
    halt = A.halt_alert("paper", T0, "drawdown", now_ms=T0)
    assert (await sender.send_now([halt])).sent == 1  # critical goes through
    assert len(tg.messages) == 3
    sender.close()

    now[0] = T0 + HOUR + 1
    restarted = AlertSender.from_settings(s, clock=lambda: now[0])
    flushed = await restarted.send_now([])
    assert [d.outcome for d in flushed.summaries] == ["sent"]
    summary = tg.messages[-1].text
    assert summary.startswith("⚠️ 3 more alerts suppressed (rate limit)")
    assert "kinds: fill ×3" in summary
    assert (await restarted.send_now([])).summaries == []
    assert len(tg.messages) == 4


async def test_kinds_filter_and_half_configured_destinations(
    tmp_path: Path, tg: FakeTelegram
) -> None:
    s = settings(tmp_path, tg, alert_kinds=["halt"])
    report = await AlertSender.from_settings(s).send_now(
        [fill(), A.halt_alert("paper", T0, "dd", now_ms=T0)]
    )
    assert [o.outcome for o in report.outcomes] == ["filtered", "sent"]
    assert len(tg.messages) == 1
    half = Settings(_env_file=None, home=tmp_path / "h3", telegram_bot_token=TOKEN)
    report = await AlertSender.from_settings(half).send_now([fill()])
    assert report.errors == [
        f"{fill().key} -> telegram: OCW_TELEGRAM_CHAT_ID is not set (the chat to write to)"
    ]
    with pytest.raises(ValueError, match="OCW_ALERT_KINDS"):
        AlertSender.from_settings(settings(tmp_path, tg, alert_kinds=["fills"]))


# ---------------------------------------------------------------- the activity


class _Counter:
    def __init__(self, sink: list, name: str) -> None:
        self.sink, self.name = sink, name

    def add(self, value: int, attrs: dict | None = None) -> None:
        self.sink.append((self.name, value, dict(attrs or {})))


class _Meter:
    def __init__(self) -> None:
        self.points: list[tuple[str, int, dict]] = []

    def with_additional_attributes(self, attrs: dict) -> _Meter:
        return self

    def create_counter(self, name: str, description: str | None = None, unit: str | None = None):
        return _Counter(self.points, name)


# ---------------------------------------------------------------- ocw alerts test


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALERT_ENV}
    env |= {"OCW_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), **values}
    return env


async def _run_cli(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.alerts_cli",
        "test",
        *args,
        cwd=tmp_path,  # no .env of the repo
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_ocw_alerts_test_as_a_subprocess(
    tmp_path: Path, tg: FakeTelegram, hook: FakeWebhook
) -> None:
    env = _env(
        tmp_path,
        OCW_TELEGRAM_BOT_TOKEN=TOKEN,
        OCW_TELEGRAM_CHAT_ID=CHAT_ID,
        OCW_TELEGRAM_API_URL=tg.base_url,
        OCW_ALERT_WEBHOOK_URL=hook.url,
        OCW_ALERT_KINDS="halt",  # a test passes the filter
    )
    code, out, err = await _run_cli(tmp_path, env)
    assert code == 0, err
    assert out.splitlines() == ["telegram: sent (message 1)", "webhook: sent"]
    assert tg.texts()[0].startswith("🧪 [TEST] Test alert: this destination works")
    (body,) = hook.deliveries.values()
    assert body["test"] is True and body["kind"] == "test"
    code, out, _ = await _run_cli(tmp_path, env, "--kind", "halt")
    assert code == 0 and len(tg.messages) == 2  # every run sends again
    assert tg.texts()[1].startswith("🧪 [TEST] Trading halted")
    assert TOKEN not in out + err


async def test_ocw_alerts_test_without_a_destination(tmp_path: Path) -> None:
    code, out, err = await _run_cli(tmp_path, _env(tmp_path))
    assert code == 2 and out == ""
    assert err.strip() == (
        "ocw: no alert destination configured: set OCW_TELEGRAM_BOT_TOKEN and "
        "OCW_TELEGRAM_CHAT_ID, or OCW_ALERT_WEBHOOK_URL"
    )


async def test_ocw_alerts_test_command_all_failed(
    tmp_path: Path,
    tg: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    for name in ALERT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OCW_TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("OCW_TELEGRAM_CHAT_ID", "-100404")  # not a chat of the bot
    monkeypatch.setenv("OCW_TELEGRAM_API_URL", tg.base_url)
    parser = argparse.ArgumentParser(prog="ocw")
    alerts_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["alerts", "test", "--kind", "exit"])
    code = await asyncio.to_thread(args.func, args)
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("telegram: failed: 400 Bad Request: chat not found")
    assert TOKEN not in out
    monkeypatch.setenv("OCW_TELEGRAM_CHAT_ID", CHAT_ID)
    assert await asyncio.to_thread(args.func, args) == 0
    assert capsys.readouterr().out == "telegram: sent (message 1)\n"
    assert json.dumps(tg.messages[0].params).count("[TEST]") == 1


async def test_no_token_even_with_httpx_logging_turned_up(
    tmp_path: Path, tg: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx")  # someone's -v; httpx logs every URL
    sender = AlertSender.from_settings(settings(tmp_path, tg))
    assert (await sender.send_now([fill()])).sent == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("sendMessage" in line and "[redacted]" in line for line in lines), lines
    # the autouse fixture checks that the token is nowhere in the captured logs
