"""Request weight per minute, 429 and the 418 ban, per pool (spot and futures count apart).

Binance adds each request's weight to a one-minute window per IP and reports the total in
``x-mbx-used-weight-1m``. Past the limit it answers 429 / -1003 with ``Retry-After`` (seconds to
the window's end); a client that keeps sending during that wait collects violations, and after
``ban_after`` of them gets 418 / -1003 and a ban of ``ban_s`` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from signals.exchange_sim.errors import BinanceError

SPOT_LIMIT = 6000
FUTURES_LIMIT = 2400


def pool_of(path: str) -> str:
    return "futures" if path.startswith(("/fapi", "/futures")) else "spot"


# (method, path) -> (weight with symbol, weight without symbol); close to Binance's tables.
_WEIGHTS: dict[tuple[str, str], tuple[int, int]] = {
    ("GET", "/api/v3/exchangeInfo"): (20, 20),
    ("GET", "/api/v3/ticker/price"): (2, 4),
    ("GET", "/api/v3/ticker/24hr"): (2, 80),
    ("GET", "/api/v3/ticker/bookTicker"): (2, 4),
    ("GET", "/api/v3/order"): (4, 4),
    ("GET", "/api/v3/openOrders"): (6, 80),
    ("DELETE", "/api/v3/openOrders"): (1, 1),
    ("GET", "/api/v3/allOrders"): (20, 20),
    ("GET", "/api/v3/myTrades"): (20, 20),
    ("GET", "/api/v3/account"): (20, 20),
    ("GET", "/fapi/v1/openOrders"): (1, 40),
    ("GET", "/fapi/v1/allOrders"): (5, 5),
    ("GET", "/fapi/v1/userTrades"): (5, 5),
    ("GET", "/fapi/v2/account"): (5, 5),
    ("GET", "/fapi/v3/account"): (5, 5),
    ("GET", "/fapi/v2/balance"): (5, 5),
    ("GET", "/fapi/v3/balance"): (5, 5),
    ("GET", "/fapi/v2/positionRisk"): (5, 5),
    ("GET", "/fapi/v3/positionRisk"): (5, 5),
    ("GET", "/fapi/v1/income"): (30, 30),
    ("GET", "/fapi/v1/openAlgoOrders"): (1, 40),
    ("GET", "/fapi/v1/allAlgoOrders"): (5, 5),
    ("GET", "/fapi/v1/ticker/24hr"): (1, 40),
    ("GET", "/fapi/v1/ticker/price"): (1, 2),
    ("GET", "/fapi/v2/ticker/price"): (1, 2),
    ("GET", "/fapi/v1/premiumIndex"): (1, 10),
}


def weight_of(method: str, path: str, params: Mapping[str, str]) -> int:
    pair = _WEIGHTS.get((method.upper(), path))
    if pair is None:
        return 1
    return pair[0] if params.get("symbol") else pair[1]


@dataclass
class _Window:
    minute: int = -1
    used: int = 0
    throttled_until_s: float = 0.0  # end of the Retry-After of the last 429
    violations: int = 0
    banned_until_s: float = 0.0


class RequestBudget:
    def __init__(
        self,
        clock_s: Callable[[], float],
        limits: Mapping[str, int] | None = None,
        ban_after: int = 3,
        ban_s: int = 120,
    ) -> None:
        self.clock_s = clock_s
        self.limits = dict(limits or {"spot": SPOT_LIMIT, "futures": FUTURES_LIMIT})
        self.ban_after = ban_after
        self.ban_s = ban_s
        self._pools: dict[str, _Window] = {}

    def reset(self) -> None:
        self._pools.clear()

    def _window(self, pool: str) -> _Window:
        w = self._pools.setdefault(pool, _Window())
        minute = int(self.clock_s() // 60)
        if w.minute != minute:
            w.minute, w.used = minute, 0
        return w

    def used(self, pool: str) -> int:
        return self._window(pool).used

    def ban(self, pool: str, seconds: int) -> None:
        self._window(pool).banned_until_s = self.clock_s() + seconds

    def lift_ban(self, pool: str | None = None) -> None:
        for name, w in self._pools.items():
            if pool is None or name == pool:
                w.banned_until_s = 0.0
                w.violations = 0

    def banned_error(self, pool: str) -> BinanceError | None:
        w = self._window(pool)
        now = self.clock_s()
        if w.banned_until_s > now:
            until_ms = int(w.banned_until_s * 1000)
            return BinanceError(
                -1003,
                f"Way too much request weight used; IP banned until {until_ms}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
                status=418,
                retry_after=max(1, math.ceil(w.banned_until_s - now)),
            )
        return None

    def charge(self, pool: str, weight: int) -> BinanceError | None:
        """Count one request; the 418 or 429 it earns, if any."""
        banned = self.banned_error(pool)
        w = self._window(pool)
        w.used += weight
        if banned is not None:
            return banned
        now = self.clock_s()
        limit = self.limits.get(pool, SPOT_LIMIT)
        if w.used <= limit:
            return None
        if now < w.throttled_until_s:
            w.violations += 1
            if w.violations >= self.ban_after:
                self.ban(pool, self.ban_s)
                return self.banned_error(pool)
        retry = max(1, math.ceil((w.minute + 1) * 60 - now))
        w.throttled_until_s = now + retry
        return BinanceError(
            -1003,
            f"Too many requests; current limit of IP(127.0.0.1) request weight per 1 minute is "
            f"{limit}. Please use WebSocket Streams for live updates to avoid polling the API.",
            status=429,
            retry_after=retry,
        )
