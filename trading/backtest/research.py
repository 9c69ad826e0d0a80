"""Policy research (issue 15): every candidate on one span, walk-forward, PBO and DSR.

A comparison of policies is only as honest as its count of trials, so every candidate is
declared up front (a parameter set of the rule policy, of a policy family, or cash) and:

1. run once over the whole span (train and test periods together); its *daily* returns are
   one column of the trial matrix that PBO (CSCV) and the deflated Sharpe ratio read;
2. backtested afresh on every fold's training window (flat book, fresh capital, features warm
   from the bars before it): the fold's choice is the best training Sharpe (ties: the earlier
   candidate), never anything seen in a test window;
3. the chosen candidates are re-run on the test windows with the engine, in order, each fold
   starting with the capital the previous one ended with (positions closed at each window's
   end), per family and across all candidates (the family is then part of the search).

Engine settings (``research_params``, ``family_engine``), the same for every candidate unless
said: fee 0.1 % per side, slippage 5 bps, the live sizing (20 % x weight or confidence, 30 %
per position, 70 % in total), spot, and the drawdown halt *off*: the halt never lifts without
a manual resume, so a three-year trial would be a flat line after its first 12 % drawdown and
the trial matrix would measure the halt, not the policy. The rule policy keeps the engine's
stops and scorer (its grid varies them); a family runs without both (its exits are its own,
and without per-bar layers the engine skips the quiet bars of a held position: runs are about
five times faster). Cash never trades.

Variants (``variant_candidates``), each its own family of configurations and so more trials:
the rule policy with its exit plan (``rule_exit_plans``), long/short (a perpetual run with
``allow_shorts``: the mirrored trend rules, funding paid and received from the funding files
where they exist) and both, on ``VARIANT_RULE_GRID``; and each policy family long/short
(``long_only=False`` on a perpetual run with ``allow_shorts``), on its own default grid. Extra
searches over named subsets of the configurations (``subsets``: the rule policy's plain sets
on the variants' sub-grid, a like-for-like baseline) add no trials; paired comparisons
(``pairs``) set each configuration against its twin on the out-of-sample days, no choice made.

Everything here is computation: no printing, no files (``bench/backtests_doc.py`` renders).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from trading.backtest.data import BacktestData
from trading.backtest.engine import BacktestResult, run_backtest
from trading.backtest.metrics import DAY_MS, Metrics, daily_returns, result_metrics
from trading.backtest.overfitting import (
    DeflatedSharpe,
    PBOResult,
    column_sharpes,
    cscv_draws,
    deflated_sharpe_ratio,
    pbo_cscv,
)
from trading.backtest.params import BacktestParams
from trading.backtest.policy import DecisionSource, Intent, RuleDecisions
from trading.backtest.walkforward import (
    DEFAULT_GRID,
    Fold,
    _chain_metrics,
    expand_grid,
    rolling_folds,
    score,
)
from trading.models import Action, Model
from trading.policies.base import FamilyDecisions, families, get_family

CASH = "cash"
RULE = "rule"
ALL = "all"
RULE_PLAN = "rule_plan"  # the rule policy with its exit plan, long-only
RULE_LS = "rule_ls"  # long/short (perpetual), no plan
RULE_LS_PLAN = "rule_ls_plan"  # long/short with the exit plan
RULE_SUB = "rule_sub"  # the plain rule policy on the variants' sub-grid (a subset, no trials)
LS_SUFFIX = "_ls"  # a policy family long/short
# the rule variants' grid: the dimensions a plan reads (stop, target) and the cadence, the rest
# at the defaults (trail 12 %, exit score -0.3): 27 sets, each among the 162 of DEFAULT_GRID
VARIANT_RULE_GRID: dict[str, list[object]] = {
    "decision_every_bars": [1, 2, 6],
    "stop_loss_pct": [0.03, 0.04, 0.06],
    "trail_activate_pct": [0.05, 0.08, 0.12],
}
DSR_LEVEL = 0.95  # a deflated Sharpe ratio at or above this is "significant"
PBO_LIMIT = 0.5
TARGET_SHARPE = 0.5
TARGET_MAX_DD = -0.25


# ------------------------------------------------------------ candidates


@dataclass(frozen=True)
class Candidate:
    """One configuration of the search: a family (``rule``, a policy family or ``cash``),
    its position in that family's grid, the engine parameters and the family's parameters."""

    family: str
    index: int
    engine: BacktestParams
    policy: Any = None  # the family's parameter dataclass; None for the rule policy and cash
    grid_values: tuple[tuple[str, object], ...] = ()  # rule: the grid values on the engine
    source: str = ""  # what decides (``rule``, a registered family, ``cash``); "" = ``family``

    @property
    def key(self) -> str:
        return CASH if self.family == CASH else f"{self.family}#{self.index}"

    @property
    def decider(self) -> str:
        return self.source or self.family

    def describe(self) -> dict[str, object]:
        """The parameters that identify it (the grid values, or the family's fields)."""
        if self.policy is not None:
            return dataclasses.asdict(self.policy)
        return dict(self.grid_values)


def research_params(initial_cash: float = 5_000.0) -> BacktestParams:
    """The engine's defaults (costs, sizing) with the drawdown halt off (module docstring)."""
    return BacktestParams(initial_cash=initial_cash, drawdown_halt_pct=0.99)


def family_engine(base: BacktestParams) -> BacktestParams:
    """A family decides its own exits: no scorer, no stops, no drawdown guard."""
    return base.model_copy(
        update={
            "agent_every_bars": 0,
            "stop_loss_pct": 0.0,
            "trail_pct": 0.0,
            "max_drawdown_guard_pct": 0.0,
        }
    )


def rule_candidates(
    base: BacktestParams, grid: dict[str, list[object]] | None = None
) -> list[Candidate]:
    grid = DEFAULT_GRID if grid is None else grid
    names = list(grid)
    return [
        Candidate(RULE, k, p, grid_values=tuple((n, getattr(p, n)) for n in names))
        for k, p in enumerate(expand_grid(base, grid))
    ]


def family_candidates(
    base: BacktestParams, name: str, grid: Sequence[Any] | None = None
) -> list[Candidate]:
    fam = get_family(name)
    sets = fam.grid if grid is None else grid
    engine = family_engine(base)
    return [Candidate(fam.name, k, engine, policy=p) for k, p in enumerate(sets)]


def long_short_engine(base: BacktestParams) -> BacktestParams:
    """A long/short run: USDⓈ-M perpetuals (funding charged from the funding files), shorts."""
    return base.model_copy(update={"perpetual": True, "allow_shorts": True})


def rule_variant_candidates(
    base: BacktestParams,
    grid: dict[str, list[object]] | None = None,
    plans: bool = False,
    long_short: bool = False,
) -> list[Candidate]:
    """The rule policy's grid with the exit plan and/or long/short, as its own family."""
    grid = VARIANT_RULE_GRID if grid is None else grid
    name = {(True, False): RULE_PLAN, (False, True): RULE_LS, (True, True): RULE_LS_PLAN}.get(
        (plans, long_short)
    )
    if name is None:
        raise ValueError("a rule variant has the exit plan, long/short or both")
    engine = base.model_copy(update={"rule_exit_plans": plans})
    if long_short:
        engine = long_short_engine(engine)
    return [dataclasses.replace(c, family=name, source=RULE) for c in rule_candidates(engine, grid)]


def family_ls_candidates(
    base: BacktestParams, name: str, grid: Sequence[Any] | None = None
) -> list[Candidate]:
    """A family's grid long/short (``long_only=False``, perpetual, shorts allowed)."""
    fam = get_family(name)
    sets = fam.grid if grid is None else grid
    engine = long_short_engine(family_engine(base))
    return [
        Candidate(name + LS_SUFFIX, k, engine, dataclasses.replace(p, long_only=False), (), name)
        for k, p in enumerate(sets)
    ]


def variant_candidates(
    base: BacktestParams,
    rule_grid: dict[str, list[object]] | None = None,
    family_grids: dict[str, Sequence[Any]] | None = None,
    rule: bool = True,
) -> list[Candidate]:
    """Every variant (module docstring), after ``default_candidates``: the rule policy with
    the plan, long/short, and both; then each family long/short."""
    out: list[Candidate] = []
    if rule:
        for plans, ls in ((True, False), (False, True), (True, True)):
            out += rule_variant_candidates(base, rule_grid, plans, ls)
    names = list(families()) if family_grids is None else list(family_grids)
    for name in names:
        out += family_ls_candidates(
            base, name, None if family_grids is None else family_grids[name]
        )
    return out


def same_sets(cands: list[Candidate], family: str, like: list[Candidate]) -> list[str]:
    """Keys of ``family``'s candidates with the engine values of ``like``'s grid, in the order
    of ``like`` (the plain twin of each variant configuration)."""
    names = list(DEFAULT_GRID)
    by_values = {
        tuple(getattr(c.engine, n) for n in names): c.key for c in cands if c.family == family
    }
    out = []
    for c in like:
        key = by_values.get(tuple(getattr(c.engine, n) for n in names))
        if key is None:
            raise ValueError(f"{c.key}: no {family} configuration with the same parameters")
        out.append(key)
    return out


def default_candidates(
    base: BacktestParams,
    rule_grid: dict[str, list[object]] | None = None,
    family_grids: dict[str, Sequence[Any]] | None = None,
    rule: bool = True,
) -> list[Candidate]:
    """Cash first (so a tie at a Sharpe of 0 goes to not trading), the rule policy's grid,
    then every registered family with its default grid (or ``family_grids``' subset)."""
    out = [Candidate(CASH, 0, base)]
    if rule:
        out += rule_candidates(base, rule_grid)
    names = list(families()) if family_grids is None else list(family_grids)
    for name in names:
        out += family_candidates(base, name, None if family_grids is None else family_grids[name])
    return out


class CashDecisions:
    """A decision source that never acts (the cash baseline)."""

    def __init__(self, data: BacktestData) -> None:
        self.symbols = list(data.symbols)

    def intents(
        self, step: int, held: set[str], group_weights: dict[str, float] | None = None
    ) -> dict[str, Intent]:
        return {s: Intent(Action.HOLD, 0.0, 0.0, {}) for s in self.symbols}

    def active_steps(self, steps: np.ndarray, flat: bool = False) -> np.ndarray:
        return np.zeros(len(steps), dtype=bool)


# ------------------------------------------------------------ the trial matrix


@dataclass(frozen=True)
class TrialMatrix:
    """Daily returns (T x N) of N candidates over the same T UTC days, one column each."""

    days_ms: np.ndarray  # start (ms) of each row's UTC day
    returns: np.ndarray
    keys: list[str]
    families: list[str]

    def __post_init__(self) -> None:
        t, n = self.returns.shape
        if len(self.days_ms) != t or len(self.keys) != n or len(self.families) != n:
            raise ValueError("trial matrix: rows must match days, columns keys and families")

    def columns(self, family: str) -> np.ndarray:
        """Column indices of ``family`` (``all``: every column)."""
        if family == ALL:
            return np.arange(len(self.keys))
        return np.flatnonzero(np.asarray(self.families) == family)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.families:
            out[f] = out.get(f, 0) + 1
        return out

    def between(self, start_ms: int, end_ms: int) -> TrialMatrix:
        """Rows whose day starts in ``[start_ms, end_ms)``."""
        keep = (self.days_ms >= start_ms) & (self.days_ms < end_ms)
        return TrialMatrix(self.days_ms[keep], self.returns[keep], self.keys, self.families)


def day_starts(times_ms: np.ndarray) -> np.ndarray:
    """The UTC day of each return ``metrics.daily_returns`` gives (same bucketing)."""
    days = np.asarray(times_ms, dtype=np.int64) // DAY_MS
    last = np.append(np.flatnonzero(np.diff(days)), len(days) - 1)
    return days[last] * DAY_MS


# ------------------------------------------------------------ worker side

_STATE: dict[str, Any] = {}


def _init_worker(data: BacktestData, memos: dict[tuple[float, float, bool], tuple]) -> None:
    rules = {}
    for (pct, cap, shorts), (memo, short_memo) in memos.items():
        rules[(pct, cap, shorts)] = RuleDecisions(data, pct, cap, shorts=shorts)
        rules[(pct, cap, shorts)].load(memo)
        rules[(pct, cap, shorts)].load_short(short_memo)
    _STATE.clear()
    _STATE.update(data=data, rules=rules, sources={})


def _source(cand: Candidate) -> DecisionSource:
    sources: dict[str, DecisionSource] = _STATE["sources"]
    got = sources.get(cand.key)
    if got is None:
        data = _STATE["data"]
        p = cand.engine
        if cand.decider == CASH:
            got = CashDecisions(data)
        elif cand.decider == RULE:
            got = _STATE["rules"][(p.default_position_pct, p.max_position_pct, p.allow_shorts)]
        else:
            got = FamilyDecisions(
                data, cand.decider, cand.policy, p.default_position_pct, p.max_position_pct
            )
        sources[cand.key] = got
    return got


def _run(cand: Candidate, start_ms: int, end_ms: int, cash: float | None = None):
    params = cand.engine if cash is None else cand.engine.model_copy(update={"initial_cash": cash})
    return run_backtest(_STATE["data"], params, start_ms, end_ms, decisions=_source(cand))


def _candidate_task(
    args: tuple[Candidate, tuple[int, int], list[Fold]],
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """One candidate: daily returns over the whole span, Sharpe on every training window."""
    cand, (start_ms, end_ms), folds = args
    full = _run(cand, start_ms, end_ms)
    daily = daily_returns(full.times, full.equity, cand.engine.initial_cash)
    train = [
        score(result_metrics(_run(cand, f.train_start_ms, f.train_end_ms)), "sharpe") for f in folds
    ]
    return day_starts(full.times), daily, train


def _chain_task(args: tuple[list[Candidate], list[Fold], float]) -> list[BacktestResult]:
    """The test windows in order, each with the capital the previous one ended with."""
    chosen, folds, cash = args
    out = []
    for cand, fold in zip(chosen, folds, strict=True):
        result = _run(cand, fold.test_start_ms, fold.test_end_ms, cash)
        out.append(result)
        cash = float(result.equity[-1])
    return out


class _Runner:
    """The process pool (data and rule memos shipped once per process), or this process."""

    def __init__(self, workers: int, init_args: tuple) -> None:
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init_args)
        else:
            _init_worker(*init_args)

    def map(self, fn: Callable, tasks: list) -> list:
        if self.pool is None:
            return [fn(t) for t in tasks]
        return list(self.pool.map(fn, tasks))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _rule_memos(
    data: BacktestData, candidates: list[Candidate], start_ms: int, end_ms: int
) -> dict[tuple[float, float, bool], tuple]:
    """The rule policy's decisions per sizing and shorts, computed once here (the grid shares
    them; the exit plans are made in each process, at entries only)."""
    sizing = {
        (c.engine.default_position_pct, c.engine.max_position_pct, c.engine.allow_shorts)
        for c in candidates
        if c.decider == RULE
    }
    t0, _ = data.steps_between(start_ms, None)
    _, t1 = data.steps_between(None, end_ms)
    memos = {}
    for pct, cap, shorts in sorted(sizing):
        rule = RuleDecisions(data, pct, cap, shorts=shorts)
        rule.precompute(range(t0, t1))
        memos[(pct, cap, shorts)] = (rule.export(), rule.export_short())
    return memos


# ------------------------------------------------------------ report models


class FoldChoice(Model):
    test_start_ms: int
    test_end_ms: int
    chosen: str  # candidate key
    family: str
    params: dict[str, object]
    train_sharpe: float
    test: Metrics


class SearchResult(Model):
    """One walk-forward search: a family's grid, the rule grid, cash, or all candidates."""

    name: str
    n_trials: int  # configurations this search chose among
    folds: list[FoldChoice]
    out_of_sample: Metrics  # the test windows chained
    pbo: PBOResult | None  # CSCV on this search's trial columns over the OOS period
    pbo_best_families: dict[str, float] = {}  # share of CSCV splits whose IS-best is of each
    dsr: DeflatedSharpe | None  # chained OOS daily returns, n_trials = this search's
    dsr_all: DeflatedSharpe | None  # the same, n_trials = every configuration of the report


class Paired(Model):
    """Configurations against their twins (the same parameters, one thing changed), each on
    its whole-span run's out-of-sample days: no choice is made, so no trial is spent."""

    name: str
    n: int
    better: int  # twins whose Sharpe beats the base configuration's
    mean_base: float  # mean annualised Sharpe over the configurations
    mean_other: float
    median_diff: float  # median of (twin - base), annualised Sharpe
    mean_return_diff: float  # mean of (twin - base) compounded OOS return


class Checks(Model):
    """The corrections a default must pass (all of them)."""

    dsr_significant: bool  # DSR against every configuration >= DSR_LEVEL
    pbo_below_half: bool
    alpha_vs_basket: bool
    beats_cash: bool  # positive return and Sharpe after costs

    @property
    def passed(self) -> bool:
        return (
            self.dsr_significant
            and self.pbo_below_half
            and self.alpha_vs_basket
            and (self.beats_cash)
        )


class Targets(Model):
    sharpe_above_half: bool
    max_drawdown_within_25pct: bool
    alpha_vs_basket: bool


class Verdict(Model):
    checks: dict[str, Checks]  # per search name (cash excluded)
    winner: str | None  # the best OOS Sharpe among the searches that pass every check
    chosen: str  # the winner, or cash when none passes
    chosen_targets: Targets
    closest: str | None  # no winner: the policy with the strongest corrected evidence
    closest_targets: Targets | None


class ResearchReport(Model):
    span_start_ms: int
    oos_start_ms: int
    oos_end_ms: int
    train_days: int
    test_days: int
    n_splits: int
    trials: dict[str, int]  # configurations per family
    n_trials_total: int
    searches: list[SearchResult]  # rule, each family, cash
    overall: SearchResult  # the search across all candidates
    verdict: Verdict
    engine_runs: int
    seconds: float
    paired: list[Paired] = []


# ------------------------------------------------------------ statistics


def paired(name: str, oos: TrialMatrix, pairs: list[tuple[str, str]]) -> Paired:
    """``pairs`` of (base key, twin key) on the out-of-sample rows of the trial matrix."""
    col = {k: i for i, k in enumerate(oos.keys)}
    base = oos.returns[:, [col[a] for a, _ in pairs]]
    other = oos.returns[:, [col[b] for _, b in pairs]]
    ann = math.sqrt(365.0)
    sb, so = column_sharpes(base) * ann, column_sharpes(other) * ann
    rb = np.prod(1.0 + base, axis=0) - 1.0
    ro = np.prod(1.0 + other, axis=0) - 1.0
    return Paired(
        name=name,
        n=len(pairs),
        better=int(np.sum(so > sb)),
        mean_base=float(np.mean(sb)),
        mean_other=float(np.mean(so)),
        median_diff=float(np.median(so - sb)),
        mean_return_diff=float(np.mean(ro - rb)),
    )


def fold_choices(scores: np.ndarray, members: np.ndarray) -> list[int]:
    """Per fold (column of ``scores``, candidates x folds), the member with the best training
    score; ties go to the earlier member."""
    sub = scores[members]
    return [int(members[int(np.argmax(sub[:, k]))]) for k in range(scores.shape[1])]


def search_pbo(oos: TrialMatrix, members: np.ndarray, n_splits: int) -> PBOResult | None:
    """PBO by CSCV of choosing the best Sharpe among ``members`` (None: too few columns/rows)."""
    if len(members) < 2 or len(oos.days_ms) < 2 * n_splits:
        return None
    return pbo_cscv(oos.returns[:, members], n_splits)


def best_family_shares(oos: TrialMatrix, members: np.ndarray, n_splits: int) -> dict[str, float]:
    """Which family the in-sample best of each CSCV split belongs to (share of splits): what
    a low or high PBO is made of when the search spans several families."""
    if len(members) < 2 or len(oos.days_ms) < 2 * n_splits:
        return {}
    best = np.asarray(cscv_draws(oos.returns[:, members], n_splits).best)
    fams = np.asarray(oos.families)[members][best]
    names, counts = np.unique(fams, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(names[i]): float(counts[i] / len(best)) for i in order}


def search_dsr(daily: np.ndarray, trial_returns: np.ndarray) -> DeflatedSharpe | None:
    """DSR of ``daily`` given the trials' per-period Sharpes (n_trials = their number);
    None when the returns have no variance (cash) or inconsistent moments."""
    if len(daily) < 3 or float(np.std(daily)) <= 1e-12:
        return None
    try:
        return deflated_sharpe_ratio(daily, column_sharpes(trial_returns))
    except ValueError:
        return None


def _checks(s: SearchResult) -> Checks:
    m = s.out_of_sample
    return Checks(
        dsr_significant=s.dsr_all is not None and s.dsr_all.dsr >= DSR_LEVEL,
        pbo_below_half=s.pbo is not None and s.pbo.pbo < PBO_LIMIT,
        alpha_vs_basket=(m.alpha_vs_basket or 0.0) > 0,
        beats_cash=m.total_return > 0 and m.sharpe > 0,
    )


def targets(m: Metrics) -> Targets:
    return Targets(
        sharpe_above_half=m.sharpe > TARGET_SHARPE,
        max_drawdown_within_25pct=m.max_drawdown > TARGET_MAX_DD,
        alpha_vs_basket=(m.alpha_vs_basket or 0.0) > 0,
    )


def verdict(searches: list[SearchResult], overall: SearchResult) -> Verdict:
    """The default: the best OOS Sharpe among searches passing every check, else cash."""
    pool = [s for s in [*searches, overall] if s.name != CASH]
    checks = {s.name: _checks(s) for s in pool}
    passing = [s for s in pool if checks[s.name].passed]
    winner = max(passing, key=lambda s: s.out_of_sample.sharpe) if passing else None
    cash = next((s for s in searches if s.name == CASH), None)
    chosen = winner or cash
    closest = None
    if winner is None:
        # the strongest evidence that still made money within the drawdown target
        ok = [
            s
            for s in pool
            if s.dsr_all is not None
            and s.out_of_sample.total_return > 0
            and s.out_of_sample.max_drawdown > TARGET_MAX_DD
        ]
        closest = max(ok, key=lambda s: s.dsr_all.dsr) if ok else None
    if chosen is None:
        raise ValueError("no winner and no cash baseline among the searches")
    return Verdict(
        checks=checks,
        winner=None if winner is None else winner.name,
        chosen=chosen.name,
        chosen_targets=targets(chosen.out_of_sample),
        closest=None if closest is None else closest.name,
        closest_targets=None if closest is None else targets(closest.out_of_sample),
    )


# ------------------------------------------------------------ driver


@dataclass
class ResearchRun:
    """What ``run_research`` computed: the report, and the arrays behind it."""

    report: ResearchReport
    matrix: TrialMatrix  # whole span
    train_scores: np.ndarray  # candidates x folds (training Sharpe)
    candidates: list[Candidate]
    folds: list[Fold]
    chains: dict[str, list[BacktestResult]]


def _search(
    name: str,
    members: np.ndarray,
    chosen: list[int],
    chain: list[BacktestResult],
    ctx: dict[str, Any],
) -> SearchResult:
    cands, folds, scores, oos = ctx["candidates"], ctx["folds"], ctx["scores"], ctx["oos"]
    initial = cands[0].engine.initial_cash
    daily = daily_returns(
        np.concatenate([r.times for r in chain]),
        np.concatenate([r.equity for r in chain]),
        initial,
    )
    return SearchResult(
        name=name,
        n_trials=len(members),
        folds=[
            FoldChoice(
                test_start_ms=f.test_start_ms,
                test_end_ms=f.test_end_ms,
                chosen=cands[c].key,
                family=cands[c].family,
                params=cands[c].describe(),
                train_sharpe=float(scores[c, k]) if math.isfinite(scores[c, k]) else 0.0,
                test=result_metrics(chain[k]),
            )
            for k, (f, c) in enumerate(zip(folds, chosen, strict=True))
        ],
        out_of_sample=_chain_metrics(chain, initial),
        pbo=search_pbo(oos, members, ctx["n_splits"]),
        pbo_best_families=best_family_shares(oos, members, ctx["n_splits"]),
        dsr=search_dsr(daily, oos.returns[:, members]),
        dsr_all=search_dsr(daily, oos.returns),
    )


def run_research(
    data: BacktestData,
    candidates: list[Candidate],
    span_start_ms: int,
    oos_start_ms: int,
    oos_end_ms: int,
    train_days: int = 360,
    test_days: int = 90,
    n_splits: int = 16,
    workers: int | None = None,
    subsets: dict[str, list[str]] | None = None,
    pairs: dict[str, list[tuple[str, str]]] | None = None,
) -> ResearchRun:
    """Trial matrix, walk-forward per family and across all, PBO and DSR (module docstring).

    ``span_start_ms`` is where the whole-span runs begin (at or before the first training
    window); the out-of-sample period ``[oos_start_ms, oos_end_ms)`` is cut into rolling test
    windows of ``test_days``, each after its ``train_days`` training window. ``subsets``: more
    searches, each among the named candidate keys (reported after the families; they add no
    configuration, so no trial); ``pairs``: paired comparisons (base key, twin key) reported
    in ``paired``.
    """
    began = time.perf_counter()
    if not candidates:
        raise ValueError("no candidates")
    if len({c.key for c in candidates}) != len(candidates):
        raise ValueError("candidate keys must be unique")
    if len({c.engine.initial_cash for c in candidates}) != 1:
        raise ValueError("candidates must share the initial cash")
    folds = rolling_folds(oos_start_ms, oos_end_ms, train_days, test_days)
    if not folds:
        raise ValueError("no test window between the out-of-sample start and end")
    if span_start_ms > folds[0].train_start_ms:
        raise ValueError("the span must start at or before the first training window")
    if span_start_ms < int(data.timeline[0]):
        raise ValueError("the span starts before the data")
    subsets = subsets or {}
    index = {c.key: i for i, c in enumerate(candidates)}
    family_names = {c.family for c in candidates} | {ALL}
    for name, keys in subsets.items():
        if name in family_names or not keys or any(k not in index for k in keys):
            raise ValueError(f"subset {name!r}: a new name and known candidate keys")
    for name, twins in (pairs or {}).items():
        if not twins or any(a not in index or b not in index for a, b in twins):
            raise ValueError(f"pairs {name!r}: known candidate keys")
    workers = max(1, workers or os.cpu_count() or 1)
    init = (data, _rule_memos(data, candidates, span_start_ms, oos_end_ms))
    runner = _Runner(workers, init)
    try:
        span = (span_start_ms, oos_end_ms)
        rows = runner.map(_candidate_task, [(c, span, folds) for c in candidates])
        days = rows[0][0]
        if any(len(r[0]) != len(days) or not np.array_equal(r[0], days) for r in rows):
            raise ValueError("candidates' daily returns are not on the same days")
        matrix = TrialMatrix(
            days,
            np.column_stack([r[1] for r in rows]),
            [c.key for c in candidates],
            [c.family for c in candidates],
        )
        scores = np.array([r[2] for r in rows])  # candidates x folds
        names = list(dict.fromkeys(c.family for c in candidates))
        members = {n: matrix.columns(n) for n in [*names, ALL]}
        members.update({n: np.array([index[k] for k in keys]) for n, keys in subsets.items()})
        names += list(subsets)
        chosen = {n: fold_choices(scores, members[n]) for n in [*names, ALL]}
        tasks = [
            ([candidates[i] for i in chosen[n]], folds, candidates[0].engine.initial_cash)
            for n in chosen
        ]
        chains = dict(zip(chosen, runner.map(_chain_task, tasks), strict=True))
    finally:
        runner.close()
    ctx = {
        "candidates": candidates,
        "folds": folds,
        "scores": scores,
        "oos": matrix.between(oos_start_ms, oos_end_ms),
        "n_splits": n_splits,
    }
    searches = [_search(n, members[n], chosen[n], chains[n], ctx) for n in names]
    overall = _search(ALL, members[ALL], chosen[ALL], chains[ALL], ctx)
    report = ResearchReport(
        span_start_ms=span_start_ms,
        oos_start_ms=oos_start_ms,
        oos_end_ms=oos_end_ms,
        train_days=train_days,
        test_days=test_days,
        n_splits=n_splits,
        trials=matrix.counts(),
        n_trials_total=len(candidates),
        searches=searches,
        overall=overall,
        verdict=verdict(searches, overall),
        engine_runs=len(candidates) * (1 + len(folds)) + len(chains) * len(folds),
        seconds=time.perf_counter() - began,
        paired=[paired(n, ctx["oos"], twins) for n, twins in (pairs or {}).items()],
    )
    return ResearchRun(report, matrix, scores, candidates, folds, chains)
