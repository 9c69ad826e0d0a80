"""Selection-bias statistics (PSR, DSR, CSCV/PBO) on cases with known answers."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from trading.backtest.overfitting import (
    PBOResult,
    column_sharpes,
    cscv_draws,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    norm_cdf,
    norm_ppf,
    pbo_cscv,
    probabilistic_sharpe_ratio,
)

# ------------------------------------------------------------------ normal distribution


@pytest.mark.parametrize(
    ("x", "p"),
    [
        (0.0, 0.5),
        (1.0, 0.8413447460685429),
        (1.96, 0.9750021048517795),
        (-1.6448536269514722, 0.05),
        (3.0, 0.9986501019683699),
        (-5.0, 2.866515718791939e-07),
    ],
)
def test_norm_cdf_matches_tables(x: float, p: float) -> None:
    assert norm_cdf(x) == pytest.approx(p, rel=1e-12)


def test_norm_cdf_of_1_96_is_0_975_to_four_places() -> None:
    assert round(norm_cdf(1.96), 4) == 0.9750


@pytest.mark.parametrize(
    ("p", "x"),
    [
        (0.5, 0.0),
        (0.975, 1.959963984540054),
        (0.95, 1.6448536269514722),
        (0.01, -2.3263478740408408),
        (0.999, 3.090232306167813),
        (1e-9, -5.997807015007686),
    ],
)
def test_norm_ppf_matches_tables(p: float, x: float) -> None:
    assert norm_ppf(p) == pytest.approx(x, rel=1e-12, abs=1e-15)


def test_norm_ppf_inverts_the_cdf_in_every_region() -> None:
    # both tails (p < 0.02425, p > 0.97575) and the central region of Acklam's approximation
    for p in [1e-300, 1e-12, 0.001, 0.02, 0.02425, 0.1, 0.3, 0.7, 0.98, 0.999999]:
        assert norm_cdf(norm_ppf(p)) == pytest.approx(p, rel=1e-12)
    assert norm_ppf(0.2) == pytest.approx(-norm_ppf(0.8), rel=1e-14)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_norm_ppf_refuses_probabilities_outside_0_1(p: float) -> None:
    with pytest.raises(ValueError, match="0 < p < 1"):
        norm_ppf(p)


# ------------------------------------------------------------------ PSR


def test_psr_at_the_benchmark_is_one_half() -> None:
    assert probabilistic_sharpe_ratio(0.1, 0.1, 250, -0.5, 6.0) == pytest.approx(0.5)


def test_psr_matches_a_hand_computed_value() -> None:
    # z = 0.1 * sqrt(100) / sqrt(1 + (3 - 1) / 4 * 0.01) = 1 / sqrt(1.005)
    expected = norm_cdf(1.0 / math.sqrt(1.005))
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(expected)
    assert expected == pytest.approx(0.8407, abs=1e-4)


def test_psr_rises_with_the_number_of_observations() -> None:
    values = [probabilistic_sharpe_ratio(0.05, 0.0, n, 0.0, 3.0) for n in (10, 100, 1000)]
    assert values[0] < values[1] < values[2]
    assert values[2] > 0.94


def test_psr_is_lower_for_negative_skew_and_fat_tails() -> None:
    normal = probabilistic_sharpe_ratio(0.1, 0.0, 500, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 500, -2.0, 3.0) < normal
    assert probabilistic_sharpe_ratio(0.1, 0.0, 500, 0.0, 20.0) < normal


def test_psr_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="non-excess"):
        probabilistic_sharpe_ratio(0.1, 0.0, 100, 0.0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        probabilistic_sharpe_ratio(math.nan, 0.0, 100, 0.0, 3.0)
    with pytest.raises(ValueError, match="inconsistent moments"):
        probabilistic_sharpe_ratio(2.0, 0.0, 100, 1.0, 1.0)


# ------------------------------------------------------------------ expected maximum


def test_expected_max_of_one_trial_is_zero() -> None:
    assert expected_max_sharpe(1, 0.5) == 0.0


def test_expected_max_increases_with_trials_and_variance() -> None:
    by_n = [expected_max_sharpe(n, 1.0) for n in (2, 10, 100, 1000)]
    assert by_n == sorted(by_n) and by_n[0] > 0
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))
    assert expected_max_sharpe(100, 0.0) == 0.0


def test_expected_max_matches_monte_carlo_of_standard_normals() -> None:
    rng = np.random.default_rng(7)
    simulated = float(rng.standard_normal((20_000, 100)).max(axis=1).mean())  # about 2.508
    assert simulated == pytest.approx(2.508, abs=0.02)
    assert expected_max_sharpe(100, 1.0) == pytest.approx(simulated, rel=0.03)
    assert expected_max_sharpe(100, 1.0) == pytest.approx(2.5306, abs=1e-4)


@pytest.mark.parametrize(("n", "v"), [(0, 1.0), (2.5, 1.0), (True, 1.0), (10, -1.0)])
def test_expected_max_refuses_bad_inputs(n: int, v: float) -> None:
    with pytest.raises(ValueError):
        expected_max_sharpe(n, v)


# ------------------------------------------------------------------ DSR

DAYS = 1000
NOISE_SR_VAR = 1.0 / DAYS  # variance of per-period Sharpe estimates of no-edge trials


def test_dsr_reports_moments_and_units() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0.001, 0.01, 5000)
    d = deflated_sharpe_ratio(r, n_trials=1, var_trial_sharpes=0.0)
    assert d.sharpe == pytest.approx(r.mean() / r.std(ddof=1))
    assert d.sharpe_annualised == pytest.approx(d.sharpe * math.sqrt(365))
    assert d.n_obs == 5000 and d.n_trials == 1
    assert d.skew == pytest.approx(0.0, abs=0.1)
    assert d.kurtosis == pytest.approx(3.0, abs=0.2)
    # one trial is no search: nothing to deflate
    assert d.sr_benchmark == 0.0 and d.dsr == d.psr_vs_zero


def test_dsr_keeps_a_strong_genuine_edge() -> None:
    rng = np.random.default_rng(1)
    edge = rng.normal(0.002, 0.01, DAYS)  # per-period Sharpe about 0.2 (3.8 annualised)
    d = deflated_sharpe_ratio(edge, n_trials=100, var_trial_sharpes=NOISE_SR_VAR)
    assert d.sr_benchmark == pytest.approx(math.sqrt(NOISE_SR_VAR) * 2.5306, rel=1e-4)
    assert d.dsr > 0.95
    # the same with the trials' own Sharpe ratios: the edge among 99 noise trials
    noise = rng.normal(0.0, 0.01, (DAYS, 99))
    trials = np.append(column_sharpes(noise), d.sharpe)
    d2 = deflated_sharpe_ratio(edge, trials)
    assert d2.n_trials == 100
    assert d2.var_trial_sharpes == pytest.approx(np.var(trials, ddof=1))
    assert d2.dsr > 0.95


def test_dsr_deflates_the_best_of_200_noise_strategies() -> None:
    # the winner looks significant alone (PSR vs 0 > 0.95) but not once the 200 trials count;
    # the DSR of a pure-noise winner is centred on 0.5 (the benchmark is the expected maximum)
    dsrs = []
    for seed in range(10):
        perf = np.random.default_rng(seed).normal(0.0, 0.01, (DAYS, 200))
        sharpes = column_sharpes(perf)
        d = deflated_sharpe_ratio(perf[:, int(np.argmax(sharpes))], sharpes)
        assert d.n_trials == 200
        assert d.psr_vs_zero > 0.95
        assert d.dsr < 0.95
        dsrs.append(d.dsr)
    assert 0.3 < float(np.mean(dsrs)) < 0.65


def test_dsr_refuses_bad_inputs() -> None:
    good = np.random.default_rng(0).normal(0.0, 0.01, 100)
    with pytest.raises(ValueError, match="at least 3"):
        deflated_sharpe_ratio([0.01, -0.01], n_trials=5, var_trial_sharpes=0.01)
    with pytest.raises(ValueError, match="finite"):
        deflated_sharpe_ratio(np.append(good, np.nan), n_trials=5, var_trial_sharpes=0.01)
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(good, n_trials=0, var_trial_sharpes=0.01)
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(good, [])
    with pytest.raises(ValueError, match="not both"):
        deflated_sharpe_ratio(good, [0.1, 0.2], n_trials=2, var_trial_sharpes=0.01)
    with pytest.raises(ValueError, match="both n_trials"):
        deflated_sharpe_ratio(good, n_trials=5)
    with pytest.raises(ValueError, match="finite"):
        deflated_sharpe_ratio(good, [0.1, math.inf])
    with pytest.raises(ValueError, match="no variance"):
        deflated_sharpe_ratio(np.full(50, 0.001), n_trials=5, var_trial_sharpes=0.01)
    with pytest.raises(ValueError, match="one-dimensional"):
        deflated_sharpe_ratio(np.zeros((10, 2)), n_trials=5, var_trial_sharpes=0.01)


# ------------------------------------------------------------------ CSCV / PBO


def _noise(seed: int, t: int = 800, n: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, (t, n))


def test_pbo_of_pure_noise_is_about_one_half() -> None:
    results = [pbo_cscv(_noise(seed)) for seed in range(8)]
    for r in results:
        assert isinstance(r, PBOResult)
        assert r.n_combinations == 12_870 and r.n_splits == 16 and r.n_trials == 50
        assert 0.15 < r.pbo < 0.85  # one noise matrix varies a lot (sd about 0.15)
    assert 0.35 < float(np.mean([r.pbo for r in results])) < 0.65
    assert abs(float(np.mean([r.logit.mean for r in results]))) < 0.5


def test_pbo_of_a_real_edge_is_near_zero() -> None:
    perf = _noise(11)
    perf[:, 17] += 0.003  # a constant edge: per-period Sharpe about 0.3
    r = pbo_cscv(perf)
    assert r.pbo < 0.1
    assert r.prob_oos_loss < 0.1
    assert r.logit.median == pytest.approx(math.log(50.0))  # the edge ranks first OOS
    assert cscv_draws(perf).best.count(17) == r.n_combinations


def test_pbo_of_an_in_sample_edge_reversed_out_of_sample_is_high() -> None:
    # Every trial's total over the whole sample is zero, so whatever a trial earns in sample
    # it gives back out of sample: the in-sample winner is the out-of-sample loser.
    perf = _noise(5)
    perf -= perf.mean(axis=0)
    r = pbo_cscv(perf)
    assert r.pbo > 0.5
    assert r.prob_oos_loss > 0.9
    assert r.degradation_slope < 0


def test_reversal_gives_exact_answers_with_the_mean_metric() -> None:
    # IS mean = -OOS mean for every trial: the IS-best ranks last OOS (ω = 1/(N+1)) and its
    # OOS metric is minus its IS metric (slope -1, R² 1).
    perf = _noise(6, t=320, n=20)
    perf -= perf.mean(axis=0)
    r = pbo_cscv(perf, n_splits=8, metric="mean")
    assert r.n_combinations == math.comb(8, 4)
    assert r.pbo == 1.0 and r.prob_oos_loss == 1.0
    assert r.logit.max == pytest.approx(math.log(1.0 / 20.0))
    assert r.degradation_slope == pytest.approx(-1.0)
    assert r.degradation_r2 == pytest.approx(1.0)
    assert r.metric == "mean"


def test_two_trials_two_blocks_by_hand() -> None:
    # block 0: trial 0 is better; block 1: trial 1 is better. Each IS winner loses OOS.
    crossing = np.array([[0.02, 0.0], [0.01, -0.01], [0.0, 0.02], [-0.01, 0.01]])
    draws = cscv_draws(crossing, n_splits=2, metric="mean")
    assert draws.best == [0, 1]
    assert draws.logits == pytest.approx([math.log(0.5), math.log(0.5)])  # ω = 1/3
    assert pbo_cscv(crossing, n_splits=2, metric="mean").pbo == 1.0
    # trial 0 better in both blocks: it wins IS and OOS, ω = 2/3, λ = ln 2
    dominant = np.array([[0.02, 0.0], [0.01, -0.01], [0.03, 0.02], [0.02, 0.01]])
    draws = cscv_draws(dominant, n_splits=2, metric="mean")
    assert draws.best == [0, 0]
    assert draws.logits == pytest.approx([math.log(2.0)] * 2)
    assert pbo_cscv(dominant, n_splits=2, metric="mean").pbo == 0.0


def test_vectorised_sharpe_matches_a_brute_force_loop() -> None:
    perf = _noise(9, t=43, n=6)  # 43 = 4 * 10 + 3: the earliest 3 rows are dropped
    s = 4
    blocks = perf[3:].reshape(s, 10, 6)
    draws = cscv_draws(perf, n_splits=s)
    for c, ins in enumerate(itertools.combinations(range(s), s // 2)):
        outs = [b for b in range(s) if b not in ins]
        is_rows = blocks[list(ins)].reshape(-1, 6)
        oos_rows = blocks[outs].reshape(-1, 6)
        is_sr = is_rows.mean(axis=0) / is_rows.std(axis=0, ddof=1)
        oos_sr = oos_rows.mean(axis=0) / oos_rows.std(axis=0, ddof=1)
        best = int(np.argmax(is_sr))
        rank = 1 + int(np.sum(oos_sr < oos_sr[best]))
        assert draws.best[c] == best
        assert draws.is_metric[c] == pytest.approx(is_sr[best], rel=1e-9)
        assert draws.oos_metric[c] == pytest.approx(oos_sr[best], rel=1e-9)
        assert draws.logits[c] == pytest.approx(math.log(rank / (7 - rank)))


def test_a_callable_metric_agrees_with_the_built_in_sharpe() -> None:
    perf = _noise(4, t=200, n=8)
    a = pbo_cscv(perf, n_splits=6)
    b = pbo_cscv(perf, n_splits=6, metric=column_sharpes)
    assert b.metric == "column_sharpes"
    assert b.pbo == a.pbo
    assert b.logit.mean == pytest.approx(a.logit.mean)
    assert b.degradation_slope == pytest.approx(a.degradation_slope)


def test_leftover_rows_are_dropped_from_the_start() -> None:
    perf = _noise(2, t=163, n=10)
    r = pbo_cscv(perf, n_splits=8)
    assert (r.n_obs, r.n_dropped, r.block_size) == (160, 3, 20)
    trimmed = pbo_cscv(perf[3:], n_splits=8)
    assert r.model_dump() == {**trimmed.model_dump(), "n_dropped": 3}
    assert cscv_draws(perf, 8).logits != cscv_draws(perf[:160], 8).logits  # not the end


def test_identical_trials_tie_deterministically_without_warnings() -> None:
    perf = np.repeat(_noise(8, t=64, n=1), 4, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = cscv_draws(perf, n_splits=4)
        r = pbo_cscv(perf, n_splits=4)
    assert set(draws.best) == {0}  # the lowest index wins an IS tie
    assert draws.logits == [0.0] * 6  # mid-rank of four equals: ω = 2.5 / 5
    assert r.pbo == 1.0  # no better than the median: counted as overfit


def test_a_flat_trial_gets_sharpe_zero_without_warnings() -> None:
    perf = _noise(10, t=64, n=3)
    perf[:, 1] = 0.0
    perf[:, 2] = 0.004
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = cscv_draws(perf, n_splits=4)
        r = pbo_cscv(perf, n_splits=4)
        sharpes = column_sharpes(perf)
    assert sharpes[1] == 0.0 and sharpes[2] == 0.0
    assert r.n_combinations == 6 and len(draws.logits) == 6
    assert all(math.isfinite(x) for x in draws.logits)


@pytest.mark.parametrize(
    ("perf", "splits", "match"),
    [
        (np.zeros(100), 4, "matrix"),
        (np.zeros((100, 1)), 4, "at least 2 trials"),
        (np.zeros((100, 3)), 5, "even"),
        (np.zeros((100, 3)), 0, "even"),
        (np.zeros((100, 3)), 2.5, "integer"),
        (np.zeros((15, 3)), 8, "T >= 2 \\* n_splits"),
        (np.full((100, 3), np.nan), 4, "finite"),
    ],
)
def test_pbo_refuses_bad_inputs(perf: np.ndarray, splits: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pbo_cscv(perf, n_splits=splits)


def test_pbo_refuses_bad_metrics() -> None:
    perf = _noise(0, t=40, n=3)
    with pytest.raises(ValueError, match="metric must be"):
        pbo_cscv(perf, n_splits=4, metric="sortino")
    with pytest.raises(ValueError, match="3 finite values"):
        pbo_cscv(perf, n_splits=4, metric=lambda rows: rows.mean())
