"""The LLM trader's activities: Claude decides (SPEC §3) and re-evaluates positions (SPEC §4).

Each activity builds its prompt, calls the Messages API once (Temporal owns the retries:
``max_retries=0`` on the client), validates the answer with ``trading.agent_contract`` and
returns only the validated result with its token and cost accounting. Full prompts and raw
answers go to the call journal (``activities.llm_cache.LLMStore``), never into history.

Errors are classified for the workflow: transient trouble (429, 529, 5xx, timeouts, connection)
is raised as a retryable ``ApplicationError``; auth, bad requests, an answer without usable JSON,
a replay miss or a spent run budget are non-retryable, each with its own type. Credentials are
read from the environment here and nowhere else; no message built here contains them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import anthropic
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm_cache import CachedAnswer, CacheMode, CallRecord, LLMStore, cache_key
from trading.agent_contract import (
    DECISION_TOOL,
    EVALUATION_TOOL,
    PROMPT_VERSION,
    AgentAnswerError,
    AgentLimits,
    DecisionLimits,
    answer_payload,
    system_prompt,
    tool_definitions,
    validate_decisions,
    validate_verdict,
)
from trading.config import Settings
from trading.llm_pricing import ModelPrice, TokenUsage, before_cutoff, cost_usd, price_for
from trading.models import AgentDecision, LLMCallInfo
from trading.snapshot import build_snapshot, render_position_prompt, render_prompt
from trading.state import DecideRequest, EvaluateRequest, PositionVerdict
from workflows import activity_api as api

log = logging.getLogger(__name__)

ENV_API_KEY = "ANTHROPIC_API_KEY"
ENV_BASE_URL = "ANTHROPIC_BASE_URL"
ENV_AUTH_TOKEN = "ANTHROPIC_AUTH_TOKEN"
RETRY_AFTER_MAX_S = 60.0
MAX_NOTES = 20  # notes travel in the workflow history: keep them few
CACHE_TTL_S = 290.0  # Anthropic's 5-minute prompt cache, with a margin
PromptCache = Literal["always", "adaptive", "off"]

# Error types (ApplicationError.type); the non-retryable ones are listed in activity_api.
NOT_CONFIGURED = "LLMNotConfigured"
INVALID_ANSWER = "InvalidAgentAnswer"
REPLAY_MISS = "LLMReplayMiss"
BUDGET_EXCEEDED = "LLMBudgetExceeded"


def llm_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment holds credentials: an API key, or a base URL with a token."""
    env = os.environ if env is None else env
    if env.get(ENV_API_KEY, "").strip():
        return True
    return bool(env.get(ENV_BASE_URL, "").strip() and env.get(ENV_AUTH_TOKEN, "").strip())


@dataclass(frozen=True, repr=False)
class _Credentials:
    """Read from the environment at call time; ``repr`` shows nothing secret."""

    api_key: str | None
    auth_token: str | None
    base_url: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> _Credentials | None:
        if not llm_configured(env):
            return None
        key = env.get(ENV_API_KEY, "").strip() or None
        token = env.get(ENV_AUTH_TOKEN, "").strip() or None
        base = env.get(ENV_BASE_URL, "").strip() or None
        return cls(api_key=key, auth_token=None if key else token, base_url=base)

    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.auth_token) if s]

    def __repr__(self) -> str:
        return f"_Credentials(base_url={self.base_url!r}, key_set={self.api_key is not None})"


@dataclass(frozen=True)
class LLMConfig:
    """What the activities need of the settings (no secret)."""

    limits: AgentLimits
    model: str = "claude-sonnet-4-6"
    max_tokens: int = 1200
    eval_max_tokens: int = 300
    timeout_s: float = 60.0
    temperature: float = 0.0
    cache_mode: CacheMode = CacheMode.OFF
    run_id: str = "default"
    run_budget_usd: float | None = 5.0
    prompt_cache: PromptCache = "adaptive"
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    training_cutoffs: dict[str, date] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: Settings) -> LLMConfig:
        return cls(
            limits=AgentLimits(
                universe=list(s.symbols),
                max_position_pct=s.max_position_pct,
                max_exposure=s.max_exposure,
                stop_loss_pct=s.stop_loss_pct,
                trail_activate_pct=s.trail_activate_pct,
                trail_pct=s.trail_pct,
                drawdown_halt_pct=s.drawdown_halt_pct,
                decision_interval=s.decision_interval,
            ),
            model=s.llm_model,
            max_tokens=s.llm_max_tokens,
            eval_max_tokens=s.llm_eval_max_tokens,
            timeout_s=s.llm_timeout_s,
            temperature=s.llm_temperature,
            cache_mode=CacheMode(s.llm_cache_mode),
            run_id=s.llm_run_id,
            run_budget_usd=s.llm_run_budget_usd,
            prompt_cache=s.llm_prompt_cache,
            prices=dict(s.llm_prices),
            training_cutoffs=dict(s.llm_training_cutoffs),
        )


@dataclass
class _Answer:
    """One answer, fresh or replayed, before validation."""

    content: list[dict[str, Any]]
    usage: TokenUsage
    cost_usd: float
    recorded_cost_usd: float
    replayed: bool
    stop_reason: str | None
    latency_ms: int


# ---------------------------------------------------------------- error classification

_TYPE_CHARS = re.compile(r"[^a-z_]")


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _error_type_of(body: object) -> str:
    """Anthropic's error type (``overloaded_error``) from a body, sanitised; never its message."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return _TYPE_CHARS.sub("", err["type"].lower())[:40]
    return "unknown"


def _retry_after(exc: anthropic.APIStatusError) -> timedelta | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or seconds < 0:
        return None
    return timedelta(seconds=min(seconds, RETRY_AFTER_MAX_S))


def classify_error(exc: Exception, secrets: list[str]) -> ApplicationError:
    """An SDK exception as a Temporal error whose text holds status and type only."""
    if isinstance(exc, anthropic.APITimeoutError):
        return ApplicationError("anthropic call timed out", type="LLMTimeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return ApplicationError("anthropic connection failed", type="LLMConnectionError")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = _error_type_of(exc.body)
        text = _redact(f"anthropic HTTP {status} ({kind})", secrets)
        if status in (401, 403):
            return ApplicationError(text, type="LLMAuthError", non_retryable=True)
        if status == 404:
            return ApplicationError(text, type="LLMNotFound", non_retryable=True)
        if status == 429:
            return ApplicationError(text, type="LLMRateLimited", next_retry_delay=_retry_after(exc))
        if status == 529:
            return ApplicationError(text, type="LLMOverloaded")
        if status >= 500 or status in (408, 409):
            return ApplicationError(text, type="LLMServerError")
        return ApplicationError(text, type="LLMBadRequest", non_retryable=True)
    return ApplicationError(
        _redact(f"anthropic call failed: {type(exc).__name__}", secrets), type="LLMError"
    )


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


# ---------------------------------------------------------------- the activities


class LLMActivities:
    """Claude as the trader. ``env`` defaults to ``os.environ`` (tests pass their own)."""

    def __init__(
        self,
        config: LLMConfig,
        store: LLMStore,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._env = env
        self._client: anthropic.AsyncAnthropic | None = None
        self._client_creds: _Credentials | None = None
        self._system = system_prompt(config.limits)
        self._tools = tool_definitions(config.limits)
        self._prefix = self._system + json.dumps(self._tools, sort_keys=True)
        self._price = price_for(config.model, config.prices)  # unknown model fails at start
        self._warned_cutoff = False
        self._last_call_s: float | None = None  # wall clock of the last API call

    def all(self) -> list:
        return [self.llm_decide, self.llm_evaluate_position]

    @property
    def system_text(self) -> str:
        return self._system

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self._tools

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------ activities

    @activity.defn(name=api.LLM_DECIDE)
    async def llm_decide(self, req: DecideRequest) -> AgentDecision:
        """Claude's decisions on the request's snapshot, validated and clamped per decision."""
        return await self.decide(req, _attempt())

    async def decide(self, req: DecideRequest, attempt: int = 1) -> AgentDecision:
        """``llm_decide`` without an activity context (the in-process LLM backtest calls it);
        the caller owns retries and says which ``attempt`` this is. Raises ApplicationError."""
        snapshot = build_snapshot(req, req.context, max_exposure=req.max_exposure)
        prompt = f"TASK: decide (call {DECISION_TOOL})\n" + render_prompt(snapshot)
        call_id = f"{req.decision_id}:decide:{attempt}:{uuid.uuid4().hex[:8]}"
        answer, key = await self._answer("decide", prompt, req.market.as_of_ms, call_id)
        lim = DecisionLimits(
            universe=snapshot.universe,
            held={p.symbol for p in req.account_view.positions},
            max_position_pct=req.max_position_pct,
        )
        try:
            payload = answer_payload(answer.content, DECISION_TOOL, "decisions")
            decision, notes = validate_decisions(payload, lim)
        except AgentAnswerError as exc:
            await self._journal(call_id, "decide", key, req.market.as_of_ms, prompt, answer, exc)
            raise self._invalid(exc, call_id, answer, req.market.as_of_ms, attempt) from None
        await self._journal(call_id, "decide", key, req.market.as_of_ms, prompt, answer, None)
        info = self._info(call_id, answer, req.market.as_of_ms, notes, attempt)
        decision = decision.model_copy(update={"llm": info})
        acted = [f"{d.ticker} {d.action}" for d in decision.decisions if d.action != "HOLD"]
        log.info(
            "llm decision %s: %s; rejected %d; %d+%d tokens (cache %d/%d) $%.4f%s",
            req.decision_id,
            acted or "hold",
            len(decision.rejected),
            info.input_tokens,
            info.output_tokens,
            info.cache_read_tokens,
            info.cache_creation_tokens,
            info.cost_usd,
            " (replayed)" if info.replayed else "",
        )
        for reason in decision.rejected:
            log.info("llm decision %s rejected: %s", req.decision_id, reason)
        return decision

    @activity.defn(name=api.LLM_EVALUATE_POSITION)
    async def llm_evaluate_position(self, req: EvaluateRequest) -> PositionVerdict:
        """Claude's HOLD / EXIT / ADD on one position (SPEC §4 agent layer)."""
        pos = req.position
        prompt = f"TASK: evaluate position (call {EVALUATION_TOOL})\n" + render_position_prompt(
            req, req.context
        )
        call_id = f"{pos.position_id}:eval:{pos.agent_checks}:{_attempt()}:{uuid.uuid4().hex[:8]}"
        kind = "evaluate_position"
        answer, key = await self._answer(kind, prompt, pos.last_price_ms, call_id)
        try:
            payload = answer_payload(answer.content, EVALUATION_TOOL, "verdict")
            verdict, notes = validate_verdict(payload)
        except AgentAnswerError as exc:
            await self._journal(call_id, kind, key, pos.last_price_ms, prompt, answer, exc)
            raise self._invalid(exc, call_id, answer, pos.last_price_ms) from None
        await self._journal(call_id, kind, key, pos.last_price_ms, prompt, answer, None)
        info = self._info(call_id, answer, pos.last_price_ms, notes)
        log.info(
            "llm position %s: %s (confidence %.2f) $%.4f",
            pos.position_id,
            verdict.verdict,
            verdict.confidence,
            info.cost_usd,
        )
        return PositionVerdict(
            verdict=verdict.verdict,
            score=verdict.score,
            components={"confidence": verdict.confidence},
            reasons=[verdict.reasoning] if verdict.reasoning else [],
            source="llm",
            llm=info,
        )

    # ------------------------------------------------------------ one call

    def _credentials(self) -> _Credentials:
        env = os.environ if self._env is None else self._env
        creds = _Credentials.from_env(env)
        if creds is None:
            raise ApplicationError(
                f"no LLM credentials: set {ENV_API_KEY}, or {ENV_BASE_URL} with {ENV_AUTH_TOKEN}",
                type=NOT_CONFIGURED,
                non_retryable=True,
            )
        return creds

    def _client_for(self, creds: _Credentials) -> anthropic.AsyncAnthropic:
        if self._client is None or self._client_creds != creds:
            self._client = anthropic.AsyncAnthropic(
                api_key=creds.api_key,
                auth_token=creds.auth_token,
                base_url=creds.base_url,
                max_retries=0,  # Temporal's retry policy owns retries
                timeout=httpx.Timeout(
                    self.config.timeout_s, connect=min(10.0, self.config.timeout_s)
                ),
            )
            self._client_creds = creds
        return self._client

    async def _answer(
        self, kind: str, prompt: str, market_time_ms: int, call_id: str
    ) -> tuple[_Answer, str]:
        """A stored answer (replay) or a fresh one from the API (recorded when asked)."""
        cfg = self.config
        key = cache_key(kind, cfg.model, PROMPT_VERSION, self._prefix, prompt)
        mode = cfg.cache_mode
        if mode in (CacheMode.REPLAY, CacheMode.RECORD_REPLAY):
            cached = await asyncio.to_thread(self.store.get, key)
            if cached is not None:
                usage = TokenUsage.model_validate(cached.usage)
                return (
                    _Answer(cached.content, usage, 0.0, cached.cost_usd, True, None, 0),
                    key,
                )
            if mode is CacheMode.REPLAY:
                raise ApplicationError(
                    f"replay cache has no {kind} answer for key {key[:16]}",
                    type=REPLAY_MISS,
                    non_retryable=True,
                )
        recorded = mode in (CacheMode.RECORD, CacheMode.RECORD_REPLAY)
        if recorded and cfg.run_budget_usd is not None:
            spent = await asyncio.to_thread(self.store.run_spent, cfg.run_id)
            if spent >= cfg.run_budget_usd:
                raise ApplicationError(
                    f"run {cfg.run_id!r} spent ${spent:.4f} of its ${cfg.run_budget_usd:.2f} budget",
                    type=BUDGET_EXCEEDED,
                    non_retryable=True,
                )
        creds = self._credentials()
        answer = await self._call_api(kind, prompt, creds, call_id, key, market_time_ms)
        if recorded:
            stored = CachedAnswer(
                key=key,
                kind=kind,
                model=cfg.model,
                content=answer.content,
                usage=answer.usage.model_dump(),
                cost_usd=answer.cost_usd,
            )
            await asyncio.to_thread(self.store.put, stored)
            await asyncio.to_thread(self.store.add_run_spend, cfg.run_id, answer.cost_usd)
        return answer, key

    async def _call_api(
        self,
        kind: str,
        prompt: str,
        creds: _Credentials,
        call_id: str,
        key: str,
        market_time_ms: int,
    ) -> _Answer:
        cfg = self.config
        tool = DECISION_TOOL if kind == "decide" else EVALUATION_TOOL
        max_tokens = cfg.max_tokens if kind == "decide" else cfg.eval_max_tokens
        client = self._client_for(creds)
        started = time.monotonic()
        try:
            message = await client.messages.create(
                model=cfg.model,
                max_tokens=max_tokens,
                temperature=cfg.temperature,
                system=self._system_blocks(),
                tools=self._tools,  # type: ignore[arg-type]
                tool_choice={"type": "tool", "name": tool},
                messages=[{"role": "user", "content": prompt}],
            )
        except Exception as exc:
            error = classify_error(exc, creds.secrets())
            log.warning("llm %s call failed: %s (%s)", kind, error.message, error.type)
            record = CallRecord(
                call_id=call_id,
                kind=kind,
                model=cfg.model,
                cache_key=key,
                market_time_ms=market_time_ms,
                prompt=prompt,
                error=f"{error.type}: {error.message}",
            )
            await asyncio.to_thread(self.store.record_call, record)
            raise error from None
        latency = int((time.monotonic() - started) * 1000)
        u = message.usage
        usage = TokenUsage(
            input_tokens=u.input_tokens or 0,
            output_tokens=u.output_tokens or 0,
            cache_creation_input_tokens=u.cache_creation_input_tokens or 0,
            cache_read_input_tokens=u.cache_read_input_tokens or 0,
        )
        content = [
            {k: v for k, v in block.model_dump(mode="json").items() if k in _BLOCK_FIELDS}
            for block in message.content
        ]
        cost = cost_usd(usage, self._price)
        return _Answer(content, usage, cost, cost, False, message.stop_reason, latency)

    def _invalid(
        self,
        exc: AgentAnswerError,
        call_id: str,
        answer: _Answer,
        market_time_ms: int,
        attempt: int | None = None,
    ) -> ApplicationError:
        """A final error that still carries the call's cost (details[0]: LLMCallInfo as a dict),
        so the workflow's daily budget counts answers it could not use."""
        info = self._info(call_id, answer, market_time_ms, [], attempt)
        log.warning("llm %s: invalid answer: %s ($%.4f)", call_id, exc, info.cost_usd)
        return ApplicationError(
            str(exc), info.model_dump(mode="json"), type=INVALID_ANSWER, non_retryable=True
        )

    def _system_blocks(self) -> list[dict[str, Any]]:
        """The system prompt, marked for caching when a cache read is likely to follow.

        "adaptive": an isolated call (none in the last cache lifetime) sends no cache mark and
        pays the plain input price; a call in a burst (retries, clustered wakes, frequent
        position checks) writes the prefix once (1.25×) and the following calls read it (0.1×).
        Anthropic's cache lives 5 minutes of wall-clock time, refreshed by every read.
        """
        mode = self.config.prompt_cache
        now = time.monotonic()
        in_burst = self._last_call_s is not None and now - self._last_call_s < CACHE_TTL_S
        self._last_call_s = now
        block: dict[str, Any] = {"type": "text", "text": self._system}
        if mode == "always" or (mode == "adaptive" and in_burst):
            block["cache_control"] = {"type": "ephemeral"}
        return [block]

    def _info(
        self,
        call_id: str,
        answer: _Answer,
        market_time_ms: int,
        notes: list[str],
        attempt: int | None = None,
    ) -> LLMCallInfo:
        cfg = self.config
        early = before_cutoff(cfg.model, market_time_ms, cfg.training_cutoffs)
        if early and not self._warned_cutoff:
            log.warning(
                "market time lies before %s's training cutoff: it may remember what came next; "
                "LLM backtests of this period are contaminated",
                cfg.model,
            )
            self._warned_cutoff = True
        if answer.stop_reason == "max_tokens":
            notes = [*notes, "answer cut at max_tokens"]
        return LLMCallInfo(
            call_id=call_id,
            model=cfg.model,
            input_tokens=answer.usage.input_tokens,
            output_tokens=answer.usage.output_tokens,
            cache_creation_tokens=answer.usage.cache_creation_input_tokens,
            cache_read_tokens=answer.usage.cache_read_input_tokens,
            cost_usd=round(answer.cost_usd, 8),
            recorded_cost_usd=round(answer.recorded_cost_usd, 8),
            replayed=answer.replayed,
            attempt=_attempt() if attempt is None else attempt,
            latency_ms=answer.latency_ms,
            before_training_cutoff=early,
            notes=notes[:MAX_NOTES],
        )

    async def _journal(
        self,
        call_id: str,
        kind: str,
        key: str,
        market_time_ms: int,
        prompt: str,
        answer: _Answer,
        error: Exception | None,
    ) -> None:
        record = CallRecord(
            call_id=call_id,
            kind=kind,
            model=self.config.model,
            cache_key=key,
            market_time_ms=market_time_ms,
            prompt=prompt,
            answer=json.dumps(answer.content, ensure_ascii=False),
            usage=answer.usage.model_dump(),
            cost_usd=answer.cost_usd,
            replayed=answer.replayed,
            error=f"{INVALID_ANSWER}: {error}" if error else "",
        )
        await asyncio.to_thread(self.store.record_call, record)


_BLOCK_FIELDS = {"type", "text", "id", "name", "input"}
