"""Parity: a real-data replay through Temporal and the in-process backtester make the same trades.

The Temporal path runs as a user runs it: dev server, ``ocw worker``, ``ocw listen --replay`` on
the real 1h files (the replay server aggregates the 4h decision candles). The backtester runs
``run_backtest`` on the real 4h files of the same window, warmed up on the same 40 days of
history the listener is seeded with. Both take their parameters from one set of settings.

What is compared (docs/backtests.md, "Parity with the Temporal path"):

* preconditions: every live decision cycle ran on the view of a 4h candle's close (the replay
  had not moved on), one or more at every close of the window, woken by G1 only; the settings
  that neutralise the learner reached the DecisionWorkflow; every exit filled before the next
  decision;
* each symbol's rule score at every live decision equals the backtester's at that candle;
* BUY entries by (symbol, decision candle), exactly; exits by (symbol, decision candle,
  reason), exactly; positions the replay leaves open are the backtester's ``end_of_test``;
* prices: a replay entry fills at the tick of its decision (the candle's close), the backtest
  at the next bar's open, both ± 5 bps: within ``PRICE_TOL``. A replay exit fills at the tick
  when its PositionWorkflow acts, up to a few 1h bars after the decision at this speed: it must
  equal that bar's close ∓ 5 bps, and the backtest's price within ``PRICE_TOL`` when it filled
  on the deciding close. Quantities within ``QTY_TOL`` (equity carries the price gaps).
* exit plans (the ``OCW_RULE_EXIT_PLANS`` case): every live plan equals the backtester's for the
  same entry; a ``plan_invalidated`` exit is the PositionWorkflow's own, so it is keyed by the
  candle of the 1h close that first crossed the plan's level (the replay's ticks are the 1h
  closes); it must fill on that tick or a later one ∓ 5 bps (within ``PLAN_LAG_MAX`` 1h bars:
  at this speed the PositionWorkflow's ticks lag the replay at times), and when on that tick
  at or past the backtest's price (which fills at the level itself on the 4h bar's path): the
  two prices differ by how far the 1h close went past the level (and by the later bars' moves
  on a late fill), so they are compared by side only, not within a tolerance.

Made equal by configuration, in both paths: no stop can trigger (wide stop, guard and trail
activation; a stop exit would show up as an unmatched exit), the agent layer is off
(``agent_every_bars`` 0; live: no 3-minute tick within the run, exit/add thresholds out of the
score's range), no learner (the warm-up never ends: starting weights, multiplier 1), macro
unknown (an empty FRED folder: scale and trail 1), crypto regime unknown (the HMM needs more
days than exist), G3 off (z threshold out of reach: the backtester decides at candle closes
only), sizes small enough that the 70 % exposure cap never binds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from activities.journal import Journal
from tests.integration.procs import file_has, free_port, has, ocw, wait_for
from trading.backtest.engine import BacktestResult, run_backtest
from trading.backtest.params import BacktestParams
from trading.backtest.policy import RuleDecisions, intent_of
from trading.config import Settings
from trading.exit_plan import invalidated
from trading.market_data import format_timestamp, load_ohlcv_csv, parse_timestamp_ms
from trading.models import Action, ClosedTrade, DecisionRecord, ExitPlan
from trading.state import OpenPosition
from workers.backtest_cli import load_backtest_data
from workers.temporal_env import connect, start_dev_server, stop_process
from workflows.decision import DecisionWorkflow

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"]
START = "2025-08-08T00:00:00Z"  # 10 days: 15 entries, 13 policy exits (SOL never trades)
# long/short on USDⓈ-M futures (issue 15): 10 days with 13 trades, 5 of them shorts covered by
# the mirrored trend rules; funding is left out of both paths (the paper broker charges none)
SHORTS_START = "2026-01-15T00:00:00Z"
SHORTS_SETTINGS = {"OCW_MARKET": "futures", "OCW_SHORTS": "true"}
# exit plans (issue 15): the rule policy writes its plan, the engine applies it. 10 days with 10
# trades, 4 of them shorts, 3 of which the plan's invalidation closes (its stop is the hard
# stop, out of reach here); picked where every 4h bar whose extreme crosses a plan's level also
# has a 1h close past it (the replay's ticks), else the two paths exit on different candles
PLANS_START = "2025-02-24T00:00:00Z"
PLANS_SETTINGS = {**SHORTS_SETTINGS, "OCW_RULE_EXIT_PLANS": "true"}
PLAN_EXIT = "plan_invalidated"
# a plan exit fires on the first tick its PositionWorkflow sees past the level; at 14,400x its
# safety ticks (2 ms of wall time apart, each an activity) sometimes stall for a second while
# the replay moves on: measured 0-5 1h bars from the first 1h close past it to the fill
PLAN_LAG_MAX = 8
DAYS = 10
# The replay runs in lockstep (`ocw listen --lockstep`): after each 1h bar it waits until the
# account has finished any cycle the bar woke and filled any exit it asked for, so decisions
# and their fills no longer depend on the machine's speed. Only the plan exits, which the
# PositionWorkflow makes on its own safety ticks (1 s of wall time apart at the dev server's
# timer grain), still lag the replay: that case runs slower.
REPLAY_SECONDS = 30  # speed 28,800: a 1h bar = 125 ms of wall time, plus the holds
PLAN_REPLAY_SECONDS = 60  # speed 14,400: a 1h bar = 250 ms
WARMUP_DAYS = 40  # `ocw listen --warmup-days` default: 240 4h bars >= the 200-bar window
ACCOUNT = "parity"
HOUR_MS = 3_600_000
CANDLE_MS = 4 * HOUR_MS
SLIPPAGE = 5e-4  # OCW_SLIPPAGE_BPS default, paper broker and backtester alike
PRICE_TOL = 5e-4  # relative: a candle's close vs the next open (<= 1.1e-4 on these files)
QTY_TOL = 2e-3  # relative: sizes follow equity, which carries the price gaps above
SCORE_TOL = 1e-9

# Both paths are configured from these (as OCW_* for the processes, as Settings here).
PARITY_SETTINGS: dict[str, str] = {
    "OCW_ACCOUNT": ACCOUNT,
    "OCW_SYMBOLS": ",".join(SYMBOLS),
    "OCW_INTERVALS": "1h,4h",
    "OCW_LLM_ENABLED": "false",  # the rule policy decides, as in every backtest
    "OCW_SENTIMENT_ENABLED": "false",
    "OCW_DEFAULT_POSITION_PCT": "0.1",  # <= 15 % a position: 4 positions stay under 70 %
    "OCW_STOP_LOSS_PCT": "0.25",  # stops out of reach in this window
    "OCW_MAX_DRAWDOWN_GUARD_PCT": "0.3",
    "OCW_TRAIL_ACTIVATE_PCT": "0.5",
    "OCW_AGENT_INTERVAL_S": "1e9",  # agent layer off: no 3-minute tick within the run
    "OCW_EXIT_SCORE": "-1",  # and at the ends of the scorer's [-1, 1] range if one came
    "OCW_ADD_SCORE": "1",
    "OCW_GATE_Z_THRESHOLD": "1e9",  # G3 off: decisions at 4h candle closes only
    "OCW_LEARNER_WARMUP_TRADES": "1000000",  # starting weights throughout: multiplier 1
    "OCW_HMM_MIN_DAYS": "100000",  # crypto regime "unknown", as the backtester without hooks
}


@dataclass(frozen=True)
class Leg:
    """One entry or exit, keyed by the 4h candle whose close decided it."""

    symbol: str
    candle_ms: int  # open time of the deciding candle; -1 for "open at end"
    reason: str  # "entry", an exit reason, or "open at end"
    price: float
    qty: float
    ref: str  # position / trade id
    lag_bars: int = 0  # replay exits: 1h bars between the deciding close and the fill
    side: str = "long"  # a short's exit is a buy: it fills above the tick
    tick_ms: int | None = None  # replay plan exits: the 1h close that fired it (lag from it)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.symbol, self.candle_ms, self.reason)


# ---------------------------------------------------------------- both paths as legs


def candle_of_close(close_ms: int) -> int | None:
    """Open time of the candle whose last millisecond is ``close_ms``; None off a close."""
    return close_ms + 1 - CANDLE_MS if (close_ms + 1) % CANDLE_MS == 0 else None


def backtest_legs(result: BacktestResult) -> tuple[list[Leg], list[Leg]]:
    """Entries and exits of a backtest. Orders fill at the open after the deciding close, so
    the deciding candle opened one candle before the fill; ``end_of_test`` marks what is open."""
    entries, exits = [], []
    for t in result.trades:
        entries.append(
            Leg(
                t.symbol,
                t.entry_time_ms - CANDLE_MS,
                _entry(t.side),
                t.entry_price,
                t.qty,
                t.trade_id,
            )
        )
        if t.exit_reason == "end_of_test":
            exits.append(Leg(t.symbol, -1, "open at end", t.exit_price, t.qty, t.trade_id))
        else:
            candle = t.exit_time_ms - CANDLE_MS
            exits.append(
                Leg(t.symbol, candle, t.exit_reason, t.exit_price, t.qty, t.trade_id, side=t.side)
            )
    return entries, exits


def entry_plans(decisions: list[DecisionRecord]) -> dict[tuple[str, int], ExitPlan]:
    """The exit plan of each entry decided, by (symbol, market time of its view)."""
    return {
        (td.ticker, rec.market_time_ms): td.exit_plan
        for rec in decisions
        if rec.market_time_ms is not None
        for td in rec.decision.decisions
        if td.exit_plan is not None and td.action in (Action.BUY, Action.SHORT)
    }


def plan_tick(
    plan: ExitPlan, symbol: str, after_ms: int, closes_1h: dict[tuple[str, int], float]
) -> int | None:
    """Close time of the first 1h close after ``after_ms`` past the plan's price level."""
    for (sym, t), close in sorted(closes_1h.items(), key=lambda kv: kv[0][1]):
        if sym == symbol and t > after_ms and invalidated(plan, close, None):
            return t
    return None


def live_legs(
    trades: list[ClosedTrade],
    open_positions: list[OpenPosition],
    decisions: list[DecisionRecord],
    closes_1h: dict[tuple[str, int], float] | None = None,
) -> tuple[list[Leg], list[Leg]]:
    """Entries and exits of the Temporal path from its journal and final status.

    An entry is stamped with the market time of the view that decided it; an exit is keyed by
    the decision cycle that requested it and carries how many 1h bars later it filled. A plan
    exit (no cycle asked for it) is keyed by the candle of the 1h close that fired it
    (``plan_tick``, from ``closes_1h``) and carries the 1h bars from that close to the fill.
    """
    requested: dict[str, int] = {}
    for rec in decisions:
        for line in rec.executed:
            if "exit requested on " in line and rec.market_time_ms is not None:
                pid = line.split("exit requested on ", 1)[1].split(" ", 1)[0]
                requested.setdefault(pid, rec.market_time_ms)
    plans = entry_plans(decisions)
    entries, exits = [], []
    for t in trades:
        entries.append(
            Leg(
                t.symbol, _candle(t.entry_time_ms), _entry(t.side), t.entry_price, t.qty, t.trade_id
            )
        )
        plan = plans.get((t.symbol, t.entry_time_ms))
        if t.exit_reason == PLAN_EXIT and t.trade_id not in requested and plan is not None:
            tick = plan_tick(plan, t.symbol, t.entry_time_ms, closes_1h or {})
            if tick is not None and tick <= t.exit_time_ms:
                candle = tick // CANDLE_MS * CANDLE_MS
                lag = (t.exit_time_ms - tick) // HOUR_MS
                exits.append(
                    Leg(
                        t.symbol,
                        candle,
                        t.exit_reason,
                        t.exit_price,
                        t.qty,
                        t.trade_id,
                        lag,
                        t.side,
                        tick,
                    )  # fmt: skip
                )
                continue
        decided = requested.get(t.trade_id, t.exit_time_ms)
        lag = (t.exit_time_ms - decided) // HOUR_MS
        leg = Leg(
            t.symbol, _candle(decided), t.exit_reason, t.exit_price, t.qty, t.trade_id, lag, t.side
        )
        exits.append(leg)
    for p in open_positions:
        entries.append(
            Leg(
                p.symbol,
                _candle(p.entry_time_ms),
                _entry(p.side),
                p.avg_entry,
                p.qty,
                p.position_id,
            )
        )
        exits.append(Leg(p.symbol, -1, "open at end", p.last_price, p.qty, p.position_id))
    return entries, exits


def _entry(side: str) -> str:
    """An entry leg's reason: the side is part of what must match."""
    return "entry" if side == "long" else f"entry ({side})"


def _candle(market_ms: int) -> int:
    candle = candle_of_close(market_ms)
    return candle if candle is not None else -market_ms  # off a close: never matches


# ---------------------------------------------------------------- comparison


def compare_legs(
    live: list[Leg], backtest: list[Leg], price_tol: float, qty_tol: float
) -> list[str]:
    """Every difference between the two lists of legs, one line each (empty: they agree).

    Prices are compared only for legs the replay filled on the deciding close (lag 0): a
    later fill is checked against the market at its own time (``replay_fill_problems``). A
    plan exit's price is checked by side only, when the replay filled on the tick that fired
    it: that tick lies past the level at which the backtest fills (at or below it for a long,
    at or above for a short); a later tick may have come back.
    """
    problems = []
    by_live = {leg.key: leg for leg in live}
    by_bt = {leg.key: leg for leg in backtest}
    if len(by_live) != len(live) or len(by_bt) != len(backtest):
        problems.append("two legs share a (symbol, candle, reason) key")
    for key in sorted(by_live.keys() - by_bt.keys(), key=_sort_key):
        problems.append(f"only in the replay: {_describe(key)}")
    for key in sorted(by_bt.keys() - by_live.keys(), key=_sort_key):
        problems.append(f"only in the backtest: {_describe(key)}")
    for key in sorted(by_live.keys() & by_bt.keys(), key=_sort_key):
        a, b = by_live[key], by_bt[key]
        if key[2] == PLAN_EXIT:
            if a.lag_bars:  # filled a bar later: checked against its own tick only
                continue
            past = (
                a.price >= b.price * (1 - price_tol)
                if a.side == "short"
                else (a.price <= b.price * (1 + price_tol))
            )
            if not past:
                problems.append(f"{_describe(key)}: price {a.price:.8g} not past {b.price:.8g}")
        elif a.lag_bars == 0 and key[2] != "open at end" and abs(a.price / b.price - 1) > price_tol:
            problems.append(f"{_describe(key)}: price {a.price:.8g} vs {b.price:.8g}")
        if abs(a.qty / b.qty - 1) > qty_tol:
            problems.append(f"{_describe(key)}: qty {a.qty:.8g} vs {b.qty:.8g}")
    return problems


def replay_fill_problems(exits: list[Leg], closes_1h: dict[tuple[str, int], float]) -> list[str]:
    """A replay exit must fill before the next decision (a plan exit within ``PLAN_LAG_MAX``
    1h bars of the close that first crossed its level), at the 1h close it filled on ∓ 5 bps
    (a long's sell below it, a short's buy above)."""
    problems = []
    for leg in exits:
        if leg.reason == "open at end":
            continue
        bound = CANDLE_MS // HOUR_MS if leg.tick_ms is None else PLAN_LAG_MAX
        if not 0 <= leg.lag_bars < bound:
            problems.append(f"{leg.ref}: filled {leg.lag_bars} 1h bars after its decision")
            continue
        fired = leg.candle_ms + CANDLE_MS - 1 if leg.tick_ms is None else leg.tick_ms
        fill_close = fired + leg.lag_bars * HOUR_MS
        tick = closes_1h.get((leg.symbol, fill_close))
        slip = SLIPPAGE if leg.side == "short" else -SLIPPAGE
        if tick is None or abs(leg.price / (tick * (1 + slip)) - 1) > 1e-12:
            problems.append(f"{leg.ref}: exit at {leg.price:.8g}, the tick then was {tick}")
    return problems


def side_by_side(live: list[Leg], backtest: list[Leg]) -> str:
    """Both lists aligned on (symbol, candle, reason), for failure messages and the docs."""
    keys = sorted({leg.key for leg in live} | {leg.key for leg in backtest}, key=_sort_key)
    by_live = {leg.key: leg for leg in live}
    by_bt = {leg.key: leg for leg in backtest}
    rows = [f"{'symbol':<10} {'candle':<17} {'reason':<14} {'replay':>30} {'backtest':>24}"]
    for key in keys:
        a, b = by_live.get(key), by_bt.get(key)
        left = "-" if a is None else f"{a.price:.6g} x {a.qty:.6g}"
        if a is not None and a.lag_bars:
            left += f" (+{a.lag_bars}h)"
        right = "-" if b is None else f"{b.price:.6g} x {b.qty:.6g}"
        rows.append(f"{key[0]:<10} {_when(key[1]):<17} {key[2]:<14} {left:>30} {right:>24}")
    return "\n".join(rows)


def _when(candle_ms: int) -> str:
    if candle_ms == -1:
        return "end"
    if candle_ms < 0:
        return f"off-close {format_timestamp(-candle_ms)[:16]}"
    return format_timestamp(candle_ms)[:16]


def _describe(key: tuple[str, int, str]) -> str:
    return f"{key[0]} {key[2]} decided on the {_when(key[1])} candle"


def _sort_key(key: tuple[str, int, str]) -> tuple[int, str, str]:
    return (abs(key[1]), key[0], key[2])


def same_plan(a: ExitPlan, b: ExitPlan, tol: float = 1e-9) -> bool:
    """The same stop, target and invalidation (numbers to ``tol``, relative)."""
    ca, cb = a.invalidation, b.invalidation

    def near(x: float, y: float) -> bool:
        return abs(x - y) <= tol * max(abs(x), abs(y), 1e-12)

    return (
        near(a.stop_price, b.stop_price)
        and near(a.target_price, b.target_price)
        and (ca.metric, ca.operator) == (cb.metric, cb.operator)
        and near(ca.threshold, cb.threshold)
    )


# ---------------------------------------------------------------- configuration


def board_use(history) -> tuple[int, int]:
    """(cycles whose view came from the decision board, ``market_view`` activities)."""
    served = asked = 0
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            asked += e.activity_task_scheduled_event_attributes.activity_type.name == "market_view"
        elif e.HasField("marker_recorded_event_attributes"):
            details = e.marker_recorded_event_attributes.details
            try:
                data = json.loads(details["data"].payloads[0].data)
                result = json.loads(details["result"].payloads[0].data)
            except (KeyError, IndexError, ValueError):
                continue
            if data.get("activity_type") == "board_decision" and result.get("view"):
                served += 1
    return served, asked


def parity_env(
    home: Path, address: str, fred_dir: Path, speed: float, extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        **os.environ,
        **PARITY_SETTINGS,
        **(extra or {}),
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": address,
        "OCW_FRED_DIR": str(fred_dir),
        "OCW_SPEED": str(speed),
    }


def settings_from_env(env: dict[str, str]) -> Settings:
    """The Settings the processes build from ``env`` (this process's environment below it)."""
    values = {k[4:].lower(): v for k, v in env.items() if k.startswith("OCW_")}
    return Settings(**{**values, "symbols": SYMBOLS, "intervals": ["1h", "4h"]})


def backtest_params(settings: Settings) -> BacktestParams:
    """What ``ocw backtest`` takes from the engine's settings, with the agent layer off; a
    futures account with shorts is a perpetual run that allows them."""
    shared = set(BacktestParams.model_fields) & set(Settings.model_fields)
    shorts = settings.shorts and settings.market == "futures"
    values = {n: getattr(settings, n) for n in shared}
    # the rule policy writes plans live when both settings say so (workers/wiring.py)
    values["rule_exit_plans"] = settings.rule_plans_apply
    return BacktestParams(**values, agent_every_bars=0, perpetual=shorts, allow_shorts=shorts)


# ---------------------------------------------------------------- the comparator itself


def test_compare_legs_reports_every_kind_of_difference():
    """The comparison fails on a missing leg, a shifted candle, a price or a size."""
    t0 = parse_timestamp_ms(START)
    bt = [
        Leg("BTC/USDT", t0, "entry", 100.0, 1.0, "b1"),
        Leg("ETH/USDT", t0, "entry", 10.0, 2.0, "b2"),
        Leg("SOL/USDT", t0 + CANDLE_MS, "entry", 5.0, 3.0, "b3"),
    ]
    live = [
        Leg("BTC/USDT", t0, "entry", 100.01, 1.0, "l1"),  # within PRICE_TOL
        Leg("ETH/USDT", t0, "entry", 10.1, 2.0, "l2"),  # 1 % off
        Leg("SOL/USDT", t0 + 2 * CANDLE_MS, "entry", 5.0, 3.0, "l3"),  # a candle later
        Leg("PAXG/USDT", t0, "entry", 3000.0, 0.1, "l4"),  # the backtest never bought
    ]
    problems = compare_legs(live, bt, PRICE_TOL, QTY_TOL)
    assert len(problems) == 4, problems
    assert "only in the replay: PAXG/USDT entry" in problems[0]
    assert any("ETH/USDT entry" in p and "price" in p for p in problems)
    assert sum("SOL/USDT" in p for p in problems) == 2
    assert compare_legs(live[:1], bt[:1], PRICE_TOL, QTY_TOL) == []
    sized = [Leg("BTC/USDT", t0, "entry", 100.0, 1.01, "l1")]
    assert compare_legs(sized, bt[:1], PRICE_TOL, QTY_TOL) == [
        "BTC/USDT entry decided on the 2025-08-08T00:00 candle: qty 1.01 vs 1"
    ]


def test_replay_exit_checks_its_own_tick_and_the_next_decision():
    t0 = parse_timestamp_ms(START)
    closes = {("BTC/USDT", t0 + CANDLE_MS - 1 + HOUR_MS): 100.0}
    on_tick = Leg("BTC/USDT", t0, "decision_sell", 100.0 * (1 - SLIPPAGE), 1.0, "p1", 1)
    assert replay_fill_problems([on_tick], closes) == []
    off_tick = Leg("BTC/USDT", t0, "decision_sell", 99.0, 1.0, "p2", 1)
    too_late = Leg("BTC/USDT", t0, "decision_sell", 100.0, 1.0, "p3", 4)
    assert len(replay_fill_problems([off_tick, too_late], closes)) == 2


# ---------------------------------------------------------------- the parity run


@pytest.mark.integration
@pytest.mark.parametrize(
    "start,extra",
    [(START, {}), (SHORTS_START, SHORTS_SETTINGS), (PLANS_START, PLANS_SETTINGS)],
    ids=["spot-long", "futures-long-short", "futures-long-short-exit-plans"],
)
async def test_replay_and_backtester_make_the_same_trades(
    tmp_path: Path, data_dir: Path, start: str, extra: dict[str, str]
):
    start_ms = parse_timestamp_ms(start)
    end_ms = start_ms + DAYS * 86_400_000
    replay_seconds = PLAN_REPLAY_SECONDS if extra.get("OCW_RULE_EXIT_PLANS") else REPLAY_SECONDS
    speed = DAYS * 86_400 / replay_seconds
    home = tmp_path / "home"
    fred = tmp_path / "no-fred"
    fred.mkdir()
    env = parity_env(home, f"127.0.0.1:{free_port()}", fred, speed, extra)
    settings = settings_from_env(env)
    assert settings.agent_interval_s / speed > 10 * replay_seconds  # no agent tick in the run

    # ---- the backtester: the real 4h files, warmed up on what the listener is seeded with;
    # one candle more than the replay, so that the replay's last close decides here too
    params = backtest_params(settings)
    loaded = load_backtest_data(
        data_dir,
        SYMBOLS,
        settings.decision_interval,
        start_ms,
        end_ms + CANDLE_MS,
        scorer_interval=None,
        warmup_bars=WARMUP_DAYS * 6,
    )
    loaded.data.funding.clear()  # the paper broker charges no funding: neither does this
    result = run_backtest(loaded.data, params, start_ms, end_ms + CANDLE_MS)
    bt_entries, bt_exits = backtest_legs(result)
    assert len(bt_entries) >= 8, "the window should trade"
    if params.allow_shorts:
        assert sum(t.side == "short" for t in result.trades) >= 3, "the window should short"
    if params.rule_exit_plans:
        plan_exits = sum(t.exit_reason == PLAN_EXIT for t in result.trades)
        assert plan_exits >= 2, "the window should exit on the plans' invalidations"

    # ---- the Temporal path, as a user runs it
    files = [data_dir / f"binance_{s.replace('/', '')}_1h.csv" for s in SYMBOLS]
    logs = tmp_path / "logs"
    logs.mkdir()
    server = start_dev_server(settings, log_file=logs / "temporal.log", ui=False)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(ocw(["worker"], env, logs / "worker.log"))
        listen_log = logs / "listen.log"
        args = ["listen", "--replay", *map(str, files), "--speed", str(speed)]
        args += ["--days", str(DAYS), "--start", start, "--warmup-days", str(WARMUP_DAYS)]
        procs.append(ocw([*args, "--updates-per-bar", "0", "--lockstep"], env, listen_log))
        client = await connect(settings, attempts=60, delay_s=0.5)
        handle = client.get_workflow_handle(settings.decision_workflow_id)

        async def status():
            try:
                return await handle.query(DecisionWorkflow.status)
            except Exception:  # noqa: BLE001 - not started yet
                return None

        await wait_for(
            lambda: file_has(listen_log, "replay finished"),
            timeout=replay_seconds * 4,
            what="replay end",
        )
        final = await wait_for(
            lambda: has(
                status,
                lambda s: (
                    s.queue_length == 0
                    and not s.busy
                    and not any(p.exit_requested for p in s.positions)
                ),
            ),
            60,
            "idle engine, every requested exit filled",
        )
        engine_config = (await handle.query(DecisionWorkflow.state)).config
        served, asked = board_use(await handle.fetch_history())
        await asyncio.sleep(0.5)  # the last journal writes follow the signals
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(server)

    journal = Journal(home / "journal.db")
    decisions = journal.decisions(ACCOUNT)
    trades = journal.trades(ACCOUNT)
    closes_1h = {
        (s, b.close_time): b.close
        for s, path in zip(SYMBOLS, files, strict=True)
        for b in load_ohlcv_csv(path, s, "1h", start_ms, end_ms)
    }
    live_entries, live_exits = live_legs(trades, final.positions, decisions, closes_1h)
    table = side_by_side(live_entries + live_exits, bt_entries + bt_exits)
    problems: list[str] = []

    # ---- preconditions: the replay path saw what the backtester sees
    if engine_config.learner.warmup_trades != settings.learner_warmup_trades:
        problems.append(
            "OCW_LEARNER_WARMUP_TRADES did not reach the DecisionWorkflow (its config has "
            f"{engine_config.learner.warmup_trades}): the learner scales BUY sizes in the replay "
            "only; workers/wiring.engine_config does not pass learner_params_from(settings)"
        )
    late = [
        format_timestamp(d.market_time_ms or 0)
        for d in decisions
        if d.market_time_ms is None or candle_of_close(d.market_time_ms) is None
    ]
    if late:
        problems.append(f"decisions on a view past a candle's close (replay ran ahead): {late}")
    reasons = {r.split(":")[0] for d in decisions for r in d.wake_reasons}
    if reasons != {"candle_close"}:
        problems.append(f"wakes other than G1 candle closes: {sorted(reasons)}")
    candles = {candle_of_close(d.market_time_ms) for d in decisions if d.market_time_ms}
    if candles != set(range(start_ms, end_ms, CANDLE_MS)):
        problems.append("not every 4h close of the window was decided on")
    if final.portfolio.halted:
        problems.append("the replay's drawdown halt is on")
    if engine_config.rule_exit_plans != params.rule_exit_plans:
        problems.append(
            f"the DecisionWorkflow's rule_exit_plans is {engine_config.rule_exit_plans}, the "
            f"backtest's {params.rule_exit_plans}"
        )
    # the lean engine decides on the listener's decision board (issue 14): most cycles
    print(f"decision board: {served} cycle(s) served, {asked} asked the listener")
    if served == 0:
        problems.append(f"no cycle decided on the decision board ({asked} asked the listener)")

    # ---- the same rule scores at every decision, for every symbol (features equal)
    rules = RuleDecisions(
        loaded.data, params.default_position_pct, params.max_position_pct, params.allow_shorts
    )
    steps = {int(t): k for k, t in enumerate(loaded.data.timeline)}
    for d in decisions:
        candle = candle_of_close(d.market_time_ms or 0)
        if candle not in steps:
            continue
        as_flat, holding = rules.both(steps[candle])
        shorted = rules.holding_short(steps[candle]) if params.allow_shorts else {}
        for td in d.decision.decisions:
            # the backtester's intent for the same holding: flat, held long or held short
            live = intent_of(td)
            seen = [m[td.ticker] for m in (as_flat, holding, shorted) if td.ticker in m]
            if not any(
                (i.action, i.side) == (live.action, live.side)
                and abs(td.confidence - i.confidence) <= SCORE_TOL
                for i in seen
            ):
                problems.append(
                    f"{_when(candle)} {td.ticker}: replay {td.action} score {td.confidence} vs "
                    f"backtest {[(str(i.action), i.confidence) for i in seen]}"
                )

    # ---- the same exit plans: the rule policy's for the same entry, from the same features
    live_plans = entry_plans(decisions)
    if params.rule_exit_plans and not live_plans:
        problems.append("OCW_RULE_EXIT_PLANS is on but no live entry carried a plan")
    plan_params = params.position_params()
    for (symbol, market_ms), plan in sorted(live_plans.items()):
        candle = candle_of_close(market_ms)
        if candle not in steps:
            continue
        mine = rules.planned(steps[candle], plan_params).get(symbol)
        theirs = None if mine is None else mine.exit_plan
        if theirs is None or not same_plan(plan, theirs):
            problems.append(f"{_when(candle)} {symbol}: replay plan {plan} vs backtest {theirs}")

    # ---- the same entries and exits, at matching prices
    problems += replay_fill_problems(live_exits, closes_1h)
    problems += compare_legs(live_entries, bt_entries, PRICE_TOL, QTY_TOL)
    problems += compare_legs(live_exits, bt_exits, PRICE_TOL, QTY_TOL)
    print(table)
    assert not problems, "\n".join(["replay and backtest differ:", *problems, table])
