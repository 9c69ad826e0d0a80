"""Parameters of one backtest run: the live settings that matter, plus the bar cadences."""

from __future__ import annotations

from pydantic import Field

from trading.limits import HARD_MAX_LEVERAGE
from trading.models import Model, PositionParams


class BacktestParams(Model):
    """Everything a run depends on besides the bars (SPEC §10). Defaults are the live ones.

    Cadences are in bars of the decision timeframe: ``decision_every_bars`` = 2 on 4h bars is
    the seed's "8h rebalance" (decisions at bar closes whose epoch time is a multiple of 8 h).
    ``safety_every_bars`` = 1 checks the stops inside every bar on its low/high (the live 30 s
    layer is finer than any bar); N > 1 checks only the close of every Nth bar.
    ``agent_every_bars`` = 1 runs the scorer at each bar close (the 3-minute layer, at most once
    per bar); 0 turns it off.

    ``allow_shorts`` lets a decision source open shorts (USDⓈ-M perpetuals only: a run with it
    and without ``perpetual`` is refused when it starts). ``leverage`` (1× to the hard maximum
    of ``trading.limits``; above 1× perpetual only) does not scale sizes: it sets the isolated
    liquidation price (``trading.leverage``), and entries whose loss exit lies beyond it are
    refused (engine module docstring).
    """

    initial_cash: float = Field(default=10_000.0, gt=0)
    fee_rate: float = Field(default=0.001, ge=0, lt=0.05)
    slippage_bps: float = Field(default=5.0, ge=0, lt=500)
    default_position_pct: float = Field(default=0.20, gt=0, le=1)
    max_position_pct: float = Field(default=0.30, gt=0, le=1)
    max_exposure: float = Field(default=0.70, gt=0, le=1)
    drawdown_halt_pct: float = Field(default=0.12, gt=0, lt=1)
    drawdown_cooloff_hours: float | None = Field(default=None, ge=0)  # opt-in, as live
    min_order_notional: float = Field(default=10.0, ge=0)
    stop_loss_pct: float = 0.04
    trail_activate_pct: float = 0.08
    trail_pct: float = 0.12
    max_drawdown_guard_pct: float = 0.15
    time_stop_hours: float | None = None
    exit_score: float = -0.3
    add_score: float = 0.4
    decision_every_bars: int = Field(default=1, ge=1)
    safety_every_bars: int = Field(default=1, ge=1)
    agent_every_bars: int = Field(default=1, ge=0)
    record_entry_regime: bool = True  # the scorer's entry regime; False = "unknown" always
    perpetual: bool = False  # charge funding from the funding files
    allow_shorts: bool = False  # perpetual only: BUY with side SHORT opens a short
    leverage: float = Field(default=1.0, ge=1.0, le=HARD_MAX_LEVERAGE)  # perpetual only
    close_at_end: bool = True  # close what is open at the last bar's close ("end_of_test")

    def position_params(self, trail_multiplier: float = 1.0) -> PositionParams:
        """The live ``PositionParams`` of a position opened under these parameters."""
        return PositionParams(
            stop_loss_pct=self.stop_loss_pct,
            trail_activate_pct=self.trail_activate_pct,
            trail_pct=self.trail_pct,
            trail_multiplier=trail_multiplier,
            max_drawdown_guard_pct=self.max_drawdown_guard_pct,
            time_stop_hours=self.time_stop_hours,
            fee_rate=self.fee_rate,
            exit_score=self.exit_score,
            add_score=self.add_score,
        )
