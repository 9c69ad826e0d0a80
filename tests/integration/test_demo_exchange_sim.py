"""`ocw demo --exchange-sim` as a user runs it: orders go through ccxt to the local exchange.

A short replay of the generated market; the test ends on what the exchange's own ledger says
(the CSV the demo writes next to its state): orders filled, never two orders under one client
order id, and every taker fill at the replay's price at the replay's market time.
"""

from __future__ import annotations

import bisect
import csv
import os
from collections import defaultdict
from pathlib import Path

import pytest

from signals.replay_server import load_replay_bars
from tests.integration.procs import free_port, run_demo

pytestmark = pytest.mark.integration

SLIPPAGE = 5 / 10_000  # the default OCW_SLIPPAGE_BPS, which the demo gives the exchange
TICK = 0.01  # the exchange's spot tick size


def test_demo_trades_through_ccxt_on_the_local_exchange(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "OCW_TEMPORAL_UI_PORT": str(free_port()),
        "OCW_LLM_ENABLED": "false",  # the rule policy: no key in the environment may count
    }
    for name in ("OCW_MODE", "OCW_ORDER_TYPE", "OCW_SLIPPAGE_BPS", "OCW_FEE_RATE"):
        env.pop(name, None)
    worker_log = home / "demo" / "logs" / "worker.log"
    done = run_demo(
        ["--generated", "--exchange-sim", "--days", "3", "--duration", "12"], env, home
    )  # 20 s here alone; a CI run once passed 150 s
    out = done.stdout
    context = f"{out[-3000:]}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, context
    assert "orders went through ccxt to the local exchange" in out, context
    assert "0 client order id(s) filled twice" in out, context
    assert "exchange: cash" in out and "agrees with the workflow's books" in out, context
    assert "reconciliation of demo: agree" in out, context
    assert worker_log.exists() and "trading through binance-spot" in worker_log.read_text()

    with (home / "demo" / "exchange_fills.csv").open() as f:
        fills = list(csv.DictReader(f))
    assert fills, "the exchange filled nothing"
    orders = defaultdict(set)
    for fill in fills:
        orders[fill["client_order_id"]].add(fill["order_id"])
    assert all(len(ids) == 1 for ids in orders.values()), orders  # one order per client id
    assert {f["side"] for f in fills} == {"BUY", "SELL"}

    # the exchange priced every order from the replay, at the replay's market time
    bars = load_replay_bars(sorted((home / "demo" / "market").glob("*.csv")))
    by_id = {symbol.replace("/", ""): series for symbol, series in bars.items()}
    takers = [f for f in fills if f["is_maker"] == "False"]
    assert takers
    for fill in takers:
        series = by_id[fill["symbol"]]
        t = int(fill["market_time_ms"])
        i = bisect.bisect_right([b.open_time for b in series], t) - 1
        assert i >= 0 and t <= series[i].close_time, f"{fill}: no bar at its market time"
        bar, price = series[i], float(fill["price"])
        low, high = bar.low * (1 - SLIPPAGE) - TICK, bar.high * (1 + SLIPPAGE) + TICK
        assert low <= price <= high, f"{fill} outside the bar {bar}"
