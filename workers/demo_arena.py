"""``ocw demo --arena``: agents against each other on one replay, then the leaderboard.

The demo's machinery (dev server under OCW_HOME/demo, a replay on a fast clock, the listener in
this process) with an arena instead of one account: ``ocw arena start`` runs as its own process
(one trading worker per agent), the listener wakes every agent's account from the same feed,
and Claude answers through a local stand-in of the Messages API (``signals/claude_standin.py``)
unless ``--claude-api`` asks for the real one with the environment's key. At the end every
agent's positions are closed and the leaderboard is printed, with each paper broker's books
checked against its workflow's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from activities.paper_broker import PaperBroker
from trading.config import Settings
from trading.leaderboard import render as render_board
from workers.arena import (
    ArenaSpec,
    agent_settings,
    arena_board,
    build_arena,
    describe,
    listener_settings,
    split_agents,
    write_arena,
)
from workers.demo import demo_files, poll_until, reach_commands, settings_env
from workers.status_view import fmt_time, render_decision, render_trade
from workers.temporal_env import SetupError, connect, start_dev_server, stop_process

ARENA_NAME = "demo"


def default_agents(settings: Settings) -> list[str]:
    return ["rule", f"claude:{settings.llm_model}", "family:trend_tsmom"]


def run_arena_demo(args: argparse.Namespace) -> int:
    from workers.cli import load_settings, run_until_stopped

    if args.exchange_sim:
        raise SetupError("--arena trades on paper brokers: leave out --exchange-sim")
    base = load_settings()
    home = base.home / "demo"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    speed = args.days * 86_400 / args.duration
    overrides: dict[str, object] = {"home": home, "mode": "replay", "speed": speed}
    settings = load_settings(overrides)
    agents = split_agents(args.agents) or default_agents(settings)
    arena = build_arena(agents, ARENA_NAME, {}, settings.llm_model, Path.cwd())
    write_arena(settings, arena.model_copy(update={"started_at_ms": int(time.time() * 1000)}))
    history = max([45.0, *(_history_days(a.policy) + 10 for a in arena.agents)])
    logs = settings.paths()["logs"]
    logs.mkdir(parents=True, exist_ok=True)
    files, source = demo_files(args, settings, home, history_days=history)
    print(
        f"OCW arena demo: {args.days:g} days of {source}, replayed in ~{args.duration:g}s "
        f"(speed {speed:,.0f}x)"
    )
    print("\n".join(describe(arena)))
    server = start_dev_server(settings, log_file=logs / "temporal.log", ui=True)
    print(f"Temporal dev server up; web UI http://localhost:{settings.temporal_ui_port}")
    procs: list[subprocess.Popen] = []
    try:
        return run_until_stopped(
            lambda stop: _arena_demo(stop, args, settings, overrides, arena, files, procs)
        )
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(server)


def _history_days(policy: str) -> float:
    if not policy.startswith("family:"):
        return 0.0
    from trading.policies.live import parse_policy

    return float(parse_policy(policy).history_days())


def _start_arena(settings: Settings, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "arena", "start"],
        env={**settings_env(settings), **env},
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _arena_demo(
    stop: asyncio.Event,
    args: argparse.Namespace,
    settings: Settings,
    overrides: dict[str, object],
    arena: ArenaSpec,
    files: list[Path],
    procs: list[subprocess.Popen],
) -> int:
    from workers.cli import load_settings
    from workers.listener_worker import ListenerService, ReplayOptions
    from workflows.decision import DecisionWorkflow

    standin = None
    env: dict[str, str] = {"OCW_WAKE_ACCOUNTS": "[]"}
    if any(a.kind == "claude" for a in arena.agents):
        if args.claude_api:
            print("Claude: the real Messages API, with the environment's key (this costs money)")
        else:
            from signals.claude_standin import ClaudeStandIn

            standin = await ClaudeStandIn().start()
            env.update(
                {
                    "ANTHROPIC_BASE_URL": standin.base_url,
                    "ANTHROPIC_API_KEY": standin.api_key,
                    "ANTHROPIC_AUTH_TOKEN": "",
                    "OCW_LLM_DAILY_BUDGET_USD": "5",  # the stand-in bills nothing
                }
            )
            print(
                f"Claude: a local stand-in of the Messages API at {standin.base_url} (a simple "
                "trend reader answering through the real client, tool schema and validation; "
                "--claude-api for the real model)"
            )
    procs.append(_start_arena(settings, env, settings.paths()["logs"] / "arena.log"))
    listener = load_settings({**overrides, **listener_settings(settings, arena)})
    service = ListenerService(
        listener, ReplayOptions(files=files, speed=settings.speed, days=args.days)
    )
    plan = service.prepare_replay()
    print(f"market {fmt_time(plan.start_ms)} -> {fmt_time(plan.end_ms)} UTC")
    for line in reach_commands(agent_settings(settings, arena, arena.agents[0])):
        print(line)
    print(f"  OCW_HOME={settings.home} .venv/bin/ocw arena status   # the leaderboard")
    listener_stop = asyncio.Event()
    running = asyncio.create_task(service.run(listener_stop))
    client = await connect(settings, attempts=30)
    handles = {
        a.name: client.get_workflow_handle(f"ocw-decision-{arena.account(a)}") for a in arena.agents
    }
    width = max(len(n) for n in handles)
    printed: set[tuple[str, object]] = set()

    async def poll() -> None:
        for name, handle in handles.items():
            with contextlib.suppress(Exception):
                view = await handle.query(DecisionWorkflow.state)
                for entry in view.decision_log:
                    if entry.done and (name, entry.cycle) not in printed:
                        printed.add((name, entry.cycle))
                        if entry.actions:
                            print(f"  {name:<{width}} {render_decision(entry)}", flush=True)
                for trade in view.recent_trades:
                    if (name, trade.trade_id) not in printed:
                        printed.add((name, trade.trade_id))
                        print(f"  {name:<{width}} exit {render_trade(trade)}", flush=True)

    async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        return await poll_until(cond, timeout, stop=stop, poll=poll, every_s=0.5)

    async def replay_done() -> bool:
        return service.server is not None and service.server.done.is_set()

    async def idle() -> bool:
        for handle in handles.values():
            view = await handle.query(DecisionWorkflow.status)
            if view.queue_length or view.busy:
                return False
        return service.replay_finished.is_set()

    async def flat() -> bool:
        for handle in handles.values():
            if (await handle.query(DecisionWorkflow.status)).positions:
                return False
        return True

    started = time.monotonic()
    try:
        await wait_for(replay_done, timeout=args.duration * 10 + 90)
        if stop.is_set():
            print("interrupted")
            return 130
        print(f"replay over after {time.monotonic() - started:.0f}s; closing open positions")
        await wait_for(idle, timeout=60)
        for handle in handles.values():
            await handle.signal(DecisionWorkflow.close_all)
        await wait_for(flat, timeout=60)
        await poll()
        board = await arena_board(client, arena)
        print("=" * 100)
        print(render_board(board))
        for agent in arena.agents:
            s = agent_settings(settings, arena, agent)
            view = await handles[agent.name].query(DecisionWorkflow.status)
            paper = PaperBroker(s.paths()["broker_db"], initial_cash=s.initial_cash)
            books = paper.balances()
            paper.close()
            agree = abs(books.cash - view.portfolio.cash) < 1e-6 * s.initial_cash
            agree = agree and not books.holdings
            print(
                f"  {agent.name:<{width}} paper broker cash {books.cash:,.2f}: "
                f"{'agrees with' if agree else 'DIFFERS from'} the workflow's books; "
                f"{view.counters.cycles} cycles, decided last by {view.llm.decided_by if view.llm else '-'}"
            )
        if standin is not None:
            print(f"  the Messages API stand-in answered {standin.calls} call(s)")
        print("=" * 100, flush=True)
        if args.keep and not stop.is_set():
            print(f"server and web UI stay up: http://localhost:{settings.temporal_ui_port}")
            await stop.wait()
        return 0
    finally:
        listener_stop.set()
        with contextlib.suppress(Exception):
            await running
        for proc in procs:
            await asyncio.to_thread(stop_process, proc)
        if standin is not None:
            await standin.stop()
