"""Chaos bench: 20 worker SIGKILLs over one replay, plus a listener kill and a server restart.

    .venv/bin/python bench/chaos.py [--kills 20] [--days 14] [--seconds 150] [--seed 1]
                                    [--shared] [--out DIR]

The whole engine runs as processes (dev server, ``ocw worker``, ``ocw listen --replay``), on a
generated market (``--shared``: the last ``--days`` of ``../shared/data``). At seeded random
moments the worker is SIGKILLed and restarted after a short pause, the listener is SIGKILLed
once and restarted with the same replay (its timeline starts over), and the dev server is
stopped and started again on its DB file. After the replay: a wake by hand through the
``temporal`` CLI, close_all, a flat book, and the audit of tests/integration/chaos.py.

Prints the run's figures (timings, events, trades, candles missed, workflow health, incidents)
as ``name: value`` lines, ending with ``chaos_kills``, ``chaos_duplicate_fills``,
``chaos_lost_positions`` and ``chaos_books_agree``. Logs and state stay in the run's folder
(printed first) for a look at what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.chaos import ChaosConfig, run_chaos  # noqa: E402
from trading.market_data import shared_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="worker SIGKILLs (default 20)")
    parser.add_argument("--days", type=float, default=14.0, help="days of market replayed")
    parser.add_argument(
        "--seconds", type=float, default=150.0, help="wall seconds of one replay pass"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the chaos moments")
    parser.add_argument("--shared", action="store_true", help="replay ../shared/data")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temp dir)")
    args = parser.parse_args(argv)
    data_dir = None
    if args.shared:
        data_dir = shared_data_dir()
        if data_dir is None:
            print("shared data folder not found (set OCW_DATA_DIR)", file=sys.stderr)
            return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="ocw-chaos-"))
    cfg = ChaosConfig(
        tmp=out,
        seed=args.seed,
        worker_kills=args.kills,
        days=args.days,
        replay_seconds=args.seconds,
        data_dir=data_dir,
        say=lambda line: print(line, flush=True),
    )
    print(f"run_folder: {out}")
    print(f"market: {data_dir or 'generated (seed 11)'}")
    print(f"speed: {cfg.speed:.0f}")
    result = asyncio.run(run_chaos(cfg))
    for line in result.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
