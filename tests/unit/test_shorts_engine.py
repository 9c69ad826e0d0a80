"""Shorts through the engine's pure parts (issue 15): the contract's SHORT / COVER, the rule
policy's mirrored trend rules, the exchange stop's level, the paper broker's 1x short, and the
books' value of a short."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from activities.paper_broker import PaperBroker
from trading.agent_contract import (
    AgentLimits,
    DecisionLimits,
    actions_for,
    system_prompt,
    tool_definitions,
    validate_decisions,
)
from trading.exit_plan import rule_plan, stop_loss_pct_for
from trading.models import (
    Action,
    MarketView,
    OrderRequest,
    OrderStatus,
    PositionParams,
    PositionSide,
    Side,
    SymbolFeatures,
)
from trading.orders import client_order_id
from trading.protective_stop import should_move, stop_level, stop_loss_level, triggers_now
from trading.rule_policy import decide
from trading.safety import mark_value, net_pnl_pct

BTC = "BTC/USDT"
ETH = "ETH/USDT"
SHORT = PositionSide.SHORT
LONG = PositionSide.LONG


# ------------------------------------------------------------ the contract


def _limits(**kw) -> DecisionLimits:
    base = {
        "universe": [BTC, ETH],
        "prices": {BTC: 100.0, ETH: 10.0},
        "atr_pct": {BTC: 0.01, ETH: 0.01},
        "stop_loss_pct": 0.04,
    }
    return DecisionLimits(**{**base, **kw})


def _plan(stop: float, target: float, op: str, level: float, symbol: str = BTC) -> dict:
    return {
        "stop_price": stop,
        "target_price": target,
        "invalidation": {"metric": f"{symbol}:price", "operator": op, "threshold": level},
    }


def test_short_is_refused_where_shorts_are_off() -> None:
    raw = {"decisions": [{"ticker": BTC, "action": "SHORT", "position_pct": 0.1}]}
    decision, _ = validate_decisions(raw, _limits())
    assert decision.decisions == []
    assert "shorts are off (spot is long-only" in decision.rejected[0]


def test_short_with_a_mirrored_plan_is_kept() -> None:
    raw = {
        "decisions": [
            {
                "ticker": BTC,
                "action": "SHORT",
                "position_pct": 0.1,
                "confidence": 0.6,
                "exit_plan": _plan(103.0, 94.0, "gt", 102.0),
            }
        ]
    }
    decision, _ = validate_decisions(raw, _limits(shorts=True, plan_required=True))
    (d,) = decision.decisions
    assert d.action is Action.SHORT and d.exit_plan is not None
    assert d.exit_plan.stop_price == pytest.approx(103.0)
    assert d.exit_plan.invalidation.operator == "gt"


@pytest.mark.parametrize(
    "plan,why",
    [
        (_plan(97.0, 94.0, "gt", 102.0), "stop"),  # a short's stop below the price
        (_plan(103.0, 106.0, "gt", 102.0), "target"),  # target above the price
        (_plan(103.0, 94.0, "gt", 99.0), "invalidation"),  # already true now
    ],
)
def test_short_plans_on_the_wrong_side_are_rejected(plan: dict, why: str) -> None:
    raw = {
        "decisions": [{"ticker": BTC, "action": "SHORT", "position_pct": 0.1, "exit_plan": plan}]
    }
    decision, _ = validate_decisions(raw, _limits(shorts=True, plan_required=True))
    assert decision.decisions == []
    assert "SHORT rejected" in decision.rejected[0]
    assert why in decision.rejected[0]


def test_cover_and_sell_must_match_the_held_side() -> None:
    lim = _limits(shorts=True, held={BTC, ETH}, short_held={BTC})
    raw = {
        "decisions": [
            {"ticker": BTC, "action": "SELL"},
            {"ticker": ETH, "action": "COVER"},
        ]
    }
    decision, _ = validate_decisions(raw, lim)
    assert decision.decisions == []
    assert "the open position is a short (COVER closes it)" in decision.rejected[0]
    assert "the open position is a long (SELL closes it)" in decision.rejected[1]
    ok, _ = validate_decisions(
        {"decisions": [{"ticker": BTC, "action": "COVER"}, {"ticker": ETH, "action": "SELL"}]},
        lim,
    )
    assert [(d.ticker, d.action) for d in ok.decisions] == [(BTC, "COVER"), (ETH, "SELL")]


def test_cover_without_a_position_and_short_while_held_are_rejected() -> None:
    lim = _limits(shorts=True, held={ETH}, short_held={ETH})
    raw = {
        "decisions": [
            {"ticker": BTC, "action": "COVER"},
            {"ticker": ETH, "action": "SHORT", "position_pct": 0.1},
        ]
    }
    decision, _ = validate_decisions(raw, lim)
    assert decision.rejected == [
        f"{BTC}: COVER without an open position",
        f"{ETH}: SHORT ignored, a position is already open (ADD increases it)",
    ]


def test_prompt_and_schema_offer_shorts_only_where_they_exist() -> None:
    spot = AgentLimits(universe=[BTC])
    futures = AgentLimits(universe=[BTC], shorts=True, leverage=2)
    assert actions_for(spot) == ["BUY", "SELL", "HOLD", "ADD"]
    assert "SHORT" in actions_for(futures) and "COVER" in actions_for(futures)
    enum = tool_definitions(spot)[0]["input_schema"]["properties"]["decisions"]["items"]
    assert "SHORT" not in enum["properties"]["action"]["enum"]
    assert "Spot, long only" in system_prompt(spot)
    text = system_prompt(futures)
    assert "SHORT opens a short and COVER closes it" in text and "2x" in text
    assert "Spot, long only" not in text


# ------------------------------------------------------------ the rule policy


def _trend(price: float, rsi: float, mom: float) -> SymbolFeatures:
    return SymbolFeatures(
        symbol=BTC,
        interval="4h",
        time_ms=1_700_000_000_000,
        price=price,
        n_bars=200,
        rsi14=rsi,
        momentum14=mom,
        efficiency_ratio30=0.6,
        sma72=price * 1.05,
        atr_pct=0.01,
        ema21=price * 1.01,
        regime="trending",
    )


def _view(f: SymbolFeatures) -> MarketView:
    return MarketView(as_of_ms=f.time_ms, symbols={f.symbol: f})


def test_rule_policy_shorts_a_falling_trend_only_when_allowed() -> None:
    f = _trend(100.0, rsi=35.0, mom=-0.06)
    (long_only,) = decide(_view(f), set()).decisions
    assert long_only.action is Action.HOLD  # SELL signal but flat
    (d,) = decide(_view(f), set(), shorts=True).decisions
    assert d.action is Action.SHORT
    assert 0 < d.position_pct <= 0.30
    assert d.signal_weights["trend"] < 0  # + = for a long: a short's trend weight is negative
    assert "short rule" in d.reasoning


def test_rule_policy_covers_on_the_mirrored_exit_and_on_a_long_signal() -> None:
    up = _trend(100.0, rsi=45.0, mom=0.07)  # momentum > +5 % (RSI under 50: no BUY)
    (d,) = decide(_view(up), {BTC}, shorts=True, short_held={BTC}).decisions
    assert d.action is Action.COVER and "cover rule" in d.reasoning
    buy = _trend(100.0, rsi=60.0, mom=0.03)  # the long trend rule fires
    (d,) = decide(_view(buy), {BTC}, shorts=True, short_held={BTC}).decisions
    assert d.action is Action.COVER
    quiet = _trend(100.0, rsi=45.0, mom=-0.01)
    (d,) = decide(_view(quiet), {BTC}, shorts=True, short_held={BTC}).decisions
    assert d.action is Action.HOLD


def test_rule_policy_long_decisions_unchanged_by_shorts() -> None:
    for rsi, mom in [(60.0, 0.03), (55.0, -0.07), (45.0, 0.0), (70.0, 0.2)]:
        f = _trend(100.0, rsi=rsi, mom=mom)
        for held in (set(), {BTC}):
            a = decide(_view(f), held).decisions[0]
            b = decide(_view(f), held, shorts=True).decisions[0]
            if a.action is not Action.HOLD or held:
                assert a == b


def test_rule_policy_writes_a_mirrored_plan_for_a_short() -> None:
    f = _trend(100.0, rsi=35.0, mom=-0.06)
    (d,) = decide(_view(f), set(), shorts=True, plan_params=PositionParams()).decisions
    plan = d.exit_plan
    assert plan is not None and plan.source == "rule"
    assert plan.stop_price > 100.0 > plan.target_price
    assert plan.invalidation.operator == "gt"


# ------------------------------------------------------------ plans and stops


def test_rule_plan_short_mirrors_the_long() -> None:
    kw = {"atr_pct": 0.01, "stop_loss_pct": 0.04, "trail_activate_pct": 0.08, "fee_rate": 0.001}
    long = rule_plan(BTC, 100.0, ema21=99.0, **kw)
    short = rule_plan(BTC, 100.0, ema21=101.0, side=SHORT, **kw)
    assert long is not None and short is not None
    assert long.stop_price < 100.0 < short.stop_price
    assert short.target_price == pytest.approx(92.0)
    assert short.invalidation.threshold == pytest.approx(101.0)
    # the position's stop from the plan is the hard stop, whichever side
    assert stop_loss_pct_for(short, 100.0, 0.001, 0.04, SHORT) == pytest.approx(0.04, abs=1e-9)


def test_exchange_stop_of_a_short_sits_above_and_only_moves_down() -> None:
    p = PositionParams(stop_loss_pct=0.04, trail_activate_pct=0.08, trail_pct=0.05)
    loss = stop_loss_level(100.0, p, SHORT)
    assert loss is not None and loss > 100.0
    assert net_pnl_pct(100.0, loss, p.fee_rate, side=SHORT) == pytest.approx(-0.04)
    assert stop_level(100.0, 100.0, 100.0, p, SHORT) == pytest.approx(loss)
    # after a 10 % fall the trail (5 % above the trough) is tighter than the stop loss
    level = stop_level(100.0, 90.0, 90.0, p, SHORT)
    assert level == pytest.approx(90.0 * 1.05)
    assert should_move(loss, 1.0, level, 1.0, side=SHORT)
    assert not should_move(level, 1.0, level * 1.01, 1.0, side=SHORT)  # never loosens
    assert triggers_now(89.0, 90.0, SHORT) and not triggers_now(95.0, 90.0, SHORT)
    assert triggers_now(91.0, 90.0, LONG) and not triggers_now(85.0, 90.0, LONG)


def test_mark_value_of_a_short_is_collateral_plus_open_pnl() -> None:
    assert mark_value(SHORT, 2.0, 100.0, 90.0) == pytest.approx(220.0)
    assert mark_value(LONG, 2.0, 100.0, 90.0) == pytest.approx(180.0)
    f = 0.001
    cost = 2.0 * 100.0 * (1 + f)
    pnl = (mark_value(SHORT, 2.0, 100.0, 90.0, f) - cost) / cost
    assert pnl == pytest.approx(net_pnl_pct(100.0, 90.0, f, side=SHORT))


# ------------------------------------------------------------ the paper broker


def _order(side: Side, qty: float, price: float, seq: int, pos_side=SHORT) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id("short-1", seq),
        position_id="short-1",
        seq=seq,
        symbol=BTC,
        side=side,
        qty=qty,
        ref_price=price,
        market_time_ms=1_700_000_000_000 + seq,
        position_side=pos_side,
    )


def test_paper_short_round_trip_books_entry_minus_exit_less_fees(tmp_path: Path) -> None:
    with PaperBroker(tmp_path / "p.db", 10_000.0, slippage_bps=0.0, allow_shorts=True) as b:
        entry = b.place_order(_order(Side.SELL, 10.0, 100.0, 1))
        assert entry.status is OrderStatus.FILLED
        assert b.balances().cash == pytest.approx(10_000.0 - 1_000.0 - 1.0)
        assert b.balances().holdings == {BTC: -10.0}
        again = b.place_order(_order(Side.SELL, 10.0, 100.0, 1))  # a retry: the same fill
        assert again == entry and b.balances().holdings == {BTC: -10.0}
        cover = b.place_order(_order(Side.BUY, 10.0, 90.0, 2))
        assert cover.status is OrderStatus.FILLED
        pnl = (100.0 - 90.0) * 10.0 - 1.0 - 0.9
        assert b.balances().cash == pytest.approx(10_000.0 + pnl)
        assert b.balances().holdings == {}


def test_paper_short_cover_is_reduce_only_and_spot_refuses_shorts(tmp_path: Path) -> None:
    with PaperBroker(tmp_path / "f.db", 10_000.0, allow_shorts=True) as b:
        b.place_order(_order(Side.SELL, 1.0, 100.0, 1))
        too_much = b.place_order(_order(Side.BUY, 2.0, 100.0, 2))
        assert too_much.status is OrderStatus.REJECTED and "reduce-only" in too_much.reason
        long_too = b.place_order(_order(Side.BUY, 1.0, 100.0, 3, pos_side=LONG))
        assert long_too.status is OrderStatus.REJECTED and "held short" in long_too.reason
        assert b.balances().holdings == {BTC: -1.0}
    with PaperBroker(tmp_path / "s.db", 10_000.0) as spot:
        refused = spot.place_order(_order(Side.SELL, 1.0, 100.0, 1))
        assert refused.status is OrderStatus.REJECTED and "spot is long-only" in refused.reason
        assert spot.balances().cash == 10_000.0


def test_paper_short_needs_the_margin(tmp_path: Path) -> None:
    with PaperBroker(tmp_path / "m.db", 100.0, allow_shorts=True) as b:
        fill = b.place_order(_order(Side.SELL, 2.0, 100.0, 1))
        assert fill.status is OrderStatus.REJECTED and "insufficient margin" in fill.reason
        assert not math.isnan(b.balances().cash) and b.balances().cash == 100.0


def test_the_llm_snapshot_shows_a_short_as_short_with_its_own_pnl() -> None:
    from trading.snapshot import PositionMark, SnapshotContext, build_snapshot, render_prompt
    from trading.state import AccountView, DecideRequest, OpenPosition

    pos = OpenPosition(
        position_id="a-1-BTC-1",
        workflow_id="ocw-position-a-1-BTC-1",
        symbol=BTC,
        qty=1.0,
        avg_entry=100.0,
        entry_time_ms=1_700_000_000_000,
        cost=100.1,
        last_price=90.0,
        side=SHORT,
    )
    f = _trend(90.0, rsi=40.0, mom=-0.03)
    req = DecideRequest(
        account="a",
        decision_id="a-1-1",
        market=_view(f),
        account_view=AccountView(
            portfolio_value=10_000.0,
            cash=9_000.0,
            exposure=0.01,
            drawdown=0.0,
            halted=False,
            positions=[pos],
            recent_trades=[],
        ),
        wake_reasons=["test"],
        shorts=True,
    )
    ctx = SnapshotContext(position_marks={BTC: PositionMark(peak_price=103.0, trough_price=88.0)})
    snap = build_snapshot(req, ctx)
    (p,) = snap.account.positions
    assert p.side is SHORT and p.pnl_usd == pytest.approx(10.0 - 0.09 - 0.1)
    assert p.peak == 88.0 and p.mae_pct == pytest.approx(-0.03)
    assert f"- {BTC} SHORT entry 100" in render_prompt(snap)


def test_paper_funding_is_booked_once_per_id_with_its_first_amount(tmp_path: Path) -> None:
    from trading.models import IncomeEntry

    def entry(iid: str, amount: float) -> IncomeEntry:
        return IncomeEntry(
            income_id=iid, symbol=BTC, kind="FUNDING_FEE", amount=amount, asset="USDT", time_ms=8
        )

    with PaperBroker(tmp_path / "f.db", 1_000.0, allow_shorts=True) as b:
        held = b.apply_funding([entry("p-1-funding-8", 0.5), entry("p-2-funding-8", -0.2)])
        assert [e.amount for e in held] == [0.5, -0.2] and len(b.last_booked) == 2
        assert b.balances().cash == pytest.approx(1_000.3)
        again = b.apply_funding([entry("p-1-funding-8", 9.0)])  # a retry, recomputed
        assert [e.amount for e in again] == [0.5] and b.last_booked == []
        assert b.balances().cash == pytest.approx(1_000.3)
        assert [e.income_id for e in b.income()] == ["p-1-funding-8", "p-2-funding-8"]
        with pytest.raises(ValueError, match="amount"):
            b.apply_funding([entry("p-3-funding-8", math.nan)])
        assert b.balances().cash == pytest.approx(1_000.3)


def test_a_shorts_size_follows_the_learner_weights_from_shorts() -> None:
    from trading.learner import STARTING_WEIGHTS

    f = _trend(100.0, rsi=45.0, mom=-0.03)  # a mild short signal: confidence below 1
    (base,) = decide(_view(f), set(), shorts=True).decisions
    trusted = {**STARTING_WEIGHTS, "trend": STARTING_WEIGHTS["trend"] * 3}
    doubted = {**STARTING_WEIGHTS, "trend": STARTING_WEIGHTS["trend"] / 3}
    (up,) = decide(_view(f), set(), shorts=True, short_group_weights=trusted).decisions
    (down,) = decide(_view(f), set(), shorts=True, short_group_weights=doubted).decisions
    assert base.action is up.action is down.action is Action.SHORT
    assert down.position_pct < base.position_pct < up.position_pct
    assert "learned short group weights" in up.reasoning
    # the long weights never size a short
    (same,) = decide(_view(f), set(), shorts=True, group_weights=trusted).decisions
    assert same.position_pct == base.position_pct


def test_the_prompt_says_what_a_weights_sign_means_by_account() -> None:
    spot = system_prompt(AgentLimits(universe=[BTC]))
    futures = system_prompt(AgentLimits(universe=[BTC], shorts=True))
    assert "sign = for (+) or against (-) the action" in spot
    assert "a SHORT's drivers are negative" in futures
