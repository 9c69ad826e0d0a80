"""What the spot and futures books share: settings, clock, prices, ids, ledger, markets."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from signals.exchange_sim.errors import bad_symbol
from signals.exchange_sim.ledger import Ledger
from signals.exchange_sim.markets import Market
from signals.exchange_sim.prices import PriceBoard, Quote

# Binance spot names the legal range of client order ids in its -1100 answer as this
# (measured on the spot testnet); USDⓈ-M documents the wider second one, with . : and /.
SPOT_CLIENT_ID_PATTERN = r"^[a-zA-Z0-9-_]{1,36}$"
FUTURES_CLIENT_ID_PATTERN = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"


@dataclass
class SimConfig:
    """Knobs a test or the demo may turn at any time."""

    fee_rate: Decimal = Decimal("0.001")  # 0.1 %, charged in the quote / margin asset
    slippage: Decimal = Decimal("0")  # fraction of the last price a taker loses
    max_fill_qty: Decimal | None = None  # liquidity per matching pass; None: unlimited
    spot_client_id_pattern: str = SPOT_CLIENT_ID_PATTERN
    futures_client_id_pattern: str = FUTURES_CLIENT_ID_PATTERN
    default_leverage: int = 20  # Binance's default for a new USDⓈ-M symbol
    default_margin_type: str = "CROSSED"


class Core:
    def __init__(
        self,
        config: SimConfig,
        prices: PriceBoard,
        ledger: Ledger,
        clock_ms: Callable[[], int],
        spot_markets: Mapping[str, Market],
        futures_markets: Mapping[str, Market],
    ) -> None:
        self.config = config
        self.prices = prices
        self.ledger = ledger
        self.clock_ms = clock_ms
        self.spot_markets = dict(spot_markets)  # by exchange id
        self.futures_markets = dict(futures_markets)
        self.reset_ids()

    def reset_ids(self) -> None:
        self._order_ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(50_000_001)
        self._algo_ids = itertools.count(3_000_001)
        self._tran_ids = itertools.count(9_000_000_001)

    def next_order_id(self) -> int:
        return next(self._order_ids)

    def next_trade_id(self) -> int:
        return next(self._trade_ids)

    def next_algo_id(self) -> int:
        return next(self._algo_ids)

    def next_tran_id(self) -> int:
        return next(self._tran_ids)

    @staticmethod
    def random_client_id() -> str:
        """What Binance makes up when no client id is sent: 22 alphanumerics."""
        return uuid.uuid4().hex[:22]

    def market(self, futures: bool, exchange_id: str) -> Market:
        table = self.futures_markets if futures else self.spot_markets
        market = table.get(exchange_id)
        if market is None:
            raise bad_symbol()
        return market

    def quote(self, market: Market) -> Quote | None:
        return self.prices.last(market.symbol)
