"""Walk-forward over a family's parameter grid, with the folds and scoring of the backtester's.

``trading.backtest.walkforward.walk_forward`` searches ``BacktestParams`` with the rule policy
built in; here the grid is the family's own (``Family.grid``) and the engine parameters stay
``base``. Same protocol: rolling folds, every set scored on the training window alone, the
best (ties: the earlier set) run on the test window with the capital the previous fold ended
with, only test windows reported. Each set's weights are computed once over all the data:
they are causal, so a window sees nothing of the bars after it.

Runs in this process, one set after another (a grid of 6-20 sets on one or a few symbols
takes seconds; the rule policy's grid needs the process pool, these do not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from trading.backtest.data import BacktestData
from trading.backtest.engine import run_backtest
from trading.backtest.metrics import result_metrics
from trading.backtest.params import BacktestParams
from trading.backtest.walkforward import (
    OBJECTIVES,
    FoldResult,
    WalkForwardReport,
    _chain_metrics,
    rolling_folds,
    score,
)
from trading.policies.base import Family, FamilyDecisions, check, get_family


def family_walk_forward(
    data: BacktestData,
    family: Family | str,
    base: BacktestParams,
    start_ms: int,
    end_ms: int,
    grid: Sequence[Any] | None = None,
    train_days: int = 360,
    test_days: int = 90,
    objective: str = "sharpe",
) -> WalkForwardReport:
    """Rolling walk-forward of ``grid`` (default: the family's) over ``[start_ms, end_ms)``.

    The report's ``grid`` lists each parameter field as a column over the sets (set k is the
    k-th entry of every list); ``chosen`` is the chosen set's fields.
    """
    import time

    began = time.perf_counter()
    fam = get_family(family) if isinstance(family, str) else family
    sets = list(fam.grid if grid is None else grid)
    check(bool(sets), "empty grid")
    check(objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}")
    folds = rolling_folds(start_ms, end_ms, train_days, test_days)
    check(bool(folds), "no test window between start and end")
    check(
        folds[0].train_start_ms >= int(data.timeline[0]),
        f"the first training window ({train_days} days before start) starts before the data",
    )
    sources = [
        FamilyDecisions(data, fam, p, base.default_position_pct, base.max_position_pct)
        for p in sets
    ]
    table = np.array(
        [
            [
                score(
                    result_metrics(
                        run_backtest(data, base, f.train_start_ms, f.train_end_ms, decisions=d)
                    ),
                    objective,
                )
                for f in folds
            ]
            for d in sources
        ]
    )  # sets x folds
    chosen = [int(np.argmax(table[:, k])) for k in range(len(folds))]
    results = []
    cash = base.initial_cash
    for k, fold in enumerate(folds):
        params = base.model_copy(update={"initial_cash": cash})
        result = run_backtest(
            data, params, fold.test_start_ms, fold.test_end_ms, decisions=sources[chosen[k]]
        )
        results.append(result)
        cash = float(result.equity[-1])
    names = [f.name for f in dataclasses.fields(sets[0])]
    return WalkForwardReport(
        objective=objective,
        grid={n: [getattr(p, n) for p in sets] for n in names},
        n_sets=len(sets),
        folds=[
            FoldResult(
                fold=fold,
                chosen=dataclasses.asdict(sets[chosen[k]]),
                train_score=float(table[chosen[k], k]),
                test=result_metrics(results[k]),
            )
            for k, fold in enumerate(folds)
        ],
        out_of_sample=_chain_metrics(results, base.initial_cash),
        seconds=time.perf_counter() - began,
    )
