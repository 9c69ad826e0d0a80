"""PositionWorkflow: one per open position, from its entry fill until its exit fill.

Two timers drive it: the safety layer (default every 30 s: stop loss, trailing stop, drawdown
guard, time stop on the latest price) and the agent layer (default every 3 min: the position
scorer, later the LLM). Exit requests from either layer or from the DecisionWorkflow all land in
one field, and the main loop acts on the first: one exit order, whoever asks first.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.models import (
        ClosedTrade,
        Fill,
        LLMCallInfo,
        MarketView,
        OrderRequest,
        OrderStatus,
        PositionStatus,
        Side,
    )
    from trading.orders import client_order_id
    from trading.safety import check_safety
    from trading.snapshot import PositionMark, RegimeReading, SnapshotContext
    from trading.state import (
        AddOrder,
        EvaluateRequest,
        JournalTrade,
        LLMReport,
        MarketViewRequest,
        PositionContext,
        PositionInput,
        PositionState,
        PositionUpdate,
        PositionVerdict,
        PricesRequest,
        PricesResult,
    )
    from workflows import activity_api as api

BTC = "BTC/USDT"


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


@workflow.defn(name="PositionWorkflow")
class PositionWorkflow:
    @workflow.init
    def __init__(self, inp: PositionInput) -> None:
        # state exists before run() so that signals delivered with the first task are kept
        self._s: PositionState | None = inp.state
        self._inp: PositionInput | None = inp

    # ------------------------------------------------------------ messages

    @workflow.signal
    def exit(self, reason: str | None = None) -> None:
        """Ask for an exit (decision SELL, close-all, or by hand)."""
        s = self._state
        if s.status == PositionStatus.OPEN and not s.exit_requested:
            s.exit_requested = reason or "manual"

    @workflow.signal
    def add(self, order: AddOrder) -> None:
        """An ADD approved by the DecisionWorkflow (it owns cash and limits)."""
        s = self._state
        if s.status == PositionStatus.OPEN:
            s.pending_adds.append(order)

    @workflow.signal
    def market_context(self, ctx: PositionContext) -> None:
        """The crypto regime (for the scorer) and the macro trail multiplier changed."""
        s = self._state
        if ctx.vol_regime is not None:
            s.current_vol_regime = ctx.vol_regime
        if ctx.trail_multiplier is not None and self._inp is not None:
            params = self._inp.params.model_copy(update={"trail_multiplier": ctx.trail_multiplier})
            self._inp = self._inp.model_copy(update={"params": params})

    @workflow.signal
    def llm_mode(self, on: bool) -> None:
        """The DecisionWorkflow's word on the LLM: off while its breaker is open or the budget spent."""
        self._state.llm_on = bool(on)

    @workflow.query
    def status(self) -> PositionState:
        return self._state

    @property
    def _state(self) -> PositionState:
        assert self._s is not None, "workflow not started"
        return self._s

    # ------------------------------------------------------------ main loop

    @workflow.run
    async def run(self, inp: PositionInput) -> ClosedTrade | None:
        s = self._state
        p = inp.params
        now = self._now_ms()
        if s.next_safety_ms is None:
            s.next_safety_ms = now + _ms(p.safety_interval_s)
        if s.next_agent_ms is None:
            s.next_agent_ms = now + _ms(p.agent_interval_s)
        ticks = 0
        while s.status != PositionStatus.CLOSED:
            if s.exit_requested:
                await self._exit(s.exit_requested)
                continue
            if s.pending_adds:
                await self._add(s.pending_adds.pop(0))
                continue
            now = self._now_ms()
            due = min(s.next_safety_ms, s.next_agent_ms)
            if due > now:
                with contextlib.suppress(TimeoutError):  # a timer tick, not an error
                    await workflow.wait_condition(
                        lambda: bool(s.exit_requested or s.pending_adds),
                        timeout=timedelta(milliseconds=due - now),
                    )
                continue
            if now >= s.next_safety_ms:
                s.next_safety_ms = now + _ms(p.safety_interval_s)
                await self._safety_tick()
            if not s.exit_requested and now >= s.next_agent_ms:
                s.next_agent_ms = now + _ms(p.agent_interval_s)
                await self._agent_tick()
            ticks += 1
            if s.exit_requested or s.pending_adds:
                continue
            if workflow.info().is_continue_as_new_suggested() or (
                inp.max_ticks_per_run is not None and ticks >= inp.max_ticks_per_run
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if s.exit_requested or s.pending_adds:
                    continue
                workflow.continue_as_new(self._input.model_copy(update={"state": s}))
        return s.trade

    # ------------------------------------------------------------ layers

    async def _fetch_price(self) -> float | None:
        s = self._state
        try:
            res = await workflow.execute_activity(
                api.MARKET_PRICES,
                PricesRequest(symbols=[s.symbol]),
                task_queue=self._input.market_task_queue,
                result_type=PricesResult,
                start_to_close_timeout=api.MARKET_TIMEOUT,
                retry_policy=api.MARKET_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("price for %s unavailable: %s", s.symbol, err.cause or err)
            return None
        price = res.prices.get(s.symbol)
        if price is None:
            return None
        s.last_price = price
        s.last_price_ms = max(s.last_price_ms, res.time_ms.get(s.symbol, s.last_price_ms))
        s.peak_price = max(s.peak_price, price)
        s.trough_price = min(s.trough_price, price)
        return price

    async def _safety_tick(self) -> None:
        s = self._state
        s.safety_checks += 1
        price = await self._fetch_price()
        if price is None:
            return
        hours = max(0.0, (s.last_price_ms - s.entry_time_ms) / 3_600_000)
        result = check_safety(s.avg_entry, s.peak_price, price, self._input.params, hours)
        if result.exit and not s.exit_requested:
            s.exit_requested = result.reason or "safety"

    async def _agent_tick(self) -> None:
        """The 5-signal scorer on every tick; Claude when allowed, at most every
        ``llm_eval_interval_s`` unless the scorer leans EXIT or ADD (then Claude arbitrates).
        If the LLM call fails the scorer's verdict stands."""
        s = self._state
        s.agent_checks += 1
        symbols = [s.symbol] if s.symbol == BTC else [s.symbol, BTC]
        try:
            view = await workflow.execute_activity(
                api.MARKET_VIEW,
                MarketViewRequest(symbols=symbols, interval="1h"),
                task_queue=self._input.market_task_queue,
                result_type=MarketView,
                start_to_close_timeout=api.MARKET_TIMEOUT,
                retry_policy=api.MARKET_RETRY,
            )
            request = EvaluateRequest(
                position=s,
                features=view.symbols.get(s.symbol),
                btc_features=view.symbols.get(BTC),
                params=self._input.params,
            )
            verdict = await workflow.execute_activity(
                api.EVALUATE_POSITION,
                request,
                task_queue=self._input.trading_task_queue,
                result_type=PositionVerdict,
                start_to_close_timeout=api.DECIDE_TIMEOUT,
                retry_policy=api.DECIDE_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning(
                "agent layer skipped for %s: %s", s.position_id, err.cause or err
            )
            return
        if self._llm_due(verdict):
            verdict = await self._llm_verdict(request) or verdict
        s.last_score = verdict.score
        s.last_verdict = f"{verdict.verdict} ({verdict.source})"
        if verdict.verdict == "EXIT" and not s.exit_requested:
            s.exit_requested = "agent_exit" if verdict.source != "llm" else "llm_exit"
        elif verdict.verdict == "ADD":
            await workflow.get_external_workflow_handle(self._input.decision_workflow_id).signal(
                "add_request", s.position_id
            )

    def _llm_due(self, scorer: PositionVerdict) -> bool:
        s = self._state
        on = s.llm_on if s.llm_on is not None else self._input.llm_enabled
        if not on:
            return False
        if scorer.verdict != "HOLD" or s.last_llm_eval_ms is None:
            return True
        return self._now_ms() - s.last_llm_eval_ms >= _ms(self._input.llm_eval_interval_s)

    async def _llm_verdict(self, request: EvaluateRequest) -> PositionVerdict | None:
        s = self._state
        s.last_llm_eval_ms = self._now_ms()
        s.llm_checks += 1
        request = request.model_copy(
            update={
                "context": SnapshotContext(
                    position_marks={
                        s.symbol: PositionMark(peak_price=s.peak_price, trough_price=s.trough_price)
                    },
                    crypto_regime=RegimeReading(label=s.current_vol_regime)
                    if s.current_vol_regime and s.current_vol_regime != "unknown"
                    else None,
                    fee_rate=self._input.params.fee_rate,
                )
            }
        )
        report: LLMReport
        verdict: PositionVerdict | None = None
        try:
            verdict = await workflow.execute_activity(
                api.LLM_EVALUATE_POSITION,
                request,
                task_queue=self._input.trading_task_queue,
                result_type=PositionVerdict,
                start_to_close_timeout=api.LLM_EVALUATE_TIMEOUT,
                retry_policy=api.LLM_EVALUATE_RETRY,
            )
            report = LLMReport(position_id=s.position_id, ok=True, info=verdict.llm)
        except ActivityError as err:
            error = api.failure_text(err)
            workflow.logger.warning("LLM position check failed for %s: %s", s.position_id, error)
            info = None  # an invalid answer still cost tokens: the budget counts them
            detail = api.failure_details(err)
            if detail is not None:
                with contextlib.suppress(ValueError):
                    info = LLMCallInfo.model_validate(detail)
            report = LLMReport(position_id=s.position_id, ok=False, info=info, error=error)
        await workflow.get_external_workflow_handle(self._input.decision_workflow_id).signal(
            "llm_report", report
        )
        return verdict

    # ------------------------------------------------------------ orders

    async def _place(self, side: Side, qty: float, ref_price: float, reason: str) -> Fill:
        s = self._state
        seq = s.next_seq
        s.next_seq += 1
        order = OrderRequest(
            client_order_id=client_order_id(s.position_id, seq),
            position_id=s.position_id,
            seq=seq,
            symbol=s.symbol,
            side=side,
            qty=qty,
            ref_price=ref_price,
            market_time_ms=s.last_price_ms,
            reason=reason,
            account=s.account,
        )
        fill = await workflow.execute_activity(
            api.PLACE_ORDER,
            order,
            task_queue=self._input.trading_task_queue,
            result_type=Fill,
            start_to_close_timeout=api.ORDER_TIMEOUT,
            retry_policy=api.ORDER_RETRY,
        )
        s.fills.append(fill)
        return fill

    async def _exit(self, reason: str) -> None:
        s = self._state
        s.status = PositionStatus.CLOSING
        await self._fetch_price()
        fill = await self._place(Side.SELL, s.qty, s.last_price, reason)
        if fill.status != OrderStatus.FILLED:
            # Nothing was sold: stay open, log loudly, and let the next tick try again.
            workflow.logger.error("exit of %s rejected: %s", s.position_id, fill.reason)
            s.status = PositionStatus.OPEN
            s.exit_requested = None
            return
        proceeds = fill.qty * fill.price - fill.fee
        fees = s.entry_fees + fill.fee
        pnl = proceeds - s.cost
        trade = ClosedTrade(
            trade_id=s.position_id,
            symbol=s.symbol,
            qty=fill.qty,
            entry_price=s.avg_entry,
            exit_price=fill.price,
            entry_time_ms=s.entry_time_ms,
            exit_time_ms=fill.market_time_ms,
            fees=fees,
            pnl=pnl,
            pnl_pct=pnl / s.cost if s.cost > 0 else 0.0,
            exit_reason=reason,
            signal_weights=s.signal_weights,
        )
        s.trade = trade
        s.exit_reason = reason
        s.status = PositionStatus.CLOSED
        await workflow.execute_activity(
            api.JOURNAL_TRADE,
            JournalTrade(account=s.account, trade=trade),
            task_queue=self._input.trading_task_queue,
            start_to_close_timeout=api.JOURNAL_TIMEOUT,
            retry_policy=api.JOURNAL_RETRY,
        )
        await workflow.get_external_workflow_handle(self._input.decision_workflow_id).signal(
            "position_closed", trade
        )

    async def _add(self, order: AddOrder) -> None:
        s = self._state
        fill = await self._place(Side.BUY, order.qty, order.ref_price, order.reason)
        if fill.status == OrderStatus.FILLED:
            new_qty = s.qty + fill.qty
            s.avg_entry = (s.avg_entry * s.qty + fill.price * fill.qty) / new_qty
            s.qty = new_qty
            s.cost += fill.qty * fill.price + fill.fee
            s.entry_fees += fill.fee
        await workflow.get_external_workflow_handle(self._input.decision_workflow_id).signal(
            "position_update",
            PositionUpdate(
                position_id=s.position_id,
                symbol=s.symbol,
                qty=s.qty,
                avg_entry=s.avg_entry,
                cost=s.cost,
                fill=fill,
            ),
        )

    # ------------------------------------------------------------ helpers

    @property
    def _input(self) -> PositionInput:
        assert self._inp is not None
        return self._inp

    @staticmethod
    def _now_ms() -> int:
        return int(workflow.time() * 1000)
