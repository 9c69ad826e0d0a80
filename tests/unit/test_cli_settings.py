"""``ocw settings``: every setting with its value and source, secrets masked."""

from __future__ import annotations

from trading.config import Settings
from workers.cli import settings_sources


def test_every_setting_shows_its_value_and_source_and_no_secret(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OCW_ACCOUNT=fromfile\n")
    monkeypatch.setenv("OCW_SYMBOLS", "BTC/USDT,ETH/USDT")
    monkeypatch.setenv("BINANCE_SECRET_KEY", "very-secret-value-123")
    rows = {name: (value, source) for name, value, source in settings_sources(Settings())}
    assert rows["OCW_SYMBOLS"] == ('["BTC/USDT", "ETH/USDT"]', "env OCW_SYMBOLS")
    assert rows["OCW_ACCOUNT"] == ("fromfile", ".env OCW_ACCOUNT")
    assert rows["OCW_MODE"] == ("paper", "default")
    assert rows["OCW_HOME"][0] == ".ocw"
    assert rows["BINANCE_SECRET_KEY"] == ("set (hidden)", "env BINANCE_SECRET_KEY")
    assert "LIVE_TRADING" in rows  # read under its documented name
    assert all("very-secret-value-123" not in v for v, _ in rows.values())
    assert len(rows) == len(Settings.model_fields)


def test_without_claude_the_default_stand_in_holds_cash(monkeypatch, tmp_path):
    """No policy passed the walk-forward's corrections (docs/backtests.md), so the engine's
    default decider without Claude is cash; the rule policy trades only when asked for."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OCW_POLICY", raising=False)  # the suite itself runs the rule policy
    rows = {name: (value, source) for name, value, source in settings_sources(Settings())}
    assert rows["OCW_POLICY"] == ("cash", "default")
    monkeypatch.setenv("OCW_POLICY", "rule")
    assert Settings().policy == "rule"


def test_a_backtest_applies_the_rule_plans_only_where_the_engine_would(monkeypatch, tmp_path):
    """`ocw backtest` runs what the live engine is configured to do: the rule policy's exit
    plans need OCW_RULE_EXIT_PLANS and OCW_EXIT_PLANS both, as in workers/wiring.py."""
    from workers.backtest_cli import settings_defaults

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCW_RULE_EXIT_PLANS", "true")
    assert settings_defaults()["rule_exit_plans"] is True
    monkeypatch.setenv("OCW_EXIT_PLANS", "false")
    assert settings_defaults()["rule_exit_plans"] is False
    monkeypatch.delenv("OCW_RULE_EXIT_PLANS")
    monkeypatch.delenv("OCW_EXIT_PLANS")
    assert settings_defaults()["rule_exit_plans"] is False


def test_an_llm_backtest_applies_claudes_plans_whenever_exit_plans_are_on(monkeypatch, tmp_path):
    """Live, Claude's plans act under OCW_EXIT_PLANS alone; the rule policy's need both."""
    from workers.backtest_cli import settings_defaults

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCW_EXIT_PLANS", "true")
    monkeypatch.setenv("OCW_RULE_EXIT_PLANS", "false")
    assert settings_defaults(llm=True)["rule_exit_plans"] is True
    assert settings_defaults()["rule_exit_plans"] is False
    monkeypatch.setenv("OCW_EXIT_PLANS", "false")
    assert settings_defaults(llm=True)["rule_exit_plans"] is False
