"""Walk-forward parameter search (SPEC §10): choose on a training window, report the next one.

Folds are rolling: test windows of ``test_days`` one after the other from ``start_ms``, each
with the ``train_days`` before it as its training window. For every fold, every parameter set
of the grid is backtested on the training window alone (fresh capital, flat book, features
warmed up on the bars before it); the best by the objective (Sharpe; ties go to the earlier
set in grid order) is then backtested on the test window. Only test-window results are
reported: each fold's chosen parameters and metrics, and the test windows chained into one
out-of-sample equity curve (each fold starts with the capital the previous one ended with;
positions are closed at each window's end).

The grid runs on a process pool (``workers`` processes); the data and the rule policy's memo
are built once in the parent and handed to each process at start.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from trading.backtest.data import BacktestData
from trading.backtest.engine import run_backtest
from trading.backtest.metrics import Metrics, compute_metrics, result_metrics
from trading.backtest.params import BacktestParams
from trading.backtest.policy import RuleDecisions
from trading.market_data import interval_ms
from trading.models import ClosedTrade, Model

DAY_MS = 86_400_000
OBJECTIVES = ("sharpe", "total_return", "sortino", "cagr")

# 3 x 3 x 3 x 3 x 2 = 162 parameter sets; none of them changes the rule policy's sizing, so
# the whole grid shares one memo of ``decide``.
DEFAULT_GRID: dict[str, list[object]] = {
    "decision_every_bars": [1, 2, 6],
    "stop_loss_pct": [0.03, 0.04, 0.06],
    "trail_activate_pct": [0.05, 0.08, 0.12],
    "trail_pct": [0.06, 0.12, 0.18],
    "exit_score": [-0.3, -0.5],
}


class Fold(Model):
    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int


class FoldResult(Model):
    fold: Fold
    chosen: dict[str, object]  # the grid values of the chosen set
    train_score: float
    test: Metrics


class WalkForwardReport(Model):
    objective: str
    grid: dict[str, list[object]]
    n_sets: int
    folds: list[FoldResult]
    out_of_sample: Metrics
    seconds: float = 0.0


def expand_grid(base: BacktestParams, grid: dict[str, list[object]]) -> list[BacktestParams]:
    """Every combination of ``grid`` values on top of ``base``, in a stable order."""
    names = list(grid)
    for name in names:
        if name not in BacktestParams.model_fields:
            raise ValueError(f"unknown parameter in grid: {name}")
    combos = itertools.product(*(grid[n] for n in names))
    return [base.model_copy(update=dict(zip(names, c, strict=True))) for c in combos]


def rolling_folds(start_ms: int, end_ms: int, train_days: int, test_days: int) -> list[Fold]:
    """Test windows from ``start_ms`` on, each after its training window; the last may be
    shorter (it ends at ``end_ms``)."""
    if train_days <= 0 or test_days <= 0:
        raise ValueError("train_days and test_days must be positive")
    folds = []
    t = start_ms
    while t < end_ms:
        folds.append(
            Fold(
                train_start_ms=t - train_days * DAY_MS,
                train_end_ms=t,
                test_start_ms=t,
                test_end_ms=min(end_ms, t + test_days * DAY_MS),
            )
        )
        t += test_days * DAY_MS
    return folds


def score(metrics: Metrics, objective: str) -> float:
    value = float(getattr(metrics, objective))
    return value if np.isfinite(value) else -np.inf


# ------------------------------------------------------------ worker side

_STATE: dict[str, object] = {}


def _init_worker(data: BacktestData, memo: dict, position_pct: float, max_pct: float) -> None:
    decisions = RuleDecisions(data, position_pct, max_pct)
    decisions.load(memo)
    _STATE.update(data=data, decisions=decisions)


def _train_scores(args: tuple[BacktestParams, list[Fold], str]) -> list[float]:
    params, folds, objective = args
    data = _STATE["data"]
    decisions = _STATE["decisions"]
    out = []
    for fold in folds:
        result = run_backtest(
            data, params, fold.train_start_ms, fold.train_end_ms, decisions=decisions
        )
        out.append(score(result_metrics(result), objective))
    return out


def _test_run(args: tuple[BacktestParams, Fold]):
    params, fold = args
    result = run_backtest(
        _STATE["data"],
        params,
        fold.test_start_ms,
        fold.test_end_ms,
        decisions=_STATE["decisions"],
    )
    return result


# ------------------------------------------------------------ driver


def _chain_metrics(results: list, initial: float) -> Metrics:
    times = np.concatenate([r.times for r in results])
    equity = np.concatenate([r.equity for r in results])
    exposure = np.concatenate([r.exposure for r in results])
    trades: list[ClosedTrade] = [t for r in results for t in r.trades]
    first_open = results[0].first_open
    last_close = {}
    for s, closes in results[-1].closes.items():
        finite = closes[np.isfinite(closes)]
        if len(finite):
            last_close[s] = float(finite[-1])
    return compute_metrics(
        times,
        equity,
        exposure,
        trades,
        initial,
        interval_ms(results[0].interval),
        first_open,
        last_close,
        results[0].params.fee_rate,
        sum(r.fees_paid for r in results),
        sum(r.funding_paid for r in results),
    )


def walk_forward(
    data: BacktestData,
    base: BacktestParams,
    start_ms: int,
    end_ms: int,
    grid: dict[str, list[object]] | None = None,
    train_days: int = 360,
    test_days: int = 90,
    objective: str = "sharpe",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> WalkForwardReport:
    """Rolling walk-forward of ``grid`` over ``[start_ms, end_ms)`` (test windows only)."""
    import time

    began = time.perf_counter()
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    grid = grid or DEFAULT_GRID
    sets = expand_grid(base, grid)
    folds = rolling_folds(start_ms, end_ms, train_days, test_days)
    if not folds:
        raise ValueError("no test window between start and end")
    if folds[0].train_start_ms < int(data.timeline[0]):
        from datetime import UTC, datetime, timedelta

        first = datetime.fromtimestamp(int(data.timeline[0]) / 1000, UTC)
        earliest = (first + timedelta(days=train_days)).strftime("%Y-%m-%d")
        raise ValueError(
            f"the first training window ({train_days} days before --start) starts before the "
            f"data ({first:%Y-%m-%d}): the earliest valid --start is {earliest}"
        )
    sizing = {(p.default_position_pct, p.max_position_pct) for p in sets}
    if len(sizing) != 1:
        raise ValueError("grid sets must share default_position_pct and max_position_pct")
    position_pct, max_pct = sizing.pop()
    decisions = RuleDecisions(data, position_pct, max_pct)
    t0, _ = data.steps_between(folds[0].train_start_ms, None)
    _, t1 = data.steps_between(None, end_ms)
    decisions.precompute(range(t0, t1))
    workers = workers or min(len(sets), os.cpu_count() or 1)
    init_args = (data, decisions.export(), position_pct, max_pct)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init_args) as pool:
        scores: list[list[float]] = []
        for row in pool.map(_train_scores, [(p, folds, objective) for p in sets], chunksize=4):
            scores.append(row)
            if progress is not None:
                progress(1)
        table = np.array(scores)  # sets x folds
        chosen = [int(np.argmax(table[:, k])) for k in range(len(folds))]
        # each fold starts with the capital the previous one ended with: run them in order
        results = []
        cash = base.initial_cash
        for k, fold in enumerate(folds):
            params = sets[chosen[k]].model_copy(update={"initial_cash": cash})
            result = pool.submit(_test_run, (params, fold)).result()
            results.append(result)
            cash = float(result.equity[-1])
    fold_results = [
        FoldResult(
            fold=fold,
            chosen={name: getattr(sets[chosen[k]], name) for name in grid},
            train_score=float(table[chosen[k], k]),
            test=result_metrics(results[k]),
        )
        for k, fold in enumerate(folds)
    ]
    return WalkForwardReport(
        objective=objective,
        grid=grid,
        n_sets=len(sets),
        folds=fold_results,
        out_of_sample=_chain_metrics(results, base.initial_cash),
        seconds=time.perf_counter() - began,
    )


def chosen_table(report: WalkForwardReport) -> Iterable[dict[str, object]]:
    """One row per fold: window, chosen parameters, train score, test figures."""
    for fr in report.folds:
        yield {
            "test_start_ms": fr.fold.test_start_ms,
            "test_end_ms": fr.fold.test_end_ms,
            **fr.chosen,
            "train_score": fr.train_score,
            "test_return": fr.test.total_return,
            "test_sharpe": fr.test.sharpe,
            "test_mdd": fr.test.max_drawdown,
            "test_trades": fr.test.trades,
        }
