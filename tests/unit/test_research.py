"""Policy research (trading/backtest/research.py) on a small generated market: the trial
matrix, the walk-forward's choice seeing training windows only, PBO/DSR trial counts, the
report models. No shared data needed."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trading.backtest.data import prepare_data
from trading.backtest.overfitting import column_sharpes, pbo_cscv
from trading.backtest.research import (
    ALL,
    CASH,
    RULE,
    RULE_LS,
    RULE_LS_PLAN,
    RULE_PLAN,
    RULE_SUB,
    Candidate,
    ResearchReport,
    default_candidates,
    fold_choices,
    research_params,
    run_research,
    same_sets,
    variant_candidates,
    verdict,
)
from trading.market_data import generate_market
from trading.policies.trend_filter import TrendFilterParams
from trading.policies.tsmom import TsmomParams

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import backtests_doc as doc  # noqa: E402

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
DAY = 86_400_000
START = 1_735_689_600_000  # 2025-01-01, day-aligned
SPAN = START + 40 * DAY  # after a 200-bar (33-day) warm-up
OOS = SPAN + 60 * DAY
END = OOS + 50 * DAY  # folds of 20, 20 and 10 days
RULE_GRID: dict[str, list[object]] = {"decision_every_bars": [1, 2], "stop_loss_pct": [0.03, 0.06]}
FAMILY_GRIDS = {
    "tsmom": (
        TsmomParams(lookback_days=5, vol_days=3, target_vol=0.5),
        TsmomParams(lookback_days=15, vol_days=5, target_vol=0.8),
    ),
    "trend_filter": (TrendFilterParams(sma_days=5), TrendFilterParams(sma_days=20, band=0.01)),
}
COUNTS = {CASH: 1, "rule": 4, "tsmom": 2, "trend_filter": 2}


def _candidates() -> list[Candidate]:
    return default_candidates(research_params(), RULE_GRID, FAMILY_GRIDS)


def _research(market, workers: int = 1):
    data = prepare_data(market, "4h")
    return run_research(
        data, _candidates(), SPAN, OOS, END, train_days=60, test_days=20, n_splits=4,
        workers=workers,
    )  # fmt: skip


@pytest.fixture(scope="module")
def market():
    return generate_market(SYMBOLS, "4h", 6 * (END - START) // DAY, seed=5)


@pytest.fixture(scope="module")
def run(market):
    return _research(market)


def test_default_candidates_count_every_configuration() -> None:
    cands = default_candidates(research_params())
    counts: dict[str, int] = {}
    for c in cands:
        counts[c.family] = counts.get(c.family, 0) + 1
    assert counts == {
        CASH: 1,
        "rule": 162,
        "tsmom": 12,
        "trend_filter": 8,
        "breakout": 8,
        "carry": 12,
        "trend_tsmom": 12,
    }
    assert cands[0].family == CASH  # first: ties at a Sharpe of 0 go to cash
    assert len({c.key for c in cands}) == 215
    fam = next(c for c in cands if c.family == "tsmom").engine
    assert fam.agent_every_bars == 0 and fam.stop_loss_pct == 0 and fam.trail_pct == 0
    assert fam.drawdown_halt_pct == 0.99 and fam.fee_rate == 0.001 and fam.slippage_bps == 5


def test_trial_matrix_has_one_column_per_configuration(run) -> None:
    m = run.matrix
    n_days = (END - SPAN) // DAY
    assert m.returns.shape == (n_days, 9)
    assert m.keys == [c.key for c in run.candidates]
    assert m.counts() == COUNTS == run.report.trials
    assert run.report.n_trials_total == 9
    assert np.array_equal(m.days_ms, SPAN + DAY * np.arange(n_days))
    assert np.all(m.returns[:, m.columns(CASH)] == 0)
    assert np.isfinite(m.returns).all()
    assert m.returns[:, m.columns("rule")].std() > 0  # the policies traded
    assert run.train_scores.shape == (9, 3)
    oos = m.between(OOS, END)
    assert len(oos.days_ms) == 50 and oos.days_ms[0] == OOS


def test_fold_choice_uses_training_windows_only(market, run) -> None:
    cut = run.folds[1].train_end_ms  # perturb every bar opening at or after fold 2's train end
    rng = np.random.default_rng(3)
    changed = {}
    for s, bars in market.items():
        out = []
        for b in bars:
            if b.open_time >= cut:
                k = float(np.exp(rng.normal(0, 0.05)))
                b = b.model_copy(
                    update={"open": b.open * k, "high": b.high * k, "low": b.low * k,
                            "close": b.close * k}
                )  # fmt: skip
            out.append(b)
        changed[s] = out
    other = _research(changed)
    assert np.array_equal(other.train_scores[:, :2], run.train_scores[:, :2])
    assert not np.array_equal(other.train_scores[:, 2], run.train_scores[:, 2])
    for a, b in zip([*run.report.searches, run.report.overall],
                    [*other.report.searches, other.report.overall], strict=True):  # fmt: skip
        assert [f.chosen for f in a.folds[:2]] == [f.chosen for f in b.folds[:2]]
        assert a.folds[0].test == b.folds[0].test  # the first test window ends at the cut


def test_pbo_and_dsr_use_each_search_trial_count(run) -> None:
    report = run.report
    oos = run.matrix.between(OOS, END)
    for s in [*report.searches, report.overall]:
        cols = run.matrix.columns(s.name)
        assert s.n_trials == len(cols) == (9 if s.name == ALL else COUNTS[s.name])
        if s.name == CASH:
            assert s.pbo is None and s.dsr is None and s.dsr_all is None
            continue
        assert s.pbo is not None and s.pbo.n_trials == len(cols)
        assert s.pbo.n_obs + s.pbo.n_dropped == 50  # the OOS period only
        assert s.pbo == pbo_cscv(oos.returns[:, cols], 4)
        shares = s.pbo_best_families
        assert sum(shares.values()) == pytest.approx(1.0)
        assert set(shares) <= ({s.name} if s.name != ALL else set(COUNTS))
        if s.dsr is None:
            continue
        assert s.dsr.n_trials == len(cols) and s.dsr_all.n_trials == 9
        assert s.dsr.n_obs == 50
        srs = column_sharpes(oos.returns[:, cols])
        assert s.dsr.var_trial_sharpes == pytest.approx(np.var(srs, ddof=1))


def test_chained_test_windows_carry_the_capital(run) -> None:
    for s in [*run.report.searches, run.report.overall]:
        chain = run.chains[s.name]
        assert chain[0].params.initial_cash == 5_000
        for prev, nxt in zip(chain, chain[1:], strict=False):
            assert nxt.params.initial_cash == pytest.approx(prev.equity[-1])
        assert s.out_of_sample.final_equity == pytest.approx(chain[-1].equity[-1])
        assert s.out_of_sample.days == pytest.approx(50)
        for k, f in enumerate(s.folds):
            cols = run.matrix.columns(s.name)
            assert f.chosen == run.candidates[fold_choices(run.train_scores, cols)[k]].key


def test_report_round_trips_and_is_deterministic(market, run) -> None:
    text = run.report.model_dump_json()
    back = ResearchReport.model_validate_json(text)
    assert back == run.report
    pooled = _research(market, workers=2)
    assert np.array_equal(pooled.matrix.returns, run.matrix.returns)
    a = run.report.model_dump(exclude={"seconds"})
    assert pooled.report.model_dump(exclude={"seconds"}) == a


def test_fold_choices_break_ties_to_the_earlier_member() -> None:
    scores = np.array([[0.0, 1.0], [0.0, 2.0], [-1.0, 2.0]])
    assert fold_choices(scores, np.arange(3)) == [0, 1]
    assert fold_choices(scores, np.array([1, 2])) == [1, 1]


def test_verdict_needs_every_correction(run) -> None:
    searches = list(run.report.searches)
    overall = run.report.overall
    k = next(i for i, s in enumerate(searches) if s.name == "tsmom")
    s = searches[k]
    m = s.out_of_sample.model_copy(
        update={"total_return": 0.5, "sharpe": 1.5, "alpha_vs_basket": 0.1, "max_drawdown": -0.1}
    )
    dsr = (s.dsr_all or overall.dsr_all).model_copy(update={"dsr": 0.99})
    good = s.model_copy(
        update={"out_of_sample": m, "dsr_all": dsr, "pbo": s.pbo.model_copy(update={"pbo": 0.1})}
    )
    v = verdict([*searches[:k], good, *searches[k + 1 :]], overall)
    assert v.winner == v.chosen == "tsmom" and v.checks["tsmom"].passed
    assert v.chosen_targets.sharpe_above_half and v.chosen_targets.alpha_vs_basket
    bad_pbo = good.model_copy(update={"pbo": s.pbo.model_copy(update={"pbo": 0.6})})
    v = verdict([*searches[:k], bad_pbo, *searches[k + 1 :]], overall)
    assert v.checks["tsmom"].dsr_significant and not v.checks["tsmom"].pbo_below_half
    assert v.winner != "tsmom"


# ------------------------------------------------------------ variants: exit plans, long/short

VARIANT_COUNTS = {
    **COUNTS,
    RULE_PLAN: 4,
    RULE_LS: 4,
    RULE_LS_PLAN: 4,
    "tsmom_ls": 2,
    "trend_filter_ls": 2,
}


def _variants():
    return doc.research_candidates(research_params(), RULE_GRID, RULE_GRID, FAMILY_GRIDS)


def test_variants_are_configurations_of_their_own() -> None:
    cands, subsets, pairs = _variants()
    assert Counter(c.family for c in cands) == VARIANT_COUNTS
    assert len({c.key for c in cands}) == len(cands) == 25
    by = {f: [c for c in cands if c.family == f] for f in VARIANT_COUNTS}
    for c in by[RULE_PLAN]:
        assert c.decider == RULE and c.engine.rule_exit_plans and not c.engine.allow_shorts
    for c in by[RULE_LS]:
        assert c.engine.perpetual and c.engine.allow_shorts and not c.engine.rule_exit_plans
    for c in by[RULE_LS_PLAN]:
        assert c.engine.allow_shorts and c.engine.rule_exit_plans
    for c in by["tsmom_ls"]:
        assert c.decider == "tsmom" and not c.policy.long_only and c.engine.allow_shorts
        assert c.engine.agent_every_bars == 0 and c.engine.stop_loss_pct == 0
    for a, b in zip(by["tsmom"], by["tsmom_ls"], strict=True):  # twins: one change each
        assert dataclasses.replace(a.policy, long_only=False) == b.policy
    plain = [c.key for c in by[RULE]]
    assert subsets[RULE_SUB] == plain == same_sets(cands, RULE, by[RULE_PLAN])
    assert pairs["exit plan, long-only"] == list(
        zip(plain, [c.key for c in by[RULE_PLAN]], strict=True)
    )
    assert set(pairs) >= {"long/short, `tsmom`", "long/short, `trend_filter`"}
    with pytest.raises(ValueError, match="no rule configuration"):
        same_sets(cands, RULE, variant_candidates(research_params(), {"stop_loss_pct": [0.05]}))


@pytest.fixture(scope="module")
def variant_run(market):
    cands, subsets, pairs = _variants()
    data = prepare_data(market, "4h")
    subsets = {RULE_SUB: subsets[RULE_SUB][:3]}  # a subset of the plain sets
    return run_research(
        data, cands, SPAN, OOS, END, train_days=60, test_days=20, n_splits=4, workers=1,
        subsets=subsets, pairs=pairs,
    )  # fmt: skip


def test_variants_count_as_trials_and_subsets_do_not(variant_run) -> None:
    r = variant_run.report
    assert r.n_trials_total == 25 and r.trials == VARIANT_COUNTS and RULE_SUB not in r.trials
    assert r.overall.n_trials == 25
    by = {s.name: s for s in r.searches}
    sub = by[RULE_SUB]
    assert sub.n_trials == 3
    assert {f.chosen for f in sub.folds} <= {c.key for c in variant_run.candidates[1:4]}
    for s in [*r.searches, r.overall]:
        if s.dsr_all is not None:
            assert s.dsr_all.n_trials == 25  # every variant counted in "all"
        if s.dsr is not None:
            assert s.dsr.n_trials == s.n_trials
    for name in (RULE_LS, RULE_LS_PLAN, "tsmom_ls"):
        assert all(
            res.params.allow_shorts and res.params.perpetual for res in variant_run.chains[name]
        )
    assert sum(res.plan_events["entries"] for res in variant_run.chains[RULE_PLAN]) > 0
    assert not any(res.plan_events for res in variant_run.chains[RULE])


def test_paired_comparisons_read_the_out_of_sample_columns(variant_run) -> None:
    r = variant_run.report
    _, _, pairs = _variants()
    oos = variant_run.matrix.between(OOS, END)
    col = {k: i for i, k in enumerate(oos.keys)}
    for p in r.paired:
        twins = pairs[p.name]
        assert p.n == len(twins)
        base = column_sharpes(oos.returns[:, [col[a] for a, _ in twins]]) * np.sqrt(365)
        other = column_sharpes(oos.returns[:, [col[b] for _, b in twins]]) * np.sqrt(365)
        assert p.better == int(np.sum(other > base))
        assert p.mean_other - p.mean_base == pytest.approx(float(np.mean(other - base)))
    assert ResearchReport.model_validate_json(r.model_dump_json()) == r


def test_section_three_renders_the_variants(variant_run) -> None:
    lines = doc.family_lines(variant_run.report, 1.0, "f" * 16, doc.plan_stats(variant_run))
    text = "\n".join(lines)
    for label in (
        "rule policy + exit plan",
        "rule policy long/short + exit plan",
        "rule policy, the 27 sets",
        "`tsmom` long/short",
        "### Exit plans and long/short",
        "`OCW_RULE_EXIT_PLANS`",
        "| exit plan, long-only | 4 |",
    ):
        assert label in text, label
    assert "| rule policy, the 27 sets | (3) |" in text  # a subset: no trials of its own
