"""How the portfolio drawdown halt begins and ends (issue 15, "the halt that never lifts").

Workflow code: standard library and ``trading.risk`` only, deterministic. The backtester
(``trading/backtest/engine.py``) and the live engine (``workflows/decision_books.py``
``mark_to_market``) both mark the equity through these functions, so a halt starts, lifts and
restarts the same way in both.

SPEC §8 halts new entries at a drawdown of ``halt_pct`` from the equity peak and lifts an
automatic halt when the drawdown recovers below half of it (``risk.drawdown_update``). A flat,
halted book cannot recover by itself: its equity no longer moves, so without anything else it
waits for a manual ``resume`` for ever. The mechanisms, all parameters of one ``HaltRule``:

* **never** (``cooloff_hours`` None): SPEC §8 as written; a flat halted book waits for
  ``resume``. The default of old configurations.
* **cool-off** (``cooloff_hours`` H): after H market hours halted, the halt lifts and the
  drawdown is measured afresh from the equity then (the peak is re-based), as after ``resume``.
* **reduced-size restart** (``cooloff_hours`` H, ``restart_scale`` f < 1): the cool-off lift,
  then every entry is sized × f until the equity reaches the lift's equity ×
  (1 + ``restart_recover_pct``); from then on full size again. A new halt during the reduced
  stretch starts over (its lift sets a new target).
* **volatility-scaled** (``vol_band`` (lo, hi)): the threshold is ``halt_pct`` ×
  clip(vol_now / vol_ref, lo, hi), where the ratio is the market's realised volatility
  (daily log returns of the regime symbol, ``VOL_SHORT_DAYS`` against ``VOL_LONG_DAYS``,
  completed UTC days only: ``vol_ratio``). It lifts on recovery below half the threshold, or
  after the cool-off when one is set.
* **off**: no halt (the caller passes a ``halt_pct`` out of reach, e.g. 0.99).

``halt_step`` is the whole machine for one equity reading; ``HaltEpisode`` is what a report
lists for each halt (start, end, drawdown, reason, how it lifted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from trading.risk import cooloff_over, drawdown_update

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
VOL_SHORT_DAYS = 30
VOL_LONG_DAYS = 365
VOL_MIN_DAYS = 90  # fewer completed days than this: no ratio (the threshold is halt_pct)
DAILY_CLOSES_KEPT = VOL_LONG_DAYS + 1

NEVER = "never"
COOLOFF = "cool-off"
REDUCED = "reduced restart"
VOL = "volatility-scaled"
OFF = "no halt"


@dataclass(frozen=True)
class HaltRule:
    """The halt's parameters. The defaults are SPEC §8's halt that never lifts by itself."""

    halt_pct: float = 0.12
    cooloff_hours: float | None = None
    restart_scale: float = 1.0  # entry sizes × this after a cool-off lift ...
    restart_recover_pct: float = 0.0  # ... until equity >= the lift's equity × (1 + this)
    vol_band: tuple[float, float] | None = None  # (lo, hi) of the threshold's vol scale

    @property
    def mechanism(self) -> str:
        if not (math.isfinite(self.halt_pct) and 0 < self.halt_pct < 0.99):
            return OFF
        if self.vol_band is not None:
            return VOL
        if self.cooloff_hours is None:
            return NEVER
        return REDUCED if self.restart_scale < 1.0 else COOLOFF

    @property
    def reduces(self) -> bool:
        return self.cooloff_hours is not None and self.restart_scale < 1.0

    def describe(self) -> str:
        m = self.mechanism
        if m == OFF:
            return OFF
        parts = [f"halt at {self.halt_pct:.0%}"]
        if self.vol_band is not None:
            lo, hi = self.vol_band
            parts.append(f"× vol ratio clipped to [{lo:g}, {hi:g}]")
        if self.cooloff_hours is None:
            parts.append("waits for resume when flat")
        else:
            parts.append(f"lifts after {self.cooloff_hours:g} h")
        if self.reduces:
            parts.append(
                f"restarts at {self.restart_scale:.0%} size until +{self.restart_recover_pct:.0%}"
            )
        return ", ".join(parts)


@dataclass(frozen=True)
class HaltState:
    """What the halt remembers between equity readings (live: fields of ``Portfolio``)."""

    peak: float
    halted: bool = False
    halted_since_ms: int | None = None  # market time the halt was first marked
    size_scale: float = 1.0  # entries × this (a reduced-size restart); 1 = full size
    restart_target: float | None = None  # equity at which full size resumes
    drawdown: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class HaltEvent:
    """What one reading changed: a halt began (``started``), or lifted (``lifted`` says how),
    or full size came back after a reduced restart (``restored``)."""

    started: str | None = None  # the reason: "drawdown 12.3% >= 12.0%"
    lifted: str | None = None  # "cool-off 168 h" / "recovered: ..." (+ the restart's size)
    restored: str | None = None
    threshold: float = 0.0
    by_cooloff: bool = False  # the lift was the cool-off's (not a recovery)

    @property
    def any(self) -> bool:
        return bool(self.started or self.lifted or self.restored)


@dataclass(frozen=True)
class HaltEpisode:
    """One halt, as a report lists it."""

    start_ms: int
    drawdown: float  # at the mark that halted
    threshold: float  # the threshold it crossed (vol-scaled: that day's)
    peak: float
    equity: float
    reason: str
    end_ms: int | None = None  # None: still halted at the end
    lifted_by: str | None = None


def threshold(halt_pct: float, ratio: float | None, band: tuple[float, float] | None) -> float:
    """The halt threshold: ``halt_pct``, × clip(ratio, lo, hi) when a band is set."""
    if band is None or ratio is None or not math.isfinite(ratio):
        return halt_pct
    lo, hi = band
    return halt_pct * min(max(ratio, lo), hi)


def vol_ratio(
    daily_closes: Sequence[float],
    short_days: int = VOL_SHORT_DAYS,
    long_days: int = VOL_LONG_DAYS,
    min_days: int = VOL_MIN_DAYS,
) -> float | None:
    """Realised volatility of the last ``short_days`` daily log returns over that of the last
    ``long_days`` (population std, the same closes); None with fewer than ``min_days``."""
    closes = [c for c in daily_closes[-(long_days + 1) :] if c > 0 and math.isfinite(c)]
    if len(closes) < max(min_days, short_days) + 1:
        return None
    rets = [math.log(b / a) for a, b in zip(closes, closes[1:], strict=False)]
    long_sd = _std(rets)
    if long_sd <= 0:
        return None
    return _std(rets[-short_days:]) / long_sd


def _std(xs: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mean = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / n)


def lift_text(rule: HaltRule, equity: float) -> str:
    """How a cool-off lift is described (and what size the restart trades at)."""
    text = f"cool-off {rule.cooloff_hours:g} h"
    if rule.reduces:
        target = equity * (1.0 + rule.restart_recover_pct)
        text += f", restart at {rule.restart_scale:.0%} size until equity {target:,.2f}"
    return text


def halt_step(
    rule: HaltRule,
    state: HaltState,
    equity: float,
    now_ms: int | None,
    ratio: float | None = None,
) -> tuple[HaltState, HaltEvent]:
    """One equity reading at market time ``now_ms``: peak, drawdown, halt, lift, restart size.

    Order: the reduced restart's target (full size once reached); ``drawdown_update`` against
    the (vol-scaled) threshold; then the cool-off clock, counted from the first reading that
    saw the halt: when over, the halt lifts, the peak is re-based at this equity and a reduced
    restart begins when the rule has one.
    """
    halt = threshold(rule.halt_pct, ratio, rule.vol_band)
    scale, target = state.size_scale, state.restart_target
    restored = None
    if target is not None and equity >= target:
        scale, target = 1.0, None
        restored = f"full size again: equity {equity:,.2f} >= {state.restart_target:,.2f}"
    dd = drawdown_update(state.peak, equity, halt, state.halted)
    started = lifted = None
    by_cooloff = False
    if dd.halted and not state.halted:
        started = dd.reason
    elif state.halted and not dd.halted:
        lifted = dd.reason
    new = HaltState(
        peak=dd.peak,
        halted=dd.halted,
        halted_since_ms=state.halted_since_ms,
        size_scale=scale,
        restart_target=target,
        drawdown=dd.drawdown,
        reason=(dd.reason or "") if dd.halted else "",
    )
    if not new.halted:
        new = replace(new, halted_since_ms=None)
    elif new.halted_since_ms is None:
        new = replace(new, halted_since_ms=now_ms)
    elif cooloff_over(new.halted_since_ms, now_ms, rule.cooloff_hours):
        lifted, by_cooloff = lift_text(rule, equity), True
        new = replace(new, halted=False, halted_since_ms=None, peak=equity, drawdown=0.0)
        new = replace(new, reason="")
        if rule.reduces:
            new = replace(
                new,
                size_scale=rule.restart_scale,
                restart_target=equity * (1.0 + rule.restart_recover_pct),
            )
    return new, HaltEvent(started, lifted, restored, halt, by_cooloff)


def daily_close_push(
    closes: list[float], day_ms: int | None, last: float | None, now_ms: int, price: float
) -> tuple[list[float], int, float]:
    """Keep the last close of each completed UTC day (for ``vol_ratio``): a reading in a new
    day pushes the previous day's last price. Returns (closes, the current day, its price)."""
    day = now_ms // DAY_MS * DAY_MS
    out = closes
    if day_ms is not None and day != day_ms and last is not None:
        out = [*closes, last][-DAILY_CLOSES_KEPT:]
    return out, day, price
