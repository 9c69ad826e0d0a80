"""Shorts on USDⓈ-M perpetuals in the backtester (issue 15): fills, accounting, mirrored stops,
funding by side, leverage and liquidation, gross exposure, the long/short family adapter, and
long-only runs unchanged. Hand-made bars, hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from trading.backtest.data import prepare_data
from trading.backtest.engine import Backtester, run_backtest
from trading.backtest.fills import intrabar_exit, stop_levels
from trading.backtest.metrics import result_metrics
from trading.backtest.params import BacktestParams
from trading.backtest.policy import Intent
from trading.leverage import DEFAULT_MMR, liquidation_price
from trading.market_data import generate_market
from trading.models import Action, Bar, PositionParams, PositionSide
from trading.policies import FamilyDecisions, WeightDecisions
from trading.policies.trend_filter import TrendFilterParams
from trading.safety import net_pnl_pct, price_at_pnl

SHORT = PositionSide.SHORT
LONG = PositionSide.LONG
H = 3_600_000
H4 = 4 * H
H8 = 8 * H
START = 1_735_689_600_000  # 2025-01-01 00:00 UTC
FEE = 0.001
P = PositionParams()  # stop -4 % net, trail from +8 % net at 12 %, guard -15 %

# perpetual, shorts allowed, no stops, no scorer: the decision source alone trades
BARE = BacktestParams(
    perpetual=True,
    allow_shorts=True,
    agent_every_bars=0,
    stop_loss_pct=0.0,
    trail_pct=0.0,
    max_drawdown_guard_pct=0.0,
    drawdown_halt_pct=0.9,
)


def _bars(symbol: str, ohlc: list[tuple[float, float, float, float]]) -> list[Bar]:
    out = []
    for i, (o, h, lo, c) in enumerate(ohlc):
        t = START + i * H4
        out.append(
            Bar(
                symbol=symbol,
                interval="4h",
                open_time=t,
                close_time=t + H4 - 1,
                open=o,
                high=h,
                low=lo,
                close=c,
                volume=1.0,
            )
        )
    return out


def _path(closes: list[float], wick: float = 0.001) -> list[tuple[float, float, float, float]]:
    """Each bar opens at the previous close, wicks ``wick`` beyond its body."""
    out, prev = [], closes[0]
    for c in closes:
        o, prev = prev, c
        out.append((o, max(o, c) * (1 + wick), min(o, c) * (1 - wick), c))
    return out


class Script:
    """A decision source playing ``{step: {symbol: Intent}}``."""

    def __init__(self, plan: dict[int, dict[str, Intent]]) -> None:
        self.plan = plan

    def intents(self, step, held, group_weights=None):
        return dict(self.plan.get(step, {}))


def _short(pct: float = 0.3) -> Intent:
    return Intent(Action.BUY, pct, 1.0, {}, SHORT)


def _long(pct: float = 0.3) -> Intent:
    return Intent(Action.BUY, pct, 1.0, {})


SELL = Intent(Action.SELL, 0.0, 1.0, {})


def _falling(n: int = 20) -> list[tuple[float, float, float, float]]:
    return _path(np.linspace(100.0, 80.0, n).tolist())


# ------------------------------------------------------------ fills and accounting


def test_short_on_a_falling_series_profits_by_the_hand_computed_amount() -> None:
    ohlc = _falling()
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", ohlc)}, "4h")
    params = BARE.model_copy(update={"slippage_bps": 10.0})
    result = run_backtest(
        data, params, decisions=Script({2: {"BTC/USDT": _short()}, 10: {"BTC/USDT": SELL}})
    )
    (t,) = result.trades
    qty = 0.3 * 10_000 / ohlc[2][3]  # sized at the deciding close, 30 % of equity
    entry = ohlc[3][0] * (1 - 0.001)  # sold at the next open, less slippage
    exit_ = ohlc[11][0] * (1 + 0.001)  # bought back at the open after the SELL, plus slippage
    pnl = qty * (entry - exit_) - FEE * qty * (entry + exit_)
    assert t.side is SHORT and t.exit_reason == "decision_cover"  # a short's SELL intent
    assert t.qty == pytest.approx(qty, rel=1e-12)
    assert t.entry_price == pytest.approx(entry, rel=1e-12)
    assert t.exit_price == pytest.approx(exit_, rel=1e-12)
    assert t.pnl == pytest.approx(pnl, rel=1e-9) and pnl > 0
    assert t.pnl_pct == pytest.approx(net_pnl_pct(entry, exit_, FEE, side=SHORT), rel=1e-9)
    assert t.fees == pytest.approx(FEE * qty * (entry + exit_), rel=1e-12)
    assert result.fees_paid == pytest.approx(t.fees, rel=1e-12)
    assert result.equity[-1] == pytest.approx(10_000 + pnl, rel=1e-12)
    # marked at a close while open: collateral + (entry - close)·qty, the entry fee paid
    k = 6
    marked = 10_000 - FEE * qty * entry + qty * (entry - ohlc[k][3])
    assert result.equity[k] == pytest.approx(marked, rel=1e-12)
    assert result.exposure[k] == pytest.approx(qty * ohlc[k][3] / marked, rel=1e-12)
    m = result_metrics(result)
    assert (m.trades_long, m.trades_short) == (0, 1)
    assert m.pnl_short == pytest.approx(pnl, rel=1e-9) and m.pnl_long == 0.0


def test_a_short_cannot_spend_cash_it_does_not_have() -> None:
    """The collateral is the notional: two 60 % shorts cannot both fill in full."""
    ohlc = _falling()
    data = prepare_data(
        {"BTC/USDT": _bars("BTC/USDT", ohlc), "ETH/USDT": _bars("ETH/USDT", ohlc)}, "4h"
    )
    params = BARE.model_copy(update={"max_position_pct": 1.0, "max_exposure": 1.0})
    plan = {2: {"BTC/USDT": _short(0.6), "ETH/USDT": _short(0.6)}}
    result = Backtester(data, params, Script(plan)).run()
    notional = sum(t.qty * t.entry_price for t in result.trades)
    fees_in = sum(t.qty * t.entry_price * FEE for t in result.trades)
    assert len(result.trades) == 2
    assert notional + fees_in <= 10_000 * (1 + 1e-12)


def test_end_of_test_covers_at_the_last_close_plus_slippage() -> None:
    ohlc = _falling(12)
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", ohlc)}, "4h")
    result = run_backtest(data, BARE, decisions=Script({1: {"BTC/USDT": _short()}}))
    (t,) = result.trades
    assert t.exit_reason == "end_of_test"
    assert t.exit_price == pytest.approx(ohlc[-1][3] * (1 + 5 / 10_000), rel=1e-12)
    assert result.equity[-1] == pytest.approx(10_000 + t.pnl, rel=1e-12)


# ------------------------------------------------------------ mirrored safety layer


def test_short_stop_fires_on_the_high_first_at_its_level() -> None:
    """A bar of 100 → high 105 → low 85 → close 99. Low first would arm the trail at
    85·1.12 = 95.2 and exit there on the way to the close; for a short the high comes first
    and trips the -4 % stop at its level."""
    level = price_at_pnl(100.0, -0.04, FEE, side=SHORT)
    assert level == pytest.approx(103.8002, rel=1e-6)
    assert stop_levels(100.0, 100.0, P, side=SHORT)[0] == pytest.approx(level)
    hit, trough = intrabar_exit(100.0, 100.0, 100.0, 105.0, 85.0, 99.0, P, 1.0, 5.0, side=SHORT)
    assert hit is not None and hit.reason == "stop_loss" and hit.leg == "high"
    assert hit.price == pytest.approx(level, rel=1e-9)
    assert net_pnl_pct(100.0, hit.price, FEE, side=SHORT) <= -0.04
    assert trough == 100.0  # the low came after the exit
    # the same bar in the engine: a short from 100, the bar after its entry bar
    ohlc = [(100.0, 100.1, 99.9, 100.0)] * 3 + [
        (100.0, 100.1, 99.9, 100.0),
        (100.0, 105.0, 85.0, 99.0),
    ]
    ohlc += [(99.0, 99.1, 98.9, 99.0)] * 3
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", ohlc)}, "4h")
    params = BacktestParams(perpetual=True, allow_shorts=True, agent_every_bars=0, slippage_bps=0.0)
    result = run_backtest(data, params, decisions=Script({2: {"BTC/USDT": _short()}}))
    (t,) = result.trades
    assert t.side is SHORT and t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(price_at_pnl(100.0, -0.04, FEE, side=SHORT), rel=1e-9)
    assert t.exit_time_ms == START + 5 * H4  # stamped at that bar's close (its end)


def test_short_gap_through_the_stop_covers_at_the_open() -> None:
    hit, _ = intrabar_exit(100.0, 100.0, 110.0, 112.0, 108.0, 109.0, P, 1.0, 5.0, side=SHORT)
    assert hit is not None and hit.price == 110.0 and hit.reason == "stop_loss"


def test_short_trailing_stop_sits_above_the_trough() -> None:
    """Trough 90 before the bar (+9.8 % net: the trail is armed at 100.8). The high (91) is
    clear of it; the low (85) lowers the trough and the trail to 95.2; the rise to the close
    (97) crosses it there."""
    hit, trough = intrabar_exit(100.0, 90.0, 90.0, 91.0, 85.0, 97.0, P, 1.0, 5.0, side=SHORT)
    assert trough == 85.0
    assert hit is not None and hit.reason == "trailing_stop" and hit.leg == "close"
    assert hit.price == pytest.approx(85.0 * 1.12, rel=1e-9)


def test_short_high_is_checked_before_the_low_moves_the_trough() -> None:
    """Trough 85 before the bar, trail at 95.2; the high (93) is under it. The low (70) would
    pull the trail to 78.4, under the high, but comes after it: the exit is on the close leg."""
    hit, trough = intrabar_exit(100.0, 85.0, 88.0, 93.0, 70.0, 80.0, P, 1.0, 5.0, side=SHORT)
    assert trough == 70.0
    assert hit is not None and hit.reason == "trailing_stop" and hit.leg == "close"
    assert hit.price == pytest.approx(70.0 * 1.12, rel=1e-9)


def test_short_quiet_bar_and_time_stop() -> None:
    hit, trough = intrabar_exit(100.0, 100.0, 100.0, 101.0, 97.0, 98.0, P, 1.0, 5.0, side=SHORT)
    assert hit is None and trough == 97.0
    timed = P.model_copy(update={"time_stop_hours": 4.0})
    hit, _ = intrabar_exit(100.0, 100.0, 100.0, 101.0, 99.5, 100.5, timed, 2.0, 6.0, side=SHORT)
    assert hit is not None and hit.reason == "time_stop" and hit.price == 100.5


def test_short_mirrors_a_long_on_the_reflected_bar() -> None:
    """At zero fee a long's PnL at x equals a short's at 2E - x: reflected bars give the same
    stop and guard exits (the trail is a gross fraction of the best price: left out)."""
    zero = P.model_copy(update={"fee_rate": 0.0, "trail_pct": 0.0})
    rng = np.random.default_rng(5)
    for _ in range(300):
        o, c = rng.uniform(90, 110, 2)
        hi, lo = max(o, c) + rng.uniform(0, 15), min(o, c) - rng.uniform(0, 15)
        long_hit, _ = intrabar_exit(100.0, 100.0, o, hi, lo, c, zero, 1.0, 5.0)
        short_hit, _ = intrabar_exit(
            100.0, 100.0, 200 - o, 200 - lo, 200 - hi, 200 - c, zero, 1.0, 5.0, side=SHORT
        )
        assert (long_hit is None) == (short_hit is None)
        if long_hit is not None:
            assert long_hit.reason == short_hit.reason
            assert 200 - long_hit.price == pytest.approx(short_hit.price, rel=1e-8)


# ------------------------------------------------------------ funding


@pytest.mark.parametrize("rate", [0.0001, -0.0003])
def test_funding_by_side_against_hand_computed_totals(rate: float) -> None:
    ohlc = _falling(40)
    times = START + H8 * np.arange(40 * H4 // H8, dtype=np.int64)
    funding = {"BTC/USDT": (times, np.full(len(times), rate))}
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", ohlc)}, "4h", funding=funding)
    params = BARE.model_copy(update={"slippage_bps": 0.0})
    plan = {3: {"BTC/USDT": _short()}, 30: {"BTC/USDT": SELL}}
    result = run_backtest(data, params, decisions=Script(plan))
    (t,) = result.trades
    # held from the open of bar 4 to the open of bar 31: funding at bars 4..30 whose open is
    # a funding time (every other 4h bar), on qty × that bar's close
    held = [i for i in range(4, 31) if (START + i * H4) % H8 == 0]
    expected = sum(t.qty * ohlc[i][3] * rate for i in held)
    assert result.funding_paid == pytest.approx(-expected, rel=1e-12)  # a short receives +rate
    assert (result.funding_paid < 0) == (rate > 0)
    unfunded = run_backtest(
        prepare_data({"BTC/USDT": _bars("BTC/USDT", ohlc)}, "4h"), params, decisions=Script(plan)
    )
    assert t.pnl == pytest.approx(unfunded.trades[0].pnl + expected, rel=1e-9)
    assert result.equity[-1] - unfunded.equity[-1] == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------ refusals, leverage, liquidation


def test_spot_run_asked_to_short_or_lever_is_refused() -> None:
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", _falling())}, "4h")
    with pytest.raises(ValueError, match="allow_shorts needs perpetual"):
        run_backtest(data, BacktestParams(allow_shorts=True))
    with pytest.raises(ValueError, match="needs perpetual"):
        run_backtest(data, BacktestParams(leverage=3.0))
    with pytest.raises(ValueError):
        BacktestParams(leverage=6.0)  # above trading.limits.HARD_MAX_LEVERAGE
    # a short intent in a run without allow_shorts is skipped, not taken for a long
    perp = BARE.model_copy(update={"allow_shorts": False})
    result = run_backtest(data, perp, decisions=Script({2: {"BTC/USDT": _short()}}))
    assert not result.trades and result.skipped["entry: shorts not allowed"] == 1


@pytest.mark.parametrize("side", [SHORT, LONG])
def test_leverage_entry_refused_when_liquidation_lies_inside_the_stop(side) -> None:
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", _falling())}, "4h")
    intent = _short() if side is SHORT else _long()
    wide = BARE.model_copy(
        update={"leverage": 5.0, "stop_loss_pct": 0.25, "max_drawdown_guard_pct": 0.3}
    )
    refused = run_backtest(data, wide, decisions=Script({2: {"BTC/USDT": intent}}))
    assert not refused.trades and refused.skipped["entry: liquidation"] == 1
    # the -4 % stop is in front of the 5x liquidation price (about ±20 %): accepted
    tight = wide.model_copy(update={"stop_loss_pct": 0.04})
    taken = run_backtest(data, tight, decisions=Script({2: {"BTC/USDT": intent}}))
    assert len(taken.trades) == 1 and not taken.skipped
    # without any stop, a leveraged entry has nothing in front of its liquidation
    bare = BARE.model_copy(update={"leverage": 2.0})
    none = run_backtest(data, bare, decisions=Script({2: {"BTC/USDT": intent}}))
    assert not none.trades and none.skipped["entry: liquidation"] == 1


def test_liquidation_at_1x_when_the_high_crosses_about_twice_the_entry() -> None:
    flat = [(100.0, 100.1, 99.9, 100.0)] * 4
    ohlc = flat + [(100.0, 150.0, 99.0, 140.0), (140.0, 210.0, 139.0, 180.0)] + flat
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", ohlc)}, "4h")
    params = BARE.model_copy(update={"slippage_bps": 0.0})
    result = run_backtest(data, params, decisions=Script({2: {"BTC/USDT": _short()}}))
    (t,) = result.trades
    liq = liquidation_price(SHORT, 100.0, 1.0, DEFAULT_MMR)
    assert liq == pytest.approx(199.2032, rel=1e-6)
    assert t.exit_reason == "liquidation" and t.exit_price == pytest.approx(liq, rel=1e-12)
    assert t.exit_time_ms == START + 6 * H4
    qty = t.qty
    assert t.pnl == pytest.approx(qty * (100.0 - liq) - FEE * qty * (100.0 + liq), rel=1e-9)
    assert result.liquidations == 1
    assert np.all(result.equity > 0)


def test_leveraged_liquidation_when_the_bar_gaps_past_it_and_stop_when_in_front() -> None:
    flat = [(100.0, 100.1, 99.9, 100.0)] * 4
    liq = liquidation_price(SHORT, 100.0, 5.0, DEFAULT_MMR)  # 119.52
    params = BacktestParams(
        perpetual=True,
        allow_shorts=True,
        leverage=5.0,
        agent_every_bars=0,
        slippage_bps=0.0,
        drawdown_halt_pct=0.9,
    )
    gap = flat + [(125.0, 126.0, 124.0, 125.0)] + flat  # opens past the stop and the liquidation
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", gap)}, "4h")
    (t,) = run_backtest(data, params, decisions=Script({2: {"BTC/USDT": _short()}})).trades
    assert t.exit_reason == "liquidation" and t.exit_price == pytest.approx(liq, rel=1e-12)
    spike = flat + [(100.0, 125.0, 99.0, 101.0)] + flat  # the rise crosses the stop first
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", spike)}, "4h")
    (t,) = run_backtest(data, params, decisions=Script({2: {"BTC/USDT": _short()}})).trades
    assert t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(price_at_pnl(100.0, -0.04, FEE, side=SHORT), rel=1e-9)
    # a 5x long is liquidated by a low under its liquidation price, with stops off in front
    drop = flat + [(70.0, 71.0, 69.0, 70.0)] + flat
    data = prepare_data({"BTC/USDT": _bars("BTC/USDT", drop)}, "4h")
    (t,) = run_backtest(data, params, decisions=Script({2: {"BTC/USDT": _long()}})).trades
    assert t.side is LONG and t.exit_reason == "liquidation"
    assert t.exit_price == pytest.approx(liquidation_price(LONG, 100.0, 5.0), rel=1e-12)


# ------------------------------------------------------------ gross exposure


def test_gross_exposure_cap_counts_a_short() -> None:
    ohlc = _falling(30)
    up = _path(np.linspace(50.0, 60.0, 30).tolist())
    data = prepare_data(
        {"BTC/USDT": _bars("BTC/USDT", ohlc), "ETH/USDT": _bars("ETH/USDT", up)}, "4h"
    )
    params = BARE.model_copy(update={"max_exposure": 0.5, "slippage_bps": 0.0})
    # at the same decision: the pending short's 3,000 leave 2,000 under the 5,000 cap
    same = run_backtest(
        data, params, decisions=Script({2: {"BTC/USDT": _short(), "ETH/USDT": _long()}})
    )
    eth = next(t for t in same.trades if t.symbol == "ETH/USDT")
    assert eth.qty * up[2][3] == pytest.approx(2_000.0, rel=1e-12)
    # later: the held short's |notional| at that close counts, not a negative one
    later = run_backtest(
        data, params, decisions=Script({2: {"BTC/USDT": _short()}, 8: {"ETH/USDT": _long()}})
    )
    btc = next(t for t in later.trades if t.symbol == "BTC/USDT")
    eth = next(t for t in later.trades if t.symbol == "ETH/USDT")
    room = 0.5 * later.equity[8] - btc.qty * ohlc[8][3]
    assert room < 0.3 * later.equity[8]  # the cap binds
    assert eth.qty * up[8][3] == pytest.approx(room, rel=1e-9)
    assert later.exposure[9] == pytest.approx(
        (btc.qty * ohlc[9][3] + eth.qty * up[9][3]) / later.equity[9], rel=1e-12
    )


# ------------------------------------------------------------ long-only runs unchanged


@pytest.fixture(scope="module")
def market():
    return generate_market(["BTC/USDT", "ETH/USDT", "SOL/USDT"], "4h", 1500, seed=21)


@pytest.fixture(scope="module")
def data(market):
    return prepare_data(market, "4h")


@pytest.mark.parametrize(
    ("update", "trades", "final"),
    [
        ({}, 31, 8944.44196633094),
        ({"agent_every_bars": 0, "slippage_bps": 10.0}, 18, 9206.573030724507),
    ],
)
def test_long_only_numbers_are_those_of_the_engine_before_shorts(data, update, trades, final):
    """Pinned from the engine as it was before shorts (test_backtest_engine's scenarios), and
    the same with every new switch that cannot change a long-only run flipped."""
    start = int(data.timeline[250])
    base = run_backtest(data, BacktestParams(**update), start)
    assert len(base.trades) == trades and base.equity[-1] == final
    assert all(t.side is LONG for t in base.trades)
    dumps = [t.model_dump() for t in base.trades]
    explicit = run_backtest(data, BacktestParams(**update, allow_shorts=False, leverage=1.0), start)
    assert [t.model_dump() for t in explicit.trades] == dumps
    assert explicit.equity.tolist() == base.equity.tolist()
    # perpetual (no funding files here) without shorts: the same run to the last bit
    perp = BacktestParams(**update, perpetual=True)
    a = run_backtest(data, perp, start)
    assert [t.model_dump() for t in a.trades] == dumps
    assert a.equity.tolist() == base.equity.tolist()
    assert a.exposure.tolist() == base.exposure.tolist()
    # with shorts allowed the rule policy's mirrored trend rules short too (issue 15)
    b = run_backtest(data, perp.model_copy(update={"allow_shorts": True}), start)
    assert any(t.side is SHORT for t in b.trades)


# ------------------------------------------------------------ random shorts: consistency


class Coin:
    """Random long and short entries and exits, seeded: exercises every path at once."""

    def __init__(self, symbols, seed: int) -> None:
        self.symbols = symbols
        self.seed = seed

    def intents(self, step, held, group_weights=None):
        rng = np.random.default_rng(self.seed * 100_003 + step)
        out = {}
        for s in self.symbols:
            u = rng.uniform()
            if s in held:
                out[s] = SELL if u < 0.08 else Intent(Action.HOLD, 0.0, 0.0, {})
            elif u < 0.05:
                out[s] = _short(0.25)
            elif u < 0.10:
                out[s] = _long(0.25)
        return out


@pytest.mark.parametrize("update", [{}, {"leverage": 3.0}, {"safety_every_bars": 3}])
def test_random_long_short_runs_are_consistent(data, update) -> None:
    params = BacktestParams(perpetual=True, allow_shorts=True, drawdown_halt_pct=0.5, **update)
    source = Coin(data.symbols, 3)
    start = int(data.timeline[250])
    fast = Backtester(data, params, source).run(start)
    slow = Backtester(data, params, source, skip_quiet=False).run(start)
    sides = {t.side for t in fast.trades}
    assert sides == {LONG, SHORT}
    assert [t.model_dump() for t in fast.trades] == [t.model_dump() for t in slow.trades]
    assert np.allclose(fast.equity, slow.equity, rtol=1e-12)
    # every cash flow is in some trade's pnl: the final equity is the capital plus their sum
    assert fast.equity[-1] == pytest.approx(10_000 + math.fsum(t.pnl for t in fast.trades))
    assert sum(t.fees for t in fast.trades) == pytest.approx(fast.fees_paid)
    m = result_metrics(fast)
    assert m.trades_long + m.trades_short == m.trades
    assert m.pnl_long + m.pnl_short == pytest.approx(m.final_equity - m.initial_equity)
    for t in fast.trades:
        if t.exit_reason in ("stop_loss", "max_drawdown_guard") and t.side is SHORT:
            assert t.exit_price >= t.entry_price  # a short's loss exit is above its entry


# ------------------------------------------------------------ family adapter, long/short mode


def _weights_data():
    closes = np.linspace(100, 90, 14).tolist()
    return prepare_data({"BTC/USDT": _bars("BTC/USDT", _path(closes))}, "4h")


def test_adapter_long_short_mode_and_long_only_mode() -> None:
    data = _weights_data()
    w = np.array([0, 0.5, 0.5, -0.6, -0.6, -0.6, -0.02, 0.4, 0.4, 0, 0, 0, 0, 0])
    dec = WeightDecisions(
        data, {"BTC/USDT": w}, "trend", position_pct=0.4, entry_threshold=0.1, exit_threshold=0.05
    )

    def act(step, held=(), short=None):
        got = dec.intents(step, set(held), None, short)["BTC/USDT"]
        return got.action, got.position_pct, got.side

    # long-only (no ``short``): exactly as before, negatives are flat
    assert act(3) == (Action.HOLD, 0.0, LONG)
    assert act(3, {"BTC/USDT"})[0] is Action.SELL
    # long/short
    assert act(1, short=set()) == (Action.BUY, 0.2, LONG)
    assert act(3, short=set()) == (Action.BUY, 0.24, SHORT)  # |-0.6| x 0.4
    assert act(3, {"BTC/USDT"}, set())[0] is Action.SELL  # a long whose target turned short
    assert act(4, {"BTC/USDT"}, {"BTC/USDT"})[0] is Action.HOLD  # a short held short
    assert act(6, {"BTC/USDT"}, {"BTC/USDT"})[0] is Action.SELL  # -0.02 >= -0.05: cover
    assert act(6, short=set())[0] is Action.HOLD  # inside the entry band
    steps = np.arange(len(data.timeline))
    for flat in (True, False):
        expected = [
            any(i.action is Action.BUY for i in dec.intents(s, set(), None, set()).values())
            or (
                not flat
                and any(
                    dec.intents(s, {"BTC/USDT"}, None, short)["BTC/USDT"].action is Action.SELL
                    for short in (set(), {"BTC/USDT"})
                )
            )
            for s in steps.tolist()
        ]
        assert dec.active_steps(steps, flat, shorts=True).tolist() == expected
    # through the engine: long at 2, SELL at 3 (fills at 4), short at the next decision bar (4,
    # fills at 5), cover at 6 (fills at 7), long again at 7 (fills at 8)
    result = run_backtest(data, BARE, decisions=dec)
    got = [(t.side, t.entry_time_ms, t.exit_time_ms) for t in result.trades]
    bar = [START + i * H4 for i in range(14)]
    assert got[:3] == [(LONG, bar[2], bar[4]), (SHORT, bar[5], bar[7]), (LONG, bar[8], bar[10])]
    long_only = run_backtest(data, BARE.model_copy(update={"allow_shorts": False}), decisions=dec)
    assert {t.side for t in long_only.trades} == {LONG}


def _down_trend(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    drift = np.concatenate([np.full(n // 5, 0.003), np.full(n - n // 5, -0.004)])
    return 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.004, n)))


def test_family_long_short_beats_long_only_on_a_down_trend() -> None:
    n = 600
    data = prepare_data(
        {
            "BTC/USDT": _bars("BTC/USDT", _path(_down_trend(n, 3).tolist(), 0.002)),
            "ETH/USDT": _bars("ETH/USDT", _path(_down_trend(n, 4).tolist(), 0.002)),
        },
        "4h",
    )
    start = int(data.timeline[100])
    p = TrendFilterParams(sma_days=10)
    runs = {}
    for long_only in (True, False):
        dec = FamilyDecisions(data, "trend_filter", dataclasses.replace(p, long_only=long_only))
        runs[long_only] = run_backtest(data, BARE, start, decisions=dec)
        slow = Backtester(data, BARE, dec, skip_quiet=False).run(start)
        assert [t.model_dump() for t in slow.trades] == [
            t.model_dump() for t in runs[long_only].trades
        ]
    ls, lo = result_metrics(runs[False]), result_metrics(runs[True])
    assert lo.trades_short == 0 and ls.trades_short > 0
    assert ls.pnl_short > 0
    assert ls.total_return > lo.total_return
    # the long-only family in a shorts run is the long-only run
    dec = FamilyDecisions(data, "trend_filter", p)
    plain = run_backtest(
        data, BARE.model_copy(update={"allow_shorts": False}), start, decisions=dec
    )
    assert [t.model_dump() for t in plain.trades] == [t.model_dump() for t in runs[True].trades]
    assert plain.equity.tolist() == runs[True].equity.tolist()
