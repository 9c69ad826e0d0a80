"""Crypto volatility regime (SPEC §6): HMM on constructed daily series."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from trading.market_data import load_ohlcv_csv
from trading.models import Bar
from trading.regime_crypto import (
    HmmParams,
    bic,
    crypto_regime,
    daily_bars,
    decode_labels,
    features,
    filtered_labels,
    fit_hmm,
    n_free_params,
)
from trading.scorer import VOL_RANK

DAY = 86_400_000
T0 = 1_672_531_200_000  # 2023-01-01


def bars(sigmas: list[float], seed: int = 1, interval_ms: int = DAY, interval: str = "1d"):
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0.0, np.array(sigmas))))
    return [
        Bar(
            symbol="BTC/USDT",
            interval=interval,
            open_time=T0 + i * interval_ms,
            close_time=T0 + (i + 1) * interval_ms - 1,
            open=c,
            high=c,
            low=c,
            close=c,
            volume=1.0,
        )
        for i, c in enumerate(closes)
    ]


CALM_THEN_VIOLENT = [0.01] * 250 + [0.05] * 150


def test_free_parameter_count_for_full_covariance() -> None:
    # k=2, d=3: startprob 1 + transmat 2 + means 6 + covars 2·6 = 21
    assert n_free_params(2, 3) == 21
    assert n_free_params(4, 3) == 3 + 12 + 12 + 24
    assert bic(-100.0, 2, 3, 400) == pytest.approx(200.0 + 21 * math.log(400))
    assert bic(-140.0, 2, 3, 420, divisor=14) == pytest.approx(20.0 + 21 * math.log(30))


def test_features_are_return_vol_and_vol_dispersion() -> None:
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, 60)))
    x = features(closes)
    r = np.diff(np.log(closes))
    assert x.shape == (len(r) - 26, 3)  # 13 days to the first vol, 13 more to its dispersion
    assert x[-1, 0] == pytest.approx(r[-1])
    assert x[-1, 1] == pytest.approx(r[-14:].std())
    vols = [r[i - 13 : i + 1].std() for i in range(len(r) - 14, len(r))]
    assert x[-1, 2] == pytest.approx(np.std(vols))


def test_hmm_separates_a_calm_from_a_violent_stretch() -> None:
    b = bars(CALM_THEN_VIOLENT)
    regime, days = decode_labels(b, b[-1].close_time)
    assert regime.n_states == 2 and regime.label == "high"
    assert set(regime.bic) == {2, 3, 4} and min(regime.bic, key=regime.bic.get) == 2
    labels = [label for _, label in days]
    calm, violent = labels[20:200], labels[-120:]
    assert calm.count("low") / len(calm) > 0.9
    assert violent.count("high") / len(violent) > 0.9
    low, high = regime.states
    assert low.label == "low" and high.label == "high" and high.mean_vol > 3 * low.mean_vol
    assert low.share + high.share == pytest.approx(1.0)
    assert 0.5 < regime.state_probability <= 1.0
    assert all(s.label in VOL_RANK for s in regime.states)
    mid = b[230].close_time  # still in the calm stretch: the fit sees no violence yet
    assert crypto_regime(b, mid).label == "low"


def test_a_fit_labels_later_days_from_their_own_past_only() -> None:
    b = bars(CALM_THEN_VIOLENT)
    regime, fit = fit_hmm(b, b[299].close_time)
    assert fit is not None and regime.label == "high"
    later = filtered_labels(fit, b, b[299].close_time, b[-1].close_time)
    assert [t for t, _ in later] == [x.close_time for x in b[300:]]
    assert [label for _, label in later].count("high") / len(later) > 0.9
    # the label of a day does not depend on bars after it
    assert filtered_labels(fit, b[:351], b[299].close_time, b[350].close_time) == later[:51]


def test_bic_picks_fewer_states_on_a_single_regime_series() -> None:
    one = bars([0.02] * 700, seed=2)
    three = bars(([0.005] * 150 + [0.03] * 150 + [0.10] * 150) * 2, seed=2)
    r1 = crypto_regime(one, one[-1].close_time)
    r3 = crypto_regime(three, three[-1].close_time)
    assert r1.n_states == 2
    assert r3.n_states >= 3 and r1.n_states < r3.n_states
    # the textbook BIC (divisor 1) overfits overlapping rolling features
    textbook = crypto_regime(one, one[-1].close_time, HmmParams(bic_sample_divisor=1.0))
    assert textbook.n_states > r1.n_states


def test_as_of_cuts_bars_that_close_after_it() -> None:
    b = bars(CALM_THEN_VIOLENT)
    as_of = b[299].close_time
    r = crypto_regime(b, as_of)
    assert r.fitted_through_ms == as_of and r.as_of_ms == as_of
    assert r.n_days == 300 - 1 - 26
    assert r == crypto_regime(b[:300], as_of)
    assert crypto_regime(b, as_of - 1).fitted_through_ms == b[298].close_time
    in_progress = b[:300] + [b[300].model_copy(update={"closed": False, "close_time": as_of})]
    assert crypto_regime(in_progress, as_of) == r


def test_unknown_with_too_little_history() -> None:
    b = bars([0.02] * 140)
    r = crypto_regime(b, b[-1].close_time)
    assert r.label == "unknown" and r.n_states == 0
    assert "usable days" in r.reason and r.n_days == 139 - 26
    assert crypto_regime([], T0).label == "unknown"


def test_degenerate_input_never_raises() -> None:
    flat = bars([0.0] * 300)
    r = crypto_regime(flat, flat[-1].close_time)
    assert r.label == "unknown" and "constant" in r.reason
    # a long flat stretch and then noise: near-singular covariances, still an answer
    b = bars([0.0] * 200 + [0.03] * 200, seed=3)
    r = crypto_regime(b, b[-1].close_time)
    assert r.label in ("unknown", "low", "mid", "high", "extreme")


def test_fit_is_seeded() -> None:
    b = bars(CALM_THEN_VIOLENT, seed=5)
    assert crypto_regime(b, b[-1].close_time) == crypto_regime(b, b[-1].close_time)


def test_daily_bars_from_4h_bars() -> None:
    four_h = bars([0.01] * 24, interval_ms=4 * 3_600_000, interval="4h")
    days = daily_bars(four_h)
    assert [d.open_time for d in days] == [T0 + i * DAY for i in range(4)]
    assert days[0].close == four_h[5].close and days[0].open == four_h[0].open
    assert days[0].high == max(b.high for b in four_h[:6])
    assert daily_bars(days) == days
    long = bars(
        [0.01] * 6 * 200 + [0.03] * 6 * 100, seed=4, interval_ms=4 * 3_600_000, interval="4h"
    )
    as_of = long[-1].close_time
    assert crypto_regime(long, as_of) == crypto_regime(daily_bars(long), as_of)
    partial = daily_bars(four_h[:-1])  # the last day lacks one 4h bar: dropped
    assert len(partial) == 3


@pytest.mark.data
def test_real_btc_fit_is_fast(data_dir) -> None:
    four_h = load_ohlcv_csv(data_dir / "binance_BTCUSDT_4h.csv", "BTC/USDT", "4h")
    days = daily_bars(four_h)
    assert len(days) > 1000
    crypto_regime(days[:200], days[199].close_time)  # warm the imports
    start = time.perf_counter()
    r = crypto_regime(days, days[-1].close_time)
    elapsed = time.perf_counter() - start
    assert r.label in VOL_RANK and r.n_states in (2, 3, 4)
    assert elapsed < 2.0, f"fit took {elapsed:.2f} s"


def test_models_import_without_numpy_for_workflow_code() -> None:
    """Workflows import the request/result models: module-level imports stay pure."""
    import ast
    import sys
    from pathlib import Path

    allowed = set(sys.stdlib_module_names) | {"pydantic"}
    root = Path(__file__).resolve().parents[2] / "trading"
    for name in ("regime_crypto.py", "macro.py"):
        tree = ast.parse((root / name).read_text())
        for node in tree.body:  # top level only: fits import numpy inside their functions
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for mod in mods:
                assert mod == "trading.models" or mod.split(".")[0] in allowed, f"{name}: {mod}"
