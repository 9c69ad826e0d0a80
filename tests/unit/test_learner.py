"""Regime-aware Thompson learner (SPEC §5), checked by hand on short trade lists."""

from __future__ import annotations

import math
import random

import pytest

from trading.learner import (
    GLOBAL,
    GROUPS,
    MAX_EXTRA_ARMS,
    MAX_REGIMES,
    STARTING_WEIGHTS,
    LearnerParams,
    LearnerState,
    active_set,
    group_of,
    new_state,
    policy_weights,
    posterior_table,
    reliabilities,
    reward,
    thompson_draws,
    update,
)
from trading.models import ClosedTrade


def trade(trade_id: str, pnl_pct: float, **weights: float) -> ClosedTrade:
    return ClosedTrade(
        trade_id=trade_id,
        symbol="BTC/USDT",
        qty=1.0,
        entry_price=100.0,
        exit_price=100.0 * (1 + pnl_pct),
        entry_time_ms=0,
        exit_time_ms=3_600_000,
        fees=0.2,
        pnl=100.0 * pnl_pct,
        pnl_pct=pnl_pct,
        exit_reason="test",
        signal_weights=weights,
    )


def decayed(x: float) -> float:
    return 2.0 + 0.95 * (x - 2.0)


def test_reward_is_the_spec_sigmoid() -> None:
    assert reward(0.05) == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert reward(-0.05) == reward(0.05)
    assert reward(0.0) == 0.5


def test_arithmetic_by_hand_on_two_trades() -> None:
    s = update(new_state(), trade("t1", 0.05, trend=0.8, volume=-0.4, sentiment=0.01), "low")
    r1 = 1 / (1 + math.exp(-0.5))
    g = s.sets[GLOBAL].arms
    # trend aligned with a win; volume bet against it; sentiment under |w| 0.05: untouched
    assert g["trend"].alpha == pytest.approx(decayed(2 + 0.8 * r1))
    assert g["trend"].beta == pytest.approx(2.0)
    assert g["volume"].alpha == pytest.approx(2.0)
    assert g["volume"].beta == pytest.approx(decayed(2 + 0.4 * r1))
    assert g["sentiment"].alpha == g["sentiment"].beta == 2.0
    assert s.sets["low"].arms == g and s.sets["low"].n == 1

    s = update(s, trade("t2", -0.02, trend=0.5, derivatives=-0.3), "low")
    r2 = 1 / (1 + math.exp(-0.2))
    g = s.sets[GLOBAL].arms
    assert g["trend"].alpha == pytest.approx(decayed(decayed(2 + 0.8 * r1)))
    assert g["trend"].beta == pytest.approx(decayed(2 + 0.5 * r2))
    assert g["derivatives"].alpha == pytest.approx(decayed(2 + 0.3 * r2))  # short call, loss
    assert g["volume"].beta == pytest.approx(decayed(decayed(2 + 0.4 * r1)))
    assert s.n_trades == 2 and s.sets[GLOBAL].n == 2


def test_finer_names_map_to_groups_and_unknown_names_get_their_own_arm() -> None:
    assert group_of("RSI14") == "reversion"
    assert group_of("funding_rate") == "derivatives"
    assert group_of("funding_8h") == "derivatives"
    assert group_of("momentum") == "trend"
    assert group_of("fear-greed") == "sentiment"
    assert group_of("regime") == "macro"
    s = update(new_state(), trade("t1", 0.03, rsi=0.6, bollinger=0.2, moon_phase=0.9), "high")
    arms = s.sets[GLOBAL].arms
    r = reward(0.03)
    assert arms["reversion"].alpha == pytest.approx(decayed(2 + 0.8 * r))  # two signals add up
    assert arms["moon_phase"].alpha == pytest.approx(decayed(2 + 0.9 * r))
    assert set(reliabilities(s, "high")) == {*GROUPS, "moon_phase"}


def test_extra_arms_are_bounded() -> None:
    s = new_state()
    for i in range(MAX_EXTRA_ARMS + 10):
        s = update(s, trade(f"t{i}", 0.01, **{f"odd{i}x": 0.5}), "low")
    extra = [a for a in s.sets[GLOBAL].arms if a not in GROUPS]
    assert len(extra) == MAX_EXTRA_ARMS


def test_state_stays_bounded_with_many_regimes_names_and_trades() -> None:
    s, p = new_state(), LearnerParams(max_seen_ids=50)
    for i in range(300):
        weights = {"trend": 0.5, f"odd{i % 40}x": 0.4}
        s = update(s, trade(f"t{i}", 0.01 * (i % 5 - 2), **weights), f"regime{i % 30}", p)
    assert len(s.sets) == MAX_REGIMES + 1 and GLOBAL in s.sets
    assert all(len(v.arms) <= len(GROUPS) + MAX_EXTRA_ARMS for v in s.sets.values())
    assert len(s.seen_ids) == 50 and s.n_trades == 300
    assert s.sets[GLOBAL].n == 300  # trades of regimes beyond the bound still teach globally
    assert len(s.model_dump_json()) < 60_000


def test_regime_falls_back_to_global_below_three_trades() -> None:
    s = new_state()
    for i in range(3):
        s = update(s, trade(f"h{i}", -0.05, trend=1.0), "high")
    s = update(s, trade("l0", 0.05, trend=1.0), "low")
    s = update(s, trade("l1", 0.05, trend=1.0), "low")
    assert active_set(s, "low")[0] == GLOBAL  # 2 trades in "low": the global set stands in
    assert reliabilities(s, "low") == reliabilities(s, None)
    assert active_set(s, "high")[0] == "high"
    assert reliabilities(s, "high")["trend"] < 0.5
    s = update(s, trade("l2", 0.05, trend=1.0), "low")
    assert active_set(s, "low")[0] == "low"
    assert reliabilities(s, "low")["trend"] > 0.5
    assert active_set(s, "never_seen")[0] == GLOBAL


def test_unknown_regime_updates_only_the_global_set() -> None:
    s = update(new_state(), trade("t", 0.05, trend=1.0), "unknown")
    assert set(s.sets) == {GLOBAL}
    s = update(s, trade("u", 0.05, trend=1.0), "")
    assert set(s.sets) == {GLOBAL} and s.sets[GLOBAL].n == 2


def test_decay_pulls_every_arm_of_the_touched_sets_toward_the_prior() -> None:
    s = new_state()
    for i in range(5):
        s = update(s, trade(f"w{i}", 0.1, trend=1.0), "low")
    trend_alpha = s.sets[GLOBAL].arms["trend"].alpha
    for i in range(40):  # trades that never mention trend
        s = update(s, trade(f"o{i}", 0.1, volume=1.0), "low")
    alpha = s.sets[GLOBAL].arms["trend"].alpha
    assert alpha == pytest.approx(2 + (trend_alpha - 2) * 0.95**40)
    assert 0 < alpha - 2.0 < 0.15 * (trend_alpha - 2.0)
    # a trade in another regime leaves the "low" set as it was
    s2 = update(s, trade("h2", 0.1, reversion=1.0), "high")
    assert s2.sets["low"] == s.sets["low"]


def test_updates_are_idempotent_by_trade_id_and_the_id_list_is_bounded() -> None:
    s = update(new_state(), trade("t1", 0.05, trend=0.8), "low")
    again = update(s, trade("t1", 0.05, trend=0.8), "low")
    assert again == s
    p = LearnerParams(max_seen_ids=3)
    for i in range(6):
        s = update(s, trade(f"n{i}", 0.01), "low", p)
    assert s.seen_ids == ["n3", "n4", "n5"]


def test_update_does_not_modify_its_input() -> None:
    s = update(new_state(), trade("t1", 0.05, trend=0.8), "low")
    snapshot = s.model_dump()
    update(s, trade("t2", 0.05, trend=0.8), "low")
    assert s.model_dump() == snapshot


def test_thompson_draws_are_reproducible_and_sum_to_one() -> None:
    s = new_state()
    for i in range(6):
        s = update(s, trade(f"t{i}", 0.04, trend=0.9, reversion=-0.5), "low")
    a = thompson_draws(s, "low", random.Random(7))
    b = thompson_draws(s, "low", random.Random(7))
    assert a == b and list(a) == list(GROUPS)
    assert math.fsum(a.values()) == pytest.approx(1.0)
    assert all(v > 0 for v in a.values())
    assert a != thompson_draws(s, "low", random.Random(8))
    # trend has been paying: on average it gets the largest draw
    rng = random.Random(1)
    mean_trend = sum(thompson_draws(s, "low", rng)["trend"] for _ in range(300)) / 300
    assert mean_trend > 1 / 6


def test_policy_weights_start_from_the_spec_weights_until_five_trades() -> None:
    s = new_state()
    rng = random.Random(3)
    for i in range(4):
        s = update(s, trade(f"t{i}", 0.04, trend=0.9), "low")
        assert policy_weights(s, "low", rng) == STARTING_WEIGHTS
    s = update(s, trade("t4", 0.04, trend=0.9), "low")
    w = policy_weights(s, "low", random.Random(3))
    assert w != STARTING_WEIGHTS and math.fsum(w.values()) == pytest.approx(1.0)
    assert w == policy_weights(s, "low", random.Random(3))
    assert math.fsum(STARTING_WEIGHTS.values()) == pytest.approx(1.0)


def test_posterior_table_and_state_round_trip() -> None:
    s = update(new_state(), trade("t1", 0.05, trend=0.8), "low")
    table = posterior_table(s)
    assert table.n_trades == 1
    assert table.sets["low"].n == 1
    row = table.sets[GLOBAL].arms["trend"]
    assert row.mean == pytest.approx(row.alpha / (row.alpha + row.beta), abs=1e-6)
    assert LearnerState.model_validate_json(s.model_dump_json()) == s


def test_learner_imports_only_stdlib_and_pydantic() -> None:
    import ast
    import sys
    from pathlib import Path

    allowed = set(sys.stdlib_module_names) | {"pydantic", "trading.models"}
    tree = ast.parse((Path(__file__).resolve().parents[2] / "trading" / "learner.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            assert mod in allowed or mod.split(".")[0] in allowed - {"trading"}, mod
        elif isinstance(node, ast.Import):
            for a in node.names:
                assert a.name.split(".")[0] in allowed, a.name


# ---------------------------------------------------------------- rule policy with weights


def _policy_inputs():
    import numpy as np

    from tests.unit.test_rule_policy import features, uptrend, view

    up = features(uptrend(), "BTC/USDT")
    steps = np.where(np.arange(200) % 2 == 0, 0.990, 1.002)
    steps[0] = 1.0
    down = features(100 * np.cumprod(steps), "ETH/USDT")
    return view(up, down)


def test_learned_multiplier_by_hand() -> None:
    from trading.rule_policy import learned_multiplier

    assert learned_multiplier({"trend": 0.8}, STARTING_WEIGHTS) == pytest.approx(1.0)
    doubled = {**STARTING_WEIGHTS, "trend": 0.70}  # normalised: trend 0.70/1.35
    expected = (0.70 / 1.35) / 0.35
    assert learned_multiplier({"trend": 0.8}, doubled) == pytest.approx(min(1.5, expected))
    w = {"trend": 0.6, "volume": 0.3, "derivatives": -0.4}  # derivatives opposed: not a driver
    g = {"trend": 0.35, "reversion": 0.24, "volume": 0.045, "derivatives": 0.2, "sentiment": 0.12}
    total = sum(g.values())
    ratio_t, ratio_v = (0.35 / total) / 0.35, (0.045 / total) / 0.09
    assert learned_multiplier(w, g) == pytest.approx((0.6 * ratio_t + 0.3 * ratio_v) / 0.9)
    assert learned_multiplier({"trend": 0.8}, {"trend": 0.001, "reversion": 0.999}) == 0.5
    assert learned_multiplier({"trend": 0.8}, {}) == 1.0
    assert learned_multiplier({"trend": -0.8}, {"trend": 1.0}) == 1.0
    assert learned_multiplier({"trend": 0.8}, {"trend": float("nan"), "macro": 1.0}) == 1.0


def test_rule_policy_with_group_weights_scales_buys_and_never_flips() -> None:
    from trading.models import Action
    from trading.rule_policy import decide

    market = _policy_inputs()
    base = {d.ticker: d for d in decide(market, held={"ETH/USDT"}).decisions}
    assert base["BTC/USDT"].action is Action.BUY and base["ETH/USDT"].action is Action.SELL

    same = {
        d.ticker: d for d in decide(market, {"ETH/USDT"}, group_weights=STARTING_WEIGHTS).decisions
    }
    for sym in base:
        assert same[sym].action is base[sym].action
        assert same[sym].confidence == base[sym].confidence
        assert same[sym].position_pct == base[sym].position_pct

    trusted = {**STARTING_WEIGHTS, "trend": 0.9}
    distrusted = {**STARTING_WEIGHTS, "trend": 0.01}
    hi = {d.ticker: d for d in decide(market, {"ETH/USDT"}, group_weights=trusted).decisions}
    lo = {d.ticker: d for d in decide(market, {"ETH/USDT"}, group_weights=distrusted).decisions}
    b = base["BTC/USDT"]
    assert hi["BTC/USDT"].action is lo["BTC/USDT"].action is Action.BUY
    assert hi["BTC/USDT"].confidence > b.confidence > lo["BTC/USDT"].confidence > 0
    assert hi["BTC/USDT"].position_pct >= b.position_pct > lo["BTC/USDT"].position_pct > 0
    assert hi["BTC/USDT"].position_pct <= 0.30
    assert lo["BTC/USDT"].confidence >= round(b.confidence * 0.5, 4) - 1e-4
    assert "learned group weights" in lo["BTC/USDT"].reasoning
    for out in (hi, lo):  # SELLs are never touched
        assert out["ETH/USDT"] == base["ETH/USDT"]
