"""Pinned R matrices of a tiny centralized and a tiny federated run (seed 0), taken before the
run's spine (config, protocol, result object) was rebuilt: refactors must not move them.

A deliberate change of what is measured (the evaluation protocol, a model default) updates
these numbers in the same commit, with the reason in its message. Last update: the history of
test window i includes the test parts of earlier windows, and a cell (t, i), t > i, leaves out
targets the user bought again in the train parts of windows i+1..t (the model saw them)."""

from __future__ import annotations

import numpy as np
import pytest

from fedcl.config import compose_config
from fedcl.federated.local_grid import LocalGrid
from fedcl.federated.server_loop import run_federated, write_report
from fedcl.simulate import run

CENTRALIZED = [
    [0.2058732947028202, 0.04756706595044567, 0.1447190906469391],
    [0.12052365619402428, 0.07606568149454489, 0.03956686749143133],
    [0.03633080727056844, 0.13226360067129553, 0.08746749481869798],
]
FEDERATED = [
    [0.2430732852856993, 0.12962962962962962, 0.17045068307417915],
    [0.15290278339666424, 0.13562050958918095, 0.1176121869972533],
    [0.10554492998238549, 0.12461414348591218, 0.1562194851422547],
]
N_USERS = [[29, 18, 16], [25, 25, 26], [22, 20, 34]]


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
