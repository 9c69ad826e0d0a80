"""Names, queues and retry policies of the activities the workflows call.

Workflows call activities by name so that workflow code never imports the activity
implementations (which pull in sqlite, numpy, websockets). Retry policies and the
non-retryable error types are declared here, where the calls are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# served by the listener worker, from its BarStore (market task queue)
MARKET_PRICES = "market_prices"
BOARD_PRICES = "board_prices"  # BoardPricesRequest -> PricesResult: a local activity (trading)
MARKET_VIEW = "market_view"
BOARD_VIEW = "board_view"  # BoardViewRequest -> MarketView: a local activity (trading)
# BoardDecisionRequest -> BoardDecision: a local activity (trading), the wake's view and context
BOARD_DECISION = "board_decision"
BOOK_FUNDING = "book_funding"  # FundingRequest -> list[IncomeEntry]: paper futures (trading)
AGENT_FEATURES_INTERVAL = "1h"  # the bars a position's agent check scores
MARKET_CONTEXT = "market_context"  # derivatives + liquidations + sentiment for a snapshot
MARKET_SENTIMENT = "market_sentiment"  # SentimentReading (signals/sentiment.py); never fails
MARKET_DERIVATIVES = "market_derivatives"  # DerivativesRequest -> DerivativesView (derivatives.py)
MARKET_DAILY_BARS = "market_daily_bars"  # DailyBarsRequest -> DailyBarsResult (bar_store.py)
LISTENER_HEALTH = "listener_health"  # -> ListenerStatus (signals/listener_status.py), as JSON

# served by the trading worker (trading task queue)
DECIDE = "decide"
PLACE_ORDER = "place_order"
EVALUATE_POSITION = "evaluate_position"
JOURNAL_DECISION = "journal_decision"
JOURNAL_TRADE = "journal_trade"
JOURNAL_INCIDENT = "journal_incident"  # a contained failure, for the journal
START_POSITION = "start_position"
POSITION_STATUS = "position_status"  # Temporal's and the broker's word on a silent position
PLACE_STOP = "place_stop"  # StopRequest -> StopState: the exchange-side protective stop
STOP_STATUS = "stop_status"  # StopRef -> StopState
CANCEL_STOP = "cancel_stop"  # StopRef -> StopState (what it sold before it went)
MONITOR_CHECK = "monitor_check"  # CheckRequest -> CheckReport (trading/monitor.py): alerts

# served by the trading worker: regimes and the learner (issue 5)
MACRO_REGIME = "macro_regime"
CRYPTO_REGIME = "crypto_regime"
LEARNER_UPDATE = "learner_update"
LLM_DECIDE = "llm_decide"  # LLM trader (issue 4); falls back to DECIDE on failure
LLM_EVALUATE_POSITION = "llm_evaluate_position"
LLM_ACCOUNT_STATE = "llm_account_state"  # LedgerRequest -> LedgerView (trading/llm_budget.py)
LLM_BREAKER_SAVE = "llm_breaker_save"  # BreakerSave -> bool (stored; False if the store failed)


@dataclass(frozen=True)
class CallOptions:
    """Timeouts and retries of one kind of activity call, declared once, next to its name.

    Every call that a position's safety layer or an exit depends on has a schedule-to-close
    bound, so a worker that is down (the listener, for market data) costs a few seconds, never
    a stalled tick. Activities that may run for more than a second heartbeat (see
    ``activities.heartbeat``), so an attempt lost with its worker is retried after the short
    heartbeat timeout instead of the whole start-to-close timeout.
    """

    start_to_close: timedelta
    retry: RetryPolicy
    schedule_to_close: timedelta | None = None
    heartbeat: timedelta | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start_to_close_timeout": self.start_to_close,
            "retry_policy": self.retry,
        }
        if self.schedule_to_close is not None:
            out["schedule_to_close_timeout"] = self.schedule_to_close
        if self.heartbeat is not None:
            out["heartbeat_timeout"] = self.heartbeat
        return out


HEARTBEAT = timedelta(seconds=10)  # activities heartbeat every second (activities/heartbeat.py)

# Market data is only worth having fresh: a few quick tries, then the caller skips a tick.
MARKET_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
)
MARKET_TIMEOUT = timedelta(seconds=5)
# the decision cycle's market view and context: the whole call, queue wait included
MARKET_CALL = CallOptions(MARKET_TIMEOUT, MARKET_RETRY, schedule_to_close=timedelta(seconds=15))
# a safety tick's price: with the listener down the tick is over in seconds, not stuck
SAFETY_PRICE_CALL = CallOptions(
    timedelta(seconds=3), MARKET_RETRY, schedule_to_close=timedelta(seconds=6)
)
# the price an exit would like to sell near; an exit never waits for it longer than this
EXIT_PRICE_CALL = CallOptions(
    timedelta(seconds=2), MARKET_RETRY, schedule_to_close=timedelta(seconds=3)
)

# Orders are idempotent by client order id, so retrying is always safe; invalid input is final.
ORDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,  # until it succeeds: an order must resolve one way or the other
    non_retryable_error_types=["ValueError", "InvalidOrder"],
)
ORDER_TIMEOUT = timedelta(seconds=30)
ORDER_CALL = CallOptions(ORDER_TIMEOUT, ORDER_RETRY, heartbeat=HEARTBEAT)
# a stop's placement or cancel resolves like an order; its read on a safety tick is bounded
STOP_CALL = ORDER_CALL
STOP_READ_CALL = CallOptions(
    ORDER_TIMEOUT, MARKET_RETRY, heartbeat=HEARTBEAT, schedule_to_close=timedelta(seconds=60)
)

DECIDE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
DECIDE_TIMEOUT = timedelta(seconds=120)
DECIDE_CALL = CallOptions(DECIDE_TIMEOUT, DECIDE_RETRY, heartbeat=HEARTBEAT)
# the rule policy as a local activity (a lean engine): it runs in ~10 ms, so a short bound and
# no heartbeat (a lost worker loses the workflow task with it, and the retry runs elsewhere)
DECIDE_LOCAL_CALL = CallOptions(
    timedelta(seconds=10), DECIDE_RETRY, schedule_to_close=timedelta(seconds=60)
)
# the position scorer is pure arithmetic: a lost attempt is retried within seconds
EVALUATE_CALL = CallOptions(
    timedelta(seconds=10), DECIDE_RETRY, schedule_to_close=timedelta(seconds=30)
)
# Local activities (run inside the position's workflow task, on its worker): the price board
# read is one try (a miss asks the listener), the scorer retries like its activity form.
BOARD_CALL = CallOptions(
    timedelta(seconds=2), RetryPolicy(maximum_attempts=1), schedule_to_close=timedelta(seconds=2)
)

# Bookkeeping comes after trading: journal writes retry for a bounded time, then the caller
# records an incident and goes on (a journal outage never blocks an exit or a decision).
JOURNAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
JOURNAL_TIMEOUT = timedelta(seconds=30)
JOURNAL_CALL = CallOptions(
    timedelta(seconds=10), JOURNAL_RETRY, schedule_to_close=timedelta(seconds=60)
)
POSITION_STATUS_CALL = CallOptions(
    timedelta(seconds=10), MARKET_RETRY, schedule_to_close=timedelta(seconds=30)
)

# Starting a PositionWorkflow is idempotent (same workflow id): retry until it is running.
START_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
START_TIMEOUT = timedelta(seconds=30)
START_CALL = CallOptions(START_TIMEOUT, START_RETRY, heartbeat=HEARTBEAT)

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
    "LLMDailyBudgetSpent",  # the store ledger's day is spent: refused before any call
    "LLMMalformedResponse",  # a 200 that is no Messages API answer: counted at an estimate
    "LLMAnswerFailed",  # a paid answer that could not be processed: counted
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
LLM_HEARTBEAT = timedelta(seconds=10)  # the LLM activities heartbeat every ~2 s while waiting
LLM_TIMEOUT_MARGIN_S = 15.0  # start-to-close = the HTTP call's whole deadline + this


def llm_call(call_timeout_s: float, retry: RetryPolicy) -> CallOptions:
    """LLM call options: the HTTP deadline sits inside the activity's start-to-close."""
    return CallOptions(
        timedelta(seconds=call_timeout_s + LLM_TIMEOUT_MARGIN_S), retry, heartbeat=LLM_HEARTBEAT
    )


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
# the crypto fit runs in the listener: with it down, a cycle waits two minutes at most
REGIME_CALL = CallOptions(
    REGIME_TIMEOUT,
    REGIME_RETRY,
    schedule_to_close=timedelta(seconds=120),
    heartbeat=timedelta(seconds=20),
)

# Learner updates are idempotent by trade id (state and SQLite row): retry until they succeed.
LEARNER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["ValueError"],
)
LEARNER_TIMEOUT = timedelta(seconds=30)
# bounded: a learner outage must not hold the decision loop; the item is queued again
LEARNER_CALL = CallOptions(
    timedelta(seconds=15), LEARNER_RETRY, schedule_to_close=timedelta(seconds=60)
)


# the monitor (workflows/monitor.py): the listener's probe is one try, answered within seconds
# (a queue nobody polls means the listener is gone); the alert check retries a few times and
# is then skipped until the next check, never stalling the monitor
LISTENER_PROBE_CALL = CallOptions(
    timedelta(seconds=5),
    RetryPolicy(maximum_attempts=1),
    schedule_to_close=timedelta(seconds=10),
)
MONITOR_CHECK_CALL = CallOptions(
    timedelta(seconds=60),
    RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=3,
    ),
    heartbeat=HEARTBEAT,
)


def failure_text(err: BaseException, limit: int = 160) -> str:
    """A short description of a failure: the error type and message only.

    The LLM activities raise messages that hold an HTTP status and an error type, never a key
    or a response body, so this text is safe for workflow state and logs. Any other exception
    (a failed signal, a bug) is named by its class and message.
    """
    if isinstance(err, ActivityError):
        cause = err.cause
        if isinstance(cause, ApplicationError):
            return f"{cause.type or 'error'}: {cause.message}"[:limit]
        return str(cause or err)[:limit]
    if isinstance(err, ApplicationError):
        return f"{err.type or 'error'}: {err.message}"[:limit]
    return f"{type(err).__name__}: {err}"[:limit]


def failure_type(err: BaseException) -> str:
    """The application error type of a failure ("" when it has none)."""
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError):
        return cause.type or ""
    return ""


def failure_details(err: ActivityError) -> dict[str, Any] | None:
    """The first detail of an application error when it is a dict (an invalid LLM answer
    carries its call's accounting there: it cost tokens all the same)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        detail = cause.details[0]
        if isinstance(detail, dict):
            return detail
    return None
