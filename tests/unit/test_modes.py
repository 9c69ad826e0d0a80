"""Trading modes (issue 11): live is refused without LIVE_TRADING; keys only from the env."""

from __future__ import annotations

import pytest

from trading.config import Settings
from workers.temporal_env import SetupError
from workers.trading_worker import build_activities


def test_live_mode_is_refused_without_live_trading(tmp_path, monkeypatch):
    monkeypatch.delenv("LIVE_TRADING", raising=False)
    monkeypatch.delenv("OCW_LIVE_TRADING", raising=False)
    settings = Settings(_env_file=None, home=tmp_path, mode="live")
    with pytest.raises(SetupError, match="LIVE_TRADING=true"):
        build_activities(settings, client=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["LIVE_TRADING", "OCW_LIVE_TRADING"])
def test_both_live_trading_names_are_read(name, monkeypatch):
    monkeypatch.setenv(name, "true")
    assert Settings(_env_file=None).live_trading


def test_binance_keys_come_from_the_environment_and_never_print(monkeypatch):
    monkeypatch.setenv("BINANCE_API_KEY", "key-from-env-0001")
    monkeypatch.setenv("BINANCE_SECRET_KEY", "secret-from-env-0002")
    settings = Settings(_env_file=None)
    assert settings.binance_api_secret is not None
    assert settings.binance_api_secret.get_secret_value() == "secret-from-env-0002"
    shown = repr(settings) + str(settings.public_dict())
    assert "key-from-env-0001" not in shown and "secret-from-env-0002" not in shown
