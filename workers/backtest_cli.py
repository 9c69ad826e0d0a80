"""``ocw backtest`` and ``ocw optimize``: load and validate CSVs, run, print, write a report.

The simulation is pure code in ``trading/backtest``; this module does the I/O around it: the
files, the progress bar (tqdm, on stderr, only on a terminal), the tables and the report folder
(``metrics.json``, ``trades.csv``, ``equity.csv``, ``equity.png``, ``config.json`` with the
exact parameters and the data fingerprint).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from trading.backtest.data import BacktestData, prepare_data
from trading.backtest.engine import BacktestResult, Hooks, run_backtest
from trading.backtest.features_frame import LIVE_WINDOW
from trading.backtest.metrics import Metrics, result_metrics
from trading.backtest.params import BacktestParams
from trading.backtest.walkforward import DEFAULT_GRID, WalkForwardReport, walk_forward
from trading.market_data import (
    RowIssue,
    find_funding_csv,
    find_symbol_csv,
    format_timestamp,
    interval_ms,
    load_funding_csv,
    load_validated_csv,
    parse_timestamp_ms,
)
from trading.models import Bar
from workers.temporal_env import SetupError
from workflows.ui_text import when

DEFAULT_SYMBOLS = "BTC/USDT,ETH/USDT,SOL/USDT"
SCORER_INTERVAL = "1h"  # the live agent layer reads 1h features (workflows/position.py)


@dataclass
class LoadedData:
    data: BacktestData
    files: dict[str, str] = field(default_factory=dict)  # role -> file name
    gaps: list[str] = field(default_factory=list)  # "file: issue" lines


def _load_symbol(
    data_dir: Path, symbol: str, interval: str, start_ms: int, end_ms: int
) -> tuple[list[Bar], Path, list[RowIssue]] | None:
    path = find_symbol_csv(data_dir, symbol, interval)
    if path is None:
        return None
    bars, issues = load_validated_csv(path, symbol, interval, start_ms, end_ms)
    return bars, path, issues


def load_backtest_data(
    data_dir: Path | str,
    symbols: list[str],
    timeframe: str,
    start_ms: int,
    end_ms: int,
    scorer_interval: str | None = SCORER_INTERVAL,
    perpetual: bool = False,
    warmup_bars: int = LIVE_WINDOW,
) -> LoadedData:
    """Validated bars from ``warmup_bars`` before ``start_ms`` to ``end_ms``, their features,
    the agent layer's finer bars when the files exist, and funding for perpetual runs."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SetupError(f"data folder {data_dir} does not exist")
    load_from = start_ms - warmup_bars * interval_ms(timeframe)
    bars: dict[str, list[Bar]] = {}
    finer: dict[str, list[Bar]] = {}
    funding: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    files: dict[str, str] = {}
    gaps: list[str] = []
    for symbol in symbols:
        got = _load_symbol(data_dir, symbol, timeframe, load_from, end_ms)
        if got is None:
            raise SetupError(f"no {timeframe} file for {symbol} in {data_dir}")
        bars[symbol], path, issues = got
        if not bars[symbol]:
            raise SetupError(f"{path.name} has no bars between the warm-up start and --end")
        files[f"{symbol} {timeframe}"] = path.name
        gaps += [f"{path.name}: {i}" for i in issues]
        if scorer_interval and interval_ms(scorer_interval) < interval_ms(timeframe):
            fine = _load_symbol(data_dir, symbol, scorer_interval, load_from, end_ms)
            if fine is not None and fine[0]:
                finer[symbol] = fine[0]
                files[f"{symbol} {scorer_interval}"] = fine[1].name
                gaps += [f"{fine[1].name}: {i}" for i in fine[2]]
        if perpetual:
            fpath = find_funding_csv(data_dir, symbol)
            if fpath is None:
                raise SetupError(f"--perpetual: no funding file for {symbol} in {data_dir}")
            funding[symbol] = load_funding_csv(fpath, load_from, end_ms)
            files[f"{symbol} funding"] = fpath.name
    data = prepare_data(bars, timeframe, finer, funding)
    return LoadedData(data=data, files=files, gaps=gaps)


# ------------------------------------------------------------ output


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def metrics_rows(m: Metrics) -> list[tuple[str, str]]:
    rows = [
        ("period", f"{format_timestamp(m.start_ms)} .. {format_timestamp(m.end_ms)}"),
        ("equity", f"{m.initial_equity:,.2f} -> {m.final_equity:,.2f}"),
        ("total return", _pct(m.total_return)),
        ("CAGR", _pct(m.cagr)),
        ("Sharpe (daily, sqrt 365)", f"{m.sharpe:.2f}"),
        ("Sortino", f"{m.sortino:.2f}"),
        ("max drawdown", _pct(m.max_drawdown)),
        ("trades", str(m.trades)),
        ("win rate", f"{m.win_rate:.1%}"),
        ("average win / loss", f"{_pct(m.avg_win)} / {_pct(m.avg_loss)}"),
        ("exposure", f"{m.exposure:.1%}"),
        ("exits", ", ".join(f"{k} {v:.0%}" for k, v in m.exit_reasons.items()) or "none"),
        ("BTC buy-and-hold", _pct(m.btc_buy_hold)),
        ("equal-weight basket", _pct(m.basket_buy_hold)),
        ("alpha vs BTC / basket", f"{_pct(m.alpha_vs_btc)} / {_pct(m.alpha_vs_basket)}"),
        ("fees / funding paid", f"{m.fees_paid:,.2f} / {m.funding_paid:,.2f}"),
    ]
    return rows


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_trades_csv(result: BacktestResult, path: Path) -> None:
    names = [
        "trade_id",
        "symbol",
        "qty",
        "entry_price",
        "exit_price",
        "entry_time",
        "exit_time",
        "fees",
        "pnl",
        "pnl_pct",
        "exit_reason",
        "signal_weights",
        "side",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for t in result.trades:
            writer.writerow(
                [
                    t.trade_id,
                    t.symbol,
                    repr(t.qty),
                    repr(t.entry_price),
                    repr(t.exit_price),
                    format_timestamp(t.entry_time_ms),
                    format_timestamp(t.exit_time_ms),
                    repr(t.fees),
                    repr(t.pnl),
                    repr(t.pnl_pct),
                    t.exit_reason,
                    json.dumps(t.signal_weights, sort_keys=True),
                    str(t.side),
                ]
            )


def _dates(times_ms: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(int(t) / 1000, UTC) for t in times_ms]


def basket_curve(result: BacktestResult) -> np.ndarray | None:
    """Equal-weight buy-and-hold of every symbol from its first open (NaN bars carried)."""
    curves = []
    for sym, closes in result.closes.items():
        first = result.first_open.get(sym)
        if not first:
            continue
        filled = pd.Series(closes).ffill().fillna(first).to_numpy()
        curves.append(filled / first)
    if not curves:
        return None
    return result.params.initial_cash * np.mean(curves, axis=0)


def halt_rows(result: BacktestResult) -> list[dict[str, object]]:
    """Every halt of a run: when it began and ended (None: still on at the end), the drawdown
    and the threshold it crossed, why, and how it lifted."""
    if not result.halts:  # a result without episodes (older pickles): the spans alone
        return [{"from_ms": a, "to_ms": b} for a, b in result.halt_spans]
    return [
        {
            "from_ms": ep.start_ms,
            "to_ms": ep.end_ms,
            "drawdown": ep.drawdown,
            "threshold": ep.threshold if math.isfinite(ep.threshold) else None,
            "reason": ep.reason,
            "lifted_by": ep.lifted_by,
        }
        for ep in result.halts
    ]


def halt_lines(result: BacktestResult) -> list[str]:
    """A plain line per halt: when and why entries stopped, and when and how they restarted."""
    lines = []
    end_ms = int(result.times[-1]) + 1 if len(result.times) else 0
    for row in halt_rows(result):
        first, last = int(row["from_ms"]), row["to_ms"]
        stop = last if last is not None else end_ms
        days = (stop - first) / 86_400_000
        why = f": {row['reason']}" if row.get("reason") else ""
        if last is None:
            lines.append(
                f"the drawdown halt froze entries from {when(first)} to the end "
                f"({days:.0f} days with no new position){why}; it never lifted (a flat, halted "
                "book waits for `ocw resume`; OCW_DRAWDOWN_COOLOFF_HOURS lifts it)"
            )
        else:
            how = f"; lifted by {row['lifted_by']}" if row.get("lifted_by") else ""
            lines.append(
                f"the drawdown halt froze entries from {when(first)} to {when(int(last))} "
                f"({days:.0f} days){why}{how}"
            )
    return lines


def by_symbol_rows(result: BacktestResult) -> list[dict[str, object]]:
    rows = []
    for sym in result.symbols:
        trades = [t for t in result.trades if t.symbol == sym]
        wins = sum(1 for t in trades if t.pnl > 0)
        first, closes = result.first_open.get(sym), result.closes.get(sym)
        seen = pd.Series(closes).dropna() if closes is not None else pd.Series(dtype=float)
        last = float(seen.iloc[-1]) if len(seen) else None
        rows.append(
            {
                "symbol": sym,
                "trades": len(trades),
                "win_rate": wins / len(trades) if trades else 0.0,
                "pnl": sum(t.pnl for t in trades),
                "fees": sum(t.fees for t in trades),
                "buy_and_hold": (last / first - 1) if first and last else None,
            }
        )
    return rows


def exits_by_reason(result: BacktestResult) -> dict[str, int]:
    return dict(Counter(t.exit_reason for t in result.trades).most_common())


def format_breakdown(result: BacktestResult) -> str:
    lines = ["per symbol:"]
    for r in by_symbol_rows(result):
        bh = f"{r['buy_and_hold']:+.1%}" if r["buy_and_hold"] is not None else "–"
        lines.append(
            f"  {r['symbol']:<10} {r['trades']:>4} trades  win {r['win_rate']:>4.0%}  "
            f"pnl {r['pnl']:>+11,.2f}  fees {r['fees']:>9,.2f}  buy-and-hold {bh}"
        )
    reasons = exits_by_reason(result)
    if reasons:
        lines.append("exits by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    lines += halt_lines(result)
    return "\n".join(lines)


def write_equity_png(result: BacktestResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dates = _dates(result.times)
    equity = result.equity
    peaks = np.maximum.accumulate(np.concatenate(([result.params.initial_cash], equity)))[1:]
    drawdown = equity / peaks - 1.0
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(dates, equity, label="strategy", color="tab:blue")
    btc = result.closes.get("BTC/USDT")
    if btc is not None and "BTC/USDT" in result.first_open:
        top.plot(
            dates,
            result.params.initial_cash * btc / result.first_open["BTC/USDT"],
            label="BTC buy-and-hold",
            color="tab:orange",
            alpha=0.7,
        )
    basket = basket_curve(result)
    if basket is not None and len(result.closes) > 1:
        top.plot(dates, basket, label="equal-weight basket", color="tab:gray", alpha=0.8)
    for first, last in result.halt_spans:
        stop = last if last is not None else int(result.times[-1])
        for ax in (top, bottom):
            ax.axvspan(
                datetime.fromtimestamp(first / 1000, UTC),
                datetime.fromtimestamp(stop / 1000, UTC),
                color="tab:red",
                alpha=0.08,
                label="drawdown halt" if ax is top and first == result.halt_spans[0][0] else None,
            )
    top.set_ylabel("equity (quote)")
    top.set_title(title)
    top.legend(loc="best")
    top.grid(alpha=0.3)
    bottom.fill_between(dates, drawdown * 100, 0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_price_pngs(result: BacktestResult, out: Path) -> list[Path]:
    """Per symbol: its close with every entry (▲) and exit (▼) of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dates = _dates(result.times)
    written = []
    for sym in result.symbols:
        closes = result.closes.get(sym)
        if closes is None:
            continue
        trades = [t for t in result.trades if t.symbol == sym]
        fig, ax = plt.subplots(figsize=(11, 4))
        ax.plot(dates, closes, color="tab:gray", linewidth=0.8, label=f"{sym} close")
        if trades:
            ax.scatter(
                _dates(np.array([t.entry_time_ms for t in trades])),
                [t.entry_price for t in trades],
                marker="^",
                color="tab:green",
                s=30,
                label="entry",
                zorder=3,
            )
            ax.scatter(
                _dates(np.array([t.exit_time_ms for t in trades])),
                [t.exit_price for t in trades],
                marker="v",
                color="tab:red",
                s=30,
                label="exit",
                zorder=3,
            )
        ax.set_title(f"{sym}: {len(trades)} trades")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
        fig.tight_layout()
        path = out / f"price_{sym.replace('/', '')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def write_report(
    out: Path,
    result: BacktestResult,
    metrics: Metrics,
    config: dict[str, object],
    extra_metrics: dict[str, object] | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **metrics.model_dump(mode="json"),
        "by_symbol": by_symbol_rows(result),
        "exits_by_reason": exits_by_reason(result),
        "halts": halt_rows(result),
        **(extra_metrics or {}),
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2))
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    write_trades_csv(result, out / "trades.csv")
    with (out / "equity.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "equity", "exposure"])
        for t, e, x in zip(result.times, result.equity, result.exposure, strict=True):
            writer.writerow([format_timestamp(int(t) + 1), repr(float(e)), repr(float(x))])
    write_equity_png(result, out / "equity.png", f"{', '.join(result.symbols)} {result.interval}")
    write_price_pngs(result, out)
    with (out / "by_symbol.csv").open("w", newline="") as handle:
        rows = by_symbol_rows(result)
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["symbol"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "breakdown.txt").write_text(format_breakdown(result) + "\n")


def _progress(total: int, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        unit="bar",
        leave=False,
    )


# ------------------------------------------------------------ commands


def settings_defaults(llm: bool = False) -> dict[str, object]:
    """The engine's settings (``OCW_*`` / ``.env``) for every parameter a backtest shares with
    live trading, so a backtest runs what the live engine is configured to do.

    Exit plans apply as live: the rule policy's while ``rule_plans_apply``; with ``llm``
    (Claude decides) Claude's whenever ``OCW_EXIT_PLANS`` is on, the rule policy's fallback
    bars still writing theirs only under ``rule_plans_apply`` (``LLMDecisions.rule_plans``)."""
    from trading.config import Settings

    try:
        settings = Settings()
    except ValueError as err:
        raise SetupError(f"invalid settings: {err}") from None
    shared = set(BacktestParams.model_fields) & set(Settings.model_fields)
    values: dict[str, object] = {name: getattr(settings, name) for name in sorted(shared)}
    # as live (workers/wiring.py): the engine applies the plans an entry carries
    values["rule_exit_plans"] = settings.exit_plans if llm else settings.rule_plans_apply
    return values


def _params_from_args(args: argparse.Namespace) -> BacktestParams:
    values: dict[str, object] = settings_defaults(llm=bool(getattr(args, "llm", False)))
    if args.config:
        try:
            given = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SetupError(f"--config {args.config}: {err}") from None
        if not isinstance(given, dict):
            raise SetupError(f"--config {args.config}: expected a JSON object of parameters")
        values.update(given)
    for flag, name in (
        ("cash", "initial_cash"),
        ("slippage_bps", "slippage_bps"),
        ("rebalance_bars", "decision_every_bars"),
    ):
        if getattr(args, flag, None) is not None:
            values[name] = getattr(args, flag)
    if getattr(args, "perpetual", False):
        values["perpetual"] = True
    if getattr(args, "allow_shorts", False):
        values["allow_shorts"] = True  # perpetual only: refused below otherwise
    try:
        return BacktestParams(**values)
    except ValueError as err:
        raise SetupError(f"invalid backtest parameters: {err}") from None


def _window(args: argparse.Namespace) -> tuple[int, int]:
    try:
        start, end = parse_timestamp_ms(args.start), parse_timestamp_ms(args.end)
    except ValueError as err:
        raise SetupError(f"--start/--end: {err}") from None
    if end <= start:
        raise SetupError("--end must be after --start")
    return start, end


def _symbols(text: str) -> list[str]:
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols or any("/" not in s for s in symbols):
        raise SetupError("--symbols: a comma list like BTC/USDT,ETH/USDT")
    return symbols


def run_config(
    params: BacktestParams,
    symbols: list[str],
    timeframe: str,
    start_ms: int,
    end_ms: int,
    loaded: LoadedData,
    hooks_used: list[str] | None = None,
) -> dict[str, object]:
    """What a report's config.json holds: enough to re-run the same backtest exactly."""
    return {
        "params": params.model_dump(mode="json"),
        "hooks": hooks_used or [],
        "symbols": symbols,
        "timeframe": timeframe,
        "start": format_timestamp(start_ms),
        "end": format_timestamp(end_ms),
        "scorer_interval": SCORER_INTERVAL,
        "files": loaded.files,
        "data_fingerprint_sha256": loaded.data.fingerprint,
        "data_gaps": loaded.gaps,
    }


def build_hooks(
    args: argparse.Namespace, data_dir: Path, loaded: LoadedData, start: int, end: int
) -> Hooks:
    """The optional learner, macro and crypto-regime hooks asked for on the command line."""
    from trading.backtest.hooks import MacroSchedule, ThompsonLearner, VolRegimeSchedule

    hooks = Hooks()
    if getattr(args, "learner_seed", None) is not None:
        from activities.learner_store import learner_params_from
        from trading.config import Settings

        # the learner's numbers from the same OCW_LEARNER_* settings the live workflow uses
        hooks.learner = ThompsonLearner(
            seed=args.learner_seed, params=learner_params_from(Settings())
        )
    if getattr(args, "macro", False):
        from trading.macro import SERIES_IDS, load_fred_csv

        series = {}
        for sid in SERIES_IDS:
            path = data_dir / f"fred_{sid}.csv"
            if path.is_file():
                series[sid] = load_fred_csv(path, sid)
                loaded.files[f"macro {sid}"] = path.name
        if not series:
            raise SetupError(f"--macro: no fred_<SERIES>.csv files in {data_dir}")
        hooks.macro = MacroSchedule(series)
    if getattr(args, "vol_regime", False):
        btc = find_symbol_csv(data_dir, "BTC/USDT", "4h")
        if btc is None:
            raise SetupError(f"--vol-regime: no BTC/USDT 4h file in {data_dir}")
        bars, _ = load_validated_csv(btc, "BTC/USDT", "4h", None, end)
        loaded.files["vol regime BTC/USDT 4h"] = btc.name
        hooks.vol_regime = VolRegimeSchedule(bars, start, end)
    return hooks


def cmd_backtest(args: argparse.Namespace) -> int:
    params = _params_from_args(args)
    symbols = _symbols(args.symbols)
    start, end = _window(args)
    began = time.perf_counter()
    loaded = load_backtest_data(
        args.data, symbols, args.timeframe, start, end, perpetual=params.perpetual
    )
    for line in loaded.gaps:
        print(f"data gap (kept): {line}", file=sys.stderr)
    hooks = build_hooks(args, Path(args.data), loaded, start, end)
    used = [name for name in ("learner", "macro", "vol_regime") if getattr(hooks, name)]
    t0, t1 = loaded.data.steps_between(start, end)
    llm = open_llm_source(args, loaded, params, symbols, start) if args.llm else None
    try:
        with _progress(t1 - t0, args.quiet, "backtest") as bar:
            if llm is None:
                result = run_backtest(
                    loaded.data, params, start, end, hooks=hooks, progress=bar.update
                )
            else:
                from trading.backtest.engine import Backtester

                backtester = Backtester(loaded.data, params, llm, hooks)
                llm.attach(backtester)
                result = backtester.run(start, end, bar.update)
    finally:
        if llm is not None:
            llm.close()
    seconds = time.perf_counter() - began
    metrics = result_metrics(result)
    rows = metrics_rows(metrics)
    if llm is not None:
        rows += llm_rows(llm.report)
    print(format_table(rows))
    print(format_breakdown(result))
    print(f"{t1 - t0} bars x {len(symbols)} symbols in {seconds:.2f} s")
    if args.out:
        out = Path(args.out)
        config = run_config(params, symbols, args.timeframe, start, end, loaded, used)
        extra: dict[str, object] | None = None
        if llm is not None:
            extra = {"llm": llm.report.model_dump(mode="json")}
            config["llm"] = llm_run_config(llm)
        write_report(out, result, metrics, config, extra)
        print(f"report written to {out}")
    return 0


# ------------------------------------------------------------ LLM decisions (--llm)


def open_llm_source(
    args: argparse.Namespace,
    loaded: LoadedData,
    params: BacktestParams,
    symbols: list[str],
    start: int,
):
    """Claude as the decision source (workers/llm_backtest.py); warns about the cutoff."""
    import logging

    from activities.llm_agent import LLMConfig
    from trading.config import Settings
    from workers.llm_backtest import check_training_cutoff, new_run_id, open_llm_decisions

    try:
        settings = Settings()
        base = LLMConfig.from_settings(settings)
    except ValueError as err:
        raise SetupError(f"invalid LLM settings: {err}") from None
    if not getattr(args, "verbose", False):
        for name in ("activities.llm_agent", "httpx", "workers.llm_backtest"):
            logging.getLogger(name).setLevel(logging.WARNING)  # one line per bar otherwise
    cutoff = check_training_cutoff(base.model, start, base.training_cutoffs)
    if cutoff.before:
        print(cutoff.warning(start), file=sys.stderr)
    budget = args.llm_run_budget if args.llm_run_budget is not None else base.run_budget_usd
    if budget is not None and budget < 0:
        raise SetupError("--llm-run-budget must be >= 0")
    store = Path(args.llm_cache) if args.llm_cache else settings.paths()["llm_db"]
    return open_llm_decisions(
        base,
        loaded.data,
        params,
        symbols,
        store,
        cache_mode=args.llm_cache_mode,
        run_id=args.llm_run_id or new_run_id(),
        run_budget_usd=budget,
        on_replay_miss=args.llm_replay_miss,
        start_ms=start,
        rule_plans=settings.rule_plans_apply,
    )


def llm_rows(report) -> list[tuple[str, str]]:
    """The LLM lines of the printed table (report: workers.llm_backtest.LLMBacktestReport)."""
    fallbacks = ", ".join(f"{k} {v}" for k, v in report.fallbacks.items()) or "none"
    cutoff = "n/a" if report.training_cutoff is None else report.training_cutoff
    return [
        ("LLM model / cache mode", f"{report.model} / {report.cache_mode}"),
        ("LLM bars decided", f"{report.llm_decided} of {report.decision_bars}"),
        ("LLM API requests / cache hits", f"{report.api_requests} / {report.cache_hits}"),
        (
            "LLM cost (run budget)",
            f"${report.cost_usd:.4f} (budget "
            + ("none" if report.run_budget_usd is None else f"${report.run_budget_usd:.2f}")
            + f", run {report.run_id})",
        ),
        ("LLM fallbacks to rules", fallbacks),
        (
            "LLM entries with an exit plan / shorts",
            f"{report.entries_with_plan} / {report.short_entries}",
        ),
        (
            "LLM training cutoff",
            f"{cutoff}" + (" (period starts before it!)" if report.before_training_cutoff else ""),
        ),
    ]


def llm_run_config(llm) -> dict[str, object]:
    """config.json's LLM part: what decides which answers a replay finds."""
    cfg = llm.acts.config
    return {
        "model": cfg.model,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "cache_mode": str(cfg.cache_mode),
        "cache_path": str(llm.acts.store.db_path),
        "run_id": cfg.run_id,
        "run_budget_usd": cfg.run_budget_usd,
        "on_replay_miss": llm.on_replay_miss,
        "prompt_version": llm.report.prompt_version,
    }


def format_walk_forward(report: WalkForwardReport) -> str:
    names = list(report.grid)
    head = ["test window", *names, "train " + report.objective, "return", "Sharpe", "MDD", "trades"]
    lines = ["  ".join(head)]
    for fr in report.folds:
        window = f"{format_timestamp(fr.fold.test_start_ms)[:10]}..{format_timestamp(fr.fold.test_end_ms)[:10]}"
        cells = [window, *(str(fr.chosen[n]) for n in names)]
        cells += [
            f"{fr.train_score:.2f}",
            _pct(fr.test.total_return),
            f"{fr.test.sharpe:.2f}",
            _pct(fr.test.max_drawdown),
            str(fr.test.trades),
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def cmd_optimize(args: argparse.Namespace) -> int:
    base = _params_from_args(args)
    symbols = _symbols(args.symbols)
    start, end = _window(args)
    grid = DEFAULT_GRID
    if args.grid:
        try:
            grid = json.loads(Path(args.grid).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SetupError(f"--grid {args.grid}: {err}") from None
    train_ms = args.train_days * 86_400_000
    loaded = load_backtest_data(
        args.data, symbols, args.timeframe, start - train_ms, end, perpetual=base.perpetual
    )
    n_sets = int(np.prod([len(v) for v in grid.values()]))
    with _progress(n_sets, args.quiet, "parameter sets") as bar:
        try:
            report = walk_forward(
                loaded.data,
                base,
                start,
                end,
                grid=grid,
                train_days=args.train_days,
                test_days=args.test_days,
                objective=args.objective,
                workers=args.workers,
                progress=bar.update,
            )
        except ValueError as err:
            raise SetupError(f"optimize: {err}") from None
    print(format_walk_forward(report))
    print("out-of-sample (test windows chained):")
    print(format_table(metrics_rows(report.out_of_sample)))
    print(f"{report.n_sets} parameter sets x {len(report.folds)} folds in {report.seconds:.1f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = report.model_dump(mode="json")
        payload["config"] = run_config(base, symbols, args.timeframe, start, end, loaded)
        (out / "walkforward.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
        print(f"report written to {out}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="../shared/data", help="folder of binance_<SYM>_<tf>.csv")
    p.add_argument("--symbols", default=DEFAULT_SYMBOLS)
    p.add_argument("--timeframe", default="4h")
    p.add_argument("--start", required=True, help="first bar open, e.g. 2025-03-01")
    p.add_argument("--end", required=True, help="end (exclusive), e.g. 2026-02-01")
    p.add_argument("--config", help="JSON object of backtest parameters (BacktestParams)")
    p.add_argument("--cash", type=float, help="starting capital (quote)")
    p.add_argument("--slippage-bps", type=float, dest="slippage_bps")
    p.add_argument("--rebalance-bars", type=int, dest="rebalance_bars", help="decision cadence")
    p.add_argument("--perpetual", action="store_true", help="charge perpetual funding")
    p.add_argument(
        "--allow-shorts",
        action="store_true",
        dest="allow_shorts",
        help="long/short on perpetuals (with --perpetual): the rule policy's mirrored trend rules",
    )
    p.add_argument("--out", help="report folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parsers(sub) -> None:  # sub: argparse subparsers of workers/cli.py
    p = sub.add_parser("backtest", help="backtest the rule policy on CSV bars (SPEC §10)")
    _common(p)
    p.add_argument("--learner-seed", type=int, dest="learner_seed", help="Thompson learner on")
    p.add_argument("--macro", action="store_true", help="FRED macro exposure scale and trail")
    p.add_argument("--vol-regime", action="store_true", dest="vol_regime", help="BTC HMM regime")
    p.add_argument("--llm", action="store_true", help="Claude decides (docs/llm-trader.md)")
    p.add_argument(
        "--llm-cache-mode",
        choices=["record", "replay", "record_replay"],
        default="record_replay",
        dest="llm_cache_mode",
        help="record: always call; replay: never call; record_replay: call only on a miss",
    )
    p.add_argument(
        "--llm-run-budget",
        type=float,
        dest="llm_run_budget",
        help="USD this run may spend (default OCW_LLM_RUN_BUDGET_USD); then the rules decide",
    )
    p.add_argument("--llm-run-id", dest="llm_run_id", help="budget key (default: a new id)")
    p.add_argument("--llm-cache", dest="llm_cache", help="cache file (default OCW_HOME/llm.db)")
    p.add_argument(
        "--llm-replay-miss",
        choices=["fail", "rules"],
        default="fail",
        dest="llm_replay_miss",
        help="replay mode, no stored answer: stop the run, or let the rule policy decide",
    )
    p.set_defaults(func=cmd_backtest)
    p = sub.add_parser("optimize", help="walk-forward parameter grid (out-of-sample only)")
    _common(p)
    p.add_argument("--grid", help="JSON object: parameter -> list of values")
    p.add_argument("--train-days", type=int, default=360, dest="train_days")
    p.add_argument("--test-days", type=int, default=90, dest="test_days")
    p.add_argument("--objective", default="sharpe")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.set_defaults(func=cmd_optimize)
