"""A local Binance-compatible exchange, so OCW's real execution path runs with no Binance.

Binance is unreachable from where OCW is built and tested, yet the exchange broker must be
proven against the real ``ccxt`` client, byte for byte what it sends. ``ExchangeSim`` is an
``aiohttp.web`` server speaking Binance spot ``/api/v3`` and USDⓈ-M futures ``/fapi`` strictly
(signed requests, filters, error codes and shapes, weights), matching orders against prices from
a ``price_source`` (the replay timeline in the demo, a script in tests), keeping an exchange-side
``ledger`` of every fill, and failing on cue (``FaultKind``).

Pointing ccxt at it (ccxt 4.5.x)::

    feed = bars_price_source(bars, lambda: replay.market_time_ms)  # or any callable
    sim = await ExchangeSim(["BTC/USDT"], price_source=feed).start()
    spot = ccxt.async_support.binance(
        {"apiKey": sim.api_key, "secret": sim.secret, **ccxt_overrides(sim.base_url, "spot")})
    usdm = ccxt.async_support.binanceusdm(
        {"apiKey": sim.api_key, "secret": sim.secret, **ccxt_overrides(sim.base_url, "futures")})

The ``urls['api']`` sections ccxt uses and where they land (``ccxt_overrides`` rewrites every
section, these are the ones served): ``public`` / ``private`` -> ``/api/v3``;
``fapiPublic`` / ``fapiPrivate`` -> ``/fapi/v1``; ``fapiPublicV2`` / ``fapiPrivateV2`` ->
``/fapi/v2``; ``fapiPublicV3`` / ``fapiPrivateV3`` -> ``/fapi/v3``. Not served (404):
``sapi*``, ``v1``, ``fapiData``, ``dapi*``, ``eapi*``, ``papi*`` (and market data beyond
tickers: depth, trades, klines); the options in ``ccxt_overrides`` keep loadMarkets off them.

Endpoints: spot ``ping time exchangeInfo ticker/price ticker/bookTicker ticker/24hr order
(POST GET DELETE) openOrders (GET DELETE) allOrders myTrades account``; futures ``v1: ping time
exchangeInfo ticker/price ticker/24hr premiumIndex order (POST GET DELETE) openOrders
allOpenOrders allOrders userTrades algoOrder (POST GET DELETE) openAlgoOrders allAlgoOrders
algoOpenOrders leverageBracket leverage marginType symbolConfig positionSide/dual
multiAssetsMargin commissionRate income``, ``v2: ticker/price account balance positionRisk``,
``v3: account balance positionRisk``.

Choices where Binance is richer than a test needs (each stated where it is made):
- fees: ``fee_rate`` (default 0.1 %) of the notional, charged in the quote asset on spot (both
  sides) and in USDT on futures; Binance charges spot fees in the received asset or BNB;
- liquidity: one counterparty at the last price (taker at ``last ± slippage``, resting limit at
  its own price), at most ``max_fill_qty`` per matching pass; no order book, no self-trade
  prevention, no iceberg, OCO / order lists, trailing stops, hedge mode or liquidations (the
  liquidation price is reported by ``positionRisk``, never acted on);
- shorts as in one-way mode: a SELL with no position opens one (negative ``positionAmt``),
  reduce-only orders that would increase or flip a position are refused (-2022), a short's
  STOP_MARKET BUY triggers on a rise, funding is received by shorts at a positive rate;
- the futures mark price is the last price; ``workingType`` is accepted but both kinds trigger on
  the last price; one leverage bracket per symbol;
- client order ids: spot enforces ``^[a-zA-Z0-9-_]{1,36}$`` (what spot's -1100 answer names),
  futures ``^[\\.A-Z\\:/a-z0-9_-]{1,36}$`` (as documented); both are unique among *open* orders
  only, and a lookup by a reused id answers the open order, else the latest;
- a triggered futures algo order's child order carries the algo order's client id;
- no order-count limits (``x-mbx-order-count-*``), no archive of old orders, one IP.
"""

from activities.ccxt_binance import ccxt_overrides
from signals.exchange_sim.core import SimConfig
from signals.exchange_sim.errors import BinanceError
from signals.exchange_sim.faults import Fault, FaultKind
from signals.exchange_sim.feeds import bars_price_source
from signals.exchange_sim.ledger import Fill, Ledger
from signals.exchange_sim.markets import SymbolRules
from signals.exchange_sim.server import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    ExchangeSim,
    RecordedRequest,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "BinanceError",
    "ExchangeSim",
    "Fault",
    "FaultKind",
    "Fill",
    "Ledger",
    "RecordedRequest",
    "SimConfig",
    "SymbolRules",
    "bars_price_source",
    "ccxt_overrides",
]
