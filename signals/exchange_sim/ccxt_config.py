"""How to point the real ccxt Binance client at the simulator.

ccxt builds every request URL from ``exchange.urls['api'][<section>]``; the section is the
first part of the implicit method's name (``publicGetExchangeInfo`` -> ``public``,
``fapiPrivatePostAlgoOrder`` -> ``fapiPrivate``). ``ccxt_overrides`` rewrites *every* section
to the simulator's host, keeping each one's path, so no call from a simulator-configured client
can reach binance.com; sections the simulator does not serve answer 404 (ccxt raises
ExchangeNotAvailable).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

import ccxt

MarketKind = Literal["spot", "futures"]


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
