"""``ExchangeSim``: the aiohttp.web server that ties the books, faults and limits together.

Every request runs through one middleware: count its weight (429 / 418 past the budget or
during a ban), fire a scripted *before* fault, refresh prices and match all open orders, run the
handler (signed routes authenticate first), then fire a scripted *after* fault on a success,
stamp ``x-mbx-used-weight-1m`` and record the request (without its signature or key).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from signals.exchange_sim.auth import authenticate
from signals.exchange_sim.core import Core, SimConfig
from signals.exchange_sim.errors import BinanceError
from signals.exchange_sim.faults import (
    AFTER,
    BEFORE,
    GATEWAY_PAGE,
    UNKNOWN_STATUS_MSG,
    Fault,
    FaultKind,
    FaultPlan,
)
from signals.exchange_sim.futures import FuturesBook
from signals.exchange_sim.futures_api import FuturesApi
from signals.exchange_sim.ledger import Ledger
from signals.exchange_sim.limits import RequestBudget, pool_of, weight_of
from signals.exchange_sim.markets import Market, SymbolRules, make_market
from signals.exchange_sim.numbers import dec
from signals.exchange_sim.params import Params, parse_params
from signals.exchange_sim.prices import PriceBoard, PriceSource
from signals.exchange_sim.routing import Ctx, Route
from signals.exchange_sim.spot import SpotBook
from signals.exchange_sim.spot_api import SpotApi

_RAW = web.RequestKey("exchange_sim_raw", tuple)  # (raw query, raw body, parsed params)

# A fixed default credential pair (64 alphanumerics, as Binance issues them): not a secret,
# only what the local exchange accepts unless told otherwise.
DEFAULT_API_KEY = "simkey0000000000000000000000000000000000000000000000000000000001"
DEFAULT_SECRET = "simsecret000000000000000000000000000000000000000000000000000001"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]  # signature removed; the API key travels in a header, never here
    status: int
    code: int | None  # Binance error code of an error answer


class ExchangeSim:
    """A local Binance (spot ``/api/v3`` + USDⓈ-M ``/fapi``) the real ccxt client trades on.

    ``symbols`` are unified (``"BTC/USDT"``); each is listed on spot and futures with the rules
    in ``spot_rules`` / ``futures_rules`` (defaults: ``SymbolRules.spot()`` / ``.futures()``).
    ``price_source(symbol) -> (price, market_time_ms) | None`` is read on every request and
    every ``poll_interval_s`` while running; ``set_price`` overrides it per symbol.
    ``clock_ms`` is the *server* clock (signature timestamps, ``serverTime``, order and trade
    times): leave it on wall time, which is what ccxt stamps requests with; market time
    reaches the fills through the price source (``Fill.market_time_ms``).
    """

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USDT",),
        *,
        price_source: PriceSource | None = None,
        spot_rules: Mapping[str, SymbolRules] | None = None,
        futures_rules: Mapping[str, SymbolRules] | None = None,
        spot_balances: Mapping[str, float | str | Decimal] | None = None,
        futures_wallet: float | str | Decimal = 10_000,
        api_keys: Mapping[str, str] | None = None,
        config: SimConfig | None = None,
        clock_ms: Callable[[], int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_interval_s: float | None = 0.05,
        weight_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.config = config or SimConfig()
        self.api_keys: dict[str, str] = dict(api_keys or {DEFAULT_API_KEY: DEFAULT_SECRET})
        self.prices = PriceBoard(price_source, self.clock_ms)
        self.ledger = Ledger()
        self.faults = FaultPlan()
        self.requests: list[RecordedRequest] = []
        self.budget = RequestBudget(lambda: self.clock_ms() / 1000, weight_limits)
        spot_markets = {}
        futures_markets = {}
        for symbol in symbols:
            s = make_market(symbol, (spot_rules or {}).get(symbol) or SymbolRules.spot())
            f = make_market(symbol, (futures_rules or {}).get(symbol) or SymbolRules.futures())
            spot_markets[s.id] = s
            futures_markets[f.id] = f
        self.core = Core(
            self.config, self.prices, self.ledger, self.clock_ms, spot_markets, futures_markets
        )
        self.spot = SpotBook(
            self.core, spot_balances if spot_balances is not None else {"USDT": 10_000}
        )
        self.futures = FuturesBook(self.core, futures_wallet)
        self.futures_api = FuturesApi(self.core, self.futures)
        self._routes: list[Route] = (
            SpotApi(self.core, self.spot).routes() + self.futures_api.routes()
        )
        self.host = host
        self._port = port
        self.poll_interval_s = poll_interval_s
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._site is None:
            return self._port
        server = self._site._server  # noqa: SLF001 - aiohttp exposes no public accessor
        return server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def base_url(self) -> str:
        """``http://host:port``: spot lives under ``/api/v3``, futures under ``/fapi``."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Same as ``base_url`` (the name ``tests/servers/binance_rest.py`` uses)."""
        return self.base_url

    @property
    def api_key(self) -> str:
        return next(iter(self.api_keys))

    @property
    def secret(self) -> str:
        return self.api_keys[self.api_key]

    async def start(self) -> ExchangeSim:
        app = web.Application(middlewares=[self._middleware])
        for route in self._routes:
            app.router.add_route(route.method, route.path, self._wrap(route))
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        if self.poll_interval_s and self.prices.source is not None:
            self._poller = asyncio.create_task(self._poll())
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def __aenter__(self) -> ExchangeSim:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _poll(self) -> None:
        assert self.poll_interval_s
        while not self._closing.is_set():
            if self.prices.refresh(self._symbols()):
                self._match()
            await asyncio.sleep(self.poll_interval_s)

    # ------------------------------------------------------------ scripting

    def reset(self) -> None:
        """Back to the starting state: balances, no orders, fills, faults, bans or test prices."""
        self.prices.clear()
        self.ledger.clear()
        self.faults.clear()
        self.requests.clear()
        self.budget.reset()
        self.core.reset_ids()
        self.spot.reset()
        self.futures.reset()

    def set_price(
        self, symbol: str, price: float | str | Decimal, time_ms: int | None = None
    ) -> None:
        """Set the last price of a unified symbol (wins over the source) and match at once."""
        self._market_of(symbol)
        self.prices.set(symbol, price, time_ms)
        self._match()

    def price(self, symbol: str) -> Decimal | None:
        quote = self.prices.last(symbol)
        return quote.price if quote else None

    def fault(self, kind: FaultKind | str, **kwargs: Any) -> Fault:
        """Script a failure (see ``faults``); returns it, so a test can read ``hits``."""
        fault = Fault(FaultKind(kind), **kwargs)
        for name in ("fill_qty", "fill_fraction"):
            value = getattr(fault, name)
            if value is not None:
                setattr(fault, name, dec(value))
        return self.faults.add(fault)

    def lift_ban(self) -> None:
        self.budget.lift_ban()

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        self.spot.set_balance(asset, free)

    def pay_funding(self, symbol: str, rate: float | str | Decimal) -> Decimal:
        """Settle funding for a futures position at ``rate``; the payment (negative: paid)."""
        return self.futures.pay_funding(self._market_of(symbol).id, dec(rate))

    @property
    def fee_rate(self) -> Decimal:
        return self.config.fee_rate

    @fee_rate.setter
    def fee_rate(self, value: float | str | Decimal) -> None:
        self.config.fee_rate = dec(value)

    @property
    def slippage(self) -> Decimal:
        return self.config.slippage

    @slippage.setter
    def slippage(self, value: float | str | Decimal) -> None:
        self.config.slippage = dec(value)

    @property
    def max_fill_qty(self) -> Decimal | None:
        return self.config.max_fill_qty

    @max_fill_qty.setter
    def max_fill_qty(self, value: float | str | Decimal | None) -> None:
        self.config.max_fill_qty = None if value is None else dec(value)

    def paths(self, prefix: str = "") -> list[str]:
        return [r.path for r in self.requests if r.path.startswith(prefix)]

    # ------------------------------------------------------------ plumbing

    def _symbols(self) -> list[str]:
        return [m.symbol for m in self.core.spot_markets.values()]

    def _market_of(self, symbol: str) -> Market:
        for market in self.core.spot_markets.values():
            if market.symbol == symbol:
                return market
        raise KeyError(f"{symbol} is not listed on the simulator")

    def _match(self) -> None:
        self.spot.match_all()
        self.futures.match_all()

    def _wrap(self, route: Route) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            raw_query, body, params = request[_RAW]
            if route.signed:
                authenticate(
                    request.headers, raw_query, body, params, self.api_keys, self.clock_ms()
                )
            ctx = Ctx(request.method, request.path, Params(params), self.faults)
            return web.json_response(route.handler(ctx))

        return handler

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        raw_query = request.raw_path.partition("?")[2]
        body = await request.text() if request.can_read_body else ""
        params = parse_params(raw_query, body)
        request[_RAW] = (raw_query, body, params)
        method, path = request.method, request.path
        pool = pool_of(path)
        answer = self._refusal(pool, method, path, params)
        if answer is None:
            self.prices.refresh(self._symbols())
            self._match()
            try:
                answer = await handler(request)
            except BinanceError as err:
                answer = err
            except web.HTTPException as exc:  # unknown path or method: 404 / 405 as a plain answer
                answer = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
            if not isinstance(answer, BinanceError) and answer.status < 300:
                answer = await self._after(method, path, params, answer)
        code = answer.code if isinstance(answer, BinanceError) else None
        response = answer.response() if isinstance(answer, BinanceError) else answer
        used = self.budget.used(pool)
        response.headers["x-mbx-used-weight-1m"] = str(used)
        response.headers["x-mbx-used-weight"] = str(used)
        self.requests.append(RecordedRequest(method, path, dict(params), response.status, code))
        return response

    def _refusal(
        self, pool: str, method: str, path: str, params: dict[str, str]
    ) -> BinanceError | web.StreamResponse | None:
        """The 418 / 429 / scripted error a request gets before reaching its handler."""
        refused = self.budget.charge(pool, weight_of(method, path, params))
        if refused is not None:
            return refused
        fault = self.faults.take(BEFORE, method, path, params)
        if fault is None:
            return None
        if fault.kind is FaultKind.BAN:
            self.budget.ban(pool, fault.retry_after)
            return self.budget.banned_error(pool)
        if fault.kind is FaultKind.RATE_LIMIT:
            limit = self.budget.limits.get(pool)
            return BinanceError(
                -1003,
                f"Too many requests; current limit of IP(127.0.0.1) request weight per 1 "
                f"minute is {limit}. Please use WebSocket Streams for live updates to avoid "
                "polling the API.",
                status=fault.status or 429,
                retry_after=fault.retry_after,
            )
        return _error_page(fault, 502)

    async def _after(
        self, method: str, path: str, params: dict[str, str], response: web.StreamResponse
    ) -> BinanceError | web.StreamResponse:
        """Replace or hold back a successful answer as an AFTER fault says."""
        fault = self.faults.take(AFTER, method, path, params)
        if fault is None:
            return response
        if fault.kind is FaultKind.DELAY_AFTER:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=fault.delay_s)
            return response
        if fault.kind is FaultKind.UNKNOWN_AFTER:
            if fault.body is not None:
                return web.Response(text=fault.body, status=fault.status or 408)
            return BinanceError(-1007, UNKNOWN_STATUS_MSG, status=fault.status or 408)
        return _error_page(fault, 503)


def _error_page(fault: Fault, default_status: int) -> web.Response:
    status = fault.status or default_status
    body = fault.body if fault.body is not None else GATEWAY_PAGE.format(status=status)
    return web.Response(text=body, status=status, content_type="text/html")
