"""Agent vs agent (issue 15): arena specs, the family decider's policy and weights, the bars
board, and the per-agent settings that keep costs and limits the same for every agent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from activities.bars_board import BarsBoard, BarsBoardWriter, BarsReader, stale_reason
from activities.family_decider import FamilyDecider
from activities.journal import Journal
from activities.llm_agent import INSTRUCTIONS_HEADER, with_instructions
from activities.paper_broker import PaperBroker
from activities.trading import TradingActivities
from trading.config import Settings
from trading.models import Action, Bar, MarketView, SymbolFeatures
from trading.policies.base import DAY_MS, BarSeries
from trading.policies.live import family_decision, parse_policy, series_from_rows
from trading.state import AccountView, DecideRequest, OpenPosition
from workers.arena import (
    agent_settings,
    build_arena,
    check_exchange_accounts,
    listener_settings,
    load_arena_file,
    parse_agent,
    read_arena,
    split_agents,
    write_arena,
)
from workers.temporal_env import SetupError
from workers.wiring import engine_config

T0 = 1_700_000_000_000 - (1_700_000_000_000 % DAY_MS)


# ------------------------------------------------------------ specs


def test_agent_specs_and_their_account_names() -> None:
    arena = build_arena(
        split_agents(
            [
                "rule,claude:claude-sonnet-4-6",
                "family:trend_tsmom",
                "claude:claude-haiku-4-5:name=fast",
            ]
        )
    )
    got = [(arena.account(a), a.kind, a.label()) for a in arena.agents]
    assert got == [
        ("arena-rule", "rule", "rule"),
        ("arena-claude-sonnet", "claude", "claude claude-sonnet-4-6"),
        ("arena-trend-tsmom", "family", "family:trend_tsmom"),
        ("arena-fast", "claude", "claude claude-haiku-4-5"),
    ]
    assert [a.name for a in build_arena(["rule", "rule"]).agents] == ["rule", "rule-2"]


def test_a_claude_agent_reads_its_prompt_file(tmp_path: Path) -> None:
    (tmp_path / "cautious.md").write_text("Trade BTC only. Never more than 10 %.\n")
    agent = parse_agent("claude:claude-opus-4-6:cautious.md", base_dir=tmp_path)
    assert agent.name == "claude-opus-cautious"
    assert agent.prompt_text == "Trade BTC only. Never more than 10 %."
    assert agent.label() == "claude claude-opus-4-6 + cautious.md"
    with pytest.raises(SetupError, match="prompt file not found"):
        parse_agent("claude:claude-opus-4-6:missing.md", base_dir=tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt", "unknown kind"),
        ("rule:fast", "rule takes no arguments"),
        ("family:nope", "unknown policy family"),
        ("family:tsmom:window=3", "has no parameter 'window'"),
        ("family:tsmom:lookback_days=abc", "not a number"),
        ("family:tsmom:lookback_days=-3", "positive"),
        ("family:carry:prints=0", "prints must be an integer >= 1"),
        ("family:breakout:entry_days=5:exit_days=9", "shorter than entry_days"),
        ("rule:name=has space", "pattern"),
    ],
)
def test_bad_agent_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SetupError, match=message):
        parse_agent(spec)


def test_an_arena_file_in_toml(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_text("be patient")
    path = tmp_path / "arena.toml"
    path.write_text(
        """
name = "duel"
[settings]
symbols = ["BTC/USDT", "ETH/USDT"]
initial_cash = 5000
fee_rate = 0.0008

[[agents]]
kind = "claude"
model = "claude-sonnet-4-6"
prompt_file = "p.md"
name = "patient"

[[agents]]
kind = "family"
family = "tsmom"
params = { lookback_days = 30, long_only = true }

[[agents]]
spec = "rule"
"""
    )
    arena = load_arena_file(path)
    assert arena.name == "duel"
    assert arena.accounts() == ["duel-patient", "duel-tsmom", "duel-rule"]
    assert arena.agents[0].prompt_text == "be patient"
    assert arena.agents[1].policy == "family:tsmom:long_only=true:lookback_days=30"
    assert arena.settings["initial_cash"] == 5000


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"llm_model": "x"}, "set per agent"),
        ({"account": "x"}, "set per agent"),
        ({"binance_api_key": "x"}, "secret"),
        ({"no_such": 1}, "unknown setting"),
    ],
)
def test_shared_settings_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(SetupError, match=message):
        build_arena(["rule"], shared=settings)


def test_every_agent_trades_the_same_market_with_its_own_decider(tmp_path: Path) -> None:
    base = Settings(home=tmp_path, symbols=["BTC/USDT"], llm_enabled=False)
    arena = build_arena(
        ["rule", "claude:claude-haiku-4-5", "family:tsmom:lookback_days=20"],
        shared={
            "initial_cash": 2500.0,
            "max_position_pct": 0.25,
            "symbols": ["BTC/USDT", "ETH/USDT"],
        },
    )
    every = [agent_settings(base, arena, a) for a in arena.agents]
    configs = [engine_config(s) for s in every]
    for s, cfg in zip(every, configs, strict=True):
        assert cfg.symbols == ["BTC/USDT", "ETH/USDT"]
        assert cfg.initial_cash == 2500.0 and cfg.max_position_pct == 0.25
        assert cfg.position.fee_rate == base.fee_rate
        assert cfg.market_task_queue == base.market_task_queue  # one listener
        assert cfg.trading_task_queue == f"ocw-trading-{cfg.account}"  # its own worker
        assert s.paths()["broker_db"] == tmp_path / "arena" / f"{cfg.account}.db"
    rule, claude, family = configs
    assert (rule.policy, rule.llm.enabled) == ("rule", False)
    assert (claude.policy, claude.llm.enabled, claude.agent) == (
        "rule",
        True,
        "claude claude-haiku-4-5",
    )
    assert every[1].llm_model == "claude-haiku-4-5"
    assert (family.policy, family.llm.enabled) == ("family:tsmom:lookback_days=20", False)
    listen = listener_settings(base, arena)
    assert listen["account"] == "arena-rule"
    assert listen["wake_accounts"] == ["arena-claude-haiku", "arena-tsmom"]


KEYS_ENV = {
    "ARENA_RULE_API_KEY": "key-rule",
    "ARENA_RULE_SECRET_KEY": "secret-rule",
    "ARENA_RULE_SPOT_URL": "http://127.0.0.1:9001",
    "ARENA_TS_API_KEY": "key-ts",
    "ARENA_TS_SECRET_KEY": "secret-ts",
}


def test_each_agent_trades_its_own_exchange_account_on_testnet(tmp_path: Path) -> None:
    """Agents on an exchange each need their own account: one key pair per agent, read from
    the variables its keys= prefix names, never written into the arena file."""
    base = Settings(home=tmp_path, symbols=["BTC/USDT"], llm_enabled=False, mode="testnet")
    arena = build_arena(["rule:keys=ARENA_RULE", "family:tsmom:keys=ARENA_TS:name=ts"])
    assert [a.keys for a in arena.agents] == ["ARENA_RULE", "ARENA_TS"]
    check_exchange_accounts(base, arena, KEYS_ENV)
    rule, ts = (agent_settings(base, arena, a, KEYS_ENV) for a in arena.agents)
    assert rule.binance_api_key.get_secret_value() == "key-rule"
    assert rule.binance_api_secret.get_secret_value() == "secret-rule"
    assert rule.binance_spot_url == "http://127.0.0.1:9001"
    assert ts.binance_api_key.get_secret_value() == "key-ts" and ts.binance_spot_url is None
    assert agent_settings(base, arena, arena.agents[0]).binance_api_key is None  # no environ
    write_arena(base, arena)
    written = (tmp_path / "arena.json").read_text()
    assert "ARENA_RULE" in written
    assert not any(v in written for v in ("key-rule", "secret-rule", "key-ts", "secret-ts"))
    assert read_arena(base) == arena


@pytest.mark.parametrize(
    ("agents", "env", "message"),
    [
        (["rule:keys=ARENA_RULE", "family:tsmom"], KEYS_ENV, "agents tsmom have no exchange"),
        (["rule", "family:tsmom"], KEYS_ENV, "agents rule, tsmom have no exchange account"),
        (
            ["rule:keys=ARENA_RULE", "family:tsmom:keys=ARENA_TS"],
            {**KEYS_ENV, "ARENA_TS_API_KEY": "key-rule"},
            "agents rule and tsmom have the same API key",
        ),
        (
            ["rule:keys=ARENA_RULE", "family:tsmom:keys=ARENA_NONE"],
            KEYS_ENV,
            "set ARENA_NONE_API_KEY and ARENA_NONE_SECRET_KEY in the environment",
        ),
    ],
)
def test_agents_that_would_share_an_exchange_account_are_refused(
    tmp_path: Path, agents: list[str], env: dict[str, str], message: str
) -> None:
    base = Settings(home=tmp_path, mode="testnet")
    with pytest.raises(SetupError, match=message) as info:
        check_exchange_accounts(base, build_arena(agents), env)
    text = str(info.value)  # names variables, never their values
    assert not any(v in text for v in ("key-rule", "secret-rule", "key-ts", "secret-ts"))


def test_paper_arenas_and_a_lone_agent_need_no_keys(tmp_path: Path) -> None:
    check_exchange_accounts(Settings(home=tmp_path), build_arena(["rule", "family:tsmom"]), {})
    check_exchange_accounts(Settings(home=tmp_path, mode="testnet"), build_arena(["rule"]), {})
    with pytest.raises(SetupError, match="keys='arena_rule' must be an environment variable"):
        parse_agent("rule:keys=arena_rule")


def test_the_arena_file_round_trips(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert read_arena(settings) is None
    arena = build_arena(["rule", "family:trend_filter"], name="x")
    write_arena(settings, arena)
    again = read_arena(settings)
    assert again is not None and again.same_agents(arena) and again.running
    assert not again.same_agents(build_arena(["rule"], name="x"))


def test_the_prompt_extra_is_one_constant_suffix() -> None:
    assert with_instructions("SYSTEM", "") == "SYSTEM"
    text = with_instructions("SYSTEM", "  be brief \n")
    assert text == "SYSTEM" + INSTRUCTIONS_HEADER + "be brief"
    assert text == with_instructions("SYSTEM", "be brief")  # the same prefix every call


# ------------------------------------------------------------ the family's decision


def rising(n: int, start: float = 100.0, step: float = 0.01) -> BarSeries:
    closes = start * np.cumprod(np.full(n, 1 + step))
    return BarSeries.from_closes(closes, DAY_MS, start_ms=T0)


def test_policy_text_round_trips_and_says_its_history() -> None:
    spec = parse_policy("family:trend_tsmom:sma_days=50")
    assert spec.text() == "family:trend_tsmom:sma_days=50"
    assert parse_policy(spec.text()) == spec
    assert spec.history_days() == 91  # lookback 90 days is now the longest
    assert parse_policy("family:trend_tsmom").history_days() == 201
    assert parse_policy("rule").is_rule and parse_policy("").is_rule


def test_weight_to_action_long_only() -> None:
    spec = parse_policy("family:tsmom:lookback_days=10:vol_days=5")
    up, down = rising(40), rising(40, step=-0.01)
    decision = family_decision(
        spec,
        ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"],
        {"BTC/USDT": up, "ETH/USDT": down, "SOL/USDT": down, "XRP/USDT": rising(5)},
        held={"SOL/USDT", "XRP/USDT"},
        position_pct=0.2,
        max_position_pct=0.3,
    )
    by = {d.ticker: d for d in decision.decisions}
    assert by["BTC/USDT"].action == Action.BUY and 0 < by["BTC/USDT"].position_pct <= 0.2
    assert by["BTC/USDT"].signal_weights == {"trend": 1.0}
    assert by["ETH/USDT"].action == Action.HOLD  # a short weight is flat on spot
    assert by["SOL/USDT"].action == Action.SELL
    assert by["XRP/USDT"].action == Action.HOLD  # too little history never sells
    assert "warming up" in by["XRP/USDT"].reasoning
    assert decision.source == "family:tsmom:lookback_days=10:vol_days=5"


def test_weight_to_action_with_shorts() -> None:
    spec = parse_policy("family:tsmom:lookback_days=10:vol_days=5")
    up, down = rising(40), rising(40, step=-0.01)
    decision = family_decision(
        spec,
        ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
        {"BTC/USDT": down, "ETH/USDT": up, "SOL/USDT": down},
        held={"ETH/USDT", "SOL/USDT"},
        short_held={"ETH/USDT"},
        position_pct=0.2,
        max_position_pct=0.3,
        shorts=True,
    )
    by = {d.ticker: d.action for d in decision.decisions}
    assert by == {"BTC/USDT": Action.SHORT, "ETH/USDT": Action.COVER, "SOL/USDT": Action.SELL}


def test_bars_that_closed_after_the_decision_are_not_seen() -> None:
    rows = [[T0 + (i + 1) * DAY_MS - 1, 2.0, 1.0, 1.5] for i in range(5)]
    series = series_from_rows(rows, as_of_ms=T0 + 3 * DAY_MS - 1)
    assert series is not None and len(series) == 3
    assert series_from_rows(rows, as_of_ms=T0) is None


# ------------------------------------------------------------ the bars board end to end


def daily_bars(symbol: str, n: int, step: float) -> list[Bar]:
    out, price = [], 100.0
    for i in range(n):
        price *= 1 + step
        out.append(
            Bar(
                symbol=symbol,
                interval="1d",
                open_time=T0 + i * DAY_MS,
                close_time=T0 + (i + 1) * DAY_MS - 1,
                open=price,
                high=price * 1.01,
                low=price * 0.99,
                close=price,
                volume=1.0,
            )
        )
    return out


def request(as_of_ms: int, held: list[str]) -> DecideRequest:
    feats = {
        s: SymbolFeatures(symbol=s, interval="4h", time_ms=as_of_ms, price=100.0)
        for s in ("BTC/USDT", "ETH/USDT")
    }
    positions = [
        OpenPosition(
            position_id=f"p-{s}",
            workflow_id=f"w-{s}",
            symbol=s,
            qty=1,
            avg_entry=100,
            entry_time_ms=T0,
            cost=100,
            last_price=100,
        )  # fmt: skip
        for s in held
    ]
    view = AccountView(
        portfolio_value=10_000, cash=9_000, exposure=0.1, drawdown=0, halted=False,
        positions=positions, recent_trades=[],
    )  # fmt: skip
    return DecideRequest(
        account="a",
        decision_id="a-1",
        market=MarketView(as_of_ms=as_of_ms, symbols=feats),
        account_view=view,
        wake_reasons=["candle_close:BTC/USDT:4h"],
    )


def test_the_family_decides_on_the_listeners_daily_bars(tmp_path: Path) -> None:
    board = BarsBoard(tmp_path / "prices.db")
    store = {
        "BTC/USDT": daily_bars("BTC/USDT", 40, 0.01),
        "ETH/USDT": daily_bars("ETH/USDT", 40, -0.01),
    }
    writer = BarsBoardWriter(board, "ocw-market", lambda: store, 1.0, "host")

    async def run() -> tuple:
        assert await writer.write_if_changed()
        assert not await writer.write_if_changed()  # nothing new: not rewritten
        decider = FamilyDecider(BarsReader(BarsBoard(tmp_path / "prices.db"), "ocw-market"))
        spec = parse_policy("family:tsmom:lookback_days=10:vol_days=5")
        as_of = store["BTC/USDT"][-1].close_time + 4 * 3_600_000
        first = await decider.decide(request(as_of, held=["ETH/USDT"]), spec)
        later = await decider.decide(request(as_of + 5 * DAY_MS, held=[]), spec)
        decider.close()
        return first, later

    first, later = asyncio.run(run())
    by = {d.ticker: d.action for d in first.decisions}
    assert by == {"BTC/USDT": Action.BUY, "ETH/USDT": Action.SELL}
    assert all(d.action == Action.HOLD for d in later.decisions)  # the board is days behind
    assert "stale" in later.decisions[0].reasoning
    sheet = BarsBoard(tmp_path / "prices.db").read("ocw-market")
    assert sheet is not None and len(sheet.bars["BTC/USDT"]) == 40
    assert stale_reason(None, "BTC/USDT", 0) is not None
    assert json.loads(json.dumps(sheet.bars["ETH/USDT"][0]))[0] == T0 + DAY_MS - 1


def test_a_carry_decides_on_the_funding_prints_of_the_board(tmp_path: Path) -> None:
    """Carry averages the last K settled prints the listener put on the board (those at or
    before the decision); with fewer than K it holds and says how many it has; rows that are
    not plausible prints never reach it."""
    board = BarsBoard(tmp_path / "prices.db")
    store = {s: daily_bars(s, 30, 0.0) for s in ("BTC/USDT", "ETH/USDT")}
    as_of = store["BTC/USDT"][-1].close_time + 4 * 3_600_000
    eight = 8 * 3_600_000
    prints = {  # BTC: shorts pay longs (long carry); ETH: only two prints so far
        "BTC/USDT": [(as_of - eight * k, -0.0001) for k in (5, 4, 3, 2, 1, 0)],
        "ETH/USDT": [(as_of - eight * k, -0.0001) for k in (1, 0)],
    }
    later = {"BTC/USDT": [(as_of + eight, 0.01)]}  # after the decision: never seen
    writer = BarsBoardWriter(
        board,
        "ocw-market",
        lambda: store,
        1.0,
        "host",
        funding=lambda: {s: [*p, *later.get(s, [])] for s, p in prints.items()},
    )

    async def run():
        assert await writer.write_if_changed() and await writer.write_funding_if_changed()
        assert not await writer.write_funding_if_changed()  # no new print: not rewritten
        decider = FamilyDecider(BarsReader(BarsBoard(tmp_path / "prices.db"), "ocw-market"))
        out = await decider.decide(request(as_of, held=[]), parse_policy("family:carry:prints=3"))
        decider.close()
        return out

    decided = {d.ticker: d for d in asyncio.run(run()).decisions}
    assert decided["BTC/USDT"].action == Action.BUY
    assert decided["ETH/USDT"].action == Action.HOLD
    assert "2 of 3 funding prints on the board" in decided["ETH/USDT"].reasoning
    sheet = BarsBoard(tmp_path / "prices.db").read("ocw-market")
    assert sheet is not None and len(sheet.funding["BTC/USDT"]) == 7
    # a hand-broken row on the board is dropped, not trusted
    board.write_funding(
        "ocw-market", {"BTC/USDT": [[1.0, 0.9], [2.0, float("nan")], [3.0, 1e-4]]}, "h", 0.0
    )
    assert BarsBoard(tmp_path / "prices.db").read("ocw-market").funding["BTC/USDT"] == [[3.0, 1e-4]]


def test_series_from_rows_prefers_the_board_prints_to_the_current_rate() -> None:
    rows = [[T0 + (i + 1) * DAY_MS - 1, 2.0, 1.0, 1.5] for i in range(3)]
    as_of = T0 + 3 * DAY_MS - 1
    with_prints = series_from_rows(rows, as_of, 0.0005, [[T0, 1e-4], [as_of + 1, 9e-4]])
    assert with_prints is not None and list(with_prints.funding[1]) == [1e-4]
    current = series_from_rows(rows, as_of, 0.0005)
    assert current is not None and list(current.funding[1]) == [0.0005]


def test_the_cash_policy_opens_nothing_and_says_why(tmp_path: Path) -> None:
    """OCW_POLICY=cash (the default since no policy passed the walk-forward's corrections):
    every symbol HOLDs, held or not, with the reason; nothing reads the bars board."""
    spec = parse_policy("cash")
    assert spec.cash and not spec.is_rule and spec.text() == "cash"
    assert parse_policy(spec.text()) == spec and spec.history_days() == 0
    with pytest.raises(ValueError, match="'rule', 'cash' or 'family"):
        parse_policy("cash:now")
    acts = TradingActivities(
        PaperBroker(tmp_path / "paper.db", 10_000), Journal(tmp_path / "j.db"), policy="cash"
    )  # no family decider: cash must not need one
    decision = asyncio.run(acts._family_decide(request(T0, held=["ETH/USDT"])))
    assert decision is not None and decision.source == "rule"
    assert {d.ticker: d.action for d in decision.decisions} == {
        "BTC/USDT": Action.HOLD,
        "ETH/USDT": Action.HOLD,
    }
    assert all("OCW_POLICY=cash" in d.reasoning for d in decision.decisions)
    assert "walk-forward" in decision.market_assessment
    # the request's policy wins over the worker's: an arena's rule agent still trades by rules
    rule_req = request(T0, held=[]).model_copy(update={"policy": "rule"})
    assert asyncio.run(acts._family_decide(rule_req)) is None
