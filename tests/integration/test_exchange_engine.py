"""The engine on the real execution path (issue 11): DecisionWorkflow and PositionWorkflows on
the dev server, the exchange broker through ccxt against the local exchange.

One account lives through what a real one meets: an entry protected by an exchange-side stop,
the stop moved up with the trail, the worker down while the stop fills (booked once on the
next safety tick, no second sell), then reconciliation: an orphan stop of the engine cancelled,
the user's own order left alone, an untracked holding adopted, a holding sold outside the
engine closed in the books. Every step ends on the exchange's own ledger and balances.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.ccxt_binance import binance_client
from activities.exchange_broker import ExchangeBroker, ExchangeConfig
from activities.trading import TradingActivities
from signals.exchange_sim import ExchangeSim
from tests.workflows.fakes import FakeMarket, ScriptedPolicy
from tests.workflows.test_decision_workflow import SYMBOLS, Rig
from trading.config import Settings
from trading.models import Action, PositionParams, Side, TradeDecision, Wake
from trading.state import DecisionState
from workers.reconcile import run_reconcile
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

pytestmark = pytest.mark.integration

BTC, ETH = SYMBOLS
FAST = PositionParams(safety_interval_s=1.0, agent_interval_s=600.0)
# no sticky cache: a worker restarted in the same process picks its workflows up at once
# (a sticky queue of the stopped worker can hold a timer's task; cf. test_learning_workflow)
NO_CACHE = {"max_cached_workflows": 0}


class SimMarket(FakeMarket):
    """The listener's prices are the exchange's."""

    def __init__(self, sim: ExchangeSim) -> None:
        super().__init__()
        self.sim = sim

    def price(self, symbol: str, t_ms: int) -> float:
        return float(self.sim.price(symbol) or 0.0)


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSim]:
    exchange = ExchangeSim([BTC, ETH], spot_balances={"USDT": 10_000})
    async with exchange:
        exchange.set_price(BTC, 50_000)
        exchange.set_price(ETH, 3_000)
        yield exchange


def make_broker(sim: ExchangeSim, market: str = "spot") -> ExchangeBroker:
    client = binance_client(
        market,  # type: ignore[arg-type]
        api_key=sim.api_key,
        secret=sim.secret,
        base_url=sim.base_url,
        recv_window_ms=2000,
    )
    config = ExchangeConfig(
        market=market,  # type: ignore[arg-type]
        symbols=(BTC, ETH),
        recv_window_ms=2000,
        clock_skew_ms=200,
        poll_s=0.05,
        settle_s=1.0,
    )
    return ExchangeBroker(client, config)


async def until(handle: WorkflowHandle, cond, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = await handle.query(handle_query(handle))
        except RPCError as err:  # a position booked a moment before its workflow starts
            if err.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        if cond(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met: {state}")
        await asyncio.sleep(0.2)


def handle_query(handle: WorkflowHandle):  # noqa: ANN201 - the workflow's state query
    return DecisionWorkflow.state if handle.id.startswith("decision-") else PositionWorkflow.status


def open_orders(sim: ExchangeSim) -> list[Any]:
    market = sim._market_of(BTC)  # noqa: SLF001 - the exchange's own book, not the client's view
    return [o for o in market_orders(market) if o.status in ("NEW", "PARTIALLY_FILLED")]


def market_orders(market: Any) -> list[Any]:
    return list(getattr(market, "orders", {}).values())


async def test_entry_stop_trail_outage_and_reconciliation(dev_env, sim, tmp_path):
    buy_btc = [TradeDecision(ticker=BTC, action=Action.BUY, position_pct=0.2)]
    rig = Rig(
        dev_env,
        tmp_path,
        SimMarket(sim),
        ScriptedPolicy(lambda c, r: buy_btc if c == 1 else []),
    )
    broker = make_broker(sim)
    rig.trading = TradingActivities(broker, rig.trading.journal, dev_env.client)
    rig.extra_activities = [
        rig.trading.place_stop,
        rig.trading.stop_status,
        rig.trading.cancel_stop,
    ]
    raw = binance_client("spot", api_key=sim.api_key, secret=sim.secret, base_url=sim.base_url)
    try:
        async with rig.worker(keep=True, **NO_CACHE):
            handle = await rig.start(position=FAST, exchange_stops=True)
            await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
            state: DecisionState = await until(handle, lambda s: BTC in s.positions, what="entry")
            pos = state.positions[BTC]
            ph = dev_env.client.get_workflow_handle(pos.workflow_id)
            ps = await until(ph, lambda p: p.stop is not None and p.stop.working, what="stop")
            entry_id = ps.fills[0].client_order_id
            assert sim.ledger.qty(entry_id) == Decimal(str(pos.qty))  # sized to what filled
            assert len(sim.ledger.order_ids(entry_id)) == 1
            first_stop = ps.stop.client_order_id
            assert ps.stop.stop_price < 50_000 * 0.97

            sim.set_price(BTC, 60_000)  # +20 %: the trail activates, the stop follows
            ps = await until(
                ph,
                lambda p: p.stop is not None and p.stop.stop_price > 50_000,
                what="trail",
            )
            assert ps.stop.client_order_id != first_stop
            stops = await raw.fetch_open_orders(BTC)
            assert [o["clientOrderId"] for o in stops] == [ps.stop.client_order_id]
            trail_stop = ps.stop

        # the worker is down; the market falls through the stop and the exchange sells
        sim.set_price(BTC, trail_stop.stop_price * 0.995)
        assert sim.ledger.qty(trail_stop.client_order_id) == Decimal(str(trail_stop.qty))

        async with rig.worker(**NO_CACHE):
            ps = await until(ph, lambda p: p.status == "CLOSED", what="stop booked")
            assert ps.exit_reason == "exchange_stop" and ps.trade is not None
            sells = [f for f in ps.fills if f.side == "SELL"]
            assert [f.client_order_id for f in sells] == [trail_stop.client_order_id]
            state = await until(handle, lambda s: not s.positions, what="books flat")
            balance = await raw.fetch_balance()
            assert state.portfolio.cash == pytest.approx(balance["USDT"]["total"], abs=0.01)
            assert balance["BTC"]["total"] == pytest.approx(0.0, abs=1e-8)

            # reconciliation: an orphan stop of the engine's, the user's own order, coins
            # that no position tracks
            epoch = state.epoch
            sim.set_balance("BTC", 0.01)  # coins arrive that no position tracks
            orphan = f"t-{epoch}-BTC-9-2"
            await raw.create_order(
                BTC,
                "limit",
                "sell",
                0.005,
                40_000,
                {"stopLossPrice": 41_000, "clientOrderId": orphan},
            )
            await raw.create_order(ETH, "limit", "buy", 0.1, 2_000, {"clientOrderId": "web_2"})
            settings = Settings(_env_file=None, home=tmp_path, account="t", symbols=[BTC, ETH])
            report = await run_reconcile(
                dev_env.client,
                settings,
                broker,
                dry_run=False,
                source="test",
                journal=rig.trading.journal,
                workflow_id=handle.id,
            )
            kinds = sorted((a.kind, a.target) for a in report.actions)
            assert kinds == [("adopt", BTC), ("cancel", orphan)]
            assert all(a.done for a in report.actions), report.lines()
            assert any("web_2" in n and "left alone" in n for n in report.notes)
            left = [o["clientOrderId"] for o in await raw.fetch_open_orders(ETH)]
            assert left == ["web_2"]
            assert orphan not in [o["clientOrderId"] for o in await raw.fetch_open_orders(BTC)]
            state = await until(handle, lambda s: BTC in s.positions, what="adopted")
            adopted = state.positions[BTC]
            assert adopted.adopted and adopted.qty == pytest.approx(0.01)
            aph = dev_env.client.get_workflow_handle(adopted.workflow_id)
            aps = await until(aph, lambda p: p.stop is not None and p.stop.working, what="stop")
            status = await handle.query(DecisionWorkflow.status)
            assert status.reconcile is not None and status.reconcile.source == "test"
            journaled = rig.trading.journal.reconciliations("t")
            assert {r["kind"] for r in journaled} == {"adopt", "cancel"}

            # the user sells the adopted coins by hand (cancelling the stop that held them)
            await raw.cancel_order(aps.stop.venue_order_id, BTC)
            await raw.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "web_3"})
            report = await run_reconcile(
                dev_env.client, settings, broker, dry_run=False, workflow_id=handle.id
            )
            assert [a.kind for a in report.actions] == ["check"]  # its stop is gone: look
            # the account (not the position told to look) holds this round's summary
            status = await handle.query(DecisionWorkflow.status)
            assert status.reconcile is not None and status.reconcile.time_ms == report.time_ms
            await until(aph, lambda p: p.stop is None and p.stop_errors >= 1, what="stop gone")
            report = await run_reconcile(
                dev_env.client, settings, broker, dry_run=False, workflow_id=handle.id
            )
            assert [(a.kind, a.target) for a in report.actions] == [("close", adopted.position_id)]
            aps = await until(aph, lambda p: p.status == "CLOSED", what="closed")
            assert aps.exit_reason == "reconciled"
            await until(handle, lambda s: not s.positions, what="books flat again")
            report = await run_reconcile(
                dev_env.client, settings, broker, dry_run=True, workflow_id=handle.id
            )
            assert report.ok and report.actions == [], report.lines()

            # no key in any history, the journal or the status
            texts = [(await handle.query(DecisionWorkflow.status)).model_dump_json()]
            for wid in (handle.id, ph.id, aph.id):
                history = await dev_env.client.get_workflow_handle(wid).fetch_history()
                texts.append(history.to_json())
            texts.append((tmp_path / f"{rig.queue}-journal.db").read_bytes().decode("latin-1"))
            assert not any(sim.secret in t or sim.api_key in t for t in texts)
    finally:  # the last worker terminated the rig's workflows on its way out
        await raw.close()
        await broker.close()


async def test_a_short_on_usdm_is_protected_above_and_booked_once_when_the_exchange_covers(
    dev_env, sim, tmp_path
):
    """Issue 15 on the execution path: a SHORT on a USDⓈ-M account sells to open (a negative
    position at the exchange), its PositionWorkflow places a reduce-only STOP_MARKET BUY above
    the entry, and when the market rises through it the exchange covers; the next safety tick
    books that cover once (no second buy) and the books equal the futures wallet."""
    short_btc = [TradeDecision(ticker=BTC, action=Action.SHORT, position_pct=0.2)]
    rig = Rig(
        dev_env,
        tmp_path,
        SimMarket(sim),
        ScriptedPolicy(lambda c, r: short_btc if c == 1 else []),
    )
    broker = make_broker(sim, "futures")
    await broker.start()
    rig.trading = TradingActivities(broker, rig.trading.journal, dev_env.client)
    rig.extra_activities = [
        rig.trading.place_stop,
        rig.trading.stop_status,
        rig.trading.cancel_stop,
    ]
    raw = binance_client("futures", api_key=sim.api_key, secret=sim.secret, base_url=sim.base_url)
    try:
        async with rig.worker(**NO_CACHE):
            handle = await rig.start(position=FAST, exchange_stops=True, shorts=True)
            await handle.signal(DecisionWorkflow.wake, Wake(reason="w1"))
            state: DecisionState = await until(handle, lambda s: BTC in s.positions, what="short")
            pos = state.positions[BTC]
            assert pos.side.value == "short"
            ph = dev_env.client.get_workflow_handle(pos.workflow_id)
            ps = await until(ph, lambda p: p.stop is not None and p.stop.working, what="stop")
            held = {p["symbol"]: p for p in await raw.fetch_positions([BTC])}
            contracts = float(held[raw.market(BTC)["symbol"]]["contracts"] or 0)
            assert held[raw.market(BTC)["symbol"]]["side"] == "short"
            assert contracts == pytest.approx(pos.qty)
            # a conditional order lives in Binance's algo-order API: the broker lists both
            (venue,) = [o for o in await broker.open_orders() if o.kind == "stop"]
            assert venue.client_order_id == ps.stop.client_order_id and venue.side == Side.BUY
            assert venue.stop_price > 50_000  # above the entry: it fires on a rise
            sent = [
                r.params
                for r in sim.requests
                if r.path == "/fapi/v1/algoOrder" and r.method == "POST"
                and r.params.get("clientAlgoId", r.params.get("newClientOrderId"))
                == ps.stop.client_order_id
            ]  # fmt: skip
            assert sent and sent[0]["reduceOnly"] == "true" and sent[0]["side"] == "BUY"

            sim.set_price(BTC, venue.stop_price * 1.005)  # the market rises through it
            ps = await until(ph, lambda p: p.status == "CLOSED", what="cover booked", timeout=60)
            assert ps.exit_reason == "exchange_stop" and ps.trade is not None
            assert ps.trade.pnl < 0  # a short that the market went against
            buys = [f for f in ps.fills if f.side == "BUY"]
            assert [f.client_order_id for f in buys] == [venue.client_order_id]
            assert len(sim.ledger.order_ids(venue.client_order_id)) == 1  # covered once
            assert {f.client_order_id for f in sim.ledger if f.side == "BUY"} == {
                venue.client_order_id
            }  # the engine sent no buy of its own on top of the exchange's cover
            state = await until(handle, lambda s: not s.positions, what="books flat")
            after = {p["symbol"]: p for p in await raw.fetch_positions([BTC])}
            left = after.get(raw.market(BTC)["symbol"])
            assert left is None or float(left["contracts"] or 0) == 0
            balance = await raw.fetch_balance()
            assert state.portfolio.cash == pytest.approx(balance["USDT"]["total"], abs=0.01)
    finally:
        await raw.close()
        await broker.close()
