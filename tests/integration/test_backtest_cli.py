"""``ocw backtest`` / ``ocw optimize`` as a user runs them: files in, report folder out."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trading.market_data import generate_market, write_ohlcv_csv

REPO = Path(__file__).resolve().parent.parent.parent


def ocw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    market = generate_market(["BTC/USDT", "ETH/USDT"], "4h", 900, seed=4)
    for symbol, bars in market.items():
        write_ohlcv_csv(bars, folder / f"binance_{symbol.replace('/', '')}_4h.csv")
    return folder


def test_backtest_writes_a_reproducible_report(generated_dir, tmp_path) -> None:
    args = ["backtest", "--data", str(generated_dir), "--symbols", "BTC/USDT,ETH/USDT",
            "--start", "2025-02-15", "--end", "2025-05-01", "--cash", "5000"]  # fmt: skip
    first = ocw(*args, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    assert "Sharpe (daily, sqrt 365)" in first.stdout and "alpha vs BTC" in first.stdout
    out = tmp_path / "a"
    for name in ("metrics.json", "trades.csv", "equity.csv", "equity.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["params"]["initial_cash"] == 5000
    assert len(config["data_fingerprint_sha256"]) == 64
    with (out / "trades.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == metrics["trades"] > 0
    assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    # what a trader reads next: per symbol, exits by reason, prices with the trades on them
    assert "per symbol:" in first.stdout and "exits by reason:" in first.stdout
    for sym in metrics["by_symbol"]:
        png = out / f"price_{sym['symbol'].replace('/', '')}.png"
        assert png.read_bytes()[:4] == b"\x89PNG", png
    assert sum(r["trades"] for r in metrics["by_symbol"]) == metrics["trades"]
    assert sum(metrics["exits_by_reason"].values()) == metrics["trades"]
    assert (out / "by_symbol.csv").read_text().startswith("symbol,trades,win_rate,pnl")
    halted = [line for line in first.stdout.splitlines() if "drawdown halt froze" in line]
    assert len(halted) == len(metrics["halts"])
    second = ocw(*args, "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "b" / "metrics.json").read_text() == (out / "metrics.json").read_text()
    assert (tmp_path / "b" / "trades.csv").read_text() == (out / "trades.csv").read_text()


def test_backtest_config_file_and_bad_data(generated_dir, tmp_path) -> None:
    config = tmp_path / "params.json"
    config.write_text(json.dumps({"stop_loss_pct": 0.02, "decision_every_bars": 6}))
    run = ocw("backtest", "--data", str(generated_dir), "--symbols", "BTC/USDT",
              "--start", "2025-02-15", "--end", "2025-04-01", "--config", str(config),
              "--out", str(tmp_path / "r"), "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["params"]
    assert saved["stop_loss_pct"] == 0.02 and saved["decision_every_bars"] == 6
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (generated_dir / "binance_BTCUSDT_4h.csv").read_text().splitlines()
    parts = lines[400].split(",")
    parts[2] = str(float(parts[1]) * 0.5)  # high far below the open
    lines[400] = ",".join(parts)
    (bad / "binance_BTCUSDT_4h.csv").write_text("\n".join(lines) + "\n")
    run = ocw("backtest", "--data", str(bad), "--symbols", "BTC/USDT",
              "--start", "2025-02-15", "--end", "2025-04-01")  # fmt: skip
    assert run.returncode != 0
    assert "line 401" in run.stderr and "high" in run.stderr


def test_optimize_reports_out_of_sample_only(generated_dir, tmp_path) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"stop_loss_pct": [0.03, 0.06], "decision_every_bars": [1, 6]}))
    run = ocw("optimize", "--data", str(generated_dir), "--symbols", "BTC/USDT,ETH/USDT",
              "--start", "2025-03-15", "--end", "2025-05-15", "--train-days", "40",
              "--test-days", "20", "--grid", str(grid), "--workers", "2",
              "--out", str(tmp_path / "wf"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "out-of-sample" in run.stdout and "4 parameter sets x 4 folds" in run.stdout
    report = json.loads((tmp_path / "wf" / "walkforward.json").read_text())
    assert len(report["folds"]) == 4
    assert all(
        set(f["chosen"]) == {"stop_loss_pct", "decision_every_bars"} for f in report["folds"]
    )
    assert report["folds"][0]["test"]["start_ms"] == report["out_of_sample"]["start_ms"]


def test_backtest_on_real_data(data_dir, tmp_path) -> None:
    run = ocw("backtest", "--data", str(data_dir), "--start", "2025-09-01",
              "--end", "2025-11-01", "--perpetual", "--out", str(tmp_path / "real"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "real" / "metrics.json").read_text())
    config = json.loads((tmp_path / "real" / "config.json").read_text())
    assert metrics["btc_buy_hold"] is not None and metrics["basket_buy_hold"] is not None
    assert config["files"]["BTC/USDT 1h"] == "binance_BTCUSDT_1h.csv"
    assert config["files"]["SOL/USDT funding"] == "binance_SOLUSDT_perp_funding_8h.csv"
    assert metrics["funding_paid"] != 0.0


def test_backtest_long_short_on_real_data_and_spot_refused(data_dir, tmp_path) -> None:
    """Issue 15: ``--allow-shorts`` with ``--perpetual`` trades both ways (the rule policy's
    mirrored trend rules); without ``--perpetual`` the run is refused with the reason."""
    run = ocw("backtest", "--data", str(data_dir), "--symbols", "BTC/USDT,ETH/USDT",
              "--start", "2025-10-01", "--end", "2026-01-31", "--perpetual", "--allow-shorts",
              "--quiet", "--out", str(tmp_path / "ls"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    with (tmp_path / "ls" / "trades.csv").open() as fh:
        sides = {row["side"] for row in csv.DictReader(fh)}
    assert sides == {"long", "short"}
    assert "decision_cover" in run.stdout
    spot = ocw("backtest", "--data", str(data_dir), "--start", "2025-10-01",
               "--end", "2025-11-01", "--allow-shorts", "--quiet")  # fmt: skip
    assert spot.returncode != 0 and "perpetual" in (spot.stderr + spot.stdout)
