"""A tiny synthetic federation shared by the federated tests."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity

from fedcl.config import compose_config


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
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None
