"""Systematic policy families (trading/policies): rules on hand-made series, no look-ahead,
validation, the DecisionSource adapter, and runs through the backtest engine."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from trading.backtest.data import BacktestData, prepare_data
from trading.backtest.engine import Backtester, run_backtest
from trading.backtest.metrics import result_metrics
from trading.backtest.params import BacktestParams
from trading.indicators import atr_wilder, sma
from trading.learner import STARTING_WEIGHTS
from trading.market_data import (
    find_funding_csv,
    find_symbol_csv,
    interval_ms,
    load_funding_csv,
    load_ohlcv_csv,
    parse_timestamp_ms,
)
from trading.models import Action, Bar
from trading.policies import (
    BarSeries,
    FamilyDecisions,
    WeightDecisions,
    breakout,
    carry,
    combo,
    families,
    get_family,
    trend_filter,
    tsmom,
)
from trading.policies.base import days_to_bars
from trading.policies.breakout import BreakoutParams
from trading.policies.carry import CarryParams
from trading.policies.combo import TrendTsmomParams
from trading.policies.trend_filter import TrendFilterParams
from trading.policies.tsmom import TsmomParams
from trading.policies.walkforward import family_walk_forward

DAY = 86_400_000
H4 = 4 * 3_600_000
H8 = 8 * 3_600_000
START = 1_735_689_600_000  # 2025-01-01

# No stops, no scorer: the family alone decides the exits.
BARE = BacktestParams(
    agent_every_bars=0, stop_loss_pct=0.0, trail_pct=0.0, max_drawdown_guard_pct=0.0
)

# Short lookbacks so that a few hundred daily bars exercise every family.
SHORT: dict[str, object] = {
    "tsmom": TsmomParams(lookback_days=20, vol_days=10, target_vol=0.3),
    "trend_filter": TrendFilterParams(sma_days=30, band=0.01),
    "breakout": BreakoutParams(entry_days=15, exit_days=7, atr_days=10, atr_mult=2.0),
    "carry": CarryParams(prints=3, long_below=0.0, crowded_above=0.0002, neutral_weight=0.5),
    "trend_tsmom": TrendTsmomParams(lookback_days=20, sma_days=30, vol_days=10, target_vol=0.3),
}


def _both_modes(params):
    return [
        dataclasses.replace(params, long_only=True),
        dataclasses.replace(params, long_only=False),
    ]


def _random_series(rng: np.random.Generator, n: int, bar_ms: int = DAY) -> BarSeries:
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.01, n)))
    n_prints = n * bar_ms // H8
    times = H8 * np.arange(n_prints, dtype=np.int64) + 5  # a few ms past the hour, as Binance
    rates = rng.normal(0.0001, 0.0003, n_prints)
    return BarSeries.from_closes(close, bar_ms, high, low, funding=(times, rates))


# ------------------------------------------------------------ TSMOM


def test_tsmom_long_in_uptrend_short_or_flat_in_downtrend() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.005, 200)
    up = 100 * np.exp(np.cumsum(0.01 + noise))
    down = 100 * np.exp(np.cumsum(-0.01 + noise))
    p = TsmomParams(lookback_days=30, vol_days=20, target_vol=0.5)
    lo = days_to_bars(30, DAY)
    w_up = tsmom.target_weights(up, p, DAY)
    assert np.all(w_up[:lo] == 0) and np.all(w_up[lo:] > 0)
    w_long_only = tsmom.target_weights(down, p, DAY)
    w_ls = tsmom.target_weights(down, dataclasses.replace(p, long_only=False), DAY)
    assert np.all(w_long_only == 0)
    assert np.all(w_ls[lo:] < 0) and np.all(w_ls >= -1)


def test_vol_targeting_halves_the_weight_when_vol_doubles() -> None:
    n = 300
    r = 0.002 + 0.01 * (-1.0) ** np.arange(n)  # "wild" below: every return doubled
    calm = 100 * np.exp(np.concatenate([[0], np.cumsum(r)]))
    wild = 100 * np.exp(np.concatenate([[0], np.cumsum(2 * r)]))
    p = TsmomParams(lookback_days=20, vol_days=10, target_vol=0.05, long_only=False)
    w_calm = tsmom.target_weights(calm, p, DAY)
    w_wild = tsmom.target_weights(wild, p, DAY)
    live = w_calm != 0
    assert live.sum() > 200
    assert np.all(w_calm[live] < 1.0)  # not capped: the ratio is the volatility's alone
    assert np.allclose(w_wild[live], w_calm[live] / 2, rtol=1e-9)


def test_tsmom_caps_at_max_weight_and_converts_days_to_bars() -> None:
    close = 100 * np.exp(np.cumsum(np.full(2000, 0.0001)))  # very calm uptrend
    p = TsmomParams(lookback_days=30, vol_days=10, target_vol=0.8, max_weight=0.7)
    w = tsmom.target_weights(close, p, H4)
    assert days_to_bars(30, H4) == 180
    assert np.all(w[:180] == 0) and np.all(w[180:] == 0.7)


# ------------------------------------------------------------ trend filter


def test_trend_filter_flips_at_the_crossing_bar() -> None:
    rng = np.random.default_rng(2)
    close = np.concatenate([np.linspace(120, 100, 80), np.linspace(100, 130, 60)])
    close = close + rng.normal(0, 0.05, len(close))
    p = TrendFilterParams(sma_days=20)
    avg = sma(close, 20)
    above = close > avg
    k = int(np.flatnonzero(above[19:] & ~np.roll(above, 1)[19:])[0]) + 19  # first cross up
    w = trend_filter.target_weights(close, p, DAY)
    assert np.all(w[:k] == 0) and w[k] == 1
    w_ls = trend_filter.target_weights(close, dataclasses.replace(p, long_only=False), DAY)
    assert np.all(w_ls[:19] == 0) and np.all(w_ls[19:k] == -1) and w_ls[k] == 1


def test_trend_filter_band_holds_the_state_inside_it() -> None:
    close = np.array([100.0] * 10 + [103, 100.5, 99.5, 97, 100.5, 103])
    w = trend_filter.target_weights(close, TrendFilterParams(sma_days=10, band=0.02), DAY)
    # SMA ~100..100.6: 103 enters, 100.5 and 99.5 stay inside the band, 97 leaves, 100.5 stays
    # out (inside the band), 103 enters again
    assert w.tolist() == [0.0] * 10 + [1, 1, 1, 0, 0, 1]


# ------------------------------------------------------------ breakout


def test_breakout_enters_on_the_first_close_above_the_prior_high_and_exits_on_the_low() -> None:
    close = [10, 11, 10, 11, 10, 11, 10, 11, 12, 12.5, 13, 12.8, 12.6, 12.4, 12.5]
    p = BreakoutParams(entry_days=5, exit_days=3, atr_days=3, atr_mult=0.0)
    w = breakout.target_weights(close, close, close, p, DAY)
    # bar 7 only equals the prior 5-bar high (11); bar 8 (12) breaks it; bar 13 (12.4) closes
    # below the prior 3-bar low (12.6)
    assert w.tolist() == [0] * 8 + [1] * 5 + [0, 0]


def test_breakout_short_side_mirrors_in_long_short_mode() -> None:
    close = [10, 9, 10, 9, 10, 9, 10, 9, 8, 7.5, 7, 7.2, 7.4, 7.6, 7.5]
    p = BreakoutParams(entry_days=5, exit_days=3, atr_days=3, atr_mult=0.0, long_only=False)
    assert breakout.target_weights(close, close, close, p, DAY).tolist() == (
        [0] * 8 + [-1] * 5 + [0, 0]
    )
    long_only = dataclasses.replace(p, long_only=True)
    assert np.all(breakout.target_weights(close, close, close, long_only, DAY) == 0)


def test_breakout_atr_trailing_exit() -> None:
    close = np.array([10.0, 10.2] * 15 + [11, 12, 13, 14, 13.0, 13.5])
    high, low = close + 0.1, close - 0.1
    p = BreakoutParams(entry_days=20, exit_days=15, atr_days=5, atr_mult=0.0)
    assert breakout.target_weights(high, low, close, p, DAY)[30:].tolist() == [1] * 6
    trail = dataclasses.replace(p, atr_mult=1.0)
    w = breakout.target_weights(high, low, close, trail, DAY)
    atr = atr_wilder(high, low, close, 5)
    assert close[34] < high[33] - atr[34]  # the drop to 13 is more than 1 ATR off the peak
    assert w[30:].tolist() == [1, 1, 1, 1, 0, 0]


# ------------------------------------------------------------ carry


def test_funding_prints_count_only_at_or_before_the_bar_close() -> None:
    close_time = H4 * np.arange(1, 7, dtype=np.int64) - 1  # 4h bars from 0
    times = np.array([0, H8, 2 * H8], dtype=np.int64)
    rates = np.array([1.0, 2.0, 3.0])
    got = carry.funding_mean_at(close_time, times, rates, 1)
    assert got.tolist() == [1, 1, 2, 2, 3, 3]  # the 08:00 print is not seen by 04:00-07:59
    two = carry.funding_mean_at(close_time, times, rates, 2)
    assert np.isnan(two[:2]).all() and two[2:].tolist() == [1.5, 1.5, 2.5, 2.5]


def test_carry_avoids_crowded_longs_and_goes_long_on_negative_funding() -> None:
    n = 60  # 4h bars: 10 days, 30 prints
    times = H8 * np.arange(30, dtype=np.int64)
    rates = np.concatenate([np.full(10, 0.001), np.full(10, 0.0001), np.full(10, -0.0002)])
    series = BarSeries.from_closes(np.full(n, 100.0), H4, funding=(times, rates))
    p = CarryParams(prints=3, neutral_weight=0.5)
    w = carry.FAMILY.weights(series, p)
    seen = np.searchsorted(times, series.close_time, side="right")
    assert np.all(w[seen < 3] == 0)  # warm-up
    assert np.all(w[(seen >= 3) & (seen <= 10)] == 0)  # crowded: no long
    assert np.all(w[(seen >= 13) & (seen <= 20)] == 0.5)  # neutral
    assert np.all(w[seen >= 23] == 1)  # negative funding: long carry
    w_ls = carry.FAMILY.weights(series, dataclasses.replace(p, long_only=False))
    assert np.all(w_ls[(seen >= 3) & (seen <= 10)] == -1)
    no_funding = BarSeries.from_closes(np.full(n, 100.0), H4)
    assert np.all(carry.FAMILY.weights(no_funding, p) == 0)


# ------------------------------------------------------------ every family


@pytest.mark.parametrize("name", list(SHORT))
def test_no_look_ahead(name: str) -> None:
    """Changing the bars (and funding prints) after bar i never changes the weights up to i."""
    fam = get_family(name)
    rng = np.random.default_rng(12345)
    for params in _both_modes(SHORT[name]):
        for _ in range(4):
            series = _random_series(rng, 300)
            full = fam.weights(series, params)
            assert np.any(full != 0)
            for i in rng.integers(0, 299, 6).tolist():
                times, rates = series.funding
                after = times > series.close_time[i]
                changed = BarSeries.from_closes(
                    np.concatenate([series.close[: i + 1], rng.uniform(50, 150, 299 - i)]),
                    DAY,
                    np.concatenate([series.high[: i + 1], rng.uniform(150, 200, 299 - i)]),
                    np.concatenate([series.low[: i + 1], rng.uniform(10, 50, 299 - i)]),
                    funding=(times, np.where(after, rng.normal(0, 0.01, len(rates)), rates)),
                )
                assert np.array_equal(fam.weights(changed, params)[: i + 1], full[: i + 1])
                cut = BarSeries.from_closes(
                    series.close[: i + 1],
                    DAY,
                    series.high[: i + 1],
                    series.low[: i + 1],
                    funding=(times[~after], rates[~after]),
                )
                assert np.array_equal(fam.weights(cut, params), full[: i + 1])


@pytest.mark.parametrize("name", list(SHORT))
def test_weights_are_finite_bounded_and_zero_in_warm_up(name: str) -> None:
    fam = get_family(name)
    rng = np.random.default_rng(7)
    series = _random_series(rng, 400, H4)
    for params in fam.grid + (SHORT[name],):
        for p in _both_modes(params):
            w = fam.weights(series, p)
            assert w.shape == (400,) and np.all(np.isfinite(w))
            assert w.min() >= (0.0 if p.long_only else -1.0) and w.max() <= 1.0
            assert w[0] == 0
    empty = BarSeries.from_closes(np.zeros(0), H4)
    assert fam.weights(empty).shape == (0,)


def test_registry_names_grids_and_groups() -> None:
    found = families()
    assert set(found) == {"tsmom", "trend_filter", "breakout", "carry", "trend_tsmom"}
    sizes = {name: len(f.grid) for name, f in found.items()}
    assert sizes == {"tsmom": 12, "trend_filter": 8, "breakout": 8, "carry": 12, "trend_tsmom": 12}
    for f in found.values():
        assert all(isinstance(p, f.params_type) for p in f.grid)
        assert len(set(f.grid)) == len(f.grid)  # frozen dataclasses: hashable, no duplicates
        assert f.default_params() == f.params_type()
    assert found["carry"].group == "derivatives" and found["carry"].needs_funding
    assert {found[n].group for n in ("tsmom", "trend_filter", "breakout", "trend_tsmom")} == {
        "trend"
    }
    assert combo.FAMILY is found["trend_tsmom"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TsmomParams(lookback_days=0), "lookback_days"),
        (lambda: TsmomParams(target_vol=math.nan), "target_vol"),
        (lambda: TsmomParams(max_weight=1.5), "max_weight"),
        (lambda: TsmomParams(long_only=1), "long_only"),
        (lambda: TrendFilterParams(sma_days=-5), "sma_days"),
        (lambda: TrendFilterParams(band=0.6), "band"),
        (lambda: BreakoutParams(entry_days=10, exit_days=10), "exit_days"),
        (lambda: BreakoutParams(atr_mult=-1), "atr_mult"),
        (lambda: CarryParams(prints=0), "prints"),
        (lambda: CarryParams(prints=2.5), "prints"),
        (lambda: CarryParams(long_below=0.001, crowded_above=0.0005), "long_below"),
        (lambda: CarryParams(neutral_weight=1.5), "neutral_weight"),
        (lambda: TrendTsmomParams(sma_days=0), "sma_days"),
        (lambda: TrendTsmomParams(vol_days=math.inf), "vol_days"),
        (lambda: get_family("nope"), "unknown policy family"),
        (lambda: tsmom.FAMILY.weights(BarSeries.from_closes([1.0]), CarryParams()), "needs"),
        (lambda: BarSeries.from_closes([1.0, 2.0], high=[1.0]), "same length"),
        (lambda: days_to_bars(30, 0), "bar_ms"),
        (
            lambda: carry.funding_mean_at(np.arange(3), np.array([2, 1]), np.ones(2), 1),
            "increasing",
        ),
    ],
)
def test_parameter_validation(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------ adapter and engine


def _bars(symbol: str, closes: np.ndarray, skip: set[int] = frozenset()) -> list[Bar]:
    out, prev = [], float(closes[0])
    for i, c in enumerate(closes.tolist()):
        o = prev
        prev = c
        if i in skip:
            continue
        t = START + i * H4
        out.append(
            Bar(
                symbol=symbol,
                interval="4h",
                open_time=t,
                close_time=t + H4 - 1,
                open=o,
                high=max(o, c) * 1.002,
                low=min(o, c) * 0.998,
                close=c,
                volume=1.0,
            )
        )
    return out


def _trending(n: int, seed: int) -> np.ndarray:
    """Up, down, up again, with noise: trend families must trade it both ways."""
    rng = np.random.default_rng(seed)
    legs = np.concatenate([np.full(n // 3, 0.004), np.full(n // 3, -0.004), np.full(n, 0.004)])
    return 100 * np.exp(np.cumsum(legs[:n] + rng.normal(0, 0.004, n)))


@pytest.fixture(scope="module")
def small_data() -> BacktestData:
    closes = np.linspace(100, 110, 12)
    return prepare_data(
        {"BTC/USDT": _bars("BTC/USDT", closes), "ETH/USDT": _bars("ETH/USDT", closes, {5})}, "4h"
    )


@pytest.fixture(scope="module")
def trend_data() -> BacktestData:
    n = 900
    times = START + H8 * np.arange(n // 2, dtype=np.int64)
    rates = np.where(np.arange(n // 2) % 60 < 30, -0.0002, 0.0008)
    return prepare_data(
        {
            "BTC/USDT": _bars("BTC/USDT", _trending(n, 3)),
            "ETH/USDT": _bars("ETH/USDT", _trending(n, 4)),
        },
        "4h",
        funding={"BTC/USDT": (times, rates), "ETH/USDT": (times, rates)},
    )


def test_adapter_buy_sell_hold(small_data) -> None:
    btc = np.array([0, 0.5, 1.0, 0.08, 0.05, -0.7, 0, 0, 0, 0, 0, 0])
    eth = np.array([0.5] * 11)  # one bar fewer: step 5 has no ETH bar
    dec = WeightDecisions(
        small_data,
        {"BTC/USDT": btc, "ETH/USDT": eth},
        "trend",
        position_pct=0.4,
        max_position_pct=0.3,
        entry_threshold=0.1,
        exit_threshold=0.05,
    )

    def act(step: int, held: set[str], symbol: str = "BTC/USDT"):
        got = dec.intents(step, held)[symbol]
        return got.action, got.position_pct

    assert act(0, set()) == (Action.HOLD, 0.0)
    assert act(1, set()) == (Action.BUY, 0.2)  # 0.5 x 0.4
    assert act(1, {"BTC/USDT"}) == (Action.HOLD, 0.0)
    assert act(2, set()) == (Action.BUY, 0.3)  # 1.0 x 0.4 capped at 0.3
    assert act(3, set())[0] is Action.HOLD and act(3, {"BTC/USDT"})[0] is Action.HOLD
    assert act(4, {"BTC/USDT"})[0] is Action.SELL  # at the exit threshold
    assert act(5, {"BTC/USDT"})[0] is Action.SELL  # short target: flat
    assert act(5, set())[0] is Action.HOLD  # never a short entry
    assert act(5, set(), "ETH/USDT")[0] is Action.HOLD  # no bar
    assert act(6, set(), "ETH/USDT") == (Action.BUY, 0.2)
    assert dec.intents(1, set())["BTC/USDT"].signal_weights == {"trend": 1.0}
    steps = np.arange(len(small_data.timeline))
    for flat in (True, False):
        expected = [
            any(i.action is Action.BUY for i in dec.intents(s, set()).values())
            or (
                not flat
                and any(
                    i.action is Action.SELL
                    for i in dec.intents(s, set(small_data.symbols)).values()
                )
            )
            for s in steps.tolist()
        ]
        assert dec.active_steps(steps, flat).tolist() == expected
    # learner weights scale the BUY size like the rule policy's: starting weights change nothing
    assert dec.intents(1, set(), dict(STARTING_WEIGHTS))["BTC/USDT"].position_pct == 0.2
    heavy = dict(STARTING_WEIGHTS, trend=STARTING_WEIGHTS["trend"] * 3)
    assert 0.2 < dec.intents(1, set(), heavy)["BTC/USDT"].position_pct <= 0.3
    with pytest.raises(ValueError, match="thresholds"):
        WeightDecisions(small_data, {"BTC/USDT": btc, "ETH/USDT": eth}, "trend", exit_threshold=0.2)
    with pytest.raises(ValueError, match="one weight per bar"):
        WeightDecisions(small_data, {"BTC/USDT": btc[:5], "ETH/USDT": eth}, "trend")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("tsmom", TsmomParams(lookback_days=5, vol_days=5)),
        ("trend_filter", TrendFilterParams(sma_days=10)),
        ("breakout", BreakoutParams(entry_days=5, exit_days=2, atr_days=5)),
        ("carry", CarryParams(prints=3)),
        ("trend_tsmom", TrendTsmomParams(lookback_days=5, sma_days=10, vol_days=5)),
    ],
)
def test_families_trade_through_the_engine(trend_data, name: str, params) -> None:
    dec = FamilyDecisions(
        trend_data, name, params, BARE.default_position_pct, BARE.max_position_pct
    )
    start = int(trend_data.timeline[100])
    run_params = BARE.model_copy(update={"perpetual": name == "carry"})
    result = run_backtest(trend_data, run_params, start, decisions=dec)
    assert len(result.trades) >= 2
    assert any(t.exit_reason == "decision_sell" for t in result.trades)
    group = "derivatives" if name == "carry" else "trend"
    assert all(t.signal_weights == {group: 1.0} for t in result.trades)
    assert np.all(np.isfinite(result.equity))
    slow = Backtester(trend_data, run_params, dec, skip_quiet=False).run(start)
    assert [t.model_dump() for t in slow.trades] == [t.model_dump() for t in result.trades]
    assert np.allclose(slow.equity, result.equity, rtol=1e-12)


def test_trend_filter_entry_fills_at_the_open_after_the_cross(trend_data) -> None:
    dec = FamilyDecisions(trend_data, "trend_filter", TrendFilterParams(sma_days=10))
    w = dec.weights["BTC/USDT"]
    start = 100 + int(np.flatnonzero(w[100:] == 0)[0])  # start flat, below the SMA
    k = start + int(np.flatnonzero(w[start:] > 0)[0])  # the bar whose close crosses above
    assert w[k - 1] == 0
    params = BARE.model_copy(update={"slippage_bps": 0.0})
    result = run_backtest(trend_data, params, int(trend_data.timeline[start]), decisions=dec)
    first = min((t for t in result.trades if t.symbol == "BTC/USDT"), key=lambda t: t.entry_time_ms)
    assert first.entry_time_ms == int(trend_data.timeline[k + 1])
    assert first.entry_price == pytest.approx(float(trend_data.frames["BTC/USDT"].open[k + 1]))


@pytest.mark.data
def test_default_params_on_real_btc_2024(data_dir) -> None:
    symbol = "BTC/USDT"
    warm, start, end = (parse_timestamp_ms(d) for d in ("2023-01-01", "2024-01-01", "2025-01-01"))
    bars = load_ohlcv_csv(find_symbol_csv(data_dir, symbol, "4h"), symbol, "4h", warm, end)
    funding = load_funding_csv(find_funding_csv(data_dir, symbol), warm, end)
    data = prepare_data({symbol: bars}, "4h", funding={symbol: funding})
    assert interval_ms(data.interval) == H4
    for name, fam in families().items():
        dec = FamilyDecisions(data, fam)
        result = run_backtest(
            data, BacktestParams(perpetual=fam.needs_funding), start, end, decisions=dec
        )
        m = result_metrics(result)
        values = [m.total_return, m.cagr, m.sharpe, m.sortino, m.max_drawdown, m.exposure]
        assert all(math.isfinite(v) for v in values), name
        assert m.trades > 0, name


def test_family_walk_forward_chooses_on_training_windows_only(trend_data) -> None:
    grid = [TrendFilterParams(sma_days=n) for n in (5, 10, 20)]
    begin = int(trend_data.timeline[0])
    start, end = begin + 40 * DAY, int(trend_data.step_close[-1]) + 1
    report = family_walk_forward(
        trend_data, "trend_filter", BARE, start, end, grid, train_days=40, test_days=40
    )
    assert report.n_sets == 3 and report.grid["sma_days"] == [5, 10, 20]
    assert len(report.folds) >= 2
    for fr in report.folds:
        scores = [
            result_metrics(
                run_backtest(
                    trend_data,
                    BARE,
                    fr.fold.train_start_ms,
                    fr.fold.train_end_ms,
                    decisions=FamilyDecisions(trend_data, "trend_filter", p),
                )
            ).sharpe
            for p in grid
        ]
        assert fr.chosen == dataclasses.asdict(grid[int(np.argmax(scores))])
        assert fr.train_score == pytest.approx(max(scores))
    assert math.isfinite(report.out_of_sample.total_return)
    with pytest.raises(ValueError, match="before the data"):
        family_walk_forward(trend_data, "trend_filter", BARE, begin + DAY, end, grid, 40, 40)
