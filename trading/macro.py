"""Macro regime from FRED (SPEC §6): growth and inflation direction → quadrant → sizing.

Pure code (no I/O besides ``load_fred_csv``). Point-in-time: at date D an observation dated d is
seen only when d + publication lag < D, so a backtest never reads a CPI print before it was
published. Changes are measured by date ("last 3 months" = the latest seen observation against
the latest one dated at least three calendar months before it), never by row count, so daily
and monthly series are treated alike.

Growth: the 10y-2y curve steepening (ΔT10Y2Y > 0) and unemployment falling (ΔUNRATE < 0) both
say growth up. Inflation: 10y breakeven rising (ΔT10YIE > 0) and CPI year-on-year inflation
rising over the 3 months (Δ YoY CPIAUCSL > 0) both say inflation up. Each change is scaled to
[-1, 1] by a "large move" (50 bp, 0.3 pp, 30 bp, 0.5 pp) and the available ones are averaged.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from trading.models import Model

SERIES_IDS: tuple[str, ...] = ("T10Y2Y", "T10YIE", "UNRATE", "CPIAUCSL")
Quadrant = Literal["goldilocks", "reflation", "stagflation", "deflation", "unknown"]
Direction = Literal["up", "down", "unknown"]

# Days after its observation date that an observation may be used (FRED dates monthly data
# by the first day of the month it describes). H.15 daily rates post the next business day;
# the jobs report comes out on the first Friday of the following month (≤ ~38 days after the
# 1st), CPI around the 10th-15th of the following month (≤ ~47 days with the 2025 shutdown).
DEFAULT_LAG_DAYS: dict[str, int] = {"T10Y2Y": 1, "T10YIE": 1, "UNRATE": 40, "CPIAUCSL": 47}
# The latest seen observation must be this fresh (days before D), else the series is missing.
DEFAULT_MAX_AGE_DAYS: dict[str, int] = {"T10Y2Y": 10, "T10YIE": 10, "UNRATE": 100, "CPIAUCSL": 100}
# A move of this size over 3 months scores ±1 (series units: percent points).
SCALE: dict[str, float] = {"T10Y2Y": 0.50, "T10YIE": 0.30, "UNRATE": 0.30, "CPIAUCSL": 0.50}
# +1: a rise of the series means "up" for its dimension; -1: a rise means "down".
SIGN: dict[str, float] = {"T10Y2Y": 1.0, "UNRATE": -1.0, "T10YIE": 1.0, "CPIAUCSL": 1.0}
GROWTH_SERIES = ("T10Y2Y", "UNRATE")
INFLATION_SERIES = ("T10YIE", "CPIAUCSL")
EXPOSURE_SCALE: dict[str, float] = {
    "goldilocks": 1.2,
    "reflation": 1.0,
    "stagflation": 0.6,
    "deflation": 0.9,
    "unknown": 1.0,
}
TRAIL_MULTIPLIER: dict[str, float] = {
    "goldilocks": 1.0,
    "reflation": 1.0,
    "stagflation": 0.75,
    "deflation": 0.9,
    "unknown": 1.0,
}
LOOKBACK_MONTHS = 3
# A baseline further than this beyond its target date is too far to measure a 3-month change.
BASE_SLACK_DAYS = 45


class Observation(Model):
    date: date
    value: float


class FredSeries(Model):
    """One FRED series, oldest first, missing values already dropped."""

    series_id: str
    observations: list[Observation] = Field(default_factory=list)


class MacroParams(Model):
    lag_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_LAG_DAYS))
    max_age_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAX_AGE_DAYS))
    lookback_months: int = Field(default=LOOKBACK_MONTHS, ge=1)
    exposure_scale: dict[str, float] = Field(default_factory=lambda: dict(EXPOSURE_SCALE))
    trail_multiplier: dict[str, float] = Field(default_factory=lambda: dict(TRAIL_MULTIPLIER))


class MacroRequest(Model):
    """Input of the macro regime activity (no secret: the FRED key stays in the worker's env)."""

    as_of_ms: int
    params: MacroParams | None = None


class MacroInput(Model):
    """One series' contribution: the two observations compared and the score they gave."""

    series_id: str
    latest_date: date
    latest_value: float
    base_date: date
    base_value: float
    change: float  # series units (for CPIAUCSL: change of YoY inflation, percent points)
    score: float  # in [-1, 1], + = up for its dimension


class MacroRegime(Model):
    quadrant: Quadrant = "unknown"
    exposure_scale: float = 1.0
    trail_multiplier: float = 1.0
    growth_direction: Direction = "unknown"
    inflation_direction: Direction = "unknown"
    growth_score: float | None = None
    inflation_score: float | None = None
    inputs: list[MacroInput] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # why a series is missing
    as_of: date
    source: str = ""
    reason: str | None = None  # set when the quadrant is unknown


# ---------------------------------------------------------------- loading


def load_fred_csv(path: Path | str, series_id: str | None = None) -> FredSeries:
    """A FRED CSV (``date,value`` or FRED's ``DATE,<ID>``); "." and empty values are dropped."""
    path = Path(path)
    sid = series_id or path.stem.removeprefix("fred_")
    rows: dict[date, float] = {}
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or len(header) < 2:
            raise ValueError(f"{path}:1: expected a date,value header, got {header}")
        for row in reader:
            if len(row) < 2 or not row[0].strip():
                continue
            text = row[1].strip()
            if text in ("", "."):
                continue
            try:
                day = date.fromisoformat(row[0].strip()[:10])
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}:{reader.line_num}: bad row {row}") from None
            if math.isfinite(value):
                rows[day] = value
    obs = [Observation(date=d, value=v) for d, v in sorted(rows.items())]
    return FredSeries(series_id=sid, observations=obs)


# ---------------------------------------------------------------- dates


def as_date(as_of: datetime | date | int) -> date:
    """A decision time as a UTC date: datetime (naive = UTC), date, or epoch milliseconds."""
    if isinstance(as_of, datetime):
        dt = as_of if as_of.tzinfo is None else as_of.astimezone(UTC)
        return dt.date()
    if isinstance(as_of, date):
        return as_of
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        return datetime.fromtimestamp(as_of / 1000, UTC).date()
    raise TypeError(f"as_of must be a datetime, date or epoch ms, got {type(as_of).__name__}")


def months_before(day: date, months: int) -> date:
    """Same day-of-month ``months`` earlier, clamped to the month's end (31 May - 3 → 28 Feb)."""
    y, m = divmod(day.year * 12 + day.month - 1 - months, 12)
    m += 1
    for d in (day.day, 30, 29, 28):
        try:
            return date(y, m, min(day.day, d))
        except ValueError:
            continue
    return date(y, m, 28)


# ---------------------------------------------------------------- point in time


class _View:
    """The observations of one series seen at D (d + lag < D), with dated look-ups."""

    def __init__(self, series: FredSeries, as_of: date, lag_days: int) -> None:
        cutoff = as_of - timedelta(days=lag_days)  # seen iff d < cutoff
        obs = [o for o in series.observations if o.date < cutoff]
        self.dates = [o.date for o in obs]
        self.values = [o.value for o in obs]

    def __len__(self) -> int:
        return len(self.dates)

    def at_or_before(self, day: date) -> tuple[date, float] | None:
        i = bisect_right(self.dates, day) - 1
        return (self.dates[i], self.values[i]) if i >= 0 else None


def _base(view: _View, latest: date, months: int) -> tuple[date, float] | None:
    target = months_before(latest, months)
    found = view.at_or_before(target)
    if found is None or (target - found[0]).days > BASE_SLACK_DAYS:
        return None
    return found


def _yoy(view: _View, day: date) -> tuple[date, float] | None:
    """YoY inflation (percent) of the observation at or before ``day``."""
    now = view.at_or_before(day)
    if now is None:
        return None
    year_ago = _base(view, now[0], 12)
    if year_ago is None or year_ago[1] <= 0:
        return None
    return now[0], (now[1] / year_ago[1] - 1.0) * 100.0


def _measure(sid: str, series: FredSeries | None, d: date, p: MacroParams) -> MacroInput | str:
    """A series' 3-month change at D, or why it cannot be measured."""
    if series is None or not series.observations:
        return f"{sid}: no data"
    view = _View(series, d, p.lag_days.get(sid, 0))
    if not len(view):
        return f"{sid}: nothing published before {d}"
    latest_date = view.dates[-1]
    age = (d - latest_date).days
    max_age = p.max_age_days.get(sid, 100)
    if age > max_age:
        return f"{sid}: latest published observation {latest_date} is {age} days old (> {max_age})"
    if sid == "CPIAUCSL":
        now = _yoy(view, latest_date)
        base_obs = _base(view, latest_date, p.lookback_months)
        then = _yoy(view, base_obs[0]) if base_obs else None
    else:
        now = (latest_date, view.values[-1])
        then = _base(view, latest_date, p.lookback_months)
    if now is None or then is None:
        return f"{sid}: no observation {p.lookback_months} months before {latest_date}"
    change = now[1] - then[1]
    score = max(-1.0, min(1.0, SIGN.get(sid, 1.0) * change / SCALE.get(sid, 1.0)))
    return MacroInput(
        series_id=sid,
        latest_date=now[0],
        latest_value=round(now[1], 6),
        base_date=then[0],
        base_value=round(then[1], 6),
        change=round(change, 6),
        score=round(score, 6),
    )


def _direction(score: float | None, zero_is_up: bool) -> Direction:
    if score is None:
        return "unknown"
    if score > 0 or (score == 0 and zero_is_up):
        return "up"
    return "down"


def quadrant_of(growth: Direction, inflation: Direction) -> Quadrant:
    if growth == "unknown" or inflation == "unknown":
        return "unknown"
    if growth == "up":
        return "reflation" if inflation == "up" else "goldilocks"
    return "stagflation" if inflation == "up" else "deflation"


def macro_regime(
    series_by_id: dict[str, FredSeries],
    as_of: datetime | date | int,
    params: MacroParams | None = None,
    source: str = "",
) -> MacroRegime:
    """The macro quadrant at ``as_of`` from what was published before it. Never raises on data.

    A dimension is measured from whichever of its two series are available (their mean score);
    with neither, the quadrant is unknown (exposure 1.0, trail 1.0). A zero growth score counts
    as "up" (no deterioration), a zero inflation score as "down" (not rising).
    """
    p = params or MacroParams()
    d = as_date(as_of)
    inputs: dict[str, MacroInput] = {}
    notes: list[str] = []
    for sid in SERIES_IDS:
        got = _measure(sid, series_by_id.get(sid), d, p)
        if isinstance(got, MacroInput):
            inputs[sid] = got
        else:
            notes.append(got)

    def mean_score(ids: tuple[str, ...]) -> float | None:
        scores = [inputs[i].score for i in ids if i in inputs]
        return round(math.fsum(scores) / len(scores), 6) if scores else None

    growth, inflation = mean_score(GROWTH_SERIES), mean_score(INFLATION_SERIES)
    g_dir = _direction(growth, zero_is_up=True)
    i_dir = _direction(inflation, zero_is_up=False)
    quadrant = quadrant_of(g_dir, i_dir)
    reason = None
    if quadrant == "unknown":
        gone = [n for n, v in (("growth", growth), ("inflation", inflation)) if v is None]
        reason = f"no {' or '.join(gone)} data at {d}: " + "; ".join(notes)
    return MacroRegime(
        quadrant=quadrant,
        exposure_scale=p.exposure_scale.get(quadrant, 1.0),
        trail_multiplier=p.trail_multiplier.get(quadrant, 1.0),
        growth_direction=g_dir,
        inflation_direction=i_dir,
        growth_score=growth,
        inflation_score=inflation,
        inputs=list(inputs.values()),
        missing=[sid for sid in SERIES_IDS if sid not in inputs],
        notes=notes,
        as_of=d,
        source=source,
        reason=reason,
    )


def unknown_regime(as_of: datetime | date | int, reason: str, source: str = "") -> MacroRegime:
    """The neutral answer when nothing could be read (exposure 1.0, trail 1.0)."""
    return MacroRegime(as_of=as_date(as_of), reason=reason, source=source, missing=list(SERIES_IDS))
