"""``ocw trades`` on a terminal: an aligned table with decimals and UTC times."""

from __future__ import annotations

from trading.models import ClosedTrade
from workers.journal_table import render


def test_trades_read_as_a_table():
    t = ClosedTrade(
        trade_id="a-e-BTC-1",
        symbol="BTC/USDT",
        qty=0.025200000000000001,
        entry_price=78_780.4567,
        exit_price=55_300.0,
        entry_time_ms=1_767_225_600_000,
        exit_time_ms=1_767_229_200_000,
        fees=3.1,
        pnl=-591.2,
        pnl_pct=-0.298,
        exit_reason="exchange_stop",
    )
    lines = render("trades", [t]).splitlines()
    assert lines[0].split() == [
        "symbol",
        "opened",
        "closed",
        "qty",
        "entry",
        "exit",
        "pnl",
        "pnl",
        "%",
        "fees",
        "reason",
    ]
    row = lines[2]
    assert "0.0252" in row and "78,780.46" in row and "55,300.00" in row and "e+" not in row
    assert "2026-01-01 00:00 UTC" in row and "-591.20" in row and "exchange_stop" in row
    assert render("trades", []) == "no trades in the journal"
