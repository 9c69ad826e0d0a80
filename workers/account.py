"""Who owns an account: the trading side creates it, configures it, and alone may replace it.

``ensure_account`` runs when ``ocw worker`` starts (and as ``ocw account init``): it starts the
account's DecisionWorkflow if it has never run, and refuses (loudly, without starting anything)
when the last run is closed, failed or terminated, because a fresh run would start from
``initial_cash`` while the broker still holds the old positions. Starting over is
``ocw account reset``: it reconciles with the broker first, so the new run starts from the
broker's cash and adopts its holdings, and carries the LLM spend and breaker over (the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.broker import Broker
from activities.paper_broker import PaperBroker
from trading.config import Settings
from trading.models import Side
from trading.state import AccountSeed, AdoptedHolding, DecisionInput, EngineConfig
from workers.search_setup import with_search_attributes
from workers.temporal_env import SetupError
from workers.wiring import decision_input, engine_config
from workflows.decision import DecisionWorkflow
from workflows.search_attributes import OCW_ACCOUNT

log = logging.getLogger(__name__)

POSITION_PREFIX = "ocw-position-"
WATCHERS_LOOKED_UP = 8  # replacement watchers (-w2, -w3, ...) looked for per position


@dataclass(frozen=True)
class AccountState:
    workflow_id: str
    status: str  # RUNNING, COMPLETED, FAILED, TERMINATED, ..., NONE (never ran)
    created: bool = False

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"


async def describe_account(client: Client, workflow_id: str) -> AccountState:
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return AccountState(workflow_id, "NONE")
        raise
    status = desc.status.name if desc.status is not None else "UNKNOWN"
    return AccountState(workflow_id, status)


async def ensure_account(
    client: Client,
    settings: Settings,
    broker: PaperBroker | None = None,
    exchange: Broker | None = None,
) -> AccountState:
    """Start the account's DecisionWorkflow unless it runs; never replace a closed one.

    A new account whose broker already has orders (a Temporal DB started afresh beside an old
    paper broker) starts from the broker's books, as a reset does, not from initial cash. On
    an exchange the account trades ``min(initial_cash, the quote balance)`` and adopts nothing:
    what the exchange account held before is the user's, not the engine's."""
    wid = settings.decision_workflow_id
    before = await describe_account(client, wid)
    if before.running:
        return before
    if before.status != "NONE":
        raise _closed(settings, before)
    settings = await with_search_attributes(client, settings)
    inp = decision_input(settings)
    if exchange is not None:
        inp = inp.model_copy(update={"seed": await exchange_seed(exchange, settings)})
        log.info(
            "account %s: trading %.2f of the exchange balance", settings.account, inp.seed.cash
        )
    elif broker is not None and broker.fills():
        inp = inp.model_copy(
            update={"seed": broker_seed(broker, "new account on a broker with history")}
        )
        log.warning(
            "account %s: the broker already has orders; the new account starts from its "
            "books (cash %.2f, %d holding(s))",
            settings.account,
            inp.seed.cash if inp.seed else 0.0,
            len(inp.seed.holdings) if inp.seed else 0,
        )
    try:
        await client.start_workflow(
            DecisionWorkflow.run,
            inp,
            id=wid,
            task_queue=settings.trading_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            **account_start_options(settings),
        )
    except WorkflowAlreadyStartedError:  # closed between the look and the start
        raise _closed(settings, await describe_account(client, wid)) from None
    return AccountState(wid, "RUNNING", created=True)


def account_start_options(settings: Settings) -> dict[str, Any]:
    """What the Temporal UI shows of an account's DecisionWorkflow from its start."""
    symbols = ", ".join(settings.symbols)
    options: dict[str, Any] = {
        "static_summary": f"OCW account {settings.account} · {settings.mode} · {symbols}",
        "static_details": (
            f"**Account** {settings.account} ({settings.mode}, {settings.market})  \n"
            f"**Symbols** {symbols}  \n"
            f"**Decides** every {settings.decision_interval} or when the gate wakes it; "
            "Claude when configured, else the rule policy  \n"
            f"**Limits** position {settings.max_position_pct:.0%}, exposure "
            f"{settings.max_exposure:.0%}, drawdown halt {settings.drawdown_halt_pct:.0%}  \n"
            "Each open position is a PositionWorkflow of its own "
            "(`OcwAccount` / `OcwSymbol` search attributes; its ids are in this workflow's memo)."
        ),
    }
    if settings.search_attributes:
        options["search_attributes"] = TypedSearchAttributes(
            [SearchAttributePair(OCW_ACCOUNT, settings.account)]
        )
    return options


def _closed(settings: Settings, state: AccountState) -> SetupError:
    return SetupError(
        f"account {settings.account!r}: its DecisionWorkflow {state.workflow_id} is "
        f"{state.status}; it is not replaced silently (the broker may still hold its "
        "positions). Look at it with `temporal workflow show --workflow-id "
        f"{state.workflow_id}`, then start over with `ocw account reset`."
    )


async def warm_update(handle: WorkflowHandle, update: Any, arg: Any) -> str:
    """Execute an update on a workflow the worker holds in its cache.

    The query first makes the worker load the workflow: an update delivered to a workflow
    that is not cached, in the same workflow task as other new events, can be written to
    history in an order that the SDK's replay disagrees with (a non-determinism error and a
    stuck run, seen in the chaos test after a worker restart; cf. sdk-python #1591).
    """
    await handle.query(DecisionWorkflow.status)
    return await handle.execute_update(update, arg, result_type=str)


async def configure_account(client: Client, settings: Settings) -> str:
    """Hand the trading side's settings to the running account (validated by the workflow),
    only when they differ from what it holds (the replay clock is the listener's)."""
    handle = client.get_workflow_handle(settings.decision_workflow_id)
    config = engine_config(await with_search_attributes(client, settings))
    view = await handle.query(DecisionWorkflow.status)
    if view.config is not None and _same_config(view.config, config):
        return f"configuration of {settings.account} unchanged"
    return await warm_update(handle, DecisionWorkflow.configure, config)


def _same_config(current: EngineConfig, new: EngineConfig) -> bool:
    return current.model_dump(exclude={"speed"}) == new.model_dump(exclude={"speed"})


async def configure_when_ready(
    client: Client, settings: Settings, stop: asyncio.Event, attempts: int = 60
) -> None:
    """``configure`` once the worker serves the workflow; a refused config is said loudly."""
    delay = 0.5
    for _ in range(attempts):
        try:
            answer = await configure_account(client, settings)
            log.info("account %s: %s", settings.account, answer)
            return
        except Exception as err:  # noqa: BLE001 - reported, retried while it can be transient
            text = str(err)
            if "configure:" in text or "validation error" in text.lower():
                log.error("account %s refused the configuration: %s", settings.account, text)
                return
            log.warning("account %s not configured yet (%s); retrying", settings.account, text)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            delay = min(delay * 2, 10.0)


# ------------------------------------------------------------------ reset


async def exchange_seed(exchange: Broker, settings: Settings) -> AccountSeed:
    """A new account on an exchange: its capital is ``initial_cash`` or what the exchange
    holds of the quote asset, whichever is less."""
    balances = await exchange.balances()
    cash = min(settings.initial_cash, balances.cash)
    return AccountSeed(
        cash=cash,
        reason=f"exchange account: {cash:.2f} of {balances.cash:.2f} quote balance "
        f"(OCW_INITIAL_CASH {settings.initial_cash:.2f}); earlier holdings are not adopted",
    )


def broker_seed(broker: PaperBroker, reason: str) -> AccountSeed:
    """The broker's books as a new run's starting point: cash, and each holding with the
    average price and fees of the fills that built it (buys since the last full sell)."""
    balances = broker.balances()
    holdings: list[AdoptedHolding] = []
    fills = [f for f in broker.fills() if f.status.value == "FILLED"]
    for symbol, qty in sorted(balances.holdings.items()):
        if qty < 0:
            raise SetupError(
                f"the broker holds a short of {-qty:g} {symbol}: a reset does not adopt shorts; "
                "cover it first (`ocw close-all`) and reset again"
            )
        if qty == 0:
            continue
        lots: list = []
        held = 0.0
        for f in (f for f in fills if f.symbol == symbol):
            if f.side is Side.BUY:
                lots.append(f)
                held += f.qty
            else:
                held -= f.qty
                if held <= qty * 1e-9:
                    lots, held = [], 0.0
        bought = sum(f.qty for f in lots) or qty
        avg = sum(f.qty * f.price for f in lots) / bought if lots else 0.0
        fees = sum(f.fee for f in lots) * min(1.0, qty / bought)
        if avg <= 0:
            raise SetupError(
                f"the broker holds {qty:g} {symbol} without a fill that explains it: "
                "reconcile it by hand before `ocw account reset`"
            )
        holdings.append(
            AdoptedHolding(
                symbol=symbol,
                qty=qty,
                avg_entry=avg,
                cost=qty * avg + fees,
                fees=fees,
                entry_time_ms=lots[0].market_time_ms if lots else 0,
            )
        )
    return AccountSeed(cash=balances.cash, holdings=holdings, reason=reason)


async def running_positions(client: Client, account: str, broker: PaperBroker) -> list[str]:
    """Workflow ids of the account's running PositionWorkflows: every position the broker has
    orders for (and its replacement watchers), plus what visibility lists when it can."""
    prefix = f"{POSITION_PREFIX}{account}-"
    candidates: list[str] = []
    for pid in dict.fromkeys(f.position_id for f in broker.fills()):
        base = f"{POSITION_PREFIX}{pid}"
        candidates += [base, *(f"{base}-w{n}" for n in range(2, WATCHERS_LOOKED_UP + 2))]
    query = "WorkflowType = 'PositionWorkflow' AND ExecutionStatus = 'Running'"
    with contextlib.suppress(RPCError):  # a server without visibility (the test server)
        candidates += [wf.id async for wf in client.list_workflows(query)]
    running: list[str] = []
    for wid in dict.fromkeys(c for c in candidates if c.startswith(prefix)):
        if (await describe_account(client, wid)).running:
            running.append(wid)
    return running


async def reset_account(
    client: Client, settings: Settings, broker: PaperBroker, reason: str
) -> tuple[AccountSeed, list[str]]:
    """Terminate the account's run and its positions' watchers, then start a new run from the
    broker's books. Returns the seed and the watchers that were stopped."""
    wid = settings.decision_workflow_id
    seed = broker_seed(broker, reason)
    state = await describe_account(client, wid)
    stopped: list[str] = []
    if state.running:
        await client.get_workflow_handle(wid).terminate(reason=f"ocw account reset: {reason}")
    for pos_id in await running_positions(client, settings.account, broker):
        await client.get_workflow_handle(pos_id).terminate(reason=f"ocw account reset: {reason}")
        stopped.append(pos_id)
    settings = await with_search_attributes(client, settings)
    config: EngineConfig = engine_config(settings)
    await client.start_workflow(
        DecisionWorkflow.run,
        DecisionInput(config=config, seed=seed),
        id=wid,
        task_queue=settings.trading_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        **account_start_options(settings),
    )
    return seed, stopped
