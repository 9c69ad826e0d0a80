"""The ccxt Binance clients of the exchange broker, and how to point them anywhere.

``binance_client`` builds the async client for a mode: Binance itself (live), its spot testnet
or USDⓈ-M demo (ccxt's sandbox / demo-trading switches), or any Binance-compatible base URL
(``OCW_BINANCE_SPOT_URL`` / ``OCW_BINANCE_FUTURES_URL``: a proxy, or the local simulator of
``signals/exchange_sim``). ``error_code`` reads Binance's ``code`` out of a ccxt exception.

ccxt builds every request URL from ``exchange.urls['api'][<section>]``; the section is the
first part of the implicit method's name (``publicGetExchangeInfo`` -> ``public``,
``fapiPrivatePostAlgoOrder`` -> ``fapiPrivate``). ``ccxt_overrides`` rewrites *every* section
to the simulator's host, keeping each one's path, so no call from a simulator-configured client
can reach binance.com; sections the simulator does not serve answer 404 (ccxt raises
ExchangeNotAvailable).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async

MarketKind = Literal["spot", "futures"]

# ccxt logs every request's headers at DEBUG, the API key among them: never below INFO here,
# whatever level the process runs at
logging.getLogger("ccxt").setLevel(logging.INFO)


def binance_client(
    market: MarketKind,
    *,
    api_key: str,
    secret: str,
    base_url: str | None = None,
    testnet: bool = False,
    timeout_ms: int = 10_000,
    recv_window_ms: int = 10_000,
) -> Any:
    """An async ccxt client for orders on ``market``. The keys live in the client only (ccxt
    keeps them off its exception texts); the caller closes it.

    ``base_url`` wins over ``testnet``: it points every API section at one server. Otherwise
    ``testnet`` picks Binance's spot testnet (``set_sandbox_mode``) or the USDⓈ-M demo
    (``enable_demo_trading``; Binance retired the futures sandbox for it)."""
    cls = ccxt_async.binance if market == "spot" else ccxt_async.binanceusdm
    config: dict[str, Any] = {
        "apiKey": api_key,
        "secret": secret,
        "enableRateLimit": False,  # the broker paces itself with the shared RestBudget
        "timeout": timeout_ms,
        "options": {"recvWindow": recv_window_ms, "adjustForTimeDifference": False},
    }
    if base_url:
        overrides = ccxt_overrides(base_url, market)
        config["options"] = {**overrides["options"], **config["options"]}
        config["urls"] = overrides["urls"]
        config["exceptions"] = overrides["exceptions"]
        if base_url.startswith("http://"):
            config["timeout_on_exit"] = 0  # ccxt waits 250 ms on close for TLS only
    else:
        config["options"]["defaultType"] = "spot" if market == "spot" else "swap"
    client = cls(config)
    if testnet and not base_url:
        if market == "spot":
            client.set_sandbox_mode(True)
        else:
            client.enable_demo_trading(True)
    return client


_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')


def error_code(err: BaseException) -> int | None:
    """Binance's error code in a ccxt exception text (ccxt puts the raw body there)."""
    found = _CODE.search(str(err))
    return int(found.group(1)) if found else None


# refusals that prove the order was not placed (the request was answered, not lost)
_FINAL = (
    ccxt.InvalidOrder,
    ccxt.InsufficientFunds,
    ccxt.BadRequest,
    ccxt.BadSymbol,
    ccxt.AuthenticationError,
    ccxt.PermissionDenied,
    ccxt.AccountSuspended,
    ccxt.NotSupported,
    ccxt.ArgumentsRequired,
)
_DUPLICATE_CODES = {-4116}  # futures: "ClientOrderId is duplicated."
_DUPLICATE_TEXT = "Duplicate order"  # spot -2010 "Duplicate order sent."
_QUERY = re.compile(r"\?[^\s]*")


def is_final_refusal(err: BaseException) -> bool:
    """The exchange refused the order outright (nothing placed). A duplicate client id is no
    refusal: an order with that id exists, so it is looked up."""
    if not isinstance(err, _FINAL):
        return False
    return not (error_code(err) in _DUPLICATE_CODES or _DUPLICATE_TEXT in str(err))


def short_error(err: BaseException) -> str:
    """An exception's text for logs and fills: one line, bounded (ccxt texts carry the
    exchange's body, never the keys)."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return _QUERY.sub("?…", text)[:300]  # a signed URL's query (timestamp, signature) is noise


def ccxt_overrides(base_url: str, market: MarketKind = "spot") -> dict[str, Any]:
    """The ``urls`` / ``options`` / ``exceptions`` to merge into a ccxt Binance config.

    Use with ``ccxt.async_support.binance`` (spot) or ``binanceusdm`` (futures); ccxt
    deep-merges the dict into its own description, so it may be passed as the config itself
    or merged with keys:

        exchange = ccxt.async_support.binanceusdm(
            {"apiKey": key, "secret": secret, **ccxt_overrides(sim.base_url, "futures")}
        )

    ``options`` turn off what the simulator does not serve: ``fetchCurrencies`` (``sapi
    capital/config/getall``) and ``fetchMargins`` (``sapi margin/allPairs`` and
    ``margin/isolated/allPairs``, called by loadMarkets once a key is set), and load only the
    one market type (no ``dapi`` / ``eapi`` exchangeInfo). ``exceptions`` copy ccxt's
    per-market error table (``exceptions['spot']`` or ``['linear']``) into the global one:
    ccxt picks those tables by matching the URL against ``https://api.binance.com/`` /
    ``https://fapi.binance.com/``, which a local URL never matches, so without this -4164,
    -2022, -2019, -4116, -4120, -2021 … would surface as a bare ExchangeError instead of the
    InvalidOrder / InsufficientFunds / OrderImmediatelyFillable the real exchange produces.
    """
    if market not in ("spot", "futures"):
        raise ValueError(f"market must be 'spot' or 'futures', got {market!r}")
    base = base_url.rstrip("/")
    paths, tables = _reference()
    api = {section: base + path for section, path in paths.items()}
    table = "spot" if market == "spot" else "linear"
    return {
        "urls": {"api": api},
        "options": {
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchMarkets": {"types": ["spot" if market == "spot" else "linear"]},
            "defaultType": "spot" if market == "spot" else "swap",
            "defaultSubType": None if market == "spot" else "linear",
        },
        "exceptions": {"exact": dict(tables[table]["exact"])},
    }


@lru_cache(maxsize=1)
def _reference() -> tuple[dict[str, str], dict[str, Any]]:
    """The installed ccxt's URL path per ``urls['api']`` section and its error tables."""
    reference = ccxt.binance()
    paths = {
        section: urlsplit(url).path
        for section, url in reference.urls["api"].items()
        if isinstance(url, str)
    }
    return paths, reference.exceptions
