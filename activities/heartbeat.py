"""Heartbeats for activities that may run longer than a second.

A worker that dies mid-activity takes the attempt with it; Temporal only notices when a timeout
fires. With a heartbeat every second and a short heartbeat timeout on the call
(``workflows/activity_api.HEARTBEAT``), a lost attempt is retried within seconds instead of
after the whole start-to-close timeout (a position once went 121 s without a safety check that
way). Outside an activity (an in-process backtest, a unit test) it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity

EVERY_S = 1.0

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@contextlib.asynccontextmanager
async def heartbeating(every_s: float = EVERY_S) -> AsyncIterator[None]:
    """Heartbeat every ``every_s`` while the body runs (the event loop stays free: blocking
    work runs in a thread)."""
    if not activity.in_activity() or activity.info().is_local:
        yield  # a local activity has no heartbeat: it lives and dies with its workflow task
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every_s)

    task = asyncio.create_task(beat(), name="heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def heartbeats(fn: F) -> F:
    """Decorator form of :func:`heartbeating` for an async activity method."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        async with heartbeating():
            return await fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
