"""Rolling population mean and variance over the last N values, for the gate's z-scores.

The gate updates one tracker per (symbol, interval, feature) on every closed bar, so an update
must be O(1): a fixed ring of plain floats and a sliding Welford update of the mean and of the
sum of squared deviations (M2). Sliding updates accumulate rounding error, so M2 is never
allowed below zero and the sums are recomputed exactly from the ring every ``resync_every``
replacements; that keeps the numbers exact to a few ulps for any run length.
"""

from __future__ import annotations

import math


class RollingStats:
    """Mean and population variance of the last ``window`` values added."""

    __slots__ = ("_m2", "_mean", "_n", "_pos", "_ring", "_since_resync", "resync_every", "window")

    def __init__(self, window: int = 50, resync_every: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if resync_every < 1:
            raise ValueError("resync_every must be >= 1")
        self.window = window
        self.resync_every = resync_every
        self._ring: list[float] = []
        self._pos = 0  # slot of the oldest value once the ring is full
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._since_resync = 0

    # ------------------------------------------------------------ updates

    def add(self, x: float) -> None:
        """Append a finite value, dropping the oldest once the window is full."""
        if not math.isfinite(x):
            raise ValueError(f"value must be finite, got {x!r}")
        n = self._n
        if n < self.window:
            self._ring.append(x)
            n += 1
            self._n = n
            delta = x - self._mean
            self._mean += delta / n
            self._m2 += delta * (x - self._mean)
            return
        pos = self._pos
        old = self._ring[pos]
        self._ring[pos] = x
        self._pos = pos + 1 if pos + 1 < n else 0
        old_mean = self._mean
        delta = x - old
        self._mean = old_mean + delta / n
        self._m2 += delta * (x - self._mean + old - old_mean)
        if self._m2 < 0.0:
            self._m2 = 0.0
        self._since_resync += 1
        if self._since_resync >= self.resync_every:
            self.resync()

    def resync(self) -> None:
        """Recompute mean and M2 exactly from the ring (two-pass)."""
        ring = self._ring
        n = len(ring)
        self._since_resync = 0
        if n == 0:
            self._mean = self._m2 = 0.0
            return
        mean = math.fsum(ring) / n
        self._mean = mean
        self._m2 = math.fsum((v - mean) * (v - mean) for v in ring)

    def clear(self) -> None:
        self._ring.clear()
        self._pos = self._n = self._since_resync = 0
        self._mean = self._m2 = 0.0

    # ------------------------------------------------------------ reads

    @property
    def count(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def variance(self) -> float:
        """Population variance (divides by n); 0.0 when empty."""
        return self._m2 / self._n if self._n else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def values(self) -> list[float]:
        """The window, oldest first."""
        return self._ring[self._pos :] + self._ring[: self._pos]

    def zscore(self, x: float, min_samples: int = 3) -> float | None:
        """How many standard deviations ``x`` lies from the window's mean.

        None below ``min_samples`` values or when the window is flat (a constant series has no
        scale: any change would be an infinite z, which says nothing useful).
        """
        n = self._n
        if n < min_samples or n == 0:
            return None
        var = self._m2 / n
        mean = self._mean
        # flat within rounding: relative to the magnitude of the values
        if var <= 1e-24 * (mean * mean + 1e-300) or var <= 0.0:
            return None
        return (x - mean) / math.sqrt(var)
