"""Chaos over one replay: the whole engine as a user runs it, killed and restarted at random.

Dev server, `ocw worker` and `ocw listen --replay` as processes; during one replay of a generated
market the worker is SIGKILLed four times at seeded random moments (the first while a position
is open), the listener once and the dev server is restarted once on its DB file. Then a wake by
hand through the `temporal` CLI (as the README shows it), close_all, and the audit: no client
order id filled twice, no position without a running PositionWorkflow, broker, workflow and
journal agreeing, no failed workflow, every decision candle handled (tests/integration/chaos.py).
This replaces the single-SIGKILL end-to-end test; `bench/chaos.py` runs the same with 20 kills.

``OCW_CHAOS_SEED`` picks another seed (the moments and pauses of the chaos).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.chaos import (
    ChaosConfig,
    ChaosEvent,
    _Record,
    missed_candles,
    run_chaos,
    serious_task_failures,
)

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("OCW_CHAOS_SEED", "3"))
H4 = 4 * 3_600_000


@pytest.mark.timeout(600)
async def test_replay_survives_chaos(tmp_path: Path):
    result = await run_chaos(ChaosConfig(tmp=tmp_path, seed=SEED, worker_kills=4))
    report = "\n".join([f"chaos seed {SEED}, logs in {tmp_path / 'logs'}", *result.lines()])

    assert (result.kills, result.listener_kills, result.server_restarts) == (4, 1, 1), report
    assert result.kills_with_open_positions >= 1, report
    assert not result.crashes, report
    assert not result.stalled, report
    assert result.duplicate_fills == 0, report
    assert result.lost_positions == 0, report
    assert result.books_agree, report
    assert not result.failed_workflows, report
    assert not serious_task_failures(result.task_failures), report
    assert result.candles_missed == 0, report
    assert result.positions_opened >= 2, report
    assert result.positions_opened == result.positions_closed == result.trades, report
    assert result.manual_wake == "ok", report


# ------------------------------------------------------------------ the candle audit itself


def _rec(cycle: int, market_ms: int, reasons: list[str], folded: bool = False) -> _Record:
    return _Record(cycle, market_ms, wall_ms=cycle * 1000, reasons=reasons, folded=folded)


def test_candle_audit_sees_a_lost_candle_and_accepts_folds_and_chaos():
    closes = [H4 * k - 1 for k in range(1, 5)]  # four 4h closes
    candles = {"BTC/USDT": closes}
    reason = ["candle_close:BTC/USDT:4h"]
    every = [_rec(i + 1, t + 60_000, reason) for i, t in enumerate(closes)]
    assert missed_candles(candles, every, []) == ([], "windows")

    # the second candle's wake is lost: the third cycle's window holds two candles
    lost = [every[0], every[2], every[3]]
    assert missed_candles(candles, lost, []) == ([("BTC/USDT", closes[1])], "windows")
    # ... unless that cycle folded queued wakes, or a chaos event fell between the two cycles
    folded = [every[0], _rec(3, closes[2] + 60_000, reason, folded=True), every[3]]
    assert missed_candles(candles, folded, [])[0] == []
    event = ChaosEvent(at_s=0, wall_ms=2_500, kind="worker_kill")
    assert missed_candles(candles, lost, [event])[0] == []
    # a cycle that lagged past the next close, followed by an empty window, is not a loss
    lagged = [every[0], _rec(2, closes[2] + 1, reason), _rec(3, closes[2] + 2, reason), every[3]]
    assert missed_candles(candles, lagged, [])[0] == []
    # the last candle never handled
    assert missed_candles(candles, every[:3], [event])[0] == [("BTC/USDT", closes[3])]
    # a restarted replay goes back in market time: a candle handled in either pass counts
    second = [_rec(10, closes[0] + 60_000, reason), _rec(11, closes[3] + 60_000, reason)]
    assert missed_candles(candles, [*every[:3], *second], [])[0] == []
    assert missed_candles(candles, [every[0], *second], [])[0] == [
        ("BTC/USDT", closes[1]),
        ("BTC/USDT", closes[2]),
    ]


def test_candle_audit_is_exact_when_reasons_carry_the_close_time():
    closes = [H4 * k - 1 for k in range(1, 4)]
    candles = {"ETH/USDT": closes}
    folded = _rec(1, closes[2] + 5, [f"candle_close:ETH/USDT:4h:{t}" for t in closes[::2]])
    assert missed_candles(candles, [folded], []) == ([("ETH/USDT", closes[1])], "exact")
