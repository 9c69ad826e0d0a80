"""The listener's watch on the trading worker, against the dev server's task queue pollers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.worker import Worker

from workers import worker_watch
from workers.worker_watch import WorkerWatch, last_poll_age_s
from workflows.monitor import MonitorWorkflow

pytestmark = pytest.mark.integration


async def test_poll_age_is_none_without_a_worker_and_fresh_with_one(dev_env) -> None:
    queue = f"watch-{uuid.uuid4().hex[:6]}"
    assert await last_poll_age_s(dev_env.client, queue) is None
    async with Worker(dev_env.client, task_queue=queue, workflows=[MonitorWorkflow]):
        for _ in range(50):
            age = await last_poll_age_s(dev_env.client, queue)
            if age is not None:
                break
            await asyncio.sleep(0.1)
        assert age is not None and age < 10


async def test_gone_and_back_are_told_once_each(dev_env, monkeypatch) -> None:
    told: list[tuple[str, str]] = []

    async def tell(change: str, key: str, detail: dict) -> None:
        told.append((change, key))

    ages: list[float | None] = [5.0, None, None, 200.0, 3.0, 3.0]

    async def fake_age(client, queue):  # noqa: ANN001
        return ages.pop(0)

    monkeypatch.setattr(worker_watch, "last_poll_age_s", fake_age)
    watch = WorkerWatch(dev_env.client, "q", every_s=30, on_change=tell)
    watch.started -= 3600  # past the start-up grace
    states = [await watch.check_once() for _ in range(6)]
    assert states == ["up", "gone", "gone", "gone", "up", "up"]
    assert [c for c, _ in told] == ["worker_gone", "worker_back"]
    gone_key, back_key = (k for _, k in told)
    assert back_key == "worker_back:" + gone_key.split(":")[1]  # the back alert names the outage


async def test_a_worker_starting_beside_the_listener_gets_time(dev_env, monkeypatch) -> None:
    told: list[str] = []

    async def tell(change: str, key: str, detail: dict) -> None:
        told.append(change)

    async def never(client, queue):  # noqa: ANN001
        return None

    monkeypatch.setattr(worker_watch, "last_poll_age_s", never)
    watch = WorkerWatch(dev_env.client, "q", every_s=30, on_change=tell)
    assert await watch.check_once() == "unknown" and told == []
