"""``ocw data download``: Binance klines to the project's CSV files, paginated and resumable.

Files are named like the shared data (``binance_BTCUSDT_1h.csv``, header
``timestamp,open,high,low,close,volume``, open time in UTC) and written row for row as
``trading.market_data.write_ohlcv_csv`` writes them. A rerun continues after the file's last row
(a torn last line from an interrupted run is cut off first). Only closed bars are written; the
finished file is read back with ``load_ohlcv_csv``, which checks every row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trading.market_data import (
    format_timestamp,
    load_ohlcv_csv,
    parse_timestamp_ms,
    write_ohlcv_csv,
)
from trading.models import Bar

log = logging.getLogger(__name__)


@dataclass
class DownloadResult:
    symbol: str
    path: str
    rows_before: int
    rows_written: int
    rows_total: int
    first: str | None
    last: str | None
    gaps: int  # missing bars inside the file (Binance has a few genuine ones)


def csv_path(out_dir: Path, symbol: str, interval: str) -> Path:
    return out_dir / f"binance_{symbol.replace('/', '').upper()}_{interval}.csv"


def _csv_line(bar: Bar) -> str:
    """One row exactly as ``write_ohlcv_csv`` writes it (a test holds the two together)."""
    return (
        f"{format_timestamp(bar.open_time)},{bar.open!r},{bar.high!r},{bar.low!r},"
        f"{bar.close!r},{bar.volume!r}\n"
    )


def _cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline: what an interrupted append leaves behind."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping an unfinished last line from an interrupted run", path)
        with path.open("r+b") as handle:
            handle.truncate(cut)


def _gaps(bars: list[Bar], step: int) -> int:
    return sum(
        (b.open_time - a.open_time) // step - 1 for a, b in zip(bars, bars[1:], strict=False)
    )


async def download(
    rest,  # signals.binance_rest.BinanceRest (imported lazily: ccxt is heavy)
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    out_dir: Path,
    now_ms: int | None = None,
) -> DownloadResult:
    """Fetch ``[start_ms, end_ms)`` of one symbol into its CSV, continuing an earlier run."""
    from trading.config import interval_seconds

    step = interval_seconds(interval) * 1000
    path = csv_path(out_dir, symbol, interval)
    existing: list[Bar] = []
    created = False
    if path.exists() and path.stat().st_size > 0:
        _cut_torn_line(path)
        existing = load_ohlcv_csv(path, symbol, interval)
    else:
        write_ohlcv_csv([], path)  # the header
        created = True
    cursor = max(start_ms, existing[-1].open_time + step) if existing else start_ms
    written = 0
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        await _fetch_into(rest, path, symbol, interval, cursor, end_ms, step, now)
    except BaseException:
        if created and not load_ohlcv_csv(path, symbol, interval):
            path.unlink(missing_ok=True)  # a failed first run leaves no header-only file
        raise
    final = load_ohlcv_csv(path, symbol, interval)  # validates every row written
    written = len(final) - len(existing)
    if created and not final:
        path.unlink(missing_ok=True)
    return DownloadResult(
        symbol=symbol,
        path=str(path),
        rows_before=len(existing),
        rows_written=written,
        rows_total=len(final),
        first=format_timestamp(final[0].open_time) if final else None,
        last=format_timestamp(final[-1].open_time) if final else None,
        gaps=_gaps(final, step),
    )


async def _fetch_into(
    rest, path: Path, symbol: str, interval: str, cursor: int, end_ms: int, step: int, now: int
) -> None:
    written = 0
    with path.open("a", newline="") as handle:
        while cursor < end_ms:
            page = await rest.fetch_ohlcv_page(
                symbol, interval, cursor, end_ms - 1, limit=1000, now_ms=now
            )
            bars = [b for b in page if b.closed and cursor <= b.open_time < end_ms]
            if not bars:
                break
            handle.write("".join(_csv_line(b) for b in bars))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(bars)
            cursor = bars[-1].open_time + step
            if len(bars) < len(page) or len(page) < 1000:
                break  # the page ended at the running bar, at end_ms or at the data's end
            log.info(
                "%s %s: %d rows, up to %s", symbol, interval, written, format_timestamp(cursor)
            )


async def run_download(args: argparse.Namespace) -> list[DownloadResult]:
    from signals.binance_rest import BinanceRest
    from signals.rest_budget import RestBudget

    start = parse_timestamp_ms(args.start)
    end = parse_timestamp_ms(args.end) if args.end else int(time.time() * 1000)
    if end <= start:
        raise ValueError(f"--end ({args.end}) must be after --start ({args.start})")
    url = args.rest_url
    rest = BinanceRest(
        args.market,
        RestBudget(),
        **({"spot_url": url, "futures_url": url} if url else {}),
    )
    results = []
    try:
        for symbol in args.symbols:
            result = await download(rest, symbol, args.timeframe, start, end, Path(args.out))
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
    finally:
        await rest.close()
    return results


def _symbols(text: str) -> list[str]:
    out = [s.strip().upper() for s in text.split(",") if s.strip()]
    for s in out:
        if "/" not in s:
            raise argparse.ArgumentTypeError(f"symbol {s!r} must look like BTC/USDT")
    return out


def add_data_command(sub: argparse._SubParsersAction) -> None:
    """Register ``ocw data download`` on the main parser."""
    from trading.config import INTERVAL_SECONDS

    data = sub.add_parser("data", help="market data files (download klines from Binance)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser(
        "download", help="download klines into CSV files (resumable: reruns continue)"
    )
    p.add_argument("--symbols", type=_symbols, required=True, help="BTC/USDT,ETH/USDT")
    p.add_argument("--timeframe", default="1h", choices=list(INTERVAL_SECONDS))
    p.add_argument("--start", required=True, help="first open time, ISO-8601 UTC or epoch ms")
    p.add_argument("--end", default=None, help="end (exclusive), ISO-8601 UTC; default now")
    p.add_argument("--out", required=True, help="folder for binance_<SYMBOL>_<tf>.csv files")
    p.add_argument("--market", choices=["spot", "futures"], default="spot")
    p.add_argument("--rest-url", default=None, help="REST base URL (default Binance's own)")
    p.set_defaults(func=cmd_data_download)


def cmd_data_download(args: argparse.Namespace) -> int:
    from signals.binance_rest import RestError
    from signals.rest_budget import RestUnavailable
    from workers.temporal_env import SetupError

    try:
        asyncio.run(run_download(args))
    except (ValueError, RestError, RestUnavailable) as err:
        raise SetupError(f"data download failed: {err}") from None
    return 0
