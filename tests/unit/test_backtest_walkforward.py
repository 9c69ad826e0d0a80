"""Walk-forward: folds, grid, choice on the training window only, out-of-sample chaining."""

from __future__ import annotations

import numpy as np
import pytest

from trading.backtest.data import prepare_data
from trading.backtest.engine import run_backtest
from trading.backtest.metrics import result_metrics
from trading.backtest.params import BacktestParams
from trading.backtest.walkforward import expand_grid, rolling_folds, walk_forward
from trading.market_data import generate_market

DAY = 86_400_000


def test_rolling_folds_tile_the_test_period() -> None:
    folds = rolling_folds(100 * DAY, 300 * DAY, train_days=60, test_days=90)
    assert [(f.test_start_ms // DAY, f.test_end_ms // DAY) for f in folds] == [
        (100, 190),
        (190, 280),
        (280, 300),
    ]
    assert all(f.train_end_ms == f.test_start_ms for f in folds)
    assert all(f.test_start_ms - f.train_start_ms == 60 * DAY for f in folds)


def test_expand_grid_order_and_unknown_names() -> None:
    sets = expand_grid(BacktestParams(), {"stop_loss_pct": [0.03, 0.05], "trail_pct": [0.1, 0.2]})
    assert [(p.stop_loss_pct, p.trail_pct) for p in sets] == [
        (0.03, 0.1),
        (0.03, 0.2),
        (0.05, 0.1),
        (0.05, 0.2),
    ]
    with pytest.raises(ValueError, match="unknown parameter"):
        expand_grid(BacktestParams(), {"no_such": [1]})


def test_walk_forward_picks_on_train_and_reports_test_only() -> None:
    market = generate_market(["BTC/USDT", "ETH/USDT"], "4h", 1400, seed=8)
    data = prepare_data(market, "4h")
    start = int(data.timeline[0]) + 120 * DAY
    end = int(data.timeline[-1])
    grid = {"decision_every_bars": [1, 6], "stop_loss_pct": [0.03, 0.06]}
    base = BacktestParams(initial_cash=5000)
    report = walk_forward(data, base, start, end, grid, train_days=80, test_days=40, workers=2)
    assert report.n_sets == 4 and len(report.folds) >= 3
    sets = expand_grid(base, grid)
    cash = base.initial_cash
    for fr in report.folds:
        f = fr.fold
        scores = [
            result_metrics(run_backtest(data, p, f.train_start_ms, f.train_end_ms)).sharpe
            for p in sets
        ]
        best = sets[int(np.argmax(scores))]
        assert fr.chosen == {"decision_every_bars": best.decision_every_bars,
                             "stop_loss_pct": best.stop_loss_pct}  # fmt: skip
        assert fr.train_score == pytest.approx(max(scores))
        assert fr.test.start_ms == f.test_start_ms  # reported on the window after training
        assert fr.test.initial_equity == pytest.approx(cash)
        test = run_backtest(
            data, best.model_copy(update={"initial_cash": cash}), f.test_start_ms, f.test_end_ms
        )
        assert fr.test.total_return == pytest.approx(result_metrics(test).total_return)
        cash = fr.test.final_equity
    oos = report.out_of_sample
    assert oos.start_ms == report.folds[0].fold.test_start_ms
    assert oos.final_equity == pytest.approx(report.folds[-1].test.final_equity)
    assert oos.trades == sum(fr.test.trades for fr in report.folds)


def test_grid_must_share_the_policy_sizing() -> None:
    data = prepare_data(generate_market(["BTC/USDT"], "4h", 400, seed=1), "4h")
    with pytest.raises(ValueError, match="share default_position_pct"):
        walk_forward(
            data,
            BacktestParams(),
            int(data.timeline[0]) + 30 * DAY,
            int(data.timeline[-1]),
            {"default_position_pct": [0.1, 0.2]},
            train_days=20,
            test_days=10,
            workers=1,
        )
