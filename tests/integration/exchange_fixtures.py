"""Fixtures shared by the exchange broker's tests (long and short): one local exchange per
module, reset before every test, and brokers of either market on the real ccxt client.

A test module imports the fixtures it uses by name (pytest finds them in its namespace).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from activities.ccxt_binance import binance_client
from activities.exchange_broker import ExchangeBroker, ExchangeConfig
from signals.exchange_sim import ExchangeSim

BTC = "BTC/USDT"
ETH = "ETH/USDT"
# A short recvWindow (1 s) keeps the "a lost attempt can no longer land" rule real and the
# tests quick.
RECV_MS = 1_000


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ExchangeSim]:
    exchange = ExchangeSim([BTC, ETH], spot_balances={"USDT": 10_000}, futures_wallet=10_000)
    async with exchange:
        yield exchange


@pytest.fixture(autouse=True)
def fresh(sim: ExchangeSim) -> None:
    sim.reset()
    sim.max_fill_qty = None
    sim.slippage = 0
    sim.set_price(BTC, 50_000)
    sim.set_price(ETH, 3_000)


def make_broker(sim: ExchangeSim, market: str = "spot", **config: Any) -> ExchangeBroker:
    """A broker on ``market`` with quick polls; ``config`` overrides ExchangeConfig fields."""
    client = binance_client(
        market,  # type: ignore[arg-type]
        api_key=sim.api_key,
        secret=sim.secret,
        base_url=sim.base_url,
        recv_window_ms=RECV_MS,
        timeout_ms=config.pop("timeout_ms", 3_000),
    )
    cfg = ExchangeConfig(
        market=market,  # type: ignore[arg-type]
        symbols=(BTC, ETH),
        recv_window_ms=RECV_MS,
        clock_skew_ms=200,
        poll_s=0.05,
        resolve_s=config.pop("resolve_s", 8.0),
        settle_s=config.pop("settle_s", 0.5),
        **config,
    )
    return ExchangeBroker(client, cfg)


async def _started(broker: ExchangeBroker) -> AsyncIterator[ExchangeBroker]:
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


@pytest.fixture
async def spot(sim: ExchangeSim) -> AsyncIterator[ExchangeBroker]:
    async for broker in _started(make_broker(sim, "spot")):
        yield broker


@pytest.fixture
async def usdm(sim: ExchangeSim) -> AsyncIterator[ExchangeBroker]:
    async for broker in _started(make_broker(sim, "futures")):
        yield broker
