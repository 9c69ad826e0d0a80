"""DecisionWorkflow: one per account, the engine's durable brain.

Signals only enqueue (they never await), so no wake is ever lost; the main loop takes one work
item at a time: fetch the market view, ask the policy, apply risk limits, place entry orders,
start a PositionWorkflow per entry, signal exits and adds to running positions. Portfolio,
positions, recent trades, agent memory and the gate settings live in ``DecisionState`` and
travel across continue-as-new together with any queued work.

The run never fails on one error: a work item, an activity or a signal delivery that fails is
contained as an incident (decision log, journal, ``ocw status``) and the loop goes on. A
position whose workflow does not take a signal is looked up (``position_status``): its trade
is booked if it closed, its watcher restarted if it was lost. Limits change only through the
``configure`` update, whose validator refuses out-of-range values before they enter history;
``halt``, ``resume`` and ``close_all`` are updates that answer and signals that don't.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading import circuit_breaker as breaker
    from trading import learner, llm_budget, metrics
    from trading.config import interval_seconds
    from trading.exit_plan import stop_loss_pct_for
    from trading.funding import funding_payment
    from trading.learner import LearnerState, LearnerUpdateRequest, PosteriorTable
    from trading.leverage import liquidation_distance_ok, loss_exit_price
    from trading.llm_budget import BreakerSave, LedgerRequest, LedgerView
    from trading.macro import MacroRegime, MacroRequest
    from trading.models import (
        Action,
        AgentDecision,
        ClosedTrade,
        DecisionRecord,
        ExitPlan,
        Fill,
        IncomeEntry,
        LLMCallInfo,
        MarketView,
        Model,
        OrderRequest,
        PositionSide,
        Wake,
    )
    from trading.orders import client_order_id
    from trading.protective_stop import stop_loss_level
    from trading.reconcile import ReconcileSummary
    from trading.regime_crypto import CryptoRegime, CryptoRegimeRequest
    from trading.risk import check_order
    from trading.snapshot import MarketContext, MarketContextRequest
    from trading.state import (
        DECISION_LOG_KEPT,
        ERROR_TEXT_MAX,
        INCIDENTS_KEPT,
        MEMORY_MAX_CHARS,
        AccountSeed,
        AddOrder,
        AdoptedHolding,
        AdoptRequest,
        BoardDecision,
        BoardDecisionRequest,
        DecideRequest,
        DecisionInput,
        DecisionLogEntry,
        DecisionState,
        EngineConfig,
        ExitFailed,
        FundingRequest,
        GateSettings,
        Incident,
        JournalIncident,
        LLMReport,
        LLMStatus,
        MarketViewRequest,
        OpenPosition,
        Portfolio,
        PositionContext,
        PositionInput,
        PositionState,
        PositionStatusRequest,
        PositionStatusView,
        PositionUpdate,
        StartPosition,
        StatusView,
        WorkItem,
    )
    from workflows import activity_api as api
    from workflows import decision_books as books
    from workflows import ui_text
    from workflows.patches import decide_patches
    from workflows.position import PositionWorkflow
    from workflows.search_attributes import OCW_DECIDED_BY

WAKE_IDS_KEPT = 500
GATE_ONLY_PREFIXES = ("zscore:", "timer:", "condition:", "watchdog")
ITEM_RETRIES = 5  # a failed learner update is queued again this many times
UPDATES_PER_RUN = 1_000  # Temporal's default cap is 2,000 updates per run
JOURNAL_INCIDENTS_KEPT = 50  # incidents waiting for the journal (the oldest dropped)
REPLAY_MODES = ("replay", "paper")  # modes whose clock a replay listener may set
STUCK_EXIT_SAFETY_INTERVALS = 10  # an exit unanswered this long is looked up
# a lean engine runs the rule policy's decide as a local activity; older histories did not
RULE_DECIDE_LOCAL_PATCH = "rule-decide-local"
# the wake's view and context from the listener's decision board (activities/decision_board.py)
DECISION_BOARD_PATCH = "decision-view-from-board"
VIEW_AND_CONTEXT_PATCH = "view-and-context-together"
# a run that records this marker decides every patch below in its first task (_decide_patches)
EARLY_PATCHES = "patches-in-first-task"
LATER_PATCHES = (VIEW_AND_CONTEXT_PATCH, DECISION_BOARD_PATCH, RULE_DECIDE_LOCAL_PATCH)
# the board's sheet serves while younger than this (wall seconds at speed 1; a replay divides
# by its speed, never below the floor): a wake worked off later asks the listener for the
# market as it is then, so a stale wake is still seen as stale. The listener writes it before
# each wake and every OCW_DECISION_BOARD_EVERY_S (2 s) between them
BOARD_DECISION_MAX_AGE_S = 3.0
BOARD_DECISION_MAX_AGE_FRACTION = 0.01  # ... and at most this share of the decision interval
BOARD_DECISION_MIN_AGE_S = 0.25
FUNDING_EVERY_MS = 8 * 3_600_000  # Binance USDⓈ-M: 00:00, 08:00, 16:00 UTC


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


class SpeedRequest(Model):
    """The replay clock a replay listener runs at (``set_speed`` update)."""

    speed: float


def check_config_change(current: EngineConfig, new: EngineConfig) -> None:
    """Why a ``configure`` update is refused (ValueError); the bounds themselves are checked by
    the model when the payload is read (trading/limits.py)."""
    if new.account != current.account:
        raise ValueError(f"configure: account {new.account!r} is not {current.account!r}")
    if new.mode in ("live", "testnet") and current.mode not in ("live", "testnet"):
        raise ValueError(
            f"configure: a {current.mode} account cannot become {new.mode}; "
            "start a real-money account with `ocw account init` in that mode"
        )
    EngineConfig.model_validate(new.model_dump())  # bounds, even if built with model_construct


@workflow.defn(name="DecisionWorkflow")
class DecisionWorkflow:
    @workflow.init
    def __init__(self, inp: DecisionInput) -> None:
        if inp.state is not None:
            self._s = inp.state
            self._s.config = inp.config
        else:
            cash = inp.seed.cash if inp.seed is not None else inp.config.initial_cash
            self._s = DecisionState(
                config=inp.config,
                portfolio=Portfolio(cash=cash, peak_equity=cash, equity=cash),
                epoch=str(workflow.uuid4())[:6],
            )
        self._busy = False
        self._messages = 0  # signals and updates this run (Temporal caps both)
        self._updates = 0
        self._entry: DecisionLogEntry | None = None  # the log entry of the item at work
        self._unjournaled: list[Incident] = []
        self._why = ""  # the reasoning of the decision being applied (position summaries)
        self._shown_decided_by: str | None = None  # search attribute and memo last set
        self._shown_positions: list[str] | None = None

    # ------------------------------------------------------------ signals (enqueue only)

    @workflow.signal
    def wake(self, wake: Wake | None = None) -> None:
        self._messages += 1
        wake = wake or Wake()
        s = self._s
        s.counters.wakes_received += 1
        if wake.wake_id:
            if wake.wake_id in s.handled_wake_ids:
                return  # a retried delivery: already queued once
            s.handled_wake_ids.append(wake.wake_id)
            del s.handled_wake_ids[:-WAKE_IDS_KEPT]
        s.queue.append(WorkItem(kind="wake", wake=wake, received_ms=self._now_ms()))

    @workflow.signal
    def halt(self, req: ControlRequest | None = None) -> None:
        self._messages += 1
        self._halt(req)

    @workflow.signal
    def resume(self, req: ControlRequest | None = None) -> None:
        self._messages += 1
        self._resume()

    @workflow.signal
    def close_all(self, req: ControlRequest | None = None) -> None:
        self._messages += 1
        self._close_all()

    @workflow.signal
    def add_request(self, position_id: str) -> None:
        self._messages += 1
        self._s.queue.append(
            WorkItem(kind="add_request", position_id=position_id, received_ms=self._now_ms())
        )

    @workflow.signal
    def position_closed(self, trade: ClosedTrade) -> None:
        self._messages += 1
        books.apply_closed(self._s, trade, self._now_ms())

    @workflow.signal
    def exit_failed(self, failed: ExitFailed) -> None:
        """The position's exit did not fill: it is open again, and so it is here."""
        self._messages += 1
        s = self._s
        pos = s.positions.get(failed.symbol)
        if pos is None or pos.position_id != failed.position_id:
            return
        pos.exit_requested = False
        pos.exit_requested_ms = None
        s.counters.exits_failed += 1
        self._incident(f"exit of {pos.position_id} ({failed.reason})", failed.error)

    @workflow.signal
    def reconciled(self, summary: ReconcileSummary) -> None:
        """The last reconciliation with the exchange (``ocw status`` shows it); a mismatch
        that is new is an incident."""
        self._messages += 1
        s = self._s
        before = s.last_reconcile.mismatches if s.last_reconcile is not None else []
        s.last_reconcile = summary
        if summary.mismatches and summary.mismatches != before:
            self._incident("reconciliation", "; ".join(summary.mismatches)[:ERROR_TEXT_MAX])

    @workflow.signal
    def llm_report(self, report: LLMReport) -> None:
        """A position's LLM call: its cost counts against the budget, its failure on the breaker."""
        self._messages += 1
        s = self._s
        self._count_llm(report.info)
        if report.ok:
            s.breaker = breaker.record_success(s.breaker)
        elif report.error_type == "LLMDailyBudgetSpent":
            self._budget_spent()
        else:
            s.llm_spend = llm_budget.record_failure(s.llm_spend)
            s.breaker = breaker.record_failure(
                s.breaker, self._now_ms(), report.error, s.config.breaker_params()
            )
        if self._llm_available() != s.llm_positions_on:
            s.queue.append(WorkItem(kind="llm_mode", received_ms=self._now_ms()))

    @workflow.signal
    def position_update(self, update: PositionUpdate) -> None:
        self._messages += 1
        s = self._s
        pos = s.positions.get(update.symbol)
        if pos is None or pos.position_id != update.position_id:
            return
        pos.pending_add_notional = 0.0
        fill = update.fill
        s.counters.orders += 1
        if fill.filled:
            s.portfolio.cash -= fill.qty * fill.price + fill.fee
            s.portfolio.fees_paid += fill.fee
            pos.fees += fill.fee
        else:
            s.counters.orders_rejected += 1
        pos.qty, pos.avg_entry, pos.cost = update.qty, update.avg_entry, update.cost

    # ------------------------------------------------------------ updates (validated, answer)

    @workflow.update(name="configure")
    def configure(self, config: EngineConfig) -> str:
        """Replace the account's configuration (the trading side's settings). The replay
        clock stays: it is the listener's (``set_speed``)."""
        self._count_update()
        self._s.config = config.model_copy(update={"speed": self._s.config.speed})
        return f"configured {config.account}: {len(config.symbols)} symbols"

    @configure.validator
    def _validate_configure(self, config: EngineConfig) -> None:
        check_config_change(self._s.config, config)

    @workflow.update(name="set_speed")
    def set_speed(self, req: SpeedRequest) -> str:
        """The replay clock: every duration of the account is divided by it (never below the
        server's timer grain)."""
        self._count_update()
        self._s.config = self._s.config.model_copy(update={"speed": req.speed})
        return f"speed {req.speed:g}"

    @set_speed.validator
    def _validate_speed(self, req: SpeedRequest) -> None:
        mode = self._s.config.mode
        if mode not in REPLAY_MODES:
            raise ValueError(f"set_speed: a {mode} account runs on the real clock")
        EngineConfig.model_validate({**self._s.config.model_dump(), "speed": req.speed})

    @workflow.update(name="adopt")
    def adopt(self, req: AdoptRequest) -> str:
        """Reconciliation: watch a holding of a traded symbol that no position tracks."""
        self._count_update()
        self._s.queue.append(
            WorkItem(kind="adopt", holding=req.holding, received_ms=self._now_ms())
        )
        return f"adopting {ui_text.qty(req.holding.qty)} {req.holding.symbol} ({req.reason})"

    @adopt.validator
    def _validate_adopt(self, req: AdoptRequest) -> None:
        s = self._s
        if req.holding.symbol not in s.config.symbols:
            raise ValueError(f"adopt: {req.holding.symbol} is not traded by {s.config.account}")
        if req.holding.symbol in s.positions:
            raise ValueError(f"adopt: a position tracks {req.holding.symbol} already")
        if req.holding.side is PositionSide.SHORT and not s.config.shorts:
            raise ValueError(
                f"adopt: {req.holding.symbol} is short and {s.config.account} trades no shorts"
            )

    @workflow.update(name="halt")
    def halt_update(self, req: ControlRequest | None = None) -> str:
        self._count_update()
        self._halt(req)
        return f"entries halted ({self._s.portfolio.halt_reason})"

    @workflow.update(name="resume")
    def resume_update(self, req: ControlRequest | None = None) -> str:
        self._count_update()
        was = self._s.portfolio.halt_reason or "not halted"
        self._resume()
        return f"entries allowed again (was: {was})"

    @workflow.update(name="close_all")
    def close_all_update(self, req: ControlRequest | None = None) -> str:
        self._count_update()
        ids = [p.position_id for p in self._s.positions.values()]
        self._close_all()
        return f"closing {len(ids)} position(s): {', '.join(ids) or 'none open'}"

    def _count_update(self) -> None:
        self._messages += 1
        self._updates += 1

    def _halt(self, req: ControlRequest | None) -> None:
        p = self._s.portfolio
        p.manual_halt = True
        p.halt_reason = f"manual: {req.reason}" if req and req.reason else "manual"

    def _resume(self) -> None:
        """Lift any halt; the drawdown is measured afresh from the current equity."""
        p = self._s.portfolio
        p.manual_halt = False
        p.halted = False
        p.halted_since_ms = None
        p.halt_reason = ""
        p.peak_equity = p.equity
        p.drawdown = 0.0

    def _close_all(self) -> None:
        self._s.queue.append(WorkItem(kind="close_all", received_ms=self._now_ms()))

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
            incidents=s.incidents[-10:],
            config=s.config,
            reconcile=s.last_reconcile,
            equity_marks=s.equity_marks,
        )

    @workflow.query
    def learner(self) -> PosteriorTable:
        """Posteriors per regime set (and the global set): α, β, mean, trades."""
        return learner.posterior_table(self._s.learner)

    @workflow.query
    def gate(self) -> GateSettings:
        return self._s.gate

    @workflow.query
    def idle(self) -> bool:
        """No wake queued, no cycle running, no exit awaiting its fill: what a lockstep replay
        (signals/lockstep.py) waits for after each bar; a bool, so polling it stays cheap."""
        s = self._s
        return (
            not s.queue
            and not self._busy
            and not any(p.exit_requested for p in s.positions.values())
        )

    @workflow.query
    def state(self) -> DecisionState:
        return self._s

    # ------------------------------------------------------------ main loop

    @workflow.run
    async def run(self, inp: DecisionInput) -> None:
        decide_patches(EARLY_PATCHES, LATER_PATCHES)
        s = self._s
        if inp.state is None:
            await self._contained("account start", self._start_account(inp.seed))
        handled = 0
        while True:
            await workflow.wait_condition(
                lambda n=handled: (
                    bool(s.queue or self._unjournaled or self._ui_stale())
                    or self._should_continue(n)
                )
            )
            if not (s.queue or self._unjournaled) and not self._should_continue(handled):
                self._show()  # a position opened or closed by a signal: the UI's links
                continue
            if s.queue:
                item = books.next_work_item(s)
                self._busy = True
                try:
                    await self._contained(f"work item {item.kind}", self._handle(item), item)
                finally:
                    self._busy = False
                    self._entry = None
                handled += 1
            await self._contained("bookkeeping", self._bookkeeping())
            self._show()
            if self._should_continue(handled):
                await workflow.wait_condition(workflow.all_handlers_finished)
                s.counters.continued_as_new += 1
                workflow.continue_as_new(DecisionInput(config=s.config, state=s))

    def _should_continue(self, handled: int) -> bool:
        cfg = self._s.config
        if cfg.max_cycles_per_run is not None and handled >= cfg.max_cycles_per_run:
            return True
        if self._messages >= cfg.max_signals_per_run or self._updates >= UPDATES_PER_RUN:
            return True  # Temporal caps signals (10,000) and updates per run
        return workflow.info().is_continue_as_new_suggested()

    async def _contained(self, where: str, work, item: WorkItem | None = None) -> None:
        """Await ``work``; any failure becomes an incident and the run goes on. A failed
        learner update is queued again a few times (it is idempotent by trade id)."""
        try:
            await work
        except Exception as err:  # noqa: BLE001 - no single error may fail the account
            self._incident(where, err)
            if item is not None and item.kind == "learn" and item.attempts + 1 < ITEM_RETRIES:
                self._s.queue.append(item.model_copy(update={"attempts": item.attempts + 1}))

    async def _handle(self, item: WorkItem) -> None:
        s = self._s
        if item.kind == "wake":
            await self._cycle(item)
        elif item.kind == "add_request" and item.position_id:
            await self._add_request(item.position_id)
        elif item.kind == "close_all":
            self._open_entry("close_all", ["close_all"])
            for pos in list(s.positions.values()):  # closes arrive while we signal
                self._note(await self._request_exit(pos, "close_all"))
        elif item.kind == "llm_mode":
            await self._tell_positions_llm_mode()
        elif item.kind == "learn" and item.trade is not None:
            await self._learn(item.trade, item.regime)
        elif item.kind == "check_position" and item.position_id:
            await self._check_position(item.position_id)
        elif item.kind == "adopt" and item.holding is not None:
            await self._adopt(item.holding)

    async def _bookkeeping(self) -> None:
        """After trading: journal the incidents, keep the ledger's breaker in step."""
        s = self._s
        if s.config.llm.enabled and s.breaker.phase != s.breaker_saved:
            phase = s.breaker.phase
            await self._activity(
                api.LLM_BREAKER_SAVE,
                BreakerSave(account=s.config.account, breaker=s.breaker),
                api.JOURNAL_CALL,
            )
            s.breaker_saved = phase
        while self._unjournaled:
            incident = self._unjournaled[0]
            try:
                await self._activity(
                    api.JOURNAL_INCIDENT,
                    JournalIncident(account=s.config.account, incident=incident),
                    api.JOURNAL_CALL,
                )
            except ActivityError as err:
                workflow.logger.warning("incident not journaled: %s", api.failure_text(err))
                self._unjournaled.clear()  # the state keeps the last ones; the journal is down
                return
            self._unjournaled.pop(0)

    # ------------------------------------------------------------ account start

    async def _start_account(self, seed: AccountSeed | None) -> None:
        """A new run of the account: take the LLM spend and breaker from the ledger (so a reset
        never resets the day's budget) and adopt the broker's holdings of a reset account."""
        s = self._s
        if s.config.llm.enabled:
            ledger = await self._activity(
                api.LLM_ACCOUNT_STATE,
                LedgerRequest(account=s.config.account, time_ms=self._budget_time_ms()),
                api.JOURNAL_CALL,
                result_type=LedgerView,
            )
            spend = llm_budget.roll(s.llm_spend, self._budget_time_ms())
            if ledger.day == spend.day and ledger.day_usd > spend.day_usd:
                spend = spend.model_copy(
                    update={"day_usd": ledger.day_usd, "day_calls": ledger.day_calls}
                )
            s.llm_spend = spend
            if ledger.breaker is not None:
                s.breaker = ledger.breaker
                s.breaker_saved = ledger.breaker.phase
        s.restored = True
        if seed is None:
            return
        self._open_entry("account start", [f"reset: {seed.reason}" if seed.reason else "reset"])
        for h in seed.holdings:
            await self._adopt_holding(h)
        books.mark_to_market(s)
        s.portfolio.peak_equity = s.portfolio.equity

    async def _adopt_holding(self, h: AdoptedHolding, flagged: bool = False) -> None:
        """Track a holding the broker has: a position (and its watcher) of its own."""
        s = self._s
        n = s.entry_seq.get(h.symbol, 0) + 1
        s.entry_seq[h.symbol] = n
        position_id = f"{s.config.account}-{s.epoch}-{h.symbol.split('/')[0]}-{n}"
        pos = OpenPosition(
            position_id=position_id,
            workflow_id=f"ocw-position-{position_id}",
            symbol=h.symbol,
            qty=h.qty,
            avg_entry=h.avg_entry,
            entry_time_ms=h.entry_time_ms,
            cost=h.cost,
            fees=h.fees,
            last_price=h.avg_entry,
            peak_price=h.avg_entry,
            trough_price=h.avg_entry,
            entry_crypto_regime=s.regimes.crypto,
            adopted=flagged,
            side=h.side,
        )
        s.positions[h.symbol] = pos
        s.counters.positions_opened += 1
        s.last_prices.setdefault(h.symbol, h.avg_entry)
        await self._start_watcher(pos, next_seq=2)
        short = " short" if h.side is PositionSide.SHORT else ""
        self._note(
            f"{h.symbol} adopted{short} {ui_text.qty(h.qty)} @ {ui_text.price(h.avg_entry)} "
            f"-> {position_id}"
        )

    async def _adopt(self, h: AdoptedHolding) -> None:
        """Reconciliation's adoption: the holding enters the books at its price (equity
        grows by its value; the peak with it, so no drawdown appears from nothing)."""
        s = self._s
        if h.symbol in s.positions:
            self._note(f"{h.symbol}: not adopted, a position tracks it already")
            return
        self._open_entry("adopt", [f"reconciled: adopt {ui_text.qty(h.qty)} {h.symbol}"])
        await self._adopt_holding(h, flagged=True)
        books.mark_to_market(s)
        s.portfolio.peak_equity = max(s.portfolio.peak_equity, s.portfolio.equity)

    # ------------------------------------------------------------ one decision cycle

    async def _cycle(self, item: WorkItem) -> None:
        s = self._s
        wake = item.wake or Wake()
        s.counters.cycles += 1
        cycle = s.counters.cycles
        reasons = wake.all_reasons()
        entry = self._open_entry("none", reasons, cycle=cycle, market_time_ms=wake.market_time_ms)
        if item.folded:
            s.counters.wakes_folded += item.folded
            self._note(f"folded {item.folded} queued wake(s) into this cycle")
        try:
            await self._decide_and_act(entry, wake, cycle)
        finally:
            entry.done = True
            s.counters.wakes_handled += 1 + item.folded
            books.record_equity_mark(s)
            metrics.add(
                workflow.metric_meter(),
                metrics.DECISIONS,
                account=s.config.account,
                decided_by=entry.source or "none",
                outcome="acted" if entry.actions else "held",
            )

    async def _decide_and_act(self, log: DecisionLogEntry, wake: Wake, cycle: int) -> None:
        s = self._s
        cfg = s.config
        self._check_stuck_exits()
        # a lean engine takes the wake's view and context from the listener's decision board,
        # written for this wake before it was sent (issue 14): no listener round trip
        board = await self._board_decision(wake)
        if board is not None and board.view is not None:
            view: MarketView | None = board.view
            context = None
        else:
            # the context does not depend on the view: ask the listener for both at once (one
            # workflow-task round trip less per wake, issue 14; recorded histories keep order)
            context = (
                asyncio.create_task(self._market_context(cfg.symbols))
                if workflow.patched(VIEW_AND_CONTEXT_PATCH)
                else None
            )
            view = await self._market_view(cfg.symbols, cfg.decision_interval)
        if view is None:
            if context is not None:
                await context  # no activity is left behind the cycle
            self._note("skipped: market data unavailable")
            return
        log.market_time_ms = view.as_of_ms
        s.last_market_time_ms = view.as_of_ms
        for symbol, features in view.symbols.items():
            s.last_prices[symbol] = features.price
        self._mark()
        stale = self._stale_reason(wake, view)
        if stale:
            s.counters.stale_wakes += 1
            self._note(stale)
        await self._refresh_regimes(view.as_of_ms)
        if board is not None and board.context is not None:
            extra = board.context
        elif context is not None:
            extra = await context
        else:
            extra = await self._market_context(cfg.symbols)
        await self._book_funding(view, extra)

        decision_id = f"{cfg.account}-{s.epoch}-{cycle}"
        reasons = log.wake_reasons
        request = DecideRequest(
            account=cfg.account,
            decision_id=decision_id,
            market=view,
            account_view=books.account_view(s),
            wake_reasons=reasons,
            memory=s.memory,
            default_position_pct=cfg.default_position_pct,
            max_position_pct=cfg.max_position_pct,
            max_exposure=cfg.max_exposure,
            context=books.snapshot_context(s, extra, self._budget_time_ms()),
            plan_params=(
                cfg.position_params(s.regimes.trail_multiplier) if cfg.rule_exit_plans else None
            ),
            shorts=cfg.shorts,
            policy=cfg.policy,  # the account's decider (an arena's family), as it was started
        )
        decision = await self._decide(request)
        if decision is None:
            return
        log.source = decision.source
        log.rejected = list(decision.rejected)
        for d in decision.decisions:
            self._why = d.reasoning
            note = await self._apply(
                d.ticker, d.action, d.position_pct, d.signal_weights, view, wake, stale, d.exit_plan
            )
            self._note(note)
        self._apply_agent_settings(decision)
        if self._llm_available() != s.llm_positions_on:
            await self._tell_positions_llm_mode()
        record = DecisionRecord(
            decision_id=decision_id,
            account=cfg.account,
            market_time_ms=view.as_of_ms,
            wake_reasons=reasons,
            source=decision.source,
            decision=decision,
            executed=log.actions,
        )
        try:  # bookkeeping after trading: a journal outage costs the record, nothing else
            await self._activity(api.JOURNAL_DECISION, record, api.JOURNAL_CALL)
        except ActivityError as err:
            self._incident("journal decision", err)

    def _stale_reason(self, wake: Wake, view: MarketView) -> str | None:
        """A wake whose market time lies more than one decision interval behind the market
        is past: the cycle may exit, never enter, on it."""
        if wake.market_time_ms is None:
            return None
        behind_ms = view.as_of_ms - wake.market_time_ms
        if behind_ms <= interval_seconds(self._s.config.decision_interval) * 1000:
            return None
        return (
            f"stale wake: its market time is {behind_ms / 3_600_000:.1f} h behind the market; "
            "no entries on it"
        )

    async def _apply(
        self,
        symbol: str,
        action: Action,
        position_pct: float,
        weights: dict[str, float],
        view: MarketView,
        wake: Wake,
        stale: str | None,
        plan: ExitPlan | None = None,
    ) -> str | None:
        s = self._s
        if symbol not in s.config.symbols:
            return f"{symbol} {action}: rejected, not in the universe"
        pos = s.positions.get(symbol)
        if action == Action.HOLD:
            return None
        if action in (Action.SELL, Action.COVER):
            if pos is None:
                return f"{symbol} {action}: rejected, no open position"
            wants = PositionSide.SHORT if action == Action.COVER else PositionSide.LONG
            if pos.side is not wants:
                closer = "COVER" if pos.side is PositionSide.SHORT else "SELL"
                return f"{symbol} {action}: rejected, the position is {pos.side} ({closer} it)"
            reason = "decision_cover" if action == Action.COVER else "decision_sell"
            return await self._request_exit(pos, reason)
        if action == Action.SHORT and not s.config.shorts:
            return f"{symbol} SHORT: rejected, shorts are off (spot is long-only)"
        features = view.symbols.get(symbol)
        if features is None:
            return f"{symbol} {action}: skipped, no price"
        if s.portfolio.entries_blocked:
            return f"{symbol} {action}: skipped, entries halted ({s.portfolio.halt_reason})"
        if stale:
            return f"{symbol} {action}: skipped, the wake is stale"
        if action in (Action.BUY, Action.SHORT):
            if pos is not None:
                return f"{symbol} {action}: ignored, position {pos.position_id} already open"
            exit_ms = s.last_exit_ms.get(symbol)
            wake_ms = wake.market_time_ms
            if wake_ms is not None and exit_ms is not None and wake_ms <= exit_ms:
                return f"{symbol} {action}: skipped, the wake predates the last exit of {symbol}"
            side = PositionSide.SHORT if action == Action.SHORT else PositionSide.LONG
            return await self._open(
                symbol,
                position_pct,
                features.price,
                view.as_of_ms,
                weights,
                features.regime,
                plan,
                side,
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
        plan: ExitPlan | None = None,
        side: PositionSide = PositionSide.LONG,
    ) -> str:
        s = self._s
        cfg = s.config
        act = "SHORT" if side is PositionSide.SHORT else "BUY"
        sizing = self._risk_check("BUY", symbol, position_pct, price, held_qty=0.0, side=side)
        if not sizing.approved:
            return f"{symbol} {act}: skipped, {sizing.reason}"
        refused = self._liquidation_refusal(side, price, plan)
        if refused is not None:
            return f"{symbol} {act}: skipped, {refused}"
        n = s.entry_seq.get(symbol, 0) + 1
        s.entry_seq[symbol] = n
        position_id = f"{cfg.account}-{s.epoch}-{symbol.split('/')[0]}-{n}"
        order = OrderRequest(
            client_order_id=client_order_id(position_id, 1),
            position_id=position_id,
            seq=1,
            symbol=symbol,
            side=side.entry_side,
            qty=sizing.qty,
            ref_price=price,
            market_time_ms=time_ms,
            reason="entry",
            account=cfg.account,
            position_side=side,
        )
        fill = await self._place(order)
        if isinstance(fill, str):
            return f"{symbol} {act}: failed, {fill}"
        if not fill.filled:
            return f"{symbol} {act}: rejected by broker, {fill.reason}"
        cost = fill.qty * fill.price + fill.fee
        s.portfolio.cash -= cost
        s.portfolio.fees_paid += fill.fee
        pos = OpenPosition(
            position_id=position_id,
            workflow_id=f"ocw-position-{position_id}",
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
            exit_plan=plan if cfg.exit_plans else None,
            side=side,
        )
        s.positions[symbol] = pos
        s.counters.positions_opened += 1
        await self._start_watcher(pos, entry=fill, symbol_regime=symbol_regime)
        self._mark()
        return (
            f"{symbol} {act} {ui_text.qty(fill.qty)} @ {ui_text.price(fill.price)} -> {position_id}"
        )

    def _liquidation_refusal(
        self, side: PositionSide, price: float, plan: ExitPlan | None
    ) -> str | None:
        """Why an entry at ``price`` may not be sent: its loss exit would not fire in front of
        the isolated liquidation price at the account's leverage (trading/leverage.py). Only
        a position that can be liquidated is checked: a short, or a long above 1x."""
        cfg = self._s.config
        if side is PositionSide.LONG and cfg.leverage <= 1:
            return None
        params = cfg.position
        if plan is not None and cfg.exit_plans:
            stop = stop_loss_pct_for(plan, price, params.fee_rate, params.stop_loss_pct, side)
            params = params.model_copy(update={"stop_loss_pct": stop})
        ok, reason = liquidation_distance_ok(
            side, price, loss_exit_price(side, price, params), cfg.leverage
        )
        return None if ok else f"liquidation: {reason}"

    def _position_input(
        self,
        pos: OpenPosition,
        next_seq: int,
        entry: Fill | None = None,
        symbol_regime: str = "unknown",
    ) -> PositionInput:
        s = self._s
        cfg = s.config
        params = cfg.position_params(s.regimes.trail_multiplier)
        if pos.exit_plan is not None:  # the plan's stop, from the fill, never past the hard one
            stop = stop_loss_pct_for(
                pos.exit_plan, pos.avg_entry, params.fee_rate, params.stop_loss_pct, pos.side
            )
            params = params.model_copy(update={"stop_loss_pct": stop})
        return PositionInput(
            state=PositionState(
                position_id=pos.position_id,
                account=cfg.account,
                symbol=pos.symbol,
                qty=pos.qty,
                avg_entry=pos.avg_entry,
                entry_time_ms=pos.entry_time_ms,
                entry_fees=pos.fees,
                cost=pos.cost,
                peak_price=pos.peak_price or pos.avg_entry,
                trough_price=pos.trough_price or pos.avg_entry,
                last_price=pos.last_price,
                last_price_ms=s.last_market_time_ms or pos.entry_time_ms,
                next_seq=next_seq,
                signal_weights=pos.signal_weights,
                fills=[entry] if entry is not None else [],
                entry_regime=symbol_regime,
                entry_vol_regime=pos.entry_crypto_regime,
                current_vol_regime=s.regimes.crypto,
                exit_plan=pos.exit_plan,
                side=pos.side,
            ),
            params=params,
            decision_workflow_id=workflow.info().workflow_id,
            trading_task_queue=cfg.trading_task_queue,
            market_task_queue=cfg.market_task_queue,
            max_ticks_per_run=cfg.max_ticks_per_run,
            llm_enabled=self._llm_available(),
            llm_eval_interval_s=cfg.scaled_s(cfg.llm.position_eval_interval_s),
            llm_call_timeout_s=cfg.llm.call_timeout_s,
            exchange_stops=cfg.exchange_stops,
            search_attributes=cfg.search_attributes,
            lean_ticks=cfg.lean_ticks,
        )

    async def _start_watcher(
        self,
        pos: OpenPosition,
        next_seq: int = 2,
        entry: Fill | None = None,
        symbol_regime: str = "unknown",
    ) -> None:
        """Start the position's workflow (idempotent by workflow id); a start that fails for
        good is an incident and the position is looked up on the next cycle."""
        inp = self._position_input(pos, next_seq, entry, symbol_regime)
        opened_by = "reconciliation (adopted)" if pos.adopted else ui_text.who(self._s.decided_by)
        why = self._why if entry is not None else ("adopted" if pos.adopted else "watcher")
        try:
            await self._activity(
                api.START_POSITION,
                StartPosition(
                    workflow_id=pos.workflow_id,
                    input=inp,
                    summary=ui_text.position_summary(
                        pos.symbol,
                        pos.qty,
                        pos.avg_entry,
                        stop_loss_level(pos.avg_entry, inp.params, pos.side),
                        opened_by,
                        why,
                        side=pos.side.value,
                    ),
                    details=ui_text.position_details(
                        pos.position_id,
                        workflow.info().workflow_id,
                        self._s.config.account,
                        pos.entry_time_ms,
                        why,
                    ),
                ),
                api.START_CALL,
            )
        except ActivityError as err:
            self._incident(f"start {pos.workflow_id}", err)
            self._queue_check(pos)

    async def _add(self, pos: OpenPosition, position_pct: float, price: float) -> str:
        if pos.exit_requested:
            return f"{pos.symbol} ADD: ignored, position is closing"
        sizing = self._risk_check(
            "ADD", pos.symbol, position_pct, price, pos.qty, pos.pending_add_notional, pos.side
        )
        if not sizing.approved:
            return f"{pos.symbol} ADD: skipped, {sizing.reason}"
        pos.pending_add_notional += sizing.notional
        order = AddOrder(qty=sizing.qty, ref_price=price, reason="add")
        if not await self._tell_position(pos, PositionWorkflow.add, order):
            pos.pending_add_notional = max(0.0, pos.pending_add_notional - sizing.notional)
            return f"{pos.symbol} ADD: not delivered to {pos.position_id}"
        return f"{pos.symbol} ADD {ui_text.qty(sizing.qty)} requested on {pos.position_id}"

    async def _add_request(self, position_id: str) -> None:
        s = self._s
        for pos in list(s.positions.values()):
            if pos.position_id == position_id:
                if s.portfolio.entries_blocked or pos.pending_add_notional > 0:
                    return
                price = s.last_prices.get(pos.symbol, pos.last_price)
                self._open_entry("add_request", [f"add_request:{position_id}"])
                note = await self._add(pos, s.config.default_position_pct / 2, price)
                self._note(f"agent layer: {note}")
                return

    async def _request_exit(self, pos: OpenPosition, reason: str) -> str:
        act = "COVER" if pos.side is PositionSide.SHORT else "SELL"
        if pos.exit_requested:
            return f"{pos.symbol} {act}: exit already requested"
        pos.exit_requested = True
        pos.exit_requested_ms = self._now_ms()
        pos.exit_reason = reason
        if not await self._tell_position(pos, PositionWorkflow.exit, reason):
            return f"{pos.symbol} {act}: {pos.position_id} did not take the exit; looking it up"
        return f"{pos.symbol} {act}: exit requested on {pos.position_id} ({reason})"

    async def _place(self, order: OrderRequest) -> Fill | str:
        """The broker's Fill, or the text of the order's final error (nothing was placed)."""
        s = self._s
        try:
            fill = await self._activity(api.PLACE_ORDER, order, api.ORDER_CALL, result_type=Fill)
        except ActivityError as err:
            self._incident(f"order {order.client_order_id}", err)
            s.counters.orders_rejected += 1
            return api.failure_text(err)
        s.counters.orders += 1
        if not fill.filled:
            s.counters.orders_rejected += 1
        return fill

    async def _book_funding(self, view: MarketView, ctx: MarketContext) -> None:
        """A paper futures account's funding (``paper_funding``): at every funding time the
        market passed since the last one booked, each position open then pays or receives
        ``qty x price x rate`` by its side (trading/funding.py), at the listener's current
        funding rate and the view's price; the paper broker books it once per position and
        time, and the books follow what it holds. A symbol without a rate is not booked (said
        in the log); a failed booking is an incident and is asked again next cycle."""
        s = self._s
        cfg = s.config
        if not cfg.paper_funding:
            return
        # a candle closing at 15:59:59.999 has the 16:00 funding behind it
        due = (view.as_of_ms + 1) // FUNDING_EVERY_MS * FUNDING_EVERY_MS
        if s.last_funding_ms is None or not s.positions:
            s.last_funding_ms = due  # nothing held: nothing to book up to here
            return
        if due <= s.last_funding_ms:
            return
        times = range(s.last_funding_ms + FUNDING_EVERY_MS, due + 1, FUNDING_EVERY_MS)
        entries: list[IncomeEntry] = []
        no_rate: list[str] = []
        for pos in s.positions.values():
            reading = ctx.derivatives.get(pos.symbol)
            rate = reading.funding_rate if reading is not None else None
            features = view.symbols.get(pos.symbol)
            price = features.price if features is not None else pos.last_price
            if rate is None:
                no_rate.append(pos.symbol)
                continue
            for t in times:
                if pos.entry_time_ms < t:
                    entries.append(
                        IncomeEntry(
                            income_id=f"{pos.position_id}-funding-{t}",
                            symbol=pos.symbol,
                            kind="FUNDING_FEE",
                            amount=funding_payment(pos.side, pos.qty * price, rate),
                            asset=pos.symbol.split("/")[-1],
                            time_ms=t,
                        )
                    )
        if no_rate:
            self._note(f"funding: no rate for {', '.join(no_rate)}: not booked")
        if entries:
            try:
                held = await self._activity(
                    api.BOOK_FUNDING,
                    FundingRequest(account=cfg.account, entries=entries),
                    api.JOURNAL_CALL,
                    result_type=list[IncomeEntry],
                )
            except ActivityError as err:
                self._incident("funding", err)
                return  # asked again next cycle: the broker books each id once
            total = sum(e.amount for e in held)
            s.portfolio.cash += total
            s.portfolio.funding += total
            self._note(f"funding: {total:+.4f} over {len(held)} position-period(s)")
        s.last_funding_ms = due

    async def _board_decision(self, wake: Wake) -> BoardDecision | None:
        """The wake's view and context from the decision board (a local activity) on a lean
        engine; None when not asked (older histories, hence the patch). An answer without a
        view says why the board could not serve."""
        cfg = self._s.config
        if not cfg.lean_ticks:
            return None
        if not workflow.patched(DECISION_BOARD_PATCH):
            return None
        live_s = interval_seconds(cfg.decision_interval) * BOARD_DECISION_MAX_AGE_FRACTION
        request = BoardDecisionRequest(
            board=cfg.market_task_queue,
            interval=cfg.decision_interval,
            symbols=list(cfg.symbols),
            market_time_ms=wake.market_time_ms,
            max_age_s=max(
                BOARD_DECISION_MIN_AGE_S, min(BOARD_DECISION_MAX_AGE_S, live_s) / cfg.speed
            ),
        )
        try:
            answer = await workflow.execute_local_activity(
                api.BOARD_DECISION,
                request,
                summary=f"{cfg.decision_interval} view and context (board)",
                result_type=BoardDecision,
                **api.BOARD_CALL.kwargs(),
            )
        except ActivityError as err:
            workflow.logger.warning("decision board: %s", api.failure_text(err))
            return None
        if answer.view is None:
            workflow.logger.info("decision board not used: %s", answer.reason)
        return answer

    async def _market_view(self, symbols: list[str], interval: str) -> MarketView | None:
        try:
            return await self._activity(
                api.MARKET_VIEW,
                MarketViewRequest(symbols=symbols, interval=interval),
                api.MARKET_CALL,
                result_type=MarketView,
                market=True,
            )
        except ActivityError as err:
            workflow.logger.warning("market view unavailable: %s", api.failure_text(err))
            return None

    def _risk_check(
        self,
        action: str,
        symbol: str,
        position_pct: float,
        price: float,
        held_qty: float,
        pending_add_notional: float = 0.0,
        side: PositionSide = PositionSide.LONG,
    ):
        """SPEC §8 before any entry or add: caps, macro scale, cash, minimum, halt; exposure
        counts gross (a short's notional like a long's)."""
        s = self._s
        cfg = s.config
        return check_order(
            action=action,
            symbol=symbol,
            position_pct=position_pct,
            price=price,
            portfolio_value=s.portfolio.equity,
            cash=s.portfolio.cash,
            exposure_value=books.exposure_value(s),
            position_qty=held_qty,
            halted=s.portfolio.entries_blocked,
            max_position_pct=cfg.max_position_pct,
            max_exposure=cfg.max_exposure,
            min_notional=cfg.min_order_notional,
            macro_scale=s.regimes.exposure_scale,
            fee_rate=cfg.position.fee_rate,
            pending_add_notional=pending_add_notional,
            side=side,
        )

    # ------------------------------------------------------------ positions that went quiet

    def _check_stuck_exits(self) -> None:
        """An exit asked for long ago and never answered (closed or failed) is looked up."""
        s = self._s
        limit_ms = int(
            STUCK_EXIT_SAFETY_INTERVALS
            * s.config.scaled_s(s.config.position.safety_interval_s)
            * 1000
        )
        now = self._now_ms()
        for pos in s.positions.values():
            asked = pos.exit_requested_ms
            if pos.exit_requested and asked is not None and now - asked > limit_ms:
                pos.exit_requested_ms = now  # look again only after another while
                self._queue_check(pos)

    def _queue_check(self, pos: OpenPosition) -> None:
        s = self._s
        if any(i.kind == "check_position" and i.position_id == pos.position_id for i in s.queue):
            return
        s.queue.append(
            WorkItem(kind="check_position", position_id=pos.position_id, received_ms=self._now_ms())
        )

    async def _check_position(self, position_id: str) -> None:
        """Temporal's and the broker's word on a position that did not take a signal: book its
        trade if it closed, resend a pending exit if it runs, restart its watcher if it is gone."""
        s = self._s
        pos = next((p for p in s.positions.values() if p.position_id == position_id), None)
        if pos is None:
            return  # closed meanwhile
        self._open_entry("check_position", [f"check:{position_id}"])
        view = await self._activity(
            api.POSITION_STATUS,
            PositionStatusRequest(workflow_id=pos.workflow_id, position_id=position_id),
            api.POSITION_STATUS_CALL,
            result_type=PositionStatusView,
        )
        if view.trade is not None:
            books.apply_closed(s, view.trade, self._now_ms())
            self._note(f"{pos.symbol}: {position_id} had closed ({view.trade.exit_reason})")
            return
        if view.status == "RUNNING":
            if pos.exit_requested:
                reason = pos.exit_reason or "resent"
                await self._tell_position(pos, PositionWorkflow.exit, reason, check=False)
                self._note(f"{pos.symbol}: exit resent to {position_id}")
            return
        # the broker shows a short as a negative holding
        held = -view.broker_qty if pos.side is PositionSide.SHORT else view.broker_qty
        if held <= 0:
            self._incident(
                f"position {position_id}",
                f"its workflow is {view.status} and the broker holds no {pos.symbol}: "
                "the books keep it until reconciled",
            )
            return
        wanted_exit = pos.exit_reason if pos.exit_requested else None
        pos.watcher += 1
        pos.workflow_id = f"ocw-position-{position_id}-w{pos.watcher}"
        pos.exit_requested = False
        pos.exit_requested_ms = None
        if held < pos.qty:
            pos.qty = held
        s.counters.watchers_replaced += 1
        self._incident(
            f"position {position_id}",
            f"its workflow is {view.status}: a new watcher {pos.workflow_id} takes over",
        )
        # sequence numbers past every order the lost watcher may have placed
        await self._start_watcher(pos, next_seq=view.broker_orders + 10)
        if wanted_exit:
            self._note(await self._request_exit(pos, wanted_exit))

    async def _tell_position(self, pos: OpenPosition, signal, arg, check: bool = True) -> bool:
        """Signal a position; a failure (it closed meanwhile, or is gone) is an incident, the
        position is looked up, and the caller goes on."""
        try:
            await workflow.get_external_workflow_handle(pos.workflow_id).signal(signal, arg)
            return True
        except Exception as err:  # noqa: BLE001 - contained: the lookup settles it
            name = getattr(signal, "__name__", str(signal))
            self._incident(f"signal {name} -> {pos.workflow_id}", err)
            if check:
                self._queue_check(pos)
            return False

    # ------------------------------------------------------------ regimes and learner

    async def _refresh_regimes(self, market_ms: int) -> None:
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
                crypto = await self._activity(
                    api.CRYPTO_REGIME,
                    CryptoRegimeRequest(as_of_ms=market_ms, symbol=cfg.regime_symbol),
                    api.REGIME_CALL,
                    result_type=CryptoRegime,
                    market=True,
                )
            except ActivityError as err:
                r.crypto_note = f"refit failed: {api.failure_text(err)}"[:200]
            else:
                if crypto.label != r.crypto:
                    self._note(f"crypto regime {r.crypto} -> {crypto.label}")
                r.crypto = crypto.label
                r.crypto_probability = crypto.state_probability
                r.crypto_as_of_ms = market_ms
                r.crypto_note = crypto.reason
                r.next_crypto_ms = market_ms + int(cfg.crypto_regime_every_h * hour)
        if r.next_macro_ms is None or market_ms >= r.next_macro_ms:
            r.next_macro_ms = market_ms + hour
            try:
                macro = await self._activity(
                    api.MACRO_REGIME,
                    MacroRequest(as_of_ms=market_ms),
                    api.REGIME_CALL,
                    result_type=MacroRegime,
                )
            except ActivityError as err:
                r.macro_note = f"refresh failed: {api.failure_text(err)}"[:200]
            else:
                if macro.quadrant != r.macro:
                    self._note(f"macro regime {r.macro} -> {macro.quadrant}")
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
                await self._tell_position(pos, PositionWorkflow.market_context, ctx)

    async def _learn(self, trade: ClosedTrade, regime: str | None) -> None:
        """The learner's update runs as an activity (it also writes a snapshot for analysis);
        the workflow keeps the returned state. Idempotent by trade id; bounded in time."""
        s = self._s
        s.learner = await self._activity(
            api.LEARNER_UPDATE,
            LearnerUpdateRequest(
                state=s.learner,
                trade=trade,
                regime=regime or "unknown",
                params=s.config.learner,
                account=s.config.account,
            ),
            api.LEARNER_CALL,
            result_type=LearnerState,
        )

    # ------------------------------------------------------------ who decides

    async def _decide(self, req: DecideRequest) -> AgentDecision | None:
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
                decision = await self._activity(
                    api.LLM_DECIDE,
                    req,
                    api.llm_call(s.config.llm.call_timeout_s, api.LLM_RETRY),
                    result_type=AgentDecision,
                )
            except ActivityError as err:
                error = self._llm_error(err)
                if api.failure_type(err) == "LLMDailyBudgetSpent":
                    self._budget_spent()
                    why = "LLM daily budget spent (ledger)"
                else:
                    s.llm_spend = llm_budget.record_failure(s.llm_spend)
                    s.breaker = breaker.record_failure(
                        s.breaker, self._now_ms(), error, s.config.breaker_params()
                    )
                    why = f"LLM failed ({error})" + (", probe failed" if probe else "")
            else:
                s.breaker = breaker.record_success(s.breaker)
                self._count_llm(decision.llm)
                s.decided_by = "llm"
                if probe:
                    self._note("LLM circuit breaker closed: the probe succeeded")
                return decision
        s.decided_by = f"rule: {why}"
        if not rule_may_act(req.wake_reasons):
            # the rules are defined on closed decision candles (as in the backtests): an
            # outlier, timer or condition wake is the agent's business, the stops stay on
            self._note(f"rule policy waits for a candle close ({why})")
            return None
        if s.config.llm.enabled:
            self._note(f"rule policy decides: {why}")
        weights = learner.policy_weights(
            s.learner, s.regimes.crypto, workflow.random(), s.config.learner
        )
        update: dict = {"group_weights": weights}
        if s.config.shorts:  # drawn only then: another draw changes the random sequence
            update["short_group_weights"] = learner.policy_weights(
                s.learner,
                s.regimes.crypto,
                workflow.random(),
                s.config.learner,
                side=PositionSide.SHORT,
            )
        rule_req = req.model_copy(update=update)
        try:
            if s.config.lean_ticks and workflow.patched(RULE_DECIDE_LOCAL_PATCH):
                # pure CPU on this worker (~10 ms): inside this workflow task, so the risk
                # check and the order follow without another round trip (issue 14)
                return await workflow.execute_local_activity(
                    api.DECIDE,
                    rule_req,
                    result_type=AgentDecision,
                    summary=_activity_summary(api.DECIDE, rule_req),
                    **api.DECIDE_LOCAL_CALL.kwargs(),
                )
            return await self._activity(
                api.DECIDE, rule_req, api.DECIDE_CALL, result_type=AgentDecision
            )
        except ActivityError as err:
            self._note(f"skipped: decide failed ({api.failure_text(err)})")
            return None

    def _budget_spent(self) -> None:
        """The ledger says the day's budget is spent: the workflow's count agrees from now."""
        s = self._s
        budget = s.config.llm.daily_budget_usd
        spend = llm_budget.roll(s.llm_spend, self._budget_time_ms())
        if budget is not None and spend.day_usd < budget:
            spend = spend.model_copy(update={"day_usd": budget})
        s.llm_spend = spend

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
                await self._tell_position(pos, PositionWorkflow.llm_mode, on)

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
            return await self._activity(
                api.MARKET_CONTEXT,
                MarketContextRequest(symbols=symbols),
                api.MARKET_CALL,
                result_type=MarketContext,
                market=True,
            )
        except ActivityError as err:
            workflow.logger.warning("market context unavailable: %s", api.failure_text(err))
            return MarketContext(missing=["derivatives", "liquidations", "sentiment"])

    # ------------------------------------------------------------ bookkeeping

    async def _activity(
        self,
        name: str,
        arg: object,
        call: api.CallOptions,
        result_type: type | None = None,
        market: bool = False,
    ):
        """One activity call with its declared options, on the trading (or market) queue,
        with a summary the Temporal UI shows."""
        cfg = self._s.config
        return await workflow.execute_activity(
            name,
            arg,
            task_queue=cfg.market_task_queue if market else cfg.trading_task_queue,
            result_type=result_type,
            summary=_activity_summary(name, arg),
            **call.kwargs(),
        )

    def _ui_stale(self) -> bool:
        """The memo's position links are behind the books (only with search attributes on:
        without them the loop wakes as it always did)."""
        s = self._s
        if not s.config.search_attributes or self._shown_positions is None:
            return False
        return sorted(f"ocw-position-{p.position_id}" for p in s.positions.values()) != (
            self._shown_positions
        )

    def _show(self) -> None:
        """The UI's view of the account now (no history cost), and its search attributes and
        memo when they changed (the memo lists the open positions' workflows)."""
        s = self._s
        p = s.portfolio
        self._record_metrics()
        positions = [(x.position_id, x.symbol, x.qty) for x in s.positions.values()]
        workflow.set_current_details(
            ui_text.account_now(
                p.equity,
                p.cash,
                books.exposure_value(s) / p.equity if p.equity > 0 else 0.0,
                p.drawdown,
                positions,
                s.decided_by,
                s.gate.next_check_seconds,
                p.halt_reason if p.entries_blocked else None,
            )
        )
        if not s.config.search_attributes:
            return
        decided = ui_text.decided_by_value(s.decided_by)
        if decided != self._shown_decided_by:
            workflow.upsert_search_attributes([OCW_DECIDED_BY.value_set(decided)])
            self._shown_decided_by = decided
        ids = sorted(f"ocw-position-{pid}" for pid, _, _ in positions)
        if ids != self._shown_positions:
            workflow.upsert_memo({"positions": ids})
            self._shown_positions = ids

    def _record_metrics(self) -> None:
        """The account's books on the worker's Prometheus endpoint (silent while replaying)."""
        s = self._s
        p = s.portfolio
        meter = workflow.metric_meter()
        account = s.config.account
        gauges = (
            (metrics.EQUITY, p.equity),
            (metrics.CASH, p.cash),
            (metrics.EXPOSURE, books.exposure_value(s) / p.equity if p.equity > 0 else 0.0),
            (metrics.DRAWDOWN, p.drawdown),
            (metrics.HALTED, 1.0 if p.entries_blocked else 0.0),
            (metrics.OPEN_POSITIONS, float(len(s.positions))),
        )
        for defn, value in gauges:
            metrics.set_gauge(meter, defn, value, account=account)

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

    def _mark(self) -> None:
        note = books.mark_to_market(self._s)
        if note.halt_changed:
            workflow.logger.warning("drawdown halt %s", note.halt_changed)
        if note.cooloff_lifted_h is not None:
            self._note(f"drawdown halt lifted after its {note.cooloff_lifted_h:g} h cool-off")
            workflow.logger.warning(
                "drawdown halt lifted after a %g h cool-off", note.cooloff_lifted_h
            )

    def _open_entry(
        self,
        source: str,
        reasons: list[str],
        cycle: int | None = None,
        market_time_ms: int | None = None,
    ) -> DecisionLogEntry:
        """The decision log entry of the work item at hand (a cycle, close-all, a lookup)."""
        s = self._s
        entry = DecisionLogEntry(
            cycle=cycle if cycle is not None else s.counters.cycles,
            time_ms=self._now_ms(),
            market_time_ms=market_time_ms if market_time_ms is not None else s.last_market_time_ms,
            wake_reasons=reasons,
            source=source,
            actions=[],
            done=cycle is None,
        )
        s.decision_log.append(entry)
        del s.decision_log[:-DECISION_LOG_KEPT]
        self._entry = entry
        return entry

    def _note(self, note: str | None) -> None:
        if not note:
            return
        if self._entry is None:
            self._open_entry("note", [])
        assert self._entry is not None
        self._entry.actions.append(note)

    def _incident(self, where: str, err: BaseException | str) -> None:
        """A contained failure: logged, kept in state for `ocw status`, journaled after."""
        s = self._s
        text = err if isinstance(err, str) else api.failure_text(err, ERROR_TEXT_MAX)
        incident = Incident(
            time_ms=self._now_ms(),
            market_time_ms=s.last_market_time_ms,
            where=where[:120],
            error=text[:ERROR_TEXT_MAX],
        )
        s.incidents.append(incident)
        del s.incidents[:-INCIDENTS_KEPT]
        s.counters.incidents += 1
        self._unjournaled.append(incident)
        del self._unjournaled[:-JOURNAL_INCIDENTS_KEPT]
        if self._entry is not None:
            self._entry.actions.append(f"incident: {where}: {text}"[:ERROR_TEXT_MAX])
        workflow.logger.error("account %s: %s: %s", s.config.account, where, text)

    @staticmethod
    def _now_ms() -> int:
        return int(workflow.time() * 1000)


def _activity_summary(name: str, arg: object) -> str:
    """One line per activity in the UI: what it does, to what."""
    if isinstance(arg, OrderRequest):
        return f"place {arg.side.value} {ui_text.qty(arg.qty)} {arg.symbol} ({arg.reason})"
    if isinstance(arg, DecideRequest):
        who = "Claude" if name == api.LLM_DECIDE else "rule policy"
        return f"{who}: decide {len(arg.market.symbols)} symbols"
    if isinstance(arg, StartPosition):
        return f"start {arg.input.state.symbol} position {arg.workflow_id}"
    if isinstance(arg, MarketViewRequest):
        return f"market view {', '.join(arg.symbols)} {arg.interval}"
    return name.replace("_", " ")
