"""PositionWorkflow: one per open position, from its entry fill until its exit fill.

Two timers drive it: the safety layer (default every 30 s: stop loss, trailing stop, drawdown
guard, time stop on the latest price) and the agent layer (default every 3 min: the position
scorer, and Claude when it matters). The agent layer runs as a task of its own, so the safety
layer never waits for it: a slow LLM call or a lost ``evaluate_position`` attempt cannot delay a
stop. Exit requests from either layer or from the DecisionWorkflow all land in one field, and
the main loop acts on the first: one exit order, whoever asks first.

With a real broker (``exchange_stops``) the exchange holds a protective stop too, at the safety
layer's own level (``trading/protective_stop.py``): placed after the entry, moved up with the
trail and resized after an add (a cancel, then a new stop with a new order sequence), read on
every safety tick so a stop that filled while the engine was away is booked as the exit, and
cancelled before any exit order (a cancel that finds it filled books that instead of selling).

No single failure ends the workflow: a failed order, activity or signal is recorded as an
incident (``status`` query), a rejected exit is reported to the DecisionWorkflow and tried
again, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading import exit_plan, metrics
    from trading.models import (
        ClosedTrade,
        Fill,
        LLMCallInfo,
        MarketView,
        OrderRequest,
        OrderStatus,
        PositionSide,
        PositionStatus,
        Side,
        StopRef,
        StopRequest,
        StopState,
    )
    from trading.orders import client_order_id
    from trading.protective_stop import should_move, stop_level, stop_loss_level, triggers_now
    from trading.safety import best_of, check_safety, mark_value, net_pnl_pct
    from trading.snapshot import PositionMark, RegimeReading, SnapshotContext
    from trading.state import (
        ERROR_TEXT_MAX,
        INCIDENTS_KEPT,
        AddOrder,
        BoardPricesRequest,
        BoardViewRequest,
        EvaluateRequest,
        ExitFailed,
        Incident,
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
    from workflows import ui_text
    from workflows.patches import decide_patches
    from workflows.search_attributes import OCW_EXIT_REASON, OCW_POSITION_STATUS

BTC = "BTC/USDT"
QTY_RTOL = 1e-9  # a fill within this of the asked quantity is the whole of it
# a price the stream has not moved for this many safety intervals is stale (wall seconds, at
# least STALE_MIN_S): the check still runs on it (an exit on it is conservative) but says so
STALE_INTERVALS = 3.0
# a safety check due this soon after an agent check's wake-up runs in it: the dev server fires
# sub-second timers about 1 s late, which made every sixth tick late (bench/load.py)
SAFETY_JOIN_MS = 1_000
# a lean safety check trusts the price board when it is younger than this share of the safety
# interval (1.5 s live; the listener writes it every 0.5 s), else it asks the listener
BOARD_MAX_AGE_FRACTION = 0.05
# a lean position's agent check reads the feature board (younger than this share of the agent
# interval: 9 s live, written every 2 s) before it asks the listener; histories before it did not
AGENT_VIEW_PATCH = "agent-view-from-board"
SAFETY_JOINS_AGENT_PATCH = "safety-joins-agent-wake"
EARLY_PATCHES = "patches-in-first-task"  # see workflows/decision.py decide_patches
LATER_PATCHES = (SAFETY_JOINS_AGENT_PATCH, AGENT_VIEW_PATCH)
STALE_MIN_S = 10.0
# a rejected exit is asked again by the safety layer after 1, 2, 4, ... safety intervals
EXIT_BACKOFF_MAX_INTERVALS = 20
# position_closed to the owner: tries with growing pauses before the trade is left in the
# workflow's result, where the DecisionWorkflow's check finds it
OWNER_SIGNAL_TRIES = 5


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


@workflow.defn(name="PositionWorkflow", sandboxed=False)
class PositionWorkflow:
    @workflow.init
    def __init__(self, inp: PositionInput) -> None:
        # state exists before run() so that signals delivered with the first task are kept
        self._s: PositionState | None = inp.state
        self._inp: PositionInput | None = inp
        self._agent: asyncio.Task[None] | None = None
        self._check_now = False  # a reconciliation asked for a safety check now
        # the status the search attribute holds (set OPEN at start by ``start_position``)
        self._shown_status: str | None = inp.state.status.value
        self._alarms: set[int] = set()  # deadlines (workflow ms) with a timer running
        self._ringing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ messages

    @workflow.signal
    def exit(self, reason: str | None = None) -> None:
        """Ask for an exit (decision SELL, close-all, or by hand)."""
        s = self._state
        if s.status == PositionStatus.OPEN and not s.exit_requested:
            s.exit_requested = reason or "manual"

    @workflow.signal
    def close_books(self, reason: str = "reconciled") -> None:
        """Reconciliation: the exchange no longer holds this position (sold outside the
        engine). Close the books at the last price, without an order. Ignored while an exit
        is under way (it books itself)."""
        s = self._state
        if s.status == PositionStatus.OPEN and not s.exit_requested:
            s.close_books = reason or "reconciled"

    @workflow.signal
    def check_now(self) -> None:
        """Run the safety check now (reconciliation saw the exchange's stop end)."""
        self._check_now = True

    @workflow.signal
    def add(self, order: AddOrder) -> None:
        """An ADD approved by the DecisionWorkflow (it owns cash and limits). Kept while an
        exit is in flight: a rejected exit leaves the position open and the add still due."""
        s = self._state
        if s.status != PositionStatus.CLOSED:
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
        decide_patches(EARLY_PATCHES, LATER_PATCHES)
        s = self._state
        now = self._now_ms()
        if s.next_safety_ms is None:
            s.next_safety_ms = now + self._safety_ms()
        if s.next_agent_ms is None:
            s.next_agent_ms = now + self._first_agent_ms()
        await self._protect()
        ticks = 0
        while s.status != PositionStatus.CLOSED:
            self._show()
            if s.close_books and not s.exit_requested:
                await self._close_books(s.close_books)
                continue
            if s.exit_requested:
                await self._exit(s.exit_requested)
                continue
            if s.pending_adds:
                await self._add(s.pending_adds.pop(0))
                continue
            now = self._now_ms()
            if now >= s.next_safety_ms or self._check_now:
                if not self._check_now:  # how late the timer let this check run
                    metrics.observe(
                        workflow.metric_meter(),
                        metrics.SAFETY_LAG,
                        (now - s.next_safety_ms) / 1000,
                        account=s.account,
                    )
                self._check_now = False
                s.next_safety_ms = now + self._safety_ms()
                await self._safety_tick()
                ticks += 1
                continue
            if self._agent is None and now >= s.next_agent_ms:
                s.next_agent_ms = now + _ms(self._input.params.agent_interval_s)
                self._agent = asyncio.create_task(self._agent_tick())
                if s.next_safety_ms - now < SAFETY_JOIN_MS and workflow.patched(
                    SAFETY_JOINS_AGENT_PATCH
                ):
                    s.next_safety_ms = now  # in this wake-up: a sub-second timer fires late
                    continue
            if self._agent is None and self._should_continue_as_new(ticks):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (s.exit_requested or s.pending_adds):
                    workflow.continue_as_new(self._input.model_copy(update={"state": s}))
            # while an agent check runs, its next one is not due before the next safety tick
            checking = self._agent is not None
            due = s.next_safety_ms if checking else min(s.next_safety_ms, s.next_agent_ms)
            self._arm(due)
            await workflow.wait_condition(
                lambda due=due: (
                    bool(s.exit_requested or s.pending_adds or self._check_now)
                    or self._now_ms() >= due
                )
            )
        self._show()
        await self._stop_agent()
        metrics.add(
            workflow.metric_meter(), metrics.EXITS, account=s.account, reason=s.exit_reason or "?"
        )
        return s.trade

    def _show(self) -> None:
        """The UI's view of the position now (no history cost); its search attributes when
        its status changes (only on a server that has them)."""
        s = self._state
        params = self._input.params
        safety = check_safety(s.avg_entry, self._best(), s.last_price, params, 0.0, side=s.side)
        value = mark_value(s.side, s.qty, s.avg_entry, s.last_price, params.fee_rate)
        pnl = (s.trade.pnl if s.trade else value - s.cost) if s.cost > 0 else 0.0
        workflow.set_current_details(
            ui_text.position_now(
                s.symbol,
                s.trade.qty if s.trade else s.qty,
                s.avg_entry,
                s.trade.exit_price if s.trade else s.last_price,
                pnl,
                s.trade.pnl_pct
                if s.trade
                else net_pnl_pct(s.avg_entry, s.last_price, params.fee_rate, side=s.side),
                stop_loss_level(s.avg_entry, params, s.side),
                safety.trail_price,
                s.stop.stop_price if s.stop is not None and s.stop.working else None,
                s.last_verdict,
                s.status.value + (f" ({s.exit_reason})" if s.exit_reason else ""),
                exit_plan.describe(s.exit_plan) if s.exit_plan is not None else None,
                side=s.side,
            )
        )
        if not self._input.search_attributes or s.status.value == self._shown_status:
            return
        updates = [OCW_POSITION_STATUS.value_set(s.status.value)]
        if s.exit_reason:
            updates.append(OCW_EXIT_REASON.value_set(s.exit_reason))
        workflow.upsert_search_attributes(updates)
        self._shown_status = s.status.value

    def _arm(self, due_ms: int) -> None:
        """A timer that wakes the loop at ``due_ms``, never cancelled: an exit or an add that
        wakes the loop earlier leaves it to fire (harmlessly). Cancelling a timer that fires
        in the same instant breaks Temporal's time-skipping test server ("invalid history
        builder state"), and an uncancelled timer costs nothing more."""
        if due_ms in self._alarms:
            return
        self._alarms.add(due_ms)

        label = "safety check" if due_ms == self._state.next_safety_ms else "agent check"

        async def ring() -> None:
            await workflow.sleep(
                timedelta(milliseconds=max(1, due_ms - self._now_ms())), summary=label
            )
            self._alarms.discard(due_ms)

        task = asyncio.create_task(ring())
        self._ringing.add(task)  # a reference until it is done
        task.add_done_callback(self._ringing.discard)

    def _should_continue_as_new(self, ticks: int) -> bool:
        s = self._state
        if s.exit_requested or s.pending_adds:
            return False
        limit = self._input.max_ticks_per_run
        if limit is not None and ticks >= limit:
            return True
        return workflow.info().is_continue_as_new_suggested()

    async def _stop_agent(self) -> None:
        """A closed position needs no verdict, but the run must not end with an agent check
        still in flight (its commands would follow the completion): wait for it to finish
        (its calls are bounded; its answer is ignored once the position is closed)."""
        await workflow.wait_condition(lambda: self._agent is None)

    # ------------------------------------------------------------ safety layer

    async def _board_price(self) -> PricesResult | None:
        """The price from the listener's price board, a local activity (no cross-process
        task, no second workflow task); None when the board cannot say (stale, absent)."""
        s = self._state
        max_age_s = self._input.params.safety_interval_s * BOARD_MAX_AGE_FRACTION
        try:
            res = await workflow.execute_local_activity(
                api.BOARD_PRICES,
                BoardPricesRequest(
                    board=self._input.market_task_queue, symbols=[s.symbol], max_age_s=max_age_s
                ),
                summary=f"price of {s.symbol} (board)",
                result_type=PricesResult,
                **api.BOARD_CALL.kwargs(),
            )
        except ActivityError as err:
            workflow.logger.warning("price board for %s: %s", s.symbol, api.failure_text(err))
            return None
        return res if s.symbol in res.prices else None

    async def _fetch_price(self, call: api.CallOptions, board: bool = False) -> float | None:
        """The listener's latest price, bounded in time; None when it cannot be had. A safety
        check of a lean position reads the price board first."""
        s = self._state
        res = await self._board_price() if board else None
        if res is None:
            try:
                res = await workflow.execute_activity(
                    api.MARKET_PRICES,
                    PricesRequest(symbols=[s.symbol]),
                    summary=f"price of {s.symbol}",
                    task_queue=self._input.market_task_queue,
                    result_type=PricesResult,
                    **call.kwargs(),
                )
            except ActivityError as err:
                workflow.logger.warning(
                    "price for %s unavailable: %s", s.symbol, api.failure_text(err)
                )
                return None
        price = res.prices.get(s.symbol)
        if price is None:
            return None
        s.last_price = price
        s.last_price_ms = max(s.last_price_ms, res.time_ms.get(s.symbol, s.last_price_ms))
        s.price_at_ms = self._now_ms()
        s.price_age_s = res.age_s.get(s.symbol)
        s.peak_price = max(s.peak_price, price)
        s.trough_price = min(s.trough_price, price)
        return price

    async def _safety_tick(self) -> None:
        s = self._state
        s.safety_checks += 1
        await self._check_stop()
        if s.status == PositionStatus.CLOSED:
            return
        price = await self._fetch_price(api.SAFETY_PRICE_CALL, board=self._input.lean_ticks)
        if price is None:
            s.missed_checks += 1
            if not s.price_stale:
                self._incident("safety check", "no price from the listener: stops unchecked")
            s.price_stale = True
            return
        stale_after = max(STALE_MIN_S, STALE_INTERVALS * self._input.params.safety_interval_s)
        stale = s.price_age_s is not None and s.price_age_s > stale_after
        if stale:
            s.stale_checks += 1
            if not s.price_stale:
                self._incident(
                    "safety check",
                    f"stale price {price:.8g}: the stream has not moved it for "
                    f"{s.price_age_s:.0f}s (stop checked on it, exits only)",
                )
        s.price_stale = stale
        hours = max(0.0, (s.last_price_ms - s.entry_time_ms) / 3_600_000)
        result = check_safety(
            s.avg_entry, self._best(), price, self._input.params, hours, side=s.side
        )
        if not result.exit:
            self._watch_plan(price, None)
            await self._protect()
            return
        if s.exit_requested:
            return
        if s.exit_retry_after_ms is not None and self._now_ms() < s.exit_retry_after_ms:
            return  # the last exit was rejected: ask again after the backoff
        s.exit_requested = result.reason or "safety"

    def _watch_plan(self, price: float | None, features: dict[str, float] | None) -> None:
        """The exit plan's target and invalidation, once each (pure code, no command): an
        invalidation exits, unless Claude may judge the position (then it is asked at once);
        a reached target asks the agent layer at once (the trailing stop guards the gain)."""
        s = self._state
        plan = s.exit_plan
        if plan is None or s.status != PositionStatus.OPEN or s.exit_requested:
            return
        event = None
        if "invalidated" not in s.plan_fired and exit_plan.invalidated(plan, price, features):
            event = "invalidated"
        elif (
            "target" not in s.plan_fired
            and price is not None
            and exit_plan.target_reached(plan, price, s.side)
        ):
            event = "target"
        if event is None:
            return
        s.plan_fired.append(event)
        c = plan.invalidation
        s.plan_event = (
            f"invalidated: {c.metric} {c.operator} {c.threshold:g}"
            + (f" ({c.reason})" if c.reason else "")
            if event == "invalidated"
            else f"target {plan.target_price:.6g} reached"
        )
        if event == "invalidated" and not self._llm_on():
            s.exit_requested = "plan_invalidated"
            return
        s.next_agent_ms = self._now_ms()  # the agent layer looks at it in this wake-up

    # ------------------------------------------------------------ agent layer

    async def _agent_tick(self) -> None:
        """The 5-signal scorer on every tick; Claude when allowed, at most every
        ``llm_eval_interval_s`` unless the scorer leans EXIT or ADD (then Claude arbitrates).
        If the LLM call fails the scorer's verdict stands. Runs beside the safety layer."""
        try:
            await self._agent_check()
        except Exception as err:  # noqa: BLE001 - contained: the agent layer is advisory
            self._incident("agent check", err)
        finally:
            self._agent = None

    async def _agent_check(self) -> None:
        s = self._state
        s.agent_checks += 1
        symbols = [s.symbol] if s.symbol == BTC else [s.symbol, BTC]
        try:
            view = await self._features(symbols)
            features = view.symbols.get(s.symbol)
            if features is not None and s.exit_plan is not None:
                self._watch_plan(None, exit_plan.plan_features(features))
                if s.exit_requested:
                    return
            request = EvaluateRequest(
                position=s,
                features=features,
                btc_features=view.symbols.get(BTC),
                params=self._input.params,
            )
            verdict = await self._score(request)
        except ActivityError as err:
            workflow.logger.warning(
                "agent layer skipped for %s: %s", s.position_id, api.failure_text(err)
            )
            return
        event = s.plan_event
        if self._llm_due(verdict):
            verdict = await self._llm_verdict(request) or verdict
        s.plan_event = None  # told once
        s.last_score = verdict.score
        s.last_verdict = f"{verdict.verdict} ({verdict.source})"
        if s.status != PositionStatus.OPEN:
            return  # closing meanwhile: the verdict is moot
        if event is not None and event.startswith("invalidated") and verdict.source != "llm":
            if not s.exit_requested:  # Claude could not be asked: the plan stands
                s.exit_requested = "plan_invalidated"
            return
        if verdict.verdict == "EXIT" and not s.exit_requested:
            s.exit_requested = "agent_exit" if verdict.source != "llm" else "llm_exit"
        elif verdict.verdict == "ADD":
            await self._tell_owner("add_request", s.position_id)

    async def _features(self, symbols: list[str]) -> MarketView:
        """The agent check's features: from the feature board for a lean position (a local
        activity; older histories did not have it, hence the patch), else, or when the board
        cannot say, from the listener."""
        interval = api.AGENT_FEATURES_INTERVAL
        if self._input.lean_ticks and workflow.patched(AGENT_VIEW_PATCH):
            view = await self._board_view(symbols, interval)
            if view is not None:
                return view
        return await workflow.execute_activity(
            api.MARKET_VIEW,
            MarketViewRequest(symbols=symbols, interval=interval),
            summary=f"{interval} features of {', '.join(symbols)}",
            task_queue=self._input.market_task_queue,
            result_type=MarketView,
            **api.MARKET_CALL.kwargs(),
        )

    async def _board_view(self, symbols: list[str], interval: str) -> MarketView | None:
        max_age_s = self._input.params.agent_interval_s * BOARD_MAX_AGE_FRACTION
        try:
            view = await workflow.execute_local_activity(
                api.BOARD_VIEW,
                BoardViewRequest(
                    board=self._input.market_task_queue,
                    symbols=symbols,
                    interval=interval,
                    max_age_s=max_age_s,
                ),
                summary=f"{interval} features of {', '.join(symbols)} (board)",
                result_type=MarketView,
                **api.BOARD_CALL.kwargs(),
            )
        except ActivityError as err:
            workflow.logger.warning("feature board: %s", api.failure_text(err))
            return None
        return None if view.missing else view

    async def _score(self, request: EvaluateRequest) -> PositionVerdict:
        """The 5-signal scorer: pure CPU on the trading worker, so a lean position runs it
        as a local activity (inside this workflow task) rather than a task of its own."""
        summary = f"scorer: evaluate {self._state.symbol}"
        options = api.EVALUATE_CALL.kwargs()  # no heartbeat: valid for both kinds
        if self._input.lean_ticks:
            return await workflow.execute_local_activity(
                api.EVALUATE_POSITION,
                request,
                summary=summary,
                result_type=PositionVerdict,
                **options,
            )
        return await workflow.execute_activity(
            api.EVALUATE_POSITION,
            request,
            summary=summary,
            task_queue=self._input.trading_task_queue,
            result_type=PositionVerdict,
            **options,
        )

    def _llm_on(self) -> bool:
        s = self._state
        return s.llm_on if s.llm_on is not None else self._input.llm_enabled

    def _llm_due(self, scorer: PositionVerdict) -> bool:
        s = self._state
        if not self._llm_on():
            return False
        if s.plan_event is not None:
            return True  # a plan's condition fired: Claude is asked now
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
                summary=f"Claude: evaluate {s.symbol}",
                task_queue=self._input.trading_task_queue,
                result_type=PositionVerdict,
                **api.llm_call(self._input.llm_call_timeout_s, api.LLM_EVALUATE_RETRY).kwargs(),
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
            report = LLMReport(
                position_id=s.position_id,
                ok=False,
                info=info,
                error=error,
                error_type=api.failure_type(err),
            )
        await self._tell_owner("llm_report", report)
        return verdict

    # ------------------------------------------------------------ orders

    async def _place(self, side: Side, qty: float, ref_price: float, reason: str) -> Fill | str:
        """One order with a fresh sequence number; its Fill, or the text of its final error.
        Rejected fills are counted, not kept: a retried exit must not grow the state."""
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
            position_side=s.side,
        )
        try:
            fill = await workflow.execute_activity(
                api.PLACE_ORDER,
                order,
                summary=f"place {side.value} {ui_text.qty(qty)} {s.symbol} ({reason})",
                task_queue=self._input.trading_task_queue,
                result_type=Fill,
                **api.ORDER_CALL.kwargs(),
            )
        except ActivityError as err:  # a final error: nothing was placed
            s.rejected_orders += 1
            s.last_order_error = api.failure_text(err, ERROR_TEXT_MAX)
            return s.last_order_error
        if not fill.filled:
            s.rejected_orders += 1
            s.last_order_error = fill.reason[:ERROR_TEXT_MAX]
            return f"rejected: {s.last_order_error}"
        s.fills.append(fill)
        return fill

    async def _exit_price(self) -> float:
        """A price to sell near, never waited for: a quick read from the listener (seconds
        at most, with it down), else the last one known, said so in the log. (A market
        order at an exchange needs none; the paper broker fills around this one.)"""
        s = self._state
        price = await self._fetch_price(api.EXIT_PRICE_CALL)
        if price is not None:
            return price
        self._incident(
            "exit price",
            f"no fresh price: selling at the last known {s.last_price:.8g} "
            f"(market time {s.last_price_ms})",
        )
        return s.last_price

    async def _exit(self, reason: str) -> None:
        s = self._state
        s.status = PositionStatus.CLOSING
        if s.stop is not None and s.stop.working:
            gone = await self._cancel_stop()
            if s.status == PositionStatus.CLOSED:
                return  # the exchange's stop sold it first
            if not gone:
                await self._exit_failed(reason, "the exchange stop could not be cancelled")
                return
            s.status = PositionStatus.CLOSING
        price = await self._exit_price()
        result = await self._place(s.side.exit_side, s.qty, price, reason)
        if isinstance(result, str):
            await self._exit_failed(reason, result)
            return
        await self._book_exit(result, reason)

    async def _close_books(self, reason: str) -> None:
        """Book the position closed at the last price with no order (the exchange holds none
        of it any more); its stop, if one still works, is cancelled first."""
        s = self._state
        s.close_books = None
        if s.stop is not None and s.stop.working:
            gone = await self._cancel_stop()
            if s.status == PositionStatus.CLOSED or not gone:
                return
        self._incident("reconciliation", f"closed in the books at {s.last_price:.8g}: {reason}")
        gone_fill = Fill(
            client_order_id=f"{s.position_id}-{reason}"[:64],
            position_id=s.position_id,
            symbol=s.symbol,
            side=s.side.exit_side,
            status=OrderStatus.FILLED,
            qty=s.qty,
            price=s.last_price,
            fee=0.0,
            market_time_ms=s.last_price_ms,
            reason=reason,
        )
        await self._book_exit(gone_fill, reason)

    async def _book_exit(self, fill: Fill, reason: str) -> None:
        """Book a sell of the position (an exit order, or the exchange's stop): the whole of
        it closes the trade; a part leaves it open with the rest."""
        s = self._state
        s.exit_qty += fill.qty
        s.exit_value += fill.qty * fill.price
        s.exit_fees += fill.fee
        if fill.qty + fill.dust < s.qty * (1 - QTY_RTOL):
            # part sold (an IOC order's rest expired): the rest is sold next, with a new order
            s.qty -= fill.qty
            s.status = PositionStatus.OPEN
            self._incident(f"exit ({reason})", f"{fill.qty:.8g} of {s.qty + fill.qty:.8g} sold")
            return
        fees = s.entry_fees + s.exit_fees
        if s.side is PositionSide.SHORT:  # sold at the entry, bought back at the exit
            pnl = (s.cost - s.entry_fees) - s.exit_value - fees
        else:
            pnl = s.exit_value - s.exit_fees - s.cost
        trade = ClosedTrade(
            trade_id=s.position_id,
            symbol=s.symbol,
            qty=s.exit_qty,
            entry_price=s.avg_entry,
            exit_price=s.exit_value / s.exit_qty,
            entry_time_ms=s.entry_time_ms,
            exit_time_ms=fill.market_time_ms,
            fees=fees,
            pnl=pnl,
            pnl_pct=pnl / s.cost if s.cost > 0 else 0.0,
            exit_reason=reason,
            signal_weights=s.signal_weights,
            side=s.side,
        )
        s.trade = trade
        s.exit_reason = reason
        s.status = PositionStatus.CLOSED
        s.pending_adds.clear()
        # trading first: the owner's books, then the journal (bounded, never blocking)
        await self._tell_owner("position_closed", trade, tries=OWNER_SIGNAL_TRIES)
        try:
            await workflow.execute_activity(
                api.JOURNAL_TRADE,
                JournalTrade(account=s.account, trade=trade),
                summary=f"journal trade {s.position_id}",
                task_queue=self._input.trading_task_queue,
                **api.JOURNAL_CALL.kwargs(),
            )
        except ActivityError as err:
            self._incident("journal trade", err)

    # ------------------------------------------------------------ the exchange's stop

    def _stop_ref(self, stop: StopState) -> StopRef:
        s = self._state
        return StopRef(
            client_order_id=stop.client_order_id,
            position_id=s.position_id,
            symbol=s.symbol,
            qty=stop.qty,
            stop_price=stop.stop_price,
            market_time_ms=s.last_price_ms,
            account=s.account,
            position_side=s.side,
        )

    async def _protect(self) -> None:
        """Keep the exchange's stop at the safety layer's level: place it, tighten it with
        the trail, resize it after an add. A level the price has already crossed (at or above
        it for a long, at or below for a short) is left to the safety layer (the exchange
        would refuse a stop that triggers at once)."""
        s = self._state
        if not self._input.exchange_stops or s.status != PositionStatus.OPEN:
            return
        if s.exit_requested or s.qty <= 0:
            return
        params = self._input.params
        level = stop_level(s.avg_entry, self._best(), s.last_price, params, s.side)
        current = s.stop if s.stop is not None and s.stop.working else None
        moved = should_move(
            current.stop_price if current else None,
            current.qty if current else 0.0,
            level,
            s.qty,
            side=s.side,
        )
        if level is None or not moved or triggers_now(level, s.last_price, s.side):
            return
        if current is not None:
            gone = await self._cancel_stop()
            if not gone or s.status != PositionStatus.OPEN:
                return
        seq = s.next_seq
        s.next_seq += 1
        request = StopRequest(
            client_order_id=client_order_id(s.position_id, seq),
            position_id=s.position_id,
            seq=seq,
            symbol=s.symbol,
            qty=s.qty,
            stop_price=level,
            market_time_ms=s.last_price_ms,
            account=s.account,
            position_side=s.side,
        )
        state = await self._stop_activity(
            api.PLACE_STOP,
            request,
            f"exchange stop {s.side.exit_side.value} {ui_text.qty(s.qty)} {s.symbol} "
            f"@ {ui_text.price(level)}",
            api.STOP_CALL,
            "exchange stop",
        )
        if state is None:
            return
        s.stop_orders += 1
        if not state.working:
            s.stop_errors += 1
            s.stop = None
            self._incident("exchange stop", f"{state.status}: {state.reason}")
            return
        s.stop = state

    async def _check_stop(self) -> None:
        """Read the exchange's stop: one that ended while the engine looked away is booked
        (its fill is the exit) or, when it sold nothing, replaced on this tick."""
        s = self._state
        if s.stop is None or not s.stop.working:
            return
        state = await self._stop_activity(
            api.STOP_STATUS,
            self._stop_ref(s.stop),
            f"read exchange stop @ {ui_text.price(s.stop.stop_price)}",
            api.STOP_READ_CALL,
            "exchange stop read",
        )
        if state is None:
            return
        if state.working:
            s.stop = state
            return
        await self._stop_ended(state)

    async def _cancel_stop(self) -> bool:
        """Cancel the exchange's stop; False when it may still work (the cancel failed).
        What it sold before it went is booked."""
        s = self._state
        assert s.stop is not None
        state = await self._stop_activity(
            api.CANCEL_STOP,
            self._stop_ref(s.stop),
            f"cancel exchange stop @ {ui_text.price(s.stop.stop_price)}",
            api.STOP_CALL,
            "exchange stop cancel",
        )
        if state is None or state.working:
            return False
        await self._stop_ended(state, cancelled=True)
        return True

    async def _stop_activity(
        self, name: str, arg: object, summary: str, call: api.CallOptions, where: str
    ) -> StopState | None:
        """One stop activity; its final failure is counted and an incident (None)."""
        try:
            return await workflow.execute_activity(
                name,
                arg,
                summary=summary,
                task_queue=self._input.trading_task_queue,
                result_type=StopState,
                **call.kwargs(),
            )
        except ActivityError as err:
            self._state.stop_errors += 1
            self._incident(where, err)
            return None

    async def _stop_ended(self, state: StopState, cancelled: bool = False) -> None:
        s = self._state
        s.stop = None
        if state.fill is not None and state.fill.filled:
            s.fills.append(state.fill)
            await self._book_exit(state.fill, "exchange_stop")
            return
        if not cancelled:
            self._incident("exchange stop", f"ended {state.status} unfilled: {state.reason}")

    async def _exit_failed(self, reason: str, error: str) -> None:
        """Nothing was sold: stay open, tell the owner (its view must not say "closing" for
        ever), and let the safety layer ask again after a growing pause."""
        s = self._state
        s.status = PositionStatus.OPEN
        s.exit_requested = None
        s.exit_failures += 1
        backoff = min(2 ** (s.exit_failures - 1), EXIT_BACKOFF_MAX_INTERVALS)
        s.exit_retry_after_ms = self._now_ms() + backoff * self._safety_ms()
        self._incident(f"exit ({reason})", error)
        await self._tell_owner(
            "exit_failed",
            ExitFailed(position_id=s.position_id, symbol=s.symbol, reason=reason, error=error),
        )

    async def _add(self, order: AddOrder) -> None:
        s = self._state
        result = await self._place(s.side.entry_side, order.qty, order.ref_price, order.reason)
        if isinstance(result, Fill):
            fill = result
            new_qty = s.qty + fill.qty
            s.avg_entry = (s.avg_entry * s.qty + fill.price * fill.qty) / new_qty
            s.qty = new_qty
            s.cost += fill.qty * fill.price + fill.fee
            s.entry_fees += fill.fee
            await self._protect()
        else:
            self._incident("add", result)
            fill = Fill(
                client_order_id=client_order_id(s.position_id, s.next_seq - 1),
                position_id=s.position_id,
                symbol=s.symbol,
                side=s.side.entry_side,
                status=OrderStatus.REJECTED,
                qty=0.0,
                price=0.0,
                fee=0.0,
                market_time_ms=s.last_price_ms,
                reason=result[:ERROR_TEXT_MAX],
            )
        await self._tell_owner(
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

    async def _tell_owner(self, signal: str, arg: object, tries: int = 1) -> bool:
        """Signal the DecisionWorkflow; a failure is an incident, never the end of this run.
        With ``tries`` > 1 it waits 1, 2, 4, ... safety intervals between attempts."""
        for attempt in range(tries):
            try:
                await workflow.get_external_workflow_handle(
                    self._input.decision_workflow_id
                ).signal(signal, arg)
                return True
            except Exception as err:  # noqa: BLE001 - contained and recorded
                self._incident(f"signal {signal} -> {self._input.decision_workflow_id}", err)
                if attempt + 1 < tries:
                    await workflow.sleep(timedelta(milliseconds=(2**attempt) * self._safety_ms()))
        return False

    def _incident(self, where: str, err: BaseException | str) -> None:
        s = self._state
        text = err if isinstance(err, str) else api.failure_text(err, ERROR_TEXT_MAX)
        s.incidents.append(
            Incident(
                time_ms=self._now_ms(),
                market_time_ms=s.last_price_ms,
                where=where,
                error=text[:ERROR_TEXT_MAX],
            )
        )
        del s.incidents[:-INCIDENTS_KEPT]
        workflow.logger.error("position %s: %s: %s", s.position_id, where, text)

    def _first_agent_ms(self) -> int:
        """When the first agent check is due. A lean position draws it among the safety ticks
        of the second half of the agent interval (90, 120, 150 or 180 s at the defaults):
        positions opened together (one candle close) then do not all ask for their 1h
        features in the same few seconds every 3 minutes, and each agent check still rides a
        safety check's wake-up. Deterministic: ``workflow.random()``."""
        params = self._input.params
        agent_ms = _ms(params.agent_interval_s)
        slots = agent_ms // self._safety_ms()
        if not self._input.lean_ticks or slots < 2:
            return agent_ms
        k = workflow.random().randint((slots + 1) // 2, slots)
        return k * self._safety_ms()

    def _best(self) -> float:
        """The best price seen: a long's peak, a short's trough (the state keeps both)."""
        s = self._state
        return best_of(s.side, s.peak_price, s.trough_price)

    def _safety_ms(self) -> int:
        return _ms(self._input.params.safety_interval_s)

    @property
    def _input(self) -> PositionInput:
        assert self._inp is not None
        return self._inp

    @staticmethod
    def _now_ms() -> int:
        return int(workflow.time() * 1000)
