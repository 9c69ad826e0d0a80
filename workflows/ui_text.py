"""What the Temporal web UI shows of the engine, in a trader's words (issue 12).

Workflow summaries and details (static at start, current on every tick), activity and timer
summaries. Prices and quantities read as decimals with a sensible precision, never ``5.53e+04``
or 17 digits; times as UTC. Pure and deterministic: the workflows call it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

SUMMARY_MAX = 200  # Temporal shows a summary on one line; keep it short


def price(x: float | None) -> str:
    """A price with the precision its size needs: 78,780.46, 3,094.5, 1.2345, 0.000123."""
    if x is None or not math.isfinite(x):
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.2f}"
    if ax >= 1:
        return f"{x:,.4g}" if ax < 10 else f"{x:,.2f}"
    if ax == 0:
        return "0"
    return f"{x:.4g}"


def qty(x: float) -> str:
    """A quantity in plain decimals, at most 8 places, no trailing zeros: 0.0252, 13.345."""
    if not math.isfinite(x):
        return "–"
    text = f"{x:.8f}".rstrip("0").rstrip(".")
    return text or "0"


def money(x: float) -> str:
    return f"{x:+,.2f}" if math.isfinite(x) else "–"


def when(ms: int | None) -> str:
    if not ms:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cut(text: str, n: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def who(decided_by: str) -> str:
    """``llm`` / ``rule: <why>`` as a reader says it."""
    if decided_by == "llm":
        return "Claude"
    if decided_by.startswith("rule"):
        return "the rule policy"
    return decided_by or "the engine"


def decided_by_value(decided_by: str) -> str:
    """The ``OcwDecidedBy`` search attribute: claude | rule | none."""
    if decided_by == "llm":
        return "claude"
    if decided_by.startswith("rule"):
        return "rule"
    return "none"


def position_summary(
    symbol: str,
    q: float,
    entry: float,
    stop: float | None,
    opened_by: str,
    why: str,
    side: str = "long",
) -> str:
    head = f"{symbol} {side} {qty(q)} @ {price(entry)}"
    if stop is not None:
        head += f" · stop {price(stop)}"
    head += f" · opened by {opened_by}"
    if why:
        head += f': "{_cut(why, 90)}"'
    return _cut(head)


def position_details(
    position_id: str, decision_workflow_id: str, account: str, entry_ms: int, reason: str
) -> str:
    return (
        f"**Position** {position_id} of account {account}  \n"
        f"**Opened** {when(entry_ms)}  \n"
        f"**Owner** DecisionWorkflow `{decision_workflow_id}`  \n"
        f"**Why** {reason or '–'}"
    )


def position_now(
    symbol: str,
    q: float,
    entry: float,
    last: float,
    pnl: float,
    pnl_pct: float,
    stop: float | None,
    trail: float | None,
    exchange_stop: float | None,
    verdict: str | None,
    status: str,
    plan: str | None = None,
    side: str = "long",
) -> str:
    short = " short" if side == "short" else ""
    lines = [
        f"**{symbol}**{short} {status.lower()} · {qty(q)} @ {price(entry)} · last {price(last)}",
        f"**PnL** {money(pnl)} ({pnl_pct:+.2%}) net of fees",
        f"**Stop** {price(stop)} · **trail** {price(trail) if trail else 'not active'}",
    ]
    if exchange_stop is not None:
        lines.append(f"**Exchange stop** {price(exchange_stop)}")
    if plan is not None:
        lines.append(f"**Plan** {plan}")
    lines.append(f"**Last verdict** {verdict or '–'}")
    return "  \n".join(lines)


def account_now(
    equity: float,
    cash: float,
    exposure: float,
    drawdown: float,
    positions: list[tuple[str, str, float]],
    decided_by: str,
    next_check_s: int | None,
    halted: str | None,
) -> str:
    lines = [
        f"**Equity** {equity:,.2f} · cash {cash:,.2f} · exposure {exposure:.0%} · "
        f"drawdown {drawdown:.2%}",
        f"**Decides** {who(decided_by)}"
        + (f" · next timed wake in {next_check_s} s" if next_check_s else ""),
    ]
    if halted:
        lines.append(f"**Entries halted** {halted}")
    if positions:
        lines.append("**Open positions**")
        lines += [f"- {sym} {qty(q)} → `ocw-position-{pid}`" for pid, sym, q in positions]
    else:
        lines.append("**Open positions** none")
    return "  \n".join(lines)
