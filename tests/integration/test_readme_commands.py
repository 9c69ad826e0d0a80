"""The README's research commands run as written (issue 12): copied from the README itself,
so an example that stops working fails here. They read ``../shared/data``; without it they
skip."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from trading.market_data import shared_data_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def readme_commands(tool: str) -> list[list[str]]:
    """Every ``.venv/bin/ocw <tool> ...`` line of the README (backslash continuations joined,
    trailing comments dropped), as argv."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(f".venv/bin/ocw {tool} "):
            found.append(shlex.split(line.split("  #")[0]))
    return found


@pytest.mark.parametrize("tool", ["backtest", "optimize"])
def test_the_readme_research_example_runs_as_written(tool, tmp_path):
    data = shared_data_dir()
    if data is None or not (REPO / "../shared/data").exists():
        pytest.skip("../shared/data is absent")
    commands = readme_commands(tool)
    assert commands, f"the README shows no `ocw {tool}` example"
    for argv in commands:
        args = argv[1:]
        if "--out" in args:  # write the report under tmp, not into the checkout
            args[args.index("--out") + 1] = str(tmp_path / "out")
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args, "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, (argv, done.stderr[-2000:])
        assert re.search(r"Sharpe|sharpe", done.stdout), done.stdout[-1000:]
