"""The validating loader names every bad row of a CSV by line and timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trading.market_data import (
    DataValidationError,
    load_funding_csv,
    load_validated_csv,
    validate_ohlcv_csv,
)

HEADER = "timestamp,open,high,low,close,volume\n"


def _write(tmp_path: Path, rows: list[str], name: str = "x_4h.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def _row(hour: int, o=100.0, h=101.0, low=99.0, c=100.5, v=10.0, day: int = 1) -> str:
    return f"2025-01-{day:02d}T{hour:02d}:00:00Z,{o},{h},{low},{c},{v}"


def test_clean_file_has_no_issues(tmp_path) -> None:
    path = _write(tmp_path, [_row(0), _row(4), _row(8)])
    assert validate_ohlcv_csv(path, "4h") == []
    bars, issues = load_validated_csv(path, "BTC/USDT", "4h")
    assert len(bars) == 3 and issues == []


def test_every_kind_of_bad_row_is_named(tmp_path) -> None:
    rows = [
        _row(0),
        _row(4),
        _row(4),  # line 4: duplicate
        _row(16),  # line 5: gap, 08:00 and 12:00 missing
        _row(20, h=99.5),  # line 6: high below the close
        "2025-01-02T00:00:00Z,100,101,100.8,100.5,10",  # line 7: low above the close
        "2025-01-02T04:00:00Z,100,101,99,100.5,-1",  # line 8: negative volume
        "2025-01-02T08:00:00Z,nan,101,99,100.5,1",  # line 9: NaN
        "2025-01-02T12:00:00Z,0,101,0,100.5,1",  # line 10: non-positive price
        "2025-01-02T08:00:00Z,100,101,99,100.5,1",  # line 11: goes backwards
        "2025-01-02T20:00:00Z,100,101,99",  # line 12: missing columns
    ]
    issues = validate_ohlcv_csv(_write(tmp_path, rows), "4h")
    found = {(i.line, i.kind) for i in issues}
    assert found == {
        (4, "duplicate"),
        (5, "gap"),
        (6, "impossible"),
        (7, "impossible"),
        (8, "impossible"),
        (9, "nan"),
        (10, "impossible"),
        (11, "order"),
        (12, "format"),
    }
    gap = next(i for i in issues if i.kind == "gap")
    assert gap.timestamp == "2025-01-01T16:00:00Z" and "2 candle(s) missing" in gap.detail
    assert any("negative volume" in i.detail for i in issues if i.line == 8)
    assert any("non-positive price" in i.detail for i in issues if i.line == 10)


def test_loader_raises_on_bad_rows_and_keeps_gaps(tmp_path) -> None:
    gappy = _write(tmp_path, [_row(0), _row(12)], "gap_4h.csv")
    bars, issues = load_validated_csv(gappy, "BTC/USDT", "4h")
    assert len(bars) == 2 and [i.kind for i in issues] == ["gap"]
    with pytest.raises(DataValidationError) as err:
        load_validated_csv(gappy, "BTC/USDT", "4h", allow_gaps=False)
    assert "line 3" in str(err.value)
    bad = _write(tmp_path, [_row(0), _row(4, low=100.9)], "bad_4h.csv")
    with pytest.raises(DataValidationError) as err:
        load_validated_csv(bad, "BTC/USDT", "4h")
    assert err.value.issues[0].line == 3 and "2025-01-01T04:00:00Z" in str(err.value)


def test_only_rows_in_the_window_count(tmp_path) -> None:
    path = _write(tmp_path, [_row(0), _row(12), _row(16), _row(20)])
    start = 1735689600000 + 16 * 3_600_000  # 2025-01-01T16:00Z
    bars, issues = load_validated_csv(path, "BTC/USDT", "4h", start_ms=start)
    assert len(bars) == 2 and issues == []


def test_funding_file(tmp_path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(
        "timestamp,funding_rate\n2025-01-01T00:00:00Z,0.0001\n2025-01-01T08:00:00Z,-2e-05\n"
    )
    times, rates = load_funding_csv(path)
    assert times.tolist() == [1735689600000, 1735689600000 + 8 * 3_600_000]
    assert np.allclose(rates, [0.0001, -2e-05])
    path.write_text("timestamp,funding_rate\n2025-01-01T00:00:00Z,nan\n")
    with pytest.raises(ValueError, match="f.csv:2"):
        load_funding_csv(path)


def test_real_files_are_clean_but_for_the_known_outage(data_dir) -> None:
    issues = validate_ohlcv_csv(data_dir / "binance_BTCUSDT_1h.csv", "1h")
    assert [(i.kind, i.timestamp) for i in issues] == [("gap", "2023-03-24T14:00:00Z")]
    assert validate_ohlcv_csv(data_dir / "binance_SOLUSDT_4h.csv", "4h") == []
