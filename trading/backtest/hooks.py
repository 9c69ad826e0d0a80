"""The learner, macro and crypto-regime modules as the backtester's hooks (``engine.Hooks``).

* ``ThompsonLearner``: ``trading.learner`` state updated on every closed trade (keyed by the
  crypto vol regime at the entry and, through ``trade.side``, by the trade's direction), Thompson
  group weights drawn from a seeded ``random.Random`` at each decision bar and handed to
  ``rule_policy.decide(group_weights=...)``; those are the long sets' (the engine asks once per
  bar, without a side), ``group_weights(regime, side=SHORT)`` draws from the short sets.
* ``MacroSchedule``: ``trading.macro.macro_regime`` at each UTC day of the run, point in time
  (only observations published before that day), giving (exposure scale, trail multiplier).
* ``VolRegimeSchedule``: the crypto HMM fitted once on the BTC history before the run's start
  and run forward as a filter, one label per UTC day from the data up to that day (live refits
  daily; one fit plus filtering keeps a backtest to one HMM fit and never looks ahead).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from datetime import date

from trading import learner as learner_math
from trading.macro import FredSeries, MacroParams, as_date, macro_regime
from trading.models import Bar, ClosedTrade, PositionSide
from trading.regime_crypto import HmmParams, filtered_labels, fit_hmm


class ThompsonLearner:
    """SPEC §5 learner for one backtest run; seeded, so a run is reproducible."""

    def __init__(self, seed: int = 7, params: learner_math.LearnerParams | None = None) -> None:
        self.params = params or learner_math.LearnerParams()
        self.state = learner_math.new_state()
        self.rng = random.Random(seed)

    def record_trade(self, trade: ClosedTrade, regime: str) -> None:
        """Learn ``trade`` in its direction's sets (``trade.side``: a short's own sets)."""
        self.state = learner_math.update(self.state, trade, regime, self.params)

    def group_weights(
        self, regime: str, side: PositionSide = PositionSide.LONG
    ) -> dict[str, float] | None:
        """Policy group weights for ``side``'s trades (long by default: what the engine asks)."""
        return learner_math.policy_weights(self.state, regime, self.rng, self.params, side=side)


class MacroSchedule:
    """(exposure scale, trail multiplier) of the macro quadrant known on each UTC day."""

    def __init__(self, series: dict[str, FredSeries], params: MacroParams | None = None) -> None:
        self.series = series
        self.params = params or MacroParams()
        self._by_day: dict[date, tuple[float, float]] = {}
        self.quadrants: dict[date, str] = {}

    def __call__(self, time_ms: int) -> tuple[float, float]:
        day = as_date(time_ms)
        got = self._by_day.get(day)
        if got is None:
            regime = macro_regime(self.series, day, self.params, source="backtest")
            got = (regime.exposure_scale, regime.trail_multiplier)
            self._by_day[day] = got
            self.quadrants[day] = regime.quadrant
        return got


class VolRegimeSchedule:
    """Crypto vol regime label at any time: the last day closed by then, else None."""

    def __init__(
        self, btc_bars: Sequence[Bar], start_ms: int, end_ms: int, params: HmmParams | None = None
    ) -> None:
        regime, fit = fit_hmm(btc_bars, start_ms, params)
        self.fit_regime = regime
        days = filtered_labels(fit, btc_bars, start_ms, end_ms) if fit is not None else []
        self._times = [t for t, _ in days]
        self._labels = [label for _, label in days]
        self._start_label = None if regime.label == "unknown" else regime.label

    def __call__(self, time_ms: int) -> str | None:
        i = bisect.bisect_right(self._times, time_ms) - 1
        return self._labels[i] if i >= 0 else self._start_label
