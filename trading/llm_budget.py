"""Daily LLM spend against a budget in dollars (issue 4): pure, kept in workflow state.

The day is the UTC day of *market* time when the engine knows it (so a replay at 10,000× gets a
budget per market day, like live), else of workflow time. When the day's spend reaches the
budget the rule policy decides until the next day; totals are kept for `ocw status`.

The spend and the breaker also live outside any workflow run, in the LLM store (issue 10): the
LLM activities write every paid call to a per-account ledger and refuse a fresh call once the
day's ledger spend reaches the budget. ``LedgerRequest`` / ``LedgerView`` / ``BreakerSave`` are
the payloads of the two activities that read and save that state (``llm_account_state``,
``llm_breaker_save``); they are plain models, so workflow code may import them.
"""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import Field, field_validator

from trading.circuit_breaker import BreakerState
from trading.models import Model

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last day a date can hold
ACCOUNT_MAX_CHARS = 200


def day_key(time_ms: int) -> str:
    """UTC calendar day of an epoch-ms time (plain arithmetic: safe in the workflow sandbox).

    Times outside 1970..9999 are clamped to those days, so no input raises."""
    time_ms = min(max(int(time_ms), 0), MAX_TIME_MS)
    return (_EPOCH + timedelta(days=time_ms // _DAY_MS)).isoformat()


def ledger_account(account: str) -> str:
    """The key an account's ledger rows and breaker are stored under (bounded, stripped)."""
    return str(account).strip()[:ACCOUNT_MAX_CHARS]


class LedgerRequest(Model):
    """``llm_account_state`` input: whose state, and the (market) time that picks the day."""

    account: str
    time_ms: int

    @field_validator("account", mode="before")
    @classmethod
    def _account(cls, value: object) -> str:
        return ledger_account(value if isinstance(value, str) else str(value))


class LedgerView(Model):
    """What the store knows of an account: the day's paid LLM calls and the last saved breaker
    (None when none was ever saved). A fresh DecisionWorkflow run seeds its state from it."""

    day: str
    day_usd: float = Field(default=0.0, ge=0.0)
    day_calls: int = Field(default=0, ge=0)
    breaker: BreakerState | None = None


class BreakerSave(Model):
    """``llm_breaker_save`` input: the account's breaker as the workflow now holds it."""

    account: str
    breaker: BreakerState

    @field_validator("account", mode="before")
    @classmethod
    def _account(cls, value: object) -> str:
        return ledger_account(value if isinstance(value, str) else str(value))


class LLMSpend(Model):
    day: str = ""
    day_usd: float = 0.0
    day_calls: int = 0
    total_usd: float = 0.0
    total_calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    replayed_calls: int = 0  # answered from the record/replay cache, no API cost


def roll(spend: LLMSpend, time_ms: int) -> LLMSpend:
    """A new day starts with nothing spent."""
    day = day_key(time_ms)
    if day == spend.day:
        return spend
    return spend.model_copy(update={"day": day, "day_usd": 0.0, "day_calls": 0})


def budget_left(spend: LLMSpend, time_ms: int, daily_budget_usd: float | None) -> float | None:
    """Dollars left today; None when there is no budget."""
    if daily_budget_usd is None:
        return None
    return max(0.0, daily_budget_usd - roll(spend, time_ms).day_usd)


def over_budget(spend: LLMSpend, time_ms: int, daily_budget_usd: float | None) -> bool:
    left = budget_left(spend, time_ms, daily_budget_usd)
    return left is not None and left <= 0.0


def record_call(
    spend: LLMSpend,
    time_ms: int,
    cost_usd: float,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    replayed: bool = False,
) -> LLMSpend:
    s = roll(spend, time_ms)
    cost = max(0.0, cost_usd)
    return s.model_copy(
        update={
            "day_usd": s.day_usd + cost,
            "day_calls": s.day_calls + 1,
            "total_usd": s.total_usd + cost,
            "total_calls": s.total_calls + 1,
            "input_tokens": s.input_tokens + max(0, input_tokens),
            "output_tokens": s.output_tokens + max(0, output_tokens),
            "cache_read_tokens": s.cache_read_tokens + max(0, cache_read_tokens),
            "cache_write_tokens": s.cache_write_tokens + max(0, cache_write_tokens),
            "replayed_calls": s.replayed_calls + int(replayed),
        }
    )


def record_failure(spend: LLMSpend) -> LLMSpend:
    return spend.model_copy(update={"failed_calls": spend.failed_calls + 1})
