"""A policy family as a live account's decider (issue 15, agent vs agent).

An account whose ``EngineConfig.policy`` is ``family:<name>[:<param>=<value>...]`` decides, at
each decision the rule policy would take (closed decision candles), with that family's target
weight instead of the rule scores. The weight is the family's own pure function
(``trading/policies``) over the symbol's *daily* bars that closed at or before the decision's
market time (the listener serves them on its bars board, ``activities/bars_board.py``), so a
live decision reads what the backtester's would at the same day.

Weight to action, as ``WeightDecisions`` does in the backtests:

* long-only (spot, or shorts off): flat and ``w > 0`` → BUY, sized ``min(w · position_pct,
  max_position_pct)``; held long and ``w <= 0`` → SELL; otherwise HOLD;
* shorts on (USDⓈ-M futures with ``OCW_SHORTS=true``): the family runs long/short (its
  ``long_only`` is false unless the spec sets it), flat and ``w < 0`` → SHORT, held short and
  ``w >= 0`` → COVER, a held long still sells at ``w <= 0``.

A symbol without enough history (fewer daily bars than the family's longest lookback), or
without bars at all, HOLDs whatever it holds: a missing board never sells a position. The
family's stops and exits are the engine's own (the PositionWorkflow's safety layer).

History needed: the longest ``*_days`` field of the family's parameters, in daily bars (the
default ``trend_tsmom`` needs 200, ``tsmom`` 90, ``breakout`` 21, ``trend_filter`` 200). A live
listener bootstraps ``OCW_DAILY_BARS`` (400) daily bars per symbol; a replay seeds them from its
files before the replay's start (up to 500). ``carry`` averages the last ``prints`` settled
funding prints, which the listener keeps on the bars board (live: Binance's
``/fapi/v1/fundingRate``, the last 100, about 33 days; a replay: the funding files beside its
bars); a symbol with fewer prints than that holds, as one without bars. Where the board has
no prints at all (derivatives off), the snapshot's current rate counts as one print, which
serves ``prints=1`` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trading.models import Action, AgentDecision, TradeDecision
from trading.policies.base import DAY_MS, BarSeries, Family, get_family

RULE = "rule"
CASH = "cash"
FAMILY_PREFIX = "family:"
DAILY = "1d"
PARAM_VALUE_MAX = 1e9


@dataclass(frozen=True)
class PolicySpec:
    """A parsed ``policy``: the rule policy, cash, or a family with its parameter overrides."""

    family: str | None = None  # None: the rule policy (or cash)
    params: dict[str, float | int | bool] = field(default_factory=dict)
    cash: bool = False  # opens nothing: what the walk-forward's corrections leave (see below)

    @property
    def is_rule(self) -> bool:
        return self.family is None and not self.cash

    def text(self) -> str:
        if self.cash:
            return CASH
        if self.family is None:
            return RULE
        extra = "".join(f":{k}={_value_text(v)}" for k, v in sorted(self.params.items()))
        return f"{FAMILY_PREFIX}{self.family}{extra}"

    def family_record(self) -> Family:
        assert self.family is not None
        return get_family(self.family)

    def funding_prints(self) -> int:
        """How many settled funding prints a decision needs (0: the family reads none)."""
        if self.family is None or not self.family_record().needs_funding:
            return 0
        return int(getattr(self.build_params(), "prints", 1))

    def build_params(self, shorts: bool = False) -> Any:
        """The family's parameters: its defaults, the spec's overrides, and ``long_only``
        following ``shorts`` unless the spec sets it."""
        fam = self.family_record()
        given = dict(self.params)
        names = {f.name for f in dataclasses.fields(fam.params_type)}
        if "long_only" in names and "long_only" not in given:
            given["long_only"] = not shorts
        return fam.params_type(**given)

    def history_days(self) -> int:
        """Daily bars the family needs before its weight can be other than its warm-up 0."""
        if self.family is None:
            return 0
        params = self.build_params()
        days = [
            float(getattr(params, f.name))
            for f in dataclasses.fields(params)
            if f.name.endswith("_days")
        ]
        return int(math.ceil(max(days, default=1.0))) + 1


def _value_text(v: float | int | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _parse_value(name: str, text: str) -> float | int | bool:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        value: float | int = int(low)
    except ValueError:
        try:
            value = float(low)
        except ValueError:
            raise ValueError(f"parameter {name}: {text!r} is not a number or true/false") from None
    if not math.isfinite(value) or abs(value) > PARAM_VALUE_MAX:
        raise ValueError(f"parameter {name}: {text!r} is out of range")
    return value


def parse_policy(text: str) -> PolicySpec:
    """``rule``, ``cash`` or ``family:<name>[:<param>=<value>...]``; a ValueError says what is
    wrong (an unknown family lists the known ones, an unknown parameter the family's fields)."""
    raw = (text or "").strip()
    if raw in ("", RULE):
        return PolicySpec()
    if raw == CASH:
        return PolicySpec(cash=True)
    if not raw.startswith(FAMILY_PREFIX):
        raise ValueError(
            f"policy {raw!r}: expected 'rule', 'cash' or 'family:<name>[:<param>=<value>...]'"
        )
    name, *fields = raw[len(FAMILY_PREFIX) :].split(":")
    fam = get_family(name.strip())
    known = {f.name: f for f in dataclasses.fields(fam.params_type)}
    params: dict[str, float | int | bool] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"policy {raw!r}: {item!r} is not <param>=<value>")
        if key not in known:
            raise ValueError(
                f"policy {raw!r}: {fam.name} has no parameter {key!r}; it has {', '.join(known)}"
            )
        parsed = _parse_value(key, value)
        if known[key].type in (float, "float") and isinstance(parsed, int):
            parsed = float(parsed)
        params[key] = parsed
    spec = PolicySpec(family=fam.name, params=params)
    try:
        spec.build_params()
    except (TypeError, ValueError) as err:
        raise ValueError(f"policy {raw!r}: {err}") from None
    return spec


# ------------------------------------------------------------ bars


def series_from_rows(
    rows: Sequence[Sequence[float]],
    as_of_ms: int,
    funding_rate: float | None = None,
    prints: Sequence[Sequence[float]] | None = None,
) -> BarSeries | None:
    """Daily bars ``[close_time, high, low, close]`` (oldest first) that closed by
    ``as_of_ms`` as a ``BarSeries``; None when none did. ``prints``: settled funding prints
    ``[time, rate]`` (oldest first), those at or before ``as_of_ms`` kept; without any,
    ``funding_rate`` (the current rate) as one print at the last bar's close."""
    kept = [r for r in rows if int(r[0]) <= as_of_ms]
    if not kept:
        return None
    arr = np.asarray(kept, dtype=float)
    close_time = arr[:, 0].astype(np.int64)
    funding = None
    seen = [p for p in (prints or []) if int(p[0]) <= as_of_ms]
    if seen:
        funding = (
            np.asarray([int(p[0]) for p in seen], dtype=np.int64),
            np.asarray([float(p[1]) for p in seen]),
        )
    elif funding_rate is not None and math.isfinite(funding_rate):
        funding = (np.asarray([close_time[-1]], dtype=np.int64), np.asarray([funding_rate]))
    return BarSeries(
        close=arr[:, 3],
        high=arr[:, 1],
        low=arr[:, 2],
        close_time=close_time,
        bar_ms=DAY_MS,
        funding=funding,
    )


# ------------------------------------------------------------ the decision


def family_decision(
    spec: PolicySpec,
    symbols: Sequence[str],
    bars: Mapping[str, BarSeries | None],
    held: set[str],
    short_held: set[str] | None = None,
    *,
    position_pct: float,
    max_position_pct: float,
    shorts: bool = False,
    stale: Mapping[str, str] | None = None,
) -> AgentDecision:
    """One decision per symbol from the family's weight at its latest closed daily bar."""
    fam = spec.family_record()
    params = spec.build_params(shorts)
    need = spec.history_days()
    short_held = short_held or set()
    stale = stale or {}
    weights = {fam.group: 1.0}
    out: list[TradeDecision] = []
    notes: list[str] = []
    for symbol in symbols:
        series = bars.get(symbol)
        if series is None or len(series) < need:
            have = 0 if series is None else len(series)
            why = stale.get(symbol) or f"warming up: {have} of {need} daily bars"
            out.append(_hold(symbol, f"{fam.name}: {why}", weights))
            notes.append(f"{symbol} {why}")
            continue
        w = float(fam.weights(series, params)[-1])
        if not math.isfinite(w):
            w = 0.0
        if not shorts:
            w = max(w, 0.0)
        day = f"{fam.name} weight {w:+.2f} at the daily close of {_day(series)}"
        size = round(min(max_position_pct, abs(w) * position_pct), 6)
        if symbol in short_held:
            if w >= 0:
                out.append(_act(symbol, Action.COVER, 0.0, 1.0, f"{day}: cover", weights))
            else:
                out.append(_hold(symbol, f"{day}: stay short", weights, abs(w)))
        elif symbol in held:
            if w <= 0:
                out.append(_act(symbol, Action.SELL, 0.0, 1.0, f"{day}: flat, sell", weights))
            else:
                out.append(_hold(symbol, f"{day}: stay long", weights, w))
        elif w > 0 and size > 0:
            out.append(_act(symbol, Action.BUY, size, min(1.0, w), f"{day}: buy", weights))
        elif w < 0 and shorts and size > 0:
            out.append(_act(symbol, Action.SHORT, size, min(1.0, -w), f"{day}: short", weights))
        else:
            out.append(_hold(symbol, f"{day}: stay flat", weights))
    acted = [f"{d.ticker} {d.action}" for d in out if d.action != Action.HOLD]
    assessment = f"{spec.text()}: " + (", ".join(acted) if acted else "hold")
    if notes:
        assessment += f" ({'; '.join(notes[:4])})"
    return AgentDecision(source=spec.text()[:60], decisions=out, market_assessment=assessment)


def _day(series: BarSeries) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(series.close_time[-1]) / 1000, tz=UTC).strftime("%Y-%m-%d")


def _act(
    symbol: str, action: Action, pct: float, conf: float, why: str, weights: dict[str, float]
) -> TradeDecision:
    return TradeDecision(
        ticker=symbol,
        action=action,
        position_pct=pct,
        confidence=round(max(0.0, min(1.0, conf)), 4),
        reasoning=why,
        signal_weights=dict(weights),
    )


def _hold(symbol: str, why: str, weights: dict[str, float], conf: float = 0.0) -> TradeDecision:
    return _act(symbol, Action.HOLD, 0.0, conf, why, weights)


# ------------------------------------------------------------ cash

CASH_REASON = (
    "OCW_POLICY=cash: no policy passed the walk-forward's corrections (docs/backtests.md, "
    "section 3), so the stand-in opens nothing; open positions keep their stops, trail and scorer"
)


def cash_decision(symbols: Sequence[str]) -> AgentDecision:
    """The cash stand-in's answer: HOLD every symbol, with the reason in the assessment."""
    return AgentDecision(
        source="rule",
        decisions=[
            TradeDecision(ticker=s, action=Action.HOLD, confidence=0.0, reasoning=CASH_REASON)
            for s in symbols
        ],
        market_assessment=CASH_REASON,
    )
