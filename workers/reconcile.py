"""Reconciliation, carried out: gather both sides, compare (``trading/reconcile.py``), act.

The books come from Temporal (the DecisionWorkflow's positions with their side, each
PositionWorkflow's stop); the exchange's side from the broker (balances, open orders incl.
conditional ones, futures positions signed: a short negative). Acting means cancelling the engine's own orphan orders and telling a position whose
stop ended to look now; the result goes to the DecisionWorkflow (``reconciled``), so
``ocw status`` shows the last one from any machine. ``ocw reconcile --dry-run`` only prints.
"""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client

from activities.broker import Broker
from activities.exchange_broker import ExchangeBroker
from activities.journal import Journal
from trading import metrics
from trading.config import Settings
from trading.models import VenueOrder
from trading.reconcile import (
    BookPosition,
    ReconcileInput,
    ReconcileReport,
    reconcile,
    summary_of,
)
from trading.state import (
    AdoptedHolding,
    AdoptRequest,
    PositionState,
    StatusView,
)
from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

log = logging.getLogger(__name__)


async def gather(
    client: Client, settings: Settings, broker: Broker, workflow_id: str | None = None
) -> ReconcileInput:
    handle = client.get_workflow_handle(workflow_id or settings.decision_workflow_id)
    view: StatusView = await handle.query(DecisionWorkflow.status)
    positions: list[BookPosition] = []
    for pos in view.positions:
        stop_id: str | None = None
        running = True
        busy = pos.exit_requested or pos.pending_add_notional > 0
        try:
            state: PositionState = await client.get_workflow_handle(pos.workflow_id).query(
                PositionWorkflow.status
            )
            if state.stop is not None and state.stop.working:
                stop_id = state.stop.client_order_id
            busy = (
                busy or state.status != "OPEN" or bool(state.exit_requested or state.pending_adds)
            )
        except Exception as err:  # noqa: BLE001 - a position that does not answer is reported
            log.warning("position %s does not answer: %s", pos.workflow_id, err)
            running = False
        positions.append(
            BookPosition(
                position_id=pos.position_id,
                workflow_id=pos.workflow_id,
                symbol=pos.symbol,
                qty=pos.qty,
                stop_client_order_id=stop_id,
                running=running,
                busy=busy,
                side=pos.side,
            )
        )
    balances = await broker.balances()
    orders = await broker.open_orders()
    tolerance: dict[str, float] = {}
    prices = {p.symbol: p.last_price for p in view.positions}
    if isinstance(broker, ExchangeBroker):
        prices.update(await broker.last_prices())
        for sym in settings.symbols:
            rules = await broker.rules(sym)
            price = prices.get(sym, 0.0)
            dust = rules.min_notional / price if rules.min_notional and price > 0 else 0.0
            tolerance[sym] = max(rules.step_size, rules.min_qty, dust)
    return ReconcileInput(
        account=settings.account,
        time_ms=int(time.time() * 1000),
        books_cash=view.portfolio.cash,
        busy=view.busy or view.queue_length > 0,
        positions=positions,
        exchange_cash=balances.cash,
        exchange_holdings=balances.holdings,
        open_orders=orders,
        traded=list(settings.symbols),
        prices=prices,
        tolerance=tolerance,
        shorts=bool(view.config and view.config.shorts),
    )


async def run_reconcile(
    client: Client,
    settings: Settings,
    broker: Broker,
    *,
    dry_run: bool,
    source: str = "worker",
    journal: Journal | None = None,
    workflow_id: str | None = None,
) -> ReconcileReport:
    """One reconciliation; unless ``dry_run`` its actions are carried out and its summary
    handed to the DecisionWorkflow (``workflow_id``: the account's, by default)."""
    wid = workflow_id or settings.decision_workflow_id
    inp = await gather(client, settings, broker, wid)
    report = reconcile(inp)
    if dry_run:
        return report
    by_id = {o.client_order_id: o for o in inp.open_orders}
    watchers = {p.position_id: p.workflow_id for p in inp.positions}
    for action in report.actions:
        try:
            if action.kind == "cancel":
                order: VenueOrder = by_id[action.target]
                await broker.cancel_order(order)
                action.done = True
            elif action.kind in ("check", "close"):
                handle = client.get_workflow_handle(watchers[action.target])
                if action.kind == "check":
                    await handle.signal(PositionWorkflow.check_now)
                else:
                    await handle.signal(PositionWorkflow.close_books, "reconciled")
                action.done = True
            elif action.kind == "adopt":
                holding = AdoptedHolding(
                    symbol=action.symbol,
                    qty=action.qty,
                    avg_entry=action.price,
                    cost=action.qty * action.price,
                    entry_time_ms=report.time_ms,
                    side=action.side,
                )
                await client.get_workflow_handle(wid).execute_update(
                    DecisionWorkflow.adopt, AdoptRequest(holding=holding), result_type=str
                )
                action.done = True
        except Exception as err:  # noqa: BLE001 - one failed action does not stop the others
            action.error = f"{type(err).__name__}: {err}"[:200]
            log.error("reconcile %s %s failed: %s", action.kind, action.target, action.error)
    pending = [a for a in report.actions if a.kind != "check" and not a.done]
    report = report.model_copy(
        update={"dry_run": False, "ok": not report.mismatches and not pending}
    )
    if journal is not None and report.actions:
        try:
            await asyncio.to_thread(journal.record_reconcile, report)
        except Exception as err:  # noqa: BLE001 - the actions are done; the log keeps them
            log.error("reconciliation actions not journaled: %s", err)
    try:
        await client.get_workflow_handle(wid).signal(
            DecisionWorkflow.reconciled, summary_of(report, source)
        )
    except Exception as err:  # noqa: BLE001 - the report is still printed and logged
        log.error("reconciliation not handed to the account: %s", err)
    return report


INCOME_LOOKBACK_MS = 7 * 86_400_000  # the first round reads a week of funding


async def journal_income(settings: Settings, broker: Broker, journal: Journal) -> int:
    """Journal the futures funding entries not journaled yet; how many were new."""
    if not isinstance(broker, ExchangeBroker) or broker.config.market != "futures":
        return 0
    known = await asyncio.to_thread(journal.income, settings.account)
    since = max((e.time_ms for e in known), default=int(time.time() * 1000) - INCOME_LOOKBACK_MS)
    new = 0
    for entry in await broker.income(since):
        new += await asyncio.to_thread(journal.record_income, settings.account, entry)
    return new


async def reconcile_forever(
    client: Client,
    settings: Settings,
    broker: Broker,
    stop: asyncio.Event,
    journal: Journal | None = None,
) -> None:
    """At start, then every ``reconcile_every_s``; a failed round is logged and retried on
    the next one. Futures funding is journaled on the same round."""
    while not stop.is_set():
        try:
            report = await run_reconcile(client, settings, broker, dry_run=False, journal=journal)
            record_metrics(report)
            for line in report.lines():
                (log.info if report.ok else log.warning)("%s", line)
            if journal is not None:
                new = await journal_income(settings, broker, journal)
                if new:
                    log.info("journaled %d funding entr%s", new, "y" if new == 1 else "ies")
        except Exception as err:  # noqa: BLE001 - the worker goes on without it
            log.warning("reconciliation failed this round: %s: %s", type(err).__name__, err)
        try:
            await asyncio.wait_for(stop.wait(), settings.reconcile_every_s)
        except TimeoutError:
            continue


def record_metrics(report: ReconcileReport) -> None:
    """One round on the worker's Prometheus endpoint: each action and each unresolved
    difference counts as a mismatch, labelled by what was done about it."""
    from workers.telemetry import process_meter

    meter = process_meter()
    metrics.add(meter, metrics.RECONCILE_RUNS, account=report.account)
    for action in report.actions:
        metrics.add(meter, metrics.RECONCILE_MISMATCHES, account=report.account, action=action.kind)
    metrics.add(
        meter,
        metrics.RECONCILE_MISMATCHES,
        len(report.mismatches),
        account=report.account,
        action="unresolved",
    )
