"""DecisionWorkflow: one per account, the engine's durable brain.

Signals only enqueue (they never await), so no wake is ever lost; the main loop takes one work
item at a time: fetch the market view, ask the policy, apply risk limits, place entry orders,
start a PositionWorkflow per entry, signal exits and adds to running positions. Portfolio,
positions, recent trades, agent memory and the gate settings live in ``DecisionState`` and
travel across continue-as-new together with any queued work.
"""

from __future__ import annotations

import contextlib

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading import circuit_breaker as breaker
    from trading import learner, llm_budget
    from trading.learner import LearnerState, LearnerUpdateRequest, PosteriorTable
    from trading.macro import MacroRegime, MacroRequest
    from trading.models import (
        Action,
        AgentDecision,
        ClosedTrade,
        DecisionRecord,
        Fill,
        LLMCallInfo,
        MarketView,
        Model,
        OrderRequest,
        OrderStatus,
        Side,
        Wake,
    )
    from trading.orders import client_order_id
    from trading.regime_crypto import CryptoRegime, CryptoRegimeRequest
    from trading.risk import check_order, cooloff_over, drawdown_update
    from trading.snapshot import (
        EngineStatus,
        MacroReading,
        MarketContext,
        MarketContextRequest,
        PositionMark,
        RegimeReading,
        SnapshotContext,
    )
    from trading.state import (
        DECISION_LOG_KEPT,
        MEMORY_MAX_CHARS,
        RECENT_TRADES_KEPT,
        AccountView,
        AddOrder,
        DecideRequest,
        DecisionInput,
        DecisionLogEntry,
        DecisionState,
        EngineConfig,
        GateSettings,
        LLMReport,
        LLMStatus,
        MarketViewRequest,
        OpenPosition,
        Portfolio,
        PositionContext,
        PositionInput,
        PositionState,
        PositionUpdate,
        StartPosition,
        StatusView,
        WorkItem,
    )
    from workflows import activity_api as api
    from workflows.position import PositionWorkflow

WAKE_IDS_KEPT = 500
GATE_ONLY_PREFIXES = ("zscore:", "timer:", "condition:", "watchdog")


def rule_may_act(reasons: list[str]) -> bool:
    """The rule policy trades on a decision-candle close or a wake by hand (any reason the gate
    does not produce), not on the gate's outlier, timer, condition or watchdog wakes."""
    return any(
        r.startswith("candle_close:") or not r.startswith(GATE_ONLY_PREFIXES) for r in reasons
    )


class ControlRequest(Model):
    """Optional payload of ``halt`` / ``resume`` / ``close_all``: a reason for the log."""

    model_config = Model.model_config | {"extra": "ignore"}
    reason: str = ""


@workflow.defn(name="DecisionWorkflow")
class DecisionWorkflow:
    @workflow.init
    def __init__(self, inp: DecisionInput) -> None:
        if inp.state is not None:
            self._s = inp.state
            self._s.config = inp.config
        else:
            cash = inp.config.initial_cash
            self._s = DecisionState(
                config=inp.config,
                portfolio=Portfolio(cash=cash, peak_equity=cash, equity=cash),
                epoch=str(workflow.uuid4())[:6],
            )
        self._busy = False

    # ------------------------------------------------------------ signals (enqueue only)

    @workflow.signal
    def wake(self, wake: Wake | None = None) -> None:
        wake = wake or Wake()
        s = self._s
        s.counters.wakes_received += 1
        if wake.wake_id:
            if wake.wake_id in s.handled_wake_ids:
                return  # a retried signal-with-start: already queued once
            s.handled_wake_ids.append(wake.wake_id)
            del s.handled_wake_ids[:-WAKE_IDS_KEPT]
        s.queue.append(WorkItem(kind="wake", wake=wake, received_ms=self._now_ms()))

    @workflow.signal
    def halt(self, req: ControlRequest | None = None) -> None:
        p = self._s.portfolio
        p.manual_halt = True
        p.halt_reason = f"manual: {req.reason}" if req and req.reason else "manual"

    @workflow.signal
    def resume(self, req: ControlRequest | None = None) -> None:
        """Lift any halt; the drawdown is measured afresh from the current equity."""
        p = self._s.portfolio
        p.manual_halt = False
        p.halted = False
        p.halted_since_ms = None
        p.halt_reason = ""
        p.peak_equity = p.equity
        p.drawdown = 0.0

    @workflow.signal
    def close_all(self, req: ControlRequest | None = None) -> None:
        self._s.queue.append(WorkItem(kind="close_all", received_ms=self._now_ms()))

    @workflow.signal
    def configure(self, config: EngineConfig) -> None:
        self._s.config = config

    @workflow.signal
    def add_request(self, position_id: str) -> None:
        self._s.queue.append(
            WorkItem(kind="add_request", position_id=position_id, received_ms=self._now_ms())
        )

    @workflow.signal
    def position_closed(self, trade: ClosedTrade) -> None:
        s = self._s
        if trade.trade_id in s.seen_trade_ids:
            return
        s.seen_trade_ids.append(trade.trade_id)
        del s.seen_trade_ids[: -RECENT_TRADES_KEPT * 4]
        pos = s.positions.get(trade.symbol)
        if pos is not None and pos.position_id == trade.trade_id:
            del s.positions[trade.symbol]
            proceeds = pos.cost + trade.pnl
            s.portfolio.cash += proceeds
            s.portfolio.fees_paid += max(0.0, trade.fees - pos.fees)
        s.portfolio.realized_pnl += trade.pnl
        self._mark_to_market()
        s.recent_trades.append(trade)
        del s.recent_trades[:-RECENT_TRADES_KEPT]
        s.counters.positions_closed += 1
        regime = pos.entry_crypto_regime if pos is not None else s.regimes.crypto
        s.queue.append(
            WorkItem(kind="learn", trade=trade, regime=regime, received_ms=self._now_ms())
        )

    @workflow.signal
    def llm_report(self, report: LLMReport) -> None:
        """A position's LLM call: its cost counts against the budget, its failure on the breaker."""
        s = self._s
        self._count_llm(report.info)
        if report.ok:
            s.breaker = breaker.record_success(s.breaker)
        else:
            s.llm_spend = llm_budget.record_failure(s.llm_spend)
            s.breaker = breaker.record_failure(
                s.breaker, self._now_ms(), report.error, s.config.llm.breaker
            )
        if self._llm_available() != s.llm_positions_on:
            s.queue.append(WorkItem(kind="llm_mode", received_ms=self._now_ms()))

    @workflow.signal
    def position_update(self, update: PositionUpdate) -> None:
        s = self._s
        pos = s.positions.get(update.symbol)
        if pos is None or pos.position_id != update.position_id:
            return
        pos.pending_add_notional = 0.0
        fill = update.fill
        s.counters.orders += 1
        if fill.status == OrderStatus.FILLED:
            s.portfolio.cash -= fill.qty * fill.price + fill.fee
            s.portfolio.fees_paid += fill.fee
            pos.fees += fill.fee
        else:
            s.counters.orders_rejected += 1
        pos.qty, pos.avg_entry, pos.cost = update.qty, update.avg_entry, update.cost

    # ------------------------------------------------------------ queries

    @workflow.query
    def status(self) -> StatusView:
        s = self._s
        return StatusView(
            account=s.config.account,
            portfolio=s.portfolio,
            positions=list(s.positions.values()),
            gate=s.gate,
            memory=s.memory,
            last_decision=s.decision_log[-1] if s.decision_log else None,
            recent_trades=s.recent_trades[-10:],
            counters=s.counters,
            queue_length=len(s.queue),
            busy=self._busy,
            llm=LLMStatus(
                enabled=s.config.llm.enabled,
                breaker=breaker.describe(s.breaker, self._now_ms()),
                breaker_phase=s.breaker.phase,
                decided_by=s.decided_by,
                spend=s.llm_spend,
                daily_budget_usd=s.config.llm.daily_budget_usd,
            ),
            regimes=s.regimes,
            reliabilities=learner.reliabilities(s.learner, s.regimes.crypto, s.config.learner),
        )

    @workflow.query
    def learner(self) -> PosteriorTable:
        """Posteriors per regime set (and the global set): α, β, mean, trades."""
        return learner.posterior_table(self._s.learner)

    @workflow.query
    def gate(self) -> GateSettings:
        return self._s.gate

    @workflow.query
    def state(self) -> DecisionState:
        return self._s

    # ------------------------------------------------------------ main loop

    @workflow.run
    async def run(self, inp: DecisionInput) -> None:
        s = self._s
        handled = 0
        while True:
            await workflow.wait_condition(
                lambda n=handled: bool(s.queue) or self._should_continue(n)
            )
            if s.queue:
                item = s.queue.pop(0)
                self._busy = True
                try:
                    await self._handle(item)
                finally:
                    self._busy = False
                handled += 1
            if self._should_continue(handled):
                await workflow.wait_condition(workflow.all_handlers_finished)
                s.counters.continued_as_new += 1
                workflow.continue_as_new(DecisionInput(config=s.config, state=s))

    def _should_continue(self, handled: int) -> bool:
        limit = self._s.config.max_cycles_per_run
        if limit is not None and handled >= limit:
            return True
        return workflow.info().is_continue_as_new_suggested()

    async def _handle(self, item: WorkItem) -> None:
        if item.kind == "wake":
            await self._cycle(item.wake or Wake())
            self._s.counters.wakes_handled += 1
        elif item.kind == "add_request" and item.position_id:
            await self._add_request(item.position_id)
        elif item.kind == "close_all":
            for pos in list(self._s.positions.values()):  # closes arrive while we signal
                await self._request_exit(pos, "close_all")
        elif item.kind == "llm_mode":
            await self._tell_positions_llm_mode()
        elif item.kind == "learn" and item.trade is not None:
            await self._learn(item.trade, item.regime)

    # ------------------------------------------------------------ one decision cycle

    async def _cycle(self, wake: Wake) -> None:
        s = self._s
        s.counters.cycles += 1
        cycle = s.counters.cycles
        reasons = wake.all_reasons()
        log = DecisionLogEntry(
            cycle=cycle,
            time_ms=self._now_ms(),
            market_time_ms=wake.market_time_ms,
            wake_reasons=reasons,
            source="none",
            actions=[],
        )
        self._log(log)
        try:
            await self._decide_and_act(log, reasons, cycle)
        finally:
            log.done = True

    async def _decide_and_act(self, log: DecisionLogEntry, reasons: list[str], cycle: int) -> None:
        s = self._s
        cfg = s.config
        view = await self._market_view(cfg.symbols, cfg.decision_interval)
        if view is None:
            log.actions.append("skipped: market data unavailable")
            return
        log.market_time_ms = view.as_of_ms
        s.last_market_time_ms = view.as_of_ms
        for symbol, features in view.symbols.items():
            s.last_prices[symbol] = features.price
        self._mark_to_market()
        await self._refresh_regimes(view.as_of_ms, log)
        extra = await self._market_context(cfg.symbols)

        decision_id = f"{cfg.account}-{s.epoch}-{cycle}"
        request = DecideRequest(
            account=cfg.account,
            decision_id=decision_id,
            market=view,
            account_view=self._account_view(),
            wake_reasons=reasons,
            memory=s.memory,
            default_position_pct=cfg.default_position_pct,
            max_position_pct=cfg.max_position_pct,
            max_exposure=cfg.max_exposure,
            context=self._snapshot_context(extra),
        )
        decision = await self._decide(request, log)
        if decision is None:
            return
        log.source = decision.source
        log.rejected = list(decision.rejected)
        for d in decision.decisions:
            note = await self._apply(d.ticker, d.action, d.position_pct, d.signal_weights, view)
            if note:
                log.actions.append(note)
        self._apply_agent_settings(decision)
        if self._llm_available() != s.llm_positions_on:
            await self._tell_positions_llm_mode()
        await workflow.execute_activity(
            api.JOURNAL_DECISION,
            DecisionRecord(
                decision_id=decision_id,
                account=cfg.account,
                market_time_ms=view.as_of_ms,
                wake_reasons=reasons,
                source=decision.source,
                decision=decision,
                executed=log.actions,
            ),
            task_queue=cfg.trading_task_queue,
            start_to_close_timeout=api.JOURNAL_TIMEOUT,
            retry_policy=api.JOURNAL_RETRY,
        )

    async def _apply(
        self,
        symbol: str,
        action: Action,
        position_pct: float,
        weights: dict[str, float],
        view: MarketView,
    ) -> str | None:
        s = self._s
        if symbol not in s.config.symbols:
            return f"{symbol} {action}: rejected, not in the universe"
        pos = s.positions.get(symbol)
        if action == Action.HOLD:
            return None
        if action == Action.SELL:
            if pos is None:
                return f"{symbol} SELL: rejected, no open position"
            return await self._request_exit(pos, "decision_sell")
        features = view.symbols.get(symbol)
        if features is None:
            return f"{symbol} {action}: skipped, no price"
        if s.portfolio.entries_blocked:
            return f"{symbol} {action}: skipped, entries halted ({s.portfolio.halt_reason})"
        if action == Action.BUY:
            if pos is not None:
                return f"{symbol} BUY: ignored, position {pos.position_id} already open"
            return await self._open(
                symbol, position_pct, features.price, view.as_of_ms, weights, features.regime
            )
        if action == Action.ADD:
            if pos is None:
                return f"{symbol} ADD: rejected, no open position"
            return await self._add(pos, position_pct, features.price)
        return None

    async def _open(
        self,
        symbol: str,
        position_pct: float,
        price: float,
        time_ms: int,
        weights: dict[str, float],
        symbol_regime: str = "unknown",
    ) -> str:
        s = self._s
        cfg = s.config
        sizing = self._risk_check("BUY", symbol, position_pct, price, held_qty=0.0)
        if not sizing.approved:
            return f"{symbol} BUY: skipped, {sizing.reason}"
        n = s.entry_seq.get(symbol, 0) + 1
        s.entry_seq[symbol] = n
        base = symbol.split("/")[0]
        position_id = f"{cfg.account}-{s.epoch}-{base}-{n}"
        order = OrderRequest(
            client_order_id=client_order_id(position_id, 1),
            position_id=position_id,
            seq=1,
            symbol=symbol,
            side=Side.BUY,
            qty=sizing.qty,
            ref_price=price,
            market_time_ms=time_ms,
            reason="entry",
            account=cfg.account,
        )
        fill = await self._place(order)
        if fill.status != OrderStatus.FILLED:
            return f"{symbol} BUY: rejected by broker, {fill.reason}"
        cost = fill.qty * fill.price + fill.fee
        s.portfolio.cash -= cost
        s.portfolio.fees_paid += fill.fee
        workflow_id = f"ocw-position-{position_id}"
        s.positions[symbol] = OpenPosition(
            position_id=position_id,
            workflow_id=workflow_id,
            symbol=symbol,
            qty=fill.qty,
            avg_entry=fill.price,
            entry_time_ms=time_ms,
            cost=cost,
            fees=fill.fee,
            last_price=price,
            signal_weights=weights,
            peak_price=fill.price,
            trough_price=fill.price,
            entry_crypto_regime=s.regimes.crypto,
        )
        s.counters.positions_opened += 1
        await workflow.execute_activity(
            api.START_POSITION,
            StartPosition(
                workflow_id=workflow_id,
                input=PositionInput(
                    state=PositionState(
                        position_id=position_id,
                        account=cfg.account,
                        symbol=symbol,
                        qty=fill.qty,
                        avg_entry=fill.price,
                        entry_time_ms=time_ms,
                        entry_fees=fill.fee,
                        cost=cost,
                        peak_price=fill.price,
                        trough_price=fill.price,
                        last_price=price,
                        last_price_ms=time_ms,
                        signal_weights=weights,
                        fills=[fill],
                        entry_regime=symbol_regime,
                        entry_vol_regime=s.regimes.crypto,
                        current_vol_regime=s.regimes.crypto,
                    ),
                    params=cfg.position.model_copy(
                        update={"trail_multiplier": s.regimes.trail_multiplier}
                    ),
                    decision_workflow_id=workflow.info().workflow_id,
                    trading_task_queue=cfg.trading_task_queue,
                    market_task_queue=cfg.market_task_queue,
                    max_ticks_per_run=cfg.max_ticks_per_run,
                    llm_enabled=self._llm_available(),
                    llm_eval_interval_s=cfg.llm.position_eval_interval_s,
                ),
            ),
            task_queue=cfg.trading_task_queue,
            start_to_close_timeout=api.START_TIMEOUT,
            retry_policy=api.START_RETRY,
        )
        self._mark_to_market()
        return f"{symbol} BUY {fill.qty:.6g} @ {fill.price:.6g} -> {position_id}"

    async def _add(self, pos: OpenPosition, position_pct: float, price: float) -> str:
        if pos.exit_requested:
            return f"{pos.symbol} ADD: ignored, position is closing"
        sizing = self._risk_check(
            "ADD", pos.symbol, position_pct, price, pos.qty, pos.pending_add_notional
        )
        if not sizing.approved:
            return f"{pos.symbol} ADD: skipped, {sizing.reason}"
        pos.pending_add_notional += sizing.notional
        await workflow.get_external_workflow_handle(pos.workflow_id).signal(
            PositionWorkflow.add, AddOrder(qty=sizing.qty, ref_price=price, reason="add")
        )
        return f"{pos.symbol} ADD {sizing.qty:.6g} requested on {pos.position_id}"

    async def _add_request(self, position_id: str) -> None:
        s = self._s
        for pos in list(s.positions.values()):
            if pos.position_id == position_id:
                if s.portfolio.entries_blocked or pos.pending_add_notional > 0:
                    return
                price = s.last_prices.get(pos.symbol, pos.last_price)
                note = await self._add(pos, s.config.default_position_pct / 2, price)
                self._log_note(f"agent layer: {note}")
                return

    async def _request_exit(self, pos: OpenPosition, reason: str) -> str:
        if pos.exit_requested:
            return f"{pos.symbol} SELL: exit already requested"
        pos.exit_requested = True
        await workflow.get_external_workflow_handle(pos.workflow_id).signal(
            PositionWorkflow.exit, reason
        )
        return f"{pos.symbol} SELL: exit requested on {pos.position_id} ({reason})"

    async def _place(self, order: OrderRequest) -> Fill:
        s = self._s
        fill = await workflow.execute_activity(
            api.PLACE_ORDER,
            order,
            task_queue=s.config.trading_task_queue,
            result_type=Fill,
            start_to_close_timeout=api.ORDER_TIMEOUT,
            retry_policy=api.ORDER_RETRY,
        )
        s.counters.orders += 1
        if fill.status != OrderStatus.FILLED:
            s.counters.orders_rejected += 1
        return fill

    async def _market_view(self, symbols: list[str], interval: str) -> MarketView | None:
        try:
            return await workflow.execute_activity(
                api.MARKET_VIEW,
                MarketViewRequest(symbols=symbols, interval=interval),
                task_queue=self._s.config.market_task_queue,
                result_type=MarketView,
                start_to_close_timeout=api.MARKET_TIMEOUT,
                retry_policy=api.MARKET_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("market view unavailable: %s", err.cause or err)
            return None

    def _risk_check(
        self,
        action: str,
        symbol: str,
        position_pct: float,
        price: float,
        held_qty: float,
        pending_add_notional: float = 0.0,
    ):
        """SPEC §8 before any entry or add: caps, macro scale, cash, minimum, halt."""
        s = self._s
        cfg = s.config
        return check_order(
            action=action,
            symbol=symbol,
            position_pct=position_pct,
            price=price,
            portfolio_value=s.portfolio.equity,
            cash=s.portfolio.cash,
            exposure_value=self._exposure_value(),
            position_qty=held_qty,
            halted=s.portfolio.entries_blocked,
            max_position_pct=cfg.max_position_pct,
            max_exposure=cfg.max_exposure,
            min_notional=cfg.min_order_notional,
            macro_scale=s.regimes.exposure_scale,
            fee_rate=cfg.position.fee_rate,
            pending_add_notional=pending_add_notional,
        )

    # ------------------------------------------------------------ regimes and learner

    async def _refresh_regimes(self, market_ms: int, log: DecisionLogEntry) -> None:
        """Refit the crypto regime once a market day and the macro one every 6 market hours.

        Both are advisory: a failure keeps the last label and is retried an hour later.
        """
        s = self._s
        cfg = s.config
        r = s.regimes
        hour = 3_600_000
        if r.next_crypto_ms is None or market_ms >= r.next_crypto_ms:
            r.next_crypto_ms = market_ms + hour
            try:
                crypto = await workflow.execute_activity(
                    api.CRYPTO_REGIME,
                    CryptoRegimeRequest(as_of_ms=market_ms, symbol=cfg.regime_symbol),
                    task_queue=cfg.market_task_queue,
                    result_type=CryptoRegime,
                    start_to_close_timeout=api.REGIME_TIMEOUT,
                    retry_policy=api.REGIME_RETRY,
                )
            except ActivityError as err:
                r.crypto_note = f"refit failed: {err.cause or err}"[:200]
            else:
                if crypto.label != r.crypto:
                    log.actions.append(f"crypto regime {r.crypto} -> {crypto.label}")
                r.crypto = crypto.label
                r.crypto_probability = crypto.state_probability
                r.crypto_as_of_ms = market_ms
                r.crypto_note = crypto.reason
                r.next_crypto_ms = market_ms + int(cfg.crypto_regime_every_h * hour)
        if r.next_macro_ms is None or market_ms >= r.next_macro_ms:
            r.next_macro_ms = market_ms + hour
            try:
                macro = await workflow.execute_activity(
                    api.MACRO_REGIME,
                    MacroRequest(as_of_ms=market_ms),
                    task_queue=cfg.trading_task_queue,
                    result_type=MacroRegime,
                    start_to_close_timeout=api.REGIME_TIMEOUT,
                    retry_policy=api.REGIME_RETRY,
                )
            except ActivityError as err:
                r.macro_note = f"refresh failed: {err.cause or err}"[:200]
            else:
                if macro.quadrant != r.macro:
                    log.actions.append(f"macro regime {r.macro} -> {macro.quadrant}")
                r.macro = macro.quadrant
                r.exposure_scale = macro.exposure_scale
                r.trail_multiplier = macro.trail_multiplier
                r.macro_as_of_ms = market_ms
                r.macro_note = macro.reason
                r.next_macro_ms = market_ms + int(cfg.macro_regime_every_h * hour)
        await self._sync_positions_context()

    async def _sync_positions_context(self) -> None:
        """Tell open positions the current vol regime and trail multiplier when they change."""
        s = self._s
        key = f"{s.regimes.crypto}|{s.regimes.trail_multiplier}"
        if key == s.positions_context_sent:
            return
        s.positions_context_sent = key
        ctx = PositionContext(
            vol_regime=s.regimes.crypto, trail_multiplier=s.regimes.trail_multiplier
        )
        for pos in list(s.positions.values()):
            if not pos.exit_requested:
                await workflow.get_external_workflow_handle(pos.workflow_id).signal(
                    PositionWorkflow.market_context, ctx
                )

    async def _learn(self, trade: ClosedTrade, regime: str | None) -> None:
        """The learner's update runs as an activity (it also writes a snapshot for analysis);
        the workflow keeps the returned state. Idempotent by trade id."""
        s = self._s
        s.learner = await workflow.execute_activity(
            api.LEARNER_UPDATE,
            LearnerUpdateRequest(
                state=s.learner,
                trade=trade,
                regime=regime or "unknown",
                params=s.config.learner,
                account=s.config.account,
            ),
            task_queue=s.config.trading_task_queue,
            result_type=LearnerState,
            start_to_close_timeout=api.LEARNER_TIMEOUT,
            retry_policy=api.LEARNER_RETRY,
        )

    # ------------------------------------------------------------ who decides

    async def _decide(self, req: DecideRequest, log: DecisionLogEntry) -> AgentDecision | None:
        """Claude when configured, within budget and with the breaker letting it through;
        otherwise, or when the call fails, the rule policy. Says in the log which and why."""
        s = self._s
        why = self._llm_blocked_reason()
        if why is None:
            allowed, s.breaker = breaker.allow_call(s.breaker, self._now_ms())
            if not allowed:
                why = f"LLM circuit breaker {breaker.describe(s.breaker, self._now_ms())}"
        if why is None:
            probe = s.breaker.phase == "half_open"
            try:
                decision = await workflow.execute_activity(
                    api.LLM_DECIDE,
                    req,
                    task_queue=s.config.trading_task_queue,
                    result_type=AgentDecision,
                    start_to_close_timeout=api.LLM_DECIDE_TIMEOUT,
                    retry_policy=api.LLM_RETRY,
                )
            except ActivityError as err:
                error = self._llm_error(err)
                s.llm_spend = llm_budget.record_failure(s.llm_spend)
                s.breaker = breaker.record_failure(
                    s.breaker, self._now_ms(), error, s.config.llm.breaker
                )
                why = f"LLM failed ({error})" + (", probe failed" if probe else "")
            else:
                s.breaker = breaker.record_success(s.breaker)
                self._count_llm(decision.llm)
                s.decided_by = "llm"
                if probe:
                    log.actions.append("LLM circuit breaker closed: the probe succeeded")
                return decision
        s.decided_by = f"rule: {why}"
        if not rule_may_act(req.wake_reasons):
            # the rules are defined on closed decision candles (as in the backtests): an
            # outlier, timer or condition wake is the agent's business, the stops stay on
            log.actions.append(f"rule policy waits for a candle close ({why})")
            return None
        if s.config.llm.enabled:
            log.actions.append(f"rule policy decides: {why}")
        weights = learner.policy_weights(
            s.learner, s.regimes.crypto, workflow.random(), s.config.learner
        )
        try:
            return await workflow.execute_activity(
                api.DECIDE,
                req.model_copy(update={"group_weights": weights}),
                task_queue=s.config.trading_task_queue,
                result_type=AgentDecision,
                start_to_close_timeout=api.DECIDE_TIMEOUT,
                retry_policy=api.DECIDE_RETRY,
            )
        except ActivityError as err:
            log.actions.append(f"skipped: decide failed ({err.cause or err})")
            return None

    def _llm_blocked_reason(self) -> str | None:
        s = self._s
        llm = s.config.llm
        if not llm.enabled:
            return "no LLM configured"
        if llm_budget.over_budget(s.llm_spend, self._budget_time_ms(), llm.daily_budget_usd):
            return f"LLM daily budget of ${llm.daily_budget_usd:.2f} spent"
        return None

    def _llm_available(self) -> bool:
        """May positions ask the LLM: configured, within budget, breaker closed."""
        return self._llm_blocked_reason() is None and self._s.breaker.phase == "closed"

    async def _tell_positions_llm_mode(self) -> None:
        s = self._s
        on = self._llm_available()
        s.llm_positions_on = on
        for pos in list(s.positions.values()):
            if not pos.exit_requested:
                await workflow.get_external_workflow_handle(pos.workflow_id).signal(
                    PositionWorkflow.llm_mode, on
                )

    def _count_llm(self, info: LLMCallInfo | None) -> None:
        if info is None:
            return
        s = self._s
        s.llm_spend = llm_budget.record_call(
            s.llm_spend,
            self._budget_time_ms(),
            info.cost_usd,
            input_tokens=info.input_tokens,
            output_tokens=info.output_tokens,
            cache_read_tokens=info.cache_read_tokens,
            cache_write_tokens=info.cache_creation_tokens,
            replayed=info.replayed,
        )

    def _llm_error(self, err: ActivityError) -> str:
        """A short, secret-free description; an invalid answer still cost tokens: count them."""
        detail = api.failure_details(err)
        if detail is not None:
            with contextlib.suppress(ValueError):
                self._count_llm(LLMCallInfo.model_validate(detail))
        return api.failure_text(err)

    def _budget_time_ms(self) -> int:
        """The budget's day follows market time when known (a replay gets a budget per market day)."""
        return self._s.last_market_time_ms or self._now_ms()

    async def _market_context(self, symbols: list[str]) -> MarketContext:
        """Derivatives, liquidations and sentiment from the listener; missing when it can't."""
        try:
            return await workflow.execute_activity(
                api.MARKET_CONTEXT,
                MarketContextRequest(symbols=symbols),
                task_queue=self._s.config.market_task_queue,
                result_type=MarketContext,
                start_to_close_timeout=api.MARKET_TIMEOUT,
                retry_policy=api.MARKET_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("market context unavailable: %s", err.cause or err)
            return MarketContext(missing=["derivatives", "liquidations", "sentiment"])

    def _snapshot_context(self, extra: MarketContext | None = None) -> SnapshotContext:
        s = self._s
        llm = s.config.llm
        extra = extra or MarketContext()
        return SnapshotContext(
            derivatives=extra.derivatives or None,
            liquidations=extra.liquidations,
            sentiment=extra.sentiment,
            missing=list(extra.missing),
            engine=EngineStatus(
                llm_breaker=s.breaker.phase,
                llm_budget_left_usd=llm_budget.budget_left(
                    s.llm_spend, self._budget_time_ms(), llm.daily_budget_usd
                ),
                note=(
                    f"the previous cycle was decided by the {s.decided_by}"
                    if s.decided_by.startswith("rule") and llm.enabled
                    else None
                ),
            ),
            position_marks={
                sym: PositionMark(peak_price=p.peak_price, trough_price=p.trough_price)
                for sym, p in s.positions.items()
                if p.peak_price > 0 and p.trough_price > 0
            }
            or None,
            crypto_regime=RegimeReading(
                label=s.regimes.crypto, probability=s.regimes.crypto_probability
            )
            if s.regimes.crypto != "unknown"
            else None,
            macro=MacroReading(
                quadrant=s.regimes.macro,
                exposure_scale=s.regimes.exposure_scale,
                trail_multiplier=s.regimes.trail_multiplier,
            )
            if s.regimes.macro != "unknown"
            else None,
            reliabilities=learner.reliabilities(s.learner, s.regimes.crypto, s.config.learner),
            decision_interval=s.config.decision_interval,
            fee_rate=s.config.position.fee_rate,
        )

    # ------------------------------------------------------------ bookkeeping

    def _apply_agent_settings(self, decision: AgentDecision) -> None:
        s = self._s
        if decision.memory_update is not None:
            s.memory = decision.memory_update[:MEMORY_MAX_CHARS]
        changed = False
        if decision.next_check_seconds is not None:
            s.gate.next_check_seconds = decision.next_check_seconds
            changed = True
        if decision.wake_conditions is not None:  # empty list clears, None leaves
            s.gate.wake_conditions = list(decision.wake_conditions)
            changed = True
        if changed:
            s.gate.version += 1
            s.gate.set_at_ms = s.last_market_time_ms

    def _exposure_value(self) -> float:
        s = self._s
        return sum(p.qty * s.last_prices.get(sym, p.last_price) for sym, p in s.positions.items())

    def _mark_to_market(self) -> None:
        s = self._s
        for sym, pos in s.positions.items():
            pos.last_price = s.last_prices.get(sym, pos.last_price)
            pos.peak_price = max(pos.peak_price or pos.last_price, pos.last_price)
            pos.trough_price = min(pos.trough_price or pos.last_price, pos.last_price)
        p = s.portfolio
        p.equity = p.cash + self._exposure_value()
        dd = drawdown_update(
            peak_equity=p.peak_equity,
            equity=p.equity,
            halt_pct=s.config.drawdown_halt_pct,
            halted=p.halted,
        )
        p.peak_equity, p.drawdown = dd.peak, dd.drawdown
        if dd.halted != p.halted:
            p.halted = dd.halted
            p.halt_reason = dd.reason or ""
            workflow.logger.warning("drawdown halt %s: %s", "on" if dd.halted else "off", dd.reason)
        market_ms = s.last_market_time_ms
        if not p.halted:
            p.halted_since_ms = None
        elif p.halted_since_ms is None:
            p.halted_since_ms = market_ms
        elif cooloff_over(p.halted_since_ms, market_ms, s.config.drawdown_cooloff_hours):
            # opt-in cool-off: the drawdown is measured afresh from here, as after ``resume``
            hours = s.config.drawdown_cooloff_hours
            p.halted, p.halted_since_ms = False, None
            p.peak_equity, p.drawdown = p.equity, 0.0
            p.halt_reason = ""
            self._log_note(f"drawdown halt lifted after its {hours:g} h cool-off")
            workflow.logger.warning("drawdown halt lifted after a %g h cool-off", hours)

    def _account_view(self) -> AccountView:
        s = self._s
        p = s.portfolio
        return AccountView(
            portfolio_value=p.equity,
            cash=p.cash,
            exposure=self._exposure_value() / p.equity if p.equity > 0 else 0.0,
            drawdown=p.drawdown,
            halted=p.entries_blocked,
            positions=list(s.positions.values()),
            recent_trades=s.recent_trades[-10:],
        )

    def _log(self, entry: DecisionLogEntry) -> None:
        s = self._s
        s.decision_log.append(entry)
        del s.decision_log[:-DECISION_LOG_KEPT]

    def _log_note(self, note: str) -> None:
        if self._s.decision_log:
            self._s.decision_log[-1].actions.append(note)

    @staticmethod
    def _now_ms() -> int:
        return int(workflow.time() * 1000)
