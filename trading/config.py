"""All configuration in one place: environment variables (prefix ``OCW_``) and ``.env``.

Defaults are the numbers of SPEC.md. Secrets are read here only to tell whether they are set;
they never travel in a workflow or activity payload (``public_dict`` leaves them out).
"""

from __future__ import annotations

import json
import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trading.limits import (
    MAX_SIGNALS_PER_RUN_DEFAULT,
    AgentIntervalS,
    Cash,
    CooloffHours,
    DrawdownFraction,
    FeeRate,
    GuardFraction,
    Leverage,
    Notional,
    PortfolioFraction,
    PositiveHours,
    SafetyIntervalS,
    Score,
    SignalsPerRun,
    SlippageBps,
    Speed,
    StopLossFraction,
    TrailActivateFraction,
    TrailFraction,
)
from trading.llm_pricing import ModelPrice

INTERVAL_SECONDS: dict[str, int] = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
}

SECRET_FIELDS = {
    "binance_api_key",
    "binance_api_secret",
    "api_token",
    "temporal_api_key",
    "db_url",
    "telegram_bot_token",
    "alert_webhook_url",
}


def interval_seconds(interval: str) -> int:
    try:
        return INTERVAL_SECONDS[interval]
    except KeyError:
        raise ValueError(
            f"unknown interval {interval!r}; use one of {', '.join(INTERVAL_SECONDS)}"
        ) from None


class Settings(BaseSettings):
    """The engine's settings. Every field can be set as ``OCW_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="OCW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # paper (default): the paper broker; replay: paper on a replayed market; testnet: Binance's
    # spot testnet / futures demo; live: real orders, refused unless LIVE_TRADING=true
    mode: Literal["live", "testnet", "paper", "replay"] = "paper"
    market: Literal["spot", "futures"] = Field(
        default="spot", description="where orders go (OCW_MARKET): Binance spot or USDⓈ-M futures"
    )
    home: Path = Field(default=Path(".ocw"), description="state directory (OCW_HOME)")

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    # Temporal Cloud or a remote server (docs/deploy.md): an API key, or mTLS with a client
    # certificate; TLS is on whenever either is set (or OCW_TEMPORAL_TLS=true)
    temporal_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OCW_TEMPORAL_API_KEY", "TEMPORAL_API_KEY", "temporal_api_key"
        ),
        description="Temporal Cloud API key (sent as a Bearer token over TLS)",
    )
    temporal_tls: bool | None = Field(
        default=None, description="TLS to Temporal; unset = on when a key or client cert is set"
    )
    temporal_tls_cert: Path | None = Field(default=None, description="mTLS client certificate")
    temporal_tls_key: Path | None = Field(default=None, description="mTLS client private key")
    temporal_tls_ca: Path | None = Field(
        default=None, description="CA of the server's certificate (default: the system's)"
    )
    temporal_tls_server_name: str | None = Field(
        default=None, description="the name in the server's certificate, if not the host"
    )
    trading_task_queue: str = "ocw-trading"
    market_task_queue: str = "ocw-market"
    account: str = "paper"

    # market
    symbols: Annotated[list[str], NoDecode] = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"]
    decision_interval: str = "4h"
    intervals: Annotated[list[str], NoDecode] = ["15m", "1h", "4h"]  # streamed (SPEC §1)
    binance_ws_url: str = "wss://stream.binance.com:9443"
    speed: Speed = Field(default=1.0, description="replay speed factor; 1 = real time")
    min_timer_s: float = Field(default=1.0, gt=0, description="dev server timer granularity")

    # portfolio and risk (SPEC §3, §8); bounds in trading/limits.py, shared with the payloads
    initial_cash: Cash = 10_000.0
    max_position_pct: PortfolioFraction = 0.30
    max_exposure: PortfolioFraction = 0.70
    drawdown_halt_pct: DrawdownFraction = 0.12
    drawdown_cooloff_hours: CooloffHours | None = Field(
        default=None, description="lift an automatic halt after this many market hours"
    )
    min_order_notional: Notional = 10.0
    default_position_pct: PortfolioFraction = 0.20
    max_signals_per_run: SignalsPerRun = Field(
        default=MAX_SIGNALS_PER_RUN_DEFAULT,
        description="DecisionWorkflow continues-as-new after this many signals (Temporal: 10,000)",
    )

    # Temporal UI: the engine's search attributes (registered by the worker or `ocw setup`)
    search_attributes: bool = True

    # dashboard and REST API (`ocw dashboard`): read-only unless OCW_API_TOKEN is set
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8765, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        default=None, description="enables the control endpoints (Bearer token)"
    )

    # execution
    fee_rate: FeeRate = 0.001
    slippage_bps: SlippageBps = 5.0
    live_trading: bool = Field(
        default=False,
        validation_alias=AliasChoices("LIVE_TRADING", "OCW_LIVE_TRADING", "live_trading"),
        description="LIVE_TRADING=true (or OCW_LIVE_TRADING) to send real orders in live mode",
    )
    binance_spot_url: str | None = Field(
        default=None, description="base URL of the spot API for orders (a proxy or a simulator)"
    )
    binance_futures_url: str | None = Field(
        default=None, description="base URL of the USDⓈ-M futures API for orders"
    )
    order_type: Literal["limit_ioc", "market"] = Field(
        default="limit_ioc", description="exchange orders: marketable limit IOC, or market"
    )
    limit_cap_pct: float = Field(
        default=0.001, ge=0, le=0.05, description="an IOC order's limit: last price ± this"
    )
    recv_window_ms: int = Field(
        default=10_000, ge=1_000, le=60_000, description="Binance recvWindow of signed requests"
    )
    futures_leverage: Leverage = Field(
        default=1, description="USDⓈ-M leverage set per symbol (hard maximum in trading/limits.py)"
    )
    futures_margin_mode: Literal["isolated", "cross"] = "isolated"
    shorts: bool = Field(
        default=False,
        description="short entries (SHORT / COVER) on USDⓈ-M futures: needs OCW_MARKET=futures; "
        "spot is long-only",
    )
    exchange_stops: bool = Field(
        default=True, description="testnet / live: a protective stop at the exchange per position"
    )
    reconcile_every_s: float = Field(
        default=300.0, ge=10, le=86_400, description="exchange reconciliation interval"
    )

    # positions (SPEC §4)
    safety_interval_s: SafetyIntervalS = 30.0
    agent_interval_s: AgentIntervalS = 180.0
    stop_loss_pct: StopLossFraction = 0.04
    trail_activate_pct: TrailActivateFraction = 0.08
    trail_pct: TrailFraction = 0.12
    max_drawdown_guard_pct: GuardFraction = 0.15
    time_stop_hours: PositiveHours | None = None
    exit_score: Score = -0.3
    add_score: Score = 0.4

    # LLM trader (SPEC §3). Auth comes from ANTHROPIC_API_KEY, or ANTHROPIC_BASE_URL with
    # ANTHROPIC_AUTH_TOKEN, read by the activity only; nothing secret is a setting here.
    llm_enabled: bool | None = Field(
        default=None, description="None: use the LLM when credentials are in the environment"
    )
    llm_model: str = "claude-sonnet-4-6"
    llm_max_tokens: int = Field(default=1200, gt=0, description="max output tokens of decide")
    llm_eval_max_tokens: int = Field(default=300, gt=0, description="of evaluate_position")
    llm_timeout_s: float = Field(default=60.0, gt=0, description="one HTTP call, seconds")
    llm_temperature: float = Field(default=0.0, ge=0, le=1)
    llm_exit_plan_required: bool = Field(
        default=True,
        description="an LLM's BUY without a valid exit plan (stop, target, invalidation) is rejected",
    )
    llm_daily_budget_usd: float = Field(default=0.50, ge=0, description="enforced by workflow")
    llm_run_budget_usd: float | None = Field(default=5.0, ge=0, description="per recorded run")
    llm_run_id: str = "default"
    llm_prices: dict[str, ModelPrice] = Field(default_factory=dict)  # JSON overrides, $/MTok
    llm_training_cutoffs: dict[str, date] = Field(default_factory=dict)  # JSON overrides
    llm_cache_mode: Literal["off", "record", "replay", "record_replay"] = "off"
    llm_prompt_cache: Literal["always", "adaptive", "off"] = "adaptive"  # Anthropic prompt cache
    llm_cache_path: Path | None = None  # default: OCW_HOME/llm.db
    llm_position_eval_interval_s: float = Field(  # the scorer covers the 3-min ticks between
        default=14400.0, gt=0, description="LLM evaluate_position at most this often per position"
    )
    llm_breaker_failures: int = Field(default=3, ge=1, description="consecutive failures to open")
    llm_breaker_open_s: float = Field(default=900.0, ge=0, description="open this long, then probe")

    # adaptive gate (SPEC §1); durations in market seconds unless said otherwise
    gate_z_threshold: float = Field(default=2.5, gt=0)
    gate_window: int = Field(default=50, ge=3)
    gate_min_samples: int = Field(default=3, ge=2)
    gate_mute_s: float = Field(default=600.0, ge=0)
    gate_cooldown_s: float = Field(default=60.0, ge=0)
    gate_timer_min_s: int = Field(default=300, ge=1)
    gate_timer_max_s: int = Field(default=14_400, ge=1)
    gate_provider_poll_s: float = Field(default=60.0, gt=0, description="funding/OI reads")
    gate_sync_poll_s: float = Field(default=30.0, gt=0, description="wall s, scaled by speed")
    watchdog_s: float = Field(default=300.0, gt=0, description="wall s without a frame, scaled")
    listener_status_s: float = Field(default=5.0, gt=0, description="wall s between writes")
    wake_batch_s: float = Field(  # live closes of several symbols arrive frame by frame
        default=2.0, ge=0, description="wall s to gather reasons into one wake, scaled"
    )

    # sentiment feeds (optional; unreachable = marked missing); cadences in wall seconds
    sentiment_enabled: bool = True
    sentiment_timeout_s: float = Field(default=10.0, gt=0)
    fear_greed_url: str = "https://api.alternative.me/fng/?limit=1&format=json"
    fear_greed_every_s: float = Field(default=3600.0, gt=0)
    stablecoins_url: str = "https://stablecoins.llama.fi/stablecoins?includePrices=false"
    stablecoins_every_s: float = Field(default=21_600.0, gt=0)
    trending_url: str = "https://api.coingecko.com/api/v3/search/trending"
    trending_every_s: float = Field(default=1800.0, gt=0)
    etf_flows_url: str | None = Field(default=None, description="JSON, see docs/gate.md")
    etf_flows_every_s: float = Field(default=21_600.0, gt=0)

    # exchange data (SPEC §1, §7): public market data, no API key; see docs/market-data.md
    market_type: Literal["spot", "futures"] = "spot"  # klines from spot or USDⓈ-M futures
    binance_futures_ws_url: str = "wss://fstream.binance.com"  # futures klines, forceOrder
    binance_rest_url: str = "https://api.binance.com"
    binance_futures_rest_url: str = "https://fapi.binance.com"  # derivatives: always mainnet
    max_connection_s: float = Field(default=84_600.0, gt=0, description="planned WS reconnect")
    rest_weight_limit_spot: int = Field(default=6000, gt=0, description="weight per minute")
    rest_weight_limit_futures: int = Field(default=2400, gt=0, description="weight per minute")
    rest_throttle_fraction: float = Field(default=0.9, gt=0, le=1)
    bootstrap_bars: int = Field(default=300, ge=1, le=500, description="per stream at start")
    daily_bars: int = Field(default=400, ge=0, le=500, description="1d bars for the regime fit")
    derivatives_enabled: bool = True
    derivatives_cadence_s: float = Field(default=300.0, gt=0)
    derivatives_fast_cadence_s: float = Field(default=60.0, gt=0, description="while extreme")
    derivatives_stale_s: float = Field(default=900.0, gt=0)
    extreme_funding_abs: float = Field(default=0.0005, gt=0, description="per 8 h")
    extreme_oi_change_abs: float = Field(default=0.05, gt=0, description="1 h, fraction")
    extreme_taker_ratio: float = Field(default=1.5, gt=1, description="and its inverse")
    extreme_ls_z_abs: float = Field(default=2.5, gt=0)
    extreme_basis_abs: float = Field(default=1.0, gt=0, description="annualised, fraction")
    liquidation_cascade_usd: float = Field(default=5_000_000.0, gt=0, description="1 h total")
    liquidation_watchdog_s: float = Field(default=1800.0, gt=0, description="quiet is normal")

    # regimes and learner (SPEC §5-6)
    fred_dir: Path | None = Field(
        default=None, description="FRED CSV folder (OCW_FRED_DIR); default: the shared data"
    )
    macro_cache_hours: float = Field(default=6.0, ge=0, description="FRED fetch cache")
    macro_lag_days: dict[str, int] = Field(
        default_factory=lambda: {"T10Y2Y": 1, "T10YIE": 1, "UNRATE": 40, "CPIAUCSL": 47},
        description="days after its date that a FRED observation may be used",
    )
    regime_symbol: str = "BTC/USDT"
    hmm_min_days: int = Field(default=120, ge=30)
    hmm_n_init: int = Field(default=3, ge=1)
    hmm_seed: int = 7
    hmm_bic_sample_divisor: float = Field(default=14.0, ge=1.0)
    learner_prior: float = Field(default=2.0, gt=0, description="Beta(prior, prior)")
    learner_decay: float = Field(default=0.95, gt=0, le=1)
    learner_min_weight: float = Field(default=0.05, ge=0)
    learner_min_regime_trades: int = Field(default=3, ge=0)
    learner_warmup_trades: int = Field(default=5, ge=0)
    learner_max_seen_ids: int = Field(default=2000, ge=1)

    # the trading worker's sticky queue: after a worker dies, its cached workflows' tasks
    # move to the normal queue after this long (the SDK's default is 10 s; every position's
    # safety check waits that long after a crash)
    sticky_schedule_to_start_s: float = Field(default=4.0, gt=0, le=60)
    # the trading worker's sticky cache and slots: every open position is a cached workflow
    # (issue 14 measured cache evictions past ~1,000 positions at the SDK's default of 1,000;
    # a cached position costs ~0.16 MB, docs/scaling.md): room for 2,000 and the rest
    worker_max_cached_workflows: int = Field(default=2500, ge=10, le=100_000)
    worker_max_concurrent_workflow_tasks: int | None = Field(default=None, ge=1, le=10_000)
    worker_max_concurrent_activities: int = Field(default=20, ge=1, le=10_000)
    worker_max_concurrent_workflow_task_polls: int | None = Field(
        default=None, ge=1, le=1_000, description="workflow task pollers (SDK default 5)"
    )
    # a safety check reads the listener's price board through a local activity and the
    # scorer runs locally: one workflow task per check instead of two and a cross-process
    # activity (issue 14, activities/price_board.py); off = every check asks the listener
    lean_ticks: bool = Field(
        default=True, description="safety prices from the price board, scorer as local activity"
    )
    price_board_every_s: float = Field(
        default=0.5, gt=0, le=10, description="how often the listener writes the price board"
    )
    exit_plans: bool = Field(
        default=True,
        description="an entry's exit plan is used: its stop is the position's, its target and "
        "invalidation wake the position's agent layer (docs/architecture.md)",
    )
    rule_exit_plans: bool = Field(
        default=False,
        description="the rule policy writes exit plans too (off until the walk-forward in "
        "docs/backtests.md shows they help; with it off the backtests match live trading)",
    )
    decision_board_every_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="how often the listener writes the decision board between wakes (it also "
        "writes it just before each wake it sends)",
    )

    @property
    def rule_plans_apply(self) -> bool:
        """The rule policy's exit plans apply live only while exit plans apply at all."""
        return self.exit_plans and self.rule_exit_plans

    feature_board_every_s: float = Field(
        default=2.0, gt=0, le=60, description="how often the listener writes the feature board"
    )
    # agent vs agent (issue 15, workers/arena.py): who decides for this account, the extra
    # system-prompt text of its Claude, its own paper broker file, the accounts a listener wakes
    policy: str = Field(
        default="cash",
        description="who decides when Claude does not: cash (opens nothing; the default, since "
        "no policy passed the walk-forward's corrections, docs/backtests.md), rule (SPEC §7's "
        "rule policy), or family:<name>[:<param>=<value>...] (trading/policies; daily bars)",
    )
    llm_prompt_extra: str = Field(
        default="",
        max_length=8000,
        description="text appended to Claude's system prompt for this account (an arena agent's "
        "prompt file); constant per account, so the prompt cache keeps working",
    )
    agent: str = Field(
        default="", max_length=200, description="the account's label in an arena (shown by status)"
    )
    paper_broker_path: Path | None = Field(
        default=None, description="the paper broker's file (default OCW_HOME/paper_broker.db)"
    )
    wake_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more accounts the listener wakes from the same feed, each with its own "
        "gate (an arena; comma list)",
    )
    bars_board_every_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="how often the listener checks its daily bars "
        "for the bars board (families; also before each wake)",
    )

    # operations (docs/deploy.md): the journal's database, metrics, health and alerts
    db_url: SecretStr | None = Field(
        default=None,
        description="journal, learner, LLM store, alert log and price board: "
        "postgresql://user:pass@host/db; "
        "unset = SQLite files in OCW_HOME",
    )
    worker_metrics: str | None = Field(
        default=None, description="host:port of the trading worker's Prometheus endpoint"
    )
    listener_metrics: str | None = Field(
        default=None, description="host:port of the listener's Prometheus endpoint"
    )
    monitor_every_s: float = Field(
        default=30.0, ge=5, le=3600, description="health checks of the listener and worker"
    )
    telegram_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OCW_TELEGRAM_BOT_TOKEN", "TELEGRAM_BOT_TOKEN", "telegram_bot_token"
        ),
    )
    telegram_chat_id: str | None = Field(default=None, description="where alerts go")
    telegram_api_url: str = Field(
        default="https://api.telegram.org", description="the Bot API's base URL"
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None, description="alerts as JSON POSTs to this URL"
    )
    alert_kinds: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["all"], description="which alerts to send (comma list or all)"
    )
    alert_max_per_hour: int = Field(
        default=30, ge=1, le=3600, description="per destination; the rest are summarised"
    )
    alert_stale_feed_s: float = Field(
        default=300.0, gt=0, description="a feed this old raises a stale-feed alert"
    )

    # upgrades (docs/upgrades.md): opt-in Worker Versioning of the trading worker
    worker_deployment_name: str | None = Field(
        default=None,
        description="Worker Versioning: the trading worker's Worker Deployment, e.g. ocw-trading "
        "(no '.'); set together with OCW_WORKER_BUILD_ID; unset = unversioned",
    )
    worker_build_id: str | None = Field(
        default=None,
        description="Worker Versioning: this build's id (git sha, date); "
        "set together with OCW_WORKER_DEPLOYMENT_NAME",
    )

    # secrets: read from the environment by activities only
    binance_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("BINANCE_API_KEY", "OCW_BINANCE_API_KEY", "binance_api_key"),
    )
    binance_api_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "BINANCE_SECRET_KEY", "OCW_BINANCE_API_SECRET", "binance_api_secret"
        ),
    )

    @field_validator("symbols", "intervals", "alert_kinds", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        """Accept ``BTC/USDT,ETH/USDT`` as well as a JSON list from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("wake_accounts", mode="before")
    @classmethod
    def _split_accounts(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            base, sep, quote = symbol.partition("/")
            if not sep or not base or not quote:
                raise ValueError(f"symbol {symbol!r} must look like BASE/QUOTE, e.g. BTC/USDT")
        return value

    @field_validator("decision_interval")
    @classmethod
    def _check_interval(cls, value: str) -> str:
        interval_seconds(value)
        return value

    @field_validator("intervals")
    @classmethod
    def _check_intervals(cls, value: list[str]) -> list[str]:
        for interval in value:
            interval_seconds(interval)
        return value

    @model_validator(mode="after")
    def _shorts_need_futures(self) -> Settings:
        if self.shorts and self.market != "futures":
            raise ValueError(
                "OCW_SHORTS=true needs OCW_MARKET=futures: spot is long-only (a spot account "
                "cannot sell what it does not hold); set OCW_MARKET=futures or OCW_SHORTS=false"
            )
        return self

    # ------------------------------------------------------------ derived

    @property
    def decision_workflow_id(self) -> str:
        return f"ocw-decision-{self.account}"

    @property
    def stream_intervals(self) -> list[str]:
        """Intervals the listener subscribes to: configured ones plus the decision interval."""
        out = list(dict.fromkeys([*self.intervals, self.decision_interval]))
        return sorted(out, key=interval_seconds)

    @property
    def kline_ws_url(self) -> str:
        """The kline stream of the configured market type."""
        return self.binance_ws_url if self.market_type == "spot" else self.binance_futures_ws_url

    def scaled(self, seconds: float) -> float:
        """A wall-clock duration on the replay clock, never below the server's timer grain."""
        return max(self.min_timer_s, seconds / self.speed)

    def paths(self) -> dict[str, Path]:
        home = self.home
        return {
            "home": home,
            "temporal_db": home / "temporal.db",
            "broker_db": self.paper_broker_path or home / "paper_broker.db",
            "journal_db": home / "journal.db",
            "llm_db": self.llm_cache_path or home / "llm.db",
            "logs": home / "logs",
            "rest_pause": home / "rest_pause.json",  # 418 / 429 pauses shared by processes
        }

    def public_dict(self) -> dict[str, object]:
        """Settings safe to print or log: secrets reduced to whether they are set."""
        data = self.model_dump(mode="json", exclude=SECRET_FIELDS)
        for name in SECRET_FIELDS:
            data[f"{name}_set"] = getattr(self, name) is not None
        data["anthropic_api_key_set"] = bool(os.environ.get("ANTHROPIC_API_KEY"))
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
