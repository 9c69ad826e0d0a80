"""Circuit breaker around the LLM (SPEC §3): closed → open → half-open → closed.

Pure and deterministic: the DecisionWorkflow keeps a ``BreakerState`` in its durable state and
passes its own clock in, so the breaker survives restarts and continue-as-new and replays
identically. 3 consecutive failures open it for 15 min; then one call is let through as a probe;
its success closes the breaker, its failure reopens it for another 15 min. While it is open the
rule policy decides.

Calls overlap: a position check may be in flight when the breaker opens. Its outcome says
nothing about the probe, so while the breaker is *open* a success does not close it and a failure
neither counts as a new trip nor extends the open window; both only show in the totals. Only a
success in ``half_open`` (the probe) or ``closed`` resets the count.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trading.models import Model

BreakerPhase = Literal["closed", "open", "half_open"]


class BreakerParams(Model):
    failure_threshold: int = Field(default=3, ge=1)
    open_ms: int = Field(default=15 * 60 * 1000, ge=0)  # already on the workflow's clock


class BreakerState(Model):
    phase: BreakerPhase = "closed"
    consecutive_failures: int = 0
    open_until_ms: int | None = None
    last_error: str = ""
    trips: int = 0  # times it opened (including reopen after a failed probe)
    probes: int = 0
    successes: int = 0
    failures: int = 0


def allow_call(state: BreakerState, now_ms: int) -> tuple[bool, BreakerState]:
    """May the LLM be called now? An expired open breaker turns half-open: this call probes."""
    if state.phase == "closed":
        return True, state
    if state.phase == "open":
        if state.open_until_ms is not None and now_ms < state.open_until_ms:
            return False, state
        return True, state.model_copy(update={"phase": "half_open", "probes": state.probes + 1})
    return True, state  # half-open: the probe is in flight (one call at a time in the workflow)


def record_success(state: BreakerState) -> BreakerState:
    """A call succeeded. Closes a half-open breaker (the probe); an open one stays open."""
    if state.phase == "open":
        return state.model_copy(update={"successes": state.successes + 1})
    return state.model_copy(
        update={
            "phase": "closed",
            "consecutive_failures": 0,
            "open_until_ms": None,
            "successes": state.successes + 1,
        }
    )


def record_failure(
    state: BreakerState, now_ms: int, error: str, params: BreakerParams | None = None
) -> BreakerState:
    """Count a failure; open on the threshold, reopen at once when the half-open probe fails.

    A failure reported while the breaker is open (a call that started before it opened) is
    counted in the totals only: no new trip, no longer open window."""
    params = params or BreakerParams()
    if state.phase == "open":
        return state.model_copy(update={"failures": state.failures + 1})
    failures = state.consecutive_failures + 1
    update: dict[str, object] = {
        "consecutive_failures": failures,
        "last_error": error[:200],
        "failures": state.failures + 1,
    }
    if state.phase == "half_open" or failures >= params.failure_threshold:
        update |= {
            "phase": "open",
            "open_until_ms": now_ms + params.open_ms,
            "trips": state.trips + 1,
        }
    return state.model_copy(update=update)


def describe(state: BreakerState, now_ms: int) -> str:
    """One line for `ocw status` and the snapshot."""
    if state.phase == "closed":
        return (
            "closed"
            if not state.consecutive_failures
            else (f"closed ({state.consecutive_failures} recent failure(s))")
        )
    if state.phase == "open" and state.open_until_ms is not None:
        left = max(0, state.open_until_ms - now_ms) / 1000
        return f"open for {left:.0f}s more after {state.last_error or 'failures'}"
    return "half-open (probing)"
