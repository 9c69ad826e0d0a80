"""Offline market data: the shared CSV files, a seeded synthetic market, and resampling.

Pure functions, no network. Backtests, replay and tests all read bars through here so that
the CSV format (``timestamp,open,high,low,close,volume``, timestamp = candle open time in
UTC) is parsed in exactly one place.
"""

from __future__ import annotations

import csv
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from trading.config import interval_seconds
from trading.models import Bar

CSV_HEADER = ("timestamp", "open", "high", "low", "close", "volume")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH  # one millisecond


def interval_ms(interval: str) -> int:
    return interval_seconds(interval) * 1000


# ---------------------------------------------------------------- locating data


def shared_data_dir() -> Path | None:
    """The shared real-data folder, or None: tests skip instead of failing when it is absent."""
    env = os.environ.get("OCW_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def find_symbol_csv(data_dir: Path | str | None, symbol: str, interval: str) -> Path | None:
    """The OHLCV file of one symbol and interval, e.g. ``binance_BTCUSDT_1h.csv``."""
    if data_dir is None:
        return None
    folder = Path(data_dir)
    compact = symbol.replace("/", "").upper()
    for name in (f"binance_{compact}_{interval}.csv", f"{compact}_{interval}.csv"):
        if (folder / name).is_file():
            return folder / name
    # dated extracts such as binance_BTCUSDT_1m_2025-06.csv
    extracts = sorted(folder.glob(f"binance_{compact}_{interval}_*.csv"))
    return extracts[0] if extracts else None


# ---------------------------------------------------------------- CSV


def parse_timestamp_ms(text: str) -> int:
    """ISO-8601 (``Z`` or offset; naive means UTC) or plain epoch milliseconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def format_timestamp(ms: int) -> str:
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def load_funding_csv(
    path: Path | str, start_ms: int | None = None, end_ms: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Funding times (epoch ms) and rates (fraction per period) of a ``timestamp,funding_rate``
    file, time in ``[start_ms, end_ms)``. Rows must be finite and increasing."""
    path = Path(path)
    times: list[int] = []
    rates: list[float] = []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != ["timestamp", "funding_rate"]:
            raise ValueError(f"{path}:1: expected header timestamp,funding_rate, got {header}")
        for row in reader:
            if not row:
                continue
            try:
                t, rate = parse_timestamp_ms(row[0]), float(row[1])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{reader.line_num}: bad row {row}") from None
            if not math.isfinite(rate) or (times and t <= times[-1]):
                raise ValueError(f"{path}:{reader.line_num}: non-finite rate or time not after")
            if (start_ms is None or t >= start_ms) and (end_ms is None or t < end_ms):
                times.append(t)
                rates.append(rate)
    return np.asarray(times, dtype=np.int64), np.asarray(rates, dtype=float)


def find_funding_csv(data_dir: Path | str | None, symbol: str) -> Path | None:
    """The perpetual funding file of a symbol, e.g. ``binance_BTCUSDT_perp_funding_8h.csv``."""
    if data_dir is None:
        return None
    path = Path(data_dir) / f"binance_{symbol.replace('/', '').upper()}_perp_funding_8h.csv"
    return path if path.is_file() else None


def load_ohlcv_csv(
    path: Path | str,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Bar]:
    """Closed bars of one file, open time in ``[start_ms, end_ms)``, oldest first.

    Every row is checked (numbers, OHLC consistency, increasing time) so that a corrupt file
    fails loudly with its name and line instead of feeding a strategy bad prices.
    """
    path = Path(path)
    step = interval_ms(interval)
    bars: list[Bar] = []
    previous = -1
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != CSV_HEADER:
            raise ValueError(f"{path}:1: expected header {','.join(CSV_HEADER)}, got {header}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            try:
                bar = _row_to_bar(row, symbol, interval, step)
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"{path}:{line}: bad row {row}: {_short(exc)}") from None
            if bar.open_time <= previous:
                raise ValueError(f"{path}:{line}: timestamp not after the previous row")
            previous = bar.open_time
            if start_ms is not None and bar.open_time < start_ms:
                continue
            if end_ms is not None and bar.open_time >= end_ms:
                break
            bars.append(bar)
    return bars


def _row_to_bar(row: Sequence[str], symbol: str, interval: str, step: int) -> Bar:
    if len(row) != len(CSV_HEADER):
        raise ValueError(f"expected {len(CSV_HEADER)} columns, got {len(row)}")
    open_ms = parse_timestamp_ms(row[0])
    o, h, low, c, v = (float(x) for x in row[1:])
    bar = Bar(
        symbol=symbol,
        interval=interval,
        open_time=open_ms,
        close_time=open_ms + step - 1,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
    )
    if not (low <= min(o, c) and h >= max(o, c)):
        raise ValueError("open/close outside [low, high]")
    return bar


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(exc)


def write_ohlcv_csv(bars: Iterable[Bar], path: Path | str) -> Path:
    """Write bars in the shared-data format (shortest round-trip floats)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        handle.write(",".join(CSV_HEADER) + "\n")
        for b in bars:
            handle.write(
                f"{format_timestamp(b.open_time)},{b.open!r},{b.high!r},{b.low!r},"
                f"{b.close!r},{b.volume!r}\n"
            )
    return path


# ---------------------------------------------------------------- validation (backtests)

ISSUE_KINDS = ("format", "nan", "duplicate", "order", "gap", "impossible")


@dataclass(frozen=True)
class RowIssue:
    """One problem of an OHLCV file: its line (1 = header), the row's timestamp, what."""

    line: int
    timestamp: str
    kind: str  # one of ISSUE_KINDS
    detail: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.timestamp}): {self.kind}: {self.detail}"


class DataValidationError(ValueError):
    """A file with rows a backtest must not use; ``issues`` names every one."""

    def __init__(self, path: Path, issues: list[RowIssue]) -> None:
        self.path = path
        self.issues = issues
        shown = "; ".join(str(i) for i in issues[:5])
        more = f" (+{len(issues) - 5} more)" if len(issues) > 5 else ""
        super().__init__(f"{path}: {len(issues)} bad row(s): {shown}{more}")


def _candle_issues(o: float, h: float, low: float, c: float, v: float) -> list[str]:
    problems = []
    if min(o, h, low, c) <= 0:
        problems.append("non-positive price")
    if h < max(o, c):
        problems.append(f"high {h!r} < max(open, close) {max(o, c)!r}")
    if low > min(o, c):
        problems.append(f"low {low!r} > min(open, close) {min(o, c)!r}")
    if v < 0:
        problems.append(f"negative volume {v!r}")
    return problems


def validate_ohlcv_csv(path: Path | str, interval: str) -> list[RowIssue]:
    """Every problem of an OHLCV file, by line and timestamp; an empty list means clean.

    Checks: header and column count, unparseable or NaN/inf numbers, duplicate timestamps,
    timestamps going backwards, gaps (missing candles, reported on the row after the gap with
    how many are missing), impossible candles (high < max(open, close), low > min(open, close),
    negative volume, non-positive prices).
    """
    path = Path(path)
    step = interval_ms(interval)
    issues: list[RowIssue] = []
    previous: int | None = None
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != CSV_HEADER:
            return [RowIssue(1, "", "format", f"expected header {','.join(CSV_HEADER)}")]
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            stamp = row[0].strip() if row else ""
            if len(row) != len(CSV_HEADER):
                issues.append(RowIssue(line, stamp, "format", f"{len(row)} columns"))
                continue
            try:
                t = parse_timestamp_ms(stamp)
            except ValueError:
                issues.append(RowIssue(line, stamp, "format", "unparseable timestamp"))
                continue
            try:
                numbers = [float(x) for x in row[1:]]
            except ValueError:
                issues.append(RowIssue(line, stamp, "format", "unparseable number"))
                continue
            bad = [n for n, x in zip(CSV_HEADER[1:], numbers, strict=True) if not math.isfinite(x)]
            if bad:
                issues.append(RowIssue(line, stamp, "nan", f"non-finite {', '.join(bad)}"))
            else:
                for problem in _candle_issues(*numbers):
                    issues.append(RowIssue(line, stamp, "impossible", problem))
            if previous is not None:
                if t == previous:
                    issues.append(RowIssue(line, stamp, "duplicate", "same timestamp as before"))
                elif t < previous:
                    issues.append(RowIssue(line, stamp, "order", "timestamp before the previous"))
                elif t - previous > step:
                    missing = (t - previous) // step - 1
                    issues.append(
                        RowIssue(line, stamp, "gap", f"{missing} candle(s) missing before it")
                    )
                elif (t - previous) % step:
                    issues.append(RowIssue(line, stamp, "gap", "off the interval grid"))
            if previous is None or t > previous:
                previous = t
    return issues


def _in_window(issue: RowIssue, start_ms: int | None, end_ms: int | None) -> bool:
    """Whether an issue concerns the rows a load keeps (unparseable rows always do)."""
    try:
        t = parse_timestamp_ms(issue.timestamp)
    except ValueError:
        return True
    return (start_ms is None or t >= start_ms) and (end_ms is None or t < end_ms)


def load_validated_csv(
    path: Path | str,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    allow_gaps: bool = True,
) -> tuple[list[Bar], list[RowIssue]]:
    """Bars of a file that passed ``validate_ohlcv_csv``, and the gaps found (real exchange
    outages leave gaps, so they are reported, not fatal, unless ``allow_gaps`` is False).
    Only rows in ``[start_ms, end_ms)`` count. Raises ``DataValidationError`` naming every
    other bad row."""
    path = Path(path)
    issues = [i for i in validate_ohlcv_csv(path, interval) if _in_window(i, start_ms, end_ms)]
    fatal = [i for i in issues if i.kind != "gap" or not allow_gaps]
    if fatal:
        raise DataValidationError(path, fatal)
    return load_ohlcv_csv(path, symbol, interval, start_ms, end_ms), issues


# ---------------------------------------------------------------- resampling


def resample(bars: Sequence[Bar], interval: str) -> list[Bar]:
    """Aggregate closed bars of one symbol to a coarser interval, like Binance does.

    Groups are aligned to epoch multiples of the target interval and labelled by their left
    edge; a group is emitted only when every base bar of it is present and closed.
    """
    if not bars:
        return []
    base = bars[0].interval
    symbol = bars[0].symbol
    base_ms, target_ms = interval_ms(base), interval_ms(interval)
    if target_ms % base_ms:
        raise ValueError(f"{interval} is not a whole multiple of {base}")
    per_group = target_ms // base_ms
    out: list[Bar] = []
    group: list[Bar] = []
    group_start = None
    for bar in bars:
        if bar.symbol != symbol or bar.interval != base:
            raise ValueError(
                f"resample needs one symbol and interval, got {bar.symbol} {bar.interval}"
            )
        start = bar.open_time - bar.open_time % target_ms
        if start != group_start:
            _flush(group, per_group, interval, target_ms, out)
            group, group_start = [], start
        group.append(bar)
    _flush(group, per_group, interval, target_ms, out)
    return out


def _flush(group: list[Bar], per_group: int, interval: str, target_ms: int, out: list[Bar]) -> None:
    if len(group) != per_group or not all(b.closed for b in group):
        return
    first = group[0]
    start = first.open_time - first.open_time % target_ms
    out.append(
        Bar(
            symbol=first.symbol,
            interval=interval,
            open_time=start,
            close_time=start + target_ms - 1,
            open=first.open,
            high=max(b.high for b in group),
            low=min(b.low for b in group),
            close=group[-1].close,
            volume=math.fsum(b.volume for b in group),
        )
    )


# ---------------------------------------------------------------- synthetic market

# name, log drift per hour, volatility per hour, mean duration in hours
REGIMES: tuple[tuple[str, float, float, float], ...] = (
    ("bull", 0.0005, 0.0060, 24 * 5),
    ("bear", -0.0006, 0.0080, 24 * 4),
    ("calm", 0.0, 0.0030, 24 * 6),
    ("volatile", 0.0, 0.0150, 24 * 2),
)
# where a regime goes when it ends (rows sum to 1, no self transition)
_NEXT_REGIME = np.array(
    [
        [0.0, 0.25, 0.45, 0.30],
        [0.25, 0.0, 0.40, 0.35],
        [0.40, 0.35, 0.0, 0.25],
        [0.30, 0.35, 0.35, 0.0],
    ]
)
# start price, beta to the market factor, idiosyncratic vol per hour, base volume per hour
_SYMBOL_PARAMS: dict[str, tuple[float, float, float, float]] = {
    "BTC": (60_000.0, 1.0, 0.0015, 1_200.0),
    "ETH": (3_000.0, 1.15, 0.0040, 15_000.0),
    "SOL": (150.0, 1.4, 0.0065, 150_000.0),
    "PAXG": (2_600.0, 0.08, 0.0025, 300.0),
}
_DEFAULT_PARAMS = (100.0, 1.1, 0.0060, 50_000.0)
_SUBSTEPS = 12  # points of the intra-bar path that give high and low
_MEAN_REVERSION_PER_HOUR = 1.0 / (24 * 120)  # keeps long runs near plausible levels


def _symbol_params(symbol: str) -> tuple[float, float, float, float]:
    return _SYMBOL_PARAMS.get(symbol.split("/")[0].upper(), _DEFAULT_PARAMS)


def _regime_path(rng: np.random.Generator, n_bars: int, dt_hours: float) -> np.ndarray:
    stay = np.array([math.exp(-dt_hours / r[3]) for r in REGIMES])
    draws = rng.random(n_bars)
    picks = rng.random(n_bars)
    cumulative = np.cumsum(_NEXT_REGIME, axis=1)
    out = np.empty(n_bars, dtype=np.int64)
    state = int(rng.integers(len(REGIMES)))
    for i in range(n_bars):
        if draws[i] > stay[state]:
            state = int(min(np.searchsorted(cumulative[state], picks[i]), len(REGIMES) - 1))
        out[i] = state
    return out


def generate_market(
    symbols: list[str],
    interval: str,
    n_bars: int,
    seed: int = 7,
    start_ms: int = DEFAULT_START_MS,
) -> dict[str, list[Bar]]:
    """A seeded, correlated, regime-switching market for tests and demos.

    A Markov chain picks the regime (bull, bear, calm, volatile) of a common market factor;
    each symbol follows the factor with its own beta plus idiosyncratic noise (fat-tailed),
    so symbols are correlated and trends and volatility clusters exist. Each bar comes from
    an intra-bar path, so high/low are consistent, and volume grows with the bar's range.
    The same seed always gives the same bars; a symbol's path does not depend on which
    other symbols are asked for.
    """
    step = interval_ms(interval)
    if n_bars < 0:
        raise ValueError("n_bars must be >= 0")
    if start_ms % step:
        raise ValueError(f"start_ms {start_ms} is not aligned to {interval}")
    dt = step / 3_600_000
    sub_dt = dt / _SUBSTEPS
    market_rng = np.random.default_rng([seed, 0])
    regimes = _regime_path(market_rng, n_bars, dt)
    drift = np.array([r[1] for r in REGIMES])[regimes]
    vol = np.array([r[2] for r in REGIMES])[regimes]
    shocks = market_rng.standard_t(4, size=(n_bars, _SUBSTEPS)) / math.sqrt(2.0)
    market = drift[:, None] * sub_dt + vol[:, None] * math.sqrt(sub_dt) * shocks
    out: dict[str, list[Bar]] = {}
    for symbol in symbols:
        rng = np.random.default_rng([seed, 1, zlib.crc32(symbol.encode())])
        out[symbol] = _symbol_bars(symbol, interval, start_ms, step, market, vol, rng)
    return out


def _symbol_bars(
    symbol: str,
    interval: str,
    start_ms: int,
    step: int,
    market: np.ndarray,
    regime_vol: np.ndarray,
    rng: np.random.Generator,
) -> list[Bar]:
    n_bars = market.shape[0]
    dt = step / 3_600_000
    sub_dt = dt / _SUBSTEPS
    price0, beta, idio_vol, base_volume = _symbol_params(symbol)
    decimals = 2 if price0 >= 10 else 6
    tick = 10.0**-decimals
    idio = idio_vol * math.sqrt(sub_dt) * rng.standard_t(4, size=(n_bars, _SUBSTEPS)) / math.sqrt(2)
    increments = beta * market + idio
    bar_moves = increments.sum(axis=1)
    wick = np.abs(rng.normal(0.0, 0.25, size=(n_bars, 2)))
    noise = rng.lognormal(0.0, 0.35, size=n_bars)
    # the level is sequential (mean reversion, rounded closes); everything else is vectorised
    log0 = math.log(price0)
    kappa = min(1.0, _MEAN_REVERSION_PER_HOUR * dt)
    opens = np.empty(n_bars)
    closes = np.empty(n_bars)
    pulls = np.empty(n_bars)
    price = round(price0, decimals)
    for i in range(n_bars):
        level = math.log(price)
        pulls[i] = -kappa * (level - log0)
        opens[i] = price
        price = max(round(math.exp(level + bar_moves[i] + pulls[i]), decimals), tick)
        closes[i] = price
    steps = increments + (pulls / _SUBSTEPS)[:, None]
    paths = np.log(opens)[:, None] + np.concatenate(
        (np.zeros((n_bars, 1)), np.cumsum(steps, axis=1)), axis=1
    )
    sub_sigma = (beta * regime_vol + idio_vol) * math.sqrt(sub_dt)
    highs = np.exp(paths.max(axis=1)) * (1.0 + wick[:, 0] * sub_sigma)
    lows = np.exp(paths.min(axis=1)) * (1.0 - wick[:, 1] * sub_sigma)
    highs = np.maximum(np.round(highs, decimals), np.maximum(opens, closes))
    lows = np.maximum(np.minimum(np.round(lows, decimals), np.minimum(opens, closes)), tick)
    ref_range = 0.012 * math.sqrt(dt)
    volumes = base_volume * dt * (0.4 + (highs - lows) / opens / ref_range) * noise
    volumes = np.maximum(np.round(volumes, 5), 1e-5)
    return [
        Bar(
            symbol=symbol,
            interval=interval,
            open_time=start_ms + i * step,
            close_time=start_ms + (i + 1) * step - 1,
            open=o,
            high=h,
            low=low,
            close=c,
            volume=v,
        )
        for i, (o, h, low, c, v) in enumerate(
            zip(
                opens.tolist(),
                highs.tolist(),
                lows.tolist(),
                closes.tolist(),
                volumes.tolist(),
                strict=True,
            )
        )
    ]
