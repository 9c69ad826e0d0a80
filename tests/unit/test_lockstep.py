"""Lockstep replay holds: what they wait for, in which order, and that they never hang."""

from __future__ import annotations

import asyncio
import logging

from signals.lockstep import Lockstep
from signals.wake_dispatcher import WakeDispatcher

BTC_1H = ("BTC/USDT", "1h")
ETH_1H = ("ETH/USDT", "1h")
CLOSE = 1_000_000


def dispatcher(workflow_id: str) -> WakeDispatcher:
    return WakeDispatcher(client=None, workflow_id=workflow_id)  # type: ignore[arg-type]


class Accounts:
    """Answers ``account_idle`` from a set the test changes; counts the questions."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.asked: list[str] = []
        self.failing = False

    async def idle(self, workflow_id: str) -> bool:
        self.asked.append(workflow_id)
        if self.failing:
            raise RuntimeError("temporal away")
        return workflow_id not in self.busy


async def test_a_hold_without_a_wake_returns_once_the_frames_are_read_and_asks_no_account():
    seen = {BTC_1H: CLOSE - 1}
    accounts = Accounts()
    lock = Lockstep(seen, [dispatcher("a")], accounts.idle, poll_s=0.001)
    hold = asyncio.create_task(lock.hold(CLOSE, frozenset({BTC_1H})))
    await asyncio.sleep(0.02)
    assert not hold.done()  # the listener has not read the close yet
    seen[BTC_1H] = CLOSE
    await asyncio.wait_for(hold, 1)
    assert accounts.asked == [] and lock.stats.waits == 0 and lock.stats.holds == 1


async def test_a_hold_waits_for_the_wake_and_then_for_each_woken_account_only():
    seen = {BTC_1H: CLOSE, ETH_1H: CLOSE}
    a, b = dispatcher("a"), dispatcher("b")
    accounts = Accounts()
    lock = Lockstep(seen, [a, b], accounts.idle, poll_s=0.001)
    a.push("candle_close", "BTC/USDT", CLOSE)  # queued, not yet sent
    accounts.busy.add("a")
    hold = asyncio.create_task(lock.hold(CLOSE, frozenset({BTC_1H, ETH_1H})))
    await asyncio.sleep(0.02)
    assert not hold.done() and accounts.asked == []  # the wake is still on its way
    a.queue.get_nowait()
    a.sent += 1  # delivered
    await asyncio.sleep(0.02)
    assert not hold.done() and set(accounts.asked) == {"a"}  # b was not woken
    accounts.busy.clear()
    await asyncio.wait_for(hold, 1)
    assert lock.stats.waits == 1 and lock.stats.timeouts == 0
    # the next hold counts wakes from here: nothing new was sent, no account is asked
    accounts.asked.clear()
    await asyncio.wait_for(lock.hold(CLOSE, frozenset({BTC_1H})), 1)
    assert accounts.asked == []


async def test_a_hold_gives_up_after_its_timeout_with_a_reason(caplog):
    seen: dict[tuple[str, str], int] = {BTC_1H: CLOSE}
    a = dispatcher("acct")
    accounts = Accounts()
    accounts.failing = True  # an unreadable account counts as not idle, never as an error
    lock = Lockstep(seen, [a], accounts.idle, timeout_s=0.05, poll_s=0.001)
    a.sent = 1
    with caplog.at_level(logging.WARNING, logger="signals.lockstep"):
        await asyncio.wait_for(lock.hold(CLOSE, frozenset({BTC_1H})), 1)
    assert lock.stats.timeouts == 1 and accounts.asked
    assert "acct to finish its cycle" in caplog.text and "the replay goes on" in caplog.text
    # a stream the listener never reads cannot freeze the replay either
    await asyncio.wait_for(lock.hold(CLOSE, frozenset({ETH_1H})), 1)
    assert lock.stats.timeouts == 2 and "read the frames" in caplog.text
