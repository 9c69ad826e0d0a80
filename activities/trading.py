"""Activities of the trading worker: decide, place orders, evaluate positions, journal.

The class owns its broker and journal, so a test or another mode hands it different ones
(money-transfer template style). SQLite work runs in a thread so the worker's event loop keeps
serving workflow tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.broker import Broker, as_broker
from activities.family_decider import FamilyDecider, policy_spec
from activities.heartbeat import heartbeats
from activities.journal import Journal
from activities.paper_broker import PaperBroker
from trading import metrics
from trading.models import (
    AgentDecision,
    ClosedTrade,
    DecisionRecord,
    Fill,
    IncomeEntry,
    OrderRequest,
    StopRef,
    StopRequest,
    StopState,
)
from trading.policies.live import cash_decision
from trading.rule_policy import decide as rule_decide
from trading.safety import best_of, net_pnl_pct
from trading.scorer import ScorerInputs, score_position
from trading.state import (
    DecideRequest,
    EvaluateRequest,
    FundingRequest,
    JournalIncident,
    JournalTrade,
    PositionStatusRequest,
    PositionStatusView,
    PositionVerdict,
    StartPosition,
)
from workflows import activity_api as api
from workflows.search_attributes import OCW_ACCOUNT, OCW_POSITION_STATUS, OCW_SYMBOL

log = logging.getLogger(__name__)


class TradingActivities:
    def __init__(
        self,
        broker: Broker | PaperBroker,
        journal: Journal,
        client: Client | None = None,
        policy: str = "rule",
        family: FamilyDecider | None = None,
    ) -> None:
        self.broker: Broker = as_broker(broker)
        self.journal = journal
        self.client = client
        # who decides when Claude does not (issue 15): the worker's account's policy, unless
        # the request names one (DecideRequest.policy, from EngineConfig.policy)
        self.policy = policy
        self.family = family

    def all(self) -> list:
        return [
            self.decide,
            self.place_order,
            self.evaluate_position,
            self.journal_decision,
            self.journal_trade,
            self.journal_incident,
            self.start_position,
            self.position_status,
            self.place_stop,
            self.stop_status,
            self.cancel_stop,
            self.book_funding,
        ]

    @activity.defn(name=api.BOOK_FUNDING)
    async def book_funding(self, req: FundingRequest) -> list[IncomeEntry]:
        """A paper futures account's funding, booked once per entry id at the paper broker
        and journaled beside the exchange's own funding entries. An exchange books its own:
        asked there, this is a final error (the workflow never asks it)."""
        apply = getattr(self.broker, "apply_funding", None)
        if apply is None:
            raise ApplicationError(
                f"the {self.broker.kind} broker books its own funding", non_retryable=True
            )
        held = await apply(req.entries)
        for entry in held:  # the journal keeps each id once: a retry writes nothing twice
            try:
                await asyncio.to_thread(self.journal.record_income, req.account, entry)
            except Exception as err:  # noqa: BLE001 - bookkeeping never fails the booking
                log.error("funding %s not journaled: %s", entry.income_id, err)
        log.info("funding: %d entr%s booked", len(held), "y" if len(held) == 1 else "ies")
        return held

    @activity.defn(name=api.START_POSITION)
    @heartbeats
    async def start_position(self, req: StartPosition) -> str:
        """Start the position's own workflow; a retry finds it running (or done) and succeeds.

        Positions are not child workflows: they outlive any run of the DecisionWorkflow, which
        continues-as-new on its own schedule.
        """
        if self.client is None:
            raise RuntimeError("start_position needs a Temporal client")
        state = req.input.state
        extra: dict = {}
        if req.input.search_attributes:
            extra["search_attributes"] = TypedSearchAttributes(
                [
                    SearchAttributePair(OCW_ACCOUNT, state.account),
                    SearchAttributePair(OCW_SYMBOL, state.symbol),
                    SearchAttributePair(OCW_POSITION_STATUS, state.status.value),
                ]
            )
        try:
            await self.client.start_workflow(
                "PositionWorkflow",
                req.input,
                id=req.workflow_id,
                task_queue=req.input.trading_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=req.summary or None,
                static_details=req.details or None,
                **extra,
            )
        except WorkflowAlreadyStartedError:
            log.info("position workflow %s already ran (retried start)", req.workflow_id)
        return req.workflow_id

    @activity.defn(name=api.POSITION_STATUS)
    async def position_status(self, req: PositionStatusRequest) -> PositionStatusView:
        """What Temporal says of a position's workflow (and its result when it completed) and
        what the broker holds for it: the DecisionWorkflow settles a silent position on it."""
        if self.client is None:
            raise RuntimeError("position_status needs a Temporal client")
        handle = self.client.get_workflow_handle(req.workflow_id, result_type=ClosedTrade)
        trade: ClosedTrade | None = None
        try:
            desc = await handle.describe()
            status = desc.status.name if desc.status is not None else "UNKNOWN"
            if desc.status == WorkflowExecutionStatus.COMPLETED:
                trade = await handle.result()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            status = "NOT_FOUND"
        orders = await self.broker.orders_of(req.position_id)
        balances = await self.broker.balances()
        symbol = orders[0].symbol if orders else None
        return PositionStatusView(
            status=status,
            trade=trade,
            broker_orders=len(orders),
            broker_qty=balances.holdings.get(symbol, 0.0) if symbol else 0.0,
        )

    @activity.defn(name=api.DECIDE)
    @heartbeats
    async def decide(self, req: DecideRequest) -> AgentDecision:
        """The rule policy (SPEC §7), or the account's policy family (issue 15); the LLM trader
        plugs in here with the same contract."""
        family = await self._family_decide(req)
        if family is not None:
            return family
        held = {p.symbol for p in req.account_view.positions}
        derivatives = (req.context.derivatives or {}) if req.context else {}
        decision = rule_decide(
            req.market,
            held,
            position_pct=req.default_position_pct,
            max_position_pct=req.max_position_pct,
            derivatives=derivatives,
            group_weights=req.group_weights,
            plan_params=req.plan_params,
            shorts=req.shorts,
            short_held={p.symbol for p in req.account_view.positions if p.side == "short"},
            short_group_weights=req.short_group_weights,
        )
        acted = [f"{d.ticker} {d.action}" for d in decision.decisions if d.action != "HOLD"]
        log.info(
            "decision %s (%s): %s", req.decision_id, ", ".join(req.wake_reasons), acted or "hold"
        )
        return decision

    async def _family_decide(self, req: DecideRequest) -> AgentDecision | None:
        """The decision of the account's policy when it is cash or a family (None: the rule
        policy decides)."""
        text = req.policy or self.policy
        if not text or text == "rule":
            return None
        try:
            spec = policy_spec(text)
        except ValueError as err:
            raise ApplicationError(str(err), type="BadPolicy", non_retryable=True) from None
        if spec.is_rule:
            return None
        if spec.cash:
            log.info("decision %s (cash): hold", req.decision_id)
            return cash_decision(list(req.market.symbols))
        if self.family is None:
            raise ApplicationError(
                f"policy {text!r}: this worker has no bars board to read", non_retryable=True
            )
        decision = await self.family.decide(req, spec)
        acted = [f"{d.ticker} {d.action}" for d in decision.decisions if d.action != "HOLD"]
        log.info("decision %s (%s): %s", req.decision_id, spec.text(), acted or "hold")
        return decision

    @activity.defn(name=api.PLACE_ORDER)
    @heartbeats
    async def place_order(self, req: OrderRequest) -> Fill:
        """Idempotent by client order id: a retry returns the first answer, never a second fill.

        The journal's copy of the fill comes after and never fails the order: the broker holds
        the fill; a journal outage is logged (``ocw reconcile`` and the chaos audit compare)."""
        started = time.monotonic()
        fill = await self.broker.place_order(req)
        _order_metrics(req, fill, time.monotonic() - started)
        try:
            await asyncio.to_thread(self.journal.record_fill, req.account, fill)
        except Exception as err:  # noqa: BLE001 - bookkeeping must not fail a filled order
            log.error("fill %s not journaled: %s", fill.client_order_id, err)
        log.info(
            "order %s %s %s %.8g @ %.8g: %s %s",
            fill.client_order_id,
            fill.side,
            fill.symbol,
            fill.qty,
            fill.price,
            fill.status,
            fill.reason,
        )
        return fill

    @activity.defn(name=api.PLACE_STOP)
    @heartbeats
    async def place_stop(self, req: StopRequest) -> StopState:
        """A protective stop at the exchange, once per client id (a retry finds it)."""
        state = await self.broker.place_stop(req)
        log.info(
            "stop %s %s %.8g @ %.8g: %s %s",
            req.client_order_id,
            req.symbol,
            req.qty,
            req.stop_price,
            state.status,
            state.reason,
        )
        return state

    @activity.defn(name=api.STOP_STATUS)
    @heartbeats
    async def stop_status(self, ref: StopRef) -> StopState:
        return await self.broker.stop_status(ref)

    @activity.defn(name=api.CANCEL_STOP)
    @heartbeats
    async def cancel_stop(self, ref: StopRef) -> StopState:
        """Cancel a stop; what it sold first comes back (journaled like any fill)."""
        state = await self.broker.cancel_stop(ref)
        if state.fill is not None and state.fill.filled:
            try:
                await asyncio.to_thread(self.journal.record_fill, ref.account, state.fill)
            except Exception as err:  # noqa: BLE001 - bookkeeping must not fail the cancel
                log.error("stop fill %s not journaled: %s", state.client_order_id, err)
        log.info("stop %s cancelled: %s (sold %.8g)", ref.client_order_id, state.status, state.sold)
        return state

    @activity.defn(name=api.EVALUATE_POSITION)
    async def evaluate_position(self, req: EvaluateRequest) -> PositionVerdict:
        """The 5-signal scorer of SPEC §4 on the position and the latest 1h features."""
        pos = req.position
        fee = req.params.fee_rate
        f, btc = req.features, req.btc_features
        side = pos.side
        best = best_of(side, pos.peak_price, pos.trough_price)
        inputs = ScorerInputs(
            pnl_pct=net_pnl_pct(pos.avg_entry, pos.last_price, fee, side=side),
            peak_pnl_pct=net_pnl_pct(pos.avg_entry, best, fee, side=side),
            hours_held=max(0.0, (pos.last_price_ms - pos.entry_time_ms) / 3_600_000),
            entry_regime=pos.entry_regime,
            entry_vol_regime=pos.entry_vol_regime,
            current_vol_regime=pos.current_vol_regime,
            current_regime=f.regime if f else "unknown",
            momentum14=f.momentum14 if f else None,
            rsi14=f.rsi14 if f else None,
            btc_ret_1h=btc.ret_1h if btc else None,
            symbol_ret_1h=f.ret_1h if f else None,
            is_btc=pos.symbol == "BTC/USDT",
        )
        result = score_position(
            inputs, exit_score=req.params.exit_score, add_score=req.params.add_score, side=side
        )
        return PositionVerdict(
            verdict=result.verdict,
            score=result.score,
            components=dict(result.components),
            reasons=list(result.reasons),
        )

    @activity.defn(name=api.JOURNAL_DECISION)
    async def journal_decision(self, rec: DecisionRecord) -> bool:
        return await asyncio.to_thread(self.journal.record_decision, rec)

    @activity.defn(name=api.JOURNAL_TRADE)
    async def journal_trade(self, rec: JournalTrade) -> bool:
        return await asyncio.to_thread(self.journal.record_trade, rec.account, rec.trade)

    @activity.defn(name=api.JOURNAL_INCIDENT)
    async def journal_incident(self, rec: JournalIncident) -> bool:
        log.warning("incident %s: %s: %s", rec.account, rec.incident.where, rec.incident.error)
        return await asyncio.to_thread(self.journal.record_incident, rec)


def _order_metrics(req: OrderRequest, fill: Fill, elapsed_s: float) -> None:
    """Fills, refusals and the round trip on the worker's Prometheus endpoint."""
    meter = activity.metric_meter() if activity.in_activity() else None
    side = str(getattr(fill.side, "value", fill.side))
    status = str(getattr(fill.status, "value", fill.status))
    if status == "REJECTED":
        metrics.add(meter, metrics.REJECTED, account=req.account, side=side)
    else:
        metrics.add(meter, metrics.FILLS, account=req.account, side=side, status=status)
    metrics.observe(meter, metrics.ORDER_RTT, elapsed_s, account=req.account)
