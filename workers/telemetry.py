"""The Prometheus endpoint of a process: the Temporal SDK's metrics and the engine's.

``install_metrics`` makes a Temporal ``Runtime`` with a Prometheus exporter the process's
default before any client connects, so the SDK's ``temporal_*`` metrics and everything the
engine records through the SDK's meters (``trading/metrics.py``) are served on one port.
Counters the listener keeps as running totals are exported as deltas by ``CounterDeltas``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from trading import metrics
from trading.metrics import MetricDef
from workers.temporal_env import SetupError, ensure_can_listen

log = logging.getLogger(__name__)

_installed: dict[str, Runtime] = {}

# the SDK's default buckets start at 100 ms: too coarse for queue waits and order round trips
_FINE = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BUCKETS: dict[str, tuple[float, ...]] = {
    "temporal_workflow_task_schedule_to_start_latency": _FINE,
    "temporal_workflow_task_execution_latency": _FINE,
    "temporal_workflow_task_replay_latency": _FINE,
    "temporal_activity_schedule_to_start_latency": _FINE,
    "temporal_activity_execution_latency": _FINE,
    "temporal_request_latency": _FINE,
    metrics.ORDER_RTT.name: _FINE,
    metrics.SAFETY_LAG.name: _FINE,
}


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SetupError(f"metrics address {address!r}: use host:port, e.g. 127.0.0.1:9464")
    return host or "0.0.0.0", int(port)


def install_metrics(address: str | None, role: str) -> Runtime | None:
    """Serve ``/metrics`` on ``address`` (None: no endpoint). Call once, before connecting."""
    if not address:
        return None
    if address in _installed:
        return _installed[address]
    host, port = split_address(address)
    ensure_can_listen(
        host, port, f"set OCW_{role.upper()}_METRICS to a free host:port (or unset it)"
    )
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides=BUCKETS,
            ),
            global_tags={"ocw_role": role},
        )
    )
    Runtime.set_default(runtime, error_if_already_set=False)
    _installed[address] = runtime
    log.info("%s metrics on http://%s:%d/metrics", role, host, port)
    return runtime


def process_meter() -> Any:
    """The default runtime's meter (a no-op one when no endpoint is installed)."""
    return Runtime.default().metric_meter


class CounterDeltas:
    """Exports running totals as Prometheus counters: each call adds what grew since the last.

    A total that went down (a restarted component) starts over from its new value."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def export(
        self, meter: Any, defn: MetricDef, total: float, labels: Mapping[str, Any] | None = None
    ) -> None:
        labels = dict(labels or {})
        key = (defn.name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        before = self._last.get(key, 0.0)
        self._last[key] = total
        grew = total - before if total >= before else total
        metrics.add(meter, defn, int(grew), **labels)
