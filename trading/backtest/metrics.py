"""Backtest metrics (SPEC §10) from an equity curve, its trades and the benchmark prices.

Conventions:

* Sharpe and Sortino use *daily* returns: the equity at the last bar close of each UTC day
  (the first day's return is from the starting capital), risk-free rate 0, annualised by
  sqrt(365) (crypto trades every day). Sharpe uses the sample standard deviation (ddof=1);
  Sortino the downside deviation sqrt(mean(min(r, 0)^2)) over all days.
* CAGR over calendar time from the first bar's open to the last bar's close (365.25-day year).
* Max drawdown on the bar-close equity, as a negative fraction (-0.25 = -25 %).
* Exposure: mean over bar closes of position value / equity.
* Win rate and average win / loss on trades' net PnL fractions (``pnl_pct``); a trade at
  exactly 0 counts as a loss.
* Benchmarks: buy at the first bar's open, sell at the last bar's close, paying the fee on both
  sides. Alpha = total return minus the benchmark's total return (simple excess return over the
  same window), against BTC buy-and-hold and against an equal-weight basket of the run's symbols.
* By direction: trades and summed net PnL (quote currency) of the long and of the short trades
  (``ClosedTrade.side``); every other figure is over all trades, whatever their side.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from trading.market_data import interval_ms
from trading.models import ClosedTrade, Model, PositionSide

DAY_MS = 86_400_000
YEAR_DAYS = 365.25
FLAT = 1e-12  # a deviation of daily returns below this is float noise: ratio reported as 0


class Metrics(Model):
    start_ms: int
    end_ms: int
    days: float
    initial_equity: float
    final_equity: float
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    max_drawdown: float
    win_rate: float
    avg_win: float
    avg_loss: float
    exposure: float
    trades: int
    exit_reasons: dict[str, float]  # share of exits by reason
    btc_buy_hold: float | None
    basket_buy_hold: float | None
    alpha_vs_btc: float | None
    alpha_vs_basket: float | None
    fees_paid: float = 0.0
    funding_paid: float = 0.0
    trades_long: int = 0
    trades_short: int = 0
    pnl_long: float = 0.0  # summed net pnl of the long trades, quote currency
    pnl_short: float = 0.0


def daily_returns(times_ms: np.ndarray, equity: np.ndarray, initial: float) -> np.ndarray:
    """Returns of the last equity of each UTC day (bar close time decides the day)."""
    if len(equity) == 0:
        return np.empty(0)
    days = np.asarray(times_ms, dtype=np.int64) // DAY_MS
    last_of_day = np.flatnonzero(np.diff(days)) if len(days) > 1 else np.empty(0, dtype=int)
    idx = np.append(last_of_day, len(equity) - 1)
    levels = np.concatenate(([initial], np.asarray(equity, dtype=float)[idx]))
    return levels[1:] / levels[:-1] - 1.0


def sharpe_ratio(daily: np.ndarray) -> float:
    if len(daily) < 2:
        return 0.0
    sd = float(np.std(daily, ddof=1))
    return float(np.mean(daily)) / sd * math.sqrt(365.0) if sd > FLAT else 0.0


def sortino_ratio(daily: np.ndarray) -> float:
    if len(daily) < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(daily, 0.0) ** 2)))
    return float(np.mean(daily)) / downside * math.sqrt(365.0) if downside > FLAT else 0.0


def max_drawdown(equity: np.ndarray, initial: float | None = None) -> float:
    """Deepest fall from a running peak, as a negative fraction (0 when it never fell)."""
    curve = np.asarray(equity, dtype=float)
    if initial is not None:
        curve = np.concatenate(([initial], curve))
    if len(curve) == 0:
        return 0.0
    peaks = np.maximum.accumulate(curve)
    return float(np.min(curve / peaks - 1.0))


def buy_and_hold(first_open: float, last_close: float, fee_rate: float) -> float:
    return last_close * (1.0 - fee_rate) / (first_open * (1.0 + fee_rate)) - 1.0


def compute_metrics(
    times_ms: np.ndarray,
    equity: np.ndarray,
    exposure: np.ndarray,
    trades: Sequence[ClosedTrade],
    initial: float,
    bar_ms: int,
    first_open: dict[str, float] | None = None,
    last_close: dict[str, float] | None = None,
    fee_rate: float = 0.001,
    fees_paid: float = 0.0,
    funding_paid: float = 0.0,
) -> Metrics:
    """SPEC §10 metrics of one equity curve (bar closes) and its closed trades."""
    times = np.asarray(times_ms, dtype=np.int64)
    if len(times) == 0:
        raise ValueError("empty equity curve")
    start_ms = int(times[0]) + 1 - bar_ms
    end_ms = int(times[-1]) + 1
    days = (end_ms - start_ms) / DAY_MS
    final = float(equity[-1])
    total = final / initial - 1.0
    cagr = (final / initial) ** (YEAR_DAYS / days) - 1.0 if final > 0 and days > 0 else -1.0
    daily = daily_returns(times, equity, initial)
    pnls = np.array([t.pnl_pct for t in trades], dtype=float)
    wins, losses = pnls[pnls > 0], pnls[pnls <= 0]
    reasons = Counter(t.exit_reason for t in trades)
    shorts = [t for t in trades if getattr(t, "side", PositionSide.LONG) is PositionSide.SHORT]
    longs = [t for t in trades if getattr(t, "side", PositionSide.LONG) is not PositionSide.SHORT]
    shares = {r: c / len(trades) for r, c in sorted(reasons.items())} if trades else {}
    bench: dict[str, float] = {}
    for symbol, price in (first_open or {}).items():
        close = (last_close or {}).get(symbol)
        if close is not None and math.isfinite(close) and price > 0:
            bench[symbol] = buy_and_hold(price, close, fee_rate)
    btc = bench.get("BTC/USDT")
    basket = float(np.mean(list(bench.values()))) if bench else None
    return Metrics(
        start_ms=start_ms,
        end_ms=end_ms,
        days=days,
        initial_equity=initial,
        final_equity=final,
        total_return=total,
        cagr=cagr,
        sharpe=sharpe_ratio(daily),
        sortino=sortino_ratio(daily),
        max_drawdown=max_drawdown(equity, initial),
        win_rate=len(wins) / len(pnls) if len(pnls) else 0.0,
        avg_win=float(wins.mean()) if len(wins) else 0.0,
        avg_loss=float(losses.mean()) if len(losses) else 0.0,
        exposure=float(np.mean(exposure)) if len(exposure) else 0.0,
        trades=len(trades),
        exit_reasons=shares,
        btc_buy_hold=btc,
        basket_buy_hold=basket,
        alpha_vs_btc=None if btc is None else total - btc,
        alpha_vs_basket=None if basket is None else total - basket,
        fees_paid=fees_paid,
        funding_paid=funding_paid,
        trades_long=len(longs),
        trades_short=len(shorts),
        pnl_long=math.fsum(t.pnl for t in longs),
        pnl_short=math.fsum(t.pnl for t in shorts),
    )


def result_metrics(result) -> Metrics:  # result: engine.BacktestResult (no import cycle)
    """Metrics of an engine ``BacktestResult``."""
    last_close = {}
    for s, closes in result.closes.items():
        finite = closes[np.isfinite(closes)]
        if len(finite):
            last_close[s] = float(finite[-1])
    return compute_metrics(
        result.times,
        result.equity,
        result.exposure,
        result.trades,
        result.params.initial_cash,
        interval_ms(result.interval),
        result.first_open,
        last_close,
        result.params.fee_rate,
        result.fees_paid,
        result.funding_paid,
    )
