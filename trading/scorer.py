"""Five-signal position scorer (SPEC §4 agent layer): HOLD, EXIT or ADD without the LLM.

Workflow code: standard library, pydantic and ``trading.models`` only, deterministic.

score = .25·regime_change + .25·momentum_reversal + .20·correlation_risk
        + .15·pnl_trajectory + .15·time_decay, each component in [-1, 1] (+ = keep / add).

Component definitions (numbers are module constants):

* regime_change — volatility regime: -0.4 per step up the vol ladder (low → high is two steps:
  -0.8), +0.2 per step down (at most +0.4). Symbol regime: trend still on and momentum with
  the long +0.5; trend turned against it -0.5; trend faded into a range -0.4; range broke
  out upwards +0.5, downwards -0.6; otherwise 0. Combined by sum, but a vol shock is never
  softened: with rising vol the component is at most the vol term.
* momentum_reversal — 0.6·tanh(m/5 %) + 0.4·tanh((m - m_prev)/3 %) (just tanh(m/5 %) without
  m_prev), -0.3 more when RSI14 > 80 and momentum is fading (exhaustion).
* correlation_risk — the market factor's 1 h return r (BTC's, or the symbol's own for BTC):
  0.9·r/5 % clipped to [-1, 1] (BTC -5 % in 1 h → -0.9). Without BTC's return, a non-BTC
  symbol's own 1 h return stands in at half weight.
* pnl_trajectory — peak >= +3 % and more than half of it given back: -0.6 (-0.8 if now a
  loss). In profit otherwise: min(1, pnl/10 %)·(1 - giveback). In loss: -0.5·min(1, -pnl/4 %).
* time_decay — age a = min(1, hours/48). Flat (|pnl| < 1 %): -0.5·a (stale and flat → -0.5);
  profit: +0.5·min(1, pnl/5 %); loss: -0.7·a.

Verdict: EXIT below ``exit_score``, ADD above ``add_score`` — but never ADD to a position that
is not in profit (no averaging down) — HOLD otherwise.

Shorts (``side=PositionSide.SHORT``): the same formulas on the market seen upside down, so a
short scores exactly what a long scores on the mirrored market. Momentum, its previous value
and both 1 h returns change sign and RSI becomes 100 - RSI before the long formulas run: a
momentum reversal is momentum turning *up*, a range breaking out upwards is adverse (-0.6),
BTC +5 % in 1 h is -0.9, exhaustion is RSI14 < 20 while the fall fades (momentum rising).
PnL and peak PnL are the position's own (``safety.net_pnl_pct(..., side=...)``), so
pnl_trajectory and time_decay read them as they are. The volatility term is kept as is for both sides: a vol
shock is a risk to any position (squeezes included), not a direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trading.models import Model, PositionSide

WEIGHTS: dict[str, float] = {
    "regime_change": 0.25,
    "momentum_reversal": 0.25,
    "correlation_risk": 0.20,
    "pnl_trajectory": 0.15,
    "time_decay": 0.15,
}
VOL_RANK: dict[str, int] = {
    "very_low": -1,
    "low": 0,
    "normal": 1,
    "medium": 1,
    "mid": 1,
    "high": 2,
    "very_high": 3,
    "extreme": 3,
    "crisis": 3,
}
VOL_STEP_UP = -0.4
VOL_STEP_DOWN = 0.2
MOM_SCALE = 0.05
MOM_DELTA_SCALE = 0.03
BTC_CRASH_RET = 0.05  # 1 h move that maps to ±0.9
BTC_CRASH_SCORE = 0.9
PROFIT_PEAK_MIN = 0.03
GIVEBACK_MAX = 0.5
STALE_HOURS = 48.0
FLAT_PNL = 0.01


class ScorerInputs(Model):
    """What the scorer knows about one open position (fractions: 0.02 = +2 %)."""

    pnl_pct: float
    peak_pnl_pct: float
    hours_held: float = 0.0
    entry_regime: str = "unknown"  # symbol regime: "trending" | "ranging" | "unknown"
    current_regime: str = "unknown"
    entry_vol_regime: str | None = None  # crypto vol regime label: "low" | "high" | ...
    current_vol_regime: str | None = None
    momentum14: float | None = None
    rsi14: float | None = None
    prev_momentum14: float | None = None
    btc_ret_1h: float | None = None
    symbol_ret_1h: float | None = None
    is_btc: bool = False


@dataclass(frozen=True)
class ScoreResult:
    score: float
    components: dict[str, float]
    verdict: str  # "HOLD" | "EXIT" | "ADD"
    reasons: list[str] = field(default_factory=list)


LONG = PositionSide.LONG


def _as_long(i: ScorerInputs, side: PositionSide) -> ScorerInputs:
    """A short's inputs as the long on the mirrored market would see them (module docstring);
    a long's are returned as they are, so its scores do not change by a bit."""
    if PositionSide(side) is LONG:
        return i

    def neg(x: float | None) -> float | None:
        return None if x is None else -x

    return i.model_copy(
        update={
            "momentum14": neg(i.momentum14),
            "prev_momentum14": neg(i.prev_momentum14),
            "rsi14": None if i.rsi14 is None else 100.0 - i.rsi14,
            "btc_ret_1h": neg(i.btc_ret_1h),
            "symbol_ret_1h": neg(i.symbol_ret_1h),
        }
    )


def _clip(x: float) -> float:
    return max(-1.0, min(1.0, x))


def _vol_term(entry: str | None, current: str | None) -> float:
    if entry is None or current is None:
        return 0.0
    a, b = VOL_RANK.get(entry.lower()), VOL_RANK.get(current.lower())
    if a is None or b is None or a == b:
        return 0.0
    steps = b - a
    return max(-1.0, steps * VOL_STEP_UP) if steps > 0 else min(0.4, -steps * VOL_STEP_DOWN)


def _symbol_regime_term(entry: str, current: str, mom: float | None) -> float:
    up = mom is not None and mom > 0
    down = mom is not None and mom < 0
    if entry == "trending" and current == "trending":
        return 0.5 if up else -0.5 if down else 0.0
    if entry == "trending" and current == "ranging":
        return -0.4
    if entry == "ranging" and current == "trending":
        return 0.5 if up else -0.6 if down else 0.0
    return 0.0


def regime_change(i: ScorerInputs, *, side: PositionSide = LONG) -> float:
    i = _as_long(i, side)
    vol = _vol_term(i.entry_vol_regime, i.current_vol_regime)
    total = _clip(_symbol_regime_term(i.entry_regime, i.current_regime, i.momentum14) + vol)
    return min(vol, total) if vol < 0 else total


def momentum_reversal(i: ScorerInputs, *, side: PositionSide = LONG) -> float:
    i = _as_long(i, side)
    m = i.momentum14
    if m is None:
        return 0.0
    if i.prev_momentum14 is None:
        value = math.tanh(m / MOM_SCALE)
        fading = False
    else:
        delta = m - i.prev_momentum14
        value = 0.6 * math.tanh(m / MOM_SCALE) + 0.4 * math.tanh(delta / MOM_DELTA_SCALE)
        fading = delta < 0
    if i.rsi14 is not None and i.rsi14 > 80 and fading:
        value -= 0.3
    return _clip(value)


def correlation_risk(i: ScorerInputs, *, side: PositionSide = LONG) -> float:
    i = _as_long(i, side)
    if i.is_btc:
        r, weight = (i.btc_ret_1h if i.btc_ret_1h is not None else i.symbol_ret_1h), 1.0
    elif i.btc_ret_1h is not None:
        r, weight = i.btc_ret_1h, 1.0
    else:
        r, weight = i.symbol_ret_1h, 0.5
    if r is None:
        return 0.0
    return _clip(weight * BTC_CRASH_SCORE * r / BTC_CRASH_RET)


def pnl_trajectory(i: ScorerInputs, *, side: PositionSide = LONG) -> float:
    del side  # the position's own PnL: the same for either side
    pnl, peak = i.pnl_pct, max(i.peak_pnl_pct, i.pnl_pct)
    giveback = (peak - pnl) / peak if peak > 0 else 0.0
    if peak >= PROFIT_PEAK_MIN and giveback > GIVEBACK_MAX:
        return -0.8 if pnl < 0 else -0.6
    if pnl > 0:
        return _clip(min(1.0, pnl / 0.10) * (1.0 - giveback))
    return -0.5 * min(1.0, -pnl / 0.04)


def time_decay(i: ScorerInputs, *, side: PositionSide = LONG) -> float:
    del side  # the position's own PnL: the same for either side
    age = min(1.0, max(0.0, i.hours_held) / STALE_HOURS)
    if abs(i.pnl_pct) < FLAT_PNL:
        return -0.5 * age
    if i.pnl_pct > 0:
        return 0.5 * min(1.0, i.pnl_pct / 0.05)
    return -0.7 * age


COMPONENTS = {
    "regime_change": regime_change,
    "momentum_reversal": momentum_reversal,
    "correlation_risk": correlation_risk,
    "pnl_trajectory": pnl_trajectory,
    "time_decay": time_decay,
}

_SHORT_REASON_TEXT = {"correlation_risk": ("market (BTC) rising", "market (BTC) falling")}
_REASON_TEXT = {
    "regime_change": ("regime turned against the position", "regime still supports the position"),
    "momentum_reversal": ("momentum reversing", "momentum strengthening"),
    "correlation_risk": ("market (BTC) falling", "market (BTC) rising"),  # a long's view
    "pnl_trajectory": ("profit evaporating or loss growing", "PnL rising steadily"),
    "time_decay": ("stale position", "position earning its time"),
}


def score_position(
    inputs: ScorerInputs,
    exit_score: float = -0.3,
    add_score: float = 0.4,
    *,
    side: PositionSide = LONG,
) -> ScoreResult:
    """Weighted score of the five components and the verdict it implies; a short's is the
    long's on the mirrored market (module docstring)."""
    side = PositionSide(side)
    seen = _as_long(inputs, side)  # mirrored once; the components then read it as a long's
    components = {name: round(fn(seen), 4) for name, fn in COMPONENTS.items()}
    score = round(sum(WEIGHTS[name] * value for name, value in components.items()), 4)
    texts = _REASON_TEXT if side is LONG else {**_REASON_TEXT, **_SHORT_REASON_TEXT}
    reasons = [
        f"{texts[name][value > 0]} ({name} {value:+.2f})"
        for name, value in components.items()
        if abs(value) >= 0.3
    ]
    if score < exit_score:
        verdict = "EXIT"
    elif score > add_score and inputs.pnl_pct > 0:
        verdict = "ADD"
    else:
        verdict = "HOLD"
        if score > add_score:
            reasons.append("score above the ADD threshold, but no adding to a losing position")
    reasons.append(f"score {score:+.2f} (EXIT < {exit_score:+.2f}, ADD > {add_score:+.2f})")
    return ScoreResult(score=score, components=components, verdict=verdict, reasons=reasons)
