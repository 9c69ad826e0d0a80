"""Splits recorded bars into a warm-up history (the REST bootstrap's stand-in) and the replay."""

from __future__ import annotations

from dataclasses import dataclass

from trading.config import interval_seconds
from trading.models import Bar

DAY_MS = 86_400_000


@dataclass
class ReplayPlan:
    warmup: dict[str, list[Bar]]  # symbol -> base-interval bars before the replay
    replay: dict[str, list[Bar]]  # symbol -> base-interval bars to stream
    start_ms: int
    end_ms: int

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS


def plan_replay(
    bars: dict[str, list[Bar]],
    days: float | None,
    warmup_days: float,
    align_interval: str,
    start_ms: int | None = None,
) -> ReplayPlan:
    """Replay ``days`` of market starting at ``start_ms`` (default: the last ``days`` of data).

    The start is floored to the decision interval so that its first candle is replayed whole.
    """
    if not bars:
        raise ValueError("no bars to replay")
    first = max(series[0].open_time for series in bars.values() if series)
    last = min(series[-1].close_time for series in bars.values() if series)
    align = interval_seconds(align_interval) * 1000
    if start_ms is None:
        if days is None:
            start_ms = first + int(warmup_days * DAY_MS)
        else:
            start_ms = last + 1 - int(days * DAY_MS)
    start_ms = max(start_ms, first)
    start_ms -= start_ms % align
    end_ms = last + 1 if days is None else min(last + 1, start_ms + int(days * DAY_MS))
    if end_ms <= start_ms:
        raise ValueError("the data does not cover the requested replay window")
    warm_from = start_ms - int(warmup_days * DAY_MS)
    warmup = {
        s: [b for b in series if warm_from <= b.open_time < start_ms] for s, series in bars.items()
    }
    replay = {
        s: [b for b in series if start_ms <= b.open_time < end_ms] for s, series in bars.items()
    }
    return ReplayPlan(warmup=warmup, replay=replay, start_ms=start_ms, end_ms=end_ms)
