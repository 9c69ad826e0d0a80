"""Journal: idempotent writes, time-ordered reads, CSV export and summary numbers.

Every test runs on both back ends: the SQLite file and a PostgreSQL server (``tests/pg_server.py``).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.journal import Journal, ms_to_iso
from activities.monitor import rows_after
from tests.pg_server import db_target
from trading.models import (
    Action,
    AgentDecision,
    ClosedTrade,
    DecisionRecord,
    Fill,
    LLMCallInfo,
    OrderStatus,
    PositionSide,
    Side,
    TradeDecision,
)
from trading.reconcile import ReconcileAction, ReconcileReport

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | SecretStr:
    """Where the journal lives: a SQLite file, or a fresh schema on the test PostgreSQL."""
    return db_target(request, tmp_path / "j" / "journal.db")


@pytest.fixture
def journal(target: Path | SecretStr):
    j = Journal(target)
    yield j
    j.close()


def make_fill(coid: str, t: int, side: Side = Side.BUY, price: float = 50_025.0) -> Fill:
    return Fill(
        client_order_id=coid,
        position_id=coid.rsplit("-", 1)[0],
        symbol="BTC/USDT",
        side=side,
        status=OrderStatus.FILLED,
        qty=0.1,
        price=price,
        fee=0.1 * price * 0.001,
        market_time_ms=t,
        reason="entry, with comma",
    )


def make_trade(
    tid: str, pnl: float, fees: float = 1.5, exit_ms: int = T0 + 3_600_000
) -> ClosedTrade:
    return ClosedTrade(
        trade_id=tid,
        symbol="ETH/USDT",
        qty=2.0,
        entry_price=2_000.0,
        exit_price=2_000.0 + pnl / 2,
        entry_time_ms=T0,
        exit_time_ms=exit_ms,
        fees=fees,
        pnl=pnl,
        pnl_pct=pnl / 4_000.0,
        exit_reason="trailing_stop",
        signal_weights={"momentum": 0.6, "rsi": 0.4},
    )


def make_decision(did: str, t: int | None, account: str = "paper") -> DecisionRecord:
    return DecisionRecord(
        decision_id=did,
        account=account,
        market_time_ms=t,
        wake_reasons=["schedule", "price_move"],
        source="llm",
        decision=AgentDecision(
            source="llm",
            decisions=[
                TradeDecision(
                    ticker="BTC/USDT", action=Action.BUY, position_pct=0.2, confidence=0.7
                )
            ],
            market_assessment="risk-on",
            next_check_seconds=600,
        ),
        executed=["BUY 0.1 BTC/USDT @ 50025"],
    )


def test_writes_are_idempotent(journal: Journal, target: Path | SecretStr) -> None:
    rec, fill, trade = make_decision("d1", T0), make_fill("pos-1-1", T0), make_trade("pos-1", 10.0)
    assert journal.record_decision(rec) is True
    assert journal.record_decision(rec) is False
    assert journal.record_fill("paper", fill) is True
    assert journal.record_fill("paper", fill) is False
    assert journal.record_trade("paper", trade) is True
    assert journal.record_trade("paper", trade) is False

    # A second connection (another process, e.g. a restarted worker) sees the same rows.
    with Journal(target) as other:
        assert other.record_fill("paper", fill) is False
        assert other.decisions() == [rec]
        assert other.fills() == [fill]
        assert other.trades() == [trade]


def test_reads_filter_by_account_and_sort_by_market_time(journal: Journal) -> None:
    late, early = make_fill("pos-2-1", T0 + 60_000), make_fill("pos-1-1", T0)
    journal.record_fill("paper", late)
    journal.record_fill("paper", early)
    journal.record_fill("other", make_fill("pos-9-1", T0 + 1))
    assert journal.fills("paper") == [early, late]
    assert len(journal.fills()) == 3

    journal.record_decision(make_decision("d2", T0 + 5))
    journal.record_decision(make_decision("d1", T0))
    journal.record_decision(make_decision("x", T0, account="other"))
    assert [d.decision_id for d in journal.decisions("paper")] == ["d1", "d2"]

    journal.record_trade("paper", make_trade("b", 1.0, exit_ms=T0 + 2))
    journal.record_trade("paper", make_trade("a", 1.0, exit_ms=T0 + 1))
    assert [t.trade_id for t in journal.trades("paper")] == ["a", "b"]
    assert journal.trades("nobody") == []


def test_export_fills_csv_round_trips(journal: Journal) -> None:
    fills = [make_fill("pos-1-1", T0), make_fill("pos-1-2", T0 + 1_500, Side.SELL, 51_234.5678)]
    for f in fills:
        journal.record_fill("paper", f)
    journal.record_fill("other", make_fill("pos-7-1", T0))

    buf = io.StringIO()
    assert journal.export_csv("fills", buf, account="paper") == 2
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0]) == [
        "client_order_id",
        "account",
        "position_id",
        "symbol",
        "side",
        "status",
        "qty",
        "price",
        "fee",
        "market_time_ms",
        "market_time",
        "reason",
        "recorded_at",
    ]
    for row, f in zip(rows, fills, strict=True):
        assert row["client_order_id"] == f.client_order_id
        assert row["account"] == "paper"
        assert row["position_id"] == f.position_id
        assert row["side"] == f.side.value
        assert row["status"] == f.status.value
        assert float(row["qty"]) == f.qty
        assert float(row["price"]) == f.price  # floats survive exactly
        assert float(row["fee"]) == f.fee
        assert int(row["market_time_ms"]) == f.market_time_ms
        assert row["reason"] == "entry, with comma"
        assert row["recorded_at"].endswith("Z")
    assert rows[0]["market_time"] == "2023-11-14T22:13:20.000Z"
    assert rows[1]["market_time"] == "2023-11-14T22:13:21.500Z"

    everything = io.StringIO()
    assert journal.export_csv("fills", everything) == 3


def test_export_trades_and_decisions_csv(journal: Journal) -> None:
    trade = make_trade("pos-1", -12.25)
    journal.record_trade("paper", trade)
    buf = io.StringIO()
    assert journal.export_csv("trades", buf) == 1
    (row,) = csv.DictReader(io.StringIO(buf.getvalue()))
    assert row["trade_id"] == "pos-1"
    assert float(row["pnl"]) == -12.25
    assert float(row["pnl_pct"]) == trade.pnl_pct
    assert float(row["exit_price"]) == trade.exit_price
    assert row["entry_time"] == ms_to_iso(T0) == "2023-11-14T22:13:20.000Z"
    assert row["exit_time"] == "2023-11-14T23:13:20.000Z"
    assert int(row["exit_time_ms"]) == trade.exit_time_ms
    assert json.loads(row["signal_weights"]) == trade.signal_weights

    rec = make_decision("d1", T0)
    journal.record_decision(rec)
    journal.record_decision(make_decision("d0", None))
    buf = io.StringIO()
    assert journal.export_csv("decisions", buf, account="paper") == 2
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["decision_id"] for r in rows] == ["d0", "d1"]  # no market time sorts first
    assert rows[0]["market_time_ms"] == "" and rows[0]["market_time"] == ""
    assert rows[1]["market_time"] == "2023-11-14T22:13:20.000Z"
    assert json.loads(rows[1]["wake_reasons"]) == rec.wake_reasons
    assert json.loads(rows[1]["executed"]) == rec.executed
    assert AgentDecision.model_validate_json(rows[1]["decision"]) == rec.decision


def test_export_empty_and_unknown_kind(journal: Journal) -> None:
    buf = io.StringIO()
    assert journal.export_csv("trades", buf) == 0
    assert buf.getvalue().splitlines()[0].startswith("trade_id,account,symbol")
    with pytest.raises(ValueError):
        journal.export_csv("nope", io.StringIO())  # type: ignore[arg-type]


def test_summary(journal: Journal) -> None:
    assert journal.summary("paper") == {
        "n_trades": 0,
        "wins": 0,
        "losses": 0,
        "total_pnl": 0.0,
        "total_fees": 0.0,
        "win_rate": 0.0,
        "decisions_by_source": {},
        "llm_decision_cost_usd": 0.0,
        "llm_decision_tokens": {"input": 0, "output": 0},
    }
    journal.record_trade("paper", make_trade("t1", 10.0, fees=1.0))
    journal.record_trade("paper", make_trade("t2", -4.0, fees=2.0))
    journal.record_trade("paper", make_trade("t3", 6.0, fees=0.5))
    journal.record_trade("paper", make_trade("t3", 6.0, fees=0.5))  # retried: ignored
    journal.record_trade("other", make_trade("t9", -100.0, fees=9.0))
    s = journal.summary("paper")
    assert s["n_trades"] == 3
    assert s["wins"] == 2
    assert s["losses"] == 1
    assert s["total_pnl"] == pytest.approx(12.0)
    assert s["total_fees"] == pytest.approx(3.5)
    assert s["win_rate"] == pytest.approx(2 / 3)
    assert journal.summary()["n_trades"] == 4


def test_summary_totals_llm_cost_by_source(journal: Journal) -> None:
    def record(decision_id: str, source: str, cost: float | None) -> None:
        llm = None
        if cost is not None:
            llm = LLMCallInfo(
                call_id=decision_id, model="m", input_tokens=100, output_tokens=20, cost_usd=cost
            )
        journal.record_decision(
            DecisionRecord(
                decision_id=decision_id,
                account="paper",
                source=source,
                decision=AgentDecision(source=source, llm=llm),
            )
        )

    record("d1", "llm", 0.01)
    record("d2", "llm", 0.02)
    record("d3", "rule", None)
    s = journal.summary("paper")
    assert s["decisions_by_source"] == {"llm": 2, "rule": 1}
    assert s["llm_decision_cost_usd"] == pytest.approx(0.03)
    assert s["llm_decision_tokens"] == {"input": 200, "output": 40}


class Stamp:
    """Stands in for the journal's clock: every write is recorded at ``at``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at = ""
        monkeypatch.setattr("activities.journal._now_iso", lambda: self.at)


MS0, MS1, S1 = "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.001Z", "2024-01-01T00:00:01.000Z"


def test_rows_since_reads_in_recorded_order_from_a_cursor(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = Stamp(monkeypatch)
    stamp.at = MS0  # two in one millisecond; ids and market times in the other order
    journal.record_fill("paper", make_fill("pos-b-1", T0 + 9))
    journal.record_fill("paper", make_fill("pos-a-1", T0 + 1))
    stamp.at = MS1
    journal.record_fill("paper", make_fill("pos-c-1", T0))
    journal.record_fill("other", make_fill("pos-x-1", T0))
    stamp.at = S1
    journal.record_fill("paper", make_fill("pos-d-1", T0 - 5))

    def ids(after: str | None, limit: int = 10, account: str = "paper") -> list[str]:
        return [r["client_order_id"] for r in journal.rows_since("fills", account, after, limit)]

    everything = ["pos-b-1", "pos-a-1", "pos-c-1", "pos-d-1"]
    assert ids(None) == ids("") == ids(MS0) == everything  # >=: the cursor's ms is included
    assert ids(MS1) == ["pos-c-1", "pos-d-1"]
    assert ids("2024-01-01T00:00:00.002Z") == ids(S1) == ["pos-d-1"]
    assert ids("2024-01-01T00:00:01.001Z") == []
    assert ids(None, limit=2) == ["pos-b-1", "pos-a-1"] and ids(None, limit=0) == []
    assert ids(None, account="other") == ["pos-x-1"] and ids(None, account="nobody") == []
    by_id = {r["client_order_id"]: r for r in journal.rows("fills", "paper")}
    assert journal.rows_since("fills", "paper", None, 10) == [by_id[i] for i in everything]
    assert journal.latest_recorded_at("fills", "paper") == S1
    assert journal.latest_recorded_at("fills", "other") == MS1
    assert journal.latest_recorded_at("fills", "nobody") is None
    assert journal.latest_recorded_at("trades", "paper") is None
    with pytest.raises(ValueError):
        journal.rows_since("nope", "paper", None, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        journal.latest_recorded_at("nope", "paper")  # type: ignore[arg-type]


def test_rows_since_trades_and_reconciliations(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = Stamp(monkeypatch)
    stamp.at = MS1
    journal.record_trade("paper", make_trade("t-late-exit", 1.0, exit_ms=T0 + 9))
    stamp.at = S1
    journal.record_trade("paper", make_trade("t-early-exit", 2.0, exit_ms=T0))
    journal.record_reconcile(
        ReconcileReport(
            time_ms=T0,
            account="paper",
            ok=False,
            actions=[
                ReconcileAction(kind="close", symbol="ETH/USDT", target="z", detail="gone"),
                ReconcileAction(kind="cancel", symbol="BTC/USDT", target="a", detail="stale"),
            ],
        )
    )
    trades = journal.rows_since("trades", "paper", MS0, 10)
    assert [r["trade_id"] for r in trades] == ["t-late-exit", "t-early-exit"]  # not exit order
    assert [r["trade_id"] for r in journal.rows_since("trades", "paper", S1, 10)] == [
        "t-early-exit"
    ]
    recs = journal.rows_since("reconciliations", "paper", None, 10)
    assert [r["target"] for r in recs] == ["z", "a"]  # as recorded
    assert recs[0]["detail"] == "gone" and recs[0]["recorded_at"] == S1
    assert journal.latest_recorded_at("trades", "paper") == S1
    assert journal.latest_recorded_at("reconciliations", "paper") == S1
    assert journal.latest_recorded_at("reconciliations", "other") is None


def test_rows_since_under_the_monitors_cursor_reads_each_row_once(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor's paging: ``rows_since`` from the cursor's millisecond, ``rows_after``
    dropping the ids seen in it; asking for ``limit`` more than the ids it will drop."""
    stamp = Stamp(monkeypatch)
    for i in range(7):
        stamp.at = MS0 if i < 5 else S1  # five in one millisecond, more than a page
        journal.record_fill("paper", make_fill(f"pos-{i}-1", T0))
    cursor, got, limit = None, [], 2
    for _ in range(10):
        at, _, seen = (cursor or "").partition(" ")
        rows = journal.rows_since("fills", "paper", at, limit + len(seen.split()))
        new, cursor = rows_after(rows, "fills", cursor, limit)
        if not new:
            break
        got += [r["client_order_id"] for r in new]
    assert got == [f"pos-{i}-1" for i in range(7)]
    assert cursor.startswith(S1)


def test_a_short_trade_keeps_its_side(journal: Journal) -> None:
    short = make_trade("s-1", 12.0).model_copy(update={"side": PositionSide.SHORT})
    assert journal.record_trade("paper", short)
    assert journal.record_trade("paper", make_trade("l-1", 5.0))
    sides = {t.trade_id: t.side for t in journal.trades("paper")}
    assert sides == {"s-1": "short", "l-1": "long"}


def test_a_journal_from_before_shorts_gains_the_side_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        """CREATE TABLE trades (trade_id TEXT PRIMARY KEY, account TEXT NOT NULL,
        symbol TEXT NOT NULL, qty REAL NOT NULL, entry_price REAL NOT NULL,
        exit_price REAL NOT NULL, entry_time_ms INTEGER NOT NULL, exit_time_ms INTEGER NOT NULL,
        fees REAL NOT NULL, pnl REAL NOT NULL, pnl_pct REAL NOT NULL, exit_reason TEXT NOT NULL,
        signal_weights TEXT NOT NULL, recorded_at TEXT NOT NULL)"""
    )
    conn.execute(
        "INSERT INTO trades VALUES ('old-1', 'paper', 'BTC/USDT', 1, 100, 110, 0, 1, 0.2, 9.8, "
        "0.098, 'trailing_stop', '{}', '2025-01-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()
    for _ in range(2):  # opening it again finds the column there
        with Journal(path) as j:
            (old,) = j.trades("paper")
            assert old.side == "long" and old.pnl == pytest.approx(9.8)
    with Journal(path) as j:
        j.record_trade(
            "paper", make_trade("s-2", 3.0).model_copy(update={"side": PositionSide.SHORT})
        )
        assert {t.trade_id: t.side for t in j.trades("paper")}["s-2"] == "short"
