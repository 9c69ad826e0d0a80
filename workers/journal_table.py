"""The journal as a terminal table (``ocw trades``): aligned columns, decimals, UTC times."""

from __future__ import annotations

from typing import Any

from workflows.ui_text import price, qty, when


def _fills(rows: list[Any]) -> tuple[list[str], list[list[str]]]:
    head = ["time (market)", "symbol", "side", "status", "qty", "price", "fee", "order"]
    body = [
        [
            when(f.market_time_ms),
            f.symbol,
            f.side.value,
            f.status.value,
            qty(f.qty),
            price(f.price),
            f"{f.fee:,.2f}",
            f.client_order_id,
        ]
        for f in rows
    ]
    return head, body


def _trades(rows: list[Any]) -> tuple[list[str], list[list[str]]]:
    head = ["symbol", "opened", "closed", "qty", "entry", "exit", "pnl", "pnl %", "fees", "reason"]
    body = [
        [
            t.symbol,
            when(t.entry_time_ms),
            when(t.exit_time_ms),
            qty(t.qty),
            price(t.entry_price),
            price(t.exit_price),
            f"{t.pnl:+,.2f}",
            f"{t.pnl_pct:+.2%}",
            f"{t.fees:,.2f}",
            t.exit_reason,
        ]
        for t in rows
    ]
    return head, body


def _decisions(rows: list[Any]) -> tuple[list[str], list[list[str]]]:
    head = ["time (market)", "decision", "by", "wake", "executed"]
    body = [
        [
            when(d.market_time_ms),
            d.decision_id,
            d.source,
            ", ".join(d.wake_reasons)[:40],
            "; ".join(d.executed)[:80] or "hold",
        ]
        for d in rows
    ]
    return head, body


def _dicts(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = [k for k in (rows[0] if rows else {}) if k not in ("account", "recorded_at")]
    body = [[str(r.get(k, ""))[:60] for k in head] for r in rows]
    return head, body


TABLES = {"fills": _fills, "trades": _trades, "decisions": _decisions}


def render(kind: str, rows: list[Any]) -> str:
    if not rows:
        return f"no {kind} in the journal"
    head, body = TABLES.get(kind, _dicts)(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    numeric = {
        i
        for i, h in enumerate(head)
        if h in ("qty", "entry", "exit", "price", "fee", "pnl", "pnl %", "fees")
    }

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in body)])
