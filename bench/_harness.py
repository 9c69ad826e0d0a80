"""Shared pieces of ``bench/load.py`` and ``bench/wake_latency.py``: the engine measured from outside.

Both benches run the engine as a user does, each process on its own: ``temporal server
start-dev`` (its state in a fresh ``OCW_HOME``, its own ``/metrics`` on a free port), ``ocw
worker`` and ``ocw listen --replay`` at speed 1 on a generated market of 1m bars, so a price
moves every 12 s and the 30 s safety and 3 min agent cadences are the real ones. They look at
the engine only through what it leaves outside: workflow histories read through the client,
the SDK's Prometheus endpoints of the worker and the listener, the dev server's own metrics,
``/proc`` of each process, and the journal's SQLite file.

The market: BTC/USDT rises steadily (+2 % a day, a small mean-reverting wiggle), so the rule
policy's trend rule says BUY on any wake; the other symbols fall steadily (−3 % a day), so it
says SELL, which, with nothing held, is a HOLD. The check is done on the generated bars before
anything starts (``check_market``).

Load positions are started the way the engine starts a position (``start_position`` of
``activities/trading.py``, the same ``PositionInput`` the DecisionWorkflow builds), with the
stops far away (stop loss 50 %, guard 90 %, trail from +1,000 %, scorer EXIT below −1 and ADD
above +1, both out of reach) so that none exits while it is measured.

Pure helpers (statistics, Prometheus text, ``/proc`` text, history analysis) are tested in
``tests/unit/test_bench_harness.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DAY_MS = 86_400_000
MARKET_START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC (aligned to 4h and to the day)
WARMUP_DAYS = 40.0  # what `ocw listen --replay` loads before the replay (its default)
REPLAY_DAYS = 1.0  # a day of 1m bars: a day of wall time at speed 1
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT")
TRADED = "BTC/USDT"  # the one symbol the rule policy buys on a wake
START_PRICE = {"BTC/USDT": 42_000.0, "ETH/USDT": 2_300.0, "SOL/USDT": 100.0, "PAXG/USDT": 2_050.0}
GROWTH_PER_DAY = {"BTC/USDT": 0.02}  # the others: FALL_PER_DAY
FALL_PER_DAY = -0.03
WIGGLE = 0.0008  # stationary log-price wiggle around the trend (AR(1), per 1m bar)
ACCOUNT = "bench"

# a load position that never exits: every limit out of reach, still checked on every tick
FAR_STOPS = {
    "stop_loss_pct": 0.5,
    "max_drawdown_guard_pct": 0.9,
    "trail_activate_pct": 10.0,
    "exit_score": -1.0,
    "add_score": 1.0,
}
LOAD_NOTIONAL = 100.0  # quote per load position (nothing is bought at the paper broker)


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 300 samples is the 297th smallest); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Stats:
    n: int
    p50: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        if not vals:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(vals),
            percentile(vals, 0.5),
            percentile(vals, 0.99),
            max(vals),
            sum(vals) / len(vals),
        )


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], right: bool = True) -> list[str]:
    """Plain text columns, right-aligned but the first (``right=False``: all left-aligned)."""
    body = [[str(c) for c in row] for row in rows]
    cols = [str(h) for h in header]
    widths = [
        max(len(cols[i]), *(len(r[i]) for r in body)) if body else len(cols[i])
        for i in range(len(cols))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 or not right else c.rjust(widths[i])
            for i, c in enumerate(cells)
        ).rstrip()

    return [line(cols), line(["-" * w for w in widths]), *(line(r) for r in body)]


# ---------------------------------------------------------------- Prometheus text

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # past ="
        value = []
        while text[j] != '"':
            if text[j] == "\\" and j + 1 < len(text):
                nxt = text[j + 1]
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, nxt))
                j += 2
                continue
            value.append(text[j])
            j += 1
        out[key] = "".join(value)
        i = j + 1
        while i < len(text) and text[i] in ", ":
            i += 1
    return out


def parse_prometheus(text: str) -> Samples:
    """Prometheus text format → {metric name: [(labels, value), ...]} (comments skipped)."""
    out: Samples = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_text, _, tail = rest.rpartition("}")
            labels = _labels(labels_text) if labels_text.strip() else {}
        else:
            name, _, tail = line.partition(" ")
            labels = {}
        parts = tail.split()
        if not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        out.setdefault(name.strip(), []).append((labels, value))
    return out


Match = Mapping[str, str | Callable[[str], bool]]


def _matches(labels: Mapping[str, str], match: Match | None) -> bool:
    for key, want in (match or {}).items():
        have = labels.get(key)
        if callable(want):
            if have is None or not want(have):
                return False
        elif have != want:
            return False
    return True


def total(samples: Samples, name: str, match: Match | None = None) -> float:
    """Sum of every series of ``name`` whose labels match (0 when none)."""
    return sum(v for labels, v in samples.get(name, []) if _matches(labels, match))


def buckets(samples: Samples, name: str, match: Match | None = None) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of histogram ``name`` summed over matching series."""
    acc: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", []):
        if not _matches(labels, match):
            continue
        le = labels.get("le")
        if le is None:
            continue
        bound = math.inf if le in ("+Inf", "Inf", "inf") else float(le)
        acc[bound] = acc.get(bound, 0.0) + value
    return sorted(acc.items())


def bucket_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """What a histogram counted between two scrapes (a series absent before counts from 0)."""
    old = dict(before)
    return [(le, max(0.0, n - old.get(le, 0.0))) for le, n in after]


def histogram_quantile(cum: list[tuple[float, float]], q: float) -> tuple[float, float, float]:
    """(estimate, bucket lower bound, bucket upper bound) of quantile ``q`` from cumulative
    buckets, interpolated linearly inside the bucket as Prometheus's ``histogram_quantile``
    does. A quantile in the +Inf bucket gives the last finite bound for both. NaN when empty."""
    if not cum or cum[-1][1] <= 0:
        return math.nan, math.nan, math.nan
    count = cum[-1][1]
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, n in cum:
        if n >= rank and n > lower_count:
            if math.isinf(bound):
                return lower_bound, lower_bound, lower_bound
            share = (rank - lower_count) / (n - lower_count)
            return lower_bound + (bound - lower_bound) * share, lower_bound, bound
        lower_bound, lower_count = (bound if not math.isinf(bound) else lower_bound), n
    return lower_bound, lower_bound, lower_bound


def hist_count(cum: list[tuple[float, float]]) -> float:
    return cum[-1][1] if cum else 0.0


def scrape(url: str, timeout: float = 10.0) -> Samples:
    """One scrape of a /metrics endpoint; empty when it does not answer (or there is none)."""
    if not url:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            return parse_prometheus(resp.read().decode("utf-8", "replace"))
    except OSError:
        return {}


# ---------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcSample:
    t: float  # monotonic seconds
    cpu_s: float  # user + system seconds so far
    rss_kb: int
    hwm_kb: int  # peak RSS


def parse_stat_cpu(stat: str, clk_tck: int) -> float:
    """user + system CPU seconds from the text of /proc/<pid>/stat (the name may hold spaces)."""
    after = stat[stat.rindex(")") + 2 :].split()
    # after[0] is field 3 (state): utime is field 14, stime field 15
    return (int(after[11]) + int(after[12])) / clk_tck


def parse_status_kb(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def read_proc(pid: int) -> ProcSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return ProcSample(
        t=time.monotonic(),
        cpu_s=parse_stat_cpu(stat, os.sysconf("SC_CLK_TCK")),
        rss_kb=parse_status_kb(status, "VmRSS"),
        hwm_kb=parse_status_kb(status, "VmHWM"),
    )


def cpu_percent(a: ProcSample | None, b: ProcSample | None) -> float:
    """CPU of one process between two samples, as % of one core."""
    if a is None or b is None or b.t <= a.t:
        return math.nan
    return 100.0 * (b.cpu_s - a.cpu_s) / (b.t - a.t)


# ---------------------------------------------------------------- the market


def trend_market(
    days: float = WARMUP_DAYS + REPLAY_DAYS + 1,
    symbols: Sequence[str] = SYMBOLS,
    seed: int = 14,
    start_ms: int = MARKET_START_MS,
) -> dict[str, list[Any]]:
    """1m bars: BTC/USDT up 2 % a day, the others down 3 % a day, each with a small AR(1)
    wiggle (so 4h closes sit close to the trend line: a clean trend for the rule policy)."""
    from trading.models import Bar

    n = int(days * 1440)
    rng = random.Random(seed)
    out: dict[str, list[Bar]] = {}
    for symbol in symbols:
        growth = GROWTH_PER_DAY.get(symbol, FALL_PER_DAY)
        slope = math.log1p(growth) / 1440
        base = math.log(START_PRICE.get(symbol, 100.0))
        wiggle = 0.0
        prev_close = math.exp(base)
        bars: list[Bar] = []
        for i in range(n):
            wiggle = 0.9 * wiggle + rng.gauss(0.0, WIGGLE * math.sqrt(1 - 0.81))
            close = math.exp(base + slope * (i + 1) + wiggle)
            open_ = prev_close
            spread = abs(rng.gauss(0.0, WIGGLE / 2))
            high = max(open_, close) * (1 + spread)
            low = min(open_, close) * (1 - spread)
            t = start_ms + i * 60_000
            bars.append(
                Bar(
                    symbol=symbol,
                    interval="1m",
                    open_time=t,
                    close_time=t + 59_999,
                    open=open_,
                    high=high,
                    low=low,
                    close=close,
                    volume=round(10.0 * math.exp(rng.gauss(0.0, 0.25)), 6),
                )
            )
            prev_close = close
        out[symbol] = bars
    return out


def check_market(bars: Mapping[str, list[Any]], start_ms: int) -> dict[str, str]:
    """What the rule policy says of each symbol on the bars before ``start_ms`` (the replay's
    start): ``{symbol: "BUY (reasons)"}``. The benches need BUY for TRADED only."""
    from trading.features import compute_features
    from trading.market_data import resample
    from trading.rule_policy import symbol_signal

    out = {}
    for symbol, series in bars.items():
        before = [b for b in series if b.close_time < start_ms]
        main = resample(before, "4h")[-200:]
        finer = resample(before[-200 * 60 :], "1h")[-200:]
        features = compute_features(symbol, main, "4h", finer=finer)
        sig = symbol_signal(features)
        out[symbol] = f"{sig.action.value} ({'; '.join(sig.reasons)})"
    return out


@dataclass
class Market:
    files: list[Path]
    start_ms: int  # market time of the replay's first bar
    prices: dict[str, float]  # the first replayed open, per symbol
    verdicts: dict[str, str]


def write_market(folder: Path, symbols: Sequence[str] = SYMBOLS) -> Market:
    """The replay files (``BTCUSDT_1m.csv``, ...) and what the rule policy says at the start."""
    from signals.replay_plan import plan_replay
    from trading.market_data import write_ohlcv_csv

    bars = trend_market(symbols=symbols)
    plan = plan_replay(bars, days=REPLAY_DAYS, warmup_days=WARMUP_DAYS, align_interval="4h")
    verdicts = check_market(bars, plan.start_ms)
    for symbol, verdict in verdicts.items():
        wanted = "BUY" if symbol == TRADED else ("SELL", "HOLD")
        if not verdict.startswith(wanted):
            raise SystemExit(f"generated market: the rule policy says {verdict} for {symbol}")
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        write_ohlcv_csv(series, folder / f"{s.replace('/', '')}_1m.csv")
        for s, series in bars.items()
    ]
    prices = {s: plan.replay[s][0].open for s in bars}
    return Market(files=files, start_ms=plan.start_ms, prices=prices, verdicts=verdicts)


# ---------------------------------------------------------------- the engine as processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# the benches' worker flags and the settings they set
WORKER_FLAGS = {
    "cache": "OCW_WORKER_MAX_CACHED_WORKFLOWS",
    "slots": "OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS",
    "activities": "OCW_WORKER_MAX_CONCURRENT_ACTIVITIES",
    "pollers": "OCW_WORKER_MAX_CONCURRENT_WORKFLOW_TASK_POLLS",
}


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    """``--cache``, ``--slots``, ``--activities``, ``--pollers`` and ``--set`` (both benches)."""
    for flag, env in WORKER_FLAGS.items():
        parser.add_argument(f"--{flag}", type=int, default=None, help=env)
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="OCW_NAME=VALUE",
        help="any other worker setting (repeatable)",
    )
    parser.add_argument(
        "--temporal-address",
        default=None,
        metavar="HOST:PORT",
        help="run against this Temporal server (a compose cluster, Temporal Cloud) instead of "
        "a dev server of the bench's own; its namespace, TLS and API key come from the "
        "environment's OCW_TEMPORAL_* / TEMPORAL_* variables. Only the bench's own workflows "
        "are terminated at the end",
    )
    parser.add_argument(
        "--server-metrics",
        default=None,
        metavar="URL",
        help="with --temporal-address: that server's Prometheus /metrics (else its figures "
        "and CPU are not measured)",
    )


def worker_overrides(
    cache: int | None = None,
    slots: int | None = None,
    activities: int | None = None,
    pollers: int | None = None,
    extra: Sequence[str] = (),
) -> dict[str, str]:
    """The worker settings a bench passes through, as environment variables; refuses a name
    that is no setting of this engine (the worker would ignore it without a word)."""
    from trading.config import Settings

    fields = Settings.model_fields
    given = {"cache": cache, "slots": slots, "activities": activities, "pollers": pollers}
    env = {WORKER_FLAGS[k]: str(v) for k, v in given.items() if v is not None}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("OCW_"):
            raise SystemExit(f"--set {item!r}: use OCW_NAME=value")
        if key[4:].lower() not in fields:
            raise SystemExit(f"--set {key}: not a setting of this engine (trading/config.py)")
        env[key] = value
    return env


def server_from(args: argparse.Namespace) -> dict[str, str | None]:
    """``Engine`` keywords of ``--temporal-address`` / ``--server-metrics``."""
    if args.server_metrics and not args.temporal_address:
        raise SystemExit("--server-metrics goes with --temporal-address")
    return {"server_address": args.temporal_address, "server_metrics_url": args.server_metrics}


def overrides_from(args: argparse.Namespace) -> dict[str, str]:
    """``worker_overrides`` of the flags ``add_worker_args`` added."""
    return worker_overrides(args.cache, args.slots, args.activities, args.pollers, args.extra)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Engine:
    """Dev server, ``ocw worker`` and ``ocw listen --replay``, on a fresh home in ``root``."""

    root: Path
    market: Market
    overrides: dict[str, str] = field(default_factory=dict)
    speed: float = 1.0
    gate_outliers: bool = True  # False: the gate's z-score layer off (only the bench wakes)
    procs: dict[str, Proc] = field(default_factory=dict)
    client: Any = None
    # an external Temporal server (--temporal-address) and its /metrics; None: the bench's own
    server_address: str | None = None
    server_metrics_url: str | None = None

    def __post_init__(self) -> None:
        from trading.config import Settings

        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.server_metrics_port = free_port()
        self.worker_metrics_port = free_port()
        self.listener_metrics_port = free_port()
        address = self.server_address or f"127.0.0.1:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if (
                not k.startswith(("OCW_", "TEMPORAL_"))
                # an external server's namespace, TLS and key are the user's to give
                or (self.server_address and k.startswith(("OCW_TEMPORAL_", "TEMPORAL_")))
            )
            and k not in ("FRED_API_KEY", "ANTHROPIC_API_KEY", "LIVE_TRADING")
        }
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "OCW_HOME": str(self.home),
                "OCW_TEMPORAL_ADDRESS": address,
                "OCW_ACCOUNT": ACCOUNT,
                "OCW_MODE": "paper",
                "OCW_SYMBOLS": ",".join(SYMBOLS),
                "OCW_SPEED": f"{self.speed:g}",
                "OCW_LLM_ENABLED": "false",
                "OCW_POLICY": "rule",  # wakes that lead to entries (the default, cash, opens none)
                "OCW_WORKER_METRICS": f"127.0.0.1:{self.worker_metrics_port}",
                "OCW_LISTENER_METRICS": f"127.0.0.1:{self.listener_metrics_port}",
                # many entries and exits in a row cost fees: never let them halt the account
                "OCW_DRAWDOWN_HALT_PCT": "0.5",
            }
        )
        if not self.gate_outliers:
            env["OCW_GATE_Z_THRESHOLD"] = "1000000"
        env.update(self.overrides)
        self.env = env
        # the settings exactly as the children read them (their environment, no .env file)
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(env)
            self.settings = Settings(_env_file=None)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    # ---- urls
    @property
    def worker_metrics(self) -> str:
        return f"http://127.0.0.1:{self.worker_metrics_port}/metrics"

    @property
    def listener_metrics(self) -> str:
        return f"http://127.0.0.1:{self.listener_metrics_port}/metrics"

    @property
    def external(self) -> bool:
        return self.server_address is not None

    @property
    def server_metrics(self) -> str:
        if self.external:
            return self.server_metrics_url or ""
        return f"http://127.0.0.1:{self.server_metrics_port}/metrics"

    # ---- processes
    def _spawn(self, name: str, cmd: list[str]) -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=self.root,  # no .env of the checkout: the bench's settings only
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    async def start(self, timeout_s: float = 300.0) -> None:
        from workers.temporal_env import connect, dev_server_command

        self.home.mkdir(parents=True, exist_ok=True)
        if not self.external:
            cmd = dev_server_command(self.settings, (self.home / "temporal.db").resolve(), ui=False)
            self._spawn("server", [*cmd, "--metrics-port", str(self.server_metrics_port)])
            deadline = time.monotonic() + 60
            while not _port_open(self.port):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise SystemExit("the dev server did not listen within 60 s")
                await asyncio.sleep(0.1)
        python = sys.executable
        self._spawn("worker", [python, "-m", "workers.cli", "worker"])
        self._spawn(
            "listener",
            [
                python,
                "-m",
                "workers.cli",
                "listen",
                "--replay",
                *map(str, self.market.files),
                "--speed",
                f"{self.speed:g}",
                "--days",
                f"{REPLAY_DAYS:g}",
                "--warmup-days",
                f"{WARMUP_DAYS:g}",
            ],
        )
        self.client = await connect(self.settings, attempts=60, delay_s=0.5)
        await self._wait_ready(timeout_s)

    def _check_alive(self) -> None:
        for proc in self.procs.values():
            if not proc.alive():
                raise SystemExit(
                    f"{proc.name} exited with {proc.popen.returncode}; {proc.log}:\n{proc.tail()}"
                )

    async def _wait_ready(self, timeout_s: float) -> None:
        """The account answers a query (the trading worker polls), the market queue has a
        poller and the listener has a price of every symbol (its feed gauges are exported)."""
        from temporalio.api.enums.v1 import TaskQueueType

        from workflows.decision import DecisionWorkflow

        handle = self.client.get_workflow_handle(self.settings.decision_workflow_id)
        deadline = time.monotonic() + timeout_s
        want = "account"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if want == "account":
                    await asyncio.wait_for(handle.query(DecisionWorkflow.status), 5)
                    want = "market queue"
                if want == "market queue" and await self.pollers(
                    self.settings.market_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
                ):
                    want = "prices"
                if want == "prices" and self._listener_has_prices():
                    return
            except Exception:  # noqa: BLE001, S110 - not up yet
                pass
            await asyncio.sleep(0.5)
        raise SystemExit(f"the engine was not ready within {timeout_s:.0f} s (waiting for {want})")

    def _listener_has_prices(self) -> bool:
        """Every symbol's feed seen by the listener (its staleness gauge is exported)."""
        samples = scrape(self.listener_metrics, timeout=2)
        series = {
            labels.get("series", "") for labels, _ in samples.get("ocw_feed_staleness_seconds", [])
        }
        return all(any(s.startswith(sym + " ") for s in series) for sym in SYMBOLS)

    async def pollers(self, queue: str, kind: Any) -> int:
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        resp = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.settings.temporal_namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=kind,
            )
        )
        return len(resp.pollers)

    def proc_samples(self) -> dict[str, ProcSample | None]:
        return {name: read_proc(p.pid) for name, p in self.procs.items()}

    def owns(self, workflow_id: str) -> bool:
        """Whether a workflow is the bench's: its account, its monitor, its positions (on a
        shared server nothing else is touched)."""
        account = self.settings.account
        return workflow_id in (
            self.settings.decision_workflow_id,
            f"ocw-monitor-{account}",
        ) or workflow_id.startswith(f"ocw-position-{account}-")

    async def terminate_running(self, concurrency: int = 32) -> int:
        """Terminate the bench's running workflows (positions, the account, its monitor)."""
        if self.client is None:
            return 0
        ids = []
        with contextlib.suppress(Exception):
            async for wf in self.client.list_workflows("ExecutionStatus='Running'"):
                if self.owns(wf.id):
                    ids.append(wf.id)
        gate = asyncio.Semaphore(concurrency)

        async def one(wid: str) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await self.client.get_workflow_handle(wid).terminate(reason="bench over")

        await asyncio.gather(*(one(w) for w in ids))
        return len(ids)

    def stop(self) -> None:
        for name in ("listener", "worker", "server"):
            proc = self.procs.get(name)
            if proc is None or not proc.alive():
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(5)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- load positions


def load_position(engine: Engine, i: int) -> Any:
    """The ``StartPosition`` the DecisionWorkflow would send for a fresh entry, stops far away."""
    from trading.models import PositionParams
    from trading.protective_stop import stop_loss_level
    from trading.state import PositionInput, PositionState, StartPosition
    from workers.wiring import engine_config
    from workflows import ui_text

    settings = engine.settings
    cfg = engine_config(settings)
    symbol = SYMBOLS[i % len(SYMBOLS)]
    price = engine.market.prices[symbol]
    market_ms = engine.market.start_ms
    qty = LOAD_NOTIONAL / price
    fee = LOAD_NOTIONAL * cfg.position.fee_rate
    params = PositionParams.model_validate({**cfg.position_params().model_dump(), **FAR_STOPS})
    position_id = f"{ACCOUNT}-load-{symbol.split('/')[0]}-{i + 1}"
    inp = PositionInput(
        state=PositionState(
            position_id=position_id,
            account=ACCOUNT,
            symbol=symbol,
            qty=qty,
            avg_entry=price,
            entry_time_ms=market_ms,
            entry_fees=fee,
            cost=LOAD_NOTIONAL + fee,
            peak_price=price,
            trough_price=price,
            last_price=price,
            last_price_ms=market_ms,
            entry_regime="trending",
        ),
        params=params,
        decision_workflow_id=settings.decision_workflow_id,
        trading_task_queue=cfg.trading_task_queue,
        market_task_queue=cfg.market_task_queue,
        llm_enabled=False,
        llm_eval_interval_s=cfg.scaled_s(cfg.llm.position_eval_interval_s),
        llm_call_timeout_s=cfg.llm.call_timeout_s,
        search_attributes=cfg.search_attributes,  # the dev server registers them
        lean_ticks=cfg.lean_ticks,  # OCW_LEAN_TICKS (--set OCW_LEAN_TICKS=false: the old tick)
    )
    return StartPosition(
        workflow_id=f"ocw-position-{position_id}",
        input=inp,
        summary=ui_text.position_summary(
            symbol, qty, price, stop_loss_level(price, params), "the load bench", "load"
        ),
        details=ui_text.position_details(
            position_id, settings.decision_workflow_id, ACCOUNT, market_ms, "load bench"
        ),
    )


async def start_positions(
    engine: Engine, n: int, spread_s: float, concurrency: int = 16
) -> tuple[list[str], float]:
    """Start ``n`` load positions through the engine's own ``start_position`` (a client call
    with the same id policies), evenly over ``spread_s`` seconds; (workflow ids, seconds)."""
    from activities.journal import Journal
    from activities.paper_broker import PaperBroker
    from activities.trading import TradingActivities

    side = engine.root / "bench-side"
    side.mkdir(exist_ok=True)
    acts = TradingActivities(
        PaperBroker(side / "unused_broker.db", initial_cash=0.0),
        Journal(side / "unused_journal.db"),
        engine.client,
    )
    gate = asyncio.Semaphore(concurrency)
    began = time.monotonic()
    ids: list[str] = []

    async def one(i: int) -> None:
        req = load_position(engine, i)
        async with gate:
            ids.append(await acts.start_position(req))

    tasks = []
    for i in range(n):
        due = began + (spread_s * i / n if n else 0.0)
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sorted(ids), time.monotonic() - began


def sample_ids(ids: Sequence[str], k: int) -> list[str]:
    """``k`` ids evenly spread over ``ids`` (all of them when k is 0 or ≥ len)."""
    if k <= 0 or k >= len(ids):
        return list(ids)
    step = len(ids) / k
    return [ids[int(i * step)] for i in range(k)]


# ---------------------------------------------------------------- histories


@dataclass(frozen=True)
class Ev:
    """A history event reduced to what the benches read."""

    id: int
    kind: str  # "TimerFired", "ActivityTaskScheduled", ...
    t: float  # epoch seconds
    attrs: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # serialized bytes


def _kind(event_type_name: str) -> str:
    body = event_type_name.removeprefix("EVENT_TYPE_")
    return "".join(w.capitalize() for w in body.split("_"))


def _payload_json(payloads: Any) -> Any:
    try:
        data = payloads.payloads[0].data
        return json.loads(data)
    except (IndexError, ValueError, AttributeError):
        return None


def simplify(event: Any) -> Ev:
    """A temporalio ``HistoryEvent`` (protobuf) as an ``Ev``."""
    from temporalio.api.enums.v1 import EventType

    kind = _kind(EventType.Name(event.event_type))
    t = event.event_time.seconds + event.event_time.nanos / 1e9
    a: dict[str, Any] = {}
    if kind == "WorkflowTaskStarted":
        a["scheduled"] = event.workflow_task_started_event_attributes.scheduled_event_id
    elif kind == "WorkflowTaskCompleted":
        x = event.workflow_task_completed_event_attributes
        a["scheduled"], a["started"] = x.scheduled_event_id, x.started_event_id
    elif kind == "WorkflowTaskTimedOut":
        x = event.workflow_task_timed_out_event_attributes
        a["timeout"] = x.timeout_type
        a["scheduled"] = x.scheduled_event_id
    elif kind == "WorkflowTaskFailed":
        a["cause"] = event.workflow_task_failed_event_attributes.cause
    elif kind == "ActivityTaskScheduled":
        x = event.activity_task_scheduled_event_attributes
        a["name"] = x.activity_type.name
        a["wft"] = x.workflow_task_completed_event_id
    elif kind == "MarkerRecorded":  # a local activity's result
        x = event.marker_recorded_event_attributes
        data = _payload_json(x.details["data"]) if "data" in x.details else None
        a["name"] = (data or {}).get("activity_type", x.marker_name)
        a["wft"] = x.workflow_task_completed_event_id
    elif kind in ("ActivityTaskStarted",):
        a["scheduled"] = event.activity_task_started_event_attributes.scheduled_event_id
    elif kind == "ActivityTaskCompleted":
        a["scheduled"] = event.activity_task_completed_event_attributes.scheduled_event_id
    elif kind == "ActivityTaskFailed":
        a["scheduled"] = event.activity_task_failed_event_attributes.scheduled_event_id
    elif kind == "ActivityTaskTimedOut":
        a["scheduled"] = event.activity_task_timed_out_event_attributes.scheduled_event_id
    elif kind == "TimerStarted":
        x = event.timer_started_event_attributes
        d = x.start_to_fire_timeout
        a["duration"] = d.seconds + d.nanos / 1e9
        a["timer"] = x.timer_id
    elif kind == "TimerFired":
        a["started"] = event.timer_fired_event_attributes.started_event_id
    elif kind == "WorkflowExecutionSignaled":
        x = event.workflow_execution_signaled_event_attributes
        a["name"] = x.signal_name
        a["input"] = _payload_json(x.input)
    return Ev(id=event.event_id, kind=kind, t=t, attrs=a, size=event.ByteSize())


async def history(client: Any, workflow_id: str) -> list[Ev]:
    hist = await client.get_workflow_handle(workflow_id).fetch_history()
    return [simplify(e) for e in hist.events]


async def run_histories(client: Any, workflow_id: str) -> list[list[Ev]]:
    """The histories of every run of ``workflow_id`` (continued-as-new ones too), oldest
    first; event ids restart in each run."""
    runs: list[tuple[float, str]] = []
    with contextlib.suppress(Exception):
        async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            runs.append((wf.start_time.timestamp() if wf.start_time else 0.0, wf.run_id))
    out = []
    for _, run_id in sorted(runs):
        with contextlib.suppress(Exception):
            hist = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            out.append([simplify(e) for e in hist.events])
    if not out:  # visibility not there yet: the current run
        out.append(await history(client, workflow_id))
    return out


async def histories(client: Any, ids: Sequence[str], concurrency: int = 8) -> dict[str, list[Ev]]:
    gate = asyncio.Semaphore(concurrency)
    out: dict[str, list[Ev]] = {}

    async def one(wid: str) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                out[wid] = await history(client, wid)

    await asyncio.gather(*(one(w) for w in ids))
    return out


@dataclass(frozen=True)
class SafetyCheck:
    t: float  # the check's workflow task started (the workflow's own "now")
    interval_s: float | None  # since the previous check (None for the first)
    task_wait_s: float  # its workflow task, scheduled → started
    timer_late_s: float | None  # the timer that woke it fired this late (None: no timer)
    timer_s: float | None = None  # that timer's duration


PRICE_READS = ("market_prices", "board_prices")  # the listener's activity, the board's local one


def safety_checks(
    events: Sequence[Ev], price_reads: Sequence[str] = PRICE_READS
) -> list[SafetyCheck]:
    """Every safety check of a PositionWorkflow history: the workflow task that scheduled a
    ``market_prices`` activity or recorded a ``board_prices`` local activity (once per task:
    a board miss asks the listener in the same task), when it started (the workflow's clock),
    how long it waited to start, and how late the timer that woke it fired."""
    by_id = {e.id: e for e in events}
    fired_since: list[Ev] = []  # TimerFired since the last completed workflow task
    triggers: dict[int, list[Ev]] = {}  # WorkflowTaskStarted id -> timers fired before it
    for e in events:
        if e.kind == "WorkflowTaskCompleted":
            fired_since = []
        elif e.kind == "TimerFired":
            fired_since.append(e)
        elif e.kind == "WorkflowTaskStarted":
            triggers[e.id] = list(fired_since)
    out: list[SafetyCheck] = []
    prev: float | None = None
    seen_tasks: set[int] = set()
    for e in events:
        if e.kind not in ("ActivityTaskScheduled", "MarkerRecorded"):
            continue
        if e.attrs.get("name") not in price_reads or e.attrs.get("wft", -1) in seen_tasks:
            continue
        seen_tasks.add(e.attrs.get("wft", -1))
        done = by_id.get(e.attrs.get("wft", -1))
        if done is None:
            continue
        started = by_id.get(done.attrs.get("started", -1))
        scheduled = by_id.get(done.attrs.get("scheduled", -1))
        if started is None or scheduled is None:
            continue
        late = duration = None
        for fired in triggers.get(started.id, []):
            timer = by_id.get(fired.attrs.get("started", -1))
            if timer is not None:
                duration = timer.attrs.get("duration", 0.0)
                late = fired.t - (timer.t + duration)
                break
        out.append(
            SafetyCheck(
                t=started.t,
                interval_s=None if prev is None else started.t - prev,
                task_wait_s=started.t - scheduled.t,
                timer_late_s=late,
                timer_s=duration,
            )
        )
        prev = started.t
    return out


def task_starts(events: Iterable[Ev], t0: float, t1: float) -> list[tuple[float, float]]:
    """(scheduled, started) of every workflow task started in [t0, t1), from its own events."""
    scheduled: dict[int, float] = {}
    out = []
    for e in events:
        if e.kind == "WorkflowTaskScheduled":
            scheduled[e.id] = e.t
        elif e.kind == "WorkflowTaskStarted" and t0 <= e.t < t1:
            at = scheduled.get(e.attrs.get("scheduled", -1))
            if at is not None:
                out.append((at, e.t))
    return out


def task_waits(events: Iterable[Ev], t0: float, t1: float) -> list[float]:
    """Schedule-to-start of every workflow task started in [t0, t1)."""
    return [started - at for at, started in task_starts(events, t0, t1)]


@dataclass
class HistoryCounts:
    events: int = 0
    bytes: int = 0
    workflow_tasks: int = 0
    activities: int = 0
    local_activities: int = 0  # their markers (no task of their own at the server)
    timers: int = 0
    task_timeouts: int = 0  # workflow task timed out (any kind)
    task_failures: int = 0
    activity_failures: int = 0  # failed or timed out attempts that ended the activity

    def add(self, other: HistoryCounts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def count_events(events: Iterable[Ev], t0: float, t1: float) -> HistoryCounts:
    """What a history holds of the window [t0, t1) (epoch seconds)."""
    c = HistoryCounts()
    for e in events:
        if not t0 <= e.t < t1:
            continue
        c.events += 1
        c.bytes += e.size
        if e.kind == "WorkflowTaskCompleted":
            c.workflow_tasks += 1
        elif e.kind == "ActivityTaskScheduled":
            c.activities += 1
        elif e.kind == "MarkerRecorded" and e.attrs.get("name") != "core_patch":
            c.local_activities += 1
        elif e.kind == "TimerStarted":
            c.timers += 1
        elif e.kind == "WorkflowTaskTimedOut":
            c.task_timeouts += 1
        elif e.kind == "WorkflowTaskFailed":
            c.task_failures += 1
        elif e.kind in ("ActivityTaskFailed", "ActivityTaskTimedOut"):
            c.activity_failures += 1
    return c


# ---------------------------------------------------------------- a decision cycle's stages

STAGE_LABELS = {
    "market_view": "market view",
    "market_context": "context",
    "board_decision": "view and context (board)",
    "crypto_regime": "crypto regime",
    "macro_regime": "macro regime",
    "decide": "decide",
    "llm_decide": "decide (LLM)",
    "start_position": "start position",
}
CYCLE_END = "journal_decision"


@dataclass
class Cycle:
    """Checkpoints of the decision cycle of one wake, read from the DecisionWorkflow history."""

    signaled: float
    task_started: float
    activities: list[tuple[str, float, float | None, float | None]]  # name, sched, start, done
    stages: list[tuple[str, float]]  # (label, seconds), in order: they add up
    parts: dict[str, tuple[float | None, float | None]]  # activity: (queue wait, run)

    def done(self, name: str) -> float | None:
        for n, _, _, completed in self.activities:
            if n == name:
                return completed
        return None


def cycle_of(events: Sequence[Ev], reason: str, sent: float) -> Cycle | None:
    """The cycle a ``wake`` signal with ``reason`` started, as stages from ``sent`` (epoch s):
    signal (sent → signaled), workflow task (→ its task started), one stage per activity up to
    its completion (the workflow task before it included), ``risk`` the decide → order gap
    (the risk check and sizing run in that workflow task), ``order`` the ``place_order``
    activity, up to ``start position``. None when the signal is not in ``events``."""
    sig = next(
        (
            e
            for e in events
            if e.kind == "WorkflowExecutionSignaled"
            and e.attrs.get("name") == "wake"
            and isinstance(e.attrs.get("input"), dict)
            and e.attrs["input"].get("reason") == reason
        ),
        None,
    )
    if sig is None:
        return None
    later = [e for e in events if e.id > sig.id]
    wft = next((e for e in later if e.kind == "WorkflowTaskStarted"), None)
    if wft is None:
        return None
    started: dict[int, float] = {}
    completed: dict[int, float] = {}
    acts: list[tuple[int, str, float]] = []
    local: set[int] = set()
    for e in later:
        if e.kind == "ActivityTaskScheduled" or (
            e.kind == "MarkerRecorded" and e.attrs.get("name") in STAGE_LABELS
        ):
            if any(n == e.attrs.get("name") for _, n, _ in acts):
                break  # the next cycle
            acts.append((e.id, e.attrs.get("name", "?"), e.t))
            if e.kind == "MarkerRecorded":  # a local activity (a lean engine's decide): done
                local.add(e.id)  # when its workflow task completed, no queue of its own
                completed[e.id] = e.t
        elif e.kind == "ActivityTaskStarted":
            started[e.attrs["scheduled"]] = e.t
        elif e.kind in ("ActivityTaskCompleted", "ActivityTaskFailed", "ActivityTaskTimedOut"):
            completed[e.attrs["scheduled"]] = e.t
        if acts and acts[-1][1] == CYCLE_END and acts[-1][0] in completed:
            break
    activities = [(i, n, t, started.get(i), completed.get(i)) for i, n, t in acts]
    stages: list[tuple[str, float]] = [
        ("signal", sig.t - sent),
        ("workflow task", wft.t - sig.t),
    ]
    parts: dict[str, tuple[float | None, float | None]] = {}
    prev = wft.t
    for i, name, sched, start, done in activities:
        if name == CYCLE_END or done is None:
            break
        queue = start - sched if start is not None else None
        run = done - start if start is not None else None
        parts[name] = (queue, run)
        label = STAGE_LABELS.get(name, name)
        if i in local:
            stages.append((f"{label} (local)", done - prev))
        elif name == "place_order":
            stages.append(("risk", sched - prev))
            stages.append(("order", done - sched))
        else:
            stages.append((label, done - prev))
        prev = done
    return Cycle(sig.t, wft.t, [a[1:] for a in activities], stages, parts)


def iso_to_epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
