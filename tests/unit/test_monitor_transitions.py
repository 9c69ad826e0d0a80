"""What the monitor alerts on: each change once, nothing while nothing changes."""

from __future__ import annotations

from trading.monitor import AlertMemory, Observed, stale_series, transitions


def _run(*seen: Observed) -> list[list[str]]:
    mem = AlertMemory()
    out = []
    for s in seen:
        changes, mem = transitions(mem, s)
        out.append([c.change for c in changes])
    return out


def test_halt_alerts_once_then_resume() -> None:
    seq = _run(
        Observed(at_ms=1, halted=True, halt_reason="drawdown 20%"),
        Observed(at_ms=2, halted=True, halt_reason="drawdown 20%"),
        Observed(at_ms=3, halted=False),
        Observed(at_ms=4, halted=False),
    )
    assert seq == [["halt"], [], ["resume"], []]


def test_breaker_and_listener_transitions() -> None:
    seq = _run(
        Observed(at_ms=1, breaker_open=False),
        Observed(at_ms=2, breaker_open=True, breaker_error="429"),
        Observed(at_ms=3, breaker_open=True, listener_ok=False, listener_error="no answer"),
        Observed(at_ms=4, breaker_open=None, listener_ok=False),
        Observed(at_ms=5, breaker_open=False, listener_ok=True),
    )
    assert seq == [[], ["breaker_open"], ["listener_gone"], [], ["breaker_closed", "listener_back"]]


def test_stale_series_alert_new_ones_only() -> None:
    seq = _run(
        Observed(at_ms=1, stale_series=["BTC/USDT 1h"]),
        Observed(at_ms=2, stale_series=["BTC/USDT 1h"]),
        Observed(at_ms=3, stale_series=["BTC/USDT 1h", "ETH/USDT 1h"]),
        Observed(at_ms=4, listener_ok=False),  # a gone listener: its series are not judged
        Observed(at_ms=5, stale_series=[]),
    )
    assert seq == [
        ["stale_feed"],
        [],
        ["stale_feed"],
        ["listener_gone"],
        ["listener_back", "feed_ok"],
    ]


def test_keys_are_stable_for_one_episode() -> None:
    mem = AlertMemory()
    first, mem = transitions(mem, Observed(at_ms=10, halted=True))
    again, _ = transitions(AlertMemory(), Observed(at_ms=10, halted=True))
    assert first[0].key == again[0].key == "halt:10"


def test_silent_stream_is_stale_even_when_series_look_fresh() -> None:
    status = {"stale_series": [], "stream": {"last_message_ms": 1_000}}
    assert stale_series(status, now_ms=1_000 + 301_000, stale_after_s=300) == [
        "stream: no frame for over 300 s"
    ]
    assert stale_series(status, now_ms=1_000 + 10_000, stale_after_s=300) == []
    assert stale_series(None, now_ms=5, stale_after_s=1) == []
