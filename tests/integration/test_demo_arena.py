"""`ocw demo --arena` as a user runs it: Claude (the local Messages API stand-in, through the
worker's real anthropic client) against the rule policy on one replay, then the leaderboard."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.journal import Journal
from tests.integration.procs import free_port, run_demo

pytestmark = pytest.mark.integration


def test_demo_arena_runs_claude_against_the_rule_policy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "OCW_HOME": str(home),
        "OCW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "OCW_TEMPORAL_UI_PORT": str(free_port()),
    }
    for name in ("OCW_MODE", "OCW_ACCOUNT", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        env.pop(name, None)
    done = run_demo(
        ["--arena", "--generated", "--agents", "rule,claude:claude-sonnet-4-6"]
        + ["--days", "3", "--duration", "12"],
        env,
        home,
    )
    out = done.stdout
    context = f"{out[-4000:]}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, context
    assert "a local stand-in of the Messages API" in out, context
    board = out[out.index("arena demo (") :]
    lines = {line.split()[1]: line for line in board.splitlines() if line[:2].strip().isdigit()}
    assert set(lines) == {"rule", "claude-sonnet"}, board
    claude_cost = float(lines["claude-sonnet"].split()[-1])
    assert claude_cost > 0, board  # every decision was a paid (stand-in) call
    assert float(lines["rule"].split()[-1]) == 0
    assert "claude-sonnet paper broker cash" in board and "decided last by llm" in board
    assert board.count("agrees with the workflow's books") == 2, board

    journal = Journal(home / "demo" / "journal.db")
    llm = journal.rows("decisions", "demo-claude-sonnet")
    rule = journal.rows("decisions", "demo-rule")
    assert llm and all(row["source"] == "llm" for row in llm)
    assert rule and all(row["source"] == "rule" for row in rule)
    key_file = home / "demo" / "llm.db"
    assert b"standin-" not in key_file.read_bytes()  # the stand-in's key went as a header only
