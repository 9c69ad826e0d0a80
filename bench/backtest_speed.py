"""Bars per second of OCW's backtester and of backtesting.py on the same SMA-cross strategy.

Both run in this process on identical BTC/USDT 4h bars (the shared real data when present,
else a seeded synthetic market): long when SMA(10) crosses above SMA(30), flat when it crosses
below, decided on a bar's close and filled at the next bar's open, 0.1 % fee a side, no
slippage, all-in sizing, no stops. Timed: ``Backtest.run`` (backtesting.py's indicators, loop
and statistics) against OCW's indicators (the SMAs), ``run_backtest`` and ``result_metrics``,
on data both have prepared (a ``Backtest`` object; a ``BacktestData`` with its feature frames,
time printed apart); best of ``--repeat`` interleaved rounds. OCW's engine is event-driven: it
visits the bars where something can happen (a cross, an order to fill, an open position with
stops or a scorer) and marks the rest in one vectorised step. The last line is the ratio.

    .venv/bin/python bench/backtest_speed.py [--data DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trading.backtest.data import BacktestData, prepare_data  # noqa: E402
from trading.backtest.engine import run_backtest  # noqa: E402
from trading.backtest.metrics import result_metrics  # noqa: E402
from trading.backtest.params import BacktestParams  # noqa: E402
from trading.backtest.policy import Intent  # noqa: E402
from trading.market_data import (  # noqa: E402
    find_symbol_csv,
    generate_market,
    load_ohlcv_csv,
    shared_data_dir,
)
from trading.models import Action, Bar  # noqa: E402

SYMBOL = "BTC/USDT"
FAST, SLOW = 10, 30
FEE = 0.001
CASH = 1e9  # large, so that backtesting.py's whole-unit sizing rounds off little


def _sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    c = np.cumsum(np.insert(x, 0, 0.0))
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


class SmaCross:
    """Decision source for OCW's engine: BUY on a golden cross, SELL on a death cross."""

    def __init__(self, data: BacktestData) -> None:
        close = data.frames[SYMBOL].close
        fast, slow = _sma(close, FAST), _sma(close, SLOW)
        above = fast > slow
        prev = np.concatenate(([False], above[:-1]))
        valid = ~np.isnan(slow) & ~np.isnan(np.concatenate(([np.nan], slow[:-1])))
        self.up = above & ~prev & valid
        self.down = ~above & prev & valid
        self.index = data.index[SYMBOL]
        self.buy = {SYMBOL: Intent(Action.BUY, 1.0, 1.0, {})}
        self.sell = {SYMBOL: Intent(Action.SELL, 0.0, 1.0, {})}
        self.hold: dict[str, Intent] = {}
        self.cross = self.up | self.down

    def active_steps(self, steps: np.ndarray, flat: bool = False) -> np.ndarray:
        """Steps with a cross: the engine skips the bars in between (nothing can happen)."""
        idx = self.index[steps]
        signal = self.up if flat else self.cross  # flat, only a golden cross can act
        return np.where(idx >= 0, signal[np.maximum(idx, 0)], False)

    def intents(self, step, held, group_weights=None):
        i = int(self.index[step])
        if i >= 0 and self.up[i]:
            return self.buy
        if i >= 0 and self.down[i]:
            return self.sell
        return self.hold


OCW_PARAMS = dict(
    initial_cash=CASH,
    fee_rate=FEE,
    slippage_bps=0.0,
    default_position_pct=1.0,
    max_position_pct=1.0,
    max_exposure=1.0,
    drawdown_halt_pct=0.99,
    stop_loss_pct=0.0,
    trail_pct=0.0,
    max_drawdown_guard_pct=0.0,
    agent_every_bars=0,
    close_at_end=False,
)


def run_ocw(data: BacktestData) -> tuple[float, int]:
    """Indicators (the SMAs), the run and its metrics, on bars already in memory: what
    ``Backtest.run`` does (it returns its statistics)."""
    params = BacktestParams(**OCW_PARAMS)
    result = run_backtest(data, params, decisions=SmaCross(data))
    metrics = result_metrics(result)
    return metrics.final_equity, metrics.trades


def backtesting_py(df: pd.DataFrame):
    """A ``Backtest`` of the same strategy (construction = data preparation, not timed)."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    class Cross(Strategy):
        def init(self) -> None:
            close = self.data.Close
            self.fast = self.I(lambda c: _sma(np.asarray(c), FAST), close)
            self.slow = self.I(lambda c: _sma(np.asarray(c), SLOW), close)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                if not self.position:
                    self.buy()
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    return Backtest(df, Cross, cash=CASH, commission=FEE, trade_on_close=False)


def run_backtesting_py(bt) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    return float(stats["Equity Final [$]"]), int(stats["# Trades"])


def load_bars(data_dir: Path | None) -> tuple[list[Bar], str]:
    path = find_symbol_csv(data_dir, SYMBOL, "4h") if data_dir else None
    if path is not None:
        return load_ohlcv_csv(path, SYMBOL, "4h"), path.name
    return generate_market([SYMBOL], "4h", 6_000, seed=11)[SYMBOL], "generated (seed 11)"


def best_times(fns: dict[str, object], repeat: int) -> dict[str, tuple[float, object]]:
    """Best wall time of each function over ``repeat`` rounds, interleaved so that a busy
    moment of a shared machine hits both sides alike."""
    best: dict[str, tuple[float, object]] = {name: (float("inf"), None) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t
            if elapsed < best[name][0]:
                best[name] = (elapsed, out)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    bars, source = load_bars(args.data)
    df = pd.DataFrame(
        {
            "Open": [b.open for b in bars],
            "High": [b.high for b in bars],
            "Low": [b.low for b in bars],
            "Close": [b.close for b in bars],
            "Volume": [b.volume for b in bars],
        },
        index=pd.to_datetime([b.open_time for b in bars], unit="ms", utc=True),
    )
    n = len(bars)
    began = time.perf_counter()
    data = prepare_data({SYMBOL: bars}, "4h")
    t_prep = time.perf_counter() - began
    bt = backtesting_py(df)
    best = best_times(
        {"ocw": lambda: run_ocw(data), "bt": lambda: run_backtesting_py(bt)}, args.repeat
    )
    t_ocw, (eq_ocw, trades_ocw) = best["ocw"]
    t_bt, (eq_bt, trades_bt) = best["bt"]
    print(f"data: {SYMBOL} 4h, {n} bars, {source}")
    print(f"ocw data preparation (all SPEC §2 features, not timed): {t_prep * 1000:.1f} ms")
    print(f"ocw:            {n / t_ocw:12,.0f} bars/s  ({t_ocw * 1000:.1f} ms)")
    print(f"  final equity {eq_ocw:,.2f}, {trades_ocw} round trips")
    print(f"backtesting.py: {n / t_bt:12,.0f} bars/s  ({t_bt * 1000:.1f} ms)")
    print(f"  final equity {eq_bt:,.2f}, {trades_bt} trades")
    print(f"speedup_vs_backtesting_py: {t_bt / t_ocw:.2f}")


if __name__ == "__main__":
    main()
