"""The learner per direction (issue 15): shorts learn in their own sets, longs as before shorts.

``_V1`` below is the learner's update and read code as it was before shorts (copied verbatim,
minus docstrings): long trades and old states must give exactly its results.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3

import pytest
from temporalio.testing import ActivityEnvironment

from activities.learner_store import LearnerActivities, LearnerStore
from trading import learner as L
from trading.backtest.hooks import ThompsonLearner
from trading.learner import (
    GLOBAL,
    GLOBAL_SHORT,
    GROUPS,
    MAX_REGIMES,
    STARTING_WEIGHTS,
    Arm,
    ArmSet,
    LearnerParams,
    LearnerState,
    LearnerUpdateRequest,
    active_set,
    new_state,
    policy_weights,
    posterior_table,
    reliabilities,
    reward,
    side_trades,
    thompson_draws,
    update,
)
from trading.models import ClosedTrade, PositionSide

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT


class _V1:
    """The learner before shorts (trading/learner.py at c5d6875), for comparison."""

    @staticmethod
    def credit(trade: ClosedTrade, params: LearnerParams) -> dict[str, tuple[float, float]]:
        r = L.reward(trade.pnl_pct, params.reward_scale)
        outcome = 1.0 if trade.pnl_pct > 0 else -1.0
        out: dict[str, tuple[float, float]] = {}
        for name, w in sorted(trade.signal_weights.items()):
            if not math.isfinite(w) or abs(w) < params.min_weight or w == 0:
                continue
            arm = L.group_of(name)
            da, db = out.get(arm, (0.0, 0.0))
            step = min(abs(w), 1.0) * r
            if math.copysign(1.0, w) == outcome:
                da += step
            else:
                db += step
            out[arm] = (da, db)
        return out

    @staticmethod
    def updated_set(old: ArmSet, credit: dict[str, tuple[float, float]], p: LearnerParams):
        arms = {name: arm.model_copy() for name, arm in old.arms.items()}
        for g in GROUPS:
            arms.setdefault(g, Arm(alpha=p.prior_alpha, beta=p.prior_beta))
        extra = [a for a in arms if a not in GROUPS]
        for name in credit:
            if name not in arms and len(extra) < L.MAX_EXTRA_ARMS:
                arms[name] = Arm(alpha=p.prior_alpha, beta=p.prior_beta)
                extra.append(name)
        out: dict[str, Arm] = {}
        for name, arm in arms.items():
            da, db = credit.get(name, (0.0, 0.0))
            out[name] = Arm(
                alpha=L._decay(arm.alpha + da, p.prior_alpha, p.decay),
                beta=L._decay(arm.beta + db, p.prior_beta, p.decay),
            )
        return ArmSet(n=old.n + 1, arms=out)

    @classmethod
    def update(cls, state, trade, regime, params=None):
        p = params or LearnerParams()
        if trade.trade_id in state.seen_ids:
            return state
        credit = cls.credit(trade, p)
        sets = dict(state.sets)
        keys = [GLOBAL]
        key = L.regime_key(regime)
        if key != L.UNKNOWN_REGIME:
            regimes = [k for k in sets if k != GLOBAL]
            if key in sets or len(regimes) < MAX_REGIMES:
                keys.append(key)
        for k in keys:
            sets[k] = cls.updated_set(sets.get(k, ArmSet()), credit, p)
        seen = [*state.seen_ids, trade.trade_id][-p.max_seen_ids :]
        return LearnerState(
            version=state.version, n_trades=state.n_trades + 1, sets=sets, seen_ids=seen
        )

    @staticmethod
    def active_set(state, regime, params=None):
        p = params or LearnerParams()
        key = L.regime_key(regime)
        own = state.sets.get(key)
        if own is not None and key != L.UNKNOWN_REGIME and own.n >= p.min_regime_trades:
            return key, own
        return GLOBAL, state.sets.get(GLOBAL, ArmSet())

    @classmethod
    def reliabilities(cls, state, regime, params=None):
        p = params or LearnerParams()
        _, s = cls.active_set(state, regime, p)
        names = [*GROUPS, *sorted(a for a in s.arms if a not in GROUPS)]
        return {name: round(L._arm(s, name, p).mean, 6) for name in names}

    @classmethod
    def thompson_draws(cls, state, regime, rng, params=None):
        p = params or LearnerParams()
        _, s = cls.active_set(state, regime, p)
        draws = {
            g: max(0.0, float(rng.betavariate(L._arm(s, g, p).alpha, L._arm(s, g, p).beta)))
            for g in GROUPS
        }
        return L._normalise(draws)

    @classmethod
    def policy_weights(cls, state, regime, rng, params=None):
        p = params or LearnerParams()
        if state.n_trades < p.warmup_trades:
            return dict(STARTING_WEIGHTS)
        draws = cls.thompson_draws(state, regime, rng, p)
        return L._normalise({g: STARTING_WEIGHTS[g] * draws[g] for g in GROUPS})


# A state written by the learner before shorts (4 long trades; prior arms left out).
OLD_STATE_JSON = json.dumps(
    {
        "version": 1,
        "n_trades": 4,
        "sets": {
            "global": {
                "n": 4,
                "arms": {
                    "trend": {"alpha": 2.753, "beta": 2.2357},
                    "reversion": {"alpha": 2.4878, "beta": 2.0},
                    "volume": {"alpha": 2.1463, "beta": 2.0},
                    "odd": {"alpha": 2.0997, "beta": 2.0},
                },
            },
            "low": {
                "n": 3,
                "arms": {
                    "trend": {"alpha": 2.7926, "beta": 2.2481},
                    "reversion": {"alpha": 2.1985, "beta": 2.0},
                    "volume": {"alpha": 2.154, "beta": 2.0},
                },
            },
            "high": {
                "n": 1,
                "arms": {
                    "reversion": {"alpha": 2.2992, "beta": 2.0},
                    "odd": {"alpha": 2.0997, "beta": 2.0},
                },
            },
        },
        "seen_ids": ["p0", "p1", "p2", "p3"],
    }
)

NAMES = ("trend", "rsi", "volume_z", "funding", "fear_greed", "regime", "moon_phase", "ema_50")


def trade(
    trade_id: str, pnl_pct: float, side: PositionSide = LONG, **weights: float
) -> ClosedTrade:
    return ClosedTrade(
        trade_id=trade_id,
        symbol="BTC/USDT",
        qty=1.0,
        entry_price=100.0,
        exit_price=100.0 * (1 + side.sign * pnl_pct),
        entry_time_ms=0,
        exit_time_ms=3_600_000,
        fees=0.0,
        pnl=100.0 * pnl_pct,
        pnl_pct=pnl_pct,
        exit_reason="test",
        signal_weights=weights,
        side=side,
    )


def random_trade(rng: random.Random, i: int, side: PositionSide = LONG) -> ClosedTrade:
    names = rng.sample(NAMES, rng.randint(0, 4))
    weights = {n: round(rng.uniform(-1.2, 1.2), 3) for n in names}
    if rng.random() < 0.1:
        weights[f"odd{rng.randint(0, 30)}"] = 0.5
    pnl = rng.choice([0.0, round(rng.uniform(-0.1, 0.1), 4)])
    return trade(f"{side.value}{i}", pnl, side, **weights)


def random_regime(rng: random.Random) -> str | None:
    return rng.choice([None, "", "unknown", "global", "low", "High", "mid", *map(str, range(20))])


def decayed(x: float) -> float:
    return 2.0 + 0.95 * (x - 2.0)


# ---------------------------------------------------------------- longs as before


def test_long_trades_give_exactly_the_old_learner_results() -> None:
    rng = random.Random(15)
    p = LearnerParams(max_seen_ids=200)
    new, old = new_state(), new_state()
    for i in range(400):
        t, regime = random_trade(rng, i % 350), random_regime(rng)  # a few repeated ids
        new, old = update(new, t, regime, p), _V1.update(old, t, regime, p)
        assert new == old
        for reg in ("low", "High", "7", None, "never"):
            assert active_set(new, reg, p) == _V1.active_set(old, reg, p)
            assert reliabilities(new, reg, p) == _V1.reliabilities(old, reg, p)
            seed = rng.random()
            assert thompson_draws(new, reg, random.Random(seed), p) == _V1.thompson_draws(
                old, reg, random.Random(seed), p
            )
            assert policy_weights(new, reg, random.Random(seed), p) == _V1.policy_weights(
                old, reg, random.Random(seed), p
            )
    assert len(new.sets) == MAX_REGIMES + 1 and GLOBAL_SHORT not in new.sets


def test_an_old_state_loads_and_reads_and_learns_as_before() -> None:
    s = LearnerState.model_validate_json(OLD_STATE_JSON)
    for reg in ("low", "high", None):
        assert reliabilities(s, reg) == _V1.reliabilities(s, reg)
        assert reliabilities(s, reg, side=LONG) == _V1.reliabilities(s, reg)
        assert policy_weights(s, reg, random.Random(1), LearnerParams(warmup_trades=3)) == (
            _V1.policy_weights(s, reg, random.Random(1), LearnerParams(warmup_trades=3))
        )
    assert active_set(s, "low")[0] == "low"
    t = trade("p9", 0.02, trend=0.6, rsi=-0.3)
    assert update(s, t, "low") == _V1.update(s, t, "low")
    assert side_trades(s) == 4 and side_trades(s, SHORT) == 0
    table = posterior_table(s)
    assert {n: (r.side, r.regime) for n, r in table.sets.items()} == {
        "global": (LONG, "global"),
        "low": (LONG, "low"),
        "high": (LONG, "high"),
    }
    # the query answer of an old client (no side, no regime) still parses: longs
    row = L.SetRow.model_validate({"n": 1, "arms": {}})
    assert row.side is LONG and row.regime == ""


def test_shorts_leave_the_long_sets_and_long_reads_as_they_would_be_without_them() -> None:
    rng = random.Random(4)
    longs_only, mixed = new_state(), new_state()
    for i in range(120):
        regime = random_regime(rng)
        if rng.random() < 0.4:
            mixed = update(mixed, random_trade(rng, i, SHORT), regime)
            continue
        t = random_trade(rng, i)
        longs_only, mixed = update(longs_only, t, regime), update(mixed, t, regime)
    assert {k: v for k, v in mixed.sets.items() if not k.endswith("/short")} == longs_only.sets
    assert side_trades(mixed, LONG) == longs_only.n_trades
    assert side_trades(mixed, SHORT) == mixed.n_trades - longs_only.n_trades > 0
    for reg in ("low", "mid", "3", None):
        assert reliabilities(mixed, reg) == reliabilities(longs_only, reg)
        for seed in range(3):
            assert policy_weights(mixed, reg, random.Random(seed)) == policy_weights(
                longs_only, reg, random.Random(seed)
            )


# ---------------------------------------------------------------- shorts


def test_a_short_win_credits_the_signals_that_pushed_it_down() -> None:
    s = update(new_state(), trade("s1", 0.05, SHORT, trend=-0.8, volume=0.4, macro=-0.01), "low")
    r = reward(0.05)
    assert set(s.sets) == {GLOBAL, GLOBAL_SHORT, "low/short"}
    assert s.sets[GLOBAL] == ArmSet()  # the long sets: untouched
    g = s.sets[GLOBAL_SHORT].arms
    assert g["trend"].alpha == pytest.approx(decayed(2 + 0.8 * r))  # called the fall: success
    assert g["trend"].beta == pytest.approx(2.0)
    assert g["volume"].alpha == pytest.approx(2.0)  # pushed for a rise: failure
    assert g["volume"].beta == pytest.approx(decayed(2 + 0.4 * r))
    assert g["macro"].alpha == g["macro"].beta == 2.0  # |w| < 0.05
    assert s.sets["low/short"].arms == g and s.sets["low/short"].n == 1


def test_a_short_loss_blames_the_signals_that_pushed_it_down() -> None:
    s = update(new_state(), trade("s1", -0.02, SHORT, trend=-0.5, derivatives=0.3), "high")
    r = reward(0.02)
    g = s.sets[GLOBAL_SHORT].arms
    assert g["trend"].beta == pytest.approx(decayed(2 + 0.5 * r))
    assert g["trend"].alpha == pytest.approx(2.0)
    assert g["derivatives"].alpha == pytest.approx(decayed(2 + 0.3 * r))  # it saw the rise
    assert reliabilities(s, "high", side=SHORT)["trend"] < 0.5  # global/short (1 trade)


def test_a_short_is_the_mirror_of_a_long() -> None:
    rng = random.Random(9)
    longs, shorts = new_state(), new_state()
    for i in range(60):
        t, regime = random_trade(rng, i), random_regime(rng)
        mirrored = t.model_copy(
            update={
                "trade_id": f"m{i}",
                "side": SHORT,
                "signal_weights": {k: -w for k, w in t.signal_weights.items()},
            }
        )
        longs, shorts = update(longs, t, regime), update(shorts, mirrored, regime)
    assert {k.removesuffix("/short"): v for k, v in shorts.sets.items() if "/" in k} == {
        k: v for k, v in longs.sets.items() if v.n
    }
    for reg in ("low", "mid", None):
        assert reliabilities(shorts, reg, side=SHORT) == reliabilities(longs, reg)
        assert active_set(shorts, reg, side=SHORT)[0] == L.side_key(
            active_set(longs, reg)[0], SHORT
        )
        assert policy_weights(shorts, reg, random.Random(2), side=SHORT) == policy_weights(
            longs, reg, random.Random(2)
        )


def test_short_and_long_sets_are_learned_apart() -> None:
    s = new_state()
    for i in range(4):  # longs in "low" win on trend, shorts in "low" lose on it
        s = update(s, trade(f"l{i}", 0.05, trend=1.0), "low")
        s = update(s, trade(f"s{i}", -0.05, SHORT, trend=-1.0), "low")
    assert reliabilities(s, "low")["trend"] > 0.5
    assert reliabilities(s, "low", side=SHORT)["trend"] < 0.5
    assert active_set(s, "low")[0] == "low"
    assert active_set(s, "low", side=SHORT)[0] == "low/short"
    before = s.model_copy(deep=True)
    s = update(s, trade("l9", 0.05, trend=1.0), "low")
    assert {k: v for k, v in s.sets.items() if k.endswith("/short")} == {
        k: v for k, v in before.sets.items() if k.endswith("/short")
    }
    s = update(s, trade("s9", 0.05, SHORT, trend=-1.0), "low")
    assert s.sets[GLOBAL] == s.sets["low"]  # untouched by the short
    assert s.n_trades == 10 and side_trades(s, SHORT) == 5 and side_trades(s, LONG) == 5


def test_a_short_falls_back_within_its_own_direction() -> None:
    s = new_state()
    for i in range(5):
        s = update(s, trade(f"l{i}", 0.05, trend=1.0), "low")
    # no short yet: the short global set is the flat prior, never the long sets
    assert active_set(s, "low", side=SHORT) == (GLOBAL_SHORT, ArmSet())
    assert set(reliabilities(s, "low", side=SHORT).values()) == {0.5}
    assert policy_weights(s, "low", random.Random(1), side=SHORT) == STARTING_WEIGHTS
    assert policy_weights(s, "low", random.Random(1)) != STARTING_WEIGHTS  # 5 longs: warm
    s = update(s, trade("s0", 0.05, SHORT, trend=-1.0), "high")
    s = update(s, trade("s1", 0.05, SHORT, trend=-1.0), "high")
    assert active_set(s, "high", side=SHORT)[0] == GLOBAL_SHORT  # 2 short trades in "high"
    assert reliabilities(s, "high", side=SHORT) == reliabilities(s, None, side=SHORT)
    s = update(s, trade("s2", 0.05, SHORT, trend=-1.0), "high")
    assert active_set(s, "high", side=SHORT)[0] == "high/short"
    assert active_set(s, "low", side=SHORT)[0] == GLOBAL_SHORT
    assert active_set(s, "high")[0] == GLOBAL  # the long side has no "high" trade
    for i in range(3, 5):
        s = update(s, trade(f"s{i}", 0.05, SHORT, trend=-1.0), "high")
    w = policy_weights(s, "high", random.Random(1), side=SHORT)
    assert w != STARTING_WEIGHTS and math.fsum(w.values()) == pytest.approx(1.0)


def test_unknown_regime_shorts_update_only_the_short_global_set_and_bounds_are_per_side() -> None:
    s = update(new_state(), trade("s", 0.05, SHORT, trend=-1.0), "unknown")
    assert set(s.sets) == {GLOBAL, GLOBAL_SHORT}
    for i in range(MAX_REGIMES + 5):
        s = update(s, trade(f"l{i}", 0.01, trend=0.5), f"r{i}")
        s = update(s, trade(f"s{i}", 0.01, SHORT, trend=-0.5), f"r{i}")
    short_sets = [k for k in s.sets if k.endswith("/short")]
    long_sets = [k for k in s.sets if not k.endswith("/short")]
    assert len(short_sets) == len(long_sets) == MAX_REGIMES + 1
    assert s.sets[GLOBAL_SHORT].n == MAX_REGIMES + 6 and s.sets[GLOBAL].n == MAX_REGIMES + 5
    assert update(s, trade("s3", 0.01, SHORT, trend=-0.5), "r3") is s  # idempotent by id
    table = posterior_table(s)
    assert table.sets["r3/short"].side is SHORT and table.sets["r3/short"].regime == "r3"
    assert table.sets[GLOBAL_SHORT].side is SHORT and table.sets[GLOBAL_SHORT].regime == GLOBAL
    assert table.sets["r3"].side is LONG
    assert LearnerState.model_validate_json(s.model_dump_json()) == s


def test_the_backtest_hook_learns_each_side_in_its_sets() -> None:
    hook = ThompsonLearner(seed=3)
    for i in range(5):
        hook.record_trade(trade(f"s{i}", 0.04, SHORT, trend=-0.9), "low")
    assert hook.state.sets[GLOBAL].n == 0 and hook.state.sets["low/short"].n == 5
    assert hook.group_weights("low") == STARTING_WEIGHTS  # no long trade yet
    w = hook.group_weights("low", SHORT)
    assert w is not None and w != STARTING_WEIGHTS


# ---------------------------------------------------------------- the snapshot store


async def test_the_store_records_a_short_with_its_side_and_sets(tmp_path) -> None:
    store = LearnerStore(tmp_path / "learner.db")
    acts = LearnerActivities(store)
    env = ActivityEnvironment()
    t = trade("p-1", 0.04, SHORT, trend=-0.7)
    state = await env.run(
        acts.learner_update, LearnerUpdateRequest(state=new_state(), trade=t, regime="high")
    )
    assert state == update(new_state(), t, "high")
    await env.run(
        acts.learner_update,
        LearnerUpdateRequest(state=state, trade=trade("p-2", 0.01, trend=0.4), regime="high"),
    )
    short, long = store.rows()
    assert short["side"] == "short" and long["side"] == "long"
    assert short["set_used"] == GLOBAL_SHORT and set(short["posteriors"]) == {
        GLOBAL_SHORT,
        "high/short",
    }
    assert short["posteriors"]["high/short"]["side"] == "short"
    assert short["reliabilities"]["trend"] > 0.5
    assert long["set_used"] == GLOBAL and set(long["posteriors"]) == {GLOBAL, "high"}
    store.close()


def test_a_learner_db_from_before_shorts_gains_the_side_column(tmp_path) -> None:
    path = tmp_path / "learner.db"
    con = sqlite3.connect(path)
    con.execute(
        """CREATE TABLE learner_updates (
        trade_id TEXT PRIMARY KEY, account TEXT NOT NULL, symbol TEXT NOT NULL,
        regime TEXT NOT NULL, set_used TEXT NOT NULL, exit_time_ms INTEGER NOT NULL,
        pnl_pct REAL NOT NULL, signal_weights TEXT NOT NULL, reliabilities TEXT NOT NULL,
        posteriors TEXT NOT NULL, n_trades INTEGER NOT NULL, recorded_at TEXT NOT NULL)"""
    )
    con.execute(
        "INSERT INTO learner_updates VALUES ('old', 'paper', 'BTC/USDT', 'low', 'global', 1,"
        " 0.01, '{}', '{}', '{}', 1, '2026-01-01')"
    )
    con.commit()
    con.close()
    store = LearnerStore(path)
    LearnerStore(path).close()  # a second open finds the column there
    (row,) = store.rows()
    assert row["trade_id"] == "old" and row["side"] == "long"
    s = update(new_state(), trade("new", 0.02, SHORT, trend=-0.5), "low")
    req = LearnerUpdateRequest(state=new_state(), trade=trade("new", 0.02, SHORT, trend=-0.5))
    assert store.record(req.model_copy(update={"regime": "low"}), s)
    assert [r["side"] for r in store.rows()] == ["long", "short"]
    store.close()
