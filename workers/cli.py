"""``ocw``: the command line of the engine.

Every command reads its settings from the environment / ``.env`` through ``Settings``; flags
override them for one run. Problems the user can fix are printed as one clear line (exit 2).
Entry points end with ``os._exit`` after a clean shutdown: the Temporal SDK's native threads can
otherwise abort the interpreter at exit (sdk-python issue 300).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from activities.db import DatabaseUnavailable
from trading.config import Settings
from workers.temporal_env import SetupError

log = logging.getLogger("ocw")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("temporalio", "websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_settings(overrides: dict[str, object] | None = None) -> Settings:
    try:
        settings = Settings()
        if overrides:
            settings = Settings(**{**settings.model_dump(), **overrides})
        return settings
    except SettingsError as err:
        raise SetupError(f"invalid settings: {err}") from None
    except ValidationError as err:
        problems = "; ".join(
            f"OCW_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in err.errors()
        )
        raise SetupError(f"invalid settings: {problems}") from None


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[int | None]]) -> int:
    """Run ``main(stop)`` with Ctrl-C / SIGTERM setting ``stop``; return its exit code."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return int(await main(stop) or 0)

    return asyncio.run(runner())


# ------------------------------------------------------------------ commands


def cmd_server(args: argparse.Namespace) -> int:
    from workers.temporal_env import start_dev_server, stop_process

    settings = load_settings()
    paths = settings.paths()
    paths["logs"].mkdir(parents=True, exist_ok=True)
    proc = start_dev_server(settings, log_file=paths["logs"] / "temporal.log", ui=not args.headless)
    print(f"Temporal dev server on {settings.temporal_address}, state in {paths['temporal_db']}")
    if not args.headless:
        print(f"Web UI: http://localhost:{settings.temporal_ui_port}")

    async def main(stop: asyncio.Event) -> int:
        while not stop.is_set() and proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return 0 if stop.is_set() else 1

    code = run_until_stopped(main)
    stop_process(proc)
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.trading_worker import run_trading_worker

    settings = load_settings()
    return run_until_stopped(lambda stop: run_trading_worker(settings, stop))


def _parse_time(text: str | None) -> int | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def cmd_listen(args: argparse.Namespace) -> int:
    from workers.listener_worker import ListenerService, ReplayOptions

    overrides: dict[str, object] = {}
    if args.arena:
        from workers.arena import listener_settings, read_arena

        arena = read_arena(load_settings())
        if arena is None:
            raise SetupError("no arena defined under OCW_HOME: `ocw arena start` first")
        overrides.update(listener_settings(load_settings(), arena))
    replay = None
    if args.replay:
        missing = [f for f in args.replay if not Path(f).is_file()]
        if missing:
            raise SetupError(f"replay file not found: {', '.join(missing)}")
        if args.updates_per_bar < 0:
            raise SetupError("--updates-per-bar must be >= 0")
        overrides.update({"mode": "replay", "speed": args.speed})
        replay = ReplayOptions(
            files=[Path(f) for f in args.replay],
            speed=args.speed,
            days=args.days,
            warmup_days=args.warmup_days,
            start_ms=_parse_time(args.start),
            # parity test (tests/integration/test_parity.py): 0 = closed frames only, so the
            # tick stays at a candle's close until the next base bar closes
            updates_per_bar=args.updates_per_bar,
            lockstep=args.lockstep,
        )
    elif args.lockstep:
        raise SetupError("--lockstep paces a replay: use it with --replay FILE...")
    settings = load_settings(overrides)
    service = ListenerService(settings, replay)
    if replay is not None:
        plan = service.prepare_replay()
        print(f"replaying {plan.days:.1f} days at speed {args.speed:g}", flush=True)

    async def main(stop: asyncio.Event) -> int:
        await service.run(stop, exit_when_replay_done=args.exit_when_done)
        print(json.dumps(service.stats(), default=str), flush=True)
        return 0

    return run_until_stopped(main)


def cmd_status(args: argparse.Namespace) -> int:
    from trading.leaderboard import render as render_board
    from workers.arena import arena_board, read_arena
    from workers.health_view import listener_text
    from workers.status_view import render_status
    from workers.temporal_env import connect
    from workflows.decision import DecisionWorkflow

    settings = load_settings()
    arena = read_arena(settings)
    arena = arena if arena is not None and arena.running else None

    async def main(stop: asyncio.Event) -> int:
        client = await connect(settings)
        handle = client.get_workflow_handle(settings.decision_workflow_id)
        try:
            view = await handle.query(DecisionWorkflow.status)
        except Exception as err:  # noqa: BLE001 - reported as a user-level problem
            if arena is not None and settings.account not in arena.accounts():
                board = await arena_board(client, arena)  # an arena's home: its board
                print(board.model_dump_json(indent=2) if args.json else render_board(board))
                return 0
            print(await listener_text(client, settings))  # the listener's side is worth seeing
            if "Workflow Task in failed state" in str(err):
                raise SetupError(
                    f"{settings.decision_workflow_id} runs but its workflow task keeps failing "
                    "(see the worker log; a non-determinism error is recovered with "
                    "`temporal workflow reset --type LastWorkflowTask`, docs/upgrades.md)"
                ) from None
            raise SetupError(
                f"no DecisionWorkflow {settings.decision_workflow_id} to query ({err}); "
                "start it with `ocw worker` (or `ocw account init`)"
            ) from None
        print(view.model_dump_json(indent=2) if args.json else render_status(view))
        if not args.json:
            print(await listener_text(client, settings))  # gate counters, stream, sentiment
            if arena is not None:  # agent vs agent: how this account compares
                print(render_board(await arena_board(client, arena)))
        return 0

    return run_until_stopped(main)


def cmd_trades(args: argparse.Namespace) -> int:
    from activities.journal import Journal

    settings = load_settings()
    db = settings.paths()["journal_db"]
    if settings.db_url is None and not db.exists():
        raise SetupError(
            f"no journal at {db}: nothing has traded yet under OCW_HOME={settings.home}"
        )
    journal = Journal.from_settings(settings)
    account = None if args.all_accounts else settings.account
    if args.csv:
        journal.export_csv(args.kind, sys.stdout, account=account)
        return 0
    summary = journal.summary(account) if account else None
    rows = getattr(journal, args.kind)(account)
    if args.json or not sys.stdout.isatty():  # a pipe gets one JSON object a line
        for row in rows:
            print(
                row.model_dump_json()
                if hasattr(row, "model_dump_json")
                else json.dumps(row, default=str)
            )
        if summary and args.kind == "trades":
            print(json.dumps(summary, default=str))
        return 0
    from workers.journal_table import render

    print(render(args.kind, rows))
    if summary and args.kind == "trades" and rows:
        print(
            f"{summary['n_trades']} trades, {summary['wins']} won ({summary['win_rate']:.0%}), "
            f"pnl {summary['total_pnl']:+,.2f}, fees {summary['total_fees']:,.2f}"
        )
    return 0


def _signal(name: str) -> Callable[[argparse.Namespace], int]:
    """``wake`` is a signal; ``halt``, ``resume`` and ``close_all`` are updates that answer
    (the same names also work as signals, for `temporal workflow signal`)."""

    def command(args: argparse.Namespace) -> int:
        from temporalio.client import WorkflowUpdateFailedError

        from workers.account import warm_update
        from workers.temporal_env import connect

        settings = load_settings()

        async def main(stop: asyncio.Event) -> int:
            client = await connect(settings)
            handle = client.get_workflow_handle(settings.decision_workflow_id)
            payload = {"reason": args.reason} if args.reason else {}
            try:
                if name == "wake":
                    await handle.signal(name, payload)
                    print(f"sent {name} to {settings.decision_workflow_id}")
                else:
                    answer = await warm_update(handle, name, payload)
                    print(f"{settings.decision_workflow_id}: {answer}")
            except WorkflowUpdateFailedError as err:
                raise SetupError(f"{name} refused: {err.cause or err}") from None
            except Exception as err:  # noqa: BLE001 - one line for the user
                raise SetupError(
                    f"{name}: no running account {settings.decision_workflow_id} ({err}); "
                    "start it with `ocw worker` or `ocw account init`"
                ) from None
            return 0

        return run_until_stopped(main)

    return command


def cmd_account(args: argparse.Namespace) -> int:
    """``ocw account init | reset | show``: the trading side owns the account."""
    from activities.paper_broker import PaperBroker
    from workers.account import (
        broker_seed,
        configure_account,
        describe_account,
        ensure_account,
        reset_account,
    )
    from workers.brokers import build_broker
    from workers.temporal_env import connect

    settings = load_settings()

    async def main(stop: asyncio.Event) -> int:
        client = await connect(settings)
        wid = settings.decision_workflow_id
        if args.action == "show":
            state = await describe_account(client, wid)
            print(f"account {settings.account}: {wid} {state.status}")
            return 0 if state.running else 1
        if args.action == "init":
            if settings.mode in ("live", "testnet"):
                exchange = build_broker(settings)
                try:
                    state = await ensure_account(client, settings, exchange=exchange)
                finally:
                    await exchange.close()
            else:
                broker = PaperBroker(
                    settings.paths()["broker_db"], initial_cash=settings.initial_cash
                )
                state = await ensure_account(client, settings, broker)
            print(f"account {settings.account}: {wid} {'created' if state.created else 'running'}")
            with contextlib.suppress(Exception):  # answered when a worker serves it
                print(await asyncio.wait_for(configure_account(client, settings), 5))
            return 0
        if settings.mode in ("live", "testnet"):
            raise SetupError("ocw account reset reconciles with the paper broker only for now")
        broker = PaperBroker(settings.paths()["broker_db"], initial_cash=settings.initial_cash)
        seed = broker_seed(broker, args.reason)
        state = await describe_account(client, wid)
        print(f"account {settings.account}: {wid} is {state.status}")
        print(f"the broker holds cash {seed.cash:,.2f} and {len(seed.holdings)} holding(s):")
        for h in seed.holdings:
            print(f"  {h.symbol:<10} {h.qty:.8g} @ {h.avg_entry:,.8g} (cost {h.cost:,.2f})")
        print("a new run starts from these books, adopting each holding with its own watcher;")
        print("the old run and its position workflows are terminated.")
        if not args.yes:
            if not sys.stdin.isatty():
                raise SetupError("ocw account reset needs --yes when not run from a terminal")
            typed = input(f"type the account name ({settings.account}) to confirm: ").strip()
            if typed != settings.account:
                print("not confirmed: nothing changed")
                return 1
        seed, stopped = await reset_account(client, settings, broker, args.reason)
        print(
            f"account {settings.account} reset: stopped {len(stopped)} watcher(s), new run started"
        )
        return 0

    return run_until_stopped(main)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """``ocw reconcile [--dry-run]``: the exchange against the workflows' books."""
    from activities.journal import Journal
    from workers.brokers import build_broker
    from workers.reconcile import run_reconcile
    from workers.temporal_env import connect

    settings = load_settings()

    async def main(stop: asyncio.Event) -> int:
        broker = build_broker(settings)  # a mode that cannot run is refused before anything
        try:
            client = await connect(settings)
            report = await run_reconcile(
                client,
                settings,
                broker,
                dry_run=args.dry_run,
                source="cli",
                journal=Journal.from_settings(settings),
            )
        except SetupError:
            raise
        except Exception as err:  # noqa: BLE001 - one clear line, not a traceback
            raise SetupError(f"reconciliation failed: {type(err).__name__}: {err}") from None
        finally:
            await broker.close()
        if args.json:
            print(report.model_dump_json(indent=2))
        else:
            print("\n".join(report.lines()))
        return 0 if report.ok else 1

    return run_until_stopped(main)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``ocw dashboard``: the web page and its REST API, on 127.0.0.1 unless told otherwise."""
    import uvicorn

    from workers.api import create_app
    from workers.temporal_env import connect, ensure_can_listen

    overrides: dict[str, object] = {}
    if args.port:
        overrides["dashboard_port"] = args.port
    if args.host:
        overrides["dashboard_host"] = args.host
    settings = load_settings(overrides)
    ensure_can_listen(
        settings.dashboard_host,
        settings.dashboard_port,
        "stop what uses it or pass --port (or OCW_DASHBOARD_PORT)",
    )

    async def main(stop: asyncio.Event) -> int:
        client = await connect(settings)
        token = settings.api_token.get_secret_value() if settings.api_token else None
        app = create_app(client, settings, token=token)
        config = uvicorn.Config(
            app,
            host=settings.dashboard_host,
            port=settings.dashboard_port,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        print(
            f"dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}/ "
            f"(API /api, schema /docs; control {'on' if token else 'off: set OCW_API_TOKEN'})",
            flush=True,
        )
        serving = asyncio.create_task(server.serve())
        await asyncio.wait(
            [serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        server.should_exit = True
        await serving
        return 0

    return run_until_stopped(main)


def cmd_mcp(args: argparse.Namespace) -> int:
    """``ocw mcp``: the read-only views as an MCP server (stdio, or streamable HTTP on
    127.0.0.1 with --http); control tools only with OCW_MCP_CONTROL=true (workers/mcp_server.py)."""
    from workers.mcp_server import claude_desktop_config, run_mcp

    settings = load_settings()
    if args.print_config:
        print(claude_desktop_config(settings))
        return 0
    return run_until_stopped(lambda stop: run_mcp(settings, stop, http=args.http, port=args.port))


def cmd_setup(args: argparse.Namespace) -> int:
    """``ocw setup``: prepare a Temporal server for the engine (its search attributes)."""
    from workers.search_setup import register_search_attributes
    from workers.temporal_env import connect

    settings = load_settings()

    async def main(stop: asyncio.Event) -> int:
        client = await connect(settings)
        ok, text = await register_search_attributes(client, settings.temporal_namespace)
        print(f"{settings.temporal_address} namespace {settings.temporal_namespace}: {text}")
        return 0 if ok else 1

    return run_until_stopped(main)


def cmd_settings(args: argparse.Namespace) -> int:
    """``ocw settings``: every setting, its value and where it came from; secrets masked."""
    settings = load_settings()
    rows = settings_sources(settings)
    if args.json:
        print(json.dumps({name: {"value": v, "source": src} for name, v, src in rows}, indent=2))
        return 0
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value}  ({source})")
    return 0


def settings_sources(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, shown value, source) per setting: environment, .env, or default."""
    from dotenv import dotenv_values

    from trading.config import SECRET_FIELDS

    dotenv = (
        {k.upper(): v for k, v in dotenv_values(".env").items()} if Path(".env").exists() else {}
    )
    rows: list[tuple[str, str, str]] = []
    for name, field in type(settings).model_fields.items():
        names = [f"OCW_{name.upper()}"]
        alias = field.validation_alias
        if alias is not None:
            choices = getattr(alias, "choices", [alias])
            names = [str(c).upper() for c in choices if isinstance(c, str)] + names
        env = next((n for n in names if n in os.environ), None)
        dot = next((n for n in names if n in dotenv), None)
        source = f"env {env}" if env else (f".env {dot}" if dot else "default")
        value = getattr(settings, name)
        if name in SECRET_FIELDS:
            shown = "set (hidden)" if value is not None else "unset"
        else:
            plain = isinstance(value, str | Path) or value is None
            shown = str(value) if plain else json.dumps(value, default=str)
        shown_name = env or dot or names[0]
        rows.append((shown_name, shown, source))
    return rows


def cmd_arena(args: argparse.Namespace) -> int:
    """``ocw arena start | status | stop``: agents on one feed, and their leaderboard."""
    from trading.leaderboard import render as render_board
    from workers.arena import (
        arena_board,
        arena_path,
        build_arena,
        check_exchange_accounts,
        describe,
        load_arena_file,
        read_arena,
        resume_agents,
        run_arena,
        split_agents,
        stop_arena,
        write_arena,
    )
    from workers.temporal_env import connect

    settings = load_settings()
    current = read_arena(settings)
    if args.action == "start":
        shared: dict[str, object] = {}
        if args.symbols:
            shared["symbols"] = args.symbols
        if args.initial_cash is not None:
            shared["initial_cash"] = args.initial_cash
        if args.file:
            arena = load_arena_file(Path(args.file), settings.llm_model)
            arena = arena.model_copy(update={"settings": {**arena.settings, **shared}})
            if args.name:
                arena = arena.model_copy(update={"name": args.name})
        elif args.agents:
            arena = build_arena(
                split_agents(args.agents),
                args.name or "arena",
                shared,
                settings.llm_model,
                Path.cwd(),
            )
        elif current is not None:
            arena = current  # `ocw arena start` again: the arena defined here
        else:
            raise SetupError("ocw arena start needs --agents rule,claude:<model>,... or --file")
        resumed = current is not None and current.same_agents(arena)
        if current is not None and not resumed and not args.replace:
            raise SetupError(
                f"{arena_path(settings)} defines arena {current.name!r} with other agents "
                f"({', '.join(current.accounts())}); stop it with `ocw arena stop` and start "
                "this one under another --name, or pass --replace"
            )
        if resumed:
            arena = arena.model_copy(
                update={"started_at_ms": current.started_at_ms, "stopped_at_ms": None}
            )
        else:
            arena = arena.model_copy(update={"started_at_ms": int(time.time() * 1000)})
        check_exchange_accounts(settings, arena)  # before anything is written or started
        write_arena(settings, arena)
        print("\n".join(describe(arena)), flush=True)
        print(
            "listener: `ocw listen --arena` (live) or `ocw listen --arena --replay FILE...`; "
            "leaderboard: `ocw arena status`",
            flush=True,
        )

        async def main(stop: asyncio.Event) -> int:
            if resumed and current is not None and not current.running:
                client = await connect(settings)
                asyncio.get_running_loop().create_task(resume_agents(client, arena))
            await run_arena(settings, arena, stop)
            return 0

        return run_until_stopped(main)
    if current is None:
        raise SetupError(f"no arena defined under OCW_HOME={settings.home}: `ocw arena start`")
    arena = current

    async def show(stop: asyncio.Event) -> int:
        client = await connect(settings)
        if args.action == "stop":
            for line in await stop_arena(
                client, settings, arena, close=not args.keep_positions, wait_s=args.wait
            ):
                print(line)
        board = await arena_board(client, read_arena(settings) or arena)
        print(board.model_dump_json(indent=2) if args.json else render_board(board))
        return 0

    return run_until_stopped(show)


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.demo import run_demo

    return run_demo(args)


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocw",
        description="OCW: durable, event-driven crypto trading on Temporal. "
        "Settings come from OCW_* environment variables or .env (`ocw settings` lists every one with its value and source).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("server", help="run the embedded Temporal dev server (state in OCW_HOME)")
    p.add_argument("--headless", action="store_true", help="no web UI")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("worker", help="run the trading worker (decision and position workflows)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "listen", help="run the market listener (Binance, or a replay with --replay)"
    )
    p.add_argument(
        "--replay",
        nargs="+",
        metavar="FILE",
        help="CSV files to replay (binance_BTCUSDT_1h.csv, ...)",
    )
    p.add_argument("--speed", type=float, default=60.0, help="replay speed factor (default 60)")
    p.add_argument(
        "--days", type=float, default=None, help="days of market to replay (default: all)"
    )
    p.add_argument(
        "--warmup-days", type=float, default=40.0, help="history loaded before the replay"
    )
    p.add_argument(
        "--start", default=None, help="replay start, ISO UTC (default: last --days of data)"
    )
    p.add_argument(
        "--updates-per-bar",
        type=int,
        default=4,
        help="in-progress frames per replayed bar before its closed frame (default 4)",
    )
    p.add_argument("--exit-when-done", action="store_true", help="exit when the replay is over")
    p.add_argument(
        "--lockstep",
        action="store_true",
        help="replay: after each bar, wait until every woken account has finished its cycle "
        "(results independent of machine speed)",
    )
    p.add_argument(
        "--arena",
        action="store_true",
        help="wake every agent of the arena under OCW_HOME (`ocw arena start`) from this feed",
    )
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("demo", help="replay real (or generated) bars through the whole engine")
    p.add_argument("--days", type=float, default=14.0, help="days of market to replay (default 14)")
    p.add_argument(
        "--duration", type=float, default=120.0, help="wall seconds for the replay (default 120)"
    )
    p.add_argument(
        "--data", default=None, help="folder of binance_<SYM>_1h.csv files (default ../shared/data)"
    )
    p.add_argument("--generated", action="store_true", help="use the built-in generated market")
    p.add_argument("--keep", action="store_true", help="keep the server and web UI up at the end")
    p.add_argument(
        "--exchange-sim",
        action="store_true",
        help="trade through ccxt on a local Binance-compatible exchange instead of the paper broker",
    )
    p.add_argument(
        "--arena",
        action="store_true",
        help="agent vs agent: Claude (a local stand-in of the Messages API unless --claude-api) "
        "against the rule policy and a policy family on the same replay, then the leaderboard",
    )
    p.add_argument(
        "--agents",
        action="append",
        default=[],
        metavar="SPEC,...",
        help="with --arena: the agents (default rule,claude:<OCW_LLM_MODEL>,family:trend_tsmom)",
    )
    p.add_argument(
        "--claude-api",
        action="store_true",
        help="with --arena: the real Messages API with the environment's key (costs money)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "arena",
        help="agent vs agent: accounts with their own deciders on one feed, and a leaderboard",
        description="start: one account (and trading worker) per agent, all on the same "
        "symbols, costs and limits; run `ocw listen --arena` beside it. status: the "
        "leaderboard. stop: halt every agent and close its positions.",
    )
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument(
        "--agents",
        action="append",
        default=[],
        metavar="SPEC,...",
        help="rule | claude[:<model>[:<prompt-file>]] | family:<name>[:<param>=<value>...], "
        "each with an optional :name=<name>; comma-separated, repeatable",
    )
    p.add_argument("--file", help="an arena file (TOML or JSON: name, [settings], [[agents]])")
    p.add_argument("--name", default=None, help="the arena's name, the accounts' prefix (arena)")
    p.add_argument(
        "--symbols",
        type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
        default=None,
        help="the universe of every agent (default OCW_SYMBOLS)",
    )
    p.add_argument("--initial-cash", type=float, default=None, help="each agent's cash")
    p.add_argument("--replace", action="store_true", help="replace another arena's definition")
    p.add_argument(
        "--keep-positions", action="store_true", help="stop: halt entries, keep what is open"
    )
    p.add_argument("--wait", type=float, default=60.0, help="stop: seconds to wait for flat")
    p.add_argument("--json", action="store_true", help="the leaderboard as JSON")
    p.set_defaults(func=cmd_arena)

    p = sub.add_parser(
        "status", help="query the DecisionWorkflow: portfolio, positions, gate, last decision"
    )
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("dashboard", help="the web dashboard and its REST API (127.0.0.1:8765)")
    p.add_argument("--port", type=int, default=None, help="default OCW_DASHBOARD_PORT, 8765")
    p.add_argument("--host", default=None, help="default OCW_DASHBOARD_HOST, 127.0.0.1")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("mcp", help="MCP server for Claude Desktop / Code (stdio; --http on 8766)")
    p.add_argument("--http", action="store_true", help="streamable HTTP on 127.0.0.1, path /mcp")
    p.add_argument("--port", type=int, default=8766, help="HTTP port (default 8766)")
    p.add_argument(
        "--print-config", action="store_true", help="print the Claude Desktop config entry"
    )
    p.set_defaults(func=cmd_mcp)

    p = sub.add_parser("setup", help="register the engine's search attributes on the server")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("settings", help="every setting, its value and source (secrets masked)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser(
        "reconcile", help="compare the exchange with the books; cancel the engine's orphans"
    )
    p.add_argument("--dry-run", action="store_true", help="print what it would do, do nothing")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("trades", help="read the trade journal")
    p.add_argument("--csv", action="store_true", help="export as CSV to stdout")
    p.add_argument("--json", action="store_true", help="one JSON object a line (a pipe's default)")
    p.add_argument(
        "--kind",
        choices=["fills", "trades", "decisions", "incidents", "income", "reconciliations"],
        default="trades",
    )
    p.add_argument(
        "--all-accounts", action="store_true", help="every account, not only OCW_ACCOUNT"
    )
    p.set_defaults(func=cmd_trades)

    from workers.data_cli import add_data_command

    add_data_command(sub)

    p = sub.add_parser(
        "account", help="the account's DecisionWorkflow: init (create if new), reset, show"
    )
    p.add_argument("action", choices=["init", "reset", "show"])
    p.add_argument("--yes", action="store_true", help="reset without asking")
    p.add_argument("--reason", default="reset by hand", help="why (reset), for the history")
    p.set_defaults(func=cmd_account)

    for name, text in (
        ("wake", "wake the DecisionWorkflow now"),
        ("halt", "stop new entries (exits continue)"),
        ("resume", "lift a halt"),
        ("close_all", "exit every open position"),
    ):
        p = sub.add_parser(name.replace("_", "-"), help=text)
        p.add_argument("--reason", default="manual" if name == "wake" else "")
        p.set_defaults(func=_signal(name))

    from workers.backtest_cli import add_parsers as add_backtest_parsers

    add_backtest_parsers(sub)  # backtest, optimize (SPEC §10)

    from workers.alerts_cli import add_parser as add_alerts_parser

    add_alerts_parser(sub)  # alerts test (Telegram, webhook)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code = args.func(args)
    except (SetupError, DatabaseUnavailable) as err:
        print(f"ocw: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `ocw trades | head`: the reader left, nothing to report
        code = 0
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    with contextlib.suppress(BrokenPipeError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
