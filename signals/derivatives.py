"""Derivatives readings per symbol (SPEC §7): funding, open interest, taker flow, top-trader
long/short and its z, perp-spot basis, plus the liquidation summary, served to activities.

The monitor polls Binance USDⓈ-M futures data on mainnet (the testnets serve none of it)
every ``cadence_s`` (5 min), every ``fast_cadence_s`` (1 min) while any reading is extreme.
Each reading carries its own timestamp; a reading that failed or was never fetched is named in
``missing``, one older than ``stale_after_s`` in ``stale``: nothing is silently zero.

The models and parsers here are pure (standard library + pydantic) so that workflow code may
import the payload types; the REST client is passed in and only typed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from trading.models import Model

if TYPE_CHECKING:
    from signals.binance_rest import BinanceRest

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
FUNDING_PERIODS_PER_YEAR = 3 * 365  # Binance funds every 8 h
OI_PERIOD = "5m"
OI_ROWS = 289  # 24 h of 5-minute points plus the one they are compared with
TAKER_PERIOD = "5m"
TAKER_ROWS = 12  # the last hour of taker volume
LS_PERIOD = "1h"
LS_WINDOW = 30  # z of the latest ratio against the 30 before it
READINGS = ("funding", "open_interest", "taker", "long_short", "basis")


class DerivativesError(ValueError):
    """An answer of a derivatives endpoint that fails validation."""


# ---------------------------------------------------------------- payloads


class LiquidationSymbol(Model):
    symbol: str
    notional_1h: float = Field(ge=0)  # USD, forced orders filled in the last hour
    long_liquidated_1h: float = Field(ge=0)  # forced SELLs: longs closed
    short_liquidated_1h: float = Field(ge=0)  # forced BUYs: shorts closed
    cascade: bool = False


class LiquidationSummary(Model):
    """Forced orders of the last hour from ``!forceOrder@arr`` (every USDⓈ-M symbol)."""

    as_of_ms: int
    total_1h: float = Field(ge=0)
    cascade: bool = False  # total over the threshold
    threshold: float = Field(gt=0)
    symbols: dict[str, LiquidationSymbol] = Field(default_factory=dict)
    events: int = 0  # forced orders seen since the start
    connected: bool = False


class DerivativesSnapshot(Model):
    """Latest derivatives readings of one symbol; ``None`` fields are listed in ``missing``."""

    symbol: str
    funding_rate: float | None = None  # last funding rate per 8 h (0.0001 = 0.01 %)
    next_funding_ms: int | None = None
    mark_price: float | None = None
    spot_price: float | None = None
    basis_annualised: float | None = None  # (mark / spot - 1) x 3 x 365
    open_interest_usd: float | None = None
    oi_change_pct: float | None = None  # 1 h change, fraction (the gate's and rule's metric)
    oi_change_24h_pct: float | None = None
    taker_ratio: float | None = None  # taker buy / sell volume over the last hour
    long_short_ratio: float | None = None  # top traders' long / short account ratio
    ls_z: float | None = None
    updated_ms: dict[str, int] = Field(default_factory=dict)  # reading -> fetch time
    missing: list[str] = Field(default_factory=list)
    stale: list[str] = Field(default_factory=list)
    extreme: list[str] = Field(default_factory=list)


class DerivativesRequest(Model):
    symbols: list[str]


class DerivativesView(Model):
    """What ``market_derivatives`` returns: every symbol asked for plus the liquidations."""

    as_of_ms: int
    symbols: dict[str, DerivativesSnapshot] = Field(default_factory=dict)
    liquidations: LiquidationSummary | None = None
    missing: list[str] = Field(default_factory=list)  # symbols without any reading
    extreme: bool = False


@dataclass(frozen=True)
class ExtremeThresholds:
    """Readings beyond these switch the monitor to its fast cadence (documented defaults)."""

    funding_abs: float = 0.0005  # 0.05 % per 8 h, five times the neutral rate
    oi_change_1h_abs: float = 0.05
    taker_ratio_high: float = 1.5  # and its inverse below
    ls_z_abs: float = 2.5
    basis_annualised_abs: float = 1.0  # 0.09 % premium per 8 h; typical is 0.01-0.05 %


# ---------------------------------------------------------------- parsers (pure)


def _num(row: dict[str, Any], key: str, where: str) -> float:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        raise DerivativesError(f"{where}: field {key!r} missing or not numeric") from None
    if not math.isfinite(value):
        raise DerivativesError(f"{where}: field {key!r} not finite")
    return value


def _rows(rows: Sequence[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Rows sorted by timestamp, each with an integer timestamp."""
    out = []
    for row in rows:
        try:
            stamp = int(row["timestamp"])
        except (KeyError, TypeError, ValueError):
            raise DerivativesError(f"{where}: row without a timestamp") from None
        out.append({**row, "timestamp": stamp})
    return sorted(out, key=lambda r: r["timestamp"])


FUNDING_PERIOD_MS = 8 * 3_600_000
FUNDING_HISTORY_ROWS = 100  # prints fetched (about 33 days): a carry averages at most 21
FUNDING_REFETCH_MS = 3_600_000  # asked again hourly, and once a new print is due


def parse_funding_history(rows: Sequence[Any]) -> list[tuple[int, float]]:
    """``fundingRate`` rows -> [(funding time ms, rate)], oldest first, one per time; a row that
    is not a finite, plausible rate with a positive time is an error (the whole answer is)."""
    out: dict[int, float] = {}
    for row in rows:
        if not isinstance(row, dict):
            raise DerivativesError(f"fundingRate: not an object: {row!r:.60}")
        t = row.get("fundingTime")
        rate = _num(row, "fundingRate", "fundingRate")
        if not isinstance(t, int | str) or not str(t).isdigit() or int(t) <= 0:
            raise DerivativesError(f"fundingRate: bad fundingTime {t!r:.30}")
        if abs(rate) > 0.05:
            raise DerivativesError(f"fundingRate: implausible funding rate {rate}")
        out[int(t)] = rate
    return sorted(out.items())


def parse_premium(row: dict[str, Any]) -> tuple[float, float, int | None]:
    """``premiumIndex`` -> (last funding rate, mark price, next funding time)."""
    funding = _num(row, "lastFundingRate", "premiumIndex")
    mark = _num(row, "markPrice", "premiumIndex")
    if mark <= 0:
        raise DerivativesError(f"premiumIndex: mark price {mark} not positive")
    if abs(funding) > 0.05:  # Binance caps funding far below 5 % per period
        raise DerivativesError(f"premiumIndex: implausible funding rate {funding}")
    nxt = row.get("nextFundingTime")
    return funding, mark, int(nxt) if isinstance(nxt, int | str) and str(nxt).isdigit() else None


def oi_changes(rows: Sequence[dict[str, Any]]) -> tuple[float, float | None, float | None]:
    """``openInterestHist`` (5 m points) -> (latest USD value, 1 h change, 24 h change).

    A change is None when the history does not reach that far back.
    """
    ordered = _rows(rows, "openInterestHist")
    if not ordered:
        raise DerivativesError("openInterestHist: no rows")
    values = [
        (r["timestamp"], _num(r, "sumOpenInterestValue", "openInterestHist")) for r in ordered
    ]
    if any(v <= 0 for _, v in values):
        raise DerivativesError("openInterestHist: non-positive open interest")
    last_t, last_v = values[-1]

    def change(horizon_ms: int) -> float | None:
        target = last_t - horizon_ms
        past = [v for t, v in values if t <= target]
        if not past or values[0][0] > target:
            return None
        return last_v / past[-1] - 1.0

    return last_v, change(HOUR_MS), change(24 * HOUR_MS)


def taker_ratio(rows: Sequence[dict[str, Any]]) -> float:
    """``takerlongshortRatio`` rows -> taker buy / sell volume summed over them."""
    ordered = _rows(rows, "takerlongshortRatio")
    if not ordered:
        raise DerivativesError("takerlongshortRatio: no rows")
    buy = math.fsum(_num(r, "buyVol", "takerlongshortRatio") for r in ordered)
    sell = math.fsum(_num(r, "sellVol", "takerlongshortRatio") for r in ordered)
    if buy < 0 or sell <= 0:
        raise DerivativesError("takerlongshortRatio: volumes must be >= 0 and sell > 0")
    return buy / sell


def long_short_z(
    rows: Sequence[dict[str, Any]], window: int = LS_WINDOW
) -> tuple[float, float | None]:
    """``topLongShortAccountRatio`` rows -> (latest ratio, z of it against the ones before).

    Population σ over up to ``window`` earlier values; None below 3 of them or with zero σ
    (unless the latest equals the mean: then 0), as ``trading.indicators.zscore_last`` does.
    """
    ordered = _rows(rows, "topLongShortAccountRatio")
    if not ordered:
        raise DerivativesError("topLongShortAccountRatio: no rows")
    ratios = [_num(r, "longShortRatio", "topLongShortAccountRatio") for r in ordered]
    if any(r <= 0 for r in ratios):
        raise DerivativesError("topLongShortAccountRatio: non-positive ratio")
    last = ratios[-1]
    ref = ratios[-1 - window : -1]
    if len(ref) < 3:
        return last, None
    mean = math.fsum(ref) / len(ref)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in ref) / len(ref))
    if std == 0:
        return last, 0.0 if last == mean else None
    return last, (last - mean) / std


def annualised_basis(mark: float, spot: float) -> float:
    """Perp premium over spot, annualised as if it were paid every 8 h funding period."""
    if mark <= 0 or spot <= 0:
        raise DerivativesError("basis needs positive prices")
    return (mark / spot - 1.0) * FUNDING_PERIODS_PER_YEAR


def extreme_readings(snap: DerivativesSnapshot, limits: ExtremeThresholds) -> list[str]:
    """Names of the readings beyond their thresholds."""
    out = []
    if snap.funding_rate is not None and abs(snap.funding_rate) >= limits.funding_abs:
        out.append("funding_rate")
    if snap.oi_change_pct is not None and abs(snap.oi_change_pct) >= limits.oi_change_1h_abs:
        out.append("oi_change_pct")
    if snap.taker_ratio is not None and (
        snap.taker_ratio >= limits.taker_ratio_high
        or snap.taker_ratio <= 1.0 / limits.taker_ratio_high
    ):
        out.append("taker_ratio")
    if snap.ls_z is not None and abs(snap.ls_z) >= limits.ls_z_abs:
        out.append("ls_z")
    if (
        snap.basis_annualised is not None
        and abs(snap.basis_annualised) >= limits.basis_annualised_abs
    ):
        out.append("basis_annualised")
    return out


def wall_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- monitor


class DerivativesMonitor:
    """Polls the futures data endpoints for every symbol and keeps the latest readings."""

    def __init__(
        self,
        rest: BinanceRest,
        symbols: list[str],
        thresholds: ExtremeThresholds | None = None,
        cadence_s: float = 300.0,
        fast_cadence_s: float = 60.0,
        stale_after_s: float = 900.0,
        clock: Callable[[], int] = wall_ms,
        liquidations: Callable[[], LiquidationSummary | None] | None = None,
    ) -> None:
        if fast_cadence_s <= 0 or cadence_s < fast_cadence_s:
            raise ValueError("need 0 < fast_cadence_s <= cadence_s")
        self.rest = rest
        self.symbols = list(symbols)
        self.thresholds = thresholds or ExtremeThresholds()
        self.cadence_s = cadence_s
        self.fast_cadence_s = fast_cadence_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.liquidations = liquidations
        self._values: dict[str, dict[str, Any]] = {s: {} for s in self.symbols}
        self._updated: dict[str, dict[str, int]] = {s: {} for s in self.symbols}
        self.errors: dict[str, str] = {}  # "BTC/USDT funding" -> last error
        self.refreshes = 0
        # settled funding prints per symbol (a carry family's input), and when last asked
        self.funding_prints: dict[str, list[tuple[int, float]]] = {s: [] for s in self.symbols}
        self._funding_asked: dict[str, int] = {}

    # ------------------------------------------------------------ polling

    async def refresh(self) -> None:
        """Fetch every reading of every symbol once (failures are recorded, never raised)."""
        await asyncio.gather(*(self._refresh_symbol(s) for s in self.symbols))
        self.refreshes += 1

    async def _refresh_symbol(self, symbol: str) -> None:
        rest = self.rest
        results = await asyncio.gather(
            rest.premium_index(symbol),
            rest.open_interest_hist(symbol, OI_PERIOD, OI_ROWS),
            rest.taker_long_short_ratio(symbol, TAKER_PERIOD, TAKER_ROWS),
            rest.top_long_short_account_ratio(symbol, LS_PERIOD, LS_WINDOW + 1),
            rest.spot_price(symbol),
            return_exceptions=True,
        )
        premium, oi, taker, ls, spot = results
        now = self.clock()
        if self._funding_due(symbol, now):
            self._funding_asked[symbol] = now
            await self._refresh_funding_history(symbol)
        self._apply(symbol, "funding", premium, now, self._take_premium)
        self._apply(symbol, "open_interest", oi, now, self._take_oi)
        self._apply(symbol, "taker", taker, now, self._take_taker)
        self._apply(symbol, "long_short", ls, now, self._take_ls)
        if isinstance(premium, BaseException) or isinstance(spot, BaseException):
            cause = spot if isinstance(spot, BaseException) else premium
            self._apply(symbol, "basis", cause, now, self._take_basis)
        else:
            self._apply(symbol, "basis", spot, now, self._take_basis)

    def _apply(
        self,
        symbol: str,
        reading: str,
        result: object,
        now: int,
        take: Callable[[dict[str, Any], Any], None],
    ) -> None:
        key = f"{symbol} {reading}"
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            self._note_error(key, f"{type(result).__name__}: {result}")
            return
        try:
            take(self._values[symbol], result)
        except DerivativesError as err:
            self._note_error(key, str(err))
            return
        self._updated[symbol][reading] = now
        self.errors.pop(key, None)

    def _funding_due(self, symbol: str, now: int) -> bool:
        """Whether to ask for the funding history: never asked, an hour since, or a print due
        since the newest one (asked at most once a minute then)."""
        asked = self._funding_asked.get(symbol)
        if asked is None or now - asked >= FUNDING_REFETCH_MS:
            return True
        prints = self.funding_prints.get(symbol) or []
        due = prints and now >= prints[-1][0] + FUNDING_PERIOD_MS + 60_000
        return bool(due) and now - asked >= 60_000

    async def _refresh_funding_history(self, symbol: str) -> None:
        """Merge the exchange's latest settled prints into the symbol's history; a failure is
        recorded (``errors``) and the history kept as it was."""
        key = f"{symbol} funding history"
        try:
            rows = await self.rest.funding_rate_history(symbol, FUNDING_HISTORY_ROWS)
            fresh = parse_funding_history(rows)
        except asyncio.CancelledError:
            raise
        except DerivativesError as err:
            self._note_error(key, str(err))
            return
        except Exception as err:  # noqa: BLE001 - recorded like every other reading
            self._note_error(key, f"{type(err).__name__}: {err}")
            return
        merged = dict(self.funding_prints.get(symbol) or [])
        merged.update(fresh)
        self.funding_prints[symbol] = sorted(merged.items())[-FUNDING_HISTORY_ROWS * 2 :]
        self.errors.pop(key, None)

    def funding_history(self) -> dict[str, list[tuple[int, float]]]:
        """Every symbol's settled funding prints, oldest first (the bars board writes them)."""
        return {s: list(p) for s, p in self.funding_prints.items() if p}

    def _note_error(self, key: str, text: str) -> None:
        if self.errors.get(key) != text:
            log.warning("derivatives %s unavailable: %s", key, text)
        self.errors[key] = text

    @staticmethod
    def _take_premium(values: dict[str, Any], row: Any) -> None:
        funding, mark, nxt = parse_premium(row)
        values.update(funding_rate=funding, mark_price=mark, next_funding_ms=nxt)

    @staticmethod
    def _take_oi(values: dict[str, Any], rows: Any) -> None:
        usd, change_1h, change_24h = oi_changes(rows)
        values.update(open_interest_usd=usd, oi_change_pct=change_1h, oi_change_24h_pct=change_24h)

    @staticmethod
    def _take_taker(values: dict[str, Any], rows: Any) -> None:
        values["taker_ratio"] = taker_ratio(rows)

    @staticmethod
    def _take_ls(values: dict[str, Any], rows: Any) -> None:
        ratio, z = long_short_z(rows)
        values.update(long_short_ratio=ratio, ls_z=z)

    @staticmethod
    def _take_basis(values: dict[str, Any], spot: Any) -> None:
        mark = values.get("mark_price")
        if mark is None:
            raise DerivativesError("no mark price for the basis")
        values.update(spot_price=float(spot), basis_annualised=annualised_basis(mark, spot))

    # ------------------------------------------------------------ serving

    def snapshot(self, symbol: str) -> DerivativesSnapshot:
        values = self._values.get(symbol, {})
        updated = self._updated.get(symbol, {})
        now = self.clock()
        stale_ms = self.stale_after_s * 1000
        snap = DerivativesSnapshot(symbol=symbol, updated_ms=dict(updated), **values)
        snap.missing = [r for r in READINGS if r not in updated]
        snap.stale = [r for r in READINGS if r in updated and now - updated[r] > stale_ms]
        snap.extreme = extreme_readings(snap, self.thresholds)
        return snap

    def view(self, symbols: list[str] | None = None) -> DerivativesView:
        wanted = symbols or self.symbols
        snaps = {s: self.snapshot(s) for s in wanted}
        liquidations = self.liquidations() if self.liquidations else None
        extreme = any(s.extreme for s in snaps.values()) or bool(
            liquidations and liquidations.cascade
        )
        return DerivativesView(
            as_of_ms=self.clock(),
            symbols=snaps,
            liquidations=liquidations,
            missing=[s for s, snap in snaps.items() if len(snap.missing) == len(READINGS)],
            extreme=extreme,
        )

    def metric(self, symbol: str, metric: str) -> float | None:
        """The gate's metric provider: ``funding_rate`` / ``oi_change_pct`` (None if unusable)."""
        if metric not in _READING_FIELDS or symbol not in self._values:
            return None
        return to_reading_fields(self.snapshot(symbol))[metric]

    def any_extreme(self) -> bool:
        return self.view().extreme

    def next_delay_s(self) -> float:
        return self.fast_cadence_s if self.any_extreme() else self.cadence_s

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``: a failure is logged and the loop goes on at its cadence."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception:  # the loop must outlive any single bad poll
                log.exception("derivatives refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.next_delay_s())


_READING_FIELDS = {
    "funding_rate": "funding",
    "taker_ratio": "taker",
    "ls_z": "long_short",
    "oi_change_pct": "open_interest",
}


def to_reading_fields(snap: DerivativesSnapshot) -> dict[str, float | None]:
    """The fields of ``trading.rule_policy.DerivativesReading`` (same names, same units).

    A stale or missing reading is None: the rule policy must not trade on old numbers.
    """
    unusable = set(snap.missing) | set(snap.stale)
    return {
        name: None if reading in unusable else getattr(snap, name)
        for name, reading in _READING_FIELDS.items()
    }
