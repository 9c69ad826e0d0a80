"""The bars, features and funding of one backtest, aligned on one timeline, and their hash.

Built once per data set and shared by every parameter set of a grid (it does not depend on
the parameters). Features come from ``features_frame`` (equal to ``compute_features``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from trading.backtest.features_frame import LIVE_WINDOW, FeatureFrame, compute_feature_frame
from trading.models import Bar

FundingSeries = tuple[np.ndarray, np.ndarray]  # funding times (epoch ms), rates per period


@dataclass
class BacktestData:
    """Everything a run reads: decision-timeframe frames, the agent layer's frames, funding."""

    interval: str
    symbols: list[str]
    frames: dict[str, FeatureFrame]
    timeline: np.ndarray  # open times of the decision bars (union over symbols), int64
    index: dict[str, np.ndarray]  # timeline step -> bar index of the symbol, -1 if none
    scorer_frames: dict[str, FeatureFrame]
    scorer_index: dict[str, np.ndarray]  # step -> last scorer bar closed by the step's close
    funding: dict[str, FundingSeries] = field(default_factory=dict)
    fingerprint_source: tuple | None = field(default=None, repr=False)  # (bars, funding)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of every input row (computed on first use: hashing costs more than a run)."""
        if self.fingerprint_source is None:
            return ""
        return fingerprint_bars(*self.fingerprint_source)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["fingerprint_source"] = None  # process pools need the arrays, not the bar lists
        state.setdefault("fingerprint", self.fingerprint)
        return state

    @cached_property
    def step_close(self) -> np.ndarray:
        """Close time (last ms) of each timeline step."""
        any_frame = next(iter(self.frames.values()))
        width = int(any_frame.close_time[0] - any_frame.open_time[0]) if len(any_frame) else 0
        return self.timeline + width

    @cached_property
    def step_lists(self) -> tuple[list[int], list[int]]:
        """Open and close times of the steps as Python lists (read per step by the engine)."""
        return self.timeline.tolist(), self.step_close.tolist()

    @cached_property
    def ohlc_by_step(self) -> dict[str, dict[str, np.ndarray]]:
        """Per symbol, open/high/low/close at each timeline step (NaN where it has no bar)."""
        out = {}
        for s in self.symbols:
            idx = self.index[s]
            f = self.frames[s]
            safe = np.where(idx >= 0, idx, 0)
            out[s] = {
                c: np.where(idx >= 0, getattr(f, c)[safe], np.nan)
                for c in ("open", "high", "low", "close")
            }
        return out

    @cached_property
    def bars_by_step(
        self,
    ) -> dict[str, tuple[list[int], list[float], list[float], list[float], list[float]]]:
        """Per symbol, per timeline step: bar index (-1 if none), open, high, low, close as
        Python lists (the engine's inner loop reads scalars; lists are the fastest there)."""
        out = {}
        for s in self.symbols:
            cols = self.ohlc_by_step[s]
            out[s] = (
                self.index[s].tolist(),
                *(cols[c].tolist() for c in ("open", "high", "low", "close")),
            )
        return out

    @cached_property
    def close_ffill(self) -> dict[str, np.ndarray]:
        """Per symbol, the close at each timeline step, the previous close where it has no bar
        (NaN before its first bar)."""
        out = {}
        for s in self.symbols:
            closes = self.ohlc_by_step[s]["close"]
            valid = ~np.isnan(closes)
            last = np.maximum.accumulate(np.where(valid, np.arange(len(closes)), -1))
            out[s] = np.where(last >= 0, closes[np.maximum(last, 0)], np.nan)
        return out

    @cached_property
    def close_range_tables(self) -> dict[str, tuple[list[list[float]], list[list[float]]]]:
        """Per symbol, sparse tables of ``close_ffill`` minima and maxima over power-of-two
        spans (level k covers 2**k steps), as lists: ``close_range(s, a, b)`` answers in O(1).

        The engine asks the lowest and highest close of every quiet stretch it skips while
        holding (for the drawdown halt); a table lookup is cheaper than two numpy reductions.
        """
        out = {}
        for s in self.symbols:
            lo = [self.close_ffill[s]]
            hi = [self.close_ffill[s]]
            span = 1
            while span * 2 <= len(lo[0]):
                lo.append(np.fmin(lo[-1][:-span], lo[-1][span:]))
                hi.append(np.fmax(hi[-1][:-span], hi[-1][span:]))
                span *= 2
            out[s] = ([a.tolist() for a in lo], [a.tolist() for a in hi])
        return out

    def close_range(self, symbol: str, a: int, b: int) -> tuple[float, float]:
        """Lowest and highest ``close_ffill`` of ``symbol`` over steps ``a .. b-1`` (b > a)."""
        lo, hi = self.close_range_tables[symbol]
        k = (b - a).bit_length() - 1
        j = b - (1 << k)
        return min(lo[k][a], lo[k][j]), max(hi[k][a], hi[k][j])

    def steps_between(self, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
        """Timeline steps whose bar opens in ``[start_ms, end_ms)``."""
        t0 = 0 if start_ms is None else int(np.searchsorted(self.timeline, start_ms, "left"))
        t1 = len(self.timeline)
        if end_ms is not None:
            t1 = int(np.searchsorted(self.timeline, end_ms, "left"))
        return t0, t1


def fingerprint_bars(
    bars: dict[str, Sequence[Bar]], funding: dict[str, FundingSeries] | None = None
) -> str:
    """sha256 over every row used (symbol, interval, open time, OHLCV; funding rows)."""
    digest = hashlib.sha256()
    for symbol in sorted(bars):
        for b in bars[symbol]:
            digest.update(
                f"{symbol}|{b.interval}|{b.open_time}|{b.open!r}|{b.high!r}|{b.low!r}|"
                f"{b.close!r}|{b.volume!r}\n".encode()
            )
    for symbol in sorted(funding or {}):
        times, rates = (funding or {})[symbol]
        digest.update(f"funding|{symbol}\n".encode())
        digest.update(np.ascontiguousarray(times, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(rates, dtype=float).tobytes())
    return digest.hexdigest()


def prepare_data(
    bars: dict[str, Sequence[Bar]],
    interval: str,
    scorer_bars: dict[str, Sequence[Bar]] | None = None,
    funding: dict[str, FundingSeries] | None = None,
    window: int | None = LIVE_WINDOW,
) -> BacktestData:
    """Frames, timeline and indices of a data set. ``bars`` hold warm-up history too.

    ``scorer_bars`` (usually 1h) feed the agent layer as live does (its market view is on 1h);
    a symbol without them falls back to its decision-timeframe frame.
    """
    if not bars:
        raise ValueError("no symbols")
    symbols = list(bars)
    frames = {s: compute_feature_frame(s, interval, bars[s], window) for s in symbols}
    timeline = np.unique(np.concatenate([frames[s].open_time for s in symbols]))
    index: dict[str, np.ndarray] = {}
    for s in symbols:
        pos = np.searchsorted(frames[s].open_time, timeline)
        hit = pos < len(frames[s])
        hit[hit] = frames[s].open_time[pos[hit]] == timeline[hit]
        index[s] = np.where(hit, pos, -1).astype(np.int64)
    scorer_frames: dict[str, FeatureFrame] = {}
    scorer_index: dict[str, np.ndarray] = {}
    for s in symbols:
        finer = (scorer_bars or {}).get(s)
        if finer:
            scorer_frames[s] = compute_feature_frame(s, finer[0].interval, finer, window)
        else:
            scorer_frames[s] = frames[s]
    data = BacktestData(
        interval=interval,
        symbols=symbols,
        frames=frames,
        timeline=timeline,
        index=index,
        scorer_frames=scorer_frames,
        scorer_index={},
        funding=dict(funding or {}),
    )
    closes = data.step_close
    for s in symbols:
        sf = scorer_frames[s]
        idx = np.searchsorted(sf.close_time, closes, side="right") - 1
        scorer_index[s] = idx.astype(np.int64)
    data.scorer_index = scorer_index
    all_bars = dict(bars)
    for s, finer in (scorer_bars or {}).items():
        all_bars[f"{s}@scorer"] = finer
    data.fingerprint_source = (all_bars, funding)
    return data
