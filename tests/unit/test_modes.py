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


def test_testnet_needs_the_keys_and_builds_the_exchange_broker(tmp_path, monkeypatch):
    from activities.exchange_broker import ExchangeBroker
    from workers.brokers import build_broker

    for name in ("BINANCE_API_KEY", "BINANCE_SECRET_KEY", "OCW_BINANCE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None, home=tmp_path, mode="testnet")
    with pytest.raises(SetupError, match="BINANCE_API_KEY and BINANCE_SECRET_KEY"):
        build_activities(settings, client=None)  # type: ignore[arg-type]
    monkeypatch.setenv("BINANCE_API_KEY", "k" * 64)
    monkeypatch.setenv("BINANCE_SECRET_KEY", "s" * 64)
    settings = Settings(
        _env_file=None,
        home=tmp_path,
        mode="testnet",
        market="futures",
        binance_futures_url="http://127.0.0.1:9",
        futures_leverage=2,
    )
    broker = build_broker(settings)
    assert isinstance(broker, ExchangeBroker) and broker.kind == "binance-futures"
    assert broker.exchange.urls["api"]["fapiPrivate"] == "http://127.0.0.1:9/fapi/v1"
    assert broker.config.leverage == 2 and broker.config.margin_mode == "isolated"
    demo = build_broker(settings.model_copy(update={"binance_futures_url": None}))
    assert demo.exchange.urls["api"]["fapiPrivate"].startswith("https://demo-fapi.binance.com")
    live = Settings(_env_file=None, home=tmp_path, mode="live", live_trading=True)
    assert build_broker(live).exchange.urls["api"]["private"].startswith("https://api.binance.com")


def test_the_trading_worker_is_tuned_from_the_settings(monkeypatch):
    from datetime import timedelta

    from workers.trading_worker import worker_tuning

    monkeypatch.setenv("OCW_WORKER_MAX_CACHED_WORKFLOWS", "4000")
    monkeypatch.setenv("OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "50")
    monkeypatch.setenv("OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASK_POLLS", "20")
    options = worker_tuning(Settings(_env_file=None))
    assert options["max_cached_workflows"] == 4000
    assert options["max_concurrent_workflow_tasks"] == 50
    assert options["max_concurrent_workflow_task_polls"] == 20
    assert options["max_concurrent_activities"] == 20
    assert options["sticky_queue_schedule_to_start_timeout"] == timedelta(seconds=4)
    monkeypatch.delenv("OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS")
    monkeypatch.delenv("OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASK_POLLS")
    tuned = worker_tuning(Settings(_env_file=None))
    assert "max_concurrent_workflow_tasks" not in tuned
    assert "max_concurrent_workflow_task_polls" not in tuned
