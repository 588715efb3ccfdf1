"""Pinned R matrices of a tiny centralized and a tiny federated run (seed 0), taken before the
run's spine (config, protocol, result object) was rebuilt: refactors must not move them.

A deliberate change of what is measured (the evaluation protocol, a model default) updates
these numbers in the same commit, with the reason in its message."""

from __future__ import annotations

import numpy as np
import pytest
from local_grid import LocalGrid

from fedcl.config import compose_config
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.simulate import run

CENTRALIZED = [
    [0.2058732947028202, 0.04756706595044567, 0.12542063785804358],
    [0.21042578592575947, 0.06586040130996003, 0.041193744350082245],
    [0.11538007953413612, 0.10244379074382703, 0.09206826664245049],
]
FEDERATED = [
    [0.2430732852856993, 0.12962962962962962, 0.17110310127789521],
    [0.23417310707164427, 0.12567446694476192, 0.13063967562229875],
    [0.18778000552717589, 0.12974530566342232, 0.17712934319172854],
]
N_USERS = [[29, 18, 17], [29, 23, 27], [29, 23, 34]]


def test_centralized_r_matrix_is_pinned(tmp_path, tiny_overrides):
    cfg, yaml = compose_config(["mode=centralized", *tiny_overrides])

    doc = run(cfg, yaml, tmp_path)

    assert doc["n_users"] == N_USERS
    assert np.allclose(doc["r_matrix"], CENTRALIZED, rtol=0, atol=1e-9)


@pytest.mark.usefixtures("server_identity")
def test_federated_r_matrix_is_pinned(tmp_path, tiny_overrides):
    cfg, yaml = compose_config(
        [
            *tiny_overrides,
            "federated.rounds=2",
            "federated.min_users=1",
            f"federated.state_dir={tmp_path / 'shops'}",
        ]
    )

    result = run_federated(LocalGrid(cfg, 3), cfg, tmp_path / "ckpt")
    doc = write_report(cfg, result, tmp_path / "run", yaml, 1.0)

    assert doc["n_users"] == N_USERS
    assert np.allclose(doc["r_matrix"], FEDERATED, rtol=0, atol=1e-9)
