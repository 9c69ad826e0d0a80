"""Workflow patches asked for in a run's first task: why, in ``decide_patches``."""

from __future__ import annotations

from temporalio import workflow


def decide_patches(early: str, later: tuple[str, ...]) -> None:
    """Ask every patch of the workflow in the run's first task, before any local activity.

    A patch asked for right after a local activity can be recorded a workflow task later than
    that activity's marker when the task is cut (a worker killed and replaced, a slow local
    activity); a replay resolves the activity inside the earlier task, asks for the patch there,
    gets no, and then fails on the marker it did not expect (the chaos test found it on the
    DecisionWorkflow, 2026-12-03: "patch marker encountered for change
    view-and-context-together, but there is no corresponding change command"). A run that
    records ``early`` answers every patch in ``later`` here, where no local activity precedes;
    the SDK remembers the answers, so the calls at their sites record nothing more. Runs
    recorded before this (no ``early`` marker) ask at the sites, as they did."""
    if workflow.patched(early):
        for patch in later:
            workflow.patched(patch)
