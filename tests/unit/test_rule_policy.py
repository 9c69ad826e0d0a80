"""Rule policy (SPEC §7) on hand-made series and hand-built feature sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.unit.test_features import T0, make_bars
from trading.features import compute_features
from trading.models import Action, MarketView, SymbolFeatures
from trading.rule_policy import (
    SIGNAL_GROUPS,
    DerivativesReading,
    decide,
    derivatives_composite,
    symbol_signal,
)

WAVE = list(100 + 3 * np.sin(np.arange(190) * 2 * math.pi / 20))


def uptrend() -> np.ndarray:
    """+1 %, -0.2 % alternately: an efficient rise with RSI well below 100."""
    steps = np.where(np.arange(200) % 2 == 0, 1.010, 0.998)
    steps[0] = 1.0
    return 100 * np.cumprod(steps)


def features(closes, symbol: str = "BTC/USDT") -> SymbolFeatures:
    return compute_features(symbol, make_bars(closes, symbol=symbol), "4h")


def view(*fs: SymbolFeatures, missing: list[str] | None = None) -> MarketView:
    return MarketView(as_of_ms=T0, symbols={f.symbol: f for f in fs}, missing=missing or [])


def hand(**kw) -> SymbolFeatures:
    base = dict(symbol="ETH/USDT", interval="4h", time_ms=T0, price=100.0, n_bars=200)
    return SymbolFeatures(**{**base, **kw})


def only(decision, symbol):
    (d,) = [d for d in decision.decisions if d.ticker == symbol]
    return d


def test_trending_up_series_buys() -> None:
    f = features(uptrend())
    assert f.regime == "trending" and f.rsi14 > 50 and f.momentum14 > 0.02
    out = decide(view(f), held=set())
    d = only(out, "BTC/USDT")
    assert out.source == "rule"
    assert d.action is Action.BUY
    assert 0 < d.position_pct <= 0.30
    assert d.position_pct == pytest.approx(min(0.30, 0.20 * (0.5 + d.confidence)), abs=1e-4)
    assert d.signal_weights["trend"] > 0.5
    assert set(d.signal_weights) == set(SIGNAL_GROUPS)
    assert "RSI14" in d.reasoning and "momentum14" in d.reasoning
    assert "trending: BTC/USDT" in out.market_assessment


def test_ranging_dip_buys() -> None:
    f = features(WAVE + [99.0, 98.0, 97.0, 96.0, 95.0])
    assert f.regime == "ranging"
    assert f.price < f.bb_lower * 1.02 and f.rsi14 < 40
    d = only(decide(view(f), held=set()), "BTC/USDT")
    assert d.action is Action.BUY
    assert d.signal_weights["reversion"] > 0 and d.signal_weights["trend"] == 0


def test_ranging_top_sells_only_when_held() -> None:
    f = features(WAVE + [101.0, 102.5, 104.0, 105.0, 106.0])
    assert f.regime == "ranging" and f.price > f.bb_upper * 0.98
    assert only(decide(view(f), held={"BTC/USDT"}), "BTC/USDT").action is Action.SELL
    d = only(decide(view(f), held=set()), "BTC/USDT")
    assert d.action is Action.HOLD and "not held" in d.reasoning


def test_drop_sells_when_held() -> None:
    f = features(100 * 0.995 ** np.arange(200))
    assert f.regime == "trending" and f.momentum14 < -0.05
    d = only(decide(view(f), held={"BTC/USDT"}), "BTC/USDT")
    assert d.action is Action.SELL
    assert d.position_pct == 0.0
    assert d.signal_weights["trend"] < 0
    assert only(decide(view(f), held=set()), "BTC/USDT").action is Action.HOLD


def test_held_symbol_never_buys() -> None:
    up = features(uptrend())
    dip = features(WAVE + [99.0, 98.0, 97.0, 96.0, 95.0], "ETH/USDT")
    out = decide(view(up, dip), held={"BTC/USDT", "ETH/USDT"})
    assert [d.action for d in out.decisions] == [Action.HOLD, Action.HOLD]
    assert all("already held" in d.reasoning for d in out.decisions)


def test_missing_data_holds_and_says_what() -> None:
    short = features(uptrend()[:40], "SOL/USDT")
    out = decide(view(short, missing=["PAXG/USDT"]), held=set())
    sol, paxg = only(out, "SOL/USDT"), only(out, "PAXG/USDT")
    assert sol.action is Action.HOLD and sol.confidence == 0.0
    assert "sma72" in sol.reasoning and "efficiency_ratio30" not in sol.reasoning
    assert paxg.action is Action.HOLD and "no market data" in paxg.reasoning
    bare = hand(regime="trending", rsi14=None, momentum14=0.05)
    d = only(decide(view(bare), held=set()), "ETH/USDT")
    assert d.action is Action.HOLD and "rsi14" in d.reasoning


def test_thresholds_on_hand_built_features() -> None:
    t = dict(regime="trending", efficiency_ratio30=0.6, sma72=90.0)
    assert symbol_signal(hand(**t, rsi14=55, momentum14=0.03)).action is Action.BUY
    assert symbol_signal(hand(**t, rsi14=49, momentum14=0.03)).action is Action.HOLD
    assert symbol_signal(hand(**t, rsi14=55, momentum14=0.015)).action is Action.HOLD
    assert symbol_signal(hand(**t, rsi14=45, momentum14=-0.04)).action is Action.HOLD
    sell = symbol_signal(hand(**t, rsi14=45, momentum14=-0.06))
    assert sell.action is Action.SELL and sell.score < 0

    r = dict(regime="ranging", efficiency_ratio30=0.2, sma72=100.0, bb_upper=110.0)
    assert symbol_signal(hand(**r, bb_lower=99.0, rsi14=35)).action is Action.BUY  # 100 < 100.98
    assert symbol_signal(hand(**r, bb_lower=97.0, rsi14=35)).action is Action.HOLD  # 100 > 98.94
    assert symbol_signal(hand(**r, bb_lower=99.0, rsi14=41)).action is Action.HOLD
    top = symbol_signal(hand(**r, bb_lower=90.0, rsi14=60, price=108.0))  # > 110·0.98 = 107.8
    assert top.action is Action.SELL


def test_regime_recomputed_when_label_missing() -> None:
    f = hand(efficiency_ratio30=0.6, sma72=90.0, rsi14=60, momentum14=0.04)  # regime "unknown"
    sig = symbol_signal(f)
    assert sig.regime == "trending" and sig.action is Action.BUY


def test_derivatives_composite_terms() -> None:
    assert derivatives_composite(None) is None
    assert derivatives_composite(DerivativesReading()) is None
    assert derivatives_composite(DerivativesReading(funding_rate=0.0002)) == 0.0  # below 0.0003
    assert derivatives_composite(DerivativesReading(funding_rate=0.001)) == pytest.approx(
        -math.tanh(2.0) * 0.35
    )
    assert derivatives_composite(DerivativesReading(taker_ratio=1.5)) == pytest.approx(
        math.tanh(1.0) * 0.30
    )
    assert derivatives_composite(DerivativesReading(ls_z=0.9)) == 0.0
    assert derivatives_composite(DerivativesReading(ls_z=2.0)) == pytest.approx(
        -math.tanh(0.3) * 0.25
    )
    oi = DerivativesReading(oi_change_pct=0.05)
    assert derivatives_composite(oi, price_direction=0.03) == pytest.approx(math.tanh(1) * 0.1)
    assert derivatives_composite(oi, price_direction=-0.03) == pytest.approx(-math.tanh(1) * 0.1)
    assert derivatives_composite(oi) == 0.0
    extreme = DerivativesReading(funding_rate=-1.0, taker_ratio=50.0, ls_z=-50.0, oi_change_pct=9)
    assert derivatives_composite(extreme, 1.0) == pytest.approx(1.0, abs=1e-3)


def test_derivatives_blend_weakens_but_never_flips() -> None:
    t = dict(regime="trending", efficiency_ratio30=0.6, sma72=90.0, rsi14=51, momentum14=0.021)
    bearish = DerivativesReading(funding_rate=0.01, taker_ratio=0.01, ls_z=30.0)
    plain = symbol_signal(hand(**t))
    mixed = symbol_signal(hand(**t), bearish)
    d = derivatives_composite(bearish, 0.021)
    assert d < -0.8
    assert mixed.score == pytest.approx(0.7 * plain.rule_score + 0.3 * d, abs=1e-4)
    assert mixed.action is Action.BUY and 0 < mixed.score < plain.score
    assert mixed.signal_weights["derivatives"] == pytest.approx(d, abs=1e-4)


def test_never_raises_on_odd_inputs() -> None:
    f = features(uptrend())
    out = decide(view(f), held=set(), position_pct=float("nan"), max_position_pct=-1)
    assert only(out, "BTC/USDT").position_pct == 0.0
    assert decide(MarketView(as_of_ms=0), held=set()).decisions == []


def test_with_plan_params_a_buy_carries_the_rules_exit_plan() -> None:
    """Issue 15: the rule policy writes each entry's plan (exit_plan.rule_plan) when asked."""
    from trading.exit_plan import rule_plan
    from trading.models import PositionParams

    f = features(uptrend())
    assert only(decide(view(f), held=set()), "BTC/USDT").exit_plan is None  # not asked
    params = PositionParams()
    d = only(decide(view(f), held=set(), plan_params=params), "BTC/USDT")
    assert d.action is Action.BUY and d.exit_plan is not None
    assert d.exit_plan == rule_plan(
        "BTC/USDT",
        f.price,
        atr_pct=f.atr_pct,
        ema21=f.ema21,
        stop_loss_pct=params.stop_loss_pct,
        trail_activate_pct=params.trail_activate_pct,
        fee_rate=params.fee_rate,
    )
    assert d.exit_plan.source == "rule" and d.exit_plan.stop_price < f.price
