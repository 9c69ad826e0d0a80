"""The UI's texts read like a trader's (workflows/ui_text.py)."""

from __future__ import annotations

from workflows import ui_text


def test_prices_and_quantities_are_decimals_with_sensible_precision():
    assert ui_text.price(78_780.4567) == "78,780.46"
    assert ui_text.price(55_300.0) == "55,300.00"  # never 5.53e+04
    assert ui_text.price(3.14159) == "3.142"
    assert ui_text.price(0.000123456) == "0.0001235"
    assert ui_text.price(None) == "–" and ui_text.price(float("nan")) == "–"
    assert ui_text.qty(0.025200000000000001) == "0.0252"  # never 17 digits
    assert ui_text.qty(13.345) == "13.345" and ui_text.qty(2.0) == "2"
    assert ui_text.when(1_767_225_600_000) == "2026-01-01 00:00 UTC"


def test_a_position_summary_says_what_it_is_and_why():
    text = ui_text.position_summary(
        "BTC/USDT", 0.0252, 78_780.46, 75_629.2, "Claude", "Breakout above the 4h range " * 10
    )
    assert text.startswith(
        'BTC/USDT long 0.0252 @ 78,780.46 · stop 75,629.20 · opened by Claude: "'
    )
    assert len(text) <= ui_text.SUMMARY_MAX and text.endswith('…"')
    assert ui_text.who("llm") == "Claude" and ui_text.who("rule: no LLM") == "the rule policy"
    assert ui_text.decided_by_value("llm") == "claude"
    assert ui_text.decided_by_value("rule: breaker open") == "rule"


def test_current_details_of_an_account_link_its_positions():
    text = ui_text.account_now(
        10_500.0, 7_000.0, 0.33, 0.012, [("acct-e-BTC-1", "BTC/USDT", 0.04)], "llm", 3600, None
    )
    assert "**Equity** 10,500.00" in text and "exposure 33%" in text
    assert "- BTC/USDT 0.04 → `ocw-position-acct-e-BTC-1`" in text
    assert "Claude" in text and "3600 s" in text
