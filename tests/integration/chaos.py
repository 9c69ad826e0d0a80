"""Chaos over one replay: the whole engine as processes, killed and restarted at random, audited.

``run_chaos`` runs one replay (a generated market, or ``../shared/data`` when asked) through the
dev server, ``ocw worker`` and ``ocw listen --replay`` as separate processes, exactly as a user
starts them. During the replay it SIGKILLs the worker a given number of times (a short pause,
then a new one), SIGKILLs the listener once (restarted with the same replay arguments) and
restarts the dev server once on its DB file (stopped, started again on the same ``OCW_HOME``).
The moments and pauses come from one seeded ``random.Random``. After the replay: a wake by hand
through the ``temporal`` CLI, ``close_all``, a flat book, and the audit (``ChaosResult``).

A restarted replay listener starts its replay server afresh: its timeline begins again at the
replay's first bar (the global clock belongs to the server, not to the engine), its gate warms
up on the same history and so its wakes for candles the first listener already delivered carry
the same wake ids (market time and reasons): the DecisionWorkflow drops them as retried
deliveries. A wake that differs, or that the first listener never got out, gives a decision on
the replayed past. So the audit reads the decisions as *passes* (cut where their market time
goes back) and counts a candle as handled when any pass handled it; the books need nothing
special (open positions of the first pass just see the second pass's prices, which is what
such a restart does to a paper account).

Shared by ``tests/integration/test_chaos.py`` (a few kills, asserts) and ``bench/chaos.py``
(20 kills, prints ``result.lines()``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.journal import Journal
from activities.paper_broker import PaperBroker
from signals.replay_plan import plan_replay
from signals.replay_server import load_replay_bars
from tests.integration.procs import file_has, free_port, ocw, wait_for
from trading.config import Settings, interval_seconds
from trading.market_data import find_symbol_csv, generate_market, write_ohlcv_csv
from trading.models import OrderStatus, Side
from trading.state import DecisionState, StatusView
from workers.temporal_env import connect, find_binary, start_dev_server, stop_process
from workflows.decision import DecisionWorkflow

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"]
DECISION_INTERVAL = "4h"
WARMUP_DAYS = 40.0
POSITION_PREFIX = "ocw-position-"
NOT_OK = ("FAILED", "TERMINATED", "TIMED_OUT", "CANCELED")
# workflow task failures that are Temporal's normal business (a signal racing a completion,
# a sticky queue reset after a lost worker), not a sign of broken workflow code
BENIGN_TASK_FAILURES = ("UNHANDLED_COMMAND", "RESET_STICKY_TASK_QUEUE")


@dataclass
class ChaosConfig:
    """One chaos run. ``tmp`` holds everything: the engine's home, the market files, the logs."""

    tmp: Path
    seed: int = 1
    worker_kills: int = 4
    listener_kill: bool = True
    server_restart: bool = True
    days: float = 8.0
    replay_seconds: float = 40.0  # wall time of one pass of the replay
    symbols: list[str] = field(default_factory=lambda: list(SYMBOLS))
    data_dir: Path | None = None  # ../shared/data (its last ``days``); None: generated market
    market_seed: int = 11
    account: str = "chaos"
    pause_s: tuple[float, float] = (0.5, 2.0)  # dead time before a killed process is restarted
    manual_wake: bool = True  # a wake by hand through the temporal CLI after the replay
    say: Callable[[str], None] | None = None  # progress lines (the bench prints them)

    @property
    def speed(self) -> float:
        return self.days * 86_400 / self.replay_seconds


@dataclass
class ChaosEvent:
    at_s: float  # seconds since the first listener started
    wall_ms: int
    kind: str  # worker_kill, listener_kill, server_restart, crash
    detail: str = ""


@dataclass
class ChaosResult:
    kills: int = 0  # worker SIGKILLs
    kills_with_open_positions: int = 0
    listener_kills: int = 0
    server_restarts: int = 0
    duplicate_fills: int = 0
    duplicates: list[str] = field(default_factory=list)
    lost_positions: int = 0
    lost: list[str] = field(default_factory=list)
    positions_left: int = 0
    holdings_left: int = 0
    books_agree: bool = False
    book_problems: list[str] = field(default_factory=list)
    failed_workflows: list[str] = field(default_factory=list)
    task_failures: dict[str, int] = field(default_factory=dict)  # cause -> count
    candles_total: int = 0
    candles_missed: int = 0
    missed: list[str] = field(default_factory=list)  # "<symbol> <close time UTC>"
    candle_audit: str = ""  # "exact" (close time in the reason) or "windows"
    candle_windows: dict[str, int] = field(default_factory=dict)  # see missed_candles
    incidents: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # processes that died without our kill
    stalled: list[str] = field(default_factory=list)  # where the engine did not get in time
    manual_wake: str = ""  # "ok", "skipped" or what went wrong
    positions_opened: int = 0
    positions_closed: int = 0
    trades: int = 0
    fills: int = 0
    decisions: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    events: list[ChaosEvent] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    tmp: Path | None = None

    def lines(self) -> list[str]:
        """The figures as ``name: value`` lines (the bench prints them)."""
        c = self.counters
        out = [f"{k}_s: {v:.1f}" for k, v in self.timings.items()]
        out += [
            f"events: {', '.join(f'{e.kind}@{e.at_s:.1f}s' for e in self.events)}",
            f"kills_with_open_positions: {self.kills_with_open_positions}",
            f"listener_kills: {self.listener_kills}",
            f"server_restarts: {self.server_restarts}",
            f"crashes: {len(self.crashes)}"
            + (f" ({'; '.join(self.crashes)})" if self.crashes else ""),
            f"positions_opened: {self.positions_opened}",
            f"positions_closed: {self.positions_closed}",
            f"trades: {self.trades}",
            f"fills: {self.fills}",
            f"decisions_journaled: {self.decisions}",
            f"wakes_received: {c.get('wakes_received', 0)}",
            f"wakes_folded: {c.get('wakes_folded', 0)}",
            f"stale_wakes: {c.get('stale_wakes', 0)}",
            f"watchers_replaced: {c.get('watchers_replaced', 0)}",
            f"continued_as_new: {c.get('continued_as_new', 0)}",
            f"candles_total: {self.candles_total}",
            f"candles_missed: {self.candles_missed} ({self.candle_audit} audit)"
            + (f": {', '.join(self.missed[:8])}" if self.missed else ""),
            "candles_handled_by_window: "
            + (", ".join(f"{k} {v}" for k, v in self.candle_windows.items()) or "-"),
            f"positions_left: {self.positions_left}",
            f"holdings_left: {self.holdings_left}",
            f"failed_workflows: {len(self.failed_workflows)}"
            + (f" ({', '.join(self.failed_workflows)})" if self.failed_workflows else ""),
            "workflow_task_failures: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.task_failures.items())) or "0"),
            f"manual_wake: {self.manual_wake}",
            f"stalled: {len(self.stalled)}"
            + (f" ({'; '.join(self.stalled)})" if self.stalled else ""),
            f"incidents: {len(self.incidents)}",
            *[f"  incident: {text}" for text in self.incidents[:20]],
            *[f"  book problem: {p}" for p in self.book_problems[:20]],
            *[f"  duplicate: {d}" for d in self.duplicates[:20]],
            *[f"  lost: {p}" for p in self.lost[:20]],
            f"chaos_kills: {self.kills}",
            f"chaos_duplicate_fills: {self.duplicate_fills}",
            f"chaos_lost_positions: {self.lost_positions}",
            f"chaos_books_agree: {'yes' if self.books_agree else 'no'}",
        ]
        return out


# ------------------------------------------------------------------ market and candles


def market_files(cfg: ChaosConfig) -> list[Path]:
    if cfg.data_dir is not None:
        files = [find_symbol_csv(cfg.data_dir, s, "1h") for s in cfg.symbols]
        missing = [s for s, f in zip(cfg.symbols, files, strict=True) if f is None]
        if missing:
            raise FileNotFoundError(f"no 1h files for {missing} in {cfg.data_dir}")
        return [f for f in files if f is not None]
    n_bars = int((cfg.days + WARMUP_DAYS + 2) * 24)
    bars = generate_market(cfg.symbols, "1h", n_bars, seed=cfg.market_seed)
    folder = cfg.tmp / "market"
    return [
        write_ohlcv_csv(series, folder / f"{sym.replace('/', '')}_1h.csv")
        for sym, series in bars.items()
    ]


def decision_candles(files: list[Path], days: float) -> dict[str, list[int]]:
    """Close times of every decision-interval candle the replay streams, per symbol: the plan
    of ``ocw listen --replay FILES --days DAYS`` (start floored to the interval)."""
    bars = load_replay_bars(files)
    plan = plan_replay(bars, days=days, warmup_days=WARMUP_DAYS, align_interval=DECISION_INTERVAL)
    span = interval_seconds(DECISION_INTERVAL) * 1000
    out: dict[str, list[int]] = {}
    for symbol, series in plan.replay.items():
        if not series:
            continue
        first, last = series[0].open_time, series[-1].close_time
        start = first - first % span + (span if first % span else 0)
        out[symbol] = [g + span - 1 for g in range(start, last + 1, span) if g + span - 1 <= last]
    return out


@dataclass
class _Record:
    """A decided cycle: from the journal, or the workflow's decision log."""

    cycle: int
    market_ms: int
    wall_ms: int
    reasons: list[str]
    folded: bool


def _parse_candle_reason(reason: str) -> tuple[str, str, int | None] | None:
    """``candle_close:<SYMBOL>:<interval>[:<close ms>]`` -> (symbol, interval, close ms)."""
    if not reason.startswith("candle_close:"):
        return None
    parts = reason.split(":")
    if len(parts) < 3:
        return None
    ms = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
    return parts[1], parts[2], ms


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def decided_records(
    journal_rows: list[dict[str, Any]], state: DecisionState | None
) -> list[_Record]:
    """Every cycle that took a decision: journaled ones, and those in the decision log (whose
    journal write may have failed). Skipped cycles (no market data, decide failed, the rule
    policy waiting for a candle) decided nothing and are not records."""
    records: dict[int, _Record] = {}
    for row in journal_rows:
        cycle = int(str(row["decision_id"]).rsplit("-", 1)[1])
        executed = [str(x) for x in _json_list(row["executed"])]
        records[cycle] = _Record(
            cycle=cycle,
            market_ms=int(row["market_time_ms"] or 0),
            wall_ms=_iso_ms(row["recorded_at"]),
            reasons=[str(x) for x in _json_list(row["wake_reasons"])],
            folded=any(a.startswith("folded ") for a in executed),
        )
    for entry in state.decision_log if state is not None else []:
        if entry.cycle in records or entry.source == "none" or not entry.done:
            continue
        records[entry.cycle] = _Record(
            cycle=entry.cycle,
            market_ms=entry.market_time_ms or 0,
            wall_ms=entry.time_ms,
            reasons=list(entry.wake_reasons),
            folded=any(a.startswith("folded ") for a in entry.actions),
        )
    return [records[k] for k in sorted(records)]


def _json_list(text: Any) -> list[Any]:
    value = json.loads(text) if isinstance(text, str) else text
    return value if isinstance(value, list) else []


def split_passes(records: list[_Record]) -> list[list[_Record]]:
    """Decisions in cycle order, cut where the market time goes back (a new replay timeline)."""
    passes: list[list[_Record]] = []
    for rec in records:
        if not passes or rec.market_ms < passes[-1][-1].market_ms:
            passes.append([])
        passes[-1].append(rec)
    return passes


def missed_candles(
    candles: dict[str, list[int]],
    records: list[_Record],
    events: list[ChaosEvent],
    stats: dict[str, int] | None = None,
) -> tuple[list[tuple[str, int]], str]:
    """Decision candles no decided cycle handled: (missed, "exact" or "windows").

    Exact when the reasons carry the candle's close time (``candle_close:BTC/USDT:4h:<ms>``).
    Reasons without it (``candle_close:BTC/USDT:4h``) cannot tell two candles of a folded cycle
    apart, so the audit reads windows: within a pass, a decided cycle with the symbol's
    candle-close reason at market time M handles the candles closed since the symbol's
    previous such cycle. A window holding more than one candle is explained when the cycle
    folded queued wakes or a chaos event fell between the two cycles (the listener then
    batched the held reasons into one wake); one candle of lag is allowed when the next window
    is empty. Anything else counts its older candles as missed, as do candles after a pass's
    last cycle that no other pass handled. ``stats`` (if given) counts the candles handled in
    windows of one candle, in explained windows of several, and in lagged ones.
    """
    stats = {} if stats is None else stats
    for key in ("single", "explained", "lagged"):
        stats.setdefault(key, 0)
    passes = split_passes(records)
    wanted = {(s, t) for s, times in candles.items() for t in times}
    exact: set[tuple[str, int]] = set()
    has_exact = False
    for rec in records:
        for reason in rec.reasons:
            parsed = _parse_candle_reason(reason)
            if parsed and parsed[1] == DECISION_INTERVAL and parsed[2] is not None:
                has_exact = True
                symbol, _, ms = parsed
                exact.update({(symbol, ms), (symbol, ms - 1)})  # close time or next open
    if has_exact:
        return sorted(wanted - exact), "exact"
    event_walls = sorted(e.wall_ms for e in events)
    handled: set[tuple[str, int]] = set()
    for symbol, times in candles.items():
        reason = f"candle_close:{symbol}:{DECISION_INTERVAL}"
        for recs in passes:
            mine = [r for r in recs if reason in r.reasons]
            windows: list[list[int]] = []
            explained: list[bool] = []
            prev_ms, prev_wall = -1, -1
            for rec in mine:
                windows.append([t for t in times if prev_ms < t <= rec.market_ms])
                explained.append(
                    rec.folded or any(prev_wall < w <= rec.wall_ms for w in event_walls)
                )
                prev_ms, prev_wall = rec.market_ms, rec.wall_ms
            for i, window in enumerate(windows):
                lagged = len(window) == 2 and i + 1 < len(windows) and not windows[i + 1]
                if explained[i] or len(window) <= 1 or lagged:
                    kind = "single" if len(window) <= 1 else "lagged" if lagged else "explained"
                    stats[kind] += len([t for t in window if (symbol, t) not in handled])
                    handled.update((symbol, t) for t in window)
                else:  # the cycle handled its newest candle; the older ones went missing
                    handled.add((symbol, window[-1]))
    return sorted(wanted - handled), "windows"


# ------------------------------------------------------------------ the engine as processes


class _Engine:
    """The dev server, the trading worker and the replay listener, each its own process."""

    def __init__(self, cfg: ChaosConfig, files: list[Path]) -> None:
        self.cfg = cfg
        self.home = cfg.tmp / "home"
        self.logs = cfg.tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        address = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "OCW_HOME": str(self.home),
            "OCW_TEMPORAL_ADDRESS": address,
            "OCW_ACCOUNT": cfg.account,
            "OCW_SYMBOLS": ",".join(cfg.symbols),
            "OCW_SPEED": str(cfg.speed),
            "OCW_LLM_ENABLED": "false",  # the rule policy: no key in the environment may count
        }
        self.settings = Settings(
            home=self.home,
            temporal_address=address,
            account=cfg.account,
            symbols=cfg.symbols,
            llm_enabled=False,
        )
        self.listen_args = [
            "listen",
            "--replay",
            *map(str, files),
            "--speed",
            str(cfg.speed),
            "--days",
            str(cfg.days),
        ]
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.listener: subprocess.Popen | None = None
        self.n_workers = 0
        self.n_listeners = 0
        self.n_servers = 0

    @property
    def listen_log(self) -> Path:
        return self.logs / f"listen-{self.n_listeners}.log"

    @property
    def worker_log(self) -> Path:
        return self.logs / f"worker-{self.n_workers}.log"

    def start_server(self) -> None:
        self.n_servers += 1
        self.server = start_dev_server(
            self.settings, log_file=self.logs / f"temporal-{self.n_servers}.log", ui=False
        )

    def start_worker(self) -> None:
        self.n_workers += 1
        self.worker = ocw(["worker"], self.env, self.worker_log)

    def start_listener(self) -> None:
        self.n_listeners += 1
        self.listener = ocw(self.listen_args, self.env, self.listen_log)

    @staticmethod
    def kill(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for proc in (self.listener, self.worker):
            if proc is not None:
                stop_process(proc)
        if self.server is not None:
            stop_process(self.server)


# ------------------------------------------------------------------ the run


async def run_chaos(cfg: ChaosConfig) -> ChaosResult:
    """One replay under chaos, then the audit. An audit finding never raises, and neither does
    an engine that gets stuck (``result.stalled`` says where; the audit runs on what there is)."""
    say = cfg.say or (lambda _text: None)
    rng = random.Random(cfg.seed)
    cfg.tmp.mkdir(parents=True, exist_ok=True)
    result = ChaosResult(tmp=cfg.tmp)
    t_start = time.monotonic()
    files = market_files(cfg)
    candles = decision_candles(files, cfg.days)
    result.candles_total = sum(len(v) for v in candles.values())
    eng = _Engine(cfg, files)
    settings = eng.settings
    eng.start_server()
    try:
        eng.start_worker()
        eng.start_listener()
        t0 = time.monotonic()
        client = await connect(settings, attempts=60, delay_s=0.5)
        probe = _Probe(client, settings.decision_workflow_id)
        say(f"chaos run in {cfg.tmp}: {cfg.days:g} days at speed {cfg.speed:.0f}, seed {cfg.seed}")
        await _chaos(cfg, rng, eng, probe, result, t0, say)
        result.timings["chaos"] = time.monotonic() - t0

        async def replay_done() -> bool:
            await _check_crashes(eng, result, t0)
            return await file_has(eng.listen_log, "replay finished")

        ok = await _wait(
            probe, replay_done, cfg.replay_seconds * 4 + 120, "the replay's end", result
        )
        result.timings["replay"] = time.monotonic() - t0
        ok = ok and await _wait(probe, probe.idle, 120, "an idle engine", result)
        result.manual_wake = "skipped"
        if ok and cfg.manual_wake:
            result.manual_wake = await _manual_wake(probe, settings)

        # positions open now must each have a running PositionWorkflow
        state = await probe.state()
        broker = PaperBroker(eng.home / "paper_broker.db", initial_cash=settings.initial_cash)
        journal = Journal(eng.home / "journal.db")
        lost: set[str] = set()
        if state is not None:
            lost |= await _unwatched(client, probe, state)
            for symbol in broker.balances().holdings:
                if symbol not in state.positions:
                    lost.add(f"broker holds {symbol} without a position in the books")

        if ok:
            try:
                await _retry(lambda: probe.handle.signal(DecisionWorkflow.close_all))
            except Exception as err:  # noqa: BLE001 - a finding, reported
                result.stalled.append(f"close_all refused: {err}")
                ok = False
        ok = ok and await _wait(
            probe,
            lambda: probe.status_if(
                lambda s: not s.positions and not s.busy and not s.queue_length
            ),
            120,
            "a flat book after close_all",
            result,
        )
        result.timings["flat"] = time.monotonic() - t0
        if ok:  # bookkeeping follows trading: let the journal and the watchers finish
            await _settle(client, broker, journal, cfg.account, timeout=30)
        state = await probe.state(attempts=1 if result.stalled else 20)
        if state is not None:
            result.counters = state.counters.model_dump()
            result.positions_opened = state.counters.positions_opened
            result.positions_closed = state.counters.positions_closed
            result.positions_left = len(state.positions)
            lost |= {
                f"{p.position_id} still open after close_all" for p in state.positions.values()
            }
            lost |= await _unwatched(client, probe, state)
            result.incidents = _incidents(state, journal, cfg.account)
        holdings = broker.balances().holdings
        result.holdings_left = len(holdings)
        lost |= {
            f"broker still holds {qty:g} {sym} after close_all" for sym, qty in holdings.items()
        }
        result.lost = sorted(lost)
        result.lost_positions = len(lost)

        _audit_books(result, broker, journal, state, cfg.account)
        result.failed_workflows, result.task_failures = await _workflow_health(
            client, settings.decision_workflow_id, broker
        )
        records = decided_records(journal.rows("decisions", cfg.account), state)
        missed, kind = missed_candles(candles, records, result.events, result.candle_windows)
        result.candles_missed = len(missed)
        result.missed = [f"{s} {_utc(t)}" for s, t in missed]
        result.candle_audit = kind
        await _check_crashes(eng, result, t0)
    finally:
        eng.stop_all()
    result.timings["total"] = time.monotonic() - t_start
    return result


async def _chaos(
    cfg: ChaosConfig,
    rng: random.Random,
    eng: _Engine,
    probe: _Probe,
    result: ChaosResult,
    t0: float,
    say: Callable[[str], None],
) -> None:
    for at_s, kind in _schedule(cfg, rng):
        await _check_crashes(eng, result, t0)
        delay = at_s - (time.monotonic() - t0)
        if kind == "worker_kill" and result.kills == 0:
            # the first kill waits (a while) for an open position, as a user's crash would
            await _wait_open_position(probe, max(delay, 0) + 20.0)
        elif delay > 0:
            await asyncio.sleep(delay)
        pause = rng.uniform(*cfg.pause_s)
        detail = await _do_event(eng, kind, pause, probe, result)
        event = ChaosEvent(round(time.monotonic() - t0, 1), int(time.time() * 1000), kind, detail)
        result.events.append(event)
        say(f"  {event.at_s:6.1f}s {kind} {detail}")


async def _wait(
    probe: _Probe,
    cond: Callable[[], Any],
    timeout: float,
    what: str,
    result: ChaosResult,
    stuck_after_s: float = 45.0,
) -> bool:
    """``cond`` true within ``timeout``; False (noted in ``result.stalled``) when not, or
    sooner when the account's workflow task has been failing for ``stuck_after_s``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return True
        failing = probe.task_failing_for()
        if failing > stuck_after_s:
            result.stalled.append(
                f"waiting for {what}: the DecisionWorkflow's task has failed for "
                f"{failing:.0f} s ({probe.last_error[:160]})"
            )
            return False
        await asyncio.sleep(0.5)
    result.stalled.append(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


def _schedule(cfg: ChaosConfig, rng: random.Random) -> list[tuple[float, str]]:
    """When each event happens, in seconds since the first listener started.

    The listener dies in the first half of its pass, and its successor replays the whole
    timeline again, so the run lasts about ``t_listener + replay_seconds``; the worker kills and
    the server restart fall anywhere in that span (events run one after the other: one that
    falls due while another is under way waits for it).
    """
    r = cfg.replay_seconds
    t_listener = rng.uniform(0.2, 0.4) * r if cfg.listener_kill else 0.0
    span = t_listener + r
    plan = [(rng.uniform(0.05, 0.9) * span, "worker_kill") for _ in range(cfg.worker_kills)]
    if cfg.listener_kill:
        plan.append((t_listener, "listener_kill"))
    if cfg.server_restart:
        plan.append((rng.uniform(0.15, 0.8) * span, "server_restart"))
    return sorted(plan)


async def _do_event(
    eng: _Engine, kind: str, pause: float, probe: _Probe, result: ChaosResult
) -> str:
    if kind == "worker_kill":
        status = await probe.status(timeout=2.0)
        open_now = len(status.positions) if status is not None else 0
        busy = bool(status and status.busy)
        eng.kill(eng.worker)
        result.kills += 1
        result.kills_with_open_positions += open_now > 0
        await asyncio.sleep(pause)
        eng.start_worker()
        log = eng.worker_log
        await wait_for(lambda: file_has(log, "trading worker on"), 90, f"{log.name} to start")
        return f"(open positions {open_now}, busy {busy}, down {pause:.1f}s)"
    if kind == "listener_kill":
        eng.kill(eng.listener)
        result.listener_kills += 1
        await asyncio.sleep(pause)
        eng.start_listener()
        return f"(down {pause:.1f}s, the new one replays from the start)"
    if kind == "server_restart":
        assert eng.server is not None
        stop_process(eng.server)
        await asyncio.sleep(pause)
        eng.start_server()
        result.server_restarts += 1
        return f"(down {pause:.1f}s)"
    raise ValueError(kind)


async def _check_crashes(eng: _Engine, result: ChaosResult, t0: float) -> None:
    """A process that died without our kill is a finding; it is restarted so the run goes on."""
    for name, proc, restart, log in (
        ("worker", eng.worker, eng.start_worker, eng.worker_log),
        ("listener", eng.listener, eng.start_listener, eng.listen_log),
    ):
        if proc is not None and proc.poll() is not None:
            result.crashes.append(f"{name} exited with {proc.returncode} (see {log.name})")
            result.events.append(
                ChaosEvent(round(time.monotonic() - t0, 1), int(time.time() * 1000), "crash", name)
            )
            restart()


class _Probe:
    """Queries of the account's DecisionWorkflow that survive a restarting server."""

    def __init__(self, client: Client, workflow_id: str) -> None:
        self.client = client
        self.handle = client.get_workflow_handle(workflow_id)
        self.last_error = ""
        self._failing_since: float | None = None

    async def _query(self, query: Any, timeout: float) -> Any:
        try:
            answer = await asyncio.wait_for(self.handle.query(query), timeout)
        except Exception as err:  # noqa: BLE001 - not started yet, worker or server away
            self.last_error = str(err) or type(err).__name__
            if "Workflow Task in failed state" in self.last_error:
                self._failing_since = self._failing_since or time.monotonic()
            return None
        self._failing_since = None
        return answer

    def task_failing_for(self) -> float:
        """Seconds the account's workflow task has been failing (queries refused), or 0."""
        return time.monotonic() - self._failing_since if self._failing_since else 0.0

    async def status(self, timeout: float = 10.0) -> StatusView | None:
        return await self._query(DecisionWorkflow.status, timeout)

    async def state(self, attempts: int = 20) -> DecisionState | None:
        for _ in range(attempts):
            answer = await self._query(DecisionWorkflow.state, 10.0)
            if answer is not None:
                return answer
            await asyncio.sleep(0.5)
        return None

    async def status_if(self, pred: Callable[[StatusView], bool]) -> StatusView | None:
        view = await self.status()
        return view if view is not None and pred(view) else None

    async def idle(self) -> StatusView | None:
        return await self.status_if(lambda s: s.queue_length == 0 and not s.busy)


async def _wait_open_position(probe: _Probe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = await probe.status(timeout=2.0)
        if view is not None and view.positions:
            return
        await asyncio.sleep(0.2)


async def _retry(call: Callable[[], Any], attempts: int = 20) -> Any:
    for attempt in range(attempts):
        try:
            return await call()
        except Exception:  # noqa: BLE001 - a worker still coming up
            if attempt + 1 == attempts:
                raise
            await asyncio.sleep(0.5)
    return None


async def _manual_wake(probe: _Probe, settings: Settings) -> str:
    """``temporal workflow signal --name wake`` exactly as the README shows it."""
    before = await probe.idle()
    if before is None:
        return "no idle engine before the manual wake"
    handled = before.counters.wakes_handled
    proc = subprocess.run(
        [
            find_binary("temporal"),
            "workflow",
            "signal",
            "--address",
            settings.temporal_address,
            "--workflow-id",
            settings.decision_workflow_id,
            "--name",
            "wake",
            "--input",
            '{"reason": "manual"}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return f"temporal CLI failed: {proc.stderr.strip()[:200]}"
    try:
        woken = await wait_for(
            lambda: probe.status_if(
                lambda s: s.counters.wakes_handled == handled + 1 and not s.busy
            ),
            60,
            "the manual wake",
        )
    except AssertionError as err:
        return str(err)
    reasons = woken.last_decision.wake_reasons if woken.last_decision else None
    return "ok" if reasons == ["manual"] else f"last decision's reasons {reasons}"


# ------------------------------------------------------------------ audit


async def _describe_status(client: Client, workflow_id: str) -> str:
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return "NONE"
        raise
    return desc.status.name if desc.status is not None else "UNKNOWN"


async def _unwatched(client: Client, probe: _Probe, state: DecisionState) -> set[str]:
    """Positions in the books whose PositionWorkflow does not run. A watcher that has just
    closed its trade may not have been booked yet: such a position is looked at again."""
    suspects = {p.position_id for p in state.positions.values()}
    for attempt in range(3):
        out = set()
        for pos in state.positions.values():
            if pos.position_id not in suspects:
                continue
            status = await _describe_status(client, pos.workflow_id)
            if status != "RUNNING":
                out.add(f"{pos.position_id} open in the books, its PositionWorkflow is {status}")
        if not out or attempt == 2:
            return out
        suspects = {text.split(" ", 1)[0] for text in out}
        await asyncio.sleep(2.0)
        state = await probe.state(attempts=5) or state
    return set()


def _position_ids(fills: Iterable[Any]) -> list[str]:
    return sorted({f.position_id for f in fills})


async def _settle(
    client: Client, broker: PaperBroker, journal: Journal, account: str, timeout: float
) -> None:
    """Until every position's trade is journaled and its watcher closed (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fills = broker.fills()
        sold = {
            f.position_id for f in fills if f.side == Side.SELL and f.status == OrderStatus.FILLED
        }
        traded = {t.trade_id for t in journal.trades(account)}
        journaled = {f.client_order_id for f in journal.fills(account)}
        running = 0
        for pid in _position_ids(fills):
            running += await _describe_status(client, POSITION_PREFIX + pid) == "RUNNING"
        if sold <= traded and {f.client_order_id for f in fills} <= journaled and not running:
            return
        await asyncio.sleep(0.5)


def _audit_books(
    result: ChaosResult,
    broker: PaperBroker,
    journal: Journal,
    state: DecisionState | None,
    account: str,
) -> None:
    fills = broker.fills()
    result.fills = len(fills)
    problems: list[str] = []
    dups: list[str] = []
    for coid, n in Counter(f.client_order_id for f in fills).items():
        if n > 1:
            dups.append(f"client order id {coid} filled {n} times")
    entries = Counter(
        f.position_id
        for f in fills
        if f.side == Side.BUY and f.status == OrderStatus.FILLED and f.reason == "entry"
    )
    exits = Counter(
        f.position_id for f in fills if f.side == Side.SELL and f.status == OrderStatus.FILLED
    )
    for pid, n in entries.items():
        if n > 1:
            dups.append(f"{pid}: {n} filled entries")
    for pid, n in exits.items():
        if n > 1:
            dups.append(f"{pid}: {n} filled exits")
    result.duplicates = dups
    result.duplicate_fills = sum(
        n - 1 for n in Counter(f.client_order_id for f in fills).values() if n > 1
    ) + sum(n - 1 for n in [*entries.values(), *exits.values()] if n > 1)

    bought = {f.position_id for f in fills if f.side == Side.BUY and f.status == OrderStatus.FILLED}
    for pid in sorted(bought - set(exits)):
        problems.append(f"{pid}: bought, never sold")
    balances = broker.balances()
    if balances.holdings:
        problems.append(f"broker holdings after close_all: {balances.holdings}")
    if state is None:
        problems.append("no state from the DecisionWorkflow")
    else:
        cash = state.portfolio.cash
        if abs(balances.cash - cash) > 1e-6 * max(abs(cash), 1.0):
            problems.append(f"cash: broker {balances.cash:.6f}, workflow {cash:.6f}")
        c = state.counters
        if c.positions_opened != c.positions_closed:
            problems.append(f"workflow opened {c.positions_opened}, closed {c.positions_closed}")
        if c.positions_opened != len(bought):
            problems.append(f"workflow opened {c.positions_opened}, broker entries {len(bought)}")
    trades = journal.trades(account)
    result.trades = len(trades)
    trade_ids = Counter(t.trade_id for t in trades)
    if set(trade_ids) != set(exits):
        problems.append(
            f"journal trades without a broker exit {sorted(set(trade_ids) - set(exits))}, "
            f"broker exits without a journal trade {sorted(set(exits) - set(trade_ids))}"
        )
    jfills = {f.client_order_id: f for f in journal.fills(account)}
    bfills = {f.client_order_id: f for f in fills}
    if set(jfills) != set(bfills):
        problems.append(
            f"fills only in the journal {sorted(set(jfills) - set(bfills))}, "
            f"only at the broker {sorted(set(bfills) - set(jfills))}"
        )
    for coid in sorted(set(jfills) & set(bfills)):
        j, b = jfills[coid], bfills[coid]
        if (j.status, j.side, j.qty, j.price, j.fee) != (b.status, b.side, b.qty, b.price, b.fee):
            problems.append(
                f"{coid}: journal {j.status} {j.qty}@{j.price}, broker {b.status} {b.qty}@{b.price}"
            )
    result.decisions = len(journal.decisions(account))
    result.book_problems = problems
    result.books_agree = not problems


async def _workflow_health(
    client: Client, decision_id: str, broker: PaperBroker
) -> tuple[list[str], dict[str, int]]:
    """Runs that ended badly (the account's and every position's, whose ids the broker's fills
    name, plus any run of the namespace the server lists as failed), and the workflow task
    failures in their histories by cause (benign ones marked)."""
    failed: list[str] = []
    ids = [decision_id, *(POSITION_PREFIX + pid for pid in _position_ids(broker.fills()))]
    for wid in ids:
        status = await _describe_status(client, wid)
        if status in NOT_OK or status == "NONE":
            failed.append(f"{wid} {status}")
    listed = " OR ".join(
        f"ExecutionStatus = '{s}'" for s in ("Failed", "Terminated", "TimedOut", "Canceled")
    )
    async for wf in client.list_workflows(listed):
        name = f"{wf.id} {wf.status.name if wf.status else 'UNKNOWN'}"
        if not any(f.startswith(f"{wf.id} ") for f in failed):
            failed.append(f"{name} (run {wf.run_id})")
    causes: Counter[str] = Counter()
    for wid in ids:
        async for wf in client.list_workflows(f"WorkflowId = '{wid}'"):
            history = await client.get_workflow_handle(wid, run_id=wf.run_id).fetch_history()
            for event in history.events:
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    cause = WorkflowTaskFailedCause.Name(
                        event.workflow_task_failed_event_attributes.cause
                    ).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_")
                    causes[cause] += 1
    return failed, dict(causes)


def serious_task_failures(causes: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in causes.items() if k not in BENIGN_TASK_FAILURES}


def _incidents(state: DecisionState, journal: Journal, account: str) -> list[str]:
    seen: dict[str, str] = {}
    for row in journal.incidents(account):
        seen[str(row["incident_id"])] = f"{row['source']}: {row['error']}"
    texts = list(seen.values())
    for inc in state.incidents:
        text = f"{inc.where}: {inc.error}"
        if text not in texts:
            texts.append(text)
    return texts


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime((ms + 1) / 1000))
