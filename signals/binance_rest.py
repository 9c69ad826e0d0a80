"""Binance public REST market data through ccxt, every call counted by the process's RestBudget.

A thin wrapper over ``ccxt.async_support``: ``binance`` for spot, ``binanceusdm`` for USDⓈ-M
futures. It loads markets once, pages through klines, reaches the futures data endpoints through
ccxt's implicit public methods and turns ccxt's errors into four clear ones. It never needs an
API key (public data only) and never enables a sandbox: derivatives data comes from mainnet even
when orders go to a testnet, because the testnets serve none of it.

Response headers reach the budget through ccxt's ``on_rest_response`` hook, which runs inside each
request: ``last_response_headers`` is shared by concurrent calls and could pair one call's status
with another's headers. ccxt's own rate limiter is off; the budget is the one limiter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt
from pydantic import ValidationError

from signals.rest_budget import RestBanned, RestBudget, RestRateLimited
from trading.config import interval_seconds
from trading.models import Bar

log = logging.getLogger(__name__)

MarketType = Literal["spot", "futures"]
SPOT_URL = "https://api.binance.com"
FUTURES_URL = "https://fapi.binance.com"
_SPOT_HOSTS = {"api.binance.com"}
_FUTURES_HOSTS = {"fapi.binance.com"}
PAGE_LIMIT: dict[str, int] = {"spot": 1000, "futures": 1000}  # ccxt caps both at 1000


class RestError(RuntimeError):
    """A REST call failed in a way retrying will not fix (bad symbol, bad answer)."""


class RestNetworkError(RestError):
    """Unreachable, timed out, 5xx or a transient exchange failure: worth retrying later."""


class RestDataError(RestError):
    """The exchange answered something that does not pass validation."""


def _pool_of(url: str) -> str:
    path = urlsplit(url).path
    return "futures" if path.startswith(("/fapi", "/futures")) else "spot"


def _kline_weight(market: MarketType, limit: int) -> int:
    if market == "spot":
        return 2
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class BinanceRest:
    """Public market data of one market type; one instance per (market type, process)."""

    def __init__(
        self,
        market: MarketType = "spot",
        budget: RestBudget | None = None,
        spot_url: str = SPOT_URL,
        futures_url: str = FUTURES_URL,
        timeout_s: float = 10.0,
    ) -> None:
        if market not in ("spot", "futures"):
            raise ValueError(f"market must be 'spot' or 'futures', got {market!r}")
        self.market: MarketType = market
        self.budget = budget or RestBudget()
        cls = ccxt.binance if market == "spot" else ccxt.binanceusdm
        self.exchange = cls(
            {
                "enableRateLimit": False,
                "timeout": int(timeout_s * 1000),
                "options": {
                    "fetchMarkets": {"types": ["spot" if market == "spot" else "linear"]},
                    "fetchCurrencies": False,
                },
            }
        )
        self._point_urls(spot_url, futures_url)
        self.exchange.on_rest_response = self._on_response
        self._markets_lock = asyncio.Lock()
        self._markets_loaded = False

    def _point_urls(self, spot_url: str, futures_url: str) -> None:
        """Send ccxt's requests to the given hosts (the local test server, a mirror)."""
        targets = {
            **dict.fromkeys(_SPOT_HOSTS, urlsplit(spot_url.rstrip("/"))),
            **dict.fromkeys(_FUTURES_HOSTS, urlsplit(futures_url.rstrip("/"))),
        }
        api = self.exchange.urls["api"]
        for key, url in list(api.items()):
            if not isinstance(url, str):
                continue
            parts = urlsplit(url)
            target = targets.get(parts.hostname or "")
            if target is None:
                continue
            api[key] = urlunsplit((target.scheme, target.netloc, target.path + parts.path, "", ""))

    def _on_response(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        response_headers: dict[str, str],
        response_body: str,
        request_headers: object,
        request_body: object,
    ) -> str:
        self.budget.observe(_pool_of(url), int(code), response_headers or {})
        return response_body.strip()

    async def close(self) -> None:
        await self.exchange.close()

    async def __aenter__(self) -> BinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ plumbing

    async def _call(self, pool: str, weight: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """One ccxt call through the budget, its errors mapped to this module's."""
        await self.budget.acquire(pool, weight)
        try:
            return await getattr(self.exchange, method)(*args, **kwargs)
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as err:
            until = self.budget.paused_until_ms()
            if self.budget.banned_until_ms >= until > 0:
                raise RestBanned(f"Binance REST banned (418) during {method}", until) from None
            raise RestRateLimited(
                f"Binance REST rate limited (429) during {method}", until or self._now_ms()
            ) from err
        except ccxt.OperationFailed as err:  # network, 5xx, timeouts, unreadable answers
            raise RestNetworkError(f"{method}: {type(err).__name__}: {_short(err)}") from None
        except ccxt.BaseError as err:
            raise RestError(f"{method}: {type(err).__name__}: {_short(err)}") from None

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def load_markets(self) -> None:
        """Exchange info, once per instance (ccxt needs it to resolve symbols)."""
        async with self._markets_lock:
            if self._markets_loaded:
                return
            weight = 20 if self.market == "spot" else 1
            await self._call(self.market, weight, "load_markets")
            self._markets_loaded = True

    def _market_id(self, symbol: str) -> str:
        if self.market == "futures" and ":" not in symbol:
            symbol = f"{symbol}:{symbol.split('/')[1]}"
        try:
            return self.exchange.market(symbol)["id"]
        except ccxt.BadSymbol:
            raise RestError(f"{symbol} is not a {self.market} market at Binance") from None

    def _ccxt_symbol(self, symbol: str) -> str:
        if self.market == "futures" and ":" not in symbol:
            return f"{symbol}:{symbol.split('/')[1]}"
        return symbol

    # ------------------------------------------------------------ klines

    async def fetch_ohlcv_page(
        self,
        symbol: str,
        interval: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
        now_ms: int | None = None,
    ) -> list[Bar]:
        """One klines request: at most ``limit`` bars opened in ``[since_ms, until_ms]``.

        Without ``since_ms`` Binance returns the latest bars. A bar whose close time is not
        before ``now_ms`` (default: the wall clock) is returned with ``closed=False``.
        """
        await self.load_markets()
        self._market_id(symbol)
        limit = min(limit or PAGE_LIMIT[self.market], PAGE_LIMIT[self.market])
        params: dict[str, Any] = {}
        if until_ms is not None:
            params["until"] = until_ms
        rows = await self._call(
            self.market,
            _kline_weight(self.market, limit),
            "fetch_ohlcv",
            self._ccxt_symbol(symbol),
            interval,
            since_ms,
            limit,
            params,
        )
        return rows_to_bars(rows, symbol, interval, self._now_ms() if now_ms is None else now_ms)

    async def fetch_ohlcv(
        self,
        symbol: str,
        interval: str,
        since_ms: int,
        until_ms: int | None = None,
        now_ms: int | None = None,
        max_bars: int | None = None,
    ) -> list[Bar]:
        """Every bar opened in ``[since_ms, until_ms]`` (until now by default), paging as needed."""
        step = interval_seconds(interval) * 1000
        out: list[Bar] = []
        cursor = since_ms
        page = PAGE_LIMIT[self.market]
        while until_ms is None or cursor <= until_ms:
            want = page if max_bars is None else min(page, max_bars - len(out))
            if want <= 0:
                break
            bars = await self.fetch_ohlcv_page(symbol, interval, cursor, until_ms, want, now_ms)
            bars = [b for b in bars if b.open_time >= cursor]
            if not bars:
                break
            out.extend(bars)
            cursor = bars[-1].open_time + step
            if len(bars) < want or not bars[-1].closed:
                break
        return out

    # ------------------------------------------------------------ derivatives (futures data)

    async def premium_index(self, symbol: str) -> dict[str, Any]:
        """``/fapi/v1/premiumIndex``: mark price, index price, last funding rate, next funding."""
        row = await self._call(
            "futures", 1, "fapiPublicGetPremiumIndex", {"symbol": _exchange_id(symbol)}
        )
        if not isinstance(row, dict):
            raise RestDataError(f"premiumIndex for {symbol}: expected an object, got {row!r:.80}")
        return row

    async def funding_rate_history(self, symbol: str, limit: int = 100) -> list[dict[str, Any]]:
        """``/fapi/v1/fundingRate``: the last ``limit`` settled funding prints, oldest first
        (weight 1; Binance shares a 500 per 5 minutes limit among its callers)."""
        rows = await self._call(
            "futures",
            1,
            "fapiPublicGetFundingRate",
            {"symbol": _exchange_id(symbol), "limit": max(1, min(limit, 1000))},
        )
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise RestDataError(f"fundingRate for {symbol}: expected a list of objects")
        return rows

    async def _futures_data(
        self, method: str, symbol: str, period: str, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._call(
            "futures",
            1,
            method,
            {"symbol": _exchange_id(symbol), "period": period, "limit": limit},
        )
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise RestDataError(f"{method} for {symbol}: expected a list of objects")
        return rows

    async def open_interest_hist(
        self, symbol: str, period: str = "5m", limit: int = 30
    ) -> list[dict[str, Any]]:
        """``/futures/data/openInterestHist`` rows, oldest first."""
        return await self._futures_data("fapiDataGetOpenInterestHist", symbol, period, limit)

    async def taker_long_short_ratio(
        self, symbol: str, period: str = "5m", limit: int = 30
    ) -> list[dict[str, Any]]:
        """``/futures/data/takerlongshortRatio`` rows (buySellRatio, buyVol, sellVol)."""
        return await self._futures_data("fapiDataGetTakerlongshortRatio", symbol, period, limit)

    async def top_long_short_account_ratio(
        self, symbol: str, period: str = "5m", limit: int = 30
    ) -> list[dict[str, Any]]:
        """``/futures/data/topLongShortAccountRatio`` rows (longShortRatio of top traders)."""
        return await self._futures_data(
            "fapiDataGetTopLongShortAccountRatio", symbol, period, limit
        )

    async def spot_price(self, symbol: str) -> float:
        """Last spot price (``/api/v3/ticker/price``), for the perp-spot basis."""
        row = await self._call("spot", 2, "publicGetTickerPrice", {"symbol": _exchange_id(symbol)})
        try:
            price = float(row["price"])
        except (KeyError, TypeError, ValueError):
            raise RestDataError(f"ticker/price for {symbol}: no price in {row!r:.80}") from None
        if not price > 0 or price == float("inf"):
            raise RestDataError(f"ticker/price for {symbol}: implausible price {price}")
        return price


def _exchange_id(symbol: str) -> str:
    """``BTC/USDT`` (or ``BTC/USDT:USDT``) -> ``BTCUSDT``."""
    return symbol.split(":")[0].replace("/", "").upper()


def _short(err: Exception, limit: int = 200) -> str:
    text = str(err)
    return text if len(text) <= limit else text[:limit] + "..."


def rows_to_bars(rows: Any, symbol: str, interval: str, now_ms: int) -> list[Bar]:
    """ccxt OHLCV rows -> checked Bars, oldest first; the bar still running marked not closed."""
    if not isinstance(rows, list):
        raise RestDataError(f"klines for {symbol} {interval}: expected a list")
    step = interval_seconds(interval) * 1000
    out: list[Bar] = []
    previous = -1
    for row in rows:
        try:
            open_time = int(row[0])
            o, h, low, c, v = (float(x) for x in row[1:6])
            close_time = open_time + step - 1
            bar = Bar(
                symbol=symbol,
                interval=interval,
                open_time=open_time,
                close_time=close_time,
                open=o,
                high=h,
                low=low,
                close=c,
                volume=v,
                closed=close_time < now_ms,
            )
        except (TypeError, ValueError, IndexError, ValidationError) as err:
            raise RestDataError(
                f"klines for {symbol} {interval}: bad row {row!r:.120}: {_short(err, 120)}"
            ) from None
        if not (low <= min(o, c) and h >= max(o, c)):
            raise RestDataError(
                f"klines for {symbol} {interval}: OHLC inconsistent in {row!r:.120}"
            )
        if open_time % step or open_time <= previous:
            raise RestDataError(
                f"klines for {symbol} {interval}: open time {open_time} misaligned or out of order"
            )
        previous = open_time
        out.append(bar)
    return out
