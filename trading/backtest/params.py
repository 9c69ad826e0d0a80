"""Parameters of one backtest run: the live settings that matter, plus the bar cadences."""

from __future__ import annotations

import math

from pydantic import Field

from trading.halt import HaltRule
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

    ``rule_exit_plans`` (off by default, as live ``OCW_RULE_EXIT_PLANS``): the rule policy
    writes its exit plan at each entry (``decide(..., plan_params=...)`` with the position
    parameters at the decision) and the engine applies the plan an intent carries as the live
    engine does with ``OCW_EXIT_PLANS``: the plan's stop becomes the position's stop loss from
    the fill, its invalidation exits (``plan_invalidated``), a reached target asks the agent
    layer (engine module docstring). Named as the setting, so ``ocw backtest`` follows it.
    """

    initial_cash: float = Field(default=10_000.0, gt=0)
    fee_rate: float = Field(default=0.001, ge=0, lt=0.05)
    slippage_bps: float = Field(default=5.0, ge=0, lt=500)
    default_position_pct: float = Field(default=0.20, gt=0, le=1)
    max_position_pct: float = Field(default=0.30, gt=0, le=1)
    max_exposure: float = Field(default=0.70, gt=0, le=1)
    drawdown_halt_pct: float = Field(default=0.12, gt=0, lt=1)
    drawdown_cooloff_hours: float | None = Field(default=None, ge=0)  # opt-in, as live
    # after a cool-off lift, entries x this until equity >= the lift's equity x (1 + recover)
    drawdown_restart_scale: float = Field(default=1.0, gt=0, le=1)
    drawdown_restart_recover_pct: float = Field(default=0.0, ge=0, le=10)
    # threshold x clip(vol ratio, lo, hi) (``trading.halt``); both None: a fixed threshold
    drawdown_vol_lo: float | None = Field(default=None, gt=0)
    drawdown_vol_hi: float | None = Field(default=None, gt=0)
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
    rule_exit_plans: bool = False  # the rule policy's exit plans, applied as live (docstring)

    def halt_rule(self) -> HaltRule:
        """The drawdown halt of this run (``trading.halt``)."""
        lo, hi = self.drawdown_vol_lo, self.drawdown_vol_hi
        band = None if lo is None and hi is None else (lo or 0.0, hi or math.inf)
        return HaltRule(
            halt_pct=self.drawdown_halt_pct,
            cooloff_hours=self.drawdown_cooloff_hours,
            restart_scale=self.drawdown_restart_scale,
            restart_recover_pct=self.drawdown_restart_recover_pct,
            vol_band=band,
        )

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
