"""Exactly-once orders across a SIGKILL of the trading worker, on the local exchange.

The engine as a user runs it in testnet mode: ``ocw worker`` as a process trading through the
exchange broker (ccxt) on ``ExchangeSim``, which runs here so it outlives the worker, on the
dev server. The test plays the listener (a worker on the market queue whose view makes the
rule policy buy) and wakes the account by hand. While the entry order is in flight the worker
is SIGKILLed and a new one started; the order activity's next attempt (after the heartbeat
timeout) runs in the new process, looks the client order id up first, and books what the
exchange did:

* the exchange filled the order and held its answer back (``DELAY_AFTER``): the lookup finds
  the fill, nothing is sent again;
* the order never landed (``ERROR_BEFORE`` on every send until the kill): the lookup finds
  nothing, and once the first attempt can no longer land (recvWindow) it is sent, once.

Each case ends on the exchange's own record: one exchange order for the client order id, the
account's books holding exactly that quantity, and its cash and holdings equal to the
exchange's balances.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.ccxt_binance import binance_client
from activities.exchange_broker import ExchangeBroker, ExchangeConfig
from signals.exchange_sim import ExchangeSim, FaultKind
from tests.integration.procs import file_has, ocw, wait_for
from tests.workflows.fakes import FakeMarket, FakeRegimes, now_ms
from trading.models import Balances, MarketView, SymbolFeatures, Wake
from trading.orders import client_order_id
from trading.state import DecisionState, MarketViewRequest
from workers.temporal_env import SetupError, find_binary, stop_process
from workflows import activity_api as api
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

try:
    find_binary("temporal")
except SetupError as err:  # pragma: no cover - depends on the machine
    pytest.skip(str(err), allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BTC = "BTC/USDT"
PRICE = 50_000.0
RECV_MS = 2_000
ORDER_PATH = "/api/v3/order"
HELD_S = 60.0  # the exchange holds the order's answer far longer than the kill takes


class TrendingMarket(FakeMarket):
    """The listener's side: a flat price and a view on which the rule policy buys (trending,
    RSI14 above 50, momentum above +2 %)."""

    @activity.defn(name=api.MARKET_VIEW)
    async def market_view(self, req: MarketViewRequest) -> MarketView:
        t = now_ms()
        return MarketView(
            as_of_ms=t,
            symbols={
                s: SymbolFeatures(
                    symbol=s,
                    interval=req.interval,
                    time_ms=t,
                    price=self.price(s, t),
                    n_bars=300,
                    rsi14=62.0,
                    momentum14=0.05,
                    efficiency_ratio30=0.6,
                    sma72=self.price(s, t) * 0.95,
                    regime="trending",
                )
                for s in req.symbols
            },
        )


@dataclass
class Engine:
    """One account on the sim: its worker processes (one at a time) and the listener's side."""

    env: WorkflowEnvironment
    sim: ExchangeSim
    tmp: Path
    account: str = field(default_factory=lambda: f"kill-{uuid.uuid4().hex[:8]}")
    worker: subprocess.Popen | None = None
    n_workers: int = 0

    def __post_init__(self) -> None:
        self.queue = f"q-{self.account}"
        self.market_queue = f"{self.queue}-market"
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OCW_", "BINANCE_", "LIVE_TRADING", "ANTHROPIC_"))
        }
        self.proc_env = {
            **inherited,
            "OCW_HOME": str(self.tmp / "home"),
            "OCW_TEMPORAL_ADDRESS": self.env.client.service_client.config.target_host,
            "OCW_ACCOUNT": self.account,
            "OCW_TRADING_TASK_QUEUE": self.queue,
            "OCW_MARKET_TASK_QUEUE": self.market_queue,
            "OCW_SYMBOLS": BTC,
            "OCW_LLM_ENABLED": "false",  # the rule policy decides
            "OCW_POLICY": "rule",
            "OCW_MODE": "testnet",
            "OCW_MARKET": "spot",
            "OCW_BINANCE_SPOT_URL": self.sim.base_url,
            "OCW_RECV_WINDOW_MS": str(RECV_MS),
            "BINANCE_API_KEY": self.sim.api_key,
            "BINANCE_SECRET_KEY": self.sim.secret,
        }
        self.handle: WorkflowHandle = self.env.client.get_workflow_handle(
            f"ocw-decision-{self.account}"
        )

    def log(self, n: int | None = None) -> Path:
        return self.logs / f"worker-{n or self.n_workers}.log"

    async def start_worker(self) -> None:
        self.n_workers += 1
        self.worker = ocw(["worker"], self.proc_env, self.log())
        log = self.log()
        await wait_for(lambda: file_has(log, "trading worker on"), 30, f"{log.name} to start")

    def kill_worker(self) -> None:
        assert self.worker is not None and self.worker.poll() is None, "the worker died early"
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)

    def market_worker(self) -> Worker:
        market = TrendingMarket(default=PRICE)
        regimes = FakeRegimes()
        return Worker(
            self.env.client,
            task_queue=self.market_queue,
            activities=[
                market.market_prices,
                market.market_view,
                market.market_context,
                regimes.crypto_regime,
            ],
        )

    async def account_running(self) -> None:
        """The account's DecisionWorkflow answers (the worker created and serves it)."""
        await wait_for(
            lambda: _query_or_none(lambda: self.handle.query(DecisionWorkflow.status)),
            30,
            f"account {self.account} to run",
        )

    async def state(self) -> DecisionState:
        return await self.handle.query(DecisionWorkflow.state)

    async def stop(self) -> None:
        """Stop the worker, then end the account's workflows (nothing serves their queues)."""
        if self.worker is not None:
            stop_process(self.worker)
        ids = [self.handle.id]
        with contextlib.suppress(Exception):
            state = await asyncio.wait_for(self.state(), 5)
            ids += [p.workflow_id for p in state.positions.values()]
        for wid in ids:
            with contextlib.suppress(Exception):
                await self.env.client.get_workflow_handle(wid).terminate(reason="test over")

    def report(self) -> str:
        tails = []
        for n in range(1, self.n_workers + 1):
            path = self.log(n)
            text = path.read_text(errors="replace") if path.exists() else ""
            tails.append(f"--- {path.name} (last 40 lines)\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(tails)


@pytest.fixture
async def sim() -> AsyncIterator[ExchangeSim]:
    exchange = ExchangeSim([BTC], spot_balances={"USDT": 10_000})
    async with exchange:
        exchange.slippage = 0
        exchange.set_price(BTC, PRICE)
        yield exchange


@contextlib.asynccontextmanager
async def engine(dev_env: WorkflowEnvironment, sim: ExchangeSim, tmp: Path):
    eng = Engine(dev_env, sim, tmp)
    try:
        async with eng.market_worker():
            yield eng
    finally:
        await eng.stop()


async def exchange_view(sim: ExchangeSim) -> tuple[Balances, list[str]]:
    """The exchange's balances and the client ids of all its orders, through the real client
    (what the account must agree with)."""
    client = binance_client(
        "spot", api_key=sim.api_key, secret=sim.secret, base_url=sim.base_url, timeout_ms=5_000
    )
    broker = ExchangeBroker(client, ExchangeConfig(symbols=(BTC,), recv_window_ms=RECV_MS))
    try:
        balances = await broker.balances()
        orders = await client.fetch_orders(BTC, None, 1000)
        return balances, [str(o.get("clientOrderId")) for o in orders]
    finally:
        await broker.close()


def order_posts(sim: ExchangeSim, coid: str) -> list[int]:
    """HTTP statuses of the orders sent with this client id and answered (the sim records a
    request when it answers it)."""
    return [
        r.status
        for r in sim.requests
        if r.method == "POST" and r.path == ORDER_PATH and r.params.get("newClientOrderId") == coid
    ]


async def until_booked(eng: Engine, timeout: float = 45.0) -> DecisionState:
    """The account's state once the entry is booked and nothing else is queued or running.

    Idle matters: the new worker reconciles a few seconds after it starts, while the entry is
    still in doubt, so it may see the filled coins untracked and queue an adoption behind the
    running cycle; the books are read only after that item has been handled too."""

    async def booked_and_idle() -> DecisionState | None:
        with contextlib.suppress(Exception):
            state = await asyncio.wait_for(eng.state(), 5)
            view = await asyncio.wait_for(eng.handle.query(DecisionWorkflow.status), 5)
            if BTC in state.positions and not view.busy and view.queue_length == 0:
                return state
        return None

    return await wait_for(booked_and_idle, timeout, "the entry to be booked", poll=0.3)


async def check_exactly_once(eng: Engine, coid: str) -> DecisionState:
    """One exchange order for ``coid``, the books holding exactly its fill, and the account's
    cash and holdings equal to the exchange's balances."""
    sim = eng.sim
    state = await until_booked(eng)
    report = eng.report()
    pos = state.positions[BTC]
    assert client_order_id(pos.position_id, 1) == coid, report
    assert len(sim.ledger.order_ids(coid)) == 1, sim.ledger[coid]
    assert len(sim.ledger.by_client_id()) == 1, sim.ledger.by_client_id()  # no other order
    filled = float(sim.ledger.qty(coid))
    assert filled > 0
    assert pos.qty == pytest.approx(filled, rel=1e-12), report
    assert state.counters.positions_opened == 1 and state.counters.orders == 1, state.counters
    assert not pos.adopted, pos  # bought by the entry, not taken over by reconciliation

    balances, order_ids = await exchange_view(sim)
    assert order_ids.count(coid) == 1, order_ids  # one order, filled or not, under that id
    assert balances.holdings == {BTC: pytest.approx(pos.qty, rel=1e-12)}
    assert state.portfolio.cash == pytest.approx(balances.cash, abs=1e-6), (
        state.portfolio,
        balances,
    )
    fills = sim.ledger[coid]
    spent = sum(float(f.quote_qty + f.fee) for f in fills)
    assert pos.cost == pytest.approx(spent, abs=1e-6)

    # the position's own workflow holds the same entry
    watcher = eng.env.client.get_workflow_handle(pos.workflow_id)
    pstate = await wait_for(
        lambda: _query_or_none(lambda: watcher.query(PositionWorkflow.status)),
        20,
        "the position's workflow",
    )
    assert pstate.qty == pytest.approx(filled, rel=1e-12)
    assert [f.client_order_id for f in pstate.fills] == [coid]
    return state


async def _query_or_none(call: Callable):
    with contextlib.suppress(Exception):
        return await asyncio.wait_for(call(), 5)
    return None


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    async def check() -> bool:
        return cond()

    await wait_for(check, timeout, what, poll=0.02)


# ---------------------------------------------------------------- the cases


async def test_kill_while_the_exchange_holds_back_a_filled_orders_answer(
    dev_env: WorkflowEnvironment, sim: ExchangeSim, tmp_path: Path
) -> None:
    held = sim.fault(FaultKind.DELAY_AFTER, path=ORDER_PATH, method="POST", delay_s=HELD_S)
    async with engine(dev_env, sim, tmp_path) as eng:
        await eng.start_worker()
        await eng.account_running()
        t0 = time.monotonic()
        await eng.handle.signal(DecisionWorkflow.wake, Wake(reason="manual"))
        # the exchange filled the order and sits on its answer: the worker never hears of it
        await wait_until(lambda: len(sim.ledger) > 0, 30, "the exchange to fill the entry")
        coid = sim.ledger.fills[0].client_order_id
        eng.kill_worker()
        killed = time.monotonic()
        assert held.hits == 1
        first = eng.log(1).read_text(errors="replace")
        assert f"order {coid}" not in first  # the first worker never booked it
        await eng.start_worker()
        state = await check_exactly_once(eng, coid)
        booked = time.monotonic()
        # looked up, never sent again (the held POST is recorded only once it is answered)
        assert held.hits == 1 and order_posts(sim, coid) == [], order_posts(sim, coid)
        second = eng.log(2).read_text(errors="replace")
        assert f"order {coid} BUY BTC/USDT" in second, eng.report()
        lookups = [
            r
            for r in sim.requests
            if r.method == "GET"
            and r.path == ORDER_PATH
            and r.params.get("origClientOrderId") == coid
        ]
        assert lookups, "the retried attempt looked the order up"
        print(
            f"DELAY_AFTER: filled {state.positions[BTC].qty} after "
            f"{killed - t0:.1f}s, booked {booked - killed:.1f}s after the kill"
        )


async def test_kill_after_an_order_that_never_landed(
    dev_env: WorkflowEnvironment, sim: ExchangeSim, tmp_path: Path
) -> None:
    refused = sim.fault(FaultKind.ERROR_BEFORE, path=ORDER_PATH, method="POST", count=1_000)
    async with engine(dev_env, sim, tmp_path) as eng:
        await eng.start_worker()
        await eng.account_running()
        t0 = time.monotonic()
        await eng.handle.signal(DecisionWorkflow.wake, Wake(reason="manual"))
        # the order left the worker and got a gateway error: nothing executed
        await wait_until(lambda: refused.hits > 0, 30, "the entry order to be sent")
        eng.kill_worker()
        killed = time.monotonic()
        refused.count = refused.hits  # the exchange is healthy again
        sent = [
            r
            for r in sim.requests
            if r.method == "POST" and r.path == ORDER_PATH and r.status == 502
        ]
        coid = sent[0].params["newClientOrderId"]
        assert len(sim.ledger) == 0
        await eng.start_worker()
        state = await check_exactly_once(eng, coid)
        booked = time.monotonic()
        statuses = order_posts(sim, coid)
        assert statuses[-1] == 200 and set(statuses[:-1]) == {502}, statuses
        print(
            f"ERROR_BEFORE: sent {len(statuses)} times ({statuses}), filled "
            f"{state.positions[BTC].qty} after {killed - t0:.1f}s, booked "
            f"{booked - killed:.1f}s after the kill"
        )
