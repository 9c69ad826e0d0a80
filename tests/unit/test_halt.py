"""The drawdown halt's mechanisms (trading/halt.py) on hand-made equity paths, in the
backtester (its halt report, reduced sizes, vol scaling, carried state) and in the live books."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trading.backtest.data import prepare_data
from trading.backtest.engine import CARRIED, Backtester, halt_vol_ratios, run_backtest
from trading.backtest.params import BacktestParams
from trading.halt import (
    COOLOFF,
    NEVER,
    OFF,
    REDUCED,
    VOL,
    HaltRule,
    HaltState,
    daily_close_push,
    halt_step,
    threshold,
    vol_ratio,
)
from trading.market_data import generate_market
from trading.state import DecisionState, EngineConfig, Portfolio
from workers.backtest_cli import halt_lines, halt_rows
from workflows import decision_books as books

H = 3_600_000
DAY = 24 * H
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def _walk(rule: HaltRule, path: list[tuple[int, float]], ratio: float | None = None):
    """(hours, equity) readings from a fresh 10,000 peak: the states and events."""
    state = HaltState(peak=10_000.0)
    out = []
    for hours, equity in path:
        state, event = halt_step(rule, state, equity, int(hours * H), ratio)
        out.append((state, event))
    return out


# ------------------------------------------------------------ the pure machine


def test_mechanism_names() -> None:
    assert HaltRule().mechanism == NEVER
    assert HaltRule(halt_pct=0.99).mechanism == OFF
    assert HaltRule(cooloff_hours=72).mechanism == COOLOFF
    assert HaltRule(cooloff_hours=72, restart_scale=0.5).mechanism == REDUCED
    assert HaltRule(vol_band=(0.5, 2.0)).mechanism == VOL
    assert "lifts after 72 h" in HaltRule(cooloff_hours=72).describe()


def test_halts_at_the_threshold_not_before() -> None:
    steps = _walk(HaltRule(), [(0, 10_000), (1, 8_801), (2, 8_800)])
    assert not steps[1][0].halted and steps[1][1].started is None
    state, event = steps[2]
    assert state.halted and state.halted_since_ms == 2 * H
    assert event.started == "drawdown 12.0% >= 12.0%" and state.reason.startswith("drawdown")


def test_never_a_flat_halted_book_waits_for_ever() -> None:
    path = [(0, 10_000), (1, 8_700), *((h, 8_700) for h in range(2, 24 * 400, 24))]
    steps = _walk(HaltRule(), path)
    assert all(s.halted for s, _ in steps[1:])
    assert not any(e.lifted for _, e in steps)


def test_cooloff_lifts_after_h_market_hours_and_rebases_the_peak() -> None:
    rule = HaltRule(cooloff_hours=72)
    steps = _walk(rule, [(0, 10_000), (1, 8_700), (72, 8_700), (73, 8_700), (74, 8_600)])
    assert steps[2][0].halted  # 71 h after the first halted mark
    state, event = steps[3]
    assert not state.halted and event.lifted == "cool-off 72 h" and event.by_cooloff
    assert state.peak == 8_700 and state.drawdown == 0.0 and state.halted_since_ms is None
    assert state.size_scale == 1.0 and state.restart_target is None  # a plain cool-off
    assert not steps[4][0].halted  # 1.1 % below the new peak


def test_recovery_below_half_lifts_with_its_reason() -> None:
    steps = _walk(HaltRule(), [(0, 10_000), (1, 8_700), (2, 9_300), (3, 9_450)])
    assert steps[2][0].halted  # 7 %: not below 6 %
    state, event = steps[3]
    assert not state.halted and event.lifted.startswith("recovered") and not event.by_cooloff


def test_reduced_restart_scales_sizes_until_the_equity_recovers() -> None:
    rule = HaltRule(cooloff_hours=24, restart_scale=0.5, restart_recover_pct=0.05)
    path = [(0, 10_000), (1, 8_800), (25, 8_800), (30, 9_000), (40, 9_240), (50, 9_300)]
    steps = _walk(rule, path)
    lifted, event = steps[2]
    assert not lifted.halted and lifted.size_scale == 0.5
    assert lifted.restart_target == pytest.approx(8_800 * 1.05)
    assert "restart at 50% size until equity 9,240.00" in event.lifted
    assert steps[3][0].size_scale == 0.5  # not yet
    restored, event = steps[4]
    assert restored.size_scale == 1.0 and restored.restart_target is None and event.restored
    assert steps[5][0].size_scale == 1.0


def test_a_new_halt_during_a_reduced_restart_starts_over() -> None:
    rule = HaltRule(cooloff_hours=24, restart_scale=0.25, restart_recover_pct=0.10)
    path = [(0, 10_000), (1, 8_800), (25, 8_800), (26, 7_700), (50, 7_700), (60, 7_700)]
    steps = _walk(rule, path)
    assert steps[3][0].halted and steps[3][1].started  # 12.5 % below the re-based peak
    assert steps[3][0].size_scale == 0.25  # still reduced while halted
    relifted = steps[5][0]
    assert not relifted.halted and relifted.restart_target == pytest.approx(7_700 * 1.1)


def test_volatility_scaled_threshold() -> None:
    band = (0.5, 2.0)
    assert threshold(0.12, 2.5, band) == pytest.approx(0.24)
    assert threshold(0.12, 0.25, band) == pytest.approx(0.06)
    assert threshold(0.12, None, band) == 0.12 and threshold(0.12, 3.0, None) == 0.12
    rule = HaltRule(vol_band=band)
    calm = _walk(rule, [(0, 10_000), (1, 9_300)], ratio=0.5)  # 7 % >= 6 %
    assert calm[-1][0].halted and calm[-1][1].threshold == pytest.approx(0.06)
    wild = _walk(rule, [(0, 10_000), (1, 8_500)], ratio=2.0)  # 15 % < 24 %
    assert not wild[-1][0].halted
    # a halted book lifts when the market calms... no: when the threshold widens, the
    # drawdown can fall below half of it without the equity moving
    state = HaltState(peak=10_000.0, halted=True, halted_since_ms=0)
    state, event = halt_step(rule, state, 8_850, H, 2.0)  # 11.5 % < 12 %
    assert not state.halted and event.lifted.startswith("recovered")


def test_vol_ratio_of_daily_closes() -> None:
    rng = np.random.default_rng(3)
    calm = np.cumsum(rng.normal(0, 0.01, 400))
    closes = (100 * np.exp(calm)).tolist()
    assert vol_ratio(closes[:50]) is None  # too few days
    assert 0.6 < vol_ratio(closes) < 1.5
    wild = np.concatenate([calm, calm[-1] + np.cumsum(rng.normal(0, 0.04, 30))])
    assert vol_ratio((100 * np.exp(wild)).tolist()) > 2.0


def test_daily_closes_keep_the_last_price_of_each_completed_day() -> None:
    closes, day, last = [], None, None
    for t, price in [(1 * H, 1.0), (23 * H, 2.0), (DAY + H, 3.0), (DAY + 5 * H, 4.0), (2 * DAY, 5)]:
        closes, day, last = daily_close_push(closes, day, last, t, price)
    assert closes == [2.0, 4.0] and day == 2 * DAY and last == 5


# ------------------------------------------------------------ the backtester


@pytest.fixture(scope="module")
def data():
    return prepare_data(generate_market(SYMBOLS, "4h", 1500, seed=21), "4h")


def _start(data) -> int:
    return int(data.timeline[250])


STRICT = {"drawdown_halt_pct": 0.05}
FAMILY_LIKE = {"stop_loss_pct": 0.0, "trail_pct": 0.0, "max_drawdown_guard_pct": 0.0}


def test_the_backtester_reports_every_halt(data) -> None:
    frozen = run_backtest(data, BacktestParams(**STRICT), _start(data))
    (ep,) = frozen.halts
    assert ep.end_ms is None and ep.lifted_by is None and ep.threshold == 0.05
    assert ep.drawdown >= 0.05 and ep.reason == f"drawdown {ep.drawdown:.1%} >= 5.0%"
    assert ep.equity == pytest.approx(ep.peak * (1 - ep.drawdown))
    k = int(np.searchsorted(frozen.times, ep.start_ms))
    assert frozen.equity[k] == pytest.approx(ep.equity)
    assert frozen.halt_spans == [(ep.start_ms, None)]
    assert frozen.halt_end.halted and frozen.halt_end.halted_since_ms == ep.start_ms
    lines = halt_lines(frozen)
    assert len(lines) == 1 and "to the end" in lines[0] and ep.reason in lines[0]
    assert "never lifted" in lines[0]
    relaxed = run_backtest(
        data, BacktestParams(**STRICT, drawdown_cooloff_hours=72.0), _start(data)
    )
    assert relaxed.cooloffs >= 2 and len(relaxed.halts) >= relaxed.cooloffs
    for ep in relaxed.halts[: relaxed.cooloffs]:
        assert ep.lifted_by == "cool-off 72 h" and ep.end_ms - ep.start_ms >= 72 * H
    rows = halt_rows(relaxed)
    assert rows[0]["lifted_by"] == "cool-off 72 h" and rows[0]["to_ms"] is not None
    assert "lifted by cool-off 72 h" in halt_lines(relaxed)[0]


@pytest.mark.parametrize(
    "update",
    [
        {
            **STRICT,
            "drawdown_cooloff_hours": 72.0,
            "drawdown_restart_scale": 0.5,
            "drawdown_restart_recover_pct": 0.03,
        },
        {**STRICT, "drawdown_vol_lo": 0.5, "drawdown_vol_hi": 2.0},
        {**STRICT, "drawdown_vol_lo": 0.5, "drawdown_vol_hi": 2.0, "drawdown_cooloff_hours": 48.0},
        {
            **STRICT,
            **FAMILY_LIKE,
            "agent_every_bars": 0,
            "drawdown_cooloff_hours": 24.0,
            "drawdown_restart_scale": 0.25,
            "drawdown_restart_recover_pct": 0.02,
        },
        {
            **STRICT,
            **FAMILY_LIKE,
            "agent_every_bars": 0,
            "drawdown_vol_lo": 0.5,
            "drawdown_vol_hi": 1.5,
            "drawdown_cooloff_hours": 24.0,
        },
    ],  # fmt: skip
)
def test_new_mechanisms_skip_quiet_bars_exactly(data, update) -> None:
    params = BacktestParams(**update)
    fast = Backtester(data, params).run(_start(data))
    slow = Backtester(data, params, skip_quiet=False).run(_start(data))
    assert [t.model_dump() for t in fast.trades] == [t.model_dump() for t in slow.trades]
    assert np.allclose(fast.equity, slow.equity, rtol=1e-12)
    assert fast.halt_spans == slow.halt_spans and len(fast.halts) >= 1


@pytest.mark.parametrize("update", [{}, FAMILY_LIKE])
def test_the_pure_machine_replays_the_backtesters_halts(data, update) -> None:
    """Every bar marked (no skipping): ``halt_step`` over the run's equity path starts and
    lifts each halt on the same close as the engine."""
    params = BacktestParams(
        **STRICT, **update, drawdown_cooloff_hours=48.0, drawdown_vol_lo=0.5, drawdown_vol_hi=2
    )
    result = Backtester(data, params, skip_quiet=False).run(_start(data))
    rule = params.halt_rule()
    ratios = halt_vol_ratios(data)
    t0 = int(np.searchsorted(data.step_close, result.times[0]))
    state, spans = HaltState(peak=params.initial_cash), []
    for k, (t, eq) in enumerate(zip(result.times.tolist(), result.equity.tolist(), strict=True)):
        r = ratios[t0 + k]
        state, event = halt_step(rule, state, eq, t, None if math.isnan(r) else float(r))
        if event.started:
            spans.append((t, None))
        elif event.lifted:
            spans[-1] = (spans[-1][0], t)
    assert len(spans) >= 2 and spans == result.halt_spans


def test_reduced_restart_halves_the_first_entry_after_the_lift(data) -> None:
    full = BacktestParams(**STRICT, drawdown_cooloff_hours=72.0, agent_every_bars=0)
    half = full.model_copy(
        update={"drawdown_restart_scale": 0.5, "drawdown_restart_recover_pct": 0.5}
    )
    a = run_backtest(data, full, _start(data))
    b = run_backtest(data, half, _start(data))
    lift = a.halts[0].end_ms
    assert b.halts[0].end_ms == lift and "restart at 50% size" in b.halts[0].lifted_by
    before = [t for t in a.trades if t.entry_time_ms <= lift]
    assert [t.model_dump() for t in before] == [t.model_dump() for t in b.trades[: len(before)]]
    first_a = next(t for t in a.trades if t.entry_time_ms > lift)
    first_b = next(t for t in b.trades if t.entry_time_ms > lift)
    assert (first_a.symbol, first_a.entry_time_ms) == (first_b.symbol, first_b.entry_time_ms)
    assert first_b.qty * first_b.entry_price == pytest.approx(
        0.5 * first_a.qty * first_a.entry_price, rel=1e-6
    )
    # a target of +50 % is never reached here: the run ends at reduced size
    assert b.halt_end.size_scale == 0.5 and b.halt_end.restart_target is not None


def test_full_size_comes_back_at_the_recovery_target(data) -> None:
    params = BacktestParams(
        **STRICT,
        drawdown_cooloff_hours=72.0,
        drawdown_restart_scale=0.5,
        drawdown_restart_recover_pct=0.01,
        agent_every_bars=0,
    )
    result = Backtester(data, params, skip_quiet=False).run(_start(data))
    lift = result.halts[0]
    target = float(lift.lifted_by.rsplit(" ", 1)[1].replace(",", ""))
    k = int(np.searchsorted(result.times, lift.end_ms))
    back = k + int(np.flatnonzero(result.equity[k:] >= target)[0])
    # entries decided after the equity reached the target are full size again: compare with
    # the rule policy's own size (20 % x (0.5 + confidence) of equity, within the caps)
    later = [t for t in result.trades if t.entry_time_ms > result.times[back]]
    earlier = [t for t in result.trades if lift.end_ms < t.entry_time_ms <= result.times[back]]
    assert later and earlier
    eq_at = dict(zip(result.times.tolist(), result.equity.tolist(), strict=True))

    def share(t) -> float:  # notional over the equity at the deciding close
        return t.qty * t.entry_price / eq_at[t.entry_time_ms - 1]

    assert max(share(t) for t in earlier) <= 0.3 * 0.5 * 1.01
    assert max(share(t) for t in later) > 0.3 * 0.5 * 1.01


def test_a_carried_halt_goes_on_in_the_next_window(data) -> None:
    params = BacktestParams(**STRICT, drawdown_cooloff_hours=24.0 * 30)
    start = _start(data)
    halted_at = run_backtest(data, params, start).halts[0].start_ms
    mid = halted_at + 1 + 10 * DAY  # a bar's open, ten days into the halt
    first = run_backtest(data, params, start, mid)
    assert first.halt_end.halted and first.halt_end.halted_since_ms == halted_at
    second = run_backtest(
        data,
        params.model_copy(update={"initial_cash": float(first.equity[-1])}),
        mid,
        None,
        halt_state=first.halt_end,
    )
    carried = second.halts[0]
    assert carried.reason == CARRIED and carried.start_ms == halted_at
    # the cool-off counts from the first window's halt, not from the second window's start
    assert carried.end_ms == halted_at + 30 * DAY and carried.lifted_by == "cool-off 720 h"
    assert all(t.entry_time_ms > carried.end_ms for t in second.trades) and second.trades


def test_defaults_are_the_never_lifting_halt() -> None:
    rule = BacktestParams().halt_rule()
    assert rule == HaltRule(halt_pct=0.12)
    assert rule.mechanism == NEVER


# ------------------------------------------------------------ the live books


def _books(cooloff: float | None = None) -> DecisionState:
    return DecisionState(
        config=EngineConfig(
            account="t",
            symbols=["BTC/USDT"],
            drawdown_halt_pct=0.12,
            drawdown_cooloff_hours=cooloff,
        ),
        portfolio=Portfolio(cash=10_000, peak_equity=10_000, equity=10_000),
    )


def test_live_marks_halt_and_say_how_the_halt_lifted() -> None:
    s = _books()
    s.last_market_time_ms = H
    s.portfolio.cash = 8_700
    note = books.mark_to_market(s)
    assert note.halt_changed == "on: drawdown 13.0% >= 12.0%" and s.portfolio.halted
    assert s.portfolio.halt_reason == "drawdown 13.0% >= 12.0%"
    assert s.portfolio.halted_since_ms == H
    s.last_market_time_ms = 1000 * H
    assert books.mark_to_market(s).halt_changed is None and s.portfolio.halted  # never lifts
    s.portfolio.cash = 9_500
    note = books.mark_to_market(s)
    assert note.halt_changed == "off: recovered: drawdown 5.0% < 6.0%"
    assert not s.portfolio.halted and s.portfolio.halted_since_ms is None


def test_live_cooloff_lifts_as_the_backtester_does() -> None:
    s = _books(cooloff=72.0)
    s.portfolio.cash = 8_700
    s.last_market_time_ms = H
    books.mark_to_market(s)
    s.last_market_time_ms = 72 * H
    assert books.mark_to_market(s).cooloff_lifted_h is None and s.portfolio.halted
    s.last_market_time_ms = 73 * H
    note = books.mark_to_market(s)
    assert note.cooloff_lifted_h == 72.0 and note.halt_changed is None
    p = s.portfolio
    assert not p.halted and p.peak_equity == 8_700 and p.drawdown == 0.0 and p.halt_reason == ""
