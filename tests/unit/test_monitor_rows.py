"""The monitor's journal cursor: every row once, none skipped, in one millisecond too."""

from __future__ import annotations

from activities.monitor import rows_after


def _row(at: str, oid: str) -> dict:
    return {"recorded_at": at, "client_order_id": oid}


def test_rows_after_reads_each_row_once_even_within_one_millisecond() -> None:
    rows = [_row("2026-01-01T00:00:00.001Z", "a"), _row("2026-01-01T00:00:00.001Z", "b")]
    new, cur = rows_after(rows, "fills", None, 10)
    assert [r["client_order_id"] for r in new] == ["a", "b"]
    rows.append(_row("2026-01-01T00:00:00.001Z", "c"))  # same ms, recorded later
    new, cur = rows_after(rows, "fills", cur, 10)
    assert [r["client_order_id"] for r in new] == ["c"]
    new, cur2 = rows_after(rows, "fills", cur, 10)
    assert new == [] and cur2 == cur
    rows.append(_row("2026-01-01T00:00:01.000Z", "d"))
    new, cur = rows_after(rows, "fills", cur, 10)
    assert [r["client_order_id"] for r in new] == ["d"]
    assert cur == "2026-01-01T00:00:01.000Z d"


def test_rows_after_limit_leaves_the_rest_for_the_next_check() -> None:
    rows = [_row(f"2026-01-01T00:00:0{i}.000Z", str(i)) for i in range(5)]
    first, cur = rows_after(rows, "fills", "", 2)
    rest, cur = rows_after(rows, "fills", cur, 10)
    assert [r["client_order_id"] for r in first + rest] == ["0", "1", "2", "3", "4"]
