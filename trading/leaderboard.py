"""The arena's leaderboard (issue 15, agent vs agent): pure, from each account's status.

Per agent: return on its initial cash, Sharpe and maximum drawdown of its equity marks (one per
decision cycle, ``DecisionState.equity_marks``), fees paid, trades (closed positions, and the
ones still open), orders, and its LLM spend. Ranked by return, then Sharpe.

Sharpe: the marks are irregular (a cycle per candle close, plus other wakes), so the curve is
sampled on a regular grid (the last mark at or before each step): daily when it spans at least
14 days, every 4 hours when at least 2 days, else hourly; the mean over the standard deviation
of the step returns, annualised over 365 days (as ``trading/backtest/metrics.py``). Fewer than
three steps give none. Drawdown is the deepest fall of the marks from their running peak, the
initial cash first, as a positive fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from trading.models import Model
from trading.state import EquityMark, StatusView

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
YEAR_MS = 365 * DAY_MS
MIN_STEPS = 3


class LeaderRow(Model):
    rank: int = 0
    agent: str
    account: str
    decider: str
    status: str = "running"  # running, or why it could not be read
    equity: float | None = None
    initial_cash: float | None = None
    return_pct: float | None = None
    sharpe: float | None = None
    max_drawdown: float | None = None  # a positive fraction
    fees: float = 0.0
    trades: int = 0  # closed positions
    open_positions: int = 0
    orders: int = 0
    llm_cost_usd: float = 0.0
    llm_calls: int = 0
    cycles: int = 0
    decided_by: str = ""  # who decided its last cycle
    marks: int = 0


class Leaderboard(Model):
    arena: str
    running: bool = True
    rows: list[LeaderRow] = Field(default_factory=list)
    benchmark_return: float | None = None  # equal-weight buy-and-hold of the universe
    sharpe_step: str = ""  # the grid the Sharpe ratios were computed on


@dataclass(frozen=True)
class AgentStatus:
    """What the leaderboard reads of one agent: its status, or why there is none."""

    agent: str
    account: str
    decider: str
    view: StatusView | None = None
    error: str = ""


# ------------------------------------------------------------ the math


def sharpe_step_ms(marks: Sequence[EquityMark]) -> int:
    span = marks[-1].time_ms - marks[0].time_ms if len(marks) > 1 else 0
    if span >= 14 * DAY_MS:
        return DAY_MS
    if span >= 2 * DAY_MS:
        return 4 * HOUR_MS
    return HOUR_MS


def sampled(marks: Sequence[EquityMark], step_ms: int) -> list[float]:
    """The equity at ``first, first + step, ...`` up to the last mark (the last mark at or
    before each time), and the last mark itself when it falls between two steps."""
    pts = sorted(marks, key=lambda m: m.time_ms)
    if not pts:
        return []
    out: list[float] = []
    i = 0
    t = pts[0].time_ms
    end = pts[-1].time_ms
    while t <= end:
        while i + 1 < len(pts) and pts[i + 1].time_ms <= t:
            i += 1
        out.append(pts[i].equity)
        t += step_ms
    if (end - pts[0].time_ms) % step_ms:
        out.append(pts[-1].equity)
    return out


def sharpe(marks: Sequence[EquityMark], step_ms: int | None = None) -> float | None:
    """Annualised Sharpe ratio of the sampled equity's step returns (None: too few steps or
    a flat curve)."""
    if len(marks) < 2:
        return None
    step = step_ms or sharpe_step_ms(marks)
    levels = sampled(marks, step)
    rets = [b / a - 1.0 for a, b in zip(levels, levels[1:], strict=False) if a > 0]
    if len(rets) < MIN_STEPS:
        return None
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    sd = math.sqrt(var)
    if sd < 1e-12:
        return None
    return mean / sd * math.sqrt(YEAR_MS / step)


def max_drawdown(marks: Sequence[EquityMark], initial: float | None = None) -> float:
    """Deepest fall from the running peak, as a positive fraction (0: it never fell)."""
    curve = [m.equity for m in sorted(marks, key=lambda m: m.time_ms)]
    if initial is not None and initial > 0:
        curve = [initial, *curve]
    peak = -math.inf
    worst = 0.0
    for e in curve:
        peak = max(peak, e)
        if peak > 0:
            worst = max(worst, 1.0 - e / peak)
    return worst


def _row(a: AgentStatus) -> LeaderRow:
    row = LeaderRow(agent=a.agent, account=a.account, decider=a.decider)
    v = a.view
    if v is None:
        return row.model_copy(update={"status": a.error or "no status"})
    p = v.portfolio
    initial = v.config.initial_cash if v.config is not None else None
    if initial is None and v.equity_marks:
        initial = v.equity_marks[0].equity
    marks = list(v.equity_marks)
    spend = v.llm.spend if v.llm is not None else None
    return row.model_copy(
        update={
            "equity": p.equity,
            "initial_cash": initial,
            "return_pct": p.equity / initial - 1.0 if initial else None,
            "sharpe": sharpe(marks),
            "max_drawdown": max(max_drawdown(marks, initial), p.drawdown),
            "fees": p.fees_paid,
            "trades": v.counters.positions_closed,
            "open_positions": len(v.positions),
            "orders": v.counters.orders,
            "llm_cost_usd": spend.total_usd if spend is not None else 0.0,
            "llm_calls": spend.total_calls if spend is not None else 0,
            "cycles": v.counters.cycles,
            "decided_by": v.llm.decided_by if v.llm is not None else "",
            "marks": len(marks),
        }
    )


def leaderboard(arena: str, agents: Sequence[AgentStatus], running: bool = True) -> Leaderboard:
    """Every agent's row, ranked by return then Sharpe (unreadable agents last, unranked)."""
    rows = [_row(a) for a in agents]
    ranked = sorted(
        (r for r in rows if r.return_pct is not None),
        key=lambda r: (-(r.return_pct or 0.0), -(r.sharpe if r.sharpe is not None else -1e9)),
    )
    for i, r in enumerate(ranked, start=1):
        r.rank = i
    rest = [r for r in rows if r.return_pct is None]
    bench = None
    steps = set()
    for a in agents:
        if a.view is not None and a.view.equity_marks:
            marks = a.view.equity_marks
            steps.add(sharpe_step_ms(marks))
            first, last = marks[0], marks[-1]
            if bench is None and first.benchmark and last.benchmark:
                bench = last.benchmark / first.benchmark - 1.0
    step = {DAY_MS: "daily", 4 * HOUR_MS: "4h", HOUR_MS: "1h"}
    return Leaderboard(
        arena=arena,
        running=running,
        rows=[*ranked, *rest],
        benchmark_return=bench,
        sharpe_step=", ".join(step[s] for s in sorted(steps, reverse=True)),
    )


# ------------------------------------------------------------ text


def _pct(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:+.2%}" if signed else f"{x:.2%}"


def render(board: Leaderboard) -> str:
    """The leaderboard as a fixed-width table (``ocw arena status``, ``ocw status``)."""
    head = f"arena {board.arena} ({'running' if board.running else 'stopped'})"
    cols = (
        f"{'#':>2} {'agent':<22} {'decider':<30} {'equity':>11} {'return':>8} {'sharpe':>7} "
        f"{'max dd':>7} {'fees':>8} {'trades':>6} {'open':>4} {'LLM $':>8}"
    )
    lines = [head, cols]
    for r in board.rows:
        rank = str(r.rank) if r.rank else "-"
        if r.equity is None:
            lines.append(f"{rank:>2} {r.agent:<22} {r.decider[:30]:<30} {r.status}")
            continue
        sharpe_text = f"{r.sharpe:.2f}" if r.sharpe is not None else "-"
        lines.append(
            f"{rank:>2} {r.agent[:22]:<22} {r.decider[:30]:<30} {r.equity:>11,.2f} "
            f"{_pct(r.return_pct):>8} {sharpe_text:>7} {_pct(r.max_drawdown, False):>7} "
            f"{r.fees:>8,.2f} {r.trades:>6} {r.open_positions:>4} {r.llm_cost_usd:>8.4f}"
        )
    tail = []
    if board.benchmark_return is not None:
        tail.append(f"buy-and-hold (equal weight) {_pct(board.benchmark_return)}")
    if board.sharpe_step:
        tail.append(f"Sharpe on {board.sharpe_step} steps of the equity marks, annualised")
    if tail:
        lines.append("  " + "; ".join(tail))
    return "\n".join(lines)
