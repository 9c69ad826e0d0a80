"""Regime activities: the macro quadrant (FRED API or CSV files) and the crypto HMM.

Both answer "unknown" with a reason instead of raising: a regime is advisory, and a failing
fetch must never stall the DecisionWorkflow. The FRED key is read from the environment
(``FRED_API_KEY``) inside the activity, handed straight to the client and scrubbed from every
message; it never enters a payload, a log line or a cached file.

Sources: with a key, ``fredapi.Fred``; without one, ``fred_<SERIES>.csv`` files from
``OCW_FRED_DIR`` or the shared data folder. API fetches are cached for ``cache_ttl_s`` (6 h) in
memory and on disk under ``OCW_HOME`` so that a restarted worker does not refetch; a failed
refetch falls back to the stale copy. CSV files are re-read only when they change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from temporalio import activity

from trading.config import Settings
from trading.macro import (
    DEFAULT_LAG_DAYS,
    SERIES_IDS,
    FredSeries,
    MacroParams,
    MacroRegime,
    MacroRequest,
    Observation,
    load_fred_csv,
    macro_regime,
    unknown_regime,
)
from trading.market_data import find_symbol_csv, load_ohlcv_csv, shared_data_dir
from trading.models import Bar
from trading.regime_crypto import (
    CryptoRegime,
    CryptoRegimeRequest,
    HmmParams,
    crypto_regime,
    daily_bars,
)
from workflows import activity_api as api

log = logging.getLogger(__name__)

FRED_KEY_ENV = "FRED_API_KEY"
FRED_HISTORY_START = "2000-01-01"  # enough for any 3-month change and CPI year-on-year
DAY_MS = 86_400_000
_KEY_IN_URL = re.compile(r"(api_key=)[^&\s'\"]+", re.IGNORECASE)


class FredLike(Protocol):
    """The part of ``fredapi.Fred`` used here (a pandas Series of floats by date)."""

    def get_series(self, series_id: str, observation_start: Any = None, **kwargs: Any) -> Any: ...


def _default_fred(api_key: str) -> FredLike:
    from fredapi import Fred

    return Fred(api_key=api_key)


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the secret (and any ``api_key=...`` URL parameter)."""
    if secret:
        text = text.replace(secret, "***")
    return _KEY_IN_URL.sub(r"\1***", text)


def series_from_pandas(series_id: str, data: Any) -> FredSeries:
    """A fredapi answer (pandas Series indexed by Timestamp) as a FredSeries; NaN dropped."""
    obs: dict[date, float] = {}
    for key, value in data.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(v):
            continue
        day = _as_day(key)
        if day is None:
            continue
        obs[day] = v
    return FredSeries(
        series_id=series_id,
        observations=[Observation(date=d, value=v) for d, v in sorted(obs.items())],
    )


def _as_day(key: Any) -> date | None:
    """An index label of a FRED answer as a date (pandas Timestamp is a datetime)."""
    if isinstance(key, datetime):
        return key.date()
    if isinstance(key, date):
        return key
    try:
        return date.fromisoformat(str(key)[:10])
    except ValueError:
        return None


def csv_daily_bars(data_dir: Path | None) -> Callable[[str, int], list[Bar]]:
    """Bar source for the crypto regime from the CSV folder: 1d, else 4h, else 1h, resampled."""

    def load(symbol: str, as_of_ms: int) -> list[Bar]:
        for interval in ("1d", "4h", "1h"):
            path = find_symbol_csv(data_dir, symbol, interval)
            if path is not None:
                bars = load_ohlcv_csv(path, symbol, interval, end_ms=as_of_ms)
                return daily_bars(bars)
        raise FileNotFoundError(f"no 1d/4h/1h CSV for {symbol} in {data_dir}")

    return load


class RegimeActivities:
    """Owns its sources (FRED client factory, CSV folder, bar source) and its caches."""

    def __init__(
        self,
        *,
        fred_dir: Path | None = None,
        cache_dir: Path | None = None,
        cache_ttl_s: float = 6 * 3600,
        fred_factory: Callable[[str], FredLike] = _default_fred,
        bars_source: Callable[[str, int], list[Bar]] | None = None,
        macro_params: MacroParams | None = None,
        hmm_params: HmmParams | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fred_dir = fred_dir
        self.cache_dir = cache_dir
        self.cache_ttl_s = cache_ttl_s
        self.fred_factory = fred_factory
        self.bars_source = bars_source or csv_daily_bars(shared_data_dir())
        self.macro_params = macro_params or MacroParams()
        self.hmm_params = hmm_params or HmmParams()
        self.clock = clock
        self._api_cache: dict[str, tuple[float, FredSeries]] = {}
        self._csv_cache: dict[Path, tuple[int, FredSeries]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RegimeActivities:
        lags = {**DEFAULT_LAG_DAYS, **settings.macro_lag_days}
        kwargs: dict[str, Any] = {
            "fred_dir": settings.fred_dir or shared_data_dir(),
            "cache_dir": settings.home / "cache",
            "cache_ttl_s": settings.macro_cache_hours * 3600,
            "macro_params": MacroParams(lag_days=lags),
            "hmm_params": HmmParams(
                min_days=settings.hmm_min_days,
                n_init=settings.hmm_n_init,
                seed=settings.hmm_seed,
                bic_sample_divisor=settings.hmm_bic_sample_divisor,
            ),
        }
        return cls(**{**kwargs, **overrides})

    def all(self) -> list:
        return [self.macro_regime, self.crypto_regime]

    # ------------------------------------------------------------ activities

    @activity.defn(name=api.MACRO_REGIME)
    async def macro_regime(self, req: MacroRequest) -> MacroRegime:
        """SPEC §6 macro quadrant at ``req.as_of_ms``; "unknown" (1.0, 1.0) on any failure."""
        return await asyncio.to_thread(self.compute_macro, req)

    @activity.defn(name=api.CRYPTO_REGIME)
    async def crypto_regime(self, req: CryptoRegimeRequest) -> CryptoRegime:
        """SPEC §6 HMM regime at ``req.as_of_ms``, fitted in a thread (numpy off the loop)."""
        return await asyncio.to_thread(self.compute_crypto, req)

    # ------------------------------------------------------------ macro

    def compute_macro(self, req: MacroRequest) -> MacroRegime:
        key = os.environ.get(FRED_KEY_ENV) or None
        params = req.params or self.macro_params
        try:
            if key:
                series, notes = self._fetch_api(key)
                source = "fred-api"
            else:
                series, notes = self._read_csv()
                source = f"csv:{self.fred_dir}" if self.fred_dir else "csv"
            regime = macro_regime(series, req.as_of_ms, params, source=source)
        except Exception as exc:  # never let a regime stall the workflow
            reason = f"macro regime failed: {type(exc).__name__}: {scrub(str(exc), key)[:200]}"
            log.warning(reason)
            return unknown_regime(req.as_of_ms, reason)
        if notes:
            regime = regime.model_copy(update={"notes": [*notes, *regime.notes]})
            if regime.reason:
                regime = regime.model_copy(
                    update={"reason": f"{regime.reason}; {'; '.join(notes)}"}
                )
        log.info(
            "macro regime %s (growth %s, inflation %s) from %s, missing %s",
            regime.quadrant,
            regime.growth_direction,
            regime.inflation_direction,
            regime.source,
            regime.missing or "none",
        )
        return regime

    def _fetch_api(self, key: str) -> tuple[dict[str, FredSeries], list[str]]:
        now = self.clock()
        out: dict[str, FredSeries] = {}
        notes: list[str] = []
        client: FredLike | None = None
        for sid in SERIES_IDS:
            cached = self._api_cache.get(sid) or self._load_disk(sid)
            if cached and now - cached[0] < self.cache_ttl_s:
                out[sid] = cached[1]
                continue
            try:
                if client is None:
                    client = self.fred_factory(key)
                data = client.get_series(sid, observation_start=FRED_HISTORY_START)
                series = series_from_pandas(sid, data)
                if not series.observations:
                    raise ValueError("empty series")
            except Exception as exc:  # the client's message may carry the request URL
                note = (
                    f"{sid}: FRED fetch failed ({type(exc).__name__}: {scrub(str(exc), key)[:160]})"
                )
                if cached:
                    note += "; using the copy cached earlier"
                    out[sid] = cached[1]
                notes.append(note)
                continue
            self._api_cache[sid] = (now, series)
            self._save_disk(sid, now, series)
            out[sid] = series
        return out, notes

    def _cache_path(self, sid: str) -> Path | None:
        return self.cache_dir / f"fred_{sid}.json" if self.cache_dir else None

    def _load_disk(self, sid: str) -> tuple[float, FredSeries] | None:
        path = self._cache_path(sid)
        if path is None or not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            entry = (float(raw["fetched_at"]), FredSeries.model_validate(raw["series"]))
        except Exception as exc:  # a corrupt cache is only a miss
            log.warning("ignoring FRED cache %s: %s", path, type(exc).__name__)
            return None
        self._api_cache[sid] = entry
        return entry

    def _save_disk(self, sid: str, fetched_at: float, series: FredSeries) -> None:
        path = self._cache_path(sid)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            payload = {"fetched_at": fetched_at, "series": series.model_dump(mode="json")}
            tmp.write_text(json.dumps(payload))
            tmp.replace(path)  # atomic: a crash never leaves half a file
        except OSError as exc:
            log.warning("could not write FRED cache %s: %s", path, exc)

    def _read_csv(self) -> tuple[dict[str, FredSeries], list[str]]:
        if self.fred_dir is None:
            return {}, ["no FRED_API_KEY and no FRED CSV folder (OCW_FRED_DIR)"]
        out: dict[str, FredSeries] = {}
        notes: list[str] = []
        for sid in SERIES_IDS:
            path = Path(self.fred_dir) / f"fred_{sid}.csv"
            if not path.is_file():
                path = Path(self.fred_dir) / f"{sid}.csv"
            try:
                mtime = path.stat().st_mtime_ns
                cached = self._csv_cache.get(path)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, load_fred_csv(path, sid))
                    self._csv_cache[path] = cached
                out[sid] = cached[1]
            except (OSError, ValueError) as exc:
                notes.append(f"{sid}: {type(exc).__name__}: {str(exc)[:160]}")
        return out, notes

    # ------------------------------------------------------------ crypto

    def compute_crypto(self, req: CryptoRegimeRequest) -> CryptoRegime:
        params = req.params or self.hmm_params
        try:
            bars = req.bars or self.bars_source(req.symbol, req.as_of_ms)
            daily = daily_bars(bars)
        except Exception as exc:
            reason = f"no daily bars for {req.symbol}: {type(exc).__name__}: {str(exc)[:160]}"
            log.warning(reason)
            return CryptoRegime(symbol=req.symbol, as_of_ms=req.as_of_ms, reason=reason)
        regime = crypto_regime(daily, req.as_of_ms, params, symbol=req.symbol)
        log.info(
            "crypto regime %s (%d states, p=%s) over %d days",
            regime.label,
            regime.n_states,
            regime.state_probability,
            regime.n_days,
        )
        return regime
