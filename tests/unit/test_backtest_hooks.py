"""The learner, macro and crypto-regime modules wired into the backtester as hooks."""

from __future__ import annotations

import pytest

from trading.backtest.data import prepare_data
from trading.backtest.engine import Hooks, run_backtest
from trading.backtest.hooks import MacroSchedule, ThompsonLearner, VolRegimeSchedule
from trading.backtest.params import BacktestParams
from trading.learner import STARTING_WEIGHTS
from trading.macro import EXPOSURE_SCALE, SERIES_IDS, load_fred_csv, macro_regime
from trading.market_data import generate_market, parse_timestamp_ms
from trading.regime_crypto import HmmParams

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


@pytest.fixture(scope="module")
def data():
    return prepare_data(generate_market(SYMBOLS, "4h", 1300, seed=21), "4h")


def test_learner_hook_is_seeded_and_learns(data) -> None:
    start = int(data.timeline[250])
    params = BacktestParams(drawdown_halt_pct=0.5)
    runs = []
    for _ in range(2):
        learner = ThompsonLearner(seed=5)
        result = run_backtest(data, params, start, hooks=Hooks(learner=learner))
        runs.append((learner, [t.model_dump() for t in result.trades]))
    (first, trades), (_, again) = runs
    assert trades == again  # same seed, same draws, same trades
    assert first.state.n_trades == len(trades) > 5
    assert first.group_weights("unknown") != STARTING_WEIGHTS  # past the warm-up: draws
    plain = run_backtest(data, params, start)
    sizes = [t["qty"] * t["entry_price"] for t in trades]
    assert sizes != [t.qty * t.entry_price for t in plain.trades]  # weights scale BUY sizes


def test_macro_schedule_is_point_in_time(data_dir) -> None:
    series = {sid: load_fred_csv(data_dir / f"fred_{sid}.csv", sid) for sid in SERIES_IDS}
    schedule = MacroSchedule(series)
    t = parse_timestamp_ms("2025-06-15T12:00:00Z")
    regime = macro_regime(series, parse_timestamp_ms("2025-06-15"))
    assert schedule(t) == (regime.exposure_scale, regime.trail_multiplier)
    assert schedule(t)[0] in set(EXPOSURE_SCALE.values())


def test_vol_regime_schedule_labels_each_day_without_look_ahead() -> None:
    bars = generate_market(["BTC/USDT"], "4h", 6 * 310, seed=2)["BTC/USDT"]
    start, end = bars[6 * 250].open_time, bars[-1].close_time + 1
    params = HmmParams(state_counts=[2], n_init=1, min_days=120)
    schedule = VolRegimeSchedule(bars, start, end, params)
    labels = {schedule(b.close_time) for b in bars[6 * 250 :]}
    assert labels <= {"low", "high"} and labels
    cut = VolRegimeSchedule([b for b in bars if b.open_time < start + 30 * 86_400_000],
                            start, end, params)  # fmt: skip
    probe = start + 20 * 86_400_000
    assert cut(probe) == schedule(probe)  # later bars do not change an earlier label
