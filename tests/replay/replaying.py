"""Loading and replaying the committed histories (shared by the replay test and the recorder).

Every ``*.json`` under ``tests/replay/histories/`` (subfolders too, so the histories of an older
release can be kept beside the current ones) is one workflow run, as written by
``WorkflowHistory.to_json()``; the workflow id is taken from the file name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.decision import DecisionWorkflow
from workflows.position import PositionWorkflow

HISTORIES_DIR = Path(__file__).resolve().parent / "histories"
WORKFLOWS: list[type] = [DecisionWorkflow, PositionWorkflow]
WORKFLOW_NAMES = ("DecisionWorkflow", "PositionWorkflow")  # their workflow.defn names
MAX_HISTORY_BYTES = 300_000

ADVICE = """\
The current workflow code cannot replay this recorded history: a workflow that ran (or is
running) on the previous code would fail its next workflow task after the upgrade.
Either
  * guard the change so that old histories take the old path:
        if workflow.patched("<change-id>"):  new code   else:  old code
    (see docs/upgrades.md, "Making a change safe"), or
  * if the change is deliberate and no run that started on the old code is left anywhere
    (every DecisionWorkflow has continued-as-new on the new build and every old
    PositionWorkflow has closed), regenerate the histories:
        .venv/bin/python -m tests.replay.record_histories
    and commit them with the change (docs/upgrades.md, "Regenerating histories")."""


def history_files(root: Path = HISTORIES_DIR) -> list[Path]:
    return sorted(root.rglob("*.json")) if root.is_dir() else []


def load(path: Path) -> WorkflowHistory:
    return load_text(path.stem, path.read_text())


def load_text(workflow_id: str, text: str) -> WorkflowHistory:
    return WorkflowHistory.from_json(workflow_id, text)


def workflow_type(history: WorkflowHistory) -> str:
    first = history.events[0]
    return first.workflow_execution_started_event_attributes.workflow_type.name


def continued_as_new(history: WorkflowHistory) -> bool:
    """The run ended by continuing as new (its last event says so)."""
    return history.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")


def is_continuation(history: WorkflowHistory) -> bool:
    """The run was started by continue-as-new of an earlier run."""
    started = history.events[0].workflow_execution_started_event_attributes
    return bool(started.continued_execution_run_id)


def replayer() -> Replayer:
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)


@dataclass
class ReplayOutcome:
    name: str
    workflow_type: str
    events: int
    error: str | None  # None: replayed cleanly


async def replay(history: WorkflowHistory, name: str, rep: Replayer | None = None) -> ReplayOutcome:
    """Replay one history; the failure (non-determinism or any task failure) as text, else None."""
    rep = rep or replayer()
    result = await rep.replay_workflow(history, raise_on_replay_failure=False)
    failure = result.replay_failure
    error = None if failure is None else f"{type(failure).__name__}: {failure}"
    return ReplayOutcome(name, workflow_type(history), len(history.events), error)


def failure_message(path: Path, outcome: ReplayOutcome) -> str:
    return (
        f"replay of {path} ({outcome.workflow_type}, {outcome.events} events) failed:\n"
        f"  {outcome.error}\n\n{ADVICE}"
    )


def size_ok(text: str) -> bool:
    return len(text.encode()) <= MAX_HISTORY_BYTES


def to_json(history: WorkflowHistory) -> str:
    """Stable, diff-friendly JSON (sorted keys, indented) of a history."""
    return json.dumps(json.loads(history.to_json()), indent=1, sort_keys=True) + "\n"
