"""Replay every committed workflow history with the current workflow code.

A history recorded on the previous code that the current code cannot replay means that a
DecisionWorkflow or PositionWorkflow running at the time of the upgrade would fail its next
workflow task (non-determinism): CI fails here, naming the history. What to do is printed with
the failure and written in docs/upgrades.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.replay import replaying

FILES = replaying.history_files()


def _id(path: Path | None) -> str:
    return "no-histories" if path is None else str(path.relative_to(replaying.HISTORIES_DIR))


@pytest.mark.parametrize("path", FILES or [None], ids=_id)
async def test_history_replays_with_current_code(path: Path | None) -> None:
    if path is None:
        pytest.fail(
            f"no recorded histories under {replaying.HISTORIES_DIR}: the replay test would "
            "protect nothing. Record them: .venv/bin/python -m tests.replay.record_histories"
        )
    history = replaying.load(path)
    outcome = await replaying.replay(history, path.stem)
    if outcome.error:
        pytest.fail(replaying.failure_message(path, outcome), pytrace=False)


def test_histories_cover_both_workflows_and_continue_as_new() -> None:
    """The committed set exercises each workflow type, and the hand-over of continue-as-new in
    both directions (a run that ends by continuing, a run that starts from one)."""
    assert FILES, "no recorded histories (see test_history_replays_with_current_code)"
    seen: dict[str, set[str]] = {}
    for path in FILES:
        history = replaying.load(path)
        kinds = seen.setdefault(replaying.workflow_type(history), set())
        kinds.add("run")
        if replaying.continued_as_new(history):
            kinds.add("continued_as_new")
        if replaying.is_continuation(history):
            kinds.add("continuation")
    unknown = set(seen) - set(replaying.WORKFLOW_NAMES)
    assert not unknown, f"histories of workflow types the replayer does not know: {unknown}"
    for name in replaying.WORKFLOW_NAMES:
        assert seen.get(name) == {"run", "continued_as_new", "continuation"}, (
            f"{name}: the histories cover only {sorted(seen.get(name, set()))}; "
            "re-record them: .venv/bin/python -m tests.replay.record_histories"
        )


def test_histories_stay_small() -> None:
    big = [
        f"{p.name}: {p.stat().st_size / 1000:.0f} kB"
        for p in FILES
        if p.stat().st_size > replaying.MAX_HISTORY_BYTES
    ]
    assert not big, f"over {replaying.MAX_HISTORY_BYTES / 1000:.0f} kB: {big}"
