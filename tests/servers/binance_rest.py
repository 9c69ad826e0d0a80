"""A local Binance-compatible REST server (aiohttp.web), good enough for the real ccxt client.

Serves spot (``/api/v3``) and USDⓈ-M futures (``/fapi/v1``, ``/futures/data``) market data
from given bar lists: klines (coarser intervals resampled from the base bars), exchange info,
ticker prices and the derivatives endpoints. It can be scripted to fail (418 / 429 with
Retry-After, 5xx, delays), sets ``x-mbx-used-weight-1m`` like Binance and records every request.

``now_ms`` (a callable) is the server's market clock: only bars opened by then are served and
the bar in progress comes back unfinished, as on the exchange. Point it at a replay server's
``market_time_ms`` to have both tell the same story.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from signals.kline_frames import exchange_symbol
from signals.replay_server import partial_bar
from trading.config import INTERVAL_SECONDS
from trading.market_data import resample
from trading.models import Bar

SPOT_KLINE_MAX = 1000
FUTURES_KLINE_MAX = 1500


@dataclass
class Fault:
    """One scripted failure: answered instead of the real response ``count`` times."""

    status: int
    retry_after: int | None = None
    count: int = 1
    path_prefix: str = ""  # only requests whose path starts with this
    delay_s: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class DerivativesData:
    """What the futures data endpoints serve, per exchange symbol (``BTCUSDT``)."""

    premium: dict[str, dict[str, Any]] = field(default_factory=dict)  # premiumIndex rows
    open_interest: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    taker: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    top_long_short: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # /fapi/v1/fundingRate rows ({"symbol", "fundingTime", "fundingRate", "markPrice"})
    funding_history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class BinanceRestServer:
    def __init__(
        self,
        bars: dict[str, list[Bar]] | None = None,
        now_ms: Callable[[], int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        base_weight: int = 0,
    ) -> None:
        self.bars: dict[str, list[Bar]] = {s: list(b) for s, b in (bars or {}).items()}
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.host = host
        self._port = port
        self.base_weight = base_weight  # weight "used by others" added to every header
        self.derivatives = DerivativesData()
        self.spot_prices: dict[str, float] = {}  # exchange symbol -> price (else last close)
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.delay_s = 0.0
        self._weights: dict[str, tuple[int, int]] = {}  # pool -> (minute, weight)
        self._resampled: dict[tuple[str, str], list[Bar]] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._site is None:
            return self._port
        server = self._site._server  # noqa: SLF001 - aiohttp exposes no public accessor
        return server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> BinanceRestServer:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v3/exchangeInfo", self._spot_exchange_info)
        app.router.add_get("/api/v3/klines", self._spot_klines)
        app.router.add_get("/api/v3/ticker/price", self._ticker_price)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/fapi/v1/exchangeInfo", self._futures_exchange_info)
        app.router.add_get("/fapi/v1/klines", self._futures_klines)
        app.router.add_get("/fapi/v1/premiumIndex", self._premium_index)
        app.router.add_get("/fapi/v1/fundingRate", self._funding_rate)
        app.router.add_get("/fapi/v1/time", self._time)
        app.router.add_get("/futures/data/openInterestHist", self._open_interest_hist)
        app.router.add_get("/futures/data/takerlongshortRatio", self._taker_ratio)
        app.router.add_get("/futures/data/topLongShortAccountRatio", self._top_long_short)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def __aenter__(self) -> BinanceRestServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ scripting

    def fail(
        self,
        status: int,
        retry_after: int | None = None,
        count: int = 1,
        path_prefix: str = "",
        delay_s: float = 0.0,
    ) -> None:
        self.faults.append(Fault(status, retry_after, count, path_prefix, delay_s))

    def paths(self, prefix: str = "") -> list[str]:
        return [r.path for r in self.requests if r.path.startswith(prefix)]

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        pool = "futures" if request.path.startswith(("/fapi", "/futures")) else "spot"
        weight = self._charge(pool, _weight_of(request))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        fault = self._take_fault(request.path)
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            response = _fault_response(fault)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        response.headers["x-mbx-used-weight-1m"] = str(weight)
        response.headers["x-mbx-used-weight"] = str(weight)
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), response.status)
        )
        return response

    def _charge(self, pool: str, weight: int) -> int:
        minute = int(time.time()) // 60
        previous_minute, used = self._weights.get(pool, (minute, 0))
        used = (used if previous_minute == minute else 0) + weight
        self._weights[pool] = (minute, used)
        return used + self.base_weight

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and path.startswith(fault.path_prefix):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------ bars

    def _series(self, symbol: str, interval: str) -> list[Bar]:
        base = self.bars.get(symbol)
        if not base:
            return []
        if base[0].interval == interval:
            return base
        key = (symbol, interval)
        cached = self._resampled.get(key)
        if cached is None or (cached and cached[-1].open_time < base[-1].open_time):
            step = INTERVAL_SECONDS[base[0].interval]
            if INTERVAL_SECONDS[interval] % step or INTERVAL_SECONDS[interval] < step:
                raise web.HTTPBadRequest(
                    text=json.dumps({"code": -1120, "msg": "Invalid interval."}),
                    content_type="application/json",
                )
            cached = self._resampled[key] = resample(base, interval)
        return cached

    def _symbol(self, request: web.Request) -> str:
        raw = request.query.get("symbol", "")
        for symbol in self.bars:
            if exchange_symbol(symbol) == raw:
                return symbol
        raise web.HTTPBadRequest(
            text=json.dumps({"code": -1121, "msg": "Invalid symbol."}),
            content_type="application/json",
        )

    async def _klines(self, request: web.Request, max_limit: int) -> web.Response:
        symbol = self._symbol(request)
        interval = request.query.get("interval", "")
        if interval not in INTERVAL_SECONDS:
            return _error(400, -1120, "Invalid interval.")
        limit = min(int(request.query.get("limit", 500)), max_limit)
        start = request.query.get("startTime")
        end = request.query.get("endTime")
        now = self.now_ms()
        series = [b for b in self._series(symbol, interval) if b.open_time <= now]
        if end is not None:
            series = [b for b in series if b.open_time <= int(end)]
        if start is not None:
            chosen = [b for b in series if b.open_time >= int(start)][:limit]
        else:
            chosen = series[-limit:]
        return web.json_response([_kline_row(b, now) for b in chosen])

    async def _spot_klines(self, request: web.Request) -> web.Response:
        return await self._klines(request, SPOT_KLINE_MAX)

    async def _futures_klines(self, request: web.Request) -> web.Response:
        return await self._klines(request, FUTURES_KLINE_MAX)

    def _last_close(self, symbol: str) -> float:
        now = self.now_ms()
        bars = [b for b in self.bars[symbol] if b.open_time <= now]
        return bars[-1].close if bars else self.bars[symbol][0].open

    # ------------------------------------------------------------ endpoints

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _spot_exchange_info(self, request: web.Request) -> web.Response:
        symbols = [_spot_symbol_info(s) for s in sorted(self.bars)]
        return web.json_response(_exchange_info(symbols))

    async def _futures_exchange_info(self, request: web.Request) -> web.Response:
        symbols = [_futures_symbol_info(s) for s in sorted(self.bars)]
        info = _exchange_info(symbols)
        info["assets"] = []
        return web.json_response(info)

    async def _ticker_price(self, request: web.Request) -> web.Response:
        if "symbol" in request.query:
            symbol = self._symbol(request)
            name = exchange_symbol(symbol)
            price = self.spot_prices.get(name, self._last_close(symbol))
            return web.json_response({"symbol": name, "price": repr(price)})
        rows = [
            {
                "symbol": exchange_symbol(s),
                "price": repr(self.spot_prices.get(exchange_symbol(s), self._last_close(s))),
            }
            for s in sorted(self.bars)
        ]
        return web.json_response(rows)

    async def _premium_index(self, request: web.Request) -> web.Response:
        name = request.query.get("symbol")
        rows = self.derivatives.premium
        if name is None:
            return web.json_response(list(rows.values()))
        if name not in rows:
            return _error(400, -1121, "Invalid symbol.")
        return web.json_response(rows[name])

    async def _funding_rate(self, request: web.Request) -> web.Response:
        """Binance's settled funding history: oldest first, ``limit`` (default 100, at most
        1000) rows; ``startTime`` / ``endTime`` bound it (without them: the most recent)."""
        name = request.query.get("symbol", "")
        rows = self.derivatives.funding_history.get(name)
        if rows is None:
            return _error(400, -1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", 100))
            start = int(request.query.get("startTime", 0))
            end = int(request.query.get("endTime", 2**62))
        except ValueError:
            return _error(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return _error(400, -1130, "Invalid data sent for a parameter.")
        kept = [r for r in rows if start <= int(r["fundingTime"]) <= end]
        kept = kept[:limit] if "startTime" in request.query else kept[-limit:]
        return web.json_response(kept)

    def _history(
        self, request: web.Request, table: dict[str, list[dict[str, Any]]]
    ) -> web.Response:
        name = request.query.get("symbol", "")
        if request.query.get("period") not in {
            "5m",
            "15m",
            "30m",
            "1h",
            "2h",
            "4h",
            "6h",
            "12h",
            "1d",
        }:
            return _error(400, -1120, "Invalid period.")
        limit = min(int(request.query.get("limit", 30)), 500)
        rows = table.get(name)
        if rows is None:
            return _error(400, -1121, "Invalid symbol.")
        return web.json_response(rows[-limit:])

    async def _open_interest_hist(self, request: web.Request) -> web.Response:
        return self._history(request, self.derivatives.open_interest)

    async def _taker_ratio(self, request: web.Request) -> web.Response:
        return self._history(request, self.derivatives.taker)

    async def _top_long_short(self, request: web.Request) -> web.Response:
        return self._history(request, self.derivatives.top_long_short)


# ---------------------------------------------------------------- payloads


def _weight_of(request: web.Request) -> int:
    """Request weights as Binance documents them (close enough for a budget test)."""
    path = request.path
    if path == "/api/v3/exchangeInfo":
        return 20
    if path == "/api/v3/klines":
        return 2
    if path == "/api/v3/ticker/price":
        return 2 if "symbol" in request.query else 4
    if path == "/fapi/v1/klines":
        limit = int(request.query.get("limit", 500))
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if path == "/fapi/v1/premiumIndex":
        return 1 if "symbol" in request.query else 10
    return 1


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _fault_response(fault: Fault) -> web.Response:
    if fault.status == 418:
        body = {"code": -1003, "msg": "Way too many requests; IP banned until later."}
    elif fault.status == 429:
        body = {"code": -1003, "msg": "Too many requests; please use the websocket."}
    else:
        body = {"code": -1000, "msg": "An unknown error occurred while processing the request."}
    response = web.json_response(body, status=fault.status)
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    return response


def _kline_row(bar: Bar, now_ms: int) -> list[Any]:
    if bar.close_time >= now_ms:  # still in progress at the server's market time
        span = bar.close_time + 1 - bar.open_time
        fraction = max(0.0, min(1.0, (now_ms - bar.open_time) / span))
        bar = partial_bar(bar, fraction, bar.open_time, bar.close_time)
    quote = bar.volume * bar.close
    return [
        bar.open_time,
        repr(bar.open),
        repr(bar.high),
        repr(bar.low),
        repr(bar.close),
        repr(bar.volume),
        bar.close_time,
        repr(quote),
        1 + int(bar.volume),
        repr(bar.volume / 2),
        repr(quote / 2),
        "0",
    ]


def _exchange_info(symbols: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": int(time.time() * 1000),
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            }
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    }


def _filters() -> list[dict[str, Any]]:
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01",
            "maxPrice": "1000000.00",
            "tickSize": "0.01",
        },
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.0", "stepSize": "0.00001"},
        {"filterType": "NOTIONAL", "minNotional": "5.0", "maxNotional": "9000000.0"},
    ]


def _spot_symbol_info(symbol: str) -> dict[str, Any]:
    base, quote = symbol.split("/")
    return {
        "symbol": exchange_symbol(symbol),
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": _filters(),
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _futures_symbol_info(symbol: str) -> dict[str, Any]:
    base, quote = symbol.split("/")
    return {
        "symbol": exchange_symbol(symbol),
        "pair": exchange_symbol(symbol),
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.10",
                "maxPrice": "4529764",
                "tickSize": "0.10",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.001",
                "maxQty": "120",
                "stepSize": "0.001",
            },
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }
