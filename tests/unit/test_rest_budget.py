"""RestBudget: throttles before Binance's 1-minute limit, backs off on 429, refuses during a 418."""

from __future__ import annotations

import pytest

from signals.rest_budget import RestBanned, RestBudget, RestRateLimited


class FakeTime:
    """A clock that only moves when the budget sleeps (or the test says so)."""

    def __init__(self, start_s: float = 1_800_000_000.0) -> None:
        self.now = start_s
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget(t: FakeTime, **kwargs) -> RestBudget:
    return RestBudget({"spot": 100, "futures": 50}, clock=t.clock, sleep=t.sleep, **kwargs)


async def test_counts_weight_and_reads_the_used_weight_header() -> None:
    t = FakeTime()
    b = budget(t)
    await b.acquire("spot", 10)
    await b.acquire("spot", 5)
    assert b.used("spot") == 15 and b.used("futures") == 0
    b.observe("spot", 200, {"X-MBX-USED-WEIGHT-1M": "42"})  # the server's count wins
    assert b.used("spot") == 42
    b.observe("spot", 200, {"x-mbx-used-weight-1m": "not a number"})
    assert b.used("spot") == 42
    t.now += 60  # a new minute: the window starts over
    assert b.used("spot") == 0
    assert t.slept == []


async def test_throttles_until_the_next_minute_before_the_limit() -> None:
    t = FakeTime(1_800_000_000.0 + 30)  # half way through a minute
    b = budget(t, throttle_fraction=0.9)
    b.observe("spot", 200, {"x-mbx-used-weight-1m": "85"})
    await b.acquire("spot", 4)  # 89 <= 90: goes
    assert t.slept == []
    await b.acquire("spot", 4)  # 93 > 90: waits for the next minute
    assert len(t.slept) == 1 and 30 < t.slept[0] <= 30.1
    assert b.used("spot") == 4 and b.stats.throttled == 1
    await b.acquire("futures", 40)  # other pool, own limit
    assert len(t.slept) == 1


async def test_429_backs_off_until_retry_after() -> None:
    t = FakeTime()
    b = budget(t, max_wait_s=10)
    b.observe("spot", 429, {"Retry-After": "3"})
    assert b.paused_until_ms() == b.now_ms() + 3000
    await b.acquire("futures", 1)  # short back-off: waited, then allowed
    assert t.slept == [3.0]
    assert b.stats.rate_limited == 1
    b.observe("spot", 429, {"Retry-After": "120"})  # too long to wait for: refused
    with pytest.raises(RestRateLimited) as err:
        await b.acquire("spot", 1)
    assert err.value.until_ms == b.now_ms() + 120_000
    assert b.stats.refused == 1


async def test_429_without_retry_after_waits_for_the_next_minute() -> None:
    t = FakeTime(1_800_000_000.0 + 50)
    b = budget(t)
    b.observe("spot", 429, {})
    assert b.paused_until_ms() - b.now_ms() == 10_000


async def test_418_refuses_every_call_until_its_end() -> None:
    t = FakeTime()
    b = budget(t)
    b.observe("spot", 418, {"Retry-After": "300"})
    for pool in ("spot", "futures"):
        with pytest.raises(RestBanned, match=r"banned \(418\) for 300 s"):
            await b.acquire(pool, 1)
    assert t.slept == []  # never waits out a ban inside a call
    t.now += 299
    with pytest.raises(RestBanned):
        b.check()
    t.now += 1.001
    await b.acquire("spot", 1)
    assert b.stats.bans == 1 and b.stats.refused == 3
    assert b.status()["banned"] is False


async def test_418_without_retry_after_bans_for_the_default() -> None:
    t = FakeTime()
    b = budget(t)
    b.observe("futures", 418, {"Retry-After": "garbage"})
    assert b.paused_until_ms() - b.now_ms() == 120_000


async def test_rejects_unknown_pools_and_bad_limits() -> None:
    t = FakeTime()
    with pytest.raises(ValueError, match="unknown weight pool"):
        await budget(t).acquire("options", 1)
    with pytest.raises(ValueError):
        RestBudget({"spot": 0})


async def test_a_ban_seen_by_one_process_stops_the_others_of_the_same_home(tmp_path) -> None:
    t = FakeTime()
    shared = tmp_path / "rest_pause.json"
    listener = budget(t, shared_path=shared)
    worker = budget(t, shared_path=shared)
    await worker.acquire("spot", 1)
    listener.observe("spot", 418, {"Retry-After": "120"})
    with pytest.raises(RestBanned):
        await worker.acquire("spot", 1)  # read from the file: no request leaves
    assert worker.stats.refused == 1
    t.now += 121
    await worker.acquire("spot", 1)  # the ban is over for everyone
    shared.write_text("{not json")  # a torn file never breaks a call
    await worker.acquire("futures", 1)
    lone = budget(t)  # without a shared path, each process keeps its own
    await lone.acquire("spot", 1)
