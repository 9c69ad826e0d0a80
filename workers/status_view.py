"""Human-readable rendering of the DecisionWorkflow's status (``ocw status``, the demo)."""

from __future__ import annotations

from datetime import UTC, datetime

from trading.exit_plan import describe as describe_plan
from trading.models import ClosedTrade, PositionSide
from trading.policies.live import CASH
from trading.safety import mark_value
from trading.state import DecisionLogEntry, Incident, StatusView
from workflows.ui_text import price, qty


def fmt_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def render_status(view: StatusView) -> str:
    p = view.portfolio
    lines = [
        f"account {view.account}",
        f"  equity {p.equity:,.2f}  cash {p.cash:,.2f}  peak {p.peak_equity:,.2f}  "
        f"drawdown {p.drawdown:.2%}  realized {p.realized_pnl:+,.2f}  fees {p.fees_paid:,.2f}"
        + (f"  funding {p.funding:+,.2f}" if p.funding else ""),
        f"  entries {'HALTED: ' + p.halt_reason if p.entries_blocked else 'allowed'}",
        f"  open positions ({len(view.positions)}):",
    ]
    cfg = view.config
    if cfg is not None and (cfg.agent or cfg.policy != "rule"):  # an arena agent, a family
        decider = cfg.agent or cfg.policy
        if cfg.policy == CASH:
            decider += " (opens nothing without Claude: no policy passed the walk-forward)"
        lines.insert(1, f"  decider: {decider}")
    for pos in view.positions:
        pnl = mark_value(pos.side, pos.qty, pos.avg_entry, pos.last_price) - pos.cost
        side = " short" if pos.side is PositionSide.SHORT else ""
        lines.append(
            f"    {pos.position_id:<28} {pos.symbol:<10}{side} qty {qty(pos.qty)} "
            f"entry {price(pos.avg_entry)} last {price(pos.last_price)} pnl {pnl:+,.2f}"
            f"{'  (adopted)' if pos.adopted else ''}"
            f"{'  (exit requested)' if pos.exit_requested else ''}"
        )
        if pos.exit_plan is not None:
            lines.append(f"      plan ({pos.exit_plan.source}): {describe_plan(pos.exit_plan)}")
    g = view.gate
    lines.append(
        f"  gate: next_check_seconds={g.next_check_seconds} wake_conditions={len(g.wake_conditions)} "
        f"(version {g.version})"
    )
    c = view.counters
    lines.append(
        f"  wakes received {c.wakes_received}, handled {c.wakes_handled}, queued {view.queue_length}; "
        f"cycles {c.cycles}; orders {c.orders} ({c.orders_rejected} rejected); "
        f"positions opened {c.positions_opened}, closed {c.positions_closed}; "
        f"continued-as-new {c.continued_as_new}"
    )
    if c.wakes_folded or c.stale_wakes or c.exits_failed or c.watchers_replaced:
        lines.append(
            f"  wakes folded {c.wakes_folded}, stale {c.stale_wakes}; exits failed "
            f"{c.exits_failed}; watchers replaced {c.watchers_replaced}"
        )
    if c.incidents:
        lines.append(f"  incidents: {c.incidents} contained (last {len(view.incidents)}):")
        lines.extend("    " + render_incident(i) for i in view.incidents[-5:])
    if view.reconcile is not None:
        r = view.reconcile
        state = "agree" if r.ok else f"MISMATCH: {'; '.join(r.mismatches) or 'actions pending'}"
        lines.append(
            f"  reconciled {fmt_time(r.time_ms)} ({r.source}): {state}; {r.actions} action(s) done"
        )
    elif view.config is not None and view.config.mode in ("testnet", "live"):
        lines.append("  reconciled: not yet (the trading worker reconciles at start)")
    if view.llm is not None:
        lines.append("  " + render_llm(view))
    if view.regimes is not None:
        r = view.regimes
        lines.append(
            f"  regimes: crypto {r.crypto} (as of {fmt_time(r.crypto_as_of_ms)}), macro {r.macro} "
            f"(exposure x{r.exposure_scale:g}, trail x{r.trail_multiplier:g})"
        )
    if view.reliabilities:
        rel = ", ".join(f"{k} {v:.2f}" for k, v in view.reliabilities.items())
        lines.append(f"  learner reliability: {rel}")
    if view.last_decision:
        lines.append("  last decision: " + render_decision(view.last_decision))
    if view.memory:
        lines.append(f"  memory: {view.memory}")
    if view.recent_trades:
        lines.append("  recent trades:")
        lines.extend("    " + render_trade(t) for t in view.recent_trades)
    return "\n".join(lines)


def render_incident(i: Incident) -> str:
    when = fmt_time(i.market_time_ms) if i.market_time_ms else fmt_time(i.time_ms)
    return f"{when} {i.where}: {i.error}"


def render_llm(view: StatusView) -> str:
    llm = view.llm
    assert llm is not None
    sp = llm.spend
    budget = f" of ${llm.daily_budget_usd:.2f}" if llm.daily_budget_usd is not None else ""
    who = llm.decided_by or "-"
    if not llm.enabled:
        return f"LLM: not configured; the rule policy decides (last cycle: {who})"
    return (
        f"LLM: breaker {llm.breaker}; last cycle decided by {who}; today ${sp.day_usd:.4f}{budget} "
        f"in {sp.day_calls} call(s); total ${sp.total_usd:.4f} in {sp.total_calls} call(s), "
        f"{sp.failed_calls} failed, tokens in {sp.input_tokens:,} out {sp.output_tokens:,} "
        f"cache-read {sp.cache_read_tokens:,}"
    )


def render_decision(entry: DecisionLogEntry) -> str:
    actions = "; ".join(entry.actions) if entry.actions else "hold"
    reasons = entry.wake_reasons
    if len(reasons) > 2:  # four symbols closing the same candle: say it once
        kinds = sorted({r.split(":")[0] for r in reasons})
        reasons = [f"{'+'.join(kinds)} x{len(entry.wake_reasons)}"]
    return (
        f"#{entry.cycle} {fmt_time(entry.market_time_ms)} ({', '.join(reasons)}) "
        f"[{entry.source}] {actions}"
    )


def render_trade(t: ClosedTrade) -> str:
    return (
        f"{t.trade_id:<28} {t.symbol:<10} {fmt_time(t.entry_time_ms)} -> {fmt_time(t.exit_time_ms)} "
        f"{price(t.entry_price)} -> {price(t.exit_price)} pnl {t.pnl:+,.2f} ({t.pnl_pct:+.2%}) "
        f"fees {t.fees:,.2f} exit {t.exit_reason}"
    )
