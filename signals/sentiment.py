"""Optional sentiment feeds for the snapshot: Fear & Greed, stablecoin supply, trending coins,
ETF flows.

Each feed is fetched on its own cadence and cached; a feed that is unreachable, slow, answers
an error or something unparsable is simply reported missing (with the reason) and retried
later. Nothing here raises into the listener. Third-party text (coin names, labels) is
untrusted: it reaches an LLM prompt, so it is reduced to a small character set and length.

The module imports aiohttp only inside the fetch, so ``SentimentReading`` stays importable
from pure code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from pydantic import Field

from trading.models import Model

if TYPE_CHECKING:
    import aiohttp

    from trading.config import Settings

log = logging.getLogger(__name__)

FEEDS = ("fear_greed", "stablecoins", "trending", "etf_flows")
MAX_BODY_BYTES = 8 * 2**20
TRENDING_MAX = 15
_SYMBOL_UNSAFE = re.compile(r"[^A-Z0-9]")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9 .\-_]")


class FeedError(ValueError):
    """Why a feed has no usable value; the text goes into ``missing``."""


# ---------------------------------------------------------------- models


class TrendingCoin(Model):
    symbol: str
    name: str
    market_cap_rank: int | None = None


class SentimentReading(Model):
    """What the snapshot gets; ``missing`` names every feed without a usable value and why."""

    as_of_ms: int
    fear_greed: int | None = Field(default=None, ge=0, le=100)
    fear_greed_label: str | None = None
    fear_greed_time_ms: int | None = None
    stablecoin_supply_usd: float | None = None
    stablecoin_change_1d: float | None = None  # fraction
    stablecoin_change_7d: float | None = None  # fraction
    trending: list[TrendingCoin] = Field(default_factory=list)
    etf_net_flow_usd: float | None = None  # latest day
    etf_flow_date: str | None = None
    etf_net_flow_5d_usd: float | None = None  # sum of the last five days reported
    updated_ms: dict[str, int] = Field(default_factory=dict)  # feed -> when fetched (wall)
    missing: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- parsers (pure)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise FeedError(f"{what} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FeedError(f"{what} is not a number") from None
    if not math.isfinite(number):
        raise FeedError(f"{what} is not finite")
    return number


def clean_symbol(text: Any, limit: int = 12) -> str:
    return _SYMBOL_UNSAFE.sub("", str(text).upper())[:limit] if isinstance(text, str) else ""


def clean_name(text: Any, limit: int = 40) -> str:
    if not isinstance(text, str):
        return ""
    return " ".join(_NAME_UNSAFE.sub("", text).split())[:limit].strip()


def parse_fear_greed(obj: Any) -> dict[str, Any]:
    """alternative.me ``/fng/``: ``{"data": [{"value": "40", "value_classification": "Fear",
    "timestamp": "1551157200"}], ...}``."""
    try:
        entry = obj["data"][0]
    except (KeyError, IndexError, TypeError):
        raise FeedError("no data[0] in the answer") from None
    if not isinstance(entry, dict):
        raise FeedError("data[0] is not an object")
    value = _finite(entry.get("value"), "value")
    if not 0 <= value <= 100 or value != int(value):
        raise FeedError(f"value {value:g} outside 0..100")
    out: dict[str, Any] = {"fear_greed": int(value)}
    label = clean_name(entry.get("value_classification"), 20)
    out["fear_greed_label"] = label or None
    stamp = entry.get("timestamp")
    if stamp is not None:
        seconds = _finite(stamp, "timestamp")
        out["fear_greed_time_ms"] = int(seconds * 1000) if seconds > 0 else None
    return out


def _pegged_usd(asset: dict[str, Any], key: str) -> float | None:
    block = asset.get(key)
    if not isinstance(block, dict) or "peggedUSD" not in block:
        return None
    try:
        value = _finite(block["peggedUSD"], key)
    except FeedError:
        return None
    return value if value >= 0 else None


def parse_stablecoins(obj: Any) -> dict[str, Any]:
    """DefiLlama ``/stablecoins``: ``{"peggedAssets": [{"pegType": "peggedUSD", "circulating":
    {"peggedUSD": n}, "circulatingPrevDay": {...}, "circulatingPrevWeek": {...}}, ...]}``;
    USD-pegged supply summed over assets, changes over assets that report both values."""
    assets = obj.get("peggedAssets") if isinstance(obj, dict) else None
    if not isinstance(assets, list):
        raise FeedError("no peggedAssets list in the answer")
    total = 0.0
    now_1d = prev_1d = now_7d = prev_7d = 0.0
    counted = 0
    for asset in assets:
        if not isinstance(asset, dict) or asset.get("pegType") != "peggedUSD":
            continue
        current = _pegged_usd(asset, "circulating")
        if current is None:
            continue
        counted += 1
        total += current
        day = _pegged_usd(asset, "circulatingPrevDay")
        if day is not None:
            now_1d += current
            prev_1d += day
        week = _pegged_usd(asset, "circulatingPrevWeek")
        if week is not None:
            now_7d += current
            prev_7d += week
    if counted == 0 or total <= 0:
        raise FeedError("no USD-pegged asset with a circulating supply")
    return {
        "stablecoin_supply_usd": total,
        "stablecoin_change_1d": now_1d / prev_1d - 1.0 if prev_1d > 0 else None,
        "stablecoin_change_7d": now_7d / prev_7d - 1.0 if prev_7d > 0 else None,
    }


def parse_trending(obj: Any) -> dict[str, Any]:
    """CoinGecko ``/search/trending``: ``{"coins": [{"item": {"symbol", "name",
    "market_cap_rank"}}]}``; names are sanitised, at most ``TRENDING_MAX`` kept."""
    coins = obj.get("coins") if isinstance(obj, dict) else None
    if not isinstance(coins, list):
        raise FeedError("no coins list in the answer")
    out: list[TrendingCoin] = []
    for entry in coins:
        item = entry.get("item") if isinstance(entry, dict) else None
        if not isinstance(item, dict):
            continue
        symbol = clean_symbol(item.get("symbol"))
        name = clean_name(item.get("name"))
        if not symbol or not name:
            continue
        rank = item.get("market_cap_rank")
        if type(rank) is not int or not 0 < rank < 100_000:
            rank = None
        out.append(TrendingCoin(symbol=symbol, name=name, market_cap_rank=rank))
        if len(out) >= TRENDING_MAX:
            break
    if not out and coins:
        raise FeedError("no usable coin in the answer")
    return {"trending": out}


def parse_etf_flows(obj: Any) -> dict[str, Any]:
    """Daily net flows of the US spot bitcoin ETFs, the format this project defines (no free
    official API exists): ``{"flows": [{"date": "2025-06-02", "net_flow_usd": -1.2e8}, ...]}``
    or the bare list. Latest day and the sum of the last five days reported."""
    rows = obj.get("flows") if isinstance(obj, dict) else obj
    if not isinstance(rows, list):
        raise FeedError("no flows list in the answer")
    by_day: dict[str, float] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        day = row.get("date")
        if not isinstance(day, str) or len(day) != 10:
            continue
        try:
            date.fromisoformat(day)
        except ValueError:
            continue
        try:
            by_day[day] = _finite(row.get("net_flow_usd"), "net_flow_usd")
        except FeedError:
            continue
    if not by_day:
        raise FeedError("no dated flow in the answer")
    days = sorted(by_day)
    return {
        "etf_flow_date": days[-1],
        "etf_net_flow_usd": by_day[days[-1]],
        "etf_net_flow_5d_usd": math.fsum(by_day[d] for d in days[-5:]),
    }


PARSERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "fear_greed": parse_fear_greed,
    "stablecoins": parse_stablecoins,
    "trending": parse_trending,
    "etf_flows": parse_etf_flows,
}


# ---------------------------------------------------------------- feeds


@dataclass
class FeedSource:
    name: str
    url: str
    every_s: float


@dataclass
class _FeedState:
    source: FeedSource
    values: dict[str, Any] = field(default_factory=dict)
    fetched_ms: int | None = None
    error: str = ""
    ok: int = 0
    failures: int = 0
    streak: int = 0  # consecutive failures, for the retry backoff
    next_due: float = 0.0


class SentimentFeeds:
    """Fetches the configured feeds on their cadences; ``snapshot()`` reads the cache."""

    def __init__(
        self,
        sources: list[FeedSource],
        *,
        timeout_s: float = 10.0,
        stale_after: float = 3.0,
        retry_s: float = 60.0,
        not_configured: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        for source in sources:
            if source.name not in PARSERS:
                raise ValueError(f"unknown sentiment feed {source.name!r}; known: {FEEDS}")
            if source.every_s <= 0:
                raise ValueError(f"{source.name}: cadence must be > 0")
        self.timeout_s = timeout_s
        self.stale_after = stale_after
        self.retry_s = retry_s
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self._feeds = {s.name: _FeedState(s) for s in sources}
        self._absent = dict(not_configured or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> SentimentFeeds:
        if not settings.sentiment_enabled:
            return cls([], not_configured={name: "disabled" for name in FEEDS})
        sources = [
            FeedSource("fear_greed", settings.fear_greed_url, settings.fear_greed_every_s),
            FeedSource("stablecoins", settings.stablecoins_url, settings.stablecoins_every_s),
            FeedSource("trending", settings.trending_url, settings.trending_every_s),
        ]
        absent: dict[str, str] = {}
        if settings.etf_flows_url:
            sources.append(
                FeedSource("etf_flows", settings.etf_flows_url, settings.etf_flows_every_s)
            )
        else:
            absent["etf_flows"] = "not configured (OCW_ETF_FLOWS_URL)"
        return cls(sources, timeout_s=settings.sentiment_timeout_s, not_configured=absent)

    @classmethod
    def unavailable(cls, reason: str) -> SentimentFeeds:
        """No feed at all (e.g. a replay: today's sentiment says nothing about the past)."""
        return cls([], not_configured={name: reason for name in FEEDS})

    # ------------------------------------------------------------ fetching

    async def run(self) -> None:
        """Fetch whatever is due, sleep until the next feed is due; until cancelled."""
        if not self._feeds:
            return
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.refresh_due(session)
                wait = min(f.next_due for f in self._feeds.values()) - self.clock()
                await asyncio.sleep(min(max(wait, 1.0), 3600.0))

    async def refresh_due(self, session: aiohttp.ClientSession) -> int:
        """Fetch every feed whose cadence is up, concurrently; returns how many were tried."""
        now = self.clock()
        due = [f for f in self._feeds.values() if f.next_due <= now]
        if due:
            await asyncio.gather(*(self._refresh(session, f) for f in due))
        return len(due)

    async def _refresh(self, session: aiohttp.ClientSession, feed: _FeedState) -> None:
        name = feed.source.name
        try:
            obj = await self._get_json(session, feed.source.url)
            values = PARSERS[name](obj)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure is only "missing"
            feed.failures += 1
            feed.streak += 1
            feed.error = _describe(err)
            backoff = self.retry_s * 2 ** min(feed.streak - 1, 10)
            feed.next_due = self.clock() + min(feed.source.every_s, backoff)
            if feed.streak <= 3 or feed.failures % 50 == 0:
                log.warning("sentiment feed %s unavailable: %s", name, feed.error)
            return
        feed.values = values
        feed.fetched_ms = int(self.clock() * 1000)
        feed.error = ""
        feed.ok += 1
        feed.streak = 0
        feed.next_due = self.clock() + feed.source.every_s

    async def _get_json(self, session: aiohttp.ClientSession, url: str) -> Any:
        import aiohttp

        try:
            async with session.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise FeedError(f"HTTP {resp.status}")
                body = await resp.content.read(self.max_body_bytes + 1)
        except aiohttp.ClientError as err:
            raise FeedError(f"unreachable ({type(err).__name__})") from None
        except TimeoutError:
            raise FeedError(f"timed out after {self.timeout_s:g}s") from None
        if len(body) > self.max_body_bytes:
            raise FeedError(f"answer larger than {self.max_body_bytes} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise FeedError("answer is not JSON") from None

    # ------------------------------------------------------------ reading

    def snapshot(self) -> SentimentReading:
        """The cached values; a feed older than ``stale_after`` cadences counts as missing."""
        now = self.clock()
        fields: dict[str, Any] = {}
        updated: dict[str, int] = {}
        missing = [f"{name}: {why}" for name, why in self._absent.items()]
        for name, feed in self._feeds.items():
            if feed.fetched_ms is None:
                missing.append(f"{name}: {feed.error or 'not fetched yet'}")
                continue
            age = now - feed.fetched_ms / 1000
            if age > self.stale_after * feed.source.every_s:
                why = f"stale ({age / 3600:.1f} h old)"
                missing.append(
                    f"{name}: {why}" + (f", last error {feed.error}" if feed.error else "")
                )
                continue
            fields.update(feed.values)
            updated[name] = feed.fetched_ms
        return SentimentReading(
            as_of_ms=int(now * 1000), updated_ms=updated, missing=missing, **fields
        )

    def status(self) -> dict[str, dict[str, Any]]:
        """Per feed: fetched, age, errors (for the listener status file)."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {n: {"state": why} for n, why in self._absent.items()}
        for name, feed in self._feeds.items():
            age = None if feed.fetched_ms is None else round(now - feed.fetched_ms / 1000, 1)
            if feed.fetched_ms is None:
                state = "missing"
            else:
                state = "ok" if not feed.error else "failing (cached value served)"
            out[name] = {
                "state": state,
                "age_s": age,
                "ok": feed.ok,
                "failures": feed.failures,
                "error": feed.error,
            }
        return out


def _describe(err: BaseException) -> str:
    """A short reason without URLs (a configured URL may carry a key)."""
    if isinstance(err, FeedError):
        return str(err)[:200]
    return type(err).__name__
