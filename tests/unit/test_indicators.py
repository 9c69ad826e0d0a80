"""Indicators against hand-computed values and straightforward reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trading.indicators import (
    atr_wilder,
    bollinger,
    efficiency_ratio,
    ema,
    momentum,
    rsi_wilder,
    sma,
    true_range,
    zscore_last,
)

RNG = np.random.default_rng(7)
WALK = 100.0 * np.exp(np.cumsum(RNG.normal(0, 0.01, 300)))


def ref_ema(x: list[float], span: int) -> list[float]:
    alpha = 2 / (span + 1)
    out = [math.nan] * len(x)
    level = sum(x[:span]) / span
    out[span - 1] = level
    for i in range(span, len(x)):
        level = alpha * x[i] + (1 - alpha) * level
        out[i] = level
    return out


def ref_rsi(x: list[float], period: int) -> list[float]:
    out = [math.nan] * len(x)
    gains = [max(b - a, 0.0) for a, b in zip(x, x[1:], strict=False)]
    losses = [max(a - b, 0.0) for a, b in zip(x, x[1:], strict=False)]
    ag, al = sum(gains[:period]) / period, sum(losses[:period]) / period
    out[period] = 100 - 100 / (1 + ag / al)
    for i in range(period, len(gains)):
        ag = (ag * (period - 1) + gains[i]) / period
        al = (al * (period - 1) + losses[i]) / period
        out[i + 1] = 100 - 100 / (1 + ag / al)
    return out


def test_sma_matches_reference_and_warms_up_with_nan() -> None:
    out = sma(WALK, 20)
    assert np.isnan(out[:19]).all()
    for i in (19, 100, 299):
        assert out[i] == pytest.approx(WALK[i - 19 : i + 1].mean(), rel=1e-12)
    assert sma([1, 2, 3, 4], 2).tolist()[1:] == [1.5, 2.5, 3.5]
    assert np.isnan(sma([1.0, 2.0], 5)).all()


def test_ema_seeded_with_sma_matches_reference() -> None:
    np.testing.assert_allclose(ema(WALK, 21), ref_ema(WALK.tolist(), 21), rtol=1e-12)
    # span 3: alpha 0.5, seed mean(1,2,3)=2, then 2+0.5*(4-2)=3, 3+0.5*(8-3)=5.5
    assert ema([1, 2, 3, 4, 8], 3).tolist()[2:] == [2.0, 3.0, 5.5]
    assert ema([5.0] * 60, 50)[-1] == 5.0


def test_rsi_known_values() -> None:
    rising = np.arange(1.0, 40.0)
    falling = rising[::-1]
    assert rsi_wilder(rising, 14)[-1] == 100.0
    assert rsi_wilder(falling, 14)[-1] == 0.0
    assert rsi_wilder(np.full(30, 7.0), 14)[-1] == 50.0
    # period 2 by hand: diffs +1,-1,+1 -> seed 0.5/0.5 = 50; then gain 0.75, loss 0.25 -> 75
    out = rsi_wilder([1, 2, 1, 2], 2)
    assert np.isnan(out[:2]).all()
    assert out[2:].tolist() == [50.0, 75.0]
    assert np.isnan(rsi_wilder(np.arange(14.0), 14)).all()  # needs period + 1 closes


def test_rsi_matches_reference_loop() -> None:
    np.testing.assert_allclose(rsi_wilder(WALK, 14), ref_rsi(WALK.tolist(), 14), rtol=1e-12)


def test_atr_known_values() -> None:
    high, low, close = [10, 12, 11, 13], [9, 10, 9, 11], [9.5, 11, 10, 12]
    assert true_range(high, low, close).tolist() == [1.0, 2.5, 2.0, 3.0]
    out = atr_wilder(high, low, close, 2)
    assert np.isnan(out[:2]).all()
    assert out[2:].tolist() == [2.25, 2.625]
    flat = np.full(40, 50.0)
    assert atr_wilder(flat + 1, flat - 1, flat, 14)[-1] == pytest.approx(2.0)


def test_bollinger_uses_population_std() -> None:
    mid, upper, lower = bollinger([1.0, 2.0, 3.0, 4.0], n=4, k=2.0)
    std = math.sqrt(1.25)  # population: mean 2.5, squared deviations 2.25+0.25+0.25+2.25 / 4
    assert mid[-1] == 2.5
    assert upper[-1] == pytest.approx(2.5 + 2 * std)
    assert lower[-1] == pytest.approx(2.5 - 2 * std)
    assert np.isnan(mid[:3]).all()
    m, u, lo = bollinger(WALK, 20, 2.0)
    assert u[-1] - m[-1] == pytest.approx(2 * WALK[-20:].std(ddof=0))


def test_momentum() -> None:
    closes = [100.0] * 14 + [110.0]
    assert momentum(closes, 14) == pytest.approx(0.10)
    assert momentum(closes[1:], 14) is None
    assert momentum([100.0, 95.0], 1) == pytest.approx(-0.05)


def test_efficiency_ratio() -> None:
    assert efficiency_ratio(np.linspace(100, 130, 31), 30) == pytest.approx(1.0)
    assert efficiency_ratio(np.linspace(130, 100, 31), 30) == pytest.approx(1.0)
    assert efficiency_ratio([1, 3, 2, 4], 3) == pytest.approx(3 / 5)
    assert efficiency_ratio([1, 2, 1, 2, 1], 4) == 0.0
    assert efficiency_ratio(np.full(31, 5.0), 30) == 0.0
    assert efficiency_ratio(np.arange(30.0), 30) is None
    # only the last n bars count
    assert efficiency_ratio([50, 1, 2, 3, 4], 3) == pytest.approx(1.0)


def test_zscore_last_against_previous_values() -> None:
    z = zscore_last([1.0, 2.0, 3.0, 10.0], window=50)
    assert z == pytest.approx(8 / math.sqrt(2 / 3))
    assert zscore_last([1.0, 2.0, 10.0]) is None  # 2 reference values: too few
    # window limits the reference to the last `window` values before the last one
    assert zscore_last([1000.0, 1.0, 2.0, 3.0, 10.0], window=3) == pytest.approx(z)
    assert zscore_last([5.0] * 10) == 0.0
    assert zscore_last([5.0] * 10 + [6.0]) is None


def test_bad_window_raises() -> None:
    with pytest.raises(ValueError):
        sma([1.0, 2.0], 0)
    with pytest.raises(ValueError):
        ema([1.0, 2.0], -3)
