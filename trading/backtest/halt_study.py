"""Which drawdown halt (issue 15): every mechanism of ``trading.halt`` walked forward.

The halt mechanisms (``trading.halt``): **never** (SPEC §8 as written: a flat halted book waits
for ``resume``), **cool-off**, **reduced restart**, **volatility-scaled**, and **no halt**, each
with a small parameter grid declared here (``halt_trials``), on two traded policies: the SPEC
§7 rule policy with the engine's stops and scorer (the default backtest policy) and
``trend_tsmom`` at its default parameters (the strongest family of the policy research), with
its own exits. Everything else is the engine's default (12 % halt, fee 0.1 %, slippage 5 bps,
the live sizing, spot).

As in ``research.py``:

1. every trial (policy x halt parameters) runs once over the whole span: its daily returns are
   a column of that policy's trial matrix (PBO, deflated Sharpe);
2. every trial is backtested afresh on each fold's training window; a mechanism's search picks,
   per fold, the parameter set with the best training Sharpe averaged over the two policies
   (one halt serves both: it is an engine setting), ties to the earlier set;
3. the picks run on the test windows in order, the capital *and the halt's state* carried from
   one window to the next (a halt on at a window's end is still on at the next one's start;
   positions are closed at each window's end). Without the carried state every test window
   would start with a fresh halt, a 90-day cool-off in disguise.

A search is one mechanism's grid, or **any mechanism** (every trial: the mechanism is chosen
too). The verdict (``halt_verdict``) is declared before the run: among cool-off, reduced
restart and volatility-scaled, the search with the best out-of-sample Sharpe averaged over the
two policies wins if that average beats the never-lifting baseline's; the default is then its
parameters as chosen on the last training window. When none beats the baseline the most
defensive, the baseline, stays.

Everything here is computation (``bench/backtests_doc.py --only halt`` renders it).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from trading.backtest.data import BacktestData
from trading.backtest.engine import CARRIED, BacktestResult, halt_vol_ratios, run_backtest
from trading.backtest.metrics import Metrics, daily_returns, result_metrics
from trading.backtest.overfitting import DeflatedSharpe, PBOResult
from trading.backtest.params import BacktestParams
from trading.backtest.policy import DecisionSource, RuleDecisions
from trading.backtest.research import TrialMatrix as _Matrix
from trading.backtest.research import day_starts, family_engine, search_dsr, search_pbo
from trading.backtest.walkforward import Fold, _chain_metrics, rolling_folds, score
from trading.halt import COOLOFF, NEVER, OFF, REDUCED, VOL, HaltEpisode
from trading.models import Model
from trading.policies.base import FamilyDecisions

RULE = "rule"
TREND = "trend_tsmom"
POLICIES = (RULE, TREND)
ANY = "any mechanism"
MECHANISMS = (NEVER, COOLOFF, REDUCED, VOL, OFF)
CANDIDATES = (COOLOFF, REDUCED, VOL)  # what the issue asks to decide between
DAY_MS = 86_400_000

# the grids, declared before the run (20 trials per policy)
COOLOFF_HOURS = (24.0, 72.0, 168.0, 336.0)
REDUCED_HOURS = (72.0, 168.0)
REDUCED_SCALES = (0.25, 0.5)
REDUCED_RECOVER = (0.05, 0.10)
VOL_BANDS = ((0.5, 2.0), (0.75, 1.5))
VOL_HOURS = (None, 72.0, 168.0)


@dataclass(frozen=True)
class HaltTrial:
    """One halt configuration: its mechanism, its place in the grid, the engine settings."""

    mechanism: str
    index: int
    update: tuple[tuple[str, Any], ...]  # BacktestParams fields

    @property
    def key(self) -> str:
        return f"{self.mechanism}#{self.index}"

    def params(self, base: BacktestParams) -> BacktestParams:
        return base.model_copy(update=dict(self.update))

    def describe(self) -> dict[str, Any]:
        return dict(self.update)


def halt_trials() -> list[HaltTrial]:
    """Every halt configuration, the never-lifting baseline first (ties go to it)."""
    grids: list[tuple[str, list[dict[str, Any]]]] = [
        (NEVER, [{}]),
        (COOLOFF, [{"drawdown_cooloff_hours": h} for h in COOLOFF_HOURS]),
        (
            REDUCED,
            [
                {
                    "drawdown_cooloff_hours": h,
                    "drawdown_restart_scale": f,
                    "drawdown_restart_recover_pct": x,
                }
                for h, f, x in itertools.product(REDUCED_HOURS, REDUCED_SCALES, REDUCED_RECOVER)
            ],
        ),
        (
            VOL,
            [
                {"drawdown_vol_lo": lo, "drawdown_vol_hi": hi, "drawdown_cooloff_hours": h}
                for (lo, hi), h in itertools.product(VOL_BANDS, VOL_HOURS)
            ],
        ),
        (OFF, [{"drawdown_halt_pct": 0.99}]),
    ]
    out = []
    for mech, updates in grids:
        for k, upd in enumerate(updates):
            out.append(HaltTrial(mech, k, tuple(upd.items())))
    return out


def policy_base(policy: str, initial_cash: float) -> BacktestParams:
    """The engine of a traded policy: the defaults; ``trend_tsmom`` without stops or scorer."""
    base = BacktestParams(initial_cash=initial_cash)
    return base if policy == RULE else family_engine(base)


# ------------------------------------------------------------ worker side

_STATE: dict[str, Any] = {}


def _init_worker(data: BacktestData, memo: dict, trend_params: Any) -> None:
    base = BacktestParams()
    rule = RuleDecisions(data, base.default_position_pct, base.max_position_pct)
    rule.load(memo)
    trend = FamilyDecisions(
        data, TREND, trend_params, base.default_position_pct, base.max_position_pct
    )
    _STATE.clear()
    _STATE.update(data=data, sources={RULE: rule, TREND: trend})


def _source(policy: str) -> DecisionSource:
    return _STATE["sources"][policy]


def _run(policy: str, params: BacktestParams, start_ms: int, end_ms: int, halt_state=None):
    return run_backtest(
        _STATE["data"], params, start_ms, end_ms, _source(policy), halt_state=halt_state
    )


def _trial_task(args) -> tuple[np.ndarray, np.ndarray, list[float]]:
    policy, params, (start_ms, end_ms), folds = args
    full = _run(policy, params, start_ms, end_ms)
    daily = daily_returns(full.times, full.equity, params.initial_cash)
    train = [
        score(result_metrics(_run(policy, params, f.train_start_ms, f.train_end_ms)), "sharpe")
        for f in folds
    ]
    return day_starts(full.times), daily, train


def _chain_task(args) -> list[BacktestResult]:
    """The test windows in order, capital and halt state carried from one to the next."""
    policy, chosen, folds, cash = args
    out: list[BacktestResult] = []
    state = None
    for params, fold in zip(chosen, folds, strict=True):
        p = params.model_copy(update={"initial_cash": cash})
        result = _run(policy, p, fold.test_start_ms, fold.test_end_ms, state)
        out.append(result)
        cash, state = float(result.equity[-1]), result.halt_end
    return out


# ------------------------------------------------------------ report models


class EpisodeRow(Model):
    """One halt of a chained out-of-sample run."""

    start_ms: int
    end_ms: int | None  # None: still halted at the end
    drawdown: float
    threshold: float
    reason: str
    lifted_by: str | None


class PolicyResult(Model):
    policy: str
    out_of_sample: Metrics
    days_halted: float
    halts: int  # halts that began out of sample
    episodes: list[EpisodeRow]
    dsr: DeflatedSharpe | None  # against the mechanism's own trials of this policy
    dsr_all: DeflatedSharpe | None  # against every trial of this policy
    fold_sharpes: list[float]


class HaltSearch(Model):
    name: str  # a mechanism, or ANY
    n_trials: int  # per policy
    picks: list[str]  # the chosen trial per fold
    picked_params: list[dict[str, Any]]
    train_scores: list[float]  # the pick's mean training Sharpe per fold
    policies: dict[str, PolicyResult]
    pbo: PBOResult | None  # CSCV on the mean of the two policies' trial columns, OOS days

    @property
    def mean_sharpe(self) -> float:
        return float(np.mean([r.out_of_sample.sharpe for r in self.policies.values()]))


class HaltVerdict(Model):
    best_candidate: str  # the best of CANDIDATES by mean OOS Sharpe
    winner: str | None  # best_candidate when it beats the baseline, else None
    chosen: str  # the winner or the baseline
    margin: float  # best candidate's mean OOS Sharpe minus the baseline's
    default_params: dict[str, Any]  # the chosen search's pick on the last training window


class HaltReport(Model):
    span_start_ms: int
    oos_start_ms: int
    oos_end_ms: int
    train_days: int
    test_days: int
    n_splits: int
    trials_per_policy: int
    trials: dict[str, int]  # per mechanism
    searches: list[HaltSearch]  # each mechanism, then ANY
    verdict: HaltVerdict
    engine_runs: int
    seconds: float


# ------------------------------------------------------------ pieces


def chain_episodes(chain: list[BacktestResult]) -> list[HaltEpisode]:
    """The halts of chained windows, a halt carried over into the next window joined to the
    episode it continues."""
    out: list[HaltEpisode] = []
    for r in chain:
        for ep in r.halts:
            if ep.reason == CARRIED and out and out[-1].end_ms is None:
                last = out[-1]
                out[-1] = HaltEpisode(
                    last.start_ms,
                    last.drawdown,
                    last.threshold,
                    last.peak,
                    last.equity,
                    last.reason,
                    ep.end_ms,
                    ep.lifted_by,
                )
            else:
                out.append(ep)
    return out


def days_halted(episodes: list[HaltEpisode], start_ms: int, end_ms: int) -> float:
    total = 0
    for ep in episodes:
        a = max(ep.start_ms, start_ms)
        b = min(end_ms if ep.end_ms is None else ep.end_ms, end_ms)
        total += max(0, b - a)
    return total / DAY_MS


def pick(scores: np.ndarray, members: np.ndarray) -> list[int]:
    """Per fold, the member with the best mean training Sharpe over the policies (scores:
    policies x trials x folds); ties to the earlier member."""
    mean = np.mean(scores, axis=0)
    sub = mean[members]
    return [int(members[int(np.argmax(sub[:, k]))]) for k in range(mean.shape[1])]


def halt_verdict(searches: list[HaltSearch]) -> HaltVerdict:
    by = {s.name: s for s in searches}
    base = by[NEVER]
    best = max((by[m] for m in CANDIDATES if m in by), key=lambda s: s.mean_sharpe)
    margin = best.mean_sharpe - base.mean_sharpe
    winner = best.name if margin > 0 else None
    chosen = by[winner] if winner else base
    return HaltVerdict(
        best_candidate=best.name,
        winner=winner,
        chosen=chosen.name,
        margin=margin,
        default_params=chosen.picked_params[-1],
    )


# ------------------------------------------------------------ driver


def run_halt_study(
    data: BacktestData,
    span_start_ms: int,
    oos_start_ms: int,
    oos_end_ms: int,
    initial_cash: float = 5_000.0,
    train_days: int = 360,
    test_days: int = 90,
    n_splits: int = 16,
    workers: int | None = None,
    trials: list[HaltTrial] | None = None,
    trend_params: Any = None,
) -> HaltReport:
    """Every halt trial on both policies, walked forward per mechanism and across all."""
    began = time.perf_counter()
    trials = halt_trials() if trials is None else trials
    folds: list[Fold] = rolling_folds(oos_start_ms, oos_end_ms, train_days, test_days)
    if not folds:
        raise ValueError("no test window between the out-of-sample start and end")
    if span_start_ms > folds[0].train_start_ms:
        raise ValueError("the span must start at or before the first training window")
    if any(t.mechanism == VOL for t in trials):
        halt_vol_ratios(data)  # computed once here, shipped to the workers with the data
    base = BacktestParams()
    rule = RuleDecisions(data, base.default_position_pct, base.max_position_pct)
    t0, _ = data.steps_between(span_start_ms, None)
    _, t1 = data.steps_between(None, oos_end_ms)
    rule.precompute(range(t0, t1))
    init = (data, rule.export(), trend_params)
    workers = max(1, workers or os.cpu_count() or 1)
    pool = None
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init)
        mapper = pool.map
    else:
        _init_worker(*init)
        mapper = map
    span = (span_start_ms, oos_end_ms)
    bases = {p: policy_base(p, initial_cash) for p in POLICIES}
    try:
        tasks = [(p, t.params(bases[p]), span, folds) for p in POLICIES for t in trials]
        rows = list(mapper(_trial_task, tasks))
        n = len(trials)
        matrices = {}
        for i, p in enumerate(POLICIES):
            part = rows[i * n : (i + 1) * n]
            days = part[0][0]
            matrices[p] = _Matrix(
                days,
                np.column_stack([r[1] for r in part]),
                [t.key for t in trials],
                [t.mechanism for t in trials],
            )
        scores = np.array([[r[2] for r in rows[i * n : (i + 1) * n]] for i in range(2)])
        names = [m for m in MECHANISMS if any(t.mechanism == m for t in trials)]
        members = {
            m: np.array([k for k, t in enumerate(trials) if t.mechanism == m]) for m in names
        }
        members[ANY] = np.arange(n)
        chosen = {m: pick(scores, idx) for m, idx in members.items()}
        chain_tasks = [
            (p, [trials[k].params(bases[p]) for k in chosen[m]], folds, initial_cash)
            for m in chosen
            for p in POLICIES
        ]
        chains = list(mapper(_chain_task, chain_tasks))
    finally:
        if pool is not None:
            pool.shutdown()
    searches = []
    for j, m in enumerate(chosen):
        policies = {}
        for i, p in enumerate(POLICIES):
            chain = chains[j * len(POLICIES) + i]
            oos = matrices[p].between(oos_start_ms, oos_end_ms)
            daily = daily_returns(
                np.concatenate([r.times for r in chain]),
                np.concatenate([r.equity for r in chain]),
                initial_cash,
            )
            episodes = chain_episodes(chain)
            policies[p] = PolicyResult(
                policy=p,
                out_of_sample=_chain_metrics(chain, initial_cash),
                days_halted=days_halted(episodes, oos_start_ms, oos_end_ms),
                halts=sum(1 for e in episodes if e.start_ms >= oos_start_ms),
                episodes=[
                    EpisodeRow(
                        start_ms=e.start_ms,
                        end_ms=e.end_ms,
                        drawdown=e.drawdown,
                        threshold=e.threshold if math.isfinite(e.threshold) else 0.0,
                        reason=e.reason,
                        lifted_by=e.lifted_by,
                    )
                    for e in episodes
                ],
                dsr=search_dsr(daily, oos.returns[:, members[m]]),
                dsr_all=search_dsr(daily, oos.returns),
                fold_sharpes=[result_metrics(r).sharpe for r in chain],
            )
        blend = _Matrix(
            matrices[RULE].days_ms,
            (matrices[RULE].returns + matrices[TREND].returns) / 2,
            matrices[RULE].keys,
            matrices[RULE].families,
        ).between(oos_start_ms, oos_end_ms)
        mean = np.mean(scores, axis=0)
        searches.append(
            HaltSearch(
                name=m,
                n_trials=len(members[m]),
                picks=[trials[k].key for k in chosen[m]],
                picked_params=[trials[k].describe() for k in chosen[m]],
                train_scores=[
                    float(mean[k, f]) if math.isfinite(mean[k, f]) else 0.0
                    for f, k in enumerate(chosen[m])
                ],
                policies=policies,
                pbo=search_pbo(blend, members[m], n_splits),
            )
        )
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.mechanism] = counts.get(t.mechanism, 0) + 1
    return HaltReport(
        span_start_ms=span_start_ms,
        oos_start_ms=oos_start_ms,
        oos_end_ms=oos_end_ms,
        train_days=train_days,
        test_days=test_days,
        n_splits=n_splits,
        trials_per_policy=len(trials),
        trials=counts,
        searches=searches,
        verdict=halt_verdict(searches),
        engine_runs=len(POLICIES) * len(trials) * (1 + len(folds)) + len(chain_tasks) * len(folds),
        seconds=time.perf_counter() - began,
    )
