"""SPEC §10 metrics on hand-made equity curves and trades."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trading.backtest.metrics import (
    buy_and_hold,
    compute_metrics,
    daily_returns,
    max_drawdown,
    sharpe_ratio,
    sortino_ratio,
)
from trading.models import ClosedTrade

DAY = 86_400_000
BAR = 4 * 3_600_000


def _trade(pnl_pct: float, reason: str) -> ClosedTrade:
    return ClosedTrade(
        trade_id=f"t{pnl_pct}{reason}",
        symbol="BTC/USDT",
        qty=1.0,
        entry_price=100.0,
        exit_price=100.0 * (1 + pnl_pct),
        entry_time_ms=0,
        exit_time_ms=1,
        fees=0.0,
        pnl=100.0 * pnl_pct,
        pnl_pct=pnl_pct,
        exit_reason=reason,
    )


def test_daily_returns_take_the_last_bar_of_each_day() -> None:
    times = np.array([DAY - 1, 2 * DAY - 1 - BAR, 2 * DAY - 1, 3 * DAY - 1])
    equity = np.array([110.0, 200.0, 121.0, 121.0])
    assert daily_returns(times, equity, 100.0) == pytest.approx([0.10, 0.10, 0.0])


def test_sharpe_and_sortino_by_hand() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0])
    mean, sd = 0.005, float(np.std(r, ddof=1))
    assert sharpe_ratio(r) == pytest.approx(mean / sd * math.sqrt(365))
    downside = math.sqrt((0.02**2) / 4)
    assert sortino_ratio(r) == pytest.approx(mean / downside * math.sqrt(365))
    assert sharpe_ratio(np.array([0.01, 0.01])) == 0.0  # no variance: no ratio, not inf


def test_max_drawdown_from_the_running_peak() -> None:
    assert max_drawdown(np.array([100, 120, 90, 130, 117.0])) == pytest.approx(-0.25)
    assert max_drawdown(np.array([90.0, 95.0]), initial=100.0) == pytest.approx(-0.10)
    assert max_drawdown(np.array([100.0, 101.0])) == 0.0


def test_compute_metrics_on_a_year() -> None:
    days = 365
    times = np.arange(1, days + 1) * DAY - 1  # one bar per day, at its close
    equity = 1000.0 * 1.001 ** np.arange(1, days + 1)
    trades = [_trade(0.05, "trailing_stop"), _trade(-0.02, "stop_loss"), _trade(0.01, "agent_exit")]
    m = compute_metrics(
        times,
        equity,
        np.full(days, 0.5),
        trades,
        1000.0,
        DAY,
        first_open={"BTC/USDT": 100.0, "ETH/USDT": 10.0},
        last_close={"BTC/USDT": 110.0, "ETH/USDT": 8.0},
        fee_rate=0.0,
    )
    assert m.total_return == pytest.approx(1.001**365 - 1)
    assert m.cagr == pytest.approx((1.001**365) ** (365.25 / 365) - 1)
    assert m.max_drawdown == 0.0 and m.sharpe == 0.0  # constant daily return: no deviation
    assert m.win_rate == pytest.approx(2 / 3)
    assert m.avg_win == pytest.approx(0.03) and m.avg_loss == pytest.approx(-0.02)
    assert m.exposure == 0.5 and m.trades == 3
    assert m.exit_reasons == {"agent_exit": 1 / 3, "stop_loss": 1 / 3, "trailing_stop": 1 / 3}
    assert m.btc_buy_hold == pytest.approx(0.10)
    assert m.basket_buy_hold == pytest.approx((0.10 - 0.20) / 2)
    assert m.alpha_vs_btc == pytest.approx(m.total_return - 0.10)
    assert m.alpha_vs_basket == pytest.approx(m.total_return + 0.05)


def test_buy_and_hold_pays_the_fee_twice() -> None:
    assert buy_and_hold(100.0, 100.0, 0.001) == pytest.approx(0.999 / 1.001 - 1)
