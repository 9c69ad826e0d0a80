"""The drawdown-halt study (trading/backtest/halt_study.py) and its page section
(bench/backtests_doc.py --only halt) on a small generated market. No shared data needed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from trading.backtest import halt_study as hs
from trading.backtest.data import prepare_data
from trading.halt import COOLOFF, NEVER, OFF, REDUCED, VOL
from trading.market_data import generate_market
from trading.policies.combo import TrendTsmomParams

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import backtests_doc as doc  # noqa: E402

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
DAY = 86_400_000
START = 1_735_689_600_000  # 2025-01-01
SPAN = START + 40 * DAY
OOS = SPAN + 60 * DAY
END = OOS + 50 * DAY
TRIALS = [
    hs.HaltTrial(NEVER, 0, (("drawdown_halt_pct", 0.04),)),
    hs.HaltTrial(COOLOFF, 0, (("drawdown_halt_pct", 0.04), ("drawdown_cooloff_hours", 48.0))),
    hs.HaltTrial(
        REDUCED,
        0,
        (
            ("drawdown_halt_pct", 0.04),
            ("drawdown_cooloff_hours", 48.0),
            ("drawdown_restart_scale", 0.5),
            ("drawdown_restart_recover_pct", 0.02),
        ),
    ),
    hs.HaltTrial(
        VOL,
        0,
        (("drawdown_halt_pct", 0.04), ("drawdown_vol_lo", 0.5), ("drawdown_vol_hi", 2.0)),
    ),
    hs.HaltTrial(OFF, 0, (("drawdown_halt_pct", 0.99),)),
]


@pytest.fixture(scope="module")
def report():
    market = generate_market(SYMBOLS, "4h", 6 * (END - START) // DAY, seed=5)
    data = prepare_data(market, "4h")
    trend = TrendTsmomParams(lookback_days=10, sma_days=20, vol_days=5)
    return hs.run_halt_study(
        data, SPAN, OOS, END, 10_000.0, 60, 20, 4, workers=1, trials=TRIALS, trend_params=trend
    )


def test_the_declared_grid_counts_every_configuration() -> None:
    trials = hs.halt_trials()
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.mechanism] = counts.get(t.mechanism, 0) + 1
    assert counts == {NEVER: 1, COOLOFF: 4, REDUCED: 8, VOL: 6, OFF: 1}
    assert trials[0].mechanism == NEVER and trials[0].update == ()  # ties go to the baseline
    assert len({t.key for t in trials}) == len(trials)


def test_study_reports_every_mechanism_on_both_policies(report) -> None:
    names = [s.name for s in report.searches]
    assert names == [NEVER, COOLOFF, REDUCED, VOL, OFF, hs.ANY]
    for s in report.searches:
        assert set(s.policies) == {hs.RULE, hs.TREND} and len(s.picks) == 3
        for r in s.policies.values():
            assert r.out_of_sample.start_ms >= OOS
            assert 0 <= r.days_halted <= (END - OOS) / DAY
    by = {s.name: s for s in report.searches}
    assert by[OFF].policies[hs.RULE].days_halted == 0
    assert by[NEVER].policies[hs.RULE].halts >= 1  # the 4 % halt is reached
    assert report.engine_runs == 2 * 5 * (1 + 3) + 6 * 2 * 3
    assert by[hs.ANY].n_trials == 5 and by[COOLOFF].n_trials == 1


def test_pick_uses_the_mean_training_sharpe_and_breaks_ties_early() -> None:
    # policies x trials x folds: trial 1 is worse for the first policy on fold 0 but better
    # on average; on fold 1 the means tie (1 and 1) and the earlier trial wins
    scores = np.array([[[1.0, 1.0], [0.5, 0.0]], [[1.0, 1.0], [2.0, 2.0]]])
    assert hs.pick(scores, np.array([0, 1])) == [1, 0]
    assert hs.pick(scores[:, :, :1] * [[[1.0]], [[0.0]]], np.array([0, 1])) == [0]
    assert hs.pick(np.zeros((2, 2, 2)), np.array([0, 1])) == [0, 0]


def test_a_halt_on_at_a_windows_end_is_carried_into_the_next(report) -> None:
    never = {s.name: s for s in report.searches}[NEVER].policies[hs.RULE]
    open_ended = [e for e in never.episodes if e.end_ms is None]
    assert len(open_ended) == 1 and never.episodes[-1].end_ms is None
    first = never.episodes[0]
    assert never.days_halted == pytest.approx((END - max(first.start_ms, OOS)) / DAY, abs=0.2)


def test_the_verdict_keeps_the_baseline_unless_a_candidate_beats_it(report) -> None:
    v = hs.halt_verdict(report.searches)
    by = {s.name: s for s in report.searches}
    best = max((by[m] for m in hs.CANDIDATES), key=lambda s: s.mean_sharpe)
    assert v.best_candidate == best.name
    assert v.margin == pytest.approx(best.mean_sharpe - by[NEVER].mean_sharpe)
    assert (v.winner is None) == (v.margin <= 0)
    assert v.chosen == (v.winner or NEVER)
    assert v.default_params == by[v.chosen].picked_params[-1]


def test_the_page_section_renders_from_the_report(report, tmp_path) -> None:
    lines = doc.halt_section(report, 1.0, "f" * 16)
    assert lines[0] == doc.HALT_BEGIN and lines[-1] == doc.HALT_END
    text = "\n".join(lines)
    for name in (NEVER, COOLOFF, REDUCED, VOL, OFF, hs.ANY):
        assert f"| {name} |" in text
    assert "days halted" in text and "how it lifted" in text and "### The chosen default" in text
    page = tmp_path / "backtests.md"
    page.write_text(
        f"# B\n\n{doc.FAMILIES_BEGIN}\nthree\n{doc.FAMILIES_END}\n\n## Design choices\n"
    )
    once = doc.replace_halt(page.read_text(), text)
    assert once.index(doc.FAMILIES_END) < once.index(doc.HALT_BEGIN) < once.index("## Design")
    assert doc.replace_halt(once, text) == once  # in place the second time
