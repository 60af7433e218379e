"""A deployment folder of a tiny (untrained) student, exported once for the deploy tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_deploy_dir(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers_deploy import make_tiny_deploy_dir

    return make_tiny_deploy_dir(tmp_path_factory.mktemp("deploy"), tiny_config)
