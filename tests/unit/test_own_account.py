"""The trading worker owns its account: a set-up that fails on an exchange or server error is
logged with its reason and tried again, never dropped in silence (issue 15: a bad exchange key
used to leave an arena agent without its account and without a log line)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

import workers.trading_worker as tw
from workers.temporal_env import SetupError


@pytest.fixture
def rig(monkeypatch):
    calls = {"ensure": 0, "configured": 0}
    outcomes: list[object] = []

    async def ensure_account(client, settings, broker, exchange):
        calls["ensure"] += 1
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def ensure_monitor(client, settings):
        return None

    async def configure_when_ready(client, settings, stop):
        calls["configured"] += 1

    monkeypatch.setattr(tw, "ensure_account", ensure_account)
    monkeypatch.setattr(tw, "ensure_monitor", ensure_monitor)
    monkeypatch.setattr(tw, "configure_when_ready", configure_when_ready)
    monkeypatch.setattr(tw, "OWN_RETRY_FIRST_S", 0.01)
    return calls, outcomes


async def test_a_failed_set_up_is_logged_and_retried_until_it_works(rig, caplog):
    calls, outcomes = rig
    created = SimpleNamespace(created=True, workflow_id="ocw-decision-a")
    outcomes += [RuntimeError("balances: AuthenticationError: -2014"), OSError("down"), created]
    settings = SimpleNamespace(account="a")
    with caplog.at_level(logging.ERROR, logger="workers.trading_worker"):
        await asyncio.wait_for(tw.own_account(None, settings, asyncio.Event()), 5)
    assert calls == {"ensure": 3, "configured": 1}
    assert "account a not set up (attempt 1): RuntimeError: balances: Authentic" in caplog.text
    assert "(attempt 2): OSError: down" in caplog.text


async def test_a_setup_error_is_final_and_stop_ends_the_retries(rig, caplog):
    calls, outcomes = rig
    outcomes.append(SetupError("account a is closed"))
    with caplog.at_level(logging.ERROR, logger="workers.trading_worker"):
        await tw.own_account(None, SimpleNamespace(account="a"), asyncio.Event())
    assert calls == {"ensure": 1, "configured": 0} and "account a is closed" in caplog.text
    stop = asyncio.Event()
    outcomes.append(RuntimeError("exchange down"))
    stop.set()
    await asyncio.wait_for(tw.own_account(None, SimpleNamespace(account="a"), stop), 5)
    assert calls["ensure"] == 2 and calls["configured"] == 0  # stopped: no second try
