"""What `ocw status` says of the listener, from the monitor's health."""

from __future__ import annotations

from trading.monitor import AlertMemory, CheckReport, MonitorHealth
from workers.health_view import render_health

NOW = 1_800_000_000_000


def _health(**kw) -> MonitorHealth:
    base = {
        "account": "paper",
        "every_s": 30,
        "listener_state": "up",
        "listener": {
            "written_at_ms": NOW - 3000,
            "started_at_ms": NOW - 60_000,
            "pid": 42,
            "mode": "live",
            "host": "vm-1",
            "trading_worker": {"state": "up", "task_queue": "ocw-trading", "last_poll_age_s": 12},
        },
        "listener_checked_ms": NOW - 4000,
        "listener_seen_ms": NOW - 4000,
        "last_check": CheckReport(
            at_ms=NOW - 4000,
            memory=AlertMemory(),
            sent=2,
            failed=1,
            errors=["telegram: 401 Unauthorized"],
        ),
    }
    return MonitorHealth.model_validate({**base, **kw})


def test_up_names_the_host_the_age_and_the_alerts() -> None:
    text = render_health(_health(), NOW)
    assert text.startswith("listener on vm-1: up (answered the monitor 4 s ago)")
    assert "trading worker: up (queue ocw-trading, last poll 12 s ago)" in text
    assert "alerts: checked 4 s ago: 2 sent" in text and "1 failed; telegram: 401" in text


def test_gone_says_so_and_marks_the_status_as_old() -> None:
    text = render_health(
        _health(listener_state="gone", listener_error="no answer", listener_seen_ms=NOW - 95_000),
        NOW,
    )
    assert "GONE: no answer; last answer 95 s ago" in text
    assert "its last status (3 s ago)" in text


def test_never_checked_and_failed_checks() -> None:
    text = render_health(
        _health(
            listener_state="unknown",
            listener=None,
            last_check=None,
            check_failures=2,
            last_error="journal unreachable",
        ),
        NOW,
    )
    assert "listener: not checked yet" in text
    assert "2 failed check(s), last: journal unreachable" in text


def test_an_arena_agent_sees_its_own_gate_and_wakes() -> None:
    """One listener wakes several accounts (an arena): each account's `ocw status` shows the
    gate and the wakes of its own lane, and names the other accounts on the feed."""
    lanes = {
        "arena-rule": {"gate": {"ticks": 900, "woken": 7}, "wakes_sent": 7, "wake_failures": 0},
        "arena-claude": {
            "gate": {"ticks": 900, "woken": 31},
            "wakes_sent": 30,
            "wake_failures": 2,
            "account_missing": True,
            "wakes_held": 3,
        },
    }
    listener = {**_health().listener, "gate": {"ticks": 900, "woken": 7}, "wakes_sent": 7}
    health = _health(listener={**listener, "accounts": lanes})
    claude = render_health(health, NOW, account="arena-claude")
    assert "31 woken" in claude and "wakes sent 30 (send failures 2)" in claude
    assert "NO RUNNING ACCOUNT: 3 wake reason(s) held" in claude
    assert "this feed also wakes arena-rule (7 wakes)" in claude
    rule = render_health(health, NOW, account="arena-rule")
    assert "7 woken" in rule and "wakes sent 7 (send failures 0)" in rule
    assert "NO RUNNING ACCOUNT" not in rule and "arena-claude (30 wakes)" in rule
    # an account the listener does not wake, or no account: the top-level fields, as before
    assert "this feed also wakes" not in render_health(health, NOW, account="other")
    assert "wakes sent 7" in render_health(health, NOW)
