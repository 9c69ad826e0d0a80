"""The LLM trader's activities: Claude decides (SPEC §3) and re-evaluates positions (SPEC §4).

Each activity builds its prompt, calls the Messages API once (Temporal owns the retries:
``max_retries=0`` on the client), validates the answer with ``trading.agent_contract`` and
returns only the validated result with its token and cost accounting. Full prompts and raw
answers go to the call journal (``activities.llm_cache.LLMStore``), never into history.

Errors are classified for the workflow: transient trouble (429, 529, 5xx, timeouts, connection)
is raised as a retryable ``ApplicationError``; auth, bad requests, an answer without usable JSON,
a replay miss or a spent run budget are non-retryable, each with its own type. Credentials are
read from the environment here and nowhere else; no message built here contains them.

Paying and counting (issue 10):

* Once the API has answered 200, the call is paid: its cost goes to the store's per-account
  ledger at once (before validation), and every later failure (invalid answer, malformed body,
  anything unexpected) is a *non-retryable* ``ApplicationError`` whose ``details[0]`` is the
  call's ``LLMCallInfo`` as a dict, so the workflow counts it. A retry would pay again for
  what is most likely the same answer. Journaling is best effort: it logs, never fails a call.
* A 200 whose body is not a Messages API answer (HTML, not JSON, no ``usage``, no ``content``)
  is ``LLMMalformedResponse``, non-retryable: such a body comes from a proxy or a wrong base
  URL far more often than from a passing glitch, a retry would most likely repeat it, and its
  cost is unknown, so each one is counted at a conservative estimate (the request's size at
  2.5 characters a token, ``max_tokens`` of output, noted "cost estimated").
* Before a fresh call the ledger's spend of the account's market day is checked against
  ``daily_budget_usd``; at or over it the call is refused (``LLMDailyBudgetSpent``,
  non-retryable), whatever the calling workflow run remembers.
* Every string of an answer is made UTF-8 clean at the boundary (a lone surrogate escape such
  as ``"\\ud800"`` is valid JSON but cannot be written to SQLite or sent as a payload).
* The HTTP call has a total deadline of ``timeout_s`` (body included; httpx's timeout is per
  read) and heartbeats every ``heartbeat_s`` while it waits, so the workflow can give the
  activity a short heartbeat timeout and a start-to-close a little above ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import anthropic
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm_cache import (
    JOURNAL_MAX_BYTES,
    CachedAnswer,
    CacheMode,
    CallRecord,
    LLMStore,
    cache_key,
    utf8_clean,
)
from trading import metrics
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
from trading.circuit_breaker import BreakerState
from trading.config import Settings
from trading.exit_plan import plan_features
from trading.llm_budget import BreakerSave, LedgerRequest, LedgerView, day_key, ledger_account
from trading.llm_pricing import ModelPrice, TokenUsage, before_cutoff, cost_usd, price_for
from trading.models import AgentDecision, LLMCallInfo, PositionSide
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
HEARTBEAT_S = 2.0  # while the HTTP call is in flight
ESTIMATE_CHARS_PER_TOKEN = 2.5  # pessimistic, for a call whose usage is unknown
TOOL_PREAMBLE_TOKENS = 313  # Anthropic's tool-use system preamble
MAX_REPORTED_TOKENS = 10**9  # usage beyond this is clamped (a hostile body, not a bill)
CACHE_MAX_ANSWER_BYTES = 256_000  # larger answers are not stored for replay
PromptCache = Literal["always", "adaptive", "off"]

# Error types (ApplicationError.type); the non-retryable ones are listed in activity_api.
NOT_CONFIGURED = "LLMNotConfigured"
INVALID_ANSWER = "InvalidAgentAnswer"
REPLAY_MISS = "LLMReplayMiss"
BUDGET_EXCEEDED = "LLMBudgetExceeded"
DAILY_BUDGET_SPENT = "LLMDailyBudgetSpent"
MALFORMED = "LLMMalformedResponse"
ANSWER_FAILED = "LLMAnswerFailed"  # anything unexpected after a paid answer
STORE_ERROR = "LLMStoreError"


def llm_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment holds credentials: an API key, or a base URL with a token."""
    env = os.environ if env is None else env
    if env.get(ENV_API_KEY, "").strip():
        return True
    return bool(env.get(ENV_BASE_URL, "").strip() and env.get(ENV_AUTH_TOKEN, "").strip())


INSTRUCTIONS_HEADER = (
    "\n\n## the operator's instructions for this account\n"
    "Follow them within everything above: the tool schema, the limits and the hard rules win "
    "over them.\n"
)


def with_instructions(system: str, extra: str) -> str:
    """The system prompt with an account's own instructions after it (none: unchanged)."""
    text = utf8_clean(extra or "").strip()
    return system + INSTRUCTIONS_HEADER + text if text else system


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
    daily_budget_usd: float | None = None  # the store ledger's backstop; None: no check
    prompt_cache: PromptCache = "adaptive"
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    training_cutoffs: dict[str, date] = field(default_factory=dict)
    # the account's own instructions (an arena agent's prompt file, issue 15): appended to the
    # system prompt, so the prompt stays one constant prefix per account (cache-friendly)
    prompt_extra: str = ""

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
                fee_rate=s.fee_rate,
                exit_plan_required=s.llm_exit_plan_required,
                shorts=s.shorts and s.market == "futures",
                leverage=s.futures_leverage,
            ),
            model=s.llm_model,
            max_tokens=s.llm_max_tokens,
            eval_max_tokens=s.llm_eval_max_tokens,
            timeout_s=s.llm_timeout_s,
            temperature=s.llm_temperature,
            cache_mode=CacheMode(s.llm_cache_mode),
            run_id=s.llm_run_id,
            run_budget_usd=s.llm_run_budget_usd,
            daily_budget_usd=s.llm_daily_budget_usd,
            prompt_cache=s.llm_prompt_cache,
            prices=dict(s.llm_prices),
            training_cutoffs=dict(s.llm_training_cutoffs),
            prompt_extra=s.llm_prompt_extra,
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
    estimated: bool = False  # usage unknown: the cost is an estimate
    malformed: str = ""  # why the 200 body is not a usable Messages API answer
    raw_text: str = ""  # a malformed body as text (redacted), for the journal


@dataclass(frozen=True)
class _Call:
    """One activity call: what is asked, for whom, and its identity in journal and ledger."""

    kind: str  # "decide" | "evaluate_position"
    prompt: str
    market_time_ms: int
    call_id: str
    account: str
    attempt: int


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


# ---------------------------------------------------------------- answer parsing (pure)

_BLOCK_FIELDS = {"type", "text", "id", "name", "input"}


def clean_json(value: Any) -> Any:
    """A JSON value with every string (keys included) UTF-8 clean: lone surrogates replaced."""
    if isinstance(value, str):
        return utf8_clean(value)
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {utf8_clean(str(k)): clean_json(v) for k, v in value.items()}
    return value


def _token_count(value: Any) -> int | None:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, MAX_REPORTED_TOKENS)


def parse_usage(raw: Any) -> TokenUsage | None:
    """The answer's ``usage``, or None when it is absent or not token counts."""
    if not isinstance(raw, dict) or "input_tokens" not in raw or "output_tokens" not in raw:
        return None
    counts = {
        name: _token_count(raw.get(name))
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    }
    if any(v is None for v in counts.values()):
        return None
    return TokenUsage(**counts)  # type: ignore[arg-type]


def parse_message(body: bytes, content_type: str) -> tuple[Any, TokenUsage | None, str | None, str]:
    """(content blocks, usage, stop reason, what is wrong) of a 200 body; never raises.

    Content and usage are None when they are missing or malformed; the last item is "" for a
    well-formed Messages API answer, else a short reason that names no body text."""
    kind = (content_type or "unknown").split(";")[0].strip()[:40] or "unknown"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, None, f"the 200 body is not JSON ({kind}, {len(body)} bytes)"
    if not isinstance(data, dict):
        return None, None, None, f"the 200 body is not a JSON object ({kind})"
    usage = parse_usage(data.get("usage"))
    problems = [] if usage is not None else ["no usable usage"]
    content: list[dict[str, Any]] | None = None
    raw_content = data.get("content")
    if isinstance(raw_content, list) and all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in raw_content
    ):
        try:
            content = [
                clean_json({k: v for k, v in b.items() if k in _BLOCK_FIELDS}) for b in raw_content
            ]
        except RecursionError:
            problems.append("content nested too deep")
    else:
        problems.append("no content list of blocks")
    stop = data.get("stop_reason")
    stop_reason = utf8_clean(stop)[:40] if isinstance(stop, str) else None
    return content, usage, stop_reason, "; ".join(f"answer has {p}" for p in problems)


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


def _short(exc: BaseException) -> str:
    return type(exc).__name__


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
        self._system = with_instructions(system_prompt(config.limits), config.prompt_extra)
        self._tools = tool_definitions(config.limits)
        self._prefix = self._system + json.dumps(self._tools, sort_keys=True)
        self._price = price_for(config.model, config.prices)  # unknown model fails at start
        self._warned_cutoff = False
        self._last_call_s: float | None = None  # wall clock of the last API call
        self.heartbeat_s = HEARTBEAT_S

    def all(self) -> list:
        return [
            self.llm_decide,
            self.llm_evaluate_position,
            self.llm_account_state,
            self.llm_breaker_save,
        ]

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
        return await self._heartbeating(self.decide(req, _attempt()))

    def _decision_limits(self, req: DecideRequest, universe: list[str]) -> DecisionLimits:
        """The account's limits now, and what an entry's exit plan is judged by: the price
        and ATR of the snapshot, the hard stop (trading/exit_plan.py)."""
        limits = self.config.limits
        features = req.market.symbols
        return DecisionLimits(
            universe=universe,
            held={p.symbol for p in req.account_view.positions},
            max_position_pct=req.max_position_pct,
            prices={s: f.price for s, f in features.items()},
            atr_pct={s: f.atr_pct for s, f in features.items() if f.atr_pct is not None},
            features={s: plan_features(f) for s, f in features.items()},
            stop_loss_pct=limits.stop_loss_pct,
            fee_rate=limits.fee_rate,
            plan_required=limits.exit_plan_required,
            shorts=limits.shorts and req.shorts,
            short_held={
                p.symbol for p in req.account_view.positions if p.side is PositionSide.SHORT
            },
        )

    async def decide(self, req: DecideRequest, attempt: int = 1) -> AgentDecision:
        """``llm_decide`` without an activity context (the in-process LLM backtest calls it);
        the caller owns retries and says which ``attempt`` this is. Raises ApplicationError."""
        snapshot = build_snapshot(req, req.context, max_exposure=req.max_exposure)
        prompt = utf8_clean(f"TASK: decide (call {DECISION_TOOL})\n" + render_prompt(snapshot))
        call = _Call(
            kind="decide",
            prompt=prompt,
            market_time_ms=req.market.as_of_ms,
            call_id=f"{req.decision_id}:decide:{attempt}:{uuid.uuid4().hex[:8]}",
            account=req.account,
            attempt=attempt,
        )
        answer, key = await self._answer(call)
        lim = self._decision_limits(req, snapshot.universe)
        try:
            payload = answer_payload(answer.content, DECISION_TOOL, "decisions")
            decision, notes = validate_decisions(payload, lim)
            info = self._info(call, answer, notes)
            decision = decision.model_copy(update={"llm": info})
            decision.model_dump_json()  # what the data converter will do: fail here, counted
        except Exception as exc:
            raise await self._unusable(call, key, answer, exc) from None
        await self._journal(call, key, answer, "")
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
        return await self._heartbeating(self._evaluate(req))

    async def _evaluate(self, req: EvaluateRequest) -> PositionVerdict:
        pos = req.position
        prompt = f"TASK: evaluate position (call {EVALUATION_TOOL})\n" + render_position_prompt(
            req, req.context
        )
        attempt = _attempt()
        call = _Call(
            kind="evaluate_position",
            prompt=utf8_clean(prompt),
            market_time_ms=pos.last_price_ms,
            call_id=f"{pos.position_id}:eval:{pos.agent_checks}:{attempt}:{uuid.uuid4().hex[:8]}",
            account=pos.account,
            attempt=attempt,
        )
        answer, key = await self._answer(call)
        try:
            payload = answer_payload(answer.content, EVALUATION_TOOL, "verdict")
            verdict, notes = validate_verdict(payload)
            info = self._info(call, answer, notes)
            result = PositionVerdict(
                verdict=verdict.verdict,
                score=verdict.score,
                components={"confidence": verdict.confidence},
                reasons=[verdict.reasoning] if verdict.reasoning else [],
                source="llm",
                llm=info,
            )
            result.model_dump_json()
        except Exception as exc:
            raise await self._unusable(call, key, answer, exc) from None
        await self._journal(call, key, answer, "")
        log.info(
            "llm position %s: %s (confidence %.2f) $%.4f",
            pos.position_id,
            verdict.verdict,
            verdict.confidence,
            info.cost_usd,
        )
        return result

    @activity.defn(name=api.LLM_ACCOUNT_STATE)
    async def llm_account_state(self, req: LedgerRequest) -> LedgerView:
        """The account's paid LLM calls on the UTC day of ``time_ms`` and its last saved
        breaker (None if never saved). A store failure is a retryable ``LLMStoreError``."""
        account = ledger_account(req.account)
        day = day_key(req.time_ms)
        try:
            usd, calls = await asyncio.to_thread(self.store.day_spend, account, day)
            raw = await asyncio.to_thread(self.store.breaker, account)
        except Exception as exc:
            log.warning("llm store unavailable for %r: %s", account[:40], _short(exc))
            raise ApplicationError(
                f"llm store unavailable: {_short(exc)}", type=STORE_ERROR
            ) from None
        breaker: BreakerState | None = None
        if raw is not None:
            try:
                breaker = BreakerState.model_validate(raw)
            except ValueError:
                log.warning("stored breaker of %r is unreadable: ignored", account[:40])
        return LedgerView(
            day=day, day_usd=round(max(0.0, usd), 8), day_calls=max(0, calls), breaker=breaker
        )

    @activity.defn(name=api.LLM_BREAKER_SAVE)
    async def llm_breaker_save(self, req: BreakerSave) -> bool:
        """Store the account's breaker (upsert, idempotent). False, logged, when the store
        fails: the workflow still holds the state and saves it again on the next change."""
        account = ledger_account(req.account)
        metrics.set_gauge(
            _meter(),
            metrics.LLM_BREAKER_OPEN,
            0.0 if req.breaker.phase == "closed" else 1.0,
            account=req.account,
        )
        try:
            await asyncio.to_thread(
                self.store.save_breaker, account, req.breaker.model_dump(mode="json")
            )
        except Exception as exc:
            log.warning("llm breaker of %r not saved: %s", account[:40], _short(exc))
            return False
        return True

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

    async def _answer(self, call: _Call) -> tuple[_Answer, str]:
        """A stored answer (replay) or a fresh one from the API (recorded when asked).

        A fresh answer is booked on the ledger before anything else looks at it; a malformed
        one raises ``LLMMalformedResponse`` with its (estimated) cost."""
        cfg = self.config
        key = cache_key(call.kind, cfg.model, PROMPT_VERSION, self._prefix, call.prompt)
        mode = cfg.cache_mode
        if mode in (CacheMode.REPLAY, CacheMode.RECORD_REPLAY):
            replayed = await self._replayed(key)
            if replayed is not None:
                return replayed, key
            if mode is CacheMode.REPLAY:
                raise ApplicationError(
                    f"replay cache has no {call.kind} answer for key {key[:16]}",
                    type=REPLAY_MISS,
                    non_retryable=True,
                )
        recorded = mode in (CacheMode.RECORD, CacheMode.RECORD_REPLAY)
        if recorded and cfg.run_budget_usd is not None:
            spent = await self._store_read(self.store.run_spent, cfg.run_id)
            if spent >= cfg.run_budget_usd:
                raise ApplicationError(
                    f"run {cfg.run_id!r} spent ${spent:.4f} of its ${cfg.run_budget_usd:.2f} budget",
                    type=BUDGET_EXCEEDED,
                    non_retryable=True,
                )
        await self._check_daily_budget(call)
        creds = self._credentials()
        answer = await self._call_api(call, creds, key)
        # paid from here on: book it first, then look at it
        await self._book(call, answer)
        if recorded:
            await self._best_effort(
                "run spend", self.store.add_run_spend, cfg.run_id, answer.cost_usd
            )
        if answer.malformed:
            await self._journal(call, key, answer, f"{MALFORMED}: {answer.malformed}")
            raise self._paid_error(MALFORMED, answer.malformed, call, answer)
        if recorded:
            content = json.dumps(answer.content, ensure_ascii=False)
            if len(content.encode("utf-8")) > CACHE_MAX_ANSWER_BYTES:
                log.warning("llm %s: answer of %d chars not cached", call.call_id, len(content))
            else:
                stored = CachedAnswer(
                    key=key,
                    kind=call.kind,
                    model=cfg.model,
                    content=answer.content,
                    usage=answer.usage.model_dump(),
                    cost_usd=answer.cost_usd,
                )
                await self._best_effort("cache", self.store.put, stored)
        return answer, key

    async def _replayed(self, key: str) -> _Answer | None:
        try:
            cached = await asyncio.to_thread(self.store.get, key)
            if cached is None:
                return None
            usage = TokenUsage.model_validate(cached.usage)
            content = clean_json(cached.content)
        except Exception as exc:
            log.warning(
                "llm cache entry %s unreadable (%s): treated as a miss", key[:16], _short(exc)
            )
            return None
        return _Answer(content, usage, 0.0, cached.cost_usd, True, None, 0)

    async def _store_read(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            raise ApplicationError(
                f"llm store unavailable: {_short(exc)}", type=STORE_ERROR
            ) from None

    async def _check_daily_budget(self, call: _Call) -> None:
        """The hard backstop: no fresh call once the account's ledger day is spent."""
        budget = self.config.daily_budget_usd
        if budget is None:
            return
        account = ledger_account(call.account)
        day = day_key(call.market_time_ms)
        try:
            spent, calls = await asyncio.to_thread(self.store.day_spend, account, day)
        except Exception as exc:  # the workflow's own budget still holds
            log.warning("llm ledger unreadable (%s): daily budget not checked", _short(exc))
            return
        if spent >= budget:
            log.warning(
                "llm %s refused: %r spent $%.4f of its $%.2f on %s", call.kind, account[:40],
                spent, budget, day,
            )  # fmt: skip
            raise ApplicationError(
                f"LLM daily budget of ${budget:.2f} spent on {day}: ${spent:.4f} in {calls} "
                f"paid call(s) of account {account[:40]!r}",
                type=DAILY_BUDGET_SPENT,
                non_retryable=True,
            )

    async def _book(self, call: _Call, answer: _Answer) -> None:
        """The paid call on the account's ledger day (best effort: the workflow counts too)."""
        await self._best_effort(
            "ledger",
            self.store.add_spend,
            call.call_id,
            ledger_account(call.account),
            day_key(call.market_time_ms),
            answer.cost_usd,
            answer.estimated,
        )
        try:
            spent, _ = await asyncio.to_thread(
                self.store.day_spend, ledger_account(call.account), day_key(call.market_time_ms)
            )
        except Exception:  # noqa: BLE001 - a metric never fails a paid call
            return
        metrics.set_gauge(_meter(), metrics.LLM_DAY_SPEND, spent, account=call.account)

    async def _best_effort(self, what: str, fn: Any, *args: Any) -> None:
        try:
            await asyncio.to_thread(fn, *args)
        except Exception as exc:
            log.warning("llm %s write failed: %s (the call goes on)", what, _short(exc))

    async def _heartbeating(self, aw: Awaitable[Any]) -> Any:
        """Await ``aw``, heartbeating every ``heartbeat_s`` when running as an activity (the
        API call, journal and ledger writes included), so a short heartbeat timeout on the
        call notices a lost worker in seconds."""
        if not activity.in_activity():
            return await aw
        task = asyncio.ensure_future(aw)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.heartbeat_s)
                if done:
                    return task.result()
                activity.heartbeat()
        finally:
            if not task.done():
                task.cancel()

    async def _call_api(self, call: _Call, creds: _Credentials, key: str) -> _Answer:
        cfg = self.config
        tool = DECISION_TOOL if call.kind == "decide" else EVALUATION_TOOL
        max_tokens = cfg.max_tokens if call.kind == "decide" else cfg.eval_max_tokens
        client = self._client_for(creds)
        system = self._system_blocks()
        started = time.monotonic()
        try:
            async with asyncio.timeout(cfg.timeout_s):  # the whole call, body included
                raw = await client.messages.with_raw_response.create(
                    model=cfg.model,
                    max_tokens=max_tokens,
                    temperature=cfg.temperature,
                    system=system,  # type: ignore[arg-type]
                    tools=self._tools,  # type: ignore[arg-type]
                    tool_choice={"type": "tool", "name": tool},
                    messages=[{"role": "user", "content": call.prompt}],
                )
                response: httpx.Response = raw.http_response
                body = response.content
        except TimeoutError:
            error = ApplicationError(
                f"anthropic call exceeded its {cfg.timeout_s:g}s deadline", type="LLMTimeout"
            )
            raise await self._failed_call(call, key, error) from None
        except Exception as exc:
            raise await self._failed_call(call, key, classify_error(exc, creds.secrets())) from None
        latency = int((time.monotonic() - started) * 1000)
        content, usage, stop_reason, problem = parse_message(
            body, response.headers.get("content-type", "")
        )
        raw_text = ""
        if problem:  # keep what came for the journal (bounded there), never a credential
            raw_text = _redact(
                body[: 2 * JOURNAL_MAX_BYTES].decode("utf-8", "replace"), creds.secrets()
            )
        estimated = usage is None
        if usage is None:
            usage = self._estimate(call, max_tokens, "cache_control" in system[0])
        cost = cost_usd(usage, self._price)
        return _Answer(
            content=content or [],
            usage=usage,
            cost_usd=cost,
            recorded_cost_usd=cost,
            replayed=False,
            stop_reason=stop_reason,
            latency_ms=latency,
            estimated=estimated,
            malformed=problem,
            raw_text=raw_text,
        )

    async def _failed_call(
        self, call: _Call, key: str, error: ApplicationError
    ) -> ApplicationError:
        """An unanswered call (nothing to pay): logged, journaled, returned to be raised."""
        log.warning("llm %s call failed: %s (%s)", call.kind, error.message, error.type)
        metrics.add(
            _meter(), metrics.LLM_CALLS, account=call.account, kind=call.kind, outcome="failed"
        )
        record = CallRecord(
            call_id=call.call_id,
            kind=call.kind,
            model=self.config.model,
            cache_key=key,
            market_time_ms=call.market_time_ms,
            prompt=call.prompt,
            error=f"{error.type}: {error.message}",
        )
        await self._best_effort("journal", self.store.record_call, record)
        return error

    def _estimate(self, call: _Call, max_tokens: int, marked: bool) -> TokenUsage:
        """A conservative usage for an answer that did not say: the whole request at
        ``ESTIMATE_CHARS_PER_TOKEN`` plus the tool preamble, ``max_tokens`` of output; billed as
        a cache write when the prefix was marked (1.25x)."""
        chars = len(self._prefix) + len(call.prompt)
        tokens = math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN) + TOOL_PREAMBLE_TOKENS
        if marked:
            return TokenUsage(cache_creation_input_tokens=tokens, output_tokens=max_tokens)
        return TokenUsage(input_tokens=tokens, output_tokens=max_tokens)

    async def _unusable(
        self, call: _Call, key: str, answer: _Answer, exc: Exception
    ) -> ApplicationError:
        """The final error of a paid answer that cannot be used: journaled, cost attached."""
        if isinstance(exc, AgentAnswerError):
            kind, text = INVALID_ANSWER, utf8_clean(str(exc))[:300]
        else:
            kind, text = ANSWER_FAILED, f"the answer could not be processed: {_short(exc)}"
            log.exception("llm %s: processing the answer failed", call.call_id)
        await self._journal(call, key, answer, f"{kind}: {text}")
        return self._paid_error(kind, text, call, answer)

    def _paid_error(self, kind: str, text: str, call: _Call, answer: _Answer) -> ApplicationError:
        """A non-retryable error whose ``details[0]`` is the call's ``LLMCallInfo`` as a dict,
        so the workflow's daily budget counts what it could not use (a retry would pay again)."""
        try:
            details = self._info(call, answer, []).model_dump(mode="json")
        except Exception:  # never lose the cost over a bookkeeping detail
            details = {
                "call_id": utf8_clean(call.call_id),
                "model": self.config.model,
                "cost_usd": round(answer.cost_usd, 8),
                "recorded_cost_usd": round(answer.recorded_cost_usd, 8),
                "replayed": answer.replayed,
                "attempt": call.attempt,
            }
        log.warning("llm %s: %s: %s ($%.4f)", call.call_id, kind, text, answer.cost_usd)
        return ApplicationError(text, details, type=kind, non_retryable=True)

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

    def _info(self, call: _Call, answer: _Answer, notes: list[str]) -> LLMCallInfo:
        cfg = self.config
        early = before_cutoff(cfg.model, call.market_time_ms, cfg.training_cutoffs)
        if early and not self._warned_cutoff:
            log.warning(
                "market time lies before %s's training cutoff: it may remember what came next; "
                "LLM backtests of this period are contaminated",
                cfg.model,
            )
            self._warned_cutoff = True
        if answer.estimated:
            notes = [
                f"usage unknown: cost estimated at ${answer.cost_usd:.4f} from the request size "
                "and max_tokens",
                *notes,
            ]
        if answer.malformed:
            notes = [answer.malformed, *notes]
        if answer.stop_reason == "max_tokens":
            notes = [*notes, "answer cut at max_tokens"]
        return LLMCallInfo(
            call_id=utf8_clean(call.call_id),
            model=cfg.model,
            input_tokens=answer.usage.input_tokens,
            output_tokens=answer.usage.output_tokens,
            cache_creation_tokens=answer.usage.cache_creation_input_tokens,
            cache_read_tokens=answer.usage.cache_read_input_tokens,
            cost_usd=round(answer.cost_usd, 8),
            recorded_cost_usd=round(answer.recorded_cost_usd, 8),
            replayed=answer.replayed,
            attempt=call.attempt,
            latency_ms=answer.latency_ms,
            before_training_cutoff=early,
            notes=[utf8_clean(n) for n in notes[:MAX_NOTES]],
        )

    async def _journal(self, call: _Call, key: str, answer: _Answer, error: str) -> None:
        """The call with its raw answer in the journal; best effort (bounded by the store)."""
        try:
            text = answer.raw_text or json.dumps(answer.content, ensure_ascii=False)
        except (ValueError, RecursionError):
            text = "(answer not serialisable)"
        record = CallRecord(
            call_id=call.call_id,
            kind=call.kind,
            model=self.config.model,
            cache_key=key,
            market_time_ms=call.market_time_ms,
            prompt=call.prompt,
            answer=text,
            usage=answer.usage.model_dump(),
            cost_usd=answer.cost_usd,
            replayed=answer.replayed,
            error=error,
        )
        await self._best_effort("journal", self.store.record_call, record)
        outcome = "replayed" if answer.replayed else ("unusable" if error else "ok")
        metrics.add(
            _meter(), metrics.LLM_CALLS, account=call.account, kind=call.kind, outcome=outcome
        )


def _meter() -> Any:
    """The activity's metric meter (None outside an activity: tests call methods directly)."""
    return activity.metric_meter() if activity.in_activity() else None
