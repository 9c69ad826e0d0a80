"""Names, queues and retry policies of the activities the workflows call.

Workflows call activities by name so that workflow code never imports the activity
implementations (which pull in sqlite, numpy, websockets). Retry policies and the
non-retryable error types are declared here, where the calls are made.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# served by the listener worker, from its BarStore (market task queue)
MARKET_PRICES = "market_prices"
MARKET_VIEW = "market_view"
MARKET_CONTEXT = "market_context"  # derivatives + liquidations + sentiment for a snapshot
MARKET_SENTIMENT = "market_sentiment"  # SentimentReading (signals/sentiment.py); never fails
MARKET_DERIVATIVES = "market_derivatives"  # DerivativesRequest -> DerivativesView (derivatives.py)
MARKET_DAILY_BARS = "market_daily_bars"  # DailyBarsRequest -> DailyBarsResult (bar_store.py)

# served by the trading worker (trading task queue)
DECIDE = "decide"
PLACE_ORDER = "place_order"
EVALUATE_POSITION = "evaluate_position"
JOURNAL_DECISION = "journal_decision"
JOURNAL_TRADE = "journal_trade"
START_POSITION = "start_position"

# served by the trading worker: regimes and the learner (issue 5)
MACRO_REGIME = "macro_regime"
CRYPTO_REGIME = "crypto_regime"
LEARNER_UPDATE = "learner_update"
LLM_DECIDE = "llm_decide"  # LLM trader (issue 4); falls back to DECIDE on failure
LLM_EVALUATE_POSITION = "llm_evaluate_position"

# Market data is only worth having fresh: a few quick tries, then the caller skips a tick.
MARKET_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
)
MARKET_TIMEOUT = timedelta(seconds=10)

# Orders are idempotent by client order id, so retrying is always safe; invalid input is final.
ORDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,  # until it succeeds: an order must resolve one way or the other
    non_retryable_error_types=["ValueError", "InvalidOrder"],
)
ORDER_TIMEOUT = timedelta(seconds=30)

DECIDE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
DECIDE_TIMEOUT = timedelta(seconds=120)

JOURNAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
JOURNAL_TIMEOUT = timedelta(seconds=30)

# Starting a PositionWorkflow is idempotent (same workflow id): retry until it is running.
START_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
START_TIMEOUT = timedelta(seconds=30)

# LLM calls: a few tries for transient trouble (429, 529, 5xx, timeouts), then the workflow
# counts a breaker failure and the rule policy decides. Bad answers, auth, a replay miss or a
# spent run budget are final at once. The HTTP timeout (OCW_LLM_TIMEOUT_S, 60 s) sits inside.
LLM_NON_RETRYABLE = [
    "InvalidAgentAnswer",
    "LLMNotConfigured",
    "LLMAuthError",
    "LLMBadRequest",
    "LLMNotFound",
    "LLMReplayMiss",
    "LLMBudgetExceeded",
    "ValueError",
]
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=3,
    non_retryable_error_types=LLM_NON_RETRYABLE,
)
LLM_DECIDE_TIMEOUT = timedelta(seconds=90)
LLM_EVALUATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=2,
    non_retryable_error_types=LLM_NON_RETRYABLE,
)
LLM_EVALUATE_TIMEOUT = timedelta(seconds=60)

# Regimes are advisory: the activities answer "unknown" instead of raising, so retries only
# cover a lost worker or a timeout. An HMM refit takes about a second, a FRED fetch seconds.
REGIME_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
)
REGIME_TIMEOUT = timedelta(seconds=90)

# Learner updates are idempotent by trade id (state and SQLite row): retry until they succeed.
LEARNER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["ValueError"],
)
LEARNER_TIMEOUT = timedelta(seconds=30)


def failure_text(err: ActivityError, limit: int = 160) -> str:
    """A short description of an activity failure: the error type and message only.

    The LLM activities raise messages that hold an HTTP status and an error type, never a key
    or a response body, so this text is safe for workflow state and logs.
    """
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'error'}: {cause.message}"[:limit]
    return str(cause or err)[:limit]


def failure_details(err: ActivityError) -> dict[str, Any] | None:
    """The first detail of an application error when it is a dict (an invalid LLM answer
    carries its call's accounting there: it cost tokens all the same)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        detail = cause.details[0]
        if isinstance(detail, dict):
            return detail
    return None
