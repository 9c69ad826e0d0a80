"""Listener throughput: kline frames through parse + BarStore + gate, and its CPU share at
Binance's real rate for 400 symbols.

    .venv/bin/python bench/listener.py [--days 30] [--symbols 400] [--window 20]

1. Throughput: the real BTC/USDT 1m month (shared/data) as replay frames on 1m, 1h and 4h
   (4 in-progress updates + the closed bar per 1m bar, the replay server's shape), encoded
   beforehand, then parsed, stored and gated in one loop on one core. Also the skip rate.
2. Real-rate load: 400 symbols synthesised from the real series (each shifted in time and
   scaled in price), each emitting one 1m kline frame every 2 s (what Binance sends per
   stream) plus its closed bar at the minute, delivered on an asyncio loop at wall-clock pace;
   the listener's CPU share = process CPU time / wall time over the measured window. Frames
   are encoded before the window starts, so only the listener's own work is measured.

Prints ``name: value`` lines, ending with ``frames_per_second`` and ``skip_rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from signals.bar_store import BarStore  # noqa: E402
from signals.gate import Gate  # noqa: E402
from signals.kline_frames import parse_kline_frame  # noqa: E402
from signals.replay_server import partial_bar  # noqa: E402
from tests.integration.test_gate_replay_1m import kline_frame, replay_frames  # noqa: E402
from trading.market_data import generate_market, load_ohlcv_csv, shared_data_dir  # noqa: E402
from trading.models import Bar  # noqa: E402
from workers.listener_worker import Listener  # noqa: E402

FILE = "binance_BTCUSDT_1m_2025-06.csv"
MINUTE_MS = 60_000
FRAME_EVERY_MS = 2_000  # Binance pushes a kline update about every 2 s per stream


class _Sink:
    """The dispatcher's place: count what would be sent."""

    def __init__(self) -> None:
        self.pushed = 0

    def push(self, reason: str, symbol: str, market_time_ms: int) -> None:
        self.pushed += 1


def load_bars(days: float) -> tuple[list[Bar], str]:
    data = shared_data_dir()
    if data is not None and (data / FILE).is_file():
        bars = load_ohlcv_csv(data / FILE, "BTC/USDT", "1m")
        source = f"real {FILE}"
    else:  # no shared data: a generated market of the same size (said in the output)
        bars = generate_market(["BTC/USDT"], "1m", 43_200)["BTC/USDT"]
        source = "generated (shared/data absent)"
    return bars[: int(days * 1440)], source


def throughput(bars: list[Bar]) -> dict[str, float]:
    frames = [f.encode() for f in replay_frames(bars, ["1m", "1h", "4h"])]
    store = BarStore()
    gate = Gate("4h", symbols=["BTC/USDT"])
    listener = Listener(store, gate, _Sink())  # type: ignore[arg-type]
    on_update = listener.on_update
    gc.collect()
    start_cpu = time.process_time()
    start = time.perf_counter()
    for raw in frames:
        on_update(parse_kline_frame(raw))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - start_cpu
    # the parts, on the same frames
    updates = [parse_kline_frame(raw) for raw in frames[:100_000]]
    t = time.process_time()
    for raw in frames[:100_000]:
        parse_kline_frame(raw)
    parse_us = (time.process_time() - t) / len(updates) * 1e6
    store2, gate2 = BarStore(), Gate("4h", symbols=["BTC/USDT"])
    closes = []
    t = time.process_time()
    for u in updates:
        closes.append(store2.update(u.bar, u.event_time_ms))
    store_us = (time.process_time() - t) / len(updates) * 1e6
    t = time.process_time()
    for u, closed in zip(updates, closes, strict=True):
        gate2.evaluate(u.bar, closed, u.event_time_ms)
    gate_us = (time.process_time() - t) / len(updates) * 1e6
    c = gate.counters
    return {
        "frames": len(frames),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "frames_per_second": len(frames) / cpu,
        "parse_us": parse_us,
        "store_us": store_us,
        "gate_us": gate_us,
        "skip_rate": c.skip_rate,
        "woken": c.woken,
        "g1": c.by_layer.get("G1", 0),
        "g3": c.by_layer.get("G3", 0),
    }


def synth_frames(
    bars: list[Bar], n_symbols: int, window_s: float, start_ms: int
) -> tuple[list[tuple[float, list[bytes]]], list[list[Bar]]]:
    """Frames of ``n_symbols`` synthetic symbols for ``window_s`` seconds from ``start_ms``,
    grouped by due time (seconds from the start); plus each symbol's warm-up history."""
    minutes = int(window_s // 60) + 2
    first_minute = start_ms - start_ms % MINUTE_MS
    schedule: dict[int, list[bytes]] = {}
    history: list[list[Bar]] = []
    for i in range(n_symbols):
        symbol = f"S{i:03d}/USDT"
        scale = 1.0 + i / 97.0
        offset = (i * 97) % max(1, len(bars) - minutes - 60)
        source = bars[offset : offset + 60 + minutes]

        def shifted(b: Bar, open_time: int, sym: str = symbol, k: float = scale) -> Bar:
            return Bar(
                symbol=sym,
                interval="1m",
                open_time=open_time,
                close_time=open_time + MINUTE_MS - 1,
                open=b.open * k,
                high=b.high * k,
                low=b.low * k,
                close=b.close * k,
                volume=b.volume,
            )

        history.append(
            [shifted(b, first_minute - (60 - j) * MINUTE_MS) for j, b in enumerate(source[:60])]
        )
        phase = (i * FRAME_EVERY_MS) // n_symbols  # streams are not in lock-step
        for m, b in enumerate(source[60:]):
            bar = shifted(b, first_minute + m * MINUTE_MS)
            for at in range(bar.open_time + phase, bar.close_time, FRAME_EVERY_MS):
                part = partial_bar(
                    bar, (at - bar.open_time) / MINUTE_MS, bar.open_time, bar.close_time
                )
                values = (part.open, part.high, part.low, part.close, part.volume)
                frame = kline_frame(symbol, "1m", bar.open_time, bar.close_time, values, False, at)
                schedule.setdefault(at, []).append(frame.encode())
            values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
            at = bar.close_time + 1 + phase // 10  # the closed bar, just after the minute
            frame = kline_frame(symbol, "1m", bar.open_time, bar.close_time, values, True, at - 1)
            schedule.setdefault(at, []).append(frame.encode())
    due = [((t - start_ms) / 1000, frames) for t, frames in sorted(schedule.items())]
    return [(s, f) for s, f in due if 0 <= s < window_s], history


async def real_rate(bars: list[Bar], n_symbols: int, window_s: float) -> dict[str, float]:
    start_ms = int(time.time() * 1000) + 2_000
    due, history = synth_frames(bars, n_symbols, window_s, start_ms)
    store = BarStore()
    gate = Gate("4h")
    for h in history:
        store.seed(h[0].symbol, "1m", h)
        gate.warm_up(h)
    listener = Listener(store, gate, _Sink())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    wall0 = loop.time() + (start_ms / 1000 - time.time())
    gc.collect()
    await asyncio.sleep(max(0.0, wall0 - loop.time()))
    cpu0, t0 = time.process_time(), time.perf_counter()
    frames = 0
    lag_max = 0.0
    for at, batch in due:
        delay = wall0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag_max = max(lag_max, loop.time() - (wall0 + at))
        for raw in batch:  # what KlineStream does with each received frame
            listener.on_update(parse_kline_frame(raw))
        frames += len(batch)
    await asyncio.sleep(max(0.0, wall0 + window_s - loop.time()))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {
        "symbols": n_symbols,
        "frames": frames,
        "window_s": wall,
        "frames_per_wall_second": frames / wall,
        "cpu_share": cpu / wall,
        "max_lag_ms": lag_max * 1000,
        "skip_rate": gate.counters.skip_rate,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0, help="days of 1m data for part 1")
    ap.add_argument("--symbols", type=int, default=400)
    ap.add_argument("--window", type=float, default=20.0, help="seconds of real-rate load")
    args = ap.parse_args(argv)
    bars, source = load_bars(args.days)
    print(f"data: {source}, {len(bars)} bars")
    tp = throughput(bars)
    print(f"throughput_frames: {tp['frames']}")
    print(f"throughput_cpu_seconds: {tp['cpu_seconds']:.2f} (wall {tp['seconds']:.2f})")
    print(f"parse_us_per_frame: {tp['parse_us']:.2f}")
    print(f"store_us_per_frame: {tp['store_us']:.2f}")
    print(f"gate_us_per_frame: {tp['gate_us']:.2f}")
    print(f"wakes: {tp['woken']} (G1 {tp['g1']}, G3 reasons {tp['g3']})")
    rr = asyncio.run(real_rate(bars, args.symbols, args.window))
    print(f"real_rate_symbols: {rr['symbols']}")
    print(f"real_rate_frames_per_second: {rr['frames_per_wall_second']:.1f}")
    print(f"real_rate_window_s: {rr['window_s']:.1f}")
    print(f"real_rate_cpu_share: {rr['cpu_share']:.4f}")
    print(f"real_rate_max_lag_ms: {rr['max_lag_ms']:.1f}")
    print(f"real_rate_skip_rate: {rr['skip_rate']:.4f}")
    print(f"frames_per_second: {tp['frames_per_second']:.0f}")
    print(f"skip_rate: {tp['skip_rate']:.6f}")


if __name__ == "__main__":
    main()
