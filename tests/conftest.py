"""Test-wide settings: caches and Ray/Flower homes live in temporary folders."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from tiny import TINY

from fedcl.config import compose_config
from fedcl.federated.local_grid import server_identity as identity


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("fedcl-home")
    os.environ["FEDCL_CACHE"] = str(root / "cache")
    os.environ["FLWR_HOME"] = str(root / "flwr")
    # Ray puts Unix sockets under its temp dir: the path must stay short (< 108 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    os.environ["RAY_TMPDIR"] = ray_tmp
    yield
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Hydra overrides of the tiny synthetic stream (add a mode and more)."""
    return list(TINY)


@pytest.fixture
def tiny_cfg(tmp_path, tiny_overrides):
    def make(*overrides: str):
        fed = ["federated.rounds=1", "federated.min_users=1"]
        state = f"federated.state_dir={tmp_path / 'shops'}"
        cfg, _ = compose_config([*tiny_overrides, *fed, state, *overrides])
        return cfg

    return make


@pytest.fixture
def server_identity():
    """Messages are built as the ServerApp would build them (Flower reads its identity)."""
    with identity():
        yield
