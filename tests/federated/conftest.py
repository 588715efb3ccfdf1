"""A tiny synthetic federation shared by the federated tests."""

from __future__ import annotations

import pytest

from fedcl.config import compose_config


@pytest.fixture
def tiny_cfg(tmp_path, tiny_overrides):
    def make(*overrides: str):
        fed = ["federated.rounds=1", "federated.min_users=1"]
        state = f"federated.state_dir={tmp_path / 'shops'}"
        cfg, _ = compose_config([*tiny_overrides, *fed, state, *overrides])
        return cfg

    return make
