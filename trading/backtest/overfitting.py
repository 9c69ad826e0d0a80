"""Multiple-testing-aware evaluation of a strategy search: is the winner better than luck?

A grid or walk-forward search reports its best configuration, and the best of many noisy
trials always looks good: the maximum of N Sharpe ratios grows with N even when no trial has
any edge. The figures here correct for the search, so they are only as honest as the count of
trials fed to them: every configuration tried (including discarded grids and reruns) counts.

* Probabilistic Sharpe ratio (PSR): the probability that the true Sharpe ratio beats a
  benchmark, given the sample length and the returns' skew and kurtosis.
  Bailey, D. H. and López de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier",
  Journal of Risk 15(2).
* Deflated Sharpe ratio (DSR): the PSR against the Sharpe ratio the best of N trials would
  reach by luck alone. Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe
  Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality",
  Journal of Portfolio Management 40(5).
* Probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation
  (CSCV): how often the in-sample best trial ranks in the bottom half out of sample. A PBO near
  0.5 or above means the selection is noise (or worse). Bailey, D. H., Borwein, J.,
  López de Prado, M. and Zhu, Q. J. (2017), "The Probability of Backtest Overfitting",
  Journal of Computational Finance 20(4) (working paper 2013/2015).

Units: every Sharpe ratio here is *per period* (mean / sample standard deviation of the
per-period returns, ddof=1, risk-free rate 0), not annualised, because the formulas' standard
errors are in observations. ``DeflatedSharpe.sharpe_annualised`` alone is annualised by
sqrt(365), as in ``trading/backtest/metrics.py``. Kurtosis is the plain (non-excess) fourth
standardised moment: 3 for normal returns.

Pure numpy and stdlib (the normal CDF and its inverse are implemented here, no scipy).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from trading.models import Model

EULER_GAMMA = 0.5772156649015329
PERIODS_PER_YEAR = 365.0  # crypto trades every day (as metrics.py)
FLAT = 1e-12  # a deviation below this is float noise: the Sharpe ratio is reported as 0
_CHUNK = 4096  # CSCV combinations evaluated at once (bounds memory at ~chunk x N floats)

Metric = Callable[[np.ndarray], np.ndarray]

# ------------------------------------------------------------------ normal distribution

# Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9),
# polished below by one Halley step (a Newton-type step) to near machine precision.
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (
    7.784695709041462e-03,
    3.224671290700398e-01,
    2.445134137142996e00,
    3.754408661907416e00,
)
_P_LOW = 0.02425


def _poly(coefs: Sequence[float], x: float) -> float:
    out = 0.0
    for c in coefs:
        out = out * x + c
    return out


def norm_cdf(x: float) -> float:
    """Standard normal CDF Φ(x) (erfc keeps the lower tail accurate)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Inverse standard normal CDF Φ⁻¹(p) for 0 < p < 1."""
    if not (0.0 < p < 1.0):
        raise ValueError(f"norm_ppf needs 0 < p < 1, got {p}")
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = _poly(_C, q) / (_poly(_D, q) * q + 1.0)
    elif p > 1.0 - _P_LOW:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -_poly(_C, q) / (_poly(_D, q) * q + 1.0)
    else:
        q = p - 0.5
        r = q * q
        x = _poly(_A, r) * q / (_poly(_B, r) * r + 1.0)
    e = norm_cdf(x) - p
    u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    return x - u / (1.0 + 0.5 * x * u)


# ------------------------------------------------------------------ Sharpe statistics


def _check_finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """P(true Sharpe > ``sr_benchmark``) given an observed per-period Sharpe ``sr``.

    PSR = Φ((SR − SR*)·sqrt(n − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4·SR²)), with ``sr`` and
    ``sr_benchmark`` per period (not annualised), ``n_obs`` the number of returns behind
    ``sr``, ``skew`` γ3 and ``kurtosis`` γ4 the non-excess kurtosis (3 for normal returns).
    """
    _check_finite("sr, sr_benchmark, skew and kurtosis", sr, sr_benchmark, skew, kurtosis)
    if n_obs < 2:
        raise ValueError(f"PSR needs at least 2 observations, got {n_obs}")
    if kurtosis < 1.0:
        raise ValueError(f"kurtosis is non-excess and at least 1, got {kurtosis}")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not var > 0.0:
        raise ValueError(
            f"inconsistent moments (skew {skew}, kurtosis {kurtosis}, Sharpe {sr}): the "
            "Sharpe estimate's variance is not positive (kurtosis must exceed 1 + skew²)"
        )
    return norm_cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var))


def expected_max_sharpe(n_trials: int, var_of_trial_sharpes: float) -> float:
    """Expected maximum of ``n_trials`` per-period Sharpe ratios that have no true edge.

    E[max SR] ≈ sqrt(V)·((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))), γ the Euler–Mascheroni
    constant, V the variance of the trials' Sharpe ratios (same units as the ratios).
    One trial is no search: 0.
    """
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials}")
    _check_finite("var_of_trial_sharpes", var_of_trial_sharpes)
    if var_of_trial_sharpes < 0:
        raise ValueError(f"var_of_trial_sharpes must be >= 0, got {var_of_trial_sharpes}")
    n = int(n_trials)
    if n == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * norm_ppf(1.0 - 1.0 / n) + EULER_GAMMA * norm_ppf(
        1.0 - 1.0 / (n * math.e)
    )
    return math.sqrt(var_of_trial_sharpes) * z


def column_sharpes(performance: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ratio of each column of a (T, N) return matrix (flat column: 0).

    Use it to build ``trial_sharpes`` for :func:`deflated_sharpe_ratio` in the right units.
    """
    perf = np.asarray(performance, dtype=float)
    if perf.ndim == 1:
        perf = perf[:, None]
    if perf.ndim != 2 or perf.shape[0] < 2:
        raise ValueError("column_sharpes needs a (T, N) matrix with T >= 2")
    mean = perf.mean(axis=0)
    sd = perf.std(axis=0, ddof=1)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > FLAT)


class DeflatedSharpe(Model):
    sharpe: float  # per period
    sharpe_annualised: float  # sqrt(365)
    n_obs: int
    skew: float
    kurtosis: float  # non-excess (normal: 3)
    n_trials: int
    var_trial_sharpes: float  # per-period Sharpe ratios' variance across the trials
    sr_benchmark: float  # per period: the expected best Sharpe of n_trials lucky trials
    psr_vs_zero: float  # PSR against 0: what a single, unsearched test would claim
    dsr: float  # PSR against sr_benchmark


def _moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe (ddof=1), skew and non-excess kurtosis (population moments)."""
    mean = float(returns.mean())
    dev = returns - mean
    m2 = float(np.mean(dev**2))
    sd = float(returns.std(ddof=1))
    if sd <= FLAT:
        raise ValueError("returns have no variance: their Sharpe ratio is undefined")
    skew = float(np.mean(dev**3)) / m2**1.5
    kurt = float(np.mean(dev**4)) / m2**2
    return mean / sd, skew, kurt


def _trial_stats(
    trial_sharpes: Sequence[float] | np.ndarray | None,
    n_trials: int | None,
    var_trial_sharpes: float | None,
) -> tuple[int, float]:
    if trial_sharpes is not None:
        if n_trials is not None or var_trial_sharpes is not None:
            raise ValueError("give trial_sharpes or (n_trials, var_trial_sharpes), not both")
        srs = np.asarray(trial_sharpes, dtype=float).ravel()
        if len(srs) < 1:
            raise ValueError("n_trials must be >= 1 (trial_sharpes is empty)")
        if not np.all(np.isfinite(srs)):
            raise ValueError("trial_sharpes must be finite")
        return len(srs), float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0
    if n_trials is None or var_trial_sharpes is None:
        raise ValueError("give trial_sharpes or both n_trials and var_trial_sharpes")
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials}")
    _check_finite("var_trial_sharpes", var_trial_sharpes)
    if var_trial_sharpes < 0:
        raise ValueError(f"var_trial_sharpes must be >= 0, got {var_trial_sharpes}")
    return int(n_trials), float(var_trial_sharpes)


def deflated_sharpe_ratio(
    returns: Sequence[float] | np.ndarray,
    trial_sharpes: Sequence[float] | np.ndarray | None = None,
    *,
    n_trials: int | None = None,
    var_trial_sharpes: float | None = None,
) -> DeflatedSharpe:
    """DSR of the chosen configuration's per-period (daily) ``returns``.

    The search is described either by ``trial_sharpes``, the per-period Sharpe ratios of every
    trial (the chosen one included; see :func:`column_sharpes`), or by ``n_trials`` and
    ``var_trial_sharpes`` (their variance, per-period units). Annualised Sharpe ratios here
    would inflate the benchmark by sqrt(365): pass per-period ones.
    """
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError("returns must be one-dimensional")
    if len(r) < 3:
        raise ValueError(f"DSR needs at least 3 returns, got {len(r)}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns must be finite")
    n, var = _trial_stats(trial_sharpes, n_trials, var_trial_sharpes)
    sr, skew, kurt = _moments(r)
    benchmark = expected_max_sharpe(n, var)
    return DeflatedSharpe(
        sharpe=sr,
        sharpe_annualised=sr * math.sqrt(PERIODS_PER_YEAR),
        n_obs=len(r),
        skew=skew,
        kurtosis=kurt,
        n_trials=n,
        var_trial_sharpes=var,
        sr_benchmark=benchmark,
        psr_vs_zero=probabilistic_sharpe_ratio(sr, 0.0, len(r), skew, kurt),
        dsr=probabilistic_sharpe_ratio(sr, benchmark, len(r), skew, kurt),
    )


# ------------------------------------------------------------------ CSCV / PBO


class LogitSummary(Model):
    """Distribution of λ = logit of the IS-best trial's relative OOS rank across combinations."""

    mean: float
    std: float
    min: float
    q05: float
    q25: float
    median: float
    q75: float
    q95: float
    max: float


class PBOResult(Model):
    metric: str
    n_obs: int  # rows used (after dropping the earliest leftover rows)
    n_dropped: int  # earliest rows dropped so that the blocks are equal
    n_trials: int
    n_splits: int
    block_size: int
    n_combinations: int
    pbo: float  # share of combinations with λ <= 0
    prob_oos_loss: float  # share where the IS-best trial's OOS metric is < 0
    logit: LogitSummary
    degradation_slope: float  # OOS metric of the IS-best regressed on its IS metric
    degradation_intercept: float
    degradation_r2: float


class CSCVDraws(Model):
    """Per-combination raw figures behind a :class:`PBOResult` (one entry per combination)."""

    best: list[int]  # IS-best trial (ties: the lowest index)
    is_metric: list[float]  # its in-sample metric
    oos_metric: list[float]  # its out-of-sample metric
    logits: list[float]  # λ of its OOS relative rank


def _validate_performance(performance: np.ndarray, n_splits: int) -> np.ndarray:
    perf = np.asarray(performance, dtype=float)
    if perf.ndim != 2:
        raise ValueError(f"performance must be a (T, N) matrix, got shape {perf.shape}")
    if isinstance(n_splits, bool) or int(n_splits) != n_splits:
        raise ValueError(f"n_splits must be an integer, got {n_splits}")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be even and >= 2, got {n_splits}")
    t, n = perf.shape
    if n < 2:
        raise ValueError(f"PBO needs at least 2 trials (columns), got {n}")
    if t < 2 * n_splits:
        raise ValueError(f"PBO needs T >= 2 * n_splits = {2 * n_splits} rows, got {t}")
    if not np.all(np.isfinite(perf)):
        raise ValueError("performance must be finite")
    return perf


def _combinations(n_splits: int) -> np.ndarray:
    """(C, S) 0/1 indicator of the in-sample blocks of every C(S, S/2) combination."""
    idx = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)), dtype=np.intp)
    mask = np.zeros((len(idx), n_splits))
    np.put_along_axis(mask, idx, 1.0, axis=1)
    return mask


def _sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, mu: np.ndarray, n: int) -> np.ndarray:
    """Sharpe of columns from sums of centred returns (s1) and their squares (s2)."""
    mean = mu + s1 / n
    var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
    sd = np.sqrt(var)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > FLAT)


def _vectorised_metrics(
    blocks: np.ndarray, mask: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """IS and OOS metrics, (C, N) each, from block sums: a matrix product per moment."""
    s, m, _ = blocks.shape
    half = m * s // 2
    mu = blocks.reshape(s * m, -1).mean(axis=0)
    centred = blocks - mu
    b1 = centred.sum(axis=1)
    b2 = (centred * centred).sum(axis=1)
    t1, t2 = b1.sum(axis=0), b2.sum(axis=0)
    is1, is2 = mask @ b1, mask @ b2
    os1, os2 = t1 - is1, t2 - is2
    if metric == "mean":
        return mu + is1 / half, mu + os1 / half
    return _sharpe_from_sums(is1, is2, mu, half), _sharpe_from_sums(os1, os2, mu, half)


def _callable_metrics(
    blocks: np.ndarray, mask: np.ndarray, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """IS and OOS metrics by calling ``metric`` on the rows of each half (slow path)."""
    n = blocks.shape[2]
    is_m = np.empty((len(mask), n))
    oos_m = np.empty((len(mask), n))
    for c, row in enumerate(mask.astype(bool)):
        for out, sel in ((is_m, row), (oos_m, ~row)):
            values = np.asarray(metric(blocks[sel].reshape(-1, n)), dtype=float)
            if values.shape != (n,) or not np.all(np.isfinite(values)):
                raise ValueError(f"metric must return {n} finite values, one per trial")
            out[c] = values
    return is_m, oos_m


def _best_and_logits(
    is_m: np.ndarray, oos_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IS-best trial per combination, its IS and OOS metric, and λ of its OOS rank.

    Ties: the IS-best is the lowest index among equals; its OOS rank (1 = worst, N = best) is
    the mid-rank among the trials it ties with, so ω = rank/(N + 1) is always in (0, 1).
    """
    rows = np.arange(len(is_m))
    best = np.argmax(is_m, axis=1)
    best_is = is_m[rows, best]
    best_oos = oos_m[rows, best]
    below = (oos_m < best_oos[:, None]).sum(axis=1)
    equal = (oos_m == best_oos[:, None]).sum(axis=1)  # includes the trial itself
    rank = below + (equal + 1) / 2.0
    omega = rank / (is_m.shape[1] + 1)
    return best, best_is, best_oos, np.log(omega / (1.0 - omega))


def _cscv(
    performance: np.ndarray, n_splits: int, metric: str | Metric
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    perf = _validate_performance(performance, n_splits)
    s = int(n_splits)
    t, n = perf.shape
    m = t // s
    blocks = perf[t - m * s :].reshape(s, m, n)
    mask = _combinations(s)
    if callable(metric):
        parts = [_best_and_logits(*_callable_metrics(blocks, mask, metric))]
    elif metric in ("sharpe", "mean"):
        parts = [
            _best_and_logits(*_vectorised_metrics(blocks, mask[i : i + _CHUNK], metric))
            for i in range(0, len(mask), _CHUNK)
        ]
    else:
        raise ValueError(f'metric must be "sharpe", "mean" or a callable, got {metric!r}')
    best, best_is, best_oos, logits = (np.concatenate(p) for p in zip(*parts, strict=True))
    return best, best_is, best_oos, logits


def cscv_draws(
    performance: np.ndarray, n_splits: int = 16, metric: str | Metric = "sharpe"
) -> CSCVDraws:
    """Combinatorially symmetric cross-validation of a (T, N) matrix of per-period returns.

    Rows are split into ``n_splits`` (S) contiguous blocks of equal size; when T is not a
    multiple of S the earliest T mod S rows are dropped (the recent past is kept). Every
    combination of S/2 blocks is an in-sample set, the other S/2 its out-of-sample set, in
    ``itertools.combinations`` order. ``metric``: "sharpe" (per-period, ddof=1, flat column
    0), "mean" (mean per-period return) or a callable mapping a (t, N) matrix to N values
    (called twice per combination: slower).
    """
    best, best_is, best_oos, logits = _cscv(performance, n_splits, metric)
    return CSCVDraws(
        best=best.tolist(),
        is_metric=best_is.tolist(),
        oos_metric=best_oos.tolist(),
        logits=logits.tolist(),
    )


def _summarise(logits: np.ndarray) -> LogitSummary:
    q = np.quantile(logits, [0.05, 0.25, 0.5, 0.75, 0.95])
    return LogitSummary(
        mean=float(logits.mean()),
        std=float(logits.std()),
        min=float(logits.min()),
        q05=float(q[0]),
        q25=float(q[1]),
        median=float(q[2]),
        q75=float(q[3]),
        q95=float(q[4]),
        max=float(logits.max()),
    )


def _regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R² of y on x (flat x or y: slope 0 / R² 0)."""
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    tiny = FLAT * FLAT * len(x)
    if sxx <= tiny:
        return 0.0, float(y.mean()), 0.0
    slope = sxy / sxx
    r2 = sxy * sxy / (sxx * syy) if syy > tiny else 0.0
    return slope, float(y.mean()) - slope * float(x.mean()), min(r2, 1.0)


def pbo_cscv(
    performance: np.ndarray, n_splits: int = 16, metric: str | Metric = "sharpe"
) -> PBOResult:
    """Probability of backtest overfitting of choosing the best of N trials by ``metric``.

    ``performance`` is (T, N): the per-period returns of the N trials over the same T
    periods. See :func:`cscv_draws` for the splitting (earliest T mod S rows dropped) and the
    metrics. For each in-sample combination the best trial's relative OOS rank ω (rank/(N+1))
    gives λ = ln(ω/(1 − ω)); PBO is the share of combinations with λ <= 0, i.e. where the
    in-sample winner does no better than the median trial out of sample.
    """
    _, is_m, oos_m, logits = _cscv(performance, n_splits, metric)
    t, n = np.shape(performance)
    s = int(n_splits)
    slope, intercept, r2 = _regression(is_m, oos_m)
    return PBOResult(
        metric=metric if isinstance(metric, str) else getattr(metric, "__name__", "callable"),
        n_obs=t - t % s,
        n_dropped=t % s,
        n_trials=n,
        n_splits=s,
        block_size=t // s,
        n_combinations=len(logits),
        pbo=float(np.mean(logits <= 0.0)),
        prob_oos_loss=float(np.mean(oos_m < 0.0)),
        logit=_summarise(logits),
        degradation_slope=slope,
        degradation_intercept=intercept,
        degradation_r2=r2,
    )
