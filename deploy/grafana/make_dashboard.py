"""Write deploy/grafana/dashboards/ocw.json, the Grafana dashboard of the engine.

Every metric of ``trading/metrics.py`` has a panel (tests/unit/test_deploy_files.py checks
that, and that the JSON is what this script writes), beside a few of the Temporal SDK's own
(``temporal_*``: the SDK's exporter here adds ``_total`` to counters and measures in seconds).
Metrics labelled ``account`` are filtered by the dashboard's ``$account`` variable.

    .venv/bin/python deploy/grafana/make_dashboard.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "ocw.json"
DATASOURCE = {"type": "prometheus", "uid": "ocw-prometheus"}
ACC = 'account=~"$account"'
RI = "$__rate_interval"

# (title, type, unit, [(expr, legend)], description, width)
Panel = tuple[str, str, str, list[tuple[str, str]], str, int]

ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Account",
        [
            (
                "Equity and cash",
                "timeseries",
                "currencyUSD",
                [
                    (f"ocw_equity_usd{{{ACC}}}", "equity {{account}}"),
                    (f"ocw_cash_usd{{{ACC}}}", "cash {{account}}"),
                ],
                "Equity marked to market and free cash, after every cycle and equity mark.",
                12,
            ),
            (
                "Gross exposure",
                "timeseries",
                "percentunit",
                [(f"ocw_exposure_fraction{{{ACC}}}", "{{account}}")],
                "Gross exposure / equity; capped at OCW_MAX_EXPOSURE.",
                6,
            ),
            (
                "Drawdown from peak",
                "timeseries",
                "percentunit",
                [(f"ocw_drawdown_fraction{{{ACC}}}", "{{account}}")],
                "New entries stop at OCW_DRAWDOWN_HALT_PCT.",
                6,
            ),
            (
                "Halted",
                "stat",
                "none",
                [(f"max by (account) (ocw_halted{{{ACC}}})", "{{account}}")],
                "1 while the drawdown halt (or `ocw halt`) holds: no new entries, exits go on.",
                4,
            ),
            (
                "Open positions",
                "stat",
                "none",
                [(f"sum by (account) (ocw_open_positions{{{ACC}}})", "{{account}}")],
                "Running PositionWorkflows of the account.",
                4,
            ),
            (
                "Decision cycles per hour",
                "timeseries",
                "none",
                [
                    (
                        f"sum by (decided_by, outcome) (increase(ocw_decisions_total{{{ACC}}}[1h]))",
                        "{{decided_by}} {{outcome}}",
                    )
                ],
                "Who decided (Claude or the rule policy) and how the cycle ended.",
                16,
            ),
        ],
    ),
    (
        "Orders and positions",
        [
            (
                "Fills and rejected orders",
                "timeseries",
                "ops",
                [
                    (
                        f"sum by (side, status) (rate(ocw_fills_total{{{ACC}}}[{RI}]))",
                        "filled {{side}} {{status}}",
                    ),
                    (
                        f"sum by (side) (rate(ocw_orders_rejected_total{{{ACC}}}[{RI}]))",
                        "rejected {{side}}",
                    ),
                ],
                "Orders per second that filled, and that the broker or exchange refused.",
                8,
            ),
            (
                "Order round trip",
                "timeseries",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(ocw_order_round_trip_seconds_bucket{{{ACC}}}[{RI}])))",
                        "p99",
                    ),
                    (
                        f"sum(rate(ocw_order_round_trip_seconds_sum{{{ACC}}}[{RI}])) / "
                        f"sum(rate(ocw_order_round_trip_seconds_count{{{ACC}}}[{RI}]))",
                        "mean",
                    ),
                ],
                "place_order, from sending the order to the broker's answer.",
                8,
            ),
            (
                "Safety check lateness",
                "timeseries",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, account) "
                        f"(rate(ocw_safety_tick_lag_seconds_bucket{{{ACC}}}[{RI}])))",
                        "p99 {{account}}",
                    ),
                ],
                "Interval since a position's last safety check minus the safety interval (30 s).",
                8,
            ),
            (
                "Exits per hour by reason",
                "timeseries",
                "none",
                [
                    (
                        f"sum by (reason) (increase(ocw_exits_total{{{ACC}}}[1h]))",
                        "{{reason}}",
                    )
                ],
                "Positions closed: stop loss, trailing stop, agent, time stop, ...",
                24,
            ),
        ],
    ),
    (
        "LLM trader",
        [
            (
                "LLM calls per hour",
                "timeseries",
                "none",
                [
                    (
                        f"sum by (kind, outcome) (increase(ocw_llm_calls_total{{{ACC}}}[1h]))",
                        "{{kind}} {{outcome}}",
                    )
                ],
                "Messages API calls by kind (decide, evaluate) and outcome.",
                12,
            ),
            (
                "LLM spend today",
                "timeseries",
                "currencyUSD",
                [(f"ocw_llm_day_spend_usd{{{ACC}}}", "{{account}}")],
                "Spend of the current UTC day; capped at OCW_LLM_DAILY_BUDGET_USD.",
                8,
            ),
            (
                "LLM breaker",
                "stat",
                "none",
                [(f"max by (account) (ocw_llm_breaker_open{{{ACC}}})", "{{account}}")],
                "1 while the circuit breaker is open: the rule policy decides.",
                4,
            ),
        ],
    ),
    (
        "Listener",
        [
            (
                "Gate: ticks and wakes",
                "timeseries",
                "ops",
                [
                    (f"sum(rate(ocw_gate_ticks_total[{RI}]))", "ticks scored"),
                    (f"sum by (layer) (rate(ocw_gate_wakes_total[{RI}]))", "wakes: {{layer}}"),
                ],
                "Kline updates the adaptive gate scored, and wakes per layer they carried.",
                12,
            ),
            (
                "Wake signals",
                "timeseries",
                "ops",
                [
                    (f"sum(rate(ocw_wakes_sent_total[{RI}]))", "delivered"),
                    (f"sum(rate(ocw_wake_failures_total[{RI}]))", "failed"),
                ],
                "Wake signals to the account's DecisionWorkflow.",
                12,
            ),
            (
                "Feed staleness",
                "timeseries",
                "s",
                [("max by (series) (ocw_feed_staleness_seconds)", "{{series}}")],
                "Age of the newest closed bar beyond its interval; alerts past 300 s.",
                18,
            ),
            (
                "Stream connected",
                "stat",
                "none",
                [("max(ocw_feed_connected)", "connected")],
                "1 while the market stream is up.",
                6,
            ),
        ],
    ),
    (
        "Reconciliation and alerts",
        [
            (
                "Reconciliation per hour",
                "timeseries",
                "none",
                [
                    (
                        f"sum by (account) (increase(ocw_reconcile_runs_total{{{ACC}}}[1h]))",
                        "rounds {{account}}",
                    ),
                    (
                        "sum by (account, action) "
                        f"(increase(ocw_reconcile_mismatches_total{{{ACC}}}[1h]))",
                        "mismatch {{account}} {{action}}",
                    ),
                ],
                "Rounds of the exchange against the books, and the differences found.",
                12,
            ),
            (
                "Alerts sent per hour",
                "timeseries",
                "none",
                [
                    (
                        "sum by (kind, destination, outcome) (increase(ocw_alerts_total[1h]))",
                        "{{kind}} → {{destination}} ({{outcome}})",
                    )
                ],
                "Telegram and webhook notifications (OCW_ALERT_KINDS, OCW_ALERT_MAX_PER_HOUR).",
                12,
            ),
        ],
    ),
    (
        "Temporal workers (SDK metrics)",
        [
            (
                "Processes scraped",
                "stat",
                "none",
                [('up{job=~"ocw-worker|ocw-listener|temporal"}', "{{job}}")],
                "1 when Prometheus reaches the process's metrics endpoint.",
                6,
            ),
            (
                "Workflow task schedule-to-start (p99)",
                "timeseries",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, task_queue) "
                        f"(rate(temporal_workflow_task_schedule_to_start_latency_bucket[{RI}])))",
                        "{{task_queue}}",
                    )
                ],
                "How long workflow tasks wait for a worker; a rising line means a saturated "
                "worker (safety checks run late).",
                9,
            ),
            (
                "Activity schedule-to-start (p99)",
                "timeseries",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, task_queue) "
                        f"(rate(temporal_activity_schedule_to_start_latency_bucket[{RI}])))",
                        "{{task_queue}}",
                    )
                ],
                "How long activities wait for a worker slot.",
                9,
            ),
            (
                "Failed activities and workflow tasks",
                "timeseries",
                "ops",
                [
                    (
                        "sum by (activity_type) "
                        f"(rate(temporal_activity_execution_failed_total[{RI}]))",
                        "activity {{activity_type}}",
                    ),
                    (
                        "sum by (workflow_type) "
                        f"(rate(temporal_workflow_task_execution_failed_total[{RI}]))",
                        "workflow task {{workflow_type}}",
                    ),
                ],
                "Activity attempts that failed (retried per their policy) and failed workflow "
                "tasks (a non-determinism error shows here, docs/upgrades.md).",
                8,
            ),
            (
                "Sticky cache",
                "timeseries",
                "none",
                [
                    ("sum by (task_queue) (temporal_sticky_cache_size)", "cached {{task_queue}}"),
                ],
                "Workflows held in the worker's cache; keep OCW_WORKER_MAX_CACHED_WORKFLOWS "
                "above the open positions.",
                8,
            ),
            (
                "Worker slots",
                "timeseries",
                "none",
                [
                    (
                        "sum by (task_queue, worker_type) (temporal_worker_task_slots_used)",
                        "used {{task_queue}} {{worker_type}}",
                    ),
                    (
                        "sum by (task_queue, worker_type) (temporal_worker_task_slots_available)",
                        "free {{task_queue}} {{worker_type}}",
                    ),
                ],
                "Task slots in use and free, per task queue and worker type.",
                8,
            ),
        ],
    ),
]


def _panel(pid: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    title, kind, unit, exprs, description, width = panel
    height = 4 if kind == "stat" else 8
    out: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(exprs)
        ],
    }
    if kind == "stat":
        out["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
        }
        out["fieldConfig"]["defaults"]["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        }
        if title in ("Open positions", "Processes scraped", "Stream connected"):
            out["fieldConfig"]["defaults"]["thresholds"]["steps"] = [
                {"color": "blue", "value": None}
            ]
    else:
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return out


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row_title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row:
            width = panel[5]
            if x + width > 24:
                x = 0
                y += line_height
                line_height = 0
            item = _panel(pid, panel, x, y)
            panels.append(item)
            pid += 1
            x += width
            line_height = max(line_height, item["gridPos"]["h"])
        y += line_height
    return {
        "uid": "ocw-engine",
        "title": "OCW trading engine",
        "description": "The engine's metrics (trading/metrics.py) and the Temporal SDK's.",
        "tags": ["ocw", "temporal"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "account",
                    "label": "account",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": "label_values(ocw_equity_usd, account)",
                        "refId": "account",
                    },
                    "definition": "label_values(ocw_equity_usd, account)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
