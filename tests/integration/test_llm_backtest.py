"""``ocw backtest --llm``: Claude decides in the in-process backtester, against a local server.

The backtest runs in a worker thread (it drives its own event loop per bar); the fake Messages
API server runs on the test's loop. Bars are generated (two symbols, 4h), the window is ten
days, so each run asks about 60 decision bars.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.llm_plans import exit_plan, price_in_prompt
from tests.servers.fake_anthropic import (
    DEFAULT_USAGE,
    FakeAnthropic,
    ScriptedReply,
    error_reply,
    text_reply,
    tool_reply,
)
from trading.agent_contract import DECISION_TOOL
from trading.backtest.engine import Backtester
from trading.backtest.params import BacktestParams
from trading.llm_pricing import TokenUsage, cost_usd, price_for
from trading.market_data import generate_market, write_ohlcv_csv
from workers.backtest_cli import load_backtest_data
from workers.cli import build_parser
from workers.llm_backtest import LLMBacktestError, open_llm_decisions
from workers.temporal_env import SetupError

SYMBOLS = "BTC/USDT,ETH/USDT"
START, END = "2025-03-01", "2025-03-11"  # 60 bars of 4h; the last one decides nothing
DECISION_BARS = 59
KEY = "fake-test-key-llm-backtest"
# stops, trail and scorer out of the way: every exit in these tests is the LLM's (or the end)
PARAMS = {
    "agent_every_bars": 0,
    "stop_loss_pct": 0.5,
    "max_drawdown_guard_pct": 0.9,
    "trail_activate_pct": 5.0,
}
PRICE = price_for("claude-sonnet-4-6")
CALL_COST = cost_usd(TokenUsage(**DEFAULT_USAGE), PRICE)  # when a test scripts DEFAULT_USAGE


def billed(server: FakeAnthropic) -> float:
    """What the server's answers cost: the usage it reported (it follows each request)."""
    return sum(cost_usd(TokenUsage(**r.usage), PRICE) for r in server.requests if r.usage)


def decisions(*items: dict[str, Any], memory: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "decisions": list(items),
        "market_assessment": "test",
        "next_check_seconds": 3600,
    }
    if memory is not None:
        payload["memory_update"] = memory
    return payload


def buy(ticker: str, pct: float = 0.25) -> dict[str, Any]:
    return {
        "ticker": ticker,
        "action": "BUY",
        "position_pct": pct,
        "confidence": 0.8,
        "reasoning": "test buy",
        "signal_weights": {"trend": 0.6},
    }


def sell(ticker: str) -> dict[str, Any]:
    return {"ticker": ticker, "action": "SELL", "position_pct": 0, "confidence": 0.7}


def prompt_of(body: dict[str, Any]) -> str:
    return body["messages"][0]["content"]


def buy_then_sell(body: dict[str, Any]) -> ScriptedReply:
    """BUY BTC while flat; SELL it once the snapshot shows it held for 20 h or more."""
    prompt = prompt_of(body)
    if "open positions: none" in prompt and "closed trades: none yet" in prompt:
        entry = buy("BTC/USDT") | {"exit_plan": exit_plan(price_in_prompt(body, "BTC/USDT"))}
        return tool_reply(DECISION_TOOL, decisions(entry, memory="bought BTC"))
    for line in prompt.splitlines():
        if line.startswith("- BTC/USDT entry") and float(line.rsplit("held ", 1)[1][:-1]) >= 20:
            return tool_reply(DECISION_TOOL, decisions(sell("BTC/USDT"), memory="sold BTC"))
    return tool_reply(DECISION_TOOL, decisions())


@pytest.fixture(scope="module")
def bars_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("llm-bt-data")
    market = generate_market(["BTC/USDT", "ETH/USDT"], "4h", 420, seed=11)
    for symbol, bars in market.items():
        write_ohlcv_csv(bars, folder / f"binance_{symbol.replace('/', '')}_4h.csv")
    return folder


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llm-bt-params") / "params.json"
    path.write_text(json.dumps(PARAMS))
    return path


@pytest_asyncio.fixture
async def server(monkeypatch, tmp_path) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(responder=buy_then_sell) as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url)
        monkeypatch.setenv("OCW_HOME", str(tmp_path / "home"))
        for name in ("OCW_LLM_TRAINING_CUTOFFS", "OCW_LLM_CACHE_MODE", "OCW_LLM_RUN_ID"):
            monkeypatch.delenv(name, raising=False)
        yield srv


def backtest_args(bars_dir: Path, params_file: Path, *extra: str) -> list[str]:
    return ["backtest", "--data", str(bars_dir), "--symbols", SYMBOLS, "--start", START,
            "--end", END, "--cash", "10000", "--config", str(params_file), "--quiet",
            *extra]  # fmt: skip


async def ocw_backtest(argv: list[str]) -> int:
    """``ocw backtest`` in process, off the event loop that serves the fake API."""
    args = build_parser().parse_args(argv)
    return await asyncio.to_thread(args.func, args)


def read_trades(out: Path) -> list[dict[str, str]]:
    with (out / "trades.csv").open() as handle:
        return list(csv.DictReader(handle))


def read_metrics(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())


async def test_record_calls_once_per_bar_and_replay_repeats_without_calls(
    server, bars_dir, params_file, tmp_path, capsys
) -> None:
    cache = str(tmp_path / "cache.db")
    base = backtest_args(bars_dir, params_file, "--llm", "--llm-cache", cache)
    code = await ocw_backtest([*base, "--llm-cache-mode", "record", "--out", str(tmp_path / "a")])
    assert code == 0
    printed = capsys.readouterr()
    assert len(server.requests) == DECISION_BARS  # one call per decision bar, no more
    assert all(r.headers["x-api-key"] == KEY for r in server.requests)
    first, second = prompt_of(server.requests[0].body), prompt_of(server.requests[1].body)
    assert "candle_close:BTC/USDT:4h; candle_close:ETH/USDT:4h" in first
    assert '"bought BTC"' in second  # the agent's memory travels to the next bar
    assert "- BTC/USDT entry" in second  # the account shows the position it bought

    trades = read_trades(tmp_path / "a")
    llm_trades = [t for t in trades if t["exit_reason"] == "decision_sell"]
    assert llm_trades and all(t["symbol"] == "BTC/USDT" for t in trades)
    assert trades[0]["entry_time"] == "2025-03-01T04:00:00Z"  # next open after bar one
    assert json.loads(trades[0]["signal_weights"]) == {"trend": 0.6}
    metrics = read_metrics(tmp_path / "a")
    llm = metrics["llm"]
    assert llm["decision_bars"] == llm["llm_decided"] == llm["api_requests"] == DECISION_BARS
    assert llm["cache_hits"] == 0 and llm["fallbacks"] == {}
    assert llm["cost_usd"] == pytest.approx(billed(server))
    assert len({r.usage["input_tokens"] for r in server.requests}) > 1  # usage follows prompts
    row = [line for line in printed.out.splitlines() if "LLM API requests / cache hits" in line]
    assert row and row[0].split()[-3:] == ["59", "/", "0"]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["llm"]["cache_mode"] == "record" and config["llm"]["run_id"].startswith("bt-")
    assert KEY not in json.dumps(config) + json.dumps(metrics) + printed.out + printed.err

    # the same run from the cache: no request, the same trades and metrics
    code = await ocw_backtest([*base, "--llm-cache-mode", "replay", "--out", str(tmp_path / "b")])
    assert code == 0
    assert len(server.requests) == DECISION_BARS
    assert (tmp_path / "b" / "trades.csv").read_text() == (
        tmp_path / "a" / "trades.csv"
    ).read_text()
    assert (tmp_path / "b" / "equity.csv").read_text() == (
        tmp_path / "a" / "equity.csv"
    ).read_text()
    replayed = read_metrics(tmp_path / "b")
    again = replayed.pop("llm")
    metrics.pop("llm")
    assert replayed == metrics
    assert again["cache_hits"] == again["llm_decided"] == DECISION_BARS
    assert again["api_requests"] == 0 and again["cost_usd"] == 0
    assert again["replayed_cost_usd"] == pytest.approx(llm["cost_usd"])


async def test_replay_miss_stops_the_run_or_falls_back_when_asked(
    server, bars_dir, params_file, tmp_path
) -> None:
    cache = str(tmp_path / "empty.db")
    base = backtest_args(bars_dir, params_file, "--llm", "--llm-cache", cache)
    with pytest.raises(LLMBacktestError) as info:
        await ocw_backtest([*base, "--llm-cache-mode", "replay"])
    assert "LLMReplayMiss" in str(info.value) and "2025-03-01 04:00Z" in str(info.value)
    assert isinstance(info.value, SetupError)  # the CLI prints it as one line, exit code 2

    code = await ocw_backtest(
        [
            *base,
            "--llm-cache-mode",
            "replay",
            "--llm-replay-miss",
            "rules",
            "--out",
            str(tmp_path / "r"),
        ]  # fmt: skip
    )
    assert code == 0
    assert server.requests == []
    assert read_metrics(tmp_path / "r")["llm"]["fallbacks"] == {"LLMReplayMiss": DECISION_BARS}
    code = await ocw_backtest([*backtest_args(bars_dir, params_file), "--out", str(tmp_path / "p")])
    assert code == 0
    # every bar fell back: exactly the rule policy's backtest
    assert read_trades(tmp_path / "r") == read_trades(tmp_path / "p")


async def test_run_budget_stops_calls_and_the_rules_decide(
    server, bars_dir, params_file, tmp_path
) -> None:
    budget = 2.5 * CALL_COST  # checked before each call: the third call overshoots it
    # always hold, at a fixed scripted usage so that every call costs CALL_COST
    server.responder = lambda body: tool_reply(DECISION_TOOL, decisions(), DEFAULT_USAGE)
    code = await ocw_backtest(
        backtest_args(
            bars_dir,
            params_file,
            "--llm",
            "--llm-cache-mode",
            "record",
            "--llm-run-budget",
            str(budget),
            "--out",
            str(tmp_path / "a"),
        )  # fmt: skip
    )
    assert code == 0
    calls = math.ceil(budget / CALL_COST)
    assert len(server.requests) == calls == 3
    llm = read_metrics(tmp_path / "a")["llm"]
    assert llm["llm_decided"] == calls
    assert llm["fallbacks"] == {"LLMBudgetExceeded": DECISION_BARS - calls}
    assert llm["cost_usd"] == pytest.approx(calls * CALL_COST)
    assert read_trades(tmp_path / "a")  # the rule policy traded once the LLM stopped
    # a run with fallbacks replays exactly when misses fall back too: they are the same bars
    code = await ocw_backtest(
        backtest_args(
            bars_dir,
            params_file,
            "--llm",
            "--llm-cache-mode",
            "replay",
            "--llm-replay-miss",
            "rules",
            "--out",
            str(tmp_path / "b"),
        )  # fmt: skip
    )
    assert code == 0
    assert len(server.requests) == calls
    assert read_trades(tmp_path / "b") == read_trades(tmp_path / "a")
    again = read_metrics(tmp_path / "b")["llm"]
    assert again["cache_hits"] == calls
    assert again["fallbacks"] == {"LLMReplayMiss": DECISION_BARS - calls}


async def test_training_cutoff_warning_and_flag(
    server, bars_dir, params_file, tmp_path, capsys, monkeypatch
) -> None:
    server.responder = lambda body: tool_reply(DECISION_TOOL, decisions())
    base = backtest_args(bars_dir, params_file, "--llm", "--llm-cache-mode", "record_replay")
    assert await ocw_backtest([*base, "--out", str(tmp_path / "early")]) == 0
    err = capsys.readouterr().err
    assert "before claude-sonnet-4-6's training cutoff (2026-01-01)" in err
    llm = read_metrics(tmp_path / "early")["llm"]
    assert llm["before_training_cutoff"] is True and llm["training_cutoff"] == "2026-01-01"
    assert llm["bars_before_cutoff"] == DECISION_BARS

    monkeypatch.setenv("OCW_LLM_TRAINING_CUTOFFS", '{"claude-sonnet-4-6": "2024-06-01"}')
    assert await ocw_backtest([*base, "--out", str(tmp_path / "late")]) == 0
    assert "training cutoff" not in capsys.readouterr().err
    llm = read_metrics(tmp_path / "late")["llm"]
    assert llm["before_training_cutoff"] is False and llm["bars_before_cutoff"] == 0
    # record_replay: the second run found every answer of the first in OCW_HOME/llm.db
    assert llm["cache_hits"] == DECISION_BARS and len(server.requests) == DECISION_BARS


def run_with(
    bars_dir: Path, store: Path, responder: Callable[[dict[str, Any]], ScriptedReply], srv
) -> Any:
    """A direct run through the Python API (no CLI), retries without waiting."""
    from activities.llm_agent import LLMConfig
    from trading.agent_contract import AgentLimits

    srv.responder = responder
    loaded = load_backtest_data(bars_dir, ["BTC/USDT", "ETH/USDT"], "4h", *window())
    params = BacktestParams(**PARAMS)
    base = LLMConfig(limits=AgentLimits(universe=["BTC/USDT", "ETH/USDT"]))
    with open_llm_decisions(
        base,
        loaded.data,
        params,
        ["BTC/USDT", "ETH/USDT"],
        store,
        cache_mode="record",
        run_id="direct",
        run_budget_usd=None,
        retry_initial_s=0.0,
    ) as source:
        backtester = Backtester(loaded.data, params, source)
        source.attach(backtester)
        result = backtester.run(*window())
        return result, source.report


def window() -> tuple[int, int]:
    from trading.market_data import parse_timestamp_ms

    return parse_timestamp_ms(START), parse_timestamp_ms(END)


async def test_invalid_answers_and_api_failures_fall_back_per_bar(
    server, bars_dir, tmp_path
) -> None:
    script = [
        text_reply("I would rather not answer in JSON today."),  # bar 1: invalid answer
        *[error_reply(500, "api_error")] * 3,  # bar 2: three attempts, all fail
        error_reply(529, "overloaded_error"),  # bar 3: fails once, the retry answers
    ]

    def responder(body: dict[str, Any]) -> ScriptedReply:
        if script:
            return script.pop(0)
        return tool_reply(DECISION_TOOL, decisions())

    result, report = await asyncio.to_thread(
        run_with, bars_dir, tmp_path / "llm.db", responder, server
    )
    assert report.fallbacks == {"InvalidAgentAnswer": 1, "LLMServerError": 1}
    assert report.llm_decided == DECISION_BARS - 2
    assert report.api_requests == len(server.requests) == DECISION_BARS + 3
    # the invalid answer cost tokens: counted; the failed HTTP calls cost nothing
    assert report.cost_usd == pytest.approx(billed(server))
    assert sum(1 for r in server.requests if r.usage) == DECISION_BARS - 1
    engine_note = "the previous cycle was decided by the rule policy"
    assert engine_note not in prompt_of(server.requests[0].body)
    assert engine_note in prompt_of(server.requests[1].body)  # bar 2, after bar 1 fell back
    assert engine_note not in prompt_of(server.requests[-1].body)
    assert len(result.equity) == DECISION_BARS + 1


async def test_auth_error_stops_the_run(server, bars_dir, tmp_path) -> None:
    def refuse(body: dict[str, Any]) -> ScriptedReply:
        return error_reply(401, "authentication_error")

    with pytest.raises(LLMBacktestError) as info:
        await asyncio.to_thread(run_with, bars_dir, tmp_path / "llm.db", refuse, server)
    assert "LLMAuthError" in str(info.value) and KEY not in str(info.value)
    assert len(server.requests) == 1


def short_plan(price: float, symbol: str = "BTC/USDT") -> dict[str, Any]:
    """A short's plan, mirrored: stop 10 % above, target 10 % below, invalid 0.2 % up."""
    return {
        "stop_price": round(price * 1.10, 8),
        "target_price": round(price * 0.90, 8),
        "invalidation": {
            "metric": f"{symbol}:price",
            "operator": "gt",
            "threshold": round(price * 1.002, 8),
            "reason": "breakdown failed",
        },
    }


def short_while_flat(body: dict[str, Any]) -> ScriptedReply:
    """SHORT BTC with its plan whenever the account holds nothing; hold otherwise."""
    if "open positions: none" in prompt_of(body):
        price = price_in_prompt(body, "BTC/USDT")
        entry = {
            "ticker": "BTC/USDT",
            "action": "SHORT",
            "position_pct": 0.25,
            "confidence": 0.8,
            "reasoning": "test short",
            "signal_weights": {"trend": -0.6},
            "exit_plan": short_plan(price),
        }
        return tool_reply(DECISION_TOOL, decisions(entry))
    return tool_reply(DECISION_TOOL, decisions())


@pytest.fixture(scope="module")
def perp_dir(bars_dir, tmp_path_factory) -> Path:
    """The same bars with a funding file per symbol (a positive rate: shorts receive it)."""
    folder = tmp_path_factory.mktemp("llm-bt-perp")
    for path in bars_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    start = 1_735_689_600_000  # 2025-01-01
    for symbol in ("BTCUSDT", "ETHUSDT"):
        lines = ["timestamp,funding_rate"]
        lines += [f"{start + i * 8 * 3_600_000},0.0001" for i in range(400)]
        (folder / f"binance_{symbol}_perp_funding_8h.csv").write_text("\n".join(lines) + "\n")
    return folder


def run_long_short(perp_dir: Path, store: Path, srv, plans: bool) -> Any:
    """A long/short perpetual run through the Python API, plans applied or not."""
    from activities.llm_agent import LLMConfig
    from trading.agent_contract import AgentLimits

    srv.responder = short_while_flat
    symbols = ["BTC/USDT", "ETH/USDT"]
    loaded = load_backtest_data(perp_dir, symbols, "4h", *window(), perpetual=True)
    params = BacktestParams(**PARAMS, perpetual=True, allow_shorts=True, rule_exit_plans=plans)
    base = LLMConfig(limits=AgentLimits(universe=symbols))
    with open_llm_decisions(
        base,
        loaded.data,
        params,
        symbols,
        store,
        cache_mode="record",
        run_id=f"ls-{plans}",
        run_budget_usd=None,
        retry_initial_s=0.0,
    ) as source:
        backtester = Backtester(loaded.data, params, source)
        source.attach(backtester)
        return backtester.run(*window()), source.report


async def test_claudes_shorts_and_their_plans_act_in_a_long_short_run(
    server, perp_dir, tmp_path
) -> None:
    """Issue 15: on a long/short perpetual run Claude is offered SHORT / COVER, its SHORT is a
    short in the backtester with its exit plan, the account it is shown next says SHORT, and
    the plan's invalidation closes the short as it would live; without plans it does not."""
    result, report = await asyncio.to_thread(
        run_long_short, perp_dir, tmp_path / "a.db", server, True
    )
    system = json.dumps(server.requests[0].body.get("system"))
    assert "long and short" in system  # the contract offers shorts on this run
    tool = next(t for t in server.requests[0].body["tools"] if t["name"] == DECISION_TOOL)
    assert "SHORT" in json.dumps(tool["input_schema"]) and "COVER" in json.dumps(tool)
    assert report.fallbacks == {} and report.rejected_decisions == 0
    assert report.short_entries >= 2 and report.entries_with_plan == report.short_entries
    assert any("- BTC/USDT SHORT entry" in prompt_of(r.body) for r in server.requests)
    assert result.trades and all(t.side.value == "short" for t in result.trades)
    invalidated = [t for t in result.trades if t.exit_reason == "plan_invalidated"]
    assert invalidated, [t.exit_reason for t in result.trades]
    assert result.plan_events["entries"] == len(result.trades)
    assert result.plan_events["invalidated: price"] == len(invalidated)
    assert result.funding_paid < 0  # a positive rate is received by a short

    server.requests.clear()
    plain, plain_report = await asyncio.to_thread(
        run_long_short, perp_dir, tmp_path / "b.db", server, False
    )
    assert plain_report.short_entries == 1  # one short, held to the end: no plan closes it
    assert [t.exit_reason for t in plain.trades] != [t.exit_reason for t in result.trades]
    assert not any(t.exit_reason == "plan_invalidated" for t in plain.trades)
    assert plain.plan_events.get("entries", 0) == 0
