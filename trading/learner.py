"""Regime-aware Thompson-sampling learner (SPEC §5): which signal groups have been paying.

Workflow code: standard library and pydantic only, deterministic, randomness injected (the
DecisionWorkflow passes ``workflow.random()``). The state is a small pydantic model that lives in
the DecisionWorkflow forever, so every part of it is bounded.

Per closed trade and per signal with |w| >= 0.05: aligned = sign(w) agrees with the direction
the trade's net outcome says the price took for it (a long that made money: up; a short that made
money: down), signal weights being directional views (+ = for a long, price up; - = for a short,
price down); reward = 1/(1+exp(-|pnl_pct|·10)); aligned → α += |w|·reward, else β += |w|·reward.
Then every arm of each set the trade touched decays toward the Beta(2, 2) prior:
α = 2 + 0.95·(α − 2), same for β. A trade updates its regime's set and the global set; a regime
with fewer than 3 trades reads the global set instead.

Per direction (issue 15): longs and shorts learn in separate families of sets. A long's sets are
keyed as they always were (``"global"``, ``regime_key(regime)``), so every state and history from
before shorts reads and updates exactly as before; a short's are ``"global/short"`` and
``"<regime>/short"``. A trade only ever touches its own side's sets, and each family falls back
within itself (``active_set``).
"""

from __future__ import annotations

import math
from typing import Protocol

from pydantic import Field

from trading.models import ClosedTrade, Model, PositionSide

GROUPS: tuple[str, ...] = ("trend", "reversion", "volume", "derivatives", "sentiment", "macro")
GLOBAL = "global"
UNKNOWN_REGIME = "unknown"
SHORT_SUFFIX = "/short"  # a short set's key: the long key plus this
GLOBAL_SHORT = GLOBAL + SHORT_SUFFIX
LONG = PositionSide.LONG
SHORT = PositionSide.SHORT

# SPEC §5 names its starting weights trend .35, reversion .24, momentum .18, sentiment .12,
# regime .11. Mapped onto the six groups: "momentum" in the rule policy is flow confirmation
# of the side (volume z, taker flow and OI confirmation), so its .18 is split evenly between
# volume and derivatives; "regime" is the macro/vol-regime group. Sums to 1.
STARTING_WEIGHTS: dict[str, float] = {
    "trend": 0.35,
    "reversion": 0.24,
    "volume": 0.09,
    "derivatives": 0.09,
    "sentiment": 0.12,
    "macro": 0.11,
}

# Finer signal names (as the LLM or the policy may write them) → learner group.
SIGNAL_TO_GROUP: dict[str, str] = {
    **{g: g for g in GROUPS},
    # trend following and momentum of price
    "momentum": "trend",
    "mom": "trend",
    "ema": "trend",
    "ema_cross": "trend",
    "sma": "trend",
    "ma": "trend",
    "macd": "trend",
    "adx": "trend",
    "breakout": "trend",
    "efficiency_ratio": "trend",
    # mean reversion
    "mean_reversion": "reversion",
    "rsi": "reversion",
    "bollinger": "reversion",
    "bb": "reversion",
    "bands": "reversion",
    "stochastic": "reversion",
    "oversold": "reversion",
    "overbought": "reversion",
    # volume and flow on the spot book
    "volume_z": "volume",
    "obv": "volume",
    "vwap": "volume",
    # derivatives
    "funding": "derivatives",
    "funding_rate": "derivatives",
    "oi": "derivatives",
    "open_interest": "derivatives",
    "oi_change": "derivatives",
    "basis": "derivatives",
    "taker": "derivatives",
    "taker_ratio": "derivatives",
    "long_short": "derivatives",
    "ls_ratio": "derivatives",
    "ls_z": "derivatives",
    "liquidations": "derivatives",
    # sentiment
    "fear_greed": "sentiment",
    "fng": "sentiment",
    "news": "sentiment",
    "social": "sentiment",
    # macro and regimes
    "regime": "macro",
    "hmm": "macro",
    "vol_regime": "macro",
    "crypto_regime": "macro",
    "macro_regime": "macro",
    "correlation": "macro",
    "dxy": "macro",
    "rates": "macro",
}

MAX_EXTRA_ARMS = 16  # arms for unknown signal names, per set
MAX_REGIMES = 16  # regime sets besides the global one, per direction
MAX_NAME_CHARS = 40


class LearnerParams(Model):
    """SPEC §5 numbers (configuration defaults)."""

    prior_alpha: float = Field(default=2.0, gt=0)
    prior_beta: float = Field(default=2.0, gt=0)
    decay: float = Field(default=0.95, gt=0, le=1)
    min_weight: float = Field(default=0.05, ge=0)
    reward_scale: float = Field(default=10.0, gt=0)
    min_regime_trades: int = Field(default=3, ge=0)
    warmup_trades: int = Field(default=5, ge=0)
    max_seen_ids: int = Field(default=2000, ge=1)


class Arm(Model):
    alpha: float = Field(default=2.0, gt=0)
    beta: float = Field(default=2.0, gt=0)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class ArmSet(Model):
    """The arms of one regime (or the global set) and how many trades have updated it."""

    n: int = 0
    arms: dict[str, Arm] = Field(default_factory=dict)


class LearnerState(Model):
    """Everything the learner knows. Bounded: ≤ 2 × 17 sets (long and short) × ≤ 22 arms,
    ≤ max_seen_ids ids. ``n_trades`` counts both directions (the short ones are
    ``sets["global/short"].n``)."""

    version: int = 1
    n_trades: int = 0
    sets: dict[str, ArmSet] = Field(default_factory=dict)
    seen_ids: list[str] = Field(default_factory=list)


class LearnerUpdateRequest(Model):
    """Input of the learner_update activity: the workflow replaces its state with the result."""

    state: LearnerState
    trade: ClosedTrade
    regime: str = UNKNOWN_REGIME
    params: LearnerParams = Field(default_factory=LearnerParams)
    account: str = ""


class ArmRow(Model):
    alpha: float
    beta: float
    mean: float


class SetRow(Model):
    n: int
    arms: dict[str, ArmRow]
    side: PositionSide = LONG  # whose trades the set learns from
    regime: str = ""  # the regime key ("global" for the global set), without the side suffix


class PosteriorTable(Model):
    """Query answer: per set (regimes and "global"; a short set's name ends in "/short"), n, the
    direction and regime of the set and each arm's α, β, posterior mean."""

    n_trades: int
    sets: dict[str, SetRow]


class BetaSampler(Protocol):
    """What the Thompson draw needs: ``random.Random`` (and ``workflow.random()``) fits."""

    def betavariate(self, alpha: float, beta: float) -> float: ...


# ---------------------------------------------------------------- names and rewards


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")[:MAX_NAME_CHARS]


def group_of(signal: str) -> str:
    """The learner arm of a signal name: its group, or the (normalised) name itself."""
    name = _norm(signal)
    if name in SIGNAL_TO_GROUP:
        return SIGNAL_TO_GROUP[name]
    stripped = name.rstrip("0123456789").rstrip("_")  # rsi14 → rsi, ema_50 → ema
    if stripped in SIGNAL_TO_GROUP:
        return SIGNAL_TO_GROUP[stripped]
    head = name.split("_", 1)[0].rstrip("0123456789")  # funding_8h → funding, bb_pct_b → bb
    if head in SIGNAL_TO_GROUP:
        return SIGNAL_TO_GROUP[head]
    return name or "unnamed"


def reward(pnl_pct: float, scale: float = 10.0) -> float:
    """SPEC §5: 1/(1+exp(-|pnl|·scale)), in [0.5, 1): bigger outcomes teach more."""
    return 1.0 / (1.0 + math.exp(-abs(pnl_pct) * scale))


def regime_key(regime: str | None) -> str:
    """The set a regime label uses; blank, "unknown" and the reserved "global" → unknown."""
    key = _norm(regime or "")
    return UNKNOWN_REGIME if key in ("", GLOBAL) else key


def _side(side: PositionSide | str | None) -> PositionSide:
    return SHORT if side == SHORT else LONG  # None or anything unknown: a long, as before shorts


def side_key(key: str, side: PositionSide | str | None = LONG) -> str:
    """The name of the set ``key`` (a regime key or "global") in ``side``'s family: unchanged
    for a long, ``key + "/short"`` for a short."""
    return key + SHORT_SUFFIX if _side(side) is SHORT else key


def side_of_key(name: str) -> PositionSide:
    """The direction a set name belongs to (HMM labels never contain "/")."""
    return SHORT if name.endswith(SHORT_SUFFIX) else LONG


def regime_of_key(name: str) -> str:
    """The regime key (or "global") of a set name, without its side suffix."""
    return name[: -len(SHORT_SUFFIX)] if side_of_key(name) is SHORT else name


def side_trades(state: LearnerState, side: PositionSide | str | None = LONG) -> int:
    """Trades learned in ``side``'s family. Every trade updates its side's global set, so the
    shorts are the global short set's n and the longs the rest (all of ``n_trades`` for a state
    from before shorts)."""
    shorts = state.sets[GLOBAL_SHORT].n if GLOBAL_SHORT in state.sets else 0
    return shorts if _side(side) is SHORT else state.n_trades - shorts


# ---------------------------------------------------------------- update


def new_state() -> LearnerState:
    return LearnerState(sets={GLOBAL: ArmSet()})


def _decay(value: float, prior: float, decay: float) -> float:
    return prior + decay * (value - prior)


def _credit(trade: ClosedTrade, params: LearnerParams) -> dict[str, tuple[float, float]]:
    """(Δα, Δβ) per arm for one trade; several signals of one group add up.

    A weight is a directional view (+ = price up, for a long; - = price down, for a short), so
    a signal is right when its sign is the direction the trade's outcome says the price took:
    a long's win or a short's loss = up, a long's loss or a short's win = down. A short's
    winning signals (negative weights) are credited α, its positive ones β.
    """
    r = reward(trade.pnl_pct, params.reward_scale)
    outcome = 1.0 if trade.pnl_pct > 0 else -1.0  # a trade that did not make money is a loss
    outcome *= _side(trade.side).sign  # the price's direction as the trade's outcome says it
    out: dict[str, tuple[float, float]] = {}
    for name, w in sorted(trade.signal_weights.items()):
        if not math.isfinite(w) or abs(w) < params.min_weight or w == 0:
            continue
        arm = group_of(name)
        da, db = out.get(arm, (0.0, 0.0))
        step = min(abs(w), 1.0) * r
        if math.copysign(1.0, w) == outcome:
            da += step
        else:
            db += step
        out[arm] = (da, db)
    return out


def _updated_set(old: ArmSet, credit: dict[str, tuple[float, float]], p: LearnerParams) -> ArmSet:
    arms = {name: arm.model_copy() for name, arm in old.arms.items()}
    for g in GROUPS:
        arms.setdefault(g, Arm(alpha=p.prior_alpha, beta=p.prior_beta))
    extra = [a for a in arms if a not in GROUPS]
    for name in credit:
        if name not in arms and len(extra) < MAX_EXTRA_ARMS:
            arms[name] = Arm(alpha=p.prior_alpha, beta=p.prior_beta)
            extra.append(name)
    out: dict[str, Arm] = {}
    for name, arm in arms.items():
        da, db = credit.get(name, (0.0, 0.0))
        out[name] = Arm(
            alpha=_decay(arm.alpha + da, p.prior_alpha, p.decay),
            beta=_decay(arm.beta + db, p.prior_beta, p.decay),
        )
    return ArmSet(n=old.n + 1, arms=out)


def update(
    state: LearnerState,
    trade: ClosedTrade,
    regime: str | None,
    params: LearnerParams | None = None,
) -> LearnerState:
    """The state after one closed trade; the same trade id twice changes nothing.

    Returns a new state (the input is not modified). The trade updates the global set and the
    set of its regime (not when the regime is unknown) of its direction's family (``trade.side``:
    "global" and the regime key for a long, as before shorts; "global/short" and
    "<regime>/short" for a short); every arm of those two sets decays, the other sets (other
    regimes, the other direction) are left as they are. Each direction holds up to MAX_REGIMES
    regime sets of its own.
    """
    p = params or LearnerParams()
    if trade.trade_id in state.seen_ids:
        return state
    credit = _credit(trade, p)
    sets = dict(state.sets)
    side = _side(trade.side)
    glob = side_key(GLOBAL, side)
    keys = [glob]
    key = regime_key(regime)
    if key != UNKNOWN_REGIME:
        key = side_key(key, side)
        regimes = [k for k in sets if k != glob and side_of_key(k) is side]
        if key in sets or len(regimes) < MAX_REGIMES:
            keys.append(key)
    for k in keys:
        sets[k] = _updated_set(sets.get(k, ArmSet()), credit, p)
    seen = [*state.seen_ids, trade.trade_id][-p.max_seen_ids :]
    return LearnerState(
        version=state.version, n_trades=state.n_trades + 1, sets=sets, seen_ids=seen
    )


# ---------------------------------------------------------------- reading


def active_set(
    state: LearnerState,
    regime: str | None,
    params: LearnerParams | None = None,
    *,
    side: PositionSide = LONG,
) -> tuple[str, ArmSet]:
    """(name, set) to read for ``regime`` and ``side``: the regime's own set of that direction
    once it has min_regime_trades, else that direction's global set.

    The fallback stays within the direction: a short regime set below min_regime_trades reads
    "global/short", and a "global/short" without trades is the flat prior (as the long global
    set is before the first long trade), never the long sets: what longs learned says nothing
    about what calls shorts right. A long reads exactly as before shorts.
    """
    p = params or LearnerParams()
    key = regime_key(regime)
    name = side_key(key, side)
    own = state.sets.get(name)
    if own is not None and key != UNKNOWN_REGIME and own.n >= p.min_regime_trades:
        return name, own
    glob = side_key(GLOBAL, side)
    return glob, state.sets.get(glob, ArmSet())


def _arm(s: ArmSet, name: str, p: LearnerParams) -> Arm:
    return s.arms.get(name) or Arm(alpha=p.prior_alpha, beta=p.prior_beta)


def reliabilities(
    state: LearnerState,
    regime: str | None,
    params: LearnerParams | None = None,
    *,
    side: PositionSide = LONG,
) -> dict[str, float]:
    """Posterior mean α/(α+β) of every arm (six groups always present) in the set ``active_set``
    reads for the regime and side (long by default)."""
    p = params or LearnerParams()
    _, s = active_set(state, regime, p, side=side)
    names = [*GROUPS, *sorted(a for a in s.arms if a not in GROUPS)]
    return {name: round(_arm(s, name, p).mean, 6) for name in names}


def thompson_draws(
    state: LearnerState,
    regime: str | None,
    rng: BetaSampler,
    params: LearnerParams | None = None,
    *,
    side: PositionSide = LONG,
) -> dict[str, float]:
    """One Beta(α, β) draw per group (fixed order, so a seeded rng reproduces), normalised, from
    the set ``active_set`` reads for the regime and side (long by default)."""
    p = params or LearnerParams()
    _, s = active_set(state, regime, p, side=side)
    draws = {
        g: max(0.0, float(rng.betavariate(_arm(s, g, p).alpha, _arm(s, g, p).beta))) for g in GROUPS
    }
    return _normalise(draws)


def policy_weights(
    state: LearnerState,
    regime: str | None,
    rng: BetaSampler,
    params: LearnerParams | None = None,
    *,
    side: PositionSide = LONG,
) -> dict[str, float]:
    """Group weights for the rule policy (sum 1), for trades of ``side`` (long by default).

    Before ``warmup_trades`` trades of that side (``side_trades``; for a state without shorts,
    all its trades): STARTING_WEIGHTS, drawing nothing. After: each group's starting weight times
    its Thompson draw, normalised. The starting weights are the prior importance of a group, the
    draw its learned reliability; at a flat posterior the weights stay near the starting ones,
    so nothing jumps at the 5th trade (a bare draw/Σdraw would reset trend from .35 to ~1/6 the
    moment the warm-up ends, with no evidence). The rule policy reads weight/starting weight.
    """
    p = params or LearnerParams()
    if side_trades(state, side) < p.warmup_trades:
        return dict(STARTING_WEIGHTS)
    draws = thompson_draws(state, regime, rng, p, side=side)
    return _normalise({g: STARTING_WEIGHTS[g] * draws[g] for g in GROUPS})


def _normalise(values: dict[str, float]) -> dict[str, float]:
    total = math.fsum(values.values())
    if not math.isfinite(total) or total <= 0:
        return {k: 1.0 / len(values) for k in values}
    return {k: v / total for k, v in values.items()}


def posterior_table(state: LearnerState) -> PosteriorTable:
    """Every set's arms as a small table (for a Temporal query or ``ocw status``); each row says
    its direction and regime (a short set's name is "<regime>/short" or "global/short")."""
    sets = {
        name: SetRow(
            n=s.n,
            arms={
                a: ArmRow(
                    alpha=round(arm.alpha, 6), beta=round(arm.beta, 6), mean=round(arm.mean, 6)
                )
                for a, arm in s.arms.items()
            },
            side=side_of_key(name),
            regime=regime_of_key(name),
        )
        for name, s in state.sets.items()
    }
    return PosteriorTable(n_trades=state.n_trades, sets=sets)
