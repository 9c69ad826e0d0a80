"""Names, queues and retry policies of the activities the workflows call.

Workflows call activities by name so that workflow code never imports the activity
implementations (which pull in sqlite, numpy, websockets). Retry policies and the
non-retryable error types are declared here, where the calls are made.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# served by the listener worker, from its BarStore (market task queue)
MARKET_PRICES = "market_prices"
MARKET_VIEW = "market_view"

# served by the trading worker (trading task queue)
DECIDE = "decide"
PLACE_ORDER = "place_order"
EVALUATE_POSITION = "evaluate_position"
JOURNAL_DECISION = "journal_decision"
JOURNAL_TRADE = "journal_trade"
START_POSITION = "start_position"

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
