"""The rule policy (SPEC §7): the fallback when the LLM is unavailable, and the backtest agent.

The rules decide the *action*; the score only grades it. Rule scores:

* a rule that fires scores 0.5 + up to 0.5 for how far past its thresholds the market is
  (BUY positive, SELL negative); no rule → 0.
* with a derivatives composite d, score = 0.7·rule + 0.3·d. Since |rule| >= 0.5 when a rule
  fires, 0.7·0.5 = 0.35 > 0.3·|d|: derivatives can weaken a signal but never flip its sign.
  Derivatives alone never trade.

Confidence is |score|; a BUY is sized ``position_pct · (0.5 + confidence)``, capped at
``max_position_pct`` (confidence 0.5 → the nominal size).

Learned group weights (optional, from the learner, SPEC §5): a BUY's confidence, and so its
size, is multiplied by how the groups that pushed it up (positive signal weight) are weighted
relative to their starting weights, bounded to [0.5, 1.5] (``learned_multiplier``). Actions are
never changed, SELLs never touched; without group weights the policy is exactly as above.

Shorts (``shorts=True``, USDⓈ-M futures only; issue 15): the *trend* rules mirrored, and only
they (a reversion short into a ranging market's upper band is not part of SPEC §7):

* SHORT when flat, trending, no long rule fires, RSI14 < 50 and momentum14 < -2 %
  (score ``-(0.5 + 0.25·ramp((50 - RSI)/20) + 0.25·ramp((-2 % - mom)/8 %))``, the BUY's
  mirror), sized as a BUY;
* COVER a held short when momentum14 > +5 % in a trend (the mirror of the trend SELL) or when
  any long rule fires (the market says BUY: a short has no business there).

Long decisions are exactly as without shorts. A SHORT's signal weights keep the sign
convention (+ = for a long), so its trend weight is negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trading.exit_plan import rule_plan
from trading.features import regime_of
from trading.learner import STARTING_WEIGHTS
from trading.models import (
    Action,
    AgentDecision,
    DerivativesReading,
    ExitPlan,
    MarketView,
    PositionParams,
    PositionSide,
    SymbolFeatures,
    TradeDecision,
)

SIGNAL_GROUPS: tuple[str, ...] = (
    "trend",
    "reversion",
    "volume",
    "derivatives",
    "sentiment",
    "macro",
)

RSI_TREND_MIN = 50.0
MOM_BUY_MIN = 0.02
MOM_SELL_MAX = -0.05
RSI_DIP_MAX = 40.0
LOWER_BAND_SLACK = 1.02
UPPER_BAND_SLACK = 0.98
RULE_WEIGHT = 0.7
DERIV_WEIGHT = 0.3
LEARNED_MIN = 0.5
LEARNED_MAX = 1.5
# the trend rules mirrored for shorts
RSI_SHORT_MAX = 50.0
MOM_SHORT_MAX = -0.02
MOM_COVER_MIN = 0.05


@dataclass(frozen=True)
class RuleSignal:
    """What the rules say about one symbol, and why."""

    action: Action
    score: float
    reasons: list[str] = field(default_factory=list)
    signal_weights: dict[str, float] = field(default_factory=dict)
    regime: str = "unknown"
    rule_score: float = 0.0
    derivatives: float | None = None
    missing: list[str] = field(default_factory=list)  # key features the rules needed


def _clip(x: float, lo: float = -1.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def _ramp(x: float) -> float:
    """0 below 0, 1 above 1, linear between: how far past a threshold, as a share of a scale."""
    return _clip(x, 0.0, 1.0)


def derivatives_composite(
    reading: DerivativesReading | None, price_direction: float | None = None
) -> float | None:
    """SPEC §7 composite d in [-1, 1]; None when no metric is available.

    OI confirmation (the 10 % term): rising open interest confirms the direction of the price
    (sign of ``price_direction``, e.g. momentum); falling OI or no direction contributes 0.
    """
    if reading is None:
        return None
    parts: list[float] = []
    if reading.funding_rate is not None:
        f = reading.funding_rate
        parts.append(-math.tanh(f / 0.0005) * 0.35 if abs(f) > 0.0003 else 0.0)
    if reading.taker_ratio is not None:
        parts.append(math.tanh((reading.taker_ratio - 1.0) * 2.0) * 0.30)
    if reading.ls_z is not None:
        z = reading.ls_z
        parts.append(-math.tanh(0.15 * z) * 0.25 if abs(z) > 1.0 else 0.0)
    if reading.oi_change_pct is not None:
        direction = 0.0 if not price_direction else math.copysign(1.0, price_direction)
        parts.append(direction * math.tanh(max(reading.oi_change_pct, 0.0) / 0.05) * 0.10)
    if not parts:
        return None
    return _clip(sum(parts))


def _key_missing(f: SymbolFeatures, regime: str) -> list[str]:
    if regime == "unknown":
        need = ["efficiency_ratio30", "sma72", "rsi14"]
    elif regime == "trending":
        need = ["rsi14", "momentum14"]
    else:
        need = ["rsi14", "bb_upper", "bb_lower"]
    return [name for name in need if getattr(f, name) is None] or (
        ["regime"] if regime == "unknown" else []
    )


def _trending_rule(f: SymbolFeatures, reasons: list[str]) -> float:
    rsi, mom = f.rsi14, f.momentum14
    assert rsi is not None and mom is not None
    if rsi > RSI_TREND_MIN and mom > MOM_BUY_MIN:
        reasons.append(f"RSI14 {rsi:.1f} > 50 and momentum14 {mom:+.1%} > +2%")
        return 0.5 + 0.25 * _ramp((rsi - 50.0) / 20.0) + 0.25 * _ramp((mom - 0.02) / 0.08)
    if mom < MOM_SELL_MAX:
        reasons.append(f"momentum14 {mom:+.1%} < -5%")
        return -(0.5 + 0.5 * _ramp((MOM_SELL_MAX - mom) / 0.10))
    reasons.append(f"no trend rule fires (RSI14 {rsi:.1f}, momentum14 {mom:+.1%})")
    return 0.0


def short_rule(f: SymbolFeatures, regime: str, reasons: list[str]) -> float:
    """The mirrored trend rules (module docstring): < 0 says SHORT, > 0 says COVER, 0 neither.
    Outside a trend (or without RSI14 and momentum14) they say nothing."""
    rsi, mom = f.rsi14, f.momentum14
    if regime != "trending" or rsi is None or mom is None:
        return 0.0
    if rsi < RSI_SHORT_MAX and mom < MOM_SHORT_MAX:
        reasons.append(f"short rule: RSI14 {rsi:.1f} < 50 and momentum14 {mom:+.1%} < -2%")
        return -(0.5 + 0.25 * _ramp((50.0 - rsi) / 20.0) + 0.25 * _ramp((-0.02 - mom) / 0.08))
    if mom > MOM_COVER_MIN:
        reasons.append(f"cover rule: momentum14 {mom:+.1%} > +5%")
        return 0.5 + 0.5 * _ramp((mom - MOM_COVER_MIN) / 0.10)
    return 0.0


def _ranging_rule(f: SymbolFeatures, reasons: list[str]) -> float:
    rsi, upper, lower, p = f.rsi14, f.bb_upper, f.bb_lower, f.price
    assert rsi is not None and upper is not None and lower is not None
    buy = p < lower * LOWER_BAND_SLACK and rsi < RSI_DIP_MAX
    sell = p > upper * UPPER_BAND_SLACK
    if buy and sell:  # bands narrower than ~4 %: both fire; the side of the mid-band decides
        buy, sell = p < (upper + lower) / 2, p >= (upper + lower) / 2
    if buy:
        reasons.append(f"price {p:.6g} < lower band {lower:.6g}·1.02 and RSI14 {rsi:.1f} < 40")
        depth = (lower * LOWER_BAND_SLACK - p) / (0.04 * lower)
        return 0.5 + 0.25 * _ramp(depth) + 0.25 * _ramp((RSI_DIP_MAX - rsi) / 20.0)
    if sell:
        reasons.append(f"price {p:.6g} > upper band {upper:.6g}·0.98")
        return -(0.5 + 0.5 * _ramp((p - upper * UPPER_BAND_SLACK) / (0.04 * upper)))
    reasons.append(f"price {p:.6g} inside the bands, RSI14 {rsi:.1f}: no reversion rule fires")
    return 0.0


def _weights(f: SymbolFeatures, regime: str, rule: float, d: float | None) -> dict[str, float]:
    """Directional view of each learner group behind this signal (+ = long), in [-1, 1]."""
    w = dict.fromkeys(SIGNAL_GROUPS, 0.0)
    w["trend" if regime == "trending" else "reversion"] = rule
    if rule and f.volume_z is not None and f.volume_z > 0:  # heavy volume confirms the side
        w["volume"] = math.copysign(0.5 * _ramp(f.volume_z / 3.0), rule)
    if d is not None:
        w["derivatives"] = d
    return {k: round(_clip(v), 4) for k, v in w.items()}


def symbol_signal(f: SymbolFeatures, derivatives: DerivativesReading | None = None) -> RuleSignal:
    """SPEC §7 rules for one symbol. Missing key features → HOLD naming them."""
    regime = f.regime if f.regime in ("trending", "ranging") else regime_of(f)
    d = derivatives_composite(derivatives, f.momentum14)
    missing = _key_missing(f, regime)
    if missing:
        return RuleSignal(
            action=Action.HOLD,
            score=0.0,
            reasons=[f"missing {', '.join(missing)} ({f.n_bars} bars)"],
            signal_weights=dict.fromkeys(SIGNAL_GROUPS, 0.0),
            regime=regime,
            derivatives=d,
            missing=missing,
        )
    reasons: list[str] = []
    er = "n/a" if f.efficiency_ratio30 is None else f"{f.efficiency_ratio30:.2f}"
    dist = "n/a" if not f.sma72 else f"{(f.price - f.sma72) / f.sma72:+.1%}"
    reasons.append(f"{regime} (ER30 {er}, {dist} vs SMA72)")
    rule = _trending_rule(f, reasons) if regime == "trending" else _ranging_rule(f, reasons)
    score = rule
    if d is not None:
        reasons.append(f"derivatives d {d:+.2f}")
        score = RULE_WEIGHT * rule + DERIV_WEIGHT * d
    action = Action.BUY if rule > 0 else Action.SELL if rule < 0 else Action.HOLD
    return RuleSignal(
        action=action,
        score=round(_clip(score), 4),
        reasons=reasons,
        signal_weights=_weights(f, regime, rule, d),
        regime=regime,
        rule_score=round(rule, 4),
        derivatives=d,
    )


def learned_multiplier(signal_weights: dict[str, float], group_weights: dict[str, float]) -> float:
    """Σ w_g·(g_g/s_g) / Σ w_g over groups pushing the BUY (w_g > 0), clipped to [0.5, 1.5].

    g = the learned group weights normalised to sum 1, s = the learner's STARTING_WEIGHTS, so
    the starting weights themselves give exactly 1. Invalid or missing weights count as
    neutral; nothing to judge → 1.
    """
    clean = {
        g: float(v)
        for g, v in group_weights.items()
        if g in STARTING_WEIGHTS and isinstance(v, int | float) and math.isfinite(v) and v >= 0
    }
    total = math.fsum(clean.values())
    if total <= 0:
        return 1.0
    num = den = 0.0
    for g, w in signal_weights.items():
        if g not in clean or not math.isfinite(w) or w <= 0:
            continue
        num += w * (clean[g] / total) / STARTING_WEIGHTS[g]
        den += w
    return 1.0 if den <= 0 else _clip(num / den, LEARNED_MIN, LEARNED_MAX)


def _finite_or(x: float, default: float) -> float:
    return x if isinstance(x, int | float) and math.isfinite(x) and x >= 0 else default


def _decision(
    symbol: str,
    f: SymbolFeatures,
    held: bool,
    position_pct: float,
    max_position_pct: float,
    derivatives: DerivativesReading | None,
    group_weights: dict[str, float] | None = None,
    plan_params: PositionParams | None = None,
    shorts: bool = False,
    held_short: bool = False,
    short_group_weights: dict[str, float] | None = None,
) -> tuple[TradeDecision, str]:
    sig = symbol_signal(f, derivatives)
    if shorts and not sig.missing and (held_short or (not held and sig.action is not Action.BUY)):
        return _short_decision(
            symbol,
            f,
            sig,
            held_short,
            position_pct,
            max_position_pct,
            plan_params,
            short_group_weights,
        )
    why = "; ".join(sig.reasons)
    weights = sig.signal_weights
    if sig.missing:
        text = f"HOLD {symbol}: not enough data, {why}."
        hold = TradeDecision(ticker=symbol, action=Action.HOLD, confidence=0.0, reasoning=text)
        return hold, sig.regime
    confidence = round(min(1.0, abs(sig.score)), 4)
    action = sig.action
    if action is Action.BUY and held:
        action, why = Action.HOLD, f"{why}; BUY signal but already held"
    elif action is Action.SELL and not held:
        action, why = Action.HOLD, f"{why}; SELL signal but not held"
    pct = 0.0
    if action is Action.BUY and group_weights is not None:
        m = learned_multiplier(weights, group_weights)
        confidence = round(min(1.0, confidence * m), 4)
        why = f"{why}; learned group weights ×{m:.2f}"
    if action is Action.BUY:
        pct = round(min(max_position_pct, position_pct * (0.5 + confidence)), 4)
    text = f"{action.value} {symbol} at {f.price:.6g}: {why}; score {sig.score:+.2f}."
    plan = _plan(symbol, f, plan_params, PositionSide.LONG) if action is Action.BUY else None
    decision = TradeDecision(
        ticker=symbol,
        action=action,
        position_pct=pct,
        confidence=confidence,
        reasoning=text,
        signal_weights=weights,
        exit_plan=plan,
    )
    return decision, sig.regime


def _plan(
    symbol: str, f: SymbolFeatures, plan_params: PositionParams | None, side: PositionSide
) -> ExitPlan | None:
    """The rules' exit plan for an entry on ``side``; None without plan parameters."""
    if plan_params is None:
        return None
    return rule_plan(
        symbol,
        f.price,
        atr_pct=f.atr_pct,
        ema21=f.ema21,
        stop_loss_pct=plan_params.stop_loss_pct,
        trail_activate_pct=plan_params.trail_activate_pct,
        fee_rate=plan_params.fee_rate,
        side=side,
    )


def _short_decision(
    symbol: str,
    f: SymbolFeatures,
    sig: RuleSignal,
    held_short: bool,
    position_pct: float,
    max_position_pct: float,
    plan_params: PositionParams | None = None,
    group_weights: dict[str, float] | None = None,
) -> tuple[TradeDecision, str]:
    """A held short (COVER or HOLD) or a flat symbol no long rule buys (SHORT or HOLD)."""
    reasons = list(sig.reasons)
    rule = short_rule(f, sig.regime, reasons)
    action = Action.HOLD
    score = 0.0
    if held_short:
        if sig.action is Action.BUY:
            action, score = Action.COVER, sig.score
            reasons.append("a long rule fires: cover the short")
        elif rule > 0:
            action, score = Action.COVER, rule
        else:
            reasons.append("short held, no cover rule fires")
    elif rule < 0:
        action, score = Action.SHORT, rule
        if sig.derivatives is not None:
            score = RULE_WEIGHT * rule + DERIV_WEIGHT * sig.derivatives
    why = "; ".join(reasons)
    confidence = round(min(1.0, abs(score)), 4)
    pct = 0.0
    weights = dict(sig.signal_weights)
    if action is Action.SHORT:
        weights = _weights(f, sig.regime, rule, sig.derivatives)
        if group_weights is not None:  # the groups pushing it down drive a short
            m = learned_multiplier({g: -w for g, w in weights.items()}, group_weights)
            confidence = round(min(1.0, confidence * m), 4)
            why = f"{why}; learned short group weights ×{m:.2f}"
        pct = round(min(max_position_pct, position_pct * (0.5 + confidence)), 4)
    text = f"{action.value} {symbol} at {f.price:.6g}: {why}; score {score:+.2f}."
    plan = _plan(symbol, f, plan_params, PositionSide.SHORT) if action is Action.SHORT else None
    decision = TradeDecision(
        ticker=symbol,
        action=action,
        position_pct=pct,
        confidence=confidence if action is not Action.HOLD else round(min(1.0, abs(sig.score)), 4),
        reasoning=text,
        signal_weights=weights,
        exit_plan=plan,
    )
    return decision, sig.regime


def decide(
    market: MarketView,
    held: set[str],
    position_pct: float = 0.20,
    max_position_pct: float = 0.30,
    derivatives: dict[str, DerivativesReading] | None = None,
    group_weights: dict[str, float] | None = None,
    plan_params: PositionParams | None = None,
    shorts: bool = False,
    short_held: set[str] | None = None,
    short_group_weights: dict[str, float] | None = None,
) -> AgentDecision:
    """One rule-policy decision per symbol of ``market`` (source "rule"). Never raises.

    ``group_weights`` (learner weights per signal group) scale BUY confidence and size only.
    With ``plan_params`` each BUY carries the rules' exit plan (``exit_plan.rule_plan``).
    With ``shorts`` the mirrored trend rules may SHORT a flat symbol and COVER a held short
    (``short_held``: the held symbols that are short, a subset of ``held``); a SHORT's size
    is scaled by ``short_group_weights`` (the learner's, from shorts) as a BUY's by its own.
    """
    short_held = short_held or set()
    position_pct = _finite_or(position_pct, 0.0)
    max_position_pct = _finite_or(max_position_pct, 0.0)
    derivatives = derivatives or {}
    decisions: list[TradeDecision] = []
    regimes: dict[str, list[str]] = {}
    for symbol, f in market.symbols.items():
        try:
            decision, regime = _decision(
                symbol,
                f,
                symbol in held,
                position_pct,
                max_position_pct,
                derivatives.get(symbol),
                group_weights,
                plan_params,
                shorts,
                symbol in short_held,
                short_group_weights,
            )
        except Exception as exc:  # a bad feature set must not take the other symbols down
            decision = TradeDecision(
                ticker=symbol,
                action=Action.HOLD,
                confidence=0.0,
                reasoning=f"HOLD {symbol}: rule policy could not evaluate it ({exc!s:.120}).",
            )
            regime = "unknown"
        decisions.append(decision)
        regimes.setdefault(regime, []).append(symbol)
    for symbol in market.missing:
        if symbol not in market.symbols:
            decisions.append(
                TradeDecision(
                    ticker=symbol,
                    action=Action.HOLD,
                    confidence=0.0,
                    reasoning=f"HOLD {symbol}: no market data.",
                )
            )
            regimes.setdefault("no data", []).append(symbol)
    summary = "; ".join(f"{label}: {', '.join(syms)}" for label, syms in sorted(regimes.items()))
    trades = sum(d.action is not Action.HOLD for d in decisions)
    rules = "SPEC §7, shorts by the mirrored trend rules" if shorts else "SPEC §7"
    assessment = (
        f"Rule policy ({rules}). Regimes — {summary or 'no symbols'}. "
        f"{trades} trade(s) out of {len(decisions)} symbol(s)."
    )
    return AgentDecision(source="rule", decisions=decisions, market_assessment=assessment)
