"""Turns Settings into the payloads the workflows start with (durations on the replay clock)."""

from __future__ import annotations

from activities.learner_store import learner_params_from
from activities.llm_agent import llm_configured
from trading.circuit_breaker import BreakerParams
from trading.config import Settings
from trading.models import PositionParams
from trading.state import DecisionInput, EngineConfig, LLMSettings


def llm_enabled(settings: Settings) -> bool:
    """OCW_LLM_ENABLED decides when set; otherwise credentials in the environment do.

    Read in the process that builds the config (listener, CLI); the trading worker reads the
    same `.env`. If they disagree the LLM activity fails as not configured and the circuit
    breaker hands the decisions to the rule policy.
    """
    if settings.llm_enabled is not None:
        return settings.llm_enabled
    return llm_configured()


def engine_config(settings: Settings) -> EngineConfig:
    """The account's configuration from the trading side's settings. Durations stay at
    speed 1: the workflow scales them by ``speed`` where it uses them."""
    return EngineConfig(
        account=settings.account,
        mode=settings.mode,
        symbols=list(settings.symbols),
        decision_interval=settings.decision_interval,
        trading_task_queue=settings.trading_task_queue,
        market_task_queue=settings.market_task_queue,
        speed=settings.speed,
        min_timer_s=settings.min_timer_s,
        max_signals_per_run=settings.max_signals_per_run,
        exchange_stops=settings.mode in ("testnet", "live") and settings.exchange_stops,
        search_attributes=settings.search_attributes,
        lean_ticks=settings.lean_ticks,
        exit_plans=settings.exit_plans,
        rule_exit_plans=settings.rule_plans_apply,
        shorts=settings.shorts and settings.market == "futures",
        leverage=settings.futures_leverage,
        paper_funding=settings.market == "futures" and settings.mode in ("paper", "replay"),
        initial_cash=settings.initial_cash,
        max_position_pct=settings.max_position_pct,
        max_exposure=settings.max_exposure,
        drawdown_halt_pct=settings.drawdown_halt_pct,
        drawdown_cooloff_hours=settings.drawdown_cooloff_hours,
        min_order_notional=settings.min_order_notional,
        default_position_pct=settings.default_position_pct,
        position=PositionParams(
            stop_loss_pct=settings.stop_loss_pct,
            trail_activate_pct=settings.trail_activate_pct,
            trail_pct=settings.trail_pct,
            max_drawdown_guard_pct=settings.max_drawdown_guard_pct,
            time_stop_hours=settings.time_stop_hours,
            fee_rate=settings.fee_rate,
            safety_interval_s=settings.safety_interval_s,
            agent_interval_s=settings.agent_interval_s,
            exit_score=settings.exit_score,
            add_score=settings.add_score,
        ),
        learner=learner_params_from(settings),
        regime_symbol=settings.regime_symbol,
        policy=settings.policy,
        agent=settings.agent,
        llm=LLMSettings(
            enabled=llm_enabled(settings),
            daily_budget_usd=settings.llm_daily_budget_usd,
            breaker=BreakerParams(
                failure_threshold=settings.llm_breaker_failures,
                open_ms=int(settings.llm_breaker_open_s * 1000),
            ),
            position_eval_interval_s=settings.llm_position_eval_interval_s,
            call_timeout_s=settings.llm_timeout_s,
        ),
    )


def decision_input(settings: Settings) -> DecisionInput:
    return DecisionInput(config=engine_config(settings))
