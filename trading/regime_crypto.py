"""Crypto volatility regime (SPEC §6): a Gaussian HMM on BTC daily features.

Features per day: log return of the close, 14-day realised volatility (population σ of the
last 14 log returns) and the 14-day dispersion of that volatility (σ of the last 14 vol
values). They are standardised with the fit window's own mean and σ, then a full-covariance
GaussianHMM is fitted for 2, 3 and 4 states (several seeded initialisations each) and the
state count with the lowest BIC wins. States are labelled by their mean volatility, low first.

Point-in-time: only bars that closed at or before ``as_of_ms`` are used.

The fits run in activities. The module itself imports only the standard library and pydantic
at load time (numpy, hmmlearn and the resampler are imported inside the functions that need
them), so workflow code may import the request and result models from here.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from trading.models import Bar, Model

if TYPE_CHECKING:
    import numpy as np

VOL_WINDOW = 14
DISPERSION_WINDOW = 14
MIN_DAYS = 120  # fewer usable days than this → "unknown"
STATE_COUNTS: tuple[int, ...] = (2, 3, 4)
LABELS: dict[int, tuple[str, ...]] = {
    1: ("low",),
    2: ("low", "high"),
    3: ("low", "mid", "high"),
    4: ("low", "mid", "high", "extreme"),
}
DAY_MS = 86_400_000
ANNUALISE = math.sqrt(365.0)  # crypto trades every day

log = logging.getLogger(__name__)


class HmmParams(Model):
    state_counts: list[int] = Field(default_factory=lambda: list(STATE_COUNTS))
    n_init: int = Field(default=3, ge=1)
    n_iter: int = Field(default=200, ge=1)
    tol: float = Field(default=1e-3, gt=0)
    min_covar: float = Field(default=1e-3, gt=0)
    seed: int = 7
    min_days: int = Field(default=MIN_DAYS, ge=30)
    min_state_share: float = Field(default=0.02, ge=0, lt=0.5)  # smaller states: degenerate
    max_days: int | None = Field(default=None, ge=30)  # fit on the last N days only
    # Overlapping windows: each day's 14-day vol shares 13 of its 14 returns with the day
    # before, so n days carry about n/14 independent observations. BIC uses the composite
    # likelihood LL/m and n/m with m = this divisor; 1.0 gives the textbook BIC.
    bic_sample_divisor: float = Field(default=float(VOL_WINDOW), ge=1.0)


class CryptoRegimeRequest(Model):
    """Input of the crypto regime activity. Without ``bars`` the activity loads them itself
    (keeps ~1,000 daily bars out of workflow history)."""

    as_of_ms: int
    symbol: str = "BTC/USDT"
    bars: list[Bar] = Field(default_factory=list)  # daily, or 1h/4h to be resampled
    params: HmmParams | None = None


class RegimeStateInfo(Model):
    label: str
    mean_vol: float  # annualised realised volatility (0.5 = 50 %/yr)
    share: float  # share of fitted days decoded in this state


class CryptoRegime(Model):
    """The HMM's verdict at ``as_of_ms``; ``label`` "unknown" comes with a ``reason``."""

    symbol: str = "BTC/USDT"
    label: str = "unknown"
    n_states: int = 0
    bic: dict[int, float] = Field(default_factory=dict)
    states: list[RegimeStateInfo] = Field(default_factory=list)
    state_probability: float | None = None
    current_vol: float | None = None  # annualised 14-day realised vol on the last day
    fitted_through_ms: int | None = None
    n_days: int = 0
    as_of_ms: int
    reason: str | None = None


# ---------------------------------------------------------------- bars and features


def daily_bars(bars: Sequence[Bar]) -> list[Bar]:
    """Daily (UTC) bars from 1h / 4h / 1d bars of one symbol; incomplete days are dropped."""
    if not bars:
        return []
    closed = sorted((b for b in bars if b.closed), key=lambda b: b.open_time)
    if closed and closed[0].interval == "1d":
        return closed
    from trading.market_data import resample

    return resample(closed, "1d")


def bars_until(bars: Sequence[Bar], as_of_ms: int) -> list[Bar]:
    """Closed bars that closed at or before ``as_of_ms``, oldest first."""
    return sorted(
        (b for b in bars if b.closed and b.close_time <= as_of_ms), key=lambda b: b.open_time
    )


def _rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Population σ over each full trailing window; NaN before the first full one."""
    import numpy as np

    out = np.full(x.shape, np.nan)
    if len(x) >= window:
        w = np.lib.stride_tricks.sliding_window_view(x, window)
        out[window - 1 :] = w.std(axis=1)
    return out


def features(closes: np.ndarray) -> np.ndarray:
    """Rows [log return, 14-day vol, 14-day vol dispersion] for every day where all exist."""
    import numpy as np

    r = np.diff(np.log(closes))
    vol = _rolling_std(r, VOL_WINDOW)
    disp = np.full(r.shape, np.nan)
    first = VOL_WINDOW - 1
    disp[first:] = _rolling_std(vol[first:], DISPERSION_WINDOW)
    x = np.column_stack([r, vol, disp])
    return x[~np.isnan(x).any(axis=1)]


# ---------------------------------------------------------------- model selection


def n_free_params(k: int, d: int) -> int:
    """Full-covariance Gaussian HMM: startprob k-1, transmat k(k-1), means k·d, covars k·d(d+1)/2."""
    return (k - 1) + k * (k - 1) + k * d + k * d * (d + 1) // 2


def bic(log_likelihood: float, k: int, d: int, n: int, divisor: float = 1.0) -> float:
    """-2·LL/m + p·ln(n/m): textbook BIC for m = 1; m > 1 for serially overlapping features."""
    m = max(1.0, divisor)
    return -2.0 * log_likelihood / m + n_free_params(k, d) * math.log(max(n / m, 2.0))


def _fit_one(x: np.ndarray, k: int, seed: int, p: HmmParams):
    import numpy as np
    from hmmlearn.hmm import GaussianHMM

    model = GaussianHMM(
        n_components=k,
        covariance_type="full",
        n_iter=p.n_iter,
        tol=p.tol,
        min_covar=p.min_covar,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x)
    ll = float(model.score(x))
    if not math.isfinite(ll):
        raise ValueError("non-finite log-likelihood")
    for cov in model.covars_:
        if not np.all(np.isfinite(cov)) or np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError("degenerate covariance")
    states = model.predict(x)
    shares = np.bincount(states, minlength=k) / len(states)
    if shares.min() < p.min_state_share:
        raise ValueError(f"a state holds {shares.min():.1%} of the days")
    return model, ll, states


def _best_fit(x: np.ndarray, k: int, p: HmmParams):
    best = None
    errors: list[str] = []
    for i in range(p.n_init):
        try:
            model, ll, states = _fit_one(x, k, p.seed + 1000 * k + i, p)
        except Exception as exc:  # non-convergence, singular matrices, empty states
            errors.append(f"{type(exc).__name__}: {exc!s:.80}")
            continue
        if best is None or ll > best[1]:
            best = (model, ll, states)
    return best, errors


# ---------------------------------------------------------------- the regime


def _unknown(as_of_ms: int, symbol: str, n_days: int, reason: str, through: int | None = None):
    return CryptoRegime(
        symbol=symbol, as_of_ms=as_of_ms, n_days=n_days, reason=reason, fitted_through_ms=through
    )


def crypto_regime(
    bars: Sequence[Bar],
    as_of_ms: int,
    params: HmmParams | None = None,
    symbol: str | None = None,
) -> CryptoRegime:
    """The volatility regime at ``as_of_ms`` from bars that closed by then. Never raises.

    Daily bars are used as they are; 1h/4h bars of one symbol are resampled to UTC days first.
    """
    p = params or HmmParams()
    sym = symbol or (bars[0].symbol if bars else "BTC/USDT")
    try:
        return _crypto_regime(bars, as_of_ms, p, sym)[0]
    except Exception as exc:  # a regime is advisory: a failure must not stall a workflow
        log.warning("crypto regime fit failed: %s", exc)
        return _unknown(as_of_ms, sym, 0, f"fit failed: {type(exc).__name__}: {exc!s:.120}")


@dataclass(frozen=True)
class HmmFit:
    """A fitted model with what is needed to label later days the same way (reports)."""

    regime: CryptoRegime
    model: Any  # hmmlearn GaussianHMM
    mean: Any  # feature means and σ of the fit window (standardisation)
    std: Any
    label_of: dict[int, str]
    days: list[tuple[int, str]]  # Viterbi label of every fitted day (day close ms, label)


def _crypto_regime(
    bars: Sequence[Bar], as_of_ms: int, p: HmmParams, sym: str
) -> tuple[CryptoRegime, HmmFit | None]:
    import numpy as np
    from threadpoolctl import threadpool_limits

    daily = daily_bars(bars_until(bars, as_of_ms))  # 1h/4h bars are resampled to UTC days
    if p.max_days is not None:
        daily = daily[-(p.max_days + VOL_WINDOW + DISPERSION_WINDOW) :]
    through = daily[-1].close_time if daily else None
    closes = np.array([b.close for b in daily], dtype=float)
    raw = features(closes) if len(closes) > 1 else np.empty((0, 3))
    if len(raw) < p.min_days:
        reason = f"{len(raw)} usable days of daily bars before as_of (need {p.min_days})"
        return _unknown(as_of_ms, sym, len(raw), reason, through), None
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    if np.any(std <= 0):
        reason = "a feature is constant: nothing to fit"
        return _unknown(as_of_ms, sym, len(raw), reason, through), None
    x = (raw - mean) / std
    n, d = x.shape
    fits: dict[int, tuple] = {}
    bics: dict[int, float] = {}
    notes: list[str] = []
    for k in sorted(set(p.state_counts)):
        if k < 1 or n_free_params(k, d) >= n:
            continue
        # 3x3 matrices: BLAS threads only fight over the cores (10x slower under load)
        with threadpool_limits(limits=1):
            best, errors = _best_fit(x, k, p)
        if best is None:
            notes.append(f"k={k}: {errors[-1] if errors else 'no fit'}")
            continue
        fits[k] = best
        bics[k] = round(bic(best[1], k, d, n, p.bic_sample_divisor), 4)
    if not fits:
        return _unknown(as_of_ms, sym, n, "no HMM fit: " + "; ".join(notes), through), None
    k = min(bics, key=lambda c: (bics[c], c))
    model, _, states = fits[k]
    vol_means = model.means_[:, 1] * std[1] + mean[1]  # back to daily σ units
    order = np.argsort(vol_means)  # state indices, lowest vol first
    labels = LABELS.get(k) or tuple(f"state{i}" for i in range(k))
    label_of = {int(s): labels[rank] for rank, s in enumerate(order)}
    shares = np.bincount(states, minlength=k) / n
    proba = model.predict_proba(x)[-1]  # last day: smoothed = filtered, no future data
    current = int(np.argmax(proba))
    regime = CryptoRegime(
        symbol=sym,
        label=label_of[current],
        n_states=k,
        bic=bics,
        states=[
            RegimeStateInfo(
                label=label_of[int(s)],
                mean_vol=round(float(max(vol_means[s], 0.0)) * ANNUALISE, 6),
                share=round(float(shares[s]), 6),
            )
            for s in order
        ],
        state_probability=round(float(proba[current]), 6),
        current_vol=round(float(raw[-1, 1]) * ANNUALISE, 6),
        fitted_through_ms=through,
        n_days=n,
        as_of_ms=as_of_ms,
        reason=None,
    )
    closes_ms = [b.close_time for b in daily][-n:]
    days = [(t, label_of[int(s)]) for t, s in zip(closes_ms, states, strict=True)]
    return regime, HmmFit(regime, model, mean, std, label_of, days)


def fit_hmm(
    bars: Sequence[Bar], as_of_ms: int, params: HmmParams | None = None
) -> tuple[CryptoRegime, HmmFit | None]:
    """The regime and, unless it is unknown, the fit itself. Never raises."""
    p = params or HmmParams()
    sym = bars[0].symbol if bars else "BTC/USDT"
    try:
        return _crypto_regime(bars, as_of_ms, p, sym)
    except Exception as exc:
        return _unknown(as_of_ms, sym, 0, f"fit failed: {type(exc).__name__}: {exc!s:.120}"), None


def filtered_labels(
    fit: HmmFit, bars: Sequence[Bar], start_ms: int, end_ms: int
) -> list[tuple[int, str]]:
    """Labels of the daily bars closing in (start_ms, end_ms] under ``fit``, each from data up
    to that day only (forward filter, fit-window standardisation): what a model fitted at
    ``start_ms`` would have said on each later day without refitting."""
    import numpy as np

    daily = daily_bars(bars_until(bars, end_ms))
    raw = features(np.array([b.close for b in daily], dtype=float))
    closes_ms = [b.close_time for b in daily][-len(raw) :] if len(raw) else []
    x = (raw - fit.mean) / fit.std
    out: list[tuple[int, str]] = []
    for j, t in enumerate(closes_ms):
        if t <= start_ms:
            continue
        lo = max(0, j + 1 - 400)  # the filter forgets: 400 days of context are plenty
        proba = fit.model.predict_proba(x[lo : j + 1])[-1]
        out.append((t, fit.label_of[int(np.argmax(proba))]))
    return out


def decode_labels(
    bars: Sequence[Bar], as_of_ms: int, params: HmmParams | None = None
) -> tuple[CryptoRegime, list[tuple[int, str]]]:
    """The regime at ``as_of_ms`` plus the Viterbi label of every fitted day (close ms, label).

    For reports and tests: which stretch of history each state covers. Never raises.
    """
    regime, fit = fit_hmm(bars, as_of_ms, params)
    return regime, (fit.days if fit else [])
