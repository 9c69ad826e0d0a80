"""workers/versioning.py: off by default, both settings or none, auto-upgrade when on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from temporalio.common import VersioningBehavior
from temporalio.worker import WorkerDeploymentConfig

from workers.temporal_env import SetupError
from workers.versioning import (
    deployment_version,
    describe,
    rollout_hint,
    worker_versioning_options,
)


def test_off_by_default_and_for_settings_without_the_fields() -> None:
    assert worker_versioning_options(SimpleNamespace()) == {}
    empty = SimpleNamespace(worker_deployment_name="", worker_build_id=None)
    assert worker_versioning_options(empty) == {}
    assert describe(empty) == "unversioned worker"
    assert rollout_hint(empty) is None


def test_both_settings_give_an_auto_upgrade_deployment_config() -> None:
    s = SimpleNamespace(worker_deployment_name=" ocw-trading ", worker_build_id="2026.12.01-ab12")
    opts = worker_versioning_options(s)
    assert set(opts) == {"deployment_config"}
    config = opts["deployment_config"]
    assert isinstance(config, WorkerDeploymentConfig)
    assert config.use_worker_versioning
    assert config.default_versioning_behavior == VersioningBehavior.AUTO_UPGRADE
    assert config.version.deployment_name == "ocw-trading"
    assert config.version.build_id == "2026.12.01-ab12"
    assert rollout_hint(s, "localhost:7233") == (
        "temporal worker deployment set-current-version --address localhost:7233 "
        "--deployment-name ocw-trading --build-id 2026.12.01-ab12 --yes"
    )


@pytest.mark.parametrize(
    ("name", "build"), [("ocw-trading", ""), ("", "b1"), ("ocw.trading", "b1")]
)
def test_half_a_pair_or_a_dotted_name_is_refused(name: str, build: str) -> None:
    with pytest.raises(SetupError):
        deployment_version(SimpleNamespace(worker_deployment_name=name, worker_build_id=build))
