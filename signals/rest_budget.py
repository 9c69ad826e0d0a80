"""One REST weight budget per process, fed by Binance's own used-weight headers.

Binance counts request weight per IP and calendar minute (``x-mbx-used-weight-1m``) and answers
429 when a limit is crossed and 418 (an IP ban of minutes to days) when 429s are ignored. Every
REST call of the process asks this budget first: it throttles before the limit, backs off after
a 429 and refuses every call during a 418 ban without touching the network. The public streams
do not go through it and keep running.

Weight is tracked per pool (``spot`` and ``futures`` are separate limits at Binance); a 429 or a
418 stops all pools, as SPEC §9 asks.

Binance bans an IP, not a process: with ``shared_path`` (``$OCW_HOME/rest_pause.json``) a ban or
back-off seen by one process (the listener, the trading worker, a CLI) is written there and
honoured by every other process of the same home before its next call. Weight counts stay per
process (the exchange's used-weight header corrects them on every answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHT_HEADER = "x-mbx-used-weight-1m"
DEFAULT_BAN_S = 120.0  # Binance bans for 2 min at least; used when a 418 carries no Retry-After
MINUTE_MS = 60_000


class RestUnavailable(RuntimeError):
    """REST is paused by the budget; ``until_ms`` (epoch ms) says until when."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message)
        self.until_ms = until_ms


class RestBanned(RestUnavailable):
    """Binance answered 418 (IP ban): no REST call leaves the process until the ban ends."""


class RestRateLimited(RestUnavailable):
    """Binance answered 429: REST backs off until its Retry-After."""


@dataclass
class BudgetStats:
    calls: int = 0
    throttled: int = 0  # calls that waited for the next minute
    refused: int = 0  # calls refused during a ban / back-off
    rate_limited: int = 0  # 429 answers seen
    bans: int = 0  # 418 answers seen
    used_weight: dict[str, int] = field(default_factory=dict)  # latest header per pool


class RestBudget:
    """Request weight of one process against Binance's 1-minute limits.

    ``limits`` maps a pool name to its weight per minute (6000 spot, 2400 USDⓈ-M futures by
    default); calls wait for the next minute once ``throttle_fraction`` of a limit is used.
    A 429 stops REST until its Retry-After: calls wait if that is at most ``max_wait_s`` away,
    otherwise they raise ``RestRateLimited``. A 418 makes every call raise ``RestBanned``.
    """

    def __init__(
        self,
        limits: Mapping[str, int] | None = None,
        throttle_fraction: float = 0.9,
        max_wait_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        shared_path: Path | None = None,
    ) -> None:
        self.limits = dict(limits or {"spot": 6000, "futures": 2400})
        if any(v <= 0 for v in self.limits.values()):
            raise ValueError(f"weight limits must be > 0, got {self.limits}")
        if not 0 < throttle_fraction <= 1:
            raise ValueError("throttle_fraction must be in (0, 1]")
        self.throttle_fraction = throttle_fraction
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._used: dict[str, tuple[int, int]] = {}  # pool -> (minute index, weight used)
        self.banned_until_ms = 0
        self.backoff_until_ms = 0
        self.stats = BudgetStats()
        self.shared_path = shared_path
        self._shared_mtime_ns = -1

    # ------------------------------------------------------------ state

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def used(self, pool: str) -> int:
        """Weight used in the current minute of a pool, as far as this process knows."""
        minute, weight = self._used.get(pool, (-1, 0))
        return weight if minute == self.now_ms() // MINUTE_MS else 0

    def paused_until_ms(self) -> int:
        """End of the current ban or back-off (0 when REST is open)."""
        until = max(self.banned_until_ms, self.backoff_until_ms)
        return until if until > self.now_ms() else 0

    def status(self) -> dict[str, object]:
        now = self.now_ms()
        return {
            "banned": self.banned_until_ms > now,
            "banned_until_ms": self.banned_until_ms if self.banned_until_ms > now else None,
            "backoff_until_ms": self.backoff_until_ms if self.backoff_until_ms > now else None,
            "used_weight": {pool: self.used(pool) for pool in self.limits},
            "calls": self.stats.calls,
            "throttled": self.stats.throttled,
            "refused": self.stats.refused,
            "rate_limited": self.stats.rate_limited,
            "bans": self.stats.bans,
        }

    # ------------------------------------------------------------ before a call

    def _read_shared(self) -> None:
        """Take in a pause another process of this home wrote (only when the file changed)."""
        if self.shared_path is None:
            return
        try:
            mtime = self.shared_path.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._shared_mtime_ns:
            return
        self._shared_mtime_ns = mtime
        try:
            data = json.loads(self.shared_path.read_text())
            banned, backoff = (
                int(data.get("banned_until_ms", 0)),
                int(data.get("backoff_until_ms", 0)),
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return  # a torn or foreign file: ignore it, the next write fixes it
        self.banned_until_ms = max(self.banned_until_ms, banned)
        self.backoff_until_ms = max(self.backoff_until_ms, backoff)

    def _write_shared(self) -> None:
        if self.shared_path is None:
            return
        data = {"banned_until_ms": self.banned_until_ms, "backoff_until_ms": self.backoff_until_ms}
        tmp = self.shared_path.with_name(f".{self.shared_path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            self.shared_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.shared_path)

    def check(self) -> None:
        """Raise if REST is paused right now (a ban, or a back-off too long to wait for)."""
        self._read_shared()
        now = self.now_ms()
        if self.banned_until_ms > now:
            self.stats.refused += 1
            raise RestBanned(
                f"Binance REST banned (418) for {(self.banned_until_ms - now) / 1000:.0f} s more",
                self.banned_until_ms,
            )
        if self.backoff_until_ms - now > self.max_wait_s * 1000:
            self.stats.refused += 1
            raise RestRateLimited(
                f"Binance REST backing off (429) for {(self.backoff_until_ms - now) / 1000:.0f} s",
                self.backoff_until_ms,
            )

    async def acquire(self, pool: str, weight: int) -> None:
        """Wait until a call of ``weight`` fits, then count it; raise while REST is paused."""
        if pool not in self.limits:
            raise ValueError(f"unknown weight pool {pool!r}; known: {sorted(self.limits)}")
        while True:
            self.check()
            now = self.now_ms()
            if self.backoff_until_ms > now:
                await self._sleep((self.backoff_until_ms - now) / 1000)
                continue
            ceiling = self.limits[pool] * self.throttle_fraction
            if self.used(pool) + weight > ceiling and self.used(pool) > 0:
                wait_ms = MINUTE_MS - now % MINUTE_MS + 50
                self.stats.throttled += 1
                log.info(
                    "REST %s weight %d of %d used: waiting %.1f s for the next minute",
                    pool,
                    self.used(pool),
                    self.limits[pool],
                    wait_ms / 1000,
                )
                await self._sleep(wait_ms / 1000)
                continue
            break
        minute = self.now_ms() // MINUTE_MS
        self._used[pool] = (minute, self.used(pool) + weight)
        self.stats.calls += 1

    # ------------------------------------------------------------ after a call

    def observe(self, pool: str, status: int, headers: Mapping[str, str]) -> None:
        """Take in one response: its used-weight header and, for 429 / 418, its Retry-After."""
        lowered = {k.lower(): v for k, v in headers.items()}
        raw = lowered.get(WEIGHT_HEADER)
        if raw is not None:
            try:
                used = int(raw)
            except ValueError:
                log.warning("ignoring non-integer %s header %r", WEIGHT_HEADER, raw)
            else:
                minute = self.now_ms() // MINUTE_MS
                self._used[pool] = (minute, used)
                self.stats.used_weight[pool] = used
        if status not in (418, 429):
            return
        now = self.now_ms()
        retry_after = _retry_after_s(lowered.get("retry-after"))
        if status == 418:
            seconds = retry_after if retry_after is not None else DEFAULT_BAN_S
            self.banned_until_ms = max(self.banned_until_ms, now + int(seconds * 1000))
            self.stats.bans += 1
            self._write_shared()
            log.error("Binance REST IP ban (418): all REST stopped for %.0f s", seconds)
        else:
            if retry_after is None:  # the weight window resets at the next minute
                retry_after = (MINUTE_MS - now % MINUTE_MS) / 1000
            self.backoff_until_ms = max(self.backoff_until_ms, now + int(retry_after * 1000))
            self.stats.rate_limited += 1
            self._write_shared()
            log.warning("Binance REST rate limited (429): backing off %.0f s", retry_after)


def _retry_after_s(raw: str | None) -> float | None:
    """Retry-After in seconds (Binance sends whole seconds); None when absent or unreadable."""
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
