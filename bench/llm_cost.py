"""What the LLM trader would cost: agent calls per day on real data, prompt sizes, $/month.

Replays the shared 1h bars of BTC, ETH, SOL and PAXG the way the replay server sends them
(4 in-progress frames and one closed frame per base bar, the 4h stream aggregated alongside)
through the listener's ``signals.gate.Gate``. Every tick that wakes the agent is batched by
market time like the wake dispatcher does; each batch is one ``llm_decide`` call. For every
call the real snapshot is built from the bars (features from ``compute_features``, funding
from the shared funding files) and rendered with ``render_prompt``.

Token counts are ESTIMATES: the SDK's token counter needs the network and no Claude tokenizer
ships offline. Prose (the system prompt) is counted at 3.5 characters a token, number-dense
text (snapshot, JSON schemas, answers) at 2.8; a pessimistic variant at 2.5 for all text is
printed too. The cached prefix (system prompt + both tool schemas + Anthropic's tool-use
preamble) is counted apart from the per-call snapshot. Prices come from trading.llm_pricing.

Usage: python bench/llm_cost.py [--days 90] [--end 2026-02-01] [--avg-positions 1]
Prints ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import inspect
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from signals.gate import Gate  # noqa: E402
from trading.agent_contract import (  # noqa: E402
    DECISION_TOOL,
    AgentLimits,
    system_prompt,
    tool_definitions,
)
from trading.config import Settings  # noqa: E402
from trading.features import compute_features  # noqa: E402
from trading.llm_pricing import ModelPrice, price_for  # noqa: E402
from trading.market_data import (  # noqa: E402
    find_symbol_csv,
    load_ohlcv_csv,
    parse_timestamp_ms,
    shared_data_dir,
)
from trading.models import Bar, ClosedTrade, MarketView, PositionParams  # noqa: E402
from trading.snapshot import (  # noqa: E402
    DerivativesSnapshot,
    EngineStatus,
    LiquidationReading,
    MacroReading,
    PositionMark,
    RegimeReading,
    SentimentReading,
    SnapshotContext,
    build_snapshot,
    render_position_prompt,
    render_prompt,
)
from trading.state import (  # noqa: E402
    AccountView,
    DecideRequest,
    EvaluateRequest,
    OpenPosition,
    PositionState,
)

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "PAXG/USDT"]
DECISION_INTERVAL = "4h"
HOUR_MS = 3_600_000
UPDATES_PER_BAR = 4
WINDOW = 200
CACHE_TTL_MS = 300_000  # Anthropic's default (5 min) prompt cache lifetime
DAYS_PER_MONTH = 30.4
CHARS_PER_TOKEN_PROSE = 3.5
CHARS_PER_TOKEN_DENSE = 2.8
CHARS_PER_TOKEN_PESSIMISTIC = 2.5
# Anthropic adds a tool-use system preamble when tools are given (313 tokens with
# tool_choice "tool" for Claude 4 models, per their tool-use pricing table).
TOOL_PREAMBLE_TOKENS = 313
TARGET_USD_MONTH = 5.0


def tokens(text: str, chars_per_token: float) -> int:
    return int(round(len(text) / chars_per_token))


# ---------------------------------------------------------------- data


def load_bars(data_dir: Path, start_ms: int, end_ms: int) -> dict[str, list[Bar]]:
    """1h bars from WINDOW·4 hours before the start (indicator warm-up) to the end."""
    out = {}
    for symbol in SYMBOLS:
        path = find_symbol_csv(data_dir, symbol, "1h")
        if path is None:
            raise SystemExit(f"no 1h file for {symbol} in {data_dir}")
        out[symbol] = load_ohlcv_csv(path, symbol, "1h", start_ms - WINDOW * 4 * HOUR_MS, end_ms)
    return out


def load_funding(data_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    out = {}
    for symbol in SYMBOLS:
        path = data_dir / f"binance_{symbol.replace('/', '')}_perp_funding_8h.csv"
        if not path.exists():
            continue
        times, rates = [], []
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                times.append(parse_timestamp_ms(row["timestamp"]))
                rates.append(float(row["funding_rate"]))
        out[symbol] = (times, rates)
    return out


def aggregate(parts: list[Bar], interval: str, open_time: int, closed: bool) -> Bar:
    return Bar(
        symbol=parts[0].symbol,
        interval=interval,
        open_time=open_time,
        close_time=open_time + 4 * HOUR_MS - 1,
        open=parts[0].open,
        high=max(b.high for b in parts),
        low=min(b.low for b in parts),
        close=parts[-1].close,
        volume=sum(b.volume for b in parts),
        closed=closed,
    )


def partial(bar: Bar, k: int) -> Bar:
    """The in-progress bar after k of 4 updates along open→low→high→close (or →high→low→)."""
    path = (
        [bar.open, bar.low, bar.high, bar.close]
        if bar.close >= bar.open
        else [bar.open, bar.high, bar.low, bar.close]
    )
    seen = path[: k + 1]
    return bar.model_copy(
        update={
            "high": max(seen),
            "low": min(seen),
            "close": seen[-1],
            "volume": bar.volume * k / UPDATES_PER_BAR,
            "closed": False,
        }
    )


# ---------------------------------------------------------------- replay through the gate


@dataclass
class Replay:
    ticks: int
    skipped: int
    wake_times: list[int]
    by_layer: dict[str, int]


def replay_gate(bars: dict[str, list[Bar]], start_ms: int) -> Replay:
    gate = Gate(DECISION_INTERVAL)
    takes_time = "event_time_ms" in inspect.signature(gate.evaluate).parameters
    per_slot: dict[int, dict[str, Bar]] = {}
    for symbol, series in bars.items():
        for bar in series:
            if bar.open_time >= start_ms:
                per_slot.setdefault(bar.open_time, {})[symbol] = bar
    groups: dict[tuple[str, int], list[Bar]] = {}
    seen_closed: set[tuple[str, str, int]] = set()
    wake_times: list[int] = []
    ticks = skipped = 0
    for slot in sorted(per_slot):
        entries = per_slot[slot]
        four_open = slot - slot % (4 * HOUR_MS)
        for k in range(1, UPDATES_PER_BAR + 2):
            final = k == UPDATES_PER_BAR + 1
            event = slot + HOUR_MS - 1 if final else slot + k * HOUR_MS // (UPDATES_PER_BAR + 1)
            woke = False
            for symbol, bar in entries.items():
                frame = bar if final else partial(bar, k)
                parts = [*groups.get((symbol, four_open), []), frame]
                if final:
                    groups[(symbol, four_open)] = parts
                four_closed = final and slot + HOUR_MS == four_open + 4 * HOUR_MS
                agg = aggregate(parts, "4h", four_open, four_closed)
                for tick in (frame, agg):
                    key = (symbol, tick.interval, tick.open_time)
                    newly = tick.closed and key not in seen_closed
                    if newly:
                        seen_closed.add(key)
                    reasons = (
                        gate.evaluate(tick, newly, event_time_ms=event)
                        if takes_time
                        else gate.evaluate(tick, newly)
                    )
                    ticks += 1
                    if reasons:
                        woke = True
                    else:
                        skipped += 1
            if woke:  # the dispatcher sends every reason queued at this moment as one wake
                wake_times.append(event)
    by_layer = dict(getattr(gate.counters, "by_layer", {}))
    return Replay(ticks, skipped, wake_times, by_layer)


# ---------------------------------------------------------------- prompts


def sample_account(prices: dict[str, float], now: int) -> AccountView:
    """Two open positions and ten closed trades: the largest account section SPEC §2 shows."""
    positions = [
        OpenPosition(
            position_id=f"paper-abc123-{s.split('/')[0]}-1",
            workflow_id=f"ocw-position-paper-abc123-{s.split('/')[0]}-1",
            symbol=s,
            qty=round(2500.0 / prices[s], 6),
            avg_entry=prices[s] * 0.97,
            entry_time_ms=now - 30 * HOUR_MS,
            cost=2500.0 * 0.97 * 1.001,
            last_price=prices[s],
        )
        for s in ("BTC/USDT", "SOL/USDT")
    ]
    trades = [
        ClosedTrade(
            trade_id=f"paper-abc123-T-{i}",
            symbol=SYMBOLS[i % 4],
            qty=1.0,
            entry_price=100.0,
            exit_price=100.0 + (i % 5) - 2,
            entry_time_ms=now - (200 - 10 * i) * HOUR_MS,
            exit_time_ms=now - (170 - 10 * i) * HOUR_MS,
            fees=0.2,
            pnl=float((i % 5) - 2) * 25,
            pnl_pct=((i % 5) - 2) / 100,
            exit_reason=["stop_loss", "trailing_stop", "agent_exit", "decision_sell"][i % 4],
        )
        for i in range(10)
    ]
    return AccountView(
        portfolio_value=10_000.0,
        cash=5_000.0,
        exposure=0.5,
        drawdown=0.03,
        halted=False,
        positions=positions,
        recent_trades=trades,
    )


def sample_context(funding: dict, now: int, prices: dict[str, float]) -> SnapshotContext:
    """Real funding where the shared data has it; the other parts at representative size."""
    derivatives = {}
    for symbol, (times, rates) in funding.items():
        i = bisect.bisect_right(times, now) - 1
        if i >= 0:
            derivatives[symbol] = DerivativesSnapshot(
                funding_rate=rates[i], taker_ratio=1.02, ls_z=0.8, oi_change_pct=0.012
            )
    return SnapshotContext(
        crypto_regime=RegimeReading(label="high_vol", probability=0.74),
        macro=MacroReading(quadrant="reflation", exposure_scale=1.0, trail_multiplier=1.0),
        reliabilities={
            "trend": 0.58,
            "reversion": 0.46,
            "volume": 0.51,
            "derivatives": 0.49,
            "sentiment": 0.5,
            "macro": 0.5,
        },
        derivatives=derivatives,
        liquidations=LiquidationReading(usd_1h=48_000_000.0),
        sentiment=SentimentReading(
            fear_greed=38,
            fear_greed_label="Fear",
            stablecoin_supply_change_pct=0.004,
            etf_flows_usd=-85_000_000.0,
            trending=["PEPE", "WIF", "BONK", "TAO", "SUI", "ONDO", "HYPE"],
            news=[
                "Bitcoin slides as ETF outflows extend into a third day",
                "Solana network upgrade goes live on mainnet",
            ],
        ),
        engine=EngineStatus(llm_breaker="closed", llm_budget_left_usd=0.41),
        position_marks={
            "BTC/USDT": PositionMark(
                peak_price=prices["BTC/USDT"] * 1.02, trough_price=prices["BTC/USDT"] * 0.95
            ),
            "SOL/USDT": PositionMark(
                peak_price=prices["SOL/USDT"] * 1.04, trough_price=prices["SOL/USDT"] * 0.94
            ),
        },
    )


def decision_prompt(bars: dict[str, list[Bar]], funding: dict, now: int) -> str:
    features = {}
    for symbol, series in bars.items():
        hourly = [b for b in series if b.close_time <= now][-WINDOW:]
        if not hourly:
            continue
        four = []
        for i in range(0, len(series)):
            b = series[i]
            if b.close_time > now:
                break
            if (b.open_time // HOUR_MS) % 4 == 3:  # last hour of a 4h candle
                group = series[max(0, i - 3) : i + 1]
                four.append(aggregate(group, "4h", b.open_time - 3 * HOUR_MS, True))
        features[symbol] = compute_features(
            symbol, four[-WINDOW:], "4h", finer=hourly, time_ms=now, price=hourly[-1].close
        )
    prices = {s: f.price for s, f in features.items()}
    req = DecideRequest(
        account="paper",
        decision_id="bench",
        market=MarketView(as_of_ms=now, symbols=features),
        account_view=sample_account(prices, now),
        wake_reasons=[f"candle_close:{s}:4h" for s in SYMBOLS],
        memory="x" * 300,  # a typical memory note
    )
    ctx = sample_context(funding, now, prices)
    return f"TASK: decide (call {DECISION_TOOL})\n" + render_prompt(build_snapshot(req, ctx))


def position_prompt(bars: dict[str, list[Bar]], now: int) -> str:
    sol = [b for b in bars["SOL/USDT"] if b.close_time <= now][-WINDOW:]
    btc = [b for b in bars["BTC/USDT"] if b.close_time <= now][-WINDOW:]
    price = sol[-1].close
    state = PositionState(
        position_id="paper-abc123-SOL-1",
        account="paper",
        symbol="SOL/USDT",
        qty=10.0,
        avg_entry=price * 0.97,
        entry_time_ms=now - 30 * HOUR_MS,
        entry_fees=1.0,
        cost=price * 9.7 * 1.001,
        peak_price=price * 1.04,
        trough_price=price * 0.94,
        last_price=price,
        last_price_ms=now,
        signal_weights={"trend": 0.6, "volume": 0.2, "derivatives": -0.1},
    )
    req = EvaluateRequest(
        position=state,
        features=compute_features("SOL/USDT", sol, "1h"),
        btc_features=compute_features("BTC/USDT", btc, "1h"),
        params=PositionParams(),
        context=sample_context({}, now, {"BTC/USDT": btc[-1].close, "SOL/USDT": price}),
    )
    return "TASK: evaluate position (call submit_position_verdict)\n" + render_position_prompt(
        req, req.context
    )


PROSE_FIELDS = {
    "reasoning",
    "market_assessment",
    "regime_agreement",
    "learning_note",
    "memory_update",
    "reason",
}


def answer_tokens(answer: dict) -> int:
    """Prose strings at the prose rate, the JSON around them at the dense rate, plus framing."""
    prose = 0

    def walk(value: object, key: str = "") -> None:
        nonlocal prose
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in PROSE_FIELDS:
            prose += len(value)

    walk(answer)
    dense = len(json.dumps(answer)) - prose
    return int(round(prose / CHARS_PER_TOKEN_PROSE + dense / CHARS_PER_TOKEN_DENSE)) + 30


def sample_answer(n_decisions: int) -> dict:
    """A decide answer at the lengths the system prompt asks for (actions only)."""
    return {
        "decisions": [
            {
                "ticker": s,
                "action": "BUY",
                "position_pct": 0.15,
                "confidence": 0.65,
                "reasoning": "r" * 200,
                "signal_weights": {"trend": 0.5, "volume": 0.2, "derivatives": -0.1},
                "exit_plan": {
                    "stop_price": 81234.5,
                    "target_price": 92345.5,
                    "invalidation": {
                        "metric": f"{s}:price",
                        "operator": "lt",
                        "threshold": 82345.5,
                        "reason": "r" * 40,
                    },
                },
            }
            for s in SYMBOLS[:n_decisions]
        ],
        "market_assessment": "a" * 200,
        "regime_agreement": "b" * 80,
        "learning_note": "c" * 80,
        "next_check_seconds": 3600,
        "wake_conditions": [
            {"metric": "BTC/USDT:price", "operator": "lt", "threshold": 80000.0, "reason": "d" * 40}
        ]
        * 2,
        "memory_update": "m" * 200,
    }


# ---------------------------------------------------------------- costs


def call_cost(price: ModelPrice, prefix: int, prompt: int, output: int, cache: str) -> float:
    """One call; ``cache`` is how the prefix is billed: "plain", "write" or "read"."""
    rate = {"plain": price.input, "write": price.cache_write, "read": price.cache_read}[cache]
    return (prefix * rate + prompt * price.input + output * price.output) / 1e6


def timeline_cost(
    times: list[tuple[int, str]],
    price: ModelPrice,
    prefix: int,
    sizes: dict[str, tuple[int, int]],
    policy: str = "adaptive",
) -> tuple[float, int]:
    """Cost of calls at these market times (taken as wall time, i.e. live speed), with the
    activity's prompt-cache policy: "adaptive" marks the prefix only for a call within the
    cache lifetime of the previous one, "always" marks every call, "off" none. Returns the
    cost and the number of calls that read the cache."""
    total, reads, last, cached_until = 0.0, 0, None, -1
    for t, kind in sorted(times):
        in_burst = last is not None and t - last <= CACHE_TTL_MS
        mark = policy == "always" or (policy == "adaptive" and in_burst)
        if not mark:
            billing = "plain"
        elif t <= cached_until:
            billing = "read"
        else:
            billing = "write"
        if mark:
            cached_until = t + CACHE_TTL_MS
        reads += billing == "read"
        prompt, output = sizes[kind]
        total += call_cost(price, prefix, prompt, output, billing)
        last = t
    return total, reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--end", default="2026-02-01", help="end date (exclusive), UTC")
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--model", default="claude-sonnet-4-6")
    parser.add_argument("--avg-positions", type=float, default=1.0, help="open positions, mean")
    parser.add_argument(
        "--eval-interval-s",
        type=float,
        default=Settings().llm_position_eval_interval_s,
        help="LLM position check (default: OCW_LLM_POSITION_EVAL_INTERVAL_S)",
    )
    args = parser.parse_args(argv)

    data_dir = args.data_dir or shared_data_dir()
    if data_dir is None:
        print("skipped: no shared data directory (set OCW_DATA_DIR)")
        return 0
    started = time.perf_counter()
    end_ms = parse_timestamp_ms(args.end + "T00:00:00Z")
    start_ms = end_ms - int(args.days * 24 * HOUR_MS)
    start_ms -= start_ms % (4 * HOUR_MS)
    bars = load_bars(data_dir, start_ms, end_ms)
    funding = load_funding(data_dir)
    replay = replay_gate(bars, start_ms)
    days = (end_ms - start_ms) / (24 * HOUR_MS)

    limits = AgentLimits(universe=SYMBOLS)
    system = system_prompt(limits)
    tools = json.dumps(tool_definitions(limits))
    prefix_tokens = (
        tokens(system, CHARS_PER_TOKEN_PROSE)
        + tokens(tools, CHARS_PER_TOKEN_DENSE)
        + TOOL_PREAMBLE_TOKENS
    )
    prefix_pessimistic = tokens(system + tools, CHARS_PER_TOKEN_PESSIMISTIC) + TOOL_PREAMBLE_TOKENS

    step = max(1, len(replay.wake_times) // 60)  # ~60 sampled snapshots are plenty for sizes
    prompts = [decision_prompt(bars, funding, t) for t in replay.wake_times[::step]]
    chars = [len(p) for p in prompts] or [0]
    mean_chars = sum(chars) / len(chars)
    snap_tokens = int(round(mean_chars / CHARS_PER_TOKEN_DENSE))
    out_tokens = answer_tokens(sample_answer(1))  # typical: at most one action per wake
    out_tokens_max = answer_tokens(sample_answer(len(SYMBOLS)))
    eval_prompt = position_prompt(bars, end_ms - 1)
    eval_tokens = tokens(eval_prompt, CHARS_PER_TOKEN_DENSE)
    eval_out = 80

    price = price_for(args.model)
    calls_per_day = len(replay.wake_times) / days
    decisions = [(t, "decide") for t in replay.wake_times]
    sizes = {"decide": (snap_tokens, out_tokens), "eval": (eval_tokens, eval_out)}
    dec_cost, dec_warm = timeline_cost(decisions, price, prefix_tokens, sizes)
    monthly_decisions = dec_cost / days * DAYS_PER_MONTH
    always, _ = timeline_cost(decisions, price, prefix_tokens, sizes, policy="always")
    monthly_always = always / days * DAYS_PER_MONTH
    g1_only = sorted(
        {t - t % (4 * HOUR_MS) for t in replay.wake_times if (t + 1) % (4 * HOUR_MS) == 0}
    )
    g1_cost, _ = timeline_cost([(t, "decide") for t in g1_only], price, prefix_tokens, sizes)
    monthly_g1 = g1_cost / days * DAYS_PER_MONTH
    pess_price = sum(
        call_cost(
            price,
            prefix_pessimistic,
            int(mean_chars / CHARS_PER_TOKEN_PESSIMISTIC),
            int(len(json.dumps(sample_answer(1))) / CHARS_PER_TOKEN_PESSIMISTIC) + 30,
            "plain",
        )
        for _ in decisions
    )
    monthly_pessimistic = pess_price / days * DAYS_PER_MONTH

    def eval_monthly(interval_s: float) -> float:
        """Per open position: decisions and its checks share the cached prefix."""
        period_ms = int(interval_s * 1000)
        # offset by half a period: position checks run on their own timer, not on candle closes
        checks = [(t, "eval") for t in range(start_ms + period_ms // 2, end_ms, period_ms)]
        both, _ = timeline_cost(decisions + checks, price, prefix_tokens, sizes)
        return (both - dec_cost) / days * DAYS_PER_MONTH

    eval_180 = eval_monthly(180.0)
    eval_cfg = eval_monthly(args.eval_interval_s)
    total = monthly_decisions + args.avg_positions * eval_cfg

    lines = {
        "period": f"{args.end} minus {days:.0f} days, {', '.join(SYMBOLS)}, 1h bars replayed",
        "gate": f"signals.gate.Gate('{DECISION_INTERVAL}'), layers seen {replay.by_layer}",
        "ticks": replay.ticks,
        "ticks_skipped_share": f"{replay.skipped / replay.ticks:.4f}",
        "agent_calls": len(replay.wake_times),
        "agent_calls_per_day": f"{calls_per_day:.2f}",
        "token_estimate_method": (
            f"chars/{CHARS_PER_TOKEN_PROSE} prose, chars/{CHARS_PER_TOKEN_DENSE} numbers+JSON, "
            f"+{TOOL_PREAMBLE_TOKENS} tool preamble; ESTIMATE, no offline tokenizer"
        ),
        "snapshot_prompt_chars_mean": f"{mean_chars:.0f}",
        "snapshot_prompt_chars_max": max(chars),
        "snapshot_prompt_tokens_est": snap_tokens,
        "cached_prefix_chars": len(system) + len(tools),
        "cached_prefix_tokens_est": prefix_tokens,
        "decide_output_tokens_est": f"{out_tokens} (one action; all 4 symbols: {out_tokens_max})",
        "eval_prompt_tokens_est": eval_tokens,
        "eval_output_tokens_est": eval_out,
        "model": args.model,
        "price_usd_per_mtok": (
            f"in {price.input} out {price.output} cache_write {price.cache_write} "
            f"cache_read {price.cache_read}"
        ),
        "prompt_cache_policy": "adaptive (prefix cached only for calls within 5 min of another)",
        "decide_calls_reading_cache": f"{dec_warm}/{len(decisions)}",
        "cost_per_decide_call_plain_usd": f"{call_cost(price, prefix_tokens, snap_tokens, out_tokens, 'plain'):.4f}",
        "cost_per_decide_call_cache_read_usd": f"{call_cost(price, prefix_tokens, snap_tokens, out_tokens, 'read'):.4f}",
        "monthly_cost_decisions_usd": f"{monthly_decisions:.2f}",
        "monthly_cost_decisions_cache_always_usd": f"{monthly_always:.2f}",
        "monthly_cost_decisions_g1_candle_closes_only_usd": f"{monthly_g1:.2f} ({len(g1_only) / days:.1f} calls/day)",
        "monthly_cost_decisions_pessimistic_usd": f"{monthly_pessimistic:.2f}",
        "monthly_cost_per_position_llm_eval_every_180s_usd": f"{eval_180:.2f}",
        f"monthly_cost_per_position_llm_eval_every_{args.eval_interval_s:.0f}s_usd": f"{eval_cfg:.2f}",
        "monthly_cost_total_usd": (
            f"{total:.2f} (decisions + {args.avg_positions:g} open position(s) checked every "
            f"{args.eval_interval_s:.0f}s)"
        ),
        "target_decisions_under_5_usd": "yes" if monthly_decisions < TARGET_USD_MONTH else "no",
        "bench_seconds": f"{time.perf_counter() - started:.1f}",
    }
    for name, value in lines.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
