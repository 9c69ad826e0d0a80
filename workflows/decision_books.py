"""The DecisionWorkflow's books: marks, drawdown, closed trades, the views it sends out.

Plain deterministic functions over ``DecisionState`` (no activity, no signal, no clock of their
own), so the workflow class keeps to orchestration and these stay easy to read and test.
"""

from __future__ import annotations

from dataclasses import dataclass

from trading import learner, llm_budget
from trading.halt import HaltRule, HaltState, halt_step
from trading.models import ClosedTrade, PositionSide, Wake
from trading.safety import mark_value
from trading.snapshot import (
    EngineStatus,
    MacroReading,
    MarketContext,
    PositionMark,
    RegimeReading,
    SnapshotContext,
)
from trading.state import (
    EQUITY_MARKS_KEPT,
    RECENT_TRADES_KEPT,
    AccountView,
    DecisionState,
    EquityMark,
    WorkItem,
)


def exposure_value(s: DecisionState) -> float:
    """Gross exposure: Σ qty·price over longs and shorts alike (SPEC §8's cap counts both)."""
    return sum(p.qty * s.last_prices.get(sym, p.last_price) for sym, p in s.positions.items())


def positions_value(s: DecisionState) -> float:
    """What the positions add to the equity: a long's ``q·P``, a short's collateral plus its
    open PnL ``q·(2E - P)`` (its notional left the cash at entry, as the backtester books
    it). Equal to ``exposure_value`` without shorts."""
    return sum(
        mark_value(p.side, p.qty, p.avg_entry, s.last_prices.get(sym, p.last_price))
        for sym, p in s.positions.items()
    )


@dataclass(frozen=True)
class MarkNote:
    """What a mark changed that the log should say."""

    halt_changed: str | None = None  # "on: <reason>" / "off: <how it recovered>"
    cooloff_lifted_h: float | None = None


def mark_to_market(s: DecisionState) -> MarkNote:
    """Positions at the last prices, equity, peak, drawdown and the halt (SPEC §8)."""
    for sym, pos in s.positions.items():
        pos.last_price = s.last_prices.get(sym, pos.last_price)
        pos.peak_price = max(pos.peak_price or pos.last_price, pos.last_price)
        pos.trough_price = min(pos.trough_price or pos.last_price, pos.last_price)
    p = s.portfolio
    p.equity = p.cash + positions_value(s)
    # the halt as the backtester marks it (trading.halt); SPEC §8's never-lifting halt unless
    # the opt-in cool-off is set
    rule = HaltRule(
        halt_pct=s.config.drawdown_halt_pct, cooloff_hours=s.config.drawdown_cooloff_hours
    )
    was = HaltState(peak=p.peak_equity, halted=p.halted, halted_since_ms=p.halted_since_ms)
    now, event = halt_step(rule, was, p.equity, s.last_market_time_ms)
    p.peak_equity, p.drawdown = now.peak, now.drawdown
    p.halted, p.halted_since_ms = now.halted, now.halted_since_ms
    if event.started:
        p.halt_reason = event.started
        return MarkNote(f"on: {event.started}")
    if event.lifted and event.by_cooloff:
        # as after ``resume``: the drawdown is measured afresh from here
        p.halt_reason = ""
        return MarkNote(None, s.config.drawdown_cooloff_hours)
    if event.lifted:
        p.halt_reason = event.lifted
        return MarkNote(f"off: {event.lifted}")
    return MarkNote()


def apply_closed(s: DecisionState, trade: ClosedTrade, now_ms: int) -> bool:
    """Book a closed trade once (by trade id): cash, realized PnL, the learner's work item.
    Returns False when the trade was already booked."""
    if trade.trade_id in s.seen_trade_ids:
        return False
    s.seen_trade_ids.append(trade.trade_id)
    del s.seen_trade_ids[: -RECENT_TRADES_KEPT * 4]
    pos = s.positions.get(trade.symbol)
    if pos is not None and pos.position_id == trade.trade_id:
        del s.positions[trade.symbol]
        proceeds = pos.cost + trade.pnl
        s.portfolio.cash += proceeds
        s.portfolio.fees_paid += max(0.0, trade.fees - pos.fees)
    s.portfolio.realized_pnl += trade.pnl
    prev = s.last_exit_ms.get(trade.symbol)
    s.last_exit_ms[trade.symbol] = max(prev or 0, trade.exit_time_ms)
    mark_to_market(s)
    s.recent_trades.append(trade)
    del s.recent_trades[:-RECENT_TRADES_KEPT]
    s.counters.positions_closed += 1
    regime = pos.entry_crypto_regime if pos is not None else s.regimes.crypto
    s.queue.append(WorkItem(kind="learn", trade=trade, regime=regime, received_ms=now_ms))
    return True


def account_view(s: DecisionState) -> AccountView:
    p = s.portfolio
    return AccountView(
        portfolio_value=p.equity,
        cash=p.cash,
        exposure=exposure_value(s) / p.equity if p.equity > 0 else 0.0,
        drawdown=p.drawdown,
        halted=p.entries_blocked,
        positions=list(s.positions.values()),
        recent_trades=s.recent_trades[-10:],
    )


def snapshot_context(
    s: DecisionState, extra: MarketContext | None, budget_time_ms: int
) -> SnapshotContext:
    """What the LLM's snapshot shows beyond market and account (SPEC §2)."""
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
                s.llm_spend, budget_time_ms, llm.daily_budget_usd
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
        short_reliabilities=(
            learner.reliabilities(
                s.learner, s.regimes.crypto, s.config.learner, side=PositionSide.SHORT
            )
            if s.config.shorts
            else None
        ),
        decision_interval=s.config.decision_interval,
        fee_rate=s.config.position.fee_rate,
    )


def next_work_item(s: DecisionState) -> WorkItem:
    """The next item to handle; the wakes queued one after the other at its head are folded.

    After a stall, queued wakes must not each be worked off on the current market (120 of 180
    decisions were once taken on a replay's final market): the run of wakes at the head of the
    queue becomes one cycle with all their reasons and the newest market time.

    Strictly first in, first out otherwise: what is taken never depends on items further back.
    A workflow task that a freshly started worker takes over can deliver its late signals in a
    separate activation, while a replay of the same history delivers them at once (seen in the
    chaos bench); an item that only the replay saw then always sits behind what the original
    run took, so both take the same.
    """
    q = s.queue
    if q[0].kind != "wake":
        return q.pop(0)
    j = 1
    while j < len(q) and q[j].kind == "wake":
        j += 1
    wakes = q[:j]
    s.queue = q[j:]
    return wakes[0] if len(wakes) == 1 else fold_wakes(wakes)


def fold_wakes(items: list[WorkItem]) -> WorkItem:
    """One wake with every reason and symbol of ``items`` (in order) at the newest market time."""
    reasons: list[str] = []
    symbols: list[str] = []
    times = []
    folded = 0
    for item in items:
        wake = item.wake or Wake()
        reasons.extend(r for r in wake.all_reasons() if r not in reasons)
        symbols.extend(x for x in wake.symbols if x not in symbols)
        if wake.market_time_ms is not None:
            times.append(wake.market_time_ms)
        folded += 1 + item.folded
    first = items[0]
    wake = Wake(
        reason=reasons[0],
        reasons=reasons[1:],
        symbols=symbols,
        market_time_ms=max(times) if times else None,
        wake_id=(first.wake.wake_id if first.wake else None),
    )
    return first.model_copy(update={"wake": wake, "folded": folded - 1})


def record_equity_mark(s: DecisionState) -> None:
    """Append the equity at the last market time, with the equal-weight buy-and-hold of the
    universe since the first mark (its base prices are fixed then); thin the history by half
    when it is full, so the state stays bounded whatever the run's length."""
    if s.last_market_time_ms is None:
        return
    if not s.benchmark_base:
        s.benchmark_base = {k: v for k, v in s.last_prices.items() if v > 0}
    ratios = [
        s.last_prices[k] / base
        for k, base in s.benchmark_base.items()
        if s.last_prices.get(k, 0) > 0 and base > 0
    ]
    start_equity = s.equity_marks[0].equity if s.equity_marks else s.portfolio.equity
    benchmark = start_equity * sum(ratios) / len(ratios) if ratios else None
    mark = EquityMark(time_ms=s.last_market_time_ms, equity=s.portfolio.equity, benchmark=benchmark)
    if s.equity_marks and s.equity_marks[-1].time_ms == mark.time_ms:
        s.equity_marks[-1] = mark
    else:
        s.equity_marks.append(mark)
    if len(s.equity_marks) > EQUITY_MARKS_KEPT:
        s.equity_marks = [*s.equity_marks[:-1:2], s.equity_marks[-1]]
