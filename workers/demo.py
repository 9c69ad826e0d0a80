"""``ocw demo``: the whole engine on one machine, on a fast clock.

Starts the Temporal dev server (state under OCW_HOME/demo), the trading worker as its own
process, and the listener on a replay feed in this process; replays real 1h bars from
``../shared/data`` (or a generated market) and prints wakes, decisions, orders and exits as
they happen, then a summary against buy-and-hold.

``--exchange-sim`` trades through the real execution path instead of the paper broker: a local
Binance-compatible exchange (``signals.exchange_sim.ExchangeSim``) runs in this process, priced
from the same bars at the replay's market time (``ReplayServer.market_time_ms``), and the worker
runs with ``OCW_MODE=testnet`` pointed at it, so every order goes through ccxt over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activities.journal import Journal
from activities.paper_broker import PaperBroker
from trading.config import Settings
from trading.market_data import find_symbol_csv, generate_market, shared_data_dir, write_ohlcv_csv
from trading.models import Balances
from trading.policies.live import RULE
from workers.status_view import fmt_time, render_decision, render_trade
from workers.temporal_env import SetupError, connect, start_dev_server, stop_process

if TYPE_CHECKING:
    from signals.exchange_sim import ExchangeSim
    from signals.replay_plan import ReplayPlan

DEMO_INTERVAL = "1h"


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as OCW_* variables, so a child process sees exactly the same ones."""
    env = dict(os.environ)
    for name, value in settings.model_dump(
        mode="json", exclude={"binance_api_key", "binance_api_secret"}
    ).items():
        if value is None:
            env.pop(f"OCW_{name.upper()}", None)
            continue
        env[f"OCW_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


async def poll_until(
    cond: Callable[[], Awaitable[bool]],
    timeout: float,
    *,
    stop: asyncio.Event,
    poll: Callable[[], Awaitable[None]],
    every_s: float,
) -> bool:
    """Print what is new (``poll``) and ask ``cond`` every ``every_s`` until it holds; False
    when ``stop`` is set (Ctrl-C) or ``timeout`` passes first. Both demos wait with it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        await poll()
        if await cond():
            return True
        await asyncio.sleep(every_s)
    return False


def demo_files(
    args: argparse.Namespace, settings: Settings, home: Path, history_days: float = 45
) -> tuple[list[Path], str]:
    if not args.generated:
        data_dir = Path(args.data) if args.data else shared_data_dir()
        if data_dir is not None:
            files = [find_symbol_csv(data_dir, s, DEMO_INTERVAL) for s in settings.symbols]
            found = [f for f in files if f is not None]
            if found:
                return found, f"real Binance 1h bars from {data_dir}"
        if args.data:
            raise SetupError(
                f"no binance_<SYMBOL>_1h.csv files for {settings.symbols} in {args.data}"
            )
    market_dir = home / "market"
    market_dir.mkdir(parents=True, exist_ok=True)
    n_bars = int((args.days + history_days) * 24)
    bars = generate_market(settings.symbols, DEMO_INTERVAL, n_bars, seed=7)
    files = []
    for symbol, series in bars.items():
        files.append(
            write_ohlcv_csv(series, market_dir / f"{symbol.replace('/', '')}_{DEMO_INTERVAL}.csv")
        )
    return files, "a generated regime-switching market (seed 7)"


def run_demo(args: argparse.Namespace) -> int:
    from workers.cli import load_settings, run_until_stopped

    if getattr(args, "arena", False):
        from workers.demo_arena import run_arena_demo

        return run_arena_demo(args)
    base = load_settings()
    home = base.home / "demo"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    speed = args.days * 86_400 / args.duration
    overrides: dict[str, object] = {"home": home, "mode": "replay", "speed": speed}
    # the engine's own stand-in is cash (it opens nothing); unless told otherwise a demo shows
    # the mechanics with SPEC §7's rule policy, and says that it loses out of sample
    demo_rules = "policy" not in base.model_fields_set
    if demo_rules:
        overrides["policy"] = RULE
    if args.exchange_sim and "order_type" not in base.model_fields_set:
        # market orders unless OCW_ORDER_TYPE says otherwise: at ~10,000x the price moves past
        # an IOC limit (last ± 0.1 %) between the decision and the order, and the IOC expires
        overrides["order_type"] = "market"
    settings = load_settings({**overrides, "account": "demo"})
    logs = settings.paths()["logs"]
    logs.mkdir(parents=True, exist_ok=True)
    files, source = demo_files(args, settings, home)

    print(
        f"OCW demo: {args.days:g} days of {source}, replayed in ~{args.duration:g}s (speed {speed:,.0f}x)"
    )
    if demo_rules:
        print(
            "decider: SPEC §7's rule policy, to show the mechanics; it loses out of sample "
            "(docs/backtests.md), so without Claude the engine's default is OCW_POLICY=cash"
        )
    server = start_dev_server(settings, log_file=logs / "temporal.log", ui=True)
    print(f"Temporal dev server up; web UI http://localhost:{settings.temporal_ui_port}")
    for line in reach_commands(settings):
        print(line)
    workers: list[subprocess.Popen] = []

    def start_worker(extra_env: dict[str, str]) -> subprocess.Popen:
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker"],
            env={**settings_env(settings), **extra_env},
            stdout=open(logs / "worker.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        workers.append(worker)
        return worker

    try:
        return run_until_stopped(lambda stop: _demo(stop, args, settings, files, start_worker))
    finally:
        for worker in workers:
            stop_process(worker)
        stop_process(server)


def exchange_worker_env(settings: Settings, sim: ExchangeSim) -> dict[str, str]:
    """The worker's variables for trading on the local exchange: testnet mode (the exchange
    broker, ccxt) pointed at the sim, with the sim's keys (in the child's env only)."""
    return {
        "OCW_MODE": "testnet",
        "OCW_MARKET": "spot",
        "OCW_BINANCE_SPOT_URL": sim.base_url,
        "BINANCE_API_KEY": sim.api_key,
        "BINANCE_SECRET_KEY": sim.secret,
        # the other spellings of the keys must not win over the sim's
        "OCW_BINANCE_API_KEY": sim.api_key,
        "OCW_BINANCE_API_SECRET": sim.secret,
    }


async def start_exchange_sim(
    settings: Settings, plan: ReplayPlan, market_time_ms: Callable[[], int]
) -> ExchangeSim:
    """A local Binance spot exchange priced from the replay's bars at ``market_time_ms()``,
    holding ``initial_cash`` of the quote asset, with the paper broker's fee and slippage."""
    from signals.exchange_sim import ExchangeSim, SimConfig, bars_price_source

    quotes = sorted({symbol.split("/")[1] for symbol in settings.symbols})
    if len(quotes) != 1:
        raise SetupError(f"--exchange-sim trades one quote asset, the symbols have {quotes}")
    bars = {
        symbol: [*plan.warmup.get(symbol, []), *plan.replay.get(symbol, [])]
        for symbol in settings.symbols
    }
    sim = ExchangeSim(
        settings.symbols,
        price_source=bars_price_source(bars, market_time_ms),
        spot_balances={quotes[0]: settings.initial_cash},
        config=SimConfig(
            fee_rate=Decimal(str(settings.fee_rate)),
            slippage=Decimal(str(settings.slippage_bps)) / 10_000,
        ),
    )
    return await sim.start()


async def exchange_balances(
    settings: Settings, sim: ExchangeSim, client: Any = None
) -> tuple[Balances, list[str]]:
    """The books as the worker sees them: through an ExchangeBroker on the real ccxt client;
    and, with a Temporal ``client``, a last reconciliation of the exchange with the books."""
    from activities.ccxt_binance import binance_client
    from activities.exchange_broker import ExchangeBroker, ExchangeConfig
    from workers.reconcile import run_reconcile

    ccxt_client = binance_client(
        "spot", api_key=sim.api_key, secret=sim.secret, base_url=sim.base_url
    )
    broker = ExchangeBroker(
        ccxt_client, ExchangeConfig(market="spot", symbols=tuple(settings.symbols))
    )
    lines: list[str] = []
    try:
        if client is not None:
            report = await run_reconcile(client, settings, broker, dry_run=False, source="demo")
            lines = ["  " + line for line in report.lines()]
        return await broker.balances(), lines
    finally:
        await broker.close()


def reach_commands(settings: Settings) -> list[str]:
    """The exact commands that reach the demo's state from another terminal."""
    env = (
        f"OCW_HOME={settings.home} OCW_ACCOUNT={settings.account} "
        f"OCW_TEMPORAL_ADDRESS={settings.temporal_address}"
    )
    wid = settings.decision_workflow_id
    return [
        "reach the demo from another terminal:",
        f"  {env} .venv/bin/ocw status",
        f"  {env} .venv/bin/ocw trades",
        f"  {env} .venv/bin/ocw dashboard     # then http://127.0.0.1:{settings.dashboard_port}/",
        f"  {env} .venv/bin/ocw mcp --print-config   # for Claude Desktop",
        f"  .venv/bin/temporal workflow list --address {settings.temporal_address} "
        f"--query \"OcwAccount='{settings.account}'\"",
        f"  .venv/bin/temporal workflow describe --address {settings.temporal_address} "
        f"--workflow-id {wid}",
    ]


def write_exchange_fills(sim: ExchangeSim, path: Path) -> None:
    """The exchange's own ledger (every fill it executed) as CSV."""
    import csv
    import dataclasses

    from signals.exchange_sim import Fill

    names = [f.name for f in dataclasses.fields(Fill)]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for fill in sim.ledger:
            writer.writerow([getattr(fill, name) for name in names])


async def _demo(
    stop: asyncio.Event,
    args: argparse.Namespace,
    settings: Settings,
    files: list[Path],
    start_worker: Callable[[dict[str, str]], subprocess.Popen],
) -> int:
    from workers.listener_worker import ListenerService, ReplayOptions
    from workflows.decision import DecisionWorkflow

    service = ListenerService(
        settings, ReplayOptions(files=files, speed=settings.speed, days=args.days)
    )
    plan = service.prepare_replay()
    print(
        f"market {fmt_time(plan.start_ms)} -> {fmt_time(plan.end_ms)} UTC, symbols {', '.join(plan.replay)}"
    )
    sim: ExchangeSim | None = None
    if args.exchange_sim:

        def market_time_ms() -> int:  # the replay's clock, never wall time
            replay = service.server
            return replay.market_time_ms if replay is not None else plan.start_ms

        sim = await start_exchange_sim(settings, plan, market_time_ms)
        print(
            f"orders: ccxt -> local Binance-compatible exchange at {sim.base_url} "
            f"(spot, {settings.initial_cash:,.2f} {settings.symbols[0].split('/')[1]}, "
            f"{settings.order_type} orders, priced from the replay at its market time)"
        )
    worker = start_worker(exchange_worker_env(settings, sim) if sim is not None else {})
    listener_stop = asyncio.Event()
    listener = asyncio.create_task(service.run(listener_stop))
    client = await connect(settings, attempts=30)
    handle = client.get_workflow_handle(settings.decision_workflow_id)
    printed_cycles: set[int] = set()
    printed_trades: set[str] = set()
    started = time.monotonic()

    async def poll() -> None:
        with contextlib.suppress(Exception):
            view = await handle.query(DecisionWorkflow.state)
            for entry in view.decision_log:
                if entry.done and entry.cycle not in printed_cycles:
                    printed_cycles.add(entry.cycle)
                    print("  wake     " + render_decision(entry), flush=True)
            for trade in view.recent_trades:
                if trade.trade_id not in printed_trades:
                    printed_trades.add(trade.trade_id)
                    print("  exit     " + render_trade(trade), flush=True)

    async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        return await poll_until(cond, timeout, stop=stop, poll=poll, every_s=0.25)

    async def replay_done() -> bool:
        return service.server is not None and service.server.done.is_set()

    async def engine_idle() -> bool:
        view = await handle.query(DecisionWorkflow.status)
        return view.queue_length == 0 and not view.busy and service.dispatcher.idle()

    async def flat() -> bool:
        view = await handle.query(DecisionWorkflow.status)
        return not view.positions

    try:
        while service.server is None or service.dispatcher is None:
            await asyncio.sleep(0.05)
        await wait_for(replay_done, timeout=args.duration * 10 + 60)
        if stop.is_set():
            print("interrupted")
            return 130
        print(f"replay over after {time.monotonic() - started:.0f}s; closing open positions")
        await wait_for(engine_idle, timeout=60)
        await handle.signal(DecisionWorkflow.close_all)
        await wait_for(flat, timeout=60)
        await poll()
        view = await handle.query(DecisionWorkflow.status)
        if sim is None:
            paper = PaperBroker(settings.paths()["broker_db"], initial_cash=settings.initial_cash)
            books, venue = paper.balances(), "paper broker"
            paper.close()
        else:
            books, reconciled = await exchange_balances(settings, sim, client)
            venue = "exchange"
        extra = [*_exchange_lines(sim, settings), *reconciled] if sim is not None else []
        _summary(view, plan, service, settings, books, venue, extra)
        if args.keep and not stop.is_set():
            print(
                f"server and web UI stay up: http://localhost:{settings.temporal_ui_port} (Ctrl-C to stop)"
            )
            for line in reach_commands(settings):
                print(line)
            await stop.wait()
        return 0
    finally:
        listener_stop.set()
        with contextlib.suppress(Exception):
            await listener
        if sim is not None:  # the worker first: it must not talk to an exchange that is gone
            await asyncio.to_thread(stop_process, worker)
            await sim.stop()


def _summary(
    view, plan, service, settings: Settings, books: Balances, venue: str, extra: list[str]
) -> None:
    from trading.state import StatusView

    assert isinstance(view, StatusView)
    p = view.portfolio
    journal = Journal.from_settings(settings).summary(settings.account)
    first = {s: bars[0].open for s, bars in plan.replay.items() if bars}
    last = {s: bars[-1].close for s, bars in plan.replay.items() if bars}
    bh = sum(last[s] / first[s] for s in first) / len(first) - 1 if first else 0.0
    ret = p.equity / settings.initial_cash - 1
    gate = service.gate.counters
    print("=" * 72)
    print(f"summary ({fmt_time(plan.start_ms)} -> {fmt_time(plan.end_ms)}, {plan.days:.1f} days)")
    print(
        f"  wakes sent {service.dispatcher.sent}; gate ticks {gate.ticks}, skipped {gate.skip_rate:.1%}"
    )
    print(
        f"  decision cycles {view.counters.cycles}; orders {view.counters.orders} ({view.counters.orders_rejected} rejected)"
    )
    print(
        f"  trades {journal['n_trades']}: {journal['wins']} won, {journal['losses']} lost "
        f"(win rate {journal['win_rate']:.0%})"
    )
    print(f"  realized PnL {p.realized_pnl:+,.2f}; fees {p.fees_paid:,.2f}")
    print(f"  final equity {p.equity:,.2f} from {settings.initial_cash:,.2f}: {ret:+.2%}")
    print(f"  buy-and-hold (equal weight {', '.join(first)}): {bh:+.2%}")
    agree = abs(books.cash - p.cash) < 1e-6 * settings.initial_cash and not books.holdings
    print(
        f"  {venue}: cash {books.cash:,.2f}, holdings {books.holdings or 'none'} "
        f"({'agrees with' if agree else 'DIFFERS from'} the workflow's books)"
    )
    for line in extra:
        print(line)
    print("=" * 72, flush=True)


def _exchange_lines(sim: ExchangeSim, settings: Settings) -> list[str]:
    """What the exchange itself executed (its ledger, not the engine's word), and where the
    ledger is written."""
    fills = list(sim.ledger)
    by_client = sim.ledger.by_client_id()
    orders = {(f.market, f.order_id) for f in fills}
    placed = {  # accepted order requests by client order id -> order type
        r.params.get("newClientOrderId"): r.params.get("type", "")
        for r in sim.requests
        if r.method == "POST" and r.path == "/api/v3/order" and r.status == 200
    }
    stops = sum(1 for kind in placed.values() if kind.startswith(("STOP", "TAKE_PROFIT")))
    doubled = [c for c in by_client if len(sim.ledger.order_ids(c)) > 1]
    path = settings.paths()["home"] / "exchange_fills.csv"
    write_exchange_fills(sim, path)
    return [
        f"  orders went through ccxt to the local exchange ({sim.base_url}, Binance spot API): "
        f"{len(placed)} placed"
        + (f" ({stops} of them exchange-side stops)" if stops else "")
        + f", {len(orders)} filled in {len(fills)} fill(s), {len(doubled)} client order id(s) "
        "filled twice",
        f"  the exchange's ledger: {path}",
    ]
