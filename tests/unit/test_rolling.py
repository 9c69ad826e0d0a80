"""RollingStats: exact population statistics over a sliding window, stable over long runs."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from signals.rolling import RollingStats


def test_matches_population_statistics_of_the_last_window():
    rng = random.Random(7)
    stats = RollingStats(window=50)
    values: list[float] = []
    for _ in range(537):
        x = rng.gauss(0.0, 0.01)
        values.append(x)
        stats.add(x)
        window = values[-50:]
        assert stats.count == len(window)
        assert stats.mean == pytest.approx(statistics.fmean(window), abs=1e-15)
        assert stats.variance == pytest.approx(statistics.pvariance(window), rel=1e-9)
    assert stats.values() == values[-50:]


def test_zscore_uses_the_window_before_the_value_and_needs_three_samples():
    stats = RollingStats(window=5)
    stats.add(1.0)
    stats.add(3.0)
    assert stats.zscore(10.0) is None  # two samples: no z
    stats.add(2.0)
    # mean 2, population variance 2/3
    assert stats.zscore(4.0) == pytest.approx(2.0 / math.sqrt(2.0 / 3.0))
    assert stats.zscore(4.0, min_samples=4) is None


def test_flat_window_has_no_zscore():
    stats = RollingStats(window=10)
    for _ in range(10):
        stats.add(65_000.25)
    assert stats.variance == pytest.approx(0.0, abs=1e-12)
    assert stats.zscore(70_000.0) is None


def test_large_offset_small_spread_stays_accurate_over_a_long_run():
    """Volumes of 1e6 +- 1: naive sum-of-squares would lose every digit of the variance."""
    rng = random.Random(3)
    stats = RollingStats(window=50, resync_every=10**9)  # no resync: the sliding update alone
    values = []
    for _ in range(200_000):
        x = 1e6 + rng.uniform(-1.0, 1.0)
        values.append(x)
        stats.add(x)
    assert stats.variance == pytest.approx(statistics.pvariance(values[-50:]), rel=1e-6)
    stats.resync()
    assert stats.variance == pytest.approx(statistics.pvariance(values[-50:]), rel=1e-12)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        RollingStats(window=0)
    stats = RollingStats()
    with pytest.raises(ValueError):
        stats.add(float("nan"))
    with pytest.raises(ValueError):
        stats.add(float("inf"))
    stats.add(1.0)
    stats.clear()
    assert stats.count == 0 and stats.variance == 0.0
