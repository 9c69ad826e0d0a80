"""``ocw data download`` against the local REST server: format, pagination, resume, the CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signals.binance_rest import BinanceRest
from signals.rest_budget import RestBudget
from tests.servers.binance_rest import BinanceRestServer
from trading.market_data import (
    find_symbol_csv,
    generate_market,
    load_ohlcv_csv,
    parse_timestamp_ms,
    write_ohlcv_csv,
)
from trading.models import Bar
from workers.cli import build_parser
from workers.data_cli import csv_path, download
from workers.temporal_env import SetupError

pytestmark = pytest.mark.integration

H = 3_600_000


@pytest.fixture
async def generated() -> AsyncIterator[tuple[BinanceRestServer, dict[str, list[Bar]]]]:
    bars = generate_market(["BTC/USDT", "SOL/USDT"], "1h", 2500, seed=3)
    now = bars["BTC/USDT"][-1].open_time + 60_000  # the last bar is still running
    async with BinanceRestServer(bars, now_ms=lambda: now) as server:
        yield server, bars


def rest_for(server: BinanceRestServer) -> BinanceRest:
    return BinanceRest("spot", RestBudget(), spot_url=server.url, futures_url=server.url)


async def test_real_bars_download_to_the_shared_format(data_dir: Path, tmp_path: Path) -> None:
    source = find_symbol_csv(data_dir, "BTC/USDT", "1h")
    assert source is not None
    start, end = parse_timestamp_ms("2025-01-01"), parse_timestamp_ms("2025-03-01")
    bars = load_ohlcv_csv(source, "BTC/USDT", "1h", start - 10 * H, end + 10 * H)
    async with BinanceRestServer({"BTC/USDT": bars}, now_ms=lambda: end + 10 * H) as server:
        rest = rest_for(server)
        try:
            result = await download(rest, "BTC/USDT", "1h", start, end, tmp_path)
        finally:
            await rest.close()
    want = [b for b in bars if start <= b.open_time < end]
    assert result.rows_written == result.rows_total == len(want) == 1416
    assert result.first == "2025-01-01T00:00:00Z" and result.gaps == 0
    # byte for byte what write_ohlcv_csv writes, i.e. the shared data's own format
    reference = write_ohlcv_csv(want, tmp_path / "reference.csv")
    assert Path(result.path).read_bytes() == reference.read_bytes()
    assert len([r for r in server.requests if r.path == "/api/v3/klines"]) == 2


async def test_rerun_continues_after_the_last_row(generated, tmp_path: Path) -> None:
    server, bars = generated
    btc = bars["BTC/USDT"]
    start, mid = btc[0].open_time, btc[1200].open_time
    rest = rest_for(server)
    try:
        now = server.now_ms()
        first = await download(rest, "BTC/USDT", "1h", start, mid, tmp_path, now_ms=now)
        assert first.rows_written == 1200
        path = csv_path(tmp_path, "BTC/USDT", "1h")
        with path.open("a") as handle:  # an interrupted append left half a line
            handle.write("2025-02-20T00:00:00Z,1.0,2.")
        server.requests.clear()
        end = btc[-1].close_time + 1
        second = await download(rest, "BTC/USDT", "1h", start, end, tmp_path, now_ms=now)
        third = await download(rest, "BTC/USDT", "1h", start, end, tmp_path, now_ms=now)
    finally:
        await rest.close()
    assert second.rows_before == 1200
    assert second.rows_written == len(btc) - 1 - 1200  # the running bar is not written
    klines = [r for r in server.requests if r.path == "/api/v3/klines"]
    assert klines[0].query["startTime"] == str(mid)  # continued where the file ended
    stored = load_ohlcv_csv(path, "BTC/USDT", "1h")
    assert [b.open_time for b in stored] == [b.open_time for b in btc[:-1]]
    assert [b.close for b in stored] == [b.close for b in btc[:-1]]
    assert third.rows_written == 0 and third.rows_total == len(btc) - 1


async def test_cli_downloads_every_symbol(generated, tmp_path: Path) -> None:
    server, bars = generated
    start = bars["SOL/USDT"][100].open_time
    end = bars["SOL/USDT"][400].open_time
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("ocw")),
        "data",
        "download",
        "--symbols",
        "BTC/USDT,SOL/USDT",
        "--timeframe",
        "4h",
        "--start",
        str(start),
        "--end",
        str(end),
        "--out",
        str(tmp_path),
        "--rest-url",
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["symbol"] for r in lines] == ["BTC/USDT", "SOL/USDT"]
    assert all(r["rows_total"] == 75 and r["gaps"] == 0 for r in lines)
    assert (tmp_path / "binance_SOLUSDT_4h.csv").is_file()

    # the error path in process (a thread: the command runs its own event loop)
    args = build_parser().parse_args(
        ["data", "download", "--symbols", "DOGE/USDT", "--start", str(start), "--end", str(end)]
        + ["--out", str(tmp_path), "--rest-url", server.url]
    )
    with pytest.raises(SetupError, match="not a spot market"):
        await asyncio.to_thread(args.func, args)


async def test_a_failed_first_download_leaves_no_header_only_file(
    generated, tmp_path: Path
) -> None:
    server, bars = generated
    server.fail(418, retry_after=120, count=5)  # banned from the first page on
    start, end = bars["BTC/USDT"][0].open_time, bars["BTC/USDT"][100].open_time
    rest = rest_for(server)
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever the ban raises, the file is gone
            await download(rest, "BTC/USDT", "1h", start, end, tmp_path)
    finally:
        await rest.close()
    assert not csv_path(tmp_path, "BTC/USDT", "1h").exists()
