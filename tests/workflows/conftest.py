"""Fixtures of the workflow tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.servers.fake_anthropic import FakeAnthropic


@pytest_asyncio.fixture
async def anthropic_server() -> AsyncIterator[FakeAnthropic]:
    """The local Messages API server the real anthropic client talks to."""
    async with FakeAnthropic() as server:
        yield server
