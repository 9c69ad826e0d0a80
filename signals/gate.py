"""The gate between market ticks and the agent: most ticks end here.

Foundation layer G1 only: a closed candle of the decision interval always wakes the agent.
The full adaptive gate (G2 agent timer, G3 z-score outliers, G4 agent wake conditions,
cooldowns, watchdog; SPEC §1) plugs into ``evaluate`` with the same contract: a tick in,
a list of wake reasons out, counters of what was seen, skipped and woken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trading.models import Bar


@dataclass
class GateCounters:
    ticks: int = 0
    skipped: int = 0
    woken: int = 0
    by_layer: dict[str, int] = field(default_factory=dict)

    @property
    def skip_rate(self) -> float:
        return self.skipped / self.ticks if self.ticks else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "ticks": self.ticks,
            "skipped": self.skipped,
            "woken": self.woken,
            "skip_rate": round(self.skip_rate, 4),
            "by_layer": dict(self.by_layer),
        }


class Gate:
    def __init__(self, decision_interval: str) -> None:
        self.decision_interval = decision_interval
        self.counters = GateCounters()

    def evaluate(self, bar: Bar, newly_closed: bool) -> list[str]:
        """Wake reasons for this tick; empty means the tick is skipped."""
        self.counters.ticks += 1
        reasons: list[str] = []
        if newly_closed and bar.interval == self.decision_interval:
            reasons.append(f"candle_close:{bar.symbol}:{bar.interval}")
            self._count("G1")
        if reasons:
            self.counters.woken += 1
        else:
            self.counters.skipped += 1
        return reasons

    def _count(self, layer: str) -> None:
        self.counters.by_layer[layer] = self.counters.by_layer.get(layer, 0) + 1
