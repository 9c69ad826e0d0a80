"""Agent vs agent on an exchange (testnet mode): each agent trades its own exchange account.

Two agents (the rule policy and TSMOM) on one replayed feed, ``OCW_MODE=testnet``, each with
``:keys=<PREFIX>`` naming its own key pair; each key pair belongs to its own local Binance
exchange (two ``ExchangeSim``s, the real ccxt client, priced from the listener's price board
as a real exchange is priced by its own market). Every order of an agent reaches its own
exchange and none the other's; each agent's books match its own exchange's balances; and an
arena whose agents would share one account is refused before anything starts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from activities.price_board import PriceBoard
from signals.exchange_sim import ExchangeSim
from tests.integration.procs import decision_status, free_port, has, ocw, run_ocw, wait_for
from trading.config import Settings
from trading.market_data import generate_market, write_ohlcv_csv
from workers.temporal_env import connect, start_dev_server, stop_process

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
DAYS = 3
SECONDS = 12
FAMILY = "family:tsmom:lookback_days=5:vol_days=5"
AGENTS = {"rule": "ARENA_RULE", "tsmom": "ARENA_TSMOM"}


class BoardPrices:
    """The listener's latest prices (its price board in OCW_HOME), re-read every 0.1 s."""

    def __init__(self, settings: Settings) -> None:
        self.board = PriceBoard.from_settings(settings)
        self.name = settings.market_task_queue
        self._read_at = 0.0
        self._prices: dict[str, tuple[float, int]] = {}

    def __call__(self, symbol: str) -> tuple[float, int] | None:
        now = time.monotonic()
        if now - self._read_at > 0.1:
            self._read_at = now
            try:
                board = self.board.read(self.name)
            except Exception:  # noqa: BLE001 - no board yet: no price yet
                board = None
            if board is not None:
                self._prices = {s: (p.price, p.time_ms) for s, p in board.prices.items()}
        return self._prices.get(symbol)


def exchange_holdings(sim: ExchangeSim) -> dict[str, float]:
    """Base assets on the account, free and locked (a protective stop locks what it sells)."""
    out = {}
    for symbol in SYMBOLS:
        base = symbol.split("/")[0]
        qty = float(sim.spot.free.get(base, 0) + sim.spot.locked.get(base, 0))
        if qty > 0:
            out[symbol] = qty
    return out


async def books_match(read, sim: ExchangeSim) -> bool:
    view = await read()
    if view is None:
        return False
    books: dict[str, float] = {}
    for p in view.positions:
        books[p.symbol] = books.get(p.symbol, 0.0) + p.qty
    held = exchange_holdings(sim)
    return set(books) == set(held) and all(
        abs(books[s] - held[s]) <= 1e-6 * max(books[s], held[s]) for s in held
    )


def key_of(agent: str) -> str:
    """A key of Binance's format (64 letters and digits), one per agent."""
    return f"key{agent}".ljust(64, "0")


def secret_of(agent: str) -> str:
    return f"secret{agent}".ljust(64, "1")


def base_env(home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "OCW_LLM_ENABLED": "false",
        "OCW_MODE": "testnet",
        "OCW_MARKET": "spot",
        "OCW_ORDER_TYPE": "market",
    }
    for name in ("OCW_ACCOUNT", "OCW_SYMBOLS", "ANTHROPIC_API_KEY", "BINANCE_API_KEY",
                 "BINANCE_SECRET_KEY", "OCW_BINANCE_API_KEY", "OCW_BINANCE_API_SECRET",
                 "OCW_BINANCE_SPOT_URL"):  # fmt: skip
        env.pop(name, None)
    return env


def test_agents_sharing_one_exchange_account_are_refused(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    shared = run_ocw(["arena", "start", "--agents", f"rule,{FAMILY}"], env)
    assert shared.returncode != 0
    assert "have no exchange account of their own" in shared.stderr, shared.stderr
    same = run_ocw(
        ["arena", "start", "--agents", f"rule:keys=SAME,{FAMILY}:keys=SAME"],
        {**env, "SAME_API_KEY": "k-same", "SAME_SECRET_KEY": "s-same"},
    )
    assert same.returncode != 0 and "the same API key" in same.stderr, same.stderr
    assert "k-same" not in same.stderr + same.stdout and "s-same" not in same.stderr
    assert not (tmp_path / "home" / "arena.json").exists()  # refused before anything is written


async def test_each_agent_trades_on_its_own_exchange_account(tmp_path: Path) -> None:
    home = tmp_path / "home"
    speed = DAYS * 86_400 / SECONDS
    env = base_env(home)
    settings = Settings(home=home, temporal_address=env["OCW_TEMPORAL_ADDRESS"], symbols=SYMBOLS)
    files = [
        write_ohlcv_csv(bars, tmp_path / "market" / f"{sym.replace('/', '')}_1h.csv")
        for sym, bars in generate_market(SYMBOLS, "1h", (DAYS + 45) * 24, seed=13).items()
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    sims: dict[str, ExchangeSim] = {}
    for agent, prefix in AGENTS.items():
        sim = ExchangeSim(
            SYMBOLS,
            price_source=BoardPrices(settings),
            spot_balances={"USDT": 10_000},
            api_keys={key_of(agent): secret_of(agent)},
        )
        await sim.start()
        sims[agent] = sim
        env[f"{prefix}_API_KEY"] = sim.api_key
        env[f"{prefix}_SECRET_KEY"] = sim.secret
        env[f"{prefix}_SPOT_URL"] = sim.base_url
    server = start_dev_server(settings, log_file=logs / "temporal.log", ui=False)
    procs: list[subprocess.Popen] = []
    try:
        agents = f"rule:keys={AGENTS['rule']},{FAMILY}:keys={AGENTS['tsmom']}"
        start = ["arena", "start", "--agents", agents, "--symbols", ",".join(SYMBOLS)]
        procs.append(ocw(start, env, logs / "arena.log"))
        client = await connect(settings, attempts=60, delay_s=0.5)
        handles = {a: client.get_workflow_handle(f"ocw-decision-arena-{a}") for a in AGENTS}

        def status(agent: str):
            return decision_status(handles[agent])

        for agent in handles:
            await wait_for(lambda a=agent: status(a)(), 60, f"account arena-{agent}")
        listen = ["listen", "--arena", "--replay", *map(str, files), "--speed", str(speed)]
        procs.append(ocw([*listen, "--days", str(DAYS)], env, logs / "listen.log"))
        opened = {
            agent: await wait_for(
                lambda a=agent: has(status(a), lambda s: s.counters.positions_opened >= 1),
                timeout=90,
                what=f"arena-{agent} opened a position",
            )
            for agent in handles
        }
        # each agent's books hold what its own exchange account holds (orders settle between
        # ticks: asked until they agree)
        for agent in AGENTS:
            await wait_for(
                lambda a=agent: books_match(status(a), sims[a]),
                30,
                f"arena-{agent}'s books equal to its exchange account",
            )
        # off the loop: the exchanges in this process go on answering the workers meanwhile
        board = await asyncio.to_thread(run_ocw, ["arena", "status"], env)
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(server)
        for sim in sims.values():
            await sim.stop()

    arena_log = (logs / "arena.log").read_text()
    for agent, sim in sims.items():
        other = "tsmom" if agent == "rule" else "rule"
        fills = list(sim.ledger)
        assert fills, f"no order of arena-{agent} reached its exchange:\n{arena_log[-3000:]}"
        ids = {f.client_order_id for f in fills}
        assert all(i.startswith(f"arena-{agent}-") for i in ids), ids  # its own orders only
        assert not any(i.startswith(f"arena-{other}-") for i in ids)
        # this exchange knows only this agent's key: no signed request of its was refused
        assert not [r for r in sim.requests if r.code in (-2014, -2015, -1022)]
        view = opened[agent]
        assert view.config.mode == "testnet" and view.account == f"arena-{agent}"
        bought = {f.symbol for f in fills if f.side == "BUY"}
        assert {p.symbol.replace("/", "") for p in view.positions} <= bought
    assert board.returncode == 0, board.stderr
    assert "ARENA_RULE_API_KEY" in arena_log  # the start names each agent's variables
    assert not any(secret_of(a) in arena_log or key_of(a) in arena_log for a in AGENTS)
