"""Opt-in Worker Versioning for the trading worker (docs/upgrades.md).

Off by default: ``worker_versioning_options`` returns ``{}`` and the worker polls unversioned,
exactly as before. With both ``OCW_WORKER_DEPLOYMENT_NAME`` and ``OCW_WORKER_BUILD_ID`` set,
the trading worker joins the Worker Deployment ``<name>`` as version ``<build id>``:

    worker = Worker(client, task_queue=..., workflows=..., activities=...,
                    **worker_versioning_options(settings))

Every workflow it runs is **auto-upgrade** (``default_versioning_behavior``; the workflow
classes set none of their own): a running DecisionWorkflow or PositionWorkflow moves to the new
build on its next workflow task once that build is made current
(``temporal worker deployment set-current-version``). Pinned would keep each run on the build
that started it, and these runs never end (the DecisionWorkflow) or last days (positions), so
every old build would have to keep running as long as they do. Auto-upgrade therefore needs
``workflow.patched`` for any change that is not replay-compatible; the replay test
(tests/replay) finds those changes in CI, with or without versioning.

A versioned worker does nothing until its version is current: the server keeps routing tasks
to the current version (at first: unversioned workers). ``rollout_hint`` names the command.
"""

from __future__ import annotations

from typing import Any

from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from workers.temporal_env import SetupError

BEHAVIOR = VersioningBehavior.AUTO_UPGRADE


def _setting(settings: Any, name: str) -> str:
    value = getattr(settings, name, None)
    return "" if value is None else str(value).strip()


def deployment_version(settings: Any) -> WorkerDeploymentVersion | None:
    """The worker's deployment version, or None when versioning is off (the default).

    Raises SetupError when only one of the pair is set or the name cannot work.
    """
    name = _setting(settings, "worker_deployment_name")
    build = _setting(settings, "worker_build_id")
    if not name and not build:
        return None
    if not name or not build:
        missing = "OCW_WORKER_DEPLOYMENT_NAME" if not name else "OCW_WORKER_BUILD_ID"
        raise SetupError(
            f"worker versioning needs both OCW_WORKER_DEPLOYMENT_NAME and OCW_WORKER_BUILD_ID; "
            f"{missing} is not set (unset both to run unversioned)"
        )
    if "." in name:
        # the server never registers such a deployment, and says nothing: refuse it here
        raise SetupError(f"OCW_WORKER_DEPLOYMENT_NAME {name!r} must not contain '.'")
    return WorkerDeploymentVersion(deployment_name=name, build_id=build)


def worker_versioning_options(settings: Any) -> dict[str, Any]:
    """Keyword arguments for ``temporalio.worker.Worker``: ``{}`` when versioning is off."""
    version = deployment_version(settings)
    if version is None:
        return {}
    return {
        "deployment_config": WorkerDeploymentConfig(
            version=version,
            use_worker_versioning=True,
            default_versioning_behavior=BEHAVIOR,
        )
    }


def describe(settings: Any) -> str:
    """One line for the worker's log."""
    version = deployment_version(settings)
    if version is None:
        return "unversioned worker"
    return (
        f"worker deployment {version.deployment_name!r}, build {version.build_id!r} (auto-upgrade)"
    )


def rollout_hint(settings: Any, address: str | None = None) -> str | None:
    """The command that makes this build current (None when versioning is off)."""
    version = deployment_version(settings)
    if version is None:
        return None
    where = f" --address {address}" if address else ""
    return (
        f"temporal worker deployment set-current-version{where} "
        f"--deployment-name {version.deployment_name} --build-id {version.build_id} --yes"
    )


async def current_build(client: Client, deployment_name: str) -> str | None:
    """The build id that is current for the deployment; None when there is no such deployment
    yet (no versioned worker has polled) or its current version is unversioned."""
    try:
        resp = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=deployment_name
            )
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = resp.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None
