"""A replay's funding prints (issue 15, carry): the listener loads the funding files beside its
bar files and puts on the bars board only the prints its replay clock has reached."""

from __future__ import annotations

import asyncio
from pathlib import Path

from activities.bars_board import BarsBoard
from tests.unit.test_gate import bar
from trading.config import Settings
from trading.market_data import generate_market, write_ohlcv_csv
from workers.listener_worker import ListenerService, ReplayOptions, replay_funding

EIGHT_H = 8 * 3_600_000


def market(folder: Path) -> tuple[list[Path], int]:
    files = [
        write_ohlcv_csv(bars, folder / f"binance_{s.replace('/', '')}_1h.csv")
        for s, bars in generate_market(["BTC/USDT", "ETH/USDT"], "1h", 50 * 24, seed=3).items()
    ]
    first = generate_market(["BTC/USDT"], "1h", 1, seed=3)["BTC/USDT"][0].open_time
    return files, first


def test_replay_funding_reads_the_files_beside_the_bars(tmp_path: Path) -> None:
    files, first = market(tmp_path)
    lines = ["timestamp,funding_rate"] + [
        f"{first + i * EIGHT_H},{(i % 5 - 2) * 1e-5}" for i in range(150)
    ]
    (tmp_path / "binance_BTCUSDT_perp_funding_8h.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "binance_ETHUSDT_perp_funding_8h.csv").write_text("timestamp,oops\n1,2\n")
    loaded = replay_funding(files, ["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    assert set(loaded) == {"BTC/USDT"}  # ETH's file does not parse (logged), SOL has none
    assert len(loaded["BTC/USDT"]) == 150 and loaded["BTC/USDT"][0] == (first, -2e-5)

    settings = Settings(_env_file=None, home=tmp_path / "home", symbols=["BTC/USDT", "ETH/USDT"])
    service = ListenerService(settings, ReplayOptions(files=files, speed=1.0, days=5))
    plan = service.prepare_replay()
    assert len(service.replay_funding["BTC/USDT"]) == 150
    writer = service.bars_writer()
    assert not asyncio.run(writer.write_funding_if_changed())  # no market clock yet: nothing
    service.gate.evaluate(bar(plan.start_ms), True, plan.start_ms + 3_600_000)
    assert asyncio.run(writer.write_funding_if_changed())
    sheet = BarsBoard.from_settings(settings).read(settings.market_task_queue)
    assert sheet is None  # no daily bars written yet: the board has no sheet to serve
    asyncio.run(writer.write_if_changed())
    sheet = BarsBoard.from_settings(settings).read(settings.market_task_queue)
    assert sheet is not None
    seen = sheet.funding["BTC/USDT"]
    assert seen and all(t <= plan.start_ms + 3_600_000 for t, _ in seen)  # never the future
    assert len(seen) == sum(1 for t, _ in loaded["BTC/USDT"] if t <= plan.start_ms + 3_600_000)
    assert "ETH/USDT" not in sheet.funding
