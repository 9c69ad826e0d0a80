"""The engine's Prometheus metrics: one catalogue of names, kinds, units and labels.

Every process exports through the Temporal SDK's own Prometheus endpoint (the SDK's metric
meter), so the engine's numbers sit beside the SDK's ``temporal_*`` metrics on one port per
process (``OCW_WORKER_METRICS``, ``OCW_LISTENER_METRICS``). Workflows record through
``workflow.metric_meter()`` (silent while replaying), activities through
``activity.metric_meter()`` and plain processes through the runtime's meter. The Grafana
dashboard (``deploy/grafana``) and docs/deploy.md read their names from here.

Counters get ``_total`` on the endpoint (Prometheus convention); histograms add
``_bucket`` / ``_sum`` / ``_count``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()
    process: Literal["worker", "listener"] = "worker"

    @property
    def exposed(self) -> str:
        """The name a scrape shows (counters carry ``_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


def _m(*args: Any, **kwargs: Any) -> MetricDef:
    return MetricDef(*args, **kwargs)


# account books (DecisionWorkflow, after every cycle and equity mark)
EQUITY = _m("ocw_equity_usd", "gauge", "account equity, marked to market", "USD", ("account",))
CASH = _m("ocw_cash_usd", "gauge", "free cash", "USD", ("account",))
EXPOSURE = _m("ocw_exposure_fraction", "gauge", "gross exposure / equity", "", ("account",))
DRAWDOWN = _m("ocw_drawdown_fraction", "gauge", "drawdown from the peak", "", ("account",))
HALTED = _m("ocw_halted", "gauge", "1 while the drawdown halt holds", "", ("account",))
OPEN_POSITIONS = _m("ocw_open_positions", "gauge", "open positions", "", ("account",))
DECISIONS = _m(
    "ocw_decisions", "counter", "decision cycles run", "", ("account", "decided_by", "outcome")
)

# orders (the broker activities)
FILLS = _m("ocw_fills", "counter", "orders that filled", "", ("account", "side", "status"))
REJECTED = _m("ocw_orders_rejected", "counter", "orders refused", "", ("account", "side"))
ORDER_RTT = _m(
    "ocw_order_round_trip_seconds", "histogram", "place_order, send to answer", "s", ("account",)
)

# positions (PositionWorkflow)
SAFETY_LAG = _m(
    "ocw_safety_tick_lag_seconds",
    "histogram",
    "a safety check's lateness: interval since the last check minus the safety interval",
    "s",
    ("account",),
)
EXITS = _m("ocw_exits", "counter", "positions closed", "", ("account", "reason"))

# the LLM trader (activities/llm_agent.py)
LLM_CALLS = _m("ocw_llm_calls", "counter", "Messages API calls", "", ("account", "kind", "outcome"))
LLM_DAY_SPEND = _m("ocw_llm_day_spend_usd", "gauge", "LLM spend today (UTC)", "USD", ("account",))
LLM_BREAKER_OPEN = _m(
    "ocw_llm_breaker_open", "gauge", "1 while the LLM circuit breaker is open", "", ("account",)
)

# reconciliation (workers/reconcile.py)
RECONCILE_RUNS = _m("ocw_reconcile_runs", "counter", "reconciliation rounds", "", ("account",))
RECONCILE_MISMATCHES = _m(
    "ocw_reconcile_mismatches", "counter", "differences found", "", ("account", "action")
)

# alerts (activities/alerts.py)
ALERTS = _m("ocw_alerts", "counter", "alerts sent", "", ("kind", "destination", "outcome"))

# the listener
GATE_TICKS = _m("ocw_gate_ticks", "counter", "kline updates the gate scored", "", (), "listener")
GATE_WAKES = _m(
    "ocw_gate_wakes", "counter", "wakes sent, per gate layer they carry", "", ("layer",), "listener"
)
WAKES_SENT = _m("ocw_wakes_sent", "counter", "wake signals delivered", "", (), "listener")
WAKE_FAILURES = _m("ocw_wake_failures", "counter", "wake signals that failed", "", (), "listener")
FEED_STALENESS = _m(
    "ocw_feed_staleness_seconds",
    "gauge",
    "age of the newest closed bar beyond its interval",
    "s",
    ("series",),
    "listener",
)
FEED_CONNECTED = _m("ocw_feed_connected", "gauge", "1 while the stream is up", "", (), "listener")

ALL: tuple[MetricDef, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricDef))


class Meter(Protocol):
    """What ``temporalio.common.MetricMeter`` offers that the engine uses."""

    def create_counter(self, name: str, description: str | None = ..., unit: str | None = ...): ...
    def create_gauge_float(
        self, name: str, description: str | None = ..., unit: str | None = ...
    ): ...
    def create_histogram_float(
        self, name: str, description: str | None = ..., unit: str | None = ...
    ): ...


def _labels(defn: MetricDef, labels: Mapping[str, Any]) -> dict[str, str]:
    unknown = set(labels) - set(defn.labels)
    if unknown:
        raise ValueError(f"{defn.name}: unknown labels {sorted(unknown)}")
    return {k: str(v) for k, v in labels.items()}


# instruments per meter: a safety tick records once per position, so its histogram is made
# once per workflow's meter, not on every tick (weak keys: a finished workflow's meter goes)
_instruments: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_MAKERS = {
    "counter": "create_counter",
    "gauge": "create_gauge_float",
    "histogram": "create_histogram_float",
}


def _instrument(meter: Any, defn: MetricDef) -> Any:
    try:
        made = _instruments.setdefault(meter, {})
    except TypeError:  # a meter that takes no weak reference: made afresh each time
        made = {}
    if defn.name not in made:
        made[defn.name] = getattr(meter, _MAKERS[defn.kind])(
            defn.name, defn.help, defn.unit or None
        )
    return made[defn.name]


def add(meter: Meter | None, defn: MetricDef, value: int = 1, **labels: Any) -> None:
    """Count; a None meter (tests, replay) records nothing."""
    if meter is None or value <= 0:
        return
    assert defn.kind == "counter", defn.name
    _instrument(meter, defn).add(int(value), _labels(defn, labels))


def set_gauge(meter: Meter | None, defn: MetricDef, value: float, **labels: Any) -> None:
    if meter is None or value != value:  # NaN never reaches the endpoint
        return
    assert defn.kind == "gauge", defn.name
    _instrument(meter, defn).set(float(value), _labels(defn, labels))


def observe(meter: Meter | None, defn: MetricDef, value: float, **labels: Any) -> None:
    if meter is None or value != value:
        return
    assert defn.kind == "histogram", defn.name
    _instrument(meter, defn).record(max(0.0, float(value)), _labels(defn, labels))
