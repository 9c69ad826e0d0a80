"""Order round trip of the exchange broker against the local exchange, through the real ccxt.

    .venv/bin/python bench/execution.py [--orders 300] [--fault-every 10]

Everything runs in one process on one event loop: ``ExchangeSim`` (the local Binance spot
``/api/v3`` over HTTP on 127.0.0.1, BTC/USDT fixed at 50,000) and the clients that trade on it.
One order is 0.01 BTC, buys and sells alternating; the broker uses its production settings
(marketable limit IOC, last ± 0.1 %, poll 0.25 s).

1. Clean path, interleaved order by order so that all three see the same machine state:
   - ``ExchangeBroker.place_order`` (rounding and filter checks, the create call, reading the
     answer into the order state machine, the trades if the answer lacks them);
   - the raw ccxt ``create_order`` with the same parameters the broker sends (one HTTP
     request): the broker's own overhead is the difference;
   - the paper broker (``PaperBroker.place_order`` through ``PaperVenue``: SQLite in a thread).
2. Fault path: a second pass of broker orders in which every ``--fault-every``-th order's
   answer is replaced by HTTP 408 / -1007 "execution status unknown" *after* the exchange
   filled it (``FaultKind.UNKNOWN_AFTER``); the broker must look it up, never send it again.
   Then the exchange's own ledger is audited: exactly one order and one fill of 0.01 BTC per
   client order id, over both passes.

REST weight limits are lifted on both sides (the sim's and the broker's ``RestBudget``): this
measures the round trip, not Binance's 6,000-a-minute budget. Prints ``name: value`` lines,
ending with ``duplicate_fills``, ``order_round_trip_p50_ms`` and ``order_round_trip_p99_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import ccxt  # noqa: E402

from activities.broker import PaperVenue  # noqa: E402
from activities.ccxt_binance import binance_client  # noqa: E402
from activities.exchange_broker import ExchangeBroker, ExchangeConfig  # noqa: E402
from activities.paper_broker import PaperBroker  # noqa: E402
from signals.exchange_sim import ExchangeSim, FaultKind  # noqa: E402
from signals.rest_budget import RestBudget  # noqa: E402
from trading.models import Fill, OrderRequest, OrderStatus, Side  # noqa: E402

BTC = "BTC/USDT"
PRICE = 50_000.0
QTY = 0.01
LIMIT_CAP = 0.001  # ExchangeConfig's default: an IOC limit at last ± 0.1 %
NO_LIMIT = {"spot": 10**9, "futures": 10**9}
ORDER_PATH = "/api/v3/order"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 300 samples is the 297th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def order(coid: str, side: Side) -> OrderRequest:
    pid, seq = coid.rsplit("-", 1)
    return OrderRequest(
        client_order_id=coid,
        position_id=pid,
        seq=int(seq),
        symbol=BTC,
        side=side,
        qty=QTY,
        ref_price=PRICE,
        market_time_ms=1_700_000_000_000,
        reason="bench",
    )


async def timed_ms(call: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    start = time.perf_counter()
    result = await call()
    return (time.perf_counter() - start) * 1000, result


def check_filled(fill: object, what: str) -> None:
    if not isinstance(fill, Fill) or fill.status != OrderStatus.FILLED or fill.qty != QTY:
        raise SystemExit(f"{what}: not filled as expected: {fill}")


def posts(sim: ExchangeSim, start: int) -> int:
    return sum(1 for r in sim.requests[start:] if r.method == "POST" and r.path == ORDER_PATH)


async def bench(n: int, fault_every: int, tmp: Path) -> dict[str, object]:
    sim = ExchangeSim([BTC], spot_balances={"USDT": 10**9, "BTC": 10**6}, weight_limits=NO_LIMIT)
    async with sim:
        sim.set_price(BTC, PRICE)
        client = binance_client("spot", api_key=sim.api_key, secret=sim.secret, base_url=sim.url)
        broker = ExchangeBroker(
            client, ExchangeConfig(symbols=(BTC,)), budget=RestBudget(limits=NO_LIMIT)
        )
        raw = binance_client("spot", api_key=sim.api_key, secret=sim.secret, base_url=sim.url)
        paper = PaperVenue(PaperBroker(tmp / "paper.db", initial_cash=10**9))
        try:
            await broker.start()
            await raw.load_markets()

            async def raw_order(coid: str, side: Side) -> object:
                price = PRICE * (1 + LIMIT_CAP if side == Side.BUY else 1 - LIMIT_CAP)
                params = {"clientOrderId": coid, "timeInForce": "IOC", "newOrderRespType": "FULL"}
                answer = await raw.create_order(
                    BTC, "limit", side.value.lower(), QTY, price, params
                )
                if answer.get("status") != "closed" or answer.get("filled") != QTY:
                    raise SystemExit(f"raw ccxt order {coid} did not fill: {answer}")
                return answer

            for i in range(10):  # warm-up: connections, caches, the first SQLite pages
                side = Side.BUY if i % 2 == 0 else Side.SELL
                check_filled(await broker.place_order(order(f"warm-b-{i + 1}", side)), "warm-up")
                await raw_order(f"warm-r-{i + 1}", side)
                await paper.place_order(order(f"warm-p-{i + 1}", side))

            # 1. the clean path, interleaved
            broker_ms: list[float] = []
            raw_ms: list[float] = []
            paper_ms: list[float] = []
            broker_requests: Counter[str] = Counter()
            coids: list[str] = []
            for i in range(n):
                side = Side.BUY if i % 2 == 0 else Side.SELL
                coid = f"b-{i + 1}"
                before = len(sim.requests)
                ms, fill = await timed_ms(lambda c=coid, s=side: broker.place_order(order(c, s)))
                broker_requests.update(f"{q.method} {q.path}" for q in sim.requests[before:])
                check_filled(fill, coid)
                broker_ms.append(ms)
                coids.append(coid)
                ms, _ = await timed_ms(lambda i=i, s=side: raw_order(f"r-{i + 1}", s))
                raw_ms.append(ms)
                ms, fill = await timed_ms(
                    lambda i=i, s=side: paper.place_order(order(f"p-{i + 1}", s))
                )
                check_filled(fill, f"paper p-{i + 1}")
                paper_ms.append(ms)

            # 2. the fault path: -1007 after the exchange filled every k-th order
            faulted_ms: list[float] = []
            clean_ms: list[float] = []
            fault_requests = 0
            start = len(sim.requests)
            faults = []
            for i in range(n):
                side = Side.BUY if i % 2 == 0 else Side.SELL
                coid = f"f-{i + 1}"
                hit = i % fault_every == 0
                if hit:
                    faults.append(
                        sim.fault(
                            FaultKind.UNKNOWN_AFTER,
                            path=ORDER_PATH,
                            method="POST",
                            client_order_id=coid,
                        )
                    )
                before = len(sim.requests)
                ms, fill = await timed_ms(lambda c=coid, s=side: broker.place_order(order(c, s)))
                check_filled(fill, coid)
                coids.append(coid)
                if hit:
                    faulted_ms.append(ms)
                    fault_requests += len(sim.requests) - before
                else:
                    clean_ms.append(ms)
            fault_posts = posts(sim, start)
        finally:
            await broker.close()
            await raw.close()
            await paper.close()

        # the exchange's ledger: one order, one fill of QTY, per client order id
        duplicates = sum(max(0, len(sim.ledger.order_ids(c)) - 1) for c in coids)
        missing = sum(1 for c in coids if c not in sim.ledger)
        wrong_qty = sum(1 for c in coids if sim.ledger.qty(c) != Decimal(str(QTY)))
        return {
            "url": sim.url,
            "broker_ms": broker_ms,
            "raw_ms": raw_ms,
            "paper_ms": paper_ms,
            "broker_requests": {k: v / n for k, v in broker_requests.items()},
            "faulted_ms": faulted_ms,
            "clean_ms": clean_ms,
            "fault_requests": fault_requests / max(1, len(faulted_ms)),
            "fault_hits": sum(f.hits for f in faults),
            "fault_posts": fault_posts,
            "duplicates": duplicates,
            "missing": missing,
            "wrong_qty": wrong_qty,
            "ledger_fills": len(sim.ledger),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="orders per pass (default 300)")
    parser.add_argument(
        "--fault-every", type=int, default=10, help="fault every k-th order of pass 2 (default 10)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the broker warns on every unknown outcome
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(bench(args.orders, args.fault_every, Path(tmp)))
    n = args.orders

    def p(key: str, q: float) -> float:
        return percentile(r[key], q)  # type: ignore[arg-type]

    print(
        f"exchange: ExchangeSim at {r['url']} (Binance spot /api/v3, BTC/USDT at {PRICE:,.0f}), "
        f"ccxt {ccxt.__version__}, one process, {n} orders per client, alternating buy/sell "
        f"{QTY} BTC, limit IOC"
    )
    print(f"exchange_broker_p50_ms: {p('broker_ms', 0.5):.2f}")
    print(f"exchange_broker_p99_ms: {p('broker_ms', 0.99):.2f}")
    calls = r["broker_requests"]
    assert isinstance(calls, dict)
    print(
        f"exchange_broker_requests_per_order: {sum(calls.values()):.2f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items()))
        + ")"
    )
    print(f"raw_ccxt_create_order_p50_ms: {p('raw_ms', 0.5):.2f}")
    print(f"raw_ccxt_create_order_p99_ms: {p('raw_ms', 0.99):.2f}")
    print(
        f"broker_overhead_p50_ms: {p('broker_ms', 0.5) - p('raw_ms', 0.5):.2f} (broker - raw ccxt)"
    )
    print(f"paper_broker_p50_ms: {p('paper_ms', 0.5):.2f}")
    print(f"paper_broker_p99_ms: {p('paper_ms', 0.99):.2f}")
    print(
        f"fault: UNKNOWN_AFTER (HTTP 408 / -1007 after the fill) on {len(r['faulted_ms'])} of "  # type: ignore[arg-type]
        f"{n} orders, {r['fault_hits']} fired; {r['fault_posts']} order POSTs for {n} orders"
    )
    print(f"fault_order_round_trip_p50_ms: {p('faulted_ms', 0.5):.2f}")
    print(f"fault_order_round_trip_p99_ms: {p('faulted_ms', 0.99):.2f}")
    print(f"fault_order_requests_per_order: {r['fault_requests']:.2f}")
    print(f"fault_pass_clean_orders_p50_ms: {p('clean_ms', 0.5):.2f}")
    print(
        f"ledger: {r['ledger_fills']} fills; {r['missing']} client ids unfilled, "
        f"{r['wrong_qty']} with another quantity"
    )
    print(f"seconds: {time.perf_counter() - started:.1f}")
    print(f"duplicate_fills: {r['duplicates']}")
    print(f"order_round_trip_p50_ms: {p('broker_ms', 0.5):.2f}")
    print(f"order_round_trip_p99_ms: {p('broker_ms', 0.99):.2f}")
    ok = r["duplicates"] == 0 and r["missing"] == 0 and r["wrong_qty"] == 0
    return 0 if ok and r["fault_posts"] == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
