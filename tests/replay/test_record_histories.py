"""The recorder still records: every scenario runs on the time-skipping server with the current
workflows and rig, and what it records replays at once (nothing is written to the repository).

When this fails after a workflow change, the recorder's scenarios (or the rig they use) need
the same change; then re-record: .venv/bin/python -m tests.replay.record_histories
"""

from __future__ import annotations

from tests.replay import record_histories


async def test_recorder_records_replayable_histories() -> None:
    recorded = await record_histories.record()
    names = {r.file for r in recorded}
    for expected in ("decision_trading", "decision_can_run1", "decision_can_run2"):
        assert expected in names
    for expected in ("position_stop_loss", "position_agent_add_exit", "position_can_run2"):
        assert expected in names
    problems = await record_histories.verify(recorded)
    assert not problems, "\n".join(problems)
