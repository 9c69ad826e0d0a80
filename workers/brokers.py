"""Which broker a mode trades through: the paper broker, or Binance through ccxt.

``paper`` and ``replay`` fill on the SQLite paper broker. ``testnet`` and ``live`` send real
orders through the exchange broker: Binance's spot testnet or USDⓈ-M demo for ``testnet``,
Binance itself for ``live`` (refused unless ``LIVE_TRADING=true``). ``OCW_BINANCE_SPOT_URL`` /
``OCW_BINANCE_FUTURES_URL`` point either at any Binance-compatible server instead. The keys
come from the environment (``BINANCE_API_KEY`` / ``BINANCE_SECRET_KEY``) into the ccxt client
and nowhere else.
"""

from __future__ import annotations

from activities.broker import Broker, PaperVenue
from activities.ccxt_binance import binance_client
from activities.exchange_broker import ExchangeBroker, ExchangeConfig
from activities.paper_broker import PaperBroker
from signals.rest_budget import RestBudget
from trading.config import Settings
from workers.temporal_env import SetupError


def check_mode(settings: Settings) -> None:
    """Refuse, with one clear line, a mode that cannot run as configured."""
    if settings.mode == "live" and not settings.live_trading:
        raise SetupError(
            "OCW_MODE=live sends real orders: set LIVE_TRADING=true as well, or use "
            "OCW_MODE=testnet or paper"
        )
    if settings.mode in ("live", "testnet"):
        key, secret = settings.binance_api_key, settings.binance_api_secret
        if key is None or secret is None or not key.get_secret_value():
            raise SetupError(
                f"OCW_MODE={settings.mode} trades on Binance: set BINANCE_API_KEY and "
                "BINANCE_SECRET_KEY in the environment"
            )


def exchange_url(settings: Settings) -> str | None:
    return settings.binance_spot_url if settings.market == "spot" else settings.binance_futures_url


def build_broker(settings: Settings, budget: RestBudget | None = None) -> Broker:
    """The broker of ``settings.mode``; the exchange broker loads its markets on first use
    (``await broker.start()`` to fail fast on a bad key or URL)."""
    check_mode(settings)
    if settings.mode in ("paper", "replay"):
        paths = settings.paths()
        return PaperVenue(
            PaperBroker(
                paths["broker_db"],
                initial_cash=settings.initial_cash,
                fee_rate=settings.fee_rate,
                slippage_bps=settings.slippage_bps,
                allow_shorts=settings.shorts,
            )
        )
    assert settings.binance_api_key is not None and settings.binance_api_secret is not None
    client = binance_client(
        settings.market,
        api_key=settings.binance_api_key.get_secret_value(),
        secret=settings.binance_api_secret.get_secret_value(),
        base_url=exchange_url(settings),
        testnet=settings.mode == "testnet",
        recv_window_ms=settings.recv_window_ms,
    )
    config = ExchangeConfig(
        market=settings.market,
        symbols=tuple(settings.symbols),
        order_type=settings.order_type,
        limit_cap_pct=settings.limit_cap_pct,
        recv_window_ms=settings.recv_window_ms,
        fee_rate=settings.fee_rate,
        leverage=settings.futures_leverage,
        margin_mode=settings.futures_margin_mode,
    )
    if budget is None:  # Binance bans the IP: the listener's pauses hold here too
        budget = RestBudget(
            {
                "spot": settings.rest_weight_limit_spot,
                "futures": settings.rest_weight_limit_futures,
            },
            throttle_fraction=settings.rest_throttle_fraction,
            shared_path=settings.paths()["rest_pause"],
        )
    return ExchangeBroker(client, config, budget=budget)
