"""Turns Settings into the payloads the workflows start with (durations on the replay clock)."""

from __future__ import annotations

from trading.config import Settings
from trading.models import PositionParams
from trading.state import DecisionInput, EngineConfig


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        account=settings.account,
        symbols=list(settings.symbols),
        decision_interval=settings.decision_interval,
        trading_task_queue=settings.trading_task_queue,
        market_task_queue=settings.market_task_queue,
        speed=settings.speed,
        initial_cash=settings.initial_cash,
        max_position_pct=settings.max_position_pct,
        max_exposure=settings.max_exposure,
        drawdown_halt_pct=settings.drawdown_halt_pct,
        min_order_notional=settings.min_order_notional,
        default_position_pct=settings.default_position_pct,
        position=PositionParams(
            stop_loss_pct=settings.stop_loss_pct,
            trail_activate_pct=settings.trail_activate_pct,
            trail_pct=settings.trail_pct,
            max_drawdown_guard_pct=settings.max_drawdown_guard_pct,
            time_stop_hours=settings.time_stop_hours,
            fee_rate=settings.fee_rate,
            safety_interval_s=settings.scaled(settings.safety_interval_s),
            agent_interval_s=settings.scaled(settings.agent_interval_s),
            exit_score=settings.exit_score,
            add_score=settings.add_score,
        ),
    )


def decision_input(settings: Settings) -> DecisionInput:
    return DecisionInput(config=engine_config(settings))
