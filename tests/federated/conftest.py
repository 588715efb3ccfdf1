"""A tiny synthetic federation shared by the federated tests."""

from __future__ import annotations

import pytest

from fedcl.config import compose_config

TINY = [
    "data=synthetic",
    "data.n_shops=3",
    "data.n_users=150",
    "data.n_items=80",
    "data.n_periods=3",
    "data.shops.min_users=5",
    "train.epochs=1",
    "train.batch_size=256",
    "model.dim=8",
    "federated.rounds=1",
    "federated.min_users=1",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str):
        cfg, _ = compose_config([*TINY, f"federated.state_dir={tmp_path / 'shops'}", *overrides])
        return cfg

    return make
